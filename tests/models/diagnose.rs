//! The diagnosis: the kernel check flags each buggy kernel and passes the reference ones; the
//! calibration audit flags a calibration set that is too small and one-sided.

use ndarray::{ArrayD, IxDyn};
use qnumeric::diagnose::{
    CaseKind, KernelCheck, KernelInputs, KernelOp, KernelTolerance, KernelVerdict,
};
use qnumeric::nn::quantized::{Int8Accumulation, QuantizedAdd, QuantizedConv2d, QuantizedLinear};
use qnumeric::nn::{Activation, Conv2d, Linear, Module};
use qnumeric::{QParams, QuantError, Result};

/// The crate's integer path for every op (a correct, non-reference kernel).
fn integer_kernel(mode: Int8Accumulation) -> impl FnMut(&KernelInputs) -> Result<ArrayD<u8>> {
    move |inputs| {
        let y = match inputs {
            KernelInputs::Quantize { x, qparams } => return qnumeric::quantize(x, qparams),
            KernelInputs::Linear {
                x,
                weight,
                bias,
                output,
            } => QuantizedLinear::new(weight.clone(), bias.clone(), *output)?
                .with_accumulation(mode)
                .forward(&Activation::Quantized(x.clone()))?,
            KernelInputs::Conv2d {
                x,
                weight,
                bias,
                geometry,
                output,
            } => QuantizedConv2d::new(weight.clone(), bias.clone(), *geometry, *output)?
                .with_accumulation(mode)
                .forward(&Activation::Quantized(x.clone()))?,
            KernelInputs::Add { a, b, output } => QuantizedAdd::new(*output)?.forward_many(&[
                &Activation::Quantized(a.clone()),
                &Activation::Quantized(b.clone()),
            ])?,
            _ => unreachable!("every op is listed"),
        };
        Ok(y.as_quantized()?.int_repr().clone())
    }
}

/// The float result of the op (before requantization) and its output parameters.
fn float_result(inputs: &KernelInputs) -> Result<(ArrayD<f32>, QParams)> {
    Ok(match inputs {
        KernelInputs::Quantize { x, qparams } => (x.clone(), *qparams),
        KernelInputs::Linear {
            x,
            weight,
            bias,
            output,
        } => {
            let l = Linear::new(weight.to_float(), bias.clone())?;
            (
                l.forward(&Activation::Float(x.to_float()))?.into_float(),
                *output,
            )
        }
        KernelInputs::Conv2d {
            x,
            weight,
            bias,
            geometry,
            output,
        } => {
            let c = Conv2d::new(weight.to_float(), bias.clone(), *geometry)?;
            (
                c.forward(&Activation::Float(x.to_float()))?.into_float(),
                *output,
            )
        }
        KernelInputs::Add { a, b, output } => (a.to_float() + b.to_float(), *output),
        _ => unreachable!("every op is listed"),
    })
}

/// A kernel that rounds half away from zero (`f32::round`) when requantizing.
fn rounds_half_away(inputs: &KernelInputs) -> Result<ArrayD<u8>> {
    let (y, qp) = float_result(inputs)?;
    let inv = 1.0 / qp.scale();
    Ok(y.mapv(|v| ((v * inv).round() + qp.zero_point() as f32).clamp(0.0, 255.0) as u8))
}

/// A kernel whose output zero point is off by one.
fn zero_point_off_by_one(inputs: &KernelInputs) -> Result<ArrayD<u8>> {
    Ok(inputs.reference()?.mapv(|v| v.saturating_add(1)))
}

const OPS: [KernelOp; 4] = [
    KernelOp::Quantize,
    KernelOp::Linear,
    KernelOp::Conv2d,
    KernelOp::Add,
];

#[test]
fn the_reference_itself_is_exact_for_every_op() {
    for op in OPS {
        let r = KernelCheck::new(op).run(|i| i.reference()).expect("check");
        assert_eq!(
            r.verdict(&KernelTolerance::exact()),
            KernelVerdict::Exact,
            "{op:?}\n{r}"
        );
        assert!(r.total.values > 0);
    }
}

#[test]
fn the_crates_integer_kernels_pass_the_default_tolerance() {
    for op in OPS {
        let r = KernelCheck::new(op)
            .run(integer_kernel(Int8Accumulation::Exact))
            .expect("check");
        r.assert_within(&KernelTolerance::default());
    }
}

#[test]
fn rounding_half_away_from_zero_is_flagged_for_every_op() {
    for op in OPS {
        let r = KernelCheck::new(op).run(rounds_half_away).expect("check");
        assert_eq!(
            r.verdict(&KernelTolerance::default()),
            KernelVerdict::Mismatch,
            "{op:?}\n{r}"
        );
        // the ties cases are where it shows, as a systematic positive bias
        let ties = r
            .by_kind
            .iter()
            .find(|(k, _)| *k == CaseKind::Ties)
            .expect("ties")
            .1;
        assert!(ties.off_by_one > 0, "{op:?}\n{r}");
    }
}

#[test]
fn a_zero_point_off_by_one_is_flagged_for_every_op() {
    for op in OPS {
        let r = KernelCheck::new(op)
            .run(zero_point_off_by_one)
            .expect("check");
        assert_eq!(
            r.verdict(&KernelTolerance::default()),
            KernelVerdict::Mismatch,
            "{op:?}"
        );
        assert!(r.total.mean_diff() > 0.5, "{op:?}\n{r}");
    }
}

#[test]
fn x86_avx2_accumulation_on_full_range_activations_is_flagged() {
    // The saturation cases put activations at 200..255 against weights at 100..127: pairs
    // overflow 16 bits, which is what reduce_range avoids.
    for op in [KernelOp::Linear, KernelOp::Conv2d] {
        let r = KernelCheck::new(op)
            .run(integer_kernel(Int8Accumulation::X86Avx2))
            .expect("check");
        assert_eq!(
            r.verdict(&KernelTolerance::default()),
            KernelVerdict::Mismatch,
            "{op:?}\n{r}"
        );
    }
}

#[test]
fn kernel_errors_and_wrong_shapes_are_failed_cases() {
    let r = KernelCheck::new(KernelOp::Add)
        .run(|_| Err(QuantError::EmptyInput { op: "mine" }))
        .expect("check");
    assert!(r.total.failed_cases > 0);
    assert_eq!(
        r.verdict(&KernelTolerance::default()),
        KernelVerdict::Mismatch
    );
    assert!(
        r.first_failure
            .as_deref()
            .is_some_and(|s| s.contains("mine"))
    );
    let r = KernelCheck::new(KernelOp::Add)
        .run(|_| Ok::<_, QuantError>(ArrayD::zeros(IxDyn(&[0]))))
        .expect("check");
    assert!(
        r.first_failure
            .as_deref()
            .is_some_and(|s| s.contains("shape"))
    );
}

#[test]
fn real_inputs_for_another_op_are_refused() {
    let quantize = KernelCheck::new(KernelOp::Quantize)
        .generate(CaseKind::Random)
        .expect("gen");
    let check = KernelCheck::new(KernelOp::Add).with_real_inputs(quantize);
    assert!(matches!(
        check.run(|i| i.reference()),
        Err(QuantError::UnsupportedLayer { .. })
    ));
}

#[test]
fn real_inputs_are_checked_and_seeds_are_deterministic() {
    let real = KernelCheck::new(KernelOp::Linear)
        .seed(9)
        .generate(CaseKind::Random)
        .expect("gen");
    let check = KernelCheck::new(KernelOp::Linear)
        .seed(3)
        .with_real_inputs(real);
    let a = check.run(zero_point_off_by_one).expect("a");
    let b = check.run(zero_point_off_by_one).expect("b");
    assert_eq!(a, b);
    assert!(
        a.by_kind
            .iter()
            .any(|(k, s)| *k == CaseKind::Real && s.values > 0)
    );
    let c = KernelCheck::new(KernelOp::Linear)
        .seed(4)
        .run(zero_point_off_by_one)
        .expect("c");
    assert_ne!(a.total.values, 0);
    assert_ne!(format!("{:?}", a.by_kind[0]), format!("{:?}", c.by_kind[0]));
}

#[cfg(feature = "safetensors")]
use crate::model;

#[cfg(feature = "safetensors")]
mod audit {
    use super::*;
    use qnumeric::diagnose::{AuditThresholds, audit_calibration};
    use qnumeric::ptq::PtqConfig;

    use super::model;

    #[test]
    fn ten_images_of_one_digit_are_flagged() {
        let d = model::Digits::load().expect("digits");
        let ones: Vec<usize> = d
            .calib_y
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l == 1)
            .map(|(i, _)| i)
            .take(10)
            .collect();
        assert_eq!(ones.len(), 10);
        let x = d.calib.select(ndarray::Axis(0), &ones);
        let labels = vec![1i64; 10];
        let a = audit_calibration(
            &d.model,
            &PtqConfig::default(),
            &x,
            Some((&labels, Some(10))),
            &AuditThresholds::default(),
        )
        .expect("audit");
        assert!(!a.is_sound());
        assert_eq!(a.samples, 10);
        assert_eq!(a.missing_classes, vec![0, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(
            a.findings
                .iter()
                .any(|f| f.contains("only 10 calibration samples")),
            "{a}"
        );
        assert!(
            a.findings
                .iter()
                .any(|f| f.contains("no calibration sample")),
            "{a}"
        );
    }

    #[test]
    fn the_shipped_calibration_set_covers_every_class() {
        let d = model::Digits::load().expect("digits");
        let mut fused = d.model.clone();
        qnumeric::fusion::fuse_auto(&mut fused).expect("fuse");
        let a = audit_calibration(
            &fused,
            &PtqConfig::default(),
            &d.calib,
            Some((&d.calib_y, Some(10))),
            &AuditThresholds::default(),
        )
        .expect("audit");
        assert_eq!(a.samples, 200);
        assert!(a.missing_classes.is_empty());
        assert!(a.sparse_classes.is_empty(), "{a}");
        let names: Vec<&str> = a.observers.iter().map(|o| o.layer.as_str()).collect();
        assert_eq!(names, ["quant", "conv1", "conv2", "fc1", "fc2"], "{a}");
    }

    #[test]
    fn audit_errors() {
        let d = model::Digits::load().expect("digits");
        let empty = ArrayD::<f32>::zeros(IxDyn(&[0, 1, 8, 8]));
        assert!(matches!(
            audit_calibration(
                &d.model,
                &PtqConfig::default(),
                &empty,
                None,
                &AuditThresholds::default()
            ),
            Err(QuantError::EmptyInput { .. })
        ));
        assert!(matches!(
            audit_calibration(
                &d.model,
                &PtqConfig::default(),
                &d.calib,
                Some((&[1, 2], None)),
                &AuditThresholds::default()
            ),
            Err(QuantError::LengthMismatch { .. })
        ));
    }
}

#[cfg(feature = "safetensors")]
mod measured {
    use super::model;
    use qnumeric::diagnose::{Budget, Diagnoser, EvalData, Precision};
    use qnumeric::fusion::fuse_auto;
    use qnumeric::nn::Sequential;
    use qnumeric::nn::quantized::Int8Accumulation;

    fn fused() -> (model::Digits, Sequential) {
        let d = model::Digits::load().expect("digits");
        let mut m = d.model.clone();
        fuse_auto(&mut m).expect("fuse");
        (d, m)
    }

    #[test]
    fn sensitivity_reduce_range_precisions_and_the_mixed_plan_on_digits() {
        let (d, m) = fused();
        let eval = EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        };
        let dg = Diagnoser::new(&m, &d.calib, eval).expect("diagnoser");
        assert_eq!(dg.float_quality().accuracy, Some(0.992));
        let s = dg.sensitivity().expect("sensitivity");
        println!("{s}");
        let names: Vec<&str> = s.rows.iter().map(|r| r.layer.as_str()).collect();
        assert_eq!(names, ["conv1", "conv2", "fc1", "fc2"]);
        // keeping a layer in float never loses much, and one layer alone in int8 beats all of them
        for r in &s.rows {
            assert!(
                r.only_this_quantized.sqnr_db > s.all_quantized.sqnr_db,
                "{s}"
            );
        }
        let rr = dg.reduce_range().expect("reduce_range");
        println!("{rr:#?}");
        assert_eq!(rr.rows.len(), 4);
        let q = |on: bool, acc: Int8Accumulation| {
            rr.rows
                .iter()
                .find(|r| r.reduce_range == on && r.accumulation == acc)
                .expect("row")
                .quality
                .sqnr_db
        };
        // with reduce_range the two accumulations agree (no pair can saturate)
        assert_eq!(
            q(true, Int8Accumulation::Exact),
            q(true, Int8Accumulation::X86Avx2)
        );
        // full range is finer on an exact CPU
        assert!(q(false, Int8Accumulation::Exact) > q(true, Int8Accumulation::Exact));
        for p in [Precision::F16, Precision::BF16, Precision::F32] {
            let qf = dg.with_layer_in("conv2", p).expect("precision");
            println!("conv2 in {}: {qf}", p.name());
        }
        let dynamic = dg.dynamic().expect("dynamic");
        println!("dynamic: {dynamic}");
        let plan = dg
            .mixed_plan(&Budget {
                min_sqnr_db: Some(42.0),
                max_accuracy_drop: Some(0.0),
            })
            .expect("plan");
        println!("{plan:?}");
        assert!(plan.meets_budget);
        assert!(plan.quality.sqnr_db >= 42.0);
        let sweep = dg.observer_sweep("conv2").expect("sweep");
        assert!(sweep.results.len() >= 5);
    }
}

#[cfg(feature = "safetensors")]
use crate::faults;

#[cfg(feature = "safetensors")]
mod verdicts {
    use super::{faults, model};
    use qnumeric::diagnose::{
        Change, DiagnoseOptions, Diagnosis, EvalData, Quantized, RemedyDepth, Verdict, diagnose,
    };
    use qnumeric::fusion::fuse_auto;
    use qnumeric::nn::Sequential;
    use qnumeric::ptq::{PtqConfig, prepare};

    fn fused(d: &model::Digits) -> Sequential {
        let mut m = d.model.clone();
        fuse_auto(&mut m).expect("fuse");
        m
    }

    fn named() -> DiagnoseOptions {
        DiagnoseOptions {
            remedies: RemedyDepth::Named,
            ..DiagnoseOptions::default()
        }
    }

    fn verdict_of(d: &Diagnosis, layer: &str) -> Verdict {
        d.layers
            .iter()
            .find(|l| l.name == layer)
            .expect("layer compared")
            .verdict
    }

    #[test]
    fn the_healthy_model_gets_no_verdict() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let mut opts = named();
        opts.calib_labels = Some((d.calib_y.clone(), Some(10)));
        let eval = EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        };
        let dg = diagnose(
            &m,
            Quantized::Config(PtqConfig::default()),
            &d.calib,
            eval,
            &opts,
        )
        .expect("diagnosis");
        println!("{dg}");
        assert_eq!(dg.verdict, Verdict::Fine, "{dg}");
        assert_eq!(dg.first_layer, None);
        assert!(dg.audit.is_sound(), "{}", dg.audit);
    }

    #[test]
    fn bright_outlier_images_are_data_sensitive_and_among_the_worst_samples() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let (x, bright) = faults::bright_images(&d.test_x, 20, 4.0);
        let eval = EvalData {
            inputs: &x,
            labels: Some(&d.test_y),
        };
        let dg = diagnose(
            &m,
            Quantized::Config(PtqConfig::default()),
            &d.calib,
            eval,
            &named(),
        )
        .expect("diagnosis");
        println!("{dg}");
        assert_eq!(dg.verdict, Verdict::DataSensitive, "{dg}");
        assert_eq!(dg.first_layer.as_deref(), Some("quant"), "{dg}");
        assert!(
            dg.worst_samples.iter().all(|s| bright.contains(s)),
            "{:?}",
            dg.worst_samples
        );
    }

    #[test]
    fn coarse_per_tensor_weights_are_data_insensitive_at_that_layer() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let eval = EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        };
        let cfg = faults::coarse_weights("conv2").expect("config");
        let dg = diagnose(&m, Quantized::Config(cfg), &d.calib, eval, &named()).expect("diagnosis");
        println!("{dg}");
        assert_eq!(verdict_of(&dg, "conv2"), Verdict::DataInsensitive, "{dg}");
        assert_eq!(dg.first_layer.as_deref(), Some("conv2"), "{dg}");
    }

    #[test]
    fn a_buggy_kernel_is_an_implementation_error() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let mut p = prepare(m.clone(), &PtqConfig::default()).expect("prepare");
        p.calibrate(&d.calib).expect("calibrate");
        let mut int8 = p.convert().expect("convert");
        faults::buggy_kernel(&mut int8, "fc1").expect("inject");
        let eval = EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        };
        let dg = diagnose(
            &m,
            Quantized::Model(&int8, PtqConfig::default()),
            &d.calib,
            eval,
            &named(),
        )
        .expect("diagnosis");
        println!("{dg}");
        assert_eq!(dg.verdict, Verdict::Implementation, "{dg}");
        assert_eq!(verdict_of(&dg, "fc1"), Verdict::Implementation, "{dg}");
        assert_eq!(dg.remedies[0].change, Change::FixKernel, "{dg}");
        assert_eq!(dg.remedies[0].layer.as_deref(), Some("fc1"), "{dg}");
        // the correct layers are not flagged as implementation errors
        assert!(
            dg.layers
                .iter()
                .filter(|l| l.name != "fc1")
                .all(|l| l.verdict != Verdict::Implementation),
            "{dg}"
        );
    }

    #[test]
    fn calibration_on_ten_images_of_one_digit_is_flagged_by_the_audit() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let (calib, labels) = faults::one_digit(&d.calib, &d.calib_y, 3, 10);
        let mut opts = named();
        opts.calib_labels = Some((labels, Some(10)));
        let eval = EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        };
        let dg = diagnose(
            &m,
            Quantized::Config(PtqConfig::default()),
            &calib,
            eval,
            &opts,
        )
        .expect("diagnosis");
        println!("{dg}");
        assert!(!dg.audit.is_sound());
        assert!(
            dg.remedies
                .iter()
                .any(|r| r.change == Change::MoreCalibrationData),
            "{dg}"
        );
        let html = dg.to_html();
        assert!(
            html.starts_with("<!DOCTYPE html>")
                && html.contains("<svg")
                && !html.contains("http://")
                && !html.contains("https://")
        );
    }
}

mod never_panics {
    use ndarray::{ArrayD, IxDyn};
    use proptest::prelude::*;
    use qnumeric::diagnose::{
        ActivationHistogram, CaseKind, KernelCheck, KernelOp, Precision, Thresholds,
        diagnose_report,
    };
    use qnumeric::ns::{NsReport, NumericLog};

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            -10.0f32..10.0,
            Just(0.0),
            Just(f32::MAX),
            Just(-f32::MAX),
            Just(1e-45),
            Just(f32::NAN),
            Just(f32::INFINITY),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::cases(48)))]

        #[test]
        fn verdicts_from_pushed_pairs_never_panic(
            n in 0usize..6,
            k in 0usize..5,
            xs in prop::collection::vec(value(), 60),
            ys in prop::collection::vec(value(), 60),
            thr in -50.0f64..80.0,
        ) {
            let take = |v: &[f32]| ArrayD::from_shape_vec(IxDyn(&[n, k]), v[..n * k].to_vec()).expect("n·k values");
            let mut log = NumericLog::streaming();
            // A refused push (NaN, empty, ...) is a typed error; the log stays usable.
            let _ = log.push("a", &take(&xs), &take(&ys), None);
            let _ = log.push("b", &take(&ys), &take(&xs), None);
            let report = NsReport::from_logs(Some(&log), None);
            let t = Thresholds { min_sqnr_db: thr, ..Thresholds::default() };
            let d = diagnose_report(&report, &t).expect("finite thresholds are valid");
            prop_assert!(d.layers.len() <= 2);
            prop_assert!(!d.to_string().is_empty());
        }

        #[test]
        fn histograms_and_precisions_never_panic(xs in prop::collection::vec(value(), 0..40), bins in 0usize..70) {
            match ActivationHistogram::of("l", &xs, bins, None) {
                Ok(h) => {
                    prop_assert_eq!(h.counts.len(), bins);
                    let finite = xs.iter().filter(|v| v.is_finite()).count() as u64;
                    prop_assert_eq!(h.counts.iter().sum::<u64>(), finite);
                    prop_assert_eq!(h.non_finite, xs.len() as u64 - finite);
                }
                Err(e) => {
                    let bins_refused = matches!(e, qnumeric::QuantError::InvalidParameter { what: "bins", .. });
                    prop_assert!(bins == 0 && bins_refused, "{}", e);
                }
            }
            for &x in &xs {
                for p in [Precision::F16, Precision::BF16, Precision::F32] {
                    let r = p.round(x);
                    prop_assert!(r.is_nan() == x.is_nan());
                }
            }
        }

        #[test]
        fn kernel_checks_with_any_seed_never_panic(seed in any::<u64>(), op in 0usize..4) {
            let op = [KernelOp::Quantize, KernelOp::Linear, KernelOp::Conv2d, KernelOp::Add][op];
            let check = KernelCheck::new(op).seed(seed).cases_per_kind(2);
            for kind in [CaseKind::Random, CaseKind::Ties, CaseKind::Saturation, CaseKind::ExtremeZeroPoints, CaseKind::ExtremeScales] {
                for case in check.generate(kind).expect("generated inputs are valid") {
                    prop_assert!(case.reference().is_ok());
                }
            }
        }
    }
}

#[cfg(all(feature = "safetensors", feature = "serde"))]
#[test]
fn the_diagnosis_serializes_to_json() {
    use qnumeric::diagnose::{DiagnoseOptions, EvalData, Quantized, RemedyDepth, diagnose};
    let d = model::Digits::load().expect("digits");
    let mut m = d.model.clone();
    qnumeric::fusion::fuse_auto(&mut m).expect("fuse");
    let eval = EvalData {
        inputs: &d.test_x,
        labels: Some(&d.test_y),
    };
    let opts = DiagnoseOptions {
        remedies: RemedyDepth::Named,
        ..DiagnoseOptions::default()
    };
    let dg = diagnose(
        &m,
        Quantized::Config(qnumeric::ptq::PtqConfig::default()),
        &d.calib,
        eval,
        &opts,
    )
    .expect("diagnosis");
    let j: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&dg).expect("json")).expect("valid JSON");
    assert_eq!(j["verdict"], "fine");
    assert_eq!(j["layers"][0]["name"], "quant");
    assert!(j["audit"]["samples"].is_number());
}
