//! Folding a BatchNorm into the weight and bias of the layer before it, in PyTorch's
//! operation order.

use ndarray::{ArrayD, IxDyn};

use crate::error::{QuantError, Result};
use crate::nn::BatchNormParams;

/// `r[c] = f32(1 / f32(sqrt(f32(rv[c] + f32(eps)))))`.
fn inv_std(bn: &BatchNormParams) -> Vec<f32> {
    let eps = bn.eps as f32;
    bn.running_var
        .iter()
        .map(|&v| 1.0 / (v + eps).sqrt())
        .collect()
}

fn bn_weight(bn: &BatchNormParams, c: usize) -> f32 {
    bn.weight.as_ref().map_or(1.0, |w| w[c])
}

fn bn_bias(bn: &BatchNormParams, c: usize) -> f32 {
    bn.bias.as_ref().map_or(0.0, |b| b[c])
}

/// The fused weight and bias must be finite: a finite weight times a large BatchNorm scale can
/// overflow `f32`.
fn finite_fused(op: &'static str, weight: &[f32], bias: &[f32]) -> Result<()> {
    for (what, list) in [("fused weight", weight), ("fused bias", bias)] {
        if let Some(&v) = list.iter().find(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite {
                op,
                what,
                value: f64::from(v),
            });
        }
    }
    Ok(())
}

fn bias_values(op: &'static str, bias: Option<&ArrayD<f32>>, len: usize) -> Result<Vec<f32>> {
    match bias {
        None => Ok(vec![0.0; len]),
        Some(b) => {
            if b.ndim() != 1 || b.len() != len {
                return Err(QuantError::ShapeMismatch {
                    op,
                    expected: vec![len],
                    got: b.shape().to_vec(),
                });
            }
            Ok(b.iter().copied().collect())
        }
    }
}

/// Folds a BatchNorm into a convolution's weight and bias (PyTorch's `fuse_conv_bn_weights`,
/// bit for bit; the grouped transposed case done right).
///
/// `conv_weight` is `[out, in/groups, k...]` ([`ConvLayout::Conv`]), or the ConvTranspose
/// layout `[in, out/groups, k...]` ([`ConvLayout::Transposed`], which needs the groups); any
/// number of spatial axes (Conv1d/2d/3d). A missing bias counts as zeros. Returns the fused
/// weight (same shape) and bias `[out]`.
///
/// # Errors
/// [`QuantError::ShapeMismatch`] for a weight of rank < 2 or a bias that is not `[out]`;
/// [`QuantError::LengthMismatch`] when the BN's channel count is not the convolution's output
/// channel count (or its lists disagree); [`QuantError::InvalidParameter`] for `groups == 0`,
/// groups that do not divide the input channels (transposed), a bad `eps` or running variance
/// (see [`BatchNormParams::validate`]); [`QuantError::NonFinite`] for a non-finite mean,
/// weight or bias of the BatchNorm.
///
/// # Examples
/// A grouped transposed convolution (PyTorch 2.15 cannot fuse it):
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::fusion::{fuse_conv_bn_weights, ConvLayout};
/// use qnumeric::nn::BatchNormParams;
/// // ConvTranspose2d(4 -> 4, groups 2): weight [in 4, out/groups 2, 1, 1]
/// let w = ArrayD::from_elem(IxDyn(&[4, 2, 1, 1]), 1.0f32);
/// let bn = BatchNormParams {
///     running_mean: vec![0.0; 4],
///     running_var: vec![1.0; 4],
///     weight: Some(vec![1.0, 2.0, 3.0, 4.0]),
///     bias: None,
///     eps: 0.0,
/// };
/// let (w2, _) = fuse_conv_bn_weights(&w, None, &bn, ConvLayout::Transposed { groups: 2 })?;
/// // group 0 (input channels 0, 1) feeds outputs 0, 1; group 1 feeds outputs 2, 3
/// assert_eq!(w2.as_slice(), Some(&[1.0f32, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0][..]));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn fuse_conv_bn_weights(
    conv_weight: &ArrayD<f32>,
    conv_bias: Option<&ArrayD<f32>>,
    bn: &BatchNormParams,
    layout: ConvLayout,
) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
    const OP: &str = "fuse_conv_bn_weights";
    let (transpose, groups) = match layout {
        ConvLayout::Conv => (false, 1),
        ConvLayout::Transposed { groups } => (true, groups),
    };
    bn.validate(OP)?;
    let shape = conv_weight.shape().to_vec();
    if shape.len() < 2 {
        return Err(QuantError::ShapeMismatch {
            op: OP,
            expected: vec![0, 0, 0],
            got: shape,
        });
    }
    if groups == 0 {
        return Err(QuantError::InvalidParameter {
            op: OP,
            what: "groups",
            value: 0.0,
            reason: "must be >= 1",
        });
    }
    let out = if transpose {
        if !shape[0].is_multiple_of(groups) {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "groups",
                value: groups as f64,
                reason: "must divide the input channels (weight.shape[0]) of a transposed convolution",
            });
        }
        shape[1] * groups
    } else {
        shape[0]
    };
    let c = bn.num_features();
    if c != out {
        return Err(QuantError::LengthMismatch {
            op: OP,
            what: "BatchNorm features (the convolution's output channels)",
            expected: out,
            got: c,
        });
    }
    let b = bias_values(OP, conv_bias, out)?;
    let r = inv_std(bn);
    let k: Vec<f32> = (0..c).map(|i| bn_weight(bn, i) * r[i]).collect();
    let inner: usize = shape[2..].iter().product();
    let data: Vec<f32> = conv_weight.iter().copied().collect();
    let fused: Vec<f32> = if transpose {
        let (per_out, in_per_group) = (shape[1], shape[0] / groups);
        data.iter()
            .enumerate()
            .map(|(idx, &w)| {
                let i = idx / (per_out * inner).max(1);
                let j = (idx / inner.max(1)) % per_out;
                w * k[(i / in_per_group) * per_out + j]
            })
            .collect()
    } else {
        let per_o: usize = shape[1] * inner;
        data.iter()
            .enumerate()
            .map(|(idx, &w)| w * k[idx / per_o.max(1)])
            .collect()
    };
    let bias: Vec<f32> = (0..c)
        .map(|i| ((b[i] - bn.running_mean[i]) * r[i]) * bn_weight(bn, i) + bn_bias(bn, i))
        .collect();
    finite_fused(OP, &fused, &bias)?;
    Ok((
        ArrayD::from_shape_vec(IxDyn(&shape), fused).expect("same shape"),
        ArrayD::from_shape_vec(IxDyn(&[c]), bias).expect("length c"),
    ))
}

/// The weight layout of the convolution given to [`fuse_conv_bn_weights`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvLayout {
    /// `Conv1d/2d/3d`: weight `[out, in/groups, k...]` (the groups do not matter).
    Conv,
    /// `ConvTranspose1d/2d/3d`: weight `[in, out/groups, k...]`.
    Transposed {
        /// The convolution's groups (>= 1, dividing the input channels).
        groups: usize,
    },
}

/// Folds a BatchNorm1d into a linear layer's weight `[out, in]` and bias (PyTorch's
/// `fuse_linear_bn_weights`, bit for bit). The BN has `out` features, or 1 (broadcast). A
/// missing bias counts as zeros; a BN without affine parameters as `γ = 1, β = 0`.
///
/// # Errors
/// [`QuantError::ShapeMismatch`] for a weight that is not 2-D or a bias that is not `[out]`;
/// [`QuantError::LengthMismatch`] when the BN has neither `out` nor 1 features;
/// [`QuantError::InvalidParameter`] for a bad `eps`.
pub fn fuse_linear_bn_weights(
    linear_weight: &ArrayD<f32>,
    linear_bias: Option<&ArrayD<f32>>,
    bn: &BatchNormParams,
) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
    const OP: &str = "fuse_linear_bn_weights";
    bn.validate(OP)?;
    if linear_weight.ndim() != 2 {
        return Err(QuantError::ShapeMismatch {
            op: OP,
            expected: vec![0, 0],
            got: linear_weight.shape().to_vec(),
        });
    }
    let (out, inp) = (linear_weight.shape()[0], linear_weight.shape()[1]);
    let c = bn.num_features();
    if c != out && c != 1 {
        return Err(QuantError::LengthMismatch {
            op: OP,
            what: "BatchNorm features (the linear layer's output features, or 1)",
            expected: out,
            got: c,
        });
    }
    let ch = |o: usize| if c == 1 { 0 } else { o };
    let b = bias_values(OP, linear_bias, out)?;
    let r = inv_std(bn);
    let k: Vec<f32> = (0..c).map(|i| bn_weight(bn, i) * r[i]).collect();
    let fused: Vec<f32> = linear_weight
        .iter()
        .enumerate()
        .map(|(idx, &w)| w * k[ch(idx / inp.max(1))])
        .collect();
    let bias: Vec<f32> = (0..out)
        .map(|o| {
            let i = ch(o);
            (b[o] - bn.running_mean[i]) * k[i] + bn_bias(bn, i)
        })
        .collect();
    finite_fused(OP, &fused, &bias)?;
    Ok((
        ArrayD::from_shape_vec(IxDyn(&[out, inp]), fused).expect("same shape"),
        ArrayD::from_shape_vec(IxDyn(&[out]), bias).expect("length out"),
    ))
}
