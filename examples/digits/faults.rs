//! Faults injected into the digits model to show that the diagnosis names each one. Shared by
//! the digits example and the tests (`#[path]`-included there).

#![allow(dead_code)]

use ndarray::{ArrayD, Axis};
use qnumeric::nn::quantized::QuantizedLinear;
use qnumeric::nn::{Activation, LayerRole, Model, Module, Sequential, WeightRef};
use qnumeric::observers::MinMaxObserver;
use qnumeric::ptq::{PtqConfig, QConfig};
use qnumeric::{QDType, QScheme, QSpec, QuantError, Result};

/// The evaluation images with every `1/every`-th one made `factor` times brighter (far
/// outside the calibrated range); returns the images and the indices changed.
pub fn bright_images(x: &ArrayD<f32>, every: usize, factor: f32) -> (ArrayD<f32>, Vec<usize>) {
    let mut out = x.clone();
    let mut changed = Vec::new();
    for (i, mut img) in out.axis_iter_mut(Axis(0)).enumerate() {
        if i % every == 0 {
            img.mapv_inplace(|v| v * factor);
            changed.push(i);
        }
    }
    (out, changed)
}

/// PyTorch's x86 configuration with `layer`'s weights quantized per tensor on 3 bits
/// (`-4..=3`): too few bits for any input.
pub fn coarse_weights(layer: &str) -> Result<PtqConfig> {
    let spec = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8).with_quant_range(-4, 3)?;
    let base = QConfig::x86_default();
    let coarse = QConfig::from_boxed(
        base.activation().box_clone(),
        Box::new(MinMaxObserver::new(spec)?),
    );
    Ok(PtqConfig::default().with_layer(layer, coarse))
}

/// A quantized linear layer whose kernel adds one to the output zero point: a subtle
/// implementation bug (one quantum on every output). Its reference is the correct layer's.
#[derive(Debug, Clone)]
pub struct ZeroPointOffByOne(pub QuantizedLinear);

impl Module for ZeroPointOffByOne {
    fn kind(&self) -> &'static str {
        "BuggyQuantizedLinear"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        let y = self.0.forward(x)?;
        let q = y.as_quantized()?;
        let data = q.int_repr().mapv(|v| v.saturating_add(1));
        Ok(Activation::Quantized(
            qnumeric::QuantizedTensor::from_parts(data, q.params().clone())?,
        ))
    }

    fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
        self.0.reference(inputs)
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        self.0.weight()
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.0.bias()
    }
}

/// Replaces the quantized linear layer `layer` of an int8 model by its buggy twin.
pub fn buggy_kernel(int8: &mut Sequential, layer: &str) -> Result<()> {
    let q = int8
        .get::<QuantizedLinear>(layer)
        .ok_or_else(|| QuantError::NotFound {
            op: "buggy_kernel",
            what: "quantized linear layer",
            name: layer.to_string(),
        })?
        .clone();
    int8.replace_layer(layer, Box::new(ZeroPointOffByOne(q)))?;
    Ok(())
}

/// The first `n` calibration images of one digit, and their labels.
pub fn one_digit(
    calib: &ArrayD<f32>,
    labels: &[i64],
    digit: i64,
    n: usize,
) -> (ArrayD<f32>, Vec<i64>) {
    let idx: Vec<usize> = labels
        .iter()
        .enumerate()
        .filter(|&(_, &l)| l == digit)
        .map(|(i, _)| i)
        .take(n)
        .collect();
    (calib.select(Axis(0), &idx), vec![digit; idx.len()])
}
