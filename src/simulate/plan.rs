//! [`FormatPlan`]: which format each weighted layer's weights and inputs are simulated in.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::layer::FormatLayer;
use crate::error::{QuantError, Result};
use crate::formats::Format;
use crate::nn::{LayerRole, Model};

/// The formats of one layer: its weights and its inputs (`None`: `f32`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerFormats {
    /// The weights' format.
    pub weights: Option<Format>,
    /// The inputs' format.
    pub activations: Option<Format>,
}

impl LayerFormats {
    /// Weights in `format`, inputs in `f32`.
    #[must_use]
    pub const fn weights(format: Format) -> Self {
        LayerFormats {
            weights: Some(format),
            activations: None,
        }
    }

    /// Whether anything is simulated.
    #[must_use]
    pub fn is_float(&self) -> bool {
        self.weights.is_none() && self.activations.is_none()
    }
}

impl fmt::Display for LayerFormats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |x: &Option<Format>| x.map_or_else(|| "fp32".to_string(), |x| x.to_string());
        write!(
            f,
            "weights {}, inputs {}",
            name(&self.weights),
            name(&self.activations)
        )
    }
}

/// What happens to a layer whose rows do not fit its format's block (a convolution with
/// `C·kh·kw = 9` for blocks of 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Misfit {
    /// The layer stays `f32` and [`Simulated::kept_float`] says why (what llama.cpp and
    /// torchao's filters do with tensors whose rows are not whole blocks).
    #[default]
    KeepFloat,
    /// [`FormatPlan::simulate`] fails.
    Error,
}

/// Which format every weighted layer's weights and inputs are simulated in: a default and
/// per-layer overrides. [`FormatPlan::simulate`] turns a float model into one whose weighted
/// layers are [`FormatLayer`]s, which the Numeric Suite compares with the float model like any
/// quantized model.
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::formats::Format;
/// use qnumeric::nn::{Linear, Model, Sequential};
/// use qnumeric::simulate::{FormatPlan, LayerFormats};
///
/// let w = ArrayD::from_shape_fn(IxDyn(&[8, 32]), |i| ((i[0] * 7 + i[1] * 3) % 11) as f32 - 5.0);
/// let model = Sequential::new()
///     .with("fc1", Linear::new(w.clone(), None)?)?
///     .with("fc2", Linear::new(w.slice(ndarray::s![.., ..8]).to_owned().into_dyn(), None)?)?;
/// let int8: Format = "int8".parse()?;
/// let plan = FormatPlan::weights(int8).with_layer("fc2", LayerFormats::default());
/// let sim = plan.simulate(&model)?;
/// assert_eq!(sim.simulated.len(), 1); // fc1; fc2 stays f32
/// assert_eq!(sim.model.layer("fc1").map(|l| l.kind()), Some("FormatLayer"));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FormatPlan {
    /// The formats of every weighted layer without an override.
    pub default: LayerFormats,
    /// Per-layer formats (an all-`None` entry keeps the layer in `f32`).
    pub layers: BTreeMap<String, LayerFormats>,
    /// Layers whose rows do not fit their format's block.
    pub misfit: Misfit,
}

/// A float model simulated with a [`FormatPlan`].
#[derive(Debug, Clone)]
pub struct Simulated<M> {
    /// The model.
    pub model: M,
    /// The layers simulated, with their formats, in model order.
    pub simulated: Vec<(String, LayerFormats)>,
    /// Layers left in `f32` because their rows do not fit the format ([`Misfit::KeepFloat`]),
    /// with the format's error.
    pub kept_float: Vec<(String, QuantError)>,
}

impl FormatPlan {
    /// Every weighted layer's weights in `format`, inputs in `f32` (weight-only).
    #[must_use]
    pub fn weights(format: Format) -> Self {
        FormatPlan {
            default: LayerFormats::weights(format),
            ..FormatPlan::default()
        }
    }

    /// Every weighted layer's inputs in `format` too (unless overridden).
    #[must_use]
    pub fn with_activations(mut self, format: Format) -> Self {
        self.default.activations = Some(format);
        self
    }

    /// `layer` in `formats` instead of the default.
    #[must_use]
    pub fn with_layer(mut self, layer: impl Into<String>, formats: LayerFormats) -> Self {
        self.layers.insert(layer.into(), formats);
        self
    }

    /// What to do with layers whose rows do not fit.
    #[must_use]
    pub fn with_misfit(mut self, misfit: Misfit) -> Self {
        self.misfit = misfit;
        self
    }

    /// The formats of `layer`.
    #[must_use]
    pub fn layer_formats(&self, layer: &str) -> LayerFormats {
        self.layers.get(layer).copied().unwrap_or(self.default)
    }

    /// `float` with every weighted layer replaced by a [`FormatLayer`] in its formats.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] for an override naming no layer of the model; a format's
    /// errors (NaN weights; rows that do not fit with [`Misfit::Error`]).
    pub fn simulate<M: Model + Clone>(&self, float: &M) -> Result<Simulated<M>> {
        const OP: &str = "FormatPlan::simulate";
        let names = float.layer_names();
        if let Some(unknown) = self.layers.keys().find(|k| !names.contains(k)) {
            return Err(QuantError::NotFound {
                op: OP,
                what: "layer",
                name: unknown.clone(),
            });
        }
        let mut model = float.clone();
        let mut simulated = Vec::new();
        let mut kept_float = Vec::new();
        for name in names {
            let formats = self.layer_formats(&name);
            if formats.is_float() {
                continue;
            }
            let Some(layer) = float.layer(&name) else {
                continue;
            };
            if !matches!(layer.role(), LayerRole::Weighted(_)) {
                continue;
            }
            let shared = |f: Option<Format>| {
                f.map(|f| Arc::new(f) as Arc<dyn crate::formats::ElementFormat>)
            };
            match FormatLayer::new(layer, shared(formats.weights), shared(formats.activations)) {
                Ok(l) => {
                    model.replace_layer(&name, Box::new(l))?;
                    simulated.push((name, formats));
                }
                Err(e @ QuantError::NotMultiple { .. }) if self.misfit == Misfit::KeepFloat => {
                    kept_float.push((name, e));
                }
                Err(e) => return Err(e.with_op(OP)),
            }
        }
        Ok(Simulated {
            model,
            simulated,
            kept_float,
        })
    }
}
