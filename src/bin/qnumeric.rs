//! `qnumeric`: the Numeric Suite from the command line (feature `cli`), for pipelines that
//! dump per-layer outputs from any framework.
//!
//! ```text
//! qnumeric compare FLOAT.safetensors QUANT.safetensors [--json] [--per-sample] [--threshold DB]
//! qnumeric diagnose FLOAT.safetensors QUANT.safetensors [--json] [--threshold DB]
//! ```
//!
//! Exit codes: 0 when both files were read (tensors that cannot be compared are listed as
//! skipped), 2 for unreadable input (one line on stderr naming the file and the problem) and
//! for usage errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qnumeric::diagnose::{Thresholds, diagnose_report};
use qnumeric::ns::{DEFAULT_JUMP_THRESHOLD_DB, compare_dump_files};

#[derive(Parser)]
#[command(
    name = "qnumeric",
    version,
    about = "Where a quantized model departs from its float original, layer by layer and sample by sample"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare two .safetensors dumps of per-layer outputs (float first), matched by tensor
    /// name, first axis = samples; layer order from the `order` metadata key
    /// (comma-separated names) when present, else by name.
    Compare {
        /// Outputs of the float model.
        float: PathBuf,
        /// Outputs of the quantized model (dequantized).
        quant: PathBuf,
        /// One JSON object instead of the text table.
        #[arg(long)]
        json: bool,
        /// Per-sample SQNR too (`sample_sqnr_db` in JSON; a per-sample table in text).
        #[arg(long)]
        per_sample: bool,
        /// The threshold for "first below" (dB).
        #[arg(long, default_value_t = DEFAULT_JUMP_THRESHOLD_DB, allow_negative_numbers = true)]
        threshold: f64,
    },
    /// The verdicts that per-sample evidence supports (fine, data-sensitive,
    /// data-insensitive) from two dumps of per-layer outputs (sample axis first).
    Diagnose {
        /// Outputs of the float model.
        float: PathBuf,
        /// Outputs of the quantized model (dequantized).
        quant: PathBuf,
        /// One JSON object (`verdict`, `first_layer`, `worst_samples`, `layers`).
        #[arg(long)]
        json: bool,
        /// A sample below this SQNR (dB) at a layer has a large error there.
        #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
        threshold: f64,
    },
}

/// Number of worst samples listed by the per-sample text table.
const WORST_SAMPLES: usize = 5;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Compare {
            float,
            quant,
            json,
            per_sample,
            threshold,
        } => compare(&float, &quant, json, per_sample, threshold),
        Command::Diagnose {
            float,
            quant,
            json,
            threshold,
        } => diagnose(&float, &quant, json, threshold),
    }
}

fn diagnose(
    float: &std::path::Path,
    quant: &std::path::Path,
    json: bool,
    threshold: f64,
) -> ExitCode {
    let cmp = match compare_dump_files(float, quant) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let t = Thresholds {
        min_sqnr_db: threshold,
        ..Thresholds::default()
    };
    let d = match diagnose_report(&cmp.report, &t) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let mut text = if json {
        let mut v = match serde_json::to_value(&d) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        if let Some(o) = v.as_object_mut() {
            let skipped: Vec<serde_json::Value> = cmp
                .skipped
                .iter()
                .map(|s| serde_json::json!({"name": s.name, "reason": s.reason}))
                .collect();
            o.insert("skipped".into(), serde_json::Value::Array(skipped));
        }
        match serde_json::to_string_pretty(&v) {
            Ok(s) => s,
            Err(e) => return fail(e),
        }
    } else {
        d.to_string()
    };
    if !cmp.skipped.is_empty() && !json {
        for s in &cmp.skipped {
            let name: String = s.name.chars().flat_map(char::escape_default).collect();
            text.push_str(&format!("skipped {name}: {}\n", s.reason));
        }
    }
    text.push('\n');
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("qnumeric: {message}");
    ExitCode::from(2)
}

fn compare(
    float: &std::path::Path,
    quant: &std::path::Path,
    json: bool,
    per_sample: bool,
    threshold: f64,
) -> ExitCode {
    let mut cmp = match compare_dump_files(float, quant) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    cmp.report = match cmp.report.with_jump_threshold(threshold) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let text = if json {
        let mut s = cmp.to_json(per_sample);
        s.push('\n');
        s
    } else if per_sample {
        format!("{cmp}\nper sample:\n{}", cmp.sample_table(WORST_SAMPLES))
    } else {
        cmp.to_string()
    };
    // A closed pipe (`| head`) is not an error of the comparison.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}
