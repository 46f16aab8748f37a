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
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / ((1u64 << 24) as f32)
        })
        .collect()
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

fn specs() -> Vec<QSpec> {
    vec![
        QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8),
        QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8),
    ]
}

#[test]
fn clipping_calibrators_beat_minmax_with_outliers() {
    let x = normal_with_outliers(1 << 20);
    for spec in specs() {
        let r = compare_calibrators(x.view(), spec).unwrap();
        let minmax = r.get("minmax").unwrap().sqnr_db;
        for name in ["percentile-99.9", "percentile-99.99", "entropy", "mse"] {
            let c = r.get(name).unwrap();
            assert!(
                c.sqnr_db > minmax + 1.0,
                "{name}: {} dB vs minmax {minmax} dB\n{r}",
                c.sqnr_db
            );
        }
        assert_ne!(r.best().name, "minmax", "{r}");
        assert!(r.get("minmax").unwrap().clipped_fraction < 1e-5, "{r}");
        println!("{r}");
        assert!(r.best().clipped_fraction > 0.0);
        let shown = r.to_string();
        assert!(shown.contains("winner:"), "{shown}");
    }
}

#[test]
fn minmax_wins_on_uniform_data() {
    let x: Vec<f32> = uniform(50_000, 11)
        .into_iter()
        .map(|v| 2.0 * v - 1.0)
        .collect();
    let x = Array1::from(x).into_dyn();
    for spec in specs() {
        let r = compare_calibrators(x.view(), spec).unwrap();
        assert_eq!(r.best().name, "minmax", "{r}");
        let minmax = r.get("minmax").unwrap().sqnr_db;
        for c in &r.results {
            assert!(c.sqnr_db <= minmax + 0.05, "{r}");
        }
    }
}

#[test]
fn comparison_refuses_bad_input() {
    let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let empty = ArrayD::<f32>::zeros(vec![0]);
    assert!(matches!(
        compare_calibrators(empty.view(), spec),
        Err(QuantError::EmptyInput { .. })
    ));
    let nan = Array1::from(vec![1.0f32, f32::NAN]).into_dyn();
    assert!(matches!(
        compare_calibrators(nan.view(), spec),
        Err(QuantError::NanInput { .. })
    ));
    let pc = QSpec::new(QScheme::PerChannelAffine, QDType::QUInt8);
    let x = Array1::from(vec![1.0f32, 2.0]).into_dyn();
    assert!(matches!(
        compare_calibrators(x.view(), pc),
        Err(QuantError::UnsupportedConfig { .. })
    ));
}

#[test]
fn calibrators_refuse_bad_parameters_and_empty_state() {
    let spec = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8);
    for p in [0.0, -1.0, 100.5, f64::NAN] {
        assert!(matches!(
            PercentileObserver::new(spec, p),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
    let e = EntropyObserver::new(spec).unwrap();
    assert!(matches!(e.qparams(), Err(QuantError::Empty { .. })));
    let m = MseObserver::new(spec).unwrap();
    assert!(matches!(m.range(), Err(QuantError::Empty { .. })));
}

#[test]
fn percentile_tail_convention() {
    // 1000 values 0.001..=1.0 and 10 outliers at 100: p = 99 clips the outliers
    // (1% of 1010 values may lie above) but nothing of the bulk.
    let mut v: Vec<f32> = (1..=1000).map(|i| i as f32 / 1000.0).collect();
    v.extend(std::iter::repeat(100.0).take(10));
    let x = Array1::from(v).into_dyn();
    let mut sym =
        PercentileObserver::new(QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8), 99.0)
            .unwrap();
    sym.observe(x.view()).unwrap();
    let (lo, hi) = sym.range().unwrap();
    assert!((1.0..1.1).contains(&hi), "{hi}");
    assert_eq!(lo, 0.001);
    let mut full =
        PercentileObserver::new(QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8), 100.0)
            .unwrap();
    full.observe(x.view()).unwrap();
    assert_eq!(full.range().unwrap(), (0.001, 100.0));
}
