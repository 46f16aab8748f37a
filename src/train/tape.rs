//! [`Tape`] (a [`LayerHook`] recording a forward pass) and [`backward`] through any model.

use ndarray::ArrayD;

use crate::error::{QuantError, Result};
use crate::nn::{Activation, LayerGrads, LayerHook, Model, Module};

/// One recorded layer run.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    inputs: Vec<Activation>,
    /// For each input, the entry whose output it is (`None`: the model's input).
    sources: Vec<Option<usize>>,
    output: Activation,
}

fn address(a: &Activation) -> Option<usize> {
    match a {
        Activation::Float(x) => Some(x.as_ptr() as usize),
        Activation::Quantized(_) => None,
    }
}

/// Records a forward pass ([`Model::run`] with the tape as its hook): each layer's name,
/// inputs and output, and where each input came from. An input is the output of the most
/// recent earlier layer that produced the same activation (the same buffer, or else exactly
/// equal values); anything else is the model's input. This is how [`backward`] finds the
/// graph of any [`Model`], residual connections included, without the model saying it.
#[derive(Debug, Clone, Default)]
pub struct Tape {
    entries: Vec<Entry>,
    addresses: Vec<Option<usize>>,
}

impl Tape {
    /// An empty tape.
    #[must_use]
    pub fn new() -> Self {
        Tape::default()
    }

    /// Number of layer runs recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The recorded layer names, in execution order.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    fn source_of(&self, input: &Activation) -> Option<usize> {
        let addr = address(input);
        let same_shape = |e: &Entry| e.output.shape() == input.shape();
        (0..self.entries.len())
            .rev()
            .find(|&i| addr.is_some() && self.addresses[i] == addr && same_shape(&self.entries[i]))
            .or_else(|| {
                (0..self.entries.len()).rev().find(|&i| {
                    let e = &self.entries[i];
                    same_shape(e)
                        && match (&e.output, input) {
                            (Activation::Float(a), Activation::Float(b)) => a == b,
                            _ => false,
                        }
                })
            })
    }
}

impl LayerHook for Tape {
    fn after_layer(
        &mut self,
        name: &str,
        _layer: &dyn Module,
        inputs: &[&Activation],
        output: &mut Activation,
    ) -> Result<()> {
        let sources = inputs.iter().map(|x| self.source_of(x)).collect();
        self.addresses.push(address(output));
        self.entries.push(Entry {
            name: name.to_string(),
            inputs: inputs.iter().map(|&x| x.clone()).collect(),
            sources,
            output: output.clone(),
        });
        Ok(())
    }
}

/// The gradients of one backward pass: each layer's ([`LayerGrads`], in execution order;
/// a layer whose output did not reach the loss has none) and the model input's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelGrads {
    /// `(layer name, its gradients)`, in execution order.
    pub layers: Vec<(String, LayerGrads)>,
    /// ∂loss/∂(model input), when the input reached a layer with a float input.
    pub input: Option<ArrayD<f32>>,
}

impl ModelGrads {
    /// The gradients of the layer `name` (its first run).
    #[must_use]
    pub fn layer(&self, name: &str) -> Option<&LayerGrads> {
        self.layers.iter().find(|(n, _)| n == name).map(|(_, g)| g)
    }
}

fn accumulate(slot: &mut Option<ArrayD<f32>>, g: ArrayD<f32>) {
    match slot {
        Some(s) if s.shape() == g.shape() => *s += &g,
        _ => *slot = Some(g),
    }
}

/// Runs the recorded forward pass backwards: `grad_output` (∂loss/∂output of the last
/// recorded layer) through every layer's [`Module::backward`], from the last to the first,
/// summing the gradients of an output that fed several layers (a residual `Add`).
///
/// # Errors
/// [`QuantError::EmptyInput`] for an empty tape; [`QuantError::ShapeMismatch`] when
/// `grad_output` is not the last output's shape; [`QuantError::NotFound`] for a recorded
/// layer the model no longer has; [`QuantError::UnsupportedLayer`] for a layer without a
/// backward pass (named); the layers' own backward errors.
pub fn backward<M: Model + ?Sized>(
    model: &M,
    tape: &Tape,
    grad_output: &ArrayD<f32>,
) -> Result<ModelGrads> {
    const OP: &str = "train::backward";
    let last = tape
        .entries
        .last()
        .ok_or(QuantError::EmptyInput { op: OP })?;
    if last.output.shape() != grad_output.shape() {
        return Err(QuantError::ShapeMismatch {
            op: OP,
            expected: last.output.shape().to_vec(),
            got: grad_output.shape().to_vec(),
        });
    }
    let n = tape.entries.len();
    let mut grads: Vec<Option<ArrayD<f32>>> = vec![None; n];
    grads[n - 1] = Some(grad_output.clone());
    let mut out = ModelGrads::default();
    let mut per_layer = Vec::with_capacity(n);
    for i in (0..n).rev() {
        let Some(g) = grads[i].take() else {
            continue;
        };
        let e = &tape.entries[i];
        let layer = model.layer(&e.name).ok_or_else(|| QuantError::NotFound {
            op: OP,
            what: "recorded layer",
            name: e.name.clone(),
        })?;
        let inputs: Vec<&Activation> = e.inputs.iter().collect();
        let lg = layer.backward(&inputs, &e.output, &g).ok_or_else(|| {
            QuantError::UnsupportedLayer {
                op: OP,
                kind: format!("{} (layer `{}`)", layer.kind(), e.name),
                reason: "the layer has no backward pass",
            }
        })??;
        if lg.inputs.len() != e.inputs.len() {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "input gradients of a layer's backward pass",
                expected: e.inputs.len(),
                got: lg.inputs.len(),
            });
        }
        for (dx, src) in lg.inputs.iter().zip(&e.sources) {
            match src {
                Some(j) => accumulate(&mut grads[*j], dx.clone()),
                None => accumulate(&mut out.input, dx.clone()),
            }
        }
        per_layer.push((e.name.clone(), lg));
    }
    per_layer.reverse();
    out.layers = per_layer;
    Ok(out)
}
