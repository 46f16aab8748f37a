//! Per-tensor min/max observers: [`MinMaxObserver`] and [`MovingAverageMinMaxObserver`].

use ndarray::ArrayViewD;

use super::reduce::{check_averaging_constant, check_spec, incompatible, min_max};
use super::Observer;
use crate::error::{QuantError, Result};
use crate::qparams::AnyQParams;
use crate::qparams::{QParams, QSpec};

/// Per-tensor parameters from a `(min, max)` pair with a spec.
pub(crate) fn per_tensor_qparams(spec: &QSpec, min: f32, max: f32) -> Result<AnyQParams> {
    let p = spec.qparams_from_min_max(min, max)?;
    Ok(AnyQParams::PerTensor(QParams::with_range(
        p.scale,
        p.zero_point as i64,
        spec.range,
    )?))
}

/// PyTorch's `MinMaxObserver`: the running minimum and maximum over every batch.
///
/// - `observe`: `min = min(min, batch_min)`, `max = max(max, batch_max)`; an empty batch is a
///   no-op (as in PyTorch).
/// - `qparams`: [`QSpec::qparams_from_min_max`] (PyTorch's `_calculate_qparams`).
/// - NaN/±inf: refused with [`QuantError::NanInput`] / [`QuantError::NonFinite`]; the observer
///   is unchanged. (PyTorch lets a single NaN poison `min_val`/`max_val` for good, and stores
///   ±inf, which gives an infinite scale.)
/// - Nothing observed: `qparams` is [`QuantError::Empty`] (PyTorch warns and returns scale
///   1.0, zero point 0).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{MinMaxObserver, Observer, QDType, QScheme, QSpec, AnyQParams};
///
/// let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
/// let mut obs = MinMaxObserver::new(spec)?;
/// obs.observe(array![1.0f32, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0].into_dyn().view())?;
/// obs.observe(array![4.0f32, 5.0, 5.0, 6.0, 7.0, 8.0].into_dyn().view())?;
/// assert_eq!(obs.min_max(), Some((1.0, 8.0)));
/// let AnyQParams::PerTensor(qp) = obs.qparams()? else { unreachable!() };
/// assert_eq!((qp.scale(), qp.zero_point()), (0.031_372_55, 0));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MinMaxObserver {
    spec: QSpec,
    range: Option<(f32, f32)>,
}

impl MinMaxObserver {
    /// A min/max observer for a per-tensor spec.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme, or for a symmetric scheme on
    /// `quint8` with `reduce_range` (PyTorch's NotImplementedError; detected as the
    /// non-customized `0..=127` quint8 range); [`QuantError::InvalidScale`] for a bad `eps`.
    pub fn new(spec: QSpec) -> Result<Self> {
        check_spec("MinMaxObserver::new", &spec, false, true)?;
        Ok(MinMaxObserver { spec, range: None })
    }

    /// The `(min, max)` seen so far (`None` before any data).
    #[must_use]
    pub fn min_max(&self) -> Option<(f32, f32)> {
        self.range
    }
}

impl Observer for MinMaxObserver {
    fn name(&self) -> &'static str {
        "MinMaxObserver"
    }

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe(&mut self, x: ArrayViewD<'_, f32>) -> Result<()> {
        if let Some((a, b)) = min_max("MinMaxObserver::observe", &x)? {
            self.range = Some(match self.range {
                None => (a, b),
                Some((m, n)) => (m.min(a), n.max(b)),
            });
        }
        Ok(())
    }

    fn qparams(&self) -> Result<AnyQParams> {
        let (a, b) = self.range.ok_or(QuantError::Empty {
            op: "MinMaxObserver::qparams",
        })?;
        per_tensor_qparams(&self.spec, a, b)
    }

    fn reset(&mut self) {
        self.range = None;
    }

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        const OP: &str = "MinMaxObserver::merge";
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(OP, "not a MinMaxObserver"))?;
        if o.spec != self.spec {
            return Err(incompatible(OP, "different specs"));
        }
        if let Some((a, b)) = o.range {
            self.range = Some(match self.range {
                None => (a, b),
                Some((m, n)) => (m.min(a), n.max(b)),
            });
        }
        Ok(())
    }
}

/// PyTorch's `MovingAverageMinMaxObserver`: an exponential moving average of each batch's
/// min and max.
///
/// The first batch sets `(min, max)`; each later batch updates
/// `min = min + c·(batch_min − min)` (likewise max), each step one `f32` operation in that
/// order, with `c = f32(averaging_constant)`: bit for bit PyTorch's form.
///
/// `merge` takes the union of both running ranges: exact when each shard saw one batch (then it
/// equals one observer over the concatenated batch); with more batches per shard an EMA over
/// interleaved shards has no single answer, and the union is the conservative choice.
///
/// NaN/inf and empty-observer behaviour as [`MinMaxObserver`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{MovingAverageMinMaxObserver, Observer, QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
/// let mut obs = MovingAverageMinMaxObserver::new(spec, 0.5)?;
/// obs.observe(array![0.0f32, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0].into_dyn().view())?;
/// obs.observe(array![2.0f32, 5.0, 5.0, 6.0, 7.0, 10.0].into_dyn().view())?;
/// assert_eq!(obs.min_max(), Some((1.0, 8.0)));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MovingAverageMinMaxObserver {
    spec: QSpec,
    averaging_constant: f32,
    range: Option<(f32, f32)>,
}

impl MovingAverageMinMaxObserver {
    /// A moving-average observer (PyTorch's default constant is 0.01).
    ///
    /// # Errors
    /// As [`MinMaxObserver::new`]; [`QuantError::InvalidParameter`] when the averaging constant
    /// is not in `(0, 1]`.
    pub fn new(spec: QSpec, averaging_constant: f32) -> Result<Self> {
        const OP: &str = "MovingAverageMinMaxObserver::new";
        check_spec(OP, &spec, false, true)?;
        check_averaging_constant(OP, averaging_constant)?;
        Ok(MovingAverageMinMaxObserver {
            spec,
            averaging_constant,
            range: None,
        })
    }

    /// The averaging constant.
    #[must_use]
    pub fn averaging_constant(&self) -> f32 {
        self.averaging_constant
    }

    /// The running `(min, max)` (`None` before any data).
    #[must_use]
    pub fn min_max(&self) -> Option<(f32, f32)> {
        self.range
    }
}

impl Observer for MovingAverageMinMaxObserver {
    fn name(&self) -> &'static str {
        "MovingAverageMinMaxObserver"
    }

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe(&mut self, x: ArrayViewD<'_, f32>) -> Result<()> {
        if let Some((a, b)) = min_max("MovingAverageMinMaxObserver::observe", &x)? {
            let c = self.averaging_constant;
            self.range = Some(match self.range {
                None => (a, b),
                Some((m, n)) => (m + c * (a - m), n + c * (b - n)),
            });
        }
        Ok(())
    }

    fn qparams(&self) -> Result<AnyQParams> {
        let (a, b) = self.range.ok_or(QuantError::Empty {
            op: "MovingAverageMinMaxObserver::qparams",
        })?;
        per_tensor_qparams(&self.spec, a, b)
    }

    fn reset(&mut self) {
        self.range = None;
    }

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        const OP: &str = "MovingAverageMinMaxObserver::merge";
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(OP, "not a MovingAverageMinMaxObserver"))?;
        if o.spec != self.spec || o.averaging_constant != self.averaging_constant {
            return Err(incompatible(OP, "different configurations"));
        }
        if let Some((a, b)) = o.range {
            self.range = Some(match self.range {
                None => (a, b),
                Some((m, n)) => (m.min(a), n.max(b)),
            });
        }
        Ok(())
    }
}
