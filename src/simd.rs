//! Runtime CPU dispatch and the few SIMD helpers shared by the whole crate (elements,
//! kernels, observers, metrics).
//!
//! [`dispatched!`] turns an `#[inline(always)]` slice kernel into a function that runs a copy
//! compiled with AVX2 and FMA when the CPU has them, and the baseline x86-64 (SSE2) copy
//! otherwise. The dispatched kernels are portable Rust written to vectorise; only code
//! generation changes, so results are identical on every CPU (Rust never contracts `a*b + c`
//! into an FMA by itself). The helpers below that do use intrinsics (hardware f16
//! conversion, prefetch) say so, and each has a portable fallback.
//!
//! The dispatch sits at the slice level (the hot loop itself), not around closures, because
//! LLVM only compiles code for AVX2 when it is inlined into the `target_feature` function, and
//! `#[inline(always)]` is the only way to guarantee that for a loop of any size.
#![allow(unsafe_code)]

/// Whether an environment variable that turns a CPU feature off is set (to anything but empty
/// or `0`).
#[cfg(target_arch = "x86_64")]
fn turned_off(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether the AVX512-VNNI int8 kernels may run on this CPU: `vpdpbusd` on 512-bit registers
/// (`avx512f`, `avx512bw`, `avx512vnni`). `QNUMERIC_NO_VNNI=1` in the environment turns them
/// off (the AVX2 kernels run instead: how a VNNI machine measures and tests the AVX2 paths),
/// and so does `QNUMERIC_NO_AVX512=1` (the 256-bit AVX-VNNI kernels then run where the CPU
/// has them: how an AVX-512 machine tests the kernels of a CPU without AVX-512). Read once.
pub(crate) fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VNNI.get_or_init(|| {
            !turned_off("QNUMERIC_NO_VNNI")
                && has_avx512()
                && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the 256-bit AVX-VNNI int8 kernels may run on this CPU (`avxvnni`, with AVX2 and
/// FMA): `vpdpbusd` in its VEX encoding, as on the client cores without AVX-512 (Alder Lake
/// and later). Chosen only where [`has_avx512_vnni`] is false. `QNUMERIC_NO_VNNI=1` turns
/// them off. Read once.
pub(crate) fn has_avx_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VNNI.get_or_init(|| {
            !turned_off("QNUMERIC_NO_VNNI")
                && has_avx2()
                && std::arch::is_x86_feature_detected!("avxvnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether AVX-512 copies may run on this CPU (`avx512f`, `avx512bw`, `avx512vl`, with AVX2
/// and FMA). `QNUMERIC_NO_AVX512=1` in the environment turns them off (how an AVX-512 machine
/// measures and tests the AVX2 paths). Read once.
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| {
            !turned_off("QNUMERIC_NO_AVX512")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && has_avx2()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX2+FMA copies may run on this CPU (the answer is cached by std).
#[inline(always)]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dispatched!(pub(crate) fn name[generics](args) -> ret = body_fn);` defines `name`, which
/// calls `body_fn` (an `#[inline(always)]` function with the same signature) compiled for
/// AVX2+FMA when available.
macro_rules! dispatched {
    ($(#[$meta:meta])* $vis:vis fn $name:ident [$($gen:tt)*] ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path) => {
        $(#[$meta])*
        #[inline(always)]
        #[allow(unsafe_code)]
        $vis fn $name<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: `avx2` requires only the CPU features AVX2 and FMA, detected
                    // just above; its body is safe code.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use dispatched;

/// [`dispatched!`] with a first tier compiled for AVX-512 (`avx512f`, `avx512bw`, `avx512vl`,
/// see [`has_avx512`]): for loops that gain from 16 lanes and mask registers (measured per
/// use; a loop bound by a division or by memory does not).
macro_rules! dispatched512 {
    ($(#[$meta:meta])* $vis:vis fn $name:ident [$($gen:tt)*] ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path) => {
        $(#[$meta])*
        #[inline(always)]
        #[allow(unsafe_code)]
        $vis fn $name<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
            // The AVX2 and baseline tiers.
            $crate::simd::dispatched!(fn below[$($gen)*]($($arg: $ty),*) $(-> $ret)? = $body);
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn avx512<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: `avx512` requires only the CPU features detected by
                    // `has_avx512`; its body is safe code.
                    return unsafe { avx512($($arg),*) };
                }
            }
            below($($arg),*)
        }
    };
}
pub(crate) use dispatched512;

/// `trunc(t)` of `t` clamped to `[0, max]` (NaN gives 0), for `0 <= max < 2^31`. The clamps
/// make the unchecked conversion sound for every input, so the compiler emits a single
/// `cvttps2dq` (a plain `as` cast must also saturate and map NaN, which costs compares and
/// blends in a vector loop).
///
/// # Panics
/// In debug builds, if `max` is outside `[0, 2^31)`.
#[inline(always)]
pub(crate) fn trunc_clamped(t: f32, max: f32) -> u32 {
    debug_assert!((0.0..2_147_483_648.0).contains(&max));
    let t = if t > 0.0 { t } else { 0.0 };
    let t = if t < max { t } else { max };
    // SAFETY: `t` is in `[0, max]` with `max < 2^31` (NaN became 0 above): not NaN, not
    // infinite, and its truncation fits in an i32.
    unsafe { t.to_int_unchecked::<i32>() as u32 }
}

/// `t` clamped to `[lo, hi]` (NaN gives `lo`) and truncated to `i32`, for
/// `−2^31 <= lo <= hi < 2^31`: the signed [`trunc_clamped`], one `cvttps2dq` in a vector loop
/// (a plain `as i32` was converted one lane at a time there).
///
/// # Panics
/// In debug builds, if the bounds are outside that range.
#[inline(always)]
pub(crate) fn trunc_clamped_i32(t: f32, lo: f32, hi: f32) -> i32 {
    debug_assert!(-2_147_483_648.0 <= lo && lo <= hi && hi < 2_147_483_648.0);
    let t = if t > lo { t } else { lo };
    let t = if t < hi { t } else { hi };
    // SAFETY: `t` is in `[lo, hi]` inside the `i32` range (NaN became `lo` above).
    unsafe { t.to_int_unchecked::<i32>() }
}

/// Asks the CPU to bring the cache line holding `p` into L1 ahead of use (x86-64 `prefetcht0`;
/// nothing elsewhere). A hint only: `p` need not point into an allocation (a prefetch never
/// faults), so callers may aim past the end of their slice.
#[inline(always)]
pub(crate) fn prefetch_read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch does not access memory
        // (it cannot fault, whatever the address).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = p;
    }
}

/// Whether the CPU converts f16 ⇄ f32 in hardware (F16C with AVX; cached by std).
#[inline(always)]
pub(crate) fn has_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f16 bits → f32 with F16C, 8 at a time; `None` (nothing done) without F16C. The results are
/// exact (as the portable conversion).
#[inline]
pub(crate) fn f16_to_f32_hw(src: &[u16], dst: &mut [f32]) -> Option<()> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx,f16c")]
        unsafe fn run(src: &[u16], dst: &mut [f32]) {
            use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
            let n = src.len().min(dst.len());
            let mut i = 0;
            while i + 8 <= n {
                // SAFETY: `i + 8 <= n` keeps the 16-byte load and the 32-byte store in bounds;
                // both are unaligned accesses.
                unsafe {
                    let h = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
                    _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
                }
                i += 8;
            }
            for (d, &h) in dst[i..n].iter_mut().zip(&src[i..n]) {
                *d = half::f16::from_bits(h).to_f32();
            }
        }
        if has_f16c() {
            // SAFETY: the CPU has AVX and F16C (checked just above).
            unsafe { run(src, dst) };
            return Some(());
        }
    }
    let _ = (src, dst);
    None
}

/// f32 → f16 bits with F16C (round to nearest even), 8 at a time; `None` (nothing done)
/// without F16C. Bit-identical to the portable conversion for every non-NaN value.
#[inline]
pub(crate) fn f32_to_f16_hw(src: &[f32], dst: &mut [u16]) -> Option<()> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx,f16c")]
        unsafe fn run(src: &[f32], dst: &mut [u16]) {
            use std::arch::x86_64::{
                __m128i, _MM_FROUND_TO_NEAREST_INT, _mm_storeu_si128, _mm256_cvtps_ph,
                _mm256_loadu_ps,
            };
            let n = src.len().min(dst.len());
            let mut i = 0;
            while i + 8 <= n {
                // SAFETY: `i + 8 <= n` keeps the 32-byte load and the 16-byte store in bounds;
                // both are unaligned accesses.
                unsafe {
                    let v = _mm256_loadu_ps(src.as_ptr().add(i));
                    let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                    _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), h);
                }
                i += 8;
            }
            for (d, &v) in dst[i..n].iter_mut().zip(&src[i..n]) {
                *d = half::f16::from_f32(v).to_bits();
            }
        }
        if has_f16c() {
            // SAFETY: the CPU has AVX and F16C (checked just above).
            unsafe { run(src, dst) };
            return Some(());
        }
    }
    let _ = (src, dst);
    None
}

/// How far ahead (in `f32`s, 4 KB) the block formats' first pass over their input asks for
/// it ([`prefetch_read`], one request per 64-byte line): on the project's VM the hardware
/// prefetchers alone left the block loops waiting on L3 (MXFP4 0.65 → 0.81 of the copy's
/// speed with it, MXFP8 0.52 → 0.63, NVFP4 0.37 → 0.44, Q8_0 0.53 → 0.62; 2 and 8 KB no
/// better).
pub(crate) const PREFETCH_AHEAD: usize = 1024;

/// The bit pattern of the largest `|v|` of each block of `block` values of `x` into `out`
/// (`x.len() == block · out.len()`): the unsigned maximum of the sign-cleared patterns, which
/// orders the magnitudes and puts a NaN's pattern above every other (`> 0x7f80_0000`), so a
/// block with a NaN gets a NaN's pattern.
///
/// With AVX-512, for blocks of a multiple of 16 values, one 16-lane maximum per block and a
/// reduction of its lanes (in the block formats' loops, where the portable maximum's lane
/// folds compiled to chains of scalar operations), the input requested
/// [`PREFETCH_AHEAD`] values ahead. Reducing 16 blocks' lanes together with two-register
/// permutes (a third of the operations) measured no faster: the loop waits on memory, not
/// on the reduction. With AVX2, blocks of a multiple of 8, the same in eight lanes (the
/// portable fold, not compiled for the CPU, ran two SSE lanes at a time). Otherwise the
/// portable loop.
#[inline]
pub(crate) fn block_amax_bits(x: &[f32], block: usize, out: &mut [u32]) {
    debug_assert_eq!(x.len(), block * out.len());
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn run(x: &[f32], block: usize, out: &mut [u32]) {
            use std::arch::x86_64::{
                __m512i, _mm512_and_si512, _mm512_loadu_si512, _mm512_max_epu32,
                _mm512_reduce_max_epu32, _mm512_set1_epi32, _mm512_setzero_si512,
            };
            let abs = _mm512_set1_epi32(0x7fff_ffff);
            for (xb, o) in x.chunks_exact(block).zip(out.iter_mut()) {
                let mut m = _mm512_setzero_si512();
                for c in xb.chunks_exact(16) {
                    prefetch_read(c.as_ptr().wrapping_add(PREFETCH_AHEAD));
                    // SAFETY: `c` holds 16 `f32`s, the 64 bytes of the unaligned load.
                    let v = unsafe { _mm512_loadu_si512(c.as_ptr().cast::<__m512i>()) };
                    m = _mm512_max_epu32(m, _mm512_and_si512(v, abs));
                }
                *o = _mm512_reduce_max_epu32(m);
            }
        }
        if block.is_multiple_of(16) && block > 0 && has_avx512() {
            // SAFETY: the CPU has AVX-512F (checked just above).
            unsafe { run(x, block, out) };
            return;
        }
        /// `run` in eight lanes, blocks of a multiple of 8.
        #[target_feature(enable = "avx2")]
        unsafe fn run8(x: &[f32], block: usize, out: &mut [u32]) {
            use std::arch::x86_64::{
                __m256i, _mm256_and_si256, _mm256_cvtsi256_si32, _mm256_loadu_si256,
                _mm256_max_epu32, _mm256_permute2x128_si256, _mm256_set1_epi32,
                _mm256_setzero_si256, _mm256_shuffle_epi32,
            };
            let abs = _mm256_set1_epi32(0x7fff_ffff);
            for (xb, o) in x.chunks_exact(block).zip(out.iter_mut()) {
                let mut m = _mm256_setzero_si256();
                for c in xb.chunks_exact(8) {
                    prefetch_read(c.as_ptr().wrapping_add(PREFETCH_AHEAD));
                    // SAFETY: `c` holds 8 `f32`s, the 32 bytes of the unaligned load.
                    let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast::<__m256i>()) };
                    m = _mm256_max_epu32(m, _mm256_and_si256(v, abs));
                }
                let m = _mm256_max_epu32(m, _mm256_permute2x128_si256::<1>(m, m));
                let m = _mm256_max_epu32(m, _mm256_shuffle_epi32::<0b0100_1110>(m));
                let m = _mm256_max_epu32(m, _mm256_shuffle_epi32::<0b1011_0001>(m));
                *o = _mm256_cvtsi256_si32(m) as u32;
            }
        }
        if block.is_multiple_of(8) && block > 0 && has_avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            unsafe { run8(x, block, out) };
            return;
        }
    }
    for (xb, o) in x.chunks(block.max(1)).zip(out.iter_mut()) {
        *o = xb.iter().fold(0, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    }
}

#[cfg(test)]
mod tests {
    #[inline(always)]
    fn body(v: &[f32]) -> f32 {
        v.iter().map(|x| (x + 12_582_912.0) - 12_582_912.0).sum()
    }
    dispatched!(fn rounded_sum[](v: &[f32]) -> f32 = body);

    #[test]
    fn dispatch_gives_the_portable_result() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        assert_eq!(rounded_sum(&v), body(&v));
        assert_eq!(
            rounded_sum(&v),
            v.iter().map(|x| x.round_ties_even()).sum::<f32>()
        );
    }

    /// Each block's maximum pattern, whatever the path: blocks of 16 to 64 values (AVX-512
    /// where the CPU has it, else AVX2), of 8, 24 and 40 (AVX2 where the CPU has it) and of 5
    /// (portable), 0 to 37 blocks, the largest magnitude
    /// at many positions of its block, with NaNs, infinities, −0 and subnormals.
    #[test]
    fn block_maxima_are_each_blocks_largest_pattern() {
        let mut r = crate::rng::Lcg::new(7);
        for block in [16usize, 32, 48, 64, 8, 24, 40, 5] {
            for blocks in [0usize, 1, 15, 16, 17, 32, 37] {
                let mut x: Vec<f32> = (0..block * blocks)
                    .map(|_| (r.unit_f32() * 2.0 - 1.0) * 100.0)
                    .collect();
                for (b, xb) in x.chunks_mut(block).enumerate() {
                    let at = (b * 7) % block;
                    xb[at] = match b % 6 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        2 => -1e30,
                        3 => 1e-40,
                        4 => -0.0,
                        _ => 5e3,
                    };
                }
                let mut out = vec![1u32; blocks];
                super::block_amax_bits(&x, block, &mut out);
                for (b, (xb, &o)) in x.chunks(block).zip(&out).enumerate() {
                    let want = xb.iter().map(|v| v.to_bits() & 0x7fff_ffff).max();
                    assert_eq!(Some(o), want, "block {b} of {blocks} × {block}");
                }
            }
        }
    }
}
