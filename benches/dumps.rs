//! The diagnosis of a transformer's dump pair: a MiniLM-shaped BERT (6 layers, hidden 384,
//! FFN 1536, 36 Linears; 64 padded sentences of 32 tokens) dynamically quantized, dumped in
//! the v2 format with inputs, shadow outputs and weights (272 MB float + 612 MB quantized),
//! diagnosed from the files (`diagnose_dumps`: every layer compared with the mask, every
//! Linear replayed for the implementation check). The baseline in the same run: reading both
//! files whole. Recorded in docs/performance.md; the target: seconds, not minutes.

#[path = "../tests/models/tiny_bert.rs"]
mod tiny_bert;

mod common;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use qnumeric::diagnose::{DumpDiagnoseOptions, diagnose_dumps};
use qnumeric::ns::DumpPair;
use tiny_bert::{BertConfig, DumpOptions, Quantization, bert_dump};

fn files() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join("qnumeric-bench-dumps");
    let (f, q) = (dir.join("float.safetensors"), dir.join("quant.safetensors"));
    if !(f.exists() && q.exists()) {
        std::fs::create_dir_all(&dir).expect("dir");
        let t = Instant::now();
        let d = bert_dump(
            &BertConfig::minilm_shaped(),
            &DumpOptions::full(Quantization::Dynamic),
        )
        .expect("dump");
        std::fs::write(&f, &d.float).expect("write");
        std::fs::write(&q, &d.quant).expect("write");
        eprintln!("dumps written in {:.1} s", t.elapsed().as_secs_f64());
    }
    (f, q)
}

fn diagnose(f: &PathBuf, q: &PathBuf) {
    let pair = DumpPair::open(f, q).expect("open");
    let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
    black_box(d);
}

fn read_both(f: &PathBuf, q: &PathBuf) {
    let a = std::fs::read(f).expect("read");
    let b = std::fs::read(q).expect("read");
    black_box(a.iter().step_by(4096).map(|&x| u64::from(x)).sum::<u64>());
    black_box(b.len());
}

fn dumps(c: &mut Criterion) {
    let (f, q) = files();
    let mut g = c.benchmark_group("dumps/minilm-shaped");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("diagnose_dumps", |b| b.iter(|| diagnose(&f, &q)));
    g.bench_function("baseline/read-both-files", |b| b.iter(|| read_both(&f, &q)));
    g.finish();
    let (d, r) = (
        common::best(3, || diagnose(&f, &q)),
        common::best(3, || read_both(&f, &q)),
    );
    println!(
        "diagnose_dumps {:.2} s, reading both files {:.2} s: {:.1}x the read",
        d.as_secs_f64(),
        r.as_secs_f64(),
        d.as_secs_f64() / r.as_secs_f64()
    );
}

criterion_group!(benches, dumps);
criterion_main!(benches);
