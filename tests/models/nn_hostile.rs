//! The model floors (`nn`, `ptq`, `fusion`) under hostile input: each reproducer of issue 11
//! returns a typed error or the correct value, and arbitrary shapes, values and geometry
//! never panic.

use ndarray::{ArrayD, IxDyn, arr1, arr2};
use proptest::prelude::*;
use qnumeric::fusion::{ConvLayout, fuse_conv_bn_weights, fuse_modules};
use qnumeric::nn::quantized::{Int8Accumulation, QuantizedAdd, QuantizedConv2d, QuantizedLinear};
use qnumeric::nn::{
    Activation, AvgPool2d, BatchNorm, BatchNormParams, Conv2d, ConvGeometry, Linear, MaxPool2d,
    Module, Sequential,
};
use qnumeric::{QDType, QParams, QuantError, QuantizedTensor};

fn quint8(scale: f32, zp: i64) -> QParams {
    QParams::new(scale, zp, QDType::QUInt8).expect("valid quint8 parameters")
}

fn qint8(scale: f32) -> QParams {
    QParams::new(scale, 0, QDType::QInt8).expect("valid qint8 parameters")
}

fn qact(x: &ArrayD<f32>, qp: QParams) -> Activation {
    Activation::Quantized(QuantizedTensor::quantize(x, qp).expect("quantize"))
}

fn bn(var: f32, eps: f64) -> BatchNormParams {
    BatchNormParams {
        running_mean: vec![0.0],
        running_var: vec![var],
        weight: None,
        bias: None,
        eps,
    }
}

#[test]
fn linear_with_zero_sized_dimensions_does_not_panic() {
    // [out 0, in 3]: every row maps to an empty output
    let lin = Linear::new(ArrayD::zeros(IxDyn(&[0, 3])), None).expect("linear");
    let y = lin
        .forward(&Activation::Float(ArrayD::zeros(IxDyn(&[2, 3]))))
        .expect("forward");
    assert_eq!(y.shape(), &[2, 0]);
    // [out 4, in 0]: sums of nothing are 0, plus the bias
    let lin = Linear::new(
        ArrayD::zeros(IxDyn(&[4, 0])),
        Some(arr1(&[1.0f32, 2.0, 3.0, 4.0]).into_dyn()),
    )
    .expect("linear");
    let y = lin
        .forward(&Activation::Float(ArrayD::zeros(IxDyn(&[2, 0]))))
        .expect("forward")
        .into_float();
    assert_eq!(
        y,
        arr2(&[[1.0f32, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]).into_dyn()
    );
    // no rows at all
    let y = lin
        .forward(&Activation::Float(ArrayD::zeros(IxDyn(&[0, 0]))))
        .expect("forward");
    assert_eq!(y.shape(), &[0, 4]);
}

#[test]
fn quantized_linear_with_zero_sized_dimensions_does_not_panic() {
    for (o, k) in [(0usize, 3usize), (4, 0), (0, 0)] {
        let w = QuantizedTensor::<i8>::quantize(&ArrayD::<f32>::zeros(IxDyn(&[o, k])), qint8(0.1))
            .expect("weight");
        let lin = QuantizedLinear::new(w, None, quint8(0.1, 10)).expect("layer");
        let x = qact(&ArrayD::zeros(IxDyn(&[2, k])), quint8(0.1, 3));
        let y = lin.forward(&x).expect("forward");
        assert_eq!(y.shape(), &[2, o]);
        // an empty reduction gives the bias (none) in the output's units: the zero point
        assert!(
            y.as_quantized()
                .expect("q")
                .int_repr()
                .iter()
                .all(|&v| v == 10)
        );
        assert_eq!(lin.forward_reference(&x).expect("reference"), y);
    }
}

#[test]
fn quantized_linear_infinite_bias_saturates() {
    let w = QuantizedTensor::<i8>::quantize(&arr2(&[[0.5f32], [0.5]]).into_dyn(), qint8(0.1))
        .expect("weight");
    let bias = arr1(&[f32::INFINITY, f32::NEG_INFINITY]).into_dyn();
    let lin = QuantizedLinear::new(w, Some(bias), quint8(0.1, 128)).expect("layer");
    let x = qact(&arr2(&[[1.0f32]]).into_dyn(), quint8(0.1, 0));
    for mode in [Int8Accumulation::Exact, Int8Accumulation::X86Avx2] {
        let y = lin
            .clone()
            .with_accumulation(mode)
            .forward(&x)
            .expect("forward");
        assert_eq!(
            y.as_quantized().expect("q").int_repr().as_slice(),
            Some(&[255u8, 0][..])
        );
    }
    assert_eq!(
        lin.forward_reference(&x)
            .expect("reference")
            .as_quantized()
            .expect("q")
            .int_repr()
            .as_slice(),
        Some(&[255u8, 0][..])
    );
}

#[test]
fn quantized_layers_refuse_a_nan_bias() {
    let w =
        QuantizedTensor::<i8>::quantize(&arr2(&[[0.5f32]]).into_dyn(), qint8(0.1)).expect("weight");
    let nan = Some(arr1(&[f32::NAN]).into_dyn());
    assert!(matches!(
        QuantizedLinear::new(w, nan.clone(), quint8(0.1, 0)),
        Err(QuantError::NanInput { index: 0, .. })
    ));
    let w4 =
        QuantizedTensor::<i8>::quantize(&ArrayD::<f32>::zeros(IxDyn(&[1, 1, 1, 1])), qint8(0.1))
            .expect("weight");
    assert!(matches!(
        QuantizedConv2d::new(w4, nan, ConvGeometry::default(), quint8(0.1, 0)),
        Err(QuantError::NanInput { index: 0, .. })
    ));
}

#[test]
fn quantized_add_with_a_tiny_output_scale_saturates() {
    // 1.0 + 1.0 with an output scale of 1e-30: 2e30 quanta, saturated at 255
    let one = qact(&arr1(&[1.0f32]).into_dyn(), quint8(0.01, 0));
    let add = QuantizedAdd::new(quint8(1e-30, 0)).expect("add");
    let y = add.forward_many(&[&one, &one]).expect("add");
    assert_eq!(
        y.as_quantized().expect("q").int_repr().as_slice(),
        Some(&[255u8][..])
    );
    assert_eq!(add.forward_reference(&one, &one).expect("reference"), y);
}

#[test]
fn avg_pool_of_a_huge_window_sums_without_wrapping() {
    // 3000 × 3000 values at 255 with zero point 0: the sum, 2.3e9, is past i32::MAX
    let n = 3000;
    let q = QuantizedTensor::<u8>::from_parts(
        ArrayD::from_elem(IxDyn(&[1, 1, n, n]), 255u8),
        quint8(0.1, 0),
    )
    .expect("tensor");
    let y = AvgPool2d::new(n)
        .forward(&Activation::Quantized(q))
        .expect("pool");
    assert_eq!(
        y.as_quantized().expect("q").int_repr().as_slice(),
        Some(&[255u8][..])
    );
}

#[test]
fn conv_and_pool_geometry_overflow_is_a_typed_error() {
    let w = ArrayD::from_elem(IxDyn(&[1, 1, 3, 3]), 1.0f32);
    let x = Activation::Float(ArrayD::zeros(IxDyn(&[1, 1, 4, 4])));
    let huge_padding = Conv2d::new(
        w.clone(),
        None,
        ConvGeometry::default().padding(usize::MAX / 2 + 1, 0),
    )
    .expect("conv");
    assert!(matches!(
        huge_padding.forward(&x),
        Err(QuantError::GeometryOverflow { .. })
    ));
    let huge_dilation =
        Conv2d::new(w, None, ConvGeometry::default().dilation(usize::MAX, 1)).expect("conv");
    assert!(matches!(
        huge_dilation.forward(&x),
        Err(QuantError::GeometryOverflow { .. })
    ));
    let pool = MaxPool2d {
        kernel: [usize::MAX, 1],
        stride: [1, 1],
        padding: [usize::MAX / 2, 0],
    };
    assert!(matches!(
        pool.forward(&x),
        Err(QuantError::GeometryOverflow { .. })
    ));
}

#[test]
fn batch_norm_with_a_negative_or_zero_variance_is_refused() {
    for (var, eps) in [
        (-1.0f32, 1e-5),
        (0.0, 0.0),
        (f32::NAN, 1e-5),
        (f32::INFINITY, 1e-5),
    ] {
        let p = bn(var, eps);
        assert!(
            matches!(
                BatchNorm::new_2d(p.clone()),
                Err(QuantError::InvalidParameter {
                    what: "running_var",
                    ..
                })
            ),
            "var {var} eps {eps}"
        );
        let w = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0f32);
        assert!(matches!(
            fuse_conv_bn_weights(&w, None, &p, ConvLayout::Conv),
            Err(QuantError::InvalidParameter {
                what: "running_var",
                ..
            })
        ));
    }
    // a variance of 0 with a positive eps is fine
    assert!(BatchNorm::new_2d(bn(0.0, 1e-5)).is_ok());
    // non-finite affine parameters
    let mut p = bn(1.0, 1e-5);
    p.weight = Some(vec![f32::INFINITY]);
    assert!(matches!(
        BatchNorm::new_1d(p),
        Err(QuantError::NonFinite { what: "weight", .. })
    ));
}

#[test]
fn fusion_leaves_the_model_unchanged_when_a_group_fails() {
    let conv = Conv2d::new(
        ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0),
        None,
        ConvGeometry::default(),
    )
    .expect("conv");
    let mut m = Sequential::new()
        .with("c", conv.clone())
        .expect("c")
        .with("relu", qnumeric::nn::ReLU)
        .expect("relu")
        .with("c2", conv)
        .expect("c2");
    let before = format!("{m:?}");
    assert!(fuse_modules(&mut m, &[&["c", "relu"], &["c2", "missing"]]).is_err());
    assert_eq!(format!("{m:?}"), before);
}

fn values() -> impl Strategy<Value = f32> {
    prop_oneof![
        -10.0f32..10.0,
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MAX),
        Just(-f32::MAX),
        Just(1e-45f32),
        Just(0.0),
    ]
}

fn array(rank: std::ops::Range<usize>) -> impl Strategy<Value = ArrayD<f32>> {
    prop::collection::vec(0usize..4, rank).prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        prop::collection::vec(values(), n)
            .prop_map(move |data| ArrayD::from_shape_vec(IxDyn(&shape), data).expect("n values"))
    })
}

fn scale() -> impl Strategy<Value = f32> {
    prop_oneof![1e-3f32..10.0, Just(1e-45f32), Just(1e-30), Just(1e38)]
}

fn typed<T>(r: qnumeric::Result<T>) -> bool {
    // Any Ok or Err is fine: reaching here means no panic. Errors must display.
    if let Err(e) = &r {
        assert!(!e.to_string().is_empty());
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::cases(64)))]

    #[test]
    fn float_layers_never_panic(x in array(0..5), w in array(0..5), k in 0usize..4, s in 0usize..3, p in 0usize..3, d in 0usize..3, g in 0usize..3) {
        let x = Activation::Float(x);
        if let Ok(lin) = Linear::new(w.clone(), None) {
            prop_assert!(typed(lin.forward(&x)));
        }
        if let Ok(conv) = Conv2d::new(w, None, ConvGeometry::default().stride(s, s).padding(p, p).dilation(d, d).groups(g)) {
            prop_assert!(typed(conv.forward(&x)));
        }
        let pool = MaxPool2d { kernel: [k, k], stride: [s, s], padding: [p, p] };
        prop_assert!(typed(pool.forward(&x)));
        let avg = AvgPool2d { kernel: [k, k], stride: [s, s], padding: [p, p] };
        prop_assert!(typed(avg.forward(&x)));
    }

    #[test]
    fn quantized_layers_never_panic(x in array(0..5), w in array(0..5), xs in scale(), ws in scale(), os in scale(), zx in 0i64..256, zo in 0i64..256, s in 0usize..3, p in 0usize..3, g in 0usize..3) {
        let (Ok(xp), Ok(wp), Ok(op)) = (
            QParams::new(xs, zx, QDType::QUInt8),
            QParams::new(ws, 0, QDType::QInt8),
            QParams::new(os, zo, QDType::QUInt8),
        ) else {
            return Ok(());
        };
        let Ok(xq) = QuantizedTensor::<u8>::quantize(&x.mapv(|v| if v.is_nan() { 0.0 } else { v }), xp) else {
            return Ok(());
        };
        let xa = Activation::Quantized(xq);
        let Ok(wq) = QuantizedTensor::<i8>::quantize(&w.mapv(|v| if v.is_nan() { 0.0 } else { v }), wp) else {
            return Ok(());
        };
        for mode in [Int8Accumulation::Exact, Int8Accumulation::X86Avx2] {
            if let Ok(lin) = QuantizedLinear::new(wq.clone(), None, op) {
                let lin = lin.with_accumulation(mode);
                prop_assert!(typed(lin.forward(&xa)));
                prop_assert!(typed(lin.forward_reference(&xa)));
            }
            if let Ok(conv) = QuantizedConv2d::new(wq.clone(), None, ConvGeometry::default().stride(s, s).padding(p, p).groups(g), op) {
                let conv = conv.with_accumulation(mode);
                prop_assert!(typed(conv.forward(&xa)));
                prop_assert!(typed(conv.forward_reference(&xa)));
            }
        }
        let add = QuantizedAdd::new(op).expect("quint8");
        prop_assert!(typed(add.forward_many(&[&xa, &xa])));
    }
}

// Issue 17: the last crashes, each a regression test named after what it guards.

fn too_large<T: std::fmt::Debug>(r: qnumeric::Result<T>) -> bool {
    matches!(
        r,
        Err(QuantError::TooLarge { .. } | QuantError::GeometryOverflow { .. })
    )
}

#[test]
fn huge_conv_padding_is_refused_before_allocating() {
    let x = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0f32);
    let w = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0f32);
    for p in [1_000_000usize, 1 << 31, usize::MAX / 4] {
        let geo = ConvGeometry::default().padding(p, p);
        let conv = Conv2d::new(w.clone(), None, geo).expect("conv");
        assert!(
            too_large(conv.forward(&Activation::Float(x.clone()))),
            "{p}"
        );
        let wq = QuantizedTensor::<i8>::quantize(&w, qint8(0.01)).expect("w");
        let q = QuantizedConv2d::new(wq, None, geo, quint8(0.1, 0)).expect("qconv");
        for mode in [Int8Accumulation::Exact, Int8Accumulation::X86Avx2] {
            let q = q.clone().with_accumulation(mode);
            assert!(too_large(q.forward(&qact(&x, quint8(0.1, 0)))), "{p}");
            assert!(
                too_large(q.forward_reference(&qact(&x, quint8(0.1, 0)))),
                "{p}"
            );
        }
    }
}

#[test]
fn conv_positions_overflow_with_a_zero_batch_is_a_typed_error() {
    // oh · ow overflows while n = 0 makes the output empty: positions are checked on their own.
    let x = ArrayD::<f32>::zeros(IxDyn(&[0, 1, 1, 1]));
    let w = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0f32);
    let geo = ConvGeometry::default().padding(1 << 33, 1 << 33);
    let conv = Conv2d::new(w.clone(), None, geo).expect("conv");
    assert!(too_large(conv.forward(&Activation::Float(x.clone()))));
    let wq = QuantizedTensor::<i8>::quantize(&w, qint8(0.01)).expect("w");
    let q = QuantizedConv2d::new(wq, None, geo, quint8(0.1, 0)).expect("qconv");
    let xq = QuantizedTensor::<u8>::quantize(&x, quint8(0.1, 0)).expect("x");
    assert!(too_large(q.forward(&Activation::Quantized(xq))));
}

#[test]
fn max_pool_with_a_huge_padded_window_returns_at_once() {
    let x = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 3.0f32);
    let pool = MaxPool2d {
        kernel: [1 << 40, 1 << 40],
        stride: [1, 1],
        padding: [1 << 39, 1 << 39],
    };
    let t = std::time::Instant::now();
    let y = pool.forward(&Activation::Float(x.clone())).expect("pool");
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert!(y.as_float().expect("float").iter().all(|&v| v == 3.0));
    let avg = AvgPool2d {
        kernel: [1 << 20, 1 << 20],
        stride: [1, 1],
        padding: [1 << 19, 1 << 19],
    };
    let y = avg.forward(&Activation::Float(x)).expect("avg");
    // count_include_pad: 3 / 2^40
    let v = y.as_float().expect("float")[[0, 0, 0, 0]];
    assert_eq!(v, 3.0 / (1u64 << 40) as f32);
    assert!(t.elapsed().as_secs() < 5);
}

#[test]
fn avg_pool_on_an_empty_input_with_huge_planes_is_a_typed_error() {
    // An empty input ndarray accepts (the non-zero lengths multiply to 2^62) whose output
    // shape it would refuse (9 · 2^60 overflows isize): a typed error, not ndarray's panic.
    let x = ArrayD::<f32>::zeros(IxDyn(&[0, 1 << 60, 2, 2]));
    let avg = AvgPool2d {
        kernel: [2, 2],
        stride: [1, 1],
        padding: [1, 1],
    };
    assert!(too_large(avg.forward(&Activation::Float(x.clone()))));
    let max = MaxPool2d {
        kernel: [2, 2],
        stride: [1, 1],
        padding: [1, 1],
    };
    assert!(too_large(max.forward(&Activation::Float(x))));
}

#[test]
fn linear_with_a_huge_output_is_refused_before_allocating() {
    let w = ArrayD::from_elem(IxDyn(&[1 << 16, 1]), 1.0f32);
    let x = ArrayD::from_elem(IxDyn(&[1 << 16, 1]), 1.0f32);
    // 2^32 outputs: beyond the cap
    let lin = Linear::new(w.clone(), None).expect("linear");
    assert!(too_large(lin.forward(&Activation::Float(x.clone()))));
    let wq = QuantizedTensor::<i8>::quantize(&w, qint8(0.01)).expect("w");
    let q = QuantizedLinear::new(wq, None, quint8(0.1, 0)).expect("qlinear");
    assert!(too_large(q.forward(&qact(&x, quint8(0.1, 0)))));
}

#[test]
fn batch_norm_whose_scale_overflows_f32_is_refused() {
    let p = BatchNormParams {
        running_mean: vec![0.0],
        running_var: vec![0.0],
        weight: Some(vec![1e30]),
        bias: None,
        eps: 1e-20,
    };
    assert!(matches!(
        BatchNorm::new_2d(p.clone()),
        Err(QuantError::NonFinite { .. })
    ));
    let w = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1.0f32);
    assert!(matches!(
        fuse_conv_bn_weights(&w, None, &p, ConvLayout::Conv),
        Err(QuantError::NonFinite { .. })
    ));
    // a finite scale times a large weight overflows in the fused weight
    let p = BatchNormParams {
        weight: Some(vec![1e30]),
        eps: 1e-5,
        ..p
    };
    let big = ArrayD::from_elem(IxDyn(&[1, 1, 1, 1]), 1e30f32);
    assert!(matches!(
        fuse_conv_bn_weights(&big, None, &p, ConvLayout::Conv),
        Err(QuantError::NonFinite {
            what: "fused weight",
            ..
        })
    ));
    let lw = ArrayD::from_elem(IxDyn(&[1, 1]), 1e30f32);
    assert!(matches!(
        qnumeric::fusion::fuse_linear_bn_weights(&lw, None, &p),
        Err(QuantError::NonFinite {
            what: "fused weight",
            ..
        })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::cases(64)))]

    #[test]
    fn huge_geometry_never_panics_hangs_or_aborts(
        h in 0usize..3, w in 0usize..3, n in 0usize..3,
        k in prop_oneof![1usize..4, Just(1usize << 20), Just(1usize << 40)],
        p in prop_oneof![0usize..3, Just(1usize << 19), Just(1usize << 31), Just(usize::MAX / 4)],
        s in prop_oneof![1usize..3, Just(usize::MAX)],
        d in prop_oneof![1usize..3, Just(1usize << 31)],
    ) {
        let x = ArrayD::from_elem(IxDyn(&[n, 1, h, w]), 1.0f32);
        let wt = ArrayD::from_elem(IxDyn(&[1, 1, k.min(3), k.min(3)]), 1.0f32);
        if let Ok(conv) = Conv2d::new(wt, None, ConvGeometry::default().stride(s, s).padding(p, p).dilation(d, d)) {
            prop_assert!(typed(conv.forward(&Activation::Float(x.clone()))));
        }
        let pool = MaxPool2d { kernel: [k, k], stride: [s, s], padding: [p, p] };
        prop_assert!(typed(pool.forward(&Activation::Float(x.clone()))));
        let avg = AvgPool2d { kernel: [k, k], stride: [s, s], padding: [p, p] };
        prop_assert!(typed(avg.forward(&Activation::Float(x))));
    }
}
