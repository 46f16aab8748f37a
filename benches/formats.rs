//! The formats' encode and decode next to the memory baseline of the same run (a copy of the
//! same f32 data), 4M elements (16 MB in): float8 casts and scaled float8, MX, NVFP4, int4
//! g128, NF4 and the GGML blocks. Prints a summary table (GB/s of f32 read, ratio to the copy,
//! ratio of the bytes moved to the copy's) before criterion's own figures.
//!
//! `FORMATS_ONLY=nf4,Q4_0` limits both to the jobs whose names contain one of the listed
//! pieces (the rest of the names are skipped).

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::ArrayView1;
use qnumeric::formats::Dequantize;
use qnumeric::formats::float8::{Float8Granularity, Float8Recipe, Float8Spec};
use qnumeric::formats::ggml::GgmlType;
use qnumeric::formats::groupwise::{GroupMapping, GroupwiseSpec};
use qnumeric::formats::minifloat::{self, MiniFloat};
use qnumeric::formats::mx::MxSpec;
use qnumeric::formats::nf4::Nf4Spec;
use qnumeric::formats::nvfp4::Nvfp4Spec;

const N: usize = 1 << 22;
const ROW: usize = 4096;

type Job<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn jobs<'a>(x: &'a [f32], codes: &'a mut Vec<u8>, out: &'a mut Vec<f32>) -> Vec<Job<'a>> {
    let q8 = GgmlType::Q8_0.quantize_rows(x, ROW).expect("q8");
    let q4 = GgmlType::Q4_0.quantize_rows(x, ROW).expect("q4");
    let mut q8_out = vec![0u8; q8.len()];
    let mut q4_out = vec![0u8; q4.len()];
    let mut y8 = vec![0.0f32; x.len()];
    let mut y4 = vec![0.0f32; x.len()];
    let e4 = MiniFloat::E4M3Fn;
    let e4codes: Vec<u8> = x.iter().map(|&v| e4.encode(v)).collect();
    let mut y = vec![0.0f32; x.len()];
    let mut e4into = vec![0u8; x.len()];
    let _ = (codes, out);
    // The decoders' inputs, encoded once, and one output buffer each.
    let mx = MxSpec::standard(MiniFloat::E2M1Fn)
        .quantize_rows(x, ROW)
        .expect("mx");
    let nv = Nvfp4Spec::new(true).quantize_rows(x, ROW).expect("nv");
    let g128 = GroupwiseSpec::int4(128, GroupMapping::Asymmetric)
        .expect("spec")
        .quantize_rows(x, ROW)
        .expect("g");
    let nf4 = Nf4Spec::new(64, 256)
        .expect("spec")
        .quantize(x)
        .expect("nf4");
    let (mut ymx, mut ynv, mut yg, mut ynf) = (y8.clone(), y8.clone(), y8.clone(), y8.clone());
    // The allocation-free encoders' targets (sized once, overwritten at each call).
    let mxfp8 = MxSpec::standard(MiniFloat::E4M3Fn);
    let (mut mx_into, mut mx8_into) = (mx.clone(), mxfp8.quantize_rows(x, ROW).expect("mx8"));
    let (mut nv_into, mut g_into, mut nf4_into) = (nv.clone(), g128.clone(), nf4.clone());
    let g128_spec = GroupwiseSpec::int4(128, GroupMapping::Asymmetric).expect("spec");
    // torchao's scaled float8 (per-row scales, the inference recipe).
    let f8 = Float8Spec::new(
        MiniFloat::E4M3Fn,
        Float8Recipe::Inference,
        Float8Granularity::Rowwise,
    )
    .expect("spec");
    let mut f8_into = f8.quantize_rows(x, ROW).expect("f8");
    let f8_t = f8_into.clone();
    let mut yf8 = y8.clone();
    let nf4_spec = Nf4Spec::new(64, 256).expect("spec");
    vec![
        (
            "cast f32->e4m3 (allocating)",
            Box::new(move || {
                black_box(minifloat::cast(&ArrayView1::from(x), e4));
            }) as Box<dyn FnMut()>,
        ),
        (
            "cast f32->e4m3 (into)",
            Box::new(move || {
                minifloat::cast_into(&ArrayView1::from(x), e4, &mut e4into).expect("same length");
                black_box(&e4into);
            }),
        ),
        (
            "decode e4m3->f32",
            Box::new(move || {
                minifloat::decode_into(&e4codes, e4, &mut y).expect("same length");
                black_box(&y);
            }),
        ),
        (
            "mxfp4 quantize",
            Box::new(move || {
                black_box(
                    MxSpec::standard(MiniFloat::E2M1Fn)
                        .quantize_rows(x, ROW)
                        .expect("mx"),
                );
            }),
        ),
        (
            "nvfp4 quantize",
            Box::new(move || {
                black_box(Nvfp4Spec::new(true).quantize_rows(x, ROW).expect("nv"));
            }),
        ),
        (
            "int4 g128 quantize",
            Box::new(move || {
                let s = GroupwiseSpec::int4(128, GroupMapping::Asymmetric).expect("spec");
                black_box(s.quantize_rows(x, ROW).expect("g"));
            }),
        ),
        (
            "nf4 quantize",
            Box::new(move || {
                black_box(
                    Nf4Spec::new(64, 256)
                        .expect("spec")
                        .quantize(x)
                        .expect("nf4"),
                );
            }),
        ),
        (
            "mxfp4 quantize into",
            Box::new(move || {
                let s = MxSpec::standard(MiniFloat::E2M1Fn);
                s.quantize_rows_into(x, ROW, &mut mx_into).expect("mx");
                black_box(&mx_into);
            }),
        ),
        (
            "mxfp8 quantize into",
            Box::new(move || {
                mxfp8
                    .quantize_rows_into(x, ROW, &mut mx8_into)
                    .expect("mx8");
                black_box(&mx8_into);
            }),
        ),
        (
            "nvfp4 quantize into",
            Box::new(move || {
                let s = Nvfp4Spec::new(true);
                s.quantize_rows_into(x, ROW, &mut nv_into).expect("nv");
                black_box(&nv_into);
            }),
        ),
        (
            "int4 g128 quantize into",
            Box::new(move || {
                g128_spec
                    .quantize_rows_into(x, ROW, &mut g_into)
                    .expect("g");
                black_box(&g_into);
            }),
        ),
        (
            "nf4 quantize into",
            Box::new(move || {
                nf4_spec.quantize_into(x, &mut nf4_into).expect("nf4");
                black_box(&nf4_into);
            }),
        ),
        (
            "fp8 rowwise quantize into",
            Box::new(move || {
                f8.quantize_rows_into(x, ROW, &mut f8_into).expect("f8");
                black_box(&f8_into);
            }),
        ),
        (
            "fp8 rowwise dequantize",
            Box::new(move || {
                f8_t.dequantize_into(&mut yf8).expect("same length");
                black_box(&yf8);
            }),
        ),
        (
            "mxfp4 dequantize",
            Box::new(move || {
                mx.dequantize_into(&mut ymx).expect("same length");
                black_box(&ymx);
            }),
        ),
        (
            "nvfp4 dequantize",
            Box::new(move || {
                nv.dequantize_into(&mut ynv).expect("same length");
                black_box(&ynv);
            }),
        ),
        (
            "int4 g128 dequantize",
            Box::new(move || {
                g128.dequantize_into(&mut yg).expect("same length");
                black_box(&yg);
            }),
        ),
        (
            "nf4 dequantize",
            Box::new(move || {
                nf4.dequantize_into(&mut ynf).expect("same length");
                black_box(&ynf);
            }),
        ),
        (
            "Q8_0 quantize",
            Box::new(move || {
                GgmlType::Q8_0.quantize_row(x, &mut q8_out).expect("q8");
                black_box(&q8_out);
            }),
        ),
        (
            "Q8_0 dequantize",
            Box::new(move || {
                GgmlType::Q8_0.dequantize_row(&q8, &mut y8).expect("q8");
                black_box(&y8);
            }),
        ),
        (
            "Q4_0 quantize",
            Box::new(move || {
                GgmlType::Q4_0.quantize_row(x, &mut q4_out).expect("q4");
                black_box(&q4_out);
            }),
        ),
        (
            "Q4_0 dequantize",
            Box::new(move || {
                GgmlType::Q4_0.dequantize_row(&q4, &mut y4).expect("q4");
                black_box(&y4);
            }),
        ),
    ]
}

/// Bytes per element of a job's encoded side (codes, scales and other per-block data as the
/// tensor stores them): with the 4 of the `f32` side, the bytes a job moves per element, as
/// the other benches count (the copy moves 8). The `÷ copy (bytes)` column is the ratio of
/// the two throughputs in bytes: 1 is an encoder or decoder at the copy's memory speed.
fn encoded_bytes(name: &str) -> f64 {
    let scale = |bytes: f64, per: f64| bytes / per;
    if name.contains("e4m3") || name.starts_with("fp8") {
        1.0
    } else if name.starts_with("mxfp") {
        1.0 + scale(1.0, 32.0)
    } else if name.starts_with("nvfp4") {
        1.0 + scale(1.0, 16.0)
    } else if name.starts_with("int4 g128") {
        // `i32` codes, an f32 scale and an `i32` zero point per group.
        4.0 + scale(8.0, 128.0)
    } else if name.starts_with("nf4") {
        // A code per byte, the f32 block maximum and its int8 double quantization per 64.
        1.0 + scale(5.0, 64.0)
    } else if name.starts_with("Q8_0") {
        scale(34.0, 32.0)
    } else if name.starts_with("Q4_0") {
        scale(18.0, 32.0)
    } else {
        4.0
    }
}

/// The jobs `FORMATS_ONLY` names (all of them when it is unset or empty).
fn selected(jobs: Vec<Job<'_>>) -> Vec<Job<'_>> {
    let only = std::env::var("FORMATS_ONLY").unwrap_or_default();
    let pieces: Vec<&str> = only.split(',').filter(|p| !p.is_empty()).collect();
    jobs.into_iter()
        .filter(|(name, _)| pieces.is_empty() || pieces.iter().any(|p| name.contains(p)))
        .collect()
}

fn formats(c: &mut Criterion) {
    let x = common::data(N, 5);
    let mut copy = vec![0.0f32; N];
    let base = common::best(5, || {
        copy.copy_from_slice(black_box(&x));
        black_box(&copy);
    });
    let gbs = |d: Duration| (N * 4) as f64 / d.as_secs_f64() / 1e9;
    println!("formats, {N} f32 in; baseline copy {:.2} GB/s", gbs(base));
    println!(
        "{:<28} {:>10} {:>10} {:>12} {:>14}",
        "work", "ms", "GB/s in", "copy / work", "÷ copy (bytes)"
    );
    let (mut codes, mut out) = (Vec::new(), Vec::new());
    for (name, mut f) in selected(jobs(&x, &mut codes, &mut out)) {
        let t = common::best(3, &mut f);
        let ratio = base.as_secs_f64() / t.as_secs_f64();
        println!(
            "{name:<28} {:>10.2} {:>10.2} {:>12.3} {:>14.3}",
            t.as_secs_f64() * 1e3,
            gbs(t),
            ratio,
            ratio * (4.0 + encoded_bytes(name)) / 8.0
        );
    }
    let mut g = c.benchmark_group("formats/4M");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes((N * 4) as u64));
    let (mut codes, mut out) = (Vec::new(), Vec::new());
    for (name, mut f) in selected(jobs(&x, &mut codes, &mut out)) {
        g.bench_function(name, |b| b.iter(&mut f));
    }
    g.finish();
}

criterion_group!(benches, formats);
criterion_main!(benches);
