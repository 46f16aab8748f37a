//! The diagnosis of two dumps (feature `safetensors`): verdicts from each layer's own error,
//! input evidence and remedies measured by replaying layers, a baseline comparison. What
//! `qnumeric diagnose` runs.

use std::fmt;

use ndarray::ArrayD;

use super::diagnosis::{Measurement, Unmeasured};
use super::remedy::{Calibrator, Change, Cost, Effect, Evidence, Remedy};
use super::replay::{LinearReplay, LinearScheme, ReplayActivations, ReplayWeights};
use super::report::{Finding, ReportDiagnosis, ReportLayer, diagnose_report, median};
use super::verdict::{Thresholds, Verdict};
use crate::error::{QuantError, Result};
use crate::formats::Format;
use crate::ns::{
    ActivationMode, DumpPair, DumpVersion, LayerKind, LayerMeta, Mask, NsReport, Part, SampleDims,
    Side, SkippedTensor,
};
use crate::qparams::QParams;

/// The default least gain (dB) of a replayed remedy.
pub const DEFAULT_DUMP_MIN_GAIN_DB: f64 = 0.5;

/// A layer's own error must fall by at least this much (dB) against the baseline to be
/// called changed.
pub const BASELINE_CHANGE_DB: f64 = 3.0;

/// An input channel whose `max |x|` exceeds the median channel's by this factor is an outlier.
pub const OUTLIER_CHANNEL_RATIO: f64 = 8.0;

/// Rows (tokens) whose ranges differ by this factor (widest over median) call for
/// per-token scales.
pub const TOKEN_SPREAD_RATIO: f64 = 8.0;

/// A layer whose own error is this much (dB) worse than its quantization scheme replayed on
/// its input computes wrongly: an implementation verdict.
pub const SCHEME_MARGIN_DB: f64 = 6.0;

/// How [`diagnose_dumps`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpDiagnoseOptions {
    /// The verdicts' thresholds.
    pub thresholds: Thresholds,
    /// What a sample is.
    pub sample_dims: SampleDims,
    /// Remedies gaining less than this (dB, local) are not remedies.
    pub min_gain_db: f64,
    /// The most rows (real positions) a layer replay measures on (an even subsample beyond).
    pub replay_rows: usize,
    /// Whether to replay layers for input evidence and remedies.
    pub remedies: bool,
    /// Weight formats tried on every flagged Linear by replay (int4 g64, MXFP8, ...): each is
    /// a [`Change::WeightFormat`] remedy with its local gain. Empty by default.
    pub format_candidates: Vec<Format>,
}

impl Default for DumpDiagnoseOptions {
    fn default() -> Self {
        DumpDiagnoseOptions {
            thresholds: Thresholds::default(),
            sample_dims: SampleDims::Samples,
            min_gain_db: DEFAULT_DUMP_MIN_GAIN_DB,
            replay_rows: 2048,
            remedies: true,
            format_candidates: Vec::new(),
        }
    }
}

impl DumpDiagnoseOptions {
    /// Checks every field.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for invalid thresholds, a NaN or negative minimum
    /// gain, or zero replay rows.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "DumpDiagnoseOptions::validate";
        self.thresholds.validate()?;
        if !self.min_gain_db.is_finite() || self.min_gain_db < 0.0 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "min_gain_db",
                value: self.min_gain_db,
                reason: "must be finite and >= 0",
            });
        }
        if self.replay_rows == 0 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "replay_rows",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        Ok(())
    }
}

/// One layer against the baseline.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BaselineLayer {
    /// The layer.
    pub name: String,
    /// Its own SQNR in the diagnosed model (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
    pub own_db: f64,
    /// Its own SQNR in the baseline (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
    pub baseline_own_db: f64,
    /// `own_db - baseline_own_db` (negative: worse than the baseline).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
    pub change_db: f64,
    /// The diagnosed model's output against the baseline's (dB), where both have it.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::opt_f64"))]
    pub vs_baseline_db: Option<f64>,
}

/// What changed between the diagnosed quantized model and a baseline quantized model.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BaselineDiff {
    /// Layer by layer, in order.
    pub layers: Vec<BaselineLayer>,
    /// The layer whose own error got worst against the baseline (by at least
    /// [`BASELINE_CHANGE_DB`]).
    pub most_changed: Option<String>,
    /// The first layer whose output departs from the baseline's below the threshold.
    pub first_divergent: Option<String>,
    /// The baseline's own verdict.
    pub baseline_verdict: Verdict,
}

/// The diagnosis of two dumps.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DumpDiagnosis {
    /// The format version read.
    pub version: DumpVersion,
    /// What a sample is.
    pub sample_dims: SampleDims,
    /// Whether a padding mask was applied.
    pub masked: bool,
    /// Verdicts, headline, remedies.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub diagnosis: ReportDiagnosis,
    /// Against the baseline, when one was given.
    pub baseline: Option<BaselineDiff>,
    /// The tensors left out, and why.
    pub skipped: Vec<SkippedTensor>,
    /// What could not be measured (a replay that failed), and why.
    pub unmeasured: Vec<Unmeasured>,
}

/// Diagnoses two dumps: each layer judged by its own error (the shadow comparison of a v2
/// dump, else the growth of the error), beside its peers; layers with inputs and weights are
/// replayed for input evidence and remedies. See `docs/diagnosis.md`.
///
/// # Errors
/// [`QuantError::InvalidParameter`] for invalid options; [`QuantError::Io`] when a file
/// cannot be read any more.
///
/// # Examples
/// ```no_run
/// use qnumeric::diagnose::{diagnose_dumps, DumpDiagnoseOptions};
/// use qnumeric::ns::DumpPair;
///
/// let pair = DumpPair::open("float.safetensors", "int8.safetensors")?;
/// let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default())?;
/// println!("{d}");
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn diagnose_dumps(pair: &DumpPair<'_>, opts: &DumpDiagnoseOptions) -> Result<DumpDiagnosis> {
    opts.validate()?;
    let cmp = pair.compare(opts.sample_dims)?;
    let mut diagnosis = diagnose_report(&cmp.report, &opts.thresholds)?;
    diagnosis.sample_ids = cmp.sample_ids.clone();
    let mut unmeasured = Vec::new();
    if opts.remedies {
        add_input_evidence(pair, &mut diagnosis)?;
        replay_layers(pair, &cmp.report, &mut diagnosis, opts, &mut unmeasured)?;
        requantize_outputs(pair, &cmp.report, &mut diagnosis, opts, &mut unmeasured)?;
    }
    diagnosis.summarize();
    rank_remedies(&mut diagnosis);
    Ok(DumpDiagnosis {
        version: cmp.version,
        sample_dims: opts.sample_dims,
        masked: cmp.masked,
        diagnosis,
        baseline: None,
        skipped: cmp.skipped,
        unmeasured,
    })
}

/// [`diagnose_dumps`], and what changed against a baseline quantized model dumped from the
/// same float model on the same samples (`qnumeric diagnose FLOAT QUANT --baseline OTHER`):
/// each layer's own error in both, and the diagnosed outputs against the baseline's.
///
/// # Errors
/// As [`diagnose_dumps`].
pub fn diagnose_dumps_with_baseline(
    pair: &DumpPair<'_>,
    baseline: &DumpPair<'_>,
    opts: &DumpDiagnoseOptions,
) -> Result<DumpDiagnosis> {
    let mut d = diagnose_dumps(pair, opts)?;
    let base = diagnose_dumps(
        baseline,
        &DumpDiagnoseOptions {
            remedies: false,
            ..opts.clone()
        },
    )?;
    let vs = pair.compare_with_baseline(baseline, opts.sample_dims)?;
    let t = &opts.thresholds;
    let layers: Vec<BaselineLayer> = d
        .diagnosis
        .layers
        .iter()
        .filter_map(|l| {
            let b = base.diagnosis.layer(&l.name)?;
            let own_db = l.own.evidence.sqnr_db;
            let baseline_own_db = b.own.evidence.sqnr_db;
            let change_db = if own_db == baseline_own_db {
                0.0
            } else {
                own_db - baseline_own_db
            };
            Some(BaselineLayer {
                name: l.name.clone(),
                own_db,
                baseline_own_db,
                change_db,
                vs_baseline_db: vs
                    .layer(&l.name)
                    .and_then(|r| r.cumulative.as_ref())
                    .map(|c| c.sqnr_db),
            })
        })
        .collect();
    let most_changed = layers
        .iter()
        .filter(|l| l.change_db <= -BASELINE_CHANGE_DB)
        .min_by(|a, b| a.change_db.total_cmp(&b.change_db))
        .map(|l| l.name.clone());
    let first_divergent = layers
        .iter()
        .find(|l| l.vs_baseline_db.is_some_and(|v| v < t.min_sqnr_db))
        .map(|l| l.name.clone());
    d.baseline = Some(BaselineDiff {
        layers,
        most_changed,
        first_divergent,
        baseline_verdict: base.diagnosis.verdict,
    });
    Ok(d)
}

/// What a layer's input says: outlier channels, the spread of token ranges, clipping by its
/// static parameters. `input` is `[N, ...,  C]`; the mask leaves padded positions out.
pub(crate) fn input_findings(
    input: &ArrayD<f32>,
    mask: Option<&Mask>,
    static_input: Option<&QParams>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(&c) = input.shape().last() else {
        return out;
    };
    if input.ndim() < 2 || c == 0 || input.is_empty() {
        return out;
    }
    let masked = mask.filter(|m| input.ndim() >= 3 && m.applies_to(input.shape()));
    let real = |n: usize, t: usize| masked.is_none_or(|m| m.as_array()[[n, t]]);
    let mut channel_max = vec![0f64; c];
    let mut row_max = Vec::new();
    let range = static_input.map(|q| {
        let (lo, hi) = q.representable();
        (f64::from(lo), f64::from(hi))
    });
    let mut clipped: Vec<(usize, f64)> = Vec::new();
    let (mut clipped_all, mut count_all) = (0u64, 0u64);
    for (n, sample) in input.outer_iter().enumerate() {
        let (mut clipped_n, mut count_n) = (0u64, 0u64);
        let len = sample.len();
        let rows = sample.into_shape_with_order((len / c, c));
        let Ok(rows) = rows else { continue };
        for (t, row) in rows.outer_iter().enumerate() {
            if masked.is_some() && !real(n, t) {
                continue;
            }
            let mut m = 0f64;
            for (j, &v) in row.iter().enumerate() {
                let a = f64::from(v).abs();
                if a.is_finite() {
                    m = m.max(a);
                    channel_max[j] = channel_max[j].max(a);
                }
                if let Some((lo, hi)) = range {
                    let v = f64::from(v);
                    clipped_n += u64::from(v < lo || v > hi);
                }
            }
            count_n += c as u64;
            row_max.push(m);
        }
        if range.is_some() && count_n > 0 {
            clipped.push((n, clipped_n as f64 / count_n as f64));
            clipped_all += clipped_n;
            count_all += count_n;
        }
    }
    let med = median(channel_max.clone());
    if med > 0.0 {
        let mut wide: Vec<(usize, f64)> = channel_max
            .iter()
            .enumerate()
            .map(|(j, &m)| (j, m / med))
            .filter(|&(_, r)| r > OUTLIER_CHANNEL_RATIO)
            .collect();
        if !wide.is_empty() {
            wide.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let count = wide.len();
            wide.truncate(8);
            out.push(Finding::OutlierInputChannels {
                channels: wide,
                count,
                of: c,
            });
        }
    }
    let row_med = median(row_max.clone());
    let row_top = row_max
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0, f64::max);
    if row_med > 0.0 && row_top / row_med > TOKEN_SPREAD_RATIO {
        out.push(Finding::TokenRangeSpread {
            spread: row_top / row_med,
        });
    }
    if clipped_all > 0 {
        clipped.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        clipped.retain(|x| x.1 > 0.0);
        clipped.truncate(10);
        out.push(Finding::ClippedInput {
            worst: clipped,
            fraction: clipped_all as f64 / count_all as f64,
        });
    }
    out
}

/// Adds the input evidence of every layer with a finding of its own and a `:input` tensor.
fn add_input_evidence(pair: &DumpPair<'_>, d: &mut ReportDiagnosis) -> Result<()> {
    for l in &mut d.layers {
        if matches!(l.verdict, Verdict::Fine | Verdict::Inherited) {
            continue;
        }
        let input = match pair.read(&l.name, Side::Quant, Part::Input) {
            Ok(Some(x)) => x.into_f32(),
            Ok(None) | Err(QuantError::Format { .. }) => continue,
            Err(e) => return Err(e),
        };
        let qparams = pair
            .layer_meta(&l.name)
            .and_then(|m| m.activation)
            .and_then(|a| a.qparams);
        l.findings
            .extend(input_findings(&input, pair.mask(), qparams.as_ref()));
    }
    Ok(())
}

impl DumpDiagnosis {
    /// Drops the remedies measured end to end ([`DumpDiagnosis::measure_end_to_end`]) that
    /// gain less than `min_gain_db` on the whole model: a change that helped its layer alone
    /// but not the model's output is not worth proposing. A kernel fix stays whatever it
    /// gains (the model is wrong until it is fixed); remedies not measured end to end stay.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a NaN or negative `min_gain_db`.
    pub fn drop_remedies_below(&mut self, min_gain_db: f64) -> Result<()> {
        if min_gain_db.is_nan() || min_gain_db < 0.0 {
            return Err(QuantError::InvalidParameter {
                op: "DumpDiagnosis::drop_remedies_below",
                what: "min_gain_db",
                value: min_gain_db,
                reason: "must be a number >= 0",
            });
        }
        self.diagnosis.remedies.retain(|r| match r.effect {
            Effect::Measured { gain_db, .. } => {
                r.cost() == Cost::KernelFix || gain_db >= min_gain_db
            }
            _ => true,
        });
        Ok(())
    }

    /// The model's output SQNR against the float model (dB): the last layer's.
    #[must_use]
    pub fn output_sqnr_db(&self) -> Option<f64> {
        self.diagnosis.layers.last().map(|l| l.evidence.sqnr_db)
    }

    /// Measures remedies end to end where the caller can re-run the model: `rerun(remedy)`
    /// returns the model's output SQNR against the float model (dB) with that remedy
    /// applied, or `None` when it cannot apply it. A measured remedy's effect becomes
    /// [`Effect::Measured`] with its gain over [`DumpDiagnosis::output_sqnr_db`]; an error is
    /// kept in [`DumpDiagnosis::unmeasured`] and the local figure stays. Then the remedies
    /// measured end to end come first (a kernel fix still first of all), the largest gain
    /// first, and the headline becomes the layer whose remedy gains most end to end (unless
    /// a layer has an implementation verdict).
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] when the callback returns a NaN SQNR.
    pub fn measure_end_to_end<F>(&mut self, mut rerun: F) -> Result<()>
    where
        F: FnMut(&Remedy) -> Result<Option<f64>>,
    {
        const OP: &str = "DumpDiagnosis::measure_end_to_end";
        let Some(now) = self.output_sqnr_db() else {
            return Ok(());
        };
        for r in &mut self.diagnosis.remedies {
            match rerun(r) {
                Ok(Some(db)) if db.is_nan() => {
                    return Err(QuantError::InvalidParameter {
                        op: OP,
                        what: "end-to-end SQNR",
                        value: db,
                        reason: "the callback must return a number (dB), not NaN",
                    });
                }
                Ok(Some(db)) => {
                    r.effect = Effect::Measured {
                        quality: super::variants::Quality {
                            sqnr_db: db,
                            accuracy: None,
                        },
                        gain_db: if db == now { 0.0 } else { db - now },
                    };
                }
                Ok(None) => {}
                Err(error) => self.unmeasured.push(Unmeasured {
                    what: Measurement::Replay,
                    layer: r.layer.clone(),
                    error,
                }),
            }
        }
        let end_to_end = |r: &Remedy| match r.effect {
            Effect::Measured { gain_db, .. } => Some(gain_db),
            _ => None,
        };
        // Stable: the replay's order stays among remedies not measured end to end.
        self.diagnosis.remedies.sort_by(|a, b| {
            let fix = |r: &Remedy| r.cost() != Cost::KernelFix;
            fix(a)
                .cmp(&fix(b))
                .then(match (end_to_end(a), end_to_end(b)) {
                    (Some(x), Some(y)) => y.total_cmp(&x),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                })
        });
        let implementation = self
            .diagnosis
            .layers
            .iter()
            .any(|l| l.verdict == Verdict::Implementation);
        if !implementation
            && let Some(best) = self
                .diagnosis
                .remedies
                .iter()
                .filter(|r| end_to_end(r).is_some_and(|g| g > 0.0))
                .max_by(|a, b| {
                    end_to_end(a)
                        .unwrap_or(0.0)
                        .total_cmp(&end_to_end(b).unwrap_or(0.0))
                })
            && let Some(layer) = &best.layer
        {
            self.diagnosis.headline = Some(layer.clone());
        }
        Ok(())
    }
}

/// Whether a layer is a Linear the replay can run: the metadata says so, or (without a kind)
/// a 2-D float weight whose second dimension is the input's last.
fn is_linear(pair: &DumpPair<'_>, name: &str) -> bool {
    let kind = pair.layer_meta(name).and_then(|m| m.kind);
    let (Some(w), Some(x)) = (
        pair.shape(name, Side::Float, Part::Weight),
        pair.shape(name, Side::Quant, Part::Input),
    ) else {
        return false;
    };
    let fits = w.len() == 2 && (2..=3).contains(&x.len()) && x.last() == w.get(1);
    match kind {
        Some(LayerKind::Linear) | None => fits,
        Some(_) => false,
    }
}

/// The scheme the `layers` metadata describes, when it describes one completely enough, and
/// whether replaying it reproduces what the model computed (a static scheme without its
/// calibrated parameters does not: the replay calibrates on the dumped rows).
fn declared_scheme(meta: &LayerMeta, given: bool) -> Option<(LinearScheme, bool)> {
    let a = meta.activation?;
    let weights = if given {
        ReplayWeights::Given
    } else {
        let w = meta.weight?;
        ReplayWeights::Int {
            bits: w.bits.unwrap_or(8),
            per_channel: w.per_channel.unwrap_or(false),
            symmetric: w.symmetric.unwrap_or(true),
        }
    };
    let bits = a.bits.unwrap_or(8);
    let mut faithful = true;
    let activations = match a.mode? {
        ActivationMode::Dynamic => ReplayActivations::Dynamic {
            bits,
            reduce_range: a.reduce_range.unwrap_or(false),
            per_token: a.per_token.unwrap_or(false),
        },
        ActivationMode::Static => match a.qparams {
            Some(qparams) => ReplayActivations::Calibrated { qparams },
            None => {
                faithful = false;
                ReplayActivations::Static {
                    bits,
                    calibrator: Calibrator::MinMax,
                }
            }
        },
        ActivationMode::Float => ReplayActivations::Float,
    };
    Some((LinearScheme::new(weights, activations), faithful))
}

/// Reads what a Linear's replay needs and builds it, with its current scheme (declared by the
/// metadata, else inferred from the quantized output).
fn replay_of(
    pair: &DumpPair<'_>,
    name: &str,
    rows: usize,
) -> Result<Option<(LinearReplay, LinearScheme, bool)>> {
    let read = |side, part| pair.read(name, side, part);
    let (Some(x), Some(w)) = (
        read(Side::Quant, Part::Input)?,
        read(Side::Float, Part::Weight)?,
    ) else {
        return Ok(None);
    };
    let (x, w) = (x.into_f32(), w.into_f32());
    let w = w
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|_| QuantError::InvalidAxis {
            op: "diagnose_dumps",
            axis: 1,
            ndim: 1,
        })?;
    let b = read(Side::Float, Part::Bias)?.map(|b| b.into_f32());
    let b = match &b {
        Some(b) if b.ndim() == 1 => Some(b.view().into_dimensionality::<ndarray::Ix1>().map_err(
            |_| QuantError::InvalidAxis {
                op: "diagnose_dumps",
                axis: 0,
                ndim: b.ndim(),
            },
        )?),
        Some(b) => {
            return Err(QuantError::ShapeMismatch {
                op: "diagnose_dumps",
                expected: vec![w.nrows()],
                got: b.shape().to_vec(),
            });
        }
        None => None,
    };
    let mask = pair
        .mask()
        .filter(|m| x.ndim() == 3 && m.applies_to(x.shape()))
        .map(|m| m.as_array().mapv(|r| f32::from(u8::from(r))));
    let mut r = LinearReplay::new(
        x.view(),
        w.view(),
        b,
        mask.as_ref().map(|m| m.view()),
        pair.batch_size(),
        rows,
    )?;
    let given = match read(Side::Quant, Part::Weight)? {
        Some(q) => {
            let q = q.into_f32();
            let q = q
                .view()
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|_| QuantError::ShapeMismatch {
                    op: "diagnose_dumps",
                    expected: w.shape().to_vec(),
                    got: q.shape().to_vec(),
                })?;
            r = r.with_given_weight(q)?;
            true
        }
        None => false,
    };
    if let Some(s) = read(Side::Quant, Part::Shadow)? {
        r = r.with_reference(s.into_f32().view())?;
    }
    let has_actual = match read(Side::Quant, Part::Output)? {
        Some(y) => {
            r = r.with_actual(y.into_f32().view())?;
            true
        }
        None => false,
    };
    let declared = pair
        .layer_meta(name)
        .and_then(|m| declared_scheme(m, given));
    let (scheme, faithful) = match declared {
        Some(s) => s,
        None if has_actual => (r.infer_scheme()?.0, true),
        None => (LinearScheme::PYTORCH_DYNAMIC, false),
    };
    Ok(Some((r, scheme, faithful)))
}

/// The evidence a replayed remedy stands on: the layer's own error.
fn layer_evidence(l: &ReportLayer, report: &NsReport) -> Evidence {
    let w = report.layer(&l.name).and_then(|r| r.weight.as_ref());
    Evidence::LayerError {
        verdict: l.verdict,
        fraction_below: l.own.evidence.fraction_below,
        median_db: l.own.evidence.percentiles[1],
        weight_sqnr_db: w.map(|w| w.sqnr_db),
        worst_channel_weight_sqnr_db: w
            .and_then(|w| w.worst_channel().map(|c| w.channels[c].sqnr_db)),
    }
}

/// Replays the output quantization of every static layer with a finding of its own (its
/// output parameters are in the metadata, its shadow in the dump): the shadow (the float layer
/// on the quantized layer's input) quantized with the dumped output parameters, then with the
/// parameters each calibrator chooses on the shadow's values (the dumped data). For a
/// data-sensitive layer (some samples outside what calibration saw: a clipped input at
/// `quant`) that is [`Change::CalibrateCloserToInference`], with the best calibrator's gain;
/// otherwise (a wasted or clipped range for every sample) the two calibrators that gain most
/// are [`Change::Observer`] remedies. Gains of at least `min_gain_db`, on the layer alone:
/// what the Linear replay does not see.
fn requantize_outputs(
    pair: &DumpPair<'_>,
    report: &NsReport,
    d: &mut ReportDiagnosis,
    opts: &DumpDiagnoseOptions,
    unmeasured: &mut Vec<Unmeasured>,
) -> Result<()> {
    let mut remedies = Vec::new();
    for l in &d.layers {
        if matches!(
            l.verdict,
            Verdict::Fine | Verdict::Inherited | Verdict::Implementation
        ) {
            continue;
        }
        let Some(out) = pair.layer_meta(&l.name).and_then(|m| m.output) else {
            continue;
        };
        let shadow = match pair.read(&l.name, Side::Quant, Part::Shadow) {
            Ok(Some(x)) => x.into_f32(),
            Ok(None) | Err(QuantError::Format { .. }) => continue,
            Err(e) => return Err(e),
        };
        let attempt = || -> Result<Vec<Remedy>> {
            let now =
                crate::metrics::sqnr(&shadow, &crate::kernels::fake_quantize(&shadow, &out)?)?;
            let range = out.range();
            let spec = crate::QSpec::new(crate::QScheme::PerTensorAffine, range.dtype())
                .with_quant_range(range.quant_min(), range.quant_max())?;
            let mut found = Vec::new();
            for c in Calibrator::ALL {
                let mut obs = c.observer(spec)?;
                obs.observe_view(crate::observers::FloatView::F32(shadow.view()))?;
                let Some(qp) = obs.qparams()?.as_per_tensor().copied() else {
                    continue;
                };
                let db =
                    crate::metrics::sqnr(&shadow, &crate::kernels::fake_quantize(&shadow, &qp)?)?;
                let gain = db - now;
                if gain >= opts.min_gain_db {
                    found.push(Remedy {
                        change: Change::Observer { calibrator: c },
                        layer: Some(l.name.clone()),
                        effect: Effect::Local {
                            sqnr_db: db,
                            gain_db: gain,
                        },
                        evidence: layer_evidence(l, report),
                    });
                }
            }
            // The best first, then the cheaper calibrator among equals (stable).
            let g = |r: &Remedy| match r.effect {
                Effect::Local { gain_db, .. } => gain_db,
                _ => 0.0,
            };
            found.sort_by(|a, b| g(b).total_cmp(&g(a)));
            if l.verdict == Verdict::DataSensitive
                && let Some(best) = found.first()
            {
                // Some samples fall outside what calibration saw: parameters chosen on data
                // like these (what the replay measured) fix it, another calibrator on the same
                // calibration data would not.
                return Ok(vec![Remedy {
                    change: Change::CalibrateCloserToInference {
                        worst_samples: l.own.evidence.worst_samples.clone(),
                    },
                    layer: Some(l.name.clone()),
                    effect: best.effect.clone(),
                    evidence: layer_evidence(l, report),
                }]);
            }
            // The two best: the calibrators beyond them tell nothing more.
            found.truncate(2);
            Ok(found)
        };
        keep_replay(attempt(), &l.name, &mut remedies, unmeasured)?;
    }
    d.remedies.extend(remedies);
    Ok(())
}

/// A replay's remedies kept, or its error kept as [`Unmeasured`]; an I/O error (the file
/// cannot be read any more) ends the diagnosis.
fn keep_replay(
    outcome: Result<Vec<Remedy>>,
    layer: &str,
    remedies: &mut Vec<Remedy>,
    unmeasured: &mut Vec<Unmeasured>,
) -> Result<()> {
    match outcome {
        Ok(r) => remedies.extend(r),
        Err(e @ QuantError::Io { .. }) => return Err(e),
        Err(error) => unmeasured.push(Unmeasured {
            what: Measurement::Replay,
            layer: Some(layer.to_string()),
            error,
        }),
    }
    Ok(())
}

/// Replays every Linear with its input and weights: the implementation check (own error far
/// worse than its scheme replayed) for all of them, remedies for those with a finding of
/// their own. A replay that fails is kept as [`Unmeasured`].
fn replay_layers(
    pair: &DumpPair<'_>,
    report: &NsReport,
    d: &mut ReportDiagnosis,
    opts: &DumpDiagnoseOptions,
    unmeasured: &mut Vec<Unmeasured>,
) -> Result<()> {
    let mut remedies = Vec::new();
    for l in &mut d.layers {
        if !is_linear(pair, &l.name) {
            continue;
        }
        let mut attempt = || -> Result<Vec<Remedy>> {
            let Some((r, current, faithful)) = replay_of(pair, &l.name, opts.replay_rows)? else {
                return Ok(Vec::new());
            };
            // A static layer requantizes its output: the replay does too, with the dumped
            // output parameters, before it is compared with what the layer computed.
            let replayed = match pair.layer_meta(&l.name).and_then(|m| m.output) {
                Some(out) => {
                    let y = crate::kernels::fake_quantize(&r.output(&current)?, &out)?;
                    crate::metrics::sqnr(r.reference(), &y)?
                }
                None => r.sqnr_db(&current)?,
            };
            let mut remedies = Vec::new();
            if let Some(actual) = r.actual_sqnr_db().filter(|_| faithful) {
                if actual < replayed - SCHEME_MARGIN_DB && l.verdict != Verdict::Implementation {
                    l.findings.push(Finding::WorseThanItsScheme {
                        actual_db: actual,
                        replayed_db: replayed,
                    });
                    l.verdict = Verdict::Implementation;
                }
                if l.verdict == Verdict::Implementation {
                    remedies.push(Remedy {
                        change: Change::FixKernel,
                        layer: Some(l.name.clone()),
                        effect: Effect::Local {
                            sqnr_db: replayed,
                            gain_db: replayed - actual,
                        },
                        evidence: layer_evidence(l, report),
                    });
                }
            }
            if !matches!(l.verdict, Verdict::Fine | Verdict::Inherited) {
                let evidence = layer_evidence(l, report);
                for rr in r.remedies(&current, opts.min_gain_db)? {
                    remedies.push(rr.to_remedy(Some(&l.name), evidence.clone()));
                }
                for rr in r.format_remedies(&current, &opts.format_candidates, opts.min_gain_db)? {
                    remedies.push(rr.to_remedy(Some(&l.name), evidence.clone()));
                }
            }
            Ok(remedies)
        };
        let outcome = attempt();
        keep_replay(outcome, &l.name, &mut remedies, unmeasured)?;
    }
    d.remedies.extend(remedies);
    Ok(())
}

/// Remedies in the order to try them: by layer (the headline's first: implementation
/// verdicts, then the lowest own SQNR), then within a layer as the replay ranked them
/// (cheapest that fixes the layer first), a kernel fix first.
fn rank_remedies(d: &mut ReportDiagnosis) {
    let layers = std::mem::take(&mut d.layers);
    let rank = |layer: &Option<String>| -> (bool, f64) {
        match layer
            .as_deref()
            .and_then(|n| layers.iter().find(|l| l.name == n))
        {
            Some(l) => (
                l.verdict != Verdict::Implementation,
                if l.own.evidence.sqnr_db.is_nan() {
                    f64::INFINITY
                } else {
                    l.own.evidence.sqnr_db
                },
            ),
            None => (true, f64::INFINITY),
        }
    };
    let mut keyed: Vec<((bool, f64), usize, Remedy)> = d
        .remedies
        .drain(..)
        .enumerate()
        .map(|(i, r)| (rank(&r.layer), i, r))
        .collect();
    keyed.sort_by(|a, b| {
        (a.0.0)
            .cmp(&b.0.0)
            .then(a.0.1.total_cmp(&b.0.1))
            .then((a.2.cost() != Cost::KernelFix).cmp(&(b.2.cost() != Cost::KernelFix)))
            .then(a.1.cmp(&b.1))
    });
    d.remedies = keyed.into_iter().map(|(_, _, r)| r).collect();
    d.layers = layers;
}

impl fmt::Display for DumpDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::display_name;
        write!(f, "{}", self.diagnosis)?;
        writeln!(
            f,
            "dump format {}; samples: {}{}",
            match self.version {
                DumpVersion::V1 => "v1 (outputs only)",
                DumpVersion::V2 => "v2",
            },
            match self.sample_dims {
                SampleDims::Samples => "axis 0",
                SampleDims::Positions => "every real (n, t) position",
            },
            if self.masked {
                "; padded positions left out"
            } else {
                ""
            }
        )?;
        if let Some(b) = &self.baseline {
            writeln!(f, "against the baseline (verdict {}):", b.baseline_verdict)?;
            match &b.most_changed {
                Some(l) => writeln!(f, "  most changed: {}", display_name(l))?,
                None => writeln!(
                    f,
                    "  no layer's own error is {BASELINE_CHANGE_DB} dB worse than in the baseline"
                )?,
            }
            if let Some(l) = &b.first_divergent {
                writeln!(
                    f,
                    "  first output below the threshold against the baseline: {}",
                    display_name(l)
                )?;
            }
            for l in b
                .layers
                .iter()
                .filter(|l| l.change_db <= -BASELINE_CHANGE_DB)
            {
                writeln!(
                    f,
                    "  {}: own {:.2} dB (baseline {:.2} dB, {:+.2} dB)",
                    display_name(&l.name),
                    l.own_db,
                    l.baseline_own_db,
                    l.change_db
                )?;
            }
        }
        for u in &self.unmeasured {
            writeln!(f, "could not measure: {u}")?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped {}: {}", display_name(&s.name), s.reason)?;
        }
        Ok(())
    }
}
