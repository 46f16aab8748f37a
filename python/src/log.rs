//! The Numeric Suite's streaming log: pairs `(layer, float output, quantized output)` pushed
//! batch after batch (from PyTorch hooks, an engine, anything), merged across shards, and its
//! report and diagnosis.

use numpy::PyReadonlyArray2;
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::PyType;
use qnumeric::QuantError;
use qnumeric::diagnose::{Thresholds, diagnose_report};
use qnumeric::ns::{Comparison, Mask, NsReport, NumericLog, SampleDims};

use crate::arrays::{FloatIn, FloatView};
use crate::dumps::{DiagnosisOf, PyDiagnosis, json_loads};
use crate::errors::{IntoPy, to_py};
use crate::kernels::PyQParams;

fn json_error(op: &'static str, e: &serde_json::Error) -> PyErr {
    to_py(QuantError::Format {
        op,
        detail: e.to_string(),
    })
}

/// The streaming log of the Numeric Suite: per layer, SQNR, normalized L2, cosine, MSE, the
/// largest and mean error, and each sample's SQNR, updated batch after batch without keeping
/// the tensors. Logs of shards of the data merge into what one log of all of it holds, bit
/// for bit; they pickle as their (small) JSON state.
#[pyclass(name = "NumericLog", module = "qnumeric")]
pub struct PyNumericLog {
    // A mutex: the crate's log is `Send` but not `Sync` (callers' comparisons are `Send`).
    inner: Mutex<NumericLog>,
}

macro_rules! push_pair {
    ($log:expr, $layer:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (FloatView::F32($x), FloatView::F32($y)) => $body,
            (FloatView::F32($x), FloatView::F64($y)) => $body,
            (FloatView::F32($x), FloatView::F16($y)) => $body,
            (FloatView::F64($x), FloatView::F32($y)) => $body,
            (FloatView::F64($x), FloatView::F64($y)) => $body,
            (FloatView::F64($x), FloatView::F16($y)) => $body,
            (FloatView::F16($x), FloatView::F32($y)) => $body,
            (FloatView::F16($x), FloatView::F64($y)) => $body,
            (FloatView::F16($x), FloatView::F16($y)) => $body,
        }
    };
}

#[pymethods]
impl PyNumericLog {
    /// An empty streaming log.
    #[new]
    fn new() -> Self {
        Self::of(NumericLog::streaming())
    }
    /// Adds one batch of a layer: `float` (the reference) and `quant` (the quantized model's
    /// output, dequantized), same shape, samples on axis 0. `mask` (`[N, T]`, True for real
    /// positions) leaves padding out of every figure; `sample_dims=2` makes every real
    /// `(n, t)` position a sample. `output`: the layer's output parameters (clipping and
    /// error in quanta are then reported).
    #[pyo3(signature = (layer, float, quant, mask=None, sample_dims=1, output=None))]
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        py: Python<'_>,
        layer: &str,
        float: &Bound<'_, PyAny>,
        quant: &Bound<'_, PyAny>,
        mask: Option<PyReadonlyArray2<'_, bool>>,
        sample_dims: usize,
        output: Option<PyRef<'_, PyQParams>>,
    ) -> PyResult<()> {
        let f = FloatIn::extract("NumericLog.push: float", float)?;
        let q = FloatIn::extract("NumericLog.push: quant", quant)?;
        let out = output.map(|o| o.inner);
        let mask = match mask {
            Some(m) => Some(Mask::new(m.as_array().to_owned()).py()?),
            None => None,
        };
        let dims = SampleDims::from_count(sample_dims).py()?;
        let (a, b) = (f.view(), q.view());
        // The log is locked without the GIL and released before the GIL is taken back: a
        // thread that holds the GIL and waits for the log cannot deadlock with this one.
        py.detach(|| {
            let mut guard = self.log();
            let log = &mut *guard;
            push_pair!(log, layer, a, b, |x, y| match &mask {
                Some(m) => log.push_masked(layer, &x, &y, out.as_ref(), m, dims),
                None => log.push(layer, &x, &y, out.as_ref()),
            })
        })
        .py()
    }
    /// Adds another log's statistics (another shard of the data): the result is one log of
    /// all the batches, this log's first.
    fn merge(slf: &Bound<'_, Self>, other: &Bound<'_, Self>) -> PyResult<()> {
        // A copy of `other` first: `log.merge(log)` must not lock one mutex twice.
        let copy = other.borrow().copy()?;
        let o = copy.log();
        slf.borrow().log().merge(&o).py()
    }
    /// The layers, in the order of their first push.
    #[getter]
    fn layers(&self) -> Vec<String> {
        self.log()
            .layer_names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }
    fn __len__(&self) -> usize {
        self.log().len()
    }
    /// Switches a layer's logging on or off.
    fn set_enabled(&mut self, layer: &str, enabled: bool) {
        self.log().set_enabled(layer, enabled);
    }
    /// A layer's SQNR over everything pushed (dB).
    fn sqnr_db(&self, layer: &str) -> PyResult<f64> {
        self.with_stats(layer, |s| s.sqnr_db())
    }
    /// A layer's per-sample SQNR (dB), in push order.
    fn sample_sqnr_db(&self, layer: &str) -> PyResult<Vec<f64>> {
        self.with_stats(layer, |s| s.sample_sqnr_db())
    }
    /// A layer's figures as a dict (SQNR, normalized L2, cosine, MSE, largest and mean
    /// error, clipping, samples).
    fn comparison(&self, py: Python<'_>, layer: &str) -> PyResult<Py<PyAny>> {
        let c = self
            .log()
            .comparison(layer)
            .ok_or_else(|| not_found(layer))?;
        let s = serde_json::to_string(&c).map_err(|e| json_error("NumericLog.comparison", &e))?;
        json_loads(py, &s)
    }
    /// The report: `self` as the cumulative comparison (each layer in the quantized model
    /// against the float model), `local` as the layers' own errors (each float layer on the
    /// quantized layer's input against the quantized layer), when given.
    #[pyo3(signature = (local=None, threshold=None))]
    fn report(
        &self,
        local: Option<PyRef<'_, Self>>,
        threshold: Option<f64>,
    ) -> PyResult<PyNsReport> {
        let local = local.as_ref().map(|l| l.log());
        let mut r = NsReport::from_logs(Some(&*self.log()), local.as_deref());
        if let Some(t) = threshold {
            r = r.with_jump_threshold(t).py()?;
        }
        Ok(PyNsReport { inner: r })
    }
    /// The state as JSON (the statistics; small: a few numbers per layer and per sample).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&*self.log()).map_err(|e| json_error("NumericLog.to_json", &e))
    }
    /// A log from `to_json`'s state (validated).
    #[classmethod]
    fn from_json(_cls: &Bound<'_, PyType>, state: &str) -> PyResult<Self> {
        let inner: NumericLog =
            serde_json::from_str(state).map_err(|e| json_error("NumericLog.from_json", &e))?;
        Ok(Self::of(inner))
    }
    /// A copy.
    fn copy(&self) -> PyResult<Self> {
        Self::from_state(&self.to_json()?)
    }
    fn __copy__(&self) -> PyResult<Self> {
        self.copy()
    }
    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyResult<Self> {
        self.copy()
    }
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String,))> {
        let from = slf.get_type().getattr("from_json")?.unbind();
        Ok((from, (slf.borrow().to_json()?,)))
    }
    fn __repr__(&self) -> String {
        format!("<NumericLog layers={}>", self.log().len())
    }
}

impl PyNumericLog {
    fn of(log: NumericLog) -> Self {
        Self {
            inner: Mutex::new(log),
        }
    }
    /// The log (a panic while it was held left it as it was: nothing is half-updated).
    fn log(&self) -> MutexGuard<'_, NumericLog> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn with_stats<T>(
        &self,
        layer: &str,
        f: impl FnOnce(&qnumeric::ns::ErrorStats) -> T,
    ) -> PyResult<T> {
        self.log()
            .stats(layer)
            .map(f)
            .ok_or_else(|| not_found(layer))
    }
    fn from_state(s: &str) -> PyResult<Self> {
        let inner: NumericLog =
            serde_json::from_str(s).map_err(|e| json_error("NumericLog.copy", &e))?;
        Ok(Self::of(inner))
    }
}

fn not_found(layer: &str) -> PyErr {
    to_py(QuantError::NotFound {
        op: "NumericLog",
        what: "layer",
        name: layer.to_string(),
    })
}

/// The Numeric Suite's report of one or two logs: per layer, the cumulative and local
/// figures; the largest drop and the first layer below the threshold.
#[pyclass(name = "NsReport", module = "qnumeric", frozen)]
pub struct PyNsReport {
    pub(crate) inner: NsReport,
}

fn which_of(which: &str) -> PyResult<Comparison> {
    match which {
        "cumulative" => Ok(Comparison::Cumulative),
        "local" => Ok(Comparison::Local),
        _ => Err(to_py(QuantError::Format {
            op: "NsReport",
            detail: format!("unknown comparison `{which}` (cumulative, local)"),
        })),
    }
}

#[pymethods]
impl PyNsReport {
    /// The layers, in order.
    #[getter]
    fn layers(&self) -> Vec<String> {
        self.inner.layers.iter().map(|l| l.name.clone()).collect()
    }
    /// A layer's SQNR (dB) under `which` (cumulative, local), `None` when not logged.
    #[pyo3(signature = (layer, which="cumulative"))]
    fn sqnr_db(&self, layer: &str, which: &str) -> PyResult<Option<f64>> {
        Ok(self.inner.sqnr_db(layer, which_of(which)?))
    }
    /// The per-sample table: each layer's `worst` samples.
    #[pyo3(signature = (which="cumulative", worst=5))]
    fn sample_table(&self, which: &str, worst: usize) -> PyResult<String> {
        Ok(self.inner.sample_table(which_of(which)?, worst))
    }
    /// The report as JSON text.
    fn to_json(&self) -> String {
        self.inner.to_json()
    }
    /// The report as a dict.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_loads(py, &self.inner.to_json())
    }
    /// The report as CSV text (one row per layer).
    fn to_csv(&self) -> String {
        self.inner.to_csv()
    }
    /// The verdicts of the layers and the headline (no remedies: those need the layers'
    /// inputs and weights, in a dump).
    #[pyo3(signature = (threshold=20.0))]
    fn diagnose(&self, threshold: f64) -> PyResult<PyDiagnosis> {
        let t = Thresholds {
            min_sqnr_db: threshold,
            ..Thresholds::default()
        };
        Ok(PyDiagnosis {
            inner: DiagnosisOf::Report(diagnose_report(&self.inner, &t).py()?),
        })
    }
    fn __str__(&self) -> String {
        self.inner.to_string()
    }
}
