//! [`ReLU`] and [`ReLU6`]: exact on quantized activations too.

use super::weighted::relu_f32;
use super::{Activation, LayerRole, Module};
use crate::error::Result;
use crate::kernels;
use crate::tensor::QuantizedTensor;

/// `max(x, 0)`. On a quantized activation: `max(q, zero_point)`, parameters kept (exact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReLU;

impl Module for ReLU {
    fn kind(&self) -> &'static str {
        "ReLU"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        match x {
            Activation::Float(a) => Ok(Activation::Float(a.mapv(relu_f32))),
            Activation::Quantized(q) => {
                let zp = q.need_per_tensor("ReLU::forward")?.zero_point();
                Ok(clamp_quantized(q, zp, 255))
            }
        }
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Relu
    }

    /// `g` where `x > 0` (PyTorch's `threshold_backward`).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ndarray::ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        Some(super::backward::masked(
            "ReLU::backward",
            inputs,
            output,
            grad_output,
            |x| x > 0.0,
        ))
    }
}

/// `min(max(x, 0), 6)`. On a quantized activation: `clamp(q, zero_point, quantize(6.0))`,
/// parameters kept (PyTorch's quantized `relu6`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReLU6;

impl Module for ReLU6 {
    fn kind(&self) -> &'static str {
        "ReLU6"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        match x {
            Activation::Float(a) => Ok(Activation::Float(
                a.mapv(|v| if v.is_nan() { v } else { v.clamp(0.0, 6.0) }),
            )),
            Activation::Quantized(q) => {
                let qp = q.need_per_tensor("ReLU6::forward")?;
                let six: ndarray::Array1<u8> = kernels::quantize(&ndarray::arr1(&[6.0f32]), qp)?;
                Ok(clamp_quantized(q, qp.zero_point(), i32::from(six[0])))
            }
        }
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::PassThrough
    }

    /// `g` where `0 < x < 6` (PyTorch's `hardtanh_backward`).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ndarray::ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        Some(super::backward::masked(
            "ReLU6::backward",
            inputs,
            output,
            grad_output,
            |x| x > 0.0 && x < 6.0,
        ))
    }
}

/// `clamp(q, lo, hi)` on the integers, parameters kept.
fn clamp_quantized(q: &QuantizedTensor<u8>, lo: i32, hi: i32) -> Activation {
    let lo = lo.clamp(0, 255) as u8;
    let hi = (hi.clamp(0, 255) as u8).max(lo);
    Activation::Quantized(q.map_values(|v| v.clamp(lo, hi)))
}
