//! [`HistogramObserver`]: PyTorch's (≥ 2.5) histogram observer with its L2-norm parameter
//! search, bit for bit where PyTorch itself is deterministic.

use std::sync::OnceLock;

use ndarray::ArrayViewD;

use super::minmax::per_tensor_qparams;
use super::reduce::{check_spec, incompatible, min_max};
use super::Observer;
use crate::error::{QuantError, Result};
use crate::qparams::QuantSpec;
use crate::tensor::QuantParams;

/// PyTorch's constant upsampling rate when re-binning a histogram into a wider range.
const UPSAMPLE_RATE: usize = 16;

/// PyTorch's `HistogramObserver` (the algorithm of PyTorch ≥ 2.5): a histogram of `bins`
/// bins over the running `[min, max]`, re-binned when the range grows, and parameters chosen
/// by PyTorch's non-linear search minimising the L2 quantization error.
///
/// Numerics follow PyTorch exactly (`torch.histc`'s bin index, `linspace` with FMA, 16×
/// upscaling, combining with a degenerate old range, Python floor division, strict `>` break,
/// the end side moving on ties, `dst_nbins = 2^bits` of the dtype whatever the quant range).
/// The one difference: PyTorch sums the per-bin errors with a vectorised cascade that cannot
/// be reproduced portably; here the sums run in `f64` (rounded to `f32` as PyTorch's result
/// is), so the chosen range can differ from PyTorch's only when two candidate errors tie
/// within about one `f32` ulp.
///
/// - NaN or ±inf in a batch: refused with a typed error, observer unchanged. (PyTorch raises
///   on NaN from `histc`, and drops ±inf values with a warning.)
/// - Empty batches are no-ops; `qparams` before any data is [`QuantError::Empty`] (PyTorch:
///   scale 1.0, zero point 0 with a warning).
/// - The search result is cached until the next `observe`/`merge`/`reset`.
/// - `merge` is PyTorch's own combine: the other histogram is re-binned into the union range
///   (PyTorch's upscale) and added.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{HistogramObserver, Observer, QDType, QScheme, QuantSpec};
///
/// let spec = QuantSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
/// let mut obs = HistogramObserver::with_bins(spec, 3)?;
/// obs.observe(array![2.0f32, 3.0, 4.0, 5.0].into_dyn().view())?;
/// obs.observe(array![5.0f32, 6.0, 7.0, 8.0].into_dyn().view())?;
/// assert_eq!(obs.min_max(), Some((2.0, 8.0)));
/// assert_eq!(obs.histogram(), &[2.0, 3.0, 3.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HistogramObserver {
    spec: QuantSpec,
    bins: usize,
    histogram: Vec<f32>,
    range: Option<(f32, f32)>,
    cache: OnceLock<(f32, f32)>,
}

impl PartialEq for HistogramObserver {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
            && self.bins == other.bins
            && self.histogram == other.histogram
            && self.range == other.range
    }
}

impl HistogramObserver {
    /// PyTorch's default: 2048 bins.
    pub const DEFAULT_BINS: usize = 2048;

    /// A histogram observer with 2048 bins.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme;
    /// [`QuantError::InvalidScale`] for a bad `eps`.
    pub fn new(spec: QuantSpec) -> Result<Self> {
        Self::with_bins(spec, Self::DEFAULT_BINS)
    }

    /// A histogram observer with `bins` bins.
    ///
    /// # Errors
    /// As [`HistogramObserver::new`]; [`QuantError::InvalidParameter`] for `bins == 0` or
    /// more than 2^24 bins (counts are `f32`).
    pub fn with_bins(spec: QuantSpec, bins: usize) -> Result<Self> {
        const OP: &str = "HistogramObserver::new";
        check_spec(OP, &spec, false, false)?;
        if bins == 0 || bins > 1 << 22 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "bins",
                value: bins as f64,
                reason: "must be in 1..=2^24",
            });
        }
        Ok(HistogramObserver {
            spec,
            bins,
            histogram: vec![0.0; bins],
            range: None,
            cache: OnceLock::new(),
        })
    }

    /// Number of bins.
    #[must_use]
    pub fn bins(&self) -> usize {
        self.bins
    }

    /// The histogram (counts as `f32`, fractional after re-binning) over
    /// [`min_max`](Self::min_max).
    #[must_use]
    pub fn histogram(&self) -> &[f32] {
        &self.histogram
    }

    /// The `(min, max)` seen so far (`None` before any data).
    #[must_use]
    pub fn min_max(&self) -> Option<(f32, f32)> {
        self.range
    }

    /// The clipping range PyTorch's search picks (`_non_linear_param_search`), before the
    /// range is turned into parameters.
    ///
    /// # Errors
    /// [`QuantError::Empty`] before any data.
    pub fn search_range(&self) -> Result<(f32, f32)> {
        let (mn, mx) = self.range.ok_or(QuantError::Empty {
            op: "HistogramObserver::search_range",
        })?;
        Ok(*self
            .cache
            .get_or_init(|| non_linear_param_search(&self.histogram, mn, mx, self.dst_nbins())))
    }

    fn dst_nbins(&self) -> f64 {
        2f64.powi(self.spec.range.dtype().bits() as i32)
    }

    /// Folds a histogram `upd` that already lies over `[nmin, nmax]` into this one.
    fn absorb(&mut self, upd: Vec<f32>, nmin: f32, nmax: f32) {
        let (omin, omax) = match self.range {
            None => {
                self.histogram = upd;
                self.range = Some((nmin, nmax));
                return;
            }
            Some(r) => r,
        };
        self.histogram = combine(&self.histogram, omin, omax, &upd, nmin, nmax);
        self.range = Some((nmin, nmax));
    }
}

impl Observer for HistogramObserver {
    fn name(&self) -> &'static str {
        "HistogramObserver"
    }

    fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    fn observe(&mut self, x: ArrayViewD<'_, f32>) -> Result<()> {
        const OP: &str = "HistogramObserver::observe";
        // Steady state (the batch falls inside the range seen so far, the common case in
        // calibration): one pass bins the batch over the current range and measures its
        // min/max/sum at the same time. If the batch turns out to leave the range, that
        // pass is discarded and the general path below runs with the measured range.
        if let (Some((omin, omax)), Some(xs)) = (self.range, x.as_slice_memory_order()) {
            if omin < omax && !xs.is_empty() {
                let (counts, inside) = histc_in_range(xs, omin, omax, self.bins);
                if inside {
                    self.cache = OnceLock::new();
                    for (h, c) in self.histogram.iter_mut().zip(counts) {
                        *h += c;
                    }
                    return Ok(());
                }
            }
        }
        // First batch, a batch that leaves the range, or NaN/inf (refused by `min_max`).
        let Some((xmin, xmax)) = min_max(OP, &x)? else {
            return Ok(());
        };
        self.cache = OnceLock::new();
        let data = x.as_slice_memory_order();
        let owned;
        let xs: &[f32] = match data {
            Some(s) => s,
            None => {
                owned = x.iter().copied().collect::<Vec<f32>>();
                &owned
            }
        };
        let bins = self.bins;
        match self.range {
            None => {
                self.histogram = histc(xs, xmin, xmax, bins, (xmin, xmax));
                self.range = Some((xmin, xmax));
            }
            Some((omin, omax)) => {
                let nmin = omin.min(xmin);
                let nmax = omax.max(xmax);
                let upd = histc(xs, nmin, nmax, bins, (xmin, xmax));
                self.absorb(upd, nmin, nmax);
            }
        }
        Ok(())
    }

    fn qparams(&self) -> Result<QuantParams> {
        if self.range.is_none() {
            return Err(QuantError::Empty {
                op: "HistogramObserver::qparams",
            });
        }
        let (a, b) = self.search_range()?;
        per_tensor_qparams(&self.spec, a, b)
    }

    fn reset(&mut self) {
        self.histogram = vec![0.0; self.bins];
        self.range = None;
        self.cache = OnceLock::new();
    }

    fn merge(&mut self, other: &dyn Observer) -> Result<()> {
        const OP: &str = "HistogramObserver::merge";
        let o = other
            .as_any()
            .downcast_ref::<Self>()
            .ok_or_else(|| incompatible(OP, "not a HistogramObserver"))?;
        if o.spec != self.spec || o.bins != self.bins {
            return Err(incompatible(OP, "different configurations"));
        }
        let Some((bmin, bmax)) = o.range else {
            return Ok(());
        };
        self.cache = OnceLock::new();
        let (nmin, nmax) = match self.range {
            None => (bmin, bmax),
            Some((a, b)) => (a.min(bmin), b.max(bmax)),
        };
        // The other histogram, re-binned into the union range as PyTorch's combine would.
        let upd = if (bmin, bmax) == (nmin, nmax) {
            o.histogram.clone()
        } else {
            let zero = vec![0.0f32; self.bins];
            combine(&o.histogram, bmin, bmax, &zero, nmin, nmax)
        };
        self.absorb(upd, nmin, nmax);
        Ok(())
    }
}

/// `torch.histc(x, bins, lo, hi)` for a batch whose values all lie in `[lo, hi]`;
/// `data_range` is `aminmax(x)`, used when `lo == hi`. Counts are exact integers as `f32`
/// (PyTorch's `+1.0` accumulation saturates at 2^24 per bin; so does this).
pub(crate) fn histc(xs: &[f32], lo: f32, hi: f32, bins: usize, data_range: (f32, f32)) -> Vec<f32> {
    let (mut lo, mut hi) = (lo, hi);
    if lo == hi {
        lo = data_range.0;
        hi = data_range.1;
        if lo == hi {
            lo -= 1.0;
            hi += 1.0;
        }
    }
    let nb = bins as f32;
    let width = hi - lo;
    let last = (bins - 1) as i32;
    // Four count arrays break the store-to-load dependency of repeated bins. Large inputs are
    // counted per chunk on several threads (feature `rayon`); integer counts add up the same in
    // any order.
    let counts = if crate::parallel::parallel(xs.len()) {
        crate::parallel::map_fold(
            xs,
            |chunk| {
                let mut c = vec![0u32; count_len(bins)];
                histc_counts(chunk, lo, width, nb, last, &mut c);
                c
            },
            vec![0u32; count_len(bins)],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        )
    } else {
        let mut c = vec![0u32; count_len(bins)];
        histc_counts(xs, lo, width, nb, last, &mut c);
        c
    };
    (0..bins)
        .map(|i| {
            let st = count_pitch(bins);
            let c = counts[i] as u64
                + counts[st + i] as u64
                + counts[2 * st + i] as u64
                + counts[3 * st + i] as u64;
            c.min(1 << 24) as f32
        })
        .collect()
}

/// `torch.histc`'s bin index: `trunc(((x − lo)·bins) / (hi − lo))`, each step in `f32`, the
/// right edge folded into the last bin (`last = bins − 1`).
#[inline]
pub(crate) fn histc_index(v: f32, lo: f32, width: f32, nb: f32, last: i32) -> u32 {
    // For `v >= lo` (every value binned by `histc`), clamping to `last` before the truncation
    // gives the same index as `trunc(t).min(last)`; values below `lo` and NaN give bin 0.
    // The clamped truncation is a single vector conversion.
    crate::kernels::simd::trunc_clamped((v - lo) * nb / width, last as f32)
}

/// Values whose bin indices are computed at once before they are counted.
const IDX_BLOCK: usize = 1024;

/// Length of each of the four count arrays: `bins` rounded up to a power of two, so that
/// masking an index proves it in bounds (no bounds checks in the counting loop).
fn count_stride(bins: usize) -> usize {
    bins.next_power_of_two()
}

/// Distance between the starts of the four count arrays: the stride plus a pad, so that the
/// same bin in two arrays does not sit at the same address modulo 4 KiB. Without the pad
/// (arrays exactly 4 KiB apart for 2048 bins) equal bins counted close together in two arrays
/// look dependent to the CPU's store-to-load check (4K aliasing), which cost 20% of the
/// observe time on normal data.
fn count_pitch(bins: usize) -> usize {
    count_stride(bins) + 544
}

/// Length of the count buffer (four arrays, each `count_pitch` apart).
fn count_len(bins: usize) -> usize {
    4 * count_pitch(bins)
}

/// Values counted in 16-bit counters before they are added to the 32-bit ones: each of the
/// four arrays receives at most `WINDOW / 4 + 3 * WINDOW / IDX_BLOCK` < 65536 increments.
const WINDOW: usize = 1 << 17;

/// Adds the 16-bit counts into the 32-bit ones and clears them.
#[inline(always)]
fn flush(small: &mut [u16], counts: &mut [u32]) {
    for (c, s) in counts.iter_mut().zip(small.iter_mut()) {
        *c += *s as u32;
        *s = 0;
    }
}

/// Counts bin indices (each `< stride`, `stride` a power of two) into four interleaved arrays
/// of 16-bit counters (half the cache footprint of 32-bit ones), `counts.len() / 4` apart;
/// consecutive values go to different arrays, which breaks the store-to-load dependency of
/// equal bins.
#[inline(always)]
fn scatter(idx: &[u32], counts: &mut [u16], stride: usize) {
    let pitch = counts.len() / 4;
    let (c0, rest) = counts.split_at_mut(pitch);
    let (c1, rest) = rest.split_at_mut(pitch);
    let (c2, c3) = rest.split_at_mut(pitch);
    // Equal lengths, so that `i & mask` is provably in bounds for all four.
    let (c0, c1, c2, c3) = (
        &mut c0[..stride],
        &mut c1[..stride],
        &mut c2[..stride],
        &mut c3[..stride],
    );
    let mask = stride - 1;
    let mut quads = idx.chunks_exact(4);
    for q in &mut quads {
        c0[q[0] as usize & mask] += 1;
        c1[q[1] as usize & mask] += 1;
        c2[q[2] as usize & mask] += 1;
        c3[q[3] as usize & mask] += 1;
    }
    for &i in quads.remainder() {
        c0[i as usize & mask] += 1;
    }
}

/// Bins `xs` over `[lo, hi]` (`lo < hi`) and checks in the same pass that every value lies in
/// `[lo, hi]` (false also for NaN). The counts are only meaningful when it does.
fn histc_in_range(xs: &[f32], lo: f32, hi: f32, bins: usize) -> (Vec<f32>, bool) {
    let nb = bins as f32;
    let width = hi - lo;
    let last = (bins - 1) as i32;
    let (counts, outside) = crate::parallel::map_fold(
        xs,
        |chunk| {
            let mut c = vec![0u32; count_len(bins)];
            let out = histc_counts_inside(chunk, lo, hi, width, nb, last, &mut c);
            (c, out)
        },
        (vec![0u32; count_len(bins)], false),
        |(mut a, oa), (b, ob)| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
            (a, oa | ob)
        },
    );
    let hist = (0..bins)
        .map(|i| {
            let st = count_pitch(bins);
            let c = counts[i] as u64
                + counts[st + i] as u64
                + counts[2 * st + i] as u64
                + counts[3 * st + i] as u64;
            c.min(1 << 24) as f32
        })
        .collect();
    (hist, !outside)
}

crate::kernels::simd::dispatched!(
    /// [`histc_counts`] for values expected inside `[lo, hi]`; returns whether any value was
    /// outside (or NaN). Outside values are counted in the edge bins (the caller discards the
    /// counts then).
    fn histc_counts_inside[](xs: &[f32], lo: f32, hi: f32, width: f32, nb: f32, last: i32, counts: &mut [u32]) -> bool = histc_counts_inside_body
);

#[inline(always)]
fn histc_counts_inside_body(
    xs: &[f32],
    lo: f32,
    hi: f32,
    width: f32,
    nb: f32,
    last: i32,
    counts: &mut [u32],
) -> bool {
    let mut idx = [0u32; IDX_BLOCK];
    let mut outside = false;
    let mut small = vec![0u16; counts.len()];
    let stride = (last as usize + 1).next_power_of_two();
    for window in xs.chunks(WINDOW) {
        for chunk in window.chunks(IDX_BLOCK) {
            let mut out = false;
            for (o, &v) in idx.iter_mut().zip(chunk) {
                // NaN fails both compares: it counts as outside.
                out |= !(v >= lo && v <= hi);
                // Below `lo` (and NaN) the index clamps to bin 0.
                *o = histc_index(v, lo, width, nb, last);
            }
            outside |= out;
            scatter(&idx[..chunk.len()], &mut small, stride);
        }
        flush(&mut small, counts);
    }
    outside
}

crate::kernels::simd::dispatched!(
    /// Adds the bin counts of `xs` into `counts` (four interleaved arrays of `bins`).
    fn histc_counts[](xs: &[f32], lo: f32, width: f32, nb: f32, last: i32, counts: &mut [u32]) = histc_counts_body
);

#[inline(always)]
fn histc_counts_body(xs: &[f32], lo: f32, width: f32, nb: f32, last: i32, counts: &mut [u32]) {
    let mut idx = [0u32; IDX_BLOCK];
    let mut small = vec![0u16; counts.len()];
    let stride = (last as usize + 1).next_power_of_two();
    for window in xs.chunks(WINDOW) {
        for chunk in window.chunks(IDX_BLOCK) {
            for (o, &v) in idx.iter_mut().zip(chunk) {
                *o = histc_index(v, lo, width, nb, last);
            }
            scatter(&idx[..chunk.len()], &mut small, stride);
        }
        flush(&mut small, counts);
    }
}

/// `torch.linspace(start, end, n)` in `f32` (CPU): the first half `fma(step, i, start)`, the
/// second `fma(-step, n−1−i, end)`.
pub(crate) fn linspace(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / ((n - 1) as f32);
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// PyTorch's `_combine_histograms`: the old histogram over `[omin, omax]` re-expressed over
/// `[nmin, nmax]` and added to `upd` (already over the new range).
fn combine(orig: &[f32], omin: f32, omax: f32, upd: &[f32], nmin: f32, nmax: f32) -> Vec<f32> {
    let bins = upd.len();
    if nmin == omin && nmax == omax {
        return orig.iter().zip(upd).map(|(a, b)| a + b).collect();
    }
    if omin == omax {
        let bin_value = sum_f32(orig);
        let one = histc(&[omin], nmin, nmax, bins, (omin, omin));
        return one
            .iter()
            .zip(upd)
            .map(|(o, u)| o * bin_value + u)
            .collect();
    }
    let up = upscale(orig, omin, omax, nmin, nmax);
    upd.iter().zip(&up).map(|(u, o)| u + o).collect()
}

/// PyTorch's `_upscale_histogram`: split each old bin into 16 equal parts, place each part by
/// its midpoint among the new bin edges, accumulate in `f32` in order.
fn upscale(h: &[f32], omin: f32, omax: f32, nmin: f32, nmax: f32) -> Vec<f32> {
    let bins = h.len();
    let n = bins * UPSAMPLE_RATE;
    let sub = (omax - omin) / (n as f32);
    let half_sub = 0.5 * sub;
    let fine_points = linspace(omin, omax, n + 1);
    let edges = linspace(nmin, nmax, bins + 1);
    let mut out = vec![0.0f32; bins];
    let mut k = 0usize; // number of edges <= mid, tracked monotonically with a fallback
    for j in 0..n {
        let mid = fine_points[j] + half_sub;
        // bucketize(right=True): count of edges <= mid.
        if k > 0 && edges[k - 1] > mid {
            k = edges.partition_point(|&e| e <= mid);
        } else {
            while k < edges.len() && edges[k] <= mid {
                k += 1;
            }
        }
        let idx = (k as isize - 1).clamp(0, bins as isize - 1) as usize;
        out[idx] += h[j / UPSAMPLE_RATE] / UPSAMPLE_RATE as f32;
    }
    out
}

/// `torch.sum` of an `f32` vector, approximated by an `f64` sum rounded to `f32`.
fn sum_f32(v: &[f32]) -> f32 {
    v.iter().map(|&x| x as f64).sum::<f64>() as f32
}

/// Python-style float floor division in `f32` (`torch.div(a, b, rounding_mode="floor")`).
pub(crate) fn floor_div(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    // Fast path: when `a / b` is not within rounding of an integer, flooring the rounded
    // quotient gives the exact floor.
    let t = a / b;
    if t.is_finite() {
        let q = t.floor();
        let f = t - q;
        let tol = t.abs() * 4.0 * f32::EPSILON + f32::MIN_POSITIVE;
        if f > tol && f < 1.0 - tol {
            return q;
        }
    }
    floor_div_exact(a, b)
}

/// The reference algorithm (fmod-based), as PyTorch's `div_floor_floating`.
pub(crate) fn floor_div_exact(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut q = div.floor();
        if div - q > 0.5 {
            q += 1.0;
        }
        q
    } else {
        0.0f32.copysign(a / b)
    }
}

/// `∫ x² dx` over `[a, z]` times a density, PyTorch's `_get_norm` in `f32`.
#[inline]
fn get_norm(a: f32, z: f32, density: f32) -> f32 {
    density * ((z * z * z - a * a * a) / 3.0)
}

/// PyTorch's `_compute_quantization_error(ns, ne)`.
fn quantization_error(hist: &[f32], min: f32, max: f32, ns: usize, ne: usize, dst: f64) -> f64 {
    let bins = hist.len();
    let bw = (max as f64 - min as f64) / bins as f64;
    let dbw = bw * (ne - ns + 1) as f64 / dst;
    if dbw == 0.0 {
        return 0.0;
    }
    let bw32 = bw as f32;
    let dbw32 = dbw as f32;
    let half = (dbw / 2.0) as f32;
    let neg_half = (-dbw / 2.0) as f32;
    let top = (dst - 1.0) as f32;
    let ns32 = ns as f32;
    let mut total = 0.0f64;
    for (i, &hv) in hist.iter().enumerate() {
        let b = (i as f32 - ns32) * bw32;
        let e = b + bw32;
        let db = floor_div(b, dbw32).clamp(0.0, top);
        let cb = (db + 0.5) * dbw32;
        let de = floor_div(e, dbw32).clamp(0.0, top);
        let dens = hv / bw32;
        let mut n = get_norm(b - cb, half, dens);
        n += ((de - db) - 1.0) * get_norm(neg_half, half, dens);
        let dec = de * dbw32 + half;
        n += get_norm(neg_half, e - dec, dens);
        total += n as f64;
    }
    (total as f32) as f64
}

/// PyTorch's `_non_linear_param_search`: returns the chosen `(min, max)`.
fn non_linear_param_search(hist: &[f32], min: f32, max: f32, dst: f64) -> (f32, f32) {
    let bins = hist.len();
    let bin_width_t = (max - min) / bins as f32;
    let total = sum_f32(hist) as f64;
    let mut acc = 0.0f64;
    let csum: Vec<f32> = hist
        .iter()
        .map(|&v| {
            acc += v as f64;
            acc as f32
        })
        .collect();
    let step = 1e-5f64;
    let (mut alpha, mut beta) = (0.0f64, 1.0f64);
    let (mut start, mut end) = (0usize, bins - 1);
    let mut norm_min = f64::INFINITY;
    while alpha < beta {
        let na = alpha + step;
        let nb = beta - step;
        let ta = (na * total) as f32;
        let tb = (nb * total) as f32;
        // l: from start, advance while l < end and csum[l] < ta (csum is non-decreasing).
        let q = csum.partition_point(|&c| c < ta);
        let l = if start >= q { start } else { q.min(end) };
        // r: from end, retreat while r > start and csum[r] > tb.
        let p = csum.partition_point(|&c| c <= tb);
        let r = if p > end {
            end
        } else {
            p.saturating_sub(1).max(start)
        };
        let (mut ns, mut ne) = (start, end);
        if l - start > end - r {
            ns = l;
            alpha = na;
        } else {
            ne = r;
            beta = nb;
        }
        if ns == start && ne == end {
            continue;
        }
        let norm = quantization_error(hist, min, max, ns, ne, dst);
        if norm > norm_min {
            break;
        }
        norm_min = norm;
        start = ns;
        end = ne;
    }
    let new_min = min + bin_width_t * start as f32;
    let new_max = min + bin_width_t * (end + 1) as f32;
    (new_min, new_max)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dtype::QDType;
    use crate::qparams::QScheme;
    use ndarray::ArrayD;

    fn obs(bins: usize, scheme: QScheme, dtype: QDType) -> HistogramObserver {
        HistogramObserver::with_bins(QuantSpec::new(scheme, dtype), bins).unwrap()
    }

    fn feed(o: &mut HistogramObserver, v: &[f32]) {
        o.observe(
            ArrayD::from_shape_vec(vec![v.len()], v.to_vec())
                .unwrap()
                .view(),
        )
        .unwrap();
    }

    #[test]
    fn floor_division_is_pythons() {
        assert_eq!(floor_div(1.0, 0.1), 9.0);
        assert_eq!(floor_div(7.0, 0.1), 69.0);
        assert_eq!(floor_div(-0.3, 0.1), -4.0);
        assert_eq!(floor_div(-0.0, 0.1).to_bits(), (-0.0f32).to_bits());
        // The fast path agrees with the reference on a grid of hard cases.
        for i in -2000..2000 {
            for d in [0.1f32, 0.3, 0.7, 1.1e-3, 3.0] {
                let a = i as f32 * 0.05;
                assert_eq!(
                    floor_div(a, d).to_bits(),
                    floor_div_exact(a, d).to_bits(),
                    "{a}/{d}"
                );
            }
        }
    }

    #[test]
    fn linspace_uses_fma_halves() {
        let v = linspace(0.0, 1.0, 11);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[10], 1.0);
        let step = 1.0f32 / 10.0;
        assert_eq!(v[3], step.mul_add(3.0, 0.0));
        assert_eq!(v[7], (-step).mul_add(3.0, 1.0));
    }

    #[test]
    fn counts_beyond_sixteen_bits_are_exact() {
        // 300 001 values, 300 000 of them in bin 0: the 16-bit window counters must flush.
        let mut xs = vec![0.0f32; 300_000];
        xs.push(1.0);
        let h = histc(&xs, 0.0, 1.0, 16, (0.0, 1.0));
        assert_eq!(h[0], 300_000.0);
        assert_eq!(h[15], 1.0);
        let (h2, inside) = histc_in_range(&xs, 0.0, 1.0, 16);
        assert_eq!((h2[0], h2[15], inside), (300_000.0, 1.0, true));
        // A value beyond either edge, or a NaN, anywhere in the batch: not inside.
        for bad in [1.0001f32, -1e-30, f32::NAN, f32::INFINITY] {
            let mut ys = xs.clone();
            ys[123_456] = bad;
            assert!(!histc_in_range(&ys, 0.0, 1.0, 16).1, "{bad}");
        }
    }

    #[test]
    fn histc_index_formula_and_edges() {
        // (x - lo) * bins / (hi - lo), truncated; the right edge goes to the last bin.
        assert_eq!(histc_index(0.0, 0.0, 1.0, 10.0, 9), 0);
        assert_eq!(histc_index(1.0, 0.0, 1.0, 10.0, 9), 9);
        assert_eq!(histc_index(0.3, 0.0, 1.0, 10.0, 9), 3);
        // f32 order matters: (0.7 - 0.1) * 10 / 1 truncates to 5, not 6.
        assert_eq!(
            histc_index(0.7, 0.1, 1.0, 10.0, 9),
            ((0.7f32 - 0.1) * 10.0) as u32
        );
        let h = histc(&[3.0, 3.0, 3.0], 3.0, 3.0, 8, (3.0, 3.0));
        assert_eq!(h, [0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn pytorch_worked_examples() {
        let mut o = obs(3, QScheme::PerTensorAffine, QDType::QUInt8);
        feed(&mut o, &[2.0, 3.0, 4.0, 5.0]);
        feed(&mut o, &[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(o.histogram(), &[2.0, 3.0, 3.0]);

        let mut o = obs(10, QScheme::PerTensorAffine, QDType::QUInt8);
        feed(&mut o, &[0.0, 3.0, 4.0, 9.0]);
        feed(&mut o, &[2.0, 3.0, 7.0, 8.0]);
        assert_eq!(
            o.histogram(),
            &[1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
        );

        let mut o = obs(10, QScheme::PerTensorAffine, QDType::QUInt8);
        for v in [1.0, 3.0, 2.0, 4.0] {
            feed(&mut o, &[v]);
        }
        assert_eq!(o.min_max(), Some((1.0, 4.0)));
        assert_eq!(
            o.histogram(),
            &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
        );

        let mut o = obs(3, QScheme::PerTensorSymmetric, QDType::QInt8);
        for v in [
            [1.0f32, 1.0, 1.0, 1.0],
            [0.0; 4],
            [0.0; 4],
            [2.0, 3.0, 4.0, 5.0],
            [5.0, 6.0, 7.0, 8.0],
        ] {
            feed(&mut o, &v);
        }
        assert_eq!(o.min_max(), Some((0.0, 8.0)));
        assert_eq!(o.histogram(), &[13.25, 3.75, 3.0]);
    }

    #[test]
    fn reduce_range_example() {
        let spec = QuantSpec::from_pytorch(
            QDType::QUInt8,
            QScheme::PerTensorAffine,
            true,
            None,
            None,
            None,
        )
        .unwrap();
        let mut o = HistogramObserver::with_bins(spec, 8).unwrap();
        feed(&mut o, &[0.0, 0.3, 1.2, 1.7]);
        feed(&mut o, &[0.1, 1.3, 2.0, 2.7]);
        assert_eq!(
            o.histogram(),
            &[2.5625, 0.4375, 0.0, 2.0, 0.9375, 1.0625, 0.0, 1.0]
        );
        let crate::tensor::QuantParams::PerTensor(qp) = o.qparams().unwrap() else {
            panic!("per tensor")
        };
        assert_eq!((qp.scale(), qp.zero_point()), (0.018_602_362, 0));
    }
}
