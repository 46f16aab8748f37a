//! Property tests of the kernels' invariants.

use ndarray::{Array1, Array2};
use proptest::prelude::*;
use qnumeric::*;

fn dtype() -> impl Strategy<Value = QDType> {
    prop_oneof![
        Just(QDType::QUInt8),
        Just(QDType::QInt8),
        Just(QDType::QUInt4),
        Just(QDType::QInt4),
        Just(QDType::QInt16),
        Just(QDType::QInt32)
    ]
}

fn qparams() -> impl Strategy<Value = QParams> {
    (dtype(), 1e-4f32..10.0, any::<u32>()).prop_map(|(d, scale, z)| {
        let span = (d.max() - d.min()).min(1 << 20) as u64 + 1;
        let zp = d.min() + (z as u64 % span) as i64;
        QParams::new(scale, zp.min(d.max()), d).expect("valid by construction")
    })
}

fn data(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![-1e3f32..1e3, -10.0f32..10.0, Just(0.0), Just(-0.0)],
        1..len,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn round_trip_within_half_a_step(qp in qparams(), xs in data(200)) {
        let x = Array1::from(xs);
        let q: Array1<i32> = quantize(&x, &qp)?;
        let back: Array1<f32> = dequantize(&q, &qp)?;
        let (lo, hi) = qp.representable();
        for (&v, &b) in x.iter().zip(back.iter()) {
            if v >= lo && v <= hi {
                // Half a step, plus the f32 rounding of the products involved.
                let tol = qp.scale() * 0.5 * (1.0 + 1e-5) + v.abs() * 4.0 * f32::EPSILON;
                prop_assert!((v - b).abs() <= tol, "x {} back {} scale {}", v, b, qp.scale());
            }
        }
    }

    #[test]
    fn fake_quantize_is_dequantize_of_quantize(qp in qparams(), xs in data(200)) {
        let x = Array1::from(xs);
        let q: Array1<i32> = quantize(&x, &qp)?;
        let back: Array1<f32> = dequantize(&q, &qp)?;
        let fq = fake_quantize(&x, &qp)?;
        prop_assert_eq!(fq, back);
    }

    #[test]
    fn fake_quantize_is_idempotent(qp in qparams(), xs in data(200)) {
        let x = Array1::from(xs);
        let once = fake_quantize(&x, &qp)?;
        let twice = fake_quantize(&once, &qp)?;
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn per_channel_with_equal_params_is_per_tensor(qp in qparams(), xs in data(60), axis in 0usize..2) {
        let n = xs.len();
        let x = Array2::from_shape_vec((n, 3), xs.iter().flat_map(|&v| [v, -v, v * 0.5]).collect())
            .expect("shape");
        let c = x.shape()[axis];
        let pc = PerChannelQParams::with_range(
            vec![qp.scale(); c],
            ZeroPoints::Int(vec![qp.zero_point(); c]),
            axis as isize,
            qp.range(),
        )?;
        let a: Array2<i32> = quantize_per_channel(&x, &pc)?;
        let b: Array2<i32> = quantize(&x, &qp)?;
        prop_assert_eq!(a, b);
        prop_assert_eq!(fake_quantize_per_channel(&x, &pc)?, fake_quantize(&x, &qp)?);
        let ones = Array2::from_elem(x.raw_dim(), 1.0f32);
        prop_assert_eq!(
            fake_quantize_per_channel_backward(&x, &ones, &pc)?,
            fake_quantize_backward(&x, &ones, &qp)?
        );
    }

    #[test]
    fn quantize_is_monotone(qp in qparams(), mut xs in data(200)) {
        xs.sort_by(f32::total_cmp);
        let q: Array1<i32> = quantize(&Array1::from(xs), &qp)?;
        prop_assert!(q.windows(2).into_iter().all(|w| w[0] <= w[1]));
    }

    #[test]
    fn into_agrees_with_allocating_for_any_layout(qp in qparams(), xs in data(120)) {
        let n = xs.len();
        let x = Array2::from_shape_vec((n, 2), xs.iter().flat_map(|&v| [v, v * 1.5]).collect())
            .expect("shape");
        let xt = x.t();
        let mut out = Array2::<i32>::zeros((2, n));
        quantize_into(&xt, &qp, &mut out)?;
        prop_assert_eq!(out, quantize::<_, i32, _>(&xt.to_owned(), &qp)?);
    }
}
