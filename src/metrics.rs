//! Comparison metrics of the Numeric Suite: SQNR, normalized L2 error, cosine similarity
//! (PyTorch's `torch.ao.ns.fx.utils` definitions and edge-case conventions), plus a few more.
//!
//! All metrics take the *reference* first (`x`, usually the float model) and the value under
//! test second (`y`), accumulate in `f64` and return `f64`. Both arrays must have the same
//! shape.
//!
//! | metric | formula | x == y | x == 0, y == 0 | x == 0, y != 0 |
//! |---|---|---|---|---|
//! | [`sqnr`] | `20·log10(‖x‖ / ‖x−y‖)` dB | +inf | NaN | −inf |
//! | [`normalized_l2_error`] | `sqrt(Σ(x−y)² / Σx²)` | 0 | NaN | +inf |
//! | [`cosine_similarity`] | `Σ (x/max(‖x‖,1e-8))·(y/max(‖y‖,1e-8))` | 1 | 0 | 0 |

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
    Ok(())
}

crate::simd::dispatched!(
    fn moments_slice[F: QFloat](xs: &[F], ys: &[F]) -> [f64; 4] = moments_slice_body
);

/// Contiguous moments. Within blocks of 1024 elements the four sums run in 16 `f32` lanes each
/// (so the loop vectorises); block sums are added in `f64`. The error of an `f32` partial sum
/// over 64 terms is far below the 1e-4 relative tolerance PyTorch's own `f32` reductions need.
#[inline(always)]
fn moments_slice_body<F: QFloat>(xs: &[F], ys: &[F]) -> [f64; 4] {
    const L: usize = 8;
    const BLOCK: usize = 1024;
    let mut m = [0.0f64; 4];
    let mut bx = [0.0f32; BLOCK];
    let mut by = [0.0f32; BLOCK];
    for (xb, yb) in xs.chunks(BLOCK).zip(ys.chunks(BLOCK)) {
        let n = xb.len();
        let (xf, yf): (&[f32], &[f32]) = match (F::as_f32_slice(xb), F::as_f32_slice(yb)) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                F::slice_to_compute(xb, &mut bx[..n]);
                F::slice_to_compute(yb, &mut by[..n]);
                (&bx[..n], &by[..n])
            }
        };
        let nv = n / L * L;
        let (xv, yv) = (&xf[..nv], &yf[..nv]);
        let [sxx, syy, sxy, sdd] = lanes4(xv, yv);
        m[0] += sxx;
        m[1] += syy;
        m[2] += sxy;
        m[3] += sdd;
        let (xr, yr) = (&xf[nv..], &yf[nv..]);
        for (a, b) in xr.iter().zip(yr) {
            let (u, v) = (*a as f64, *b as f64);
            let d = u - v;
            m[0] += u * u;
            m[1] += v * v;
            m[2] += u * v;
            m[3] += d * d;
        }
    }
    m
}

/// The four sums `(Σa², Σb², Σab, Σ(a−b)²)` in one pass, each in 16 `f32` lanes (two 8-wide
/// accumulators per sum hide the add latency, and the eight accumulators fit the 16 vector
/// registers; a tail shorter than 16 goes to the first lanes), returned as f64. One pass
/// reads each block once from L1: four separate passes ran at half the read baseline.
#[inline(always)]
fn lanes4(a: &[f32], b: &[f32]) -> [f64; 4] {
    const W: usize = 16;
    let mut acc = [[0.0f32; W]; 4];
    let ca = a.chunks_exact(W);
    let cb = b.chunks_exact(W);
    for (k, (&u, &v)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        acc[0][k] += u * u;
        acc[1][k] += v * v;
        acc[2][k] += u * v;
        acc[3][k] += (u - v) * (u - v);
    }
    for (ca, cb) in ca.zip(cb) {
        for k in 0..W {
            let (u, v) = (ca[k], cb[k]);
            acc[0][k] += u * u;
            acc[1][k] += v * v;
            acc[2][k] += u * v;
            acc[3][k] += (u - v) * (u - v);
        }
    }
    acc.map(|q| q.iter().map(|&v| v as f64).sum())
}

/// Sums `(Σx², Σy², Σxy, Σ(x−y)²)` in f64 with a contiguous fast path.
pub(crate) fn moments<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, y: &ArrayRef<F, D>) -> [f64; 4] {
    #[inline(always)]
    fn acc(m: &mut [f64; 4], a: f64, b: f64) {
        let d = a - b;
        m[0] += a * a;
        m[1] += b * b;
        m[2] += a * b;
        m[3] += d * d;
    }
    if x.strides() == y.strides() {
        if let (Some(xs), Some(ys)) = (x.as_slice_memory_order(), y.as_slice_memory_order()) {
            return crate::parallel::map_fold2(xs, ys, moments_slice, [0.0; 4], |a, b| {
                [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
            });
        }
    }
    let mut m = [0.0f64; 4];
    Zip::from(x)
        .and(y)
        .for_each(|a, b| acc(&mut m, a.to_f64_exact(), b.to_f64_exact()));
    m
}

/// Signal-to-quantization-noise ratio in dB: `20·log10(‖x‖₂ / ‖x − y‖₂)`.
///
/// `x` is the reference. Identical inputs give `+inf`; all-zero `x` and `y` give NaN; all-zero
/// `x` with non-zero `y` gives `-inf` (PyTorch's conventions).
///
/// # Errors
/// [`QuantError::ShapeMismatch`] when the shapes differ.
///
/// # Examples
/// ```
/// use ndarray::array;
/// let db = qnumeric::sqnr(&array![1.0f32, 2.0, 3.0], &array![1.0f32, 2.0, 3.5])?;
/// assert!((db - 17.4819).abs() < 1e-4);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn sqnr<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, y: &ArrayRef<F, D>) -> Result<f64> {
    check("sqnr", x, y)?;
    let m = moments(x, y);
    Ok(sqnr_from_moments(m))
}

pub(crate) fn sqnr_from_moments(m: [f64; 4]) -> f64 {
    20.0 * (m[0].sqrt() / m[3].sqrt()).log10()
}

/// Normalized L2 error: `sqrt(Σ(x − y)² / Σx²)`.
///
/// # Errors
/// [`QuantError::ShapeMismatch`] when the shapes differ.
pub fn normalized_l2_error<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<f64> {
    check("normalized_l2_error", x, y)?;
    let m = moments(x, y);
    Ok((m[3] / m[0]).sqrt())
}

/// Cosine similarity of the flattened arrays, with PyTorch's `eps = 1e-8` clamp of each norm
/// (so a zero vector gives 0).
///
/// # Errors
/// [`QuantError::ShapeMismatch`] when the shapes differ.
pub fn cosine_similarity<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<f64> {
    check("cosine_similarity", x, y)?;
    let m = moments(x, y);
    Ok(cosine_from_moments(m))
}

pub(crate) fn cosine_from_moments(m: [f64; 4]) -> f64 {
    const EPS: f64 = 1e-8;
    let n1 = m[0].sqrt().max(EPS);
    let n2 = m[1].sqrt().max(EPS);
    m[2] / (n1 * n2)
}

/// Mean squared error `Σ(x − y)² / n` (NaN for empty arrays).
///
/// # Errors
/// [`QuantError::ShapeMismatch`] when the shapes differ.
pub fn mse<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, y: &ArrayRef<F, D>) -> Result<f64> {
    check("mse", x, y)?;
    let m = moments(x, y);
    Ok(m[3] / x.len() as f64)
}

/// Largest absolute difference `max |x − y|` (0 for empty arrays; NaN if either holds NaN).
///
/// # Errors
/// [`QuantError::ShapeMismatch`] when the shapes differ.
pub fn max_abs_error<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    y: &ArrayRef<F, D>,
) -> Result<f64> {
    check("max_abs_error", x, y)?;
    let mut m = 0.0f64;
    let mut nan = false;
    Zip::from(x).and(y).for_each(|a, b| {
        let d = (a.to_f64_exact() - b.to_f64_exact()).abs();
        nan |= d.is_nan();
        m = m.max(d);
    });
    Ok(if nan { f64::NAN } else { m })
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
    /// [`QuantError::ShapeMismatch`] when the shapes differ.
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
