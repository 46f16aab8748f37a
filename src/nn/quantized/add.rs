//! [`QuantizedAdd`]: the int8 residual join.

use super::requant::need_quint8;
use crate::error::{QuantError, Result};
use crate::nn::{Activation, LayerRole, Module};
use crate::qparams::QParams;
use crate::tensor::QuantizedTensor;

/// Quantized element-wise addition of two quint8 activations of the same shape, with its own
/// output parameters and an optional fused ReLU (PyTorch's `QFunctional.add` / `add_relu`).
///
/// Both paths compute `quantize((a − za)·sa + (b − zb)·sb)` with the output parameters: the
/// sum of the dequantized inputs in `f32`, rounded once (so the integer path equals its
/// reference path, for every scale the parameters accept).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedAdd {
    out: QParams,
    relu: bool,
}

impl QuantizedAdd {
    /// A quantized add with output parameters (quint8).
    ///
    /// # Errors
    /// [`QuantError::WrongDType`] unless the parameters are quint8.
    pub fn new(output: QParams) -> Result<Self> {
        need_quint8("QuantizedAdd::new", &output)?;
        Ok(QuantizedAdd {
            out: output,
            relu: false,
        })
    }

    /// The same layer with a fused ReLU (`add_relu`).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        &self.out
    }

    fn inputs<'a>(
        op: &'static str,
        inputs: &[&'a Activation],
    ) -> Result<[(&'a QuantizedTensor<u8>, QParams); 2]> {
        let [a, b] = inputs else {
            return Err(QuantError::LengthMismatch {
                op,
                what: "inputs",
                expected: 2,
                got: inputs.len(),
            });
        };
        let (a, b) = (a.need_quantized(op)?, b.need_quantized(op)?);
        if a.shape() != b.shape() {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: a.shape().to_vec(),
                got: b.shape().to_vec(),
            });
        }
        Ok([(a, *a.need_per_tensor(op)?), (b, *b.need_per_tensor(op)?)])
    }

    fn add(&self, a: &QuantizedTensor<u8>, b: &QuantizedTensor<u8>) -> Result<Activation> {
        let mut y = a.to_float() + b.to_float();
        if self.relu {
            y.mapv_inplace(|v| if v < 0.0 { 0.0 } else { v });
        }
        Ok(Activation::Quantized(QuantizedTensor::quantize(
            &y, self.out,
        )?))
    }

    /// The reference path: dequantize both, add in f32 (+ ReLU), quantize.
    ///
    /// # Errors
    /// As [`Module::forward_many`].
    pub fn forward_reference(&self, a: &Activation, b: &Activation) -> Result<Activation> {
        let [(a, _), (b, _)] = Self::inputs("QuantizedAdd::forward_reference", &[a, b])?;
        self.add(a, b)
    }
}

impl Module for QuantizedAdd {
    fn kind(&self) -> &'static str {
        if self.relu {
            "QuantizedAddReLU"
        } else {
            "QuantizedAdd"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_many(&[x])
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        let [(a, _), (b, _)] = Self::inputs("QuantizedAdd::forward_many", inputs)?;
        self.add(a, b)
    }

    fn num_inputs(&self) -> usize {
        2
    }

    fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
        Some(match inputs {
            [a, b] => self.forward_reference(a, b),
            _ => Err(QuantError::LengthMismatch {
                op: "Module::reference",
                what: "inputs",
                expected: 2,
                got: inputs.len(),
            }),
        })
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }
}
