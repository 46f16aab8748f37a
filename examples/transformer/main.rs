//! The diagnosis on a transformer, from dumps: a tiny BERT (two post-LN encoder layers, every
//! Linear dynamically quantized to int8 as PyTorch's `quantize_dynamic` does, padded batches)
//! is dumped in the `qnumeric-dump/2` format, healthy and with one Linear's weights on 3 bits;
//! `diagnose_dumps` reads the dumps in bounded memory and names the layer at fault, why, and
//! the remedies it measured by replaying that layer.
//!
//! ```text
//! cargo run --release --features safetensors --example transformer [OUT_DIR]
//! ```
//!
//! The dumps are written to `OUT_DIR` (default: the system's temporary directory), so
//! `qnumeric diagnose` can be run on them too.

#[path = "../../tests/models/tiny_bert.rs"]
mod tiny_bert;

use std::path::PathBuf;
use std::process::ExitCode;

use qnumeric::QuantError;
use qnumeric::diagnose::{DumpDiagnoseOptions, diagnose_dumps, diagnose_dumps_with_baseline};
use qnumeric::ns::DumpPair;
use tiny_bert::{BertConfig, DumpOptions, Quantization, bert_dump};

/// The Linear whose weights the faulty model quantizes to 3 bits.
const FAULTY: &str = "encoder.layer.1.intermediate.dense";

fn run() -> Result<(), String> {
    let dir = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join("qnumeric-transformer"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cfg = BertConfig::tiny();
    let healthy = bert_dump(&cfg, &DumpOptions::full(Quantization::Dynamic))?;
    let faulty = bert_dump(
        &cfg,
        &DumpOptions {
            inject_bits: Some((FAULTY.to_string(), 3)),
            ..DumpOptions::full(Quantization::Dynamic)
        },
    )?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };
    let float = write("float.safetensors", &healthy.float)?;
    let int8 = write("int8.safetensors", &healthy.quant)?;
    let int8_3bit = write("int8-3bit.safetensors", &faulty.quant)?;
    let e = |e: QuantError| e.to_string();

    println!("== the healthy int8 model\n");
    let pair = DumpPair::open(&float, &int8).map_err(e)?;
    let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).map_err(e)?;
    println!("{d}");
    if d.diagnosis.headline.is_some() {
        return Err(format!("the healthy model has a headline: {d}"));
    }

    println!(
        "== one Linear on 3-bit weights, against the float model and the healthy int8 model\n"
    );
    let pair = DumpPair::open(&float, &int8_3bit).map_err(e)?;
    let base = DumpPair::open(&float, &int8).map_err(e)?;
    let d =
        diagnose_dumps_with_baseline(&pair, &base, &DumpDiagnoseOptions::default()).map_err(e)?;
    println!("{d}");
    if d.diagnosis.headline.as_deref() != Some(FAULTY) {
        return Err(format!(
            "the headline is {:?}, not {FAULTY}",
            d.diagnosis.headline
        ));
    }
    let top = d
        .diagnosis
        .remedies
        .iter()
        .find(|r| r.layer.as_deref() == Some(FAULTY))
        .ok_or("no remedy for the faulty layer")?;
    println!("top remedy for {FAULTY}: {top}");
    println!(
        "\nthe dumps are in {}: qnumeric diagnose {} {} --baseline {}",
        dir.display(),
        float.display(),
        int8_3bit.display(),
        int8.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transformer example: {e}");
            ExitCode::FAILURE
        }
    }
}
