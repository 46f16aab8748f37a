//! The whole method on the digits CNN: load the PyTorch model and data, fuse Conv-BN-ReLU,
//! calibrate on 200 images with PyTorch's x86 default config, quantize, compare with PyTorch's
//! own figures, diagnose the int8 model (report printed, HTML page written), then inject four
//! faults and show that the diagnosis names each one:
//! - 5% of the evaluation images far brighter than the calibrated range (data-sensitive);
//! - conv2's weights per tensor on 3 bits (data-insensitive, at conv2);
//! - fc1's int8 kernel with its output zero point off by one (implementation);
//! - calibration on 10 images of a single digit (the calibration audit).
//!
//! For the coarse weights it then applies the top remedy to the configuration, quantizes
//! again and checks that the model reaches the measured gain.
//!
//! ```text
//! cargo run --release --features safetensors --example digits
//! ```

use std::time::Instant;

use ndarray::Axis;
use qnumeric::diagnose::{
    DiagnoseOptions, Diagnoser, Diagnosis, EvalData, QuantPlan, Quantized, Verdict, diagnose,
};
use qnumeric::fusion::fuse_auto;
use qnumeric::nn::Model;
use qnumeric::ptq::{PtqConfig, prepare};
use qnumeric::{QuantError, Result, sqnr};

mod faults;
mod model;
use model::{Digits, evaluate};

/// Shows a long step while it runs, then its duration.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::io::Write as _;
    print!("  {what} ...");
    let _ = std::io::stdout().flush();
    let t = Instant::now();
    let r = f()?;
    println!(" {:.1} s", t.elapsed().as_secs_f64());
    Ok(r)
}

/// Writes an HTML page next to the build (`target/`), returning its path.
fn write_page(name: &str, d: &Diagnosis) -> Result<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).map_err(|e| QuantError::io("digits", &dir, e))?;
    let path = dir.join(name);
    std::fs::write(&path, d.to_html()).map_err(|e| QuantError::io("digits", &path, e))?;
    Ok(path)
}

fn summary(d: &Diagnosis, top: usize) {
    println!(
        "  verdict {:<16} first layer {:<8} int8 {}",
        d.verdict.name(),
        d.first_layer.as_deref().unwrap_or("-"),
        d.quality
    );
    for (i, r) in d.remedies.iter().take(top).enumerate() {
        println!("    {}. {r}", i + 1);
    }
}

fn main() -> Result<()> {
    let t0 = Instant::now();
    let d = Digits::load()?;
    let pt = |path: &[&str]| d.pytorch(path);
    let (test_x, test_y, calib) = (&d.test_x, &d.test_y, &d.calib);

    let float_model = d.model.clone();
    let (float_acc, _) = evaluate(&float_model, test_x, test_y)?;

    let mut fused = float_model.clone();
    let groups = fuse_auto(&mut fused)?;
    let (fused_acc, fused_logits) = evaluate(&fused, test_x, test_y)?;
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
    let (int8_acc, int8_logits) = evaluate(&int8, test_x, test_y)?;
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
            .to_float();
        let wq = int8
            .layer(layer)
            .and_then(|l| l.weight())
            .ok_or(QuantError::NotFound {
                op: "digits",
                what: "weight",
                name: layer.into(),
            })?
            .to_float();
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
        "load, fuse, PTQ and evaluation: {:.3} s ({:.1} µs per image pass)",
        elapsed.as_secs_f64(),
        per_image * 1e6
    );

    // The diagnosis of the int8 model, then of four injected faults.
    println!("\n== diagnosis of the int8 model (500 test images)");
    let eval = EvalData {
        inputs: test_x,
        labels: Some(test_y),
    };
    let opts = DiagnoseOptions {
        calib_labels: Some((d.calib_y.clone(), Some(10))),
        ..DiagnoseOptions::default()
    };
    let cfg = PtqConfig::default();
    let healthy = step(
        "compare, check kernels, audit calibration, measure remedies",
        || {
            diagnose(
                &fused,
                Quantized::Model(&int8, cfg.clone()),
                calib,
                eval,
                &opts,
            )
        },
    )?;
    print!("{healthy}");
    println!(
        "  HTML page: {}",
        write_page("digits-diagnosis.html", &healthy)?.display()
    );

    println!("\n== injected faults");
    let mut checks: Vec<(&str, String, bool)> = Vec::new();

    println!("1. every 20th test image 4x brighter than anything calibrated");
    let (bright_x, bright) = faults::bright_images(test_x, 20, 4.0);
    let bright_eval = EvalData {
        inputs: &bright_x,
        labels: Some(test_y),
    };
    let dg = step("diagnose", || {
        diagnose(
            &fused,
            Quantized::Model(&int8, cfg.clone()),
            calib,
            bright_eval,
            &opts,
        )
    })?;
    summary(&dg, 3);
    let worst_are_bright = dg.worst_samples.iter().all(|s| bright.contains(s));
    println!(
        "  worst samples {:?} all brightened: {worst_are_bright}",
        dg.worst_samples
    );
    checks.push((
        "bright outliers",
        format!(
            "{} at {}",
            dg.verdict,
            dg.first_layer.as_deref().unwrap_or("-")
        ),
        dg.verdict == Verdict::DataSensitive
            && dg.first_layer.as_deref() == Some("quant")
            && worst_are_bright,
    ));

    println!("2. conv2's weights per tensor on 3 bits");
    let coarse = faults::coarse_weights("conv2")?;
    let dg = step("quantize, diagnose, measure remedies", || {
        diagnose(
            &fused,
            Quantized::Config(coarse.clone()),
            calib,
            eval,
            &opts,
        )
    })?;
    summary(&dg, 4);
    println!(
        "  HTML page: {}",
        write_page("digits-fault-coarse-weights.html", &dg)?.display()
    );
    // Diagnose, take the top remedy, quantize again, check.
    let top = &dg.remedies[0];
    let plan = QuantPlan::new(coarse.clone()).apply(top)?;
    let fixed = plan.quantize(&fused, calib)?;
    let reached = Diagnoser::new(&fused, calib, eval)?.measure_model(&fixed)?;
    println!(
        "  applied the top remedy ({}): {reached} (measured by the diagnosis: {})",
        top.action(),
        top.quality().map_or("-".into(), |q| q.to_string())
    );
    checks.push((
        "top remedy applied",
        format!("{:.2} dB", reached.sqnr_db),
        top.quality() == Some(reached),
    ));
    let conv2 = dg
        .layers
        .iter()
        .find(|l| l.name == "conv2")
        .map(|l| l.verdict);
    checks.push((
        "coarse weights",
        format!(
            "{} at {}",
            dg.verdict,
            dg.first_layer.as_deref().unwrap_or("-")
        ),
        conv2 == Some(Verdict::DataInsensitive) && dg.first_layer.as_deref() == Some("conv2"),
    ));

    println!("3. fc1's int8 kernel adds one to its output zero point");
    let mut buggy = int8.clone();
    faults::buggy_kernel(&mut buggy, "fc1")?;
    let dg = step("diagnose", || {
        diagnose(
            &fused,
            Quantized::Model(&buggy, cfg.clone()),
            calib,
            eval,
            &opts,
        )
    })?;
    summary(&dg, 2);
    checks.push((
        "buggy kernel",
        format!(
            "{} at {}",
            dg.verdict,
            dg.first_layer.as_deref().unwrap_or("-")
        ),
        dg.verdict == Verdict::Implementation && dg.first_layer.as_deref() == Some("fc1"),
    ));

    println!("4. calibration on 10 images of the digit 3");
    let (one, labels) = faults::one_digit(calib, &d.calib_y, 3, 10);
    let one_opts = DiagnoseOptions {
        calib_labels: Some((labels, Some(10))),
        ..DiagnoseOptions::default()
    };
    let dg = step("quantize, diagnose", || {
        diagnose(
            &fused,
            Quantized::Config(cfg.clone()),
            &one,
            eval,
            &one_opts,
        )
    })?;
    summary(&dg, 2);
    for f in &dg.audit.findings {
        println!("  audit: {f}");
    }
    checks.push((
        "one-digit calibration",
        format!("audit: {} finding(s)", dg.audit.findings.len()),
        !dg.audit.is_sound(),
    ));

    println!("\n== does the diagnosis name each fault?");
    for (fault, got, ok) in &checks {
        println!("  {fault:<24} {got:<36} {}", if *ok { "yes" } else { "NO" });
    }
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
    if checks.iter().all(|c| c.2) && healthy.verdict == Verdict::Fine {
        Ok(())
    } else {
        Err(QuantError::Format {
            op: "digits",
            detail: "the diagnosis missed an injected fault".into(),
        })
    }
}
