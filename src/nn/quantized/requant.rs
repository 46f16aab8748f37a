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
    if let Some(b) = bias {
        if let Some(index) = b.iter().position(|v| v.is_nan()) {
            return Err(QuantError::NanInput { op, index });
        }
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

    #[inline]
    pub(crate) fn apply(&self, acc: i32, o: usize) -> u8 {
        let v = (acc as f32 * self.sx) * self.w_scales[o] + self.bias[o];
        let r = (v / self.so).round_ties_even() + self.zo;
        // NaN cannot occur (finite accumulator, bias without NaN); ±inf saturate.
        r.clamp(self.lo, 255.0) as u8
    }
}
