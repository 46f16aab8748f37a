//! The streaming accumulator of one layer ([`ErrorStats`]) and what it reports
//! ([`OutputComparison`], [`SampleStats`]).

use std::collections::BTreeMap;

use ndarray::{ArrayRef, ArrayViewD, Dimension};

use crate::element::QFloat;
use crate::error::{QuantError, Result};
use crate::qparams::QParams;

use super::exact::ExactSum;

/// RMS of the rounding error of a uniform quantizer, in quanta: `1/sqrt(12)` ≈ 0.2887. A
/// layer whose own (local) error sits at this floor loses nothing beyond rounding.
pub const ROUNDING_FLOOR_QUANTA: f64 = 0.288_675_134_594_812_9;

/// The running sums of one sample (first index of the sample axis).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct SampleAcc {
    signal: f64,
    noise: f64,
    max_abs: f64,
    clipped: u64,
    /// The sums are in units of `2^(2·exp)` (`max_abs` of `2^exp`): 0 unless `f64` data
    /// needed scaling.
    exp: i32,
}

/// One sample's figures: its SQNR and what it is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SampleStats {
    /// `20·log10(‖x‖/‖x−y‖)` over this sample's values (dB; PyTorch's conventions for
    /// identical and all-zero values, as [`crate::sqnr`]).
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub sqnr_db: f64,
    /// `Σx²` of the reference (float) values.
    pub signal_power: f64,
    /// `Σ(x−y)²`.
    pub noise_power: f64,
    /// `max |x−y|`.
    pub max_abs: f64,
    /// How many reference values lie outside the representable range of the output
    /// parameters (0 where the output was not quantized).
    pub clipped: u64,
}

/// Streaming statistics of the differences between a reference (`x`, float) and a value
/// under test (`y`, quantized or dequantized) for one layer, fed batch after batch with
/// [`ErrorStats::update`]. The first axis of every batch is the sample axis.
///
/// Memory is a fixed set of `f64` sums plus four numbers per sample (`Σx²`, `Σ(x−y)²`,
/// `max |x−y|`, clipped count): it does not grow with the number of batches beyond the
/// per-sample numbers. Every sum runs in `f64` over exact conversions of the inputs, so the
/// results equal the metrics of [`crate::metrics`] on the concatenation of the batches up to
/// the summation order within a batch. Each batch's sums are added exactly (the totals do not
/// depend on the order of the batches), so [`ErrorStats::merge`] of statistics kept on
/// shards of the batches equals one pass over all of them, bit for bit.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "state::ErrorStatsState", try_from = "state::ErrorStatsState")
)]
pub struct ErrorStats {
    batches: u64,
    n: u64,
    sxx: ExactSum,
    syy: ExactSum,
    sxy: ExactSum,
    sdd: ExactSum,
    sd: ExactSum,
    max_abs: f64,
    quantized_n: u64,
    clipped: u64,
    sdd_quanta: ExactSum,
    qparams: Option<QParams>,
    sample_shape: Option<Vec<usize>>,
    shape_varies: bool,
    samples: Vec<SampleAcc>,
    non_finite: NonFiniteCount,
    /// `sxx`, `syy`, `sxy`, `sdd` are in units of `2^(2·exp)`, `sd` and `max_abs` of `2^exp`.
    exp: i32,
}

/// The sums of one batch, merged into [`ErrorStats`] only when the whole batch is valid.
#[derive(Default)]
struct BatchSums {
    sxx: f64,
    syy: f64,
    sxy: f64,
    sdd: f64,
    sd: f64,
    max_abs: f64,
    clipped: u64,
    /// Units, as [`ErrorStats::exp`]: the batch's values were multiplied by `2^-exp`.
    exp: i32,
}

/// Checks a pair of batches: same shape, a sample axis, at least one value.
pub(crate) fn check_pair(op: &'static str, x: &[usize], y: &[usize]) -> Result<()> {
    if x != y {
        return Err(QuantError::ShapeMismatch {
            op,
            expected: x.to_vec(),
            got: y.to_vec(),
        });
    }
    if x.is_empty() {
        return Err(QuantError::InvalidAxis {
            op,
            axis: 0,
            ndim: 0,
        });
    }
    if x.contains(&0) {
        return Err(QuantError::EmptyInput { op });
    }
    Ok(())
}

/// Independent sums per lane: the additions of one row run in parallel instead of waiting
/// on each other (a row is summed in a fixed order, so every figure is still reproducible,
/// whatever the CPU: the vector width changes how the lanes are held, not the order).
const LANES: usize = 4;

crate::simd::dispatched512!(fn accumulate_slices[A: QFloat, B: QFloat](xs: &[A], ys: &[B], range: Option<(f64, f64)>, scale: f64, b: &mut BatchSums, s: &mut SampleAcc) = accumulate_slices_body);

/// [`accumulate`] over contiguous rows: `LANES` partial sums of each kind, added up in a
/// fixed order at the end.
#[inline(always)]
fn accumulate_slices_body<A: QFloat, B: QFloat>(
    xs: &[A],
    ys: &[B],
    range: Option<(f64, f64)>,
    scale: f64,
    b: &mut BatchSums,
    s: &mut SampleAcc,
) {
    let sums = match range {
        Some((lo, hi)) => lane_sums::<A, B, true>(xs, ys, lo, hi, scale),
        None => lane_sums::<A, B, false>(xs, ys, 0.0, 0.0, scale),
    };
    let [sxx, syy, sxy, sdd, sd, mx, clipped] = sums;
    add_row([sxx, syy, sxy, sdd, sd, mx], clipped as u64, b, s);
}

/// Adds one row's `[Σu², Σv², Σuv, Σd², Σd, max|d|]` and clipped count to the batch's sums
/// and to its sample's.
#[inline(always)]
fn add_row(sums: [f64; 6], clipped: u64, b: &mut BatchSums, s: &mut SampleAcc) {
    let [sxx, syy, sxy, sdd, sd, mx] = sums;
    b.sxx += sxx;
    b.syy += syy;
    b.sxy += sxy;
    b.sdd += sdd;
    b.sd += sd;
    b.max_abs = b.max_abs.max(mx);
    b.clipped += clipped;
    s.signal += sxx;
    s.noise += sdd;
    s.max_abs = s.max_abs.max(mx);
    s.clipped += clipped;
}

/// `acc[l] += Σ a[k]·b[k]` over the `k` of lane `l` (`k % LANES == l`), in order.
#[inline(always)]
fn lanes_add(acc: &mut [f64; LANES], a: &[f64], b: &[f64]) {
    for (xa, xb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += xa[l] * xb[l];
        }
    }
}

/// `[Σu², Σv², Σuv, Σd², Σd, max|d|, clipped]` of one row (`u = x·scale`, `v = y·scale`,
/// `d = u − v`; `clipped`: `x` outside `lo..=hi`, counted when `CLIP`). Element `i` goes to
/// lane `i % LANES`; the values are converted to `f64` a block at a time first (contiguous
/// conversions, then contiguous `f64` lanes: what the vectorizer maps onto registers).
#[inline(always)]
fn lane_sums<A: QFloat, B: QFloat, const CLIP: bool>(
    xs: &[A],
    ys: &[B],
    lo: f64,
    hi: f64,
    scale: f64,
) -> [f64; 7] {
    const BLOCK: usize = 64;
    let n = xs.len().min(ys.len());
    let mut acc = [[0.0f64; LANES]; 7];
    let mut ub = [0.0f64; BLOCK];
    let mut vb = [0.0f64; BLOCK];
    for (cx, cy) in xs[..n].chunks(BLOCK).zip(ys[..n].chunks(BLOCK)) {
        let m = cx.len();
        for (d, x) in ub.iter_mut().zip(cx) {
            *d = x.to_f64_exact();
        }
        for (d, y) in vb.iter_mut().zip(cy) {
            *d = y.to_f64_exact();
        }
        // A short last block: the rest of the buffers is zeros, which add nothing (and
        // count as not clipped, `lo <= 0 <= hi` being true of every quantization range).
        for k in m..BLOCK {
            ub[k] = 0.0;
            vb[k] = 0.0;
        }
        if CLIP {
            for us in ub.chunks_exact(LANES) {
                for l in 0..LANES {
                    acc[6][l] += if us[l] < lo || us[l] > hi { 1.0 } else { 0.0 };
                }
            }
        }
        // One pass per sum over the block (in L1): each pass is one chain per lane, which
        // the vectorizer maps onto one register.
        let mut db = [0.0f64; BLOCK];
        for k in 0..BLOCK {
            ub[k] *= scale;
            vb[k] *= scale;
            db[k] = ub[k] - vb[k];
        }
        lanes_add(&mut acc[0], &ub, &ub);
        lanes_add(&mut acc[1], &vb, &vb);
        lanes_add(&mut acc[2], &ub, &vb);
        lanes_add(&mut acc[3], &db, &db);
        for ds in db.chunks_exact(LANES) {
            for l in 0..LANES {
                acc[4][l] += ds[l];
            }
        }
        for ds in db.chunks_exact(LANES) {
            for l in 0..LANES {
                let a = ds[l].abs();
                acc[5][l] = if a > acc[5][l] { a } else { acc[5][l] };
            }
        }
    }
    // Pairwise, in a fixed order.
    let fold = |v: [f64; LANES]| (v[0] + v[1]) + (v[2] + v[3]);
    let m = acc[5]
        .into_iter()
        .fold(0.0f64, |m, v| if v > m { v } else { m });
    [
        fold(acc[0]),
        fold(acc[1]),
        fold(acc[2]),
        fold(acc[3]),
        fold(acc[4]),
        m,
        fold(acc[6]),
    ]
}

#[inline(always)]
fn accumulate<A: QFloat, B: QFloat>(
    xs: impl Iterator<Item = A>,
    ys: impl Iterator<Item = B>,
    range: Option<(f64, f64)>,
    scale: f64,
    b: &mut BatchSums,
    s: &mut SampleAcc,
) {
    let (mut sxx, mut syy, mut sxy, mut sdd, mut sd, mut mx) =
        (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut clipped = 0u64;
    match range {
        None => {
            for (a, c) in xs.zip(ys) {
                let (u, v) = (a.to_f64_exact() * scale, c.to_f64_exact() * scale);
                let d = u - v;
                sxx += u * u;
                syy += v * v;
                sxy += u * v;
                sdd += d * d;
                sd += d;
                mx = mx.max(d.abs());
            }
        }
        Some((lo, hi)) => {
            for (a, c) in xs.zip(ys) {
                let u0 = a.to_f64_exact();
                clipped += u64::from(u0 < lo || u0 > hi);
                let (u, v) = (u0 * scale, c.to_f64_exact() * scale);
                let d = u - v;
                sxx += u * u;
                syy += v * v;
                sxy += u * v;
                sdd += d * d;
                sd += d;
                mx = mx.max(d.abs());
            }
        }
    }
    add_row([sxx, syy, sxy, sdd, sd, mx], clipped, b, s);
}

/// The first non-finite value of either array (row-major flat index), as a typed error.
fn first_non_finite<A: QFloat, B: QFloat>(
    op: &'static str,
    x: &ArrayViewD<'_, A>,
    y: &ArrayViewD<'_, B>,
) -> QuantError {
    for (index, (a, b)) in x.iter().zip(y.iter()).enumerate() {
        for v in [a.to_f64_exact(), b.to_f64_exact()] {
            if v.is_nan() {
                return QuantError::NanInput { op, index };
            }
            if v.is_infinite() {
                return QuantError::NonFinite {
                    op,
                    what: "a compared value",
                    value: v,
                };
            }
        }
    }
    // Sums overflowed on finite inputs: not reachable for f32 data (|x|² < 1.2e77), kept as
    // a typed error for f64 data near its limits.
    QuantError::NonFinite {
        op,
        what: "the sum of squared values",
        value: f64::INFINITY,
    }
}

/// Values under test that are NaN or infinite (where the reference is finite), and the
/// samples that hold them: a finding of the comparison, never a skip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NonFiniteCount {
    /// NaN values.
    pub nan: u64,
    /// `+inf` values.
    pub pos_inf: u64,
    /// `-inf` values.
    pub neg_inf: u64,
    /// Samples holding at least one of them.
    pub samples: u64,
}

impl NonFiniteCount {
    /// All non-finite values.
    #[must_use]
    pub fn values(&self) -> u64 {
        self.nan + self.pos_inf + self.neg_inf
    }

    /// Whether there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.values() == 0
    }

    fn merge(&mut self, o: &NonFiniteCount) {
        self.nan += o.nan;
        self.pos_inf += o.pos_inf;
        self.neg_inf += o.neg_inf;
        self.samples += o.samples;
    }
}

impl BatchSums {
    fn is_finite(&self) -> bool {
        self.sdd.is_finite() && self.sd.is_finite() && self.sxx.is_finite() && self.syy.is_finite()
    }
}

/// The sums of a batch, row by row. With `non_finite_rows`, a row whose values under test
/// hold NaN or ±inf adds only its reference power and gets an infinite error.
fn sum_rows<A: QFloat, B: QFloat>(
    x: &ArrayViewD<'_, A>,
    y: &ArrayViewD<'_, B>,
    range: Option<(f64, f64)>,
    non_finite_rows: bool,
    exp: i32,
) -> (BatchSums, Vec<SampleAcc>, NonFiniteCount) {
    // |exp| <= 1000 keeps 2^-exp a normal f64.
    let scale = 2f64.powi(-exp);
    let mut b = BatchSums {
        exp,
        ..BatchSums::default()
    };
    let mut count = NonFiniteCount::default();
    let mut new_samples = Vec::with_capacity(x.shape()[0]);
    for (xs, ys) in x.outer_iter().zip(y.outer_iter()) {
        let mut s = SampleAcc {
            exp,
            ..SampleAcc::default()
        };
        if non_finite_rows {
            let before = count.values();
            for v in ys.iter() {
                let v = v.to_f64_exact();
                if v.is_nan() {
                    count.nan += 1;
                } else if v == f64::INFINITY {
                    count.pos_inf += 1;
                } else if v == f64::NEG_INFINITY {
                    count.neg_inf += 1;
                }
            }
            if count.values() > before {
                count.samples += 1;
                for a in xs.iter() {
                    let u = a.to_f64_exact();
                    if let Some((lo, hi)) = range {
                        s.clipped += u64::from(u < lo || u > hi);
                    }
                    let u = u * scale;
                    s.signal += u * u;
                }
                b.sxx += s.signal;
                b.clipped += s.clipped;
                s.noise = f64::INFINITY;
                s.max_abs = f64::INFINITY;
                new_samples.push(s);
                continue;
            }
        }
        match (xs.as_slice(), ys.as_slice()) {
            (Some(a), Some(c)) => accumulate_slices(a, c, range, scale, &mut b, &mut s),
            _ => accumulate(
                xs.iter().copied(),
                ys.iter().copied(),
                range,
                scale,
                &mut b,
                &mut s,
            ),
        }
        new_samples.push(s);
    }
    (b, new_samples, count)
}

pub(crate) fn sqnr_db(signal: f64, noise: f64) -> f64 {
    crate::metrics::sqnr_of_sums(signal, 0, noise, 0)
}

/// The exponent that brings the largest finite magnitude of `x` and `y` near 1 (|k| <= 1000,
/// so `2^-k` is a normal `f64`): the same power-of-two scaling as [`crate::metrics`].
fn scale_exponent<A: QFloat, B: QFloat>(x: &ArrayViewD<'_, A>, y: &ArrayViewD<'_, B>) -> i32 {
    let finite_max = |m: f64, v: f64| if v.is_finite() { m.max(v.abs()) } else { m };
    let ax = x.iter().map(|v| v.to_f64_exact()).fold(0.0, finite_max);
    let ay = y.iter().map(|v| v.to_f64_exact()).fold(0.0, finite_max);
    crate::metrics::exponent_of(ax.max(ay)).clamp(-1000, 1000)
}

impl ErrorStats {
    /// No data yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one batch: `x` the reference (float) values, `y` the values under test, both of
    /// the same shape with the samples along the first axis. `output` are the parameters
    /// `y` was quantized with, when it was: they give the clipped fraction and the error in
    /// quanta. On an error nothing is added.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] when the shapes differ; [`QuantError::InvalidAxis`] for a
    /// 0-d array (no sample axis); [`QuantError::EmptyInput`] when an axis has length 0;
    /// [`QuantError::NanInput`] / [`QuantError::NonFinite`] for a NaN or an infinity in
    /// the reference `x`. NaN and ±inf in `y` (the values under test) are not errors but a
    /// finding: counted in [`ErrorStats::non_finite`], the samples holding them at SQNR `-inf`.
    pub fn update<A: QFloat, B: QFloat, D: Dimension>(
        &mut self,
        x: &ArrayRef<A, D>,
        y: &ArrayRef<B, D>,
        output: Option<&QParams>,
    ) -> Result<()> {
        const OP: &str = "ErrorStats::update";
        check_pair(OP, x.shape(), y.shape())?;
        let (x, y) = (x.view().into_dyn(), y.view().into_dyn());
        let range = output.map(|q| {
            let (lo, hi) = q.representable();
            (f64::from(lo), f64::from(hi))
        });
        let (mut b, mut new_samples, _) = sum_rows(&x, &y, range, false, 0);
        let mut non_finite = NonFiniteCount::default();
        // Only `f64` squares can overflow or underflow an `f64` sum (as in `metrics`).
        let reads_f64 = A::as_f64_slice(&[]).is_some() || B::as_f64_slice(&[]).is_some();
        let unsafe_sum = |v: f64| !v.is_finite() || v < crate::metrics::F64_SAFE_MIN;
        if !b.is_finite() || (reads_f64 && [b.sxx, b.syy, b.sdd].into_iter().any(unsafe_sum)) {
            // NaN or ±inf in the reference: the comparison means nothing, refuse it.
            if x.iter().any(|v| !v.to_f64_exact().is_finite()) {
                return Err(first_non_finite(OP, &x, &x));
            }
            // Non-finite values under test are a finding: counted, and the samples that hold
            // them get an infinite error (SQNR -inf). Finite `f64` data beyond the range of
            // its squares is summed scaled by a power of two.
            let y_non_finite = y.iter().any(|v| !v.to_f64_exact().is_finite());
            let exp = if reads_f64 { scale_exponent(&x, &y) } else { 0 };
            (b, new_samples, non_finite) = sum_rows(&x, &y, range, y_non_finite, exp);
            if !b.is_finite() {
                return Err(first_non_finite(OP, &x, &y));
            }
        }
        self.non_finite.merge(&non_finite);
        let count = x.len() as u64;
        self.batches += 1;
        // Bring the sums to common units: the larger exponent wins (the smaller sums lose
        // only what is negligible beside the larger ones).
        if self.n == 0 {
            self.exp = b.exp;
        } else if b.exp > self.exp {
            self.rescale(b.exp);
        } else if b.exp < self.exp {
            let e = b.exp - self.exp;
            for v in [&mut b.sxx, &mut b.syy, &mut b.sxy, &mut b.sdd] {
                *v = crate::metrics::mul_pow2(*v, 2 * e);
            }
            b.sd = crate::metrics::mul_pow2(b.sd, e);
            b.max_abs = crate::metrics::mul_pow2(b.max_abs, e);
        }
        self.n += count;
        self.sxx.add(b.sxx);
        self.syy.add(b.syy);
        self.sxy.add(b.sxy);
        self.sdd.add(b.sdd);
        self.sd.add(b.sd);
        self.max_abs = self.max_abs.max(b.max_abs);
        if let Some(q) = output {
            let scale = f64::from(q.scale());
            self.quantized_n += count;
            self.clipped += b.clipped;
            let sdd = crate::metrics::mul_pow2(b.sdd, 2 * self.exp);
            self.sdd_quanta.add(sdd / (scale * scale));
            self.qparams = Some(*q);
        }
        let trailing = &x.shape()[1..];
        match &self.sample_shape {
            None => self.sample_shape = Some(trailing.to_vec()),
            Some(s) if s != trailing => self.shape_varies = true,
            Some(_) => {}
        }
        self.samples.extend(new_samples);
        Ok(())
    }

    /// Brings the sums to units of `2^exp` (`exp` larger than the current one): the smaller
    /// sums lose only what is negligible beside the larger ones.
    fn rescale(&mut self, exp: i32) {
        let e = self.exp - exp;
        for v in [&mut self.sxx, &mut self.syy, &mut self.sxy, &mut self.sdd] {
            v.mul_pow2(2 * e);
        }
        self.sd.mul_pow2(e);
        self.max_abs = crate::metrics::mul_pow2(self.max_abs, e);
        self.exp = exp;
    }

    /// Adds the statistics of other batches of the same layer (another shard of the data):
    /// the result is what one [`ErrorStats`] fed all the batches would hold, `self`'s first,
    /// bit for bit (samples in that order). Only `f64` data so large or small that its sums
    /// were scaled by different powers of two loses the bits the scaling drops.
    ///
    /// # Errors
    /// [`QuantError::Incompatible`] when both came with output parameters and they differ.
    ///
    /// # Examples
    /// ```
    /// use ndarray::array;
    /// use qnumeric::ns::ErrorStats;
    ///
    /// let (x, y) = (array![[1.0f32, 2.0], [3.0, 4.0]], array![[1.1f32, 2.0], [3.0, 3.9]]);
    /// let mut whole = ErrorStats::new();
    /// whole.update(&x, &y, None)?;
    /// whole.update(&y, &x, None)?;
    /// let (mut a, mut b) = (ErrorStats::new(), ErrorStats::new());
    /// a.update(&x, &y, None)?;
    /// b.update(&y, &x, None)?;
    /// a.merge(&b)?;
    /// assert_eq!(a, whole);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn merge(&mut self, other: &ErrorStats) -> Result<()> {
        if let (Some(a), Some(b)) = (&self.qparams, &other.qparams)
            && a != b
        {
            return Err(QuantError::Incompatible {
                op: "ErrorStats::merge",
                reason: "the two came with different output quantization parameters",
            });
        }
        if other.batches == 0 {
            return Ok(());
        }
        if self.batches == 0 {
            *self = other.clone();
            return Ok(());
        }
        let mut o = other.clone();
        if o.exp > self.exp {
            self.rescale(o.exp);
        } else if o.exp < self.exp {
            o.rescale(self.exp);
        }
        self.batches += o.batches;
        self.n += o.n;
        self.sxx.add_sum(&o.sxx);
        self.syy.add_sum(&o.syy);
        self.sxy.add_sum(&o.sxy);
        self.sdd.add_sum(&o.sdd);
        self.sd.add_sum(&o.sd);
        self.max_abs = self.max_abs.max(o.max_abs);
        self.quantized_n += o.quantized_n;
        self.clipped += o.clipped;
        self.sdd_quanta.add_sum(&o.sdd_quanta);
        if o.qparams.is_some() {
            self.qparams = o.qparams;
        }
        match (&self.sample_shape, &o.sample_shape) {
            (None, s) => self.sample_shape = s.clone(),
            (Some(a), Some(b)) if a != b => self.shape_varies = true,
            _ => {}
        }
        self.shape_varies |= o.shape_varies;
        self.samples.extend(o.samples);
        self.non_finite.merge(&o.non_finite);
        Ok(())
    }

    /// Takes back `elements` values counted by the last update that were padding set to zero
    /// in both tensors ([`super::Mask`]): they added nothing to any sum, and must not count
    /// in the means either.
    pub(crate) fn discount_padding(&mut self, elements: u64, quantized: bool) {
        self.n = self.n.saturating_sub(elements);
        if quantized {
            self.quantized_n = self.quantized_n.saturating_sub(elements);
        }
    }

    /// Batches added.
    #[must_use]
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Values compared (all batches).
    #[must_use]
    pub fn elements(&self) -> u64 {
        self.n
    }

    /// Samples seen (the first axes of all batches, added up).
    #[must_use]
    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    /// SQNR `20·log10(‖x‖/‖x−y‖)` over everything seen (dB).
    #[must_use]
    pub fn sqnr_db(&self) -> f64 {
        if !self.non_finite.is_empty() {
            return f64::NEG_INFINITY;
        }
        sqnr_db(self.sxx.value(), self.sdd.value())
    }

    /// The NaN and infinite values seen under test (where the reference was finite): those
    /// samples' SQNR is `-inf`, and so is the layer's; MSE, normalized L2 and the largest
    /// error are `inf`, cosine and mean error NaN.
    #[must_use]
    pub fn non_finite(&self) -> NonFiniteCount {
        self.non_finite
    }

    /// `sqrt(Σ(x−y)²/Σx²)`.
    #[must_use]
    pub fn normalized_l2(&self) -> f64 {
        if !self.non_finite.is_empty() {
            return f64::INFINITY;
        }
        (self.sdd.value() / self.sxx.value()).sqrt()
    }

    /// Cosine similarity with PyTorch's `eps = 1e-8` clamp of each norm.
    #[must_use]
    pub fn cosine(&self) -> f64 {
        const EPS: f64 = 1e-8;
        if !self.non_finite.is_empty() {
            return f64::NAN;
        }
        // With the norms in units of 2^exp, the clamp is to EPS in those units.
        let eps = crate::metrics::mul_pow2(EPS, -self.exp);
        self.sxy.value() / (self.sxx.value().sqrt().max(eps) * self.syy.value().sqrt().max(eps))
    }

    /// Mean squared error (NaN before any data).
    #[must_use]
    pub fn mse(&self) -> f64 {
        if !self.non_finite.is_empty() {
            return f64::INFINITY;
        }
        crate::metrics::mul_pow2(self.sdd.value() / self.n as f64, 2 * self.exp)
    }

    /// `max |x−y|` (0 before any data).
    #[must_use]
    pub fn max_abs(&self) -> f64 {
        if !self.non_finite.is_empty() {
            return f64::INFINITY;
        }
        crate::metrics::mul_pow2(self.max_abs, self.exp)
    }

    /// Mean signed error `Σ(x−y)/n`: a bias of the quantized values (positive when they are
    /// below the reference on average).
    #[must_use]
    pub fn mean_error(&self) -> f64 {
        if !self.non_finite.is_empty() {
            return f64::NAN;
        }
        crate::metrics::mul_pow2(self.sd.value() / self.n as f64, self.exp)
    }

    /// Fraction of reference values outside the representable range of the output
    /// parameters, over the batches that came with parameters (`None` when none did).
    #[must_use]
    pub fn clipped_fraction(&self) -> Option<f64> {
        (self.quantized_n > 0).then(|| self.clipped as f64 / self.quantized_n as f64)
    }

    /// RMS error in quanta of the output scale, over the batches that came with parameters
    /// (`None` when none did). Compare with [`ROUNDING_FLOOR_QUANTA`].
    #[must_use]
    pub fn rms_quanta(&self) -> Option<f64> {
        (self.quantized_n > 0).then(|| {
            if self.non_finite.is_empty() {
                (self.sdd_quanta.value() / self.quantized_n as f64).sqrt()
            } else {
                f64::INFINITY
            }
        })
    }

    /// The output parameters of the last batch that came with them.
    #[must_use]
    pub fn output_qparams(&self) -> Option<&QParams> {
        self.qparams.as_ref()
    }

    /// `[samples, per-sample shape...]`, with the per-sample shape of the first batch
    /// (`None` before any data).
    #[must_use]
    pub fn shape(&self) -> Option<Vec<usize>> {
        self.sample_shape.as_ref().map(|t| {
            let mut s = vec![self.samples.len()];
            s.extend_from_slice(t);
            s
        })
    }

    /// Whether batches came with different per-sample shapes.
    #[must_use]
    pub fn shape_varies(&self) -> bool {
        self.shape_varies
    }

    /// Each sample's SQNR (dB), in the order the samples were added.
    #[must_use]
    pub fn sample_sqnr_db(&self) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| sqnr_db(s.signal, s.noise))
            .collect()
    }

    /// Each sample's figures, in the order the samples were added.
    pub fn sample_stats(&self) -> impl ExactSizeIterator<Item = SampleStats> + '_ {
        self.samples.iter().map(|s| SampleStats {
            sqnr_db: sqnr_db(s.signal, s.noise),
            signal_power: crate::metrics::mul_pow2(s.signal, 2 * s.exp),
            noise_power: crate::metrics::mul_pow2(s.noise, 2 * s.exp),
            max_abs: crate::metrics::mul_pow2(s.max_abs, s.exp),
            clipped: s.clipped,
        })
    }

    /// Heap bytes held (the per-sample numbers).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<SampleAcc>()
            + self
                .sample_shape
                .as_ref()
                .map_or(0, |s| s.capacity() * std::mem::size_of::<usize>())
    }

    /// The finished figures.
    #[must_use]
    pub fn summary(&self) -> OutputComparison {
        OutputComparison {
            shape: self.shape().unwrap_or_default(),
            shape_varies: self.shape_varies,
            batches: self.batches,
            elements: self.n,
            sqnr_db: self.sqnr_db(),
            normalized_l2: self.normalized_l2(),
            cosine: self.cosine(),
            mse: self.mse(),
            max_abs: self.max_abs(),
            mean_error: self.mean_error(),
            clipped_fraction: self.clipped_fraction(),
            non_finite: self.non_finite,
            rms_quanta: self.rms_quanta(),
            output_qparams: self.qparams,
            samples: self.sample_stats().collect(),
            custom: BTreeMap::new(),
        }
    }
}

/// The figures of one layer under one comparison (cumulative or local): what
/// [`ErrorStats::summary`] gives, with the values of the caller's own comparisons.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OutputComparison {
    /// `[samples, per-sample shape...]` (per-sample shape of the first batch).
    pub shape: Vec<usize>,
    /// Whether batches came with different per-sample shapes.
    pub shape_varies: bool,
    /// Batches seen.
    pub batches: u64,
    /// Values compared.
    pub elements: u64,
    /// SQNR (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub sqnr_db: f64,
    /// Normalized L2 error.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub normalized_l2: f64,
    /// Cosine similarity.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub cosine: f64,
    /// Mean squared error.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub mse: f64,
    /// Largest absolute error.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub max_abs: f64,
    /// Mean signed error `Σ(x−y)/n` (bias).
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub mean_error: f64,
    /// Fraction of float values outside the output's representable range (quantized
    /// outputs only).
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::opt_f64"))]
    pub clipped_fraction: Option<f64>,
    /// RMS error in quanta of the output scale (quantized outputs only); the rounding floor
    /// is [`ROUNDING_FLOOR_QUANTA`].
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::opt_f64"))]
    pub rms_quanta: Option<f64>,
    /// NaN and infinite values under test (where the reference was finite): a finding.
    pub non_finite: NonFiniteCount,
    /// The output parameters (quantized outputs only).
    pub output_qparams: Option<QParams>,
    /// One entry per sample, in the order the samples were seen.
    pub samples: Vec<SampleStats>,
    /// The caller's comparisons by name ([`super::NumericLog::add_comparison`],
    /// [`super::NumericLog::extend_with_comparison`]).
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::map_vec_f64"))]
    pub custom: BTreeMap<String, Vec<f64>>,
}

impl OutputComparison {
    /// Each sample's SQNR (dB).
    #[must_use]
    pub fn sample_sqnr_db(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.sqnr_db).collect()
    }

    /// The indices of the `k` samples with the lowest SQNR, worst first (NaN SQNRs, from
    /// all-zero samples, last).
    #[must_use]
    pub fn worst_samples(&self, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.samples.len()).collect();
        idx.sort_by(|&a, &b| {
            let (x, y) = (self.samples[a].sqnr_db, self.samples[b].sqnr_db);
            match (x.is_nan(), y.is_nan()) {
                (true, true) => a.cmp(&b),
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => x.total_cmp(&y).then(a.cmp(&b)),
            }
        });
        idx.truncate(k);
        idx
    }

    /// Fraction of the samples whose SQNR is below `db` (NaN SQNRs, from all-zero samples,
    /// count as not below; 0 when there are no samples).
    #[must_use]
    pub fn fraction_of_samples_below(&self, db: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let below = self.samples.iter().filter(|s| s.sqnr_db < db).count();
        below as f64 / self.samples.len() as f64
    }

    /// The `p`-th percentile (`0..=100`, nearest rank) of the per-sample SQNRs, NaNs left
    /// out (`None` when no sample has a number).
    #[must_use]
    pub fn sample_sqnr_percentile(&self, p: f64) -> Option<f64> {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .map(|s| s.sqnr_db)
            .filter(|x| !x.is_nan())
            .collect();
        if v.is_empty() || !(0.0..=100.0).contains(&p) {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[rank.min(v.len() - 1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, array};

    #[test]
    fn one_batch_matches_the_definitions() {
        let x = array![[1.0f32, 2.0, 3.0], [0.5, -1.0, 4.0]];
        let y = array![[1.0f32, 2.0, 3.5], [0.5, -1.5, 4.0]];
        let mut s = ErrorStats::new();
        s.update(&x, &y, None).expect("ok");
        assert_eq!(s.samples(), 2);
        assert_eq!(s.elements(), 6);
        assert!((s.sample_sqnr_db()[0] - 17.4819).abs() < 1e-4);
        let sxx: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert!((s.normalized_l2() - (0.5f64 / sxx).sqrt()).abs() < 1e-15);
        assert_eq!(s.max_abs(), 0.5);
        assert_eq!(s.mean_error(), 0.0);
        assert_eq!(s.clipped_fraction(), None);
        assert_eq!(s.shape(), Some(vec![2, 3]));
    }

    #[test]
    fn clipped_and_quanta() {
        let qp = QParams::new(0.5, 0, crate::QDType::QUInt8).expect("qp");
        // representable 0..=127.5
        let x =
            ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![-1.0f32, 0.2, 1.0, 200.0]).expect("shape");
        let y =
            ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![0.0f32, 0.0, 1.0, 127.5]).expect("shape");
        let mut s = ErrorStats::new();
        s.update(&x, &y, Some(&qp)).expect("ok");
        assert_eq!(s.clipped_fraction(), Some(0.5));
        let expect = ((1.0f64 + 0.04 + 72.5f64 * 72.5) / 0.25 / 4.0).sqrt();
        let got = s.rms_quanta().expect("quantized");
        assert!((got - expect).abs() < 1e-6 * expect, "{got} {expect}");
        assert!(ROUNDING_FLOOR_QUANTA - 1.0 / 12f64.sqrt() == 0.0);
    }

    #[test]
    fn errors_leave_the_stats_unchanged() {
        let mut s = ErrorStats::new();
        let x = array![[1.0f32, 2.0]];
        s.update(&x, &x, None).expect("ok");
        let before = s.clone();
        // NaN in the reference is refused (under test it is a finding, counted)
        let bad = array![[1.0f32, f32::NAN]];
        assert_eq!(
            s.update(&bad, &x, None),
            Err(QuantError::NanInput {
                op: "ErrorStats::update",
                index: 1
            })
        );
        let inf = array![[f32::INFINITY, 1.0]];
        assert!(matches!(
            s.update(&inf, &x, None),
            Err(QuantError::NonFinite { .. })
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn sums_beyond_f64_are_scaled_not_refused() {
        let x = array![[1e200f64, 1.0]];
        let y = array![[1e200f64 * (1.0 + 1e-6), 1.0]];
        let mut s = ErrorStats::new();
        s.update(&x, &x, None).expect("finite inputs");
        assert_eq!(s.sqnr_db(), f64::INFINITY);
        assert_eq!(s.mse(), 0.0);
        s.update(&x, &y, None).expect("finite inputs");
        let want = crate::metrics::sqnr(
            &ndarray::concatenate![ndarray::Axis(0), x, x],
            &ndarray::concatenate![ndarray::Axis(0), x, y],
        )
        .expect("sqnr");
        assert!((s.sqnr_db() - want).abs() < 1e-9, "{} {want}", s.sqnr_db());
        assert!((s.max_abs() / 1e194 - 1.0).abs() < 1e-6, "{}", s.max_abs());
    }

    #[test]
    fn percentiles_and_worst() {
        let x = array![[1.0f32], [1.0], [1.0], [0.0]];
        let y = array![[0.9f32], [0.5], [1.0], [0.0]];
        let mut s = ErrorStats::new();
        s.update(&x, &y, None).expect("ok");
        let c = s.summary();
        assert_eq!(c.worst_samples(4), vec![1, 0, 2, 3]);
        assert_eq!(c.sample_sqnr_percentile(0.0), Some(c.samples[1].sqnr_db));
        assert_eq!(c.sample_sqnr_percentile(100.0), Some(f64::INFINITY));
        assert_eq!(c.sample_sqnr_percentile(101.0), None);
        assert_eq!(c.fraction_of_samples_below(f64::INFINITY), 0.5);
        assert_eq!(c.fraction_of_samples_below(0.0), 0.0);
        assert_eq!(
            ErrorStats::new().summary().fraction_of_samples_below(1.0),
            0.0
        );
    }
}

/// The serialized form of [`ErrorStats`] (feature `serde`): the exact sums as their partials,
/// every sample's sums; validated when read back.
#[cfg(feature = "serde")]
mod state {
    use super::{ErrorStats, ExactSum, NonFiniteCount, SampleAcc};
    use crate::error::QuantError;
    use crate::ns::json::Number;
    use crate::qparams::QParams;

    #[derive(serde::Serialize, serde::Deserialize)]
    pub(super) struct SampleState {
        signal: Number,
        noise: Number,
        max_abs: Number,
        clipped: u64,
        exp: i32,
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    pub(super) struct ErrorStatsState {
        batches: u64,
        n: u64,
        sxx: Vec<Number>,
        syy: Vec<Number>,
        sxy: Vec<Number>,
        sdd: Vec<Number>,
        sd: Vec<Number>,
        max_abs: Number,
        quantized_n: u64,
        clipped: u64,
        sdd_quanta: Vec<Number>,
        qparams: Option<QParams>,
        sample_shape: Option<Vec<usize>>,
        shape_varies: bool,
        samples: Vec<SampleState>,
        non_finite: NonFiniteCount,
        exp: i32,
    }

    fn out(s: &ExactSum) -> Vec<Number> {
        s.partials().iter().map(|&v| Number(v)).collect()
    }

    impl From<ErrorStats> for ErrorStatsState {
        fn from(e: ErrorStats) -> Self {
            ErrorStatsState {
                batches: e.batches,
                n: e.n,
                sxx: out(&e.sxx),
                syy: out(&e.syy),
                sxy: out(&e.sxy),
                sdd: out(&e.sdd),
                sd: out(&e.sd),
                max_abs: Number(e.max_abs),
                quantized_n: e.quantized_n,
                clipped: e.clipped,
                sdd_quanta: out(&e.sdd_quanta),
                qparams: e.qparams,
                sample_shape: e.sample_shape,
                shape_varies: e.shape_varies,
                samples: e
                    .samples
                    .iter()
                    .map(|s| SampleState {
                        signal: Number(s.signal),
                        noise: Number(s.noise),
                        max_abs: Number(s.max_abs),
                        clipped: s.clipped,
                        exp: s.exp,
                    })
                    .collect(),
                non_finite: e.non_finite,
                exp: e.exp,
            }
        }
    }

    impl TryFrom<ErrorStatsState> for ErrorStats {
        type Error = QuantError;

        fn try_from(s: ErrorStatsState) -> Result<Self, QuantError> {
            let bad = |detail: &str| QuantError::Format {
                op: "ErrorStats::deserialize",
                detail: detail.to_string(),
            };
            let sum = |v: &[Number], what: &str| -> Result<ExactSum, QuantError> {
                if v.iter().any(|x| !x.0.is_finite()) {
                    return Err(bad(&format!("`{what}` must hold finite partial sums")));
                }
                Ok(ExactSum::from_values(
                    &v.iter().map(|x| x.0).collect::<Vec<_>>(),
                ))
            };
            let power = |v: f64| !v.is_nan() && v >= 0.0;
            if !(-1000..=1000).contains(&s.exp) {
                return Err(bad("`exp` must lie in -1000..=1000"));
            }
            if s.quantized_n > s.n || s.clipped > s.n || (s.batches == 0 && s.n > 0) {
                return Err(bad("counts that contradict each other"));
            }
            if !power(s.max_abs.0) {
                return Err(bad("`max_abs` must be >= 0"));
            }
            let mut samples = Vec::with_capacity(s.samples.len());
            for x in &s.samples {
                if !power(x.signal.0) || !power(x.noise.0) || !power(x.max_abs.0) {
                    return Err(bad("a sample's sums must be >= 0 (or inf)"));
                }
                if !(-1000..=1000).contains(&x.exp) {
                    return Err(bad("a sample's `exp` must lie in -1000..=1000"));
                }
                samples.push(SampleAcc {
                    signal: x.signal.0,
                    noise: x.noise.0,
                    max_abs: x.max_abs.0,
                    clipped: x.clipped,
                    exp: x.exp,
                });
            }
            let e = ErrorStats {
                batches: s.batches,
                n: s.n,
                sxx: sum(&s.sxx, "sxx")?,
                syy: sum(&s.syy, "syy")?,
                sxy: sum(&s.sxy, "sxy")?,
                sdd: sum(&s.sdd, "sdd")?,
                sd: sum(&s.sd, "sd")?,
                max_abs: s.max_abs.0,
                quantized_n: s.quantized_n,
                clipped: s.clipped,
                sdd_quanta: sum(&s.sdd_quanta, "sdd_quanta")?,
                qparams: s.qparams,
                sample_shape: s.sample_shape,
                shape_varies: s.shape_varies,
                samples,
                non_finite: s.non_finite,
                exp: s.exp,
            };
            if e.sxx.value() < 0.0 || e.syy.value() < 0.0 || e.sdd.value() < 0.0 {
                return Err(bad("sums of squares must be >= 0"));
            }
            Ok(e)
        }
    }
}
