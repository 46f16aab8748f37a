//! Per-tensor min/max observer ([`MinMaxObserver`], running or moving average) and the
//! [`UpdateRule`] it shares with the per-channel one.

use super::reduce::{check_averaging_constant, check_spec, incompatible, min_max_view};
use super::{FloatView, Observer};
use crate::error::{QuantError, Result};
use crate::qparams::{AnyQParams, QParams, QSpec};

/// Per-tensor parameters from a `(min, max)` pair with a spec.
pub(crate) fn per_tensor_qparams(spec: &QSpec, min: f32, max: f32) -> Result<AnyQParams> {
    let p = spec.qparams_from_min_max(min, max)?;
    Ok(AnyQParams::PerTensor(QParams::with_range(
        p.scale,
        p.zero_point as i64,
        spec.range(),
    )?))
}

/// How a min/max observer folds each batch's `(min, max)` into its running values: the one
/// difference between PyTorch's `MinMaxObserver` and `MovingAverageMinMaxObserver` (and
/// their per-channel versions).
///
/// # Examples
/// ```
/// use qnumeric::observers::UpdateRule;
/// let ema = UpdateRule::moving_average(0.01)?;
/// assert_eq!(ema.averaging_constant(), Some(0.01));
/// assert!(UpdateRule::moving_average(0.0).is_err());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum UpdateRule {
    /// `min = min(min, batch_min)`, `max = max(max, batch_max)` (PyTorch's
    /// `MinMaxObserver`).
    Running,
    /// The first batch assigns; each later batch updates `min = min + c·(batch_min − min)`
    /// (likewise max), each step one `f32` operation in that order, with
    /// `c = averaging_constant` in `(0, 1]`: bit for bit PyTorch's
    /// `MovingAverageMinMaxObserver` (default `c` 0.01).
    MovingAverage {
        /// The weight of the new batch, in `(0, 1]`.
        averaging_constant: f32,
    },
}

impl UpdateRule {
    /// PyTorch's default averaging constant.
    pub const DEFAULT_AVERAGING_CONSTANT: f32 = 0.01;

    /// A moving average with a checked constant.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] unless `0 < averaging_constant <= 1`.
    pub fn moving_average(averaging_constant: f32) -> Result<Self> {
        check_averaging_constant("UpdateRule::moving_average", averaging_constant)?;
        Ok(UpdateRule::MovingAverage { averaging_constant })
    }

    /// The averaging constant of a moving average (`None` for [`UpdateRule::Running`]).
    #[must_use]
    pub const fn averaging_constant(self) -> Option<f32> {
        match self {
            UpdateRule::Running => None,
            UpdateRule::MovingAverage { averaging_constant } => Some(averaging_constant),
        }
    }

    /// Checks the constant (rules built with the enum literal are checked here).
    pub(crate) fn check(self, op: &'static str) -> Result<()> {
        match self {
            UpdateRule::Running => Ok(()),
            UpdateRule::MovingAverage { averaging_constant } => {
                check_averaging_constant(op, averaging_constant)
            }
        }
    }

    /// The new running `(min, max)` after a batch with range `(a, b)`.
    ///
    /// # Errors
    /// [`QuantError::RangeOverflow`] when a moving-average step overflows `f32` (the batch
    /// and the running value lie further apart than `f32::MAX`).
    #[inline]
    pub(crate) fn fold(
        self,
        op: &'static str,
        old: (f32, f32),
        batch: (f32, f32),
    ) -> Result<(f32, f32)> {
        let ((m, n), (a, b)) = (old, batch);
        match self {
            UpdateRule::Running => Ok((m.min(a), n.max(b))),
            UpdateRule::MovingAverage {
                averaging_constant: c,
            } => {
                let r = (m + c * (a - m), n + c * (b - n));
                if r.0.is_finite() && r.1.is_finite() {
                    Ok(r)
                } else {
                    Err(QuantError::RangeOverflow {
                        op,
                        min: m.min(a) as f64,
                        max: n.max(b) as f64,
                    })
                }
            }
        }
    }
}

/// The names of an observer's public operations (`"MinMaxObserver::observe"`, ...).
pub(crate) struct Ops {
    pub(crate) name: &'static str,
    pub(crate) new: &'static str,
    pub(crate) observe: &'static str,
    pub(crate) qparams: &'static str,
    pub(crate) merge: &'static str,
}

/// The [`Ops`] of a class name given as a literal.
macro_rules! ops {
    ($name:literal) => {
        $crate::observers::minmax::Ops {
            name: $name,
            new: concat!($name, "::new"),
            observe: concat!($name, "::observe"),
            qparams: concat!($name, "::qparams"),
            merge: concat!($name, "::merge"),
        }
    };
}
pub(crate) use ops;

static RUNNING: Ops = ops!("MinMaxObserver");
static MOVING_AVERAGE: Ops = ops!("MovingAverageMinMaxObserver");

/// The union of two ranges (how min/max observers merge).
pub(crate) fn union(r: Option<(f32, f32)>, o: (f32, f32)) -> (f32, f32) {
    match r {
        None => o,
        Some((m, n)) => (m.min(o.0), n.max(o.1)),
    }
}

/// PyTorch's `MinMaxObserver` and `MovingAverageMinMaxObserver`: one per-tensor observer
/// whose [`UpdateRule`] says how batches are folded in.
///
/// - [`MinMaxObserver::new`]: the running minimum and maximum over every batch
///   (`MinMaxObserver`); [`MinMaxObserver::moving_average`]: an exponential moving average
///   of each batch's min and max (`MovingAverageMinMaxObserver`). [`Observer::name`] reports
///   PyTorch's class name for each.
/// - `qparams`: [`QSpec::qparams_from_min_max`] (PyTorch's `_calculate_qparams`) on the
///   running range.
/// - An empty batch is a no-op (as in PyTorch).
/// - NaN/±inf: refused with [`QuantError::NanInput`] / [`QuantError::NonFinite`]; the observer
///   is unchanged. (PyTorch lets a single NaN poison `min_val`/`max_val` for good, and stores
///   ±inf, which gives an infinite scale.) A moving-average step that overflows `f32` is
///   [`QuantError::RangeOverflow`], as is `qparams` when the scale overflows.
/// - Nothing observed: `qparams` is [`QuantError::Empty`] (PyTorch warns and returns scale
///   1.0, zero point 0).
/// - `merge` takes the union of both ranges: exact for the running rule (it equals one
///   observer over all batches) and for moving averages whose shards each saw one batch; with
///   more batches per shard an EMA over interleaved shards has no single answer, and the union
///   is the conservative choice.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{MinMaxObserver, Observer, QDType, QScheme, QSpec, AnyQParams};
///
/// let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
/// let mut obs = MinMaxObserver::new(spec)?;
/// obs.observe(array![1.0f32, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0].view())?;
/// obs.observe(array![4.0f32, 5.0, 5.0, 6.0, 7.0, 8.0].view())?;
/// assert_eq!(obs.min_max(), Some((1.0, 8.0)));
/// let AnyQParams::PerTensor(qp) = obs.qparams()? else { unreachable!() };
/// // scale = (8 - 0) / 255 (the range is extended to 0), zero point 0
/// assert_eq!((qp.scale(), qp.zero_point()), (0.031_372_55, 0));
///
/// // PyTorch's MovingAverageMinMaxObserver with averaging constant 0.5:
/// let mut ema = MinMaxObserver::moving_average(spec, 0.5)?;
/// ema.observe(array![0.0f32, 2.0, 6.0].view())?;
/// ema.observe(array![2.0f32, 5.0, 10.0].view())?;
/// assert_eq!(ema.min_max(), Some((1.0, 8.0))); // 0 + 0.5·(2 − 0), 6 + 0.5·(10 − 6)
/// assert_eq!(ema.name(), "MovingAverageMinMaxObserver");
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[doc(alias = "MovingAverageMinMaxObserver")]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "MinMaxState", try_from = "MinMaxState")
)]
pub struct MinMaxObserver {
    spec: QSpec,
    rule: UpdateRule,
    range: Option<(f32, f32)>,
}

impl MinMaxObserver {
    /// PyTorch's `MinMaxObserver`: running min/max for a per-tensor spec.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme, or for a symmetric scheme on
    /// `quint8` with `reduce_range` (PyTorch's NotImplementedError).
    pub fn new(spec: QSpec) -> Result<Self> {
        Self::with_rule(spec, UpdateRule::Running)
    }

    /// PyTorch's `MovingAverageMinMaxObserver` (PyTorch's default constant is
    /// [`UpdateRule::DEFAULT_AVERAGING_CONSTANT`], 0.01).
    ///
    /// # Errors
    /// As [`MinMaxObserver::new`]; [`QuantError::InvalidParameter`] when the averaging constant
    /// is not in `(0, 1]`.
    #[doc(alias = "MovingAverageMinMaxObserver")]
    pub fn moving_average(spec: QSpec, averaging_constant: f32) -> Result<Self> {
        Self::with_rule(spec, UpdateRule::MovingAverage { averaging_constant })
    }

    /// An observer with any [`UpdateRule`].
    ///
    /// # Errors
    /// As [`MinMaxObserver::moving_average`].
    pub fn with_rule(spec: QSpec, rule: UpdateRule) -> Result<Self> {
        let op = Self::ops(rule).new;
        check_spec(op, &spec, false, true)?;
        rule.check(op)?;
        Ok(MinMaxObserver {
            spec,
            rule,
            range: None,
        })
    }

    /// The update rule.
    #[must_use]
    pub fn rule(&self) -> UpdateRule {
        self.rule
    }

    /// The averaging constant (`None` for the running rule).
    #[must_use]
    pub fn averaging_constant(&self) -> Option<f32> {
        self.rule.averaging_constant()
    }

    /// The running `(min, max)` (`None` before any data).
    #[must_use]
    pub fn min_max(&self) -> Option<(f32, f32)> {
        self.range
    }

    /// The operation names, under PyTorch's class name for the rule.
    fn ops(rule: UpdateRule) -> &'static Ops {
        match rule {
            UpdateRule::Running => &RUNNING,
            UpdateRule::MovingAverage { .. } => &MOVING_AVERAGE,
        }
    }
}

impl Observer for MinMaxObserver {
    fn name(&self) -> &'static str {
        Self::ops(self.rule).name
    }

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe_view(&mut self, x: FloatView<'_>) -> Result<()> {
        let op = Self::ops(self.rule).observe;
        if let Some(batch) = min_max_view(op, &x)? {
            self.range = Some(match self.range {
                None => batch,
                Some(old) => self.rule.fold(op, old, batch)?,
            });
        }
        Ok(())
    }

    fn qparams(&self) -> Result<AnyQParams> {
        let (a, b) = self.range.ok_or(QuantError::Empty {
            op: Self::ops(self.rule).qparams,
        })?;
        per_tensor_qparams(&self.spec, a, b)
    }

    fn reset(&mut self) {
        self.range = None;
    }

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        let op = Self::ops(self.rule).merge;
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(op, "not a min/max observer"))?;
        if o.spec != self.spec || o.rule != self.rule {
            return Err(incompatible(op, "different configurations"));
        }
        if let Some(r) = o.range {
            self.range = Some(union(self.range, r));
        }
        Ok(())
    }
}

/// The serialized state of a [`MinMaxObserver`].
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct MinMaxState {
    spec: QSpec,
    rule: UpdateRule,
    min_max: Option<(f32, f32)>,
}

#[cfg(feature = "serde")]
impl From<MinMaxObserver> for MinMaxState {
    fn from(o: MinMaxObserver) -> Self {
        MinMaxState {
            spec: o.spec,
            rule: o.rule,
            min_max: o.range,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<MinMaxState> for MinMaxObserver {
    type Error = QuantError;

    /// The constructor's checks, and a finite `min <= max`.
    fn try_from(s: MinMaxState) -> Result<Self> {
        let mut o = MinMaxObserver::with_rule(s.spec, s.rule)?;
        if let Some((a, b)) = s.min_max {
            crate::qparams::check_min_max("MinMaxObserver::deserialize", a, b)?;
        }
        o.range = s.min_max;
        Ok(o)
    }
}
