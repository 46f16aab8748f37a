//! Shared bench helpers: deterministic data and the memory-bandwidth baselines every bench
//! group reports next to its kernels (a copy and a read-reduction over the same bytes).
#![allow(dead_code)]

use criterion::{BenchmarkGroup, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Sizes benched: 1M and 16M elements.
pub const SIZES: [usize; 2] = [1 << 20, 1 << 24];

/// Deterministic pseudo-normal data (sum of uniforms), no RNG dependency.
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = qnumeric::rng::Lcg::new(seed);
    r.next_u64();
    (0..n)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                acc += r.unit_f32() - 0.5;
            }
            acc * 1.7
        })
        .collect()
}

/// Adds `baseline/copy` (read `bytes/2`, write `bytes/2`; throughput counts both) and
/// `baseline/read` (a sum over `n` f32, throughput counts the bytes read) to a group.
pub fn baselines<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>, n: usize) {
    let src = data(n, 7);
    let mut dst = vec![0.0f32; n];
    g.throughput(Throughput::Bytes((n * 8) as u64));
    g.bench_function("baseline/copy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
    g.throughput(Throughput::Bytes((n * 4) as u64));
    g.bench_function("baseline/read", |b| {
        b.iter(|| {
            let mut acc = [0.0f32; 16];
            for c in black_box(&src).chunks_exact(16) {
                for k in 0..16 {
                    acc[k] += c[k];
                }
            }
            black_box(acc)
        })
    });
}

/// The fastest of `n` runs of `f` (for the one-line summaries the benches print next to
/// criterion's figures).
pub fn best(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}
