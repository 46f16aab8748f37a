//! Quantized layers: the integer path against the reference path
//! (`dequantize → f32 op → quantize`), with the measured mismatch asserted, and every error
//! path of the quantized layers.

use ndarray::{ArrayD, IxDyn};
use qnumeric::nn::quantized::{
    DeQuantize, DynamicQuantizedLinear, Mismatch, Quantize, QuantizedAdd, QuantizedConv2d,
    QuantizedLinear,
};
use qnumeric::nn::{Activation, Conv2d, ConvGeometry, Linear, Module};
use qnumeric::{
    AnyQParams, PerChannelQParams, QDType, QParams, QuantError, QuantizedTensor, ZeroPoints,
    choose_dynamic_qparams,
};

/// The crate's generator, in [-1, 1).
struct Lcg(qnumeric::rng::Lcg);

impl Lcg {
    fn seeded(seed: u64) -> Self {
        Lcg(qnumeric::rng::Lcg::new(seed))
    }

    fn next(&mut self) -> f32 {
        self.0.unit_f32() * 2.0 - 1.0
    }

    fn array(&mut self, shape: &[usize], scale: f32) -> ArrayD<f32> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || self.next() * scale)
    }
}

/// Per-channel symmetric qint8 parameters along axis 0 (PyTorch's default weight observer).
fn weight_params(w: &ArrayD<f32>) -> PerChannelQParams {
    let c = w.shape()[0];
    let per = w.len() / c;
    let flat: Vec<f32> = w.iter().copied().collect();
    let scales = (0..c)
        .map(|o| {
            let amax = flat[o * per..(o + 1) * per]
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            (amax / 127.5).max(f32::EPSILON)
        })
        .collect();
    PerChannelQParams::new(scales, vec![0; c], 0, QDType::QInt8).expect("valid")
}

/// quint8 affine parameters covering `[min(x,0), max(x,0)]` on 0..=255.
fn act_params(x: &ArrayD<f32>) -> QParams {
    let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(0.0f32, |m, &v| m.max(v));
    let scale = ((hi - lo) / 255.0).max(f32::EPSILON);
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i64;
    QParams::new(scale, zp, QDType::QUInt8).expect("valid")
}

fn quantized_input(x: &ArrayD<f32>) -> Activation {
    Activation::Quantized(QuantizedTensor::quantize(x, act_params(x)).expect("quantize"))
}

/// Runs integer and reference paths of a layer on `x`, prints and returns the mismatch.
fn measure(
    name: &str,
    layer: &dyn Module,
    reference: impl Fn(&Activation) -> Activation,
    x: &Activation,
) -> Mismatch {
    let int = layer.forward(x).expect("integer path");
    let refr = reference(x);
    let m = Mismatch::between(&int, &refr).expect("comparable");
    println!(
        "{name}: {} of {} differ ({:.4} %), max {} quanta",
        m.differing,
        m.total,
        100.0 * m.fraction(),
        m.max_diff
    );
    m
}

fn linear_case(relu: bool, seed: u64) -> Mismatch {
    let mut r = Lcg::seeded(seed);
    let x = r.array(&[2048, 128], 2.0);
    let w = r.array(&[256, 128], 0.3);
    let b = r.array(&[256], 0.5);
    let float = Linear::new(w, Some(b)).expect("linear");
    let float = if relu { float.with_relu() } else { float };
    let y = float
        .forward(&Activation::Float(x.clone()))
        .expect("float")
        .into_float();
    let wp = weight_params(float.core().weight());
    let q = QuantizedLinear::from_float(&float, wp, act_params(&y)).expect("quantized");
    let xq = quantized_input(&x);
    measure(
        if relu {
            "QuantizedLinearReLU"
        } else {
            "QuantizedLinear"
        },
        &q,
        |a| q.forward_reference(a).expect("reference"),
        &xq,
    )
}

fn conv_case(geo: ConvGeometry, relu: bool, seed: u64) -> Mismatch {
    let mut r = Lcg::seeded(seed);
    let x = r.array(&[64, 8, 16, 16], 1.5);
    let w = r.array(&[16, 8 / geo.groups, 3, 3], 0.4);
    let b = r.array(&[16], 0.3);
    let float = Conv2d::new(w, Some(b), geo).expect("conv");
    let float = if relu { float.with_relu() } else { float };
    let y = float
        .forward(&Activation::Float(x.clone()))
        .expect("float")
        .into_float();
    let wp = weight_params(float.core().weight());
    let q = QuantizedConv2d::from_float(&float, wp, act_params(&y)).expect("quantized");
    let xq = quantized_input(&x);
    measure(
        &format!("QuantizedConv2d{:?}", geo),
        &q,
        |a| q.forward_reference(a).expect("reference"),
        &xq,
    )
}

// Measured figures (written down in docs/models.md), random data, per-channel qint8 weights:
// - QuantizedLinear 2048x128 -> 256 (with and without ReLU): 0 of 524 288 outputs differ;
// - QuantizedConv2d 64x8x16x16, 16 filters 3x3: padding 1: 3 of 262 144 (0.0011 %), groups 2:
//   2 of 262 144 (0.0008 %), stride 2 dilation 2: 0 of 57 344, depthwise-like groups 8:
//   0 of 200 704; every difference is exactly one quantum;
// - QuantizedAdd 1024x512: 0 of 524 288;
// - DynamicQuantizedLinear (float output): largest difference 0.0079 of sx*sw[o].
// The assertions leave room (<= 1 quantum, <= 0.005 % of the outputs) for other
// summation orders of the f32 reference.

#[test]
fn linear_integer_path_matches_reference() {
    let m = linear_case(false, 1);
    assert_eq!(m.total, 2048 * 256);
    assert!(m.max_diff <= 1, "{m:?}");
    assert!(m.fraction() <= 5e-5, "{m:?}");
    let m = linear_case(true, 2);
    assert!(m.max_diff <= 1, "{m:?}");
    assert!(m.fraction() <= 5e-5, "{m:?}");
}

#[test]
fn conv_integer_path_matches_reference() {
    for (i, geo) in [
        ConvGeometry::default().padding(1, 1),
        ConvGeometry::default().padding(1, 1).groups(2),
        ConvGeometry::default()
            .stride(2, 2)
            .dilation(2, 2)
            .padding(2, 1),
        ConvGeometry::default().groups(8),
    ]
    .into_iter()
    .enumerate()
    {
        let m = conv_case(geo, i % 2 == 1, 10 + i as u64);
        assert!(m.max_diff <= 1, "{geo:?}: {m:?}");
        assert!(m.fraction() <= 5e-5, "{geo:?}: {m:?}");
    }
}

#[test]
fn add_integer_path_matches_reference() {
    let mut r = Lcg::seeded(7);
    let a = r.array(&[1024, 512], 3.0);
    let b = r.array(&[1024, 512], 1.0);
    let (qa, qb) = (quantized_input(&a), quantized_input(&b));
    let sum = &a + &b;
    for relu in [false, true] {
        let add = QuantizedAdd::new(act_params(&sum)).expect("add");
        let add = if relu { add.with_relu() } else { add };
        let int = add.forward_many(&[&qa, &qb]).expect("integer");
        let refr = add.forward_reference(&qa, &qb).expect("reference");
        let m = Mismatch::between(&int, &refr).expect("comparable");
        println!(
            "QuantizedAdd relu={relu}: {m:?} ({:.4} %)",
            100.0 * m.fraction()
        );
        assert!(m.max_diff <= 1, "{m:?}");
        assert!(m.fraction() <= 5e-5, "{m:?}");
    }
}

#[test]
fn dynamic_linear_matches_reference_in_float() {
    let mut r = Lcg::seeded(3);
    let x = r.array(&[16, 40], 4.0);
    let w = r.array(&[24, 40], 0.5);
    let b = r.array(&[24], 0.5);
    let float = Linear::new(w, Some(b)).expect("linear");
    let q = DynamicQuantizedLinear::from_float(&float, weight_params(float.core().weight()))
        .expect("dynamic");
    let xa = Activation::Float(x.clone());
    let int = q.forward(&xa).expect("integer").into_float();
    let refr = q.forward_reference(&xa).expect("reference").into_float();
    let xs = q.quantize_input(&xa).expect("quantized input");
    let sx = xs.per_tensor().expect("per tensor").scale();
    // Largest difference in units of the accumulator's quantum sx·sw[o].
    let mut worst = 0.0f64;
    for (i, (a, b)) in int.iter().zip(refr.iter()).enumerate() {
        let quantum = (sx * q.weight_scales()[i % 24]) as f64;
        worst = worst.max((*a as f64 - *b as f64).abs() / quantum);
    }
    println!("DynamicQuantizedLinear: max difference {worst:.2e} quanta");
    assert!(worst < 0.01, "{worst}");
    // The float output is close to the unquantized layer.
    let exact = float.forward(&xa).expect("float").into_float();
    assert!(qnumeric::sqnr(&exact, &int).expect("sqnr") > 30.0);
}

#[test]
fn choose_dynamic_qparams_follows_fbgemm() {
    // [-1, 3] on 0..=127: scale 4/127, zero point from the min side: 127/4 = 31.75 -> 32
    let qp = choose_dynamic_qparams(-1.0, 3.0, true).expect("qparams");
    assert_eq!(qp.scale(), (4.0f64 / 127.0) as f32);
    assert_eq!(qp.zero_point(), 32);
    // all zero: scale 0.1 then raised? no: 0.1 >= 6.1e-5; zero point 0
    let qp = choose_dynamic_qparams(0.0, 0.0, false).expect("qparams");
    assert_eq!((qp.scale(), qp.zero_point()), (0.1, 0));
    // tiny range: scale raised to 6.1e-5
    let qp = choose_dynamic_qparams(0.0, 1e-4, false).expect("qparams");
    assert_eq!(qp.scale(), 6.1e-5f64 as f32);
}

#[test]
fn quantize_and_dequantize_layers() {
    let qp = QParams::new(0.5, 10, QDType::QUInt8).expect("qp");
    let q = Quantize::new(qp).expect("quantize");
    let x = Activation::Float(ndarray::arr1(&[0.0f32, 1.0, -5.0, 200.0]).into_dyn());
    let y = q.forward(&x).expect("forward");
    assert_eq!(
        y.as_quantized().expect("quantized").int_repr().as_slice(),
        Some(&[10u8, 12, 0, 255][..])
    );
    let back = DeQuantize.forward(&y).expect("dequantize");
    assert_eq!(
        back.as_float().expect("float").as_slice(),
        Some(&[0.0f32, 1.0, -5.0, 122.5][..])
    );
    // DeQuantize passes float through
    assert_eq!(DeQuantize.forward(&x).expect("float"), x);
}

fn small_linear() -> (QuantizedTensor<i8>, QParams) {
    let w = ArrayD::from_elem(IxDyn(&[2, 3]), 0.5f32);
    let wq = QuantizedTensor::<i8>::quantize(&w, QParams::new(0.01, 0, QDType::QInt8).expect("qp"))
        .expect("weight");
    (wq, QParams::new(0.1, 0, QDType::QUInt8).expect("qp"))
}

#[test]
fn quantized_layer_errors() {
    let (wq, out) = small_linear();
    // output parameters must be quint8
    let qint8 = QParams::new(0.1, 0, QDType::QInt8).expect("qp");
    assert!(matches!(
        QuantizedLinear::new(wq.clone(), None, qint8),
        Err(QuantError::WrongDType { .. })
    ));
    assert!(matches!(
        Quantize::new(qint8),
        Err(QuantError::WrongDType { .. })
    ));
    assert!(matches!(
        QuantizedAdd::new(qint8),
        Err(QuantError::WrongDType { .. })
    ));
    // bias of the wrong length
    assert!(matches!(
        QuantizedLinear::new(wq.clone(), Some(ArrayD::zeros(IxDyn(&[3]))), out),
        Err(QuantError::ShapeMismatch { .. })
    ));
    // weight of the wrong rank
    let w1 = QuantizedTensor::<i8>::quantize(
        &ArrayD::<f32>::zeros(IxDyn(&[4])),
        QParams::new(0.1, 0, QDType::QInt8).expect("qp"),
    )
    .expect("w");
    assert!(matches!(
        QuantizedLinear::new(w1.clone(), None, out),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        QuantizedConv2d::new(w1.clone(), None, ConvGeometry::default(), out),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        DynamicQuantizedLinear::new(w1, None),
        Err(QuantError::ShapeMismatch { .. })
    ));
    // per-channel weight along axis 1
    let pc = PerChannelQParams::new(vec![0.1; 3], vec![0; 3], 1, QDType::QInt8).expect("pc");
    let w_ax1 =
        QuantizedTensor::<i8>::quantize(&ArrayD::<f32>::zeros(IxDyn(&[2, 3])), pc).expect("w");
    assert!(matches!(
        QuantizedLinear::new(w_ax1, None, out),
        Err(QuantError::UnsupportedQParams { .. })
    ));
    // float zero points
    let fz = PerChannelQParams::with_range(
        vec![0.1; 2],
        ZeroPoints::Float(vec![0.0; 2]),
        0,
        QDType::QInt8.full_range(),
    )
    .expect("pc");
    let w_fz =
        QuantizedTensor::<i8>::from_parts(ndarray::Array::zeros(IxDyn(&[2, 3])), fz).expect("w");
    assert!(matches!(
        QuantizedLinear::new(w_fz, None, out),
        Err(QuantError::UnsupportedQParams { .. })
    ));

    let lin = QuantizedLinear::new(wq.clone(), None, out).expect("linear");
    // float input
    let xf = Activation::Float(ArrayD::zeros(IxDyn(&[1, 3])));
    assert!(matches!(
        lin.forward(&xf),
        Err(QuantError::WrongActivation { .. })
    ));
    assert!(matches!(
        lin.forward_reference(&xf),
        Err(QuantError::WrongActivation { .. })
    ));
    // wrong feature count
    let x4 = Activation::Quantized(
        QuantizedTensor::quantize(&ArrayD::<f32>::zeros(IxDyn(&[1, 4])), out).expect("x"),
    );
    assert!(matches!(
        lin.forward(&x4),
        Err(QuantError::ShapeMismatch { .. })
    ));
    // per-channel quantized activation
    let pcx = PerChannelQParams::new(vec![0.1], vec![0], 0, QDType::QUInt8).expect("pc");
    let xpc = Activation::Quantized(
        QuantizedTensor::quantize(&ArrayD::<f32>::zeros(IxDyn(&[1, 3])), pcx).expect("x"),
    );
    assert!(matches!(
        lin.forward(&xpc),
        Err(QuantError::UnsupportedQParams { .. })
    ));
    // quantize layer on a quantized input
    let q = Quantize::new(out).expect("q");
    assert!(matches!(
        q.forward(&x4),
        Err(QuantError::WrongActivation { .. })
    ));

    // convolution: channel mismatch, bad geometry, float input, kernel larger than input
    let wc = QuantizedTensor::<i8>::quantize(
        &ArrayD::<f32>::zeros(IxDyn(&[4, 2, 3, 3])),
        QParams::new(0.1, 0, QDType::QInt8).expect("qp"),
    )
    .expect("w");
    assert!(matches!(
        QuantizedConv2d::new(wc.clone(), None, ConvGeometry::default().groups(3), out),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert!(matches!(
        QuantizedConv2d::new(wc.clone(), None, ConvGeometry::default().stride(0, 1), out),
        Err(QuantError::InvalidParameter { .. })
    ));
    let conv = QuantizedConv2d::new(wc, None, ConvGeometry::default(), out).expect("conv");
    let x3 = Activation::Quantized(
        QuantizedTensor::quantize(&ArrayD::<f32>::zeros(IxDyn(&[1, 3, 5, 5])), out).expect("x"),
    );
    assert!(matches!(
        conv.forward(&x3),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        conv.forward_reference(&x3),
        Err(QuantError::LengthMismatch { .. })
    ));
    let small = Activation::Quantized(
        QuantizedTensor::quantize(&ArrayD::<f32>::zeros(IxDyn(&[1, 2, 2, 2])), out).expect("x"),
    );
    assert!(matches!(
        conv.forward(&small),
        Err(QuantError::ShapeMismatch { .. })
    ));
    let f4 = Activation::Float(ArrayD::zeros(IxDyn(&[1, 2, 5, 5])));
    assert!(matches!(
        conv.forward(&f4),
        Err(QuantError::WrongActivation { .. })
    ));

    // add: one input, different shapes, float inputs
    let add = QuantizedAdd::new(out).expect("add");
    assert!(matches!(
        add.forward(&x4),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        add.forward_many(&[&x4]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        add.forward_many(&[&x4, &x3]),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        add.forward_reference(&xf, &xf),
        Err(QuantError::WrongActivation { .. })
    ));

    // dynamic: NaN input, wrong features, quantized input, LinearReLU
    let dynl = DynamicQuantizedLinear::new(wq, None).expect("dynamic");
    let nan = Activation::Float(ndarray::arr2(&[[0.0f32, f32::NAN, 1.0]]).into_dyn());
    assert!(matches!(
        dynl.forward(&nan),
        Err(QuantError::NanInput { index: 1, .. })
    ));
    assert!(matches!(
        dynl.forward(&Activation::Float(ArrayD::zeros(IxDyn(&[1, 4])))),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        dynl.forward(&x4),
        Err(QuantError::WrongActivation { .. })
    ));
    let lr = Linear::new(ArrayD::zeros(IxDyn(&[2, 3])), None)
        .expect("linear")
        .with_relu();
    assert!(matches!(
        DynamicQuantizedLinear::from_float(&lr, QParams::new(0.1, 0, QDType::QInt8).expect("qp")),
        Err(QuantError::UnsupportedLayer { .. })
    ));
    assert!(matches!(
        choose_dynamic_qparams(f32::INFINITY, 1.0, true),
        Err(QuantError::NonFinite { .. })
    ));
    assert!(matches!(
        choose_dynamic_qparams(2.0, 1.0, true),
        Err(QuantError::InvalidParameter { .. })
    ));

    // mismatch: different parameters, shapes, float input
    let other = QParams::new(0.2, 0, QDType::QUInt8).expect("qp");
    let x4b = Activation::Quantized(
        QuantizedTensor::quantize(&ArrayD::<f32>::zeros(IxDyn(&[1, 4])), other).expect("x"),
    );
    assert!(matches!(
        Mismatch::between(&x4, &x4b),
        Err(QuantError::QParamsMismatch { .. })
    ));
    assert!(matches!(
        Mismatch::between(&x4, &x3),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Mismatch::between(&x4, &xf),
        Err(QuantError::WrongActivation { .. })
    ));
}

#[test]
fn quantized_weight_access_and_kinds() {
    let (wq, out) = small_linear();
    let lin = QuantizedLinear::new(wq.clone(), None, out)
        .expect("linear")
        .with_relu();
    assert_eq!(lin.kind(), "QuantizedLinearReLU");
    assert!(matches!(
        lin.weight(),
        Some(qnumeric::nn::WeightRef::Quantized(_))
    ));
    assert_eq!(lin.output_qparams(), &out);
    assert_eq!(
        lin.quantized_weight().params(),
        &AnyQParams::PerTensor(QParams::new(0.01, 0, QDType::QInt8).expect("qp"))
    );
}
