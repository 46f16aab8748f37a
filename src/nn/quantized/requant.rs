//! The weight parameters of an int8 layer and its requantization (accumulator → quint8).

use ndarray::ArrayD;

use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::qparams::{AnyQParams, QParams, ZeroPoints};
use crate::tensor::QuantizedTensor;

/// Per-output-channel scales and zero points of a weight quantized per tensor or along axis 0.
pub(crate) fn weight_channels(
    op: &'static str,
    w: &QuantizedTensor<i8>,
) -> Result<(Vec<f32>, Vec<i32>)> {
    let out = w.shape().first().copied().unwrap_or(0);
    match w.params() {
        AnyQParams::PerTensor(p) => Ok((vec![p.scale(); out], vec![p.zero_point(); out])),
        AnyQParams::PerChannel(p) => {
            let axis = crate::qparams::resolve_axis(op, p.axis(), w.shape().len())?;
            if axis != 0 {
                return Err(QuantError::UnsupportedQParams {
                    op,
                    reason: "per-channel weights must be quantized along axis 0 (output channels)",
                });
            }
            match p.zero_points() {
                ZeroPoints::Int(z) => Ok((p.scales().to_vec(), z.clone())),
                ZeroPoints::Float(_) => Err(QuantError::UnsupportedQParams {
                    op,
                    reason: "weights with float zero points are not supported",
                }),
            }
        }
    }
}

/// Checks that output (or input) parameters are quint8.
pub(crate) fn need_quint8(op: &'static str, qp: &QParams) -> Result<()> {
    if qp.dtype() == QDType::QUInt8 {
        Ok(())
    } else {
        Err(QuantError::WrongDType {
            op,
            expected: QDType::QUInt8,
            got: qp.dtype(),
        })
    }
}

/// A float bias `[out]` with no NaN (±inf saturate the output).
pub(crate) fn check_bias_values(op: &'static str, bias: Option<&ArrayD<f32>>) -> Result<()> {
    if let Some(b) = bias
        && let Some(index) = b.iter().position(|v| v.is_nan())
    {
        return Err(QuantError::NanInput { op, index });
    }
    Ok(())
}

/// PyTorch's requantization of an `i32` accumulator (every operation in `f32`, in this
/// order): `clamp(rne((acc·sx·sw[o] + bias[o]) / so) + zo, lo, 255)`, `lo = zo` with a fused
/// ReLU, else 0. Infinite intermediate values saturate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Requant {
    sx: f32,
    w_scales: Vec<f32>,
    bias: Vec<f32>,
    so: f32,
    zo: f32,
    lo: f32,
}

impl Requant {
    pub(crate) fn new(
        sx: f32,
        w_scales: &[f32],
        bias: Option<&ArrayD<f32>>,
        out: &QParams,
        relu: bool,
    ) -> Self {
        let zo = out.zero_point() as f32;
        Requant {
            sx,
            w_scales: w_scales.to_vec(),
            bias: match bias {
                Some(b) => b.iter().copied().collect(),
                None => vec![0.0; w_scales.len()],
            },
            so: out.scale(),
            zo,
            lo: if relu { zo } else { 0.0 },
        }
    }

    /// One accumulator of channel `o` (the oracle of [`Requant::apply_rows`]).
    #[cfg(test)]
    pub(crate) fn apply(&self, acc: i32, o: usize) -> u8 {
        let v = (acc as f32 * self.sx) * self.w_scales[o] + self.bias[o];
        let r = (v / self.so).round_ties_even() + self.zo;
        // NaN cannot occur (finite accumulator, bias without NaN); ±inf saturate.
        r.clamp(self.lo, 255.0) as u8
    }

    /// `out[i·n + j] = apply(acc[i·n + j], o0 + j)` for rows of the `n` channels
    /// `o0..o0 + n`, vectorised.
    pub(crate) fn apply_rows(&self, acc: &[i32], o0: usize, n: usize, out: &mut [u8]) {
        assert_eq!(out.len(), acc.len(), "one output per accumulator");
        assert_eq!(acc.len() % n.max(1), 0, "whole rows");
        requant_rows(
            acc,
            &self.w_scales[o0..][..n],
            &self.bias[o0..][..n],
            [self.sx, self.so, self.zo, self.lo],
            out,
        );
    }
}

impl Requant {
    /// The parameters shared by every channel, `[sx, so, zo, lo]` (for kernels that
    /// requantize in registers with the same operations as [`Requant::apply`]).
    pub(crate) fn shared(&self) -> [f32; 4] {
        [self.sx, self.so, self.zo, self.lo]
    }

    /// Channel `o`'s weight scale and bias.
    pub(crate) fn channel(&self, o: usize) -> [f32; 2] {
        [self.w_scales[o], self.bias[o]]
    }
}

/// [`Requant::apply`] over rows of the channels of `ws` and `bias`, with the same `f32`
/// operations in the same order. The rounding `rne(t)` is `(t + 1.5·2^23) − 1.5·2^23`, exact for `|t| <= 2^22`; `t`
/// is clamped to that range first, which changes no result (beyond it both give an output
/// clamped to the range's end).
#[inline(always)]
fn requant_rows_body(acc: &[i32], ws: &[f32], bias: &[f32], p: [f32; 4], out: &mut [u8]) {
    let n = ws.len().max(1);
    for (a, o) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        requant_run(a, ws, bias, p, o);
    }
}

crate::simd::dispatched!(fn requant_rows[](acc: &[i32], ws: &[f32], bias: &[f32], p: [f32; 4], out: &mut [u8]) = requant_rows_body);

#[inline(always)]
fn requant_run(acc: &[i32], ws: &[f32], bias: &[f32], p: [f32; 4], out: &mut [u8]) {
    for (((o, &a), &w), &b) in out.iter_mut().zip(acc).zip(ws).zip(bias) {
        *o = requant_one(a, w, b, p);
    }
}

/// One requantized value (the body of the vectorised loops).
#[inline(always)]
fn requant_one(a: i32, w: f32, b: f32, [sx, so, zo, lo]: [f32; 4]) -> u8 {
    let v = (a as f32 * sx) * w + b;
    // `round_ties_even` is one instruction with AVX2 (SSE4.1 `roundps`); ±inf stay and
    // saturate below. Compare-selects: no NaN here (finite accumulator, bias without NaN).
    let r = (v / so).round_ties_even() + zo;
    let r = if r > lo { r } else { lo };
    crate::simd::trunc_clamped(r, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn vectorised_requantization_equals_the_scalar_one() {
        let bias = arr1(&[
            0.0f32,
            0.37,
            -1.5e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.5,
            -0.25,
            1e-3,
        ])
        .into_dyn();
        let mut accs: Vec<i32> = vec![0, 1, -1, i32::MAX, i32::MIN, 1 << 22, -(1 << 22), 77_777];
        let mut r = crate::rng::Lcg::new(1);
        accs.extend((0..2000).map(|_| {
            let s = r.next_u64();
            ((s >> 33) as i32) >> (s % 24)
        }));
        let w_scales = [0.01f32, 0.002, 0.5, 1e-6, 0.03, 0.25, 0.0125, 7.0];
        for (zo, relu) in [(0, false), (128, false), (55, true), (255, true)] {
            let out = QParams::new(0.0731, zo, QDType::QUInt8).expect("valid");
            let rq = Requant::new(0.0173, &w_scales, Some(&bias), &out, relu);
            for o0 in 0..8 {
                let n = 8 - o0;
                let whole = &accs[..accs.len() / n * n];
                let mut got = vec![0u8; whole.len()];
                rq.apply_rows(whole, o0, n, &mut got);
                let want: Vec<u8> = whole
                    .iter()
                    .enumerate()
                    .map(|(j, &a)| rq.apply(a, o0 + j % n))
                    .collect();
                assert_eq!(got, want, "zo={zo} relu={relu} o0={o0}");
            }
        }
    }
}
