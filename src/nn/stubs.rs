//! [`QuantStub`] and [`DeQuantStub`]: where a model enters and leaves the quantized domain.

use super::{Activation, LayerRole, Module};
use crate::error::Result;

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
}
