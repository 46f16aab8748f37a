//! Results do not depend on the `rayon` feature: every call below runs twice in this process,
//! once in a rayon pool of one thread (where qnumeric takes its sequential path, the one it
//! takes without the feature) and once in a pool of four threads (the parallel path), and the
//! two results must agree bit for bit. Sizes are above the parallel threshold (2^18 elements)
//! so that the parallel paths really run.

use ndarray::{Array1, Array2, ArrayView2};
use qnumeric::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

const N: usize = 1 << 20;

/// Deterministic pseudo-random values in about [-4.5, 4.5) (xorshift64).
fn data(n: usize) -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 9.0
        })
        .collect()
}

fn f32_bits<'a>(v: impl IntoIterator<Item = &'a f32>) -> Vec<u32> {
    v.into_iter().map(|x| x.to_bits()).collect()
}

fn i8_bits<'a>(v: impl IntoIterator<Item = &'a i8>) -> Vec<u32> {
    v.into_iter().map(|&x| x as u8 as u32).collect()
}

fn f64_bits(v: f64) -> Vec<u32> {
    let b = v.to_bits();
    vec![(b >> 32) as u32, b as u32]
}

fn qparams_bits(q: &AnyQParams) -> Vec<u32> {
    match q {
        AnyQParams::PerTensor(p) => vec![p.scale().to_bits(), p.zero_point() as u32],
        AnyQParams::PerChannel(_) => panic!("expected per-tensor parameters"),
    }
}

/// Runs calls in a one-thread and a four-thread pool and collects the ones that differ.
struct Compare {
    sequential: ThreadPool,
    parallel: ThreadPool,
    mismatches: Vec<String>,
}

impl Compare {
    fn new() -> Self {
        let pool = |n| {
            ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("thread pool")
        };
        let c = Compare {
            sequential: pool(1),
            parallel: pool(4),
            mismatches: Vec::new(),
        };
        assert_eq!(c.sequential.install(rayon::current_num_threads), 1);
        assert_eq!(c.parallel.install(rayon::current_num_threads), 4);
        c
    }

    /// Runs `f` in both pools; records `name` when the bit patterns differ.
    fn same(&mut self, name: &str, f: impl Fn() -> Vec<u32> + Sync) {
        let a = self.sequential.install(&f);
        let b = self.parallel.install(&f);
        if a.len() != b.len() {
            self.mismatches
                .push(format!("{name}: {} values vs {}", a.len(), b.len()));
        } else if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            self.mismatches.push(format!(
                "{name}: first difference at [{i}]: {:#x} vs {:#x}",
                a[i], b[i]
            ));
        }
    }

    fn finish(self) {
        assert!(
            self.mismatches.is_empty(),
            "one thread vs four:\n{}",
            self.mismatches.join("\n")
        );
    }
}

struct Inputs {
    x: Array1<f32>,
    y: Array1<f32>,
}

impl Inputs {
    fn new() -> Self {
        Inputs {
            x: Array1::from(data(N)),
            y: Array1::from(data(N + 7).split_off(7)),
        }
    }

    fn x2(&self) -> ArrayView2<'_, f32> {
        self.x
            .view()
            .into_shape_with_order((1024, 1024))
            .expect("shape")
    }
}

fn per_channel(axis: isize) -> PerChannelQParams {
    let scales: Vec<f32> = (0..1024).map(|i| 0.01 + i as f32 * 1e-4).collect();
    let zps: Vec<i32> = (0..1024).map(|i| (i % 7) - 3).collect();
    PerChannelQParams::new(scales, zps, axis, QDType::QInt8).expect("valid")
}

#[test]
fn kernels_are_identical_on_one_thread_and_many() {
    let inp = Inputs::new();
    let x = &inp.x;
    let x2 = inp.x2();
    let qp = QParams::new(0.03, 11, QDType::QInt8).expect("valid");
    let (pc0, pc1) = (per_channel(0), per_channel(1));
    let lsq = LearnableParams {
        scale: 0.02,
        zero_point: 1.4,
        quant_min: -128,
        quant_max: 127,
        grad_factor: 0.3,
    };
    let mut c = Compare::new();
    c.same("quantize", || {
        let q: Array1<i8> = quantize(x, &qp).expect("ok");
        i8_bits(&q)
    });
    c.same("fake_quantize", || {
        f32_bits(&fake_quantize(x, &qp).expect("ok"))
    });
    c.same("quantize_per_channel axis 0", || {
        let q: Array2<i8> = quantize_per_channel(&x2, &pc0).expect("ok");
        i8_bits(&q)
    });
    c.same("quantize_per_channel axis 1", || {
        let q: Array2<i8> = quantize_per_channel(&x2, &pc1).expect("ok");
        i8_bits(&q)
    });
    c.same("fake_quantize_per_channel axis 1", || {
        f32_bits(&fake_quantize_per_channel(&x2, &pc1).expect("ok"))
    });
    c.same("dequantize_per_channel axis 0", || {
        let q: Array2<i8> = quantize_per_channel(&x2, &pc0).expect("ok");
        let d: Array2<f32> = dequantize_per_channel(&q, &pc0).expect("ok");
        f32_bits(&d)
    });
    c.same("learnable backward", || {
        let g = learnable_fake_quantize_backward(x, &inp.y, &lsq).expect("ok");
        let mut bits = f32_bits(&g.dx);
        bits.extend([g.dscale.to_bits(), g.dzero_point.to_bits()]);
        bits
    });
    c.finish();
}

#[test]
fn observers_are_identical_on_one_thread_and_many() {
    let inp = Inputs::new();
    let x2 = inp.x2();
    let pt = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut c = Compare::new();
    c.same("HistogramObserver", || {
        let mut hist = HistogramObserver::new(pt).expect("valid");
        hist.observe(inp.x.view().into_dyn()).expect("ok");
        hist.observe(inp.y.view().into_dyn()).expect("ok");
        let mut bits = f32_bits(hist.histogram());
        bits.extend(qparams_bits(&hist.qparams().expect("ok")));
        bits
    });
    c.same("MinMaxObserver", || {
        let mut mm = MinMaxObserver::new(pt).expect("valid");
        mm.observe(inp.x.view().into_dyn()).expect("ok");
        let (lo, hi) = mm.min_max().expect("observed");
        let mut bits = vec![lo.to_bits(), hi.to_bits()];
        bits.extend(qparams_bits(&mm.qparams().expect("ok")));
        bits
    });
    c.same("PerChannelMinMaxObserver axis -1", || {
        let spec = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8);
        let mut pco = PerChannelMinMaxObserver::new(spec, -1).expect("valid");
        pco.observe(x2.into_dyn()).expect("ok");
        f32_bits(pco.min_vals().iter().chain(pco.max_vals()))
    });
    c.finish();
}

#[test]
fn metrics_are_identical_on_one_thread_and_many() {
    let inp = Inputs::new();
    let (x, y) = (&inp.x, &inp.y);
    let mut c = Compare::new();
    c.same("sqnr", || f64_bits(sqnr(x, y).expect("ok")));
    c.same("cosine_similarity", || {
        f64_bits(cosine_similarity(x, y).expect("ok"))
    });
    c.same("normalized_l2_error", || {
        f64_bits(normalized_l2_error(x, y).expect("ok"))
    });
    c.finish();
}

#[test]
fn layers_are_identical_on_one_thread_and_many() {
    use ndarray::{ArrayD, IxDyn};
    use qnumeric::nn::quantized::{Int8Accumulation, QuantizedConv2d, QuantizedLinear};
    use qnumeric::nn::{Activation, Conv2d, ConvGeometry, Linear, Module};

    let tensor = |shape: &[usize], scale: f32| {
        let n = shape.iter().product();
        let v = data(n).into_iter().map(|x| x * scale).collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape")
    };
    let act = QParams::new(0.05, 128, QDType::QUInt8).expect("valid");
    let quantized = |x: &ArrayD<f32>| {
        Activation::Quantized(QuantizedTensor::<u8>::quantize(x, act).expect("quantize"))
    };
    let wq = QParams::new(0.004, 0, QDType::QInt8).expect("valid");
    let u8_bits = |y: Activation| {
        let q = y
            .as_quantized()
            .expect("quantized output")
            .int_repr()
            .clone();
        q.iter().map(|&v| u32::from(v)).collect::<Vec<u32>>()
    };
    // Above the threshold (2^22 multiply-accumulates) and several blocks of images or rows.
    let conv = Conv2d::new(
        tensor(&[32, 32, 3, 3], 0.05),
        Some(tensor(&[32], 0.1)),
        ConvGeometry::default().padding(1, 1),
    )
    .expect("conv")
    .with_relu();
    let x = tensor(&[5, 32, 16, 16], 0.2);
    let fc = Linear::new(tensor(&[64, 256], 0.05), Some(tensor(&[64], 0.1))).expect("linear");
    let xl = tensor(&[600, 256], 0.2);
    let mut c = Compare::new();
    c.same("Conv2d", || {
        let y = conv
            .forward(&Activation::Float(x.clone()))
            .expect("forward");
        f32_bits(&y.into_float())
    });
    c.same("Linear", || {
        let y = fc.forward(&Activation::Float(xl.clone())).expect("forward");
        f32_bits(&y.into_float())
    });
    for mode in [Int8Accumulation::Exact, Int8Accumulation::X86Avx2] {
        let qc = QuantizedConv2d::from_float(&conv, wq, act)
            .expect("quantized conv")
            .with_accumulation(mode);
        c.same(&format!("QuantizedConv2d {mode:?}"), || {
            u8_bits(qc.forward(&quantized(&x)).expect("forward"))
        });
        let ql = QuantizedLinear::from_float(&fc, wq, act)
            .expect("quantized linear")
            .with_accumulation(mode);
        c.same(&format!("QuantizedLinear {mode:?}"), || {
            u8_bits(ql.forward(&quantized(&xl)).expect("forward"))
        });
    }
    // Dynamic Linears (a weight larger than a core's L2, and a small one with many rows) and
    // their float Linears.
    for (k, out, n) in [(768, 1536, 8), (256, 64, 600)] {
        let fc = Linear::new(tensor(&[out, k], 0.05), Some(tensor(&[out], 0.1))).expect("fc");
        let dq =
            qnumeric::nn::quantized::DynamicQuantizedLinear::from_float(&fc, wq).expect("dynamic");
        let xd = Activation::Float(tensor(&[n, k], 0.3));
        c.same(&format!("DynamicQuantizedLinear {k}→{out}"), || {
            f32_bits(&dq.forward(&xd).expect("forward").into_float())
        });
        c.same(&format!("Linear {k}→{out}"), || {
            f32_bits(&fc.forward(&xd).expect("forward").into_float())
        });
    }
    c.finish();
}

/// The formats' encoders and decoders split large tensors into pieces of whole blocks (or
/// rows, or chunks of values) on the rayon pool: the bytes and values are the same on one
/// thread and many, and so is the error for a NaN (the first one's index).
#[test]
fn formats_are_identical_on_one_thread_and_many() {
    use qnumeric::formats::Dequantize;
    use qnumeric::formats::float8::{Float8Granularity, Float8Recipe, Float8Spec};
    use qnumeric::formats::ggml::GgmlType;
    use qnumeric::formats::groupwise::{GroupMapping, GroupwiseSpec, QParamsDtype, TinygemmSpec};
    use qnumeric::formats::minifloat::{self, MiniFloat};
    use qnumeric::formats::mx::MxSpec;
    use qnumeric::formats::nf4::Nf4Spec;
    use qnumeric::formats::nvfp4::Nvfp4Spec;

    const ROW: usize = 4096;
    let inp = Inputs::new();
    let x = inp.x.as_slice().expect("contiguous");
    let u8_bits = |v: &[u8]| v.iter().map(|&b| u32::from(b)).collect::<Vec<u32>>();
    let mut c = Compare::new();
    for ty in [MiniFloat::E4M3Fn, MiniFloat::E5M2, MiniFloat::E4M3Fnuz] {
        c.same(&format!("cast {ty:?}"), || {
            let mut codes = vec![0u8; x.len()];
            minifloat::cast_into(&inp.x.view(), ty, &mut codes).expect("ok");
            let mut y = vec![0.0f32; x.len()];
            minifloat::decode_into(&codes, ty, &mut y).expect("ok");
            let mut bits = u8_bits(&codes);
            bits.extend(f32_bits(&y));
            bits
        });
    }
    for elem in [MiniFloat::E2M1Fn, MiniFloat::E4M3Fn, MiniFloat::E5M2] {
        c.same(&format!("mx {elem:?}"), || {
            let t = MxSpec::standard(elem).quantize_rows(x, ROW).expect("ok");
            let mut bits = u8_bits(&t.scales);
            bits.extend(u8_bits(&t.codes));
            bits.extend(f32_bits(&t.dequantize()));
            bits
        });
    }
    for per_tensor in [true, false] {
        c.same(&format!("nvfp4 {per_tensor}"), || {
            let t = Nvfp4Spec::new(per_tensor)
                .quantize_rows(x, ROW)
                .expect("ok");
            let mut bits = u8_bits(&t.block_scales);
            bits.extend(u8_bits(&t.codes));
            bits.extend(t.per_tensor_scale.map(f32::to_bits));
            bits.extend(f32_bits(&t.dequantize()));
            bits
        });
    }
    c.same("nf4", || {
        let t = Nf4Spec::new(64, 256)
            .expect("spec")
            .quantize(x)
            .expect("ok");
        let mut bits = f32_bits(&t.absmax);
        bits.extend(u8_bits(&t.codes));
        bits.extend(f32_bits(&t.dequantize()));
        bits
    });
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_1,
        GgmlType::Q5_1,
    ] {
        c.same(&format!("ggml {ty:?}"), || {
            let b = ty.quantize_rows(x, ROW).expect("ok");
            let mut y = vec![0.0f32; x.len()];
            ty.dequantize_row(&b, &mut y).expect("ok");
            let mut bits = u8_bits(&b);
            bits.extend(f32_bits(&y));
            bits
        });
    }
    for (recipe, granularity) in [
        (Float8Recipe::Inference, Float8Granularity::Rowwise),
        (Float8Recipe::Inference, Float8Granularity::Tensorwise),
        (
            Float8Recipe::Training {
                round_scales_to_power_of_2: true,
            },
            Float8Granularity::Rowwise,
        ),
    ] {
        c.same(&format!("float8 {recipe:?} {granularity:?}"), || {
            let spec = Float8Spec::new(MiniFloat::E4M3Fn, recipe, granularity).expect("spec");
            let t = spec.quantize_rows(x, ROW).expect("ok");
            let mut bits = f32_bits(&t.scales);
            bits.extend(u8_bits(&t.codes));
            bits.extend(f32_bits(&t.dequantize()));
            bits
        });
    }
    for mapping in [GroupMapping::Asymmetric, GroupMapping::Symmetric] {
        c.same(&format!("int4 g128 {mapping:?}"), || {
            let spec = GroupwiseSpec::int4(128, mapping).expect("spec");
            let t = spec.quantize_rows(x, ROW).expect("ok");
            let mut bits = f32_bits(&t.scales);
            bits.extend(t.zero_points.iter().map(|&z| z as u32));
            bits.extend(t.codes.iter().map(|&q| q as u32));
            bits.extend(f32_bits(&t.dequantize()));
            bits
        });
    }
    for dtype in [QParamsDtype::BF16, QParamsDtype::F32] {
        c.same(&format!("tinygemm {dtype:?}"), || {
            let spec = TinygemmSpec::new(128, 1e-6, dtype).expect("spec");
            let t = spec.quantize_rows(x, ROW).expect("ok");
            let mut bits = f32_bits(&t.scales);
            bits.extend(f32_bits(&t.zero_points));
            bits.extend(u8_bits(&t.codes));
            bits.extend(f32_bits(&t.dequantize()));
            bits
        });
    }
    // A NaN deep in the tensor: the same first index reported.
    let mut bad = x.to_vec();
    bad[N - 1000] = f32::NAN;
    bad[N - 10] = f32::INFINITY;
    let err_bits = |e: String| e.bytes().map(u32::from).collect::<Vec<u32>>();
    c.same("ggml NaN error", || {
        err_bits(
            GgmlType::Q4_0
                .quantize_rows(&bad, ROW)
                .unwrap_err()
                .to_string(),
        )
    });
    c.same("int4 g128 NaN error", || {
        let spec = GroupwiseSpec::int4(128, GroupMapping::Asymmetric).expect("spec");
        err_bits(spec.quantize_rows(&bad, ROW).unwrap_err().to_string())
    });
    c.same("nf4 NaN error", || {
        let spec = Nf4Spec::new(64, 256).expect("spec");
        err_bits(spec.quantize(&bad).unwrap_err().to_string())
    });
    c.finish();
}
