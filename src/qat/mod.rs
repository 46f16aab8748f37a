//! Quantization-aware training: PyTorch's fake-quant modules and QAT layers, bit-exact where
//! PyTorch's results are determined by their inputs, with their backward passes and the SGD
//! step.
//!
//! | item | PyTorch | what it is |
//! |---|---|---|
//! | [`FakeQuantize`] | `torch.ao.quantization.FakeQuantize` | moving-average observer + fake quantization, per tensor or per channel |
//! | [`FusedMovingAvgObsFakeQuantize`] | `FusedMovingAvgObsFakeQuantize` (`torch.fused_moving_avg_obs_fake_quant`) | the fused op of the QAT qconfigs, parameters from [`choose_quantization_params`] |
//! | [`LearnableFakeQuantize`] | `_LearnableFakeQuantize` | LSQ: learned scale and zero point, with their gradients |
//! | [`ConvBn2d`] | `torch.ao.nn.intrinsic.qat.ConvBn2d` / `ConvBnReLU2d` | Conv + BatchNorm folded for QAT (`_forward_approximate`) |
//! | [`Linear`] | `torch.ao.nn.qat.Linear` | Linear with a fake-quantized weight, backward and SGD |
//! | [`QatAction`] | `freeze_bn_stats`, `disable_observer`, `eval`, ... | the switches of QAT modules |
//! | [`QatConfig`], [`prepare_qat`], [`QatModel`] | `prepare_qat`, `convert` | eager QAT on any [`Model`](crate::nn::Model): fake quants per the config, training, the int8 model |
//! | [`QatModel::fine_tune`], [`QatSchedule`], [`QatObjective`], [`QatRun`] | a QAT training loop | a few epochs of Adam on the caller's data (labels or distillation from the float model), within a time budget |
//! | [`QatConvBn`] | `ConvBn2d` / `ConvBnReLU2d` made by `fuse_modules_qat` + `prepare_qat` | a Conv2d-BatchNorm(-ReLU) kept unfolded in training, folded by `convert` |
//! | [`QatLayer`] | a module with `weight_fake_quant` / `activation_post_process` | one prepared layer: forward with fake quantization, straight-through backward |
//! | [`sgd_step`], [`SgdMomentum`] | `torch.optim.SGD` | plain and momentum SGD (`p = fma(−lr, g, p)`) |
//!
//! Every module computes in `f32` as PyTorch does (inputs of the fake-quant modules may be
//! `f32`, `f64`, `f16` or `bf16`: they are converted to `f32` first); a step that fails leaves
//! the module unchanged (one exception, PyTorch's: see
//! [`FusedMovingAvgObsFakeQuantize`]'s axis rule). With the `serde` feature every module's
//! state (observer buffers, scales, zero points, BatchNorm statistics, switches) serializes.
//!
//! The PyTorch behaviours reproduced, the quirks of PyTorch's reference and where qnumeric
//! refuses instead: `docs/qat.md`.
//!
//! # Examples
//! ```
//! use ndarray::array;
//! use qnumeric::qat::{FakeQuantize, FusedMovingAvgObsFakeQuantize};
//! use qnumeric::{QDType, QScheme, QSpec};
//!
//! let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
//! let mut unfused = FakeQuantize::per_tensor(spec, 0.01)?;
//! let mut fused = FusedMovingAvgObsFakeQuantize::per_tensor(spec, 0.01)?;
//! let x = array![-1.0f32, 0.5, 3.0];
//! let (y, dx) = unfused.forward_backward(&x, &array![1.0f32, 1.0, 1.0])?;
//! let y2 = fused.forward(&x)?;
//! assert_eq!(unfused.zero_point(), fused.zero_point());
//! # let _ = (y, dx, y2);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

mod conv_bn;
mod conv_bn_layer;
mod fake_quantize;
mod fine_tune;
mod fused;
mod layer;
mod learnable;
mod linear;
mod prepare;
mod sgd;
mod util;

pub use conv_bn::{ConvBn2d, ConvBnStep, QatAction};
pub use conv_bn_layer::QatConvBn;
pub use fake_quantize::FakeQuantize;
pub use fine_tune::{QatObjective, QatRun, QatSchedule};
pub use fused::{
    ChosenQParams, FusedMovingAvgObsFakeQuantize, SMALL_SCALE_THRESHOLD, choose_quantization_params,
};
pub use layer::QatLayer;
pub use learnable::{LearnableFakeQuantize, LsqStep};
pub use linear::{Linear, LinearStep};
pub use prepare::{QatConfig, QatModel, is_qat_layer, prepare_qat};
pub use sgd::{SgdMomentum, sgd_step};
