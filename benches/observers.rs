//! Observer throughput (bytes read per second) next to the memory baselines of the same run;
//! the histogram parameter search (PyTorch's L2 search over 2048 bins) timed on its own.
//! Ratios to `baseline/read` are recorded in docs/observers.md.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};
use qnumeric::*;
use std::hint::black_box;

fn spec(s: QScheme) -> QSpec {
    QSpec::new(s, QDType::QInt8)
}

fn observers(c: &mut Criterion) {
    for &n in &common::SIZES {
        let label = if n >= 1 << 24 { "16M" } else { "1M" };
        let mut g = c.benchmark_group(format!("observers/{label}"));
        g.sample_size(10);
        common::baselines(&mut g, n);
        let flat = ArrayD::from_shape_vec(IxDyn(&[n]), common::data(n, 1)).expect("shape");
        // Weight-like [out, in]: channels on axis 0 (row reduction) and on the last axis.
        let rows = 1024;
        let w = flat
            .clone()
            .into_shape_with_order(IxDyn(&[rows, n / rows]))
            .expect("shape");
        let wt = flat
            .clone()
            .into_shape_with_order(IxDyn(&[n / rows, rows]))
            .expect("shape");
        g.throughput(Throughput::Bytes((n * 4) as u64));

        let pt = spec(QScheme::PerTensorAffine);
        let pc = spec(QScheme::PerChannelAffine);
        let mut cases: Vec<(&str, &ArrayD<f32>, Box<dyn Observer>)> = vec![
            (
                "minmax",
                &flat,
                Box::new(MinMaxObserver::new(pt).expect("ok")),
            ),
            (
                "moving_average",
                &flat,
                Box::new(MinMaxObserver::moving_average(pt, 0.01).expect("ok")),
            ),
            (
                "per_channel/axis0",
                &w,
                Box::new(PerChannelMinMaxObserver::new(pc, 0).expect("ok")),
            ),
            (
                "per_channel/axis-1",
                &wt,
                Box::new(PerChannelMinMaxObserver::new(pc, -1).expect("ok")),
            ),
            (
                "moving_average_per_channel/axis0",
                &w,
                Box::new(PerChannelMinMaxObserver::moving_average(pc, 0, 0.01).expect("ok")),
            ),
            (
                "histogram/observe",
                &flat,
                Box::new(HistogramObserver::new(pt).expect("ok")),
            ),
            (
                "percentile/observe",
                &flat,
                Box::new(observers::PercentileObserver::new(pt, 99.99).expect("ok")),
            ),
        ];
        for (name, x, obs) in &mut cases {
            // Feed once so that later batches hit the steady state (range known).
            obs.observe(x.view()).expect("ok");
            g.bench_function(BenchmarkId::new(*name, label), |b| {
                b.iter(|| obs.observe(black_box(x.view())).expect("ok"))
            });
        }
        g.finish();
    }

    // The L2 parameter search alone (cache bypassed by cloning a fresh observer).
    let mut g = c.benchmark_group("observers/qparams");
    g.sample_size(20);
    let x = ArrayD::from_shape_vec(IxDyn(&[1 << 20]), common::data(1 << 20, 3)).expect("shape");
    for s in [QScheme::PerTensorAffine, QScheme::PerTensorSymmetric] {
        let mut h = HistogramObserver::new(spec(s)).expect("ok");
        for k in 0..4 {
            let xk = x.mapv(|v| v * (1.0 + 0.1 * k as f32));
            h.observe(xk.view()).expect("ok");
        }
        g.bench_function(BenchmarkId::new("histogram_l2_search", s.name()), |b| {
            b.iter_batched(
                || h.clone(),
                |fresh| black_box(fresh.qparams().expect("ok")),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    let mut e = observers::EntropyObserver::new(spec(QScheme::PerTensorSymmetric)).expect("ok");
    let mut m = observers::MseObserver::new(spec(QScheme::PerTensorSymmetric)).expect("ok");
    e.observe(x.view()).expect("ok");
    m.observe(x.view()).expect("ok");
    g.bench_function("entropy_kl_search", |b| {
        b.iter(|| black_box(e.qparams().expect("ok")))
    });
    g.bench_function("mse_search", |b| {
        b.iter(|| black_box(m.qparams().expect("ok")))
    });
    g.finish();
}

criterion_group!(benches, observers);
criterion_main!(benches);
