//! The diagnosis of two dumps (feature `safetensors`): verdicts from each layer's own error,
//! input evidence and remedies measured by replaying layers, a baseline comparison. What
//! `qnumeric diagnose` runs.

use std::fmt;

use super::diagnosis::Unmeasured;
use super::report::{ReportDiagnosis, diagnose_report};
use super::verdict::{Thresholds, Verdict};
use crate::error::{QuantError, Result};
use crate::ns::{DumpPair, DumpVersion, SampleDims, SkippedTensor};

/// The default least gain (dB) of a replayed remedy.
pub const DEFAULT_DUMP_MIN_GAIN_DB: f64 = 0.5;

/// A layer's own error must fall by at least this much (dB) against the baseline to be
/// called changed.
pub const BASELINE_CHANGE_DB: f64 = 3.0;

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
                writeln!(f, "  first output below the threshold against the baseline: {}", display_name(l))?;
            }
            for l in b.layers.iter().filter(|l| l.change_db <= -BASELINE_CHANGE_DB) {
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
