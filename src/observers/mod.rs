//! Observers and calibrators: what turns calibration data into quantization parameters.
//!
//! Every observer implements the object-safe [`Observer`] trait, so an engine can keep a
//! `Box<dyn Observer>` per tensor and feed it batch after batch.

use std::any::Any;
use std::fmt::Debug;

use ndarray::ArrayViewD;

use crate::error::Result;
use crate::qparams::QuantSpec;
use crate::tensor::QuantParams;

/// A calibration observer: watches batches of a tensor and proposes quantization parameters.
///
/// Contract:
/// - `observe` commits its state only when the whole batch is accepted: on `Err` the observer
///   is unchanged;
/// - `qparams` does not change the observer;
/// - `merge` combines an observer of the same kind and configuration that saw other data, so
///   that the result equals one observer that saw both (exactly for min/max observers).
pub trait Observer: Send + Debug {
    /// A short name (`"MinMaxObserver"`, ...).
    fn name(&self) -> &'static str;

    /// How parameters are chosen (scheme, range, eps).
    fn spec(&self) -> &QuantSpec;

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
    fn qparams(&self) -> Result<QuantParams>;

    /// Forgets everything observed.
    fn reset(&mut self);

    /// Combines another observer's statistics into this one.
    ///
    /// # Errors
    /// [`QuantError::Incompatible`](crate::QuantError::Incompatible) when `other` is another
    /// kind of observer or has another configuration.
    fn merge(&mut self, other: &dyn Observer) -> Result<()>;

    /// Clones into a box (observers are `Clone`; this keeps `Box<dyn Observer>` clonable).
    fn box_clone(&self) -> Box<dyn Observer>;

    /// For downcasting (used by `merge`).
    fn as_any(&self) -> &dyn Any;
}

impl Clone for Box<dyn Observer> {
    fn clone(&self) -> Self {
        self.box_clone()
    }
}
