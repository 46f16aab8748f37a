//! GGML's quantized blocks (llama.cpp, candle, the GGUF files): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
//! MXFP4, the k-quants (Q2_K … Q6_K) and NVFP4, byte for byte as ggml's C reference
//! (`quantize_row_*_ref`, `dequantize_row_*`) and gguf-py store and read them.
//!
//! | type | bytes / block | elements | layout |
//! |---|---:|---:|---|
//! | Q8_0 | 34 | 32 | `d` f16, 32 × i8 |
//! | Q4_0 | 18 | 32 | `d` f16, 16 bytes: element `j` low nibble, `j + 16` high |
//! | Q4_1 | 20 | 32 | `d`, `m` f16, 16 bytes as Q4_0 |
//! | Q5_0 | 22 | 32 | `d` f16, `qh` u32 (bit 4 of element `j` in bit `j`), 16 bytes as Q4_0 |
//! | Q5_1 | 24 | 32 | `d`, `m` f16, `qh`, 16 bytes |
//! | MXFP4 | 17 | 32 | E8M0 byte, 16 bytes as Q4_0 (doubled E2M1 codes, scale halved) |
//! | Q2_K, Q3_K, Q4_K, Q5_K, Q6_K | 84, 110, 144, 176, 210 | 256 | ggml's super-blocks (decode only) |
//! | NVFP4 | 36 | 64 | 4 unsigned-E4M3 sub-block scales, 32 bytes |
//!
//! Quantizers round as ggml does: Q8_0 with `roundf` (ties away from zero), Q4/Q5 with
//! `(int)(x · id + 8.5)` (ties up); f16 fields round to nearest even and overflow to ±inf (a
//! block whose scale overflows dequantizes to ±inf or NaN, as in ggml). The k-quants and NVFP4
//! are decoded only (gguf-py, the reference of the golden cases, has no quantizer for them).
//!
//! ```
//! use qnumeric::formats::ggml::GgmlType;
//! let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
//! let mut blocks = vec![0u8; 18];
//! GgmlType::Q4_0.quantize_row(&x, &mut blocks)?;
//! let mut y = vec![0.0f32; 32];
//! GgmlType::Q4_0.dequantize_row(&blocks, &mut y)?;
//! assert_eq!(y[0], -16.0); // the block's largest magnitude is exact
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use half::f16;

use super::{ElementFormat, EncodedRow, RowCodec, check_finite, check_rows};
use crate::error::{QuantError, Result};

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2;

/// A GGML block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[allow(non_camel_case_types)]
#[non_exhaustive]
pub enum GgmlType {
    /// 8-bit, one f16 scale per 32.
    Q8_0,
    /// 4-bit symmetric, one f16 scale per 32.
    Q4_0,
    /// 4-bit with an f16 scale and minimum per 32.
    Q4_1,
    /// 5-bit symmetric.
    Q5_0,
    /// 5-bit with a minimum.
    Q5_1,
    /// GGML's MXFP4 (E2M1 with an E8M0 scale per 32).
    Mxfp4,
    /// 2-bit k-quant.
    Q2_K,
    /// 3-bit k-quant.
    Q3_K,
    /// 4-bit k-quant.
    Q4_K,
    /// 5-bit k-quant.
    Q5_K,
    /// 6-bit k-quant.
    Q6_K,
    /// GGML's NVFP4 (E2M1, an unsigned E4M3 scale per 16, blocks of 64).
    Nvfp4,
}

/// The doubled E2M1 values ggml stores (`kvalues_mxfp4`).
const KVALUES_FP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

impl GgmlType {
    /// Every type.
    pub const ALL: [GgmlType; 12] = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Mxfp4,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Nvfp4,
    ];

    /// ggml's name (`"Q4_0"`, `"MXFP4"`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Mxfp4 => "MXFP4",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Nvfp4 => "NVFP4",
        }
    }

    /// Elements per block.
    #[must_use]
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                256
            }
            GgmlType::Nvfp4 => 64,
            _ => 32,
        }
    }

    /// Bytes per block.
    #[must_use]
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Mxfp4 => 17,
            GgmlType::Q2_K => 84,
            GgmlType::Q3_K => 110,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
            GgmlType::Nvfp4 => 36,
        }
    }

    /// Whether [`GgmlType::quantize_row`] can encode this type (Q8_0, Q4_0, Q4_1, Q5_0,
    /// Q5_1, MXFP4).
    #[must_use]
    pub fn can_quantize(self) -> bool {
        matches!(
            self,
            GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Mxfp4
        )
    }

    /// Bytes for `elements` elements.
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] when `elements` is not a multiple of the block size.
    pub fn row_bytes(self, elements: usize) -> Result<usize> {
        if !elements.is_multiple_of(self.block_size()) {
            return Err(QuantError::NotMultiple {
                op: "GgmlType::row_bytes",
                what: "element count",
                len: elements,
                multiple_of: self.block_size(),
            });
        }
        Ok(elements / self.block_size() * self.type_size())
    }

    /// Encodes `x` (a multiple of the block size) into `out` (`row_bytes(x.len())` bytes).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for the decode-only types; [`QuantError::NotMultiple`]
    /// / [`QuantError::LengthMismatch`] for lengths; [`QuantError::NanInput`] /
    /// [`QuantError::InfiniteInput`] (ggml's blocks cannot hold them), with the index of the
    /// first such value. Nothing is written on a length or type error. NaN and inf are found
    /// by the encoding pass itself (each block's maximum), not by a read-only scan before it,
    /// as the kernels find theirs: after such an error `out` holds unspecified bytes. Check
    /// the input first (`x.iter().all(|v| v.is_finite())`) where `out` must stay untouched.
    pub fn quantize_row(self, x: &[f32], out: &mut [u8]) -> Result<()> {
        const OP: &str = "GgmlType::quantize_row";
        if !self.can_quantize() {
            return Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "this GGML type is decoded only (no reference quantizer)",
            });
        }
        let bytes = self.row_bytes(x.len()).map_err(|e| e.with_op(OP))?;
        if out.len() != bytes {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "output bytes",
                expected: bytes,
                got: out.len(),
            });
        }
        if self == GgmlType::Mxfp4 {
            check_finite(OP, x)?;
        }
        // Pieces of whole blocks on the rayon pool (feature `rayon`), the same bytes.
        let (block, size) = (self.block_size(), self.type_size());
        if !crate::parallel::blocks2(x, block, out, size, |_, x, o| encode_blocks(self, x, o)) {
            // The pass met a NaN or an infinity: the first one's index.
            check_finite(OP, x)?;
        }
        Ok(())
    }

    /// Decodes `bytes` (whole blocks) into `out` (`bytes.len() / type_size · block_size`
    /// elements). Any bytes decode (an inf or NaN f16 scale gives inf or NaN values, as in
    /// ggml).
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] when `bytes` is not whole blocks;
    /// [`QuantError::LengthMismatch`] when `out` has another length. Nothing is written on an
    /// error.
    pub fn dequantize_row(self, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        const OP: &str = "GgmlType::dequantize_row";
        if !bytes.len().is_multiple_of(self.type_size()) {
            return Err(QuantError::NotMultiple {
                op: OP,
                what: "byte count",
                len: bytes.len(),
                multiple_of: self.type_size(),
            });
        }
        let n = bytes.len() / self.type_size() * self.block_size();
        if out.len() != n {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "output",
                expected: n,
                got: out.len(),
            });
        }
        dequantize_blocks(self, bytes, out);
        Ok(())
    }

    /// Encodes rows of `row_len` (the element count a multiple of `row_len`, `row_len` of the
    /// block size).
    ///
    /// # Errors
    /// As [`GgmlType::quantize_row`].
    pub fn quantize_rows(self, x: &[f32], row_len: usize) -> Result<Vec<u8>> {
        const OP: &str = "GgmlType::quantize_rows";
        check_rows(OP, x.len(), row_len, self.block_size(), x.len())?;
        let mut out = vec![0u8; self.row_bytes(x.len()).map_err(|e| e.with_op(OP))?];
        self.quantize_row(x, &mut out).map_err(|e| e.with_op(OP))?;
        Ok(out)
    }
}

/// The blocks of [`GgmlType::dequantize_row`] (lengths checked), compiled for the CPU's
/// vector width, the type's loop chosen once per row (the same operations in the same order
/// whatever the copy: results are identical).
#[inline(always)]
fn dequantize_blocks_body(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let blocks = bytes
        .chunks_exact(ty.type_size())
        .zip(out.chunks_exact_mut(ty.block_size()));
    // `for` loops, not `for_each`: a library function may stay out of line, compiled
    // without the target features. Q8_0 and Q4_0 get loops of their own, where the type is a
    // constant (the block's code then vectorises whole); the other types decode through the
    // match per block.
    match ty {
        GgmlType::Q8_0 => {
            for (b, y) in blocks {
                dequantize_block(GgmlType::Q8_0, b, y);
            }
        }
        GgmlType::Q4_0 => {
            for (b, y) in blocks {
                dequantize_block(GgmlType::Q4_0, b, y);
            }
        }
        _ => {
            for (b, y) in blocks {
                dequantize_block(ty, b, y);
            }
        }
    }
}

/// One block of any type (the decoding of [`GgmlType::dequantize_row`]).
#[inline(always)]
fn dequantize_block(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::Q8_0 => {
            let d = h(b, 0);
            for (y, &q) in y.iter_mut().zip(&b[2..34]) {
                *y = f32::from(q as i8) * d;
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            dq_legacy(ty, b, y);
        }
        GgmlType::Mxfp4 => {
            let d = e8m0_half(b[0]);
            for j in 0..16 {
                y[j] = f32::from(KVALUES_FP4[usize::from(b[1 + j] & 0xf)]) * d;
                y[j + 16] = f32::from(KVALUES_FP4[usize::from(b[1 + j] >> 4)]) * d;
            }
        }
        GgmlType::Nvfp4 => {
            for s in 0..4 {
                let d = ue4m3_half(b[s]);
                let qs = &b[4 + s * 8..4 + s * 8 + 8];
                for l in 0..8 {
                    y[s * 16 + l] = f32::from(KVALUES_FP4[usize::from(qs[l] & 0xf)]) * d;
                    y[s * 16 + l + 8] = f32::from(KVALUES_FP4[usize::from(qs[l] >> 4)]) * d;
                }
            }
        }
        GgmlType::Q2_K => dq_q2_k(b, y),
        GgmlType::Q3_K => dq_q3_k(b, y),
        GgmlType::Q4_K => dq_q4_k(b, y),
        GgmlType::Q5_K => dq_q5_k(b, y),
        GgmlType::Q6_K => dq_q6_k(b, y),
    }
}

crate::simd::dispatched512!(fn dequantize_blocks[](ty: GgmlType, bytes: &[u8], out: &mut [f32]) = dequantize_blocks_body);

/// The blocks of [`GgmlType::quantize_row`] (lengths checked; MXFP4's input checked
/// finite): whether every value was finite (else `out` holds unspecified bytes). The AVX2
/// kernels ([`avx2`]) where they run, else the portable loops compiled for the CPU.
#[allow(unsafe_code)]
fn encode_blocks(ty: GgmlType, x: &[f32], out: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let kind = match ty {
            GgmlType::Q8_0 => Some(avx2::Legacy::Q8),
            GgmlType::Q4_0 => Some(avx2::Legacy::Sym(4)),
            GgmlType::Q5_0 => Some(avx2::Legacy::Sym(5)),
            GgmlType::Q4_1 => Some(avx2::Legacy::Min(4)),
            GgmlType::Q5_1 => Some(avx2::Legacy::Min(5)),
            _ => None,
        };
        if let Some(kind) = kind.filter(|&k| avx2::runs(k)) {
            // SAFETY: `runs` checked AVX2 and F16C.
            return unsafe { avx2::quantize(kind, x, out) };
        }
    }
    quantize_blocks(ty, x, out)
}

/// The portable blocks of [`encode_blocks`], compiled for the CPU's vector width (the same
/// operations in the same order whatever the copy: results are identical). Each block's
/// largest magnitude (or lanes of them) says whether a value was NaN or infinite.
#[inline(always)]
fn quantize_blocks_body(ty: GgmlType, x: &[f32], out: &mut [u8]) -> bool {
    // `for` loops, not `for_each` / `fold`: those are library functions the compiler may
    // keep out of line, compiled without the target features (a call to `roundf` per value).
    match ty {
        GgmlType::Q8_0 => return sym_row(x, out, (34, 127.0), Q8Blocks),
        GgmlType::Q4_0 => return sym_row(x, out, (18, -8.0), QSymBlocks::<4>),
        GgmlType::Q5_0 => return sym_row(x, out, (22, -16.0), QSymBlocks::<5>),
        _ => {}
    }
    let mut finite = true;
    for (xb, ob) in x
        .chunks_exact(ty.block_size())
        .zip(out.chunks_exact_mut(ty.type_size()))
    {
        finite &= match ty {
            GgmlType::Q8_0 => q8_0(xb, ob),
            GgmlType::Q4_0 => q_sym(xb, ob, 4),
            GgmlType::Q5_0 => q_sym(xb, ob, 5),
            GgmlType::Q4_1 => q_min(xb, ob, 4),
            GgmlType::Q5_1 => q_min(xb, ob, 5),
            _ => {
                mxfp4(xb, ob);
                true
            }
        };
    }
    finite
}

crate::simd::dispatched512!(fn quantize_blocks[](ty: GgmlType, x: &[f32], out: &mut [u8]) -> bool = quantize_blocks_body);

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[inline(always)]
fn put_h(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// `2^(e − 127) / 2` (`ggml_e8m0_to_fp32_half`).
fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

/// ggml's unsigned E4M3 scale, halved (`ggml_ue4m3_to_fp32`); `0x00` and `0x7f` are 0.
fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let exp = i32::from((x >> 3) & 0xf);
    let man = f32::from(x & 7);
    let raw = if exp == 0 {
        man * 2f32.powi(-9)
    } else {
        (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    };
    raw * 0.5
}

/// The largest `|v|` of a block of 32 finite values ([`super::amax_or_nan`], vectorised).
#[inline(always)]
fn block_amax(x: &[f32; 32]) -> f32 {
    super::amax_or_nan(x)
}

/// The per-block pieces of a row of [`sym_row`]: methods, not closures, so that they inline
/// into the copy compiled for the CPU (a closure or a function passed as `impl Fn` was
/// called through an out-of-line shim compiled without the target features: half the time
/// of a Q8_0 row went to those calls).
trait SymBlocks {
    /// Whether [`SymBlocks::scale_of`] takes the block maxima of the batch, found together
    /// first ([`crate::simd::block_amax_bits`]); else it is given 0 and finds its own.
    const BATCH_AMAX: bool;
    /// The block's scale before the division (its largest magnitude, signed or not), from
    /// its largest magnitude `amax`.
    fn scale_of(&self, x: &[f32; 32], amax: f32) -> f32;
    /// The block's codes into its bytes, from the reciprocal scale `id`.
    fn codes(&self, x: &[f32; 32], id: f32, b: &mut [u8]);
    /// One whole block by the one-block quantizer (the rows' last partial batch): whether
    /// its values were finite.
    fn one(&self, x: &[f32], b: &mut [u8]) -> bool;
}

/// Q8_0's blocks.
struct Q8Blocks;

impl SymBlocks for Q8Blocks {
    const BATCH_AMAX: bool = true;
    #[inline(always)]
    fn scale_of(&self, _: &[f32; 32], amax: f32) -> f32 {
        amax
    }
    #[inline(always)]
    fn codes(&self, x: &[f32; 32], id: f32, b: &mut [u8]) {
        q8_0_codes(x, id, (&mut b[2..34]).try_into().expect("32 codes"));
    }
    #[inline(always)]
    fn one(&self, x: &[f32], b: &mut [u8]) -> bool {
        q8_0(x, b)
    }
}

/// Q4_0's (`BITS = 4`) and Q5_0's (`BITS = 5`) blocks.
struct QSymBlocks<const BITS: u32>;

impl<const BITS: u32> SymBlocks for QSymBlocks<BITS> {
    // (The first index of the largest magnitude reads the block again: one pass over it in
    // L1 after its maximum measured faster than the batch's maxima first.)
    const BATCH_AMAX: bool = false;
    #[inline(always)]
    fn scale_of(&self, x: &[f32; 32], amax: f32) -> f32 {
        first_largest(x, amax)
    }
    #[inline(always)]
    fn codes(&self, x: &[f32; 32], id: f32, b: &mut [u8]) {
        q_sym_codes(x, id, b, BITS);
    }
    #[inline(always)]
    fn one(&self, x: &[f32], b: &mut [u8]) -> bool {
        q_sym(x, b, BITS)
    }
}

/// The blocks of a row of a type with one f16 scale `d` at the start of each block (Q8_0,
/// Q4_0, Q5_0), [`BATCH`] blocks at a time: their scales first (`d = m / div` with `m` from
/// `k.scale_of`), then the reciprocals as vectors and the f16 scales in one conversion, then
/// the codes (`k.codes(block, id, bytes after d)`). Each block's bytes are the one-block
/// quantizer's; one block at a time, the chain maximum → division → reciprocal → f16 of each
/// block ran one block after another. Returns whether every block's maximum was finite.
#[inline(always)]
fn sym_row<K: SymBlocks>(x: &[f32], out: &mut [u8], (size, div): (usize, f32), k: K) -> bool {
    let mut finite = true;
    let mut xs = x.chunks_exact(32 * BATCH);
    let mut os = out.chunks_exact_mut(size * BATCH);
    for (xs, os) in (&mut xs).zip(&mut os) {
        let mut amax = [0u32; BATCH];
        if K::BATCH_AMAX {
            crate::simd::block_amax_bits(xs, 32, &mut amax);
        }
        let mut d = [0.0f32; BATCH];
        for ((d, xb), &a) in d.iter_mut().zip(xs.chunks_exact(32)).zip(&amax) {
            let x = xb.try_into().expect("a block of 32");
            let a = if K::BATCH_AMAX {
                f32::from_bits(a)
            } else {
                block_amax(x)
            };
            finite &= a.is_finite();
            *d = k.scale_of(x, a) / div;
        }
        let mut id = [0.0f32; BATCH];
        for (id, &d) in id.iter_mut().zip(&d) {
            *id = if d != 0.0 { 1.0 / d } else { 0.0 };
        }
        let mut dh = [0u16; BATCH];
        if crate::simd::f32_to_f16_hw(&d, &mut dh).is_none() {
            for (h, &v) in dh.iter_mut().zip(&d) {
                *h = f16::from_f32(v).to_bits();
            }
        }
        for (((xb, ob), &id), &h) in xs
            .chunks_exact(32)
            .zip(os.chunks_exact_mut(size))
            .zip(&id)
            .zip(&dh)
        {
            ob[..2].copy_from_slice(&h.to_le_bytes());
            k.codes(xb.try_into().expect("a block of 32"), id, ob);
        }
    }
    for (xb, ob) in xs
        .remainder()
        .chunks_exact(32)
        .zip(os.into_remainder().chunks_exact_mut(size))
    {
        finite &= k.one(xb, ob);
    }
    finite
}

/// Blocks per batch of [`sym_row`] (one 512-bit register of scales).
const BATCH: usize = 16;

/// A Q8_0 block's codes: `round(v·id)` as `i8`.
#[inline(always)]
fn q8_0_codes(x: &[f32; 32], id: f32, q: &mut [u8; 32]) {
    for (o, &v) in q.iter_mut().zip(x) {
        // |v·id| rounds to at most 127 (`v·id <= 127·(1 + 3·2^-24)`: `d` and `id` are each
        // rounded once), so the clamp changes nothing; it lets the conversion vectorise.
        *o = crate::simd::trunc_clamped_i32((v * id).round(), -128.0, 127.0) as i8 as u8;
    }
}

/// One Q8_0 block: whether its values were finite.
#[inline(always)]
fn q8_0(x: &[f32], b: &mut [u8]) -> bool {
    let x: &[f32; 32] = x.try_into().expect("a block of 32");
    let amax = block_amax(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_h(b, 0, d);
    q8_0_codes(x, id, (&mut b[2..34]).try_into().expect("32 codes"));
    amax.is_finite()
}

/// Q4_0 / Q5_0: `d = m / −2^(bits−1)` with `m` the element of largest magnitude (the first
/// such element: ggml's loop keeps the earlier one on a tie, whose sign matters). Returns
/// whether the block's values were finite.
#[inline(always)]
fn q_sym(x: &[f32], b: &mut [u8], bits: u32) -> bool {
    let x: &[f32; 32] = x.try_into().expect("a block of 32");
    let half = (1u32 << (bits - 1)) as f32;
    let amax = block_amax(x);
    let d = first_largest(x, amax) / -half;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_h(b, 0, d);
    q_sym_codes(x, id, b, bits);
    amax.is_finite()
}

/// The element of largest magnitude, the first of them: ggml's loop keeps the earlier one on a
/// tie (whose sign matters), and starts from `+0`, which it replaces only for a larger
/// magnitude (an all-zero block gives `+0` whatever the sign of its zeros); `amax` is the
/// block's largest magnitude.
#[inline(always)]
fn first_largest(x: &[f32; 32], amax: f32) -> f32 {
    if amax == 0.0 {
        return 0.0;
    }
    // The first index of that magnitude as a minimum over lanes (vectorises; a search
    // stopping at the first match did not).
    let mut first = [32u32; 8];
    for (j0, c) in (0..32u32).step_by(8).zip(x.chunks_exact(8)) {
        for ((f, &v), k) in first.iter_mut().zip(c).zip(0u32..) {
            let j = if v.abs() == amax { j0 + k } else { 32 };
            *f = (*f).min(j);
        }
    }
    let j = first.iter().copied().min().unwrap_or(0) as usize;
    x[j.min(31)]
}

/// The codes of a Q4_0 / Q5_0 block into its bytes after `d`.
#[inline(always)]
fn q_sym_codes(x: &[f32; 32], id: f32, b: &mut [u8], bits: u32) {
    let half = (1u32 << (bits - 1)) as f32;
    let top = ((1u32 << bits) - 1) as f32;
    let mut q = [0u8; 32];
    for (o, &v) in q.iter_mut().zip(x) {
        // Clamping before truncating gives ggml's `min(top, trunc(·))` for these finite
        // values, and a conversion that vectorises.
        *o = crate::simd::trunc_clamped(v * id + (half + 0.5), top) as u8;
    }
    pack_codes(&q, b, if bits == 4 { 2 } else { 6 }, bits);
}

/// Q4_1 / Q5_1: `d = (max − min) / (2^bits − 1)`, codes from the minimum. ggml's loop keeps
/// the first of equal extremes (from `f32::MAX` and `−f32::MAX`), which matters for a zero
/// extreme, whose sign is stored: the extremes are found in 8 lanes, and a zero one is then
/// the block's first zero. The codes are computed in line (a closure passed to a packing
/// helper ran out of line, in baseline code: 0.06 of the copy's speed). Returns whether the
/// block's values were finite (the lanes' largest sign-cleared bit patterns, below inf's).
#[inline(always)]
fn q_min(x: &[f32], b: &mut [u8], bits: u32) -> bool {
    let x: &[f32; 32] = x.try_into().expect("a block of 32");
    let (mut lo, mut hi) = ([f32::MAX; 8], [-f32::MAX; 8]);
    let mut mag = [0u32; 8];
    for c in x.chunks_exact(8) {
        for (((l, h), t), &v) in lo.iter_mut().zip(&mut hi).zip(&mut mag).zip(c) {
            *l = if v < *l { v } else { *l };
            *h = if v > *h { v } else { *h };
            *t = (*t).max(v.to_bits() & 0x7fff_ffff);
        }
    }
    let mut l = lo.iter().fold(f32::MAX, |a, &v| if v < a { v } else { a });
    let mut h = hi.iter().fold(-f32::MAX, |a, &v| if v > a { v } else { a });
    if l == 0.0 || h == 0.0 {
        let first_zero = x.iter().copied().find(|&v| v == 0.0).unwrap_or(0.0);
        l = if l == 0.0 { first_zero } else { l };
        h = if h == 0.0 { first_zero } else { h };
    }
    let top = ((1u32 << bits) - 1) as f32;
    let d = (h - l) / top;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_h(b, 0, d);
    put_h(b, 2, l);
    let mut q = [0u8; 32];
    for (o, &v) in q.iter_mut().zip(x) {
        // ggml's `min(top, trunc(·))` of a value at least 0.5 (or NaN: 0), clamped first so
        // that the conversion vectorises.
        *o = crate::simd::trunc_clamped((v - l) * id + 0.5, top) as u8;
    }
    pack_codes(&q, b, if bits == 4 { 4 } else { 8 }, bits);
    mag.iter().all(|&t| t < 0x7f80_0000)
}

/// Writes 32 codes: `qh` (5-bit types, u32 at `at − 4`) and 16 bytes of nibbles at `at`
/// (element `j` low, `j + 16` high).
#[inline(always)]
fn pack_codes(q: &[u8; 32], b: &mut [u8], at: usize, bits: u32) {
    let nib: &mut [u8; 16] = (&mut b[at..at + 16]).try_into().expect("16 bytes");
    for (j, o) in nib.iter_mut().enumerate() {
        *o = (q[j] & 0xf) | ((q[j + 16] & 0xf) << 4);
    }
    if bits == 5 {
        let mut qh = 0u32;
        for (j, &c) in q.iter().enumerate() {
            qh |= u32::from((c >> 4) & 1) << j;
        }
        b[at - 4..at].copy_from_slice(&qh.to_le_bytes());
    }
}

#[inline(always)]
fn dq_legacy(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let (m, qh, qs) = match ty {
        GgmlType::Q4_0 => (None, 0u32, &b[2..18]),
        GgmlType::Q4_1 => (Some(h(b, 2)), 0, &b[4..20]),
        GgmlType::Q5_0 => (
            None,
            u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
            &b[6..22],
        ),
        _ => (
            Some(h(b, 2)),
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            &b[8..24],
        ),
    };
    let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
    let offset = match ty {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        _ => 0,
    };
    for j in 0..16 {
        let (h0, h1) = if five {
            (((qh >> j) & 1) << 4, ((qh >> (j + 16)) & 1) << 4)
        } else {
            (0, 0)
        };
        let q0 = (u32::from(qs[j] & 0xf) | h0) as i32 - offset;
        let q1 = (u32::from(qs[j] >> 4) | h1) as i32 - offset;
        match m {
            None => {
                y[j] = q0 as f32 * d;
                y[j + 16] = q1 as f32 * d;
            }
            Some(m) => {
                y[j] = q0 as f32 * d + m;
                y[j + 16] = q1 as f32 * d + m;
            }
        }
    }
}

#[inline(always)]
fn mxfp4(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let e = if amax > 0.0 {
        // floorf(log2f(amax)) − 2 + 127, as ggml and gguf-py compute it in f32.
        let l = (f64::from(amax).log2() as f32).floor();
        (l - 2.0 + 127.0).clamp(0.0, 255.0) as u8
    } else {
        0
    };
    b[0] = e;
    let d = e8m0_half(e);
    let best = |v: f32| -> u8 {
        let mut best = 0usize;
        let mut err = (f32::from(KVALUES_FP4[0]) * d - v).abs();
        for (i, &k) in KVALUES_FP4.iter().enumerate().skip(1) {
            let e = (f32::from(k) * d - v).abs();
            if e < err {
                err = e;
                best = i;
            }
        }
        best as u8
    };
    for j in 0..16 {
        b[1 + j] = best(x[j]) | (best(x[j + 16]) << 4);
    }
}

fn dq_q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = h(b, 80);
    let dmin = h(b, 82);
    let mut is = 0;
    let mut out = 0;
    for n in 0..2 {
        let q = &qs[n * 32..n * 32 + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * f32::from(sc & 0xf);
                let ml = dmin * f32::from(sc >> 4);
                for l in 0..16 {
                    let v = (q[l + 16 * half] >> shift) & 3;
                    y[out] = dl * f32::from(v) - ml;
                    out += 1;
                }
            }
            shift += 2;
        }
    }
}

fn dq_q3_k(b: &[u8], y: &mut [f32]) {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d_all = h(b, 108);
    let mut aux = [0u32; 4];
    for (k, a) in aux.iter_mut().take(3).enumerate() {
        *a = u32::from_le_bytes([sc[4 * k], sc[4 * k + 1], sc[4 * k + 2], sc[4 * k + 3]]);
    }
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
    aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    let scales: Vec<i8> = aux
        .iter()
        .flat_map(|a| a.to_le_bytes())
        .map(|v| v as i8)
        .collect();
    let mut is = 0;
    let mut out = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &qs[n * 32..n * 32 + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let dl = d_all * f32::from(i16::from(scales[is]) - 32);
                is += 1;
                for l in 0..16 {
                    let i = l + 16 * half;
                    let v = i32::from((q[i] >> shift) & 3) - if hmask[i] & m != 0 { 0 } else { 4 };
                    y[out] = dl * v as f32;
                    out += 1;
                }
            }
            shift += 2;
            m = m.wrapping_shl(1);
        }
    }
}

/// `get_scale_min_k4`.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn dq_q4_k(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let dmin = h(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (k, j) in (0..256).step_by(64).enumerate() {
        let q = &qs[k * 32..k * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * k, scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        for l in 0..32 {
            y[j + l] = d1 * f32::from(q[l] & 0xf) - m1;
            y[j + 32 + l] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

fn dq_q5_k(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let dmin = h(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let ql = &b[48..176];
    let (mut u1, mut u2) = (1u8, 2u8);
    for (k, j) in (0..256).step_by(64).enumerate() {
        let q = &ql[k * 32..k * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * k, scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        for l in 0..32 {
            let hi1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[j + l] = d1 * f32::from((q[l] & 0xf) + hi1) - m1;
            y[j + 32 + l] = d2 * f32::from((q[l] >> 4) + hi2) - m2;
        }
        u1 = u1.wrapping_shl(2);
        u2 = u2.wrapping_shl(2);
    }
}

fn dq_q6_k(b: &[u8], y: &mut [f32]) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = h(b, 208);
    for n in 0..2 {
        let ql = &ql_all[n * 64..n * 64 + 64];
        let qh = &qh_all[n * 32..n * 32 + 32];
        let sc = &sc_all[n * 8..n * 8 + 8];
        let yb = &mut y[n * 128..n * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| f32::from(sc[is + k] as i8);
            yb[l] = d * s(0) * q1 as f32;
            yb[l + 32] = d * s(2) * q2 as f32;
            yb[l + 64] = d * s(4) * q3 as f32;
            yb[l + 96] = d * s(6) * q4 as f32;
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgmlType {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self> {
        GgmlType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| QuantError::Format {
                op: "GgmlType::from_str",
                detail: format!("unknown GGML type `{s}`"),
            })
    }
}

impl ElementFormat for GgmlType {
    fn bits_per_element(&self) -> f64 {
        (self.type_size() * 8) as f64 / self.block_size() as f64
    }

    fn block_len(&self) -> usize {
        self.block_size()
    }

    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for the decode-only types.
    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        check_rows(
            "GgmlType::fake_quantize_rows",
            x.len(),
            row_len,
            self.block_size(),
            out.len(),
        )?;
        let bytes = self.quantize_rows(x, row_len)?;
        self.dequantize_row(&bytes, out)
    }
}

impl RowCodec for GgmlType {
    /// `data`: the row's blocks (scales inside).
    fn encode_row(&self, x: &[f32]) -> Result<EncodedRow> {
        let mut data = vec![0u8; self.row_bytes(x.len())?];
        self.quantize_row(x, &mut data)?;
        Ok(EncodedRow {
            data,
            ..EncodedRow::default()
        })
    }

    fn decode_row(&self, row: &EncodedRow, out: &mut [f32]) -> Result<()> {
        self.dequantize_row(&row.data, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batched Q8_0 / Q4_0 / Q5_0 rows give each block's bytes as the one-block
    /// quantizer (Q8_0) and ggml's loop (Q4_0, Q5_0) do: rows of
    /// whole batches and a remainder, blocks of zeros, of values whose scale is an f16
    /// subnormal or overflows f16, and of ordinary values of every size.
    #[test]
    fn batched_rows_equal_the_block_quantizers() {
        let mut r = crate::rng::Lcg::new(11);
        for blocks in [1usize, 15, 16, 17, 37, 64] {
            let x: Vec<f32> = (0..blocks * 32)
                .map(|i| {
                    let scale = match (i / 32) % 6 {
                        0 => 0.0,
                        1 => 1e-9,
                        2 => 1e7,
                        3 => 3.0,
                        4 => 1e-3,
                        _ => 250.0,
                    };
                    (r.unit_f32() * 2.0 - 1.0) * scale
                })
                .collect();
            for (ty, size) in [
                (GgmlType::Q8_0, 34),
                (GgmlType::Q4_0, 18),
                (GgmlType::Q5_0, 22),
            ] {
                let mut got = vec![0u8; blocks * size];
                ty.quantize_row(&x, &mut got).expect("finite");
                let mut want = vec![0u8; blocks * size];
                for (xb, ob) in x.chunks_exact(32).zip(want.chunks_exact_mut(size)) {
                    match ty {
                        GgmlType::Q8_0 => {
                            let _ = q8_0(xb, ob);
                        }
                        GgmlType::Q4_0 => q_sym_ggml(xb, ob, 4),
                        _ => q_sym_ggml(xb, ob, 5),
                    }
                }
                assert_eq!(got, want, "{ty}, {blocks} blocks");
            }
        }
    }

    /// ggml's Q4_0 / Q5_0 block loop as written (`quantize_row_q4_0_ref`): one running
    /// maximum, codes one at a time. The oracle of the vectorised [`q_sym`].
    fn q_sym_ggml(x: &[f32], b: &mut [u8], bits: u32) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let half = (1u32 << (bits - 1)) as f32;
        let d = max / -half;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_h(b, 0, d);
        let top = ((1u32 << bits) - 1) as f32;
        let code = |v: f32| ((v * id + (half + 0.5)).trunc()).clamp(0.0, top) as u8;
        let at = if bits == 4 { 2 } else { 6 };
        let mut qh = 0u32;
        for j in 0..16 {
            let (q0, q1) = (code(x[j]), code(x[j + 16]));
            b[at + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
            qh |= u32::from((q0 >> 4) & 1) << j;
            qh |= u32::from((q1 >> 4) & 1) << (j + 16);
        }
        if bits == 5 {
            b[at - 4..at].copy_from_slice(&qh.to_le_bytes());
        }
    }

    /// Blocks that test Q4_0 / Q5_0: ties of magnitude with both signs (the first wins),
    /// zeros of both signs (an all-zero block keeps `d = −0`), the largest magnitude at the
    /// start, the middle and the end, and random blocks.
    fn sym_blocks(seed: u64) -> Vec<[f32; 32]> {
        let mut r = crate::rng::Lcg::new(seed);
        let mut blocks: Vec<[f32; 32]> = vec![[0.0; 32], [-0.0; 32]];
        let mut tie = [0.5f32; 32];
        tie[3] = -2.0;
        tie[20] = 2.0;
        blocks.push(tie);
        let mut tie2 = tie;
        tie2[3] = 2.0;
        tie2[20] = -2.0;
        blocks.push(tie2);
        for at in [0usize, 13, 31] {
            let mut b = [0.1f32; 32];
            b[at] = -7.5;
            blocks.push(b);
        }
        let mut z = [0.0f32; 32];
        z[0] = -0.0;
        z[9] = 1e-30;
        blocks.push(z);
        for _ in 0..200 {
            let s = [1e-6f32, 0.3, 5.0, 4e4][(r.next_u64() % 4) as usize];
            blocks.push(std::array::from_fn(|_| (r.unit_f32() * 2.0 - 1.0) * s));
        }
        blocks
    }

    /// The vectorised Q4_0 / Q5_0 blocks equal ggml's loop on [`sym_blocks`].
    #[test]
    fn vectorised_q4_0_q5_0_equal_ggmls_loop() {
        let blocks = sym_blocks(12);
        for bits in [4u32, 5] {
            let size = if bits == 4 { 18 } else { 22 };
            for x in &blocks {
                let (mut got, mut want) = (vec![0u8; size], vec![0u8; size]);
                assert!(q_sym(x, &mut got, bits));
                q_sym_ggml(x, &mut want, bits);
                assert_eq!(got, want, "bits {bits}: {x:?}");
            }
        }
    }

    /// ggml's `quantize_row_q4_1_ref` / `q5_1` block loop, as first written here.
    fn q_min_ggml(x: &[f32], b: &mut [u8], bits: u32) {
        let (mut lo, mut hi) = (f32::MAX, -f32::MAX);
        for &v in x {
            if v < lo {
                lo = v;
            }
            if v > hi {
                hi = v;
            }
        }
        let top = ((1u32 << bits) - 1) as f32;
        let d = (hi - lo) / top;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_h(b, 0, d);
        put_h(b, 2, lo);
        let mut q = [0u8; 32];
        for (o, &v) in q.iter_mut().zip(x) {
            *o = (((v - lo) * id + 0.5).trunc()).clamp(0.0, top) as u8;
        }
        pack_codes(&q, b, if bits == 4 { 4 } else { 8 }, bits);
    }

    /// Blocks that test Q4_1 / Q5_1: zeros of both signs in either order as the minimum or
    /// the maximum (their sign is stored), equal extremes, constant blocks, extremes at the
    /// start, middle and end, `±f32::MAX` and subnormal ranges (an infinite reciprocal), and
    /// random blocks.
    fn min_blocks(seed: u64) -> Vec<[f32; 32]> {
        let mut r = crate::rng::Lcg::new(seed);
        let mut blocks: Vec<[f32; 32]> = vec![[0.0; 32], [-0.0; 32], [3.0; 32], [-1e-44; 32]];
        for (a, b) in [(0.0f32, -0.0f32), (-0.0, 0.0)] {
            for fill in [1.0f32, -1.0] {
                // The later zero in an earlier lane of 8 (index 9 is lane 1, index 2 lane 2).
                let mut x = [fill; 32];
                x[2] = a;
                x[9] = b;
                blocks.push(x);
            }
        }
        for at in [0usize, 13, 31] {
            let mut x = [0.25f32; 32];
            x[at] = -7.5;
            x[31 - at] = 9.0;
            blocks.push(x);
        }
        let mut huge = [0.0f32; 32];
        huge[2] = f32::MAX;
        huge[30] = -f32::MAX;
        blocks.push(huge);
        let mut tiny = [0.0f32; 32];
        tiny[7] = 1e-45;
        blocks.push(tiny);
        for _ in 0..200 {
            let s = [1e-6f32, 0.3, 5.0, 4e4][(r.next_u64() % 4) as usize];
            blocks.push(std::array::from_fn(|_| (r.unit_f32() * 2.0 - 1.0) * s));
        }
        blocks
    }

    /// The vectorised Q4_1 / Q5_1 blocks give ggml's loop's bytes on [`min_blocks`].
    #[test]
    fn vectorised_q4_1_q5_1_equal_ggmls_loop() {
        let blocks = min_blocks(14);
        for bits in [4u32, 5] {
            let size = if bits == 4 { 20 } else { 24 };
            for x in &blocks {
                let (mut got, mut want) = (vec![0u8; size], vec![0u8; size]);
                assert!(q_min(x, &mut got, bits));
                q_min_ggml(x, &mut want, bits);
                assert_eq!(got, want, "bits {bits}: {x:?}");
            }
        }
    }

    /// The AVX2 kernels give ggml's loops' bytes for every legacy type (run wherever the CPU
    /// has AVX2 and F16C, AVX-512 machines included): rows of 1 to 19 blocks (whole batches
    /// of eight and padded remainders) of the special blocks above, each in every position of
    /// a batch; and they report a NaN or an infinity wherever it sits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn avx2_kernels_equal_ggmls_loops() {
        use avx2::Legacy;
        if !(crate::simd::has_avx2() && crate::simd::has_f16c()) {
            eprintln!("skipped: the CPU has no AVX2 and F16C");
            return;
        }
        type Oracle = fn(&[f32], &mut [u8]);
        let q8: Oracle = |x, b| {
            let _ = q8_0(x, b);
        };
        let cases: [(Legacy, usize, Oracle, Vec<[f32; 32]>); 5] = [
            (Legacy::Q8, 34, q8, sym_blocks(21)),
            (
                Legacy::Sym(4),
                18,
                |x, b| q_sym_ggml(x, b, 4),
                sym_blocks(22),
            ),
            (
                Legacy::Sym(5),
                22,
                |x, b| q_sym_ggml(x, b, 5),
                sym_blocks(23),
            ),
            (
                Legacy::Min(4),
                20,
                |x, b| q_min_ggml(x, b, 4),
                min_blocks(24),
            ),
            (
                Legacy::Min(5),
                24,
                |x, b| q_min_ggml(x, b, 5),
                min_blocks(25),
            ),
        ];
        for (kind, size, oracle, blocks) in &cases {
            // The special blocks come first: each start puts them at another batch position.
            for n in [1usize, 7, 8, 9, 16, 19] {
                for start in 0..12 {
                    let x: Vec<f32> = (0..n)
                        .flat_map(|i| blocks[(start + i) % blocks.len()])
                        .collect();
                    let mut got = vec![0u8; n * size];
                    // SAFETY: AVX2 and F16C were checked above.
                    assert!(unsafe { avx2::quantize(*kind, &x, &mut got) });
                    let mut want = vec![0u8; n * size];
                    for (xb, ob) in x.chunks_exact(32).zip(want.chunks_exact_mut(*size)) {
                        oracle(xb, ob);
                    }
                    assert_eq!(got, want, "{size}-byte blocks, {n} blocks from {start}");
                }
            }
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0usize, 31, 8 * 32 + 5, 19 * 32 - 1] {
                    let mut x: Vec<f32> = blocks.iter().take(19).flatten().copied().collect();
                    x[at] = bad;
                    let mut out = vec![0u8; 19 * size];
                    // SAFETY: as above.
                    assert!(
                        !unsafe { avx2::quantize(*kind, &x, &mut out) },
                        "{bad} at {at}"
                    );
                }
            }
        }
    }
}
