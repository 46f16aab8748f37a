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
use crate::rng::Lcg;
use crate::tensor::QuantizedTensor;

/// The most generated cases per kind a check builds ([`KernelCheck::cases_per_kind`]): a
/// million, each a few small tensors.
pub const MAX_CASES_PER_KIND: usize = 1 << 20;

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

/// How the generated weights of Linear and Conv2d cases are quantized: what the backend
/// under test supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WeightScheme {
    /// qint8, one scale per output channel, zero points 0 (PyTorch's x86 default).
    #[default]
    PerChannelSymmetric,
    /// qint8, one scale per output channel, zero points in `-20..=20`.
    PerChannelAffine,
    /// qint8, one scale, zero point 0.
    PerTensorSymmetric,
    /// qint8, one scale, a zero point in `-20..=20`.
    PerTensorAffine,
}

/// What a kernel is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum KernelReference {
    /// `dequantize → f32 op → quantize` (the default): what the layer means. An integer
    /// kernel differs from it by rare off-by-one values (accumulation and requantization in
    /// another order): use [`KernelTolerance::default`].
    #[default]
    Float,
    /// PyTorch's integer path (fbgemm's): exact `i32` accumulation, then
    /// `clamp(rne((acc·sx·sw[o] + bias[o]) / so) + zo)` in `f32` (the crate's int8 layers,
    /// exact accumulation). A kernel bit-exact with PyTorch passes
    /// [`KernelTolerance::exact`] against it.
    Integer,
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

    /// The reference result: `dequantize → f32 op → quantize`
    /// ([`KernelReference::Float`]).
    ///
    /// # Errors
    /// Inputs the crate's layers refuse (shapes, dtypes, geometry).
    pub fn reference(&self) -> Result<ArrayD<u8>> {
        self.reference_with(KernelReference::Float)
    }

    /// The result of `reference` on these inputs.
    ///
    /// # Errors
    /// Inputs the crate's layers refuse (shapes, dtypes, geometry).
    pub fn reference_with(&self, reference: KernelReference) -> Result<ArrayD<u8>> {
        if reference == KernelReference::Integer {
            return self.integer_reference();
        }
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

    /// The crate's integer path (exact accumulation).
    fn integer_reference(&self) -> Result<ArrayD<u8>> {
        use crate::nn::Module;
        let q = match self {
            KernelInputs::Quantize { x, qparams } => return crate::kernels::quantize(x, qparams),
            KernelInputs::Linear {
                x,
                weight,
                bias,
                output,
            } => QuantizedLinear::new(weight.clone(), bias.clone(), *output)?
                .forward(&Activation::Quantized(x.clone()))?,
            KernelInputs::Conv2d {
                x,
                weight,
                bias,
                geometry,
                output,
            } => QuantizedConv2d::new(weight.clone(), bias.clone(), *geometry, *output)?
                .forward(&Activation::Quantized(x.clone()))?,
            KernelInputs::Add { a, b, output } => QuantizedAdd::new(*output)?.forward_many(&[
                &Activation::Quantized(a.clone()),
                &Activation::Quantized(b.clone()),
            ])?,
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
    /// Outputs beyond both ends of `0..=255` (clipped at 0 and at 255): activations at both
    /// ends of their range against weights at both ends of theirs.
    Saturation,
    /// Zero points at the ends of their ranges.
    ExtremeZeroPoints,
    /// Very small and very large scales.
    ExtremeScales,
    /// Values chosen where the rounding paths the crate's conventions name disagree:
    /// multiplying by `f32(1/scale)` against dividing by the scale (quantize, Add), dividing
    /// the requantized accumulator by the output scale against multiplying by its reciprocal
    /// (Linear); a kernel on the other path fails `KernelTolerance::exact()` here.
    RoundingPaths,
    /// Inputs the caller supplied (real activations).
    Real,
}

impl CaseKind {
    /// Every kind, in the order [`KernelCheck::run`] runs them.
    pub const ALL: [CaseKind; 7] = [
        CaseKind::Random,
        CaseKind::Ties,
        CaseKind::Saturation,
        CaseKind::ExtremeZeroPoints,
        CaseKind::ExtremeScales,
        CaseKind::RoundingPaths,
        CaseKind::Real,
    ];
}

/// Differences between a kernel's outputs and the reference's, in quanta.
///
/// Deserialization validates the counts (`exact + off_by_one + larger == values`, the largest
/// difference and the sum consistent with them): inconsistent counts are refused, never
/// carried into arithmetic that would underflow.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "DiffStatsRepr"))]
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

/// The serialized form of [`DiffStats`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct DiffStatsRepr {
    values: u64,
    exact: u64,
    off_by_one: u64,
    larger: u64,
    max_abs_diff: u32,
    sum_diff: i64,
    failed_cases: u64,
}

#[cfg(feature = "serde")]
impl TryFrom<DiffStatsRepr> for DiffStats {
    type Error = QuantError;

    fn try_from(r: DiffStatsRepr) -> Result<Self> {
        let bad = |reason| {
            Err(QuantError::InvalidParameter {
                op: "DiffStats::deserialize",
                what: "counts",
                value: r.values as f64,
                reason,
            })
        };
        let parts = r
            .exact
            .checked_add(r.off_by_one)
            .and_then(|v| v.checked_add(r.larger));
        if parts != Some(r.values) {
            return bad("exact + off_by_one + larger must equal values");
        }
        if (r.larger > 0) != (r.max_abs_diff > 1) || (r.values == r.exact) != (r.max_abs_diff == 0)
        {
            return bad("max_abs_diff does not match the counts");
        }
        let most = u128::from(r.max_abs_diff) * u128::from(r.values - r.exact);
        if u128::from(r.sum_diff.unsigned_abs()) > most {
            return bad("|sum_diff| exceeds max_abs_diff times the differing values");
        }
        Ok(DiffStats {
            values: r.values,
            exact: r.exact,
            off_by_one: r.off_by_one,
            larger: r.larger,
            max_abs_diff: r.max_abs_diff,
            sum_diff: r.sum_diff,
            failed_cases: r.failed_cases,
        })
    }
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

    /// Checks the fractions: finite, `>= 0`, the off-by-one fraction at most 1 (a NaN
    /// tolerance would accept or refuse arbitrarily).
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        super::verdict::check_kernel_tolerance("KernelTolerance::validate", self)
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
    /// What it was compared with.
    pub reference: KernelReference,
    /// Differences per kind of case.
    pub by_kind: Vec<(CaseKind, DiffStats)>,
    /// All cases together.
    pub total: DiffStats,
    /// Where the largest difference was.
    pub worst: Option<WorstCase>,
    /// The first kernel error, panic or shape mismatch, as text.
    pub first_failure: Option<String>,
    /// The first case that disagreed, shrunk to a minimal one (in JSON: its Rust code).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "minimal_as_rust", skip_deserializing)
    )]
    pub minimal: Option<MinimalCase>,
}

#[cfg(feature = "serde")]
fn minimal_as_rust<S: serde::Serializer>(
    m: &Option<MinimalCase>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_str(&m.to_rust()),
        None => s.serialize_none(),
    }
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
        // ties cases must not be averaged away by the random ones. The rounding-path cases
        // sit where valid paths disagree by one quantum: a tolerance that allows one quantum
        // only bounds their size there; `exact()` holds them to the chosen reference.
        let accepts = |k: &CaseKind, s: &DiffStats| {
            if *k == CaseKind::RoundingPaths && tol.max_abs_diff > 0 {
                s.failed_cases == 0 && s.max_abs_diff <= tol.max_abs_diff
            } else {
                tol.accepts(s)
            }
        };
        if self.by_kind.iter().all(|(k, s)| accepts(k, s)) {
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
        if let Some(m) = &self.minimal {
            writeln!(f, "the first disagreeing case, shrunk:\n{m}")?;
        }
        Ok(())
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
/// // The kernel's error type is named in its signature (here the crate's own).
/// let report = KernelCheck::new(KernelOp::Linear).run(|inputs| -> qnumeric::Result<_> {
///     match inputs {
///         KernelInputs::Linear { x, weight, bias, output } => {
///             let layer = QuantizedLinear::new(weight.clone(), bias.clone(), *output)?;
///             let y = layer.forward(&Activation::Quantized(x.clone()))?;
///             Ok(y.as_quantized()?.int_repr().clone())
///         }
///         _ => unreachable!("a Linear check only generates Linear inputs"),
///     }
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
    weights: WeightScheme,
    reference: KernelReference,
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
            weights: WeightScheme::default(),
            reference: KernelReference::default(),
        }
    }

    /// How generated weights are quantized (what the backend supports; default
    /// [`WeightScheme::PerChannelSymmetric`]).
    #[must_use]
    pub fn weights(mut self, scheme: WeightScheme) -> Self {
        self.weights = scheme;
        self
    }

    /// What the kernel is compared with (default [`KernelReference::Float`]).
    #[must_use]
    pub fn reference(mut self, reference: KernelReference) -> Self {
        self.reference = reference;
        self
    }

    /// Another seed for the generated cases.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Another number of generated cases per kind (at least 1; more than
    /// [`MAX_CASES_PER_KIND`] is refused by [`KernelCheck::run`]).
    #[must_use]
    pub fn cases_per_kind(mut self, n: usize) -> Self {
        self.cases_per_kind = n.max(1);
        self
    }

    /// The real inputs of one int8 layer of `model` on `data` (sample axis first), captured
    /// with a [`LayerHook`](crate::nn::LayerHook) during one run: what
    /// [`KernelCheck::with_real_inputs`] takes. The layer is a
    /// [`QuantizedLinear`] (inputs flattened to rows), [`QuantizedConv2d`], [`QuantizedAdd`]
    /// or a quantize step ([`crate::nn::quantized::Quantize`]: the float input and the
    /// output parameters).
    ///
    /// # Errors
    /// [`QuantError::NotFound`] when the model does not run `layer`;
    /// [`QuantError::UnsupportedLayer`] for another kind of layer; errors of the model.
    ///
    /// # Examples
    /// ```
    /// use ndarray::{ArrayD, IxDyn};
    /// use qnumeric::diagnose::{KernelCheck, KernelInputs, KernelOp};
    /// use qnumeric::nn::{Linear, Sequential};
    /// use qnumeric::ptq::{prepare, PtqConfig};
    ///
    /// let w = ArrayD::from_shape_fn(IxDyn(&[4, 3]), |i| (i[0] as f32 - i[1] as f32) * 0.3);
    /// let float = Sequential::new().with("fc", Linear::new(w, None)?)?.with_quant_stubs()?;
    /// let x = ArrayD::from_shape_fn(IxDyn(&[8, 3]), |i| (i[0] + i[1]) as f32 / 10.0);
    /// let mut p = prepare(float, &PtqConfig::default())?;
    /// p.calibrate(&x)?;
    /// let int8 = p.convert()?;
    /// let real = KernelCheck::capture_inputs(&int8, "fc", &x)?;
    /// assert!(matches!(real[0], KernelInputs::Linear { .. }));
    /// let check = KernelCheck::new(KernelOp::Linear).with_real_inputs(real);
    /// assert_eq!(check.generate(qnumeric::diagnose::CaseKind::Real)?.len(), 1);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn capture_inputs<M: crate::nn::Model + ?Sized>(
        model: &M,
        layer: &str,
        data: &ArrayD<f32>,
    ) -> Result<Vec<KernelInputs>> {
        struct Capture<'n> {
            name: &'n str,
            seen: bool,
            out: Vec<KernelInputs>,
        }
        impl crate::nn::LayerHook for Capture<'_> {
            fn after_layer(
                &mut self,
                name: &str,
                layer: &dyn crate::nn::Module,
                inputs: &[&Activation],
                output: &mut Activation,
            ) -> Result<()> {
                if name != self.name {
                    return Ok(());
                }
                self.seen = true;
                const OP: &str = "KernelCheck::capture_inputs";
                let any = layer.as_any();
                let q = |a: &Activation| a.need_quantized(OP).cloned();
                let input = inputs.first().ok_or(QuantError::UnsupportedLayer {
                    op: OP,
                    kind: layer.kind().to_string(),
                    reason: "the layer has no input",
                })?;
                let case = if let Some(l) = any.downcast_ref::<QuantizedLinear>() {
                    let x = q(input)?;
                    let k = l.quantized_weight().shape()[1];
                    let rows = x.int_repr().len() / k.max(1);
                    let data = x
                        .int_repr()
                        .as_standard_layout()
                        .into_owned()
                        .into_shape_with_order(IxDyn(&[rows, k]))
                        .map_err(|_| QuantError::ShapeMismatch {
                            op: OP,
                            expected: vec![rows, k],
                            got: x.shape().to_vec(),
                        })?;
                    KernelInputs::Linear {
                        x: QuantizedTensor::from_parts(data, x.params().clone())?,
                        weight: l.quantized_weight().clone(),
                        bias: crate::nn::Module::bias(l).cloned(),
                        output: *l.output_qparams(),
                    }
                } else if let Some(c) = any.downcast_ref::<QuantizedConv2d>() {
                    KernelInputs::Conv2d {
                        x: q(input)?,
                        weight: c.quantized_weight().clone(),
                        bias: crate::nn::Module::bias(c).cloned(),
                        geometry: c.geometry(),
                        output: *c.output_qparams(),
                    }
                } else if let Some(a) = any.downcast_ref::<QuantizedAdd>() {
                    let b = inputs.get(1).ok_or(QuantError::UnsupportedLayer {
                        op: OP,
                        kind: layer.kind().to_string(),
                        reason: "an Add needs two inputs",
                    })?;
                    KernelInputs::Add {
                        a: q(input)?,
                        b: q(b)?,
                        output: *a.output_qparams(),
                    }
                } else if let (Activation::Float(x), Activation::Quantized(y)) = (input, &*output) {
                    KernelInputs::Quantize {
                        x: x.clone(),
                        qparams: *y.need_per_tensor(OP)?,
                    }
                } else {
                    return Err(QuantError::UnsupportedLayer {
                        op: OP,
                        kind: layer.kind().to_string(),
                        reason: "not an int8 Linear, Conv2d, Add or quantize step",
                    });
                };
                self.out.push(case);
                Ok(())
            }
        }
        let mut cap = Capture {
            name: layer,
            seen: false,
            out: Vec::new(),
        };
        model.run(Activation::Float(data.clone()), &mut cap)?;
        if !cap.seen {
            return Err(QuantError::NotFound {
                op: "KernelCheck::capture_inputs",
                what: "layer (not run by the model)",
                name: layer.to_string(),
            });
        }
        Ok(cap.out)
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
    /// [`QuantError::TooLarge`] when more than [`MAX_CASES_PER_KIND`] cases per kind were
    /// asked for (they are built before the kernel runs); otherwise only if generation builds
    /// parameters the crate refuses (a bug: the generator keeps every value valid).
    pub fn generate(&self, kind: CaseKind) -> Result<Vec<KernelInputs>> {
        if kind == CaseKind::Real {
            return Ok(self.real.clone());
        }
        if self.cases_per_kind > MAX_CASES_PER_KIND {
            return Err(QuantError::TooLarge {
                op: "KernelCheck::generate",
                what: "generated cases per kind",
                elements: self.cases_per_kind,
                max: MAX_CASES_PER_KIND,
            });
        }
        let mut rng = Lcg::new(self.seed ^ (kind as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..self.cases_per_kind)
            .map(|_| generate(self.op, kind, self.weights, &mut rng))
            .collect()
    }

    /// Runs the kernel on every case and compares it with the reference.
    ///
    /// The kernel is any closure `FnMut(&KernelInputs) -> Result<ArrayD<u8>, E>` with
    /// `E: Display` (the backend's own error type, or [`QuantError`]). [`KernelInputs`] is
    /// `#[non_exhaustive]`: match the variant of the checked operation and end with a `_ =>`
    /// arm. A kernel that returns an error, returns an output of the wrong shape, or panics
    /// (caught with `catch_unwind`; the panic message is kept) fails that case: the check
    /// goes on and the report says so. The first case that disagrees is shrunk to a minimal
    /// one ([`KernelReport::minimal`]).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedLayer`] when a real input is for another operation; errors of
    /// the reference on real inputs the crate refuses.
    pub fn run<F, E>(&self, mut kernel: F) -> Result<KernelReport>
    where
        F: FnMut(&KernelInputs) -> std::result::Result<ArrayD<u8>, E>,
        E: fmt::Display,
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
            reference: self.reference,
            by_kind: Vec::new(),
            total: DiffStats::default(),
            worst: None,
            first_failure: None,
            minimal: None,
        };
        let mut first_bad: Option<(CaseKind, usize, KernelInputs)> = None;
        for kind in CaseKind::ALL {
            let cases = self.generate(kind)?;
            if cases.is_empty() {
                continue;
            }
            let mut stats = DiffStats::default();
            for (index, case) in cases.iter().enumerate() {
                let reference = case.reference_with(self.reference)?;
                let got = match call(&mut kernel, case) {
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
                        first_bad.get_or_insert_with(|| (kind, index, case.clone()));
                        continue;
                    }
                    Err(e) => {
                        stats.failed_cases += 1;
                        report
                            .first_failure
                            .get_or_insert_with(|| format!("{kind:?} case {index}: {e}"));
                        first_bad.get_or_insert_with(|| (kind, index, case.clone()));
                        continue;
                    }
                };
                let (k, r): (Vec<u8>, Vec<u8>) = (
                    got.iter().copied().collect(),
                    reference.iter().copied().collect(),
                );
                stats.add_values(&k, &r);
                if k != r {
                    first_bad.get_or_insert_with(|| (kind, index, case.clone()));
                }
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
        if let Some((kind, index, case)) = first_bad {
            report.minimal = Some(shrink(kind, index, case, self.reference, &mut kernel));
        }
        Ok(report)
    }
}

/// The kernel's output on `case`, its error or its panic, as text on failure.
fn call<F, E>(kernel: &mut F, case: &KernelInputs) -> std::result::Result<ArrayD<u8>, String>
where
    F: FnMut(&KernelInputs) -> std::result::Result<ArrayD<u8>, E>,
    E: fmt::Display,
{
    super::format_check::caught(|| kernel(case))
}

/// Whether the kernel disagrees with the reference on `case` (any difference, a wrong shape,
/// an error or a panic): the kernel's output (if any), the reference and the failure.
type Disagreement = (Option<ArrayD<u8>>, ArrayD<u8>, Option<String>);

fn disagrees<F, E>(
    kernel: &mut F,
    case: &KernelInputs,
    reference: KernelReference,
) -> Option<Disagreement>
where
    F: FnMut(&KernelInputs) -> std::result::Result<ArrayD<u8>, E>,
    E: fmt::Display,
{
    let r = case.reference_with(reference).ok()?;
    match call(kernel, case) {
        Ok(k) if k == r => None,
        Ok(k) => Some((Some(k), r, None)),
        Err(e) => Some((None, r, Some(e))),
    }
}

/// Smaller cases that keep the structure of `case`: single elements, single rows or images,
/// single output channels.
fn smaller(case: &KernelInputs) -> Vec<KernelInputs> {
    let mut out = Vec::new();
    let elem = |a: &QuantizedTensor<u8>, i: usize| -> Option<QuantizedTensor<u8>> {
        let v = *a.int_repr().iter().nth(i)?;
        QuantizedTensor::from_parts(ArrayD::from_elem(IxDyn(&[1]), v), a.params().clone()).ok()
    };
    match case {
        KernelInputs::Quantize { x, qparams } => {
            if x.len() > 1 {
                for &v in x {
                    out.push(KernelInputs::Quantize {
                        x: ArrayD::from_elem(IxDyn(&[1]), v),
                        qparams: *qparams,
                    });
                }
            }
        }
        KernelInputs::Add { a, b, output } => {
            if a.shape().iter().product::<usize>() > 1 {
                for i in 0..a.int_repr().len() {
                    if let (Some(a), Some(b)) = (elem(a, i), elem(b, i)) {
                        out.push(KernelInputs::Add {
                            a,
                            b,
                            output: *output,
                        });
                    }
                }
            }
        }
        KernelInputs::Linear {
            x,
            weight,
            bias,
            output,
        } => {
            let (n, o) = (x.shape()[0], weight.shape()[0]);
            if n > 1 {
                for i in 0..n {
                    if let Ok(x) = take_rows(x, i) {
                        out.push(KernelInputs::Linear {
                            x,
                            weight: weight.clone(),
                            bias: bias.clone(),
                            output: *output,
                        });
                    }
                }
            } else if o > 1 {
                for j in 0..o {
                    if let Ok((w, b)) = take_channel(weight, bias.as_ref(), j) {
                        out.push(KernelInputs::Linear {
                            x: x.clone(),
                            weight: w,
                            bias: b,
                            output: *output,
                        });
                    }
                }
            }
        }
        KernelInputs::Conv2d {
            x,
            weight,
            bias,
            geometry,
            output,
        } => {
            let (n, o) = (x.shape()[0], weight.shape()[0]);
            if n > 1 {
                for i in 0..n {
                    if let Ok(x) = take_rows(x, i) {
                        out.push(KernelInputs::Conv2d {
                            x,
                            weight: weight.clone(),
                            bias: bias.clone(),
                            geometry: *geometry,
                            output: *output,
                        });
                    }
                }
            } else if o > 1 && geometry.groups == 1 {
                for j in 0..o {
                    if let Ok((w, b)) = take_channel(weight, bias.as_ref(), j) {
                        out.push(KernelInputs::Conv2d {
                            x: x.clone(),
                            weight: w,
                            bias: b,
                            geometry: *geometry,
                            output: *output,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Row (or image) `i` of `x`, keeping its axis.
fn take_rows(x: &QuantizedTensor<u8>, i: usize) -> Result<QuantizedTensor<u8>> {
    let d = x
        .int_repr()
        .slice_axis(ndarray::Axis(0), (i..=i).into())
        .to_owned();
    QuantizedTensor::from_parts(d, x.params().clone())
}

/// Output channel `j` of a weight (and its bias), parameters narrowed to it.
fn take_channel(
    w: &QuantizedTensor<i8>,
    bias: Option<&ArrayD<f32>>,
    j: usize,
) -> Result<(QuantizedTensor<i8>, Option<ArrayD<f32>>)> {
    let d = w
        .int_repr()
        .slice_axis(ndarray::Axis(0), (j..=j).into())
        .to_owned();
    let params: crate::qparams::AnyQParams = match w.params() {
        crate::qparams::AnyQParams::PerTensor(p) => (*p).into(),
        crate::qparams::AnyQParams::PerChannel(p) => {
            let zp = p.zero_points().as_int().map_or(0, |z| z[j]);
            PerChannelQParams::new(vec![p.scales()[j]], vec![zp], 0, QDType::QInt8)?.into()
        }
    };
    let b = bias.map(|b| ArrayD::from_elem(IxDyn(&[1]), b[j]));
    Ok((QuantizedTensor::from_parts(d, params)?, b))
}

/// The failing case shrunk greedily to the smallest one that still disagrees.
fn shrink<F, E>(
    kind: CaseKind,
    index: usize,
    case: KernelInputs,
    reference: KernelReference,
    kernel: &mut F,
) -> MinimalCase
where
    F: FnMut(&KernelInputs) -> std::result::Result<ArrayD<u8>, E>,
    E: fmt::Display,
{
    let mut best = case;
    let mut found = disagrees(kernel, &best, reference);
    // Each step keeps a strictly smaller case: at most a few dozen steps.
    'outer: for _ in 0..64 {
        for c in smaller(&best) {
            if let Some(d) = disagrees(kernel, &c, reference) {
                best = c;
                found = Some(d);
                continue 'outer;
            }
        }
        break;
    }
    let (kernel_out, reference_out, failure) =
        found.unwrap_or((None, ArrayD::zeros(IxDyn(&[0])), None));
    MinimalCase {
        kind,
        index,
        inputs: best,
        kernel: kernel_out,
        reference: reference_out,
        failure,
    }
}

/// The first disagreeing case, shrunk: the inputs, the kernel's output (or why there is
/// none) and the reference's. [`MinimalCase::to_rust`] writes it as a test to paste.
#[derive(Debug, Clone, PartialEq)]
pub struct MinimalCase {
    /// The kind of the original case.
    pub kind: CaseKind,
    /// Its index among the cases of that kind.
    pub index: usize,
    /// The shrunk inputs.
    pub inputs: KernelInputs,
    /// The kernel's output on them (`None`: it failed, see `failure`).
    pub kernel: Option<ArrayD<u8>>,
    /// The reference's output.
    pub reference: ArrayD<u8>,
    /// The kernel's error, panic or nothing.
    pub failure: Option<String>,
}

fn rust_u8(a: &QuantizedTensor<u8>) -> String {
    rust_tensor(
        a.shape(),
        &a.int_repr()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>(),
        a.params(),
        "u8",
    )
}

fn rust_i8(a: &QuantizedTensor<i8>) -> String {
    rust_tensor(
        a.shape(),
        &a.int_repr()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>(),
        a.params(),
        "i8",
    )
}

fn rust_qparams(q: &QParams) -> String {
    format!(
        "QParams::new({:?}, {}, QDType::{:?})?",
        q.scale(),
        q.zero_point(),
        q.dtype()
    )
}

fn rust_tensor(
    shape: &[usize],
    values: &[String],
    p: &crate::qparams::AnyQParams,
    ty: &str,
) -> String {
    let params = match p {
        crate::qparams::AnyQParams::PerTensor(q) => rust_qparams(q),
        crate::qparams::AnyQParams::PerChannel(c) => format!(
            "PerChannelQParams::new(vec!{:?}, vec!{:?}, {}, QDType::{:?})?",
            c.scales(),
            c.zero_points().as_int().unwrap_or(&[]),
            c.axis(),
            c.dtype()
        ),
    };
    format!(
        "QuantizedTensor::<{ty}>::from_parts(ArrayD::from_shape_vec(IxDyn(&{shape:?}), vec![{}]).unwrap(), {params})?",
        values.join(", ")
    )
}

fn rust_f32(a: &ArrayD<f32>) -> String {
    let v: Vec<String> = a.iter().map(|v| format!("{v:?}")).collect();
    format!(
        "ArrayD::from_shape_vec(IxDyn(&{:?}), vec![{}]).unwrap()",
        a.shape(),
        v.join(", ")
    )
}

impl MinimalCase {
    /// The case as Rust code for a backend's unit test: the inputs, the expected output and
    /// the assertion (`my_kernel` stands for the kernel under test).
    #[must_use]
    pub fn to_rust(&self) -> String {
        let bias = |b: &Option<ArrayD<f32>>| {
            b.as_ref()
                .map_or("None".to_string(), |b| format!("Some({})", rust_f32(b)))
        };
        let inputs = match &self.inputs {
            KernelInputs::Quantize { x, qparams } => format!(
                "KernelInputs::Quantize {{\n    x: {},\n    qparams: {},\n}}",
                rust_f32(x),
                rust_qparams(qparams)
            ),
            KernelInputs::Linear {
                x,
                weight,
                bias: b,
                output,
            } => format!(
                "KernelInputs::Linear {{\n    x: {},\n    weight: {},\n    bias: {},\n    output: {},\n}}",
                rust_u8(x),
                rust_i8(weight),
                bias(b),
                rust_qparams(output)
            ),
            KernelInputs::Conv2d {
                x,
                weight,
                bias: b,
                geometry,
                output,
            } => format!(
                "KernelInputs::Conv2d {{\n    x: {},\n    weight: {},\n    bias: {},\n    geometry: ConvGeometry::default().stride({}, {}).padding({}, {}).dilation({}, {}).groups({}),\n    output: {},\n}}",
                rust_u8(x),
                rust_i8(weight),
                bias(b),
                geometry.stride[0],
                geometry.stride[1],
                geometry.padding[0],
                geometry.padding[1],
                geometry.dilation[0],
                geometry.dilation[1],
                geometry.groups,
                rust_qparams(output)
            ),
            KernelInputs::Add { a, b, output } => format!(
                "KernelInputs::Add {{\n    a: {},\n    b: {},\n    output: {},\n}}",
                rust_u8(a),
                rust_u8(b),
                rust_qparams(output)
            ),
        };
        let expected: Vec<String> = self.reference.iter().map(|v| v.to_string()).collect();
        let got = match (&self.kernel, &self.failure) {
            (Some(k), _) => format!("{:?}", k.iter().collect::<Vec<_>>()),
            (None, Some(f)) => f.clone(),
            (None, None) => "-".into(),
        };
        format!(
            "// {:?} case {} of a kernel check, shrunk; the kernel gave {got}\nlet inputs = {inputs};\nlet expected = ArrayD::from_shape_vec(IxDyn(&{:?}), vec![{}]).unwrap();\nassert_eq!(my_kernel(&inputs)?, expected);\n",
            self.kind,
            self.index,
            self.reference.shape(),
            expected.join(", ")
        )
    }
}

impl fmt::Display for MinimalCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rust())
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

/// A qint8 weight `[o, ...]` quantized as `scheme` says (`scales` per output channel; the
/// first one for per-tensor schemes).
fn weight(
    rng: &mut Lcg,
    shape: &[usize],
    lo: i64,
    hi: i64,
    scales: Vec<f32>,
    scheme: WeightScheme,
) -> Result<QuantizedTensor<i8>> {
    let n: usize = shape.iter().product();
    let data: Vec<i8> = (0..n).map(|_| rng.int(lo, hi) as i8).collect();
    let o = shape[0];
    let params: crate::qparams::AnyQParams = match scheme {
        WeightScheme::PerChannelSymmetric => {
            PerChannelQParams::new(scales, vec![0; o], 0, QDType::QInt8)?.into()
        }
        WeightScheme::PerChannelAffine => {
            let zps = (0..o).map(|_| rng.int(-20, 20) as i32).collect();
            PerChannelQParams::new(scales, zps, 0, QDType::QInt8)?.into()
        }
        WeightScheme::PerTensorSymmetric => QParams::new(scales[0], 0, QDType::QInt8)?.into(),
        WeightScheme::PerTensorAffine => {
            QParams::new(scales[0], rng.int(-20, 20), QDType::QInt8)?.into()
        }
    };
    QuantizedTensor::from_parts(
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("n values"),
        params,
    )
}

/// Whether `v / so` and `v · f32(1/so)` round (half to even) to different integers.
fn paths_differ(v: f32, so: f32) -> bool {
    (v / so).round_ties_even() != (v * (1.0 / so)).round_ties_even()
}

/// A float `x` near `(m + 0.5)·scale` where quantizing by multiplying with `f32(1/scale)` and
/// by dividing by `scale` disagree (searched over nearby `f32` values).
fn separating_value(rng: &mut Lcg, scale: f32) -> Option<f32> {
    for _ in 0..64 {
        let x0 = (rng.int(-300, 300) as f32 + 0.5) * scale;
        let mut x = x0;
        for _ in 0..32 {
            if paths_differ(x, scale) {
                return Some(x);
            }
            x = f32::from_bits(x.to_bits().wrapping_add(1));
        }
        x = x0;
        for _ in 0..32 {
            if paths_differ(x, scale) {
                return Some(x);
            }
            x = f32::from_bits(x.to_bits().wrapping_sub(1));
        }
    }
    None
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

/// A case of [`CaseKind::RoundingPaths`] (`None`: none found, a random case stands in).
fn rounding_case(
    op: KernelOp,
    scheme: WeightScheme,
    rng: &mut Lcg,
) -> Result<Option<KernelInputs>> {
    match op {
        KernelOp::Quantize => {
            let scale = rng.uniform_f32(0.001, 0.1);
            let n = rng.pick(&[1usize, 7, 64]);
            let mut x = Vec::with_capacity(n);
            for _ in 0..n {
                match separating_value(rng, scale) {
                    Some(v) => x.push(v),
                    None => return Ok(None),
                }
            }
            Ok(Some(KernelInputs::Quantize {
                x: ArrayD::from_shape_vec(IxDyn(&[n]), x).expect("n values"),
                qparams: quint8(scale, rng.int(0, 255))?,
            }))
        }
        KernelOp::Add => {
            // The sum of the first pair lands where dividing by the output scale and
            // multiplying by its reciprocal disagree.
            for _ in 0..256 {
                let (sa, sb) = (rng.uniform_f32(0.01, 0.1), rng.uniform_f32(0.01, 0.1));
                let (za, zb) = (rng.int(0, 255), rng.int(0, 255));
                let (a0, b0) = (rng.int(0, 255), rng.int(0, 255));
                let v = (a0 - za) as f32 * sa + (b0 - zb) as f32 * sb;
                if v == 0.0 {
                    continue;
                }
                let so = v.abs() / (rng.int(1, 100) as f32 + 0.5);
                if !(so > 1e-6 && paths_differ(v, so)) {
                    continue;
                }
                let n = rng.pick(&[1usize, 5]);
                let mut ad = vec![a0 as u8];
                let mut bd = vec![b0 as u8];
                for _ in 1..n {
                    ad.push(rng.int(0, 255) as u8);
                    bd.push(rng.int(0, 255) as u8);
                }
                let t = |d: Vec<u8>, s, z| {
                    QuantizedTensor::from_parts(
                        ArrayD::from_shape_vec(IxDyn(&[n]), d).expect("n values"),
                        quint8(s, z)?,
                    )
                };
                return Ok(Some(KernelInputs::Add {
                    a: t(ad, sa, za)?,
                    b: t(bd, sb, zb)?,
                    output: quint8(so, 128)?,
                }));
            }
            Ok(None)
        }
        KernelOp::Linear => {
            // One row; the output scale puts the first output where dividing the requantized
            // accumulator by it and multiplying by its reciprocal disagree.
            for _ in 0..256 {
                let (o, k) = (rng.pick(&[1usize, 3]), rng.pick(&[7usize, 16]));
                let (sx, zx) = (rng.uniform_f32(0.005, 0.05), rng.int(0, 255));
                let x = activation(rng, &[1, k], 0, 255, quint8(sx, zx)?)?;
                let scales: Vec<f32> = (0..o).map(|_| rng.uniform_f32(0.001, 0.02)).collect();
                let w = weight(rng, &[o, k], -127, 127, scales, scheme)?;
                let zw = w.params().int_zero_points().unwrap_or_default();
                let acc: i64 = x
                    .int_repr()
                    .iter()
                    .zip(w.int_repr().iter())
                    .map(|(&a, &b)| (i64::from(a) - zx) * (i64::from(b) - zw[0]))
                    .sum();
                let sw = w.params().scale(0).unwrap_or(1.0);
                let v = (acc as f32 * sx) * sw;
                if v == 0.0 {
                    continue;
                }
                let so = v.abs() / (rng.int(1, 100) as f32 + 0.5);
                if !(so > 1e-6 && paths_differ(v, so)) {
                    continue;
                }
                return Ok(Some(KernelInputs::Linear {
                    x,
                    weight: w,
                    bias: None,
                    output: quint8(so, 128)?,
                }));
            }
            Ok(None)
        }
        // Conv2d: the random cases with an irregular output scale (see the Linear cases for
        // the requantization paths, which Conv2d shares).
        KernelOp::Conv2d => Ok(None),
    }
}

/// The operands' parameters per kind: (x scale, x zp range, out zp override, scale factor).
fn generate(
    op: KernelOp,
    kind: CaseKind,
    scheme: WeightScheme,
    rng: &mut Lcg,
) -> Result<KernelInputs> {
    if kind == CaseKind::RoundingPaths
        && let Some(case) = rounding_case(op, scheme, rng)?
    {
        return Ok(case);
    }
    match op {
        KernelOp::Quantize => {
            let n = rng.pick(&[1usize, 7, 64]);
            let (scale, zp) = match kind {
                CaseKind::Ties => (rng.pick(&[0.5f32, 0.25, 1.0, 2.0]), rng.int(0, 255)),
                CaseKind::ExtremeScales => {
                    (rng.pick(&[1e-30f32, 1e-10, 1e10, 1e30]), rng.int(0, 255))
                }
                CaseKind::ExtremeZeroPoints => {
                    (rng.uniform_f32(0.001, 0.1), rng.pick(&[0i64, 255]))
                }
                _ => (rng.uniform_f32(0.001, 0.1), rng.int(0, 255)),
            };
            let qparams = quint8(scale, zp)?;
            let x: Vec<f32> = (0..n)
                .map(|_| match kind {
                    CaseKind::Ties => (rng.int(-200, 200) as f32 + 0.5) * scale,
                    CaseKind::Saturation => {
                        rng.pick(&[-1.0f32, 1.0]) * scale * rng.uniform_f32(256.0, 1e6)
                    }
                    _ => (rng.int(-300, 300) as f32 + rng.uniform_f32(-0.5, 0.5)) * scale,
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
                    rng.uniform_f32(0.01, 0.05),
                    rng.uniform_f32(0.005, 0.02),
                    128,
                    0,
                    255,
                    -128,
                    127,
                ),
                CaseKind::ExtremeZeroPoints => {
                    let zx = rng.pick(&[0i64, 255]);
                    (
                        rng.uniform_f32(0.01, 0.05),
                        rng.uniform_f32(0.005, 0.02),
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
                    rng.uniform_f32(0.005, 0.05),
                    rng.uniform_f32(0.001, 0.02),
                    rng.int(0, 255),
                    0,
                    255,
                    -127,
                    127,
                ),
            };
            let x = if kind == CaseKind::Saturation {
                // Activations at both ends of 0..=255 (around the zero point 128).
                let n: usize = xshape.iter().product();
                let data: Vec<u8> = (0..n)
                    .map(|_| {
                        if rng.int(0, 1) == 0 {
                            rng.int(0, 15) as u8
                        } else {
                            rng.int(240, 255) as u8
                        }
                    })
                    .collect();
                QuantizedTensor::from_parts(
                    ArrayD::from_shape_vec(IxDyn(&xshape), data).expect("n values"),
                    quint8(sx, zx)?,
                )?
            } else {
                activation(rng, &xshape, xlo, xhi, quint8(sx, zx)?)?
            };
            let scales: Vec<f32> = (0..o)
                .map(|_| {
                    if kind == CaseKind::Ties {
                        sw
                    } else {
                        sw * rng.uniform_f32(0.5, 1.5)
                    }
                })
                .collect();
            let weight = if kind == CaseKind::Saturation {
                // Weights at both ends of the qint8 range: products of both signs, so the
                // outputs clip at 0 and at 255.
                let big = weight(rng, &wshape, 100, 127, scales, scheme)?;
                let data = big
                    .int_repr()
                    .mapv(|v| if rng.int(0, 1) == 0 { v } else { -v - 1 });
                QuantizedTensor::from_parts(data, big.params().clone())?
            } else {
                weight(rng, &wshape, wlo, whi, scales, scheme)?
            };
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
                            .map(|_| rng.uniform_f32(-1.0, 1.0) * sx * sw * 50.0)
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
                CaseKind::RoundingPaths => quint8(((hi - lo) / 251.0).max(1e-6), 128)?,
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
                    rng.uniform_f32(0.01, 0.1),
                    rng.uniform_f32(0.01, 0.1),
                    rng.uniform_f32(0.02, 0.2),
                    rng.pick(&[0i64, 255]),
                    rng.pick(&[0i64, 255]),
                    rng.pick(&[0i64, 255]),
                ),
                CaseKind::ExtremeScales => {
                    let s = rng.pick(&[1e-20f32, 1e-6, 1e6, 1e20]);
                    (
                        s,
                        s * rng.uniform_f32(0.5, 2.0),
                        s * 2.0,
                        rng.int(0, 255),
                        rng.int(0, 255),
                        128,
                    )
                }
                _ => (
                    rng.uniform_f32(0.01, 0.1),
                    rng.uniform_f32(0.01, 0.1),
                    rng.uniform_f32(0.02, 0.2),
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
