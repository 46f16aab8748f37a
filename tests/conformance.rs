//! Runs every PyTorch golden case shipped in `tests/golden` through the conformance harness
//! and fails with the list of failing ids.

use std::path::PathBuf;

fn run(file: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "golden", file]
        .iter()
        .collect();
    let report = qnumeric::conformance::run_file(&path).expect("golden file readable");
    let lines: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(
        report.failed() == 0 && report.passed > 0,
        "{file}: {report}\n{}",
        lines.join("\n")
    );
}

#[test]
fn kernels_golden() {
    run("kernels.jsonl");
}

#[test]
fn metrics_golden() {
    run("metrics.jsonl");
}

#[test]
fn harness_reports_mismatches_and_unsupported_ops() {
    let text = concat!(
        r#"{"id": "a", "op": "metric", "metric": "sqnr", "x": {"shape": [2], "data": [1.0, 2.0]}, "y": {"shape": [2], "data": [1.0, 2.0]}, "expected": {"value": 3.0}}"#,
        "\n",
        r#"{"id": "b", "op": "no_such_op", "expected": {}}"#,
        "\n",
        r#"{"id": "c", "op": "metric", "metric": "sqnr", "x": {"shape": [2], "data": [1.0, 2.0]}, "y": {"shape": [2], "data": [1.0, 2.0]}, "expected": {"value": "inf"}}"#,
        "\n",
        "not json\n"
    );
    let report = qnumeric::conformance::run_str(text, "inline");
    assert_eq!(report.passed, 1);
    assert_eq!(report.failed_ids(), vec!["a", "b", "line-4"]);
    assert_eq!(report.failures[1].reason, "unsupported");
    assert_eq!(report.to_string(), "1 passed, 3 failed");
}

#[test]
fn missing_file_is_an_error() {
    assert!(matches!(
        qnumeric::conformance::run_file("/no/such/file.jsonl"),
        Err(qnumeric::QuantError::Format { .. })
    ));
}
