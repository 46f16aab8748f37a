//! [`QuantizedLinear`]: the int8 fully connected layer.

use ndarray::{ArrayD, IxDyn};

use super::accumulate::{ActRows, Int8Accumulation, IntWeights, rows_per_block};
use super::requant::{Requant, check_bias_values, need_quint8, weight_channels};
use crate::error::{QuantError, Result};
use crate::nn::linear::{linear_float, linear_rows};
use crate::nn::module::one_input;
use crate::nn::weighted::check_bias;
use crate::nn::{Activation, LayerRole, Module, WeightRef, WeightedCore};
use crate::qparams::QParams;
use crate::tensor::QuantizedTensor;

/// Quantized fully connected layer: quint8 `[*, in]` → quint8 `[*, out]`, qint8 weight per
/// tensor or per output channel, float bias, optional fused ReLU (`LinearReLU`), summed as
/// its [`Int8Accumulation`] says.
///
/// # Examples
/// ```
/// use ndarray::arr2;
/// use qnumeric::nn::quantized::{Int8Accumulation, QuantizedLinear};
/// use qnumeric::nn::{Activation, Module};
/// use qnumeric::{QDType, QParams, QuantizedTensor};
///
/// let w = QuantizedTensor::<i8>::quantize(&arr2(&[[0.5f32, -0.25]]).into_dyn(), QParams::new(0.25, 0, QDType::QInt8)?)?;
/// let fc = QuantizedLinear::new(w, None, QParams::new(0.125, 128, QDType::QUInt8)?)?
///     .with_accumulation(Int8Accumulation::Exact);
/// let x = QuantizedTensor::<u8>::quantize(&arr2(&[[1.0f32, 1.0]]).into_dyn(), QParams::new(0.5, 0, QDType::QUInt8)?)?;
/// let y = fc.forward(&Activation::Quantized(x))?;
/// assert_eq!(y.as_quantized()?.int_repr().as_slice(), Some(&[130u8][..])); // 0.25 / 0.125 + 128
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLinear {
    weight: QuantizedTensor<i8>,
    bias: Option<ArrayD<f32>>,
    out: QParams,
    relu: bool,
    accumulation: Int8Accumulation,
    w_int: IntWeights,
    w_scales: Vec<f32>,
}

impl QuantizedLinear {
    /// A quantized linear layer from a quantized weight `[out, in]`, an optional float bias
    /// `[out]` and the output parameters (quint8); exact accumulation, no ReLU.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 2-D or a bias of the wrong shape;
    /// [`QuantError::NanInput`] for a NaN in the bias; [`QuantError::WrongDType`] for
    /// non-quint8 output parameters; [`QuantError::UnsupportedQParams`] for a weight quantized
    /// per channel along another axis than 0 or with float zero points;
    /// [`QuantError::AccumulatorOverflow`] for weights an `i32` accumulator cannot sum.
    pub fn new(
        weight: QuantizedTensor<i8>,
        bias: Option<ArrayD<f32>>,
        output: QParams,
    ) -> Result<Self> {
        const OP: &str = "QuantizedLinear::new";
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
        need_quint8(OP, &output)?;
        let (w_scales, zps) = weight_channels(OP, &weight)?;
        let raw = weight.int_repr().as_standard_layout();
        let w_int = IntWeights::new(
            OP,
            raw.as_slice().expect("standard layout"),
            o,
            weight.shape()[1],
            &zps,
        )?;
        Ok(QuantizedLinear {
            weight,
            bias,
            out: output,
            relu: false,
            accumulation: Int8Accumulation::Exact,
            w_int,
            w_scales,
        })
    }

    /// Quantizes a float [`Linear`](crate::nn::Linear)'s weight with `weight_params` (its
    /// fused ReLU is kept).
    ///
    /// # Errors
    /// As [`QuantizedTensor::quantize`] and [`QuantizedLinear::new`].
    pub fn from_float(
        linear: &crate::nn::Linear,
        weight_params: impl Into<crate::qparams::AnyQParams>,
        output: QParams,
    ) -> Result<Self> {
        let core = linear.core();
        let w = QuantizedTensor::<i8>::quantize(core.weight(), weight_params)?;
        let q = QuantizedLinear::new(w, core.bias().cloned(), output)?;
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
    ) -> Result<(&'a QuantizedTensor<u8>, QParams, usize)> {
        let q = x.need_quantized(op)?;
        let qp = *q.need_per_tensor(op)?;
        let n = linear_rows(op, q.shape(), self.w_int.k)?;
        Ok((q, qp, n))
    }

    /// The reference path: `dequantize → f32 linear (+ ReLU) → quantize` with the same
    /// parameters (the oracle of [`Module::forward`]).
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "QuantizedLinear::forward_reference";
        let (q, _, _) = self.check_input(OP, x)?;
        let mut core = WeightedCore::new(self.weight.to_float(), self.bias.clone())?;
        if self.relu {
            core = core.with_relu();
        }
        let y = linear_float(OP, &q.to_float(), &core)?;
        Ok(Activation::Quantized(QuantizedTensor::quantize(
            &y, self.out,
        )?))
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
        let (q, qp, n) = self.check_input(OP, x)?;
        let o = self.w_int.out;
        crate::nn::shape::checked_elements(OP, "output", &[n, o])?;
        let xs = q.int_repr().as_standard_layout();
        let xd = xs.as_slice().expect("standard layout");
        let k = self.w_int.k;
        let rq = Requant::new(
            qp.scale(),
            &self.w_scales,
            self.bias.as_ref(),
            &self.out,
            self.relu,
        );
        // Blocks of rows, each summed and requantized on one thread (the requantization
        // split with the products; the sums of a block stay in cache).
        let work = n.saturating_mul(k).saturating_mul(o);
        let block = rows_per_block(n, work);
        let mut data = vec![0u8; n * o];
        self.w_int.sum_row_blocks(
            ActRows::Stored(xd, qp.zero_point()),
            self.accumulation,
            (block, work),
            &mut data,
            |acc, out_b| rq.apply_rows(acc, 0, o, out_b),
        )?;
        let mut shape = q.shape().to_vec();
        *shape.last_mut().expect("rank >= 1 checked") = o;
        let arr = ArrayD::from_shape_vec(IxDyn(&shape), data).expect("n·o values");
        Ok(Activation::Quantized(QuantizedTensor::from_valid_parts(
            arr, self.out,
        )))
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
