//! The conformance harness: runs golden cases against qnumeric and reports every mismatch.
//! Needs the feature `conformance`.
//!
//! The cases shipped in `tests/golden/*.jsonl` were computed by PyTorch; `cargo test
//! --all-features` runs all of them. The harness is public so that you can run your own
//! files (cases you generated from your PyTorch version, or cases for a custom backend).
//!
//! # Format
//! JSON lines: one object a line, blank lines ignored. Each case has a string `id`, a string
//! `op`, its inputs and `expected`. A tensor is `{"shape": [d0, d1, ...], "data": [...]}`,
//! row-major with `data` flat. The ops, their inputs and outputs are described in
//! `tests/golden/FORMAT.md` in the repository:
//!
//! | file | ops |
//! |---|---|
//! | kernels | `quantize_per_tensor`, `dequantize_per_tensor`, `quantize_per_channel`, `dequantize_per_channel`, `fake_quantize_per_tensor_affine`, `fake_quantize_per_channel_affine`, `fake_quantize_learnable_per_tensor_affine` |
//! | observers | `observer` (PyTorch's observer classes by name) |
//! | metrics | `metric` (`sqnr`, `normalized_l2_error`, `cosine_similarity`) |
//! | fusion | `fuse_conv_bn`, `fuse_linear_bn` |
//! | qlayers | `quantized_linear`, `quantized_conv2d` |
//! | formats | `float8_cast`, `float8_cast_saturating`, `float8_scaled_training`, `float8_scaled_inference`, `fp_subbyte_cast`, `mx_quantize`, `nvfp4_quantize`, `affine_groupwise`, `affine_groupwise_tinygemm`, `nf4_quantize`, `ggml_quantize`, `ggml_dequantize` |
//! | qat | `fake_quantize_module`, `fused_moving_avg_obs_fake_quant`, `learnable_fake_quantize_module`, `qat_conv_bn`, `qat_linear` (sequences of steps) |
//!
//! Inputs are read strictly; a case whose inputs do not follow the format fails with a reason
//! naming the member, and nothing is cast or rounded on the way in:
//! - integers (zero points, `quant_min`/`quant_max`, axes, shapes, integer tensor data) are JSON
//!   integers in the range of the type they are read into (`i32` for per-channel zero points,
//!   non-negative for shape dimensions); `3.0` or `2.5` where an integer is expected fails;
//! - float tensor data, scales and zero points are exactly representable as `f32` (`0.1`
//!   fails), or one of the strings `"inf"`, `"-inf"`, `"nan"`;
//! - a tensor's shape holds exactly as many elements as its `data`;
//! - a line that is not a JSON object with `id` and `op` (including nesting deeper than 128
//!   levels) is reported as a failure with the id `line-N`, and the next lines still run.
//!
//! # Tolerances
//! A case may give `rtol` and `atol`: a float `v` passes against `e` when
//! `|v - e| <= atol + rtol·|e|`, equal infinities pass and NaN passes only against NaN. Without
//! a tolerance, floats must have the same `f32` bit pattern (NaN matches NaN, `-0.0` does not
//! match `0.0`) and integers must be equal. Observer cases may give `zero_point_atol`, the
//! number of integer steps an integer zero point may differ by.
//!
//! # Unsupported cases
//! An `op` the harness does not know, or an observer class it does not implement, fails with
//! the reason `unsupported`: a file with new ops reports them instead of skipping them.
//!
//! # Running your own files
//! [`run_file`] reads and runs a file, [`run_str`] runs text; both return a [`Report`] whose
//! `Display` is `N passed, M failed`. From the repository, the example runs files from the
//! command line: `cargo run --release --features conformance --example conformance -- FILE...`.
//!
//! ```
//! use qnumeric::conformance::run_str;
//!
//! let cases = concat!(
//!     r#"{"id": "q1", "op": "quantize_per_tensor", "dtype": "quint8", "scale": 0.5, "#,
//!     r#""zero_point": 10, "x": {"shape": [3], "data": [0.0, 0.5, -1.0]}, "#,
//!     r#""expected": {"q": {"shape": [3], "data": [10, 11, 8]}}}"#,
//!     "\n",
//!     r#"{"id": "q2", "op": "no_such_op", "expected": {}}"#,
//! );
//! let report = run_str(cases, "inline");
//! assert_eq!(report.to_string(), "1 passed, 1 failed");
//! assert_eq!(report.failures[0].reason, "unsupported");
//!
//! // A file, with one line per failing case:
//! # let dir = std::env::temp_dir().join(format!("qnumeric-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).map_err(|e| qnumeric::QuantError::Format { op: "doc", detail: e.to_string() })?;
//! # let path = dir.join("mine.jsonl");
//! # std::fs::write(&path, cases).map_err(|e| qnumeric::QuantError::Format { op: "doc", detail: e.to_string() })?;
//! let report = qnumeric::conformance::run_file(&path)?;
//! for failure in &report.failures {
//!     println!("{failure}");
//! }
//! println!("{report}");
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

mod case;
mod format_float_cases;
mod format_int_cases;
mod fusion_cases;
mod json;
mod kernel_cases;
mod metric_cases;
mod observer_cases;
mod qat_cases;
mod qlayer_cases;

use std::fmt;
use std::path::Path;

use crate::error::{QuantError, Result};

pub use case::{Case, Tolerance};
/// A case's JSON value ([`Case::json`]): `serde_json`'s `Value`, re-exported so that callers
/// need no `serde_json` dependency of their own to read a case's members.
pub use serde_json::Value as Json;

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
        "quantized_linear" | "quantized_conv2d" => qlayer_cases::run,
        "float8_cast"
        | "float8_cast_saturating"
        | "float8_scaled_training"
        | "float8_scaled_inference"
        | "fp_subbyte_cast"
        | "mx_quantize"
        | "nvfp4_quantize" => format_float_cases::run,
        "affine_groupwise"
        | "affine_groupwise_tinygemm"
        | "nf4_quantize"
        | "ggml_quantize"
        | "ggml_dequantize" => format_int_cases::run,
        "fake_quantize_module"
        | "fused_moving_avg_obs_fake_quant"
        | "learnable_fake_quantize_module"
        | "qat_conv_bn"
        | "qat_linear" => qat_cases::run,
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
/// [`QuantError::Io`] when the file cannot be read.
pub fn run_file(path: impl AsRef<Path>) -> Result<Report> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| QuantError::io("conformance::run_file", path, e))?;
    Ok(run_str(&text, &path.display().to_string()))
}
