//! The diagnosis of two dumps (feature `safetensors`): verdicts from each layer's own error,
//! input evidence and remedies measured by replaying layers, a baseline comparison. What
//! `qnumeric diagnose` runs.

use std::fmt;

use ndarray::ArrayD;

use super::diagnosis::Unmeasured;
use super::report::{Finding, ReportDiagnosis, diagnose_report};
use super::verdict::{Thresholds, Verdict};
use crate::error::{QuantError, Result};
use crate::ns::{DumpPair, DumpVersion, Mask, Part, SampleDims, Side, SkippedTensor};
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

/// How [`diagnose_dumps`] runs.
#[derive(Debug, Clone, Copy, PartialEq)]
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
}

impl Default for DumpDiagnoseOptions {
    fn default() -> Self {
        DumpDiagnoseOptions {
            thresholds: Thresholds::default(),
            sample_dims: SampleDims::Samples,
            min_gain_db: DEFAULT_DUMP_MIN_GAIN_DB,
            replay_rows: 2048,
            remedies: true,
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
        if !(self.min_gain_db >= 0.0) || !self.min_gain_db.is_finite() {
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
    if opts.remedies {
        add_input_evidence(pair, &mut diagnosis)?;
    }
    Ok(DumpDiagnosis {
        version: cmp.version,
        sample_dims: opts.sample_dims,
        masked: cmp.masked,
        diagnosis,
        baseline: None,
        skipped: cmp.skipped,
        unmeasured: Vec::new(),
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
            ..*opts
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

/// The median of finite values (`NaN` for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
