//! [`FloatIsland`]: a float layer inside the quantized domain.

use ndarray::ArrayD;

use crate::error::Result;
use crate::nn::quantized::Quantize;
use crate::nn::{Activation, LayerRole, Module, WeightRef};
use crate::qparams::QParams;

/// A float layer inside the quantized domain: a quantized input is dequantized, the float
/// layer runs, and the output is quantized with the observed parameters. A float input runs
/// the float layer and stays float.
#[derive(Debug, Clone)]
pub struct FloatIsland {
    layer: Box<dyn Module>,
    quantize: Quantize,
}

impl FloatIsland {
    /// Wraps a float layer with the parameters of its output.
    ///
    /// # Errors
    /// [`QuantError::WrongDType`](crate::QuantError::WrongDType) unless the parameters are
    /// quint8.
    pub fn new(layer: Box<dyn Module>, output: QParams) -> Result<Self> {
        Ok(FloatIsland {
            layer,
            quantize: Quantize::new(output)?,
        })
    }

    /// The float layer.
    #[must_use]
    pub fn inner(&self) -> &dyn Module {
        self.layer.as_ref()
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        self.quantize.qparams()
    }
}

impl Module for FloatIsland {
    fn kind(&self) -> &'static str {
        "FloatIsland"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_many(&[x])
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        let quantized = inputs.iter().any(|a| a.is_quantized());
        let floats: Vec<Activation> = inputs
            .iter()
            .map(|a| Activation::Float(a.to_float()))
            .collect();
        let refs: Vec<&Activation> = floats.iter().collect();
        let y = self.layer.forward_many(&refs)?;
        if quantized {
            self.quantize.forward(&y)
        } else {
            Ok(y)
        }
    }

    fn num_inputs(&self) -> usize {
        self.layer.num_inputs()
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        self.layer.weight()
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.layer.bias()
    }
}
