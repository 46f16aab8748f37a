//! [`FusedMovingAvgObsFakeQuantize`] (`torch.fused_moving_avg_obs_fake_quant`) and ATen's
//! [`choose_quantization_params`].

use ndarray::{Array, ArrayD, ArrayRef, Dimension};

use super::fake_quantize::fake_quant_with_mask;
use super::util::{new_like, same_shape, times_mask, to_f32, write_back};
use crate::element::QFloat;
use crate::error::{QuantError, Result};
use crate::observers::reduce::{channel_min_max, check_averaging_constant, check_spec, min_max};
use crate::qparams::{QScheme, QSpec, resolve_axis};

/// ATen's (and FBGEMM's) small-scale cut-off, `f32(6.1e-5)`.
pub const SMALL_SCALE_THRESHOLD: f32 = 6.1e-5;

/// Parameters chosen by [`choose_quantization_params`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChosenQParams {
    /// The scale (`f32`, as stored by PyTorch).
    pub scale: f32,
    /// The zero point (in `qmin..=qmax`).
    pub zero_point: i32,
}

/// ATen's / FBGEMM's `ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity)`
/// (without power-of-two scales or `reduce_range`), bit for bit, in this order:
///
/// 1. `preserve_sparsity` and `min < 0 < max`: `sqmin = -((qmax - qmin) / 2 + 1)`,
///    `sqmax = (qmax - qmin) / 2`, `m = max(|f32(min / sqmin)|, |f32(max / sqmax)|)`,
///    `min = f32(m · sqmin)`, `max = f32(m · sqmax)`;
/// 2. `min = min(min, 0)`, `max = max(max, 0)` (so `+inf`/`-inf`, a never-observed range,
///    become 0 and 0);
/// 3. `scale = (f64(max) - min) / (qmax - qmin)` in `f64`; `0.1` if `f32(scale)` is 0 or its
///    `f32` reciprocal is infinite; below [`SMALL_SCALE_THRESHOLD`] it becomes the threshold
///    and min/max are stretched in `f32`;
/// 4. zero point from whichever of `qmin - min/scale`, `qmax - max/scale` (`f64`) has the
///    smaller error term, `(qmin + qmax) / 2` when symmetric with `min < 0 < max`, then
///    clamped to the range or rounded half to even.
///
/// Quirks this reproduces (PyTorch's reference is wrong there; qnumeric's own observers
/// are not): an all-zero range gives scale 0.1, with zero point `qmax` when `|qmax| < |qmin|`
/// (127 for `qint8`, from the `max` branch); `preserve_sparsity` with `min >= 0` or
/// `max <= 0` gives affine parameters (zero point `qmin` or `qmax`, scale range/255); the
/// symmetric scale is `max|.| / 127` for `qint8` (not `/ 127.5`); `(qmin + qmax) / 2 = -0.5`
/// rounds to 0 and `127.5` to 128.
///
/// The scale may be infinite for finite bounds whose width overflows `f32`; callers refuse
/// it. `min > max` is not checked (FBGEMM does not either).
///
/// # Examples
/// ```
/// use qnumeric::qat::choose_quantization_params;
/// // Never observed (+inf, -inf): scale 0.1, zero point 127 for qint8.
/// let p = choose_quantization_params(f32::INFINITY, f32::NEG_INFINITY, -128, 127, true);
/// assert_eq!((p.scale, p.zero_point), (0.1, 127));
/// // Symmetric qint8: max|.| / 127.
/// let p = choose_quantization_params(-1.0, 2.54, -128, 127, true);
/// assert_eq!((p.scale, p.zero_point), (0.02, 0));
/// ```
#[must_use]
pub fn choose_quantization_params(
    min: f32,
    max: f32,
    qmin: i32,
    qmax: i32,
    preserve_sparsity: bool,
) -> ChosenQParams {
    let (mut min, mut max) = (min, max);
    // Ranges are at most 2^32 wide: i64 keeps every difference exact.
    let (qmin64, qmax64) = (i64::from(qmin), i64::from(qmax));
    let width = qmax64 - qmin64;
    if min < 0.0 && max > 0.0 && preserve_sparsity {
        let sqmin = -(width / 2 + 1);
        let sqmax = width / 2;
        let m = f64::from((min / sqmin as f32).abs()).max(f64::from((max / sqmax as f32).abs()));
        min = (m * sqmin as f64) as f32;
        max = (m * sqmax as f64) as f32;
    }
    min = if 0.0 < min { 0.0 } else { min };
    max = if max < 0.0 { 0.0 } else { max };
    // `std::min(min, 0.f)` returns `min` unless `0 < min`: a NaN stays (and so on below).
    let mut scale = (f64::from(max) - f64::from(min)) / width as f64;
    if scale as f32 == 0.0 || (1.0f32 / scale as f32).is_infinite() {
        scale = 0.1;
    }
    if scale < f64::from(SMALL_SCALE_THRESHOLD) {
        let org_scale = scale as f32;
        scale = f64::from(SMALL_SCALE_THRESHOLD);
        if min == 0.0 {
            max = SMALL_SCALE_THRESHOLD * width as f32;
        } else if max == 0.0 {
            min = -SMALL_SCALE_THRESHOLD * width as f32;
        } else {
            let amplifier = SMALL_SCALE_THRESHOLD / org_scale;
            min *= amplifier;
            max *= amplifier;
        }
    }
    let from_min = qmin as f64 - f64::from(min) / scale;
    let from_max = qmax as f64 - f64::from(max) / scale;
    let err_min = (qmin as f64).abs() - (f64::from(min) / scale).abs();
    let err_max = (qmax as f64).abs() - (f64::from(max) / scale).abs();
    let mut z = if err_min < err_max {
        from_min
    } else {
        from_max
    };
    if min < 0.0 && max > 0.0 && preserve_sparsity {
        z = (qmin64 + qmax64) as f64 / 2.0;
    }
    let zero_point = if z < qmin as f64 {
        qmin
    } else if z > qmax as f64 {
        qmax
    } else {
        // In range (or NaN, which `as` maps to 0).
        z.round_ties_even() as i32
    };
    ChosenQParams {
        scale: scale as f32,
        zero_point,
    }
}

/// PyTorch's `FusedMovingAvgObsFakeQuantize` (the `torch.fused_moving_avg_obs_fake_quant`
/// op): the moving-average observer and the fake quantization in one op, as PyTorch's QAT
/// qconfigs use it (the x86 weight fake quant is this, per channel).
///
/// One [`FusedMovingAvgObsFakeQuantize::forward`]:
/// 1. per channel, empty running buffers are first resized to the channel count and filled
///    with `+inf`/`-inf` (whatever the switches);
/// 2. if the observer is enabled: each running value that is `±inf` takes the batch's value,
///    the others `r + f32(c)·(batch − r)` (three `f32` roundings, no FMA);
/// 3. if fake quantization is enabled: scale and zero point are **recomputed from the
///    running min/max at every step, observer enabled or not**, with
///    [`choose_quantization_params`] (`preserve_sparsity` for symmetric schemes), then `x`
///    is fake-quantized. If it is disabled, `y = x` and scale/zero point are not updated.
///
/// Consequences (PyTorch's behaviour, reproduced and documented in `docs/qat.md`): a first
/// step with the observer disabled uses scale 0.1 (zero point 0 for `quint8`, 127 for
/// `qint8`), where [`FakeQuantize`](super::FakeQuantize) uses scale 1; an all-zero
/// observation gives scale 0.1 too (not `eps`); a symmetric scheme whose running range is
/// one-sided gets affine parameters; scales differ from the observer's in the last bit
/// (computed in `f64`).
///
/// Per channel works on axis 0 only: with another axis, a step with the observer enabled
/// refuses ([`QuantError::UnsupportedConfig`], PyTorch's `RuntimeError`) **after** the
/// running buffers were resized (that part of the state is kept, as in PyTorch; scale and
/// zero point are not touched). Otherwise the module is unchanged on error.
///
/// Differences: an enabled observer refuses NaN/±inf and an empty input; a scale that
/// overflows `f32` is [`QuantError::RangeOverflow`] (PyTorch fake-quantizes with an
/// infinite scale).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::qat::FusedMovingAvgObsFakeQuantize;
/// use qnumeric::{QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8);
/// let mut fq = FusedMovingAvgObsFakeQuantize::per_tensor(spec, 0.01)?;
/// fq.enable_observer(false);
/// fq.forward(&array![1.0f32, 2.0])?; // never observed: ChooseQuantizationParams(0, 0)
/// assert_eq!((fq.scale(), fq.zero_point()), (&[0.1f32][..], &[127][..]));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FusedMovingAvgObsFakeQuantize {
    spec: QSpec,
    ch_axis: Option<isize>,
    averaging_constant: f32,
    min_val: Vec<f32>,
    max_val: Vec<f32>,
    scale: Vec<f32>,
    zero_point: Vec<i32>,
    observer_enabled: bool,
    fake_quant_enabled: bool,
}

impl FusedMovingAvgObsFakeQuantize {
    /// Per tensor (PyTorch's default observer `MovingAverageMinMaxObserver`): running
    /// min/max `[+inf]`/`[-inf]`, scale `[1.0]`, zero point `[0]`, both switches on.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme or a symmetric `quint8`
    /// spec with `reduce_range`; [`QuantError::InvalidParameter`] for an averaging constant
    /// outside `(0, 1]`.
    pub fn per_tensor(spec: QSpec, averaging_constant: f32) -> Result<Self> {
        Self::build(
            "FusedMovingAvgObsFakeQuantize::per_tensor",
            spec,
            None,
            averaging_constant,
        )
    }

    /// Per channel (`MovingAveragePerChannelMinMaxObserver`) along `ch_axis`: running
    /// buffers empty until the first step. Only axis 0 can observe (see the type's docs).
    ///
    /// # Errors
    /// As [`FusedMovingAvgObsFakeQuantize::per_tensor`], with a per-channel scheme with
    /// integer zero points required.
    pub fn per_channel(spec: QSpec, ch_axis: isize, averaging_constant: f32) -> Result<Self> {
        Self::build(
            "FusedMovingAvgObsFakeQuantize::per_channel",
            spec,
            Some(ch_axis),
            averaging_constant,
        )
    }

    /// The x86 QAT weight fake quant (`default_fused_per_channel_wt_fake_quant`): `qint8`,
    /// per-channel symmetric, range `-128..=127` given explicitly, axis 0, averaging constant
    /// 0.01.
    ///
    /// # Errors
    /// None in practice (the configuration is valid); the `Result` is the constructors'.
    pub fn x86_weight() -> Result<Self> {
        let spec = QSpec::new(QScheme::PerChannelSymmetric, crate::dtype::QDType::QInt8)
            .with_quant_range(-128, 127)?;
        Self::per_channel(spec, 0, 0.01)
    }

    fn build(op: &'static str, spec: QSpec, ch_axis: Option<isize>, c: f32) -> Result<Self> {
        check_spec(op, &spec, ch_axis.is_some(), true)?;
        check_averaging_constant(op, c)?;
        if spec.scheme() == QScheme::PerChannelAffineFloatQParams {
            return Err(QuantError::UnsupportedConfig {
                op,
                reason: "float zero points (per_channel_affine_float_qparams) are not supported",
            });
        }
        let (min_val, max_val) = match ch_axis {
            None => (vec![f32::INFINITY], vec![f32::NEG_INFINITY]),
            Some(_) => (Vec::new(), Vec::new()),
        };
        Ok(FusedMovingAvgObsFakeQuantize {
            spec,
            ch_axis,
            averaging_constant: c,
            min_val,
            max_val,
            scale: vec![1.0],
            zero_point: vec![0],
            observer_enabled: true,
            fake_quant_enabled: true,
        })
    }

    /// PyTorch's `enable_observer(on)`.
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

    /// The current scales.
    #[must_use]
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// The current zero points.
    #[must_use]
    pub fn zero_point(&self) -> &[i32] {
        &self.zero_point
    }

    /// The running minima (`[+inf]` before any data per tensor, `[]` per channel before the
    /// first step).
    #[must_use]
    pub fn min_val(&self) -> &[f32] {
        &self.min_val
    }

    /// The running maxima.
    #[must_use]
    pub fn max_val(&self) -> &[f32] {
        &self.max_val
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &QSpec {
        &self.spec
    }

    /// The channel axis (`None` per tensor).
    #[must_use]
    pub fn ch_axis(&self) -> Option<isize> {
        self.ch_axis
    }

    /// The averaging constant.
    #[must_use]
    pub fn averaging_constant(&self) -> f32 {
        self.averaging_constant
    }

    /// Sets the whole state (as PyTorch's buffers): running min/max, scale, zero point.
    /// Used to resume from a checkpoint or to replay a step from PyTorch's state.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] unless min/max have the same length and scale/zero
    /// point the same non-zero length (per tensor: one running value);
    /// [`QuantError::NanInput`] for a NaN running value.
    pub fn set_state(
        &mut self,
        min_val: Vec<f32>,
        max_val: Vec<f32>,
        scale: Vec<f32>,
        zero_point: Vec<i32>,
    ) -> Result<()> {
        const OP: &str = "FusedMovingAvgObsFakeQuantize::set_state";
        let lm = |what, expected, got| QuantError::LengthMismatch {
            op: OP,
            what,
            expected,
            got,
        };
        if max_val.len() != min_val.len() {
            return Err(lm("max_val", min_val.len(), max_val.len()));
        }
        if self.ch_axis.is_none() && min_val.len() != 1 {
            return Err(lm("min_val", 1, min_val.len()));
        }
        if scale.is_empty() || zero_point.len() != scale.len() {
            return Err(lm("zero_point", scale.len().max(1), zero_point.len()));
        }
        if let Some(i) = min_val.iter().chain(&max_val).position(|v| v.is_nan()) {
            return Err(QuantError::NanInput { op: OP, index: i });
        }
        self.min_val = min_val;
        self.max_val = max_val;
        self.scale = scale;
        self.zero_point = zero_point;
        Ok(())
    }

    /// One training-mode forward (see the type's docs).
    ///
    /// # Errors
    /// [`QuantError::EmptyInput`]; [`QuantError::InvalidAxis`]; an enabled observer with a
    /// channel axis other than 0 ([`QuantError::UnsupportedConfig`], after the resize); NaN /
    /// ±inf seen by the observer; a channel count that differs from the running buffers'
    /// ([`QuantError::LengthMismatch`]); an overflowing moving average or scale
    /// ([`QuantError::RangeOverflow`]); NaN reaching the fake quantization.
    pub fn forward<F: QFloat, D: Dimension>(&mut self, x: &ArrayRef<F, D>) -> Result<Array<F, D>> {
        const OP: &str = "FusedMovingAvgObsFakeQuantize::forward";
        let xf = to_f32(OP, x)?;
        let (y, _) = self.step(OP, &xf)?;
        new_like(OP, x, &y)
    }

    /// [`FusedMovingAvgObsFakeQuantize::forward`] into a caller's buffer.
    ///
    /// # Errors
    /// As [`FusedMovingAvgObsFakeQuantize::forward`], plus a shape mismatch of `out` (checked
    /// first).
    pub fn forward_into<F: QFloat, D: Dimension>(
        &mut self,
        x: &ArrayRef<F, D>,
        out: &mut ArrayRef<F, D>,
    ) -> Result<()> {
        const OP: &str = "FusedMovingAvgObsFakeQuantize::forward_into";
        same_shape(OP, x.shape(), out.shape())?;
        let xf = to_f32(OP, x)?;
        let (y, _) = self.step(OP, &xf)?;
        write_back(OP, &y, out)
    }

    /// Forward and the straight-through backward: `(y, dx)` with `dx = dy · mask` (PyTorch's
    /// cached mask; `dx = dy` when fake quantization is disabled).
    ///
    /// # Errors
    /// As [`FusedMovingAvgObsFakeQuantize::forward`], plus a shape mismatch of `dy`.
    pub fn forward_backward<F: QFloat, D: Dimension>(
        &mut self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<(Array<F, D>, Array<F, D>)> {
        const OP: &str = "FusedMovingAvgObsFakeQuantize::forward_backward";
        same_shape(OP, x.shape(), dy.shape())?;
        let xf = to_f32(OP, x)?;
        let dyf = to_f32(OP, dy)?;
        let (y, mask) = self.step(OP, &xf)?;
        let dx = times_mask(&dyf, mask.as_ref());
        Ok((new_like(OP, x, &y)?, new_like(OP, x, &dx)?))
    }

    /// The straight-through backward with the current parameters: `dx = dy · mask`.
    ///
    /// # Errors
    /// A shape mismatch of `dy`; as the fake quantization.
    pub fn backward<F: QFloat, D: Dimension>(
        &self,
        x: &ArrayRef<F, D>,
        dy: &ArrayRef<F, D>,
    ) -> Result<Array<F, D>> {
        const OP: &str = "FusedMovingAvgObsFakeQuantize::backward";
        same_shape(OP, x.shape(), dy.shape())?;
        let xf = to_f32(OP, x)?;
        let dyf = to_f32(OP, dy)?;
        let dx = if self.fake_quant_enabled {
            let (_, m) = fake_quant_with_mask(
                OP,
                &xf,
                &self.spec,
                self.ch_axis,
                &self.scale,
                &self.zero_point,
            )?;
            times_mask(&dyf, Some(&m))
        } else {
            dyf
        };
        new_like(OP, x, &dx)
    }

    /// One step on an `f32` input: `(y, mask)`.
    pub(crate) fn step(
        &mut self,
        op: &'static str,
        x: &ArrayD<f32>,
    ) -> Result<(ArrayD<f32>, Option<ArrayD<f32>>)> {
        let mut mins = self.min_val.clone();
        let mut maxs = self.max_val.clone();
        let batch = match self.ch_axis {
            Some(a) => {
                let axis = resolve_axis(op, a, x.ndim())?;
                let c = x.shape()[axis];
                if self.min_val.is_empty() {
                    // PyTorch resizes the buffers before anything else: kept even if the step
                    // fails below.
                    self.min_val = vec![f32::INFINITY; c];
                    self.max_val = vec![f32::NEG_INFINITY; c];
                    mins.clone_from(&self.min_val);
                    maxs.clone_from(&self.max_val);
                }
                if self.observer_enabled {
                    if axis != 0 {
                        return Err(QuantError::UnsupportedConfig {
                            op,
                            reason: "per-channel FakeQuant in fused_moving_avg_obs_fake_quant is only supported on axis 0",
                        });
                    }
                    if c != mins.len() {
                        return Err(QuantError::LengthMismatch {
                            op,
                            what: "channels of the input",
                            expected: mins.len(),
                            got: c,
                        });
                    }
                    Some(channel_min_max(op, &x.view(), axis)?)
                } else {
                    None
                }
            }
            None if self.observer_enabled => match min_max(op, &x.view())? {
                Some((a, b)) => Some((vec![a], vec![b])),
                None => return Err(QuantError::EmptyInput { op }),
            },
            None => None,
        };
        if let Some((bmin, bmax)) = batch {
            let c = self.averaging_constant;
            let fold = |r: f32, b: f32| if r.is_infinite() { b } else { r + c * (b - r) };
            for i in 0..mins.len() {
                mins[i] = fold(mins[i], bmin[i]);
                maxs[i] = fold(maxs[i], bmax[i]);
                if !(mins[i].is_finite() && maxs[i].is_finite()) {
                    return Err(QuantError::RangeOverflow {
                        op,
                        min: f64::from(bmin[i].min(self.min_val[i])),
                        max: f64::from(bmax[i].max(self.max_val[i])),
                    });
                }
            }
        }
        let (y, mask, qparams) = if self.fake_quant_enabled {
            let r = self.spec.range();
            let (qmin, qmax) = (r.quant_min(), r.quant_max());
            let (qmin, qmax) = match (i32::try_from(qmin), i32::try_from(qmax)) {
                (Ok(a), Ok(b)) => (a, b),
                _ => {
                    return Err(QuantError::UnsupportedConfig {
                        op,
                        reason: "the quantization range must fit in i32",
                    });
                }
            };
            let sym = self.spec.scheme().is_symmetric();
            let mut scale = Vec::with_capacity(mins.len());
            let mut zp = Vec::with_capacity(mins.len());
            for (&a, &b) in mins.iter().zip(&maxs) {
                let p = choose_quantization_params(a, b, qmin, qmax, sym);
                if !p.scale.is_finite() {
                    return Err(QuantError::RangeOverflow {
                        op,
                        min: f64::from(a),
                        max: f64::from(b),
                    });
                }
                scale.push(p.scale);
                zp.push(p.zero_point);
            }
            let (y, m) = fake_quant_with_mask(op, x, &self.spec, self.ch_axis, &scale, &zp)?;
            (y, Some(m), Some((scale, zp)))
        } else {
            (x.clone(), None, None)
        };
        self.min_val = mins;
        self.max_val = maxs;
        if let Some((s, z)) = qparams {
            self.scale = s;
            self.zero_point = z;
        }
        Ok((y, mask))
    }
}
