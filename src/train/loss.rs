//! Losses with their gradient: [`cross_entropy`], [`mse_loss`].

use ndarray::{ArrayD, Axis};

use crate::error::{QuantError, Result};

/// Mean cross-entropy of logits `[N, C]` against one class index per row (a stable
/// log-softmax, in `f64`), and its gradient `(softmax − one_hot) / N`.
///
/// # Errors
/// [`QuantError::ShapeMismatch`] for logits that are not `[N, C]` with `C >= 1`;
/// [`QuantError::EmptyInput`] for `N = 0`; [`QuantError::LengthMismatch`] for a label count
/// other than `N`; [`QuantError::InvalidParameter`] for a label outside `0..C`;
/// [`QuantError::NonFinite`] for a NaN or infinite logit.
pub fn cross_entropy(logits: &ArrayD<f32>, labels: &[i64]) -> Result<(f64, ArrayD<f32>)> {
    const OP: &str = "train::cross_entropy";
    let &[n, c] = logits.shape() else {
        return Err(QuantError::ShapeMismatch {
            op: OP,
            expected: vec![labels.len(), 0],
            got: logits.shape().to_vec(),
        });
    };
    if c == 0 {
        return Err(QuantError::ShapeMismatch {
            op: OP,
            expected: vec![n, 1],
            got: vec![n, c],
        });
    }
    if n == 0 {
        return Err(QuantError::EmptyInput { op: OP });
    }
    if labels.len() != n {
        return Err(QuantError::LengthMismatch {
            op: OP,
            what: "labels",
            expected: n,
            got: labels.len(),
        });
    }
    if let Some(v) = logits.iter().find(|v| !v.is_finite()) {
        return Err(QuantError::NonFinite {
            op: OP,
            what: "logit",
            value: f64::from(*v),
        });
    }
    let mut grad = logits.clone();
    let mut loss = 0.0f64;
    for (mut row, &label) in grad.axis_iter_mut(Axis(0)).zip(labels) {
        let t =
            usize::try_from(label)
                .ok()
                .filter(|&t| t < c)
                .ok_or(QuantError::InvalidParameter {
                    op: OP,
                    what: "label",
                    value: label as f64,
                    reason: "must be a class index in 0..C",
                })?;
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
        let log_z = m + sum.ln();
        loss += log_z - f64::from(row[t]);
        for (j, v) in row.iter_mut().enumerate() {
            let p = (f64::from(*v) - log_z).exp();
            *v = ((p - if j == t { 1.0 } else { 0.0 }) / n as f64) as f32;
        }
    }
    Ok((loss / n as f64, grad))
}

/// Mean squared error `mean((pred − target)²)` and its gradient `2·(pred − target) / len`.
///
/// # Errors
/// [`QuantError::ShapeMismatch`] for different shapes; [`QuantError::EmptyInput`] for empty
/// arrays.
pub fn mse_loss(pred: &ArrayD<f32>, target: &ArrayD<f32>) -> Result<(f64, ArrayD<f32>)> {
    const OP: &str = "train::mse_loss";
    if pred.shape() != target.shape() {
        return Err(QuantError::ShapeMismatch {
            op: OP,
            expected: pred.shape().to_vec(),
            got: target.shape().to_vec(),
        });
    }
    if pred.is_empty() {
        return Err(QuantError::EmptyInput { op: OP });
    }
    let len = pred.len() as f64;
    let mut grad = pred - target;
    let loss = grad.iter().map(|&d| f64::from(d).powi(2)).sum::<f64>() / len;
    grad.mapv_inplace(|d| (2.0 * f64::from(d) / len) as f32);
    Ok((loss, grad))
}
