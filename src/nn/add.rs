//! [`Add`]: the two-input float addition of residual blocks.

use super::{Activation, LayerRole, Module};
use crate::error::{QuantError, Result};

/// Element-wise sum of two float activations of the same shape (residual blocks). Takes two
/// inputs through [`Module::forward_many`]; [`Module::forward`] with one input is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Add;

impl Module for Add {
    fn kind(&self) -> &'static str {
        "Add"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_many(&[x])
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        const OP: &str = "Add::forward_many";
        let [a, b] = inputs else {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "inputs",
                expected: 2,
                got: inputs.len(),
            });
        };
        let (a, b) = (a.need_float(OP)?, b.need_float(OP)?);
        if a.shape() != b.shape() {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: a.shape().to_vec(),
                got: b.shape().to_vec(),
            });
        }
        Ok(Activation::Float(a + b))
    }

    fn num_inputs(&self) -> usize {
        2
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Add
    }

    /// The gradient, once for each input.
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ndarray::ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        const OP: &str = "Add::backward";
        Some((|| {
            if inputs.len() != 2 {
                return Err(QuantError::LengthMismatch {
                    op: OP,
                    what: "inputs",
                    expected: 2,
                    got: inputs.len(),
                });
            }
            super::backward::check_grad(OP, output, grad_output)?;
            for x in inputs {
                x.need_float(OP)?;
            }
            Ok(super::LayerGrads {
                inputs: vec![grad_output.clone(), grad_output.clone()],
                ..super::LayerGrads::default()
            })
        })())
    }
}
