//! The digits CNN end to end: load the PyTorch model and data, float accuracy, Conv-BN-ReLU
//! fusion, post-training quantization with PyTorch's x86 default config (200 calibration
//! images), int8 accuracy, per-layer weight SQNR and logits SQNR next to PyTorch's figures.
//!
//! ```text
//! cargo run --release --features safetensors --example digits
//! ```

use std::time::Instant;

use ndarray::{ArrayD, Axis};
use qnumeric::fusion::fuse_auto;
use qnumeric::nn::{argmax_rows, Activation, Model, Sequential};
use qnumeric::ptq::{prepare, PtqConfig};
use qnumeric::state_dict::{digits_cnn, StateDict};
use qnumeric::{sqnr, QuantError, Result};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits");

fn accuracy(
    model: &Sequential,
    images: &ArrayD<f32>,
    labels: &ArrayD<i32>,
) -> Result<(f64, ArrayD<f32>)> {
    let logits = model
        .forward(Activation::Float(images.clone()))?
        .into_float()?;
    let pred = argmax_rows(&logits)?;
    let hits = pred
        .iter()
        .zip(labels.iter())
        .filter(|(&p, &l)| p as i32 == l)
        .count();
    Ok((hits as f64 / labels.len() as f64, logits))
}

fn main() -> Result<()> {
    let t0 = Instant::now();
    let sd = StateDict::load(format!("{DIR}/digits_cnn.safetensors"))?;
    let data = StateDict::load(format!("{DIR}/digits_data.safetensors"))?;
    let reference =
        std::fs::read_to_string(format!("{DIR}/pytorch_reference.json")).map_err(|e| {
            QuantError::Format {
                op: "digits",
                detail: e.to_string(),
            }
        })?;
    let reference: serde_json::Value =
        serde_json::from_str(&reference).map_err(|e| QuantError::Format {
            op: "digits",
            detail: e.to_string(),
        })?;
    let pt = |path: &[&str]| -> f64 {
        let mut j = &reference;
        for k in path {
            match j.get(k) {
                Some(v) => j = v,
                None => return f64::NAN,
            }
        }
        j.as_f64().unwrap_or(f64::NAN)
    };

    let test_x = data.f32("test_images")?;
    let test_y = data.i32("test_labels")?;
    let calib = data.f32("calib_images")?;

    let float_model = digits_cnn(&sd)?;
    let (float_acc, _) = accuracy(&float_model, test_x, test_y)?;

    let mut fused = float_model.clone();
    let groups = fuse_auto(&mut fused)?;
    let (fused_acc, fused_logits) = accuracy(&fused, test_x, test_y)?;

    let mut prepared = prepare(fused.clone(), &PtqConfig::default())?;
    prepared.calibrate(calib)?;
    let act: Vec<(String, f32, i32)> = ["quant", "conv1", "conv2", "fc1", "fc2"]
        .iter()
        .map(|n| {
            prepared
                .output_qparams(n)
                .map(|p| (n.to_string(), p.scale(), p.zero_point()))
        })
        .collect::<Result<_>>()?;
    let int8 = prepared.convert()?;
    let (int8_acc, int8_logits) = accuracy(&int8, test_x, test_y)?;
    let logits_sqnr = sqnr(&fused_logits, &int8_logits)?;
    let elapsed = t0.elapsed();

    println!(
        "fused: {:?}",
        groups.iter().map(|g| g.names.join("+")).collect::<Vec<_>>()
    );
    println!("{:<28}{:>12}{:>12}", "", "qnumeric", "PyTorch");
    println!(
        "{:<28}{:>12.4}{:>12.4}",
        "float accuracy",
        float_acc,
        pt(&["float_accuracy"])
    );
    println!(
        "{:<28}{:>12.4}{:>12.4}",
        "fused accuracy",
        fused_acc,
        pt(&["fused_float_accuracy"])
    );
    println!(
        "{:<28}{:>12.4}{:>12.4}",
        "int8 accuracy",
        int8_acc,
        pt(&["int8_accuracy"])
    );
    println!(
        "{:<28}{:>12.2}{:>12.2}",
        "logits SQNR (dB)",
        logits_sqnr,
        pt(&["logits_sqnr_db"])
    );
    for (layer, key) in [
        ("conv1", "conv1.weight"),
        ("conv2", "conv2.weight"),
        ("fc1", "fc1._packed_params._packed_params"),
        ("fc2", "fc2._packed_params._packed_params"),
    ] {
        let wf = fused
            .layer(layer)
            .and_then(|l| l.weight())
            .ok_or(QuantError::NotFound {
                op: "digits",
                what: "weight",
                name: layer.into(),
            })?
            .to_float()?;
        let wq = int8
            .layer(layer)
            .and_then(|l| l.weight())
            .ok_or(QuantError::NotFound {
                op: "digits",
                what: "weight",
                name: layer.into(),
            })?
            .to_float()?;
        let label = format!("{layer} weight SQNR (dB)");
        println!(
            "{label:<28}{:>12.4}{:>12.4}",
            sqnr(&wf, &wq)?,
            pt(&["weight_sqnr_db", key])
        );
    }
    for (name, scale, zp) in &act {
        let label = format!("{name} output scale / zp");
        println!(
            "{label:<28}{:>12}{:>12}",
            format!("{scale:.6}/{zp}"),
            format!(
                "{:.6}/{}",
                pt(&["activation_qparams", name, "scale"]),
                pt(&["activation_qparams", name, "zero_point"])
            )
        );
    }
    let per_image =
        elapsed.as_secs_f64() / (3 * test_x.len_of(Axis(0)) + calib.len_of(Axis(0))) as f64;
    println!(
        "total {:.3} s ({:.1} µs per image pass)",
        elapsed.as_secs_f64(),
        per_image * 1e6
    );
    Ok(())
}
