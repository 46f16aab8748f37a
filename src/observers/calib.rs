//! Shared plumbing of the histogram calibrators (percentile, entropy, MSE).

use crate::error::Result;
use crate::qparams::{QScheme, QSpec};

/// Expected squared error per value when the histogram's bin centres are fake-quantized with
/// the parameters `spec` picks for `[lo, hi]`.
pub(crate) fn histogram_mse(spec: &QSpec, bins: &[(f64, u64)], lo: f32, hi: f32) -> Result<f64> {
    let p = spec.qparams_from_min_max(lo, hi)?;
    let scale = p.scale as f64;
    let inv = 1.0 / scale;
    let zp = p.zero_point as f64;
    let qmin = spec.range().quant_min() as f64;
    let qmax = spec.range().quant_max() as f64;
    let float_zp = matches!(spec.scheme(), QScheme::PerChannelAffineFloatQParams);
    let mut err = 0.0f64;
    let mut n = 0u64;
    for &(c, k) in bins {
        let q = if float_zp {
            (c * inv + zp).round_ties_even().clamp(qmin, qmax)
        } else {
            ((c * inv).round_ties_even() + zp).clamp(qmin, qmax)
        };
        let d = (q - zp) * scale - c;
        err += d * d * k as f64;
        n += k;
    }
    Ok(if n == 0 { 0.0 } else { err / n as f64 })
}

/// Clamps a symmetric threshold `t >= 0` to the observed range: `[max(min, −t), min(max, t)]`.
///
/// For one-sided data beyond the threshold (all values above `t`, or all below `−t`) that
/// interval is empty; the candidate is then the threshold itself, `[t, t]` (or `[−t, −t]`):
/// the parameters of `[0, t]` (`[−t, 0]`), which clip every value to `t`.
pub(crate) fn clip_range(t: f64, min: f32, max: f32) -> (f32, f32) {
    let t = t as f32;
    let (lo, hi) = (min.max(-t), max.min(t));
    if lo <= hi {
        (lo, hi)
    } else if min > 0.0 {
        (hi, hi)
    } else {
        (lo, lo)
    }
}

/// Implements [`Observer`](super::Observer) for a calibrator holding `spec: QSpec` and
/// `hist: StreamingHistogram`, with a `range()` method and `same_config()`. `merge` leaves the
/// calibrator unchanged on error.
macro_rules! impl_hist_observer {
    ($ty:ident, $name:literal) => {
        impl $crate::observers::Observer for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn spec(&self) -> &$crate::qparams::QSpec {
                &self.spec
            }

            fn observe_view(
                &mut self,
                x: $crate::observers::FloatView<'_>,
            ) -> $crate::error::Result<()> {
                self.hist.observe(x)
            }

            fn qparams(&self) -> $crate::error::Result<$crate::qparams::AnyQParams> {
                let (lo, hi) = self.range()?;
                $crate::observers::minmax::per_tensor_qparams(&self.spec, lo, hi)
            }

            fn reset(&mut self) {
                self.hist.reset();
            }

            fn merge(
                &mut self,
                other: &dyn $crate::observers::Observer,
            ) -> $crate::error::Result<()> {
                const OP: &str = concat!($name, "::merge");
                let o = other.as_any().downcast_ref::<Self>().ok_or(
                    $crate::error::QuantError::Incompatible {
                        op: OP,
                        reason: concat!("not a ", $name),
                    },
                )?;
                if !self.same_config(o) {
                    return Err($crate::error::QuantError::Incompatible {
                        op: OP,
                        reason: "different configurations",
                    });
                }
                self.hist.merge(&o.hist)
            }
        }
    };
}
pub(crate) use impl_hist_observer;

/// Checks a deserialized calibrator's histogram: the constructors' bin count.
#[cfg(feature = "serde")]
pub(crate) fn check_calibrator_histogram(
    op: &'static str,
    hist: &super::StreamingHistogram,
) -> Result<()> {
    if hist.bins() == super::StreamingHistogram::DEFAULT_BINS {
        Ok(())
    } else {
        Err(crate::error::QuantError::InvalidParameter {
            op,
            what: "bins",
            value: hist.bins() as f64,
            reason: "a calibrator's histogram has 2048 bins",
        })
    }
}
