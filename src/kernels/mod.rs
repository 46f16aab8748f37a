//! Quantization kernels: quantize, dequantize, fake-quantize (forward and straight-through
//! backward), learnable fake-quantize, per tensor and per channel.
//!
//! Every kernel comes as an allocating function and an `_into` variant that writes into a
//! caller's buffer without allocating. Arguments (shapes, axes, parameter lengths, storage
//! types, integer data ranges) are checked before anything is written: on such an error an
//! output buffer is untouched. A NaN in float data is found by the kernel's own pass, at no
//! extra cost: the error then names the first NaN's index, but an `_into` output may be
//! partly written. Callers that need it untouched call [`find_nan`] first (one read-only
//! pass over the input). The in-place [`fake_quantize_inplace`] scans first: there the output
//! is the input.
//!
//! Generic parameters come in one order everywhere: `<F: QFloat, Q: QInt, D: Dimension>`
//! (float type, integer type, dimension). The types are usually inferred; annotate the
//! binding rather than writing a turbofish:
//!
//! ```
//! use ndarray::{array, Array1};
//! use qnumeric::{dequantize, quantize, QDType, QParams};
//! let qp = QParams::new(0.5, 0, QDType::QInt8)?;
//! let q: Array1<i8> = quantize(&array![1.0f32, -2.0], &qp)?;
//! let x: Array1<f32> = dequantize(&q, &qp)?;
//! assert_eq!(x, array![1.0, -2.0]);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```
//!
//! Numerical conventions (bit-exact with PyTorch 2.15 for finite inputs, except where PyTorch
//! wraps an integer: see `docs/error-model.md`):
//! - the affine map runs in `f32` for every input type; the reciprocal `f32(1/scale)` is
//!   computed once and multiplied (never `x / scale`);
//! - rounding is round-half-to-even; the integer zero point is added after rounding;
//! - `quantize` saturates to the dtype's storage range, `fake_quantize` to the parameters'
//!   quantization range; ±inf saturate; NaN is an error;
//! - dequantize takes `q - zero_point` exactly; per-channel dequantize multiplies in `f64` as
//!   PyTorch does (for dtypes of at most 16 bits the `f32` product computed here is the same
//!   number), per-tensor in `f32`.

mod checks;
mod dequantize;
mod fake_quantize;
mod layout;
mod learnable;
mod ops;
mod quantize;
pub mod reference;

pub use checks::find_nan;
pub use dequantize::{
    dequantize, dequantize_into, dequantize_per_channel, dequantize_per_channel_into,
};
pub use fake_quantize::{
    fake_quantize, fake_quantize_backward, fake_quantize_backward_into, fake_quantize_inplace,
    fake_quantize_into, fake_quantize_mask, fake_quantize_per_channel,
    fake_quantize_per_channel_backward, fake_quantize_per_channel_backward_into,
    fake_quantize_per_channel_into,
};
pub use learnable::{
    LearnableGrads, LearnableParams, learnable_fake_quantize, learnable_fake_quantize_backward,
    learnable_fake_quantize_backward_into, learnable_fake_quantize_into,
};
pub use quantize::{quantize, quantize_into, quantize_per_channel, quantize_per_channel_into};
