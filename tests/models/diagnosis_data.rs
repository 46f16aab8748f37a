//! The diagnosis as data (issue 17): typed remedies that a program applies to reach their
//! measured gain, failures kept as evidence, NaN outputs as findings, invalid options refused,
//! remedies below the minimum gain left out, JSON and text that survive hostile names.

use ndarray::{ArrayD, IxDyn};
use qnumeric::QuantError;
use qnumeric::diagnose::{
    ActivationHistogram, DiagnoseOptions, Thresholds, Verdict, diagnose_report,
};
use qnumeric::ns::{NsReport, NumericLog};

fn ramp(n: usize, k: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[n, k]), |i| (i[0] * k + i[1]) as f32 / 50.0 + 1.0)
}

#[test]
fn a_nan_layer_in_pushed_pairs_is_an_implementation_finding_never_fine() {
    let x = ramp(20, 8);
    let mut y = x.mapv(|v| v * 1.001);
    y[[3, 2]] = f32::NAN;
    y[[7, 0]] = f32::INFINITY;
    let mut log = NumericLog::streaming();
    log.push("a", &x, &x.mapv(|v| v * 1.001), None)
        .expect("push");
    log.push("b", &x, &y, None)
        .expect("non-finite under test is a finding");
    let report = NsReport::from_logs(Some(&log), None);
    let d = diagnose_report(&report, &Thresholds::default()).expect("valid thresholds");
    assert_eq!(d.verdict, Verdict::Implementation, "{d}");
    assert_eq!(d.first_layer.as_deref(), Some("b"), "{d}");
    let b = &d.layers[1];
    assert_eq!(
        (b.non_finite.nan, b.non_finite.pos_inf, b.non_finite.samples),
        (1, 1, 2)
    );
    assert!(
        d.to_string()
            .contains("1 NaN and 1 infinite values in 2 samples"),
        "{d}"
    );
    assert_eq!(&d.worst_samples[..2], &[3, 7]);
}

#[test]
fn invalid_thresholds_are_refused_with_typed_errors() {
    let report = NsReport::from_logs(None, None);
    let bad = [
        Thresholds {
            min_sqnr_db: f64::NAN,
            ..Thresholds::default()
        },
        Thresholds {
            min_sqnr_db: f64::INFINITY,
            ..Thresholds::default()
        },
        Thresholds {
            insensitive_fraction: -0.1,
            ..Thresholds::default()
        },
        Thresholds {
            sensitive_fraction: f64::NAN,
            ..Thresholds::default()
        },
        Thresholds {
            insensitive_fraction: 1.5,
            ..Thresholds::default()
        },
        Thresholds {
            sensitive_fraction: 0.6,
            insensitive_fraction: 0.5,
            ..Thresholds::default()
        },
    ];
    for t in bad {
        assert!(
            matches!(
                diagnose_report(&report, &t),
                Err(QuantError::InvalidParameter { .. })
            ),
            "{t:?}"
        );
        assert!(t.validate().is_err());
    }
    let mut t = Thresholds::default();
    t.kernel.max_off_by_one_fraction = f64::NAN;
    assert!(matches!(
        t.validate(),
        Err(QuantError::InvalidParameter {
            what: "kernel.max_off_by_one_fraction",
            ..
        })
    ));
    let mut t = Thresholds::default();
    t.kernel.max_abs_mean_diff = -1.0;
    assert!(t.validate().is_err());
    assert!(Thresholds::default().validate().is_ok());
    for (min_gain_db, batch_size) in [(f64::NAN, None), (-1.0, None), (0.5, Some(0))] {
        let o = DiagnoseOptions {
            min_gain_db,
            batch_size,
            ..DiagnoseOptions::default()
        };
        assert!(matches!(
            o.validate(),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
}

#[test]
fn activation_histogram_bins_are_capped_before_allocating() {
    for bins in [0, usize::MAX, 1 << 40, ActivationHistogram::MAX_BINS + 1] {
        assert!(matches!(
            ActivationHistogram::of("l", &[1.0, 2.0], bins, None),
            Err(QuantError::InvalidParameter { what: "bins", .. })
        ));
    }
    let h = ActivationHistogram::of("l", &[-f32::MAX, f32::MAX, 0.0], 4, None).expect("wide");
    assert_eq!(h.counts, vec![1, 0, 1, 1]);
}

#[test]
fn text_tables_escape_control_characters_and_stay_aligned() {
    let x = ramp(10, 4);
    let mut log = NumericLog::streaming();
    let hostile = "evil\u{1b}[31m\u{1b}]0;pwned\u{7}";
    let long = "encoder.layer.11.attention.output.dense.a.name.far.longer.than.any.column";
    for name in ["fc1", hostile, long] {
        log.push(name, &x, &x.mapv(|v| v * 1.3), None)
            .expect("push");
    }
    let report = NsReport::from_logs(Some(&log), None);
    let d = diagnose_report(&report, &Thresholds::default()).expect("diagnosis");
    for text in [d.to_string(), report.to_string()] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(text.contains("evil\\u{1b}[31m"), "{text}");
        // Every row of the layer table has its verdict column at the same offset.
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("verdict:"))
            .filter(|l| {
                l.contains(" fine ")
                    || l.contains(" data-insensitive ")
                    || l.contains(" inherited ")
            })
            .collect();
        if !rows.is_empty() {
            let col: Vec<usize> = rows
                .iter()
                .map(|l| {
                    let byte = l
                        .find(" fine ")
                        .or_else(|| l.find(" data-insensitive "))
                        .or_else(|| l.find(" inherited "))
                        .expect("verdict");
                    l[..byte].chars().count()
                })
                .collect();
            assert_eq!(col.len(), 3, "{text}");
            assert!(col.windows(2).all(|w| w[0] == w[1]), "{text}");
        }
    }
}

#[cfg(feature = "serde")]
#[test]
fn lossless_layers_write_inf_in_diagnosis_json_as_compare_does() {
    let x = ramp(10, 4);
    let mut log = NumericLog::streaming();
    log.push("exact", &x, &x, None).expect("push");
    let report = NsReport::from_logs(Some(&log), None);
    let d = diagnose_report(&report, &Thresholds::default()).expect("diagnosis");
    let j: serde_json::Value = serde_json::to_value(&d).expect("json");
    assert_eq!(j["layers"][0]["evidence"]["sqnr_db"], "inf");
    assert_eq!(j["layers"][0]["evidence"]["sample_sqnr_db"][0], "inf");
    // and it reads back
    let e: qnumeric::diagnose::SampleEvidence =
        serde_json::from_value(j["layers"][0]["evidence"].clone()).expect("round trip");
    assert_eq!(e.sqnr_db, f64::INFINITY);
}

#[cfg(feature = "safetensors")]
mod on_digits {
    use crate::{faults, model};
    use ndarray::{ArrayD, IxDyn};
    use qnumeric::diagnose::{
        Change, DEFAULT_MIN_GAIN_DB, DiagnoseOptions, Diagnoser, Effect, EvalData, Evidence,
        NotMeasured, QuantPlan, Quantized, Reason, Verdict, diagnose,
    };
    use qnumeric::fusion::fuse_auto;
    use qnumeric::nn::quantized::QuantizedLinear;
    use qnumeric::nn::{Activation, LayerRole, Model, Module, Sequential, WeightRef};
    use qnumeric::ptq::{PtqConfig, prepare};
    use qnumeric::{QuantError, Result};

    fn fused(d: &model::Digits) -> Sequential {
        let mut m = d.model.clone();
        fuse_auto(&mut m).expect("fuse");
        m
    }

    fn eval(d: &model::Digits) -> EvalData<'_> {
        EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        }
    }

    /// The measured path (the default) on the coarse-weights fault: the figures the digits
    /// example prints, every remedy above the minimum gain, each model-wide remedy measured
    /// once, and the top remedy applied to the plan reaching exactly its measured quality.
    #[test]
    fn measured_remedies_applied_to_the_plan_reach_their_measured_gain() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let cfg = faults::coarse_weights("conv2").expect("config");
        let dg = diagnose(
            &m,
            Quantized::Config(cfg.clone()),
            &d.calib,
            eval(&d),
            &DiagnoseOptions::default(),
        )
        .expect("diagnosis");
        println!("{dg}");
        assert!((dg.quality.sqnr_db - 16.60).abs() < 0.05, "{dg}");
        let top = &dg.remedies[0];
        assert_eq!(top.change, Change::PerChannelWeights, "{dg}");
        assert_eq!(top.layer.as_deref(), Some("conv2"));
        let gain = top.gain_db().expect("measured");
        assert!((gain - 19.04).abs() < 0.05, "{gain}");
        for r in &dg.remedies {
            assert!(r.gain_db().is_none_or(|g| g >= DEFAULT_MIN_GAIN_DB), "{r}");
        }
        for r in &dg.rejected {
            assert!(r.gain_db().is_some_and(|g| g < DEFAULT_MIN_GAIN_DB), "{r}");
        }
        let all = || dg.remedies.iter().chain(&dg.rejected);
        assert!(all().filter(|r| r.change == Change::DynamicLinear).count() <= 1);
        assert!(
            all()
                .filter(|r| matches!(r.change, Change::ReduceRange { .. }))
                .count()
                <= 1
        );
        // Apply, quantize again, check: the same model, the same figure.
        let dgn = Diagnoser::new(&m, &d.calib, eval(&d)).expect("diagnoser");
        let plan = QuantPlan::new(cfg.clone()).apply(top).expect("applicable");
        let again = dgn
            .measure_model(&plan.quantize(&m, &d.calib).expect("quantize"))
            .expect("measure");
        assert_eq!(again, top.quality().expect("measured"));
        // Two remedies at once: per-channel weights and the best precision one on top.
        let second = dg
            .remedies
            .iter()
            .find(|r| matches!(r.change, Change::KeepIn { .. }))
            .expect("a precision remedy");
        let both = QuantPlan::new(cfg)
            .apply(top)
            .and_then(|p| p.apply(second))
            .and_then(|p| p.quantize(&m, &d.calib))
            .and_then(|q| dgn.measure_model(&q))
            .expect("both");
        assert!(both.sqnr_db >= dg.quality.sqnr_db + gain - 1.0, "{both}");
    }

    /// Bright outliers: dynamic quantization (model-wide) measured once, at the top, with the
    /// gain the example prints.
    #[test]
    fn bright_outliers_measure_dynamic_quantization_once_at_the_top() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let (x, _) = faults::bright_images(&d.test_x, 20, 4.0);
        let e = EvalData {
            inputs: &x,
            labels: Some(&d.test_y),
        };
        let dg = diagnose(
            &m,
            Quantized::Config(PtqConfig::default()),
            &d.calib,
            e,
            &DiagnoseOptions::default(),
        )
        .expect("diagnosis");
        assert_eq!(dg.verdict, Verdict::DataSensitive, "{dg}");
        let top = &dg.remedies[0];
        assert_eq!(
            (&top.change, top.layer.as_deref()),
            (&Change::DynamicLinear, None)
        );
        let gain = top.gain_db().expect("measured");
        assert!((gain - 25.95).abs() < 0.05, "{gain}");
        let dynamic = dg
            .remedies
            .iter()
            .chain(&dg.rejected)
            .filter(|r| r.change == Change::DynamicLinear)
            .count();
        assert_eq!(dynamic, 1);
        // applying it gives the measured model
        let plan = QuantPlan::new(PtqConfig::default())
            .apply(top)
            .expect("apply");
        let again = Diagnoser::new(&m, &d.calib, e)
            .and_then(|g| g.measure_model(&plan.quantize(&m, &d.calib)?))
            .expect("measure");
        assert_eq!(Some(again), top.quality());
    }

    #[test]
    fn a_buggy_kernel_comes_first_with_its_measured_interim_fix() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let mut p = prepare(m.clone(), &PtqConfig::default()).expect("prepare");
        p.calibrate(&d.calib).expect("calibrate");
        let mut int8 = p.convert().expect("convert");
        faults::buggy_kernel(&mut int8, "fc1").expect("inject");
        let dg = diagnose(
            &m,
            Quantized::Model(&int8, PtqConfig::default()),
            &d.calib,
            eval(&d),
            &DiagnoseOptions::default(),
        )
        .expect("diagnosis");
        let top = &dg.remedies[0];
        assert_eq!(top.change, Change::FixKernel);
        assert!(matches!(top.evidence, Evidence::Kernel { .. }), "{top:?}");
        let gain = top.gain_db().expect("keep fp32 meanwhile is measured");
        assert!((gain - 5.26).abs() < 0.05, "{gain}");
        assert!(dg.unmeasured.is_empty(), "{:?}", dg.unmeasured);
    }

    #[test]
    fn data_and_training_remedies_say_why_they_are_not_measured() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let (calib, labels) = faults::one_digit(&d.calib, &d.calib_y, 3, 10);
        let opts = DiagnoseOptions {
            calib_labels: Some((labels, Some(10))),
            ..DiagnoseOptions::default()
        };
        let dg = diagnose(
            &m,
            Quantized::Config(PtqConfig::default()),
            &calib,
            eval(&d),
            &opts,
        )
        .expect("diagnosis");
        let r = dg
            .remedies
            .iter()
            .find(|r| r.change == Change::MoreCalibrationData)
            .expect("named");
        assert_eq!(r.effect, Effect::NotMeasured(NotMeasured::OutOfReach));
        assert!(matches!(
            QuantPlan::new(PtqConfig::default()).apply(r),
            Err(QuantError::UnsupportedConfig { .. })
        ));
    }

    #[test]
    fn zero_evaluation_samples_are_refused() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let empty = ArrayD::<f32>::zeros(IxDyn(&[0, 1, 8, 8]));
        let r = diagnose(
            &m,
            Quantized::Config(PtqConfig::default()),
            &d.calib,
            EvalData {
                inputs: &empty,
                labels: None,
            },
            &DiagnoseOptions::default(),
        );
        assert!(matches!(r, Err(QuantError::EmptyInput { .. })), "{r:?}");
    }

    /// A quantized linear kernel that drops its last output column: the wrong shape.
    #[derive(Debug, Clone)]
    struct DropsAColumn(QuantizedLinear);

    impl Module for DropsAColumn {
        fn kind(&self) -> &'static str {
            "WrongShapeQuantizedLinear"
        }
        fn forward(&self, x: &Activation) -> Result<Activation> {
            let y = self.0.forward(x)?;
            let q = y.as_quantized()?;
            let cols = q.shape()[1] - 1;
            let data = q
                .int_repr()
                .slice_axis(ndarray::Axis(1), (..cols).into())
                .to_owned();
            Ok(Activation::Quantized(
                qnumeric::QuantizedTensor::from_parts(data, q.params().clone())?,
            ))
        }
        fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
            self.0.reference(inputs)
        }
        fn role(&self) -> LayerRole<'_> {
            LayerRole::Quantized
        }
        fn weight(&self) -> Option<WeightRef<'_>> {
            self.0.weight()
        }
        fn bias(&self) -> Option<&ArrayD<f32>> {
            self.0.bias()
        }
    }

    #[test]
    fn a_kernel_with_the_wrong_output_shape_is_an_implementation_error() {
        let d = model::Digits::load().expect("digits");
        let m = fused(&d);
        let mut p = prepare(m.clone(), &PtqConfig::default()).expect("prepare");
        p.calibrate(&d.calib).expect("calibrate");
        let mut int8 = p.convert().expect("convert");
        let fc1 = int8.get::<QuantizedLinear>("fc1").expect("fc1").clone();
        int8.replace_layer("fc1", Box::new(DropsAColumn(fc1)))
            .expect("replace");
        let dg = diagnose(
            &m,
            Quantized::Model(&int8, PtqConfig::default()),
            &d.calib,
            eval(&d),
            &DiagnoseOptions::default(),
        )
        .expect("the diagnosis goes on past the wrong shape");
        let fc1 = dg.layers.iter().find(|l| l.name == "fc1").expect("fc1");
        assert_eq!(fc1.verdict, Verdict::Implementation, "{dg}");
        let (kernel, reference) = fc1.evidence.kernel_shape_mismatch.clone().expect("shapes");
        assert_eq!(kernel[1] + 1, reference[1]);
        assert!(
            fc1.reasons
                .iter()
                .any(|r| matches!(r, Reason::KernelShape { .. }))
        );
        assert_eq!(dg.remedies[0].change, Change::FixKernel);
        assert!(matches!(
            dg.remedies[0].evidence,
            Evidence::KernelShape { .. }
        ));
        let _ = QuantError::EmptyInput { op: "" };
    }
}
