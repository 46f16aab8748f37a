//! Remedies as data: what to change ([`Change`]), where ([`Remedy::layer`]), what it costs
//! ([`Cost`]), what it measured to ([`Effect`]) and why it was proposed ([`Evidence`]); and the
//! [`QuantPlan`] a remedy is applied to, so that "diagnose, take the top remedies, quantize
//! again, check" is a few lines and reproduces the measured gain.

use std::collections::BTreeMap;
use std::fmt;

use ndarray::ArrayD;

use super::kernel_check::DiffStats;
use super::precision::{Precision, RoundedLayer};
use super::variants::{Quality, activation_spec, observer_like, per_channel_weights};
use super::verdict::Verdict;
use crate::error::{QuantError, Result};
use crate::formats::{ElementFormat, Format};
use crate::nn::Model;
use crate::nn::quantized::{Int8Accumulation, x86_engine_accumulation};
use crate::observers::{
    EntropyObserver, HistogramObserver, MinMaxObserver, MseObserver, Observer, PercentileObserver,
};
use crate::ptq::{PtqConfig, QConfig, prepare, quantize_dynamic};
use crate::qparams::QSpec;

/// An activation calibrator a remedy puts on a layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Calibrator {
    /// [`MinMaxObserver`]: the observed range.
    MinMax,
    /// [`HistogramObserver`]: PyTorch's L2 search over a histogram.
    Histogram,
    /// [`PercentileObserver`] at the 99.99th percentile.
    Percentile9999,
    /// [`EntropyObserver`]: TensorRT's KL-divergence calibration.
    Entropy,
    /// [`MseObserver`]: the range with the least quantization MSE.
    Mse,
}

impl Calibrator {
    /// Every calibrator, in the order the diagnosis tries them.
    pub const ALL: [Calibrator; 5] = [
        Calibrator::MinMax,
        Calibrator::Histogram,
        Calibrator::Percentile9999,
        Calibrator::Entropy,
        Calibrator::Mse,
    ];

    /// `minmax`, `histogram`, `percentile-99.99`, `entropy`, `mse`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Calibrator::MinMax => "minmax",
            Calibrator::Histogram => "histogram",
            Calibrator::Percentile9999 => "percentile-99.99",
            Calibrator::Entropy => "entropy",
            Calibrator::Mse => "mse",
        }
    }

    /// A fresh observer of this kind with `spec`.
    ///
    /// # Errors
    /// Errors of the observer's constructor for `spec`.
    pub fn observer(self, spec: QSpec) -> Result<Box<dyn Observer>> {
        Ok(match self {
            Calibrator::MinMax => Box::new(MinMaxObserver::new(spec)?),
            Calibrator::Histogram => Box::new(HistogramObserver::new(spec)?),
            Calibrator::Percentile9999 => Box::new(PercentileObserver::new(spec, 99.99)?),
            Calibrator::Entropy => Box::new(EntropyObserver::new(spec)?),
            Calibrator::Mse => Box::new(MseObserver::new(spec)?),
        })
    }
}

impl fmt::Display for Calibrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a remedy changes.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum Change {
    /// Fix the layer's int8 kernel (report it to the kernel's author); meanwhile the layer is
    /// kept in fp32, which is what is measured and what [`QuantPlan::apply`] does.
    FixKernel,
    /// Keep the layer in a float precision (fp32: out of int8; fp16 / bf16: weights, inputs
    /// and outputs rounded to that type).
    KeepIn {
        /// The precision.
        precision: Precision,
    },
    /// Quantize the layer's weights per output channel (symmetric, axis 0) at their width:
    /// qint8 in a model; a replayed layer keeps its dumped weights' width.
    PerChannelWeights,
    /// Observe the layer's output with another calibrator.
    Observer {
        /// The calibrator.
        calibrator: Calibrator,
    },
    /// Dynamic instead of static quantization of the model's linear layers (convolutions stay
    /// in float).
    DynamicLinear,
    /// Activations on `0..=127` (`reduce_range` on) or `0..=255` (off), measured with the
    /// int8 accumulation of this CPU.
    ReduceRange {
        /// `reduce_range` on.
        on: bool,
    },
    /// Calibrate on data closer to the inference data (the worst samples show what is
    /// missing).
    CalibrateCloserToInference {
        /// The samples with the largest error at the layer, worst first.
        worst_samples: Vec<usize>,
    },
    /// Calibrate on more data that represents the data set (at least ~100 samples, several
    /// per class).
    MoreCalibrationData,
    /// Fuse a Conv-BN / Linear-BN pair before quantizing.
    Fuse {
        /// The weighted layer and the BatchNorm after it.
        layers: Vec<String>,
    },
    /// Quantization-aware training.
    QuantizationAwareTraining,
    /// Quantize the layer's weights to `bits` (8: from a narrower width), same granularity.
    /// Measured by replaying the layer ([`LinearReplay`](super::LinearReplay)); a
    /// [`QuantPlan`] cannot carry it yet.
    WeightBits {
        /// The weight width.
        bits: u8,
    },
    /// Quantize the layer's input dynamically with one range per row (token) instead of one
    /// per forward call. Measured by replay; a [`QuantPlan`] cannot carry it yet.
    PerTokenActivations,
    /// SmoothQuant: divide the input's channel `j` by `s_j` and multiply the weight's column
    /// `j` by it, `s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`, before quantizing both.
    /// Measured by replay; a [`QuantPlan`] cannot carry it yet.
    SmoothQuant {
        /// The migration strength, in `(0, 1)`.
        alpha: f64,
    },
    /// Store the layer's weights (or every weighted layer's, model-wide) in another format
    /// (int4 with group 64 instead of 128, MXFP8 instead of MXFP4, ...). Carried by a
    /// [`FormatPlan`](crate::simulate::FormatPlan), not by a [`QuantPlan`].
    WeightFormat {
        /// The format.
        format: Format,
    },
    /// Pass the layer's inputs (or every weighted layer's) through another format (float8
    /// per row, MXFP8, ...). Carried by a [`FormatPlan`](crate::simulate::FormatPlan).
    ActivationFormat {
        /// The format.
        format: Format,
    },
}

impl Change {
    /// What the change costs at inference (or to make).
    #[must_use]
    pub fn cost(&self) -> Cost {
        match self {
            Change::PerChannelWeights
            | Change::Observer { .. }
            | Change::ReduceRange { .. }
            | Change::Fuse { .. }
            | Change::WeightBits { .. }
            | Change::SmoothQuant { .. } => Cost::Int8,
            Change::DynamicLinear | Change::PerTokenActivations => Cost::DynamicInt8,
            Change::WeightFormat { format } | Change::ActivationFormat { format } => Cost::Bits {
                hundredths: (format.bits_per_element() * 100.0).round() as u32,
            },
            Change::KeepIn { precision } => match precision {
                Precision::BF16 => Cost::BF16,
                Precision::F16 => Cost::FP16,
                Precision::F32 => Cost::FP32,
            },
            Change::FixKernel => Cost::KernelFix,
            Change::CalibrateCloserToInference { .. } | Change::MoreCalibrationData => {
                Cost::NewData
            }
            Change::QuantizationAwareTraining => Cost::Training,
        }
    }

    /// Whether a [`QuantPlan`] can carry the change (false: it needs new data, training or a
    /// change of the model the plan does not make, or a scheme a plan cannot express yet:
    /// [`Change::WeightBits`], [`Change::PerTokenActivations`], [`Change::SmoothQuant`]; the
    /// format changes, which a [`FormatPlan`](crate::simulate::FormatPlan) carries).
    #[must_use]
    pub fn is_applicable(&self) -> bool {
        !matches!(
            self,
            Change::CalibrateCloserToInference { .. }
                | Change::MoreCalibrationData
                | Change::Fuse { .. }
                | Change::QuantizationAwareTraining
                | Change::WeightBits { .. }
                | Change::PerTokenActivations
                | Change::SmoothQuant { .. }
                | Change::WeightFormat { .. }
                | Change::ActivationFormat { .. }
        )
    }

    /// Whether the change concerns one layer (false: the whole model).
    #[must_use]
    pub fn is_per_layer(&self) -> bool {
        matches!(
            self,
            Change::FixKernel
                | Change::KeepIn { .. }
                | Change::PerChannelWeights
                | Change::Observer { .. }
                | Change::CalibrateCloserToInference { .. }
                | Change::WeightBits { .. }
                | Change::PerTokenActivations
                | Change::SmoothQuant { .. }
        )
    }
}

/// What a remedy costs, cheapest first: the order among remedies of about the same gain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Cost {
    /// A storage format at this many hundredths of a bit per weight (a format change: ranked
    /// among themselves by bits, before the int8 changes).
    Bits {
        /// Bits per element × 100, scales included.
        hundredths: u32,
    },
    /// The layer stays in int8 (another observer, per-channel weights, `reduce_range`,
    /// fusion).
    Int8,
    /// Dynamic int8 (activation ranges computed per batch at run time).
    DynamicInt8,
    /// The layer in bf16 (a quantize/dequantize transition each side).
    #[cfg_attr(feature = "serde", serde(rename = "bf16"))]
    BF16,
    /// The layer in fp16.
    #[cfg_attr(feature = "serde", serde(rename = "fp16"))]
    FP16,
    /// The layer in fp32.
    #[cfg_attr(feature = "serde", serde(rename = "fp32"))]
    FP32,
    /// New calibration data.
    NewData,
    /// Training (quantization-aware).
    Training,
    /// A kernel to fix (ranked first whatever its cost: the model is wrong until then).
    KernelFix,
}

/// Why a remedy is not measured.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "reason", rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum NotMeasured {
    /// The diagnosis ran with [`super::RemedyDepth::Named`].
    NotRequested,
    /// The crate cannot try it (new data, training, a model change).
    OutOfReach,
    /// Measuring it failed: the error says why.
    Failed {
        /// The error.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::display"))]
        error: QuantError,
    },
}

/// What a remedy measured to.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "effect", rename_all = "kebab-case"))]
pub enum Effect {
    /// The model with the change, end to end on the evaluation data.
    Measured {
        /// What the model with the change reaches.
        quality: Quality,
        /// Its SQNR gain over the diagnosed model (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        gain_db: f64,
    },
    /// Measured by replaying the layer alone against its float shadow output
    /// ([`LinearReplay`](super::LinearReplay)): the layer's own SQNR with the change, not the
    /// model's.
    Local {
        /// The layer's SQNR with the change, against its float output (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        sqnr_db: f64,
        /// Its gain over the layer as quantized now (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        gain_db: f64,
    },
    /// Not measured, and why.
    NotMeasured(NotMeasured),
}

/// The evidence a remedy stands on.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "evidence", rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum Evidence {
    /// The layer's int8 kernel disagrees with its reference on the real activations.
    Kernel {
        /// The disagreement, in quanta.
        stats: DiffStats,
    },
    /// The kernel's output did not have the reference's shape.
    KernelShape {
        /// The kernel's output shape.
        kernel: Vec<usize>,
        /// The reference's output shape.
        reference: Vec<usize>,
    },
    /// The layer's quantized output held NaN or infinite values.
    NonFinite {
        /// How many values.
        values: u64,
        /// Of how many compared.
        of: u64,
    },
    /// The layer's own (local) error, per sample.
    LayerError {
        /// The layer's verdict.
        verdict: Verdict,
        /// Fraction of samples below the threshold.
        fraction_below: f64,
        /// The median per-sample SQNR (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        median_db: f64,
        /// The weight SQNR per tensor and of the worst output channel (dB), weighted layers.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::opt_f64"))]
        weight_sqnr_db: Option<f64>,
        /// The worst output channel's weight SQNR (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::opt_f64"))]
        worst_channel_weight_sqnr_db: Option<f64>,
    },
    /// The calibration audit's findings.
    Calibration {
        /// One sentence each.
        findings: Vec<String>,
    },
    /// A weighted layer followed by a BatchNorm that was not fused.
    Unfused {
        /// The pair.
        layers: Vec<String>,
    },
    /// Layers flagged for their error, which `reduce_range` changes on this CPU kind.
    ReduceRange {
        /// The `reduce_range` measurement's advice.
        advice: String,
    },
    /// A layer simulated in a low-precision format: its own error there.
    FormatError {
        /// The format its weights are in (`None`: `f32`).
        weights: Option<Format>,
        /// The layer's own (local) SQNR in the simulated model (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        local_sqnr_db: f64,
        /// Its weight SQNR (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::opt_f64"))]
        weight_sqnr_db: Option<f64>,
    },
    /// No post-training remedy reaches the target.
    NoPtqRemedyReaches {
        /// The target SQNR (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        target_db: f64,
        /// The best SQNR a measured remedy reached (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        best_db: f64,
    },
    /// No post-training remedy reaches the target, and quantization-aware training was
    /// measured ([`Diagnoser::qat`](super::Diagnoser::qat)): what the training did.
    QatRun {
        /// Epochs begun.
        epochs: usize,
        /// Epochs the schedule asked for.
        epochs_asked: usize,
        /// Optimizer steps.
        steps: usize,
        /// Wall-clock seconds of the training.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        seconds: f64,
        /// Whether the time budget cut the training short.
        stopped_by_budget: bool,
        /// The target SQNR (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        target_db: f64,
        /// The best SQNR a measured post-training remedy reached (dB).
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::ns::json::f64"))]
        best_db: f64,
    },
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Kernel { stats } => write!(
                f,
                "the int8 kernel differs from its reference on {} of {} outputs (largest {} quanta, mean {:+.3} quanta)",
                stats.values - stats.exact,
                stats.values,
                stats.max_abs_diff,
                stats.mean_diff()
            ),
            Evidence::KernelShape { kernel, reference } => write!(
                f,
                "the int8 kernel's output has shape {kernel:?} where its reference has {reference:?}"
            ),
            Evidence::NonFinite { values, of } => write!(
                f,
                "{values} of {of} quantized output values are NaN or infinite"
            ),
            Evidence::LayerError {
                verdict,
                fraction_below,
                median_db,
                weight_sqnr_db,
                worst_channel_weight_sqnr_db,
            } => {
                write!(
                    f,
                    "{verdict}: {:.1}% of the samples below the threshold from the layer's own error (median {median_db:.1} dB)",
                    fraction_below * 100.0
                )?;
                if let (Some(w), Some(c)) = (weight_sqnr_db, worst_channel_weight_sqnr_db) {
                    write!(f, "; weight SQNR {w:.1} dB, worst output channel {c:.1} dB")?;
                }
                Ok(())
            }
            Evidence::Calibration { findings } => f.write_str(&findings.join("; ")),
            Evidence::Unfused { layers } => write!(
                f,
                "`{}` is not fused: the BatchNorm runs as a float island",
                layers.join("+")
            ),
            Evidence::ReduceRange { advice } => f.write_str(advice),
            Evidence::FormatError {
                weights,
                local_sqnr_db,
                weight_sqnr_db,
            } => {
                match weights {
                    Some(w) => write!(f, "weights in {w}: ")?,
                    None => f.write_str("weights in fp32: ")?,
                }
                write!(f, "the layer's own SQNR {local_sqnr_db:.1} dB")?;
                if let Some(w) = weight_sqnr_db {
                    write!(f, ", weight SQNR {w:.1} dB")?;
                }
                Ok(())
            }
            Evidence::NoPtqRemedyReaches { target_db, best_db } => write!(
                f,
                "no post-training remedy reaches {target_db:.0} dB (the best reaches {best_db:.1} dB)"
            ),
            Evidence::QatRun {
                epochs,
                epochs_asked,
                steps,
                seconds,
                stopped_by_budget,
                target_db,
                best_db,
            } => {
                write!(
                    f,
                    "no post-training remedy reaches {target_db:.0} dB (the best reaches {best_db:.1} dB); \
                     trained by distillation on the calibration data: {epochs} of {epochs_asked} epochs, \
                     {steps} steps in {seconds:.1} s"
                )?;
                if *stopped_by_budget {
                    write!(f, " (stopped by the time budget)")?;
                }
                Ok(())
            }
        }
    }
}

/// Where a remedy's gain was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Scope {
    /// The layer replayed alone against its float output ([`Effect::Local`]).
    Local,
    /// The whole model's output ([`Effect::Measured`]).
    EndToEnd,
}

/// A remedy: what to change, where, what it costs, what it measured to and why.
///
/// As JSON (feature `serde`): the change's fields with its `kind` (`"per-channel-weights"`,
/// `"weight-bits"`, ...), `layer`, `cost`, `gain_db` and `scope` (`"local"`, `"end-to-end"`,
/// or `null` when not measured), then `effect` and `evidence` in full.
#[derive(Debug, Clone, PartialEq)]
pub struct Remedy {
    /// What changes.
    pub change: Change,
    /// The layer it concerns (`None`: the whole model).
    pub layer: Option<String>,
    /// What it measured to.
    pub effect: Effect,
    /// The evidence that points to it.
    pub evidence: Evidence,
}

#[cfg(feature = "serde")]
impl serde::Serialize for Remedy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            change: &'a Change,
            layer: &'a Option<String>,
            cost: Cost,
            #[serde(serialize_with = "crate::ns::json::opt_f64")]
            gain_db: Option<f64>,
            scope: Option<Scope>,
            effect: &'a Effect,
            evidence: &'a Evidence,
        }
        Out {
            change: &self.change,
            layer: &self.layer,
            cost: self.cost(),
            gain_db: self.gain_db(),
            scope: self.scope(),
            effect: &self.effect,
            evidence: &self.evidence,
        }
        .serialize(s)
    }
}

impl Remedy {
    /// Where its gain was measured (`None`: not measured).
    #[must_use]
    pub fn scope(&self) -> Option<Scope> {
        match self.effect {
            Effect::Local { .. } => Some(Scope::Local),
            Effect::Measured { .. } => Some(Scope::EndToEnd),
            Effect::NotMeasured(_) => None,
        }
    }

    /// What it costs ([`Change::cost`]).
    #[must_use]
    pub fn cost(&self) -> Cost {
        self.change.cost()
    }

    /// The measured SQNR gain (dB), if measured: over the diagnosed model
    /// ([`Effect::Measured`]) or over the layer as quantized now ([`Effect::Local`]).
    #[must_use]
    pub fn gain_db(&self) -> Option<f64> {
        match &self.effect {
            Effect::Measured { gain_db, .. } | Effect::Local { gain_db, .. } => Some(*gain_db),
            Effect::NotMeasured(_) => None,
        }
    }

    /// What the model with the change reaches, if measured end to end (`None` for a local
    /// measurement).
    #[must_use]
    pub fn quality(&self) -> Option<Quality> {
        match &self.effect {
            Effect::Measured { quality, .. } => Some(*quality),
            Effect::Local { .. } | Effect::NotMeasured(_) => None,
        }
    }

    /// The action in words (without the measurement): what `Display` starts with.
    #[must_use]
    pub fn action(&self) -> String {
        let layer = self.layer.as_deref().map(crate::text::display_name);
        let on = |what: &str| match &layer {
            Some(l) => format!("{what} `{l}`"),
            None => format!("{what} the model"),
        };
        match &self.change {
            Change::FixKernel => format!(
                "fix the int8 kernel of `{}` (report it to the kernel's author); keep the layer in fp32 meanwhile",
                layer.unwrap_or_default()
            ),
            Change::KeepIn { precision } => format!("{} in {precision}", on("keep")),
            Change::PerChannelWeights => match &layer {
                Some(l) => format!("quantize `{l}`'s weights per output channel (symmetric, same width)"),
                None => "quantize the weights per output channel (symmetric, same width)".into(),
            },
            Change::Observer { calibrator } => match &layer {
                Some(l) => format!("observe `{l}`'s output with the {calibrator} calibrator"),
                None => format!("observe the activations with the {calibrator} calibrator"),
            },
            Change::DynamicLinear => {
                "dynamic instead of static quantization of the linear layers".into()
            }
            Change::ReduceRange { on } => format!(
                "turn reduce_range {} for this CPU kind",
                if *on { "on" } else { "off" }
            ),
            Change::CalibrateCloserToInference { worst_samples } => format!(
                "use a calibration set closer to the inference data (worst samples {worst_samples:?})"
            ),
            Change::MoreCalibrationData => "calibrate on more data that represents the data set (at least ~100 samples, several per class)".into(),
            Change::Fuse { layers } => {
                format!("fuse Conv-BN / Linear-BN ({}) before quantizing", layers.join("+"))
            }
            Change::QuantizationAwareTraining => "quantization-aware training".into(),
            Change::WeightBits { bits } => match &layer {
                Some(l) => format!("quantize `{l}`'s weights to {bits} bits"),
                None => format!("quantize the weights to {bits} bits"),
            },
            Change::PerTokenActivations => match &layer {
                Some(l) => format!("quantize `{l}`'s input dynamically per token"),
                None => "quantize the linear layers' inputs dynamically per token".into(),
            },
            Change::SmoothQuant { alpha } => match &layer {
                Some(l) => format!("apply SmoothQuant (alpha {alpha}) to `{l}`"),
                None => format!("apply SmoothQuant (alpha {alpha})"),
            },
            Change::WeightFormat { format } => match &layer {
                Some(l) => format!(
                    "store `{l}`'s weights in {format} ({:.2} bits/weight)",
                    format.bits_per_element()
                ),
                None => format!(
                    "store the weights in {format} ({:.2} bits/weight)",
                    format.bits_per_element()
                ),
            },
            Change::ActivationFormat { format } => match &layer {
                Some(l) => format!("pass `{l}`'s inputs through {format}"),
                None => format!("pass the weighted layers' inputs through {format}"),
            },
        }
    }
}

impl fmt::Display for Remedy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.action())?;
        match &self.effect {
            Effect::Measured { quality, gain_db } => write!(f, "  [{quality}; {gain_db:+.2} dB]"),
            Effect::Local { sqnr_db, gain_db } => {
                write!(f, "  [layer alone {sqnr_db:.1} dB; {gain_db:+.2} dB]")
            }
            Effect::NotMeasured(NotMeasured::NotRequested) => f.write_str("  [not measured]"),
            Effect::NotMeasured(NotMeasured::OutOfReach) => f.write_str("  [not measurable here]"),
            Effect::NotMeasured(NotMeasured::Failed { error }) => {
                write!(f, "  [could not measure: {error}]")
            }
        }
    }
}

/// Orders remedies: kernel fixes first; then measured gains, larger first, gains within the
/// same 1 dB step ordered by cost (int8 changes, dynamic int8, bf16, fp16, fp32: a layer taken
/// out of int8 adds quantize/dequantize transitions); then what was not measured, by cost.
pub(crate) fn rank(remedies: &mut [Remedy]) {
    remedies.sort_by(|a, b| {
        let fix = |r: &Remedy| r.change != Change::FixKernel;
        fix(a)
            .cmp(&fix(b))
            .then_with(|| match (a.gain_db(), b.gain_db()) {
                (Some(x), Some(y)) => y
                    .floor()
                    .total_cmp(&x.floor())
                    .then(a.cost().cmp(&b.cost()))
                    .then(y.total_cmp(&x)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.cost().cmp(&b.cost()),
            })
    });
}

/// How a [`QuantPlan`] quantizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum PlanMode {
    /// Post-training static quantization: prepare, calibrate, convert.
    #[default]
    Static,
    /// Dynamic quantization of the linear layers ([`crate::ptq::quantize_dynamic`]).
    Dynamic,
}

/// A quantization plan: a [`PtqConfig`] plus the per-layer changes a config cannot say (layers
/// kept in fp16 / bf16, dynamic instead of static). Remedies are applied to it; the
/// diagnosis measures every remedy by applying it to the diagnosed plan, so applying the same
/// remedy reproduces the measured model exactly.
///
/// # Examples
/// ```
/// use qnumeric::diagnose::{Change, Precision, QuantPlan};
/// use qnumeric::ptq::PtqConfig;
///
/// let plan = QuantPlan::new(PtqConfig::default())
///     .apply_change(Some("fc2"), &Change::KeepIn { precision: Precision::F32 })?
///     .apply_change(Some("fc1"), &Change::PerChannelWeights)?;
/// assert!(plan.config().qconfig("fc2").is_none()); // fc2 stays in float
/// assert!(plan.config().qconfig("fc1").is_some());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct QuantPlan {
    config: PtqConfig,
    rounded: BTreeMap<String, Precision>,
    mode: PlanMode,
}

impl QuantPlan {
    /// A static PTQ plan with `config`.
    #[must_use]
    pub fn new(config: PtqConfig) -> Self {
        QuantPlan {
            config,
            rounded: BTreeMap::new(),
            mode: PlanMode::Static,
        }
    }

    /// The PTQ configuration.
    #[must_use]
    pub fn config(&self) -> &PtqConfig {
        &self.config
    }

    /// The layers run in fp16 / bf16.
    #[must_use]
    pub fn rounded_layers(&self) -> &BTreeMap<String, Precision> {
        &self.rounded
    }

    /// Static or dynamic.
    #[must_use]
    pub fn mode(&self) -> PlanMode {
        self.mode
    }

    /// The plan with `remedy` applied.
    ///
    /// # Errors
    /// As [`QuantPlan::apply_change`].
    pub fn apply(self, remedy: &Remedy) -> Result<Self> {
        self.apply_change(remedy.layer.as_deref(), &remedy.change)
    }

    /// The plan with `change` applied to `layer` (`None` for model-wide changes).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a change no plan can carry (new data, training,
    /// fusion, the replay-only changes: [`Change::is_applicable`]); [`QuantError::NotFound`] for a per-layer change
    /// without a layer; errors of the observers' constructors.
    pub fn apply_change(mut self, layer: Option<&str>, change: &Change) -> Result<Self> {
        const OP: &str = "QuantPlan::apply";
        let need_layer = || {
            layer.ok_or_else(|| QuantError::NotFound {
                op: OP,
                what: "layer (a per-layer change needs one)",
                name: String::new(),
            })
        };
        match change {
            Change::FixKernel
            | Change::KeepIn {
                precision: Precision::F32,
            } => {
                let l = need_layer()?;
                self.rounded.remove(l);
                self.config = self.config.keep_float(l);
            }
            Change::KeepIn { precision } => {
                let l = need_layer()?;
                self.rounded.insert(l.to_string(), *precision);
            }
            Change::PerChannelWeights => {
                let l = need_layer()?;
                let q = self.layer_qconfig(l);
                let qc = QConfig::from_boxed(q.activation().box_clone(), per_channel_weights()?)
                    .with_accumulation(q.accumulation());
                self.config = self.config.with_layer(l, qc);
            }
            Change::Observer { calibrator } => {
                let l = need_layer()?;
                let q = self.layer_qconfig(l);
                let obs = calibrator.observer(*q.activation().spec())?;
                let qc = QConfig::from_boxed(obs, q.weight().box_clone())
                    .with_accumulation(q.accumulation());
                self.config = self.config.with_layer(l, qc);
            }
            Change::DynamicLinear => self.mode = PlanMode::Dynamic,
            Change::ReduceRange { on } => {
                self.config = with_activation_spec(&self.config, *on, x86_engine_accumulation())?;
            }
            Change::CalibrateCloserToInference { .. }
            | Change::MoreCalibrationData
            | Change::Fuse { .. }
            | Change::QuantizationAwareTraining => {
                return Err(QuantError::UnsupportedConfig {
                    op: OP,
                    reason: "this change needs new data, training or a change of the model: a plan cannot carry it",
                });
            }
            Change::WeightFormat { .. } | Change::ActivationFormat { .. } => {
                return Err(QuantError::UnsupportedConfig {
                    op: OP,
                    reason: "format changes are carried by a FormatPlan (simulate::FormatPlan::apply)",
                });
            }
            Change::WeightBits { .. }
            | Change::PerTokenActivations
            | Change::SmoothQuant { .. } => {
                return Err(QuantError::UnsupportedConfig {
                    op: OP,
                    reason: "a plan cannot carry weight widths, per-token activations or SmoothQuant yet (measured by replay only)",
                });
            }
        }
        Ok(self)
    }

    /// The configuration the layer is quantized with now (the default for a layer kept in
    /// float, so that a later change starts from it).
    fn layer_qconfig(&self, layer: &str) -> QConfig {
        self.config
            .qconfig(layer)
            .unwrap_or(&self.config.default)
            .clone()
    }

    /// The float model quantized with the plan: layers in fp16 / bf16 replaced by their
    /// [`RoundedLayer`], then prepared, calibrated on `calib` and converted (static), or its
    /// linear layers quantized dynamically.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] for a rounded layer the model does not have; errors of
    /// prepare, calibration and conversion.
    pub fn quantize<M: Model + Clone>(&self, float: &M, calib: &ArrayD<f32>) -> Result<M> {
        let mut m = float.clone();
        for (layer, precision) in &self.rounded {
            let l = m.layer(layer).ok_or_else(|| QuantError::NotFound {
                op: "QuantPlan::quantize",
                what: "layer",
                name: layer.clone(),
            })?;
            let rounded = RoundedLayer::new(l, *precision)?;
            m.replace_layer(layer, Box::new(rounded))?;
        }
        match self.mode {
            PlanMode::Static => {
                let mut p = prepare(m, &self.config)?;
                p.calibrate(calib)?;
                p.convert()
            }
            PlanMode::Dynamic => {
                quantize_dynamic(&mut m, &self.config)?;
                Ok(m)
            }
        }
    }
}

/// `config` with every activation observer's spec set to PyTorch's x86 default with or
/// without `reduce_range`, and every int8 layer accumulating as `acc` says.
pub(crate) fn with_activation_spec(
    config: &PtqConfig,
    reduce_range: bool,
    acc: Int8Accumulation,
) -> Result<PtqConfig> {
    let q = &config.default;
    let act = observer_like(q.activation(), activation_spec(reduce_range)?)?;
    let default = QConfig::from_boxed(act, q.weight().box_clone()).with_accumulation(acc);
    let mut c = PtqConfig::new(default);
    c.overrides = config.overrides.clone();
    Ok(c.with_accumulation(acc))
}
