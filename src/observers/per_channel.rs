//! Per-channel min/max observer: [`PerChannelMinMaxObserver`], running or moving average.

use super::minmax::{Ops, UpdateRule, ops};
use super::reduce::{channel_min_max_view, check_spec, float_zero_points, incompatible};
use super::{FloatView, Observer};
use crate::error::{QuantError, Result};
use crate::qparams::{AnyQParams, PerChannelQParams, QSpec, ZeroPoints, resolve_axis};

/// Per-channel parameters from per-channel `(min, max)` lists.
pub(crate) fn per_channel_qparams(
    spec: &QSpec,
    axis: isize,
    mins: &[f32],
    maxs: &[f32],
) -> Result<AnyQParams> {
    let mut scales = Vec::with_capacity(mins.len());
    let mut zps = Vec::with_capacity(mins.len());
    for (&a, &b) in mins.iter().zip(maxs) {
        let p = spec.qparams_from_min_max(a, b)?;
        scales.push(p.scale);
        zps.push(p.zero_point);
    }
    let zero_points = if float_zero_points(spec.scheme()) {
        ZeroPoints::Float(zps)
    } else {
        ZeroPoints::Int(zps.into_iter().map(|z| z as i32).collect())
    };
    Ok(AnyQParams::PerChannel(PerChannelQParams::with_range(
        scales,
        zero_points,
        axis,
        spec.range(),
    )?))
}

static RUNNING: Ops = ops!("PerChannelMinMaxObserver");
static MOVING_AVERAGE: Ops = ops!("MovingAveragePerChannelMinMaxObserver");

/// PyTorch's `PerChannelMinMaxObserver` and `MovingAveragePerChannelMinMaxObserver`: min and
/// max of each slice along `ch_axis`, folded in by an [`UpdateRule`] (as
/// [`MinMaxObserver`](super::MinMaxObserver), per channel).
///
/// - [`PerChannelMinMaxObserver::new`]: running min/max; [`PerChannelMinMaxObserver::moving_average`]:
///   PyTorch's moving average (first batch assigns; later ones `min = min + c·(batch_min − min)`
///   in `f32`). [`Observer::name`] reports PyTorch's class name for each.
/// - `ch_axis` may be negative (counted from the end); it is checked against each batch
///   ([`QuantError::InvalidAxis`], PyTorch's IndexError). PyTorch swaps axis 0 and `ch_axis`
///   and flattens; the per-channel min/max do not depend on that order.
/// - A later batch with another channel count is [`QuantError::LengthMismatch`] (PyTorch's
///   shape-mismatch RuntimeError). Empty batches are no-ops.
/// - `qparams` gives [`AnyQParams::PerChannel`] with `axis = ch_axis` as configured; float
///   zero points for [`QScheme::PerChannelAffineFloatQParams`](crate::QScheme).
/// - NaN/inf, overflow and empty-observer behaviour as [`MinMaxObserver`](super::MinMaxObserver)
///   (PyTorch: NaN poisons the affected channel; never observed → scale 1.0, zero point 0).
/// - `merge` takes the per-channel union of both ranges (exact for the running rule; see
///   [`MinMaxObserver`](super::MinMaxObserver) for moving averages).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{PerChannelMinMaxObserver, QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8);
/// let mut obs = PerChannelMinMaxObserver::new(spec, 0)?;
/// let w = array![[-5.0f32, -3.5, -2.0, 0.0, 3.0, 5.0, 7.0], [1.0, 3.0, 2.0, 5.0, 6.5, 8.0, 10.0]];
/// obs.observe(w.view())?;
/// assert_eq!(obs.min_vals(), &[-5.0, 1.0]);
/// assert_eq!(obs.max_vals(), &[7.0, 10.0]);
///
/// // PyTorch's MovingAveragePerChannelMinMaxObserver, channels on the last axis:
/// let spec = QSpec::new(QScheme::PerChannelAffine, QDType::QUInt8);
/// let mut ema = PerChannelMinMaxObserver::moving_average(spec, -1, 0.5)?;
/// ema.observe(array![[0.0f32, 4.0], [2.0, 8.0]].view())?;
/// ema.observe(array![[2.0f32, 0.0], [2.0, 6.0]].view())?;
/// assert_eq!(ema.min_vals(), &[1.0, 2.0]); // 0 + 0.5·(2 − 0), 4 + 0.5·(0 − 4)
/// assert_eq!(ema.max_vals(), &[2.0, 7.0]); // 2 + 0.5·(2 − 2), 8 + 0.5·(6 − 8)
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[doc(alias = "MovingAveragePerChannelMinMaxObserver")]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "PerChannelState", try_from = "PerChannelState")
)]
pub struct PerChannelMinMaxObserver {
    spec: QSpec,
    rule: UpdateRule,
    ch_axis: isize,
    /// Per-channel running minima (empty before any data).
    mins: Vec<f32>,
    /// Per-channel running maxima (as many as `mins`).
    maxs: Vec<f32>,
}

impl PerChannelMinMaxObserver {
    /// PyTorch's `PerChannelMinMaxObserver` along `ch_axis` (PyTorch's default is 0).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-tensor scheme, or for a symmetric scheme on
    /// `quint8` with `reduce_range`.
    pub fn new(spec: QSpec, ch_axis: isize) -> Result<Self> {
        Self::with_rule(spec, ch_axis, UpdateRule::Running)
    }

    /// PyTorch's `MovingAveragePerChannelMinMaxObserver`.
    ///
    /// # Errors
    /// As [`PerChannelMinMaxObserver::new`]; [`QuantError::InvalidParameter`] when the
    /// averaging constant is not in `(0, 1]`.
    #[doc(alias = "MovingAveragePerChannelMinMaxObserver")]
    pub fn moving_average(spec: QSpec, ch_axis: isize, averaging_constant: f32) -> Result<Self> {
        Self::with_rule(
            spec,
            ch_axis,
            UpdateRule::MovingAverage { averaging_constant },
        )
    }

    /// An observer with any [`UpdateRule`].
    ///
    /// # Errors
    /// As [`PerChannelMinMaxObserver::moving_average`].
    pub fn with_rule(spec: QSpec, ch_axis: isize, rule: UpdateRule) -> Result<Self> {
        let op = Self::ops(rule).new;
        check_spec(op, &spec, true, true)?;
        rule.check(op)?;
        Ok(PerChannelMinMaxObserver {
            spec,
            rule,
            ch_axis,
            mins: Vec::new(),
            maxs: Vec::new(),
        })
    }

    /// The channel axis as configured.
    #[must_use]
    pub fn ch_axis(&self) -> isize {
        self.ch_axis
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

    /// Per-channel running minima (empty before any data).
    #[must_use]
    pub fn min_vals(&self) -> &[f32] {
        &self.mins
    }

    /// Per-channel running maxima (empty before any data).
    #[must_use]
    pub fn max_vals(&self) -> &[f32] {
        &self.maxs
    }

    fn ops(rule: UpdateRule) -> &'static Ops {
        match rule {
            UpdateRule::Running => &RUNNING,
            UpdateRule::MovingAverage { .. } => &MOVING_AVERAGE,
        }
    }
}

impl Observer for PerChannelMinMaxObserver {
    fn name(&self) -> &'static str {
        Self::ops(self.rule).name
    }

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe_view(&mut self, x: FloatView<'_>) -> Result<()> {
        let op = Self::ops(self.rule).observe;
        let axis = resolve_axis(op, self.ch_axis, x.ndim())?;
        if x.is_empty() {
            return Ok(());
        }
        let c = x.shape()[axis];
        if !self.mins.is_empty() && self.mins.len() != c {
            return Err(QuantError::LengthMismatch {
                op,
                what: "channels of the batch",
                expected: self.mins.len(),
                got: c,
            });
        }
        let (mut mn, mut mx) = channel_min_max_view(op, &x, axis)?;
        if !self.mins.is_empty() {
            // Folded into the batch's vectors first, so that an overflow leaves the observer
            // unchanged.
            for i in 0..c {
                (mn[i], mx[i]) =
                    self.rule
                        .fold(op, (self.mins[i], self.maxs[i]), (mn[i], mx[i]))?;
            }
        }
        self.mins = mn;
        self.maxs = mx;
        Ok(())
    }

    fn qparams(&self) -> Result<AnyQParams> {
        if self.mins.is_empty() {
            return Err(QuantError::Empty {
                op: Self::ops(self.rule).qparams,
            });
        }
        per_channel_qparams(&self.spec, self.ch_axis, &self.mins, &self.maxs)
    }

    fn reset(&mut self) {
        self.mins.clear();
        self.maxs.clear();
    }

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        let op = Self::ops(self.rule).merge;
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(op, "not a per-channel min/max observer"))?;
        if o.spec != self.spec || o.ch_axis != self.ch_axis || o.rule != self.rule {
            return Err(incompatible(op, "different configurations"));
        }
        if o.mins.is_empty() {
            return Ok(());
        }
        if self.mins.is_empty() {
            self.mins.clone_from(&o.mins);
            self.maxs.clone_from(&o.maxs);
            return Ok(());
        }
        if o.mins.len() != self.mins.len() {
            return Err(QuantError::LengthMismatch {
                op,
                what: "channels of the other observer",
                expected: self.mins.len(),
                got: o.mins.len(),
            });
        }
        for (a, &b) in self.mins.iter_mut().zip(&o.mins) {
            *a = a.min(b);
        }
        for (a, &b) in self.maxs.iter_mut().zip(&o.maxs) {
            *a = a.max(b);
        }
        Ok(())
    }
}

/// The serialized state of a [`PerChannelMinMaxObserver`].
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct PerChannelState {
    spec: QSpec,
    rule: UpdateRule,
    ch_axis: isize,
    min_vals: Vec<f32>,
    max_vals: Vec<f32>,
}

#[cfg(feature = "serde")]
impl From<PerChannelMinMaxObserver> for PerChannelState {
    fn from(o: PerChannelMinMaxObserver) -> Self {
        PerChannelState {
            spec: o.spec,
            rule: o.rule,
            ch_axis: o.ch_axis,
            min_vals: o.mins,
            max_vals: o.maxs,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<PerChannelState> for PerChannelMinMaxObserver {
    type Error = QuantError;

    /// The constructor's checks; as many minima as maxima, each pair finite with
    /// `min <= max`.
    fn try_from(s: PerChannelState) -> Result<Self> {
        const OP: &str = "PerChannelMinMaxObserver::deserialize";
        let mut o = PerChannelMinMaxObserver::with_rule(s.spec, s.ch_axis, s.rule)?;
        if s.min_vals.len() != s.max_vals.len() {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "max_vals",
                expected: s.min_vals.len(),
                got: s.max_vals.len(),
            });
        }
        for (&a, &b) in s.min_vals.iter().zip(&s.max_vals) {
            crate::qparams::check_min_max(OP, a, b)?;
        }
        o.mins = s.min_vals;
        o.maxs = s.max_vals;
        Ok(o)
    }
}
