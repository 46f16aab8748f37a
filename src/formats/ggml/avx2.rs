//! ggml's Q8_0, Q4_0, Q5_0, Q4_1 and Q5_1 quantizers for CPUs with AVX2 and F16C: the same
//! arithmetic as the portable loops (and ggml's C), in eight-lane registers, eight blocks at
//! a time. On the AVX-512 tier only Q8_0 keeps the portable loop compiled for AVX-512; the
//! 4- and 5-bit types run these kernels there too ([`runs`]).
//!
//! The portable loops compiled for AVX2 reduced each block's maximum and packed its codes
//! lane by lane (inserts, extracts and stack round trips): measured on an AVX2-only CPU (AMD
//! EPYC, Zen), they ran behind ggml's own C (`quantize_row_q4_0_ref`). Here each block costs a
//! handful of whole-register operations:
//! - the largest magnitude is the unsigned maximum of the sign-cleared bit patterns (a NaN's
//!   pattern sorts above `+inf`'s, so one compare of each block's maximum against
//!   `0x7f80_0000` finds NaN and infinite input without a pass of its own);
//! - the first element of that magnitude (Q4_0 / Q5_0 keep its sign) is the lowest set bit of
//!   the four compares' sign masks;
//! - the eight blocks' divisions, reciprocals and f16 conversions run as one register each;
//! - Q5's fifth bits are the sign masks of the codes shifted left by 27 (one instruction per
//!   eight codes).
//!
//! Every function here is tested against ggml's loops in the parent's tests (bit for bit).

use std::arch::x86_64::{
    __m128i, __m256, __m256i, _CMP_NEQ_UQ, _MM_FROUND_NO_EXC, _MM_FROUND_TO_NEAREST_INT,
    _MM_FROUND_TO_ZERO, _mm_storeu_si128, _mm256_add_ps, _mm256_and_ps, _mm256_and_si256,
    _mm256_castps_si256, _mm256_castsi256_ps, _mm256_castsi256_si128, _mm256_cmp_ps,
    _mm256_cmpeq_epi32, _mm256_cvtps_ph, _mm256_cvtsi256_si32, _mm256_cvttps_epi32, _mm256_div_ps,
    _mm256_loadu_ps, _mm256_max_epu32, _mm256_max_ps, _mm256_min_ps, _mm256_movemask_ps,
    _mm256_mul_ps, _mm256_or_ps, _mm256_or_si256, _mm256_packs_epi16, _mm256_packs_epi32,
    _mm256_packus_epi16, _mm256_packus_epi32, _mm256_permute2x128_si256,
    _mm256_permutevar8x32_epi32, _mm256_round_ps, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_setr_epi32, _mm256_setzero_ps, _mm256_shuffle_epi32, _mm256_slli_epi32,
    _mm256_storeu_ps, _mm256_storeu_si256, _mm256_sub_ps,
};

/// Blocks per batch (one register of scales).
const BATCH: usize = 8;

/// Whether the kernel of `kind` runs on this CPU: AVX2 and F16C, except Q8_0 on the AVX-512
/// tier. Measured on an AMD EPYC Zen 4 (AVX-512), the portable loops compiled for AVX-512
/// were faster for Q8_0 (0.81 against 1.14 ms for 4M values) and slower for the others,
/// which gathered their nibbles and fifth bits lane by lane (Q4_0 2.4–4.7 against 1.3 ms,
/// Q5_0 5.2 against 1.5, Q4_1 2.5 against 1.8, Q5_1 5.5 against 2.0).
pub(super) fn runs(kind: Legacy) -> bool {
    crate::simd::has_avx2()
        && crate::simd::has_f16c()
        && !(matches!(kind, Legacy::Q8) && crate::simd::has_avx512())
}

/// A legacy type's quantizer: `Q8` (Q8_0), `Sym<4>` / `Sym<5>` (Q4_0, Q5_0), `Min<4>` /
/// `Min<5>` (Q4_1, Q5_1).
#[derive(Clone, Copy)]
pub(super) enum Legacy {
    /// Q8_0.
    Q8,
    /// Q4_0 (`4`) or Q5_0 (`5`).
    Sym(u32),
    /// Q4_1 (`4`) or Q5_1 (`5`).
    Min(u32),
}

impl Legacy {
    /// Bytes per block.
    fn size(self) -> usize {
        match self {
            Legacy::Q8 => 34,
            Legacy::Sym(4) => 18,
            Legacy::Sym(_) => 22,
            Legacy::Min(4) => 20,
            Legacy::Min(_) => 24,
        }
    }
}

/// Quantizes whole blocks of `x` into `out` (`out.len() == x.len() / 32 · size`), returning
/// whether every value was finite (when not, `out` holds unspecified bytes).
///
/// # Safety
/// The CPU must have AVX2 and F16C (as [`runs`] checks).
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn quantize(kind: Legacy, x: &[f32], out: &mut [u8]) -> bool {
    let size = kind.size();
    let mut xs = x.chunks_exact(32 * BATCH);
    let mut os = out.chunks_exact_mut(size * BATCH);
    let mut worst = _mm256_set1_epi32(0);
    for (xs, os) in (&mut xs).zip(&mut os) {
        let xs: &[f32; 32 * BATCH] = xs.try_into().expect("a batch");
        worst = _mm256_max_epu32(worst, batch(kind, xs, os));
    }
    // The last blocks through a zero-padded batch (zeros are finite and written nowhere).
    let (rx, ro) = (xs.remainder(), os.into_remainder());
    if !rx.is_empty() {
        let mut px = [0.0f32; 32 * BATCH];
        px[..rx.len()].copy_from_slice(rx);
        let mut po = [0u8; 34 * BATCH];
        worst = _mm256_max_epu32(worst, batch(kind, &px, &mut po[..size * BATCH]));
        ro.copy_from_slice(&po[..ro.len()]);
    }
    (_mm256_cvtsi256_si32(worst) as u32) < 0x7f80_0000
}

/// Eight blocks; returns the largest sign-cleared bit pattern in every lane.
#[target_feature(enable = "avx2,f16c")]
fn batch(kind: Legacy, x: &[f32; 32 * BATCH], out: &mut [u8]) -> __m256i {
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let mut worst = _mm256_set1_epi32(0);
    // Per block: the value its scale is made of (`m`, and the minimum `lo` for Min).
    let (mut m, mut lo) = ([0.0f32; BATCH], [0.0f32; BATCH]);
    let mut zero_extreme = 0u32;
    for (k, xb) in x.chunks_exact(32).enumerate() {
        crate::simd::prefetch_read(xb.as_ptr().wrapping_add(crate::simd::PREFETCH_AHEAD));
        let v = load4(xb);
        let a = v.map(|v| _mm256_and_si256(_mm256_castps_si256(v), abs));
        let top = _mm256_max_epu32(_mm256_max_epu32(a[0], a[1]), _mm256_max_epu32(a[2], a[3]));
        let top = all_lanes_max(top);
        worst = _mm256_max_epu32(worst, top);
        let amax = _mm256_cvtsi256_si32(top) as u32;
        match kind {
            Legacy::Q8 => m[k] = f32::from_bits(amax),
            Legacy::Sym(_) => {
                // The first element of the largest magnitude (`+0` for an all-zero block).
                let hit = |i: usize| {
                    _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(a[i], top))) as u32
                };
                let mask = hit(0) | hit(1) << 8 | hit(2) << 16 | hit(3) << 24;
                let j = mask.trailing_zeros() as usize;
                m[k] = if amax == 0 {
                    0.0
                } else {
                    xb.get(j).copied().unwrap_or(0.0)
                };
            }
            Legacy::Min(_) => {
                let l = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
                let h = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
                let (l, h) = (lanes_min(l), lanes_max(h));
                // A zero extreme's sign is the block's first zero's: that block is done by
                // the portable loop, which settles it.
                zero_extreme |= u32::from(l == 0.0 || h == 0.0) << k;
                (lo[k], m[k]) = (l, h);
            }
        }
    }
    // The scales of the eight blocks: `d`, its reciprocal (0 for `d = 0`), f16 `d` (and `m`).
    // SAFETY: each array holds 8 `f32`s.
    let (mv, lv) = unsafe { (_mm256_loadu_ps(m.as_ptr()), _mm256_loadu_ps(lo.as_ptr())) };
    let d = match kind {
        Legacy::Q8 => _mm256_div_ps(mv, _mm256_set1_ps(127.0)),
        Legacy::Sym(bits) => _mm256_div_ps(mv, _mm256_set1_ps(-((1u32 << (bits - 1)) as f32))),
        Legacy::Min(bits) => _mm256_div_ps(
            _mm256_sub_ps(mv, lv),
            _mm256_set1_ps(((1u32 << bits) - 1) as f32),
        ),
    };
    let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(d, _mm256_setzero_ps());
    let id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0), d), nonzero);
    let (mut idk, mut dh, mut mh) = ([0.0f32; BATCH], [0u16; BATCH], [0u16; BATCH]);
    // SAFETY: 8 `f32`s into `idk`, 8 `u16`s (16 bytes) into `dh` and `mh`.
    unsafe {
        _mm256_storeu_ps(idk.as_mut_ptr(), id);
        _mm_storeu_si128(
            dh.as_mut_ptr().cast::<__m128i>(),
            _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d),
        );
        _mm_storeu_si128(
            mh.as_mut_ptr().cast::<__m128i>(),
            _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(lv),
        );
    }
    let size = kind.size();
    for (k, (xb, ob)) in x
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(size))
        .enumerate()
    {
        let v = load4(xb);
        let id = _mm256_set1_ps(idk[k]);
        ob[..2].copy_from_slice(&dh[k].to_le_bytes());
        match kind {
            Legacy::Q8 => {
                let c = v.map(|v| round_away(_mm256_mul_ps(v, id)));
                let p = _mm256_packs_epi16(
                    _mm256_packs_epi32(c[0], c[1]),
                    _mm256_packs_epi32(c[2], c[3]),
                );
                let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                let q: &mut [u8; 32] = (&mut ob[2..34]).try_into().expect("32 codes");
                // SAFETY: `q` holds 32 bytes (an unaligned store).
                unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast::<__m256i>(), p) };
            }
            Legacy::Sym(bits) => {
                let half = (1u32 << (bits - 1)) as f32;
                let top = ((1u32 << bits) - 1) as f32;
                let off = _mm256_set1_ps(half + 0.5);
                let c = v.map(|v| clamped_codes(_mm256_add_ps(_mm256_mul_ps(v, id), off), top));
                codes_out(&c, ob, bits, if bits == 4 { 2 } else { 6 });
            }
            Legacy::Min(bits) => {
                let top = ((1u32 << bits) - 1) as f32;
                let (l, half) = (_mm256_set1_ps(lo[k]), _mm256_set1_ps(0.5));
                let c = v.map(|v| {
                    clamped_codes(
                        _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, l), id), half),
                        top,
                    )
                });
                ob[2..4].copy_from_slice(&mh[k].to_le_bytes());
                codes_out(&c, ob, bits, if bits == 4 { 4 } else { 8 });
                if zero_extreme >> k & 1 == 1 {
                    let _ = super::q_min(xb, ob, bits);
                }
            }
        }
    }
    worst
}

/// A block's 32 values as four registers.
#[target_feature(enable = "avx2")]
fn load4(xb: &[f32]) -> [__m256; 4] {
    let xb: &[f32; 32] = xb.try_into().expect("a block of 32");
    // SAFETY: each load reads 8 of the block's 32 `f32`s (unaligned loads).
    std::array::from_fn(|i| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * i)) })
}

/// The unsigned maximum of the eight lanes, in every lane.
#[target_feature(enable = "avx2")]
fn all_lanes_max(v: __m256i) -> __m256i {
    let v = _mm256_max_epu32(v, _mm256_permute2x128_si256::<1>(v, v));
    let v = _mm256_max_epu32(v, _mm256_shuffle_epi32::<0b0100_1110>(v));
    _mm256_max_epu32(v, _mm256_shuffle_epi32::<0b1011_0001>(v))
}

/// The smallest of eight finite lanes (which of `±0` is unspecified: callers settle zeros).
#[target_feature(enable = "avx2")]
fn lanes_min(v: __m256) -> f32 {
    let mut l = [0.0f32; 8];
    // SAFETY: 8 `f32`s.
    unsafe { _mm256_storeu_ps(l.as_mut_ptr(), v) };
    l.iter().fold(f32::MAX, |a, &v| if v < a { v } else { a })
}

/// The largest of eight finite lanes (as [`lanes_min`]).
#[target_feature(enable = "avx2")]
fn lanes_max(v: __m256) -> f32 {
    let mut h = [0.0f32; 8];
    // SAFETY: 8 `f32`s.
    unsafe { _mm256_storeu_ps(h.as_mut_ptr(), v) };
    h.iter().fold(-f32::MAX, |a, &v| if v > a { v } else { a })
}

/// `roundf` (ties away from zero) as `i32` lanes: the truncation of `t + copysign(0.5⁻, t)`,
/// with `0.5⁻` the `f32` below one half (the form compilers emit for `roundf`).
#[target_feature(enable = "avx2")]
fn round_away(t: __m256) -> __m256i {
    let sign = _mm256_and_ps(t, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN)));
    let half = _mm256_or_ps(sign, _mm256_set1_ps(0.499_999_97));
    let r = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_add_ps(t, half));
    _mm256_cvttps_epi32(r)
}

/// `trunc(min(max(t, 0), top))` as `i32` lanes (NaN gives 0), the portable
/// [`crate::simd::trunc_clamped`]'s compare-selects in the same order.
#[target_feature(enable = "avx2")]
fn clamped_codes(t: __m256, top: f32) -> __m256i {
    let t = _mm256_max_ps(t, _mm256_setzero_ps());
    _mm256_cvttps_epi32(_mm256_min_ps(t, _mm256_set1_ps(top)))
}

/// Writes a block's 32 codes (`i32` lanes, elements 0–7, 8–15, 16–23, 24–31): 16 bytes of
/// nibbles at `at` (element `j` low, `j + 16` high) and, for 5 bits, `qh` (bit 4 of element
/// `j` in bit `j`) in the 4 bytes before.
#[target_feature(enable = "avx2")]
fn codes_out(c: &[__m256i; 4], ob: &mut [u8], bits: u32, at: usize) {
    let low = _mm256_set1_epi32(0xf);
    let nib = |a: __m256i, b: __m256i| {
        _mm256_or_si256(
            _mm256_and_si256(a, low),
            _mm256_slli_epi32::<4>(_mm256_and_si256(b, low)),
        )
    };
    let p = _mm256_packus_epi32(nib(c[0], c[2]), nib(c[1], c[3]));
    let p = _mm256_packus_epi16(p, p);
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
    let q: &mut [u8; 16] = (&mut ob[at..at + 16]).try_into().expect("16 bytes");
    // SAFETY: `q` holds 16 bytes (an unaligned store).
    unsafe { _mm_storeu_si128(q.as_mut_ptr().cast::<__m128i>(), _mm256_castsi256_si128(p)) };
    if bits == 5 {
        let fifth = |i: usize| {
            _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32::<27>(c[i]))) as u32
        };
        let qh = fifth(0) | fifth(1) << 8 | fifth(2) << 16 | fifth(3) << 24;
        ob[at - 4..at].copy_from_slice(&qh.to_le_bytes());
    }
}
