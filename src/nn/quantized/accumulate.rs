//! How the int8 layers sum their integer products: [`Int8Accumulation`], the prepared weight
//! rows ([`IntWeights`]) and the u8 × i8 → i32 matrix-product kernels (portable Rust compiled
//! for AVX2 where the CPU has it; identical results on every path).

use crate::error::{QuantError, Result};
use crate::simd::dispatched;

/// How an int8 layer sums the products of its u8 activations and i8 weights.
///
/// - [`Int8Accumulation::Exact`]: every product summed in `i32`, as VNNI CPUs, ARM and the
///   reference kernels do. Equal to the reference path's integer sum.
/// - [`Int8Accumulation::X86Avx2`]: PyTorch's x86 engine on a CPU without VNNI. It multiplies
///   with `vpmaddubsw`, which adds each two adjacent products (along the reduction axis, in
///   the order `(kh, kw, input channel)` with the input channel fastest, within each group;
///   an odd length pads the last pair with 0) in a signed 16-bit lane **with saturation**,
///   then widens to `i32`. The products are of the stored values (activations including
///   their zero point); the zero point's contribution is subtracted afterwards in `i32`.
///   With full-range activations (0..=255) pairs can saturate: that is why PyTorch's x86
///   default halves the activation range (`reduce_range`).
///
/// [`x86_engine_accumulation`] says which one PyTorch's x86 engine uses on the running CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Int8Accumulation {
    /// Exact `i32` accumulation.
    #[default]
    Exact,
    /// The pairwise 16-bit saturating accumulation of x86 AVX2 without VNNI.
    X86Avx2,
}

/// What PyTorch's x86 (fbgemm) engine does on this CPU: [`Int8Accumulation::Exact`] with VNNI
/// (AVX512-VNNI or AVX-VNNI, Cooper Lake / Ice Lake / Zen 4 or newer) and on non-x86 CPUs,
/// [`Int8Accumulation::X86Avx2`] on x86 CPUs without it.
///
/// # Examples
/// ```
/// use qnumeric::nn::quantized::{x86_engine_accumulation, Int8Accumulation};
/// let mode = x86_engine_accumulation();
/// assert!(matches!(mode, Int8Accumulation::Exact | Int8Accumulation::X86Avx2));
/// ```
#[must_use]
pub fn x86_engine_accumulation() -> Int8Accumulation {
    #[cfg(target_arch = "x86_64")]
    {
        let vnni = std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni");
        if vnni {
            Int8Accumulation::Exact
        } else {
            Int8Accumulation::X86Avx2
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Int8Accumulation::Exact
    }
}

/// The weight rows of an int8 layer, prepared once: `[out, k]` in the reduction order of the
/// layer's kernel, stored (`raw`) and with the zero point taken off (`centered`), with the
/// row sums the zero-point corrections need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IntWeights {
    pub(crate) out: usize,
    pub(crate) k: usize,
    raw: Vec<i16>,
    centered: Vec<i16>,
    zero_points: Vec<i32>,
    sum_raw: Vec<i32>,
    sum_centered: Vec<i32>,
}

impl IntWeights {
    /// From stored i8 weights `[out, k]` (already in the kernel's reduction order) and their
    /// zero points. Refuses weights for which an `i32` accumulator could overflow on some
    /// u8 input, in either accumulation mode.
    pub(crate) fn new(
        op: &'static str,
        raw: &[i8],
        out: usize,
        k: usize,
        zero_points: &[i32],
    ) -> Result<Self> {
        debug_assert_eq!(raw.len(), out * k);
        let mut centered = Vec::with_capacity(raw.len());
        let (mut sum_raw, mut sum_centered) = (Vec::with_capacity(out), Vec::with_capacity(out));
        for o in 0..out {
            let row = &raw[o * k..][..k];
            let zw = zero_points[o];
            let (mut s_raw, mut s_c, mut abs_c) = (0i64, 0i64, 0i64);
            for &v in row {
                let c = i64::from(v) - i64::from(zw);
                s_raw += i64::from(v);
                s_c += c;
                abs_c += c.abs();
                centered.push(i16::try_from(c).expect("i8 minus an i8 zero point fits i16"));
            }
            // Exact: |Σ x·c − zx·Σc| <= 2·255·Σ|c|. Emulated: ceil(k/2) saturated pairs of at
            // most 2^15, plus the zero-point corrections (each <= 255·Σ|w| + 255·128·k).
            let pairs = (k as i64 + 1) / 2;
            let bound =
                (2 * 255 * abs_c).max(pairs * 32768 + 255 * 128 * k as i64 * 3 + 255 * s_raw.abs());
            if bound > i64::from(i32::MAX) {
                return Err(QuantError::AccumulatorOverflow {
                    op,
                    channel: o,
                    bound,
                });
            }
            sum_raw.push(s_raw as i32);
            sum_centered.push(s_c as i32);
        }
        Ok(IntWeights {
            out,
            k,
            raw: raw.iter().map(|&v| i16::from(v)).collect(),
            centered,
            zero_points: zero_points.to_vec(),
            sum_raw,
            sum_centered,
        })
    }

    /// `acc[i·out + o] = Σ_t (x[i·k + t] − zx)·(w[o, t] − zw[o])` for `m` rows of stored u8
    /// activations, summed as `mode` says.
    pub(crate) fn accumulate(
        &self,
        x: &[u8],
        m: usize,
        zx: i32,
        mode: Int8Accumulation,
        acc: &mut [i32],
    ) {
        let (k, out) = (self.k, self.out);
        debug_assert_eq!(x.len(), m * k);
        debug_assert_eq!(acc.len(), m * out);
        match mode {
            Int8Accumulation::Exact => {
                gemm_exact(x, m, k, &self.centered, out, acc);
                for row in acc.chunks_mut(out.max(1)) {
                    for (a, &s) in row.iter_mut().zip(&self.sum_centered) {
                        *a -= zx * s;
                    }
                }
            }
            Int8Accumulation::X86Avx2 => {
                gemm_pairs_saturating(x, m, k, &self.raw, out, acc);
                let any_zw = self.zero_points.iter().any(|&z| z != 0);
                for (i, row) in acc.chunks_mut(out.max(1)).enumerate() {
                    let xs: i32 = if any_zw {
                        x[i * k..][..k].iter().map(|&v| i32::from(v)).sum::<i32>() - k as i32 * zx
                    } else {
                        0
                    };
                    for ((a, &s), &zw) in row.iter_mut().zip(&self.sum_raw).zip(&self.zero_points) {
                        *a -= zx * s + zw * xs;
                    }
                }
            }
        }
    }
}

/// Output rows computed together (register blocking over the weight rows).
const BLOCK: usize = 4;

#[inline(always)]
fn gemm_exact_body(x: &[u8], m: usize, k: usize, w: &[i16], out: usize, acc: &mut [i32]) {
    if k == 0 {
        acc.fill(0);
        return;
    }
    for i in 0..m {
        let xr = &x[i * k..][..k];
        let ar = &mut acc[i * out..][..out];
        let mut o = 0;
        while o + BLOCK <= out {
            let w0 = &w[o * k..][..k];
            let w1 = &w[(o + 1) * k..][..k];
            let w2 = &w[(o + 2) * k..][..k];
            let w3 = &w[(o + 3) * k..][..k];
            let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
            for ((((&xv, &b0), &b1), &b2), &b3) in xr.iter().zip(w0).zip(w1).zip(w2).zip(w3) {
                let xv = i32::from(i16::from(xv));
                a0 += xv * i32::from(b0);
                a1 += xv * i32::from(b1);
                a2 += xv * i32::from(b2);
                a3 += xv * i32::from(b3);
            }
            ar[o] = a0;
            ar[o + 1] = a1;
            ar[o + 2] = a2;
            ar[o + 3] = a3;
            o += BLOCK;
        }
        while o < out {
            let wr = &w[o * k..][..k];
            ar[o] = xr
                .iter()
                .zip(wr)
                .map(|(&xv, &b)| i32::from(i16::from(xv)) * i32::from(b))
                .sum();
            o += 1;
        }
    }
}

dispatched!(fn gemm_exact[](x: &[u8], m: usize, k: usize, w: &[i16], out: usize, acc: &mut [i32]) = gemm_exact_body);

/// `x0·w0 + x1·w1` saturated to `i16`, as `vpmaddubsw` does.
#[inline(always)]
fn pair(x0: u8, x1: u8, w0: i16, w1: i16) -> i32 {
    let p = i32::from(x0) * i32::from(w0) + i32::from(x1) * i32::from(w1);
    p.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

#[inline(always)]
fn dot_pairs(xr: &[u8], wr: &[i16]) -> i32 {
    let mut a = 0i32;
    let (xc, wc) = (xr.chunks_exact(2), wr.chunks_exact(2));
    let (xt, wt) = (xc.remainder(), wc.remainder());
    for (xp, wp) in xc.zip(wc) {
        a += pair(xp[0], xp[1], wp[0], wp[1]);
    }
    if let (Some(&x0), Some(&w0)) = (xt.first(), wt.first()) {
        a += pair(x0, 0, w0, 0);
    }
    a
}

#[inline(always)]
fn gemm_pairs_body(x: &[u8], m: usize, k: usize, w: &[i16], out: usize, acc: &mut [i32]) {
    if k == 0 {
        acc.fill(0);
        return;
    }
    for i in 0..m {
        let xr = &x[i * k..][..k];
        for (o, a) in acc[i * out..][..out].iter_mut().enumerate() {
            *a = dot_pairs(xr, &w[o * k..][..k]);
        }
    }
}

dispatched!(fn gemm_pairs_saturating[](x: &[u8], m: usize, k: usize, w: &[i16], out: usize, acc: &mut [i32]) = gemm_pairs_body);

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed >> 33
    }

    /// The exact sum written out, the oracle of both kernels.
    fn reference(x: &[u8], m: usize, k: usize, w: &[i8], zw: &[i32], zx: i32) -> Vec<i64> {
        let out = zw.len();
        let mut r = Vec::new();
        for i in 0..m {
            for o in 0..out {
                r.push(
                    (0..k)
                        .map(|t| {
                            (i64::from(x[i * k + t]) - i64::from(zx))
                                * (i64::from(w[o * k + t]) - i64::from(zw[o]))
                        })
                        .sum(),
                );
            }
        }
        r
    }

    #[test]
    fn exact_mode_equals_the_exact_sum_at_every_shape() {
        let mut seed = 7;
        for &(m, k, out) in &[
            (1, 1, 1),
            (3, 7, 5),
            (2, 33, 9),
            (4, 64, 4),
            (1, 0, 3),
            (0, 5, 2),
        ] {
            let x: Vec<u8> = (0..m * k).map(|_| lcg(&mut seed) as u8).collect();
            let w: Vec<i8> = (0..out * k).map(|_| lcg(&mut seed) as i8).collect();
            let zw: Vec<i32> = (0..out).map(|o| (o as i32 % 3) - 1).collect();
            let iw = IntWeights::new("t", &w, out, k, &zw).expect("weights");
            let mut acc = vec![0; m * out];
            iw.accumulate(&x, m, 17, Int8Accumulation::Exact, &mut acc);
            let got: Vec<i64> = acc.iter().map(|&a| i64::from(a)).collect();
            assert_eq!(
                got,
                reference(&x, m, k, &w, &zw, 17),
                "m={m} k={k} out={out}"
            );
        }
    }

    #[test]
    fn emulated_mode_saturates_pairs_and_equals_exact_when_nothing_saturates() {
        // 64 inputs at 255 and weights at 127: each pair is 64770, saturated to 32767; the
        // documented PyTorch figure is a Linear returning 32 quanta instead of 64.
        let (k, out) = (64, 1);
        let x = vec![255u8; k];
        let w = vec![127i8; k];
        let iw = IntWeights::new("t", &w, out, k, &[0]).expect("weights");
        let mut acc = [0];
        iw.accumulate(&x, 1, 0, Int8Accumulation::X86Avx2, &mut acc);
        assert_eq!(acc[0], 32 * 32767);
        iw.accumulate(&x, 1, 0, Int8Accumulation::Exact, &mut acc);
        assert_eq!(acc[0], 64 * 255 * 127);
        // 7-bit activations never saturate: both modes agree (odd k pads the last pair).
        let mut seed = 3;
        let (m, k, out) = (3, 31, 6);
        let x: Vec<u8> = (0..m * k).map(|_| (lcg(&mut seed) % 128) as u8).collect();
        let w: Vec<i8> = (0..out * k).map(|_| lcg(&mut seed) as i8).collect();
        let iw = IntWeights::new("t", &w, out, k, &vec![0; out]).expect("weights");
        let (mut a, mut b) = (vec![0; m * out], vec![0; m * out]);
        iw.accumulate(&x, m, 5, Int8Accumulation::Exact, &mut a);
        iw.accumulate(&x, m, 5, Int8Accumulation::X86Avx2, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn accumulator_overflow_is_refused() {
        // 2·255·127·k > 2^31 − 1 for k = 33_200.
        let k = 33_200;
        let w = vec![127i8; k];
        assert!(matches!(
            IntWeights::new("t", &w, 1, k, &[0]),
            Err(QuantError::AccumulatorOverflow { channel: 0, .. })
        ));
    }
}
