//! The conformance harness: runs golden cases (JSON lines, the format of PyTorch's reference
//! files, see `tests/golden/FORMAT.md`) against qnumeric and reports every mismatch.
//!
//! One case per line; each has an `id`, an `op` and `expected`. A float passes against `e`
//! when `|v - e| <= atol + rtol·|e|`; with no tolerance given, floats must match bit for bit
//! (NaN matches NaN) and integers exactly. An `op` the harness does not know counts as failed,
//! with the reason `unsupported`.
//!
//! ```no_run
//! let report = qnumeric::conformance::run_file("tests/golden/kernels.jsonl")?;
//! for f in &report.failures {
//!     println!("{f}");
//! }
//! println!("{report}"); // "N passed, M failed"
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

mod case;
mod fusion_cases;
mod json;
mod kernel_cases;
mod metric_cases;
mod observer_cases;

use std::fmt;
use std::path::Path;

use crate::error::{QuantError, Result};

pub use case::{Case, Tolerance};
pub use json::Json;

/// What a case came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every expected value matched.
    Pass,
    /// A mismatch (or an error where a result was expected, or vice versa), described.
    Fail(String),
    /// The harness does not know this `op`.
    Unsupported,
}

/// One failing case.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The file (or source name) the case came from.
    pub source: String,
    /// The case's id.
    pub id: String,
    /// The case's op.
    pub op: String,
    /// Why it failed (`unsupported` for unknown ops).
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FAIL {} [{}] {}: {}",
            self.id, self.op, self.source, self.reason
        )
    }
}

/// The result of a run: counts and the failing cases.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Number of cases that passed.
    pub passed: usize,
    /// The cases that failed, in file order.
    pub failures: Vec<Failure>,
}

impl Report {
    /// Number of failed cases.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Adds another report's counts and failures.
    pub fn extend(&mut self, other: Report) {
        self.passed += other.passed;
        self.failures.extend(other.failures);
    }

    /// The ids of the failing cases.
    #[must_use]
    pub fn failed_ids(&self) -> Vec<&str> {
        self.failures.iter().map(|f| f.id.as_str()).collect()
    }
}

impl fmt::Display for Report {
    /// `N passed, M failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed())
    }
}

/// Runs one parsed case.
#[must_use]
pub fn run_case(case: &Case) -> Outcome {
    let handler: fn(&Case) -> std::result::Result<(), String> = match case.op.as_str() {
        "quantize_per_tensor"
        | "dequantize_per_tensor"
        | "quantize_per_channel"
        | "dequantize_per_channel"
        | "fake_quantize_per_tensor_affine"
        | "fake_quantize_per_channel_affine"
        | "fake_quantize_learnable_per_tensor_affine" => kernel_cases::run,
        "metric" => metric_cases::run,
        "observer" => observer_cases::run,
        "fuse_conv_bn" | "fuse_linear_bn" => fusion_cases::run,
        _ => return Outcome::Unsupported,
    };
    match handler(case) {
        Ok(()) => Outcome::Pass,
        Err(e) if e == UNSUPPORTED => Outcome::Unsupported,
        Err(e) => Outcome::Fail(e),
    }
}

/// The reason handlers give for a case they cannot run yet.
pub(crate) const UNSUPPORTED: &str = "unsupported";

/// Runs every case of a JSON-lines text. `source` names it in failures.
#[must_use]
pub fn run_str(text: &str, source: &str) -> Report {
    let mut report = Report::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fail = |id: String, op: String, reason: String| Failure {
            source: source.to_string(),
            id,
            op,
            reason,
        };
        let case = match Case::parse(line) {
            Ok(c) => c,
            Err(e) => {
                report.failures.push(fail(
                    format!("line-{}", n + 1),
                    "?".into(),
                    format!("unreadable case: {e}"),
                ));
                continue;
            }
        };
        match run_case(&case) {
            Outcome::Pass => report.passed += 1,
            Outcome::Fail(reason) => {
                report
                    .failures
                    .push(fail(case.id.clone(), case.op.clone(), reason))
            }
            Outcome::Unsupported => report.failures.push(fail(
                case.id.clone(),
                case.op.clone(),
                UNSUPPORTED.to_string(),
            )),
        }
    }
    report
}

/// Reads and runs a JSON-lines file.
///
/// # Errors
/// [`QuantError::Format`] when the file cannot be read.
pub fn run_file(path: impl AsRef<Path>) -> Result<Report> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| QuantError::Format {
        op: "conformance::run_file",
        detail: format!("{}: {e}", path.display()),
    })?;
    Ok(run_str(&text, &path.display().to_string()))
}
