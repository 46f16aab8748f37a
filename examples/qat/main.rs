//! Quantization-aware training of the digits CNN at narrow widths: float accuracy, PTQ
//! accuracy, QAT accuracy after a few epochs (per-channel weights, every width run through the
//! same fake quantization), the int8 model `convert` builds after QAT; then the diagnosis of
//! the 4-bit PTQ model, which measures QAT as a remedy with its gain and the time it took.
//!
//! ```text
//! cargo run --release --features safetensors --example qat
//! ```

#[path = "../digits/model.rs"]
mod model;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ndarray::ArrayD;
use qnumeric::diagnose::{Change, DiagnoseOptions, EvalData, QatTrial, Quantized, diagnose};
use qnumeric::fusion::fuse_auto;
use qnumeric::nn::{Activation, Model, Sequential};
use qnumeric::observers::{MinMaxObserver, PerChannelMinMaxObserver};
use qnumeric::ptq::{PtqConfig, QConfig, prepare};
use qnumeric::qat::{QatAction, QatConfig, QatModel, QatObjective, QatSchedule, prepare_qat};
use qnumeric::{QDType, QScheme, QSpec, Result, sqnr};

/// The fake-quantized model prepared at these widths with its ranges set as PTQ sets them:
/// one pass over the calibration images with fake quantization off.
fn calibrated(
    fused: &Sequential,
    calib: &ArrayD<f32>,
    bits: (u8, u8),
) -> Result<QatModel<Sequential>> {
    let qat = prepare_qat(fused.clone(), &QatConfig::with_bits(bits.0, bits.1)?)?;
    qat.apply(QatAction::DisableFakeQuant);
    qat.model().forward(Activation::Float(calib.clone()))?;
    qat.apply(QatAction::EnableFakeQuant);
    Ok(qat)
}

/// Accuracy and logits SQNR against the float logits.
fn score<M: Model + ?Sized>(
    m: &M,
    d: &model::Digits,
    float_logits: &ArrayD<f32>,
) -> Result<(f64, f64)> {
    let (acc, logits) = model::evaluate(m, &d.test_x, &d.test_y)?;
    Ok((acc, sqnr(float_logits, &logits)?))
}

/// PTQ's configuration at these widths (min/max activations, per-channel min/max weights),
/// for the diagnosis.
fn ptq_config(bits: (u8, u8)) -> Result<PtqConfig> {
    let act = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8)
        .with_quant_range(0, (1 << bits.0) - 1)?;
    let half = 1i64 << (bits.1 - 1);
    let w = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8)
        .with_quant_range(-half, half - 1)?;
    Ok(PtqConfig::new(QConfig::new(
        MinMaxObserver::new(act)?,
        PerChannelMinMaxObserver::new(w, 0)?,
    )))
}

fn main() -> Result<ExitCode> {
    let started = Instant::now();
    let d = model::Digits::load()?;
    let mut fused = d.model.clone();
    fuse_auto(&mut fused)?;
    let (float_acc, float_logits) = model::evaluate(&fused, &d.test_x, &d.test_y)?;
    println!(
        "digits CNN, BatchNorm fused; float accuracy {float_acc:.4} on {} test images",
        d.test_y.len()
    );
    println!(
        "QAT: {} training images, cross-entropy, Adam; observers frozen after epoch 1\n",
        d.train_y.len()
    );

    let schedule = QatSchedule {
        epochs: 3,
        batch_size: 32,
        learning_rate: 3e-4,
        freeze_observers_after: Some(1),
        time_budget: None,
        seed: 1,
    };
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "a/w bits", "PTQ acc", "PTQ dB", "QAT acc", "QAT dB", "int8 acc", "recovered", "QAT s"
    );
    let mut ok = true;
    for bits in [(4u8, 4u8), (3, 3), (4, 2), (2, 2)] {
        let ptq = calibrated(&fused, &d.calib, bits)?;
        ptq.apply(QatAction::DisableObserver);
        let (ptq_acc, ptq_db) = score(ptq.model(), &d, &float_logits)?;

        let mut qat = calibrated(&fused, &d.calib, bits)?;
        let run = qat.fine_tune(&d.train_x, QatObjective::Labels(&d.train_y), &schedule)?;
        qat.apply(QatAction::DisableObserver);
        let (qat_acc, qat_db) = score(qat.model(), &d, &float_logits)?;
        let int8 = qat.convert()?;
        let (int8_acc, _) = score(&int8, &d, &float_logits)?;
        let lost = float_acc - ptq_acc;
        let recovered = if lost > 0.0 {
            format!("{:.0} %", 100.0 * (qat_acc - ptq_acc) / lost)
        } else {
            "nothing lost".into()
        };
        // The goal: QAT wins back at least half of what PTQ lost (where it lost more than
        // one test image).
        if lost > 1.0 / d.test_y.len() as f64 + 1e-9 && qat_acc - ptq_acc < lost / 2.0 {
            ok = false;
        }
        println!(
            "{:<12} {ptq_acc:>9.4} {ptq_db:>9.2} {qat_acc:>9.4} {qat_db:>9.2} {int8_acc:>9.4} {recovered:>10} {:>7.1}",
            format!("{}/{}", bits.0, bits.1),
            run.seconds
        );
    }
    println!(
        "\n(int8 acc: the model `convert` builds after QAT; its int8 layers requantize outputs over\n 0..=255 as PyTorch's do, so at narrow widths it is not the fake-quantized model.)"
    );

    // The diagnosis of the PTQ model at 4-bit activations and 4-bit, then 2-bit, weights:
    // QAT is measured as a remedy (distillation on the 200 calibration images, the PTQ ranges
    // kept, 20 epochs within a 20 s budget).
    for bits in [(4u8, 4u8), (4, 2)] {
        println!(
            "\n== the diagnosis of the PTQ model at {}/{} bits, measuring QAT",
            bits.0, bits.1
        );
        let cfg = ptq_config(bits)?;
        let mut prepared = prepare(fused.clone(), &cfg)?;
        prepared.calibrate(&d.calib)?;
        let int8 = prepared.convert()?;
        let options = DiagnoseOptions {
            calib_labels: Some((d.calib_y.clone(), Some(10))),
            qat: Some(QatTrial {
                config: QatConfig::with_bits(bits.0, bits.1)?,
                schedule: QatSchedule {
                    epochs: 20,
                    freeze_observers_after: Some(0),
                    time_budget: Some(Duration::from_secs(20)),
                    ..schedule.clone()
                },
            }),
            ..DiagnoseOptions::default()
        };
        let eval = EvalData {
            inputs: &d.test_x,
            labels: Some(&d.test_y),
        };
        let diagnosis = diagnose(
            &fused,
            Quantized::Model(&int8, cfg),
            &d.calib,
            eval,
            &options,
        )?;
        if bits.1 == 2 {
            print!("{diagnosis}");
        } else {
            println!(
                "verdict {}, int8 against float: {}",
                diagnosis.verdict, diagnosis.quality
            );
        }
        let qat = diagnosis
            .remedies
            .iter()
            .position(|r| r.change == Change::QuantizationAwareTraining)
            .map(|i| (Some(i + 1), &diagnosis.remedies[i]))
            .or_else(|| {
                diagnosis
                    .rejected
                    .iter()
                    .find(|r| r.change == Change::QuantizationAwareTraining)
                    .map(|r| (None, r))
            });
        match qat {
            Some((rank, r)) => println!(
                "QAT: {} ({})",
                match (rank, r.gain_db()) {
                    (Some(k), Some(g)) => format!("remedy {k}, measured {g:+.2} dB"),
                    (None, Some(g)) =>
                        format!("measured {g:+.2} dB: gained too little to be a remedy"),
                    (_, None) => "named, not measured".to_string(),
                },
                r.evidence
            ),
            None => {
                println!("QAT was not considered (verdict {})", diagnosis.verdict);
                ok = false;
            }
        }
    }
    println!("\nwhole example: {:.1} s", started.elapsed().as_secs_f64());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
