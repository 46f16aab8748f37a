//! The error metrics on two NumPy arrays of the same shape and dtype.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::arrays::{FloatIn, FloatView};
use crate::errors::IntoPy;

macro_rules! metric {
    ($fn_name:ident, $crate_fn:path, $doc:literal) => {
        #[doc = $doc]
        #[pyfunction]
        pub fn $fn_name(
            py: Python<'_>,
            x: &Bound<'_, PyAny>,
            y: &Bound<'_, PyAny>,
        ) -> PyResult<f64> {
            let op = stringify!($fn_name);
            let xa = FloatIn::extract(&format!("{op}: x"), x)?;
            let ya = FloatIn::extract(&format!("{op}: y"), y)?;
            let r = match (xa.view(), ya.view()) {
                (FloatView::F32(a), FloatView::F32(b)) => py.detach(|| $crate_fn(&a, &b)),
                (FloatView::F64(a), FloatView::F64(b)) => py.detach(|| $crate_fn(&a, &b)),
                (FloatView::F16(a), FloatView::F16(b)) => py.detach(|| $crate_fn(&a, &b)),
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "{op}: x is {} and y {}: they must have the same dtype",
                        xa.dtype_name(),
                        ya.dtype_name()
                    )));
                }
            };
            r.py()
        }
    };
}

metric!(
    sqnr,
    qnumeric::sqnr,
    "`sqnr(x, y)`: signal-to-quantization-noise ratio of `y` against the reference `x`, in dB \
     (`+inf` when equal)."
);
metric!(mse, qnumeric::mse, "`mse(x, y)`: mean squared error.");
metric!(
    max_abs_error,
    qnumeric::max_abs_error,
    "`max_abs_error(x, y)`: largest `|x - y|`."
);
metric!(
    cosine_similarity,
    qnumeric::cosine_similarity,
    "`cosine_similarity(x, y)`: of the flattened arrays."
);
metric!(
    normalized_l2_error,
    qnumeric::normalized_l2_error,
    "`normalized_l2_error(x, y)`: `||x - y|| / ||x||`."
);
