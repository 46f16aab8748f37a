//! Quantization-aware training (`qnumeric::qat`): the PyTorch golden cases of `qat.jsonl`,
//! each switch, the refusals, and "Ok or a typed Err" over hostile inputs.

use ndarray::{ArrayD, IxDyn, array};
use proptest::prelude::*;
use qnumeric::nn::{BatchNormParams, ConvGeometry};
use qnumeric::qat::{
    ConvBn2d, FakeQuantize, FusedMovingAvgObsFakeQuantize, LearnableFakeQuantize, Linear,
    QatAction, SgdMomentum, choose_quantization_params, sgd_step,
};
use qnumeric::{QDType, QScheme, QSpec, QuantError};

#[cfg(feature = "conformance")]
fn golden_lines(ops: &[&str]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/qat.jsonl");
    let text = std::fs::read_to_string(path).expect("qat.jsonl readable");
    text.lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            ops.iter().any(|op| v["op"] == *op)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(feature = "conformance")]
fn run_ops(ops: &[&str], min_passed: usize) {
    let report = qnumeric::conformance::run_str(&golden_lines(ops), "qat.jsonl");
    for f in &report.failures {
        println!("{f}");
    }
    assert_eq!(report.failed(), 0, "{report}: {:?}", report.failed_ids());
    assert!(report.passed >= min_passed, "{report}");
}

#[cfg(feature = "conformance")]
#[test]
fn golden_fake_quantize_module() {
    run_ops(&["fake_quantize_module"], 29);
}

#[cfg(feature = "conformance")]
#[test]
fn golden_fused_moving_avg_obs_fake_quant() {
    run_ops(&["fused_moving_avg_obs_fake_quant"], 24);
}

#[cfg(feature = "conformance")]
#[test]
fn golden_learnable_fake_quantize_module() {
    run_ops(&["learnable_fake_quantize_module"], 15);
}

#[cfg(feature = "conformance")]
#[test]
fn golden_qat_conv_bn() {
    run_ops(&["qat_conv_bn"], 6);
}

#[cfg(feature = "conformance")]
#[test]
fn golden_qat_linear() {
    run_ops(&["qat_linear"], 4);
}

#[cfg(feature = "conformance")]
#[test]
fn golden_all_qat_ops_together() {
    run_ops(
        &[
            "fake_quantize_module",
            "fused_moving_avg_obs_fake_quant",
            "learnable_fake_quantize_module",
            "qat_conv_bn",
            "qat_linear",
        ],
        78,
    );
}

fn quint8() -> QSpec {
    QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8)
}

fn qint8_sym_pc() -> QSpec {
    QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8)
}

#[test]
fn fake_quantize_first_step_with_observer_off_uses_scale_one() {
    let mut fq = FakeQuantize::per_tensor(quint8(), 0.01).unwrap();
    fq.enable_observer(false);
    let y = fq.forward(&array![0.4f32, 1.6, -0.2, 300.0]).unwrap();
    // scale 1, zero point 0, range 0..=255: rne, negatives clamp to 0, 300 to 255.
    assert_eq!(y, array![0.0, 2.0, 0.0, 255.0]);
    assert_eq!(fq.scale(), &[1.0]);
    assert_eq!(fq.zero_point(), &[0]);
    assert_eq!(fq.min_val(), vec![f32::INFINITY]);
    assert_eq!(fq.max_val(), vec![f32::NEG_INFINITY]);
}

#[test]
fn fake_quantize_switches() {
    let mut fq = FakeQuantize::per_tensor(quint8(), 0.5).unwrap();
    let x = array![-1.0f32, 0.3, 3.0];
    fq.forward(&x).unwrap();
    assert_eq!(fq.min_val(), vec![-1.0]);
    assert_eq!(fq.max_val(), vec![3.0]);
    // Observer off: statistics and parameters frozen.
    fq.enable_observer(false);
    let (s0, z0) = (fq.scale().to_vec(), fq.zero_point().to_vec());
    fq.forward(&array![-10.0f32, 10.0]).unwrap();
    assert_eq!((fq.scale(), fq.zero_point()), (&s0[..], &z0[..]));
    assert_eq!(fq.min_val(), vec![-1.0]);
    // Fake quant off: identity forward, dy passes through, observer still runs when on.
    fq.enable_fake_quant(false);
    fq.enable_observer(true);
    let x2 = array![-3.0f32, 0.123_456, 5.0];
    let (y, dx) = fq
        .forward_backward(&x2, &array![2.0f32, -2.0, 2.0])
        .unwrap();
    assert_eq!(y, x2);
    assert_eq!(dx, array![2.0, -2.0, 2.0]);
    assert_eq!(fq.min_val(), vec![-2.0]); // -1 + 0.5·(-3 − (-1))
    assert_eq!(fq.max_val(), vec![4.0]); // 3 + 0.5·(5 − 3)
}

#[test]
fn fake_quantize_straight_through_mask_keeps_the_sign_of_dy() {
    let mut fq = FakeQuantize::per_tensor(quint8(), 0.01).unwrap();
    fq.forward(&array![0.0f32, 1.0]).unwrap();
    fq.enable_observer(false);
    // 100 and -5 are outside [0, 1]: masked to ±0 with the sign of dy.
    let (_, dx) = fq
        .forward_backward(&array![100.0f32, -5.0, 0.5], &array![-3.0f32, 4.0, 7.0])
        .unwrap();
    assert_eq!(dx[0].to_bits(), (-0.0f32).to_bits());
    assert_eq!(dx[1].to_bits(), 0.0f32.to_bits());
    assert_eq!(dx[2], 7.0);
}

#[test]
fn fake_quantize_per_channel_first_step_with_observer_off_is_refused_and_unchanged() {
    let mut fq = FakeQuantize::per_channel(qint8_sym_pc(), 0, 0.01).unwrap();
    fq.enable_observer(false);
    let before = fq.clone();
    let x = ArrayD::from_elem(IxDyn(&[4, 3]), 1.0f32);
    let e = fq.forward(&x).unwrap_err();
    assert!(matches!(e, QuantError::LengthMismatch { .. }), "{e}");
    assert_eq!(fq, before);
    assert!(fq.min_val().is_empty());
}

#[test]
fn fake_quantize_reduce_range_and_symmetric_quint8_zero_point() {
    let s = QSpec::new(QScheme::PerTensorSymmetric, QDType::QUInt8)
        .with_quant_range(0, 255)
        .unwrap();
    let mut fq = FakeQuantize::per_tensor(s, 0.01).unwrap();
    fq.forward(&array![-1.0f32, 1.0]).unwrap();
    assert_eq!(fq.zero_point(), &[127]); // explicit range: (0 + 255) // 2
    let mut d = FakeQuantize::per_tensor(
        QSpec::new(QScheme::PerTensorSymmetric, QDType::QUInt8),
        0.01,
    )
    .unwrap();
    d.forward(&array![-1.0f32, 1.0]).unwrap();
    assert_eq!(d.zero_point(), &[128]);
    let r = quint8()
        .with_quant_range(0, 255)
        .unwrap()
        .with_reduce_range()
        .unwrap();
    let mut h = FakeQuantize::per_tensor(r, 0.01).unwrap();
    h.forward(&array![0.0f32, 1.27]).unwrap();
    assert_eq!(h.scale(), &[1.27f32 / 127.0]);
    assert_eq!(h.spec().range().quant_max(), 127);
}

#[test]
fn fake_quantize_refuses_nan_and_empty_and_stays_unchanged() {
    let mut fq = FakeQuantize::per_tensor(quint8(), 0.01).unwrap();
    fq.forward(&array![1.0f32, 2.0]).unwrap();
    let before = fq.clone();
    assert!(matches!(
        fq.forward(&array![1.0f32, f32::NAN]),
        Err(QuantError::NanInput { .. })
    ));
    assert!(matches!(
        fq.forward(&ArrayD::<f32>::zeros(IxDyn(&[0, 3]))),
        Err(QuantError::EmptyInput { .. })
    ));
    assert!(matches!(
        fq.forward_backward(&array![1.0f32], &array![1.0f32, 2.0]),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert_eq!(fq, before);
}

#[test]
fn choose_quantization_params_quirks() {
    // All zero / never observed: 0.1, zero point 0 (quint8) or 127 (qint8).
    let q = choose_quantization_params(0.0, 0.0, 0, 255, false);
    assert_eq!((q.scale, q.zero_point), (0.1, 0));
    let q = choose_quantization_params(0.0, 0.0, -128, 127, true);
    assert_eq!((q.scale, q.zero_point), (0.1, 127));
    // Symmetric but min >= 0: affine parameters, zero point qmin.
    let q = choose_quantization_params(0.5, 2.55, -128, 127, true);
    assert_eq!(
        (q.scale, q.zero_point),
        ((2.55f32 as f64 / 255.0) as f32, -128)
    );
    // Symmetric reduced range -64..=63: zero point -0.5 rounds to 0.
    let q = choose_quantization_params(-1.0, 1.0, -64, 63, true);
    assert_eq!(q.zero_point, 0);
    // quint8 symmetric: 127.5 rounds to 128.
    let q = choose_quantization_params(-1.0, 1.0, 0, 255, true);
    assert_eq!(q.zero_point, 128);
    // Tiny ranges are stretched to the 6.1e-5 floor.
    let q = choose_quantization_params(0.0, 1e-6, 0, 255, false);
    assert_eq!((q.scale, q.zero_point), (6.1e-5, 0));
}

#[test]
fn fused_recomputes_parameters_with_the_observer_off() {
    let s = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut fq = FusedMovingAvgObsFakeQuantize::per_tensor(s, 0.01).unwrap();
    fq.forward(&array![-1.0f32, 3.0]).unwrap();
    fq.enable_observer(false);
    fq.enable_fake_quant(false);
    fq.forward(&array![-100.0f32, 300.0]).unwrap();
    assert_eq!(fq.min_val(), &[-1.0]);
    // Fake quant off: parameters not updated; back on: recomputed from running min/max.
    let s0 = fq.scale().to_vec();
    fq.enable_fake_quant(true);
    fq.forward(&array![0.5f32]).unwrap();
    assert_eq!(fq.scale(), &s0[..]);
    assert_eq!(fq.zero_point(), &[64]);
}

#[test]
fn fused_per_channel_axis_one_refuses_after_resizing() {
    let mut fq = FusedMovingAvgObsFakeQuantize::per_channel(qint8_sym_pc(), 1, 0.01).unwrap();
    let x = ArrayD::from_elem(IxDyn(&[2, 3]), 1.0f32);
    let e = fq.forward(&x).unwrap_err();
    assert!(matches!(e, QuantError::UnsupportedConfig { .. }), "{e}");
    assert_eq!(fq.min_val(), &[f32::INFINITY; 3]);
    assert_eq!(fq.max_val(), &[f32::NEG_INFINITY; 3]);
    assert_eq!(fq.scale(), &[1.0]);
}

#[test]
fn lsq_forward_and_backward_zero_points_differ() {
    let s = quint8().with_quant_range(0, 255).unwrap();
    let mut m = LearnableFakeQuantize::per_tensor(s, 0.01, false).unwrap();
    m.set_params(vec![1.0], vec![2.5]).unwrap();
    m.enable_observer(false);
    // Forward zero point nearbyint(2.5) = 2: x = -2.4 → rne(-2.4) + 2 = 0 → y = -2.
    // Backward zero point trunc(3.0) = 3: q = rne(-2.4 + 3) = 1, inside → dx = dy,
    // ds = dy·((1 − 3)·1 − (−2.4))·1 = 0.4 (one FMA).
    let out = m
        .forward_backward(&array![-2.4f32], &array![1.0f32])
        .unwrap();
    assert_eq!(out.y, array![-2.0]);
    assert_eq!(out.dx, array![1.0]);
    assert_eq!(
        out.dscale.as_deref(),
        Some(&[(-2.0f32).mul_add(1.0, 2.4)][..])
    );
    assert_eq!(out.dzero_point.as_deref(), Some(&[0.0][..]));
    // SGD: p = fma(-lr, g, p).
    m.sgd_step(0.5, &out).unwrap();
    assert_eq!(m.scale(), &[(-0.5f32).mul_add(out.dscale.unwrap()[0], 1.0)]);
    // Fake quant off: no gradient, SGD leaves the parameters.
    m.enable_fake_quant(false);
    let out = m
        .forward_backward(&array![5.0f32], &array![1.0f32])
        .unwrap();
    assert_eq!(
        (&out.dscale, &out.dzero_point, out.grad_factor),
        (&None, &None, None)
    );
    let s1 = m.scale().to_vec();
    m.sgd_step(0.5, &out).unwrap();
    assert_eq!(m.scale(), &s1[..]);
}

#[test]
fn lsq_grad_scaling_and_symmetric_zero_point() {
    let s = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8)
        .with_quant_range(-128, 127)
        .unwrap();
    let mut m = LearnableFakeQuantize::per_tensor(s, 0.01, true).unwrap();
    m.set_params(vec![0.1], vec![3.0]).unwrap();
    m.enable_observer(false);
    let x = ArrayD::from_elem(IxDyn(&[2, 2]), 0.2f32);
    let out = m.forward_backward(&x, &x).unwrap();
    assert_eq!(out.qparams_zero_point, vec![0.0]);
    assert_eq!(
        out.grad_factor,
        Some((1.0 / (4.0f64 * 127.0).sqrt()) as f32)
    );
}

#[test]
fn lsq_clamps_the_scale_to_eps_with_the_observer_off() {
    let mut m = LearnableFakeQuantize::per_tensor(quint8(), 0.01, false).unwrap();
    m.set_params(vec![-0.5], vec![0.0]).unwrap();
    m.enable_observer(false);
    let out = m
        .forward_backward(&array![0.0f32], &array![1.0f32])
        .unwrap();
    assert_eq!(out.qparams_scale, vec![f32::EPSILON]);
}

fn bn(c: usize) -> BatchNormParams {
    BatchNormParams {
        running_mean: vec![0.0; c],
        running_var: vec![1.0; c],
        weight: Some(vec![1.0; c]),
        bias: Some(vec![0.0; c]),
        eps: 1e-5,
    }
}

#[test]
fn conv_bn_actions() {
    let w = ArrayD::from_shape_vec(IxDyn(&[2, 1, 1, 1]), vec![0.5f32, -0.25]).unwrap();
    let mut m = ConvBn2d::new(w, Some(vec![0.1, 0.2]), ConvGeometry::default(), bn(2), 0.1)
        .unwrap()
        .with_relu();
    assert_eq!(m.kind(), "ConvBnReLU2d");
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 3]), vec![1.0f32, 2.0, 4.0]).unwrap();
    let out = m.forward(&x).unwrap();
    assert!(out.bn_training);
    assert!(out.y.iter().all(|&v| v >= 0.0));
    assert_ne!(m.running_mean(), &[0.0, 0.0]);
    // Frozen: running statistics used and kept; train() does not unfreeze.
    m.apply(QatAction::FreezeBnStats);
    m.apply(QatAction::Train);
    let (rm, rv) = (m.running_mean().to_vec(), m.running_var().to_vec());
    assert!(!m.forward(&x).unwrap().bn_training);
    assert_eq!((m.running_mean(), m.running_var()), (&rm[..], &rv[..]));
    m.apply(QatAction::UpdateBnStats);
    assert!(m.bn_training());
    m.apply(QatAction::Eval);
    assert!(!m.bn_training() && !m.training());
    // eval() does not stop the weight observer.
    let before = m.weight_fake_quant().min_val().to_vec();
    let w2 = m.weight().unwrap();
    assert_eq!(w2.shape(), &[2, 1, 1, 1]);
    m.forward(&x).unwrap();
    assert_eq!(m.weight_fake_quant().min_val().len(), before.len());
    m.apply(QatAction::DisableFakeQuant);
    m.apply(QatAction::DisableObserver);
    assert!(!m.weight_fake_quant().fake_quant_enabled());
    assert!(!m.weight_fake_quant().observer_enabled());
    assert_eq!(
        QatAction::from_name("freeze_bn_stats").unwrap(),
        QatAction::FreezeBnStats
    );
    assert!(QatAction::from_name("nope").is_err());
}

#[test]
fn conv_bn_refuses_one_value_per_channel_in_training() {
    let w = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0f32);
    let mut m = ConvBn2d::new(w, None, ConvGeometry::default(), bn(1), 0.1).unwrap();
    let before = m.clone();
    let x = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0f32);
    assert!(matches!(
        m.forward(&x),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert_eq!(m, before);
}

#[test]
fn linear_backward_and_sgd() {
    // Rows whose fused symmetric scales are powers of two (1/64, 1/128) and whose weights lie
    // on the grid: weight_fq = weight, and every product below is exact.
    let w = ArrayD::from_shape_vec(
        IxDyn(&[2, 2]),
        vec![1.984375f32, -0.984375, 0.9921875, -0.9921875],
    )
    .unwrap();
    let mut fc = Linear::new(w.clone(), Some(vec![0.0, 1.0])).unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![2.0f32, 4.0]).unwrap();
    let dy = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0f32, -1.0]).unwrap();
    let step = fc.forward_backward(&x, &dy).unwrap();
    assert_eq!(step.weight_fq, w);
    assert_eq!(fc.weight_fake_quant().scale(), &[0.015625, 0.0078125]);
    assert_eq!(step.y.as_slice().unwrap(), &[0.03125, -0.984375]);
    assert_eq!(step.dx.as_slice().unwrap(), &[0.9921875, 0.0078125]);
    assert_eq!(step.dweight.as_slice().unwrap(), &[2.0, 4.0, -2.0, -4.0]);
    assert_eq!(step.dbias.as_deref(), Some(&[1.0, -1.0][..]));
    fc.sgd_step(0.5, &step).unwrap();
    assert_eq!(
        fc.weight().unwrap().as_slice().unwrap(),
        &[0.984375, -2.984375, 1.9921875, 1.0078125]
    );
    assert_eq!(fc.bias(), Some(&[-0.5, 1.5][..]));
    assert!(matches!(
        fc.forward_backward(&x, &x.t().to_owned()),
        Err(QuantError::ShapeMismatch { .. })
    ));
}

#[test]
fn sgd_plain_and_momentum() {
    let mut p = [1.0f32, 2.0];
    sgd_step(0.1, &mut p, &[1.0, -1.0]).unwrap();
    assert_eq!(
        p,
        [(-0.1f32).mul_add(1.0, 1.0), (-0.1f32).mul_add(-1.0, 2.0)]
    );
    assert!(sgd_step(f64::NAN, &mut p, &[1.0, 1.0]).is_err());
    assert!(sgd_step(0.1, &mut p, &[1.0]).is_err());
    let mut opt = SgdMomentum::new(1.0, 0.5, 0.0, false).unwrap();
    let mut q = [0.0f32];
    opt.step(&mut q, &[1.0]).unwrap(); // b = 1
    opt.step(&mut q, &[1.0]).unwrap(); // b = 1.5
    assert_eq!(q, [-2.5]);
    assert_eq!(opt.buffer(), Some(&[1.5f32][..]));
    let mut nes = SgdMomentum::new(1.0, 0.5, 0.0, true).unwrap();
    let mut r = [0.0f32];
    nes.step(&mut r, &[1.0]).unwrap(); // b = 1, d = 1 + 0.5
    assert_eq!(r, [-1.5]);
    assert!(SgdMomentum::new(1.0, 0.0, 0.0, true).is_err());
}

#[cfg(feature = "serde")]
#[test]
fn qat_state_round_trips_through_serde() {
    let mut fq = FusedMovingAvgObsFakeQuantize::x86_weight().unwrap();
    fq.forward(&ArrayD::from_elem(IxDyn(&[2, 3]), 0.5f32))
        .unwrap();
    let text = serde_json::to_string(&fq).unwrap();
    let back: FusedMovingAvgObsFakeQuantize = serde_json::from_str(&text).unwrap();
    assert_eq!(back, fq);
    let w = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0f32);
    let m = ConvBn2d::new(w, None, ConvGeometry::default(), bn(1), 0.1).unwrap();
    let back: ConvBn2d = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}

fn hostile() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1e3f32..1e3,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::MAX),
        1 => Just(-f32::MAX),
        1 => Just(0.0f32),
        1 => Just(1e-40f32),
    ]
}

fn typed(r: &Result<impl std::fmt::Debug, QuantError>) {
    if let Err(e) = r {
        let _ = e.to_string();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fake_quant_modules_never_panic(
        data in proptest::collection::vec(hostile(), 0..24),
        rows in 0usize..4,
        dy_len in 0usize..24,
        obs in any::<bool>(),
        fqon in any::<bool>(),
        axis in -3isize..3,
    ) {
        let n = data.len();
        let cols = n.checked_div(rows).unwrap_or(0);
        let x = ArrayD::from_shape_vec(IxDyn(&[rows, cols]), data[..rows * cols].to_vec()).unwrap();
        let dy = ArrayD::from_elem(IxDyn(&[dy_len]), 1.0f32);
        let mut a = FakeQuantize::per_tensor(quint8(), 0.01).unwrap();
        let mut b = FakeQuantize::per_channel(qint8_sym_pc(), axis, 0.01).unwrap();
        let mut c = FusedMovingAvgObsFakeQuantize::per_tensor(quint8(), 0.01).unwrap();
        let mut d = FusedMovingAvgObsFakeQuantize::per_channel(qint8_sym_pc(), axis, 0.01).unwrap();
        let mut e = LearnableFakeQuantize::per_tensor(quint8(), 0.01, true).unwrap();
        let mut f = LearnableFakeQuantize::per_channel(qint8_sym_pc(), axis, cols.max(1), 0.01, false).unwrap();
        for _ in 0..2 {
            a.enable_observer(obs); a.enable_fake_quant(fqon);
            b.enable_observer(obs); b.enable_fake_quant(fqon);
            c.enable_observer(obs); c.enable_fake_quant(fqon);
            d.enable_observer(obs); d.enable_fake_quant(fqon);
            e.enable_observer(obs); e.enable_fake_quant(fqon);
            f.enable_observer(obs); f.enable_fake_quant(fqon);
            typed(&a.forward(&x));
            typed(&a.forward_backward(&x, &x));
            typed(&a.backward(&x, &dy));
            typed(&b.forward_backward(&x, &x));
            typed(&c.forward_backward(&x, &x));
            typed(&c.backward(&x, &dy));
            typed(&d.forward_backward(&x, &x));
            if let Ok(s) = e.forward_backward(&x, &x) { typed(&e.sgd_step(1e30, &s)); }
            typed(&e.forward_backward(&x, &dy));
            typed(&f.forward_backward(&x, &x));
        }
        typed(&e.set_params(vec![f32::NAN], vec![0.0]));
        let _ = choose_quantization_params(
            data.first().copied().unwrap_or(0.0),
            data.last().copied().unwrap_or(0.0),
            -128, 127, obs,
        );
    }

    #[test]
    fn qat_layers_never_panic(
        data in proptest::collection::vec(hostile(), 1..40),
        c_in in 1usize..3,
        h in 0usize..4,
        k in 1usize..3,
        bnw in hostile(),
        var in hostile(),
        lr in hostile(),
        act in 0usize..8,
    ) {
        let acts = [
            QatAction::FreezeBnStats, QatAction::UpdateBnStats, QatAction::DisableObserver,
            QatAction::EnableObserver, QatAction::DisableFakeQuant, QatAction::EnableFakeQuant,
            QatAction::Eval, QatAction::Train,
        ];
        let w: Vec<f32> = data.iter().cycle().take(2 * c_in * k * k).copied().collect();
        let w = ArrayD::from_shape_vec(IxDyn(&[2, c_in, k, k]), w).unwrap();
        let bnp = BatchNormParams {
            running_mean: vec![0.0; 2],
            running_var: vec![var; 2],
            weight: Some(vec![bnw; 2]),
            bias: Some(vec![0.0; 2]),
            eps: 1e-5,
        };
        if let Ok(mut m) = ConvBn2d::new(w.clone(), Some(vec![0.0, 1.0]), ConvGeometry::default().padding(1, 1), bnp, 0.1) {
            m.apply(acts[act]);
            let xs: Vec<f32> = data.iter().cycle().take(c_in * h * h).copied().collect();
            let x = ArrayD::from_shape_vec(IxDyn(&[1, c_in, h, h]), xs).unwrap();
            typed(&m.forward(&x));
            typed(&m.forward(&ArrayD::zeros(IxDyn(&[1, c_in + 1, 3, 3]))));
        }
        let lw: Vec<f32> = data.iter().cycle().take(2 * k).copied().collect();
        if let Ok(mut fc) = Linear::new(ArrayD::from_shape_vec(IxDyn(&[2, k]), lw).unwrap(), Some(vec![0.0, 0.0])) {
            fc.apply(acts[act]);
            let xs: Vec<f32> = data.iter().cycle().take(3 * k).copied().collect();
            let x = ArrayD::from_shape_vec(IxDyn(&[3, k]), xs).unwrap();
            let dy = ArrayD::from_elem(IxDyn(&[3, 2]), 1.0f32);
            match fc.forward_backward(&x, &dy) {
                Ok(s) => typed(&fc.sgd_step(f64::from(lr), &s)),
                Err(e) => { let _ = e.to_string(); }
            }
            typed(&fc.forward(&ArrayD::zeros(IxDyn(&[3, k + 1]))));
        }
    }
}

/// Data-parallel QAT: two replicas' fake quants, each on its own shard, merged, hold what one
/// fake quant that saw both shards' first batches would (min/max union), and the merge
/// refuses another configuration.
#[test]
fn fake_quantize_replicas_merge_like_observers() {
    let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let (a, b) = (array![-1.0f32, 0.5, 2.0], array![-3.0f32, 0.0, 1.0]);
    let mut left = FakeQuantize::per_tensor(spec, 0.01).expect("fq");
    let mut right = left.clone();
    left.forward(&a).expect("left");
    right.forward(&b).expect("right");
    left.merge(&right).expect("merge");
    let mut whole = FakeQuantize::per_tensor(spec, 0.01).expect("fq");
    whole
        .forward(&array![-1.0f32, 0.5, 2.0, -3.0, 0.0, 1.0])
        .expect("whole");
    assert_eq!(left.min_val(), whole.min_val());
    assert_eq!(left.max_val(), whole.max_val());
    assert_eq!(
        (left.scale(), left.zero_point()),
        (whole.scale(), whole.zero_point())
    );
    // Merging an empty replica changes nothing.
    let before = left.clone();
    left.merge(&FakeQuantize::per_tensor(spec, 0.01).expect("fq"))
        .expect("merge empty");
    assert_eq!(before, left);
    let other =
        FakeQuantize::per_tensor(QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8), 0.01)
            .expect("fq");
    assert!(matches!(
        left.merge(&other),
        Err(QuantError::Incompatible { .. })
    ));
    assert_eq!(before, left);
}

/// The kernels without the crate's modules or optimizers: a caller's own training loop (plain
/// vectors, its own SGD) learns a 4-bit weight vector through the LSQ forward and backward
/// (weights and step size learned), and an 8-bit one through the straight-through mask of
/// `fake_quantize`. What a user of another training framework does (`docs/qat.md`).
#[test]
fn ste_and_lsq_kernels_drive_a_callers_own_optimizer() {
    use ndarray::{Array1, Array2};
    use qnumeric::{
        LearnableParams, QParams, fake_quantize, fake_quantize_mask, learnable_fake_quantize,
        learnable_fake_quantize_backward,
    };
    let mut r = qnumeric::rng::Lcg::new(7);
    let target: Array1<f32> = Array1::from_shape_fn(8, |_| r.unit_f32() * 2.0 - 1.0);
    let x: Array2<f32> = Array2::from_shape_fn((64, 8), |_| r.unit_f32() * 2.0 - 1.0);
    let y = x.dot(&target);
    // The caller's loss: mean squared error of x·w against y, and its gradient in w.
    let loss_and_grad = |wq: &Array1<f32>| {
        let e = x.dot(wq) - &y;
        let loss = e.mapv(|v| v * v).mean().expect("mean");
        (loss, x.t().dot(&e) * (2.0 / 64.0))
    };

    // LSQ: the weight and its step size both learned, by the caller's own SGD.
    let mut w: Array1<f32> = Array1::from_elem(8, 0.1);
    let mut p = LearnableParams {
        scale: 0.02,
        zero_point: 0.0,
        quant_min: -8,
        quant_max: 7,
        grad_factor: 1.0 / (8.0f32 * 7.0).sqrt(),
    };
    let (first, _) = loss_and_grad(&learnable_fake_quantize(&w, &p).expect("lsq"));
    for _ in 0..300 {
        let wq = learnable_fake_quantize(&w, &p).expect("lsq");
        let (_, dwq) = loss_and_grad(&wq);
        let g = learnable_fake_quantize_backward(&w, &dwq, &p).expect("lsq backward");
        w.scaled_add(-0.1, &g.dx);
        p.scale = (p.scale - 0.01 * g.dscale).max(1e-4);
    }
    let (last, _) = loss_and_grad(&learnable_fake_quantize(&w, &p).expect("lsq"));
    assert!(last < first / 20.0, "LSQ: loss {first} -> {last}");
    assert!(
        p.scale > 0.05,
        "the step size grew to cover the weights: {}",
        p.scale
    );

    // STE: a fixed 8-bit grid; the gradient passes where the weight is not clipped.
    let qp = QParams::new(0.01, 0, QDType::QInt8).expect("qparams");
    let mut w: Array1<f32> = Array1::zeros(8);
    let (first, _) = loss_and_grad(&fake_quantize(&w, &qp).expect("fq"));
    for _ in 0..300 {
        let (_, dwq) = loss_and_grad(&fake_quantize(&w, &qp).expect("fq"));
        let mask = fake_quantize_mask(&w, &qp).expect("mask");
        let dw = ndarray::Zip::from(&dwq)
            .and(&mask)
            .map_collect(|&g, &m| if m { g } else { 0.0 });
        w.scaled_add(-0.1, &dw);
    }
    let (last, _) = loss_and_grad(&fake_quantize(&w, &qp).expect("fq"));
    assert!(last < first / 100.0, "STE: loss {first} -> {last}");
}
