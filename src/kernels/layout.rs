//! Layout drivers: run an element operation over any ndarray layout.
//!
//! This is the only place that thinks about memory order and vectorisation. Kernels give two
//! forms of their operation: a *run* over contiguous slices (the hot loop, compiled through
//! [`simd::dispatch`](crate::simd::dispatch)) and an *element* function for the strided
//! fallback (`Zip`). The drivers take the slice path whenever input and output share a
//! memory order.
//!
//! Half-precision inputs and outputs are converted in blocks of [`BLOCK`] elements with the
//! `half` crate's vectorised slice conversions, so the `f32` loop between them stays the same.

use ndarray::{ArrayRef, Axis, Dimension, Zip};

use crate::element::QFloat;
use crate::parallel::{CHUNK, chunks_mut, chunks2, chunks3};
use crate::simd::dispatched;

/// Elements per conversion block (fits comfortably in L1 as f32).
pub(crate) const BLOCK: usize = 512;

/// `os[i] = f(xs[i] as f32)`; returns whether `xs` held a NaN (found in the same pass).
#[inline(always)]
fn run_from_float_body<F: QFloat, B>(xs: &[F], os: &mut [B], f: impl Fn(f32) -> B) -> bool {
    let mut nan = false;
    if let Some(xf) = F::as_f32_slice(xs) {
        for (o, &v) in os.iter_mut().zip(xf) {
            *o = f(v);
            nan |= is_nan(v);
        }
        return nan;
    }
    let mut buf = [0.0f32; BLOCK];
    for (xc, oc) in xs.chunks(BLOCK).zip(os.chunks_mut(BLOCK)) {
        let b = &mut buf[..xc.len()];
        F::slice_to_compute(xc, b);
        for (o, &v) in oc.iter_mut().zip(b.iter()) {
            *o = f(v);
            nan |= is_nan(v);
        }
    }
    nan
}

/// `v != v`: true only for NaN (a compare that vectorises, unlike an early exit).
#[inline(always)]
#[allow(clippy::eq_op)]
fn is_nan(v: f32) -> bool {
    v != v
}

/// `os[i] = F::from(f(xs[i]))`.
#[inline(always)]
fn run_to_float_body<A: Copy, F: QFloat>(xs: &[A], os: &mut [F], f: impl Fn(A) -> f32) {
    if let Some(of) = F::as_f32_slice_mut(os) {
        for (o, &v) in of.iter_mut().zip(xs) {
            *o = f(v);
        }
        return;
    }
    let mut buf = [0.0f32; BLOCK];
    for (xc, oc) in xs.chunks(BLOCK).zip(os.chunks_mut(BLOCK)) {
        let b = &mut buf[..xc.len()];
        for (o, &v) in b.iter_mut().zip(xc) {
            *o = f(v);
        }
        F::slice_from_compute(b, oc);
    }
}

/// `os[i] = F::from(f(xs[i] as f32))`; returns whether `xs` held a NaN.
#[inline(always)]
fn run_float_body<F: QFloat>(xs: &[F], os: &mut [F], f: impl Fn(f32) -> f32) -> bool {
    let mut nan = false;
    if let (Some(xf), Some(of)) = (F::as_f32_slice(xs), F::as_f32_slice_mut(os)) {
        for (o, &v) in of.iter_mut().zip(xf) {
            *o = f(v);
            nan |= is_nan(v);
        }
        return nan;
    }
    let mut buf = [0.0f32; BLOCK];
    for (xc, oc) in xs.chunks(BLOCK).zip(os.chunks_mut(BLOCK)) {
        let b = &mut buf[..xc.len()];
        F::slice_to_compute(xc, b);
        for v in b.iter_mut() {
            nan |= is_nan(*v);
            *v = f(*v);
        }
        F::slice_from_compute(b, oc);
    }
    nan
}

/// `xs[i] = F::from(f(xs[i] as f32))` in place.
#[inline(always)]
fn run_float_inplace_body<F: QFloat>(xs: &mut [F], f: impl Fn(f32) -> f32) {
    if let Some(xf) = F::as_f32_slice_mut(xs) {
        for v in xf.iter_mut() {
            *v = f(*v);
        }
        return;
    }
    let mut buf = [0.0f32; BLOCK];
    for xc in xs.chunks_mut(BLOCK) {
        let b = &mut buf[..xc.len()];
        F::slice_to_compute(xc, b);
        for v in b.iter_mut() {
            *v = f(*v);
        }
        F::slice_from_compute(b, xc);
    }
}

/// Straight-through backward: `os[i] = if m(xs[i]) { gs[i] } else { 0 }`; returns whether
/// `xs` held a NaN.
#[inline(always)]
fn run_mask_select_body<F: QFloat>(
    xs: &[F],
    gs: &[F],
    os: &mut [F],
    m: impl Fn(f32) -> bool,
) -> bool {
    let mut nan = false;
    if let Some(xf) = F::as_f32_slice(xs) {
        for ((o, &v), &g) in os.iter_mut().zip(xf).zip(gs) {
            *o = if m(v) { g } else { F::zero() };
            nan |= is_nan(v);
        }
        return nan;
    }
    let mut buf = [0.0f32; BLOCK];
    for ((xc, gc), oc) in xs
        .chunks(BLOCK)
        .zip(gs.chunks(BLOCK))
        .zip(os.chunks_mut(BLOCK))
    {
        let b = &mut buf[..xc.len()];
        F::slice_to_compute(xc, b);
        for ((o, &v), &g) in oc.iter_mut().zip(b.iter()).zip(gc) {
            *o = if m(v) { g } else { F::zero() };
            nan |= is_nan(v);
        }
    }
    nan
}

dispatched!(
    /// `os[i] = f(xs[i] as f32)`; returns whether `xs` held a NaN.
    pub(crate) fn run_from_float[F: QFloat, B, G: Fn(f32) -> B](xs: &[F], os: &mut [B], f: G) -> bool = run_from_float_body
);
dispatched!(
    /// `os[i] = F::from(f(xs[i]))`.
    pub(crate) fn run_to_float[A: Copy, F: QFloat, G: Fn(A) -> f32](xs: &[A], os: &mut [F], f: G) = run_to_float_body
);
dispatched!(
    /// `os[i] = F::from(f(xs[i] as f32))`; returns whether `xs` held a NaN.
    pub(crate) fn run_float[F: QFloat, G: Fn(f32) -> f32](xs: &[F], os: &mut [F], f: G) -> bool = run_float_body
);
dispatched!(
    /// `xs[i] = F::from(f(xs[i] as f32))`.
    pub(crate) fn run_float_inplace[F: QFloat, G: Fn(f32) -> f32](xs: &mut [F], f: G) = run_float_inplace_body
);
dispatched!(
    /// `os[i] = if m(xs[i]) { gs[i] } else { 0 }`; returns whether `xs` held a NaN.
    pub(crate) fn run_mask_select[F: QFloat, M: Fn(f32) -> bool](xs: &[F], gs: &[F], os: &mut [F], m: M) -> bool = run_mask_select_body
);
dispatched!(
    /// Whether a slice holds a NaN.
    pub(crate) fn any_nan_slice[F: QFloat](xs: &[F]) -> bool = any_nan_slice_body
);
dispatched!(
    /// Rows of `c` elements; elements `g0..g0 + params.len()` of each row processed with
    /// `params`.
    fn run_rows[A: Copy, B, P: Copy, E: Fn(P, A) -> B](xs: &[A], os: &mut [B], c: usize, g0: usize, params: &[P], elem: &E) = run_rows_body
);

#[inline(always)]
fn run_rows_body<A: Copy, B, P: Copy, E: Fn(P, A) -> B>(
    xs: &[A],
    os: &mut [B],
    c: usize,
    g0: usize,
    params: &[P],
    elem: &E,
) {
    let g = params.len();
    for (orow, xrow) in os.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
        for ((o, &v), &p) in orow[g0..g0 + g]
            .iter_mut()
            .zip(&xrow[g0..g0 + g])
            .zip(params)
        {
            *o = elem(p, v);
        }
    }
}

/// Runs `run` over the whole arrays when they share a memory order, else `elem` per element.
#[inline(always)]
pub(crate) fn drive<A: Copy + Sync, B: Send, D: Dimension>(
    x: &ArrayRef<A, D>,
    out: &mut ArrayRef<B, D>,
    run: impl Fn(&[A], &mut [B]) + Sync + Send,
    elem: impl Fn(A) -> B,
) {
    debug_assert_eq!(x.shape(), out.shape());
    if x.strides() == out.strides()
        && let (Some(xs), Some(os)) = (x.as_slice_memory_order(), out.as_slice_memory_order_mut())
    {
        chunks2(xs, os, run);
        return;
    }
    Zip::from(out).and(x).for_each(|o, &v| *o = elem(v));
}

/// In-place version of [`drive`].
#[inline(always)]
pub(crate) fn drive_inplace<A: Copy + Send, D: Dimension>(
    x: &mut ArrayRef<A, D>,
    run: impl Fn(&mut [A]) + Sync + Send,
    elem: impl Fn(A) -> A,
) {
    if let Some(xs) = x.as_slice_memory_order_mut() {
        chunks_mut(xs, run);
        return;
    }
    x.map_inplace(|v| *v = elem(*v));
}

/// Two-input version of [`drive`].
#[inline(always)]
pub(crate) fn drive2<A: Copy + Sync, G: Copy + Sync, B: Send, D: Dimension>(
    x: &ArrayRef<A, D>,
    g: &ArrayRef<G, D>,
    out: &mut ArrayRef<B, D>,
    run: impl Fn(&[A], &[G], &mut [B]) + Sync + Send,
    elem: impl Fn(A, G) -> B,
) {
    if x.strides() == out.strides()
        && g.strides() == out.strides()
        && let (Some(xs), Some(gs), Some(os)) = (
            x.as_slice_memory_order(),
            g.as_slice_memory_order(),
            out.as_slice_memory_order_mut(),
        )
    {
        chunks3(xs, gs, os, run);
        return;
    }
    Zip::from(out)
        .and(x)
        .and(g)
        .for_each(|o, &u, &v| *o = elem(u, v));
}

/// Per-channel driver: element `x[.., c, ..]` (index `c` on `axis`) is processed with
/// `param(c)`, for `channels` channels. Allocation-free: parameters are built per run of one
/// channel (`inner` contiguous elements, through `run`), or, with the channel on the last axis,
/// for groups of [`GROUP`] channels at a time kept on the stack (rows through `elem`). Other
/// layouts use `Zip` per channel.
#[inline(always)]
pub(crate) fn drive_per_channel<A: Copy + Sync, B: Send, P: Copy + Sync, D: Dimension>(
    x: &ArrayRef<A, D>,
    out: &mut ArrayRef<B, D>,
    axis: usize,
    channels: usize,
    param: impl Fn(usize) -> P + Sync + Send,
    run: impl Fn(P, &[A], &mut [B]) + Sync + Send,
    elem: impl Fn(P, A) -> B + Sync + Send,
) {
    debug_assert_eq!(x.shape(), out.shape());
    debug_assert_eq!(x.shape()[axis], channels);
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let c = channels;
    if let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) {
        if xs.is_empty() {
            return;
        }
        if inner == 1 {
            // Blocks of whole rows (each starts at channel 0), at least 64 rows so that each
            // group's parameters, built once per block, serve many rows.
            let rows_per_block = (CHUNK / c).max(64);
            chunks_indexed2(xs, os, rows_per_block.saturating_mul(c), |_, xc, oc| {
                let mut group = [param(0); GROUP];
                for g0 in (0..c).step_by(GROUP) {
                    let g = (c - g0).min(GROUP);
                    for (k, p) in group[..g].iter_mut().enumerate() {
                        *p = param(g0 + k);
                    }
                    run_rows(xc, oc, c, g0, &group[..g], &elem);
                }
            });
        } else {
            // Runs of one channel; each chunk holds whole runs and knows its first run index.
            let runs_per_chunk = (CHUNK / inner).max(1);
            chunks_indexed2(xs, os, runs_per_chunk * inner, |first, xc, oc| {
                let first_run = first / inner;
                for (r, (xrun, orun)) in xc
                    .chunks_exact(inner)
                    .zip(oc.chunks_exact_mut(inner))
                    .enumerate()
                {
                    run(param((first_run + r) % c), xrun, orun);
                }
            });
        }
        return;
    }
    let xd = x.view().into_dyn();
    let mut od = out.view_mut().into_dyn();
    for ch in 0..c {
        let p = param(ch);
        let xv = xd.index_axis(Axis(axis), ch);
        let mut ov = od.index_axis_mut(Axis(axis), ch);
        Zip::from(&mut ov)
            .and(&xv)
            .for_each(|o, &v| *o = elem(p, v));
    }
}

/// Channels whose parameters are kept on the stack at once on the last-axis path.
pub(crate) const GROUP: usize = 64;

/// Per-channel parameters as arrays indexed by channel (structure of arrays): the scale,
/// `1 / scale` and the integer zero point of every channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelArrays<'a> {
    pub scale: &'a [f32],
    pub inv: &'a [f32],
    pub zp: &'a [i32],
}

impl<'a> ChannelArrays<'a> {
    /// The arrays of `qp`, whose integer zero points are `zp`.
    pub(crate) fn new(qp: &'a crate::qparams::PerChannelQParams, zp: &'a [i32]) -> Self {
        ChannelArrays {
            scale: qp.scales(),
            inv: qp.inv_scales(),
            zp,
        }
    }

    /// The parameters of channel `ch`.
    #[inline(always)]
    pub(crate) fn get(&self, ch: usize) -> (f32, f32, i32) {
        (self.scale[ch], self.inv[ch], self.zp[ch])
    }
}

/// [`drive_per_channel`] for operations parameterised by [`ChannelArrays`]. With the channel on
/// the last axis of a standard-layout array the walk is row-major: every row of `c` elements is
/// zipped with the parameter arrays (read from cache), through `rows` over chunks of whole
/// rows. Nothing is built per call, so the walk streams like a per-tensor kernel.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive_per_channel_arrays<A: Copy + Sync, B: Send, D: Dimension>(
    x: &ArrayRef<A, D>,
    out: &mut ArrayRef<B, D>,
    axis: usize,
    p: ChannelArrays<'_>,
    rows: impl Fn(&[A], &mut [B], ChannelArrays<'_>) + Sync + Send,
    run: impl Fn((f32, f32, i32), &[A], &mut [B]) + Sync + Send,
    elem: impl Fn((f32, f32, i32), A) -> B + Sync + Send,
) {
    let c = p.scale.len();
    debug_assert!(p.inv.len() == c && p.zp.len() == c);
    let inner: usize = x.shape()[axis + 1..].iter().product();
    if inner == 1
        && c > 1
        && let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut())
    {
        let rows_per_chunk = last_axis_rows_per_chunk(c);
        chunks_indexed2(xs, os, rows_per_chunk.saturating_mul(c), |_, xc, oc| {
            rows(xc, oc, p)
        });
        return;
    }
    drive_per_channel(x, out, axis, c, |ch| p.get(ch), run, elem);
}

/// One row segment: `os[i] = e(scale[i], inv[i], zp[i], xs[i])`; returns whether `xs` held a
/// NaN. All slices have the length of `xs`.
#[inline(always)]
fn segment_from_f32<B, E: Fn(f32, f32, i32, f32) -> B>(
    xs: &[f32],
    os: &mut [B],
    scale: &[f32],
    inv: &[f32],
    zp: &[i32],
    e: &E,
) -> bool {
    let n = xs.len();
    let (os, scale, inv, zp) = (&mut os[..n], &scale[..n], &inv[..n], &zp[..n]);
    let mut nan = false;
    for i in 0..n {
        let v = xs[i];
        os[i] = e(scale[i], inv[i], zp[i], v);
        nan |= is_nan(v);
    }
    nan
}

/// Up to this many channels the last-axis walk is row-major: the parameter arrays (12 bytes
/// per channel) stay in L1 while rows stream past them.
const ROW_MAJOR_MAX: usize = 2048;

/// With more channels, the walk goes tile by tile: [`TILE`] channels (1.5 KiB of parameters,
/// in L1) across [`TILE_ROWS`] rows, then the next tile. Measured on this project's machine
/// (docs/performance.md): row-major with the arrays in L2 runs at 0.4–0.5 of the copy
/// baseline; tiles over 4 rows at 0.6–1.1, and 128 channels beat 256 at every channel count
/// from 4096 to 65 536 (by 0.1–0.25 of copy; 64 was no better, 8 or 16 rows and wider tiles
/// lose).
const TILE: usize = 128;
const TILE_ROWS: usize = 4;

/// Rows per chunk handed to a row kernel (chunk boundaries depend only on `c`).
#[inline(always)]
fn last_axis_rows_per_chunk(c: usize) -> usize {
    if c <= ROW_MAJOR_MAX {
        (CHUNK / c).max(1)
    } else {
        TILE_ROWS
    }
}

/// Calls `seg(x_segment, out_segment, first_channel)` for every row of `c` elements: whole rows
/// in order when `c <= ROW_MAJOR_MAX`, else tile by tile (every row of the chunk for one tile
/// of channels, then the next tile).
#[inline(always)]
fn for_tiles<A, B>(xs: &[A], os: &mut [B], c: usize, mut seg: impl FnMut(&[A], &mut [B], usize)) {
    let tile = if c <= ROW_MAJOR_MAX { c } else { TILE };
    for t0 in (0..c).step_by(tile) {
        let t1 = (t0 + tile).min(c);
        for (xrow, orow) in xs.chunks_exact(c).zip(os.chunks_exact_mut(c)) {
            seg(&xrow[t0..t1], &mut orow[t0..t1], t0);
        }
    }
}

/// Rows of `c = p.scale.len()` elements, element `j` of a row processed with channel `j`'s
/// parameters: `os = e(scale, inv, zp, xs as f32)`. Returns whether `xs` held a NaN.
#[inline(always)]
fn rows_from_float_body<F: QFloat, B, E: Fn(f32, f32, i32, f32) -> B>(
    xs: &[F],
    os: &mut [B],
    p: ChannelArrays<'_>,
    e: &E,
) -> bool {
    let c = p.scale.len();
    let mut nan = false;
    let mut buf = [0.0f32; BLOCK];
    for_tiles(xs, os, c, |xt, ot, t0| {
        if let Some(xf) = F::as_f32_slice(xt) {
            let at = t0;
            nan |= segment_from_f32(xf, ot, &p.scale[at..], &p.inv[at..], &p.zp[at..], e);
            return;
        }
        for (j, (xc, oc)) in xt.chunks(BLOCK).zip(ot.chunks_mut(BLOCK)).enumerate() {
            let b = &mut buf[..xc.len()];
            F::slice_to_compute(xc, b);
            let at = t0 + j * BLOCK;
            nan |= segment_from_f32(b, oc, &p.scale[at..], &p.inv[at..], &p.zp[at..], e);
        }
    });
    nan
}

/// [`rows_from_float`] with a float output of the input's type.
#[inline(always)]
fn rows_float_body<F: QFloat, E: Fn(f32, f32, i32, f32) -> f32>(
    xs: &[F],
    os: &mut [F],
    p: ChannelArrays<'_>,
    e: &E,
) -> bool {
    let c = p.scale.len();
    if let Some(of) = F::as_f32_slice_mut(os) {
        return rows_from_float_body(xs, of, p, e);
    }
    let mut nan = false;
    let mut buf = [0.0f32; BLOCK];
    let mut res = [0.0f32; BLOCK];
    for_tiles(xs, os, c, |xt, ot, t0| {
        for (j, (xc, oc)) in xt.chunks(BLOCK).zip(ot.chunks_mut(BLOCK)).enumerate() {
            let (b, r) = (&mut buf[..xc.len()], &mut res[..xc.len()]);
            F::slice_to_compute(xc, b);
            let at = t0 + j * BLOCK;
            nan |= segment_from_f32(b, r, &p.scale[at..], &p.inv[at..], &p.zp[at..], e);
            F::slice_from_compute(r, oc);
        }
    });
    nan
}

/// Rows of `c` elements to float: `os = F::from(e(scale, inv, zp, xs))`.
#[inline(always)]
fn rows_to_float_body<A: Copy, F: QFloat, E: Fn(f32, f32, i32, A) -> f32>(
    xs: &[A],
    os: &mut [F],
    p: ChannelArrays<'_>,
    e: &E,
) {
    #[inline(always)]
    fn segment<A: Copy, E: Fn(f32, f32, i32, A) -> f32>(
        xs: &[A],
        os: &mut [f32],
        scale: &[f32],
        inv: &[f32],
        zp: &[i32],
        e: &E,
    ) {
        let n = xs.len();
        let (os, scale, inv, zp) = (&mut os[..n], &scale[..n], &inv[..n], &zp[..n]);
        for i in 0..n {
            os[i] = e(scale[i], inv[i], zp[i], xs[i]);
        }
    }
    let c = p.scale.len();
    let mut buf = [0.0f32; BLOCK];
    for_tiles(xs, os, c, |xt, ot, t0| {
        if let Some(of) = F::as_f32_slice_mut(ot) {
            segment(xt, of, &p.scale[t0..], &p.inv[t0..], &p.zp[t0..], e);
            return;
        }
        for (j, (xc, oc)) in xt.chunks(BLOCK).zip(ot.chunks_mut(BLOCK)).enumerate() {
            let b = &mut buf[..xc.len()];
            let at = t0 + j * BLOCK;
            segment(xc, b, &p.scale[at..], &p.inv[at..], &p.zp[at..], e);
            F::slice_from_compute(b, oc);
        }
    });
}

dispatched!(
    /// Rows of `p.scale.len()` channels, float input; returns whether `xs` held a NaN.
    pub(crate) fn rows_from_float[F: QFloat, B, E: Fn(f32, f32, i32, f32) -> B](xs: &[F], os: &mut [B], p: ChannelArrays<'_>, e: &E) -> bool = rows_from_float_body
);
dispatched!(
    /// Rows of `p.scale.len()` channels, float in and out; returns whether `xs` held a NaN.
    pub(crate) fn rows_float[F: QFloat, E: Fn(f32, f32, i32, f32) -> f32](xs: &[F], os: &mut [F], p: ChannelArrays<'_>, e: &E) -> bool = rows_float_body
);
dispatched!(
    /// Rows of `p.scale.len()` channels to float.
    pub(crate) fn rows_to_float[A: Copy, F: QFloat, E: Fn(f32, f32, i32, A) -> f32](xs: &[A], os: &mut [F], p: ChannelArrays<'_>, e: &E) = rows_to_float_body
);

/// Two-input version of [`drive_per_channel`] (runs of one channel for standard layouts,
/// `Zip` otherwise).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive2_per_channel<
    A: Copy + Sync,
    G: Copy + Sync,
    B: Send,
    P: Copy + Sync,
    D: Dimension,
>(
    x: &ArrayRef<A, D>,
    g: &ArrayRef<G, D>,
    out: &mut ArrayRef<B, D>,
    axis: usize,
    channels: usize,
    param: impl Fn(usize) -> P + Sync + Send,
    run: impl Fn(P, &[A], &[G], &mut [B]) + Sync + Send,
    elem: impl Fn(P, A, G) -> B,
) {
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let c = channels;
    if let (Some(xs), Some(gs), Some(os)) = (x.as_slice(), g.as_slice(), out.as_slice_mut()) {
        if xs.is_empty() {
            return;
        }
        let runs_per_chunk = (CHUNK / inner).max(1);
        let chunk = runs_per_chunk * inner;
        chunks_indexed3(xs, gs, os, chunk, |first, xc, gc, oc| {
            let first_run = first / inner;
            for (r, ((xrun, grun), orun)) in xc
                .chunks_exact(inner)
                .zip(gc.chunks_exact(inner))
                .zip(oc.chunks_exact_mut(inner))
                .enumerate()
            {
                run(param((first_run + r) % c), xrun, grun, orun);
            }
        });
        return;
    }
    let xd = x.view().into_dyn();
    let gd = g.view().into_dyn();
    let mut od = out.view_mut().into_dyn();
    for ch in 0..c {
        let p = param(ch);
        let xv = xd.index_axis(Axis(axis), ch);
        let gv = gd.index_axis(Axis(axis), ch);
        let mut ov = od.index_axis_mut(Axis(axis), ch);
        Zip::from(&mut ov)
            .and(&xv)
            .and(&gv)
            .for_each(|o, &u, &v| *o = elem(p, u, v));
    }
}

/// `f(start, x_chunk, out_chunk)` over chunks of `chunk` elements (the last may be shorter),
/// in parallel for large slices with the `rayon` feature.
#[inline(always)]
fn chunks_indexed2<A: Sync, B: Send>(
    xs: &[A],
    os: &mut [B],
    chunk: usize,
    f: impl Fn(usize, &[A], &mut [B]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    if crate::parallel::parallel(xs.len()) {
        use rayon::prelude::*;
        xs.par_chunks(chunk)
            .zip(os.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(i, (a, b))| f(i * chunk, a, b));
        return;
    }
    for (i, (a, b)) in xs.chunks(chunk).zip(os.chunks_mut(chunk)).enumerate() {
        f(i * chunk, a, b);
    }
}

/// Three-slice version of [`chunks_indexed2`].
#[inline(always)]
fn chunks_indexed3<A: Sync, G: Sync, B: Send>(
    xs: &[A],
    gs: &[G],
    os: &mut [B],
    chunk: usize,
    f: impl Fn(usize, &[A], &[G], &mut [B]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    if crate::parallel::parallel(xs.len()) {
        use rayon::prelude::*;
        xs.par_chunks(chunk)
            .zip(gs.par_chunks(chunk))
            .zip(os.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(i, ((a, g), b))| f(i * chunk, a, g, b));
        return;
    }
    for (i, ((a, g), b)) in xs
        .chunks(chunk)
        .zip(gs.chunks(chunk))
        .zip(os.chunks_mut(chunk))
        .enumerate()
    {
        f(i * chunk, a, g, b);
    }
}

/// Logical (row-major) index of the first NaN in `x`, if any.
pub(crate) fn find_nan<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Option<usize> {
    let any = if let Some(xs) = x.as_slice_memory_order() {
        crate::parallel::map_fold(xs, any_nan_slice, false, |a, b| a | b)
    } else {
        x.iter().any(|v| v.is_nan())
    };
    if any {
        x.iter().position(|v| v.is_nan())
    } else {
        None
    }
}

/// Whether a slice holds a NaN; written so that it vectorises (no early exit per element).
#[inline(always)]
fn any_nan_slice_body<F: QFloat>(xs: &[F]) -> bool {
    const CHUNK: usize = 4096;
    for block in xs.chunks(CHUNK) {
        let mut acc = false;
        for &v in block {
            // `v != v` is true only for NaN.
            #[allow(clippy::eq_op)]
            {
                acc |= v != v;
            }
        }
        if acc {
            return true;
        }
    }
    false
}
