//! Every error path of the core types and kernels, and "nothing written on error".

use ndarray::{Array1, Array2, array};
use qnumeric::*;

#[test]
fn invalid_scales() {
    for s in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        assert!(
            matches!(
                QParams::new(s, 0, QDType::QUInt8),
                Err(QuantError::InvalidScale { .. })
            ),
            "{s}"
        );
        assert!(matches!(
            PerChannelQParams::new(vec![0.1, s], vec![0, 0], 0, QDType::QInt8),
            Err(QuantError::InvalidScale { .. })
        ));
    }
}

#[test]
fn zero_points_outside_range() {
    assert!(matches!(
        QParams::new(0.1, 256, QDType::QUInt8),
        Err(QuantError::ZeroPointOutOfRange {
            zero_point: 256,
            min: 0,
            max: 255,
            ..
        })
    ));
    assert!(matches!(
        QParams::new(0.1, -129, QDType::QInt8),
        Err(QuantError::ZeroPointOutOfRange { .. })
    ));
    let r = QRange::new(QDType::QUInt8, 0, 127).expect("valid");
    assert!(matches!(
        QParams::with_range(0.1, 128, r),
        Err(QuantError::ZeroPointOutOfRange { .. })
    ));
    assert!(matches!(
        PerChannelQParams::new(vec![0.1], vec![300], 0, QDType::QUInt8),
        Err(QuantError::ZeroPointOutOfRange { .. })
    ));
}

#[test]
fn invalid_quant_ranges() {
    for (lo, hi) in [(10, 5), (5, 5), (1, 127), (-5, -1), (0, 256)] {
        assert!(
            matches!(
                QRange::new(QDType::QUInt8, lo, hi),
                Err(QuantError::InvalidQuantRange { .. })
            ),
            "{lo}..{hi}"
        );
    }
    assert!(matches!(
        QRange::new(QDType::QInt8, -129, 127),
        Err(QuantError::InvalidQuantRange { .. })
    ));
    assert!(matches!(
        QRange::for_fake_quant(3, 2),
        Err(QuantError::InvalidQuantRange { .. })
    ));
    assert!(matches!(
        QSpec::new(QScheme::PerTensorAffine, QDType::QInt8).with_quant_range(1, 127),
        Err(QuantError::InvalidQuantRange { .. })
    ));
    assert!(matches!(
        QSpec::new(QScheme::PerTensorAffine, QDType::QInt8).with_eps(0.0),
        Err(QuantError::InvalidScale { .. })
    ));
    let lsq = LearnableParams {
        scale: 0.1,
        zero_point: 0.0,
        quant_min: 1,
        quant_max: 15,
        grad_factor: 1.0,
    };
    assert!(matches!(
        learnable_fake_quantize(&array![1.0f32], &lsq),
        Err(QuantError::InvalidQuantRange { .. })
    ));
}

#[test]
fn nan_input_is_refused_with_its_index() {
    let x = array![1.0f32, 2.0, f32::NAN, 4.0];
    let qp = QParams::new(0.1, 0, QDType::QInt8).expect("valid");
    // The NaN is found by the kernel's own pass: the error names it; `out` may be partly
    // written (documented), unless the caller checks with `find_nan` first.
    assert_eq!(find_nan(&x), Some(2));
    let mut out = Array1::from_elem(4, 99i8);
    assert_eq!(
        quantize_into(&x, &qp, &mut out),
        Err(QuantError::NanInput {
            op: "quantize_into",
            index: 2
        })
    );
    let mut y = Array1::from_elem(4, 7.0f32);
    assert_eq!(
        fake_quantize_into(&x, &qp, &mut y),
        Err(QuantError::NanInput {
            op: "fake_quantize_into",
            index: 2
        })
    );
    // Every path of every float-input kernel finds it: contiguous, strided, half precision,
    // per channel on the first and the last axis, and large enough to be split in chunks
    // (threads with `rayon`), with the NaN in the last chunk.
    let big_n = (1 << 19) + 3;
    let mut big = Array1::from_elem(big_n, 0.5f32);
    big[big_n - 2] = f32::NAN;
    let mut big_out = Array1::<i8>::zeros(big_n);
    assert_eq!(
        quantize_into(&big, &qp, &mut big_out),
        Err(QuantError::NanInput {
            op: "quantize_into",
            index: big_n - 2
        })
    );
    let mut big_y = Array1::<f32>::zeros(big_n);
    assert!(matches!(
        fake_quantize_backward_into(&big, &big, &qp, &mut big_y),
        Err(QuantError::NanInput { index, .. }) if index == big_n - 2
    ));
    let xh = x.mapv(half::f16::from_f32);
    assert!(matches!(
        quantize::<_, i8, _>(&xh, &qp),
        Err(QuantError::NanInput { index: 2, .. })
    ));
    assert!(matches!(
        fake_quantize(&xh, &qp),
        Err(QuantError::NanInput { index: 2, .. })
    ));
    let strided = array![1.0f32, 0.0, 2.0, 0.0, f32::NAN, 0.0];
    let strided = strided.slice(ndarray::s![..;2]);
    assert!(matches!(
        quantize::<_, i8, _>(&strided, &qp),
        Err(QuantError::NanInput { index: 2, .. })
    ));
    let mut grid = Array2::from_elem((64, 300), 0.25f32);
    grid[[40, 299]] = f32::NAN;
    for axis in [0isize, 1] {
        let c = grid.shape()[axis as usize];
        let pc =
            PerChannelQParams::new(vec![0.1; c], vec![1; c], axis, QDType::QInt8).expect("valid");
        let want = 40 * 300 + 299;
        assert!(matches!(
            quantize_per_channel::<_, i8, _>(&grid, &pc),
            Err(QuantError::NanInput { index, .. }) if index == want
        ));
        assert!(matches!(
            fake_quantize_per_channel(&grid, &pc),
            Err(QuantError::NanInput { index, .. }) if index == want
        ));
        assert!(matches!(
            fake_quantize_per_channel(&grid.mapv(half::bf16::from_f32), &pc),
            Err(QuantError::NanInput { index, .. }) if index == want
        ));
        assert!(matches!(
            fake_quantize_per_channel_backward(&grid, &grid, &pc),
            Err(QuantError::NanInput { index, .. }) if index == want
        ));
    }
    let mut inplace = x.clone();
    assert!(fake_quantize_inplace(&mut inplace, &qp).is_err());
    assert_eq!(inplace[0], 1.0);
    assert!(fake_quantize_mask(&x, &qp).is_err());
    assert!(fake_quantize_backward(&x, &x, &qp).is_err());
    let pc = PerChannelQParams::new(vec![0.1; 4], vec![0; 4], 0, QDType::QInt8).expect("valid");
    assert!(matches!(
        quantize_per_channel::<_, i8, _>(&x, &pc),
        Err(QuantError::NanInput { .. })
    ));
    assert!(matches!(
        fake_quantize_per_channel(&x, &pc),
        Err(QuantError::NanInput { .. })
    ));
    let lsq = LearnableParams {
        scale: 0.1,
        zero_point: 0.0,
        quant_min: -8,
        quant_max: 7,
        grad_factor: 1.0,
    };
    assert!(matches!(
        learnable_fake_quantize(&x, &lsq),
        Err(QuantError::NanInput { .. })
    ));
    assert!(matches!(
        learnable_fake_quantize_backward(&x, &x, &lsq),
        Err(QuantError::NanInput { .. })
    ));
    // The `_into` pair: the NaN's index, found by the backward's own pass (its scale gradient
    // turns NaN) on the contiguous f32 path, the threaded chunk path and the strided path.
    for n in [5usize, 70_000, 300_000] {
        for pos in [0, n / 2, n - 1] {
            let mut v = Array1::from_shape_fn(n, |i| (i % 17) as f32 * 0.1 - 0.8);
            v[pos] = f32::NAN;
            let dy = Array1::from_elem(n, 1.0f32);
            let mut out = Array1::<f32>::zeros(n);
            assert!(matches!(
                learnable_fake_quantize_into(&v, &lsq, &mut out),
                Err(QuantError::NanInput { index, .. }) if index == pos
            ));
            assert!(matches!(
                learnable_fake_quantize_backward_into(&v, &dy, &lsq, &mut out),
                Err(QuantError::NanInput { index, .. }) if index == pos
            ));
        }
    }
    let m = array![[0.0f32, 1.0], [f32::NAN, 2.0]];
    let mut dm = Array2::<f32>::zeros((2, 2));
    assert!(matches!(
        learnable_fake_quantize_backward_into(&m.t(), &m.t(), &lsq, &mut dm),
        Err(QuantError::NanInput { index: 1, .. })
    ));
    // A NaN only in `dy` is not an input error: the gradients come back NaN, as PyTorch's.
    let (ds, _) = learnable_fake_quantize_backward_into(
        &array![0.1f32, 0.2],
        &array![f32::NAN, 1.0],
        &lsq,
        &mut Array1::<f32>::zeros(2),
    )
    .expect("dy NaN is not refused");
    assert!(ds.is_nan());
    // NaN in a transposed view reports the logical index.
    let m = array![[0.0f32, 1.0], [f32::NAN, 2.0]];
    assert_eq!(
        quantize::<_, i8, _>(&m.t(), &qp),
        Err(QuantError::NanInput {
            op: "quantize_into",
            index: 1
        })
    );
}

#[test]
fn shape_mismatches() {
    let x = array![1.0f32, 2.0, 3.0];
    let qp = QParams::new(0.1, 0, QDType::QInt8).expect("valid");
    let mut out = Array1::<i8>::zeros(4);
    assert!(matches!(
        quantize_into(&x, &qp, &mut out),
        Err(QuantError::ShapeMismatch { .. })
    ));
    let mut f = Array1::<f32>::zeros(2);
    assert!(matches!(
        dequantize_into(&array![1i8, 2, 3], &qp, &mut f),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fake_quantize_into(&x, &qp, &mut f),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        fake_quantize_backward(&x, &array![1.0f32], &qp),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        sqnr(&x, &array![1.0f32, 2.0]),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        normalized_l2_error(&x, &array![1.0f32]),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        cosine_similarity(&x, &array![1.0f32]),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        mse(&x, &array![1.0f32]),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        max_abs_error(&x, &array![1.0f32]),
        Err(QuantError::ShapeMismatch { .. })
    ));
    let lsq = LearnableParams {
        scale: 0.1,
        zero_point: 0.0,
        quant_min: -8,
        quant_max: 7,
        grad_factor: 1.0,
    };
    assert!(matches!(
        learnable_fake_quantize_backward(&x, &array![1.0f32], &lsq),
        Err(QuantError::ShapeMismatch { .. })
    ));
    // Wrong output shapes of the `_into` pair, reported before anything is written.
    let mut short = Array1::from_elem(1, 7.0f32);
    assert!(matches!(
        learnable_fake_quantize_into(&x, &lsq, &mut short),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        learnable_fake_quantize_backward_into(&x, &x, &lsq, &mut short),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert_eq!(short[0], 7.0);
}

#[test]
fn bad_axes_and_channel_counts() {
    let x = Array2::<f32>::zeros((3, 4));
    let pc = PerChannelQParams::new(vec![0.1; 3], vec![0; 3], 2, QDType::QInt8).expect("valid");
    assert!(matches!(
        quantize_per_channel::<_, i8, _>(&x, &pc),
        Err(QuantError::InvalidAxis {
            axis: 2,
            ndim: 2,
            ..
        })
    ));
    let pc = PerChannelQParams::new(vec![0.1; 3], vec![0; 3], -3, QDType::QInt8).expect("valid");
    assert!(matches!(
        fake_quantize_per_channel(&x, &pc),
        Err(QuantError::InvalidAxis { .. })
    ));
    let pc = PerChannelQParams::new(vec![0.1; 3], vec![0; 3], 1, QDType::QInt8).expect("valid");
    assert!(matches!(
        quantize_per_channel::<_, i8, _>(&x, &pc),
        Err(QuantError::LengthMismatch {
            expected: 4,
            got: 3,
            ..
        })
    ));
    let q = Array2::<i8>::zeros((3, 4));
    assert!(matches!(
        dequantize_per_channel::<f32, _, _>(&q, &pc),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        PerChannelQParams::new(vec![0.1; 3], vec![0; 2], 0, QDType::QInt8),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        PerChannelQParams::new(vec![], vec![], 0, QDType::QInt8),
        Err(QuantError::LengthMismatch { .. })
    ));
    let ok = PerChannelQParams::new(vec![0.1; 3], vec![0; 3], 0, QDType::QInt8).expect("valid");
    assert!(matches!(
        ok.channel(3),
        Err(QuantError::LengthMismatch { .. })
    ));
}

#[test]
fn storage_too_narrow() {
    let x = array![1.0f32];
    let qp = QParams::new(0.1, 0, QDType::QInt32).expect("valid");
    assert!(matches!(
        quantize::<_, i8, _>(&x, &qp),
        Err(QuantError::StorageTooNarrow { storage: "i8", .. })
    ));
    let qp = QParams::new(0.1, 0, QDType::QInt8).expect("valid");
    assert!(matches!(
        quantize::<_, u8, _>(&x, &qp),
        Err(QuantError::StorageTooNarrow { .. })
    ));
}

#[test]
fn non_finite_parameters() {
    assert!(matches!(
        PerChannelQParams::with_range(
            vec![0.1],
            ZeroPoints::Float(vec![f32::NAN]),
            0,
            QDType::QUInt8.full_range()
        ),
        Err(QuantError::NonFinite { .. })
    ));
    let lsq = LearnableParams {
        scale: 0.1,
        zero_point: f32::INFINITY,
        quant_min: -8,
        quant_max: 7,
        grad_factor: 1.0,
    };
    assert!(matches!(
        learnable_fake_quantize(&array![1.0f32], &lsq),
        Err(QuantError::NonFinite { .. })
    ));
    let lsq = LearnableParams {
        zero_point: 9.0,
        ..lsq
    };
    assert!(matches!(
        learnable_fake_quantize(&array![1.0f32], &lsq),
        Err(QuantError::ZeroPointOutOfRange { .. })
    ));
    let lsq = LearnableParams {
        zero_point: 0.0,
        scale: -1.0,
        ..lsq
    };
    assert!(matches!(
        learnable_fake_quantize(&array![1.0f32], &lsq),
        Err(QuantError::InvalidScale { .. })
    ));
    let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    assert!(matches!(
        spec.qparams_from_min_max(0.0, f32::INFINITY),
        Err(QuantError::NonFinite { .. })
    ));
    assert!(matches!(
        spec.qparams_from_min_max(1.0, 0.0),
        Err(QuantError::InvalidParameter { .. })
    ));
}

#[test]
fn unknown_names_and_unsupported() {
    assert!(matches!(
        QDType::from_name("float8"),
        Err(QuantError::Format { .. })
    ));
    assert!(matches!(
        QScheme::from_name("per_block"),
        Err(QuantError::Format { .. })
    ));
    assert!(matches!(
        Metric::from_name("psnr"),
        Err(QuantError::Format { .. })
    ));
    let fz = PerChannelQParams::with_range(
        vec![0.1],
        ZeroPoints::Float(vec![0.5]),
        0,
        QDType::QUInt8.full_range(),
    )
    .expect("valid");
    assert!(matches!(
        fz.channel(0),
        Err(QuantError::UnsupportedConfig { .. })
    ));
    // Stored values outside a narrow dtype in wider storage.
    let q4 = QParams::new(1.0, 0, QDType::QInt4).expect("valid");
    assert!(matches!(
        dequantize::<f32, i8, _>(&array![-9i8], &q4),
        Err(QuantError::InvalidParameter { .. })
    ));
}

#[test]
fn error_messages_name_the_operation() {
    let e = QParams::new(0.0, 0, QDType::QUInt8).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "QParams::new: invalid scale 0 (a scale must be finite, > 0, with a finite reciprocal)"
    );
}

/// Issue 17: context is added in one place (`op`, `with_op`), and I/O and parse failures keep
/// their cause (`source()`, the I/O error kind).
mod design {
    use qnumeric::{QDType, QParams};

    #[test]
    fn with_op_relabels_any_variant_and_keeps_the_rest() {
        let e = QParams::new(-1.0, 0, QDType::QUInt8).expect_err("negative scale");
        let op = e.op();
        let relabelled = e.clone().with_op("my_backend::load");
        assert_eq!(relabelled.op(), "my_backend::load");
        assert_ne!(op, "my_backend::load");
        assert_eq!(relabelled.clone().with_op(op), e);
        assert!(relabelled.to_string().starts_with("my_backend::load: "));
    }

    #[cfg(feature = "safetensors")]
    #[test]
    fn a_missing_dump_keeps_its_io_error_as_the_source() {
        use qnumeric::QuantError;
        let e = qnumeric::ns::compare_dump_files("/nonexistent/f.safetensors", "/nonexistent/q")
            .expect_err("missing");
        assert!(matches!(e, QuantError::Io { .. }), "{e}");
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
        let src = std::error::Error::source(&e).expect("a source");
        assert!(
            src.to_string().to_lowercase().contains("no such file"),
            "{src}"
        );
        assert!(
            e.to_string()
                .starts_with("compare_dump_files: /nonexistent/f.safetensors: ")
        );
        // the cause survives a relabelling and a clone
        let e2 = e.clone().with_op("caller");
        assert_eq!(e2.io_kind(), Some(std::io::ErrorKind::NotFound));
        let corrupt = std::env::temp_dir().join("qnumeric-corrupt.safetensors");
        std::fs::write(&corrupt, b"not safetensors").expect("write");
        let e = qnumeric::state_dict::StateDict::load(&corrupt).expect_err("corrupt");
        assert!(matches!(e, QuantError::Parse { .. }), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
