//! Fusing named groups of layers of any [`Model`]: [`fuse_modules`] and [`fuse_auto`].

use super::weights::{ConvLayout, fuse_conv_bn_weights, fuse_linear_bn_weights};
use crate::error::{QuantError, Result};
use crate::nn::{
    BatchNorm, Identity, LayerRole, Model, Module, WeightedCore, WeightedKind, WeightedLayer,
};

/// A fusion pattern of [`fuse_modules`] / [`fuse_auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum FusionPattern {
    /// Conv1d/2d + BatchNorm1d/2d → folded convolution.
    ConvBn,
    /// Conv + BatchNorm + ReLU → folded convolution with fused ReLU (`ConvReLU2d`).
    ConvBnRelu,
    /// Conv + ReLU → convolution with fused ReLU.
    ConvRelu,
    /// Linear + BatchNorm1d → folded linear layer.
    LinearBn,
    /// Linear + BatchNorm1d + ReLU → folded linear layer with fused ReLU.
    LinearBnRelu,
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

/// The parts of a fusable group, read from the layers' roles.
struct Group<'a> {
    weighted: &'a dyn WeightedLayer,
    bn: Option<&'a BatchNorm>,
    relu: bool,
    pattern: FusionPattern,
}

/// Reads a group's pattern from its layers' roles (`None`: not a pattern).
fn group_of<'a>(layers: &[&'a dyn Module]) -> Option<Group<'a>> {
    let (first, rest) = layers.split_first()?;
    let LayerRole::Weighted(w) = first.role() else {
        return None;
    };
    if w.core().has_relu() {
        return None;
    }
    let (bn, relu) = match rest {
        [] => return None,
        [a] => match a.role() {
            LayerRole::BatchNorm(bn) => (Some(bn), false),
            LayerRole::Relu => (None, true),
            _ => return None,
        },
        [a, b] => match (a.role(), b.role()) {
            (LayerRole::BatchNorm(bn), LayerRole::Relu) => (Some(bn), true),
            _ => return None,
        },
        _ => return None,
    };
    let conv = match (w.weighted_kind(), bn) {
        (WeightedKind::Linear, Some(bn)) if bn.spatial_dims() != 1 => return None,
        (WeightedKind::Conv { spatial_dims, .. }, Some(bn))
            if bn.spatial_dims() != spatial_dims =>
        {
            return None;
        }
        (WeightedKind::Linear, _) => false,
        (WeightedKind::Conv { .. }, _) => true,
    };
    let pattern = match (conv, bn.is_some(), relu) {
        (true, true, false) => FusionPattern::ConvBn,
        (true, true, true) => FusionPattern::ConvBnRelu,
        (true, false, _) => FusionPattern::ConvRelu,
        (false, true, false) => FusionPattern::LinearBn,
        (false, true, true) => FusionPattern::LinearBnRelu,
        (false, false, _) => FusionPattern::LinearRelu,
    };
    Some(Group {
        weighted: w,
        bn,
        relu,
        pattern,
    })
}

impl Group<'_> {
    /// The fused layer.
    fn fuse(&self, op: &'static str) -> Result<Box<dyn Module>> {
        let core = self.weighted.core();
        let mut fused = match self.bn {
            None => core.clone(),
            Some(bn) => {
                let p = bn.params();
                let (w, b) = match self.weighted.weighted_kind() {
                    WeightedKind::Linear => fuse_linear_bn_weights(core.weight(), core.bias(), p)?,
                    WeightedKind::Conv { .. } => {
                        if p.num_features() != core.out_channels() {
                            return Err(QuantError::LengthMismatch {
                                op,
                                what: "BatchNorm features (the convolution's output channels)",
                                expected: core.out_channels(),
                                got: p.num_features(),
                            });
                        }
                        fuse_conv_bn_weights(core.weight(), core.bias(), p, ConvLayout::Conv)?
                    }
                };
                WeightedCore::new(w, Some(b))?
            }
        };
        if self.relu {
            fused = fused.with_relu();
        }
        self.weighted.with_core(fused)
    }
}

/// Plans one named group: its fused layer and the names that become [`Identity`].
fn plan_group<M: Model + ?Sized>(
    op: &'static str,
    model: &M,
    order: &[String],
    names: &[&str],
) -> Result<(FusedGroup, Box<dyn Module>)> {
    let mut layers = Vec::with_capacity(names.len());
    let mut positions = Vec::with_capacity(names.len());
    for &n in names {
        let layer = model.layer(n).ok_or_else(|| QuantError::NotFound {
            op,
            what: "layer",
            name: n.to_string(),
        })?;
        layers.push(layer);
        positions.push(order.iter().position(|o| o == n));
    }
    let not_fusable = |reason| QuantError::NotFusable {
        op,
        names: names.iter().map(|s| s.to_string()).collect(),
        kinds: layers.iter().map(|l| l.kind().to_string()).collect(),
        reason,
    };
    let group = group_of(&layers).ok_or_else(|| {
        not_fusable(
            "no fusion pattern (in this order: Conv-BN, Conv-BN-ReLU, Conv-ReLU, Linear-BN, \
             Linear-BN-ReLU, Linear-ReLU, with a BatchNorm of the layer's dimensionality and \
             no ReLU already fused)",
        )
    })?;
    let consecutive = positions
        .windows(2)
        .all(|w| matches!((w[0], w[1]), (Some(a), Some(b)) if b == a + 1));
    if !consecutive {
        return Err(not_fusable(
            "the layers must follow each other directly in the model's execution order",
        ));
    }
    let fused = group.fuse(op)?;
    Ok((
        FusedGroup {
            names: names.iter().map(|s| s.to_string()).collect(),
            pattern: group.pattern,
        },
        fused,
    ))
}

/// Applies planned groups (all were checked: replacing cannot fail for a model that keeps
/// the [`Model`] contract; an error from the model is returned as it is).
fn apply<M: Model + ?Sized>(
    model: &mut M,
    planned: Vec<(FusedGroup, Box<dyn Module>)>,
) -> Result<Vec<FusedGroup>> {
    let mut report = Vec::with_capacity(planned.len());
    for (group, fused) in planned {
        model.replace_layer(&group.names[0], fused)?;
        for n in &group.names[1..] {
            model.replace_layer(n, Box::new(Identity))?;
        }
        report.push(group);
    }
    Ok(report)
}

/// Fuses named groups of layers of any [`Model`] (PyTorch's `fuse_modules` in eval mode):
/// each group is Conv-BN, Conv-BN-ReLU, Conv-ReLU, Linear-BN, Linear-BN-ReLU or Linear-ReLU,
/// in this order, consecutive in the model's execution order. The first layer of a group
/// becomes the fused layer, the others [`Identity`]. Every group is checked before any is
/// applied: on error the model is unchanged.
///
/// Layers are recognised by their [`Module::role`], so a caller's own weighted layer
/// (implementing [`WeightedLayer`]) fuses like the crate's.
///
/// # Errors
/// [`QuantError::NotFound`] for a name that is not in the model;
/// [`QuantError::NotFusable`] for a sequence that is no pattern (wrong order, a layer already
/// fused, a Conv2d with a BatchNorm1d ...), layers that are not consecutive, or a layer named
/// in two groups; [`QuantError::LengthMismatch`] when a BatchNorm's channel count differs from
/// the layer before it; the BatchNorm's own errors ([`BatchNormParams::validate`](crate::nn::BatchNormParams::validate)).
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
pub fn fuse_modules<M: Model + ?Sized>(
    model: &mut M,
    groups: &[&[&str]],
) -> Result<Vec<FusedGroup>> {
    const OP: &str = "fuse_modules";
    let order = model.layer_names();
    let mut seen: Vec<&str> = Vec::new();
    let mut planned = Vec::with_capacity(groups.len());
    for names in groups {
        if let Some(dup) = names.iter().find(|n| seen.contains(n)) {
            return Err(QuantError::NotFusable {
                op: OP,
                names: names.iter().map(|s| s.to_string()).collect(),
                kinds: Vec::new(),
                reason: if dup.is_empty() {
                    "empty name"
                } else {
                    "a layer is named in two groups"
                },
            });
        }
        seen.extend_from_slice(names);
        planned.push(plan_group(OP, &*model, &order, names)?);
    }
    apply(model, planned)
}

/// Finds every fusable pattern of any [`Model`] in execution order (longest first:
/// Conv-BN-ReLU before Conv-BN), fuses them all, and reports what it fused (empty when
/// nothing was fusable). Layers that follow each other in
/// [`Model::layer_names`] are taken as feeding each other (see [`Model`]).
///
/// # Errors
/// [`QuantError::LengthMismatch`] when a found Conv/Linear-BN pair disagrees on the channel
/// count; the BatchNorm's own errors. On error the model is unchanged.
pub fn fuse_auto<M: Model + ?Sized>(model: &mut M) -> Result<Vec<FusedGroup>> {
    const OP: &str = "fuse_auto";
    let order = model.layer_names();
    let mut planned = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut step = 1;
        for len in [3usize, 2] {
            let Some(names) = order.get(i..i + len) else {
                continue;
            };
            let layers: Option<Vec<&dyn Module>> = names.iter().map(|n| model.layer(n)).collect();
            if layers.as_deref().and_then(group_of).is_some() {
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                planned.push(plan_group(OP, &*model, &order, &refs)?);
                step = len;
                break;
            }
        }
        i += step;
    }
    apply(model, planned)
}
