//! [`WeightedCore`]: the weight, bias and fused ReLU that every weighted layer (linear,
//! convolutions) shares.

use ndarray::{ArrayD, ArrayViewD};

use crate::error::{QuantError, Result};

/// Weight, optional bias and fused ReLU of a weighted layer. The weight is `[out, ...]` (axis 0
/// is the output channel) and kept in standard (row-major) layout; the bias is `[out]`.
///
/// # Examples
/// ```
/// use ndarray::{arr1, ArrayD, IxDyn};
/// use qnumeric::nn::WeightedCore;
/// let core = WeightedCore::new(ArrayD::zeros(IxDyn(&[4, 3])), Some(arr1(&[0.0f32; 4]).into_dyn()))?
///     .with_relu();
/// assert_eq!(core.out_channels(), 4);
/// assert!(core.has_relu());
/// assert!(WeightedCore::new(ArrayD::zeros(IxDyn(&[4, 3])), Some(arr1(&[0.0f32; 3]).into_dyn())).is_err());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedCore {
    weight: ArrayD<f32>,
    bias: Option<ArrayD<f32>>,
    relu: bool,
}

impl WeightedCore {
    /// A core from a weight `[out, ...]` (rank >= 2) and an optional bias `[out]`, without ReLU.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight of rank < 2 or a bias that is not `[out]`.
    pub fn new(weight: ArrayD<f32>, bias: Option<ArrayD<f32>>) -> Result<Self> {
        const OP: &str = "WeightedCore::new";
        if weight.ndim() < 2 {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0, 0],
                got: weight.shape().to_vec(),
            });
        }
        check_bias(OP, bias.as_ref(), weight.shape()[0])?;
        let weight = if weight.is_standard_layout() {
            weight
        } else {
            weight.as_standard_layout().into_owned()
        };
        let bias = bias.map(|b| b.as_standard_layout().into_owned());
        Ok(WeightedCore {
            weight,
            bias,
            relu: false,
        })
    }

    /// The same core with a fused ReLU.
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Whether a ReLU is fused.
    #[must_use]
    pub fn has_relu(&self) -> bool {
        self.relu
    }

    /// The weight (standard layout).
    #[must_use]
    pub fn weight(&self) -> &ArrayD<f32> {
        &self.weight
    }

    /// The weight as a view.
    #[must_use]
    pub fn weight_view(&self) -> ArrayViewD<'_, f32> {
        self.weight.view()
    }

    /// The weight's values in row-major order.
    #[must_use]
    pub fn weight_slice(&self) -> &[f32] {
        self.weight
            .as_slice()
            .expect("the constructor keeps the weight in standard layout")
    }

    /// The bias `[out]`, if any.
    #[must_use]
    pub fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }

    /// The bias's values, if any.
    #[must_use]
    pub fn bias_slice(&self) -> Option<&[f32]> {
        self.bias.as_ref().map(|b| {
            b.as_slice()
                .expect("the constructor keeps the bias in standard layout")
        })
    }

    /// Output channels (axis 0 of the weight).
    #[must_use]
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }
}

pub(crate) fn check_bias(
    op: &'static str,
    bias: Option<&ArrayD<f32>>,
    out_channels: usize,
) -> Result<()> {
    if let Some(b) = bias
        && (b.ndim() != 1 || b.len() != out_channels)
    {
        return Err(QuantError::ShapeMismatch {
            op,
            expected: vec![out_channels],
            got: b.shape().to_vec(),
        });
    }
    Ok(())
}

/// `max(v, 0)`; NaN propagates, as `torch.relu` does.
#[inline]
pub(crate) fn relu_f32(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

/// Adds the bias (channel `c` of `rows` each `inner` long, channel = row % channels) and
/// applies the ReLU.
pub(crate) fn finish_rows(out: &mut [f32], channels: usize, inner: usize, core: &WeightedCore) {
    if let Some(b) = core.bias_slice()
        && inner > 0
    {
        for (i, chunk) in out.chunks_mut(inner).enumerate() {
            let bv = b[i % channels.max(1)];
            for v in chunk {
                *v += bv;
            }
        }
    }
    if core.has_relu() {
        for v in out.iter_mut() {
            *v = relu_f32(*v);
        }
    }
}
