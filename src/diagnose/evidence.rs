//! What the diagnosis knows about one layer ([`LayerEvidence`]) and the layer's verdict with
//! its reasons ([`LayerDiagnosis`], [`Reason`]).

use std::fmt;

use super::kernel_check::DiffStats;
use super::verdict::{SampleEvidence, Thresholds, Verdict};
use crate::ns::NonFiniteCount;

/// Everything the diagnosis knows about one layer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerEvidence {
    /// The layer's kind in the quantized model.
    pub kind: String,
    /// The layer's own error (its float twin on its own quantized input).
    pub local: Option<SampleEvidence>,
    /// The error accumulated up to its output.
    pub cumulative: Option<SampleEvidence>,
    /// Fraction of float outputs outside the quantized output's representable range.
    pub clipped_fraction: Option<f64>,
    /// RMS error in quanta of the output scale (the rounding floor is `1/sqrt(12) ≈ 0.29`).
    #[cfg_attr(
        feature = "serde",
        serde(
            serialize_with = "crate::ns::json::opt_f64",
            deserialize_with = "crate::ns::json::de_opt_f64"
        )
    )]
    pub rms_quanta: Option<f64>,
    /// Weight SQNR (dB), per tensor.
    #[cfg_attr(
        feature = "serde",
        serde(
            serialize_with = "crate::ns::json::opt_f64",
            deserialize_with = "crate::ns::json::de_opt_f64"
        )
    )]
    pub weight_sqnr_db: Option<f64>,
    /// The worst output channel's weight SQNR (dB).
    #[cfg_attr(
        feature = "serde",
        serde(
            serialize_with = "crate::ns::json::opt_f64",
            deserialize_with = "crate::ns::json::de_opt_f64"
        )
    )]
    pub worst_channel_weight_sqnr_db: Option<f64>,
    /// The integer kernel against its reference on the real activations (a wrongly shaped
    /// output counts as a failed case).
    pub kernel: Option<DiffStats>,
    /// The kernel's output shape and the reference's, when they differ (an implementation
    /// error).
    pub kernel_shape_mismatch: Option<(Vec<usize>, Vec<usize>)>,
    /// NaN and infinite values in the quantized output where the float one is finite (a
    /// finding: those samples' SQNR is `-inf`).
    pub non_finite: NonFiniteCount,
}

/// Why a layer got its verdict: one typed reason each, in words through `Display`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "reason", rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum Reason {
    /// The kernel differs from its reference beyond the tolerance.
    KernelDiffers {
        /// The disagreement.
        stats: DiffStats,
    },
    /// The kernel's output has another shape than its reference's.
    KernelShape {
        /// The kernel's output shape.
        kernel: Vec<usize>,
        /// The reference's.
        reference: Vec<usize>,
    },
    /// The quantized output holds NaN or infinite values where the float one is finite.
    NonFinite {
        /// The counts.
        count: NonFiniteCount,
        /// Samples compared.
        samples: usize,
    },
    /// Samples fall below the threshold from the layer's own error.
    LocalError {
        /// Fraction below.
        fraction_below: f64,
        /// The threshold (dB).
        threshold_db: f64,
        /// The median per-sample SQNR (dB).
        #[cfg_attr(
            feature = "serde",
            serde(
                serialize_with = "crate::ns::json::f64",
                deserialize_with = "crate::ns::json::de_f64"
            )
        )]
        median_db: f64,
        /// The worst per-sample SQNR (dB).
        #[cfg_attr(
            feature = "serde",
            serde(
                serialize_with = "crate::ns::json::f64",
                deserialize_with = "crate::ns::json::de_f64"
            )
        )]
        worst_db: f64,
    },
    /// Float outputs are clipped by the output range.
    Clipped {
        /// Fraction clipped.
        fraction: f64,
    },
    /// The error in quanta is well above the rounding floor.
    AboveRoundingFloor {
        /// RMS error in quanta.
        #[cfg_attr(
            feature = "serde",
            serde(
                serialize_with = "crate::ns::json::f64",
                deserialize_with = "crate::ns::json::de_f64"
            )
        )]
        rms_quanta: f64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::KernelDiffers { stats: k } => write!(
                f,
                "the int8 kernel differs from its reference on {} of {} outputs (largest {} quanta, mean {:+.3} quanta{})",
                k.values - k.exact,
                k.values,
                k.max_abs_diff,
                k.mean_diff(),
                if k.failed_cases > 0 {
                    format!(", {} failed batches", k.failed_cases)
                } else {
                    String::new()
                }
            ),
            Reason::KernelShape { kernel, reference } => write!(
                f,
                "the int8 kernel's output has shape {kernel:?}, its reference {reference:?}"
            ),
            Reason::NonFinite { count, samples } => write!(
                f,
                "the quantized output holds {} NaN and {} infinite values in {} of {} samples (the float output is finite there)",
                count.nan,
                count.pos_inf + count.neg_inf,
                count.samples,
                samples
            ),
            Reason::LocalError {
                fraction_below,
                threshold_db,
                median_db,
                worst_db,
            } => write!(
                f,
                "{:.1}% of the samples fall below {threshold_db:.0} dB from this layer's own error (median {median_db:.1} dB, worst {worst_db:.1} dB)",
                fraction_below * 100.0
            ),
            Reason::Clipped { fraction } => write!(
                f,
                "{:.2}% of the float outputs are clipped by the output range",
                fraction * 100.0
            ),
            Reason::AboveRoundingFloor { rms_quanta } => write!(
                f,
                "the error is {rms_quanta:.2} quanta RMS, {:.1}× the rounding floor",
                rms_quanta / crate::ns::ROUNDING_FLOOR_QUANTA
            ),
        }
    }
}

/// One layer's verdict, with the evidence and the reasons.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerDiagnosis {
    /// The layer.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The evidence.
    pub evidence: LayerEvidence,
    /// Why.
    pub reasons: Vec<Reason>,
}

impl LayerEvidence {
    /// The verdict this evidence supports: implementation when the kernel disagrees with its
    /// reference, has the wrong output shape, or the quantized output holds NaN / inf;
    /// else the local error's verdict (a layer without a float twin carries only what it
    /// inherited: fine).
    #[must_use]
    pub fn verdict(&self, t: &Thresholds) -> Verdict {
        let kernel_bad = self.kernel.is_some_and(|k| !t.kernel.accepts(&k))
            || self.kernel_shape_mismatch.is_some();
        if kernel_bad || !self.non_finite.is_empty() {
            Verdict::Implementation
        } else {
            self.local.as_ref().map_or(Verdict::Fine, |s| s.verdict(t))
        }
    }

    /// The reasons for `verdict`, most serious first.
    #[must_use]
    pub fn reasons(&self, verdict: Verdict, t: &Thresholds) -> Vec<Reason> {
        let mut r = Vec::new();
        if let Some((kernel, reference)) = &self.kernel_shape_mismatch {
            r.push(Reason::KernelShape {
                kernel: kernel.clone(),
                reference: reference.clone(),
            });
        }
        if let Some(k) = self.kernel
            && verdict == Verdict::Implementation
            && !t.kernel.accepts(&k)
        {
            r.push(Reason::KernelDiffers { stats: k });
        }
        if !self.non_finite.is_empty() {
            let samples = self
                .cumulative
                .as_ref()
                .or(self.local.as_ref())
                .map_or(0, |s| s.sample_sqnr_db.len());
            r.push(Reason::NonFinite {
                count: self.non_finite,
                samples,
            });
        }
        if let Some(l) = &self.local
            && l.fraction_below > 0.0
        {
            r.push(Reason::LocalError {
                fraction_below: l.fraction_below,
                threshold_db: t.min_sqnr_db,
                median_db: l.percentiles[1],
                worst_db: l.min_db,
            });
        }
        if let Some(c) = self.clipped_fraction
            && c > 0.001
        {
            r.push(Reason::Clipped { fraction: c });
        }
        if let Some(q) = self.rms_quanta
            && q > 1.0
        {
            r.push(Reason::AboveRoundingFloor { rms_quanta: q });
        }
        r
    }
}
