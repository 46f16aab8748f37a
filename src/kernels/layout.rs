//! Layout drivers: run an element operation over any ndarray layout, with a flat-slice fast path.
//!
//! This is the only place that thinks about memory order. Kernels express themselves as an
//! element operation (`Fn(A) -> B`) or a per-channel family of them; the drivers pick a
//! contiguous slice loop when both sides share a memory order and fall back to `Zip`.

use ndarray::{ArrayRef, Axis, Dimension, Zip};

use crate::element::QFloat;

/// Applies `f` element by element from `x` into `out` (same shape, checked by the caller).
#[inline]
pub(crate) fn map_into<A: Copy, B, D: Dimension>(
    x: &ArrayRef<A, D>,
    out: &mut ArrayRef<B, D>,
    f: impl Fn(A) -> B,
) {
    debug_assert_eq!(x.shape(), out.shape());
    if x.strides() == out.strides() {
        if let (Some(xs), Some(os)) = (x.as_slice_memory_order(), out.as_slice_memory_order_mut()) {
            for (o, &v) in os.iter_mut().zip(xs) {
                *o = f(v);
            }
            return;
        }
    }
    Zip::from(out).and(x).for_each(|o, &v| *o = f(v));
}

/// Applies `f` to every element of `x` in place.
#[inline]
pub(crate) fn map_inplace<A: Copy, D: Dimension>(x: &mut ArrayRef<A, D>, f: impl Fn(A) -> A) {
    if let Some(xs) = x.as_slice_memory_order_mut() {
        for v in xs {
            *v = f(*v);
        }
        return;
    }
    x.map_inplace(|v| *v = f(*v));
}

/// Applies a per-channel operation: element `x[.., c, ..]` (index `c` on `axis`) goes through
/// `f(&params[c], x)`.
#[inline]
pub(crate) fn map_per_channel_into<A: Copy, B, P, D: Dimension>(
    x: &ArrayRef<A, D>,
    out: &mut ArrayRef<B, D>,
    axis: usize,
    params: &[P],
    f: impl Fn(&P, A) -> B,
) {
    debug_assert_eq!(x.shape(), out.shape());
    debug_assert_eq!(x.shape()[axis], params.len());
    let shape = x.shape();
    let inner: usize = shape[axis + 1..].iter().product();
    let c = params.len();
    if let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) {
        if inner == 1 {
            for (orow, xrow) in os.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
                for ((o, &v), p) in orow.iter_mut().zip(xrow).zip(params) {
                    *o = f(p, v);
                }
            }
        } else {
            for (oblock, xblock) in os
                .chunks_exact_mut(c * inner)
                .zip(xs.chunks_exact(c * inner))
            {
                for ((orun, xrun), p) in oblock
                    .chunks_exact_mut(inner)
                    .zip(xblock.chunks_exact(inner))
                    .zip(params)
                {
                    for (o, &v) in orun.iter_mut().zip(xrun) {
                        *o = f(p, v);
                    }
                }
            }
        }
        return;
    }
    let xd = x.view().into_dyn();
    let mut od = out.view_mut().into_dyn();
    for (ch, p) in params.iter().enumerate() {
        let xv = xd.index_axis(Axis(axis), ch);
        let mut ov = od.index_axis_mut(Axis(axis), ch);
        Zip::from(&mut ov).and(&xv).for_each(|o, &v| *o = f(p, v));
    }
}

/// Logical (row-major) index of the first NaN in `x`, if any.
pub(crate) fn find_nan<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>) -> Option<usize> {
    let any = if let Some(xs) = x.as_slice_memory_order() {
        any_nan_slice(xs)
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
#[inline]
pub(crate) fn any_nan_slice<F: QFloat>(xs: &[F]) -> bool {
    const BLOCK: usize = 1024;
    for block in xs.chunks(BLOCK) {
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

/// Two-input version of [`map_into`]: `out = f(a, b)`.
#[inline]
pub(crate) fn map2_into<A: Copy, B: Copy, C, D: Dimension>(
    a: &ArrayRef<A, D>,
    b: &ArrayRef<B, D>,
    out: &mut ArrayRef<C, D>,
    f: impl Fn(A, B) -> C,
) {
    if a.strides() == out.strides() && b.strides() == out.strides() {
        if let (Some(xa), Some(xb), Some(os)) = (
            a.as_slice_memory_order(),
            b.as_slice_memory_order(),
            out.as_slice_memory_order_mut(),
        ) {
            for ((o, &u), &v) in os.iter_mut().zip(xa).zip(xb) {
                *o = f(u, v);
            }
            return;
        }
    }
    Zip::from(out)
        .and(a)
        .and(b)
        .for_each(|o, &u, &v| *o = f(u, v));
}

/// Two-input version of [`map_per_channel_into`].
#[inline]
pub(crate) fn map2_per_channel_into<A: Copy, B: Copy, C, P, D: Dimension>(
    a: &ArrayRef<A, D>,
    b: &ArrayRef<B, D>,
    out: &mut ArrayRef<C, D>,
    axis: usize,
    params: &[P],
    f: impl Fn(&P, A, B) -> C,
) {
    let ad = a.view().into_dyn();
    let bd = b.view().into_dyn();
    let mut od = out.view_mut().into_dyn();
    for (ch, p) in params.iter().enumerate() {
        let av = ad.index_axis(Axis(axis), ch);
        let bv = bd.index_axis(Axis(axis), ch);
        let mut ov = od.index_axis_mut(Axis(axis), ch);
        if let (Some(xa), Some(xb), Some(os)) = (av.as_slice(), bv.as_slice(), ov.as_slice_mut()) {
            for ((o, &u), &v) in os.iter_mut().zip(xa).zip(xb) {
                *o = f(p, u, v);
            }
        } else {
            Zip::from(&mut ov)
                .and(&av)
                .and(&bv)
                .for_each(|o, &u, &v| *o = f(p, u, v));
        }
    }
}
