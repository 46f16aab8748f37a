//! The [`Module`] trait (one layer) and [`LayerRole`], the one place that says what a layer is
//! for fusion, [`prepare`](crate::ptq::prepare) and [`convert`](crate::ptq::Prepared::convert).

use std::any::Any;
use std::fmt::Debug;

use ndarray::ArrayD;

use super::{Activation, BatchNorm, LayerGrads, WeightRef, WeightedCore};
use crate::error::{QuantError, Result};

/// One layer. Callers implement it for their own layers; the crate's layers implement it too.
///
/// The trait is object safe, `Send` and `Sync` (a model can be shared by threads), so models
/// hold `Box<dyn Module>`; cloning into a box and downcasting come with [`ModuleClone`] for
/// every `Clone` layer. A layer's *name* is given by the model that holds it
/// ([`Model::layer_names`](super::Model::layer_names)); [`Module::kind`] is the layer's type
/// (`"Conv2d"`, `"QuantizedLinear"`, ...) for messages and reports, and [`Module::role`] says
/// what fusion and post-training quantization may do with it.
///
/// # Examples
/// A caller's layer: scale by two (float only, so inside a quantized model it runs as a
/// float island).
/// ```
/// use qnumeric::nn::{Activation, LayerRole, Module};
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
/// assert!(matches!(Double.role(), LayerRole::Float));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub trait Module: ModuleClone + Send + Sync + Debug {
    /// The layer's type (`"Conv2d"`, `"ConvReLU2d"`, `"BatchNorm2d"`, `"QuantizedLinear"`, ...).
    fn kind(&self) -> &'static str;

    /// Runs the layer on one input.
    ///
    /// # Errors
    /// Shape errors, a float activation where a quantized one is needed or the reverse
    /// ([`QuantError::WrongActivation`]), and whatever the layer's computation refuses.
    fn forward(&self, x: &Activation) -> Result<Activation>;

    /// Runs the layer on an input it may consume (what a model runs when nothing else needs
    /// the input afterwards, e.g. [`crate::nn::Sequential`] without a hook). The default is
    /// [`Module::forward`]; layers that only move their input ([`crate::nn::Identity`],
    /// [`crate::nn::Flatten`]) return it without a copy.
    ///
    /// # Errors
    /// As [`Module::forward`].
    fn forward_owned(&self, x: Activation) -> Result<Activation> {
        self.forward(&x)
    }

    /// Runs the layer on several inputs (two for [`Add`](super::Add)). The default accepts
    /// exactly one input and calls [`Module::forward`].
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

    /// What the layer is for fusion and post-training quantization. The default,
    /// [`LayerRole::Float`], is right for any float-only layer: inside the quantized domain it
    /// runs as a [`FloatIsland`](crate::ptq::FloatIsland).
    fn role(&self) -> LayerRole<'_> {
        LayerRole::Float
    }

    /// The reference path of an integer layer on these inputs: `dequantize → f32 op →
    /// quantize` with the layer's own parameters, the oracle its integer kernel is checked
    /// against ([`crate::diagnose`]). `None` (the default) for layers without one: float
    /// layers, and integer layers whose kernel is its own reference.
    fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
        let _ = inputs;
        None
    }

    /// The weight, for layers that have one.
    fn weight(&self) -> Option<WeightRef<'_>> {
        match self.role() {
            LayerRole::Weighted(w) => Some(WeightRef::Float(w.core().weight_view())),
            _ => None,
        }
    }

    /// The bias (float), for layers that have one.
    fn bias(&self) -> Option<&ArrayD<f32>> {
        match self.role() {
            LayerRole::Weighted(w) => w.core().bias(),
            _ => None,
        }
    }

    /// The backward pass of the layer's float forward: given the inputs the forward ran on,
    /// the output it gave and ∂loss/∂output, the gradients with respect to the inputs and the
    /// trainable parameters ([`LayerGrads`]). `None` (the default) for layers that cannot be
    /// trained through (integer layers, a caller's layer without one).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<LayerGrads>> {
        let _ = (inputs, output, grad_output);
        None
    }

    /// The trainable parameters by name, in the order and with the names
    /// [`Module::backward`] gives their gradients (empty by default).
    fn params(&self) -> Vec<(&'static str, ArrayD<f32>)> {
        Vec::new()
    }

    /// The same layer with the named parameters (and buffers, see [`LayerGrads::buffers`])
    /// replaced: what an optimizer step builds. `None` (the default) for layers without
    /// trainable parameters.
    fn with_params(&self, params: &[(&str, ArrayD<f32>)]) -> Option<Result<Box<dyn Module>>> {
        let _ = params;
        None
    }
}

/// The one input of a single-input operation, or [`QuantError::LengthMismatch`] naming `op`.
pub(crate) fn one_input<'a>(op: &'static str, inputs: &[&'a Activation]) -> Result<&'a Activation> {
    match inputs {
        [x] => Ok(x),
        _ => Err(QuantError::LengthMismatch {
            op,
            what: "inputs",
            expected: 1,
            got: inputs.len(),
        }),
    }
}

/// What a layer is, for fusion ([`crate::fusion`]), [`prepare`](crate::ptq::prepare) and
/// [`convert`](crate::ptq::Prepared::convert): the single answer all three use.
///
/// | role | fusion | inside the quantized domain |
/// |---|---|---|
/// | `Weighted` | first layer of Conv/Linear-BN(-ReLU), Conv/Linear-ReLU | observed, converted by `ptq` to its int8 counterpart ([`PtqConfig::with_conversion`](crate::ptq::PtqConfig::with_conversion) for a caller's layer) |
/// | `BatchNorm` | folded into the weighted layer before it | float island (when not fused) |
/// | `Relu` | fused into the weighted layer before it | runs on quantized activations |
/// | `PassThrough` | – | runs on quantized activations (pooling, flatten, ReLU6 ...) |
/// | `QuantStub` / `DeQuantStub` | – | where the quantized domain starts / ends |
/// | `Add` | – | observed, converted to [`QuantizedAdd`](super::quantized::QuantizedAdd) |
/// | `Quantized` | – | already an integer layer: left as it is |
/// | `Float` | – | observed, wrapped in a [`FloatIsland`](crate::ptq::FloatIsland) |
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum LayerRole<'a> {
    /// A layer with a float weight, bias and optional fused ReLU that has an int8 counterpart
    /// (convolution, linear).
    Weighted(&'a dyn WeightedLayer),
    /// Inference batch norm, foldable into the weighted layer before it.
    BatchNorm(&'a BatchNorm),
    /// `max(x, 0)`: fusable into the weighted layer before it; exact on quantized input.
    Relu,
    /// Runs unchanged on quantized activations (pooling, flatten, identity, ReLU6).
    PassThrough,
    /// Marks where the quantized domain starts.
    QuantStub,
    /// Marks where the quantized domain ends.
    DeQuantStub,
    /// Two-input addition (residual joins).
    Add,
    /// Already an integer layer (the output of a conversion).
    Quantized,
    /// Float only: anything else.
    Float,
}

/// The kind of weighted layer, which decides how a BatchNorm folds into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightedKind {
    /// Fully connected, weight `[out, in]` (folds a `BatchNorm1d`).
    Linear,
    /// Convolution with `spatial_dims` spatial axes, weight `[out, in/groups, k...]` (folds a
    /// BatchNorm of the same dimensionality).
    Conv {
        /// 1 for `Conv1d`, 2 for `Conv2d`.
        spatial_dims: usize,
        /// Groups.
        groups: usize,
    },
}

/// A layer with a [`WeightedCore`] (weight, bias, fused ReLU): what fusion rebuilds and
/// conversion quantizes. Implemented by [`Linear`](super::Linear), [`Conv1d`](super::Conv1d)
/// and [`Conv2d`](super::Conv2d); a caller's weighted layer can implement it too and return
/// [`LayerRole::Weighted`] from [`Module::role`]. Its int8 counterpart is built by `ptq`'s
/// conversion (as PyTorch's `convert` maps float modules to quantized ones), for a caller's
/// layer from the function given to [`PtqConfig::with_conversion`](crate::ptq::PtqConfig::with_conversion).
pub trait WeightedLayer: Module {
    /// Linear or convolution (decides the BatchNorm folding).
    fn weighted_kind(&self) -> WeightedKind;

    /// The weight, bias and fused ReLU.
    fn core(&self) -> &WeightedCore;

    /// The same layer (same geometry) with another core: what fusion puts in its place.
    ///
    /// # Errors
    /// Shape errors when the core does not fit the layer.
    fn with_core(&self, core: WeightedCore) -> Result<Box<dyn Module>>;
}

/// Cloning into a box and downcasting, implemented for every `Module + Clone` (so layers,
/// the crate's and callers', need not write them).
pub trait ModuleClone {
    /// Clones into a box (keeps `Box<dyn Module>` clonable).
    fn box_clone(&self) -> Box<dyn Module>;

    /// For downcasting to the concrete layer.
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
