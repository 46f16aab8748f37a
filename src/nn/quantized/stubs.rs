//! [`Quantize`] and [`DeQuantize`]: what the stubs become.

use super::requant::need_quint8;
use crate::error::Result;
use crate::nn::{Activation, LayerRole, Module};
use crate::qparams::QParams;
use crate::tensor::QuantizedTensor;

/// Quantizes a float activation to quint8 with fixed parameters (PyTorch's `Quantize`, what
/// a `QuantStub` becomes).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantize {
    qparams: QParams,
}

impl Quantize {
    /// A quantize layer.
    ///
    /// # Errors
    /// [`QuantError::WrongDType`](crate::QuantError::WrongDType) unless the parameters are
    /// quint8.
    pub fn new(qparams: QParams) -> Result<Self> {
        need_quint8("Quantize::new", &qparams)?;
        Ok(Quantize { qparams })
    }

    /// The parameters.
    #[must_use]
    pub fn qparams(&self) -> &QParams {
        &self.qparams
    }
}

impl Module for Quantize {
    fn kind(&self) -> &'static str {
        "Quantize"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        let x = x.need_float("Quantize::forward")?;
        Ok(Activation::Quantized(QuantizedTensor::quantize(
            x,
            self.qparams,
        )?))
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }
}

/// Dequantizes a quantized activation (a float one passes through, as `Tensor.dequantize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeQuantize;

impl Module for DeQuantize {
    fn kind(&self) -> &'static str {
        "DeQuantize"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        Ok(Activation::Float(x.to_float()))
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }
}
