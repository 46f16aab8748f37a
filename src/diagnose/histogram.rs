//! [`ActivationHistogram`]: a layer's float outputs binned next to the range its quantized
//! output can represent; and the binning of every histogram the diagnosis draws (the crate's
//! `torch.histc` counting).

use crate::error::{QuantError, Result};
use crate::observers::HistogramObserver;

/// A histogram of one layer's float outputs next to the range its quantized output can
/// represent.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ActivationHistogram {
    /// The layer.
    pub layer: String,
    /// Lowest finite value (`+inf` when there is none).
    pub min: f32,
    /// Highest finite value (`-inf` when there is none).
    pub max: f32,
    /// Counts of equal-width bins over `[min, max]` (`torch.histc`'s bin index).
    pub counts: Vec<u64>,
    /// Values left out because they were NaN or infinite.
    pub non_finite: u64,
    /// The quantized output's representable range, if the layer's output is quantized.
    pub representable: Option<(f32, f32)>,
}

impl ActivationHistogram {
    /// The most bins allowed: [`HistogramObserver::MAX_BINS`] (2^22).
    pub const MAX_BINS: usize = HistogramObserver::MAX_BINS;

    /// A histogram of the finite values of `x` in `bins` bins.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for `bins` outside `1..=2^22`
    /// ([`ActivationHistogram::MAX_BINS`]).
    ///
    /// # Examples
    /// ```
    /// use qnumeric::diagnose::ActivationHistogram;
    /// let h = ActivationHistogram::of("relu", &[0.0, 0.5, 1.0, f32::NAN], 2, None)?;
    /// assert_eq!(h.counts, vec![1, 2]);
    /// assert_eq!(h.non_finite, 1);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn of(
        layer: &str,
        x: &[f32],
        bins: usize,
        representable: Option<(f32, f32)>,
    ) -> Result<Self> {
        let (counts, min, max, non_finite) = bin_finite(x, bins)?;
        Ok(ActivationHistogram {
            layer: layer.to_string(),
            min,
            max,
            counts,
            non_finite,
            representable,
        })
    }
}

/// The finite values of `x` in `bins` equal bins over their own range: counts, lowest,
/// highest, and how many values were left out (NaN, ±inf). A single distinct value puts every
/// count in the first bin.
pub(crate) fn bin_finite(x: &[f32], bins: usize) -> Result<(Vec<u64>, f32, f32, u64)> {
    if bins == 0 || bins > HistogramObserver::MAX_BINS {
        return Err(QuantError::InvalidParameter {
            op: "ActivationHistogram::of",
            what: "bins",
            value: bins as f64,
            reason: "must be in 1..=2^22",
        });
    }
    let finite: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
    let non_finite = (x.len() - finite.len()) as u64;
    let (min, max) = finite
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let counts = if finite.is_empty() {
        vec![0; bins]
    } else if min < max && (max - min).is_finite() {
        crate::observers::histc_counts(&finite, min, max, bins)
    } else if min < max {
        // The width overflows f32: bin in f64.
        let mut c = vec![0u64; bins];
        let (lo, w) = (f64::from(min), f64::from(max) - f64::from(min));
        for &v in &finite {
            let i = ((f64::from(v) - lo) / w * bins as f64) as usize;
            c[i.min(bins - 1)] += 1;
        }
        c
    } else {
        let mut c = vec![0u64; bins];
        c[0] = finite.len() as u64;
        c
    };
    Ok((counts, min, max, non_finite))
}
