//! Fake quantization (quantize then dequantize, staying in float) and its straight-through
//! backward.

use ndarray::{Array, ArrayRef, Dimension};

use crate::element::QFloat;
use crate::error::Result;
use crate::qparams::{PerChannelQParams, QParams, ZeroPoints};

use super::checks::{NanFlag, no_nan, same_shape};
use super::layout::{
    ChannelArrays, drive, drive_inplace, drive_per_channel, drive_per_channel_arrays, drive2,
    drive2_per_channel, rows_float, run_float, run_float_inplace, run_from_float, run_mask_select,
};
use super::ops::{
    FakeQuantOp, FloatZpOp, fake_quantize_mask_narrow, fake_quantize_narrow,
    fake_quantize_narrow_zp,
};

/// Fake-quantizes `x` per tensor into a new array.
///
/// ```text
/// y = f32( (clamp(rne(x * f32(1/scale)) + zp, quant_min, quant_max) - zp) * scale )
/// ```
/// The clamp is to the parameters' quantization range (`qp.range()`), not the dtype's storage
/// range. ±inf saturate to the range ends. Bit-exact with PyTorch's
/// `fake_quantize_per_tensor_affine` for finite inputs, and equal to
/// `dequantize(quantize(x))` when the range is the full dtype range.
///
/// # Errors
/// [`QuantError::NanInput`](crate::QuantError::NanInput) if `x` holds a NaN.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{fake_quantize, QDType, QParams, QRange};
/// let qp = QParams::with_range(0.1, 10, QRange::new(QDType::QUInt8, 0, 255)?)?;
/// let y = fake_quantize(&array![0.0f32, 0.123, 1e30, -1e30], &qp)?;
/// assert_eq!(y, array![0.0, 0.1, 24.5, -1.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn fake_quantize<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &QParams,
) -> Result<Array<F, D>> {
    let mut out = Array::from_elem(x.raw_dim(), F::zero());
    fake_quantize_into(x, qp, &mut out)?;
    Ok(out)
}

/// Fake-quantizes per tensor into a caller's buffer. See [`fake_quantize`].
///
/// # Errors
/// As [`fake_quantize`], plus a shape mismatch of `out`. Argument errors are reported before anything is
/// written; after a NaN `out` may be partly written (see
/// [`quantize_into`](crate::quantize_into)).
pub fn fake_quantize_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &QParams,
    out: &mut ArrayRef<F, D>,
) -> Result<()> {
    const OP: &str = "fake_quantize_into";
    same_shape(OP, x, out)?;
    let op = FakeQuantOp::per_tensor(qp);
    let nan = NanFlag::default();
    if op.narrow {
        forward_into(x, out, &nan, |v| op.forward_narrow(v));
    } else {
        forward_into(x, out, &nan, |v| op.forward_wide(v));
    }
    nan.check(OP, x)
}

/// Fake-quantizes per tensor in place. See [`fake_quantize`].
///
/// # Errors
/// As [`fake_quantize`]. On error `x` is unchanged.
pub fn fake_quantize_inplace<F: QFloat, D: Dimension>(
    x: &mut ArrayRef<F, D>,
    qp: &QParams,
) -> Result<()> {
    no_nan("fake_quantize_inplace", x)?;
    let op = FakeQuantOp::per_tensor(qp);
    if op.narrow {
        let f = |v: f32| op.forward_narrow(v);
        drive_inplace(
            x,
            |xs| run_float_inplace(xs, f),
            |v| F::from_compute(f(v.to_compute())),
        );
    } else {
        let f = |v: f32| op.forward_wide(v);
        drive_inplace(
            x,
            |xs| run_float_inplace(xs, f),
            |v| F::from_compute(f(v.to_compute())),
        );
    }
    Ok(())
}

/// The straight-through mask of [`fake_quantize`]: `true` where the rounded level
/// `rne(x/scale) + zp` lies inside `[quant_min, quant_max]` (the gradient passes there).
///
/// # Errors
/// [`QuantError::NanInput`](crate::QuantError::NanInput) if `x` holds a NaN.
pub fn fake_quantize_mask<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &QParams,
) -> Result<Array<bool, D>> {
    let op = FakeQuantOp::per_tensor(qp);
    let mut out = Array::from_elem(x.raw_dim(), false);
    let m = |v: f32| op.mask(v);
    let nan = NanFlag::default();
    drive(
        x,
        &mut out,
        |xs, os| nan.record(run_from_float(xs, os, m)),
        |v| m(nan.pass(v.to_compute())),
    );
    nan.check("fake_quantize_mask", x)?;
    Ok(out)
}

/// Backward of [`fake_quantize`] (straight-through estimator with clipping):
/// `dx = dy` where the level was inside the range, `0` where it was clamped.
///
/// # Errors
/// [`QuantError::ShapeMismatch`](crate::QuantError::ShapeMismatch) when `dy` differs in shape;
/// NaN in `x` as [`fake_quantize`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{fake_quantize_backward, QDType, QParams};
/// let qp = QParams::new(1.0, 0, QDType::QInt8)?;
/// let dx = fake_quantize_backward(&array![1.0f32, 500.0], &array![2.0f32, 2.0], &qp)?;
/// assert_eq!(dx, array![2.0, 0.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn fake_quantize_backward<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    qp: &QParams,
) -> Result<Array<F, D>> {
    let mut out = Array::from_elem(x.raw_dim(), F::zero());
    fake_quantize_backward_into(x, dy, qp, &mut out)?;
    Ok(out)
}

/// Backward of [`fake_quantize`] into a caller's buffer. See [`fake_quantize_backward`].
///
/// # Errors
/// As [`fake_quantize_backward`], plus a shape mismatch of `dx`. Argument errors are reported before anything is
/// written; after a NaN `dx` may be partly written (see
/// [`quantize_into`](crate::quantize_into)).
pub fn fake_quantize_backward_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    qp: &QParams,
    dx: &mut ArrayRef<F, D>,
) -> Result<()> {
    const OP: &str = "fake_quantize_backward_into";
    same_shape(OP, x, dy)?;
    same_shape(OP, x, dx)?;
    let op = FakeQuantOp::per_tensor(qp);
    let nan = NanFlag::default();
    if op.narrow {
        backward_into(x, dy, dx, &nan, |v| op.mask_narrow(v));
    } else {
        backward_into(x, dy, dx, &nan, |v| op.mask_wide(v));
    }
    nan.check(OP, x)
}

/// Fake-quantizes with per-channel parameters (PyTorch's `fake_quantize_per_channel_affine`).
///
/// Integer zero points as [`fake_quantize`] per channel; float zero points are added before
/// rounding: `y = (clamp(rne(x/s + zp), qmin, qmax) - zp) * s`.
///
/// Unlike PyTorch (which maps +inf to `quant_min` here through an undefined float→int cast),
/// +inf saturates to `quant_max`, as in the per-tensor kernel.
///
/// # Errors
/// Axis and channel-count errors as [`quantize_per_channel`](crate::quantize_per_channel);
/// NaN as [`fake_quantize`].
pub fn fake_quantize_per_channel<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &PerChannelQParams,
) -> Result<Array<F, D>> {
    let mut out = Array::from_elem(x.raw_dim(), F::zero());
    fake_quantize_per_channel_into(x, qp, &mut out)?;
    Ok(out)
}

/// Per-channel fake quantization into a caller's buffer. See [`fake_quantize_per_channel`].
///
/// # Errors
/// As [`fake_quantize_per_channel`], plus a shape mismatch of `out`. Argument errors are reported before anything is
/// written; after a NaN `out` may be partly written (see
/// [`quantize_into`](crate::quantize_into)).
pub fn fake_quantize_per_channel_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    qp: &PerChannelQParams,
    out: &mut ArrayRef<F, D>,
) -> Result<()> {
    const OP: &str = "fake_quantize_per_channel_into";
    same_shape(OP, x, out)?;
    let axis = qp.resolve_axis(OP, x.shape())?;
    let (c, scales, r) = (qp.channels(), qp.scales(), qp.range());
    let nan = NanFlag::default();
    match qp.zero_points() {
        ZeroPoints::Int(zps) => {
            let param =
                |ch: usize| FakeQuantOp::new(scales[ch], zps[ch], r.quant_min(), r.quant_max());
            if (0..c).all(|ch| param(ch).narrow) {
                let (qmin, qmax) = (r.quant_min() as f32, r.quant_max() as f32);
                let f = |s: f32, inv: f32, zp: i32, v: f32| {
                    let zf = zp as f32;
                    fake_quantize_narrow(v, s, inv, qmin - zf, qmax - zf)
                };
                // Rows across channels: the zero point changes every element, so the level is
                // clamped on integers (when the range is small enough for that to be exact; the
                // zero points lie in the range, as `PerChannelQParams` checks when built).
                let small = |v: i64| v.abs() <= 1 << 24;
                let ints = small(r.quant_min()) && small(r.quant_max());
                let (imin, imax) = (r.quant_min() as i32, r.quant_max() as i32);
                let f_rows = |s: f32, inv: f32, zp: i32, v: f32| {
                    fake_quantize_narrow_zp(v, s, inv, zp, imin, imax)
                };
                let arrays = ChannelArrays::new(qp, zps);
                drive_per_channel_arrays(
                    x,
                    out,
                    axis,
                    arrays,
                    |xs, os, p| {
                        nan.record(if ints {
                            rows_float(xs, os, p, &f_rows)
                        } else {
                            rows_float(xs, os, p, &f)
                        })
                    },
                    |(s, i, z), xs, os| nan.record(run_float(xs, os, |v| f(s, i, z, v))),
                    |(s, i, z), v| F::from_compute(f(s, i, z, nan.pass(v.to_compute()))),
                )
            } else {
                forward_per_channel_into(x, out, axis, c, &nan, param, |o, v| o.forward_wide(v))
            }
        }
        ZeroPoints::Float(zps) => {
            let param =
                |ch: usize| FloatZpOp::new(scales[ch], zps[ch], r.quant_min(), r.quant_max());
            forward_per_channel_into(x, out, axis, c, &nan, param, |o, v| o.forward(v))
        }
    }
    nan.check(OP, x)
}

/// Backward of [`fake_quantize_per_channel`]: `dx = dy * mask`.
///
/// # Errors
/// As [`fake_quantize_per_channel`], plus a shape mismatch of `dy`.
pub fn fake_quantize_per_channel_backward<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    qp: &PerChannelQParams,
) -> Result<Array<F, D>> {
    let mut out = Array::from_elem(x.raw_dim(), F::zero());
    fake_quantize_per_channel_backward_into(x, dy, qp, &mut out)?;
    Ok(out)
}

/// Backward of [`fake_quantize_per_channel`] into a caller's buffer.
///
/// # Errors
/// As [`fake_quantize_per_channel_backward`], plus a shape mismatch of `dx`. Argument errors are reported before anything is
/// written; after a NaN `dx` may be partly written (see
/// [`quantize_into`](crate::quantize_into)).
pub fn fake_quantize_per_channel_backward_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    qp: &PerChannelQParams,
    dx: &mut ArrayRef<F, D>,
) -> Result<()> {
    const OP: &str = "fake_quantize_per_channel_backward_into";
    same_shape(OP, x, dy)?;
    same_shape(OP, x, dx)?;
    let axis = qp.resolve_axis(OP, x.shape())?;
    let (c, scales, r) = (qp.channels(), qp.scales(), qp.range());
    let nan = NanFlag::default();
    match qp.zero_points() {
        ZeroPoints::Int(zps) => {
            let param =
                |ch: usize| FakeQuantOp::new(scales[ch], zps[ch], r.quant_min(), r.quant_max());
            if (0..c).all(|ch| param(ch).narrow) {
                let m = |o: FakeQuantOp, v: f32| fake_quantize_mask_narrow(v, o.inv, o.lo, o.hi);
                backward_per_channel_into(x, dy, dx, axis, c, &nan, param, m)
            } else {
                backward_per_channel_into(x, dy, dx, axis, c, &nan, param, |o, v| o.mask_wide(v))
            }
        }
        ZeroPoints::Float(zps) => {
            let param =
                |ch: usize| FloatZpOp::new(scales[ch], zps[ch], r.quant_min(), r.quant_max());
            backward_per_channel_into(x, dy, dx, axis, c, &nan, param, |o, v| o.mask(v))
        }
    }
    nan.check(OP, x)
}

#[inline(always)]
fn forward_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    out: &mut ArrayRef<F, D>,
    nan: &NanFlag,
    f: impl Fn(f32) -> f32 + Copy + Sync + Send,
) {
    drive(
        x,
        out,
        |xs, os| nan.record(run_float(xs, os, f)),
        |v| F::from_compute(f(nan.pass(v.to_compute()))),
    );
}

#[inline(always)]
fn backward_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    dx: &mut ArrayRef<F, D>,
    nan: &NanFlag,
    m: impl Fn(f32) -> bool + Copy + Sync + Send,
) {
    drive2(
        x,
        dy,
        dx,
        |xs, gs, os| nan.record(run_mask_select(xs, gs, os, m)),
        |v, g| {
            if m(nan.pass(v.to_compute())) {
                g
            } else {
                F::zero()
            }
        },
    );
}

#[inline(always)]
fn forward_per_channel_into<F: QFloat, D: Dimension, P: Copy + Sync>(
    x: &ArrayRef<F, D>,
    out: &mut ArrayRef<F, D>,
    axis: usize,
    channels: usize,
    nan: &NanFlag,
    param: impl Fn(usize) -> P + Sync + Send,
    f: impl Fn(P, f32) -> f32 + Copy + Sync + Send,
) {
    drive_per_channel(
        x,
        out,
        axis,
        channels,
        param,
        |o, xs, os| nan.record(run_float(xs, os, |v| f(o, v))),
        |o, v| F::from_compute(f(o, nan.pass(v.to_compute()))),
    );
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_per_channel_into<F: QFloat, D: Dimension, P: Copy + Sync>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    dx: &mut ArrayRef<F, D>,
    axis: usize,
    channels: usize,
    nan: &NanFlag,
    param: impl Fn(usize) -> P + Sync + Send,
    m: impl Fn(P, f32) -> bool + Copy + Sync + Send,
) {
    drive2_per_channel(
        x,
        dy,
        dx,
        axis,
        channels,
        param,
        |o, xs, gs, os| nan.record(run_mask_select(xs, gs, os, |v| m(o, v))),
        |o, v, g| {
            if m(o, nan.pass(v.to_compute())) {
                g
            } else {
                F::zero()
            }
        },
    );
}
