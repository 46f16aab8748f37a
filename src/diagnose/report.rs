//! Verdicts from per-sample evidence alone: a report of pushed pairs or two dumps (no model).
//!
//! The evidence must hold when every layer of a model sits below a fixed dB threshold (a
//! transformer under dynamic int8 often ends near 10 dB): a layer is judged by the error it
//! **adds** (its own error), never by where the cumulative error first crosses a line.

use std::collections::BTreeMap;
use std::fmt;

use super::remedy::Remedy;
use super::verdict::{SampleEvidence, Thresholds, Verdict};
use crate::error::Result;
use crate::ns::{NonFiniteCount, NsReport, OutputComparison, SampleId};

/// How far below the median of its peers (dB) a layer's own error must fall to be flagged
/// as worse than them.
pub const PEER_MARGIN_DB: f64 = 10.0;

/// The fewest layers sharing a role for a peer comparison.
pub const MIN_PEERS: usize = 3;

/// How a layer's own error is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum OwnSource {
    /// Measured: the quantized output against the float layer applied to the same input
    /// (a shadow or local comparison).
    Shadow,
    /// Estimated: the growth of the error amplitude relative to the signal from the layer
    /// before to this one, a lower bound on the error the layer adds (no shadow output; the
    /// first layer's own error is its cumulative error).
    Added,
}

/// A layer's own error, per sample.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OwnError {
    /// Measured or estimated.
    pub source: OwnSource,
    /// The per-sample figures.
    pub evidence: SampleEvidence,
}

/// A layer beside the layers with the same role (the same projection in the other blocks:
/// names equal once digit runs are replaced by `#`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PeerEvidence {
    /// The role (`encoder.layer.#.output.dense`).
    pub role: String,
    /// How many layers share it (this one included).
    pub peers: usize,
    /// The median own-error SQNR of the peers (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
    pub median_db: f64,
    /// This layer's own SQNR minus the median (dB; negative: worse than its peers).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
    pub vs_median_db: f64,
}

/// Why a layer has its verdict.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "finding", rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum Finding {
    /// NaN or infinite values in the quantized output where the float one is finite.
    NonFinite {
        /// The counts.
        count: NonFiniteCount,
    },
    /// The layer computes worse than its own quantization scheme explains: replaying the
    /// scheme from its input gives a much smaller error.
    WorseThanItsScheme {
        /// The layer's own SQNR (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        actual_db: f64,
        /// The replayed scheme's SQNR (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        replayed_db: f64,
    },
    /// Samples fall below the threshold from the layer's own error.
    OwnError {
        /// Fraction of samples below.
        fraction_below: f64,
        /// The threshold (dB).
        threshold_db: f64,
    },
    /// The layer's own error is far worse than its peers'.
    WorseThanPeers {
        /// The comparison.
        peers: PeerEvidence,
    },
    /// Samples reach the layer already below the threshold (own error fine).
    Inherited {
        /// Fraction of samples below the threshold here.
        fraction_below: f64,
    },
    /// A few input channels span far wider ranges than the rest (as after GELU, in a
    /// transformer's FFN down-projection): one per-tensor activation scale wastes the int8
    /// grid on them. What SmoothQuant and LLM.int8() exist for.
    OutlierInputChannels {
        /// The widest channels and their `max |x|` over the median channel's, widest first
        /// (at most 8).
        channels: Vec<(usize, f64)>,
        /// How many channels exceed the outlier ratio.
        count: usize,
        /// Input channels in all.
        of: usize,
    },
    /// Rows (tokens) span very different ranges: one dynamic scale per call is set by the
    /// widest rows; per-token scales fit each.
    TokenRangeSpread {
        /// The widest row's `max |x|` over the median row's.
        spread: f64,
    },
    /// The input is clipped by its static quantization parameters for some samples.
    ClippedInput {
        /// The samples with the largest clipped fraction, worst first (at most 10), with
        /// their fraction.
        worst: Vec<(usize, f64)>,
        /// The clipped fraction over all real positions.
        fraction: f64,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NonFinite { count } => write!(
                f,
                "the quantized output holds {} NaN and {} infinite values in {} samples (the float output is finite there)",
                count.nan,
                count.pos_inf + count.neg_inf,
                count.samples
            ),
            Finding::WorseThanItsScheme {
                actual_db,
                replayed_db,
            } => write!(
                f,
                "its own error ({actual_db:.2} dB) is far worse than its quantization scheme replayed on its input ({replayed_db:.2} dB): the kernel, not the scheme"
            ),
            Finding::OwnError {
                fraction_below,
                threshold_db,
            } => write!(
                f,
                "{:.1}% of samples fall below {threshold_db} dB from this layer's own error",
                fraction_below * 100.0
            ),
            Finding::WorseThanPeers { peers } => write!(
                f,
                "its own error is {:.1} dB worse than the median of its {} peers ({}: {:.2} dB)",
                -peers.vs_median_db,
                peers.peers - 1,
                crate::text::display_name(&peers.role),
                peers.median_db
            ),
            Finding::OutlierInputChannels {
                channels,
                count,
                of,
            } => {
                write!(
                    f,
                    "{count} of {of} input channels are outliers (max |x| over the median channel's:"
                )?;
                for (c, r) in channels.iter().take(4) {
                    write!(f, " #{c} {r:.0}x")?;
                }
                write!(f, ")")
            }
            Finding::TokenRangeSpread { spread } => write!(
                f,
                "the widest token's input range is {spread:.0}x the median token's: a per-call scale is set by a few tokens"
            ),
            Finding::ClippedInput { worst, fraction } => {
                write!(
                    f,
                    "{:.3}% of the input is clipped by its static range; worst samples:",
                    fraction * 100.0
                )?;
                for (s, r) in worst.iter().take(5) {
                    write!(f, " {s} ({:.2}%)", r * 100.0)?;
                }
                Ok(())
            }
            Finding::Inherited { fraction_below } => write!(
                f,
                "{:.1}% of samples arrive below the threshold from upstream; its own error is fine",
                fraction_below * 100.0
            ),
        }
    }
}

/// One layer of a [`ReportDiagnosis`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReportLayer {
    /// The layer (tensor) name.
    pub name: String,
    /// The verdict, from the layer's own error.
    pub verdict: Verdict,
    /// Why.
    pub findings: Vec<Finding>,
    /// The layer's own error.
    pub own: OwnError,
    /// The layer beside its peers, where it has at least [`MIN_PEERS`] - 1 of them.
    pub peers: Option<PeerEvidence>,
    /// Fraction of samples that fall below the threshold at this layer and were above it at
    /// the layer before (cumulative).
    pub fraction_new_below: f64,
    /// The cumulative per-sample evidence at this layer.
    pub evidence: SampleEvidence,
    /// Fraction of clipped values, where the output parameters are known.
    pub clipped_fraction: Option<f64>,
    /// NaN and infinite values in the quantized output where the float one is finite: an
    /// implementation verdict (a quantized model never produces them on finite data).
    pub non_finite: NonFiniteCount,
}

/// The diagnosis that per-sample evidence supports, without a model.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReportDiagnosis {
    /// The most serious verdict of any layer.
    pub verdict: Verdict,
    /// The headline: the layer whose own error hurts most (an implementation verdict first,
    /// then the lowest own SQNR among layers with a finding of their own; with end-to-end
    /// measurements, the largest measured gain).
    pub headline: Option<String>,
    /// The first layer, in order, with a finding of its own (not `fine`, not `inherited`).
    pub first_layer: Option<String>,
    /// The samples with the lowest SQNR at the last layer, worst first (at most 10).
    pub worst_samples: Vec<usize>,
    /// The samples' names when a sample is a position (`n:t`).
    pub sample_ids: Option<Vec<SampleId>>,
    /// The layers in order.
    pub layers: Vec<ReportLayer>,
    /// Remedies measured by replaying layers (dumps with inputs and weights), best first.
    pub remedies: Vec<Remedy>,
}

impl ReportDiagnosis {
    /// The layer under `name`.
    #[must_use]
    pub fn layer(&self, name: &str) -> Option<&ReportLayer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The samples' name for index `i` of the per-sample figures.
    #[must_use]
    pub fn sample_id(&self, i: usize) -> SampleId {
        self.sample_ids
            .as_ref()
            .and_then(|ids| ids.get(i).copied())
            .unwrap_or(SampleId {
                sample: i,
                position: None,
            })
    }

    /// Recomputes `verdict`, `headline` and `first_layer` from the layers.
    pub(crate) fn summarize(&mut self) {
        self.verdict = self
            .layers
            .iter()
            .map(|l| l.verdict)
            .max()
            .unwrap_or(Verdict::Fine);
        let own_finding =
            |l: &&ReportLayer| !matches!(l.verdict, Verdict::Fine | Verdict::Inherited);
        self.first_layer = self.layers.iter().find(own_finding).map(|l| l.name.clone());
        self.headline = self
            .layers
            .iter()
            .filter(own_finding)
            .min_by(|a, b| {
                let imp = |l: &ReportLayer| l.verdict != Verdict::Implementation;
                imp(a)
                    .cmp(&imp(b))
                    .then(a.own.evidence.sqnr_db.total_cmp(&b.own.evidence.sqnr_db))
            })
            .map(|l| l.name.clone());
    }
}

/// The role of a layer among its peers: its name with every run of digits replaced by `#`.
#[must_use]
pub fn layer_role(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_digits = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Noise-to-signal amplitude ratio `‖e‖/‖x‖` of an SQNR (dB).
fn amplitude(db: f64) -> f64 {
    10f64.powf(-db / 20.0)
}

/// SQNR (dB) of an amplitude ratio.
fn db_of(r: f64) -> f64 {
    if r <= 0.0 {
        f64::INFINITY
    } else {
        -20.0 * r.log10()
    }
}

/// The error a layer adds at least, from SQNRs before and after it: by the triangle
/// inequality `‖e + δ‖ ≤ ‖e‖ + ‖δ‖`, the layer's own error `δ` is at least
/// `‖e + δ‖ − ‖e‖` (relative to the signal). A lower bound: it never charges a layer with
/// error it carried (a cross term of the carried error with a small own error would, with
/// noise powers).
fn added_db(now: f64, before: f64) -> f64 {
    if now.is_nan() || now == f64::NEG_INFINITY {
        return now;
    }
    let before = if before.is_nan() {
        0.0
    } else {
        amplitude(before)
    };
    db_of(amplitude(now) - before)
}

/// The own error of a layer without a shadow comparison ([`added_db`] per sample and over all
/// samples, against the layer before with the same samples).
fn added(c: &OutputComparison, before: Option<&OutputComparison>, t: &Thresholds) -> OwnError {
    let now = c.sample_sqnr_db();
    let evidence = match before {
        Some(b) if b.samples.len() == now.len() => {
            let prev = b.sample_sqnr_db();
            let samples = now
                .iter()
                .zip(&prev)
                .map(|(&n, &p)| added_db(n, p))
                .collect();
            SampleEvidence::from_samples(added_db(c.sqnr_db, b.sqnr_db), samples, t)
        }
        _ => SampleEvidence::from_comparison(c, t),
    };
    OwnError {
        source: OwnSource::Added,
        evidence,
    }
}

/// Verdicts from a report (two dumps, pushed pairs, a live model's logs). Each layer is judged
/// by its **own** error: the local (shadow) comparison where the report has one, else the
/// growth of the error from the layer before.
///
/// - NaN or infinite values in a quantized output (where the float output is finite):
///   `implementation`.
/// - At least [`Thresholds::insensitive_fraction`] of samples below
///   [`Thresholds::min_sqnr_db`] from the layer's own error: `data-insensitive`; at least
///   [`Thresholds::sensitive_fraction`] (and one sample): `data-sensitive`.
/// - An own error more than [`PEER_MARGIN_DB`] below the median of its peers (at least
///   [`MIN_PEERS`] layers of the same [`layer_role`]): `data-insensitive`, whatever the
///   threshold says.
/// - Own error fine, but samples below the threshold here (they arrive degraded):
///   `inherited`, never `fine`.
///
/// The headline is the layer whose own error hurts most ([`ReportDiagnosis::headline`]).
///
/// # Errors
/// [`QuantError::InvalidParameter`](crate::QuantError::InvalidParameter) for invalid thresholds
/// ([`Thresholds::validate`]).
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::diagnose::{diagnose_report, Thresholds, Verdict};
/// use qnumeric::ns::NumericLog;
///
/// let mut log = NumericLog::streaming();
/// let x = ArrayD::from_shape_fn(IxDyn(&[100, 8]), |i| (i[0] * 8 + i[1]) as f32 / 100.0 + 1.0);
/// log.push("a", &x, &x.mapv(|v| v * 1.001), None)?; // 60 dB
/// log.push("b", &x, &x.mapv(|v| v * 1.3), None)?; // 10 dB for every sample
/// log.push("c", &x, &x.mapv(|v| v * 1.3), None)?; // the same error, carried on
/// let report = qnumeric::ns::NsReport::from_logs(Some(&log), None);
/// let d = diagnose_report(&report, &Thresholds::default())?;
/// assert_eq!(d.verdict, Verdict::DataInsensitive);
/// assert_eq!(d.headline.as_deref(), Some("b"));
/// assert_eq!(d.layer("c").map(|l| l.verdict), Some(Verdict::Inherited));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn diagnose_report(report: &NsReport, t: &Thresholds) -> Result<ReportDiagnosis> {
    t.validate()?;
    let mut layers = Vec::new();
    let mut previous: Option<&OutputComparison> = None;
    let mut was_below: Option<Vec<bool>> = None;
    for l in &report.layers {
        let Some(c) = l.cumulative.as_ref() else {
            continue;
        };
        let evidence = SampleEvidence::from_comparison(c, t);
        let now = &evidence.sample_sqnr_db;
        let n = now.len();
        let new_below = now
            .iter()
            .enumerate()
            .filter(|&(i, &v)| {
                v < t.min_sqnr_db
                    && was_below
                        .as_ref()
                        .and_then(|p| p.get(i))
                        .is_none_or(|&p| !p)
            })
            .count();
        let fraction_new_below = if n == 0 {
            0.0
        } else {
            new_below as f64 / n as f64
        };
        let own = match &l.local {
            Some(local) if local.samples.len() == n => OwnError {
                source: OwnSource::Shadow,
                evidence: SampleEvidence::from_comparison(local, t),
            },
            _ => added(c, previous, t),
        };
        let mut findings = Vec::new();
        let non_finite = {
            let mut nf = c.non_finite;
            if let Some(local) = &l.local
                && nf.is_empty()
            {
                nf = local.non_finite;
            }
            nf
        };
        let verdict = if !non_finite.is_empty() {
            findings.push(Finding::NonFinite { count: non_finite });
            Verdict::Implementation
        } else {
            let v = own.evidence.verdict(t);
            if v != Verdict::Fine {
                findings.push(Finding::OwnError {
                    fraction_below: own.evidence.fraction_below,
                    threshold_db: t.min_sqnr_db,
                });
            }
            v
        };
        let below: Vec<bool> = now.iter().map(|&v| v < t.min_sqnr_db).collect();
        was_below = Some(match was_below {
            Some(p) if p.len() == below.len() => {
                p.iter().zip(&below).map(|(a, b)| *a || *b).collect()
            }
            _ => below,
        });
        previous = Some(c);
        layers.push(ReportLayer {
            name: l.name.clone(),
            verdict,
            findings,
            own,
            peers: None,
            fraction_new_below,
            clipped_fraction: c.clipped_fraction,
            non_finite,
            evidence,
        });
    }
    judge_peers(&mut layers, t);
    let mut d = ReportDiagnosis {
        verdict: Verdict::Fine,
        headline: None,
        first_layer: None,
        worst_samples: layers
            .last()
            .map(|l| l.evidence.worst_samples.clone())
            .unwrap_or_default(),
        sample_ids: None,
        layers,
        remedies: Vec::new(),
    };
    d.summarize();
    Ok(d)
}

/// Peer comparisons, then the inherited verdicts (which need the final own verdicts).
fn judge_peers(layers: &mut [ReportLayer], t: &Thresholds) {
    let mut roles: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        roles.entry(layer_role(&l.name)).or_default().push(i);
    }
    for (role, members) in roles {
        if members.len() < MIN_PEERS {
            continue;
        }
        let v: Vec<f64> = members
            .iter()
            .map(|&i| layers[i].own.evidence.sqnr_db)
            .filter(|x| !x.is_nan())
            .collect();
        if v.len() < MIN_PEERS {
            continue;
        }
        let median = median(v);
        for &i in &members {
            let l = &mut layers[i];
            let vs = l.own.evidence.sqnr_db - median;
            let peers = PeerEvidence {
                role: role.clone(),
                peers: members.len(),
                median_db: median,
                vs_median_db: if vs.is_nan() { 0.0 } else { vs },
            };
            if peers.vs_median_db < -PEER_MARGIN_DB && median.is_finite() {
                l.findings.push(Finding::WorseThanPeers {
                    peers: peers.clone(),
                });
                if l.verdict < Verdict::DataInsensitive {
                    l.verdict = Verdict::DataInsensitive;
                }
            }
            l.peers = Some(peers);
        }
    }
    for l in layers.iter_mut() {
        if l.verdict == Verdict::Fine {
            let e = &l.evidence;
            let n = e.sample_sqnr_db.len().max(1) as f64;
            if e.fraction_below >= t.sensitive_fraction && e.fraction_below * n >= 1.0 {
                l.verdict = Verdict::Inherited;
                l.findings.push(Finding::Inherited {
                    fraction_below: e.fraction_below,
                });
            }
        }
    }
}

impl fmt::Display for ReportDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::{cell, column_width, display_name, pad};
        writeln!(f, "verdict: {}", self.verdict)?;
        if let Some(l) = &self.headline {
            writeln!(f, "headline (own error hurts most): {}", display_name(l))?;
        }
        if let Some(l) = &self.first_layer {
            writeln!(
                f,
                "first layer with a finding of its own: {}",
                display_name(l)
            )?;
        }
        let w = column_width(self.layers.iter().map(|l| l.name.as_str()), 20);
        writeln!(
            f,
            "{} {:<16} {:>10} {:>12} {:>10} {:>12}",
            pad("layer", w),
            "verdict",
            "own dB",
            "own below %",
            "SQNR dB",
            "below thr %",
        )?;
        for l in &self.layers {
            let own = match l.own.source {
                OwnSource::Shadow => format!("{:.2}", l.own.evidence.sqnr_db),
                OwnSource::Added => format!("~{:.2}", l.own.evidence.sqnr_db),
            };
            writeln!(
                f,
                "{} {:<16} {:>10} {:>12.1} {:>10.2} {:>12.1}",
                pad(&cell(&l.name, w), w),
                l.verdict.name(),
                own,
                l.own.evidence.fraction_below * 100.0,
                l.evidence.sqnr_db,
                l.evidence.fraction_below * 100.0,
            )?;
            for finding in &l.findings {
                if !matches!(
                    finding,
                    Finding::OwnError { .. } | Finding::Inherited { .. }
                ) {
                    writeln!(f, "    {finding}")?;
                }
            }
        }
        writeln!(
            f,
            "own dB: the layer's own error (~: estimated from the growth of the error, no shadow output)"
        )?;
        if !self.worst_samples.is_empty() {
            let names: Vec<String> = self
                .worst_samples
                .iter()
                .map(|&i| self.sample_id(i).to_string())
                .collect();
            writeln!(f, "worst samples: {}", names.join(", "))?;
        }
        if !self.remedies.is_empty() {
            writeln!(f, "remedies (best first):")?;
            for r in &self.remedies {
                writeln!(f, "  {r}")?;
            }
        }
        Ok(())
    }
}

/// The median of the values that are not NaN (`NaN` for none): the middle value, or the mean
/// of the two middle values for an even count (the larger one when either is infinite).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        return v[mid];
    }
    let (a, b) = (v[mid - 1], v[mid]);
    if a.is_finite() && b.is_finite() {
        (a + b) / 2.0
    } else {
        a.max(b)
    }
}
