//! The Numeric Suite and the diagnosis on dumps (the safetensors files `qnumeric.dump` and
//! the `qnumeric` command line read; `docs/dumps.md`).

use std::path::PathBuf;

use numpy::IntoPyArray;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use qnumeric::QuantError;
use qnumeric::diagnose::{
    DEFAULT_DUMP_MIN_GAIN_DB, DumpDiagnoseOptions, DumpDiagnosis, ReportDiagnosis, Thresholds,
    diagnose_dumps, diagnose_dumps_with_baseline,
};
use qnumeric::formats::Format;
use qnumeric::ns::{
    DumpComparison, DumpPair, DumpTensor, DumpVersion, Part, SampleDims, Side, compare_dump_files,
};

use crate::errors::{IntoPy, to_py};

/// `json.loads(s)`.
pub fn json_loads(py: Python<'_>, s: &str) -> PyResult<Py<PyAny>> {
    Ok(py.import("json")?.call_method1("loads", (s,))?.unbind())
}

fn to_json<T: serde::Serialize>(op: &'static str, v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| {
        to_py(QuantError::Format {
            op,
            detail: e.to_string(),
        })
    })
}

/// The comparison of two dumps, layer by layer (`qnumeric compare`).
#[pyclass(name = "DumpComparison", module = "qnumeric", frozen)]
pub struct PyDumpComparison {
    inner: DumpComparison,
}

#[pymethods]
impl PyDumpComparison {
    /// The comparison as JSON text (with each sample's SQNR when `per_sample`).
    #[pyo3(signature = (per_sample=false))]
    fn to_json(&self, per_sample: bool) -> String {
        self.inner.to_json(per_sample)
    }
    /// The comparison as a dict (`json.loads(to_json(per_sample))`).
    #[pyo3(signature = (per_sample=false))]
    fn to_dict(&self, py: Python<'_>, per_sample: bool) -> PyResult<Py<PyAny>> {
        json_loads(py, &self.inner.to_json(per_sample))
    }
    /// The per-sample table: the `worst` samples of each layer.
    #[pyo3(signature = (worst=5))]
    fn sample_table(&self, worst: usize) -> String {
        self.inner.sample_table(worst)
    }
    /// The Numeric Suite's report of the comparison (per layer, cumulative and local).
    #[getter]
    fn report(&self) -> crate::log::PyNsReport {
        crate::log::PyNsReport {
            inner: self.inner.report.clone(),
        }
    }
    /// The layers, in execution order.
    #[getter]
    fn layers(&self) -> Vec<String> {
        self.inner
            .report
            .layers
            .iter()
            .map(|l| l.name.clone())
            .collect()
    }
    fn __str__(&self) -> String {
        self.inner.to_string()
    }
}

/// `compare_dumps(float_path, quant_path, threshold=None)`: each layer's output SQNR, per
/// sample and summarized, the largest drop and the first layer below `threshold` dB.
#[pyfunction]
#[pyo3(signature = (float_path, quant_path, threshold=None))]
pub fn compare_dumps(
    py: Python<'_>,
    float_path: PathBuf,
    quant_path: PathBuf,
    threshold: Option<f64>,
) -> PyResult<PyDumpComparison> {
    let mut c = py
        .detach(|| compare_dump_files(&float_path, &quant_path))
        .py()?;
    if let Some(t) = threshold {
        c.report = c.report.with_jump_threshold(t).py()?;
    }
    Ok(PyDumpComparison { inner: c })
}

/// What a diagnosis was made from.
pub enum DiagnosisOf {
    /// Two dumps: verdicts, replays, remedies.
    Dumps(DumpDiagnosis),
    /// A Numeric Suite report (streamed logs): verdicts and the headline.
    Report(ReportDiagnosis),
}

/// The diagnosis of a quantized model (from its dumps or from streamed logs): each layer's
/// verdict, the headline layer, and the remedies ranked by their measured gain.
#[pyclass(name = "Diagnosis", module = "qnumeric")]
pub struct PyDiagnosis {
    pub inner: DiagnosisOf,
}

impl PyDiagnosis {
    fn report(&self) -> &ReportDiagnosis {
        match &self.inner {
            DiagnosisOf::Dumps(d) => &d.diagnosis,
            DiagnosisOf::Report(d) => d,
        }
    }
}

#[pymethods]
impl PyDiagnosis {
    /// The model's verdict: `fine`, `inherited`, `data-sensitive`, `data-insensitive` or
    /// `implementation`.
    #[getter]
    fn verdict(&self) -> String {
        self.report().verdict.to_string()
    }
    /// The layer to look at first (`None`: nothing to fix).
    #[getter]
    fn headline(&self) -> Option<String> {
        self.report().headline.clone()
    }
    /// The first layer whose own error is large.
    #[getter]
    fn first_layer(&self) -> Option<String> {
        self.report().first_layer.clone()
    }
    /// The samples with the largest error at the headline layer, worst first.
    #[getter]
    fn worst_samples(&self) -> Vec<usize> {
        self.report().worst_samples.clone()
    }
    /// The model's output SQNR against the float model (dB): the last layer's.
    #[getter]
    fn output_sqnr_db(&self) -> Option<f64> {
        self.report().layers.last().map(|l| l.evidence.sqnr_db)
    }
    /// Each layer's verdict, by name, in execution order.
    #[getter]
    fn verdicts(&self) -> Vec<(String, String)> {
        self.report()
            .layers
            .iter()
            .map(|l| (l.name.clone(), l.verdict.to_string()))
            .collect()
    }
    /// The remedies, best first, each a dict (`kind`, `layer`, `cost`, `gain_db`, `scope`,
    /// `effect`, `evidence` and the change's own fields).
    #[getter]
    fn remedies(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_loads(py, &to_json("Diagnosis.remedies", &self.report().remedies)?)
    }
    /// The whole diagnosis as JSON text (the `qnumeric diagnose --json` object).
    fn to_json(&self) -> PyResult<String> {
        match &self.inner {
            DiagnosisOf::Dumps(d) => to_json("Diagnosis.to_json", d),
            DiagnosisOf::Report(d) => to_json("Diagnosis.to_json", d),
        }
    }
    /// The whole diagnosis as a dict.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_loads(py, &self.to_json()?)
    }
    /// Measures the remedies end to end: `rerun(remedy)` (a dict, as in `remedies`) returns
    /// the model's output SQNR against the float model (dB) with that one change, or `None`
    /// when it cannot apply it. The remedies are then ranked by their end-to-end gain and the
    /// headline becomes the layer whose remedy gains most. An exception raised by `rerun`
    /// (an `Exception`) is kept in the diagnosis as a measurement that failed; others
    /// (`KeyboardInterrupt`) stop the measurement and propagate.
    fn measure_end_to_end(&mut self, py: Python<'_>, rerun: &Bound<'_, PyAny>) -> PyResult<()> {
        let DiagnosisOf::Dumps(inner) = &mut self.inner else {
            return Err(to_py(QuantError::UnsupportedConfig {
                op: "Diagnosis.measure_end_to_end",
                reason: "a diagnosis of streamed logs has no remedies to measure (diagnose dumps)",
            }));
        };
        let mut stop: Option<PyErr> = None;
        let r = inner.measure_end_to_end(|remedy| {
            if stop.is_some() {
                return Ok(None);
            }
            let arg = match to_json("Diagnosis.measure_end_to_end", remedy)
                .and_then(|s| json_loads(py, &s))
            {
                Ok(a) => a,
                Err(e) => {
                    stop = Some(e);
                    return Ok(None);
                }
            };
            match rerun.call1((arg,)).and_then(|v| v.extract::<Option<f64>>()) {
                Ok(v) => Ok(v),
                Err(e) if e.is_instance_of::<PyException>(py) => Err(QuantError::Format {
                    op: "Diagnosis.measure_end_to_end",
                    detail: format!("rerun raised {e}"),
                }),
                Err(e) => {
                    stop = Some(e);
                    Ok(None)
                }
            }
        });
        if let Some(e) = stop {
            return Err(e);
        }
        r.py()
    }
    /// The diagnosis as one self-contained HTML page (inline CSS and SVG, no network).
    fn to_html(&self) -> String {
        match &self.inner {
            DiagnosisOf::Dumps(d) => d.to_html(),
            DiagnosisOf::Report(d) => d.to_html(),
        }
    }
    /// Drops the remedies measured end to end that gain less than `min_gain_db` on the
    /// model's output (a kernel fix stays).
    fn drop_remedies_below(&mut self, min_gain_db: f64) -> PyResult<()> {
        match &mut self.inner {
            DiagnosisOf::Dumps(d) => d.drop_remedies_below(min_gain_db).py(),
            DiagnosisOf::Report(_) => Ok(()),
        }
    }
    fn __str__(&self) -> String {
        match &self.inner {
            DiagnosisOf::Dumps(d) => d.to_string(),
            DiagnosisOf::Report(d) => d.to_string(),
        }
    }
    fn __repr__(&self) -> String {
        format!(
            "<Diagnosis verdict={} headline={:?} remedies={}>",
            self.report().verdict,
            self.report().headline,
            self.report().remedies.len()
        )
    }
}

/// `diagnose_dumps(float_path, quant_path, baseline=None, sample_dims=1, threshold=20.0,
/// min_gain=0.5, try_formats=(), remedies=True)`: `qnumeric diagnose` as a call.
#[pyfunction]
#[pyo3(signature = (float_path, quant_path, baseline=None, sample_dims=1, threshold=20.0, min_gain=DEFAULT_DUMP_MIN_GAIN_DB, try_formats=Vec::new(), remedies=true))]
#[allow(clippy::too_many_arguments)]
#[pyo3(name = "diagnose_dumps")]
pub fn diagnose_dumps_py(
    py: Python<'_>,
    float_path: PathBuf,
    quant_path: PathBuf,
    baseline: Option<PathBuf>,
    sample_dims: usize,
    threshold: f64,
    min_gain: f64,
    try_formats: Vec<String>,
    remedies: bool,
) -> PyResult<PyDiagnosis> {
    let format_candidates = try_formats
        .iter()
        .map(|f| f.parse::<Format>())
        .collect::<qnumeric::Result<Vec<_>>>()
        .py()?;
    let opts = DumpDiagnoseOptions {
        thresholds: Thresholds {
            min_sqnr_db: threshold,
            ..Thresholds::default()
        },
        sample_dims: SampleDims::from_count(sample_dims).py()?,
        min_gain_db: min_gain,
        remedies,
        format_candidates,
        ..DumpDiagnoseOptions::default()
    };
    let d = py
        .detach(|| {
            let pair = DumpPair::open(&float_path, &quant_path)?;
            match &baseline {
                None => diagnose_dumps(&pair, &opts),
                Some(b) => {
                    let base = DumpPair::open(&float_path, b)?;
                    diagnose_dumps_with_baseline(&pair, &base, &opts)
                }
            }
        })
        .py()?;
    Ok(PyDiagnosis {
        inner: DiagnosisOf::Dumps(d),
    })
}

fn side_of(s: &str) -> PyResult<Side> {
    match s {
        "float" => Ok(Side::Float),
        "quant" => Ok(Side::Quant),
        _ => Err(to_py(QuantError::Format {
            op: "DumpReader.read",
            detail: format!("unknown side `{s}` (float, quant)"),
        })),
    }
}

fn part_of(s: &str) -> PyResult<Part> {
    match s {
        "output" => Ok(Part::Output),
        "input" => Ok(Part::Input),
        "shadow" => Ok(Part::Shadow),
        "weight" => Ok(Part::Weight),
        "bias" => Ok(Part::Bias),
        _ => Err(to_py(QuantError::Format {
            op: "DumpReader.read",
            detail: format!("unknown part `{s}` (output, input, shadow, weight, bias)"),
        })),
    }
}

/// Two dumps opened together (headers read and checked); tensors are read on demand.
#[pyclass(name = "DumpReader", module = "qnumeric", frozen)]
pub struct PyDumpReader {
    inner: DumpPair<'static>,
}

#[pymethods]
impl PyDumpReader {
    /// `DumpReader(float_path, quant_path)`.
    #[new]
    fn new(py: Python<'_>, float_path: PathBuf, quant_path: PathBuf) -> PyResult<Self> {
        let inner = py
            .detach(|| DumpPair::open(&float_path, &quant_path))
            .py()?;
        Ok(Self { inner })
    }
    /// The layers, in execution order.
    #[getter]
    fn layers(&self) -> Vec<String> {
        self.inner.layers().to_vec()
    }
    /// The dumps' format version (1 or 2).
    #[getter]
    fn version(&self) -> u32 {
        match self.inner.version() {
            DumpVersion::V1 => 1,
            _ => 2,
        }
    }
    /// The padding mask `[N, T]` (True: a real position), if the dumps have one.
    #[getter]
    fn mask(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner
            .mask()
            .map(|m| m.as_array().clone().into_pyarray(py).into_any().unbind())
    }
    /// A layer's metadata (kind, weight and activation quantization, geometry) as a dict.
    fn meta(&self, py: Python<'_>, layer: &str) -> PyResult<Option<Py<PyAny>>> {
        match self.inner.layer_meta(layer) {
            None => Ok(None),
            Some(m) => Ok(Some(json_loads(py, &to_json("DumpReader.meta", m)?)?)),
        }
    }
    /// The tensor `part` (output, input, shadow, weight, bias) of `layer` on `side` (float,
    /// quant) as a float32 or float64 array, `None` when the dump does not hold it.
    #[pyo3(signature = (layer, side="quant", part="output"))]
    fn read(
        &self,
        py: Python<'_>,
        layer: &str,
        side: &str,
        part: &str,
    ) -> PyResult<Option<Py<PyAny>>> {
        let (s, p) = (side_of(side)?, part_of(part)?);
        let t = py.detach(|| self.inner.read(layer, s, p)).py()?;
        Ok(t.map(|t| match t {
            DumpTensor::F64(a) => a.into_pyarray(py).into_any().unbind(),
            other => other.into_f32().into_pyarray(py).into_any().unbind(),
        }))
    }
    /// The comparison of the two dumps (`sample_dims` 1: axis 0 is the sample; 2: every real
    /// `(n, t)` position is one).
    #[pyo3(signature = (sample_dims=1))]
    fn compare(&self, py: Python<'_>, sample_dims: usize) -> PyResult<PyDumpComparison> {
        let dims = SampleDims::from_count(sample_dims).py()?;
        let inner = py.detach(|| self.inner.compare(dims)).py()?;
        Ok(PyDumpComparison { inner })
    }
}
