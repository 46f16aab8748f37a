//! Calibration for the formats: a running, mergeable `amax` (per tensor or per column block:
//! float8's static scales, MX / NVFP4 activation statistics), and an MSE search over group
//! scales for group-wise integers (what weight-only quantizers without GPTQ do).

use super::float8::Float8Spec;
use super::groupwise::{GroupwiseSpec, GroupwiseTensor};
use super::{check_finite, check_rows};
use crate::error::{QuantError, Result};

/// What an [`AmaxObserver`] keeps one `amax` for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AmaxGranularity {
    /// One for the whole tensor.
    Tensor,
    /// One per block of `block` columns (the last axis), over every row seen.
    ColumnBlocks {
        /// Columns per block.
        block: usize,
    },
}

/// A running `max |x|`: per tensor or per block of columns, over every batch observed.
/// Merging two observers equals one observer over both shards' data (a maximum is exact).
///
/// ```
/// use qnumeric::formats::float8::{Float8Granularity, Float8Recipe, Float8Spec};
/// use qnumeric::formats::minifloat::MiniFloat;
/// use qnumeric::formats::observe::{AmaxGranularity, AmaxObserver};
/// let mut a = AmaxObserver::new(4, AmaxGranularity::Tensor)?;
/// let mut b = a.clone();
/// a.observe(&[1.0, -3.0, 0.5, 2.0])?;
/// b.observe(&[0.0, 0.0, 7.0, 0.0])?;
/// a.merge(&b)?;
/// assert_eq!(a.amax(), &[7.0]);
/// let spec = Float8Spec::new(MiniFloat::E4M3Fn, Float8Recipe::Inference, Float8Granularity::Tensorwise)?;
/// assert_eq!(a.float8_scales(&spec)?, vec![7.0 / 448.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AmaxObserver {
    row_len: usize,
    granularity: AmaxGranularity,
    amax: Vec<f32>,
    rows: u64,
}

impl AmaxObserver {
    /// An observer of rows of `row_len`.
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] for a zero row length or a block that does not divide it.
    pub fn new(row_len: usize, granularity: AmaxGranularity) -> Result<Self> {
        let n = match granularity {
            AmaxGranularity::Tensor => {
                check_rows("AmaxObserver::new", row_len, row_len, 1, row_len)?;
                1
            }
            AmaxGranularity::ColumnBlocks { block } => {
                check_rows("AmaxObserver::new", row_len, row_len, block, row_len)?;
                row_len / block
            }
        };
        Ok(AmaxObserver {
            row_len,
            granularity,
            amax: vec![0.0; n],
            rows: 0,
        })
    }

    /// Feeds rows (a multiple of `row_len` values).
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] for a length that is not whole rows;
    /// [`QuantError::NanInput`] / [`QuantError::InfiniteInput`] (nothing is recorded).
    pub fn observe(&mut self, x: &[f32]) -> Result<()> {
        const OP: &str = "AmaxObserver::observe";
        check_rows(OP, x.len(), self.row_len, 1, x.len())?;
        check_finite(OP, x)?;
        let per = self.row_len / self.amax.len();
        for row in x.chunks_exact(self.row_len) {
            for (a, block) in self.amax.iter_mut().zip(row.chunks_exact(per)) {
                *a = block.iter().fold(*a, |m, v| m.max(v.abs()));
            }
        }
        self.rows += (x.len() / self.row_len) as u64;
        Ok(())
    }

    /// Adds another observer's statistics (same row length and granularity).
    ///
    /// # Errors
    /// [`QuantError::Incompatible`] for another configuration.
    pub fn merge(&mut self, other: &AmaxObserver) -> Result<()> {
        if other.row_len != self.row_len || other.granularity != self.granularity {
            return Err(QuantError::Incompatible {
                op: "AmaxObserver::merge",
                reason: "row length or granularity differ",
            });
        }
        for (a, b) in self.amax.iter_mut().zip(&other.amax) {
            *a = a.max(*b);
        }
        self.rows += other.rows;
        Ok(())
    }

    /// The running `amax` values.
    #[must_use]
    pub fn amax(&self) -> &[f32] {
        &self.amax
    }

    /// Rows observed.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The float8 scale of each `amax` under `spec`'s recipe (a static scale).
    ///
    /// # Errors
    /// [`QuantError::Empty`] before any row was observed; [`Float8Spec::new`]'s error for a
    /// spec built field by field with another element type.
    pub fn float8_scales(&self, spec: &Float8Spec) -> Result<Vec<f32>> {
        Float8Spec::new(spec.dtype, spec.recipe, spec.granularity)
            .map_err(|e| e.with_op("AmaxObserver::float8_scales"))?;
        if self.rows == 0 {
            return Err(QuantError::Empty {
                op: "AmaxObserver::float8_scales",
            });
        }
        Ok(self.amax.iter().map(|&a| spec.scale_for(a)).collect())
    }
}

/// The result of [`mse_group_search`].
#[derive(Debug, Clone, PartialEq)]
pub struct MseGroupSearch {
    /// The quantized tensor with the chosen parameters.
    pub tensor: GroupwiseTensor,
    /// The shrink factor chosen for each group (1: the min/max range).
    pub shrink: Vec<f32>,
    /// Squared error with the min/max parameters and with the chosen ones (sums over all
    /// elements, `f64`).
    pub sse_minmax: f64,
    /// Squared error with the chosen parameters.
    pub sse: f64,
}

/// The shrink factors tried: `1.0, 0.95, …, 0.50`.
pub const MSE_SHRINK_GRID: [f32; 11] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5];

/// Group-wise quantization with each group's range shrunk by the factor of
/// [`MSE_SHRINK_GRID`] with the smallest squared error (ties: the larger factor). Clipping a
/// few outliers buys resolution for the rest: on heavy-tailed weights the error drops, and it
/// never exceeds min/max's (factor 1 is on the grid). The zero point follows the shrunk range
/// as `choose_qparams_affine` computes it.
///
/// # Errors
/// As [`GroupwiseSpec::quantize_rows`].
pub fn mse_group_search(spec: &GroupwiseSpec, x: &[f32], row_len: usize) -> Result<MseGroupSearch> {
    let base = spec.quantize_rows(x, row_len)?;
    let g = spec.group_size;
    let (qmin, qmax) = (spec.quant_min, spec.quant_max);
    let mut tensor = base.clone();
    let mut shrink = Vec::with_capacity(base.scales.len());
    let (mut sse_minmax, mut sse) = (0.0f64, 0.0f64);
    let mut shrunk = vec![0.0f32; g];
    for (k, group) in x.chunks_exact(g).enumerate() {
        let mut best: Option<(f64, f32, f32, i32)> = None;
        for &f in &MSE_SHRINK_GRID {
            // The range scaled by f: the parameters of the shrunk group.
            for (s, v) in shrunk.iter_mut().zip(group) {
                *s = v * f;
            }
            let (scale, zp) = spec.qparams(&shrunk);
            let inv = 1.0 / scale;
            let err: f64 = group
                .iter()
                .map(|&v| {
                    let q =
                        ((v * inv).round_ties_even() + zp as f32).clamp(qmin as f32, qmax as f32);
                    let d = f64::from((q - zp as f32) * scale) - f64::from(v);
                    d * d
                })
                .sum();
            if f == 1.0 {
                sse_minmax += err;
            }
            if best.is_none_or(|b| err < b.0) {
                best = Some((err, f, scale, zp));
            }
        }
        let Some((err, f, scale, zp)) = best else {
            continue;
        };
        sse += err;
        shrink.push(f);
        tensor.scales[k] = scale;
        tensor.zero_points[k] = zp;
        let inv = 1.0 / scale;
        for (c, &v) in tensor.codes[k * g..(k + 1) * g].iter_mut().zip(group) {
            *c = ((v * inv).round_ties_even() + zp as f32).clamp(qmin as f32, qmax as f32) as i32;
        }
    }
    Ok(MseGroupSearch {
        tensor,
        shrink,
        sse_minmax,
        sse,
    })
}
