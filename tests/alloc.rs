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

/// The block formats' `quantize_rows_into` (and NF4's `quantize_into`) reuse the tensor they
/// are given: a second quantization of the same size allocates nothing, and `dequantize_into`
/// and the GGML row quantizer none either.
#[test]
fn format_encoders_into_a_reused_tensor_do_not_allocate() {
    use qnumeric::formats::Dequantize;
    use qnumeric::formats::float8::{Float8Granularity, Float8Recipe, Float8Spec};
    use qnumeric::formats::ggml::GgmlType;
    use qnumeric::formats::groupwise::{GroupMapping, GroupwiseSpec, QParamsDtype, TinygemmSpec};
    use qnumeric::formats::minifloat::MiniFloat;
    use qnumeric::formats::mx::MxSpec;
    use qnumeric::formats::nf4::Nf4Spec;
    use qnumeric::formats::nvfp4::Nvfp4Spec;

    let x: Vec<f32> = (0..4096)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
        .collect();
    let x2: Vec<f32> = x.iter().map(|v| v * -1.7 + 0.01).collect();
    let mut y = vec![0.0f32; x.len()];
    let mx = MxSpec::standard(MiniFloat::E2M1Fn);
    let nv = Nvfp4Spec::new(true);
    let g = GroupwiseSpec::int4(128, GroupMapping::Asymmetric).expect("spec");
    let tg = TinygemmSpec::new(128, 1e-6, QParamsDtype::BF16).expect("spec");
    let nf = Nf4Spec::new(64, 16).expect("spec");
    let f8 = Float8Spec::new(
        MiniFloat::E4M3Fn,
        Float8Recipe::Inference,
        Float8Granularity::Rowwise,
    )
    .expect("spec");
    let (mut tmx, mut tnv, mut tg4, mut ttg, mut tnf, mut tf8) = (
        mx.quantize_rows(&x, 512).expect("mx"),
        nv.quantize_rows(&x, 512).expect("nv"),
        g.quantize_rows(&x, 512).expect("g"),
        tg.quantize_rows(&x, 512).expect("tg"),
        nf.quantize(&x).expect("nf4"),
        f8.quantize_rows(&x, 512).expect("f8"),
    );
    let mut q4 = vec![0u8; GgmlType::Q4_0.row_bytes(x.len()).expect("row")];
    let n = allocations(|| {
        mx.quantize_rows_into(&x2, 512, &mut tmx).expect("mx");
        nv.quantize_rows_into(&x2, 512, &mut tnv).expect("nv");
        g.quantize_rows_into(&x2, 512, &mut tg4).expect("g");
        tg.quantize_rows_into(&x2, 512, &mut ttg).expect("tg");
        nf.quantize_into(&x2, &mut tnf).expect("nf4");
        f8.quantize_rows_into(&x2, 512, &mut tf8).expect("f8");
        GgmlType::Q4_0.quantize_row(&x2, &mut q4).expect("q4");
        for t in [&tmx as &dyn Dequantize, &tnv, &tg4, &ttg, &tf8] {
            t.dequantize_into(&mut y).expect("same length");
        }
    });
    assert_eq!(
        n, 0,
        "format encoders into reused tensors allocated {n} times"
    );
    // And they hold what a fresh quantization gives.
    assert_eq!(tmx, mx.quantize_rows(&x2, 512).expect("mx"));
    assert_eq!(tnv, nv.quantize_rows(&x2, 512).expect("nv"));
    assert_eq!(tg4, g.quantize_rows(&x2, 512).expect("g"));
    assert_eq!(ttg, tg.quantize_rows(&x2, 512).expect("tg"));
    assert_eq!(tnf, nf.quantize(&x2).expect("nf4"));
    assert_eq!(tf8, f8.quantize_rows(&x2, 512).expect("f8"));
    // A length error leaves the tensor as it was.
    let (before_g, before_nf) = (tg4.clone(), tnf.clone());
    assert!(g.quantize_rows_into(&x, 100, &mut tg4).is_err());
    assert!(nf.quantize_into(&x[..100], &mut tnf).is_err());
    assert!(mx.quantize_rows_into(&x, 100, &mut tmx).is_err());
    assert_eq!((&tg4, &tnf), (&before_g, &before_nf));
    assert_eq!(tmx, mx.quantize_rows(&x2, 512).expect("mx"));
    // A NaN is found by the encoding pass (the tensor then holds unspecified values, and
    // decodes): the first one's index.
    let mut bad = x.clone();
    bad[77] = f32::NAN;
    bad[600] = f32::INFINITY;
    for e in [
        g.quantize_rows_into(&bad, 512, &mut tg4).unwrap_err(),
        nf.quantize_into(&bad, &mut tnf).unwrap_err(),
    ] {
        assert!(
            matches!(e, qnumeric::QuantError::NanInput { index: 77, .. }),
            "{e}"
        );
    }
    assert_eq!(tg4.dequantize().len(), x.len());
}
