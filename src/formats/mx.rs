//! OCP microscaling (MX): blocks of 32 consecutive elements along the last axis share one
//! E8M0 scale (a power of two); the elements are fp8 (MXFP8), fp6 (MXFP6) or fp4 (MXFP4).
//! Bit for bit with torchao 0.18's `MXTensor.to_mx` (emulated path), in its four scale modes.
//!
//! Scale byte of a block with `amax = max|x|` (NaN if the block holds one) and the element
//! type's largest exponent `emax` (e4m3 8, e5m2 15, e2m3 2, e3m2 4, e2m1 2):
//! - `Floor` (the OCP spec's): `clamp(exponent(amax) − emax, −127, 128) + 127`; NaN: 255. The
//!   elements are divided by `2^(byte − 127)` clamped up to `2^-126`, so an all-subnormal block
//!   (byte 0, which decodes as `2^-127`) dequantizes to about half its input: torchao's
//!   behaviour, reproduced. A block whose `amax` is just under a power of two can overflow the
//!   element range and is clamped (the known FLOOR clipping).
//! - `Ceil`: as floor, plus one when `amax` is not a power of two.
//! - `Even`: as floor after rounding `amax` to `mbits` mantissa bits.
//! - `Rceil` (NVIDIA's): `clamp(ceil(log2(amax / max_elem)), −127, 127) + 127` (NaN 255, inf
//!   254); elements multiplied by `2^(127 − byte)` (1 for byte 0).
//!
//! Elements are cast with [`MiniFloat::encode`] after clamping to `±max` (a NaN element of a
//! NaN block: fp8's NaN, and for fp6/fp4 torchao's codes `0x0c`/`0x0e`/`0x03`; `Rceil`
//! multiplies a NaN block by NaN); values are
//! `f32(element) · 2^(byte − 127)` (byte 255: NaN). fp4 codes pack two a byte, element `2i` in
//! the low nibble.
//!
//! ```
//! use qnumeric::formats::Dequantize as _;
//! use qnumeric::formats::minifloat::MiniFloat;
//! use qnumeric::formats::mx::{MxScaleMode, MxSpec};
//! let spec = MxSpec::new(MiniFloat::E2M1Fn, 32, MxScaleMode::Floor)?;
//! let x: Vec<f32> = (0..32).map(|i| i as f32 / 8.0).collect();
//! let t = spec.quantize_rows(&x, 32)?;
//! assert_eq!(t.scales, vec![126]); // amax 3.875: exponent 1 − emax 2 = −1, byte 127 − 1
//! assert_eq!(t.packed()?.len(), 16);
//! assert_eq!(t.dequantize()[8], 1.0);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::fmt;

use super::Dequantize;
use super::lookup::ScaleOp;
use super::minifloat::{Encoder, MiniFloat, encode_scaled};
use super::packing::{NibbleOrder, pack_nibbles};
use super::{ElementFormat, EncodedRow, RowCodec, check_finite, check_rows};
use crate::error::{QuantError, Result};

/// How a block's scale is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MxScaleMode {
    /// The OCP specification's (torchao's default).
    Floor,
    /// NVIDIA's cuBLAS recipe.
    Rceil,
    /// Floor plus one unless `amax` is a power of two.
    Ceil,
    /// Floor after rounding `amax` to the element's mantissa.
    Even,
}

impl MxScaleMode {
    /// Every mode.
    pub const ALL: [MxScaleMode; 4] = [
        MxScaleMode::Floor,
        MxScaleMode::Rceil,
        MxScaleMode::Ceil,
        MxScaleMode::Even,
    ];

    /// torchao's name (`"floor"`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            MxScaleMode::Floor => "floor",
            MxScaleMode::Rceil => "rceil",
            MxScaleMode::Ceil => "ceil",
            MxScaleMode::Even => "even",
        }
    }
}

/// An MX format: element type, block size (32 in the OCP spec) and scale mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MxSpec {
    /// The element type (e4m3fn, e5m2, e2m3fn, e3m2fn, e2m1fn).
    pub elem: MiniFloat,
    /// Elements per block.
    pub block_size: usize,
    /// The scale mode.
    pub mode: MxScaleMode,
}

/// A tensor in an MX format.
#[derive(Debug, Clone, PartialEq)]
pub struct MxTensor {
    /// The format.
    pub spec: MxSpec,
    /// Elements per row.
    pub row_len: usize,
    /// One E8M0 byte per block, row-major (`[rows, row_len / block_size]`).
    pub scales: Vec<u8>,
    /// One element code per element (fp6/fp4 in the low bits).
    pub codes: Vec<u8>,
}

impl MxSpec {
    /// A spec.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for e8m0 or a fnuz element type;
    /// [`QuantError::InvalidParameter`] for a zero block size.
    pub fn new(elem: MiniFloat, block_size: usize, mode: MxScaleMode) -> Result<Self> {
        const OP: &str = "MxSpec::new";
        if !matches!(
            elem,
            MiniFloat::E4M3Fn
                | MiniFloat::E5M2
                | MiniFloat::E2M3Fn
                | MiniFloat::E3M2Fn
                | MiniFloat::E2M1Fn
        ) {
            return Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "MX elements are float8_e4m3fn, float8_e5m2, float6_e2m3fn, float6_e3m2fn or float4_e2m1fn",
            });
        }
        if block_size == 0 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "block_size",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        Ok(MxSpec {
            elem,
            block_size,
            mode,
        })
    }

    /// MXFP8 (e4m3), MXFP6 (e2m3), MXFP4 with blocks of 32, floor mode.
    #[must_use]
    pub const fn standard(elem: MiniFloat) -> Self {
        MxSpec {
            elem,
            block_size: 32,
            mode: MxScaleMode::Floor,
        }
    }

    #[inline(always)]
    fn emax(&self) -> i32 {
        match self.elem {
            MiniFloat::E4M3Fn => 8,
            MiniFloat::E5M2 => 15,
            MiniFloat::E3M2Fn => 4,
            _ => 2,
        }
    }

    /// The code of a NaN element: fp8's NaN; for fp6/fp4 (no NaN) what torchao's own
    /// converter gives (`0x0c` e2m3, `0x0e` e3m2, `0x03` e2m1), not ml_dtypes' −0.
    fn nan_code(&self) -> u8 {
        match self.elem {
            MiniFloat::E2M3Fn => 0x0c,
            MiniFloat::E3M2Fn => 0x0e,
            MiniFloat::E2M1Fn => 0x03,
            e => e.encode(f32::NAN),
        }
    }

    #[inline(always)]
    fn mbits(&self) -> u32 {
        match self.elem {
            MiniFloat::E4M3Fn | MiniFloat::E2M3Fn => 3,
            MiniFloat::E5M2 | MiniFloat::E3M2Fn => 2,
            _ => 1,
        }
    }

    /// The scale byte of a block whose largest magnitude is `amax`.
    #[must_use]
    pub fn scale_byte(&self, amax: f32) -> u8 {
        if amax.is_nan() {
            return 255;
        }
        let floor_of = |bits: u32, plus: i32| -> u8 {
            let e = ((bits >> 23) & 0xff) as i32 - 127 - self.emax() + plus;
            (e.clamp(-127, 128) + 127) as u8
        };
        let bits = amax.to_bits() & 0x7fff_ffff;
        match self.mode {
            MxScaleMode::Floor => floor_of(bits, 0),
            MxScaleMode::Ceil => floor_of(bits, i32::from(bits & 0x7f_ffff != 0)),
            MxScaleMode::Even => {
                let rounded = bits.wrapping_add(1 << (22 - self.mbits())) & 0xff80_0000;
                floor_of(rounded, 0)
            }
            MxScaleMode::Rceil => {
                if amax.is_infinite() {
                    return 254;
                }
                let descale = amax / self.elem.max();
                let e = ceil_log2(descale);
                (e.clamp(-127, 127) + 127) as u8
            }
        }
    }

    /// The scale byte of a block whose largest magnitude has the bit pattern `amax`, and the
    /// multiplier of its elements: dividing by the scale `2^k` is multiplying by `2^-k` (both
    /// round the same exact value once, and `2^-k` is representable for every scale byte).
    #[inline(always)]
    fn block_scale(&self, amax: u32) -> (u8, f32) {
        if self.mode == MxScaleMode::Rceil {
            let byte = self.scale_byte(f32::from_bits(amax));
            // Rceil's NaN scale makes every element NaN.
            let mult = match byte {
                255 => f32::NAN,
                0 => 1.0,
                _ => pow2(127 - i32::from(byte)),
            };
            return (byte, mult);
        }
        let (byte, mult) = self.pow2_block_scale(amax);
        (byte as u8, mult)
    }

    /// [`MxSpec::block_scale`] for the floor, ceil and even modes, branch-free (the same
    /// fields as [`MxSpec::scale_byte`]); the byte as a `u32`.
    #[inline(always)]
    fn pow2_block_scale(&self, amax: u32) -> (u32, f32) {
        let bits = match self.mode {
            MxScaleMode::Even => amax.wrapping_add(1 << (22 - self.mbits())) & 0xff80_0000,
            _ => amax,
        };
        let plus = i32::from(self.mode == MxScaleMode::Ceil && amax & 0x7f_ffff != 0);
        let e = ((bits >> 23) & 0xff) as i32 - 127 - self.emax() + plus;
        let e = if e < -127 { -127 } else { e };
        let e = if e > 128 { 128 } else { e };
        let byte = if amax > 0x7f80_0000 { 255 } else { e + 127 };
        // `1 / max(2^(byte − 127), 2^-126)`: `2^k` for `k = 127 − byte` up to 126, `2^-127`
        // (a subnormal) for byte 254, and 0 for the NaN byte 255 (`1 / 2^128 = 1 / inf`:
        // finite elements become ±0, infinite ones NaN).
        let k = 127 - byte; // -128..=127
        let k = if k > 126 { 126 } else { k };
        let normal = ((k + 127).max(0) as u32) << 23;
        let mult_bits = if k >= -126 {
            normal
        } else if k == -127 {
            1 << 22
        } else {
            0
        };
        (byte as u32, f32::from_bits(mult_bits))
    }

    /// Quantizes rows of `row_len` (a multiple of the block size): the reference's results,
    /// NaN and ±inf included.
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] when `row_len` is not a positive multiple of the block size
    /// or does not divide `x.len()`.
    pub fn quantize_rows(&self, x: &[f32], row_len: usize) -> Result<MxTensor> {
        // Sized as the input dictates (zeroed pages from the allocator, not a clearing pass);
        // the checks are the `_into` call's.
        let mut out = MxTensor {
            spec: *self,
            row_len,
            scales: vec![0; x.len().checked_div(self.block_size).unwrap_or(0)],
            codes: vec![0; x.len()],
        };
        self.quantize_rows_into(x, row_len, &mut out)?;
        Ok(out)
    }

    /// [`MxSpec::quantize_rows`] into an existing tensor.
    ///
    /// The buffers of `out` are reused (resized, every entry overwritten): once they have
    /// the capacity, quantizing allocates nothing. On an error `out` is left as it was.
    ///
    /// # Examples
    /// ```
    /// use qnumeric::formats::minifloat::MiniFloat;
    /// use qnumeric::formats::mx::MxSpec;
    /// let spec = MxSpec::standard(MiniFloat::E2M1Fn);
    /// let mut t = spec.quantize_rows(&[0.5f32; 64], 32)?; // allocates once
    /// for step in 1..4 {
    ///     let w = vec![0.1 * step as f32; 64];
    ///     spec.quantize_rows_into(&w, 32, &mut t)?; // reuses `t`'s buffers
    /// }
    /// assert_eq!(t.scales.len(), 2);
    /// assert!(spec.quantize_rows_into(&[1.0; 48], 32, &mut t).is_err()); // `t` unchanged
    /// assert_eq!(t.codes.len(), 64);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    ///
    /// # Errors
    /// As [`MxSpec::quantize_rows`].
    pub fn quantize_rows_into(&self, x: &[f32], row_len: usize, out: &mut MxTensor) -> Result<()> {
        self.check("MxSpec::quantize")?;
        check_rows(
            "MxSpec::quantize",
            x.len(),
            row_len,
            self.block_size,
            x.len(),
        )?;
        out.scales.resize(x.len() / self.block_size, 0);
        out.codes.resize(x.len(), 0);
        // Pieces of whole blocks on the rayon pool (feature `rayon`), the same bytes.
        let bs = self.block_size;
        let (scales, codes) = (&mut out.scales, &mut out.codes);
        crate::parallel::blocks3(x, bs, (scales, 1), (codes, bs), |_, x, s, c| {
            mx_blocks(self, x, s, c);
            true
        });
        (out.spec, out.row_len) = (*self, row_len);
        Ok(())
    }

    /// The fields are public (and deserializable): a spec not built by [`MxSpec::new`] is
    /// checked as `new` checks it, its error given `op`.
    fn check(&self, op: &'static str) -> Result<()> {
        MxSpec::new(self.elem, self.block_size, self.mode)
            .map(|_| ())
            .map_err(|e| e.with_op(op))
    }

    /// The value of element `code` in a block with scale `byte`.
    #[must_use]
    pub fn value(&self, code: u8, byte: u8) -> f32 {
        if byte == 255 {
            return f32::NAN;
        }
        self.elem.decode(code) * pow2(i32::from(byte) - 127)
    }
}

/// The scale bytes and element codes of [`MxSpec::quantize_rows`] (lengths checked), compiled
/// for the CPU's vector width: per block the amax and scale byte ([`MxSpec::block_scale`]),
/// then the elements through the branch-free element encoder.
#[inline(always)]
fn mx_blocks_body(spec: &MxSpec, x: &[f32], scales: &mut [u8], codes: &mut [u8]) {
    let max = spec.elem.max();
    let nan = spec.nan_code();
    let Some(enc) = Encoder::new(spec.elem) else {
        return;
    };
    let bs = spec.block_size;
    // Batches of blocks: their maxima, then their scales, then their elements, so that the
    // chains maximum → scale → multiplier of the batch's blocks are independent of each
    // other (one block at a time, each chain waited for the one before).
    let mut xs = x.chunks_exact(bs.saturating_mul(BATCH));
    let mut cs = codes.chunks_exact_mut(bs.saturating_mul(BATCH));
    let mut ss = scales.chunks_exact_mut(BATCH);
    for ((xs, cs), ss) in (&mut xs).zip(&mut cs).zip(&mut ss) {
        let mut amax = [0u32; BATCH];
        crate::simd::block_amax_bits(xs, bs, &mut amax);
        let mut mult = [0.0f32; BATCH];
        if spec.mode == MxScaleMode::Rceil {
            for ((m, s), &a) in mult.iter_mut().zip(ss.iter_mut()).zip(&amax) {
                (*s, *m) = spec.block_scale(a);
            }
        } else {
            // Branch-free, the mode fixed: a vector loop over the batch.
            let mut bytes = [0u32; BATCH];
            for ((m, b), &a) in mult.iter_mut().zip(&mut bytes).zip(&amax) {
                (*b, *m) = spec.pow2_block_scale(a);
            }
            for (s, &b) in ss.iter_mut().zip(&bytes) {
                *s = b as u8;
            }
        }
        for ((xb, cb), &m) in xs.chunks_exact(bs).zip(cs.chunks_exact_mut(bs)).zip(&mult) {
            encode_scaled(&enc, xb, m, max, Some(nan), cb);
        }
    }
    for ((xb, cb), s) in xs
        .remainder()
        .chunks_exact(bs)
        .zip(cs.into_remainder().chunks_exact_mut(bs))
        .zip(ss.into_remainder())
    {
        let mut amax = [0];
        crate::simd::block_amax_bits(xb, bs, &mut amax);
        let m;
        (*s, m) = spec.block_scale(amax[0]);
        encode_scaled(&enc, xb, m, max, Some(nan), cb);
    }
}

/// Blocks per batch of [`mx_blocks`].
const BATCH: usize = 16;

crate::simd::dispatched512!(fn mx_blocks[](spec: &MxSpec, x: &[f32], scales: &mut [u8], codes: &mut [u8]) = mx_blocks_body);

/// `2^e` as an f32 for `e` in `-149..=127`.
#[inline(always)]
fn pow2(e: i32) -> f32 {
    if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (e + 149).max(0))
    }
}

/// `ceil(log2(v))` for `v ≥ 0` (`-1000` for 0: clamped by the caller).
#[inline(always)]
fn ceil_log2(v: f32) -> i32 {
    if v <= 0.0 {
        return -1000;
    }
    let bits = v.to_bits();
    let field = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if field == 0 {
        // Subnormal: v = mant · 2^-149.
        let top = 31 - mant.leading_zeros() as i32; // floor(log2(mant))
        let exact = mant.is_power_of_two();
        return top - 149 + i32::from(!exact);
    }
    field - 127 + i32::from(mant != 0)
}

impl Dequantize for MxTensor {
    fn element_count(&self) -> usize {
        self.codes.len()
    }

    fn write_values(&self, out: &mut [f32]) {
        let table = self.spec.elem.table();
        let (elem, block) = (self.spec.elem, self.spec.block_size);
        let scale = |k: usize| {
            let byte = *self.scales.get(k)?;
            // 0xff (NaN) makes every element NaN, as `mx_values` fills it.
            Some(if byte == 255 {
                f32::NAN
            } else {
                pow2(i32::from(byte) - 127)
            })
        };
        if elem == MiniFloat::E2M1Fn {
            // MXFP4: the 16-entry lookup by register permutes (`formats::lookup`).
            let t16: &[f32; 16] = table[..16].try_into().expect("16 entries");
            super::lookup::lut16_blocks(t16, &self.codes, block, scale, out);
            return;
        }
        // MXFP8 (e4m3fn, e5m2) by arithmetic where the CPU converts halves (no gather).
        if !super::lookup::fp8_blocks(elem, &self.codes, block, scale, ScaleOp::Mul, out) {
            mx_values(block, table, &self.codes, &self.scales, out);
        }
    }
}

/// [`MxSpec::value`] of every element, block by block (the element table read once, the
/// block's scale computed once), compiled for the CPU's vector width.
#[inline(always)]
fn mx_values_body(block: usize, table: &[f32; 256], codes: &[u8], scales: &[u8], out: &mut [f32]) {
    let b = block.max(1);
    for ((cb, ob), &byte) in codes.chunks(b).zip(out.chunks_mut(b)).zip(scales) {
        if byte == 255 {
            ob.fill(f32::NAN);
            continue;
        }
        let s = pow2(i32::from(byte) - 127);
        for (o, &c) in ob.iter_mut().zip(cb) {
            *o = table[usize::from(c)] * s;
        }
    }
}

crate::simd::dispatched512!(fn mx_values[](block: usize, table: &[f32; 256], codes: &[u8], scales: &[u8], out: &mut [f32]) = mx_values_body);

impl MxTensor {
    /// fp4 codes two a byte, element `2i` in the low nibble (torchao's layout).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for elements other than fp4;
    /// [`QuantError::NotMultiple`] for an odd element count.
    pub fn packed(&self) -> Result<Vec<u8>> {
        if self.spec.elem != MiniFloat::E2M1Fn {
            return Err(QuantError::UnsupportedConfig {
                op: "MxTensor::packed",
                reason: "only fp4 elements pack two a byte",
            });
        }
        pack_nibbles(&self.codes, NibbleOrder::LowFirst)
    }
}

impl fmt::Display for MxSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.elem {
            MiniFloat::E4M3Fn => "mxfp8",
            MiniFloat::E5M2 => "mxfp8-e5m2",
            MiniFloat::E2M3Fn => "mxfp6",
            MiniFloat::E3M2Fn => "mxfp6-e3m2",
            _ => "mxfp4",
        };
        f.write_str(name)?;
        if self.block_size != 32 {
            write!(f, "-b{}", self.block_size)?;
        }
        if self.mode != MxScaleMode::Floor {
            write!(f, "-{}", self.mode.name())?;
        }
        Ok(())
    }
}

impl ElementFormat for MxSpec {
    fn bits_per_element(&self) -> f64 {
        f64::from(self.elem.bits()) + 8.0 / self.block_size as f64
    }

    fn block_len(&self) -> usize {
        self.block_size
    }

    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        const OP: &str = "MxSpec::fake_quantize_rows";
        check_rows(OP, x.len(), row_len, self.block_size, out.len())?;
        check_finite(OP, x)?;
        self.quantize_rows(x, row_len)?.write_values(out);
        Ok(())
    }
}

impl RowCodec for MxSpec {
    /// `data`: the element codes (fp4 packed two a byte, low nibble first; fp6 and fp8 one a
    /// byte); `scales`: one E8M0 byte per block.
    fn encode_row(&self, x: &[f32]) -> Result<EncodedRow> {
        check_finite("MxSpec::encode_row", x)?;
        let t = self.quantize_rows(x, x.len())?;
        let data = if self.elem == MiniFloat::E2M1Fn {
            t.packed()?
        } else {
            t.codes
        };
        Ok(EncodedRow {
            data,
            scales: t.scales,
            tensor_scale: None,
        })
    }

    fn decode_row(&self, row: &EncodedRow, out: &mut [f32]) -> Result<()> {
        const OP: &str = "MxSpec::decode_row";
        self.check(OP)?;
        check_rows(OP, out.len(), out.len().max(1), self.block_size, out.len())?;
        let per_byte = if self.elem == MiniFloat::E2M1Fn { 2 } else { 1 };
        let want = (out.len() / per_byte, out.len() / self.block_size);
        if row.data.len() != want.0 || row.scales.len() != want.1 {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "row bytes",
                expected: want.0 + want.1,
                got: row.data.len() + row.scales.len(),
            });
        }
        for (i, o) in out.iter_mut().enumerate() {
            let code = if per_byte == 2 {
                (row.data[i / 2] >> (4 * (i % 2))) & 0xf
            } else {
                row.data[i]
            };
            *o = self.value(code, row.scales[i / self.block_size]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's block loop as first written (scalar amax folding NaN, a division by
    /// the scale, the scalar cast): the oracle of the vectorised [`mx_blocks`].
    fn quantize_scalar(spec: &MxSpec, x: &[f32]) -> (Vec<u8>, Vec<u8>) {
        let mut scales = Vec::new();
        let mut codes = vec![0u8; x.len()];
        let max = spec.elem.max();
        for (xb, cb) in x
            .chunks_exact(spec.block_size)
            .zip(codes.chunks_exact_mut(spec.block_size))
        {
            let amax = xb.iter().fold(0.0f32, |m, v| {
                if m.is_nan() || v.is_nan() {
                    f32::NAN
                } else {
                    m.max(v.abs())
                }
            });
            let byte = spec.scale_byte(amax);
            scales.push(byte);
            for (c, &v) in cb.iter_mut().zip(xb) {
                let s = match spec.mode {
                    MxScaleMode::Rceil => {
                        let r = match byte {
                            0 => 1.0,
                            255 => f32::NAN,
                            _ => pow2(127 - i32::from(byte)),
                        };
                        v * r
                    }
                    _ => v / f32::from_bits(u32::from(byte) << 23).max(f32::MIN_POSITIVE),
                };
                *c = if s.is_nan() {
                    spec.nan_code()
                } else {
                    spec.elem.encode(s.clamp(-max, max))
                };
            }
        }
        (scales, codes)
    }

    /// Every element type and scale mode, block sizes 32, 8 and 48, blocks of ordinary values at
    /// many magnitudes (f32 subnormals to near `f32::MAX`), blocks with a NaN (the scale byte
    /// 255: NaN elements for rceil, ±0 and NaN for the other modes), with ±inf, all zeros
    /// of both signs.
    #[test]
    fn vectorised_blocks_equal_the_scalar_loop() {
        let mut r = crate::rng::Lcg::new(21);
        for elem in [
            MiniFloat::E4M3Fn,
            MiniFloat::E5M2,
            MiniFloat::E2M3Fn,
            MiniFloat::E3M2Fn,
            MiniFloat::E2M1Fn,
        ] {
            for mode in [
                MxScaleMode::Floor,
                MxScaleMode::Rceil,
                MxScaleMode::Ceil,
                MxScaleMode::Even,
            ] {
                for block in [32usize, 8, 48] {
                    let spec = MxSpec::new(elem, block, mode).expect("valid");
                    let mut special = Vec::new();
                    let mut nan_block = vec![1.5f32; block];
                    nan_block[block / 2] = f32::NAN;
                    nan_block[1] = f32::INFINITY;
                    special.extend(nan_block);
                    let mut inf_block = vec![-3.0f32; block];
                    inf_block[0] = f32::NEG_INFINITY;
                    special.extend(inf_block);
                    special.extend(vec![0.0f32; block]);
                    special.extend(vec![-0.0f32; block]);
                    special.extend(vec![f32::MAX; block]);
                    special.extend(vec![-f32::from_bits(1); block]);
                    // The special blocks in the first batch of 16 blocks and in the last,
                    // partial one, around blocks at many magnitudes.
                    let mut x = special.clone();
                    for k in 0..40 {
                        let s = 2f32.powi(k * 7 - 140);
                        x.extend((0..block).map(|_| (r.unit_f32() * 2.0 - 1.0) * s));
                    }
                    x.extend(&special);
                    let t = spec.quantize_rows(&x, block).expect("whole blocks");
                    let (scales, codes) = quantize_scalar(&spec, &x);
                    assert_eq!(t.scales, scales, "{elem} {mode:?} {block}");
                    assert_eq!(t.codes, codes, "{elem} {mode:?} {block}");
                }
            }
        }
    }
}
