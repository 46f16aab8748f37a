//! [`FloatIsland`]: a float layer inside the quantized domain.

use ndarray::ArrayD;

use crate::error::Result;
use crate::nn::quantized::Quantize;
use crate::nn::{Activation, LayerRole, Module, WeightRef};
use crate::qparams::QParams;

/// A float layer inside the quantized domain: quantized inputs are dequantized (float ones
/// taken as they are), the float layer runs, and the output is quantized with the observed
/// parameters.
///
/// [`Prepared::convert`](super::Prepared::convert) lets consecutive islands (with only
/// pass-through layers between them) hand float values to each other: only the last one of
/// such a run quantizes its output ([`FloatIsland::with_float_output`] on the others), so a
/// run of layers kept in float costs one dequantize and one quantize, not one per layer.
#[derive(Debug, Clone)]
pub struct FloatIsland {
    layer: Box<dyn Module>,
    quantize: Quantize,
    float_output: bool,
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
            float_output: false,
        })
    }

    /// The same island handing its output on in float (for a float layer after it).
    #[must_use]
    pub fn with_float_output(mut self) -> Self {
        self.float_output = true;
        self
    }

    /// Whether the island hands its output on in float.
    #[must_use]
    pub fn has_float_output(&self) -> bool {
        self.float_output
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
        let floats: Vec<Activation> = inputs
            .iter()
            .map(|a| Activation::Float(a.to_float()))
            .collect();
        let refs: Vec<&Activation> = floats.iter().collect();
        let y = self.layer.forward_many(&refs)?;
        if !self.float_output {
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
