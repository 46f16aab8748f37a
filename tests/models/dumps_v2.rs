//! Dump format v2 (docs/dumps.md): parts of a layer, the padding mask, samples as positions,
//! the layer metadata, hostile headers, and the own-error verdicts they feed.

use std::collections::HashMap;

use ndarray::{Array2, Array3, ArrayD, IxDyn};
use qnumeric::QuantError;
use qnumeric::diagnose::{
    DumpDiagnoseOptions, Finding, OwnSource, Thresholds, Verdict, diagnose_dumps,
    diagnose_dumps_with_baseline, diagnose_report,
};
use qnumeric::ns::{
    DumpPair, DumpVersion, LayerKind, Mask, NsReport, NumericLog, Part, SampleDims, Side,
};
use qnumeric::rng::Lcg;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// Writes a safetensors file of f32 tensors with metadata.
pub fn write(tensors: &[(&str, ArrayD<f32>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, a)| {
            (
                (*n).to_string(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
                a.shape().to_vec(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).expect("serialize")
}

fn noise(rng: &mut Lcg, shape: &[usize], amp: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| (rng.unit_f32() - 0.5) * 2.0 * amp)
}

/// `[N, T]` mask, sample n real for its first `lens[n]` positions.
fn mask_of(lens: &[usize], t: usize) -> Array2<f32> {
    Array2::from_shape_fn((lens.len(), t), |(n, i)| f32::from(u8::from(i < lens[n])))
}

/// Three layers of `[N, T, C]`: `a` (1e-3 own noise), `b` (the given own noise), `c` (carries
/// b's error on). Quant outputs carry the upstream error; shadows are the float layer on the
/// quantized input, so `NAME` vs `NAME:shadow` is the layer's own noise.
fn three_layers(b_noise: f32, garbage: Option<f32>) -> (Vec<u8>, Vec<u8>) {
    let (n, t, c) = (6, 5, 8);
    let lens = [5, 3, 2, 5, 1, 4];
    let mut rng = Lcg::new(7);
    let fa = noise(&mut rng, &[n, t, c], 1.0);
    let fb = noise(&mut rng, &[n, t, c], 1.0);
    let fc = fb.mapv(|v| v * 2.0);
    let qa = &fa + &noise(&mut rng, &[n, t, c], 1e-3);
    let eb = noise(&mut rng, &[n, t, c], b_noise);
    let qb_shadow = &fb + &noise(&mut rng, &[n, t, c], 1e-3); // b on a's (tiny) error
    let qb = &qb_shadow + &eb;
    let qc_shadow = qb.mapv(|v| v * 2.0);
    let qc = &qc_shadow + &noise(&mut rng, &[n, t, c], 1e-3);
    let mask = mask_of(&lens, t).into_dyn();
    let mut quant = vec![
        ("a", qa),
        ("a:shadow", fa.clone() + noise(&mut rng, &[n, t, c], 1e-9)),
        ("b", qb),
        ("b:shadow", qb_shadow),
        ("c", qc),
        ("c:shadow", qc_shadow),
    ];
    let mut float = vec![("a", fa), ("b", fb), ("c", fc), ("__mask__", mask)];
    if let Some(g) = garbage {
        for (_, a) in quant.iter_mut().chain(float.iter_mut().take(3)) {
            for ni in 0..n {
                for ti in lens[ni]..t {
                    for ci in 0..c {
                        a[[ni, ti, ci]] = g * (1.0 + ci as f32);
                    }
                }
            }
        }
    }
    let meta = [
        ("format", "qnumeric-dump/2"),
        ("order", "[\"a\",\"b\",\"c\"]"),
    ];
    (write(&float, &meta), write(&quant, &meta))
}

#[test]
fn a_v2_pair_has_parts_mask_and_own_errors() {
    let (f, q) = three_layers(0.5, None);
    let pair = DumpPair::from_bytes(&f, &q).expect("pair");
    assert_eq!(pair.version(), DumpVersion::V2);
    assert_eq!(pair.layers(), ["a", "b", "c"]);
    assert!(pair.has("b", Side::Quant, Part::Shadow));
    assert!(!pair.has("b", Side::Float, Part::Shadow));
    assert_eq!(pair.mask().map(Mask::real_positions), Some(20));
    let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
    let d = &d.diagnosis;
    for l in &d.layers {
        assert_eq!(l.own.source, OwnSource::Shadow, "{}", l.name);
    }
    assert_eq!(d.layer("a").map(|l| l.verdict), Some(Verdict::Fine));
    assert_eq!(
        d.layer("b").map(|l| l.verdict),
        Some(Verdict::DataInsensitive)
    );
    // c's own error is tiny: it carries b's error, it is not at fault.
    assert_eq!(d.layer("c").map(|l| l.verdict), Some(Verdict::Inherited));
    assert_eq!(d.headline.as_deref(), Some("b"));
    assert_eq!(d.first_layer.as_deref(), Some("b"));
}

#[test]
fn garbage_in_padded_positions_moves_no_figure() {
    let figures = |garbage: Option<f32>, dims: SampleDims| {
        let (f, q) = three_layers(0.5, garbage);
        let pair = DumpPair::from_bytes(&f, &q).expect("pair");
        let cmp = pair.compare(dims).expect("compare");
        cmp.report
            .layers
            .iter()
            .flat_map(|l| {
                let c = l.cumulative.as_ref().expect("cumulative");
                let o = l.local.as_ref().expect("local");
                let mut v = vec![c.sqnr_db, c.mse, c.cosine, c.max_abs, o.sqnr_db, o.mse];
                v.extend(c.sample_sqnr_db());
                v.extend(o.sample_sqnr_db());
                v
            })
            .collect::<Vec<f64>>()
    };
    for dims in [SampleDims::Samples, SampleDims::Positions] {
        let clean = figures(None, dims);
        for g in [1e3, -7e5, 0.0] {
            assert_eq!(figures(Some(g), dims), clean, "garbage {g}, {dims:?}");
        }
    }
}

#[test]
fn tokens_as_samples_name_real_positions() {
    let (f, q) = three_layers(0.5, None);
    let pair = DumpPair::from_bytes(&f, &q).expect("pair");
    let opts = DumpDiagnoseOptions {
        sample_dims: SampleDims::Positions,
        ..DumpDiagnoseOptions::default()
    };
    let d = diagnose_dumps(&pair, &opts).expect("diagnosis");
    let ids = d.diagnosis.sample_ids.as_ref().expect("positions");
    assert_eq!(ids.len(), 20);
    assert_eq!(ids[5].to_string(), "1:0");
    assert!(ids.iter().all(|id| id.position.is_some_and(|t| t < 5)));
    let b = d.diagnosis.layer("b").expect("b");
    assert_eq!(b.own.evidence.sample_sqnr_db.len(), 20);
    assert!(d.to_string().contains("worst samples: "), "{d}");
}

#[test]
fn masked_push_equals_pushing_only_the_real_positions() {
    let mut rng = Lcg::new(3);
    let x = noise(&mut rng, &[2, 3, 4], 1.0);
    let y = &x + &noise(&mut rng, &[2, 3, 4], 0.1);
    let mask = Mask::new(
        Array2::from_shape_vec((2, 3), vec![true, true, false, true, false, false]).expect("mask"),
    )
    .expect("mask");
    let mut masked = NumericLog::streaming();
    masked
        .push_masked("l", &x, &y, None, &mask, SampleDims::Positions)
        .expect("push");
    let rows = |a: &ArrayD<f32>| {
        let v: Vec<f32> = [(0, 0), (0, 1), (1, 0)]
            .iter()
            .flat_map(|&(n, t)| (0..4).map(move |c| (n, t, c)))
            .map(|(n, t, c)| a[[n, t, c]])
            .collect();
        ArrayD::from_shape_vec(IxDyn(&[3, 4]), v).expect("rows")
    };
    let mut plain = NumericLog::streaming();
    plain.push("l", &rows(&x), &rows(&y), None).expect("push");
    let (a, b) = (
        masked.comparison("l").expect("masked"),
        plain.comparison("l").expect("plain"),
    );
    assert_eq!(a.sample_sqnr_db(), b.sample_sqnr_db());
    assert_eq!(a.mse, b.mse);
    assert_eq!(a.elements, b.elements);
    // samples as axis 0: same sums, the element count without padding
    let mut per_sample = NumericLog::streaming();
    per_sample
        .push_masked("l", &x, &y, None, &mask, SampleDims::Samples)
        .expect("push");
    let c = per_sample.comparison("l").expect("masked");
    assert_eq!(c.samples.len(), 2);
    assert_eq!(c.elements, 12);
    assert!((c.mse - b.mse).abs() <= 1e-12 * b.mse);
}

#[test]
fn a_mask_refuses_an_all_padding_sample_and_nan() {
    let e = Mask::new(Array2::from_elem((2, 2), false)).expect_err("all padding");
    assert!(matches!(e, QuantError::InvalidParameter { .. }), "{e}");
    let e = Mask::from_values(&Array2::from_elem((1, 2), f32::NAN)).expect_err("nan");
    assert!(matches!(e, QuantError::NonFinite { .. }), "{e}");
    let e = Mask::from_values(&Array3::<f32>::ones((1, 2, 2))).expect_err("3-d");
    assert!(matches!(e, QuantError::InvalidAxis { .. }), "{e}");
    assert!(matches!(
        Mask::new(Array2::from_elem((0, 3), true)),
        Err(QuantError::EmptyInput { .. })
    ));
}

#[test]
fn hostile_headers_and_metadata_are_typed_errors() {
    let good = write(&[("a", ArrayD::zeros(IxDyn(&[2, 2])))], &[]);
    // A header length past the file, a huge one, truncated data, offsets past the data.
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut past = good.clone();
    past[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    let truncated = good[..good.len() - 4].to_vec();
    let text = r#"{"a":{"dtype":"F32","shape":[1000000000,1000000000],"data_offsets":[0,16]}}"#;
    let mut absurd = (text.len() as u64).to_le_bytes().to_vec();
    absurd.extend_from_slice(text.as_bytes());
    absurd.extend_from_slice(&[0u8; 16]);
    for (what, bytes) in [
        ("huge header", huge),
        ("header past the file", past),
        ("truncated", truncated),
        ("absurd shape", absurd),
        ("empty", Vec::new()),
    ] {
        let e = DumpPair::from_bytes(&bytes, &good).expect_err(what);
        assert!(matches!(e, QuantError::Parse { .. }), "{what}: {e}");
    }
    let bad_meta = |meta: &[(&str, &str)]| {
        let f = write(&[("a", ArrayD::zeros(IxDyn(&[2, 2])))], meta);
        DumpPair::from_bytes(&f, &good).map(|_| ())
    };
    let e = bad_meta(&[("format", "qnumeric-dump/3")]).expect_err("unsupported version");
    assert!(matches!(e, QuantError::Format { .. }), "{e}");
    for meta in [
        vec![("format", "qnumeric-dump/2"), ("batch_size", "0")],
        vec![("format", "qnumeric-dump/2"), ("batch_size", "many")],
        vec![("format", "qnumeric-dump/2"), ("layers", "[1, 2]")],
        vec![
            ("format", "qnumeric-dump/2"),
            ("layers", r#"{"a": {"weight": {"bits": 17}}}"#),
        ],
        vec![
            ("format", "qnumeric-dump/2"),
            ("layers", r#"{"a": {"output": {"scale": -1}}}"#),
        ],
        vec![("format", "qnumeric-dump/2"), ("layers", "{not json")],
        vec![("order", "[\"a\", 3]")],
    ] {
        let e = bad_meta(&meta).expect_err("bad metadata");
        assert!(
            matches!(e, QuantError::Format { .. } | QuantError::Parse { .. }),
            "{meta:?}: {e}"
        );
    }
    // `format = pt` (what PyTorch's safetensors writer puts there) is a v1 dump.
    let f = write(&[("a", ArrayD::zeros(IxDyn(&[2, 2])))], &[("format", "pt")]);
    assert_eq!(
        DumpPair::from_bytes(&f, &good).expect("v1").version(),
        DumpVersion::V1
    );
}

#[test]
fn masks_that_disagree_or_cannot_be_masks_are_refused() {
    let m1 = mask_of(&[2, 1], 2).into_dyn();
    let m2 = mask_of(&[1, 1], 2).into_dyn();
    let x = ArrayD::zeros(IxDyn(&[2, 2, 3]));
    let v2 = [("format", "qnumeric-dump/2")];
    let f = write(&[("a", x.clone()), ("__mask__", m1.clone())], &v2);
    let q = write(&[("a", x.clone()), ("__mask__", m2)], &v2);
    let e = DumpPair::from_bytes(&f, &q).expect_err("masks differ");
    assert!(matches!(e, QuantError::Format { .. }), "{e}");
    let padded_only = mask_of(&[2, 0], 2).into_dyn();
    let q = write(&[("a", x.clone()), ("__mask__", padded_only)], &v2);
    let e = DumpPair::from_bytes(&f, &q).expect_err("a sample with no real position");
    assert!(matches!(e, QuantError::Format { .. }), "{e}");
    // the same mask in both files is fine; a tensor it does not apply to is compared whole
    let pooled = ArrayD::ones(IxDyn(&[2, 3]));
    let f = write(
        &[
            ("a", x.clone()),
            ("pool", pooled.clone()),
            ("__mask__", m1.clone()),
        ],
        &v2,
    );
    let q = write(&[("a", x), ("pool", pooled), ("__mask__", m1)], &v2);
    let cmp = DumpPair::from_bytes(&f, &q)
        .expect("pair")
        .compare(SampleDims::Samples)
        .expect("compare");
    assert!(cmp.skipped.is_empty(), "{:?}", cmp.skipped);
    assert_eq!(cmp.report.layers.len(), 2);
}

#[test]
fn layer_metadata_is_read() {
    let x = ArrayD::zeros(IxDyn(&[2, 3]));
    let layers = r#"{"fc": {"kind": "linear",
        "weight": {"bits": 4, "granularity": "per_channel", "symmetric": true},
        "activation": {"mode": "static", "scale": 0.1, "zero_point": 3},
        "output": {"scale": 0.05, "zero_point": 64, "dtype": "quint8"}}}"#;
    let meta = [
        ("format", "qnumeric-dump/2"),
        ("layers", layers),
        ("batch_size", "16"),
    ];
    let f = write(&[("fc", x.clone())], &meta);
    let pair = DumpPair::from_bytes(&f, &f).expect("pair");
    let m = pair.layer_meta("fc").expect("fc");
    assert_eq!(m.kind, Some(LayerKind::Linear));
    assert_eq!(m.weight.and_then(|w| w.bits), Some(4));
    assert_eq!(m.weight.and_then(|w| w.per_channel), Some(true));
    let a = m.activation.expect("activation");
    assert_eq!(a.qparams.map(|q| q.zero_point()), Some(3));
    assert_eq!(m.output.map(|q| q.zero_point()), Some(64));
    assert_eq!(pair.batch_size(), Some(16));
    // output parameters give the clipped fraction
    let cmp = pair.compare(SampleDims::Samples).expect("compare");
    let c = cmp.report.layers[0].cumulative.as_ref().expect("fc");
    assert!(c.clipped_fraction.is_some());
}

#[test]
fn parts_without_an_output_are_reported() {
    let x = ArrayD::zeros(IxDyn(&[2, 3]));
    let v2 = [("format", "qnumeric-dump/2")];
    let f = write(&[("fc", x.clone())], &v2);
    let q = write(
        &[
            ("fc", x.clone()),
            ("orphan:shadow", x.clone()),
            ("__future__", x),
        ],
        &v2,
    );
    let pair = DumpPair::from_bytes(&f, &q).expect("pair");
    let names: Vec<&str> = pair.unassigned().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["__future__", "orphan:shadow"]);
}

#[test]
fn without_shadows_the_own_error_is_the_growth_of_the_error() {
    // Every layer far below 20 dB (a transformer under dynamic int8): the old rule charged
    // everything to the first layer. The growth of the error finds the layer that adds it.
    let mut log = NumericLog::streaming();
    let mut rng = Lcg::new(11);
    let x = noise(&mut rng, &[40, 16], 1.0);
    let mut err = noise(&mut rng, &[40, 16], 0.25); // 12 dB at the first layer
    for (i, extra) in [0.0f32, 0.02, 0.6, 0.02].iter().enumerate() {
        err = &err + &noise(&mut rng, &[40, 16], *extra);
        log.push(&format!("l{i}"), &x, &(&x + &err), None)
            .expect("push");
    }
    let report = NsReport::from_logs(Some(&log), None);
    let d = diagnose_report(&report, &Thresholds::default()).expect("diagnosis");
    let v: Vec<Verdict> = d.layers.iter().map(|l| l.verdict).collect();
    assert_eq!(
        v,
        [
            Verdict::DataInsensitive,
            Verdict::Inherited,
            Verdict::DataInsensitive,
            Verdict::Inherited
        ]
    );
    assert!(d.layers.iter().all(|l| l.own.source == OwnSource::Added));
    assert_eq!(d.headline.as_deref(), Some("l2"));
}

#[test]
fn a_layer_far_worse_than_its_peers_is_flagged_whatever_the_threshold() {
    let mut cum = NumericLog::streaming();
    let mut local = NumericLog::streaming();
    let mut rng = Lcg::new(5);
    let x = noise(&mut rng, &[20, 16], 1.0);
    for i in 0..6 {
        // own error 40 dB, but 22 dB for block 3: above the 20 dB threshold, 18 dB below its peers
        let amp = if i == 3 { 0.14 } else { 0.0175 };
        let name = format!("encoder.layer.{i}.output.dense");
        let y = &x + &noise(&mut rng, &[20, 16], amp);
        local.push(&name, &x, &y, None).expect("push");
        cum.push(&name, &x, &y, None).expect("push");
    }
    let report = NsReport::from_logs(Some(&cum), Some(&local));
    let d = diagnose_report(&report, &Thresholds::default()).expect("diagnosis");
    let bad = d.layer("encoder.layer.3.output.dense").expect("layer");
    assert_eq!(bad.verdict, Verdict::DataInsensitive);
    assert!(
        bad.findings
            .iter()
            .any(|f| matches!(f, Finding::WorseThanPeers { peers } if peers.peers == 6 && peers.role == "encoder.layer.#.output.dense")),
        "{:?}",
        bad.findings
    );
    assert_eq!(d.headline.as_deref(), Some("encoder.layer.3.output.dense"));
    for l in d.layers.iter().filter(|l| l.name != bad.name) {
        assert_eq!(l.verdict, Verdict::Fine, "{}", l.name);
    }
}

#[test]
fn a_baseline_names_what_changed() {
    let (f, healthy) = three_layers(1e-3, None);
    let (_, broken) = three_layers(0.5, None);
    let pair = DumpPair::from_bytes(&f, &broken).expect("pair");
    let base = DumpPair::from_bytes(&f, &healthy).expect("baseline");
    let d = diagnose_dumps_with_baseline(&pair, &base, &DumpDiagnoseOptions::default())
        .expect("diagnosis");
    let b = d.baseline.as_ref().expect("baseline");
    assert_eq!(b.most_changed.as_deref(), Some("b"));
    assert_eq!(b.first_divergent.as_deref(), Some("b"));
    assert_eq!(b.baseline_verdict, Verdict::Fine);
    let text = d.to_string();
    assert!(text.contains("most changed: b"), "{text}");
}

#[test]
fn invalid_options_are_refused() {
    let (f, q) = three_layers(0.5, None);
    let pair = DumpPair::from_bytes(&f, &q).expect("pair");
    for opts in [
        DumpDiagnoseOptions {
            min_gain_db: f64::NAN,
            ..DumpDiagnoseOptions::default()
        },
        DumpDiagnoseOptions {
            replay_rows: 0,
            ..DumpDiagnoseOptions::default()
        },
        DumpDiagnoseOptions {
            thresholds: Thresholds {
                min_sqnr_db: f64::NAN,
                ..Thresholds::default()
            },
            ..DumpDiagnoseOptions::default()
        },
    ] {
        let e = diagnose_dumps(&pair, &opts).expect_err("invalid");
        assert!(matches!(e, QuantError::InvalidParameter { .. }), "{e}");
    }
    assert!(SampleDims::from_count(3).is_err());
}

/// A static layer `q` quantizing its input with the given output parameters: float `x`,
/// quantized `fake_quantize(x)`, shadow `x` (the float identity on the quantized input's
/// float value), then `fc` after it, fine.
fn requantized_pair(x: &ArrayD<f32>, scale: f32, zero_point: i64) -> (Vec<u8>, Vec<u8>) {
    let out = qnumeric::QParams::new(scale, zero_point, qnumeric::QDType::QUInt8).expect("qparams");
    let q = qnumeric::fake_quantize(x, &out).expect("fake quantize");
    let fc = x.mapv(|v| v * 0.5);
    let fcq = q.mapv(|v| v * 0.5);
    let layers = format!(
        r#"{{"q": {{"kind": "other", "output": {{"scale": {scale}, "zero_point": {zero_point}, "dtype": "quint8"}}}}}}"#
    );
    let meta = [
        ("format", "qnumeric-dump/2"),
        ("order", "q,fc"),
        ("layers", layers.as_str()),
    ];
    let f = write(&[("q", x.clone()), ("fc", fc)], &meta);
    let quant = write(
        &[
            ("q", q.clone()),
            ("q:input", x.clone()),
            ("q:shadow", x.clone()),
            ("fc", fcq.clone()),
            ("fc:input", q.clone()),
            ("fc:shadow", fcq),
        ],
        &meta,
    );
    (f, quant)
}

#[test]
fn output_quantization_is_replayed_for_remedies() {
    use qnumeric::diagnose::{Calibrator, Change};
    let mut rng = Lcg::new(3);
    // 40 samples in [-1, 1]; samples 7 and 23 bright (x 6): clipped by parameters for [-1, 1].
    let mut x = noise(&mut rng, &[40, 16], 1.0);
    for s in [7, 23] {
        x.index_axis_mut(ndarray::Axis(0), s)
            .mapv_inplace(|v| v * 6.0);
    }
    let (f, q) = requantized_pair(&x, 2.0 / 255.0, 128);
    let pair = DumpPair::from_bytes(&f, &q).expect("pair");
    let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
    let ql = d.diagnosis.layer("q").expect("q");
    assert_eq!(ql.verdict, Verdict::DataSensitive, "{d}");
    let r = d
        .diagnosis
        .remedies
        .iter()
        .find(|r| r.layer.as_deref() == Some("q"))
        .expect("a remedy for the clipped input");
    match &r.change {
        Change::CalibrateCloserToInference { worst_samples } => {
            assert_eq!(
                &worst_samples[..2]
                    .iter()
                    .copied()
                    .collect::<std::collections::BTreeSet<_>>(),
                &[7, 23].into()
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(r.gain_db().expect("gain") > 10.0, "{d}");

    // A range 40 times too wide for every sample: another calibrator, for all of them.
    let x = noise(&mut rng, &[40, 16], 1.0);
    let (f, q) = requantized_pair(&x, 80.0 / 255.0, 128);
    let pair = DumpPair::from_bytes(&f, &q).expect("pair");
    let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
    assert_eq!(
        d.diagnosis.layer("q").expect("q").verdict,
        Verdict::DataInsensitive,
        "{d}"
    );
    let observers: Vec<_> = d
        .diagnosis
        .remedies
        .iter()
        .filter(|r| matches!(r.change, Change::Observer { .. }))
        .collect();
    assert_eq!(observers.len(), 2, "{d}");
    assert!(
        observers.iter().all(|r| r.gain_db().expect("gain") > 20.0),
        "{d}"
    );
    assert!(
        Calibrator::ALL
            .iter()
            .any(|c| observers[0].change == Change::Observer { calibrator: *c })
    );

    // Healthy parameters: no remedy.
    let (f, q) = requantized_pair(&x, 2.0 / 255.0, 128);
    let pair = DumpPair::from_bytes(&f, &q).expect("pair");
    let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
    assert!(d.diagnosis.remedies.is_empty(), "{d}");
}
