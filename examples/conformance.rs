//! Runs golden conformance files (JSON lines, the format of `tests/golden/FORMAT.md`) against
//! qnumeric: one line per failing case, then `N passed, M failed`; exits non-zero on failures.
//!
//! ```text
//! cargo run --release --features conformance --example conformance -- tests/golden/*.jsonl
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: conformance FILE.jsonl...");
        return ExitCode::from(2);
    }
    let mut total = qnumeric::conformance::Report::default();
    for file in &files {
        match qnumeric::conformance::run_file(file) {
            Ok(report) => {
                for failure in &report.failures {
                    println!("{failure}");
                }
                println!("{file}: {report}");
                total.extend(report);
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    println!("{total}");
    if total.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
