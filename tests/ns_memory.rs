//! Memory of the Numeric Suite's logs, measured by a global allocator that counts the live
//! heap bytes of the current thread (each test binary has one global allocator, so this file
//! holds only these tests): a streaming log holds the same few bytes after 10 and after 1000
//! batches, but for the per-sample numbers; a storing log holds no more than its cap; a dump
//! pair is diagnosed in the memory of a few layers' tensors, not the files'.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ndarray::{ArrayD, IxDyn};
use qnumeric::ns::NumericLog;
use qnumeric::{QDType, QParams};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    let _ = LIVE.try_with(|c| {
        let v = c.get() + n;
        c.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

/// Starts a new peak measurement at the current live bytes.
#[cfg(feature = "safetensors")]
fn reset_peak() -> isize {
    let now = live();
    PEAK.with(|p| p.set(now));
    now
}

#[cfg(feature = "safetensors")]
fn peak() -> isize {
    PEAK.with(Cell::get)
}

// SAFETY: forwards to the system allocator; only counts bytes on the current thread.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

const SAMPLES: usize = 4;
const VALUES: usize = 1024;
/// Bytes of one pushed pair (two `f32` tensors).
const PAIR_BYTES: isize = (2 * SAMPLES * VALUES * 4) as isize;

fn batch() -> (ArrayD<f32>, ArrayD<f32>) {
    let x = ArrayD::from_shape_fn(IxDyn(&[SAMPLES, VALUES]), |i| {
        ((i[0] * 31 + i[1] * 7) % 97) as f32 / 97.0
    });
    let y = x.mapv(|v| (v * 64.0).round() / 64.0);
    (x, y)
}

/// Heap bytes a log holds after `batches` pushes to each of three layers.
fn held_after(batches: usize, mut log: NumericLog) -> (isize, NumericLog) {
    let (x, y) = batch();
    let qp = QParams::new(1.0 / 64.0, 0, QDType::QUInt8).expect("qp");
    let before = live();
    for _ in 0..batches {
        for layer in ["conv1", "conv2", "fc"] {
            log.push(layer, &x, &y, Some(&qp)).expect("push");
        }
    }
    (live() - before, log)
}

#[test]
fn streaming_memory_does_not_grow_with_batches_beyond_per_sample_numbers() {
    let (h10, l10) = held_after(10, NumericLog::streaming());
    let (h1000, l1000) = held_after(1000, NumericLog::streaming());
    let extra_samples = 3 * (1000 - 10) * SAMPLES as isize;
    // The per-sample numbers: four 8-byte numbers per sample and layer, and the growth slack
    // of their vectors (at most doubling).
    let per_sample = 4 * 8;
    let growth = h1000 - h10;
    println!(
        "streaming: {h10} bytes after 10 batches, {h1000} after 1000 ({} bytes per extra sample; {PAIR_BYTES} bytes pushed per pair)",
        growth as f64 / extra_samples as f64
    );
    assert!(growth <= 2 * per_sample * extra_samples, "{growth}");
    // Everything else is fixed: far below one pushed pair per layer.
    let fixed_10 = h10 - l10.stats_heap_bytes() as isize;
    let fixed_1000 = h1000 - l1000.stats_heap_bytes() as isize;
    assert_eq!(fixed_10, fixed_1000);
    assert!(fixed_10 < PAIR_BYTES, "{fixed_10}");
    assert_eq!(l1000.comparison("fc").expect("fc").samples.len(), 4000);
}

#[test]
fn storing_cap_bounds_the_memory() {
    let cap = 20 * PAIR_BYTES as usize; // 20 pairs of the 3000 pushed
    let (held, log) = held_after(1000, NumericLog::storing(cap));
    let stats = log.stats_heap_bytes() as isize;
    println!("storing: {held} bytes held with a cap of {cap} ({stats} in statistics)");
    assert!(held - stats <= cap as isize + 64 * 1024, "{held}");
    assert_eq!(log.stored_bytes(), cap);
    let kept: usize = ["conv1", "conv2", "fc"]
        .iter()
        .map(|l| log.stored(l).len())
        .sum();
    assert_eq!(kept, 20);
    let dropped: usize = ["conv1", "conv2", "fc"]
        .iter()
        .map(|l| log.dropped_batches(l))
        .sum();
    assert_eq!(dropped, 3000 - 20);
}

/// Diagnosing two dump files reads one layer's tensors at a time: the peak heap is a few
/// layers' tensors, not the files.
#[cfg(feature = "safetensors")]
#[test]
fn diagnosing_dump_files_holds_a_few_layers_not_the_files() {
    use std::collections::HashMap;

    use qnumeric::diagnose::{DumpDiagnoseOptions, diagnose_dumps};
    use qnumeric::ns::DumpPair;
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;

    const LAYERS: usize = 12;
    let (n, t, c) = (32, 16, 512); // 1 MiB of f32 per tensor
    let tensor_bytes = (n * t * c * 4) as isize;
    let dir = std::env::temp_dir().join(format!("qnumeric-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |path: &std::path::Path, quant: bool| {
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for l in 0..LAYERS {
            let value = |i: usize, extra: f32| {
                (((i * 31 + l * 7) % 97) as f32 / 97.0 - 0.5) * (1.0 + extra)
            };
            let out: Vec<u8> = (0..n * t * c)
                .flat_map(|i| value(i, if quant { 0.01 } else { 0.0 }).to_le_bytes())
                .collect();
            tensors.push((format!("l{l}"), out, vec![n, t, c]));
            if quant {
                let shadow: Vec<u8> = (0..n * t * c)
                    .flat_map(|i| value(i, 0.0).to_le_bytes())
                    .collect();
                tensors.push((format!("l{l}:shadow"), shadow, vec![n, t, c]));
            }
        }
        let mask: Vec<u8> = (0..n * t)
            .flat_map(|i| f32::from(u8::from(i % t < 8 + (i / t) % 8)).to_le_bytes())
            .collect();
        tensors.push(("__mask__".into(), mask, vec![n, t]));
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(name, b, s)| {
                (
                    name.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
                )
            })
            .collect();
        let meta: HashMap<String, String> =
            [("format".to_string(), "qnumeric-dump/2".to_string())].into();
        safetensors::serialize_to_file(views, Some(meta), path).expect("write");
    };
    let (fp, qp) = (dir.join("float.safetensors"), dir.join("quant.safetensors"));
    write(&fp, false);
    write(&qp, true);
    let files = (std::fs::metadata(&fp).expect("f").len()
        + std::fs::metadata(&qp).expect("q").len()) as isize;
    let before = reset_peak();
    let pair = DumpPair::open(&fp, &qp).expect("open");
    let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
    let held = peak() - before;
    drop(pair);
    println!(
        "dump diagnosis: peak {held} bytes for {files} bytes of files ({} layers of {tensor_bytes}-byte tensors)",
        LAYERS
    );
    assert_eq!(d.diagnosis.layers.len(), LAYERS);
    assert!(
        held < 8 * tensor_bytes,
        "peak {held} bytes, tensors of {tensor_bytes}"
    );
    assert!(held < files / 4, "peak {held} bytes, files of {files}");
    let _ = std::fs::remove_dir_all(&dir);
}
