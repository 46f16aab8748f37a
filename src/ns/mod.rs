//! The Numeric Suite: where, layer by layer and sample by sample, a quantized model departs
//! from its float original (PyTorch's eager and FX Numeric Suites: `compare_weights`,
//! `compare_model_outputs`, `compare_model_stub`, `add_loggers`, `add_shadow_loggers`,
//! `extend_logger_results_with_comparison`), streamed, with per-sample figures.
//!
//! Three ways in, one set of results ([`NsReport`]):
//!
//! | way in | for | item |
//! |---|---|---|
//! | push named pairs | any engine: `(layer, float output, quantized output)` batch after batch | [`NumericLog::push`] |
//! | any [`Model`](crate::nn::Model) | the crate's `Sequential` or a caller's graph, through [`LayerHook`](crate::nn::LayerHook)s | [`compare_models`], [`ModelComparator`] |
//! | dump files | two `.safetensors` files of per-layer outputs (feature `safetensors`; the `qnumeric compare` command) | [`compare_dump_files`] |
//!
//! What is compared ([`Comparison`]):
//! - **cumulative**: both models on the same inputs, outputs matched by layer name;
//! - **local**: each quantized layer's float twin on the quantized layer's own dequantized
//!   input, so a layer's own error is separated from what it inherited;
//! - **weight**: float against quantized weights per tensor and per output channel
//!   ([`compare_weights`]).
//!
//! Per layer, streamed in `f64` ([`ErrorStats`]): SQNR, normalized L2 error and cosine
//! (PyTorch's definitions, as [`crate::metrics`]), MSE, max and mean error, the clipped
//! fraction (float values outside the representable range of the quantized output) and the
//! RMS error in quanta of the output scale next to the rounding floor
//! ([`ROUNDING_FLOOR_QUANTA`]); and per sample (first axis) its SQNR and what it is computed
//! from ([`SampleStats`]). [`NsReport`] names the worst layer, the largest SQNR drop between
//! consecutive layers and the first layer below a threshold, and prints as a table
//! (`Display`), CSV or JSON (feature `serde`). Callers add comparisons of their own by name
//! ([`NumericLog::add_comparison`], [`per_batch`], [`NumericLog::extend_with_comparison`]).
//!
//! | file | what it holds |
//! |---|---|
//! | `stats.rs` | [`ErrorStats`], [`OutputComparison`], [`SampleStats`] |
//! | `log.rs` | [`NumericLog`], [`LogMode`], [`CustomComparison`], [`per_batch`] |
//! | `model.rs` | [`ModelComparator`], [`compare_models`], [`CompareOptions`], [`LayerFilter`] |
//! | `weights.rs` | [`compare_weights`], [`compare_weight_tensors`], [`WeightComparison`] |
//! | `report.rs` | [`NsReport`], [`LayerReport`], [`Comparison`], [`Jump`] |
//! | `dump.rs` | [`compare_dump_files`], [`compare_dumps`], [`DumpComparison`] (feature `safetensors`) |
//!
//! # Examples
//! No model: push what an engine gives, batch after batch.
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use qnumeric::ns::NumericLog;
//! use qnumeric::{QDType, QParams};
//!
//! let out = QParams::new(0.05, 0, QDType::QUInt8)?; // the quantized layer's output parameters
//! let mut log = NumericLog::streaming();
//! for batch in 0..4 {
//!     let float = ArrayD::from_shape_fn(IxDyn(&[8, 16]), |i| ((i[0] + i[1] + batch) % 7) as f32 * 0.3);
//!     let quant = float.mapv(|v| (v / 0.05).round() * 0.05); // what the int8 engine returned, dequantized
//!     log.push("conv1", &float, &quant, Some(&out))?;
//! }
//! let conv1 = log.comparison("conv1").expect("logged");
//! assert_eq!(conv1.samples.len(), 32); // one entry per sample
//! assert!(conv1.rms_quanta.expect("quantized") < 0.3); // at the rounding floor
//! println!("{}", log.report());
//! # Ok::<(), qnumeric::QuantError>(())
//! ```
//!
//! Any model: the float model and its int8 version on the same batches.
//! ```
//! use ndarray::{ArrayD, Axis, IxDyn};
//! use qnumeric::nn::{Linear, Sequential};
//! use qnumeric::ns::{compare_models, CompareOptions, Comparison};
//! use qnumeric::ptq::{prepare, PtqConfig};
//!
//! let w = ArrayD::from_shape_fn(IxDyn(&[6, 4]), |i| (i[0] as f32 - i[1] as f32) * 0.1);
//! let float = Sequential::new()
//!     .with("fc1", Linear::new(w.clone(), None)?.with_relu())?
//!     .with("fc2", Linear::new(w.t().to_owned(), None)?)?
//!     .with_quant_stubs()?;
//! let x = ArrayD::from_shape_fn(IxDyn(&[64, 4]), |i| ((i[0] * 5 + i[1]) % 11) as f32 / 10.0);
//! let mut prepared = prepare(float.clone(), &PtqConfig::default())?;
//! prepared.calibrate(&x)?;
//! let int8 = prepared.convert()?;
//!
//! let batches = x.axis_chunks_iter(Axis(0), 16).map(|b| b.to_owned());
//! let report = compare_models(&float, &int8, batches, CompareOptions::default())?;
//! let fc2 = report.layer("fc2").expect("logged");
//! println!("fc2: {:.1} dB cumulative, {:.1} dB local", fc2.sqnr_db(Comparison::Cumulative).unwrap_or(f64::NAN), fc2.sqnr_db(Comparison::Local).unwrap_or(f64::NAN));
//! println!("{report}");
//! if let Some(jump) = report.largest_drop() {
//!     println!("the error jumps at {}", jump.layer);
//! }
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

#[cfg(feature = "safetensors")]
mod dump;
mod exact;
#[cfg(feature = "serde")]
pub(crate) mod json;
mod log;
mod mask;
mod model;
mod report;
mod stats;
mod weights;

#[cfg(feature = "safetensors")]
#[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
pub use dump::{
    ActivationMeta, ActivationMode, ConvMeta, DUMP_FORMAT_V2, DumpComparison, DumpPair, DumpTensor,
    DumpVersion, LayerKind, LayerMeta, MASK_TENSOR, OrderSource, Part, Side, SkippedTensor,
    WeightMeta, compare_dump_files, compare_dumps,
};
pub use log::{
    ComparisonFactory, CustomComparison, LogMode, NumericLog, PerBatch, StoredBatch, per_batch,
};
pub use mask::{Mask, SampleDims, SampleId};
pub use model::{CompareOptions, LayerFilter, ModelComparator, compare_models};
pub use report::{Comparison, DEFAULT_JUMP_THRESHOLD_DB, Jump, LayerReport, NsReport};
pub use stats::{ErrorStats, NonFiniteCount, OutputComparison, ROUNDING_FLOOR_QUANTA, SampleStats};
pub use weights::{ChannelWeight, WeightComparison, compare_weight_tensors, compare_weights};
