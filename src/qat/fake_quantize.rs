//! [`FakeQuantize`]: PyTorch's `torch.ao.quantization.FakeQuantize` with a moving-average
//! min/max observer (per tensor or per channel).

use ndarray::{Array, ArrayD, ArrayRef, Dimension};

use super::util::{new_like, same_shape, times_mask, to_f32, write_back};
use crate::element::QFloat;
use crate::error::{QuantError, Result};
use crate::kernels::{fake_quantize, fake_quantize_mask};
use crate::observers::{MinMaxObserver, Observer, PerChannelMinMaxObserver};
use crate::qparams::{AnyQParams, PerChannelQParams, QParams, QSpec, ZeroPoints};

/// The observer of a fake-quant module: per tensor or per channel, moving average.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) enum QatObserver {
    /// `MovingAverageMinMaxObserver`.
    PerTensor(MinMaxObserver),
    /// `MovingAveragePerChannelMinMaxObserver`.
    PerChannel(PerChannelMinMaxObserver),
}

impl QatObserver {
    pub(crate) fn new(
        spec: QSpec,
        ch_axis: Option<isize>,
        averaging_constant: f32,
    ) -> Result<Self> {
        Ok(match ch_axis {
            None => {
                QatObserver::PerTensor(MinMaxObserver::moving_average(spec, averaging_constant)?)
            }
            Some(a) => QatObserver::PerChannel(PerChannelMinMaxObserver::moving_average(
                spec,
                a,
                averaging_constant,
            )?),
        })
    }

    pub(crate) fn as_dyn(&mut self) -> &mut dyn Observer {
        match self {
            QatObserver::PerTensor(o) => o,
            QatObserver::PerChannel(o) => o,
        }
    }

    pub(crate) fn as_dyn_ref(&self) -> &dyn Observer {
        match self {
            QatObserver::PerTensor(o) => o,
            QatObserver::PerChannel(o) => o,
        }
    }

    pub(crate) fn spec(&self) -> &QSpec {
        match self {
            QatObserver::PerTensor(o) => o.spec(),
            QatObserver::PerChannel(o) => o.spec(),
        }
    }

    pub(crate) fn ch_axis(&self) -> Option<isize> {
        match self {
            QatObserver::PerTensor(_) => None,
            QatObserver::PerChannel(o) => Some(o.ch_axis()),
        }
    }

    pub(crate) fn averaging_constant(&self) -> f32 {
        match self {
            QatObserver::PerTensor(o) => o.averaging_constant(),
            QatObserver::PerChannel(o) => o.averaging_constant(),
        }
        .unwrap_or(crate::observers::UpdateRule::DEFAULT_AVERAGING_CONSTANT)
    }

    /// PyTorch's `min_val`: `[+inf]` before any data per tensor, `[]` per channel.
    pub(crate) fn min_val(&self) -> Vec<f32> {
        match self {
            QatObserver::PerTensor(o) => vec![o.min_max().map_or(f32::INFINITY, |r| r.0)],
            QatObserver::PerChannel(o) => o.min_vals().to_vec(),
        }
    }

    /// PyTorch's `max_val`: `[-inf]` before any data per tensor, `[]` per channel.
    pub(crate) fn max_val(&self) -> Vec<f32> {
        match self {
            QatObserver::PerTensor(o) => vec![o.min_max().map_or(f32::NEG_INFINITY, |r| r.1)],
            QatObserver::PerChannel(o) => o.max_vals().to_vec(),
        }
    }

    /// PyTorch's `calculate_qparams`: the observer's parameters, or scale `[1.0]` and zero
    /// point `[0]` before any data.
    pub(crate) fn qparams(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let q = match self {
            QatObserver::PerTensor(o) => o.qparams(),
            QatObserver::PerChannel(o) => o.qparams(),
        };
        match q {
            Ok(AnyQParams::PerTensor(p)) => Ok((vec![p.scale()], vec![p.zero_point() as f32])),
            Ok(AnyQParams::PerChannel(p)) => {
                let z = (0..p.channels())
                    .map(|c| p.zero_points().get(c).unwrap_or(0.0))
                    .collect();
                Ok((p.scales().to_vec(), z))
            }
            Err(QuantError::Empty { .. }) => Ok((vec![1.0], vec![0.0])),
            Err(e) => Err(e),
        }
    }
}

/// Fake quantization of `x` with integer parameters, and its straight-through mask (1 where
/// the gradient passes, 0 where the level was clamped).
pub(crate) fn fake_quant_with_mask(
    op: &'static str,
    x: &ArrayD<f32>,
    spec: &QSpec,
    ch_axis: Option<isize>,
    scale: &[f32],
    zero_point: &[i32],
) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
    let range = spec.range();
    match ch_axis {
        None => {
            let (&s, &z) = match (scale, zero_point) {
                ([s], [z]) => (s, z),
                _ => {
                    return Err(QuantError::LengthMismatch {
                        op,
                        what: "per-tensor scale",
                        expected: 1,
                        got: scale.len(),
                    });
                }
            };
            let qp = QParams::with_range(s, z as i64, range).map_err(|e| e.with_op(op))?;
            let y = fake_quantize(x, &qp)?;
            let m = fake_quantize_mask(x, &qp)?.mapv(|b| if b { 1.0f32 } else { 0.0 });
            Ok((y, m))
        }
        Some(axis) => per_channel_fake_quant(op, x, axis, scale, zero_point, range),
    }
}

/// x86's conversion of a float to `i64` (`cvttss2si`): out of range or NaN gives
/// `i64::MIN` (the "integer indefinite" value), which is what PyTorch's
/// `static_cast<int64_t>` compiles to.
#[inline]
pub(crate) fn x86_to_i64(v: f32) -> i64 {
    const LIMIT: f32 = 9_223_372_036_854_775_808.0; // 2^63
    if v.is_nan() || !(-LIMIT..LIMIT).contains(&v) {
        i64::MIN
    } else {
        v as i64
    }
}

/// PyTorch's `fake_quantize_per_channel_affine` (integer zero points) with its mask, as its
/// CPU kernel computes them: `q = int64(zp + nearbyint(x · (1/s)))`, `y = (clamp(q) − zp)·s`,
/// mask `qmin <= q <= qmax`. The conversion to `int64` is x86's: a level beyond ±2^63 (a huge
/// `x` over a small scale) becomes `INT64_MIN`, so `+huge` fake-quantizes to `quant_min`
/// with a zero mask (PyTorch's result, reproduced; the crate's
/// [`fake_quantize_per_channel`](crate::fake_quantize_per_channel) saturates to `quant_max`).
/// NaN is refused.
pub(crate) fn per_channel_fake_quant(
    op: &'static str,
    x: &ArrayD<f32>,
    axis: isize,
    scale: &[f32],
    zero_point: &[i32],
    range: crate::dtype::QRange,
) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
    // Validates scales, zero points and their lengths.
    let qp = PerChannelQParams::with_range(
        scale.to_vec(),
        ZeroPoints::Int(zero_point.to_vec()),
        axis,
        range,
    )
    .map_err(|e| e.with_op(op))?;
    let a = qp.resolve_axis(op, x.shape())?;
    if let Some(i) = x.iter().position(|v| v.is_nan()) {
        return Err(QuantError::NanInput { op, index: i });
    }
    let (qmin, qmax) = (range.quant_min(), range.quant_max());
    let mut y = x.clone();
    let mut m = ArrayD::from_elem(x.raw_dim(), 0.0f32);
    for (c, (mut yc, mut mc)) in y
        .axis_iter_mut(ndarray::Axis(a))
        .zip(m.axis_iter_mut(ndarray::Axis(a)))
        .enumerate()
    {
        let (s, z) = (scale[c], zero_point[c]);
        let inv = 1.0f32 / s;
        for (v, k) in yc.iter_mut().zip(mc.iter_mut()) {
            let q = x86_to_i64(z as f32 + (*v * inv).round_ties_even());
            *k = if qmin <= q && q <= qmax { 1.0 } else { 0.0 };
            let level = q.clamp(qmin, qmax) - i64::from(z);
            *v = (level as f64 * f64::from(s)) as f32;
        }
    }
    Ok((y, m))
}

/// PyTorch's `FakeQuantize` (`torch.ao.quantization.FakeQuantize`) with a
/// `MovingAverageMinMaxObserver` or a `MovingAveragePerChannelMinMaxObserver`: an observer and a
/// fake quantization, each with its switch.
///
/// One [`FakeQuantize::forward`]:
/// 1. if the observer is enabled, it sees `x` (moving average of the batch min/max, three `f32`
///    roundings, no FMA) and the module's scale/zero point become the observer's
///    parameters (`QSpec::qparams_from_min_max`: symmetric `max|.| / ((qmax − qmin)/2)`,
///    affine `(max − min)/(qmax − qmin)`, clamped below by `eps`);
/// 2. if fake quantization is enabled, `y = fake_quantize(x)` with the **new** parameters
///    over the spec's range (after `reduce_range`); otherwise `y = x`.
///
/// [`FakeQuantize::backward`] is the straight-through estimator: `dx = dy · mask`, the mask
/// being 1 where `quant_min <= rne(x/scale) + zp <= quant_max` (a masked element is `±0`
/// with the sign of `dy`, as PyTorch's `dY * mask`), and `dx = dy` when fake quantization is
/// disabled. Call it after `forward` on the same `x`: it uses the current parameters.
///
/// PyTorch's behaviours reproduced:
/// - before any observation scale is `[1.0]` and zero point `[0]`: a first step with the
///   observer disabled fake-quantizes with scale 1;
/// - a per-channel module whose observer is disabled on its first step has a one-element
///   scale: fake quantization refuses the channel count ([`QuantError::LengthMismatch`]),
///   and nothing changes (PyTorch raises a `RuntimeError`);
/// - `reduce_range` halves the range at construction, explicit `quant_min`/`quant_max`
///   too ([`QSpec`] applies PyTorch's rules); a `quint8` symmetric spec with an explicit
///   range has zero point `(qmin + qmax) // 2` (127), 128 without one;
/// - per channel, a level beyond `±2^63` (a huge `x` over a small scale) is converted to
///   `int64` as x86 does (`INT64_MIN`): `+huge` fake-quantizes to `quant_min` with a zero
///   mask, PyTorch's result (the crate's `fake_quantize_per_channel` saturates to `quant_max`).
///
/// Differences: NaN or ±inf seen by an enabled observer are refused (PyTorch lets them poison
/// the statistics), an empty input is [`QuantError::EmptyInput`]; on any error the module is
/// unchanged.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::qat::FakeQuantize;
/// use qnumeric::{QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
/// let mut fq = FakeQuantize::per_tensor(spec, 0.01)?;
/// let y = fq.forward(&array![-1.0f32, 0.0, 3.0])?;
/// assert_eq!(fq.scale(), &[4.0 / 255.0]);
/// assert_eq!(fq.zero_point(), &[64]);
/// let dx = fq.backward(&array![-1.0f32, 0.0, 3.0], &array![1.0f32, 1.0, 1.0])?;
/// assert_eq!(dx, array![1.0, 1.0, 1.0]);
/// # let _ = y;
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FakeQuantize {
    observer: QatObserver,
    scale: Vec<f32>,
    zero_point: Vec<i32>,
    observer_enabled: bool,
    fake_quant_enabled: bool,
}

impl FakeQuantize {
    /// Per tensor (`MovingAverageMinMaxObserver`), both switches on, scale `[1.0]`, zero
    /// point `[0]`. PyTorch's default averaging constant is 0.01.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme or a symmetric `quint8` spec
    /// with `reduce_range`; [`QuantError::InvalidParameter`] for an averaging constant outside
    /// `(0, 1]`.
    pub fn per_tensor(spec: QSpec, averaging_constant: f32) -> Result<Self> {
        Self::build(spec, None, averaging_constant)
    }

    /// Per channel along `ch_axis` (`MovingAveragePerChannelMinMaxObserver`).
    ///
    /// # Errors
    /// As [`FakeQuantize::per_tensor`], with a per-channel scheme required; a scheme with
    /// float zero points is [`QuantError::UnsupportedConfig`].
    pub fn per_channel(spec: QSpec, ch_axis: isize, averaging_constant: f32) -> Result<Self> {
        Self::build(spec, Some(ch_axis), averaging_constant)
    }

    fn build(spec: QSpec, ch_axis: Option<isize>, c: f32) -> Result<Self> {
        if spec.scheme() == crate::qparams::QScheme::PerChannelAffineFloatQParams {
            return Err(QuantError::UnsupportedConfig {
                op: "FakeQuantize::per_channel",
                reason: "float zero points (per_channel_affine_float_qparams) are not supported",
            });
        }
        Ok(FakeQuantize {
            observer: QatObserver::new(spec, ch_axis, c)?,
            scale: vec![1.0],
            zero_point: vec![0],
            observer_enabled: true,
            fake_quant_enabled: true,
        })
    }

    /// PyTorch's `enable_observer(on)` (`disable_observer()` is `enable_observer(false)`).
    pub fn enable_observer(&mut self, on: bool) {
        self.observer_enabled = on;
    }

    /// PyTorch's `enable_fake_quant(on)`.
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

    /// The current scales (`[1.0]` before any observation).
    #[must_use]
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// The current zero points (`[0]` before any observation).
    #[must_use]
    pub fn zero_point(&self) -> &[i32] {
        &self.zero_point
    }

    /// The observer's running minimum: PyTorch's `min_val` (`[+inf]` before any data per
    /// tensor, `[]` per channel).
    #[must_use]
    pub fn min_val(&self) -> Vec<f32> {
        self.observer.min_val()
    }

    /// The observer's running maximum (`[-inf]` / `[]` before any data).
    #[must_use]
    pub fn max_val(&self) -> Vec<f32> {
        self.observer.max_val()
    }

    /// The spec (scheme, dtype, range after `reduce_range`).
    #[must_use]
    pub fn spec(&self) -> &QSpec {
        self.observer.spec()
    }

    /// The channel axis (`None` per tensor).
    #[must_use]
    pub fn ch_axis(&self) -> Option<isize> {
        self.observer.ch_axis()
    }

    /// The observer's averaging constant.
    #[must_use]
    pub fn averaging_constant(&self) -> f32 {
        self.observer.averaging_constant()
    }

    /// The current scale and zero point as the crate's parameters over the spec's range (what
    /// PyTorch's `convert` takes from `calculate_qparams()` after QAT).
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`] / [`QuantError::ZeroPointOutOfRange`] for parameters the
    /// range cannot hold (none after an observation); a per-channel module that never observed
    /// has one scale for its channels: [`QuantError::LengthMismatch`] only when used.
    pub fn qparams(&self) -> Result<AnyQParams> {
        const OP: &str = "FakeQuantize::qparams";
        let range = self.spec().range();
        match self.ch_axis() {
            None => {
                let (&s, &z) = match (self.scale.as_slice(), self.zero_point.as_slice()) {
                    ([s], [z]) => (s, z),
                    _ => {
                        return Err(QuantError::LengthMismatch {
                            op: OP,
                            what: "per-tensor scale",
                            expected: 1,
                            got: self.scale.len(),
                        });
                    }
                };
                Ok(AnyQParams::PerTensor(
                    QParams::with_range(s, i64::from(z), range).map_err(|e| e.with_op(OP))?,
                ))
            }
            Some(axis) => Ok(AnyQParams::PerChannel(
                PerChannelQParams::with_range(
                    self.scale.clone(),
                    ZeroPoints::Int(self.zero_point.clone()),
                    axis,
                    range,
                )
                .map_err(|e| e.with_op(OP))?,
            )),
        }
    }

    /// Fake quantization with the current parameters (no observation; `x` itself when fake
    /// quantization is disabled) and its straight-through mask (`None` when disabled).
    pub(crate) fn fake_quantize_current(
        &self,
        op: &'static str,
        x: &ArrayD<f32>,
    ) -> Result<(ArrayD<f32>, Option<ArrayD<f32>>)> {
        if !self.fake_quant_enabled {
            return Ok((x.clone(), None));
        }
        let (y, m) = fake_quant_with_mask(
            op,
            x,
            self.spec(),
            self.ch_axis(),
            &self.scale,
            &self.zero_point,
        )?;
        Ok((y, Some(m)))
    }

    /// Merges the statistics of another replica of this module (data-parallel QAT: each
    /// worker's fake quant saw its own shard): the observers merge as the crate's observers
    /// do (the union of the ranges, moving averages included), and the scale and zero point
    /// become the merged observer's. The switches stay this module's.
    ///
    /// # Errors
    /// [`QuantError::Incompatible`] for another configuration (spec, axis, averaging
    /// constant) or channel count; nothing changes on error.
    pub fn merge(&mut self, other: &FakeQuantize) -> Result<()> {
        let mut observer = self.observer.clone();
        observer.as_dyn().merge(other.observer.as_dyn_ref())?;
        if observer.as_dyn_ref().qparams().is_ok() {
            let (s, z) = observer.qparams()?;
            self.scale = s;
            self.zero_point = z.iter().map(|&v| v as i32).collect();
        }
        self.observer = observer;
        Ok(())
    }

    /// One training-mode forward: observe (if enabled), then fake-quantize (if enabled).
    ///
    /// # Errors
    /// [`QuantError::EmptyInput`]; NaN/±inf seen by the observer
    /// ([`QuantError::NanInput`], [`QuantError::NonFinite`]); a moving average or scale that
    /// overflows ([`QuantError::RangeOverflow`]); an axis or channel count that does not
    /// match ([`QuantError::InvalidAxis`], [`QuantError::LengthMismatch`]); NaN reaching the
    /// fake quantization. The module is unchanged on error.
    pub fn forward<F: QFloat, D: Dimension>(&mut self, x: &ArrayRef<F, D>) -> Result<Array<F, D>> {
        const OP: &str = "FakeQuantize::forward";
        let xf = to_f32(OP, x)?;
        let (y, _) = self.step(OP, &xf)?;
        new_like(OP, x, &y)
    }

    /// [`FakeQuantize::forward`] into a caller's buffer.
    ///
    /// # Errors
    /// As [`FakeQuantize::forward`], plus [`QuantError::ShapeMismatch`] when `out` differs in
    /// shape (checked first).
    pub fn forward_into<F: QFloat, D: Dimension>(
        &mut self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<()> {
        const OP: &str = "FakeQuantize::forward_into";
        same_shape(OP, x.shape(), out.shape())?;
        let xf = to_f32(OP, x)?;
        let (y, _) = self.step(OP, &xf)?;
        write_back(OP, &y, out)
    }

    /// The straight-through backward with the current parameters and switches:
    /// `dx = dy · mask` (see the type's docs).
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] when `dy` differs from `x` in shape; as the fake
    /// quantization of [`FakeQuantize::forward`].
    pub fn backward<F: QFloat, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Array<F, D>> {
        const OP: &str = "FakeQuantize::backward";
        let dx = self.backward_f32(OP, x, dy)?;
        new_like(OP, x, &dx)
    }

    /// [`FakeQuantize::backward`] into a caller's buffer.
    ///
    /// # Errors
    /// As [`FakeQuantize::backward`], plus a shape mismatch of `dx`.
    pub fn backward_into<F: QFloat, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
        dx: &mut ArrayRef<F, D>,
    ) -> Result<()> {
        const OP: &str = "FakeQuantize::backward_into";
        same_shape(OP, x.shape(), dx.shape())?;
        let g = self.backward_f32(OP, x, dy)?;
        write_back(OP, &g, dx)
    }

    /// Forward and backward in one call: `(y, dx)` for upstream gradient `dy`.
    ///
    /// # Errors
    /// As [`FakeQuantize::forward`] and [`FakeQuantize::backward`] (the shape of `dy` is
    /// checked before anything changes).
    pub fn forward_backward<F: QFloat, D: Dimension>(
        &mut self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D>)> {
        const OP: &str = "FakeQuantize::forward_backward";
        same_shape(OP, x.shape(), dy.shape())?;
        let xf = to_f32(OP, x)?;
        let dyf = to_f32(OP, dy)?;
        let (y, mask) = self.step(OP, &xf)?;
        let dx = times_mask(&dyf, mask.as_ref());
        Ok((new_like(OP, x, &y)?, new_like(OP, x, &dx)?))
    }

    fn backward_f32<F: QFloat, D: Dimension>(
        &self,
        op: &'static str,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<ArrayD<f32>> {
        same_shape(op, x.shape(), dy.shape())?;
        let xf = to_f32(op, x)?;
        let dyf = to_f32(op, dy)?;
        if !self.fake_quant_enabled {
            return Ok(dyf);
        }
        let (_, m) = fake_quant_with_mask(
            op,
            &xf,
            self.spec(),
            self.ch_axis(),
            &self.scale,
            &self.zero_point,
        )?;
        Ok(times_mask(&dyf, Some(&m)))
    }

    /// One step on an `f32` input: `(y, mask)`; the state is committed only on success.
    pub(crate) fn step(
        &mut self,
        op: &'static str,
        x: &ArrayD<f32>,
    ) -> Result<(ArrayD<f32>, Option<ArrayD<f32>>)> {
        let mut observer = self.observer.clone();
        let (mut scale, mut zero_point) = (self.scale.clone(), self.zero_point.clone());
        if self.observer_enabled {
            observer.as_dyn().observe_view(x.view().into())?;
            let (s, z) = observer.qparams()?;
            scale = s;
            zero_point = z.iter().map(|&v| v as i32).collect();
        }
        let (y, mask) = if self.fake_quant_enabled {
            let (y, m) = fake_quant_with_mask(
                op,
                x,
                observer.spec(),
                observer.ch_axis(),
                &scale,
                &zero_point,
            )?;
            (y, Some(m))
        } else {
            (x.clone(), None)
        };
        self.observer = observer;
        self.scale = scale;
        self.zero_point = zero_point;
        Ok((y, mask))
    }
}
