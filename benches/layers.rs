//! Layer throughput (multiply-accumulates per second) next to the float GEMM crate's own
//! throughput on the equivalent matrix product, measured in the same run (`baseline/gemm`:
//! ndarray's `general_mat_mul`, i.e. `matrixmultiply`, on `f32` matrices of the layer's
//! shape). `scripts/layer_summary.py` turns the results into ratios to that baseline; the
//! digits model's forward passes are timed over its 500 test images (feature `safetensors`).
//! See docs/performance.md.
//!
//! Times are the benchmark thread's CPU time where Linux reports it
//! (`/proc/thread-self/schedstat`), so that the time a shared machine gives to other processes
//! does not count; wall time elsewhere, and with the `rayon` feature (several threads).

mod common;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayD, IxDyn};
use qnumeric::nn::quantized::{Int8Accumulation, QuantizedConv2d, QuantizedLinear};
use qnumeric::nn::{Activation, Conv2d, ConvGeometry, Linear, Module};
use qnumeric::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The benchmark thread's CPU time (nanoseconds on the CPU from
/// `/proc/thread-self/schedstat`, updated at scheduler ticks), or wall time where that is not
/// available or the `rayon` feature is on.
struct CpuTime {
    wall: WallTime,
    origin: Instant,
    schedstat: bool,
}

impl CpuTime {
    fn new() -> Self {
        let mut t = CpuTime {
            wall: WallTime,
            origin: Instant::now(),
            schedstat: cfg!(not(feature = "rayon")),
        };
        t.schedstat &= t.schedstat_ns().is_some();
        t
    }

    fn schedstat_ns(&self) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    fn now_ns(&self) -> u64 {
        match self.schedstat.then(|| self.schedstat_ns()).flatten() {
            Some(ns) => ns,
            None => self.origin.elapsed().as_nanos() as u64,
        }
    }
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        self.now_ns()
    }

    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(start))
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

/// `baseline/gemm`: `[m, k] × [k, n]` in `f32` through `general_mat_mul`, throughput `m·k·n`.
fn gemm_baseline<M: criterion::measurement::Measurement>(
    g: &mut BenchmarkGroup<'_, M>,
    m: usize,
    k: usize,
    n: usize,
) {
    let a = Array2::from_shape_vec((m, k), common::data(m * k, 11)).expect("shape");
    let b = Array2::from_shape_vec((k, n), common::data(k * n, 12)).expect("shape");
    let mut c = Array2::<f32>::zeros((m, n));
    g.throughput(Throughput::Elements((m * k * n) as u64));
    g.bench_function("baseline/gemm", |bch| {
        bch.iter(|| general_mat_mul(1.0, black_box(&a), &b, 0.0, &mut c))
    });
}

/// `baseline/int8_peak`: the peak multiply-accumulate rate of the CPU's int8 instruction,
/// `vpdpbusd` on 512-bit registers (64 u8 × i8 products per instruction) with twelve
/// independent accumulators held in registers, where the CPU has AVX512-VNNI; nothing
/// elsewhere. Throughput counts the same `macs` as the layer, so the ratio of the layer's time
/// to this one is the fraction of the instruction's peak the layer reaches.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn int8_peak<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>, macs: usize) {
    use std::arch::x86_64::*;
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni"))
    {
        return;
    }
    /// # Safety
    /// The CPU must have AVX512F/BW/VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn run(iters: usize) -> i32 {
        let x = black_box(_mm512_set1_epi32(0x0102_0304));
        let w = black_box(_mm512_set1_epi32(0x0101_0101));
        let mut a = [_mm512_setzero_si512(); 12];
        for _ in 0..iters {
            for v in &mut a {
                *v = _mm512_dpbusd_epi32(*v, x, w);
            }
        }
        let mut s = _mm512_setzero_si512();
        for v in a {
            s = _mm512_add_epi32(s, v);
        }
        _mm512_reduce_add_epi32(s)
    }
    let iters = macs.div_ceil(12 * 64);
    g.throughput(Throughput::Elements((iters * 12 * 64) as u64));
    g.bench_function("baseline/int8_peak", |b| {
        // SAFETY: the CPU has AVX512F/BW/VNNI (checked above).
        b.iter(|| black_box(unsafe { run(iters) }))
    });
}

/// `baseline/int8_peak_256`: the same peak for `vpdpbusd` on 256-bit registers (AVX-VNNI, 32
/// products per instruction), the limit of the AVX-VNNI kernel (what `QNUMERIC_NO_AVX512=1`
/// runs on a CPU with both); nothing where the CPU lacks AVX-VNNI.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn int8_peak_256<M: criterion::measurement::Measurement>(
    g: &mut BenchmarkGroup<'_, M>,
    macs: usize,
) {
    use std::arch::x86_64::*;
    if !(std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("avxvnni"))
    {
        return;
    }
    /// # Safety
    /// The CPU must have AVX2 and AVX-VNNI.
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn run(iters: usize) -> i32 {
        let x = black_box(_mm256_set1_epi32(0x0102_0304));
        let w = black_box(_mm256_set1_epi32(0x0101_0101));
        let mut a = [_mm256_setzero_si256(); 12];
        for _ in 0..iters {
            for v in &mut a {
                *v = _mm256_dpbusd_avx_epi32(*v, x, w);
            }
        }
        let mut s = [0i32; 8];
        for v in a {
            let mut lanes = [0i32; 8];
            // SAFETY: `lanes` holds 8 `i32`.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
            for (s, l) in s.iter_mut().zip(lanes) {
                *s = s.wrapping_add(l);
            }
        }
        s.iter().fold(0, |a: i32, &v| a.wrapping_add(v))
    }
    let iters = macs.div_ceil(12 * 32);
    g.throughput(Throughput::Elements((iters * 12 * 32) as u64));
    g.bench_function("baseline/int8_peak_256", |b| {
        // SAFETY: the CPU has AVX2 and AVX-VNNI (checked above).
        b.iter(|| black_box(unsafe { run(iters) }))
    });
}

#[cfg(not(target_arch = "x86_64"))]
fn int8_peak<M: criterion::measurement::Measurement>(_: &mut BenchmarkGroup<'_, M>, _: usize) {}

#[cfg(not(target_arch = "x86_64"))]
fn int8_peak_256<M: criterion::measurement::Measurement>(_: &mut BenchmarkGroup<'_, M>, _: usize) {}

/// Symmetric per-output-channel int8 parameters of a weight `[out, ...]`.
fn per_channel(w: &ArrayD<f32>) -> PerChannelQParams {
    let out = w.shape()[0];
    let per = w.len() / out;
    let flat = w.as_slice().expect("standard layout");
    let scales: Vec<f32> = flat
        .chunks(per)
        .map(|r| r.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6) / 127.0)
        .collect();
    PerChannelQParams::new(scales, vec![0; out], 0, QDType::QInt8).expect("valid")
}

fn tensor(shape: &[usize], seed: u64, scale: f32) -> ArrayD<f32> {
    let n = shape.iter().product();
    let v = common::data(n, seed)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape")
}

/// Input activations quantized on the full 0..=255 range (zero point 128), or on 0..=127
/// (zero point 64: PyTorch's x86 default, `reduce_range`).
fn quantized_input(x: &ArrayD<f32>, seven_bit: bool) -> Activation {
    let qp = if seven_bit {
        QRange::new(QDType::QUInt8, 0, 127).and_then(|r| QParams::with_range(0.06, 64, r))
    } else {
        QParams::new(0.03, 128, QDType::QUInt8)
    };
    Activation::Quantized(QuantizedTensor::<u8>::quantize(x, qp.expect("valid")).expect("q"))
}

fn output_qparams() -> QParams {
    QParams::new(0.05, 128, QDType::QUInt8).expect("valid")
}

/// The int8 runs: exact accumulation on full-range activations (`i16` pairs) and on 7-bit
/// ones (`u8` quads: no pair can saturate), and the x86 AVX2 emulation on full-range ones.
const MODES: [(Int8Accumulation, bool, &str); 3] = [
    (Int8Accumulation::Exact, false, "int8_exact"),
    (Int8Accumulation::Exact, true, "int8_exact_7bit"),
    (Int8Accumulation::X86Avx2, false, "int8_x86_avx2"),
];

/// A 3×3 convolution (padding 1) with its float, int8 exact and int8 x86-AVX2 forward passes.
fn conv_case(
    c: &mut Criterion<CpuTime>,
    name: &str,
    n: usize,
    c_in: usize,
    c_out: usize,
    hw: usize,
) {
    let mut g = c.benchmark_group(format!("layers/{name}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (k, l) = (c_in * 9, hw * hw);
    gemm_baseline(&mut g, c_out, k, n * l);
    int8_peak(&mut g, c_out * k * n * l);
    int8_peak_256(&mut g, c_out * k * n * l);
    let geo = ConvGeometry::default().padding(1, 1);
    let w = tensor(&[c_out, c_in, 3, 3], 3, 0.05);
    let bias = Some(tensor(&[c_out], 4, 0.1));
    let conv = Conv2d::new(w.clone(), bias, geo).expect("conv").with_relu();
    let x = tensor(&[n, c_in, hw, hw], 5, 1.0);
    let xf = Activation::Float(x.clone());
    g.throughput(Throughput::Elements((c_out * k * n * l) as u64));
    g.bench_function("float", |b| {
        b.iter(|| conv.forward(black_box(&xf)).expect("forward"))
    });
    let q = QuantizedConv2d::from_float(&conv, per_channel(&w), output_qparams()).expect("q");
    for (mode, seven_bit, label) in MODES {
        let q = q.clone().with_accumulation(mode);
        let xq = quantized_input(&x, seven_bit);
        g.bench_function(label, |b| {
            b.iter(|| q.forward(black_box(&xq)).expect("forward"))
        });
    }
    g.finish();
}

/// A linear layer with its float, int8 exact and int8 x86-AVX2 forward passes.
fn linear_case(c: &mut Criterion<CpuTime>, name: &str, n: usize, k: usize, out: usize) {
    let mut g = c.benchmark_group(format!("layers/{name}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    gemm_baseline(&mut g, n, k, out);
    int8_peak(&mut g, n * k * out);
    int8_peak_256(&mut g, n * k * out);
    let w = tensor(&[out, k], 6, 0.05);
    let fc = Linear::new(w.clone(), Some(tensor(&[out], 7, 0.1))).expect("linear");
    let x = tensor(&[n, k], 8, 1.0);
    let xf = Activation::Float(x.clone());
    g.throughput(Throughput::Elements((n * k * out) as u64));
    g.bench_function("float", |b| {
        b.iter(|| fc.forward(black_box(&xf)).expect("forward"))
    });
    let q = QuantizedLinear::from_float(&fc, per_channel(&w), output_qparams()).expect("q");
    for (mode, seven_bit, label) in MODES {
        let q = q.clone().with_accumulation(mode);
        let xq = quantized_input(&x, seven_bit);
        g.bench_function(label, |b| {
            b.iter(|| q.forward(black_box(&xq)).expect("forward"))
        });
    }
    g.finish();
}

/// A dynamically quantized linear layer (PyTorch's `quantize_dynamic`: activations quantized
/// per call, 7-bit on x86) next to its float forward pass and the instruction's peak.
fn dynamic_case(c: &mut Criterion<CpuTime>, name: &str, n: usize, k: usize, out: usize) {
    use qnumeric::nn::quantized::DynamicQuantizedLinear;
    let mut g = c.benchmark_group(format!("layers/{name}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    int8_peak(&mut g, n * k * out);
    int8_peak_256(&mut g, n * k * out);
    let w = tensor(&[out, k], 9, 0.05);
    let fc = Linear::new(w.clone(), Some(tensor(&[out], 10, 0.1))).expect("linear");
    let x = Activation::Float(tensor(&[n, k], 11, 1.0));
    g.throughput(Throughput::Elements((n * k * out) as u64));
    g.bench_function("float", |b| {
        b.iter(|| fc.forward(black_box(&x)).expect("forward"))
    });
    let q = DynamicQuantizedLinear::from_float(&fc, per_channel(&w)).expect("dynamic");
    g.bench_function("dynamic_int8", |b| {
        b.iter(|| q.forward(black_box(&x)).expect("forward"))
    });
    g.finish();
}

fn layers(c: &mut Criterion<CpuTime>) {
    // The digits model's layers over its 500 test images.
    conv_case(c, "digits_conv2", 500, 16, 32, 8);
    linear_case(c, "digits_fc1", 500, 512, 64);
    // A ResNet-18 stage: 3×3, 256 → 256 channels, 14×14, batch 8.
    conv_case(c, "resnet_3x3_256", 8, 256, 256, 14);
    linear_case(c, "linear_1024", 256, 1024, 1024);
    // BERT-base's FFN up-projection, dynamic int8 (issue 19's row), batch 128.
    dynamic_case(c, "dynamic_768_3072", 128, 768, 3072);
}

#[cfg(feature = "safetensors")]
#[path = "../examples/digits/model.rs"]
mod model;

/// The digits CNN over its 500 test images: fused float and int8 (fused, PTQ as in
/// tests/digits.rs), next to the GEMM of its largest layer (conv2).
#[cfg(feature = "safetensors")]
fn digits(c: &mut Criterion<CpuTime>) {
    use qnumeric::fusion::fuse_modules;
    use qnumeric::nn::{Model, Sequential};
    use qnumeric::ptq::{PtqConfig, prepare};

    let d = model::Digits::load().expect("data/digits");
    let mut fused: Sequential = d.model.clone();
    fuse_modules(
        &mut fused,
        &[
            &["conv1", "bn1", "relu1"],
            &["conv2", "bn2", "relu2"],
            &["fc1", "relu3"],
        ],
    )
    .expect("fusion");
    let mut prepared = prepare(fused.clone(), &PtqConfig::default()).expect("prepare");
    prepared.calibrate(&d.calib).expect("calibrate");
    let int8 = prepared.convert().expect("convert");
    let n = d.test_x.shape()[0];

    let mut g = c.benchmark_group("digits");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    gemm_baseline(&mut g, 32, 16 * 9, n * 64);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("float_fused", |b| {
        b.iter(|| {
            fused
                .forward(Activation::Float(black_box(&d.test_x).clone()))
                .expect("forward")
        })
    });
    g.bench_function("int8", |b| {
        b.iter(|| {
            int8.forward(Activation::Float(black_box(&d.test_x).clone()))
                .expect("forward")
        })
    });
    g.finish();
}

#[cfg(not(feature = "safetensors"))]
fn digits(_c: &mut Criterion<CpuTime>) {
    eprintln!("digits: skipped (needs --features safetensors)");
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime::new());
    targets = layers, digits
}
criterion_main!(benches);
