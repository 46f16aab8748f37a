//! Obviously-correct scalar reference kernels: the oracle the fast paths are tested against,
//! public so that custom backends can test their own kernels against it.
//!
//! Each function handles one element and follows PyTorch's arithmetic literally, with
//! `f32::round_ties_even` and no vectorisation tricks. The arguments are checked as the
//! kernels' parameter types check them, so oracle and kernels accept and refuse the same
//! inputs:
//! - the scale must be finite, `> 0`, with a finite `f32` reciprocal
//!   ([`QuantError::InvalidScale`]);
//! - `qmin <= qmax`, both within the `i32` range ([`QuantError::InvalidQuantRange`]);
//! - the zero point lies in `qmin..=qmax` ([`QuantError::ZeroPointOutOfRange`]);
//! - a NaN input is [`QuantError::NanInput`] (index 0).
//!
//! Integer differences `q - zero_point` are taken in `i128`, so no input overflows.

use crate::dtype::QRange;
use crate::error::{QuantError, Result};
use crate::qparams::check_scale;

/// Checks a range and a zero point in it.
fn check_range(op: &'static str, zero_point: i64, qmin: i64, qmax: i64) -> Result<()> {
    QRange::for_fake_quant(qmin, qmax).map_err(|e| e.with_op(op))?;
    if zero_point < qmin || zero_point > qmax {
        return Err(QuantError::ZeroPointOutOfRange {
            op,
            zero_point,
            min: qmin,
            max: qmax,
        });
    }
    Ok(())
}

fn check_nan(op: &'static str, x: f32) -> Result<()> {
    if x.is_nan() {
        return Err(QuantError::NanInput { op, index: 0 });
    }
    Ok(())
}

/// The rounded level `rne(x * f32(1/scale)) + zero_point`, as an `f64`: exact, because the
/// rounded product is an integer-valued `f32` (or ±inf) and the sum is exact below `2^52`,
/// beyond which it lies outside every 32-bit range anyway.
fn level(x: f32, scale: f32, zero_point: i64) -> f64 {
    let inv = 1.0f32 / scale;
    (x * inv).round_ties_even() as f64 + zero_point as f64
}

/// Quantizes one value: `clamp(rne(x * f32(1/scale)) + zp, qmin, qmax)`.
///
/// # Errors
/// As listed in the [module docs](self).
///
/// # Examples
/// ```
/// use qnumeric::kernels::reference;
/// assert_eq!(reference::quantize(0.5, 1.0, 1, 0, 255)?, 1); // zero point added after rounding
/// assert_eq!(reference::quantize(f32::INFINITY, 1.0, 1, 0, 255)?, 255);
/// assert!(reference::quantize(0.5, 1.0, 0, 5, 3).is_err()); // qmin > qmax
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn quantize(x: f32, scale: f32, zero_point: i64, qmin: i64, qmax: i64) -> Result<i64> {
    const OP: &str = "reference::quantize";
    check_scale(OP, scale)?;
    check_range(OP, zero_point, qmin, qmax)?;
    check_nan(OP, x)?;
    Ok(level(x, scale, zero_point).clamp(qmin as f64, qmax as f64) as i64)
}

/// Dequantizes one value per tensor: `f32(q - zp) * scale`, with `q - zp` exact and rounded
/// to `f32` once.
///
/// # Errors
/// [`QuantError::InvalidScale`] for a scale the kernels refuse.
///
/// # Examples
/// ```
/// use qnumeric::kernels::reference;
/// assert_eq!(reference::dequantize(12, 0.5, 10)?, 1.0);
/// assert_eq!(reference::dequantize(i64::MIN, 1.0, i64::MAX)?, -(2.0f32.powi(64)));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn dequantize(q: i64, scale: f32, zero_point: i64) -> Result<f32> {
    check_scale("reference::dequantize", scale)?;
    Ok((q as i128 - zero_point as i128) as f32 * scale)
}

/// Dequantizes one value per channel: `f32(f64(q - zp) * f64(scale))` (PyTorch multiplies in
/// `f64` here), with `q - zp` exact and rounded to `f64` once.
///
/// # Errors
/// [`QuantError::InvalidScale`] for a scale the kernels refuse.
pub fn dequantize_per_channel(q: i64, scale: f32, zero_point: i64) -> Result<f32> {
    check_scale("reference::dequantize_per_channel", scale)?;
    Ok(((q as i128 - zero_point as i128) as f64 * scale as f64) as f32)
}

/// Fake-quantizes one value: `((clamp(rne(x * f32(1/scale)) + zp, qmin, qmax) - zp) as f32) *
/// scale`; returns `(y, mask)` with `mask` the straight-through mask (whether the level was
/// inside the range).
///
/// # Errors
/// As listed in the [module docs](self).
///
/// # Examples
/// ```
/// use qnumeric::kernels::reference;
/// assert_eq!(reference::fake_quantize(0.26, 0.1, 0, -8, 7)?, (0.3, true));
/// assert_eq!(reference::fake_quantize(9.0, 0.5, 0, -8, 7)?, (3.5, false));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn fake_quantize(
    x: f32,
    scale: f32,
    zero_point: i64,
    qmin: i64,
    qmax: i64,
) -> Result<(f32, bool)> {
    const OP: &str = "reference::fake_quantize";
    check_scale(OP, scale)?;
    check_range(OP, zero_point, qmin, qmax)?;
    check_nan(OP, x)?;
    let level = level(x, scale, zero_point);
    let mask = qmin as f64 <= level && level <= qmax as f64;
    let qc = level.clamp(qmin as f64, qmax as f64);
    Ok((((qc - zero_point as f64) as f32) * scale, mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_integers_do_not_overflow() {
        assert_eq!(
            dequantize(i64::MIN, 1.0, i64::MAX).ok(),
            Some(-(2.0f32.powi(64)))
        );
        assert_eq!(
            dequantize(i64::MAX, 1.0, i64::MIN).ok(),
            Some(2.0f32.powi(64))
        );
        assert_eq!(
            dequantize_per_channel(i64::MIN, 1.0, i64::MAX).ok(),
            Some(-(2.0f32.powi(64)))
        );
        assert_eq!(
            quantize(
                1e30,
                1e-30,
                i32::MAX as i64,
                i32::MIN as i64,
                i32::MAX as i64
            )
            .ok(),
            Some(i32::MAX as i64)
        );
        assert_eq!(
            quantize(
                -1e30,
                1e-30,
                i32::MIN as i64,
                i32::MIN as i64,
                i32::MAX as i64
            )
            .ok(),
            Some(i32::MIN as i64)
        );
    }

    #[test]
    fn ranges_beyond_32_bits_are_refused() {
        assert!(matches!(
            quantize(0.0, 1.0, 0, i64::MIN, i64::MAX),
            Err(QuantError::InvalidQuantRange { .. })
        ));
        assert!(matches!(
            fake_quantize(0.0, 1.0, 0, 0, 1 << 40),
            Err(QuantError::InvalidQuantRange { .. })
        ));
    }
}
