//! The kernel check for low-precision format kernels: a backend's dot product (a Q4_0 ×
//! Q8_0 `vec_dot`, an MXFP4 GEMV) or dequantization kernel run beside the reference decoder on
//! generated rows (Gaussian, heavy-tailed, zero blocks, one outlier per block, tiny and huge
//! magnitudes) and on the caller's real rows, in one call.

use std::fmt;

use crate::error::{QuantError, Result};
use crate::formats::{ElementFormat, EncodedRow, RowCodec};
use crate::rng::Lcg;

/// The rows a group of cases is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum FormatCaseKind {
    /// Normal values.
    Gaussian,
    /// Heavy-tailed values (a normal over a uniform: Student-t-like tails).
    HeavyTailed,
    /// Every other block all zeros (scale 0 paths).
    ZeroBlocks,
    /// One value per block 100× its neighbours (the scale set by one element, the others
    /// near zero).
    Outliers,
    /// Magnitudes near the bottom of `f16` (scales that underflow to subnormals or zero).
    Tiny,
    /// Magnitudes near the top of `f16` (scales that overflow).
    Huge,
    /// The caller's rows.
    Real,
}

impl FormatCaseKind {
    /// The generated kinds, in the order they run ([`FormatCaseKind::Real`] runs last).
    pub const GENERATED: [FormatCaseKind; 6] = [
        FormatCaseKind::Gaussian,
        FormatCaseKind::HeavyTailed,
        FormatCaseKind::ZeroBlocks,
        FormatCaseKind::Outliers,
        FormatCaseKind::Tiny,
        FormatCaseKind::Huge,
    ];
}

/// What the checked kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum FormatKernelOp {
    /// `Σ decode(row)[i] · x[i]`.
    Dot,
    /// `decode(row)`, bit for bit.
    Decode,
}

/// One case that failed: the kernel's value against the reference.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FormatFailure {
    /// Its kind.
    pub kind: FormatCaseKind,
    /// Its index among the cases of that kind.
    pub index: usize,
    /// The row length.
    pub len: usize,
    /// The element (decode) or 0 (dot) where it differs.
    pub element: usize,
    /// The kernel's value (NaN when it failed to give one).
    pub kernel: f64,
    /// The reference's value.
    pub reference: f64,
    /// The bound the difference had to stay within (0 for decode: bit-exact).
    pub bound: f64,
    /// The kernel's error or panic, when it gave no value.
    pub error: Option<String>,
}

/// The result of a format kernel check.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FormatKernelReport {
    /// The format (its `Display`).
    pub format: String,
    /// The operation checked.
    pub op: FormatKernelOp,
    /// Cases run per kind, and how many failed.
    pub by_kind: Vec<(FormatCaseKind, usize, usize)>,
    /// The first failing case of the largest relative difference.
    pub worst: Option<FormatFailure>,
}

impl FormatKernelReport {
    /// Cases run.
    #[must_use]
    pub fn cases(&self) -> usize {
        self.by_kind.iter().map(|k| k.1).sum()
    }

    /// Cases failed.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.by_kind.iter().map(|k| k.2).sum()
    }

    /// Whether every case passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failed() == 0
    }

    /// The one-line assertion for a backend's unit tests.
    ///
    /// # Panics
    /// When a case failed, with this report as the message.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(
            self.passed(),
            "format kernel disagrees with the reference:\n{self}"
        );
    }
}

impl fmt::Display for FormatKernelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            FormatKernelOp::Dot => "dot product",
            FormatKernelOp::Decode => "decode",
        };
        writeln!(
            f,
            "{} {op} kernel: {} of {} cases failed",
            self.format,
            self.failed(),
            self.cases()
        )?;
        for (kind, n, bad) in &self.by_kind {
            writeln!(f, "  {kind:?}: {bad} of {n} failed")?;
        }
        if let Some(w) = &self.worst {
            match &w.error {
                Some(e) => writeln!(
                    f,
                    "  worst: {:?} case {} (len {}): {e}",
                    w.kind, w.index, w.len
                )?,
                None => writeln!(
                    f,
                    "  worst: {:?} case {} (len {}), element {}: kernel {:e}, reference {:e} (allowed ±{:e})",
                    w.kind, w.index, w.len, w.element, w.kernel, w.reference, w.bound
                )?,
            }
        }
        Ok(())
    }
}

/// A check of a format kernel against the reference codec.
///
/// A dot-product kernel receives a row encoded by the reference encoder and an activation `x`
/// (`f32`); the reference is `Σ decode(row)[i] · x'[i]` in `f64`, where `x'` is `x` itself or,
/// with [`FormatKernelCheck::with_activation_format`], `x` fake-quantized in that format
/// (ggml's `vec_dot_q4_0_q8_0` quantizes `x` to Q8_0 first). It passes when
/// `|kernel − reference| ≤ rtol · Σ|decode(row)[i] · x'[i]| + atol` (an `f32` kernel sums in
/// another order; the default `rtol` is `2^-14`). A decode kernel must match bit for bit
/// (NaN matches NaN). A kernel that returns an error or panics (caught) fails its case.
///
/// # Examples
/// A toy format (round to multiples of 1/8, stored as `i8`), its dot kernel checked:
/// ```
/// use qnumeric::diagnose::FormatKernelCheck;
/// use qnumeric::formats::{ElementFormat, EncodedRow, RowCodec};
///
/// #[derive(Debug)]
/// struct Eighths;
/// impl std::fmt::Display for Eighths {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("eighths") }
/// }
/// impl ElementFormat for Eighths {
///     fn bits_per_element(&self) -> f64 { 8.0 }
///     fn block_len(&self) -> usize { 1 }
///     fn fake_quantize_rows(&self, x: &[f32], _: usize, out: &mut [f32]) -> qnumeric::Result<()> {
///         for (o, v) in out.iter_mut().zip(x) { *o = f32::from((v * 8.0).round().clamp(-128.0, 127.0) as i8) / 8.0; }
///         Ok(())
///     }
/// }
/// impl RowCodec for Eighths {
///     fn encode_row(&self, x: &[f32]) -> qnumeric::Result<EncodedRow> {
///         let data = x.iter().map(|v| (v * 8.0).round().clamp(-128.0, 127.0) as i8 as u8).collect();
///         Ok(EncodedRow { data, ..EncodedRow::default() })
///     }
///     fn decode_row(&self, row: &EncodedRow, out: &mut [f32]) -> qnumeric::Result<()> {
///         for (o, b) in out.iter_mut().zip(&row.data) { *o = f32::from(*b as i8) / 8.0; }
///         Ok(())
///     }
/// }
/// let report = FormatKernelCheck::new().check_dot(&Eighths, |row: &EncodedRow, x: &[f32]| {
///     Ok::<f32, String>(row.data.iter().zip(x).map(|(b, v)| f32::from(*b as i8) / 8.0 * v).sum())
/// })?;
/// report.assert_passed();
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FormatKernelCheck<'a> {
    cases: usize,
    blocks: Vec<usize>,
    seed: u64,
    rtol: f64,
    atol: f64,
    activation: Option<&'a dyn ElementFormat>,
    real: Vec<Vec<f32>>,
}

impl Default for FormatKernelCheck<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> FormatKernelCheck<'a> {
    /// 8 cases per kind at 1, 2 and 7 blocks a row, seed 0, `rtol = 2^-14`, `atol = 0`.
    #[must_use]
    pub fn new() -> Self {
        FormatKernelCheck {
            cases: 8,
            blocks: vec![1, 2, 7],
            seed: 0,
            rtol: 1.0 / 16384.0,
            atol: 0.0,
            activation: None,
            real: Vec::new(),
        }
    }

    /// Cases per kind and row length.
    #[must_use]
    pub fn with_cases(mut self, cases: usize) -> Self {
        self.cases = cases;
        self
    }

    /// The row lengths, in blocks.
    #[must_use]
    pub fn with_blocks(mut self, blocks: Vec<usize>) -> Self {
        self.blocks = blocks;
        self
    }

    /// The generator's seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The dot tolerance: `|kernel − reference| ≤ rtol · Σ|w·x| + atol`.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a negative or non-finite tolerance.
    pub fn with_tolerance(mut self, rtol: f64, atol: f64) -> Result<Self> {
        for (what, v) in [("rtol", rtol), ("atol", atol)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(QuantError::InvalidParameter {
                    op: "FormatKernelCheck::with_tolerance",
                    what,
                    value: v,
                    reason: "must be finite and >= 0",
                });
            }
        }
        self.rtol = rtol;
        self.atol = atol;
        Ok(self)
    }

    /// The format the kernel quantizes `x` to before the dot (ggml: Q8_0); the reference
    /// fake-quantizes `x` in it too.
    #[must_use]
    pub fn with_activation_format(mut self, format: &'a dyn ElementFormat) -> Self {
        self.activation = Some(format);
        self
    }

    /// Adds the caller's rows (weights of a real model), checked after the generated ones.
    #[must_use]
    pub fn with_real_rows(mut self, rows: Vec<Vec<f32>>) -> Self {
        self.real = rows;
        self
    }

    /// Checks a dot-product kernel: `kernel(row, x)` must give `Σ decode(row)[i] · x[i]`.
    ///
    /// # Errors
    /// Errors of the reference codec on the generated rows (a codec that cannot encode its
    /// own block lengths) or on the caller's rows (NaN, a length that is not a multiple of
    /// the block).
    pub fn check_dot<C, K, E>(&self, codec: &C, mut kernel: K) -> Result<FormatKernelReport>
    where
        C: RowCodec + ?Sized,
        K: FnMut(&EncodedRow, &[f32]) -> std::result::Result<f32, E>,
        E: fmt::Display,
    {
        self.run(codec, FormatKernelOp::Dot, |row, w, x, len| {
            let x_ref = match self.activation {
                Some(fmt) => {
                    let mut q = vec![0.0f32; len];
                    fmt.fake_quantize_rows(x, len, &mut q)?;
                    q
                }
                None => x.to_vec(),
            };
            let (reference, magnitude) =
                w.iter()
                    .zip(&x_ref)
                    .fold((0.0f64, 0.0f64), |(s, m), (a, b)| {
                        let p = f64::from(*a) * f64::from(*b);
                        (s + p, m + p.abs())
                    });
            let bound = self.rtol * magnitude + self.atol;
            Ok(match caught(|| kernel(row, x)) {
                Ok(v) => {
                    let v = f64::from(v);
                    let ok = if reference.is_finite() {
                        (v - reference).abs() <= bound
                    } else {
                        v == reference || (v.is_nan() && reference.is_nan())
                    };
                    (!ok).then_some((0, v, reference, bound, None))
                }
                Err(e) => Some((0, f64::NAN, reference, bound, Some(e))),
            })
        })
    }

    /// Checks a decode kernel: `kernel(row, out)` must write `decode(row)` bit for bit.
    ///
    /// # Errors
    /// As [`FormatKernelCheck::check_dot`].
    pub fn check_decode<C, K, E>(&self, codec: &C, mut kernel: K) -> Result<FormatKernelReport>
    where
        C: RowCodec + ?Sized,
        K: FnMut(&EncodedRow, &mut [f32]) -> std::result::Result<(), E>,
        E: fmt::Display,
    {
        self.run(codec, FormatKernelOp::Decode, |row, w, _x, len| {
            let mut out = vec![0.0f32; len];
            Ok(match caught(|| kernel(row, &mut out)) {
                Ok(()) => out
                    .iter()
                    .zip(w)
                    .position(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
                    .map(|i| (i, f64::from(out[i]), f64::from(w[i]), 0.0, None)),
                Err(e) => Some((0, f64::NAN, 0.0, 0.0, Some(e))),
            })
        })
    }

    /// Runs every case through `judge(row, decoded, x, len)`, which returns the failure's
    /// `(element, kernel, reference, bound, error)` or `None`.
    #[allow(clippy::type_complexity)]
    fn run<C: RowCodec + ?Sized>(
        &self,
        codec: &C,
        op: FormatKernelOp,
        mut judge: impl FnMut(
            &EncodedRow,
            &[f32],
            &[f32],
            usize,
        ) -> Result<Option<(usize, f64, f64, f64, Option<String>)>>,
    ) -> Result<FormatKernelReport> {
        const OP: &str = "FormatKernelCheck";
        let block = codec.block_len().max(1);
        let mut rng = Lcg::new(self.seed);
        let mut by_kind = Vec::new();
        let mut worst: Option<(f64, FormatFailure)> = None;
        let mut run_rows = |kind: FormatCaseKind,
                            rows: Vec<Vec<f32>>,
                            rng: &mut Lcg,
                            worst: &mut Option<(f64, FormatFailure)>|
         -> Result<(usize, usize)> {
            let mut bad = 0;
            for (index, w) in rows.iter().enumerate() {
                let len = w.len();
                let row = codec.encode_row(w).map_err(|e| e.with_op(OP))?;
                let mut decoded = vec![0.0f32; len];
                codec
                    .decode_row(&row, &mut decoded)
                    .map_err(|e| e.with_op(OP))?;
                let x: Vec<f32> = (0..len).map(|_| normal(rng)).collect();
                if let Some((element, kernel, reference, bound, error)) =
                    judge(&row, &decoded, &x, len)?
                {
                    bad += 1;
                    let size = if error.is_some() || kernel.is_nan() {
                        f64::INFINITY
                    } else {
                        (kernel - reference).abs() / bound.max(f64::MIN_POSITIVE)
                    };
                    if worst.as_ref().is_none_or(|(s, _)| size > *s) {
                        *worst = Some((
                            size,
                            FormatFailure {
                                kind,
                                index,
                                len,
                                element,
                                kernel,
                                reference,
                                bound,
                                error,
                            },
                        ));
                    }
                }
            }
            Ok((rows.len(), bad))
        };
        for kind in FormatCaseKind::GENERATED {
            let mut rows = Vec::new();
            for &blocks in &self.blocks {
                let len = blocks.checked_mul(block).ok_or(QuantError::TooLarge {
                    op: OP,
                    what: "row",
                    elements: usize::MAX,
                    max: crate::nn::MAX_ELEMENTS,
                })?;
                if len > crate::nn::MAX_ELEMENTS {
                    return Err(QuantError::TooLarge {
                        op: OP,
                        what: "row",
                        elements: len,
                        max: crate::nn::MAX_ELEMENTS,
                    });
                }
                for _ in 0..self.cases {
                    rows.push(generate(kind, len, block, &mut rng));
                }
            }
            let (n, bad) = run_rows(kind, rows, &mut rng, &mut worst)?;
            by_kind.push((kind, n, bad));
        }
        if !self.real.is_empty() {
            let (n, bad) = run_rows(
                FormatCaseKind::Real,
                self.real.clone(),
                &mut rng,
                &mut worst,
            )?;
            by_kind.push((FormatCaseKind::Real, n, bad));
        }
        Ok(FormatKernelReport {
            format: codec.to_string(),
            op,
            by_kind,
            worst: worst.map(|w| w.1),
        })
    }
}

/// A standard normal value (Box–Muller on the generator).
fn normal(rng: &mut Lcg) -> f32 {
    let u1 = f64::from(rng.unit_f32()).max(1e-7);
    let u2 = f64::from(rng.unit_f32());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn generate(kind: FormatCaseKind, len: usize, block: usize, rng: &mut Lcg) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let g = normal(rng);
            match kind {
                FormatCaseKind::Gaussian | FormatCaseKind::Real => g,
                FormatCaseKind::HeavyTailed => g / rng.unit_f32().max(0.02),
                FormatCaseKind::ZeroBlocks => {
                    if (i / block).is_multiple_of(2) {
                        0.0
                    } else {
                        g
                    }
                }
                FormatCaseKind::Outliers => {
                    if i % block == (i / block * 7) % block {
                        g.signum() * 100.0
                    } else {
                        g
                    }
                }
                FormatCaseKind::Tiny => g * 1e-7,
                FormatCaseKind::Huge => g * 2e4,
            }
        })
        .collect()
}

/// Runs `f`, turning its error or panic into a message.
pub(crate) fn caught<T, E: fmt::Display>(
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("the kernel returned an error: {e}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(format!("the kernel panicked: {msg}"))
        }
    }
}
