//! The Numeric Suite's cost on the digits model: a streaming cumulative + local comparison
//! of the int8 model with its fused float model over the 500 test images, against one float
//! plus one int8 forward pass over the same images. The ratio (target: at most 3) is
//! recorded in docs/numeric-suite.md.

#[path = "../examples/digits/model.rs"]
mod model;

mod common;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use qnumeric::fusion::fuse_modules;
use qnumeric::nn::{Activation, Model, Sequential};
use qnumeric::ns::{CompareOptions, compare_models};
use qnumeric::ptq::{PtqConfig, prepare};

fn models() -> (Sequential, Sequential, ndarray::ArrayD<f32>) {
    let d = model::Digits::load().expect("digits data");
    let mut fused = d.model.clone();
    fuse_modules(
        &mut fused,
        &[
            &["conv1", "bn1", "relu1"],
            &["conv2", "bn2", "relu2"],
            &["fc1", "relu3"],
        ],
    )
    .expect("fusion");
    let mut prepared = prepare(fused.clone(), &PtqConfig::default()).expect("prepare");
    prepared.calibrate(&d.calib).expect("calibrate");
    let int8 = prepared.convert().expect("convert");
    (fused, int8, d.test_x)
}

fn forward_both(fused: &Sequential, int8: &Sequential, x: &ndarray::ArrayD<f32>) {
    black_box(fused.forward(Activation::Float(x.clone())).expect("float"));
    black_box(int8.forward(Activation::Float(x.clone())).expect("int8"));
}

fn compare(fused: &Sequential, int8: &Sequential, x: &ndarray::ArrayD<f32>) {
    let options = CompareOptions::default().weights(false);
    black_box(compare_models(fused, int8, [x.clone()], options).expect("compare"));
}

fn ns(c: &mut Criterion) {
    let (fused, int8, x) = models();
    let mut g = c.benchmark_group("ns/digits500");
    g.sample_size(10);
    g.bench_function("forward float + int8", |b| {
        b.iter(|| forward_both(&fused, &int8, &x))
    });
    g.bench_function("compare cumulative + local (streaming)", |b| {
        b.iter(|| compare(&fused, &int8, &x))
    });
    g.finish();
    let base = common::best(10, || forward_both(&fused, &int8, &x));
    let cmp = common::best(10, || compare(&fused, &int8, &x));
    println!(
        "ns/digits500: forward float + int8 {:.2} ms, comparison {:.2} ms, ratio {:.2} (target <= 3)",
        base.as_secs_f64() * 1e3,
        cmp.as_secs_f64() * 1e3,
        cmp.as_secs_f64() / base.as_secs_f64()
    );
}

criterion_group!(benches, ns);
criterion_main!(benches);
