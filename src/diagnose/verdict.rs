//! The verdicts ([`Verdict`]), their thresholds ([`Thresholds`]) and the per-sample evidence
//! they are read from ([`SampleEvidence`]).

use std::fmt;

use super::kernel_check::KernelTolerance;
use crate::error::{QuantError, Result};
use crate::ns::OutputComparison;

/// What is wrong at a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Verdict {
    /// No finding.
    Fine,
    /// The layer's own error is fine, but samples reach it already degraded upstream (the
    /// error is inherited, and may grow through the layer): look upstream.
    Inherited,
    /// A few inputs (outliers) carry a large error; most are fine.
    DataSensitive,
    /// Inherent to quantizing this layer: most inputs show a large error.
    DataInsensitive,
    /// The int8 kernel disagrees with its reference `dequantize → f32 op → quantize`.
    Implementation,
}

impl Verdict {
    /// `fine`, `data-sensitive`, `data-insensitive`, `implementation`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Fine => "fine",
            Verdict::Inherited => "inherited",
            Verdict::DataSensitive => "data-sensitive",
            Verdict::DataInsensitive => "data-insensitive",
            Verdict::Implementation => "implementation",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The thresholds of the verdicts. The defaults leave an int8 model whose layers sit between
/// 25 and 35 dB (with no accuracy loss) without a verdict, and flag a layer that falls to
/// about 10 dB for every sample.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Thresholds {
    /// A sample whose SQNR at a layer is below this (dB) has a large error there (default 20).
    pub min_sqnr_db: f64,
    /// At least this fraction of samples with a large error makes the error
    /// data-insensitive (default 0.5).
    pub insensitive_fraction: f64,
    /// At least this fraction (and at least one sample), below `insensitive_fraction`,
    /// makes it data-sensitive (default 0.01).
    pub sensitive_fraction: f64,
    /// What the kernel's disagreement with its reference may be before the verdict is
    /// implementation (default: [`KernelTolerance::default`]).
    pub kernel: KernelTolerance,
}

impl Thresholds {
    /// Checks every field: `min_sqnr_db` finite, both fractions in `0..=1` with
    /// `sensitive_fraction <= insensitive_fraction`, and the kernel tolerance's fractions
    /// finite and `>= 0`. NaN or out-of-range thresholds would give arbitrary verdicts.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "Thresholds::validate";
        let bad = |what: &'static str, value: f64, reason: &'static str| {
            Err(QuantError::InvalidParameter {
                op: OP,
                what,
                value,
                reason,
            })
        };
        if !self.min_sqnr_db.is_finite() {
            return bad(
                "min_sqnr_db",
                self.min_sqnr_db,
                "must be a finite number of dB",
            );
        }
        for (what, v) in [
            ("insensitive_fraction", self.insensitive_fraction),
            ("sensitive_fraction", self.sensitive_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(what, v, "must be a fraction in 0..=1");
            }
        }
        if self.sensitive_fraction > self.insensitive_fraction {
            return bad(
                "sensitive_fraction",
                self.sensitive_fraction,
                "must not exceed insensitive_fraction",
            );
        }
        check_kernel_tolerance(OP, &self.kernel)
    }
}

/// A kernel tolerance's fractions must be finite and `>= 0` (a fraction `<= 1`).
pub(crate) fn check_kernel_tolerance(op: &'static str, k: &KernelTolerance) -> Result<()> {
    if !(0.0..=1.0).contains(&k.max_off_by_one_fraction) {
        return Err(QuantError::InvalidParameter {
            op,
            what: "kernel.max_off_by_one_fraction",
            value: k.max_off_by_one_fraction,
            reason: "must be a fraction in 0..=1",
        });
    }
    if !(k.max_abs_mean_diff >= 0.0 && k.max_abs_mean_diff.is_finite()) {
        return Err(QuantError::InvalidParameter {
            op,
            what: "kernel.max_abs_mean_diff",
            value: k.max_abs_mean_diff,
            reason: "must be a finite number of quanta >= 0",
        });
    }
    Ok(())
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_sqnr_db: 20.0,
            insensitive_fraction: 0.5,
            sensitive_fraction: 0.01,
            kernel: KernelTolerance::default(),
        }
    }
}

/// Per-sample evidence of one comparison at one layer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SampleEvidence {
    /// SQNR over all samples (dB; `"inf"` in JSON for a lossless layer).
    #[cfg_attr(
        feature = "serde",
        serde(
            serialize_with = "crate::ns::json::f64",
            deserialize_with = "crate::ns::json::de_f64"
        )
    )]
    pub sqnr_db: f64,
    /// Fraction of samples below [`Thresholds::min_sqnr_db`].
    pub fraction_below: f64,
    /// The lowest per-sample SQNR (dB).
    #[cfg_attr(
        feature = "serde",
        serde(
            serialize_with = "crate::ns::json::f64",
            deserialize_with = "crate::ns::json::de_f64"
        )
    )]
    pub min_db: f64,
    /// 5th, 50th and 95th percentiles of the per-sample SQNR (dB).
    #[cfg_attr(
        feature = "serde",
        serde(
            serialize_with = "crate::ns::json::arr3_f64",
            deserialize_with = "crate::ns::json::de_arr3_f64"
        )
    )]
    pub percentiles: [f64; 3],
    /// The worst samples (lowest SQNR first), at most 10.
    pub worst_samples: Vec<usize>,
    /// Each sample's SQNR (dB), for histograms.
    #[cfg_attr(
        feature = "serde",
        serde(
            serialize_with = "crate::ns::json::vec_f64",
            deserialize_with = "crate::ns::json::de_vec_f64"
        )
    )]
    pub sample_sqnr_db: Vec<f64>,
}

impl SampleEvidence {
    pub(crate) fn from_comparison(c: &OutputComparison, t: &Thresholds) -> Self {
        let pct = |p: f64| c.sample_sqnr_percentile(p).unwrap_or(f64::NAN);
        SampleEvidence {
            sqnr_db: c.sqnr_db,
            fraction_below: c.fraction_of_samples_below(t.min_sqnr_db),
            min_db: c.sample_sqnr_db().into_iter().fold(f64::INFINITY, f64::min),
            percentiles: [pct(5.0), pct(50.0), pct(95.0)],
            worst_samples: c.worst_samples(10),
            sample_sqnr_db: c.sample_sqnr_db(),
        }
    }

    /// Evidence from per-sample SQNRs alone (`sqnr_db` the figure over all samples), with the
    /// conventions of the evidence of an `OutputComparison`: percentiles by nearest rank and
    /// worst samples first, NaN (all-zero samples) left out of both.
    #[must_use]
    pub fn from_samples(sqnr_db: f64, samples: Vec<f64>, t: &Thresholds) -> Self {
        let mut finite: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        finite.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if finite.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * (finite.len() - 1) as f64).round() as usize;
            finite[rank.min(finite.len() - 1)]
        };
        let mut idx: Vec<usize> = (0..samples.len())
            .filter(|&i| !samples[i].is_nan())
            .collect();
        idx.sort_by(|&a, &b| samples[a].total_cmp(&samples[b]).then(a.cmp(&b)));
        idx.truncate(10);
        let below = samples.iter().filter(|&&s| s < t.min_sqnr_db).count();
        SampleEvidence {
            sqnr_db,
            fraction_below: if samples.is_empty() {
                0.0
            } else {
                below as f64 / samples.len() as f64
            },
            min_db: samples.iter().copied().fold(f64::INFINITY, f64::min),
            percentiles: [pct(5.0), pct(50.0), pct(95.0)],
            worst_samples: idx,
            sample_sqnr_db: samples,
        }
    }

    /// The verdict this evidence supports.
    #[must_use]
    pub fn verdict(&self, t: &Thresholds) -> Verdict {
        let n = self.sample_sqnr_db.len().max(1) as f64;
        if self.fraction_below >= t.insensitive_fraction {
            Verdict::DataInsensitive
        } else if self.fraction_below >= t.sensitive_fraction && self.fraction_below * n >= 1.0 {
            Verdict::DataSensitive
        } else {
            Verdict::Fine
        }
    }
}
