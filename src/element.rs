//! Element types: the float inputs ([`QFloat`]) and the integer storage ([`QInt`]).
//!
//! Both traits are sealed: the kernels are exact only for the types they were written and
//! tested for.

use half::{bf16, f16};

mod private {
    pub trait Sealed {}
}

/// A float element type the kernels accept: `f32`, `f64`, [`struct@f16`] and [`struct@bf16`].
///
/// The affine map of quantization runs in `f32` for every element type, as PyTorch's kernels do:
/// inputs are converted to `f32` with [`QFloat::to_compute`] and results converted back with
/// [`QFloat::from_compute`] (round to nearest even).
pub trait QFloat:
    num_traits::Float
    + Copy
    + Send
    + Sync
    + std::fmt::Debug
    + std::fmt::Display
    + Default
    + 'static
    + private::Sealed
{
    /// The type's name (`"f32"`, `"f64"`, `"f16"`, `"bf16"`).
    const NAME: &'static str;
    /// Converts to the `f32` compute type (exact for f16/bf16/f32; rounds f64).
    fn to_compute(self) -> f32;
    /// Converts an `f32` result back (exact for f32/f64; rounds to nearest even for f16/bf16).
    fn from_compute(v: f32) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64_exact(self) -> f64;
    /// Converts a slice to `f32` (vectorised for f16/bf16).
    fn slice_to_compute(src: &[Self], dst: &mut [f32]);
    /// Converts `f32` values back into a slice (vectorised for f16/bf16).
    fn slice_from_compute(src: &[f32], dst: &mut [Self]);
    /// The slice itself when `Self` is `f32` (lets kernels skip conversions).
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]>;
    /// The slice itself when `Self` is `f32`.
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// The slice itself when `Self` is `f64` (lets the metrics read `f64` data unrounded).
    fn as_f64_slice(s: &[Self]) -> Option<&[f64]>;
}

macro_rules! impl_qfloat_prim {
    ($t:ty, $name:literal, |$s:ident| $cast:expr_2021, |$m:ident| $cast_mut:expr_2021, |$d:ident| $cast64:expr_2021) => {
        impl private::Sealed for $t {}
        impl QFloat for $t {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn to_compute(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn from_compute(v: f32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64_exact(self) -> f64 {
                self as f64
            }
            #[inline]
            fn slice_to_compute(src: &[Self], dst: &mut [f32]) {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = *s as f32;
                }
            }
            #[inline]
            fn slice_from_compute(src: &[f32], dst: &mut [Self]) {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = *s as $t;
                }
            }
            #[inline(always)]
            fn as_f32_slice($s: &[Self]) -> Option<&[f32]> {
                $cast
            }
            #[inline(always)]
            fn as_f32_slice_mut($m: &mut [Self]) -> Option<&mut [f32]> {
                $cast_mut
            }
            #[inline(always)]
            fn as_f64_slice($d: &[Self]) -> Option<&[f64]> {
                $cast64
            }
        }
    };
}
impl_qfloat_prim!(f32, "f32", |s| Some(s), |s| Some(s), |_s| None);
impl_qfloat_prim!(f64, "f64", |_s| None, |_s| None, |s| Some(s));

macro_rules! impl_qfloat_half {
    ($t:ty, $name:literal, $to:path, $from:path) => {
        impl private::Sealed for $t {}
        impl QFloat for $t {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn to_compute(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn from_compute(v: f32) -> Self {
                <$t>::from_f32(v)
            }
            #[inline(always)]
            fn to_f64_exact(self) -> f64 {
                self.to_f64()
            }
            #[inline(always)]
            fn slice_to_compute(src: &[Self], dst: &mut [f32]) {
                if <$t>::HARDWARE {
                    let bits = half::slice::HalfFloatSliceExt::reinterpret_cast(src);
                    if crate::simd::f16_to_f32_hw(bits, dst).is_some() {
                        return;
                    }
                }
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = $to(s.to_bits());
                }
            }
            #[inline(always)]
            fn slice_from_compute(src: &[f32], dst: &mut [Self]) {
                if <$t>::HARDWARE {
                    let bits = half::slice::HalfFloatSliceExt::reinterpret_cast_mut(dst);
                    if crate::simd::f32_to_f16_hw(src, bits).is_some() {
                        return;
                    }
                }
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = <$t>::from_bits($from(*s));
                }
            }
            #[inline(always)]
            fn as_f32_slice(_s: &[Self]) -> Option<&[f32]> {
                None
            }
            #[inline(always)]
            fn as_f32_slice_mut(_s: &mut [Self]) -> Option<&mut [f32]> {
                None
            }
            #[inline(always)]
            fn as_f64_slice(_s: &[Self]) -> Option<&[f64]> {
                None
            }
        }
    };
}
/// Whether a half type has hardware conversions (x86 F16C, detected at run time).
trait HardwareConversion {
    const HARDWARE: bool;
}
impl HardwareConversion for f16 {
    const HARDWARE: bool = true;
}
impl HardwareConversion for bf16 {
    const HARDWARE: bool = false;
}

impl_qfloat_half!(f16, "f16", f16_bits_to_f32, f32_to_f16_bits);
impl_qfloat_half!(bf16, "bf16", bf16_bits_to_f32, f32_to_bf16_bits);

// Branch-free conversions (selects instead of branches) so that slice loops over them
// vectorise; they agree with the `half` crate's conversions bit for bit on every non-NaN value
// (tested exhaustively for f16/bf16 → f32), and map NaN to a quiet NaN.

/// IEEE binary16 bits → f32 (exact).
#[inline(always)]
fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    // Normals and subnormals: reinterpret with the f32 exponent bias off by 112, then scale by
    // 2^112 (exact: the result is representable).
    let finite = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000);
    let special =
        f32::from_bits((em << 13) | 0x7f80_0000 | if em > 0x7c00 { 0x0040_0000 } else { 0 });
    let v = if em >= 0x7c00 { special } else { finite };
    f32::from_bits(v.to_bits() | sign)
}

/// f32 → IEEE binary16 bits, round to nearest even, overflow to infinity.
#[inline(always)]
fn f32_to_f16_bits(f: f32) -> u16 {
    const F32_INF: u32 = 255 << 23;
    const F16_MAX: u32 = (127 + 16) << 23;
    const DENORM_MAGIC: u32 = ((127 - 15) + (23 - 10) + 1) << 23;
    let u = f.to_bits();
    let sign = (u >> 16) & 0x8000;
    let a = u & 0x7fff_ffff;
    let inf_nan = if a > F32_INF { 0x7e00 } else { 0x7c00 };
    // Subnormal results: let the FPU round by adding a magic number.
    let sub = (f32::from_bits(a) + f32::from_bits(DENORM_MAGIC))
        .to_bits()
        .wrapping_sub(DENORM_MAGIC);
    // Normal results: rebias and round to nearest even on the 13 dropped bits.
    let odd = (a >> 13) & 1;
    let norm = a
        .wrapping_add(((15u32.wrapping_sub(127)) << 23).wrapping_add(0xfff))
        .wrapping_add(odd)
        >> 13;
    let o = if a >= F16_MAX {
        inf_nan
    } else if a < (113 << 23) {
        sub
    } else {
        norm
    };
    (o | sign) as u16
}

/// bfloat16 bits → f32 (exact).
#[inline(always)]
fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 → bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.
#[inline(always)]
fn f32_to_bf16_bits(f: f32) -> u16 {
    let x = f.to_bits();
    let rounded = (x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16) as u16;
    let nan = ((x >> 16) | 0x0040) as u16;
    if f.is_nan() { nan } else { rounded }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_to_f32_is_exact_for_every_value() {
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h).to_f32();
            let got = f16_bits_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#x}");
            }
        }
    }

    #[test]
    fn bf16_to_f32_is_exact_for_every_value() {
        for h in 0..=u16::MAX {
            let want = bf16::from_bits(h).to_f32();
            let got = bf16_bits_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#x}");
            }
        }
    }

    #[test]
    fn f32_to_half_rounds_like_half() {
        // Every f16/bf16 value, the midpoints between neighbours (ties), and their neighbours.
        let mut xs = Vec::new();
        for h in 0..=u16::MAX {
            let v = f16::from_bits(h).to_f32();
            let b = bf16::from_bits(h).to_f32();
            for base in [v, b] {
                if base.is_finite() {
                    let bits = base.to_bits();
                    for d in [
                        0u32,
                        1,
                        0x1000 - 1,
                        0x1000,
                        0x1000 + 1,
                        0x7fff,
                        0x8000,
                        0x8001,
                    ] {
                        xs.push(f32::from_bits(bits.wrapping_add(d)));
                    }
                }
            }
        }
        xs.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            65504.0,
            65519.99,
            65520.0,
            1e-8,
            -1e-8,
            3e38,
        ]);
        for &x in &xs {
            if x.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16_bits(x), f16::from_f32(x).to_bits(), "{x:e}");
            assert_eq!(f32_to_bf16_bits(x), bf16::from_f32(x).to_bits(), "{x:e}");
        }
        assert!(f16::from_bits(f32_to_f16_bits(f32::NAN)).is_nan());
        assert!(bf16::from_bits(f32_to_bf16_bits(f32::NAN)).is_nan());
        // The slice conversions (hardware F16C where the CPU has it) give the same bits; a
        // length that is not a multiple of 8 exercises the tails.
        let xs: Vec<f32> = xs.into_iter().filter(|x| !x.is_nan()).collect();
        let mut hs = vec![f16::ZERO; xs.len()];
        f16::slice_from_compute(&xs, &mut hs);
        for (x, h) in xs.iter().zip(&hs) {
            assert_eq!(h.to_bits(), f32_to_f16_bits(*x), "{x:e}");
        }
        let all: Vec<f16> = (0..=u16::MAX)
            .map(f16::from_bits)
            .chain([f16::ONE; 3])
            .collect();
        let mut back = vec![0.0f32; all.len()];
        f16::slice_to_compute(&all, &mut back);
        for (h, v) in all.iter().zip(&back) {
            if h.is_nan() {
                assert!(v.is_nan());
            } else {
                assert_eq!(v.to_bits(), f16_bits_to_f32(h.to_bits()).to_bits(), "{h:?}");
            }
        }
    }
}

/// An integer storage type for quantized values: `u8`, `i8`, `u16`, `i16`, `i32`.
///
/// Sub-byte dtypes (4-bit) are stored unpacked, one value per `u8`/`i8`.
pub trait QInt:
    Copy + Send + Sync + Default + std::fmt::Debug + PartialEq + 'static + private::Sealed
{
    /// The type's name (`"u8"`, ...).
    const NAME: &'static str;
    /// Lowest value, widened.
    const MIN: i64;
    /// Highest value, widened.
    const MAX: i64;
    /// Narrows with an `as` cast, which wraps outside `MIN..=MAX` (callers clamp first).
    fn from_i32_wrapping(v: i32) -> Self;
    /// Widens to `i32`.
    fn to_i32(self) -> i32;
}

/// `v` clamped to the range of `Q` and narrowed. With the bounds known at compile time the
/// compiler turns this into saturating pack instructions for a vector of values.
#[inline(always)]
pub(crate) fn saturate<Q: QInt>(v: i32) -> Q {
    let (lo, hi) = (
        Q::MIN.max(i32::MIN as i64) as i32,
        Q::MAX.min(i32::MAX as i64) as i32,
    );
    let v = if v > lo { v } else { lo };
    Q::from_i32_wrapping(if v < hi { v } else { hi })
}

macro_rules! impl_qint {
    ($t:ty, $name:literal) => {
        impl private::Sealed for $t {}
        impl QInt for $t {
            const NAME: &'static str = $name;
            const MIN: i64 = <$t>::MIN as i64;
            const MAX: i64 = <$t>::MAX as i64;
            #[inline(always)]
            fn from_i32_wrapping(v: i32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_i32(self) -> i32 {
                self as i32
            }
        }
    };
}
impl_qint!(u8, "u8");
impl_qint!(i8, "i8");
impl_qint!(u16, "u16");
impl_qint!(i16, "i16");
impl_qint!(i32, "i32");
