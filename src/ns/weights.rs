//! Float against quantized weights, per tensor and per output channel (PyTorch's
//! `compare_weights` / FX `extract_weights`, with the metrics computed).

use ndarray::{ArrayRef, Axis, Dimension};

use super::stats::ErrorStats;
use crate::error::Result;
use crate::nn::Model;

/// One output channel (index of the weight's first axis).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ChannelWeight {
    /// SQNR of this channel's weights (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub sqnr_db: f64,
    /// Smallest float weight.
    pub min: f32,
    /// Largest float weight.
    pub max: f32,
}

/// A layer's float weight against its quantized (dequantized) weight.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WeightComparison {
    /// The weight's shape (output channels first).
    pub shape: Vec<usize>,
    /// SQNR of the whole tensor (dB), PyTorch's `compute_sqnr`.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub sqnr_db: f64,
    /// Normalized L2 error.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub normalized_l2: f64,
    /// Cosine similarity.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub cosine: f64,
    /// Mean squared error.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub mse: f64,
    /// Largest absolute error.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub max_abs: f64,
    /// One entry per output channel.
    pub channels: Vec<ChannelWeight>,
}

impl WeightComparison {
    /// The output channel with the lowest SQNR.
    #[must_use]
    pub fn worst_channel(&self) -> Option<usize> {
        (0..self.channels.len())
            .filter(|&c| !self.channels[c].sqnr_db.is_nan())
            .min_by(|&a, &b| {
                self.channels[a]
                    .sqnr_db
                    .total_cmp(&self.channels[b].sqnr_db)
            })
    }

    /// Widest channel range over narrowest (`max − min` of the float weights): how much a
    /// single per-tensor scale must stretch. `inf` when a channel is constant.
    #[must_use]
    pub fn range_spread(&self) -> f64 {
        let widths = self
            .channels
            .iter()
            .map(|c| f64::from(c.max) - f64::from(c.min));
        let (lo, hi) = widths.fold((f64::INFINITY, 0.0f64), |(lo, hi), w| {
            (lo.min(w), hi.max(w))
        });
        hi / lo
    }
}

/// Compares a float weight with its quantized (dequantized) version. The first axis is
/// the output-channel axis.
///
/// # Errors
/// [`QuantError::ShapeMismatch`](crate::QuantError::ShapeMismatch) for different shapes; [`QuantError::InvalidAxis`](crate::QuantError::InvalidAxis) for a
/// 0-d weight; [`QuantError::EmptyInput`](crate::QuantError::EmptyInput) for an empty one; [`QuantError::NanInput`](crate::QuantError::NanInput) /
/// [`QuantError::NonFinite`](crate::QuantError::NonFinite) for a NaN or an infinity.
///
/// # Examples
/// ```
/// use ndarray::array;
/// let w = array![[0.5f32, -0.25], [1.0, 2.0]];
/// let q = array![[0.5f32, -0.25], [1.0, 1.9]];
/// let c = qnumeric::ns::compare_weight_tensors(&w, &q)?;
/// assert_eq!(c.channels[0].sqnr_db, f64::INFINITY);
/// assert_eq!(c.worst_channel(), Some(1));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn compare_weight_tensors<D: Dimension>(
    float: &ArrayRef<f32, D>,
    quant: &ArrayRef<f32, D>,
) -> Result<WeightComparison> {
    let mut stats = ErrorStats::new();
    stats
        .update(float, quant, None)
        .map_err(|e| e.with_op(OP))?;
    let channels = float
        .view()
        .into_dyn()
        .axis_iter(Axis(0))
        .zip(stats.sample_stats())
        .map(|(w, s)| {
            let (min, max) = w
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            ChannelWeight {
                sqnr_db: s.sqnr_db,
                min,
                max,
            }
        })
        .collect();
    Ok(WeightComparison {
        shape: float.shape().to_vec(),
        sqnr_db: stats.sqnr_db(),
        normalized_l2: stats.normalized_l2(),
        cosine: stats.cosine(),
        mse: stats.mse(),
        max_abs: stats.max_abs(),
        channels,
    })
}

const OP: &str = "compare_weights";

/// Compares the weights of every layer of `quant` that has one with the weight of the
/// layer of the same name in `float` (PyTorch's `compare_weights`), in `quant`'s execution
/// order. Layers without a weight, or without a float twin that has one, are left out.
///
/// # Errors
/// As [`compare_weight_tensors`] for a pair of weights that cannot be compared.
pub fn compare_weights<F: Model + ?Sized, Q: Model + ?Sized>(
    float: &F,
    quant: &Q,
) -> Result<Vec<(String, WeightComparison)>> {
    let mut out = Vec::new();
    for name in quant.layer_names() {
        let (Some(q), Some(f)) = (quant.layer(&name), float.layer(&name)) else {
            continue;
        };
        let (Some(wq), Some(wf)) = (q.weight(), f.weight()) else {
            continue;
        };
        let c = compare_weight_tensors(&wf.to_float(), &wq.to_float())?;
        out.push((name, c));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::QuantError;

    use ndarray::{Array0, array};

    #[test]
    fn errors_name_compare_weights() {
        let w = array![[1.0f32, 2.0]];
        let q = array![[1.0f32, 2.0, 3.0]];
        assert!(matches!(
            compare_weight_tensors(&w, &q),
            Err(QuantError::ShapeMismatch { op: OP, .. })
        ));
        let z = Array0::from_elem((), 1.0f32);
        assert!(matches!(
            compare_weight_tensors(&z, &z),
            Err(QuantError::InvalidAxis { op: OP, .. })
        ));
        // NaN in the float weights is refused; in the quantized ones it is a finding (-inf)
        let n = array![[1.0f32, f32::NAN]];
        assert!(matches!(
            compare_weight_tensors(&n, &w),
            Err(QuantError::NanInput { op: OP, index: 1 })
        ));
        let c = compare_weight_tensors(&w, &n).expect("a finding");
        assert_eq!(c.sqnr_db, f64::NEG_INFINITY);
        let e = ndarray::Array2::<f32>::zeros((2, 0));
        assert!(matches!(
            compare_weight_tensors(&e, &e),
            Err(QuantError::EmptyInput { op: OP })
        ));
    }

    #[test]
    fn ranges_and_spread() {
        let w = array![[0.0f32, 1.0], [-2.0, 2.0]];
        let c = compare_weight_tensors(&w, &w).expect("ok");
        assert_eq!((c.channels[1].min, c.channels[1].max), (-2.0, 2.0));
        assert_eq!(c.range_spread(), 4.0);
        assert_eq!(c.sqnr_db, f64::INFINITY);
    }
}
