//! `qnumeric`: the Numeric Suite from the command line (feature `cli`), for pipelines that
//! dump per-layer outputs from any framework.
//!
//! ```text
//! qnumeric compare FLOAT.safetensors QUANT.safetensors [--json] [--per-sample] [--threshold DB]
//! qnumeric diagnose FLOAT.safetensors QUANT.safetensors [--baseline OTHER.safetensors]
//!                   [--sample-dims 1|2] [--json] [--threshold DB] [--min-gain DB]
//!                   [--try-formats F,...] [--html PAGE.html]
//! ```
//!
//! Exit codes: 0 when both files were read (tensors that cannot be compared are listed as
//! skipped), 2 for unreadable input (one line on stderr naming the file and the problem) and
//! for usage errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qnumeric::diagnose::{
    DEFAULT_DUMP_MIN_GAIN_DB, DumpDiagnoseOptions, Thresholds, diagnose_dumps,
    diagnose_dumps_with_baseline,
};
use qnumeric::formats::Format;
use qnumeric::ns::{DEFAULT_JUMP_THRESHOLD_DB, DumpPair, SampleDims, compare_dump_files};

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
    /// Diagnose two dumps (docs/dumps.md; v1 outputs-only dumps too): each layer's verdict
    /// from its own error (fine, inherited, data-sensitive, data-insensitive,
    /// implementation), the headline layer, and remedies measured by replaying layers whose
    /// inputs and weights are in the dump.
    Diagnose {
        /// The float model's dump.
        float: PathBuf,
        /// The quantized model's dump (dequantized).
        quant: PathBuf,
        /// Another quantized model's dump (same float model, same samples): what changed.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// 1: axis 0 is the sample (padded positions left out of its figures); 2: every real
        /// (n, t) position is a sample (tokens as samples).
        #[arg(long, default_value_t = 1)]
        sample_dims: usize,
        /// One JSON object (`verdict`, `headline`, `first_layer`, `worst_samples`, `layers`,
        /// `remedies`, `baseline`, `skipped`, `unmeasured`).
        #[arg(long)]
        json: bool,
        /// A sample below this SQNR (dB) from a layer's own error has a large error there.
        #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
        threshold: f64,
        /// Remedies gaining less than this (dB) are not listed.
        #[arg(long, default_value_t = DEFAULT_DUMP_MIN_GAIN_DB, allow_negative_numbers = true)]
        min_gain: f64,
        /// Weight formats to try on every flagged Linear, comma-separated (`int4-g64,mxfp8,q8_0`;
        /// the names of `qnumeric::formats::Format`).
        #[arg(long, value_delimiter = ',')]
        try_formats: Vec<String>,
        /// Also write the diagnosis as a self-contained HTML page to this file.
        #[arg(long)]
        html: Option<PathBuf>,
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
            baseline,
            sample_dims,
            json,
            threshold,
            min_gain,
            try_formats,
            html,
        } => {
            let dims = match SampleDims::from_count(sample_dims) {
                Ok(d) => d,
                Err(e) => return fail(e),
            };
            let format_candidates = match try_formats
                .iter()
                .map(|f| f.parse::<Format>())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(f) => f,
                Err(e) => return fail(e),
            };
            let opts = DumpDiagnoseOptions {
                thresholds: Thresholds {
                    min_sqnr_db: threshold,
                    ..Thresholds::default()
                },
                sample_dims: dims,
                min_gain_db: min_gain,
                format_candidates,
                ..DumpDiagnoseOptions::default()
            };
            diagnose(
                &float,
                &quant,
                baseline.as_deref(),
                json,
                html.as_deref(),
                &opts,
            )
        }
    }
}

fn diagnose(
    float: &std::path::Path,
    quant: &std::path::Path,
    baseline: Option<&std::path::Path>,
    json: bool,
    html: Option<&std::path::Path>,
    opts: &DumpDiagnoseOptions,
) -> ExitCode {
    let pair = match DumpPair::open(float, quant) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let d = match baseline {
        None => diagnose_dumps(&pair, opts),
        Some(b) => match DumpPair::open(float, b) {
            Ok(base) => diagnose_dumps_with_baseline(&pair, &base, opts),
            Err(e) => Err(e),
        },
    };
    let d = match d {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if let Some(path) = html
        && let Err(e) = std::fs::write(path, d.to_html())
    {
        return fail(format!("{}: {e}", path.display()));
    }
    let mut text = if json {
        match serde_json::to_string_pretty(&d) {
            Ok(s) => s,
            Err(e) => return fail(e),
        }
    } else {
        d.to_string()
    };
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
