//! Folding BatchNorm into the preceding convolution or linear layer, and fusing ReLUs.
//!
//! | item | what it does |
//! |---|---|
//! | [`fuse_conv_bn_weights`] | folds BN statistics into a Conv1d/2d/3d weight and bias (also transposed, also grouped transposed) |
//! | [`fuse_linear_bn_weights`] | folds BN statistics into a Linear weight and bias |
//! | [`fuse_modules`] | fuses named groups of a [`Sequential`]: Conv-BN, Conv-BN-ReLU, Conv-ReLU, Linear-BN, Linear-ReLU |
//! | [`fuse_auto`] | finds every fusable pattern of a [`Sequential`], fuses it, reports what it fused |
//!
//! The weight-level functions follow PyTorch's `torch.nn.utils.fusion` operation order in
//! `f32`, so their results match PyTorch's bit for bit:
//!
//! ```text
//! r[c]  = 1 / sqrt(rv[c] + f32(eps))
//! conv:   W'[o, ...] = W[o, ...] · (γ[o]·r[o])        b'[c] = ((b[c] − rm[c])·r[c])·γ[c] + β[c]
//! linear: W'[o, :]   = W[o, :] · (γ[o]·r[o])          b'[c] = (b[c] − rm[c])·(γ[c]·r[c]) + β[c]
//! ```
//!
//! For transposed convolutions (weight `[in, out/groups, k...]`) the scale applies to the
//! output channel `g·(out/groups) + j` of the element at `[i, j, ...]`, `g = i / (in/groups)`:
//! correct also for `groups > 1`, where PyTorch 2.15 fails with a broadcast error.
//!
//! Module-level fusion replaces the first layer of a group by the fused layer and the others
//! by [`Identity`] (PyTorch's convention, so names stay stable). A failed request leaves the
//! model unchanged.
//!
//! # Examples
//! ```
//! use ndarray::{arr1, ArrayD, IxDyn};
//! use qnumeric::fusion::fuse_conv_bn_weights;
//! use qnumeric::nn::BatchNormParams;
//!
//! let w = ArrayD::from_elem(IxDyn(&[2, 1, 1, 1]), 1.0f32);
//! let bn = BatchNormParams {
//!     running_mean: vec![1.0, 0.0],
//!     running_var: vec![4.0, 1.0],
//!     weight: Some(vec![2.0, 1.0]),
//!     bias: Some(vec![0.5, 0.0]),
//!     eps: 0.0,
//! };
//! let (w2, b2) = fuse_conv_bn_weights(&w, None, &bn, false, 1)?;
//! assert_eq!(w2.as_slice(), Some(&[1.0f32, 1.0][..]));
//! assert_eq!(b2, arr1(&[-0.5f32, 0.0]).into_dyn());
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use ndarray::{ArrayD, IxDyn};

use crate::error::{QuantError, Result};
use crate::nn::{
    BatchNorm, BatchNormParams, Conv1d, Conv2d, Identity, Linear, Module, ReLU, Sequential,
};

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
/// `conv_weight` is `[out, in/groups, k...]`, or with `transpose` the ConvTranspose layout
/// `[in, out/groups, k...]`; any number of spatial axes (Conv1d/2d/3d). `groups` only matters
/// for `transpose`. A missing bias counts as zeros. Returns the fused weight (same shape) and
/// bias `[out]`.
///
/// # Errors
/// [`QuantError::ShapeMismatch`] for a weight of rank < 2 or a bias that is not `[out]`;
/// [`QuantError::LengthMismatch`] when the BN's channel count is not the convolution's output
/// channel count (or its lists disagree); [`QuantError::InvalidParameter`] for `groups == 0`,
/// groups that do not divide the input channels (transposed), or a bad `eps`.
///
/// # Examples
/// A grouped transposed convolution (PyTorch 2.15 cannot fuse it):
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::{fusion::fuse_conv_bn_weights, nn::BatchNormParams};
/// // ConvTranspose2d(4 -> 4, groups 2): weight [in 4, out/groups 2, 1, 1]
/// let w = ArrayD::from_elem(IxDyn(&[4, 2, 1, 1]), 1.0f32);
/// let bn = BatchNormParams {
///     running_mean: vec![0.0; 4],
///     running_var: vec![1.0; 4],
///     weight: Some(vec![1.0, 2.0, 3.0, 4.0]),
///     bias: None,
///     eps: 0.0,
/// };
/// let (w2, _) = fuse_conv_bn_weights(&w, None, &bn, true, 2)?;
/// // group 0 (input channels 0, 1) feeds outputs 0, 1; group 1 feeds outputs 2, 3
/// assert_eq!(w2.as_slice(), Some(&[1.0f32, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0][..]));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn fuse_conv_bn_weights(
    conv_weight: &ArrayD<f32>,
    conv_bias: Option<&ArrayD<f32>>,
    bn: &BatchNormParams,
    transpose: bool,
    groups: usize,
) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
    const OP: &str = "fuse_conv_bn_weights";
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
        if shape[0] % groups != 0 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "groups",
                value: groups as f64,
                reason:
                    "must divide the input channels (weight.shape[0]) of a transposed convolution",
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
    Ok((
        ArrayD::from_shape_vec(IxDyn(&shape), fused).expect("same shape"),
        ArrayD::from_shape_vec(IxDyn(&[c]), bias).expect("length c"),
    ))
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
    Ok((
        ArrayD::from_shape_vec(IxDyn(&[out, inp]), fused).expect("same shape"),
        ArrayD::from_shape_vec(IxDyn(&[out]), bias).expect("length out"),
    ))
}

/// A fusion pattern of [`fuse_modules`] / [`fuse_auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FusionPattern {
    /// Conv1d/2d + BatchNorm1d/2d → folded convolution.
    ConvBn,
    /// Conv + BatchNorm + ReLU → folded convolution with fused ReLU (`ConvReLU2d`).
    ConvBnRelu,
    /// Conv + ReLU → convolution with fused ReLU.
    ConvRelu,
    /// Linear + BatchNorm1d → folded linear layer.
    LinearBn,
    /// Linear + ReLU → linear layer with fused ReLU (`LinearReLU`).
    LinearRelu,
}

/// One group that was fused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FusedGroup {
    /// The layers' names, in order; the first now holds the fused layer, the others
    /// [`Identity`].
    pub names: Vec<String>,
    /// The pattern.
    pub pattern: FusionPattern,
}

type Layers = Vec<(String, Box<dyn Module>)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conv(usize),
    Linear,
    Bn(usize),
    Relu,
    Other,
}

fn kind_of(layer: &dyn Module) -> Kind {
    let any = layer.as_any();
    if let Some(c) = any.downcast_ref::<Conv2d>() {
        if !c.has_relu() {
            return Kind::Conv(2);
        }
    } else if let Some(c) = any.downcast_ref::<Conv1d>() {
        if !c.has_relu() {
            return Kind::Conv(1);
        }
    } else if let Some(l) = any.downcast_ref::<Linear>() {
        if !l.has_relu() {
            return Kind::Linear;
        }
    } else if let Some(b) = any.downcast_ref::<BatchNorm>() {
        return Kind::Bn(b.spatial_dims());
    } else if any.is::<ReLU>() {
        return Kind::Relu;
    }
    Kind::Other
}

fn pattern_of(kinds: &[Kind]) -> Option<FusionPattern> {
    match kinds {
        [Kind::Conv(a), Kind::Bn(b)] if a == b => Some(FusionPattern::ConvBn),
        [Kind::Conv(a), Kind::Bn(b), Kind::Relu] if a == b => Some(FusionPattern::ConvBnRelu),
        [Kind::Conv(_), Kind::Relu] => Some(FusionPattern::ConvRelu),
        [Kind::Linear, Kind::Bn(1)] => Some(FusionPattern::LinearBn),
        [Kind::Linear, Kind::Relu] => Some(FusionPattern::LinearRelu),
        _ => None,
    }
}

/// Builds the fused layer of `layers[start..start + n]`.
fn fused_layer(
    op: &'static str,
    layers: &Layers,
    start: usize,
    pattern: FusionPattern,
) -> Result<Box<dyn Module>> {
    let first = layers[start].1.as_any();
    let bn = || {
        layers[start + 1]
            .1
            .as_any()
            .downcast_ref::<BatchNorm>()
            .map(BatchNorm::params)
            .expect("pattern checked")
    };
    let relu = matches!(
        pattern,
        FusionPattern::ConvBnRelu | FusionPattern::ConvRelu | FusionPattern::LinearRelu
    );
    let with_bn = matches!(
        pattern,
        FusionPattern::ConvBn | FusionPattern::ConvBnRelu | FusionPattern::LinearBn
    );
    let check_channels = |out: usize, c: usize| -> Result<()> {
        if out == c {
            Ok(())
        } else {
            Err(QuantError::LengthMismatch {
                op,
                what: "BatchNorm features (the preceding layer's output channels)",
                expected: out,
                got: c,
            })
        }
    };
    if let Some(conv) = first.downcast_ref::<Conv2d>() {
        let mut fused = conv.clone();
        if with_bn {
            let bn = bn();
            check_channels(conv.out_channels(), bn.num_features())?;
            let (w, b) =
                fuse_conv_bn_weights(&conv.weight, conv.bias.as_ref(), bn, false, conv.geo.groups)?;
            fused.weight = w;
            fused.bias = Some(b);
        }
        fused.relu = relu;
        return Ok(Box::new(fused));
    }
    if let Some(conv) = first.downcast_ref::<Conv1d>() {
        let mut fused = conv.clone();
        if with_bn {
            let bn = bn();
            check_channels(conv.out_channels(), bn.num_features())?;
            let (w, b) =
                fuse_conv_bn_weights(&conv.weight, conv.bias.as_ref(), bn, false, conv.geo.groups)?;
            fused.weight = w;
            fused.bias = Some(b);
        }
        fused.relu = relu;
        return Ok(Box::new(fused));
    }
    let lin = first
        .downcast_ref::<Linear>()
        .expect("pattern checked: conv or linear first");
    let mut fused = lin.clone();
    if with_bn {
        let bn = bn();
        check_channels(lin.out_features(), bn.num_features())?;
        let (w, b) = fuse_linear_bn_weights(&lin.weight, lin.bias.as_ref(), bn)?;
        fused.weight = w;
        fused.bias = Some(b);
    }
    fused.relu = relu;
    Ok(Box::new(fused))
}

fn fuse_group(op: &'static str, layers: &mut Layers, names: &[&str]) -> Result<FusedGroup> {
    let mut idx = Vec::with_capacity(names.len());
    for &n in names {
        let i = layers
            .iter()
            .position(|(name, _)| name == n)
            .ok_or_else(|| QuantError::NotFound {
                op,
                what: "layer",
                name: n.to_string(),
            })?;
        idx.push(i);
    }
    let kinds: Vec<Kind> = idx.iter().map(|&i| kind_of(layers[i].1.as_ref())).collect();
    let pattern = pattern_of(&kinds).ok_or(QuantError::UnsupportedConfig {
        op,
        reason: "no fusion for this sequence of layers (supported, in this order: Conv-BN, \
                 Conv-BN-ReLU, Conv-ReLU, Linear-BN, Linear-ReLU)",
    })?;
    if idx.windows(2).any(|w| w[1] != w[0] + 1) {
        return Err(QuantError::UnsupportedConfig {
            op,
            reason: "the layers to fuse must follow each other directly in the container",
        });
    }
    let fused = fused_layer(op, layers, idx[0], pattern)?;
    layers[idx[0]].1 = fused;
    for &i in &idx[1..] {
        layers[i].1 = Box::new(Identity);
    }
    Ok(FusedGroup {
        names: names.iter().map(|s| s.to_string()).collect(),
        pattern,
    })
}

/// Fuses named groups of layers of a [`Sequential`] (PyTorch's `fuse_modules` in eval mode):
/// each group is Conv-BN, Conv-BN-ReLU, Conv-ReLU, Linear-BN or Linear-ReLU, in this order,
/// consecutive in the container. The first layer of a group becomes the fused layer, the
/// others [`Identity`]. All groups are applied or none.
///
/// # Errors
/// [`QuantError::NotFound`] for a name that is not in the model;
/// [`QuantError::UnsupportedConfig`] for a sequence that is no pattern (wrong order, a layer
/// already fused, a Conv2d with a BatchNorm1d ...) or layers that are not consecutive;
/// [`QuantError::LengthMismatch`] when a BatchNorm's channel count differs from the layer
/// before it. On error the model is unchanged.
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::fusion::fuse_modules;
/// use qnumeric::nn::{Linear, Model, ReLU, Sequential};
/// let fc = Linear::new(ArrayD::from_elem(IxDyn(&[2, 2]), 1.0), None)?;
/// let mut m = Sequential::new().with("fc", fc)?.with("relu", ReLU)?;
/// fuse_modules(&mut m, &[&["fc", "relu"]])?;
/// assert_eq!(m.layer("fc").map(|l| l.kind()), Some("LinearReLU"));
/// assert_eq!(m.layer("relu").map(|l| l.kind()), Some("Identity"));
/// assert!(fuse_modules(&mut m, &[&["nope", "relu"]]).is_err());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn fuse_modules(model: &mut Sequential, groups: &[&[&str]]) -> Result<Vec<FusedGroup>> {
    const OP: &str = "fuse_modules";
    let mut layers: Layers = model.layers_mut().clone();
    let mut report = Vec::with_capacity(groups.len());
    for names in groups {
        report.push(fuse_group(OP, &mut layers, names)?);
    }
    *model.layers_mut() = layers;
    Ok(report)
}

/// Finds every fusable pattern of a [`Sequential`] (longest first: Conv-BN-ReLU before
/// Conv-BN), fuses them all, and reports what it fused (empty when nothing was fusable).
///
/// # Errors
/// [`QuantError::LengthMismatch`] when a found Conv/Linear-BN pair disagrees on the channel
/// count. On error the model is unchanged.
pub fn fuse_auto(model: &mut Sequential) -> Result<Vec<FusedGroup>> {
    const OP: &str = "fuse_auto";
    let mut layers: Layers = model.layers_mut().clone();
    let mut report = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let mut fused = 0;
        for len in [3usize, 2] {
            if i + len > layers.len() {
                continue;
            }
            let kinds: Vec<Kind> = layers[i..i + len]
                .iter()
                .map(|(_, l)| kind_of(l.as_ref()))
                .collect();
            if pattern_of(&kinds).is_some() {
                let names: Vec<String> =
                    layers[i..i + len].iter().map(|(n, _)| n.clone()).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                report.push(fuse_group(OP, &mut layers, &refs)?);
                fused = len;
                break;
            }
        }
        i += fused.max(1);
    }
    *model.layers_mut() = layers;
    Ok(report)
}
