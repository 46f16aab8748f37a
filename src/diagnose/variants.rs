//! Measuring post-training-quantization variants of one model on one data set: the
//! machinery behind the measured remedies, the sensitivity analysis, the mixed-precision
//! plan, the `reduce_range` measurement and the observer sweep.

use std::fmt;

use ndarray::{ArrayD, Ix2};

use crate::classify::accuracy;
use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::metrics::sqnr;
use crate::nn::quantized::{Int8Accumulation, x86_engine_accumulation};
use crate::nn::{Activation, LayerHook, Model, Module};
use crate::observers::{
    CalibratorComparison, EntropyObserver, HistogramObserver, MinMaxObserver, MseObserver,
    Observer, PerChannelMinMaxObserver, compare_calibrators,
};
use crate::ptq::{LayerPlan, PtqConfig, prepare};
use crate::qparams::{QScheme, QSpec};

/// The data a diagnosis measures on: inputs (sample axis first) and, for classifiers, labels.
#[derive(Debug, Clone, Copy)]
pub struct EvalData<'a> {
    /// Inputs, sample axis first.
    pub inputs: &'a ArrayD<f32>,
    /// One label per sample, for top-1 accuracy.
    pub labels: Option<&'a [i64]>,
}

/// How close a model's outputs are to the float model's.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Quality {
    /// SQNR (dB) of the outputs against the float model's.
    pub sqnr_db: f64,
    /// Top-1 accuracy, with labels.
    pub accuracy: Option<f64>,
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} dB", self.sqnr_db)?;
        if let Some(a) = self.accuracy {
            write!(f, ", accuracy {:.4}", a)?;
        }
        Ok(())
    }
}

/// A float model, its calibration and evaluation data, and the float outputs every variant
/// is compared with.
pub(crate) struct Bench<'a, M> {
    pub(crate) float: &'a M,
    pub(crate) calib: &'a ArrayD<f32>,
    pub(crate) eval: EvalData<'a>,
    pub(crate) float_out: ArrayD<f32>,
    pub(crate) float_quality: Quality,
}

fn outputs_accuracy(out: &ArrayD<f32>, labels: Option<&[i64]>) -> Result<Option<f64>> {
    match labels {
        None => Ok(None),
        Some(l) => {
            let o2 =
                out.view()
                    .into_dimensionality::<Ix2>()
                    .map_err(|_| QuantError::ShapeMismatch {
                        op: "diagnose",
                        expected: vec![l.len(), 0],
                        got: out.shape().to_vec(),
                    })?;
            accuracy(&o2, l).map(Some)
        }
    }
}

impl<'a, M: Model + Clone> Bench<'a, M> {
    pub(crate) fn new(float: &'a M, calib: &'a ArrayD<f32>, eval: EvalData<'a>) -> Result<Self> {
        let float_out = float
            .forward(Activation::Float(eval.inputs.clone()))?
            .into_float();
        let float_quality = Quality {
            sqnr_db: f64::INFINITY,
            accuracy: outputs_accuracy(&float_out, eval.labels)?,
        };
        Ok(Bench {
            float,
            calib,
            eval,
            float_out,
            float_quality,
        })
    }

    /// The outputs of `model` on the evaluation inputs.
    pub(crate) fn outputs<N: Model + ?Sized>(&self, model: &N) -> Result<ArrayD<f32>> {
        Ok(model
            .forward(Activation::Float(self.eval.inputs.clone()))?
            .into_float())
    }

    /// Quality of outputs against the float outputs.
    pub(crate) fn quality_of(&self, out: &ArrayD<f32>) -> Result<Quality> {
        Ok(Quality {
            sqnr_db: sqnr(&self.float_out, out)?,
            accuracy: outputs_accuracy(out, self.eval.labels)?,
        })
    }

    /// Quantizes `model` with `config` (calibrated on the whole calibration set).
    pub(crate) fn ptq(&self, model: M, config: &PtqConfig) -> Result<M> {
        let mut p = prepare(model, config)?;
        p.calibrate(self.calib)?;
        p.convert()
    }

    /// PTQ then quality.
    pub(crate) fn measure(&self, model: M, config: &PtqConfig) -> Result<Quality> {
        let q = self.ptq(model, config)?;
        self.quality_of(&self.outputs(&q)?)
    }

    /// The layers PTQ would convert to int8 (plan `Quantized`), in execution order.
    pub(crate) fn quantized_layers(&self, config: &PtqConfig) -> Result<Vec<String>> {
        let p = prepare(self.float.clone(), config)?;
        Ok(p.plan()
            .iter()
            .filter(|(_, plan)| *plan == LayerPlan::Quantized)
            .map(|(n, _)| n.clone())
            .collect())
    }
}

/// The number of quantize/dequantize transitions inside the quantized domain of a plan: each
/// change between an integer layer and a float island costs one.
pub(crate) fn transitions(plan: &[(String, LayerPlan)]) -> usize {
    let mut count = 0;
    let mut state: Option<bool> = None; // Some(true): float island
    for (_, p) in plan {
        let now = match p {
            LayerPlan::Quantize => Some(false),
            LayerPlan::FloatIsland => Some(true),
            LayerPlan::Quantized => Some(false),
            LayerPlan::DeQuantize | LayerPlan::Float => {
                state = None;
                continue;
            }
            _ => state,
        };
        if let (Some(a), Some(b)) = (state, now)
            && a != b
        {
            count += 1;
        }
        state = now;
    }
    count
}

/// One layer's sensitivity: the model with only this layer in int8, and with every int8
/// layer but this one.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SensitivityRow {
    /// The layer.
    pub layer: String,
    /// Only this layer quantized (the others kept in float).
    pub only_this_quantized: Quality,
    /// Every quantizable layer quantized but this one.
    pub this_kept_float: Quality,
}

/// Quantize one layer at a time, and keep one layer in float at a time.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Sensitivity {
    /// Every quantizable layer quantized.
    pub all_quantized: Quality,
    /// One row per quantizable layer, in execution order.
    pub rows: Vec<SensitivityRow>,
}

impl fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::{cell, column_width, pad};
        writeln!(f, "all layers int8: {}", self.all_quantized)?;
        let w = column_width(self.rows.iter().map(|r| r.layer.as_str()), 16);
        writeln!(
            f,
            "{} {:>28} {:>28}",
            pad("layer", w),
            "only this layer int8",
            "this layer kept fp32"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{} {:>28} {:>28}",
                pad(&cell(&r.layer, w), w),
                r.only_this_quantized.to_string(),
                r.this_kept_float.to_string()
            )?;
        }
        Ok(())
    }
}

pub(crate) fn sensitivity_of<M: Model + Clone>(
    b: &Bench<'_, M>,
    config: &PtqConfig,
) -> Result<Sensitivity> {
    let layers = b.quantized_layers(config)?;
    let all_quantized = b.measure(b.float.clone(), config)?;
    let mut rows = Vec::with_capacity(layers.len());
    for layer in &layers {
        let mut only = config.clone();
        for other in layers.iter().filter(|o| *o != layer) {
            only = only.keep_float(other.clone());
        }
        let kept = config.clone().keep_float(layer.clone());
        rows.push(SensitivityRow {
            layer: layer.clone(),
            only_this_quantized: b.measure(b.float.clone(), &only)?,
            this_kept_float: b.measure(b.float.clone(), &kept)?,
        });
    }
    Ok(Sensitivity {
        all_quantized,
        rows,
    })
}

/// What a mixed-precision plan must reach.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Budget {
    /// Output SQNR against the float model, at least (dB).
    pub min_sqnr_db: Option<f64>,
    /// Top-1 accuracy lost against the float model, at most (with labels).
    pub max_accuracy_drop: Option<f64>,
}

impl Budget {
    fn met(&self, q: &Quality, float: &Quality) -> bool {
        let sqnr_ok = self.min_sqnr_db.is_none_or(|t| q.sqnr_db >= t);
        let acc_ok = match (self.max_accuracy_drop, q.accuracy, float.accuracy) {
            (Some(d), Some(a), Some(f)) => f - a <= d + 1e-12,
            _ => true,
        };
        sqnr_ok && acc_ok
    }
}

/// A mixed-precision plan: the layers kept in float, the transitions that costs, what it
/// reaches.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MixedPlan {
    /// The layers kept in float, in the order they were added.
    pub keep_float: Vec<String>,
    /// Quantize/dequantize transitions inside the quantized domain.
    pub transitions: usize,
    /// What the plan reaches.
    pub quality: Quality,
    /// Whether it meets the budget (false: even every layer in float did not).
    pub meets_budget: bool,
}

pub(crate) fn mixed_plan_of<M: Model + Clone>(
    b: &Bench<'_, M>,
    config: &PtqConfig,
    budget: &Budget,
) -> Result<MixedPlan> {
    let layers = b.quantized_layers(config)?;
    let mut cfg = config.clone();
    let mut keep = Vec::new();
    let mut quality = b.measure(b.float.clone(), &cfg)?;
    let plan_of = |cfg: &PtqConfig| -> Result<usize> {
        Ok(transitions(prepare(b.float.clone(), cfg)?.plan()))
    };
    while !budget.met(&quality, &b.float_quality) && keep.len() < layers.len() {
        // Greedy: the layer whose return to float helps most; ties to fewer transitions.
        let mut best: Option<(String, Quality, usize)> = None;
        for l in layers.iter().filter(|l| !keep.contains(*l)) {
            let c = cfg.clone().keep_float(l.clone());
            let q = b.measure(b.float.clone(), &c)?;
            let t = plan_of(&c)?;
            let better = match &best {
                None => true,
                Some((_, bq, bt)) => {
                    let met_now = budget.met(&q, &b.float_quality);
                    let met_best = budget.met(bq, &b.float_quality);
                    (met_now && !met_best)
                        || (met_now == met_best
                            && (q.sqnr_db > bq.sqnr_db + 1e-9
                                || ((q.sqnr_db - bq.sqnr_db).abs() <= 1e-9 && t < *bt)))
                }
            };
            if better {
                best = Some((l.clone(), q, t));
            }
        }
        let Some((l, q, _)) = best else { break };
        cfg = cfg.keep_float(l.clone());
        keep.push(l);
        quality = q;
    }
    Ok(MixedPlan {
        transitions: plan_of(&cfg)?,
        meets_budget: budget.met(&quality, &b.float_quality),
        keep_float: keep,
        quality,
    })
}

/// One row of the `reduce_range` measurement.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReduceRangeRow {
    /// Activations on `0..=127` (true) or `0..=255`.
    pub reduce_range: bool,
    /// How the int8 layers accumulate (the CPU kind).
    pub accumulation: Int8Accumulation,
    /// What the model reaches.
    pub quality: Quality,
}

/// `reduce_range` on and off, on a VNNI CPU (exact accumulation) and on an AVX2 CPU without
/// VNNI (pairwise 16-bit saturation), measured on this model and data.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReduceRangeCost {
    /// Whether this CPU has VNNI (PyTorch's x86 engine accumulates exactly here).
    pub this_cpu_has_vnni: bool,
    /// The four combinations.
    pub rows: Vec<ReduceRangeRow>,
    /// The advice, with its measured cost.
    pub advice: String,
}

/// The activation spec of PyTorch's x86 default, with or without `reduce_range`.
pub(crate) fn activation_spec(reduce_range: bool) -> Result<QSpec> {
    let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    if reduce_range {
        spec.with_reduce_range()
    } else {
        Ok(spec)
    }
}

/// An activation observer of the same kind as `proto` with another spec (histogram for
/// kinds the diagnosis does not know).
pub(crate) fn observer_like(proto: &dyn Observer, spec: QSpec) -> Result<Box<dyn Observer>> {
    Ok(match proto.name() {
        "MinMaxObserver" => Box::new(MinMaxObserver::new(spec)?),
        "MseObserver" => Box::new(MseObserver::new(spec)?),
        "EntropyObserver" => Box::new(EntropyObserver::new(spec)?),
        _ => Box::new(HistogramObserver::new(spec)?),
    })
}

pub(crate) fn reduce_range_of<M: Model + Clone>(
    b: &Bench<'_, M>,
    config: &PtqConfig,
) -> Result<ReduceRangeCost> {
    let mut rows = Vec::with_capacity(4);
    for reduce_range in [true, false] {
        for accumulation in [Int8Accumulation::Exact, Int8Accumulation::X86Avx2] {
            let cfg = super::remedy::with_activation_spec(config, reduce_range, accumulation)?;
            rows.push(ReduceRangeRow {
                reduce_range,
                accumulation,
                quality: b.measure(b.float.clone(), &cfg)?,
            });
        }
    }
    let vnni = x86_engine_accumulation() == Int8Accumulation::Exact;
    let get = |rr: bool, acc: Int8Accumulation| {
        rows.iter()
            .find(|r| r.reduce_range == rr && r.accumulation == acc)
            .map(|r| r.quality.sqnr_db)
            .unwrap_or(f64::NAN)
    };
    let off_vnni = get(false, Int8Accumulation::Exact);
    let on_vnni = get(true, Int8Accumulation::Exact);
    let off_avx2 = get(false, Int8Accumulation::X86Avx2);
    let on_avx2 = get(true, Int8Accumulation::X86Avx2);
    let advice = format!(
        "on VNNI CPUs turn reduce_range off ({off_vnni:.2} dB against {on_vnni:.2} dB with it on); \
         on AVX2 CPUs without VNNI keep it on ({on_avx2:.2} dB; off, saturating pairs give {off_avx2:.2} dB). \
         This CPU {} VNNI.",
        if vnni { "has" } else { "has no" }
    );
    Ok(ReduceRangeCost {
        this_cpu_has_vnni: vnni,
        rows,
        advice,
    })
}

/// The float outputs of one layer over the calibration data (sample axis first), captured
/// with a hook.
pub(crate) fn layer_activations<M: Model + ?Sized>(
    model: &M,
    layer: &str,
    inputs: &ArrayD<f32>,
) -> Result<ArrayD<f32>> {
    struct Capture<'n> {
        name: &'n str,
        out: Option<ArrayD<f32>>,
    }
    impl LayerHook for Capture<'_> {
        fn after_layer(
            &mut self,
            name: &str,
            _layer: &dyn Module,
            _inputs: &[&Activation],
            output: &mut Activation,
        ) -> Result<()> {
            if name == self.name {
                self.out = Some(output.to_float());
            }
            Ok(())
        }
    }
    let mut cap = Capture {
        name: layer,
        out: None,
    };
    model.run(Activation::Float(inputs.clone()), &mut cap)?;
    cap.out.ok_or_else(|| QuantError::NotFound {
        op: "observer_sweep",
        what: "layer (not run by the model)",
        name: layer.to_string(),
    })
}

/// Every calibrator on one layer's real activations (its float outputs over `calib`), with
/// the spec of the layer's activation observer in `config`.
///
/// # Errors
/// [`QuantError::NotFound`] for a layer the model does not run; errors of the calibrators.
pub fn observer_sweep<M: Model + ?Sized>(
    float_model: &M,
    layer: &str,
    calib: &ArrayD<f32>,
    config: &PtqConfig,
) -> Result<CalibratorComparison> {
    let acts = layer_activations(float_model, layer, calib)?;
    let spec = config
        .qconfig(layer)
        .unwrap_or(&config.default)
        .activation()
        .spec();
    compare_calibrators(acts.view(), *spec)
}

/// PyTorch's per-channel weight observer (qint8 symmetric along axis 0).
pub(crate) fn per_channel_weights() -> Result<Box<dyn Observer>> {
    Ok(Box::new(PerChannelMinMaxObserver::new(
        QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8),
        0,
    )?))
}
