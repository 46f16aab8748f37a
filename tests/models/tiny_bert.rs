//! A tiny BERT-style encoder (post-LN, HuggingFace `BertModel` names, no token embedding) with
//! seeded random weights, run in float and quantized (every Linear PyTorch-dynamic int8, or
//! static with calibrated input ranges), written as a `qnumeric-dump/2` pair of safetensors
//! files (`docs/dumps.md`). A fixture: the diagnosis tests and the benches build dumps with it.
//!
//! Self-contained on purpose: it uses only the public API of `qnumeric`, `ndarray` and
//! `safetensors`, and nothing from the test crate, so that `benches/` can include it with
//! `#[path = "../../tests/models/tiny_bert.rs"] mod tiny_bert;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Display;

use ndarray::{Array1, Array2, Array3, ArrayD, ArrayView2, Axis, Ix3, s};
use qnumeric::nn::quantized::DynamicQuantizedLinear;
use qnumeric::nn::{Activation, Linear, Module};
use qnumeric::rng::Lcg;
use qnumeric::{
    MinMaxObserver, Observer, QDType, QParams, QScheme, QSpec, QuantizedTensor, dequantize,
    fake_quantize, quantize,
};

/// The encoder's shape, the data's shape and the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Encoder layers.
    pub layers: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Attention heads (divides `H`).
    pub heads: usize,
    /// The feed-forward size (`4H` in BERT).
    pub intermediate: usize,
    /// Samples `N`.
    pub samples: usize,
    /// Positions per sample `T` (real ones, then padding).
    pub tokens: usize,
    /// Samples per forward call.
    pub batch_size: usize,
    /// The seed of weights and data.
    pub seed: u64,
}

impl BertConfig {
    /// 2 layers, hidden 32, 2 heads, intermediate 128; 24 samples of 16 positions, batches of 8.
    pub fn tiny() -> Self {
        BertConfig {
            layers: 2,
            hidden: 32,
            heads: 2,
            intermediate: 128,
            samples: 24,
            tokens: 16,
            batch_size: 8,
            seed: 7,
        }
    }

    /// all-MiniLM-L6's shape: 6 layers, hidden 384, 12 heads, intermediate 1536; 64 samples of
    /// 32 positions, batches of 16.
    pub fn minilm_shaped() -> Self {
        BertConfig {
            layers: 6,
            hidden: 384,
            heads: 12,
            intermediate: 1536,
            samples: 64,
            tokens: 32,
            batch_size: 16,
            seed: 7,
        }
    }
}

/// How every Linear of the quantized model is quantized (weights: qint8 per-tensor symmetric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// PyTorch `quantize_dynamic`: each forward call quantizes the input to quint8 from its
    /// own range with `reduce_range` (7 bits), float output.
    Dynamic,
    /// The input quantized with a quint8 affine range that a MinMax observer calibrated on
    /// separate clean samples (full 8 bits), float output.
    Static,
}

/// What to put in the dump and which faults to plant.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpOptions {
    /// The quantization scheme of every Linear.
    pub quantization: Quantization,
    /// `(linear name, bits)`: that Linear's weight is quantized per-tensor symmetric to `bits`
    /// bits (2..=8) instead of 8.
    pub inject_bits: Option<(String, u8)>,
    /// Samples whose input embeddings get [`OUTLIER_CHANNELS`] multiplied by
    /// [`OUTLIER_FACTOR`] (real positions only).
    pub outlier_samples: Vec<usize>,
    /// After both models ran, every dumped `[N, T, ...]` tensor's padded positions are
    /// overwritten in both files with random values in `±1e3` (real positions untouched).
    pub garbage_in_padding: bool,
    /// Write `__mask__` in the float file.
    pub with_mask: bool,
    /// Write `NAME:shadow` for every Linear in the quant file.
    pub with_shadow: bool,
    /// Write `NAME:input` for every Linear in the quant file.
    pub with_inputs: bool,
    /// Write `NAME:weight` and `NAME:bias` for every Linear in both files.
    pub with_weights: bool,
}

impl DumpOptions {
    /// Everything written, no fault planted.
    pub fn full(quantization: Quantization) -> Self {
        DumpOptions {
            quantization,
            inject_bits: None,
            outlier_samples: Vec::new(),
            garbage_in_padding: false,
            with_mask: true,
            with_shadow: true,
            with_inputs: true,
            with_weights: true,
        }
    }
}

/// The two files and what a test needs to know about them.
#[derive(Debug, Clone, PartialEq)]
pub struct BertDump {
    /// The float model's safetensors file.
    pub float: Vec<u8>,
    /// The quantized model's safetensors file.
    pub quant: Vec<u8>,
    /// The Linear layers, in execution order.
    pub linears: Vec<String>,
    /// Every dumped layer (Linears, LayerNorms, attention contexts), in execution order.
    pub order: Vec<String>,
    /// `[N, T]`: 1 at real positions, 0 at padding.
    pub mask: Array2<f32>,
}

/// The input-embedding channels that outlier samples scale (taken modulo `H`).
pub const OUTLIER_CHANNELS: [usize; 3] = [3, 17, 29];
/// The factor outlier samples' channels are multiplied by.
pub const OUTLIER_FACTOR: f32 = 30.0;
/// The additive attention mask on padded keys (HuggingFace BERT's).
const MASKED: f32 = -10000.0;
/// LayerNorm epsilon (BERT's).
const LN_EPS: f64 = 1e-12;
/// The values garbage in padding is drawn from: uniform in `±GARBAGE`.
const GARBAGE: f32 = 1e3;
/// Calibration samples of the static model: this many forward calls.
const CALIBRATION_BATCHES: usize = 2;

type R<T> = Result<T, String>;

fn err<E: Display>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// A standard normal draw (Box-Muller on two 24-bit uniforms).
fn normal(rng: &mut Lcg) -> f32 {
    let u1 = 1.0 - f64::from(rng.unit_f32()); // (0, 1]
    let u2 = f64::from(rng.unit_f32());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// `erf(x)` to about 1e-15: the Maclaurin series for `|x| <= 3`, the continued fraction of
/// `erfc` beyond. Slow (tens of terms); [`gelu`] reads a table built with it.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a <= 3.0 {
        // erf(x) = 2/√π · Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, x2) = (a, a, a * a);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if a < 10.0 {
        // erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
        let mut t = a;
        for n in (1..=60).rev() {
            t = a + (n as f64 / 2.0) / t;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * t)
    } else {
        1.0
    };
    r.copysign(x)
}

/// Table steps per unit of [`erf_fast`].
const ERF_STEPS: f64 = 256.0;
/// Where [`erf_fast`]'s table ends (`1 − erf(6) < 3e-17`).
const ERF_END: f64 = 6.0;

/// `erf(x)` from a table of [`erf`] and its derivative `2/√π·exp(−x²)` every 1/256, by cubic
/// Hermite interpolation: error below `h⁴/384·max|erf⁗| ≈ 1e-11`.
pub fn erf_fast(x: f64) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<(f64, f64)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=(ERF_END * ERF_STEPS) as usize + 1)
            .map(|i| {
                let x = i as f64 / ERF_STEPS;
                let slope = std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp() / ERF_STEPS;
                (erf(x), slope)
            })
            .collect()
    });
    let a = x.abs();
    if a.is_nan() {
        return f64::NAN;
    }
    if a >= ERF_END {
        return 1.0f64.copysign(x);
    }
    let u = a * ERF_STEPS;
    let i = u as usize;
    let t = u - i as f64;
    let ((y0, m0), (y1, m1)) = (table[i], table[i + 1]);
    let (t2, t3) = (t * t, t * t * t);
    let y = (2.0 * t3 - 3.0 * t2 + 1.0) * y0
        + (t3 - 2.0 * t2 + t) * m0
        + (-2.0 * t3 + 3.0 * t2) * y1
        + (t3 - t2) * m1;
    y.copysign(x)
}

/// Exact GELU: `x/2 · (1 + erf(x/√2))`.
fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + erf_fast(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// LayerNorm over the last axis, weight 1, bias 0.
fn layer_norm(x: &Array3<f32>) -> Array3<f32> {
    let mut y = x.clone();
    for mut row in y.rows_mut() {
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        row.mapv_inplace(|v| ((f64::from(v) - mean) * inv) as f32);
    }
    y
}

/// One float Linear: its name, weight `[out, in]` and bias `[out]`.
struct FloatLinear {
    name: String,
    layer: Linear,
    weight: Array2<f32>,
    bias: Array1<f32>,
}

/// The Linears of one encoder layer, in execution order.
const LINEARS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

fn apply(layer: &dyn Module, x: &Array3<f32>) -> R<Array3<f32>> {
    layer
        .forward(&Activation::Float(x.clone().into_dyn()))
        .map_err(err("linear forward"))?
        .into_float()
        .into_dimensionality::<Ix3>()
        .map_err(err("linear output"))
}

/// How a forward pass runs Linear `k` (an index into `Bert::linears`) on an input; it may
/// record more tensors.
type LinearFn<'a> = dyn FnMut(usize, &Array3<f32>, &mut Recorder) -> R<Array3<f32>> + 'a;

/// The float encoder: every Linear in execution order.
struct Bert {
    cfg: BertConfig,
    linears: Vec<FloatLinear>,
}

impl Bert {
    fn new(cfg: &BertConfig) -> R<Self> {
        let mut rng = Lcg::new(cfg.seed);
        let (h, i) = (cfg.hidden, cfg.intermediate);
        let mut linears = Vec::new();
        for l in 0..cfg.layers {
            for (j, suffix) in LINEARS.iter().enumerate() {
                let (out, inp) = match j {
                    4 => (i, h),
                    5 => (h, i),
                    _ => (h, h),
                };
                // N(0, 1/in): unit-variance inputs give unit-variance outputs.
                let std = 1.0 / (inp as f32).sqrt();
                let weight = Array2::from_shape_fn((out, inp), |_| std * normal(&mut rng));
                let bias = Array1::from_shape_fn(out, |_| 0.02 * normal(&mut rng));
                let layer = Linear::new(weight.clone().into_dyn(), Some(bias.clone().into_dyn()))
                    .map_err(err("Linear::new"))?;
                linears.push(FloatLinear {
                    name: format!("encoder.layer.{l}.{suffix}"),
                    layer,
                    weight,
                    bias,
                });
            }
        }
        Ok(Bert {
            cfg: cfg.clone(),
            linears,
        })
    }

    /// The dumped layers in execution order.
    fn order(&self) -> Vec<String> {
        let mut order = vec!["embeddings.LayerNorm".to_string()];
        for l in 0..self.cfg.layers {
            let p = format!("encoder.layer.{l}");
            for name in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.self",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ] {
                order.push(format!("{p}.{name}"));
            }
        }
        order
    }

    /// One forward call on `x` `[B, T, H]` with mask `[B, T]`: Linear `k` (index into
    /// `self.linears`) runs as `lin` says; every layer output goes to `rec`.
    fn forward(
        &self,
        x: &Array3<f32>,
        mask: ArrayView2<f32>,
        lin: &mut LinearFn<'_>,
        rec: &mut Recorder,
    ) -> R<()> {
        let (b, t, h) = x.dim();
        let heads = self.cfg.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut hidden = layer_norm(x);
        rec.put("embeddings.LayerNorm", &hidden);
        for l in 0..self.cfg.layers {
            let p = format!("encoder.layer.{l}");
            let k0 = l * LINEARS.len();
            let q = lin(k0, &hidden, rec)?;
            let k = lin(k0 + 1, &hidden, rec)?;
            let v = lin(k0 + 2, &hidden, rec)?;
            let mut ctx = Array3::<f32>::zeros((b, t, h));
            for n in 0..b {
                let add = mask.row(n).mapv(|m| if m != 0.0 { 0.0 } else { MASKED });
                for hd in 0..heads {
                    let cols = s![n, .., hd * d..(hd + 1) * d];
                    let mut scores = q.slice(cols).dot(&k.slice(cols).t());
                    for mut row in scores.rows_mut() {
                        row.zip_mut_with(&add, |s, &a| *s = *s * scale + a);
                        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        row.mapv_inplace(|v| (v - max).exp());
                        let sum = row.sum();
                        row.mapv_inplace(|v| v / sum);
                    }
                    ctx.slice_mut(cols).assign(&scores.dot(&v.slice(cols)));
                }
            }
            rec.put(&format!("{p}.attention.self"), &ctx);
            let attn = lin(k0 + 3, &ctx, rec)?;
            hidden = layer_norm(&(attn + &hidden));
            rec.put(&format!("{p}.attention.output.LayerNorm"), &hidden);
            let inter = lin(k0 + 4, &hidden, rec)?.mapv(gelu);
            let out = lin(k0 + 5, &inter, rec)?;
            hidden = layer_norm(&(out + &hidden));
            rec.put(&format!("{p}.output.LayerNorm"), &hidden);
        }
        Ok(())
    }

    /// Runs every batch of `x` through [`Bert::forward`], recording into `rec`.
    fn run(
        &self,
        x: &Array3<f32>,
        mask: &Array2<f32>,
        lin: &mut LinearFn<'_>,
        rec: &mut Recorder,
    ) -> R<()> {
        let n = x.dim().0;
        let bs = self.cfg.batch_size.max(1);
        for n0 in (0..n).step_by(bs) {
            let n1 = (n0 + bs).min(n);
            rec.n0 = n0;
            let xb = x.slice(s![n0..n1, .., ..]).to_owned();
            self.forward(&xb, mask.slice(s![n0..n1, ..]), lin, rec)?;
        }
        Ok(())
    }
}

/// Collects per-batch `[B, T, D]` tensors into `[N, T, D]` ones, in first-seen order.
struct Recorder {
    samples: usize,
    n0: usize,
    on: bool,
    tensors: Vec<(String, Array3<f32>)>,
    index: HashMap<String, usize>,
}

impl Recorder {
    fn new(samples: usize, on: bool) -> Self {
        Recorder {
            samples,
            n0: 0,
            on,
            tensors: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn put(&mut self, name: &str, x: &Array3<f32>) {
        if !self.on {
            return;
        }
        let (b, t, d) = x.dim();
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.tensors
                    .push((name.to_string(), Array3::zeros((self.samples, t, d))));
                self.index.insert(name.to_string(), self.tensors.len() - 1);
                self.tensors.len() - 1
            }
        };
        self.tensors[i]
            .1
            .slice_mut(s![self.n0..self.n0 + b, .., ..])
            .assign(x);
    }

    fn take(&mut self, name: &str) -> R<Array3<f32>> {
        let i = *self
            .index
            .get(name)
            .ok_or_else(|| format!("{name} was not recorded"))?;
        Ok(std::mem::take(&mut self.tensors[i].1))
    }
}

/// Input embeddings `[n, T, H]` (standard normal, also at padding) and the mask `[n, T]`:
/// sample `s` has a real length in `[T/3, T]`, sample 0 the full `T`.
fn embeddings(
    cfg: &BertConfig,
    seed: u64,
    n: usize,
    outliers: &[usize],
) -> (Array3<f32>, Array2<f32>) {
    let (t, h) = (cfg.tokens, cfg.hidden);
    let mut rng = Lcg::new(seed);
    let lo = t.div_ceil(3).max(1) as i64;
    let lengths: Vec<usize> = (0..n)
        .map(|s| {
            if s == 0 {
                t
            } else {
                rng.int(lo, t as i64) as usize
            }
        })
        .collect();
    let mask = Array2::from_shape_fn((n, t), |(s, p)| if p < lengths[s] { 1.0 } else { 0.0 });
    let mut x = Array3::from_shape_fn((n, t, h), |_| normal(&mut rng));
    for &s in outliers.iter().filter(|&&s| s < n) {
        for p in 0..lengths[s] {
            for c in OUTLIER_CHANNELS {
                x[[s, p, c % h]] *= OUTLIER_FACTOR;
            }
        }
    }
    (x, mask)
}

/// A weight quantized per-tensor symmetric to `bits` bits (qint8 storage; PyTorch's
/// `MinMaxObserver` parameters) and its dequantized value.
fn quantize_weight(w: &Array2<f32>, bits: u8) -> R<(QParams, Array2<f32>)> {
    if !(2..=8).contains(&bits) {
        return Err(format!("{bits}-bit weights: 2..=8 bits only"));
    }
    let mut spec = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8);
    if bits < 8 {
        let half = 1i64 << (bits - 1);
        spec = spec
            .with_quant_range(-half, half - 1)
            .map_err(err("weight range"))?;
    }
    let mut obs = MinMaxObserver::new(spec).map_err(err("weight observer"))?;
    obs.observe(w).map_err(err("weight observer"))?;
    let qp = obs.per_tensor_qparams().map_err(err("weight qparams"))?;
    // Fake quantization clamps to the (possibly narrowed) range.
    let dq = fake_quantize(w, &qp).map_err(err("weight fake_quantize"))?;
    Ok((qp, dq))
}

/// The quantized model's version of one Linear.
enum QuantLinear {
    Dynamic(Box<DynamicQuantizedLinear>),
    /// Calibrated input parameters and the Linear with the dequantized weight.
    Static(QParams, Box<Linear>),
}

impl QuantLinear {
    fn forward(&self, x: &Array3<f32>) -> R<Array3<f32>> {
        match self {
            QuantLinear::Dynamic(m) => apply(m.as_ref(), x),
            QuantLinear::Static(qp, m) => {
                let q: Array3<u8> = quantize(x, qp).map_err(err("static input quantize"))?;
                let xq: Array3<f32> = dequantize(&q, qp).map_err(err("static input dequantize"))?;
                apply(m.as_ref(), &xq)
            }
        }
    }
}

/// Static input parameters of every Linear: a quint8 affine MinMax observer on its input in the
/// float model, over `CALIBRATION_BATCHES` batches of clean samples from another seed.
fn calibrate(model: &Bert) -> R<Vec<QParams>> {
    let cfg = &model.cfg;
    let n = CALIBRATION_BATCHES * cfg.batch_size.max(1);
    let (x, mask) = embeddings(cfg, cfg.seed ^ 0xCA11_B8A7_E000_0001, n, &[]);
    let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut obs = (0..model.linears.len())
        .map(|_| MinMaxObserver::new(spec))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("input observer"))?;
    let mut rec = Recorder::new(n, false);
    model.run(
        &x,
        &mask,
        &mut |k, x, _| {
            obs[k].observe(x).map_err(err("input observer"))?;
            apply(&model.linears[k].layer, x)
        },
        &mut rec,
    )?;
    obs.iter()
        .map(|o| o.per_tensor_qparams().map_err(err("input qparams")))
        .collect()
}

/// The `layers` metadata entry of one Linear.
fn layer_json(quantization: Quantization, bits: u8, input: Option<&QParams>) -> String {
    let activation = match (quantization, input) {
        (Quantization::Static, Some(q)) => format!(
            r#"{{"mode":"static","bits":8,"reduce_range":false,"granularity":"per_tensor","scale":{:e},"zero_point":{},"dtype":"quint8"}}"#,
            q.scale(),
            q.zero_point()
        ),
        (Quantization::Static, None) => {
            r#"{"mode":"static","bits":8,"reduce_range":false,"granularity":"per_tensor"}"#.into()
        }
        (Quantization::Dynamic, _) => {
            r#"{"mode":"dynamic","bits":8,"reduce_range":true,"granularity":"per_tensor"}"#.into()
        }
    };
    format!(
        r#"{{"kind":"linear","weight":{{"bits":{bits},"granularity":"per_tensor","symmetric":true}},"activation":{activation}}}"#
    )
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An `f32` array as a safetensors tensor: its bytes are made when the file is written, one
/// tensor at a time.
struct F32View<'a>(&'a ArrayD<f32>);

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.0.shape()
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let mut bytes = vec![0u8; self.data_len()];
        for (b, v) in bytes.chunks_exact_mut(4).zip(self.0.iter()) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        bytes.into()
    }

    fn data_len(&self) -> usize {
        4 * self.0.len()
    }
}

/// A safetensors file of F32 tensors with string metadata, byte for byte the same for the same
/// input. `safetensors::serialize` writes its metadata `HashMap` in the map's (randomly seeded)
/// order, so the file is serialized without metadata and `__metadata__` (keys sorted) is put
/// at the front of its JSON header.
fn safetensors_bytes(tensors: &[(String, ArrayD<f32>)], metadata: &[(&str, String)]) -> R<Vec<u8>> {
    let views = tensors.iter().map(|(name, a)| (name.as_str(), F32View(a)));
    let mut plain = safetensors::serialize(views, None).map_err(err("safetensors::serialize"))?;
    let len = u64::from_le_bytes(plain[..8].try_into().map_err(err("header length"))?) as usize;
    let header = std::str::from_utf8(&plain[8..8 + len])
        .map_err(err("header"))?
        .trim_end();
    let rest = header
        .strip_prefix('{')
        .ok_or("safetensors header is not a JSON object")?;
    let mut meta: Vec<&(&str, String)> = metadata.iter().collect();
    meta.sort_by_key(|(k, _)| *k);
    let entries: Vec<String> = meta
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    let mut new_header = format!("{{\"__metadata__\":{{{}}}", entries.join(","));
    if rest != "}" {
        new_header.push(',');
    }
    new_header.push_str(rest);
    while new_header.len() % 8 != 0 {
        new_header.push(' ');
    }
    let mut prefix = (new_header.len() as u64).to_le_bytes().to_vec();
    prefix.extend_from_slice(new_header.as_bytes());
    plain.splice(..8 + len, prefix);
    Ok(plain)
}

/// Overwrites the padded positions of every `[N, T, ...]` tensor (but `__mask__`) with
/// uniform values in `±GARBAGE`.
fn fill_padding(tensors: &mut [(String, ArrayD<f32>)], mask: &Array2<f32>, seed: u64) {
    let mut rng = Lcg::new(seed);
    let (n, t) = mask.dim();
    for (name, a) in tensors.iter_mut() {
        if name == "__mask__" || a.ndim() < 2 || a.shape()[0] != n || a.shape()[1] != t {
            continue;
        }
        for ((s, p), &m) in mask.indexed_iter() {
            if m == 0.0 {
                a.index_axis_mut(Axis(0), s)
                    .index_axis_mut(Axis(0), p)
                    .mapv_inplace(|_| rng.uniform_f32(-GARBAGE, GARBAGE));
            }
        }
    }
}

/// Builds the model, runs it in float and quantized over the same batches and writes the dump
/// pair (`docs/dumps.md`, `qnumeric-dump/2`).
///
/// # Errors
/// A message when the configuration is inconsistent (`H` not divisible by the heads, an
/// injected layer that does not exist, bits outside 2..=8) or a library call fails.
pub fn bert_dump(cfg: &BertConfig, opts: &DumpOptions) -> R<BertDump> {
    if cfg.heads == 0
        || !cfg.hidden.is_multiple_of(cfg.heads)
        || cfg.samples == 0
        || cfg.tokens == 0
    {
        return Err(format!("inconsistent config {cfg:?}"));
    }
    let model = Bert::new(cfg)?;
    let linears: Vec<String> = model.linears.iter().map(|l| l.name.clone()).collect();
    if let Some((name, _)) = &opts.inject_bits
        && !linears.contains(name)
    {
        return Err(format!("no Linear named {name}"));
    }
    let order = model.order();
    let (x, mask) = embeddings(
        cfg,
        cfg.seed.wrapping_add(0x5EED),
        cfg.samples,
        &opts.outlier_samples,
    );

    // The quantized Linears.
    let bits: Vec<u8> = linears
        .iter()
        .map(|name| match &opts.inject_bits {
            Some((n, b)) if n == name => *b,
            _ => 8,
        })
        .collect();
    let static_qp = match opts.quantization {
        Quantization::Static => Some(calibrate(&model)?),
        Quantization::Dynamic => None,
    };
    let mut qlinears = Vec::new();
    let mut qweights = Vec::new();
    for (k, fl) in model.linears.iter().enumerate() {
        let (wqp, wdq) = quantize_weight(&fl.weight, bits[k])?;
        let bias = Some(fl.bias.clone().into_dyn());
        let q = match &static_qp {
            None => {
                let w = QuantizedTensor::<i8>::quantize(&wdq, wqp).map_err(err("weight"))?;
                QuantLinear::Dynamic(Box::new(
                    DynamicQuantizedLinear::new(w, bias).map_err(err("DynamicQuantizedLinear"))?,
                ))
            }
            Some(qps) => QuantLinear::Static(
                qps[k],
                Box::new(Linear::new(wdq.clone().into_dyn(), bias).map_err(err("Linear::new"))?),
            ),
        };
        qlinears.push(q);
        qweights.push(wdq);
    }

    // Float model.
    let mut frec = Recorder::new(cfg.samples, true);
    model.run(
        &x,
        &mask,
        &mut |k, x, rec| {
            let y = apply(&model.linears[k].layer, x)?;
            rec.put(&model.linears[k].name, &y);
            Ok(y)
        },
        &mut frec,
    )?;
    // Quantized model.
    let mut qrec = Recorder::new(cfg.samples, true);
    model.run(
        &x,
        &mask,
        &mut |k, x, rec| {
            let name = &model.linears[k].name;
            let y = qlinears[k].forward(x)?;
            rec.put(name, &y);
            if opts.with_inputs {
                rec.put(&format!("{name}:input"), x);
            }
            if opts.with_shadow {
                rec.put(
                    &format!("{name}:shadow"),
                    &apply(&model.linears[k].layer, x)?,
                );
            }
            Ok(y)
        },
        &mut qrec,
    )?;

    // The files' tensors.
    let mut ftensors = Vec::new();
    let mut qtensors = Vec::new();
    for name in &order {
        ftensors.push((name.clone(), frec.take(name)?.into_dyn()));
        qtensors.push((name.clone(), qrec.take(name)?.into_dyn()));
        if let Some(k) = linears.iter().position(|l| l == name) {
            for suffix in [":input", ":shadow"] {
                let key = format!("{name}{suffix}");
                if qrec.index.contains_key(&key) {
                    qtensors.push((key.clone(), qrec.take(&key)?.into_dyn()));
                }
            }
            if opts.with_weights {
                let fl = &model.linears[k];
                ftensors.push((format!("{name}:weight"), fl.weight.clone().into_dyn()));
                ftensors.push((format!("{name}:bias"), fl.bias.clone().into_dyn()));
                qtensors.push((format!("{name}:weight"), qweights[k].clone().into_dyn()));
                qtensors.push((format!("{name}:bias"), fl.bias.clone().into_dyn()));
            }
        }
    }
    if opts.garbage_in_padding {
        fill_padding(&mut ftensors, &mask, cfg.seed ^ 0x6A4B_A6E0_F10A_7000);
        fill_padding(&mut qtensors, &mask, cfg.seed ^ 0x6A4B_A6E0_0000_0A07);
    }
    if opts.with_mask {
        ftensors.push(("__mask__".to_string(), mask.clone().into_dyn()));
    }

    // Metadata.
    let order_json = format!(
        "[{}]",
        order
            .iter()
            .map(|n| json_string(n))
            .collect::<Vec<_>>()
            .join(",")
    );
    let layers_json = format!(
        "{{{}}}",
        linears
            .iter()
            .zip(&bits)
            .enumerate()
            .map(|(k, (n, &b))| {
                let input = static_qp.as_ref().map(|q| &q[k]);
                format!(
                    "{}:{}",
                    json_string(n),
                    layer_json(opts.quantization, b, input)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    let metadata = [
        ("format", "qnumeric-dump/2".to_string()),
        ("order", order_json),
        ("batch_size", cfg.batch_size.to_string()),
        ("layers", layers_json),
    ];
    Ok(BertDump {
        float: safetensors_bytes(&ftensors, &metadata)?,
        quant: safetensors_bytes(&qtensors, &metadata)?,
        linears,
        order,
        mask,
    })
}

// ---------------------------------------------------------------------------------------------
// Tests of the fixture itself (the diagnosis of these dumps is tested elsewhere).

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    fn tensor(st: &SafeTensors<'_>, name: &str) -> ArrayD<f32> {
        let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
        let data: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        ArrayD::from_shape_vec(v.shape().to_vec(), data).expect("shape")
    }

    fn metadata(bytes: &[u8]) -> HashMap<String, String> {
        let (_, meta) = SafeTensors::read_metadata(bytes).expect("header");
        meta.metadata().clone().expect("metadata")
    }

    /// SQNR (dB) of `y` against `reference` over the real positions of `samples`.
    fn masked_sqnr(
        reference: &ArrayD<f32>,
        y: &ArrayD<f32>,
        mask: &Array2<f32>,
        samples: &[usize],
    ) -> f64 {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for &s in samples {
            for p in 0..mask.ncols() {
                if mask[[s, p]] != 0.0 {
                    a.extend(reference.slice(s![s, p, ..]).iter().copied());
                    b.extend(y.slice(s![s, p, ..]).iter().copied());
                }
            }
        }
        qnumeric::sqnr(&Array1::from(a), &Array1::from(b)).expect("sqnr")
    }

    fn all(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    /// Each Linear's own SQNR (`NAME` against `NAME:shadow`, real positions).
    fn own_sqnrs(d: &BertDump) -> Vec<(String, f64)> {
        let q = SafeTensors::deserialize(&d.quant).expect("quant file");
        d.linears
            .iter()
            .map(|name| {
                let y = tensor(&q, name);
                let shadow = tensor(&q, &format!("{name}:shadow"));
                (
                    name.clone(),
                    masked_sqnr(&shadow, &y, &d.mask, &all(d.mask.nrows())),
                )
            })
            .collect()
    }

    #[test]
    fn tiny_bert_erf_matches_reference_values() {
        // erf values from Abramowitz & Stegun table 7.1 / mpmath.
        for (x, e) in [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (3.5, 0.999_999_256_901_627_7),
            (5.0, 0.999_999_999_998_462_5),
        ] {
            assert!((erf(x) - e).abs() < 1e-13, "erf({x}) = {} != {e}", erf(x));
            assert!((erf(-x) + e).abs() < 1e-13, "erf(-{x})");
        }
        // Continuity at the switch from series to continued fraction.
        assert!((erf(3.0) - erf(3.000_000_001)).abs() < 1e-11);
        // The table GELU reads agrees with the series everywhere (1e-7 asked for).
        let worst = (-70_000..=70_000)
            .map(|i| {
                let x = f64::from(i) * 1e-4 + 0.123_456_7e-4;
                (erf_fast(x) - erf(x)).abs()
            })
            .fold(0.0f64, f64::max);
        assert!(worst < 1e-10, "erf_fast off by {worst:e}");
    }

    #[test]
    fn tiny_bert_dump_is_deterministic() {
        let cfg = BertConfig::tiny();
        let mut opts = DumpOptions::full(Quantization::Dynamic);
        opts.garbage_in_padding = true;
        opts.outlier_samples = vec![3];
        let a = bert_dump(&cfg, &opts).expect("dump");
        let b = bert_dump(&cfg, &opts).expect("dump");
        assert!(
            a.float == b.float && a.quant == b.quant,
            "same seed, same bytes"
        );
        let other = bert_dump(&BertConfig { seed: 8, ..cfg }, &opts).expect("dump");
        assert_ne!(a.float, other.float);
        assert_ne!(a.quant, other.quant);
    }

    #[test]
    fn tiny_bert_files_hold_the_documented_names_shapes_and_metadata() {
        let cfg = BertConfig::tiny();
        let (n, t, h, i) = (cfg.samples, cfg.tokens, cfg.hidden, cfg.intermediate);
        for quantization in [Quantization::Dynamic, Quantization::Static] {
            let d = bert_dump(&cfg, &DumpOptions::full(quantization)).expect("dump");
            assert_eq!(d.linears.len(), 6 * cfg.layers);
            assert_eq!(d.order.len(), 1 + 9 * cfg.layers);
            assert_eq!(d.order[0], "embeddings.LayerNorm");
            assert_eq!(d.order[1], "encoder.layer.0.attention.self.query");
            assert_eq!(d.order[4], "encoder.layer.0.attention.self");
            assert_eq!(d.linears[5], "encoder.layer.0.output.dense");
            assert_eq!(d.mask.dim(), (n, t));
            assert!(
                d.mask.row(0).iter().all(|&m| m == 1.0),
                "a full-length sample"
            );
            for row in d.mask.rows() {
                let len = row.iter().filter(|&&m| m == 1.0).count();
                assert!(len >= t / 3 && len <= t);
                assert!(
                    row.iter().take(len).all(|&m| m == 1.0),
                    "real positions first"
                );
            }
            let f = SafeTensors::deserialize(&d.float).expect("float file");
            let q = SafeTensors::deserialize(&d.quant).expect("quant file");
            let width = |name: &str| {
                if name.ends_with("intermediate.dense") {
                    i
                } else {
                    h
                }
            };
            let mut fnames = vec!["__mask__".to_string()];
            let mut qnames = Vec::new();
            for name in &d.order {
                fnames.push(name.clone());
                qnames.push(name.clone());
                let out = width(name);
                assert_eq!(tensor(&f, name).shape(), [n, t, out], "{name}");
                assert_eq!(tensor(&q, name).shape(), [n, t, out], "{name}");
                if d.linears.contains(name) {
                    let inp = if name.ends_with("output.dense") && !name.contains("attention") {
                        i
                    } else {
                        h
                    };
                    for s in [":weight", ":bias"] {
                        fnames.push(format!("{name}{s}"));
                    }
                    for s in [":input", ":shadow", ":weight", ":bias"] {
                        qnames.push(format!("{name}{s}"));
                    }
                    assert_eq!(tensor(&q, &format!("{name}:input")).shape(), [n, t, inp]);
                    assert_eq!(tensor(&q, &format!("{name}:shadow")).shape(), [n, t, out]);
                    for st in [&f, &q] {
                        assert_eq!(tensor(st, &format!("{name}:weight")).shape(), [out, inp]);
                        assert_eq!(tensor(st, &format!("{name}:bias")).shape(), [out]);
                    }
                }
            }
            let sorted = |mut v: Vec<String>| {
                v.sort();
                v
            };
            let names =
                |st: &SafeTensors<'_>| sorted(st.names().into_iter().map(str::to_string).collect());
            assert_eq!(names(&f), sorted(fnames));
            assert_eq!(names(&q), sorted(qnames));
            assert_eq!(tensor(&f, "__mask__"), d.mask.clone().into_dyn());

            let mode = match quantization {
                Quantization::Dynamic => "dynamic",
                Quantization::Static => "static",
            };
            for bytes in [&d.float, &d.quant] {
                let meta = metadata(bytes);
                let mut keys: Vec<&str> = meta.keys().map(String::as_str).collect();
                keys.sort_unstable();
                assert_eq!(keys, ["batch_size", "format", "layers", "order"]);
                assert_eq!(meta["format"], "qnumeric-dump/2");
                assert_eq!(meta["batch_size"], "8");
                let order: Vec<String> = d.order.iter().map(|n| format!("\"{n}\"")).collect();
                assert_eq!(meta["order"], format!("[{}]", order.join(",")));
                let layers = &meta["layers"];
                for name in &d.linears {
                    let entry = format!(
                        "\"{name}\":{{\"kind\":\"linear\",\"weight\":{{\"bits\":8,\
                         \"granularity\":\"per_tensor\",\"symmetric\":true}},\
                         \"activation\":{{\"mode\":\"{mode}\""
                    );
                    assert!(layers.contains(&entry), "{name} in {layers}");
                }
                assert!(!layers.contains("LayerNorm"));
            }
        }

        // Everything optional left out: outputs only, no mask.
        let bare = DumpOptions {
            with_mask: false,
            with_shadow: false,
            with_inputs: false,
            with_weights: false,
            ..DumpOptions::full(Quantization::Dynamic)
        };
        let d = bert_dump(&cfg, &bare).expect("dump");
        for bytes in [&d.float, &d.quant] {
            let st = SafeTensors::deserialize(bytes).expect("file");
            let mut names: Vec<&str> = st.names();
            names.sort_unstable();
            let mut order: Vec<&str> = d.order.iter().map(String::as_str).collect();
            order.sort_unstable();
            assert_eq!(names, order);
        }
    }

    #[test]
    fn tiny_bert_shadow_is_the_float_linear_on_the_dumped_input() {
        let cfg = BertConfig::tiny();
        for quantization in [Quantization::Dynamic, Quantization::Static] {
            let d = bert_dump(&cfg, &DumpOptions::full(quantization)).expect("dump");
            let f = SafeTensors::deserialize(&d.float).expect("float file");
            let q = SafeTensors::deserialize(&d.quant).expect("quant file");
            for name in &d.linears {
                let w = tensor(&f, &format!("{name}:weight"))
                    .into_dimensionality::<ndarray::Ix2>()
                    .expect("2-D");
                let b = tensor(&f, &format!("{name}:bias"));
                let x = tensor(&q, &format!("{name}:input"));
                let shadow = tensor(&q, &format!("{name}:shadow"));
                let (n, t) = (x.shape()[0], x.shape()[1]);
                let x2 = x.to_shape((n * t, x.shape()[2])).expect("rows").to_owned();
                let expect = x2.dot(&w.t()) + &b;
                let got = shadow.to_shape((n * t, w.nrows())).expect("rows");
                let worst = expect
                    .iter()
                    .zip(got.iter())
                    .map(|(e, g)| (e - g).abs() / (1.0 + e.abs()))
                    .fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "{name}: shadow off by {worst}");
                // The quantized weight is the float one rounded to a per-tensor grid.
                let wq = tensor(&q, &format!("{name}:weight"));
                let step = w.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.5;
                let off = (&wq - &w.into_dyn())
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(off <= step / 2.0 * 1.001, "{name}: weight off by {off}");
                assert_eq!(tensor(&q, &format!("{name}:bias")), b);
            }
        }
    }

    #[test]
    fn tiny_bert_garbage_in_padding_touches_only_padding() {
        let cfg = BertConfig::tiny();
        let clean = bert_dump(&cfg, &DumpOptions::full(Quantization::Dynamic)).expect("dump");
        let dirty = bert_dump(
            &cfg,
            &DumpOptions {
                garbage_in_padding: true,
                ..DumpOptions::full(Quantization::Dynamic)
            },
        )
        .expect("dump");
        assert_eq!(clean.mask, dirty.mask);
        let padded = clean.mask.iter().filter(|&&m| m == 0.0).count();
        assert!(padded > 0, "the tiny config has padding");
        for (c, g) in [(&clean.float, &dirty.float), (&clean.quant, &dirty.quant)] {
            let c = SafeTensors::deserialize(c).expect("file");
            let g = SafeTensors::deserialize(g).expect("file");
            for name in c.names() {
                let (a, b) = (tensor(&c, name), tensor(&g, name));
                if name.ends_with(":weight") || name.ends_with(":bias") || name == "__mask__" {
                    assert_eq!(a, b, "{name}");
                    continue;
                }
                for ((s, p), &m) in clean.mask.indexed_iter() {
                    let (ra, rb) = (a.slice(s![s, p, ..]), b.slice(s![s, p, ..]));
                    if m != 0.0 {
                        assert_eq!(ra, rb, "{name}[{s}, {p}] is a real position");
                    } else {
                        assert!(
                            ra.iter().zip(rb.iter()).all(|(x, y)| x != y)
                                && rb.iter().any(|v| v.abs() > 100.0),
                            "{name}[{s}, {p}] is padding"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tiny_bert_own_sqnr_is_high_at_8_bits_and_low_at_injected_3_bits() {
        let cfg = BertConfig::tiny();
        let injected = "encoder.layer.1.intermediate.dense";
        for quantization in [Quantization::Dynamic, Quantization::Static] {
            let d = bert_dump(&cfg, &DumpOptions::full(quantization)).expect("dump");
            for (name, db) in own_sqnrs(&d) {
                assert!(db > 25.0, "{quantization:?} {name}: {db:.1} dB");
            }
            let opts = DumpOptions {
                inject_bits: Some((injected.to_string(), 3)),
                ..DumpOptions::full(quantization)
            };
            let d = bert_dump(&cfg, &opts).expect("dump");
            assert!(metadata(&d.quant)["layers"].contains(&format!(
                "\"{injected}\":{{\"kind\":\"linear\",\"weight\":{{\"bits\":3,"
            )));
            for (name, db) in own_sqnrs(&d) {
                if name == injected {
                    assert!(db < 15.0, "{quantization:?} {name} at 3 bits: {db:.1} dB");
                } else {
                    assert!(db > 25.0, "{quantization:?} {name}: {db:.1} dB");
                }
            }
        }
    }

    #[test]
    fn tiny_bert_static_outlier_samples_clip_at_the_first_linear() {
        let cfg = BertConfig::tiny();
        let outliers = [2usize, 9, 17];
        let opts = DumpOptions {
            outlier_samples: outliers.to_vec(),
            ..DumpOptions::full(Quantization::Static)
        };
        let d = bert_dump(&cfg, &opts).expect("dump");
        let q = SafeTensors::deserialize(&d.quant).expect("quant file");
        let name = "encoder.layer.0.attention.self.query";
        let (y, shadow) = (tensor(&q, name), tensor(&q, &format!("{name}:shadow")));
        let per_sample: Vec<f64> = (0..cfg.samples)
            .map(|s| masked_sqnr(&shadow, &y, &d.mask, &[s]))
            .collect();
        let worst_clean = (0..cfg.samples)
            .filter(|s| !outliers.contains(s))
            .map(|s| per_sample[s])
            .fold(f64::INFINITY, f64::min);
        let best_outlier = outliers
            .iter()
            .map(|&s| per_sample[s])
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            best_outlier < worst_clean - 10.0,
            "outliers {best_outlier:.1} dB, clean samples >= {worst_clean:.1} dB: {per_sample:?}"
        );
    }

    /// Sizes, own SQNRs and the time to build each configuration's dump. Run with
    /// `cargo test --release --all-features --test models tiny_bert_report -- --ignored --nocapture`.
    #[test]
    #[ignore = "report; run with --ignored --nocapture"]
    fn tiny_bert_report() {
        for (label, cfg) in [
            ("tiny", BertConfig::tiny()),
            ("minilm_shaped", BertConfig::minilm_shaped()),
        ] {
            for quantization in [Quantization::Dynamic, Quantization::Static] {
                let injected = format!("encoder.layer.{}.intermediate.dense", cfg.layers - 1);
                for inject in [None, Some((injected.clone(), 3u8))] {
                    let opts = DumpOptions {
                        inject_bits: inject.clone(),
                        ..DumpOptions::full(quantization)
                    };
                    let start = std::time::Instant::now();
                    let d = bert_dump(&cfg, &opts).expect("dump");
                    let secs = start.elapsed().as_secs_f64();
                    println!(
                        "{label} {quantization:?} inject={inject:?}: {secs:.2} s, float {} B, quant {} B",
                        d.float.len(),
                        d.quant.len()
                    );
                    let mut by_kind: Vec<(String, f64, f64)> = Vec::new();
                    for (name, db) in own_sqnrs(&d) {
                        if name == injected && inject.is_some() {
                            println!("  injected {name}: {db:.1} dB");
                            continue;
                        }
                        let kind = name.splitn(4, '.').nth(3).expect("kind").to_string();
                        match by_kind.iter_mut().find(|(k, _, _)| *k == kind) {
                            Some(e) => {
                                e.1 = e.1.min(db);
                                e.2 = e.2.max(db);
                            }
                            None => by_kind.push((kind, db, db)),
                        }
                    }
                    for (kind, lo, hi) in by_kind {
                        println!("  {kind}: {lo:.1}..{hi:.1} dB");
                    }
                }
            }
        }
    }
}
