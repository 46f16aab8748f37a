//! The kernel check for custom int8 backends: run a caller's kernel beside the reference
//! `dequantize → f32 op → quantize` on generated inputs (random, exact ties, saturation,
//! extreme zero points and scales; deterministic seeds) and on real activations, and report
//! the differences in quanta.

use std::fmt;

use ndarray::{ArrayD, IxDyn};

use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::nn::quantized::{QuantizedAdd, QuantizedConv2d, QuantizedLinear};
use crate::nn::{Activation, ConvGeometry};
use crate::qparams::{PerChannelQParams, QParams};
use crate::tensor::QuantizedTensor;

/// The int8 operation a kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum KernelOp {
    /// float → quint8 with per-tensor parameters.
    Quantize,
    /// quint8 `[N, K]` × qint8 `[O, K]` (+ float bias) → quint8 `[N, O]`.
    Linear,
    /// quint8 `[N, C, H, W]` ⊛ qint8 `[O, C/groups, kh, kw]` (+ float bias) → quint8.
    Conv2d,
    /// quint8 + quint8 → quint8.
    Add,
}

/// One input of a kernel check: the operands of the operation and its output parameters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum KernelInputs {
    /// Inputs of [`KernelOp::Quantize`].
    Quantize {
        /// The float values.
        x: ArrayD<f32>,
        /// The quint8 parameters.
        qparams: QParams,
    },
    /// Inputs of [`KernelOp::Linear`].
    Linear {
        /// The activation `[N, K]`.
        x: QuantizedTensor<u8>,
        /// The weight `[O, K]`, per tensor or per output channel.
        weight: QuantizedTensor<i8>,
        /// The float bias `[O]`.
        bias: Option<ArrayD<f32>>,
        /// The output parameters (quint8).
        output: QParams,
    },
    /// Inputs of [`KernelOp::Conv2d`].
    Conv2d {
        /// The activation `[N, C, H, W]`.
        x: QuantizedTensor<u8>,
        /// The weight `[O, C/groups, kh, kw]`.
        weight: QuantizedTensor<i8>,
        /// The float bias `[O]`.
        bias: Option<ArrayD<f32>>,
        /// Stride, padding (with the input zero point), dilation, groups.
        geometry: ConvGeometry,
        /// The output parameters (quint8).
        output: QParams,
    },
    /// Inputs of [`KernelOp::Add`].
    Add {
        /// The first operand.
        a: QuantizedTensor<u8>,
        /// The second operand (same shape).
        b: QuantizedTensor<u8>,
        /// The output parameters (quint8).
        output: QParams,
    },
}

impl KernelInputs {
    /// The operation these inputs are for.
    #[must_use]
    pub fn op(&self) -> KernelOp {
        match self {
            KernelInputs::Quantize { .. } => KernelOp::Quantize,
            KernelInputs::Linear { .. } => KernelOp::Linear,
            KernelInputs::Conv2d { .. } => KernelOp::Conv2d,
            KernelInputs::Add { .. } => KernelOp::Add,
        }
    }

    /// The reference result: `dequantize → f32 op → quantize`.
    ///
    /// # Errors
    /// Inputs the crate's layers refuse (shapes, dtypes, geometry).
    pub fn reference(&self) -> Result<ArrayD<u8>> {
        let q = match self {
            KernelInputs::Quantize { x, qparams } => return crate::kernels::quantize(x, qparams),
            KernelInputs::Linear {
                x,
                weight,
                bias,
                output,
            } => QuantizedLinear::new(weight.clone(), bias.clone(), *output)?
                .forward_reference(&Activation::Quantized(x.clone()))?,
            KernelInputs::Conv2d {
                x,
                weight,
                bias,
                geometry,
                output,
            } => QuantizedConv2d::new(weight.clone(), bias.clone(), *geometry, *output)?
                .forward_reference(&Activation::Quantized(x.clone()))?,
            KernelInputs::Add { a, b, output } => QuantizedAdd::new(*output)?.forward_reference(
                &Activation::Quantized(a.clone()),
                &Activation::Quantized(b.clone()),
            )?,
        };
        Ok(q.need_quantized("KernelInputs::reference")?
            .int_repr()
            .clone())
    }
}

/// Which inputs a group of cases exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CaseKind {
    /// Random operands and parameters, outputs spread over the range.
    Random,
    /// Results exactly halfway between two integers (round half to even).
    Ties,
    /// Outputs beyond `0..=255`, and activations at 255 against weights at ±127.
    Saturation,
    /// Zero points at the ends of their ranges.
    ExtremeZeroPoints,
    /// Very small and very large scales.
    ExtremeScales,
    /// Inputs the caller supplied (real activations).
    Real,
}

/// Differences between a kernel's outputs and the reference's, in quanta.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DiffStats {
    /// Values compared.
    pub values: u64,
    /// Values equal to the reference.
    pub exact: u64,
    /// Values one quantum away.
    pub off_by_one: u64,
    /// Values more than one quantum away.
    pub larger: u64,
    /// Largest `|kernel − reference|`.
    pub max_abs_diff: u32,
    /// `Σ (kernel − reference)`.
    pub sum_diff: i64,
    /// Cases where the kernel returned an error or a wrongly shaped output.
    pub failed_cases: u64,
}

impl DiffStats {
    pub(crate) fn add_values(&mut self, kernel: &[u8], reference: &[u8]) {
        for (&k, &r) in kernel.iter().zip(reference) {
            let d = i64::from(k) - i64::from(r);
            self.values += 1;
            self.sum_diff += d;
            match d.unsigned_abs() {
                0 => self.exact += 1,
                1 => self.off_by_one += 1,
                _ => self.larger += 1,
            }
            self.max_abs_diff = self.max_abs_diff.max(d.unsigned_abs() as u32);
        }
    }

    fn merge(&mut self, o: &DiffStats) {
        self.values += o.values;
        self.exact += o.exact;
        self.off_by_one += o.off_by_one;
        self.larger += o.larger;
        self.max_abs_diff = self.max_abs_diff.max(o.max_abs_diff);
        self.sum_diff += o.sum_diff;
        self.failed_cases += o.failed_cases;
    }

    /// Mean signed difference (systematic bias), in quanta (0 with no values).
    #[must_use]
    pub fn mean_diff(&self) -> f64 {
        if self.values == 0 {
            0.0
        } else {
            self.sum_diff as f64 / self.values as f64
        }
    }

    /// Fraction of values one quantum away.
    #[must_use]
    pub fn off_by_one_fraction(&self) -> f64 {
        if self.values == 0 {
            0.0
        } else {
            self.off_by_one as f64 / self.values as f64
        }
    }
}

/// How much disagreement with the reference a kernel may show.
///
/// [`KernelTolerance::default`] accepts what a correct integer kernel shows against the
/// float reference (integer accumulation and requantization in another order: rare
/// off-by-one values with no bias): at most 1 quantum, at most 2% of values off by one, a
/// mean difference within ±0.02 quanta, and no failed case.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KernelTolerance {
    /// Largest allowed `|kernel − reference|` in quanta.
    pub max_abs_diff: u32,
    /// Largest allowed fraction of values one quantum away.
    pub max_off_by_one_fraction: f64,
    /// Largest allowed `|mean difference|` in quanta.
    pub max_abs_mean_diff: f64,
}

impl Default for KernelTolerance {
    fn default() -> Self {
        KernelTolerance {
            max_abs_diff: 1,
            max_off_by_one_fraction: 0.02,
            max_abs_mean_diff: 0.02,
        }
    }
}

impl KernelTolerance {
    /// Whether differences are within this tolerance (and no case failed).
    #[must_use]
    pub fn accepts(&self, s: &DiffStats) -> bool {
        s.failed_cases == 0
            && s.max_abs_diff <= self.max_abs_diff
            && s.off_by_one_fraction() <= self.max_off_by_one_fraction
            && s.mean_diff().abs() <= self.max_abs_mean_diff
    }

    /// Bit-exact agreement (for kernels that promise exactness).
    #[must_use]
    pub fn exact() -> Self {
        KernelTolerance {
            max_abs_diff: 0,
            max_off_by_one_fraction: 0.0,
            max_abs_mean_diff: 0.0,
        }
    }
}

/// What a kernel check concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum KernelVerdict {
    /// Every value equals the reference.
    Exact,
    /// Small differences within the tolerance (rounding order, integer accumulation).
    WithinTolerance,
    /// Larger or systematic differences, or failed cases: a bug to report to the kernel's
    /// author.
    Mismatch,
}

/// The first case with the largest difference.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WorstCase {
    /// Its kind.
    pub kind: CaseKind,
    /// Its index among the cases of that kind.
    pub index: usize,
    /// Flat index of the worst value.
    pub value_index: usize,
    /// The kernel's value.
    pub kernel: u8,
    /// The reference's value.
    pub reference: u8,
}

/// The result of a kernel check.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KernelReport {
    /// The operation checked.
    pub op: KernelOp,
    /// Differences per kind of case.
    pub by_kind: Vec<(CaseKind, DiffStats)>,
    /// All cases together.
    pub total: DiffStats,
    /// Where the largest difference was.
    pub worst: Option<WorstCase>,
    /// The first kernel error or shape mismatch, as text.
    pub first_failure: Option<String>,
}

impl KernelReport {
    /// The verdict under a tolerance.
    #[must_use]
    pub fn verdict(&self, tol: &KernelTolerance) -> KernelVerdict {
        let t = &self.total;
        if t.failed_cases > 0 {
            return KernelVerdict::Mismatch;
        }
        if t.values == t.exact {
            return KernelVerdict::Exact;
        }
        // Every kind of case must be within the tolerance on its own: a bias hidden in the
        // ties cases must not be averaged away by the random ones.
        if self.by_kind.iter().all(|(_, s)| tol.accepts(s)) {
            KernelVerdict::WithinTolerance
        } else {
            KernelVerdict::Mismatch
        }
    }

    /// Whether the verdict under `tol` is not [`KernelVerdict::Mismatch`].
    #[must_use]
    pub fn is_within(&self, tol: &KernelTolerance) -> bool {
        self.verdict(tol) != KernelVerdict::Mismatch
    }

    /// The one-line assertion for a backend's unit tests.
    ///
    /// # Panics
    /// When the verdict under `tol` is [`KernelVerdict::Mismatch`], with this report as the
    /// message.
    #[track_caller]
    pub fn assert_within(&self, tol: &KernelTolerance) {
        assert!(
            self.is_within(tol),
            "int8 kernel disagrees with the reference:\n{self}"
        );
    }
}

impl fmt::Display for KernelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<18} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>6}",
            "cases", "values", "exact", "off-by-1", "larger", "max", "mean diff", "failed"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &DiffStats| {
            writeln!(
                f,
                "{:<18} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9.4} {:>6}",
                name,
                s.values,
                s.exact,
                s.off_by_one,
                s.larger,
                s.max_abs_diff,
                s.mean_diff(),
                s.failed_cases
            )
        };
        for (k, s) in &self.by_kind {
            row(f, &format!("{k:?}"), s)?;
        }
        row(f, "total", &self.total)?;
        if let Some(w) = &self.worst {
            writeln!(
                f,
                "worst: {:?} case {} value {}: kernel {} reference {}",
                w.kind, w.index, w.value_index, w.kernel, w.reference
            )?;
        }
        if let Some(e) = &self.first_failure {
            writeln!(f, "first failure: {e}")?;
        }
        Ok(())
    }
}

/// Deterministic pseudo-random numbers (64-bit LCG, the high bits).
#[derive(Debug, Clone)]
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }

    /// Uniform in `[lo, hi)`.
    fn float(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() % (1 << 24)) as f32 / (1 << 24) as f32
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// A kernel check: generated cases of each [`CaseKind`] (and real inputs, if given) run
/// through the caller's kernel and the reference.
///
/// # Examples
/// A backend's unit test: its linear kernel (here the crate's own integer path) against the
/// reference.
/// ```
/// use qnumeric::diagnose::{KernelCheck, KernelInputs, KernelOp, KernelTolerance};
/// use qnumeric::nn::quantized::QuantizedLinear;
/// use qnumeric::nn::{Activation, Module};
///
/// let report = KernelCheck::new(KernelOp::Linear).run(|inputs| match inputs {
///     KernelInputs::Linear { x, weight, bias, output } => {
///         let layer = QuantizedLinear::new(weight.clone(), bias.clone(), *output)?;
///         let y = layer.forward(&Activation::Quantized(x.clone()))?;
///         Ok(y.as_quantized()?.int_repr().clone())
///     }
///     _ => unreachable!("a Linear check only generates Linear inputs"),
/// })?;
/// report.assert_within(&KernelTolerance::default());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone)]
pub struct KernelCheck {
    op: KernelOp,
    seed: u64,
    cases_per_kind: usize,
    real: Vec<KernelInputs>,
}

impl KernelCheck {
    /// A check of `op` with seed 0 and 16 generated cases per kind.
    #[must_use]
    pub fn new(op: KernelOp) -> Self {
        KernelCheck {
            op,
            seed: 0,
            cases_per_kind: 16,
            real: Vec::new(),
        }
    }

    /// Another seed for the generated cases.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Another number of generated cases per kind (at least 1).
    #[must_use]
    pub fn cases_per_kind(mut self, n: usize) -> Self {
        self.cases_per_kind = n.max(1);
        self
    }

    /// Real inputs (e.g. a layer's activations captured from a model run), checked as
    /// [`CaseKind::Real`].
    #[must_use]
    pub fn with_real_inputs(mut self, inputs: impl IntoIterator<Item = KernelInputs>) -> Self {
        self.real.extend(inputs);
        self
    }

    /// The generated inputs of one kind, in order (what [`KernelCheck::run`] feeds the kernel).
    ///
    /// # Errors
    /// Only if generation builds parameters the crate refuses (a bug: the generator keeps
    /// every value valid).
    pub fn generate(&self, kind: CaseKind) -> Result<Vec<KernelInputs>> {
        if kind == CaseKind::Real {
            return Ok(self.real.clone());
        }
        let mut rng = Lcg(self.seed ^ (kind as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..self.cases_per_kind)
            .map(|_| generate(self.op, kind, &mut rng))
            .collect()
    }

    /// Runs the kernel on every case and compares it with the reference.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedLayer`] when a real input is for another operation; errors of
    /// the reference on real inputs the crate refuses. The kernel's own errors are not
    /// errors of the check: they are counted as failed cases.
    pub fn run<F>(&self, mut kernel: F) -> Result<KernelReport>
    where
        F: FnMut(&KernelInputs) -> Result<ArrayD<u8>>,
    {
        if let Some(bad) = self.real.iter().find(|r| r.op() != self.op) {
            return Err(QuantError::UnsupportedLayer {
                op: "KernelCheck::run",
                kind: format!("{:?}", bad.op()),
                reason: "a real input is for another operation than the check's",
            });
        }
        let mut report = KernelReport {
            op: self.op,
            by_kind: Vec::new(),
            total: DiffStats::default(),
            worst: None,
            first_failure: None,
        };
        let kinds = [
            CaseKind::Random,
            CaseKind::Ties,
            CaseKind::Saturation,
            CaseKind::ExtremeZeroPoints,
            CaseKind::ExtremeScales,
            CaseKind::Real,
        ];
        for kind in kinds {
            let cases = self.generate(kind)?;
            if cases.is_empty() {
                continue;
            }
            let mut stats = DiffStats::default();
            for (index, case) in cases.iter().enumerate() {
                let reference = case.reference()?;
                let got = match kernel(case) {
                    Ok(k) if k.shape() == reference.shape() => k,
                    Ok(k) => {
                        stats.failed_cases += 1;
                        report.first_failure.get_or_insert_with(|| {
                            format!(
                                "{kind:?} case {index}: output shape {:?}, expected {:?}",
                                k.shape(),
                                reference.shape()
                            )
                        });
                        continue;
                    }
                    Err(e) => {
                        stats.failed_cases += 1;
                        report
                            .first_failure
                            .get_or_insert_with(|| format!("{kind:?} case {index}: {e}"));
                        continue;
                    }
                };
                let (k, r): (Vec<u8>, Vec<u8>) = (
                    got.iter().copied().collect(),
                    reference.iter().copied().collect(),
                );
                stats.add_values(&k, &r);
                if let Some((i, (&kv, &rv))) = k
                    .iter()
                    .zip(&r)
                    .enumerate()
                    .max_by_key(|&(ref i, (&a, &b))| (a.abs_diff(b), std::cmp::Reverse(*i)))
                {
                    let d = u32::from(kv.abs_diff(rv));
                    let better = report
                        .worst
                        .as_ref()
                        .is_none_or(|w| d > u32::from(w.kernel.abs_diff(w.reference)));
                    if d > 0 && better {
                        report.worst = Some(WorstCase {
                            kind,
                            index,
                            value_index: i,
                            kernel: kv,
                            reference: rv,
                        });
                    }
                }
            }
            report.total.merge(&stats);
            report.by_kind.push((kind, stats));
        }
        Ok(report)
    }
}

fn quint8(scale: f32, zp: i64) -> Result<QParams> {
    QParams::new(scale, zp.clamp(0, 255), QDType::QUInt8)
}

/// A quint8 tensor of random stored values in `lo..=hi`.
fn activation(
    rng: &mut Lcg,
    shape: &[usize],
    lo: i64,
    hi: i64,
    qp: QParams,
) -> Result<QuantizedTensor<u8>> {
    let n: usize = shape.iter().product();
    let data: Vec<u8> = (0..n).map(|_| rng.int(lo, hi) as u8).collect();
    QuantizedTensor::from_parts(
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("n values"),
        qp,
    )
}

/// A qint8 weight `[o, ...]` with per-channel scales.
fn weight(
    rng: &mut Lcg,
    shape: &[usize],
    lo: i64,
    hi: i64,
    scales: Vec<f32>,
) -> Result<QuantizedTensor<i8>> {
    let n: usize = shape.iter().product();
    let data: Vec<i8> = (0..n).map(|_| rng.int(lo, hi) as i8).collect();
    let o = shape[0];
    let qp = PerChannelQParams::new(scales, vec![0; o], 0, QDType::QInt8)?;
    QuantizedTensor::from_parts(
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("n values"),
        qp,
    )
}

/// Output parameters whose range covers `[lo, hi]` (and 0).
fn covering(lo: f32, hi: f32) -> Result<QParams> {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-6);
    quint8(scale, (-lo / scale).round_ties_even() as i64)
}

/// The float output `dequantize → f32 op` (no requantization).
fn reference_float(
    x: &QuantizedTensor<u8>,
    weight: &QuantizedTensor<i8>,
    bias: Option<&ArrayD<f32>>,
    geometry: ConvGeometry,
    conv: bool,
) -> Result<ArrayD<f32>> {
    const OP: &str = "KernelCheck::generate";
    let core = crate::nn::WeightedCore::new(weight.to_float(), bias.cloned())?;
    if conv {
        crate::nn::conv::conv_float(OP, x.to_float().view(), core.weight_view(), &core, geometry)
    } else {
        crate::nn::linear::linear_float(OP, &x.to_float(), &core)
    }
}

fn float_range(f: &ArrayD<f32>) -> (f32, f32) {
    f.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        })
}

/// The operands' parameters per kind: (x scale, x zp range, out zp override, scale factor).
fn generate(op: KernelOp, kind: CaseKind, rng: &mut Lcg) -> Result<KernelInputs> {
    match op {
        KernelOp::Quantize => {
            let n = rng.pick(&[1usize, 7, 64]);
            let (scale, zp) = match kind {
                CaseKind::Ties => (rng.pick(&[0.5f32, 0.25, 1.0, 2.0]), rng.int(0, 255)),
                CaseKind::ExtremeScales => {
                    (rng.pick(&[1e-30f32, 1e-10, 1e10, 1e30]), rng.int(0, 255))
                }
                CaseKind::ExtremeZeroPoints => (rng.float(0.001, 0.1), rng.pick(&[0i64, 255])),
                _ => (rng.float(0.001, 0.1), rng.int(0, 255)),
            };
            let qparams = quint8(scale, zp)?;
            let x: Vec<f32> = (0..n)
                .map(|_| match kind {
                    CaseKind::Ties => (rng.int(-200, 200) as f32 + 0.5) * scale,
                    CaseKind::Saturation => {
                        rng.pick(&[-1.0f32, 1.0]) * scale * rng.float(256.0, 1e6)
                    }
                    _ => (rng.int(-300, 300) as f32 + rng.float(-0.5, 0.5)) * scale,
                })
                .collect();
            Ok(KernelInputs::Quantize {
                x: ArrayD::from_shape_vec(IxDyn(&[n]), x).expect("n values"),
                qparams,
            })
        }
        KernelOp::Linear | KernelOp::Conv2d => {
            let conv = op == KernelOp::Conv2d;
            let (n, o) = (rng.int(1, 3) as usize, rng.pick(&[1usize, 3, 8]));
            let geometry = if conv {
                let s = rng.int(1, 2) as usize;
                ConvGeometry::default()
                    .stride(s, s)
                    .padding(rng.int(0, 1) as usize, rng.int(0, 1) as usize)
                    .dilation(rng.int(1, 2) as usize, 1)
                    .groups(if o % 2 == 0 {
                        rng.pick(&[1usize, 2])
                    } else {
                        1
                    })
            } else {
                ConvGeometry::default()
            };
            let cg = rng.pick(&[1usize, 2, 3]);
            let (xshape, wshape) = if conv {
                let (h, w) = (rng.int(5, 8) as usize, rng.int(5, 8) as usize);
                let (kh, kw) = (rng.pick(&[1usize, 2, 3]), rng.pick(&[1usize, 3]));
                (vec![n, cg * geometry.groups, h, w], vec![o, cg, kh, kw])
            } else {
                let k = rng.pick(&[1usize, 7, 16, 33]);
                (vec![n, k], vec![o, k])
            };
            let (sx, sw, zx, xlo, xhi, wlo, whi) = match kind {
                CaseKind::Ties => (1.0f32, 1.0f32, 0, 0, 5, -3, 3),
                CaseKind::Saturation => (
                    rng.float(0.01, 0.05),
                    rng.float(0.005, 0.02),
                    0,
                    200,
                    255,
                    100,
                    127,
                ),
                CaseKind::ExtremeZeroPoints => {
                    let zx = rng.pick(&[0i64, 255]);
                    (
                        rng.float(0.01, 0.05),
                        rng.float(0.005, 0.02),
                        zx,
                        0,
                        255,
                        -127,
                        127,
                    )
                }
                CaseKind::ExtremeScales => {
                    let sx = rng.pick(&[1e-6f32, 1e-3, 10.0, 1e3]);
                    (
                        sx,
                        rng.pick(&[1e-6f32, 1e-3, 1.0]),
                        rng.int(0, 255),
                        0,
                        255,
                        -127,
                        127,
                    )
                }
                _ => (
                    rng.float(0.005, 0.05),
                    rng.float(0.001, 0.02),
                    rng.int(0, 255),
                    0,
                    255,
                    -127,
                    127,
                ),
            };
            let x = activation(rng, &xshape, xlo, xhi, quint8(sx, zx)?)?;
            let scales: Vec<f32> = (0..o)
                .map(|_| {
                    if kind == CaseKind::Ties {
                        sw
                    } else {
                        sw * rng.float(0.5, 1.5)
                    }
                })
                .collect();
            let weight = weight(rng, &wshape, wlo, whi, scales)?;
            let bias = match kind {
                CaseKind::Ties => Some(
                    ArrayD::from_shape_vec(
                        IxDyn(&[o]),
                        (0..o).map(|_| rng.int(-3, 3) as f32).collect(),
                    )
                    .expect("o values"),
                ),
                _ if rng.int(0, 1) == 0 => None,
                _ => Some(
                    ArrayD::from_shape_vec(
                        IxDyn(&[o]),
                        (0..o)
                            .map(|_| rng.float(-1.0, 1.0) * sx * sw * 50.0)
                            .collect(),
                    )
                    .expect("o values"),
                ),
            };
            // Output parameters: ties halve integers (scale 2); saturation squeezes the range;
            // the other kinds cover the float output (zero points forced to an end for
            // ExtremeZeroPoints).
            let y = reference_float(&x, &weight, bias.as_ref(), geometry, conv)?;
            let (lo, hi) = float_range(&y);
            let output = match kind {
                CaseKind::Ties => quint8(2.0, 128)?,
                CaseKind::Saturation => quint8(((hi - lo) / 2000.0).max(1e-6), 128)?,
                CaseKind::ExtremeZeroPoints => {
                    let zo = rng.pick(&[0i64, 255]);
                    let span = lo.abs().max(hi.abs()).max(1e-6);
                    quint8(span / 255.0, zo)?
                }
                _ => covering(lo, hi)?,
            };
            Ok(if conv {
                KernelInputs::Conv2d {
                    x,
                    weight,
                    bias,
                    geometry,
                    output,
                }
            } else {
                KernelInputs::Linear {
                    x,
                    weight,
                    bias,
                    output,
                }
            })
        }
        KernelOp::Add => {
            let n = rng.pick(&[1usize, 5, 32]);
            let (sa, sb, so, za, zb, zo) = match kind {
                CaseKind::Ties => (
                    1.0f32,
                    1.0f32,
                    2.0f32,
                    rng.int(0, 255),
                    rng.int(0, 255),
                    128,
                ),
                CaseKind::Saturation => (0.1, 0.1, 0.001, rng.int(0, 255), rng.int(0, 255), 128),
                CaseKind::ExtremeZeroPoints => (
                    rng.float(0.01, 0.1),
                    rng.float(0.01, 0.1),
                    rng.float(0.02, 0.2),
                    rng.pick(&[0i64, 255]),
                    rng.pick(&[0i64, 255]),
                    rng.pick(&[0i64, 255]),
                ),
                CaseKind::ExtremeScales => {
                    let s = rng.pick(&[1e-20f32, 1e-6, 1e6, 1e20]);
                    (
                        s,
                        s * rng.float(0.5, 2.0),
                        s * 2.0,
                        rng.int(0, 255),
                        rng.int(0, 255),
                        128,
                    )
                }
                _ => (
                    rng.float(0.01, 0.1),
                    rng.float(0.01, 0.1),
                    rng.float(0.02, 0.2),
                    rng.int(0, 255),
                    rng.int(0, 255),
                    rng.int(0, 255),
                ),
            };
            Ok(KernelInputs::Add {
                a: activation(rng, &[n], 0, 255, quint8(sa, za)?)?,
                b: activation(rng, &[n], 0, 255, quint8(sb, zb)?)?,
                output: quint8(so, zo)?,
            })
        }
    }
}
