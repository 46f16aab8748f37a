//! [`Precision`] and [`RoundedLayer`]: a float layer run in fp16 or bf16 (weights,
//! inputs and outputs rounded to that type), what a mixed-precision plan puts in place of an
//! int8 layer.

use half::{bf16, f16};
use ndarray::ArrayD;

use crate::error::Result;
use crate::nn::{Activation, LayerRole, Module, WeightRef, WeightedCore};

/// A float precision a layer can be kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Precision {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Single precision (the float model itself).
    F32,
}

impl Precision {
    /// `v` rounded to this precision (round to nearest even), back in `f32`.
    #[must_use]
    pub fn round(self, v: f32) -> f32 {
        match self {
            Precision::F16 => f16::from_f32(v).to_f32(),
            Precision::BF16 => bf16::from_f32(v).to_f32(),
            Precision::F32 => v,
        }
    }

    fn round_all(self, a: &ArrayD<f32>) -> ArrayD<f32> {
        a.mapv(|v| self.round(v))
    }

    /// The name (`"fp16"`, `"bf16"`, `"fp32"`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Precision::F16 => "fp16",
            Precision::BF16 => "bf16",
            Precision::F32 => "fp32",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A float layer run in a reduced precision: its weight and bias rounded once, its inputs
/// and outputs rounded on every call (arithmetic in between stays `f32`, as a half-precision
/// kernel with `f32` accumulation does). Its role is [`LayerRole::Float`], so inside a
/// quantized model it becomes a [`FloatIsland`](crate::ptq::FloatIsland).
#[derive(Debug, Clone)]
pub struct RoundedLayer {
    layer: Box<dyn Module>,
    precision: Precision,
}

impl RoundedLayer {
    /// Wraps `layer`; a weighted layer is rebuilt with its weight and bias rounded.
    ///
    /// # Errors
    /// Errors of rebuilding the weighted layer.
    pub fn new(layer: &dyn Module, precision: Precision) -> Result<Self> {
        let layer = match layer.role() {
            LayerRole::Weighted(w) => {
                let core = w.core();
                let mut rounded = WeightedCore::new(
                    precision.round_all(core.weight()),
                    core.bias().map(|b| precision.round_all(b)),
                )?;
                if core.has_relu() {
                    rounded = rounded.with_relu();
                }
                w.with_core(rounded)?
            }
            _ => layer.box_clone(),
        };
        Ok(RoundedLayer { layer, precision })
    }

    /// The precision.
    #[must_use]
    pub fn precision(&self) -> Precision {
        self.precision
    }
}

impl Module for RoundedLayer {
    fn kind(&self) -> &'static str {
        match self.precision {
            Precision::F16 => "RoundedLayerF16",
            Precision::BF16 => "RoundedLayerBF16",
            Precision::F32 => "RoundedLayerF32",
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_many(&[x])
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        let rounded: Vec<Activation> = inputs
            .iter()
            .map(|a| Activation::Float(self.precision.round_all(&a.to_float())))
            .collect();
        let refs: Vec<&Activation> = rounded.iter().collect();
        let y = self.layer.forward_many(&refs)?;
        Ok(Activation::Float(self.precision.round_all(&y.into_float())))
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
