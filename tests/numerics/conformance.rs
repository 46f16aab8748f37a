//! Runs every golden file in `tests/golden` (each `*.jsonl`, found by listing the directory)
//! through the conformance harness, and the harness's own robustness cases.
//!
//! `cargo test --all-features --test conformance -- --nocapture` prints each file's report and
//! the closing `N passed, M failed` of the whole set.

use std::path::PathBuf;

use qnumeric::conformance::{Report, run_file, run_str};

fn golden_files() -> Vec<PathBuf> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "golden"]
        .iter()
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/golden is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_golden_file_passes() {
    let files = golden_files();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    for known in [
        "formats",
        "fusion",
        "kernels",
        "metrics",
        "observers",
        "qat",
        "qlayers",
    ] {
        assert!(
            names.iter().any(|n| n == known),
            "{known}.jsonl not found among {names:?}"
        );
    }
    let mut total = Report::default();
    for file in &files {
        let report = run_file(file).expect("golden file readable");
        assert!(
            report.passed + report.failed() > 0,
            "{}: no cases",
            file.display()
        );
        println!("{}: {report}", file.display());
        total.extend(report);
    }
    for failure in &total.failures {
        println!("{failure}");
    }
    println!("{total}");
    assert!(
        total.failed() == 0,
        "{total}; failing ids: {:?}",
        total.failed_ids()
    );
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
    let report = run_str(text, "inline");
    assert_eq!(report.passed, 1);
    assert_eq!(report.failed_ids(), vec!["a", "b", "line-4"]);
    assert_eq!(report.failures[1].reason, "unsupported");
    assert_eq!(report.to_string(), "1 passed, 3 failed");
}

#[test]
fn missing_file_is_an_error() {
    let e = run_file("/no/such/file.jsonl").expect_err("missing");
    assert!(matches!(e, qnumeric::QuantError::Io { .. }), "{e}");
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
}

/// A case that passes, for checking that a bad line does not stop the lines after it.
const GOOD: &str = r#"{"id": "good", "op": "quantize_per_tensor", "dtype": "quint8", "scale": 0.5, "zero_point": 10, "x": {"shape": [3], "data": [0.0, 0.5, -1.0]}, "expected": {"q": {"shape": [3], "data": [10, 11, 8]}}}"#;

/// Runs `bad` followed by [`GOOD`]: `bad` must fail alone, with a reason containing `reason`.
fn assert_fails_alone(bad: &str, id: &str, reason: &str) {
    let report = run_str(&format!("{bad}\n{GOOD}\n"), "inline");
    assert_eq!(report.passed, 1, "{:?}", report.failures);
    assert_eq!(report.failed_ids(), vec![id]);
    assert!(
        report.failures[0].reason.contains(reason),
        "reason {:?} lacks {reason:?}",
        report.failures[0].reason
    );
}

/// Without a depth limit, this line overflows the stack and aborts the test process.
#[test]
fn deeply_nested_json_is_a_failed_line_not_an_abort() {
    let open = "[".repeat(50_000);
    assert_fails_alone(&open, "line-1", "recursion limit");
    let closed = format!(
        r#"{{"id": "deep", "op": "metric", "x": {open}{}}}"#,
        "]".repeat(50_000)
    );
    assert_fails_alone(&closed, "line-1", "recursion limit");
}

fn per_channel_quantize(zero_points: &str) -> String {
    format!(
        r#"{{"id": "zp", "op": "quantize_per_channel", "dtype": "qint8", "axis": 0, "scales": [1.0, 1.0], "zero_points": {zero_points}, "x": {{"shape": [2], "data": [1.0, 2.0]}}, "expected": {{"q": {{"shape": [2], "data": [1, 2]}}}}}}"#
    )
}

#[test]
fn zero_point_beyond_i32_is_refused_not_wrapped() {
    // 4294967296 wrapped to i32 is 0, which would make this case pass.
    assert_eq!(run_str(&per_channel_quantize("[0, 0]"), "inline").passed, 1);
    assert_fails_alone(
        &per_channel_quantize("[0, 4294967296]"),
        "zp",
        "`zero_points`: [1]: 4294967296 is out of range for i32",
    );
}

#[test]
fn per_tensor_zero_point_beyond_i64_is_refused() {
    let case = GOOD.replace(
        r#""zero_point": 10"#,
        r#""zero_point": 9223372036854775808"#,
    );
    assert_fails_alone(
        &case,
        "good",
        "`zero_point`: 9223372036854775808 is out of range for i64",
    );
    // In i64 but not in quint8: refused by the parameters, not wrapped.
    let case = GOOD.replace(r#""zero_point": 10"#, r#""zero_point": 4294967296"#);
    assert_fails_alone(&case, "good", "error:");
}

#[test]
fn quant_range_beyond_i64_is_refused() {
    let case = r#"{"id": "fq", "op": "fake_quantize_per_tensor_affine", "scale": 1.0, "zero_point": 0, "quant_min": 0, "quant_max": 18446744073709551615, "x": {"shape": [1], "data": [1.0]}, "expected": {"y": {"shape": [1], "data": [1.0]}, "grad": {"shape": [1], "data": [1.0]}}}"#;
    assert_fails_alone(
        case,
        "fq",
        "`quant_max`: 18446744073709551615 is out of range for i64",
    );
}

#[test]
fn axis_that_is_not_an_integer_is_refused() {
    let case = per_channel_quantize("[0, 0]").replace(r#""axis": 0"#, r#""axis": 0.5"#);
    assert_fails_alone(&case, "zp", "`axis`: 0.5 is not an integer");
    let case = per_channel_quantize("[0, 0]").replace(r#""axis": 0"#, r#""axis": 0.0"#);
    assert_fails_alone(&case, "zp", "`axis`: 0.0 is not an integer");
}

#[test]
fn integer_tensor_data_that_is_not_an_integer_is_refused() {
    let case = GOOD.replace("[10, 11, 8]", "[10, 11.5, 8]");
    assert_fails_alone(
        &case,
        "good",
        "`expected.q`: data[1]: 11.5 is not an integer",
    );
}

#[test]
fn integer_input_outside_the_dtype_is_refused() {
    let case = r#"{"id": "dq", "op": "dequantize_per_tensor", "dtype": "quint8", "scale": 1.0, "zero_point": 0, "q": {"shape": [2], "data": [1, 256]}, "expected": {"x": {"shape": [2], "data": [1.0, 0.0]}}}"#;
    assert_fails_alone(case, "dq", "`q` holds 256, outside quint8 (0..=255)");
}

#[test]
fn negative_shape_is_refused() {
    let case = GOOD.replace(r#""x": {"shape": [3]"#, r#""x": {"shape": [-3]"#);
    assert_fails_alone(&case, "good", "`x`: shape[0]: -3 is out of range for usize");
}

#[test]
fn shape_and_data_length_mismatch_is_refused() {
    let case = GOOD.replace(r#""x": {"shape": [3]"#, r#""x": {"shape": [4]"#);
    assert_fails_alone(&case, "good", "`x`: shape [4] holds 4 values, data has 3");
    let case = GOOD.replace(
        r#""x": {"shape": [3]"#,
        r#""x": {"shape": [4294967296, 4294967296]"#,
    );
    assert_fails_alone(&case, "good", "more elements than usize holds");
}

#[test]
fn float_data_that_is_not_an_exact_f32_is_refused() {
    // 0.1 rounds to the f32 0.100000001490116..., which would quantize like 0.1.
    let case = GOOD.replace("[0.0, 0.5, -1.0]", "[0.0, 0.1, -1.0]");
    assert_fails_alone(&case, "good", "`x`: data[1]: 0.1 is not exactly an f32");
}

#[test]
fn scale_that_is_not_an_exact_f32_is_refused() {
    let case = GOOD.replace(r#""scale": 0.5"#, r#""scale": 0.1"#);
    assert_fails_alone(&case, "good", "`scale`: 0.1 is not exactly an f32");
    let case = per_channel_quantize("[0, 0]").replace("[1.0, 1.0]", "[1.0, 0.3]");
    assert_fails_alone(&case, "zp", "`scales`: [1]: 0.3 is not exactly an f32");
}

#[test]
fn fusion_groups_beyond_usize_are_refused() {
    let case = r#"{"id": "g", "op": "fuse_conv_bn", "groups": -1, "transpose": true, "conv_weight": {"shape": [1, 1, 1], "data": [1.0]}, "conv_bias": null, "bn_running_mean": {"shape": [1], "data": [0.0]}, "bn_running_var": {"shape": [1], "data": [1.0]}, "bn_eps": 0.0, "bn_weight": null, "bn_bias": null, "expected": {"weight": {"shape": [1, 1, 1], "data": [1.0]}, "bias": {"shape": [1], "data": [0.0]}}}"#;
    assert_fails_alone(case, "g", "`groups`: -1 is out of range for usize");
    let case = case.replace(r#""groups": -1, "transpose": true"#, r#""transpose": 1"#);
    assert_fails_alone(&case, "g", "`transpose` is not a boolean");
}
