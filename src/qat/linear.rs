//! [`Linear`]: PyTorch's `torch.ao.nn.qat.Linear` (weight fake quant only), its backward and
//! its SGD step.

use ndarray::{ArrayD, IxDyn};

use super::conv_bn::QatAction;
use super::fused::FusedMovingAvgObsFakeQuantize;
use super::sgd::sgd_update;
use crate::error::{QuantError, Result};
use crate::nn::linear::linear_rows;

/// What one [`Linear::forward_backward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearStep {
    /// `y = x @ weight_fq^T + bias`, shape `[..., out]`.
    pub y: ArrayD<f32>,
    /// `dx = dy @ weight_fq`, the shape of `x`.
    pub dx: ArrayD<f32>,
    /// `dweight = (dy^T @ x)` times the weight fake quant's straight-through mask, `[out, in]`.
    pub dweight: ArrayD<f32>,
    /// `dbias = Σ dy` over the rows (`None` without a bias).
    pub dbias: Option<Vec<f32>>,
    /// The fake-quantized weight used.
    pub weight_fq: ArrayD<f32>,
}

/// PyTorch's QAT `Linear` (`torch.ao.nn.qat.Linear`) with the x86 QAT qconfig's weight fake
/// quant: `y = linear(x, weight_fake_quant(weight), bias)`. Only the weight is
/// fake-quantized (activations need their own fake-quant module).
///
/// [`Linear::forward_backward`] also computes the gradients of `sum(y · dy)`:
/// `dx = dy @ weight_fq`, `dweight = dy^T @ x` masked by the weight fake quant's
/// straight-through mask, `dbias = Σ dy`; [`Linear::sgd_step`] applies
/// `p = fma(−f32(lr), grad, p)` to weight and bias, so the next step's observer sees the
/// updated weight. Matrix products accumulate in `f64` and round once (PyTorch's BLAS sums in
/// `f32` in its own order: the last bits may differ); `weight_fq` and the fake-quant state are
/// bit-exact.
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::qat::Linear;
///
/// let w = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![0.5f32, -1.0]).unwrap();
/// let mut fc = Linear::new(w, Some(vec![0.25]))?;
/// let x = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![2.0f32, 1.0]).unwrap();
/// let dy = ArrayD::from_shape_vec(IxDyn(&[1, 1]), vec![1.0f32]).unwrap();
/// let step = fc.forward_backward(&x, &dy)?;
/// assert_eq!(step.y[[0, 0]], 0.25); // 0.5·2 − 1·1 + 0.25 (both weights on the grid)
/// fc.sgd_step(0.1, &step)?;
/// assert_eq!(fc.bias(), Some(&[0.15f32][..]));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Linear {
    out_features: usize,
    in_features: usize,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    weight_fake_quant: FusedMovingAvgObsFakeQuantize,
    training: bool,
}

impl Linear {
    /// A layer with weight `[out, in]`, an optional bias and the x86 weight fake quant
    /// ([`FusedMovingAvgObsFakeQuantize::x86_weight`]).
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 2-D or has a zero dimension;
    /// [`QuantError::LengthMismatch`] for a bias of another length; [`QuantError::NonFinite`]
    /// for a non-finite weight or bias.
    pub fn new(weight: ArrayD<f32>, bias: Option<Vec<f32>>) -> Result<Self> {
        const OP: &str = "qat::Linear::new";
        let &[o, k] = weight.shape() else {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0, 0],
                got: weight.shape().to_vec(),
            });
        };
        if o == 0 || k == 0 {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![1, 1],
                got: vec![o, k],
            });
        }
        if let Some(b) = &bias
            && b.len() != o
        {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "bias",
                expected: o,
                got: b.len(),
            });
        }
        let mut w = Vec::with_capacity(o * k);
        w.extend(weight.iter().copied());
        check_finite(OP, &w, bias.as_deref())?;
        Ok(Linear {
            out_features: o,
            in_features: k,
            weight: w,
            bias,
            weight_fake_quant: FusedMovingAvgObsFakeQuantize::x86_weight()?,
            training: true,
        })
    }

    /// Replaces the weight fake quant.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel fake quant on another axis than 0.
    pub fn with_weight_fake_quant(mut self, fq: FusedMovingAvgObsFakeQuantize) -> Result<Self> {
        if matches!(fq.ch_axis(), Some(a) if a != 0) {
            return Err(QuantError::UnsupportedConfig {
                op: "qat::Linear::with_weight_fake_quant",
                reason: "a per-channel weight fake quant must be on axis 0",
            });
        }
        self.weight_fake_quant = fq;
        Ok(self)
    }

    /// Input features.
    #[must_use]
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The weight, `[out, in]`.
    ///
    /// # Errors
    /// None in practice (the shape is checked at construction).
    pub fn weight(&self) -> Result<ArrayD<f32>> {
        ArrayD::from_shape_vec(
            IxDyn(&[self.out_features, self.in_features]),
            self.weight.clone(),
        )
        .map_err(|_| QuantError::ShapeMismatch {
            op: "qat::Linear::weight",
            expected: vec![self.out_features, self.in_features],
            got: vec![self.weight.len()],
        })
    }

    /// The bias.
    #[must_use]
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Sets weight (flat, row-major `[out, in]`) and bias (to resume, or to replay a state).
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`]; [`QuantError::NonFinite`]; [`QuantError::UnsupportedConfig`]
    /// when a bias is given to a layer without one or the reverse.
    pub fn set_params(&mut self, weight: Vec<f32>, bias: Option<Vec<f32>>) -> Result<()> {
        const OP: &str = "qat::Linear::set_params";
        if weight.len() != self.weight.len() {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "weight",
                expected: self.weight.len(),
                got: weight.len(),
            });
        }
        match (&self.bias, &bias) {
            (Some(_), Some(b)) if b.len() != self.out_features => {
                return Err(QuantError::LengthMismatch {
                    op: OP,
                    what: "bias",
                    expected: self.out_features,
                    got: b.len(),
                });
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(QuantError::UnsupportedConfig {
                    op: OP,
                    reason: "the bias must be given exactly when the layer has one",
                });
            }
            _ => {}
        }
        check_finite(OP, &weight, bias.as_deref())?;
        self.weight = weight;
        self.bias = bias;
        Ok(())
    }

    /// The weight fake quant.
    #[must_use]
    pub fn weight_fake_quant(&self) -> &FusedMovingAvgObsFakeQuantize {
        &self.weight_fake_quant
    }

    /// The weight fake quant, mutable.
    pub fn weight_fake_quant_mut(&mut self) -> &mut FusedMovingAvgObsFakeQuantize {
        &mut self.weight_fake_quant
    }

    /// Applies a switch: observer and fake-quant switches act on the weight fake quant,
    /// `eval`/`train` set the mode (which changes nothing in the computation: PyTorch's
    /// weight fake quant runs in both); BatchNorm switches do nothing.
    pub fn apply(&mut self, action: QatAction) {
        match action {
            QatAction::DisableObserver => self.weight_fake_quant.enable_observer(false),
            QatAction::EnableObserver => self.weight_fake_quant.enable_observer(true),
            QatAction::DisableFakeQuant => self.weight_fake_quant.enable_fake_quant(false),
            QatAction::EnableFakeQuant => self.weight_fake_quant.enable_fake_quant(true),
            QatAction::Eval => self.training = false,
            QatAction::Train => self.training = true,
            QatAction::FreezeBnStats | QatAction::UpdateBnStats => {}
        }
    }

    /// Whether the layer is in training mode.
    #[must_use]
    pub fn training(&self) -> bool {
        self.training
    }

    /// Forward only: `y = x @ weight_fq^T + bias` for `x` `[..., in]` (updates the weight fake
    /// quant as PyTorch's forward does).
    ///
    /// # Errors
    /// As [`Linear::forward_backward`] without `dy`.
    pub fn forward(&mut self, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        const OP: &str = "qat::Linear::forward";
        let rows = linear_rows(OP, x.shape(), self.in_features)?;
        let mut out_shape = x.shape().to_vec();
        if let Some(l) = out_shape.last_mut() {
            *l = self.out_features;
        }
        crate::nn::shape::checked_elements(OP, "output", &out_shape)?;
        let (fq, wfq, _) = self.fake_quant_weight(OP)?;
        let xd: Vec<f32> = x.iter().copied().collect();
        let y = self.matmul_y(&xd, &wfq, rows);
        self.weight_fake_quant = fq;
        to_array(OP, out_shape, y)
    }

    /// Forward and backward of `sum(y · dy)` (see the type's docs).
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] when `x` does not end in `in_features` or `dy` is not
    /// `[..., out_features]` with `x`'s leading shape; [`QuantError::EmptyInput`] for no rows;
    /// [`QuantError::TooLarge`]; [`QuantError::NanInput`] in `x`; the weight fake quant's
    /// errors. The layer is unchanged on error.
    pub fn forward_backward(&mut self, x: &ArrayD<f32>, dy: &ArrayD<f32>) -> Result<LinearStep> {
        const OP: &str = "qat::Linear::forward_backward";
        let (o, k) = (self.out_features, self.in_features);
        let rows = linear_rows(OP, x.shape(), k)?;
        let mut out_shape = x.shape().to_vec();
        if let Some(l) = out_shape.last_mut() {
            *l = o;
        }
        if dy.shape() != out_shape.as_slice() {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: out_shape,
                got: dy.shape().to_vec(),
            });
        }
        crate::nn::shape::checked_elements(OP, "output", &out_shape)?;
        if rows == 0 {
            return Err(QuantError::EmptyInput { op: OP });
        }
        if let Some(i) = x.iter().position(|v| v.is_nan()) {
            return Err(QuantError::NanInput { op: OP, index: i });
        }
        let (fq, wfq, mask) = self.fake_quant_weight(OP)?;
        let xd: Vec<f32> = x.iter().copied().collect();
        let gd: Vec<f32> = dy.iter().copied().collect();
        let y = self.matmul_y(&xd, &wfq, rows);
        let mut dx = vec![0.0f32; rows * k];
        for r in 0..rows {
            for j in 0..k {
                let acc: f64 = (0..o)
                    .map(|i| f64::from(gd[r * o + i]) * f64::from(wfq[i * k + j]))
                    .sum();
                dx[r * k + j] = acc as f32;
            }
        }
        let mut dw = vec![0.0f32; o * k];
        for i in 0..o {
            for j in 0..k {
                let acc: f64 = (0..rows)
                    .map(|r| f64::from(gd[r * o + i]) * f64::from(xd[r * k + j]))
                    .sum();
                dw[i * k + j] = (acc as f32) * mask.as_ref().map_or(1.0, |m| m[i * k + j]);
            }
        }
        let dbias = self.bias.as_ref().map(|_| {
            (0..o)
                .map(|i| (0..rows).map(|r| f64::from(gd[r * o + i])).sum::<f64>() as f32)
                .collect()
        });
        let step = LinearStep {
            y: to_array(OP, out_shape, y)?,
            dx: to_array(OP, x.shape().to_vec(), dx)?,
            dweight: to_array(OP, vec![o, k], dw)?,
            dbias,
            weight_fq: to_array(OP, vec![o, k], wfq)?,
        };
        self.weight_fake_quant = fq;
        Ok(step)
    }

    /// `torch.optim.SGD(lr)` on weight and bias with `step`'s gradients:
    /// `p = fma(−f32(lr), grad, p)`.
    ///
    /// # Errors
    /// [`QuantError::NonFinite`] for a non-finite `lr` or a result that is not finite;
    /// [`QuantError::LengthMismatch`] for gradients of another layer. Unchanged on error.
    pub fn sgd_step(&mut self, lr: f64, step: &LinearStep) -> Result<()> {
        const OP: &str = "qat::Linear::sgd_step";
        let mut w = self.weight.clone();
        let g: Vec<f32> = step.dweight.iter().copied().collect();
        sgd_update(OP, lr, &mut w, &g)?;
        let mut b = self.bias.clone();
        match (&mut b, &step.dbias) {
            (Some(b), Some(db)) => sgd_update(OP, lr, b, db)?,
            (None, None) => {}
            _ => {
                return Err(QuantError::LengthMismatch {
                    op: OP,
                    what: "bias gradient",
                    expected: self.bias.as_ref().map_or(0, Vec::len),
                    got: step.dbias.as_ref().map_or(0, Vec::len),
                });
            }
        }
        check_finite(OP, &w, b.as_deref())?;
        self.weight = w;
        self.bias = b;
        Ok(())
    }

    /// The weight fake quant after this step (not yet committed), the fake-quantized weight
    /// and its mask.
    fn fake_quant_weight(
        &self,
        op: &'static str,
    ) -> Result<(FusedMovingAvgObsFakeQuantize, Vec<f32>, Option<Vec<f32>>)> {
        let w = ArrayD::from_shape_vec(
            IxDyn(&[self.out_features, self.in_features]),
            self.weight.clone(),
        )
        .map_err(|_| QuantError::ShapeMismatch {
            op,
            expected: vec![self.out_features, self.in_features],
            got: vec![self.weight.len()],
        })?;
        let mut fq = self.weight_fake_quant.clone();
        let (wfq, mask) = fq.step(op, &w)?;
        Ok((
            fq,
            wfq.iter().copied().collect(),
            mask.map(|m| m.iter().copied().collect()),
        ))
    }

    fn matmul_y(&self, xd: &[f32], wfq: &[f32], rows: usize) -> Vec<f32> {
        let (o, k) = (self.out_features, self.in_features);
        let mut y = vec![0.0f32; rows * o];
        for r in 0..rows {
            for i in 0..o {
                let acc: f64 = (0..k)
                    .map(|j| f64::from(xd[r * k + j]) * f64::from(wfq[i * k + j]))
                    .sum();
                let mut v = acc as f32;
                if let Some(b) = &self.bias {
                    v += b[i];
                }
                y[r * o + i] = v;
            }
        }
        y
    }
}

fn to_array(op: &'static str, shape: Vec<usize>, data: Vec<f32>) -> Result<ArrayD<f32>> {
    let n = data.len();
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|_| QuantError::ShapeMismatch {
        op,
        expected: shape.clone(),
        got: vec![n],
    })
}

fn check_finite(op: &'static str, w: &[f32], b: Option<&[f32]>) -> Result<()> {
    match w
        .iter()
        .chain(b.into_iter().flatten())
        .find(|v| !v.is_finite())
    {
        Some(&v) => Err(QuantError::NonFinite {
            op,
            what: "weight or bias",
            value: f64::from(v),
        }),
        None => Ok(()),
    }
}
