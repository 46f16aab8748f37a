//! The decoders of the 4-bit formats (MXFP4, NVFP4, NF4): `out[i] = table[codes[i] & 15] ·
//! scales[i / block]`, a 16-entry table read by register permutes.
//!
//! Compiled as a plain loop, the lookup is a gather per vector: measured on an AMD EPYC Zen 4,
//! the 16-lane AVX-512 gathers ran at about a third of the rate of the 8-lane AVX2 ones (4M
//! values: MXFP4 1.72 ms with AVX-512 against 1.23 ms with AVX2, the copy of the same bytes
//! 0.9–1.3 ms). A table of 16 `f32`s fits one AVX-512 register (`vpermps` picks each lane's
//! entry) or two AVX2 registers (two `vpermps` and a blend on the code's bit 3): no memory
//! access per value at all.
//!
//! Every code is masked to its low four bits, as the element tables are
//! ([`super::minifloat::MiniFloat`] masks a code to its width): the same value as the
//! 256-entry table of a 4-bit type for every byte.
//!
//! The float8 decoders (e4m3fn and e5m2: the casts, the scaled float8 rows, MXFP8) avoid the
//! gather the same way, by arithmetic: a float8 code is an IEEE half with its exponent field
//! narrowed ([`fp8_blocks`]), so moving its fields into a half's, converting with F16C
//! (`vcvtph2ps`, subnormals included, no microcode assist) and scaling by the power of two
//! between the biases gives its value exactly; the NaN codes are a select.

/// [`lut16_scaled`] with block `k`'s scale `scale(k)`, computed 64 blocks at a time into a
/// buffer on the stack (the decoders allocate nothing); the first block without a scale
/// (`None`) ends the decoding, as the end of a scale slice does.
///
/// Pieces of whole blocks run on the rayon pool (feature `rayon`): each value is computed
/// alone, so the output is the same on any thread count.
pub(crate) fn lut16_blocks(
    table: &[f32; 16],
    codes: &[u8],
    block: usize,
    scale: impl Fn(usize) -> Option<f32> + Sync + Send,
    out: &mut [f32],
) {
    let b = block.max(1);
    crate::parallel::blocks2(codes, b, out, b, |first, c, o| {
        lut16_blocks_seq(table, c, b, |k| scale(first + k), o);
        true
    });
}

/// [`lut16_blocks`] on this thread.
fn lut16_blocks_seq(
    table: &[f32; 16],
    codes: &[u8],
    block: usize,
    scale: impl Fn(usize) -> Option<f32>,
    out: &mut [f32],
) {
    with_block_scales(codes, block, scale, out, |c, s, o| {
        lut16_scaled(table, c, block.max(1), s, o);
    });
}

/// `run(codes, scales, out)` over runs of up to 64 blocks, their scales `scale(k)` computed
/// into a buffer on the stack; the first block without a scale (`None`) ends the loop (the
/// run before it gets only the blocks that have one).
fn with_block_scales(
    codes: &[u8],
    block: usize,
    scale: impl Fn(usize) -> Option<f32>,
    out: &mut [f32],
    mut run: impl FnMut(&[u8], &[f32], &mut [f32]),
) {
    const CHUNK: usize = 64;
    let b = block.max(1);
    let step = b.saturating_mul(CHUNK);
    let mut buf = [0.0f32; CHUNK];
    for (k, (cs, os)) in codes.chunks(step).zip(out.chunks_mut(step)).enumerate() {
        let want = cs.len().div_ceil(b);
        let mut n = 0;
        while n < want {
            match scale(k * CHUNK + n) {
                Some(s) => buf[n] = s,
                None => break,
            }
            n += 1;
        }
        let m = cs.len().min(n * b);
        run(&cs[..m], &buf[..n], &mut os[..m]);
        if n < want {
            return;
        }
    }
}

/// How [`fp8_blocks`] applies a block's scale.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleOp {
    /// `value · scale`.
    Mul,
    /// `value / scale` (torchao's training recipe stores the reciprocal).
    Div,
}

impl ScaleOp {
    /// `v ∘ s`.
    #[inline(always)]
    fn apply(self, v: f32, s: f32) -> f32 {
        match self {
            ScaleOp::Mul => v * s,
            ScaleOp::Div => v / s,
        }
    }
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
/// The float8 types [`fp8_blocks`] decodes by arithmetic: `(shift, rebias, nan_from)` puts
/// the magnitude bits at `shift` in a half's pattern, scales by `rebias` (`2^(15 − bias)`),
/// and decodes the magnitudes from `nan_from` up as NaN.
fn fp8_params(dtype: super::minifloat::MiniFloat) -> Option<(u32, f32, u16)> {
    use super::minifloat::MiniFloat;
    match dtype {
        // e4m3fn: bias 7, no inf, NaN at magnitude 0x7f.
        MiniFloat::E4M3Fn => Some((7, 256.0, 0x7f)),
        // e5m2: a half's top byte (bias 15), inf at 0x7c, NaN above it.
        MiniFloat::E5M2 => Some((8, 1.0, 0x7d)),
        _ => None,
    }
}

/// `out[i] = dtype.decode(codes[i]) ∘ scale(i / block)` (∘ per `op`) for e4m3fn and e5m2 on
/// CPUs with F16C (and AVX2), the block scales computed 64 blocks at a time on the stack;
/// decoding stops at the first block without a scale (`None`) as a scale slice's end does.
/// Returns `false`, having written nothing, for other types and CPUs (the caller's table
/// decodes then). Every NaN code decodes to `f32::NAN`, as the element tables hold it.
#[allow(unsafe_code)]
pub(crate) fn fp8_blocks(
    dtype: super::minifloat::MiniFloat,
    codes: &[u8],
    block: usize,
    scale: impl Fn(usize) -> Option<f32> + Sync + Send,
    op: ScaleOp,
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = fp8_params(dtype) {
        let avx512 = crate::simd::has_avx512();
        if !(avx512 || crate::simd::has_avx2() && crate::simd::has_f16c()) {
            return false;
        }
        // Pieces of whole blocks on the rayon pool (feature `rayon`), the same values.
        let b = block.max(1);
        crate::parallel::blocks2(codes, b, out, b, |first, c, o| {
            fp8_blocks_seq((p, avx512), c, b, |k| scale(first + k), op, o);
            true
        });
        return true;
    }
    let _ = (dtype, codes, block, scale, op, out);
    false
}

/// [`fp8_blocks`] on this thread, with the type's parameters and whether AVX-512 runs.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn fp8_blocks_seq(
    (p, avx512): ((u32, f32, u16), bool),
    codes: &[u8],
    block: usize,
    scale: impl Fn(usize) -> Option<f32>,
    op: ScaleOp,
    out: &mut [f32],
) {
    let b = block.max(1);
    with_block_scales(codes, b, scale, out, |c, s, o| {
        // SAFETY: `fp8_blocks` checked the features of the kernel `avx512` picks.
        unsafe {
            if avx512 {
                x86::fp8_avx512(p, c, b, s, op, o);
            } else {
                x86::fp8_avx2(p, c, b, s, op, o);
            }
        }
    });
}

/// One float8 code's value as the kernels compute it (for their remainders and tests).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn fp8_value((shift, rebias, nan_from): (u32, f32, u16), c: u8) -> f32 {
    let c = u16::from(c);
    let mag = c & 0x7f;
    if mag >= nan_from {
        return f32::NAN;
    }
    let h = (c & 0x80) << 8 | mag << shift;
    half::f16::from_bits(h).to_f32() * rebias
}

/// `out[i] = table[codes[i] & 15] * scales[i / block]` (`block > 0`; the last block may be
/// shorter) for every `i` below the three lengths' limit: the product of the table entry and
/// its block's scale, rounded once, as the scalar loop computes it.
#[allow(unsafe_code)]
fn lut16_scaled(table: &[f32; 16], codes: &[u8], block: usize, scales: &[f32], out: &mut [f32]) {
    let block = block.max(1);
    // As the scalar loops' `zip`s: only the values that have a code, an output and a scale
    // (a tensor whose public fields disagree decodes as far as they agree).
    let n = codes
        .len()
        .min(out.len())
        .min(scales.len().saturating_mul(block));
    let (codes, out) = (&codes[..n], &mut out[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if block.is_multiple_of(16) && block > 0 && crate::simd::has_avx512() {
            // SAFETY: the CPU has AVX-512 F, BW and VL (checked just above).
            unsafe { x86::lut16_avx512(table, codes, block, scales, out) };
            return;
        }
        if block.is_multiple_of(8) && block > 0 && crate::simd::has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { x86::lut16_avx2(table, codes, block, scales, out) };
            return;
        }
    }
    lut16_portable(table, codes, block, scales, out);
}

/// [`lut16_scaled`] one value at a time (the reference the kernels are tested against, and
/// the path for blocks the kernels do not take).
fn lut16_portable(table: &[f32; 16], codes: &[u8], block: usize, scales: &[f32], out: &mut [f32]) {
    let b = block.max(1);
    for ((cb, ob), &s) in codes.chunks(b).zip(out.chunks_mut(b)).zip(scales) {
        for (o, &c) in ob.iter_mut().zip(cb) {
            *o = table[usize::from(c & 15)] * s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{ScaleOp, fp8_value};
    use std::arch::x86_64::{
        __m128i, _mm_loadl_epi64, _mm_loadu_si128, _mm256_blendv_ps, _mm256_castsi256_ps,
        _mm256_cvtepu8_epi32, _mm256_loadu_ps, _mm256_mul_ps, _mm256_permutevar8x32_ps,
        _mm256_set1_ps, _mm256_slli_epi32, _mm256_storeu_ps, _mm512_cvtepu8_epi32, _mm512_loadu_ps,
        _mm512_mul_ps, _mm512_permutexvar_ps, _mm512_set1_ps, _mm512_storeu_ps,
    };
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpgt_epi16, _mm_cvtepu8_epi16, _mm_cvtsi32_si128, _mm_or_si128,
        _mm_set1_epi16, _mm_sll_epi16, _mm_slli_epi16, _mm256_and_si256,
        _mm256_castsi256_ps as cast256, _mm256_cmpgt_epu16_mask, _mm256_cvtepi16_epi32,
        _mm256_cvtepu8_epi16, _mm256_cvtph_ps, _mm256_div_ps, _mm256_or_si256, _mm256_set1_epi16,
        _mm256_sll_epi16, _mm256_slli_epi16, _mm512_cvtph_ps, _mm512_div_ps, _mm512_mask_mov_ps,
    };

    /// [`super::lut16_scaled`] with AVX-512, `block` a positive multiple of 16: per 16 codes
    /// one widening load, one permute (its index's low four bits), one multiplication.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn lut16_avx512(
        table: &[f32; 16],
        codes: &[u8],
        block: usize,
        scales: &[f32],
        out: &mut [f32],
    ) {
        // SAFETY: `table` holds 16 `f32`s.
        let t = unsafe { _mm512_loadu_ps(table.as_ptr()) };
        let mut cs = codes.chunks_exact(block);
        let mut os = out.chunks_exact_mut(block);
        for ((cb, ob), &s) in (&mut cs).zip(&mut os).zip(scales) {
            let s = _mm512_set1_ps(s);
            for (c, o) in cb.chunks_exact(16).zip(ob.chunks_exact_mut(16)) {
                let c: &[u8; 16] = c.try_into().expect("16 codes");
                let o: &mut [f32; 16] = o.try_into().expect("16 values");
                // SAFETY: 16 bytes read from `c`, 16 `f32`s written to `o` (unaligned).
                unsafe {
                    let i = _mm512_cvtepu8_epi32(_mm_loadu_si128(c.as_ptr().cast::<__m128i>()));
                    // `vpermps` reads each index's low four bits: the code's `& 15`.
                    let v = _mm512_mul_ps(_mm512_permutexvar_ps(i, t), s);
                    _mm512_storeu_ps(o.as_mut_ptr(), v);
                }
            }
        }
        let done = codes.len() - cs.remainder().len();
        super::lut16_portable(
            table,
            cs.remainder(),
            block,
            scales.get(done / block..).unwrap_or(&[]),
            os.into_remainder(),
        );
    }

    /// The float8 decoding of [`super::fp8_blocks`] with AVX-512: per 16 codes their half
    /// patterns in 16-bit lanes, one conversion, one multiplication by the rebias, the NaN
    /// select and the scale. Blocks of any length (a block's last values one at a time).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn fp8_avx512(
        p: (u32, f32, u16),
        codes: &[u8],
        block: usize,
        scales: &[f32],
        op: ScaleOp,
        out: &mut [f32],
    ) {
        let (shift, rebias, nan_from) = p;
        let (sign, low7) = (_mm256_set1_epi16(0x80), _mm256_set1_epi16(0x7f));
        let count = _mm_cvtsi32_si128(shift as i32);
        let above = _mm256_set1_epi16(nan_from as i16 - 1);
        let (rb, nan) = (_mm512_set1_ps(rebias), _mm512_set1_ps(f32::NAN));
        for ((cb, ob), &s) in codes.chunks(block).zip(out.chunks_mut(block)).zip(scales) {
            let sv = _mm512_set1_ps(s);
            let mut cs = cb.chunks_exact(16);
            let mut os = ob.chunks_exact_mut(16);
            for (c, o) in (&mut cs).zip(&mut os) {
                let c: &[u8; 16] = c.try_into().expect("16 codes");
                let o: &mut [f32; 16] = o.try_into().expect("16 values");
                // SAFETY: 16 bytes read from `c`, 16 `f32`s written to `o` (unaligned).
                unsafe {
                    let c = _mm256_cvtepu8_epi16(_mm_loadu_si128(c.as_ptr().cast::<__m128i>()));
                    let mag = _mm256_and_si256(c, low7);
                    let h = _mm256_or_si256(
                        _mm256_slli_epi16::<8>(_mm256_and_si256(c, sign)),
                        _mm256_sll_epi16(mag, count),
                    );
                    let v = _mm512_mul_ps(_mm512_cvtph_ps(h), rb);
                    let v = _mm512_mask_mov_ps(v, _mm256_cmpgt_epu16_mask(mag, above), nan);
                    let v = match op {
                        ScaleOp::Mul => _mm512_mul_ps(v, sv),
                        ScaleOp::Div => _mm512_div_ps(v, sv),
                    };
                    _mm512_storeu_ps(o.as_mut_ptr(), v);
                }
            }
            for (o, &c) in os.into_remainder().iter_mut().zip(cs.remainder()) {
                *o = op.apply(fp8_value(p, c), s);
            }
        }
    }

    /// [`fp8_avx512`] with AVX2 and F16C, 8 codes a step.
    ///
    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn fp8_avx2(
        p: (u32, f32, u16),
        codes: &[u8],
        block: usize,
        scales: &[f32],
        op: ScaleOp,
        out: &mut [f32],
    ) {
        let (shift, rebias, nan_from) = p;
        let (sign, low7) = (_mm_set1_epi16(0x80), _mm_set1_epi16(0x7f));
        let count = _mm_cvtsi32_si128(shift as i32);
        // Magnitudes are at most 0x7f: a signed 16-bit compare is an unsigned one.
        let above = _mm_set1_epi16(nan_from as i16 - 1);
        let (rb, nan) = (_mm256_set1_ps(rebias), _mm256_set1_ps(f32::NAN));
        for ((cb, ob), &s) in codes.chunks(block).zip(out.chunks_mut(block)).zip(scales) {
            let sv = _mm256_set1_ps(s);
            let mut cs = cb.chunks_exact(8);
            let mut os = ob.chunks_exact_mut(8);
            for (c, o) in (&mut cs).zip(&mut os) {
                let c: &[u8; 8] = c.try_into().expect("8 codes");
                let o: &mut [f32; 8] = o.try_into().expect("8 values");
                // SAFETY: 8 bytes read from `c`, 8 `f32`s written to `o` (unaligned).
                unsafe {
                    let c = _mm_cvtepu8_epi16(_mm_loadl_epi64(c.as_ptr().cast::<__m128i>()));
                    let mag = _mm_and_si128(c, low7);
                    let h = _mm_or_si128(
                        _mm_slli_epi16::<8>(_mm_and_si128(c, sign)),
                        _mm_sll_epi16(mag, count),
                    );
                    let v = _mm256_mul_ps(_mm256_cvtph_ps(h), rb);
                    let is_nan = _mm256_cvtepi16_epi32(_mm_cmpgt_epi16(mag, above));
                    let v = _mm256_blendv_ps(v, nan, cast256(is_nan));
                    let v = match op {
                        ScaleOp::Mul => _mm256_mul_ps(v, sv),
                        ScaleOp::Div => _mm256_div_ps(v, sv),
                    };
                    _mm256_storeu_ps(o.as_mut_ptr(), v);
                }
            }
            for (o, &c) in os.into_remainder().iter_mut().zip(cs.remainder()) {
                *o = op.apply(fp8_value(p, c), s);
            }
        }
    }

    /// [`super::lut16_scaled`] with AVX2, `block` a positive multiple of 8: per 8 codes one
    /// widening load, two permutes (entries 0–7 and 8–15) and a blend on bit 3, one
    /// multiplication.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn lut16_avx2(
        table: &[f32; 16],
        codes: &[u8],
        block: usize,
        scales: &[f32],
        out: &mut [f32],
    ) {
        // SAFETY: `table` holds 16 `f32`s: two loads of 8.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_ps(table.as_ptr()),
                _mm256_loadu_ps(table.as_ptr().add(8)),
            )
        };
        let mut cs = codes.chunks_exact(block);
        let mut os = out.chunks_exact_mut(block);
        for ((cb, ob), &s) in (&mut cs).zip(&mut os).zip(scales) {
            let s = _mm256_set1_ps(s);
            for (c, o) in cb.chunks_exact(8).zip(ob.chunks_exact_mut(8)) {
                let c: &[u8; 8] = c.try_into().expect("8 codes");
                let o: &mut [f32; 8] = o.try_into().expect("8 values");
                // SAFETY: 8 bytes read from `c`, 8 `f32`s written to `o` (unaligned).
                unsafe {
                    let i = _mm256_cvtepu8_epi32(_mm_loadl_epi64(c.as_ptr().cast::<__m128i>()));
                    // `vpermps` reads the low three bits; bit 3, moved to the sign, picks
                    // the upper half.
                    let upper = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(i));
                    let v = _mm256_blendv_ps(
                        _mm256_permutevar8x32_ps(lo, i),
                        _mm256_permutevar8x32_ps(hi, i),
                        upper,
                    );
                    _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(v, s));
                }
            }
        }
        let done = codes.len() - cs.remainder().len();
        super::lut16_portable(
            table,
            cs.remainder(),
            block,
            scales.get(done / block..).unwrap_or(&[]),
            os.into_remainder(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::minifloat::MiniFloat;

    /// The float8 kernels give the element table's value of every code (bit for bit, NaN
    /// codes as `f32::NAN`), times or divided by its block's scale: both types, blocks of 1
    /// to 300 codes (remainders of 8 and 16), scales NaN, ±inf, ±0, subnormal; each kernel
    /// called directly where the CPU has it, and the end of the scales ending the decoding.
    #[test]
    #[allow(unsafe_code)]
    fn float8_kernels_equal_the_tables() {
        let specials = [3.0f32, f32::NAN, f32::INFINITY, -0.0, 1e-40, -2.5, 0.0];
        for dtype in [MiniFloat::E4M3Fn, MiniFloat::E5M2] {
            let table = dtype.table();
            let p = fp8_params(dtype).expect("a float8 type");
            for c in 0..=255u8 {
                let (got, want) = (fp8_value(p, c), table[usize::from(c)]);
                assert_eq!(got.to_bits(), want.to_bits(), "{dtype:?} {c:#x}");
            }
            for block in [1usize, 7, 8, 16, 33, 300] {
                let n = 1000usize;
                let codes: Vec<u8> = (0..n).map(|i| (i * 89 % 256) as u8).collect();
                let blocks = n.div_ceil(block);
                let scales: Vec<f32> = (0..blocks)
                    .map(|b| specials[b % specials.len()] * (1.0 + b as f32 / 8.0))
                    .collect();
                for op in [ScaleOp::Mul, ScaleOp::Div] {
                    let want: Vec<f32> = codes
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| op.apply(table[usize::from(c)], scales[i / block]))
                        .collect();
                    let check = |got: &[f32], path: &str| {
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(g.to_bits(), w.to_bits(), "{path} {dtype:?} {block} {i}");
                        }
                    };
                    let mut got = vec![7.0f32; n];
                    let scale = |k: usize| scales.get(k).copied();
                    if fp8_blocks(dtype, &codes, block, scale, op, &mut got) {
                        check(&got, "dispatched");
                    }
                    // Three blocks' scales: the rest left as it was.
                    let mut short = vec![7.0f32; n];
                    let three = |k: usize| (k < 3).then(|| scales[k]);
                    if fp8_blocks(dtype, &codes, block, three, op, &mut short) {
                        let m = (3 * block).min(n);
                        check(&short[..m], "three scales");
                        assert!(short[m..].iter().all(|&v| v == 7.0));
                    }
                    #[cfg(target_arch = "x86_64")]
                    {
                        if crate::simd::has_avx512() {
                            let mut got = vec![7.0f32; n];
                            // SAFETY: the CPU has AVX-512 F, BW and VL (checked above).
                            unsafe { x86::fp8_avx512(p, &codes, block, &scales, op, &mut got) };
                            check(&got, "avx512");
                        }
                        if crate::simd::has_avx2() && crate::simd::has_f16c() {
                            let mut got = vec![7.0f32; n];
                            // SAFETY: the CPU has AVX2 and F16C (checked above).
                            unsafe { x86::fp8_avx2(p, &codes, block, &scales, op, &mut got) };
                            check(&got, "avx2");
                        }
                    }
                }
            }
        }
        // Other types are the caller's.
        let mut out = [0.0f32; 4];
        let one = |_: usize| Some(1.0);
        assert!(!fp8_blocks(
            MiniFloat::E4M3Fnuz,
            &[1; 4],
            4,
            one,
            ScaleOp::Mul,
            &mut out
        ));
    }

    /// The kernels give the portable loop's bits: every byte value as a code (bits above
    /// the fourth ignored), blocks of 8 to 64 with a short last block, scales of every kind
    /// (NaN, ±inf, ±0, subnormal), each kernel called directly where the CPU has it.
    #[test]
    #[allow(unsafe_code)]
    fn kernels_equal_the_portable_loop() {
        let table: [f32; 16] = std::array::from_fn(|i| {
            if i == 5 {
                -0.0
            } else {
                (i as f32 - 7.5) * 0.37
            }
        });
        let specials = [
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            0.0,
            -0.0,
            1e-40,
            3.0,
        ];
        for block in [8usize, 16, 24, 32, 64] {
            for n in [0usize, 7, block, 3 * block + 5, 40 * block] {
                let codes: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
                let scales: Vec<f32> = (0..n.div_ceil(block))
                    .map(|b| specials[b % specials.len()] * (1.0 + b as f32))
                    .collect();
                let mut want = vec![1.0f32; n];
                lut16_portable(&table, &codes, block, &scales, &mut want);
                let check = |got: &[f32], path: &str| {
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g.to_bits(), w.to_bits(), "{path} {block} {n} at {i}");
                    }
                };
                let mut got = vec![2.0f32; n];
                lut16_scaled(&table, &codes, block, &scales, &mut got);
                check(&got, "dispatched");
                #[cfg(target_arch = "x86_64")]
                {
                    if block.is_multiple_of(16) && crate::simd::has_avx512() {
                        let mut got = vec![2.0f32; n];
                        // SAFETY: the CPU has AVX-512 F, BW and VL (checked above).
                        unsafe { x86::lut16_avx512(&table, &codes, block, &scales, &mut got) };
                        check(&got, "avx512");
                    }
                    if crate::simd::has_avx2() {
                        let mut got = vec![2.0f32; n];
                        // SAFETY: the CPU has AVX2 (checked above).
                        unsafe { x86::lut16_avx2(&table, &codes, block, &scales, &mut got) };
                        check(&got, "avx2");
                    }
                }
                // Each code's own entry (the portable loop itself).
                for (i, (&c, w)) in codes.iter().zip(&want).enumerate() {
                    let e = table[usize::from(c & 15)] * scales[i / block];
                    assert_eq!(e.to_bits(), w.to_bits());
                }
            }
        }
    }
}
