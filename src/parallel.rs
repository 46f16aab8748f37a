//! Splitting large contiguous work across threads (feature `rayon`).
//!
//! Work is always cut at the same fixed chunk boundaries, with or without the feature, and
//! reductions combine the chunks' partial results in chunk order: results are identical bit
//! for bit whether the chunks ran on one thread or many. Slices shorter than
//! [`PAR_MIN_LEN`] always run on the calling thread (no scheduling overhead for small tensors),
//! and so does everything in a rayon pool of one thread (`RAYON_NUM_THREADS=1`, or inside a
//! one-thread pool's `install`): there the sequential path runs, exactly as without the
//! feature.

/// Elements per chunk.
pub(crate) const CHUNK: usize = 1 << 16;

/// Below this many elements work stays on the calling thread.
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
pub(crate) const PAR_MIN_LEN: usize = 1 << 18;

/// Whether `len` elements are split across the current rayon pool: long enough, and the pool
/// has more than one thread.
#[cfg(feature = "rayon")]
#[inline]
pub(crate) fn parallel(len: usize) -> bool {
    len >= PAR_MIN_LEN && rayon::current_num_threads() > 1
}

/// Without the feature, nothing is split.
#[cfg(not(feature = "rayon"))]
#[inline]
#[allow(dead_code)]
pub(crate) fn parallel(_len: usize) -> bool {
    false
}

/// `f(x_chunk, out_chunk)` over aligned chunks of two slices.
#[inline]
pub(crate) fn chunks2<A: Sync, B: Send>(
    xs: &[A],
    os: &mut [B],
    f: impl Fn(&[A], &mut [B]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) {
        use rayon::prelude::*;
        xs.par_chunks(CHUNK)
            .zip(os.par_chunks_mut(CHUNK))
            .for_each(|(a, b)| f(a, b));
        return;
    }
    f(xs, os);
}

/// `f(x_chunk, g_chunk, out_chunk)` over aligned chunks of three slices.
#[inline]
pub(crate) fn chunks3<A: Sync, G: Sync, B: Send>(
    xs: &[A],
    gs: &[G],
    os: &mut [B],
    f: impl Fn(&[A], &[G], &mut [B]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) {
        use rayon::prelude::*;
        xs.par_chunks(CHUNK)
            .zip(gs.par_chunks(CHUNK))
            .zip(os.par_chunks_mut(CHUNK))
            .for_each(|((a, g), b)| f(a, g, b));
        return;
    }
    f(xs, gs, os);
}

/// `f(chunk)` over chunks of a slice, in place.
#[inline]
pub(crate) fn chunks_mut<A: Send>(xs: &mut [A], f: impl Fn(&mut [A]) + Sync + Send) {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) {
        use rayon::prelude::*;
        xs.par_chunks_mut(CHUNK).for_each(&f);
        return;
    }
    f(xs);
}

/// Like [`map_fold`], for a reduction whose result does not depend on where the slice is
/// cut (integer counts, flags): on one thread the whole slice is a single piece; with threads,
/// pieces of `len / 8` elements, at least [`CHUNK`] and at most `2^20`. Few pieces keep the
/// per-piece setup (a count buffer to clear and add up) out of the measured time.
#[inline]
pub(crate) fn map_fold_exact<A: Sync, R: Send>(
    xs: &[A],
    map: impl Fn(&[A]) -> R + Sync + Send,
    init: R,
    fold: impl Fn(R, R) -> R,
) -> R {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) {
        let piece = (xs.len() / 8).clamp(CHUNK, 1 << 20);
        return par_map_fold(xs, piece, map, init, fold);
    }
    fold(init, map(xs))
}

/// `map` over pieces of `piece` elements on the thread pool, folded in piece order.
#[cfg(feature = "rayon")]
fn par_map_fold<A: Sync, R: Send>(
    xs: &[A],
    piece: usize,
    map: impl Fn(&[A]) -> R + Sync + Send,
    init: R,
    fold: impl Fn(R, R) -> R,
) -> R {
    use rayon::prelude::*;
    let parts: Vec<R> = xs.par_chunks(piece).map(map).collect();
    parts.into_iter().fold(init, fold)
}

/// Maps every chunk of `xs` and folds the results in chunk order.
#[inline]
pub(crate) fn map_fold<A: Sync, R: Send>(
    xs: &[A],
    map: impl Fn(&[A]) -> R + Sync + Send,
    init: R,
    fold: impl Fn(R, R) -> R,
) -> R {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) {
        return par_map_fold(xs, CHUNK, map, init, fold);
    }
    xs.chunks(CHUNK).map(map).fold(init, fold)
}

/// Like [`map_fold`] over aligned chunks of two slices.
#[inline]
pub(crate) fn map_fold2<A: Sync, G: Sync, R: Send>(
    xs: &[A],
    gs: &[G],
    map: impl Fn(&[A], &[G]) -> R + Sync + Send,
    init: R,
    fold: impl Fn(R, R) -> R,
) -> R {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) {
        use rayon::prelude::*;
        let parts: Vec<R> = xs
            .par_chunks(CHUNK)
            .zip(gs.par_chunks(CHUNK))
            .map(|(a, g)| map(a, g))
            .collect();
        return parts.into_iter().fold(init, fold);
    }
    xs.chunks(CHUNK)
        .zip(gs.chunks(CHUNK))
        .map(|(a, g)| map(a, g))
        .fold(init, fold)
}

/// Like [`map_fold`] over aligned chunks of three slices, the third written.
#[inline]
pub(crate) fn map_fold3<A: Sync, G: Sync, B: Send, R: Send>(
    xs: &[A],
    gs: &[G],
    os: &mut [B],
    map: impl Fn(&[A], &[G], &mut [B]) -> R + Sync + Send,
    init: R,
    fold: impl Fn(R, R) -> R,
) -> R {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) {
        use rayon::prelude::*;
        let parts: Vec<R> = xs
            .par_chunks(CHUNK)
            .zip(gs.par_chunks(CHUNK))
            .zip(os.par_chunks_mut(CHUNK))
            .map(|((a, g), o)| map(a, g, o))
            .collect();
        return parts.into_iter().fold(init, fold);
    }
    xs.chunks(CHUNK)
        .zip(gs.chunks(CHUNK))
        .zip(os.chunks_mut(CHUNK))
        .map(|((a, g), o)| map(a, g, o))
        .fold(init, fold)
}

/// Blocks per piece of [`blocks2`] / [`blocks3`]: about [`CHUNK`] values, whole blocks.
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
fn blocks_per_piece(block: usize) -> usize {
    (CHUNK / block.max(1)).max(1)
}

/// `f(first_block, x_piece, out_piece)` over pieces of whole blocks (`block` values of `xs`
/// and `per_out` entries of `out` per block; the lengths agree), all true. The block
/// encoders of the formats: each block is encoded on its own, so the pieces give the same
/// bytes on one thread or many.
#[inline]
pub(crate) fn blocks2<A: Sync, B: Send>(
    xs: &[A],
    block: usize,
    out: &mut [B],
    per_out: usize,
    f: impl Fn(usize, &[A], &mut [B]) -> bool + Sync + Send,
) -> bool {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) && block > 0 && per_out > 0 {
        use rayon::prelude::*;
        let k = blocks_per_piece(block);
        return xs
            .par_chunks(k * block)
            .zip(out.par_chunks_mut(k * per_out))
            .enumerate()
            .map(|(i, (a, b))| f(i * k, a, b))
            .reduce(|| true, |a, b| a && b);
    }
    let _ = (block, per_out);
    f(0, xs, out)
}

/// [`blocks2`] with a second output: `per_small` entries of `small` and `per_big` of `big` per
/// block.
#[inline]
pub(crate) fn blocks3<A: Sync, S: Send, B: Send>(
    xs: &[A],
    block: usize,
    (small, per_small): (&mut [S], usize),
    (big, per_big): (&mut [B], usize),
    f: impl Fn(usize, &[A], &mut [S], &mut [B]) -> bool + Sync + Send,
) -> bool {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) && block > 0 && per_small > 0 && per_big > 0 {
        use rayon::prelude::*;
        let k = blocks_per_piece(block);
        return xs
            .par_chunks(k * block)
            .zip(small.par_chunks_mut(k * per_small))
            .zip(big.par_chunks_mut(k * per_big))
            .enumerate()
            .map(|(i, ((a, s), b))| f(i * k, a, s, b))
            .reduce(|| true, |a, b| a && b);
    }
    let _ = (block, per_small, per_big);
    f(0, xs, small, big)
}

/// [`blocks3`] with a third output (the group-wise formats' scales, zero points and codes).
#[inline]
pub(crate) fn blocks4<A: Sync, S: Send, Z: Send, B: Send>(
    xs: &[A],
    block: usize,
    (small, zeros, per_small): (&mut [S], &mut [Z], usize),
    (big, per_big): (&mut [B], usize),
    f: impl Fn(&[A], &mut [S], &mut [Z], &mut [B]) -> bool + Sync + Send,
) -> bool {
    #[cfg(feature = "rayon")]
    if parallel(xs.len()) && block > 0 && per_small > 0 && per_big > 0 {
        use rayon::prelude::*;
        let k = blocks_per_piece(block);
        return xs
            .par_chunks(k * block)
            .zip(small.par_chunks_mut(k * per_small))
            .zip(zeros.par_chunks_mut(k * per_small))
            .zip(big.par_chunks_mut(k * per_big))
            .map(|(((a, s), z), b)| f(a, s, z, b))
            .reduce(|| true, |a, b| a && b);
    }
    let _ = (block, per_small, per_big);
    f(xs, small, zeros, big)
}

/// Layers of at least this many multiply-accumulates are split across the rayon pool: the
/// one threshold of the layers (elementwise work uses [`PAR_MIN_LEN`]).
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
pub(crate) const PAR_MIN_MACS: usize = 1 << 22;

/// How many threads a task of `work` multiply-accumulates is split across: the current rayon
/// pool's size for work of at least [`PAR_MIN_MACS`], else 1 (always 1 without the feature).
pub(crate) fn threads_for(work: usize) -> usize {
    #[cfg(feature = "rayon")]
    if work >= PAR_MIN_MACS {
        return rayon::current_num_threads().max(1);
    }
    let _ = (work, PAR_MIN_MACS);
    1
}

/// Calls `f(index, piece, scratch)` for the consecutive `chunk`-element pieces of `out` (the
/// last may be shorter). With the `rayon` feature, a layer of at least [`PAR_MIN_MACS`]
/// multiply-accumulates (`work`) runs its pieces on the pool (each thread with its own
/// scratch); otherwise they run in order on this thread. A piece is computed the same way
/// either way, so results do not depend on the feature or the pool.
pub(crate) fn for_each_block<T: Send, S: Default + Send>(
    out: &mut [T],
    chunk: usize,
    work: usize,
    f: impl Fn(usize, &mut [T], &mut S) + Sync + Send,
) {
    let chunk = chunk.max(1);
    #[cfg(feature = "rayon")]
    if work >= PAR_MIN_MACS && out.len() > chunk && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(S::default, |s, (i, c)| f(i, c, s));
        return;
    }
    let _ = (work, PAR_MIN_MACS);
    let mut scratch = S::default();
    for (i, c) in out.chunks_mut(chunk).enumerate() {
        f(i, c, &mut scratch);
    }
}

/// One block of a new vector's values, written in order by [`fill_blocks`]'s callback.
pub(crate) struct Fill<'a, T> {
    slots: &'a mut [std::mem::MaybeUninit<T>],
    written: usize,
}

impl<T: Copy> Fill<'_, T> {
    /// Values in the block.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Writes `values` after those already written (those past the block's end are dropped).
    #[inline(always)]
    pub(crate) fn extend(&mut self, values: impl IntoIterator<Item = T>) {
        let mut n = 0;
        for (slot, v) in self.slots[self.written..].iter_mut().zip(values) {
            slot.write(v);
            n += 1;
        }
        self.written += n;
    }
}

/// A new vector of `len` values written block by block: `f(index, block, scratch)` for the
/// consecutive `chunk`-value blocks (cut and scheduled as [`for_each_block`] cuts and
/// schedules them), each writing its block's values in order ([`Fill::extend`]); values a
/// block leaves unwritten are `T::default()`. The memory is written once, by the blocks on
/// their threads: no clearing pass on the calling thread before they start (for a 1.5 MB
/// output that pass was 5 % of a two-thread int8 layer, run before its parallel part).
///
/// # Panics
/// Not by itself; a panic in `f` propagates.
#[allow(unsafe_code)]
pub(crate) fn fill_blocks<T: Copy + Default + Send, S: Default + Send>(
    len: usize,
    chunk: usize,
    work: usize,
    f: impl Fn(usize, &mut Fill<'_, T>, &mut S) + Sync + Send,
) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    for_each_block(
        &mut v.spare_capacity_mut()[..len],
        chunk,
        work,
        |i, slots, s| {
            let mut fill = Fill { slots, written: 0 };
            f(i, &mut fill, s);
            let Fill { slots, written } = fill;
            for slot in &mut slots[written..] {
                slot.write(T::default());
            }
        },
    );
    // SAFETY: the first `len` slots are allocated (`with_capacity(len)`), and every one of
    // them was initialized: `for_each_block` hands each slot to exactly one block (its pieces
    // partition the slice, and every piece is run), and each block wrote its first `written`
    // slots through `Fill::extend` and the rest with the default above.
    unsafe { v.set_len(len) };
    v
}

#[cfg(test)]
mod fill_tests {
    use super::fill_blocks;

    /// Blocks that write all, part or none of their values: the vector holds what each
    /// wrote, then defaults; a block cannot write past its end.
    #[test]
    fn filled_blocks_hold_what_was_written_then_defaults() {
        let v: Vec<u32> = fill_blocks(10, 4, usize::MAX, |i, fill, (): &mut ()| match i {
            0 => fill.extend((0..9).map(|j| 100 + j)),
            1 => fill.extend([7, 8]),
            _ => {}
        });
        assert_eq!(v, [100, 101, 102, 103, 7, 8, 0, 0, 0, 0]);
        let empty: Vec<f32> = fill_blocks(0, 4, 0, |_, _, (): &mut ()| unreachable!());
        assert!(empty.is_empty());
        let mut twice: Vec<u8> = fill_blocks(5, 5, 0, |_, fill, (): &mut ()| {
            fill.extend([1, 2]);
            fill.extend([3, 4, 5, 6]);
            assert_eq!(fill.len(), 5);
        });
        twice.push(9);
        assert_eq!(twice, [1, 2, 3, 4, 5, 9]);
    }
}
