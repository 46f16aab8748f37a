//! The `_into` kernels allocate nothing: a counting global allocator watches them.
//! (Each test binary has one global allocator, so this file holds only allocation tests.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use half::f16;
use ndarray::{Array2, Array3};
use qnumeric::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls on the current thread.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn into_variants_do_not_allocate() {
    // Below the parallel threshold (the rayon feature's scheduler may allocate on its own
    // threads; the kernels themselves never do).
    let x = Array3::from_shape_fn((8, 16, 33), |(a, b, c)| {
        a as f32 * 0.3 - b as f32 * 0.11 + c as f32 * 0.07
    });
    let xh = x.mapv(f16::from_f32);
    let dy = Array3::from_elem(x.raw_dim(), 1.0f32);
    let qp = QParams::new(0.05, 3, QDType::QInt8).expect("valid");
    let mut q = Array3::<i8>::zeros(x.raw_dim());
    let mut y = Array3::<f32>::zeros(x.raw_dim());
    let mut yh = Array3::<f16>::from_elem(x.raw_dim(), f16::ZERO);
    // qint32 with a zero point at the end of the i32 range: the wide paths (exact differences).
    let qp32 = QParams::new(0.05, i32::MAX as i64, QDType::QInt32).expect("valid");
    let mut q32 = Array3::<i32>::zeros(x.raw_dim());
    let n = allocations(|| {
        quantize_into(&x, &qp32, &mut q32).expect("ok");
        dequantize_into(&q32, &qp32, &mut y).expect("ok");
        fake_quantize_into(&x, &qp32, &mut y).expect("ok");
        fake_quantize_backward_into(&x, &dy, &qp32, &mut y).expect("ok");
        quantize_into(&x, &qp, &mut q).expect("ok");
        quantize_into(&xh, &qp, &mut q).expect("ok");
        dequantize_into(&q, &qp, &mut y).expect("ok");
        fake_quantize_into(&x, &qp, &mut y).expect("ok");
        fake_quantize_into(&xh, &qp, &mut yh).expect("ok");
        fake_quantize_backward_into(&x, &dy, &qp, &mut y).expect("ok");
        fake_quantize_inplace(&mut y, &qp).expect("ok");
        let lsq = LearnableParams {
            scale: 0.05,
            zero_point: 1.0,
            quant_min: -128,
            quant_max: 127,
            grad_factor: 1.0,
        };
        learnable_fake_quantize_into(&x, &lsq, &mut y).expect("ok");
        learnable_fake_quantize_backward_into(&x, &dy, &lsq, &mut y).expect("ok");
        // Transposed views take the strided path.
        let mut qt = q.view_mut().reversed_axes();
        quantize_into(&x.t(), &qp, &mut qt).expect("ok");
    });
    assert_eq!(n, 0, "per-tensor _into kernels allocated {n} times");

    let n_params =
        PerChannelQParams::new(vec![0.02; 16], vec![1; 16], 1, QDType::QInt8).expect("valid");
    let last =
        PerChannelQParams::new(vec![0.02; 33], vec![-2; 33], -1, QDType::QInt8).expect("valid");
    let first = PerChannelQParams::new(vec![0.02; 8], vec![0; 8], 0, QDType::QInt8).expect("valid");
    let mut m = Array2::<i8>::zeros((33, 16));
    let pc16 =
        PerChannelQParams::new(vec![0.02; 16], vec![0; 16], 1, QDType::QInt8).expect("valid");
    let x2 = x.index_axis(ndarray::Axis(0), 0).reversed_axes();
    let wide = PerChannelQParams::new(vec![0.02; 33], vec![i32::MIN; 33], -1, QDType::QInt32)
        .expect("valid");
    let n = allocations(|| {
        for pc in [&n_params, &last, &first] {
            quantize_per_channel_into(&x, pc, &mut q).expect("ok");
            dequantize_per_channel_into(&q, pc, &mut y).expect("ok");
            fake_quantize_per_channel_into(&x, pc, &mut y).expect("ok");
            fake_quantize_per_channel_backward_into(&x, &dy, pc, &mut y).expect("ok");
        }
        quantize_per_channel_into(&x, &wide, &mut q32).expect("ok");
        dequantize_per_channel_into(&q32, &wide, &mut y).expect("ok");
        fake_quantize_per_channel_into(&x, &wide, &mut y).expect("ok");
        quantize_per_channel_into(&x2, &pc16, &mut m).expect("ok");
    });
    assert_eq!(n, 0, "per-channel _into kernels allocated {n} times");
}

#[test]
fn errors_do_not_allocate_either() {
    let x = Array2::from_elem((4, 4), f32::NAN);
    let qp = QParams::new(0.05, 3, QDType::QInt8).expect("valid");
    let mut q = Array2::<i8>::zeros((4, 4));
    // The error value itself is allocation-free (no strings).
    let n = allocations(|| {
        assert!(quantize_into(&x, &qp, &mut q).is_err());
    });
    assert_eq!(n, 0);
}
