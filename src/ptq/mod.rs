//! Post-training static quantization: [`prepare`] (observers attached), calibrate (run data
//! through [`Prepared::calibrate`]), [`Prepared::convert`] (quantized layers built from the
//! float layers and the observers' parameters) — PyTorch's eager workflow, on any [`Model`].
//!
//! | item | what it is |
//! |---|---|
//! | [`QConfig`] | an activation observer factory and a weight observer factory ([`QConfig::x86_default`]: PyTorch's `x86` qconfig) |
//! | [`PtqConfig`] | the default [`QConfig`] and per-layer overrides ([`LayerOverride::KeepFloat`], another [`QConfig`]) |
//! | [`prepare`] | plans the conversion and attaches one activation observer per layer that needs output parameters |
//! | [`Prepared`] | the model under calibration: [`Prepared::calibrate`], [`Prepared::convert`] |
//! | [`quantize_dynamic`] | replaces `Linear` layers by [`DynamicQuantizedLinear`] |
//!
//! The quantized domain starts at a [`QuantStub`] and ends at a [`DeQuantStub`] (in the order
//! the model runs its layers); layers outside it stay float. Inside it:
//!
//! | float layer | observed | converted to |
//! |---|---|---|
//! | `QuantStub` | output | [`Quantize`] |
//! | `DeQuantStub` | – | [`DeQuantize`] |
//! | `Conv2d` / `ConvReLU2d` | output, weight | [`QuantizedConv2d`] |
//! | `Linear` / `LinearReLU` | output, weight | [`QuantizedLinear`] |
//! | `Add` | output | [`QuantizedAdd`] |
//! | `ReLU`, `ReLU6`, `MaxPool2d`, `AvgPool2d`, `Flatten`, `Identity` | – | unchanged (they run on quantized activations) |
//! | anything else, and layers kept in float | output | [`FloatIsland`]: dequantize → float layer → quantize |
//!
//! # Examples
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use qnumeric::nn::{Activation, Linear, Model, Sequential};
//! use qnumeric::ptq::{prepare, PtqConfig};
//!
//! let w = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] as f32 - i[1] as f32) * 0.1);
//! let model = Sequential::new().with("fc", Linear::new(w, None)?)?.with_quant_stubs()?;
//! let mut prepared = prepare(model, &PtqConfig::default())?;
//! let x = ArrayD::from_shape_fn(IxDyn(&[8, 4]), |i| (i[0] * 4 + i[1]) as f32 / 32.0);
//! prepared.calibrate(&x)?;
//! let int8 = prepared.convert()?;
//! assert_eq!(int8.layer("fc").map(|l| l.kind()), Some("QuantizedLinear"));
//! let y = int8.forward(Activation::Float(x))?;
//! assert_eq!(y.shape(), &[8, 3]);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ndarray::ArrayD;

use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::nn::quantized::{
    DeQuantize, DynamicQuantizedLinear, Quantize, QuantizedAdd, QuantizedConv2d, QuantizedLinear,
};
use crate::nn::{
    Activation, Add, AvgPool2d, Conv2d, DeQuantStub, Flatten, Identity, Linear, MaxPool2d, Model,
    Module, QuantStub, ReLU, ReLU6, WeightRef,
};
use crate::observers::{HistogramObserver, MinMaxObserver, Observer, PerChannelMinMaxObserver};
use crate::qparams::AnyQParams;
use crate::qparams::{QParams, QScheme, QSpec};

/// Makes a fresh observer.
pub type ObserverFactory = Arc<dyn Fn() -> Result<Box<dyn Observer>> + Send + Sync>;

/// How to quantize a layer: an activation observer (for its output) and a weight observer.
#[derive(Clone)]
pub struct QConfig {
    /// Factory of the observer of the layer's output (per tensor, quint8).
    pub activation: ObserverFactory,
    /// Factory of the observer of the layer's weight (qint8, per tensor or along axis 0).
    pub weight: ObserverFactory,
}

impl fmt::Debug for QConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |fac: &ObserverFactory| fac().map(|o| o.name()).unwrap_or("<error>");
        f.debug_struct("QConfig")
            .field("activation", &name(&self.activation))
            .field("weight", &name(&self.weight))
            .finish()
    }
}

fn x86_activation_spec() -> Result<QSpec> {
    QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8).with_reduce_range()
}

fn weight_spec() -> QSpec {
    QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8)
}

impl QConfig {
    /// A configuration from two factories.
    pub fn new(
        activation: impl Fn() -> Result<Box<dyn Observer>> + Send + Sync + 'static,
        weight: impl Fn() -> Result<Box<dyn Observer>> + Send + Sync + 'static,
    ) -> Self {
        QConfig {
            activation: Arc::new(activation),
            weight: Arc::new(weight),
        }
    }

    /// PyTorch's `get_default_qconfig("x86")`: activations [`HistogramObserver`] quint8 affine
    /// with `reduce_range` (`0..=127`), weights [`PerChannelMinMaxObserver`] qint8
    /// per-channel symmetric along axis 0.
    #[must_use]
    pub fn x86_default() -> Self {
        QConfig::new(
            || Ok(Box::new(HistogramObserver::new(x86_activation_spec()?)?) as Box<dyn Observer>),
            || Ok(Box::new(PerChannelMinMaxObserver::new(weight_spec(), 0)?) as Box<dyn Observer>),
        )
    }

    /// Like [`QConfig::x86_default`] with a [`MinMaxObserver`] on activations (faster, less
    /// robust to outliers).
    #[must_use]
    pub fn x86_min_max() -> Self {
        QConfig::new(
            || Ok(Box::new(MinMaxObserver::new(x86_activation_spec()?)?) as Box<dyn Observer>),
            || Ok(Box::new(PerChannelMinMaxObserver::new(weight_spec(), 0)?) as Box<dyn Observer>),
        )
    }
}

impl Default for QConfig {
    fn default() -> Self {
        QConfig::x86_default()
    }
}

/// A per-layer exception to the default [`QConfig`].
#[derive(Debug, Clone)]
pub enum LayerOverride {
    /// Keep the layer in float (it runs as a [`FloatIsland`] inside the quantized domain).
    KeepFloat,
    /// Use another configuration for this layer.
    QConfig(QConfig),
}

/// The configuration of a post-training quantization: a default [`QConfig`] and per-layer
/// overrides by name.
#[derive(Debug, Clone, Default)]
pub struct PtqConfig {
    /// The configuration of every layer without an override.
    pub default: QConfig,
    /// Overrides by layer name.
    pub overrides: BTreeMap<String, LayerOverride>,
}

impl PtqConfig {
    /// A configuration with `default` for every layer.
    #[must_use]
    pub fn new(default: QConfig) -> Self {
        PtqConfig {
            default,
            overrides: BTreeMap::new(),
        }
    }

    /// Keeps the layer `name` in float (builder style).
    #[must_use]
    pub fn keep_float(mut self, name: impl Into<String>) -> Self {
        self.overrides.insert(name.into(), LayerOverride::KeepFloat);
        self
    }

    /// Uses `qconfig` for the layer `name` (builder style).
    #[must_use]
    pub fn with_layer(mut self, name: impl Into<String>, qconfig: QConfig) -> Self {
        self.overrides
            .insert(name.into(), LayerOverride::QConfig(qconfig));
        self
    }

    fn qconfig(&self, name: &str) -> Option<&QConfig> {
        match self.overrides.get(name) {
            Some(LayerOverride::KeepFloat) => None,
            Some(LayerOverride::QConfig(q)) => Some(q),
            None => Some(&self.default),
        }
    }
}

/// What [`Prepared::convert`] will do with a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LayerPlan {
    /// Outside the quantized domain: unchanged.
    Float,
    /// A `QuantStub`: becomes [`Quantize`].
    Quantize,
    /// A `DeQuantStub`: becomes [`DeQuantize`].
    DeQuantize,
    /// Conv2d / Linear / Add: becomes its quantized layer.
    Quantized,
    /// Runs on quantized activations as it is (ReLU, pooling, flatten ...).
    PassThrough,
    /// Stays float inside the quantized domain: becomes a [`FloatIsland`].
    FloatIsland,
}

impl LayerPlan {
    fn observes_output(self) -> bool {
        matches!(
            self,
            LayerPlan::Quantize | LayerPlan::Quantized | LayerPlan::FloatIsland
        )
    }
}

fn is_pass_through(layer: &dyn Module) -> bool {
    let a = layer.as_any();
    a.is::<ReLU>()
        || a.is::<ReLU6>()
        || a.is::<MaxPool2d>()
        || a.is::<AvgPool2d>()
        || a.is::<Flatten>()
        || a.is::<Identity>()
}

fn is_quantizable(layer: &dyn Module) -> bool {
    let a = layer.as_any();
    a.is::<Conv2d>() || a.is::<Linear>() || a.is::<Add>()
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

/// Plans the conversion of `model` and attaches observers (PyTorch's `prepare`).
///
/// # Errors
/// [`QuantError::UnsupportedConfig`] when the model has no [`QuantStub`] (nothing would be
/// quantized); [`QuantError::NotFound`] for an override naming a layer that is not in the
/// model; errors of the observer factories.
pub fn prepare<M: Model>(model: M, config: &PtqConfig) -> Result<Prepared<M>> {
    const OP: &str = "ptq::prepare";
    let names = model.layer_names();
    for name in config.overrides.keys() {
        if !names.contains(name) {
            return Err(QuantError::NotFound {
                op: OP,
                what: "layer (in the per-layer overrides)",
                name: name.clone(),
            });
        }
    }
    let mut in_domain = false;
    let mut any_stub = false;
    let mut plan = Vec::with_capacity(names.len());
    let mut observers = BTreeMap::new();
    for name in names {
        let layer = model.layer(&name).ok_or_else(|| QuantError::NotFound {
            op: OP,
            what: "layer",
            name: name.clone(),
        })?;
        let any = layer.as_any();
        let qconfig = config.qconfig(&name);
        let p = if any.is::<QuantStub>() {
            any_stub = true;
            in_domain = true;
            LayerPlan::Quantize
        } else if any.is::<DeQuantStub>() {
            let was = in_domain;
            in_domain = false;
            if was {
                LayerPlan::DeQuantize
            } else {
                LayerPlan::Float
            }
        } else if !in_domain {
            LayerPlan::Float
        } else if is_pass_through(layer) {
            LayerPlan::PassThrough
        } else if qconfig.is_some() && is_quantizable(layer) {
            LayerPlan::Quantized
        } else {
            LayerPlan::FloatIsland
        };
        if p.observes_output() {
            let factory = qconfig.unwrap_or(&config.default);
            observers.insert(name.clone(), (factory.activation)()?);
        }
        plan.push((name, p));
    }
    if !any_stub {
        return Err(QuantError::UnsupportedConfig {
            op: OP,
            reason: "the model has no QuantStub, so nothing would be quantized \
                     (see Sequential::with_quant_stubs)",
        });
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
                    Activation::Quantized(q) => obs.observe(q.dequantize::<f32>()?.view())?,
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
    /// saw no data; [`QuantError::UnsupportedConfig`] when the observer is not per tensor.
    pub fn output_qparams(&self, name: &str) -> Result<QParams> {
        const OP: &str = "Prepared::output_qparams";
        let obs = self
            .observers
            .get(name)
            .ok_or_else(|| QuantError::NotFound {
                op: OP,
                what: "observed layer",
                name: name.to_string(),
            })?;
        match obs.qparams()? {
            AnyQParams::PerTensor(p) => Ok(p),
            AnyQParams::PerChannel(_) => Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "activation observers must be per tensor",
            }),
        }
    }

    /// Builds the quantized model (PyTorch's `convert`): every planned layer is replaced; the
    /// others stay as they are.
    ///
    /// # Errors
    /// [`QuantError::Empty`] when a needed observer saw no data (calibrate first); errors of
    /// the weight observers and of the quantized layers' constructors. On error nothing is
    /// returned (the prepared model is consumed).
    pub fn convert(mut self) -> Result<M> {
        let mut replacements: Vec<(String, Box<dyn Module>)> = Vec::new();
        for (name, p) in &self.plan {
            let layer = self.model.layer(name).ok_or_else(|| QuantError::NotFound {
                op: "Prepared::convert",
                what: "layer",
                name: name.clone(),
            })?;
            let new: Box<dyn Module> = match p {
                LayerPlan::Float | LayerPlan::PassThrough => continue,
                LayerPlan::Quantize => Box::new(Quantize::new(self.output_qparams(name)?)?),
                LayerPlan::DeQuantize => Box::new(DeQuantize),
                LayerPlan::FloatIsland => Box::new(FloatIsland::new(
                    layer.box_clone(),
                    self.output_qparams(name)?,
                )?),
                LayerPlan::Quantized => {
                    let qconfig = self.config.qconfig(name).unwrap_or(&self.config.default);
                    let out = self.output_qparams(name)?;
                    quantize_layer(layer, qconfig, out)?
                }
            };
            replacements.push((name.clone(), new));
        }
        for (name, layer) in replacements {
            self.model.replace_layer(&name, layer)?;
        }
        Ok(self.model)
    }
}

/// Observes a float weight with the config's weight observer.
fn weight_params(qconfig: &QConfig, w: &ArrayD<f32>) -> Result<AnyQParams> {
    let mut obs = (qconfig.weight)()?;
    obs.observe(w.view())?;
    obs.qparams()
}

fn quantize_layer(layer: &dyn Module, qconfig: &QConfig, out: QParams) -> Result<Box<dyn Module>> {
    let any = layer.as_any();
    if let Some(conv) = any.downcast_ref::<Conv2d>() {
        let wp = weight_params(qconfig, conv.weight_array())?;
        return Ok(Box::new(QuantizedConv2d::from_float(conv, wp, out)?));
    }
    if let Some(lin) = any.downcast_ref::<Linear>() {
        let wp = weight_params(qconfig, lin.weight_array())?;
        return Ok(Box::new(QuantizedLinear::from_float(lin, wp, out)?));
    }
    Ok(Box::new(QuantizedAdd::new(out)?))
}

/// A float layer inside the quantized domain: a quantized input is dequantized, the float
/// layer runs, and the output is quantized with the observed parameters. A float input runs
/// the float layer and stays float.
#[derive(Debug, Clone)]
pub struct FloatIsland {
    layer: Box<dyn Module>,
    out: QParams,
}

impl FloatIsland {
    /// Wraps a float layer with the parameters of its output.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] unless the parameters are quint8.
    pub fn new(layer: Box<dyn Module>, output: QParams) -> Result<Self> {
        Quantize::new(output)?;
        Ok(FloatIsland { layer, out: output })
    }

    /// The float layer.
    #[must_use]
    pub fn inner(&self) -> &dyn Module {
        self.layer.as_ref()
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        &self.out
    }
}

impl Module for FloatIsland {
    fn kind(&self) -> &'static str {
        "FloatIsland"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_many(&[x])
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        let quantized = inputs.iter().any(|a| a.is_quantized());
        let floats: Vec<Activation> = inputs
            .iter()
            .map(|a| a.to_float().map(Activation::Float))
            .collect::<Result<_>>()?;
        let refs: Vec<&Activation> = floats.iter().collect();
        let y = self.layer.forward_many(&refs)?;
        if quantized {
            Quantize::new(self.out)?.forward(&y)
        } else {
            Ok(y)
        }
    }

    fn num_inputs(&self) -> usize {
        self.layer.num_inputs()
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        self.layer.weight()
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.layer.bias()
    }
}

/// Dynamic quantization (PyTorch's `quantize_dynamic`): every float [`Linear`] without a fused
/// ReLU and not kept in float is replaced by a [`DynamicQuantizedLinear`] whose weight is
/// quantized with the layer's weight observer. Returns the names replaced.
///
/// # Errors
/// Errors of the weight observers and constructors; on error the model is unchanged.
pub fn quantize_dynamic<M: Model>(model: &mut M, config: &PtqConfig) -> Result<Vec<String>> {
    let mut replacements: Vec<(String, Box<dyn Module>)> = Vec::new();
    for name in model.layer_names() {
        let Some(qconfig) = config.qconfig(&name) else {
            continue;
        };
        let Some(layer) = model.layer(&name) else {
            continue;
        };
        if let Some(lin) = layer.as_any().downcast_ref::<Linear>() {
            if lin.has_relu() {
                continue;
            }
            let wp = weight_params(qconfig, lin.weight_array())?;
            replacements.push((name, Box::new(DynamicQuantizedLinear::from_float(lin, wp)?)));
        }
    }
    let mut names = Vec::with_capacity(replacements.len());
    for (name, layer) in replacements {
        model.replace_layer(&name, layer)?;
        names.push(name);
    }
    Ok(names)
}
