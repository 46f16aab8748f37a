//! [`QuantizedConv2d`] and [`QuantizedConv1d`] (a view of a height-1 [`QuantizedConv2d`]).

use ndarray::{ArrayD, IxDyn};

use super::accumulate::{Int8Accumulation, IntWeights};
use super::requant::{check_bias_values, need_quint8, weight_channels, Requant};
use crate::error::{QuantError, Result};
use crate::nn::conv::{as_height_one, conv_float, images_per_block, ConvShape};
use crate::nn::weighted::check_bias;
use crate::nn::{
    Activation, ConvGeometry, ConvGeometry1d, LayerRole, Module, WeightRef, WeightedCore,
};
use crate::qparams::QParams;
use crate::tensor::QuantizedTensor;

/// Quantized 2-D convolution: quint8 `[N, C, H, W]` → quint8, qint8 weight
/// `[out, in/groups, kh, kw]` per tensor or per output channel, float bias, optional fused ReLU.
/// Padding contributes the input zero point (the value 0). The reduction runs over
/// `(kh, kw, input channel)` with the input channel fastest, within each group (the order of
/// [`Int8Accumulation::X86Avx2`]'s pairs).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedConv2d {
    weight: QuantizedTensor<i8>,
    bias: Option<ArrayD<f32>>,
    geo: ConvGeometry,
    out: QParams,
    relu: bool,
    accumulation: Int8Accumulation,
    /// One set of prepared rows per group, `[out/groups, kh·kw·in/groups]`.
    groups: Vec<IntWeights>,
    w_scales: Vec<f32>,
}

impl QuantizedConv2d {
    /// A quantized convolution; exact accumulation, no ReLU.
    ///
    /// # Errors
    /// As [`QuantizedLinear::new`](super::QuantizedLinear::new) for a 4-D weight;
    /// [`QuantError::InvalidParameter`] for a bad geometry.
    pub fn new(
        weight: QuantizedTensor<i8>,
        bias: Option<ArrayD<f32>>,
        geo: ConvGeometry,
        output: QParams,
    ) -> Result<Self> {
        const OP: &str = "QuantizedConv2d::new";
        let &[o, cg, kh, kw] = weight.shape() else {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0; 4],
                got: weight.shape().to_vec(),
            });
        };
        check_bias(OP, bias.as_ref(), o)?;
        check_bias_values(OP, bias.as_ref())?;
        geo.check(OP, o)?;
        need_quint8(OP, &output)?;
        let (w_scales, zps) = weight_channels(OP, &weight)?;
        let raw = weight.int_repr().as_standard_layout();
        let raw = raw.as_slice().expect("standard layout");
        let og = o / geo.groups;
        let kk = cg * kh * kw;
        let mut groups = Vec::with_capacity(geo.groups);
        for g in 0..geo.groups {
            // [og, cg, kh, kw] → [og, kh, kw, cg]
            let mut rows = Vec::with_capacity(og * kk);
            for oc in g * og..(g + 1) * og {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for ci in 0..cg {
                            rows.push(raw[((oc * cg + ci) * kh + ky) * kw + kx]);
                        }
                    }
                }
            }
            groups.push(IntWeights::new(
                OP,
                &rows,
                og,
                kk,
                &zps[g * og..(g + 1) * og],
            )?);
        }
        Ok(QuantizedConv2d {
            weight,
            bias,
            geo,
            out: output,
            relu: false,
            accumulation: Int8Accumulation::Exact,
            groups,
            w_scales,
        })
    }

    /// Quantizes a float [`Conv2d`](crate::nn::Conv2d)'s weight with `weight_params` (its
    /// fused ReLU is kept).
    ///
    /// # Errors
    /// As [`QuantizedTensor::quantize`] and [`QuantizedConv2d::new`].
    pub fn from_float(
        conv: &crate::nn::Conv2d,
        weight_params: impl Into<crate::qparams::AnyQParams>,
        output: QParams,
    ) -> Result<Self> {
        let core = conv.core();
        let w = QuantizedTensor::<i8>::quantize(core.weight(), weight_params)?;
        let q = QuantizedConv2d::new(w, core.bias().cloned(), conv.geometry(), output)?;
        Ok(if core.has_relu() { q.with_relu() } else { q })
    }

    /// The same layer with a fused ReLU.
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// The same layer with another accumulation mode.
    #[must_use]
    pub fn with_accumulation(mut self, accumulation: Int8Accumulation) -> Self {
        self.accumulation = accumulation;
        self
    }

    /// The accumulation mode.
    #[must_use]
    pub fn accumulation(&self) -> Int8Accumulation {
        self.accumulation
    }

    /// Whether a ReLU is fused.
    #[must_use]
    pub fn has_relu(&self) -> bool {
        self.relu
    }

    /// The geometry.
    #[must_use]
    pub fn geometry(&self) -> ConvGeometry {
        self.geo
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
    ) -> Result<(&'a QuantizedTensor<u8>, QParams, ConvShape)> {
        let q = x.need_quantized(op)?;
        let qp = *q.need_per_tensor(op)?;
        let s = ConvShape::new(op, q.shape(), self.weight.shape(), self.geo)?;
        Ok((q, qp, s))
    }

    /// The reference path: `dequantize → f32 convolution (+ ReLU) → quantize`.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "QuantizedConv2d::forward_reference";
        let (q, _, _) = self.check_input(OP, x)?;
        let mut core = WeightedCore::new(self.weight.to_float(), self.bias.clone())?;
        if self.relu {
            core = core.with_relu();
        }
        let y = conv_float(OP, q.to_float().view(), core.weight_view(), &core, self.geo)?;
        Ok(Activation::Quantized(QuantizedTensor::quantize(
            &y, self.out,
        )?))
    }

    /// The integer path on a checked input.
    fn run(&self, q: &QuantizedTensor<u8>, qp: QParams, s: &ConvShape) -> Activation {
        let xs = q.int_repr().as_standard_layout();
        let xd = xs.as_slice().expect("standard layout");
        let zx = qp.zero_point();
        let pad = u8::try_from(zx).expect("a quint8 zero point is in 0..=255");
        let (cg, og, l) = (s.cg(), s.og(), s.positions());
        let kk = cg * s.kh * s.kw;
        let plane = s.h * s.w;
        let rq = Requant::new(
            qp.scale(),
            &self.w_scales,
            self.bias.as_ref(),
            &self.out,
            self.relu,
        );
        let mut out = vec![0u8; s.n * s.c_out * l];
        let block = images_per_block(s);
        let mut cols: Vec<u8> = Vec::new();
        let mut acc: Vec<i32> = Vec::new();
        for b0 in (0..s.n).step_by(block) {
            let nb = block.min(s.n - b0);
            let m = nb * l;
            for (g, w) in self.groups.iter().enumerate() {
                // rows: output positions of the block; columns (ky, kx, ci).
                cols.clear();
                cols.resize(m * kk, pad);
                for bi in 0..nb {
                    let img = &xd[(b0 + bi) * s.c_in * plane..][..s.c_in * plane];
                    for oy in 0..s.oh {
                        for ox in 0..s.ow {
                            let row = &mut cols[((bi * s.oh + oy) * s.ow + ox) * kk..][..kk];
                            for ky in 0..s.kh {
                                for kx in 0..s.kw {
                                    if let Some(src) = s.source(ky, kx, oy, ox) {
                                        let dst = &mut row[(ky * s.kw + kx) * cg..][..cg];
                                        for (ci, d) in dst.iter_mut().enumerate() {
                                            *d = img[(g * cg + ci) * plane + src];
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                acc.clear();
                acc.resize(m * og, 0);
                w.accumulate(&cols, m, zx, self.accumulation, &mut acc);
                for bi in 0..nb {
                    for o in 0..og {
                        let oc = g * og + o;
                        let dst = &mut out[((b0 + bi) * s.c_out + oc) * l..][..l];
                        for (p, d) in dst.iter_mut().enumerate() {
                            *d = rq.apply(acc[(bi * l + p) * og + o], oc);
                        }
                    }
                }
            }
        }
        let arr =
            ArrayD::from_shape_vec(IxDyn(&[s.n, s.c_out, s.oh, s.ow]), out).expect("output size");
        Activation::Quantized(QuantizedTensor::from_valid_parts(arr, self.out))
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
        let (q, qp, s) = self.check_input("QuantizedConv2d::forward", x)?;
        Ok(self.run(q, qp, &s))
    }

    fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
        Some(match inputs {
            [x] => self.forward_reference(x),
            _ => Err(QuantError::LengthMismatch {
                op: "Module::reference",
                what: "inputs",
                expected: 1,
                got: inputs.len(),
            }),
        })
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

/// Quantized 1-D convolution over `[N, C, L]`, weight `[out, in/groups, k]`: a height-1
/// [`QuantizedConv2d`] (PyTorch's quantized `Conv1d`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedConv1d {
    weight: QuantizedTensor<i8>,
    inner: QuantizedConv2d,
}

impl QuantizedConv1d {
    /// A quantized 1-D convolution; exact accumulation, no ReLU.
    ///
    /// # Errors
    /// As [`QuantizedConv2d::new`] for a 3-D weight.
    pub fn new(
        weight: QuantizedTensor<i8>,
        bias: Option<ArrayD<f32>>,
        geo: ConvGeometry1d,
        output: QParams,
    ) -> Result<Self> {
        if weight.shape().len() != 3 {
            return Err(QuantError::ShapeMismatch {
                op: "QuantizedConv1d::new",
                expected: vec![0; 3],
                got: weight.shape().to_vec(),
            });
        }
        let (data, params) = weight.clone().into_parts();
        let w4 = data
            .into_shape_with_order(IxDyn(&as_height_one(weight.shape())))
            .ok()
            .map(|d| QuantizedTensor::from_parts(d, params))
            .transpose()?
            .ok_or(QuantError::ShapeMismatch {
                op: "QuantizedConv1d::new",
                expected: as_height_one(weight.shape()),
                got: weight.shape().to_vec(),
            })?;
        let inner = QuantizedConv2d::new(w4, bias, geo.to_2d(), output)?;
        Ok(QuantizedConv1d { weight, inner })
    }

    /// The same layer with a fused ReLU.
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.inner = self.inner.with_relu();
        self
    }

    /// The same layer with another accumulation mode.
    #[must_use]
    pub fn with_accumulation(mut self, accumulation: Int8Accumulation) -> Self {
        self.inner = self.inner.with_accumulation(accumulation);
        self
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        self.inner.output_qparams()
    }

    /// The height-1 2-D convolution it runs.
    #[must_use]
    pub fn as_conv2d(&self) -> &QuantizedConv2d {
        &self.inner
    }

    fn lift(op: &'static str, x: &Activation) -> Result<Activation> {
        let q = x.need_quantized(op)?;
        if q.shape().len() != 3 {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: vec![0; 3],
                got: q.shape().to_vec(),
            });
        }
        let data = q
            .int_repr()
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&as_height_one(q.shape())))
            .expect("same number of elements");
        Ok(Activation::Quantized(q.with_data(data)))
    }

    fn lower(y: Activation) -> Activation {
        match y {
            Activation::Quantized(q) => {
                let s = q.shape();
                let shape = [s[0], s[1], s[3]];
                let data = q
                    .int_repr()
                    .clone()
                    .into_shape_with_order(IxDyn(&shape))
                    .expect("height-1 output");
                Activation::Quantized(q.with_data(data))
            }
            float => float,
        }
    }

    /// The reference path: `dequantize → f32 convolution (+ ReLU) → quantize`.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        let x4 = Self::lift("QuantizedConv1d::forward_reference", x)?;
        Ok(Self::lower(self.inner.forward_reference(&x4)?))
    }
}

impl Module for QuantizedConv1d {
    fn kind(&self) -> &'static str {
        if self.inner.has_relu() {
            "QuantizedConvReLU1d"
        } else {
            "QuantizedConv1d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        let x4 = Self::lift("QuantizedConv1d::forward", x)?;
        Ok(Self::lower(self.inner.forward(&x4)?))
    }

    fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
        Some(match inputs {
            [x] => self.forward_reference(x),
            _ => Err(QuantError::LengthMismatch {
                op: "Module::reference",
                what: "inputs",
                expected: 1,
                got: inputs.len(),
            }),
        })
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Quantized(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.inner.bias()
    }
}
