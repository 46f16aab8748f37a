//! Observers and calibrators: what turns calibration data into quantization parameters.
//!
//! Every observer implements the object-safe [`Observer`] trait, so an engine can keep a
//! `Box<dyn Observer>` per tensor and feed it batch after batch.
//!
//! | observer | PyTorch | parameters from |
//! |---|---|---|
//! | [`MinMaxObserver::new`] | `MinMaxObserver` | running min/max |
//! | [`MinMaxObserver::moving_average`] | `MovingAverageMinMaxObserver` | EMA of batch min/max |
//! | [`PerChannelMinMaxObserver::new`] | `PerChannelMinMaxObserver` | running min/max per channel |
//! | [`PerChannelMinMaxObserver::moving_average`] | `MovingAveragePerChannelMinMaxObserver` | EMA per channel |
//! | [`HistogramObserver`] | `HistogramObserver` (≥ 2.5) | histogram + L2 search |
//! | [`FixedQParamsObserver`] | `FixedQParamsObserver` | fixed in advance |
//! | [`DynamicObserver`] | `PlaceholderObserver(is_dynamic=True)` | the last batch |
//! | [`PercentileObserver`] | — (ONNX Runtime, pytorch-quantization) | a percentile of the data |
//! | [`EntropyObserver`] | — (TensorRT) | minimal KL divergence |
//! | [`MseObserver`] | — (pytorch-quantization, ModelOpt) | minimal expected MSE |
//!
//! The running and moving-average min/max observers differ only in their [`UpdateRule`]; one
//! type each (per tensor, per channel) takes the rule, and [`Observer::name`] reports
//! PyTorch's class name.
//!
//! The three calibrators beyond PyTorch share one exact, mergeable [`StreamingHistogram`].
//! [`compare_calibrators`] runs them all (and PyTorch's) on one tensor and says which wins.
//!
//! Conventions shared by all observers:
//! - A batch is any float array view: `f32`, `f64`, `f16` or `bf16` ([`FloatView`]); values
//!   are computed in `f32`, as PyTorch does.
//! - NaN or ±inf in a batch is refused ([`QuantError::NanInput`](crate::QuantError::NanInput),
//!   [`QuantError::NonFinite`](crate::QuantError::NonFinite)) and the observer is left
//!   unchanged. PyTorch's min/max observers let one NaN poison their statistics for good and
//!   store ±inf (infinite scale).
//! - An empty batch is a no-op, as in PyTorch (except [`DynamicObserver`]).
//! - `qparams` before any data is [`QuantError::Empty`](crate::QuantError::Empty); PyTorch
//!   warns and returns scale 1.0, zero point 0.
//! - Finite values whose range overflows `f32` (`max − min` beyond `f32::MAX`, or the scale
//!   chosen from them) are [`QuantError::RangeOverflow`](crate::QuantError::RangeOverflow);
//!   PyTorch computes an infinite scale or NaN statistics.
//! - The configurations PyTorch refuses are refused at construction with typed errors.
//! - With the `serde` feature every observer's state serializes, and deserializing validates it
//!   as the constructors do; with [`Observer::merge`] this lets calibration run in shards
//!   (threads, processes, machines): see `docs/observers.md` and the `sharded_calibration`
//!   example.

mod calib;
mod compare;
mod dynamic;
mod entropy;
mod fixed;
mod histc;
mod histogram;
mod minmax;
mod mse;
mod per_channel;
mod percentile;
pub(crate) mod reduce;
mod streaming;
mod view;

pub use compare::{CalibratorComparison, CalibratorResult, compare_calibrators};
pub use dynamic::DynamicObserver;
pub use entropy::EntropyObserver;
pub use fixed::FixedQParamsObserver;
pub(crate) use histc::histc_counts;
pub use histogram::HistogramObserver;
pub use minmax::{MinMaxObserver, UpdateRule};
pub use mse::MseObserver;
pub use per_channel::PerChannelMinMaxObserver;
pub use percentile::PercentileObserver;
pub use streaming::StreamingHistogram;
pub use view::FloatView;

use std::any::Any;
use std::fmt::Debug;

use crate::error::Result;
use crate::qparams::AnyQParams;
use crate::qparams::QSpec;

/// A calibration observer: watches batches of a tensor and proposes quantization parameters.
///
/// Contract:
/// - `observe` commits its state only when the whole batch is accepted: on `Err` the observer
///   is unchanged;
/// - `qparams` does not change the observer;
/// - `merge` combines an observer of the same kind and configuration that saw other data, so
///   that the result equals one observer that saw both (exactly for min/max observers).
///
/// The trait is object safe and requires `Send + Sync`, so `Box<dyn Observer>` can live in
/// maps shared across threads.
///
/// Feeding a batch: callers write `obs.observe(x.view())` or `obs.observe(&x)` with an array of
/// `f32`, `f64`, `f16` or `bf16`, any dimension. `observe` is generic over anything that
/// converts into a [`FloatView`], so it cannot be a method of an object-safe trait: it is an
/// inherent method of `dyn Observer` (boxed and borrowed observers) and of every observer of
/// this crate. The trait's own method is [`Observer::observe_view`], which takes the
/// [`FloatView`]; implementors write that one (and generic code bounded by `O: Observer` calls
/// it, `o.observe_view(x.view().into())`).
///
/// # Examples
/// ```
/// use std::collections::BTreeMap;
/// use ndarray::array;
/// use qnumeric::{HistogramObserver, MinMaxObserver, Observer, QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
/// let mut observers: BTreeMap<&str, Box<dyn Observer>> = BTreeMap::new();
/// observers.insert("input", Box::new(MinMaxObserver::new(spec)?));
/// observers.insert("fc1", Box::new(HistogramObserver::new(spec)?));
/// for obs in observers.values_mut() {
///     obs.observe(array![-1.0f32, 0.5, 2.0].view())?;
///     obs.observe(&array![[0.25f64, 1.5]])?; // another element type and shape
/// }
/// let qp = observers["input"].qparams()?;
/// # let _ = qp;
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub trait Observer: ObserverClone + Send + Sync + Debug {
    /// PyTorch's class name for the observer as configured (`"MinMaxObserver"`,
    /// `"MovingAverageMinMaxObserver"`, ...; the calibrators beyond PyTorch use their type's
    /// name).
    fn name(&self) -> &'static str;

    /// How parameters are chosen (scheme, range, eps).
    fn spec(&self) -> &QSpec;

    /// Feeds one batch (any shape, any of the four float types). Callers usually write
    /// `observe` instead (see the trait's docs).
    ///
    /// # Errors
    /// NaN/inf where the observer does not accept them, ranges that overflow `f32`, shape
    /// errors (per-channel axis), empty batches where they would change the result silently.
    fn observe_view(&mut self, x: FloatView<'_>) -> Result<()>;

    /// The parameters for the data seen so far.
    ///
    /// # Errors
    /// [`QuantError::Empty`](crate::QuantError::Empty) when nothing was observed (see each
    /// observer for PyTorch's behaviour there);
    /// [`QuantError::RangeOverflow`](crate::QuantError::RangeOverflow) when the scale
    /// overflows `f32`.
    fn qparams(&self) -> Result<AnyQParams>;

    /// [`Observer::qparams`] of a per-tensor observer, typed (no `match` on [`AnyQParams`]).
    ///
    /// # Errors
    /// As [`Observer::qparams`]; [`QuantError::UnsupportedQParams`](crate::QuantError::UnsupportedQParams)
    /// for a per-channel observer.
    ///
    /// # Examples
    /// ```
    /// use ndarray::array;
    /// use qnumeric::{MinMaxObserver, Observer, QDType, QScheme, QSpec};
    /// let mut obs = MinMaxObserver::new(QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8))?;
    /// obs.observe(array![-1.0f32, 3.0].view().into_dyn())?;
    /// let qp = obs.per_tensor_qparams()?; // a QParams
    /// assert!((qp.scale() - 4.0 / 255.0).abs() < 1e-7);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    fn per_tensor_qparams(&self) -> Result<crate::qparams::QParams> {
        match self.qparams()? {
            AnyQParams::PerTensor(q) => Ok(q),
            AnyQParams::PerChannel(_) => Err(crate::QuantError::UnsupportedQParams {
                op: "Observer::per_tensor_qparams",
                reason: "this observer gives per-channel parameters (per_channel_qparams)",
            }),
        }
    }

    /// [`Observer::qparams`] of a per-channel observer, typed.
    ///
    /// # Errors
    /// As [`Observer::qparams`]; [`QuantError::UnsupportedQParams`](crate::QuantError::UnsupportedQParams)
    /// for a per-tensor observer.
    fn per_channel_qparams(&self) -> Result<crate::qparams::PerChannelQParams> {
        match self.qparams()? {
            AnyQParams::PerChannel(q) => Ok(q),
            AnyQParams::PerTensor(_) => Err(crate::QuantError::UnsupportedQParams {
                op: "Observer::per_channel_qparams",
                reason: "this observer gives per-tensor parameters (per_tensor_qparams)",
            }),
        }
    }

    /// Forgets everything observed.
    fn reset(&mut self);

    /// Combines another observer's statistics into this one.
    ///
    /// # Errors
    /// [`QuantError::Incompatible`](crate::QuantError::Incompatible) when `other` is another
    /// kind of observer or has another configuration; on any error this observer is
    /// unchanged.
    fn merge(&mut self, other: &dyn Observer) -> Result<()>;
}

// `Box<dyn Observer>` is `Send + Sync` (the trait requires both): checked at compile time.
const _: fn() = || {
    fn send_sync<T: Send + Sync + ?Sized>() {}
    send_sync::<Box<dyn Observer>>();
};

impl dyn Observer {
    /// Feeds one batch to a boxed or borrowed observer: an array view or a reference to an
    /// array of `f32`, `f64`, `f16` or `bf16`, any dimension (see [`FloatView`]).
    ///
    /// # Errors
    /// As [`Observer::observe_view`].
    pub fn observe<'a>(&mut self, x: impl Into<FloatView<'a>>) -> Result<()> {
        self.observe_view(x.into())
    }
}

/// The inherent `observe` of each observer type (the generic front of
/// [`Observer::observe_view`]).
macro_rules! inherent_observe {
    ($($t:ty),* $(,)?) => {$(
        impl $t {
            /// Feeds one batch: an array view or a reference to an array of `f32`, `f64`,
            /// `f16` or `bf16`, any dimension (see [`FloatView`]).
            ///
            /// # Errors
            /// As [`Observer::observe_view`].
            pub fn observe<'a>(&mut self, x: impl Into<FloatView<'a>>) -> Result<()> {
                Observer::observe_view(self, x.into())
            }
        }
    )*};
}
inherent_observe!(
    MinMaxObserver,
    PerChannelMinMaxObserver,
    HistogramObserver,
    FixedQParamsObserver,
    DynamicObserver,
    PercentileObserver,
    EntropyObserver,
    MseObserver,
);

/// Cloning into a box and downcasting, implemented for every `Observer + Clone` (so
/// observers, the crate's and callers', need not write them).
pub trait ObserverClone {
    /// Clones into a box (keeps `Box<dyn Observer>` clonable).
    fn box_clone(&self) -> Box<dyn Observer>;

    /// For downcasting (used by `merge`).
    fn as_any(&self) -> &dyn Any;
}

impl<T: Observer + Clone + 'static> ObserverClone for T {
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Clone for Box<dyn Observer> {
    fn clone(&self) -> Self {
        self.box_clone()
    }
}
