//! [`QConfig`] (how to quantize a layer) and [`PtqConfig`] (the default and per-layer
//! overrides).

use std::collections::BTreeMap;

use crate::dtype::QDType;
use crate::nn::quantized::Int8Accumulation;
use crate::observers::{HistogramObserver, MinMaxObserver, Observer, PerChannelMinMaxObserver};
use crate::qparams::{QScheme, QSpec};

/// How to quantize a layer: a prototype observer for its output (cloned, fresh, for every
/// layer), a prototype observer for its weight, and how its int8 kernel accumulates.
///
/// # Examples
/// ```
/// use qnumeric::nn::quantized::Int8Accumulation;
/// use qnumeric::ptq::QConfig;
/// let q = QConfig::x86_default().with_accumulation(Int8Accumulation::X86Avx2);
/// assert_eq!(q.activation().name(), "HistogramObserver");
/// assert_eq!(q.weight().name(), "PerChannelMinMaxObserver");
/// println!("{q:?}"); // prints the prototypes' configurations, runs no code
/// ```
#[derive(Debug, Clone)]
pub struct QConfig {
    activation: Box<dyn Observer>,
    weight: Box<dyn Observer>,
    accumulation: Int8Accumulation,
}

fn x86_activation_spec() -> QSpec {
    QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8)
        .with_reduce_range()
        .expect("PyTorch's x86 activation spec (quint8 affine, reduce_range) is valid")
}

fn x86_weight_observer() -> PerChannelMinMaxObserver {
    PerChannelMinMaxObserver::new(QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8), 0)
        .expect("qint8 per-channel symmetric along axis 0 is a valid weight observer")
}

impl QConfig {
    /// A configuration from two prototype observers (any state they hold is dropped: every
    /// layer gets a [`reset`](Observer::reset) clone) and exact accumulation.
    #[must_use]
    pub fn new(activation: impl Observer + 'static, weight: impl Observer + 'static) -> Self {
        Self::from_boxed(Box::new(activation), Box::new(weight))
    }

    /// [`QConfig::new`] for boxed observers.
    #[must_use]
    pub fn from_boxed(mut activation: Box<dyn Observer>, mut weight: Box<dyn Observer>) -> Self {
        activation.reset();
        weight.reset();
        QConfig {
            activation,
            weight,
            accumulation: Int8Accumulation::Exact,
        }
    }

    /// PyTorch's `get_default_qconfig("x86")`: activations [`HistogramObserver`] quint8 affine
    /// with `reduce_range` (`0..=127`), weights [`PerChannelMinMaxObserver`] qint8
    /// per-channel symmetric along axis 0; exact accumulation.
    #[must_use]
    pub fn x86_default() -> Self {
        let act = HistogramObserver::new(x86_activation_spec())
            .expect("PyTorch's default histogram observer is valid");
        QConfig::new(act, x86_weight_observer())
    }

    /// Like [`QConfig::x86_default`] with a [`MinMaxObserver`] on activations (faster, less
    /// robust to outliers).
    #[must_use]
    pub fn x86_min_max() -> Self {
        let act = MinMaxObserver::new(x86_activation_spec())
            .expect("a quint8 affine min-max observer is valid");
        QConfig::new(act, x86_weight_observer())
    }

    /// The same configuration with another accumulation mode for the int8 layers.
    #[must_use]
    pub fn with_accumulation(mut self, accumulation: Int8Accumulation) -> Self {
        self.accumulation = accumulation;
        self
    }

    /// The prototype activation observer.
    #[must_use]
    pub fn activation(&self) -> &dyn Observer {
        self.activation.as_ref()
    }

    /// The prototype weight observer.
    #[must_use]
    pub fn weight(&self) -> &dyn Observer {
        self.weight.as_ref()
    }

    /// How the int8 layers accumulate.
    #[must_use]
    pub fn accumulation(&self) -> Int8Accumulation {
        self.accumulation
    }

    /// A fresh activation observer.
    pub(crate) fn new_activation_observer(&self) -> Box<dyn Observer> {
        let mut o = self.activation.clone();
        o.reset();
        o
    }

    /// A fresh weight observer.
    pub(crate) fn new_weight_observer(&self) -> Box<dyn Observer> {
        let mut o = self.weight.clone();
        o.reset();
        o
    }
}

impl Default for QConfig {
    fn default() -> Self {
        QConfig::x86_default()
    }
}

/// A per-layer exception to the default [`QConfig`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LayerOverride {
    /// Keep the layer in float (it runs as a [`FloatIsland`](super::FloatIsland) inside the
    /// quantized domain).
    KeepFloat,
    /// Use another configuration for this layer.
    QConfig(QConfig),
}

/// The configuration of a post-training quantization: a default [`QConfig`] and per-layer
/// overrides by name.
///
/// # Examples
/// ```
/// use qnumeric::nn::quantized::Int8Accumulation;
/// use qnumeric::ptq::{PtqConfig, QConfig};
/// let cfg = PtqConfig::new(QConfig::x86_default())
///     .keep_float("fc2")
///     .with_layer("conv1", QConfig::x86_min_max().with_accumulation(Int8Accumulation::X86Avx2));
/// assert!(cfg.qconfig("fc2").is_none());
/// assert_eq!(cfg.qconfig("conv1").map(|q| q.accumulation()), Some(Int8Accumulation::X86Avx2));
/// ```
#[derive(Debug, Clone, Default)]
pub struct PtqConfig {
    /// The configuration of every layer without an override.
    pub default: QConfig,
    /// Overrides by layer name.
    pub overrides: BTreeMap<String, LayerOverride>,
    /// Int8 counterparts of a caller's weighted layers, by [`Module::kind`](crate::nn::Module::kind).
    conversions: BTreeMap<&'static str, Conversion>,
}

/// How `convert` builds the int8 layer of a caller's weighted layer: from the float layer,
/// its weight quantized with the configuration's weight observer (qint8), the observed output
/// parameters and the accumulation (PyTorch's mapping from float to quantized modules).
pub type Conversion = fn(
    &dyn crate::nn::WeightedLayer,
    crate::tensor::QuantizedTensor<i8>,
    crate::qparams::QParams,
    Int8Accumulation,
) -> crate::error::Result<Box<dyn crate::nn::Module>>;

impl PtqConfig {
    /// A configuration with `default` for every layer.
    #[must_use]
    pub fn new(default: QConfig) -> Self {
        PtqConfig {
            default,
            overrides: BTreeMap::new(),
            conversions: BTreeMap::new(),
        }
    }

    /// Registers the int8 counterpart of a caller's weighted layer of kind `kind` (what its
    /// [`Module::kind`](crate::nn::Module::kind) returns); the crate's `Linear`, `Conv1d` and
    /// `Conv2d` need none.
    #[must_use]
    pub fn with_conversion(mut self, kind: &'static str, conversion: Conversion) -> Self {
        self.conversions.insert(kind, conversion);
        self
    }

    /// The conversion registered for `kind`.
    #[must_use]
    pub fn conversion(&self, kind: &str) -> Option<Conversion> {
        self.conversions.get(kind).copied()
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

    /// The same configuration with every int8 layer (default and overrides) accumulating as
    /// `accumulation` says.
    #[must_use]
    pub fn with_accumulation(mut self, accumulation: Int8Accumulation) -> Self {
        self.default = self.default.with_accumulation(accumulation);
        for o in self.overrides.values_mut() {
            if let LayerOverride::QConfig(q) = o {
                *q = q.clone().with_accumulation(accumulation);
            }
        }
        self
    }

    /// The configuration of the layer `name`: `None` when it is kept in float.
    #[must_use]
    pub fn qconfig(&self, name: &str) -> Option<&QConfig> {
        match self.overrides.get(name) {
            Some(LayerOverride::KeepFloat) => None,
            Some(LayerOverride::QConfig(q)) => Some(q),
            None => Some(&self.default),
        }
    }
}
