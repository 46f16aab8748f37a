//! The named sequential container.

use super::{Activation, LayerHook, Model, Module};
use crate::error::{QuantError, Result};

/// Layers run one after the other, each under a unique name (PyTorch's `nn.Sequential` with
/// named children). Implements [`Model`].
///
/// # Examples
/// ```
/// use qnumeric::nn::{Flatten, Model, ReLU, Sequential};
/// let mut m = Sequential::new().with("relu", ReLU)?.with("flat", Flatten::default())?;
/// assert_eq!(m.layer_names(), ["relu", "flat"]);
/// assert!(m.push("relu", ReLU).is_err()); // names are unique
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Sequential {
    layers: Vec<(String, Box<dyn Module>)>,
}

impl Sequential {
    /// An empty container.
    #[must_use]
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends a layer.
    ///
    /// # Errors
    /// [`QuantError::InvalidName`] when the name is empty or already used;
    /// [`QuantError::UnsupportedLayer`] when the layer takes more than one input (use your own
    /// [`Model`] for graphs with joins).
    pub fn push(&mut self, name: impl Into<String>, layer: impl Module + 'static) -> Result<()> {
        self.push_boxed(name, Box::new(layer))
    }

    /// Appends a boxed layer. See [`Sequential::push`].
    ///
    /// # Errors
    /// As [`Sequential::push`].
    pub fn push_boxed(&mut self, name: impl Into<String>, layer: Box<dyn Module>) -> Result<()> {
        const OP: &str = "Sequential::push";
        let name = name.into();
        if name.is_empty() {
            return Err(QuantError::InvalidName {
                op: OP,
                name,
                reason: "a layer name must not be empty",
            });
        }
        if self.index_of(&name).is_some() {
            return Err(QuantError::InvalidName {
                op: OP,
                name,
                reason: "a layer with this name is already in the container",
            });
        }
        single_input(OP, layer.as_ref())?;
        self.layers.push((name, layer));
        Ok(())
    }

    /// Appends a layer (builder style).
    ///
    /// # Errors
    /// As [`Sequential::push`].
    pub fn with(mut self, name: impl Into<String>, layer: impl Module + 'static) -> Result<Self> {
        self.push(name, layer)?;
        Ok(self)
    }

    /// Number of layers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Position of a layer.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|(n, _)| n == name)
    }

    /// The layer under `name`, downcast to a concrete type.
    #[must_use]
    pub fn get<T: Module + 'static>(&self, name: &str) -> Option<&T> {
        self.layer(name)
            .and_then(|l| l.as_any().downcast_ref::<T>())
    }

    /// `(name, layer)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &dyn Module)> {
        self.layers.iter().map(|(n, l)| (n.as_str(), l.as_ref()))
    }

    /// Inserts a layer at `index` (0 = first).
    ///
    /// # Errors
    /// As [`Sequential::push`]; [`QuantError::LengthMismatch`] when `index > len`.
    pub fn insert(
        &mut self,
        index: usize,
        name: impl Into<String>,
        layer: Box<dyn Module>,
    ) -> Result<()> {
        if index > self.layers.len() {
            return Err(QuantError::LengthMismatch {
                op: "Sequential::insert",
                what: "index",
                expected: self.layers.len(),
                got: index,
            });
        }
        self.push_boxed(name, layer)?;
        if let Some(last) = self.layers.pop() {
            self.layers.insert(index, last);
        }
        Ok(())
    }

    /// Wraps the model between a `quant` [`QuantStub`](super::QuantStub) and a `dequant`
    /// [`DeQuantStub`](super::DeQuantStub) (PyTorch's `QuantWrapper`), so that post-training
    /// quantization knows where the quantized domain starts and ends.
    ///
    /// # Errors
    /// As [`Sequential::push`] (the names `quant`/`dequant` must be free).
    pub fn with_quant_stubs(mut self) -> Result<Self> {
        self.insert(0, "quant", Box::new(super::QuantStub))?;
        self.push("dequant", super::DeQuantStub)?;
        Ok(self)
    }
}

fn single_input(op: &'static str, layer: &dyn Module) -> Result<()> {
    if layer.num_inputs() == 1 {
        Ok(())
    } else {
        Err(QuantError::UnsupportedLayer {
            op,
            kind: layer.kind().to_string(),
            reason: "a sequential container only holds single-input layers",
        })
    }
}

impl Model for Sequential {
    fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|(n, _)| n.clone()).collect()
    }

    fn layer(&self, name: &str) -> Option<&dyn Module> {
        self.layers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.as_ref())
    }

    fn replace_layer(&mut self, name: &str, layer: Box<dyn Module>) -> Result<Box<dyn Module>> {
        let i = self.index_of(name).ok_or_else(|| QuantError::NotFound {
            op: "Sequential::replace_layer",
            what: "layer",
            name: name.to_string(),
        })?;
        single_input("Sequential::replace_layer", layer.as_ref())?;
        Ok(std::mem::replace(&mut self.layers[i].1, layer))
    }

    fn run(&self, input: Activation, hook: &mut dyn LayerHook) -> Result<Activation> {
        let mut x = input;
        if !hook.sees_layers() {
            for (_, layer) in &self.layers {
                x = layer.forward_owned(x)?;
            }
            return Ok(x);
        }
        for (name, layer) in &self.layers {
            let mut y = layer.forward(&x)?;
            hook.after_layer(name, layer.as_ref(), &[&x], &mut y)?;
            x = y;
        }
        Ok(x)
    }
}
