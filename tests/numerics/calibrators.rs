//! The calibrator comparison on data with known shapes: outliers (clipping calibrators must
//! beat min/max) and uniform data (min/max must win).
#![allow(clippy::unwrap_used)]

use ndarray::{Array1, ArrayD};
use qnumeric::observers::compare_calibrators;
use qnumeric::{
    EntropyObserver, MseObserver, Observer, PercentileObserver, QDType, QScheme, QSpec, QuantError,
};

/// Deterministic LCG in [0, 1).
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut r = qnumeric::rng::Lcg::new(seed.wrapping_mul(qnumeric::rng::Lcg::MUL).wrapping_add(1));
    (0..n).map(|_| r.unit_f32()).collect()
}

/// Approximately normal (sum of 4 uniforms, centred, σ ≈ 1) with two large outliers: the
/// regime where min/max wastes the grid on two values (their clipping error, 2·~95² over 1M
/// values, is below min/max's rounding error over the bulk).
fn normal_with_outliers(n: usize) -> ArrayD<f32> {
    let u = uniform(4 * n, 3);
    let mut v: Vec<f32> = u
        .chunks_exact(4)
        .map(|c| (c.iter().sum::<f32>() - 2.0) * 1.7)
        .collect();
    v[7] = 100.0;
    v[n / 2] = -90.0;
    Array1::from(v).into_dyn()
}

fn symmetric() -> QSpec {
    QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8)
}

fn affine() -> QSpec {
    QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8)
}

/// With two outliers every clipping calibrator beats min/max by more than 1 dB (the claim of
/// docs/observers.md), and the winner clips.
fn clipping_beats_minmax(spec: QSpec) {
    let x = normal_with_outliers(1 << 20);
    let r = compare_calibrators(x.view(), spec).unwrap();
    let minmax = r.get("minmax").unwrap().sqnr_db;
    let losers: Vec<String> = ["percentile-99.9", "percentile-99.99", "entropy", "mse"]
        .into_iter()
        .filter(|name| r.get(name).unwrap().sqnr_db <= minmax + 1.0)
        .map(String::from)
        .collect();
    assert!(losers.is_empty(), "{losers:?} within 1 dB of min/max\n{r}");
    assert_ne!(r.best().name, "minmax", "{r}");
    assert!(r.get("minmax").unwrap().clipped_fraction < 1e-5, "{r}");
    assert!(r.best().clipped_fraction > 0.0, "{r}");
    assert!(r.to_string().contains("winner:"), "{r}");
}

#[test]
fn clipping_calibrators_beat_minmax_with_outliers_symmetric() {
    clipping_beats_minmax(symmetric());
}

#[test]
fn clipping_calibrators_beat_minmax_with_outliers_affine() {
    clipping_beats_minmax(affine());
}

/// On uniform data there is nothing to clip: min/max wins and no calibrator beats it by more
/// than the 0.05 dB tie margin (`CalibratorComparison::TIE_DB`).
fn minmax_wins_on_uniform(spec: QSpec) {
    let x: Vec<f32> = uniform(50_000, 11)
        .into_iter()
        .map(|v| 2.0 * v - 1.0)
        .collect();
    let x = Array1::from(x).into_dyn();
    let r = compare_calibrators(x.view(), spec).unwrap();
    assert_eq!(r.best().name, "minmax", "{r}");
    let minmax = r.get("minmax").unwrap().sqnr_db;
    for c in &r.results {
        assert!(c.sqnr_db <= minmax + 0.05, "{r}");
    }
}

#[test]
fn minmax_wins_on_uniform_data_symmetric() {
    minmax_wins_on_uniform(symmetric());
}

#[test]
fn minmax_wins_on_uniform_data_affine() {
    minmax_wins_on_uniform(affine());
}

#[test]
fn comparison_refuses_an_empty_tensor() {
    let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let empty = ArrayD::<f32>::zeros(vec![0]);
    assert!(matches!(
        compare_calibrators(empty.view(), spec),
        Err(QuantError::EmptyInput { .. })
    ));
}

#[test]
fn comparison_refuses_nan() {
    let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let nan = Array1::from(vec![1.0f32, f32::NAN]).into_dyn();
    assert!(matches!(
        compare_calibrators(nan.view(), spec),
        Err(QuantError::NanInput { index: 1, .. })
    ));
}

#[test]
fn comparison_refuses_a_per_channel_spec() {
    let pc = QSpec::new(QScheme::PerChannelAffine, QDType::QUInt8);
    let x = Array1::from(vec![1.0f32, 2.0]).into_dyn();
    assert!(matches!(
        compare_calibrators(x.view(), pc),
        Err(QuantError::UnsupportedConfig { .. })
    ));
}

#[test]
fn comparison_of_one_sided_data_away_from_zero() {
    // Values in [1, 2) (issue 11: the MSE calibrator refused them with "min must not exceed
    // max"). Every calibrator answers; the range represented starts at 0 (affine ranges are
    // extended to contain 0) and covers the data up to clipping.
    let x: Vec<f32> = (0..10_000).map(|i| 1.0 + i as f32 / 10_000.0).collect();
    let x = Array1::from(x).into_dyn();
    let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let r = compare_calibrators(x.view(), spec).unwrap();
    for c in &r.results {
        assert_eq!(c.range.0, 0.0, "{r}");
        assert!(c.range.1 > 1.0 && c.range.1 <= 2.0 + 2.0 / 255.0, "{r}");
    }
}

#[test]
fn percentile_must_lie_in_0_100() {
    let spec = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8);
    for p in [0.0, -1.0, 100.5, f64::NAN] {
        assert!(
            matches!(
                PercentileObserver::new(spec, p),
                Err(QuantError::InvalidParameter { .. })
            ),
            "{p}"
        );
    }
}

#[test]
fn calibrators_before_any_data_are_empty() {
    let spec = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8);
    let e = EntropyObserver::new(spec).unwrap();
    assert!(matches!(e.qparams(), Err(QuantError::Empty { .. })));
    let m = MseObserver::new(spec).unwrap();
    assert!(matches!(m.range(), Err(QuantError::Empty { .. })));
    let p = PercentileObserver::new(spec, 99.0).unwrap();
    assert!(matches!(p.range(), Err(QuantError::Empty { .. })));
}

#[test]
fn percentile_symmetric_tail_clips_outliers_only() {
    // 1000 values 0.001..=1.0 and 10 outliers at 100: p = 99 lets 1% of 1010 values (10.1)
    // lie above the threshold, so the 10 outliers are clipped but nothing of the bulk. The
    // histogram's top is 128 = 2^7 (covers 100), bins of 128/2048 = 0.0625: the threshold is
    // the upper edge of the bin holding 1.0, 17·0.0625 = 1.0625; the low end is the observed
    // min 0.001 (the range is clamped to the data).
    let mut v: Vec<f32> = (1..=1000).map(|i| i as f32 / 1000.0).collect();
    v.extend(std::iter::repeat_n(100.0, 10));
    let x = Array1::from(v).into_dyn();
    let mut sym =
        PercentileObserver::new(QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8), 99.0)
            .unwrap();
    sym.observe(&x).unwrap();
    assert_eq!(sym.range().unwrap(), (0.001, 1.0625));
}

#[test]
fn percentile_100_is_the_observed_range() {
    // Same data: p = 100 keeps everything, the observed [0.001, 100].
    let mut v: Vec<f32> = (1..=1000).map(|i| i as f32 / 1000.0).collect();
    v.extend(std::iter::repeat_n(100.0, 10));
    let x = Array1::from(v).into_dyn();
    let mut full =
        PercentileObserver::new(QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8), 100.0)
            .unwrap();
    full.observe(&x).unwrap();
    assert_eq!(full.range().unwrap(), (0.001, 100.0));
}
