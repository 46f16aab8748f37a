//! Quantized layers: the integer path of an int8 backend, and next to each its reference path
//! `dequantize → f32 op → quantize` (PyTorch's "reference quantized model").
//!
//! | layer | input → output | integer path |
//! |---|---|---|
//! | [`Quantize`] | float → quint8 | [`quantize`](crate::quantize) with the observed parameters |
//! | [`DeQuantize`] | quint8 → float | [`dequantize`](crate::dequantize) |
//! | [`QuantizedLinear`] | quint8 → quint8 | i32 accumulation of `(x − zx)·(w − zw)`, fbgemm requantization, optional fused ReLU |
//! | [`QuantizedConv2d`] | quint8 → quint8 | same, direct convolution (stride, padding, dilation, groups) |
//! | [`DynamicQuantizedLinear`] | float → float | input quantized per call (fbgemm's parameter choice), i32 accumulation, float output |
//! | [`QuantizedAdd`] | quint8 + quint8 → quint8 | integer offsets, one rescale per input, one rounding |
//!
//! **Bias and requantization** (as fbgemm, PyTorch's x86 backend, does with a float bias):
//! with `sx` the input scale, `sw[o]` the weight scale of output channel `o`, `so`/`zo` the
//! output parameters, all in `f32`:
//!
//! ```text
//! acc   = Σ (x − zx)·(w − zw[o])                     (exact, i32)
//! raw   = f32(acc) + bias[o] / (sx·sw[o])            (bias folded in, in f32)
//! q     = clamp(rne(raw · ((sx·sw[o]) / so)) + zo, relu ? zo : 0, 255)
//! ```
//!
//! The bias is not quantized to i32; it is added in the accumulator's units during
//! requantization. See `docs/models.md` for the measured agreement with the reference path.

use ndarray::{ArrayD, IxDyn};

use super::conv::{conv2d_core, linear_core, ConvGeometry, ConvShape};
use super::layers::{
    check_bias, contiguous, conv_float, need_float, need_rank, per_tensor, shape_array, Conv2d,
    Linear,
};
use super::{Activation, Module, WeightRef};
use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::qparams::AnyQParams;
use crate::qparams::{choose_dynamic_qparams, QParams, ZeroPoints};
use crate::tensor::QuantizedTensor;

fn need_quint8(op: &'static str, qp: &QParams) -> Result<()> {
    if qp.dtype() == QDType::QUInt8 {
        Ok(())
    } else {
        Err(QuantError::UnsupportedConfig {
            op,
            reason: "quantized activations must be quint8",
        })
    }
}

fn need_quantized<'a>(op: &'static str, x: &'a Activation) -> Result<&'a QuantizedTensor<u8>> {
    match x {
        Activation::Quantized(q) => Ok(q),
        Activation::Float(_) => Err(QuantError::UnsupportedConfig {
            op,
            reason: "this quantized layer got a float activation (quantize first)",
        }),
    }
}

/// Per-output-channel scales and zero points of a weight quantized per tensor or along axis 0.
fn weight_channels(
    op: &'static str,
    w: &QuantizedTensor<i8>,
    out: usize,
) -> Result<(Vec<f32>, Vec<i32>)> {
    match w.params() {
        AnyQParams::PerTensor(p) => Ok((vec![p.scale(); out], vec![p.zero_point(); out])),
        AnyQParams::PerChannel(p) => {
            let axis = crate::qparams::resolve_axis(op, p.axis(), w.shape().len())?;
            if axis != 0 {
                return Err(QuantError::UnsupportedConfig {
                    op,
                    reason: "per-channel weights must be quantized along axis 0 (output channels)",
                });
            }
            match p.zero_points() {
                ZeroPoints::Int(z) => Ok((p.scales().to_vec(), z.clone())),
                ZeroPoints::Float(_) => Err(QuantError::UnsupportedConfig {
                    op,
                    reason: "weights with float zero points are not supported",
                }),
            }
        }
    }
}

/// The fbgemm requantization of one accumulator (see the module docs).
#[derive(Debug, Clone, PartialEq)]
struct Requant {
    act_w: Vec<f32>,
    mult: Vec<f32>,
    bias_acc: Vec<f32>,
    zo: i32,
    lo: i32,
}

impl Requant {
    fn new(
        sx: f32,
        w_scales: &[f32],
        bias: Option<&ArrayD<f32>>,
        out: &QParams,
        relu: bool,
    ) -> Self {
        let so = out.scale();
        let act_w: Vec<f32> = w_scales.iter().map(|&sw| sx * sw).collect();
        let mult = act_w.iter().map(|&a| a / so).collect();
        let bias_acc = match bias {
            Some(b) => contiguous(b)
                .iter()
                .zip(&act_w)
                .map(|(&b, &a)| b / a)
                .collect(),
            None => vec![0.0; act_w.len()],
        };
        Requant {
            act_w,
            mult,
            bias_acc,
            zo: out.zero_point(),
            lo: if relu { out.zero_point() } else { 0 },
        }
    }

    #[inline]
    fn apply(&self, acc: i32, o: usize) -> u8 {
        let raw = acc as f32 + self.bias_acc[o];
        let r = (raw * self.mult[o]).round_ties_even() as i64 + self.zo as i64;
        r.clamp(self.lo as i64, 255) as u8
    }
}

fn quantized_activation(shape: &[usize], data: Vec<u8>, qp: QParams) -> Result<Activation> {
    let arr =
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("data length computed from the shape");
    Ok(Activation::Quantized(QuantizedTensor::from_parts(arr, qp)?))
}

fn quantize_output(y: &ArrayD<f32>, out: QParams) -> Result<Activation> {
    Ok(Activation::Quantized(QuantizedTensor::quantize(y, out)?))
}

/// Quantizes a float activation to quint8 with fixed parameters (PyTorch's `Quantize`, what
/// a `QuantStub` becomes).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantize {
    qparams: QParams,
}

impl Quantize {
    /// A quantize layer.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] unless the parameters are quint8.
    pub fn new(qparams: QParams) -> Result<Self> {
        need_quint8("Quantize::new", &qparams)?;
        Ok(Quantize { qparams })
    }

    /// The parameters.
    #[must_use]
    pub fn qparams(&self) -> &QParams {
        &self.qparams
    }
}

impl Module for Quantize {
    fn kind(&self) -> &'static str {
        "Quantize"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        let x = need_float("Quantize::forward", x)?;
        quantize_output(x, self.qparams)
    }
}

/// Dequantizes a quantized activation (a float one passes through, as `Tensor.dequantize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeQuantize;

impl Module for DeQuantize {
    fn kind(&self) -> &'static str {
        "DeQuantize"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        Ok(Activation::Float(x.to_float()?))
    }
}

/// Quantized fully connected layer: quint8 `[*, in]` → quint8 `[*, out]`, qint8 weight per
/// tensor or per output channel, float bias, optional fused ReLU (`LinearReLU`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLinear {
    weight: QuantizedTensor<i8>,
    bias: Option<ArrayD<f32>>,
    out: QParams,
    relu: bool,
    w_int: Vec<i32>,
    w_scales: Vec<f32>,
}

impl QuantizedLinear {
    /// A quantized linear layer from a quantized weight `[out, in]`, an optional float bias
    /// `[out]` and the output parameters (quint8).
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 2-D or a bias of the wrong shape;
    /// [`QuantError::UnsupportedConfig`] for non-quint8 output parameters, or a weight
    /// quantized per channel along another axis than 0 or with float zero points.
    pub fn new(
        weight: QuantizedTensor<i8>,
        bias: Option<ArrayD<f32>>,
        output: QParams,
    ) -> Result<Self> {
        const OP: &str = "QuantizedLinear::new";
        need_rank(OP, weight.shape(), &[2])?;
        let o = weight.shape()[0];
        check_bias(OP, bias.as_ref(), o)?;
        need_quint8(OP, &output)?;
        let (w_scales, zps) = weight_channels(OP, &weight, o)?;
        let k = weight.shape()[1];
        let w_int = contiguous(weight.int_repr())
            .iter()
            .enumerate()
            .map(|(i, &v)| v as i32 - zps[i / k.max(1)])
            .collect();
        Ok(QuantizedLinear {
            weight,
            bias,
            out: output,
            relu: false,
            w_int,
            w_scales,
        })
    }

    /// Quantizes a float [`Linear`]'s weight with `weight_params` (its fused ReLU is kept).
    ///
    /// # Errors
    /// As [`QuantizedTensor::quantize`] and [`QuantizedLinear::new`].
    pub fn from_float(
        linear: &Linear,
        weight_params: impl Into<AnyQParams>,
        output: QParams,
    ) -> Result<Self> {
        let w = QuantizedTensor::<i8>::quantize(linear.weight_array(), weight_params)?;
        let q = QuantizedLinear::new(w, linear.bias_array().cloned(), output)?;
        Ok(if linear.has_relu() { q.with_relu() } else { q })
    }

    /// The same layer with a fused ReLU.
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        &self.out
    }

    /// The quantized weight.
    #[must_use]
    pub fn quantized_weight(&self) -> &QuantizedTensor<i8> {
        &self.weight
    }

    fn check_input<'a>(
        &self,
        op: &'static str,
        x: &'a Activation,
    ) -> Result<(&'a QuantizedTensor<u8>, QParams)> {
        let q = need_quantized(op, x)?;
        let qp = *per_tensor(q, op)?;
        let k = self.weight.shape()[1];
        if q.shape().is_empty() || q.shape()[q.shape().len() - 1] != k {
            let mut expected = q.shape().to_vec();
            match expected.last_mut() {
                Some(last) => *last = k,
                None => expected.push(k),
            }
            return Err(QuantError::ShapeMismatch {
                op,
                expected,
                got: q.shape().to_vec(),
            });
        }
        Ok((q, qp))
    }

    /// The reference path: `dequantize → f32 linear (+ ReLU) → quantize` with the same
    /// parameters.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "QuantizedLinear::forward_reference";
        let (q, _) = self.check_input(OP, x)?;
        let xf = q.dequantize::<f32>()?;
        let wf = self.weight.dequantize::<f32>()?;
        let mut lin = Linear::new(wf, self.bias.clone())?;
        lin.relu = self.relu;
        let y = lin.forward(&Activation::Float(xf))?.into_float()?;
        quantize_output(&y, self.out)
    }
}

impl Module for QuantizedLinear {
    fn kind(&self) -> &'static str {
        if self.relu {
            "QuantizedLinearReLU"
        } else {
            "QuantizedLinear"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "QuantizedLinear::forward";
        let (q, qp) = self.check_input(OP, x)?;
        let (o, k) = (self.weight.shape()[0], self.weight.shape()[1]);
        let zx = qp.zero_point();
        let xi: Vec<i32> = q.int_repr().iter().map(|&v| v as i32 - zx).collect();
        let n = xi.len() / k.max(1);
        let acc = linear_core(&xi, &self.w_int, n, k, o, 0i32);
        let rq = Requant::new(
            qp.scale(),
            &self.w_scales,
            self.bias.as_ref(),
            &self.out,
            self.relu,
        );
        let data = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| rq.apply(a, i % o))
            .collect();
        let mut shape = q.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked") = o;
        quantized_activation(&shape, data, self.out)
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Quantized(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

/// Quantized 2-D convolution: quint8 `[N, C, H, W]` → quint8, qint8 weight
/// `[out, in/groups, kh, kw]` per tensor or per output channel, float bias, optional fused ReLU.
/// Padding contributes the input zero point (the value 0).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedConv2d {
    weight: QuantizedTensor<i8>,
    bias: Option<ArrayD<f32>>,
    geo: ConvGeometry,
    out: QParams,
    relu: bool,
    w_int: Vec<i32>,
    w_scales: Vec<f32>,
}

impl QuantizedConv2d {
    /// A quantized convolution.
    ///
    /// # Errors
    /// As [`QuantizedLinear::new`] for a 4-D weight; [`QuantError::InvalidParameter`] for a
    /// bad geometry.
    pub fn new(
        weight: QuantizedTensor<i8>,
        bias: Option<ArrayD<f32>>,
        geo: ConvGeometry,
        output: QParams,
    ) -> Result<Self> {
        const OP: &str = "QuantizedConv2d::new";
        need_rank(OP, weight.shape(), &[4])?;
        let o = weight.shape()[0];
        check_bias(OP, bias.as_ref(), o)?;
        geo.check(OP, o)?;
        need_quint8(OP, &output)?;
        let (w_scales, zps) = weight_channels(OP, &weight, o)?;
        let per_out: usize = weight.shape()[1..].iter().product();
        let w_int = contiguous(weight.int_repr())
            .iter()
            .enumerate()
            .map(|(i, &v)| v as i32 - zps[i / per_out.max(1)])
            .collect();
        Ok(QuantizedConv2d {
            weight,
            bias,
            geo,
            out: output,
            relu: false,
            w_int,
            w_scales,
        })
    }

    /// Quantizes a float [`Conv2d`]'s weight with `weight_params` (its fused ReLU is kept).
    ///
    /// # Errors
    /// As [`QuantizedTensor::quantize`] and [`QuantizedConv2d::new`].
    pub fn from_float(
        conv: &Conv2d,
        weight_params: impl Into<AnyQParams>,
        output: QParams,
    ) -> Result<Self> {
        let w = QuantizedTensor::<i8>::quantize(conv.weight_array(), weight_params)?;
        let q = QuantizedConv2d::new(w, conv.bias_array().cloned(), conv.geometry(), output)?;
        Ok(if conv.has_relu() { q.with_relu() } else { q })
    }

    /// The same layer with a fused ReLU.
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        &self.out
    }

    /// The quantized weight.
    #[must_use]
    pub fn quantized_weight(&self) -> &QuantizedTensor<i8> {
        &self.weight
    }

    fn shape_for(&self, op: &'static str, q: &QuantizedTensor<u8>) -> Result<ConvShape> {
        need_rank(op, q.shape(), &[4])?;
        let xs = q.shape();
        let ws = self.weight.shape();
        ConvShape::new(
            op,
            [xs[0], xs[1], xs[2], xs[3]],
            [ws[0], ws[1], ws[2], ws[3]],
            self.geo,
        )
    }

    /// The reference path: `dequantize → f32 convolution (+ ReLU) → quantize`.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "QuantizedConv2d::forward_reference";
        let q = need_quantized(OP, x)?;
        per_tensor(q, OP)?;
        self.shape_for(OP, q)?;
        let xf = q.dequantize::<f32>()?;
        let wf = self.weight.dequantize::<f32>()?;
        let y = conv_float(OP, &xf, &wf, self.bias.as_ref(), self.geo, self.relu)?;
        quantize_output(&y, self.out)
    }
}

impl Module for QuantizedConv2d {
    fn kind(&self) -> &'static str {
        if self.relu {
            "QuantizedConvReLU2d"
        } else {
            "QuantizedConv2d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "QuantizedConv2d::forward";
        let q = need_quantized(OP, x)?;
        let qp = *per_tensor(q, OP)?;
        let s = self.shape_for(OP, q)?;
        let zx = qp.zero_point();
        let xi: Vec<i32> = contiguous(q.int_repr())
            .iter()
            .map(|&v| v as i32 - zx)
            .collect();
        let acc = conv2d_core(&xi, &self.w_int, &s, 0i32);
        let rq = Requant::new(
            qp.scale(),
            &self.w_scales,
            self.bias.as_ref(),
            &self.out,
            self.relu,
        );
        let inner = s.oh * s.ow;
        let data = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| rq.apply(a, (i / inner.max(1)) % s.c_out))
            .collect();
        quantized_activation(&[s.n, s.c_out, s.oh, s.ow], data, self.out)
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Quantized(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

/// Dynamically quantized linear layer: float `[*, in]` → float `[*, out]`. Each call
/// quantizes its input to quint8 with parameters chosen from that input's min and max
/// ([`choose_dynamic_qparams`]), accumulates in i32 against the qint8 weight and returns
/// `f32(sx·sw[o])·acc + bias[o]` (fbgemm's float output).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicQuantizedLinear {
    weight: QuantizedTensor<i8>,
    bias: Option<ArrayD<f32>>,
    reduce_range: bool,
    w_int: Vec<i32>,
    w_scales: Vec<f32>,
}

impl DynamicQuantizedLinear {
    /// A dynamic linear layer (`reduce_range = true`, PyTorch's x86 default).
    ///
    /// # Errors
    /// As [`QuantizedLinear::new`].
    pub fn new(weight: QuantizedTensor<i8>, bias: Option<ArrayD<f32>>) -> Result<Self> {
        const OP: &str = "DynamicQuantizedLinear::new";
        need_rank(OP, weight.shape(), &[2])?;
        let o = weight.shape()[0];
        check_bias(OP, bias.as_ref(), o)?;
        let (w_scales, zps) = weight_channels(OP, &weight, o)?;
        let k = weight.shape()[1];
        let w_int = contiguous(weight.int_repr())
            .iter()
            .enumerate()
            .map(|(i, &v)| v as i32 - zps[i / k.max(1)])
            .collect();
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
    /// [`QuantError::UnsupportedConfig`] for a linear layer with a fused ReLU; as
    /// [`DynamicQuantizedLinear::new`].
    pub fn from_float(linear: &Linear, weight_params: impl Into<AnyQParams>) -> Result<Self> {
        if linear.has_relu() {
            return Err(QuantError::UnsupportedConfig {
                op: "DynamicQuantizedLinear::from_float",
                reason: "dynamic quantization of a LinearReLU is not supported",
            });
        }
        let w = QuantizedTensor::<i8>::quantize(linear.weight_array(), weight_params)?;
        DynamicQuantizedLinear::new(w, linear.bias_array().cloned())
    }

    /// Sets `reduce_range` (`0..=127` instead of `0..=255` for the input).
    #[must_use]
    pub fn with_reduce_range(mut self, reduce_range: bool) -> Self {
        self.reduce_range = reduce_range;
        self
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
        let x = need_float(OP, x)?;
        let k = self.weight.shape()[1];
        if x.ndim() == 0 || x.shape()[x.ndim() - 1] != k {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![k],
                got: x.shape().to_vec(),
            });
        }
        if let Some(i) = x.iter().position(|v| v.is_nan()) {
            return Err(QuantError::NanInput { op: OP, index: i });
        }
        let (mut lo, mut hi) = (0.0f32, 0.0f32);
        for &v in x {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let qp = choose_dynamic_qparams(lo, hi, self.reduce_range)?;
        QuantizedTensor::quantize(x, qp)
    }

    /// The reference path: the same quantized input, dequantized, through an f32 linear layer
    /// with the dequantized weight.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        let q = self.quantize_input(x)?;
        let wf = self.weight.dequantize::<f32>()?;
        Linear::new(wf, self.bias.clone())?.forward(&Activation::Float(q.dequantize()?))
    }
}

impl Module for DynamicQuantizedLinear {
    fn kind(&self) -> &'static str {
        "DynamicQuantizedLinear"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        let q = self.quantize_input(x)?;
        let qp = *q.per_tensor().expect("quantized per tensor above");
        let (o, k) = (self.weight.shape()[0], self.weight.shape()[1]);
        let xi: Vec<i32> = q
            .int_repr()
            .iter()
            .map(|&v| v as i32 - qp.zero_point())
            .collect();
        let n = xi.len() / k.max(1);
        let acc = linear_core(&xi, &self.w_int, n, k, o, 0i32);
        let act_w: Vec<f32> = self.w_scales.iter().map(|&s| qp.scale() * s).collect();
        let bias = self.bias.as_ref().map(contiguous);
        let data = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let j = i % o;
                let v = act_w[j] * a as f32;
                match &bias {
                    Some(b) => v + b[j],
                    None => v,
                }
            })
            .collect();
        let mut shape = q.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked") = o;
        Ok(Activation::Float(shape_array(&shape, data)))
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Quantized(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

/// Quantized element-wise addition of two quint8 activations of the same shape, with its own
/// output parameters and an optional fused ReLU (PyTorch's `QFunctional.add` / `add_relu`).
///
/// Integer path: `q = clamp(rne((a − za)·f32(sa/so) + (b − zb)·f32(sb/so)) + zo)` — integer
/// offsets, one multiplier per input, one rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedAdd {
    out: QParams,
    relu: bool,
}

impl QuantizedAdd {
    /// A quantized add with output parameters (quint8).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] unless the parameters are quint8.
    pub fn new(output: QParams) -> Result<Self> {
        need_quint8("QuantizedAdd::new", &output)?;
        Ok(QuantizedAdd {
            out: output,
            relu: false,
        })
    }

    /// The same layer with a fused ReLU (`add_relu`).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        &self.out
    }

    fn inputs<'a>(
        op: &'static str,
        inputs: &[&'a Activation],
    ) -> Result<[(&'a QuantizedTensor<u8>, QParams); 2]> {
        let [a, b] = inputs else {
            return Err(QuantError::LengthMismatch {
                op,
                what: "inputs",
                expected: 2,
                got: inputs.len(),
            });
        };
        let a = need_quantized(op, a)?;
        let b = need_quantized(op, b)?;
        if a.shape() != b.shape() {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: a.shape().to_vec(),
                got: b.shape().to_vec(),
            });
        }
        Ok([(a, *per_tensor(a, op)?), (b, *per_tensor(b, op)?)])
    }

    /// The reference path: dequantize both, add in f32 (+ ReLU), quantize.
    ///
    /// # Errors
    /// As [`Module::forward_many`].
    pub fn forward_reference(&self, a: &Activation, b: &Activation) -> Result<Activation> {
        let [(a, _), (b, _)] = Self::inputs("QuantizedAdd::forward_reference", &[a, b])?;
        let mut y = a.dequantize::<f32>()? + b.dequantize::<f32>()?;
        if self.relu {
            y.mapv_inplace(|v| if v < 0.0 { 0.0 } else { v });
        }
        quantize_output(&y, self.out)
    }
}

impl Module for QuantizedAdd {
    fn kind(&self) -> &'static str {
        if self.relu {
            "QuantizedAddReLU"
        } else {
            "QuantizedAdd"
        }
    }

    fn forward(&self, _x: &Activation) -> Result<Activation> {
        Err(QuantError::LengthMismatch {
            op: "QuantizedAdd::forward",
            what: "inputs",
            expected: 2,
            got: 1,
        })
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        let [(a, pa), (b, pb)] = Self::inputs("QuantizedAdd::forward_many", inputs)?;
        let so = self.out.scale();
        let (ma, mb) = (pa.scale() / so, pb.scale() / so);
        let (za, zb, zo) = (pa.zero_point(), pb.zero_point(), self.out.zero_point());
        let lo = if self.relu { zo } else { 0 };
        let data = a
            .int_repr()
            .iter()
            .zip(b.int_repr().iter())
            .map(|(&x, &y)| {
                let v = (x as i32 - za) as f32 * ma + (y as i32 - zb) as f32 * mb;
                (v.round_ties_even() as i64 + zo as i64).clamp(lo as i64, 255) as u8
            })
            .collect();
        quantized_activation(a.shape(), data, self.out)
    }

    fn num_inputs(&self) -> usize {
        2
    }
}

/// How two quantized tensors differ: the number of differing integers and the largest
/// difference, in quanta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mismatch {
    /// Values compared.
    pub total: usize,
    /// Values that differ.
    pub differing: usize,
    /// Largest `|a − b|` in integer steps.
    pub max_diff: u32,
}

impl Mismatch {
    /// `differing / total` (0 for empty tensors).
    #[must_use]
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.differing as f64 / self.total as f64
        }
    }

    /// Compares two quantized activations of the same shape and parameters (e.g. a layer's
    /// integer path and its reference path).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] unless both are quantized with the same parameters;
    /// [`QuantError::ShapeMismatch`] for different shapes.
    pub fn between(a: &Activation, b: &Activation) -> Result<Mismatch> {
        const OP: &str = "Mismatch::between";
        let a = need_quantized(OP, a)?;
        let b = need_quantized(OP, b)?;
        if a.shape() != b.shape() {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: a.shape().to_vec(),
                got: b.shape().to_vec(),
            });
        }
        if a.params() != b.params() {
            return Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "the two tensors have different quantization parameters",
            });
        }
        let mut m = Mismatch {
            total: a.int_repr().len(),
            ..Mismatch::default()
        };
        for (&x, &y) in a.int_repr().iter().zip(b.int_repr().iter()) {
            let d = (x as i32 - y as i32).unsigned_abs();
            if d > 0 {
                m.differing += 1;
                m.max_diff = m.max_diff.max(d);
            }
        }
        Ok(m)
    }
}
