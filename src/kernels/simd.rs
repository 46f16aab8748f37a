//! Runtime CPU dispatch. [`dispatched!`] turns an `#[inline(always)]` slice kernel into a
//! function that runs a copy compiled with AVX2 and FMA when the CPU has them, and the
//! baseline x86-64 (SSE2) copy otherwise. The kernels are portable Rust written to
//! vectorise (no intrinsics); only code generation changes, so results are identical on every
//! CPU (Rust never contracts `a*b + c` into an FMA by itself).
//!
//! The dispatch sits at the slice level (the hot loop itself), not around closures, because
//! LLVM only compiles code for AVX2 when it is inlined into the `target_feature` function, and
//! `#[inline(always)]` is the only way to guarantee that for a loop of any size.
#![allow(unsafe_code)]

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
                if $crate::kernels::simd::has_avx2() {
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
}
