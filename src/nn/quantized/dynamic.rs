//! [`DynamicQuantizedLinear`]: the input quantized per call, float output.

use ndarray::{ArrayD, IxDyn};

use super::accumulate::{ActRows, Int8Accumulation, IntWeights};
use super::requant::{check_bias_values, weight_channels};
use crate::error::{QuantError, Result};
use crate::nn::linear::{linear_float, linear_rows};
use crate::nn::module::one_input;
use crate::nn::weighted::check_bias;
use crate::nn::{Activation, LayerRole, Linear, Module, WeightRef, WeightedCore};
use crate::qparams::{AnyQParams, QParams, choose_dynamic_qparams};
use crate::tensor::QuantizedTensor;

/// Dynamically quantized linear layer: float `[*, in]` → float `[*, out]`. Each call
/// quantizes its input to quint8 with parameters chosen from that input's min and max
/// ([`choose_dynamic_qparams`]), accumulates in i32 against the qint8 weight and returns
/// `f32(sx·sw[o])·acc + bias[o]` (fbgemm's float output).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicQuantizedLinear {
    weight: QuantizedTensor<i8>,
    bias: Option<ArrayD<f32>>,
    reduce_range: bool,
    w_int: IntWeights,
    w_scales: Vec<f32>,
}

impl DynamicQuantizedLinear {
    /// A dynamic linear layer with `reduce_range` on (PyTorch's x86 default: inputs use
    /// `0..=127`).
    ///
    /// # Errors
    /// As [`QuantizedLinear::new`](super::QuantizedLinear::new).
    pub fn new(weight: QuantizedTensor<i8>, bias: Option<ArrayD<f32>>) -> Result<Self> {
        const OP: &str = "DynamicQuantizedLinear::new";
        if weight.shape().len() != 2 {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0, 0],
                got: weight.shape().to_vec(),
            });
        }
        let o = weight.shape()[0];
        check_bias(OP, bias.as_ref(), o)?;
        check_bias_values(OP, bias.as_ref())?;
        let (w_scales, zps) = weight_channels(OP, &weight)?;
        let raw = weight.int_repr().as_standard_layout();
        let w_int = IntWeights::new(
            OP,
            raw.as_slice().expect("standard layout"),
            o,
            weight.shape()[1],
            &zps,
        )?;
        Ok(DynamicQuantizedLinear {
            weight,
            bias,
            reduce_range: true,
            w_int,
            w_scales,
        })
    }

    /// Quantizes a float [`Linear`]'s weight.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedLayer`] for a linear layer with a fused ReLU; as
    /// [`DynamicQuantizedLinear::new`].
    pub fn from_float(linear: &Linear, weight_params: impl Into<AnyQParams>) -> Result<Self> {
        if linear.core().has_relu() {
            return Err(QuantError::UnsupportedLayer {
                op: "DynamicQuantizedLinear::from_float",
                kind: linear.kind().to_string(),
                reason: "dynamic quantization of a LinearReLU is not supported",
            });
        }
        let w = QuantizedTensor::<i8>::quantize(linear.core().weight(), weight_params)?;
        DynamicQuantizedLinear::new(w, linear.core().bias().cloned())
    }

    /// The same layer with the full input range `0..=255` (what PyTorch's x86 engine wants on
    /// VNNI CPUs).
    #[must_use]
    pub fn with_full_range(mut self) -> Self {
        self.reduce_range = false;
        self
    }

    /// Whether inputs use the halved range `0..=127`.
    #[must_use]
    pub fn reduce_range(&self) -> bool {
        self.reduce_range
    }

    /// The quantized weight.
    #[must_use]
    pub fn quantized_weight(&self) -> &QuantizedTensor<i8> {
        &self.weight
    }

    /// The weight scale of each output channel.
    #[must_use]
    pub fn weight_scales(&self) -> &[f32] {
        &self.w_scales
    }

    /// Quantizes an input as [`Module::forward`] does.
    ///
    /// # Errors
    /// [`QuantError::NanInput`] / [`QuantError::NonFinite`] for NaN or infinite inputs;
    /// [`QuantError::ShapeMismatch`] when the last axis is not `in`.
    pub fn quantize_input(&self, x: &Activation) -> Result<QuantizedTensor<u8>> {
        const OP: &str = "DynamicQuantizedLinear::forward";
        let x = x.need_float(OP)?;
        linear_rows(OP, x.shape(), self.w_int.k)?;
        let xs = x.as_standard_layout();
        let qp = self.input_qparams(OP, xs.as_slice().expect("standard layout"))?;
        QuantizedTensor::quantize(x, qp)
    }

    /// The input's quantization parameters (from its minimum and maximum, with zero).
    fn input_qparams(&self, op: &'static str, values: &[f32]) -> Result<QParams> {
        let (lo, hi, nan) = range_with_zero(values);
        if nan {
            let index = values.iter().position(|v| v.is_nan()).unwrap_or(0);
            return Err(QuantError::NanInput { op, index });
        }
        choose_dynamic_qparams(lo, hi, self.reduce_range)
    }

    /// The reference path: the same quantized input, dequantized, through an f32 linear layer
    /// with the dequantized weight.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        let q = self.quantize_input(x)?;
        let core = WeightedCore::new(self.weight.to_float(), self.bias.clone())?;
        linear_float(
            "DynamicQuantizedLinear::forward_reference",
            &q.to_float(),
            &core,
        )
        .map(Activation::Float)
    }
}

crate::simd::dispatched512!(
    /// [`range_with_zero_body`] compiled for the CPU's vector width.
    fn range_with_zero[](x: &[f32]) -> (f32, f32, bool) = range_with_zero_body
);

/// `(min(0, x), max(0, x), any NaN)` in one pass: 16 independent lanes of compare-selects
/// (which skip NaN, found by its own flag), so the loop vectorises.
#[inline(always)]
fn range_with_zero_body(x: &[f32]) -> (f32, f32, bool) {
    const L: usize = 16;
    let (mut lo, mut hi, mut nan) = ([0.0f32; L], [0.0f32; L], [false; L]);
    let chunks = x.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            let v = c[i];
            lo[i] = if v < lo[i] { v } else { lo[i] };
            hi[i] = if v > hi[i] { v } else { hi[i] };
            nan[i] |= v.is_nan();
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        lo[i] = if v < lo[i] { v } else { lo[i] };
        hi[i] = if v > hi[i] { v } else { hi[i] };
        nan[i] |= v.is_nan();
    }
    (
        lo.iter().fold(0.0f32, |a, &b| a.min(b)),
        hi.iter().fold(0.0f32, |a, &b| a.max(b)),
        nan.iter().any(|&b| b),
    )
}

impl Module for DynamicQuantizedLinear {
    fn kind(&self) -> &'static str {
        "DynamicQuantizedLinear"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "DynamicQuantizedLinear::forward";
        let x = x.need_float(OP)?;
        let n = linear_rows(OP, x.shape(), self.w_int.k)?;
        let o = self.w_int.out;
        crate::nn::shape::checked_elements(OP, "output", &[n, o])?;
        let xs = x.as_standard_layout();
        let values = xs.as_slice().expect("standard layout");
        // The parameters from the whole input, then each block of rows quantized by the
        // thread that sums it (the bytes `quantize_input` gives).
        let qp = self.input_qparams(OP, values)?;
        let k = self.w_int.k;
        let act_w: Vec<f32> = self.w_scales.iter().map(|&s| qp.scale() * s).collect();
        let bias: Option<Vec<f32>> = self.bias.as_ref().map(|b| b.iter().copied().collect());
        // Blocks of rows: the `i32` sums of a block (in L2) become `scale·acc (+ bias)` per
        // channel, the same operations in the same order, straight into the output (no
        // `n·o` buffer of sums). Large layers run their blocks on the rayon pool.
        let work = n.saturating_mul(k).saturating_mul(o);
        // One thread: blocks of 48 rows (their `i32` sums in L2); threads: a block each.
        let block = if crate::parallel::threads_for(work) > 1 {
            super::accumulate::rows_per_block(n, work)
        } else {
            48
        };
        let data = self.w_int.sum_row_blocks_new(
            ActRows::Float(values, &qp),
            Int8Accumulation::Exact,
            (n, block, work),
            |acc, out_b| {
                for arow in acc.chunks_exact(o.max(1)) {
                    match &bias {
                        Some(b) => out_b.extend(
                            arow.iter()
                                .zip(&act_w)
                                .zip(b)
                                .map(|((&a, &s), &bj)| s * a as f32 + bj),
                        ),
                        None => out_b.extend(arow.iter().zip(&act_w).map(|(&a, &s)| s * a as f32)),
                    }
                }
            },
        )?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked") = o;
        Ok(Activation::Float(
            ArrayD::from_shape_vec(IxDyn(&shape), data).expect("n·o values"),
        ))
    }

    fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
        Some(one_input("Module::reference", inputs).and_then(|x| self.forward_reference(x)))
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Quantized(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}
