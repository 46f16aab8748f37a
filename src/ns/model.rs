//! Any [`Model`]: loggers (cumulative) and shadows (local) attached through [`LayerHook`]s,
//! no change to the caller's models.

use std::collections::{HashMap, HashSet};

use super::log::{ComparisonFactory, LogMode, NumericLog};
use super::report::{DEFAULT_JUMP_THRESHOLD_DB, NsReport, check_threshold};
use super::weights::compare_weights;
use crate::error::{QuantError, Result};
use crate::nn::{Activation, LayerHook, LayerRole, Model, Module};

/// Which layers a [`ModelComparator`] logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerFilter {
    /// Every layer of the quantized model except `Identity` layers (what fusion leaves in
    /// place of the layers it folded: they repeat their input).
    Auto,
    /// Every layer.
    All,
    /// The named layers only.
    Only(Vec<String>),
}

/// What [`compare_models`] / [`ModelComparator`] compare and keep.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CompareOptions {
    /// Cumulative comparison: outputs of both models matched by layer name (default on).
    pub cumulative: bool,
    /// Local (shadow) comparison: each quantized layer (or float layer of another kind than
    /// its twin: reduced precision, a simulated format) against its float twin on the same
    /// (dequantized) input (default on).
    pub local: bool,
    /// Weight comparison in the report (default on).
    pub weights: bool,
    /// Streaming (default) or storing.
    pub mode: LogMode,
    /// Which layers.
    pub layers: LayerFilter,
    /// Layers never logged.
    pub skip: Vec<String>,
    /// The threshold of [`NsReport::first_below_threshold`] (dB).
    pub jump_threshold_db: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            cumulative: true,
            local: true,
            weights: true,
            mode: LogMode::Streaming,
            layers: LayerFilter::Auto,
            skip: Vec::new(),
            jump_threshold_db: DEFAULT_JUMP_THRESHOLD_DB,
        }
    }
}

impl CompareOptions {
    /// Cumulative comparison on or off.
    #[must_use]
    pub fn cumulative(mut self, on: bool) -> Self {
        self.cumulative = on;
        self
    }

    /// Local comparison on or off.
    #[must_use]
    pub fn local(mut self, on: bool) -> Self {
        self.local = on;
        self
    }

    /// Weight comparison on or off.
    #[must_use]
    pub fn weights(mut self, on: bool) -> Self {
        self.weights = on;
        self
    }

    /// Keep the tensors too, up to `max_bytes` of tensor data in each of the two logs
    /// (cumulative, local): [`LogMode::Storing`].
    #[must_use]
    pub fn storing(mut self, max_bytes: usize) -> Self {
        self.mode = LogMode::Storing { max_bytes };
        self
    }

    /// Log only these layers.
    #[must_use]
    pub fn only<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.layers = LayerFilter::Only(names.iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// Log every layer (`Identity` layers too).
    #[must_use]
    pub fn all_layers(mut self) -> Self {
        self.layers = LayerFilter::All;
        self
    }

    /// Never log this layer.
    #[must_use]
    pub fn skip(mut self, name: &str) -> Self {
        self.skip.push(name.to_string());
        self
    }

    /// The threshold of [`NsReport::first_below_threshold`] (dB).
    #[must_use]
    pub fn jump_threshold_db(mut self, db: f64) -> Self {
        self.jump_threshold_db = db;
        self
    }
}

/// Runs a float model and its quantized version on the same batches and logs, layer by
/// layer, the cumulative error (outputs matched by name) and the local error (each
/// quantized layer's float twin — the layer of the same name in the float model — run on
/// the quantized layer's own dequantized inputs, several for a join such as `Add`), both
/// from one pass of each model. Works on any [`Model`]; the models are not changed.
///
/// The float model must have the quantized model's structure (the fused float model that
/// was quantized): names match, and a twin computes what its quantized layer approximates.
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::nn::{Linear, Sequential};
/// use qnumeric::ns::{CompareOptions, ModelComparator};
/// use qnumeric::ptq::{prepare, PtqConfig};
///
/// let w = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] as f32 - i[1] as f32) * 0.1);
/// let float = Sequential::new().with("fc", Linear::new(w, None)?)?.with_quant_stubs()?;
/// let x = ArrayD::from_shape_fn(IxDyn(&[8, 4]), |i| (i[0] * 4 + i[1]) as f32 / 32.0);
/// let mut prepared = prepare(float.clone(), &PtqConfig::default())?;
/// prepared.calibrate(&x)?;
/// let int8 = prepared.convert()?;
///
/// let mut cmp = ModelComparator::new(&float, &int8, CompareOptions::default())?;
/// cmp.run(x.clone())?; // one batch; call again for more
/// let report = cmp.report()?;
/// let fc = report.layer("fc").expect("logged");
/// assert!(fc.cumulative.is_some() && fc.local.is_some() && fc.weight.is_some());
/// println!("{report}");
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub struct ModelComparator<'m, F: Model + ?Sized, Q: Model + ?Sized> {
    float: &'m F,
    quant: &'m Q,
    options: CompareOptions,
    selected: HashSet<String>,
    cumulative: NumericLog,
    local: NumericLog,
    float_outputs: HashMap<String, Activation>,
    batches: usize,
}

impl<F: Model + ?Sized, Q: Model + ?Sized> std::fmt::Debug for ModelComparator<'_, F, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelComparator")
            .field("options", &self.options)
            .field("cumulative", &self.cumulative)
            .field("local", &self.local)
            .field("batches", &self.batches)
            .finish()
    }
}

impl<'m, F: Model + ?Sized, Q: Model + ?Sized> ModelComparator<'m, F, Q> {
    /// A comparator of `float` and `quant`.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a NaN threshold; [`QuantError::UnsupportedConfig`]
    /// when cumulative, local and weight comparisons are all off.
    pub fn new(float: &'m F, quant: &'m Q, options: CompareOptions) -> Result<Self> {
        const OP: &str = "ModelComparator::new";
        check_threshold(OP, options.jump_threshold_db)?;
        if !(options.cumulative || options.local || options.weights) {
            return Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "nothing to compare: cumulative, local and weight comparisons are all off",
            });
        }
        let selected = quant
            .layer_names()
            .into_iter()
            .filter(|n| {
                let chosen = match &options.layers {
                    LayerFilter::Auto => quant.layer(n).is_some_and(|l| l.kind() != "Identity"),
                    LayerFilter::All => true,
                    LayerFilter::Only(names) => names.contains(n),
                };
                chosen && !options.skip.contains(n)
            })
            .collect();
        Ok(ModelComparator {
            float,
            quant,
            cumulative: NumericLog::new(options.mode),
            local: NumericLog::new(options.mode),
            options,
            selected,
            float_outputs: HashMap::new(),
            batches: 0,
        })
    }

    /// Switches logging of a layer on or off (both comparisons).
    pub fn set_enabled(&mut self, layer: &str, enabled: bool) {
        self.cumulative.set_enabled(layer, enabled);
        self.local.set_enabled(layer, enabled);
    }

    /// Registers a caller's comparison with both logs ([`NumericLog::add_comparison`]).
    ///
    /// # Errors
    /// As [`NumericLog::add_comparison`].
    pub fn add_comparison(&mut self, name: &str, factory: ComparisonFactory) -> Result<()> {
        self.cumulative.add_comparison(name, factory.clone())?;
        self.local.add_comparison(name, factory)
    }

    /// Runs both models on one batch (samples along the first axis) and logs it. Returns the
    /// quantized model's output.
    ///
    /// # Errors
    /// The first error of either model, or of a push ([`NumericLog::push`]: e.g. a float
    /// and a quantized output of different shapes under the same name, or a NaN).
    pub fn run(&mut self, input: impl Into<Activation>) -> Result<Activation> {
        self.run_with(input, &mut crate::nn::NoHook)
    }

    /// As [`ModelComparator::run`], with `extra` called at every layer of the quantized model
    /// before the comparator's own hook: a caller's measurement rides along the same pass (the
    /// diagnosis checks the int8 kernels this way, so the quantized model runs once per
    /// batch). What `extra` leaves in the output is what is compared and passed on.
    ///
    /// # Errors
    /// As [`ModelComparator::run`], and the errors of `extra`.
    pub fn run_with(
        &mut self,
        input: impl Into<Activation>,
        extra: &mut dyn LayerHook,
    ) -> Result<Activation> {
        let input = input.into();
        self.float_outputs.clear();
        if self.options.cumulative {
            let mut rec = Recorder {
                selected: &self.selected,
                outputs: &mut self.float_outputs,
            };
            self.float.run(input.clone(), &mut rec)?;
        }
        let mut hook = QuantHook {
            float: self.float,
            selected: &self.selected,
            float_outputs: &mut self.float_outputs,
            cumulative: self.options.cumulative.then_some(&mut self.cumulative),
            local: self.options.local.then_some(&mut self.local),
        };
        let y = self.quant.run(input, &mut Both(extra, &mut hook))?;
        self.float_outputs.clear();
        self.batches += 1;
        Ok(y)
    }

    /// Batches run.
    #[must_use]
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// The cumulative log.
    #[must_use]
    pub fn cumulative_log(&self) -> &NumericLog {
        &self.cumulative
    }

    /// The local log.
    #[must_use]
    pub fn local_log(&self) -> &NumericLog {
        &self.local
    }

    /// The two logs (cumulative, local), e.g. for their stored tensors.
    #[must_use]
    pub fn into_logs(self) -> (NumericLog, NumericLog) {
        (self.cumulative, self.local)
    }

    /// The report: layers in the quantized model's execution order with their kinds,
    /// cumulative and local figures, and the weight comparison when on.
    ///
    /// # Errors
    /// [`QuantError::Empty`] before any batch when only output comparisons are on; as
    /// [`compare_weights`].
    pub fn report(&self) -> Result<NsReport> {
        if self.batches == 0 && !self.options.weights {
            return Err(QuantError::Empty {
                op: "ModelComparator::report",
            });
        }
        let mut r = NsReport::from_logs(
            self.options.cumulative.then_some(&self.cumulative),
            self.options.local.then_some(&self.local),
        );
        if self.options.weights {
            let w = compare_weights(self.float, self.quant)?
                .into_iter()
                .filter(|(n, _)| self.selected.contains(n))
                .collect();
            r = r.with_weights(w);
        }
        let order = self.quant.layer_names();
        r.order_by(&order);
        for l in &mut r.layers {
            l.kind = self.quant.layer(&l.name).map(|m| m.kind().to_string());
        }
        r.jump_threshold_db = self.options.jump_threshold_db;
        Ok(r)
    }
}

/// Compares `float` and `quant` on every batch of `batches` (samples along the first axis
/// of each), and returns the report ([`ModelComparator`] in one call).
///
/// # Errors
/// [`QuantError::EmptyInput`] when there is no batch; as [`ModelComparator::new`],
/// [`ModelComparator::run`] and [`ModelComparator::report`].
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, Axis, IxDyn};
/// use qnumeric::nn::{Linear, Sequential};
/// use qnumeric::ns::{compare_models, Comparison, CompareOptions};
/// use qnumeric::ptq::{prepare, PtqConfig};
///
/// let w = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] as f32 - i[1] as f32) * 0.1);
/// let float = Sequential::new().with("fc", Linear::new(w, None)?)?.with_quant_stubs()?;
/// let x = ArrayD::from_shape_fn(IxDyn(&[32, 4]), |i| ((i[0] * 4 + i[1]) % 9) as f32 / 8.0);
/// let mut prepared = prepare(float.clone(), &PtqConfig::default())?;
/// prepared.calibrate(&x)?;
/// let int8 = prepared.convert()?;
///
/// let batches = x.axis_chunks_iter(Axis(0), 8).map(|b| b.to_owned());
/// let report = compare_models(&float, &int8, batches, CompareOptions::default())?;
/// assert!(report.sqnr_db("fc", Comparison::Cumulative).expect("logged") > 20.0);
/// assert_eq!(report.layer("fc").and_then(|l| l.cumulative.as_ref()).map(|c| c.samples.len()), Some(32));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn compare_models<F, Q, I>(
    float: &F,
    quant: &Q,
    batches: I,
    options: CompareOptions,
) -> Result<NsReport>
where
    F: Model + ?Sized,
    Q: Model + ?Sized,
    I: IntoIterator,
    I::Item: Into<Activation>,
{
    let mut cmp = ModelComparator::new(float, quant, options)?;
    for b in batches {
        cmp.run(b)?;
    }
    if cmp.batches() == 0 {
        return Err(QuantError::EmptyInput {
            op: "compare_models",
        });
    }
    cmp.report()
}

/// Two hooks, one after the other.
struct Both<'a, 'b>(&'a mut dyn LayerHook, &'b mut dyn LayerHook);

impl LayerHook for Both<'_, '_> {
    fn after_layer(
        &mut self,
        name: &str,
        layer: &dyn Module,
        inputs: &[&Activation],
        output: &mut Activation,
    ) -> Result<()> {
        self.0.after_layer(name, layer, inputs, output)?;
        self.1.after_layer(name, layer, inputs, output)
    }
}

/// Keeps the float model's outputs of the selected layers for one batch.
struct Recorder<'a> {
    selected: &'a HashSet<String>,
    outputs: &'a mut HashMap<String, Activation>,
}

impl LayerHook for Recorder<'_> {
    fn after_layer(
        &mut self,
        name: &str,
        _layer: &dyn Module,
        _inputs: &[&Activation],
        output: &mut Activation,
    ) -> Result<()> {
        if self.selected.contains(name) {
            self.outputs.insert(name.to_string(), output.clone());
        }
        Ok(())
    }
}

/// Logs the quantized model: cumulative against the recorded float outputs, local against
/// the float twin run on this layer's inputs.
struct QuantHook<'a, F: Model + ?Sized> {
    float: &'a F,
    selected: &'a HashSet<String>,
    float_outputs: &'a mut HashMap<String, Activation>,
    cumulative: Option<&'a mut NumericLog>,
    local: Option<&'a mut NumericLog>,
}

impl<F: Model + ?Sized> LayerHook for QuantHook<'_, F> {
    fn after_layer(
        &mut self,
        name: &str,
        layer: &dyn Module,
        inputs: &[&Activation],
        output: &mut Activation,
    ) -> Result<()> {
        if !self.selected.contains(name) {
            return Ok(());
        }
        if let Some(log) = self.cumulative.as_deref_mut()
            && let Some(f) = self.float_outputs.remove(name)
        {
            log.push_activations(name, &f, output)?;
        }
        if let Some(log) = self.local.as_deref_mut() {
            if !log.is_enabled(name) {
                return Ok(());
            }
            let Some(twin) = self.float.layer(name) else {
                return Ok(());
            };
            // A quantized layer, or a float layer that is not its twin's kind (a layer in a
            // reduced precision or a simulated format): its own error is measured.
            let simulated = matches!(layer.role(), LayerRole::Float) && layer.kind() != twin.kind();
            if !(matches!(layer.role(), LayerRole::Quantized) || simulated) {
                return Ok(());
            }
            if twin.num_inputs() != inputs.len() {
                return Ok(());
            }
            let dequantized: Vec<Option<Activation>> = inputs
                .iter()
                .map(|a| a.is_quantized().then(|| Activation::Float(a.to_float())))
                .collect();
            let refs: Vec<&Activation> = inputs
                .iter()
                .zip(&dequantized)
                .map(|(a, d)| d.as_ref().unwrap_or(a))
                .collect();
            let y = twin.forward_many(&refs)?;
            log.push_activations(name, &y, output)?;
        }
        Ok(())
    }
}
