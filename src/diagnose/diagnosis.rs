//! The one call, [`diagnose`]: per-layer verdicts with their evidence, the failures to
//! measure as evidence of their own, and the remedies ranked by what the evidence supports,
//! each measured where the crate can try it.

use std::fmt;

use ndarray::{ArrayD, Axis};

use super::audit::{AuditThresholds, CalibrationAudit, audit_calibration};
use super::evidence::{LayerDiagnosis, LayerEvidence, Reason};
use super::histogram::ActivationHistogram;
use super::kernel_check::DiffStats;
use super::precision::Precision;
use super::qat::QatTrial;
use super::remedy::{Calibrator, Change, Effect, Evidence, NotMeasured, QuantPlan, Remedy, rank};
use super::session::Diagnoser;
use super::variants::{EvalData, Quality, ReduceRangeCost, layer_activations};
use super::verdict::{Thresholds, Verdict};
use crate::error::{QuantError, Result};
use crate::nn::{Activation, LayerHook, LayerRole, Model, Module, WeightedKind};
use crate::ns::{CompareOptions, ModelComparator, NsReport};
use crate::ptq::PtqConfig;

/// How much the diagnosis measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RemedyDepth {
    /// Name the remedies the evidence points to, measure none.
    Named,
    /// Measure every remedy the crate can try on the flagged layers (and `reduce_range`).
    #[default]
    Measured,
}

/// The default [`DiagnoseOptions::min_gain_db`]: a measured change that gains less than this
/// is not a remedy.
pub const DEFAULT_MIN_GAIN_DB: f64 = 0.5;

/// The options of [`diagnose`].
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    /// The verdicts' thresholds.
    pub thresholds: Thresholds,
    /// The calibration audit's thresholds.
    pub audit: AuditThresholds,
    /// Labels of the calibration samples (class coverage) and the number of classes.
    pub calib_labels: Option<(Vec<i64>, Option<usize>)>,
    /// How much to measure.
    pub remedies: RemedyDepth,
    /// Evaluation batch size for the comparison (default: all at once; `Some(0)` is refused).
    pub batch_size: Option<usize>,
    /// A measured change must gain at least this much SQNR (dB) to be a remedy (default
    /// [`DEFAULT_MIN_GAIN_DB`]); the others are kept in [`Diagnosis::rejected`].
    pub min_gain_db: f64,
    /// Measure quantization-aware training when no post-training remedy reaches the target
    /// ([`Diagnoser::qat`]; `None`, the default: QAT is named, not measured).
    pub qat: Option<QatTrial>,
}

impl Default for DiagnoseOptions {
    fn default() -> Self {
        DiagnoseOptions {
            thresholds: Thresholds::default(),
            audit: AuditThresholds::default(),
            calib_labels: None,
            remedies: RemedyDepth::Measured,
            batch_size: None,
            min_gain_db: DEFAULT_MIN_GAIN_DB,
            qat: None,
        }
    }
}

impl DiagnoseOptions {
    /// Checks the thresholds ([`Thresholds::validate`]), the minimum gain (finite, `>= 0`) and
    /// the batch size (`>= 1`).
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.thresholds.validate()?;
        if let Some(t) = &self.qat {
            t.schedule.validate()?;
        }
        if !(self.min_gain_db.is_finite() && self.min_gain_db >= 0.0) {
            return Err(QuantError::InvalidParameter {
                op: "DiagnoseOptions::validate",
                what: "min_gain_db",
                value: self.min_gain_db,
                reason: "must be a finite number of dB >= 0",
            });
        }
        if self.batch_size == Some(0) {
            return Err(QuantError::InvalidParameter {
                op: "DiagnoseOptions::validate",
                what: "batch_size",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        Ok(())
    }
}

/// The quantized model to diagnose: given, or built from a configuration.
#[derive(Debug)]
pub enum Quantized<'a, M> {
    /// A quantized model (e.g. with a caller's kernels); the configuration is used for the
    /// remedies' variants.
    Model(&'a M, PtqConfig),
    /// Built from the float model with this configuration.
    Config(PtqConfig),
}

/// A measurement the diagnosis could not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum Measurement {
    /// A layer's reference output, for the kernel check.
    KernelReference,
    /// A layer's float activations, for its histogram.
    ActivationHistogram,
    /// `reduce_range` on and off.
    ReduceRange,
    /// A layer replayed from a dump (its scheme, its remedies).
    Replay,
    /// Quantization-aware training ([`DiagnoseOptions::qat`]).
    Qat,
}

/// A failure to measure: evidence of its own, never dropped.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Unmeasured {
    /// What could not be measured.
    pub what: Measurement,
    /// The layer, if one.
    pub layer: Option<String>,
    /// Why.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::display"))]
    pub error: QuantError,
}

impl fmt::Display for Unmeasured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.what {
            Measurement::KernelReference => "the kernel check",
            Measurement::ActivationHistogram => "the activation histogram",
            Measurement::ReduceRange => "reduce_range",
            Measurement::Replay => "the layer's replay",
            Measurement::Qat => "quantization-aware training",
        };
        write!(f, "could not measure {what}")?;
        if let Some(l) = &self.layer {
            write!(f, " of `{}`", crate::text::display_name(l))?;
        }
        write!(f, ": {}", self.error)
    }
}

/// The diagnosis of a quantized model.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Diagnosis {
    /// The most serious verdict of any layer.
    pub verdict: Verdict,
    /// The first layer (execution order) with a verdict other than fine.
    pub first_layer: Option<String>,
    /// The samples with the largest error at the output, worst first (at most 10).
    pub worst_samples: Vec<usize>,
    /// The quantized model against the float one on the evaluation data.
    pub quality: Quality,
    /// The float model's own accuracy (with labels).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::opt_f64"))]
    pub float_accuracy: Option<f64>,
    /// One entry per compared layer, in execution order.
    pub layers: Vec<LayerDiagnosis>,
    /// The calibration audit.
    pub audit: CalibrationAudit,
    /// `reduce_range` measured for each CPU kind (with measured remedies).
    pub reduce_range: Option<ReduceRangeCost>,
    /// The remedies, best first ([`Remedy`]; apply one with [`QuantPlan::apply`]).
    pub remedies: Vec<Remedy>,
    /// Changes measured to gain less than [`DiagnoseOptions::min_gain_db`]: tried, not
    /// remedies.
    pub rejected: Vec<Remedy>,
    /// What could not be measured, and why.
    pub unmeasured: Vec<Unmeasured>,
    /// Float activation histograms of the flagged layers.
    pub histograms: Vec<ActivationHistogram>,
    /// The Numeric Suite report the verdicts stand on.
    pub report: NsReport,
}

/// A layer's kernel output shape and its reference's, when they differ.
type ShapeMismatch = (String, (Vec<usize>, Vec<usize>));

/// Compares each integer layer with its reference on the real activations, in the same pass
/// as the comparison.
struct KernelHook<'a> {
    stats: &'a mut Vec<(String, DiffStats)>,
    shapes: &'a mut Vec<ShapeMismatch>,
    unmeasured: &'a mut Vec<Unmeasured>,
}

impl KernelHook<'_> {
    fn entry(&mut self, name: &str) -> &mut DiffStats {
        let i = match self.stats.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.stats.push((name.to_string(), DiffStats::default()));
                self.stats.len() - 1
            }
        };
        &mut self.stats[i].1
    }
}

impl LayerHook for KernelHook<'_> {
    fn after_layer(
        &mut self,
        name: &str,
        layer: &dyn Module,
        inputs: &[&Activation],
        output: &mut Activation,
    ) -> Result<()> {
        let Some(reference) = layer.reference(inputs) else {
            return Ok(());
        };
        let reference = match reference {
            Ok(r) => r,
            Err(error) => {
                if !self.unmeasured.iter().any(|u| {
                    u.what == Measurement::KernelReference && u.layer.as_deref() == Some(name)
                }) {
                    self.unmeasured.push(Unmeasured {
                        what: Measurement::KernelReference,
                        layer: Some(name.to_string()),
                        error,
                    });
                }
                return Ok(());
            }
        };
        match (&*output, &reference) {
            (Activation::Quantized(k), Activation::Quantized(r)) if k.shape() == r.shape() => {
                let kd: Vec<u8> = k.int_repr().iter().copied().collect();
                let rd: Vec<u8> = r.int_repr().iter().copied().collect();
                self.entry(name).add_values(&kd, &rd);
            }
            (k, r) => {
                // A wrongly shaped (or float where int8 was due) output is an
                // implementation error: a failed case, with the shapes kept. The reference
                // output takes its place, so the run and the evidence downstream go on.
                self.entry(name).failed_cases += 1;
                if !self.shapes.iter().any(|(n, _)| n == name) {
                    self.shapes
                        .push((name.to_string(), (k.shape().to_vec(), r.shape().to_vec())));
                }
                *output = reference;
            }
        }
        Ok(())
    }
}

fn batches(x: &ArrayD<f32>, size: Option<usize>) -> Vec<ndarray::ArrayViewD<'_, f32>> {
    let n = x.shape().first().copied().unwrap_or(0);
    let size = size.unwrap_or(n).max(1);
    x.axis_chunks_iter(Axis(0), size).collect()
}

/// Diagnoses a quantized model: compares it with the float model layer by layer and sample by
/// sample on the evaluation data (cumulative and local), checks each integer kernel against
/// its reference on the real activations in the same pass, audits the calibration, gives every
/// layer a verdict ([`Verdict`], thresholds in [`Thresholds`]) and ranks the remedies
/// ([`Remedy`]), measuring those the crate can try ([`RemedyDepth::Measured`]) once each.
/// A measurement that fails is kept as evidence ([`Diagnosis::unmeasured`],
/// [`NotMeasured::Failed`]); NaN or infinite values in a quantized output are a finding
/// (implementation verdict), never a skip.
///
/// # Errors
/// [`QuantError::InvalidParameter`] for invalid options ([`DiagnoseOptions::validate`]);
/// [`QuantError::EmptyInput`] for evaluation data without samples; errors of the models on the
/// data, of PTQ, of the calibration audit and of the comparison (shapes; NaN in the float
/// model's outputs).
pub fn diagnose<M: Model + Clone>(
    float: &M,
    quantized: Quantized<'_, M>,
    calib: &ArrayD<f32>,
    eval: EvalData<'_>,
    options: &DiagnoseOptions,
) -> Result<Diagnosis> {
    options.validate()?;
    if eval.inputs.ndim() == 0 || eval.inputs.len_of(Axis(0)) == 0 {
        return Err(QuantError::EmptyInput { op: "diagnose" });
    }
    let t = &options.thresholds;
    let (config, built);
    let quant: &M = match quantized {
        Quantized::Model(m, c) => {
            config = c;
            m
        }
        Quantized::Config(c) => {
            built = QuantPlan::new(c.clone()).quantize(float, calib)?;
            config = c;
            &built
        }
    };
    let dg = Diagnoser::new(float, calib, eval)?.with_config(config.clone());
    // 1. The Numeric Suite (cumulative and local) and the kernel check: one pass of each
    //    model per batch; the weights.
    let mut cmp = ModelComparator::new(float, quant, CompareOptions::default())?;
    let (mut kernel_stats, mut shapes, mut unmeasured) = (Vec::new(), Vec::new(), Vec::new());
    let mut outputs = Vec::new();
    for b in batches(eval.inputs, options.batch_size) {
        let y = cmp.run_with(
            Activation::Float(b.to_owned()),
            &mut KernelHook {
                stats: &mut kernel_stats,
                shapes: &mut shapes,
                unmeasured: &mut unmeasured,
            },
        )?;
        outputs.push(y.into_float());
    }
    let views: Vec<_> = outputs.iter().map(|o| o.view()).collect();
    let out = ndarray::concatenate(Axis(0), &views).map_err(|_| QuantError::ShapeMismatch {
        op: "diagnose",
        expected: outputs
            .first()
            .map(|o| o.shape().to_vec())
            .unwrap_or_default(),
        got: outputs
            .last()
            .map(|o| o.shape().to_vec())
            .unwrap_or_default(),
    })?;
    let quality = dg.bench.quality_of(&out)?;
    let report = cmp.report()?;
    // 2. Evidence and verdicts per layer.
    let mut layers = Vec::with_capacity(report.layers.len());
    for l in &report.layers {
        let from =
            |c: &crate::ns::OutputComparison| super::verdict::SampleEvidence::from_comparison(c, t);
        let non_finite = l
            .cumulative
            .as_ref()
            .map(|c| c.non_finite)
            .filter(|n| !n.is_empty())
            .or_else(|| l.local.as_ref().map(|c| c.non_finite))
            .unwrap_or_default();
        let ev = LayerEvidence {
            kind: l.kind.clone().unwrap_or_default(),
            local: l.local.as_ref().map(from),
            cumulative: l.cumulative.as_ref().map(from),
            clipped_fraction: l
                .local
                .as_ref()
                .or(l.cumulative.as_ref())
                .and_then(|c| c.clipped_fraction),
            rms_quanta: l.local.as_ref().and_then(|c| c.rms_quanta),
            weight_sqnr_db: l.weight.as_ref().map(|w| w.sqnr_db),
            worst_channel_weight_sqnr_db: l.weight.as_ref().and_then(|w| {
                w.channels
                    .iter()
                    .map(|c| c.sqnr_db)
                    .min_by(|a, b| a.total_cmp(b))
            }),
            kernel: kernel_stats
                .iter()
                .find(|(n, _)| *n == l.name)
                .map(|(_, s)| *s),
            kernel_shape_mismatch: shapes
                .iter()
                .find(|(n, _)| *n == l.name)
                .map(|(_, s)| s.clone()),
            non_finite,
        };
        let verdict = ev.verdict(t);
        let reasons = ev.reasons(verdict, t);
        layers.push(LayerDiagnosis {
            name: l.name.clone(),
            verdict,
            evidence: ev,
            reasons,
        });
    }
    let verdict = layers
        .iter()
        .map(|l| l.verdict)
        .max()
        .unwrap_or(Verdict::Fine);
    let first_layer = layers
        .iter()
        .find(|l| l.verdict != Verdict::Fine)
        .map(|l| l.name.clone());
    let worst_samples = report
        .layers
        .iter()
        .rev()
        .find_map(|l| l.cumulative.as_ref())
        .map(|c| c.worst_samples(10))
        .unwrap_or_default();
    let mut histograms = Vec::new();
    for l in layers.iter().filter(|l| l.verdict != Verdict::Fine) {
        let representable = report
            .layer(&l.name)
            .and_then(|r| r.cumulative.as_ref())
            .and_then(|c| c.output_qparams)
            .map(|q| q.representable());
        let hist = layer_activations(float, &l.name, eval.inputs).and_then(|acts| {
            ActivationHistogram::of(
                &l.name,
                acts.as_slice_memory_order()
                    .unwrap_or(&acts.iter().copied().collect::<Vec<_>>()),
                60,
                representable,
            )
        });
        match hist {
            Ok(h) => histograms.push(h),
            Err(error) => unmeasured.push(Unmeasured {
                what: Measurement::ActivationHistogram,
                layer: Some(l.name.clone()),
                error,
            }),
        }
    }
    // 3. The calibration audit.
    let labels = options
        .calib_labels
        .as_ref()
        .map(|(l, c)| (l.as_slice(), *c));
    let audit = audit_calibration(float, &config, calib, labels, &options.audit)?;
    // 4. Remedies.
    let r = remedies(&Inputs {
        dg: &dg,
        float,
        plan: QuantPlan::new(config),
        layers: &layers,
        audit: &audit,
        verdict,
        base: quality,
        options,
    });
    unmeasured.extend(r.unmeasured);
    Ok(Diagnosis {
        verdict,
        first_layer,
        worst_samples,
        quality,
        float_accuracy: dg.float_quality().accuracy,
        layers,
        audit,
        reduce_range: r.reduce_range,
        remedies: r.remedies,
        rejected: r.rejected,
        unmeasured,
        histograms,
        report,
    })
}

/// Whether a BatchNorm follows a weighted layer directly (Conv-BN or Linear-BN not fused).
fn unfused_batch_norm<M: Model>(m: &M) -> Option<Vec<String>> {
    let names = m.layer_names();
    names.windows(2).find_map(|w| {
        let (a, b) = (m.layer(&w[0])?, m.layer(&w[1])?);
        match (a.role(), b.role()) {
            (LayerRole::Weighted(_), LayerRole::BatchNorm(_)) => Some(w.to_vec()),
            _ => None,
        }
    })
}

fn is_weighted<M: Model>(m: &M, name: &str) -> bool {
    m.layer(name)
        .is_some_and(|l| matches!(l.role(), LayerRole::Weighted(_)))
}

fn is_linear<M: Model>(m: &M, name: &str) -> bool {
    m.layer(name).is_some_and(
        |l| matches!(l.role(), LayerRole::Weighted(w) if w.weighted_kind() == WeightedKind::Linear),
    )
}

struct Inputs<'a, 'd, M: Model + Clone> {
    dg: &'a Diagnoser<'d, M>,
    float: &'a M,
    plan: QuantPlan,
    layers: &'a [LayerDiagnosis],
    audit: &'a CalibrationAudit,
    verdict: Verdict,
    base: Quality,
    options: &'a DiagnoseOptions,
}

struct Remedies {
    remedies: Vec<Remedy>,
    rejected: Vec<Remedy>,
    reduce_range: Option<ReduceRangeCost>,
    unmeasured: Vec<Unmeasured>,
}

/// The evidence a layer's verdict gives a remedy.
fn layer_evidence(l: &LayerDiagnosis) -> Evidence {
    for r in &l.reasons {
        match r {
            Reason::KernelShape { kernel, reference } => {
                return Evidence::KernelShape {
                    kernel: kernel.clone(),
                    reference: reference.clone(),
                };
            }
            Reason::KernelDiffers { stats } => return Evidence::Kernel { stats: *stats },
            Reason::NonFinite { count, .. } => {
                return Evidence::NonFinite {
                    values: count.values(),
                    of: l
                        .evidence
                        .cumulative
                        .as_ref()
                        .map_or(0, |c| c.sample_sqnr_db.len() as u64),
                };
            }
            _ => {}
        }
    }
    let local = l.evidence.local.as_ref();
    Evidence::LayerError {
        verdict: l.verdict,
        fraction_below: local.map_or(0.0, |s| s.fraction_below),
        median_db: local.map_or(f64::NAN, |s| s.percentiles[1]),
        weight_sqnr_db: l.evidence.weight_sqnr_db,
        worst_channel_weight_sqnr_db: l.evidence.worst_channel_weight_sqnr_db,
    }
}

fn remedies<M: Model + Clone>(i: &Inputs<'_, '_, M>) -> Remedies {
    let measured = i.options.remedies == RemedyDepth::Measured;
    let measure = |layer: Option<&str>, change: &Change| -> Effect {
        if !change.is_applicable() {
            return Effect::NotMeasured(NotMeasured::OutOfReach);
        }
        if !measured {
            return Effect::NotMeasured(NotMeasured::NotRequested);
        }
        match i
            .plan
            .clone()
            .apply_change(layer, change)
            .and_then(|p| i.dg.measure_plan(&p))
        {
            Ok(quality) => Effect::Measured {
                quality,
                gain_db: quality.sqnr_db - i.base.sqnr_db,
            },
            Err(error) => Effect::NotMeasured(NotMeasured::Failed { error }),
        }
    };
    let remedy = |layer: Option<&str>, change: Change, evidence: Evidence| Remedy {
        effect: measure(layer, &change),
        layer: layer.map(str::to_string),
        change,
        evidence,
    };
    let mut out: Vec<Remedy> = Vec::new();
    let mut unmeasured = Vec::new();
    for l in i
        .layers
        .iter()
        .filter(|l| l.verdict == Verdict::Implementation)
    {
        out.push(remedy(Some(&l.name), Change::FixKernel, layer_evidence(l)));
    }
    if !i.audit.is_sound() {
        out.push(remedy(
            None,
            Change::MoreCalibrationData,
            Evidence::Calibration {
                findings: i.audit.findings.clone(),
            },
        ));
    }
    if let Some(pair) = unfused_batch_norm(i.float) {
        out.push(remedy(
            None,
            Change::Fuse {
                layers: pair.clone(),
            },
            Evidence::Unfused { layers: pair },
        ));
    }
    let flagged: Vec<&LayerDiagnosis> = i
        .layers
        .iter()
        .filter(|l| matches!(l.verdict, Verdict::DataInsensitive | Verdict::DataSensitive))
        .collect();
    for l in &flagged {
        let name = Some(l.name.as_str());
        let ev = layer_evidence(l);
        if l.verdict == Verdict::DataSensitive {
            let worst = l
                .evidence
                .local
                .as_ref()
                .map(|s| s.worst_samples.clone())
                .unwrap_or_default();
            out.push(remedy(
                name,
                Change::CalibrateCloserToInference {
                    worst_samples: worst,
                },
                ev.clone(),
            ));
        }
        for precision in [Precision::F32, Precision::F16, Precision::BF16] {
            out.push(remedy(name, Change::KeepIn { precision }, ev.clone()));
        }
        // Every calibrator is tried; the best one is the remedy.
        let observers: Vec<Remedy> = Calibrator::ALL
            .iter()
            .map(|&calibrator| remedy(name, Change::Observer { calibrator }, ev.clone()))
            .collect();
        if measured {
            let (ok, failed): (Vec<Remedy>, Vec<Remedy>) =
                observers.into_iter().partition(|r| r.gain_db().is_some());
            out.extend(failed);
            if let Some(best) = ok.into_iter().max_by(|a, b| {
                a.gain_db()
                    .unwrap_or(f64::NAN)
                    .total_cmp(&b.gain_db().unwrap_or(f64::NAN))
            }) {
                out.push(best);
            }
        } else {
            out.extend(observers);
        }
        if is_weighted(i.float, &l.name) {
            out.push(remedy(name, Change::PerChannelWeights, ev.clone()));
        }
    }
    // Model-wide changes: measured once.
    if let Some(l) = flagged.iter().find(|l| is_linear(i.float, &l.name)) {
        out.push(remedy(None, Change::DynamicLinear, layer_evidence(l)));
    }
    let mut reduce_range = None;
    if measured {
        match i.dg.reduce_range() {
            Ok(rr) => {
                let engine = crate::nn::quantized::x86_engine_accumulation();
                let best = rr
                    .rows
                    .iter()
                    .filter(|r| r.accumulation == engine)
                    .max_by(|a, b| a.quality.sqnr_db.total_cmp(&b.quality.sqnr_db));
                if let (Some(best), false) = (best, flagged.is_empty()) {
                    // The row is the model quantized with this change: no second run.
                    out.push(Remedy {
                        change: Change::ReduceRange {
                            on: best.reduce_range,
                        },
                        layer: None,
                        effect: Effect::Measured {
                            quality: best.quality,
                            gain_db: best.quality.sqnr_db - i.base.sqnr_db,
                        },
                        evidence: Evidence::ReduceRange {
                            advice: rr.advice.clone(),
                        },
                    });
                }
                reduce_range = Some(rr);
            }
            Err(error) => unmeasured.push(Unmeasured {
                what: Measurement::ReduceRange,
                layer: None,
                error,
            }),
        }
    }
    let best_db = out
        .iter()
        .filter_map(Remedy::quality)
        .map(|q| q.sqnr_db)
        .fold(f64::NEG_INFINITY, f64::max);
    let (mut remedies, mut rejected): (Vec<Remedy>, Vec<Remedy>) = out.into_iter().partition(|r| {
        // A kernel fix is due whatever the interim measure gains.
        r.change == Change::FixKernel || r.gain_db().is_none_or(|g| g >= i.options.min_gain_db)
    });
    rank(&mut remedies);
    let target_db =
        i.dg.float_quality()
            .sqnr_db
            .min(i.options.thresholds.min_sqnr_db + 10.0);
    if measured && i.verdict == Verdict::DataInsensitive && best_db < target_db {
        let named = remedy(
            None,
            Change::QuantizationAwareTraining,
            Evidence::NoPtqRemedyReaches { target_db, best_db },
        );
        match i.options.qat.as_ref().map(|t| (t, i.dg.qat(t))) {
            None => remedies.push(named),
            Some((trial, Ok(o))) => {
                let gain_db = o.quality.sqnr_db - i.base.sqnr_db;
                let r = Remedy {
                    change: Change::QuantizationAwareTraining,
                    layer: None,
                    effect: Effect::Measured {
                        quality: o.quality,
                        gain_db,
                    },
                    evidence: Evidence::QatRun {
                        epochs: o.run.epochs,
                        steps: o.run.steps,
                        seconds: o.run.seconds,
                        stopped_by_budget: o.run.stopped_by_budget,
                        target_db,
                        best_db,
                        epochs_asked: trial.schedule.epochs,
                    },
                };
                if gain_db >= i.options.min_gain_db {
                    remedies.push(r);
                    rank(&mut remedies);
                } else {
                    rejected.push(r);
                }
            }
            Some((_, Err(error))) => {
                unmeasured.push(Unmeasured {
                    what: Measurement::Qat,
                    layer: None,
                    error,
                });
                remedies.push(named);
            }
        }
    }
    Remedies {
        remedies,
        rejected,
        reduce_range,
        unmeasured,
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::{cell, column_width, display_name, pad};
        writeln!(f, "verdict: {}", self.verdict)?;
        if let Some(l) = &self.first_layer {
            writeln!(f, "first layer with a verdict: {}", display_name(l))?;
        }
        write!(f, "int8 against float: {}", self.quality)?;
        if let Some(a) = self.float_accuracy {
            write!(f, " (float accuracy {a:.4})")?;
        }
        writeln!(f)?;
        let w = column_width(self.layers.iter().map(|l| l.name.as_str()), 12);
        writeln!(
            f,
            "{} {:<16} {:>10} {:>10} {:>8} {:>8} {:>9}",
            pad("layer", w),
            "verdict",
            "local dB",
            "cumul. dB",
            "<thr %",
            "clip %",
            "kernel Δ"
        )?;
        for l in &self.layers {
            let e = &l.evidence;
            let fmt_db = |s: &Option<super::verdict::SampleEvidence>| {
                s.as_ref()
                    .map_or("-".to_string(), |s| format!("{:.2}", s.sqnr_db))
            };
            writeln!(
                f,
                "{} {:<16} {:>10} {:>10} {:>8} {:>8} {:>9}",
                pad(&cell(&l.name, w), w),
                l.verdict.name(),
                fmt_db(&e.local),
                fmt_db(&e.cumulative),
                e.local
                    .as_ref()
                    .map_or("-".into(), |s| format!("{:.1}", s.fraction_below * 100.0)),
                e.clipped_fraction
                    .map_or("-".into(), |c| format!("{:.2}", c * 100.0)),
                e.kernel.map_or("-".into(), |k| format!(
                    "{}/{}",
                    k.values - k.exact,
                    k.values
                )),
            )?;
            for r in &l.reasons {
                writeln!(f, "    {r}")?;
            }
        }
        if !self.worst_samples.is_empty() {
            writeln!(f, "worst samples: {:?}", self.worst_samples)?;
        }
        if !self.audit.is_sound() {
            for s in &self.audit.findings {
                writeln!(f, "calibration: {s}")?;
            }
        }
        if let Some(rr) = &self.reduce_range {
            writeln!(f, "reduce_range: {}", rr.advice)?;
        }
        for u in &self.unmeasured {
            writeln!(f, "{u}")?;
        }
        if !self.remedies.is_empty() {
            writeln!(f, "remedies, best first:")?;
            for (i, r) in self.remedies.iter().enumerate() {
                writeln!(f, "{:>2}. {r}", i + 1)?;
            }
        }
        if !self.rejected.is_empty() {
            writeln!(
                f,
                "tried, gained too little to be remedies: {}",
                self.rejected
                    .iter()
                    .map(|r| format!(
                        "{} ({:+.2} dB)",
                        r.action(),
                        r.gain_db().unwrap_or(f64::NAN)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )?;
        }
        Ok(())
    }
}
