//! Argument checks shared by the kernels. Every check runs before anything is written.

use ndarray::{ArrayRef, Dimension};

use crate::dtype::QDType;
use crate::element::{QFloat, QInt};
use crate::error::{QuantError, Result};

use super::layout::find_nan as find_nan_index;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The logical (row-major) index of the first NaN in `x`, if any: the check the kernels make
/// during their pass, as a separate read-only scan. Call it before an `_into` kernel when the
/// output buffer must stay untouched on a NaN input.
///
/// ```
/// use ndarray::array;
/// assert_eq!(qnumeric::find_nan(&array![1.0f32, f32::NAN, 2.0]), Some(1));
/// assert_eq!(qnumeric::find_nan(&array![1.0f32, 2.0]), None);
/// ```
pub fn find_nan<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Option<usize> {
    find_nan_index(x)
}

pub(crate) fn no_nan<F: QFloat, D: Dimension>(op: &'static str, x: &ArrayRef<F, D>) -> Result<()> {
    match find_nan_index(x) {
        Some(index) => Err(QuantError::NanInput { op, index }),
        None => Ok(()),
    }
}

/// Records a NaN seen during a kernel's pass (the hot loops find it at no extra cost, so no
/// read-only scan runs before them). Shared by the threads of one call.
#[derive(Debug, Default)]
pub(crate) struct NanFlag(AtomicBool);

impl NanFlag {
    /// Records the result of a slice run.
    #[inline(always)]
    pub(crate) fn record(&self, seen: bool) {
        if seen {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Passes one element through, recording it if it is NaN (strided fallbacks).
    #[inline(always)]
    pub(crate) fn pass(&self, v: f32) -> f32 {
        if v.is_nan() {
            self.0.store(true, Ordering::Relaxed);
        }
        v
    }

    /// [`QuantError::NanInput`] with the first NaN's index if a NaN was recorded.
    pub(crate) fn check<F: QFloat, D: Dimension>(
        &self,
        op: &'static str,
        x: &ArrayRef<F, D>,
    ) -> Result<()> {
        if self.0.load(Ordering::Relaxed) {
            no_nan(op, x)?;
        }
        Ok(())
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
