//! Post-training static quantization: [`prepare`] (observers attached), calibrate (run data
//! through [`Prepared::calibrate`]), [`Prepared::convert`] (quantized layers built from the
//! float layers and the observers' parameters) — PyTorch's eager workflow, on any [`Model`](crate::nn::Model).
//!
//! | item | what it is |
//! |---|---|
//! | [`QConfig`] | prototype activation and weight observers and the int8 accumulation ([`QConfig::x86_default`]: PyTorch's `x86` qconfig) |
//! | [`PtqConfig`] | the default [`QConfig`] and per-layer overrides ([`LayerOverride::KeepFloat`], another [`QConfig`]) |
//! | [`prepare`] | plans the conversion and attaches one activation observer per layer that needs output parameters |
//! | [`Prepared`] | the model under calibration: [`Prepared::calibrate`], [`Prepared::convert`] |
//! | [`quantize_dynamic`] | replaces `Linear` layers by [`DynamicQuantizedLinear`](crate::nn::quantized::DynamicQuantizedLinear) |
//!
//! The quantized domain starts at a [`QuantStub`](crate::nn::QuantStub) and ends at a [`DeQuantStub`](crate::nn::DeQuantStub) (in the order
//! the model runs its layers); layers outside it stay float. Inside it:
//!
//! | float layer | observed | converted to |
//! |---|---|---|
//! | `QuantStub` | output | [`Quantize`](crate::nn::quantized::Quantize) |
//! | `DeQuantStub` | – | [`DeQuantize`](crate::nn::quantized::DeQuantize) |
//! | `Conv1d` / `Conv2d` (+ReLU) | output, weight | [`QuantizedConv1d`](crate::nn::quantized::QuantizedConv1d) / [`QuantizedConv2d`](crate::nn::quantized::QuantizedConv2d) |
//! | `Linear` / `LinearReLU` | output, weight | [`QuantizedLinear`](crate::nn::quantized::QuantizedLinear) |
//! | `Add` | output | [`QuantizedAdd`](crate::nn::quantized::QuantizedAdd) |
//! | `ReLU`, `ReLU6`, `MaxPool2d`, `AvgPool2d`, `Flatten`, `Identity` | – | unchanged (they run on quantized activations) |
//! | anything else, and layers kept in float | output | [`FloatIsland`]: dequantize → float layer → quantize |
//!
//! Which row a layer falls in is its [`LayerRole`](crate::nn::LayerRole), so a caller's own
//! layers take part by implementing [`Module::role`](crate::nn::Module::role).
//!
//! | file | what it holds |
//! |---|---|
//! | `config.rs` | [`QConfig`], [`PtqConfig`], [`LayerOverride`] |
//! | `prepare.rs` | [`prepare`], [`Prepared`], [`LayerPlan`] |
//! | `island.rs` | [`FloatIsland`] |
//! | `dynamic.rs` | [`quantize_dynamic`] |
//!
//! # Examples
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use qnumeric::nn::{Activation, Linear, Model, Sequential};
//! use qnumeric::ptq::{prepare, PtqConfig};
//!
//! let w = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] as f32 - i[1] as f32) * 0.1);
//! let model = Sequential::new().with("fc", Linear::new(w, None)?)?.with_quant_stubs()?;
//! let mut prepared = prepare(model, &PtqConfig::default())?;
//! let x = ArrayD::from_shape_fn(IxDyn(&[8, 4]), |i| (i[0] * 4 + i[1]) as f32 / 32.0);
//! prepared.calibrate(&x)?;
//! let int8 = prepared.convert()?;
//! assert_eq!(int8.layer("fc").map(|l| l.kind()), Some("QuantizedLinear"));
//! let y = int8.forward(Activation::Float(x))?;
//! assert_eq!(y.shape(), &[8, 3]);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

mod config;
mod dynamic;
mod island;
pub(crate) mod prepare;

pub use config::{Conversion, LayerOverride, PtqConfig, QConfig};
pub use dynamic::quantize_dynamic;
pub use island::FloatIsland;
pub use prepare::{LayerPlan, Prepared, prepare};
