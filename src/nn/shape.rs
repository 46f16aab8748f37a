//! [`Flatten`] and [`Identity`]: shape layers that run on float and quantized activations.

use ndarray::IxDyn;

use super::{Activation, LayerRole, Module};
use crate::error::{QuantError, Result};

/// The most elements a layer allocates for one output or intermediate buffer: 2^31 (8 GiB of
/// `f32`). A geometry whose output would be larger (huge padding, dilation, kernels or
/// dimensions) is refused with [`QuantError::TooLarge`] before anything is allocated.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// The element count of an array of shape `dims`: [`QuantError::GeometryOverflow`] when the
/// product of the non-zero lengths overflows `isize` (ndarray's limit, even for an empty
/// array), [`QuantError::TooLarge`] beyond [`MAX_ELEMENTS`].
pub(crate) fn checked_elements(
    op: &'static str,
    what: &'static str,
    dims: &[usize],
) -> Result<usize> {
    let nonzero = dims
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&p| isize::try_from(p).is_ok())
        .ok_or(QuantError::GeometryOverflow { op, what })?;
    let total = if dims.contains(&0) { 0 } else { nonzero };
    if total > MAX_ELEMENTS {
        return Err(QuantError::TooLarge {
            op,
            what,
            elements: total,
            max: MAX_ELEMENTS,
        });
    }
    Ok(total)
}

/// Flattens axes `start_dim..` into one (row-major, so `[N, C, H, W]` becomes `[N, C·H·W]` in
/// C, H, W order). Works on quantized activations too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flatten {
    /// First axis flattened (PyTorch's default 1).
    pub start_dim: usize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1 }
    }
}

impl Module for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_owned(x.clone())
    }

    /// Reshapes the input itself (no copy when it is in standard layout).
    fn forward_owned(&self, x: Activation) -> Result<Activation> {
        let shape = x.shape();
        if self.start_dim >= shape.len().max(1) {
            return Err(QuantError::InvalidAxis {
                op: "Flatten::forward",
                axis: isize::try_from(self.start_dim).unwrap_or(isize::MAX),
                ndim: shape.len(),
            });
        }
        let mut new_shape = shape[..self.start_dim].to_vec();
        new_shape.push(shape[self.start_dim..].iter().product());
        let dim = IxDyn(&new_shape);
        Ok(match x {
            Activation::Float(a) => {
                let a = if a.is_standard_layout() {
                    a
                } else {
                    a.as_standard_layout().into_owned()
                };
                Activation::Float(
                    a.into_shape_with_order(dim)
                        .expect("same number of elements"),
                )
            }
            Activation::Quantized(q) => {
                let data = q
                    .int_repr()
                    .as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(dim)
                    .expect("same number of elements");
                Activation::Quantized(q.with_data(data))
            }
        })
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::PassThrough
    }

    /// The gradient in the input's shape.
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ndarray::ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        Some(super::backward::reshape(
            "Flatten::backward",
            inputs,
            output,
            grad_output,
        ))
    }
}

/// Passes its input through (what fusion leaves in place of the folded layers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity;

impl Module for Identity {
    fn kind(&self) -> &'static str {
        "Identity"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        Ok(x.clone())
    }

    fn forward_owned(&self, x: Activation) -> Result<Activation> {
        Ok(x)
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::PassThrough
    }

    /// The gradient in the input's shape.
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ndarray::ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        Some(super::backward::reshape(
            "Identity::backward",
            inputs,
            output,
            grad_output,
        ))
    }
}
