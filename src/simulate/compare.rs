//! [`compare_plans`]: one float model simulated with several format plans (int8, float8,
//! MXFP4, NVFP4, int4 g128, Q4_0 weights...), compared with the float model layer by layer
//! through the Numeric Suite.

use std::fmt;

use ndarray::{ArrayD, Axis};

use super::plan::{FormatPlan, LayerFormats};
use crate::error::{QuantError, Result};
use crate::metrics::sqnr;
use crate::nn::{Activation, Model};
use crate::ns::{CompareOptions, Comparison, compare_models};

/// One layer under one plan.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlanLayer {
    /// The layer.
    pub layer: String,
    /// Its formats under the plan (all `None`: left in `f32`).
    pub formats: LayerFormats,
    /// Its own error: the simulated layer against the float layer on the same input (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::opt_f64"))]
    pub local_sqnr_db: Option<f64>,
    /// Its output against the float model's at the same layer (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::opt_f64"))]
    pub cumulative_sqnr_db: Option<f64>,
    /// Its weight against the float weight (dB), weighted layers.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::opt_f64"))]
    pub weight_sqnr_db: Option<f64>,
}

/// One plan's result.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlanResult {
    /// The plan.
    pub plan: FormatPlan,
    /// The model output's SQNR against the float model's (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
    pub output_sqnr_db: f64,
    /// Bits per weight over the weighted layers, scales included, `f32` layers at 32.
    pub bits_per_weight: f64,
    /// Per layer, in model order (weighted layers only).
    pub layers: Vec<PlanLayer>,
    /// Layers left in `f32` because their rows do not fit the format, and why.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub kept_float: Vec<(String, QuantError)>,
}

/// Several plans on one model.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlanComparison {
    /// One result per plan, in the order given.
    pub plans: Vec<PlanResult>,
}

impl PlanComparison {
    /// The plan with the best output SQNR at most `max_bits` bits per weight.
    #[must_use]
    pub fn best_within(&self, max_bits: f64) -> Option<&PlanResult> {
        self.plans
            .iter()
            .filter(|p| p.bits_per_weight <= max_bits)
            .max_by(|a, b| a.output_sqnr_db.total_cmp(&b.output_sqnr_db))
    }
}

fn label(p: &FormatPlan) -> String {
    let mut s = match (p.default.weights, p.default.activations) {
        (Some(w), Some(a)) => format!("{w} / {a}"),
        (Some(w), None) => w.to_string(),
        (None, Some(a)) => format!("fp32 / {a}"),
        (None, None) => "fp32".to_string(),
    };
    if !p.layers.is_empty() {
        s.push_str(&format!(" (+{} overrides)", p.layers.len()));
    }
    s
}

impl fmt::Display for PlanComparison {
    /// A table: the output SQNR and bits per weight of every plan, then each layer's own SQNR
    /// under every plan (`fp32`: left in float).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = self.plans.iter().map(|p| label(&p.plan)).collect();
        let width = labels.iter().map(String::len).max().unwrap_or(8).max(10);
        let names: Vec<&str> = self
            .plans
            .first()
            .map(|p| p.layers.iter().map(|l| l.layer.as_str()).collect())
            .unwrap_or_default();
        let first = names.iter().map(|n| n.len()).max().unwrap_or(5).max(16);
        write!(f, "{:first$}", "")?;
        for l in &labels {
            write!(f, "  {l:>width$}")?;
        }
        writeln!(f)?;
        write!(f, "{:first$}", "bits/weight")?;
        for p in &self.plans {
            write!(f, "  {:>width$.2}", p.bits_per_weight)?;
        }
        writeln!(f)?;
        write!(f, "{:first$}", "output SQNR dB")?;
        for p in &self.plans {
            write!(f, "  {:>width$.2}", p.output_sqnr_db)?;
        }
        writeln!(f)?;
        writeln!(f, "own (local) SQNR per layer, dB:")?;
        for (i, name) in names.iter().enumerate() {
            write!(f, "{name:first$}")?;
            for p in &self.plans {
                let cell = p.layers.get(i).map_or_else(String::new, |l| {
                    if l.formats.is_float() {
                        "fp32".to_string()
                    } else {
                        l.local_sqnr_db
                            .map_or_else(|| "-".into(), |v| format!("{v:.2}"))
                    }
                });
                write!(f, "  {cell:>width$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Simulates `float` with each plan and compares it with the float model on `inputs` (sample
/// axis first, run in batches of `batch`): output SQNR, bits per weight, and per weighted
/// layer its own, cumulative and weight SQNR.
///
/// # Errors
/// [`QuantError::EmptyInput`] for no plans or no samples; [`QuantError::InvalidParameter`] for
/// `batch == 0`; errors of [`FormatPlan::simulate`] and of the models.
pub fn compare_plans<M: Model + Clone>(
    float: &M,
    plans: &[FormatPlan],
    inputs: &ArrayD<f32>,
    batch: usize,
) -> Result<PlanComparison> {
    const OP: &str = "simulate::compare_plans";
    if plans.is_empty() || inputs.ndim() == 0 || inputs.shape()[0] == 0 {
        return Err(QuantError::EmptyInput { op: OP });
    }
    if batch == 0 {
        return Err(QuantError::InvalidParameter {
            op: OP,
            what: "batch",
            value: 0.0,
            reason: "must be at least 1",
        });
    }
    let float_out = float
        .forward(Activation::Float(inputs.clone()))?
        .into_float();
    let mut results = Vec::with_capacity(plans.len());
    for plan in plans {
        let sim = plan.simulate(float)?;
        let batches = inputs
            .axis_chunks_iter(Axis(0), batch)
            .map(|b| Activation::Float(b.to_owned()));
        let report = compare_models(float, &sim.model, batches, CompareOptions::default())?;
        let out = sim
            .model
            .forward(Activation::Float(inputs.clone()))?
            .into_float();
        let output_sqnr_db = sqnr(&float_out, &out).map_err(|e| e.with_op(OP))?;
        let mut layers = Vec::new();
        let (mut bits, mut weights) = (0.0f64, 0.0f64);
        for name in float.layer_names() {
            let Some(layer) = float.layer(&name) else {
                continue;
            };
            let Some(w) = layer.weight() else { continue };
            let n = w.shape().iter().product::<usize>() as f64;
            let formats = sim
                .simulated
                .iter()
                .find(|(l, _)| *l == name)
                .map_or_else(LayerFormats::default, |(_, f)| *f);
            let per = formats.weights.map_or(32.0, |f| {
                crate::formats::ElementFormat::bits_per_element(&f)
            });
            bits += per * n;
            weights += n;
            let r = report.layer(&name);
            layers.push(PlanLayer {
                layer: name.clone(),
                formats,
                local_sqnr_db: report.sqnr_db(&name, Comparison::Local),
                cumulative_sqnr_db: report.sqnr_db(&name, Comparison::Cumulative),
                weight_sqnr_db: r.and_then(|r| r.weight.as_ref()).map(|w| w.sqnr_db),
            });
        }
        results.push(PlanResult {
            plan: plan.clone(),
            output_sqnr_db,
            bits_per_weight: if weights > 0.0 { bits / weights } else { 32.0 },
            layers,
            kept_float: sim.kept_float,
        });
    }
    Ok(PlanComparison { plans: results })
}
