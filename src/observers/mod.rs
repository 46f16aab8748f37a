//! Observers and calibrators: what turns calibration data into quantization parameters.
//!
//! Every observer implements the object-safe [`Observer`] trait, so an engine can keep a
//! `Box<dyn Observer>` per tensor and feed it batch after batch.
//!
//! | observer | PyTorch | parameters from |
//! |---|---|---|
//! | [`MinMaxObserver`] | `MinMaxObserver` | running min/max |
//! | [`MovingAverageMinMaxObserver`] | `MovingAverageMinMaxObserver` | EMA of batch min/max |
//! | [`PerChannelMinMaxObserver`] | `PerChannelMinMaxObserver` | running min/max per channel |
//! | [`MovingAveragePerChannelMinMaxObserver`] | `MovingAveragePerChannelMinMaxObserver` | EMA per channel |
//! | [`HistogramObserver`] | `HistogramObserver` (≥ 2.5) | histogram + L2 search |
//! | [`FixedQParamsObserver`] | `FixedQParamsObserver` | fixed in advance |
//! | [`DynamicObserver`] | `PlaceholderObserver(is_dynamic=True)` | the last batch |
//! | [`PercentileObserver`] | — (ONNX Runtime, pytorch-quantization) | a percentile of the data |
//! | [`EntropyObserver`] | — (TensorRT) | minimal KL divergence |
//! | [`MseObserver`] | — (pytorch-quantization, ModelOpt) | minimal expected MSE |
//!
//! The three calibrators beyond PyTorch share one exact, mergeable [`StreamingHistogram`].
//! [`compare_calibrators`] runs them all (and PyTorch's) on one tensor and says which wins.
//!
//! Conventions shared by all observers:
//! - NaN or ±inf in a batch is refused ([`QuantError::NanInput`](crate::QuantError::NanInput),
//!   [`QuantError::NonFinite`](crate::QuantError::NonFinite)) and the observer is left
//!   unchanged. PyTorch's min/max observers let one NaN poison their statistics for good and
//!   store ±inf (infinite scale).
//! - An empty batch is a no-op, as in PyTorch (except [`DynamicObserver`]).
//! - `qparams` before any data is [`QuantError::Empty`](crate::QuantError::Empty); PyTorch
//!   warns and returns scale 1.0, zero point 0.
//! - The configurations PyTorch refuses are refused at construction with typed errors.

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

pub use compare::{compare_calibrators, CalibratorComparison, CalibratorResult};
pub use dynamic::DynamicObserver;
pub use entropy::EntropyObserver;
pub use fixed::FixedQParamsObserver;
pub use histogram::HistogramObserver;
pub use minmax::{MinMaxObserver, MovingAverageMinMaxObserver};
pub use mse::MseObserver;
pub use per_channel::{MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver};
pub use percentile::PercentileObserver;
pub use streaming::StreamingHistogram;

use std::any::Any;
use std::fmt::Debug;

use ndarray::ArrayViewD;

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
pub trait Observer: ObserverClone + Send + Debug {
    /// A short name (`"MinMaxObserver"`, ...).
    fn name(&self) -> &'static str;

    /// How parameters are chosen (scheme, range, eps).
    fn spec(&self) -> &QSpec;

    /// Feeds one batch (any shape).
    ///
    /// # Errors
    /// NaN/inf where the observer does not accept them, shape errors (per-channel axis),
    /// empty batches where they would change the result silently.
    fn observe(&mut self, x: ArrayViewD<'_, f32>) -> Result<()>;

    /// The parameters for the data seen so far.
    ///
    /// # Errors
    /// [`QuantError::Empty`](crate::QuantError::Empty) when nothing was observed (see each
    /// observer for PyTorch's behaviour there).
    fn qparams(&self) -> Result<AnyQParams>;

    /// Forgets everything observed.
    fn reset(&mut self);

    /// Combines another observer's statistics into this one.
    ///
    /// # Errors
    /// [`QuantError::Incompatible`](crate::QuantError::Incompatible) when `other` is another
    /// kind of observer or has another configuration.
    fn merge(&mut self, other: &dyn Observer) -> Result<()>;
}

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
