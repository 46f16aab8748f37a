//! The shipped digits CNN (`data/digits`): its architecture, its data and PyTorch's figures
//! for it. Shared by the digits example and the tests (`#[path]`-included there).

#![allow(dead_code)]

use std::path::Path;

use ndarray::{ArrayD, Ix2};
use qnumeric::classify::accuracy;
use qnumeric::nn::{
    Activation, BatchNorm, ConvGeometry, Flatten, MaxPool2d, Model, ReLU, Sequential,
};
use qnumeric::state_dict::StateDict;
use qnumeric::{QuantError, Result};

/// `data/digits` of this checkout (also from the benches' package, one level down).
pub fn dir() -> std::path::PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = here.join("data/digits");
    if d.exists() {
        d
    } else {
        here.join("../data/digits")
    }
}

/// The digits CNN (BatchNorm eps `1e-5`) between PyTorch-style stubs:
///
/// ```text
/// quant → conv1 → bn1 → relu1 → conv2 → bn2 → relu2 → pool → flatten → fc1 → relu3 → fc2 → dequant
/// ```
/// (convolutions 3×3, padding 1; `MaxPool2d(2)`; flatten in C, H, W order).
pub fn digits_cnn(sd: &StateDict) -> Result<Sequential> {
    let geo = ConvGeometry::default().padding(1, 1);
    Sequential::new()
        .with("conv1", sd.conv2d("conv1", geo)?)?
        .with(
            "bn1",
            BatchNorm::new_2d(sd.batch_norm_params("bn1", 1e-5)?)?,
        )?
        .with("relu1", ReLU)?
        .with("conv2", sd.conv2d("conv2", geo)?)?
        .with(
            "bn2",
            BatchNorm::new_2d(sd.batch_norm_params("bn2", 1e-5)?)?,
        )?
        .with("relu2", ReLU)?
        .with("pool", MaxPool2d::new(2))?
        .with("flatten", Flatten::default())?
        .with("fc1", sd.linear("fc1")?)?
        .with("relu3", ReLU)?
        .with("fc2", sd.linear("fc2")?)?
        .with_quant_stubs()
}

/// The model, the data and PyTorch's reference figures.
pub struct Digits {
    /// The float model (BatchNorm not fused).
    pub model: Sequential,
    /// `test_images` `[500, 1, 8, 8]`.
    pub test_x: ArrayD<f32>,
    /// `test_labels`.
    pub test_y: Vec<i64>,
    /// `calib_images` `[200, 1, 8, 8]`.
    pub calib: ArrayD<f32>,
    /// Their labels (the first 200 `train_labels`).
    pub calib_y: Vec<i64>,
    /// `train_images` `[1297, 1, 8, 8]` (the first 200 are `calib_images`).
    pub train_x: ArrayD<f32>,
    /// `train_labels`.
    pub train_y: Vec<i64>,
    /// `pytorch_reference.json`.
    pub reference: serde_json::Value,
}

fn format_err(detail: impl ToString) -> QuantError {
    QuantError::Format {
        op: "digits",
        detail: detail.to_string(),
    }
}

impl Digits {
    /// Loads everything from [`dir`].
    pub fn load() -> Result<Self> {
        let dir = dir();
        let sd = StateDict::load(dir.join("digits_cnn.safetensors"))?;
        let data = StateDict::load(dir.join("digits_data.safetensors"))?;
        let text = {
            let p = dir.join("pytorch_reference.json");
            std::fs::read_to_string(&p).map_err(|e| QuantError::io("digits", &p, e))?
        };
        Ok(Digits {
            model: digits_cnn(&sd)?,
            test_x: data.f32("test_images")?.clone(),
            test_y: data
                .i32("test_labels")?
                .iter()
                .map(|&l| i64::from(l))
                .collect(),
            calib: data.f32("calib_images")?.clone(),
            calib_y: data
                .i32("train_labels")?
                .iter()
                .take(200)
                .map(|&l| i64::from(l))
                .collect(),
            train_x: data.f32("train_images")?.clone(),
            train_y: data
                .i32("train_labels")?
                .iter()
                .map(|&l| i64::from(l))
                .collect(),
            reference: serde_json::from_str(&text)
                .map_err(|e| QuantError::parse("digits", "pytorch_reference.json", e))?,
        })
    }

    /// A number of the PyTorch reference by its path (NaN when missing).
    pub fn pytorch(&self, path: &[&str]) -> f64 {
        let mut j = &self.reference;
        for k in path {
            match j.get(k) {
                Some(v) => j = v,
                None => return f64::NAN,
            }
        }
        j.as_f64().unwrap_or(f64::NAN)
    }
}

/// Top-1 accuracy of a model on images, with its logits.
pub fn evaluate<M: Model + ?Sized>(
    model: &M,
    images: &ArrayD<f32>,
    labels: &[i64],
) -> Result<(f64, ArrayD<f32>)> {
    let logits = model
        .forward(Activation::Float(images.clone()))?
        .into_float();
    let l2 = logits
        .view()
        .into_dimensionality::<Ix2>()
        .map_err(format_err)?;
    Ok((accuracy(&l2, labels)?, logits))
}
