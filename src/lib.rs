//! # qnumeric
//!
//! Find and fix quantization accuracy errors: pick quantization parameters, simulate
//! quantization, and find where and why a quantized model drifts from its float original.
//! Bit-compatible with PyTorch's `torch.ao.quantization` where PyTorch is right, correct where
//! it is not.
//!
//! | module | what it holds |
//! |---|---|
//! | [`dtype`] | [`QDType`] (quint8, qint8, qint32, 4- and 16-bit) and validated [`QRange`]s |
//! | [`qparams`] | [`QScheme`], [`QParams`], [`PerChannelQParams`], [`QSpec`] (min/max → parameters) |
//! | [`kernels`] | quantize, dequantize, fake-quantize (+ backward), learnable fake-quantize |
//! | [`tensor`] | [`QuantizedTensor`]: integer data with its parameters |
//! | [`metrics`] | SQNR, normalized L2 error, cosine similarity, MSE, max abs error |
//! | [`observers`] | the [`Observer`] trait; PyTorch's observers (min-max, moving average, per channel, histogram, fixed, dynamic) and percentile / entropy / MSE calibrators, [`observers::compare_calibrators`] |
//! | [`nn`] | the `Module` and `Model` traits, `LayerRole`, float and int8 layers (exact and x86 AVX2 accumulation) |
//! | [`ns`] | the Numeric Suite: cumulative, local and weight comparison, per sample, streamed; reports |
//! | [`formats`] | float8, MX, NVFP4, group-wise int4, NF4 and GGML blocks: encode, decode, fake-quantize, bit-exact with their references |
//! | [`diagnose`] | verdicts (data-insensitive, data-sensitive, implementation) with evidence, measured remedies, sensitivity, mixed precision, kernel check, calibration audit, HTML report |
//! | [`simulate`] | float models with per-layer weight and activation formats ([`simulate::FormatLayer`]), for the Numeric Suite and the diagnosis |
//! | [`classify`] | classifier read-outs: `argmax_rows`, `accuracy` |
//! | [`fusion`] | Conv/Linear + BatchNorm folding, module fusion by names or automatic |
//! | [`ptq`] | post-training quantization: config, prepare, calibrate, convert |
//! | [`qat`] | quantization-aware training: FakeQuantize, the fused and learnable (LSQ) fake quants, QAT ConvBn2d and Linear, SGD; `prepare_qat` / `fine_tune` / `convert` on any model |
//! | [`train`] | backward passes through any model (a tape), losses, SGD and Adam: what QAT fine-tuning runs on |
//! | `state_dict` | `.safetensors` state dicts (feature `safetensors`) |
//! | `conformance` | the harness that runs PyTorch golden cases (JSON lines; feature `conformance`) |
//! | [`element`] | the float ([`QFloat`]) and integer ([`QInt`]) element types |
//! | [`error`] | [`QuantError`] and [`Result`] |
//! | [`rng`] | [`rng::Lcg`], the deterministic generator of reproducible test cases |
//!
//! ## Quick start
//! ```
//! use ndarray::array;
//! use qnumeric::{dequantize, quantize, sqnr, QDType, QParams};
//!
//! let x = array![0.1f32, -0.5, 0.9, 2.0];
//! let qp = QParams::new(0.01, 128, QDType::QUInt8)?;
//! let q: ndarray::Array1<u8> = quantize(&x, &qp)?;
//! let back: ndarray::Array1<f32> = dequantize(&q, &qp)?;
//! assert_eq!(q, array![138, 78, 218, 255]); // 2.0 saturates at 255
//! println!("SQNR {:.1} dB", sqnr(&x, &back)?);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```
//!
//! ## Numerical conventions
//! - The affine map runs in `f32` for every input type (`f32`, `f64`, `f16`, `bf16`), in
//!   PyTorch's order: multiply by `f32(1/scale)`, round half to even, add the zero point.
//! - `quantize` saturates to the storage range (also beyond `|x/scale| = 2^31`, where PyTorch
//!   2.15 wraps); ±inf saturate; NaN is a typed error, never a silent value.
//! - A scale must be finite, `> 0` and have a finite `f32` reciprocal; anything else is a
//!   typed error when the parameters are built.
//! - Dequantize takes `q - zero_point` exactly (also for qint32, where PyTorch 2.15 wraps).
//! - Metrics read every element exactly (`f64` inputs unrounded) and accumulate in `f64`;
//!   NaN and ±inf inputs are typed errors.
//!
//! What is refused, what saturates and what is exact: `docs/error-model.md`.
//!
//! ## Features
//! - `rayon`: parallel versions of the large-tensor and large-layer paths (results identical
//!   without it).
//! - `serde`: `Serialize`/`Deserialize` on configurations, parameters, observer state and
//!   reports.
//! - `safetensors`: load state dicts and per-layer dumps from `.safetensors` files.
//! - `conformance`: the PyTorch golden-case harness (the `conformance` module).
//! - `cli`: the `qnumeric` command (`compare`, `diagnose`).
//!
//! MSRV: Rust 1.89 (edition 2024; checked by CI with that toolchain).
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod classify;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
pub mod diagnose;
pub mod dtype;
pub mod element;
pub mod error;
pub mod formats;
pub mod fusion;
pub mod kernels;
pub mod metrics;
pub mod nn;
pub mod ns;
pub mod observers;
mod parallel;
pub mod ptq;
pub mod qat;
pub mod qparams;
pub mod rng;
mod simd;
pub mod simulate;
#[cfg(feature = "safetensors")]
#[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
pub mod state_dict;
pub mod tensor;
mod text;
pub mod train;

pub use dtype::{QDType, QRange};
pub use element::{QFloat, QInt};
pub use error::{QuantError, Result};
pub use kernels::{
    LearnableGrads, LearnableParams, dequantize, dequantize_into, dequantize_per_channel,
    dequantize_per_channel_into, fake_quantize, fake_quantize_backward,
    fake_quantize_backward_into, fake_quantize_inplace, fake_quantize_into, fake_quantize_mask,
    fake_quantize_per_channel, fake_quantize_per_channel_backward,
    fake_quantize_per_channel_backward_into, fake_quantize_per_channel_into, find_nan,
    learnable_fake_quantize, learnable_fake_quantize_backward,
    learnable_fake_quantize_backward_into, learnable_fake_quantize_into, quantize, quantize_into,
    quantize_per_channel, quantize_per_channel_into,
};
pub use metrics::{Metric, cosine_similarity, max_abs_error, mse, normalized_l2_error, sqnr};
pub use observers::{
    DynamicObserver, EntropyObserver, FixedQParamsObserver, FloatView, HistogramObserver,
    MinMaxObserver, MseObserver, Observer, ObserverClone, PerChannelMinMaxObserver,
    PercentileObserver, StreamingHistogram, UpdateRule, compare_calibrators,
};
pub use qparams::{
    AnyQParams, PerChannelQParams, QParams, QScheme, QSpec, RawQParams, ZeroPoints,
    choose_dynamic_qparams,
};
pub use tensor::QuantizedTensor;

/// The items most programs need, for `use qnumeric::prelude::*`.
pub mod prelude {
    #[doc(no_inline)]
    pub use crate::{
        PerChannelQParams, QDType, QParams, QRange, QScheme, QSpec, QuantError, QuantizedTensor,
        dequantize, fake_quantize, quantize, sqnr,
    };
}
