//! Layout drivers: run an element operation over any ndarray layout.
//!
//! This is the only place that thinks about memory order and vectorisation. Kernels give two
//! forms of their operation: a *run* over contiguous slices (the hot loop, compiled through
//! [`simd::dispatch`](super::simd::dispatch)) and an *element* function for the strided
//! fallback (`Zip`). The drivers take the slice path whenever input and output share a
//! memory order.
//!
//! Half-precision inputs and outputs are converted in blocks of [`BLOCK`] elements with the
//! `half` crate's vectorised slice conversions, so the `f32` loop between them stays the same.

use ndarray::{ArrayRef, Axis, Dimension, Zip};

use super::simd::dispatched;
use crate::element::QFloat;
use crate::parallel::{chunks2, chunks3, chunks_mut, CHUNK};

/// Elements per conversion block (fits comfortably in L1 as f32).
pub(crate) const BLOCK: usize = 512;

/// `os[i] = f(xs[i] as f32)`.
#[inline(always)]
fn run_from_float_body<F: QFloat, B>(xs: &[F], os: &mut [B], f: impl Fn(f32) -> B) {
    if let Some(xf) = F::as_f32_slice(xs) {
        for (o, &v) in os.iter_mut().zip(xf) {
            *o = f(v);
        }
        return;
    }
    let mut buf = [0.0f32; BLOCK];
    for (xc, oc) in xs.chunks(BLOCK).zip(os.chunks_mut(BLOCK)) {
        let b = &mut buf[..xc.len()];
        F::slice_to_compute(xc, b);
        for (o, &v) in oc.iter_mut().zip(b.iter()) {
            *o = f(v);
        }
    }
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

/// `os[i] = F::from(f(xs[i] as f32))`.
#[inline(always)]
fn run_float_body<F: QFloat>(xs: &[F], os: &mut [F], f: impl Fn(f32) -> f32) {
    if let (Some(xf), Some(of)) = (F::as_f32_slice(xs), F::as_f32_slice_mut(os)) {
        for (o, &v) in of.iter_mut().zip(xf) {
            *o = f(v);
        }
        return;
    }
    let mut buf = [0.0f32; BLOCK];
    for (xc, oc) in xs.chunks(BLOCK).zip(os.chunks_mut(BLOCK)) {
        let b = &mut buf[..xc.len()];
        F::slice_to_compute(xc, b);
        for v in b.iter_mut() {
            *v = f(*v);
        }
        F::slice_from_compute(b, oc);
    }
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

/// Straight-through backward: `os[i] = if m(xs[i]) { gs[i] } else { 0 }`.
#[inline(always)]
fn run_mask_select_body<F: QFloat>(xs: &[F], gs: &[F], os: &mut [F], m: impl Fn(f32) -> bool) {
    if let Some(xf) = F::as_f32_slice(xs) {
        for ((o, &v), &g) in os.iter_mut().zip(xf).zip(gs) {
            *o = if m(v) { g } else { F::zero() };
        }
        return;
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
        }
    }
}

dispatched!(
    /// `os[i] = f(xs[i] as f32)`.
    pub(crate) fn run_from_float[F: QFloat, B, G: Fn(f32) -> B](xs: &[F], os: &mut [B], f: G) = run_from_float_body
);
dispatched!(
    /// `os[i] = F::from(f(xs[i]))`.
    pub(crate) fn run_to_float[A: Copy, F: QFloat, G: Fn(A) -> f32](xs: &[A], os: &mut [F], f: G) = run_to_float_body
);
dispatched!(
    /// `os[i] = F::from(f(xs[i] as f32))`.
    pub(crate) fn run_float[F: QFloat, G: Fn(f32) -> f32](xs: &[F], os: &mut [F], f: G) = run_float_body
);
dispatched!(
    /// `xs[i] = F::from(f(xs[i] as f32))`.
    pub(crate) fn run_float_inplace[F: QFloat, G: Fn(f32) -> f32](xs: &mut [F], f: G) = run_float_inplace_body
);
dispatched!(
    /// `os[i] = if m(xs[i]) { gs[i] } else { 0 }`.
    pub(crate) fn run_mask_select[F: QFloat, M: Fn(f32) -> bool](xs: &[F], gs: &[F], os: &mut [F], m: M) = run_mask_select_body
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
    if x.strides() == out.strides() {
        if let (Some(xs), Some(os)) = (x.as_slice_memory_order(), out.as_slice_memory_order_mut()) {
            chunks2(xs, os, run);
            return;
        }
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
    if x.strides() == out.strides() && g.strides() == out.strides() {
        if let (Some(xs), Some(gs), Some(os)) = (
            x.as_slice_memory_order(),
            g.as_slice_memory_order(),
            out.as_slice_memory_order_mut(),
        ) {
            chunks3(xs, gs, os, run);
            return;
        }
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
            chunks_indexed2(xs, os, rows_per_block * c, |_, xc, oc| {
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

/// Channels per group on the four-field last-axis path (16 KiB of fields on the stack): a row
/// segment of a group spans whole pages, which keeps the strided walk over rows streaming.
pub(crate) const GROUP4: usize = 1024;

/// Per-channel parameters as four `f32` fields (bit patterns for integers).
pub(crate) type Fields = [f32; 4];

/// [`drive_per_channel`] for operations whose parameters fit in four `f32` fields. With the
/// channel on the last axis the fields of a group of channels are laid out as four arrays
/// (structure of arrays), so the row loop reads them with plain vector loads and vectorises.
#[inline(always)]
pub(crate) fn drive_per_channel4<A: Copy + Sync, B: Send, D: Dimension>(
    x: &ArrayRef<A, D>,
    out: &mut ArrayRef<B, D>,
    axis: usize,
    channels: usize,
    param: impl Fn(usize) -> Fields + Sync + Send,
    run: impl Fn(Fields, &[A], &mut [B]) + Sync + Send,
    elem: impl Fn(Fields, A) -> B + Sync + Send,
) {
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let c = channels;
    if inner == 1 && c > 1 {
        if let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) {
            if xs.is_empty() {
                return;
            }
            let rows_per_block = (CHUNK / c).max(64);
            chunks_indexed2(xs, os, rows_per_block * c, |_, xc, oc| {
                let mut soa = [[0.0f32; GROUP4]; 4];
                for g0 in (0..c).step_by(GROUP4) {
                    let g = (c - g0).min(GROUP4);
                    for k in 0..g {
                        let f = param(g0 + k);
                        for (field, v) in soa.iter_mut().zip(f) {
                            field[k] = v;
                        }
                    }
                    run_rows4(xc, oc, c, g0, g, &soa, &elem);
                }
            });
            return;
        }
    }
    drive_per_channel(x, out, axis, channels, param, run, elem);
}

dispatched!(
    /// Rows of `c` elements; elements `g0..g0 + g` of each row processed with the fields
    /// `soa[_][0..g]`.
    fn run_rows4[A: Copy, B, E: Fn(Fields, A) -> B](xs: &[A], os: &mut [B], c: usize, g0: usize, g: usize, soa: &[[f32; GROUP4]; 4], elem: &E) = run_rows4_body
);

#[inline(always)]
fn run_rows4_body<A: Copy, B, E: Fn(Fields, A) -> B>(
    xs: &[A],
    os: &mut [B],
    c: usize,
    g0: usize,
    g: usize,
    soa: &[[f32; GROUP4]; 4],
    elem: &E,
) {
    let (f0, f1, f2, f3) = (&soa[0][..g], &soa[1][..g], &soa[2][..g], &soa[3][..g]);
    for (orow, xrow) in os.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
        let fields = f0.iter().zip(f1).zip(f2).zip(f3);
        for ((o, &v), (((&a, &b), &d), &e)) in orow[g0..g0 + g]
            .iter_mut()
            .zip(&xrow[g0..g0 + g])
            .zip(fields)
        {
            *o = elem([a, b, d, e], v);
        }
    }
}

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
