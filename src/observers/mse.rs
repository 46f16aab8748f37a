//! [`MseObserver`]: the range minimising the expected quantization MSE.

use super::calib::{clip_range, histogram_mse, impl_hist_observer};
use super::reduce::check_spec;
use super::streaming::StreamingHistogram;
use crate::error::{QuantError, Result};
use crate::qparams::QSpec;

/// MSE-optimal calibration (pytorch-quantization / ModelOpt style) on a 2048-bin
/// [`StreamingHistogram`].
///
/// Candidates are the thresholds `t = k·w` at every bin edge from `k = 16` up (every value of
/// `|x|` below `2^e`); each gives the range `[−t, t]` clamped to the observed `[min, max]`,
/// its parameters come from the observer's [`QSpec`] (so affine schemes, custom ranges and
/// `eps` are honoured), and its error is the expected squared error of fake-quantizing every
/// bin centre, weighted by the counts. The candidate with the smallest error wins (ties: the
/// wider range). For one-sided data the candidates below the data's smallest magnitude clip
/// everything to the threshold (see `range`). Candidates whose scale overflows `f32` are
/// skipped ([`QuantError::RangeOverflow`] when none is left). NaN/inf refused; `qparams`
/// before data is [`QuantError::Empty`].
///
/// # Examples
/// ```
/// use ndarray::Array1;
/// use qnumeric::observers::MseObserver;
/// use qnumeric::{QDType, QScheme, QSpec};
///
/// let mut x: Vec<f32> = (0..20_000).map(|i| (i * 7919 % 20_000) as f32 / 20_000.0 - 0.5).collect();
/// x[0] = 50.0;
/// let mut obs = MseObserver::new(QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8))?;
/// obs.observe(&Array1::from(x))?;
/// let (_, hi) = obs.range()?;
/// assert!(hi < 50.0);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "CalibratorState", try_from = "CalibratorState")
)]
pub struct MseObserver {
    spec: QSpec,
    hist: StreamingHistogram,
}

impl MseObserver {
    /// An MSE calibrator with 2048 bins.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme.
    pub fn new(spec: QSpec) -> Result<Self> {
        check_spec("MseObserver::new", &spec, false, false)?;
        Ok(MseObserver {
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

    /// The clipping range.
    ///
    /// # Errors
    /// [`QuantError::Empty`] before any data; [`QuantError::RangeOverflow`] when every
    /// candidate's scale overflows `f32`.
    pub fn range(&self) -> Result<(f32, f32)> {
        let (min, max) = self.hist.min_max().ok_or(QuantError::Empty {
            op: "MseObserver::range",
        })?;
        let w = self.hist.bin_width().unwrap_or(0.0);
        let bins = self.hist.signed_bins();
        let amax = (-(min as f64)).max(max as f64);
        let b = self.hist.bins();
        let mut best: Option<(f64, (f32, f32))> = None;
        let mut overflow = None;
        let mut last = None;
        for k in (16.min(b)..=b).rev() {
            let t = k as f64 * w;
            if t > amax + w {
                continue; // beyond the data: same as the full range
            }
            let r = clip_range(t.min(amax), min, max);
            if last == Some(r) {
                continue;
            }
            last = Some(r);
            // A candidate whose scale overflows f32 cannot be chosen.
            let e = match histogram_mse(&self.spec, &bins, r.0, r.1) {
                Err(e @ QuantError::RangeOverflow { .. }) => {
                    overflow = Some(e);
                    continue;
                }
                other => other?,
            };
            if best.is_none_or(|(b, _)| e < b) {
                best = Some((e, r));
            }
        }
        match (best, overflow) {
            (Some((_, r)), _) => Ok(r),
            (None, Some(e)) => Err(e),
            (None, None) => Ok((min, max)),
        }
    }
}

impl_hist_observer!(MseObserver, "MseObserver");

/// The serialized state of a [`MseObserver`].
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct CalibratorState {
    spec: QSpec,
    histogram: StreamingHistogram,
}

#[cfg(feature = "serde")]
impl From<MseObserver> for CalibratorState {
    fn from(o: MseObserver) -> Self {
        CalibratorState {
            spec: o.spec,
            histogram: o.hist,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<CalibratorState> for MseObserver {
    type Error = QuantError;

    /// The constructor's checks and the constructor's histogram size.
    fn try_from(s: CalibratorState) -> Result<Self> {
        let mut o = MseObserver::new(s.spec)?;
        super::calib::check_calibrator_histogram("MseObserver::deserialize", &s.histogram)?;
        o.hist = s.histogram;
        Ok(o)
    }
}
