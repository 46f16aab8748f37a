//! NVFP4: E2M1 elements in blocks of 16 along the last axis, an E4M3 scale per block and an
//! optional per-tensor `f32` scale; bit for bit with torchao's `NVFP4Tensor.to_nvfp4`.
//!
//! ```text
//! block_scale = max|block| / 6                                          (f32)
//! without a tensor scale:  s8 = e4m3(clamp(block_scale, 2^-6, 448));  q = e2m1(clamp(x · (1 / s8), ±6))
//! with one:  pts = max|x| / 2688;  s8 = e4m3(clamp(block_scale / pts, 2^-6, 448));
//!            q = e2m1(clamp(x · ((1 / pts) / s8), ±6))
//! value = q · (pts · s8)   (or q · s8)
//! ```
//! A zero block stores scale `0x08` (`2^-6`); blocks beyond 448 saturate at `0x7e`. Codes pack
//! two a byte, element `2i` in the low nibble.
//!
//! ```
//! use qnumeric::formats::Dequantize as _;
//! use qnumeric::formats::nvfp4::Nvfp4Spec;
//! let x: Vec<f32> = (0..16).map(|i| i as f32 * 0.4).collect();
//! let t = Nvfp4Spec::new(false).quantize_rows(&x, 16)?;
//! assert_eq!(t.block_scales.len(), 1);
//! assert_eq!(t.dequantize()[15], 6.0);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::fmt;

use super::Dequantize;
use super::minifloat::{Encoder, MiniFloat, encode_scaled};
use super::packing::{NibbleOrder, pack_nibbles};
use super::{ElementFormat, EncodedRow, RowCodec, check_finite, check_rows};
use crate::error::{QuantError, Result};

/// Elements per NVFP4 block.
pub const NVFP4_BLOCK: usize = 16;

/// The NVFP4 format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Nvfp4Spec {
    /// Whether a per-tensor `f32` scale is used (`max|x| / 2688`).
    pub per_tensor_scale: bool,
}

/// A tensor in NVFP4.
#[derive(Debug, Clone, PartialEq)]
pub struct Nvfp4Tensor {
    /// The format.
    pub spec: Nvfp4Spec,
    /// Elements per row.
    pub row_len: usize,
    /// The per-tensor scale, when used.
    pub per_tensor_scale: Option<f32>,
    /// One E4M3 code per block of 16, row-major.
    pub block_scales: Vec<u8>,
    /// One E2M1 code per element.
    pub codes: Vec<u8>,
}

impl Nvfp4Spec {
    /// NVFP4 with or without the per-tensor scale.
    #[must_use]
    pub const fn new(per_tensor_scale: bool) -> Self {
        Nvfp4Spec { per_tensor_scale }
    }

    /// Quantizes rows of `row_len` (a multiple of 16): the reference's results.
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] when `row_len` is not a positive multiple of 16 or does
    /// not divide `x.len()`.
    pub fn quantize_rows(&self, x: &[f32], row_len: usize) -> Result<Nvfp4Tensor> {
        // Sized as the input dictates (zeroed pages from the allocator, not a clearing pass);
        // the checks are the `_into` call's.
        let mut out = Nvfp4Tensor {
            spec: *self,
            row_len,
            per_tensor_scale: None,
            block_scales: vec![0; x.len() / NVFP4_BLOCK],
            codes: vec![0; x.len()],
        };
        self.quantize_rows_into(x, row_len, &mut out)?;
        Ok(out)
    }

    /// [`Nvfp4Spec::quantize_rows`] into an existing tensor.
    ///
    /// The buffers of `out` are reused (resized, every entry overwritten): once they have
    /// the capacity, quantizing allocates nothing. On an error `out` is left as it was.
    ///
    /// # Errors
    /// As [`Nvfp4Spec::quantize_rows`].
    pub fn quantize_rows_into(
        &self,
        x: &[f32],
        row_len: usize,
        out: &mut Nvfp4Tensor,
    ) -> Result<()> {
        check_rows(
            "Nvfp4Spec::quantize",
            x.len(),
            row_len,
            NVFP4_BLOCK,
            x.len(),
        )?;
        let pts = self
            .per_tensor_scale
            .then(|| super::tensor_amax(x) / 2688.0);
        out.block_scales.resize(x.len() / NVFP4_BLOCK, 0);
        out.codes.resize(x.len(), 0);
        // Pieces of whole blocks on the rayon pool (feature `rayon`), the same bytes.
        let (scales, codes) = (&mut out.block_scales, &mut out.codes);
        crate::parallel::blocks3(
            x,
            NVFP4_BLOCK,
            (scales, 1),
            (codes, NVFP4_BLOCK),
            |_, x, s, c| {
                nvfp4_blocks(pts, x, s, c);
                true
            },
        );
        (out.spec, out.row_len, out.per_tensor_scale) = (*self, row_len, pts);
        Ok(())
    }
}

/// The block scales and element codes of [`Nvfp4Spec::quantize_rows`] (lengths checked),
/// compiled for the CPU's vector width: per batch of [`BATCH`] blocks their amax, then their
/// e4m3 scales and element multipliers as vectors (one block at a time, the chain amax →
/// division → e4m3 → decode → division of each block ran serially), then the elements
/// through the branch-free e2m1 encoder.
#[inline(always)]
fn nvfp4_blocks_body(pts: Option<f32>, x: &[f32], block_scales: &mut [u8], codes: &mut [u8]) {
    let (Some(e4m3), Some(e2m1)) = (
        Encoder::new(MiniFloat::E4M3Fn),
        Encoder::new(MiniFloat::E2M1Fn),
    ) else {
        return;
    };
    let lo = 2f32.powi(-6);
    // `clamp`, NaN kept, as compare-selects.
    let clamp = |v: f32| {
        let c = if v < lo { lo } else { v };
        let c = if c > 448.0 { 448.0 } else { c };
        if v.is_nan() { v } else { c }
    };
    let (inv_p, p) = match pts {
        Some(p) => (1.0 / p, p),
        None => (1.0, 1.0),
    };
    let per_tensor = pts.is_some();
    // Read once: `MiniFloat::decode` goes through the table's `OnceLock` at each call.
    let e4m3_table = MiniFloat::E4M3Fn.table();
    // Batches of blocks; the last may be shorter.
    for ((xs, cs), ss) in x
        .chunks(NVFP4_BLOCK * BATCH)
        .zip(codes.chunks_mut(NVFP4_BLOCK * BATCH))
        .zip(block_scales.chunks_mut(BATCH))
    {
        let mut amax = [0u32; BATCH];
        let n = xs.len() / NVFP4_BLOCK;
        crate::simd::block_amax_bits(xs, NVFP4_BLOCK, &mut amax[..n]);
        let mut t = [0.0f32; BATCH];
        for (t, &a) in t.iter_mut().zip(&amax) {
            *t = f32::from_bits(a) / 6.0;
        }
        let mut mult = [0.0f32; BATCH];
        for ((t, s), m) in t.iter().zip(ss.iter_mut()).zip(&mut mult) {
            let s8 = e4m3.encode(clamp(if per_tensor { *t / p } else { *t }));
            *s = s8;
            // The same divisions as one block at a time (`(1/p) / dec`, `1 / dec`).
            let dec = e4m3_table[usize::from(s8)];
            *m = if per_tensor { inv_p / dec } else { 1.0 / dec };
        }
        for ((xb, cb), &m) in xs
            .chunks_exact(NVFP4_BLOCK)
            .zip(cs.chunks_exact_mut(NVFP4_BLOCK))
            .zip(&mult)
        {
            encode_scaled(&e2m1, xb, m, 6.0, None, cb);
        }
    }
}

/// Blocks per batch of [`nvfp4_blocks`].
const BATCH: usize = 16;

crate::simd::dispatched512!(fn nvfp4_blocks[](pts: Option<f32>, x: &[f32], block_scales: &mut [u8], codes: &mut [u8]) = nvfp4_blocks_body);

impl Dequantize for Nvfp4Tensor {
    fn element_count(&self) -> usize {
        self.codes.len()
    }

    fn write_values(&self, out: &mut [f32]) {
        decode_blocks(&self.codes, &self.block_scales, self.per_tensor_scale, out);
    }
}

impl Nvfp4Tensor {
    /// Codes two a byte, element `2i` in the low nibble.
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] for an odd element count (never for whole blocks).
    pub fn packed(&self) -> Result<Vec<u8>> {
        pack_nibbles(&self.codes, NibbleOrder::LowFirst)
    }
}

/// The values of blocks: element `E2M1Fn.decode(c)` times the block's scale
/// (`E4M3Fn.decode(s8)`, times the per-tensor scale when there is one).
fn decode_blocks(codes: &[u8], scales: &[u8], pts: Option<f32>, out: &mut [f32]) {
    let (scale_table, elem_table) = (MiniFloat::E4M3Fn.table(), MiniFloat::E2M1Fn.table());
    // The 16-entry lookup by register permutes (`formats::lookup`), the block's scale as
    // `decode_blocks_with` computes it.
    let t16: &[f32; 16] = elem_table[..16].try_into().expect("16 entries");
    let scale = |k: usize| {
        let s = scale_table[usize::from(*scales.get(k)?)];
        Some(pts.map_or(s, |p| p * s))
    };
    super::lookup::lut16_blocks(t16, codes, NVFP4_BLOCK, scale, out);
}

impl fmt::Display for Nvfp4Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.per_tensor_scale {
            "nvfp4"
        } else {
            "nvfp4-no-tensor-scale"
        })
    }
}

impl ElementFormat for Nvfp4Spec {
    fn bits_per_element(&self) -> f64 {
        4.0 + 8.0 / NVFP4_BLOCK as f64
    }

    fn block_len(&self) -> usize {
        NVFP4_BLOCK
    }

    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        const OP: &str = "Nvfp4Spec::fake_quantize_rows";
        check_rows(OP, x.len(), row_len, NVFP4_BLOCK, out.len())?;
        check_finite(OP, x)?;
        if x.iter().all(|v| *v == 0.0) {
            // The per-tensor scale of an all-zero tensor is 0: 0/0. Zeros are exact.
            out.copy_from_slice(x);
            return Ok(());
        }
        self.quantize_rows(x, row_len)?.write_values(out);
        Ok(())
    }
}

impl RowCodec for Nvfp4Spec {
    /// `data`: the E2M1 codes packed two a byte (low nibble first); `scales`: one E4M3 byte
    /// per block of 16; `tensor_scale`: the row's per-tensor scale when used (a row encoded
    /// alone is its own tensor).
    fn encode_row(&self, x: &[f32]) -> Result<EncodedRow> {
        check_finite("Nvfp4Spec::encode_row", x)?;
        let t = self.quantize_rows(x, x.len())?;
        Ok(EncodedRow {
            data: t.packed()?,
            scales: t.block_scales,
            tensor_scale: t.per_tensor_scale,
        })
    }

    fn decode_row(&self, row: &EncodedRow, out: &mut [f32]) -> Result<()> {
        const OP: &str = "Nvfp4Spec::decode_row";
        check_rows(OP, out.len(), out.len().max(1), NVFP4_BLOCK, out.len())?;
        if row.data.len() * 2 != out.len() || row.scales.len() * NVFP4_BLOCK != out.len() {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "row bytes",
                expected: out.len() / 2 + out.len() / NVFP4_BLOCK,
                got: row.data.len() + row.scales.len(),
            });
        }
        let codes = super::packing::unpack_nibbles(&row.data, NibbleOrder::LowFirst);
        decode_blocks(&codes, &row.scales, row.tensor_scale, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block loop as first written (scalar amax folding NaN, the scalar casts): the
    /// oracle of the vectorised [`nvfp4_blocks`].
    fn quantize_scalar(spec: &Nvfp4Spec, x: &[f32]) -> (Option<f32>, Vec<u8>, Vec<u8>) {
        let amax_of = |s: &[f32]| {
            s.iter().fold(0.0f32, |m, v| {
                if m.is_nan() || v.is_nan() {
                    f32::NAN
                } else {
                    m.max(v.abs())
                }
            })
        };
        let pts = spec.per_tensor_scale.then(|| amax_of(x) / 2688.0);
        let e4m3 = MiniFloat::E4M3Fn;
        let lo = 2f32.powi(-6);
        let clamp = |v: f32, lo: f32, hi: f32| if v.is_nan() { v } else { v.clamp(lo, hi) };
        let (mut scales, mut codes) = (Vec::new(), vec![0u8; x.len()]);
        for (xb, cb) in x.chunks_exact(16).zip(codes.chunks_exact_mut(16)) {
            let block_scale = amax_of(xb) / 6.0;
            let (s8, mult) = match pts {
                None => {
                    let s8 = e4m3.encode(clamp(block_scale, lo, 448.0));
                    (s8, 1.0 / e4m3.decode(s8))
                }
                Some(p) => {
                    let s8 = e4m3.encode(clamp(block_scale / p, lo, 448.0));
                    (s8, (1.0 / p) / e4m3.decode(s8))
                }
            };
            scales.push(s8);
            for (c, &v) in cb.iter_mut().zip(xb) {
                *c = MiniFloat::E2M1Fn.encode(clamp(v * mult, -6.0, 6.0));
            }
        }
        (pts, scales, codes)
    }

    /// With and without the per-tensor scale: blocks at many magnitudes, a block with NaN
    /// and ±inf, zeros of both signs.
    #[test]
    fn vectorised_blocks_equal_the_scalar_loop() {
        let mut r = crate::rng::Lcg::new(22);
        let mut x = Vec::new();
        for k in 0..30 {
            let s = 2f32.powi(k * 9 - 130);
            x.extend((0..16).map(|_| (r.unit_f32() * 2.0 - 1.0) * s));
        }
        let mut odd = vec![0.7f32; 16];
        odd[3] = f32::NAN;
        odd[9] = f32::NEG_INFINITY;
        x.extend(odd);
        x.extend([0.0f32; 16]);
        x.extend([-0.0f32; 16]);
        let finite: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
        let finite = &finite[..finite.len() / 16 * 16];
        for per_tensor_scale in [false, true] {
            let spec = Nvfp4Spec { per_tensor_scale };
            for x in [&x[..], finite] {
                let t = spec.quantize_rows(x, 16).expect("whole blocks");
                let (pts, scales, codes) = quantize_scalar(&spec, x);
                assert_eq!(t.per_tensor_scale.map(f32::to_bits), pts.map(f32::to_bits));
                assert_eq!(t.block_scales, scales, "{per_tensor_scale}");
                assert_eq!(t.codes, codes, "{per_tensor_scale}");
            }
        }
    }
}
