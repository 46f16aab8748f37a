//! Element casts to the small float types: float8 (`e4m3fn`, `e5m2`, `e4m3fnuz`, `e5m2fnuz`,
//! `e8m0fnu`), fp6 (`e2m3fn`, `e3m2fn`) and fp4 (`e2m1fn`), bit for bit with PyTorch 2.15's
//! casts (float8) and ml_dtypes (fp6, fp4).
//!
//! Every cast rounds to nearest, ties to even, with gradual underflow; what happens beyond the
//! largest finite value, to ±inf, NaN and −0 is each type's own (see [`MiniFloat::encode`]).
//!
//! ```
//! use qnumeric::formats::minifloat::MiniFloat;
//! let e4m3 = MiniFloat::E4M3Fn;
//! assert_eq!(e4m3.encode(1.0), 0x38);
//! assert_eq!(e4m3.decode(0x38), 1.0);
//! assert_eq!(e4m3.encode(1e6), 0x7e); // saturates at 448
//! assert_eq!(MiniFloat::E5M2.encode(1e6), 0x7c); // e5m2 overflows to inf
//! assert_eq!(MiniFloat::E2M1Fn.decode(MiniFloat::E2M1Fn.encode(2.6)), 3.0);
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use ndarray::{Array, ArrayRef, Dimension};

use super::lookup::ScaleOp;
use crate::element::QFloat;
use crate::error::{QuantError, Result};

/// A small float type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum MiniFloat {
    /// float8 e4m3fn: max 448, no inf, NaN `0x7f`/`0xff`; casts saturate.
    E4M3Fn,
    /// float8 e5m2: max 57344, inf `0x7c`/`0xfc`; casts overflow to inf.
    E5M2,
    /// float8 e4m3fnuz: max 240, one NaN `0x80`, no −0.
    E4M3Fnuz,
    /// float8 e5m2fnuz: max 57344, one NaN `0x80`, no −0.
    E5M2Fnuz,
    /// float8 e8m0fnu: powers of two `2^(b−127)`, `0xff` NaN, no sign (MX block scales).
    E8M0Fnu,
    /// fp4 e2m1fn: 0, 0.5, 1, 1.5, 2, 3, 4, 6; no inf or NaN; casts saturate.
    E2M1Fn,
    /// fp6 e2m3fn: max 7.5; no inf or NaN; casts saturate.
    E2M3Fn,
    /// fp6 e3m2fn: max 28; no inf or NaN; casts saturate.
    E3M2Fn,
}

/// The layout of a signed type: mantissa bits, bias, largest finite value.
#[derive(Clone, Copy)]
struct Layout {
    mbits: u32,
    bias: i32,
    /// Largest finite value.
    max: f64,
}

impl MiniFloat {
    /// Every type.
    pub const ALL: [MiniFloat; 8] = [
        MiniFloat::E4M3Fn,
        MiniFloat::E5M2,
        MiniFloat::E4M3Fnuz,
        MiniFloat::E5M2Fnuz,
        MiniFloat::E8M0Fnu,
        MiniFloat::E2M1Fn,
        MiniFloat::E2M3Fn,
        MiniFloat::E3M2Fn,
    ];

    /// PyTorch's / ml_dtypes' name (`"float8_e4m3fn"`, `"float4_e2m1fn"`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            MiniFloat::E4M3Fn => "float8_e4m3fn",
            MiniFloat::E5M2 => "float8_e5m2",
            MiniFloat::E4M3Fnuz => "float8_e4m3fnuz",
            MiniFloat::E5M2Fnuz => "float8_e5m2fnuz",
            MiniFloat::E8M0Fnu => "float8_e8m0fnu",
            MiniFloat::E2M1Fn => "float4_e2m1fn",
            MiniFloat::E2M3Fn => "float6_e2m3fn",
            MiniFloat::E3M2Fn => "float6_e3m2fn",
        }
    }

    /// Storage bits (8, 6 or 4; codes sit in the low bits of a byte).
    #[must_use]
    pub fn bits(self) -> u32 {
        match self {
            MiniFloat::E2M1Fn => 4,
            MiniFloat::E2M3Fn | MiniFloat::E3M2Fn => 6,
            _ => 8,
        }
    }

    fn layout(self) -> Layout {
        let (mbits, bias, max) = match self {
            MiniFloat::E4M3Fn => (3, 7, 448.0),
            MiniFloat::E5M2 => (2, 15, 57344.0),
            MiniFloat::E4M3Fnuz => (3, 8, 240.0),
            MiniFloat::E5M2Fnuz => (2, 16, 57344.0),
            MiniFloat::E8M0Fnu => (0, 127, 2f64.powi(127)),
            MiniFloat::E2M1Fn => (1, 1, 6.0),
            MiniFloat::E2M3Fn => (3, 1, 7.5),
            MiniFloat::E3M2Fn => (2, 3, 28.0),
        };
        Layout { mbits, bias, max }
    }

    /// The largest finite value.
    #[must_use]
    pub fn max(self) -> f32 {
        self.layout().max as f32
    }

    /// The smallest positive value (a subnormal; `2^-127` for e8m0).
    #[must_use]
    pub fn min_positive(self) -> f32 {
        let l = self.layout();
        if self == MiniFloat::E8M0Fnu {
            return 2f32.powi(-127);
        }
        2f64.powi(1 - l.bias - l.mbits as i32) as f32
    }

    /// Whether the type has infinities (e5m2 only).
    #[must_use]
    pub fn has_inf(self) -> bool {
        self == MiniFloat::E5M2
    }

    /// Whether the type has a NaN code (the float8 types).
    #[must_use]
    pub fn has_nan(self) -> bool {
        self.bits() == 8
    }

    /// The code of `x` (round to nearest, ties to even), as the references cast:
    /// - e4m3fn: finite values beyond 448 and ±inf saturate to ±448 (`0x7e`/`0xfe`); NaN keeps
    ///   its sign (`0x7f`/`0xff`);
    /// - e5m2: `|x| ≥ 61440` (max plus half a step) and ±inf give ±inf; NaN `0x7f`/`0xff`;
    /// - e4m3fnuz / e5m2fnuz: overflow, ±inf and NaN give `0x80`; −0 and negative values that
    ///   round to zero give `0x00`;
    /// - e8m0fnu: the sign is ignored; the f32 exponent field plus one when rounding up
    ///   (mantissa ≥ 0.5 for a normal f32, > 0.5 for a subnormal); `< 2^-127` gives `0x00`;
    ///   `≥ 1.5·2^127`, ±inf and NaN give `0xff`;
    /// - fp6 / fp4 (ml_dtypes): beyond max and ±inf saturate; −0 keeps its sign; **NaN gives
    ///   −0 (`0x20` / `0x08`) and −NaN +0 (`0x00`)**: ml_dtypes' behaviour, reproduced (these
    ///   types have no NaN).
    #[must_use]
    pub fn encode(self, x: f32) -> u8 {
        if self == MiniFloat::E8M0Fnu {
            return encode_e8m0(x);
        }
        let l = self.layout();
        let bits = self.bits();
        let sign_bit: u8 = 1 << (bits - 1);
        let neg = x.is_sign_negative();
        let fnuz = matches!(self, MiniFloat::E4M3Fnuz | MiniFloat::E5M2Fnuz);
        if x.is_nan() {
            return match self {
                MiniFloat::E4M3Fn | MiniFloat::E5M2 => 0x7f | if neg { 0x80 } else { 0 },
                MiniFloat::E4M3Fnuz | MiniFloat::E5M2Fnuz => 0x80,
                // ml_dtypes: NaN → −0, −NaN → +0.
                _ => {
                    if neg {
                        0
                    } else {
                        sign_bit
                    }
                }
            };
        }
        let sign = if neg { sign_bit } else { 0 };
        let a = x.abs();
        let overflow = || -> u8 {
            match self {
                MiniFloat::E5M2 => sign | 0x7c,
                MiniFloat::E4M3Fnuz | MiniFloat::E5M2Fnuz => 0x80,
                _ => sign | max_code(l),
            }
        };
        if a.is_infinite() {
            return overflow();
        }
        let mag = match encode_magnitude(l, x.abs()) {
            Some(m) => m,
            None => return overflow(),
        };
        if mag == 0 && fnuz {
            return 0;
        }
        sign | mag
    }

    /// The code of `x` clamped to `±max` first (`x.clamp(-max, max).to(dtype)`): NaN stays
    /// NaN, ±inf become ±max. Differs from [`MiniFloat::encode`] for e5m2 and the fnuz types.
    #[must_use]
    pub fn encode_saturating(self, x: f32) -> u8 {
        if x.is_nan() {
            return self.encode(x);
        }
        let m = self.max();
        self.encode(x.clamp(-m, m))
    }

    /// The value of `code` (its low [`bits`](MiniFloat::bits) bits), as `f32` (a table
    /// lookup).
    #[must_use]
    pub fn decode(self, code: u8) -> f32 {
        self.table()[usize::from(code)]
    }

    /// The value of every code (built once): decoders read it once per call, not once per
    /// value (the lookup then vectorises).
    pub(crate) fn table(self) -> &'static [f32; 256] {
        static TABLES: OnceLock<[[f32; 256]; 8]> = OnceLock::new();
        let tables = TABLES.get_or_init(|| {
            let mut t = [[0.0f32; 256]; 8];
            for (k, ty) in MiniFloat::ALL.into_iter().enumerate() {
                for c in 0..=255u8 {
                    t[k][usize::from(c)] = ty.decode_slow(c);
                }
            }
            t
        });
        &tables[self as usize]
    }

    /// [`MiniFloat::decode`] computed from the fields (builds the tables).
    fn decode_slow(self, code: u8) -> f32 {
        if self == MiniFloat::E8M0Fnu {
            return if code == 0xff {
                f32::NAN
            } else {
                // 2^(b - 127): b = 0 is 2^-127, an f32 subnormal.
                if code == 0 {
                    f32::from_bits(1 << 22)
                } else {
                    f32::from_bits(u32::from(code) << 23)
                }
            };
        }
        let l = self.layout();
        let bits = self.bits();
        let code = code & ((1u16 << bits) - 1) as u8;
        let sign_bit: u8 = 1 << (bits - 1);
        let neg = code & sign_bit != 0;
        let mag = code & (sign_bit - 1);
        match self {
            MiniFloat::E4M3Fnuz | MiniFloat::E5M2Fnuz if code == 0x80 => return f32::NAN,
            MiniFloat::E4M3Fn if mag == 0x7f => return f32::NAN,
            MiniFloat::E5M2 if mag >= 0x7c => {
                return if mag == 0x7c {
                    if neg {
                        f32::NEG_INFINITY
                    } else {
                        f32::INFINITY
                    }
                } else {
                    f32::NAN
                };
            }
            _ => {}
        }
        let e = i32::from(mag >> l.mbits);
        let m = f64::from(mag & ((1u8 << l.mbits) - 1));
        let scale = 2f64.powi(l.mbits as i32);
        let v = if e == 0 {
            m / scale * 2f64.powi(1 - l.bias)
        } else {
            (1.0 + m / scale) * 2f64.powi(e - l.bias)
        };
        let v = v as f32;
        if neg { -v } else { v }
    }

    /// `x` cast and back (`decode(encode(x))`).
    #[must_use]
    pub fn round(self, x: f32) -> f32 {
        self.decode(self.encode(x))
    }
}

/// `2^e` for `e` in the normal `f32` exponent range.
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// The magnitude code of a finite `a ≥ 0` rounded to nearest, ties to even, or `None` when
/// it rounds beyond the largest finite value. Bit manipulation on the `f32` pattern: exact.
fn encode_magnitude(l: Layout, a: f32) -> Option<u8> {
    let emin = 1 - l.bias;
    let mbits = l.mbits;
    if a < pow2(emin) {
        // Subnormal in the target: a multiple of 2^(emin − mbits), scaled exactly.
        let n = (a * pow2(mbits as i32 - emin)).round_ties_even();
        // n ≤ 2^mbits: 2^mbits is the smallest normal, whose code is the same number.
        return Some(n as u8);
    }
    let shift = 23 - mbits;
    let bits = a.to_bits();
    let lsb = (bits >> shift) & 1;
    let rounded = (bits + (1 << (shift - 1)) - 1 + lsb) & !((1u32 << shift) - 1);
    let v = f32::from_bits(rounded);
    if f64::from(v) > l.max {
        return None;
    }
    let field = ((rounded >> 23) as i32 - 127 + l.bias) as u32;
    let m = (rounded >> shift) & ((1 << mbits) - 1);
    Some(((field << mbits) | m) as u8)
}

/// The magnitude code of the largest finite value.
fn max_code(l: Layout) -> u8 {
    encode_magnitude(l, l.max as f32).unwrap_or(0)
}

fn encode_e8m0(x: f32) -> u8 {
    if !x.is_finite() {
        return 0xff;
    }
    let bits = x.to_bits() & 0x7fff_ffff;
    let exp = bits >> 23;
    let mant = bits & 0x7f_ffff;
    let up = if exp == 0 {
        mant > 0x40_0000
    } else {
        mant >= 0x40_0000
    };
    let b = exp + u32::from(up);
    if b >= 255 { 0xff } else { b as u8 }
}

impl fmt::Display for MiniFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MiniFloat {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self> {
        MiniFloat::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| QuantError::Format {
                op: "MiniFloat::from_str",
                detail: format!("unknown element type `{s}`"),
            })
    }
}

/// Casts every element of `x` (codes in the low bits of each byte).
#[must_use]
pub fn cast<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, to: MiniFloat) -> Array<u8, D> {
    let mut out = vec![0u8; x.len()];
    match x.as_slice_memory_order().filter(|_| x.is_standard_layout()) {
        Some(s) => encode_slice(s, to, &mut out),
        None => encode_iter(x.iter().map(|v| v.to_compute()), to, &mut out),
    }
    Array::from_shape_vec(x.raw_dim(), out).expect("one code per element, in logical order")
}

/// Casts every element into `out` (same length, row-major order of `x`).
///
/// # Errors
/// [`QuantError::LengthMismatch`] when `out` has another length (nothing written).
pub fn cast_into<F: QFloat, D: Dimension>(
    x: &ArrayRef<F, D>,
    to: MiniFloat,
    out: &mut [u8],
) -> Result<()> {
    if out.len() != x.len() {
        return Err(QuantError::LengthMismatch {
            op: "minifloat::cast_into",
            what: "output",
            expected: x.len(),
            got: out.len(),
        });
    }
    match x.as_slice_memory_order().filter(|_| x.is_standard_layout()) {
        Some(s) => encode_slice(s, to, out),
        None => encode_iter(x.iter().map(|v| v.to_compute()), to, out),
    }
    Ok(())
}

/// [`encode_iter`] of a contiguous slice: `f32` directly, other types in pieces of 256 values
/// converted to `f32`.
fn encode_slice<F: QFloat>(x: &[F], to: MiniFloat, out: &mut [u8]) {
    let Some(p) = Encoder::new(to) else {
        for (o, v) in out.iter_mut().zip(x) {
            *o = to.encode(v.to_compute());
        }
        return;
    };
    if let Some(x) = F::as_f32_slice(x) {
        crate::parallel::chunks2(x, out, |a, b| encode_f32s(&p, a, b));
        return;
    }
    let mut buf = [0.0f32; 256];
    for (o, x) in out.chunks_mut(buf.len()).zip(x.chunks(buf.len())) {
        let b = &mut buf[..x.len()];
        F::slice_to_compute(x, b);
        encode_f32s(&p, b, o);
    }
}

/// [`MiniFloat::encode`] of the values of `x` into `out` (as many as `out` holds): through
/// [`encode_f32s`] in pieces of 256 values copied out of `x` (e8m0fnu one value at a time).
fn encode_iter(mut x: impl Iterator<Item = f32>, to: MiniFloat, out: &mut [u8]) {
    let Some(p) = Encoder::new(to) else {
        for (o, v) in out.iter_mut().zip(x) {
            *o = to.encode(v);
        }
        return;
    };
    let mut buf = [0.0f32; 256];
    for o in out.chunks_mut(buf.len()) {
        for (b, v) in buf.iter_mut().zip(&mut x) {
            *b = v;
        }
        encode_f32s(&p, &buf[..o.len()], o);
    }
}

/// The constants of the branch-free [`MiniFloat::encode`] of one type (every type but
/// e8m0fnu): the same rounding on the `f32` bit pattern, each special case a select.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Encoder {
    /// `23 − mbits`: the `f32` mantissa bits dropped.
    shift: u32,
    /// `f32` bits of the smallest normal of the type: below, the subnormal path.
    normal_bits: u32,
    /// `2^(mbits − emin)`: a subnormal's value in steps of the smallest subnormal.
    sub_scale: f32,
    /// `f32` bits of the largest finite value: a rounded magnitude above overflows.
    max_bits: u32,
    /// `(127 − bias) << mbits`: from the `f32` exponent and mantissa fields to the type's.
    exp_off: u32,
    sign_bit: u32,
    /// Codes of `+inf`, `−inf`, `+NaN`, `−NaN` (the scalar cast's).
    over: [u32; 2],
    nan: [u32; 2],
    /// Whether a zero magnitude loses its sign (the fnuz types).
    fnuz: bool,
    /// fp4 e2m1: [`encode_scaled`] counts rounding thresholds instead.
    e2m1: bool,
}

impl Encoder {
    /// The encoder of `to`; `None` for e8m0fnu (a scale type, encoded one value at a time).
    pub(crate) fn new(to: MiniFloat) -> Option<Self> {
        if to == MiniFloat::E8M0Fnu {
            return None;
        }
        let l = to.layout();
        let emin = 1 - l.bias;
        Some(Encoder {
            shift: 23 - l.mbits,
            normal_bits: pow2(emin).to_bits(),
            sub_scale: pow2(l.mbits as i32 - emin),
            max_bits: (l.max as f32).to_bits(),
            exp_off: ((127 - l.bias) as u32) << l.mbits,
            sign_bit: 1 << (to.bits() - 1),
            over: [
                u32::from(to.encode(f32::INFINITY)),
                u32::from(to.encode(f32::NEG_INFINITY)),
            ],
            nan: [
                u32::from(to.encode(f32::NAN)),
                u32::from(to.encode(-f32::NAN)),
            ],
            fnuz: matches!(to, MiniFloat::E4M3Fnuz | MiniFloat::E5M2Fnuz),
            e2m1: to == MiniFloat::E2M1Fn,
        })
    }

    /// The type's magnitude code of the pattern `abits` (sign cleared) and the pattern
    /// rounded to the type's mantissa (above `max_bits`: an overflow).
    #[inline(always)]
    fn magnitude(&self, abits: u32) -> (u32, u32) {
        // Round to nearest, ties to even, on the pattern (no overflow: `abits < 2^31`).
        let lsb = (abits >> self.shift) & 1;
        let rounded = (abits + (1 << (self.shift - 1)) - 1 + lsb) & !((1u32 << self.shift) - 1);
        let normal = (rounded >> self.shift).wrapping_sub(self.exp_off);
        // Subnormal in the type: a multiple of its smallest subnormal, scaled exactly (the
        // magnitude kept below the normals so the product stays small).
        let small = abits < self.normal_bits;
        let a = f32::from_bits(if small { abits } else { 0 });
        let sub = crate::simd::trunc_clamped((a * self.sub_scale).round_ties_even(), 255.0);
        (if small { sub } else { normal }, rounded)
    }

    /// [`MiniFloat::encode`] of `x` (tested against it over the bit patterns).
    #[inline(always)]
    pub(crate) fn encode(&self, x: f32) -> u8 {
        let bits = x.to_bits();
        let neg = bits >> 31 != 0;
        let abits = bits & 0x7fff_ffff;
        let (mag, rounded) = self.magnitude(abits);
        let code = if self.fnuz && mag == 0 {
            0
        } else if neg {
            self.sign_bit | mag
        } else {
            mag
        };
        // (Selects, not an index by the sign: that was a gather, which kept the loop scalar.)
        let (over, nan) = if neg {
            (self.over[1], self.nan[1])
        } else {
            (self.over[0], self.nan[0])
        };
        let code = if rounded > self.max_bits { over } else { code };
        let code = if abits > 0x7f80_0000 { nan } else { code };
        code as u8
    }

    /// [`Encoder::encode`] of a non-NaN `x` with `|x|` at most the type's largest finite
    /// value, for a type whose zero keeps its sign (not fnuz): no overflow, NaN or unsigned
    /// zero to select.
    #[inline(always)]
    fn encode_in_range(&self, x: f32) -> u8 {
        let bits = x.to_bits();
        let (mag, _) = self.magnitude(bits & 0x7fff_ffff);
        let sign = if bits >> 31 != 0 { self.sign_bit } else { 0 };
        (mag | sign) as u8
    }
}

/// `out[i]` = the code of `x[i]·mult` clamped to `±max` (a NaN product stays NaN, coded
/// `nan` where given, else as the type codes NaN): the element step of the block formats (MX,
/// NVFP4), for their row loops compiled for the CPU's vector width.
#[inline(always)]
pub(crate) fn encode_scaled(
    enc: &Encoder,
    x: &[f32],
    mult: f32,
    max: f32,
    nan: Option<u8>,
    out: &mut [u8],
) {
    let (has_nan, nan) = (nan.is_some(), nan.unwrap_or(0));
    if enc.e2m1 {
        return encode_scaled_e2m1(enc, x, mult, has_nan.then_some(nan), out);
    }
    if has_nan && !enc.fnuz && max.to_bits() == enc.max_bits {
        // Clamped to the largest finite value, a magnitude cannot round past it, and NaN is
        // coded by the caller: the encoder's overflow and NaN selects are dead (e4m3fn and
        // e5m2, MXFP8's elements, through the float8 cast's own arithmetic).
        if *enc == FLOAT8_ENCODERS[0] {
            return encode_clamped(x, mult, max, nan, out, encode_float8::<20, 7, 0x7e>);
        }
        if *enc == FLOAT8_ENCODERS[1] {
            return encode_clamped(x, mult, max, nan, out, encode_float8::<21, 15, 0x7c>);
        }
        return encode_clamped(x, mult, max, nan, out, |c| enc.encode_in_range(c));
    }
    for (o, &v) in out.iter_mut().zip(x) {
        let s = v * mult;
        // `f32::clamp` as compare-selects (NaN fails both compares and stays).
        let c = if s > max { max } else { s };
        let c = if c < -max { -max } else { c };
        let code = enc.encode(c);
        *o = if has_nan && s.is_nan() { nan } else { code };
    }
}

/// `out[i]` = `enc(x[i]·mult` clamped to `±max)`, `nan` for a NaN product ([`encode_scaled`]
/// where no overflow can occur).
#[inline(always)]
fn encode_clamped(
    x: &[f32],
    mult: f32,
    max: f32,
    nan: u8,
    out: &mut [u8],
    enc: impl Fn(f32) -> u8,
) {
    map_by_16(x, out, |v| {
        let s = v * mult;
        let c = if s > max { max } else { s };
        let c = if c < -max { -max } else { c };
        let code = enc(c);
        if s.is_nan() { nan } else { code }
    });
}

/// `out[i] = f(x[i])` over the shorter length, 16 values a step: a loop per value compiled
/// for AVX2 ran eight lanes with a pack and an 8-byte store each step (about twice the time
/// of MXFP8's and scaled float8's elements, measured on Zen 4 with AVX-512 off).
#[inline(always)]
fn map_by_16(x: &[f32], out: &mut [u8], f: impl Fn(f32) -> u8) {
    let mut xs = x.chunks_exact(16);
    let mut os = out.chunks_exact_mut(16);
    for (xc, oc) in (&mut xs).zip(&mut os) {
        for (o, &v) in oc.iter_mut().zip(xc) {
            *o = f(v);
        }
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = f(v);
    }
}

/// [`encode_scaled`] for fp4 e2m1 (`max` 6) in about fifteen vector operations a value,
/// where the general encoder takes about thirty (tested against it): the magnitude clamped to
/// 6 (everything above 5 saturates to 6, as the clamp does); from 1 up, the `f32` mantissa
/// rounded to one bit on the pattern; below 1, the pattern of `c + 2^22` (whose last place is
/// 0.5) counts the halves. Both round to nearest, ties to even.
#[inline(always)]
fn encode_scaled_e2m1(enc: &Encoder, x: &[f32], mult: f32, nan: Option<u8>, out: &mut [u8]) {
    let (has_nan, nan) = (nan.is_some(), nan.unwrap_or(0));
    let (nan_pos, nan_neg) = (enc.nan[0] as u8, enc.nan[1] as u8);
    for (o, &v) in out.iter_mut().zip(x) {
        let s = v * mult;
        let bits = s.to_bits();
        // Everything above 5 saturates to 6 (code 7): clamping to 6 first keeps the
        // arithmetic below in range (a NaN becomes 6 here and is replaced at the end).
        let a = f32::from_bits(bits & 0x7fff_ffff);
        let c = if a < 6.0 { a } else { 6.0 };
        let cb = c.to_bits();
        // From 1 up: round the f32 mantissa to one bit, ties to even, on the pattern; the
        // exponent and that bit are the code once the bias is moved (`1.0` is code 2).
        let normal = ((cb + 0x1f_ffff + ((cb >> 22) & 1)) >> 22).wrapping_sub(252);
        // Below 1: `2c` rounded to an integer, ties to even (0, 0.5 and 1 are codes 0, 1 and
        // 2), read off the pattern of `c + 2^22`, whose last place is 0.5.
        let sub = (c + 4_194_304.0).to_bits().wrapping_sub(0x4a80_0000);
        let mag = if c < 1.0 { sub } else { normal };
        let code = mag | ((bits >> 28) & 8);
        let nan_code = if has_nan {
            nan
        } else if bits >> 31 != 0 {
            nan_neg
        } else {
            nan_pos
        };
        *o = if s.is_nan() { nan_code } else { code as u8 };
    }
}

/// [`Encoder::new`] of e4m3fn and e5m2 (tested equal): [`encode_f32s`] casts to them
/// through [`encode_float8`].
const FLOAT8_ENCODERS: [Encoder; 2] = [
    // e4m3fn: 3 mantissa bits, bias 7, largest 448; inf saturates to ±448 (0x7e / 0xfe).
    Encoder {
        shift: 20,
        normal_bits: 0x3c80_0000,
        sub_scale: 512.0,
        max_bits: 0x43e0_0000,
        exp_off: 120 << 3,
        sign_bit: 0x80,
        over: [0x7e, 0xfe],
        nan: [0x7f, 0xff],
        fnuz: false,
        e2m1: false,
    },
    // e5m2: 2 mantissa bits, bias 15, largest 57344, inf to inf (0x7c / 0xfc).
    Encoder {
        shift: 21,
        normal_bits: 0x3880_0000,
        sub_scale: 65536.0,
        max_bits: 0x4760_0000,
        exp_off: 112 << 2,
        sign_bit: 0x80,
        over: [0x7c, 0xfc],
        nan: [0x7f, 0xff],
        fnuz: false,
        e2m1: false,
    },
];

/// [`Encoder::encode`] for e4m3fn (`SHIFT = 20`, `BIAS = 7`, `OVER = 0x7e`) and e5m2 (21,
/// 15, `0x7c`), in about 18 vector operations where the general encoder's selects took 25
/// or more (measured on an AVX2 CPU, where the cast was bound by them, not by memory):
/// - a subnormal's code is the pattern of `|x| + 2^(e)` less that of `2^(e)`, `e` chosen so
///   that the sum's ulp is the type's smallest subnormal (the addition rounds to nearest,
///   ties to even);
/// - a normal's is the pattern rounded to nearest even at bit `SHIFT`, re-biased (in `i32`:
///   below the normals it is negative, and not selected);
/// - overflow is a minimum: every code above the largest finite one becomes `OVER` (±448
///   for e4m3fn, which saturates; inf for e5m2), NaN (`0x7f`) a select, the sign an OR.
#[inline(always)]
fn encode_float8<const SHIFT: u32, const BIAS: u32, const OVER: i32>(x: f32) -> u8 {
    let bits = x.to_bits();
    let abits = bits & 0x7fff_ffff;
    // (A NaN's pattern may carry past bit 31 here: it is replaced below.)
    let r = abits.wrapping_add((1 << (SHIFT - 1)) - 1 + ((abits >> SHIFT) & 1));
    let normal = ((r >> SHIFT) as i32).wrapping_sub(((127 - BIAS) << (23 - SHIFT)) as i32);
    let magic = f32::from_bits((127 - BIAS + SHIFT + 1) << 23);
    let sub = (f32::from_bits(abits) + magic)
        .to_bits()
        .wrapping_sub(magic.to_bits()) as i32;
    let mag = if abits < (128 - BIAS) << 23 {
        sub
    } else {
        normal
    };
    let mag = if mag < OVER { mag } else { OVER } as u32;
    let mag = if abits > 0x7f80_0000 { 0x7f } else { mag };
    (mag | ((bits >> 24) & 0x80)) as u8
}

/// A loop over values that takes its element encoder as a type parameter, so that each
/// encoder's loop is compiled on its own ([`with_value_encoder`]).
pub(crate) trait EncodeLoop {
    /// Runs the loop with `enc` ([`Encoder::encode`] of the encoder given).
    fn run(self, enc: impl Fn(f32) -> u8 + Copy);
}

/// Runs `k` with [`Encoder::encode`] of `p`: for e4m3fn and e5m2, [`encode_float8`].
#[inline(always)]
pub(crate) fn with_value_encoder(p: &Encoder, k: impl EncodeLoop) {
    if *p == FLOAT8_ENCODERS[0] {
        k.run(encode_float8::<20, 7, 0x7e>);
    } else if *p == FLOAT8_ENCODERS[1] {
        k.run(encode_float8::<21, 15, 0x7c>);
    } else {
        k.run(|v| p.encode(v));
    }
}

/// `out[i] = encode(x[i])`, vectorised (`x.len() == out.len()`); e4m3fn and e5m2 through
/// [`encode_float8`].
#[inline(always)]
fn encode_f32s_body(p: &Encoder, x: &[f32], out: &mut [u8]) {
    struct Values<'a>(&'a [f32], &'a mut [u8]);
    impl EncodeLoop for Values<'_> {
        #[inline(always)]
        fn run(self, enc: impl Fn(f32) -> u8 + Copy) {
            encode_f32s_with(self.0, self.1, enc);
        }
    }
    with_value_encoder(p, Values(x, out));
}

/// [`encode_f32s_body`] with the value encoder `enc` (inlined: a function item or a closure
/// defined in the caller compiled for the CPU).
#[inline(always)]
pub(crate) fn encode_f32s_with(x: &[f32], out: &mut [u8], enc: impl Fn(f32) -> u8) {
    let mut xs = x.chunks_exact(16);
    let mut os = out.chunks_exact_mut(16);
    for (xc, oc) in (&mut xs).zip(&mut os) {
        crate::simd::prefetch_read(xc.as_ptr().wrapping_add(crate::simd::PREFETCH_AHEAD));
        for (o, &v) in oc.iter_mut().zip(xc) {
            *o = enc(v);
        }
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = enc(v);
    }
}

// AVX-512: 1.40 ms against 3.08 ms for the AVX2 copy on 4M values (16 lanes, mask registers
// for the selects).
crate::simd::dispatched512!(fn encode_f32s[](p: &Encoder, x: &[f32], out: &mut [u8]) = encode_f32s_body);

/// Casts every element clamped to `±max` first ([`MiniFloat::encode_saturating`]).
#[must_use]
pub fn cast_saturating<F: QFloat, D: Dimension>(x: &ArrayRef<F, D>, to: MiniFloat) -> Array<u8, D> {
    x.map(|v| to.encode_saturating(v.to_compute()))
}

/// Decodes every code.
#[must_use]
pub fn decode<D: Dimension>(codes: &ArrayRef<u8, D>, from: MiniFloat) -> Array<f32, D> {
    let t = from.table();
    codes.map(|&c| t[usize::from(c)])
}

/// Decodes every code into `out` (same length).
///
/// # Errors
/// [`QuantError::LengthMismatch`] when `out` has another length (nothing written).
pub fn decode_into(codes: &[u8], from: MiniFloat, out: &mut [f32]) -> Result<()> {
    if out.len() != codes.len() {
        return Err(QuantError::LengthMismatch {
            op: "minifloat::decode_into",
            what: "output",
            expected: codes.len(),
            got: out.len(),
        });
    }
    // e4m3fn and e5m2 by arithmetic where the CPU converts halves (no gather).
    let one = |_: usize| Some(1.0);
    if !super::lookup::fp8_blocks(from, codes, codes.len(), one, ScaleOp::Mul, out) {
        decode_table(from.table(), codes, out);
    }
    Ok(())
}

/// `out[i] = t[codes[i]]`, compiled for the CPU's vector width (AVX2 and AVX-512 gather the
/// 16 or 8 table entries of a vector in one instruction; the baseline loop loaded one at a
/// time).
#[inline(always)]
fn decode_table_body(t: &[f32; 256], codes: &[u8], out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = t[usize::from(c)];
    }
}

crate::simd::dispatched512!(fn decode_table[](t: &[f32; 256], codes: &[u8], out: &mut [f32]) = decode_table_body);

#[cfg(test)]
mod tests {
    /// The arithmetic encoder of fp4 e2m1 gives the general encoder's codes: every 4099th
    /// bit pattern (NaNs and infinities among them), each midpoint and each code's value and
    /// their neighbours, with and without a NaN code, at two multipliers.
    #[test]
    fn fp4_encoder_gives_the_general_encoders_codes() {
        let enc = super::Encoder::new(super::MiniFloat::E2M1Fn).expect("encoder");
        let general = super::Encoder { e2m1: false, ..enc };
        let mut x: Vec<f32> = (0..=u32::MAX).step_by(4099).map(f32::from_bits).collect();
        for m in [
            0.25f32, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 7.0,
        ] {
            for v in [m, -m] {
                let b = v.to_bits();
                x.extend([f32::from_bits(b.wrapping_sub(1)), v, f32::from_bits(b + 1)]);
            }
        }
        x.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            1e-45,
            -1e-45,
        ]);
        for mult in [1.0f32, 0.375] {
            for nan in [None, Some(3u8)] {
                let (mut fast, mut slow) = (vec![0u8; x.len()], vec![0u8; x.len()]);
                super::encode_scaled(&enc, &x, mult, 6.0, nan, &mut fast);
                super::encode_scaled(&general, &x, mult, 6.0, nan, &mut slow);
                for ((v, f), s) in x.iter().zip(&fast).zip(&slow) {
                    assert_eq!(f, s, "{v:e} × {mult} (NaN code {nan:?})");
                }
            }
        }
    }

    use super::*;

    /// The constant encoders are the ones [`Encoder::new`] builds.
    #[test]
    fn float8_encoder_constants_are_the_built_ones() {
        assert_eq!(Encoder::new(MiniFloat::E4M3Fn), Some(FLOAT8_ENCODERS[0]));
        assert_eq!(Encoder::new(MiniFloat::E5M2), Some(FLOAT8_ENCODERS[1]));
    }

    /// The vectorised decoder gives each code's value bit for bit (NaN payloads included),
    /// every code of every type in a slice whose length is not a multiple of a vector; a
    /// wrong output length is an error that writes nothing.
    #[test]
    fn slice_decoder_gives_each_codes_value() {
        let codes: Vec<u8> = (0..1037u32).map(|i| (i * 97 % 256) as u8).collect();
        for ty in MiniFloat::ALL {
            let mut out = vec![7.0f32; codes.len()];
            decode_into(&codes, ty, &mut out).expect("same length");
            for (&c, &v) in codes.iter().zip(&out) {
                assert_eq!(v.to_bits(), ty.decode(c).to_bits(), "{ty} code {c:#04x}");
            }
            let mut short = vec![7.0f32; 3];
            assert!(decode_into(&codes, ty, &mut short).is_err());
            assert_eq!(short, [7.0; 3]);
        }
    }

    /// The branch-free slice encoder gives the scalar cast's code for every type, over a
    /// sweep of the `f32` bit patterns (both signs, subnormals, NaN payloads, ±inf) and around
    /// every code's value and the midpoints between neighbouring codes (the ties).
    #[test]
    fn slice_encoder_equals_the_scalar_cast() {
        for ty in MiniFloat::ALL {
            let Some(p) = Encoder::new(ty) else {
                assert_eq!(ty, MiniFloat::E8M0Fnu);
                continue;
            };
            let mut xs: Vec<f32> = (0..=u32::MAX).step_by(65_521).map(f32::from_bits).collect();
            xs.extend([
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                -f32::NAN,
            ]);
            xs.extend([f32::MIN_POSITIVE, f32::MAX, f32::MIN, f32::from_bits(1)]);
            let mut values: Vec<f32> = (0..=255u8)
                .map(|c| ty.decode(c))
                .filter(|v| v.is_finite())
                .collect();
            values.sort_by(f32::total_cmp);
            for w in values.windows(2) {
                let mid = (f64::from(w[0]) + f64::from(w[1])) / 2.0;
                for v in [w[0], mid as f32, w[1]] {
                    for d in -2i32..=2 {
                        let b = v.to_bits() as i64 + i64::from(d);
                        if let Ok(b) = u32::try_from(b) {
                            xs.push(f32::from_bits(b));
                            xs.push(-f32::from_bits(b));
                        }
                    }
                }
            }
            let max = ty.max();
            xs.extend([max * 1.0625, max * 1.125, max * 1.25, max * 2.0]);
            let mut got = vec![0u8; xs.len()];
            encode_f32s(&p, &xs, &mut got);
            for (&x, &g) in xs.iter().zip(&got) {
                assert_eq!(g, ty.encode(x), "{ty} at {x:e} ({:#010x})", x.to_bits());
            }
            // The casts go through the same encoder, in pieces.
            let arr = ndarray::Array1::from(xs.clone());
            let want: Vec<u8> = xs.iter().map(|&x| ty.encode(x)).collect();
            assert_eq!(cast(&arr, ty).to_vec(), want);
            let mut out = vec![0u8; xs.len()];
            cast_into(&arr, ty, &mut out).expect("same length");
            assert_eq!(out, want);
            // The in-range encoder (the block formats' clamped elements) where it applies.
            if !p.fnuz {
                for &x in xs.iter().filter(|x| x.abs() <= max) {
                    assert_eq!(p.encode_in_range(x), ty.encode(x), "{ty} in range at {x:e}");
                }
            }
        }
    }
}
