//! `qnumeric compare` and `qnumeric diagnose` end to end, on `.safetensors` dumps this test
//! writes (the digits model's per-layer outputs for the diagnosis): good files (with
//! and without the `order` key), `--json`, `--per-sample`, skipped tensors (one file only,
//! mismatched shapes, non-float dtype, NaN), a missing, a truncated and a corrupt file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::{ArrayD, Axis, IxDyn};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qnumeric"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8")
}

/// A scratch directory of this test (removed first, so reruns start clean).
fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qnumeric-cli-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn data(shape: &[usize], seed: u32) -> ArrayD<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % 2000) as f32 / 1000.0 - 1.0
    })
}

enum T {
    F32(ArrayD<f32>),
    F16(ArrayD<f32>),
    I32(Vec<usize>),
}

fn write(path: &Path, tensors: &[(&str, T)], order: Option<&str>) {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| match t {
            T::F32(a) => (
                n.to_string(),
                Dtype::F32,
                a.shape().to_vec(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            T::F16(a) => (
                n.to_string(),
                Dtype::F16,
                a.shape().to_vec(),
                a.iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
            T::I32(shape) => (
                n.to_string(),
                Dtype::I32,
                shape.clone(),
                vec![0u8; 4 * shape.iter().product::<usize>()],
            ),
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    let meta = order.map(|o| HashMap::from([("order".to_string(), o.to_string())]));
    safetensors::serialize_to_file(views, meta, path).expect("write");
}

struct Pair {
    float: PathBuf,
    quant: PathBuf,
    stem: ArrayD<f32>,
    stem_q: ArrayD<f32>,
}

/// Dumps of five compared layers and four that cannot be compared.
fn pair(name: &str, order: Option<&str>) -> Pair {
    let d = dir(name);
    let stem = data(&[6, 2, 3], 1);
    let stem_q = stem.mapv(|v| (v * 16.0).round() / 16.0);
    let body = data(&[6, 8], 2);
    let body_q = &body + &data(&[6, 8], 3).mapv(|v| v * 0.05);
    let head = data(&[6, 4], 4);
    // exactly representable in f16 on both sides: lossless
    let head16 = head.mapv(|v| half::f16::from_f32(v).to_f32());
    let mut nan = data(&[6, 2], 5);
    nan[[2, 1]] = f32::NAN;
    let float = d.join("float.safetensors");
    let quant = d.join("quant.safetensors");
    write(
        &float,
        &[
            ("stem", T::F32(stem.clone())),
            ("body", T::F32(body.clone())),
            ("head", T::F32(head16.clone())),
            ("zeta", T::F32(body.clone())),
            ("alpha", T::F32(body.clone())),
            ("only_float", T::F32(body.clone())),
            ("mismatch", T::F32(data(&[6, 4], 6))),
            ("ints", T::I32(vec![6, 3])),
            ("nan", T::F32(nan.clone())),
        ],
        order,
    );
    write(
        &quant,
        &[
            ("stem", T::F32(stem_q.clone())),
            ("body", T::F32(body_q)),
            ("head", T::F16(head16)),
            ("zeta", T::F32(body.mapv(|v| v * 0.5))),
            ("alpha", T::F32(body.mapv(|v| v * 0.9))),
            ("only_quant", T::F32(body)),
            ("mismatch", T::F32(data(&[6, 5], 6))),
            ("ints", T::I32(vec![6, 3])),
            ("nan", T::F32(data(&[6, 2], 5))),
        ],
        None,
    );
    Pair {
        float,
        quant,
        stem,
        stem_q,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).expect("one JSON object")
}

#[test]
fn compare_text_table_in_metadata_order() {
    let p = pair("text", Some("stem, body ,head,alpha,zeta,ghost"));
    let o = run(&["compare", s(&p.float), s(&p.quant)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    println!("{out}");
    let pos = |n: &str| {
        out.lines()
            .position(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("{n} in {out}"))
    };
    assert!(pos("stem") < pos("body") && pos("body") < pos("head"));
    assert!(pos("head") < pos("alpha") && pos("alpha") < pos("zeta"));
    assert!(out.contains("<- worst"));
    assert!(out.contains("order: `order` metadata"));
    for (name, reason) in [
        ("only_float", "only in the float file"),
        ("only_quant", "only in the quantized file"),
        ("mismatch", "shapes differ: [6, 4] vs [6, 5]"),
        ("ints", "non-float dtype I32 in the float file"),
        ("nan", "NaN at flat index 5"),
        ("ghost", "listed in `order` but in neither file"),
    ] {
        assert!(
            out.contains(&format!("  {name}: {reason}")),
            "{name}: {out}"
        );
    }
    assert!(stderr(&o).is_empty());
}

#[test]
fn compare_json_fields_and_order() {
    let p = pair("json", Some("stem,body,head"));
    let o = run(&["compare", s(&p.float), s(&p.quant), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["order"], "metadata");
    let tensors = j["tensors"].as_array().expect("tensors");
    let names: Vec<&str> = tensors.iter().filter_map(|t| t["name"].as_str()).collect();
    // listed names first, the rest by name
    assert_eq!(names, ["stem", "body", "head", "alpha", "zeta"]);
    let stem = &tensors[0];
    assert_eq!(stem["shape"], serde_json::json!([6, 2, 3]));
    for key in ["sqnr_db", "normalized_l2", "cosine", "mse", "max_abs"] {
        assert!(stem[key].is_number(), "{key}: {stem}");
    }
    assert!(stem.get("sample_sqnr_db").is_none());
    let expect = qnumeric::sqnr(&p.stem, &p.stem_q).expect("sqnr");
    let got = stem["sqnr_db"].as_f64().expect("number");
    assert!((got - expect).abs() < 1e-4, "{got} vs {expect}");
    // f16 against f32 of the same values: lossless, and infinity is a string
    assert_eq!(tensors[2]["sqnr_db"], "inf");
    // 0.9·x (rounded to f32): 20 dB
    assert!((tensors[3]["sqnr_db"].as_f64().expect("n") - 20.0).abs() < 1e-4);
    let skipped: Vec<&str> = j["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        skipped,
        ["ints", "mismatch", "nan", "only_float", "only_quant"]
    );
    assert!(j["skipped"][0]["reason"].is_string());
    assert_eq!(j["worst"], "zeta");
    assert!(j.get("largest_drop").is_some() && j.get("first_below").is_some());
}

#[test]
fn compare_per_sample() {
    let p = pair("per-sample", None);
    let o = run(&[
        "compare",
        s(&p.float),
        s(&p.quant),
        "--json",
        "--per-sample",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["order"], "name");
    let tensors = j["tensors"].as_array().expect("tensors");
    let names: Vec<&str> = tensors.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["alpha", "body", "head", "stem", "zeta"]);
    let stem = &tensors[3];
    let per = stem["sample_sqnr_db"].as_array().expect("per sample");
    assert_eq!(per.len(), 6);
    for (i, v) in per.iter().enumerate() {
        let x = p.stem.index_axis(Axis(0), i);
        let y = p.stem_q.index_axis(Axis(0), i);
        let expect = qnumeric::sqnr(&x, &y).expect("sqnr");
        let got = v.as_f64().expect("number");
        assert!((got - expect).abs() < 1e-4, "sample {i}: {got} vs {expect}");
    }
    let text = run(&["compare", s(&p.float), s(&p.quant), "--per-sample"]);
    assert!(text.status.success());
    let out = stdout(&text);
    assert!(
        out.contains("per sample:") && out.contains("worst samples"),
        "{out}"
    );
}

#[test]
fn unreadable_input_is_one_line_and_exit_code_2() {
    let p = pair("unreadable", None);
    let d = p.float.parent().expect("dir").to_path_buf();
    let missing = d.join("missing.safetensors");
    let bytes = std::fs::read(&p.float).expect("read");
    let truncated = d.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let corrupt = d.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"this is not a safetensors file").expect("write");
    let empty = d.join("empty.safetensors");
    std::fs::write(&empty, b"").expect("write");
    for (bad, first) in [
        (&missing, true),
        (&truncated, false),
        (&corrupt, true),
        (&empty, false),
    ] {
        let args = if first {
            ["compare", s(bad), s(&p.quant)]
        } else {
            ["compare", s(&p.float), s(bad)]
        };
        let o = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", bad.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(s(bad)), "{err}");
        assert!(err.starts_with("qnumeric: "), "{err}");
        assert!(stdout(&o).is_empty());
    }
    // Usage errors come from the parser, also with code 2.
    let o = run(&["compare", s(&p.float)]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["--version"]);
    assert!(o.status.success());
}

#[test]
fn threshold_option() {
    let p = pair("threshold", Some("stem,body,head,alpha,zeta"));
    let o = run(&[
        "compare",
        s(&p.float),
        s(&p.quant),
        "--json",
        "--threshold",
        "100",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["first_below"]["layer"], "stem");
    assert_eq!(j["jump_threshold_db"], 100.0);
    let o = run(&["compare", s(&p.float), s(&p.quant), "--threshold", "nan"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

use crate::model;

use crate::faults;

/// Every layer's output of a model run (dequantized), in execution order.
fn layer_outputs<M: qnumeric::nn::Model>(m: &M, x: &ArrayD<f32>) -> Vec<(String, ArrayD<f32>)> {
    let mut out: Vec<(String, ArrayD<f32>)> = Vec::new();
    let mut hook = |name: &str,
                    _l: &dyn qnumeric::nn::Module,
                    _i: &[&qnumeric::nn::Activation],
                    y: &mut qnumeric::nn::Activation|
     -> qnumeric::Result<()> {
        if !name.starts_with("bn") && !name.starts_with("relu") {
            out.push((name.to_string(), y.to_float()));
        }
        Ok(())
    };
    m.run(qnumeric::nn::Activation::Float(x.clone()), &mut hook)
        .expect("run");
    out
}

/// Writes the float and int8 dumps of the digits model (fused) on `x`, quantized with `cfg`.
fn digits_dumps(name: &str, x: &ArrayD<f32>, cfg: &qnumeric::ptq::PtqConfig) -> (PathBuf, PathBuf) {
    let d = model::Digits::load().expect("digits");
    let mut m = d.model.clone();
    qnumeric::fusion::fuse_auto(&mut m).expect("fuse");
    let mut p = qnumeric::ptq::prepare(m.clone(), cfg).expect("prepare");
    p.calibrate(&d.calib).expect("calibrate");
    let q = p.convert().expect("convert");
    let dir = dir(name);
    let (fo, qo) = (layer_outputs(&m, x), layer_outputs(&q, x));
    let order: Vec<&str> = fo.iter().map(|(n, _)| n.as_str()).collect();
    let order = order.join(",");
    let ft: Vec<(&str, T)> = fo
        .iter()
        .map(|(n, a)| (n.as_str(), T::F32(a.clone())))
        .collect();
    let qt: Vec<(&str, T)> = qo
        .iter()
        .map(|(n, a)| (n.as_str(), T::F32(a.clone())))
        .collect();
    let (f, qp) = (dir.join("float.safetensors"), dir.join("quant.safetensors"));
    write(&f, &ft, Some(&order));
    write(&qp, &qt, Some(&order));
    (f, qp)
}

#[test]
fn diagnose_dumps_of_the_healthy_digits_model_gives_no_verdict() {
    let d = model::Digits::load().expect("digits");
    let (f, q) = digits_dumps(
        "diag-healthy",
        &d.test_x,
        &qnumeric::ptq::PtqConfig::default(),
    );
    let o = run(&["diagnose", s(&f), s(&q), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["verdict"], "fine", "{j}");
    assert!(j["first_layer"].is_null());
    assert_eq!(j["worst_samples"].as_array().map(Vec::len), Some(10));
    let layers = j["layers"].as_array().expect("layers");
    assert_eq!(layers[0]["name"], "quant");
    assert!(
        layers
            .iter()
            .all(|l| l["verdict"] == "fine" && l["evidence"]["sqnr_db"].is_number())
    );
    let text = run(&["diagnose", s(&f), s(&q)]);
    assert!(
        stdout(&text).starts_with("verdict: fine"),
        "{}",
        stdout(&text)
    );
}

#[test]
fn diagnose_dumps_names_bright_outliers_and_coarse_weights() {
    let d = model::Digits::load().expect("digits");
    let (x, bright) = faults::bright_images(&d.test_x, 20, 4.0);
    let (f, q) = digits_dumps("diag-bright", &x, &qnumeric::ptq::PtqConfig::default());
    let j = json(&run(&["diagnose", s(&f), s(&q), "--json"]));
    assert_eq!(j["verdict"], "data-sensitive", "{j}");
    assert_eq!(j["first_layer"], "quant", "{j}");
    let worst: Vec<usize> = j["worst_samples"]
        .as_array()
        .expect("worst")
        .iter()
        .map(|v| v.as_u64().expect("index") as usize)
        .collect();
    assert!(worst.iter().all(|w| bright.contains(w)), "{worst:?}");

    let cfg = faults::coarse_weights("conv2").expect("config");
    let (f, q) = digits_dumps("diag-coarse", &d.test_x, &cfg);
    let j = json(&run(&["diagnose", s(&f), s(&q), "--json"]));
    assert_eq!(j["verdict"], "data-insensitive", "{j}");
    assert_eq!(j["first_layer"], "conv2", "{j}");

    // --html writes the page beside the text report.
    let page = f.with_file_name("diagnosis.html");
    let o = run(&["diagnose", s(&f), s(&q), "--html", s(&page)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).expect("page written");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("conv2"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    let o = run(&["diagnose", s(&f), s(&q), "--html", "/no/such/dir/page.html"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn diagnose_with_a_missing_file_fails_with_one_line() {
    let o = run(&[
        "diagnose",
        "/no/such/float.safetensors",
        "/no/such/quant.safetensors",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

/// A dump pair whose quantized `bad` layer holds NaN and inf (the float one is finite).
fn nan_pair(name: &str, order: Option<&str>) -> (PathBuf, PathBuf) {
    let d = dir(name);
    let x = data(&[8, 4], 11).mapv(|v| v + 2.0);
    let mut bad = x.mapv(|v| v * 1.001);
    bad[[2, 1]] = f32::NAN;
    bad[[5, 0]] = f32::INFINITY;
    let (float, quant) = (d.join("float.safetensors"), d.join("quant.safetensors"));
    write(
        &float,
        &[
            ("good", T::F32(x.clone())),
            ("bad", T::F32(x.clone())),
            ("exact", T::F32(x.clone())),
        ],
        order,
    );
    write(
        &quant,
        &[
            ("good", T::F32(x.mapv(|v| v * 1.001))),
            ("bad", T::F32(bad)),
            ("exact", T::F32(x)),
        ],
        None,
    );
    (float, quant)
}

#[test]
fn diagnose_reports_nan_in_a_quantized_layer_as_an_implementation_finding() {
    let (f, q) = nan_pair("nan-finding", Some("good,bad,exact"));
    let o = run(&["diagnose", s(&f), s(&q)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("verdict: implementation"), "{out}");
    assert!(
        out.contains("first layer with a finding of its own: bad"),
        "{out}"
    );
    assert!(
        out.contains("headline (own error hurts most): bad"),
        "{out}"
    );
    assert!(
        out.contains("1 NaN and 1 infinite values in 2 samples"),
        "{out}"
    );
    let o = run(&["diagnose", s(&f), s(&q), "--json"]);
    let j = json(&o);
    assert_eq!(j["verdict"], "implementation");
    let bad = &j["layers"][1];
    assert_eq!(bad["name"], "bad");
    assert_eq!(bad["non_finite"]["nan"], 1);
    assert_eq!(bad["non_finite"]["pos_inf"], 1);
    assert_eq!(bad["evidence"]["sqnr_db"], "-inf");
    // lossless: "inf", as `compare --json` writes it
    assert_eq!(j["layers"][2]["evidence"]["sqnr_db"], "inf");
    assert_eq!(j["skipped"], serde_json::json!([]));
    // compare lists it too, at -inf, instead of skipping it
    let c = json(&run(&["compare", s(&f), s(&q), "--json"]));
    assert_eq!(c["tensors"][1]["name"], "bad");
    assert_eq!(c["tensors"][1]["sqnr_db"], "-inf");
}

#[test]
fn diagnose_refuses_a_nan_or_infinite_threshold() {
    let (f, q) = nan_pair("nan-threshold", None);
    for t in ["nan", "inf", "-inf"] {
        let o = run(&["diagnose", s(&f), s(&q), &format!("--threshold={t}")]);
        assert_eq!(o.status.code(), Some(2), "{t}: {}", stdout(&o));
        assert!(stderr(&o).contains("min_sqnr_db"), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1);
    }
}

#[test]
fn order_metadata_as_a_json_array_keeps_commas_and_spaces_in_names() {
    let d = dir("order-json");
    let x = data(&[4, 3], 12);
    let (f, q) = (d.join("float.safetensors"), d.join("quant.safetensors"));
    let names = ["z,with comma", " padded ", "a"];
    let tensors: Vec<(&str, T)> = names.iter().map(|n| (*n, T::F32(x.clone()))).collect();
    write(&f, &tensors, Some(r#"["z,with comma", " padded ", "a"]"#));
    write(&q, &tensors, None);
    let j = json(&run(&["compare", s(&f), s(&q), "--json"]));
    assert_eq!(j["order"], "metadata");
    let got: Vec<&str> = j["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(got, names);
    // a corrupt JSON order is an error of the file, not a silent reordering
    write(&f, &tensors, Some(r#"["a", 3"#));
    let o = run(&["compare", s(&f), s(&q)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`order`"), "{}", stderr(&o));
}

/// The tiny BERT's v2 dumps as files: float, int8, int8 with one Linear on 3 bits.
fn bert_files(name: &str, target: &str) -> (PathBuf, PathBuf, PathBuf) {
    use crate::tiny_bert::{BertConfig, DumpOptions, Quantization, bert_dump};
    let d = dir(name);
    let cfg = BertConfig::tiny();
    let healthy = bert_dump(&cfg, &DumpOptions::full(Quantization::Dynamic)).expect("dump");
    let faulty = bert_dump(
        &cfg,
        &DumpOptions {
            inject_bits: Some((target.to_string(), 3)),
            ..DumpOptions::full(Quantization::Dynamic)
        },
    )
    .expect("dump");
    let (f, q, b) = (
        d.join("float.safetensors"),
        d.join("int8-3bit.safetensors"),
        d.join("int8.safetensors"),
    );
    std::fs::write(&f, &healthy.float).expect("write");
    std::fs::write(&q, &faulty.quant).expect("write");
    std::fs::write(&b, &healthy.quant).expect("write");
    (f, q, b)
}

#[test]
fn diagnose_a_v2_transformer_dump_names_the_layer_and_its_remedies() {
    let target = "encoder.layer.1.attention.output.dense";
    let (f, q, b) = bert_files("bert-v2", target);
    let o = run(&["diagnose", s(&f), s(&q), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["version"], "v2");
    assert_eq!(j["masked"], true);
    assert_eq!(j["headline"], target);
    assert_eq!(j["first_layer"], target);
    let top = &j["remedies"][0];
    assert_eq!(top["layer"], target);
    assert_eq!(top["kind"], "weight-bits");
    assert_eq!(top["scope"], "local");
    assert!(top["gain_db"].as_f64().is_some_and(|g| g > 10.0), "{top}");
    let layer = j["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["name"] == target)
        .expect("the layer");
    assert_eq!(layer["verdict"], "data-insensitive");
    assert_eq!(layer["own"]["source"], "shadow");
    // text, tokens as samples, and against the healthy int8 dump
    let o = run(&[
        "diagnose",
        s(&f),
        s(&q),
        "--sample-dims",
        "2",
        "--baseline",
        s(&b),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("headline (own error hurts most): {target}")),
        "{out}"
    );
    assert!(out.contains("samples: every real (n, t) position"), "{out}");
    assert!(out.contains(&format!("most changed: {target}")), "{out}");
    assert!(out.contains("remedies (best first):"), "{out}");
    // worst samples named n:t
    let worst = out
        .lines()
        .find(|l| l.starts_with("worst samples: "))
        .expect("worst samples");
    assert!(worst.contains(':'), "{worst}");
    // bad options exit 2 with one line
    for bad in [
        vec!["--sample-dims", "3"],
        vec!["--min-gain", "nan"],
        vec!["--baseline", "/nonexistent.safetensors"],
    ] {
        let mut args = vec!["diagnose", s(&f), s(&q)];
        args.extend(bad.iter().copied());
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stdout(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
}
