//! fbgemm's choice of parameters for a dynamically quantized activation.

use super::{QParams, check_min_max};
use crate::dtype::QDType;
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
    check_min_max("choose_dynamic_qparams", min, max)?;
    const SMALL: f64 = 6.1e-5;
    let (qmin, qmax) = (0.0f64, if reduce_range { 127.0 } else { 255.0 });
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
    QParams::new(scale as f32, zp as i64, QDType::QUInt8)
}
