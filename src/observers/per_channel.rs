//! Per-channel min/max observers: [`PerChannelMinMaxObserver`] and
//! [`MovingAveragePerChannelMinMaxObserver`].

use ndarray::ArrayViewD;

use super::reduce::{
    channel_min_max, check_averaging_constant, check_spec, float_zero_points, incompatible,
};
use super::Observer;
use crate::error::{QuantError, Result};
use crate::qparams::AnyQParams;
use crate::qparams::{resolve_axis, PerChannelQParams, QSpec, ZeroPoints};

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
    let zero_points = if float_zero_points(spec.scheme) {
        ZeroPoints::Float(zps)
    } else {
        ZeroPoints::Int(zps.into_iter().map(|z| z as i32).collect())
    };
    Ok(AnyQParams::PerChannel(PerChannelQParams::with_range(
        scales,
        zero_points,
        axis,
        spec.range,
    )?))
}

/// Shared state: the axis and per-channel running values.
#[derive(Debug, Clone, PartialEq)]
struct ChannelState {
    ch_axis: isize,
    mins: Vec<f32>,
    maxs: Vec<f32>,
}

impl ChannelState {
    /// Reduces a batch; `None` for an empty batch. Checks the axis and the channel count.
    fn reduce(
        &self,
        op: &'static str,
        x: &ArrayViewD<'_, f32>,
    ) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let axis = resolve_axis(op, self.ch_axis, x.ndim())?;
        if x.is_empty() {
            return Ok(None);
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
        channel_min_max(op, x, axis).map(Some)
    }

    fn merge_union(&mut self, op: &'static str, o: &ChannelState) -> Result<()> {
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

/// PyTorch's `PerChannelMinMaxObserver`: running min and max of each slice along `ch_axis`.
///
/// - `ch_axis` may be negative (counted from the end); it is checked against each batch
///   ([`QuantError::InvalidAxis`], PyTorch's IndexError). PyTorch swaps axis 0 and `ch_axis`
///   and flattens; the per-channel min/max do not depend on that order.
/// - A later batch with another channel count is [`QuantError::LengthMismatch`] (PyTorch's
///   shape-mismatch RuntimeError). Empty batches are no-ops.
/// - `qparams` gives [`AnyQParams::PerChannel`] with `axis = ch_axis` as configured; float
///   zero points for [`QScheme::PerChannelAffineFloatQParams`](crate::QScheme).
/// - NaN/inf and empty-observer behaviour as [`MinMaxObserver`](super::MinMaxObserver)
///   (PyTorch: NaN poisons the affected channel; never observed → scale 1.0, zero point 0).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{Observer, PerChannelMinMaxObserver, QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8);
/// let mut obs = PerChannelMinMaxObserver::new(spec, 0)?;
/// let w = array![[-5.0f32, -3.5, -2.0, 0.0, 3.0, 5.0, 7.0], [1.0, 3.0, 2.0, 5.0, 6.5, 8.0, 10.0]];
/// obs.observe(w.into_dyn().view())?;
/// assert_eq!(obs.min_vals(), &[-5.0, 1.0]);
/// assert_eq!(obs.max_vals(), &[7.0, 10.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PerChannelMinMaxObserver {
    spec: QSpec,
    state: ChannelState,
}

impl PerChannelMinMaxObserver {
    /// A per-channel observer along `ch_axis` (PyTorch's default is 0).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-tensor scheme, or for a symmetric scheme on
    /// `quint8` with `reduce_range`; [`QuantError::InvalidScale`] for a bad `eps`.
    pub fn new(spec: QSpec, ch_axis: isize) -> Result<Self> {
        check_spec("PerChannelMinMaxObserver::new", &spec, true, true)?;
        Ok(PerChannelMinMaxObserver {
            spec,
            state: ChannelState {
                ch_axis,
                mins: Vec::new(),
                maxs: Vec::new(),
            },
        })
    }

    /// The channel axis as configured.
    #[must_use]
    pub fn ch_axis(&self) -> isize {
        self.state.ch_axis
    }

    /// Per-channel minima seen so far (empty before any data).
    #[must_use]
    pub fn min_vals(&self) -> &[f32] {
        &self.state.mins
    }

    /// Per-channel maxima seen so far (empty before any data).
    #[must_use]
    pub fn max_vals(&self) -> &[f32] {
        &self.state.maxs
    }
}

impl Observer for PerChannelMinMaxObserver {
    fn name(&self) -> &'static str {
        "PerChannelMinMaxObserver"
    }

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe(&mut self, x: ArrayViewD<'_, f32>) -> Result<()> {
        const OP: &str = "PerChannelMinMaxObserver::observe";
        if let Some((mn, mx)) = self.state.reduce(OP, &x)? {
            let s = &mut self.state;
            if s.mins.is_empty() {
                s.mins = mn;
                s.maxs = mx;
            } else {
                for (a, b) in s.mins.iter_mut().zip(mn) {
                    *a = a.min(b);
                }
                for (a, b) in s.maxs.iter_mut().zip(mx) {
                    *a = a.max(b);
                }
            }
        }
        Ok(())
    }

    fn qparams(&self) -> Result<AnyQParams> {
        if self.state.mins.is_empty() {
            return Err(QuantError::Empty {
                op: "PerChannelMinMaxObserver::qparams",
            });
        }
        per_channel_qparams(
            &self.spec,
            self.state.ch_axis,
            &self.state.mins,
            &self.state.maxs,
        )
    }

    fn reset(&mut self) {
        self.state.mins.clear();
        self.state.maxs.clear();
    }

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        const OP: &str = "PerChannelMinMaxObserver::merge";
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(OP, "not a PerChannelMinMaxObserver"))?;
        if o.spec != self.spec || o.state.ch_axis != self.state.ch_axis {
            return Err(incompatible(OP, "different configurations"));
        }
        self.state.merge_union(OP, &o.state)
    }
}

/// PyTorch's `MovingAveragePerChannelMinMaxObserver`: the moving average of
/// [`MovingAverageMinMaxObserver`](super::MovingAverageMinMaxObserver) applied per channel
/// (first batch assigns; later ones `min = min + c·(batch_min − min)` in `f32`).
///
/// `merge` takes the per-channel union of both running ranges (see the per-tensor moving
/// average for why). Axis, NaN and empty behaviour as [`PerChannelMinMaxObserver`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{MovingAveragePerChannelMinMaxObserver, Observer, QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerChannelAffine, QDType::QUInt8);
/// let mut obs = MovingAveragePerChannelMinMaxObserver::new(spec, -1, 0.5)?;
/// obs.observe(array![[0.0f32, 4.0], [2.0, 8.0]].into_dyn().view())?;
/// obs.observe(array![[2.0f32, 0.0], [2.0, 6.0]].into_dyn().view())?;
/// assert_eq!(obs.min_vals(), &[1.0, 2.0]);
/// assert_eq!(obs.max_vals(), &[2.0, 7.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MovingAveragePerChannelMinMaxObserver {
    spec: QSpec,
    averaging_constant: f32,
    state: ChannelState,
}

impl MovingAveragePerChannelMinMaxObserver {
    /// A per-channel moving-average observer.
    ///
    /// # Errors
    /// As [`PerChannelMinMaxObserver::new`]; [`QuantError::InvalidParameter`] when the
    /// averaging constant is not in `(0, 1]`.
    pub fn new(spec: QSpec, ch_axis: isize, averaging_constant: f32) -> Result<Self> {
        const OP: &str = "MovingAveragePerChannelMinMaxObserver::new";
        check_spec(OP, &spec, true, true)?;
        check_averaging_constant(OP, averaging_constant)?;
        Ok(MovingAveragePerChannelMinMaxObserver {
            spec,
            averaging_constant,
            state: ChannelState {
                ch_axis,
                mins: Vec::new(),
                maxs: Vec::new(),
            },
        })
    }

    /// The channel axis as configured.
    #[must_use]
    pub fn ch_axis(&self) -> isize {
        self.state.ch_axis
    }

    /// The averaging constant.
    #[must_use]
    pub fn averaging_constant(&self) -> f32 {
        self.averaging_constant
    }

    /// Per-channel running minima (empty before any data).
    #[must_use]
    pub fn min_vals(&self) -> &[f32] {
        &self.state.mins
    }

    /// Per-channel running maxima (empty before any data).
    #[must_use]
    pub fn max_vals(&self) -> &[f32] {
        &self.state.maxs
    }
}

impl Observer for MovingAveragePerChannelMinMaxObserver {
    fn name(&self) -> &'static str {
        "MovingAveragePerChannelMinMaxObserver"
    }

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe(&mut self, x: ArrayViewD<'_, f32>) -> Result<()> {
        const OP: &str = "MovingAveragePerChannelMinMaxObserver::observe";
        if let Some((mn, mx)) = self.state.reduce(OP, &x)? {
            let c = self.averaging_constant;
            let s = &mut self.state;
            if s.mins.is_empty() {
                s.mins = mn;
                s.maxs = mx;
            } else {
                for (a, b) in s.mins.iter_mut().zip(mn) {
                    *a += c * (b - *a);
                }
                for (a, b) in s.maxs.iter_mut().zip(mx) {
                    *a += c * (b - *a);
                }
            }
        }
        Ok(())
    }

    fn qparams(&self) -> Result<AnyQParams> {
        if self.state.mins.is_empty() {
            return Err(QuantError::Empty {
                op: "MovingAveragePerChannelMinMaxObserver::qparams",
            });
        }
        per_channel_qparams(
            &self.spec,
            self.state.ch_axis,
            &self.state.mins,
            &self.state.maxs,
        )
    }

    fn reset(&mut self) {
        self.state.mins.clear();
        self.state.maxs.clear();
    }

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        const OP: &str = "MovingAveragePerChannelMinMaxObserver::merge";
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(OP, "not a MovingAveragePerChannelMinMaxObserver"))?;
        if o.spec != self.spec
            || o.state.ch_axis != self.state.ch_axis
            || o.averaging_constant != self.averaging_constant
        {
            return Err(incompatible(OP, "different configurations"));
        }
        self.state.merge_union(OP, &o.state)
    }
}
