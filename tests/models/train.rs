//! Training: every float layer's backward pass against central finite differences (inputs and
//! parameters), the tape's backward through a `Sequential` and through a caller's residual
//! graph, the losses, the optimizers' update rules, QAT fine-tuning and the typed refusals.

use ndarray::{ArrayD, IxDyn};
use qnumeric::QuantError;
use qnumeric::nn::{
    Activation, Add, AvgPool2d, BatchNorm, BatchNormParams, Conv1d, Conv2d, ConvGeometry,
    ConvGeometry1d, Flatten, Identity, LayerHook, Linear, MaxPool2d, Model, Module, ReLU, ReLU6,
    Sequential,
};
use qnumeric::ptq::{PtqConfig, QConfig, prepare};
use qnumeric::qat::{
    FakeQuantize, QatAction, QatConfig, QatConvBn, QatObjective, QatSchedule, prepare_qat,
};
use qnumeric::rng::Lcg;
use qnumeric::train::{Adam, Sgd, Tape, backward, cross_entropy, mse_loss};
use qnumeric::{QDType, QScheme, QSpec};

fn random(shape: &[usize], seed: u64, scale: f32) -> ArrayD<f32> {
    let mut r = Lcg::new(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| (r.unit_f32() - 0.5) * 2.0 * scale)
}

/// Values kept at least `gap` away from each of `kinks` (ReLU's 0, ReLU6's 0 and 6), so a
/// finite difference never straddles a kink.
fn away_from(mut x: ArrayD<f32>, kinks: &[f32], gap: f32) -> ArrayD<f32> {
    x.mapv_inplace(|v| {
        let mut v = v;
        for &k in kinks {
            if (v - k).abs() < gap {
                v = if v >= k { k + gap } else { k - gap };
            }
        }
        v
    });
    x
}

fn f(x: &ArrayD<f32>) -> Activation {
    Activation::Float(x.clone())
}

fn dot(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The loss `Σ r·layer(inputs)`, whose gradient with respect to the output is `r`.
fn layer_loss(layer: &dyn Module, inputs: &[ArrayD<f32>], r: &ArrayD<f32>) -> f64 {
    let acts: Vec<Activation> = inputs.iter().map(f).collect();
    let refs: Vec<&Activation> = acts.iter().collect();
    dot(&layer.forward_many(&refs).expect("forward").into_float(), r)
}

/// Up to 48 indices spread over `len` (every one when fewer).
fn sample(len: usize) -> Vec<usize> {
    if len <= 48 {
        (0..len).collect()
    } else {
        (0..48)
            .map(|k| k * len / 48 + (k * 7) % (len / 48))
            .collect()
    }
}

/// Checks `analytic` against central differences of `loss` at the sampled entries of `x`:
/// the relative error of the sampled gradient vector within `tol`.
fn check(
    what: &str,
    x: &ArrayD<f32>,
    analytic: &ArrayD<f32>,
    h: f32,
    tol: f64,
    loss: &dyn Fn(&ArrayD<f32>) -> f64,
) {
    assert_eq!(analytic.shape(), x.shape(), "{what}: gradient shape");
    assert!(
        analytic.iter().all(|v| v.is_finite()),
        "{what}: non-finite gradient"
    );
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for i in sample(x.len()) {
        let mut plus = x.clone();
        plus.as_slice_mut().expect("standard layout")[i] += h;
        let mut minus = x.clone();
        minus.as_slice_mut().expect("standard layout")[i] -= h;
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * f64::from(h));
        let a = f64::from(analytic.as_slice().expect("standard layout")[i]);
        err += (a - numeric).powi(2);
        norm += numeric.powi(2).max(a.powi(2));
    }
    // A gradient that is zero (a convolution's bias before a training BatchNorm) is checked
    // against an absolute floor: the finite differences' rounding noise.
    let rel = err.sqrt() / norm.sqrt().max(0.1);
    assert!(
        rel <= tol,
        "{what}: relative error {rel:.2e} of the gradient against finite differences"
    );
}

/// A layer's backward pass (input and parameter gradients) against finite differences.
fn check_layer(name: &str, layer: &dyn Module, inputs: &[ArrayD<f32>], h: f32, tol: f64) {
    let acts: Vec<Activation> = inputs.iter().map(f).collect();
    let refs: Vec<&Activation> = acts.iter().collect();
    let y = layer.forward_many(&refs).expect("forward");
    let r = random(y.shape(), 99, 1.0);
    let grads = layer
        .backward(&refs, &y, &r)
        .expect("the layer has a backward pass")
        .expect("backward");
    assert_eq!(grads.inputs.len(), inputs.len(), "{name}: input gradients");
    for (k, g) in grads.inputs.iter().enumerate() {
        check(&format!("{name} input {k}"), &inputs[k], g, h, tol, &|x| {
            let mut xs = inputs.to_vec();
            xs[k] = x.clone();
            layer_loss(layer, &xs, &r)
        });
    }
    let params = layer.params();
    assert_eq!(
        params.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        grads.params.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "{name}: the parameters backward gives gradients for"
    );
    for (pname, p) in &params {
        let g = grads.param(pname).expect("gradient of the parameter");
        check(&format!("{name} {pname}"), p, g, h, tol, &|v| {
            let changed = layer
                .with_params(&[(pname, v.clone())])
                .expect("the layer takes parameters")
                .expect("with_params");
            layer_loss(changed.as_ref(), inputs, &r)
        });
    }
}

#[test]
fn linear_backward_matches_finite_differences() {
    let x = random(&[5, 7], 1, 1.0);
    let fc = Linear::new(random(&[4, 7], 2, 0.5), Some(random(&[4], 3, 0.2))).expect("fc");
    check_layer("Linear", &fc, std::slice::from_ref(&x), 1e-2, 1e-3);
    let fc = Linear::new(random(&[4, 7], 4, 0.5), None).expect("fc");
    check_layer(
        "Linear without bias",
        &fc,
        std::slice::from_ref(&x),
        1e-2,
        1e-3,
    );
    // A fused ReLU: pre-activations kept away from the kink by the bias.
    let w = random(&[3, 7], 5, 0.1);
    let relu = Linear::new(
        w,
        Some(ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, -1.0, 0.8]).expect("b")),
    )
    .expect("fc")
    .with_relu();
    check_layer("LinearReLU", &relu, &[x], 1e-2, 1e-3);
    // Batch axes before the features (a transformer's [batch, tokens, features]).
    let x3 = random(&[2, 3, 7], 6, 1.0);
    let fc = Linear::new(random(&[4, 7], 7, 0.5), Some(random(&[4], 8, 0.2))).expect("fc");
    check_layer("Linear on 3-D input", &fc, &[x3], 1e-2, 1e-3);
}

#[test]
fn conv_backward_matches_finite_differences_with_stride_padding_dilation_groups() {
    let geo = ConvGeometry::default()
        .stride(2, 1)
        .padding(1, 2)
        .dilation(1, 2)
        .groups(2);
    let conv = Conv2d::new(
        random(&[6, 2, 3, 3], 11, 0.4),
        Some(random(&[6], 12, 0.2)),
        geo,
    )
    .expect("conv");
    check_layer(
        "Conv2d",
        &conv,
        &[random(&[2, 4, 7, 6], 13, 1.0)],
        1e-2,
        1e-3,
    );

    let plain = Conv2d::new(
        random(&[3, 2, 3, 3], 14, 0.05),
        Some(ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.9, -0.9, 0.7]).expect("b")),
        ConvGeometry::default().padding(1, 1),
    )
    .expect("conv")
    .with_relu();
    check_layer(
        "ConvReLU2d",
        &plain,
        &[random(&[1, 2, 5, 5], 15, 1.0)],
        1e-2,
        1e-3,
    );

    let depthwise = Conv2d::new(
        random(&[4, 1, 2, 2], 16, 0.5),
        None,
        ConvGeometry::default().stride(2, 2).groups(4),
    )
    .expect("conv");
    check_layer(
        "depthwise Conv2d",
        &depthwise,
        &[random(&[3, 4, 6, 5], 17, 1.0)],
        1e-2,
        1e-3,
    );

    let geo1 = ConvGeometry1d::default()
        .stride(2)
        .padding(1)
        .dilation(2)
        .groups(2);
    let conv1 = Conv1d::new(
        random(&[4, 2, 3], 18, 0.4),
        Some(random(&[4], 19, 0.2)),
        geo1,
    )
    .expect("conv1d");
    check_layer("Conv1d", &conv1, &[random(&[2, 4, 9], 20, 1.0)], 1e-2, 1e-3);
}

#[test]
fn elementwise_pool_and_shape_backward_match_finite_differences() {
    let x = away_from(random(&[2, 3, 4, 4], 21, 8.0), &[0.0, 6.0], 0.05);
    check_layer("ReLU", &ReLU, std::slice::from_ref(&x), 1e-2, 1e-4);
    check_layer("ReLU6", &ReLU6, std::slice::from_ref(&x), 1e-2, 1e-4);
    check_layer(
        "Flatten",
        &Flatten::default(),
        std::slice::from_ref(&x),
        1e-2,
        1e-4,
    );
    check_layer("Identity", &Identity, std::slice::from_ref(&x), 1e-2, 1e-4);
    check_layer(
        "Add",
        &Add,
        &[x.clone(), random(&[2, 3, 4, 4], 22, 1.0)],
        1e-2,
        1e-4,
    );

    // Pools with overlapping windows and padding (piecewise linear: a small step keeps every
    // window's maximum where it is).
    let p = random(&[2, 3, 7, 7], 23, 1.0);
    let max = MaxPool2d {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    check_layer("MaxPool2d", &max, std::slice::from_ref(&p), 1e-4, 1e-2);
    check_layer(
        "MaxPool2d(2)",
        &MaxPool2d::new(2),
        std::slice::from_ref(&p),
        1e-4,
        1e-2,
    );
    let avg = AvgPool2d {
        kernel: [2, 3],
        stride: [1, 2],
        padding: [1, 1],
    };
    check_layer("AvgPool2d", &avg, std::slice::from_ref(&p), 1e-2, 1e-4);
}

fn bn_params(c: usize, seed: u64) -> BatchNormParams {
    let mut r = Lcg::new(seed);
    BatchNormParams {
        running_mean: (0..c).map(|_| r.unit_f32() - 0.5).collect(),
        running_var: (0..c).map(|_| 0.5 + r.unit_f32()).collect(),
        weight: Some((0..c).map(|_| 0.5 + r.unit_f32()).collect()),
        bias: Some((0..c).map(|_| r.unit_f32() - 0.5).collect()),
        eps: 1e-5,
    }
}

#[test]
fn batch_norm_backward_matches_finite_differences_in_both_modes() {
    let x = random(&[4, 3, 3, 2], 31, 1.5);
    let eval = BatchNorm::new_2d(bn_params(3, 32)).expect("bn");
    check_layer(
        "BatchNorm2d (eval)",
        &eval,
        std::slice::from_ref(&x),
        1e-2,
        1e-3,
    );
    let train = BatchNorm::new_2d(bn_params(3, 32))
        .expect("bn")
        .training(0.1)
        .expect("training");
    check_layer(
        "BatchNorm2d (training)",
        &train,
        std::slice::from_ref(&x),
        1e-2,
        2e-3,
    );
    let train1d = BatchNorm::new_1d(bn_params(5, 33))
        .expect("bn")
        .training(0.1)
        .expect("training");
    check_layer(
        "BatchNorm1d (training)",
        &train1d,
        &[random(&[6, 5], 34, 2.0)],
        1e-2,
        2e-3,
    );
}

#[test]
fn batch_norm_training_uses_batch_statistics_and_moves_the_running_ones() {
    let x = random(&[4, 2, 3, 3], 35, 2.0);
    let params = bn_params(2, 36);
    let bn = BatchNorm::new_2d(params.clone())
        .expect("bn")
        .training(0.1)
        .expect("training");
    assert_eq!(bn.momentum(), Some(0.1));
    let y = bn.forward(&f(&x)).expect("forward");
    let g = bn
        .backward(&[&f(&x)], &y, &ArrayD::zeros(IxDyn(y.shape())))
        .expect("backward")
        .expect("backward");
    let y = y.into_float();
    for c in 0..2 {
        let xs: Vec<f64> = x
            .index_axis(ndarray::Axis(1), c)
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        // The output is normalized with the batch's statistics (biased variance) ...
        let ys = y.index_axis(ndarray::Axis(1), c);
        let gamma = f64::from(params.weight.as_ref().expect("w")[c]);
        let beta = f64::from(params.bias.as_ref().expect("b")[c]);
        for (&xv, &yv) in xs.iter().zip(ys.iter()) {
            let want = (xv - mean) / (var + 1e-5).sqrt() * gamma + beta;
            assert!((f64::from(yv) - want).abs() < 1e-4, "{yv} vs {want}");
        }
        // ... and the running ones move by the momentum (unbiased variance, as PyTorch).
        let rm = g
            .buffers
            .iter()
            .find(|(n, _)| *n == "running_mean")
            .expect("running_mean")
            .1[[c]];
        let rv = g
            .buffers
            .iter()
            .find(|(n, _)| *n == "running_var")
            .expect("running_var")
            .1[[c]];
        let want_rm = 0.9 * f64::from(params.running_mean[c]) + 0.1 * mean;
        let want_rv = 0.9 * f64::from(params.running_var[c]) + 0.1 * var * n / (n - 1.0);
        assert!((f64::from(rm) - want_rm).abs() < 1e-5, "{rm} vs {want_rm}");
        assert!((f64::from(rv) - want_rv).abs() < 1e-5, "{rv} vs {want_rv}");
    }
    // Back in eval mode it normalizes with the running statistics again.
    let eval = bn.eval();
    assert_eq!(eval.momentum(), None);
    let plain = BatchNorm::new_2d(params).expect("bn");
    assert_eq!(
        eval.forward(&f(&x)).expect("eval").into_float(),
        plain.forward(&f(&x)).expect("plain").into_float()
    );
    assert!(matches!(
        BatchNorm::new_2d(bn_params(2, 1))
            .expect("bn")
            .training(f32::NAN),
        Err(QuantError::InvalidParameter { .. })
    ));
}

#[test]
fn qat_conv_bn_backward_matches_finite_differences_without_fake_quant() {
    let conv = Conv2d::new(
        random(&[4, 3, 3, 3], 41, 0.3),
        Some(random(&[4], 42, 0.1)),
        ConvGeometry::default().padding(1, 1),
    )
    .expect("conv");
    let fq = FakeQuantize::per_channel(
        QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8),
        0,
        0.01,
    )
    .expect("fq");
    let x = random(&[3, 3, 5, 4], 44, 1.0);
    let plain = QatConvBn::new(conv.clone(), &bn_params(4, 43), false, fq.clone(), None)
        .expect("qat conv-bn");
    plain.apply(QatAction::DisableFakeQuant);
    plain.apply(QatAction::DisableObserver);
    check_layer("QatConvBn", &plain, std::slice::from_ref(&x), 1e-2, 2e-3);

    // With the ReLU (after the batch normalization, whose outputs crowd around 0, so finite
    // differences straddle the kink): exactly the plain backward of the masked gradient.
    let relu = QatConvBn::new(conv, &bn_params(4, 43), true, fq, None).expect("qat conv-bn");
    relu.apply(QatAction::DisableFakeQuant);
    relu.apply(QatAction::DisableObserver);
    let y = plain.forward(&f(&x)).expect("plain").into_float();
    let yr = relu.forward(&f(&x)).expect("relu");
    // (Equal up to rounding: each training forward moves the running statistics the fold
    // starts from.)
    assert!(max_diff(yr.as_float().expect("float"), &y.mapv(|v| v.max(0.0))) < 1e-5);
    let r = random(y.shape(), 45, 1.0);
    let masked = ndarray::Zip::from(&r)
        .and(&y)
        .map_collect(|&g, &v| if v > 0.0 { g } else { 0.0 });
    let gr = relu
        .backward(&[&f(&x)], &yr, &r)
        .expect("backward")
        .expect("backward");
    let yp = plain.forward(&f(&x)).expect("plain");
    let gp = plain
        .backward(&[&f(&x)], &yp, &masked)
        .expect("backward")
        .expect("backward");
    assert!(max_diff(&gr.inputs[0], &gp.inputs[0]) < 1e-4);
    for ((n, a), (m, b)) in gr.params.iter().zip(&gp.params) {
        assert_eq!(n, m);
        assert!(max_diff(a, b) < 1e-4, "{n}");
    }
}

#[test]
fn losses_have_their_values_and_gradients() {
    // Equal logits: the loss is ln(C).
    let (l, _) = cross_entropy(&ArrayD::zeros(IxDyn(&[3, 10])), &[0, 4, 9]).expect("ce");
    assert!((l - 10f64.ln()).abs() < 1e-9);
    let logits = random(&[4, 5], 51, 3.0);
    let labels = [1i64, 0, 4, 2];
    let (_, g) = cross_entropy(&logits, &labels).expect("ce");
    check("cross_entropy", &logits, &g, 1e-2, 1e-3, &|z| {
        cross_entropy(z, &labels).expect("ce").0
    });
    // Large logits stay finite (log-softmax).
    let (l, g) = cross_entropy(
        &ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1e30, -1e30]).expect("z"),
        &[1],
    )
    .expect("ce");
    assert!(l.is_finite() && l > 1e29 && g.iter().all(|v| v.is_finite()));

    let pred = random(&[3, 4], 52, 1.0);
    let target = random(&[3, 4], 53, 1.0);
    let (l, g) = mse_loss(&pred, &target).expect("mse");
    let want: f64 = pred
        .iter()
        .zip(target.iter())
        .map(|(&p, &t)| (f64::from(p) - f64::from(t)).powi(2))
        .sum::<f64>()
        / 12.0;
    assert!((l - want).abs() < 1e-9);
    check("mse_loss", &pred, &g, 1e-2, 1e-3, &|p| {
        mse_loss(p, &target).expect("mse").0
    });
}

/// conv (ReLU) → max pool → flatten → fc1 (ReLU) → fc2.
fn small_cnn() -> Sequential {
    Sequential::new()
        .with(
            "conv",
            Conv2d::new(
                random(&[3, 2, 3, 3], 61, 0.4),
                Some(random(&[3], 62, 0.1)),
                ConvGeometry::default().padding(1, 1),
            )
            .expect("conv")
            .with_relu(),
        )
        .expect("conv")
        .with("pool", MaxPool2d::new(2))
        .expect("pool")
        .with("flatten", Flatten::default())
        .expect("flatten")
        .with(
            "fc1",
            Linear::new(random(&[6, 12], 63, 0.4), Some(random(&[6], 64, 0.1)))
                .expect("fc1")
                .with_relu(),
        )
        .expect("fc1")
        .with(
            "fc2",
            Linear::new(random(&[3, 6], 65, 0.4), Some(random(&[3], 66, 0.1))).expect("fc2"),
        )
        .expect("fc2")
}

/// The loss `Σ r·model(x)`.
fn model_loss<M: Model>(model: &M, x: &ArrayD<f32>, r: &ArrayD<f32>) -> f64 {
    dot(&model.forward(f(x)).expect("forward").into_float(), r)
}

/// The tape's gradients of a model (input and the named parameters) against finite
/// differences.
fn check_model<M: Model + Clone>(what: &str, model: &M, x: &ArrayD<f32>, params: &[(&str, &str)]) {
    let mut tape = Tape::new();
    let y = model.run(f(x), &mut tape).expect("run").into_float();
    assert_eq!(tape.len(), model.layer_names().len());
    let r = random(y.shape(), 98, 1.0);
    let grads = backward(model, &tape, &r).expect("backward");
    let gx = grads.input.as_ref().expect("input gradient");
    check(&format!("{what}: input"), x, gx, 1e-3, 1e-2, &|v| {
        model_loss(model, v, &r)
    });
    for &(layer, pname) in params {
        let g = grads
            .layer(layer)
            .and_then(|lg| lg.param(pname))
            .expect("parameter gradient");
        let l = model.layer(layer).expect("layer");
        let p = l
            .params()
            .into_iter()
            .find(|(n, _)| *n == pname)
            .expect("param")
            .1;
        check(
            &format!("{what}: {layer}.{pname}"),
            &p,
            g,
            1e-3,
            1e-2,
            &|v| {
                let mut m = model.clone();
                let new = l
                    .with_params(&[(pname, v.clone())])
                    .expect("params")
                    .expect("with_params");
                m.replace_layer(layer, new).expect("replace");
                model_loss(&m, x, &r)
            },
        );
    }
}

#[test]
fn the_tape_runs_backward_through_a_sequential() {
    let model = small_cnn();
    let x = random(&[3, 2, 4, 4], 67, 1.0);
    check_model(
        "small CNN",
        &model,
        &x,
        &[
            ("conv", "weight"),
            ("conv", "bias"),
            ("fc1", "weight"),
            ("fc2", "bias"),
        ],
    );
    let mut tape = Tape::new();
    model.run(f(&x), &mut tape).expect("run");
    assert_eq!(tape.names(), ["conv", "pool", "flatten", "fc1", "fc2"]);
}

/// A caller's graph with a residual join: `fc3(fc1(x) + fc2(x))`, `x` feeding two layers.
#[derive(Debug, Clone)]
struct Residual {
    layers: Vec<(String, Box<dyn Module>)>,
}

impl Residual {
    fn new() -> Self {
        let fc = |o: usize, i: usize, s: u64| -> Box<dyn Module> {
            Box::new(
                Linear::new(random(&[o, i], s, 0.5), Some(random(&[o], s + 1, 0.1))).expect("l"),
            )
        };
        Residual {
            layers: vec![
                ("fc1".into(), fc(4, 4, 71)),
                ("relu".into(), Box::new(ReLU)),
                ("fc2".into(), fc(4, 4, 73)),
                ("add".into(), Box::new(Add)),
                ("fc3".into(), fc(2, 4, 75)),
            ],
        }
    }
}

impl Model for Residual {
    fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|(n, _)| n.clone()).collect()
    }

    fn layer(&self, name: &str) -> Option<&dyn Module> {
        self.layers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.as_ref())
    }

    fn replace_layer(
        &mut self,
        name: &str,
        layer: Box<dyn Module>,
    ) -> qnumeric::Result<Box<dyn Module>> {
        let slot = self
            .layers
            .iter_mut()
            .find(|(n, _)| n == name)
            .ok_or(QuantError::NotFound {
                op: "Residual::replace_layer",
                what: "layer",
                name: name.to_string(),
            })?;
        Ok(std::mem::replace(&mut slot.1, layer))
    }

    fn run(&self, input: Activation, hook: &mut dyn LayerHook) -> qnumeric::Result<Activation> {
        let mut step = |name: &str, inputs: &[&Activation]| -> qnumeric::Result<Activation> {
            let layer = self.layer(name).expect("layer");
            let mut y = layer.forward_many(inputs)?;
            hook.after_layer(name, layer, inputs, &mut y)?;
            Ok(y)
        };
        let a = step("fc1", &[&input])?;
        let a = step("relu", &[&a])?;
        let b = step("fc2", &[&input])?;
        let s = step("add", &[&a, &b])?;
        step("fc3", &[&s])
    }
}

#[test]
fn the_tape_runs_backward_through_a_callers_residual_graph() {
    let model = Residual::new();
    let x = away_from(random(&[5, 4], 77, 1.0), &[0.0], 0.0);
    check_model(
        "residual",
        &model,
        &x,
        &[("fc1", "weight"), ("fc2", "weight"), ("fc3", "bias")],
    );
}

#[test]
fn sgd_and_adam_follow_pytorchs_update_rules() {
    // One weight w, loss (w·1 − 0)² = w², gradient 2w.
    let one = || {
        Sequential::new()
            .with(
                "fc",
                Linear::new(ArrayD::from_elem(IxDyn(&[1, 1]), 1.0), None).expect("fc"),
            )
            .expect("fc")
    };
    let x = ArrayD::from_elem(IxDyn(&[1, 1]), 1.0f32);
    let zero = ArrayD::zeros(IxDyn(&[1, 1]));
    let grads_of = |m: &Sequential| {
        let mut tape = Tape::new();
        let y = m.run(f(&x), &mut tape).expect("run").into_float();
        let (_, g) = mse_loss(&y, &zero).expect("mse");
        backward(m, &tape, &g).expect("backward")
    };
    let w = |m: &Sequential| f64::from(m.layer("fc").expect("fc").params()[0].1[[0, 0]]);

    // SGD with momentum 0.9: buf = g, then buf = 0.9·buf + g.
    let mut m = one();
    let mut sgd = Sgd::new(0.1)
        .expect("sgd")
        .with_momentum(0.9, 0.0, false)
        .expect("momentum");
    let (mut wv, mut buf) = (1.0f64, 0.0f64);
    for step in 0..3 {
        let g = grads_of(&m);
        sgd.step(&mut m, &g).expect("step");
        let gv = 2.0 * wv;
        buf = if step == 0 { gv } else { 0.9 * buf + gv };
        wv -= 0.1 * buf;
        assert!(
            (w(&m) - wv).abs() < 1e-6,
            "sgd step {step}: {} vs {wv}",
            w(&m)
        );
    }

    // Adam: bias-corrected moments.
    let mut m = one();
    let mut adam = Adam::new(0.05).expect("adam");
    let (mut wv, mut m1, mut v1) = (1.0f64, 0.0f64, 0.0f64);
    for t in 1..=4 {
        let g = grads_of(&m);
        adam.step(&mut m, &g).expect("step");
        let gv = 2.0 * wv;
        m1 = 0.9 * m1 + 0.1 * gv;
        v1 = 0.999 * v1 + 0.001 * gv * gv;
        let mhat = m1 / (1.0 - 0.9f64.powi(t));
        let vhat = v1 / (1.0 - 0.999f64.powi(t));
        wv -= 0.05 * mhat / (vhat.sqrt() + 1e-8);
        assert!(
            (w(&m) - wv).abs() < 1e-5,
            "adam step {t}: {} vs {wv}",
            w(&m)
        );
    }

    for lr in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(matches!(
            Sgd::new(lr),
            Err(QuantError::InvalidParameter { .. })
        ));
        assert!(matches!(
            Adam::new(lr),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
}

#[test]
fn training_errors_are_typed() {
    let model = small_cnn();
    let x = random(&[2, 2, 4, 4], 81, 1.0);
    // An empty tape, a gradient of the wrong shape.
    assert!(matches!(
        backward(&model, &Tape::new(), &ArrayD::zeros(IxDyn(&[2, 3]))),
        Err(QuantError::EmptyInput { .. })
    ));
    let mut tape = Tape::new();
    model.run(f(&x), &mut tape).expect("run");
    assert!(matches!(
        backward(&model, &tape, &ArrayD::zeros(IxDyn(&[2, 4]))),
        Err(QuantError::ShapeMismatch { .. })
    ));
    // A layer's own backward refuses a gradient of another shape.
    let fc = Linear::new(random(&[3, 4], 82, 1.0), None).expect("fc");
    let xi = f(&random(&[2, 4], 83, 1.0));
    let y = fc.forward(&xi).expect("fc");
    assert!(matches!(
        fc.backward(&[&xi], &y, &ArrayD::zeros(IxDyn(&[2, 4]))),
        Some(Err(QuantError::ShapeMismatch { .. }))
    ));
    // An int8 model has no backward pass: the layer is named.
    let float = Sequential::new()
        .with(
            "fc",
            Linear::new(random(&[3, 4], 84, 1.0), None).expect("fc"),
        )
        .expect("fc")
        .with_quant_stubs()
        .expect("stubs");
    let mut prepared = prepare(float, &PtqConfig::new(QConfig::x86_min_max())).expect("prepare");
    prepared
        .calibrate(&random(&[8, 4], 85, 1.0))
        .expect("calibrate");
    let int8 = prepared.convert().expect("convert");
    let mut tape = Tape::new();
    let y = int8
        .run(f(&random(&[2, 4], 86, 1.0)), &mut tape)
        .expect("run");
    match backward(&int8, &tape, &ArrayD::zeros(IxDyn(y.shape()))) {
        // The last layer (the int8 model's DeQuantize) is the first without one.
        Err(QuantError::UnsupportedLayer { kind, .. }) => {
            assert!(kind.contains("`dequant`"), "{kind}")
        }
        other => panic!("expected UnsupportedLayer, got {other:?}"),
    }
    // Losses.
    let z = random(&[2, 3], 87, 1.0);
    assert!(matches!(
        cross_entropy(&z, &[0, 3]),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert!(matches!(
        cross_entropy(&z, &[0]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        cross_entropy(&z.mapv(|_| f32::NAN), &[0, 1]),
        Err(QuantError::NonFinite { .. })
    ));
    assert!(matches!(
        cross_entropy(&ArrayD::zeros(IxDyn(&[0, 3])), &[]),
        Err(QuantError::EmptyInput { .. })
    ));
    assert!(matches!(
        mse_loss(&z, &ArrayD::zeros(IxDyn(&[3, 2]))),
        Err(QuantError::ShapeMismatch { .. })
    ));
}

/// Two Gaussian blobs per class in 6 dimensions, labels 0..3.
fn blobs(n: usize, seed: u64) -> (ArrayD<f32>, Vec<i64>) {
    let centers = random(&[3, 6], 91, 2.0);
    let noise = random(&[n, 6], seed, 0.8);
    let labels: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
    let x = ArrayD::from_shape_fn(IxDyn(&[n, 6]), |i| {
        centers[[i[0] % 3, i[1]]] + noise[[i[0], i[1]]]
    });
    (x, labels)
}

fn classifier() -> Sequential {
    Sequential::new()
        .with(
            "fc1",
            Linear::new(random(&[16, 6], 92, 0.3), Some(random(&[16], 93, 0.1)))
                .expect("fc1")
                .with_relu(),
        )
        .expect("fc1")
        .with(
            "fc2",
            Linear::new(random(&[3, 16], 94, 0.3), Some(random(&[3], 95, 0.1))).expect("fc2"),
        )
        .expect("fc2")
        .with_quant_stubs()
        .expect("stubs")
}

#[test]
fn fine_tune_trains_the_fake_quantized_model_and_reports_its_run() {
    let (x, y) = blobs(96, 96);
    let mut qat =
        prepare_qat(classifier(), &QatConfig::x86_default().expect("config")).expect("prepare_qat");
    let schedule = QatSchedule {
        epochs: 6,
        batch_size: 16,
        learning_rate: 1e-2,
        freeze_observers_after: Some(3),
        time_budget: None,
        seed: 3,
    };
    let run = qat
        .fine_tune(&x, QatObjective::Labels(&y), &schedule)
        .expect("fine_tune");
    assert_eq!(run.epochs, 6);
    assert_eq!(run.steps, 6 * 6);
    assert!(!run.stopped_by_budget);
    assert_eq!(run.epoch_losses.len(), 6);
    assert!(
        run.epoch_losses[5] < run.epoch_losses[0] * 0.5,
        "the loss falls: {:?}",
        run.epoch_losses
    );
    // Observers were frozen after epoch 3: a forward no longer moves the parameters.
    let fq = qat
        .qat_layer("fc1")
        .expect("fc1")
        .weight_fake_quant()
        .expect("fq");
    assert!(!fq.observer_enabled());
    // The trained model converts, and the int8 model classifies the blobs.
    let int8 = qat.convert().expect("convert");
    let logits = int8.forward(f(&x)).expect("int8").into_float();
    let correct = (0..96)
        .filter(|&i| {
            let row = logits.index_axis(ndarray::Axis(0), i);
            let best = (0..3)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .expect("class");
            best as i64 == y[i]
        })
        .count();
    assert!(correct >= 90, "{correct}/96 correct after QAT");

    // Distillation needs no labels: the targets are the float model's outputs.
    let targets = classifier().forward(f(&x)).expect("float").into_float();
    let mut qat =
        prepare_qat(classifier(), &QatConfig::x86_default().expect("config")).expect("prepare_qat");
    let run = qat
        .fine_tune(&x, QatObjective::Distill(&targets), &schedule)
        .expect("distill");
    assert!(run.epoch_losses.iter().all(|l| l.is_finite() && *l >= 0.0));

    // A zero time budget stops after the first step.
    let mut qat =
        prepare_qat(classifier(), &QatConfig::x86_default().expect("config")).expect("prepare_qat");
    let run = qat
        .fine_tune(
            &x,
            QatObjective::Labels(&y),
            &QatSchedule {
                time_budget: Some(std::time::Duration::ZERO),
                ..schedule.clone()
            },
        )
        .expect("budget");
    assert!(run.stopped_by_budget);
    assert_eq!(run.steps, 1);
}

#[test]
fn fine_tune_refuses_bad_schedules_and_data() {
    let (x, y) = blobs(12, 97);
    let mut qat =
        prepare_qat(classifier(), &QatConfig::x86_default().expect("config")).expect("prepare_qat");
    let ok = QatSchedule::default();
    for bad in [
        QatSchedule {
            epochs: 0,
            ..ok.clone()
        },
        QatSchedule {
            batch_size: 0,
            ..ok.clone()
        },
        QatSchedule {
            learning_rate: f64::NAN,
            ..ok.clone()
        },
        QatSchedule {
            learning_rate: 0.0,
            ..ok.clone()
        },
    ] {
        assert!(matches!(
            qat.fine_tune(&x, QatObjective::Labels(&y), &bad),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
    assert!(matches!(
        qat.fine_tune(&x, QatObjective::Labels(&y[..5]), &ok),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        qat.fine_tune(
            &ArrayD::zeros(IxDyn(&[0, 6])),
            QatObjective::Labels(&[]),
            &ok
        ),
        Err(QuantError::EmptyInput { .. })
    ));
    let bad_labels: Vec<i64> = y.iter().map(|l| l + 7).collect();
    assert!(
        qat.fine_tune(&x, QatObjective::Labels(&bad_labels), &ok)
            .is_err()
    );
}
