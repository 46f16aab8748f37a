//! NumPy arrays in and out: float32 / float64 / float16 read without copying, results
//! returned as new NumPy arrays (moved, not copied, from the Rust array).

use half::f16;
use ndarray::{ArrayD, ArrayViewD};
use numpy::{IntoPyArray, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// A float NumPy array of one of the supported dtypes, borrowed read-only.
pub enum FloatIn<'py> {
    /// float32.
    F32(PyReadonlyArrayDyn<'py, f32>),
    /// float64.
    F64(PyReadonlyArrayDyn<'py, f64>),
    /// float16.
    F16(PyReadonlyArrayDyn<'py, f16>),
}

/// A view of a [`FloatIn`], `Send` so that work runs without the GIL.
pub enum FloatView<'a> {
    /// float32.
    F32(ArrayViewD<'a, f32>),
    /// float64.
    F64(ArrayViewD<'a, f64>),
    /// float16.
    F16(ArrayViewD<'a, f16>),
}

fn type_error(what: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    let got = match obj.cast::<numpy::PyUntypedArray>() {
        Ok(a) => format!("a numpy array of dtype {}", a.dtype()),
        Err(_) => format!(
            "a {}",
            obj.get_type().name().map_or("?".into(), |n| n.to_string())
        ),
    };
    PyTypeError::new_err(format!(
        "{what}: expected a numpy array of dtype float32, float64 or float16, got {got}"
    ))
}

impl<'py> FloatIn<'py> {
    /// Reads `obj` as a float array (`what` names the argument in the error).
    pub fn extract(what: &str, obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f32>>() {
            return Ok(FloatIn::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f64>>() {
            return Ok(FloatIn::F64(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f16>>() {
            return Ok(FloatIn::F16(a));
        }
        Err(type_error(what, obj))
    }

    /// The view.
    pub fn view(&self) -> FloatView<'_> {
        match self {
            FloatIn::F32(a) => FloatView::F32(a.as_array()),
            FloatIn::F64(a) => FloatView::F64(a.as_array()),
            FloatIn::F16(a) => FloatView::F16(a.as_array()),
        }
    }

    /// NumPy's name of the dtype.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            FloatIn::F32(_) => "float32",
            FloatIn::F64(_) => "float64",
            FloatIn::F16(_) => "float16",
        }
    }
}

impl FloatView<'_> {
    /// The crate's view type (observers take it).
    pub fn as_crate(&self) -> qnumeric::FloatView<'_> {
        match self {
            FloatView::F32(a) => qnumeric::FloatView::F32(a.view()),
            FloatView::F64(a) => qnumeric::FloatView::F64(a.view()),
            FloatView::F16(a) => qnumeric::FloatView::F16(a.view()),
        }
    }
}

/// A float result, of the input's dtype.
pub enum FloatOut {
    /// float32.
    F32(ArrayD<f32>),
    /// float64.
    F64(ArrayD<f64>),
    /// float16.
    F16(ArrayD<f16>),
}

impl FloatOut {
    /// Moves the array into a NumPy array.
    pub fn into_py(self, py: Python<'_>) -> Py<PyAny> {
        match self {
            FloatOut::F32(a) => a.into_pyarray(py).into_any().unbind(),
            FloatOut::F64(a) => a.into_pyarray(py).into_any().unbind(),
            FloatOut::F16(a) => a.into_pyarray(py).into_any().unbind(),
        }
    }
}

/// Runs `f` on the view of the matching dtype, without the GIL, and wraps its array.
macro_rules! per_float {
    ($py:expr, $view:expr, |$a:ident| $body:expr) => {{
        let v = $view;
        $py.detach(move || -> qnumeric::Result<$crate::arrays::FloatOut> {
            Ok(match v {
                $crate::arrays::FloatView::F32($a) => $crate::arrays::FloatOut::F32($body?),
                $crate::arrays::FloatView::F64($a) => $crate::arrays::FloatOut::F64($body?),
                $crate::arrays::FloatView::F16($a) => $crate::arrays::FloatOut::F16($body?),
            })
        })
    }};
}
pub(crate) use per_float;
