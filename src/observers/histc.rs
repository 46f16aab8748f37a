//! `torch.histc` counting: the bin index PyTorch computes, and the counting loop behind
//! [`HistogramObserver`](super::HistogramObserver) (and any other histogram of a batch over a
//! known range).
//!
//! The loop is built for one counter update per cycle, which is what bounds it: bin indices are
//! computed eight at a time into a small block while the previous block is counted into four
//! interleaved arrays of 16-bit counters, and the input is prefetched ahead. On x86-64 with
//! AVX2 the eight-value index step is written with intrinsics (the compiler does not
//! vectorise it well inside the counting loop); it performs the same IEEE
//! operations in the same order as the portable step, so counts are identical on every CPU.

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
    count::<false>(xs, &Binning::new(lo, hi, bins)).0
}

/// Exact `u64` counts of `xs` over `[lo, hi]` (`lo < hi`, every value inside) in `bins`
/// bins, with `torch.histc`'s bin index: the binning of every histogram the crate draws.
pub(crate) fn histc_counts(xs: &[f32], lo: f32, hi: f32, bins: usize) -> Vec<u64> {
    count_slots::<false, _>(xs, &Binning::new(lo, hi, bins)).0
}

/// Bins `xs` over `[lo, hi]` (`lo < hi`) and checks in the same pass that every value lies in
/// `[lo, hi]` (false also for NaN). The counts are only meaningful when it does.
pub(crate) fn histc_in_range(xs: &[f32], lo: f32, hi: f32, bins: usize) -> (Vec<f32>, bool) {
    let (hist, outside) = count::<true>(xs, &Binning::new(lo, hi, bins));
    (hist, !outside)
}

/// The histogram of `xs` and, with `CHECK`, whether a value was outside `[lo, hi]` or NaN
/// (outside values are then counted in the edge bins; the caller discards the counts).
fn count<const CHECK: bool>(xs: &[f32], b: &Binning) -> (Vec<f32>, bool) {
    let (counts, outside) = count_slots::<CHECK, _>(xs, b);
    let hist = counts.iter().map(|&c| c.min(1 << 24) as f32).collect();
    (hist, outside)
}

/// Counts per slot of `ix` over `xs` (and, with `CHECK`, whether a value was outside). Large
/// inputs are counted in pieces on several threads (feature `rayon`); integer counts add up
/// the same in any order. Pieces of at most 2^30 values keep the 32-bit counters exact.
fn count_slots<const CHECK: bool, I: Dispatch>(xs: &[f32], ix: &I) -> (Vec<u64>, bool) {
    let slots = ix.slots();
    let mut total = vec![0u64; slots];
    let mut outside = false;
    for piece in xs.chunks(1 << 30) {
        let (counts, out) = crate::parallel::map_fold_exact(
            piece,
            |part| {
                let mut c = vec![0u32; count_len(slots)];
                let out = ix.count_all::<CHECK>(part, &mut c);
                (c, out)
            },
            (vec![0u32; count_len(slots)], false),
            |(mut a, oa), (c, oc)| {
                for (x, y) in a.iter_mut().zip(c) {
                    *x += y;
                }
                (a, oa | oc)
            },
        );
        let st = count_pitch(slots);
        for (i, t) in total.iter_mut().enumerate() {
            *t += counts[i] as u64
                + counts[st + i] as u64
                + counts[2 * st + i] as u64
                + counts[3 * st + i] as u64;
        }
        outside |= out;
    }
    (total, outside)
}

/// An index step with its best implementation for this CPU: [`count_all`] with the AVX2 step
/// when the CPU has it, the portable one otherwise.
trait Dispatch: Index8 + Sync {
    fn count_all<const CHECK: bool>(&self, xs: &[f32], counts: &mut [u32]) -> bool;
}

impl Dispatch for Binning {
    fn count_all<const CHECK: bool>(&self, xs: &[f32], counts: &mut [u32]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Some(outside) = avx2::count_all::<CHECK>(xs, self, counts) {
            return outside;
        }
        count_all::<CHECK, _>(xs, self, counts)
    }
}

impl Dispatch for SignSplit {
    fn count_all<const CHECK: bool>(&self, xs: &[f32], counts: &mut [u32]) -> bool {
        // The portable step compiles to whole-vector code here (no range check to interleave).
        #[cfg(target_arch = "x86_64")]
        if let Some(outside) = avx2::count_all_compiled::<CHECK, _>(xs, self, counts) {
            return outside;
        }
        count_all::<CHECK, _>(xs, self, counts)
    }
}

/// Counts of `|x|` over `[0, top]` in `bins` equal bins (`top · bins` a power of two, so that
/// `|x| · bins / top` is exact), negative values in a second run of `bins` counters after the
/// first: the binning of [`StreamingHistogram`](super::StreamingHistogram). Values must be
/// finite (`-0.0` counts as positive, like `0.0`).
pub(crate) fn sign_split_counts(xs: &[f32], scale: f32, bins: usize) -> Vec<u64> {
    count_slots::<false, _>(xs, &SignSplit::new(scale, bins)).0
}

/// The slot of `v` in [`sign_split_counts`]'s counts: `min(trunc(|v| · scale), bins − 1)`,
/// plus `bins` for a negative value (for callers that count one value at a time).
pub(crate) fn sign_split_slot(v: f32, scale: f32, bins: usize) -> usize {
    SignSplit::new(scale, bins).index1(v).0 as usize
}

/// `torch.histc`'s bin index: `trunc(((x − lo)·bins) / (hi − lo))`, each step in `f32`, the
/// right edge folded into the last bin (`last = bins − 1`).
#[inline]
fn histc_index(v: f32, lo: f32, width: f32, nb: f32, last: i32) -> u32 {
    // For `v >= lo` (every value binned by `histc`), clamping to `last` before the truncation
    // gives the same index as `trunc(t).min(last)`; values below `lo` and NaN give bin 0.
    // The clamped truncation is a single vector conversion.
    crate::simd::trunc_clamped((v - lo) * nb / width, last as f32)
}

/// Values whose bin indices are computed at once before they are counted. Small blocks let
/// the CPU overlap the index arithmetic of one block with the counting of the previous one
/// (measured on Zen 4: 128 beat 64, 256 and 1024).
const IDX_BLOCK: usize = 128;

/// How far ahead of the block being counted the input is prefetched, in values. Counting
/// makes no input reads, so the hardware prefetcher falls behind (and it stops at 4 KiB page
/// boundaries); a software prefetch issued during the counting has the next blocks in L1 when
/// their indices are computed.
const PREFETCH_AHEAD: usize = 1024;

/// Length of each of the four count arrays: `bins` rounded up to a power of two, so that
/// masking an index proves it in bounds (no bounds checks in the counting loop).
fn count_stride(bins: usize) -> usize {
    bins.next_power_of_two()
}

/// Distance between the starts of the four count arrays: the stride plus a pad, so that the
/// same bin in two arrays does not sit at the same address modulo 4 KiB. Without the pad
/// (arrays exactly 4 KiB apart for 2048 bins) equal bins counted close together in two arrays
/// look dependent to the CPU's store-to-load check (4K aliasing), which costs about 20% of
/// the observe time on normal data.
fn count_pitch(bins: usize) -> usize {
    count_stride(bins) + 544
}

/// Length of the count buffer (four arrays, each `count_pitch` apart).
fn count_len(bins: usize) -> usize {
    4 * count_pitch(bins)
}

/// Values counted in 16-bit counters before they are added to the 32-bit ones: each of the
/// four arrays receives at most `WINDOW / 4 + 7` < 65536 increments (every block but the
/// window's last is a whole number of 8-value groups; the last group's leftovers go to the
/// first array).
const WINDOW: usize = 1 << 17;

/// Adds the 16-bit counts into the 32-bit ones and clears them.
#[inline(always)]
fn flush(small: &mut [u16], counts: &mut [u32]) {
    for (c, s) in counts.iter_mut().zip(small.iter_mut()) {
        *c += *s as u32;
        *s = 0;
    }
}

/// Four interleaved arrays of 16-bit counters (half the cache footprint of 32-bit ones), each
/// `stride` long (a power of two, so that masking an index proves it in bounds: no bounds
/// checks in the counting loop). Consecutive values go to different arrays, which breaks the
/// store-to-load dependency of equal bins.
struct Counters<'a> {
    c0: &'a mut [u16],
    c1: &'a mut [u16],
    c2: &'a mut [u16],
    c3: &'a mut [u16],
    mask: usize,
}

impl<'a> Counters<'a> {
    /// Splits `counts` into four arrays `counts.len() / 4` apart, each cut to `stride`.
    #[inline(always)]
    fn new(counts: &'a mut [u16], stride: usize) -> Self {
        let pitch = counts.len() / 4;
        let (c0, rest) = counts.split_at_mut(pitch);
        let (c1, rest) = rest.split_at_mut(pitch);
        let (c2, c3) = rest.split_at_mut(pitch);
        Counters {
            c0: &mut c0[..stride],
            c1: &mut c1[..stride],
            c2: &mut c2[..stride],
            c3: &mut c3[..stride],
            mask: stride - 1,
        }
    }

    /// Counts eight indices.
    #[inline(always)]
    fn add8(&mut self, q: &[u32]) {
        let m = self.mask;
        self.c0[q[0] as usize & m] += 1;
        self.c1[q[1] as usize & m] += 1;
        self.c2[q[2] as usize & m] += 1;
        self.c3[q[3] as usize & m] += 1;
        self.c0[q[4] as usize & m] += 1;
        self.c1[q[5] as usize & m] += 1;
        self.c2[q[6] as usize & m] += 1;
        self.c3[q[7] as usize & m] += 1;
    }

    /// Counts any number of indices (the leftovers go to the first array).
    #[inline(always)]
    fn add(&mut self, idx: &[u32]) {
        let mut groups = idx.chunks_exact(8);
        for q in &mut groups {
            self.add8(q);
        }
        for &i in groups.remainder() {
            self.c0[i as usize & self.mask] += 1;
        }
    }
}

/// The constants of `torch.histc`'s bin index over `[lo, hi]` with `last + 1` bins.
#[derive(Clone, Copy)]
struct Binning {
    lo: f32,
    hi: f32,
    width: f32,
    nb: f32,
    last: i32,
}

impl Binning {
    /// `bins` equal bins over `[lo, hi]`.
    fn new(lo: f32, hi: f32, bins: usize) -> Self {
        Binning {
            lo,
            hi,
            width: hi - lo,
            nb: bins as f32,
            last: (bins - 1) as i32,
        }
    }
}

/// The bin indices of eight values at a time, the step inside the counting loop.
trait Index8 {
    /// Per-lane record of values outside `[lo, hi]` (or NaN).
    type Out: Copy;
    /// How many counters the indices address (every index is below it).
    fn slots(&self) -> usize;
    /// No value outside yet.
    fn none(&self) -> Self::Out;
    /// The indices of `v` (eight values) into `o` (eight slots); with `CHECK`, records in
    /// `out` the values outside `[lo, hi]` or NaN.
    fn index8<const CHECK: bool>(&self, v: &[f32], o: &mut [u32], out: &mut Self::Out);
    /// Whether `out` recorded a value.
    fn any(&self, out: Self::Out) -> bool;
    /// One value's index and whether it is outside (the blocks' ragged ends).
    fn index1(&self, v: f32) -> (u32, bool);
}

/// Indices of any number of values: eight at a time, then one by one. Values outside are
/// recorded in `out` or (the ragged end) `ragged`.
#[inline(always)]
fn index_block<const CHECK: bool, I: Index8>(
    ix: &I,
    xs: &[f32],
    idx: &mut [u32],
    out: &mut I::Out,
    ragged: &mut bool,
) {
    let mut vs = xs.chunks_exact(8);
    let mut os = idx.chunks_exact_mut(8);
    for (o, v) in (&mut os).zip(&mut vs) {
        ix.index8::<CHECK>(v, o, out);
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(vs.remainder()) {
        let (i, bad) = ix.index1(v);
        *o = i;
        *ragged |= CHECK && bad;
    }
}

impl Index8 for Binning {
    type Out = [u32; 8];

    #[inline(always)]
    fn slots(&self) -> usize {
        self.last as usize + 1
    }

    #[inline(always)]
    fn none(&self) -> [u32; 8] {
        [0; 8]
    }

    /// Fixed-size arrays, which the compiler turns into whole-vector operations.
    #[inline(always)]
    fn index8<const CHECK: bool>(&self, v: &[f32], o: &mut [u32], out: &mut [u32; 8]) {
        let v: &[f32; 8] = v.try_into().expect("eight values");
        let o: &mut [u32; 8] = o.try_into().expect("eight indices");
        if CHECK {
            for k in 0..8 {
                // NaN fails both compares: it counts as outside.
                out[k] += u32::from(!(v[k] >= self.lo && v[k] <= self.hi));
            }
        }
        // Below `lo` (and NaN) the index clamps to bin 0.
        *o = std::array::from_fn(|k| histc_index(v[k], self.lo, self.width, self.nb, self.last));
    }

    #[inline(always)]
    fn any(&self, out: [u32; 8]) -> bool {
        out.iter().any(|&c| c != 0)
    }

    #[inline(always)]
    fn index1(&self, v: f32) -> (u32, bool) {
        let i = histc_index(v, self.lo, self.width, self.nb, self.last);
        // NaN fails both compares: it counts as outside.
        (i, !(v >= self.lo && v <= self.hi))
    }
}

/// The binning of [`sign_split_counts`]: `min(trunc(|v| · scale), last)`, plus `bins` for a
/// negative value.
#[derive(Clone, Copy)]
struct SignSplit {
    scale: f32,
    last: f32,
    bins: u32,
}

impl SignSplit {
    fn new(scale: f32, bins: usize) -> Self {
        SignSplit {
            scale,
            last: (bins - 1) as f32,
            bins: bins as u32,
        }
    }
}

impl Index8 for SignSplit {
    type Out = ();

    #[inline(always)]
    fn slots(&self) -> usize {
        2 * self.bins as usize
    }

    #[inline(always)]
    fn none(&self) {}

    #[inline(always)]
    fn index8<const CHECK: bool>(&self, v: &[f32], o: &mut [u32], _out: &mut ()) {
        let v: &[f32; 8] = v.try_into().expect("eight values");
        let o: &mut [u32; 8] = o.try_into().expect("eight indices");
        *o = std::array::from_fn(|k| self.index1(v[k]).0);
    }

    #[inline(always)]
    fn any(&self, _out: ()) -> bool {
        false
    }

    #[inline(always)]
    fn index1(&self, v: f32) -> (u32, bool) {
        let i = crate::simd::trunc_clamped(v.abs() * self.scale, self.last);
        let neg = if v < 0.0 { self.bins } else { 0 };
        (i + neg, false)
    }
}

/// Counts `xs` window by window into 16-bit counters, flushed into `counts` after each;
/// with `CHECK`, returns whether a value was outside `[lo, hi]` or NaN.
#[inline(always)]
fn count_all<const CHECK: bool, I: Index8>(xs: &[f32], ix: &I, counts: &mut [u32]) -> bool {
    let mut small = vec![0u16; counts.len()];
    let stride = count_stride(ix.slots());
    let mut outside = false;
    for window in xs.chunks(WINDOW) {
        outside |= count_window::<CHECK, I>(window, ix, &mut Counters::new(&mut small, stride));
        flush(&mut small, counts);
    }
    outside
}

/// Counts the bins of `xs` (at most [`WINDOW`] values) into `counters`; with `CHECK`, returns
/// whether a value was outside `[lo, hi]` or NaN.
///
/// Software-pipelined: the loop computes the indices of one block of [`IDX_BLOCK`] values
/// while it counts the previous block's, so the vector arithmetic runs alongside the counting
/// (which is bound by one counter update per cycle). Counting makes no input reads, so the
/// hardware prefetcher falls behind (and it stops at 4 KiB page boundaries): the loop also
/// prefetches the input [`PREFETCH_AHEAD`] values ahead.
#[inline(always)]
fn count_window<const CHECK: bool, I: Index8>(
    xs: &[f32],
    ix: &I,
    counters: &mut Counters<'_>,
) -> bool {
    let mut bufs = [[0u32; IDX_BLOCK]; 2];
    let [b0, b1] = &mut bufs;
    let (mut cur, mut next) = (b0, b1);
    let mut out = ix.none();
    let mut ragged = false;
    let mut blocks = xs.chunks(IDX_BLOCK);
    let Some(first) = blocks.next() else {
        return false;
    };
    index_block::<CHECK, I>(ix, first, &mut cur[..first.len()], &mut out, &mut ragged);
    let mut cur_len = first.len();
    for block in blocks {
        let ahead = block.as_ptr().wrapping_add(PREFETCH_AHEAD);
        let mut vs = block.chunks_exact(8);
        let mut os = next[..block.len()].chunks_exact_mut(8);
        // Every block but the last is whole, so `qs` never runs out before `vs`.
        let mut qs = cur[..cur_len].chunks_exact(8);
        for (j, ((o, v), q)) in (&mut os).zip(&mut vs).zip(&mut qs).enumerate() {
            if j % 2 == 0 {
                crate::simd::prefetch_read(ahead.wrapping_add(8 * j));
            }
            ix.index8::<CHECK>(v, o, &mut out);
            counters.add8(q);
        }
        let rest = vs.remainder();
        let rest_idx = &mut os.into_remainder()[..rest.len()];
        index_block::<CHECK, I>(ix, rest, rest_idx, &mut out, &mut ragged);
        for q in &mut qs {
            counters.add8(q);
        }
        counters.add(qs.remainder());
        cur_len = block.len();
        std::mem::swap(&mut cur, &mut next);
    }
    counters.add(&cur[..cur_len]);
    ix.any(out) || ragged
}

/// The AVX2 index step.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{Binning, Index8};
    use std::arch::x86_64::*;

    /// [`Binning`] with its constants in vector registers. A value exists only where the CPU
    /// has AVX2 and FMA (its constructor requires them), which makes its safe methods sound.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2Binning {
        b: Binning,
        lo: __m256,
        hi: __m256,
        width: __m256,
        nb: __m256,
        last: __m256,
    }

    impl Avx2Binning {
        /// # Safety
        /// The CPU must have AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn new(b: &Binning) -> Self {
            Avx2Binning {
                b: *b,
                lo: _mm256_set1_ps(b.lo),
                hi: _mm256_set1_ps(b.hi),
                width: _mm256_set1_ps(b.width),
                nb: _mm256_set1_ps(b.nb),
                last: _mm256_set1_ps(b.last as f32),
            }
        }
    }

    /// [`super::count_all`] with the AVX2 index step, if the CPU has AVX2 and FMA (`None`
    /// otherwise).
    pub(super) fn count_all<const CHECK: bool>(
        xs: &[f32],
        b: &Binning,
        counts: &mut [u32],
    ) -> Option<bool> {
        if !crate::simd::has_avx2() {
            return None;
        }
        // SAFETY: the CPU has AVX2 and FMA (detected just above).
        Some(unsafe { count_all_avx2::<CHECK>(xs, b, counts) })
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn count_all_avx2<const CHECK: bool>(
        xs: &[f32],
        b: &Binning,
        counts: &mut [u32],
    ) -> bool {
        unsafe { super::count_all::<CHECK, _>(xs, &Avx2Binning::new(b), counts) }
    }

    /// [`super::count_all`] with the portable step `ix` compiled for AVX2 and FMA, if the CPU
    /// has them (`None` otherwise).
    pub(super) fn count_all_compiled<const CHECK: bool, I: Index8>(
        xs: &[f32],
        ix: &I,
        counts: &mut [u32],
    ) -> Option<bool> {
        if !crate::simd::has_avx2() {
            return None;
        }
        /// # Safety
        /// The CPU must have AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<const CHECK: bool, I: Index8>(xs: &[f32], ix: &I, c: &mut [u32]) -> bool {
            super::count_all::<CHECK, _>(xs, ix, c)
        }
        // SAFETY: the CPU has AVX2 and FMA (detected just above).
        Some(unsafe { run::<CHECK, I>(xs, ix, counts) })
    }

    /// The portable step's operations, in its order: `((v − lo)·nb)/width`, clamped to
    /// `[0, last]` by `max(t, 0)` (NaN gives 0) then `min(t, last)`, truncated.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn index8<const CHECK: bool>(
        ix: &Avx2Binning,
        v: &[f32; 8],
        o: &mut [u32; 8],
        out: &mut __m256,
    ) {
        unsafe {
            let x = _mm256_loadu_ps(v.as_ptr());
            if CHECK {
                // Unordered compares: NaN counts as outside.
                let below = _mm256_cmp_ps::<_CMP_NGE_UQ>(x, ix.lo);
                let above = _mm256_cmp_ps::<_CMP_NLE_UQ>(x, ix.hi);
                *out = _mm256_or_ps(*out, _mm256_or_ps(below, above));
            }
            let t = _mm256_div_ps(_mm256_mul_ps(_mm256_sub_ps(x, ix.lo), ix.nb), ix.width);
            let t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), ix.last);
            _mm256_storeu_si256(o.as_mut_ptr().cast(), _mm256_cvttps_epi32(t));
        }
    }

    impl Index8 for Avx2Binning {
        type Out = __m256;

        #[inline(always)]
        fn none(&self) -> __m256 {
            // SAFETY: an `Avx2Binning` exists only on a CPU with AVX2.
            unsafe { _mm256_setzero_ps() }
        }

        #[inline(always)]
        fn index8<const CHECK: bool>(&self, v: &[f32], o: &mut [u32], out: &mut __m256) {
            let v: &[f32; 8] = v.try_into().expect("eight values");
            let o: &mut [u32; 8] = o.try_into().expect("eight indices");
            // SAFETY: an `Avx2Binning` exists only on a CPU with AVX2 and FMA.
            unsafe { index8::<CHECK>(self, v, o, out) }
        }

        #[inline(always)]
        fn any(&self, out: __m256) -> bool {
            // SAFETY: an `Avx2Binning` exists only on a CPU with AVX2.
            unsafe { _mm256_movemask_ps(out) != 0 }
        }

        #[inline(always)]
        fn slots(&self) -> usize {
            self.b.slots()
        }

        #[inline(always)]
        fn index1(&self, v: f32) -> (u32, bool) {
            self.b.index1(v)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `torch.histc` one value at a time, the reference for the pipelined counting.
    fn histc_scalar(xs: &[f32], lo: f32, hi: f32, bins: usize) -> (Vec<f32>, bool) {
        let mut h = vec![0.0f32; bins];
        let (nb, w, last) = (bins as f32, hi - lo, (bins - 1) as i32);
        for &v in xs {
            h[histc_index(v, lo, w, nb, last) as usize] += 1.0;
        }
        (h, xs.iter().all(|&v| v >= lo && v <= hi))
    }

    #[test]
    fn pipelined_counting_matches_one_value_at_a_time() {
        // Lengths around the 8-value groups, the 128-value blocks and the 2^17-value windows,
        // so that every prologue, remainder and hand-over path runs; bin counts that are and
        // are not powers of two.
        let mut r = crate::rng::Lcg::new(7);
        let mut next = || r.unit_f32();
        let data: Vec<f32> = (0..(WINDOW + 3 * IDX_BLOCK + 5))
            .map(|_| next() * 4.0 - 2.0)
            .collect();
        let lens = [
            0,
            1,
            7,
            8,
            9,
            IDX_BLOCK - 1,
            IDX_BLOCK,
            IDX_BLOCK + 1,
            IDX_BLOCK + 13,
            2 * IDX_BLOCK + 7,
            WINDOW - 1,
            WINDOW,
            data.len(),
        ];
        for bins in [2048, 100, 1] {
            for &n in &lens {
                let xs = &data[..n];
                let want = histc_scalar(xs, -2.0, 2.0, bins);
                let got = histc_in_range(xs, -2.0, 2.0, bins);
                assert_eq!(got, want, "bins {bins}, {n} values");
                assert_eq!(histc(xs, -2.0, 2.0, bins, (-2.0, 2.0)), want.0);
                // The portable step and the dispatched one (AVX2 where the CPU has it) agree
                // count for count.
                let b = Binning::new(-2.0, 2.0, bins);
                let (mut c1, mut c2) = (vec![0u32; count_len(bins)], vec![0u32; count_len(bins)]);
                let o1 = count_all::<true, _>(xs, &b, &mut c1);
                let o2 = Dispatch::count_all::<true>(&b, xs, &mut c2);
                assert_eq!((c1, o1), (c2, o2), "bins {bins}, {n} values");
                // A NaN or an outside value at any position of any block is seen.
                if n > 0 {
                    for pos in [0, n / 2, n - 1] {
                        for bad in [f32::NAN, 2.5, -2.0001] {
                            let mut ys = xs.to_vec();
                            ys[pos] = bad;
                            assert!(!histc_in_range(&ys, -2.0, 2.0, bins).1, "{n} {pos} {bad}");
                            let mut c = vec![0u32; count_len(bins)];
                            let b = Binning::new(-2.0, 2.0, bins);
                            assert!(count_all::<true, _>(&ys, &b, &mut c), "{n} {pos} {bad}");
                        }
                    }
                }
            }
        }
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
}
