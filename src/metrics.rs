//! Comparison metrics of the Numeric Suite: SQNR, normalized L2 error, cosine similarity
//! (PyTorch's `torch.ao.ns.fx.utils` definitions and edge-case conventions), plus a few more.
//!
//! All metrics take the *reference* first (`x`, usually the float model) and the value under
//! test second (`y`); both arrays must have the same shape. Every element is converted to
//! `f64` exactly (`f64` inputs are read as they are) and the sums of squares and products
//! accumulate in `f64`, so no finite `f32`, `f16` or `bf16` input overflows or underflows
//! them. For `f64` inputs whose squares leave the `f64` range (magnitudes beyond about `1e150`
//! or below about `1e-150`) the sums are recomputed with power-of-two scaling, so the ratios
//! stay exact there too. Results are `f64`.
//!
//! | metric | formula | x == y | x == 0, y == 0 | x == 0, y != 0 |
//! |---|---|---|---|---|
//! | [`sqnr`] | `20·log10(‖x‖ / ‖x−y‖)` dB | +inf | NaN | −inf |
//! | [`normalized_l2_error`] | `sqrt(Σ(x−y)² / Σx²)` | 0 | NaN | +inf |
//! | [`cosine_similarity`] | `Σ (x/max(‖x‖,1e-8))·(y/max(‖y‖,1e-8))` | 1 if `‖x‖ >= 1e-8` | 0 | 0 |
//!
//! Cosine similarity clamps each norm to at least `1e-8`, as PyTorch does: vectors whose norm
//! is below that are treated as near zero, and their cosine tends to 0, not 1.
//!
//! Non-finite input is refused: a NaN in `x` or `y` is [`QuantError::NanInput`], an infinite
//! value [`QuantError::InfiniteInput`] (both name the first such element of `x`, else of `y`,
//! NaN checked first). The check costs nothing on finite data: the sums themselves reveal
//! non-finite input, and only then are the inputs scanned for the index.

use ndarray::{ArrayRef, Dimension, Zip};

use crate::element::QFloat;
use crate::error::{QuantError, Result};

fn check<F: QFloat, D: Dimension>(
    op: &'static str,
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<()> {
    if x.shape() != y.shape() {
        return Err(QuantError::ShapeMismatch {
            op,
            expected: x.shape().to_vec(),
            got: y.shape().to_vec(),
        });
    }
    // No values, no figure: refused, as the Numeric Suite refuses an empty batch.
    if x.is_empty() {
        return Err(QuantError::EmptyInput { op });
    }
    Ok(())
}

/// The first NaN, else the first infinite value, of `x`, else of `y`, as an error.
fn non_finite_input<F: QFloat, D: Dimension>(
    op: &'static str,
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<()> {
    for a in [x, y] {
        if let Some(index) = crate::kernels::find_nan(a) {
            return Err(QuantError::NanInput { op, index });
        }
    }
    for a in [x, y] {
        if let Some((index, v)) = a.iter().enumerate().find(|(_, v)| v.is_infinite()) {
            return Err(QuantError::InfiniteInput {
                op,
                index,
                value: v.to_f64_exact(),
            });
        }
    }
    Ok(())
}

/// Contiguous moments `(Σx², Σy², Σxy, Σ(x−y)²)`: `f32` and `f64` slices are read directly,
/// half-precision ones converted to `f32` (exactly) in blocks of 1024 elements.
fn moments_slice<F: QFloat>(xs: &[F], ys: &[F]) -> [f64; 4] {
    if let (Some(a), Some(b)) = (F::as_f64_slice(xs), F::as_f64_slice(ys)) {
        return sums(a, b);
    }
    if let (Some(a), Some(b)) = (F::as_f32_slice(xs), F::as_f32_slice(ys)) {
        return sums(a, b);
    }
    const BLOCK: usize = 1024;
    let mut m = [0.0f64; 4];
    let mut bx = [0.0f32; BLOCK];
    let mut by = [0.0f32; BLOCK];
    for (xb, yb) in xs.chunks(BLOCK).zip(ys.chunks(BLOCK)) {
        let n = xb.len();
        F::slice_to_compute(xb, &mut bx[..n]);
        F::slice_to_compute(yb, &mut by[..n]);
        let s = sums(&bx[..n], &by[..n]);
        for (a, b) in m.iter_mut().zip(s) {
            *a += b;
        }
    }
    m
}

/// Lanes per sum: lane `k` accumulates the elements `i ≡ k (mod 8)` of the whole multiple of
/// 8 at the front of the slices.
const LANES: usize = 8;

/// The four sums `(Σa², Σb², Σab, Σ(a−b)²)` in one pass, each element converted to `f64`
/// first, each sum kept in [`LANES`] `f64` lanes; the tail of fewer than 8 elements goes to
/// the first lanes, then each sum's lanes are added in order. The AVX2 copy computes every
/// lane with the same operations in the same order as the portable one (no FMA), so results
/// are identical on every CPU.
#[inline(always)]
fn sums<T: LaneInput>(a: &[T], b: &[T]) -> [f64; 4] {
    let n = a.len().min(b.len()) / LANES * LANES;
    let (a8, b8) = (&a[..n], &b[..n]);
    let mut acc = T::avx2_lanes(a8, b8).unwrap_or_else(|| portable_lanes(a8, b8));
    for (k, (&u, &v)) in a[n..].iter().zip(&b[n..]).enumerate() {
        let (u, v): (f64, f64) = (u.into(), v.into());
        acc[0][k] += u * u;
        acc[1][k] += v * v;
        acc[2][k] += u * v;
        acc[3][k] += (u - v) * (u - v);
    }
    acc.map(|q| q.iter().sum())
}

/// The lanes of [`sums`] over slices whose length is a multiple of [`LANES`].
#[inline(always)]
fn portable_lanes<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> [[f64; LANES]; 4] {
    let mut acc = [[0.0f64; LANES]; 4];
    for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for k in 0..LANES {
            let (u, v): (f64, f64) = (ca[k].into(), cb[k].into());
            acc[0][k] += u * u;
            acc[1][k] += v * v;
            acc[2][k] += u * v;
            acc[3][k] += (u - v) * (u - v);
        }
    }
    acc
}

/// The element types whose slices the moments read directly.
trait LaneInput: Copy + Into<f64> {
    /// The lanes of [`sums`] computed with AVX2 intrinsics, if the CPU has AVX2.
    fn avx2_lanes(a: &[Self], b: &[Self]) -> Option<[[f64; LANES]; 4]>;
}

impl LaneInput for f32 {
    #[inline(always)]
    fn avx2_lanes(a: &[f32], b: &[f32]) -> Option<[[f64; LANES]; 4]> {
        avx2::lanes_f32(a, b)
    }
}

impl LaneInput for f64 {
    #[inline(always)]
    fn avx2_lanes(a: &[f64], b: &[f64]) -> Option<[[f64; LANES]; 4]> {
        avx2::lanes_f64(a, b)
    }
}

/// AVX2 copies of [`portable_lanes`], with explicit vector instructions: written portably,
/// the loop is vectorised across the four sums instead of across the lanes (with shuffles for
/// every element), which runs at a quarter of this speed.
#[allow(unsafe_code)]
mod avx2 {
    use super::LANES;

    /// `None` (nothing done) without AVX2.
    #[inline]
    pub(super) fn lanes_f32(a: &[f32], b: &[f32]) -> Option<[[f64; LANES]; 4]> {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            return Some(unsafe { x86::lanes_f32(a, b) });
        }
        let _ = (a, b);
        None
    }

    /// `None` (nothing done) without AVX2.
    #[inline]
    pub(super) fn lanes_f64(a: &[f64], b: &[f64]) -> Option<[[f64; LANES]; 4]> {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            return Some(unsafe { x86::lanes_f64(a, b) });
        }
        let _ = (a, b);
        None
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::LANES;
        use std::arch::x86_64::{
            __m256d, _mm256_add_pd, _mm256_castps256_ps128, _mm256_cvtps_pd, _mm256_extractf128_ps,
            _mm256_loadu_pd, _mm256_loadu_ps, _mm256_mul_pd, _mm256_setzero_pd, _mm256_storeu_pd,
            _mm256_sub_pd,
        };

        /// Adds one vector of 4 `u` and 4 `v` values to lanes `h*4..h*4+4` of the sums (a
        /// macro, so that the intrinsics are expanded inside the AVX2 functions).
        macro_rules! step {
            ($acc:ident, $h:literal, $u:expr_2021, $v:expr_2021) => {{
                let (u, v) = ($u, $v);
                let d = _mm256_sub_pd(u, v);
                $acc[0][$h] = _mm256_add_pd($acc[0][$h], _mm256_mul_pd(u, u));
                $acc[1][$h] = _mm256_add_pd($acc[1][$h], _mm256_mul_pd(v, v));
                $acc[2][$h] = _mm256_add_pd($acc[2][$h], _mm256_mul_pd(u, v));
                $acc[3][$h] = _mm256_add_pd($acc[3][$h], _mm256_mul_pd(d, d));
            }};
        }

        /// The lanes of each sum, in order.
        ///
        /// # Safety
        /// The CPU must have AVX.
        #[target_feature(enable = "avx2")]
        unsafe fn store(acc: [[__m256d; 2]; 4]) -> [[f64; LANES]; 4] {
            let mut out = [[0.0f64; LANES]; 4];
            for (o, a) in out.iter_mut().zip(acc) {
                // SAFETY: AVX is enabled; each store writes 4 f64 into `o[0..4]` / `o[4..8]`.
                unsafe {
                    _mm256_storeu_pd(o.as_mut_ptr(), a[0]);
                    _mm256_storeu_pd(o.as_mut_ptr().add(4), a[1]);
                }
            }
            out
        }

        /// # Safety
        /// The CPU must have AVX2.
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn lanes_f32(a: &[f32], b: &[f32]) -> [[f64; LANES]; 4] {
            // SAFETY: AVX2 is enabled for this function; every load reads 8 f32 at
            // `i + 8 <= n`, inside both slices.
            unsafe {
                let mut acc = [[_mm256_setzero_pd(); 2]; 4];
                let n = a.len().min(b.len()) / LANES * LANES;
                let mut i = 0;
                while i < n {
                    let xa = _mm256_loadu_ps(a.as_ptr().add(i));
                    let xb = _mm256_loadu_ps(b.as_ptr().add(i));
                    step!(
                        acc,
                        0,
                        _mm256_cvtps_pd(_mm256_castps256_ps128(xa)),
                        _mm256_cvtps_pd(_mm256_castps256_ps128(xb))
                    );
                    step!(
                        acc,
                        1,
                        _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(xa)),
                        _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(xb))
                    );
                    i += LANES;
                }
                store(acc)
            }
        }

        /// # Safety
        /// The CPU must have AVX2.
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn lanes_f64(a: &[f64], b: &[f64]) -> [[f64; LANES]; 4] {
            // SAFETY: AVX2 is enabled for this function; every load reads 4 f64 at
            // `i + 8 <= n`, inside both slices.
            unsafe {
                let mut acc = [[_mm256_setzero_pd(); 2]; 4];
                let n = a.len().min(b.len()) / LANES * LANES;
                let mut i = 0;
                while i < n {
                    let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
                    step!(acc, 0, _mm256_loadu_pd(pa), _mm256_loadu_pd(pb));
                    step!(
                        acc,
                        1,
                        _mm256_loadu_pd(pa.add(4)),
                        _mm256_loadu_pd(pb.add(4))
                    );
                    i += LANES;
                }
                store(acc)
            }
        }
    }
}

/// Sums `(Σx², Σy², Σxy, Σ(x−y)²)` in f64 in one pass, with a contiguous fast path.
fn raw_moments<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, y: &ArrayRef<F, D>) -> [f64; 4] {
    if x.strides() == y.strides()
        && let (Some(xs), Some(ys)) = (x.as_slice_memory_order(), y.as_slice_memory_order())
    {
        return crate::parallel::map_fold2(xs, ys, moments_slice, [0.0; 4], |a, b| {
            [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
        });
    }
    let mut m = [0.0f64; 4];
    Zip::from(x).and(y).for_each(|a, b| {
        let (a, b) = (a.to_f64_exact(), b.to_f64_exact());
        let d = a - b;
        m[0] += a * a;
        m[1] += b * b;
        m[2] += a * b;
        m[3] += d * d;
    });
    m
}

/// The four sums as `sum[i] · 2^exp[i]`. `exp` is zero except for `f64` inputs whose squares
/// leave the `f64` range; `exp[0]`, `exp[1]` and `exp[3]` are even and `exp[2]` is
/// `(exp[0] + exp[1]) / 2`.
#[derive(Debug, Clone, Copy)]
struct Moments {
    sum: [f64; 4],
    exp: [i32; 4],
}

/// Below this a sum of squares of `f64` values may have lost terms to underflow.
pub(crate) const F64_SAFE_MIN: f64 = 1e-270;

/// Checked moments: shapes equal, inputs finite, sums free of overflow and underflow.
fn moments<F: QFloat, D: Dimension>(
    op: &'static str,
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<Moments> {
    check(op, x, y)?;
    let m = raw_moments(x, y);
    if !m.iter().all(|v| v.is_finite()) {
        non_finite_input(op, x, y)?;
    }
    // Only `f64` squares can overflow or underflow an `f64` sum (|f32| <= 3.5e38 and the
    // smallest f32 square, 2e-90, is a normal f64).
    let reads_f64 = F::as_f64_slice(&[]).is_some();
    let unsafe_sum = |v: f64| !v.is_finite() || v < F64_SAFE_MIN;
    if reads_f64 && (unsafe_sum(m[0]) || unsafe_sum(m[1]) || unsafe_sum(m[3])) {
        return Ok(scaled_moments(x, y));
    }
    Ok(Moments {
        sum: m,
        exp: [0; 4],
    })
}

/// `v · 2^e` for any `e`, in steps of at most `2^±1000` (each exact and finite, so `2^e`
/// itself need not be representable and `0 · 2^e` stays 0).
pub(crate) fn mul_pow2(mut v: f64, mut e: i32) -> f64 {
    while e > 1000 {
        v *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        v *= 2f64.powi(-1000);
        e += 1000;
    }
    v * 2f64.powi(e)
}

/// The `k` with `a · 2^-k` in `(0.25, 2]` for `a > 0` finite; 0 for `a == 0`.
pub(crate) fn exponent_of(a: f64) -> i32 {
    if a > 0.0 { a.log2().ceil() as i32 } else { 0 }
}

/// Moments of finite data with power-of-two scaling: each norm is accumulated with its own
/// scale (the largest element near 1), so no square overflows and no relevant one
/// underflows. Three passes; used only for `f64` data whose plain sums are unsafe.
fn scaled_moments<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, y: &ArrayRef<F, D>) -> Moments {
    let pairs = || {
        x.iter()
            .zip(y.iter())
            .map(|(a, b)| (a.to_f64_exact(), b.to_f64_exact()))
    };
    let (ax, ay) = pairs().fold((0.0f64, 0.0f64), |(mx, my), (a, b)| {
        (mx.max(a.abs()), my.max(b.abs()))
    });
    let (kx, ky) = (exponent_of(ax), exponent_of(ay));
    let k = kx.max(ky);
    // x and y scaled by their own exponents for the norms and the product, by the common one
    // for the difference (whose own exponent needs a pass of its own).
    let mut s = [0.0f64; 4];
    let mut ad = 0.0f64;
    for (a, b) in pairs() {
        let (u, v) = (mul_pow2(a, -kx), mul_pow2(b, -ky));
        s[0] += u * u;
        s[1] += v * v;
        s[2] += u * v;
        ad = ad.max((mul_pow2(a, -k) - mul_pow2(b, -k)).abs());
    }
    let kd = exponent_of(ad);
    for (a, b) in pairs() {
        let d = mul_pow2(mul_pow2(a, -k) - mul_pow2(b, -k), -kd);
        s[3] += d * d;
    }
    Moments {
        sum: s,
        exp: [2 * kx, 2 * ky, kx + ky, 2 * (k + kd)],
    }
}

/// SQNR (dB) from a signal power `Σx² · 2^exp_signal` and a noise power `Σ(x−y)² · 2^exp_noise`
/// (exponents even): the one formula of [`sqnr`] and of the Numeric Suite's statistics.
pub(crate) fn sqnr_of_sums(signal: f64, exp_signal: i32, noise: f64, exp_noise: i32) -> f64 {
    let half_exp = (exp_signal - exp_noise) / 2;
    20.0 * ((signal.sqrt() / noise.sqrt()).log10()
        + f64::from(half_exp) * std::f64::consts::LOG10_2)
}

impl Moments {
    fn sqnr(&self) -> f64 {
        let [s0, _, _, s3] = self.sum;
        sqnr_of_sums(s0, self.exp[0], s3, self.exp[3])
    }

    fn normalized_l2_error(&self) -> f64 {
        let [s0, _, _, s3] = self.sum;
        mul_pow2((s3 / s0).sqrt(), (self.exp[3] - self.exp[0]) / 2)
    }

    fn cosine_similarity(&self) -> f64 {
        const EPS: f64 = 1e-8;
        let [s0, s1, s2, _] = self.sum;
        // With the norms in units of 2^(exp/2), the clamp is to EPS in those units.
        let n1 = s0.sqrt().max(mul_pow2(EPS, -self.exp[0] / 2));
        let n2 = s1.sqrt().max(mul_pow2(EPS, -self.exp[1] / 2));
        s2 / (n1 * n2)
    }

    fn mse(&self, n: usize) -> f64 {
        mul_pow2(self.sum[3] / n as f64, self.exp[3])
    }
}

/// Signal-to-quantization-noise ratio in dB: `20·log10(‖x‖₂ / ‖x − y‖₂)`.
///
/// `x` is the reference. Identical inputs give `+inf`; all-zero `x` and `y` give NaN; all-zero
/// `x` with non-zero `y` gives `-inf` (PyTorch's conventions).
///
/// # Errors
/// [`QuantError::ShapeMismatch`] when the shapes differ; [`QuantError::EmptyInput`] for
/// arrays without a value; [`QuantError::NanInput`] and [`QuantError::InfiniteInput`] for
/// non-finite input.
///
/// # Examples
/// ```
/// use ndarray::array;
/// let db = qnumeric::sqnr(&array![1.0f32, 2.0, 3.0], &array![1.0f32, 2.0, 3.5])?;
/// assert!((db - 17.4819).abs() < 1e-4);
/// // Accumulated in f64: values far beyond the f32 range of their squares are fine.
/// let db = qnumeric::sqnr(&array![1e20f32, -3e19], &array![1.001e20f32, -3.003e19])?;
/// assert!((db - 60.0).abs() < 1e-2);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn sqnr<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, y: &ArrayRef<F, D>) -> Result<f64> {
    Ok(moments("sqnr", x, y)?.sqnr())
}

/// Normalized L2 error: `sqrt(Σ(x − y)² / Σx²)`.
///
/// # Errors
/// As [`sqnr`].
pub fn normalized_l2_error<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<f64> {
    Ok(moments("normalized_l2_error", x, y)?.normalized_l2_error())
}

/// Cosine similarity of the flattened arrays, with PyTorch's `eps = 1e-8` clamp of each norm
/// (so a zero vector gives 0).
///
/// # Errors
/// As [`sqnr`].
pub fn cosine_similarity<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<f64> {
    Ok(moments("cosine_similarity", x, y)?.cosine_similarity())
}

/// Mean squared error `Σ(x − y)² / n` (`+inf` only when the true value
/// exceeds the `f64` range, which only `f64` inputs can reach).
///
/// # Errors
/// As [`sqnr`].
pub fn mse<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, y: &ArrayRef<F, D>) -> Result<f64> {
    Ok(moments("mse", x, y)?.mse(x.len()))
}

/// Largest absolute difference `max |x − y|`, computed in `f64` (`+inf`
/// only when the difference of two finite `f64` values exceeds the `f64` range).
///
/// # Errors
/// As [`sqnr`].
pub fn max_abs_error<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<f64> {
    const OP: &str = "max_abs_error";
    check(OP, x, y)?;
    let mut m = 0.0f64;
    let mut finite = true;
    Zip::from(x).and(y).for_each(|a, b| {
        let (a, b) = (a.to_f64_exact(), b.to_f64_exact());
        finite &= a.is_finite() & b.is_finite();
        m = m.max((a - b).abs());
    });
    if !finite {
        non_finite_input(OP, x, y)?;
    }
    Ok(m)
}

/// Which metric to compute, for APIs that take one as a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Metric {
    /// [`sqnr`] (dB, higher is better).
    Sqnr,
    /// [`normalized_l2_error`] (lower is better).
    NormalizedL2Error,
    /// [`cosine_similarity`] (higher is better).
    CosineSimilarity,
    /// [`mse`] (lower is better).
    Mse,
    /// [`max_abs_error`] (lower is better).
    MaxAbsError,
}

impl Metric {
    /// Computes the metric.
    ///
    /// # Errors
    /// As [`sqnr`].
    pub fn compute<F: QFloat, D: Dimension>(
        self,
        x: &ArrayRef<F, D>,
        y: &ArrayRef<F, D>,
    ) -> Result<f64> {
        match self {
            Metric::Sqnr => sqnr(x, y),
            Metric::NormalizedL2Error => normalized_l2_error(x, y),
            Metric::CosineSimilarity => cosine_similarity(x, y),
            Metric::Mse => mse(x, y),
            Metric::MaxAbsError => max_abs_error(x, y),
        }
    }

    /// PyTorch's / the conformance files' name (`sqnr`, `normalized_l2_error`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Sqnr => "sqnr",
            Metric::NormalizedL2Error => "normalized_l2_error",
            Metric::CosineSimilarity => "cosine_similarity",
            Metric::Mse => "mse",
            Metric::MaxAbsError => "max_abs_error",
        }
    }

    /// Parses [`Metric::name`].
    ///
    /// # Errors
    /// [`QuantError::Format`] for an unknown name.
    pub fn from_name(name: &str) -> Result<Self> {
        [
            Metric::Sqnr,
            Metric::NormalizedL2Error,
            Metric::CosineSimilarity,
            Metric::Mse,
            Metric::MaxAbsError,
        ]
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| QuantError::Format {
            op: "Metric::from_name",
            detail: format!("unknown metric `{name}`"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_lanes_equal_the_portable_lanes_bit_for_bit() {
        let a: Vec<f32> = (0..4000)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0)
            .collect();
        let b: Vec<f32> = a.iter().map(|v| v * 1.001 + 0.25).collect();
        let (a64, b64): (Vec<f64>, Vec<f64>) = (
            a.iter().map(|&v| v as f64 * 1e150).collect(),
            b.iter().map(|&v| v as f64 * 1e150).collect(),
        );
        let bits = |l: [[f64; LANES]; 4]| l.map(|s| s.map(f64::to_bits));
        for n in [0, 8, 16, 4000] {
            if let Some(l) = avx2::lanes_f32(&a[..n], &b[..n]) {
                assert_eq!(bits(l), bits(portable_lanes(&a[..n], &b[..n])), "f32 {n}");
            }
            if let Some(l) = avx2::lanes_f64(&a64[..n], &b64[..n]) {
                assert_eq!(
                    bits(l),
                    bits(portable_lanes(&a64[..n], &b64[..n])),
                    "f64 {n}"
                );
            }
        }
        // Tails shorter than 8 go to the first lanes.
        let s = sums(&a[..13], &b[..13]);
        let mut want = [0.0f64; 4];
        let mut lanes = [[0.0f64; LANES]; 4];
        for (i, (&u, &v)) in a[..13].iter().zip(&b[..13]).enumerate() {
            let (u, v) = (u as f64, v as f64);
            let k = i % LANES;
            lanes[0][k] += u * u;
            lanes[1][k] += v * v;
            lanes[2][k] += u * v;
            lanes[3][k] += (u - v) * (u - v);
        }
        for (w, l) in want.iter_mut().zip(lanes) {
            *w = l.iter().sum();
        }
        assert_eq!(s, want);
    }
}
