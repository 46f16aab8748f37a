//! The digits CNN with its weights in the formats inference engines ship: int8 per row,
//! float8 (e4m3, per row), MXFP4, NVFP4, int4 with groups of 128 and GGML's Q4_0, compared
//! with the float model layer by layer (own SQNR of each layer, output SQNR, accuracy); then
//! the diagnosis of the MXFP4 model measures format changes per layer and model-wide, and
//! the top remedy, applied, reaches its measured figure.
//!
//! Layers whose rows are not whole blocks stay in f32 and are listed (conv1's rows are
//! `1·3·3 = 9` values; conv2's `16·3·3 = 144` are whole blocks of 16 but not of 32).
//!
//! ```text
//! cargo run --release --features safetensors --example formats
//! ```

#[path = "../digits/model.rs"]
mod model;

use std::process::ExitCode;

use qnumeric::diagnose::{Effect, FormatDiagnoseOptions, diagnose_formats};
use qnumeric::formats::{ElementFormat as _, Format};
use qnumeric::fusion::fuse_auto;
use qnumeric::nn::{Activation, Model};
use qnumeric::simulate::{FormatPlan, compare_plans};
use qnumeric::{Result, sqnr};

const FORMATS: [&str; 6] = [
    "int8",
    "fp8-e4m3-row",
    "mxfp4",
    "nvfp4",
    "int4-g128",
    "q4_0",
];

/// The error of every standard format on 256 rows of 4096 values, Gaussian and heavy-tailed
/// (a normal over the square root of a uniform: Student-t-like tails), as SQNR.
fn format_table() -> Result<()> {
    let mut rng = qnumeric::rng::Lcg::new(7);
    let mut normal = || {
        let u1 = f64::from(rng.unit_f32()).max(1e-9);
        let u2 = f64::from(rng.unit_f32());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    let n = 256 * 4096;
    let gauss: Vec<f32> = (0..n).map(|_| normal()).collect();
    let mut rng2 = qnumeric::rng::Lcg::new(8);
    let heavy: Vec<f32> = gauss
        .iter()
        .map(|g| g / rng2.unit_f32().max(0.01).sqrt())
        .collect();
    println!("== each format's error (SQNR, dB) on 256 × 4096 values\n");
    println!(
        "{:<19} {:>8} {:>10} {:>13}",
        "format", "bits/w", "Gaussian", "heavy-tailed"
    );
    for name in Format::NAMES {
        let f: Format = name.parse()?;
        let mut row = format!("{name:<19} {:>8.2}", f.bits_per_element());
        for x in [&gauss, &heavy] {
            let mut y = vec![0.0f32; n];
            f.fake_quantize_rows(x, 4096, &mut y)?;
            let a = ndarray::ArrayView1::from(x.as_slice());
            let b = ndarray::ArrayView1::from(y.as_slice());
            row.push_str(&format!(" {:>11.2}", sqnr(&a, &b)?));
        }
        println!("{row}");
    }
    println!();
    Ok(())
}

fn run() -> Result<()> {
    format_table()?;
    let digits = model::Digits::load()?;
    let mut float = digits.model.clone();
    fuse_auto(&mut float)?;
    let (float_acc, _) = model::evaluate(&float, &digits.test_x, &digits.test_y)?;
    println!("digits CNN (fused), 500 test images: float accuracy {float_acc:.4}\n");

    let plans: Vec<FormatPlan> = FORMATS
        .iter()
        .map(|n| Ok(FormatPlan::weights(n.parse::<Format>()?)))
        .collect::<Result<_>>()?;
    let table = compare_plans(&float, &plans, &digits.test_x, 100)?;
    println!("== weights in each format\n\n{table}");
    println!(
        "{:<16} {:>9} {:>9}  layers left in f32",
        "format", "bits/w", "accuracy"
    );
    for (name, p) in FORMATS.iter().zip(&table.plans) {
        let sim = p.plan.simulate(&float)?;
        let (acc, _) = model::evaluate(&sim.model, &digits.test_x, &digits.test_y)?;
        let kept: Vec<&str> = p.kept_float.iter().map(|(l, _)| l.as_str()).collect();
        println!(
            "{name:<16} {:>9.2} {acc:>9.4}  {}",
            p.bits_per_weight,
            if kept.is_empty() {
                "-".to_string()
            } else {
                kept.join(", ")
            }
        );
    }

    println!("\n== the diagnosis of the MXFP4 model, format changes measured end to end\n");
    let plan = FormatPlan::weights("mxfp4".parse()?);
    let options = FormatDiagnoseOptions::new(Format::weight_candidates());
    let d = diagnose_formats(&float, &plan, &digits.test_x, &options)?;
    println!("{d}");
    let Some(top) = d.remedies.first() else {
        println!("no remedy");
        return Ok(());
    };
    let Effect::Measured { quality, .. } = &top.effect else {
        println!("the top remedy was not measured: {top}");
        return Ok(());
    };
    let applied = plan.apply(top)?.simulate(&float)?.model;
    let y = applied
        .forward(Activation::Float(digits.test_x.clone()))?
        .into_float();
    let yf = float
        .forward(Activation::Float(digits.test_x.clone()))?
        .into_float();
    let got = sqnr(&yf, &y)?;
    println!(
        "top remedy applied: {got:.2} dB (measured {:.2} dB){}",
        quality.sqnr_db,
        if got == quality.sqnr_db {
            ", reproduced exactly"
        } else {
            ""
        }
    );
    for target in [25.0, 30.0] {
        if let Some(r) = d.cheapest_reaching(target) {
            println!("cheapest change reaching {target} dB: {r}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
