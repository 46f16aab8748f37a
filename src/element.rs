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
}

macro_rules! impl_qfloat_prim {
    ($t:ty, $name:literal) => {
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
        }
    };
}
impl_qfloat_prim!(f32, "f32");
impl_qfloat_prim!(f64, "f64");

macro_rules! impl_qfloat_half {
    ($t:ty, $name:literal) => {
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
            #[inline]
            fn slice_to_compute(src: &[Self], dst: &mut [f32]) {
                use half::slice::HalfFloatSliceExt;
                src.convert_to_f32_slice(dst);
            }
            #[inline]
            fn slice_from_compute(src: &[f32], dst: &mut [Self]) {
                use half::slice::HalfFloatSliceExt;
                dst.convert_from_f32_slice(src);
            }
        }
    };
}
impl_qfloat_half!(f16, "f16");
impl_qfloat_half!(bf16, "bf16");

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
    /// Narrows a value already known to be in `MIN..=MAX`.
    fn from_i32_unchecked(v: i32) -> Self;
    /// Widens to `i32`.
    fn to_i32(self) -> i32;
}

macro_rules! impl_qint {
    ($t:ty, $name:literal) => {
        impl private::Sealed for $t {}
        impl QInt for $t {
            const NAME: &'static str = $name;
            const MIN: i64 = <$t>::MIN as i64;
            const MAX: i64 = <$t>::MAX as i64;
            #[inline(always)]
            fn from_i32_unchecked(v: i32) -> Self {
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
