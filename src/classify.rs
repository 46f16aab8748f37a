//! Classifier read-outs: the predicted class of each row of logits, and top-1 accuracy
//! against labels (what a quantized classifier is judged by next to SQNR).

use ndarray::{ArrayRef, Ix2};

use crate::error::{QuantError, Result};

/// Index of the largest value of each row of `[N, K]` logits (ties: the first; NaN never
/// wins over a number), the usual classifier prediction.
///
/// # Errors
/// [`QuantError::EmptyInput`] when `K == 0`.
///
/// # Examples
/// ```
/// use ndarray::arr2;
/// use qnumeric::classify::argmax_rows;
/// assert_eq!(argmax_rows(&arr2(&[[0.1f32, 0.9], [2.0, -1.0]]))?, vec![1, 0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn argmax_rows(logits: &ArrayRef<f32, Ix2>) -> Result<Vec<usize>> {
    if logits.ncols() == 0 {
        return Err(QuantError::EmptyInput { op: "argmax_rows" });
    }
    Ok(logits
        .rows()
        .into_iter()
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] || row[best].is_nan() && !v.is_nan() {
                    best = i;
                }
            }
            best
        })
        .collect())
}

/// Fraction of rows whose [`argmax_rows`] prediction equals the label.
///
/// # Errors
/// [`QuantError::LengthMismatch`] when there are not as many labels as rows;
/// [`QuantError::EmptyInput`] for no rows or no classes.
///
/// # Examples
/// ```
/// use ndarray::arr2;
/// use qnumeric::classify::accuracy;
/// assert_eq!(accuracy(&arr2(&[[0.1f32, 0.9], [2.0, -1.0]]), &[1, 1])?, 0.5);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn accuracy(logits: &ArrayRef<f32, Ix2>, labels: &[i64]) -> Result<f64> {
    const OP: &str = "accuracy";
    if labels.len() != logits.nrows() {
        return Err(QuantError::LengthMismatch {
            op: OP,
            what: "labels",
            expected: logits.nrows(),
            got: labels.len(),
        });
    }
    if labels.is_empty() {
        return Err(QuantError::EmptyInput { op: OP });
    }
    let pred = argmax_rows(logits)?;
    let hits = pred
        .iter()
        .zip(labels)
        .filter(|&(&p, &l)| i64::try_from(p).is_ok_and(|p| p == l))
        .count();
    Ok(hits as f64 / labels.len() as f64)
}
