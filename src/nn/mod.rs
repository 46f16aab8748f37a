//! A small model vocabulary: the [`Module`] trait callers implement for their own layers, the
//! [`Activation`]s that flow between layers (float or quantized, as in PyTorch), the [`Model`]
//! trait every graph implements (the crate's [`Sequential`] is one), and reference layers.
//!
//! | item | what it is |
//! |---|---|
//! | [`Module`] | one layer: `forward` on an [`Activation`], its kind, its weight and bias |
//! | [`Activation`] | `Float(ArrayD<f32>)` or `Quantized(QuantizedTensor<u8>)` (quint8 + parameters) |
//! | [`Model`] | any graph of named layers: enumerate, look up, replace, run with a [`LayerHook`] |
//! | [`Sequential`] | the crate's named sequential container (implements [`Model`]) |
//! | [`Linear`], [`Conv1d`], [`Conv2d`] | float layers (stride, padding, dilation, groups; optional fused ReLU) |
//! | [`BatchNorm`] | inference batch norm (`BatchNorm1d`/`BatchNorm2d`) |
//! | [`ReLU`], [`ReLU6`], [`MaxPool2d`], [`AvgPool2d`], [`Flatten`], [`Identity`] | shape and activation layers (these also accept quantized activations) |
//! | [`Add`] | two-input addition (residual blocks), used through [`Module::forward_many`] |
//! | [`QuantStub`], [`DeQuantStub`] | markers where a model enters and leaves the quantized domain |
//! | [`quantized`] | integer layers: [`quantized::Quantize`], [`quantized::QuantizedConv2d`], [`quantized::QuantizedLinear`], ... |
//!
//! Nothing in the crate assumes a model is a [`Sequential`]: the post-training quantization
//! workflow ([`crate::ptq`]) and the comparison tools work on any [`Model`].
//!
//! # Examples
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use qnumeric::nn::{Activation, Linear, Model, ReLU, Sequential};
//!
//! let fc = Linear::new(ArrayD::from_elem(IxDyn(&[2, 3]), 0.5), None)?;
//! let model = Sequential::new().with("fc", fc)?.with("relu", ReLU)?;
//! let y = model.forward(Activation::Float(ArrayD::from_elem(IxDyn(&[1, 3]), 1.0)))?;
//! assert_eq!(y.as_float()?.as_slice(), Some(&[1.5f32, 1.5][..]));
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::any::Any;
use std::fmt::Debug;

use ndarray::ArrayD;

use crate::error::{QuantError, Result};
use crate::tensor::QuantizedTensor;

pub(crate) mod conv;
mod layers;
pub mod quantized;
mod sequential;

pub use conv::ConvGeometry;
pub use layers::{
    Add, AvgPool2d, BatchNorm, BatchNormParams, Conv1d, Conv2d, DeQuantStub, Flatten, Identity,
    Linear, MaxPool2d, QuantStub, ReLU, ReLU6,
};
pub use sequential::Sequential;

/// What flows between layers: a float tensor, or a quantized (quint8) tensor with its
/// parameters, as in a PyTorch model converted to int8.
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// A float tensor.
    Float(ArrayD<f32>),
    /// A quantized tensor (`u8` storage, quint8 per-tensor parameters).
    Quantized(QuantizedTensor<u8>),
}

impl Activation {
    /// The shape.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        match self {
            Activation::Float(a) => a.shape(),
            Activation::Quantized(q) => q.shape(),
        }
    }

    /// Whether the activation is quantized.
    #[must_use]
    pub fn is_quantized(&self) -> bool {
        matches!(self, Activation::Quantized(_))
    }

    /// The float tensor.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] when the activation is quantized.
    pub fn as_float(&self) -> Result<&ArrayD<f32>> {
        match self {
            Activation::Float(a) => Ok(a),
            Activation::Quantized(_) => Err(QuantError::UnsupportedConfig {
                op: "Activation::as_float",
                reason: "a float activation was required, got a quantized one",
            }),
        }
    }

    /// The quantized tensor.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] when the activation is float.
    pub fn as_quantized(&self) -> Result<&QuantizedTensor<u8>> {
        match self {
            Activation::Quantized(q) => Ok(q),
            Activation::Float(_) => Err(QuantError::UnsupportedConfig {
                op: "Activation::as_quantized",
                reason: "a quantized activation was required, got a float one",
            }),
        }
    }

    /// The values as floats: a copy of a float tensor, or the dequantized values.
    ///
    /// # Errors
    /// Only if a quantized tensor's invariants were broken (the constructors prevent it).
    pub fn to_float(&self) -> Result<ArrayD<f32>> {
        match self {
            Activation::Float(a) => Ok(a.clone()),
            Activation::Quantized(q) => q.dequantize(),
        }
    }

    /// Consumes the activation, returning float values (dequantized if needed).
    ///
    /// # Errors
    /// As [`Activation::to_float`].
    pub fn into_float(self) -> Result<ArrayD<f32>> {
        match self {
            Activation::Float(a) => Ok(a),
            Activation::Quantized(q) => q.dequantize(),
        }
    }
}

impl From<ArrayD<f32>> for Activation {
    fn from(a: ArrayD<f32>) -> Self {
        Activation::Float(a)
    }
}

impl From<QuantizedTensor<u8>> for Activation {
    fn from(q: QuantizedTensor<u8>) -> Self {
        Activation::Quantized(q)
    }
}

/// A layer's weight: float, or quantized (qint8, per channel or per tensor).
#[derive(Debug, Clone, Copy)]
pub enum WeightRef<'a> {
    /// A float weight.
    Float(&'a ArrayD<f32>),
    /// A quantized weight.
    Quantized(&'a QuantizedTensor<i8>),
}

impl WeightRef<'_> {
    /// The weight's values as floats (dequantized where quantized).
    ///
    /// # Errors
    /// Only if a quantized tensor's invariants were broken.
    pub fn to_float(&self) -> Result<ArrayD<f32>> {
        match self {
            WeightRef::Float(w) => Ok((*w).clone()),
            WeightRef::Quantized(q) => q.dequantize(),
        }
    }
}

/// One layer. Callers implement it for their own layers; the crate's layers implement it too.
///
/// The trait is object safe, `Send` and `Sync` (a model can be shared by threads), so models
/// hold `Box<dyn Module>`; cloning into a box and downcasting come with [`ModuleClone`] for
/// every `Clone` layer. A layer's *name* is
/// given by the model that holds it ([`Model::layer_names`]); [`Module::kind`] is the layer's
/// type (`"Conv2d"`, `"QuantizedLinear"`, ...), used by fusion and conversion.
///
/// # Examples
/// A caller's layer: scale by two (float only).
/// ```
/// use qnumeric::nn::{Activation, Module};
///
/// #[derive(Debug, Clone)]
/// struct Double;
/// impl Module for Double {
///     fn kind(&self) -> &'static str { "Double" }
///     fn forward(&self, x: &Activation) -> qnumeric::Result<Activation> {
///         Ok(Activation::Float(x.as_float()? * 2.0))
///     }
/// }
/// let y = Double.forward(&Activation::Float(ndarray::arr1(&[1.0f32]).into_dyn()))?;
/// assert_eq!(y.as_float()?[[0]], 2.0);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub trait Module: ModuleClone + Send + Sync + Debug {
    /// The layer's type (`"Conv2d"`, `"ConvReLU2d"`, `"BatchNorm2d"`, `"QuantizedLinear"`, ...).
    fn kind(&self) -> &'static str;

    /// Runs the layer on one input.
    ///
    /// # Errors
    /// Shape errors, a float activation where a quantized one is needed or the reverse, and
    /// whatever the layer's computation refuses.
    fn forward(&self, x: &Activation) -> Result<Activation>;

    /// Runs the layer on several inputs (two for [`Add`]). The default accepts exactly one
    /// input and calls [`Module::forward`].
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] for a wrong number of inputs; as [`Module::forward`].
    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        match inputs {
            [x] => self.forward(x),
            _ => Err(QuantError::LengthMismatch {
                op: "Module::forward_many",
                what: "inputs",
                expected: self.num_inputs(),
                got: inputs.len(),
            }),
        }
    }

    /// How many inputs the layer takes (1 unless overridden).
    fn num_inputs(&self) -> usize {
        1
    }

    /// The weight, for layers that have one.
    fn weight(&self) -> Option<WeightRef<'_>> {
        None
    }

    /// The bias (float), for layers that have one.
    fn bias(&self) -> Option<&ArrayD<f32>> {
        None
    }
}

/// Cloning into a box and downcasting, implemented for every `Module + Clone` (so layers,
/// the crate's and callers', need not write them).
pub trait ModuleClone {
    /// Clones into a box (keeps `Box<dyn Module>` clonable).
    fn box_clone(&self) -> Box<dyn Module>;

    /// For downcasting to the concrete layer (fusion and conversion use it).
    fn as_any(&self) -> &dyn Any;
}

impl<T: Module + Clone + 'static> ModuleClone for T {
    fn box_clone(&self) -> Box<dyn Module> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Clone for Box<dyn Module> {
    fn clone(&self) -> Self {
        self.box_clone()
    }
}

/// Called by [`Model::run`] after every layer: sees the layer's name, the layer, its inputs and
/// its output, and may replace the output (to inject a value, or to run a shadow layer).
pub trait LayerHook {
    /// After `layer` (named `name`) computed `output` from `inputs`.
    ///
    /// # Errors
    /// Any error stops the run and is returned by [`Model::run`].
    fn after_layer(
        &mut self,
        name: &str,
        layer: &dyn Module,
        inputs: &[&Activation],
        output: &mut Activation,
    ) -> Result<()>;
}

/// A hook that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl LayerHook for NoHook {
    fn after_layer(
        &mut self,
        _name: &str,
        _layer: &dyn Module,
        _inputs: &[&Activation],
        _output: &mut Activation,
    ) -> Result<()> {
        Ok(())
    }
}

impl<F> LayerHook for F
where
    F: FnMut(&str, &dyn Module, &[&Activation], &mut Activation) -> Result<()>,
{
    fn after_layer(
        &mut self,
        name: &str,
        layer: &dyn Module,
        inputs: &[&Activation],
        output: &mut Activation,
    ) -> Result<()> {
        self(name, layer, inputs, output)
    }
}

/// A graph of named layers. The crate's [`Sequential`] implements it; callers implement it for
/// their own graphs (residual blocks, several inputs ...). Post-training quantization and the
/// comparison tools only use this trait.
///
/// Contract: `layer_names` lists every layer once, in the order `run` executes them; `run`
/// calls the hook once per executed layer with the same names; `replace_layer` swaps the
/// layer under a name without changing the graph's wiring.
pub trait Model: Send {
    /// The layers' names, in execution order.
    fn layer_names(&self) -> Vec<String>;

    /// The layer under `name`.
    fn layer(&self, name: &str) -> Option<&dyn Module>;

    /// Replaces the layer under `name`, returning the old one.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] when there is no such layer.
    fn replace_layer(&mut self, name: &str, layer: Box<dyn Module>) -> Result<Box<dyn Module>>;

    /// Runs the model on `input`, calling `hook` after every layer.
    ///
    /// # Errors
    /// The first error of a layer or of the hook.
    fn run(&self, input: Activation, hook: &mut dyn LayerHook) -> Result<Activation>;

    /// Runs the model without a hook.
    ///
    /// # Errors
    /// As [`Model::run`].
    fn forward(&self, input: Activation) -> Result<Activation> {
        self.run(input, &mut NoHook)
    }
}

/// Index of the largest value of each row of a `[N, K]` float array (ties: the first), the
/// usual classifier prediction.
///
/// # Errors
/// [`QuantError::ShapeMismatch`] for an array that is not 2-D; [`QuantError::EmptyInput`] when
/// `K == 0`.
pub fn argmax_rows(logits: &ArrayD<f32>) -> Result<Vec<usize>> {
    if logits.ndim() != 2 {
        return Err(QuantError::ShapeMismatch {
            op: "argmax_rows",
            expected: vec![0, 0],
            got: logits.shape().to_vec(),
        });
    }
    if logits.shape()[1] == 0 {
        return Err(QuantError::EmptyInput { op: "argmax_rows" });
    }
    Ok(logits
        .outer_iter()
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect())
}
