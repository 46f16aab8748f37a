//! [`prepare`], [`Prepared`] (calibration) and [`Prepared::convert`].

use std::collections::BTreeMap;
use std::fmt;

use ndarray::ArrayD;

use super::{FloatIsland, PtqConfig, QConfig};
use crate::error::{QuantError, Result};
use crate::nn::quantized::{DeQuantize, Quantize, QuantizedAdd};
use crate::nn::{Activation, LayerRole, Model, Module, WeightedLayer};
use crate::observers::Observer;
use crate::qparams::{AnyQParams, QParams};
use crate::tensor::QuantizedTensor;

/// What [`Prepared::convert`] will do with a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum LayerPlan {
    /// Outside the quantized domain: unchanged.
    Float,
    /// A `QuantStub`: becomes [`Quantize`].
    Quantize,
    /// A `DeQuantStub`: becomes [`DeQuantize`].
    DeQuantize,
    /// A weighted layer or an `Add`: becomes its int8 layer.
    Quantized,
    /// Runs on quantized activations as it is (ReLU, pooling, flatten, integer layers ...).
    PassThrough,
    /// Stays float inside the quantized domain: becomes a [`FloatIsland`].
    FloatIsland,
}

impl LayerPlan {
    /// Whether the layer's output is observed during calibration.
    #[must_use]
    pub fn observes_output(self) -> bool {
        matches!(
            self,
            LayerPlan::Quantize | LayerPlan::Quantized | LayerPlan::FloatIsland
        )
    }
}

/// The plan of one layer inside the quantized domain, from its role.
fn plan_in_domain(role: LayerRole<'_>, quantized: bool) -> LayerPlan {
    match role {
        LayerRole::Relu | LayerRole::PassThrough | LayerRole::Quantized => LayerPlan::PassThrough,
        LayerRole::Weighted(_) | LayerRole::Add if quantized => LayerPlan::Quantized,
        LayerRole::QuantStub => LayerPlan::Quantize,
        LayerRole::DeQuantStub => LayerPlan::DeQuantize,
        _ => LayerPlan::FloatIsland,
    }
}

/// The plan of every layer of `model`, in execution order: the quantized domain starts at a
/// `QuantStub` and ends at a `DeQuantStub`; inside it each layer is planned from its role,
/// weighted layers and `Add` being quantized when `quantized(name)` (a layer kept in float
/// becomes a float island). Shared by [`prepare`] and [`prepare_qat`](crate::qat::prepare_qat).
pub(crate) fn plan_model<M: Model + ?Sized>(
    op: &'static str,
    model: &M,
    quantized: impl Fn(&str) -> bool,
) -> Result<Vec<(String, LayerPlan)>> {
    let names = model.layer_names();
    let mut in_domain = false;
    let mut any_stub = false;
    let mut plan = Vec::with_capacity(names.len());
    for name in names {
        let layer = model.layer(&name).ok_or_else(|| QuantError::NotFound {
            op,
            what: "layer",
            name: name.clone(),
        })?;
        let role = layer.role();
        let p = match role {
            LayerRole::QuantStub => {
                any_stub = true;
                in_domain = true;
                LayerPlan::Quantize
            }
            LayerRole::DeQuantStub if in_domain => {
                in_domain = false;
                LayerPlan::DeQuantize
            }
            _ if !in_domain => LayerPlan::Float,
            _ => plan_in_domain(role, quantized(&name)),
        };
        plan.push((name, p));
    }
    if !any_stub {
        return Err(QuantError::NoQuantStub { op });
    }
    Ok(plan)
}

/// A model with observers attached, ready for calibration.
pub struct Prepared<M: Model> {
    model: M,
    config: PtqConfig,
    plan: Vec<(String, LayerPlan)>,
    observers: BTreeMap<String, Box<dyn Observer>>,
    batches: usize,
}

impl<M: Model + fmt::Debug> fmt::Debug for Prepared<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("model", &self.model)
            .field("plan", &self.plan)
            .field("observers", &self.observers)
            .field("batches", &self.batches)
            .finish()
    }
}

/// Plans the conversion of `model` and attaches observers (PyTorch's `prepare`). The
/// quantized domain starts at a [`QuantStub`](crate::nn::QuantStub) and ends at a
/// [`DeQuantStub`](crate::nn::DeQuantStub), in execution order; each layer is planned from
/// its [`Module::role`].
///
/// # Errors
/// [`QuantError::NoQuantStub`] when the model has no [`QuantStub`](crate::nn::QuantStub)
/// (nothing would be quantized); [`QuantError::NotFound`] for an override naming a layer
/// that is not in the model.
pub fn prepare<M: Model>(model: M, config: &PtqConfig) -> Result<Prepared<M>> {
    const OP: &str = "ptq::prepare";
    let names = model.layer_names();
    if let Some(name) = config.overrides.keys().find(|n| !names.contains(n)) {
        return Err(QuantError::NotFound {
            op: OP,
            what: "layer (in the per-layer overrides)",
            name: name.clone(),
        });
    }
    let plan = plan_model(OP, &model, |name| config.qconfig(name).is_some())?;
    let mut observers = BTreeMap::new();
    for (name, p) in &plan {
        if p.observes_output() {
            let q = config.qconfig(name).unwrap_or(&config.default);
            observers.insert(name.clone(), q.new_activation_observer());
        }
    }
    Ok(Prepared {
        model,
        config: config.clone(),
        plan,
        observers,
        batches: 0,
    })
}

impl<M: Model> Prepared<M> {
    /// Runs one calibration batch through the float model, feeding every observer; returns the
    /// model's (float) output.
    ///
    /// # Errors
    /// Errors of the model's layers and of the observers (e.g. NaN in an activation).
    pub fn calibrate(&mut self, x: &ArrayD<f32>) -> Result<Activation> {
        let observers = &mut self.observers;
        let mut hook = |name: &str,
                        _layer: &dyn Module,
                        _inputs: &[&Activation],
                        output: &mut Activation|
         -> Result<()> {
            if let Some(obs) = observers.get_mut(name) {
                match output {
                    Activation::Float(a) => obs.observe(a.view())?,
                    Activation::Quantized(q) => obs.observe(q.to_float().view())?,
                }
            }
            Ok(())
        };
        let y = self.model.run(Activation::Float(x.clone()), &mut hook)?;
        self.batches += 1;
        Ok(y)
    }

    /// Number of calibration batches run.
    #[must_use]
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// The (float) model.
    #[must_use]
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The plan: what convert does with each layer, in execution order.
    #[must_use]
    pub fn plan(&self) -> &[(String, LayerPlan)] {
        &self.plan
    }

    /// The observer of a layer's output, if it has one.
    #[must_use]
    pub fn observer(&self, name: &str) -> Option<&dyn Observer> {
        self.observers.get(name).map(AsRef::as_ref)
    }

    /// The output parameters observed for a layer.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] when the layer has no observer; [`QuantError::Empty`] when it
    /// saw no data; [`QuantError::UnsupportedQParams`] when the observer is not per tensor.
    pub fn output_qparams(&self, name: &str) -> Result<QParams> {
        output_qparams_of(&self.observers, name)
    }

    /// Builds the quantized model (PyTorch's `convert`): every planned layer is replaced; the
    /// others stay as they are.
    ///
    /// # Errors
    /// [`QuantError::Empty`] when a needed observer saw no data (calibrate first); errors of
    /// the weight observers and of the quantized layers' constructors. On error nothing is
    /// returned (the prepared model is consumed).
    pub fn convert(self) -> Result<M> {
        let Prepared {
            model,
            config,
            plan,
            observers,
            ..
        } = self;
        let qparams_of = |name: &str| output_qparams_of(&observers, name);
        convert_planned(model, &plan, &config, &qparams_of, &mut |_, w, qconfig| {
            quantized_weight(w, qconfig)
        })
    }
}

/// The output parameters observed by a layer's observer in `observers`.
fn output_qparams_of(
    observers: &BTreeMap<String, Box<dyn Observer>>,
    name: &str,
) -> Result<QParams> {
    const OP: &str = "Prepared::output_qparams";
    let obs = observers.get(name).ok_or_else(|| QuantError::NotFound {
        op: OP,
        what: "observed layer",
        name: name.to_string(),
    })?;
    match obs.qparams()? {
        AnyQParams::PerTensor(p) => Ok(p),
        AnyQParams::PerChannel(_) => Err(QuantError::UnsupportedQParams {
            op: OP,
            reason: "activation observers must be per tensor",
        }),
    }
}

/// How [`convert_planned`] gets a layer's int8 weight: `(name, layer, qconfig)`.
pub(crate) type WeightOf<'a> =
    dyn FnMut(&str, &dyn WeightedLayer, &QConfig) -> Result<QuantizedTensor<i8>> + 'a;

/// PyTorch's `convert` of a planned model: every planned layer replaced by its quantized
/// form, with the output parameters `qparams_of(name)` and the int8 weights
/// `weight_of(name, layer, qconfig)`. Shared by PTQ ([`Prepared::convert`]: observers) and QAT
/// ([`QatModel::convert`](crate::qat::QatModel::convert): the fake quants' learned
/// parameters), so both build the same int8 model from the same parameters.
pub(crate) fn convert_planned<M: Model>(
    mut model: M,
    plan: &[(String, LayerPlan)],
    config: &PtqConfig,
    qparams_of: &dyn Fn(&str) -> Result<QParams>,
    weight_of: &mut WeightOf<'_>,
) -> Result<M> {
    let mut replacements: Vec<(String, Box<dyn Module>)> = Vec::new();
    for (i, (name, p)) in plan.iter().enumerate() {
        let layer = model.layer(name).ok_or_else(|| QuantError::NotFound {
            op: "Prepared::convert",
            what: "layer",
            name: name.clone(),
        })?;
        let new: Box<dyn Module> = match p {
            LayerPlan::Float | LayerPlan::PassThrough => continue,
            LayerPlan::Quantize => Box::new(Quantize::new(qparams_of(name)?)?),
            LayerPlan::DeQuantize => Box::new(DeQuantize),
            LayerPlan::FloatIsland => {
                let island = FloatIsland::new(layer.box_clone(), qparams_of(name)?)?;
                // The next layer that is not a pass-through decides: another island (or
                // the end of the domain) takes float values as they are.
                let next = plan[i + 1..]
                    .iter()
                    .map(|(_, p)| *p)
                    .find(|p| *p != LayerPlan::PassThrough);
                match next {
                    Some(LayerPlan::FloatIsland | LayerPlan::DeQuantize) => {
                        Box::new(island.with_float_output())
                    }
                    _ => Box::new(island),
                }
            }
            LayerPlan::Quantized => {
                let qconfig = config.qconfig(name).unwrap_or(&config.default);
                let out = qparams_of(name)?;
                match layer.role() {
                    LayerRole::Weighted(w) => {
                        let weight = weight_of(name, w, qconfig)?;
                        quantize_weighted(w, weight, qconfig, out, config)?
                    }
                    _ => Box::new(QuantizedAdd::new(out)?),
                }
            }
        };
        replacements.push((name.clone(), new));
    }
    for (name, layer) in replacements {
        model.replace_layer(&name, layer)?;
    }
    Ok(model)
}

/// A weighted layer's weight, observed with the config's weight observer and quantized.
pub(crate) fn quantized_weight(
    w: &dyn WeightedLayer,
    qconfig: &QConfig,
) -> Result<QuantizedTensor<i8>> {
    let weight = w.core().weight();
    let mut obs = qconfig.new_weight_observer();
    obs.observe(weight.view())?;
    QuantizedTensor::<i8>::quantize(weight, obs.qparams()?)
}

/// The int8 layer of a weighted layer: the crate's layers map to their quantized
/// counterparts (built from the float layer, as PyTorch's `from_float`); a caller's layer
/// through the conversion registered for its kind ([`PtqConfig::with_conversion`]).
fn quantize_weighted(
    w: &dyn WeightedLayer,
    weight: QuantizedTensor<i8>,
    qconfig: &QConfig,
    out: QParams,
    config: &PtqConfig,
) -> Result<Box<dyn Module>> {
    use crate::nn::quantized::{QuantizedConv1d, QuantizedConv2d, QuantizedLinear};
    use crate::nn::{Conv1d, Conv2d, Linear};
    let acc = qconfig.accumulation();
    let core = w.core();
    let bias = core.bias().cloned();
    let relu = core.has_relu();
    let any = w.as_any();
    let layer: Box<dyn Module> = if any.is::<Linear>() {
        let q = QuantizedLinear::new(weight, bias, out)?.with_accumulation(acc);
        Box::new(if relu { q.with_relu() } else { q })
    } else if let Some(c) = any.downcast_ref::<Conv2d>() {
        let q = QuantizedConv2d::new(weight, bias, c.geometry(), out)?.with_accumulation(acc);
        Box::new(if relu { q.with_relu() } else { q })
    } else if let Some(c) = any.downcast_ref::<Conv1d>() {
        let q = QuantizedConv1d::new(weight, bias, c.geometry(), out)?.with_accumulation(acc);
        Box::new(if relu { q.with_relu() } else { q })
    } else if let Some(f) = config.conversion(w.kind()) {
        f(w, weight, out, acc)?
    } else {
        return Err(QuantError::UnsupportedLayer {
            op: "Prepared::convert",
            kind: w.kind().to_string(),
            reason: "no int8 counterpart: register one with PtqConfig::with_conversion",
        });
    };
    Ok(layer)
}
