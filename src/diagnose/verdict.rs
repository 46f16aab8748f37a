//! The one call: per-layer verdicts with their evidence, and the remedies ranked by what the
//! evidence supports, each with its measured gain where the crate can measure it.

use std::fmt;

use ndarray::{ArrayD, Axis};

use super::Precision;
use super::audit::{AuditThresholds, CalibrationAudit, audit_calibration};
use super::html::ActivationHistogram;
use super::kernel_check::{DiffStats, KernelTolerance};
use super::session::Diagnoser;
use super::variants::{EvalData, Quality, ReduceRangeCost, layer_activations};
use crate::error::Result;
use crate::nn::{Activation, LayerHook, LayerRole, Model, Module, WeightedKind};
use crate::ns::{CompareOptions, ModelComparator, NsReport, OutputComparison};
use crate::ptq::PtqConfig;

/// What is wrong at a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Verdict {
    /// No finding.
    Fine,
    /// A few inputs (outliers) carry a large error; most are fine.
    DataSensitive,
    /// Inherent to quantizing this layer: most inputs show a large error.
    DataInsensitive,
    /// The int8 kernel disagrees with its reference `dequantize → f32 op → quantize`.
    Implementation,
}

impl Verdict {
    /// `fine`, `data-sensitive`, `data-insensitive`, `implementation`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Fine => "fine",
            Verdict::DataSensitive => "data-sensitive",
            Verdict::DataInsensitive => "data-insensitive",
            Verdict::Implementation => "implementation",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The thresholds of the verdicts. The defaults leave an int8 model whose layers sit between
/// 25 and 35 dB (with no accuracy loss) without a verdict, and flag a layer that falls to
/// about 10 dB for every sample.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Thresholds {
    /// A sample whose SQNR at a layer is below this (dB) has a large error there (default 20).
    pub min_sqnr_db: f64,
    /// At least this fraction of samples with a large error makes the error
    /// data-insensitive (default 0.5).
    pub insensitive_fraction: f64,
    /// At least this fraction (and at least one sample), below `insensitive_fraction`,
    /// makes it data-sensitive (default 0.01).
    pub sensitive_fraction: f64,
    /// What the kernel's disagreement with its reference may be before the verdict is
    /// implementation (default: [`KernelTolerance::default`]).
    pub kernel: KernelTolerance,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_sqnr_db: 20.0,
            insensitive_fraction: 0.5,
            sensitive_fraction: 0.01,
            kernel: KernelTolerance::default(),
        }
    }
}

/// Per-sample evidence of one comparison at one layer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SampleEvidence {
    /// SQNR over all samples (dB).
    pub sqnr_db: f64,
    /// Fraction of samples below [`Thresholds::min_sqnr_db`].
    pub fraction_below: f64,
    /// The lowest per-sample SQNR (dB).
    pub min_db: f64,
    /// 5th, 50th and 95th percentiles of the per-sample SQNR (dB).
    pub percentiles: [f64; 3],
    /// The worst samples (lowest SQNR first), at most 10.
    pub worst_samples: Vec<usize>,
    /// Each sample's SQNR (dB), for histograms.
    pub sample_sqnr_db: Vec<f64>,
}

impl SampleEvidence {
    pub(crate) fn from_comparison(c: &OutputComparison, t: &Thresholds) -> Self {
        let pct = |p: f64| c.sample_sqnr_percentile(p).unwrap_or(f64::NAN);
        SampleEvidence {
            sqnr_db: c.sqnr_db,
            fraction_below: c.fraction_of_samples_below(t.min_sqnr_db),
            min_db: c.sample_sqnr_db().into_iter().fold(f64::INFINITY, f64::min),
            percentiles: [pct(5.0), pct(50.0), pct(95.0)],
            worst_samples: c.worst_samples(10),
            sample_sqnr_db: c.sample_sqnr_db(),
        }
    }

    /// The verdict this evidence supports.
    #[must_use]
    pub fn verdict(&self, t: &Thresholds) -> Verdict {
        let n = self.sample_sqnr_db.len().max(1) as f64;
        if self.fraction_below >= t.insensitive_fraction {
            Verdict::DataInsensitive
        } else if self.fraction_below >= t.sensitive_fraction && self.fraction_below * n >= 1.0 {
            Verdict::DataSensitive
        } else {
            Verdict::Fine
        }
    }
}

/// Everything the diagnosis knows about one layer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerEvidence {
    /// The layer's kind in the quantized model.
    pub kind: String,
    /// The layer's own error (its float twin on its own quantized input).
    pub local: Option<SampleEvidence>,
    /// The error accumulated up to its output.
    pub cumulative: Option<SampleEvidence>,
    /// Fraction of float outputs outside the quantized output's representable range.
    pub clipped_fraction: Option<f64>,
    /// RMS error in quanta of the output scale (the rounding floor is `1/sqrt(12) ≈ 0.29`).
    pub rms_quanta: Option<f64>,
    /// Weight SQNR (dB), per tensor.
    pub weight_sqnr_db: Option<f64>,
    /// The worst output channel's weight SQNR (dB).
    pub worst_channel_weight_sqnr_db: Option<f64>,
    /// The integer kernel against its reference on the real activations.
    pub kernel: Option<DiffStats>,
}

/// One layer's verdict, with the evidence and the reasons in words.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerDiagnosis {
    /// The layer.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The evidence.
    pub evidence: LayerEvidence,
    /// Why, one sentence each.
    pub reasons: Vec<String>,
}

/// A remedy: what to change, why, and what it measured to.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Remedy {
    /// What to change.
    pub action: String,
    /// The layer it concerns, if one.
    pub layer: Option<String>,
    /// The model with the change, measured on the evaluation data (`None`: the crate cannot
    /// try it, e.g. new calibration data or quantization-aware training).
    pub measured: Option<Quality>,
    /// SQNR gain over the diagnosed model (dB).
    pub gain_db: Option<f64>,
    /// The evidence that points to it.
    pub evidence: String,
}

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

/// The options of [`diagnose`].
#[derive(Debug, Clone, Default)]
pub struct DiagnoseOptions {
    /// The verdicts' thresholds.
    pub thresholds: Thresholds,
    /// The calibration audit's thresholds.
    pub audit: AuditThresholds,
    /// Labels of the calibration samples (class coverage) and the number of classes.
    pub calib_labels: Option<(Vec<i64>, Option<usize>)>,
    /// How much to measure.
    pub remedies: RemedyDepth,
    /// Evaluation batch size for the comparison (default: all at once).
    pub batch_size: Option<usize>,
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
    pub float_accuracy: Option<f64>,
    /// One entry per compared layer, in execution order.
    pub layers: Vec<LayerDiagnosis>,
    /// The calibration audit.
    pub audit: CalibrationAudit,
    /// `reduce_range` measured for each CPU kind (with measured remedies).
    pub reduce_range: Option<ReduceRangeCost>,
    /// The remedies, best first.
    pub remedies: Vec<Remedy>,
    /// Float activation histograms of the flagged layers.
    pub histograms: Vec<ActivationHistogram>,
    /// The Numeric Suite report the verdicts stand on.
    pub report: NsReport,
}

/// A hook that compares each integer layer with its reference on the real activations.
struct KernelHook<'a> {
    stats: &'a mut Vec<(String, DiffStats)>,
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
        let (Activation::Quantized(k), Ok(Activation::Quantized(r))) = (&*output, reference) else {
            return Ok(());
        };
        if k.shape() != r.shape() {
            return Ok(());
        }
        let idx = match self.stats.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.stats.push((name.to_string(), DiffStats::default()));
                self.stats.len() - 1
            }
        };
        let kd: Vec<u8> = k.int_repr().iter().copied().collect();
        let rd: Vec<u8> = r.int_repr().iter().copied().collect();
        self.stats[idx].1.add_values(&kd, &rd);
        Ok(())
    }
}

fn batches(x: &ArrayD<f32>, size: Option<usize>) -> Vec<ArrayD<f32>> {
    let n = x.shape().first().copied().unwrap_or(0);
    let size = size.unwrap_or(n).max(1);
    x.axis_chunks_iter(Axis(0), size)
        .map(|b| b.to_owned())
        .collect()
}

fn layer_reasons(name: &str, ev: &LayerEvidence, verdict: Verdict, t: &Thresholds) -> Vec<String> {
    let mut r = Vec::new();
    if let Some(k) = &ev.kernel {
        if verdict == Verdict::Implementation {
            r.push(format!(
                "`{name}`'s int8 kernel differs from its reference on {} of {} outputs (largest {} quanta, mean {:+.3} quanta)",
                k.values - k.exact,
                k.values,
                k.max_abs_diff,
                k.mean_diff()
            ));
        }
    }
    if let Some(l) = &ev.local {
        if l.fraction_below > 0.0 {
            r.push(format!(
                "{:.1}% of the samples fall below {:.0} dB from this layer's own error (median {:.1} dB, worst {:.1} dB)",
                l.fraction_below * 100.0,
                t.min_sqnr_db,
                l.percentiles[1],
                l.min_db
            ));
        }
    }
    if let Some(c) = ev.clipped_fraction {
        if c > 0.001 {
            r.push(format!(
                "{:.2}% of the float outputs are clipped by the output range",
                c * 100.0
            ));
        }
    }
    if let Some(q) = ev.rms_quanta {
        if q > 1.0 {
            r.push(format!(
                "the error is {q:.2} quanta RMS, {:.1}× the rounding floor",
                q / crate::ns::ROUNDING_FLOOR_QUANTA
            ));
        }
    }
    r
}

/// Diagnoses a quantized model: compares it with the float model layer by layer and sample by
/// sample on the evaluation data (cumulative and local), checks each integer kernel against
/// its reference on the real activations, audits the calibration, gives every layer a
/// verdict ([`Verdict`], thresholds in [`Thresholds`]) and ranks the remedies, measuring
/// those the crate can try ([`RemedyDepth::Measured`]).
///
/// # Errors
/// Errors of the models on the data, of PTQ, and of the comparison (shapes, NaN).
pub fn diagnose<M: Model + Clone>(
    float: &M,
    quantized: Quantized<'_, M>,
    calib: &ArrayD<f32>,
    eval: EvalData<'_>,
    options: &DiagnoseOptions,
) -> Result<Diagnosis> {
    let t = &options.thresholds;
    let (config, built);
    let quant: &M = match quantized {
        Quantized::Model(m, c) => {
            config = c;
            m
        }
        Quantized::Config(c) => {
            let d = Diagnoser::new(float, calib, eval)?.with_config(c.clone());
            built = d.quantized()?;
            config = c;
            &built
        }
    };
    let dg = Diagnoser::new(float, calib, eval)?.with_config(config.clone());
    // 1. The Numeric Suite: cumulative and local, one pass; the weights.
    let mut cmp = ModelComparator::new(float, quant, CompareOptions::default())?;
    let mut kernel_stats = Vec::new();
    for b in batches(eval.inputs, options.batch_size) {
        cmp.run(Activation::Float(b.clone()))?;
        quant.run(
            Activation::Float(b),
            &mut KernelHook {
                stats: &mut kernel_stats,
            },
        )?;
    }
    let report = cmp.report()?;
    let quality = dg.measure_model(quant)?;
    // 2. Evidence and verdicts per layer.
    let mut layers = Vec::with_capacity(report.layers.len());
    for l in &report.layers {
        let kernel = kernel_stats
            .iter()
            .find(|(n, _)| *n == l.name)
            .map(|(_, s)| *s);
        let ev = LayerEvidence {
            kind: l.kind.clone().unwrap_or_default(),
            local: l
                .local
                .as_ref()
                .map(|c| SampleEvidence::from_comparison(c, t)),
            cumulative: l
                .cumulative
                .as_ref()
                .map(|c| SampleEvidence::from_comparison(c, t)),
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
            kernel,
        };
        let kernel_bad = ev.kernel.is_some_and(|k| !t.kernel.accepts(&k));
        let verdict = if kernel_bad {
            Verdict::Implementation
        } else {
            // A layer is judged by its own error; one without a float twin (pass-through
            // layers) only carries what it inherited.
            ev.local.as_ref().map_or(Verdict::Fine, |s| s.verdict(t))
        };
        let reasons = layer_reasons(&l.name, &ev, verdict, t);
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
        if let Ok(acts) = layer_activations(float, &l.name, eval.inputs) {
            let representable = report
                .layer(&l.name)
                .and_then(|r| r.cumulative.as_ref())
                .and_then(|c| c.output_qparams)
                .map(|q| q.representable());
            histograms.push(ActivationHistogram::of(
                &l.name,
                acts.iter().copied(),
                60,
                representable,
            ));
        }
    }
    // 3. The calibration audit.
    let labels = options
        .calib_labels
        .as_ref()
        .map(|(l, c)| (l.as_slice(), *c));
    let audit = audit_calibration(float, &config, calib, labels, &options.audit)?;
    // 4. Remedies.
    let (remedies, reduce_range) =
        remedies(&dg, float, &layers, &audit, verdict, quality, options)?;
    Ok(Diagnosis {
        verdict,
        first_layer,
        worst_samples,
        quality,
        float_accuracy: dg.float_quality().accuracy,
        layers,
        audit,
        reduce_range,
        remedies,
        histograms,
        report,
    })
}

/// The cost of a remedy, for ordering remedies of about the same gain: changes that keep the
/// layer in int8 first, then dynamic int8, bf16, fp16 and fp32.
fn cost_rank(action: &str) -> u8 {
    if action.contains(" in fp32") {
        4
    } else if action.contains(" in fp16") {
        3
    } else if action.contains(" in bf16") {
        2
    } else if action.starts_with("dynamic") {
        1
    } else {
        0
    }
}

/// Whether a BatchNorm follows a weighted layer directly (Conv-BN or Linear-BN not fused).
fn unfused_batch_norm<M: Model>(m: &M) -> Option<String> {
    let names = m.layer_names();
    names.windows(2).find_map(|w| {
        let (a, b) = (m.layer(&w[0])?, m.layer(&w[1])?);
        match (a.role(), b.role()) {
            (LayerRole::Weighted(_), LayerRole::BatchNorm(_)) => Some(format!("{}+{}", w[0], w[1])),
            _ => None,
        }
    })
}

fn is_linear<M: Model>(m: &M, name: &str) -> bool {
    m.layer(name).is_some_and(
        |l| matches!(l.role(), LayerRole::Weighted(w) if w.weighted_kind() == WeightedKind::Linear),
    )
}

#[allow(clippy::too_many_lines)]
fn remedies<M: Model + Clone>(
    dg: &Diagnoser<'_, M>,
    float: &M,
    layers: &[LayerDiagnosis],
    audit: &CalibrationAudit,
    verdict: Verdict,
    base: Quality,
    options: &DiagnoseOptions,
) -> Result<(Vec<Remedy>, Option<ReduceRangeCost>)> {
    let measured = options.remedies == RemedyDepth::Measured;
    let gain = |q: &Quality| q.sqnr_db - base.sqnr_db;
    let mut out: Vec<Remedy> = Vec::new();
    let mut push = |action: String, layer: Option<&str>, q: Option<Quality>, evidence: String| {
        if q.is_none() && out.iter().any(|r: &Remedy| r.action == action) {
            return;
        }
        out.push(Remedy {
            action,
            layer: layer.map(str::to_string),
            gain_db: q.as_ref().map(gain),
            measured: q,
            evidence,
        });
    };
    for l in layers
        .iter()
        .filter(|l| l.verdict == Verdict::Implementation)
    {
        let q = if measured {
            Some(dg.with_layer_in(&l.name, Precision::F32)?)
        } else {
            None
        };
        push(
            format!(
                "fix the int8 kernel of `{}` (report it to the kernel's author); keep the layer in fp32 meanwhile",
                l.name
            ),
            Some(&l.name),
            q,
            l.reasons.first().cloned().unwrap_or_default(),
        );
    }
    if !audit.is_sound() {
        push(
            "calibrate on more data that represents the data set (at least ~100 samples, several per class)".into(),
            None,
            None,
            audit.findings.join("; "),
        );
    }
    if let Some(pair) = unfused_batch_norm(float) {
        push(
            format!("fuse Conv-BN / Linear-BN ({pair}) before quantizing"),
            None,
            None,
            format!("`{pair}` is not fused: the BatchNorm runs as a float island"),
        );
    }
    let mut reduce_range = None;
    let flagged: Vec<&LayerDiagnosis> = layers
        .iter()
        .filter(|l| matches!(l.verdict, Verdict::DataInsensitive | Verdict::DataSensitive))
        .collect();
    for l in &flagged {
        let name = l.name.as_str();
        let ev_text = l.reasons.join("; ");
        let weighted = float
            .layer(name)
            .is_some_and(|m| matches!(m.role(), LayerRole::Weighted(_)));
        if l.verdict == Verdict::DataSensitive {
            let worst = l
                .evidence
                .local
                .as_ref()
                .map(|s| s.worst_samples.clone())
                .unwrap_or_default();
            push(
                "use a calibration set closer to the inference data".into(),
                Some(name),
                None,
                format!("{ev_text}; worst samples {worst:?}"),
            );
        }
        if !measured {
            push(
                format!("keep `{name}` in fp32 (or fp16 / bf16)"),
                Some(name),
                None,
                ev_text.clone(),
            );
            push(
                format!("try another observer on `{name}`"),
                Some(name),
                None,
                ev_text.clone(),
            );
            continue;
        }
        for p in [Precision::F32, Precision::F16, Precision::BF16] {
            if let Ok(q) = dg.with_layer_in(name, p) {
                push(
                    format!("keep `{name}` in {}", p.name()),
                    Some(name),
                    Some(q),
                    ev_text.clone(),
                );
            }
        }
        if let Ok(obs) = dg.observers_for(name) {
            if let Some((best, q)) = obs
                .into_iter()
                .max_by(|a, b| a.1.sqnr_db.total_cmp(&b.1.sqnr_db))
            {
                push(
                    format!("observe `{name}`'s output with the {best} calibrator"),
                    Some(name),
                    Some(q),
                    ev_text.clone(),
                );
            }
        }
        if weighted {
            if let Ok(q) = dg.per_channel_weights(name) {
                push(
                    format!("quantize `{name}`'s weights per output channel (qint8, symmetric)"),
                    Some(name),
                    Some(q),
                    format!(
                        "{ev_text}; per-tensor weight ranges are set by the widest channel (weight SQNR {:.1} dB, worst channel {:.1} dB)",
                        l.evidence.weight_sqnr_db.unwrap_or(f64::NAN),
                        l.evidence.worst_channel_weight_sqnr_db.unwrap_or(f64::NAN)
                    ),
                );
            }
        }
        if weighted && is_linear(float, name) {
            if let Ok(q) = dg.dynamic() {
                push(
                    "dynamic instead of static quantization of the linear layers".into(),
                    Some(name),
                    Some(q),
                    ev_text.clone(),
                );
            }
        }
    }
    if measured {
        let rr = dg.reduce_range()?;
        if !flagged.is_empty() {
            let best = rr
                .rows
                .iter()
                .filter(|r| r.accumulation == crate::nn::quantized::x86_engine_accumulation())
                .max_by(|a, b| a.quality.sqnr_db.total_cmp(&b.quality.sqnr_db))
                .map(|r| r.quality);
            push(
                "set reduce_range for the CPU kind (see the measurement)".into(),
                None,
                best,
                rr.advice.clone(),
            );
        }
        reduce_range = Some(rr);
    }
    // Rank: measured gains first, largest first; gains within the same 1 dB step are ordered
    // by cost (int8 changes, dynamic int8, bf16, fp16, fp32: a layer taken out of int8 adds
    // quantize/dequantize transitions); then what cannot be measured.
    out.sort_by(|a, b| match (a.gain_db, b.gain_db) {
        (Some(x), Some(y)) => y
            .floor()
            .total_cmp(&x.floor())
            .then(cost_rank(&a.action).cmp(&cost_rank(&b.action)))
            .then(y.total_cmp(&x)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    // Implementation fixes always come first.
    out.sort_by_key(|r| !r.action.starts_with("fix the int8 kernel"));
    if measured && verdict == Verdict::DataInsensitive {
        let best = out
            .iter()
            .filter_map(|r| r.measured)
            .map(|q| q.sqnr_db)
            .fold(f64::NEG_INFINITY, f64::max);
        if best
            < dg.float_quality()
                .sqnr_db
                .min(options.thresholds.min_sqnr_db + 10.0)
        {
            out.push(Remedy {
                action: "quantization-aware training".into(),
                layer: None,
                measured: None,
                gain_db: None,
                evidence: format!(
                    "no post-training remedy reaches {:.0} dB",
                    options.thresholds.min_sqnr_db + 10.0
                ),
            });
        }
    }
    Ok((out, reduce_range))
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "verdict: {}", self.verdict)?;
        if let Some(l) = &self.first_layer {
            writeln!(f, "first layer with a verdict: {l}")?;
        }
        write!(f, "int8 against float: {}", self.quality)?;
        if let Some(a) = self.float_accuracy {
            write!(f, " (float accuracy {a:.4})")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<12} {:<16} {:>10} {:>10} {:>8} {:>8} {:>9}",
            "layer", "verdict", "local dB", "cumul. dB", "<thr %", "clip %", "kernel Δ"
        )?;
        for l in &self.layers {
            let e = &l.evidence;
            let fmt_db = |s: &Option<SampleEvidence>| {
                s.as_ref()
                    .map_or("-".to_string(), |s| format!("{:.2}", s.sqnr_db))
            };
            writeln!(
                f,
                "{:<12} {:<16} {:>10} {:>10} {:>8} {:>8} {:>9}",
                l.name,
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
        if !self.remedies.is_empty() {
            writeln!(f, "remedies, best first:")?;
            for (i, r) in self.remedies.iter().enumerate() {
                let m = match (&r.measured, r.gain_db) {
                    (Some(q), Some(g)) => format!("  [{q}; {g:+.2} dB]"),
                    _ => "  [not measurable here]".into(),
                };
                writeln!(f, "{:>2}. {}{m}", i + 1, r.action)?;
            }
        }
        Ok(())
    }
}
