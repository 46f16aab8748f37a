//! Diagnosis: why a quantized model lost accuracy, and what to change.
//!
//! | item | file | what it answers |
//! |---|---|---|
//! | [`KernelCheck`], [`KernelReport`] | `kernel_check.rs` | does an int8 kernel agree with the reference `dequantize → f32 op → quantize`? |
//! | [`audit_calibration`], [`CalibrationAudit`] | `audit.rs` | is the calibration set large and varied enough, and did every observer's range settle? |

mod audit;
mod kernel_check;

pub use audit::{audit_calibration, AuditThresholds, CalibrationAudit, ObserverConvergence};
pub use kernel_check::{
    CaseKind, DiffStats, KernelCheck, KernelInputs, KernelOp, KernelReport, KernelTolerance,
    KernelVerdict, WorstCase,
};
