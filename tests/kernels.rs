//! Kernel behaviour: PyTorch spec examples, every error path, float types, layouts.

use half::{bf16, f16};
use ndarray::{array, Array1, Array2, Array3, ArrayD, Axis, IxDyn};
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
        assert_eq!(q[i] as i64, reference::quantize(x[i], 0.037, 121, 0, 255));
        assert_eq!(d[i], reference::dequantize(q[i] as i64, 0.037, 121));
        assert_eq!(
            y[i].to_bits(),
            reference::fake_quantize(x[i], 0.037, 121, 0, 255)
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
    assert_eq!(qh, quantize::<i8, f32, _>(&xh.mapv(f16::to_f32), &qp)?);
    let qb: Array1<i8> = quantize(&xb, &qp)?;
    assert_eq!(qb, quantize::<i8, f32, _>(&xb.mapv(bf16::to_f32), &qp)?);
    // Fake quantize of f16 = f32 result rounded to f16.
    let yh = fake_quantize(&xh, &qp)?;
    let y32 = fake_quantize(&xh.mapv(f16::to_f32), &qp)?;
    assert_eq!(yh, y32.mapv(f16::from_f32));
    let yb: Array1<bf16> = dequantize(&qb, &qp)?;
    assert_eq!(yb, dequantize::<f32, _, _>(&qb, &qp)?.mapv(bf16::from_f32));
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
        assert_eq!(quantize_per_channel::<i8, _, _>(&x, &qn)?, q);
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
    assert_eq!(q, quantize::<i8, _, _>(&xt.to_owned(), &qp)?);
    let stepped = x.slice(ndarray::s![..;2, 1..;3]);
    let mut out = Array2::<i8>::zeros(stepped.raw_dim());
    quantize_into(&stepped, &qp, &mut out)?;
    assert_eq!(out, quantize::<i8, _, _>(&stepped.to_owned(), &qp)?);
    // Output buffer in another layout than the input.
    let mut out_t = Array2::<i8>::zeros((53, 37));
    let mut view = out_t.view_mut().reversed_axes();
    quantize_into(&x, &qp, &mut view)?;
    assert_eq!(out_t.t(), quantize::<i8, _, _>(&x, &qp)?);
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
            assert_eq!(qh.column(k), quantize::<i8, _, _>(&colh, &pt)?, "f16 {k}");
            assert_eq!(fqh.column(k), fake_quantize(&colh, &pt)?, "f16 {k}");
            for (r, &v) in qk.iter().enumerate() {
                let want = reference::dequantize_per_channel(v as i64, scales[k], zps[k] as i64);
                assert_eq!(dq[[r, k]], want);
                assert_eq!(dqb[[r, k]], half::bf16::from_f32(want));
            }
        }
    }
    Ok(())
}
