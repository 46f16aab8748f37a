//! [`quantize_dynamic`]: PyTorch's dynamic quantization of linear layers.

use super::PtqConfig;
use super::prepare::quantized_weight;
use crate::error::Result;
use crate::nn::quantized::DynamicQuantizedLinear;
use crate::nn::{LayerRole, Model, Module, WeightedKind};

/// Dynamic quantization (PyTorch's `quantize_dynamic`): every float linear layer (a
/// [`LayerRole::Weighted`] layer of [`WeightedKind::Linear`]) without a fused ReLU and not kept
/// in float is replaced by a [`DynamicQuantizedLinear`] whose weight is quantized with the
/// layer's weight observer. Returns the names replaced.
///
/// # Errors
/// Errors of the weight observers and constructors; on error the model is unchanged.
pub fn quantize_dynamic<M: Model + ?Sized>(
    model: &mut M,
    config: &PtqConfig,
) -> Result<Vec<String>> {
    let mut replacements: Vec<(String, Box<dyn Module>)> = Vec::new();
    for name in model.layer_names() {
        let (Some(qconfig), Some(layer)) = (config.qconfig(&name), model.layer(&name)) else {
            continue;
        };
        let LayerRole::Weighted(w) = layer.role() else {
            continue;
        };
        if w.weighted_kind() != WeightedKind::Linear || w.core().has_relu() {
            continue;
        }
        let q =
            DynamicQuantizedLinear::new(quantized_weight(w, qconfig)?, w.core().bias().cloned())?;
        replacements.push((name, Box::new(q)));
    }
    let mut names = Vec::with_capacity(replacements.len());
    for (name, layer) in replacements {
        model.replace_layer(&name, layer)?;
        names.push(name);
    }
    Ok(names)
}
