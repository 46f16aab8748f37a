//! [`HistogramObserver`]: PyTorch's (≥ 2.5) histogram observer with its L2-norm parameter
//! search, bit for bit where PyTorch itself is deterministic.

use std::sync::OnceLock;

use super::histc::{histc, histc_in_range};
use super::minmax::per_tensor_qparams;
use super::reduce::{check_spec, incompatible, min_max_view, with_view};
use super::view::for_each_block;
use super::{FloatView, Observer};
use crate::error::{QuantError, Result};
use crate::qparams::{AnyQParams, QSpec};

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
/// - A batch (or a `merge`) that would make `max − min` overflow `f32` (finite values near
///   ±`f32::MAX`) is [`QuantError::RangeOverflow`], observer unchanged: the bin width would be
///   infinite (PyTorch computes NaN statistics).
/// - Empty batches are no-ops; `qparams` before any data is [`QuantError::Empty`] (PyTorch:
///   scale 1.0, zero point 0 with a warning).
/// - The search result is cached until the next `observe`/`merge`/`reset`.
/// - `merge` is PyTorch's own combine: the other histogram is re-binned into the union range
///   (PyTorch's upscale) and added.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::{HistogramObserver, QDType, QScheme, QSpec};
///
/// let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
/// let mut obs = HistogramObserver::with_bins(spec, 3)?;
/// obs.observe(array![2.0f32, 3.0, 4.0, 5.0].view())?;
/// obs.observe(array![5.0f32, 6.0, 7.0, 8.0].view())?;
/// assert_eq!(obs.min_max(), Some((2.0, 8.0)));
/// assert_eq!(obs.histogram(), &[2.0, 3.0, 3.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "HistogramState", try_from = "HistogramState")
)]
pub struct HistogramObserver {
    spec: QSpec,
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

    /// The most bins allowed, 2^22: re-binning a histogram (PyTorch's 16× upscale) builds
    /// `16·bins` points, 256 MiB of `f32` at this limit.
    pub const MAX_BINS: usize = 1 << 22;

    /// A histogram observer with 2048 bins.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel scheme;
    /// [`QuantError::InvalidScale`] for a bad `eps`.
    pub fn new(spec: QSpec) -> Result<Self> {
        Self::with_bins(spec, Self::DEFAULT_BINS)
    }

    /// A histogram observer with `bins` bins.
    ///
    /// # Errors
    /// As [`HistogramObserver::new`]; [`QuantError::InvalidParameter`] unless
    /// `1 <= bins <= 2^22` ([`HistogramObserver::MAX_BINS`]).
    pub fn with_bins(spec: QSpec, bins: usize) -> Result<Self> {
        const OP: &str = "HistogramObserver::new";
        check_spec(OP, &spec, false, false)?;
        if bins == 0 || bins > Self::MAX_BINS {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "bins",
                value: bins as f64,
                reason: "must be in 1..=2^22",
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
        2f64.powi(self.spec.dtype().bits() as i32)
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

    fn spec(&self) -> &QSpec {
        &self.spec
    }

    fn observe_view(&mut self, x: FloatView<'_>) -> Result<()> {
        const OP: &str = "HistogramObserver::observe";
        // Steady state (the batch falls inside the range seen so far, the common case in
        // calibration): one pass bins the batch over the current range and checks that every
        // value lies inside at the same time. If one does not, that pass is discarded and the
        // general path below runs.
        if let Some((omin, omax)) = self.range
            && omin < omax
            && !x.is_empty()
        {
            let (counts, inside) = count_batch(&x, self.bins, |xs| {
                histc_in_range(xs, omin, omax, self.bins)
            });
            if inside {
                self.cache = OnceLock::new();
                for (h, c) in self.histogram.iter_mut().zip(counts) {
                    *h += c;
                }
                return Ok(());
            }
        }
        // First batch, a batch that leaves the range, or NaN/inf (refused by `min_max_view`).
        let Some((xmin, xmax)) = min_max_view(OP, &x)? else {
            return Ok(());
        };
        let (nmin, nmax) = match self.range {
            None => (xmin, xmax),
            Some((omin, omax)) => (omin.min(xmin), omax.max(xmax)),
        };
        check_width(OP, nmin, nmax)?;
        let bins = self.bins;
        let (upd, _) = count_batch(&x, bins, |xs| {
            (histc(xs, nmin, nmax, bins, (xmin, xmax)), true)
        });
        self.cache = OnceLock::new();
        self.absorb(upd, nmin, nmax);
        Ok(())
    }

    fn qparams(&self) -> Result<AnyQParams> {
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
        let (nmin, nmax) = match self.range {
            None => (bmin, bmax),
            Some((a, b)) => (a.min(bmin), b.max(bmax)),
        };
        check_width(OP, nmin, nmax)?;
        self.cache = OnceLock::new();
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

/// Refuses a range whose width `max − min` overflows `f32` (the bin width would be infinite).
fn check_width(op: &'static str, min: f32, max: f32) -> Result<()> {
    if (max - min).is_finite() {
        Ok(())
    } else {
        Err(QuantError::RangeOverflow {
            op,
            min: min as f64,
            max: max as f64,
        })
    }
}

/// Runs a counting function (`histc` over a slice, with a flag) on a whole batch: directly on
/// a contiguous `f32` batch, otherwise on `f32` conversions of large chunks, adding the counts
/// (exact integers) and and-ing the flags. The counts equal one call over the whole batch
/// converted to `f32`, saturation at 2^24 per bin included.
fn count_batch(
    x: &FloatView<'_>,
    bins: usize,
    count: impl Fn(&[f32]) -> (Vec<f32>, bool),
) -> (Vec<f32>, bool) {
    if let FloatView::F32(v) = x
        && let Some(s) = v.as_slice_memory_order()
    {
        return count(s);
    }
    // Each call allocates and clears count arrays of about 4·bins: chunks many times larger
    // keep that overhead small.
    let chunk = (64 * bins).max(1 << 20);
    let mut total = vec![0u64; bins];
    let mut flag = true;
    with_view!(x, |v| for_each_block(v, chunk, |b| {
        let (c, f) = count(b);
        for (t, c) in total.iter_mut().zip(c) {
            *t += c as u64;
        }
        flag &= f;
    }));
    let hist = total.iter().map(|&c| c.min(1 << 24) as f32).collect();
    (hist, flag)
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
fn bin_norm(a: f32, z: f32, density: f32) -> f32 {
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
        let mut n = bin_norm(b - cb, half, dens);
        n += ((de - db) - 1.0) * bin_norm(neg_half, half, dens);
        let dec = de * dbw32 + half;
        n += bin_norm(neg_half, e - dec, dens);
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

/// The serialized state of a [`HistogramObserver`] (the search cache is not kept).
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct HistogramState {
    spec: QSpec,
    bins: usize,
    histogram: Vec<f32>,
    min_max: Option<(f32, f32)>,
}

#[cfg(feature = "serde")]
impl From<HistogramObserver> for HistogramState {
    fn from(o: HistogramObserver) -> Self {
        HistogramState {
            spec: o.spec,
            bins: o.bins,
            histogram: o.histogram,
            min_max: o.range,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<HistogramState> for HistogramObserver {
    type Error = QuantError;

    /// The constructor's checks; `bins` counts, each finite and `>= 0`, all zero before any
    /// data; a finite `min <= max` whose width does not overflow.
    fn try_from(s: HistogramState) -> Result<Self> {
        const OP: &str = "HistogramObserver::deserialize";
        let mut o = HistogramObserver::with_bins(s.spec, s.bins)?;
        if s.histogram.len() != s.bins {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "histogram",
                expected: s.bins,
                got: s.histogram.len(),
            });
        }
        if let Some(&c) = s.histogram.iter().find(|c| !(c.is_finite() && **c >= 0.0)) {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "histogram count",
                value: c as f64,
                reason: "counts must be finite and >= 0",
            });
        }
        match s.min_max {
            Some((a, b)) => {
                crate::qparams::check_min_max(OP, a, b)?;
                check_width(OP, a, b)?;
            }
            None => {
                if s.histogram.iter().any(|&c| c != 0.0) {
                    return Err(QuantError::InvalidParameter {
                        op: OP,
                        what: "histogram count",
                        value: s.histogram.iter().map(|&c| c as f64).sum(),
                        reason: "an observer without a range has an empty histogram",
                    });
                }
            }
        }
        o.histogram = s.histogram;
        o.range = s.min_max;
        Ok(o)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dtype::QDType;
    use crate::qparams::QScheme;
    use ndarray::ArrayD;

    fn obs(bins: usize, scheme: QScheme, dtype: QDType) -> HistogramObserver {
        HistogramObserver::with_bins(QSpec::new(scheme, dtype), bins).unwrap()
    }

    fn feed(o: &mut HistogramObserver, v: &[f32]) {
        o.observe(&ArrayD::from_shape_vec(vec![v.len()], v.to_vec()).unwrap())
            .unwrap();
    }

    #[test]
    fn floor_division_is_pythons() {
        // pytorch.md §3.5: 1.0 // 0.1 = 9, 7.0 // 0.1 = 69, -0.3 // 0.1 = -4 (Python).
        assert_eq!(floor_div(1.0, 0.1), 9.0);
        assert_eq!(floor_div(7.0, 0.1), 69.0);
        assert_eq!(floor_div(-0.3, 0.1), -4.0);
        // Python: -0.0 // 0.1 = -0.0
        assert_eq!(floor_div(-0.0, 0.1).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn floor_division_fast_path_matches_the_reference() {
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

    // The worked examples of pytorch.md §3.5 (torch 2.15).

    #[test]
    fn worked_example_bins_3() {
        let mut o = obs(3, QScheme::PerTensorAffine, QDType::QUInt8);
        feed(&mut o, &[2.0, 3.0, 4.0, 5.0]);
        feed(&mut o, &[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(o.histogram(), &[2.0, 3.0, 3.0]);
    }

    #[test]
    fn worked_example_update_within_range_is_added() {
        let mut o = obs(10, QScheme::PerTensorAffine, QDType::QUInt8);
        feed(&mut o, &[0.0, 3.0, 4.0, 9.0]);
        feed(&mut o, &[2.0, 3.0, 7.0, 8.0]);
        assert_eq!(
            o.histogram(),
            &[1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn worked_example_single_values() {
        let mut o = obs(10, QScheme::PerTensorAffine, QDType::QUInt8);
        for v in [1.0, 3.0, 2.0, 4.0] {
            feed(&mut o, &[v]);
        }
        assert_eq!(o.min_max(), Some((1.0, 4.0)));
        assert_eq!(
            o.histogram(),
            &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn worked_example_degenerate_ranges_combine() {
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
    fn worked_example_reduce_range() {
        let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8)
            .with_reduce_range()
            .unwrap();
        let mut o = HistogramObserver::with_bins(spec, 8).unwrap();
        feed(&mut o, &[0.0, 0.3, 1.2, 1.7]);
        feed(&mut o, &[0.1, 1.3, 2.0, 2.7]);
        assert_eq!(
            o.histogram(),
            &[2.5625, 0.4375, 0.0, 2.0, 0.9375, 1.0625, 0.0, 1.0]
        );
        let crate::qparams::AnyQParams::PerTensor(qp) = o.qparams().unwrap() else {
            panic!("per tensor")
        };
        assert_eq!((qp.scale(), qp.zero_point()), (0.018_602_362, 0));
    }
}
