//! The diagnosis across formats: a float model simulated with a [`FormatPlan`] (weight-only
//! int4, MXFP4 weights, float8 inputs...), the layers whose own error is worst, and format
//! changes measured end to end ("this layer's weights in int4 g64 instead of g128: +x dB",
//! "MXFP8 instead of MXFP4: +y dB"), ranked as every remedy is.

use std::fmt;

use ndarray::ArrayD;

use super::remedy::{Change, Effect, Evidence, NotMeasured, Remedy, rank};
use super::{Precision, Quality};
use crate::error::{QuantError, Result};
use crate::formats::{ElementFormat, Format};
use crate::nn::Model;
use crate::simulate::{FormatPlan, LayerFormats, PlanLayer, compare_plans};

impl FormatPlan {
    /// The plan with `remedy` applied ([`FormatPlan::apply_change`]).
    ///
    /// # Errors
    /// As [`FormatPlan::apply_change`].
    pub fn apply(self, remedy: &Remedy) -> Result<Self> {
        self.apply_change(remedy.layer.as_deref(), &remedy.change)
    }

    /// The plan with a format change applied to `layer` (`None`: the default of every layer
    /// without an override); [`Change::KeepIn`] `fp32` keeps the layer in `f32`.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a change a format plan cannot carry (the int8
    /// changes: a [`QuantPlan`](super::QuantPlan) carries them).
    pub fn apply_change(mut self, layer: Option<&str>, change: &Change) -> Result<Self> {
        let mut formats = match layer {
            Some(l) => self.layer_formats(l),
            None => self.default,
        };
        match change {
            Change::WeightFormat { format } => formats.weights = Some(*format),
            Change::ActivationFormat { format } => formats.activations = Some(*format),
            Change::KeepIn {
                precision: Precision::F32,
            }
            | Change::FixKernel => formats = LayerFormats::default(),
            _ => {
                return Err(QuantError::UnsupportedConfig {
                    op: "FormatPlan::apply",
                    reason: "a format plan carries format changes and fp32 layers only",
                });
            }
        }
        match layer {
            Some(l) => {
                self.layers.insert(l.to_string(), formats);
            }
            None => self.default = formats,
        }
        Ok(self)
    }
}

/// What [`diagnose_formats`] tries.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FormatDiagnoseOptions {
    /// The formats tried in place of a layer's (and of the model's) weight format.
    pub candidates: Vec<Format>,
    /// How many of the worst layers (lowest own SQNR) get per-layer candidates.
    pub worst_layers: usize,
    /// Remedies gaining less are left out (dB).
    pub min_gain_db: f64,
    /// Samples per batch.
    pub batch: usize,
}

impl FormatDiagnoseOptions {
    /// The given candidates, the 3 worst layers, 0.5 dB, batches of 64.
    #[must_use]
    pub fn new(candidates: Vec<Format>) -> Self {
        FormatDiagnoseOptions {
            candidates,
            worst_layers: 3,
            min_gain_db: 0.5,
            batch: 64,
        }
    }

    /// How many worst layers get per-layer candidates.
    #[must_use]
    pub fn with_worst_layers(mut self, n: usize) -> Self {
        self.worst_layers = n;
        self
    }

    /// The smallest gain reported (dB).
    #[must_use]
    pub fn with_min_gain_db(mut self, db: f64) -> Self {
        self.min_gain_db = db;
        self
    }
}

/// A model simulated in low-precision formats, diagnosed.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FormatDiagnosis {
    /// The plan diagnosed.
    pub plan: FormatPlan,
    /// The simulated model's output against the float model's.
    pub quality: Quality,
    /// Every weighted layer: its formats and own / cumulative / weight SQNR.
    pub layers: Vec<PlanLayer>,
    /// The layers whose own error is worst, worst first.
    pub worst: Vec<String>,
    /// Format changes, measured end to end and ranked (failed measurements kept, as
    /// [`Effect::NotMeasured`]).
    pub remedies: Vec<Remedy>,
}

/// Remedies `Display` lists (the data holds all of them).
const SHOWN: usize = 12;

impl FormatDiagnosis {
    /// The cheapest measured remedy (fewest bits per weight; per-layer before model-wide at
    /// equal bits) whose model reaches `target_db`, or `None`.
    #[must_use]
    pub fn cheapest_reaching(&self, target_db: f64) -> Option<&Remedy> {
        self.remedies
            .iter()
            .filter(|r| r.quality().is_some_and(|q| q.sqnr_db >= target_db))
            .min_by(|a, b| {
                a.cost()
                    .cmp(&b.cost())
                    .then(b.layer.is_some().cmp(&a.layer.is_some()))
            })
    }
}

impl fmt::Display for FormatDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "output against the float model: {}", self.quality)?;
        for l in &self.layers {
            write!(f, "  {:<32} {}", l.layer, l.formats)?;
            if l.formats.is_float() {
                writeln!(f)?;
                continue;
            }
            if let Some(v) = l.local_sqnr_db {
                write!(f, ", own SQNR {v:.1} dB")?;
            }
            if let Some(v) = l.weight_sqnr_db {
                write!(f, ", weight SQNR {v:.1} dB")?;
            }
            writeln!(f)?;
        }
        if !self.worst.is_empty() {
            writeln!(f, "worst layers: {}", self.worst.join(", "))?;
        }
        if self.remedies.is_empty() {
            writeln!(f, "no format change gains enough")?;
        } else {
            writeln!(f, "remedies:")?;
            for (i, r) in self.remedies.iter().take(SHOWN).enumerate() {
                writeln!(f, "  {}. {r}", i + 1)?;
            }
            if self.remedies.len() > SHOWN {
                writeln!(f, "  ... {} more", self.remedies.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

/// Diagnoses `float` simulated with `plan` on `inputs` (sample axis first): each weighted
/// layer's own error, the worst layers, and format changes measured end to end: each
/// candidate format for each of the worst layers' weights (candidates whose block does not
/// divide the layer's rows are not tried), the layer kept in `f32`, and each candidate for the
/// whole model.
///
/// # Errors
/// [`QuantError::InvalidParameter`] for a NaN `min_gain_db`; errors of
/// [`compare_plans`] on the diagnosed plan. A candidate whose measurement fails is kept as a
/// remedy [`Effect::NotMeasured`] with its error.
pub fn diagnose_formats<M: Model + Clone>(
    float: &M,
    plan: &FormatPlan,
    inputs: &ArrayD<f32>,
    options: &FormatDiagnoseOptions,
) -> Result<FormatDiagnosis> {
    const OP: &str = "diagnose_formats";
    if options.min_gain_db.is_nan() {
        return Err(QuantError::InvalidParameter {
            op: OP,
            what: "min_gain_db",
            value: options.min_gain_db,
            reason: "must be a number",
        });
    }
    let base = compare_plans(float, std::slice::from_ref(plan), inputs, options.batch)?;
    let Some(base) = base.plans.into_iter().next() else {
        return Err(QuantError::EmptyInput { op: OP });
    };
    let base_db = base.output_sqnr_db;
    let mut simulated: Vec<&PlanLayer> = base
        .layers
        .iter()
        .filter(|l| !l.formats.is_float())
        .collect();
    simulated.sort_by(|a, b| {
        a.local_sqnr_db
            .unwrap_or(f64::INFINITY)
            .total_cmp(&b.local_sqnr_db.unwrap_or(f64::INFINITY))
    });
    let worst: Vec<String> = simulated
        .iter()
        .take(options.worst_layers)
        .map(|l| l.layer.clone())
        .collect();

    let measure = |candidate: FormatPlan| -> Result<(f64, usize)> {
        let r = compare_plans(
            float,
            std::slice::from_ref(&candidate),
            inputs,
            options.batch,
        )?;
        let p = r
            .plans
            .into_iter()
            .next()
            .ok_or(QuantError::EmptyInput { op: OP })?;
        Ok((p.output_sqnr_db, p.kept_float.len()))
    };
    let mut remedies = Vec::new();
    let mut push = |change: Change,
                    layer: Option<String>,
                    evidence: Evidence,
                    got: Result<(f64, usize)>,
                    kept: usize| {
        let effect = match got {
            Ok((db, k)) if k <= kept => {
                let gain_db = db - base_db;
                if gain_db < options.min_gain_db {
                    return;
                }
                Effect::Measured {
                    quality: Quality {
                        sqnr_db: db,
                        accuracy: None,
                    },
                    gain_db,
                }
            }
            Ok(_) => Effect::NotMeasured(NotMeasured::Failed {
                error: QuantError::UnsupportedConfig {
                    op: OP,
                    reason: "the format's block does not divide some layers' rows: they would stay f32",
                },
            }),
            Err(error) => Effect::NotMeasured(NotMeasured::Failed { error }),
        };
        remedies.push(Remedy {
            change,
            layer,
            effect,
            evidence,
        });
    };
    let kept = base.kept_float.len();
    for name in &worst {
        let Some(l) = base.layers.iter().find(|l| &l.layer == name) else {
            continue;
        };
        let evidence = Evidence::FormatError {
            weights: l.formats.weights,
            local_sqnr_db: l.local_sqnr_db.unwrap_or(f64::NAN),
            weight_sqnr_db: l.weight_sqnr_db,
        };
        let row_len = float
            .layer(name)
            .and_then(|m| m.weight())
            .map(|w| {
                let s = w.shape();
                s.iter().skip(1).product::<usize>()
            })
            .unwrap_or(0);
        let mut changes: Vec<Change> = options
            .candidates
            .iter()
            .filter(|c| Some(**c) != l.formats.weights)
            .filter(|c| row_len > 0 && row_len.is_multiple_of(c.block_len().max(1)))
            .map(|c| Change::WeightFormat { format: *c })
            .collect();
        changes.push(Change::KeepIn {
            precision: Precision::F32,
        });
        for change in changes {
            let got = plan
                .clone()
                .apply_change(Some(name), &change)
                .and_then(&measure);
            push(change, Some(name.clone()), evidence.clone(), got, kept);
        }
    }
    // A model-wide change stands on the worst layer's error.
    let model_evidence = simulated.first().map(|l| Evidence::FormatError {
        weights: l.formats.weights,
        local_sqnr_db: l.local_sqnr_db.unwrap_or(f64::NAN),
        weight_sqnr_db: l.weight_sqnr_db,
    });
    for c in &options.candidates {
        if Some(*c) == plan.default.weights {
            continue;
        }
        let change = Change::WeightFormat { format: *c };
        let got = plan.clone().apply_change(None, &change).and_then(&measure);
        let evidence = model_evidence.clone().unwrap_or(Evidence::FormatError {
            weights: plan.default.weights,
            local_sqnr_db: f64::NAN,
            weight_sqnr_db: None,
        });
        push(change, None, evidence, got, kept);
    }
    rank(&mut remedies);
    Ok(FormatDiagnosis {
        plan: plan.clone(),
        quality: Quality {
            sqnr_db: base_db,
            accuracy: None,
        },
        layers: base.layers,
        worst,
        remedies,
    })
}
