//! `LinearReplay`: one Linear layer replayed from a dump. Exactness against the crate's own
//! `DynamicQuantizedLinear` (PyTorch's dynamic int8 Linear), scheme inference on outputs made
//! each way, the remedies that must win on inputs built for them, the mask semantics, typed
//! errors, and "Ok or a typed Err" on random shapes.

use ndarray::{Array1, Array2, Array3, ArrayD, Axis, IxDyn, s};
use proptest::prelude::*;
use qnumeric::diagnose::{
    Calibrator, Change, Effect, LinearReplay, LinearScheme, Precision, ReplayActivations,
    ReplayWeights,
};
use qnumeric::nn::Activation;
use qnumeric::nn::quantized::DynamicQuantizedLinear;
use qnumeric::{QDType, QParams, QuantError, QuantizedTensor};

/// The crate's generator, in [-1, 1).
struct Lcg(qnumeric::rng::Lcg);

impl Lcg {
    fn seeded(seed: u64) -> Self {
        Lcg(qnumeric::rng::Lcg::new(seed))
    }

    fn next(&mut self) -> f32 {
        self.0.unit_f32() * 2.0 - 1.0
    }

    fn array3(&mut self, n: usize, t: usize, k: usize, scale: f32) -> Array3<f32> {
        Array3::from_shape_simple_fn((n, t, k), || self.next() * scale)
    }

    fn array2(&mut self, r: usize, c: usize, scale: f32) -> Array2<f32> {
        Array2::from_shape_simple_fn((r, c), || self.next() * scale)
    }
}

const INT8_PT_SYM: ReplayWeights = ReplayWeights::Int {
    bits: 8,
    per_channel: false,
    symmetric: true,
};

fn dynamic(reduce_range: bool, per_token: bool) -> ReplayActivations {
    ReplayActivations::Dynamic {
        bits: 8,
        reduce_range,
        per_token,
    }
}

/// The largest difference relative to the largest magnitude.
fn rel_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// A `DynamicQuantizedLinear` with per-tensor symmetric qint8 weights (scale max|w|/127.5,
/// PyTorch's `MinMaxObserver(qint8, per_tensor_symmetric)`), and its dequantized weight.
fn dynamic_layer(w: &Array2<f32>, b: &Array1<f32>) -> (DynamicQuantizedLinear, Array2<f32>) {
    let amax = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let qp = QParams::new(amax / 127.5, 0, QDType::QInt8).expect("valid scale");
    let qw = QuantizedTensor::<i8>::quantize(&w.clone().into_dyn(), qp).expect("quantize");
    let given = qw
        .to_float()
        .into_dimensionality()
        .expect("a 2-D weight dequantizes to 2-D");
    let layer = DynamicQuantizedLinear::new(qw, Some(b.clone().into_dyn())).expect("layer");
    (layer, given)
}

/// `layer.forward_reference` (or `forward`) per call of `batch` samples, rows stacked.
fn per_call(
    layer: &DynamicQuantizedLinear,
    x: &Array3<f32>,
    batch: usize,
    integer: bool,
) -> Array2<f32> {
    let (n, t, _) = x.dim();
    let o = layer.quantized_weight().shape()[0];
    let mut out = Array2::zeros((n * t, o));
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let a = Activation::Float(x.slice(s![start..end, .., ..]).to_owned().into_dyn());
        let y = if integer {
            qnumeric::nn::Module::forward(layer, &a)
        } else {
            layer.forward_reference(&a)
        }
        .expect("forward")
        .into_float();
        let y = y
            .into_shape_with_order(((end - start) * t, o))
            .expect("rows");
        out.slice_mut(s![start * t..end * t, ..]).assign(&y);
    }
    out
}

#[test]
fn given_weights_and_dynamic_activations_equal_dynamic_quantized_linear() -> qnumeric::Result<()> {
    // DynamicQuantizedLinear::forward_reference is the crate's PyTorch dynamic Linear (its
    // quantized input dequantized through an f32 Linear with the dequantized weight).
    let mut g = Lcg::seeded(11);
    let x = g.array3(6, 5, 32, 3.0);
    let w = g.array2(16, 32, 0.5);
    let b = Array1::from_shape_fn(16, |i| i as f32 * 0.01);
    let (layer, given) = dynamic_layer(&w, &b);
    for (batch, full) in [(1, false), (3, false), (4, true), (6, true)] {
        let layer = if full {
            layer.clone().with_full_range()
        } else {
            layer.clone()
        };
        let replay = LinearReplay::new(
            x.view().into_dyn(),
            w.view(),
            Some(b.view()),
            None,
            Some(batch),
            1000,
        )?
        .with_given_weight(given.view())?;
        let scheme = LinearScheme::new(ReplayWeights::Given, dynamic(!full, false));
        let got = replay.output(&scheme)?;
        let want = per_call(&layer, &x, batch, false);
        let d = rel_diff(&want, &got);
        assert!(
            d < 1e-6,
            "batch {batch}, full {full}: relative difference {d}"
        );
    }
    // Int 8 per-tensor symmetric weights are the same dequantized weight (scale max|w|/127.5).
    let replay = LinearReplay::new(
        x.view().into_dyn(),
        w.view(),
        Some(b.view()),
        None,
        None,
        1000,
    )?;
    let got = replay.output(&LinearScheme::PYTORCH_DYNAMIC)?;
    assert!(rel_diff(&per_call(&layer, &x, 1, false), &got) < 1e-6);
    Ok(())
}

#[test]
fn infer_scheme_finds_how_the_output_was_made() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(5);
    let mut x = g.array3(8, 6, 48, 1.0);
    // Rows of different ranges, so per token and per tensor differ clearly.
    for (t, mut row) in x.axis_iter_mut(Axis(1)).enumerate() {
        row *= 1.0 + 3.0 * t as f32;
    }
    let w = g.array2(24, 48, 0.3);
    let b = Array1::zeros(24);
    let base = LinearReplay::new(
        x.view().into_dyn(),
        w.view(),
        Some(b.view()),
        None,
        Some(2),
        10_000,
    )?;
    for acts in [
        dynamic(true, false),
        dynamic(false, false),
        dynamic(false, true),
        ReplayActivations::Float,
    ] {
        let made = base.output(&LinearScheme::new(INT8_PT_SYM, acts))?;
        let actual = made.into_shape_with_order((8, 6, 24)).expect("rows");
        let replay = base.clone().with_actual(actual.view().into_dyn())?;
        let (scheme, db) = replay.infer_scheme()?;
        assert_eq!(
            scheme.activations, acts,
            "made with {acts:?}, inferred {scheme}"
        );
        assert_eq!(scheme.weights, INT8_PT_SYM);
        assert!(db > 100.0, "replay of its own scheme: {db} dB");
    }
    // The integer path of the crate's dynamic layer (7-bit), with its dumped weight.
    let (layer, given) = dynamic_layer(&w, &b);
    let actual = per_call(&layer, &x, 2, true)
        .into_shape_with_order((8, 6, 24))
        .expect("rows");
    let replay = base
        .clone()
        .with_given_weight(given.view())?
        .with_actual(actual.view().into_dyn())?;
    let (scheme, db) = replay.infer_scheme()?;
    assert_eq!(
        scheme,
        LinearScheme::new(ReplayWeights::Given, dynamic(true, false))
    );
    assert!(db > 60.0, "{db}");
    // The actual output's own SQNR is what the inferred scheme replays.
    let actual_db = replay.actual_sqnr_db().expect("actual given");
    let replay_db = replay.sqnr_db(&scheme)?;
    assert!(
        (actual_db - replay_db).abs() < 0.1,
        "{actual_db} vs {replay_db}"
    );
    Ok(())
}

#[test]
fn smoothquant_helps_on_outlier_channels_and_survives_zero_channels() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(7);
    let mut x = g.array3(8, 16, 64, 1.0);
    for c in [3, 17, 40] {
        x.slice_mut(s![.., .., c]).mapv_inplace(|v| v * 100.0);
    }
    let w = g.array2(32, 64, 0.2);
    let replay = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, Some(4), 512)?;
    let current = LinearScheme::PYTORCH_DYNAMIC;
    let plain = replay.sqnr_db(&current)?;
    let smooth = replay.sqnr_db(&current.with_smooth_alpha(0.5))?;
    assert!(smooth > plain + 3.0, "{plain} -> {smooth}");
    let remedies = replay.remedies(&current, 0.5)?;
    let sq = remedies
        .iter()
        .find(|r| matches!(r.change, Change::SmoothQuant { .. }))
        .expect("SmoothQuant among the remedies");
    assert!(sq.gain_db > 3.0);
    assert_eq!(
        remedies
            .iter()
            .filter(|r| matches!(r.change, Change::SmoothQuant { .. }))
            .count(),
        1
    );

    // A zero input channel and a zero weight column: s = 1 there, no NaN, no panic.
    x.slice_mut(s![.., .., 5]).fill(0.0);
    let mut w = w;
    w.column_mut(9).fill(0.0);
    let replay = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, Some(4), 512)?;
    for alpha in [0.25, 0.5, 0.75] {
        let db = replay.sqnr_db(&current.with_smooth_alpha(alpha))?;
        assert!(db.is_finite(), "alpha {alpha}: {db}");
    }
    // Given weights under SmoothQuant are the float weight re-quantized int8 per tensor.
    let given = replay
        .output(&LinearScheme::new(INT8_PT_SYM, current.activations).with_smooth_alpha(0.5))?;
    let replay = replay.with_given_weight(w.view())?;
    let from_given = replay.output(
        &LinearScheme::new(ReplayWeights::Given, current.activations).with_smooth_alpha(0.5),
    )?;
    assert_eq!(given, from_given);
    Ok(())
}

#[test]
fn per_token_beats_per_tensor_when_row_ranges_differ() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(9);
    let mut x = g.array3(4, 16, 64, 1.0);
    // One row in 8 has a 100x range: the per-call range is set by it, and the other rows
    // (most of them) get a step 100x too coarse.
    for (t, mut row) in x.axis_iter_mut(Axis(1)).enumerate() {
        if t % 8 == 0 {
            row *= 100.0;
        }
    }
    let w = g.array2(32, 64, 0.2);
    let replay = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, None, 512)?;
    let current = LinearScheme::new(INT8_PT_SYM, dynamic(true, false));
    let tensor = replay.sqnr_db(&current)?;
    let token = replay.sqnr_db(&LinearScheme::new(INT8_PT_SYM, dynamic(true, true)))?;
    assert!(token > tensor + 6.0, "{tensor} -> {token}");
    let remedies = replay.remedies(&current, 0.5)?;
    let r = remedies
        .iter()
        .find(|r| r.change == Change::PerTokenActivations)
        .expect("per-token among the remedies");
    assert!((r.sqnr_db - token).abs() < 1e-9);
    assert!((r.gain_db - (token - tensor)).abs() < 1e-9);
    Ok(())
}

#[test]
fn per_channel_weights_beat_per_tensor_when_channel_ranges_differ() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(13);
    let x = g.array3(4, 8, 64, 1.0);
    // One output channel in 16 has a 100x range: per tensor, the other channels get its
    // step. (Channels alternating 1x / 100x would show less: the SQNR over all outputs is
    // dominated by the large channels either way.)
    let mut w = g.array2(32, 64, 0.01);
    for (o, mut row) in w.outer_iter_mut().enumerate() {
        if o % 16 == 0 {
            row *= 100.0;
        }
    }
    let replay = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, None, 512)?;
    let current = LinearScheme::new(INT8_PT_SYM, ReplayActivations::Float);
    let remedies = replay.remedies(&current, 0.5)?;
    let pc = remedies
        .iter()
        .find(|r| r.change == Change::PerChannelWeights)
        .expect("per-channel among the remedies");
    assert!(pc.gain_db > 10.0, "{}", pc.gain_db);
    // The layer is above 20 dB already, so fp16 (larger gain) ranks first; per-channel is
    // the best change that stays in int8.
    let int8 = remedies
        .iter()
        .find(|r| r.change.cost() == qnumeric::diagnose::Cost::Int8)
        .expect("an int8 remedy");
    assert_eq!(int8.change, Change::PerChannelWeights, "{remedies:?}");
    Ok(())
}

#[test]
fn three_bit_given_weights_make_eight_bits_the_top_remedy() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(17);
    let x = g.array3(8, 8, 64, 1.0);
    let w = g.array2(32, 64, 0.5);
    // 3-bit per-tensor symmetric: -4..=3, scale max|w| / 3.5 (PyTorch's symmetric rule).
    let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 3.5;
    let given = w.mapv(|v| (v / scale).round_ties_even().clamp(-4.0, 3.0) * scale);
    let replay = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, Some(8), 512)?
        .with_given_weight(given.view())?;
    let current = LinearScheme::new(ReplayWeights::Given, dynamic(true, false));
    let remedies = replay.remedies(&current, 0.5)?;
    let top = &remedies[0];
    assert_eq!(top.change, Change::WeightBits { bits: 8 }, "{remedies:#?}");
    assert!(top.gain_db > 10.0, "{}", top.gain_db);
    // fp16 gains more but leaves int8: it comes after.
    let fp16 = remedies
        .iter()
        .position(|r| {
            r.change
                == Change::KeepIn {
                    precision: Precision::F16,
                }
        })
        .expect("fp16 among the remedies");
    assert!(fp16 > 0);
    // As a Remedy, the effect is local and gain_db() returns it.
    let remedy = top.to_remedy(
        Some("fc"),
        qnumeric::diagnose::Evidence::Calibration { findings: vec![] },
    );
    assert_eq!(remedy.gain_db(), Some(top.gain_db));
    assert!(matches!(remedy.effect, Effect::Local { .. }));
    assert!(!remedy.change.is_applicable());
    // A plan cannot carry it: a typed error, not a panic.
    let plan = qnumeric::diagnose::QuantPlan::new(qnumeric::ptq::PtqConfig::default());
    assert!(matches!(
        plan.apply(&remedy),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    Ok(())
}

#[test]
fn static_remedies_try_the_other_calibrators_and_dynamic() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(19);
    let mut x = g.array3(8, 8, 32, 1.0);
    x[[0, 0, 0]] = 300.0; // one outlier: min/max wastes the range
    let w = g.array2(16, 32, 0.5);
    let replay = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, None, 512)?;
    let current = LinearScheme::new(
        INT8_PT_SYM,
        ReplayActivations::Static {
            bits: 8,
            calibrator: Calibrator::MinMax,
        },
    );
    let all = replay.remedies(&current, f64::NEG_INFINITY)?;
    for c in [
        Calibrator::Histogram,
        Calibrator::Percentile9999,
        Calibrator::Entropy,
        Calibrator::Mse,
    ] {
        assert!(
            all.iter()
                .any(|r| r.change == Change::Observer { calibrator: c })
        );
    }
    assert!(!all.iter().any(|r| r.change
        == Change::Observer {
            calibrator: Calibrator::MinMax
        }));
    assert!(all.iter().any(|r| r.change == Change::DynamicLinear));
    Ok(())
}

#[test]
fn padded_rows_do_not_count_but_do_widen_dynamic_ranges() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(23);
    let x = g.array3(4, 8, 32, 1.0);
    let w = g.array2(16, 32, 0.5);
    let mut mask = Array2::<f32>::ones((4, 8));
    mask.slice_mut(s![.., 6..]).fill(0.0);
    let mut garbage = x.clone();
    garbage.slice_mut(s![.., 6.., ..]).fill(50.0);
    let clean = LinearReplay::new(
        x.view().into_dyn(),
        w.view(),
        None,
        Some(mask.view()),
        None,
        512,
    )?;
    let dirty = LinearReplay::new(
        garbage.view().into_dyn(),
        w.view(),
        None,
        Some(mask.view()),
        None,
        512,
    )?;
    assert_eq!(clean.kept_rows(), 24);
    // Padding takes no part in the figures: schemes without a per-call range agree exactly.
    for scheme in [
        LinearScheme::new(INT8_PT_SYM, ReplayActivations::Float),
        LinearScheme::new(INT8_PT_SYM, dynamic(true, true)),
        LinearScheme::new(
            INT8_PT_SYM,
            ReplayActivations::Static {
                bits: 8,
                calibrator: Calibrator::MinMax,
            },
        ),
        LinearScheme::new(
            ReplayWeights::Rounded(Precision::BF16),
            ReplayActivations::Rounded(Precision::BF16),
        ),
    ] {
        assert_eq!(clean.sqnr_db(&scheme)?, dirty.sqnr_db(&scheme)?, "{scheme}");
    }
    // Dynamic per-tensor ranges are the model's: the padded garbage widened them.
    let scheme = LinearScheme::PYTORCH_DYNAMIC;
    let (c, d) = (clean.sqnr_db(&scheme)?, dirty.sqnr_db(&scheme)?);
    assert!(d < c - 10.0, "clean {c}, with garbage padding {d}");
    Ok(())
}

#[test]
fn max_rows_keeps_an_even_deterministic_subsample() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(29);
    let x = g.array3(10, 10, 8, 1.0);
    let w = g.array2(4, 8, 0.5);
    let r = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, None, 25)?;
    assert_eq!(
        r.kept_positions(),
        (0..25).map(|i| i * 4).collect::<Vec<_>>().as_slice()
    );
    // Two-dimensional input: T = 1.
    let x2 = g.array2(7, 8, 1.0);
    let r = LinearReplay::new(x2.view().into_dyn(), w.view(), None, None, None, 100)?;
    assert_eq!(r.kept_rows(), 7);
    let float = LinearScheme::new(ReplayWeights::Float, ReplayActivations::Float);
    assert!(r.sqnr_db(&float)?.is_infinite());
    Ok(())
}

#[test]
fn bad_inputs_are_typed_errors() {
    let x = Array3::<f32>::ones((2, 3, 4));
    let xd = x.view().into_dyn();
    let w = Array2::<f32>::ones((5, 4));
    let b = Array1::<f32>::zeros(5);
    let ok = |r: qnumeric::Result<LinearReplay>| r.expect("valid");
    let err = |r: qnumeric::Result<LinearReplay>| r.expect_err("refused");

    let w_bad = Array2::<f32>::ones((5, 3));
    assert!(matches!(
        err(LinearReplay::new(
            xd.clone(),
            w_bad.view(),
            None,
            None,
            None,
            8
        )),
        QuantError::ShapeMismatch { .. }
    ));
    let b_bad = Array1::<f32>::zeros(4);
    assert!(matches!(
        err(LinearReplay::new(
            xd.clone(),
            w.view(),
            Some(b_bad.view()),
            None,
            None,
            8
        )),
        QuantError::LengthMismatch { .. }
    ));
    let m_bad = Array2::<f32>::ones((3, 2));
    assert!(matches!(
        err(LinearReplay::new(
            xd.clone(),
            w.view(),
            None,
            Some(m_bad.view()),
            None,
            8
        )),
        QuantError::ShapeMismatch { .. }
    ));
    let m_empty = Array2::<f32>::zeros((2, 3));
    assert!(matches!(
        err(LinearReplay::new(
            xd.clone(),
            w.view(),
            None,
            Some(m_empty.view()),
            None,
            8
        )),
        QuantError::InvalidParameter { .. }
    ));
    assert!(matches!(
        err(LinearReplay::new(
            xd.clone(),
            w.view(),
            None,
            None,
            Some(0),
            8
        )),
        QuantError::InvalidParameter {
            what: "batch_size",
            ..
        }
    ));
    assert!(matches!(
        err(LinearReplay::new(xd.clone(), w.view(), None, None, None, 0)),
        QuantError::InvalidParameter {
            what: "max_rows",
            ..
        }
    ));
    let x1 = ArrayD::<f32>::zeros(IxDyn(&[4]));
    assert!(matches!(
        err(LinearReplay::new(x1.view(), w.view(), None, None, None, 8)),
        QuantError::InvalidParameter { .. }
    ));
    let mut x_nan = x.clone();
    x_nan[[1, 2, 3]] = f32::NAN;
    assert_eq!(
        err(LinearReplay::new(
            x_nan.view().into_dyn(),
            w.view(),
            None,
            None,
            None,
            8
        )),
        QuantError::NanInput {
            op: "LinearReplay::new",
            index: 23
        }
    );
    let mut x_inf = x.clone();
    x_inf[[0, 0, 1]] = f32::NEG_INFINITY;
    assert!(matches!(
        err(LinearReplay::new(
            x_inf.view().into_dyn(),
            w.view(),
            None,
            None,
            None,
            8
        )),
        QuantError::InfiniteInput { index: 1, .. }
    ));
    let mut w_nan = w.clone();
    w_nan[[0, 0]] = f32::INFINITY;
    assert!(matches!(
        err(LinearReplay::new(
            xd.clone(),
            w_nan.view(),
            None,
            None,
            None,
            8
        )),
        QuantError::NonFinite { what: "weight", .. }
    ));

    let r = ok(LinearReplay::new(
        xd.clone(),
        w.view(),
        Some(b.view()),
        None,
        Some(2),
        8,
    ));
    assert!(matches!(
        r.clone().with_given_weight(w_bad.view()),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        r.clone().with_given_weight(w_nan.view()),
        Err(QuantError::NonFinite { .. })
    ));
    let shadow_bad = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 4]));
    assert!(matches!(
        r.clone().with_reference(shadow_bad.view()),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        r.clone().with_actual(shadow_bad.view()),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        r.infer_scheme(),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    assert!(r.actual_sqnr_db().is_none());
    let given = LinearScheme::new(ReplayWeights::Given, ReplayActivations::Float);
    assert!(matches!(
        r.output(&given),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    for bits in [0u8, 1, 9, 255] {
        let s = LinearScheme::new(
            ReplayWeights::Int {
                bits,
                per_channel: false,
                symmetric: true,
            },
            ReplayActivations::Float,
        );
        assert!(matches!(
            r.output(&s),
            Err(QuantError::InvalidParameter {
                what: "weight bits",
                ..
            })
        ));
        let s = LinearScheme::new(
            ReplayWeights::Float,
            ReplayActivations::Dynamic {
                bits,
                reduce_range: false,
                per_token: false,
            },
        );
        assert!(matches!(
            r.output(&s),
            Err(QuantError::InvalidParameter {
                what: "activation bits",
                ..
            })
        ));
        let s = LinearScheme::new(
            ReplayWeights::Float,
            ReplayActivations::Static {
                bits,
                calibrator: Calibrator::Mse,
            },
        );
        assert!(matches!(
            r.sqnr_db(&s),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
    for alpha in [0.0, 1.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
        let s = LinearScheme::PYTORCH_DYNAMIC.with_smooth_alpha(alpha);
        assert!(matches!(
            r.output(&s),
            Err(QuantError::InvalidParameter {
                what: "smooth_alpha",
                ..
            })
        ));
    }
    assert!(matches!(
        r.remedies(&LinearScheme::PYTORCH_DYNAMIC, f64::NAN),
        Err(QuantError::InvalidParameter { .. })
    ));
    // Every bit width 2..=8 works, with and without reduce_range.
    for bits in 2..=8u8 {
        for reduce_range in [false, true] {
            let s = LinearScheme::new(
                ReplayWeights::Int {
                    bits,
                    per_channel: bits % 2 == 0,
                    symmetric: bits % 3 != 0,
                },
                ReplayActivations::Dynamic {
                    bits,
                    reduce_range,
                    per_token: reduce_range,
                },
            );
            r.sqnr_db(&s).expect("valid widths");
        }
    }
}

#[test]
fn the_reference_is_the_shadow_when_given() -> qnumeric::Result<()> {
    let mut g = Lcg::seeded(31);
    let x = g.array3(3, 4, 8, 1.0);
    let w = g.array2(6, 8, 0.5);
    let r = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, None, 100)?;
    let float = LinearScheme::new(ReplayWeights::Float, ReplayActivations::Float);
    let shadow = (r.output(&float)? * 1.01)
        .into_shape_with_order((3, 4, 6))
        .expect("rows");
    let r = r.with_reference(shadow.view().into_dyn())?;
    let db = r.sqnr_db(&float)?;
    // |y − 1.01·y| / |1.01·y| = 0.01/1.01 → 40.086 dB.
    assert!((db - 20.0 * (1.01f64 / 0.01).log10()).abs() < 1e-3, "{db}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::cases(48)))]

    /// Random shapes, values (with occasional huge, zero or non-finite ones), masks and
    /// schemes: every call returns Ok or a typed Err, never panics.
    #[test]
    fn ok_or_typed_err(
        n in 0usize..4, t in 1usize..4, k in 0usize..6, o in 0usize..5,
        seed in any::<u64>(),
        scale in prop_oneof![Just(0.0f32), Just(1.0), Just(1e-30), Just(1e30), Just(3e38)],
        poison in 0u8..8,
        batch in 0usize..4, max_rows in 0usize..6,
        bits in 1u8..10, alpha in prop_oneof![Just(None), Just(Some(0.5)), Just(Some(1.0))],
        masked in any::<bool>(),
        weight_bits in 1u8..10,
    ) {
        let mut g = Lcg::seeded(seed);
        let mut x = g.array3(n, t, k, scale);
        if poison == 0 && !x.is_empty() {
            x[[0, 0, 0]] = f32::NAN;
        }
        let w = g.array2(o, k, 1.0);
        let mask = Array2::from_shape_fn((n, t), |(i, j)| f32::from(u8::from(!masked || (i + j) % 2 == 0)));
        let r = LinearReplay::new(
            x.view().into_dyn(),
            w.view(),
            None,
            Some(mask.view()),
            (batch > 0).then_some(batch).or(if batch == 0 && poison == 1 { Some(0) } else { None }),
            max_rows,
        );
        let r = match r {
            Ok(r) => r,
            Err(e) => { prop_assert!(!e.op().is_empty()); return Ok(()); }
        };
        let r = r.with_given_weight(w.view()).expect("same shape");
        for weights in [
            ReplayWeights::Given,
            ReplayWeights::Int { bits: weight_bits, per_channel: true, symmetric: false },
            ReplayWeights::Rounded(Precision::F16),
        ] {
            for activations in [
                ReplayActivations::Dynamic { bits, reduce_range: true, per_token: false },
                ReplayActivations::Static { bits, calibrator: Calibrator::Entropy },
                ReplayActivations::Rounded(Precision::BF16),
            ] {
                let scheme = LinearScheme { weights, activations, smooth_alpha: alpha };
                match r.sqnr_db(&scheme) {
                    Ok(_) => {}
                    Err(e) => prop_assert!(!e.op().is_empty()),
                }
                match r.remedies(&scheme, 0.0) {
                    Ok(v) => prop_assert!(v.iter().all(|x| x.gain_db > 0.0)),
                    Err(e) => prop_assert!(!e.op().is_empty()),
                }
            }
        }
    }
}

/// Timing report for a dump-sized layer: input [64, 32, 1536] → 384, `max_rows` 512.
#[test]
#[ignore = "report; run with --release --ignored --nocapture"]
fn replay_timing_report() -> qnumeric::Result<()> {
    use std::time::Instant;
    let mut g = Lcg::seeded(37);
    let x = g.array3(64, 32, 1536, 1.0);
    let w = g.array2(384, 1536, 0.05);
    let b = Array1::zeros(384);
    let mut mask = Array2::<f32>::ones((64, 32));
    mask.slice_mut(s![.., 24..]).fill(0.0);
    let t0 = Instant::now();
    let replay = LinearReplay::new(
        x.view().into_dyn(),
        w.view(),
        Some(b.view()),
        Some(mask.view()),
        Some(8),
        512,
    )?;
    let built = t0.elapsed();
    let _ = replay.reference();
    let current = LinearScheme::PYTORCH_DYNAMIC;
    let t1 = Instant::now();
    let db = replay.sqnr_db(&current)?;
    let one = t1.elapsed();
    let t2 = Instant::now();
    let remedies = replay.remedies(&current, 0.0)?;
    let all = t2.elapsed();
    println!(
        "new: {built:.2?}; one replay (sqnr_db, {db:.1} dB): {one:.2?}; remedies ({} kept): {all:.2?}",
        remedies.len()
    );
    for r in &remedies {
        println!("  {:?}: {:.1} dB ({:+.1})", r.change, r.sqnr_db, r.gain_db);
    }
    Ok(())
}
