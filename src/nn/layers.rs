//! Float reference layers.

use ndarray::{ArrayD, IxDyn};

use super::conv::{conv2d_core, linear_core, ConvGeometry, ConvShape};
use super::{Activation, Module, WeightRef};
use crate::error::{QuantError, Result};
use crate::kernels;
use crate::tensor::QuantizedTensor;

pub(crate) fn need_float<'a>(op: &'static str, x: &'a Activation) -> Result<&'a ArrayD<f32>> {
    match x {
        Activation::Float(a) => Ok(a),
        Activation::Quantized(_) => Err(QuantError::UnsupportedConfig {
            op,
            reason: "this float layer got a quantized activation (dequantize first)",
        }),
    }
}

pub(crate) fn need_rank(op: &'static str, shape: &[usize], ranks: &[usize]) -> Result<()> {
    if ranks.contains(&shape.len()) {
        Ok(())
    } else {
        Err(QuantError::ShapeMismatch {
            op,
            expected: vec![0; ranks[0]],
            got: shape.to_vec(),
        })
    }
}

/// Contiguous row-major copy (or view) of an array's data.
pub(crate) fn contiguous<T: Clone>(a: &ArrayD<T>) -> Vec<T> {
    match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().cloned().collect(),
    }
}

pub(crate) fn check_bias(
    op: &'static str,
    bias: Option<&ArrayD<f32>>,
    out_channels: usize,
) -> Result<()> {
    if let Some(b) = bias {
        if b.ndim() != 1 || b.len() != out_channels {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: vec![out_channels],
                got: b.shape().to_vec(),
            });
        }
    }
    Ok(())
}

pub(crate) fn shape_array(shape: &[usize], data: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("data length computed from the shape")
}

/// Fully connected layer `y = x·Wᵀ + b` on the last axis, optionally followed by a fused ReLU
/// (PyTorch's `Linear` / `LinearReLU`). Weight `[out, in]`, bias `[out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub(crate) weight: ArrayD<f32>,
    pub(crate) bias: Option<ArrayD<f32>>,
    pub(crate) relu: bool,
}

impl Linear {
    /// A linear layer from a weight `[out, in]` and an optional bias `[out]`.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 2-D or a bias of the wrong shape.
    pub fn new(weight: ArrayD<f32>, bias: Option<ArrayD<f32>>) -> Result<Self> {
        const OP: &str = "Linear::new";
        need_rank(OP, weight.shape(), &[2])?;
        check_bias(OP, bias.as_ref(), weight.shape()[0])?;
        Ok(Linear {
            weight,
            bias,
            relu: false,
        })
    }

    /// The same layer with a fused ReLU (`LinearReLU`).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Whether a ReLU is fused.
    #[must_use]
    pub fn has_relu(&self) -> bool {
        self.relu
    }

    /// Input features.
    #[must_use]
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output features.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The weight `[out, in]`.
    #[must_use]
    pub fn weight_array(&self) -> &ArrayD<f32> {
        &self.weight
    }

    /// The bias `[out]`, if any.
    #[must_use]
    pub fn bias_array(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn kind(&self) -> &'static str {
        if self.relu {
            "LinearReLU"
        } else {
            "Linear"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "Linear::forward";
        let x = need_float(OP, x)?;
        let (k, o) = (self.in_features(), self.out_features());
        if x.ndim() == 0 || x.shape()[x.ndim() - 1] != k {
            let mut expected = x.shape().to_vec();
            if let Some(last) = expected.last_mut() {
                *last = k;
            }
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected,
                got: x.shape().to_vec(),
            });
        }
        let n = x.len() / k.max(1);
        let xs = contiguous(x);
        let ws = contiguous(&self.weight);
        let mut out = linear_core(&xs, &ws, n, k, o, 0.0f32);
        finish_channels_last(&mut out, o, self.bias.as_ref(), self.relu);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked") = o;
        Ok(Activation::Float(shape_array(&shape, out)))
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Float(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

/// Adds a bias (last axis is the channel) and applies ReLU.
fn finish_channels_last(out: &mut [f32], o: usize, bias: Option<&ArrayD<f32>>, relu: bool) {
    if let Some(b) = bias {
        let b = contiguous(b);
        for row in out.chunks_mut(o) {
            for (v, &bv) in row.iter_mut().zip(&b) {
                *v += bv;
            }
        }
    }
    if relu {
        for v in out.iter_mut() {
            *v = relu_f32(*v);
        }
    }
}

/// Adds a bias (axis 1 is the channel, `inner` values per channel) and applies ReLU.
pub(crate) fn finish_channels_first(
    out: &mut [f32],
    channels: usize,
    inner: usize,
    bias: Option<&ArrayD<f32>>,
    relu: bool,
) {
    if let Some(b) = bias {
        let b = contiguous(b);
        for (i, chunk) in out.chunks_mut(inner.max(1)).enumerate() {
            let bv = b[i % channels];
            for v in chunk {
                *v += bv;
            }
        }
    }
    if relu {
        for v in out.iter_mut() {
            *v = relu_f32(*v);
        }
    }
}

#[inline]
fn relu_f32(v: f32) -> f32 {
    // NaN propagates, as torch.relu does.
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// 2-D convolution over `[N, C, H, W]` with weight `[out, in/groups, kh, kw]`, optional bias and
/// fused ReLU (PyTorch's `Conv2d` / `ConvReLU2d`).
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    pub(crate) weight: ArrayD<f32>,
    pub(crate) bias: Option<ArrayD<f32>>,
    pub(crate) geo: ConvGeometry,
    pub(crate) relu: bool,
}

impl Conv2d {
    /// A convolution from its weight `[out, in/groups, kh, kw]`, optional bias `[out]` and
    /// geometry.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 4-D or a bias of the wrong
    /// shape; [`QuantError::InvalidParameter`] for a zero stride, dilation or groups, or groups
    /// that do not divide the output channels.
    pub fn new(weight: ArrayD<f32>, bias: Option<ArrayD<f32>>, geo: ConvGeometry) -> Result<Self> {
        const OP: &str = "Conv2d::new";
        need_rank(OP, weight.shape(), &[4])?;
        check_bias(OP, bias.as_ref(), weight.shape()[0])?;
        geo.check(OP, weight.shape()[0])?;
        Ok(Conv2d {
            weight,
            bias,
            geo,
            relu: false,
        })
    }

    /// The same layer with a fused ReLU (`ConvReLU2d`).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Whether a ReLU is fused.
    #[must_use]
    pub fn has_relu(&self) -> bool {
        self.relu
    }

    /// Output channels.
    #[must_use]
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The geometry.
    #[must_use]
    pub fn geometry(&self) -> ConvGeometry {
        self.geo
    }

    /// The weight `[out, in/groups, kh, kw]`.
    #[must_use]
    pub fn weight_array(&self) -> &ArrayD<f32> {
        &self.weight
    }

    /// The bias `[out]`, if any.
    #[must_use]
    pub fn bias_array(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

pub(crate) fn conv_float(
    op: &'static str,
    x: &ArrayD<f32>,
    weight: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    geo: ConvGeometry,
    relu: bool,
) -> Result<ArrayD<f32>> {
    need_rank(op, x.shape(), &[4])?;
    let xs = x.shape();
    let ws = weight.shape();
    let s = ConvShape::new(
        op,
        [xs[0], xs[1], xs[2], xs[3]],
        [ws[0], ws[1], ws[2], ws[3]],
        geo,
    )?;
    let mut out = conv2d_core(&contiguous(x), &contiguous(weight), &s, 0.0f32);
    finish_channels_first(&mut out, s.c_out, s.oh * s.ow, bias, relu);
    Ok(shape_array(&[s.n, s.c_out, s.oh, s.ow], out))
}

impl Module for Conv2d {
    fn kind(&self) -> &'static str {
        if self.relu {
            "ConvReLU2d"
        } else {
            "Conv2d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "Conv2d::forward";
        let x = need_float(OP, x)?;
        conv_float(OP, x, &self.weight, self.bias.as_ref(), self.geo, self.relu)
            .map(Activation::Float)
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Float(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

/// 1-D convolution over `[N, C, L]` with weight `[out, in/groups, k]` (PyTorch's `Conv1d` /
/// `ConvReLU1d`). Computed as a 2-D convolution of height 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv1d {
    pub(crate) weight: ArrayD<f32>,
    pub(crate) bias: Option<ArrayD<f32>>,
    pub(crate) geo: ConvGeometry,
    pub(crate) relu: bool,
}

impl Conv1d {
    /// A 1-D convolution (`stride`, `padding`, `dilation`, `groups` as in PyTorch).
    ///
    /// # Errors
    /// As [`Conv2d::new`], for a 3-D weight.
    pub fn new(
        weight: ArrayD<f32>,
        bias: Option<ArrayD<f32>>,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Self> {
        const OP: &str = "Conv1d::new";
        need_rank(OP, weight.shape(), &[3])?;
        check_bias(OP, bias.as_ref(), weight.shape()[0])?;
        let geo = ConvGeometry {
            stride: [1, stride],
            padding: [0, padding],
            dilation: [1, dilation],
            groups,
        };
        geo.check(OP, weight.shape()[0])?;
        Ok(Conv1d {
            weight,
            bias,
            geo,
            relu: false,
        })
    }

    /// The same layer with a fused ReLU (`ConvReLU1d`).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Whether a ReLU is fused.
    #[must_use]
    pub fn has_relu(&self) -> bool {
        self.relu
    }

    /// Output channels.
    #[must_use]
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The weight `[out, in/groups, k]`.
    #[must_use]
    pub fn weight_array(&self) -> &ArrayD<f32> {
        &self.weight
    }

    /// The bias `[out]`, if any.
    #[must_use]
    pub fn bias_array(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

impl Module for Conv1d {
    fn kind(&self) -> &'static str {
        if self.relu {
            "ConvReLU1d"
        } else {
            "Conv1d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "Conv1d::forward";
        let x = need_float(OP, x)?;
        need_rank(OP, x.shape(), &[3])?;
        let xs = x.shape();
        let x4 = x
            .view()
            .into_shape_with_order(IxDyn(&[xs[0], xs[1], 1, xs[2]]))
            .map(|v| v.to_owned())
            .unwrap_or_else(|_| {
                shape_array(&[xs[0], xs[1], 1, xs[2]], x.iter().copied().collect())
            });
        let ws = self.weight.shape();
        let w4 = shape_array(&[ws[0], ws[1], 1, ws[2]], contiguous(&self.weight));
        let y = conv_float(OP, &x4, &w4, self.bias.as_ref(), self.geo, self.relu)?;
        let ys = y.shape().to_vec();
        Ok(Activation::Float(shape_array(
            &[ys[0], ys[1], ys[3]],
            contiguous(&y),
        )))
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Float(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

/// Batch-norm statistics and affine parameters (PyTorch names). `weight`/`bias` are `None`
/// for `affine=False` (then 1 and 0).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormParams {
    /// Running mean, one per channel.
    pub running_mean: Vec<f32>,
    /// Running variance, one per channel.
    pub running_var: Vec<f32>,
    /// Scale (`gamma`), one per channel.
    pub weight: Option<Vec<f32>>,
    /// Shift (`beta`), one per channel.
    pub bias: Option<Vec<f32>>,
    /// `eps` as PyTorch received it (a Python float; rounded to f32 where used).
    pub eps: f64,
}

impl BatchNormParams {
    /// Number of channels.
    #[must_use]
    pub fn num_features(&self) -> usize {
        self.running_mean.len()
    }

    /// Checks that every list has the same length and `eps` is finite and `>= 0`.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`]; [`QuantError::InvalidParameter`] for `eps`.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let c = self.running_mean.len();
        let lists: [(&'static str, Option<usize>); 3] = [
            ("running_var", Some(self.running_var.len())),
            ("weight", self.weight.as_ref().map(Vec::len)),
            ("bias", self.bias.as_ref().map(Vec::len)),
        ];
        for (what, len) in lists {
            if let Some(got) = len {
                if got != c {
                    return Err(QuantError::LengthMismatch {
                        op,
                        what,
                        expected: c,
                        got,
                    });
                }
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(QuantError::InvalidParameter {
                op,
                what: "eps",
                value: self.eps,
                reason: "must be finite and >= 0",
            });
        }
        Ok(())
    }
}

/// Inference batch norm (`BatchNorm1d` on `[N, C]` or `[N, C, L]`, `BatchNorm2d` on
/// `[N, C, H, W]`): `y = x·α + β` with `α = γ / sqrt(var + eps)`, `β = beta − mean·α` (f32,
/// PyTorch's CPU order).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub(crate) params: BatchNormParams,
    pub(crate) spatial_dims: usize,
}

impl BatchNorm {
    /// `BatchNorm1d`.
    ///
    /// # Errors
    /// As [`BatchNormParams::validate`].
    pub fn new_1d(params: BatchNormParams) -> Result<Self> {
        params.validate("BatchNorm::new_1d")?;
        Ok(BatchNorm {
            params,
            spatial_dims: 1,
        })
    }

    /// `BatchNorm2d`.
    ///
    /// # Errors
    /// As [`BatchNormParams::validate`].
    pub fn new_2d(params: BatchNormParams) -> Result<Self> {
        params.validate("BatchNorm::new_2d")?;
        Ok(BatchNorm {
            params,
            spatial_dims: 2,
        })
    }

    /// The parameters.
    #[must_use]
    pub fn params(&self) -> &BatchNormParams {
        &self.params
    }

    /// 1 for `BatchNorm1d`, 2 for `BatchNorm2d`.
    #[must_use]
    pub fn spatial_dims(&self) -> usize {
        self.spatial_dims
    }
}

impl Module for BatchNorm {
    fn kind(&self) -> &'static str {
        if self.spatial_dims == 1 {
            "BatchNorm1d"
        } else {
            "BatchNorm2d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "BatchNorm::forward";
        let x = need_float(OP, x)?;
        let ranks: &[usize] = if self.spatial_dims == 1 {
            &[2, 3]
        } else {
            &[4]
        };
        need_rank(OP, x.shape(), ranks)?;
        let c = self.params.num_features();
        if x.shape()[1] != c {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "input channels",
                expected: c,
                got: x.shape()[1],
            });
        }
        let eps = self.params.eps as f32;
        let p = &self.params;
        let (alpha, beta): (Vec<f32>, Vec<f32>) = (0..c)
            .map(|i| {
                let invstd = 1.0 / (p.running_var[i] + eps).sqrt();
                let w = p.weight.as_ref().map_or(1.0, |w| w[i]);
                let b = p.bias.as_ref().map_or(0.0, |b| b[i]);
                let a = invstd * w;
                (a, b - p.running_mean[i] * a)
            })
            .unzip();
        let inner: usize = x.shape()[2..].iter().product();
        let mut out = contiguous(x);
        for (i, chunk) in out.chunks_mut(inner.max(1)).enumerate() {
            let ch = i % c;
            for v in chunk {
                *v = *v * alpha[ch] + beta[ch];
            }
        }
        Ok(Activation::Float(shape_array(x.shape(), out)))
    }
}

macro_rules! simple_module {
    ($t:ty, $kind:literal) => {
        impl Module for $t {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn forward(&self, x: &Activation) -> Result<Activation> {
                self.apply(x)
            }
        }
    };
}

/// `max(x, 0)`. On a quantized activation: `max(q, zero_point)`, parameters kept (exact).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReLU;

impl ReLU {
    fn apply(&self, x: &Activation) -> Result<Activation> {
        match x {
            Activation::Float(a) => Ok(Activation::Float(a.mapv(relu_f32))),
            Activation::Quantized(q) => {
                let zp = per_tensor(q, "ReLU::forward")?.zero_point();
                clamp_quantized(q, zp, 255)
            }
        }
    }
}
simple_module!(ReLU, "ReLU");

/// `min(max(x, 0), 6)`. On a quantized activation: `clamp(q, zero_point, quantize(6.0))`,
/// parameters kept (PyTorch's quantized `relu6`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReLU6;

impl ReLU6 {
    fn apply(&self, x: &Activation) -> Result<Activation> {
        match x {
            Activation::Float(a) => Ok(Activation::Float(a.mapv(|v| {
                if v.is_nan() {
                    v
                } else {
                    v.clamp(0.0, 6.0)
                }
            }))),
            Activation::Quantized(q) => {
                let qp = per_tensor(q, "ReLU6::forward")?;
                let six: ndarray::Array1<u8> = kernels::quantize(&ndarray::arr1(&[6.0f32]), qp)?;
                clamp_quantized(q, qp.zero_point(), six[0] as i32)
            }
        }
    }
}
simple_module!(ReLU6, "ReLU6");

pub(crate) fn per_tensor<'a>(
    q: &'a QuantizedTensor<u8>,
    op: &'static str,
) -> Result<&'a crate::qparams::QParams> {
    q.per_tensor().ok_or(QuantError::UnsupportedConfig {
        op,
        reason: "activations must be quantized per tensor",
    })
}

fn clamp_quantized(q: &QuantizedTensor<u8>, lo: i32, hi: i32) -> Result<Activation> {
    let lo = lo.clamp(0, 255) as u8;
    let hi = hi.clamp(0, 255) as u8;
    let data = q.int_repr().mapv(|v| v.max(lo).min(hi.max(lo)));
    Ok(Activation::Quantized(QuantizedTensor::from_parts(
        data,
        q.params().clone(),
    )?))
}

/// Pooling window: kernel, stride and padding (height, width).
fn pool_shape(
    op: &'static str,
    shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<[usize; 6]> {
    need_rank(op, shape, &[4])?;
    for (what, v) in [
        ("kernel_size", kernel[0].min(kernel[1])),
        ("stride", stride[0].min(stride[1])),
    ] {
        if v == 0 {
            return Err(QuantError::InvalidParameter {
                op,
                what,
                value: 0.0,
                reason: "must be >= 1",
            });
        }
    }
    if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
        return Err(QuantError::InvalidParameter {
            op,
            what: "padding",
            value: padding[0].max(padding[1]) as f64,
            reason: "must be at most half the kernel size",
        });
    }
    let (h, w) = (shape[2], shape[3]);
    if h + 2 * padding[0] < kernel[0] || w + 2 * padding[1] < kernel[1] {
        return Err(QuantError::ShapeMismatch {
            op,
            expected: kernel.to_vec(),
            got: vec![h + 2 * padding[0], w + 2 * padding[1]],
        });
    }
    let oh = (h + 2 * padding[0] - kernel[0]) / stride[0] + 1;
    let ow = (w + 2 * padding[1] - kernel[1]) / stride[1] + 1;
    Ok([shape[0] * shape[1], h, w, oh, ow, 0])
}

/// Runs `f(window values)` over every pooling window of a `[N, C, H, W]` array.
fn pool<T: Copy, U>(
    data: &[T],
    dims: [usize; 6],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    mut f: impl FnMut(&[T], usize) -> U,
) -> Vec<U> {
    let [planes, h, w, oh, ow, _] = dims;
    let mut out = Vec::with_capacity(planes * oh * ow);
    let mut win = Vec::with_capacity(kernel[0] * kernel[1]);
    for p in 0..planes {
        let plane = &data[p * h * w..][..h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                win.clear();
                let mut padded = 0;
                for ky in 0..kernel[0] {
                    for kx in 0..kernel[1] {
                        let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                        let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            padded += 1;
                        } else {
                            win.push(plane[iy as usize * w + ix as usize]);
                        }
                    }
                }
                out.push(f(&win, padded));
            }
        }
    }
    out
}

/// Max pooling over `[N, C, H, W]` (padding never wins, `ceil_mode = false`, dilation 1).
/// Works on quantized activations too (the maximum of the integers, parameters kept, exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Window (height, width).
    pub kernel: [usize; 2],
    /// Stride (height, width); PyTorch's default is the kernel size.
    pub stride: [usize; 2],
    /// Padding (height, width).
    pub padding: [usize; 2],
}

impl MaxPool2d {
    /// A square window `k`, stride `k`, no padding (`nn.MaxPool2d(k)`).
    #[must_use]
    pub fn new(k: usize) -> Self {
        MaxPool2d {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
        }
    }

    fn apply(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "MaxPool2d::forward";
        let dims = pool_shape(OP, x.shape(), self.kernel, self.stride, self.padding)?;
        let out_shape = [x.shape()[0], x.shape()[1], dims[3], dims[4]];
        match x {
            Activation::Float(a) => {
                let data = contiguous(a);
                let out = pool(
                    &data,
                    dims,
                    self.kernel,
                    self.stride,
                    self.padding,
                    |w, _| {
                        w.iter().copied().fold(f32::NEG_INFINITY, |m, v| {
                            if v.is_nan() || m.is_nan() {
                                f32::NAN
                            } else {
                                m.max(v)
                            }
                        })
                    },
                );
                Ok(Activation::Float(shape_array(&out_shape, out)))
            }
            Activation::Quantized(q) => {
                let data = contiguous(q.int_repr());
                let out = pool(
                    &data,
                    dims,
                    self.kernel,
                    self.stride,
                    self.padding,
                    |w, _| w.iter().copied().max().unwrap_or(0),
                );
                let arr = ArrayD::from_shape_vec(IxDyn(&out_shape), out)
                    .expect("data length computed from the shape");
                Ok(Activation::Quantized(QuantizedTensor::from_parts(
                    arr,
                    q.params().clone(),
                )?))
            }
        }
    }
}
simple_module!(MaxPool2d, "MaxPool2d");

/// Average pooling over `[N, C, H, W]` (`count_include_pad = true`, `ceil_mode = false`).
/// On a quantized activation the parameters are kept and the average is computed on the
/// integers: `zp + rne((Σq − count·zp) / window)` (PyTorch's quantized `avg_pool2d` with equal
/// input and output parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    /// Window (height, width).
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Padding (height, width), counted in the divisor.
    pub padding: [usize; 2],
}

impl AvgPool2d {
    /// A square window `k`, stride `k`, no padding (`nn.AvgPool2d(k)`).
    #[must_use]
    pub fn new(k: usize) -> Self {
        AvgPool2d {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
        }
    }

    fn apply(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "AvgPool2d::forward";
        let dims = pool_shape(OP, x.shape(), self.kernel, self.stride, self.padding)?;
        let out_shape = [x.shape()[0], x.shape()[1], dims[3], dims[4]];
        let div = (self.kernel[0] * self.kernel[1]) as f32;
        match x {
            Activation::Float(a) => {
                let data = contiguous(a);
                let out = pool(
                    &data,
                    dims,
                    self.kernel,
                    self.stride,
                    self.padding,
                    |w, _| w.iter().sum::<f32>() / div,
                );
                Ok(Activation::Float(shape_array(&out_shape, out)))
            }
            Activation::Quantized(q) => {
                let zp = per_tensor(q, OP)?.zero_point();
                let data = contiguous(q.int_repr());
                let out = pool(
                    &data,
                    dims,
                    self.kernel,
                    self.stride,
                    self.padding,
                    |w, _| {
                        let s: i32 = w.iter().map(|&v| v as i32 - zp).sum();
                        let v = (s as f32 / div).round_ties_even() as i32 + zp;
                        v.clamp(0, 255) as u8
                    },
                );
                let arr = ArrayD::from_shape_vec(IxDyn(&out_shape), out)
                    .expect("data length computed from the shape");
                Ok(Activation::Quantized(QuantizedTensor::from_parts(
                    arr,
                    q.params().clone(),
                )?))
            }
        }
    }
}
simple_module!(AvgPool2d, "AvgPool2d");

/// Flattens axes `start_dim..` into one (row-major, so `[N, C, H, W]` becomes `[N, C·H·W]` in
/// C, H, W order). Works on quantized activations too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flatten {
    /// First axis flattened (PyTorch's default 1).
    pub start_dim: usize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1 }
    }
}

impl Flatten {
    fn apply(&self, x: &Activation) -> Result<Activation> {
        let shape = x.shape();
        if self.start_dim >= shape.len().max(1) {
            return Err(QuantError::InvalidAxis {
                op: "Flatten::forward",
                axis: self.start_dim as isize,
                ndim: shape.len(),
            });
        }
        let mut new_shape = shape[..self.start_dim].to_vec();
        new_shape.push(shape[self.start_dim..].iter().product());
        Ok(match x {
            Activation::Float(a) => Activation::Float(shape_array(&new_shape, contiguous(a))),
            Activation::Quantized(q) => {
                let arr = ArrayD::from_shape_vec(IxDyn(&new_shape), contiguous(q.int_repr()))
                    .expect("same number of elements");
                Activation::Quantized(QuantizedTensor::from_parts(arr, q.params().clone())?)
            }
        })
    }
}
simple_module!(Flatten, "Flatten");

/// Passes its input through (what fusion leaves in place of the folded layers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity;

impl Identity {
    fn apply(&self, x: &Activation) -> Result<Activation> {
        Ok(x.clone())
    }
}
simple_module!(Identity, "Identity");

/// Marks where a model enters the quantized domain: the identity on float input;
/// [`crate::ptq::Prepared::convert`] replaces it by a [`super::quantized::Quantize`] with the
/// parameters observed at its output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuantStub;

impl QuantStub {
    fn apply(&self, x: &Activation) -> Result<Activation> {
        Ok(x.clone())
    }
}
simple_module!(QuantStub, "QuantStub");

/// Marks where a model leaves the quantized domain: the identity on float input, dequantizes
/// a quantized one; converted to [`super::quantized::DeQuantize`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeQuantStub;

impl DeQuantStub {
    fn apply(&self, x: &Activation) -> Result<Activation> {
        Ok(Activation::Float(x.to_float()?))
    }
}
simple_module!(DeQuantStub, "DeQuantStub");

/// Element-wise sum of two float activations of the same shape (residual blocks). Takes two
/// inputs through [`Module::forward_many`]; [`Module::forward`] with one input is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Add;

impl Module for Add {
    fn kind(&self) -> &'static str {
        "Add"
    }

    fn forward(&self, _x: &Activation) -> Result<Activation> {
        Err(QuantError::LengthMismatch {
            op: "Add::forward",
            what: "inputs",
            expected: 2,
            got: 1,
        })
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        const OP: &str = "Add::forward_many";
        let [a, b] = inputs else {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "inputs",
                expected: 2,
                got: inputs.len(),
            });
        };
        let a = need_float(OP, a)?;
        let b = need_float(OP, b)?;
        if a.shape() != b.shape() {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: a.shape().to_vec(),
                got: b.shape().to_vec(),
            });
        }
        Ok(Activation::Float(a + b))
    }

    fn num_inputs(&self) -> usize {
        2
    }
}
