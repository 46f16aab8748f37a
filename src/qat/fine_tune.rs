//! [`QatModel::fine_tune`]: quantization-aware training of a prepared model for a few epochs on
//! the caller's data ([`QatSchedule`], [`QatObjective`], [`QatRun`]).

use std::time::{Duration, Instant};

use ndarray::{ArrayD, Axis};

use super::{QatAction, QatModel};
use crate::error::{QuantError, Result};
use crate::nn::{Activation, Model};
use crate::train::{Adam, Tape, backward, cross_entropy, mse_loss};

/// How [`QatModel::fine_tune`] trains: Adam over shuffled mini-batches for a number of
/// epochs, the observers frozen after some of them (PyTorch's QAT recipe:
/// `disable_observer` once the ranges have settled), within an optional time budget.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QatSchedule {
    /// Passes over the data (at least 1).
    pub epochs: usize,
    /// Samples per step (at least 1; the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Adam's learning rate (finite, `> 0`).
    pub learning_rate: f64,
    /// Disable every observer after this many epochs (`None`: keep observing).
    pub freeze_observers_after: Option<usize>,
    /// Stop after the step that exceeds this wall-clock time (`None`: no limit).
    pub time_budget: Option<Duration>,
    /// Seed of the shuffling.
    pub seed: u64,
}

impl Default for QatSchedule {
    /// 3 epochs of batches of 32 at learning rate `1e-4`, observers frozen after the first
    /// epoch, no time budget, seed 0.
    fn default() -> Self {
        QatSchedule {
            epochs: 3,
            batch_size: 32,
            learning_rate: 1e-4,
            freeze_observers_after: Some(1),
            time_budget: None,
            seed: 0,
        }
    }
}

impl QatSchedule {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what, value: f64, reason| {
            Err(QuantError::InvalidParameter {
                op: "QatSchedule::validate",
                what,
                value,
                reason,
            })
        };
        if self.epochs == 0 {
            return bad("epochs", 0.0, "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", 0.0, "must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                self.learning_rate,
                "must be finite and > 0",
            );
        }
        Ok(())
    }
}

/// What the model is trained to do.
#[derive(Debug, Clone, Copy)]
pub enum QatObjective<'a> {
    /// Classify: cross-entropy of the outputs `[N, classes]` against one label per sample.
    Labels(&'a [i64]),
    /// Reproduce the float model: mean squared error of the outputs against the float model's
    /// outputs on the same inputs (distillation; no labels needed).
    Distill(&'a ArrayD<f32>),
}

/// What a [`QatModel::fine_tune`] run did.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QatRun {
    /// Epochs begun (the last one may have been cut by the time budget).
    pub epochs: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Mean loss of each epoch's steps.
    pub epoch_losses: Vec<f64>,
    /// Whether the time budget stopped the run.
    pub stopped_by_budget: bool,
}

/// Fisher-Yates shuffle of `0..n` with the crate's generator.
fn shuffled(n: usize, rng: &mut crate::rng::Lcg) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = usize::try_from(rng.next_u64() % (i as u64 + 1)).unwrap_or(0);
        idx.swap(i, j);
    }
    idx
}

impl<M: Model> QatModel<M> {
    /// Trains the prepared model on `inputs` (sample axis first) for the schedule's epochs:
    /// for every mini-batch, the training forward (fake quants observing), the loss of the
    /// objective, the backward pass through every layer (straight-through estimator at each
    /// fake quant) and an Adam step on every trainable parameter. Observers are disabled after
    /// [`QatSchedule::freeze_observers_after`] epochs; they stay as they are afterwards.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for an invalid schedule;
    /// [`QuantError::EmptyInput`] without samples; [`QuantError::LengthMismatch`] when the
    /// labels or targets do not have one entry per sample; errors of the forward and backward
    /// passes (a layer without backward is [`QuantError::UnsupportedLayer`]) and a
    /// non-finite loss ([`QuantError::NonFinite`]). A failed run leaves the model as its last
    /// complete step left it.
    pub fn fine_tune(
        &mut self,
        inputs: &ArrayD<f32>,
        objective: QatObjective<'_>,
        schedule: &QatSchedule,
    ) -> Result<QatRun> {
        const OP: &str = "QatModel::fine_tune";
        schedule.validate()?;
        let n = match inputs.shape().first() {
            Some(&n) if n > 0 => n,
            _ => return Err(QuantError::EmptyInput { op: OP }),
        };
        let targets_len = match objective {
            QatObjective::Labels(l) => l.len(),
            QatObjective::Distill(t) => t.shape().first().copied().unwrap_or(0),
        };
        if targets_len != n {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "labels or targets (one per sample)",
                expected: n,
                got: targets_len,
            });
        }
        let start = Instant::now();
        let mut rng = crate::rng::Lcg::new(schedule.seed);
        let mut opt = Adam::new(schedule.learning_rate)?;
        let mut run = QatRun {
            epochs: 0,
            steps: 0,
            seconds: 0.0,
            epoch_losses: Vec::new(),
            stopped_by_budget: false,
        };
        'epochs: for epoch in 0..schedule.epochs {
            if schedule.freeze_observers_after == Some(epoch) {
                self.apply(QatAction::DisableObserver);
            }
            run.epochs += 1;
            let order = shuffled(n, &mut rng);
            let (mut sum, mut count) = (0.0, 0usize);
            for chunk in order.chunks(schedule.batch_size) {
                let x = inputs.select(Axis(0), chunk);
                let mut tape = Tape::new();
                let y = self.model.run(Activation::Float(x), &mut tape)?;
                let y = match y {
                    Activation::Float(y) => y,
                    Activation::Quantized(q) => q.to_float(),
                };
                let (loss, grad) = match objective {
                    QatObjective::Labels(l) => {
                        let lb: Vec<i64> = chunk.iter().map(|&i| l[i]).collect();
                        cross_entropy(&y, &lb)?
                    }
                    QatObjective::Distill(t) => mse_loss(&y, &t.select(Axis(0), chunk))?,
                };
                if !loss.is_finite() {
                    return Err(QuantError::NonFinite {
                        op: OP,
                        what: "training loss",
                        value: loss,
                    });
                }
                let grads = backward(&self.model, &tape, &grad)?;
                opt.step(&mut self.model, &grads)?;
                run.steps += 1;
                sum += loss;
                count += 1;
                if schedule.time_budget.is_some_and(|b| start.elapsed() >= b) {
                    run.epoch_losses.push(sum / count as f64);
                    run.stopped_by_budget = true;
                    break 'epochs;
                }
            }
            run.epoch_losses.push(sum / count.max(1) as f64);
        }
        run.seconds = start.elapsed().as_secs_f64();
        Ok(run)
    }
}
