//! Quantize: float → integer, per tensor and per channel.

use ndarray::{Array, ArrayRef, Dimension};

use crate::element::{QFloat, QInt, saturate};
use crate::error::Result;
use crate::qparams::{PerChannelQParams, QParams, ZeroPoints};

use super::checks::{NanFlag, same_shape, storage_holds};
use super::layout::{
    ChannelArrays, drive, drive_per_channel, drive_per_channel_arrays, rows_from_float,
    run_from_float,
};
use super::ops::{
    FloatZpOp, QuantizeOp, quantize_narrow, quantize_narrow_zp, quantize_narrow_zp_level,
};

/// Quantizes `x` per tensor into a new array.
///
/// ```text
/// q = clamp(rne(x * f32(1 / scale)) + zero_point, dtype_min, dtype_max)
/// ```
/// All arithmetic in `f32` (f16/bf16/f64 inputs are converted first); rounding is
/// round-half-to-even; the zero point is added after rounding; values saturate to the dtype's
/// storage range (also where `|x / scale| >= 2^31`, and for ±inf). Bit-exact with PyTorch's
/// `quantize_per_tensor` for finite inputs.
///
/// # Errors
/// [`QuantError::NanInput`](crate::QuantError::NanInput) if `x` holds a NaN;
/// [`QuantError::StorageTooNarrow`](crate::QuantError::StorageTooNarrow) if `Q` cannot hold the
/// dtype's range.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{quantize, QDType, QParams};
/// let qp = QParams::new(1.0, 0, QDType::QInt8)?;
/// let q: ndarray::Array1<i8> = quantize(&array![0.5f32, 1.5, 2.5, -0.5, 300.0], &qp)?;
/// assert_eq!(q, array![0, 2, 2, 0, 127]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn quantize<F: QFloat, Q: QInt, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &QParams,
) -> Result<Array<Q, D>> {
    let mut out = Array::from_elem(x.raw_dim(), Q::default());
    quantize_into(x, qp, &mut out)?;
    Ok(out)
}

/// Quantizes `x` per tensor into `out` without allocating. See [`quantize`].
///
/// # Errors
/// As [`quantize`], plus [`QuantError::ShapeMismatch`](crate::QuantError::ShapeMismatch) when
/// `out` has another shape. Argument errors are reported before anything is written. A NaN
/// is found during the pass itself (a read-only scan first would cost a third of the
/// kernel's time on data larger than the cache), so after
/// [`QuantError::NanInput`](crate::QuantError::NanInput) `out` may be partly written; call
/// [`find_nan`](crate::find_nan) first if it must stay untouched.
pub fn quantize_into<F: QFloat, Q: QInt, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &QParams,
    out: &mut ArrayRef<Q, D>,
) -> Result<()> {
    const OP: &str = "quantize_into";
    same_shape(OP, x, out)?;
    storage_holds::<Q>(OP, qp.dtype())?;
    let op = QuantizeOp::per_tensor(qp);
    let nan = NanFlag::default();
    let d = qp.dtype();
    if op.narrow && (d.min(), d.max()) == (Q::MIN, Q::MAX) {
        // The storage type's range is the dtype's: clamp by saturating narrowing (one pack
        // instruction per vector instead of a clamp and a shuffle).
        let (inv, zp) = (op.inv, op.zp);
        quantize_with(x, out, &nan, |v| {
            saturate::<Q>(quantize_narrow_zp_level(v, inv, zp))
        });
    } else if op.narrow {
        quantize_with(x, out, &nan, |v| Q::from_i32_wrapping(op.apply_narrow(v)));
    } else {
        quantize_with(x, out, &nan, |v| Q::from_i32_wrapping(op.apply_wide(v)));
    }
    nan.check(OP, x)
}

/// `out = f(x)` element by element, recording NaN inputs in `nan`.
#[inline(always)]
fn quantize_with<F: QFloat, Q: QInt, D: Dimension>(
    x: &ArrayRef<F, D>,
    out: &mut ArrayRef<Q, D>,
    nan: &NanFlag,
    f: impl Fn(f32) -> Q + Copy + Sync + Send,
) {
    drive(
        x,
        out,
        |xs, os| nan.record(run_from_float(xs, os, f)),
        |v| f(nan.pass(v.to_compute())),
    );
}

/// Quantizes `x` with one set of parameters per channel along `qp.axis()`.
///
/// Integer zero points: as [`quantize`] per channel (bit-exact with PyTorch's
/// `quantize_per_channel`). Float zero points (`per_channel_affine_float_qparams`): the zero
/// point is added before rounding, `q = clamp(rne(x * (1/scale) + zp), qmin, qmax)`.
///
/// # Errors
/// [`QuantError::InvalidAxis`](crate::QuantError::InvalidAxis) for an axis outside the array;
/// [`QuantError::LengthMismatch`](crate::QuantError::LengthMismatch) when the number of channels
/// differs from the axis length; NaN and storage errors as [`quantize`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{quantize_per_channel, PerChannelQParams, QDType};
/// let qp = PerChannelQParams::new(vec![1.0, 0.5], vec![0, 10], 0, QDType::QUInt8)?;
/// let q: ndarray::Array2<u8> = quantize_per_channel(&array![[1.0f32, 2.0], [1.0, 2.0]], &qp)?;
/// assert_eq!(q, array![[1, 2], [12, 14]]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn quantize_per_channel<F: QFloat, Q: QInt, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &PerChannelQParams,
) -> Result<Array<Q, D>> {
    let mut out = Array::from_elem(x.raw_dim(), Q::default());
    quantize_per_channel_into(x, qp, &mut out)?;
    Ok(out)
}

/// Per-channel quantization into a caller's buffer. See [`quantize_per_channel`].
///
/// # Errors
/// As [`quantize_per_channel`], plus a shape mismatch of `out`. As [`quantize_into`], argument
/// errors are reported before anything is written, and `out` may be partly written after a
/// NaN.
pub fn quantize_per_channel_into<F: QFloat, Q: QInt, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &PerChannelQParams,
    out: &mut ArrayRef<Q, D>,
) -> Result<()> {
    const OP: &str = "quantize_per_channel_into";
    same_shape(OP, x, out)?;
    let axis = qp.resolve_axis(OP, x.shape())?;
    storage_holds::<Q>(OP, qp.dtype())?;
    let (d, c, scales) = (qp.dtype(), qp.channels(), qp.scales());
    let nan = NanFlag::default();
    match qp.zero_points() {
        ZeroPoints::Int(zps) if d.bits() <= 16 => {
            // Narrow: bounds relative to each zero point stay far inside ±2^22.
            let arrays = ChannelArrays::new(qp, zps);
            if (d.min(), d.max()) == (Q::MIN, Q::MAX) {
                // The storage type's range is the dtype's: clamp by saturating narrowing.
                let f = |_s: f32, inv: f32, zp: i32, v: f32| {
                    saturate::<Q>(quantize_narrow_zp_level(v, inv, zp))
                };
                quantize_arrays(x, out, axis, arrays, &nan, &f, &f);
            } else {
                // Runs of one channel: the bounds relative to its zero point are loop constants.
                let (dmin, dmax) = (d.min() as f32, d.max() as f32);
                let f = |_s: f32, inv: f32, zp: i32, v: f32| {
                    let zf = zp as f32;
                    Q::from_i32_wrapping(quantize_narrow(v, inv, dmin - zf, dmax - zf, zp))
                };
                // Rows across channels: the zero point changes every element, so clamp on
                // integers.
                let (imin, imax) = (d.min() as i32, d.max() as i32);
                let f_rows = |_s: f32, inv: f32, zp: i32, v: f32| {
                    Q::from_i32_wrapping(quantize_narrow_zp(v, inv, zp, imin, imax))
                };
                quantize_arrays(x, out, axis, arrays, &nan, &f_rows, &f);
            }
        }
        ZeroPoints::Int(zps) => {
            let param = |ch: usize| QuantizeOp::new(scales[ch], zps[ch], d.min(), d.max());
            let f = |o: QuantizeOp, v: f32| Q::from_i32_wrapping(o.apply_wide(v));
            quantize_runs(x, out, axis, c, &nan, param, f);
        }
        ZeroPoints::Float(zps) => {
            let r = qp.range();
            let param =
                |ch: usize| FloatZpOp::new(scales[ch], zps[ch], r.quant_min(), r.quant_max());
            let f = |o: FloatZpOp, v: f32| Q::from_i32_wrapping(o.quantize(v));
            quantize_runs(x, out, axis, c, &nan, param, f);
        }
    }
    nan.check(OP, x)
}

/// Per-channel quantization against [`ChannelArrays`]: `rows` for rows across channels (the
/// last axis), `runs` for runs of one channel; both `(scale, inv, zp, x) -> q`.
#[inline(always)]
fn quantize_arrays<F: QFloat, Q: QInt, D: Dimension>(
    x: &ArrayRef<F, D>,
    out: &mut ArrayRef<Q, D>,
    axis: usize,
    arrays: ChannelArrays<'_>,
    nan: &NanFlag,
    rows: &(impl Fn(f32, f32, i32, f32) -> Q + Sync),
    runs: &(impl Fn(f32, f32, i32, f32) -> Q + Sync),
) {
    drive_per_channel_arrays(
        x,
        out,
        axis,
        arrays,
        |xs, os, p| nan.record(rows_from_float(xs, os, p, rows)),
        |(s, i, z), xs, os| nan.record(run_from_float(xs, os, |v| runs(s, i, z, v))),
        |(s, i, z), v| runs(s, i, z, nan.pass(v.to_compute())),
    );
}

/// Per-channel quantization with one parameter value `P` per channel (built by `param`),
/// recording NaN inputs in `nan`.
#[inline(always)]
fn quantize_runs<F: QFloat, Q: QInt, D: Dimension, P: Copy + Sync>(
    x: &ArrayRef<F, D>,
    out: &mut ArrayRef<Q, D>,
    axis: usize,
    channels: usize,
    nan: &NanFlag,
    param: impl Fn(usize) -> P + Sync + Send,
    f: impl Fn(P, f32) -> Q + Copy + Sync + Send,
) {
    drive_per_channel(
        x,
        out,
        axis,
        channels,
        param,
        |o, xs, os| nan.record(run_from_float(xs, os, |v| f(o, v))),
        |o, v| f(o, nan.pass(v.to_compute())),
    );
}
