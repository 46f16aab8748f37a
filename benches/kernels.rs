//! Kernel throughput next to the memory baselines of the same run.
//!
//! Throughput counts bytes read plus bytes written. `scripts/bench_summary.py` turns the
//! results into ratios to `baseline/copy` (see docs/performance.md).

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::{bf16, f16};
use ndarray::{Array1, Array2};
use qnumeric::*;
use std::hint::black_box;
use std::time::Duration;

fn kernels(c: &mut Criterion) {
    for &n in &common::SIZES {
        let label = if n >= 1 << 24 { "16M" } else { "1M" };
        let mut g = c.benchmark_group(format!("kernels/{label}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        common::baselines(&mut g, n);

        let x = Array1::from(common::data(n, 1));
        let xh = x.mapv(f16::from_f32);
        let xb = x.mapv(bf16::from_f32);
        let qp = QParams::new(0.02, 128, QDType::QUInt8).expect("valid");
        let mut q = Array1::<u8>::zeros(n);
        let mut y = Array1::<f32>::zeros(n);
        let mut yh = Array1::<f16>::from_elem(n, f16::ZERO);
        let mut yb = Array1::<bf16>::from_elem(n, bf16::ZERO);
        let dy = Array1::from_elem(n, 1.0f32);

        g.throughput(Throughput::Bytes((n * 5) as u64));
        g.bench_function(BenchmarkId::new("quantize_into", "f32->u8"), |b| {
            b.iter(|| quantize_into(black_box(&x), &qp, &mut q).expect("ok"))
        });
        g.bench_function(BenchmarkId::new("dequantize_into", "u8->f32"), |b| {
            b.iter(|| dequantize_into(black_box(&q), &qp, &mut y).expect("ok"))
        });
        g.throughput(Throughput::Bytes((n * 3) as u64));
        g.bench_function(BenchmarkId::new("quantize_into", "f16->u8"), |b| {
            b.iter(|| quantize_into(black_box(&xh), &qp, &mut q).expect("ok"))
        });
        g.bench_function(BenchmarkId::new("quantize_into", "bf16->u8"), |b| {
            b.iter(|| quantize_into(black_box(&xb), &qp, &mut q).expect("ok"))
        });
        g.throughput(Throughput::Bytes((n * 8) as u64));
        g.bench_function(BenchmarkId::new("fake_quantize_into", "f32"), |b| {
            b.iter(|| fake_quantize_into(black_box(&x), &qp, &mut y).expect("ok"))
        });
        g.throughput(Throughput::Bytes((n * 4) as u64));
        g.bench_function(BenchmarkId::new("fake_quantize_into", "f16"), |b| {
            b.iter(|| fake_quantize_into(black_box(&xh), &qp, &mut yh).expect("ok"))
        });
        g.bench_function(BenchmarkId::new("fake_quantize_into", "bf16"), |b| {
            b.iter(|| fake_quantize_into(black_box(&xb), &qp, &mut yb).expect("ok"))
        });
        g.throughput(Throughput::Bytes((n * 12) as u64));
        g.bench_function(
            BenchmarkId::new("fake_quantize_backward_into", "f32"),
            |b| {
                b.iter(|| fake_quantize_backward_into(black_box(&x), &dy, &qp, &mut y).expect("ok"))
            },
        );
        let lsq = LearnableParams {
            scale: 0.02,
            zero_point: 3.0,
            quant_min: -128,
            quant_max: 127,
            grad_factor: 1.0,
        };
        g.throughput(Throughput::Bytes((n * 20) as u64));
        // Into caller buffers (the arithmetic), then allocating (adds the page faults of two
        // fresh 4-byte-per-element outputs, which dominate at 16M elements).
        let mut ly = Array1::<f32>::zeros(n);
        let mut ldx = Array1::<f32>::zeros(n);
        g.bench_function(BenchmarkId::new("lsq_forward_backward", "f32"), |b| {
            b.iter(|| {
                learnable_fake_quantize_into(black_box(&x), &lsq, &mut ly).expect("ok");
                let gr = learnable_fake_quantize_backward_into(&x, &dy, &lsq, &mut ldx);
                black_box(gr.expect("ok"))
            })
        });
        g.bench_function(BenchmarkId::new("lsq_forward_backward_alloc", "f32"), |b| {
            b.iter(|| {
                let y = learnable_fake_quantize(black_box(&x), &lsq).expect("ok");
                let gr = learnable_fake_quantize_backward(&x, &dy, &lsq).expect("ok");
                black_box((y, gr.dscale))
            })
        });

        // Per channel: axis 0 (rows) and the last axis (columns) of a 2-d view.
        let rows = 256;
        let x2 = x
            .view()
            .into_shape_with_order((rows, n / rows))
            .expect("shape");
        let mut q2 = Array2::<i8>::zeros((rows, n / rows));
        let mut y2 = Array2::<f32>::zeros((rows, n / rows));
        for (axis, name) in [(0usize, "axis0"), (1, "last_axis")] {
            let c = x2.shape()[axis];
            let scales: Vec<f32> = (0..c).map(|i| 0.01 + 0.0001 * i as f32).collect();
            let pc = PerChannelQParams::new(scales, vec![0; c], axis as isize, QDType::QInt8)
                .expect("valid");
            g.throughput(Throughput::Bytes((n * 5) as u64));
            g.bench_function(BenchmarkId::new("quantize_per_channel_into", name), |b| {
                b.iter(|| quantize_per_channel_into(black_box(&x2), &pc, &mut q2).expect("ok"))
            });
            g.bench_function(BenchmarkId::new("dequantize_per_channel_into", name), |b| {
                b.iter(|| dequantize_per_channel_into(black_box(&q2), &pc, &mut y2).expect("ok"))
            });
            g.throughput(Throughput::Bytes((n * 8) as u64));
            g.bench_function(
                BenchmarkId::new("fake_quantize_per_channel_into", name),
                |b| {
                    b.iter(|| {
                        fake_quantize_per_channel_into(black_box(&x2), &pc, &mut y2).expect("ok")
                    })
                },
            );
        }
        g.finish();
    }
}

fn metrics(c: &mut Criterion) {
    for &n in &common::SIZES {
        let label = if n >= 1 << 24 { "16M" } else { "1M" };
        let mut g = c.benchmark_group(format!("metrics/{label}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        common::baselines(&mut g, n);
        let x = Array1::from(common::data(n, 1));
        let y = Array1::from(common::data(n, 2));
        g.throughput(Throughput::Bytes((n * 8) as u64));
        g.bench_function("sqnr", |b| b.iter(|| sqnr(black_box(&x), &y).expect("ok")));
        g.bench_function("normalized_l2_error", |b| {
            b.iter(|| normalized_l2_error(black_box(&x), &y).expect("ok"))
        });
        g.bench_function("cosine_similarity", |b| {
            b.iter(|| cosine_similarity(black_box(&x), &y).expect("ok"))
        });
        g.finish();
    }
}

criterion_group!(benches, kernels, metrics);
criterion_main!(benches);
