//! [`LearnableFakeQuantize`]: PyTorch's `_LearnableFakeQuantize` (LSQ), per tensor or per
//! channel, with the SGD step on its scale and zero point.

use ndarray::{Array, ArrayD, ArrayRef, Axis, Dimension};

use super::fake_quantize::{QatObserver, per_channel_fake_quant, x86_to_i64};
use super::sgd::sgd_update;
use super::util::{new_like, same_shape, to_f32};
use crate::element::QFloat;
use crate::error::{QuantError, Result};
use crate::kernels::fake_quantize;
use crate::qparams::{QParams, QSpec, resolve_axis};

/// What one [`LearnableFakeQuantize::forward_backward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct LsqStep<F, D: Dimension> {
    /// The output (`x` when fake quantization is disabled).
    pub y: Array<F, D>,
    /// The gradient with respect to `x`.
    pub dx: Array<F, D>,
    /// The scales the fake quantization used (after the observer or the clamp).
    pub qparams_scale: Vec<f32>,
    /// The (float) zero points it used (after zeroing for a symmetric scheme).
    pub qparams_zero_point: Vec<f32>,
    /// The gradient factor (`None` when fake quantization is disabled).
    pub grad_factor: Option<f32>,
    /// The scale gradients (`None` when fake quantization is disabled: no gradient).
    pub dscale: Option<Vec<f32>>,
    /// The zero-point gradients (`None` likewise).
    pub dzero_point: Option<Vec<f32>>,
}

/// PyTorch's `_LearnableFakeQuantize` (LSQ: learned step size): a fake quantizer whose scale
/// and zero point are float parameters that training updates.
///
/// One [`LearnableFakeQuantize::forward_backward`] (PyTorch's forward, then the backward of
/// `sum(y · dy)`):
/// 1. if the observer is enabled (PyTorch's `toggle_observer_update`, `static_enabled`), it
///    sees `x` and its parameters are copied into scale/zero point; otherwise the scale is
///    clamped below to `eps` (`2^-23`);
/// 2. if fake quantization is enabled: a symmetric scheme's zero point is set to 0;
///    `grad_factor = 1 / sqrt(numel · quant_max)` (`f64`, used as `f32`) with gradient
///    scaling, else 1;
///    - per tensor, the forward uses `nearbyint(zero_point)` clamped to the range, but the
///      backward `zb = trunc(clamp(zero_point + 0.5))` (2.5 → 2 forward, 3 backward; −3.7 →
///      −4 forward, −3 backward): `q = nearbyint(fma(x, 1/scale, zb))`; `dx = dy` where
///      `qmin <= q <= qmax` (else `±0`); per element `ds = dy·(qmin − zb)·gf` below,
///      `dy·(qmax − zb)·gf` above, `((dy·fma(q − zb, scale, −x))·(1/scale))·gf` inside;
///      `dz = −dy·scale·gf` outside, 0 inside;
///    - per channel, the zero point is `round_half_even(zero_point)` clamped in forward and
///      backward alike, and the sums run over every axis but `ch_axis`;
///    - off: `y = x`, `dx = dy`, no parameter gradient.
///
/// The FMAs are those of PyTorch's AVX2/AVX512 build ([`f32::mul_add`]). The gradient sums
/// are accumulated in `f64` and rounded once: PyTorch sums in `f32` in its vectorized order,
/// so `dscale`/`dzero_point` may differ from PyTorch's in the last bits (the golden cases
/// carry a tolerance for them).
///
/// [`LearnableFakeQuantize::sgd_step`] then applies `torch.optim.SGD(lr)` (no momentum):
/// `p = fma(−f32(lr), grad, p)` on scale and zero point, when they have a gradient. A
/// symmetric zero point thus moves away from 0, and is zeroed again at the next fake quant.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::qat::LearnableFakeQuantize;
/// use qnumeric::{QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8).with_quant_range(0, 255)?;
/// let mut lsq = LearnableFakeQuantize::per_tensor(spec, 0.01, false)?;
/// lsq.set_params(vec![0.5], vec![2.5])?;
/// lsq.enable_observer(false);
/// // Forward zero point nearbyint(2.5) = 2: 200.0 clamps at (255 − 2)·0.5.
/// let step = lsq.forward_backward(&array![1.0f32, 200.0], &array![1.0f32, 1.0])?;
/// assert_eq!(step.y, array![1.0, 126.5]);
/// assert_eq!(step.dx, array![1.0, 0.0]);
/// lsq.sgd_step(0.01, &step)?;
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LearnableFakeQuantize {
    observer: QatObserver,
    scale: Vec<f32>,
    zero_point: Vec<f32>,
    use_grad_scaling: bool,
    observer_enabled: bool,
    fake_quant_enabled: bool,
}

/// `eps` of PyTorch's `_LearnableFakeQuantize` (`torch.finfo(torch.float32).eps`).
const EPS: f32 = f32::EPSILON;

impl LearnableFakeQuantize {
    /// Per tensor, scale `[1.0]`, zero point `[0.0]`, both switches on.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme or a spec with
    /// `reduce_range` (PyTorch's module would fake-quantize over another range than its
    /// observer); [`QuantError::InvalidParameter`] for an averaging constant outside `(0, 1]`,
    /// or gradient scaling with `quant_max <= 0`.
    pub fn per_tensor(
        spec: QSpec,
        averaging_constant: f32,
        use_grad_scaling: bool,
    ) -> Result<Self> {
        Self::build(spec, None, 1, averaging_constant, use_grad_scaling)
    }

    /// Per channel along `ch_axis` with `channels` parameters (PyTorch's `channel_len`),
    /// scales 1 and zero points 0.
    ///
    /// # Errors
    /// As [`LearnableFakeQuantize::per_tensor`]; `channels == 0` is
    /// [`QuantError::InvalidParameter`]; float-qparams schemes are unsupported.
    pub fn per_channel(
        spec: QSpec,
        ch_axis: isize,
        channels: usize,
        averaging_constant: f32,
        use_grad_scaling: bool,
    ) -> Result<Self> {
        Self::build(
            spec,
            Some(ch_axis),
            channels,
            averaging_constant,
            use_grad_scaling,
        )
    }

    fn build(
        spec: QSpec,
        ch_axis: Option<isize>,
        channels: usize,
        c: f32,
        use_grad_scaling: bool,
    ) -> Result<Self> {
        const OP: &str = "LearnableFakeQuantize::new";
        if spec.reduce_range() {
            return Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "reduce_range is not supported (PyTorch's module fake-quantizes over the unreduced range)",
            });
        }
        if spec.scheme() == crate::qparams::QScheme::PerChannelAffineFloatQParams {
            return Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "float-qparams schemes are not supported",
            });
        }
        if channels == 0 || channels > crate::nn::MAX_ELEMENTS {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "channels",
                value: channels as f64,
                reason: "must be at least 1 and at most MAX_ELEMENTS",
            });
        }
        if use_grad_scaling && spec.range().quant_max() <= 0 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "quant_max",
                value: spec.range().quant_max() as f64,
                reason: "gradient scaling divides by sqrt(numel · quant_max)",
            });
        }
        Ok(LearnableFakeQuantize {
            observer: QatObserver::new(spec, ch_axis, c)?,
            scale: vec![1.0; channels],
            zero_point: vec![0.0; channels],
            use_grad_scaling,
            observer_enabled: true,
            fake_quant_enabled: true,
        })
    }

    /// Sets the parameters (PyTorch's `scale`/`zero_point` `Parameter`s).
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] unless both have the module's channel count;
    /// [`QuantError::NonFinite`] for a non-finite value.
    pub fn set_params(&mut self, scale: Vec<f32>, zero_point: Vec<f32>) -> Result<()> {
        const OP: &str = "LearnableFakeQuantize::set_params";
        for (what, v) in [("scale", &scale), ("zero_point", &zero_point)] {
            if v.len() != self.scale.len() {
                return Err(QuantError::LengthMismatch {
                    op: OP,
                    what,
                    expected: self.scale.len(),
                    got: v.len(),
                });
            }
            if let Some(&bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(QuantError::NonFinite {
                    op: OP,
                    what,
                    value: f64::from(bad),
                });
            }
        }
        self.scale = scale;
        self.zero_point = zero_point;
        Ok(())
    }

    /// PyTorch's `toggle_observer_update(on)` (`enable_static_observation` /
    /// `disable_static_estimate`).
    pub fn enable_observer(&mut self, on: bool) {
        self.observer_enabled = on;
    }

    /// PyTorch's `toggle_fake_quant(on)`.
    pub fn enable_fake_quant(&mut self, on: bool) {
        self.fake_quant_enabled = on;
    }

    /// Whether the observer is enabled.
    #[must_use]
    pub fn observer_enabled(&self) -> bool {
        self.observer_enabled
    }

    /// Whether fake quantization is enabled.
    #[must_use]
    pub fn fake_quant_enabled(&self) -> bool {
        self.fake_quant_enabled
    }

    /// The scales.
    #[must_use]
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// The (float) zero points.
    #[must_use]
    pub fn zero_point(&self) -> &[f32] {
        &self.zero_point
    }

    /// The observer's running minimum (`[+inf]` / `[]` before any data).
    #[must_use]
    pub fn min_val(&self) -> Vec<f32> {
        self.observer.min_val()
    }

    /// The observer's running maximum.
    #[must_use]
    pub fn max_val(&self) -> Vec<f32> {
        self.observer.max_val()
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &QSpec {
        self.observer.spec()
    }

    /// Whether gradients are scaled by `1 / sqrt(numel · quant_max)`.
    #[must_use]
    pub fn use_grad_scaling(&self) -> bool {
        self.use_grad_scaling
    }

    /// Forward and backward of one training step (see the type's docs). Updates the
    /// observer and the parameters as PyTorch's forward does (not the SGD step).
    ///
    /// # Errors
    /// [`QuantError::EmptyInput`]; [`QuantError::ShapeMismatch`] (`dy`); NaN/±inf seen by the
    /// observer; [`QuantError::LengthMismatch`] when the parameters do not match the channel
    /// count; [`QuantError::InvalidScale`] / [`QuantError::NonFinite`] for parameters the fake
    /// quantization cannot use (an infinite scale, a non-finite zero point); NaN in `x` when
    /// fake-quantizing. The module is unchanged on error.
    pub fn forward_backward<F: QFloat, D: Dimension>(
        &mut self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<LsqStep<F, D>> {
        const OP: &str = "LearnableFakeQuantize::forward_backward";
        same_shape(OP, x.shape(), dy.shape())?;
        let xf = to_f32(OP, x)?;
        let dyf = to_f32(OP, dy)?;
        let mut observer = self.observer.clone();
        let mut scale = self.scale.clone();
        let mut zp = self.zero_point.clone();
        if self.observer_enabled {
            observer.as_dyn().observe_view(xf.view().into())?;
            let (s, z) = observer.qparams()?;
            if s.len() != scale.len() {
                return Err(QuantError::LengthMismatch {
                    op: OP,
                    what: "channels of the input",
                    expected: scale.len(),
                    got: s.len(),
                });
            }
            scale = s;
            zp = z;
        } else {
            for s in &mut scale {
                // `clamp_(min=eps)`: NaN stays NaN (refused below).
                if *s < EPS {
                    *s = EPS;
                }
            }
        }
        let spec = *observer.spec();
        let (y, dx, grads) = if self.fake_quant_enabled {
            if spec.scheme().is_symmetric() {
                zp.iter_mut().for_each(|z| *z = 0.0);
            }
            let gf = if self.use_grad_scaling {
                let n = xf.len() as f64 * spec.range().quant_max() as f64;
                (1.0 / n.sqrt()) as f32
            } else {
                1.0
            };
            let r = spec.range();
            let (qmin, qmax) = (r.quant_min(), r.quant_max());
            let (y, dx, ds, dz) = match observer.ch_axis() {
                None => lsq_per_tensor(OP, &xf, &dyf, scale[0], zp[0], qmin, qmax, gf, r)?,
                Some(a) => lsq_per_channel(OP, &xf, &dyf, &scale, &zp, a, qmin, qmax, gf, r)?,
            };
            (y, dx, Some((gf, ds, dz)))
        } else {
            (xf.clone(), dyf.clone(), None)
        };
        let out = LsqStep {
            y: new_like(OP, x, &y)?,
            dx: new_like(OP, x, &dx)?,
            qparams_scale: scale.clone(),
            qparams_zero_point: zp.clone(),
            grad_factor: grads.as_ref().map(|g| g.0),
            dscale: grads.as_ref().map(|g| g.1.clone()),
            dzero_point: grads.map(|g| g.2),
        };
        self.observer = observer;
        self.scale = scale;
        self.zero_point = zp;
        Ok(out)
    }

    /// `torch.optim.SGD(lr)` on scale and zero point with the gradients of `step`:
    /// `p = fma(−f32(lr), grad, p)`; nothing when the step had no gradient.
    ///
    /// # Errors
    /// [`QuantError::NonFinite`] for a non-finite `lr`; [`QuantError::LengthMismatch`] when the
    /// gradients do not match the parameters. The parameters are unchanged on error.
    pub fn sgd_step<F, D: Dimension>(&mut self, lr: f64, step: &LsqStep<F, D>) -> Result<()> {
        const OP: &str = "LearnableFakeQuantize::sgd_step";
        let (Some(ds), Some(dz)) = (&step.dscale, &step.dzero_point) else {
            return Ok(());
        };
        let mut s = self.scale.clone();
        let mut z = self.zero_point.clone();
        sgd_update(OP, lr, &mut s, ds)?;
        sgd_update(OP, lr, &mut z, dz)?;
        self.scale = s;
        self.zero_point = z;
        Ok(())
    }
}

/// The per-element LSQ backward terms: `(inside, dscale term, dzero_point term)`.
#[inline]
#[allow(clippy::too_many_arguments)]
fn lsq_element(
    x: f32,
    dy: f32,
    scale: f32,
    inv: f32,
    zb: f32,
    qmin: f32,
    qmax: f32,
    gf: f32,
) -> (bool, f32, f32) {
    let qf = x.mul_add(inv, zb).round_ties_even();
    // PyTorch's `int64_t xqi = nearbyint(...)`: x86's conversion (out of range → INT64_MIN).
    let q = x86_to_i64(qf);
    let (lo, hi) = (qmin as i64, qmax as i64);
    if q < lo || q > hi {
        let edge = if q < lo { qmin - zb } else { qmax - zb };
        (false, (dy * edge) * gf, ((-dy) * scale) * gf)
    } else {
        let xfq_minus_x = (qf - zb).mul_add(scale, -x);
        (true, ((dy * xfq_minus_x) * inv) * gf, 0.0)
    }
}

type LsqOut = (ArrayD<f32>, ArrayD<f32>, Vec<f32>, Vec<f32>);

#[allow(clippy::too_many_arguments)]
fn lsq_per_tensor(
    op: &'static str,
    x: &ArrayD<f32>,
    dy: &ArrayD<f32>,
    scale: f32,
    zero_point: f32,
    qmin: i64,
    qmax: i64,
    gf: f32,
    range: crate::dtype::QRange,
) -> Result<LsqOut> {
    check_zero_point(op, zero_point)?;
    let (lo, hi) = (qmin as f32, qmax as f32);
    let zf = zero_point.round_ties_even().clamp(lo, hi);
    let qp = QParams::with_range(scale, zf as i64, range).map_err(|e| e.with_op(op))?;
    let y = fake_quantize(x, &qp).map_err(|e| e.with_op(op))?;
    let zb = (zero_point + 0.5).clamp(lo, hi).trunc();
    let inv = 1.0f32 / scale;
    let mut dx = dy.clone();
    let (mut ds, mut dz) = (0.0f64, 0.0f64);
    for ((g, &xv), &d) in dx.iter_mut().zip(x.iter()).zip(dy.iter()) {
        let (inside, s, z) = lsq_element(xv, d, scale, inv, zb, lo, hi, gf);
        *g = d * if inside { 1.0 } else { 0.0 };
        ds += f64::from(s);
        dz += f64::from(z);
    }
    Ok((y, dx, vec![ds as f32], vec![dz as f32]))
}

#[allow(clippy::too_many_arguments)]
fn lsq_per_channel(
    op: &'static str,
    x: &ArrayD<f32>,
    dy: &ArrayD<f32>,
    scale: &[f32],
    zero_point: &[f32],
    ch_axis: isize,
    qmin: i64,
    qmax: i64,
    gf: f32,
    range: crate::dtype::QRange,
) -> Result<LsqOut> {
    let axis = resolve_axis(op, ch_axis, x.ndim())?;
    let c = x.shape()[axis];
    if scale.len() != c {
        return Err(QuantError::LengthMismatch {
            op,
            what: "scale (channels of the input)",
            expected: c,
            got: scale.len(),
        });
    }
    let (lo, hi) = (qmin as f32, qmax as f32);
    let mut zr = Vec::with_capacity(c);
    for &z in zero_point {
        check_zero_point(op, z)?;
        zr.push(z.round_ties_even().clamp(lo, hi));
    }
    let zi: Vec<i32> = zr.iter().map(|&z| z as i32).collect();
    let (y, _) = per_channel_fake_quant(op, x, ch_axis, scale, &zi, range)?;
    let mut dx = dy.clone();
    let mut ds = vec![0.0f64; c];
    let mut dz = vec![0.0f64; c];
    for (ch, ((mut g, xs), ds_in)) in dx
        .axis_iter_mut(Axis(axis))
        .zip(x.axis_iter(Axis(axis)))
        .zip(dy.axis_iter(Axis(axis)))
        .enumerate()
    {
        let s = scale[ch];
        let inv = 1.0f32 / s;
        for ((o, &xv), &d) in g.iter_mut().zip(xs.iter()).zip(ds_in.iter()) {
            let (inside, a, b) = lsq_element(xv, d, s, inv, zr[ch], lo, hi, gf);
            *o = d * if inside { 1.0 } else { 0.0 };
            ds[ch] += f64::from(a);
            dz[ch] += f64::from(b);
        }
    }
    Ok((
        y,
        dx,
        ds.into_iter().map(|v| v as f32).collect(),
        dz.into_iter().map(|v| v as f32).collect(),
    ))
}

fn check_zero_point(op: &'static str, z: f32) -> Result<()> {
    if z.is_finite() {
        Ok(())
    } else {
        Err(QuantError::NonFinite {
            op,
            what: "zero point",
            value: f64::from(z),
        })
    }
}
