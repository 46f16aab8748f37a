//! [`QuantizedTensor`]: integer data together with the parameters that give it meaning.

use ndarray::{ArrayD, ArrayRef, Dimension};

use crate::element::{QFloat, QInt};
use crate::error::{QuantError, Result};
use crate::kernels;
use crate::qparams::{AnyQParams, QParams};

/// A quantized tensor: integer values (`Q` storage, e.g. `u8` for quint8) and their
/// parameters. The invariant (every value inside the dtype's range, per-channel parameters
/// matching the channel axis) holds from construction on.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{QDType, QParams, QuantizedTensor};
/// let qp = QParams::new(0.5, 128, QDType::QUInt8)?;
/// let t = QuantizedTensor::<u8>::quantize(&array![1.0f32, -1.0].into_dyn(), qp)?;
/// assert_eq!(t.int_repr().as_slice(), Some(&[130u8, 126][..]));
/// assert_eq!(t.dequantize::<f32>()?, array![1.0f32, -1.0].into_dyn());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor<Q: QInt = u8> {
    data: ArrayD<Q>,
    params: AnyQParams,
}

impl<Q: QInt> QuantizedTensor<Q> {
    /// Quantizes a float array with the given parameters.
    ///
    /// # Errors
    /// As [`quantize`](crate::quantize) / [`quantize_per_channel`](crate::quantize_per_channel).
    pub fn quantize<F: QFloat, D: Dimension>(
        x: &ArrayRef<F, D>,
        params: impl Into<AnyQParams>,
    ) -> Result<Self> {
        let params = params.into();
        let x = x.view().into_dyn();
        let data = match &params {
            AnyQParams::PerTensor(p) => kernels::quantize(&x, p)?,
            AnyQParams::PerChannel(p) => kernels::quantize_per_channel(&x, p)?,
        };
        Ok(QuantizedTensor { data, params })
    }

    /// Wraps integer data already quantized with `params`.
    ///
    /// # Errors
    /// A value outside the dtype's range, a storage type too narrow, or per-channel parameters
    /// that do not match the data's axis.
    pub fn from_parts(data: ArrayD<Q>, params: impl Into<AnyQParams>) -> Result<Self> {
        let params = params.into();
        // Dequantizing checks every invariant (range, axis, channel count) without writing.
        let t = QuantizedTensor { data, params };
        t.dequantize::<f32>()?;
        Ok(t)
    }

    /// The integer representation.
    #[must_use]
    pub fn int_repr(&self) -> &ArrayD<Q> {
        &self.data
    }

    /// Consumes the tensor, returning its integer data and parameters.
    #[must_use]
    pub fn into_parts(self) -> (ArrayD<Q>, AnyQParams) {
        (self.data, self.params)
    }

    /// The parameters.
    #[must_use]
    pub fn params(&self) -> &AnyQParams {
        &self.params
    }

    /// The per-tensor parameters, if the tensor is quantized per tensor.
    #[must_use]
    pub fn per_tensor(&self) -> Option<&QParams> {
        match &self.params {
            AnyQParams::PerTensor(p) => Some(p),
            AnyQParams::PerChannel(_) => None,
        }
    }

    /// The shape.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The per-tensor parameters, or [`QuantError::UnsupportedQParams`] naming `op` for a
    /// tensor quantized per channel.
    pub(crate) fn need_per_tensor(&self, op: &'static str) -> Result<&QParams> {
        self.per_tensor().ok_or(QuantError::UnsupportedQParams {
            op,
            reason: "activations must be quantized per tensor",
        })
    }

    /// Wraps data the caller produced inside the dtype's range (checked in debug builds).
    pub(crate) fn from_valid_parts(data: ArrayD<Q>, params: impl Into<AnyQParams>) -> Self {
        let t = QuantizedTensor {
            data,
            params: params.into(),
        };
        debug_assert!(
            t.dequantize::<f32>().is_ok(),
            "values outside the dtype's range"
        );
        t
    }

    /// A tensor with the same parameters and other integer data of the same dtype. The
    /// caller keeps every value inside the dtype's range (checked in debug builds).
    pub(crate) fn with_data(&self, data: ArrayD<Q>) -> Self {
        let t = QuantizedTensor {
            data,
            params: self.params.clone(),
        };
        debug_assert!(
            t.dequantize::<f32>().is_ok(),
            "values outside the dtype's range"
        );
        t
    }

    /// The same parameters, each value mapped by `f` (which keeps values inside the dtype's
    /// range).
    pub(crate) fn map_values(&self, f: impl Fn(Q) -> Q) -> Self {
        self.with_data(self.data.mapv(f))
    }

    /// Dequantizes to `f32` (the invariants guarantee success).
    #[must_use]
    pub fn to_float(&self) -> ArrayD<f32> {
        self.dequantize::<f32>()
            .expect("a QuantizedTensor's invariants (range, axis, channels) hold from construction")
    }

    /// Dequantizes to a float array.
    ///
    /// # Errors
    /// Only if the invariants were broken, which the constructors prevent.
    pub fn dequantize<F: QFloat>(&self) -> Result<ArrayD<F>> {
        match &self.params {
            AnyQParams::PerTensor(p) => kernels::dequantize(&self.data, p),
            AnyQParams::PerChannel(p) => kernels::dequantize_per_channel(&self.data, p),
        }
    }
}

/// Quantized tensors within `epsilon` quanta, for a backend's unit tests: the same shape and
/// parameters, every stored integer at most `epsilon` apart (`approx::assert_abs_diff_eq!(ours,
/// theirs, epsilon = 1)` accepts the off-by-one values of another rounding order).
///
/// # Examples
/// ```
/// use approx::{assert_abs_diff_eq, assert_abs_diff_ne};
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::{QDType, QParams, QuantizedTensor};
/// let qp = QParams::new(0.1, 0, QDType::QUInt8)?;
/// let a = QuantizedTensor::from_parts(ArrayD::from_shape_vec(IxDyn(&[3]), vec![10u8, 20, 30]).unwrap(), qp)?;
/// let b = QuantizedTensor::from_parts(ArrayD::from_shape_vec(IxDyn(&[3]), vec![11u8, 20, 29]).unwrap(), qp)?;
/// assert_abs_diff_eq!(a, b, epsilon = 1);
/// assert_abs_diff_ne!(a, b); // not bit-exact
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
impl<Q: QInt> approx::AbsDiffEq for QuantizedTensor<Q> {
    type Epsilon = u32;

    fn default_epsilon() -> u32 {
        0
    }

    fn abs_diff_eq(&self, other: &Self, epsilon: u32) -> bool {
        self.shape() == other.shape()
            && self.params() == other.params()
            && self
                .int_repr()
                .iter()
                .zip(other.int_repr().iter())
                .all(|(a, b)| a.to_i32().abs_diff(b.to_i32()) <= epsilon)
    }
}
