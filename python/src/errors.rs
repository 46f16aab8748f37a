//! The crate's errors as Python exceptions: one class per kind of error a caller would catch,
//! all subclasses of `QnumericError` (itself a `ValueError`), each with the crate's message
//! and a `kind` attribute naming the `QuantError` variant.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use qnumeric::QuantError;

create_exception!(
    qnumeric,
    QnumericError,
    PyValueError,
    "Base class of every error qnumeric raises (a ValueError)."
);
create_exception!(
    qnumeric,
    NonFiniteError,
    QnumericError,
    "NaN or infinity where a finite value is required."
);
create_exception!(
    qnumeric,
    InvalidScaleError,
    QnumericError,
    "A scale that is zero, negative, not finite, or too small to invert in float32."
);
create_exception!(
    qnumeric,
    ZeroPointError,
    QnumericError,
    "A zero point outside its quantization range."
);
create_exception!(
    qnumeric,
    QuantRangeError,
    QnumericError,
    "A quantization range invalid for its dtype, or a storage type too narrow for it."
);
create_exception!(
    qnumeric,
    AxisError,
    QnumericError,
    "A channel axis that the array does not have."
);
create_exception!(
    qnumeric,
    ShapeError,
    QnumericError,
    "Shapes or lengths that do not match, or a length that is not a multiple of a block."
);
create_exception!(
    qnumeric,
    UnsupportedError,
    QnumericError,
    "A configuration, layer or parameter kind the operation does not support."
);
create_exception!(
    qnumeric,
    ParameterError,
    QnumericError,
    "A parameter outside its allowed interval, or an invalid name."
);
create_exception!(
    qnumeric,
    EmptyError,
    QnumericError,
    "An empty input, or a result asked of an observer that saw no data."
);
create_exception!(
    qnumeric,
    NotFoundError,
    QnumericError,
    "A named layer, tensor or module that is not there."
);
create_exception!(
    qnumeric,
    IncompatibleError,
    QnumericError,
    "Observers, logs or tensors that cannot be combined."
);
create_exception!(
    qnumeric,
    FormatError,
    QnumericError,
    "Input that cannot be read: a corrupt file, bad JSON, an unknown name."
);
create_exception!(
    qnumeric,
    RangeOverflowError,
    QnumericError,
    "A size, range or accumulator that would overflow, or an allocation that is too large."
);
create_exception!(
    qnumeric,
    DumpIOError,
    QnumericError,
    "A file that cannot be opened or read."
);

/// The variant's name (`NanInput`, ...), from the derived `Debug`.
fn kind(e: &QuantError) -> String {
    let d = format!("{e:?}");
    d.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

/// The Python exception for a crate error.
pub fn to_py(e: QuantError) -> PyErr {
    use QuantError as E;
    let msg = e.to_string();
    let err = match &e {
        E::NanInput { .. } | E::InfiniteInput { .. } | E::NonFinite { .. } => {
            NonFiniteError::new_err(msg)
        }
        E::InvalidScale { .. } => InvalidScaleError::new_err(msg),
        E::ZeroPointOutOfRange { .. } => ZeroPointError::new_err(msg),
        E::InvalidQuantRange { .. } | E::StorageTooNarrow { .. } | E::WrongDType { .. } => {
            QuantRangeError::new_err(msg)
        }
        E::InvalidAxis { .. } => AxisError::new_err(msg),
        E::LengthMismatch { .. } | E::ShapeMismatch { .. } | E::NotMultiple { .. } => {
            ShapeError::new_err(msg)
        }
        E::UnsupportedConfig { .. }
        | E::UnsupportedQParams { .. }
        | E::UnsupportedLayer { .. }
        | E::NotFusable { .. }
        | E::NoQuantStub { .. }
        | E::WrongActivation { .. } => UnsupportedError::new_err(msg),
        E::InvalidParameter { .. } | E::InvalidName { .. } => ParameterError::new_err(msg),
        E::Empty { .. } | E::EmptyInput { .. } => EmptyError::new_err(msg),
        E::NotFound { .. } => NotFoundError::new_err(msg),
        E::Incompatible { .. } | E::QParamsMismatch { .. } => IncompatibleError::new_err(msg),
        E::Format { .. } | E::Parse { .. } => FormatError::new_err(msg),
        E::AccumulatorOverflow { .. }
        | E::GeometryOverflow { .. }
        | E::TooLarge { .. }
        | E::RangeOverflow { .. } => RangeOverflowError::new_err(msg),
        E::Io { .. } => DumpIOError::new_err(msg),
        _ => QnumericError::new_err(msg),
    };
    Python::attach(|py| {
        // Best effort: the attribute is a convenience, the class and message are the contract.
        let _ = err.value(py).setattr("kind", kind(&e));
    });
    err
}

/// `Result<T, QuantError>` to `PyResult<T>`.
pub trait IntoPy<T> {
    /// Converts the error.
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for qnumeric::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("QnumericError", py.get_type::<QnumericError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add("InvalidScaleError", py.get_type::<InvalidScaleError>())?;
    m.add("ZeroPointError", py.get_type::<ZeroPointError>())?;
    m.add("QuantRangeError", py.get_type::<QuantRangeError>())?;
    m.add("AxisError", py.get_type::<AxisError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("ParameterError", py.get_type::<ParameterError>())?;
    m.add("EmptyError", py.get_type::<EmptyError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("IncompatibleError", py.get_type::<IncompatibleError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("RangeOverflowError", py.get_type::<RangeOverflowError>())?;
    m.add("DumpIOError", py.get_type::<DumpIOError>())?;
    Ok(())
}
