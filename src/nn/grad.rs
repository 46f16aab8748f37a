//! What one layer's backward pass gives ([`LayerGrads`]): the training interface of
//! [`Module`](super::Module) ([`Module::backward`](super::Module::backward),
//! [`Module::params`](super::Module::params), [`Module::with_params`](super::Module::with_params)).

use ndarray::ArrayD;

/// The result of one layer's backward pass: the gradient of the loss with respect to each
/// input and to each trainable parameter, and the new values of the layer's non-trained
/// buffers (BatchNorm's running statistics in training mode).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LayerGrads {
    /// ∂loss/∂input, one per input of the layer, each of its input's shape.
    pub inputs: Vec<ArrayD<f32>>,
    /// ∂loss/∂parameter, by the parameter's name (as [`Module::params`](super::Module::params)
    /// names it: `"weight"`, `"bias"`, ...), each of the parameter's shape.
    pub params: Vec<(&'static str, ArrayD<f32>)>,
    /// New values of buffers the forward pass in training mode moved (running mean and
    /// variance), by name; applied with the parameters by
    /// [`Module::with_params`](super::Module::with_params).
    pub buffers: Vec<(&'static str, ArrayD<f32>)>,
}

impl LayerGrads {
    /// The gradient of the parameter `name`, if the layer has one.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.params.iter().find(|(n, _)| *n == name).map(|(_, g)| g)
    }
}
