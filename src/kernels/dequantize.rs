//! Dequantize: integer → float, per tensor and per channel.

use ndarray::{Array, ArrayRef, Dimension};

use crate::element::{QFloat, QInt};
use crate::error::Result;
use crate::qparams::{PerChannelQParams, QParams, ZeroPoints};

use super::checks::{ints_in_range, same_shape};
use super::layout::{
    ChannelArrays, drive, drive_per_channel, drive_per_channel_arrays, rows_to_float, run_to_float,
};
use super::ops::FloatZpOp;

/// Dequantizes per tensor into a new array.
///
/// ```text
/// x = f32( f32(q - zero_point) * scale )
/// ```
/// (then converted to `F`, round to nearest even). The difference `q - zero_point` is exact
/// (taken in `i64` for qint32) and rounded to `f32` once. Bit-exact with PyTorch's per-tensor
/// `dequantize`, except for qint32 values within `zero_point` of the ends of the i32 range,
/// where PyTorch 2.15 wraps the difference in 32 bits (the `note` cases of the golden files).
///
/// # Errors
/// [`QuantError::InvalidParameter`](crate::QuantError::InvalidParameter) when a stored value
/// lies outside the dtype's range (possible when the storage type is wider than the dtype,
/// e.g. 4-bit values in `u8`).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{dequantize, QDType, QParams};
/// let qp = QParams::new(0.5, 10, QDType::QUInt8)?;
/// let x: ndarray::Array1<f32> = dequantize(&array![10u8, 11, 0], &qp)?;
/// assert_eq!(x, array![0.0, 0.5, -5.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn dequantize<F: QFloat, Q: QInt, D: Dimension>(
    q: &ArrayRef<Q, D>,
    qp: &QParams,
) -> Result<Array<F, D>> {
    let mut out = Array::from_elem(q.raw_dim(), F::zero());
    dequantize_into(q, qp, &mut out)?;
    Ok(out)
}

/// Dequantizes per tensor into a caller's buffer. See [`dequantize`].
///
/// # Errors
/// As [`dequantize`], plus a shape mismatch of `out`. On error nothing is written.
pub fn dequantize_into<F: QFloat, Q: QInt, D: Dimension>(
    q: &ArrayRef<Q, D>,
    qp: &QParams,
    out: &mut ArrayRef<F, D>,
) -> Result<()> {
    const OP: &str = "dequantize_into";
    same_shape(OP, q, out)?;
    let d = qp.dtype();
    ints_in_range(OP, q, d.min(), d.max())?;
    let (s, z) = (qp.scale(), qp.zero_point());
    if d.bits() <= 16 {
        // Both ends within ±2^16: `q - zp` cannot overflow i32 and is exact in f32.
        let f = |v: Q| (v.to_i32() - z) as f32 * s;
        dequantize_with(q, out, f);
    } else {
        // qint32: `q - zp` spans ±2^32, so it is taken in i64 and rounded to f32 once.
        let f = |v: Q| (v.to_i32() as i64 - z as i64) as f32 * s;
        dequantize_with(q, out, f);
    }
    Ok(())
}

/// `out = F::from(f(q))` element by element.
#[inline(always)]
fn dequantize_with<F: QFloat, Q: QInt, D: Dimension>(
    q: &ArrayRef<Q, D>,
    out: &mut ArrayRef<F, D>,
    f: impl Fn(Q) -> f32 + Copy + Sync + Send,
) {
    drive(
        q,
        out,
        |qs, os| run_to_float(qs, os, f),
        |v| F::from_compute(f(v)),
    );
}

/// Dequantizes with per-channel parameters.
///
/// ```text
/// integer zero points: x = f32( f64(q - zp[c]) * f64(scale[c]) )   (PyTorch multiplies in f64)
/// float zero points:   x = f32( f32(q - zp[c]) * scale[c] )
/// ```
///
/// # Errors
/// Axis and channel-count errors as [`quantize_per_channel`](crate::quantize_per_channel);
/// out-of-range stored values as [`dequantize`].
pub fn dequantize_per_channel<F: QFloat, Q: QInt, D: Dimension>(
    q: &ArrayRef<Q, D>,
    qp: &PerChannelQParams,
) -> Result<Array<F, D>> {
    let mut out = Array::from_elem(q.raw_dim(), F::zero());
    dequantize_per_channel_into(q, qp, &mut out)?;
    Ok(out)
}

/// Per-channel dequantization into a caller's buffer. See [`dequantize_per_channel`].
///
/// # Errors
/// As [`dequantize_per_channel`], plus a shape mismatch of `out`. On error nothing is written.
pub fn dequantize_per_channel_into<F: QFloat, Q: QInt, D: Dimension>(
    q: &ArrayRef<Q, D>,
    qp: &PerChannelQParams,
    out: &mut ArrayRef<F, D>,
) -> Result<()> {
    const OP: &str = "dequantize_per_channel_into";
    same_shape(OP, q, out)?;
    let axis = qp.resolve_axis(OP, q.shape())?;
    let d = qp.dtype();
    ints_in_range(OP, q, d.min(), d.max())?;
    let (c, scales) = (qp.channels(), qp.scales());
    match qp.zero_points() {
        ZeroPoints::Int(zps) => {
            let param = |ch: usize| (scales[ch] as f64, zps[ch]);
            if d.bits() <= 16 {
                // `q - zp` fits in i32 and is exact in f32 (|q - zp| < 2^17) for dtypes of at
                // most 16 bits, so the f32 product is the correctly rounded f64 one.
                let f = |s: f32, _inv: f32, zp: i32, v: Q| (v.to_i32() - zp) as f32 * s;
                let arrays = ChannelArrays::new(qp, zps);
                drive_per_channel_arrays(
                    q,
                    out,
                    axis,
                    arrays,
                    |qs, os, p| rows_to_float(qs, os, p, &f),
                    |(s, i, z), qs, os| run_to_float(qs, os, |v| f(s, i, z, v)),
                    |(s, i, z), v| F::from_compute(f(s, i, z, v)),
                );
            } else {
                let f =
                    |(s, z): (f64, i32), v: Q| ((v.to_i32() as i64 - z as i64) as f64 * s) as f32;
                drive_per_channel(
                    q,
                    out,
                    axis,
                    c,
                    param,
                    |p, qs, os| run_to_float(qs, os, |v| f(p, v)),
                    |p, v| F::from_compute(f(p, v)),
                );
            }
        }
        ZeroPoints::Float(zps) => {
            let r = qp.range();
            let param =
                |ch: usize| FloatZpOp::new(scales[ch], zps[ch], r.quant_min(), r.quant_max());
            let f = |o: FloatZpOp, v: Q| o.dequantize(v.to_i32());
            drive_per_channel(
                q,
                out,
                axis,
                c,
                param,
                |o, qs, os| run_to_float(qs, os, |v| f(o, v)),
                |o, v| F::from_compute(f(o, v)),
            );
        }
    }
    Ok(())
}
