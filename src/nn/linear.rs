//! [`Linear`]: the fully connected layer (`Linear` / `LinearReLU`).

use ndarray::{ArrayD, IxDyn};

use super::sgemm::{Lhs, Mat, Rhs, product};
use super::weighted::finish_rows;
use super::{Activation, LayerRole, Module, WeightedCore, WeightedKind, WeightedLayer};
use crate::error::{QuantError, Result};

/// Fully connected layer `y = x·Wᵀ + b` on the last axis, optionally followed by a fused ReLU
/// (PyTorch's `Linear` / `LinearReLU`). Weight `[out, in]`, bias `[out]`. The product runs
/// through `matrixmultiply` (ndarray's `dot`).
///
/// # Examples
/// ```
/// use ndarray::arr2;
/// use qnumeric::nn::{Activation, Linear, Module};
/// let fc = Linear::new(arr2(&[[1.0f32, 2.0], [-1.0, 0.5]]).into_dyn(), None)?.with_relu();
/// let y = fc.forward(&Activation::Float(arr2(&[[1.0f32, 1.0]]).into_dyn()))?;
/// assert_eq!(y.as_float()?.as_slice(), Some(&[3.0f32, 0.0][..]));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    core: WeightedCore,
}

impl Linear {
    /// A linear layer from a weight `[out, in]` and an optional bias `[out]`.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 2-D or a bias of the wrong shape.
    pub fn new(weight: ArrayD<f32>, bias: Option<ArrayD<f32>>) -> Result<Self> {
        Self::from_core(WeightedCore::new(weight, bias)?)
    }

    /// A linear layer from a core whose weight is `[out, in]`.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 2-D.
    pub fn from_core(core: WeightedCore) -> Result<Self> {
        if core.weight().ndim() != 2 {
            return Err(QuantError::ShapeMismatch {
                op: "Linear::new",
                expected: vec![0, 0],
                got: core.weight().shape().to_vec(),
            });
        }
        Ok(Linear { core })
    }

    /// The same layer with a fused ReLU (`LinearReLU`).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.core = self.core.with_relu();
        self
    }

    /// Input features.
    #[must_use]
    pub fn in_features(&self) -> usize {
        self.core.weight().shape()[1]
    }

    /// Output features.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.core.out_channels()
    }

    /// Weight, bias and fused ReLU.
    #[must_use]
    pub fn core(&self) -> &WeightedCore {
        &self.core
    }
}

/// Checks that `shape` ends in `k` (rank >= 1) and returns the number of rows.
pub(crate) fn linear_rows(op: &'static str, shape: &[usize], k: usize) -> Result<usize> {
    match shape.last() {
        Some(&last) if last == k => Ok(shape[..shape.len() - 1].iter().product()),
        _ => {
            let mut expected = shape.to_vec();
            match expected.last_mut() {
                Some(l) => *l = k,
                None => expected.push(k),
            }
            Err(QuantError::ShapeMismatch {
                op,
                expected,
                got: shape.to_vec(),
            })
        }
    }
}

/// `y[n, o] = Σ_k x[n, k]·w[o, k]` (+ bias, ReLU) for any leading shape: one matrix product
/// (`sgemm::product`, which splits its rows across the rayon pool for large layers; each row's result
/// does not depend on the split).
pub(crate) fn linear_float(
    op: &'static str,
    x: &ArrayD<f32>,
    core: &WeightedCore,
) -> Result<ArrayD<f32>> {
    let w = core.weight();
    let (o, k) = (w.shape()[0], w.shape()[1]);
    let n = linear_rows(op, x.shape(), k)?;
    crate::nn::shape::checked_elements(op, "output", &[n, o])?;
    let xs = x.as_standard_layout();
    let xd = xs.as_slice().expect("standard layout");
    let mut out = vec![0.0f32; n * o];
    let w = match core.packed_linear() {
        Some(packed) => Rhs::Packed(packed),
        None => Rhs::Mat(Mat::transposed(core.weight_slice(), k)),
    };
    product(n, o, k, Lhs::Mat(Mat::rows(xd, k)), w, &mut out);
    finish_rows(&mut out, o, 1, core);
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1 checked") = o;
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("n·o elements"))
}

impl Module for Linear {
    fn kind(&self) -> &'static str {
        if self.core.has_relu() {
            "LinearReLU"
        } else {
            "Linear"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "Linear::forward";
        linear_float(OP, x.need_float(OP)?, &self.core).map(Activation::Float)
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Weighted(self)
    }

    /// `dx = g·W`, `dW = gᵀ·x`, `db = Σ g` (`g` masked where a fused ReLU clipped).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ndarray::ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        const OP: &str = "Linear::backward";
        Some(
            super::backward::float_input(OP, inputs, output, grad_output)
                .and_then(|x| super::backward::linear(OP, x, &self.core, output, grad_output)),
        )
    }

    fn params(&self) -> Vec<(&'static str, ndarray::ArrayD<f32>)> {
        super::backward::core_param_list(&self.core)
    }

    fn with_params(
        &self,
        params: &[(&str, ndarray::ArrayD<f32>)],
    ) -> Option<Result<Box<dyn Module>>> {
        Some(
            super::backward::core_with("Linear::with_params", &self.core, params)
                .and_then(|c| Ok(Box::new(Linear::from_core(c)?) as Box<dyn Module>)),
        )
    }
}

impl WeightedLayer for Linear {
    fn weighted_kind(&self) -> WeightedKind {
        WeightedKind::Linear
    }

    fn core(&self) -> &WeightedCore {
        &self.core
    }

    fn with_core(&self, core: WeightedCore) -> Result<Box<dyn Module>> {
        Ok(Box::new(Linear::from_core(core)?))
    }
}
