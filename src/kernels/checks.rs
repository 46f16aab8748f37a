//! Argument checks shared by the kernels. Every check runs before anything is written.

use ndarray::{ArrayRef, Dimension};

use crate::dtype::QDType;
use crate::element::{QFloat, QInt};
use crate::error::{QuantError, Result};

use super::layout::find_nan;

pub(crate) fn same_shape<A, B, D: Dimension>(
    op: &'static str,
    x: &ArrayRef<A, D>,
    out: &ArrayRef<B, D>,
) -> Result<()> {
    if x.shape() != out.shape() {
        return Err(QuantError::ShapeMismatch {
            op,
            expected: x.shape().to_vec(),
            got: out.shape().to_vec(),
        });
    }
    Ok(())
}

pub(crate) fn storage_holds<Q: QInt>(op: &'static str, dtype: QDType) -> Result<()> {
    if Q::MIN > dtype.min() || Q::MAX < dtype.max() {
        return Err(QuantError::StorageTooNarrow {
            op,
            storage: Q::NAME,
            dtype,
        });
    }
    Ok(())
}

pub(crate) fn no_nan<F: QFloat, D: Dimension>(op: &'static str, x: &ArrayRef<F, D>) -> Result<()> {
    match find_nan(x) {
        Some(index) => Err(QuantError::NanInput { op, index }),
        None => Ok(()),
    }
}

/// Integer data must lie in `[min, max]`; only scanned when the storage type is wider.
pub(crate) fn ints_in_range<Q: QInt, D: Dimension>(
    op: &'static str,
    q: &ArrayRef<Q, D>,
    min: i64,
    max: i64,
) -> Result<()> {
    if Q::MIN >= min && Q::MAX <= max {
        return Ok(());
    }
    let (lo, hi) = (min as i32, max as i32);
    let bad = |v: &Q| {
        let v = v.to_i32();
        v < lo || v > hi
    };
    let any_bad = match q.as_slice_memory_order() {
        Some(s) => s.iter().fold(false, |acc, v| acc | bad(v)),
        None => q.iter().any(bad),
    };
    if any_bad {
        let v = q.iter().find(|v| bad(v)).map_or(0, |v| v.to_i32());
        return Err(QuantError::InvalidParameter {
            op,
            what: "quantized value",
            value: v as f64,
            reason: "outside the dtype's range",
        });
    }
    Ok(())
}
