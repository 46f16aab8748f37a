//! Diagnosis: why a quantized model lost accuracy, and what to change.
//!
//! | item | file | what it answers |
//! |---|---|---|
//! | [`diagnose`], [`Diagnosis`], [`DiagnoseOptions`], [`Unmeasured`] | `diagnosis.rs` | the one call: per-layer verdicts with their evidence, remedies ranked and measured, failures to measure kept |
//! | [`Verdict`], [`Thresholds`], [`SampleEvidence`] | `verdict.rs` | what is wrong at a layer, read from per-sample evidence |
//! | [`LayerEvidence`], [`LayerDiagnosis`], [`Reason`] | `evidence.rs` | everything known about one layer, and why its verdict |
//! | [`Remedy`], [`Change`], [`Cost`], [`Effect`], [`Evidence`], [`QuantPlan`] | `remedy.rs` | remedies as data, applied to a plan to quantize again |
//! | [`ActivationHistogram`] | `histogram.rs` | a layer's float outputs against its quantized range |
//! | [`Diagnosis::to_html`] | `html.rs` | the self-contained HTML page |
//! | [`diagnose_report`], [`ReportDiagnosis`], [`Finding`] | `report.rs` | verdicts from per-sample evidence alone (pushed pairs, dumps): each layer judged by its own error, beside its peers |
//! | [`diagnose_dumps`], [`DumpDiagnosis`], [`BaselineDiff`] | `dumps.rs` | two dumps (`qnumeric diagnose`): verdicts, input evidence and replayed remedies, against a baseline |
//! | [`KernelCheck`], [`KernelReport`] | `kernel_check.rs` | does an int8 kernel agree with the reference `dequantize → f32 op → quantize`? |
//! | [`audit_calibration`], [`CalibrationAudit`] | `audit.rs` | is the calibration set large and varied enough, and did every observer's range settle? |
//! | [`Precision`], [`RoundedLayer`] | `precision.rs` | a layer kept in fp16 / bf16 / fp32 |
//! | [`LinearReplay`], [`LinearScheme`], [`ReplayWeights`], [`ReplayActivations`], [`ReplayRemedy`] | `replay.rs` | one Linear layer of a dump replayed under other schemes: the scheme it was quantized with, remedies measured on the layer alone |
//! | [`Sensitivity`], [`MixedPlan`], [`ReduceRangeCost`], [`observer_sweep`] | `variants.rs` | PTQ variants measured on the caller's data |

mod audit;
mod diagnosis;
#[cfg(feature = "safetensors")]
mod dumps;
mod evidence;
mod format_check;
mod formats;
mod histogram;
mod html;
mod kernel_check;
mod precision;
mod qat;
mod remedy;
mod replay;
mod report;
mod session;
mod variants;
mod verdict;

pub use audit::{AuditThresholds, CalibrationAudit, ObserverConvergence, audit_calibration};
pub use diagnosis::{
    DEFAULT_MIN_GAIN_DB, DiagnoseOptions, Diagnosis, Measurement, Quantized, RemedyDepth,
    Unmeasured, diagnose,
};
#[cfg(feature = "safetensors")]
#[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
pub use dumps::{
    BASELINE_CHANGE_DB, BaselineDiff, BaselineLayer, DEFAULT_DUMP_MIN_GAIN_DB, DumpDiagnoseOptions,
    DumpDiagnosis, diagnose_dumps, diagnose_dumps_with_baseline,
};
pub use evidence::{LayerDiagnosis, LayerEvidence, Reason};
pub use format_check::{
    FormatCaseKind, FormatFailure, FormatKernelCheck, FormatKernelOp, FormatKernelReport,
};
pub use formats::{FormatDiagnoseOptions, FormatDiagnosis, diagnose_formats};
pub use histogram::ActivationHistogram;
pub use kernel_check::{
    CaseKind, DiffStats, KernelCheck, KernelInputs, KernelOp, KernelReference, KernelReport,
    KernelTolerance, KernelVerdict, MAX_CASES_PER_KIND, MinimalCase, WeightScheme, WorstCase,
};
pub use precision::{Precision, RoundedLayer};
pub use qat::{QatOutcome, QatTrial};
pub use remedy::{
    Calibrator, Change, Cost, Effect, Evidence, NotMeasured, PlanMode, QuantPlan, Remedy, Scope,
};
pub use replay::{LinearReplay, LinearScheme, ReplayActivations, ReplayRemedy, ReplayWeights};
pub use report::{
    Finding, MIN_PEERS, OwnError, OwnSource, PEER_MARGIN_DB, PeerEvidence, ReportDiagnosis,
    ReportLayer, diagnose_report, layer_role,
};
pub use session::Diagnoser;
pub use variants::{
    Budget, EvalData, MixedPlan, Quality, ReduceRangeCost, ReduceRangeRow, Sensitivity,
    SensitivityRow, observer_sweep,
};
pub use verdict::{SampleEvidence, Thresholds, Verdict};
