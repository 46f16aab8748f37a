//! The Numeric Suite: the digits model against PyTorch's figures, a caller's residual graph,
//! the push API without a model, streaming sums against the metrics on the concatenation,
//! storing, custom comparisons, reports and every error path.

use ndarray::{Array2, ArrayD, Axis, Dimension, IxDyn, concatenate};
use proptest::prelude::*;
use qnumeric::nn::{
    Activation, Add, DeQuantStub, LayerHook, Linear, Model, Module, QuantStub, Sequential,
};
use qnumeric::ns::{
    CompareOptions, Comparison, CustomComparison, ErrorStats, LayerFilter, LogMode,
    ModelComparator, NsReport, NumericLog, ROUNDING_FLOOR_QUANTA, compare_models,
    compare_weight_tensors, compare_weights, per_batch,
};
use qnumeric::ptq::{PtqConfig, QConfig, prepare};
use qnumeric::{QDType, QParams, QuantError, Result};

#[cfg(feature = "safetensors")]
use crate::model;

/// Deterministic values in `[-1, 1)`.
fn data(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    })
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

// ---------------------------------------------------------------------------------------
// The digits model, against PyTorch's compare_model_outputs / compare_weights figures.

#[cfg(feature = "safetensors")]
mod digits {
    use super::model::Digits;
    use super::*;
    use qnumeric::fusion::fuse_modules;
    use std::sync::OnceLock;

    pub struct Setup {
        pub d: Digits,
        pub fused: Sequential,
        pub int8: Sequential,
    }

    pub fn setup() -> &'static Setup {
        static S: OnceLock<Setup> = OnceLock::new();
        S.get_or_init(|| {
            let d = Digits::load().expect("digits data");
            let mut fused = d.model.clone();
            fuse_modules(
                &mut fused,
                &[
                    &["conv1", "bn1", "relu1"],
                    &["conv2", "bn2", "relu2"],
                    &["fc1", "relu3"],
                ],
            )
            .expect("fusion");
            let mut prepared = prepare(fused.clone(), &PtqConfig::default()).expect("prepare");
            prepared.calibrate(&d.calib).expect("calibrate");
            let int8 = prepared.convert().expect("convert");
            Setup { d, fused, int8 }
        })
    }

    pub fn report() -> &'static NsReport {
        static R: OnceLock<NsReport> = OnceLock::new();
        R.get_or_init(|| {
            let s = setup();
            // 5 batches of 100: the streamed figures are those of the 500 images.
            let batches =
                s.d.test_x
                    .axis_chunks_iter(Axis(0), 100)
                    .map(|b| b.to_owned());
            compare_models(&s.fused, &s.int8, batches, CompareOptions::default()).expect("compare")
        })
    }

    #[test]
    fn digits_cumulative_sqnr_within_1_db_of_pytorch() {
        let s = setup();
        let r = report();
        for layer in ["quant", "conv1", "conv2", "fc2"] {
            let ours = r
                .sqnr_db(layer, Comparison::Cumulative)
                .expect("cumulative");
            let local = r.sqnr_db(layer, Comparison::Local).expect("local");
            let pt = s.d.pytorch(&["output_sqnr_db", &format!("{layer}.stats")]);
            println!("{layer}: cumulative {ours:.3} dB (PyTorch {pt:.3} dB), local {local:.3} dB");
            assert!((ours - pt).abs() <= 1.0, "{layer}: {ours} vs {pt}");
            assert!(local.is_finite() && local > 0.0, "{layer}: local {local}");
        }
        // The quantize layer's own error is all it has.
        assert_eq!(
            r.sqnr_db("quant", Comparison::Local),
            r.sqnr_db("quant", Comparison::Cumulative)
        );
        // Local error of the convolutions: about the rounding floor of their outputs.
        for layer in ["conv1", "conv2", "fc1", "fc2"] {
            let l = r
                .layer(layer)
                .and_then(|l| l.local.as_ref())
                .expect("local");
            let q = l.rms_quanta.expect("quantized output");
            println!("{layer}: local {q:.3} quanta RMS (floor {ROUNDING_FLOOR_QUANTA:.3})");
            assert!(q < 2.0 * ROUNDING_FLOOR_QUANTA, "{layer}: {q}");
        }
        // Identity layers left by fusion are not logged; the others are, in execution order.
        let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "quant", "conv1", "conv2", "pool", "flatten", "fc1", "fc2", "dequant"
            ]
        );
        assert_eq!(
            r.layer("conv1").and_then(|l| l.kind.as_deref()),
            Some("QuantizedConvReLU2d")
        );
    }

    #[test]
    fn digits_weight_sqnr_within_001_db_of_pytorch() {
        let s = setup();
        let r = report();
        for (layer, key) in [
            ("conv1", "conv1.weight"),
            ("conv2", "conv2.weight"),
            ("fc1", "fc1._packed_params._packed_params"),
            ("fc2", "fc2._packed_params._packed_params"),
        ] {
            let w = r
                .layer(layer)
                .and_then(|l| l.weight.as_ref())
                .expect("weight");
            let pt = s.d.pytorch(&["weight_sqnr_db", key]);
            println!(
                "{layer}: weight {:.4} dB (PyTorch {pt:.4} dB), {} channels, worst channel {:?}",
                w.sqnr_db,
                w.channels.len(),
                w.worst_channel()
            );
            assert!(
                (w.sqnr_db - pt).abs() <= 0.01,
                "{layer}: {} vs {pt}",
                w.sqnr_db
            );
            assert_eq!(w.channels.len(), w.shape[0]);
        }
        // The same through compare_weights directly.
        let direct = compare_weights(&s.fused, &s.int8).expect("weights");
        let names: Vec<&str> = direct.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["conv1", "conv2", "fc1", "fc2"]);
    }

    #[test]
    fn digits_first_jump_is_named() {
        let r = report();
        let drop = r.largest_drop().expect("a drop");
        assert_eq!(drop.layer, "conv1");
        assert_eq!(drop.previous.as_deref(), Some("quant"));
        assert!(drop.drop_db.expect("drop") > 5.0);
        // Healthy int8 model: nothing below the default 20 dB; a caller's threshold names
        // the first layer under it.
        assert!(r.first_below_threshold().is_none());
        assert_eq!(r.first_below(40.0).expect("below 40").layer, "conv1");
        assert_eq!(r.first_below(36.0).expect("below 36").layer, "conv2");
        let text = r.to_string();
        println!("{text}");
        assert!(text.contains("largest drop: conv1"), "{text}");
        assert!(text.contains("<- worst"), "{text}");
    }

    #[test]
    fn digits_per_sample_sqnr_covers_every_image() {
        let s = setup();
        let r = report();
        let fc2 = r
            .layer("fc2")
            .and_then(|l| l.cumulative.as_ref())
            .expect("fc2");
        assert_eq!(fc2.samples.len(), 500);
        assert_eq!(fc2.shape, [500, 10]);
        // Sample 7's figure is the SQNR of image 7's logits alone.
        let f = s
            .fused
            .forward(Activation::Float(
                s.d.test_x.slice_axis(Axis(0), (7..8).into()).to_owned(),
            ))
            .expect("float")
            .into_float();
        let q = s
            .int8
            .forward(Activation::Float(
                s.d.test_x.slice_axis(Axis(0), (7..8).into()).to_owned(),
            ))
            .expect("int8")
            .into_float();
        let one = qnumeric::sqnr(&f, &q).expect("sqnr");
        assert!(
            (fc2.samples[7].sqnr_db - one).abs() < 1e-3,
            "{} vs {one}",
            fc2.samples[7].sqnr_db
        );
        let worst = fc2.worst_samples(3);
        assert!(fc2.samples[worst[0]].sqnr_db <= fc2.samples[worst[1]].sqnr_db);
        let median = fc2.sample_sqnr_percentile(50.0).expect("median");
        assert!(median > fc2.samples[worst[0]].sqnr_db);
        assert!(r.sample_table(Comparison::Cumulative, 3).contains("fc2"));
    }

    #[test]
    fn one_batch_and_five_batches_agree() {
        let s = setup();
        let one = compare_models(
            &s.fused,
            &s.int8,
            [s.d.test_x.clone()],
            CompareOptions::default()
                .weights(false)
                .only(&["conv2", "fc2"]),
        )
        .expect("compare");
        let five = report();
        for layer in ["conv2", "fc2"] {
            for which in [Comparison::Cumulative, Comparison::Local] {
                let (a, b) = (
                    one.sqnr_db(layer, which).expect("one"),
                    five.sqnr_db(layer, which).expect("five"),
                );
                assert!(rel(a, b) < 1e-6, "{layer} {which:?}: {a} vs {b}");
            }
        }
        assert_eq!(one.layers.len(), 2);
    }
}

// ---------------------------------------------------------------------------------------
// A caller's own graph with a residual join.

/// `quant → fc1 (ReLU) → fc2 → add(quant output, fc2 output) → dequant`: written here, not
/// one of the crate's containers.
#[derive(Debug, Clone)]
struct Residual {
    layers: Vec<(String, Box<dyn Module>)>,
}

impl Residual {
    fn new() -> Self {
        let w1 = ArrayD::from_shape_fn(IxDyn(&[8, 8]), |i| {
            ((i[0] * 3 + i[1]) % 5) as f32 * 0.2 - 0.4
        });
        let w2 = ArrayD::from_shape_fn(IxDyn(&[8, 8]), |i| {
            ((i[0] + 2 * i[1]) % 7) as f32 * 0.1 - 0.3
        });
        let layers: Vec<(String, Box<dyn Module>)> = vec![
            ("quant".into(), Box::new(QuantStub)),
            (
                "fc1".into(),
                Box::new(Linear::new(w1, None).expect("fc1").with_relu()),
            ),
            (
                "fc2".into(),
                Box::new(Linear::new(w2, Some(ArrayD::from_elem(IxDyn(&[8]), 0.1))).expect("fc2")),
            ),
            ("add".into(), Box::new(Add)),
            ("dequant".into(), Box::new(DeQuantStub)),
        ];
        Residual { layers }
    }
}

impl Model for Residual {
    fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|(n, _)| n.clone()).collect()
    }

    fn layer(&self, name: &str) -> Option<&dyn Module> {
        self.layers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.as_ref())
    }

    fn replace_layer(&mut self, name: &str, layer: Box<dyn Module>) -> Result<Box<dyn Module>> {
        let slot = self
            .layers
            .iter_mut()
            .find(|(n, _)| n == name)
            .ok_or(QuantError::NotFound {
                op: "Residual::replace_layer",
                what: "layer",
                name: name.to_string(),
            })?;
        Ok(std::mem::replace(&mut slot.1, layer))
    }

    fn run(&self, input: Activation, hook: &mut dyn LayerHook) -> Result<Activation> {
        let mut step = |name: &str, inputs: &[&Activation]| -> Result<Activation> {
            let layer = self.layer(name).ok_or(QuantError::NotFound {
                op: "Residual::run",
                what: "layer",
                name: name.to_string(),
            })?;
            let mut y = layer.forward_many(inputs)?;
            hook.after_layer(name, layer, inputs, &mut y)?;
            Ok(y)
        };
        let x = step("quant", &[&input])?;
        let a = step("fc1", &[&x])?;
        let b = step("fc2", &[&a])?;
        let s = step("add", &[&x, &b])?;
        step("dequant", &[&s])
    }
}

fn residual_pair() -> (Residual, Residual, ArrayD<f32>) {
    let float = Residual::new();
    let x = data(&[64, 8], 3);
    let mut prepared =
        prepare(float.clone(), &PtqConfig::new(QConfig::x86_min_max())).expect("prepare");
    prepared.calibrate(&x).expect("calibrate");
    let int8 = prepared.convert().expect("convert");
    (float, int8, x)
}

#[test]
fn callers_residual_graph_cumulative_and_local() {
    let (float, int8, x) = residual_pair();
    let batches: Vec<ArrayD<f32>> = x
        .axis_chunks_iter(Axis(0), 16)
        .map(|b| b.to_owned())
        .collect();
    let r = compare_models(&float, &int8, batches, CompareOptions::default()).expect("compare");
    let names: Vec<&str> = r.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["quant", "fc1", "fc2", "add", "dequant"]);
    for l in &r.layers {
        let c = l.cumulative.as_ref().expect("cumulative");
        assert_eq!(c.samples.len(), 64, "{}", l.name);
        let local = l.local.as_ref().expect("local");
        println!(
            "{}: cumulative {:.2} dB, local {:.2} dB",
            l.name, c.sqnr_db, local.sqnr_db
        );
    }
    assert_eq!(
        r.layer("add").and_then(|l| l.kind.as_deref()),
        Some("QuantizedAdd")
    );
    // The add's own error (its twin on both dequantized inputs) is rounding only; what it
    // inherits is more.
    let add = r.layer("add").expect("add");
    let (cum, loc) = (
        add.sqnr_db(Comparison::Cumulative).expect("c"),
        add.sqnr_db(Comparison::Local).expect("l"),
    );
    assert!(loc > cum, "local {loc} vs cumulative {cum}");
    let q = add
        .local
        .as_ref()
        .and_then(|c| c.rms_quanta)
        .expect("quanta");
    assert!(q <= ROUNDING_FLOOR_QUANTA * 1.5, "{q}");
    // dequant is exact on its own.
    assert_eq!(r.sqnr_db("dequant", Comparison::Local), Some(f64::INFINITY));
    assert!(r.layer("fc1").and_then(|l| l.weight.as_ref()).is_some());
    // The caller's model came through unchanged.
    assert_eq!(
        float.forward(Activation::Float(x.clone())).expect("f"),
        Residual::new().forward(Activation::Float(x)).expect("f")
    );
}

/// The local figure of a layer is exactly: the float twin on the quantized model's own
/// (dequantized) input to that layer, against the quantized layer's output.
#[test]
fn local_comparison_is_the_twin_on_the_quantized_input() {
    let (float, int8, x) = residual_pair();
    let mut seen: Vec<(Activation, Activation)> = Vec::new();
    let mut hook = |name: &str, _l: &dyn Module, inputs: &[&Activation], out: &mut Activation| {
        if name == "fc2" {
            seen.push((inputs[0].clone(), out.clone()));
        }
        Ok(())
    };
    int8.run(Activation::Float(x.clone()), &mut hook)
        .expect("run");
    let (input, output) = &seen[0];
    let twin = float
        .layer("fc2")
        .expect("fc2")
        .forward(&Activation::Float(input.to_float()))
        .expect("twin")
        .into_float();
    let expect = qnumeric::sqnr(&twin, &output.to_float()).expect("sqnr");
    let mut cmp = ModelComparator::new(
        &float,
        &int8,
        CompareOptions::default().cumulative(false).weights(false),
    )
    .expect("comparator");
    cmp.run(x).expect("run");
    let got = cmp.local_log().stats("fc2").expect("fc2").sqnr_db();
    assert!(rel(got, expect) < 1e-5, "{got} vs {expect}");
    assert!(cmp.cumulative_log().is_empty());
}

#[test]
fn comparator_options_select_and_switch_layers() {
    let (float, int8, x) = residual_pair();
    let mut cmp = ModelComparator::new(
        &float,
        &int8,
        CompareOptions::default().skip("dequant").weights(false),
    )
    .expect("comparator");
    cmp.set_enabled("fc2", false);
    cmp.run(x.clone()).expect("run");
    cmp.set_enabled("fc2", true);
    cmp.run(x.clone()).expect("run");
    let r = cmp.report().expect("report");
    assert!(r.layer("dequant").is_none());
    let fc2 = r
        .layer("fc2")
        .and_then(|l| l.cumulative.as_ref())
        .expect("fc2");
    assert_eq!(fc2.batches, 1);
    assert_eq!(
        r.layer("fc1")
            .and_then(|l| l.cumulative.as_ref())
            .map(|c| c.batches),
        Some(2)
    );
    let (cum, loc) = cmp.into_logs();
    assert_eq!(cum.layer_names(), ["quant", "fc1", "add", "fc2"]);
    assert!(loc.len() >= 3);

    let all = CompareOptions::default().all_layers();
    assert_eq!(all.layers, LayerFilter::All);
    let only = compare_models(
        &float,
        &int8,
        [x],
        CompareOptions::default().only(&["add"]).local(false),
    )
    .expect("compare");
    assert_eq!(only.layers.len(), 1);
    assert!(only.layers[0].local.is_none() && only.layers[0].cumulative.is_some());
    assert!(only.layers[0].weight.is_none()); // an add has no weight
}

#[test]
fn storing_mode_through_models_keeps_tensors() {
    let (float, int8, x) = residual_pair();
    let mut cmp = ModelComparator::new(
        &float,
        &int8,
        CompareOptions::default().storing(1 << 20).only(&["fc1"]),
    )
    .expect("comparator");
    cmp.run(x.clone()).expect("run");
    cmp.run(x).expect("run");
    let (cum, loc) = cmp.into_logs();
    assert_eq!(cum.stored("fc1").len(), 2);
    assert_eq!(loc.stored("fc1").len(), 2);
    assert_eq!(cum.stored("fc1")[0].float.shape(), [64, 8]);
    assert_eq!(cum.mode(), LogMode::Storing { max_bytes: 1 << 20 });
}

// ---------------------------------------------------------------------------------------
// No model: the push API.

#[test]
fn push_pairs_without_a_model() {
    // An "engine" of our own: three layers, outputs produced here, quantized by hand.
    let qp = QParams::new(0.02, 10, QDType::QUInt8).expect("qp");
    let mut log = NumericLog::streaming();
    for batch in 0..6u64 {
        let a = data(&[4, 3, 5], batch);
        let b = data(&[4, 7], 100 + batch).mapv(|v| v * 3.0);
        let qa = a.mapv(|v| ((v / 0.02).round() + 10.0).clamp(0.0, 255.0) - 10.0) * 0.02;
        let qb = b.mapv(|v| v + 0.01);
        log.push("stem", &a, &qa, Some(&qp)).expect("stem");
        log.push("head", &b, &qb, None).expect("head");
        // f64 data and a transposed (non-contiguous) view are fine.
        let c = data(&[5, 4], 200 + batch).mapv(f64::from);
        log.push("tail", &c.t(), &c.t().mapv(|v| v * 0.99), None)
            .expect("tail");
    }
    assert_eq!(log.layer_names(), ["stem", "head", "tail"]);
    let stem = log.comparison("stem").expect("stem");
    assert_eq!(stem.samples.len(), 24);
    assert_eq!(stem.shape, [24, 3, 5]);
    // -0.2 is representable; values under it are clipped (all data is in [-1, 1)).
    let clipped = stem.clipped_fraction.expect("quantized");
    assert!(clipped > 0.3 && clipped < 0.5, "{clipped}");
    let head = log.comparison("head").expect("head");
    assert!(
        (head.mean_error + 0.01).abs() < 1e-6,
        "bias {}",
        head.mean_error
    );
    assert!((head.max_abs - 0.01).abs() < 1e-6);
    assert_eq!(head.rms_quanta, None);
    let tail = log.comparison("tail").expect("tail");
    assert_eq!(tail.shape, [24, 5]);
    assert_eq!(tail.samples.len(), 24);
    // 0.99·x everywhere: 40 dB for every sample.
    assert!(tail.samples.iter().all(|s| (s.sqnr_db - 40.0).abs() < 1e-9));
    let report = log.report();
    assert_eq!(report.worst().map(|l| l.name.as_str()), Some("stem"));
    println!("{report}");
    let csv = report.to_csv();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.lines().any(|l| l.starts_with("stem,,cumulative,")));
}

/// The streamed figures equal the metrics on the concatenation of the batches.
#[test]
fn streaming_equals_metrics_on_the_concatenation() {
    let batches: Vec<(ArrayD<f32>, ArrayD<f32>)> = (0..7u64)
        .map(|i| {
            let x = data(&[3 + i as usize, 17], i);
            let y = &x + &data(&[3 + i as usize, 17], 50 + i).mapv(|v| v * 0.01);
            (x, y)
        })
        .collect();
    let mut stats = ErrorStats::new();
    for (x, y) in &batches {
        stats.update(x, y, None).expect("update");
    }
    let xs: Vec<_> = batches.iter().map(|(x, _)| x.view()).collect();
    let ys: Vec<_> = batches.iter().map(|(_, y)| y.view()).collect();
    let x = concatenate(Axis(0), &xs).expect("concat");
    let y = concatenate(Axis(0), &ys).expect("concat");
    // Exact f64 reference on the concatenation.
    let (mut sxx, mut syy, mut sxy, mut sdd, mut sd, mut mx) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0f64);
    for (a, b) in x.iter().zip(y.iter()) {
        let (u, v) = (f64::from(*a), f64::from(*b));
        sxx += u * u;
        syy += v * v;
        sxy += u * v;
        sdd += (u - v) * (u - v);
        sd += u - v;
        mx = mx.max((u - v).abs());
    }
    let n = x.len() as f64;
    let exact = [
        20.0 * (sxx.sqrt() / sdd.sqrt()).log10(),
        (sdd / sxx).sqrt(),
        sxy / (sxx.sqrt() * syy.sqrt()),
        sdd / n,
        mx,
        sd / n,
    ];
    let ours = [
        stats.sqnr_db(),
        stats.normalized_l2(),
        stats.cosine(),
        stats.mse(),
        stats.max_abs(),
        stats.mean_error(),
    ];
    for (i, (a, b)) in ours.iter().zip(exact).enumerate() {
        assert!(rel(*a, b) < 1e-9, "metric {i}: {a} vs {b}");
    }
    // The crate's metrics (f32 lanes inside blocks) agree to their own precision.
    let crate_metrics = [
        qnumeric::sqnr(&x, &y).expect("m"),
        qnumeric::normalized_l2_error(&x, &y).expect("m"),
        qnumeric::cosine_similarity(&x, &y).expect("m"),
        qnumeric::mse(&x, &y).expect("m"),
        qnumeric::max_abs_error(&x, &y).expect("m"),
    ];
    for (i, (a, b)) in ours.iter().zip(crate_metrics).enumerate() {
        assert!(rel(*a, b) < 1e-5, "metric {i}: {a} vs crate {b}");
    }
    assert_eq!(stats.samples(), x.shape()[0]);
    assert_eq!(stats.batches(), 7);
    assert_eq!(stats.shape(), Some(vec![x.shape()[0], 17]));
    assert!(!stats.shape_varies());
}

#[test]
fn storing_cap_is_honoured() {
    let x = data(&[4, 32], 1); // 512 bytes per tensor, 1 KiB per push
    let mut log = NumericLog::storing(10 * 1024);
    for _ in 0..100 {
        log.push("a", &x, &x.mapv(|v| v * 0.5), None).expect("push");
    }
    assert_eq!(log.stored("a").len(), 10);
    assert_eq!(log.dropped_batches("a"), 90);
    assert!(log.stored_bytes() <= 10 * 1024);
    // The statistics took every batch.
    assert_eq!(log.stats("a").expect("a").batches(), 100);
    assert_eq!(log.comparison("a").expect("a").samples.len(), 400);
    // A cap of zero keeps nothing.
    let mut none = NumericLog::storing(0);
    none.push("a", &x, &x, None).expect("push");
    assert!(none.stored("a").is_empty() && none.stored_bytes() == 0);
    assert!(NumericLog::streaming().stored("a").is_empty());
}

#[test]
fn callers_comparisons_by_name() {
    struct Count(usize);
    impl CustomComparison for Count {
        fn update(
            &mut self,
            float: &ndarray::ArrayViewD<'_, f32>,
            _quant: &ndarray::ArrayViewD<'_, f32>,
        ) -> Result<()> {
            self.0 += float.len();
            Ok(())
        }
        fn values(&self) -> Vec<f64> {
            vec![self.0 as f64]
        }
    }
    let mut log = NumericLog::storing(1 << 20);
    // Multiples of 1/8, so that x + 0.25 is exact.
    let x = data(&[2, 3], 9).mapv(|v| (v * 8.0).round() / 8.0);
    log.push("early", &x, &x, None).expect("push");
    log.add_comparison("count", std::sync::Arc::new(|| Box::new(Count(0)) as _))
        .expect("add");
    log.add_comparison("max_abs", per_batch(|x, y| qnumeric::max_abs_error(x, y)))
        .expect("add");
    for _ in 0..3 {
        log.push("early", &x, &x.mapv(|v| v + 0.25), None)
            .expect("push");
        log.push("late", &x, &x, None).expect("push");
    }
    let early = log.comparison("early").expect("early");
    assert_eq!(early.custom["count"], [18.0]); // counted from registration on
    assert_eq!(early.custom["max_abs"], [0.25, 0.25, 0.25]);
    // PyTorch's extend_logger_results_with_comparison, on the stored batches.
    log.extend_with_comparison("sqnr", |x, y| qnumeric::sqnr(x, y))
        .expect("extend");
    let early = log.comparison("early").expect("early");
    assert_eq!(early.custom["sqnr"].len(), 4);
    assert_eq!(early.custom["sqnr"][0], f64::INFINITY);
    // Names are unique and non-empty; a failing comparison is reported.
    assert!(matches!(
        log.extend_with_comparison("sqnr", |_, _| Ok(0.0)),
        Err(QuantError::InvalidName { .. })
    ));
    assert!(matches!(
        log.add_comparison("count", per_batch(|_, _| Ok(0.0))),
        Err(QuantError::InvalidName { .. })
    ));
    assert!(matches!(
        log.add_comparison("", per_batch(|_, _| Ok(0.0))),
        Err(QuantError::InvalidName { .. })
    ));
    assert_eq!(
        log.extend_with_comparison("bad", |_, _| Err(QuantError::Empty { op: "mine" })),
        Err(QuantError::Empty { op: "mine" })
    );
    assert!(
        !log.comparison("early")
            .expect("e")
            .custom
            .contains_key("bad")
    );
    log.add_comparison(
        "fails",
        per_batch(|_, _| Err(QuantError::Empty { op: "mine" })),
    )
    .expect("add");
    assert_eq!(
        log.push("early", &x, &x, None),
        Err(QuantError::Empty { op: "mine" })
    );
    // Streaming logs keep no tensors to extend.
    let mut s = NumericLog::streaming();
    assert!(matches!(
        s.extend_with_comparison("x", |_, _| Ok(0.0)),
        Err(QuantError::UnsupportedConfig { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Errors.

#[test]
fn push_errors_are_typed_and_leave_the_log_unchanged() {
    let mut log = NumericLog::streaming();
    let x = data(&[2, 3], 1);
    log.push("a", &x, &x, None).expect("push");
    let before = log.stats("a").cloned();
    let op = "NumericLog::push";
    // mismatched shapes
    assert_eq!(
        log.push("a", &x, &data(&[3, 2], 1), None),
        Err(QuantError::ShapeMismatch {
            op,
            expected: vec![2, 3],
            got: vec![3, 2]
        })
    );
    // NaN in the reference (NaN under test is a finding: see
    // `nan_and_inf_under_test_are_counted_never_skipped`)
    let mut nan = x.clone();
    nan[[1, 2]] = f32::NAN;
    assert_eq!(
        log.push("a", &nan, &x, None),
        Err(QuantError::NanInput { op, index: 5 })
    );
    // infinity
    let mut inf = x.clone();
    inf[[0, 0]] = f32::NEG_INFINITY;
    assert!(matches!(
        log.push("a", &inf, &x, None),
        Err(QuantError::NonFinite { op: "NumericLog::push", value, .. }) if value == f64::NEG_INFINITY
    ));
    // empty inputs and a zero-sized sample axis
    let e = ArrayD::<f32>::zeros(IxDyn(&[2, 0]));
    assert_eq!(
        log.push("a", &e, &e, None),
        Err(QuantError::EmptyInput { op })
    );
    let z = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
    assert_eq!(
        log.push("a", &z, &z, None),
        Err(QuantError::EmptyInput { op })
    );
    // 0-d: no sample axis
    let s = ArrayD::<f32>::zeros(IxDyn(&[]));
    assert_eq!(
        log.push("a", &s, &s, None),
        Err(QuantError::InvalidAxis {
            op,
            axis: 0,
            ndim: 0
        })
    );
    assert_eq!(log.stats("a").cloned(), before);
    assert_eq!(log.layer_names(), ["a"]);
}

#[test]
fn model_comparison_errors() {
    let (float, int8, x) = residual_pair();
    let none: Vec<ArrayD<f32>> = Vec::new();
    assert_eq!(
        compare_models(&float, &int8, none, CompareOptions::default()),
        Err(QuantError::EmptyInput {
            op: "compare_models"
        })
    );
    assert!(matches!(
        ModelComparator::new(
            &float,
            &int8,
            CompareOptions::default()
                .cumulative(false)
                .local(false)
                .weights(false)
        ),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    assert!(matches!(
        ModelComparator::new(
            &float,
            &int8,
            CompareOptions::default().jump_threshold_db(f64::NAN)
        ),
        Err(QuantError::InvalidParameter { .. })
    ));
    let cmp = ModelComparator::new(&float, &int8, CompareOptions::default().weights(false))
        .expect("comparator");
    assert_eq!(
        cmp.report(),
        Err(QuantError::Empty {
            op: "ModelComparator::report"
        })
    );
    // A NaN input reaches a typed error (from the model or from the log), never a panic.
    let mut cmp =
        ModelComparator::new(&float, &int8, CompareOptions::default()).expect("comparator");
    let mut bad = x.clone();
    bad[[0, 0]] = f32::NAN;
    assert!(matches!(cmp.run(bad), Err(QuantError::NanInput { .. })));
    // Two models whose outputs differ in shape under one name.
    let w = ArrayD::from_elem(IxDyn(&[3, 8]), 0.1f32);
    let other = Sequential::new()
        .with("quant", QuantStub)
        .expect("q")
        .with("fc1", Linear::new(w, None).expect("l"))
        .expect("fc1");
    let mut cmp = ModelComparator::new(&other, &int8, CompareOptions::default().only(&["fc1"]))
        .expect("comparator");
    assert!(matches!(cmp.run(x), Err(QuantError::ShapeMismatch { .. })));
    // Weights of different shapes.
    assert!(matches!(
        compare_weights(&other, &int8),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        compare_weight_tensors(&Array2::<f32>::zeros((2, 2)), &Array2::<f32>::zeros((2, 3))),
        Err(QuantError::ShapeMismatch { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::cases(64)))]

    /// Any shapes and values: Ok or a typed error, never a panic; a refused push changes
    /// nothing.
    #[test]
    fn push_is_ok_or_typed_error(
        sx in prop::collection::vec(0usize..4, 0..4),
        sy in prop::collection::vec(0usize..4, 0..4),
        vals in prop::collection::vec(
            prop_oneof![
                8 => -1e3f32..1e3,
                1 => Just(f32::NAN),
                1 => Just(f32::INFINITY),
                1 => Just(f32::MAX),
                1 => Just(0.0f32),
            ],
            64,
        ),
        scale in prop_oneof![Just(1e-30f32), Just(0.1f32), Just(1e30f32)],
        zp in 0i64..=255,
    ) {
        let fill = |shape: &[usize], off: usize| {
            ArrayD::from_shape_fn(IxDyn(shape), |i| {
                let k = i.as_array_view().iter().fold(off, |a, &b| a * 3 + b);
                vals[k % vals.len()]
            })
        };
        let (x, y) = (fill(&sx, 1), fill(&sy, 2));
        let qp = QParams::new(scale, zp, QDType::QUInt8).expect("valid");
        let mut log = NumericLog::storing(256);
        let before = log.stats("l").cloned();
        match log.push("l", &x, &y, Some(&qp)) {
            Ok(()) => {
                let c = log.comparison("l").expect("logged");
                prop_assert_eq!(c.samples.len(), sx[0]);
                prop_assert!(c.clipped_fraction.is_some_and(|f| (0.0..=1.0).contains(&f)));
                let _ = log.report().to_string();
                let _ = log.report().to_csv();
            }
            Err(e) => {
                prop_assert!(matches!(
                    e,
                    QuantError::ShapeMismatch { .. }
                        | QuantError::InvalidAxis { .. }
                        | QuantError::EmptyInput { .. }
                        | QuantError::NanInput { .. }
                        | QuantError::NonFinite { .. }
                ), "{e:?}");
                prop_assert_eq!(log.stats("l").cloned(), before);
                prop_assert!(log.is_empty());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reports.

#[cfg(feature = "serde")]
#[test]
fn report_json_has_every_comparison() {
    let (float, int8, x) = residual_pair();
    let r = compare_models(&float, &int8, [x], CompareOptions::default()).expect("compare");
    let j: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
    let layers = j["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 5);
    let fc1 = &layers[1];
    assert_eq!(fc1["name"], "fc1");
    assert_eq!(fc1["kind"], "QuantizedLinearReLU");
    for key in [
        "sqnr_db",
        "normalized_l2",
        "cosine",
        "mse",
        "max_abs",
        "mean_error",
    ] {
        assert!(fc1["cumulative"][key].is_number(), "{key}");
        assert!(fc1["local"][key].is_number(), "{key}");
    }
    assert!(fc1["cumulative"]["rms_quanta"].is_number());
    assert_eq!(
        fc1["cumulative"]["samples"].as_array().map(Vec::len),
        Some(64)
    );
    assert!(
        fc1["weight"]["channels"]
            .as_array()
            .is_some_and(|c| c.len() == 8)
    );
    // Non-finite figures are strings.
    assert_eq!(layers[4]["local"]["sqnr_db"], "inf");
    assert_eq!(
        j["worst"],
        r.worst().map(|l| l.name.clone()).expect("worst")
    );
    assert!(j.get("largest_drop").is_some() && j.get("first_below").is_some());
}

#[test]
fn report_text_marks_and_threshold() {
    let (float, int8, x) = residual_pair();
    let r = compare_models(
        &float,
        &int8,
        [x],
        CompareOptions::default().jump_threshold_db(100.0),
    )
    .expect("compare");
    assert_eq!(r.first_below_threshold().expect("below").layer, "quant");
    let text = r.to_string();
    for col in [
        "SQNR dB",
        "local dB",
        "weight dB",
        "quanta",
        "local quanta",
        "<- worst",
    ] {
        assert!(text.contains(col), "{col}: {text}");
    }
    assert!(text.contains("first below 100.00 dB: quant"), "{text}");
    let r2 = r.clone().with_jump_threshold(-10.0).expect("threshold");
    assert!(r2.first_below_threshold().is_none());
    let csv = r.to_csv();
    assert!(csv.contains("fc1,QuantizedLinearReLU,weight,"));
    assert!(csv.contains("add,QuantizedAdd,local,"));
    assert_eq!(NsReport::default().to_string().lines().count(), 1);
}

#[test]
fn nan_and_inf_under_test_are_counted_never_skipped() {
    let x = data(&[3, 4], 2);
    let mut y = x.mapv(|v| v * 1.01);
    y[[1, 0]] = f32::NAN;
    y[[1, 3]] = f32::INFINITY;
    y[[2, 1]] = f32::NEG_INFINITY;
    let mut log = NumericLog::streaming();
    log.push("a", &x, &y, None)
        .expect("NaN under test is a finding");
    let c = log.comparison("a").expect("logged");
    let n = c.non_finite;
    assert_eq!((n.nan, n.pos_inf, n.neg_inf, n.samples), (1, 1, 1, 2));
    assert_eq!(c.sqnr_db, f64::NEG_INFINITY);
    let per_sample = c.sample_sqnr_db();
    assert!(
        per_sample[0].is_finite() && per_sample[0] > 30.0,
        "{per_sample:?}"
    );
    assert_eq!(&per_sample[1..], &[f64::NEG_INFINITY, f64::NEG_INFINITY]);
    assert_eq!(c.worst_samples(2), vec![1, 2]);
    // a clean batch after it keeps the sample ids aligned
    log.push("a", &x, &x, None).expect("push");
    assert_eq!(log.comparison("a").expect("logged").samples.len(), 6);
}

/// The Numeric Suite and `metrics::sqnr` are one computation: the same figure at the ends of
/// the `f64` range (where plain sums underflow or overflow) and on ordinary data.
#[test]
fn ns_statistics_and_metrics_sqnr_agree_at_the_ends_of_the_f64_range() {
    let cases: [(f64, f64); 4] = [
        (1e-170, 1.5e-170), // squares underflow: 6.02 dB, not NaN
        (1e300, -1e300),    // squares overflow: finite inputs, -6.02 dB, not refused
        (1e-300, 1e-300 * (1.0 + 1e-3)),
        (1e200, 1e200 * (1.0 - 1e-3)),
    ];
    for (a, b) in cases {
        let x =
            ndarray::Array2::from_shape_fn((3, 4), |(i, j)| a * (1.0 + (i * 4 + j) as f64 / 7.0));
        let y =
            ndarray::Array2::from_shape_fn((3, 4), |(i, j)| b * (1.0 + (i * 4 + j) as f64 / 7.0));
        let want = qnumeric::sqnr(&x, &y).expect("metrics");
        let mut log = NumericLog::streaming();
        log.push("a", &x, &y, None)
            .expect("finite inputs are not refused");
        let c = log.comparison("a").expect("logged");
        assert!(want.is_finite(), "{a} {b}: {want}");
        assert!(
            (c.sqnr_db - want).abs() < 1e-9,
            "{a} {b}: ns {} vs metrics {want}",
            c.sqnr_db
        );
        for s in c.sample_sqnr_db() {
            assert!((s - want).abs() < 1e-9, "{a} {b}: sample {s} vs {want}");
        }
        let mse = qnumeric::mse(&x, &y).expect("mse");
        assert!(
            (c.mse / mse - 1.0).abs() < 1e-12 || c.mse == mse,
            "{} vs {mse}",
            c.mse
        );
    }
    // 1e-170 against 1.5e-170: 20·log10(1/0.5)
    let x = ndarray::arr1(&[1e-170f64])
        .into_dyn()
        .insert_axis(ndarray::Axis(0));
    let y = ndarray::arr1(&[1.5e-170f64])
        .into_dyn()
        .insert_axis(ndarray::Axis(0));
    let mut log = NumericLog::streaming();
    log.push("a", &x, &y, None).expect("push");
    let db = log.comparison("a").expect("logged").sqnr_db;
    assert!((db - 20.0 * 2f64.log10()).abs() < 1e-9, "{db}");
    // batches at very different scales merge into one figure
    let small = x.mapv(|v| v * 1e-100);
    log.push("a", &small, &small.mapv(|v| v * 1.5), None)
        .expect("push");
    assert!(log.comparison("a").expect("logged").sqnr_db.is_finite());
    // ordinary data: equal up to summation order
    let x = data(&[16, 9], 7);
    let y = x.mapv(|v| v + 0.01);
    let mut log = NumericLog::streaming();
    log.push("a", &x, &y, None).expect("push");
    let want = qnumeric::sqnr(&x, &y).expect("sqnr");
    assert!((log.comparison("a").expect("logged").sqnr_db - want).abs() < 1e-9);
}

#[test]
fn metrics_refuse_empty_input_as_the_numeric_suite_does() {
    let e = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
    for r in [
        qnumeric::sqnr(&e, &e),
        qnumeric::mse(&e, &e),
        qnumeric::cosine_similarity(&e, &e),
        qnumeric::normalized_l2_error(&e, &e),
        qnumeric::max_abs_error(&e, &e),
    ] {
        assert!(matches!(r, Err(QuantError::EmptyInput { .. })), "{r:?}");
    }
    let mut log = NumericLog::streaming();
    assert!(matches!(
        log.push("a", &e, &e, None),
        Err(QuantError::EmptyInput { .. })
    ));
}

/// Shards merged: [`NumericLog::merge`] and [`ErrorStats::merge`] against one pass over all
/// the batches, bit for bit; their serialized state; what refuses to merge.
mod merge {
    use super::data;
    use ndarray::{Array2, ArrayD};
    use proptest::prelude::*;
    use qnumeric::ns::{ErrorStats, Mask, NumericLog, SampleDims};
    use qnumeric::{QDType, QParams, QuantError};

    /// Batch `b`: a float output and a noisy quantized one, of varying size and scale.
    fn batch(b: u64, rows: usize) -> (ArrayD<f32>, ArrayD<f32>) {
        let scale = 1.0 + (b % 7) as f32 * 13.0;
        let x = data(&[rows, 6], b).mapv(|v| v * scale);
        let y = &x + &data(&[rows, 6], b + 1000).mapv(|v| v * 0.01 * scale);
        (x, y)
    }

    fn push(log: &mut NumericLog, b: u64, rows: usize) -> qnumeric::Result<()> {
        let (x, y) = batch(b, rows);
        let out = QParams::new(0.05, 3, QDType::QUInt8)?;
        log.push("fc1", &x, &y, None)?;
        log.push("fc2", &x, &y, Some(&out))?;
        let mask = Mask::new(Array2::from_shape_fn((rows, 6), |(i, j)| j <= i % 6))?;
        log.push_masked("attn", &x, &y, None, &mask, SampleDims::Samples)?;
        if b.is_multiple_of(3) {
            log.push("sometimes", &x, &y, None)?;
        }
        Ok(())
    }

    fn check_split(rows: &[usize], cut: usize) -> qnumeric::Result<()> {
        let mut whole = NumericLog::streaming();
        let (mut a, mut b) = (NumericLog::streaming(), NumericLog::streaming());
        for (i, &r) in rows.iter().enumerate() {
            push(&mut whole, i as u64, r)?;
            push(if i < cut { &mut a } else { &mut b }, i as u64, r)?;
        }
        a.merge(&b)?;
        let mut names = a.layer_names();
        let mut want = whole.layer_names();
        names.sort_unstable();
        want.sort_unstable();
        assert_eq!(names, want);
        for name in whole.layer_names() {
            assert_eq!(a.stats(name), whole.stats(name), "{name}");
            assert_eq!(a.comparison(name), whole.comparison(name), "{name}");
        }
        Ok(())
    }

    #[test]
    fn merged_shards_equal_one_pass_bit_for_bit() -> qnumeric::Result<()> {
        let rows = [3, 1, 8, 2, 5, 7, 4, 4, 6, 1, 9];
        for cut in 0..=rows.len() {
            check_split(&rows, cut)?;
        }
        // Three shards, merged in order.
        let mut whole = NumericLog::streaming();
        let mut shards = [
            NumericLog::streaming(),
            NumericLog::streaming(),
            NumericLog::streaming(),
        ];
        for (i, &r) in rows.iter().enumerate() {
            push(&mut whole, i as u64, r)?;
            push(&mut shards[i * 3 / rows.len()], i as u64, r)?;
        }
        let [mut s0, s1, s2] = shards;
        s0.merge(&s1)?;
        s0.merge(&s2)?;
        for name in whole.layer_names() {
            assert_eq!(s0.comparison(name), whole.comparison(name), "{name}");
        }
        Ok(())
    }

    #[test]
    fn non_finite_values_under_test_merge_too() -> qnumeric::Result<()> {
        let (x, mut y) = batch(1, 4);
        y[[2, 3]] = f32::NAN;
        let (x2, mut y2) = batch(2, 3);
        y2[[0, 0]] = f32::INFINITY;
        let mut whole = ErrorStats::new();
        whole.update(&x, &y, None)?;
        whole.update(&x2, &y2, None)?;
        let (mut a, mut b) = (ErrorStats::new(), ErrorStats::new());
        a.update(&x, &y, None)?;
        b.update(&x2, &y2, None)?;
        a.merge(&b)?;
        assert_eq!(a, whole);
        assert_eq!(a.non_finite(), whole.non_finite());
        assert_eq!(a.sample_sqnr_db().len(), 7);
        Ok(())
    }

    #[test]
    fn different_output_parameters_or_custom_state_refuse_and_change_nothing()
    -> qnumeric::Result<()> {
        let (x, y) = batch(3, 4);
        let (mut a, mut b) = (NumericLog::streaming(), NumericLog::streaming());
        a.push("fc", &x, &y, Some(&QParams::new(0.05, 3, QDType::QUInt8)?))?;
        b.push("fc", &x, &y, Some(&QParams::new(0.07, 3, QDType::QUInt8)?))?;
        b.push("other", &x, &y, None)?;
        let before = a.comparison("fc");
        let e = a.merge(&b).expect_err("different output parameters");
        assert!(matches!(e, QuantError::Incompatible { op, .. } if op == "NumericLog::merge"));
        assert_eq!(a.comparison("fc"), before);
        assert_eq!(a.layer_names(), vec!["fc"]);

        let mut storing = NumericLog::storing(1 << 20);
        storing.push("fc", &x, &y, None)?;
        assert!(matches!(
            a.merge(&storing),
            Err(QuantError::Incompatible { .. })
        ));
        let mut custom = NumericLog::streaming();
        custom.add_comparison("count", super::per_batch(|_, _| Ok(1.0)))?;
        assert!(matches!(
            a.merge(&custom),
            Err(QuantError::Incompatible { .. })
        ));
        Ok(())
    }

    #[cfg(feature = "serde")]
    #[test]
    fn state_round_trips_through_json_and_is_validated() -> qnumeric::Result<()> {
        let mut log = NumericLog::streaming();
        for b in 0..5 {
            push(&mut log, b, 3 + b as usize)?;
        }
        let (x, mut y) = batch(9, 2);
        y[[1, 1]] = f32::NEG_INFINITY;
        log.push("nonfinite", &x, &y, None)?;
        log.set_enabled("fc1", false);
        let text = serde_json::to_string(&log).expect("serializes");
        let back: NumericLog = serde_json::from_str(&text).expect("reads back");
        for name in log.layer_names() {
            // Debug: the NaN cosine of the non-finite layer compares unequal to itself
            assert_eq!(
                format!("{:?}", back.comparison(name)),
                format!("{:?}", log.comparison(name)),
                "{name}"
            );
            assert_eq!(back.stats(name), log.stats(name), "{name}");
        }
        assert!(!back.is_enabled("fc1"));
        // small: the sums and four numbers per sample
        assert!(text.len() < 12_000, "{}", text.len());

        for bad in [
            text.replacen("\"exp\":0", "\"exp\":5000", 1),
            text.replacen("\"signal\":", "\"signal\":-1.0,\"x\":", 1),
            text.replacen("\"batches\":5", "\"batches\":0", 1),
            text.replacen("\"fc2\"", "\"fc1\"", 1),
            text.replacen("\"max_abs\":", "\"max_abs\":\"many\",\"y\":", 1),
        ] {
            assert_ne!(bad, text);
            assert!(
                serde_json::from_str::<NumericLog>(&bad).is_err(),
                "{bad:.200}"
            );
        }
        let mut storing = NumericLog::storing(1024);
        storing.push("fc", &x, &x, None)?;
        assert!(serde_json::to_string(&storing).is_err());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::cases(48)))]

        #[test]
        fn any_split_of_any_batches_merges_to_one_pass(
            rows in proptest::collection::vec(1usize..6, 1..10),
            cut in 0usize..10,
        ) {
            let cut = cut.min(rows.len());
            prop_assert!(check_split(&rows, cut).is_ok());
        }
    }
}
