//! The QAT remedy, measured: [`QatTrial`] (what to train, for how long) and
//! [`Diagnoser::qat`] (train by distillation on the calibration data, convert, measure).

use super::Diagnoser;
use super::variants::Quality;
use crate::error::Result;
use crate::nn::{Activation, Model};
use crate::qat::{QatAction, QatConfig, QatObjective, QatRun, QatSchedule, prepare_qat};

/// Quantization-aware training as the diagnosis measures it
/// ([`DiagnoseOptions::qat`](super::DiagnoseOptions::qat)): the fake quantization (give the
/// widths and granularity of the PTQ configuration diagnosed, so the two int8 models compare)
/// and the schedule, whose [`QatSchedule::time_budget`] bounds the measurement.
#[derive(Debug, Clone)]
pub struct QatTrial {
    /// The fake quantization of the QAT model.
    pub config: QatConfig,
    /// How long and how to train.
    pub schedule: QatSchedule,
}

/// A measured QAT run: the converted int8 model's quality and what the training did.
#[derive(Debug, Clone, PartialEq)]
pub struct QatOutcome {
    /// The int8 model after QAT against the float model, on the evaluation data.
    pub quality: Quality,
    /// The training run.
    pub run: QatRun,
}

impl<M: Model + Clone> Diagnoser<'_, M> {
    /// Measures QAT end to end: the float model prepared with the trial's configuration, its
    /// ranges initialized as PTQ would (one pass over the calibration data with fake
    /// quantization off), trained on the calibration data to reproduce the float model's
    /// outputs (distillation: no labels needed) for the trial's schedule, its observers
    /// frozen, converted to int8 and compared with the float model on the evaluation data.
    ///
    /// # Errors
    /// Errors of [`prepare_qat`], of the training ([`QatModel::fine_tune`](crate::qat::QatModel::fine_tune):
    /// a layer without backward pass, an invalid schedule), of the conversion and of the
    /// models on the data.
    pub fn qat(&self, trial: &QatTrial) -> Result<QatOutcome> {
        let calib = self.bench.calib;
        let mut qat = prepare_qat(self.bench.float.clone(), &trial.config)?;
        qat.apply(QatAction::DisableFakeQuant);
        qat.model().forward(Activation::Float(calib.clone()))?;
        qat.apply(QatAction::EnableFakeQuant);
        let targets = self
            .bench
            .float
            .forward(Activation::Float(calib.clone()))?
            .into_float();
        let run = qat.fine_tune(calib, QatObjective::Distill(&targets), &trial.schedule)?;
        qat.apply(QatAction::DisableObserver);
        let int8 = qat.convert()?;
        let quality = self.bench.quality_of(&self.bench.outputs(&int8)?)?;
        Ok(QatOutcome { quality, run })
    }
}
