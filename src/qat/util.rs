//! Conversions shared by the QAT modules: every module computes in `f32` (as PyTorch does) on
//! a standard-layout copy of its input, and writes results back in the caller's float type.

use ndarray::{Array, ArrayD, ArrayRef, Dimension, IxDyn};

use crate::element::QFloat;
use crate::error::{QuantError, Result};

/// `x` as a standard-layout `f32` array (logical order), refused when empty.
pub(crate) fn to_f32<F: QFloat, D: Dimension>(
    op: &'static str,
    x: &ArrayRef<F, D>,
) -> Result<ArrayD<f32>> {
    if x.is_empty() {
        return Err(QuantError::EmptyInput { op });
    }
    crate::nn::shape::checked_elements(op, "input", x.shape())?;
    let v: Vec<f32> = x.iter().map(|v| v.to_compute()).collect();
    ArrayD::from_shape_vec(IxDyn(x.shape()), v).map_err(|_| QuantError::ShapeMismatch {
        op,
        expected: x.shape().to_vec(),
        got: vec![x.len()],
    })
}

/// Checks that `b` has the shape of `a`.
pub(crate) fn same_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(QuantError::ShapeMismatch {
            op,
            expected: a.to_vec(),
            got: b.to_vec(),
        })
    }
}

/// Writes `src` (logical order) into `out`, converting each value to `F`.
pub(crate) fn write_back<F: QFloat, D: Dimension>(
    op: &'static str,
    src: &ArrayD<f32>,
    out: &mut ArrayRef<F, D>,
) -> Result<()> {
    same_shape(op, src.shape(), out.shape())?;
    for (o, &v) in out.iter_mut().zip(src.iter()) {
        *o = F::from_compute(v);
    }
    Ok(())
}

/// A new array of `x`'s shape and dimension filled from `src` (logical order).
pub(crate) fn new_like<F: QFloat, D: Dimension>(
    op: &'static str,
    x: &ArrayRef<F, D>,
    src: &ArrayD<f32>,
) -> Result<Array<F, D>> {
    let mut out = Array::from_elem(x.raw_dim(), F::zero());
    write_back(op, src, &mut out)?;
    Ok(out)
}

/// `dy · mask` element by element (`mask` holds 1 or 0), as PyTorch's `dY * mask`: a masked
/// element is `±0` with the sign of `dy`.
pub(crate) fn times_mask(dy: &ArrayD<f32>, mask: Option<&ArrayD<f32>>) -> ArrayD<f32> {
    match mask {
        Some(m) => {
            let mut out = dy.clone();
            for (o, &k) in out.iter_mut().zip(m.iter()) {
                *o *= k;
            }
            out
        }
        None => dy.clone(),
    }
}
