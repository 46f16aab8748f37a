//! A small model vocabulary: the [`Module`] trait callers implement for their own layers, the
//! [`Activation`]s that flow between layers (float or quantized, as in PyTorch), the [`Model`]
//! trait every graph implements (the crate's [`Sequential`] is one), and reference layers.
//!
//! | item | file | what it is |
//! |---|---|---|
//! | [`Activation`], [`WeightRef`] | `activation.rs` | `Float(ArrayD<f32>)` or `Quantized(QuantizedTensor<u8>)`; a layer's weight |
//! | [`Module`], [`LayerRole`], [`WeightedLayer`] | `module.rs` | one layer; what it is for fusion and PTQ |
//! | [`LayerGrads`] | `grad.rs` | what a layer's backward pass gives ([`Module::backward`]) |
//! | [`Model`], [`LayerHook`] | `model.rs` | any graph of named layers: enumerate, look up, replace, run with a hook |
//! | [`Sequential`] | `sequential.rs` | the crate's named sequential container |
//! | [`WeightedCore`] | `weighted.rs` | weight, bias and fused ReLU shared by the weighted layers |
//! | [`Linear`] | `linear.rs` | fully connected (`Linear` / `LinearReLU`) |
//! | [`Conv2d`], [`Conv1d`], [`ConvGeometry`], [`ConvGeometry1d`] | `conv.rs` | convolutions (stride, padding, dilation, groups) |
//! | [`BatchNorm`], [`BatchNormParams`] | `batch_norm.rs` | inference batch norm |
//! | [`ReLU`], [`ReLU6`] | `relu.rs` | activations (exact on quantized input) |
//! | [`MaxPool2d`], [`AvgPool2d`] | `pool.rs` | pooling (float or quantized) |
//! | [`Flatten`], [`Identity`] | `shape.rs` | shape layers (float or quantized) |
//! | [`QuantStub`], [`DeQuantStub`] | `stubs.rs` | where a model enters and leaves the quantized domain |
//! | [`Add`] | `add.rs` | two-input addition (residual blocks), through [`Module::forward_many`] |
//! | [`quantized`] | `quantized/` | integer layers: [`quantized::Quantize`], [`quantized::QuantizedConv2d`], [`quantized::QuantizedLinear`], ... |
//!
//! Nothing in the crate assumes a model is a [`Sequential`]: fusion, post-training
//! quantization ([`crate::ptq`]) and the comparison tools work on any [`Model`], and ask each
//! layer what it is through [`Module::role`].
//!
//! # Examples
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use qnumeric::nn::{Activation, Linear, Model, ReLU, Sequential};
//!
//! let fc = Linear::new(ArrayD::from_elem(IxDyn(&[2, 3]), 0.5), None)?;
//! let model = Sequential::new().with("fc", fc)?.with("relu", ReLU)?;
//! let y = model.forward(Activation::Float(ArrayD::from_elem(IxDyn(&[1, 3]), 1.0)))?;
//! assert_eq!(y.as_float()?.as_slice(), Some(&[1.5f32, 1.5][..]));
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

mod activation;
mod add;
mod backward;
mod batch_norm;
pub(crate) mod conv;
pub(crate) mod geometry;
mod grad;
pub(crate) mod linear;
mod model;
pub(crate) mod module;
mod pool;
pub mod quantized;
mod relu;
mod sequential;
pub(crate) mod sgemm;
pub(crate) mod shape;
mod stubs;
pub(crate) mod weighted;

pub use activation::{Activation, WeightRef};
pub use add::Add;
pub use batch_norm::{BatchNorm, BatchNormParams};
pub use conv::{Conv1d, Conv2d, ConvGeometry, ConvGeometry1d};
pub use grad::LayerGrads;
pub use linear::Linear;
pub use model::{LayerHook, Model, NoHook};
pub use module::{LayerRole, Module, ModuleClone, WeightedKind, WeightedLayer};
pub use pool::{AvgPool2d, MaxPool2d};
pub use relu::{ReLU, ReLU6};
pub use sequential::Sequential;
pub use shape::{Flatten, Identity, MAX_ELEMENTS};
pub use stubs::{DeQuantStub, QuantStub};
pub use weighted::WeightedCore;
