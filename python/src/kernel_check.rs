//! The kernel check with a Python callable as the kernel under test.

use ndarray::ArrayD;
use numpy::{IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use qnumeric::diagnose::{
    KernelCheck, KernelInputs, KernelOp, KernelReference, KernelReport, KernelTolerance,
    KernelVerdict, WeightScheme,
};
use qnumeric::{AnyQParams, QuantError, QuantizedTensor};

use crate::dumps::json_loads;
use crate::errors::{IntoPy, to_py};

fn bad(what: &'static str, name: &str) -> PyErr {
    to_py(QuantError::Format {
        op: "check_kernel",
        detail: format!("unknown {what} `{name}`"),
    })
}

fn op_of(name: &str) -> PyResult<KernelOp> {
    Ok(match name {
        "quantize" => KernelOp::Quantize,
        "linear" => KernelOp::Linear,
        "conv2d" => KernelOp::Conv2d,
        "add" => KernelOp::Add,
        _ => return Err(bad("op (quantize, linear, conv2d, add)", name)),
    })
}

fn scheme_of(name: &str) -> PyResult<WeightScheme> {
    Ok(match name {
        "per_channel_symmetric" => WeightScheme::PerChannelSymmetric,
        "per_channel_affine" => WeightScheme::PerChannelAffine,
        "per_tensor_symmetric" => WeightScheme::PerTensorSymmetric,
        "per_tensor_affine" => WeightScheme::PerTensorAffine,
        _ => return Err(bad("weight scheme", name)),
    })
}

/// A quantized tensor's values and parameters into `d` under `prefix`.
fn put_tensor<Q: qnumeric::QInt + numpy::Element>(
    d: &Bound<'_, PyDict>,
    prefix: &str,
    t: &QuantizedTensor<Q>,
) -> PyResult<()> {
    let py = d.py();
    d.set_item(prefix, t.int_repr().clone().into_pyarray(py))?;
    match t.params() {
        AnyQParams::PerTensor(p) => {
            d.set_item(format!("{prefix}_scale"), p.scale())?;
            d.set_item(format!("{prefix}_zero_point"), p.zero_point())?;
        }
        AnyQParams::PerChannel(p) => {
            d.set_item(format!("{prefix}_scales"), p.scales().to_vec())?;
            d.set_item(
                format!("{prefix}_zero_points"),
                p.zero_points().as_int().map(<[i32]>::to_vec),
            )?;
            d.set_item(format!("{prefix}_axis"), p.axis())?;
        }
    }
    Ok(())
}

fn inputs_dict<'py>(py: Python<'py>, k: &KernelInputs) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let out = |d: &Bound<'py, PyDict>, o: &qnumeric::QParams| -> PyResult<()> {
        d.set_item("output_scale", o.scale())?;
        d.set_item("output_zero_point", o.zero_point())
    };
    let bias = |d: &Bound<'py, PyDict>, b: &Option<ArrayD<f32>>| -> PyResult<()> {
        match b {
            Some(b) => d.set_item("bias", b.clone().into_pyarray(py)),
            None => d.set_item("bias", py.None()),
        }
    };
    match k {
        KernelInputs::Quantize { x, qparams } => {
            d.set_item("op", "quantize")?;
            d.set_item("x", x.clone().into_pyarray(py))?;
            out(&d, qparams)?;
        }
        KernelInputs::Linear {
            x,
            weight,
            bias: b,
            output,
        } => {
            d.set_item("op", "linear")?;
            put_tensor(&d, "x", x)?;
            put_tensor(&d, "weight", weight)?;
            bias(&d, b)?;
            out(&d, output)?;
        }
        KernelInputs::Conv2d {
            x,
            weight,
            bias: b,
            geometry,
            output,
        } => {
            d.set_item("op", "conv2d")?;
            put_tensor(&d, "x", x)?;
            put_tensor(&d, "weight", weight)?;
            bias(&d, b)?;
            d.set_item("stride", geometry.stride.to_vec())?;
            d.set_item("padding", geometry.padding.to_vec())?;
            d.set_item("dilation", geometry.dilation.to_vec())?;
            d.set_item("groups", geometry.groups)?;
            out(&d, output)?;
        }
        KernelInputs::Add { a, b, output } => {
            d.set_item("op", "add")?;
            put_tensor(&d, "a", a)?;
            put_tensor(&d, "b", b)?;
            out(&d, output)?;
        }
        _ => {
            return Err(to_py(QuantError::UnsupportedConfig {
                op: "check_kernel",
                reason: "inputs of an operation the Python package does not know",
            }));
        }
    }
    Ok(d)
}

/// What the check found: per kind of case, the differences from the reference.
#[pyclass(name = "KernelReport", module = "qnumeric", frozen)]
pub struct PyKernelReport {
    inner: KernelReport,
}

fn tolerance(
    max_abs_diff: u32,
    max_off_by_one_fraction: f64,
    max_abs_mean_diff: f64,
) -> PyResult<KernelTolerance> {
    let t = KernelTolerance {
        max_abs_diff,
        max_off_by_one_fraction,
        max_abs_mean_diff,
    };
    t.validate().py()?;
    Ok(t)
}

#[pymethods]
impl PyKernelReport {
    /// `exact`, `within-tolerance` or `mismatch` under the tolerance (the default: one
    /// quantum, at most 2 % of values off by one, mean difference at most 0.02).
    #[pyo3(signature = (max_abs_diff=1, max_off_by_one_fraction=0.02, max_abs_mean_diff=0.02))]
    fn verdict(
        &self,
        max_abs_diff: u32,
        max_off_by_one_fraction: f64,
        max_abs_mean_diff: f64,
    ) -> PyResult<&'static str> {
        let t = tolerance(max_abs_diff, max_off_by_one_fraction, max_abs_mean_diff)?;
        Ok(match self.inner.verdict(&t) {
            KernelVerdict::Exact => "exact",
            KernelVerdict::WithinTolerance => "within-tolerance",
            KernelVerdict::Mismatch => "mismatch",
        })
    }
    /// Whether every value equals the reference's.
    #[getter]
    fn exact(&self) -> bool {
        self.inner.verdict(&KernelTolerance::exact()) == KernelVerdict::Exact
    }
    /// The first case the kernel failed (an exception, a wrong shape), if any.
    #[getter]
    fn first_failure(&self) -> Option<String> {
        self.inner.first_failure.clone()
    }
    /// The first disagreeing case shrunk to a minimal one, as a Rust test to paste.
    #[getter]
    fn minimal_case(&self) -> Option<String> {
        self.inner.minimal.as_ref().map(|m| m.to_rust())
    }
    /// The first disagreeing case shrunk: a dict with `inputs` (as the kernel receives
    /// them), `kernel` (its output, `None` when it failed), `reference` and `failure`.
    #[getter]
    fn minimal(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(m) = &self.inner.minimal else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("inputs", inputs_dict(py, &m.inputs)?)?;
        d.set_item("kernel", m.kernel.clone().map(|k| k.into_pyarray(py)))?;
        d.set_item("reference", m.reference.clone().into_pyarray(py))?;
        d.set_item("failure", m.failure.clone())?;
        Ok(Some(d.into_any().unbind()))
    }
    /// The report as a dict.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let s = serde_json::to_string(&self.inner).map_err(|e| {
            to_py(QuantError::Format {
                op: "KernelReport.to_dict",
                detail: e.to_string(),
            })
        })?;
        json_loads(py, &s)
    }
    fn __str__(&self) -> String {
        self.inner.to_string()
    }
}

/// `check_kernel(kernel, op="linear", weights="per_channel_symmetric", reference="float",
/// seed=0, cases_per_kind=None)`: runs `kernel(inputs)` on generated cases (random, ties,
/// saturation, extreme zero points and scales, rounding paths) and compares its uint8
/// output with the reference. `inputs` is a dict of NumPy arrays and numbers (`op`, `x`,
/// `x_scale`, `x_zero_point`, `weight`, `weight_scales`, `weight_zero_points`,
/// `weight_axis`, `bias`, `output_scale`, `output_zero_point`, and `stride`, `padding`,
/// `dilation`, `groups` for conv2d; `a`, `b` for add). A kernel that raises or returns the
/// wrong shape or dtype fails that case; the check goes on.
#[pyfunction]
#[pyo3(signature = (kernel, op="linear", weights="per_channel_symmetric", reference="float", seed=0, cases_per_kind=None))]
pub fn check_kernel(
    py: Python<'_>,
    kernel: &Bound<'_, PyAny>,
    op: &str,
    weights: &str,
    reference: &str,
    seed: u64,
    cases_per_kind: Option<usize>,
) -> PyResult<PyKernelReport> {
    let reference = match reference {
        "float" => KernelReference::Float,
        "integer" => KernelReference::Integer,
        _ => return Err(bad("reference (float, integer)", reference)),
    };
    let mut check = KernelCheck::new(op_of(op)?)
        .weights(scheme_of(weights)?)
        .reference(reference)
        .seed(seed);
    if let Some(n) = cases_per_kind {
        check = check.cases_per_kind(n);
    }
    let mut stop: Option<PyErr> = None;
    let report = check.run(|inputs| -> Result<ArrayD<u8>, String> {
        if stop.is_some() {
            return Err("the check was interrupted".into());
        }
        let d = inputs_dict(py, inputs).map_err(|e| e.to_string())?;
        match kernel.call1((d,)) {
            Ok(v) => match v.extract::<PyReadonlyArrayDyn<'_, u8>>() {
                Ok(a) => Ok(a.as_array().to_owned()),
                Err(_) => Err(format!(
                    "the kernel returned {}, not a numpy array of dtype uint8",
                    v.repr().map_or("?".into(), |r| r.to_string())
                )),
            },
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyException>(py) => {
                Err(format!("the kernel raised {e}"))
            }
            Err(e) => {
                stop = Some(e);
                Err("the check was interrupted".into())
            }
        }
    });
    if let Some(e) = stop {
        return Err(e);
    }
    Ok(PyKernelReport {
        inner: report.py()?,
    })
}
