//! [`ConvBn2d`]: PyTorch's `torch.ao.nn.intrinsic.qat.ConvBn2d` / `ConvBnReLU2d` with the x86
//! QAT weight fake quant, and the [`QatAction`]s that switch QAT modules.

use ndarray::{ArrayD, IxDyn};

use super::fused::FusedMovingAvgObsFakeQuantize;
use crate::error::{QuantError, Result};
use crate::nn::conv::ConvShape;
use crate::nn::{BatchNormParams, ConvGeometry};

/// The switches of PyTorch's QAT modules, as its helpers apply them (`torch.ao.quantization`
/// `disable_observer`, `freeze_bn_stats`, `module.eval()`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum QatAction {
    /// `freeze_bn_stats`: BatchNorm uses (and keeps) its running statistics.
    FreezeBnStats,
    /// `update_bn_stats`: BatchNorm uses batch statistics again and updates its running ones.
    UpdateBnStats,
    /// `disable_observer` on every fake-quant submodule.
    DisableObserver,
    /// `enable_observer`.
    EnableObserver,
    /// `disable_fake_quant`.
    DisableFakeQuant,
    /// `enable_fake_quant`.
    EnableFakeQuant,
    /// `module.eval()` (a frozen BatchNorm stays frozen; the weight observer keeps running).
    Eval,
    /// `module.train()` (does not unfreeze a frozen BatchNorm).
    Train,
}

impl QatAction {
    /// PyTorch's name (`"freeze_bn_stats"`, `"eval"`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            QatAction::FreezeBnStats => "freeze_bn_stats",
            QatAction::UpdateBnStats => "update_bn_stats",
            QatAction::DisableObserver => "disable_observer",
            QatAction::EnableObserver => "enable_observer",
            QatAction::DisableFakeQuant => "disable_fake_quant",
            QatAction::EnableFakeQuant => "enable_fake_quant",
            QatAction::Eval => "eval",
            QatAction::Train => "train",
        }
    }

    /// The action named `name`.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] for an unknown name.
    pub fn from_name(name: &str) -> Result<Self> {
        [
            QatAction::FreezeBnStats,
            QatAction::UpdateBnStats,
            QatAction::DisableObserver,
            QatAction::EnableObserver,
            QatAction::DisableFakeQuant,
            QatAction::EnableFakeQuant,
            QatAction::Eval,
            QatAction::Train,
        ]
        .into_iter()
        .find(|a| a.name() == name)
        .ok_or_else(|| QuantError::NotFound {
            op: "QatAction::from_name",
            what: "QAT action",
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for QatAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one [`ConvBn2d::forward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBnStep {
    /// The output `[N, out_channels, oh, ow]`.
    pub y: ArrayD<f32>,
    /// The fake-quantized folded weight the convolution used.
    pub weight_fq: ArrayD<f32>,
    /// Whether BatchNorm used the batch statistics (and updated its running ones).
    pub bn_training: bool,
}

/// PyTorch's QAT `ConvBn2d` / `ConvBnReLU2d` (`torch.ao.nn.intrinsic.qat`), forward as
/// `_forward_approximate`, in training and in eval mode alike:
/// 1. `running_std = sqrt(running_var + eps)`, `sf = bn_weight / running_std` (`f32`, with the
///    running statistics **before** this step's update);
/// 2. `weight_fq = weight_fake_quant(weight · sf[o])`: the x86 QAT weight fake quant
///    ([`FusedMovingAvgObsFakeQuantize::x86_weight`]: `qint8`, per-channel symmetric, axis 0,
///    averaging constant 0.01), which observes the folded weight whenever its observer is
///    enabled, in `eval()` too;
/// 3. `conv2d(x, weight_fq)` (no bias), divided by `sf[o]`, plus `bias[o]` when there is one;
/// 4. BatchNorm2d: in training (not frozen) with the batch mean and biased variance over
///    `(N, H, W)`, the running statistics becoming `(1 − momentum)·running + momentum·batch`
///    with the **unbiased** variance; frozen ([`QatAction::FreezeBnStats`]) or in eval, with
///    the running statistics, left unchanged; then ReLU for `ConvBnReLU2d`.
///
/// The convolution accumulates in `f64` and rounds once; PyTorch's kernels accumulate in
/// `f32` in their own order, so `y` and the running statistics may differ from PyTorch's in
/// the last bits (the golden cases carry a tolerance there). `weight_fq` and the weight
/// fake-quant state are bit-exact.
///
/// Refused (PyTorch computes inf/NaN or raises): `bn_weight / running_std` zero or
/// non-finite, one value per channel in training (`N·oh·ow == 1`), NaN in the input. On any
/// error the module is unchanged.
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::nn::{BatchNormParams, ConvGeometry};
/// use qnumeric::qat::{ConvBn2d, QatAction};
///
/// let bn = BatchNormParams {
///     running_mean: vec![0.0],
///     running_var: vec![1.0],
///     weight: Some(vec![1.0]),
///     bias: Some(vec![0.0]),
///     eps: 1e-5,
/// };
/// let w = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 1]), vec![0.5f32]).unwrap();
/// let mut m = ConvBn2d::new(w, None, ConvGeometry::default(), bn, 0.1)?;
/// let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 2]), vec![1.0f32, 3.0]).unwrap();
/// let step = m.forward(&x)?;
/// assert!(step.bn_training);
/// // Batch-normalized: mean 0, the two values at ±1.
/// assert!((step.y[[0, 0, 0, 1]] - 1.0).abs() < 1e-3);
/// m.apply(QatAction::FreezeBnStats);
/// assert!(!m.forward(&x)?.bn_training);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvBn2d {
    weight_shape: [usize; 4],
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    geo: ConvGeometry,
    bn_weight: Vec<f32>,
    bn_bias: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    eps: f64,
    momentum: f64,
    relu: bool,
    weight_fake_quant: FusedMovingAvgObsFakeQuantize,
    training: bool,
    freeze_bn: bool,
    bn_training: bool,
}

impl ConvBn2d {
    /// A module in training mode, BatchNorm not frozen, with the x86 weight fake quant.
    /// `weight` is `[out, in/groups, kh, kw]`; `bn` holds the BatchNorm's running statistics,
    /// affine parameters (`None` means 1 and 0) and `eps`; `momentum` is BatchNorm's (PyTorch's
    /// default 0.1).
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 4-D;
    /// [`QuantError::LengthMismatch`] for a bias or BatchNorm list of another length than
    /// `out`; BatchNorm's own checks ([`BatchNormParams::validate`]); geometry errors;
    /// [`QuantError::InvalidParameter`] for a momentum outside `[0, 1]`.
    pub fn new(
        weight: ArrayD<f32>,
        bias: Option<Vec<f32>>,
        geo: ConvGeometry,
        bn: BatchNormParams,
        momentum: f64,
    ) -> Result<Self> {
        let op: &'static str = "ConvBn2d::new";
        let &[o, c, kh, kw] = weight.shape() else {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: vec![0; 4],
                got: weight.shape().to_vec(),
            });
        };
        geo.check(op, o)?;
        bn.validate(op)?;
        if bn.num_features() != o {
            return Err(QuantError::LengthMismatch {
                op,
                what: "BatchNorm channels",
                expected: o,
                got: bn.num_features(),
            });
        }
        if let Some(b) = &bias
            && b.len() != o
        {
            return Err(QuantError::LengthMismatch {
                op,
                what: "bias",
                expected: o,
                got: b.len(),
            });
        }
        if !(0.0..=1.0).contains(&momentum) {
            return Err(QuantError::InvalidParameter {
                op,
                what: "momentum",
                value: momentum,
                reason: "must lie in [0, 1]",
            });
        }
        if let Some(&v) = weight
            .iter()
            .chain(bias.iter().flatten())
            .find(|v| !v.is_finite())
        {
            return Err(QuantError::NonFinite {
                op,
                what: "weight or bias",
                value: f64::from(v),
            });
        }
        Ok(ConvBn2d {
            weight_shape: [o, c, kh, kw],
            weight: weight.iter().copied().collect(),
            bias,
            geo,
            bn_weight: bn.weight.unwrap_or_else(|| vec![1.0; o]),
            bn_bias: bn.bias.unwrap_or_else(|| vec![0.0; o]),
            running_mean: bn.running_mean,
            running_var: bn.running_var,
            eps: bn.eps,
            momentum,
            relu: false,
            weight_fake_quant: FusedMovingAvgObsFakeQuantize::x86_weight()?,
            training: true,
            freeze_bn: false,
            bn_training: true,
        })
    }

    /// The `ConvBnReLU2d` variant (ReLU after BatchNorm).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Replaces the weight fake quant (the x86 one by default).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] unless it is per channel on axis 0.
    pub fn with_weight_fake_quant(mut self, fq: FusedMovingAvgObsFakeQuantize) -> Result<Self> {
        if fq.ch_axis() != Some(0) {
            return Err(QuantError::UnsupportedConfig {
                op: "ConvBn2d::with_weight_fake_quant",
                reason: "the weight fake quant must be per channel on axis 0",
            });
        }
        self.weight_fake_quant = fq;
        Ok(self)
    }

    /// PyTorch's class name: `"ConvBn2d"` or `"ConvBnReLU2d"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        if self.relu {
            "ConvBnReLU2d"
        } else {
            "ConvBn2d"
        }
    }

    /// Applies a switch (see [`QatAction`]).
    pub fn apply(&mut self, action: QatAction) {
        match action {
            QatAction::FreezeBnStats => {
                self.freeze_bn = true;
                self.bn_training = false;
            }
            QatAction::UpdateBnStats => {
                self.freeze_bn = false;
                self.bn_training = true;
            }
            QatAction::DisableObserver => self.weight_fake_quant.enable_observer(false),
            QatAction::EnableObserver => self.weight_fake_quant.enable_observer(true),
            QatAction::DisableFakeQuant => self.weight_fake_quant.enable_fake_quant(false),
            QatAction::EnableFakeQuant => self.weight_fake_quant.enable_fake_quant(true),
            QatAction::Eval | QatAction::Train => {
                let mode = action == QatAction::Train;
                self.training = mode;
                if !self.freeze_bn {
                    self.bn_training = mode;
                }
            }
        }
    }

    /// Whether the module is in training mode.
    #[must_use]
    pub fn training(&self) -> bool {
        self.training
    }

    /// Whether BatchNorm is frozen.
    #[must_use]
    pub fn bn_frozen(&self) -> bool {
        self.freeze_bn
    }

    /// Whether the next forward uses batch statistics.
    #[must_use]
    pub fn bn_training(&self) -> bool {
        self.bn_training
    }

    /// The (unfolded) weight.
    ///
    /// # Errors
    /// None in practice (the shape is checked at construction).
    pub fn weight(&self) -> Result<ArrayD<f32>> {
        ArrayD::from_shape_vec(IxDyn(&self.weight_shape), self.weight.clone()).map_err(|_| {
            QuantError::ShapeMismatch {
                op: "ConvBn2d::weight",
                expected: self.weight_shape.to_vec(),
                got: vec![self.weight.len()],
            }
        })
    }

    /// The conv bias.
    #[must_use]
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// BatchNorm's running mean.
    #[must_use]
    pub fn running_mean(&self) -> &[f32] {
        &self.running_mean
    }

    /// BatchNorm's running variance.
    #[must_use]
    pub fn running_var(&self) -> &[f32] {
        &self.running_var
    }

    /// Sets BatchNorm's running statistics (to resume, or to replay PyTorch's state).
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`]; BatchNorm's checks ([`BatchNormParams::validate`]).
    pub fn set_running_stats(&mut self, mean: Vec<f32>, var: Vec<f32>) -> Result<()> {
        let bn = BatchNormParams {
            running_mean: mean,
            running_var: var,
            weight: Some(self.bn_weight.clone()),
            bias: Some(self.bn_bias.clone()),
            eps: self.eps,
        };
        bn.validate("ConvBn2d::set_running_stats")?;
        if bn.num_features() != self.weight_shape[0] {
            return Err(QuantError::LengthMismatch {
                op: "ConvBn2d::set_running_stats",
                what: "running_mean",
                expected: self.weight_shape[0],
                got: bn.num_features(),
            });
        }
        self.running_mean = bn.running_mean;
        self.running_var = bn.running_var;
        Ok(())
    }

    /// The weight fake quant.
    #[must_use]
    pub fn weight_fake_quant(&self) -> &FusedMovingAvgObsFakeQuantize {
        &self.weight_fake_quant
    }

    /// The weight fake quant, mutable (switches, state).
    pub fn weight_fake_quant_mut(&mut self) -> &mut FusedMovingAvgObsFakeQuantize {
        &mut self.weight_fake_quant
    }

    /// One forward (see the type's docs) on `x` `[N, C, H, W]`.
    ///
    /// # Errors
    /// Shape and geometry errors of the convolution ([`QuantError::ShapeMismatch`],
    /// [`QuantError::LengthMismatch`], [`QuantError::TooLarge`]); [`QuantError::NanInput`];
    /// [`QuantError::InvalidParameter`] for a zero or non-finite `bn_weight / running_std`,
    /// or a training step with one value per channel; the weight fake quant's errors. The
    /// module is unchanged on error.
    pub fn forward(&mut self, x: &ArrayD<f32>) -> Result<ConvBnStep> {
        let std = self.running_std();
        self.forward_impl("ConvBn2d::forward", x, &std)
    }

    /// `sqrt(running_var + f32(eps))` per channel, correctly rounded: the folding's
    /// `running_std`.
    #[must_use]
    pub fn running_std(&self) -> Vec<f32> {
        let eps = self.eps as f32;
        self.running_var.iter().map(|&v| (v + eps).sqrt()).collect()
    }

    /// [`ConvBn2d::forward`] with the folding's `running_std` given (one per output
    /// channel) instead of computed. PyTorch's `torch.sqrt` goes through a vectorized math
    /// library (MKL's VML on x86 builds) that is not always correctly rounded: on rare
    /// variances it returns the `f32` neighbour of the correctly rounded square root, and the
    /// folded weight, its observer and its fake quantization all follow. A replay of such a
    /// step passes PyTorch's value here; [`ConvBn2d::running_std`] is the correctly rounded
    /// one.
    ///
    /// # Errors
    /// As [`ConvBn2d::forward`], plus [`QuantError::LengthMismatch`] for a list of another
    /// length than the output channels.
    pub fn forward_with_running_std(
        &mut self,
        x: &ArrayD<f32>,
        running_std: &[f32],
    ) -> Result<ConvBnStep> {
        self.forward_impl("ConvBn2d::forward_with_running_std", x, running_std)
    }

    fn forward_impl(
        &mut self,
        op: &'static str,
        x: &ArrayD<f32>,
        running_std: &[f32],
    ) -> Result<ConvBnStep> {
        let s = ConvShape::new(op, x.shape(), &self.weight_shape, self.geo)?;
        if let Some(i) = x.iter().position(|v| v.is_nan()) {
            return Err(QuantError::NanInput { op, index: i });
        }
        let o = s.c_out;
        if running_std.len() != o {
            return Err(QuantError::LengthMismatch {
                op,
                what: "running_std",
                expected: o,
                got: running_std.len(),
            });
        }
        let eps = self.eps as f32;
        let mut sf = Vec::with_capacity(o);
        for (&w, &std) in self.bn_weight.iter().zip(running_std) {
            let v = w / std;
            if !(v.is_finite() && v != 0.0) {
                return Err(QuantError::InvalidParameter {
                    op,
                    what: "bn_weight / running_std",
                    value: f64::from(v),
                    reason: "must be finite and non-zero (the convolution is divided by it)",
                });
            }
            sf.push(v);
        }
        let per_out = self.weight.len() / o.max(1);
        let scaled: Vec<f32> = self
            .weight
            .iter()
            .enumerate()
            .map(|(i, &w)| w * sf[i / per_out.max(1)])
            .collect();
        let scaled = ArrayD::from_shape_vec(IxDyn(&self.weight_shape), scaled).map_err(|_| {
            QuantError::ShapeMismatch {
                op,
                expected: self.weight_shape.to_vec(),
                got: vec![],
            }
        })?;
        let mut fq = self.weight_fake_quant.clone();
        let (weight_fq, _) = fq.step(op, &scaled)?;
        let xs = x.as_standard_layout();
        let xd: Vec<f32> = xs.iter().copied().collect();
        let wd: Vec<f32> = weight_fq.iter().copied().collect();
        let mut conv = conv2d_f64(&s, &xd, &wd);
        let l = s.positions();
        for (i, v) in conv.iter_mut().enumerate() {
            let c = (i / l) % o;
            *v /= sf[c];
            if let Some(b) = &self.bias {
                *v += b[c];
            }
        }
        let count = s.n * l;
        let (mut rm, mut rv) = (self.running_mean.clone(), self.running_var.clone());
        let (mut alpha, mut beta) = (vec![0.0f32; o], vec![0.0f32; o]);
        if self.bn_training {
            if count <= 1 {
                return Err(QuantError::InvalidParameter {
                    op,
                    what: "values per channel",
                    value: count as f64,
                    reason: "BatchNorm in training needs more than one value per channel",
                });
            }
            let m = self.momentum;
            for c in 0..o {
                let vals = || {
                    (0..s.n).flat_map(move |n| {
                        let base = (n * o + c) * l;
                        base..base + l
                    })
                };
                let mean = vals().map(|i| f64::from(conv[i])).sum::<f64>() / count as f64;
                let var_sum: f64 = vals().map(|i| (f64::from(conv[i]) - mean).powi(2)).sum();
                let invstd = (1.0 / (var_sum / count as f64 + self.eps).sqrt()) as f32;
                let mean32 = mean as f32;
                alpha[c] = invstd * self.bn_weight[c];
                beta[c] = self.bn_bias[c] - mean32 * alpha[c];
                let unbiased = var_sum / (count - 1) as f64;
                rm[c] = (m * mean + (1.0 - m) * f64::from(rm[c])) as f32;
                rv[c] = (m * unbiased + (1.0 - m) * f64::from(rv[c])) as f32;
            }
        } else {
            for c in 0..o {
                let invstd = 1.0f32 / (self.running_var[c] + eps).sqrt();
                alpha[c] = invstd * self.bn_weight[c];
                beta[c] = self.bn_bias[c] - self.running_mean[c] * alpha[c];
            }
        }
        for (i, v) in conv.iter_mut().enumerate() {
            let c = (i / l) % o;
            *v = *v * alpha[c] + beta[c];
            if self.relu && *v < 0.0 {
                *v = 0.0;
            }
        }
        let y = ArrayD::from_shape_vec(IxDyn(&[s.n, o, s.oh, s.ow]), conv).map_err(|_| {
            QuantError::ShapeMismatch {
                op,
                expected: vec![s.n, o, s.oh, s.ow],
                got: vec![],
            }
        })?;
        if rm.iter().chain(&rv).any(|v| !v.is_finite()) {
            return Err(QuantError::RangeOverflow {
                op,
                min: f64::from(f32::MIN),
                max: f64::from(f32::MAX),
            });
        }
        let bn_training = self.bn_training;
        self.weight_fake_quant = fq;
        self.running_mean = rm;
        self.running_var = rv;
        Ok(ConvBnStep {
            y,
            weight_fq,
            bn_training,
        })
    }
}

/// Direct convolution (no bias), each output accumulated in `f64` and rounded once.
/// `x` is `[N, C, H, W]` and `w` `[O, C/groups, kh, kw]`, both standard layout, checked by
/// `s`.
pub(crate) fn conv2d_f64(s: &ConvShape, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (cg, og) = (s.cg(), s.og());
    let [sh, sw] = s.geo.stride;
    let [ph, pw] = s.geo.padding;
    let [dh, dw] = s.geo.dilation;
    let mut out = vec![0.0f32; s.n * s.c_out * s.oh * s.ow];
    let mut idx = 0;
    for n in 0..s.n {
        for o in 0..s.c_out {
            let g = o / og.max(1);
            for oy in 0..s.oh {
                for ox in 0..s.ow {
                    let mut acc = 0.0f64;
                    for ci in 0..cg {
                        let plane = (n * s.c_in + g * cg + ci) * s.h * s.w;
                        for ky in 0..s.kh {
                            let Some(iy) = (oy * sh + ky * dh).checked_sub(ph).filter(|&v| v < s.h)
                            else {
                                continue;
                            };
                            for kx in 0..s.kw {
                                let Some(ix) =
                                    (ox * sw + kx * dw).checked_sub(pw).filter(|&v| v < s.w)
                                else {
                                    continue;
                                };
                                let wv = w[((o * cg + ci) * s.kh + ky) * s.kw + kx];
                                acc += f64::from(x[plane + iy * s.w + ix]) * f64::from(wv);
                            }
                        }
                    }
                    out[idx] = acc as f32;
                    idx += 1;
                }
            }
        }
    }
    out
}
