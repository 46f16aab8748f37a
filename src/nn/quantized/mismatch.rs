//! [`Mismatch`]: how two quantized activations differ, in quanta.

use crate::error::{QuantError, Result};
use crate::nn::Activation;

/// How two quantized tensors differ: the number of differing integers and the largest
/// difference, in quanta (e.g. a layer's integer path against its reference path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mismatch {
    /// Values compared.
    pub total: usize,
    /// Values that differ.
    pub differing: usize,
    /// Largest `|a − b|` in integer steps.
    pub max_diff: u32,
}

impl Mismatch {
    /// `differing / total` (0 for empty tensors).
    #[must_use]
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.differing as f64 / self.total as f64
        }
    }

    /// Compares two quantized activations of the same shape and parameters.
    ///
    /// # Errors
    /// [`QuantError::WrongActivation`] unless both are quantized;
    /// [`QuantError::QParamsMismatch`] for different parameters;
    /// [`QuantError::ShapeMismatch`] for different shapes.
    pub fn between(a: &Activation, b: &Activation) -> Result<Mismatch> {
        const OP: &str = "Mismatch::between";
        let a = a.need_quantized(OP)?;
        let b = b.need_quantized(OP)?;
        if a.shape() != b.shape() {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: a.shape().to_vec(),
                got: b.shape().to_vec(),
            });
        }
        if a.params() != b.params() {
            return Err(QuantError::QParamsMismatch { op: OP });
        }
        let mut m = Mismatch {
            total: a.int_repr().len(),
            ..Mismatch::default()
        };
        for (&x, &y) in a.int_repr().iter().zip(b.int_repr().iter()) {
            let d = u32::from(x.abs_diff(y));
            if d > 0 {
                m.differing += 1;
                m.max_diff = m.max_diff.max(d);
            }
        }
        Ok(m)
    }
}
