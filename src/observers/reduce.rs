//! Shared reductions and checks for the observers: vectorisable min/max over slices with a
//! finiteness check folded in, per-channel reductions, and argument validation.

use ndarray::{ArrayViewD, Axis};

use super::view::{BLOCK, FloatView, for_each_block, non_finite_error};
use crate::dtype::QDType;
use crate::element::QFloat;
use crate::error::{QuantError, Result};
use crate::qparams::{QScheme, QSpec};

/// Runs `$body` with `$v` bound to the typed view inside a [`FloatView`] (one
/// monomorphised copy per element type).
macro_rules! with_view {
    ($x:expr_2021, |$v:ident| $body:expr_2021) => {
        match $x {
            $crate::observers::FloatView::F32($v) => $body,
            $crate::observers::FloatView::F64($v) => $body,
            $crate::observers::FloatView::F16($v) => $body,
            $crate::observers::FloatView::BF16($v) => $body,
        }
    };
}
pub(crate) use with_view;

/// Min, max and a sum of a slice. NaN is ignored by the min/max but poisons the sum, so a
/// non-finite sum flags a batch to re-check (the sum can also overflow on finite data; the
/// re-check tells the two apart). Three vector operations per element.
fn scan(xs: &[f32]) -> (f32, f32, f32) {
    // Large slices: chunks on several threads (feature `rayon`); min/max are exact in any
    // order and the sum only flags non-finite values.
    crate::parallel::map_fold(
        xs,
        scan_chunk,
        (f32::INFINITY, f32::NEG_INFINITY, 0.0),
        |a, b| {
            (
                if b.0 < a.0 { b.0 } else { a.0 },
                if b.1 > a.1 { b.1 } else { a.1 },
                a.2 + b.2,
            )
        },
    )
}

crate::simd::dispatched!(
    fn scan_chunk[](xs: &[f32]) -> (f32, f32, f32) = scan_body
);

#[inline(always)]
pub(crate) fn scan_body(xs: &[f32]) -> (f32, f32, f32) {
    // Three simple 32-lane passes per L1-resident block: each vectorises reliably (one fused
    // pass with three accumulator arrays does not).
    let mut acc = (f32::INFINITY, f32::NEG_INFINITY, 0.0f32);
    for block in xs.chunks(2048) {
        let mn = lanes(block, f32::INFINITY, |a, v| if v < a { v } else { a });
        let mx = lanes(block, f32::NEG_INFINITY, |a, v| if v > a { v } else { a });
        let sm = lanes(block, 0.0, |a, v| a + v);
        for k in 0..LANES {
            acc.0 = if mn[k] < acc.0 { mn[k] } else { acc.0 };
            acc.1 = if mx[k] > acc.1 { mx[k] } else { acc.1 };
            acc.2 += sm[k];
        }
    }
    acc
}

/// Lanes of [`lanes`]: four independent 8-wide accumulators hide the latency of each step.
const LANES: usize = 32;

/// Folds a slice into [`LANES`] lanes (lane `k` takes elements `k, k+LANES, ...`; the tail
/// goes to the first lanes).
#[inline(always)]
fn lanes(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> [f32; LANES] {
    let mut acc = [init; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = f(acc[k], c[k]);
        }
    }
    for (k, &v) in tail.iter().enumerate() {
        acc[k] = f(acc[k], v);
    }
    acc
}

crate::simd::dispatched!(
    /// Column-wise min, max and sum over rows of `mn.len()` values.
    fn columns[](s: &[f32], mn: &mut [f32], mx: &mut [f32], sacc: &mut [f32]) = columns_body
);

#[inline(always)]
fn columns_body(s: &[f32], mn: &mut [f32], mx: &mut [f32], sacc: &mut [f32]) {
    let c = mn.len();
    // Four rows at a time: a quarter of the accumulator loads and stores.
    let quads = s.chunks_exact(4 * c);
    let rest = quads.remainder();
    for q in quads {
        let (r0, q) = q.split_at(c);
        let (r1, q) = q.split_at(c);
        let (r2, r3) = q.split_at(c);
        let rows = r0.iter().zip(r1).zip(r2).zip(r3);
        let accs = mn.iter_mut().zip(mx.iter_mut()).zip(sacc.iter_mut());
        for ((((&a, &b), &d), &e), ((lo, hi), t)) in rows.zip(accs) {
            // `min`/`max` (NaN-ignoring, like the comparisons elsewhere) compile to plain
            // vector min/max; a conditional assignment would become masked stores.
            *lo = lo.min(a.min(b).min(d.min(e)));
            *hi = hi.max(a.max(b).max(d.max(e)));
            *t += (a + b) + (d + e);
        }
    }
    for row in rest.chunks_exact(c) {
        for (((&v, a), b), t) in row
            .iter()
            .zip(mn.iter_mut())
            .zip(mx.iter_mut())
            .zip(sacc.iter_mut())
        {
            *a = a.min(v);
            *b = b.max(v);
            *t += v;
        }
    }
}

/// Global `(min, max)` of a batch; `None` for an empty batch.
///
/// # Errors
/// [`QuantError::NanInput`] / [`QuantError::NonFinite`] on the first NaN / ±inf.
pub(crate) fn min_max(op: &'static str, x: &ArrayViewD<'_, f32>) -> Result<Option<(f32, f32)>> {
    if x.is_empty() {
        return Ok(None);
    }
    let (mn, mx, sum) = match x.as_slice_memory_order() {
        Some(s) => scan(s),
        None => {
            let mut acc = (f32::INFINITY, f32::NEG_INFINITY, 0.0f32);
            for lane in x.rows() {
                let (a, b, c) = match lane.as_slice() {
                    Some(s) => scan(s),
                    None => scan(&lane.to_vec()),
                };
                acc = (acc.0.min(a), acc.1.max(b), acc.2 + c);
            }
            acc
        }
    };
    if !sum.is_finite() {
        non_finite_error(op, x)?;
    }
    Ok(Some((mn, mx)))
}

/// Global `(min, max)` of a batch of any float type; `None` for an empty batch. `f32`
/// batches take [`min_max`]; the others are converted block by block.
///
/// # Errors
/// As [`min_max`]; [`QuantError::RangeOverflow`] for an `f64` value beyond `f32`'s range.
pub(crate) fn min_max_view(op: &'static str, x: &FloatView<'_>) -> Result<Option<(f32, f32)>> {
    match x {
        FloatView::F32(v) => min_max(op, v),
        FloatView::F64(v) => min_max_converted(op, v),
        FloatView::F16(v) => min_max_converted(op, v),
        FloatView::BF16(v) => min_max_converted(op, v),
    }
}

fn min_max_converted<F: QFloat>(
    op: &'static str,
    x: &ArrayViewD<'_, F>,
) -> Result<Option<(f32, f32)>> {
    if x.is_empty() {
        return Ok(None);
    }
    let mut acc = (f32::INFINITY, f32::NEG_INFINITY, 0.0f32);
    for_each_block(x, BLOCK, |b| {
        let (a, c, t) = scan(b);
        acc = (acc.0.min(a), acc.1.max(c), acc.2 + t);
    });
    if !acc.2.is_finite() {
        non_finite_error(op, x)?;
    }
    Ok(Some((acc.0, acc.1)))
}

/// Per-channel `(min, max)` along `axis` (already resolved) of a non-empty batch of any
/// float type.
///
/// # Errors
/// As [`min_max_view`].
pub(crate) fn channel_min_max_view(
    op: &'static str,
    x: &FloatView<'_>,
    axis: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    match x {
        FloatView::F32(v) => channel_min_max(op, v, axis),
        FloatView::F64(v) => channel_min_max_converted(op, v, axis),
        FloatView::F16(v) => channel_min_max_converted(op, v, axis),
        FloatView::BF16(v) => channel_min_max_converted(op, v, axis),
    }
}

fn channel_min_max_converted<F: QFloat>(
    op: &'static str,
    x: &ArrayViewD<'_, F>,
    axis: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = x.shape()[axis];
    let mut mn = vec![f32::INFINITY; c];
    let mut mx = vec![f32::NEG_INFINITY; c];
    let mut sum = 0.0f32;
    for (ch, sub) in x.axis_iter(Axis(axis)).enumerate() {
        for_each_block(&sub, BLOCK, |b| {
            let (a, d, t) = scan(b);
            mn[ch] = mn[ch].min(a);
            mx[ch] = mx[ch].max(d);
            sum += t;
        });
    }
    if !sum.is_finite() {
        non_finite_error(op, x)?;
    }
    Ok((mn, mx))
}

/// Per-channel `(min, max)` along `axis` (already resolved), for a non-empty batch.
///
/// # Errors
/// As [`min_max`].
pub(crate) fn channel_min_max(
    op: &'static str,
    x: &ArrayViewD<'_, f32>,
    axis: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let shape = x.shape();
    let c = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut mn = vec![f32::INFINITY; c];
    let mut mx = vec![f32::NEG_INFINITY; c];
    let mut sum = 0.0f32;
    match x.as_slice() {
        Some(s) if inner == 1 => {
            // Channels on the last axis: a strided column reduction, row by row.
            let mut sacc = vec![0.0f32; c];
            columns(s, &mut mn, &mut mx, &mut sacc);
            sum = sacc.iter().sum();
        }
        Some(s) => {
            // Each (outer, channel) pair is a contiguous row of `inner` values.
            for (r, row) in s.chunks_exact(inner).enumerate() {
                let ch = r % c;
                let (a, b, t) = scan(row);
                mn[ch] = if a < mn[ch] { a } else { mn[ch] };
                mx[ch] = if b > mx[ch] { b } else { mx[ch] };
                sum += t;
            }
        }
        None => {
            for (ch, sub) in x.axis_iter(Axis(axis)).enumerate() {
                if let Some((a, b)) = min_max(op, &sub)? {
                    mn[ch] = a;
                    mx[ch] = b;
                }
            }
        }
    }
    let _ = outer;
    if !sum.is_finite() {
        non_finite_error(op, x)?;
    }
    Ok((mn, mx))
}

/// PyTorch's observer-construction rules for a spec: per-tensor observers refuse per-channel
/// schemes and vice versa; min/max observers refuse `symmetric + reduce_range + quint8`
/// (PyTorch's `NotImplementedError`, whatever the range).
pub(crate) fn check_spec(
    op: &'static str,
    spec: &QSpec,
    per_channel: bool,
    minmax_family: bool,
) -> Result<()> {
    if spec.scheme().is_per_channel() != per_channel {
        return Err(QuantError::UnsupportedConfig {
            op,
            reason: if per_channel {
                "a per-channel observer needs a per-channel qscheme"
            } else {
                "a per-tensor observer needs a per-tensor qscheme"
            },
        });
    }
    if minmax_family
        && spec.scheme().is_symmetric()
        && spec.reduce_range()
        && spec.dtype() == QDType::QUInt8
    {
        return Err(QuantError::UnsupportedConfig {
            op,
            reason: "cannot reduce range for symmetric quantization for quint8 (PyTorch raises NotImplementedError)",
        });
    }
    Ok(())
}

/// `0 < c <= 1`.
pub(crate) fn check_averaging_constant(op: &'static str, c: f32) -> Result<()> {
    if c.is_finite() && c > 0.0 && c <= 1.0 {
        Ok(())
    } else {
        Err(QuantError::InvalidParameter {
            op,
            what: "averaging_constant",
            value: c as f64,
            reason: "must lie in (0, 1]",
        })
    }
}

/// Checks `other` is the same observer type with the same configuration.
pub(crate) fn incompatible(op: &'static str, reason: &'static str) -> QuantError {
    QuantError::Incompatible { op, reason }
}

/// Whether the scheme's zero points are floats.
pub(crate) fn float_zero_points(scheme: QScheme) -> bool {
    matches!(scheme, QScheme::PerChannelAffineFloatQParams)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn scan_finds_extremes() {
        // (i − 11)·0.5 for i in 0..37: from −5.5 (i = 0) to 12.5 (i = 36)
        let v: Vec<f32> = (0..37).map(|i| (i as f32 - 11.0) * 0.5).collect();
        let (a, b, sum) = scan(&v);
        assert_eq!((a, b), (-5.5, 12.5));
        assert!(sum.is_finite());
    }

    #[test]
    fn scan_sum_flags_nan() {
        let mut w: Vec<f32> = (0..37).map(|i| i as f32).collect();
        w[33] = f32::NAN;
        assert!(scan(&w).2.is_nan());
    }

    #[test]
    fn overflowing_sums_of_finite_data_are_rechecked_not_refused() {
        let big = ArrayD::from_elem(IxDyn(&[40]), 3.0e38f32);
        assert_eq!(min_max("t", &big.view()).unwrap(), Some((3.0e38, 3.0e38)));
        let big = ArrayD::from_elem(IxDyn(&[4, 10]), 3.0e38f32);
        assert!(channel_min_max("t", &big.view(), 1).is_ok());
        let big64 = ArrayD::from_elem(IxDyn(&[4, 10]), 3.0e38f64);
        let view = FloatView::F64(big64.view());
        assert_eq!(min_max_view("t", &view).unwrap(), Some((3.0e38, 3.0e38)));
        assert!(channel_min_max_view("t", &view, 0).is_ok());
    }

    #[test]
    fn channel_reduction_matches_naive() {
        let data: Vec<f32> = (0..60).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let x = ArrayD::from_shape_vec(IxDyn(&[3, 4, 5]), data).unwrap();
        for axis in 0..3 {
            let (mn, mx) = channel_min_max("t", &x.view(), axis).unwrap();
            for (ch, sub) in x.axis_iter(Axis(axis)).enumerate() {
                let a = sub.iter().cloned().fold(f32::INFINITY, f32::min);
                let b = sub.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!((mn[ch], mx[ch]), (a, b));
            }
            let t = x.t();
            let (mn2, mx2) = channel_min_max("t", &t, 2 - axis).unwrap();
            assert_eq!((mn2, mx2), (mn.clone(), mx.clone()));
        }
    }
}
