//! Learnable fake quantization (LSQ, per tensor): forward and the gradients for `x`, the scale
//! and the zero point, as PyTorch's `_fake_quantize_learnable_per_tensor_affine`.

use ndarray::{Array, ArrayRef, Dimension, Zip};

use crate::dtype::QRange;
use crate::element::QFloat;
use crate::error::{QuantError, Result};
use crate::qparams::{QParams, check_scale};

use super::checks::{no_nan, same_shape};
use super::fake_quantize::{fake_quantize, fake_quantize_into};
use crate::simd::dispatched;

/// Parameters of a learnable (LSQ) fake quantizer: a float scale and a float zero point that
/// training updates, the range, and PyTorch's `grad_factor` (LSQ's gradient scale, e.g.
/// `1/sqrt(numel * quant_max)`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LearnableParams {
    /// The scale (must be finite and > 0).
    pub scale: f32,
    /// The zero point, a float (rounded half-to-even in the forward).
    pub zero_point: f32,
    /// Lowest level (must be <= 0).
    pub quant_min: i64,
    /// Highest level (must be >= 0).
    pub quant_max: i64,
    /// Multiplies the scale and zero-point gradients.
    pub grad_factor: f32,
}

/// Gradients of [`learnable_fake_quantize`].
#[derive(Debug, Clone, PartialEq)]
pub struct LearnableGrads<F, D: Dimension> {
    /// Gradient with respect to `x` (the straight-through mask times `dy`).
    pub dx: Array<F, D>,
    /// Gradient with respect to the scale.
    pub dscale: f32,
    /// Gradient with respect to the zero point.
    pub dzero_point: f32,
}

impl LearnableParams {
    fn validate(&self, op: &'static str) -> Result<QRange> {
        check_scale(op, self.scale)?;
        for (what, v) in [
            ("zero point", self.zero_point),
            ("grad_factor", self.grad_factor),
        ] {
            if !v.is_finite() {
                return Err(QuantError::NonFinite {
                    op,
                    what,
                    value: v as f64,
                });
            }
        }
        if self.quant_min > 0 || self.quant_max < 0 || self.quant_min >= self.quant_max {
            return Err(QuantError::InvalidQuantRange {
                op,
                quant_min: self.quant_min,
                quant_max: self.quant_max,
                dtype: QRange::for_fake_quant(self.quant_min.min(0), self.quant_max.max(1))?
                    .dtype(),
                reason: "learnable fake quantization needs quant_min <= 0 <= quant_max and quant_min < quant_max",
            });
        }
        let range = QRange::for_fake_quant(self.quant_min, self.quant_max)?;
        let (lo, hi) = (self.quant_min as f32, self.quant_max as f32);
        if self.zero_point < lo || self.zero_point > hi {
            return Err(QuantError::ZeroPointOutOfRange {
                op,
                zero_point: self.zero_point.round_ties_even() as i64,
                min: self.quant_min,
                max: self.quant_max,
            });
        }
        Ok(range)
    }

    /// The forward's integer zero point: `clamp(rne(zero_point), quant_min, quant_max)`.
    fn forward_qparams(&self, op: &'static str) -> Result<QParams> {
        let range = self.validate(op)?;
        let z = (self.zero_point.round_ties_even() as i64).clamp(self.quant_min, self.quant_max);
        QParams::with_range(self.scale, z, range)
    }
}

/// LSQ forward: fake quantization with the zero point rounded half-to-even and clamped.
///
/// # Errors
/// [`QuantError::InvalidScale`], [`QuantError::NonFinite`] (zero point or grad factor),
/// [`QuantError::InvalidQuantRange`] (the range must contain 0),
/// [`QuantError::ZeroPointOutOfRange`], [`QuantError::NanInput`].
pub fn learnable_fake_quantize<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    p: &LearnableParams,
) -> Result<Array<F, D>> {
    let qp = p.forward_qparams("learnable_fake_quantize")?;
    fake_quantize(x, &qp)
}

/// LSQ forward into a caller's buffer (no allocation). See [`learnable_fake_quantize`].
///
/// # Errors
/// As [`learnable_fake_quantize`], plus [`QuantError::ShapeMismatch`] when `out` differs in
/// shape. As every `_into` kernel, argument errors leave `out` untouched and `out` may be
/// partly written when a NaN is reported.
///
/// # Examples
/// ```
/// use ndarray::{array, Array1};
/// use qnumeric::{learnable_fake_quantize_into, LearnableParams};
/// let p = LearnableParams { scale: 0.5, zero_point: 0.0, quant_min: -8, quant_max: 7, grad_factor: 1.0 };
/// let mut y = Array1::<f32>::zeros(3);
/// learnable_fake_quantize_into(&array![0.3f32, -1.2, 9.0], &p, &mut y)?;
/// assert_eq!(y, array![0.5, -1.0, 3.5]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn learnable_fake_quantize_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    p: &LearnableParams,
    out: &mut ArrayRef<F, D>,
) -> Result<()> {
    let qp = p.forward_qparams("learnable_fake_quantize_into")?;
    fake_quantize_into(x, &qp, out)
}

/// LSQ backward, given the upstream gradient `dy`.
///
/// ```text
/// zb = trunc(clamp(zero_point + 0.5, qmin, qmax))     (half-up, as PyTorch's backward)
/// l  = rne(zb + x * (1/s))
/// l < qmin:  dx = 0,  dscale += dy·(qmin - zb)·g,  dzp += -dy·s·g
/// l > qmax:  dx = 0,  dscale += dy·(qmax - zb)·g,  dzp += -dy·s·g
/// else:      dx = dy, dscale += dy·((l - zb)·s - x)·(1/s)·g
/// ```
/// The two sums are accumulated in `f64` (eight interleaved partial sums on contiguous data)
/// and rounded to `f32` once.
///
/// # Errors
/// As [`learnable_fake_quantize`], plus [`QuantError::ShapeMismatch`] when `dy` differs in
/// shape.
pub fn learnable_fake_quantize_backward<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    p: &LearnableParams,
) -> Result<LearnableGrads<F, D>> {
    let mut dx = Array::from_elem(x.raw_dim(), F::zero());
    let (dscale, dzero_point) =
        backward_into("learnable_fake_quantize_backward", x, dy, p, &mut dx)?;
    Ok(LearnableGrads {
        dx,
        dscale,
        dzero_point,
    })
}

/// LSQ backward into a caller's buffer `dx` (no allocation); returns `(dscale, dzero_point)`.
/// See [`learnable_fake_quantize_backward`].
///
/// # Errors
/// As [`learnable_fake_quantize_backward`], plus [`QuantError::ShapeMismatch`] when `dx`
/// differs in shape. Argument errors leave `dx` untouched; `dx` may be partly written when a
/// NaN in `x` is reported.
///
/// # Examples
/// ```
/// use ndarray::{array, Array1};
/// use qnumeric::{learnable_fake_quantize_backward_into, LearnableParams};
/// let p = LearnableParams { scale: 0.5, zero_point: 0.0, quant_min: -8, quant_max: 7, grad_factor: 1.0 };
/// let mut dx = Array1::<f32>::zeros(2);
/// let (ds, dz) = learnable_fake_quantize_backward_into(
///     &array![0.3f32, 9.0], &array![1.0f32, 1.0], &p, &mut dx)?;
/// assert_eq!(dx, array![1.0, 0.0]); // 9.0 is clipped: no gradient to x
/// assert!(ds.is_finite() && dz == -0.5);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn learnable_fake_quantize_backward_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    p: &LearnableParams,
    dx: &mut ArrayRef<F, D>,
) -> Result<(f32, f32)> {
    backward_into("learnable_fake_quantize_backward_into", x, dy, p, dx)
}

fn backward_into<F: QFloat, D: Dimension>(
    op: &'static str,
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    p: &LearnableParams,
    dx: &mut ArrayRef<F, D>,
) -> Result<(f32, f32)> {
    same_shape(op, x, dy)?;
    same_shape(op, x, dx)?;
    p.validate(op)?;
    let (qmin, qmax) = (p.quant_min as f32, p.quant_max as f32);
    let zb = (p.zero_point + 0.5).clamp(qmin, qmax).trunc();
    let s = p.scale;
    let inv = 1.0 / s;
    let g = p.grad_factor;
    let c = LsqConsts {
        qmin,
        qmax,
        zb,
        s,
        inv,
        g,
    };
    let contiguous = x.strides() == dy.strides() && x.strides() == dx.strides();
    let slices = (x.as_slice_memory_order(), dy.as_slice_memory_order());
    let (dscale, dzp) = match (slices, dx.as_slice_memory_order_mut()) {
        ((Some(xs), Some(gs)), Some(os)) if contiguous => match (
            F::as_f32_slice(xs),
            F::as_f32_slice(gs),
            F::as_f32_slice_mut(os),
        ) {
            (Some(xf), Some(gf), Some(of)) => crate::parallel::map_fold3(
                xf,
                gf,
                of,
                |a, g, o| lsq_backward_slice(a, g, o, c),
                (0.0, 0.0),
                |a, b| (a.0 + b.0, a.1 + b.1),
            ),
            _ => lsq_backward_zip(x, dy, dx, c),
        },
        _ => lsq_backward_zip(x, dy, dx, c),
    };
    // A NaN in `x` makes its element's scale gradient NaN, and the sum stays NaN: the pass
    // itself detects it, and only then is `x` scanned for the index to report. (A NaN sum
    // from `dy` alone is returned as computed, as PyTorch does.)
    if dscale.is_nan() {
        no_nan(op, x)?;
    }
    Ok((dscale as f32, dzp as f32))
}

#[derive(Clone, Copy)]
struct LsqConsts {
    qmin: f32,
    qmax: f32,
    zb: f32,
    s: f32,
    inv: f32,
    g: f32,
}

impl LsqConsts {
    /// `(dx mask, dscale contribution, dzero_point contribution)` of one element.
    #[inline(always)]
    fn element(&self, xf: f32, d: f32) -> (bool, f32, f32) {
        let l = (self.zb + xf * self.inv).round_ties_even();
        let below = l < self.qmin;
        let above = l > self.qmax;
        let inside = !(below || above);
        let edge = if below { self.qmin } else { self.qmax };
        let xfq = (l - self.zb) * self.s;
        let ds = if inside {
            d * (xfq - xf) * self.inv * self.g
        } else {
            d * (edge - self.zb) * self.g
        };
        let dz = if inside { 0.0 } else { -d * self.s * self.g };
        (inside, ds, dz)
    }
}

fn lsq_backward_zip<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    dy: &ArrayRef<F, D>,
    dx: &mut ArrayRef<F, D>,
    c: LsqConsts,
) -> (f64, f64) {
    let mut dscale = 0.0f64;
    let mut dzp = 0.0f64;
    Zip::from(dx).and(x).and(dy).for_each(|o, &xv, &gv| {
        let (inside, ds, dz) = c.element(xv.to_compute(), gv.to_compute());
        *o = if inside { gv } else { F::zero() };
        dscale += ds as f64;
        dzp += dz as f64;
    });
    (dscale, dzp)
}

dispatched!(
    /// Contiguous f32 backward; eight independent f64 accumulators per sum so it vectorises.
    fn lsq_backward_slice[](xs: &[f32], gs: &[f32], os: &mut [f32], c: LsqConsts) -> (f64, f64) = lsq_backward_slice_body
);

#[inline(always)]
fn lsq_backward_slice_body(xs: &[f32], gs: &[f32], os: &mut [f32], c: LsqConsts) -> (f64, f64) {
    const L: usize = 8;
    let mut acc_s = [0.0f64; L];
    let mut acc_z = [0.0f64; L];
    let n = xs.len() / L * L;
    for ((xc, gc), oc) in xs[..n]
        .chunks_exact(L)
        .zip(gs[..n].chunks_exact(L))
        .zip(os[..n].chunks_exact_mut(L))
    {
        for k in 0..L {
            let (inside, ds, dz) = c.element(xc[k], gc[k]);
            oc[k] = if inside { gc[k] } else { 0.0 };
            acc_s[k] += ds as f64;
            acc_z[k] += dz as f64;
        }
    }
    let (mut ds_sum, mut dz_sum) = (0.0f64, 0.0f64);
    for k in 0..L {
        ds_sum += acc_s[k];
        dz_sum += acc_z[k];
    }
    for ((&xv, &gv), o) in xs[n..].iter().zip(&gs[n..]).zip(&mut os[n..]) {
        let (inside, ds, dz) = c.element(xv, gv);
        *o = if inside { gv } else { 0.0 };
        ds_sum += ds as f64;
        dz_sum += dz as f64;
    }
    (ds_sum, dz_sum)
}
