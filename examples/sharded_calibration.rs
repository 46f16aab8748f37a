//! Calibration sharded across processes.
//!
//! The parent starts one worker process per shard (this same program, run with
//! `--worker N`). Each worker observes its part of the calibration data and prints its
//! observers' state as JSON; the parent deserializes the states (deserialization validates
//! them, as the constructors do), merges them, and checks that the parameters equal those of
//! one process that observed all the data.
//!
//! ```text
//! cargo run --example sharded_calibration --features serde
//! ```

use std::error::Error;
use std::process::{Command, ExitCode, Stdio};

use ndarray::{Array2, ArrayD};
use qnumeric::{
    MinMaxObserver, MseObserver, Observer, PerChannelMinMaxObserver, QDType, QScheme, QSpec,
};

/// Number of worker processes.
const SHARDS: usize = 4;
/// Batches each worker observes.
const BATCHES_PER_SHARD: usize = 3;

/// The observers of one calibration run: an activation observer (PyTorch's x86 default range),
/// a per-channel weight-style observer along axis 1, and an MSE calibrator. A tuple of
/// serializable observers is itself serializable.
type Calibration = (MinMaxObserver, PerChannelMinMaxObserver, MseObserver);

fn fresh() -> qnumeric::Result<Calibration> {
    let activation = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8).with_reduce_range()?;
    let per_channel = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8);
    let mse = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8);
    Ok((
        MinMaxObserver::new(activation)?,
        PerChannelMinMaxObserver::new(per_channel, 1)?,
        MseObserver::new(mse)?,
    ))
}

/// Batch `b` of shard `s`: deterministic pseudo-random data, so that the workers and the
/// parent's single-process check see the same values.
fn batch(shard: usize, b: usize) -> ArrayD<f32> {
    let mut r = qnumeric::rng::Lcg::new(
        (shard as u64 * 1000 + b as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let spread = 1.0 + shard as f32; // each shard covers a different range
    Array2::from_shape_fn((64, 16), |_| (r.unit_f32() - 0.45) * spread).into_dyn()
}

/// Feeds one shard's batches.
fn observe_shard(c: &mut Calibration, shard: usize) -> qnumeric::Result<()> {
    for b in 0..BATCHES_PER_SHARD {
        let x = batch(shard, b);
        c.0.observe(&x)?;
        c.1.observe(&x)?;
        c.2.observe(&x)?;
    }
    Ok(())
}

/// A worker: observe the shard, print the state.
fn worker(shard: usize) -> Result<(), Box<dyn Error>> {
    let mut c = fresh()?;
    observe_shard(&mut c, shard)?;
    println!("{}", serde_json::to_string(&c)?);
    Ok(())
}

/// The parent: run the workers in parallel, merge their states, compare with one process.
fn parent() -> Result<bool, Box<dyn Error>> {
    let exe = std::env::current_exe()?;
    let children = (0..SHARDS)
        .map(|s| {
            Command::new(&exe)
                .args(["--worker", &s.to_string()])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut merged = fresh()?;
    for (s, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("worker {s} failed: {}", out.status).into());
        }
        let shard: Calibration = serde_json::from_slice(&out.stdout)?;
        println!(
            "shard {s}: {} bytes of state, activation range {:?}",
            out.stdout.len(),
            shard.0.min_max()
        );
        merged.0.merge(&shard.0)?;
        merged.1.merge(&shard.1)?;
        merged.2.merge(&shard.2)?;
    }

    let mut single = fresh()?;
    for s in 0..SHARDS {
        observe_shard(&mut single, s)?;
    }

    let pairs: [(&str, &dyn Observer, &dyn Observer); 3] = [
        (merged.0.name(), &merged.0, &single.0),
        (merged.1.name(), &merged.1, &single.1),
        (merged.2.name(), &merged.2, &single.2),
    ];
    let mut all_equal = true;
    for (name, m, one) in pairs {
        let (qm, qo) = (m.qparams()?, one.qparams()?);
        let equal = qm == qo;
        all_equal &= equal;
        println!(
            "{name}: merged {} single process",
            if equal { "==" } else { "!=" }
        );
        if !equal {
            println!("  merged: {qm:?}\n  single: {qo:?}");
        }
    }
    Ok(all_equal)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, shard] if flag == "--worker" => match shard.parse() {
            Ok(s) => worker(s).map(|()| true),
            Err(e) => Err(format!("bad shard `{shard}`: {e}").into()),
        },
        [] => parent(),
        _ => Err("usage: sharded_calibration [--worker N]".into()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("merged parameters differ from the single-process ones");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
