//! [`StreamingHistogram`]: the mergeable histogram behind the percentile, entropy and MSE
//! calibrators.

use super::FloatView;
use super::histc::{sign_split_counts, sign_split_slot};
use super::reduce::{min_max_view, with_view};
use super::view::for_each_block;
use crate::error::{QuantError, Result};

/// A histogram of `|x|` split by sign, over `[0, 2^e]` with `bins` equal bins, where `e` is
/// the smallest power-of-two exponent covering every value seen.
///
/// Because the range is a power of two and `bins` is one too, every bin edge is an exact
/// binary fraction and growing the range only merges neighbouring bins (pairwise sums). So
/// the histogram never approximates: observing batches one by one, in any order, merging
/// histograms of shards, or observing the concatenation all give the **same** counts. The
/// price is resolution: the data's `max |x|` covers between half and all of the bins.
///
/// Counts are exact `u64`. The observed signed `min`/`max` are kept too. With the `serde`
/// feature the histogram serializes, and deserializing checks that the state is one
/// `observe`/`merge` can produce (bin count, exponent, counts, range).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::observers::StreamingHistogram;
///
/// let mut h = StreamingHistogram::new(16)?;
/// h.observe(array![0.5f32, -1.0, 3.0].view())?;
/// assert_eq!(h.top(), Some(4.0)); // |x| <= 4 = 2^2
/// assert_eq!(h.count(), 3);
/// assert_eq!(h.positive()[2], 1); // 0.5 in [0.5, 0.75)
/// assert_eq!(h.negative()[4], 1); // |-1| in [1, 1.25)
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "StreamingState", try_from = "StreamingState")
)]
pub struct StreamingHistogram {
    log2_bins: i32,
    exp: Option<i32>,
    pos: Vec<u64>,
    neg: Vec<u64>,
    min: f32,
    max: f32,
}

impl StreamingHistogram {
    /// The calibrators' default: 2048 bins (TensorRT's).
    pub const DEFAULT_BINS: usize = 2048;

    /// An empty histogram with `bins` bins per sign.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] unless `bins` is a power of two in `16..=2^20`.
    pub fn new(bins: usize) -> Result<Self> {
        if !bins.is_power_of_two() || !(16..=1 << 20).contains(&bins) {
            return Err(QuantError::InvalidParameter {
                op: "StreamingHistogram::new",
                what: "bins",
                value: bins as f64,
                reason: "must be a power of two in 16..=2^20",
            });
        }
        Ok(StreamingHistogram {
            log2_bins: bins.trailing_zeros() as i32,
            exp: None,
            pos: vec![0; bins],
            neg: vec![0; bins],
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        })
    }

    /// Number of bins per sign.
    #[must_use]
    pub fn bins(&self) -> usize {
        self.pos.len()
    }

    /// Counts of values `>= 0` by `|x|` bin.
    #[must_use]
    pub fn positive(&self) -> &[u64] {
        &self.pos
    }

    /// Counts of values `< 0` by `|x|` bin.
    #[must_use]
    pub fn negative(&self) -> &[u64] {
        &self.neg
    }

    /// The top of the range, `2^e` (`None` before any data).
    #[must_use]
    pub fn top(&self) -> Option<f32> {
        self.exp.map(|e| 2f32.powi(e))
    }

    /// Bin width (`None` before any data).
    #[must_use]
    pub fn bin_width(&self) -> Option<f64> {
        self.exp.map(|e| 2f64.powi(e - self.log2_bins))
    }

    /// The signed `(min, max)` seen (`None` before any data).
    #[must_use]
    pub fn min_max(&self) -> Option<(f32, f32)> {
        self.exp.map(|_| (self.min, self.max))
    }

    /// Number of values seen.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.pos.iter().sum::<u64>() + self.neg.iter().sum::<u64>()
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.exp = None;
        self.pos.iter_mut().for_each(|c| *c = 0);
        self.neg.iter_mut().for_each(|c| *c = 0);
        self.min = f32::INFINITY;
        self.max = f32::NEG_INFINITY;
    }

    /// Smallest exponent allowed (keeps the index scale factor a normal `f32`).
    fn min_exp(&self) -> i32 {
        self.log2_bins - 126
    }

    /// The exponent covering `amax`.
    fn exp_for(&self, amax: f32) -> i32 {
        let mut e = self.min_exp();
        if amax > 0.0 {
            // frexp-like: the smallest e with amax <= 2^e.
            let bits = amax.to_bits();
            let raw = ((bits >> 23) & 0xff) as i32;
            let mant = bits & 0x7f_ffff;
            let exact = if raw == 0 {
                // subnormal: below every allowed top
                self.min_exp()
            } else if mant == 0 {
                raw - 127
            } else {
                raw - 126
            };
            e = e.max(exact);
        }
        e
    }

    /// Re-bins to exponent `e >= current`: merges `2^(e − current)` neighbouring bins.
    fn grow_to(&mut self, e: i32) {
        let cur = match self.exp {
            None => {
                self.exp = Some(e);
                return;
            }
            Some(c) => c,
        };
        if e <= cur {
            return;
        }
        let shift = (e - cur).min(63) as u32;
        for v in [&mut self.pos, &mut self.neg] {
            let n = v.len();
            for i in 0..n {
                let j = i.checked_shr(shift).unwrap_or(0);
                if j != i {
                    v[j] += v[i];
                    v[i] = 0;
                }
            }
        }
        self.exp = Some(e);
    }

    /// Adds a batch: an array view or a reference to an array of `f32`, `f64`, `f16` or
    /// `bf16` (see [`FloatView`]).
    ///
    /// # Errors
    /// [`QuantError::NanInput`] / [`QuantError::NonFinite`]; [`QuantError::RangeOverflow`] for
    /// an `f64` value beyond `f32`'s range (histogram unchanged).
    pub fn observe<'a>(&mut self, x: impl Into<FloatView<'a>>) -> Result<()> {
        let x = x.into();
        let Some((mn, mx)) = min_max_view("StreamingHistogram::observe", &x)? else {
            return Ok(());
        };
        let e = self.exp_for((-mn).max(mx));
        let e = self.exp.map_or(e, |c| c.max(e));
        self.grow_to(e);
        let scale = 2f32.powi(self.log2_bins - e);
        let bins = self.pos.len();
        let mut add = |counts: Vec<u64>| {
            let (pos, neg) = counts.split_at(bins);
            for (h, c) in self.pos.iter_mut().zip(pos) {
                *h += c;
            }
            for (h, c) in self.neg.iter_mut().zip(neg) {
                *h += c;
            }
        };
        match &x {
            // The counting loop of `HistogramObserver` (pipelined, vectorised index step).
            FloatView::F32(v) => match v.as_slice_memory_order() {
                Some(s) => add(sign_split_counts(s, scale, bins)),
                None => {
                    for &v in v.iter() {
                        match sign_split_slot(v, scale, bins) {
                            i if i < bins => self.pos[i] += 1,
                            i => self.neg[i - bins] += 1,
                        }
                    }
                }
            },
            // Other types: the same loop on f32 conversions of large chunks (each call clears
            // count arrays of about 8·bins).
            other => {
                let chunk = (64 * bins).max(1 << 20);
                with_view!(other, |v| for_each_block(v, chunk, |b| add(
                    sign_split_counts(b, scale, bins)
                )));
            }
        }
        self.min = self.min.min(mn);
        self.max = self.max.max(mx);
        Ok(())
    }

    /// Adds another histogram's counts (exact).
    ///
    /// # Errors
    /// [`QuantError::Incompatible`] when the bin counts differ.
    pub fn merge(&mut self, other: &StreamingHistogram) -> Result<()> {
        if other.pos.len() != self.pos.len() {
            return Err(QuantError::Incompatible {
                op: "StreamingHistogram::merge",
                reason: "different bin counts",
            });
        }
        let Some(oe) = other.exp else {
            return Ok(());
        };
        let mut o = other.clone();
        let e = self.exp.map_or(oe, |c| c.max(oe));
        self.grow_to(e);
        o.grow_to(e);
        for (a, b) in self.pos.iter_mut().zip(&o.pos) {
            *a += b;
        }
        for (a, b) in self.neg.iter_mut().zip(&o.neg) {
            *a += b;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        Ok(())
    }

    /// `(centre, count)` of every non-empty bin, signed, ascending.
    pub(crate) fn signed_bins(&self) -> Vec<(f64, u64)> {
        let w = self.bin_width().unwrap_or(0.0);
        let mut out: Vec<(f64, u64)> = self
            .neg
            .iter()
            .enumerate()
            .rev()
            .filter(|&(_, &c)| c > 0)
            .map(|(i, &c)| (-(i as f64 + 0.5) * w, c))
            .collect();
        out.extend(
            self.pos
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(i, &c)| ((i as f64 + 0.5) * w, c)),
        );
        out
    }

    /// Counts of `|x|` (both signs together).
    pub(crate) fn abs_counts(&self) -> Vec<u64> {
        self.pos.iter().zip(&self.neg).map(|(a, b)| a + b).collect()
    }
}

/// The serialized state of a [`StreamingHistogram`].
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct StreamingState {
    bins: usize,
    exponent: Option<i32>,
    positive: Vec<u64>,
    negative: Vec<u64>,
    min_max: Option<(f32, f32)>,
}

#[cfg(feature = "serde")]
impl From<StreamingHistogram> for StreamingState {
    fn from(h: StreamingHistogram) -> Self {
        StreamingState {
            bins: h.pos.len(),
            exponent: h.exp,
            min_max: h.min_max(),
            positive: h.pos,
            negative: h.neg,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<StreamingState> for StreamingHistogram {
    type Error = QuantError;

    /// The constructor's checks on `bins`; `bins` counts per sign; no data (no exponent,
    /// no range, zero counts) or data: an exponent in the allowed range covering a finite
    /// `min <= max`, and at least one count.
    fn try_from(s: StreamingState) -> Result<Self> {
        const OP: &str = "StreamingHistogram::deserialize";
        let mut h = StreamingHistogram::new(s.bins)?;
        for (what, v) in [("positive", &s.positive), ("negative", &s.negative)] {
            if v.len() != s.bins {
                return Err(QuantError::LengthMismatch {
                    op: OP,
                    what,
                    expected: s.bins,
                    got: v.len(),
                });
            }
        }
        let total = s
            .positive
            .iter()
            .chain(&s.negative)
            .try_fold(0u64, |a, &c| a.checked_add(c));
        let bad = |reason| QuantError::Format {
            op: OP,
            detail: format!("inconsistent histogram state: {reason}"),
        };
        match (s.exponent, s.min_max) {
            (None, None) => {
                if total != Some(0) {
                    return Err(bad("counts without a range"));
                }
            }
            (Some(e), Some((mn, mx))) => {
                crate::qparams::check_min_max(OP, mn, mx)?;
                if !(h.exp_for((-mn).max(mx))..=h.exp_for(f32::MAX)).contains(&e) {
                    return Err(bad("the exponent does not cover the range"));
                }
                if matches!(total, None | Some(0)) {
                    return Err(bad("a range without counts, or counts beyond u64"));
                }
                h.min = mn;
                h.max = mx;
            }
            _ => return Err(bad("an exponent without a range or a range without one")),
        }
        h.exp = s.exponent;
        h.pos = s.positive;
        h.neg = s.negative;
        Ok(h)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn arr(v: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
    }

    #[test]
    fn exponent_covers_amax() {
        let h = StreamingHistogram::new(16).unwrap();
        assert_eq!(h.exp_for(4.0), 2);
        assert_eq!(h.exp_for(4.5), 3);
        assert_eq!(h.exp_for(0.3), -1);
        assert_eq!(h.exp_for(0.0), h.min_exp());
    }

    #[test]
    fn counting_loop_matches_one_value_at_a_time() {
        // The contiguous path (the pipelined counting loop) against the strided path (one
        // value at a time): ragged lengths, signed zeros, values on bin edges and at the top.
        for n in [0usize, 1, 7, 8, 9, 127, 128, 129, 1000, 70_000] {
            let mut v: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 2001) as f32 / 250.0 - 4.0)
                .collect();
            if n > 3 {
                v[0] = -0.0;
                v[1] = 0.0;
                v[2] = -4.0;
                v[3] = 8.0;
            }
            let mut wide = vec![0.0f32; 2 * n];
            for (i, &x) in v.iter().enumerate() {
                wide[2 * i] = x;
                wide[2 * i + 1] = f32::NAN;
            }
            let wide = ArrayD::from_shape_vec(IxDyn(&[2 * n]), wide).unwrap();
            let strided = wide.slice(ndarray::s![..;2]).into_dyn();
            assert!(strided.as_slice_memory_order().is_none() || n <= 1);
            for bins in [16, 2048] {
                let mut fast = StreamingHistogram::new(bins).unwrap();
                fast.observe(arr(&v).view()).unwrap();
                let mut slow = StreamingHistogram::new(bins).unwrap();
                slow.observe(strided.view()).unwrap();
                assert_eq!(fast, slow, "{n} values, {bins} bins");
                assert_eq!(fast.count(), n as u64);
            }
        }
    }

    #[test]
    fn order_and_sharding_do_not_matter() {
        let a: Vec<f32> = (0..500)
            .map(|i| ((i * 7919) % 1000) as f32 / 300.0 - 1.2)
            .collect();
        let b: Vec<f32> = (0..300)
            .map(|i| ((i * 104729) % 997) as f32 / 20.0 - 30.0)
            .collect();
        let mut one = StreamingHistogram::new(64).unwrap();
        let mut all = a.clone();
        all.extend(&b);
        one.observe(arr(&all).view()).unwrap();
        let mut ab = StreamingHistogram::new(64).unwrap();
        ab.observe(arr(&a).view()).unwrap();
        ab.observe(arr(&b).view()).unwrap();
        let mut ba = StreamingHistogram::new(64).unwrap();
        ba.observe(arr(&b).view()).unwrap();
        ba.observe(arr(&a).view()).unwrap();
        let mut m = StreamingHistogram::new(64).unwrap();
        m.observe(arr(&a).view()).unwrap();
        let mut m2 = StreamingHistogram::new(64).unwrap();
        m2.observe(arr(&b).view()).unwrap();
        m.merge(&m2).unwrap();
        assert_eq!(one, ab);
        assert_eq!(one, ba);
        assert_eq!(one, m);
        assert_eq!(one.count(), 800);
    }
}
