//! Models simulated in formats (`simulate`), their comparison and the diagnosis across
//! formats, on formats of the tests' own making (a coarse block format, a fine one) so the
//! expected ranking is known, and on `Int8PerRow`.

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use qnumeric::diagnose::{Change, Cost, Effect, FormatDiagnoseOptions, diagnose_formats};
use qnumeric::formats::{ElementFormat, Format, Int8PerRow};
use qnumeric::nn::{Activation, Conv2d, ConvGeometry, Flatten, Linear, Model, Module, Sequential};
use qnumeric::rng::Lcg;
use qnumeric::simulate::{FormatLayer, FormatPlan, LayerFormats, Misfit, compare_plans};
use qnumeric::{QuantError, sqnr};

/// Blocks of 32 sharing `max|x| / levels`: a toy block format with a tunable number of levels.
#[derive(Debug)]
struct Blocks {
    levels: f32,
}

impl std::fmt::Display for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocks/{}", self.levels)
    }
}

impl ElementFormat for Blocks {
    fn bits_per_element(&self) -> f64 {
        f64::from(self.levels).log2() + 1.0
    }
    fn block_len(&self) -> usize {
        32
    }
    fn fake_quantize_rows(
        &self,
        x: &[f32],
        row_len: usize,
        out: &mut [f32],
    ) -> qnumeric::Result<()> {
        if row_len == 0 || !row_len.is_multiple_of(32) || !x.len().is_multiple_of(row_len) {
            return Err(QuantError::NotMultiple {
                op: "Blocks",
                what: "row length",
                len: row_len,
                multiple_of: 32,
            });
        }
        for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 { amax / self.levels } else { 1.0 };
            for (o, v) in ob.iter_mut().zip(xb) {
                *o = (v / s).round() * s;
            }
        }
        Ok(())
    }
}

fn normal(rng: &mut Lcg) -> f32 {
    let u1 = f64::from(rng.unit_f32()).max(1e-7);
    let u2 = f64::from(rng.unit_f32());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn randn(shape: &[usize], scale: f32, seed: u64) -> ArrayD<f32> {
    let mut rng = Lcg::new(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| normal(&mut rng) * scale)
}

/// fc1 64→64 (ReLU), fc2 64→32, fc3 32→10.
fn mlp() -> Sequential {
    Sequential::new()
        .with(
            "fc1",
            Linear::new(randn(&[64, 64], 0.2, 1), Some(randn(&[64], 0.1, 2)))
                .expect("fc1")
                .with_relu(),
        )
        .expect("fc1")
        .with(
            "fc2",
            Linear::new(randn(&[32, 64], 0.2, 3), None)
                .expect("fc2")
                .with_relu(),
        )
        .expect("fc2")
        .with(
            "fc3",
            Linear::new(randn(&[10, 32], 0.3, 4), None).expect("fc3"),
        )
        .expect("fc3")
}

#[test]
fn format_layer_fake_quantizes_weights_once_and_inputs_every_call() {
    let fc = Linear::new(randn(&[4, 32], 1.0, 5), None).expect("fc");
    let coarse = Arc::new(Blocks { levels: 1.0 });
    let l = FormatLayer::new(&fc, Some(coarse.clone()), None).expect("layer");
    // Weight: every value is ±amax of its block or 0.
    let w = l.inner().weight().expect("weight");
    let w = w.to_float();
    for row in w.outer_iter() {
        let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(row.iter().all(|v| v.abs() == amax || *v == 0.0), "{row:?}");
    }
    // Inputs: the same layer with the input format gives the float layer on rounded inputs.
    let x = randn(&[3, 32], 1.0, 6);
    let both = FormatLayer::new(&fc, None, Some(coarse.clone())).expect("layer");
    let mut xq = vec![0.0f32; x.len()];
    coarse
        .fake_quantize_rows(x.as_slice().expect("std"), 32, &mut xq)
        .expect("fq");
    let xq = ArrayD::from_shape_vec(IxDyn(&[3, 32]), xq).expect("shape");
    let want = fc
        .forward(&Activation::Float(xq))
        .expect("float")
        .into_float();
    let got = both
        .forward(&Activation::Float(x))
        .expect("sim")
        .into_float();
    assert_eq!(got, want);
    assert_eq!(both.kind(), "FormatLayer");
}

#[test]
fn misfit_layers_stay_float_or_fail_as_asked() {
    // conv1's rows are C·kh·kw = 9: blocks of 32 do not fit.
    let conv =
        Conv2d::new(randn(&[2, 1, 3, 3], 0.5, 7), None, ConvGeometry::default()).expect("conv");
    let model = Sequential::new()
        .with("conv1", conv)
        .expect("conv1")
        .with("flatten", Flatten::default())
        .expect("flatten")
        .with(
            "fc",
            Linear::new(randn(&[4, 32], 0.5, 8), None).expect("fc"),
        )
        .expect("fc");
    let fmt: Format = "int8".parse().expect("int8");
    // int8 has no block: both layers simulated.
    let sim = FormatPlan::weights(fmt).simulate(&model).expect("sim");
    assert_eq!(sim.simulated.len(), 2);
    assert!(sim.kept_float.is_empty());
    // A block format through FormatLayer directly: a typed error.
    let conv1 = model.layer("conv1").expect("conv1");
    let e = FormatLayer::new(conv1, Some(Arc::new(Blocks { levels: 7.0 })), None).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::NotMultiple {
                len: 9,
                multiple_of: 32,
                ..
            }
        ),
        "{e}"
    );
    // Unknown override: NotFound.
    let e = FormatPlan::weights(fmt)
        .with_layer("nope", LayerFormats::default())
        .simulate(&model)
        .unwrap_err();
    assert!(matches!(e, QuantError::NotFound { .. }), "{e}");
    assert_eq!(
        FormatPlan::weights(fmt).with_misfit(Misfit::Error).misfit,
        Misfit::Error
    );
}

#[test]
fn compare_plans_ranks_int8_above_a_coarse_plan_layer_by_layer() {
    let model = mlp();
    let x = randn(&[96, 64], 1.0, 9);
    let int8: Format = "int8".parse().expect("int8");
    let plans = vec![
        FormatPlan::weights(int8),
        FormatPlan::weights(int8).with_layer("fc2", LayerFormats::default()),
    ];
    let cmp = compare_plans(&model, &plans, &x, 32).expect("compare");
    assert_eq!(cmp.plans.len(), 2);
    let (a, b) = (&cmp.plans[0], &cmp.plans[1]);
    assert_eq!(a.layers.len(), 3);
    assert!(
        a.output_sqnr_db > 25.0 && a.output_sqnr_db.is_finite(),
        "{}",
        a.output_sqnr_db
    );
    // fc2 in fp32: better output, more bits, fc2's own error infinite (the float layer).
    assert!(b.output_sqnr_db > a.output_sqnr_db);
    assert!(b.bits_per_weight > a.bits_per_weight);
    assert!((a.bits_per_weight - 8.0).abs() < 1e-12);
    assert!(b.layers[1].formats.is_float());
    for l in &a.layers {
        let w = l.weight_sqnr_db.expect("weight sqnr");
        assert!(w > 35.0 && w < 60.0, "{}: {w}", l.layer);
        assert!(l.local_sqnr_db.expect("local") > 25.0);
    }
    // The output SQNR is what the simulated model computes.
    let sim = plans[0].simulate(&model).expect("sim").model;
    let yf = model
        .forward(Activation::Float(x.clone()))
        .expect("f")
        .into_float();
    let ys = sim.forward(Activation::Float(x)).expect("s").into_float();
    assert_eq!(sqnr(&yf, &ys).expect("sqnr"), a.output_sqnr_db);
    let table = cmp.to_string();
    assert!(
        table.contains("fc2") && table.contains("fp32") && table.contains("int8"),
        "{table}"
    );
    assert_eq!(
        cmp.best_within(8.0).map(|p| p.output_sqnr_db),
        Some(a.output_sqnr_db)
    );
    // Bad arguments.
    assert!(matches!(
        compare_plans(&model, &[], &randn(&[4, 64], 1.0, 1), 4),
        Err(QuantError::EmptyInput { .. })
    ));
    assert!(matches!(
        compare_plans(&model, &plans, &randn(&[4, 64], 1.0, 1), 0),
        Err(QuantError::InvalidParameter { .. })
    ));
}

#[test]
fn diagnose_formats_measures_format_changes_end_to_end() {
    let model = mlp();
    let x = randn(&[96, 64], 1.0, 10);
    let int8: Format = "int8".parse().expect("int8");
    // fc2 in a much coarser plan: int8 everywhere except fc2 kept... we fault fc2 by giving
    // it fp32 in the base and checking the model-wide change, then by the worst-layer ladder.
    let plan = FormatPlan::weights(int8);
    let d = diagnose_formats(
        &model,
        &plan,
        &x,
        &FormatDiagnoseOptions::new(vec![int8]).with_min_gain_db(0.0),
    )
    .expect("diagnosis");
    assert_eq!(d.layers.len(), 3);
    assert_eq!(d.worst.len(), 3);
    // The only candidate is the current format: the remedies are the worst layers in fp32,
    // each measured end to end with a positive gain, ranked by gain.
    assert_eq!(d.remedies.len(), 3, "{d}");
    let mut last = f64::INFINITY;
    for r in &d.remedies {
        assert!(matches!(r.change, Change::KeepIn { .. }));
        let Effect::Measured { gain_db, quality } = &r.effect else {
            panic!("not measured: {r}");
        };
        assert!(*gain_db > 0.0 && quality.sqnr_db > d.quality.sqnr_db);
        assert!(*gain_db <= last + 1.0);
        last = *gain_db;
        // Applying the remedy reproduces the measurement.
        let applied = plan
            .clone()
            .apply(r)
            .expect("apply")
            .simulate(&model)
            .expect("sim")
            .model;
        let yf = model
            .forward(Activation::Float(x.clone()))
            .expect("f")
            .into_float();
        let ya = applied
            .forward(Activation::Float(x.clone()))
            .expect("a")
            .into_float();
        assert_eq!(sqnr(&yf, &ya).expect("sqnr"), quality.sqnr_db);
    }
    assert!(d.to_string().contains("remedies:"));
    // A format change's cost is its bits.
    let c = Change::WeightFormat { format: int8 };
    assert_eq!(c.cost(), Cost::Bits { hundredths: 800 });
    assert!(!c.is_applicable());
    assert!(Int8PerRow.bits_per_element() == 8.0);
    // NaN min gain: typed error.
    let e = diagnose_formats(
        &model,
        &plan,
        &x,
        &FormatDiagnoseOptions::new(vec![]).with_min_gain_db(f64::NAN),
    )
    .unwrap_err();
    assert!(matches!(e, QuantError::InvalidParameter { .. }));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -1e3f32..1e3,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::MAX),
            1 => Just(0.0f32),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// FormatLayer and the plans: Ok or a typed error, never a panic, for any weights,
        /// inputs and row lengths.
        #[test]
        fn simulated_layers_never_panic(
            o in 1usize..4,
            k in 1usize..70,
            n in 0usize..3,
            w in proptest::collection::vec(value(), 280),
            x in proptest::collection::vec(value(), 210),
            levels in 0.0f32..9.0,
        ) {
            let weight = ArrayD::from_shape_vec(IxDyn(&[o, k]), w[..o * k].to_vec()).expect("shape");
            let fc = Linear::new(weight, None);
            let Ok(fc) = fc else { return Ok(()) };
            let formats: [Arc<dyn ElementFormat>; 2] = [Arc::new(Blocks { levels }), Arc::new(Int8PerRow)];
            for f in formats {
                match FormatLayer::new(&fc, Some(f.clone()), Some(f.clone())) {
                    Ok(l) => {
                        let input = ArrayD::from_shape_vec(IxDyn(&[n, k]), x[..n * k].to_vec()).expect("shape");
                        let _ = l.forward(&Activation::Float(input));
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }
            let model = Sequential::new().with("fc", fc).expect("model");
            let int8: Format = "int8".parse().expect("int8");
            let input = ArrayD::from_shape_vec(IxDyn(&[n, k]), x[..n * k].to_vec()).expect("shape");
            let _ = compare_plans(&model, &[FormatPlan::weights(int8)], &input, 2);
        }
    }
}

#[test]
fn diagnosis_across_real_formats_finds_finer_groups_and_wider_formats() {
    let model = mlp();
    let x = randn(&[96, 64], 1.0, 11);
    let plan = FormatPlan::weights("int4-g64".parse().expect("fmt"));
    let candidates: Vec<Format> = ["int4-g32", "mxfp8", "q8_0", "nvfp4", "int4-g128"]
        .iter()
        .map(|n| n.parse().expect("fmt"))
        .collect();
    let d = diagnose_formats(&model, &plan, &x, &FormatDiagnoseOptions::new(candidates))
        .expect("diagnosis");
    // fc3's rows (32) do not fit g64: it stays f32. Finer groups and wider formats gain;
    // int4-g128 fits no layer: model-wide it would leave every layer in f32 → not measured,
    // and kept as such.
    let gains = |name: &str| {
        d.remedies
            .iter()
            .filter(|r| matches!(&r.change, Change::WeightFormat { format } if format.to_string() == name))
            .filter_map(|r| r.gain_db())
            .collect::<Vec<f64>>()
    };
    assert!(gains("q8_0").iter().any(|g| *g > 10.0), "{d}"); // model-wide
    assert!(gains("q8_0").iter().all(|g| *g > 0.5), "{d}");
    assert!(
        gains("int4-g32").iter().all(|g| *g > 0.0) && !gains("int4-g32").is_empty(),
        "{d}"
    );
    assert!(d.remedies.iter().any(|r| matches!(r.effect, Effect::NotMeasured(_))
        && matches!(&r.change, Change::WeightFormat { format } if format.to_string() == "int4-g128")), "{d}");
    // The cheapest change reaching the q8_0 figure is q8_0 or int8-class (no 4-bit one does).
    let best = d
        .remedies
        .iter()
        .filter_map(|r| r.quality())
        .map(|q| q.sqnr_db)
        .fold(f64::MIN, f64::max);
    let r = d.cheapest_reaching(best).expect("reaching the best");
    assert!(r.quality().is_some_and(|q| q.sqnr_db >= best));
    assert!(d.cheapest_reaching(f64::INFINITY).is_none());
}
