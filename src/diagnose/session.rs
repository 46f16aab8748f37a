//! [`Diagnoser`]: one float model, its calibration and evaluation data, and a PTQ
//! configuration; every measurement of the diagnosis runs through it.

use ndarray::ArrayD;

use super::Precision;
use super::remedy::{Calibrator, Change, QuantPlan};
use super::variants::{
    Bench, Budget, EvalData, MixedPlan, Quality, ReduceRangeCost, Sensitivity, mixed_plan_of,
    reduce_range_of, sensitivity_of,
};
use crate::error::Result;
use crate::nn::Model;
use crate::observers::CalibratorComparison;
use crate::ptq::{PtqConfig, QConfig};

/// One float model (fused as it will be deployed), its calibration and evaluation data and
/// a PTQ configuration: the measurements of the diagnosis (sensitivity, mixed precision,
/// `reduce_range`, observers, precisions, dynamic quantization) on the caller's data.
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::diagnose::{Diagnoser, EvalData};
/// use qnumeric::nn::{Linear, Sequential};
///
/// let w = ArrayD::from_shape_fn(IxDyn(&[4, 3]), |i| (i[0] as f32 - i[1] as f32) * 0.3);
/// let model = Sequential::new()
///     .with("fc1", Linear::new(w, None)?.with_relu())?
///     .with("fc2", Linear::new(ArrayD::from_elem(IxDyn(&[2, 4]), 0.25), None)?)?
///     .with_quant_stubs()?;
/// let x = ArrayD::from_shape_fn(IxDyn(&[64, 3]), |i| ((i[0] * 7 + i[1]) % 13) as f32 / 13.0);
/// let d = Diagnoser::new(&model, &x, EvalData { inputs: &x, labels: None })?;
/// let s = d.sensitivity()?;
/// assert_eq!(s.rows.len(), 2); // fc1 and fc2
/// assert!(s.all_quantized.sqnr_db > 20.0);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub struct Diagnoser<'a, M: Model + Clone> {
    pub(crate) bench: Bench<'a, M>,
    pub(crate) config: PtqConfig,
}

impl<'a, M: Model + Clone> Diagnoser<'a, M> {
    /// A diagnoser with PyTorch's x86 default configuration.
    ///
    /// # Errors
    /// Errors of the float model on the evaluation inputs; a shape error when labels are
    /// given and the outputs are not `[N, classes]`.
    pub fn new(float_model: &'a M, calib: &'a ArrayD<f32>, eval: EvalData<'a>) -> Result<Self> {
        Ok(Diagnoser {
            bench: Bench::new(float_model, calib, eval)?,
            config: PtqConfig::default(),
        })
    }

    /// The same diagnoser with another PTQ configuration.
    #[must_use]
    pub fn with_config(mut self, config: PtqConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PtqConfig {
        &self.config
    }

    /// The float model's own quality (infinite SQNR; its accuracy with labels).
    #[must_use]
    pub fn float_quality(&self) -> Quality {
        self.bench.float_quality
    }

    /// The model quantized with the configuration.
    ///
    /// # Errors
    /// Errors of prepare, calibration and conversion.
    pub fn quantized(&self) -> Result<M> {
        QuantPlan::new(self.config.clone()).quantize(self.bench.float, self.bench.calib)
    }

    /// The quality of the model quantized with `config`.
    ///
    /// # Errors
    /// As [`Diagnoser::quantized`].
    pub fn measure(&self, config: &PtqConfig) -> Result<Quality> {
        self.bench.measure(self.bench.float.clone(), config)
    }

    /// The quality of any model (float, quantized, mixed) against the float model.
    ///
    /// # Errors
    /// Errors of the model.
    pub fn measure_model<N: Model + ?Sized>(&self, model: &N) -> Result<Quality> {
        self.bench.quality_of(&self.bench.outputs(model)?)
    }

    /// Quantize one layer at a time, and keep one layer in float at a time.
    ///
    /// # Errors
    /// As [`Diagnoser::quantized`].
    pub fn sensitivity(&self) -> Result<Sensitivity> {
        sensitivity_of(&self.bench, &self.config)
    }

    /// The plan that keeps the fewest layers in float (ties: the fewest transitions) to meet
    /// `budget`, found greedily.
    ///
    /// # Errors
    /// As [`Diagnoser::quantized`].
    pub fn mixed_plan(&self, budget: &Budget) -> Result<MixedPlan> {
        mixed_plan_of(&self.bench, &self.config, budget)
    }

    /// `reduce_range` on and off, with exact and x86 AVX2 accumulation.
    ///
    /// # Errors
    /// As [`Diagnoser::quantized`].
    pub fn reduce_range(&self) -> Result<ReduceRangeCost> {
        reduce_range_of(&self.bench, &self.config)
    }

    /// Every calibrator on `layer`'s real activations (its float outputs on the calibration
    /// data).
    ///
    /// # Errors
    /// As [`super::observer_sweep`].
    pub fn observer_sweep(&self, layer: &str) -> Result<CalibratorComparison> {
        super::observer_sweep(self.bench.float, layer, self.bench.calib, &self.config)
    }

    /// The quality of the float model quantized with `plan` ([`QuantPlan::quantize`] on the
    /// calibration data): how every remedy is measured, so a remedy applied to the same plan
    /// reproduces its measurement.
    ///
    /// # Errors
    /// As [`QuantPlan::quantize`].
    pub fn measure_plan(&self, plan: &QuantPlan) -> Result<Quality> {
        let m = plan.quantize(self.bench.float, self.bench.calib)?;
        self.measure_model(&m)
    }

    /// The quality with `change` applied to `layer` on top of the configuration.
    fn measure_change(&self, layer: Option<&str>, change: &Change) -> Result<Quality> {
        self.measure_plan(&QuantPlan::new(self.config.clone()).apply_change(layer, change)?)
    }

    /// The model with `layer` in `precision` (fp32: kept float; fp16 / bf16: rounded) and
    /// every other layer as configured.
    ///
    /// # Errors
    /// [`QuantError::NotFound`](crate::QuantError::NotFound) for an unknown layer; as
    /// [`Diagnoser::quantized`].
    pub fn with_layer_in(&self, layer: &str, precision: Precision) -> Result<Quality> {
        self.measure_change(Some(layer), &Change::KeepIn { precision })
    }

    /// The model with `layer` quantized with another configuration.
    ///
    /// # Errors
    /// As [`Diagnoser::quantized`].
    pub fn with_layer_config(&self, layer: &str, qconfig: QConfig) -> Result<Quality> {
        self.measure(&self.config.clone().with_layer(layer, qconfig))
    }

    /// Dynamic quantization of the float model's linear layers (convolutions stay float).
    ///
    /// # Errors
    /// Errors of the weight observers.
    pub fn dynamic(&self) -> Result<Quality> {
        self.measure_change(None, &Change::DynamicLinear)
    }

    /// The model with `layer`'s output observed by each activation calibrator in turn
    /// ([`Calibrator::ALL`]; the layer's spec), measured.
    ///
    /// # Errors
    /// As [`Diagnoser::quantized`].
    pub fn observers_for(&self, layer: &str) -> Result<Vec<(Calibrator, Quality)>> {
        Calibrator::ALL
            .iter()
            .map(|&calibrator| {
                Ok((
                    calibrator,
                    self.measure_change(Some(layer), &Change::Observer { calibrator })?,
                ))
            })
            .collect()
    }

    /// The model with `layer`'s weights quantized per output channel (PyTorch's x86 weight
    /// observer: qint8 symmetric along axis 0), measured.
    ///
    /// # Errors
    /// As [`Diagnoser::quantized`].
    pub fn per_channel_weights(&self, layer: &str) -> Result<Quality> {
        self.measure_change(Some(layer), &Change::PerChannelWeights)
    }
}
