//! [`EntropyObserver`]: TensorRT's KL-divergence (entropy) calibration.

use super::calib::{clip_range, impl_hist_observer};
use super::reduce::check_spec;
use super::streaming::StreamingHistogram;
use crate::error::{QuantError, Result};
use crate::qparams::QSpec;

/// Entropy calibration: TensorRT's algorithm on a 2048-bin [`StreamingHistogram`] of `|x|`.
///
/// For every candidate `i` in `L..=2048` (number of bins kept; `L = 128` quantized levels for
/// 8-bit symmetric and two-sided affine, `2^bits` levels for one-sided data under an affine
/// scheme):
/// 1. `P` = the first `i` bins, the clipped tail folded into bin `i − 1`;
/// 2. `Q` = the first `i` bins merged into `L` groups of `floor(i / L)` bins (the remainder
///    joins the last group), each group's mass spread evenly over the bins where `P` is non-zero;
/// 3. both smoothed as ONNX Runtime/MXNet do (`ε = 1e−4` added to zero entries, taken evenly
///    from the others) and `D = KL(P ‖ Q)`.
///
/// The threshold is `t = i·w` (upper edge of the kept bins) for the `i` with the smallest
/// divergence (ties go to the larger `i`); the range is `[−t, t]` clamped to the observed
/// `[min, max]`. Cost: `O(2048²)` per `qparams`, a few milliseconds.
///
/// # Examples
/// ```
/// use ndarray::Array1;
/// use qnumeric::observers::EntropyObserver;
/// use qnumeric::{QDType, QScheme, QSpec};
///
/// let mut x: Vec<f32> = (0..20_000).map(|i| (i * 7919 % 20_000) as f32 / 20_000.0 - 0.5).collect();
/// x[0] = 50.0;
/// let mut obs = EntropyObserver::new(QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8))?;
/// obs.observe(&Array1::from(x))?;
/// let (lo, hi) = obs.range()?; // the clipping range (here: uniform bulk, nothing to gain)
/// assert!(lo >= -0.5 && hi <= 50.0);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "CalibratorState", try_from = "CalibratorState")
)]
pub struct EntropyObserver {
    spec: QSpec,
    hist: StreamingHistogram,
}

/// ONNX Runtime / MXNet smoothing of a count vector: `ε` to zero entries, `ε·n0/n1` off the
/// others. `None` when impossible (all zero, or would turn an entry non-positive).
fn smooth(v: &mut [f64]) -> Option<()> {
    const EPS: f64 = 1e-4;
    let n0 = v.iter().filter(|&&x| x == 0.0).count();
    let n1 = v.len() - n0;
    if n1 == 0 {
        return None;
    }
    let eps1 = EPS * n0 as f64 / n1 as f64;
    for x in v.iter_mut() {
        if *x == 0.0 {
            *x = EPS;
        } else {
            *x -= eps1;
            if *x <= 0.0 {
                return None;
            }
        }
    }
    Some(())
}

/// KL divergence of two positive count vectors (each normalised).
fn kl(p: &[f64], q: &[f64]) -> f64 {
    let sp: f64 = p.iter().sum();
    let sq: f64 = q.iter().sum();
    p.iter()
        .zip(q)
        .filter(|&(&a, _)| a > 0.0)
        .map(|(&a, &b)| {
            let a = a / sp;
            a * (a / (b / sq)).ln()
        })
        .sum()
}

/// TensorRT's search: the number of bins to keep (`levels..=h.len()`), minimising KL.
pub(crate) fn best_kept_bins(h: &[u64], levels: usize) -> usize {
    let b = h.len();
    let levels = levels.clamp(1, b);
    let total: u64 = h.iter().sum();
    let mut best = (f64::INFINITY, b);
    let mut p = vec![0.0f64; b];
    let mut q = vec![0.0f64; b];
    let mut kept_sum = h[..levels].iter().sum::<u64>();
    for i in levels..=b {
        if i > levels {
            kept_sum += h[i - 1];
        }
        let tail = total - kept_sum;
        let p = &mut p[..i];
        for (d, &s) in p.iter_mut().zip(&h[..i]) {
            *d = s as f64;
        }
        p[i - 1] += tail as f64;
        let q = &mut q[..i];
        let m = i / levels;
        for g in 0..levels {
            let start = g * m;
            let stop = if g == levels - 1 { i } else { start + m };
            let mass: u64 = h[start..stop].iter().sum();
            let nz = p[start..stop].iter().filter(|&&v| v != 0.0).count();
            for j in start..stop {
                q[j] = if p[j] != 0.0 && nz > 0 {
                    mass as f64 / nz as f64
                } else {
                    0.0
                };
            }
        }
        if smooth(p).is_none() || smooth(q).is_none() {
            continue;
        }
        let d = kl(p, q);
        if d <= best.0 {
            best = (d, i);
        }
    }
    best.1
}

impl EntropyObserver {
    /// An entropy (KL) calibrator with 2048 bins.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme.
    pub fn new(spec: QSpec) -> Result<Self> {
        check_spec("EntropyObserver::new", &spec, false, false)?;
        Ok(EntropyObserver {
            spec,
            hist: StreamingHistogram::new(StreamingHistogram::DEFAULT_BINS)?,
        })
    }

    /// The histogram observed.
    #[must_use]
    pub fn histogram(&self) -> &StreamingHistogram {
        &self.hist
    }

    fn same_config(&self, o: &Self) -> bool {
        self.spec == o.spec
    }

    /// The number of quantized levels on one side of zero used by the search.
    fn levels(&self, min: f32, max: f32) -> usize {
        let all = self.spec.range().levels().min(1 << 20) as usize;
        let one_sided = min >= 0.0 || max <= 0.0;
        if self.spec.scheme().is_symmetric() || !one_sided {
            (all / 2).max(1)
        } else {
            all
        }
    }

    /// The clipping range.
    ///
    /// # Errors
    /// [`QuantError::Empty`] before any data.
    pub fn range(&self) -> Result<(f32, f32)> {
        let (min, max) = self.hist.min_max().ok_or(QuantError::Empty {
            op: "EntropyObserver::range",
        })?;
        let w = self.hist.bin_width().unwrap_or(0.0);
        let h = self.hist.abs_counts();
        let i = best_kept_bins(&h, self.levels(min, max));
        Ok(clip_range(i as f64 * w, min, max))
    }
}

impl_hist_observer!(EntropyObserver, "EntropyObserver");

/// The serialized state of a [`EntropyObserver`].
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct CalibratorState {
    spec: QSpec,
    histogram: StreamingHistogram,
}

#[cfg(feature = "serde")]
impl From<EntropyObserver> for CalibratorState {
    fn from(o: EntropyObserver) -> Self {
        CalibratorState {
            spec: o.spec,
            histogram: o.hist,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<CalibratorState> for EntropyObserver {
    type Error = QuantError;

    /// The constructor's checks and the constructor's histogram size.
    fn try_from(s: CalibratorState) -> Result<Self> {
        let mut o = EntropyObserver::new(s.spec)?;
        super::calib::check_calibrator_histogram("EntropyObserver::deserialize", &s.histogram)?;
        o.hist = s.histogram;
        Ok(o)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_for_uniform_data() {
        let h = vec![10u64; 256];
        assert_eq!(best_kept_bins(&h, 128), 256);
    }

    #[test]
    fn clips_a_lone_outlier() {
        let mut h = vec![0u64; 2048];
        for (i, c) in h.iter_mut().enumerate().take(200) {
            *c = 1000 - 4 * i as u64;
        }
        h[2047] = 1;
        let i = best_kept_bins(&h, 128);
        assert!(i < 400, "kept {i}");
    }
}
