//! Kernel behaviour: PyTorch spec examples, every error path, float types, layouts.

use half::{bf16, f16};
use ndarray::{Array1, Array2, Array3, ArrayD, Axis, IxDyn, array};
use qnumeric::kernels::reference;
use qnumeric::*;

type R = qnumeric::Result<()>;

#[test]
fn spec_examples_quantize() -> R {
    // pytorch.md §4.1: ties to even, zero point added after rounding.
    let qp = QParams::new(1.0, 0, QDType::QInt8)?;
    let q: Array1<i8> = quantize(
        &array![0.5f32, 1.5, 2.5, -0.5, -1.5, 3.5, 4.5, 5.5, 6.5],
        &qp,
    )?;
    assert_eq!(q, array![0, 2, 2, 0, -2, 4, 4, 6, 6]);
    let qp = QParams::new(1.0, 1, QDType::QUInt8)?;
    let q: Array1<u8> = quantize(&array![0.5f32], &qp)?;
    assert_eq!(q, array![1]);
    // ±inf saturate, qint32 saturates at 1e10.
    let qp = QParams::new(0.1, 3, QDType::QUInt8)?;
    let q: Array1<u8> = quantize(&array![f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30], &qp)?;
    assert_eq!(q, array![255, 0, 255, 0]);
    let qp = QParams::new(1.0, 7, QDType::QInt32)?;
    let q: Array1<i32> = quantize(&array![1e10f32, -1e10, 3e9, f32::INFINITY], &qp)?;
    assert_eq!(q, array![i32::MAX, i32::MIN, i32::MAX, i32::MAX]);
    Ok(())
}

#[test]
fn spec_examples_fake_quantize() -> R {
    // pytorch.md §4.5: scale 0.1, zp 10, 0..255.
    let qp = QParams::with_range(0.1, 10, QRange::new(QDType::QUInt8, 0, 255)?)?;
    let x = array![f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.0, 1.0, 2.0];
    assert_eq!(
        fake_quantize(&x, &qp)?,
        array![24.5, -1.0, 24.5, -1.0, 0.0, 1.0, 2.0]
    );
    let ones = Array1::from_elem(7, 1.0f32);
    assert_eq!(
        fake_quantize_backward(&x, &ones, &qp)?,
        array![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    );
    assert_eq!(
        fake_quantize_mask(&x, &qp)?,
        array![false, false, false, false, true, true, true]
    );
    // LSQ example of pytorch.md §4.8.
    let p = LearnableParams {
        scale: 0.1,
        zero_point: 2.3,
        quant_min: 0,
        quant_max: 15,
        grad_factor: 1.0,
    };
    let x = array![-1.0f32, 0.04, 0.26, 0.5, 3.0, 10.0];
    let y = learnable_fake_quantize(&x, &p)?;
    for (a, b) in y.iter().zip([-0.2f32, 0.0, 0.3, 0.5, 1.3, 1.3]) {
        assert!((a - b).abs() < 1e-6, "{y}");
    }
    let g = learnable_fake_quantize_backward(&x, &Array1::from_elem(6, 1.0f32), &p)?;
    assert_eq!(g.dx, array![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    assert!((g.dscale - 24.0).abs() < 1e-4, "{}", g.dscale);
    assert!((g.dzero_point + 0.3).abs() < 1e-6, "{}", g.dzero_point);
    Ok(())
}

#[test]
fn float_qparams_spec_examples() -> R {
    // pytorch.md §4.3: [0.05,0.15,0.25,1.0], s 0.1, zp 0 -> [0,2,2,10];
    // quint4 [0,0.5,1,2], s 0.1, zp 0.5 -> dequant [-0.05,0.55,0.95,1.45].
    let qp = PerChannelQParams::with_range(
        vec![0.1],
        ZeroPoints::Float(vec![0.0]),
        0,
        QDType::QUInt8.full_range(),
    )?;
    let q: Array2<u8> = quantize_per_channel(&array![[0.05f32, 0.15, 0.25, 1.0]], &qp)?;
    assert_eq!(q, array![[0, 2, 2, 10]]);
    let qp = PerChannelQParams::with_range(
        vec![0.1],
        ZeroPoints::Float(vec![0.5]),
        0,
        QDType::QUInt4.full_range(),
    )?;
    let q: Array2<u8> = quantize_per_channel(&array![[0.0f32, 0.5, 1.0, 2.0]], &qp)?;
    let x: Array2<f32> = dequantize_per_channel(&q, &qp)?;
    for (a, b) in x.iter().zip([-0.05f32, 0.55, 0.95, 1.45]) {
        assert!((a - b).abs() < 1e-6, "{x}");
    }
    Ok(())
}

#[test]
fn matches_reference_oracle() -> R {
    let qp = QParams::new(0.037, 121, QDType::QUInt8)?;
    let x: Array1<f32> = (0..20_000)
        .map(|i| (i as f32 - 10_000.0) * 0.000_93)
        .collect();
    let q: Array1<u8> = quantize(&x, &qp)?;
    let y = fake_quantize(&x, &qp)?;
    let d: Array1<f32> = dequantize(&q, &qp)?;
    for i in 0..x.len() {
        assert_eq!(q[i] as i64, reference::quantize(x[i], 0.037, 121, 0, 255)?);
        assert_eq!(d[i], reference::dequantize(q[i] as i64, 0.037, 121)?);
        assert_eq!(
            y[i].to_bits(),
            reference::fake_quantize(x[i], 0.037, 121, 0, 255)?
                .0
                .to_bits()
        );
        assert_eq!(y[i], d[i]);
    }
    Ok(())
}

#[test]
fn half_and_double_inputs_compute_in_f32() -> R {
    let x32: Array1<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.0137).collect();
    let xh = x32.mapv(f16::from_f32);
    let xb = x32.mapv(bf16::from_f32);
    let x64 = x32.mapv(|v| v as f64);
    let qp = QParams::new(0.05, -3, QDType::QInt8)?;
    let q32: Array1<i8> = quantize(&x32, &qp)?;
    let q64: Array1<i8> = quantize(&x64, &qp)?;
    assert_eq!(q32, q64);
    let qh: Array1<i8> = quantize(&xh, &qp)?;
    let qh32: Array1<i8> = quantize(&xh.mapv(f16::to_f32), &qp)?;
    assert_eq!(qh, qh32);
    let qb: Array1<i8> = quantize(&xb, &qp)?;
    let qb32: Array1<i8> = quantize(&xb.mapv(bf16::to_f32), &qp)?;
    assert_eq!(qb, qb32);
    // Fake quantize of f16 = f32 result rounded to f16.
    let yh = fake_quantize(&xh, &qp)?;
    let y32 = fake_quantize(&xh.mapv(f16::to_f32), &qp)?;
    assert_eq!(yh, y32.mapv(f16::from_f32));
    let yb: Array1<bf16> = dequantize(&qb, &qp)?;
    let y32: Array1<f32> = dequantize(&qb, &qp)?;
    assert_eq!(yb, y32.mapv(bf16::from_f32));
    Ok(())
}

#[test]
fn per_channel_any_axis_and_layout() -> R {
    let x = Array3::from_shape_fn((4, 5, 6), |(a, b, c)| {
        (a as f32 - 1.5) * 0.7 + b as f32 * 0.31 - c as f32 * 0.11
    });
    for axis in 0..3 {
        let n = x.shape()[axis];
        let scales: Vec<f32> = (0..n).map(|c| 0.01 + 0.013 * c as f32).collect();
        let zps: Vec<i32> = (0..n).map(|c| c as i32 * 3 - 4).collect();
        let qp = PerChannelQParams::new(scales.clone(), zps.clone(), axis as isize, QDType::QInt8)?;
        let q: Array3<i8> = quantize_per_channel(&x, &qp)?;
        // Each channel equals the per-tensor kernel with that channel's parameters.
        for c in 0..n {
            let pt = QParams::new(scales[c], zps[c] as i64, QDType::QInt8)?;
            let lane = x.index_axis(Axis(axis), c);
            let expect: ndarray::Array2<i8> = quantize(&lane, &pt)?;
            assert_eq!(q.index_axis(Axis(axis), c), expect);
        }
        // Negative axis, and a transposed (non-contiguous) view with the axis moved.
        let qn = PerChannelQParams::new(
            scales.clone(),
            zps.clone(),
            axis as isize - 3,
            QDType::QInt8,
        )?;
        let qneg: Array3<i8> = quantize_per_channel(&x, &qn)?;
        assert_eq!(qneg, q);
        let xt = x.view().reversed_axes();
        let qt_params = PerChannelQParams::new(scales, zps, 2 - axis as isize, QDType::QInt8)?;
        let qt: Array3<i8> = quantize_per_channel(&xt, &qt_params)?;
        assert_eq!(qt, q.view().reversed_axes());
        let back: Array3<f32> = dequantize_per_channel(&q, &qp)?;
        let fq = fake_quantize_per_channel(&x, &qp)?;
        // Fake quantize equals dequantize(quantize) up to the f64-vs-f32 multiply of
        // per-channel dequantize (at most one ulp).
        for (a, b) in back.iter().zip(fq.iter()) {
            assert!((a - b).abs() <= a.abs() * 2.0 * f32::EPSILON, "{a} {b}");
        }
    }
    Ok(())
}

#[test]
fn strided_views_match_contiguous() -> R {
    let x = Array2::from_shape_fn((37, 53), |(i, j)| {
        (i as f32 * 0.37 - j as f32 * 0.21).sin() * 3.0
    });
    let qp = QParams::new(0.02, 5, QDType::QInt8)?;
    let xt = x.t();
    let q: Array2<i8> = quantize(&xt, &qp)?;
    let q_owned: Array2<i8> = quantize(&xt.to_owned(), &qp)?;
    assert_eq!(q, q_owned);
    let stepped = x.slice(ndarray::s![..;2, 1..;3]);
    let mut out = Array2::<i8>::zeros(stepped.raw_dim());
    quantize_into(&stepped, &qp, &mut out)?;
    let stepped_owned: Array2<i8> = quantize(&stepped.to_owned(), &qp)?;
    assert_eq!(out, stepped_owned);
    // Output buffer in another layout than the input.
    let mut out_t = Array2::<i8>::zeros((53, 37));
    let mut view = out_t.view_mut().reversed_axes();
    quantize_into(&x, &qp, &mut view)?;
    let q_x: Array2<i8> = quantize(&x, &qp)?;
    assert_eq!(out_t.t(), q_x);
    Ok(())
}

#[test]
fn quantized_tensor_round_trip() -> R {
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.0f32, 0.5, -0.5, 1.0, -1.0, 0.25])
        .expect("shape");
    let qp = QParams::new(0.25, 128, QDType::QUInt8)?;
    let t = QuantizedTensor::<u8>::quantize(&x, qp)?;
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.per_tensor(), Some(&qp));
    assert_eq!(t.dequantize::<f32>()?, x);
    let (data, params) = t.clone().into_parts();
    assert_eq!(QuantizedTensor::from_parts(data, params)?, t);
    let pc = PerChannelQParams::new(vec![0.5, 0.25], vec![0, 0], 0, QDType::QInt8)?;
    let t = QuantizedTensor::<i8>::quantize(&x, pc.clone())?;
    assert!(t.per_tensor().is_none());
    assert_eq!(t.int_repr()[[1, 0]], 4);
    // 4-bit values in u8 storage must stay in 0..=15.
    let q4 = QParams::new(1.0, 0, QDType::QUInt4)?;
    let bad = ArrayD::from_shape_vec(IxDyn(&[2]), vec![3u8, 200]).expect("shape");
    assert!(matches!(
        QuantizedTensor::from_parts(bad, q4),
        Err(QuantError::InvalidParameter { .. })
    ));
    Ok(())
}

#[test]
fn per_channel_last_axis_many_channels() -> R {
    // Row-major walks (few channels) and tiled walks (more than 2048 channels, tiles of 128
    // over blocks of 4 rows), with partial tiles and blocks, against the per-tensor kernel
    // channel by channel, for f32 and half-precision inputs.
    for (rows, c) in [(70, 2500), (9, 4097), (130, 300), (3, 2049)] {
        let x = Array2::from_shape_fn((rows, c), |(r, k)| {
            ((r * 31 + k * 7) % 97) as f32 * 0.173 - 8.0
        });
        let scales: Vec<f32> = (0..c).map(|k| 0.05 + (k % 13) as f32 * 0.01).collect();
        let zps: Vec<i32> = (0..c).map(|k| (k % 9) as i32 - 4).collect();
        let pc = PerChannelQParams::new(scales.clone(), zps.clone(), 1, QDType::QInt8)?;
        let q: Array2<i8> = quantize_per_channel(&x, &pc)?;
        let fq = fake_quantize_per_channel(&x, &pc)?;
        let dq: Array2<f32> = dequantize_per_channel(&q, &pc)?;
        let xh = x.mapv(half::f16::from_f32);
        let qh: Array2<i8> = quantize_per_channel(&xh, &pc)?;
        let fqh = fake_quantize_per_channel(&xh, &pc)?;
        let dqb: Array2<half::bf16> = dequantize_per_channel(&q, &pc)?;
        for k in 0..c {
            let pt = QParams::new(scales[k], zps[k] as i64, QDType::QInt8)?;
            let col = x.column(k);
            let qk: Array1<i8> = quantize(&col, &pt)?;
            assert_eq!(q.column(k), qk, "{rows}x{c} channel {k}");
            assert_eq!(fq.column(k), fake_quantize(&col, &pt)?, "channel {k}");
            let colh = xh.column(k);
            let qhk: Array1<i8> = quantize(&colh, &pt)?;
            assert_eq!(qh.column(k), qhk, "f16 {k}");
            assert_eq!(fqh.column(k), fake_quantize(&colh, &pt)?, "f16 {k}");
            for (r, &v) in qk.iter().enumerate() {
                let want = reference::dequantize_per_channel(v as i64, scales[k], zps[k] as i64)?;
                assert_eq!(dq[[r, k]], want);
                assert_eq!(dqb[[r, k]], half::bf16::from_f32(want));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Regression tests for hostile parameters and integers at the ends of their types.

/// The smallest `f32` scale whose `f32` reciprocal is finite (about `2.94e-39`).
fn smallest_accepted_scale() -> f32 {
    let mut s = 1.0f32 / f32::MAX;
    while !(1.0f32 / s).is_finite() {
        s = f32::from_bits(s.to_bits() + 1);
    }
    while (1.0f32 / f32::from_bits(s.to_bits() - 1)).is_finite() {
        s = f32::from_bits(s.to_bits() - 1);
    }
    s
}

#[test]
fn tiny_scale_with_infinite_reciprocal_is_refused_everywhere() {
    let ok = smallest_accepted_scale();
    let below = f32::from_bits(ok.to_bits() - 1);
    for bad in [below, 1e-39, 1e-45] {
        assert!((1.0f32 / bad).is_infinite());
        let invalid = |r: Result<()>| matches!(r, Err(QuantError::InvalidScale { .. }));
        assert!(invalid(QParams::new(bad, 0, QDType::QUInt8).map(drop)));
        assert!(invalid(
            QParams::with_range(bad, 0, QDType::QInt32.full_range()).map(drop)
        ));
        assert!(invalid(
            PerChannelQParams::new(vec![0.1, bad], vec![0, 0], 0, QDType::QInt8).map(drop)
        ));
        assert!(invalid(
            PerChannelQParams::with_range(
                vec![bad],
                ZeroPoints::Float(vec![0.0]),
                0,
                QDType::QUInt8.full_range()
            )
            .map(drop)
        ));
        assert!(invalid(reference::quantize(0.0, bad, 0, 0, 255).map(drop)));
        assert!(invalid(
            reference::fake_quantize(0.0, bad, 0, 0, 255).map(drop)
        ));
        assert!(invalid(reference::dequantize(0, bad, 0).map(drop)));
        assert!(invalid(
            reference::dequantize_per_channel(0, bad, 0).map(drop)
        ));
        let lsq = LearnableParams {
            scale: bad,
            zero_point: 0.0,
            quant_min: 0,
            quant_max: 255,
            grad_factor: 1.0,
        };
        assert!(invalid(
            learnable_fake_quantize(&array![0.0f32], &lsq).map(drop)
        ));
    }
    let e = QParams::new(1e-45, 0, QDType::QUInt8).expect_err("refused");
    assert!(e.to_string().contains("with a finite reciprocal"), "{e}");
}

#[test]
fn zero_never_quantizes_to_qmin_at_the_smallest_accepted_scale() -> R {
    let s = smallest_accepted_scale();
    let x = array![0.0f32, -0.0, 1e-45];
    for (dtype, zp) in [
        (QDType::QUInt8, 128i64),
        (QDType::QInt8, 3),
        (QDType::QInt32, 7),
    ] {
        let qp = QParams::new(s, zp, dtype)?;
        let q: Array1<i32> = quantize(&x, &qp)?;
        assert_eq!(q, Array1::from_elem(3, zp as i32), "{dtype}");
        assert_eq!(fake_quantize(&x, &qp)?, Array1::<f32>::zeros(3), "{dtype}");
        assert!(fake_quantize_mask(&x, &qp)?.iter().all(|&m| m));
        let r = qp.range();
        for &v in &x {
            assert_eq!(reference::quantize(v, s, zp, dtype.min(), dtype.max())?, zp);
            assert_eq!(
                reference::fake_quantize(v, s, zp, r.quant_min(), r.quant_max())?,
                (0.0, true)
            );
        }
        let pc = PerChannelQParams::new(vec![s, 1.0, s], vec![zp as i32; 3], 0, dtype)?;
        let q: Array1<i32> = quantize_per_channel(&x, &pc)?;
        assert_eq!(q, Array1::from_elem(3, zp as i32), "{dtype} per channel");
        assert_eq!(fake_quantize_per_channel(&x, &pc)?, Array1::<f32>::zeros(3));
    }
    let pf = PerChannelQParams::with_range(
        vec![s; 3],
        ZeroPoints::Float(vec![2.0; 3]),
        0,
        QDType::QUInt8.full_range(),
    )?;
    let q: Array1<u8> = quantize_per_channel(&x, &pf)?;
    assert_eq!(q, array![2, 2, 2]);
    Ok(())
}

#[test]
fn reference_refuses_inverted_ranges_and_bad_arguments() {
    assert!(matches!(
        reference::quantize(0.5, 1.0, 0, 5, -3),
        Err(QuantError::InvalidQuantRange {
            quant_min: 5,
            quant_max: -3,
            ..
        })
    ));
    assert!(matches!(
        reference::fake_quantize(0.5, 1.0, 0, 5, -3),
        Err(QuantError::InvalidQuantRange { .. })
    ));
    assert!(matches!(
        reference::quantize(0.5, 1.0, 300, 0, 255),
        Err(QuantError::ZeroPointOutOfRange {
            zero_point: 300,
            ..
        })
    ));
    assert!(matches!(
        reference::fake_quantize(f32::NAN, 1.0, 0, 0, 255),
        Err(QuantError::NanInput { index: 0, .. })
    ));
    assert!(matches!(
        reference::quantize(f32::NAN, 1.0, 0, 0, 255),
        Err(QuantError::NanInput { .. })
    ));
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            reference::dequantize(1, bad, 0),
            Err(QuantError::InvalidScale { .. })
        ));
    }
}

#[test]
fn reference_dequantize_of_extreme_integers_does_not_overflow() -> R {
    let two64 = 2.0f32.powi(64);
    assert_eq!(reference::dequantize(i64::MIN, 1.0, i64::MAX)?, -two64);
    assert_eq!(reference::dequantize(i64::MAX, 1.0, i64::MIN)?, two64);
    assert_eq!(
        reference::dequantize_per_channel(i64::MIN, 0.5, i64::MAX)?,
        -two64 / 2.0
    );
    assert_eq!(reference::dequantize(i64::MIN, 1.0, 0)?, -(2.0f32.powi(63)));
    Ok(())
}

#[test]
fn qint32_dequantize_takes_the_difference_exactly() -> R {
    // PyTorch 2.15 computes `q - zero_point` in 32 bits: i32::MIN - i32::MAX wraps to 1.
    let (lo, hi) = (i32::MIN, i32::MAX);
    let qp = QParams::new(0.5, hi as i64, QDType::QInt32)?;
    let q = array![lo, hi, 0, -1];
    let x: Array1<f32> = dequantize(&q, &qp)?;
    assert_eq!(x[0], -4_294_967_295.0f32 * 0.5);
    assert!(x[0] < 0.0);
    for (&v, &d) in q.iter().zip(&x) {
        assert_eq!(d, reference::dequantize(v as i64, 0.5, hi as i64)?);
    }
    let x64: Array1<f64> = dequantize(&q, &qp)?;
    assert_eq!(x64, x.mapv(f64::from));
    let xb: Array1<bf16> = dequantize(&q, &qp)?;
    assert_eq!(xb, x.mapv(bf16::from_f32));
    let qp = QParams::new(0.25, lo as i64, QDType::QInt32)?;
    let x: Array1<f32> = dequantize(&q, &qp)?;
    assert_eq!(x[1], 4_294_967_295.0f32 * 0.25);
    // Per channel (in f64, as PyTorch).
    let pc = PerChannelQParams::new(vec![0.5, 0.25], vec![hi, lo], 1, QDType::QInt32)?;
    let q2 = array![[lo, hi], [hi, lo]];
    let x2: Array2<f32> = dequantize_per_channel(&q2, &pc)?;
    for ((r, c), &d) in x2.indexed_iter() {
        let (s, z) = ([0.5f32, 0.25][c], [hi, lo][c]);
        assert_eq!(
            d,
            reference::dequantize_per_channel(q2[[r, c]] as i64, s, z as i64)?
        );
    }
    assert_eq!(x2[[0, 0]], -4_294_967_295.0f32 * 0.5);
    Ok(())
}

#[test]
fn qint32_zero_points_at_the_ends_of_i32_match_the_oracle() -> R {
    let (dmin, dmax) = (i32::MIN as i64, i32::MAX as i64);
    let xs = array![
        -1e10f32,
        -4_294_967_296.0,
        -2_147_483_648.0,
        -3e9,
        -1.0,
        0.0,
        0.5,
        1.5,
        2_147_483_648.0,
        4_294_967_296.0,
        1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX
    ];
    for zp in [dmin, dmin + 1, -1, 0, 1, dmax - 1, dmax] {
        for s in [1.0f32, 0.5, 3e-5, 7e9] {
            let qp = QParams::new(s, zp, QDType::QInt32)?;
            let q: Array1<i32> = quantize(&xs, &qp)?;
            let y = fake_quantize(&xs, &qp)?;
            let m = fake_quantize_mask(&xs, &qp)?;
            let pc = PerChannelQParams::new(
                vec![s; xs.len()],
                vec![zp as i32; xs.len()],
                0,
                QDType::QInt32,
            )?;
            let qc: Array1<i32> = quantize_per_channel(&xs, &pc)?;
            let yc = fake_quantize_per_channel(&xs, &pc)?;
            let ones = Array1::from_elem(xs.len(), 1.0f32);
            let gc = fake_quantize_per_channel_backward(&xs, &ones, &pc)?;
            for (i, &v) in xs.iter().enumerate() {
                let want = reference::quantize(v, s, zp, dmin, dmax)?;
                let (wy, wm) = reference::fake_quantize(v, s, zp, dmin, dmax)?;
                let ctx = format!("x {v} scale {s} zp {zp}");
                assert_eq!(q[i] as i64, want, "{ctx}");
                assert_eq!(qc[i] as i64, want, "{ctx}");
                assert_eq!(y[i].to_bits(), wy.to_bits(), "{ctx}");
                assert_eq!(yc[i].to_bits(), wy.to_bits(), "{ctx}");
                assert_eq!(m[i], wm, "{ctx}");
                assert_eq!(gc[i], if wm { 1.0 } else { 0.0 }, "{ctx}");
            }
        }
    }
    Ok(())
}

#[test]
fn fake_quantize_mask_is_exact_at_the_ends_of_a_32_bit_range() -> R {
    // With zp = i32::MAX the level of -2^32 is i32::MIN - 1: clamped, so no gradient; the
    // bound relative to the zero point, -(2^32 - 1), is not an f32.
    let qp = QParams::new(1.0, i32::MAX as i64, QDType::QInt32)?;
    let x = array![-4_294_967_296.0f32, -4_294_967_040.0];
    assert_eq!(fake_quantize_mask(&x, &qp)?, array![false, true]);
    let ones = Array1::from_elem(2, 1.0f32);
    assert_eq!(fake_quantize_backward(&x, &ones, &qp)?, array![0.0, 1.0]);
    Ok(())
}

#[test]
fn float_zero_point_clamp_is_exact_for_32_bit_ranges() -> R {
    // 2147483583 is not an f32 (its neighbours are 2147483520 and 2^31).
    let qmax = 2_147_483_583i64;
    let range = QRange::new(QDType::QInt32, -qmax, qmax)?;
    let pc = PerChannelQParams::with_range(vec![1.0], ZeroPoints::Float(vec![0.0]), 0, range)?;
    let x = array![[1e10f32, -1e10, 2_147_483_520.0, f32::INFINITY]];
    let q: Array2<i32> = quantize_per_channel(&x, &pc)?;
    assert_eq!(
        q,
        array![[qmax as i32, -qmax as i32, 2_147_483_520, qmax as i32]]
    );
    let ones = Array2::from_elem((1, 4), 1.0f32);
    assert_eq!(
        fake_quantize_per_channel_backward(&x, &ones, &pc)?,
        array![[0.0, 0.0, 1.0, 0.0]]
    );
    Ok(())
}

#[test]
fn per_channel_kernels_accept_zero_sized_and_huge_channel_axes() -> R {
    // No elements, but many channels: nothing to do, and no chunk arithmetic overflows.
    let c = 1 << 20;
    let pc = PerChannelQParams::new(vec![0.1; c], vec![0; c], -1, QDType::QInt8)?;
    let x = Array2::<f32>::zeros((0, c));
    let q: Array2<i8> = quantize_per_channel(&x, &pc)?;
    assert_eq!(q.shape(), &[0, c]);
    let y: Array2<f32> = dequantize_per_channel(&q, &pc)?;
    assert_eq!(y.shape(), &[0, c]);
    assert_eq!(fake_quantize_per_channel(&x, &pc)?.shape(), &[0, c]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The crate docs' "Numerical conventions", each checked for f32, f64, f16 and bf16 inputs.

/// Runs the generic check `$check::<F>` as one test per float type, in a module of its name.
macro_rules! for_each_float {
    ($check:ident) => {
        mod $check {
            #[test]
            fn f32() -> super::R {
                super::$check::<f32>()
            }
            #[test]
            fn f64() -> super::R {
                super::$check::<f64>()
            }
            #[test]
            fn f16() -> super::R {
                super::$check::<half::f16>()
            }
            #[test]
            fn bf16() -> super::R {
                super::$check::<half::bf16>()
            }
        }
    };
}

/// `v` converted to `F` (round to nearest).
fn to<F: QFloat>(v: f64) -> F {
    num_traits::NumCast::from(v).expect("every f64 converts to a float type")
}

fn floats<F: QFloat>(vs: &[f64]) -> Array1<F> {
    vs.iter().map(|&v| to::<F>(v)).collect()
}

/// Rounding is half to even, and the zero point is added after rounding.
fn convention_rounds_half_to_even<F: QFloat>() -> R {
    let x = floats::<F>(&[0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5]);
    let qp = QParams::new(1.0, 0, QDType::QInt8)?;
    let q: Array1<i8> = quantize(&x, &qp)?;
    assert_eq!(q, array![0, 2, 2, 4, 0, -2, -2, -4], "{}", F::NAME);
    let y = fake_quantize(&x, &qp)?;
    assert_eq!(y, floats::<F>(&[0.0, 2.0, 2.0, 4.0, 0.0, -2.0, -2.0, -4.0]));
    let qp = QParams::new(1.0, 1, QDType::QUInt8)?;
    let q: Array1<u8> = quantize(&floats::<F>(&[0.5, 1.5]), &qp)?;
    assert_eq!(q, array![1, 3], "{}", F::NAME);
    Ok(())
}
for_each_float!(convention_rounds_half_to_even);

/// Values saturate, also where `|x / scale| >= 2^31` with a non-zero zero point.
fn convention_saturates_beyond_2_pow_31<F: QFloat>() -> R {
    let x = floats::<F>(&[3000.0, -3000.0, 60000.0, -60000.0]);
    let qp = QParams::new(1e-6, 7, QDType::QInt32)?;
    let q: Array1<i32> = quantize(&x, &qp)?;
    assert_eq!(
        q,
        array![i32::MAX, i32::MIN, i32::MAX, i32::MIN],
        "{}",
        F::NAME
    );
    let pc = PerChannelQParams::new(vec![1e-6; 4], vec![-7; 4], 0, QDType::QInt32)?;
    let q: Array1<i32> = quantize_per_channel(&x, &pc)?;
    assert_eq!(
        q,
        array![i32::MAX, i32::MIN, i32::MAX, i32::MIN],
        "{}",
        F::NAME
    );
    let qp = QParams::new(1e-6, 3, QDType::QUInt8)?;
    let q: Array1<u8> = quantize(&x, &qp)?;
    assert_eq!(q, array![255, 0, 255, 0], "{}", F::NAME);
    let qp = QParams::new(1e-6, 7, QDType::QInt32)?;
    let y = fake_quantize(&x, &qp)?;
    let top = to::<F>(((i32::MAX as i64 - 7) as f32 * 1e-6f32) as f64);
    let bottom = to::<F>(((i32::MIN as i64 - 7) as f32 * 1e-6f32) as f64);
    assert_eq!(y, array![top, bottom, top, bottom], "{}", F::NAME);
    Ok(())
}
for_each_float!(convention_saturates_beyond_2_pow_31);

/// ±inf saturate to the range ends.
fn convention_infinities_saturate<F: QFloat>() -> R {
    let x = Array1::from(vec![F::infinity(), F::neg_infinity()]);
    let qp = QParams::new(0.1, 3, QDType::QUInt8)?;
    let q: Array1<u8> = quantize(&x, &qp)?;
    assert_eq!(q, array![255, 0], "{}", F::NAME);
    let q: Array1<i32> = quantize(&x, &QParams::new(0.1, 3, QDType::QInt32)?)?;
    assert_eq!(q, array![i32::MAX, i32::MIN], "{}", F::NAME);
    let y = fake_quantize(&x, &qp)?;
    assert_eq!(
        y,
        floats::<F>(&[(252.0f32 * 0.1) as f64, (-3.0f32 * 0.1) as f64])
    );
    let pc = PerChannelQParams::new(vec![0.1, 0.1], vec![3, 3], 0, QDType::QUInt8)?;
    let q: Array1<u8> = quantize_per_channel(&x, &pc)?;
    assert_eq!(q, array![255, 0], "{}", F::NAME);
    assert_eq!(fake_quantize_per_channel(&x, &pc)?, y);
    Ok(())
}
for_each_float!(convention_infinities_saturate);

/// NaN is a typed error naming the first NaN, never a value.
fn convention_nan_is_a_typed_error<F: QFloat>() -> R {
    let x = Array1::from(vec![F::one(), F::nan(), F::nan()]);
    let qp = QParams::new(0.1, 3, QDType::QUInt8)?;
    let pc = PerChannelQParams::new(vec![0.1; 3], vec![3; 3], 0, QDType::QUInt8)?;
    let nan_at_1 = |r: Result<()>| matches!(r, Err(QuantError::NanInput { index: 1, .. }));
    assert!(
        nan_at_1(quantize::<F, u8, _>(&x, &qp).map(drop)),
        "{}",
        F::NAME
    );
    assert!(nan_at_1(fake_quantize(&x, &qp).map(drop)));
    assert!(nan_at_1(fake_quantize_mask(&x, &qp).map(drop)));
    assert!(nan_at_1(fake_quantize_backward(&x, &x, &qp).map(drop)));
    assert!(nan_at_1(
        quantize_per_channel::<F, u8, _>(&x, &pc).map(drop)
    ));
    assert!(nan_at_1(fake_quantize_per_channel(&x, &pc).map(drop)));
    let mut y = x.clone();
    assert!(nan_at_1(fake_quantize_inplace(&mut y, &qp)));
    let ok = Array1::from(vec![F::one(); 3]);
    assert!(nan_at_1(sqnr(&x, &ok).map(drop)));
    assert!(nan_at_1(sqnr(&ok, &x).map(drop)));
    Ok(())
}
for_each_float!(convention_nan_is_a_typed_error);

/// The affine map runs in `f32` for every input type: the result is the one of the input
/// converted to `f32` first (exact for f16 and bf16, rounding for f64).
fn convention_affine_map_runs_in_f32<F: QFloat>() -> R {
    // 2.5000001 is 2.5 in f32 (a tie, rounded to 2) but above the tie in f64.
    let x = floats::<F>(&[2.500_000_1, -2.500_000_1, 0.1, 1e-3, 123.456, 1e6, -7.25]);
    let x32 = x.mapv(|v| v.to_compute());
    for (scale, zp) in [(1.0f32, 0), (0.1, 5), (0.037, -3)] {
        let qp = QParams::new(scale, zp, QDType::QInt32)?;
        let q: Array1<i32> = quantize(&x, &qp)?;
        let q32: Array1<i32> = quantize(&x32, &qp)?;
        assert_eq!(q, q32, "{} scale {scale}", F::NAME);
        let y = fake_quantize(&x, &qp)?;
        assert_eq!(y, fake_quantize(&x32, &qp)?.mapv(F::from_compute));
        let back: Array1<F> = dequantize(&q, &qp)?;
        let back32: Array1<f32> = dequantize(&q, &qp)?;
        assert_eq!(back, back32.mapv(F::from_compute));
    }
    if F::NAME == "f64" {
        let q: Array1<i32> = quantize(&x, &QParams::new(1.0, 0, QDType::QInt32)?)?;
        assert_eq!(
            q[0], 2,
            "f64 2.5000001 must be rounded to f32 (a tie) first"
        );
        assert_ne!(2.500_000_1f64.round_ties_even(), 2.0);
    }
    Ok(())
}
for_each_float!(convention_affine_map_runs_in_f32);

/// Dequantize takes `q - zero_point` exactly, also for qint32 (PyTorch 2.15 wraps it in 32
/// bits: i32::MIN - i32::MAX would be 1, giving +2^-20 here instead of -4096).
fn convention_dequantize_difference_is_exact<F: QFloat>() -> R {
    let scale = 2f32.powi(-20);
    let qp = QParams::new(scale, i32::MAX as i64, QDType::QInt32)?;
    let x: Array1<F> = dequantize(&array![i32::MIN, i32::MAX], &qp)?;
    assert_eq!(x, floats::<F>(&[-4096.0, 0.0]), "{}", F::NAME);
    let pc = PerChannelQParams::new(vec![scale], vec![i32::MIN], 0, QDType::QInt32)?;
    let y: Array2<F> = dequantize_per_channel(&array![[i32::MAX, i32::MIN]], &pc)?;
    assert_eq!(y, array![[to::<F>(4096.0), to::<F>(0.0)]], "{}", F::NAME);
    Ok(())
}
for_each_float!(convention_dequantize_difference_is_exact);
