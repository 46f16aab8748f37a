//! [`PercentileObserver`]: clip the tails of the distribution at a percentile.

use super::calib::{clip_range, impl_hist_observer};
use super::reduce::check_spec;
use super::streaming::StreamingHistogram;
use crate::error::{QuantError, Result};
use crate::qparams::QSpec;

/// Percentile calibration (ONNX Runtime, pytorch-quantization, AIMET), from a
/// [`StreamingHistogram`] of 2048 bins.
///
/// Tail convention (bin-granular, never clipping more than asked):
/// - **symmetric** scheme: `amax` is the upper edge of the first `|x|` bin at which at most
///   `(100 − p)%` of the values lie above; the range is `[−amax, amax]`;
/// - **affine** scheme: `(100 − p)/2 %` is cut from *each* signed tail (ONNX Runtime's
///   convention): the range runs from the lower edge of the first bin with at most that share
///   below it to the upper edge of the last bin with at most that share above it.
///
/// Either way the range is then clamped to the observed `[min, max]`, so `p = 100` is min/max
/// (up to bin resolution). NaN/inf are refused; `qparams` before data is
/// [`QuantError::Empty`]. `merge` is exact (see [`StreamingHistogram`]).
///
/// # Examples
/// ```
/// use ndarray::Array1;
/// use qnumeric::observers::PercentileObserver;
/// use qnumeric::{QDType, QScheme, QSpec};
///
/// let mut x: Vec<f32> = (0..10_000).map(|i| (i as f32 / 10_000.0) - 0.5).collect();
/// x[0] = -40.0; // one outlier
/// let spec = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8);
/// let mut obs = PercentileObserver::new(spec, 99.9)?;
/// obs.observe(&Array1::from(x))?;
/// let (lo, hi) = obs.range()?;
/// assert!(hi < 1.0 && lo > -1.0);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "CalibratorState", try_from = "CalibratorState")
)]
pub struct PercentileObserver {
    spec: QSpec,
    percentile: f64,
    hist: StreamingHistogram,
}

impl PercentileObserver {
    /// A percentile calibrator (`percentile` in `(0, 100]`, e.g. 99.99).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme;
    /// [`QuantError::InvalidParameter`] for a percentile outside `(0, 100]`.
    pub fn new(spec: QSpec, percentile: f64) -> Result<Self> {
        const OP: &str = "PercentileObserver::new";
        check_spec(OP, &spec, false, false)?;
        if !(percentile > 0.0 && percentile <= 100.0) {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "percentile",
                value: percentile,
                reason: "must lie in (0, 100]",
            });
        }
        Ok(PercentileObserver {
            spec,
            percentile,
            hist: StreamingHistogram::new(StreamingHistogram::DEFAULT_BINS)?,
        })
    }

    /// The percentile.
    #[must_use]
    pub fn percentile(&self) -> f64 {
        self.percentile
    }

    /// The histogram observed.
    #[must_use]
    pub fn histogram(&self) -> &StreamingHistogram {
        &self.hist
    }

    fn same_config(&self, o: &Self) -> bool {
        self.spec == o.spec && self.percentile == o.percentile
    }

    /// The clipping range.
    ///
    /// # Errors
    /// [`QuantError::Empty`] before any data.
    pub fn range(&self) -> Result<(f32, f32)> {
        let (min, max) = self.hist.min_max().ok_or(QuantError::Empty {
            op: "PercentileObserver::range",
        })?;
        let w = self.hist.bin_width().unwrap_or(0.0);
        let n = self.hist.count() as f64;
        let tail = 1.0 - self.percentile / 100.0;
        if self.spec.scheme().is_symmetric() {
            let allowed = n * tail;
            let abs = self.hist.abs_counts();
            let mut above = n;
            let mut k = abs.len() - 1;
            for (i, &c) in abs.iter().enumerate() {
                above -= c as f64;
                if above <= allowed {
                    k = i;
                    break;
                }
            }
            return Ok(clip_range((k + 1) as f64 * w, min, max));
        }
        let allowed = n * tail / 2.0;
        let signed = self.hist.signed_bins();
        // Lower edge of the first bin with at most `allowed` values below it.
        let mut below = 0.0;
        let mut lo = f64::NEG_INFINITY;
        for &(c, k) in &signed {
            if below + k as f64 > allowed {
                lo = c - w / 2.0;
                break;
            }
            below += k as f64;
        }
        let mut above = 0.0;
        let mut hi = f64::INFINITY;
        for &(c, k) in signed.iter().rev() {
            if above + k as f64 > allowed {
                hi = c + w / 2.0;
                break;
            }
            above += k as f64;
        }
        Ok((min.max(lo as f32), max.min(hi as f32)))
    }
}

impl_hist_observer!(PercentileObserver, "PercentileObserver");

/// The serialized state of a [`PercentileObserver`].
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct CalibratorState {
    spec: QSpec,
    percentile: f64,
    histogram: StreamingHistogram,
}

#[cfg(feature = "serde")]
impl From<PercentileObserver> for CalibratorState {
    fn from(o: PercentileObserver) -> Self {
        CalibratorState {
            spec: o.spec,
            percentile: o.percentile,
            histogram: o.hist,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<CalibratorState> for PercentileObserver {
    type Error = QuantError;

    /// The constructor's checks and the constructor's histogram size.
    fn try_from(s: CalibratorState) -> Result<Self> {
        let mut o = PercentileObserver::new(s.spec, s.percentile)?;
        super::calib::check_calibrator_histogram("PercentileObserver::deserialize", &s.histogram)?;
        o.hist = s.histogram;
        Ok(o)
    }
}
