//! The observers and calibrators: observe NumPy arrays, merge, parameters, state as JSON
//! (and pickle, through the JSON state, so that they travel between Dask or Ray workers).

use pyo3::prelude::*;
use pyo3::types::PyType;
use qnumeric::{
    AnyQParams, DynamicObserver, EntropyObserver, FixedQParamsObserver, HistogramObserver,
    MinMaxObserver, MseObserver, Observer, PerChannelMinMaxObserver, PercentileObserver,
    QuantError, UpdateRule,
};

use crate::arrays::FloatIn;
use crate::errors::{IntoPy, to_py};
use crate::kernels::{PyPerChannelQParams, PyQParams, range_of, spec_of};

/// `AnyQParams` as the Python class of its kind.
pub fn qparams_to_py(py: Python<'_>, q: AnyQParams) -> PyResult<Py<PyAny>> {
    Ok(match q {
        AnyQParams::PerTensor(p) => Py::new(py, PyQParams { inner: p })?.into_any(),
        AnyQParams::PerChannel(p) => Py::new(py, PyPerChannelQParams { inner: p })?.into_any(),
    })
}

fn json_error(op: &'static str, e: &serde_json::Error) -> PyErr {
    to_py(QuantError::Format {
        op,
        detail: e.to_string(),
    })
}

/// The methods every observer class shares.
macro_rules! observer_methods {
    ($py_ty:ident, $rust_ty:ty, $name:literal, { $($own:tt)* }) => {
        #[pymethods]
        impl $py_ty {
            $($own)*

            /// Feeds one batch (a float32, float64 or float16 array of any shape).
            fn observe(&mut self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<()> {
                let x = FloatIn::extract(concat!($name, ".observe: x"), x)?;
                let v = x.view();
                let inner = &mut self.inner;
                py.detach(|| inner.observe_view(v.as_crate())).py()
            }
            /// Merges another observer of the same configuration that saw other data: the
            /// result is what one observer that saw both would hold.
            fn merge(slf: &Bound<'_, Self>, other: &Bound<'_, Self>) -> PyResult<()> {
                let o = other.borrow().inner.clone();
                slf.borrow_mut().inner.merge(&o).py()
            }
            /// The quantization parameters for the data seen so far (`QParams`, or
            /// `PerChannelQParams` for per-channel observers).
            fn qparams(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                qparams_to_py(py, self.inner.qparams().py()?)
            }
            /// PyTorch's class name for the observer as configured.
            #[getter]
            fn name(&self) -> &'static str {
                self.inner.name()
            }
            /// The state as JSON: configuration and statistics (small; histograms keep their
            /// bins).
            fn to_json(&self) -> PyResult<String> {
                serde_json::to_string(&self.inner)
                    .map_err(|e| json_error(concat!($name, ".to_json"), &e))
            }
            /// An observer from `to_json`'s state (validated as the constructor validates).
            #[classmethod]
            fn from_json(_cls: &Bound<'_, PyType>, state: &str) -> PyResult<Self> {
                let inner: $rust_ty = serde_json::from_str(state)
                    .map_err(|e| json_error(concat!($name, ".from_json"), &e))?;
                Ok(Self { inner })
            }
            /// A copy.
            fn copy(&self) -> Self {
                Self {
                    inner: self.inner.clone(),
                }
            }
            fn __copy__(&self) -> Self {
                self.copy()
            }
            fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
                self.copy()
            }
            fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String,))> {
                let from = slf.get_type().getattr("from_json")?.unbind();
                Ok((from, (slf.borrow().to_json()?,)))
            }
            fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
                match other.cast::<Self>() {
                    Ok(o) => self.inner == o.borrow().inner,
                    Err(_) => false,
                }
            }
            fn __repr__(&self) -> String {
                format!("<{} {}>", $name, self.inner.name())
            }
        }
    };
}

/// PyTorch's `MinMaxObserver`, or `MovingAverageMinMaxObserver` with an
/// `averaging_constant`.
#[pyclass(name = "MinMaxObserver", module = "qnumeric")]
pub struct PyMinMax {
    inner: MinMaxObserver,
}

observer_methods!(PyMinMax, MinMaxObserver, "MinMaxObserver", {
    #[new]
    #[pyo3(signature = (dtype="quint8", qscheme="per_tensor_affine", reduce_range=false, quant_min=None, quant_max=None, eps=None, averaging_constant=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        dtype: &str,
        qscheme: &str,
        reduce_range: bool,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        eps: Option<f32>,
        averaging_constant: Option<f32>,
    ) -> PyResult<Self> {
        let spec = spec_of(dtype, qscheme, reduce_range, quant_min, quant_max, eps)?;
        let rule = match averaging_constant {
            None => UpdateRule::Running,
            Some(c) => UpdateRule::MovingAverage {
                averaging_constant: c,
            },
        };
        Ok(Self {
            inner: MinMaxObserver::with_rule(spec, rule).py()?,
        })
    }
    /// The running `(min, max)`, `None` before any data.
    #[getter]
    fn min_max(&self) -> Option<(f32, f32)> {
        self.inner.min_max()
    }
});

/// PyTorch's `PerChannelMinMaxObserver` (or the moving-average one).
#[pyclass(name = "PerChannelMinMaxObserver", module = "qnumeric")]
pub struct PyPerChannel {
    inner: PerChannelMinMaxObserver,
}

observer_methods!(
    PyPerChannel,
    PerChannelMinMaxObserver,
    "PerChannelMinMaxObserver",
    {
        #[new]
        #[pyo3(signature = (ch_axis=0, dtype="qint8", qscheme="per_channel_symmetric", reduce_range=false, quant_min=None, quant_max=None, eps=None, averaging_constant=None))]
        #[allow(clippy::too_many_arguments)]
        fn new(
            ch_axis: isize,
            dtype: &str,
            qscheme: &str,
            reduce_range: bool,
            quant_min: Option<i64>,
            quant_max: Option<i64>,
            eps: Option<f32>,
            averaging_constant: Option<f32>,
        ) -> PyResult<Self> {
            let spec = spec_of(dtype, qscheme, reduce_range, quant_min, quant_max, eps)?;
            let rule = match averaging_constant {
                None => UpdateRule::Running,
                Some(c) => UpdateRule::MovingAverage {
                    averaging_constant: c,
                },
            };
            Ok(Self {
                inner: PerChannelMinMaxObserver::with_rule(spec, ch_axis, rule).py()?,
            })
        }
    }
);

/// PyTorch's `HistogramObserver` (its L2 search over the histogram, bit for bit).
#[pyclass(name = "HistogramObserver", module = "qnumeric")]
pub struct PyHistogram {
    inner: HistogramObserver,
}

observer_methods!(PyHistogram, HistogramObserver, "HistogramObserver", {
    #[new]
    #[pyo3(signature = (bins=2048, dtype="quint8", qscheme="per_tensor_affine", reduce_range=false, quant_min=None, quant_max=None, eps=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        bins: usize,
        dtype: &str,
        qscheme: &str,
        reduce_range: bool,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        eps: Option<f32>,
    ) -> PyResult<Self> {
        let spec = spec_of(dtype, qscheme, reduce_range, quant_min, quant_max, eps)?;
        Ok(Self {
            inner: HistogramObserver::with_bins(spec, bins).py()?,
        })
    }
});

/// A calibrator that clips at a percentile of `|x|` (TensorRT's percentile calibration).
#[pyclass(name = "PercentileObserver", module = "qnumeric")]
pub struct PyPercentile {
    inner: PercentileObserver,
}

observer_methods!(PyPercentile, PercentileObserver, "PercentileObserver", {
    #[new]
    #[pyo3(signature = (percentile=99.99, dtype="qint8", qscheme="per_tensor_symmetric", reduce_range=false, quant_min=None, quant_max=None, eps=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        percentile: f64,
        dtype: &str,
        qscheme: &str,
        reduce_range: bool,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        eps: Option<f32>,
    ) -> PyResult<Self> {
        let spec = spec_of(dtype, qscheme, reduce_range, quant_min, quant_max, eps)?;
        Ok(Self {
            inner: PercentileObserver::new(spec, percentile).py()?,
        })
    }
});

/// A calibrator that picks the clipping range of least mean squared error.
#[pyclass(name = "MseObserver", module = "qnumeric")]
pub struct PyMse {
    inner: MseObserver,
}

observer_methods!(PyMse, MseObserver, "MseObserver", {
    #[new]
    #[pyo3(signature = (dtype="qint8", qscheme="per_tensor_symmetric", reduce_range=false, quant_min=None, quant_max=None, eps=None))]
    fn new(
        dtype: &str,
        qscheme: &str,
        reduce_range: bool,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        eps: Option<f32>,
    ) -> PyResult<Self> {
        let spec = spec_of(dtype, qscheme, reduce_range, quant_min, quant_max, eps)?;
        Ok(Self {
            inner: MseObserver::new(spec).py()?,
        })
    }
});

/// A calibrator that picks the clipping range of least KL divergence (TensorRT's entropy
/// calibration).
#[pyclass(name = "EntropyObserver", module = "qnumeric")]
pub struct PyEntropy {
    inner: EntropyObserver,
}

observer_methods!(PyEntropy, EntropyObserver, "EntropyObserver", {
    #[new]
    #[pyo3(signature = (dtype="qint8", qscheme="per_tensor_symmetric", reduce_range=false, quant_min=None, quant_max=None, eps=None))]
    fn new(
        dtype: &str,
        qscheme: &str,
        reduce_range: bool,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        eps: Option<f32>,
    ) -> PyResult<Self> {
        let spec = spec_of(dtype, qscheme, reduce_range, quant_min, quant_max, eps)?;
        Ok(Self {
            inner: EntropyObserver::new(spec).py()?,
        })
    }
});

/// PyTorch's `FixedQParamsObserver`: the same parameters whatever it sees.
#[pyclass(name = "FixedQParamsObserver", module = "qnumeric")]
pub struct PyFixed {
    inner: FixedQParamsObserver,
}

observer_methods!(PyFixed, FixedQParamsObserver, "FixedQParamsObserver", {
    #[new]
    #[pyo3(signature = (scale, zero_point, dtype="quint8", quant_min=None, quant_max=None))]
    fn new(
        scale: f32,
        zero_point: i64,
        dtype: &str,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
    ) -> PyResult<Self> {
        let range = range_of(dtype, quant_min, quant_max)?;
        Ok(Self {
            inner: FixedQParamsObserver::new(scale, zero_point, range).py()?,
        })
    }
});

/// The observer of dynamic quantization: the last batch's range.
#[pyclass(name = "DynamicObserver", module = "qnumeric")]
pub struct PyDynamic {
    inner: DynamicObserver,
}

observer_methods!(PyDynamic, DynamicObserver, "DynamicObserver", {
    #[new]
    #[pyo3(signature = (dtype="quint8", qscheme="per_tensor_affine", reduce_range=false, quant_min=None, quant_max=None, eps=None))]
    fn new(
        dtype: &str,
        qscheme: &str,
        reduce_range: bool,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        eps: Option<f32>,
    ) -> PyResult<Self> {
        let spec = spec_of(dtype, qscheme, reduce_range, quant_min, quant_max, eps)?;
        Ok(Self {
            inner: DynamicObserver::new(spec).py()?,
        })
    }
});

/// Registers the classes.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMinMax>()?;
    m.add_class::<PyPerChannel>()?;
    m.add_class::<PyHistogram>()?;
    m.add_class::<PyPercentile>()?;
    m.add_class::<PyMse>()?;
    m.add_class::<PyEntropy>()?;
    m.add_class::<PyFixed>()?;
    m.add_class::<PyDynamic>()?;
    Ok(())
}
