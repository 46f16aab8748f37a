//! [`LinearReplay`]: one Linear layer replayed from a dump (its input, float weight, shadow and
//! quantized outputs) under other quantization schemes, to measure remedies on the layer alone
//! in milliseconds, without the model.
//!
//! The schemes ([`LinearScheme`]) follow PyTorch's semantics:
//!
//! | part | scheme | semantics |
//! |---|---|---|
//! | weights | [`ReplayWeights::Int`] | qint8 on `-2^(bits-1)..=2^(bits-1)-1`, PyTorch's `MinMaxObserver` / `PerChannelMinMaxObserver` (axis 0) parameters (symmetric: `scale = max|w| / ((qmax − qmin) / 2)`, 127.5 at 8 bits), fake-quantized |
//! | weights | [`ReplayWeights::Given`] | the dumped dequantized weight as it is |
//! | activations | [`ReplayActivations::Dynamic`] | PyTorch `quantize_dynamic` (fbgemm): per forward call, quint8 on `0..=qmax` from `[min(0, min x), max(0, max x)]` over the whole call (padded positions included) with fbgemm's parameter choice ([`choose_dynamic_qparams`](crate::choose_dynamic_qparams)); per token: one range per row |
//! | activations | [`ReplayActivations::Static`] | the calibrator's quint8 parameters from the kept real rows, fixed |
//! | activations | [`ReplayActivations::Calibrated`] | the parameters the model was calibrated with |
//! | both | `Rounded(p)` | rounded to fp16 / bf16 ([`Precision::round`]), the product in `f32` |
//! | both | `smooth_alpha` | SmoothQuant on the float weight before quantizing |

use std::fmt;
use std::sync::OnceLock;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewD, Axis};

use super::precision::Precision;
use super::remedy::{Calibrator, Change, Effect, Evidence, Remedy};
use super::verdict::Thresholds;
use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::formats::{ElementFormat, Format};
use crate::kernels::{fake_quantize_inplace, fake_quantize_per_channel};
use crate::nn::shape::checked_elements;
use crate::observers::{MinMaxObserver, Observer, PerChannelMinMaxObserver};
use crate::qparams::{QParams, QScheme, QSpec, choose_dynamic_qparams_levels};

/// How a replayed Linear quantizes its weights.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ReplayWeights {
    /// The float weight (and bias) as they are.
    Float,
    /// The weight and the bias rounded to a float precision.
    Rounded(Precision),
    /// Integer weights: qint8 on `-2^(bits-1)..=2^(bits-1)-1` with PyTorch's min/max observer
    /// parameters, per tensor or per output channel (axis 0), symmetric (zero point 0,
    /// `scale = max(|min|, |max|) / ((qmax − qmin) / 2)`, PyTorch's `/ 127.5` at 8 bits) or
    /// affine (`scale = (max − min) / (qmax − qmin)`, zero point from the minimum). The bias
    /// stays float, as in PyTorch's quantized Linear layers.
    Int {
        /// The width, `2..=8`.
        bits: u8,
        /// One scale per output channel.
        per_channel: bool,
        /// Zero point 0.
        symmetric: bool,
    },
    /// The dumped dequantized weight ([`LinearReplay::with_given_weight`]); the bias stays
    /// the float one.
    Given,
    /// The float weight in a low-precision format, row by row along the input features
    /// (blocks and groups along `in`, as GGML, torchao and the MX kernels store them); the
    /// bias stays float.
    Format(Format),
}

/// How a replayed Linear quantizes its input activations.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ReplayActivations {
    /// Float input (a weight-only scheme).
    Float,
    /// The input and the output rounded to a float precision.
    Rounded(Precision),
    /// PyTorch's dynamic quantization (fbgemm), on the levels `0..=2^bits − 1`
    /// (`0..=2^(bits-1) − 1` with `reduce_range`; `0..=127` for PyTorch's x86 default).
    Dynamic {
        /// The width, `2..=8`.
        bits: u8,
        /// Half the levels (PyTorch fbgemm's `reduce_range`).
        reduce_range: bool,
        /// One range per row (token) instead of one per forward call.
        per_token: bool,
    },
    /// Static quantization: quint8 on `0..=2^bits − 1` with the parameters `calibrator`
    /// chooses from the replay's kept real rows, per tensor affine.
    Static {
        /// The width, `2..=8`.
        bits: u8,
        /// The calibrator.
        calibrator: Calibrator,
    },
    /// Static quantization with the parameters the model was calibrated with (a dump's
    /// `layers` metadata): what the model computed, clipping of inputs its calibration data
    /// did not cover included. With SmoothQuant the parameters no longer fit the smoothed
    /// input, which is then calibrated as `Static { bits: 8, calibrator: MinMax }`.
    Calibrated {
        /// The input's quantization parameters.
        qparams: QParams,
    },
    /// Each row (token) in a low-precision format along the input features (float8 per
    /// row, MXFP8 blocks, ...).
    Format(Format),
}

/// A quantization scheme of a replayed Linear: weights, input activations, and SmoothQuant.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LinearScheme {
    /// How the weights are quantized.
    pub weights: ReplayWeights,
    /// How the input is quantized.
    pub activations: ReplayActivations,
    /// SmoothQuant's migration strength `alpha` in `(0, 1)`, or none.
    ///
    /// ```text
    /// s_j = max_t |X_tj|^alpha / max_i |W_ij|^(1 − alpha)      (1 when either maximum is 0)
    /// X'  = X / s,   W' = W · s   (per input channel j)
    /// ```
    /// `max_t` runs over the replay's real rows. The smoothing is applied to the float
    /// weight; with [`ReplayWeights::Given`] (already quantized) the smoothed float weight is
    /// quantized as `Int { bits: 8, per_channel: false, symmetric: true }`.
    pub smooth_alpha: Option<f64>,
}

impl LinearScheme {
    /// A scheme without SmoothQuant.
    #[must_use]
    pub const fn new(weights: ReplayWeights, activations: ReplayActivations) -> Self {
        LinearScheme {
            weights,
            activations,
            smooth_alpha: None,
        }
    }

    /// PyTorch's x86 `quantize_dynamic` of a Linear: int8 per-tensor symmetric weights,
    /// dynamic per-tensor 7-bit (`reduce_range`) activations.
    pub const PYTORCH_DYNAMIC: LinearScheme = LinearScheme::new(
        ReplayWeights::Int {
            bits: 8,
            per_channel: false,
            symmetric: true,
        },
        ReplayActivations::Dynamic {
            bits: 8,
            reduce_range: true,
            per_token: false,
        },
    );

    /// The scheme with SmoothQuant at `alpha` (checked when the scheme is used).
    #[must_use]
    pub const fn with_smooth_alpha(mut self, alpha: f64) -> Self {
        self.smooth_alpha = Some(alpha);
        self
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        let bits = |what, b: u8| {
            if (2..=8).contains(&b) {
                Ok(())
            } else {
                Err(QuantError::InvalidParameter {
                    op,
                    what,
                    value: f64::from(b),
                    reason: "a replayed width must be in 2..=8",
                })
            }
        };
        if let ReplayWeights::Int { bits: b, .. } = self.weights {
            bits("weight bits", b)?;
        }
        match self.activations {
            ReplayActivations::Dynamic { bits: b, .. }
            | ReplayActivations::Static { bits: b, .. } => {
                bits("activation bits", b)?;
            }
            ReplayActivations::Float
            | ReplayActivations::Rounded(_)
            | ReplayActivations::Calibrated { .. }
            | ReplayActivations::Format(_) => {}
        }
        if let Some(a) = self.smooth_alpha
            && !(a > 0.0 && a < 1.0)
        {
            return Err(QuantError::InvalidParameter {
                op,
                what: "smooth_alpha",
                value: a,
                reason: "SmoothQuant's alpha must be in (0, 1)",
            });
        }
        Ok(())
    }
}

impl fmt::Display for LinearScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.weights {
            ReplayWeights::Float => f.write_str("float weights")?,
            ReplayWeights::Rounded(p) => write!(f, "{p} weights")?,
            ReplayWeights::Int {
                bits,
                per_channel,
                symmetric,
            } => write!(
                f,
                "int{bits} {} {} weights",
                if per_channel {
                    "per-channel"
                } else {
                    "per-tensor"
                },
                if symmetric { "symmetric" } else { "affine" }
            )?,
            ReplayWeights::Given => f.write_str("the dumped weights")?,
            ReplayWeights::Format(format) => write!(f, "{format} weights")?,
        }
        f.write_str(", ")?;
        match self.activations {
            ReplayActivations::Float => f.write_str("float activations")?,
            ReplayActivations::Rounded(p) => write!(f, "{p} activations")?,
            ReplayActivations::Dynamic {
                bits,
                reduce_range,
                per_token,
            } => write!(
                f,
                "dynamic {}-bit {} activations",
                if reduce_range { bits - 1 } else { bits },
                if per_token { "per-token" } else { "per-tensor" }
            )?,
            ReplayActivations::Static { bits, calibrator } => {
                write!(f, "static {bits}-bit activations ({calibrator})")?;
            }
            ReplayActivations::Calibrated { qparams } => write!(
                f,
                "static activations as calibrated (scale {}, zero point {})",
                qparams.scale(),
                qparams.zero_point()
            )?,
            ReplayActivations::Format(format) => write!(f, "{format} activations")?,
        }
        if let Some(a) = self.smooth_alpha {
            write!(f, ", SmoothQuant alpha {a}")?;
        }
        Ok(())
    }
}

/// A remedy measured by replay: the change, the scheme it makes of the current one, and the
/// layer's SQNR with it against the float reference.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReplayRemedy {
    /// What changes.
    pub change: Change,
    /// The current scheme with the change.
    pub scheme: LinearScheme,
    /// The layer's SQNR with the change (dB).
    pub sqnr_db: f64,
    /// Its gain over the current scheme (dB).
    pub gain_db: f64,
}

impl ReplayRemedy {
    /// The [`Remedy`] for `layer`, its effect [`Effect::Local`].
    #[must_use]
    pub fn to_remedy(&self, layer: Option<&str>, evidence: Evidence) -> Remedy {
        Remedy {
            change: self.change.clone(),
            layer: layer.map(str::to_string),
            effect: Effect::Local {
                sqnr_db: self.sqnr_db,
                gain_db: self.gain_db,
            },
            evidence,
        }
    }
}

/// One Linear layer (`y = x·Wᵀ + b` over the last axis) replayed from a dump: its input as the
/// quantized model fed it, its float weight and bias, optionally the dumped quantized weight,
/// the float reference output and the quantized model's actual output.
///
/// Rows are the input's positions `(n, t)` (a 2-D input `[N, in]` has `T = 1`). Real rows are
/// those the mask marks nonzero (all without a mask); at most `max_rows` of them are kept for
/// measuring, evenly strided (row `floor(i · real / kept)` of the real rows, `i = 0..kept`),
/// so the result does not depend on anything but the arguments. Every figure (outputs, SQNR)
/// is on the kept rows.
///
/// What is computed from all rows at construction:
/// - per forward call (`batch_size` samples; each sample alone without one) and input
///   channel, the minimum and maximum over **every** position of the call, padded ones
///   included: what PyTorch's dynamic quantization saw;
/// - per input channel, the largest `|x|` over the real rows (SmoothQuant's `max_t |X_tj|`).
///
/// Static calibrators observe the kept real rows (the subsample, not every real row: it keeps
/// a replay within milliseconds; with `max_rows` at least the real row count they are the
/// same).
///
/// # Examples
/// ```
/// use ndarray::{Array2, Array3};
/// use qnumeric::diagnose::{LinearReplay, LinearScheme, ReplayActivations, ReplayWeights};
///
/// // 4 samples of 8 tokens, 16 features in, 4 out.
/// let x = Array3::from_shape_fn((4, 8, 16), |(n, t, j)| ((n * 131 + t * 31 + j * 7) % 23) as f32 - 11.0);
/// let w = Array2::from_shape_fn((4, 16), |(o, j)| ((o * 5 + j * 3) % 7) as f32 * 0.1 - 0.3);
/// let replay = LinearReplay::new(x.view().into_dyn(), w.view(), None, None, Some(2), 512)?;
///
/// let current = LinearScheme::PYTORCH_DYNAMIC;
/// let db = replay.sqnr_db(&current)?;
/// assert!(db > 20.0);
/// // Weights and activations in fp32: the reference itself.
/// let float = LinearScheme::new(ReplayWeights::Float, ReplayActivations::Float);
/// assert!(replay.sqnr_db(&float)? > db);
/// for r in replay.remedies(&current, 0.5)? {
///     assert!(r.gain_db > 0.5);
/// }
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LinearReplay {
    /// Samples, positions per sample, input and output features.
    n: usize,
    t: usize,
    k: usize,
    o: usize,
    /// The flat position `n·T + t` of each kept row.
    rows: Vec<usize>,
    /// The forward call of each kept row.
    row_calls: Vec<usize>,
    /// The kept rows of the input, `[kept, in]`.
    x: Array2<f32>,
    /// Per call and input channel: min and max over every position of the call.
    call_min: Array2<f32>,
    call_max: Array2<f32>,
    /// Per input channel: the largest `|x|` over the real rows.
    real_absmax: Array1<f32>,
    weight: Array2<f32>,
    bias: Option<Array1<f32>>,
    given: Option<Array2<f32>>,
    /// The widest row's bits of distinct levels of the given weight.
    given_bits: u32,
    shadow: Option<Array2<f32>>,
    float_out: OnceLock<Array2<f32>>,
    actual: Option<Array2<f32>>,
}

/// The first non-finite value of `values` as a typed error.
fn check_finite<'a>(
    op: &'static str,
    what: &'static str,
    values: impl IntoIterator<Item = &'a f32>,
) -> Result<()> {
    match values.into_iter().find(|v| !v.is_finite()) {
        None => Ok(()),
        Some(&v) => Err(QuantError::NonFinite {
            op,
            what,
            value: f64::from(v),
        }),
    }
}

fn input_error(op: &'static str, index: usize, v: f32) -> QuantError {
    if v.is_nan() {
        QuantError::NanInput { op, index }
    } else {
        QuantError::InfiniteInput {
            op,
            index,
            value: f64::from(v),
        }
    }
}

/// The levels `0..=qmax` of a dynamic activation: `2^bits − 1`, `2^(bits-1) − 1` with
/// `reduce_range`.
fn dynamic_qmax(bits: u8, reduce_range: bool) -> i64 {
    let b = if reduce_range { bits - 1 } else { bits };
    (1i64 << b) - 1
}

impl LinearReplay {
    /// A replay of the Linear layer `weight` (`[out, in]`), `bias` (`[out]`) on `input`
    /// (`[N, T, in]`, or `[N, in]` as `T = 1`).
    ///
    /// `mask` (`[N, T]`, `[N, 1]` for a 2-D input): nonzero = a real position, 0 = padding.
    /// `batch_size`: samples per forward call when the dump was made (dynamic per-tensor
    /// ranges are per call; `None`: each sample was its own call). `max_rows`: the most real
    /// rows kept for measuring (see the type's docs).
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for an input of rank other than 2 or 3, a
    /// `batch_size` or `max_rows` of 0, or a mask without a real position;
    /// [`QuantError::ShapeMismatch`] when the weight's `in` is not the input's last dimension
    /// or the mask is not `[N, T]`; [`QuantError::LengthMismatch`] for a bias of another
    /// length than `out`; [`QuantError::EmptyInput`] for `in` or `out` of 0;
    /// [`QuantError::NanInput`] / [`QuantError::InfiniteInput`] for a non-finite input
    /// (padded positions included: the model quantized them); [`QuantError::NonFinite`] for
    /// a non-finite weight, bias or mask; [`QuantError::TooLarge`] /
    /// [`QuantError::GeometryOverflow`] when a buffer would exceed
    /// [`MAX_ELEMENTS`](crate::nn::MAX_ELEMENTS).
    pub fn new(
        input: ArrayViewD<'_, f32>,
        weight: ArrayView2<'_, f32>,
        bias: Option<ArrayView1<'_, f32>>,
        mask: Option<ArrayView2<'_, f32>>,
        batch_size: Option<usize>,
        max_rows: usize,
    ) -> Result<Self> {
        const OP: &str = "LinearReplay::new";
        let (n, t, k) = match *input.shape() {
            [n, k] => (n, 1, k),
            [n, t, k] => (n, t, k),
            _ => {
                return Err(QuantError::InvalidParameter {
                    op: OP,
                    what: "input rank",
                    value: input.ndim() as f64,
                    reason: "a Linear replay takes an input [N, T, in] or [N, in]",
                });
            }
        };
        let (o, wk) = weight.dim();
        if wk != k {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![o, k],
                got: vec![o, wk],
            });
        }
        if k == 0 || o == 0 {
            return Err(QuantError::EmptyInput { op: OP });
        }
        if let Some(b) = &bias
            && b.len() != o
        {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "bias",
                expected: o,
                got: b.len(),
            });
        }
        if let Some(m) = &mask
            && m.dim() != (n, t)
        {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![n, t],
                got: m.shape().to_vec(),
            });
        }
        let batch = batch_size.unwrap_or(1);
        if batch == 0 || max_rows == 0 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: if batch == 0 { "batch_size" } else { "max_rows" },
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        checked_elements(OP, "input", input.shape())?;
        let positions = n.checked_mul(t).ok_or(QuantError::GeometryOverflow {
            op: OP,
            what: "input rows",
        })?;
        let calls = n.div_ceil(batch);
        checked_elements(OP, "per-call ranges", &[calls, k])?;
        check_finite(OP, "weight", weight.iter())?;
        if let Some(b) = &bias {
            check_finite(OP, "bias", b.iter())?;
        }
        if let Some(m) = &mask {
            check_finite(OP, "mask", m.iter())?;
        }

        let is_real = |r: usize| mask.as_ref().is_none_or(|m| m[[r / t, r % t]] != 0.0);
        let xs = input.as_standard_layout();
        let x2 = xs
            .view()
            .into_shape_with_order((positions, k))
            .expect("standard layout of n·t·k elements");
        let mut call_min = Array2::from_elem((calls, k), f32::INFINITY);
        let mut call_max = Array2::from_elem((calls, k), f32::NEG_INFINITY);
        let mut real_absmax = Array1::zeros(k);
        let mut real = Vec::new();
        for (r, row) in x2.outer_iter().enumerate() {
            let c = r / t / batch;
            let row = row.as_slice().expect("standard layout rows");
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                // Row-major flat index, widened before multiplying.
                let index = r.saturating_mul(k).saturating_add(j);
                return Err(input_error(OP, index, row[j]));
            }
            let mut lo = call_min.row_mut(c);
            let lo = lo.as_slice_mut().expect("standard layout");
            let mut hi = call_max.row_mut(c);
            let hi = hi.as_slice_mut().expect("standard layout");
            for ((&v, l), h) in row.iter().zip(lo.iter_mut()).zip(hi.iter_mut()) {
                *l = l.min(v);
                *h = h.max(v);
            }
            if is_real(r) {
                real.push(r);
                for (&v, a) in row.iter().zip(real_absmax.iter_mut()) {
                    *a = f32::max(*a, v.abs());
                }
            }
        }
        if real.is_empty() {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "real positions",
                value: 0.0,
                reason: "the input (or its mask) has no real position",
            });
        }
        let kept = real.len().min(max_rows);
        checked_elements(OP, "kept rows", &[kept, k])?;
        checked_elements(OP, "output", &[kept, o])?;
        // Evenly strided: floor(i·real/kept) in u128, which cannot overflow.
        let rows: Vec<usize> = (0..kept)
            .map(|i| real[(i as u128 * real.len() as u128 / kept as u128) as usize])
            .collect();
        let row_calls = rows.iter().map(|&r| r / t / batch).collect();
        let mut x = Array2::zeros((kept, k));
        for (mut dst, &r) in x.outer_iter_mut().zip(&rows) {
            dst.assign(&x2.row(r));
        }
        Ok(LinearReplay {
            n,
            t,
            k,
            o,
            rows,
            row_calls,
            x,
            call_min,
            call_max,
            real_absmax,
            weight: weight.to_owned(),
            bias: bias.map(|b| b.to_owned()),
            given: None,
            given_bits: 8,
            shadow: None,
            float_out: OnceLock::new(),
            actual: None,
        })
    }

    /// The replay with the dumped quantized weight, dequantized (`[out, in]`), for
    /// [`ReplayWeights::Given`].
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] unless it is `[out, in]`; [`QuantError::NonFinite`] for
    /// a non-finite value.
    pub fn with_given_weight(mut self, dequantized: ArrayView2<'_, f32>) -> Result<Self> {
        const OP: &str = "LinearReplay::with_given_weight";
        if dequantized.dim() != (self.o, self.k) {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![self.o, self.k],
                got: dequantized.shape().to_vec(),
            });
        }
        check_finite(OP, "given weight", dequantized.iter())?;
        let mut widest = 1usize;
        for row in dequantized.outer_iter() {
            let mut v: Vec<f32> = row.to_vec();
            v.sort_by(f32::total_cmp);
            v.dedup();
            widest = widest.max(v.len());
        }
        self.given_bits = widest.next_power_of_two().trailing_zeros().max(1);
        self.given = Some(dequantized.to_owned());
        Ok(self)
    }

    /// The replay with the float layer's output on the same input (the dump's `NAME:shadow`,
    /// shaped as the input with `out` last) as the reference; without it the reference is
    /// `x·Wᵀ + b` computed here in `f32`.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for another shape; [`QuantError::NonFinite`] for a
    /// non-finite value in a kept row (the others are not read).
    pub fn with_reference(mut self, shadow: ArrayViewD<'_, f32>) -> Result<Self> {
        self.shadow = Some(self.gather("LinearReplay::with_reference", "shadow output", shadow)?);
        Ok(self)
    }

    /// The replay with the quantized model's output of the layer (shaped as the input with
    /// `out` last), for [`LinearReplay::actual_sqnr_db`] and [`LinearReplay::infer_scheme`].
    ///
    /// # Errors
    /// As [`LinearReplay::with_reference`].
    pub fn with_actual(mut self, quant_out: ArrayViewD<'_, f32>) -> Result<Self> {
        self.actual =
            Some(self.gather("LinearReplay::with_actual", "quantized output", quant_out)?);
        Ok(self)
    }

    /// The kept rows of an output-shaped tensor.
    fn gather(
        &self,
        op: &'static str,
        what: &'static str,
        a: ArrayViewD<'_, f32>,
    ) -> Result<Array2<f32>> {
        let expected = if a.ndim() == 2 && self.t == 1 {
            vec![self.n, self.o]
        } else {
            vec![self.n, self.t, self.o]
        };
        if a.shape() != expected.as_slice() {
            return Err(QuantError::ShapeMismatch {
                op,
                expected,
                got: a.shape().to_vec(),
            });
        }
        let std = a.as_standard_layout();
        let flat = std
            .view()
            .into_shape_with_order((self.n * self.t, self.o))
            .expect("standard layout of n·t·out elements");
        let mut out = Array2::zeros((self.rows.len(), self.o));
        for (mut dst, &r) in out.outer_iter_mut().zip(&self.rows) {
            dst.assign(&flat.row(r));
        }
        check_finite(op, what, out.iter())?;
        Ok(out)
    }

    /// Number of kept rows (what every output and figure is computed on).
    #[must_use]
    pub fn kept_rows(&self) -> usize {
        self.rows.len()
    }

    /// The flat positions `n·T + t` of the kept rows.
    #[must_use]
    pub fn kept_positions(&self) -> &[usize] {
        &self.rows
    }

    /// The reference output on the kept rows: the shadow output, or `x·Wᵀ + b`.
    #[must_use]
    pub fn reference(&self) -> &Array2<f32> {
        match &self.shadow {
            Some(s) => s,
            None => self.float_out.get_or_init(|| {
                let mut y = self.x.dot(&self.weight.t());
                if let Some(b) = &self.bias {
                    y += b;
                }
                y
            }),
        }
    }

    /// The quantized model's output on the kept rows, if given.
    #[must_use]
    pub fn actual(&self) -> Option<&Array2<f32>> {
        self.actual.as_ref()
    }
}

impl LinearReplay {
    /// SmoothQuant's per-input-channel factors `s` at `alpha` (1 for a zero or degenerate
    /// channel).
    fn smoothing(&self, alpha: f64) -> Array1<f32> {
        let w_absmax = self
            .weight
            .fold_axis(Axis(0), 0.0f32, |&m, &v| m.max(v.abs()));
        Array1::from_iter(self.real_absmax.iter().zip(&w_absmax).map(|(&ax, &aw)| {
            let s = (f64::from(ax).powf(alpha) / f64::from(aw).powf(1.0 - alpha)) as f32;
            if ax > 0.0 && aw > 0.0 && s.is_normal() && (1.0 / s).is_finite() {
                s
            } else {
                1.0
            }
        }))
    }

    /// `w` fake-quantized as [`ReplayWeights::Int`] says.
    fn int_weight(
        op: &'static str,
        w: &Array2<f32>,
        bits: u8,
        per_channel: bool,
        symmetric: bool,
    ) -> Result<Array2<f32>> {
        let scheme = match (per_channel, symmetric) {
            (false, true) => QScheme::PerTensorSymmetric,
            (false, false) => QScheme::PerTensorAffine,
            (true, true) => QScheme::PerChannelSymmetric,
            (true, false) => QScheme::PerChannelAffine,
        };
        let mut spec = QSpec::new(scheme, QDType::QInt8);
        if bits < 8 {
            let half = 1i64 << (bits - 1);
            spec = spec.with_quant_range(-half, half - 1)?;
        }
        let relabel = |e: QuantError| e.with_op(op);
        if per_channel {
            let mut obs = PerChannelMinMaxObserver::new(spec, 0)?;
            obs.observe(w.view()).map_err(relabel)?;
            let qp = obs.per_channel_qparams().map_err(relabel)?;
            fake_quantize_per_channel(w, &qp).map_err(relabel)
        } else {
            let mut obs = MinMaxObserver::new(spec)?;
            obs.observe(w.view()).map_err(relabel)?;
            let qp = obs.per_tensor_qparams().map_err(relabel)?;
            let mut q = w.clone();
            fake_quantize_inplace(&mut q, &qp).map_err(relabel)?;
            Ok(q)
        }
    }

    /// The layer's output on the kept rows (`[kept, out]`) under `scheme`.
    ///
    /// ```text
    /// y = q_a(X / s) · q_w(W · s)ᵀ + b        (s = 1 without SmoothQuant)
    /// ```
    /// `q_w` and `q_a` as [`ReplayWeights`] and [`ReplayActivations`] say; the product in
    /// `f32` (ndarray's `dot`); the bias float (rounded with rounded weights); the output
    /// rounded with rounded activations.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for widths outside `2..=8` or `smooth_alpha` outside
    /// `(0, 1)`; [`QuantError::UnsupportedConfig`] for [`ReplayWeights::Given`] without
    /// [`LinearReplay::with_given_weight`]; errors of the observers and kernels (a
    /// calibrator that refuses the data, a range that overflows `f32`).
    pub fn output(&self, scheme: &LinearScheme) -> Result<Array2<f32>> {
        const OP: &str = "LinearReplay::output";
        scheme.validate(OP)?;
        let relabel = |e: QuantError| e.with_op(OP);
        let smooth = scheme.smooth_alpha.map(|a| self.smoothing(a));
        let weights = match (scheme.weights, &smooth) {
            (ReplayWeights::Given, Some(_)) => ReplayWeights::Int {
                bits: 8,
                per_channel: false,
                symmetric: true,
            },
            (w, _) => w,
        };
        let smoothed;
        let w_float = match &smooth {
            Some(s) => {
                smoothed = &self.weight * s;
                &smoothed
            }
            None => &self.weight,
        };
        let wq = match weights {
            ReplayWeights::Float => w_float.clone(),
            ReplayWeights::Rounded(p) => w_float.mapv(|v| p.round(v)),
            ReplayWeights::Int {
                bits,
                per_channel,
                symmetric,
            } => Self::int_weight(OP, w_float, bits, per_channel, symmetric)?,
            ReplayWeights::Format(format) => {
                let mut out = Array2::<f32>::zeros(w_float.raw_dim());
                let src = w_float.as_standard_layout();
                if let (Some(x), Some(o)) = (src.as_slice(), out.as_slice_mut())
                    && !x.is_empty()
                {
                    format.fake_quantize_rows(x, self.k, o).map_err(relabel)?;
                }
                out
            }
            ReplayWeights::Given => self
                .given
                .clone()
                .ok_or(QuantError::UnsupportedConfig {
                    op: OP,
                    reason: "ReplayWeights::Given needs the dumped weight (LinearReplay::with_given_weight)",
                })?,
        };
        let bias = match (weights, &self.bias) {
            (ReplayWeights::Rounded(p), Some(b)) => Some(b.mapv(|v| p.round(v))),
            (_, b) => b.clone(),
        };
        let mut xq = match &smooth {
            Some(s) => &self.x / s,
            None => self.x.clone(),
        };
        match scheme.activations {
            ReplayActivations::Float => {}
            ReplayActivations::Rounded(p) => xq.mapv_inplace(|v| p.round(v)),
            ReplayActivations::Dynamic {
                bits,
                reduce_range,
                per_token,
            } => {
                let qmax = dynamic_qmax(bits, reduce_range);
                if per_token {
                    for mut row in xq.outer_iter_mut() {
                        let (lo, hi) = row
                            .iter()
                            .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
                        let qp = choose_dynamic_qparams_levels(lo, hi, qmax).map_err(relabel)?;
                        fake_quantize_inplace(&mut row, &qp).map_err(relabel)?;
                    }
                } else {
                    let qps = self.call_qparams(smooth.as_ref(), qmax)?;
                    for (mut row, &c) in xq.outer_iter_mut().zip(&self.row_calls) {
                        let qp = qps[c]
                            .as_ref()
                            .expect("a call with a kept row has parameters");
                        fake_quantize_inplace(&mut row, qp).map_err(relabel)?;
                    }
                }
            }
            ReplayActivations::Calibrated { qparams } if smooth.is_none() => {
                fake_quantize_inplace(&mut xq, &qparams).map_err(relabel)?;
            }
            ReplayActivations::Calibrated { .. } => {
                let spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
                let mut obs = Calibrator::MinMax.observer(spec).map_err(relabel)?;
                obs.observe(xq.view()).map_err(relabel)?;
                let qp = obs.per_tensor_qparams().map_err(relabel)?;
                fake_quantize_inplace(&mut xq, &qp).map_err(relabel)?;
            }
            ReplayActivations::Format(format) => {
                let src = xq.as_standard_layout().into_owned();
                if let (Some(x), Some(o)) = (src.as_slice(), xq.as_slice_mut())
                    && !x.is_empty()
                {
                    format.fake_quantize_rows(x, self.k, o).map_err(relabel)?;
                }
            }
            ReplayActivations::Static { bits, calibrator } => {
                let mut spec = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
                if bits < 8 {
                    spec = spec.with_quant_range(0, (1i64 << bits) - 1)?;
                }
                let mut obs = calibrator.observer(spec).map_err(relabel)?;
                obs.observe(xq.view()).map_err(relabel)?;
                let qp = obs.per_tensor_qparams().map_err(relabel)?;
                fake_quantize_inplace(&mut xq, &qp).map_err(relabel)?;
            }
        }
        let mut y = xq.dot(&wq.t());
        if let Some(b) = &bias {
            y += b;
        }
        if let ReplayActivations::Rounded(p) = scheme.activations {
            y.mapv_inplace(|v| p.round(v));
        }
        Ok(y)
    }

    /// Dynamic per-tensor parameters of each forward call that has a kept row: the call's
    /// range over all its positions (of `X / s`: `min_j (min x_j) / s_j`, exact since
    /// `s_j > 0` and rounding is monotonic).
    fn call_qparams(
        &self,
        smooth: Option<&Array1<f32>>,
        qmax: i64,
    ) -> Result<Vec<Option<QParams>>> {
        let mut qps = vec![None; self.call_min.nrows()];
        for &c in &self.row_calls {
            if qps[c].is_some() {
                continue;
            }
            let (mut lo, mut hi) = (0.0f32, 0.0f32);
            for (j, (&l, &h)) in self
                .call_min
                .row(c)
                .iter()
                .zip(self.call_max.row(c))
                .enumerate()
            {
                let s = smooth.map_or(1.0, |s| s[j]);
                lo = lo.min(l / s);
                hi = hi.max(h / s);
            }
            qps[c] = Some(
                choose_dynamic_qparams_levels(lo, hi, qmax)
                    .map_err(|e| e.with_op("LinearReplay::output"))?,
            );
        }
        Ok(qps)
    }

    /// The layer's SQNR under `scheme` against the reference, on the kept real rows (dB).
    ///
    /// ```text
    /// 20·log10(‖reference‖₂ / ‖reference − output(scheme)‖₂)      (sums in f64)
    /// ```
    ///
    /// # Errors
    /// As [`LinearReplay::output`]; [`QuantError::InfiniteInput`] when the output overflows.
    pub fn sqnr_db(&self, scheme: &LinearScheme) -> Result<f64> {
        let y = self.output(scheme)?;
        crate::metrics::sqnr(self.reference(), &y).map_err(|e| e.with_op("LinearReplay::sqnr_db"))
    }

    /// The quantized model's SQNR against the reference on the same rows (dB), when
    /// [`LinearReplay::with_actual`] gave its output.
    #[must_use]
    pub fn actual_sqnr_db(&self) -> Option<f64> {
        let a = self.actual.as_ref()?;
        crate::metrics::sqnr(self.reference(), a).ok()
    }

    /// The scheme among the plausible current ones that reproduces the quantized model's
    /// output best, and how closely: the SQNR of the replay against the actual output (dB;
    /// `+inf` for an exact reproduction).
    ///
    /// Candidates, in this order (the first wins a tie): weights [`ReplayWeights::Given`]
    /// when given, else `Int { bits: 8, per_channel: false, symmetric: true }`; activations
    /// dynamic per tensor 7-bit (`reduce_range`), 8-bit, dynamic per token 7-bit, 8-bit, and
    /// float (weight-only). Static schemes are not among them: their parameters are not in
    /// the dump.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] without [`LinearReplay::with_actual`]; errors of
    /// [`LinearReplay::output`].
    pub fn infer_scheme(&self) -> Result<(LinearScheme, f64)> {
        const OP: &str = "LinearReplay::infer_scheme";
        let actual = self.actual.as_ref().ok_or(QuantError::UnsupportedConfig {
            op: OP,
            reason: "inferring the scheme needs the quantized output (LinearReplay::with_actual)",
        })?;
        let weights = if self.given.is_some() {
            ReplayWeights::Given
        } else {
            ReplayWeights::Int {
                bits: 8,
                per_channel: false,
                symmetric: true,
            }
        };
        let dynamic = |reduce_range, per_token| ReplayActivations::Dynamic {
            bits: 8,
            reduce_range,
            per_token,
        };
        let candidates = [
            dynamic(true, false),
            dynamic(false, false),
            dynamic(true, true),
            dynamic(false, true),
            ReplayActivations::Float,
        ];
        let mut best: Option<(LinearScheme, f64)> = None;
        for activations in candidates {
            let scheme = LinearScheme::new(weights, activations);
            let y = self.output(&scheme)?;
            let db = crate::metrics::sqnr(actual, &y).map_err(|e| e.with_op(OP))?;
            let db = if db.is_nan() { f64::NEG_INFINITY } else { db };
            if best.as_ref().is_none_or(|(_, b)| db > *b) {
                best = Some((scheme, db));
            }
        }
        Ok(best.expect("five candidates"))
    }

    /// The layer's weights in each of `candidates` (a format equal to the current one is
    /// skipped, as is one whose block does not divide the input features), measured against
    /// `current`: the replays that gain at least `min_gain_db`, largest gain first.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a NaN `min_gain_db`; errors of
    /// [`LinearReplay::sqnr_db`] on `current` or on a candidate.
    pub fn format_remedies(
        &self,
        current: &LinearScheme,
        candidates: &[Format],
        min_gain_db: f64,
    ) -> Result<Vec<ReplayRemedy>> {
        if min_gain_db.is_nan() {
            return Err(QuantError::InvalidParameter {
                op: "LinearReplay::format_remedies",
                what: "min_gain_db",
                value: min_gain_db,
                reason: "must be a number",
            });
        }
        let base = self.sqnr_db(current)?;
        let mut out = Vec::new();
        for &format in candidates {
            if current.weights == ReplayWeights::Format(format)
                || !self.k.is_multiple_of(format.block_len().max(1))
            {
                continue;
            }
            let scheme = LinearScheme {
                weights: ReplayWeights::Format(format),
                ..*current
            };
            let sqnr_db = self.sqnr_db(&scheme)?;
            let gain_db = sqnr_db - base;
            if gain_db >= min_gain_db {
                out.push(ReplayRemedy {
                    change: Change::WeightFormat { format },
                    scheme,
                    sqnr_db,
                    gain_db,
                });
            }
        }
        out.sort_by(|a, b| b.gain_db.total_cmp(&a.gain_db));
        Ok(out)
    }

    /// Candidate remedies against `current`, each measured by replay, those gaining more
    /// than `min_gain_db` over `current`, best first.
    ///
    /// Best first: when the layer is below 20 dB under `current` (the default
    /// [`Thresholds::min_sqnr_db`](super::Thresholds::min_sqnr_db), below which the diagnosis
    /// calls a layer's error large), the remedies that bring it to at least 20 dB come first,
    /// cheapest first ([`Change::cost`]: a change that keeps the layer in int8 before one
    /// that takes it to bf16 / fp16) and the larger gain first at equal cost; then the
    /// others. Otherwise, and among the others, the larger gain first. So a layer whose 3-bit
    /// weights are the problem gets "8-bit weights" first, though fp16 gains more.
    ///
    /// Candidates (each only when it differs from `current`; each is `current` with one
    /// change):
    ///
    /// | change | when | scheme |
    /// |---|---|---|
    /// | [`Change::PerChannelWeights`] | int weights per tensor; given weights | same bits per channel (given: their width, estimated from the most distinct values in a row, symmetric) |
    /// | [`Change::WeightBits`] `{ bits: 8 }` | int weights below 8 bits; given weights of fewer than 129 distinct values per row | 8 bits, same granularity (given: per tensor symmetric) |
    /// | [`Change::PerTokenActivations`] | dynamic per-tensor activations | per token |
    /// | [`Change::Observer`] | static activations | each other calibrator |
    /// | [`Change::DynamicLinear`] | static activations | dynamic per tensor, `reduce_range` (PyTorch's x86 default) |
    /// | [`Change::SmoothQuant`] | weights or activations quantized | the best of alpha 0.25, 0.5, 0.75 (given weights: the smoothed float weight quantized per tensor symmetric at the given weight's width, so that the remedy changes one thing) |
    /// | [`Change::KeepIn`] fp16, bf16 | always | weights and activations rounded, no SmoothQuant |
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a NaN `min_gain_db`; errors of
    /// [`LinearReplay::sqnr_db`] on `current` or on a candidate.
    pub fn remedies(&self, current: &LinearScheme, min_gain_db: f64) -> Result<Vec<ReplayRemedy>> {
        const OP: &str = "LinearReplay::remedies";
        if min_gain_db.is_nan() {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "min_gain_db",
                value: min_gain_db,
                reason: "must be a number",
            });
        }
        let base = self.sqnr_db(current)?;
        let with_weights = |weights| LinearScheme {
            weights,
            ..*current
        };
        let with_acts = |activations| LinearScheme {
            activations,
            ..*current
        };
        let mut candidates: Vec<(Change, LinearScheme)> = Vec::new();
        match current.weights {
            ReplayWeights::Int {
                bits,
                per_channel,
                symmetric,
            } => {
                if !per_channel {
                    candidates.push((
                        Change::PerChannelWeights,
                        with_weights(ReplayWeights::Int {
                            bits,
                            per_channel: true,
                            symmetric,
                        }),
                    ));
                }
                if bits < 8 {
                    candidates.push((
                        Change::WeightBits { bits: 8 },
                        with_weights(ReplayWeights::Int {
                            bits: 8,
                            per_channel,
                            symmetric,
                        }),
                    ));
                }
            }
            ReplayWeights::Given => {
                let bits = self.given_bits.clamp(2, 8) as u8;
                candidates.push((
                    Change::PerChannelWeights,
                    with_weights(ReplayWeights::Int {
                        bits,
                        per_channel: true,
                        symmetric: true,
                    }),
                ));
                if self.given_bits < 8 {
                    candidates.push((
                        Change::WeightBits { bits: 8 },
                        with_weights(ReplayWeights::Int {
                            bits: 8,
                            per_channel: false,
                            symmetric: true,
                        }),
                    ));
                }
            }
            ReplayWeights::Float | ReplayWeights::Rounded(_) | ReplayWeights::Format(_) => {}
        }
        match current.activations {
            ReplayActivations::Dynamic {
                bits,
                reduce_range,
                per_token: false,
            } => candidates.push((
                Change::PerTokenActivations,
                with_acts(ReplayActivations::Dynamic {
                    bits,
                    reduce_range,
                    per_token: true,
                }),
            )),
            ReplayActivations::Calibrated { .. } => {
                for c in Calibrator::ALL {
                    candidates.push((
                        Change::Observer { calibrator: c },
                        with_acts(ReplayActivations::Static {
                            bits: 8,
                            calibrator: c,
                        }),
                    ));
                }
                candidates.push((
                    Change::DynamicLinear,
                    with_acts(ReplayActivations::Dynamic {
                        bits: 8,
                        reduce_range: true,
                        per_token: false,
                    }),
                ));
            }
            ReplayActivations::Static { bits, calibrator } => {
                for c in Calibrator::ALL.into_iter().filter(|&c| c != calibrator) {
                    candidates.push((
                        Change::Observer { calibrator: c },
                        with_acts(ReplayActivations::Static {
                            bits,
                            calibrator: c,
                        }),
                    ));
                }
                candidates.push((
                    Change::DynamicLinear,
                    with_acts(ReplayActivations::Dynamic {
                        bits,
                        reduce_range: true,
                        per_token: false,
                    }),
                ));
            }
            _ => {}
        }
        for precision in [Precision::F16, Precision::BF16] {
            let scheme = LinearScheme::new(
                ReplayWeights::Rounded(precision),
                ReplayActivations::Rounded(precision),
            );
            if scheme != *current {
                candidates.push((Change::KeepIn { precision }, scheme));
            }
        }
        let mut out = Vec::with_capacity(candidates.len() + 1);
        for (change, scheme) in candidates {
            let sqnr_db = self.sqnr_db(&scheme)?;
            out.push(ReplayRemedy {
                change,
                scheme,
                sqnr_db,
                gain_db: sqnr_db - base,
            });
        }
        let quantized = matches!(
            current.weights,
            ReplayWeights::Int { .. } | ReplayWeights::Given
        ) || matches!(
            current.activations,
            ReplayActivations::Dynamic { .. }
                | ReplayActivations::Static { .. }
                | ReplayActivations::Calibrated { .. }
        );
        if quantized {
            let mut best: Option<ReplayRemedy> = None;
            for alpha in [0.25, 0.5, 0.75] {
                if current.smooth_alpha == Some(alpha) {
                    continue;
                }
                let mut scheme = current.with_smooth_alpha(alpha);
                if current.weights == ReplayWeights::Given {
                    // One change at a time: the given weight's width, not 8 bits.
                    scheme.weights = ReplayWeights::Int {
                        bits: self.given_bits.clamp(2, 8) as u8,
                        per_channel: false,
                        symmetric: true,
                    };
                }
                let sqnr_db = self.sqnr_db(&scheme)?;
                if best.as_ref().is_none_or(|b| sqnr_db > b.sqnr_db) {
                    best = Some(ReplayRemedy {
                        change: Change::SmoothQuant { alpha },
                        scheme,
                        sqnr_db,
                        gain_db: sqnr_db - base,
                    });
                }
            }
            out.extend(best);
        }
        out.retain(|r| r.gain_db > min_gain_db);
        let target = Thresholds::default().min_sqnr_db;
        // Cost first only among the remedies that fix a layer below the target.
        let fixes = |r: &ReplayRemedy| base < target && r.sqnr_db >= target;
        out.sort_by(|a, b| {
            let (ra, rb) = (fixes(a), fixes(b));
            rb.cmp(&ra).then_with(|| {
                if ra && rb {
                    a.change
                        .cost()
                        .cmp(&b.change.cost())
                        .then(b.gain_db.total_cmp(&a.gain_db))
                } else {
                    b.gain_db.total_cmp(&a.gain_db)
                }
            })
        });
        Ok(out)
    }
}
