//! Quantize, dequantize and fake-quantize (per tensor and per channel), their parameters,
//! and the straight-through backward.

use numpy::{IntoPyArray, PyReadonlyArrayDyn};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use qnumeric::{
    PerChannelQParams, QDType, QParams, QRange, QScheme, QSpec, QuantError, ZeroPoints,
};

use crate::arrays::{FloatIn, per_float};
use crate::errors::IntoPy;

/// Quantization parameters of one tensor: a scale, a zero point and the integer range.
#[pyclass(name = "QParams", module = "qnumeric", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyQParams {
    pub inner: QParams,
}

#[pymethods]
impl PyQParams {
    /// `QParams(scale, zero_point, dtype="quint8", quant_min=None, quant_max=None)`.
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
            inner: QParams::with_range(scale, zero_point, range).py()?,
        })
    }
    /// The scale.
    #[getter]
    fn scale(&self) -> f32 {
        self.inner.scale()
    }
    /// The zero point.
    #[getter]
    fn zero_point(&self) -> i32 {
        self.inner.zero_point()
    }
    /// The dtype's name (`quint8`, `qint8`, ...).
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.range().dtype().name()
    }
    /// The lowest integer.
    #[getter]
    fn quant_min(&self) -> i64 {
        self.inner.range().quant_min()
    }
    /// The highest integer.
    #[getter]
    fn quant_max(&self) -> i64 {
        self.inner.range().quant_max()
    }
    fn __repr__(&self) -> String {
        format!(
            "QParams(scale={:e}, zero_point={}, dtype='{}', quant_min={}, quant_max={})",
            self.scale(),
            self.zero_point(),
            self.dtype(),
            self.quant_min(),
            self.quant_max()
        )
    }
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, QParamsArgs)> {
        let s = slf.get();
        Ok((
            slf.get_type().into_any().unbind(),
            (
                s.scale(),
                s.zero_point(),
                s.dtype(),
                s.quant_min(),
                s.quant_max(),
            ),
        ))
    }
}

/// The constructor's arguments, for pickling.
type QParamsArgs = (f32, i32, &'static str, i64, i64);

/// Per-channel quantization parameters: a scale and zero point per index of `axis`.
#[pyclass(name = "PerChannelQParams", module = "qnumeric", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyPerChannelQParams {
    pub inner: PerChannelQParams,
}

#[pymethods]
impl PyPerChannelQParams {
    /// `PerChannelQParams(scales, zero_points, axis=0, dtype="qint8", quant_min=None,
    /// quant_max=None)`; integer zero points.
    #[new]
    #[pyo3(signature = (scales, zero_points, axis=0, dtype="qint8", quant_min=None, quant_max=None))]
    fn new(
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        axis: isize,
        dtype: &str,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
    ) -> PyResult<Self> {
        let range = range_of(dtype, quant_min, quant_max)?;
        Ok(Self {
            inner: PerChannelQParams::with_range(scales, ZeroPoints::Int(zero_points), axis, range)
                .py()?,
        })
    }
    /// The scales, one per channel.
    #[getter]
    fn scales(&self) -> Vec<f32> {
        self.inner.scales().to_vec()
    }
    /// The zero points, one per channel (integers; floats for float zero points).
    #[getter]
    fn zero_points(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.inner.zero_points() {
            ZeroPoints::Int(z) => z.clone().into_pyobject(py)?.into_any().unbind(),
            ZeroPoints::Float(z) => z.clone().into_pyobject(py)?.into_any().unbind(),
        })
    }
    /// The channel axis.
    #[getter]
    fn axis(&self) -> isize {
        self.inner.axis()
    }
    /// The dtype's name.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.range().dtype().name()
    }
    /// The lowest integer.
    #[getter]
    fn quant_min(&self) -> i64 {
        self.inner.range().quant_min()
    }
    /// The highest integer.
    #[getter]
    fn quant_max(&self) -> i64 {
        self.inner.range().quant_max()
    }
    fn __len__(&self) -> usize {
        self.inner.channels()
    }
    fn __repr__(&self) -> String {
        format!(
            "PerChannelQParams(channels={}, axis={}, dtype='{}', quant_min={}, quant_max={})",
            self.inner.channels(),
            self.axis(),
            self.dtype(),
            self.quant_min(),
            self.quant_max()
        )
    }
}

/// The dtype named, over `quant_min..=quant_max` when given.
pub fn range_of(dtype: &str, quant_min: Option<i64>, quant_max: Option<i64>) -> PyResult<QRange> {
    let d = QDType::from_name(dtype).py()?;
    QRange::new(
        d,
        quant_min.unwrap_or(d.min()),
        quant_max.unwrap_or(d.max()),
    )
    .py()
}

/// A spec from the keyword arguments the observers and `choose_qparams` share.
pub fn spec_of(
    dtype: &str,
    qscheme: &str,
    reduce_range: bool,
    quant_min: Option<i64>,
    quant_max: Option<i64>,
    eps: Option<f32>,
) -> PyResult<QSpec> {
    let mut s = QSpec::new(
        QScheme::from_name(qscheme).py()?,
        QDType::from_name(dtype).py()?,
    );
    if reduce_range {
        s = s.with_reduce_range().py()?;
    }
    if quant_min.is_some() || quant_max.is_some() {
        let d = QDType::from_name(dtype).py()?;
        s = s
            .with_quant_range(quant_min.unwrap_or(d.min()), quant_max.unwrap_or(d.max()))
            .py()?;
    }
    if let Some(e) = eps {
        s = s.with_eps(e).py()?;
    }
    Ok(s)
}

fn per_tensor(
    scale: f32,
    zero_point: i64,
    dtype: &str,
    quant_min: Option<i64>,
    quant_max: Option<i64>,
) -> PyResult<QParams> {
    QParams::with_range(scale, zero_point, range_of(dtype, quant_min, quant_max)?).py()
}

fn fake_range(quant_min: i64, quant_max: i64) -> PyResult<QRange> {
    QRange::for_fake_quant(quant_min, quant_max).py()
}

fn per_channel(
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    axis: isize,
    range: QRange,
) -> PyResult<PerChannelQParams> {
    PerChannelQParams::with_range(scales, ZeroPoints::Int(zero_points), axis, range).py()
}

macro_rules! by_storage {
    ($py:expr, $dtype:expr, $x:expr, |$a:ident, $t:ident| $body:expr) => {{
        let v = $x.view();
        let out: qnumeric::Result<Py<PyAny>> = match ($dtype.bits(), $dtype.is_signed()) {
            (0..=8, false) => {
                type $t = u8;
                let r = $py.detach(|| match &v {
                    crate::arrays::FloatView::F32($a) => $body,
                    crate::arrays::FloatView::F64($a) => $body,
                    crate::arrays::FloatView::F16($a) => $body,
                });
                r.map(|a| a.into_pyarray($py).into_any().unbind())
            }
            (0..=8, true) => {
                type $t = i8;
                let r = $py.detach(|| match &v {
                    crate::arrays::FloatView::F32($a) => $body,
                    crate::arrays::FloatView::F64($a) => $body,
                    crate::arrays::FloatView::F16($a) => $body,
                });
                r.map(|a| a.into_pyarray($py).into_any().unbind())
            }
            (16, false) => {
                type $t = u16;
                let r = $py.detach(|| match &v {
                    crate::arrays::FloatView::F32($a) => $body,
                    crate::arrays::FloatView::F64($a) => $body,
                    crate::arrays::FloatView::F16($a) => $body,
                });
                r.map(|a| a.into_pyarray($py).into_any().unbind())
            }
            (16, true) => {
                type $t = i16;
                let r = $py.detach(|| match &v {
                    crate::arrays::FloatView::F32($a) => $body,
                    crate::arrays::FloatView::F64($a) => $body,
                    crate::arrays::FloatView::F16($a) => $body,
                });
                r.map(|a| a.into_pyarray($py).into_any().unbind())
            }
            _ => {
                type $t = i32;
                let r = $py.detach(|| match &v {
                    crate::arrays::FloatView::F32($a) => $body,
                    crate::arrays::FloatView::F64($a) => $body,
                    crate::arrays::FloatView::F16($a) => $body,
                });
                r.map(|a| a.into_pyarray($py).into_any().unbind())
            }
        };
        out.py()
    }};
}

/// `quantize(x, scale, zero_point, dtype="quint8", quant_min=None, quant_max=None)`:
/// `clamp(round_half_even(x / scale) + zero_point)` as PyTorch's `quantize_per_tensor`,
/// stored in the dtype's integer type (uint8, int8, uint16, int16, int32). As PyTorch's,
/// values saturate to the storage type's range; `quant_min` / `quant_max` bound the zero
/// point (use `fake_quantize` to clamp to a narrower range).
#[pyfunction]
#[pyo3(signature = (x, scale, zero_point, dtype="quint8", quant_min=None, quant_max=None))]
pub fn quantize(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    scale: f32,
    zero_point: i64,
    dtype: &str,
    quant_min: Option<i64>,
    quant_max: Option<i64>,
) -> PyResult<Py<PyAny>> {
    let qp = per_tensor(scale, zero_point, dtype, quant_min, quant_max)?;
    let x = FloatIn::extract("quantize: x", x)?;
    let d = qp.range().dtype();
    by_storage!(py, d, x, |a, T| qnumeric::quantize::<_, T, _>(a, &qp))
}

/// `quantize_per_channel(x, scales, zero_points, axis, dtype="qint8", quant_min=None,
/// quant_max=None)`: one scale and zero point per index of `axis`.
#[pyfunction]
#[pyo3(signature = (x, scales, zero_points, axis, dtype="qint8", quant_min=None, quant_max=None))]
#[allow(clippy::too_many_arguments)]
pub fn quantize_per_channel(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    axis: isize,
    dtype: &str,
    quant_min: Option<i64>,
    quant_max: Option<i64>,
) -> PyResult<Py<PyAny>> {
    let qp = per_channel(
        scales,
        zero_points,
        axis,
        range_of(dtype, quant_min, quant_max)?,
    )?;
    let x = FloatIn::extract("quantize_per_channel: x", x)?;
    let d = qp.range().dtype();
    by_storage!(py, d, x, |a, T| qnumeric::quantize_per_channel::<_, T, _>(
        a, &qp
    ))
}

/// An integer array, borrowed read-only.
enum IntIn<'py> {
    U8(PyReadonlyArrayDyn<'py, u8>),
    I8(PyReadonlyArrayDyn<'py, i8>),
    U16(PyReadonlyArrayDyn<'py, u16>),
    I16(PyReadonlyArrayDyn<'py, i16>),
    I32(PyReadonlyArrayDyn<'py, i32>),
}

impl<'py> IntIn<'py> {
    fn extract(what: &str, obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = obj.extract() {
            return Ok(IntIn::U8(a));
        }
        if let Ok(a) = obj.extract() {
            return Ok(IntIn::I8(a));
        }
        if let Ok(a) = obj.extract() {
            return Ok(IntIn::U16(a));
        }
        if let Ok(a) = obj.extract() {
            return Ok(IntIn::I16(a));
        }
        if let Ok(a) = obj.extract() {
            return Ok(IntIn::I32(a));
        }
        Err(PyTypeError::new_err(format!(
            "{what}: expected a numpy array of dtype uint8, int8, uint16, int16 or int32"
        )))
    }

    /// The dtype a stored array of this type holds by default.
    fn default_dtype(&self) -> &'static str {
        match self {
            IntIn::U8(_) => "quint8",
            IntIn::I8(_) => "qint8",
            IntIn::U16(_) => "uint16",
            IntIn::I16(_) => "int16",
            IntIn::I32(_) => "qint32",
        }
    }
}

macro_rules! per_int {
    ($py:expr, $q:expr, |$a:ident| $body:expr) => {{
        let r: qnumeric::Result<ndarray::ArrayD<f32>> = match &$q {
            IntIn::U8(a) => {
                let $a = a.as_array();
                $py.detach(|| $body)
            }
            IntIn::I8(a) => {
                let $a = a.as_array();
                $py.detach(|| $body)
            }
            IntIn::U16(a) => {
                let $a = a.as_array();
                $py.detach(|| $body)
            }
            IntIn::I16(a) => {
                let $a = a.as_array();
                $py.detach(|| $body)
            }
            IntIn::I32(a) => {
                let $a = a.as_array();
                $py.detach(|| $body)
            }
        };
        r.py().map(|a| a.into_pyarray($py).into_any().unbind())
    }};
}

/// `dequantize(q, scale, zero_point, dtype=None, quant_min=None, quant_max=None)`:
/// `(q - zero_point) * scale` in float32. The dtype defaults to the array's (uint8: quint8,
/// int8: qint8, int32: qint32, ...); values outside its range are refused.
#[pyfunction]
#[pyo3(signature = (q, scale, zero_point, dtype=None, quant_min=None, quant_max=None))]
pub fn dequantize(
    py: Python<'_>,
    q: &Bound<'_, PyAny>,
    scale: f32,
    zero_point: i64,
    dtype: Option<&str>,
    quant_min: Option<i64>,
    quant_max: Option<i64>,
) -> PyResult<Py<PyAny>> {
    let q = IntIn::extract("dequantize: q", q)?;
    let qp = per_tensor(
        scale,
        zero_point,
        dtype.unwrap_or(q.default_dtype()),
        quant_min,
        quant_max,
    )?;
    per_int!(py, q, |a| qnumeric::dequantize::<f32, _, _>(&a, &qp))
}

/// `dequantize_per_channel(q, scales, zero_points, axis, dtype=None, quant_min=None,
/// quant_max=None)`.
#[pyfunction]
#[pyo3(signature = (q, scales, zero_points, axis, dtype=None, quant_min=None, quant_max=None))]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_per_channel(
    py: Python<'_>,
    q: &Bound<'_, PyAny>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    axis: isize,
    dtype: Option<&str>,
    quant_min: Option<i64>,
    quant_max: Option<i64>,
) -> PyResult<Py<PyAny>> {
    let q = IntIn::extract("dequantize_per_channel: q", q)?;
    let range = range_of(dtype.unwrap_or(q.default_dtype()), quant_min, quant_max)?;
    let qp = per_channel(scales, zero_points, axis, range)?;
    per_int!(py, q, |a| qnumeric::dequantize_per_channel::<f32, _, _>(
        &a, &qp
    ))
}

/// `fake_quantize(x, scale, zero_point, quant_min=0, quant_max=255)`: PyTorch's
/// `fake_quantize_per_tensor_affine`, in the input's dtype.
#[pyfunction]
#[pyo3(signature = (x, scale, zero_point, quant_min=0, quant_max=255))]
pub fn fake_quantize(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    scale: f32,
    zero_point: i64,
    quant_min: i64,
    quant_max: i64,
) -> PyResult<Py<PyAny>> {
    let qp = QParams::with_range(scale, zero_point, fake_range(quant_min, quant_max)?).py()?;
    let x = FloatIn::extract("fake_quantize: x", x)?;
    let out = per_float!(py, x.view(), |a| qnumeric::fake_quantize(&a, &qp));
    Ok(out.py()?.into_py(py))
}

/// `fake_quantize_per_channel(x, scales, zero_points, axis, quant_min=-128, quant_max=127)`:
/// PyTorch's `fake_quantize_per_channel_affine`.
#[pyfunction]
#[pyo3(signature = (x, scales, zero_points, axis, quant_min=-128, quant_max=127))]
pub fn fake_quantize_per_channel(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    axis: isize,
    quant_min: i64,
    quant_max: i64,
) -> PyResult<Py<PyAny>> {
    let qp = per_channel(scales, zero_points, axis, fake_range(quant_min, quant_max)?)?;
    let x = FloatIn::extract("fake_quantize_per_channel: x", x)?;
    let out = per_float!(py, x.view(), |a| qnumeric::fake_quantize_per_channel(
        &a, &qp
    ));
    Ok(out.py()?.into_py(py))
}

/// `fake_quantize_backward(x, dy, scale, zero_point, quant_min=0, quant_max=255)`: the
/// straight-through gradient, `dy` where `x` quantizes inside the range, 0 elsewhere.
#[pyfunction]
#[pyo3(signature = (x, dy, scale, zero_point, quant_min=0, quant_max=255))]
pub fn fake_quantize_backward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dy: &Bound<'_, PyAny>,
    scale: f32,
    zero_point: i64,
    quant_min: i64,
    quant_max: i64,
) -> PyResult<Py<PyAny>> {
    let qp = QParams::with_range(scale, zero_point, fake_range(quant_min, quant_max)?).py()?;
    let x = FloatIn::extract("fake_quantize_backward: x", x)?;
    let dy = FloatIn::extract("fake_quantize_backward: dy", dy)?;
    let out = match (x.view(), dy.view()) {
        (crate::arrays::FloatView::F32(a), crate::arrays::FloatView::F32(g)) => py
            .detach(|| qnumeric::fake_quantize_backward(&a, &g, &qp))
            .map(crate::arrays::FloatOut::F32),
        (crate::arrays::FloatView::F64(a), crate::arrays::FloatView::F64(g)) => py
            .detach(|| qnumeric::fake_quantize_backward(&a, &g, &qp))
            .map(crate::arrays::FloatOut::F64),
        (crate::arrays::FloatView::F16(a), crate::arrays::FloatView::F16(g)) => py
            .detach(|| qnumeric::fake_quantize_backward(&a, &g, &qp))
            .map(crate::arrays::FloatOut::F16),
        _ => {
            return Err(PyTypeError::new_err(format!(
                "fake_quantize_backward: x is {} and dy {}: they must have the same dtype",
                x.dtype_name(),
                dy.dtype_name()
            )));
        }
    };
    Ok(out.py()?.into_py(py))
}

/// `choose_qparams(min, max, dtype="quint8", qscheme="per_tensor_affine",
/// reduce_range=False, quant_min=None, quant_max=None, eps=None)`: the parameters PyTorch's
/// observers compute for the range `min..=max`.
#[pyfunction]
#[pyo3(signature = (min, max, dtype="quint8", qscheme="per_tensor_affine", reduce_range=false, quant_min=None, quant_max=None, eps=None))]
#[allow(clippy::too_many_arguments)]
pub fn choose_qparams(
    min: f32,
    max: f32,
    dtype: &str,
    qscheme: &str,
    reduce_range: bool,
    quant_min: Option<i64>,
    quant_max: Option<i64>,
    eps: Option<f32>,
) -> PyResult<PyQParams> {
    let spec = spec_of(dtype, qscheme, reduce_range, quant_min, quant_max, eps)?;
    let raw = spec.qparams_from_min_max(min, max).py()?;
    if raw.zero_point.fract() != 0.0 {
        return Err(crate::errors::to_py(QuantError::UnsupportedConfig {
            op: "choose_qparams",
            reason: "float zero points (per_channel_affine_float_qparams) have no QParams",
        }));
    }
    let qp = QParams::with_range(raw.scale, raw.zero_point as i64, spec.range()).py()?;
    Ok(PyQParams { inner: qp })
}
