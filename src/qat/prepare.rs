//! [`QatConfig`], [`prepare_qat`] and [`QatModel`] (train, switch, [`QatModel::convert`]):
//! PyTorch's eager QAT workflow on any [`Model`].

use std::collections::{BTreeMap, BTreeSet};

use super::{FakeQuantize, QatAction, QatConvBn, QatLayer};
use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::nn::quantized::Int8Accumulation;
use crate::nn::{Conv2d, Identity, LayerRole, Model, Module};
use crate::ptq::{LayerPlan, PtqConfig};
use crate::qparams::{QParams, QScheme, QSpec};
use crate::tensor::QuantizedTensor;

/// How [`prepare_qat`] fake-quantizes a model: prototype fake quants for the activations
/// (per tensor, `quint8`) and the weights (`qint8`, per tensor or per channel along axis 0),
/// cloned for every layer; the int8 accumulation of [`QatModel::convert`]'s layers; layers
/// kept in float.
///
/// # Examples
/// ```
/// use qnumeric::qat::QatConfig;
/// let q = QatConfig::with_bits(4, 4)?; // 4-bit activations (0..=15), weights (-8..=7)
/// assert_eq!(q.activation().spec().range().quant_max(), 15);
/// assert_eq!(q.weight().spec().range().quant_min(), -8);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone)]
pub struct QatConfig {
    activation: FakeQuantize,
    weight: FakeQuantize,
    accumulation: Int8Accumulation,
    keep_float: BTreeSet<String>,
}

impl QatConfig {
    /// A configuration from two prototype fake quants, cloned as given for every layer (give
    /// fresh ones: a prototype that has observed carries its statistics).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for a per-channel activation fake quant, an
    /// activation dtype other than `quint8`, a weight dtype other than `qint8` or a
    /// per-channel weight fake quant along another axis than 0 (the int8 layers' layout).
    pub fn new(activation: FakeQuantize, weight: FakeQuantize) -> Result<Self> {
        const OP: &str = "QatConfig::new";
        let refuse = |reason| Err(QuantError::UnsupportedConfig { op: OP, reason });
        if activation.ch_axis().is_some() {
            return refuse("activation fake quants are per tensor");
        }
        if activation.spec().dtype() != QDType::QUInt8 {
            return refuse("activations are quint8 (the int8 layers' activations)");
        }
        if weight.spec().dtype() != QDType::QInt8 {
            return refuse("weights are qint8 (the int8 layers' weights)");
        }
        if weight.ch_axis().is_some_and(|a| a != 0) {
            return refuse("per-channel weight fake quants are along axis 0 (output channels)");
        }
        Ok(QatConfig {
            activation,
            weight,
            accumulation: Int8Accumulation::Exact,
            keep_float: BTreeSet::new(),
        })
    }

    /// PyTorch's `default_qat_qconfig` family for x86 with `FakeQuantize` modules:
    /// activations `quint8` affine with `reduce_range` (`0..=127`), weights `qint8`
    /// per-channel symmetric along axis 0 (`default_per_channel_weight_fake_quant`), both
    /// moving-average min/max observers with averaging constant 0.01.
    ///
    /// # Errors
    /// None in practice (the specs are valid); kept for a uniform constructor signature.
    pub fn x86_default() -> Result<Self> {
        let act = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8).with_reduce_range()?;
        let w = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8);
        QatConfig::new(
            FakeQuantize::per_tensor(act, 0.01)?,
            FakeQuantize::per_channel(w, 0, 0.01)?,
        )
    }

    /// `bits`-wide fake quantization: activations `quint8` affine on `0..=2^a − 1`, weights
    /// `qint8` per-channel symmetric on `−2^(w−1)..=2^(w−1) − 1` (PyTorch's way of
    /// simulating sub-8-bit widths: an explicit `quant_min`/`quant_max`), averaging constant
    /// 0.01.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a width outside `2..=8`.
    pub fn with_bits(activation_bits: u8, weight_bits: u8) -> Result<Self> {
        for (what, b) in [
            ("activation_bits", activation_bits),
            ("weight_bits", weight_bits),
        ] {
            if !(2..=8).contains(&b) {
                return Err(QuantError::InvalidParameter {
                    op: "QatConfig::with_bits",
                    what,
                    value: f64::from(b),
                    reason: "must be in 2..=8",
                });
            }
        }
        let act = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8)
            .with_quant_range(0, (1i64 << activation_bits) - 1)?;
        let half = 1i64 << (weight_bits - 1);
        let w = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8)
            .with_quant_range(-half, half - 1)?;
        QatConfig::new(
            FakeQuantize::per_tensor(act, 0.01)?,
            FakeQuantize::per_channel(w, 0, 0.01)?,
        )
    }

    /// The same configuration with another accumulation for the converted int8 layers.
    #[must_use]
    pub fn with_accumulation(mut self, accumulation: Int8Accumulation) -> Self {
        self.accumulation = accumulation;
        self
    }

    /// Keeps the layer `name` in float (no fake quantization; a float island after
    /// `convert`, as PTQ's [`PtqConfig::keep_float`]).
    #[must_use]
    pub fn keep_float(mut self, name: impl Into<String>) -> Self {
        self.keep_float.insert(name.into());
        self
    }

    /// The prototype activation fake quant.
    #[must_use]
    pub fn activation(&self) -> &FakeQuantize {
        &self.activation
    }

    /// The prototype weight fake quant.
    #[must_use]
    pub fn weight(&self) -> &FakeQuantize {
        &self.weight
    }

    /// The int8 accumulation of the converted layers.
    #[must_use]
    pub fn accumulation(&self) -> Int8Accumulation {
        self.accumulation
    }
}

/// A model prepared for QAT: the planned layers replaced by [`QatLayer`]s. Train it like any
/// model (its [`Model::run`] is the training forward; [`Module::backward`] of every layer;
/// [`crate::train`]'s tape and optimizers), switch its fake quants with
/// [`QatModel::apply`], then [`QatModel::convert`] it to the int8 model.
#[derive(Debug)]
pub struct QatModel<M: Model> {
    pub(super) model: M,
    plan: Vec<(String, LayerPlan)>,
    accumulation: Int8Accumulation,
}

/// Prepares `model` for quantization-aware training (PyTorch's `prepare_qat`): the same plan
/// as post-training [`prepare`](crate::ptq::prepare) (the quantized domain from a `QuantStub`
/// to a `DeQuantStub`, each layer by its [`LayerRole`]); every layer whose output PTQ would
/// observe gets an output fake quant, weighted layers a weight fake quant too. Layers that
/// run on quantized activations (ReLU, pooling, flatten) are left as they are.
///
/// A `Conv2d` followed by a `BatchNorm` (and a `ReLU`) becomes one [`QatConvBn`], the
/// BatchNorm kept unfolded in training (PyTorch's `fuse_modules_qat` + `prepare_qat`), the
/// absorbed layers [`Identity`]; to train with the BatchNorm already folded, fuse first
/// ([`fuse_auto`](crate::fusion::fuse_auto)). Any other BatchNorm in the domain is trained and
/// converted as a float island.
///
/// # Errors
/// [`QuantError::NoQuantStub`]; [`QuantError::NotFound`] for a kept-float name that is not a
/// layer; [`QuantError::UnsupportedLayer`] for a planned layer that is already a QAT layer.
pub fn prepare_qat<M: Model>(mut model: M, config: &QatConfig) -> Result<QatModel<M>> {
    const OP: &str = "qat::prepare_qat";
    let names = model.layer_names();
    if let Some(name) = config.keep_float.iter().find(|n| !names.contains(n)) {
        return Err(QuantError::NotFound {
            op: OP,
            what: "layer (kept in float)",
            name: name.clone(),
        });
    }
    let mut plan =
        crate::ptq::prepare::plan_model(OP, &model, |name| !config.keep_float.contains(name))?;
    let mut replacements: Vec<(String, Box<dyn Module>)> = Vec::new();
    let mut grouped = BTreeSet::new();
    for i in 0..plan.len() {
        if let Some((conv_bn, absorbed)) = conv_bn_group(&model, &plan, i, config)? {
            for j in &absorbed {
                let (name, p) = &mut plan[*j];
                *p = LayerPlan::PassThrough;
                grouped.insert(name.clone());
                replacements.push((name.clone(), Box::new(Identity)));
            }
            grouped.insert(plan[i].0.clone());
            replacements.push((plan[i].0.clone(), Box::new(conv_bn)));
        }
    }
    for (name, p) in &plan {
        if !p.observes_output() || grouped.contains(name) {
            continue;
        }
        let layer = model.layer(name).ok_or_else(|| QuantError::NotFound {
            op: OP,
            what: "layer",
            name: name.clone(),
        })?;
        let weight = (*p == LayerPlan::Quantized && matches!(layer.role(), LayerRole::Weighted(_)))
            .then(|| config.weight.clone());
        let qat = QatLayer::new(layer.box_clone(), weight, Some(config.activation.clone()))?;
        replacements.push((name.clone(), Box::new(qat)));
    }
    for (name, layer) in replacements {
        model.replace_layer(&name, layer)?;
    }
    Ok(QatModel {
        model,
        plan,
        accumulation: config.accumulation,
    })
}

/// A quantized Conv2d followed in execution order by a BatchNorm (and a ReLU) inside the
/// quantized domain: the [`QatConvBn`] that replaces it and the indices of the layers it
/// absorbs (PyTorch's `fuse_modules_qat` patterns `Conv2d-BatchNorm2d(-ReLU)`).
fn conv_bn_group<M: Model>(
    model: &M,
    plan: &[(String, LayerPlan)],
    i: usize,
    config: &QatConfig,
) -> Result<Option<(QatConvBn, Vec<usize>)>> {
    let layer_at = |j: usize| plan.get(j).and_then(|(n, _)| model.layer(n));
    let (Some((_, LayerPlan::Quantized)), Some(conv_layer)) = (plan.get(i), layer_at(i)) else {
        return Ok(None);
    };
    let Some(conv) = conv_layer.as_any().downcast_ref::<Conv2d>() else {
        return Ok(None);
    };
    let Some(LayerRole::BatchNorm(bn)) = layer_at(i + 1).map(Module::role) else {
        return Ok(None);
    };
    if conv.core().has_relu() || bn.spatial_dims() != 2 {
        return Ok(None);
    }
    let relu = matches!(layer_at(i + 2).map(Module::role), Some(LayerRole::Relu))
        && layer_at(i + 2).is_some_and(|l| l.kind() == "ReLU");
    let absorbed = if relu {
        vec![i + 1, i + 2]
    } else {
        vec![i + 1]
    };
    let m = QatConvBn::new(
        conv.clone(),
        bn.params(),
        relu,
        config.weight.clone(),
        Some(config.activation.clone()),
    )?;
    Ok(Some((m, absorbed)))
}

impl<M: Model> QatModel<M> {
    /// The model being trained.
    #[must_use]
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably (an optimizer step replaces its layers).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The plan: what [`QatModel::convert`] does with each layer, in execution order.
    #[must_use]
    pub fn plan(&self) -> &[(String, LayerPlan)] {
        &self.plan
    }

    /// The QAT layer under `name`, if the layer is one.
    #[must_use]
    pub fn qat_layer(&self, name: &str) -> Option<&QatLayer> {
        self.model.layer(name)?.as_any().downcast_ref::<QatLayer>()
    }

    /// The Conv-BN(-ReLU) under `name`, if the layer is one.
    #[must_use]
    pub fn conv_bn(&self, name: &str) -> Option<&QatConvBn> {
        self.model.layer(name)?.as_any().downcast_ref::<QatConvBn>()
    }

    /// Applies a switch to every QAT layer (PyTorch's `model.apply(disable_observer)`,
    /// `model.apply(freeze_bn_stats)`, ...).
    pub fn apply(&self, action: QatAction) {
        for (name, _) in &self.plan {
            if let Some(l) = self.qat_layer(name) {
                l.apply(action);
            } else if let Some(l) = self.conv_bn(name) {
                l.apply(action);
            }
        }
    }

    /// The int8 model (PyTorch's `convert` after QAT): every weight fake quant sees its
    /// trained weight once more (when its observer is enabled, as PyTorch's `from_float`),
    /// then the same conversion as PTQ's [`Prepared::convert`](crate::ptq::Prepared::convert)
    /// runs with the fake quants' parameters in place of the observers': the same float
    /// layers and parameters give the same int8 model, bit for bit.
    ///
    /// Sub-8-bit configurations ([`QatConfig::with_bits`]) convert to int8 layers whose
    /// weights and input hold the narrow range; their outputs are requantized over the
    /// dtype's range, as PyTorch's quantized kernels do (evaluate the fake-quantized model to
    /// see the narrow outputs).
    ///
    /// # Errors
    /// Errors of the fake quants' parameters and of the int8 layers' constructors.
    pub fn convert(mut self) -> Result<M> {
        let mut outputs: BTreeMap<String, QParams> = BTreeMap::new();
        let mut weights: BTreeMap<String, QuantizedTensor<i8>> = BTreeMap::new();
        let mut inner = Vec::new();
        for (name, p) in &self.plan {
            if let Some(cb) = self.conv_bn(name) {
                outputs.insert(name.clone(), cb.output_qparams()?);
                let (conv, qp) = cb.folded()?;
                weights.insert(
                    name.clone(),
                    QuantizedTensor::<i8>::quantize(conv.core().weight(), qp)?,
                );
                inner.push((name.clone(), Box::new(conv) as Box<dyn Module>));
                continue;
            }
            let Some(l) = self.qat_layer(name) else {
                continue;
            };
            if p.observes_output() {
                outputs.insert(name.clone(), l.output_qparams()?);
            }
            if let (LayerPlan::Quantized, LayerRole::Weighted(w)) = (p, l.inner().role()) {
                let qp = l.final_weight_qparams()?;
                weights.insert(
                    name.clone(),
                    QuantizedTensor::<i8>::quantize(w.core().weight(), qp)?,
                );
            }
            inner.push((name.clone(), l.inner().box_clone()));
        }
        for (name, layer) in inner {
            self.model.replace_layer(&name, layer)?;
        }
        let config = PtqConfig::default().with_accumulation(self.accumulation);
        let missing = |name: &str| QuantError::NotFound {
            op: "QatModel::convert",
            what: "fake-quantized layer",
            name: name.to_string(),
        };
        crate::ptq::prepare::convert_planned(
            self.model,
            &self.plan,
            &config,
            &|name| outputs.get(name).copied().ok_or_else(|| missing(name)),
            &mut |name, _, _| weights.remove(name).ok_or_else(|| missing(name)),
        )
    }
}

/// Whether a boxed layer is a [`QatLayer`] (for callers walking a model).
#[must_use]
pub fn is_qat_layer(layer: &dyn Module) -> bool {
    layer.as_any().is::<QatLayer>()
}
