//! The kernel check as a backend author uses it (issue 17): a zoo of one-bug kernels, each
//! caught; correct kernels passing; the rounding paths separated; both ends of saturation;
//! per-tensor and asymmetric weights; panics and the backend's own errors reported; real
//! inputs captured from a model; the first failing case shrunk to a test to paste.

use ndarray::{ArrayD, IxDyn};
use qnumeric::diagnose::{
    CaseKind, KernelCheck, KernelInputs, KernelOp, KernelReference, KernelTolerance, KernelVerdict,
    WeightScheme,
};
use qnumeric::nn::quantized::{QuantizedAdd, QuantizedLinear};
use qnumeric::nn::{Activation, Module};
use qnumeric::{QParams, QuantError};

/// The crate's integer path: PyTorch's.
fn good(inputs: &KernelInputs) -> qnumeric::Result<ArrayD<u8>> {
    let y = match inputs {
        KernelInputs::Quantize { x, qparams } => return qnumeric::quantize(x, qparams),
        KernelInputs::Linear {
            x,
            weight,
            bias,
            output,
        } => QuantizedLinear::new(weight.clone(), bias.clone(), *output)?
            .forward(&Activation::Quantized(x.clone()))?,
        KernelInputs::Add { a, b, output } => QuantizedAdd::new(*output)?.forward_many(&[
            &Activation::Quantized(a.clone()),
            &Activation::Quantized(b.clone()),
        ])?,
        _ => unreachable!("only the ops below are checked here"),
    };
    Ok(y.as_quantized()?.int_repr().clone())
}

/// Quantize by dividing by the scale instead of multiplying by `f32(1/scale)`.
fn quantize_dividing(x: &ArrayD<f32>, q: &QParams) -> ArrayD<u8> {
    x.mapv(|v| ((v / q.scale()).round_ties_even() + q.zero_point() as f32).clamp(0.0, 255.0) as u8)
}

#[test]
fn a_quantize_kernel_dividing_by_the_scale_fails_exact() {
    let report = KernelCheck::new(KernelOp::Quantize)
        .run(|i| match i {
            KernelInputs::Quantize { x, qparams } => {
                Ok::<_, QuantError>(quantize_dividing(x, qparams))
            }
            _ => unreachable!(),
        })
        .expect("check");
    let rounding = report
        .by_kind
        .iter()
        .find(|(k, _)| *k == CaseKind::RoundingPaths)
        .expect("rounding cases")
        .1;
    assert!(rounding.values > rounding.exact, "{report}");
    assert_eq!(
        report.verdict(&KernelTolerance::exact()),
        KernelVerdict::Mismatch
    );
    // the crate's own kernel is exact on the same cases
    let ok = KernelCheck::new(KernelOp::Quantize)
        .run(good)
        .expect("check");
    assert_eq!(
        ok.verdict(&KernelTolerance::exact()),
        KernelVerdict::Exact,
        "{ok}"
    );
}

#[test]
fn a_kernel_bit_exact_with_pytorch_passes_exact_against_the_integer_reference() {
    for op in [KernelOp::Linear, KernelOp::Add] {
        for scheme in [
            WeightScheme::PerChannelSymmetric,
            WeightScheme::PerChannelAffine,
            WeightScheme::PerTensorSymmetric,
            WeightScheme::PerTensorAffine,
        ] {
            let r = KernelCheck::new(op)
                .weights(scheme)
                .reference(KernelReference::Integer)
                .run(good)
                .expect("check");
            assert_eq!(
                r.verdict(&KernelTolerance::exact()),
                KernelVerdict::Exact,
                "{op:?} {scheme:?}\n{r}"
            );
            // against the float reference it stays within the default tolerance
            let f = KernelCheck::new(op)
                .weights(scheme)
                .run(good)
                .expect("check");
            assert!(
                f.is_within(&KernelTolerance::default()),
                "{op:?} {scheme:?}\n{f}"
            );
        }
    }
}

#[test]
fn generated_weights_follow_the_scheme() {
    for (scheme, per_tensor, zero) in [
        (WeightScheme::PerTensorSymmetric, true, true),
        (WeightScheme::PerTensorAffine, true, false),
        (WeightScheme::PerChannelAffine, false, false),
    ] {
        let cases = KernelCheck::new(KernelOp::Linear)
            .weights(scheme)
            .cases_per_kind(16)
            .generate(CaseKind::Random)
            .expect("cases");
        let mut any_nonzero = false;
        for c in cases {
            let KernelInputs::Linear { weight, .. } = c else {
                unreachable!()
            };
            assert_eq!(
                weight.params().as_per_tensor().is_some(),
                per_tensor,
                "{scheme:?}"
            );
            let z = weight
                .params()
                .int_zero_points()
                .expect("integer zero points");
            any_nonzero |= z.iter().any(|&v| v != 0);
        }
        assert_eq!(any_nonzero, !zero, "{scheme:?}");
    }
}

/// One-bug variants of the integer Linear kernel.
fn linear_bug(bug: &'static str) -> impl FnMut(&KernelInputs) -> qnumeric::Result<ArrayD<u8>> {
    move |i| {
        let mut y = good(i)?;
        match bug {
            "clamp 1..255" => y.mapv_inplace(|v| v.max(1)),
            "clamp 0..254" => y.mapv_inplace(|v| v.min(254)),
            "zero point +1" => y.mapv_inplace(|v| v.saturating_add(1)),
            "truncation" => {
                if let KernelInputs::Linear {
                    x,
                    weight,
                    bias,
                    output,
                } = i
                {
                    // requantize by truncating instead of rounding: dequantize → f32 → trunc
                    let l = QuantizedLinear::new(weight.clone(), bias.clone(), *output)?;
                    let r = l.forward_reference(&Activation::Quantized(x.clone()))?;
                    let f = r.to_float();
                    y = f.mapv(|v| {
                        ((v / output.scale()).trunc() + output.zero_point() as f32)
                            .clamp(0.0, 255.0) as u8
                    });
                }
            }
            _ => unreachable!(),
        }
        Ok(y)
    }
}

#[test]
fn one_bug_linear_kernels_are_each_caught() {
    for bug in [
        "clamp 1..255",
        "clamp 0..254",
        "zero point +1",
        "truncation",
    ] {
        let r = KernelCheck::new(KernelOp::Linear)
            .run(linear_bug(bug))
            .expect("check");
        assert_eq!(
            r.verdict(&KernelTolerance::default()),
            KernelVerdict::Mismatch,
            "{bug}\n{r}"
        );
        let m = r.minimal.as_ref().expect("a shrunk case");
        if let KernelInputs::Linear { x, weight, .. } = &m.inputs {
            assert_eq!(x.shape()[0], 1, "{bug}: one row");
            assert_eq!(weight.shape()[0], 1, "{bug}: one output channel");
        }
        let code = m.to_rust();
        assert!(
            code.contains("KernelInputs::Linear") && code.contains("assert_eq!"),
            "{code}"
        );
    }
}

#[test]
fn saturation_cases_clip_at_both_ends() {
    let cases = KernelCheck::new(KernelOp::Linear)
        .generate(CaseKind::Saturation)
        .expect("cases");
    let refs: Vec<ArrayD<u8>> = cases
        .iter()
        .map(|c| c.reference().expect("reference"))
        .collect();
    assert!(refs.iter().any(|r| r.iter().any(|&v| v == 0)));
    assert!(refs.iter().any(|r| r.iter().any(|&v| v == 255)));
}

#[test]
fn a_panicking_kernel_and_a_backend_error_are_failed_cases_not_unwinding() {
    let r = KernelCheck::new(KernelOp::Add)
        .run(|_| -> Result<ArrayD<u8>, String> { panic!("index out of bounds in my_add") })
        .expect("the check reports, it does not unwind");
    assert_eq!(
        r.verdict(&KernelTolerance::default()),
        KernelVerdict::Mismatch
    );
    assert!(r.total.failed_cases > 0);
    let f = r.first_failure.as_deref().expect("failure");
    assert!(f.contains("panicked") && f.contains("my_add"), "{f}");

    #[derive(Debug)]
    struct BackendError(&'static str);
    impl std::fmt::Display for BackendError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "backend: {}", self.0)
        }
    }
    let r = KernelCheck::new(KernelOp::Add)
        .run(|_| Err(BackendError("no such shape")))
        .expect("check");
    assert!(
        r.first_failure
            .as_deref()
            .is_some_and(|f| f.contains("backend: no such shape"))
    );
    // a wrongly shaped output is a failed case too
    let r = KernelCheck::new(KernelOp::Add)
        .run(|_| Ok::<_, QuantError>(ArrayD::zeros(IxDyn(&[0]))))
        .expect("check");
    assert!(
        r.first_failure
            .as_deref()
            .is_some_and(|f| f.contains("output shape"))
    );
}

#[cfg(feature = "safetensors")]
#[test]
fn real_inputs_are_captured_from_a_model() {
    use qnumeric::ptq::{PtqConfig, prepare};
    let d = crate::model::Digits::load().expect("digits");
    let mut m = d.model.clone();
    qnumeric::fusion::fuse_auto(&mut m).expect("fuse");
    let mut p = prepare(m, &PtqConfig::default()).expect("prepare");
    p.calibrate(&d.calib).expect("calibrate");
    let int8 = p.convert().expect("convert");
    let real = KernelCheck::capture_inputs(&int8, "fc1", &d.calib).expect("capture");
    assert_eq!(real.len(), 1);
    let r = KernelCheck::new(KernelOp::Linear)
        .with_real_inputs(real)
        .reference(KernelReference::Integer)
        .run(good)
        .expect("check");
    assert_eq!(
        r.verdict(&KernelTolerance::exact()),
        KernelVerdict::Exact,
        "{r}"
    );
    let conv = KernelCheck::capture_inputs(&int8, "conv2", &d.calib).expect("capture");
    assert!(matches!(conv[0], KernelInputs::Conv2d { .. }));
    assert!(matches!(
        KernelCheck::capture_inputs(&int8, "nope", &d.calib),
        Err(QuantError::NotFound { .. })
    ));
}

#[cfg(feature = "serde")]
#[test]
fn reports_serialize_and_inconsistent_diff_stats_are_refused() {
    let r = KernelCheck::new(KernelOp::Linear)
        .run(linear_bug("zero point +1"))
        .expect("check");
    let j = serde_json::to_value(&r).expect("json");
    assert!(
        j["minimal"]
            .as_str()
            .is_some_and(|s| s.contains("KernelInputs::Linear"))
    );
    let back: qnumeric::diagnose::DiffStats =
        serde_json::from_value(j["total"].clone()).expect("consistent counts read back");
    assert_eq!(back, r.total);
    let bad = serde_json::json!({"values": 3, "exact": 5, "off_by_one": 0, "larger": 0,
        "max_abs_diff": 0, "sum_diff": 0, "failed_cases": 0});
    assert!(serde_json::from_value::<qnumeric::diagnose::DiffStats>(bad).is_err());
}

/// `approx` on the crate's types, as a backend's unit test uses it: tensors within N quanta,
/// parameters within a tolerance.
#[test]
fn approx_compares_quantized_tensors_in_quanta_and_parameters_within_a_tolerance() {
    use approx::{assert_abs_diff_eq, assert_abs_diff_ne, assert_relative_eq};
    use qnumeric::{MinMaxObserver, Observer, QDType, QScheme, QSpec, QuantizedTensor};
    let x = ArrayD::from_shape_fn(IxDyn(&[4, 8]), |i| (i[0] * 8 + i[1]) as f32 / 10.0 - 1.0);
    let mut obs = MinMaxObserver::new(QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8))
        .expect("observer");
    obs.observe(x.view()).expect("observe");
    let qp = obs.per_tensor_qparams().expect("per tensor");
    // [-1.0, 2.1]: scale 3.1 / 255, zero point round(1.0 / scale) = 82
    let by_hand = QParams::new(3.1 / 255.0, 82, QDType::QUInt8).expect("params");
    assert_relative_eq!(qp, by_hand, max_relative = 1e-5);
    assert!(obs.per_channel_qparams().is_err());
    let ours = QuantizedTensor::<u8>::quantize(&x, qp).expect("quantize");
    let shifted = QuantizedTensor::from_parts(ours.int_repr().mapv(|v| v.saturating_add(1)), qp)
        .expect("tensor");
    assert_abs_diff_eq!(ours, shifted, epsilon = 1);
    assert_abs_diff_ne!(ours, shifted);
}

/// The format kernel check on GGML and MX kernels: a right kernel passes, wrong ones fail
/// with the case that shows it, panics are caught.
mod formats {
    use qnumeric::diagnose::{FormatCaseKind, FormatKernelCheck};
    use qnumeric::formats::EncodedRow;
    use qnumeric::formats::ggml::GgmlType;
    use qnumeric::formats::minifloat::MiniFloat;
    use qnumeric::formats::mx::MxSpec;

    /// A Q4_0 × f32 dot written from the block layout, as a backend would.
    fn q4_0_dot(row: &EncodedRow, x: &[f32], swap_nibbles: bool) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in row.data.chunks_exact(18).zip(x.chunks_exact(32)) {
            let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            let mut s = 0.0f32;
            for j in 0..16 {
                let (lo, hi) = (i32::from(b[2 + j] & 0xf) - 8, i32::from(b[2 + j] >> 4) - 8);
                let (lo, hi) = if swap_nibbles { (hi, lo) } else { (lo, hi) };
                s += lo as f32 * xb[j] + hi as f32 * xb[j + 16];
            }
            sum += s * d;
        }
        sum
    }

    #[test]
    fn q4_0_dot_kernels() {
        let check = FormatKernelCheck::new();
        let good = check
            .check_dot(&GgmlType::Q4_0, |r: &EncodedRow, x: &[f32]| {
                Ok::<f32, String>(q4_0_dot(r, x, false))
            })
            .expect("check");
        good.assert_passed();
        assert_eq!(good.by_kind.len(), FormatCaseKind::GENERATED.len());
        assert_eq!(good.cases(), 6 * 3 * 8);
        let bad = check
            .check_dot(&GgmlType::Q4_0, |r: &EncodedRow, x: &[f32]| {
                Ok::<f32, String>(q4_0_dot(r, x, true))
            })
            .expect("check");
        assert!(!bad.passed());
        assert!(bad.worst.is_some());
        assert!(bad.to_string().contains("Q4_0 dot product kernel"), "{bad}");
        let panics = check
            .check_dot(
                &GgmlType::Q4_0,
                |_: &EncodedRow, _: &[f32]| -> Result<f32, String> {
                    panic!("unimplemented block")
                },
            )
            .expect("check");
        assert_eq!(panics.failed(), panics.cases());
        let w = panics.worst.expect("worst");
        assert!(
            w.error
                .as_deref()
                .is_some_and(|e| e.contains("unimplemented block"))
        );
    }

    #[test]
    fn q4_0_against_q8_0_activations_and_real_rows() {
        // ggml's vec_dot_q4_0_q8_0: x quantized to Q8_0 first; the reference does the same.
        let check = FormatKernelCheck::new()
            .with_activation_format(&GgmlType::Q8_0)
            .with_real_rows(vec![vec![0.25; 64], (0..32).map(|i| i as f32).collect()]);
        let report = check
            .check_dot(&GgmlType::Q4_0, |r: &EncodedRow, x: &[f32]| {
                let mut xq = vec![0.0f32; x.len()];
                let mut b = vec![0u8; x.len() / 32 * 34];
                GgmlType::Q8_0
                    .quantize_row(x, &mut b)
                    .map_err(|e| e.to_string())?;
                GgmlType::Q8_0
                    .dequantize_row(&b, &mut xq)
                    .map_err(|e| e.to_string())?;
                Ok::<f32, String>(q4_0_dot(r, &xq, false))
            })
            .expect("check");
        report.assert_passed();
        assert!(
            report
                .by_kind
                .iter()
                .any(|(k, n, _)| *k == FormatCaseKind::Real && *n == 2)
        );
    }

    #[test]
    fn mxfp4_decode_kernel_bit_exact() {
        let spec = MxSpec::standard(MiniFloat::E2M1Fn);
        let check = FormatKernelCheck::new();
        let good = check
            .check_decode(&spec, |r: &EncodedRow, out: &mut [f32]| {
                for (i, o) in out.iter_mut().enumerate() {
                    let code = (r.data[i / 2] >> (4 * (i % 2))) & 0xf;
                    let s = 2f32.powi(i32::from(r.scales[i / 32]) - 127);
                    *o = MiniFloat::E2M1Fn.decode(code) * s;
                }
                Ok::<(), String>(())
            })
            .expect("check");
        good.assert_passed();
        // Off by one in the scale exponent: every case fails.
        let bad = check
            .check_decode(&spec, |r: &EncodedRow, out: &mut [f32]| {
                for (i, o) in out.iter_mut().enumerate() {
                    let code = (r.data[i / 2] >> (4 * (i % 2))) & 0xf;
                    *o = MiniFloat::E2M1Fn.decode(code)
                        * 2f32.powi(i32::from(r.scales[i / 32]) - 126);
                }
                Ok::<(), String>(())
            })
            .expect("check");
        assert!(bad.failed() > 0);
        assert!(FormatKernelCheck::new().with_tolerance(-1.0, 0.0).is_err());
    }
}

#[test]
fn an_absurd_number_of_cases_is_refused_before_anything_is_built() {
    use qnumeric::diagnose::{KernelCheck, KernelOp, MAX_CASES_PER_KIND};
    let check = KernelCheck::new(KernelOp::Quantize).cases_per_kind(usize::MAX);
    let e = check
        .run(|_| -> Result<ndarray::ArrayD<u8>, String> { Err("not called".into()) })
        .expect_err("refused");
    assert!(
        matches!(e, qnumeric::QuantError::TooLarge { max, .. } if max == MAX_CASES_PER_KIND),
        "{e}"
    );
}
