//! Padding masks ([`Mask`]) and what a sample is ([`SampleDims`], [`SampleId`]).
//!
//! A transformer runs on padded batches: `[N, T, ...]` tensors where only the first `L_n`
//! positions of sample `n` are real. Padded positions carry whatever the model computed for
//! them (often a large error no user sees), so every figure of a masked comparison leaves
//! them out.

use std::fmt;

use ndarray::{Array2, ArrayD, ArrayRef, ArrayViewD, Axis, Dimension, Ix2, IxDyn};

use crate::element::QFloat;
use crate::error::{QuantError, Result};

/// Which positions of `[N, T, ...]` tensors are real (`true`) and which are padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    real: Array2<bool>,
    lens: Vec<usize>,
}

/// What one sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum SampleDims {
    /// Axis 0 is the sample: a sample's figures add up its real positions (the default;
    /// `--sample-dims 1`).
    #[default]
    Samples,
    /// Every real `(n, t)` position of an `[N, T, ...]` tensor is a sample (tokens as
    /// samples; `--sample-dims 2`); padded positions are dropped.
    Positions,
}

impl SampleDims {
    /// From the command line's `--sample-dims`: 1 or 2.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for anything else.
    pub fn from_count(n: usize) -> Result<Self> {
        match n {
            1 => Ok(SampleDims::Samples),
            2 => Ok(SampleDims::Positions),
            _ => Err(QuantError::InvalidParameter {
                op: "SampleDims::from_count",
                what: "sample dims",
                value: n as f64,
                reason: "must be 1 (axis 0 is the sample) or 2 (every (n, t) position is)",
            }),
        }
    }
}

/// A sample's name in a report: `n`, or `n:t` for a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SampleId {
    /// Index along axis 0.
    pub sample: usize,
    /// Index along axis 1 when samples are positions.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub position: Option<usize>,
}

impl fmt::Display for SampleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(t) => write!(f, "{}:{t}", self.sample),
            None => write!(f, "{}", self.sample),
        }
    }
}

impl Mask {
    /// A mask from booleans `[N, T]` (`true` = a real position).
    ///
    /// # Errors
    /// [`QuantError::EmptyInput`] for `N = 0` or `T = 0`; [`QuantError::InvalidParameter`]
    /// naming the first sample with no real position (it would have no figures at all).
    ///
    /// # Examples
    /// ```
    /// use ndarray::array;
    /// use qnumeric::ns::Mask;
    ///
    /// let m = Mask::new(array![[true, true, false], [true, false, false]])?;
    /// assert_eq!(m.real_len(1), Some(1));
    /// assert_eq!(m.real_positions(), 3);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn new(real: Array2<bool>) -> Result<Self> {
        const OP: &str = "Mask::new";
        if real.is_empty() {
            return Err(QuantError::EmptyInput { op: OP });
        }
        let lens: Vec<usize> = real
            .outer_iter()
            .map(|r| r.iter().filter(|&&b| b).count())
            .collect();
        if let Some(n) = lens.iter().position(|&l| l == 0) {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "mask sample",
                value: n as f64,
                reason: "this sample has no real position (every position is padding)",
            });
        }
        Ok(Mask { real, lens })
    }

    /// A mask from numbers `[N, T]`: nonzero = a real position (PyTorch's `attention_mask`).
    ///
    /// # Errors
    /// As [`Mask::new`]; [`QuantError::InvalidAxis`] when `values` is not 2-D (`[N, T]`);
    /// [`QuantError::NonFinite`] for NaN.
    pub fn from_values<A: QFloat, D: Dimension>(values: &ArrayRef<A, D>) -> Result<Self> {
        const OP: &str = "Mask::from_values";
        let v = values
            .view()
            .into_dyn()
            .into_dimensionality::<Ix2>()
            .map_err(|_| QuantError::InvalidAxis {
                op: OP,
                axis: 1,
                ndim: values.ndim(),
            })?;
        if let Some(bad) = v.iter().map(|a| a.to_f64_exact()).find(|a| a.is_nan()) {
            return Err(QuantError::NonFinite {
                op: OP,
                what: "mask value",
                value: bad,
            });
        }
        Self::new(v.mapv(|a| a.to_f64_exact() != 0.0))
    }

    /// `(N, T)`.
    #[must_use]
    pub fn shape(&self) -> (usize, usize) {
        self.real.dim()
    }

    /// The booleans `[N, T]`.
    #[must_use]
    pub fn as_array(&self) -> &Array2<bool> {
        &self.real
    }

    /// Whether the mask applies to a tensor of this shape: its leading dimensions are
    /// `[N, T]`.
    #[must_use]
    pub fn applies_to(&self, shape: &[usize]) -> bool {
        let (n, t) = self.shape();
        shape.len() >= 2 && shape[0] == n && shape[1] == t
    }

    /// How many real positions sample `n` has (`None` past the last sample).
    #[must_use]
    pub fn real_len(&self, n: usize) -> Option<usize> {
        self.lens.get(n).copied()
    }

    /// How many real positions in all.
    #[must_use]
    pub fn real_positions(&self) -> usize {
        self.lens.iter().sum()
    }

    /// The samples of an `[N, T, ...]` tensor under `dims`, in order.
    #[must_use]
    pub fn sample_ids(&self, dims: SampleDims) -> Vec<SampleId> {
        match dims {
            SampleDims::Samples => (0..self.shape().0)
                .map(|sample| SampleId {
                    sample,
                    position: None,
                })
                .collect(),
            SampleDims::Positions => self
                .real
                .indexed_iter()
                .filter(|(_, r)| **r)
                .map(|((sample, t), _)| SampleId {
                    sample,
                    position: Some(t),
                })
                .collect(),
        }
    }

    /// Sets every padded position of an `[N, T, ...]` tensor to zero; returns how many values
    /// were set. Zero in both the reference and the value under test adds nothing to any sum.
    pub(crate) fn zero_padding<A: Copy + num_traits::Zero>(&self, a: &mut ArrayD<A>) -> u64 {
        let mut zeroed = 0u64;
        for (mut row, real) in a.outer_iter_mut().zip(self.real.outer_iter()) {
            for (mut pos, &r) in row.outer_iter_mut().zip(real.iter()) {
                if !r {
                    zeroed += pos.len() as u64;
                    pos.fill(A::zero());
                }
            }
        }
        zeroed
    }

    /// The real positions of an `[N, T, ...]` tensor as rows `[P, ...]` (P real positions,
    /// in order).
    pub(crate) fn select_positions<A: Clone>(&self, a: &ArrayViewD<'_, A>) -> ArrayD<A> {
        let (n, t) = self.shape();
        let mut shape = vec![n * t];
        shape.extend_from_slice(&a.shape()[2..]);
        let flat = a
            .to_shape(IxDyn(&shape))
            .expect("[N, T, ...] reshapes to [N*T, ...]");
        let rows: Vec<usize> = self
            .real
            .iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .map(|(i, _)| i)
            .collect();
        flat.select(Axis(0), &rows)
    }
}
