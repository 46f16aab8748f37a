//! Observers: PyTorch's spec examples, every refusal, merge against one observer over the
//! concatenated data, object safety, and properties.
#![allow(clippy::unwrap_used)]

use ndarray::{array, concatenate, Array1, ArrayD, Axis, IxDyn};
use proptest::prelude::*;
use qnumeric::observers::compare_calibrators;
use qnumeric::{
    AnyQParams, DynamicObserver, EntropyObserver, FixedQParamsObserver, HistogramObserver,
    MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
    MseObserver, Observer, PerChannelMinMaxObserver, PercentileObserver, QDType, QScheme, QSpec,
    QuantError, StreamingHistogram, ZeroPoints,
};

/// Builds a fresh observer.
type Factory = Box<dyn Fn() -> Box<dyn Observer>>;
fn spec(s: QScheme, d: QDType) -> QSpec {
    QSpec::new(s, d)
}

fn pt(s: QScheme, d: QDType, reduce: bool, lo: Option<i64>, hi: Option<i64>) -> QSpec {
    QSpec::from_pytorch(d, s, reduce, lo, hi, None).unwrap()
}

fn v1(v: &[f32]) -> ArrayD<f32> {
    Array1::from(v.to_vec()).into_dyn()
}

fn per_tensor(o: &dyn Observer) -> (f32, i32) {
    match o.qparams().unwrap() {
        AnyQParams::PerTensor(p) => (p.scale(), p.zero_point()),
        AnyQParams::PerChannel(_) => panic!("per tensor expected"),
    }
}

fn per_channel(o: &dyn Observer) -> (Vec<f32>, Vec<f32>) {
    match o.qparams().unwrap() {
        AnyQParams::PerChannel(p) => {
            let zps = match p.zero_points() {
                ZeroPoints::Int(v) => v.iter().map(|&z| z as f32).collect(),
                ZeroPoints::Float(v) => v.clone(),
            };
            (p.scales().to_vec(), zps)
        }
        AnyQParams::PerTensor(_) => panic!("per channel expected"),
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-30)
}

/// The 4-D tensor of PyTorch's `test_per_channel_observers` (pytorch.md §3.3).
fn x4() -> ArrayD<f32> {
    ArrayD::from_shape_vec(
        IxDyn(&[2, 2, 2, 2]),
        vec![
            1.0, 2.0, 2.0, 2.5, 3.0, 4.0, 4.5, 6.0, -4.0, -3.0, 5.0, 5.0, 6.0, 3.0, 7.0, 8.0,
        ],
    )
    .unwrap()
}

// ---------------------------------------------------------------- PyTorch examples (§3, §9, §10)

#[test]
fn per_tensor_observers_pytorch_test() {
    let x = v1(&[1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = v1(&[4.0, 5.0, 5.0, 6.0, 7.0, 8.0]);
    let xm = v1(&[0.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ym = v1(&[2.0, 5.0, 5.0, 6.0, 7.0, 10.0]);
    let cases = [
        (
            QScheme::PerTensorAffine,
            QDType::QUInt8,
            false,
            0.031_372_55,
            0,
        ),
        (
            QScheme::PerTensorAffine,
            QDType::QInt8,
            false,
            0.031_372_55,
            -128,
        ),
        (
            QScheme::PerTensorSymmetric,
            QDType::QUInt8,
            false,
            0.062_745_1,
            128,
        ),
        (
            QScheme::PerTensorSymmetric,
            QDType::QInt8,
            false,
            0.062_745_1,
            0,
        ),
        (
            QScheme::PerTensorAffine,
            QDType::QUInt8,
            true,
            0.031_372_55 * 255.0 / 127.0,
            0,
        ),
        (
            QScheme::PerTensorAffine,
            QDType::QInt8,
            true,
            0.031_372_55 * 255.0 / 127.0,
            -64,
        ),
        (
            QScheme::PerTensorSymmetric,
            QDType::QInt8,
            true,
            0.062_745_1 * 255.0 / 127.0,
            0,
        ),
    ];
    for (s, d, reduce, scale, zp) in cases {
        let sp = pt(s, d, reduce, None, None);
        let mut a = MinMaxObserver::new(sp).unwrap();
        a.observe(x.view()).unwrap();
        a.observe(y.view()).unwrap();
        let mut b = MovingAverageMinMaxObserver::new(sp, 0.5).unwrap();
        b.observe(xm.view()).unwrap();
        b.observe(ym.view()).unwrap();
        assert_eq!(a.min_max(), Some((1.0, 8.0)));
        assert_eq!(b.min_max(), Some((1.0, 8.0)));
        for o in [&a as &dyn Observer, &b] {
            let (sc, z) = per_tensor(o);
            assert!(
                (sc - scale).abs() < 1e-6,
                "{s:?} {d:?} {reduce}: {sc} vs {scale}"
            );
            assert_eq!(z, zp, "{s:?} {d:?} {reduce}");
        }
    }
}

#[test]
fn extra_verified_vectors() {
    let affine = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut o = MinMaxObserver::new(affine).unwrap();
    o.observe(v1(&[0.0; 4]).view()).unwrap();
    assert_eq!(per_tensor(&o), (f32::EPSILON, 0));
    o.reset();
    o.observe(v1(&[3.0; 4]).view()).unwrap();
    assert_eq!(per_tensor(&o), (0.011_764_706, 0));
    let mut s = MinMaxObserver::new(spec(QScheme::PerTensorSymmetric, QDType::QInt8)).unwrap();
    s.observe(v1(&[-3.0; 4]).view()).unwrap();
    assert_eq!(per_tensor(&s), (0.023_529_412, 0));
    let mut s = MinMaxObserver::new(spec(QScheme::PerTensorSymmetric, QDType::QUInt8)).unwrap();
    s.observe(v1(&[-1.0, 2.0]).view()).unwrap();
    assert_eq!(per_tensor(&s), (0.015_686_275, 128));
    let custom = pt(
        QScheme::PerTensorSymmetric,
        QDType::QUInt8,
        false,
        Some(0),
        Some(127),
    );
    let mut s = MinMaxObserver::new(custom).unwrap();
    s.observe(v1(&[-1.0, 2.0]).view()).unwrap();
    assert_eq!(per_tensor(&s), (0.031_496_063, 63));
    // default_observer (0..127) on [-5, -3.5, -2, 0, 3, 5, 7] → (0.094488, 53).
    let d = pt(
        QScheme::PerTensorAffine,
        QDType::QUInt8,
        false,
        Some(0),
        Some(127),
    );
    let mut o = MinMaxObserver::new(d).unwrap();
    o.observe(v1(&[-5.0, -3.5, -2.0, 0.0, 3.0, 5.0, 7.0]).view())
        .unwrap();
    let (sc, zp) = per_tensor(&o);
    assert!((sc - 0.094_488).abs() < 1e-6 && zp == 53);
    // float qparams on [[1, 1], [2, 3]].
    let f = spec(QScheme::PerChannelAffineFloatQParams, QDType::QUInt8);
    let mut o = PerChannelMinMaxObserver::new(f, 0).unwrap();
    o.observe(array![[1.0f32, 1.0], [2.0, 3.0]].into_dyn().view())
        .unwrap();
    let (sc, zp) = per_channel(&o);
    assert_eq!(sc, vec![1.0, 0.003_921_569]);
    assert_eq!(zp[0], -1.0);
    assert!((zp[1] + 509.999_97).abs() < 1e-3);
}

#[test]
fn per_channel_observers_pytorch_vectors() {
    let x = x4();
    let mins = [[1.0, -4.0], [-4.0, 3.0], [-4.0, 2.0], [-4.0, -3.0]];
    let maxs = [[6.0, 8.0], [5.0, 8.0], [6.0, 8.0], [7.0, 8.0]];
    let scales = [
        [0.023_529_41, 0.047_058_82],
        [0.035_294_12, 0.031_372_55],
        [0.039_215_69, 0.031_372_55],
        [0.043_137_26, 0.043_137_26],
    ];
    let zps = [[0.0, 85.0], [113.0, 0.0], [102.0, 0.0], [93.0, 70.0]];
    let zps8 = [
        [-128.0, -43.0],
        [-15.0, -128.0],
        [-26.0, -128.0],
        [-35.0, -58.0],
    ];
    let sym = [
        [0.047_058_82, 0.062_745_09],
        [0.039_215_69, 0.062_745_1],
        [0.047_058_82, 0.062_745_1],
        [0.054_901_96, 0.062_745_1],
    ];
    for axis in 0..4 {
        for ch_axis in [axis as isize, axis as isize - 4] {
            let mut o = PerChannelMinMaxObserver::new(
                spec(QScheme::PerChannelAffine, QDType::QUInt8),
                ch_axis,
            )
            .unwrap();
            o.observe(x.view()).unwrap();
            assert_eq!(o.min_vals(), &mins[axis]);
            assert_eq!(o.max_vals(), &maxs[axis]);
            let (sc, zp) = per_channel(&o);
            assert!(
                sc.iter().zip(&scales[axis]).all(|(a, b)| close(*a, *b)),
                "{sc:?}"
            );
            assert_eq!(zp, zps[axis]);
            let mut o8 = PerChannelMinMaxObserver::new(
                spec(QScheme::PerChannelAffine, QDType::QInt8),
                ch_axis,
            )
            .unwrap();
            o8.observe(x.view()).unwrap();
            assert_eq!(per_channel(&o8).1, zps8[axis]);
            let mut s = PerChannelMinMaxObserver::new(
                spec(QScheme::PerChannelSymmetric, QDType::QInt8),
                ch_axis,
            )
            .unwrap();
            s.observe(x.view()).unwrap();
            let (sc, zp) = per_channel(&s);
            assert!(
                sc.iter().zip(&sym[axis]).all(|(a, b)| close(*a, *b)),
                "{sc:?}"
            );
            assert_eq!(zp, vec![0.0, 0.0]);
            // Moving average, c = 0.5: 0.5·x then 1.5·x gives x's min/max.
            let mut m = MovingAveragePerChannelMinMaxObserver::new(
                spec(QScheme::PerChannelAffine, QDType::QUInt8),
                ch_axis,
                0.5,
            )
            .unwrap();
            m.observe((&x * 0.5).view()).unwrap();
            m.observe((&x * 1.5).view()).unwrap();
            assert_eq!(m.min_vals(), &mins[axis]);
            assert_eq!(m.max_vals(), &maxs[axis]);
        }
    }
}

#[test]
fn per_channel_weight_observer_serialisation_example() {
    let w = array![
        [-5.0f32, -3.5, -2.0, 0.0, 3.0, 5.0, 7.0],
        [1.0, 3.0, 2.0, 5.0, 6.5, 8.0, 10.0]
    ];
    let mut o = PerChannelMinMaxObserver::new(spec(QScheme::PerChannelSymmetric, QDType::QInt8), 0)
        .unwrap();
    o.observe(w.into_dyn().view()).unwrap();
    let (sc, zp) = per_channel(&o);
    assert!((sc[0] - 0.054_902).abs() < 1e-6 && (sc[1] - 0.078_431).abs() < 1e-6);
    assert_eq!(zp, vec![0.0, 0.0]);
}

#[test]
fn histogram_observer_pytorch_test() {
    // test_histogram_observer: bins=3, [2,3,4,5] then [5,6,7,8].
    for (s, expected) in [
        (QScheme::PerTensorAffine, 0.023_529_4),
        (QScheme::PerTensorSymmetric, 0.047_058_8),
    ] {
        let mut o = HistogramObserver::with_bins(spec(s, QDType::QUInt8), 3).unwrap();
        o.observe(v1(&[2.0, 3.0, 4.0, 5.0]).view()).unwrap();
        o.observe(v1(&[5.0, 6.0, 7.0, 8.0]).view()).unwrap();
        assert_eq!(o.histogram(), &[2.0, 3.0, 3.0]);
        let (sc, _) = per_tensor(&o);
        assert!((sc - expected).abs() < 1e-6, "{s:?}: {sc}");
    }
    // one-sided: zero point 0 when min is 0.
    let mut o = HistogramObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    o.observe(v1(&[0.0, 0.5, 1.0, 2.0, 3.0]).view()).unwrap();
    assert_eq!(per_tensor(&o).1, 0);
    // extreme inputs must not crash; correct numel.
    let mut o = HistogramObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    let tiny = 4.58e-41f32;
    o.observe(v1(&[0.0, 0.0, tiny, tiny]).view()).unwrap();
    o.observe(v1(&[0.0, 0.0, tiny, tiny]).view()).unwrap();
    o.qparams().unwrap();
    let mut o = HistogramObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    o.observe(v1(&[1.0, 3.0, -2.0, 7.5]).view()).unwrap();
    o.observe(v1(&[0.5, 0.25]).view()).unwrap();
    assert_eq!(o.histogram().iter().sum::<f32>(), 6.0);
}

#[test]
fn fixed_and_dynamic() {
    let o = FixedQParamsObserver::new(1.0 / 256.0, 0, QDType::QUInt8.full_range()).unwrap();
    assert_eq!(per_tensor(&o), (0.003_906_25, 0));
    let mut d = DynamicObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    d.observe(v1(&[-1.0, 1.0]).view()).unwrap();
    d.observe(v1(&[0.0, 3.0]).view()).unwrap();
    assert_eq!(per_tensor(&d), (0.011_764_706, 0));
}

// ------------------------------------------------------------------------------ refusals

#[test]
fn every_refusal_is_typed() {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    // symmetric + reduce_range + quint8 (PyTorch NotImplementedError)
    let sym_rr = pt(
        QScheme::PerTensorSymmetric,
        QDType::QUInt8,
        true,
        None,
        None,
    );
    assert!(matches!(
        MinMaxObserver::new(sym_rr),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    assert!(matches!(
        MovingAverageMinMaxObserver::new(sym_rr, 0.1),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    let pc_rr = pt(
        QScheme::PerChannelSymmetric,
        QDType::QUInt8,
        true,
        None,
        None,
    );
    assert!(matches!(
        PerChannelMinMaxObserver::new(pc_rr, 0),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    // per-tensor observer with a per-channel scheme, and vice versa
    assert!(matches!(
        MinMaxObserver::new(pc),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    assert!(matches!(
        HistogramObserver::new(pc),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    assert!(matches!(
        PerChannelMinMaxObserver::new(q8, 0),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    assert!(matches!(
        MovingAveragePerChannelMinMaxObserver::new(q8, 0, 0.1),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    // bad custom ranges (PyTorch AssertionError)
    for (d, lo, hi) in [(QDType::QUInt8, 10, 5), (QDType::QInt8, 1, 127)] {
        assert!(matches!(
            QSpec::from_pytorch(d, QScheme::PerTensorAffine, false, Some(lo), Some(hi), None),
            Err(QuantError::InvalidQuantRange { .. })
        ));
    }
    // bad eps
    let mut bad_eps = q8;
    bad_eps.eps = 0.0;
    assert!(matches!(
        MinMaxObserver::new(bad_eps),
        Err(QuantError::InvalidScale { .. })
    ));
    // bad parameters
    for c in [0.0, -0.5, 1.5, f32::NAN] {
        assert!(matches!(
            MovingAverageMinMaxObserver::new(q8, c),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
    assert!(matches!(
        HistogramObserver::with_bins(q8, 0),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert!(matches!(
        StreamingHistogram::new(1000),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert!(matches!(
        FixedQParamsObserver::new(0.1, 300, QDType::QUInt8.full_range()),
        Err(QuantError::ZeroPointOutOfRange { .. })
    ));
    assert!(matches!(
        FixedQParamsObserver::new(0.0, 0, QDType::QUInt8.full_range()),
        Err(QuantError::InvalidScale { .. })
    ));
    // ch_axis out of range (PyTorch IndexError), channel count change
    let mut o = PerChannelMinMaxObserver::new(pc, 3).unwrap();
    assert!(matches!(
        o.observe(ArrayD::zeros(IxDyn(&[4, 3])).view()),
        Err(QuantError::InvalidAxis { .. })
    ));
    let mut o = PerChannelMinMaxObserver::new(pc, -3).unwrap();
    assert!(matches!(
        o.observe(ArrayD::zeros(IxDyn(&[4, 3])).view()),
        Err(QuantError::InvalidAxis { .. })
    ));
    let mut o = PerChannelMinMaxObserver::new(pc, 1).unwrap();
    o.observe(ArrayD::zeros(IxDyn(&[4, 3])).view()).unwrap();
    assert!(matches!(
        o.observe(ArrayD::zeros(IxDyn(&[4, 5])).view()),
        Err(QuantError::LengthMismatch { .. })
    ));
    // NaN / inf in data: typed, observer unchanged
    let observers: Vec<Box<dyn Observer>> = vec![
        Box::new(MinMaxObserver::new(q8).unwrap()),
        Box::new(MovingAverageMinMaxObserver::new(q8, 0.1).unwrap()),
        Box::new(PerChannelMinMaxObserver::new(pc, 0).unwrap()),
        Box::new(MovingAveragePerChannelMinMaxObserver::new(pc, -1, 0.1).unwrap()),
        Box::new(HistogramObserver::new(q8).unwrap()),
        Box::new(DynamicObserver::new(q8).unwrap()),
        Box::new(PercentileObserver::new(q8, 99.0).unwrap()),
        Box::new(EntropyObserver::new(q8).unwrap()),
        Box::new(MseObserver::new(q8).unwrap()),
    ];
    for mut o in observers {
        let good = array![[1.0f32, -2.0], [0.5, 3.0]].into_dyn();
        o.observe(good.view()).unwrap();
        let before = o.qparams().unwrap();
        let nan = array![[1.0f32, f32::NAN], [0.5, 3.0]].into_dyn();
        assert!(
            matches!(
                o.observe(nan.view()),
                Err(QuantError::NanInput { index: 1, .. })
            ),
            "{}",
            o.name()
        );
        let inf = array![[1.0f32, 2.0], [f32::NEG_INFINITY, 3.0]].into_dyn();
        assert!(
            matches!(o.observe(inf.view()), Err(QuantError::NonFinite { .. })),
            "{}",
            o.name()
        );
        assert_eq!(o.qparams().unwrap(), before, "{}", o.name());
        // nothing observed → Empty
        o.reset();
        assert!(
            matches!(o.qparams(), Err(QuantError::Empty { .. })),
            "{}",
            o.name()
        );
    }
    // empty batches: no-op, except the dynamic observer
    let mut m = MinMaxObserver::new(q8).unwrap();
    m.observe(ArrayD::zeros(IxDyn(&[0, 3])).view()).unwrap();
    assert_eq!(m.min_max(), None);
    let mut d = DynamicObserver::new(q8).unwrap();
    assert!(matches!(
        d.observe(ArrayD::zeros(IxDyn(&[0])).view()),
        Err(QuantError::EmptyInput { .. })
    ));
    // merge across kinds or configurations
    let mut a = MinMaxObserver::new(q8).unwrap();
    let h = HistogramObserver::new(q8).unwrap();
    assert!(matches!(a.merge(&h), Err(QuantError::Incompatible { .. })));
    let b = MinMaxObserver::new(spec(QScheme::PerTensorAffine, QDType::QInt8)).unwrap();
    assert!(matches!(a.merge(&b), Err(QuantError::Incompatible { .. })));
    let mut p = PerChannelMinMaxObserver::new(pc, 0).unwrap();
    let p1 = PerChannelMinMaxObserver::new(pc, 1).unwrap();
    assert!(matches!(p.merge(&p1), Err(QuantError::Incompatible { .. })));
    let mut e = EntropyObserver::new(q8).unwrap();
    assert!(matches!(e.merge(&a), Err(QuantError::Incompatible { .. })));
}

// ------------------------------------------------------------------------------- merge

fn data(n: usize, seed: u64, spread: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(99);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((s >> 40) as f32) / ((1u64 << 24) as f32) - 0.4) * spread
        })
        .collect()
}

/// Two shards (one batch each) merged vs one observer over the concatenation.
fn merged_and_whole(
    make: &dyn Fn() -> Box<dyn Observer>,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    axis: usize,
) -> (Box<dyn Observer>, Box<dyn Observer>) {
    let mut x = make();
    x.observe(a.view()).unwrap();
    let mut y = make();
    y.observe(b.view()).unwrap();
    x.merge(y.as_ref()).unwrap();
    let mut whole = make();
    let cat = concatenate(Axis(axis), &[a.view(), b.view()]).unwrap();
    whole.observe(cat.view()).unwrap();
    (x, whole)
}

#[test]
fn merge_equals_one_observer_over_concatenated_data() {
    let a = ArrayD::from_shape_vec(IxDyn(&[40, 6]), data(240, 1, 4.0)).unwrap();
    let b = ArrayD::from_shape_vec(IxDyn(&[25, 6]), data(150, 2, 9.0)).unwrap();
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let sym = spec(QScheme::PerTensorSymmetric, QDType::QInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let exact: Vec<(&str, Factory)> = vec![
        (
            "minmax",
            Box::new(move || Box::new(MinMaxObserver::new(q8).unwrap())),
        ),
        (
            "ema",
            Box::new(move || Box::new(MovingAverageMinMaxObserver::new(q8, 0.1).unwrap())),
        ),
        (
            "pc",
            Box::new(move || Box::new(PerChannelMinMaxObserver::new(pc, -1).unwrap())),
        ),
        (
            "pc-ema",
            Box::new(move || {
                Box::new(MovingAveragePerChannelMinMaxObserver::new(pc, 1, 0.3).unwrap())
            }),
        ),
        (
            "dynamic",
            Box::new(move || Box::new(DynamicObserver::new(q8).unwrap())),
        ),
        (
            "fixed",
            Box::new(move || {
                Box::new(FixedQParamsObserver::new(0.5, 3, QDType::QUInt8.full_range()).unwrap())
            }),
        ),
        (
            "percentile",
            Box::new(move || Box::new(PercentileObserver::new(sym, 99.0).unwrap())),
        ),
        (
            "entropy",
            Box::new(move || Box::new(EntropyObserver::new(sym).unwrap())),
        ),
        (
            "mse",
            Box::new(move || Box::new(MseObserver::new(q8).unwrap())),
        ),
    ];
    for (name, make) in &exact {
        let (m, w) = merged_and_whole(make.as_ref(), &a, &b, 0);
        assert_eq!(m.qparams().unwrap(), w.qparams().unwrap(), "{name}");
    }
    // Min/max state itself is exact too.
    let (m, w) = merged_and_whole(exact[0].1.as_ref(), &a, &b, 0);
    let mm = |o: &dyn Observer| {
        o.as_any()
            .downcast_ref::<MinMaxObserver>()
            .unwrap()
            .min_max()
    };
    assert_eq!(mm(m.as_ref()), mm(w.as_ref()));
    let (m, w) = merged_and_whole(exact[2].1.as_ref(), &a, &b, 0);
    let pcv = |o: &dyn Observer| {
        let o = o
            .as_any()
            .downcast_ref::<PerChannelMinMaxObserver>()
            .unwrap();
        (o.min_vals().to_vec(), o.max_vals().to_vec())
    };
    assert_eq!(pcv(m.as_ref()), pcv(w.as_ref()));

    // Histogram: same range → exact; growing ranges → PyTorch's combine (approximate):
    // identical min/max and mass, parameters within a few percent.
    let hist = move || Box::new(HistogramObserver::new(q8).unwrap()) as Box<dyn Observer>;
    let (m, w) = merged_and_whole(&hist, &a, &a, 0);
    let h = |o: &dyn Observer| {
        o.as_any()
            .downcast_ref::<HistogramObserver>()
            .unwrap()
            .clone()
    };
    assert_eq!(h(m.as_ref()).histogram(), h(w.as_ref()).histogram());
    assert_eq!(m.qparams().unwrap(), w.qparams().unwrap());
    let (m, w) = merged_and_whole(&hist, &a, &b, 0);
    let (hm, hw) = (h(m.as_ref()), h(w.as_ref()));
    assert_eq!(hm.min_max(), hw.min_max());
    let mass = |o: &HistogramObserver| o.histogram().iter().map(|&v| v as f64).sum::<f64>();
    assert!((mass(&hm) - 390.0).abs() < 1e-3 && (mass(&hw) - 390.0).abs() < 1e-3);
    let (sm, zm) = per_tensor(m.as_ref());
    let (sw, zw) = per_tensor(w.as_ref());
    assert!((sm - sw).abs() <= 0.05 * sw, "{sm} vs {sw}");
    assert!((zm - zw).abs() <= 8, "{zm} vs {zw}");
    // Merging into an empty observer copies the other.
    let mut e = HistogramObserver::new(q8).unwrap();
    e.merge(&hw).unwrap();
    assert_eq!(e, hw);
}

// ------------------------------------------------------------------------ object safety

fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}

#[test]
fn observers_are_object_safe_send_and_sync() {
    assert_send_sync::<MinMaxObserver>();
    assert_send_sync::<MovingAverageMinMaxObserver>();
    assert_send_sync::<PerChannelMinMaxObserver>();
    assert_send_sync::<MovingAveragePerChannelMinMaxObserver>();
    assert_send_sync::<HistogramObserver>();
    assert_send_sync::<FixedQParamsObserver>();
    assert_send_sync::<DynamicObserver>();
    assert_send_sync::<PercentileObserver>();
    assert_send_sync::<EntropyObserver>();
    assert_send_sync::<MseObserver>();
    assert_send_sync::<StreamingHistogram>();
    fn is_send<T: Send>(_: &T) {}
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut engine: Vec<Box<dyn Observer>> = vec![
        Box::new(MinMaxObserver::new(q8).unwrap()),
        Box::new(HistogramObserver::new(q8).unwrap()),
    ];
    is_send(&engine);
    let x = v1(&[0.5, -1.0, 2.0]);
    for o in &mut engine {
        o.observe(x.view()).unwrap();
    }
    let copy = engine.clone();
    let handle = std::thread::spawn(move || copy.iter().filter(|o| o.qparams().is_ok()).count());
    assert_eq!(handle.join().unwrap(), 2);
    assert_eq!(engine[0].name(), "MinMaxObserver");
    assert_eq!(engine[1].spec(), &q8);
    // The comparison report is displayable and names a winner.
    let r = compare_calibrators(v1(&data(4096, 5, 2.0)).view(), q8).unwrap();
    assert!(r.to_string().contains(&r.best().name));
}

// ---------------------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn minmax_batches_equal_concatenation(
        a in prop::collection::vec(-1e6f32..1e6, 1..64),
        b in prop::collection::vec(-1e6f32..1e6, 1..64),
    ) {
        let s = spec(QScheme::PerTensorAffine, QDType::QInt8);
        let mut x = MinMaxObserver::new(s).unwrap();
        x.observe(v1(&a).view()).unwrap();
        x.observe(v1(&b).view()).unwrap();
        let mut all = a.clone();
        all.extend(&b);
        let mut y = MinMaxObserver::new(s).unwrap();
        y.observe(v1(&all).view()).unwrap();
        prop_assert_eq!(x.min_max(), y.min_max());
        prop_assert_eq!(x.qparams().unwrap(), y.qparams().unwrap());
    }

    #[test]
    fn streaming_histogram_is_order_independent(
        a in prop::collection::vec(-1e3f32..1e3, 1..64),
        b in prop::collection::vec(-1e5f32..1e5, 1..64),
    ) {
        let mut x = StreamingHistogram::new(256).unwrap();
        x.observe(v1(&a).view()).unwrap();
        x.observe(v1(&b).view()).unwrap();
        let mut y = StreamingHistogram::new(256).unwrap();
        y.observe(v1(&b).view()).unwrap();
        y.observe(v1(&a).view()).unwrap();
        prop_assert_eq!(x.count(), (a.len() + b.len()) as u64);
        prop_assert_eq!(x, y);
    }

    #[test]
    fn histogram_mass_is_conserved(
        batches in prop::collection::vec(prop::collection::vec(-50f32..50.0, 1..40), 1..6),
    ) {
        let mut o = HistogramObserver::with_bins(spec(QScheme::PerTensorAffine, QDType::QUInt8), 64).unwrap();
        let mut n = 0usize;
        for b in &batches {
            o.observe(v1(b).view()).unwrap();
            n += b.len();
        }
        let mass: f64 = o.histogram().iter().map(|&v| v as f64).sum();
        prop_assert!((mass - n as f64).abs() < 1e-3 * n as f64);
        prop_assert!(o.qparams().is_ok());
    }
}
