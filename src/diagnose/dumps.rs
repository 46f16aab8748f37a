//! Verdicts from per-sample evidence alone: two dumps of per-layer outputs (or any cumulative
//! [`NsReport`]), no model.

use std::fmt;

use super::verdict::{SampleEvidence, Thresholds, Verdict};
use crate::error::Result;
use crate::ns::{NonFiniteCount, NsReport};

/// One layer of a [`ReportDiagnosis`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReportLayer {
    /// The layer (tensor) name.
    pub name: String,
    /// The verdict: where the error first appears, judged per sample.
    pub verdict: Verdict,
    /// Fraction of samples that fall below the threshold at this layer and were above it at
    /// the layer before (the error this layer adds).
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
    /// The most serious verdict of any layer (`fine`, `data-sensitive`, `data-insensitive`).
    pub verdict: Verdict,
    /// The first layer with a verdict other than fine.
    pub first_layer: Option<String>,
    /// The samples with the lowest SQNR at the last layer, worst first (at most 10).
    pub worst_samples: Vec<usize>,
    /// The layers in order.
    pub layers: Vec<ReportLayer>,
}

/// Verdicts from the cumulative comparisons of a report (two dumps of per-layer outputs,
/// pushed pairs, ...): a sample whose SQNR falls below [`Thresholds::min_sqnr_db`] at a layer,
/// having been above it at the layer before, is charged to that layer; the fraction of such
/// samples decides the layer's verdict as in [`super::diagnose`]. Without a model there is no
/// kernel check; NaN or infinite values in a quantized output (where the float output is
/// finite) give the layer the implementation verdict.
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
/// let report = qnumeric::ns::NsReport::from_logs(Some(&log), None);
/// let d = diagnose_report(&report, &Thresholds::default())?;
/// assert_eq!(d.verdict, Verdict::DataInsensitive);
/// assert_eq!(d.first_layer.as_deref(), Some("b"));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn diagnose_report(report: &NsReport, t: &Thresholds) -> Result<ReportDiagnosis> {
    t.validate()?;
    let mut layers = Vec::new();
    let mut previous: Option<Vec<f64>> = None;
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
                    && previous
                        .as_ref()
                        .and_then(|p| p.get(i))
                        .is_none_or(|&p| p >= t.min_sqnr_db)
            })
            .count();
        let fraction_new_below = if n == 0 {
            0.0
        } else {
            new_below as f64 / n as f64
        };
        let verdict = if !c.non_finite.is_empty() {
            Verdict::Implementation
        } else if fraction_new_below >= t.insensitive_fraction {
            Verdict::DataInsensitive
        } else if fraction_new_below >= t.sensitive_fraction && new_below >= 1 {
            Verdict::DataSensitive
        } else {
            Verdict::Fine
        };
        previous = Some(now.clone());
        layers.push(ReportLayer {
            name: l.name.clone(),
            verdict,
            fraction_new_below,
            clipped_fraction: c.clipped_fraction,
            non_finite: c.non_finite,
            evidence,
        });
    }
    Ok(ReportDiagnosis {
        verdict: layers
            .iter()
            .map(|l| l.verdict)
            .max()
            .unwrap_or(Verdict::Fine),
        first_layer: layers
            .iter()
            .find(|l| l.verdict != Verdict::Fine)
            .map(|l| l.name.clone()),
        worst_samples: layers
            .last()
            .map(|l| l.evidence.worst_samples.clone())
            .unwrap_or_default(),
        layers,
    })
}

impl fmt::Display for ReportDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::{cell, column_width, display_name, pad};
        writeln!(f, "verdict: {}", self.verdict)?;
        if let Some(l) = &self.first_layer {
            writeln!(f, "first layer with a verdict: {}", display_name(l))?;
        }
        let w = column_width(self.layers.iter().map(|l| l.name.as_str()), 20);
        writeln!(
            f,
            "{} {:<16} {:>10} {:>12} {:>14}",
            pad("layer", w),
            "verdict",
            "SQNR dB",
            "below thr %",
            "newly below %"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{} {:<16} {:>10.2} {:>12.1} {:>14.1}",
                pad(&cell(&l.name, w), w),
                l.verdict.name(),
                l.evidence.sqnr_db,
                l.evidence.fraction_below * 100.0,
                l.fraction_new_below * 100.0
            )?;
            if !l.non_finite.is_empty() {
                writeln!(
                    f,
                    "    the quantized output holds {} NaN and {} infinite values in {} samples (the float output is finite there)",
                    l.non_finite.nan,
                    l.non_finite.pos_inf + l.non_finite.neg_inf,
                    l.non_finite.samples
                )?;
            }
        }
        if !self.worst_samples.is_empty() {
            writeln!(f, "worst samples: {:?}", self.worst_samples)?;
        }
        Ok(())
    }
}
