//! Conv/Linear-BatchNorm fusion: fused layers compute conv-then-BN (1d, 2d, 3d, transposed,
//! grouped transposed), module fusion by names and automatic, and every fusion error.

use ndarray::{ArrayD, IxDyn};
use qnumeric::QuantError;
use qnumeric::fusion::{
    ConvLayout, FusionPattern, fuse_auto, fuse_conv_bn_weights, fuse_linear_bn_weights,
    fuse_modules,
};
use qnumeric::nn::{
    Activation, BatchNorm, BatchNormParams, Conv1d, Conv2d, ConvGeometry, ConvGeometry1d, Flatten,
    Linear, Model, Module, ReLU, Sequential,
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

    fn array(&mut self, shape: &[usize]) -> ArrayD<f32> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || self.next())
    }

    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * (self.next() + 1.0) / 2.0)
            .collect()
    }

    fn bn(&mut self, c: usize) -> BatchNormParams {
        BatchNormParams {
            running_mean: self.vec(c, -0.5, 0.5),
            running_var: self.vec(c, 0.2, 2.0),
            weight: Some(self.vec(c, 0.5, 1.5)),
            bias: Some(self.vec(c, -0.5, 0.5)),
            eps: 1e-5,
        }
    }
}

/// BN in f64 on a channels-first array (axis 1).
fn bn_reference(y: &ArrayD<f64>, bn: &BatchNormParams) -> ArrayD<f64> {
    let mut out = y.clone();
    for (idx, v) in out.indexed_iter_mut() {
        let c = idx[1];
        let r = 1.0 / (bn.running_var[c] as f64 + bn.eps).sqrt();
        let w = bn.weight.as_ref().map_or(1.0, |w| w[c] as f64);
        let b = bn.bias.as_ref().map_or(0.0, |b| b[c] as f64);
        *v = (*v - bn.running_mean[c] as f64) * r * w + b;
    }
    out
}

/// Naive N-d convolution (stride 1, no padding), f64. Weight `[out, in/g, k...]`.
fn conv_nd(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    groups: usize,
) -> ArrayD<f64> {
    let (n, cin) = (x.shape()[0], x.shape()[1]);
    let cout = w.shape()[0];
    let sp = x.ndim() - 2;
    let ks: Vec<usize> = w.shape()[2..].to_vec();
    let os: Vec<usize> = (0..sp).map(|d| x.shape()[2 + d] - ks[d] + 1).collect();
    let mut shape = vec![n, cout];
    shape.extend(&os);
    let (cg, og) = (cin / groups, cout / groups);
    ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
        let (bi, o) = (idx[0], idx[1]);
        let g = o / og;
        let mut acc = b.map_or(0.0, |b| b[[o]] as f64);
        for ci in 0..cg {
            for (kidx, &wv) in w
                .index_axis(ndarray::Axis(0), o)
                .index_axis(ndarray::Axis(0), ci)
                .indexed_iter()
            {
                let mut xi = vec![bi, g * cg + ci];
                for d in 0..sp {
                    xi.push(idx[2 + d] + kidx[d]);
                }
                acc += wv as f64 * x[IxDyn(&xi)] as f64;
            }
        }
        acc
    })
}

/// Naive transposed N-d convolution (stride 1, no padding), f64. Weight `[in, out/g, k...]`.
fn conv_transpose_nd(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    groups: usize,
) -> ArrayD<f64> {
    let (n, cin) = (x.shape()[0], x.shape()[1]);
    let og = w.shape()[1];
    let cout = og * groups;
    let ig = cin / groups;
    let sp = x.ndim() - 2;
    let ks: Vec<usize> = w.shape()[2..].to_vec();
    let mut shape = vec![n, cout];
    shape.extend((0..sp).map(|d| x.shape()[2 + d] + ks[d] - 1));
    let mut out = ArrayD::<f64>::zeros(IxDyn(&shape));
    for (xidx, &xv) in x.indexed_iter() {
        let (bi, i) = (xidx[0], xidx[1]);
        let g = i / ig;
        for j in 0..og {
            let wk = w.index_axis(ndarray::Axis(0), i);
            let wk = wk.index_axis(ndarray::Axis(0), j);
            for (kidx, &wv) in wk.indexed_iter() {
                let mut oi = vec![bi, g * og + j];
                for d in 0..sp {
                    oi.push(xidx[2 + d] + kidx[d]);
                }
                out[IxDyn(&oi)] += xv as f64 * wv as f64;
            }
        }
    }
    if let Some(b) = b {
        for (idx, v) in out.indexed_iter_mut() {
            *v += b[[idx[1]]] as f64;
        }
    }
    out
}

fn assert_close(a: &ArrayD<f64>, b: &ArrayD<f64>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= 1e-5 + 1e-5 * y.abs(), "{what}: {x} vs {y}");
    }
}

fn check_conv(x_shape: &[usize], w_shape: &[usize], groups: usize, transpose: bool, seed: u64) {
    let mut r = Lcg::seeded(seed);
    let x = r.array(x_shape);
    let w = r.array(w_shape);
    let out = if transpose {
        w_shape[1] * groups
    } else {
        w_shape[0]
    };
    let b = r.array(&[out]);
    let bn = r.bn(out);
    for bias in [Some(&b), None] {
        let (fw, fb) = fuse_conv_bn_weights(
            &w,
            bias,
            &bn,
            if transpose {
                ConvLayout::Transposed { groups }
            } else {
                ConvLayout::Conv
            },
        )
        .expect("fuse");
        assert_eq!(fw.shape(), w.shape());
        let (fused, unfused) = if transpose {
            (
                conv_transpose_nd(&x, &fw, Some(&fb), groups),
                conv_transpose_nd(&x, &w, bias, groups),
            )
        } else {
            (
                conv_nd(&x, &fw, Some(&fb), groups),
                conv_nd(&x, &w, bias, groups),
            )
        };
        assert_close(
            &fused,
            &bn_reference(&unfused, &bn),
            &format!("{w_shape:?} t={transpose} g={groups}"),
        );
    }
}

#[test]
fn fused_conv_equals_conv_then_bn() {
    check_conv(&[2, 3, 9], &[6, 3, 3], 1, false, 1); // Conv1d
    check_conv(&[2, 4, 6, 5], &[8, 2, 3, 3], 2, false, 2); // grouped Conv2d
    check_conv(&[1, 2, 4, 5, 4], &[4, 2, 2, 3, 2], 1, false, 3); // Conv3d
    check_conv(&[2, 3, 5, 4], &[3, 5, 3, 2], 1, true, 4); // ConvTranspose2d
    check_conv(&[2, 4, 5], &[4, 3, 3], 2, true, 5); // grouped ConvTranspose1d
    check_conv(&[1, 6, 3, 4], &[6, 2, 2, 2], 3, true, 6); // grouped ConvTranspose2d
    check_conv(&[1, 4, 3, 3, 3], &[4, 1, 2, 2, 2], 4, true, 7); // depthwise ConvTranspose3d
}

#[test]
fn fused_linear_equals_linear_then_bn() {
    let mut r = Lcg::seeded(9);
    let x = r.array(&[5, 7]);
    let w = r.array(&[4, 7]);
    let b = r.array(&[4]);
    for bn in [r.bn(4), r.bn(1)] {
        let (fw, fb) = fuse_linear_bn_weights(&w, Some(&b), &bn).expect("fuse");
        let y = Linear::new(w.clone(), Some(b.clone())).expect("linear");
        let y = y
            .forward(&Activation::Float(x.clone()))
            .expect("y")
            .into_float();
        let f = Linear::new(fw, Some(fb)).expect("fused");
        let f = f
            .forward(&Activation::Float(x.clone()))
            .expect("f")
            .into_float();
        let mut reference = y.mapv(f64::from);
        for ((_, o), v) in reference.indexed_iter_mut().map(|(i, v)| ((i[0], i[1]), v)) {
            let c = if bn.num_features() == 1 { 0 } else { o };
            let rr = 1.0 / (bn.running_var[c] as f64 + bn.eps).sqrt();
            *v = (*v - bn.running_mean[c] as f64) * rr * bn.weight.as_ref().expect("w")[c] as f64
                + bn.bias.as_ref().expect("b")[c] as f64;
        }
        assert_close(&f.mapv(f64::from), &reference, "linear");
    }
}

#[test]
fn pytorch_defaults_for_missing_pieces() {
    // no affine parameters: gamma 1, beta 0; no bias: zeros
    let w = ArrayD::from_elem(IxDyn(&[2, 1, 1]), 2.0f32);
    let bn = BatchNormParams {
        running_mean: vec![1.0, -1.0],
        running_var: vec![3.0, 0.0],
        weight: None,
        bias: None,
        eps: 1.0,
    };
    let (fw, fb) = fuse_conv_bn_weights(&w, None, &bn, ConvLayout::Conv).expect("fuse");
    assert_eq!(fw.as_slice(), Some(&[1.0f32, 2.0][..]));
    assert_eq!(fb.as_slice(), Some(&[-0.5f32, 1.0][..]));
}

fn model(seed: u64) -> Sequential {
    let mut r = Lcg::seeded(seed);
    let geo = ConvGeometry::default().padding(1, 1);
    Sequential::new()
        .with(
            "conv1",
            Conv2d::new(r.array(&[4, 2, 3, 3]), Some(r.array(&[4])), geo).expect("c"),
        )
        .expect("push")
        .with("bn1", BatchNorm::new_2d(r.bn(4)).expect("bn"))
        .expect("push")
        .with("relu1", ReLU)
        .expect("push")
        .with(
            "conv2",
            Conv2d::new(r.array(&[3, 4, 3, 3]), None, geo).expect("c"),
        )
        .expect("push")
        .with("bn2", BatchNorm::new_2d(r.bn(3)).expect("bn"))
        .expect("push")
        .with(
            "conv3",
            Conv2d::new(r.array(&[3, 3, 1, 1]), None, ConvGeometry::default()).expect("c"),
        )
        .expect("push")
        .with("relu3", ReLU)
        .expect("push")
        .with("flatten", Flatten::default())
        .expect("push")
        .with(
            "fc1",
            Linear::new(r.array(&[5, 48]), Some(r.array(&[5]))).expect("l"),
        )
        .expect("push")
        .with("bnf", BatchNorm::new_1d(r.bn(5)).expect("bn"))
        .expect("push")
        .with("fc2", Linear::new(r.array(&[6, 5]), None).expect("l"))
        .expect("push")
        .with("relu4", ReLU)
        .expect("push")
}

fn run(m: &Sequential, x: &ArrayD<f32>) -> ArrayD<f32> {
    m.forward(Activation::Float(x.clone()))
        .expect("forward")
        .into_float()
}

fn kinds(m: &Sequential) -> Vec<&'static str> {
    m.iter().map(|(_, l)| l.kind()).collect()
}

fn assert_same_function(a: &ArrayD<f32>, b: &ArrayD<f32>) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= 1e-4 + 1e-4 * y.abs(), "{x} vs {y}");
    }
}

#[test]
fn fuse_by_names_every_pattern() {
    let m = model(11);
    let x = Lcg::seeded(12).array(&[3, 2, 4, 4]);
    let before = run(&m, &x);
    let mut f = m.clone();
    let report = fuse_modules(
        &mut f,
        &[
            &["conv1", "bn1", "relu1"],
            &["conv2", "bn2"],
            &["conv3", "relu3"],
            &["fc1", "bnf"],
            &["fc2", "relu4"],
        ],
    )
    .expect("fuse");
    let patterns: Vec<FusionPattern> = report.iter().map(|g| g.pattern).collect();
    assert_eq!(
        patterns,
        [
            FusionPattern::ConvBnRelu,
            FusionPattern::ConvBn,
            FusionPattern::ConvRelu,
            FusionPattern::LinearBn,
            FusionPattern::LinearRelu
        ]
    );
    assert_eq!(
        kinds(&f),
        [
            "ConvReLU2d",
            "Identity",
            "Identity",
            "Conv2d",
            "Identity",
            "ConvReLU2d",
            "Identity",
            "Flatten",
            "Linear",
            "Identity",
            "LinearReLU",
            "Identity"
        ]
    );
    assert!(
        f.layer("conv2").and_then(|l| l.bias()).is_some(),
        "BN folding adds a bias"
    );
    assert_same_function(&run(&f, &x), &before);
}

#[test]
fn fuse_auto_finds_every_pattern() {
    let m = model(21);
    let x = Lcg::seeded(22).array(&[2, 2, 4, 4]);
    let mut f = m.clone();
    let report = fuse_auto(&mut f).expect("auto");
    let names: Vec<String> = report.iter().map(|g| g.names.join("+")).collect();
    assert_eq!(
        names,
        [
            "conv1+bn1+relu1",
            "conv2+bn2",
            "conv3+relu3",
            "fc1+bnf",
            "fc2+relu4"
        ]
    );
    assert_same_function(&run(&f, &x), &run(&m, &x));
    // nothing left to fuse
    assert!(fuse_auto(&mut f).expect("auto").is_empty());
}

#[test]
fn fuse_conv1d_bn1d() {
    let mut r = Lcg::seeded(31);
    let mut m = Sequential::new()
        .with(
            "c",
            Conv1d::new(
                r.array(&[4, 1, 3]),
                None,
                ConvGeometry1d::default()
                    .stride(1)
                    .padding(1)
                    .dilation(1)
                    .groups(2),
            )
            .expect("c"),
        )
        .expect("p")
        .with("bn", BatchNorm::new_1d(r.bn(4)).expect("bn"))
        .expect("p")
        .with("relu", ReLU)
        .expect("p");
    let x = r.array(&[2, 2, 7]);
    let before = run(&m, &x);
    let report = fuse_auto(&mut m).expect("auto");
    assert_eq!(report[0].pattern, FusionPattern::ConvBnRelu);
    assert_eq!(m.layer("c").map(|l| l.kind()), Some("ConvReLU1d"));
    assert_same_function(&run(&m, &x), &before);
}

fn assert_unchanged(before: &Sequential, after: &Sequential, x: &ArrayD<f32>) {
    assert_eq!(kinds(before), kinds(after));
    assert_eq!(run(before, x), run(after, x));
}

#[test]
fn fusion_errors_leave_the_model_unchanged() {
    let m = model(41);
    let x = Lcg::seeded(42).array(&[1, 2, 4, 4]);
    let mut f = m.clone();
    // a layer that is not there (after a valid group: nothing is applied)
    let e = fuse_modules(&mut f, &[&["conv1", "bn1"], &["conv2", "nope"]]);
    assert!(matches!(e, Err(QuantError::NotFound { ref name, .. }) if name == "nope"));
    assert_unchanged(&m, &f, &x);
    // wrong order
    let e = fuse_modules(&mut f, &[&["bn1", "conv1"]]);
    assert!(matches!(e, Err(QuantError::NotFusable { .. })));
    // not a pattern: ReLU first, a single layer, four layers
    for group in [
        &["relu1", "conv2"][..],
        &["conv1"][..],
        &["conv1", "bn1", "relu1", "conv2"][..],
    ] {
        assert!(matches!(
            fuse_modules(&mut f, &[group]),
            Err(QuantError::NotFusable { .. })
        ));
    }
    // not consecutive
    let e = fuse_modules(&mut f, &[&["conv1", "relu3"]]);
    assert!(matches!(e, Err(QuantError::NotFusable { .. })));
    // Linear with BatchNorm2d / Conv2d with BatchNorm1d
    let mut r = Lcg::seeded(43);
    let mut g = Sequential::new()
        .with(
            "c",
            Conv2d::new(r.array(&[4, 1, 1, 1]), None, ConvGeometry::default()).expect("c"),
        )
        .expect("p")
        .with("bn1d", BatchNorm::new_1d(r.bn(4)).expect("bn"))
        .expect("p");
    assert!(matches!(
        fuse_modules(&mut g, &[&["c", "bn1d"]]),
        Err(QuantError::NotFusable { .. })
    ));
    assert!(fuse_auto(&mut g).expect("auto").is_empty());
    // mismatched channels: by names and automatically
    let mut h = Sequential::new()
        .with(
            "c",
            Conv2d::new(r.array(&[4, 1, 1, 1]), None, ConvGeometry::default()).expect("c"),
        )
        .expect("p")
        .with("bn", BatchNorm::new_2d(r.bn(5)).expect("bn"))
        .expect("p");
    let h0 = h.clone();
    assert!(matches!(
        fuse_modules(&mut h, &[&["c", "bn"]]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        fuse_auto(&mut h),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert_eq!(kinds(&h), kinds(&h0));
    let mut l = Sequential::new()
        .with("fc", Linear::new(r.array(&[3, 2]), None).expect("l"))
        .expect("p")
        .with("bn", BatchNorm::new_1d(r.bn(2)).expect("bn"))
        .expect("p");
    assert!(matches!(
        fuse_modules(&mut l, &[&["fc", "bn"]]),
        Err(QuantError::LengthMismatch { .. })
    ));
    // fusing twice: the conv is already fused
    let mut f2 = m.clone();
    fuse_modules(&mut f2, &[&["conv3", "relu3"]]).expect("first");
    let e = fuse_modules(&mut f2, &[&["conv3", "relu3"]]);
    assert!(matches!(e, Err(QuantError::NotFusable { .. })));
    assert_unchanged(&m, &f, &x);
}

#[test]
fn weight_level_errors() {
    let mut r = Lcg::seeded(51);
    let bn4 = r.bn(4);
    let w = r.array(&[4, 2, 3]);
    // rank < 2
    assert!(matches!(
        fuse_conv_bn_weights(&r.array(&[4]), None, &bn4, ConvLayout::Conv),
        Err(QuantError::ShapeMismatch { .. })
    ));
    // groups 0; transposed groups not dividing the input channels
    assert!(matches!(
        fuse_conv_bn_weights(&w, None, &bn4, ConvLayout::Transposed { groups: 0 }),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert!(matches!(
        fuse_conv_bn_weights(
            &r.array(&[3, 2, 3]),
            None,
            &bn4,
            ConvLayout::Transposed { groups: 2 }
        ),
        Err(QuantError::InvalidParameter { .. })
    ));
    // BN channels != output channels (also transposed: out = 2 * groups)
    assert!(matches!(
        fuse_conv_bn_weights(&w, None, &r.bn(3), ConvLayout::Conv),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        fuse_conv_bn_weights(&w, None, &bn4, ConvLayout::Transposed { groups: 1 }),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(fuse_conv_bn_weights(&w, None, &bn4, ConvLayout::Transposed { groups: 2 }).is_ok());
    // bias of the wrong shape
    assert!(matches!(
        fuse_conv_bn_weights(&w, Some(&r.array(&[3])), &bn4, ConvLayout::Conv),
        Err(QuantError::ShapeMismatch { .. })
    ));
    // inconsistent BN lists, bad eps
    let mut bad = bn4.clone();
    bad.running_var.pop();
    assert!(matches!(
        fuse_conv_bn_weights(&w, None, &bad, ConvLayout::Conv),
        Err(QuantError::LengthMismatch { .. })
    ));
    let mut bad = bn4.clone();
    bad.weight = Some(vec![1.0; 2]);
    assert!(matches!(
        fuse_linear_bn_weights(&r.array(&[4, 2]), None, &bad),
        Err(QuantError::LengthMismatch { .. })
    ));
    for eps in [-1.0, f64::NAN, f64::INFINITY] {
        let mut bad = bn4.clone();
        bad.eps = eps;
        assert!(matches!(
            fuse_conv_bn_weights(&w, None, &bad, ConvLayout::Conv),
            Err(QuantError::InvalidParameter { .. })
        ));
        assert!(matches!(
            BatchNorm::new_2d(bad),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
    // linear: not 2-D, BN neither out nor 1 features, bias wrong
    assert!(matches!(
        fuse_linear_bn_weights(&w, None, &bn4),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fuse_linear_bn_weights(&r.array(&[3, 2]), None, &bn4),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        fuse_linear_bn_weights(&r.array(&[4, 2]), Some(&r.array(&[2])), &bn4),
        Err(QuantError::ShapeMismatch { .. })
    ));
}
