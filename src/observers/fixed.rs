//! [`FixedQParamsObserver`]: parameters fixed in advance (sigmoid, tanh, ...).

use super::reduce::{incompatible, min_max_view};
use super::{FloatView, Observer};
use crate::dtype::QRange;
use crate::error::Result;
use crate::qparams::{AnyQParams, QParams, QScheme, QSpec};

/// PyTorch's `FixedQParamsObserver`: returns the parameters it was built with, whatever it
/// observes (PyTorch uses it for outputs of known range: `(2/256, 128)` for tanh, `(1/256, 0)`
/// for sigmoid on quint8).
///
/// `observe` does not use the data, but refuses NaN and ±inf like every observer (PyTorch
/// ignores the batch entirely); `merge` accepts another fixed observer with the same
/// parameters.
///
/// # Examples
/// ```
/// use qnumeric::{FixedQParamsObserver, Observer, QDType, AnyQParams};
/// let obs = FixedQParamsObserver::new(2.0 / 256.0, 128, QDType::QUInt8.full_range())?;
/// let AnyQParams::PerTensor(qp) = obs.qparams()? else { unreachable!() };
/// assert_eq!((qp.scale(), qp.zero_point()), (0.0078125, 128));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "FixedState", try_from = "FixedState")
)]
pub struct FixedQParamsObserver {
    spec: QSpec,
    qparams: QParams,
}

impl FixedQParamsObserver {
    /// A fixed-parameter observer (per-tensor affine over `range`).
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`](crate::QuantError::InvalidScale) and
    /// [`QuantError::ZeroPointOutOfRange`](crate::QuantError::ZeroPointOutOfRange) as
    /// [`QParams::with_range`]; `InvalidScale` also for a scale whose reciprocal overflows
    /// `f32` (below about `2.9e-39`).
    pub fn new(scale: f32, zero_point: i64, range: QRange) -> Result<Self> {
        let qparams = QParams::with_range(scale, zero_point, range)?;
        if !(1.0 / scale).is_finite() {
            // The kernels multiply by `1 / scale`.
            return Err(crate::error::QuantError::InvalidScale {
                op: "FixedQParamsObserver::new",
                scale: scale as f64,
            });
        }
        let spec = QSpec::from_range(QScheme::PerTensorAffine, range);
        Ok(FixedQParamsObserver { spec, qparams })
    }

    /// The fixed parameters.
    #[must_use]
    pub fn fixed(&self) -> QParams {
        self.qparams
    }
}

impl Observer for FixedQParamsObserver {
    fn name(&self) -> &'static str {
        "FixedQParamsObserver"
    }

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe_view(&mut self, x: FloatView<'_>) -> Result<()> {
        min_max_view("FixedQParamsObserver::observe", &x).map(|_| ())
    }

    fn qparams(&self) -> Result<AnyQParams> {
        Ok(AnyQParams::PerTensor(self.qparams))
    }

    fn reset(&mut self) {}

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        const OP: &str = "FixedQParamsObserver::merge";
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(OP, "not a FixedQParamsObserver"))?;
        if o != self {
            return Err(incompatible(OP, "different fixed parameters"));
        }
        Ok(())
    }
}

/// The serialized state of a [`FixedQParamsObserver`]: its parameters.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct FixedState {
    scale: f32,
    zero_point: i64,
    dtype: crate::dtype::QDType,
    quant_min: i64,
    quant_max: i64,
}

#[cfg(feature = "serde")]
impl From<FixedQParamsObserver> for FixedState {
    fn from(o: FixedQParamsObserver) -> Self {
        let r = o.qparams.range();
        FixedState {
            scale: o.qparams.scale(),
            zero_point: o.qparams.zero_point() as i64,
            dtype: r.dtype(),
            quant_min: r.quant_min(),
            quant_max: r.quant_max(),
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<FixedState> for FixedQParamsObserver {
    type Error = crate::error::QuantError;

    /// The range must be one [`QRange::new`] or [`QRange::for_fake_quant`] builds, then the
    /// constructor's checks.
    fn try_from(s: FixedState) -> Result<Self> {
        let range =
            QRange::new(s.dtype, s.quant_min, s.quant_max).or_else(
                |e| match QRange::for_fake_quant(s.quant_min, s.quant_max) {
                    Ok(r) if r.dtype() == s.dtype => Ok(r),
                    _ => Err(e),
                },
            )?;
        FixedQParamsObserver::new(s.scale, s.zero_point, range)
    }
}
