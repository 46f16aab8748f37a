//! Quantized layers: the integer path of an int8 backend, and next to each its reference path
//! `dequantize → f32 op → quantize` (PyTorch's "reference quantized model").
//!
//! | layer | file | input → output | integer path |
//! |---|---|---|---|
//! | [`Quantize`], [`DeQuantize`] | `stubs.rs` | float ↔ quint8 | the kernels with the observed parameters |
//! | [`QuantizedLinear`] | `linear.rs` | quint8 → quint8 | u8 × i8 products summed in `i32` ([`Int8Accumulation`]), PyTorch's requantization, optional fused ReLU |
//! | [`QuantizedConv2d`], [`QuantizedConv1d`] | `conv.rs` | quint8 → quint8 | the same over the unfolded input (stride, padding, dilation, groups) |
//! | [`DynamicQuantizedLinear`] | `dynamic.rs` | float → float | input quantized per call (fbgemm's parameter choice), float output |
//! | [`QuantizedAdd`] | `add.rs` | quint8 + quint8 → quint8 | dequantized sum, rounded once |
//! | [`Mismatch`] | `mismatch.rs` | – | how two quantized outputs differ, in quanta |
//!
//! `accumulate.rs` holds the accumulation modes and the matrix-product kernels, `direct.rs`
//! the direct convolution of small layers on AVX512-VNNI, `requant.rs` the requantization.
//!
//! **Requantization** (PyTorch's x86 engine with a float bias): with `sx` the input scale,
//! `sw[o]` the weight scale of output channel `o`, `so`/`zo` the output parameters, every
//! operation in `f32`, in this order:
//!
//! ```text
//! acc = Σ (x − zx)·(w − zw[o])                                  (i32, see Int8Accumulation)
//! q   = clamp(rne((f32(acc)·sx·sw[o] + bias[o]) / so) + zo, relu ? zo : 0, 255)
//! ```
//!
//! Both accumulation modes reproduce PyTorch's `quantized::linear` / `quantized::conv2d` bit
//! for bit (`tests/golden/qlayers.jsonl`).

mod accumulate;
mod add;
mod conv;
#[cfg(target_arch = "x86_64")]
mod direct;
mod dynamic;
mod linear;
mod mismatch;
mod requant;
mod stubs;

pub use accumulate::{Int8Accumulation, x86_engine_accumulation};
pub use add::QuantizedAdd;
pub use conv::{QuantizedConv1d, QuantizedConv2d};
pub use dynamic::DynamicQuantizedLinear;
pub use linear::QuantizedLinear;
pub use mismatch::Mismatch;
pub use stubs::{DeQuantize, Quantize};
