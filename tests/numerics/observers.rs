//! Observers: PyTorch's examples, every refusal, the robustness regressions, merge (and, with
//! `serde`, serialized shards) against one observer over all the data, object safety, and
//! properties over hostile input.
//!
//! Where an expected value comes from: `pytorch.md §N` is the reference notes checked against
//! torch 2.15 (`test_*` names are PyTorch's own tests ported there), `observer-N` a golden case
//! of `tests/golden/observers.jsonl`; otherwise a hand computation is shown beside the value.
#![allow(clippy::unwrap_used)]

use half::{bf16, f16};
use ndarray::{Array1, ArrayD, Axis, IxDyn, array, concatenate};
use proptest::prelude::*;
use qnumeric::observers::compare_calibrators;
use qnumeric::{
    AnyQParams, DynamicObserver, EntropyObserver, FixedQParamsObserver, HistogramObserver,
    MinMaxObserver, MseObserver, Observer, PerChannelMinMaxObserver, PercentileObserver, QDType,
    QScheme, QSpec, QuantError, StreamingHistogram, UpdateRule, ZeroPoints,
};

/// A boxed observer.
type Boxed = Box<dyn Observer>;

/// Builds a fresh boxed observer.
type Factory = Box<dyn Fn() -> Boxed>;

fn spec(s: QScheme, d: QDType) -> QSpec {
    QSpec::new(s, d)
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

/// Deterministic pseudo-random data in `[-0.4, 0.6)·spread`.
fn data(n: usize, seed: u64, spread: f32) -> Vec<f32> {
    let mut r =
        qnumeric::rng::Lcg::new(seed.wrapping_mul(qnumeric::rng::Lcg::MUL).wrapping_add(99));
    (0..n).map(|_| (r.unit_f32() - 0.4) * spread).collect()
}

/// A standard-layout 2-D array twice as wide as `x` with `x` in its left half: slicing the
/// left half gives `x`'s values in a view that is not contiguous.
fn widened<A: Clone + num_traits::Zero>(x: &ArrayD<A>) -> ArrayD<A> {
    let (r, c) = (x.shape()[0], x.shape()[1]);
    let mut wide = ArrayD::zeros(IxDyn(&[r, 2 * c]));
    wide.slice_mut(ndarray::s![.., ..c]).assign(x);
    wide
}

/// Runs `check` on every named item and fails once with every failure listed (so that one
/// failing observer does not hide the others).
fn for_all<T>(items: Vec<(&str, T)>, mut check: impl FnMut(&str, T) -> Result<(), String>) {
    let failures: Vec<String> = items
        .into_iter()
        .filter_map(|(name, t)| check(name, t).err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------- PyTorch's test_per_tensor_observers (pytorch.md §9)

/// MinMax on x=[1,2,2,3,4,5,6], y=[4,5,5,6,7,8] and MovingAverage (c = 0.5) on
/// x=[0,2,2,3,4,5,6], y=[2,5,5,6,7,10] both end at min 1, max 8.
fn per_tensor_pytorch_case(s: QScheme, d: QDType, reduce: bool, scale: f32, zp: i32) {
    let mut sp = spec(s, d);
    if reduce {
        sp = sp.with_reduce_range().unwrap();
    }
    let mut a = MinMaxObserver::new(sp).unwrap();
    a.observe(&v1(&[1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
        .unwrap();
    a.observe(&v1(&[4.0, 5.0, 5.0, 6.0, 7.0, 8.0])).unwrap();
    let mut b = MinMaxObserver::moving_average(sp, 0.5).unwrap();
    b.observe(&v1(&[0.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
        .unwrap();
    b.observe(&v1(&[2.0, 5.0, 5.0, 6.0, 7.0, 10.0])).unwrap();
    for o in [&a, &b] {
        assert_eq!(o.min_max(), Some((1.0, 8.0)), "{}", o.name());
        let (sc, z) = per_tensor(o);
        assert!((sc - scale).abs() < 1e-6, "{}: {sc} vs {scale}", o.name());
        assert_eq!(z, zp, "{}", o.name());
    }
}

#[test]
fn pytorch_per_tensor_affine_quint8() {
    // [0, 8] over 0..=255: scale 8/255 = 0.0313725, zp 0
    per_tensor_pytorch_case(
        QScheme::PerTensorAffine,
        QDType::QUInt8,
        false,
        0.031_372_55,
        0,
    );
}

#[test]
fn pytorch_per_tensor_affine_qint8() {
    // scale 8/255, zp = -128 - rne(0 / scale) = -128
    per_tensor_pytorch_case(
        QScheme::PerTensorAffine,
        QDType::QInt8,
        false,
        0.031_372_55,
        -128,
    );
}

#[test]
fn pytorch_per_tensor_symmetric_quint8() {
    // amax 8 / 127.5 = 0.0627451, zp 128
    per_tensor_pytorch_case(
        QScheme::PerTensorSymmetric,
        QDType::QUInt8,
        false,
        0.062_745_1,
        128,
    );
}

#[test]
fn pytorch_per_tensor_symmetric_qint8() {
    per_tensor_pytorch_case(
        QScheme::PerTensorSymmetric,
        QDType::QInt8,
        false,
        0.062_745_1,
        0,
    );
}

#[test]
fn pytorch_per_tensor_affine_quint8_reduce_range() {
    // 0..=127: scale 8/127 = (8/255)·255/127, zp 0
    per_tensor_pytorch_case(
        QScheme::PerTensorAffine,
        QDType::QUInt8,
        true,
        0.031_372_55 * 255.0 / 127.0,
        0,
    );
}

#[test]
fn pytorch_per_tensor_affine_qint8_reduce_range() {
    // -64..=63: scale 8/127, zp -64
    per_tensor_pytorch_case(
        QScheme::PerTensorAffine,
        QDType::QInt8,
        true,
        0.031_372_55 * 255.0 / 127.0,
        -64,
    );
}

#[test]
fn pytorch_per_tensor_symmetric_qint8_reduce_range() {
    // -64..=63: scale 8 / 63.5
    per_tensor_pytorch_case(
        QScheme::PerTensorSymmetric,
        QDType::QInt8,
        true,
        0.062_745_1 * 255.0 / 127.0,
        0,
    );
}

// --------------------------------------------------- extra verified vectors (pytorch.md §10)

#[test]
fn minmax_all_zero_data_gives_eps_scale() {
    // pytorch.md §10: [0,0,0,0] → scale 1.1920928955078125e-07, zp 0
    let mut o = MinMaxObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    o.observe(&v1(&[0.0; 4])).unwrap();
    assert_eq!(per_tensor(&o), (f32::EPSILON, 0));
}

#[test]
fn minmax_constant_positive_data() {
    // pytorch.md §10: [3,3,3,3] → (0.0117647061124444, 0)
    let mut o = MinMaxObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    o.observe(&v1(&[3.0; 4])).unwrap();
    assert_eq!(per_tensor(&o), (0.011_764_706, 0));
}

#[test]
fn minmax_symmetric_qint8_negative_constant() {
    // pytorch.md §10: [-3]*4 → (0.0235294122248888, 0)
    let mut s = MinMaxObserver::new(spec(QScheme::PerTensorSymmetric, QDType::QInt8)).unwrap();
    s.observe(&v1(&[-3.0; 4])).unwrap();
    assert_eq!(per_tensor(&s), (0.023_529_412, 0));
}

#[test]
fn minmax_symmetric_quint8_default_range() {
    // pytorch.md §10: [-1, 2] → (0.01568627543747425, 128)
    let mut s = MinMaxObserver::new(spec(QScheme::PerTensorSymmetric, QDType::QUInt8)).unwrap();
    s.observe(&v1(&[-1.0, 2.0])).unwrap();
    assert_eq!(per_tensor(&s), (0.015_686_275, 128));
}

#[test]
fn minmax_symmetric_quint8_custom_range() {
    // pytorch.md §10: [-1, 2] with custom 0..127 → (0.031496062874794006, 63)
    let custom = spec(QScheme::PerTensorSymmetric, QDType::QUInt8)
        .with_quant_range(0, 127)
        .unwrap();
    let mut s = MinMaxObserver::new(custom).unwrap();
    s.observe(&v1(&[-1.0, 2.0])).unwrap();
    assert_eq!(per_tensor(&s), (0.031_496_063, 63));
}

#[test]
fn default_observer_range_0_to_127() {
    // pytorch.md §9 (test_workflow_ops serialisation): default_observer (0..127) on
    // [-5, -3.5, -2, 0, 3, 5, 7] → scale 0.094488, zp 53
    let d = spec(QScheme::PerTensorAffine, QDType::QUInt8)
        .with_quant_range(0, 127)
        .unwrap();
    let mut o = MinMaxObserver::new(d).unwrap();
    o.observe(&v1(&[-5.0, -3.5, -2.0, 0.0, 3.0, 5.0, 7.0]))
        .unwrap();
    let (sc, zp) = per_tensor(&o);
    assert!((sc - 0.094_488).abs() < 1e-6, "{sc}");
    assert_eq!(zp, 53);
}

#[test]
fn float_qparams_per_channel() {
    // pytorch.md §10: [[1,1],[2,3]] → scales [1.0, 0.003921568859368563], zps [-1.0, -509.99997]
    let f = spec(QScheme::PerChannelAffineFloatQParams, QDType::QUInt8);
    let mut o = PerChannelMinMaxObserver::new(f, 0).unwrap();
    o.observe(&array![[1.0f32, 1.0], [2.0, 3.0]]).unwrap();
    let (sc, zp) = per_channel(&o);
    assert_eq!(sc, vec![1.0, 0.003_921_569]);
    assert_eq!(zp[0], -1.0);
    assert!((zp[1] + 509.999_97).abs() < 1e-3, "{}", zp[1]);
}

// ---------------------------------------------- PyTorch's per-channel vectors (pytorch.md §3.3)

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

// pytorch.md §3.3, per axis 0..3: min/max, quint8 affine scales and zps, qint8 affine zps,
// qint8 symmetric scales.
const X4_MINS: [[f32; 2]; 4] = [[1.0, -4.0], [-4.0, 3.0], [-4.0, 2.0], [-4.0, -3.0]];
const X4_MAXS: [[f32; 2]; 4] = [[6.0, 8.0], [5.0, 8.0], [6.0, 8.0], [7.0, 8.0]];
const X4_SCALES: [[f32; 2]; 4] = [
    [0.023_529_41, 0.047_058_82],
    [0.035_294_12, 0.031_372_55],
    [0.039_215_69, 0.031_372_55],
    [0.043_137_26, 0.043_137_26],
];
const X4_ZPS: [[f32; 2]; 4] = [[0.0, 85.0], [113.0, 0.0], [102.0, 0.0], [93.0, 70.0]];
const X4_ZPS8: [[f32; 2]; 4] = [
    [-128.0, -43.0],
    [-15.0, -128.0],
    [-26.0, -128.0],
    [-35.0, -58.0],
];
const X4_SYM: [[f32; 2]; 4] = [
    [0.047_058_82, 0.062_745_09],
    [0.039_215_69, 0.062_745_1],
    [0.047_058_82, 0.062_745_1],
    [0.054_901_96, 0.062_745_1],
];

/// Every check of one axis, given as `axis` and as `axis - 4` (negative axes count from the
/// end); failures are collected.
fn per_channel_axis(axis: usize) {
    let x = x4();
    let mut failures = Vec::new();
    for ch_axis in [axis as isize, axis as isize - 4] {
        let mut o =
            PerChannelMinMaxObserver::new(spec(QScheme::PerChannelAffine, QDType::QUInt8), ch_axis)
                .unwrap();
        o.observe(&x).unwrap();
        if (o.min_vals(), o.max_vals()) != (&X4_MINS[axis][..], &X4_MAXS[axis][..]) {
            failures.push(format!(
                "{ch_axis}: min/max {:?} {:?}",
                o.min_vals(),
                o.max_vals()
            ));
        }
        let (sc, zp) = per_channel(&o);
        if !sc.iter().zip(&X4_SCALES[axis]).all(|(a, b)| close(*a, *b)) || zp != X4_ZPS[axis] {
            failures.push(format!("{ch_axis}: quint8 affine {sc:?} {zp:?}"));
        }
        let mut o8 =
            PerChannelMinMaxObserver::new(spec(QScheme::PerChannelAffine, QDType::QInt8), ch_axis)
                .unwrap();
        o8.observe(&x).unwrap();
        if per_channel(&o8).1 != X4_ZPS8[axis] {
            failures.push(format!("{ch_axis}: qint8 zps {:?}", per_channel(&o8).1));
        }
        let mut s = PerChannelMinMaxObserver::new(
            spec(QScheme::PerChannelSymmetric, QDType::QInt8),
            ch_axis,
        )
        .unwrap();
        s.observe(&x).unwrap();
        let (sc, zp) = per_channel(&s);
        if !sc.iter().zip(&X4_SYM[axis]).all(|(a, b)| close(*a, *b)) || zp != [0.0, 0.0] {
            failures.push(format!("{ch_axis}: symmetric {sc:?} {zp:?}"));
        }
        // pytorch.md §3.4: c = 0.5 on 0.5·x then 1.5·x gives x's min/max.
        let mut m = PerChannelMinMaxObserver::moving_average(
            spec(QScheme::PerChannelAffine, QDType::QUInt8),
            ch_axis,
            0.5,
        )
        .unwrap();
        m.observe(&(&x * 0.5)).unwrap();
        m.observe(&(&x * 1.5)).unwrap();
        if (m.min_vals(), m.max_vals()) != (&X4_MINS[axis][..], &X4_MAXS[axis][..]) {
            failures.push(format!("{ch_axis}: moving average {:?}", m.min_vals()));
        }
    }
    assert!(failures.is_empty(), "axis {axis}: {failures:#?}");
}

#[test]
fn pytorch_per_channel_axis_0() {
    per_channel_axis(0);
}

#[test]
fn pytorch_per_channel_axis_1() {
    per_channel_axis(1);
}

#[test]
fn pytorch_per_channel_axis_2() {
    per_channel_axis(2);
}

#[test]
fn pytorch_per_channel_axis_3() {
    per_channel_axis(3);
}

#[test]
fn per_channel_weight_observer_serialisation_example() {
    // pytorch.md §9 (TestFakeQuantize serialisation): scale [0.054902, 0.078431], zp [0, 0]
    let w = array![
        [-5.0f32, -3.5, -2.0, 0.0, 3.0, 5.0, 7.0],
        [1.0, 3.0, 2.0, 5.0, 6.5, 8.0, 10.0]
    ];
    let mut o = PerChannelMinMaxObserver::new(spec(QScheme::PerChannelSymmetric, QDType::QInt8), 0)
        .unwrap();
    o.observe(&w).unwrap();
    let (sc, zp) = per_channel(&o);
    assert!((sc[0] - 0.054_902).abs() < 1e-6 && (sc[1] - 0.078_431).abs() < 1e-6);
    assert_eq!(zp, vec![0.0, 0.0]);
}

#[test]
fn name_reports_pytorchs_class_for_each_rule() {
    let pt = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let names = [
        MinMaxObserver::new(pt).unwrap().name(),
        MinMaxObserver::moving_average(pt, 0.1).unwrap().name(),
        PerChannelMinMaxObserver::new(pc, 0).unwrap().name(),
        PerChannelMinMaxObserver::moving_average(pc, 0, 0.1)
            .unwrap()
            .name(),
    ];
    assert_eq!(
        names,
        [
            "MinMaxObserver",
            "MovingAverageMinMaxObserver",
            "PerChannelMinMaxObserver",
            "MovingAveragePerChannelMinMaxObserver"
        ]
    );
}

#[test]
fn moving_average_step_is_pytorchs_f32_form() {
    // pytorch.md §3.2: min 0.1 then batch min 0.7 with c = 0.1 → 0.106 exactly in f32
    // (0.1 + 0.1·(0.7 − 0.1)); max 1.0 then 3.3 → 1.023.
    let mut o = MinMaxObserver::moving_average(spec(QScheme::PerTensorAffine, QDType::QUInt8), 0.1)
        .unwrap();
    o.observe(&v1(&[0.1, 1.0])).unwrap();
    o.observe(&v1(&[0.7, 3.3])).unwrap();
    let want = (
        0.1f32 + 0.1f32 * (0.7f32 - 0.1f32),
        1.0f32 + 0.1f32 * (3.3f32 - 1.0f32),
    );
    assert_eq!(o.min_max(), Some(want));
    assert_eq!(
        o.rule(),
        UpdateRule::MovingAverage {
            averaging_constant: 0.1
        }
    );
}

// ----------------------------------------------------------------- histogram (pytorch.md §9)

#[test]
fn histogram_observer_bins_3_affine() {
    // test_histogram_observer: bins=3, [2,3,4,5] then [5,6,7,8] → [2,3,3], scale 0.0235294
    let mut o =
        HistogramObserver::with_bins(spec(QScheme::PerTensorAffine, QDType::QUInt8), 3).unwrap();
    o.observe(&v1(&[2.0, 3.0, 4.0, 5.0])).unwrap();
    o.observe(&v1(&[5.0, 6.0, 7.0, 8.0])).unwrap();
    assert_eq!(o.histogram(), &[2.0, 3.0, 3.0]);
    let (sc, _) = per_tensor(&o);
    assert!((sc - 0.023_529_4).abs() < 1e-6, "{sc}");
}

#[test]
fn histogram_observer_bins_3_symmetric() {
    // test_histogram_observer, symmetric: scale 0.0470588
    let mut o =
        HistogramObserver::with_bins(spec(QScheme::PerTensorSymmetric, QDType::QUInt8), 3).unwrap();
    o.observe(&v1(&[2.0, 3.0, 4.0, 5.0])).unwrap();
    o.observe(&v1(&[5.0, 6.0, 7.0, 8.0])).unwrap();
    let (sc, _) = per_tensor(&o);
    assert!((sc - 0.047_058_8).abs() < 1e-6, "{sc}");
}

#[test]
fn histogram_observer_one_sided_zero_point() {
    // test_histogram_observer_one_sided: zp 0 when min is 0
    let mut o = HistogramObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    o.observe(&v1(&[0.0, 0.5, 1.0, 2.0, 3.0])).unwrap();
    assert_eq!(per_tensor(&o).1, 0);
}

#[test]
fn histogram_observer_extreme_inputs_do_not_crash() {
    // test_histogram_observer extreme_inputs: [0,0,4.58e-41,4.58e-41] twice
    let mut o = HistogramObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    let tiny = 4.58e-41f32;
    o.observe(&v1(&[0.0, 0.0, tiny, tiny])).unwrap();
    o.observe(&v1(&[0.0, 0.0, tiny, tiny])).unwrap();
    o.qparams().unwrap();
}

#[test]
fn histogram_observer_counts_every_value() {
    // test_histogram_observer correct_numel: the mass equals the number of values (6)
    let mut o = HistogramObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    o.observe(&v1(&[1.0, 3.0, -2.0, 7.5])).unwrap();
    o.observe(&v1(&[0.5, 0.25])).unwrap();
    assert_eq!(o.histogram().iter().sum::<f32>(), 6.0);
}

#[test]
fn histogram_observer_steady_state_matches_for_strided_and_other_types() {
    // The one-pass steady state runs on strided batches and f64/f16 batches too; the counts
    // must equal those of the contiguous f32 batch (integer counts, order-independent).
    let sp = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let first = v1(&[-4.0, 4.0]);
    let x = ArrayD::from_shape_vec(IxDyn(&[40, 25]), data(1000, 3, 6.0)).unwrap();
    let mut reference = HistogramObserver::with_bins(sp, 64).unwrap();
    reference.observe(&first).unwrap();
    reference.observe(&x).unwrap();
    // The same values as a view with a row stride of 50: not contiguous.
    let wide = widened(&x);
    let view = wide.slice(ndarray::s![.., ..25]);
    assert!(view.as_slice_memory_order().is_none());
    let mut strided = HistogramObserver::with_bins(sp, 64).unwrap();
    strided.observe(&first).unwrap();
    strided.observe(view).unwrap();
    assert_eq!(strided, reference);
    // f16 values of the data differ from the f32 ones, so compare against the f16 values
    // given as f32.
    let xh = x.mapv(f16::from_f32);
    let mut want = HistogramObserver::with_bins(sp, 64).unwrap();
    want.observe(&first).unwrap();
    want.observe(&xh.mapv(f16::to_f32)).unwrap();
    let mut got = HistogramObserver::with_bins(sp, 64).unwrap();
    got.observe(&first).unwrap();
    got.observe(&xh).unwrap();
    assert_eq!(got, want);
}

// ------------------------------------------------------------------------ fixed and dynamic

#[test]
fn fixed_qparams_observer_returns_its_parameters() {
    // pytorch.md §3.6: default_fixed_qparams_range_0to1_observer = (1/256, 0, quint8)
    let mut o = FixedQParamsObserver::new(1.0 / 256.0, 0, QDType::QUInt8.full_range()).unwrap();
    o.observe(&v1(&[-100.0, 100.0])).unwrap();
    assert_eq!(per_tensor(&o), (0.003_906_25, 0));
}

#[test]
fn dynamic_observer_uses_the_last_batch() {
    // last batch [0, 3]: scale 3/255 = 0.011764706, zp 0
    let mut d = DynamicObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    d.observe(&v1(&[-1.0, 1.0])).unwrap();
    d.observe(&v1(&[0.0, 3.0])).unwrap();
    assert_eq!(per_tensor(&d), (0.011_764_706, 0));
}

// --------------------------------------------------------------- other float element types

#[test]
fn observe_takes_f64_f16_bf16_views_and_references() {
    let sp = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut o = MinMaxObserver::new(sp).unwrap();
    let x64 = array![[0.5f64, -1.25], [3.0, 2.0]];
    o.observe(x64.view()).unwrap();
    o.observe(&array![f16::from_f32(-2.0), f16::from_f32(1.0)])
        .unwrap();
    o.observe(&array![bf16::from_f32(4.0)]).unwrap();
    assert_eq!(o.min_max(), Some((-2.0, 4.0)));
    // An `&ArrayRef` (what the kernels take) converts too.
    let x = array![5.0f32];
    let r: &ndarray::ArrayRef<f32, _> = &x;
    o.observe(r).unwrap();
    assert_eq!(o.min_max(), Some((-2.0, 5.0)));
    // The same through `dyn Observer`.
    let mut boxed: Box<dyn Observer> = Box::new(MinMaxObserver::new(sp).unwrap());
    boxed.observe(&x64).unwrap();
    let any = boxed.as_any().downcast_ref::<MinMaxObserver>().unwrap();
    assert_eq!(any.min_max(), Some((-1.25, 3.0)));
}

#[test]
fn other_element_types_give_the_f32_results_of_their_values() {
    // Each observer fed an f64 batch equals the observer fed the same values rounded to f32
    // (PyTorch casts observer inputs to f32: pytorch.md §3.1).
    let x64: ArrayD<f64> = ArrayD::from_shape_vec(
        IxDyn(&[30, 7]),
        data(210, 9, 5.0)
            .into_iter()
            .map(|v| v as f64 * 1.1)
            .collect(),
    )
    .unwrap();
    let x32 = x64.mapv(|v| v as f32);
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let makes: Vec<(&str, Factory)> = vec![
        (
            "minmax",
            Box::new(move || Box::new(MinMaxObserver::new(q8).unwrap())),
        ),
        (
            "per-channel last axis",
            Box::new(move || Box::new(PerChannelMinMaxObserver::new(pc, -1).unwrap())),
        ),
        (
            "histogram",
            Box::new(move || Box::new(HistogramObserver::new(q8).unwrap())),
        ),
        (
            "percentile",
            Box::new(move || Box::new(PercentileObserver::new(q8, 99.0).unwrap())),
        ),
        (
            "mse",
            Box::new(move || Box::new(MseObserver::new(q8).unwrap())),
        ),
    ];
    for_all(makes, |_, make| {
        let mut a = make();
        let mut b = make();
        for k in 0..3 {
            let scale = 1.0 + k as f64;
            a.observe(&x64.mapv(|v| v * scale))
                .map_err(|e| e.to_string())?;
            b.observe(&x32.mapv(|v| v * scale as f32))
                .map_err(|e| e.to_string())?;
        }
        // Strided f64 too.
        let (w64, w32) = (widened(&x64), widened(&x32));
        a.observe(w64.slice(ndarray::s![.., ..7]))
            .map_err(|e| e.to_string())?;
        b.observe(w32.slice(ndarray::s![.., ..7]))
            .map_err(|e| e.to_string())?;
        let (qa, qb) = (a.qparams(), b.qparams());
        (qa == qb).then_some(()).ok_or(format!("{qa:?} vs {qb:?}"))
    });
}

#[test]
fn f64_values_beyond_f32_are_range_overflow() {
    let mut o = MinMaxObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    o.observe(&array![1.0f64]).unwrap();
    let before = o.clone();
    let r = o.observe(&array![0.5f64, 1e300]);
    assert!(
        matches!(r, Err(QuantError::RangeOverflow { max, .. }) if max == 1e300),
        "{r:?}"
    );
    assert_eq!(o, before);
    // NaN in an f64 batch is still NanInput with its index.
    assert!(matches!(
        o.observe(&array![0.5f64, 2.0, f64::NAN]),
        Err(QuantError::NanInput { index: 2, .. })
    ));
}

// --------------------------------------------------------------------------------- refusals

#[test]
fn symmetric_reduce_range_quint8_is_unsupported_by_minmax_observers() {
    // pytorch.md §1.2: MinMax/PerChannel observers raise NotImplementedError (golden cases
    // observer-30..39, observer-212..235), whatever the range.
    let sym = spec(QScheme::PerTensorSymmetric, QDType::QUInt8)
        .with_reduce_range()
        .unwrap();
    let sym_custom = sym.with_quant_range(0, 200).unwrap();
    let pc = spec(QScheme::PerChannelSymmetric, QDType::QUInt8)
        .with_reduce_range()
        .unwrap();
    let results = vec![
        ("minmax", MinMaxObserver::new(sym).map(|_| ())),
        (
            "minmax custom range",
            MinMaxObserver::new(sym_custom).map(|_| ()),
        ),
        (
            "moving average",
            MinMaxObserver::moving_average(sym, 0.1).map(|_| ()),
        ),
        (
            "per channel",
            PerChannelMinMaxObserver::new(pc, 0).map(|_| ()),
        ),
        (
            "per-channel moving average",
            PerChannelMinMaxObserver::moving_average(pc, 0, 0.1).map(|_| ()),
        ),
    ];
    for_all(results, |_, r| match r {
        Err(QuantError::UnsupportedConfig { .. }) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    // The histogram observer accepts it (PyTorch's check is in MinMaxObserver only).
    assert!(HistogramObserver::new(sym).is_ok());
}

#[test]
fn scheme_granularity_must_match_the_observer() {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let results = vec![
        (
            "minmax, per-channel scheme",
            MinMaxObserver::new(pc).map(|_| ()),
        ),
        (
            "histogram, per-channel scheme",
            HistogramObserver::new(pc).map(|_| ()),
        ),
        (
            "dynamic, per-channel scheme",
            DynamicObserver::new(pc).map(|_| ()),
        ),
        ("mse, per-channel scheme", MseObserver::new(pc).map(|_| ())),
        (
            "per channel, per-tensor scheme",
            PerChannelMinMaxObserver::new(q8, 0).map(|_| ()),
        ),
        (
            "per-channel moving average, per-tensor scheme",
            PerChannelMinMaxObserver::moving_average(q8, 0, 0.1).map(|_| ()),
        ),
    ];
    for_all(results, |_, r| match r {
        Err(QuantError::UnsupportedConfig { .. }) => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

#[test]
fn bad_custom_ranges_are_refused() {
    // pytorch.md §1.2 validate_qmin_qmax: must include 0, quant_min < quant_max
    for (d, lo, hi) in [
        (QDType::QUInt8, 10, 5),
        (QDType::QInt8, 1, 127),
        (QDType::QInt8, 0, 0),
    ] {
        assert!(
            matches!(
                spec(QScheme::PerTensorAffine, d).with_quant_range(lo, hi),
                Err(QuantError::InvalidQuantRange { .. })
            ),
            "{d} {lo}..={hi}"
        );
    }
}

#[test]
fn averaging_constant_outside_0_1_is_refused() {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let cs = [0.0, -0.5, 1.5, f32::NAN, f32::INFINITY];
    let mut results = Vec::new();
    for c in cs {
        results.push((
            "per tensor",
            MinMaxObserver::moving_average(q8, c).map(|_| ()),
        ));
        results.push((
            "per channel",
            PerChannelMinMaxObserver::moving_average(pc, 0, c).map(|_| ()),
        ));
        results.push(("rule", UpdateRule::moving_average(c).map(|_| ())));
    }
    for_all(results, |_, r| match r {
        Err(QuantError::InvalidParameter {
            what: "averaging_constant",
            ..
        }) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    // c = 1 (memoryless) is allowed.
    assert!(MinMaxObserver::moving_average(q8, 1.0).is_ok());
}

#[test]
fn histogram_bins_limit_is_2_pow_22() {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    assert_eq!(HistogramObserver::MAX_BINS, 1 << 22);
    assert_eq!(
        HistogramObserver::with_bins(q8, 1 << 22).unwrap().bins(),
        1 << 22
    );
    for bins in [0, (1 << 22) + 1, 1 << 23] {
        match HistogramObserver::with_bins(q8, bins) {
            Err(e @ QuantError::InvalidParameter { what: "bins", .. }) => {
                assert!(e.to_string().contains("2^22"), "{e}");
            }
            other => panic!("{bins}: {other:?}"),
        }
    }
}

#[test]
fn streaming_histogram_bins_must_be_a_power_of_two() {
    assert!(matches!(
        StreamingHistogram::new(1000),
        Err(QuantError::InvalidParameter { .. })
    ));
}

#[test]
fn fixed_qparams_observer_refuses_bad_parameters() {
    assert!(matches!(
        FixedQParamsObserver::new(0.1, 300, QDType::QUInt8.full_range()),
        Err(QuantError::ZeroPointOutOfRange { .. })
    ));
    assert!(matches!(
        FixedQParamsObserver::new(0.0, 0, QDType::QUInt8.full_range()),
        Err(QuantError::InvalidScale { .. })
    ));
    // 1 / 1e-45 overflows f32.
    assert!(matches!(
        FixedQParamsObserver::new(1e-45, 0, QDType::QUInt8.full_range()),
        Err(QuantError::InvalidScale { .. })
    ));
}

#[test]
fn fixed_qparams_observer_refuses_nan_and_inf() {
    // Every observer refuses NaN and ±inf (module docs); the fixed one too, though it does
    // not use the data.
    let mut o = FixedQParamsObserver::new(2.0 / 256.0, 128, QDType::QUInt8.full_range()).unwrap();
    assert!(matches!(
        o.observe(&v1(&[0.5, f32::NAN])),
        Err(QuantError::NanInput { index: 1, .. })
    ));
    assert!(matches!(
        o.observe(&v1(&[f32::INFINITY])),
        Err(QuantError::NonFinite { .. })
    ));
    assert!(o.observe(&v1(&[0.5, -0.5])).is_ok());
}

#[test]
fn channel_axis_is_checked_against_each_batch() {
    // PyTorch IndexError for a missing axis, RuntimeError for a changed channel count.
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let z = |s: &[usize]| ArrayD::<f32>::zeros(IxDyn(s));
    let mut o = PerChannelMinMaxObserver::new(pc, 3).unwrap();
    assert!(matches!(
        o.observe(&z(&[4, 3])),
        Err(QuantError::InvalidAxis { .. })
    ));
    let mut o = PerChannelMinMaxObserver::new(pc, -3).unwrap();
    assert!(matches!(
        o.observe(&z(&[4, 3])),
        Err(QuantError::InvalidAxis { .. })
    ));
    let mut o = PerChannelMinMaxObserver::new(pc, 1).unwrap();
    o.observe(&z(&[4, 3])).unwrap();
    assert!(matches!(
        o.observe(&z(&[4, 5])),
        Err(QuantError::LengthMismatch { .. })
    ));
}

/// One of each observer (per-tensor ones on quint8 affine, per-channel on axis 0).
fn one_of_each() -> Vec<(&'static str, Box<dyn Observer>)> {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    vec![
        ("minmax", Box::new(MinMaxObserver::new(q8).unwrap())),
        (
            "moving average",
            Box::new(MinMaxObserver::moving_average(q8, 0.1).unwrap()),
        ),
        (
            "per channel",
            Box::new(PerChannelMinMaxObserver::new(pc, 0).unwrap()),
        ),
        (
            "per-channel moving average",
            Box::new(PerChannelMinMaxObserver::moving_average(pc, -1, 0.1).unwrap()),
        ),
        ("histogram", Box::new(HistogramObserver::new(q8).unwrap())),
        ("dynamic", Box::new(DynamicObserver::new(q8).unwrap())),
        (
            "fixed",
            Box::new(FixedQParamsObserver::new(0.5, 3, QDType::QUInt8.full_range()).unwrap()),
        ),
        (
            "percentile",
            Box::new(PercentileObserver::new(q8, 99.0).unwrap()),
        ),
        ("entropy", Box::new(EntropyObserver::new(q8).unwrap())),
        ("mse", Box::new(MseObserver::new(q8).unwrap())),
    ]
}

#[test]
fn nan_and_inf_are_refused_and_leave_every_observer_unchanged() {
    for_all(one_of_each(), |_, mut o| {
        o.observe(&array![[1.0f32, -2.0], [0.5, 3.0]])
            .map_err(|e| e.to_string())?;
        let before = o.qparams().map_err(|e| e.to_string())?;
        match o.observe(&array![[1.0f32, f32::NAN], [0.5, 3.0]]) {
            Err(QuantError::NanInput { index: 1, .. }) => {}
            other => return Err(format!("NaN: {other:?}")),
        }
        match o.observe(&array![[1.0f32, 2.0], [f32::NEG_INFINITY, 3.0]]) {
            Err(QuantError::NonFinite { .. }) => {}
            other => return Err(format!("inf: {other:?}")),
        }
        let after = o.qparams().map_err(|e| e.to_string())?;
        (after == before)
            .then_some(())
            .ok_or(format!("changed: {before:?} → {after:?}"))
    });
}

#[test]
fn qparams_before_any_data_is_empty() {
    // PyTorch warns and returns (1.0, 0): pytorch.md §3.8. The fixed observer has its
    // parameters from the start.
    let observers = one_of_each()
        .into_iter()
        .filter(|(n, _)| *n != "fixed")
        .collect();
    for_all(observers, |_, mut o| {
        o.observe(&v1(&[1.0])).map_err(|e| e.to_string())?;
        o.reset();
        match o.qparams() {
            Err(QuantError::Empty { .. }) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[test]
fn empty_batches_are_no_ops_except_for_the_dynamic_observer() {
    // pytorch.md §9 test_zero_numel: every observer accepts empty tensors.
    let observers = one_of_each()
        .into_iter()
        .filter(|(n, _)| *n != "dynamic")
        .collect();
    for_all(observers, |_, mut o| {
        let fresh = o.qparams();
        o.observe(&ArrayD::<f32>::zeros(IxDyn(&[0, 3])))
            .map_err(|e| e.to_string())?;
        (o.qparams() == fresh)
            .then_some(())
            .ok_or("changed".to_string())
    });
    let mut d = DynamicObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
    assert!(matches!(
        d.observe(&ArrayD::<f32>::zeros(IxDyn(&[0]))),
        Err(QuantError::EmptyInput { .. })
    ));
}

#[test]
fn merge_refuses_other_kinds_and_configurations() {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let mut a = MinMaxObserver::new(q8).unwrap();
    let cases: Vec<(&str, Result<(), QuantError>)> = vec![
        (
            "minmax ← histogram",
            a.merge(&HistogramObserver::new(q8).unwrap()),
        ),
        (
            "minmax ← qint8 minmax",
            a.merge(&MinMaxObserver::new(spec(QScheme::PerTensorAffine, QDType::QInt8)).unwrap()),
        ),
        (
            "minmax ← moving average",
            a.merge(&MinMaxObserver::moving_average(q8, 0.1).unwrap()),
        ),
        (
            "per channel axis 0 ← axis 1",
            PerChannelMinMaxObserver::new(pc, 0)
                .unwrap()
                .merge(&PerChannelMinMaxObserver::new(pc, 1).unwrap()),
        ),
        (
            "entropy ← minmax",
            EntropyObserver::new(q8)
                .unwrap()
                .merge(&MinMaxObserver::new(q8).unwrap()),
        ),
        (
            "histogram 64 bins ← 2048 bins",
            HistogramObserver::with_bins(q8, 64)
                .unwrap()
                .merge(&HistogramObserver::new(q8).unwrap()),
        ),
    ];
    for_all(cases, |_, r| match r {
        Err(QuantError::Incompatible { .. }) => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

// ---------------------------------------------------- robustness regressions (issue 11)

#[test]
fn mse_observer_handles_one_sided_data_away_from_zero() {
    // [1, 2] never touches 0; the candidates below 1 must not form an inverted range.
    for x in [vec![1.0f32, 2.0], vec![-2.0f32, -1.0]] {
        let mut o = MseObserver::new(spec(QScheme::PerTensorAffine, QDType::QUInt8)).unwrap();
        o.observe(&v1(&x)).unwrap();
        let (lo, hi) = o.range().unwrap();
        assert!(lo <= hi, "{x:?}: {lo} > {hi}");
        o.qparams().unwrap();
    }
}

#[test]
fn calibrators_handle_one_sided_data_in_1_to_2() {
    // Values in [1, 2): every calibrator, alone and through compare_calibrators.
    let x: Vec<f32> = (0..4096).map(|i| 1.0 + i as f32 / 4096.0).collect();
    for s in [
        spec(QScheme::PerTensorAffine, QDType::QUInt8),
        spec(QScheme::PerTensorSymmetric, QDType::QInt8),
    ] {
        let r = compare_calibrators(v1(&x).view(), s).unwrap();
        assert_eq!(r.results.len(), 6);
        let mut e = EntropyObserver::new(s).unwrap();
        e.observe(&v1(&x)).unwrap();
        e.qparams().unwrap();
    }
}

#[test]
fn histogram_observer_reports_range_overflow_for_finite_extremes() {
    // ±3e38 are finite but 3e38 − (−3e38) overflows f32: not a NaN "min".
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut o = HistogramObserver::new(q8).unwrap();
    assert!(matches!(
        o.observe(&v1(&[-3e38, 3e38])),
        Err(QuantError::RangeOverflow { .. })
    ));
    assert_eq!(o, HistogramObserver::new(q8).unwrap());
    // A later batch that makes the range overflow, and a merge that would.
    o.observe(&v1(&[-3e38, 0.0])).unwrap();
    let before = o.clone();
    assert!(matches!(
        o.observe(&v1(&[3e38])),
        Err(QuantError::RangeOverflow { .. })
    ));
    assert_eq!(o, before);
    let mut other = HistogramObserver::new(q8).unwrap();
    other.observe(&v1(&[3e38])).unwrap();
    assert!(matches!(
        o.merge(&other),
        Err(QuantError::RangeOverflow { .. })
    ));
    assert_eq!(o, before);
}

#[test]
fn minmax_observers_report_range_overflow() {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    // Running min/max: the state is fine, the affine scale overflows.
    let mut o = MinMaxObserver::new(q8).unwrap();
    o.observe(&v1(&[-3e38, 3e38])).unwrap();
    assert!(matches!(o.qparams(), Err(QuantError::RangeOverflow { .. })));
    // A symmetric scale of the same data is finite (3e38 / 127.5).
    let mut s = MinMaxObserver::new(spec(QScheme::PerTensorSymmetric, QDType::QInt8)).unwrap();
    s.observe(&v1(&[-3e38, 3e38])).unwrap();
    assert!(s.qparams().is_ok());
    // Moving average: the step min + c·(batch_min − min) overflows; refused, unchanged.
    let mut m = MinMaxObserver::moving_average(q8, 0.5).unwrap();
    m.observe(&v1(&[-3e38, 0.0])).unwrap();
    let before = m.clone();
    assert!(matches!(
        m.observe(&v1(&[3e38])),
        Err(QuantError::RangeOverflow { .. })
    ));
    assert_eq!(m, before);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let mut p = PerChannelMinMaxObserver::moving_average(pc, 0, 0.5).unwrap();
    p.observe(&array![[-3e38f32], [1.0]]).unwrap();
    let before = p.clone();
    assert!(matches!(
        p.observe(&array![[3e38f32], [2.0]]),
        Err(QuantError::RangeOverflow { .. })
    ));
    assert_eq!(p, before);
}

#[test]
fn calibrators_report_range_overflow_or_a_finite_scale() {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let x = v1(&[-3e38, 3e38, 1.0]);
    let observers: Vec<(&str, Box<dyn Observer>)> = vec![
        (
            "percentile",
            Box::new(PercentileObserver::new(q8, 100.0).unwrap()),
        ),
        ("entropy", Box::new(EntropyObserver::new(q8).unwrap())),
        ("mse", Box::new(MseObserver::new(q8).unwrap())),
        ("dynamic", Box::new(DynamicObserver::new(q8).unwrap())),
    ];
    for_all(observers, |_, mut o| {
        o.observe(&x).map_err(|e| e.to_string())?;
        match o.qparams() {
            Err(QuantError::RangeOverflow { .. }) => Ok(()),
            Ok(AnyQParams::PerTensor(p)) if (1.0 / p.scale()).is_finite() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The percentile at 100 keeps the whole range: overflow.
    let mut p = PercentileObserver::new(q8, 100.0).unwrap();
    p.observe(&x).unwrap();
    assert!(matches!(p.qparams(), Err(QuantError::RangeOverflow { .. })));
}

#[test]
fn eps_whose_reciprocal_overflows_is_refused() {
    // 1 / 1e-45 overflows f32: a scale of 1e-45 (all-zero data) would quantize 0 to qmin.
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    assert!(matches!(
        q8.with_eps(1e-45),
        Err(QuantError::InvalidScale { .. })
    ));
    // The smallest normal eps is fine: all-zero data gets scale eps with a finite reciprocal.
    let mut o = MinMaxObserver::new(q8.with_eps(f32::MIN_POSITIVE).unwrap()).unwrap();
    o.observe(&v1(&[0.0; 4])).unwrap();
    let (sc, zp) = per_tensor(&o);
    assert_eq!((sc, zp), (f32::MIN_POSITIVE, 0));
    assert!((1.0 / sc).is_finite());
}

#[test]
fn quint8_ranges_beyond_the_dtype_are_refused_not_emulated() {
    // PyTorch accepts these quint8 custom ranges (pytorch.md §1.2: no length check for quint8)
    // but no quint8 tensor holds them; qnumeric refuses them instead of computing a
    // symmetric zero point that differs from PyTorch's floor((qmin + qmax) / 2).
    for s in [QScheme::PerTensorAffine, QScheme::PerTensorSymmetric] {
        for (lo, hi) in [(-4, 251), (0, 300), (0, 1000)] {
            assert!(
                matches!(
                    spec(s, QDType::QUInt8).with_quant_range(lo, hi),
                    Err(QuantError::InvalidQuantRange { .. })
                ),
                "{s:?} {lo}..={hi}"
            );
        }
    }
}

#[cfg(feature = "conformance")]
#[test]
fn conformance_counts_quint8_ranges_beyond_the_dtype_as_deliberately_refused() {
    // A case shaped like observer-400 (quint8, 0..=300): PyTorch's parameters are expected,
    // qnumeric refuses the range; the harness passes it only for that refusal.
    let case = |qscheme: &str, lo: i64, hi: i64| {
        format!(
            r#"{{"id": "r-{qscheme}-{lo}-{hi}", "op": "observer", "observer": "MinMaxObserver", "config": {{"dtype": "quint8", "qscheme": "{qscheme}", "reduce_range": false, "quant_min": {lo}, "quant_max": {hi}}}, "batches": [{{"shape": [2], "data": [-1.0, 2.0]}}], "expected": {{"scale": [0.01], "zero_point": [125], "min_val": [-1.0], "max_val": [2.0]}}}}"#
        )
    };
    let text = [
        case("per_tensor_affine", 0, 300),
        case("per_tensor_symmetric", -4, 251),
    ]
    .join("\n");
    let report = qnumeric::conformance::run_str(&text, "inline");
    assert_eq!((report.passed, report.failed()), (2, 0), "{report}");
}

// -------------------------------------------------------------------------------- merge

/// Two shards (one batch each) merged vs one observer over the concatenation.
fn merged_and_whole(
    make: &dyn Fn() -> Box<dyn Observer>,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
) -> Result<(Boxed, Boxed), QuantError> {
    let mut x = make();
    x.observe(a)?;
    let mut y = make();
    y.observe(b)?;
    x.merge(y.as_ref())?;
    let mut whole = make();
    let cat = concatenate(Axis(0), &[a.view(), b.view()]).unwrap();
    whole.observe(&cat)?;
    Ok((x, whole))
}

fn shards() -> (ArrayD<f32>, ArrayD<f32>) {
    (
        ArrayD::from_shape_vec(IxDyn(&[40, 6]), data(240, 1, 4.0)).unwrap(),
        ArrayD::from_shape_vec(IxDyn(&[25, 6]), data(150, 2, 9.0)).unwrap(),
    )
}

#[test]
fn merge_equals_one_observer_over_concatenated_data() {
    // Exact for min/max (running; moving averages with one batch per shard), dynamic, fixed
    // and the streaming-histogram calibrators.
    let (a, b) = shards();
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let sym = spec(QScheme::PerTensorSymmetric, QDType::QInt8);
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let exact: Vec<(&str, Factory)> = vec![
        (
            "minmax",
            Box::new(move || Box::new(MinMaxObserver::new(q8).unwrap())),
        ),
        (
            "moving average",
            Box::new(move || Box::new(MinMaxObserver::moving_average(q8, 0.1).unwrap())),
        ),
        (
            "per channel",
            Box::new(move || Box::new(PerChannelMinMaxObserver::new(pc, -1).unwrap())),
        ),
        (
            "per-channel moving average",
            Box::new(move || {
                Box::new(PerChannelMinMaxObserver::moving_average(pc, 1, 0.3).unwrap())
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
    for_all(exact, |_, make| {
        let (m, w) = merged_and_whole(make.as_ref(), &a, &b).map_err(|e| e.to_string())?;
        let (qm, qw) = (m.qparams(), w.qparams());
        (qm == qw).then_some(()).ok_or(format!("{qm:?} vs {qw:?}"))
    });
}

#[test]
fn merged_min_max_state_is_exact() {
    let (a, b) = shards();
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let make = move || Box::new(MinMaxObserver::new(q8).unwrap()) as Box<dyn Observer>;
    let (m, w) = merged_and_whole(&make, &a, &b).unwrap();
    let mm = |o: &dyn Observer| {
        o.as_any()
            .downcast_ref::<MinMaxObserver>()
            .unwrap()
            .min_max()
    };
    assert_eq!(mm(m.as_ref()), mm(w.as_ref()));
    let pc = spec(QScheme::PerChannelAffine, QDType::QUInt8);
    let make =
        move || Box::new(PerChannelMinMaxObserver::new(pc, -1).unwrap()) as Box<dyn Observer>;
    let (m, w) = merged_and_whole(&make, &a, &b).unwrap();
    let pcv = |o: &dyn Observer| {
        let o = o
            .as_any()
            .downcast_ref::<PerChannelMinMaxObserver>()
            .unwrap();
        (o.min_vals().to_vec(), o.max_vals().to_vec())
    };
    assert_eq!(pcv(m.as_ref()), pcv(w.as_ref()));
}

fn histogram_of(o: &dyn Observer) -> HistogramObserver {
    o.as_any()
        .downcast_ref::<HistogramObserver>()
        .unwrap()
        .clone()
}

#[test]
fn histogram_merge_over_the_same_range_is_exact() {
    let (a, _) = shards();
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let make = move || Box::new(HistogramObserver::new(q8).unwrap()) as Box<dyn Observer>;
    let (m, w) = merged_and_whole(&make, &a, &a).unwrap();
    assert_eq!(
        histogram_of(m.as_ref()).histogram(),
        histogram_of(w.as_ref()).histogram()
    );
    assert_eq!(m.qparams().unwrap(), w.qparams().unwrap());
}

#[test]
fn histogram_merge_over_growing_ranges_is_pytorchs_combine() {
    // PyTorch's combine re-bins approximately: same min/max and mass (240 + 150 values),
    // parameters within a few percent.
    let (a, b) = shards();
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let make = move || Box::new(HistogramObserver::new(q8).unwrap()) as Box<dyn Observer>;
    let (m, w) = merged_and_whole(&make, &a, &b).unwrap();
    let (hm, hw) = (histogram_of(m.as_ref()), histogram_of(w.as_ref()));
    assert_eq!(hm.min_max(), hw.min_max());
    let mass = |o: &HistogramObserver| o.histogram().iter().map(|&v| v as f64).sum::<f64>();
    assert!((mass(&hm) - 390.0).abs() < 1e-3 && (mass(&hw) - 390.0).abs() < 1e-3);
    let (sm, zm) = per_tensor(m.as_ref());
    let (sw, zw) = per_tensor(w.as_ref());
    assert!((sm - sw).abs() <= 0.05 * sw, "{sm} vs {sw}");
    assert!((zm - zw).abs() <= 8, "{zm} vs {zw}");
}

#[test]
fn merging_into_an_empty_histogram_observer_copies_the_other() {
    let (a, _) = shards();
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut full = HistogramObserver::new(q8).unwrap();
    full.observe(&a).unwrap();
    let mut e = HistogramObserver::new(q8).unwrap();
    e.merge(&full).unwrap();
    assert_eq!(e, full);
}

// ---------------------------------------------------------- serialized shards (feature serde)

#[cfg(feature = "serde")]
mod serialized {
    use super::*;
    use serde::{Serialize, de::DeserializeOwned};

    /// Each shard observed by its own observer, serialized to JSON and back (as a worker
    /// process would ship it), merged; and one observer over every shard.
    fn sharded<O>(make: impl Fn() -> O, parts: &[ArrayD<f32>]) -> (O, O)
    where
        O: Observer + Serialize + DeserializeOwned + Clone,
    {
        let mut merged: Option<O> = None;
        for p in parts {
            let mut o = make();
            Observer::observe_view(&mut o, p.view().into()).unwrap();
            let json = serde_json::to_string(&o).unwrap();
            let back: O = serde_json::from_str(&json).unwrap();
            match &mut merged {
                None => merged = Some(back),
                Some(m) => m.merge(&back).unwrap(),
            }
        }
        let mut one = make();
        for p in parts {
            Observer::observe_view(&mut one, p.view().into()).unwrap();
        }
        (merged.unwrap(), one)
    }

    fn parts() -> Vec<ArrayD<f32>> {
        (0..3)
            .map(|k| {
                ArrayD::from_shape_vec(IxDyn(&[50, 8]), data(400, 10 + k, 2.0 + 3.0 * k as f32))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn sharded_min_max_calibration_equals_one_observer() {
        let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
        let (m, one) = sharded(|| MinMaxObserver::new(q8).unwrap(), &parts());
        assert_eq!(m, one);
        assert_eq!(m.qparams().unwrap(), one.qparams().unwrap());
    }

    #[test]
    fn sharded_per_channel_calibration_equals_one_observer() {
        let pc = spec(QScheme::PerChannelSymmetric, QDType::QInt8);
        let (m, one) = sharded(|| PerChannelMinMaxObserver::new(pc, 1).unwrap(), &parts());
        assert_eq!(m, one);
        assert_eq!(m.qparams().unwrap(), one.qparams().unwrap());
    }

    #[test]
    fn sharded_calibrators_equal_one_observer() {
        let sym = spec(QScheme::PerTensorSymmetric, QDType::QInt8);
        let (m, one) = sharded(|| PercentileObserver::new(sym, 99.9).unwrap(), &parts());
        assert_eq!(m, one);
        let (m, one) = sharded(|| EntropyObserver::new(sym).unwrap(), &parts());
        assert_eq!(m.qparams().unwrap(), one.qparams().unwrap());
        let (m, one) = sharded(|| MseObserver::new(sym).unwrap(), &parts());
        assert_eq!(m.qparams().unwrap(), one.qparams().unwrap());
    }

    fn round_trip<O: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(o: &O) {
        let back: O = serde_json::from_str(&serde_json::to_string(o).unwrap()).unwrap();
        assert_eq!(&back, o);
    }

    #[test]
    fn every_observer_state_round_trips() {
        let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8)
            .with_reduce_range()
            .unwrap();
        let pc = spec(QScheme::PerChannelAffineFloatQParams, QDType::QUInt8);
        let x = &parts()[1];
        let mut mm = MinMaxObserver::moving_average(q8, 0.25).unwrap();
        let mut pcm = PerChannelMinMaxObserver::new(pc, -1).unwrap();
        let mut h = HistogramObserver::with_bins(q8, 100).unwrap();
        let mut d = DynamicObserver::new(q8).unwrap();
        let mut s = StreamingHistogram::new(64).unwrap();
        let mut p = PercentileObserver::new(q8, 99.5).unwrap();
        mm.observe(x).unwrap();
        pcm.observe(x).unwrap();
        h.observe(x).unwrap();
        d.observe(x).unwrap();
        s.observe(x).unwrap();
        p.observe(x).unwrap();
        round_trip(&mm);
        round_trip(&pcm);
        round_trip(&h);
        round_trip(&d);
        round_trip(&s);
        round_trip(&p);
        round_trip(
            &FixedQParamsObserver::new(0.25, 7, qnumeric::QRange::for_fake_quant(1, 9).unwrap())
                .unwrap(),
        );
        // Empty observers too.
        round_trip(&MinMaxObserver::new(q8).unwrap());
        round_trip(&HistogramObserver::new(q8).unwrap());
        round_trip(&StreamingHistogram::new(16).unwrap());
        round_trip(&EntropyObserver::new(q8).unwrap());
        round_trip(&MseObserver::new(q8).unwrap());
    }

    #[test]
    fn spec_serializes_as_pytorchs_arguments() {
        let s = spec(QScheme::PerTensorSymmetric, QDType::QInt8)
            .with_quant_range(-127, 127)
            .unwrap()
            .with_reduce_range()
            .unwrap();
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "qscheme": "PerTensorSymmetric",
                "dtype": "QInt8",
                "reduce_range": true,
                "quant_min": -127,
                "quant_max": 127,
                "eps": f32::EPSILON,
            })
        );
        round_trip(&s);
    }

    /// Takes a valid serialized state, applies `edit`, and expects deserialization to fail.
    fn refused<O: Serialize + DeserializeOwned + std::fmt::Debug>(
        o: &O,
        edit: impl Fn(&mut serde_json::Value),
    ) -> Result<(), String> {
        let mut v = serde_json::to_value(o).unwrap();
        edit(&mut v);
        match serde_json::from_value::<O>(v.clone()) {
            Err(_) => Ok(()),
            Ok(got) => Err(format!("accepted {v}: {got:?}")),
        }
    }

    #[test]
    fn deserialization_refuses_invalid_state() {
        let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
        let x = v1(&[-1.0, 2.0, 0.5]);
        let mut mm = MinMaxObserver::moving_average(q8, 0.5).unwrap();
        mm.observe(&x).unwrap();
        let mut pcm =
            PerChannelMinMaxObserver::new(spec(QScheme::PerChannelAffine, QDType::QUInt8), 0)
                .unwrap();
        pcm.observe(&array![[1.0f32, 2.0], [3.0, 4.0]]).unwrap();
        let mut h = HistogramObserver::with_bins(q8, 4).unwrap();
        h.observe(&x).unwrap();
        let mut s = StreamingHistogram::new(16).unwrap();
        s.observe(&x).unwrap();
        let mut p = PercentileObserver::new(q8, 99.0).unwrap();
        p.observe(&x).unwrap();
        let fixed = FixedQParamsObserver::new(0.5, 3, QDType::QUInt8.full_range()).unwrap();
        use serde_json::json;
        let checks: Vec<(&str, Result<(), String>)> = vec![
            (
                "spec eps 0",
                refused(&mm, |v| v["spec"]["eps"] = json!(0.0)),
            ),
            (
                "spec eps 1e-45",
                refused(&mm, |v| v["spec"]["eps"] = json!(1e-45)),
            ),
            (
                "spec range 5..=-3",
                refused(&mm, |v| {
                    v["spec"]["quant_min"] = json!(5);
                    v["spec"]["quant_max"] = json!(-3);
                }),
            ),
            (
                "spec range beyond quint8",
                refused(&mm, |v| {
                    v["spec"]["quant_min"] = json!(0);
                    v["spec"]["quant_max"] = json!(300);
                }),
            ),
            (
                "spec half a range",
                refused(&mm, |v| v["spec"]["quant_min"] = json!(0)),
            ),
            (
                "averaging constant 1.5",
                refused(&mm, |v| {
                    v["rule"] = json!({"MovingAverage": {"averaging_constant": 1.5}})
                }),
            ),
            (
                "min above max",
                refused(&mm, |v| v["min_max"] = json!([3.0, 1.0])),
            ),
            (
                "non-finite min (null)",
                refused(&mm, |v| v["min_max"] = json!([null, 1.0])),
            ),
            (
                "per-tensor spec on a per-channel observer",
                refused(&pcm, |v| v["spec"]["qscheme"] = json!("PerTensorAffine")),
            ),
            (
                "per channel: fewer maxima than minima",
                refused(&pcm, |v| v["max_vals"] = json!([2.0])),
            ),
            ("histogram 0 bins", refused(&h, |v| v["bins"] = json!(0))),
            (
                "histogram 2^23 bins",
                refused(&h, |v| v["bins"] = json!(1u64 << 23)),
            ),
            (
                "histogram counts of another length",
                refused(&h, |v| v["histogram"] = json!([1.0, 2.0])),
            ),
            (
                "histogram negative count",
                refused(&h, |v| v["histogram"][0] = json!(-1.0)),
            ),
            (
                "histogram counts without a range",
                refused(&h, |v| v["min_max"] = json!(null)),
            ),
            (
                "histogram range overflow",
                refused(&h, |v| v["min_max"] = json!([-3e38, 3e38])),
            ),
            (
                "streaming bins not a power of two",
                refused(&s, |v| v["bins"] = json!(17)),
            ),
            (
                "streaming exponent below the range",
                refused(&s, |v| v["exponent"] = json!(-3)),
            ),
            (
                "streaming range without an exponent",
                refused(&s, |v| v["exponent"] = json!(null)),
            ),
            (
                "streaming range without counts",
                refused(&s, |v| {
                    v["positive"] = json!(vec![0u64; 16]);
                    v["negative"] = json!(vec![0u64; 16]);
                }),
            ),
            (
                "percentile 0",
                refused(&p, |v| v["percentile"] = json!(0.0)),
            ),
            (
                "calibrator histogram of 16 bins",
                refused(&p, |v| {
                    v["histogram"] = serde_json::to_value(&s).unwrap();
                }),
            ),
            (
                "fixed zero point outside the range",
                refused(&fixed, |v| v["zero_point"] = json!(300)),
            ),
            (
                "fixed range 5..=-3",
                refused(&fixed, |v| {
                    v["quant_min"] = json!(5);
                    v["quant_max"] = json!(-3);
                }),
            ),
        ];
        for_all(checks, |_, r| r);
    }
}

// ----------------------------------------------------------------------- object safety

fn assert_send_sync<T: Send + Sync + ?Sized>() {}

// Compile-time: boxed observers cross threads and live in shared maps.
const _: fn() = || {
    assert_send_sync::<dyn Observer>();
    assert_send_sync::<Box<dyn Observer>>();
    assert_send_sync::<std::collections::HashMap<String, Box<dyn Observer>>>();
};

#[test]
fn boxed_observers_are_send_sync_and_clonable() {
    fn assert_concrete<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_concrete::<MinMaxObserver>();
    assert_concrete::<PerChannelMinMaxObserver>();
    assert_concrete::<HistogramObserver>();
    assert_concrete::<FixedQParamsObserver>();
    assert_concrete::<DynamicObserver>();
    assert_concrete::<PercentileObserver>();
    assert_concrete::<EntropyObserver>();
    assert_concrete::<MseObserver>();
    assert_concrete::<StreamingHistogram>();
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut engine: Vec<Box<dyn Observer>> = vec![
        Box::new(MinMaxObserver::new(q8).unwrap()),
        Box::new(HistogramObserver::new(q8).unwrap()),
    ];
    for o in &mut engine {
        o.observe(&v1(&[0.5, -1.0, 2.0])).unwrap();
    }
    // Shared by reference across threads (Sync), and a clone moved to another (Send).
    let shared = std::sync::Arc::new(engine.clone());
    let s2 = std::sync::Arc::clone(&shared);
    let n = std::thread::spawn(move || s2.iter().filter(|o| o.qparams().is_ok()).count());
    assert_eq!(n.join().unwrap(), 2);
    assert_eq!(engine[0].name(), "MinMaxObserver");
    assert_eq!(engine[1].spec(), &q8);
}

#[test]
fn calibrator_report_is_displayable() {
    let q8 = spec(QScheme::PerTensorAffine, QDType::QUInt8);
    let r = compare_calibrators(v1(&data(4096, 5, 2.0)).view(), q8).unwrap();
    assert!(r.to_string().contains(&r.best().name));
}

// ---------------------------------------------------------------------------- properties

/// `PROPTEST_CASES` cases when set (CI), `default` otherwise.
fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(n)
}

/// Values including NaN, ±inf, subnormals, ±f32::MAX, signed zeros and ordinary numbers.
fn hostile_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1e3f32..1e3,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::MAX),
        1 => Just(-f32::MAX),
        1 => Just(3e38f32),
        1 => Just(1e-45f32),
        1 => Just(-4.58e-41f32),
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => any::<f32>(),
    ]
}

/// A batch of rank 0..=3 (dimensions 0..=3, so zero-sized and 0-d arrays occur).
fn hostile_batch() -> impl Strategy<Value = ArrayD<f32>> {
    prop::collection::vec(0usize..4, 0..4).prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        prop::collection::vec(hostile_value(), n)
            .prop_map(move |v| ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap())
    })
}

fn any_spec(per_channel: bool) -> impl Strategy<Value = Option<QSpec>> {
    let schemes = if per_channel {
        vec![
            QScheme::PerChannelAffine,
            QScheme::PerChannelSymmetric,
            QScheme::PerChannelAffineFloatQParams,
        ]
    } else {
        vec![QScheme::PerTensorAffine, QScheme::PerTensorSymmetric]
    };
    (
        prop::sample::select(schemes),
        prop::sample::select(QDType::ALL.to_vec()),
        any::<bool>(),
        prop::option::of((-300i64..10, -10i64..300)),
        prop::option::of(prop_oneof![
            Just(1e-45f32),
            Just(2.0f32.powi(-12)),
            1e-30f32..1e3
        ]),
    )
        .prop_map(|(s, d, reduce, range, eps)| {
            let mut sp = QSpec::new(s, d);
            if let Some((lo, hi)) = range {
                sp = sp.with_quant_range(lo, hi).ok()?;
            }
            if reduce {
                sp = sp.with_reduce_range().ok()?;
            }
            if let Some(e) = eps {
                sp = sp.with_eps(e).ok()?;
            }
            Some(sp)
        })
}

/// How the batch is handed over.
#[derive(Debug, Clone, Copy)]
enum Feed {
    F32,
    F64,
    F16,
    Transposed,
}

fn feed<O: Observer>(o: &mut O, x: &ArrayD<f32>, how: Feed) -> Result<(), QuantError> {
    match how {
        Feed::F32 => o.observe_view(x.view().into()),
        Feed::F64 => o.observe_view((&x.mapv(|v| v as f64 * 1.5)).into()),
        Feed::F16 => o.observe_view((&x.mapv(f16::from_f32)).into()),
        Feed::Transposed => o.observe_view(x.t().into()),
    }
}

/// Feeds every batch: each call returns `Ok` or a typed `Err` (a panic fails the test), an
/// `Err` leaves the observer unchanged; `qparams` gives usable parameters or a typed error;
/// `merge` with a copy of itself likewise.
fn check_observer<O: Observer + Clone + PartialEq + std::fmt::Debug>(
    mut o: O,
    batches: &[(ArrayD<f32>, Feed)],
) -> Result<(), TestCaseError> {
    for (x, how) in batches {
        let before = o.clone();
        if feed(&mut o, x, *how).is_err() {
            prop_assert_eq!(&o, &before);
        }
    }
    match o.qparams() {
        Ok(AnyQParams::PerTensor(p)) => {
            prop_assert!(p.scale() > 0.0 && (1.0 / p.scale()).is_finite(), "{:?}", p)
        }
        Ok(AnyQParams::PerChannel(p)) => {
            for &s in p.scales() {
                prop_assert!(s > 0.0 && (1.0 / s).is_finite(), "{:?}", p)
            }
        }
        Err(_) => {}
    }
    let copy = o.clone();
    let before = o.clone();
    if o.merge(&copy).is_err() {
        prop_assert_eq!(&o, &before);
    }
    Ok(())
}

fn feeds() -> impl Strategy<Value = Vec<(ArrayD<f32>, Feed)>> {
    prop::collection::vec(
        (
            hostile_batch(),
            prop::sample::select(vec![Feed::F32, Feed::F64, Feed::F16, Feed::Transposed]),
        ),
        1..5,
    )
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn per_tensor_observers_never_panic_and_refuse_atomically(
        sp in any_spec(false),
        family in 0usize..7,
        param in 0.0f64..1.5,
        batches in feeds(),
    ) {
        let Some(sp) = sp else { return Ok(()) };
        match family {
            0 => if let Ok(o) = MinMaxObserver::new(sp) { check_observer(o, &batches)? },
            1 => if let Ok(o) = MinMaxObserver::moving_average(sp, param as f32) {
                check_observer(o, &batches)?
            },
            2 => if let Ok(o) = HistogramObserver::with_bins(sp, 1 + (param * 40.0) as usize) {
                check_observer(o, &batches)?
            },
            3 => if let Ok(o) = DynamicObserver::new(sp) { check_observer(o, &batches)? },
            4 => if let Ok(o) = PercentileObserver::new(sp, param * 100.0) {
                check_observer(o, &batches)?
            },
            5 => if let Ok(o) = EntropyObserver::new(sp) { check_observer(o, &batches)? },
            _ => if let Ok(o) = MseObserver::new(sp) { check_observer(o, &batches)? },
        }
    }

    #[test]
    fn per_channel_observers_never_panic_and_refuse_atomically(
        sp in any_spec(true),
        axis in -4isize..4,
        c in 0.0f32..1.5,
        moving in any::<bool>(),
        batches in feeds(),
    ) {
        let Some(sp) = sp else { return Ok(()) };
        let o = if moving {
            PerChannelMinMaxObserver::moving_average(sp, axis, c)
        } else {
            PerChannelMinMaxObserver::new(sp, axis)
        };
        if let Ok(o) = o {
            check_observer(o, &batches)?;
        }
    }

    #[test]
    fn fixed_observer_never_panics(
        scale in prop_oneof![Just(1e-45f32), Just(f32::NAN), 1e-30f32..1e30],
        zp in -300i64..300,
        batches in feeds(),
    ) {
        if let Ok(o) = FixedQParamsObserver::new(scale, zp, QDType::QUInt8.full_range()) {
            check_observer(o, &batches)?;
        }
    }

    #[test]
    fn streaming_histogram_never_panics_and_refuses_atomically(batches in feeds()) {
        let mut h = StreamingHistogram::new(16).unwrap();
        let mut n = 0u64;
        for (x, how) in &batches {
            let before = h.clone();
            let r = match how {
                Feed::F32 => h.observe(x),
                Feed::F64 => h.observe(&x.mapv(|v| v as f64)),
                Feed::F16 => h.observe(&x.mapv(f16::from_f32)),
                Feed::Transposed => h.observe(x.t()),
            };
            match r {
                Ok(()) => n += x.len() as u64,
                Err(_) => prop_assert_eq!(&h, &before),
            }
        }
        prop_assert_eq!(h.count(), n);
    }

    #[test]
    fn compare_calibrators_never_panics(x in hostile_batch(), sp in any_spec(false)) {
        if let Some(sp) = sp {
            let _ = compare_calibrators(x.view(), sp);
        }
    }

    #[test]
    fn minmax_batches_equal_concatenation(
        a in prop::collection::vec(-1e6f32..1e6, 1..64),
        b in prop::collection::vec(-1e6f32..1e6, 1..64),
    ) {
        let s = spec(QScheme::PerTensorAffine, QDType::QInt8);
        let mut x = MinMaxObserver::new(s).unwrap();
        x.observe(&v1(&a)).unwrap();
        x.observe(&v1(&b)).unwrap();
        let mut all = a.clone();
        all.extend(&b);
        let mut y = MinMaxObserver::new(s).unwrap();
        y.observe(&v1(&all)).unwrap();
        prop_assert_eq!(x.min_max(), y.min_max());
        prop_assert_eq!(x.qparams().unwrap(), y.qparams().unwrap());
    }

    #[test]
    fn streaming_histogram_is_order_independent(
        a in prop::collection::vec(-1e3f32..1e3, 1..64),
        b in prop::collection::vec(-1e5f32..1e5, 1..64),
    ) {
        let mut x = StreamingHistogram::new(256).unwrap();
        x.observe(&v1(&a)).unwrap();
        x.observe(&v1(&b)).unwrap();
        let mut y = StreamingHistogram::new(256).unwrap();
        y.observe(&v1(&b)).unwrap();
        y.observe(&v1(&a)).unwrap();
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
            o.observe(&v1(b)).unwrap();
            n += b.len();
        }
        let mass: f64 = o.histogram().iter().map(|&v| v as f64).sum();
        prop_assert!((mass - n as f64).abs() < 1e-3 * n as f64);
        prop_assert!(o.qparams().is_ok());
    }
}
