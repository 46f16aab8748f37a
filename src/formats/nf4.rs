//! NF4 (QLoRA's 4-bit normal float), bit for bit with torchao's `to_nf4`: the flattened tensor
//! in blocks of 64 scaled by their `absmax`, each element the index of the nearest of 16
//! normal-quantile values; the block scales double-quantized to int8 in blocks of
//! `scaler_block_size` around their mean.
//!
//! ```text
//! code  = argmin_i |x / absmax − NF4[i]|          (f32; the first index on a tie; NaN → 0)
//! a     = absmax − mean(absmax);  factor = 256 / (2 · max|a|) per scaler block
//! q     = clamp(round(a · factor), −128, 127)      (int8)
//! value = NF4[code] · (q / factor + mean)          (not · absmax)
//! ```
//! An all-zero block divides 0 by 0: every code is 0 (−1.0) and the block dequantizes to
//! `−scaler`, not 0 — torchao's behaviour, reproduced by [`Nf4Spec::torchao`].
//! [`Nf4Spec::new`] (`exact_zero_blocks`) stores such a block as code 7 (0.0): zeros stay zeros.
//! Codes pack two a byte, element `2i` in the **high** nibble.
//!
//! ```
//! use qnumeric::formats::Dequantize as _;
//! use qnumeric::formats::nf4::Nf4Spec;
//! let x: Vec<f32> = (0..128).map(|i| ((i * 37 % 64) as f32 - 32.0) / 32.0).collect();
//! let t = Nf4Spec::new(64, 2)?.quantize(&x)?;
//! assert_eq!(t.codes.len(), 128);
//! assert_eq!(t.packed()?.len(), 64);
//! assert_eq!(t.dequantize().len(), 128);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::fmt;

use super::packing::{NibbleOrder, pack_nibbles};
use super::{Dequantize, ElementFormat, check_finite, check_rows};
use crate::error::{QuantError, Result};

/// The 16 NF4 values as torchao's `NF4Tensor` holds them: rounded to four decimals (QLoRA's
/// and bitsandbytes' table has more digits: `-0.6961928009986877`, ...), as `f32`.
pub const NF4_VALUES: [f32; 16] = [
    -1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0, 0.0796, 0.1609, 0.2461,
    0.3379, 0.4407, 0.5626, 0.7230, 1.0,
];

/// The NF4 format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Nf4Spec {
    /// Elements per block (64 in QLoRA and torchao).
    pub block_size: usize,
    /// Block scales per double-quantization block (torchao's default 256).
    pub scaler_block_size: usize,
    /// All-zero blocks stored as zeros (`true`) or as torchao stores them (`false`).
    pub exact_zero_blocks: bool,
}

/// A tensor in NF4.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Tensor {
    /// The format.
    pub spec: Nf4Spec,
    /// The block scales before double quantization.
    pub absmax: Vec<f32>,
    /// One code per element.
    pub codes: Vec<u8>,
    /// The double-quantized block scales.
    pub quantized_scalers: Vec<i8>,
    /// One factor per scaler block.
    pub quantization_factor: Vec<f32>,
    /// The mean of the block scales.
    pub scaler_mean: f32,
}

impl Nf4Spec {
    /// NF4 with all-zero blocks stored as zeros.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a zero block or scaler block size.
    pub fn new(block_size: usize, scaler_block_size: usize) -> Result<Self> {
        for (what, v) in [
            ("block_size", block_size),
            ("scaler_block_size", scaler_block_size),
        ] {
            if v == 0 {
                return Err(QuantError::InvalidParameter {
                    op: "Nf4Spec::new",
                    what,
                    value: 0.0,
                    reason: "must be at least 1",
                });
            }
        }
        Ok(Nf4Spec {
            block_size,
            scaler_block_size,
            exact_zero_blocks: true,
        })
    }

    /// NF4 as torchao computes it (all-zero blocks dequantize to `−scaler`).
    ///
    /// # Errors
    /// As [`Nf4Spec::new`].
    pub fn torchao(block_size: usize, scaler_block_size: usize) -> Result<Self> {
        Ok(Nf4Spec {
            exact_zero_blocks: false,
            ..Self::new(block_size, scaler_block_size)?
        })
    }

    /// Elements a tensor must be a multiple of.
    #[must_use]
    pub fn granule(&self) -> usize {
        self.block_size.saturating_mul(self.scaler_block_size)
    }

    /// The nearest code (the first on a tie) of `v` in `[-1, 1]`, as the count of
    /// [`nf4_thresholds`] it reaches; NaN (`0/0`, an all-zero block) as 7 (exact zero) or
    /// torchao's 0. Fifteen compares and adds, for a loop that vectorises over the values.
    #[inline(always)]
    fn code(&self, v: f32, thresholds: &[f32; 15]) -> u8 {
        let mut code = 0u8;
        for &t in thresholds {
            code += u8::from(v >= t);
        }
        let nan = if self.exact_zero_blocks { 7 } else { 0 };
        if v.is_nan() { nan } else { code }
    }

    /// Quantizes a flattened tensor (its length a multiple of `block_size ·
    /// scaler_block_size`). An empty input gives an empty tensor, as every format's encoder
    /// does.
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] for another length;
    /// [`QuantError::NanInput`] / [`QuantError::InfiniteInput`] (the first such value).
    pub fn quantize(&self, x: &[f32]) -> Result<Nf4Tensor> {
        // Sized as the input dictates (zeroed pages from the allocator, not a clearing pass);
        // the checks are the `_into` call's.
        let mut out = Nf4Tensor {
            spec: *self,
            absmax: vec![0.0; x.len().checked_div(self.block_size).unwrap_or(0)],
            codes: vec![0; x.len()],
            quantized_scalers: Vec::new(),
            quantization_factor: Vec::new(),
            scaler_mean: 0.0,
        };
        self.quantize_into(x, &mut out)?;
        Ok(out)
    }

    /// [`Nf4Spec::quantize`] into an existing tensor.
    ///
    /// The buffers of `out` are reused (resized, every entry overwritten): once they have
    /// the capacity, quantizing allocates nothing. On a length or spec error `out` is left
    /// as it was. NaN and inf are found by the encoding pass itself (each block's maximum),
    /// not by a read-only scan before it, as the kernels find theirs: after such an error
    /// `out` holds unspecified values. Check the input first where it must stay untouched.
    ///
    /// # Errors
    /// As [`Nf4Spec::quantize`].
    pub fn quantize_into(&self, x: &[f32], out: &mut Nf4Tensor) -> Result<()> {
        const OP: &str = "Nf4Spec::quantize";
        // The fields are public: a spec built without `new` is checked as `new` checks it.
        Self::new(self.block_size, self.scaler_block_size).map_err(|e| e.with_op(OP))?;
        let granule = self.granule();
        check_rows(OP, x.len(), granule, granule, x.len())?;
        let Nf4Tensor {
            spec,
            absmax,
            codes,
            quantized_scalers,
            quantization_factor,
            scaler_mean,
        } = out;
        *spec = *self;
        absmax.resize(x.len() / self.block_size, 0.0);
        codes.resize(x.len(), 0);
        // Pieces of whole blocks on the rayon pool (feature `rayon`), the same bytes.
        let block = self.block_size;
        crate::parallel::blocks3(x, block, (absmax, 1), (codes, block), |_, x, a, c| {
            nf4_blocks(self, x, a, c);
            true
        });
        // A NaN or an infinity makes its block's maximum NaN or infinite: the first one's
        // index from the input (only on that path).
        if !absmax.iter().all(|a| a.is_finite()) {
            check_finite(OP, x)?;
        }
        let mean = absmax.iter().sum::<f32>() / absmax.len() as f32;
        *scaler_mean = mean;
        quantized_scalers.resize(absmax.len(), 0);
        quantization_factor.resize(absmax.len() / self.scaler_block_size, 0.0);
        quantize_scalers(
            self.scaler_block_size,
            absmax,
            mean,
            quantized_scalers,
            quantization_factor,
        );
        Ok(())
    }
}

/// The double quantization of the block maxima (`absmax.len() == q.len()`, a multiple of
/// `scaler_block` `== factors.len()` blocks), compiled for the CPU's vector width (the
/// rounding is then an instruction, not a call of `rintf` per value).
#[inline(always)]
fn quantize_scalers_body(
    scaler_block: usize,
    absmax: &[f32],
    mean: f32,
    q: &mut [i8],
    factors: &mut [f32],
) {
    for ((blk, qb), f) in absmax
        .chunks_exact(scaler_block)
        .zip(q.chunks_exact_mut(scaler_block))
        .zip(factors.iter_mut())
    {
        // Each scale centred on the mean (computed again below: the same value).
        let m = blk.iter().fold(0.0f32, |m, v| m.max((v - mean).abs()));
        let factor = 256.0 / (2.0 * m);
        for (q, v) in qb.iter_mut().zip(blk) {
            let r = ((v - mean) * factor).round_ties_even();
            // `clamp(-128, 127)`, NaN as 0, as compare-selects (`r` is an integer).
            let r = if r.is_nan() { 0.0 } else { r };
            *q = crate::simd::trunc_clamped_i32(r, -128.0, 127.0) as i8;
        }
        *f = factor;
    }
}

crate::simd::dispatched512!(fn quantize_scalers[](scaler_block: usize, absmax: &[f32], mean: f32, q: &mut [i8], factors: &mut [f32]) = quantize_scalers_body);

/// Where the nearest code changes: entry `i` is the smallest `f32` `v` in
/// `[NF4_VALUES[i], NF4_VALUES[i + 1]]` whose distance to the upper value is below its
/// distance to the lower, both computed as the reference does (`|v − c|` in `f32`, the first
/// code winning a tie). Each distance is monotone between the two values, so one binary search
/// over the `f32`s between them finds it; for `v` in `[-1, 1]` the nearest code is then the
/// number of entries `v` reaches (tested against the nearest-value loop).
fn nf4_thresholds() -> [f32; 15] {
    // The `f32`s in order as integers (negative patterns reversed below the positive ones).
    let key = |v: f32| {
        let b = v.to_bits();
        if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
    };
    let value = |k: u32| f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k });
    std::array::from_fn(|i| {
        let (lo_c, hi_c) = (NF4_VALUES[i], NF4_VALUES[i + 1]);
        let upper_wins = |v: f32| (v - hi_c).abs() < (v - lo_c).abs();
        // `upper_wins` is false at `lo_c` and true at `hi_c`: the first key where it holds.
        let (mut lo, mut hi) = (key(lo_c), key(hi_c));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if upper_wins(value(mid)) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        value(hi)
    })
}

/// [`nf4_thresholds`], computed once.
fn thresholds() -> &'static [f32; 15] {
    static T: std::sync::OnceLock<[f32; 15]> = std::sync::OnceLock::new();
    T.get_or_init(nf4_thresholds)
}

/// The block maxima and codes of [`Nf4Spec::quantize`] (lengths checked): a block holding a
/// NaN or an infinity gets a NaN or infinite maximum (the caller's check of the input).
#[allow(unsafe_code)]
fn nf4_blocks(spec: &Nf4Spec, x: &[f32], absmax: &mut [f32], codes: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if spec.block_size.is_multiple_of(16) && spec.block_size > 0 && crate::simd::has_avx512() {
        let nan = if spec.exact_zero_blocks { 7 } else { 0 };
        // SAFETY: the CPU has AVX-512 F, BW and VL (checked just above).
        unsafe { avx512::nf4_blocks(spec.block_size, nan, thresholds(), x, absmax, codes) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if spec.block_size.is_multiple_of(8) && spec.block_size > 0 && crate::simd::has_avx2() {
        let nan = if spec.exact_zero_blocks { 7 } else { 0 };
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { avx2::nf4_blocks(spec.block_size, nan, thresholds(), x, absmax, codes) };
        return;
    }
    nf4_blocks_at(spec, thresholds(), x, absmax, codes);
}

/// [`nf4_blocks`] for AVX2 without AVX-512, blocks of a multiple of 8: the same four-step
/// binary search as the AVX-512 kernel, its last three levels read from three eight-entry
/// registers (`vpermps` holds 8 entries: the search never needs more than 8 at one level),
/// where the portable count of fifteen compares and adds compiled to about 30 operations per
/// 8 values (measured on an AMD EPYC Zen 4 with AVX-512 turned off: 5.5 ms for 4M values).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m128i, __m256i, _CMP_GE_OQ, _CMP_UNORD_Q, _mm_storel_epi64, _mm256_add_epi32,
        _mm256_and_si256, _mm256_blendv_epi8, _mm256_castps_si256, _mm256_castsi256_si128,
        _mm256_cmp_ps, _mm256_cvtsi256_si32, _mm256_div_ps, _mm256_loadu_ps, _mm256_loadu_si256,
        _mm256_max_epu32, _mm256_permute2x128_si256, _mm256_permutevar8x32_epi32,
        _mm256_permutevar8x32_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi8,
        _mm256_setr_epi32, _mm256_setr_ps, _mm256_setzero_si256, _mm256_shuffle_epi8,
        _mm256_shuffle_epi32, _mm256_sub_epi32,
    };

    /// The block maxima and codes (`x.len() == block · absmax.len() == codes.len()`, `block`
    /// a positive multiple of 8), as the AVX-512 kernel computes them: per block the largest
    /// magnitude (its sign-cleared pattern: NaN above inf), then per value the count of
    /// thresholds its quotient reaches, `nan` for a NaN quotient (an all-zero block).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn nf4_blocks(
        block: usize,
        nan: u8,
        t: &[f32; 15],
        x: &[f32],
        absmax: &mut [f32],
        codes: &mut [u8],
    ) {
        // Level by level, with `h` the code halved: `t[7]`; `t[3]` / `t[11]` at `h` 0 / 4;
        // `t[1]`, `t[5]`, `t[9]`, `t[13]` at `h` 0, 2, 4, 6; `t[2h]`.
        let top = _mm256_set1_ps(t[7]);
        let l4 = _mm256_setr_ps(t[3], 0.0, 0.0, 0.0, t[11], 0.0, 0.0, 0.0);
        let l2 = _mm256_setr_ps(t[1], 0.0, t[5], 0.0, t[9], 0.0, t[13], 0.0);
        let l1 = _mm256_setr_ps(t[0], t[2], t[4], t[6], t[8], t[10], t[12], t[14]);
        let abs = _mm256_set1_epi32(0x7fff_ffff);
        let nan = _mm256_set1_epi32(i32::from(nan));
        let (four, two, one) = (
            _mm256_set1_epi32(4),
            _mm256_set1_epi32(2),
            _mm256_set1_epi32(1),
        );
        // The low byte of each lane into the first four bytes of its half, then the halves'
        // first words together.
        let bytes = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let halves = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
        let ge = |q, th| _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(q, th));
        for ((xb, cb), m) in x
            .chunks_exact(block)
            .zip(codes.chunks_exact_mut(block))
            .zip(absmax.iter_mut())
        {
            let mut a = _mm256_setzero_si256();
            for c in xb.chunks_exact(8) {
                crate::simd::prefetch_read(c.as_ptr().wrapping_add(crate::simd::PREFETCH_AHEAD));
                // SAFETY: `c` holds 8 `f32`s (an unaligned 32-byte load).
                let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast::<__m256i>()) };
                a = _mm256_max_epu32(a, _mm256_and_si256(v, abs));
            }
            let a = _mm256_max_epu32(a, _mm256_permute2x128_si256::<1>(a, a));
            let a = _mm256_max_epu32(a, _mm256_shuffle_epi32::<0b0100_1110>(a));
            let a = _mm256_max_epu32(a, _mm256_shuffle_epi32::<0b1011_0001>(a));
            *m = f32::from_bits(_mm256_cvtsi256_si32(a) as u32);
            let d = _mm256_set1_ps(*m);
            for (c, o) in xb.chunks_exact(8).zip(cb.chunks_exact_mut(8)) {
                // SAFETY: `c` holds 8 `f32`s.
                let q = _mm256_div_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, d);
                let h = _mm256_and_si256(ge(q, top), four);
                let th = _mm256_permutevar8x32_ps(l4, h);
                let h = _mm256_add_epi32(h, _mm256_and_si256(ge(q, th), two));
                let th = _mm256_permutevar8x32_ps(l2, h);
                let h = _mm256_add_epi32(h, _mm256_and_si256(ge(q, th), one));
                let th = _mm256_permutevar8x32_ps(l1, h);
                // `2h + 1` where `q` reaches `t[2h]` (the mask is -1 there).
                let code = _mm256_sub_epi32(_mm256_add_epi32(h, h), ge(q, th));
                let unord = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(q, q));
                let code = _mm256_blendv_epi8(code, nan, unord);
                let packed = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(code, bytes), halves);
                let o: &mut [u8; 8] = o.try_into().expect("8 codes");
                // SAFETY: `o` holds 8 bytes (an unaligned 8-byte store).
                unsafe {
                    _mm_storel_epi64(
                        o.as_mut_ptr().cast::<__m128i>(),
                        _mm256_castsi256_si128(packed),
                    );
                }
            }
        }
    }
}

/// [`nf4_blocks`] for AVX-512, blocks of a multiple of 16: the code of each quotient found
/// by a four-step binary search over the thresholds held in one register (`vpermps`), where
/// the portable count of fifteen compares compiled to about 45 operations per 16 values.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::{
        __m128i, __m512, __m512i, _CMP_GE_OQ, _CMP_UNORD_Q, _mm_storeu_si128, _mm512_add_epi32,
        _mm512_and_si512, _mm512_cmp_ps_mask, _mm512_cvtepi32_epi8, _mm512_div_ps, _mm512_loadu_ps,
        _mm512_loadu_si512, _mm512_mask_add_epi32, _mm512_mask_mov_epi32, _mm512_max_epu32,
        _mm512_permutexvar_ps, _mm512_reduce_max_epu32, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_setzero_si512,
    };

    /// The block maxima and codes (`x.len() == block · absmax.len() == codes.len()`, `block`
    /// a positive multiple of 16): per block the largest magnitude, then per value the count
    /// of thresholds its quotient by that maximum reaches, `nan` for a NaN quotient (an
    /// all-zero block). The same division and compares as the portable loop.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn nf4_blocks(
        block: usize,
        nan: u8,
        t: &[f32; 15],
        x: &[f32],
        absmax: &mut [f32],
        codes: &mut [u8],
    ) {
        let mut table = [f32::INFINITY; 16];
        table[..15].copy_from_slice(t);
        // SAFETY: `table` holds 16 `f32`s.
        let table: __m512 = unsafe { _mm512_loadu_ps(table.as_ptr()) };
        let abs = _mm512_set1_epi32(0x7fff_ffff);
        let nan = _mm512_set1_epi32(i32::from(nan));
        for ((xb, cb), m) in x
            .chunks_exact(block)
            .zip(codes.chunks_exact_mut(block))
            .zip(absmax.iter_mut())
        {
            let mut a = _mm512_setzero_si512();
            for c in xb.chunks_exact(16) {
                crate::simd::prefetch_read(c.as_ptr().wrapping_add(crate::simd::PREFETCH_AHEAD));
                // SAFETY: `c` holds 16 `f32`s (an unaligned 64-byte load).
                let v = unsafe { _mm512_loadu_si512(c.as_ptr().cast::<__m512i>()) };
                a = _mm512_max_epu32(a, _mm512_and_si512(v, abs));
            }
            *m = f32::from_bits(_mm512_reduce_max_epu32(a));
            let d = _mm512_set1_ps(*m);
            for (c, o) in xb.chunks_exact(16).zip(cb.chunks_exact_mut(16)) {
                // SAFETY: `c` holds 16 `f32`s.
                let q = _mm512_div_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, d);
                // `code = #{i : q >= t[i]}`: the thresholds ascend, so the count is found
                // bit by bit from the top (the table's 16th entry, +inf, is never read).
                let mut code = _mm512_setzero_si512();
                for step in [8, 4, 2, 1] {
                    let at = _mm512_add_epi32(code, _mm512_set1_epi32(step - 1));
                    let th = _mm512_permutexvar_ps(at, table);
                    let ge = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(q, th);
                    code = _mm512_mask_add_epi32(code, ge, code, _mm512_set1_epi32(step));
                }
                let code =
                    _mm512_mask_mov_epi32(code, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(q, q), nan);
                // SAFETY: `o` holds 16 bytes (an unaligned 16-byte store).
                unsafe {
                    _mm_storeu_si128(o.as_mut_ptr().cast::<__m128i>(), _mm512_cvtepi32_epi8(code));
                }
            }
        }
    }
}

/// [`nf4_blocks`] with the thresholds read (once, outside the loop), compiled for the CPU's
/// vector width: `code(v / absmax)` per value.
#[inline(always)]
fn nf4_blocks_body(spec: &Nf4Spec, t: &[f32; 15], x: &[f32], absmax: &mut [f32], codes: &mut [u8]) {
    for ((b, c), m) in x
        .chunks_exact(spec.block_size)
        .zip(codes.chunks_exact_mut(spec.block_size))
        .zip(absmax.iter_mut())
    {
        // The largest magnitude, NaN for a block holding a NaN.
        let a = super::amax_or_nan(b);
        *m = a;
        for (c, &v) in c.iter_mut().zip(b) {
            *c = spec.code(v / a, t);
        }
    }
}

crate::simd::dispatched512!(fn nf4_blocks_at[](spec: &Nf4Spec, t: &[f32; 15], x: &[f32], absmax: &mut [f32], codes: &mut [u8]) = nf4_blocks_body);

impl Dequantize for Nf4Tensor {
    fn element_count(&self) -> usize {
        self.codes.len()
    }

    fn write_values(&self, out: &mut [f32]) {
        // The 16-entry lookup by register permutes (`formats::lookup`).
        let scalers = self.scalers();
        let scale = |k: usize| scalers.get(k).copied();
        super::lookup::lut16_blocks(&NF4_VALUES, &self.codes, self.spec.block_size, scale, out);
    }
}

impl Nf4Tensor {
    /// The block scales after double quantization (`q / factor + mean`).
    #[must_use]
    pub fn scalers(&self) -> Vec<f32> {
        let sb = self.spec.scaler_block_size.max(1);
        self.quantized_scalers
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let f = self
                    .quantization_factor
                    .get(i / sb)
                    .copied()
                    .unwrap_or(f32::NAN);
                f32::from(q) / f + self.scaler_mean
            })
            .collect()
    }

    /// Codes two a byte, element `2i` in the high nibble (torchao's layout).
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] for an odd element count.
    pub fn packed(&self) -> Result<Vec<u8>> {
        pack_nibbles(&self.codes, NibbleOrder::HighFirst)
    }
}

impl fmt::Display for Nf4Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nf4")?;
        if self.block_size != 64 {
            write!(f, "-b{}", self.block_size)?;
        }
        Ok(())
    }
}

impl ElementFormat for Nf4Spec {
    /// 4 bits, an int8 scaler per block, an f32 factor per scaler block.
    fn bits_per_element(&self) -> f64 {
        4.0 + 8.0 / self.block_size as f64 + 32.0 / self.granule() as f64
    }

    /// One block; the double quantization runs over each row's blocks (rows a multiple of
    /// `block_size · scaler_block_size` use the reference's grouping exactly; shorter rows
    /// are padded scaler blocks of their own).
    fn block_len(&self) -> usize {
        self.block_size
    }

    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        const OP: &str = "Nf4Spec::fake_quantize_rows";
        check_rows(OP, x.len(), row_len, self.block_size, out.len())?;
        check_finite(OP, x)?;
        if x.is_empty() {
            return Ok(());
        }
        // The scaler blocks never straddle rows: one scaler block per row when the row is not
        // a whole number of them.
        let blocks = row_len / self.block_size;
        let spec = if blocks.is_multiple_of(self.scaler_block_size) {
            *self
        } else {
            Nf4Spec {
                scaler_block_size: blocks,
                ..*self
            }
        };
        for (xr, or) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_len)) {
            spec.quantize(xr)?.write_values(or);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code loop as first written (an early-exit NaN test, a running nearest): the
    /// oracle of the branch-free [`Nf4Spec::code`].
    fn code_scalar(exact_zero_blocks: bool, v: f32) -> u8 {
        if v.is_nan() {
            return if exact_zero_blocks { 7 } else { 0 };
        }
        let (mut best, mut dist) = (0usize, f32::INFINITY);
        for (i, &c) in NF4_VALUES.iter().enumerate() {
            let d = (v - c).abs();
            if d < dist {
                dist = d;
                best = i;
            }
        }
        best as u8
    }

    /// The block loop (the AVX-512 binary search where the CPU has it, else the portable
    /// count) gives each block's largest magnitude and the nearest-value loop's code of each
    /// quotient: blocks of 16, 48, 64 and 40 (portable) values, random values, the values just
    /// at, below and above each threshold times the block's maximum, all-zero blocks (both
    /// NaN codes), subnormal and huge blocks.
    #[test]
    fn block_loop_gives_the_nearest_codes() {
        let mut r = crate::rng::Lcg::new(11);
        let t = nf4_thresholds();
        for block in [16usize, 48, 64, 40] {
            let mut x = Vec::new();
            for b in 0..60 {
                let a = match b % 5 {
                    0 => 1.0f32,
                    1 => 3.7e-39,
                    2 => 2.5e38,
                    3 => 0.0,
                    _ => 0.01 + r.unit_f32() * 100.0,
                };
                let mut xb: Vec<f32> = (0..block).map(|_| (r.unit_f32() * 2.0 - 1.0) * a).collect();
                for (j, v) in xb.iter_mut().enumerate().skip(1).filter(|_| a > 0.0) {
                    let th = t[(b + j) % 15] * a;
                    let bits = th.to_bits();
                    *v = match j % 4 {
                        0 => th,
                        1 => f32::from_bits(bits.wrapping_sub(1)),
                        2 => f32::from_bits(bits.wrapping_add(1)),
                        _ => *v,
                    };
                    *v = v.clamp(-a, a);
                }
                xb[b % block] = if b % 2 == 0 { a } else { -a };
                x.extend(xb);
            }
            for exact_zero_blocks in [true, false] {
                let spec = Nf4Spec {
                    exact_zero_blocks,
                    ..Nf4Spec::new(block, 1).expect("valid")
                };
                let (mut absmax, mut codes) = (vec![0.0; 60], vec![0u8; x.len()]);
                nf4_blocks(&spec, &x, &mut absmax, &mut codes);
                for ((xb, cb), &m) in x.chunks(block).zip(codes.chunks(block)).zip(&absmax) {
                    let want = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    assert_eq!(m.to_bits(), want.to_bits());
                    for (&v, &c) in xb.iter().zip(cb) {
                        let q = v / m;
                        assert_eq!(c, code_scalar(exact_zero_blocks, q), "{v:e} / {m:e}");
                    }
                }
            }
        }
    }

    /// The threshold count gives the nearest-value loop's code for every 257th `f32` in
    /// `[-1, 1]` (about 8 M values, each threshold's neighbourhood among them) and at each
    /// threshold and its two neighbours.
    #[test]
    fn threshold_counts_are_the_nearest_codes() {
        let spec = Nf4Spec::new(64, 4).expect("valid");
        let t = nf4_thresholds();
        let check = |v: f32| {
            assert_eq!(spec.code(v, &t), code_scalar(true, v), "{v:e}");
        };
        for bits in (0..=1.0f32.to_bits()).step_by(257) {
            check(f32::from_bits(bits));
            check(-f32::from_bits(bits));
        }
        for &th in &t {
            let b = th.to_bits();
            for v in [f32::from_bits(b - 1), th, f32::from_bits(b + 1)] {
                check(v);
            }
        }
        for v in [1.0f32, -1.0, 0.0, -0.0, f32::NAN] {
            check(v);
        }
    }

    /// Blocks of random values, all-zero blocks (NaN ratios), values on the midpoints between
    /// neighbouring codes and one ulp either side (the ties), for both zero-block rules and
    /// block sizes with and without a remainder past the lanes.
    /// The documented edges of the length check: empty is an empty tensor (which decodes to
    /// nothing), a length that is not whole granules an error.
    #[test]
    fn empty_input_is_an_empty_tensor_and_partial_granules_an_error() {
        let spec = Nf4Spec::new(64, 4).expect("valid");
        let t = spec.quantize(&[]).expect("empty is a tensor");
        assert!(t.codes.is_empty() && t.absmax.is_empty() && t.dequantize().is_empty());
        let e = spec.quantize(&[0.5; 64 * 4 + 64]).unwrap_err();
        assert!(matches!(e, QuantError::NotMultiple { .. }), "{e}");
    }

    #[test]
    fn vectorised_blocks_equal_the_scalar_codes() {
        let mut r = crate::rng::Lcg::new(24);
        for (block, spec) in [
            (64usize, Nf4Spec::new(64, 4)),
            (20, Nf4Spec::torchao(20, 2)),
            (64, Nf4Spec::torchao(64, 4)),
        ] {
            let spec = spec.expect("valid");
            let mut x: Vec<f32> = Vec::new();
            let mids: Vec<f32> = NF4_VALUES.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
            let mut ties = Vec::new();
            for m in mids {
                for d in -1i32..=1 {
                    ties.push(f32::from_bits((m.to_bits() as i32 + d) as u32));
                }
            }
            ties.push(1.0);
            while x.len() < block * spec.scaler_block_size * 6 {
                let k = x.len() / block;
                match k % 4 {
                    0 => x.extend(vec![0.0f32; block]),
                    1 => x.extend((0..block).map(|i| ties[i % ties.len()])),
                    _ => x.extend((0..block).map(|_| (r.unit_f32() * 2.0 - 1.0) * 3.0)),
                }
            }
            let t = spec.quantize(&x).expect("whole granules");
            for ((b, c), &m) in x
                .chunks_exact(block)
                .zip(t.codes.chunks_exact(block))
                .zip(&t.absmax)
            {
                let want_m = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert_eq!(m.to_bits(), want_m.to_bits());
                for (&v, &got) in b.iter().zip(c) {
                    assert_eq!(got, code_scalar(spec.exact_zero_blocks, v / m), "{v} / {m}");
                }
            }
            #[cfg(target_arch = "x86_64")]
            avx2_kernel_agrees(&spec, &x);
        }
    }

    /// The AVX2 kernel (which an AVX-512 CPU does not dispatch to) against the portable loop
    /// on `x` and on `x` with a NaN block and an infinite block.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    fn avx2_kernel_agrees(spec: &Nf4Spec, x: &[f32]) {
        if !crate::simd::has_avx2() || !spec.block_size.is_multiple_of(8) {
            return;
        }
        let block = spec.block_size;
        let mut x = x.to_vec();
        x[block + 3] = f32::NAN;
        x[3 * block + 5] = f32::NEG_INFINITY;
        let nan = if spec.exact_zero_blocks { 7 } else { 0 };
        let n = x.len() / block;
        let (mut m, mut c) = (vec![0.0f32; n], vec![0u8; x.len()]);
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { avx2::nf4_blocks(block, nan, thresholds(), &x, &mut m, &mut c) };
        let (mut want_m, mut want_c) = (vec![0.0f32; n], vec![0u8; x.len()]);
        nf4_blocks_at(spec, thresholds(), &x, &mut want_m, &mut want_c);
        for (i, (&got, &want)) in m.iter().zip(&want_m).enumerate() {
            assert!(
                got == want || got.is_nan() && want.is_nan(),
                "{i}: {got} {want}"
            );
            if want.is_finite() {
                let r = i * block..(i + 1) * block;
                assert_eq!(c[r.clone()], want_c[r], "block {i}");
            }
        }
        assert!(m[1].is_nan() && m[3] == f32::INFINITY);
    }
}
