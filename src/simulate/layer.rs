//! [`FormatLayer`]: a float layer with its weights stored in a low-precision format and its
//! inputs passed through another, the way an engine that runs weight-only int4, MXFP4 weights
//! or float8 activations computes it (decode, then a float product).

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use crate::error::Result;
use crate::formats::ElementFormat;
use crate::nn::{Activation, LayerRole, Module, WeightRef, WeightedCore};

/// A shared format, as plans and layers hold them.
pub type SharedFormat = Arc<dyn ElementFormat>;

/// A float layer simulated in low-precision formats: a weighted layer's weight is
/// fake-quantized once, row by row along its output channels (`[O, ...]` flattened to rows of
/// `in_features` or `C·kh·kw`: the layout GGML, torchao and the MX kernels group along), the
/// bias stays `f32`; every input is fake-quantized on every call along its last axis (per token
/// for a Linear's `[N, K]` or `[N, T, K]` input). Arithmetic in between is `f32`.
///
/// Its role is [`LayerRole::Float`]: inside an int8 model it runs as a float island.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::formats::ElementFormat;
/// use qnumeric::nn::{Activation, Linear, Module};
/// use qnumeric::simulate::FormatLayer;
///
/// // A format of our own: round to multiples of 0.25 (any `ElementFormat` works).
/// #[derive(Debug)]
/// struct Quarter;
/// impl std::fmt::Display for Quarter {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("quarter") }
/// }
/// impl ElementFormat for Quarter {
///     fn bits_per_element(&self) -> f64 { 8.0 }
///     fn block_len(&self) -> usize { 1 }
///     fn fake_quantize_rows(&self, x: &[f32], _row_len: usize, out: &mut [f32]) -> qnumeric::Result<()> {
///         for (o, v) in out.iter_mut().zip(x) { *o = (v * 4.0).round() / 4.0; }
///         Ok(())
///     }
/// }
/// let fc = Linear::new(ArrayD::from_elem(IxDyn(&[1, 2]), 0.3), None)?;
/// let layer = FormatLayer::new(&fc, Some(Arc::new(Quarter)), None)?;
/// let y = layer.forward(&Activation::Float(ArrayD::from_elem(IxDyn(&[1, 2]), 1.0)))?;
/// assert_eq!(y.as_float()?[[0, 0]], 0.5); // weights 0.25 + 0.25
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FormatLayer {
    layer: Box<dyn Module>,
    weights: Option<SharedFormat>,
    activations: Option<SharedFormat>,
}

impl FormatLayer {
    /// Wraps `layer`: a weighted layer is rebuilt with its weight fake-quantized in `weights`
    /// (a layer without weights ignores `weights`); inputs go through `activations`.
    ///
    /// # Errors
    /// The weight format's errors: a row length (`in_features`, `C·kh·kw`) that is not a
    /// multiple of its block ([`QuantError::NotMultiple`](crate::QuantError::NotMultiple)), a
    /// NaN weight; errors of rebuilding the layer.
    pub fn new(
        layer: &dyn Module,
        weights: Option<SharedFormat>,
        activations: Option<SharedFormat>,
    ) -> Result<Self> {
        let layer = match (layer.role(), &weights) {
            (LayerRole::Weighted(w), Some(format)) => {
                let core = w.core();
                let weight = fake_quantize_weight(core.weight(), format.as_ref())?;
                let mut simulated = WeightedCore::new(weight, core.bias().cloned())?;
                if core.has_relu() {
                    simulated = simulated.with_relu();
                }
                w.with_core(simulated)?
            }
            _ => layer.box_clone(),
        };
        Ok(FormatLayer {
            layer,
            weights,
            activations,
        })
    }

    /// The weights' format, if any.
    #[must_use]
    pub fn weight_format(&self) -> Option<&dyn ElementFormat> {
        self.weights.as_deref()
    }

    /// The inputs' format, if any.
    #[must_use]
    pub fn activation_format(&self) -> Option<&dyn ElementFormat> {
        self.activations.as_deref()
    }

    /// The wrapped layer (with its simulated weights).
    #[must_use]
    pub fn inner(&self) -> &dyn Module {
        self.layer.as_ref()
    }
}

/// `weight` (`[O, ...]`) fake-quantized row by row in `format`.
///
/// # Errors
/// The format's errors (see [`FormatLayer::new`]).
pub fn fake_quantize_weight(
    weight: &ArrayD<f32>,
    format: &dyn ElementFormat,
) -> Result<ArrayD<f32>> {
    let rows = weight.shape().first().copied().unwrap_or(1).max(1);
    fake_quantize_rows_of(weight, weight.len() / rows, format)
}

/// `x` fake-quantized along its last axis in `format`.
///
/// # Errors
/// The format's errors.
pub fn fake_quantize_last_axis(x: &ArrayD<f32>, format: &dyn ElementFormat) -> Result<ArrayD<f32>> {
    let row_len = x.shape().last().copied().unwrap_or(1);
    fake_quantize_rows_of(x, row_len, format)
}

fn fake_quantize_rows_of(
    x: &ArrayD<f32>,
    row_len: usize,
    format: &dyn ElementFormat,
) -> Result<ArrayD<f32>> {
    let data: Vec<f32> = x.iter().copied().collect(); // row-major, whatever x's layout
    let mut out = vec![0.0f32; data.len()];
    if !data.is_empty() {
        format.fake_quantize_rows(&data, row_len, &mut out)?;
    }
    ArrayD::from_shape_vec(IxDyn(x.shape()), out).map_err(|e| crate::QuantError::Format {
        op: "simulate::fake_quantize",
        detail: e.to_string(),
    })
}

impl Module for FormatLayer {
    fn kind(&self) -> &'static str {
        "FormatLayer"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_many(&[x])
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        match &self.activations {
            None => self.layer.forward_many(inputs),
            Some(format) => {
                let simulated = inputs
                    .iter()
                    .map(|a| {
                        Ok(Activation::Float(fake_quantize_last_axis(
                            &a.to_float(),
                            format.as_ref(),
                        )?))
                    })
                    .collect::<Result<Vec<Activation>>>()?;
                let refs: Vec<&Activation> = simulated.iter().collect();
                self.layer.forward_many(&refs)
            }
        }
    }

    fn num_inputs(&self) -> usize {
        self.layer.num_inputs()
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        self.layer.weight()
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.layer.bias()
    }
}
