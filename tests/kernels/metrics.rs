//! Metrics: accumulation in `f64` for every input type, extreme magnitudes, and the refusal
//! of non-finite input. Expected values are computed here from their definitions (in `f64`,
//! term by term) unless a comment names another source.

use half::{bf16, f16};
use ndarray::{Array1, Array2, array};
use qnumeric::*;

type R = qnumeric::Result<()>;

/// `(Σx², Σy², Σxy, Σ(x−y)²)`, sequentially in `f64`.
fn sums(x: &[f64], y: &[f64]) -> [f64; 4] {
    let mut m = [0.0; 4];
    for (&a, &b) in x.iter().zip(y) {
        m[0] += a * a;
        m[1] += b * b;
        m[2] += a * b;
        m[3] += (a - b) * (a - b);
    }
    m
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

fn all_metrics<F: QFloat>(x: &Array1<F>, y: &Array1<F>) -> Vec<Result<f64>> {
    [
        Metric::Sqnr,
        Metric::NormalizedL2Error,
        Metric::CosineSimilarity,
        Metric::Mse,
        Metric::MaxAbsError,
    ]
    .into_iter()
    .map(|m| m.compute(x, y))
    .collect()
}

#[test]
fn sqnr_of_values_whose_squares_overflow_f32_is_finite() -> R {
    // A relative error of 1e-3 everywhere is 60 dB, whatever the magnitude.
    for mag in [1e19f32, 1e20, 3e38, 1e-20, 1e-30] {
        let x: Array1<f32> = (1..=64).map(|i| mag * (i as f32 / 64.0)).collect();
        let y = x.mapv(|v| v * 1.001);
        let db = sqnr(&x, &y)?;
        assert!(close(db, 60.0, 1e-4), "magnitude {mag:e}: {db}");
        let e = normalized_l2_error(&x, &y)?;
        assert!(close(e, 1e-3, 1e-3), "magnitude {mag:e}: {e}");
        // PyTorch clamps each norm to at least 1e-8 (see the next test).
        if mag >= 1e-8 {
            let c = cosine_similarity(&x, &y)?;
            assert!(close(c, 1.0, 1e-9), "magnitude {mag:e}: {c}");
        }
    }
    Ok(())
}

#[test]
fn cosine_of_small_vectors_follows_pytorchs_norm_clamp() -> R {
    // Norm above 1e-8: 1. Below: each norm is clamped to 1e-8 (PyTorch's eps), so the value
    // is Σxy / 1e-16, computed here exactly from the definition.
    let x = Array1::from_elem(100, 1e-8f32);
    assert!(close(cosine_similarity(&x, &x)?, 1.0, 1e-12));
    let t = Array1::from_elem(100, 1e-21f32);
    let v = t[0] as f64;
    let want = 100.0 * v * v / 1e-16;
    assert!(close(cosine_similarity(&t, &t)?, want, 1e-12));
    Ok(())
}

#[test]
fn f64_inputs_are_read_without_rounding_to_f32() -> R {
    let x = array![1.0f64 + 2f64.powi(-40), 2.0];
    let y = array![1.0f64, 2.0];
    let want = 2f64.powi(-40) / 5f64.sqrt();
    assert!(close(normalized_l2_error(&x, &y)?, want, 1e-12));
    assert_eq!(max_abs_error(&x, &y)?, 2f64.powi(-40));
    assert_eq!(mse(&x, &y)?, 2f64.powi(-80) / 2.0);
    Ok(())
}

#[test]
fn f64_inputs_beyond_the_range_of_their_squares_are_scaled() -> R {
    for mag in [
        1e200f64,
        1e300,
        f64::MAX / 4.0,
        1e-200,
        1e-300,
        5e-324 * 1e10,
    ] {
        let x: Array1<f64> = (1..=16).map(|i| mag * (i as f64 / 16.0)).collect();
        let y = x.mapv(|v| v * 1.001);
        let db = sqnr(&x, &y)?;
        assert!(close(db, 60.0, 1e-4), "magnitude {mag:e}: {db}");
        let e = normalized_l2_error(&x, &y)?;
        assert!(close(e, 1e-3, 1e-3), "magnitude {mag:e}: {e}");
        let want = if mag >= 1e-8 {
            1.0
        } else {
            // Both norms clamped to 1e-8: Σxy / 1e-16, from the definition.
            x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>() / 1e-16
        };
        let c = cosine_similarity(&x, &y)?;
        assert!(close(c, want, 1e-9), "magnitude {mag:e}: {c} vs {want}");
    }
    // Opposite signs near f64::MAX: the difference overflows f64 but its norm ratio is 2.
    let x = array![1e308f64, -1e308];
    let y = -&x;
    assert!(close(normalized_l2_error(&x, &y)?, 2.0, 1e-12));
    assert!(close(sqnr(&x, &y)?, -20.0 * 2f64.log10(), 1e-12));
    assert!(close(cosine_similarity(&x, &y)?, -1.0, 1e-12));
    // True values beyond the f64 range saturate to +inf.
    assert_eq!(mse(&x, &y)?, f64::INFINITY);
    assert_eq!(max_abs_error(&x, &y)?, f64::INFINITY);
    // A reference far below the value under test: its norm does not underflow to zero.
    let x = array![1e-300f64, 2e-300];
    let y = array![1e300f64, 2e300];
    let db = sqnr(&x, &y)?;
    assert!(db.is_finite() && close(db, -12000.0, 1e-3), "{db}");
    // Identical and all-zero f64 inputs keep PyTorch's conventions.
    assert_eq!(sqnr(&y, &y)?, f64::INFINITY);
    let z = Array1::<f64>::zeros(2);
    assert!(sqnr(&z, &z)?.is_nan());
    assert_eq!(sqnr(&z, &y)?, f64::NEG_INFINITY);
    assert_eq!(cosine_similarity(&z, &y)?, 0.0);
    Ok(())
}

#[test]
fn metrics_refuse_nan_input_with_its_index() {
    let x = array![1.0f32, 2.0, f32::NAN, 4.0];
    let y = array![1.0f32, f32::NAN, 3.0, 4.0];
    let ok = array![1.0f32, 2.0, 3.0, 4.0];
    for r in all_metrics(&x, &ok) {
        assert!(
            matches!(r, Err(QuantError::NanInput { index: 2, .. })),
            "{r:?}"
        );
    }
    for r in all_metrics(&ok, &y) {
        assert!(
            matches!(r, Err(QuantError::NanInput { index: 1, .. })),
            "{r:?}"
        );
    }
    // NaN in x is reported before NaN in y, and before an infinity.
    let xi = array![f32::INFINITY, 2.0, f32::NAN, 4.0];
    for r in all_metrics(&xi, &y) {
        assert!(
            matches!(r, Err(QuantError::NanInput { index: 2, .. })),
            "{r:?}"
        );
    }
    assert!(matches!(
        sqnr(&x, &ok),
        Err(QuantError::NanInput { op: "sqnr", .. })
    ));
}

#[test]
fn metrics_refuse_infinite_input_with_its_index() {
    let x = array![1.0f64, f64::NEG_INFINITY, 3.0];
    let ok = array![1.0f64, 2.0, 3.0];
    for r in all_metrics(&x, &ok) {
        assert!(
            matches!(r, Err(QuantError::InfiniteInput { index: 1, value, .. }) if value == f64::NEG_INFINITY),
            "{r:?}"
        );
    }
    for r in all_metrics(&ok, &x.mapv(|v| -v)) {
        assert!(
            matches!(r, Err(QuantError::InfiniteInput { index: 1, value, .. }) if value == f64::INFINITY),
            "{r:?}"
        );
    }
    let h = array![f16::ONE, f16::INFINITY];
    let e = sqnr(&h, &h).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "sqnr: infinite value inf in the input at flat index 1"
    );
}

#[test]
fn non_contiguous_inputs_give_the_contiguous_result() -> R {
    let x = Array2::from_shape_fn((37, 19), |(i, j)| (i as f32 * 0.3 - j as f32 * 0.7).sin());
    let y = x.mapv(|v| v + 1e-3 * v.cos());
    let (xt, yt) = (x.t(), y.t());
    let (xo, yo) = (xt.to_owned(), yt.to_owned());
    assert_eq!(sqnr(&xt, &yt)?, sqnr(&xo, &yo)?);
    assert_eq!(cosine_similarity(&xt, &yt)?, cosine_similarity(&xo, &yo)?);
    let mut bad = x.clone();
    bad[[5, 3]] = f32::NAN;
    assert!(matches!(
        sqnr(&bad.t(), &yt),
        Err(QuantError::NanInput { index, .. }) if index == 3 * 37 + 5
    ));
    Ok(())
}

#[test]
fn shapes_must_match() {
    let r = sqnr(&Array1::<f32>::zeros(3), &Array1::<f32>::zeros(4));
    assert!(matches!(r, Err(QuantError::ShapeMismatch { .. })));
}

/// Metrics accumulate in `f64`: 255 vs 254 repeated 2^16 times gives exactly
/// `20·log10(255)` (all sums are exact in f64; in f32 lanes they round). Values of 1e20 (whose
/// squares overflow f32) give a finite result for the types that hold them.
fn convention_metrics_accumulate_in_f64<F: QFloat>() -> R {
    let n = 1 << 16;
    let x = Array1::from_elem(n, F::from_compute(255.0));
    let y = Array1::from_elem(n, F::from_compute(254.0));
    assert_eq!(sqnr(&x, &y)?, 20.0 * 255f64.log10(), "{}", F::NAME);
    assert_eq!(normalized_l2_error(&x, &y)?, 1.0 / 255.0, "{}", F::NAME);
    assert_eq!(mse(&x, &y)?, 1.0, "{}", F::NAME);
    // Random-looking data against the definition computed term by term in f64.
    let xs: Array1<F> = (0..5000)
        .map(|i| F::from_compute(((i * 7919) % 1000) as f32 * 0.013 - 6.0))
        .collect();
    let ys = xs.mapv(|v| F::from_compute(v.to_compute() * 1.01 + 0.003));
    let (a, b): (Vec<f64>, Vec<f64>) = (
        xs.iter().map(|v| v.to_f64_exact()).collect(),
        ys.iter().map(|v| v.to_f64_exact()).collect(),
    );
    let m = sums(&a, &b);
    let want_db = 20.0 * (m[0].sqrt() / m[3].sqrt()).log10();
    assert!(close(sqnr(&xs, &ys)?, want_db, 1e-12), "{}", F::NAME);
    let want_cos = m[2] / (m[0].sqrt() * m[1].sqrt());
    assert!(
        close(cosine_similarity(&xs, &ys)?, want_cos, 1e-12),
        "{}",
        F::NAME
    );
    if F::max_value().to_f64_exact() >= 1e21 {
        let big: Array1<F> = (1..=8).map(|i| F::from_compute(1e20 * i as f32)).collect();
        let off = big.mapv(|v| F::from_compute(v.to_compute() * 1.25));
        let (a, b): (Vec<f64>, Vec<f64>) = (
            big.iter().map(|v| v.to_f64_exact()).collect(),
            off.iter().map(|v| v.to_f64_exact()).collect(),
        );
        let m = sums(&a, &b);
        let want = 20.0 * (m[0].sqrt() / m[3].sqrt()).log10();
        let db = sqnr(&big, &off)?;
        assert!(
            db.is_finite() && close(db, want, 1e-12),
            "{}: {db}",
            F::NAME
        );
    }
    Ok(())
}

mod convention_metrics_accumulate_in_f64 {
    #[test]
    fn f32() -> super::R {
        super::convention_metrics_accumulate_in_f64::<f32>()
    }
    #[test]
    fn f64() -> super::R {
        super::convention_metrics_accumulate_in_f64::<f64>()
    }
    #[test]
    fn f16() -> super::R {
        super::convention_metrics_accumulate_in_f64::<half::f16>()
    }
    #[test]
    fn bf16() -> super::R {
        super::convention_metrics_accumulate_in_f64::<half::bf16>()
    }
}

#[test]
fn half_inputs_refuse_non_finite_values() {
    let x = array![bf16::ONE, bf16::NAN];
    assert!(matches!(
        mse(&x, &x),
        Err(QuantError::NanInput { index: 1, .. })
    ));
    let h = array![f16::NEG_INFINITY, f16::ONE];
    assert!(matches!(
        max_abs_error(&h, &h),
        Err(QuantError::InfiniteInput { index: 0, .. })
    ));
}
