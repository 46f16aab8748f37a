//! How the int8 layers sum their integer products: [`Int8Accumulation`], the packed weights
//! ([`IntWeights`]) and the blocked u8 × i8 → i32 matrix product: register tiles written with
//! AVX2 intrinsics where the CPU has it (runtime detection) and in portable Rust elsewhere,
//! with identical results on every path. See docs/performance.md ("Layers").

use crate::error::{QuantError, Result};
use crate::parallel::Fill;

/// The activation rows of [`IntWeights::sum_row_blocks`]: stored `u8` with their zero
/// point, or `f32` quantized block by block as they are used (a dynamic layer's input: each
/// thread quantizes the rows it sums, and no quantized copy of the whole input is made).
#[derive(Clone, Copy)]
pub(crate) enum ActRows<'a> {
    /// Quantized rows and their zero point.
    Stored(&'a [u8], i32),
    /// Float rows and the parameters that quantize them (to `u8`).
    Float(&'a [f32], &'a crate::qparams::QParams),
}

/// How an int8 layer sums the products of its u8 activations and i8 weights.
///
/// - [`Int8Accumulation::Exact`]: every product summed in `i32`, as VNNI CPUs, ARM and the
///   reference kernels do. Equal to the reference path's integer sum.
/// - [`Int8Accumulation::X86Avx2`]: PyTorch's x86 engine on a CPU without VNNI. It multiplies
///   with `vpmaddubsw`, which adds each two adjacent products (along the reduction axis, in
///   the order `(kh, kw, input channel)` with the input channel fastest, within each group;
///   an odd length pads the last pair with 0) in a signed 16-bit lane **with saturation**,
///   then widens to `i32`. The products are of the stored values (activations including
///   their zero point); the zero point's contribution is subtracted afterwards in `i32`.
///   With full-range activations (0..=255) pairs can saturate: that is why PyTorch's x86
///   default halves the activation range (`reduce_range`).
///
/// [`x86_engine_accumulation`] says which one PyTorch's x86 engine uses on the running CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Int8Accumulation {
    /// Exact `i32` accumulation.
    #[default]
    Exact,
    /// The pairwise 16-bit saturating accumulation of x86 AVX2 without VNNI.
    X86Avx2,
}

/// What PyTorch's x86 (fbgemm) engine does on this CPU: [`Int8Accumulation::Exact`] with VNNI
/// (AVX512-VNNI or AVX-VNNI, Cooper Lake / Ice Lake / Zen 4 or newer) and on non-x86 CPUs,
/// [`Int8Accumulation::X86Avx2`] on x86 CPUs without it.
///
/// # Examples
/// ```
/// use qnumeric::nn::quantized::{x86_engine_accumulation, Int8Accumulation};
/// let mode = x86_engine_accumulation();
/// assert!(matches!(mode, Int8Accumulation::Exact | Int8Accumulation::X86Avx2));
/// ```
#[must_use]
pub fn x86_engine_accumulation() -> Int8Accumulation {
    #[cfg(target_arch = "x86_64")]
    {
        let vnni = std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni");
        if vnni {
            Int8Accumulation::Exact
        } else {
            Int8Accumulation::X86Avx2
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Int8Accumulation::Exact
    }
}

/// Output channels per weight panel (the vector lanes of the kernels: two 8 × `i32` vectors).
const NR: usize = 16;
/// Reduction steps (pairs, or quads) per cache block: a panel block is 16 KiB (in L1).
const KC: usize = 256;
/// Activation rows per cache block (a multiple of every tile height).
const MB: usize = 48;

/// A buffer of sums kept per thread between layers' forward passes: a block's sums in a
/// fresh allocation cost a clearing pass (and page faults) every call.
pub(crate) mod sums_scratch {
    use std::cell::Cell;

    thread_local! {
        static BUF: Cell<Vec<i32>> = const { Cell::new(Vec::new()) };
    }

    /// The thread's buffer resized to `len` (empty first if a caller further up the same
    /// thread holds it). Its values are whatever the last user left: callers overwrite it.
    pub(crate) fn take(len: usize) -> Vec<i32> {
        let mut v = BUF.with(Cell::take);
        v.resize(len, 0);
        v
    }

    /// Gives the buffer back (kept up to 64 MiB).
    pub(crate) fn give(v: Vec<i32>) {
        if v.capacity() <= 16 << 20 {
            BUF.with(|b| b.set(v));
        }
    }
}

/// Activation rows per block of an int8 matrix product of `m` rows and `work`
/// multiply-accumulates: up to 192 (the kernels block for the caches inside), and as many
/// blocks as threads, as even as rows allow, where the work is split across threads (blocks of
/// [`MB`] left two threads 144 and 112 of 256 rows; blocks of whole 12-row tiles, 72 and 56 of
/// 128; a short tile now costs only its rows). The sums do not depend on the blocks.
pub(crate) fn rows_per_block(m: usize, work: usize) -> usize {
    let threads = crate::parallel::threads_for(work).max(1);
    m.div_ceil(threads).clamp(1, 192)
}

/// The weights of an int8 layer, prepared once: `[out, k]` in the reduction order of the
/// layer's kernel, with the sums the zero-point corrections need, packed in panels of [`NR`]
/// output channels for each kind of activation rows ([`ActRow`]):
/// - `i16` rows (exact pairs): the weights with their zero point taken off, `i16`: pair `t`
///   (reduction indices `2t`, `2t + 1`) of channel `o` at `((o / NR)·kp + t)·2·NR + (o % NR)·2`;
/// - `u8` rows (saturating pairs, by quads): the stored weights, `i8`: quad `s` of channel `o`
///   at `((o / NR)·kq + s)·4·NR + (o % NR)·4`.
///
/// Padding (past `k`, past `out`) is 0.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IntWeights {
    pub(crate) out: usize,
    pub(crate) k: usize,
    centered: Vec<i16>,
    raw: Vec<i8>,
    zero_points: Vec<i32>,
    any_zero_point: bool,
    sum_raw: Vec<i32>,
    sum_centered: Vec<i32>,
    /// The largest `|w[2t]| + |w[2t + 1]|` of the stored weights over every pair.
    max_pair: i32,
}

/// The element of the activation rows a kernel reads (values `0..=255` either way):
/// - `i16`: exact pairs (`vpmaddwd`) against the weights with their zero point taken off:
///   the exact sum for every input;
/// - `u8`: pairs saturated to `i16` (`vpmaddubsw`, by quads) against the stored weights, then
///   the zero points' contributions: the [`Int8Accumulation::X86Avx2`] sum, which is also the
///   exact sum when no pair can saturate ([`IntWeights::bytes_are_exact`]).
pub(crate) trait ActRow: Copy + Default + From<u8> + Into<i32> + Send + Sync {
    /// Reduction elements per kernel step (rows are padded to a multiple).
    const STEP: usize;
    /// `acc[i·out + o] = init[o] + Σ` over the reduction steps of row `i` and channel `o`'s
    /// panel.
    /// Channels `panel0·NR..` (`init.len()` of them).
    fn gemm(
        w: &IntWeights,
        panel0: usize,
        a: &[Self],
        m: usize,
        lda: usize,
        init: &[i32],
        acc: &mut [i32],
    );
}

/// A `u8` activation summed **exactly** by quads (`vpdpbusd`: four `u8 × i8` products added in
/// `i32`, no saturation) against the stored weights, then the zero points' contributions: the
/// exact sum for every input. The row element of the exact mode where the CPU has
/// AVX512-VNNI ([`vnni_rows`]); a portable kernel is its oracle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct ExactByte(pub(crate) u8);

impl From<u8> for ExactByte {
    #[inline(always)]
    fn from(v: u8) -> Self {
        ExactByte(v)
    }
}

impl From<ExactByte> for i32 {
    #[inline(always)]
    fn from(v: ExactByte) -> Self {
        i32::from(v.0)
    }
}

/// Whether the exact mode runs on [`ExactByte`] rows (the CPU has AVX512-VNNI or AVX-VNNI and
/// `QNUMERIC_NO_VNNI` is not set): one `vpdpbusd` does 64 multiply-accumulates on 512-bit
/// registers, 32 on 256-bit ones, where the `vpmaddwd` pairs of the AVX2 exact kernel do 16.
#[inline]
pub(crate) fn vnni_rows() -> bool {
    crate::simd::has_avx512_vnni() || crate::simd::has_avx_vnni()
}

impl IntWeights {
    /// From stored i8 weights `[out, k]` (already in the kernel's reduction order) and their
    /// zero points. Refuses weights for which an `i32` accumulator could overflow on some
    /// u8 input, in either accumulation mode.
    pub(crate) fn new(
        op: &'static str,
        raw: &[i8],
        out: usize,
        k: usize,
        zero_points: &[i32],
    ) -> Result<Self> {
        debug_assert_eq!(raw.len(), out * k);
        let (mut sum_raw, mut sum_centered) = (Vec::with_capacity(out), Vec::with_capacity(out));
        for o in 0..out {
            let row = &raw[o * k..][..k];
            let zw = zero_points[o];
            let (mut s_raw, mut s_c, mut abs_c) = (0i64, 0i64, 0i64);
            for &v in row {
                let c = i64::from(v) - i64::from(zw);
                s_raw += i64::from(v);
                s_c += c;
                abs_c += c.abs();
            }
            // Exact: |Σ x·c − zx·Σc| <= 2·255·Σ|c|. Emulated: ceil(k/2) saturated pairs of at
            // most 2^15, plus the zero-point corrections (each <= 255·Σ|w| + 255·128·k).
            let pairs = (k as i64 + 1) / 2;
            let bound =
                (2 * 255 * abs_c).max(pairs * 32768 + 255 * 128 * k as i64 * 3 + 255 * s_raw.abs());
            if bound > i64::from(i32::MAX) {
                return Err(QuantError::AccumulatorOverflow {
                    op,
                    channel: o,
                    bound,
                });
            }
            sum_raw.push(s_raw as i32);
            sum_centered.push(s_c as i32);
        }
        fn pack<T: Copy + Default>(
            out: usize,
            k: usize,
            step: usize,
            value: impl Fn(usize, usize) -> T,
        ) -> Vec<T> {
            let steps = k.div_ceil(step);
            let mut p = vec![T::default(); out.div_ceil(NR) * steps * step * NR];
            for o in 0..out {
                for t in 0..k {
                    p[((o / NR) * steps + t / step) * step * NR + (o % NR) * step + t % step] =
                        value(o, t);
                }
            }
            p
        }
        let centered = pack(out, k, 2, |o, t| {
            i16::try_from(i32::from(raw[o * k + t]) - zero_points[o])
                .expect("i8 minus an i8 zero point fits i16")
        });
        Ok(IntWeights {
            out,
            k,
            centered,
            raw: pack(out, k, 4, |o, t| raw[o * k + t]),
            zero_points: zero_points.to_vec(),
            any_zero_point: zero_points.iter().any(|&z| z != 0),
            sum_raw,
            sum_centered,
            max_pair: raw
                .chunks(k.max(1))
                .take(out)
                .flat_map(|row| row.chunks(2))
                .map(|p| p.iter().map(|&v| i32::from(v).abs()).sum::<i32>())
                .max()
                .unwrap_or(0),
        })
    }

    /// Each output channel's `Σ w` of the stored weights.
    pub(crate) fn sums(&self) -> &[i32] {
        &self.sum_raw
    }

    /// Whether any output channel's weights have a nonzero zero point.
    pub(crate) fn has_zero_points(&self) -> bool {
        self.any_zero_point
    }

    /// Whether `u8` rows give the exact sum for inputs no larger than `x_max`: no pair
    /// `x0·w0 + x1·w1` can leave the `i16` range (always with 7-bit activations, PyTorch's
    /// `reduce_range`).
    pub(crate) fn bytes_are_exact(&self, x_max: u8) -> bool {
        i32::from(x_max) * self.max_pair <= i32::from(i16::MAX)
    }

    /// Sums the rows of `x` (`k` values each) in blocks of `block` rows, a block per task of
    /// [`crate::parallel::for_each_block`] (`work` multiply-accumulates decide the pool), and
    /// hands each block's sums (`rows × out`, in a buffer reused per thread) to
    /// `finish(sums, out_rows)` on the same thread, with that block's rows of `out` (`out`
    /// values per row). The one block loop of the int8 Linear layers.
    ///
    /// # Errors
    /// Float rows ([`ActRows::Float`]) that do not quantize (NaN): the first block's error.
    pub(crate) fn sum_row_blocks<T: Send>(
        &self,
        x: ActRows<'_>,
        mode: Int8Accumulation,
        (block, work): (usize, usize),
        out: &mut [T],
        finish: impl Fn(&[i32], &mut [T]) + Sync + Send,
    ) -> Result<()> {
        let o = self.out;
        let failed = std::sync::OnceLock::new();
        crate::parallel::for_each_block(out, block * o, work, |b, out_b: &mut [T], buf| {
            let rows = out_b.len() / o.max(1);
            self.sum_block(x, mode, (block, b, rows), buf, &failed, |acc| {
                finish(acc, out_b);
            });
        });
        failed.into_inner().map_or(Ok(()), Err)
    }

    /// [`IntWeights::sum_row_blocks`] into a new vector of `rows × out` values, each block's
    /// written by `finish` in order ([`Fill::extend`]) on the thread that summed it, with no
    /// clearing pass first ([`crate::parallel::fill_blocks`]).
    ///
    /// # Errors
    /// As [`IntWeights::sum_row_blocks`].
    pub(crate) fn sum_row_blocks_new<T: Copy + Default + Send>(
        &self,
        x: ActRows<'_>,
        mode: Int8Accumulation,
        (rows, block, work): (usize, usize, usize),
        finish: impl Fn(&[i32], &mut Fill<'_, T>) + Sync + Send,
    ) -> Result<Vec<T>> {
        let o = self.out;
        let failed = std::sync::OnceLock::new();
        let out = crate::parallel::fill_blocks(rows * o, block * o, work, |b, fill, buf| {
            let rows = fill.len() / o.max(1);
            self.sum_block(x, mode, (block, b, rows), buf, &failed, |acc| {
                finish(acc, fill)
            });
        });
        failed.into_inner().map_or(Ok(out), Err)
    }

    /// Block `b` (of `block` rows; this one `rows` long) of [`IntWeights::sum_row_blocks`]:
    /// its rows quantized into `buf` if they are float, summed, handed to `finish`; a
    /// quantization error is kept in `failed` (the first one) and the block skipped.
    fn sum_block(
        &self,
        x: ActRows<'_>,
        mode: Int8Accumulation,
        (block, b, rows): (usize, usize, usize),
        buf: &mut Vec<u8>,
        failed: &std::sync::OnceLock<QuantError>,
        finish: impl FnOnce(&[i32]),
    ) {
        let (k, o) = (self.k, self.out);
        let (xb, zx) = match x {
            ActRows::Stored(x, zx) => (&x[b * block * k..][..rows * k], zx),
            ActRows::Float(x, qp) => {
                buf.resize(rows * k, 0);
                let src = ndarray::ArrayView1::from(&x[b * block * k..][..rows * k]);
                let mut dst = ndarray::ArrayViewMut1::from(&mut buf[..]);
                if let Err(e) = crate::kernels::quantize_into(&src, qp, &mut dst) {
                    let _ = failed.set(e);
                    return;
                }
                (&buf[..], qp.zero_point())
            }
        };
        // Every sum is written by the product: a reused buffer needs no clearing.
        let mut acc = sums_scratch::take(rows * o);
        self.accumulate_here(xb, rows, zx, mode, &mut acc);
        finish(&acc);
        sums_scratch::give(acc);
    }

    /// The length of an activation row of `T`: `k` rounded up to a multiple of `T::STEP`.
    pub(crate) fn row_len<T: ActRow>(&self) -> usize {
        self.k.next_multiple_of(T::STEP)
    }

    /// `acc[i·out + o] = Σ_t (x[i·k + t] − zx)·(w[o, t] − zw[o])` for `m` rows of stored u8
    /// activations, summed as `mode` says. Large inputs are split across the rayon pool in
    /// fixed row blocks (integer sums: the same result either way).
    #[cfg(test)]
    pub(crate) fn accumulate(
        &self,
        x: &[u8],
        m: usize,
        zx: i32,
        mode: Int8Accumulation,
        acc: &mut [i32],
    ) {
        self.accumulate_split(x, m, zx, mode, acc, true);
    }

    /// [`IntWeights::accumulate`] on the calling thread only (for callers that split the rows
    /// across threads themselves).
    pub(crate) fn accumulate_here(
        &self,
        x: &[u8],
        m: usize,
        zx: i32,
        mode: Int8Accumulation,
        acc: &mut [i32],
    ) {
        self.accumulate_split(x, m, zx, mode, acc, false);
    }

    fn accumulate_split(
        &self,
        x: &[u8],
        m: usize,
        zx: i32,
        mode: Int8Accumulation,
        acc: &mut [i32],
        split: bool,
    ) {
        if mode == Int8Accumulation::Exact && vnni_rows() {
            return self.accumulate_as::<ExactByte>(x, m, zx, acc, split);
        }
        let bytes = match mode {
            Int8Accumulation::Exact => self.bytes_are_exact(x.iter().fold(0, |a, &v| a.max(v))),
            Int8Accumulation::X86Avx2 => true,
        };
        if bytes {
            self.accumulate_as::<u8>(x, m, zx, acc, split);
        } else {
            self.accumulate_as::<i16>(x, m, zx, acc, split);
        }
    }

    fn accumulate_as<T: ActRow>(&self, x: &[u8], m: usize, zx: i32, acc: &mut [i32], split: bool) {
        let (k, out) = (self.k, self.out);
        assert_eq!(x.len(), m * k, "m·k activations");
        assert_eq!(acc.len(), m * out, "m·out accumulators");
        if k == 0 || out == 0 {
            acc.fill(0);
            return;
        }
        let lda = self.row_len::<T>();
        let work = if split {
            m.saturating_mul(k).saturating_mul(out)
        } else {
            0
        };
        let block = rows_per_block(m, work);
        crate::parallel::for_each_block(
            acc,
            block * out,
            work,
            |b, acc_b: &mut [i32], rows: &mut Vec<T>| {
                let mb = acc_b.len() / out;
                rows.clear();
                rows.resize(mb * lda, T::default());
                for (row, xr) in rows
                    .chunks_exact_mut(lda)
                    .zip(x[b * block * k..][..mb * k].chunks_exact(k))
                {
                    for (d, &v) in row.iter_mut().zip(xr) {
                        *d = T::from(v);
                    }
                }
                self.accumulate_rows(rows, mb, lda, zx, acc_b);
            },
        );
    }

    /// `acc[i·out + o]` as [`IntWeights::accumulate`] computes it, from rows of `T` (`i16`:
    /// exact; `u8`: the x86 AVX2 sum, exact when [`IntWeights::bytes_are_exact`]): row `i` is
    /// `a[i·lda..][..k]` with `lda >= row_len::<T>()`; the entries from `k` to `row_len` are
    /// read but meet zero weights. Runs on the calling thread.
    pub(crate) fn accumulate_rows<T: ActRow>(
        &self,
        a: &[T],
        m: usize,
        lda: usize,
        zx: i32,
        acc: &mut [i32],
    ) {
        self.accumulate_rows_of(a, m, lda, zx, 0..self.out, acc);
    }

    /// [`IntWeights::accumulate_rows`] for the channels `chan` only (`chan.start` a multiple
    /// of 16): `acc[i·c + j]` for channel `chan.start + j`, `c = chan.len()`.
    fn accumulate_rows_of<T: ActRow>(
        &self,
        a: &[T],
        m: usize,
        lda: usize,
        zx: i32,
        chan: std::ops::Range<usize>,
        acc: &mut [i32],
    ) {
        let k = self.k;
        let len = self.row_len::<T>();
        assert!(lda >= len, "row stride below the row length");
        assert!(
            m == 0 || a.len() >= (m - 1) * lda + len,
            "m rows of activations"
        );
        assert!(
            chan.start.is_multiple_of(NR) && chan.end <= self.out,
            "whole panels of channels"
        );
        let out = chan.len();
        assert_eq!(acc.len(), m * out, "m·out accumulators");
        if k == 0 || out == 0 {
            acc.fill(0);
            return;
        }
        // The input zero point's contribution starts every sum.
        let sums = if T::STEP == 2 {
            &self.sum_centered
        } else {
            &self.sum_raw
        };
        let init: Vec<i32> = sums[chan.clone()].iter().map(|&s| -zx * s).collect();
        T::gemm(self, chan.start / NR, a, m, lda, &init, acc);
        if T::STEP == 4 && self.any_zero_point {
            // The weights' zero points: − zw·Σ(x − zx), per row.
            for (i, row) in acc.chunks_exact_mut(out).enumerate() {
                let xs = a[i * lda..][..k].iter().map(|&v| v.into()).sum::<i32>() - k as i32 * zx;
                for (a, &zw) in row.iter_mut().zip(&self.zero_points[chan.clone()]) {
                    *a -= zw * xs;
                }
            }
        }
    }
}

impl ActRow for i16 {
    const STEP: usize = 2;

    fn gemm(
        w: &IntWeights,
        panel0: usize,
        a: &[i16],
        m: usize,
        lda: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        let steps = w.k.div_ceil(2);
        let b = &w.centered[panel0 * steps * 2 * NR..];
        #[cfg(target_arch = "x86_64")]
        if let Some(kern) = avx2::Pairs::new() {
            return avx2::gemm(&kern, a, m, lda, b, steps, init, acc);
        }
        drive(&PortablePairs, a, m, lda, b, steps, init, acc);
    }
}

impl ActRow for u8 {
    const STEP: usize = 4;

    fn gemm(
        w: &IntWeights,
        panel0: usize,
        a: &[u8],
        m: usize,
        lda: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        let steps = w.k.div_ceil(4);
        let b = &w.raw[panel0 * steps * 4 * NR..];
        #[cfg(target_arch = "x86_64")]
        if let Some(kern) = avx2::SaturatingQuads::new() {
            return avx2::gemm(&kern, a, m, lda, b, steps, init, acc);
        }
        drive(&PortableSaturatingQuads, a, m, lda, b, steps, init, acc);
    }
}

impl ActRow for ExactByte {
    const STEP: usize = 4;

    fn gemm(
        w: &IntWeights,
        panel0: usize,
        a: &[ExactByte],
        m: usize,
        lda: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        let steps = w.k.div_ceil(4);
        let b = &w.raw[panel0 * steps * 4 * NR..];
        #[cfg(target_arch = "x86_64")]
        if let Some(kern) = vnni::Quads::new() {
            return vnni::gemm(&kern, a, m, lda, b, steps, init, acc);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(kern) = avx2::VnniQuads::new() {
            return avx2::gemm_vnni(&kern, a, m, lda, b, steps, init, acc);
        }
        drive(&PortableExactQuads, a, m, lda, b, steps, init, acc);
    }
}

/// The register tile of a matrix product: for `R <= MR` activation rows and the [`NR`]
/// channels of one weight panel block, the sum over `steps` reduction steps of `STEP`
/// elements each (row `r`'s step `s` at `a[r·lda + STEP·s..][..STEP]`, the channels' at
/// `b[NR·STEP·s..][..NR·STEP]`, channel by channel).
trait Kernel {
    type A: Copy;
    type B: Copy;
    /// Reduction elements per step.
    const STEP: usize;
    /// Rows per full tile (at most 8).
    const MR: usize;
    fn tile<const R: usize>(
        &self,
        a: &[Self::A],
        lda: usize,
        b: &[Self::B],
        steps: usize,
    ) -> [[i32; NR]; R];
}

/// Exact pairs in portable Rust: `x0·w0 + x1·w1` in `i32` (CPUs without AVX2, and the oracle
/// of the AVX2 kernel).
struct PortablePairs;

impl Kernel for PortablePairs {
    type A = i16;
    type B = i16;
    const STEP: usize = 2;
    const MR: usize = 6;

    #[inline(always)]
    fn tile<const R: usize>(
        &self,
        a: &[i16],
        lda: usize,
        b: &[i16],
        steps: usize,
    ) -> [[i32; NR]; R] {
        let mut acc = [[0i32; NR]; R];
        for (t, bt) in b.chunks_exact(2 * NR).take(steps).enumerate() {
            for (r, ar) in acc.iter_mut().enumerate() {
                let x0 = i32::from(a[r * lda + 2 * t]);
                let x1 = i32::from(a[r * lda + 2 * t + 1]);
                for (v, w) in ar.iter_mut().zip(bt.chunks_exact(2)) {
                    *v += x0 * i32::from(w[0]) + x1 * i32::from(w[1]);
                }
            }
        }
        acc
    }
}

/// `x0·w0 + x1·w1` saturated to `i16`, as `vpmaddubsw` does.
#[inline(always)]
fn saturating_pair(x0: u8, x1: u8, w0: i8, w1: i8) -> i32 {
    let p = i32::from(x0) * i32::from(w0) + i32::from(x1) * i32::from(w1);
    p.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// Saturating pairs by quads in portable Rust (CPUs without AVX2, and the oracle of the AVX2
/// kernel).
struct PortableSaturatingQuads;

impl Kernel for PortableSaturatingQuads {
    type A = u8;
    type B = i8;
    const STEP: usize = 4;
    const MR: usize = 4;

    #[inline(always)]
    fn tile<const R: usize>(&self, a: &[u8], lda: usize, b: &[i8], steps: usize) -> [[i32; NR]; R] {
        let mut acc = [[0i32; NR]; R];
        for (s, bs) in b.chunks_exact(4 * NR).take(steps).enumerate() {
            for (r, ar) in acc.iter_mut().enumerate() {
                let x = &a[r * lda + 4 * s..][..4];
                for (v, w) in ar.iter_mut().zip(bs.chunks_exact(4)) {
                    *v += saturating_pair(x[0], x[1], w[0], w[1])
                        + saturating_pair(x[2], x[3], w[2], w[3]);
                }
            }
        }
        acc
    }
}

/// Exact quads in portable Rust: four `u8 × i8` products added in `i32` (the oracle of the
/// VNNI kernel, and the fallback where it cannot run).
struct PortableExactQuads;

impl Kernel for PortableExactQuads {
    type A = ExactByte;
    type B = i8;
    const STEP: usize = 4;
    const MR: usize = 4;

    #[inline(always)]
    fn tile<const R: usize>(
        &self,
        a: &[ExactByte],
        lda: usize,
        b: &[i8],
        steps: usize,
    ) -> [[i32; NR]; R] {
        let mut acc = [[0i32; NR]; R];
        for (s, bs) in b.chunks_exact(4 * NR).take(steps).enumerate() {
            for (r, ar) in acc.iter_mut().enumerate() {
                let x = &a[r * lda + 4 * s..][..4];
                for (v, w) in ar.iter_mut().zip(bs.chunks_exact(4)) {
                    *v += x
                        .iter()
                        .zip(w)
                        .map(|(&x, &w)| i32::from(x.0) * i32::from(w))
                        .sum::<i32>();
                }
            }
        }
        acc
    }
}

/// `kern.tile` for `rows <= 8` rows.
#[inline(always)]
fn tile_rows<K: Kernel>(
    kern: &K,
    rows: usize,
    a: &[K::A],
    lda: usize,
    b: &[K::B],
    steps: usize,
    f: impl FnMut(usize, &[i32; NR]),
) {
    #[inline(always)]
    fn each<const R: usize>(t: [[i32; NR]; R], mut f: impl FnMut(usize, &[i32; NR])) {
        for (i, r) in t.iter().enumerate() {
            f(i, r);
        }
    }
    match rows {
        1 => each(kern.tile::<1>(a, lda, b, steps), f),
        2 => each(kern.tile::<2>(a, lda, b, steps), f),
        3 => each(kern.tile::<3>(a, lda, b, steps), f),
        4 => each(kern.tile::<4>(a, lda, b, steps), f),
        5 => each(kern.tile::<5>(a, lda, b, steps), f),
        6 => each(kern.tile::<6>(a, lda, b, steps), f),
        7 => each(kern.tile::<7>(a, lda, b, steps), f),
        _ => each(kern.tile::<8>(a, lda, b, steps), f),
    }
}

/// The blocked matrix product `acc[i·out + o] = init[o] + Σ` over the steps of row `i` and
/// channel `o`'s panel (`out = init.len()`): row blocks of [`MB`], reduction blocks of [`KC`]
/// steps, then every panel, then tiles of `K::MR` rows (the panel block stays in L1 across
/// the row block's tiles).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn drive<K: Kernel>(
    kern: &K,
    a: &[K::A],
    m: usize,
    lda: usize,
    w: &[K::B],
    steps: usize,
    init: &[i32],
    acc: &mut [i32],
) {
    let out = init.len();
    let (step, panel) = (K::STEP, K::STEP * NR);
    for r0 in (0..m).step_by(MB) {
        let r1 = (r0 + MB).min(m);
        for s0 in (0..steps).step_by(KC) {
            let sc = KC.min(steps - s0);
            for j in 0..out.div_ceil(NR) {
                let b = &w[(j * steps + s0) * panel..][..sc * panel];
                let (c0, cols) = (j * NR, NR.min(out - j * NR));
                let mut r = r0;
                while r < r1 {
                    let rows = K::MR.min(r1 - r);
                    let ar = &a[r * lda + s0 * step..];
                    tile_rows(kern, rows, ar, lda, b, sc, |i, v| {
                        let dst = &mut acc[(r + i) * out + c0..][..cols];
                        if s0 == 0 {
                            for ((d, &s), &i0) in dst.iter_mut().zip(v).zip(&init[c0..]) {
                                *d = i0 + s;
                            }
                        } else {
                            for (d, &s) in dst.iter_mut().zip(v) {
                                *d += s;
                            }
                        }
                    });
                    r += rows;
                }
            }
        }
    }
}

/// The AVX2 kernels, written with intrinsics. For the exact pairs the compiler does not find
/// `vpmaddwd` in the portable tile: it multiplies the broadcast pair with `vpmulld` (eight
/// products per instruction instead of sixteen, plus shuffles), at half the rate. The
/// saturating mode is `vpmaddubsw` itself, the instruction it emulates. The portable kernels
/// are their oracles (`avx2_kernels_equal_the_portable_ones`).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{ExactByte, Kernel, NR, drive};
    use std::arch::x86_64::*;

    /// Exact pairs (`vpmaddwd`). A value exists only where the CPU has AVX2 (its
    /// constructor checks), which makes its safe method sound.
    #[derive(Clone, Copy)]
    pub(super) struct Pairs(());

    impl Pairs {
        pub(super) fn new() -> Option<Self> {
            crate::simd::has_avx2().then_some(Pairs(()))
        }
    }

    /// Saturating pairs by quads (`vpmaddubsw`, then `vpmaddwd` by ones to add each quad's
    /// two pairs in `i32`). Exists only where the CPU has AVX2.
    #[derive(Clone, Copy)]
    pub(super) struct SaturatingQuads(());

    impl SaturatingQuads {
        pub(super) fn new() -> Option<Self> {
            crate::simd::has_avx2().then_some(SaturatingQuads(()))
        }
    }

    /// Exact quads on 256-bit registers (`vpdpbusd` in its VEX encoding: four `u8 × i8`
    /// products added in `i32`, no saturation), for CPUs with AVX-VNNI and no AVX512-VNNI.
    /// Exists only where the CPU has AVX2 and AVX-VNNI.
    #[derive(Clone, Copy)]
    pub(super) struct VnniQuads(());

    impl VnniQuads {
        pub(super) fn new() -> Option<Self> {
            crate::simd::has_avx_vnni().then_some(VnniQuads(()))
        }

        /// The constructor without the environment's say (the tests compare the kernel with
        /// its oracle wherever the CPU can run it).
        #[cfg(test)]
        pub(super) fn on_this_cpu() -> Option<Self> {
            (crate::simd::has_avx2() && std::arch::is_x86_feature_detected!("avxvnni"))
                .then_some(VnniQuads(()))
        }
    }

    impl Kernel for Pairs {
        type A = i16;
        type B = i16;
        const STEP: usize = 2;
        const MR: usize = 6;

        #[inline(always)]
        fn tile<const R: usize>(
            &self,
            a: &[i16],
            lda: usize,
            b: &[i16],
            steps: usize,
        ) -> [[i32; NR]; R] {
            assert!(
                steps == 0 || a.len() >= (R - 1) * lda + 2 * steps,
                "tile rows"
            );
            assert!(b.len() >= 2 * NR * steps, "panel block");
            // SAFETY: a `Pairs` exists only on a CPU with AVX2; the slices hold every element
            // the tile reads (asserted just above).
            unsafe { pairs::<R>(a, lda, b, steps) }
        }
    }

    impl Kernel for SaturatingQuads {
        type A = u8;
        type B = i8;
        const STEP: usize = 4;
        const MR: usize = 4;

        #[inline(always)]
        fn tile<const R: usize>(
            &self,
            a: &[u8],
            lda: usize,
            b: &[i8],
            steps: usize,
        ) -> [[i32; NR]; R] {
            assert!(
                steps == 0 || a.len() >= (R - 1) * lda + 4 * steps,
                "tile rows"
            );
            assert!(b.len() >= 4 * NR * steps, "panel block");
            // SAFETY: a `SaturatingQuads` exists only on a CPU with AVX2; the slices hold
            // every element the tile reads (asserted just above).
            unsafe { saturating_quads::<R>(a, lda, b, steps) }
        }
    }

    impl Kernel for VnniQuads {
        type A = ExactByte;
        type B = i8;
        const STEP: usize = 4;
        // 12 accumulators, two weight registers and a broadcast: 15 of the 16 `ymm`.
        const MR: usize = 6;

        #[inline(always)]
        fn tile<const R: usize>(
            &self,
            a: &[ExactByte],
            lda: usize,
            b: &[i8],
            steps: usize,
        ) -> [[i32; NR]; R] {
            assert!(
                steps == 0 || a.len() >= (R - 1) * lda + 4 * steps,
                "tile rows"
            );
            assert!(b.len() >= 4 * NR * steps, "panel block");
            // SAFETY: a `VnniQuads` exists only on a CPU with AVX2 and AVX-VNNI; the slices
            // hold every element the tile reads (asserted just above).
            unsafe { vnni_quads::<R>(a, lda, b, steps) }
        }
    }

    /// Stores the tile's accumulators.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store<const R: usize>(acc: &[[__m256i; 2]; R]) -> [[i32; NR]; R] {
        unsafe {
            let mut out = [[0i32; NR]; R];
            for (o, v) in out.iter_mut().zip(acc) {
                // SAFETY: `o` holds 16 `i32`: two unaligned 8-lane stores.
                _mm256_storeu_si256(o.as_mut_ptr().cast(), v[0]);
                _mm256_storeu_si256(o.as_mut_ptr().add(8).cast(), v[1]);
            }
            out
        }
    }

    /// # Safety
    /// The CPU must have AVX2; `a` must hold `(R − 1)·lda + 2·steps` values and `b`
    /// `2·NR·steps` (when `steps > 0`).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pairs<const R: usize>(
        a: &[i16],
        lda: usize,
        b: &[i16],
        steps: usize,
    ) -> [[i32; NR]; R] {
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            let (ap, bp) = (a.as_ptr(), b.as_ptr());
            for t in 0..steps {
                // SAFETY (all loads): `t < steps` and `r < R` keep `2·NR·t + 2·NR − 1 <
                // 2·NR·steps` and `r·lda + 2·t + 1 < (R − 1)·lda + 2·steps`, inside the slices
                // (the caller's contract); the loads are unaligned.
                let b0 = _mm256_loadu_si256(bp.add(2 * NR * t).cast());
                let b1 = _mm256_loadu_si256(bp.add(2 * NR * t + NR).cast());
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let x =
                        _mm256_set1_epi32(ap.add(r * lda + 2 * t).cast::<i32>().read_unaligned());
                    acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(x, b0));
                    acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_madd_epi16(x, b1));
                }
            }
            store(&acc)
        }
    }

    /// # Safety
    /// The CPU must have AVX2; `a` must hold `(R − 1)·lda + 4·steps` values and `b`
    /// `4·NR·steps` (when `steps > 0`).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn saturating_quads<const R: usize>(
        a: &[u8],
        lda: usize,
        b: &[i8],
        steps: usize,
    ) -> [[i32; NR]; R] {
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            let ones = _mm256_set1_epi16(1);
            let (ap, bp) = (a.as_ptr(), b.as_ptr());
            for s in 0..steps {
                // SAFETY (all loads): `s < steps` and `r < R` keep `4·NR·s + 4·NR − 1 <
                // 4·NR·steps` and `r·lda + 4·s + 3 < (R − 1)·lda + 4·steps`, inside the slices
                // (the caller's contract); the loads are unaligned.
                let b0 = _mm256_loadu_si256(bp.add(4 * NR * s).cast());
                let b1 = _mm256_loadu_si256(bp.add(4 * NR * s + 2 * NR).cast());
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    // The u8 operand first: `vpmaddubsw` multiplies unsigned by signed bytes.
                    let x =
                        _mm256_set1_epi32(ap.add(r * lda + 4 * s).cast::<i32>().read_unaligned());
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones);
                    acc_r[0] = _mm256_add_epi32(acc_r[0], p0);
                    acc_r[1] = _mm256_add_epi32(acc_r[1], p1);
                }
            }
            store(&acc)
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and AVX-VNNI; `a` must hold `(R − 1)·lda + 4·steps` values and
    /// `b` `4·NR·steps` (when `steps > 0`).
    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    unsafe fn vnni_quads<const R: usize>(
        a: &[ExactByte],
        lda: usize,
        b: &[i8],
        steps: usize,
    ) -> [[i32; NR]; R] {
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            // `ExactByte` is `repr(transparent)` over `u8`.
            let (ap, bp) = (a.as_ptr().cast::<u8>(), b.as_ptr());
            for s in 0..steps {
                // SAFETY (all loads): as in `saturating_quads`, the same layout.
                let b0 = _mm256_loadu_si256(bp.add(4 * NR * s).cast());
                let b1 = _mm256_loadu_si256(bp.add(4 * NR * s + 2 * NR).cast());
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    // The u8 operand second: `vpdpbusd` multiplies unsigned by signed bytes.
                    let x =
                        _mm256_set1_epi32(ap.add(r * lda + 4 * s).cast::<i32>().read_unaligned());
                    acc_r[0] = _mm256_dpbusd_avx_epi32(acc_r[0], x, b0);
                    acc_r[1] = _mm256_dpbusd_avx_epi32(acc_r[1], x, b1);
                }
            }
            store(&acc)
        }
    }

    /// The kernels whose values exist only on a CPU with AVX2.
    pub(super) trait Avx2Kernel: Kernel {}
    impl Avx2Kernel for Pairs {}
    impl Avx2Kernel for SaturatingQuads {}

    /// [`drive`] compiled for AVX2 (the kernel value proves the CPU has it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm<K: Avx2Kernel>(
        kern: &K,
        a: &[K::A],
        m: usize,
        lda: usize,
        w: &[K::B],
        steps: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        /// # Safety
        /// The CPU must have AVX2.
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn run<K: Kernel>(
            kern: &K,
            a: &[K::A],
            m: usize,
            lda: usize,
            w: &[K::B],
            steps: usize,
            init: &[i32],
            acc: &mut [i32],
        ) {
            drive(kern, a, m, lda, w, steps, init, acc);
        }
        // SAFETY: an `Avx2Kernel` value exists only on a CPU with AVX2.
        unsafe { run(kern, a, m, lda, w, steps, init, acc) };
    }

    /// [`drive`] compiled for AVX2 and AVX-VNNI (so the tile inlines into the loops).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_vnni(
        kern: &VnniQuads,
        a: &[ExactByte],
        m: usize,
        lda: usize,
        w: &[i8],
        steps: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        /// # Safety
        /// The CPU must have AVX2 and AVX-VNNI.
        #[target_feature(enable = "avx2,avxvnni")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn run(
            kern: &VnniQuads,
            a: &[ExactByte],
            m: usize,
            lda: usize,
            w: &[i8],
            steps: usize,
            init: &[i32],
            acc: &mut [i32],
        ) {
            drive(kern, a, m, lda, w, steps, init, acc);
        }
        // SAFETY: a `VnniQuads` value exists only on a CPU with AVX2 and AVX-VNNI.
        unsafe { run(kern, a, m, lda, w, steps, init, acc) };
    }
}

/// The AVX512-VNNI kernel: `vpdpbusd` on 512-bit registers, one register per row holding the
/// [`NR`] = 16 channels of a panel (a panel's quad step is one 64-byte load), eight rows per
/// tile (eight independent accumulator chains hide the instruction's latency). The portable
/// exact quads are its oracle (`vnni_kernel_equals_the_portable_one`).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni {
    use super::{ExactByte, Kernel, NR};
    #[cfg(test)]
    use super::{MB, drive};
    use std::arch::x86_64::*;

    /// Exact quads (`vpdpbusd`). A value exists only where the CPU has AVX512F, AVX512BW and
    /// AVX512-VNNI (its constructor checks), which makes its safe method sound.
    #[derive(Clone, Copy)]
    pub(super) struct Quads(());

    impl Quads {
        pub(super) fn new() -> Option<Self> {
            crate::simd::has_avx512_vnni().then_some(Quads(()))
        }
    }

    impl Kernel for Quads {
        type A = ExactByte;
        type B = i8;
        const STEP: usize = 4;
        const MR: usize = 8;

        #[inline(always)]
        fn tile<const R: usize>(
            &self,
            a: &[ExactByte],
            lda: usize,
            b: &[i8],
            steps: usize,
        ) -> [[i32; NR]; R] {
            assert!(
                steps == 0 || a.len() >= (R - 1) * lda + 4 * steps,
                "tile rows"
            );
            assert!(b.len() >= 4 * NR * steps, "panel block");
            // SAFETY: a `Quads` exists only on a CPU with AVX512F/BW/VNNI; the slices hold
            // every element the tile reads (asserted just above).
            unsafe { quads::<R>(a, lda, b, steps) }
        }
    }

    /// # Safety
    /// The CPU must have AVX512F, AVX512BW and AVX512-VNNI; `a` must hold
    /// `(R − 1)·lda + 4·steps` values and `b` `4·NR·steps` (when `steps > 0`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn quads<const R: usize>(
        a: &[ExactByte],
        lda: usize,
        b: &[i8],
        steps: usize,
    ) -> [[i32; NR]; R] {
        unsafe {
            let mut acc = [_mm512_setzero_si512(); R];
            // `ExactByte` is `repr(transparent)` over `u8`.
            let (ap, bp) = (a.as_ptr().cast::<u8>(), b.as_ptr());
            for s in 0..steps {
                // SAFETY (all loads): `s < steps` and `r < R` keep `4·NR·s + 4·NR − 1 <
                // 4·NR·steps` and `r·lda + 4·s + 3 < (R − 1)·lda + 4·steps`, inside the slices
                // (the caller's contract); the loads are unaligned.
                let w = _mm512_loadu_si512(bp.add(4 * NR * s).cast());
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    // The u8 operand first: `vpdpbusd` multiplies unsigned by signed bytes.
                    let x =
                        _mm512_set1_epi32(ap.add(r * lda + 4 * s).cast::<i32>().read_unaligned());
                    *acc_r = _mm512_dpbusd_epi32(*acc_r, x, w);
                }
            }
            let mut out = [[0i32; NR]; R];
            for (o, v) in out.iter_mut().zip(&acc) {
                // SAFETY: `o` holds 16 `i32`: one unaligned 16-lane store.
                _mm512_storeu_si512(o.as_mut_ptr().cast(), *v);
            }
            out
        }
    }

    /// Two panels' tile: `R` rows × 32 channels (panels `b0` and `b1`), two weight loads and
    /// `R` broadcasts per quad step for `2·R` `vpdpbusd`.
    ///
    /// # Safety
    /// The CPU must have AVX512F, AVX512BW and AVX512-VNNI; `a` must hold
    /// `(R − 1)·lda + 4·steps` values, `b0` and `b1` `4·NR·steps` each (when `steps > 0`).
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn quads2<const R: usize>(
        a: &[ExactByte],
        lda: usize,
        b0: &[i8],
        b1: &[i8],
        steps: usize,
    ) -> [[[i32; NR]; 2]; R] {
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            let (ap, p0, p1) = (a.as_ptr().cast::<u8>(), b0.as_ptr(), b1.as_ptr());
            // One pointer per row, so the loop's addresses are `row + 4·s` (not a chain of
            // `+ lda` per row and step).
            let rows: [*const u8; R] = std::array::from_fn(|r| ap.wrapping_add(r * lda));
            for s in 0..steps {
                // SAFETY (all loads): as in `quads`, for both panels (the caller's contract).
                let w0 = _mm512_loadu_si512(p0.add(4 * NR * s).cast());
                let w1 = _mm512_loadu_si512(p1.add(4 * NR * s).cast());
                for (row, acc_r) in rows.iter().zip(acc.iter_mut()) {
                    let x = _mm512_set1_epi32(row.add(4 * s).cast::<i32>().read_unaligned());
                    acc_r[0] = _mm512_dpbusd_epi32(acc_r[0], x, w0);
                    acc_r[1] = _mm512_dpbusd_epi32(acc_r[1], x, w1);
                }
            }
            let mut out = [[[0i32; NR]; 2]; R];
            for (o, v) in out.iter_mut().zip(&acc) {
                // SAFETY: `o` holds two rows of 16 `i32`: unaligned 16-lane stores.
                _mm512_storeu_si512(o[0].as_mut_ptr().cast(), v[0]);
                _mm512_storeu_si512(o[1].as_mut_ptr().cast(), v[1]);
            }
            out
        }
    }

    /// The blocked product of [`drive`] with tiles of two panels (32 channels) by up to 8
    /// rows: half the broadcasts per multiply-accumulate of one-panel tiles. An odd last panel
    /// runs as a pair with itself, its second half dropped.
    ///
    /// # Safety
    /// The CPU must have AVX512F, AVX512BW and AVX512-VNNI; `a`, `w`, `init` and `acc` as
    /// [`drive`] reads them.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn drive_pairs(
        a: &[ExactByte],
        m: usize,
        lda: usize,
        w: &[i8],
        steps: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        const MR: usize = 8;
        // Quad steps per block: a row block (MB rows) and a panel pair's block, 24 KiB and
        // 16 KiB, stay in L1 together.
        const KC: usize = 128;
        let out = init.len();
        let panel = 4 * NR;
        let panels = out.div_ceil(NR);
        let mut write = |r: usize, c0: usize, first: bool, v: &[i32; NR]| {
            let cols = NR.min(out - c0);
            let dst = &mut acc[r * out + c0..][..cols];
            if first {
                for ((d, &s), &i0) in dst.iter_mut().zip(v).zip(&init[c0..]) {
                    *d = i0 + s;
                }
            } else {
                for (d, &s) in dst.iter_mut().zip(v) {
                    *d += s;
                }
            }
        };
        for r0 in (0..m).step_by(MB) {
            let r1 = (r0 + MB).min(m);
            for s0 in (0..steps).step_by(KC) {
                let sc = KC.min(steps - s0);
                let mut j = 0;
                while j < panels {
                    let two = j + 1 < panels;
                    let b0 = &w[(j * steps + s0) * panel..][..sc * panel];
                    let b1 = if two {
                        &w[((j + 1) * steps + s0) * panel..][..sc * panel]
                    } else {
                        b0
                    };
                    let mut r = r0;
                    while r < r1 {
                        let rows = MR.min(r1 - r);
                        let ar = &a[r * lda + s0 * 4..];
                        assert!(
                            sc == 0 || ar.len() >= (rows - 1) * lda + 4 * sc,
                            "tile rows"
                        );
                        let mut emit = |t: &[[[i32; NR]; 2]]| {
                            for (i, v) in t.iter().enumerate() {
                                write(r + i, j * NR, s0 == 0, &v[0]);
                                if two {
                                    write(r + i, (j + 1) * NR, s0 == 0, &v[1]);
                                }
                            }
                        };
                        // SAFETY: the CPU has AVX512F/BW/VNNI (this function's contract); the
                        // rows and panel blocks hold what the tile reads (asserted and sliced
                        // above).
                        unsafe {
                            match rows {
                                1 => emit(&quads2::<1>(ar, lda, b0, b1, sc)),
                                2 => emit(&quads2::<2>(ar, lda, b0, b1, sc)),
                                3 => emit(&quads2::<3>(ar, lda, b0, b1, sc)),
                                4 => emit(&quads2::<4>(ar, lda, b0, b1, sc)),
                                5 => emit(&quads2::<5>(ar, lda, b0, b1, sc)),
                                6 => emit(&quads2::<6>(ar, lda, b0, b1, sc)),
                                7 => emit(&quads2::<7>(ar, lda, b0, b1, sc)),
                                _ => emit(&quads2::<8>(ar, lda, b0, b1, sc)),
                            }
                        }
                        r += rows;
                    }
                    j += if two { 2 } else { 1 };
                }
            }
        }
    }

    /// Rows of a packed-activation tile.
    const PR: usize = 12;
    /// Quad steps per block: a packed row panel (12 KiB) stays in L1 while the weight panels
    /// stream past it from L2.
    const PKC: usize = 256;
    /// Rows packed at a time (whole tiles).
    const PMC: usize = 32 * PR;
    /// Quad steps ahead the weight panels are prefetched.
    const PF: usize = 8;
    /// Weight panels per channel block (an even number: 512 channels, whose panels for a
    /// block of steps stay in L2 while every tile of rows passes over them).
    const PNB: usize = 32;

    /// Packs rows `r0..r0 + mc`, quad steps `s0..s0 + sc`, of the activation rows into panels
    /// of [`PR`] rows: panel `t`, step `s`, row `i` at `((t·sc + s)·PR + i)·4`; rows past `mc`
    /// are zero.
    fn pack_rows(
        a: &[ExactByte],
        lda: usize,
        r0: usize,
        mc: usize,
        s0: usize,
        sc: usize,
        dst: &mut Vec<u8>,
    ) {
        let panels = mc.div_ceil(PR);
        dst.resize(panels * sc * PR * 4, 0);
        for t in 0..panels {
            let panel = &mut dst[t * sc * PR * 4..][..sc * PR * 4];
            let rows = PR.min(mc - t * PR);
            for i in 0..PR {
                let steps = panel.chunks_exact_mut(4 * PR);
                if i < rows {
                    let src = &a[(r0 + t * PR + i) * lda + 4 * s0..][..4 * sc];
                    for (d, q) in steps.zip(src.chunks_exact(4)) {
                        // Four bytes at a time (one 32-bit move each way).
                        let d: &mut [u8; 4] = (&mut d[4 * i..4 * i + 4]).try_into().expect("4");
                        *d = [q[0].0, q[1].0, q[2].0, q[3].0];
                    }
                } else {
                    for d in steps {
                        d[4 * i..4 * i + 4].fill(0);
                    }
                }
            }
        }
    }

    /// `acc[i·out + o] = init[o] + Σ` over the quad steps of row `i` and channel `o`'s panel:
    /// per block of at most [`PKC`] quad steps and [`PMC`] rows, every tile of [`PR`] rows
    /// against every pair of weight panels (12 rows × 32 channels, 24 accumulators, the
    /// weights prefetched ahead), the sums added to `acc` in `i32` (exact, whatever the
    /// blocking). A last partial tile reads its rows packed, zero-padded.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm(
        _kern: &Quads,
        a: &[ExactByte],
        m: usize,
        lda: usize,
        w: &[i8],
        steps: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        assert!(m == 0 || a.len() >= (m - 1) * lda + 4 * steps, "m rows");
        assert!(lda >= 4 * steps, "row stride");
        let out = init.len();
        let panels = out.div_ceil(NR);
        assert!(w.len() >= panels * steps * 4 * NR, "panels");
        assert_eq!(acc.len(), m * out, "m·out accumulators");
        // No steps: nothing to add (the callers handle an empty reduction themselves, as
        // `drive` leaves `acc` alone).
        if m == 0 || out == 0 || steps == 0 {
            return;
        }
        let panel = 4 * NR;
        let mut ap = Vec::new();
        // Blocks of at most `PKC` steps, as even as whole quads allow (no short last block).
        let per = steps.div_ceil(steps.div_ceil(PKC));
        for s0 in (0..steps).step_by(per) {
            let sc = per.min(steps - s0);
            for i0 in (0..m).step_by(PMC) {
                let mc = PMC.min(m - i0);
                // Whole tiles read the rows where they are (packing them all into contiguous
                // broadcasts measured slower: the packing's strided stores cost more than they
                // saved); a last partial tile is packed, with zero rows past the end.
                let full = mc / PR;
                if full < mc.div_ceil(PR) {
                    pack_rows(a, lda, i0 + full * PR, mc - full * PR, s0, sc, &mut ap);
                }
                for jb in (0..panels).step_by(PNB) {
                    for t in 0..mc.div_ceil(PR) {
                        let r = i0 + t * PR;
                        let rows = PR.min(mc - t * PR);
                        let (apanel, strides): (&[u8], _) = if t < full {
                            let start = r * lda + 4 * s0;
                            let bytes = (PR - 1) * lda + 4 * sc;
                            (bytes_of(&a[start..][..bytes]), (lda, 4))
                        } else {
                            (&ap[(t - full) * sc * PR * 4..][..sc * PR * 4], (4, 4 * PR))
                        };
                        let mut j = jb;
                        while j < panels.min(jb + PNB) {
                            let two = j + 1 < panels;
                            let b0 = &w[(j * steps + s0) * panel..][..sc * panel];
                            let b1 = if two {
                                &w[((j + 1) * steps + s0) * panel..][..sc * panel]
                            } else {
                                b0
                            };
                            let c0 = j * NR;
                            let cols = (2 * NR).min(out - c0);
                            let origin = r * out + c0;
                            let span = (rows - 1) * out + cols;
                            // SAFETY: a `Quads` value exists only on a CPU with AVX512F/BW/VNNI;
                            // the slices hold what the tile reads and writes (sliced above: the
                            // rows `(PR − 1)·rs + 4·sc` bytes or the panel `sc·PR·4`, `b0`/`b1`
                            // `sc·64`, the outputs `(rows − 1)·out + cols` from the tile's origin,
                            // `init` `cols`).
                            let args = (
                                apanel,
                                strides,
                                (b0, b1, sc),
                                &mut acc[origin..][..span],
                                out,
                                cols,
                                (s0 == 0).then_some(&init[c0..][..cols]),
                            );
                            // A short last tile runs with its own number of rows (a batch of
                            // one costs one row, not twelve).
                            unsafe {
                                match rows {
                                    1 => tile_rows::<1>(args),
                                    2 => tile_rows::<2>(args),
                                    3 => tile_rows::<3>(args),
                                    4 => tile_rows::<4>(args),
                                    5 => tile_rows::<5>(args),
                                    6 => tile_rows::<6>(args),
                                    7 => tile_rows::<7>(args),
                                    8 => tile_rows::<8>(args),
                                    9 => tile_rows::<9>(args),
                                    10 => tile_rows::<10>(args),
                                    11 => tile_rows::<11>(args),
                                    _ => tile_rows::<PR>(args),
                                }
                            }
                            j += 2;
                        }
                    }
                }
            }
        }
    }

    /// The bytes of activation rows.
    fn bytes_of(a: &[ExactByte]) -> &[u8] {
        // SAFETY: `ExactByte` is `repr(transparent)` over `u8`: the same bytes, length and
        // alignment.
        unsafe { std::slice::from_raw_parts(a.as_ptr().cast::<u8>(), a.len()) }
    }

    /// The arguments of [`tile_rows`]: the rows and their strides, the two weight panels and
    /// their quad steps, the outputs and their stride, the channels, the initial sums.
    type TileArgs<'a> = (
        &'a [u8],
        (usize, usize),
        (&'a [i8], &'a [i8], usize),
        &'a mut [i32],
        usize,
        usize,
        Option<&'a [i32]>,
    );

    /// One tile of [`gemm`]: `R <= PR` rows (quad step `s` of row `i` at
    /// `a[i·rs + s·ss..][..4]`) × the 32 channels of panels `b0`, `b1` over `sc` quad steps;
    /// channels `< cols` are added to `c` (row `i` at `i·ldc`), or to `init` when given (the
    /// first block).
    ///
    /// # Safety
    /// The CPU must have AVX512F, AVX512BW and AVX512-VNNI; `a` must hold
    /// `(R − 1)·rs + (sc − 1)·ss + 4` bytes, `b0` and `b1` `sc·64`, `c` `(R − 1)·ldc + cols`
    /// values, `init` (if any) `cols`; `1 <= cols <= 32`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_rows<const R: usize>(
        (a, (rs, ss), (b0, b1, sc), c, ldc, cols, init): TileArgs<'_>,
    ) {
        unsafe {
            let (ap, p0, p1) = (a.as_ptr(), b0.as_ptr(), b1.as_ptr());
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            for s in 0..sc {
                // SAFETY (all loads): `s < sc` and `i < R` keep `64·s + 63 < 64·sc` and
                // `i·rs + s·ss + 3` inside `a` (the caller's contract); a prefetch past the end
                // never faults.
                _mm_prefetch::<_MM_HINT_T0>(p0.wrapping_add(4 * NR * (s + PF)).cast());
                _mm_prefetch::<_MM_HINT_T0>(p1.wrapping_add(4 * NR * (s + PF)).cast());
                let w0 = _mm512_loadu_si512(p0.add(4 * NR * s).cast());
                let w1 = _mm512_loadu_si512(p1.add(4 * NR * s).cast());
                let q = ap.add(ss * s);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    // The u8 operand first: `vpdpbusd` multiplies unsigned by signed bytes.
                    let x = _mm512_set1_epi32(q.add(rs * i).cast::<i32>().read_unaligned());
                    acc_i[0] = _mm512_dpbusd_epi32(acc_i[0], x, w0);
                    acc_i[1] = _mm512_dpbusd_epi32(acc_i[1], x, w1);
                }
            }
            let m0: __mmask16 = if cols >= NR {
                0xffff
            } else {
                (1u16 << cols) - 1
            };
            let m1: __mmask16 = if cols >= 2 * NR {
                0xffff
            } else if cols > NR {
                (1u16 << (cols - NR)) - 1
            } else {
                0
            };
            let cp = c.as_mut_ptr();
            let (base0, base1) = match init {
                Some(init) => (
                    _mm512_maskz_loadu_epi32(m0, init.as_ptr()),
                    _mm512_maskz_loadu_epi32(m1, init.as_ptr().add(NR)),
                ),
                None => (_mm512_setzero_si512(), _mm512_setzero_si512()),
            };
            for (i, acc_i) in acc.iter().enumerate() {
                // SAFETY: row `i < R` of the tile starts at `i·ldc`; the masks keep the
                // lanes below `cols`, inside `c` (the caller's contract); masked-off lanes are
                // neither read nor written.
                let r = cp.add(i * ldc);
                let (v0, v1) = if init.is_some() {
                    (base0, base1)
                } else {
                    (
                        _mm512_maskz_loadu_epi32(m0, r),
                        _mm512_maskz_loadu_epi32(m1, r.add(NR)),
                    )
                };
                _mm512_mask_storeu_epi32(r, m0, _mm512_add_epi32(v0, acc_i[0]));
                _mm512_mask_storeu_epi32(r.add(NR), m1, _mm512_add_epi32(v1, acc_i[1]));
            }
        }
    }

    /// The product with two-panel tiles on unpacked rows ([`drive_pairs`]): the oracle of
    /// [`gemm`] in the tests.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_pairs(
        _kern: &Quads,
        a: &[ExactByte],
        m: usize,
        lda: usize,
        w: &[i8],
        steps: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        assert!(m == 0 || a.len() >= (m - 1) * lda + 4 * steps, "m rows");
        assert!(
            w.len() >= init.len().div_ceil(NR) * steps * 4 * NR,
            "panels"
        );
        assert_eq!(acc.len(), m * init.len(), "m·out accumulators");
        // SAFETY: a `Quads` value exists only on a CPU with AVX512F/BW/VNNI; the slices hold
        // what the product reads (asserted above).
        unsafe { drive_pairs(a, m, lda, w, steps, init, acc) };
    }

    /// [`drive`] with one-panel tiles, compiled for AVX512-VNNI: the oracle of
    /// [`drive_pairs`] in the tests.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_one_panel(
        kern: &Quads,
        a: &[ExactByte],
        m: usize,
        lda: usize,
        w: &[i8],
        steps: usize,
        init: &[i32],
        acc: &mut [i32],
    ) {
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn run(
            kern: &Quads,
            a: &[ExactByte],
            m: usize,
            lda: usize,
            w: &[i8],
            steps: usize,
            init: &[i32],
            acc: &mut [i32],
        ) {
            drive(kern, a, m, lda, w, steps, init, acc);
        }
        // SAFETY: a `Quads` value exists only on a CPU with AVX512F/BW/VNNI.
        unsafe { run(kern, a, m, lda, w, steps, init, acc) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        let mut r = crate::rng::Lcg::new(*seed);
        *seed = r.next_u64();
        *seed >> 33
    }

    /// The exact sum written out, the oracle of both kernels.
    fn reference(x: &[u8], m: usize, k: usize, w: &[i8], zw: &[i32], zx: i32) -> Vec<i64> {
        let out = zw.len();
        let mut r = Vec::new();
        for i in 0..m {
            for o in 0..out {
                r.push(
                    (0..k)
                        .map(|t| {
                            (i64::from(x[i * k + t]) - i64::from(zx))
                                * (i64::from(w[o * k + t]) - i64::from(zw[o]))
                        })
                        .sum(),
                );
            }
        }
        r
    }

    /// The x86 AVX2 sum written out: pairs of stored values saturated to `i16`, summed in
    /// `i64`, then the zero points' contributions.
    fn saturating_reference(
        x: &[u8],
        m: usize,
        k: usize,
        w: &[i8],
        zw: &[i32],
        zx: i32,
    ) -> Vec<i64> {
        let out = zw.len();
        let mut r = Vec::new();
        for i in 0..m {
            let xr = &x[i * k..][..k];
            let xs: i64 =
                xr.iter().map(|&v| i64::from(v)).sum::<i64>() - (k as i64) * i64::from(zx);
            for o in 0..out {
                let wr = &w[o * k..][..k];
                let mut s = 0i64;
                for t in (0..k).step_by(2) {
                    let mut p = i64::from(xr[t]) * i64::from(wr[t]);
                    if t + 1 < k {
                        p += i64::from(xr[t + 1]) * i64::from(wr[t + 1]);
                    }
                    s += p.clamp(-32768, 32767);
                }
                let sw: i64 = wr.iter().map(|&v| i64::from(v)).sum();
                r.push(s - i64::from(zx) * sw - i64::from(zw[o]) * xs);
            }
        }
        r
    }

    /// `(m, k, out)`: every tile-height remainder (6 and 4 rows), row blocks (48), reduction
    /// blocks (256 pairs), odd `k`, panel remainders (16 channels) and empty shapes.
    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (3, 7, 5),
        (2, 33, 9),
        (4, 64, 4),
        (1, 0, 3),
        (0, 5, 2),
        (5, 18, 16),
        (7, 9, 17),
        (13, 144, 32),
        (49, 31, 33),
        (97, 517, 15),
        (50, 1030, 18),
    ];

    fn case(seed: &mut u64, m: usize, k: usize, out: usize) -> (Vec<u8>, Vec<i8>, Vec<i32>) {
        let x: Vec<u8> = (0..m * k).map(|_| lcg(seed) as u8).collect();
        let w: Vec<i8> = (0..out * k).map(|_| lcg(seed) as i8).collect();
        let zw: Vec<i32> = (0..out).map(|o| (o as i32 % 3) - 1).collect();
        (x, w, zw)
    }

    #[test]
    fn exact_mode_equals_the_exact_sum_at_every_shape() {
        let mut seed = 7;
        for &(m, k, out) in SHAPES {
            let (x, w, zw) = case(&mut seed, m, k, out);
            let iw = IntWeights::new("t", &w, out, k, &zw).expect("weights");
            // Full-range activations (i16 rows) and 7-bit ones (u8 rows: no pair saturates).
            let x7: Vec<u8> = x.iter().map(|&v| v & 127).collect();
            for x in [&x, &x7] {
                for zx in [0, 17, 255] {
                    let mut acc = vec![0; m * out];
                    iw.accumulate(x, m, zx, Int8Accumulation::Exact, &mut acc);
                    let got: Vec<i64> = acc.iter().map(|&a| i64::from(a)).collect();
                    assert_eq!(
                        got,
                        reference(x, m, k, &w, &zw, zx),
                        "m={m} k={k} out={out} zx={zx}"
                    );
                }
            }
        }
    }

    #[test]
    fn emulated_mode_equals_the_pairwise_saturating_sum_at_every_shape() {
        let mut seed = 11;
        for &(m, k, out) in SHAPES {
            let (x, w, zw) = case(&mut seed, m, k, out);
            for zw in [vec![0; out], zw] {
                let iw = IntWeights::new("t", &w, out, k, &zw).expect("weights");
                for zx in [0, 128] {
                    let mut acc = vec![0; m * out];
                    iw.accumulate(&x, m, zx, Int8Accumulation::X86Avx2, &mut acc);
                    let got: Vec<i64> = acc.iter().map(|&a| i64::from(a)).collect();
                    assert_eq!(
                        got,
                        saturating_reference(&x, m, k, &w, &zw, zx),
                        "m={m} k={k} out={out} zx={zx} zw={:?}",
                        &zw[..out.min(3)]
                    );
                }
            }
        }
    }

    /// `m` rows of `x` widened to `T`, `lda` apart, the padding filled with `fill`.
    fn rows<T: ActRow>(x: &[u8], m: usize, k: usize, lda: usize, fill: T) -> Vec<T> {
        let mut a = vec![fill; m * lda];
        for i in 0..m {
            for t in 0..k {
                a[i * lda + t] = T::from(x[i * k + t]);
            }
        }
        a
    }

    #[test]
    fn a_range_of_channels_gives_those_columns_of_the_whole_sum() {
        fn check<T: ActRow>(iw: &IntWeights, x: &[u8], m: usize, k: usize, zx: i32) {
            let lda = iw.row_len::<T>();
            let a = rows::<T>(x, m, k, lda, T::default());
            let out = iw.out;
            let mut whole = vec![0; m * out];
            iw.accumulate_rows(&a, m, lda, zx, &mut whole);
            for chan in [0..out, 16..out, 0..16.min(out), 32..out.min(47)] {
                if chan.start >= chan.end {
                    continue;
                }
                let mut part = vec![0; m * chan.len()];
                iw.accumulate_rows_of(&a, m, lda, zx, chan.clone(), &mut part);
                for i in 0..m {
                    assert_eq!(
                        part[i * chan.len()..][..chan.len()],
                        whole[i * out + chan.start..][..chan.len()],
                        "row {i}, channels {chan:?}"
                    );
                }
            }
        }
        let mut seed = 41;
        for &(m, k, out) in &[(5, 70, 47), (13, 300, 64), (30, 9, 33)] {
            let (x, w, zw) = case(&mut seed, m, k, out);
            let iw = IntWeights::new("t", &w, out, k, &zw).expect("weights");
            check::<i16>(&iw, &x, m, k, 7);
            check::<u8>(&iw, &x, m, k, 7);
            check::<ExactByte>(&iw, &x, m, k, 7);
        }
    }

    #[test]
    fn rows_with_a_wider_stride_and_any_padding_give_the_same_sums() {
        let mut seed = 5;
        let (m, k, out) = (11, 23, 20);
        let (x, w, zw) = case(&mut seed, m, k, out);
        let iw = IntWeights::new("t", &w, out, k, &zw).expect("weights");
        let (mut by_rows, mut by_x) = (vec![0; m * out], vec![0; m * out]);
        let lda = iw.row_len::<i16>() + 5;
        iw.accumulate_rows(&rows::<i16>(&x, m, k, lda, 255), m, lda, 9, &mut by_rows);
        iw.accumulate(&x, m, 9, Int8Accumulation::Exact, &mut by_x);
        assert_eq!(by_rows, by_x, "exact");
        let lda = iw.row_len::<u8>() + 3;
        iw.accumulate_rows(&rows::<u8>(&x, m, k, lda, 255), m, lda, 9, &mut by_rows);
        iw.accumulate(&x, m, 9, Int8Accumulation::X86Avx2, &mut by_x);
        assert_eq!(by_rows, by_x, "x86 avx2");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_equal_the_portable_ones() {
        let Some((pairs, quads)) = avx2::Pairs::new().zip(avx2::SaturatingQuads::new()) else {
            return; // no AVX2 on this CPU: nothing to compare
        };
        let mut seed = 13;
        for &(m, k, out) in SHAPES {
            let (x, w, zw) = case(&mut seed, m, k, out);
            let iw = IntWeights::new("t", &w, out, k, &zw).expect("weights");
            let init: Vec<i32> = (0..out as i32).map(|o| o * 1000 - 7).collect();
            for extra in [0, 3] {
                let lda = iw.row_len::<i16>() + extra;
                let a = rows::<i16>(&x, m, k, lda, 77);
                let (mut portable, mut fast) = (vec![0; m * out], vec![0; m * out]);
                let steps = k.div_ceil(2);
                drive(
                    &PortablePairs,
                    &a,
                    m,
                    lda,
                    &iw.centered,
                    steps,
                    &init,
                    &mut portable,
                );
                avx2::gemm(&pairs, &a, m, lda, &iw.centered, steps, &init, &mut fast);
                assert_eq!(fast, portable, "pairs m={m} k={k} out={out} lda={lda}");

                let lda = iw.row_len::<u8>() + extra;
                let a = rows::<u8>(&x, m, k, lda, 201);
                let steps = k.div_ceil(4);
                drive(
                    &PortableSaturatingQuads,
                    &a,
                    m,
                    lda,
                    &iw.raw,
                    steps,
                    &init,
                    &mut portable,
                );
                avx2::gemm(&quads, &a, m, lda, &iw.raw, steps, &init, &mut fast);
                assert_eq!(fast, portable, "quads m={m} k={k} out={out} lda={lda}");
            }
        }
    }

    #[test]
    fn exact_byte_rows_give_the_exact_sum_whatever_the_input() {
        // Full-range activations and weights at the ends: pairs that would saturate in i16
        // are exact by quads (the portable kernel here; the VNNI one below).
        let mut seed = 19;
        for &(m, k, out) in SHAPES.iter().chain(&[(9, 260, 33), (17, 1030, 18)]) {
            let (mut x, mut w, zw) = case(&mut seed, m, k, out);
            for v in x.iter_mut().step_by(3) {
                *v = 255;
            }
            for v in w.iter_mut().step_by(2) {
                *v = -128;
            }
            let iw = IntWeights::new("t", &w, out, k, &zw).expect("weights");
            for zx in [0, 17, 255] {
                let lda = iw.row_len::<ExactByte>() + 5;
                let a = rows::<ExactByte>(&x, m, k, lda, ExactByte(99));
                let mut acc = vec![0; m * out];
                iw.accumulate_rows(&a, m, lda, zx, &mut acc);
                let got: Vec<i64> = acc.iter().map(|&a| i64::from(a)).collect();
                assert_eq!(
                    got,
                    reference(&x, m, k, &w, &zw, zx),
                    "m={m} k={k} out={out}"
                );
            }
        }
    }

    /// Runs `fast(a, m, lda, raw weights, steps, init, acc)` (the kernel called `label`)
    /// against the portable exact quads over `SHAPES` and `more`, two row strides each, with
    /// full-range activations and weights where `full_range` (pairs that would saturate in
    /// `i16`).
    #[cfg(target_arch = "x86_64")]
    fn exact_quads_agree(
        label: &str,
        (seed, more, full_range): (u64, &[(usize, usize, usize)], bool),
        mut fast: impl FnMut(&[ExactByte], usize, usize, &[i8], usize, &[i32], &mut [i32]),
    ) {
        let mut seed = seed;
        for &(m, k, out) in SHAPES.iter().chain(more) {
            let (mut x, mut w, zw) = case(&mut seed, m, k, out);
            if full_range {
                x.iter_mut().step_by(3).for_each(|v| *v = 255);
                w.iter_mut().step_by(2).for_each(|v| *v = -128);
            }
            let iw = IntWeights::new("t", &w, out, k, &zw).expect("weights");
            let init: Vec<i32> = (0..out as i32).map(|o| o * 1000 - 7).collect();
            for extra in [0, 3] {
                let lda = iw.row_len::<ExactByte>() + extra;
                let a = rows::<ExactByte>(&x, m, k, lda, ExactByte(201));
                let steps = k.div_ceil(4);
                let (mut portable, mut got) = (vec![0; m * out], vec![0; m * out]);
                drive(
                    &PortableExactQuads,
                    &a,
                    m,
                    lda,
                    &iw.raw,
                    steps,
                    &init,
                    &mut portable,
                );
                fast(&a, m, lda, &iw.raw, steps, &init, &mut got);
                assert_eq!(got, portable, "{label} m={m} k={k} out={out} lda={lda}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_kernel_equals_the_portable_one() {
        let Some(kern) = vnni::Quads::new() else {
            return; // no AVX512-VNNI on this CPU (or QNUMERIC_NO_VNNI): nothing to compare
        };
        let more = [
            (9, 260, 33),
            (50, 1030, 18),
            (8, 4, 16),
            (13, 1100, 47),
            (100, 64, 64),
            (205, 1100, 47),
            (260, 2070, 70),
        ];
        let cases = (23, &more[..], false);
        exact_quads_agree("vnni", cases, |a, m, lda, w, steps, init, acc| {
            vnni::gemm(&kern, a, m, lda, w, steps, init, acc);
        });
        exact_quads_agree("vnni one panel", cases, |a, m, lda, w, steps, init, acc| {
            vnni::gemm_one_panel(&kern, a, m, lda, w, steps, init, acc);
        });
        exact_quads_agree(
            "vnni unpacked pairs",
            cases,
            |a, m, lda, w, steps, init, acc| {
                vnni::gemm_pairs(&kern, a, m, lda, w, steps, init, acc);
            },
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_vnni_kernel_equals_the_portable_one() {
        let Some(kern) = avx2::VnniQuads::on_this_cpu() else {
            return; // no AVX-VNNI on this CPU: nothing to compare
        };
        let more = [(9, 260, 33), (50, 1030, 18), (13, 1100, 47)];
        exact_quads_agree(
            "avx-vnni",
            (29, &more, true),
            |a, m, lda, w, steps, init, acc| {
                avx2::gemm_vnni(&kern, a, m, lda, w, steps, init, acc);
            },
        );
    }

    #[test]
    fn emulated_mode_saturates_pairs_and_equals_exact_when_nothing_saturates() {
        // 64 inputs at 255 and weights at 127: each pair is 64770, saturated to 32767; the
        // documented PyTorch figure is a Linear returning 32 quanta instead of 64.
        let (k, out) = (64, 1);
        let x = vec![255u8; k];
        let w = vec![127i8; k];
        let iw = IntWeights::new("t", &w, out, k, &[0]).expect("weights");
        let mut acc = [0];
        iw.accumulate(&x, 1, 0, Int8Accumulation::X86Avx2, &mut acc);
        assert_eq!(acc[0], 32 * 32767);
        iw.accumulate(&x, 1, 0, Int8Accumulation::Exact, &mut acc);
        assert_eq!(acc[0], 64 * 255 * 127);
        // 7-bit activations never saturate: both modes agree (odd k pads the last pair).
        let mut seed = 3;
        let (m, k, out) = (3, 31, 6);
        let x: Vec<u8> = (0..m * k).map(|_| (lcg(&mut seed) % 128) as u8).collect();
        let w: Vec<i8> = (0..out * k).map(|_| lcg(&mut seed) as i8).collect();
        let iw = IntWeights::new("t", &w, out, k, &vec![0; out]).expect("weights");
        let (mut a, mut b) = (vec![0; m * out], vec![0; m * out]);
        iw.accumulate(&x, m, 5, Int8Accumulation::Exact, &mut a);
        iw.accumulate(&x, m, 5, Int8Accumulation::X86Avx2, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn bytes_are_exact_only_where_no_pair_can_saturate() {
        // Largest pair |64| + |−64| = 128: 255·128 = 32 640 fits i16.
        let iw = IntWeights::new("t", &[64, -64, 3, 1], 1, 4, &[0]).expect("weights");
        assert!(iw.bytes_are_exact(255));
        // Largest pair 127 + 2 = 129: 255·129 = 32 895 does not; 254·129 = 32 766 does.
        let iw = IntWeights::new("t", &[127, 2, 5], 1, 3, &[0]).expect("weights");
        assert!(!iw.bytes_are_exact(255));
        assert!(iw.bytes_are_exact(254));
        // −128 with −128: 7-bit activations still never saturate (127·256 = 32 512).
        let iw = IntWeights::new("t", &[-128, -128], 1, 2, &[0]).expect("weights");
        assert!(iw.bytes_are_exact(127));
        assert!(!iw.bytes_are_exact(128));
        let x = vec![255u8, 255, 127, 127];
        let mut acc = [0, 0];
        iw.accumulate(&x, 2, 0, Int8Accumulation::Exact, &mut acc);
        assert_eq!(acc, [-2 * 255 * 128, -2 * 127 * 128]);
    }

    #[test]
    fn accumulator_overflow_is_refused() {
        // 2·255·127·k > 2^31 − 1 for k = 33_200.
        let k = 33_200;
        let w = vec![127i8; k];
        assert!(matches!(
            IntWeights::new("t", &w, 1, k, &[0]),
            Err(QuantError::AccumulatorOverflow { channel: 0, .. })
        ));
    }
}
