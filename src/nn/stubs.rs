//! [`QuantStub`] and [`DeQuantStub`]: where a model enters and leaves the quantized domain.

use ndarray::ArrayD;

use super::{Activation, LayerGrads, LayerRole, Module};
use crate::error::{QuantError, Result};

/// The backward pass of an identity on float input: the gradient passes unchanged.
fn identity_backward(
    op: &'static str,
    inputs: &[&Activation],
    output: &Activation,
    grad_output: &ArrayD<f32>,
) -> Result<LayerGrads> {
    let x = super::module::one_input(op, inputs)?;
    if let Activation::Quantized(_) = x {
        return Err(QuantError::UnsupportedConfig {
            op,
            reason: "no gradient through a quantized input",
        });
    }
    if output.shape() != grad_output.shape() {
        return Err(QuantError::ShapeMismatch {
            op,
            expected: output.shape().to_vec(),
            got: grad_output.shape().to_vec(),
        });
    }
    Ok(LayerGrads {
        inputs: vec![grad_output.clone()],
        ..LayerGrads::default()
    })
}

/// Marks where a model enters the quantized domain: the identity on float input;
/// [`Prepared::convert`](crate::ptq::Prepared::convert) replaces it by a
/// [`Quantize`](super::quantized::Quantize) with the parameters observed at its output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuantStub;

impl Module for QuantStub {
    fn kind(&self) -> &'static str {
        "QuantStub"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        Ok(x.clone())
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::QuantStub
    }

    /// The identity's: the gradient passes unchanged (float input only).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<LayerGrads>> {
        Some(identity_backward(
            "QuantStub::backward",
            inputs,
            output,
            grad_output,
        ))
    }
}

/// Marks where a model leaves the quantized domain: the identity on float input, dequantizes
/// a quantized one; converted to [`DeQuantize`](super::quantized::DeQuantize).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeQuantStub;

impl Module for DeQuantStub {
    fn kind(&self) -> &'static str {
        "DeQuantStub"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        Ok(Activation::Float(x.to_float()))
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::DeQuantStub
    }

    /// The identity's on float input (a quantized input has no gradient: a typed error).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<LayerGrads>> {
        Some(identity_backward(
            "DeQuantStub::backward",
            inputs,
            output,
            grad_output,
        ))
    }
}
