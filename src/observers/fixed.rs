//! [`FixedQParamsObserver`]: parameters fixed in advance (sigmoid, tanh, ...).

use ndarray::ArrayViewD;

use super::reduce::incompatible;
use super::Observer;
use crate::dtype::QRange;
use crate::error::Result;
use crate::qparams::AnyQParams;
use crate::qparams::{QParams, QScheme, QSpec};

/// PyTorch's `FixedQParamsObserver`: returns the parameters it was built with, whatever it
/// observes (PyTorch uses it for outputs of known range: `(2/256, 128)` for tanh, `(1/256, 0)`
/// for sigmoid on quint8).
///
/// `observe` ignores the data (it does not even look for NaN); `merge` accepts another fixed
/// observer with the same parameters.
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
    /// [`QParams::with_range`].
    pub fn new(scale: f32, zero_point: i64, range: QRange) -> Result<Self> {
        let qparams = QParams::with_range(scale, zero_point, range)?;
        let mut spec = QSpec::new(QScheme::PerTensorAffine, range.dtype());
        spec.range = range;
        spec.customized_range = !range.is_full();
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

    fn observe(&mut self, _x: ArrayViewD<'_, f32>) -> Result<()> {
        Ok(())
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
