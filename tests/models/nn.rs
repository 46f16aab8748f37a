//! Float layers, the sequential container, a caller's own graph through the `Model` trait
//! (prepared, calibrated and converted by PTQ), and every error path of `nn` and `ptq`.

use ndarray::{ArrayD, IxDyn, arr1, arr2};
use qnumeric::nn::quantized::{Quantize, QuantizedAdd};
use qnumeric::nn::{
    Activation, Add, AvgPool2d, BatchNorm, BatchNormParams, Conv1d, Conv2d, ConvGeometry,
    ConvGeometry1d, DeQuantStub, Flatten, Identity, LayerHook, Linear, MaxPool2d, Model, Module,
    QuantStub, ReLU, ReLU6, Sequential,
};
use qnumeric::ptq::{LayerPlan, PtqConfig, QConfig, prepare, quantize_dynamic};
use qnumeric::{QDType, QParams, QuantError, QuantizedTensor, Result};

fn f(a: ArrayD<f32>) -> Activation {
    Activation::Float(a)
}

fn q(a: &ArrayD<f32>, scale: f32, zp: i64) -> Activation {
    let qp = QParams::new(scale, zp, QDType::QUInt8).expect("qp");
    Activation::Quantized(QuantizedTensor::quantize(a, qp).expect("quantize"))
}

fn ramp(shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(
        IxDyn(shape),
        (0..n).map(|i| i as f32 * 0.25 - 2.0).collect(),
    )
    .expect("shape")
}

#[test]
fn conv2d_against_hand_computed_values() {
    // 1x1x3x3 input, 2x2 kernel of ones, stride 1: sums of 2x2 windows
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 3, 3]), (1..=9).map(|v| v as f32).collect())
        .expect("x");
    let w = ArrayD::from_elem(IxDyn(&[1, 1, 2, 2]), 1.0f32);
    let c = Conv2d::new(
        w.clone(),
        Some(arr1(&[0.5f32]).into_dyn()),
        ConvGeometry::default(),
    )
    .expect("c");
    let y = c.forward(&f(x.clone())).expect("y").into_float();
    assert_eq!(y.as_slice(), Some(&[12.5f32, 16.5, 24.5, 28.5][..]));
    // padding 1, stride 2: corners
    let c = Conv2d::new(
        w.clone(),
        None,
        ConvGeometry::default().padding(1, 1).stride(2, 2),
    )
    .expect("c");
    let y = c.forward(&f(x.clone())).expect("y").into_float();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.as_slice(), Some(&[1.0f32, 5.0, 11.0, 28.0][..]));
    // dilation 2 on 3x3: one output, the four corners
    let c = Conv2d::new(w, None, ConvGeometry::default().dilation(2, 2)).expect("c");
    let y = c.forward(&f(x)).expect("y").into_float();
    assert_eq!(y.as_slice(), Some(&[1.0f32 + 3.0 + 7.0 + 9.0][..]));
    // groups: depthwise 2 channels, each scaled by its own weight, with fused ReLU
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 1, 2]), vec![1.0, -2.0, 3.0, 4.0]).expect("x");
    let w = ArrayD::from_shape_vec(IxDyn(&[2, 1, 1, 1]), vec![2.0, -1.0]).expect("w");
    let c = Conv2d::new(w, None, ConvGeometry::default().groups(2))
        .expect("c")
        .with_relu();
    assert_eq!(c.kind(), "ConvReLU2d");
    let y = c.forward(&f(x)).expect("y").into_float();
    assert_eq!(y.as_slice(), Some(&[2.0f32, 0.0, 0.0, 0.0][..]));
}

#[test]
fn conv1d_linear_bn_and_shape_layers() {
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 4]), vec![1.0, 2.0, 3.0, 4.0]).expect("x");
    let c = Conv1d::new(
        ArrayD::from_elem(IxDyn(&[1, 1, 2]), 1.0),
        None,
        ConvGeometry1d::default()
            .stride(2)
            .padding(0)
            .dilation(1)
            .groups(1),
    )
    .expect("c");
    assert_eq!(
        c.forward(&f(x)).expect("y").into_float().as_slice(),
        Some(&[3.0f32, 7.0][..])
    );

    let l = Linear::new(
        arr2(&[[1.0f32, 2.0], [-1.0, 0.0]]).into_dyn(),
        Some(arr1(&[0.5f32, 0.0]).into_dyn()),
    )
    .expect("l");
    assert_eq!((l.in_features(), l.out_features()), (2, 2));
    let y = l
        .forward(&f(arr2(&[[1.0f32, 1.0]]).into_dyn()))
        .expect("y")
        .into_float();
    assert_eq!(y.as_slice(), Some(&[3.5f32, -1.0][..]));

    let bn = BatchNorm::new_1d(BatchNormParams {
        running_mean: vec![1.0, 0.0],
        running_var: vec![4.0, 1.0],
        weight: Some(vec![2.0, 1.0]),
        bias: None,
        eps: 0.0,
    })
    .expect("bn");
    assert_eq!(bn.kind(), "BatchNorm1d");
    let y = bn
        .forward(&f(arr2(&[[3.0f32, 5.0]]).into_dyn()))
        .expect("y")
        .into_float();
    assert_eq!(y.as_slice(), Some(&[2.0f32, 5.0][..]));

    let x = ramp(&[1, 1, 4, 4]);
    let mp = MaxPool2d::new(2)
        .forward(&f(x.clone()))
        .expect("mp")
        .into_float();
    assert_eq!(mp.as_slice(), Some(&[-0.75f32, -0.25, 1.25, 1.75][..]));
    let ap = AvgPool2d::new(2)
        .forward(&f(x.clone()))
        .expect("ap")
        .into_float();
    assert_eq!(ap.as_slice(), Some(&[-1.375f32, -0.875, 0.625, 1.125][..]));
    let fl = Flatten::default().forward(&f(x.clone())).expect("fl");
    assert_eq!(fl.shape(), &[1, 16]);
    let r6 = ReLU6
        .forward(&f(arr1(&[-1.0f32, 3.0, 9.0]).into_dyn()))
        .expect("r6")
        .into_float();
    assert_eq!(r6.as_slice(), Some(&[0.0f32, 3.0, 6.0][..]));
    assert_eq!(Identity.forward(&f(x.clone())).expect("id"), f(x.clone()));
    let sum = Add
        .forward_many(&[&f(x.clone()), &f(x.clone())])
        .expect("add")
        .into_float();
    assert_eq!(sum, &x * 2.0);
    assert_eq!(
        qnumeric::classify::argmax_rows(&arr2(&[[0.0f32, 2.0, 1.0], [5.0, 5.0, 1.0]]))
            .expect("argmax"),
        [1, 0]
    );
}

#[test]
fn shape_layers_on_quantized_activations() {
    let x = ramp(&[1, 1, 4, 4]);
    let xq = q(&x, 0.25, 8);
    // max pool, flatten, relu and relu6 are exact on the integers
    let mp = MaxPool2d::new(2).forward(&xq).expect("mp");
    assert_eq!(
        mp.to_float().as_slice(),
        Some(&[-0.75f32, -0.25, 1.25, 1.75][..])
    );
    assert!(mp.is_quantized());
    let r = ReLU.forward(&xq).expect("relu").to_float();
    assert_eq!(r, x.mapv(|v| v.max(0.0)));
    let r6 = ReLU6
        .forward(&q(&arr1(&[-1.0f32, 3.0, 9.0]).into_dyn(), 0.5, 4))
        .expect("r6");
    assert_eq!(r6.to_float().as_slice(), Some(&[0.0f32, 3.0, 6.0][..]));
    assert_eq!(
        Flatten::default().forward(&xq).expect("fl").shape(),
        &[1, 16]
    );
    let ap = AvgPool2d::new(2).forward(&xq).expect("ap");
    // averages -1.375 etc. on a 0.25 grid: round half to even of -5.5 quanta -> -6
    assert_eq!(
        ap.to_float().as_slice(),
        Some(&[-1.5f32, -1.0, 0.5, 1.0][..])
    );
    // stubs
    assert_eq!(QuantStub.forward(&f(x.clone())).expect("qs"), f(x.clone()));
    assert_eq!(DeQuantStub.forward(&xq).expect("dqs"), f(xq.to_float()));
}

#[test]
fn layer_errors() {
    let x4 = f(ramp(&[1, 2, 3, 3]));
    // constructors
    assert!(matches!(
        Linear::new(ramp(&[2]), None),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Linear::new(ramp(&[2, 3]), Some(ramp(&[3]))),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Conv2d::new(ramp(&[2, 1, 3]), None, ConvGeometry::default()),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Conv2d::new(
            ramp(&[2, 1, 1, 1]),
            Some(ramp(&[1])),
            ConvGeometry::default()
        ),
        Err(QuantError::ShapeMismatch { .. })
    ));
    for geo in [
        ConvGeometry::default().groups(0),
        ConvGeometry::default().groups(3),
        ConvGeometry::default().stride(1, 0),
        ConvGeometry::default().dilation(0, 1),
    ] {
        assert!(matches!(
            Conv2d::new(ramp(&[2, 1, 1, 1]), None, geo),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
    assert!(matches!(
        Conv1d::new(
            ramp(&[2, 1, 1, 1]),
            None,
            ConvGeometry1d::default()
                .stride(1)
                .padding(0)
                .dilation(1)
                .groups(1)
        ),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Conv1d::new(
            ramp(&[2, 1, 1]),
            None,
            ConvGeometry1d::default()
                .stride(0)
                .padding(0)
                .dilation(1)
                .groups(1)
        ),
        Err(QuantError::InvalidParameter { .. })
    ));
    let mut bad = BatchNormParams {
        running_mean: vec![0.0; 2],
        running_var: vec![1.0; 3],
        weight: None,
        bias: None,
        eps: 1e-5,
    };
    assert!(matches!(
        BatchNorm::new_1d(bad.clone()),
        Err(QuantError::LengthMismatch { .. })
    ));
    bad.running_var = vec![1.0; 2];
    bad.bias = Some(vec![0.0]);
    assert!(matches!(
        BatchNorm::new_2d(bad.clone()),
        Err(QuantError::LengthMismatch { .. })
    ));
    bad.bias = None;
    let bn2 = BatchNorm::new_2d(bad.clone()).expect("bn");
    let bn1 = BatchNorm::new_1d(bad).expect("bn");

    // forward errors
    let l = Linear::new(ramp(&[2, 3]), None).expect("l");
    assert!(matches!(
        l.forward(&f(ramp(&[1, 4]))),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        l.forward(&q(&ramp(&[1, 3]), 0.1, 0)),
        Err(QuantError::WrongActivation { .. })
    ));
    let c = Conv2d::new(ramp(&[2, 1, 3, 3]), None, ConvGeometry::default()).expect("c");
    assert!(matches!(
        c.forward(&f(ramp(&[1, 1, 3]))),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        c.forward(&x4),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        c.forward(&f(ramp(&[1, 1, 2, 2]))),
        Err(QuantError::ShapeMismatch { .. })
    ));
    let c1 = Conv1d::new(
        ramp(&[2, 1, 3]),
        None,
        ConvGeometry1d::default()
            .stride(1)
            .padding(0)
            .dilation(1)
            .groups(1),
    )
    .expect("c1");
    assert!(matches!(
        c1.forward(&x4),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bn2.forward(&f(ramp(&[1, 2]))),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bn1.forward(&f(ramp(&[1, 3]))),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        bn1.forward(&q(&ramp(&[1, 2]), 0.1, 0)),
        Err(QuantError::WrongActivation { .. })
    ));
    let mp = MaxPool2d {
        kernel: [0, 2],
        stride: [1, 1],
        padding: [0, 0],
    };
    assert!(matches!(
        mp.forward(&x4),
        Err(QuantError::InvalidParameter { .. })
    ));
    let mp = MaxPool2d {
        kernel: [2, 2],
        stride: [0, 1],
        padding: [0, 0],
    };
    assert!(matches!(
        mp.forward(&x4),
        Err(QuantError::InvalidParameter { .. })
    ));
    let mp = MaxPool2d {
        kernel: [2, 2],
        stride: [1, 1],
        padding: [2, 0],
    };
    assert!(matches!(
        mp.forward(&x4),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert!(matches!(
        MaxPool2d::new(4).forward(&x4),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        AvgPool2d::new(2).forward(&f(ramp(&[2, 2]))),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Flatten { start_dim: 4 }.forward(&x4),
        Err(QuantError::InvalidAxis { .. })
    ));
    assert!(matches!(
        Add.forward(&x4),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        Add.forward_many(&[&x4]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        Add.forward_many(&[&x4, &f(ramp(&[2]))]),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Add.forward_many(&[&x4, &q(&ramp(&[1, 2, 3, 3]), 0.1, 0)]),
        Err(QuantError::WrongActivation { .. })
    ));
    assert!(matches!(
        ReLU.forward_many(&[&x4, &x4]),
        Err(QuantError::LengthMismatch { .. })
    ));
    // activations and argmax
    assert!(matches!(
        x4.as_quantized(),
        Err(QuantError::WrongActivation { .. })
    ));
    assert!(matches!(
        q(&ramp(&[2]), 0.1, 0).as_float(),
        Err(QuantError::WrongActivation { .. })
    ));
    assert!(matches!(
        qnumeric::classify::argmax_rows(&ndarray::Array2::<f32>::zeros((2, 0))),
        Err(QuantError::EmptyInput { .. })
    ));
}

#[test]
fn sequential_errors() {
    let mut m = Sequential::new().with("a", ReLU).expect("a");
    assert!(matches!(
        m.push("a", ReLU),
        Err(QuantError::InvalidName { .. })
    ));
    assert!(matches!(
        m.push("", ReLU),
        Err(QuantError::InvalidName { .. })
    ));
    assert!(matches!(
        m.push("add", Add),
        Err(QuantError::UnsupportedLayer { .. })
    ));
    assert!(matches!(
        m.insert(5, "b", Box::new(ReLU)),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        m.replace_layer("zz", Box::new(ReLU)),
        Err(QuantError::NotFound { .. })
    ));
    assert!(matches!(
        m.replace_layer("a", Box::new(Add)),
        Err(QuantError::UnsupportedLayer { .. })
    ));
    let old = m.replace_layer("a", Box::new(Identity)).expect("replace");
    assert_eq!(old.kind(), "ReLU");
    m.insert(0, "first", Box::new(ReLU)).expect("insert");
    assert_eq!(m.layer_names(), ["first", "a"]);
    assert_eq!(m.len(), 2);
    assert!(m.get::<ReLU>("first").is_some() && m.get::<ReLU>("a").is_none());
    let m = m.with_quant_stubs().expect("stubs");
    assert_eq!(m.layer_names(), ["quant", "first", "a", "dequant"]);
    assert!(matches!(
        m.with_quant_stubs(),
        Err(QuantError::InvalidName { .. })
    ));
}

/// A caller's own graph: `y = relu(fc1(x)) + fc2(x)` between stubs, implementing `Model`.
#[derive(Debug, Clone)]
struct Residual {
    layers: Vec<(String, Box<dyn Module>)>,
}

impl Residual {
    fn new() -> Self {
        let w1 = ArrayD::from_shape_fn(IxDyn(&[4, 4]), |i| {
            ((i[0] * 3 + i[1]) % 5) as f32 * 0.2 - 0.4
        });
        let w2 = ArrayD::from_shape_fn(IxDyn(&[4, 4]), |i| {
            ((i[0] + 2 * i[1]) % 7) as f32 * 0.1 - 0.3
        });
        let layers: Vec<(String, Box<dyn Module>)> = vec![
            ("quant".into(), Box::new(QuantStub)),
            (
                "fc1".into(),
                Box::new(Linear::new(w1, None).expect("l").with_relu()),
            ),
            (
                "fc2".into(),
                Box::new(Linear::new(w2, Some(ArrayD::from_elem(IxDyn(&[4]), 0.1))).expect("l")),
            ),
            ("add".into(), Box::new(Add)),
            ("dequant".into(), Box::new(DeQuantStub)),
        ];
        Residual { layers }
    }

    fn get(&self, name: &str) -> &dyn Module {
        self.layers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.as_ref())
            .expect("layer")
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

    fn replace_layer(&mut self, name: &str, layer: Box<dyn Module>) -> Result<Box<dyn Module>> {
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

    fn run(&self, input: Activation, hook: &mut dyn LayerHook) -> Result<Activation> {
        let mut step = |name: &str, inputs: &[&Activation]| -> Result<Activation> {
            let layer = self.get(name);
            let mut y = layer.forward_many(inputs)?;
            hook.after_layer(name, layer, inputs, &mut y)?;
            Ok(y)
        };
        let x = step("quant", &[&input])?;
        let a = step("fc1", &[&x])?;
        let b = step("fc2", &[&x])?;
        let s = step("add", &[&a, &b])?;
        step("dequant", &[&s])
    }
}

#[test]
fn ptq_on_a_callers_graph() {
    let model = Residual::new();
    let x = ArrayD::from_shape_fn(IxDyn(&[32, 4]), |i| {
        ((i[0] * 7 + i[1] * 3) % 11) as f32 / 5.0 - 1.0
    });
    let float = model.forward(f(x.clone())).expect("float").into_float();
    let mut prepared = prepare(model, &PtqConfig::new(QConfig::x86_min_max())).expect("prepare");
    let plan: Vec<LayerPlan> = prepared.plan().iter().map(|(_, p)| *p).collect();
    assert_eq!(
        plan,
        [
            LayerPlan::Quantize,
            LayerPlan::Quantized,
            LayerPlan::Quantized,
            LayerPlan::Quantized,
            LayerPlan::DeQuantize
        ]
    );
    // calibrating returns the float output
    assert_eq!(
        prepared.calibrate(&x).expect("calibrate").into_float(),
        float
    );
    assert_eq!(prepared.batches(), 1);
    assert!(prepared.observer("fc1").is_some() && prepared.observer("dequant").is_none());
    let int8 = prepared.convert().expect("convert");
    assert!(
        int8.layer("add")
            .expect("add")
            .as_any()
            .is::<QuantizedAdd>()
    );
    assert!(
        int8.layer("quant")
            .expect("quant")
            .as_any()
            .is::<Quantize>()
    );
    let y = int8.forward(f(x)).expect("int8").into_float();
    let db = qnumeric::sqnr(&float, &y).expect("sqnr");
    assert!(db > 25.0, "{db}");
}

#[test]
fn ptq_keep_float_and_dynamic() {
    let w = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] as f32 - i[1] as f32) * 0.1);
    let bn = BatchNorm::new_1d(BatchNormParams {
        running_mean: vec![0.1; 3],
        running_var: vec![2.0; 3],
        weight: None,
        bias: None,
        eps: 1e-5,
    })
    .expect("bn");
    let model = Sequential::new()
        .with("fc", Linear::new(w.clone(), None).expect("l"))
        .expect("p")
        .with("bn", bn)
        .expect("p")
        .with("fc2", Linear::new(w.t().to_owned(), None).expect("l"))
        .expect("p")
        .with_quant_stubs()
        .expect("stubs");
    let x = ArrayD::from_shape_fn(IxDyn(&[16, 4]), |i| (i[0] * 4 + i[1]) as f32 / 16.0 - 1.0);
    let config = PtqConfig::new(QConfig::x86_min_max()).keep_float("fc2");
    let mut prepared = prepare(model.clone(), &config).expect("prepare");
    let plan: Vec<LayerPlan> = prepared.plan().iter().map(|(_, p)| *p).collect();
    assert_eq!(
        plan,
        [
            LayerPlan::Quantize,
            LayerPlan::Quantized,
            LayerPlan::FloatIsland,
            LayerPlan::FloatIsland,
            LayerPlan::DeQuantize
        ]
    );
    prepared.calibrate(&x).expect("calibrate");
    let int8 = prepared.convert().expect("convert");
    assert_eq!(int8.layer("fc2").map(|l| l.kind()), Some("FloatIsland"));
    assert_eq!(int8.layer("bn").map(|l| l.kind()), Some("FloatIsland"));
    let float = model.forward(f(x.clone())).expect("f").into_float();
    let y = int8.forward(f(x.clone())).expect("q").into_float();
    assert!(qnumeric::sqnr(&float, &y).expect("sqnr") > 25.0);

    // dynamic quantization of every Linear
    let mut dynm = model.clone();
    let names =
        quantize_dynamic(&mut dynm, &PtqConfig::default().keep_float("fc2")).expect("dynamic");
    assert_eq!(names, ["fc"]);
    assert_eq!(
        dynm.layer("fc").map(|l| l.kind()),
        Some("DynamicQuantizedLinear")
    );
    let y = dynm.forward(f(x)).expect("dyn").into_float();
    assert!(qnumeric::sqnr(&float, &y).expect("sqnr") > 25.0);
}

/// A caller's layer that is not known to PTQ: runs as a float island.
#[derive(Debug, Clone)]
struct Square;

impl Module for Square {
    fn kind(&self) -> &'static str {
        "Square"
    }
    fn forward(&self, x: &Activation) -> Result<Activation> {
        Ok(f(x.as_float()?.mapv(|v| v * v)))
    }
}

#[test]
fn ptq_errors() {
    let x = ramp(&[2, 4]);
    let model = Sequential::new().with("sq", Square).expect("p");
    // no QuantStub
    assert!(matches!(
        prepare(model.clone(), &PtqConfig::default()),
        Err(QuantError::NoQuantStub { .. })
    ));
    let model = model.with_quant_stubs().expect("stubs");
    // an override naming no layer
    assert!(matches!(
        prepare(model.clone(), &PtqConfig::default().keep_float("nope")),
        Err(QuantError::NotFound { .. })
    ));
    // convert before calibration
    let prepared = prepare(model.clone(), &PtqConfig::default()).expect("prepare");
    assert_eq!(prepared.plan()[1].1, LayerPlan::FloatIsland);
    assert!(matches!(
        prepared.output_qparams("dequant"),
        Err(QuantError::NotFound { .. })
    ));
    assert!(matches!(prepared.convert(), Err(QuantError::Empty { .. })));
    // NaN during calibration (the histogram observer refuses it)
    let mut prepared = prepare(model.clone(), &PtqConfig::default()).expect("prepare");
    let mut bad = x.clone();
    bad[[0, 1]] = f32::NAN;
    assert!(prepared.calibrate(&bad).is_err());
    // a weight observer whose parameters cannot quantize a qint8 weight (quint8 range):
    // refused at convert and in dynamic quantization
    let lin = Sequential::new()
        .with("fc", Linear::new(ramp(&[2, 4]), None).expect("l"))
        .expect("p")
        .with_quant_stubs()
        .expect("stubs");
    let quint8_weights = qnumeric::MinMaxObserver::new(qnumeric::QSpec::new(
        qnumeric::QScheme::PerTensorAffine,
        QDType::QUInt8,
    ))
    .expect("observer");
    let failing = QConfig::new(
        qnumeric::MinMaxObserver::new(qnumeric::QSpec::new(
            qnumeric::QScheme::PerTensorAffine,
            QDType::QUInt8,
        ))
        .expect("observer"),
        quint8_weights,
    );
    let cfg = PtqConfig::default().with_layer("fc", failing.clone());
    let mut prepared = prepare(lin.clone(), &cfg).expect("prepare");
    prepared.calibrate(&x).expect("calibrate");
    assert!(matches!(
        prepared.convert(),
        Err(QuantError::StorageTooNarrow { .. })
    ));
    let mut dynm = lin.clone();
    assert!(quantize_dynamic(&mut dynm, &PtqConfig::new(failing)).is_err());
    assert_eq!(dynm.layer("fc").map(|l| l.kind()), Some("Linear"));
    // the float island on quantized input
    let mut prepared = prepare(model, &PtqConfig::default()).expect("prepare");
    prepared.calibrate(&x).expect("calibrate");
    let int8 = prepared.convert().expect("convert");
    let y = int8.forward(f(x.clone())).expect("y").into_float();
    assert!(qnumeric::sqnr(&x.mapv(|v| v * v), &y).expect("sqnr") > 30.0);
}

/// Conversion lives in `ptq`: the float layers know nothing of the int8 ones, and a caller's
/// weighted layer converts through the function registered for its kind.
mod conversion {
    use ndarray::{ArrayD, IxDyn};
    use qnumeric::nn::quantized::{Int8Accumulation, QuantizedLinear};
    use qnumeric::nn::{
        Activation, LayerRole, Linear, Module, Sequential, WeightedCore, WeightedKind,
        WeightedLayer,
    };
    use qnumeric::ptq::{PtqConfig, prepare};
    use qnumeric::{QParams, QuantError, QuantizedTensor, Result};

    /// A caller's fully connected layer (the crate's Linear inside, another kind name).
    #[derive(Debug, Clone)]
    struct MyDense(Linear);

    impl Module for MyDense {
        fn kind(&self) -> &'static str {
            "MyDense"
        }
        fn forward(&self, x: &Activation) -> Result<Activation> {
            self.0.forward(x)
        }
        fn role(&self) -> LayerRole<'_> {
            LayerRole::Weighted(self)
        }
    }

    impl WeightedLayer for MyDense {
        fn weighted_kind(&self) -> WeightedKind {
            WeightedKind::Linear
        }
        fn core(&self) -> &WeightedCore {
            self.0.core()
        }
        fn with_core(&self, core: WeightedCore) -> Result<Box<dyn Module>> {
            Ok(Box::new(MyDense(Linear::from_core(core)?)))
        }
    }

    fn my_dense_int8(
        w: &dyn WeightedLayer,
        weight: QuantizedTensor<i8>,
        out: QParams,
        acc: Int8Accumulation,
    ) -> Result<Box<dyn Module>> {
        Ok(Box::new(
            QuantizedLinear::new(weight, w.core().bias().cloned(), out)?.with_accumulation(acc),
        ))
    }

    #[test]
    fn a_callers_weighted_layer_converts_through_its_registered_conversion() {
        let w = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] as f32 - i[1] as f32) * 0.2);
        let model = Sequential::new()
            .with("dense", MyDense(Linear::new(w, None).expect("linear")))
            .expect("model")
            .with_quant_stubs()
            .expect("stubs");
        let x = ArrayD::from_shape_fn(IxDyn(&[16, 4]), |i| (i[0] + i[1]) as f32 / 8.0);
        let mut p = prepare(model.clone(), &PtqConfig::default()).expect("prepare");
        p.calibrate(&x).expect("calibrate");
        assert!(matches!(
            p.convert(),
            Err(QuantError::UnsupportedLayer { .. })
        ));
        let cfg = PtqConfig::default().with_conversion("MyDense", my_dense_int8);
        let mut p = prepare(model, &cfg).expect("prepare");
        p.calibrate(&x).expect("calibrate");
        let int8 = p.convert().expect("convert");
        assert!(int8.get::<QuantizedLinear>("dense").is_some());
    }
}
