//! [`WeightedCore`]: the weight, bias and fused ReLU that every weighted layer (linear,
//! convolutions) shares.

use ndarray::{ArrayD, ArrayViewD};

use crate::error::{QuantError, Result};
use crate::nn::sgemm::{Mat, PANEL_COLS, PackedA, PackedB, packing_pays};

/// Weight, optional bias and fused ReLU of a weighted layer. The weight is `[out, ...]` (axis 0
/// is the output channel) and kept in standard (row-major) layout; the bias is `[out]`.
///
/// # Examples
/// ```
/// use ndarray::{arr1, ArrayD, IxDyn};
/// use qnumeric::nn::WeightedCore;
/// let core = WeightedCore::new(ArrayD::zeros(IxDyn(&[4, 3])), Some(arr1(&[0.0f32; 4]).into_dyn()))?
///     .with_relu();
/// assert_eq!(core.out_channels(), 4);
/// assert!(core.has_relu());
/// assert!(WeightedCore::new(ArrayD::zeros(IxDyn(&[4, 3])), Some(arr1(&[0.0f32; 3]).into_dyn())).is_err());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedCore {
    weight: ArrayD<f32>,
    bias: Option<ArrayD<f32>>,
    relu: bool,
    packed: PackCache,
}

/// The weight packed for the float matrix product of a linear layer, built on the first
/// forward pass that can use it (as fbgemm and oneDNN pack at `prepare`). A cache: it takes
/// no part in equality and is rebuilt from the weight, which never changes after
/// construction.
#[derive(Clone, Default)]
struct PackCache(std::sync::OnceLock<Option<std::sync::Arc<PackedWeight>>>);

/// A weight packed for the float matrix product.
#[derive(Debug)]
enum PackedWeight {
    /// A linear layer's `[out, k]` weight, transposed: the product's second operand.
    Linear(PackedB),
    /// A convolution's weight, one `[out/groups, in/groups·kh·kw]` first operand per group.
    Conv {
        groups: usize,
        per_group: Vec<PackedA>,
    },
    /// A convolution's weight, one `[in/groups·kh·kw, out/groups]` second operand per group
    /// (transposed: output channels as columns).
    ConvColumns {
        groups: usize,
        per_group: Vec<PackedB>,
    },
}

/// A convolution's weight packed for the float matrix product, per group.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PackedConv<'a> {
    /// Output channels as the rows of the first operand (the unfolded input's positions are
    /// the columns).
    Rows(&'a [PackedA]),
    /// Output channels as the columns of the second operand (the positions are the rows): for
    /// groups of whole column panels, which then compute no padding.
    Columns(&'a [PackedB]),
}

impl PartialEq for PackCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "PackCache(packed)"
        } else {
            "PackCache(empty)"
        })
    }
}

impl WeightedCore {
    /// A core from a weight `[out, ...]` (rank >= 2) and an optional bias `[out]`, without ReLU.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight of rank < 2 or a bias that is not `[out]`.
    pub fn new(weight: ArrayD<f32>, bias: Option<ArrayD<f32>>) -> Result<Self> {
        const OP: &str = "WeightedCore::new";
        if weight.ndim() < 2 {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0, 0],
                got: weight.shape().to_vec(),
            });
        }
        check_bias(OP, bias.as_ref(), weight.shape()[0])?;
        let weight = if weight.is_standard_layout() {
            weight
        } else {
            weight.as_standard_layout().into_owned()
        };
        let bias = bias.map(|b| b.as_standard_layout().into_owned());
        Ok(WeightedCore {
            weight,
            bias,
            relu: false,
            packed: PackCache::default(),
        })
    }

    /// The same core with a fused ReLU.
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Whether a ReLU is fused.
    #[must_use]
    pub fn has_relu(&self) -> bool {
        self.relu
    }

    /// The weight (standard layout).
    #[must_use]
    pub fn weight(&self) -> &ArrayD<f32> {
        &self.weight
    }

    /// The weight as a view.
    #[must_use]
    pub fn weight_view(&self) -> ArrayViewD<'_, f32> {
        self.weight.view()
    }

    /// The weight's values in row-major order.
    #[must_use]
    pub fn weight_slice(&self) -> &[f32] {
        self.weight
            .as_slice()
            .expect("the constructor keeps the weight in standard layout")
    }

    /// The bias `[out]`, if any.
    #[must_use]
    pub fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }

    /// The bias's values, if any.
    #[must_use]
    pub fn bias_slice(&self) -> Option<&[f32]> {
        self.bias.as_ref().map(|b| {
            b.as_slice()
                .expect("the constructor keeps the bias in standard layout")
        })
    }

    /// The weight `[out, k]` of a linear layer, transposed and packed for the float matrix
    /// product, where the CPU's product uses packed operands (built on first use, then shared
    /// by clones); `None` elsewhere, or for a weight of another rank.
    pub(crate) fn packed_linear(&self) -> Option<&PackedB> {
        let packed = self.packed.0.get_or_init(|| {
            let &[out, k] = self.weight.shape() else {
                return None;
            };
            packing_pays().then(|| {
                std::sync::Arc::new(PackedWeight::Linear(PackedB::new(
                    k,
                    out,
                    Mat::transposed(self.weight_slice(), k),
                )))
            })
        });
        match packed.as_deref() {
            Some(PackedWeight::Linear(p)) => Some(p),
            _ => None,
        }
    }

    /// A convolution's weight `[out, in/groups, ...]` packed per group for the float matrix
    /// product (`[out/groups, in/groups·kh·kw]` each), as [`WeightedCore::packed_linear`].
    ///
    /// Groups whose output channels fill whole column panels of the product
    /// ([`PANEL_COLS`]) are packed as its second operand ([`PackedConv::Columns`]), other
    /// groups as its first ([`PackedConv::Rows`]).
    pub(crate) fn packed_conv(&self, groups: usize) -> Option<PackedConv<'_>> {
        let packed = self.packed.0.get_or_init(|| {
            let out = self.out_channels();
            if !packing_pays() || groups == 0 || !out.is_multiple_of(groups) {
                return None;
            }
            let (og, kk) = (out / groups, self.weight.len() / out.max(1));
            let group = |g: usize| &self.weight_slice()[g * og * kk..][..og * kk];
            Some(std::sync::Arc::new(if og.is_multiple_of(PANEL_COLS) {
                PackedWeight::ConvColumns {
                    groups,
                    per_group: (0..groups)
                        .map(|g| PackedB::new(kk, og, Mat::transposed(group(g), kk)))
                        .collect(),
                }
            } else {
                PackedWeight::Conv {
                    groups,
                    per_group: (0..groups)
                        .map(|g| PackedA::new(og, kk, Mat::rows(group(g), kk)))
                        .collect(),
                }
            }))
        });
        match packed.as_deref() {
            Some(PackedWeight::Conv {
                groups: g,
                per_group,
            }) if *g == groups => Some(PackedConv::Rows(per_group)),
            Some(PackedWeight::ConvColumns {
                groups: g,
                per_group,
            }) if *g == groups => Some(PackedConv::Columns(per_group)),
            _ => None,
        }
    }

    /// Output channels (axis 0 of the weight).
    #[must_use]
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }
}

pub(crate) fn check_bias(
    op: &'static str,
    bias: Option<&ArrayD<f32>>,
    out_channels: usize,
) -> Result<()> {
    if let Some(b) = bias
        && (b.ndim() != 1 || b.len() != out_channels)
    {
        return Err(QuantError::ShapeMismatch {
            op,
            expected: vec![out_channels],
            got: b.shape().to_vec(),
        });
    }
    Ok(())
}

/// `max(v, 0)`; NaN propagates, as `torch.relu` does.
#[inline]
pub(crate) fn relu_f32(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

/// Adds the bias (channel `c` of `rows` each `inner` long, channel = row % channels) and
/// applies the ReLU.
pub(crate) fn finish_rows(out: &mut [f32], channels: usize, inner: usize, core: &WeightedCore) {
    let relu = core.has_relu();
    // One pass: the bias, then the ReLU, of each element (the same operations in the same
    // order as adding the bias everywhere first).
    let finish = |run: &mut [f32], bv: f32| {
        if relu {
            for v in run {
                *v = relu_f32(*v + bv);
            }
        } else {
            for v in run {
                *v += bv;
            }
        }
    };
    match core.bias_slice() {
        Some(b) if inner == 1 && channels > 0 => {
            for row in out.chunks_mut(channels) {
                if relu {
                    for (v, &bv) in row.iter_mut().zip(b) {
                        *v = relu_f32(*v + bv);
                    }
                } else {
                    for (v, &bv) in row.iter_mut().zip(b) {
                        *v += bv;
                    }
                }
            }
        }
        Some(b) if inner > 0 => {
            for (i, chunk) in out.chunks_mut(inner).enumerate() {
                finish(chunk, b[i % channels.max(1)]);
            }
        }
        _ if relu => {
            for v in out.iter_mut() {
                *v = relu_f32(*v);
            }
        }
        _ => {}
    }
}
