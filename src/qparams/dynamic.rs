//! fbgemm's choice of parameters for a dynamically quantized activation.

use super::{QParams, check_min_max};
use crate::dtype::{QDType, QRange};
use crate::error::Result;

/// Chooses quint8 parameters for a dynamic activation as fbgemm's `ChooseQuantizationParams`
/// does (no sparsity preservation): range extended to 0, `scale = (max − min) / (qmax − qmin)`
/// in f64 (0.1 when it rounds to 0 in f32), scales below `6.1e-5` raised, zero point from the
/// end with the smaller error, nudged into the range with round-half-even.
///
/// `reduce_range` uses `0..=127` (PyTorch's x86 default for dynamic linear).
///
/// # Errors
/// [`QuantError::NonFinite`](crate::QuantError::NonFinite) for a non-finite bound;
/// [`QuantError::InvalidParameter`](crate::QuantError::InvalidParameter) when
/// `min > max`.
pub fn choose_dynamic_qparams(min: f32, max: f32, reduce_range: bool) -> Result<QParams> {
    let (scale, zp) = dynamic_scale_zero_point(min, max, if reduce_range { 127 } else { 255 })?;
    QParams::new(scale, zp, QDType::QUInt8)
}

/// [`choose_dynamic_qparams`] generalized to the levels `0..=qmax` (`1 <= qmax <= 255`): the
/// same fbgemm rules, parameters over the range `0..=qmax` (so fake quantization clamps
/// there, as fbgemm's `Quantize` clamps to its `precision` bits).
pub(crate) fn choose_dynamic_qparams_levels(min: f32, max: f32, qmax: i64) -> Result<QParams> {
    let (scale, zp) = dynamic_scale_zero_point(min, max, qmax)?;
    QParams::with_range(scale, zp, QRange::new(QDType::QUInt8, 0, qmax)?)
}

/// fbgemm's `ChooseQuantizationParams` on `0..=qmax`: `(scale, zero_point)`.
fn dynamic_scale_zero_point(min: f32, max: f32, qmax: i64) -> Result<(f32, i64)> {
    check_min_max("choose_dynamic_qparams", min, max)?;
    const SMALL: f64 = 6.1e-5;
    let (qmin, qmax) = (0.0f64, qmax as f64);
    let mut min = min.min(0.0);
    let mut max = max.max(0.0);
    let mut scale = (max as f64 - min as f64) / (qmax - qmin);
    if scale as f32 == 0.0 || (1.0f32 / scale as f32).is_infinite() {
        scale = 0.1;
    }
    if scale < SMALL {
        let org = scale;
        scale = SMALL;
        if min == 0.0 {
            max = (SMALL * (qmax - qmin)) as f32;
        } else if max == 0.0 {
            min = (-SMALL * (qmax - qmin)) as f32;
        } else {
            let amp = (SMALL / org) as f32;
            min *= amp;
            max *= amp;
        }
    }
    let zp_from_min = qmin - min as f64 / scale;
    let zp_from_max = qmax - max as f64 / scale;
    let err_min = qmin.abs() - (min as f64 / scale).abs();
    let err_max = qmax.abs() - (max as f64 / scale).abs();
    let initial = if err_min < err_max {
        zp_from_min
    } else {
        zp_from_max
    };
    let zp = if initial < qmin {
        qmin
    } else if initial > qmax {
        qmax
    } else {
        initial.round_ties_even()
    };
    Ok((scale as f32, zp as i64))
}
