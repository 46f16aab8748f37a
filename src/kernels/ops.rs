//! Element operations: the affine map in `f32`, loop-ready (invariants hoisted).
//!
//! Rounding is round-half-to-even. For values clamped to `|t| <= 2^22` it is done with the
//! classic magic-number addition (`(t + 1.5·2^23) - 1.5·2^23`), which is exactly
//! round-half-to-even under the default floating-point environment and, unlike
//! `f32::round_ties_even`, vectorises on every x86-64 CPU (no SSE4.1 needed). Wider ranges
//! (32-bit dtypes) take `round_ties_even` and `f64` clamps.

use crate::qparams::QParams;

/// Largest |bound| for which the magic-number path is exact.
const MAGIC_LIMIT: i64 = 1 << 22;
const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
/// Bit pattern of `MAGIC`: `(t + MAGIC).to_bits() - MAGIC_BITS == rne(t)` for `|t| <= 2^22`.
const MAGIC_BITS: i32 = 0x4B40_0000;

/// Round half to even of a value with `|t| <= 2^22` (or NaN-free clamped input).
#[inline(always)]
pub(crate) fn rne_small(t: f32) -> f32 {
    (t + MAGIC) - MAGIC
}

/// Quantize one element to an integer in `[lo + zp, hi + zp]` (`lo`, `hi` relative to zp).
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuantizeOp {
    pub inv: f32,
    pub lo: f32,
    pub hi: f32,
    pub zp: i32,
    pub lo64: f64,
    pub hi64: f64,
    pub narrow: bool,
}

impl QuantizeOp {
    /// Clamp to the storage range `[dmin, dmax]`.
    pub(crate) fn new(scale: f32, zp: i32, dmin: i64, dmax: i64) -> Self {
        let lo = dmin - zp as i64;
        let hi = dmax - zp as i64;
        QuantizeOp {
            inv: 1.0 / scale,
            lo: lo as f32,
            hi: hi as f32,
            zp,
            lo64: lo as f64,
            hi64: hi as f64,
            narrow: lo >= -MAGIC_LIMIT && hi <= MAGIC_LIMIT,
        }
    }

    pub(crate) fn per_tensor(qp: &QParams) -> Self {
        let d = qp.dtype();
        Self::new(qp.scale(), qp.zero_point(), d.min(), d.max())
    }

    /// Narrow path (bounds within ±2^22). The rounded integer is read straight from the bits
    /// of `t + 1.5·2^23` (no float→int conversion, so the loop vectorises everywhere).
    #[inline(always)]
    pub(crate) fn apply_narrow(&self, x: f32) -> i32 {
        quantize_narrow(x, self.inv, self.lo, self.hi, self.zp)
    }

    /// Wide path (32-bit dtypes): saturates for any |x/scale|, including beyond 2^31.
    #[inline(always)]
    pub(crate) fn apply_wide(&self, x: f32) -> i32 {
        let r = (x * self.inv).round_ties_even() as f64;
        (r.max(self.lo64).min(self.hi64) as i64 + self.zp as i64) as i32
    }
}

/// `t` clamped to `[lo, hi]` (`lo`, `hi` not NaN), as one compare-select each, which compile
/// to single `maxps`/`minps` instructions (`f32::max` must also handle a NaN in either operand,
/// which costs a compare and a blend). A NaN `t` gives `lo`: the kernels report NaN inputs
/// as errors, so that value is never used.
#[inline(always)]
pub(crate) fn clamp(t: f32, lo: f32, hi: f32) -> f32 {
    let t = if t > lo { t } else { lo };
    if t < hi { t } else { hi }
}

/// Narrow quantize of one element (bounds `lo`, `hi` relative to the zero point, within
/// ±2^22). The rounded integer is read straight from the bits of `t + 1.5·2^23` (no
/// float→int conversion, so loops vectorise everywhere).
#[inline(always)]
pub(crate) fn quantize_narrow(x: f32, inv: f32, lo: f32, hi: f32, zp: i32) -> i32 {
    let t = clamp(x * inv, lo, hi);
    ((t + MAGIC).to_bits() as i32).wrapping_sub(MAGIC_BITS) + zp
}

/// [`quantize_narrow`] with the clamp done on integers after the zero point is added
/// (`qmin <= qmax` the storage bounds). Equal to it for every input: with integer bounds,
/// clamping before or after rounding gives the same level, and a value beyond ±2^22 clamps to
/// the same bound either way (narrow bounds and zero points are far inside it). Per-channel
/// loops use it: the zero point varies by element, and bounds relative to it would cost a
/// conversion and two subtractions per element.
#[inline(always)]
pub(crate) fn quantize_narrow_zp(x: f32, inv: f32, zp: i32, qmin: i32, qmax: i32) -> i32 {
    let r = quantize_narrow_zp_level(x, inv, zp);
    let r = if r > qmin { r } else { qmin };
    if r < qmax { r } else { qmax }
}

/// Narrow fake-quantize of one element: the level relative to the zero point is rounded after
/// clamping to `[lo − 1, hi + 1]` (exact for the magic-number rounding), clamped to
/// `[lo, hi]` and scaled back.
#[inline(always)]
pub(crate) fn fake_quantize_narrow(x: f32, scale: f32, inv: f32, lo: f32, hi: f32) -> f32 {
    clamp(rne_small(clamp(x * inv, lo - 1.0, hi + 1.0)), lo, hi) * scale
}

/// The unclamped level of [`quantize_narrow_zp`]: `rne(clamp(x · inv, ±2^22)) + zp`. Callers
/// whose storage type's range is the quantization range clamp it by saturating narrowing
/// ([`crate::element::saturate`], one pack instruction for a vector of levels).
#[inline(always)]
pub(crate) fn quantize_narrow_zp_level(x: f32, inv: f32, zp: i32) -> i32 {
    const LIM: f32 = MAGIC_LIMIT as f32;
    let t = clamp(x * inv, -LIM, LIM);
    ((t + MAGIC).to_bits() as i32).wrapping_sub(MAGIC_BITS) + zp
}

/// [`fake_quantize_narrow`] with the level clamped on integers after the zero point is added
/// (bounds `qmin <= qmax`, all of `qmin`, `qmax`, `zp` within ±2^24 so that nothing
/// overflows). Equal to it for every input, by the argument of [`quantize_narrow_zp`]; the
/// level is an exact integer, so converting it back gives the same float.
#[inline(always)]
pub(crate) fn fake_quantize_narrow_zp(
    x: f32,
    scale: f32,
    inv: f32,
    zp: i32,
    qmin: i32,
    qmax: i32,
) -> f32 {
    (quantize_narrow_zp(x, inv, zp, qmin, qmax) - zp) as f32 * scale
}

/// The straight-through mask of [`fake_quantize_narrow`]: whether the rounded level lies in
/// `[lo, hi]`.
#[inline(always)]
pub(crate) fn fake_quantize_mask_narrow(x: f32, inv: f32, lo: f32, hi: f32) -> bool {
    let r = rne_small(clamp(x * inv, lo - 1.0, hi + 1.0));
    r >= lo && r <= hi
}

/// Fake-quantize one element: `y = (clamp(rne(x/s) + zp, qmin, qmax) - zp) * s`, plus the
/// straight-through mask `qmin <= rne(x/s) + zp <= qmax`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FakeQuantOp {
    pub scale: f32,
    pub inv: f32,
    pub lo: f32,
    pub hi: f32,
    /// The bounds relative to the zero point, exact (32-bit ranges are not exact in `f32`).
    pub lo64: f64,
    pub hi64: f64,
    pub narrow: bool,
}

impl FakeQuantOp {
    pub(crate) fn new(scale: f32, zp: i32, qmin: i64, qmax: i64) -> Self {
        let lo = qmin - zp as i64;
        let hi = qmax - zp as i64;
        FakeQuantOp {
            scale,
            inv: 1.0 / scale,
            lo: lo as f32,
            hi: hi as f32,
            lo64: lo as f64,
            hi64: hi as f64,
            narrow: lo > -MAGIC_LIMIT && hi < MAGIC_LIMIT,
        }
    }

    pub(crate) fn per_tensor(qp: &QParams) -> Self {
        let r = qp.range();
        Self::new(qp.scale(), qp.zero_point(), r.quant_min(), r.quant_max())
    }

    /// Wide path (ranges beyond ±2^22): the rounded level relative to the zero point, in
    /// `f64` (exact: an integer-valued `f32`). Adding `0.0` turns a rounded `-0.0` into `0.0`:
    /// the level is an integer, and PyTorch's result for it is `+0.0`.
    #[inline(always)]
    fn rounded_wide(&self, x: f32) -> f64 {
        (x * self.inv).round_ties_even() as f64 + 0.0
    }

    #[inline(always)]
    pub(crate) fn forward_narrow(&self, x: f32) -> f32 {
        fake_quantize_narrow(x, self.scale, self.inv, self.lo, self.hi)
    }

    #[inline(always)]
    pub(crate) fn forward_wide(&self, x: f32) -> f32 {
        self.rounded_wide(x).max(self.lo64).min(self.hi64) as f32 * self.scale
    }

    #[inline(always)]
    pub(crate) fn mask_narrow(&self, x: f32) -> bool {
        fake_quantize_mask_narrow(x, self.inv, self.lo, self.hi)
    }

    #[inline(always)]
    pub(crate) fn mask_wide(&self, x: f32) -> bool {
        let r = self.rounded_wide(x);
        r >= self.lo64 && r <= self.hi64
    }

    #[inline(always)]
    pub(crate) fn mask(&self, x: f32) -> bool {
        if self.narrow {
            self.mask_narrow(x)
        } else {
            self.mask_wide(x)
        }
    }
}

/// Float zero point (`per_channel_affine_float_qparams`): the zero point is added before
/// rounding. The level is clamped in `f64`, where every 32-bit bound is exact.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloatZpOp {
    pub scale: f32,
    pub inv: f32,
    pub zp: f32,
    pub qmin: f64,
    pub qmax: f64,
}

impl FloatZpOp {
    /// `scale` is valid (finite, `> 0`, finite reciprocal), as `PerChannelQParams` checks.
    pub(crate) fn new(scale: f32, zp: f32, qmin: i64, qmax: i64) -> Self {
        FloatZpOp {
            scale,
            inv: 1.0 / scale,
            zp,
            qmin: qmin as f64,
            qmax: qmax as f64,
        }
    }

    /// Unclamped rounded level (an integer-valued `f32`, ±inf, or NaN), in `f64`.
    #[inline(always)]
    pub(crate) fn level(&self, x: f32) -> f64 {
        (x * self.inv + self.zp).round_ties_even() as f64
    }

    /// The clamped level; a NaN level gives `qmin` (NaN inputs are reported as errors).
    #[inline(always)]
    pub(crate) fn quantize(&self, x: f32) -> i32 {
        self.level(x).max(self.qmin).min(self.qmax) as i32
    }

    #[inline(always)]
    pub(crate) fn dequantize(&self, q: i32) -> f32 {
        (q as f32 - self.zp) * self.scale
    }

    #[inline(always)]
    pub(crate) fn forward(&self, x: f32) -> f32 {
        self.dequantize(self.quantize(x))
    }

    #[inline(always)]
    pub(crate) fn mask(&self, x: f32) -> bool {
        let l = self.level(x);
        l >= self.qmin && l <= self.qmax
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_clamped_quantize_equals_relative_bounds() {
        // Ties, bounds, values far beyond ±2^22, infinities and NaN, for the 8- and 16-bit
        // ranges with zero points across them.
        let mut xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.25).collect();
        xs.extend([
            1e30,
            -1e30,
            4.2e6,
            -4.2e6,
            8.4e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        xs.push(f32::NAN);
        for (qmin, qmax) in [(0, 255), (-128, 127), (-32768, 32767), (0, 65535), (0, 15)] {
            for zp in [qmin, qmin + 1, (qmin + qmax) / 2, qmax] {
                for inv in [1.0f32, 2.0, 0.37, 1e-3, 3e5] {
                    let (lo, hi) = ((qmin - zp) as f32, (qmax - zp) as f32);
                    for &x in &xs {
                        assert_eq!(
                            quantize_narrow_zp(x, inv, zp, qmin, qmax),
                            quantize_narrow(x, inv, lo, hi, zp),
                            "x {x} inv {inv} zp {zp} [{qmin}, {qmax}]"
                        );
                        if (qmin, qmax) == (0, 255) {
                            let sat: u8 =
                                crate::element::saturate(quantize_narrow_zp_level(x, inv, zp));
                            assert_eq!(sat as i32, quantize_narrow(x, inv, lo, hi, zp));
                        }
                        if (qmin, qmax) == (-128, 127) {
                            let sat: i8 =
                                crate::element::saturate(quantize_narrow_zp_level(x, inv, zp));
                            assert_eq!(sat as i32, quantize_narrow(x, inv, lo, hi, zp));
                        }
                        if (qmin, qmax) == (-32768, 32767) {
                            let sat: i16 =
                                crate::element::saturate(quantize_narrow_zp_level(x, inv, zp));
                            assert_eq!(sat as i32, quantize_narrow(x, inv, lo, hi, zp));
                        }
                        if (qmin, qmax) == (0, 65535) {
                            let sat: u16 =
                                crate::element::saturate(quantize_narrow_zp_level(x, inv, zp));
                            assert_eq!(sat as i32, quantize_narrow(x, inv, lo, hi, zp));
                        }
                        let s = 0.05f32;
                        assert_eq!(
                            fake_quantize_narrow_zp(x, s, inv, zp, qmin, qmax).to_bits(),
                            fake_quantize_narrow(x, s, inv, lo, hi).to_bits(),
                            "fake: x {x} inv {inv} zp {zp} [{qmin}, {qmax}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn magic_rounding_is_half_even() {
        for i in -4_000_000..4_000_000i32 {
            if i % 997 != 0 {
                continue;
            }
            for frac in [0.0f32, 0.25, 0.5, 0.75] {
                let t = i as f32 + frac;
                assert_eq!(rne_small(t), t.round_ties_even(), "{t}");
                assert_eq!(rne_small(-t), (-t).round_ties_even(), "{}", -t);
            }
        }
        assert_eq!(rne_small(2.5), 2.0);
        assert_eq!(rne_small(-2.5), -2.0);
        assert_eq!(rne_small(3.5), 4.0);
        assert_eq!(rne_small(4_194_304.0), 4_194_304.0);
    }

    #[test]
    fn wide_saturates() {
        let op = QuantizeOp::new(1.0, 5, i32::MIN as i64, i32::MAX as i64);
        assert_eq!(op.apply_wide(1e20), i32::MAX);
        assert_eq!(op.apply_wide(-1e20), i32::MIN);
        assert_eq!(op.apply_wide(f32::INFINITY), i32::MAX);
    }
}
