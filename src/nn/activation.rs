//! What flows between layers ([`Activation`]) and how a layer shows its weight ([`WeightRef`]).

use ndarray::{ArrayD, ArrayViewD};

use crate::error::{ActivationKind, QuantError, Result};
use crate::tensor::QuantizedTensor;

/// What flows between layers: a float tensor, or a quantized (quint8) tensor with its
/// parameters, as in a PyTorch model converted to int8.
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// A float tensor.
    Float(ArrayD<f32>),
    /// A quantized tensor (`u8` storage, quint8 per-tensor parameters).
    Quantized(QuantizedTensor<u8>),
}

impl Activation {
    /// The shape.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        match self {
            Activation::Float(a) => a.shape(),
            Activation::Quantized(q) => q.shape(),
        }
    }

    /// Float or quantized.
    #[must_use]
    pub fn kind(&self) -> ActivationKind {
        match self {
            Activation::Float(_) => ActivationKind::Float,
            Activation::Quantized(_) => ActivationKind::Quantized,
        }
    }

    /// Whether the activation is quantized.
    #[must_use]
    pub fn is_quantized(&self) -> bool {
        matches!(self, Activation::Quantized(_))
    }

    /// The float tensor.
    ///
    /// # Errors
    /// [`QuantError::WrongActivation`] when the activation is quantized.
    pub fn as_float(&self) -> Result<&ArrayD<f32>> {
        self.need_float("Activation::as_float")
    }

    /// The quantized tensor.
    ///
    /// # Errors
    /// [`QuantError::WrongActivation`] when the activation is float.
    pub fn as_quantized(&self) -> Result<&QuantizedTensor<u8>> {
        self.need_quantized("Activation::as_quantized")
    }

    /// The float tensor, or [`QuantError::WrongActivation`] naming `op`.
    pub(crate) fn need_float(&self, op: &'static str) -> Result<&ArrayD<f32>> {
        match self {
            Activation::Float(a) => Ok(a),
            Activation::Quantized(_) => Err(QuantError::WrongActivation {
                op,
                expected: ActivationKind::Float,
                got: ActivationKind::Quantized,
            }),
        }
    }

    /// The quantized tensor, or [`QuantError::WrongActivation`] naming `op`.
    pub(crate) fn need_quantized(&self, op: &'static str) -> Result<&QuantizedTensor<u8>> {
        match self {
            Activation::Quantized(q) => Ok(q),
            Activation::Float(_) => Err(QuantError::WrongActivation {
                op,
                expected: ActivationKind::Quantized,
                got: ActivationKind::Float,
            }),
        }
    }

    /// The values as floats: a copy of a float tensor, or the dequantized values.
    #[must_use]
    pub fn to_float(&self) -> ArrayD<f32> {
        match self {
            Activation::Float(a) => a.clone(),
            Activation::Quantized(q) => q.to_float(),
        }
    }

    /// Consumes the activation, returning float values (dequantized if needed).
    #[must_use]
    pub fn into_float(self) -> ArrayD<f32> {
        match self {
            Activation::Float(a) => a,
            Activation::Quantized(q) => q.to_float(),
        }
    }
}

impl From<ArrayD<f32>> for Activation {
    fn from(a: ArrayD<f32>) -> Self {
        Activation::Float(a)
    }
}

impl From<QuantizedTensor<u8>> for Activation {
    fn from(q: QuantizedTensor<u8>) -> Self {
        Activation::Quantized(q)
    }
}

/// A layer's weight: a float view (in the layer's own layout, e.g. `[out, in/groups, k]` for a
/// 1-D convolution), or a quantized (qint8) tensor.
#[derive(Debug, Clone)]
pub enum WeightRef<'a> {
    /// A float weight.
    Float(ArrayViewD<'a, f32>),
    /// A quantized weight.
    Quantized(&'a QuantizedTensor<i8>),
}

impl WeightRef<'_> {
    /// The weight's values as floats (dequantized where quantized).
    #[must_use]
    pub fn to_float(&self) -> ArrayD<f32> {
        match self {
            WeightRef::Float(w) => w.to_owned(),
            WeightRef::Quantized(q) => q.to_float(),
        }
    }

    /// The shape.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        match self {
            WeightRef::Float(w) => w.shape(),
            WeightRef::Quantized(q) => q.shape(),
        }
    }
}
