//! The [`Model`] trait every graph implements, and the [`LayerHook`] that sees every layer run.

use super::{Activation, Module};
use crate::error::Result;

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

    /// Whether the hook looks at the layers at all. A model may skip calling a hook that
    /// does not (and then let layers consume their inputs: [`Module::forward_owned`]).
    fn sees_layers(&self) -> bool {
        true
    }
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

    fn sees_layers(&self) -> bool {
        false
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

/// A graph of named layers. The crate's [`Sequential`](super::Sequential) implements it;
/// callers implement it for their own graphs (residual blocks, several inputs ...).
/// Fusion, post-training quantization and the comparison tools only use this trait.
///
/// Contract: `layer_names` lists every layer once, in the order `run` executes them; `run`
/// calls the hook once per executed layer with the same names; `replace_layer` swaps the
/// layer under a name without changing the graph's wiring. Automatic fusion
/// ([`fuse_auto`](crate::fusion::fuse_auto)) takes layers that follow each other in
/// `layer_names` as feeding each other: a graph that lists a layer right after one whose
/// output it does not (only) consume should use [`fuse_modules`](crate::fusion::fuse_modules)
/// with explicit groups instead.
pub trait Model: Send {
    /// The layers' names, in execution order.
    fn layer_names(&self) -> Vec<String>;

    /// The layer under `name`.
    fn layer(&self, name: &str) -> Option<&dyn Module>;

    /// Replaces the layer under `name`, returning the old one.
    ///
    /// # Errors
    /// [`QuantError::NotFound`](crate::QuantError::NotFound) when there is no such layer; a
    /// graph may refuse a layer that does not fit (e.g. another number of inputs).
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
