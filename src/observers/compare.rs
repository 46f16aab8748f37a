//! [`compare_calibrators`]: every calibrator on one tensor, side by side.

use std::fmt;

use ndarray::ArrayViewD;

use super::{
    EntropyObserver, HistogramObserver, MinMaxObserver, MseObserver, Observer, PercentileObserver,
};
use crate::error::{QuantError, Result};
use crate::kernels::fake_quantize;
use crate::metrics::sqnr;
use crate::qparams::AnyQParams;
use crate::qparams::{QParams, QSpec};

/// One calibrator's result on the tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibratorResult {
    /// The calibrator (`"minmax"`, `"histogram-l2"`, `"percentile-99.9"`, ...).
    pub name: String,
    /// The parameters it chose.
    pub qparams: QParams,
    /// The float range those parameters represent, `[(qmin − zp)·s, (qmax − zp)·s]`.
    pub range: (f32, f32),
    /// Fraction of the values clipped (fake-quantized more than half a step away).
    pub clipped_fraction: f64,
    /// Mean squared error of fake-quantizing the tensor with these parameters.
    pub mse: f64,
    /// SQNR (dB) of the fake-quantized tensor against the original.
    pub sqnr_db: f64,
}

/// The comparison: one row per calibrator and the winner.
///
/// The winner has the highest SQNR; a calibrator must beat min/max by more than
/// [`CalibratorComparison::TIE_DB`] to displace it (clipping is not worth recommending for a
/// rounding-level gain), and among the others ties go to the earlier row.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibratorComparison {
    /// The spec every calibrator used.
    pub spec: QSpec,
    /// Number of values compared.
    pub numel: usize,
    /// One row per calibrator, min/max first.
    pub results: Vec<CalibratorResult>,
    /// Index of the winner in `results`.
    pub winner: usize,
}

impl CalibratorComparison {
    /// SQNR margin (dB) a clipping calibrator needs over min/max to win.
    pub const TIE_DB: f64 = 0.05;

    /// The winning row.
    #[must_use]
    pub fn best(&self) -> &CalibratorResult {
        &self.results[self.winner]
    }

    /// The row of a calibrator by name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&CalibratorResult> {
        self.results.iter().find(|r| r.name == name)
    }
}

impl fmt::Display for CalibratorComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "calibrators on {} values ({}, {}..={}):",
            self.numel,
            self.spec.scheme().name(),
            self.spec.range().quant_min(),
            self.spec.range().quant_max()
        )?;
        writeln!(
            f,
            "  {:<18} {:>13} {:>13} {:>11} {:>9} {:>12} {:>9}",
            "calibrator", "min", "max", "scale", "clipped", "mse", "sqnr dB"
        )?;
        for (i, r) in self.results.iter().enumerate() {
            writeln!(
                f,
                "{} {:<18} {:>13.6e} {:>13.6e} {:>11.4e} {:>8.4}% {:>12.4e} {:>9.3}",
                if i == self.winner { '*' } else { ' ' },
                r.name,
                r.range.0,
                r.range.1,
                r.qparams.scale(),
                100.0 * r.clipped_fraction,
                r.mse,
                r.sqnr_db
            )?;
        }
        write!(f, "winner: {}", self.best().name)
    }
}

fn per_tensor(op: &'static str, q: AnyQParams) -> Result<QParams> {
    match q {
        AnyQParams::PerTensor(p) => Ok(p),
        AnyQParams::PerChannel(_) => Err(QuantError::UnsupportedConfig {
            op,
            reason: "the comparison is per tensor",
        }),
    }
}

/// Runs every calibrator — min/max, PyTorch's histogram (L2 search), percentile 99.9 and
/// 99.99, entropy (KL) and MSE — on one tensor with one per-tensor spec, and measures each
/// choice on the tensor itself: represented range, clipped fraction, MSE and SQNR.
///
/// # Errors
/// [`QuantError::EmptyInput`] for an empty tensor; [`QuantError::UnsupportedConfig`] for a
/// per-channel spec (and the spec errors of [`MinMaxObserver::new`]); NaN/inf as the
/// observers.
///
/// # Examples
/// ```
/// use ndarray::Array1;
/// use qnumeric::observers::compare_calibrators;
/// use qnumeric::{QDType, QScheme, QSpec};
///
/// let mut x: Vec<f32> = (0..20_000).map(|i| (i * 7919 % 20_000) as f32 / 20_000.0 - 0.5).collect();
/// x[0] = 60.0; // an outlier
/// let spec = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8);
/// let report = compare_calibrators(Array1::from(x).into_dyn().view(), spec)?;
/// assert_ne!(report.best().name, "minmax");
/// println!("{report}");
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn compare_calibrators(x: ArrayViewD<'_, f32>, spec: QSpec) -> Result<CalibratorComparison> {
    const OP: &str = "compare_calibrators";
    if x.is_empty() {
        return Err(QuantError::EmptyInput { op: OP });
    }
    let mut observers: Vec<(String, Box<dyn Observer>)> = vec![
        ("minmax".into(), Box::new(MinMaxObserver::new(spec)?)),
        (
            "histogram-l2".into(),
            Box::new(HistogramObserver::new(spec)?),
        ),
        (
            "percentile-99.9".into(),
            Box::new(PercentileObserver::new(spec, 99.9)?),
        ),
        (
            "percentile-99.99".into(),
            Box::new(PercentileObserver::new(spec, 99.99)?),
        ),
        ("entropy".into(), Box::new(EntropyObserver::new(spec)?)),
        ("mse".into(), Box::new(MseObserver::new(spec)?)),
    ];
    let mut results = Vec::with_capacity(observers.len());
    for (name, obs) in &mut observers {
        obs.observe(x.view())?;
        let qp = per_tensor(OP, obs.qparams()?)?;
        let y = fake_quantize(&x, &qp)?;
        let half = qp.scale() as f64 / 2.0;
        let mut se = 0.0f64;
        let mut clipped = 0usize;
        for (&a, &b) in x.iter().zip(y.iter()) {
            let d = (b as f64) - (a as f64);
            se += d * d;
            if d.abs() > half * (1.0 + 1e-6) {
                clipped += 1;
            }
        }
        let n = x.len() as f64;
        results.push(CalibratorResult {
            name: name.clone(),
            qparams: qp,
            range: qp.representable(),
            clipped_fraction: clipped as f64 / n,
            mse: se / n,
            sqnr_db: sqnr(&x, &y)?,
        });
    }
    let mut winner = 0;
    let mut best = results[0].sqnr_db + CalibratorComparison::TIE_DB;
    for (i, r) in results.iter().enumerate().skip(1) {
        if r.sqnr_db > best {
            best = r.sqnr_db;
            winner = i;
        }
    }
    Ok(CalibratorComparison {
        spec,
        numel: x.len(),
        results,
        winner,
    })
}
