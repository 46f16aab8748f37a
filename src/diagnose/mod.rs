//! Diagnosis: why a quantized model lost accuracy, and what to change.
//!
//! | item | file | what it answers |
//! |---|---|---|
//! | [`diagnose`], [`Diagnosis`], [`Verdict`], [`Remedy`] | `verdict.rs` | the one call: per-layer verdicts with their evidence, remedies ranked and measured |
//! | [`Diagnosis::to_html`], [`ActivationHistogram`] | `html.rs` | the self-contained HTML page |
//! | [`diagnose_report`], [`ReportDiagnosis`] | `dumps.rs` | verdicts from per-sample evidence alone (dumps, pushed pairs; `qnumeric diagnose`) |
//! | [`KernelCheck`], [`KernelReport`] | `kernel_check.rs` | does an int8 kernel agree with the reference `dequantize → f32 op → quantize`? |
//! | [`audit_calibration`], [`CalibrationAudit`] | `audit.rs` | is the calibration set large and varied enough, and did every observer's range settle? |
//! | [`Precision`], [`RoundedLayer`] | `precision.rs` | a layer kept in fp16 / bf16 / fp32 |
//! | [`Sensitivity`], [`MixedPlan`], [`ReduceRangeCost`], [`observer_sweep`] | `variants.rs` | PTQ variants measured on the caller's data |

mod audit;
mod dumps;
mod html;
mod kernel_check;
mod precision;
mod session;
mod variants;
mod verdict;

pub use audit::{AuditThresholds, CalibrationAudit, ObserverConvergence, audit_calibration};
pub use dumps::{ReportDiagnosis, ReportLayer, diagnose_report};
pub use html::ActivationHistogram;
pub use kernel_check::{
    CaseKind, DiffStats, KernelCheck, KernelInputs, KernelOp, KernelReport, KernelTolerance,
    KernelVerdict, WorstCase,
};
pub use precision::{Precision, RoundedLayer};
pub use session::Diagnoser;
pub use variants::{
    Budget, EvalData, MixedPlan, Quality, ReduceRangeCost, ReduceRangeRow, Sensitivity,
    SensitivityRow, observer_sweep,
};
pub use verdict::{
    DiagnoseOptions, Diagnosis, LayerDiagnosis, LayerEvidence, Quantized, Remedy, RemedyDepth,
    SampleEvidence, Thresholds, Verdict, diagnose,
};
