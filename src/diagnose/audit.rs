//! The calibration audit: is the calibration set large and varied enough, and did every
//! observer's range settle before the data ran out?

use std::collections::BTreeMap;
use std::fmt;

use ndarray::{ArrayD, Axis};

use crate::error::{QuantError, Result};
use crate::nn::Model;
use crate::ptq::{PtqConfig, prepare};
use crate::qparams::AnyQParams;

/// What the calibration audit flags.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AuditThresholds {
    /// Fewer calibration samples than this is flagged (default 100).
    pub min_samples: usize,
    /// With labels: a class with fewer samples than this is flagged (default 5).
    pub min_per_class: usize,
    /// The calibration data is fed in this many batches (default 10).
    pub batches: usize,
    /// The last part of the data whose effect on the ranges is measured (default 0.2).
    pub tail_fraction: f64,
    /// An observer whose representable range still moved by more than this fraction of its
    /// width over the tail has not converged (default 0.05).
    pub max_range_drift: f64,
}

impl Default for AuditThresholds {
    fn default() -> Self {
        AuditThresholds {
            min_samples: 100,
            min_per_class: 5,
            batches: 10,
            tail_fraction: 0.2,
            max_range_drift: 0.05,
        }
    }
}

/// How much one observer's range moved over the last part of the calibration data.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ObserverConvergence {
    /// The observed layer.
    pub layer: String,
    /// The representable range before the tail.
    pub before_tail: (f32, f32),
    /// The representable range at the end.
    pub last: (f32, f32),
    /// `max(|Δlow|, |Δhigh|) / (high − low)` at the end.
    pub drift: f64,
    /// `drift <= max_range_drift`.
    pub converged: bool,
}

/// The calibration audit.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CalibrationAudit {
    /// Calibration samples (the first axis of the data).
    pub samples: usize,
    /// With labels: samples per class.
    pub class_counts: Option<BTreeMap<i64, usize>>,
    /// With labels and a class count: classes with no sample.
    pub missing_classes: Vec<i64>,
    /// With labels: classes with fewer samples than the threshold (missing ones included).
    pub sparse_classes: Vec<i64>,
    /// Per observed layer, in execution order.
    pub observers: Vec<ObserverConvergence>,
    /// What is wrong, one sentence each (empty for a sound calibration).
    pub findings: Vec<String>,
}

impl CalibrationAudit {
    /// Whether nothing was flagged.
    #[must_use]
    pub fn is_sound(&self) -> bool {
        self.findings.is_empty()
    }
}

impl fmt::Display for CalibrationAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "calibration: {} samples", self.samples)?;
        if let Some(c) = &self.class_counts {
            let parts: Vec<String> = c.iter().map(|(k, n)| format!("{k}:{n}")).collect();
            writeln!(f, "classes: {}", parts.join(" "))?;
        }
        for o in &self.observers {
            writeln!(
                f,
                "  {} range [{:.4}, {:.4}]  moved {:.1}% over the tail{}",
                crate::text::pad(&crate::text::cell(&o.layer, 16), 16),
                o.last.0,
                o.last.1,
                o.drift * 100.0,
                if o.converged { "" } else { "  (not converged)" }
            )?;
        }
        if self.findings.is_empty() {
            writeln!(f, "no finding")?;
        }
        for s in &self.findings {
            writeln!(f, "! {s}")?;
        }
        Ok(())
    }
}

fn ranges<M: Model>(p: &crate::ptq::Prepared<M>) -> Result<Vec<(String, (f32, f32))>> {
    let mut out = Vec::new();
    for (name, plan) in p.plan() {
        if !plan.observes_output() {
            continue;
        }
        if let Some(obs) = p.observer(name)
            && let AnyQParams::PerTensor(q) = obs.qparams()?
        {
            out.push((name.clone(), q.representable()));
        }
    }
    Ok(out)
}

/// Audits a calibration set: sample count, class coverage when labels are given, and
/// whether each activation observer's range converged (how much it still moved over the
/// last `tail_fraction` of the data, fed in `batches` batches).
///
/// # Errors
/// [`QuantError::EmptyInput`] for no calibration sample; [`QuantError::LengthMismatch`] when
/// there are not as many labels as samples; errors of [`prepare`] and of calibration.
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::diagnose::{audit_calibration, AuditThresholds};
/// use qnumeric::nn::{Linear, Sequential};
/// use qnumeric::ptq::PtqConfig;
///
/// let model = Sequential::new()
///     .with("fc", Linear::new(ArrayD::from_elem(IxDyn(&[2, 3]), 0.5), None)?)?
///     .with_quant_stubs()?;
/// let calib = ArrayD::from_shape_fn(IxDyn(&[20, 3]), |i| (i[0] * 3 + i[1]) as f32 / 60.0);
/// let audit =
///     audit_calibration(&model, &PtqConfig::default(), &calib, None, &AuditThresholds::default())?;
/// assert_eq!(audit.samples, 20);
/// assert!(!audit.is_sound()); // 20 samples are fewer than 100
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn audit_calibration<M: Model + Clone>(
    model: &M,
    config: &PtqConfig,
    calib: &ArrayD<f32>,
    labels: Option<(&[i64], Option<usize>)>,
    thresholds: &AuditThresholds,
) -> Result<CalibrationAudit> {
    const OP: &str = "audit_calibration";
    let n = calib.shape().first().copied().unwrap_or(0);
    if calib.ndim() == 0 || n == 0 {
        return Err(QuantError::EmptyInput { op: OP });
    }
    let mut findings = Vec::new();
    if n < thresholds.min_samples {
        findings.push(format!(
            "only {n} calibration samples (at least {} recommended)",
            thresholds.min_samples
        ));
    }
    let (mut class_counts, mut missing, mut sparse) = (None, Vec::new(), Vec::new());
    if let Some((labels, classes)) = labels {
        if labels.len() != n {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "labels",
                expected: n,
                got: labels.len(),
            });
        }
        let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
        for &l in labels {
            *counts.entry(l).or_default() += 1;
        }
        if let Some(c) = classes {
            for k in 0..c as i64 {
                if !counts.contains_key(&k) {
                    missing.push(k);
                }
            }
        }
        sparse = counts
            .iter()
            .filter(|&(_, &c)| c < thresholds.min_per_class)
            .map(|(&k, _)| k)
            .chain(missing.iter().copied())
            .collect();
        sparse.sort_unstable();
        if !missing.is_empty() {
            findings.push(format!(
                "{} of {} classes have no calibration sample: {missing:?}",
                missing.len(),
                classes.unwrap_or(0)
            ));
        }
        let present_sparse: Vec<i64> = sparse
            .iter()
            .copied()
            .filter(|k| !missing.contains(k))
            .collect();
        if !present_sparse.is_empty() {
            findings.push(format!(
                "classes with fewer than {} calibration samples: {present_sparse:?}",
                thresholds.min_per_class
            ));
        }
        class_counts = Some(counts);
    }
    let batches = thresholds.batches.clamp(1, n);
    let tail_start = ((1.0 - thresholds.tail_fraction.clamp(0.0, 1.0)) * n as f64).floor() as usize;
    let mut prepared = prepare(model.clone(), config)?;
    let mut before_tail = None;
    let mut seen = 0;
    for b in 0..batches {
        let end = (b + 1) * n / batches;
        if end == seen {
            continue;
        }
        if seen >= tail_start && before_tail.is_none() && seen > 0 {
            before_tail = Some(ranges(&prepared)?);
        }
        let chunk = calib.slice_axis(Axis(0), (seen..end).into()).to_owned();
        prepared.calibrate(&chunk)?;
        seen = end;
    }
    let last = ranges(&prepared)?;
    let before_tail = before_tail.unwrap_or_else(|| last.clone());
    let mut observers = Vec::with_capacity(last.len());
    for ((layer, now), (_, then)) in last.into_iter().zip(before_tail) {
        let width = f64::from(now.1) - f64::from(now.0);
        let moved = (f64::from(now.0) - f64::from(then.0))
            .abs()
            .max((f64::from(now.1) - f64::from(then.1)).abs());
        let drift = if width > 0.0 { moved / width } else { 0.0 };
        let converged = drift <= thresholds.max_range_drift;
        if !converged {
            findings.push(format!(
                "the range of `{layer}` still moved by {:.1}% over the last {:.0}% of the calibration data",
                drift * 100.0,
                thresholds.tail_fraction * 100.0
            ));
        }
        observers.push(ObserverConvergence {
            layer,
            before_tail: then,
            last: now,
            drift,
            converged,
        });
    }
    Ok(CalibrationAudit {
        samples: n,
        class_counts,
        missing_classes: missing,
        sparse_classes: sparse,
        observers,
        findings,
    })
}
