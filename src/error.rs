//! The crate-wide error type.
//!
//! Every fallible function in qnumeric returns [`Result`], whose error is [`QuantError`].
//! Variants carry structured data (the public function that refused, the offending value),
//! never just a message, so callers can match on them.

use crate::dtype::QDType;

/// Everything that can go wrong in qnumeric.
///
/// Each variant names the public operation that refused (`op`) so that a message read out of
/// context still says where it came from. Messages are lower case with no trailing period.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// A NaN was found in data where NaN is not allowed (kernels, observers, metrics).
    #[error("{op}: NaN in the input at flat index {index}")]
    NanInput {
        /// The public operation.
        op: &'static str,
        /// Flat (logical, row-major) index of the first NaN found.
        index: usize,
    },
    /// An infinite value in data where only finite values are allowed (metrics).
    #[error("{op}: infinite value {value} in the input at flat index {index}")]
    InfiniteInput {
        /// The public operation.
        op: &'static str,
        /// Flat (logical, row-major) index of the first infinite value found.
        index: usize,
        /// The value (`+inf` or `-inf`).
        value: f64,
    },
    /// A non-finite value (±inf or NaN) where only finite values are allowed.
    #[error("{op}: non-finite value {value} where a finite one is required ({what})")]
    NonFinite {
        /// The public operation.
        op: &'static str,
        /// What the value was for.
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// A scale that is zero, negative, NaN or infinite, or so small (below about `2.9e-39`)
    /// that its `f32` reciprocal, which the kernels multiply by, is infinite.
    #[error("{op}: invalid scale {scale} (a scale must be finite, > 0, with a finite reciprocal)")]
    InvalidScale {
        /// The public operation.
        op: &'static str,
        /// The offending scale.
        scale: f64,
    },
    /// A zero point outside the quantization range it must lie in.
    #[error("{op}: zero point {zero_point} outside the range {min}..={max}")]
    ZeroPointOutOfRange {
        /// The public operation.
        op: &'static str,
        /// The offending zero point.
        zero_point: i64,
        /// Lowest allowed value.
        min: i64,
        /// Highest allowed value.
        max: i64,
    },
    /// A quantization range that is invalid for its dtype.
    #[error("{op}: invalid quantization range {quant_min}..={quant_max} for {dtype}: {reason}")]
    InvalidQuantRange {
        /// The public operation.
        op: &'static str,
        /// The requested lower bound.
        quant_min: i64,
        /// The requested upper bound.
        quant_max: i64,
        /// The dtype the range was checked against.
        dtype: QDType,
        /// Which rule was broken.
        reason: &'static str,
    },
    /// The integer storage type cannot hold every value of the dtype's range.
    #[error("{op}: storage type {storage} cannot hold the range of {dtype}")]
    StorageTooNarrow {
        /// The public operation.
        op: &'static str,
        /// The storage type's name (`u8`, `i8`, ...).
        storage: &'static str,
        /// The dtype asked for.
        dtype: QDType,
    },
    /// A channel axis that does not exist in the array.
    #[error("{op}: axis {axis} out of range for an array of rank {ndim}")]
    InvalidAxis {
        /// The public operation.
        op: &'static str,
        /// The axis as given (negative axes count from the end where allowed).
        axis: isize,
        /// The array's rank.
        ndim: usize,
    },
    /// A parameter list whose length does not match what it must (channel count, ...).
    #[error("{op}: {what} has length {got}, expected {expected}")]
    LengthMismatch {
        /// The public operation.
        op: &'static str,
        /// What was measured.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// Two arrays that must have the same shape do not.
    #[error("{op}: shape mismatch, expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The public operation.
        op: &'static str,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },
    /// A length that must be a positive multiple of a block, group or row length is not
    /// (a row of 100 elements for blocks of 32; data that is not a whole number of rows).
    #[error("{op}: {what} {len} is not a positive multiple of {multiple_of}")]
    NotMultiple {
        /// The public operation.
        op: &'static str,
        /// What was measured (`"row length"`, `"element count"`, `"byte count"`).
        what: &'static str,
        /// The length given.
        len: usize,
        /// What it must be a multiple of.
        multiple_of: usize,
    },
    /// A configuration that is refused (PyTorch refuses it too, or it is meaningless).
    #[error("{op}: unsupported configuration: {reason}")]
    UnsupportedConfig {
        /// The public operation.
        op: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A parameter outside its allowed interval (averaging constant, percentile, bins, ...).
    #[error("{op}: invalid {what} {value}: {reason}")]
    InvalidParameter {
        /// The public operation.
        op: &'static str,
        /// The parameter's name.
        what: &'static str,
        /// The value given.
        value: f64,
        /// The rule it broke.
        reason: &'static str,
    },
    /// An observer or log was asked for a result before it saw any data.
    #[error("{op}: no data observed yet")]
    Empty {
        /// The public operation.
        op: &'static str,
    },
    /// An empty input where an empty input would silently change the result.
    #[error("{op}: empty input")]
    EmptyInput {
        /// The public operation.
        op: &'static str,
    },
    /// A named item (layer, tensor, module) that is not there.
    #[error("{op}: no {what} named `{name}`")]
    NotFound {
        /// The public operation.
        op: &'static str,
        /// What kind of item.
        what: &'static str,
        /// The name looked up.
        name: String,
    },
    /// Two observers or histograms that cannot be merged.
    #[error("{op}: cannot merge: {reason}")]
    Incompatible {
        /// The public operation.
        op: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A file or data format that could not be read.
    #[error("{op}: {detail}")]
    Format {
        /// The public operation.
        op: &'static str,
        /// What was wrong, with position where known.
        detail: String,
    },
    /// A layer name that is empty, or already used in the model.
    #[error("{op}: invalid layer name `{name}`: {reason}")]
    InvalidName {
        /// The public operation.
        op: &'static str,
        /// The name given.
        name: String,
        /// Why it is refused (`"empty"`, `"already used"`).
        reason: &'static str,
    },
    /// A float activation where a quantized one is needed, or the reverse.
    #[error("{op}: expected a {expected} activation, got a {got} one")]
    WrongActivation {
        /// The public operation.
        op: &'static str,
        /// The kind the operation needs.
        expected: ActivationKind,
        /// The kind it got.
        got: ActivationKind,
    },
    /// Quantization parameters of a kind the operation does not take (a quint8 activation
    /// quantized per channel, weights along another axis than 0, float zero points ...).
    #[error("{op}: unsupported quantization parameters: {reason}")]
    UnsupportedQParams {
        /// The public operation.
        op: &'static str,
        /// What is required.
        reason: &'static str,
    },
    /// Parameters of another dtype than the operation requires.
    #[error("{op}: expected {expected} parameters, got {got}")]
    WrongDType {
        /// The public operation.
        op: &'static str,
        /// The dtype required.
        expected: QDType,
        /// The dtype given.
        got: QDType,
    },
    /// A layer the operation cannot take in that place (a two-input layer in a sequential
    /// container, a fused ReLU where dynamic quantization has none ...).
    #[error("{op}: unsupported layer {kind}: {reason}")]
    UnsupportedLayer {
        /// The public operation.
        op: &'static str,
        /// The layer's kind ([`Module::kind`](crate::nn::Module::kind)).
        kind: String,
        /// Why.
        reason: &'static str,
    },
    /// Layers named for fusion that form no fusion pattern, or do not follow each other.
    #[error("{op}: cannot fuse {names:?} ({kinds:?}): {reason}")]
    NotFusable {
        /// The public operation.
        op: &'static str,
        /// The layers' names, as given.
        names: Vec<String>,
        /// Their kinds.
        kinds: Vec<String>,
        /// Why.
        reason: &'static str,
    },
    /// A model without a [`QuantStub`](crate::nn::QuantStub): nothing would be quantized.
    #[error(
        "{op}: the model has no QuantStub, so nothing would be quantized (see Sequential::with_quant_stubs)"
    )]
    NoQuantStub {
        /// The public operation.
        op: &'static str,
    },
    /// Two quantized tensors compared value by value that have different parameters.
    #[error("{op}: the tensors have different quantization parameters")]
    QParamsMismatch {
        /// The public operation.
        op: &'static str,
    },
    /// An integer accumulator that the given weights could overflow.
    #[error("{op}: an i32 accumulator could overflow: up to {bound} for output channel {channel}")]
    AccumulatorOverflow {
        /// The public operation.
        op: &'static str,
        /// The output channel with the largest bound.
        channel: usize,
        /// The largest possible accumulator magnitude.
        bound: i64,
    },
    /// Geometry (padding, dilation, kernel, stride) whose arithmetic overflows `usize`.
    #[error("{op}: {what} overflows")]
    GeometryOverflow {
        /// The public operation.
        op: &'static str,
        /// Which quantity overflowed.
        what: &'static str,
    },
    /// An output or intermediate buffer would exceed the element cap
    /// ([`crate::nn::MAX_ELEMENTS`]): refused before anything is allocated.
    #[error("{op}: {what} would hold {elements} elements, more than the {max} allowed")]
    TooLarge {
        /// The refusing function.
        op: &'static str,
        /// The buffer.
        what: &'static str,
        /// Its element count.
        elements: usize,
        /// The cap.
        max: usize,
    },
    /// Finite values whose range cannot be represented in `f32`: the width `max − min` of an
    /// observed range (or the scale chosen from it) overflows, or an `f64` value lies beyond
    /// `f32`'s range. PyTorch computes an infinite scale or NaN statistics there.
    #[error("{op}: the range {min:e}..={max:e} overflows f32")]
    RangeOverflow {
        /// The public operation.
        op: &'static str,
        /// Lower end of the range.
        min: f64,
        /// Upper end of the range.
        max: f64,
    },
    /// Reading or writing a file failed; the I/O error is kept ([`std::error::Error::source`],
    /// [`QuantError::io_kind`]).
    #[error("{op}: {path}: {source}")]
    Io {
        /// The public operation.
        op: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: Cause,
    },
    /// A file or text could not be parsed (safetensors, JSON); the parser's error is kept.
    #[error("{op}: {what}: {source}")]
    Parse {
        /// The public operation.
        op: &'static str,
        /// What was being read (`"float dump"`, a path, ...).
        what: String,
        /// The cause.
        #[source]
        source: Cause,
    },
}

/// The cause of an [`QuantError::Io`] or [`QuantError::Parse`] error: the underlying error,
/// shared (so `QuantError` stays `Clone`), compared by its message.
#[derive(Debug, Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wraps an error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(std::sync::Arc::new(e))
    }

    /// The underlying error.
    #[must_use]
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

/// Expands `$body` with `$op` bound to the `op` field of whichever variant `$e` is: the one
/// place that lists every variant, so context is added in one place.
macro_rules! with_op_field {
    ($e:expr, $op:ident => $body:expr) => {
        match $e {
            QuantError::NanInput { op: $op, .. }
            | QuantError::InfiniteInput { op: $op, .. }
            | QuantError::NonFinite { op: $op, .. }
            | QuantError::InvalidScale { op: $op, .. }
            | QuantError::ZeroPointOutOfRange { op: $op, .. }
            | QuantError::InvalidQuantRange { op: $op, .. }
            | QuantError::StorageTooNarrow { op: $op, .. }
            | QuantError::InvalidAxis { op: $op, .. }
            | QuantError::LengthMismatch { op: $op, .. }
            | QuantError::ShapeMismatch { op: $op, .. }
            | QuantError::NotMultiple { op: $op, .. }
            | QuantError::UnsupportedConfig { op: $op, .. }
            | QuantError::InvalidParameter { op: $op, .. }
            | QuantError::Empty { op: $op, .. }
            | QuantError::EmptyInput { op: $op, .. }
            | QuantError::NotFound { op: $op, .. }
            | QuantError::Incompatible { op: $op, .. }
            | QuantError::Format { op: $op, .. }
            | QuantError::InvalidName { op: $op, .. }
            | QuantError::WrongActivation { op: $op, .. }
            | QuantError::UnsupportedQParams { op: $op, .. }
            | QuantError::WrongDType { op: $op, .. }
            | QuantError::UnsupportedLayer { op: $op, .. }
            | QuantError::NotFusable { op: $op, .. }
            | QuantError::NoQuantStub { op: $op, .. }
            | QuantError::QParamsMismatch { op: $op, .. }
            | QuantError::AccumulatorOverflow { op: $op, .. }
            | QuantError::GeometryOverflow { op: $op, .. }
            | QuantError::TooLarge { op: $op, .. }
            | QuantError::RangeOverflow { op: $op, .. }
            | QuantError::Io { op: $op, .. }
            | QuantError::Parse { op: $op, .. } => $body,
        }
    };
}

impl QuantError {
    /// The public operation that refused.
    ///
    /// # Examples
    /// ```
    /// use qnumeric::{QDType, QParams};
    /// let e = QParams::new(-1.0, 0, QDType::QUInt8).unwrap_err();
    /// assert_eq!(e.op(), "QParams::new");
    /// assert_eq!(e.with_op("my_backend::load").op(), "my_backend::load");
    /// ```
    #[must_use]
    pub fn op(&self) -> &'static str {
        with_op_field!(self, op => op)
    }

    /// The same error, reported by `op`: how a layer of code adds its own context (the rest of
    /// the error, its cause included, is kept).
    #[must_use]
    pub fn with_op(mut self, op: &'static str) -> Self {
        with_op_field!(&mut self, o => *o = op);
        self
    }

    /// The I/O error kind of an [`QuantError::Io`] error (`NotFound`, `PermissionDenied`, ...).
    #[must_use]
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            QuantError::Io { source, .. } => source
                .get()
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
            _ => None,
        }
    }

    /// An [`QuantError::Io`] error for `path`.
    pub fn io(op: &'static str, path: &std::path::Path, e: std::io::Error) -> Self {
        QuantError::Io {
            op,
            path: path.display().to_string(),
            source: Cause::new(e),
        }
    }

    /// A [`QuantError::Parse`] error.
    pub fn parse(
        op: &'static str,
        what: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        QuantError::Parse {
            op,
            what: what.into(),
            source: Cause::new(e),
        }
    }
}

/// Whether an activation is float or quantized (for [`QuantError::WrongActivation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationKind {
    /// A float tensor.
    Float,
    /// A quantized tensor.
    Quantized,
}

impl std::fmt::Display for ActivationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActivationKind::Float => "float",
            ActivationKind::Quantized => "quantized",
        })
    }
}

/// `Result` with [`QuantError`] as the default error type.
pub type Result<T, E = QuantError> = std::result::Result<T, E>;
