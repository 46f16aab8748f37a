//! [`DynamicObserver`]: the placeholder for dynamic quantization, where parameters are
//! computed from each batch at run time.

use super::minmax::{per_tensor_qparams, union};
use super::reduce::{check_spec, incompatible, min_max_view};
use super::{FloatView, Observer};
use crate::error::{QuantError, Result};
use crate::qparams::{AnyQParams, QSpec};

/// Dynamic quantization: `qparams` come from the **last** batch only (PyTorch's
/// `PlaceholderObserver(is_dynamic=True)` defers this to the quantized kernel, which picks
/// parameters from each input's min/max; this observer computes them with
/// [`QSpec::qparams_from_min_max`]).
///
/// - An empty batch is [`QuantError::EmptyInput`]: it would otherwise leave the previous
///   batch's parameters in place silently.
/// - `merge` unions the two last-batch ranges (as if both last batches were one batch).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{DynamicObserver, QDType, QScheme, QSpec};
/// let mut obs = DynamicObserver::new(QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8))?;
/// obs.observe(array![-10.0f32, 10.0].view())?;
/// obs.observe(array![0.0f32, 1.0].view())?;
/// assert_eq!(obs.min_max(), Some((0.0, 1.0)));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "DynamicState", try_from = "DynamicState")
)]
pub struct DynamicObserver {
    spec: QSpec,
    last: Option<(f32, f32)>,
}

impl DynamicObserver {
    /// A dynamic observer for a per-tensor spec.
    ///
    /// # Errors
    /// As [`MinMaxObserver::new`](super::MinMaxObserver::new).
    pub fn new(spec: QSpec) -> Result<Self> {
        check_spec("DynamicObserver::new", &spec, false, true)?;
        Ok(DynamicObserver { spec, last: None })
    }

    /// The last batch's `(min, max)`.
    #[must_use]
    pub fn min_max(&self) -> Option<(f32, f32)> {
        self.last
    }
}

impl Observer for DynamicObserver {
    fn name(&self) -> &'static str {
        "DynamicObserver"
    }

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe_view(&mut self, x: FloatView<'_>) -> Result<()> {
        const OP: &str = "DynamicObserver::observe";
        let r = min_max_view(OP, &x)?.ok_or(QuantError::EmptyInput { op: OP })?;
        self.last = Some(r);
        Ok(())
    }

    fn qparams(&self) -> Result<AnyQParams> {
        let (a, b) = self.last.ok_or(QuantError::Empty {
            op: "DynamicObserver::qparams",
        })?;
        per_tensor_qparams(&self.spec, a, b)
    }

    fn reset(&mut self) {
        self.last = None;
    }

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        const OP: &str = "DynamicObserver::merge";
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(OP, "not a DynamicObserver"))?;
        if o.spec != self.spec {
            return Err(incompatible(OP, "different specs"));
        }
        if let Some(r) = o.last {
            self.last = Some(union(self.last, r));
        }
        Ok(())
    }
}

/// The serialized state of a [`DynamicObserver`].
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct DynamicState {
    spec: QSpec,
    last_min_max: Option<(f32, f32)>,
}

#[cfg(feature = "serde")]
impl From<DynamicObserver> for DynamicState {
    fn from(o: DynamicObserver) -> Self {
        DynamicState {
            spec: o.spec,
            last_min_max: o.last,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<DynamicState> for DynamicObserver {
    type Error = QuantError;

    /// The constructor's checks, and a finite `min <= max`.
    fn try_from(s: DynamicState) -> Result<Self> {
        let mut o = DynamicObserver::new(s.spec)?;
        if let Some((a, b)) = s.last_min_max {
            crate::qparams::check_min_max("DynamicObserver::deserialize", a, b)?;
        }
        o.last = s.last_min_max;
        Ok(o)
    }
}
