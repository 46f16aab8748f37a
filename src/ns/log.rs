//! [`NumericLog`]: named pairs pushed batch after batch, the layer every way in uses.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayRef, ArrayViewD, CowArray, Dimension, IxDyn};

use super::mask::{Mask, SampleDims};
use super::stats::{ErrorStats, OutputComparison};
use crate::element::QFloat;
use crate::error::{QuantError, Result};
use crate::nn::Activation;
use crate::qparams::QParams;

/// What a [`NumericLog`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogMode {
    /// Statistics only: memory does not grow with the number of batches beyond the
    /// per-sample numbers.
    Streaming,
    /// Statistics, and the pushed tensors (as `f32`) until they take `max_bytes`; batches
    /// past the cap are counted in the statistics but not kept.
    Storing {
        /// The most bytes of tensor data kept, over all layers.
        max_bytes: usize,
    },
}

/// One pushed batch kept in storing mode.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBatch {
    /// The reference (float) values.
    pub float: ArrayD<f32>,
    /// The values under test (dequantized).
    pub quant: ArrayD<f32>,
}

/// A caller's own comparison, fed every batch pushed for one layer (the streaming
/// counterpart of PyTorch's `extend_logger_results_with_comparison`). Register a factory
/// with [`NumericLog::add_comparison`]: each layer gets its own instance.
pub trait CustomComparison: Send {
    /// Sees one batch: reference and values under test, same shape, samples first.
    ///
    /// # Errors
    /// Whatever the comparison refuses; the error is returned by the push.
    fn update(&mut self, float: &ArrayViewD<'_, f32>, quant: &ArrayViewD<'_, f32>) -> Result<()>;

    /// The values so far (one number, or one per batch, as the comparison defines).
    fn values(&self) -> Vec<f64>;
}

/// Makes one [`CustomComparison`] per layer.
pub type ComparisonFactory = Arc<dyn Fn() -> Box<dyn CustomComparison> + Send + Sync>;

/// A [`CustomComparison`] that applies a function to every batch and keeps one value per
/// batch (PyTorch's semantics: one value per forward call). Built by [`per_batch`].
pub struct PerBatch<F> {
    f: F,
    values: Vec<f64>,
}

impl<F> CustomComparison for PerBatch<F>
where
    F: Fn(&ArrayViewD<'_, f32>, &ArrayViewD<'_, f32>) -> Result<f64> + Send,
{
    fn update(&mut self, float: &ArrayViewD<'_, f32>, quant: &ArrayViewD<'_, f32>) -> Result<()> {
        self.values.push((self.f)(float, quant)?);
        Ok(())
    }

    fn values(&self) -> Vec<f64> {
        self.values.clone()
    }
}

/// A factory for [`NumericLog::add_comparison`] from a function of one batch: the layer's
/// result holds one value per batch.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::ns::{per_batch, NumericLog};
///
/// let mut log = NumericLog::streaming();
/// log.add_comparison("max_rel", per_batch(|x, y| Ok(qnumeric::max_abs_error(x, y)? / 4.0)))?;
/// log.push("fc", &array![[1.0f32, 4.0]], &array![[1.0f32, 3.0]], None)?;
/// let fc = log.comparison("fc").expect("logged");
/// assert_eq!(fc.custom["max_rel"], vec![0.25]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn per_batch<F>(f: F) -> ComparisonFactory
where
    F: Fn(&ArrayViewD<'_, f32>, &ArrayViewD<'_, f32>) -> Result<f64>
        + Clone
        + Send
        + Sync
        + 'static,
{
    Arc::new(move || {
        Box::new(PerBatch {
            f: f.clone(),
            values: Vec::new(),
        }) as Box<dyn CustomComparison>
    })
}

struct LayerLog {
    name: String,
    stats: ErrorStats,
    stored: Vec<StoredBatch>,
    dropped: usize,
    custom: Vec<(String, Box<dyn CustomComparison>)>,
    extended: BTreeMap<String, Vec<f64>>,
}

/// The streaming core of the Numeric Suite: pairs `(layer name, float output, quantized or
/// dequantized output)` pushed batch after batch, from anywhere (an inference engine, a
/// [`Model`](crate::nn::Model) through [`ModelComparator`](super::ModelComparator), dump
/// files). The first axis of every pushed array is the sample axis.
///
/// Per layer it keeps an [`ErrorStats`] (SQNR, normalized L2, cosine, MSE, max and mean
/// error, clipped fraction, error in quanta, one set of numbers per sample), the caller's
/// [`CustomComparison`]s, and in [`LogMode::Storing`] the tensors up to a cap. Layers are
/// listed in the order of their first push. Logging can be switched off per layer
/// ([`NumericLog::set_enabled`]).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use qnumeric::ns::NumericLog;
///
/// let mut log = NumericLog::streaming();
/// for _batch in 0..3 {
///     // two samples of three values, from the float and from the quantized engine
///     let float = array![[0.5f32, 1.0, -2.0], [0.25, 0.0, 1.0]];
///     let quant = array![[0.5f32, 1.0, -1.9], [0.25, 0.1, 1.0]];
///     log.push("conv1", &float, &quant, None)?;
/// }
/// let conv1 = log.comparison("conv1").expect("logged");
/// assert_eq!(conv1.samples.len(), 6);
/// assert!(conv1.sqnr_db > 20.0);
/// println!("{}", log.report());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub struct NumericLog {
    mode: LogMode,
    layers: Vec<LayerLog>,
    index: HashMap<String, usize>,
    disabled: HashSet<String>,
    stored_bytes: usize,
    comparisons: Vec<(String, ComparisonFactory)>,
}

impl fmt::Debug for NumericLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NumericLog")
            .field("mode", &self.mode)
            .field("layers", &self.layer_names())
            .field("disabled", &self.disabled)
            .field("stored_bytes", &self.stored_bytes)
            .field(
                "comparisons",
                &self.comparisons.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for NumericLog {
    fn default() -> Self {
        Self::streaming()
    }
}

/// A copy of the values as `f32`.
fn as_f32<A: QFloat>(x: &ArrayViewD<'_, A>) -> ArrayD<f32> {
    x.mapv(QFloat::to_compute)
}

/// The values as an `f32` array: borrowed for contiguous `f32` data, converted otherwise.
fn f32_view<'a, A: QFloat>(x: &'a ArrayViewD<'a, A>) -> CowArray<'a, f32, IxDyn> {
    if let Some(s) = x.as_slice().and_then(A::as_f32_slice)
        && let Ok(v) = ArrayViewD::from_shape(x.raw_dim(), s)
    {
        return CowArray::from(v);
    }
    CowArray::from(as_f32(x))
}

impl NumericLog {
    /// A log in the given mode.
    #[must_use]
    pub fn new(mode: LogMode) -> Self {
        NumericLog {
            mode,
            layers: Vec::new(),
            index: HashMap::new(),
            disabled: HashSet::new(),
            stored_bytes: 0,
            comparisons: Vec::new(),
        }
    }

    /// A log that keeps statistics only.
    #[must_use]
    pub fn streaming() -> Self {
        Self::new(LogMode::Streaming)
    }

    /// A log that also keeps the pushed tensors, up to `max_bytes` of tensor data.
    #[must_use]
    pub fn storing(max_bytes: usize) -> Self {
        Self::new(LogMode::Storing { max_bytes })
    }

    /// The mode.
    #[must_use]
    pub fn mode(&self) -> LogMode {
        self.mode
    }

    /// Switches logging of a layer on or off (also for a layer not pushed yet). Pushes to a
    /// switched-off layer are ignored.
    pub fn set_enabled(&mut self, layer: &str, enabled: bool) {
        if enabled {
            self.disabled.remove(layer);
        } else {
            self.disabled.insert(layer.to_string());
        }
    }

    /// Whether pushes to `layer` are logged.
    #[must_use]
    pub fn is_enabled(&self, layer: &str) -> bool {
        !self.disabled.contains(layer)
    }

    /// Registers a caller's comparison under `name`: every layer gets an instance from
    /// `factory` and feeds it each batch pushed from now on. Its values appear in
    /// [`OutputComparison::custom`].
    ///
    /// # Errors
    /// [`QuantError::InvalidName`] when the name is empty or already registered.
    pub fn add_comparison(&mut self, name: &str, factory: ComparisonFactory) -> Result<()> {
        const OP: &str = "NumericLog::add_comparison";
        self.check_new_name(OP, name)?;
        for l in &mut self.layers {
            l.custom.push((name.to_string(), factory()));
        }
        self.comparisons.push((name.to_string(), factory));
        Ok(())
    }

    fn check_new_name(&self, op: &'static str, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(QuantError::InvalidName {
                op,
                name: name.to_string(),
                reason: "a comparison name must not be empty",
            });
        }
        let taken = self.comparisons.iter().any(|(n, _)| n == name)
            || self.layers.iter().any(|l| l.extended.contains_key(name));
        if taken {
            return Err(QuantError::InvalidName {
                op,
                name: name.to_string(),
                reason: "a comparison with this name is already in the log",
            });
        }
        Ok(())
    }

    /// Adds one batch of layer `layer`: `float` the reference, `quant` the quantized model's
    /// values (dequantized), same shape, samples along the first axis; `output` the
    /// parameters `quant` was quantized with, if it was (for the clipped fraction and the
    /// error in quanta). A switched-off layer ignores the push.
    ///
    /// On an error of the built-in statistics nothing is logged; an error of a caller's
    /// comparison is returned after the statistics took the batch.
    ///
    /// # Errors
    /// As [`ErrorStats::update`] (shape mismatch, no sample axis, empty arrays, NaN or
    /// infinity); [`QuantError::InvalidName`] for an empty layer name; a caller's
    /// comparison's error.
    pub fn push<A: QFloat, B: QFloat, D: Dimension>(
        &mut self,
        layer: &str,
        float: &ArrayRef<A, D>,
        quant: &ArrayRef<B, D>,
        output: Option<&QParams>,
    ) -> Result<()> {
        const OP: &str = "NumericLog::push";
        if layer.is_empty() {
            return Err(QuantError::InvalidName {
                op: OP,
                name: String::new(),
                reason: "a layer name must not be empty",
            });
        }
        if !self.is_enabled(layer) {
            return Ok(());
        }
        let i = match self.index.get(layer) {
            Some(&i) => i,
            None => {
                // Validate on a fresh accumulator first, so a refused first push adds no layer.
                let mut stats = ErrorStats::new();
                stats
                    .update(float, quant, output)
                    .map_err(|e| e.with_op(OP))?;
                let i = self.layers.len();
                self.layers.push(LayerLog {
                    name: layer.to_string(),
                    stats,
                    stored: Vec::new(),
                    dropped: 0,
                    custom: self
                        .comparisons
                        .iter()
                        .map(|(n, f)| (n.clone(), f()))
                        .collect(),
                    extended: BTreeMap::new(),
                });
                self.index.insert(layer.to_string(), i);
                return self.after_stats(i, float, quant);
            }
        };
        self.layers[i]
            .stats
            .update(float, quant, output)
            .map_err(|e| e.with_op(OP))?;
        self.after_stats(i, float, quant)
    }

    /// Adds one batch of `[N, T, ...]` tensors with a padding mask `[N, T]`: padded positions
    /// take no part in any figure. With [`SampleDims::Samples`] a sample's figures add up its
    /// real positions; with [`SampleDims::Positions`] every real `(n, t)` position is a
    /// sample (in the order of [`Mask::sample_ids`]). A tensor whose leading dimensions are
    /// not `[N, T]` is pushed whole, as [`NumericLog::push`] does. Stored batches and the
    /// caller's comparisons see the padded positions as zeros (samples) or dropped
    /// (positions).
    ///
    /// # Errors
    /// As [`NumericLog::push`].
    ///
    /// # Examples
    /// ```
    /// use ndarray::{array, Array3};
    /// use qnumeric::ns::{Mask, NumericLog, SampleDims};
    ///
    /// let mask = Mask::new(array![[true, false], [true, true]])?;
    /// let x = Array3::from_elem((2, 2, 4), 1.0f32);
    /// let mut y = x.clone();
    /// y[[0, 1, 0]] = 1000.0; // garbage in a padded position
    /// let mut log = NumericLog::streaming();
    /// log.push_masked("fc", &x, &y, None, &mask, SampleDims::Samples)?;
    /// assert_eq!(log.comparison("fc").expect("pushed").sqnr_db, f64::INFINITY);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn push_masked<A: QFloat, B: QFloat, D: Dimension>(
        &mut self,
        layer: &str,
        float: &ArrayRef<A, D>,
        quant: &ArrayRef<B, D>,
        output: Option<&QParams>,
        mask: &Mask,
        dims: SampleDims,
    ) -> Result<()> {
        if !mask.applies_to(float.shape()) || float.shape() != quant.shape() {
            return self.push(layer, float, quant, output);
        }
        let (n, t) = mask.shape();
        if dims == SampleDims::Samples && mask.real_positions() == n * t {
            // No padding: the same figures without copying the batch.
            return self.push(layer, float, quant, output);
        }
        if !self.is_enabled(layer) {
            return Ok(());
        }
        let (x, y) = (float.view().into_dyn(), quant.view().into_dyn());
        match dims {
            SampleDims::Samples => {
                let (mut x, mut y) = (x.to_owned(), y.to_owned());
                mask.zero_padding(&mut x);
                let zeroed = mask.zero_padding(&mut y);
                self.push(layer, &x, &y, output)?;
                if let Some(&i) = self.index.get(layer) {
                    self.layers[i]
                        .stats
                        .discount_padding(zeroed, output.is_some());
                }
                Ok(())
            }
            SampleDims::Positions => {
                let (x, y) = (mask.select_positions(&x), mask.select_positions(&y));
                self.push(layer, &x, &y, output)
            }
        }
    }

    /// Storage and the caller's comparisons, once the statistics took the batch.
    fn after_stats<A: QFloat, B: QFloat, D: Dimension>(
        &mut self,
        i: usize,
        float: &ArrayRef<A, D>,
        quant: &ArrayRef<B, D>,
    ) -> Result<()> {
        let (x, y) = (float.view().into_dyn(), quant.view().into_dyn());
        if let LogMode::Storing { max_bytes } = self.mode {
            let bytes = (x.len() + y.len()) * std::mem::size_of::<f32>();
            let layer = &mut self.layers[i];
            if self.stored_bytes.saturating_add(bytes) <= max_bytes {
                layer.stored.push(StoredBatch {
                    float: as_f32(&x),
                    quant: as_f32(&y),
                });
                self.stored_bytes += bytes;
            } else {
                layer.dropped += 1;
            }
        }
        let layer = &mut self.layers[i];
        if !layer.custom.is_empty() {
            let (xf, yf) = (f32_view(&x), f32_view(&y));
            for (_, c) in &mut layer.custom {
                c.update(&xf.view(), &yf.view())?;
            }
        }
        Ok(())
    }

    /// Adds one batch given as activations: a quantized activation is dequantized and its
    /// parameters give the output parameters. See [`NumericLog::push`].
    ///
    /// # Errors
    /// As [`NumericLog::push`].
    pub fn push_activations(
        &mut self,
        layer: &str,
        float: &Activation,
        quant: &Activation,
    ) -> Result<()> {
        if !self.is_enabled(layer) {
            return Ok(());
        }
        let x: Cow<'_, ArrayD<f32>> = match float {
            Activation::Float(a) => Cow::Borrowed(a),
            Activation::Quantized(q) => Cow::Owned(q.to_float()),
        };
        match quant {
            Activation::Float(a) => self.push(layer, x.as_ref(), a, None),
            Activation::Quantized(q) => {
                let y = q.to_float();
                self.push(layer, x.as_ref(), &y, q.per_tensor())
            }
        }
    }

    /// The layers, in the order of their first push.
    #[must_use]
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.name.as_str()).collect()
    }

    /// Number of layers logged.
    #[must_use]
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether nothing was logged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    fn get(&self, layer: &str) -> Option<&LayerLog> {
        self.index.get(layer).map(|&i| &self.layers[i])
    }

    /// The running statistics of a layer.
    #[must_use]
    pub fn stats(&self, layer: &str) -> Option<&ErrorStats> {
        self.get(layer).map(|l| &l.stats)
    }

    /// The finished figures of a layer, with the caller's comparisons.
    #[must_use]
    pub fn comparison(&self, layer: &str) -> Option<OutputComparison> {
        self.get(layer).map(|l| {
            let mut c = l.stats.summary();
            for (name, cmp) in &l.custom {
                c.custom.insert(name.clone(), cmp.values());
            }
            for (name, v) in &l.extended {
                c.custom.insert(name.clone(), v.clone());
            }
            c
        })
    }

    /// Adds another streaming log of the same model (another shard of the data, pushed in
    /// another process): each layer's statistics merge as [`ErrorStats::merge`], layers only
    /// in `other` are added after `self`'s. The result equals one log fed all the batches,
    /// `self`'s first, bit for bit. Nothing changes when an error is returned.
    ///
    /// # Errors
    /// [`QuantError::Incompatible`] when either log is storing tensors or has the caller's
    /// comparisons (their state is the caller's), or when a layer's output parameters differ.
    ///
    /// # Examples
    /// ```
    /// use ndarray::array;
    /// use qnumeric::ns::NumericLog;
    ///
    /// let (x, y) = (array![[1.0f32, 2.0]], array![[1.1f32, 2.0]]);
    /// let (mut shard0, mut shard1, mut whole) =
    ///     (NumericLog::streaming(), NumericLog::streaming(), NumericLog::streaming());
    /// shard0.push("fc", &x, &y, None)?;
    /// shard1.push("fc", &y, &x, None)?;
    /// whole.push("fc", &x, &y, None)?;
    /// whole.push("fc", &y, &x, None)?;
    /// shard0.merge(&shard1)?;
    /// assert_eq!(shard0.stats("fc"), whole.stats("fc"));
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn merge(&mut self, other: &NumericLog) -> Result<()> {
        const OP: &str = "NumericLog::merge";
        if self.mode != LogMode::Streaming || other.mode != LogMode::Streaming {
            return Err(QuantError::Incompatible {
                op: OP,
                reason: "only streaming logs merge (a storing log keeps tensors)",
            });
        }
        let custom = |l: &NumericLog| {
            !l.comparisons.is_empty()
                || l.layers
                    .iter()
                    .any(|x| !x.custom.is_empty() || !x.extended.is_empty())
        };
        if custom(self) || custom(other) {
            return Err(QuantError::Incompatible {
                op: OP,
                reason: "a log with the caller's comparisons cannot be merged",
            });
        }
        let mut merged = Vec::with_capacity(other.layers.len());
        for l in &other.layers {
            match self.index.get(&l.name) {
                Some(&i) => {
                    let mut s = self.layers[i].stats.clone();
                    s.merge(&l.stats).map_err(|e| e.with_op(OP))?;
                    merged.push((Some(i), s));
                }
                None => merged.push((None, l.stats.clone())),
            }
        }
        for (l, (i, stats)) in other.layers.iter().zip(merged) {
            match i {
                Some(i) => self.layers[i].stats = stats,
                None => {
                    self.index.insert(l.name.clone(), self.layers.len());
                    self.layers.push(LayerLog {
                        name: l.name.clone(),
                        stats,
                        stored: Vec::new(),
                        dropped: 0,
                        custom: Vec::new(),
                        extended: BTreeMap::new(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every layer's figures, in the order of the first push.
    #[must_use]
    pub fn comparisons(&self) -> Vec<(String, OutputComparison)> {
        self.layers
            .iter()
            .filter_map(|l| Some((l.name.clone(), self.comparison(&l.name)?)))
            .collect()
    }

    /// The batches kept for a layer (storing mode; empty otherwise).
    #[must_use]
    pub fn stored(&self, layer: &str) -> &[StoredBatch] {
        self.get(layer).map_or(&[], |l| l.stored.as_slice())
    }

    /// Batches of a layer not kept because the cap was reached.
    #[must_use]
    pub fn dropped_batches(&self, layer: &str) -> usize {
        self.get(layer).map_or(0, |l| l.dropped)
    }

    /// Bytes of tensor data kept (storing mode).
    #[must_use]
    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes
    }

    /// Heap bytes held by the statistics (per-sample numbers, names): what streaming mode
    /// costs. Stored tensors are [`NumericLog::stored_bytes`].
    #[must_use]
    pub fn stats_heap_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.stats.heap_bytes() + l.name.capacity())
            .sum()
    }

    /// PyTorch's `extend_logger_results_with_comparison` on the stored tensors: applies `f`
    /// to every stored batch of every layer and records one value per batch under `name`
    /// (in [`OutputComparison::custom`]). Batches dropped by the cap are not included.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] in streaming mode (no tensors are kept: use
    /// [`NumericLog::add_comparison`]); [`QuantError::InvalidName`] for an empty or taken
    /// name; the first error of `f` (then nothing is recorded).
    pub fn extend_with_comparison<F>(&mut self, name: &str, f: F) -> Result<()>
    where
        F: Fn(&ArrayViewD<'_, f32>, &ArrayViewD<'_, f32>) -> Result<f64>,
    {
        const OP: &str = "NumericLog::extend_with_comparison";
        if self.mode == LogMode::Streaming {
            return Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "a streaming log keeps no tensors; register the comparison with add_comparison before pushing",
            });
        }
        self.check_new_name(OP, name)?;
        let mut results = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let v = l
                .stored
                .iter()
                .map(|b| f(&b.float.view(), &b.quant.view()))
                .collect::<Result<Vec<f64>>>()?;
            results.push(v);
        }
        for (l, v) in self.layers.iter_mut().zip(results) {
            l.extended.insert(name.to_string(), v);
        }
        Ok(())
    }

    /// The report of what was pushed, as cumulative comparisons (each pushed pair is two
    /// models' outputs for the same layer). See [`super::NsReport::from_logs`] to present a
    /// log as local comparisons.
    #[must_use]
    pub fn report(&self) -> super::NsReport {
        super::NsReport::from_logs(Some(self), None)
    }
}

/// A streaming log without the caller's comparisons serializes (feature `serde`) as its layers'
/// statistics and switched-off layers: what shards send to be merged
/// ([`NumericLog::merge`]). A storing log or one with the caller's comparisons refuses.
#[cfg(feature = "serde")]
impl serde::Serialize for NumericLog {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        if self.mode != LogMode::Streaming {
            return Err(S::Error::custom(
                "NumericLog: only a streaming log serializes (a storing log keeps tensors)",
            ));
        }
        if !self.comparisons.is_empty()
            || self
                .layers
                .iter()
                .any(|l| !l.custom.is_empty() || !l.extended.is_empty())
        {
            return Err(S::Error::custom(
                "NumericLog: a log with the caller's comparisons does not serialize",
            ));
        }
        #[derive(serde::Serialize)]
        struct Out<'a> {
            layers: Vec<(&'a str, &'a ErrorStats)>,
            disabled: Vec<&'a str>,
        }
        let mut disabled: Vec<&str> = self.disabled.iter().map(String::as_str).collect();
        disabled.sort_unstable();
        Out {
            layers: self
                .layers
                .iter()
                .map(|l| (l.name.as_str(), &l.stats))
                .collect(),
            disabled,
        }
        .serialize(s)
    }
}

/// A streaming log from its serialized form (the statistics validated as they are read).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for NumericLog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(serde::Deserialize)]
        struct In {
            layers: Vec<(String, ErrorStats)>,
            #[serde(default)]
            disabled: Vec<String>,
        }
        let i = In::deserialize(d)?;
        let mut log = NumericLog::streaming();
        for (name, stats) in i.layers {
            if name.is_empty() || log.index.contains_key(&name) {
                return Err(D::Error::custom(format!(
                    "NumericLog: layer name `{name}` empty or repeated"
                )));
            }
            log.index.insert(name.clone(), log.layers.len());
            log.layers.push(LayerLog {
                name,
                stats,
                stored: Vec::new(),
                dropped: 0,
                custom: Vec::new(),
                extended: BTreeMap::new(),
            });
        }
        log.disabled = i.disabled.into_iter().collect();
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn a_refused_first_push_adds_no_layer() {
        let mut log = NumericLog::streaming();
        let x = array![[1.0f32, 2.0]];
        let y = array![[1.0f32, 2.0, 3.0]];
        assert!(log.push("a", &x, &y, None).is_err());
        assert!(log.is_empty());
        assert!(matches!(
            log.push("", &x, &x, None),
            Err(QuantError::InvalidName { .. })
        ));
    }

    #[test]
    fn disabled_layers_ignore_pushes() {
        let mut log = NumericLog::streaming();
        log.set_enabled("a", false);
        let x = array![[1.0f32, 2.0]];
        log.push("a", &x, &x, None).expect("ok");
        assert!(log.is_empty() && !log.is_enabled("a"));
        log.set_enabled("a", true);
        log.push("a", &x, &x, None).expect("ok");
        assert_eq!(log.layer_names(), ["a"]);
    }
}
