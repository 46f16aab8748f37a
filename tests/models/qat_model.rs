//! QAT on a model: `prepare_qat`, the fake-quantized forward, the switches, `convert` against
//! PTQ's `convert` on the same parameters, and the refusals.

use ndarray::{ArrayD, IxDyn};
use qnumeric::nn::{
    Activation, Conv2d, ConvGeometry, Flatten, LayerRole, Linear, Model, Module, ReLU, Sequential,
};
use qnumeric::ptq::{LayerPlan, PtqConfig, QConfig, prepare};
use qnumeric::qat::{QatAction, QatConfig, QatLayer, prepare_qat};
use qnumeric::rng::Lcg;
use qnumeric::{AnyQParams, QuantError, fake_quantize};

fn random(shape: &[usize], seed: u64, scale: f32) -> ArrayD<f32> {
    let mut r = Lcg::new(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| (r.unit_f32() - 0.5) * 2.0 * scale)
}

/// quant → conv (ReLU) → flatten → fc1 (ReLU) → fc2 → dequant.
fn small_cnn() -> Sequential {
    let geo = ConvGeometry::default().padding(1, 1);
    Sequential::new()
        .with(
            "conv",
            Conv2d::new(
                random(&[4, 2, 3, 3], 1, 0.5),
                Some(random(&[4], 2, 0.1)),
                geo,
            )
            .expect("conv")
            .with_relu(),
        )
        .expect("conv")
        .with("flatten", Flatten::default())
        .expect("flatten")
        .with(
            "fc1",
            Linear::new(random(&[8, 4 * 5 * 5], 3, 0.2), Some(random(&[8], 4, 0.1)))
                .expect("fc1")
                .with_relu(),
        )
        .expect("fc1")
        .with(
            "fc2",
            Linear::new(random(&[3, 8], 5, 0.5), None).expect("fc2"),
        )
        .expect("fc2")
        .with_quant_stubs()
        .expect("stubs")
}

fn float_out(y: Activation) -> ArrayD<f32> {
    y.as_float().expect("float output").clone()
}

#[test]
fn prepare_qat_wraps_the_planned_layers_only() {
    let qat =
        prepare_qat(small_cnn(), &QatConfig::x86_default().expect("config")).expect("prepare");
    let kinds: Vec<(String, &str)> = qat
        .plan()
        .iter()
        .map(|(n, _)| (n.clone(), qat.model().layer(n).expect("layer").kind()))
        .collect();
    for (name, kind) in &kinds {
        let expected = match name.as_str() {
            "quant" | "conv" | "fc1" | "fc2" => "QatLayer",
            _ => continue,
        };
        assert_eq!(*kind, expected, "{name}");
    }
    assert_eq!(
        qat.model().layer("flatten").expect("flatten").kind(),
        "Flatten"
    );
    let conv = qat.qat_layer("conv").expect("conv");
    assert!(conv.weight_fake_quant().is_some() && conv.output_fake_quant().is_some());
    let stub = qat.qat_layer("quant").expect("quant stub");
    assert!(stub.weight_fake_quant().is_none() && stub.output_fake_quant().is_some());
}

#[test]
fn the_forward_fake_quantizes_weights_and_outputs_with_the_new_parameters() {
    let model = Sequential::new()
        .with(
            "fc",
            Linear::new(random(&[3, 5], 7, 1.0), Some(random(&[3], 8, 0.2))).expect("fc"),
        )
        .expect("fc")
        .with_quant_stubs()
        .expect("stubs");
    let qat =
        prepare_qat(model.clone(), &QatConfig::with_bits(4, 4).expect("config")).expect("prepare");
    let x = random(&[6, 5], 9, 2.0);
    let y = float_out(
        qat.model()
            .forward(Activation::Float(x.clone()))
            .expect("forward"),
    );

    // By hand: the input fake-quantized with its first-batch min/max, the weight per channel,
    // the Linear, its output fake-quantized.
    let stub = qat
        .qat_layer("quant")
        .expect("stub")
        .output_fake_quant()
        .expect("fq");
    let AnyQParams::PerTensor(qx) = stub.qparams().expect("qparams") else {
        panic!("per tensor")
    };
    let xq = fake_quantize(&x, &qx).expect("fq x");
    let l = qat.qat_layer("fc").expect("fc");
    let wfq = l.weight_fake_quant().expect("weight fq");
    let core = match l.inner().role() {
        LayerRole::Weighted(w) => w.core().clone(),
        _ => panic!("weighted"),
    };
    let wq = qnumeric::fake_quantize_per_channel(
        core.weight(),
        &match wfq.qparams().expect("w") {
            AnyQParams::PerChannel(p) => p,
            AnyQParams::PerTensor(_) => panic!("per channel"),
        },
    )
    .expect("fq w");
    let fc = Linear::new(wq, core.bias().cloned()).expect("fc");
    let z = float_out(fc.forward(&Activation::Float(xq)).expect("linear"));
    let out = l.output_fake_quant().expect("out fq");
    let AnyQParams::PerTensor(qo) = out.qparams().expect("qparams") else {
        panic!("per tensor")
    };
    assert_eq!(qo.range().quant_max(), 15);
    let expected = fake_quantize(&z, &qo).expect("fq out");
    assert_eq!(y, expected);
    // 4-bit output: at most 16 distinct values.
    let mut levels: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
    levels.sort_unstable();
    levels.dedup();
    assert!(levels.len() <= 16, "{} levels", levels.len());
}

#[test]
fn disabling_the_observers_freezes_the_parameters() {
    let qat =
        prepare_qat(small_cnn(), &QatConfig::x86_default().expect("config")).expect("prepare");
    qat.model()
        .forward(Activation::Float(random(&[2, 2, 5, 5], 11, 1.0)))
        .expect("forward");
    let before = qat
        .qat_layer("fc1")
        .expect("fc1")
        .output_fake_quant()
        .expect("fq");
    qat.apply(QatAction::DisableObserver);
    qat.model()
        .forward(Activation::Float(random(&[2, 2, 5, 5], 12, 3.0)))
        .expect("forward");
    let after = qat
        .qat_layer("fc1")
        .expect("fc1")
        .output_fake_quant()
        .expect("fq");
    assert!(!after.observer_enabled());
    assert_eq!(
        (
            before.scale(),
            before.zero_point(),
            before.min_val(),
            before.max_val()
        ),
        (
            after.scale(),
            after.zero_point(),
            after.min_val(),
            after.max_val()
        )
    );
    qat.apply(QatAction::EnableObserver);
    qat.model()
        .forward(Activation::Float(random(&[2, 2, 5, 5], 12, 3.0)))
        .expect("forward");
    let moved = qat
        .qat_layer("fc1")
        .expect("fc1")
        .output_fake_quant()
        .expect("fq");
    assert_ne!(before.scale(), moved.scale());
}

/// PyTorch's `convert` after QAT and PTQ's `convert` build the same int8 model from the same
/// parameters: here the fake quants saw exactly what PTQ's min/max observers see (one batch
/// with fake quantization off: the float activations; the weights' first observation), so the
/// two int8 models must agree bit for bit.
#[test]
fn convert_after_qat_matches_ptq_convert_on_the_same_parameters_bit_for_bit() {
    let calib = random(&[4, 2, 5, 5], 21, 1.5);
    let qat =
        prepare_qat(small_cnn(), &QatConfig::x86_default().expect("config")).expect("prepare");
    qat.apply(QatAction::DisableFakeQuant);
    qat.model()
        .forward(Activation::Float(calib.clone()))
        .expect("qat forward");
    let from_qat = qat.convert().expect("qat convert");

    let mut prepared =
        prepare(small_cnn(), &PtqConfig::new(QConfig::x86_min_max())).expect("prepare");
    prepared.calibrate(&calib).expect("calibrate");
    let from_ptq = prepared.convert().expect("ptq convert");

    for name in from_ptq.layer_names() {
        let (a, b) = (
            from_qat.layer(&name).expect("qat"),
            from_ptq.layer(&name).expect("ptq"),
        );
        assert_eq!(a.kind(), b.kind(), "{name}");
        assert_eq!(
            format!("{:?}", a.weight()),
            format!("{:?}", b.weight()),
            "{name} weight"
        );
    }
    for seed in [31, 32] {
        let x = random(&[3, 2, 5, 5], seed, 2.0);
        let ya = float_out(
            from_qat
                .forward(Activation::Float(x.clone()))
                .expect("qat int8"),
        );
        let yb = float_out(from_ptq.forward(Activation::Float(x)).expect("ptq int8"));
        let bits = |y: &ArrayD<f32>| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ya), bits(&yb));
    }
}

#[test]
fn kept_float_layers_are_not_fake_quantized_and_convert_to_float_islands() {
    let config = QatConfig::x86_default().expect("config").keep_float("fc1");
    let qat = prepare_qat(small_cnn(), &config).expect("prepare");
    assert!(
        qat.qat_layer("fc1")
            .expect("fc1 observed as an island")
            .weight_fake_quant()
            .is_none()
    );
    assert_eq!(
        qat.plan().iter().find(|(n, _)| n == "fc1").map(|(_, p)| *p),
        Some(LayerPlan::FloatIsland)
    );
    qat.model()
        .forward(Activation::Float(random(&[2, 2, 5, 5], 41, 1.0)))
        .expect("forward");
    let int8 = qat.convert().expect("convert");
    assert_eq!(int8.layer("fc1").expect("fc1").kind(), "FloatIsland");
    assert_eq!(int8.layer("fc2").expect("fc2").kind(), "QuantizedLinear");
}

#[derive(Debug, Clone)]
struct NoBackward;

impl Module for NoBackward {
    fn kind(&self) -> &'static str {
        "NoBackward"
    }
    fn forward(&self, x: &Activation) -> qnumeric::Result<Activation> {
        Ok(x.clone())
    }
}

#[test]
fn refusals_are_typed() {
    let cfg = QatConfig::x86_default().expect("config");
    let no_stub = Sequential::new()
        .with(
            "fc",
            Linear::new(random(&[2, 2], 1, 1.0), None).expect("fc"),
        )
        .expect("fc");
    assert!(matches!(
        prepare_qat(no_stub, &cfg),
        Err(QuantError::NoQuantStub { .. })
    ));
    assert!(matches!(
        prepare_qat(small_cnn(), &cfg.clone().keep_float("nope")),
        Err(QuantError::NotFound { .. })
    ));
    assert!(matches!(
        QatConfig::with_bits(1, 4),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert!(matches!(
        QatConfig::with_bits(4, 9),
        Err(QuantError::InvalidParameter { .. })
    ));
    let per_channel_act = cfg.weight().clone();
    assert!(matches!(
        QatConfig::new(per_channel_act, cfg.weight().clone()),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    // A weight fake quant on a layer without weight; a layer prepared twice.
    assert!(matches!(
        QatLayer::new(Box::new(ReLU), Some(cfg.weight().clone()), None),
        Err(QuantError::UnsupportedLayer { .. })
    ));
    let once =
        QatLayer::new(Box::new(NoBackward), None, Some(cfg.activation().clone())).expect("wrap");
    assert!(matches!(
        QatLayer::new(Box::new(once.clone()), None, None),
        Err(QuantError::UnsupportedLayer { .. })
    ));
    // Backward through a caller's layer that has none: a typed error naming its kind.
    let x = Activation::Float(random(&[2, 3], 2, 1.0));
    let y = once.forward(&x).expect("forward");
    let g = ArrayD::from_elem(IxDyn(&[2, 3]), 1.0f32);
    match once.backward(&[&x], &y, &g) {
        Some(Err(QuantError::UnsupportedLayer { kind, .. })) => assert_eq!(kind, "NoBackward"),
        other => panic!("expected UnsupportedLayer, got {other:?}"),
    }
    // A gradient of the wrong shape.
    let bad = ArrayD::from_elem(IxDyn(&[3, 3]), 1.0f32);
    assert!(matches!(
        once.backward(&[&x], &y, &bad),
        Some(Err(QuantError::ShapeMismatch { .. }))
    ));
}

mod conv_bn {
    use super::*;
    use qnumeric::nn::{BatchNorm, BatchNormParams, Identity};
    use qnumeric::qat::{ConvBn2d, FakeQuantize, QatConvBn};
    use qnumeric::{QDType, QScheme, QSpec};

    fn bn_params(seed: u64) -> BatchNormParams {
        let mut r = Lcg::new(seed);
        BatchNormParams {
            running_mean: (0..4).map(|_| r.unit_f32() - 0.5).collect(),
            running_var: (0..4).map(|_| 0.5 + r.unit_f32()).collect(),
            weight: Some((0..4).map(|_| 0.5 + r.unit_f32()).collect()),
            bias: Some((0..4).map(|_| r.unit_f32() - 0.5).collect()),
            eps: 1e-5,
        }
    }

    fn conv() -> Conv2d {
        Conv2d::new(
            random(&[4, 2, 3, 3], 51, 0.5),
            Some(random(&[4], 52, 0.1)),
            ConvGeometry::default().padding(1, 1),
        )
        .expect("conv")
    }

    fn weight_fq() -> FakeQuantize {
        FakeQuantize::per_channel(
            QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8),
            0,
            0.01,
        )
        .expect("fq")
    }

    fn model() -> Sequential {
        Sequential::new()
            .with("conv", conv())
            .expect("conv")
            .with("bn", BatchNorm::new_2d(bn_params(53)).expect("bn"))
            .expect("bn")
            .with("relu", ReLU)
            .expect("relu")
            .with("flatten", Flatten::default())
            .expect("flatten")
            .with(
                "fc",
                Linear::new(random(&[3, 100], 54, 0.2), None).expect("fc"),
            )
            .expect("fc")
            .with_quant_stubs()
            .expect("stubs")
    }

    /// The unfolded QAT Conv-BN-ReLU follows PyTorch's `_forward_approximate` as the
    /// step-exact `ConvBn2d` (golden-checked) does: same output and running statistics over
    /// several training steps, to the rounding of their different convolutions and weight
    /// fake quants (the fused op's and `FakeQuantize`'s parameters may differ in the last bit).
    #[test]
    fn training_steps_follow_the_step_exact_conv_bn() {
        let m =
            QatConvBn::new(conv(), &bn_params(53), true, weight_fq(), None).expect("qat conv-bn");
        let core = conv().core().clone();
        let mut reference = ConvBn2d::new(
            core.weight().clone(),
            core.bias_slice().map(<[f32]>::to_vec),
            ConvGeometry::default().padding(1, 1),
            bn_params(53),
            0.1,
        )
        .expect("reference")
        .with_relu();
        for step in 0..4u64 {
            let x = random(&[3, 2, 5, 5], 60 + step, 1.0);
            let y = float_out(m.forward(&Activation::Float(x.clone())).expect("forward"));
            let r = reference.forward(&x).expect("reference forward");
            let worst = y
                .iter()
                .zip(r.y.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 2e-2, "step {step}: output differs by {worst}");
            let bn = m.batch_norm();
            for (a, b) in bn.running_var.iter().zip(reference.running_var()) {
                assert!(
                    (a - b).abs() < 1e-3 * b.abs().max(1.0),
                    "step {step}: running var {a} vs {b}"
                );
            }
            for (a, b) in bn.running_mean.iter().zip(reference.running_mean()) {
                assert!((a - b).abs() < 1e-3, "step {step}: running mean {a} vs {b}");
            }
        }
    }

    #[test]
    fn prepare_qat_keeps_conv_bn_relu_unfolded_and_freezing_stops_the_statistics() {
        let qat =
            prepare_qat(model(), &QatConfig::x86_default().expect("config")).expect("prepare");
        assert_eq!(
            qat.model().layer("conv").expect("conv").kind(),
            "QatConvBnReLU2d"
        );
        assert_eq!(qat.model().layer("bn").expect("bn").kind(), Identity.kind());
        assert_eq!(
            qat.model().layer("relu").expect("relu").kind(),
            Identity.kind()
        );
        let x = random(&[4, 2, 5, 5], 70, 1.0);
        let before = qat.conv_bn("conv").expect("conv-bn").batch_norm();
        qat.model()
            .forward(Activation::Float(x.clone()))
            .expect("forward");
        let moved = qat.conv_bn("conv").expect("conv-bn").batch_norm();
        assert_ne!(before.running_mean, moved.running_mean);
        qat.apply(QatAction::FreezeBnStats);
        assert!(qat.conv_bn("conv").expect("conv-bn").bn_frozen());
        qat.model()
            .forward(Activation::Float(random(&[4, 2, 5, 5], 71, 2.0)))
            .expect("forward");
        let frozen = qat.conv_bn("conv").expect("conv-bn").batch_norm();
        assert_eq!(moved.running_mean, frozen.running_mean);
        assert_eq!(moved.running_var, frozen.running_var);
    }

    /// `convert` folds the BatchNorm with the running statistics, quantizes the folded weight
    /// with the weight fake quant's parameters (after it saw the folded weight) and the
    /// output with the output fake quant's: the int8 layer built by hand from those
    /// parameters gives the same bits.
    #[test]
    fn convert_folds_with_the_running_statistics_and_the_fake_quants_parameters() {
        use qnumeric::QuantizedTensor;
        use qnumeric::fusion::{ConvLayout, fuse_conv_bn_weights};
        use qnumeric::nn::quantized::QuantizedConv2d;
        let qat =
            prepare_qat(model(), &QatConfig::x86_default().expect("config")).expect("prepare");
        for seed in 0..3 {
            qat.model()
                .forward(Activation::Float(random(&[4, 2, 5, 5], 80 + seed, 1.0)))
                .expect("forward");
        }
        qat.apply(QatAction::DisableObserver);
        let cb = qat.conv_bn("conv").expect("conv-bn").clone();
        let core = cb.conv().core();
        let (w, b) = fuse_conv_bn_weights(
            core.weight(),
            core.bias(),
            &cb.batch_norm(),
            ConvLayout::Conv,
        )
        .expect("fold");
        let wq = QuantizedTensor::<i8>::quantize(
            &w,
            cb.weight_fake_quant().qparams().expect("w qparams"),
        )
        .expect("quantize");
        let expected = QuantizedConv2d::new(
            wq,
            Some(b),
            cb.conv().geometry(),
            cb.output_qparams().expect("out"),
        )
        .expect("int8 conv")
        .with_relu();
        let int8 = qat.convert().expect("convert");
        let got = int8.layer("conv").expect("conv");
        assert_eq!(got.kind(), "QuantizedConvReLU2d");
        let x = Activation::Float(random(&[2, 2, 5, 5], 90, 1.0));
        let q = int8
            .layer("quant")
            .expect("quant")
            .forward(&x)
            .expect("quantize");
        let (a, e) = (
            got.forward(&q).expect("converted"),
            expected.forward(&q).expect("by hand"),
        );
        assert_eq!(format!("{a:?}"), format!("{e:?}"));
        assert_eq!(int8.layer("bn").expect("bn").kind(), Identity.kind());
    }

    #[test]
    fn conv_bn_refusals_are_typed() {
        let relu_conv = conv().with_relu();
        assert!(matches!(
            QatConvBn::new(relu_conv, &bn_params(1), false, weight_fq(), None),
            Err(QuantError::UnsupportedLayer { .. })
        ));
        let mut three = bn_params(1);
        three.running_mean.truncate(3);
        three.running_var.truncate(3);
        three.weight.as_mut().expect("w").truncate(3);
        three.bias.as_mut().expect("b").truncate(3);
        assert!(matches!(
            QatConvBn::new(conv(), &three, false, weight_fq(), None),
            Err(QuantError::LengthMismatch { .. })
        ));
        let per_tensor =
            FakeQuantize::per_tensor(QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8), 0.01)
                .expect("fq");
        assert!(matches!(
            QatConvBn::new(conv(), &bn_params(1), false, per_tensor, None),
            Err(QuantError::UnsupportedConfig { .. })
        ));
        let m = QatConvBn::new(conv(), &bn_params(1), false, weight_fq(), None).expect("ok");
        // One value per channel in training; backward before any forward.
        assert!(matches!(
            m.forward(&Activation::Float(random(&[1, 2, 1, 1], 3, 1.0))),
            Err(QuantError::InvalidParameter { .. })
        ));
        let x = Activation::Float(random(&[2, 2, 3, 3], 4, 1.0));
        let g = ArrayD::from_elem(IxDyn(&[2, 4, 3, 3]), 1.0f32);
        let y = Activation::Float(g.clone());
        assert!(matches!(
            m.backward(&[&x], &y, &g),
            Some(Err(QuantError::UnsupportedConfig { .. }))
        ));
    }
}

#[test]
fn the_stubs_pass_gradients_through_on_float_input_only() {
    use qnumeric::nn::{DeQuantStub, QuantStub};
    let x = Activation::Float(random(&[2, 3], 5, 1.0));
    let g = random(&[2, 3], 6, 1.0);
    for m in [&QuantStub as &dyn Module, &DeQuantStub] {
        let y = m.forward(&x).expect("forward");
        let grads = m
            .backward(&[&x], &y, &g)
            .expect("has backward")
            .expect("backward");
        assert_eq!(grads.inputs, vec![g.clone()]);
        assert!(grads.params.is_empty());
        let bad = random(&[3, 2], 7, 1.0);
        assert!(matches!(
            m.backward(&[&x], &y, &bad),
            Some(Err(QuantError::ShapeMismatch { .. }))
        ));
    }
    let qp = qnumeric::QParams::new(0.1, 0, qnumeric::QDType::QUInt8).expect("qparams");
    let q = Activation::Quantized(
        qnumeric::QuantizedTensor::<u8>::quantize(&random(&[2, 3], 8, 1.0), qp).expect("quantize"),
    );
    let y = DeQuantStub.forward(&q).expect("dequantize");
    assert!(matches!(
        DeQuantStub.backward(&[&q], &y, &g),
        Some(Err(QuantError::UnsupportedConfig { .. }))
    ));
}

/// QAT on the real digits CNN: training wins back what 4-bit activations and 2-bit weights
/// lose, and the diagnosis of that PTQ model measures QAT as a remedy.
#[cfg(feature = "safetensors")]
mod on_digits {
    use std::time::Duration;

    use qnumeric::diagnose::{
        Change, DiagnoseOptions, EvalData, Evidence, QatTrial, Quantized, diagnose,
    };
    use qnumeric::fusion::fuse_auto;
    use qnumeric::nn::{Activation, Model};
    use qnumeric::observers::{MinMaxObserver, PerChannelMinMaxObserver};
    use qnumeric::ptq::{PtqConfig, QConfig, prepare};
    use qnumeric::qat::{QatAction, QatConfig, QatObjective, QatSchedule, prepare_qat};
    use qnumeric::{QDType, QScheme, QSpec};

    use crate::model::{Digits, evaluate};

    #[test]
    fn qat_recovers_narrow_widths_and_the_diagnosis_measures_it() {
        let d = Digits::load().expect("digits");
        let mut fused = d.model.clone();
        fuse_auto(&mut fused).expect("fuse");
        let calibrated = || {
            let qat = prepare_qat(fused.clone(), &QatConfig::with_bits(4, 2).expect("bits"))
                .expect("prepare_qat");
            qat.apply(QatAction::DisableFakeQuant);
            qat.model()
                .forward(Activation::Float(d.calib.clone()))
                .expect("calibrate");
            qat.apply(QatAction::EnableFakeQuant);
            qat
        };
        let ptq = calibrated();
        ptq.apply(QatAction::DisableObserver);
        let (ptq_acc, _) = evaluate(ptq.model(), &d.test_x, &d.test_y).expect("ptq");
        let mut qat = calibrated();
        let run = qat
            .fine_tune(
                &d.train_x,
                QatObjective::Labels(&d.train_y),
                &QatSchedule {
                    epochs: 1,
                    batch_size: 32,
                    learning_rate: 3e-4,
                    freeze_observers_after: Some(1),
                    time_budget: None,
                    seed: 1,
                },
            )
            .expect("fine_tune");
        assert_eq!(run.steps, d.train_y.len().div_ceil(32));
        qat.apply(QatAction::DisableObserver);
        let (qat_acc, _) = evaluate(qat.model(), &d.test_x, &d.test_y).expect("qat");
        assert!(
            qat_acc > ptq_acc + 0.05,
            "one epoch of QAT: accuracy {ptq_acc:.3} -> {qat_acc:.3}"
        );

        // The diagnosis of the int8 PTQ model at the same widths measures QAT.
        let act = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8)
            .with_quant_range(0, 15)
            .expect("act");
        let w = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8)
            .with_quant_range(-2, 1)
            .expect("w");
        let cfg = PtqConfig::new(QConfig::new(
            MinMaxObserver::new(act).expect("obs"),
            PerChannelMinMaxObserver::new(w, 0).expect("obs"),
        ));
        let mut prepared = prepare(fused.clone(), &cfg).expect("prepare");
        prepared.calibrate(&d.calib).expect("calibrate");
        let int8 = prepared.convert().expect("convert");
        let options = DiagnoseOptions {
            qat: Some(QatTrial {
                config: QatConfig::with_bits(4, 2).expect("bits"),
                schedule: QatSchedule {
                    epochs: 8,
                    batch_size: 32,
                    learning_rate: 3e-4,
                    freeze_observers_after: Some(0),
                    time_budget: Some(Duration::from_secs(60)),
                    seed: 1,
                },
            }),
            ..DiagnoseOptions::default()
        };
        let eval = EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        };
        let diagnosis = diagnose(
            &fused,
            Quantized::Model(&int8, cfg),
            &d.calib,
            eval,
            &options,
        )
        .expect("diagnose");
        let qat = diagnosis
            .remedies
            .iter()
            .find(|r| r.change == Change::QuantizationAwareTraining)
            .unwrap_or_else(|| panic!("QAT is a measured remedy:\n{diagnosis}"));
        let gain = qat.gain_db().expect("measured");
        assert!(gain > 0.5, "QAT gains {gain:.2} dB");
        match &qat.evidence {
            Evidence::QatRun {
                epochs,
                epochs_asked,
                steps,
                stopped_by_budget,
                ..
            } => {
                assert_eq!(*epochs_asked, 8);
                assert!(*steps > 0 && *epochs >= 1);
                assert_eq!(*stopped_by_budget, *epochs < 8);
            }
            other => panic!("QAT's evidence is its run, not {other:?}"),
        }
        // Without a trial, QAT is named but not measured.
        let eval = EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        };
        let cfg = PtqConfig::new(QConfig::new(
            MinMaxObserver::new(act).expect("obs"),
            PerChannelMinMaxObserver::new(w, 0).expect("obs"),
        ));
        let plain = diagnose(
            &fused,
            Quantized::Model(&int8, cfg),
            &d.calib,
            eval,
            &DiagnoseOptions::default(),
        )
        .expect("diagnose");
        assert!(
            plain
                .remedies
                .iter()
                .chain(&plain.rejected)
                .filter(|r| r.change == Change::QuantizationAwareTraining)
                .all(|r| r.gain_db().is_none())
        );
    }
}
