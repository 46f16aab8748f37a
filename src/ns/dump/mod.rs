//! Dumps (feature `safetensors`): two `.safetensors` files of what a float model and its
//! quantized version computed, from any framework. What `qnumeric compare` and `qnumeric
//! diagnose` read. The format is specified in `docs/dumps.md`.
//!
//! Version 1 (no `format` metadata) holds layer outputs only: every tensor is compared by name.
//! Version 2 (`format` = `qnumeric-dump/2`) adds, per layer `NAME`: `NAME:input` (the
//! quantized model's input to the layer), `NAME:shadow` (the float layer applied to that
//! input: `NAME` vs `NAME:shadow` is the layer's own error), `NAME:weight` and `NAME:bias`,
//! a padding mask `__mask__` `[N, T]`, and the `layers` and `batch_size` metadata
//! ([`LayerMeta`]).
//!
//! The first axis of every sample-indexed tensor is the sample axis. Layer order is the
//! `order` metadata key (the float file's, else the quantized file's) when present, then the
//! remaining names sorted; without it, by name. `order` is a JSON array of names, taken
//! exactly (`["a", "b,c", " d"]`: names may hold commas and spaces), or names separated by
//! commas, each trimmed of surrounding white space. `F32`, `F64`, `F16` and `BF16` tensors
//! are compared (in `f64`, exactly converted); NaN and infinite values in the quantized file
//! where the float file is finite are a finding ([`crate::ns::NonFiniteCount`]), not a skip;
//! a tensor in one file only, of another dtype, of different shapes, or that cannot be
//! compared (NaN in the float file, no values, 0-d) is listed in [`DumpComparison::skipped`]
//! with the reason.
//!
//! Files are read in bounded memory: the header once, then one layer's tensors at a time
//! ([`DumpPair`]).

mod file;
mod meta;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use self::file::DumpFile;
pub use self::file::DumpTensor;
pub use self::meta::{ActivationMeta, ActivationMode, ConvMeta, LayerKind, LayerMeta, WeightMeta};
use super::log::NumericLog;
use super::mask::{Mask, SampleDims, SampleId};
use super::report::{Comparison, NsReport};
use super::weights::compare_weight_tensors;
use crate::error::{QuantError, Result};

/// The `format` metadata of a version 2 dump.
pub const DUMP_FORMAT_V2: &str = "qnumeric-dump/2";

/// The name of the padding mask tensor.
pub const MASK_TENSOR: &str = "__mask__";

/// Which version of the dump format a pair is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DumpVersion {
    /// Outputs only (no `format` metadata).
    V1,
    /// `qnumeric-dump/2`: inputs, shadow outputs, weights, mask, layer metadata.
    V2,
}

/// Where the layer order came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OrderSource {
    /// The `order` metadata key.
    Metadata,
    /// Sorted names (no `order` key).
    Name,
}

/// A tensor left out of the comparison, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SkippedTensor {
    /// The tensor's name.
    pub name: String,
    /// Why (`"only in the float file"`, `"shapes differ: [2, 3] vs [2, 4]"`, ...).
    pub reason: String,
}

/// Which file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The float model's file.
    Float,
    /// The quantized model's file.
    Quant,
}

/// Which tensor of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `NAME`: the layer's output.
    Output,
    /// `NAME:input`: its input.
    Input,
    /// `NAME:shadow`: the float layer on the quantized model's input.
    Shadow,
    /// `NAME:weight`.
    Weight,
    /// `NAME:bias`.
    Bias,
}

impl Part {
    /// The suffixes of a v2 dump, in the order of [`Part`] after `Output`.
    const SUFFIXED: [(Part, &'static str); 4] = [
        (Part::Input, ":input"),
        (Part::Shadow, ":shadow"),
        (Part::Weight, ":weight"),
        (Part::Bias, ":bias"),
    ];

    /// The tensor name of this part of `layer`.
    #[must_use]
    pub fn tensor_name(self, layer: &str) -> String {
        match Self::SUFFIXED.iter().find(|(p, _)| *p == self) {
            Some((_, suffix)) => format!("{layer}{suffix}"),
            None => layer.to_string(),
        }
    }
}

/// The comparison of two dumps.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpComparison {
    /// The format version.
    pub version: DumpVersion,
    /// Where the order came from.
    pub order: OrderSource,
    /// The compared layers, in order: `cumulative` (the outputs), `local` (the output against
    /// the shadow output, v2), `weight` (v2).
    pub report: NsReport,
    /// The tensors left out, in order.
    pub skipped: Vec<SkippedTensor>,
    /// What a sample is.
    pub sample_dims: SampleDims,
    /// Whether a padding mask was applied.
    pub masked: bool,
    /// The samples' names when samples are positions (`n:t`); `None` when a sample is an
    /// index of axis 0.
    pub sample_ids: Option<Vec<SampleId>>,
}

/// Two dumps opened together: headers read and checked, layers found, mask and metadata
/// read; tensors read on demand, one at a time.
#[derive(Debug)]
pub struct DumpPair<'a> {
    float: DumpFile<'a>,
    quant: DumpFile<'a>,
    version: DumpVersion,
    order: OrderSource,
    layers: Vec<String>,
    skipped: Vec<SkippedTensor>,
    mask: Option<Mask>,
    meta: BTreeMap<String, LayerMeta>,
    batch_size: Option<usize>,
}

/// The `order` metadata: a JSON array of names (taken exactly), or names separated by commas
/// (each trimmed of surrounding white space; empty ones dropped).
fn parse_order(o: &str) -> std::result::Result<Vec<String>, String> {
    if o.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(o)
            .map_err(|e| format!("the `order` metadata is not a JSON array of names: {e}"))
    } else {
        Ok(o.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }
}

/// Why a pair that failed to push is skipped, without the operation's name.
fn reason(e: &QuantError) -> String {
    match e {
        QuantError::NanInput { index, .. } => format!("NaN at flat index {index}"),
        QuantError::NonFinite { value, .. } => format!("non-finite value {value}"),
        QuantError::EmptyInput { .. } => "no values (an axis of length 0)".into(),
        QuantError::InvalidAxis { .. } => "0-d tensor: no sample axis".into(),
        QuantError::Format { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// Compares two dumps given as bytes (the float model's outputs first), samples along axis 0.
///
/// # Errors
/// [`QuantError::Parse`] / [`QuantError::Format`] when either is not a readable dump.
pub fn compare_dumps(float: &[u8], quant: &[u8]) -> Result<DumpComparison> {
    DumpPair::from_bytes(float, quant)?.compare(SampleDims::Samples)
}

/// Compares two dump files (the float model's outputs first), samples along axis 0.
///
/// # Errors
/// [`QuantError::Io`] naming the file when it cannot be read (the I/O error kept as the
/// source); [`QuantError::Parse`] / [`QuantError::Format`] when it is not a readable dump
/// (truncated, corrupt, inconsistent masks or metadata).
///
/// # Examples
/// ```no_run
/// let cmp = qnumeric::ns::compare_dump_files("float.safetensors", "int8.safetensors")?;
/// println!("{cmp}");
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn compare_dump_files(
    float: impl AsRef<Path>,
    quant: impl AsRef<Path>,
) -> Result<DumpComparison> {
    DumpPair::open(float, quant)
        .map_err(|e| e.with_op("compare_dump_files"))?
        .compare(SampleDims::Samples)
        .map_err(|e| e.with_op("compare_dump_files"))
}

impl DumpPair<'static> {
    /// Opens two dump files (the float model's first); only their headers are read.
    ///
    /// # Errors
    /// As [`compare_dump_files`].
    pub fn open(float: impl AsRef<Path>, quant: impl AsRef<Path>) -> Result<Self> {
        const OP: &str = "DumpPair::open";
        let f = DumpFile::open(OP, float.as_ref())?;
        let q = DumpFile::open(OP, quant.as_ref())?;
        DumpPair::build(OP, f, q)
    }
}

impl<'a> DumpPair<'a> {
    /// Two dumps given as bytes (the float model's first).
    ///
    /// # Errors
    /// As [`compare_dumps`].
    ///
    /// # Examples
    /// ```
    /// use safetensors::tensor::TensorView;
    /// use qnumeric::ns::{DumpPair, DumpVersion, SampleDims};
    ///
    /// let write = |v: [f32; 2]| {
    ///     let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    ///     let view = TensorView::new(safetensors::Dtype::F32, vec![2, 1], &bytes).unwrap();
    ///     safetensors::serialize([("fc", view)], None).unwrap()
    /// };
    /// let (f, q) = (write([1.0, 2.0]), write([1.0, 2.5]));
    /// let pair = DumpPair::from_bytes(&f, &q)?;
    /// assert_eq!(pair.version(), DumpVersion::V1);
    /// assert_eq!(pair.layers(), ["fc"]);
    /// let cmp = pair.compare(SampleDims::Samples)?;
    /// assert!(cmp.report.layers[0].cumulative.is_some());
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn from_bytes(float: &'a [u8], quant: &'a [u8]) -> Result<Self> {
        const OP: &str = "compare_dumps";
        let f = DumpFile::from_bytes(OP, "float dump", float)?;
        let q = DumpFile::from_bytes(OP, "quantized dump", quant)?;
        DumpPair::build(OP, f, q)
    }

    fn build(op: &'static str, f: DumpFile<'a>, q: DumpFile<'a>) -> Result<Self> {
        let bad = |detail: String| QuantError::Format { op, detail };
        // The version.
        let version_of = |d: &DumpFile<'_>| -> Result<Option<DumpVersion>> {
            match d.metadata.get("format").map(String::as_str) {
                Some(DUMP_FORMAT_V2) => Ok(Some(DumpVersion::V2)),
                Some(v) if v.starts_with("qnumeric-dump/") => Err(bad(format!(
                    "{}: format `{v}` is not one this version reads (`{DUMP_FORMAT_V2}`, or none for version 1)",
                    d.label
                ))),
                _ => Ok(None),
            }
        };
        let version = match (version_of(&f)?, version_of(&q)?) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad("the two files declare different formats".into()));
            }
            (a, b) => a.or(b).unwrap_or(DumpVersion::V1),
        };
        // Metadata.
        let meta_of = |key: &str| {
            f.metadata
                .get(key)
                .map(|v| (&f, v))
                .or_else(|| q.metadata.get(key).map(|v| (&q, v)))
        };
        let listed = match meta_of("order") {
            None => None,
            Some((d, o)) => Some(parse_order(o).map_err(|e| bad(format!("{}: {e}", d.label)))?),
        };
        let meta = match meta_of("layers") {
            Some((_, text)) if version == DumpVersion::V2 => meta::parse_layers(op, text)?,
            _ => BTreeMap::new(),
        };
        let batch_size = match meta_of("batch_size") {
            Some((d, b)) if version == DumpVersion::V2 => match b.trim().parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(bad(format!(
                        "{}: `batch_size` metadata `{b}` is not a positive integer",
                        d.label
                    )));
                }
            },
            _ => None,
        };
        // The mask.
        let read_mask = |d: &DumpFile<'_>| -> Result<Option<Mask>> {
            match d.read_numbers(op, MASK_TENSOR)? {
                None => Ok(None),
                Some(m) => Mask::from_values(&m)
                    .map(Some)
                    .map_err(|e| bad(format!("{}: `{MASK_TENSOR}`: {e}", d.label))),
            }
        };
        let mask = match (read_mask(&f)?, read_mask(&q)?) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(format!(
                    "`{MASK_TENSOR}` differs between the two files"
                )));
            }
            (a, b) => a.or(b),
        };
        // The layers: every output name (v2: names without a part suffix).
        let all: BTreeSet<&str> = f
            .entries
            .keys()
            .chain(q.entries.keys())
            .map(String::as_str)
            .filter(|n| *n != MASK_TENSOR)
            .collect();
        let mut skipped = Vec::new();
        let mut outputs = BTreeSet::new();
        for &n in &all {
            let base = match version {
                DumpVersion::V1 => None,
                DumpVersion::V2 => Part::SUFFIXED.iter().find_map(|(_, s)| n.strip_suffix(s)),
            };
            match base {
                Some(b) if all.contains(b) => {}
                Some(b) => skipped.push(SkippedTensor {
                    name: n.to_string(),
                    reason: format!("a part of layer `{b}`, which has no output tensor `{b}`"),
                }),
                None if version == DumpVersion::V2 && n.starts_with("__") => {
                    skipped.push(SkippedTensor {
                        name: n.to_string(),
                        reason: "a reserved name (`__...`) this version does not read".into(),
                    });
                }
                None => {
                    outputs.insert(n);
                }
            }
        }
        let (layers, order) = match listed {
            Some(listed) => {
                let mut seen = HashSet::new();
                let mut layers = Vec::new();
                for n in listed {
                    if !seen.insert(n.clone()) {
                        continue;
                    }
                    if outputs.contains(n.as_str()) {
                        layers.push(n);
                    } else {
                        skipped.push(SkippedTensor {
                            name: n,
                            reason: "listed in `order` but in neither file".into(),
                        });
                    }
                }
                for n in &outputs {
                    if !seen.contains(*n) {
                        layers.push((*n).to_string());
                    }
                }
                (layers, OrderSource::Metadata)
            }
            None => (
                outputs.iter().map(|n| (*n).to_string()).collect(),
                OrderSource::Name,
            ),
        };
        Ok(DumpPair {
            float: f,
            quant: q,
            version,
            order,
            layers,
            skipped,
            mask,
            meta,
            batch_size,
        })
    }

    /// The format version.
    #[must_use]
    pub fn version(&self) -> DumpVersion {
        self.version
    }

    /// Where the order came from.
    #[must_use]
    pub fn order_source(&self) -> OrderSource {
        self.order
    }

    /// The layers (output tensors), in order.
    #[must_use]
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// Tensors that belong to no layer (a part without its output, a reserved name, an
    /// `order` entry in neither file).
    #[must_use]
    pub fn unassigned(&self) -> &[SkippedTensor] {
        &self.skipped
    }

    /// The padding mask, if either file has one.
    #[must_use]
    pub fn mask(&self) -> Option<&Mask> {
        self.mask.as_ref()
    }

    /// What the `layers` metadata says about `layer` (v2).
    #[must_use]
    pub fn layer_meta(&self, layer: &str) -> Option<&LayerMeta> {
        self.meta.get(layer)
    }

    /// Samples per forward call when the dump was made (`batch_size` metadata, v2).
    #[must_use]
    pub fn batch_size(&self) -> Option<usize> {
        self.batch_size
    }

    fn file(&self, side: Side) -> &DumpFile<'a> {
        match side {
            Side::Float => &self.float,
            Side::Quant => &self.quant,
        }
    }

    /// Whether a file has a part of a layer (parts other than the output exist in v2 only).
    #[must_use]
    pub fn has(&self, layer: &str, side: Side, part: Part) -> bool {
        (part == Part::Output || self.version == DumpVersion::V2)
            && self.file(side).has(&part.tensor_name(layer))
    }

    /// The shape of a part of a layer, without reading it.
    #[must_use]
    pub fn shape(&self, layer: &str, side: Side, part: Part) -> Option<&[usize]> {
        if !self.has(layer, side, part) {
            return None;
        }
        self.file(side).shape(&part.tensor_name(layer))
    }

    /// Reads a part of a layer (`Ok(None)` when the file does not have it).
    ///
    /// # Errors
    /// [`QuantError::Io`] when the file cannot be read; [`QuantError::Format`] for a tensor
    /// that is not `F32`, `F64`, `F16` or `BF16`.
    pub fn read(&self, layer: &str, side: Side, part: Part) -> Result<Option<DumpTensor>> {
        if !self.has(layer, side, part) {
            return Ok(None);
        }
        self.file(side)
            .read("DumpPair::read", &part.tensor_name(layer))
    }

    /// Pushes one pair into a log, with the mask where it applies.
    fn push(
        &self,
        log: &mut NumericLog,
        name: &str,
        x: DumpTensor,
        y: DumpTensor,
        output: Option<&crate::qparams::QParams>,
        dims: SampleDims,
    ) -> Result<()> {
        match (&self.mask, x, y) {
            (Some(m), DumpTensor::F32(x), DumpTensor::F32(y)) => {
                log.push_masked(name, &x, &y, output, m, dims)
            }
            (None, DumpTensor::F32(x), DumpTensor::F32(y)) => log.push(name, &x, &y, output),
            (m, x, y) => {
                let (x, y) = (x.into_f64(), y.into_f64());
                match m {
                    Some(m) => log.push_masked(name, &x, &y, output, m, dims),
                    None => log.push(name, &x, &y, output),
                }
            }
        }
    }

    /// Reads both tensors of a comparison, or says why it is skipped.
    fn pair(
        &self,
        a: (Side, Part),
        b: (Side, Part),
        layer: &str,
    ) -> Result<std::result::Result<(DumpTensor, DumpTensor), String>> {
        let (sa, sb) = (self.shape(layer, a.0, a.1), self.shape(layer, b.0, b.1));
        let (sa, sb) = match (sa, sb) {
            (Some(x), Some(y)) => (x, y),
            (Some(_), None) => return Ok(Err(only_in(a.0))),
            (None, _) => return Ok(Err(only_in(b.0))),
        };
        if sa != sb {
            return Ok(Err(format!("shapes differ: {sa:?} vs {sb:?}")));
        }
        let read = |s: Side, p: Part| -> Result<std::result::Result<DumpTensor, String>> {
            match self.read(layer, s, p) {
                Ok(Some(t)) => Ok(Ok(t)),
                Ok(None) => Ok(Err("missing".into())),
                Err(QuantError::Format { detail, .. }) => Ok(Err(format!(
                    "{detail} in the {} file",
                    match s {
                        Side::Float => "float",
                        Side::Quant => "quantized",
                    }
                ))),
                Err(e) => Err(e),
            }
        };
        let x = match read(a.0, a.1)? {
            Ok(x) => x,
            Err(r) => return Ok(Err(r)),
        };
        let y = match read(b.0, b.1)? {
            Ok(y) => y,
            Err(r) => return Ok(Err(r)),
        };
        Ok(Ok((x, y)))
    }

    /// Compares every layer, one at a time: outputs (cumulative), the quantized output against
    /// the shadow output (local, v2), the weights (v2), with the mask applied where it does.
    ///
    /// # Errors
    /// [`QuantError::Io`] when a file cannot be read any more. Tensors that cannot be
    /// compared are listed in [`DumpComparison::skipped`], not errors.
    pub fn compare(&self, dims: SampleDims) -> Result<DumpComparison> {
        let mut skipped = self.skipped.clone();
        let mut cumulative = NumericLog::streaming();
        let mut local = NumericLog::streaming();
        let mut weights = Vec::new();
        for name in &self.layers {
            let output = self.meta.get(name).and_then(|m| m.output);
            let skip = |tensor: String, reason: String| SkippedTensor {
                name: tensor,
                reason,
            };
            match self.pair(
                (Side::Float, Part::Output),
                (Side::Quant, Part::Output),
                name,
            )? {
                Ok((x, y)) => {
                    if let Err(e) = self.push(&mut cumulative, name, x, y, output.as_ref(), dims) {
                        skipped.push(skip(name.clone(), reason(&e)));
                    }
                }
                Err(r) => skipped.push(skip(name.clone(), r)),
            }
            if self.version == DumpVersion::V1 {
                continue;
            }
            if self.has(name, Side::Quant, Part::Shadow) {
                let tensor = Part::Shadow.tensor_name(name);
                match self.pair(
                    (Side::Quant, Part::Shadow),
                    (Side::Quant, Part::Output),
                    name,
                )? {
                    Ok((x, y)) => {
                        if let Err(e) = self.push(&mut local, name, x, y, output.as_ref(), dims) {
                            skipped.push(skip(tensor, reason(&e)));
                        }
                    }
                    Err(r) => skipped.push(skip(tensor, r)),
                }
            }
            if self.has(name, Side::Float, Part::Weight)
                || self.has(name, Side::Quant, Part::Weight)
            {
                let tensor = Part::Weight.tensor_name(name);
                match self.pair(
                    (Side::Float, Part::Weight),
                    (Side::Quant, Part::Weight),
                    name,
                )? {
                    Ok((w, q)) => match compare_weight_tensors(&w.into_f32(), &q.into_f32()) {
                        Ok(c) => weights.push((name.clone(), c)),
                        Err(e) => skipped.push(skip(tensor, reason(&e))),
                    },
                    Err(r) => skipped.push(skip(tensor, r)),
                }
            }
        }
        let mut report = NsReport::from_logs(Some(&cumulative), Some(&local)).with_weights(weights);
        report.order_by(&self.layers);
        let sample_ids = match (&self.mask, dims) {
            (Some(m), SampleDims::Positions) => Some(m.sample_ids(dims)),
            _ => None,
        };
        Ok(DumpComparison {
            version: self.version,
            order: self.order,
            report,
            skipped,
            sample_dims: dims,
            masked: self.mask.is_some(),
            sample_ids,
        })
    }
}

impl DumpPair<'_> {
    /// Compares this pair's quantized outputs against `baseline`'s quantized outputs (the
    /// reference), layer by layer, with this pair's mask: what changed between two quantized
    /// versions of the same model. Layers missing from either are left out.
    ///
    /// # Errors
    /// [`QuantError::Io`] when a file cannot be read any more.
    pub fn compare_with_baseline(
        &self,
        baseline: &DumpPair<'_>,
        dims: SampleDims,
    ) -> Result<NsReport> {
        let mut log = NumericLog::streaming();
        for name in &self.layers {
            let (Some(sa), Some(sb)) = (
                baseline.shape(name, Side::Quant, Part::Output),
                self.shape(name, Side::Quant, Part::Output),
            ) else {
                continue;
            };
            if sa != sb {
                continue;
            }
            // Tensors of a non-float dtype are left out; I/O errors are not.
            let read = |p: &DumpPair<'_>| match p.read(name, Side::Quant, Part::Output) {
                Err(QuantError::Format { .. }) => Ok(None),
                other => other,
            };
            let (Some(x), Some(y)) = (read(baseline)?, read(self)?) else {
                continue;
            };
            // A baseline that cannot be compared (NaN in it) is left out, as in `compare`.
            let _ = self.push(&mut log, name, x, y, None, dims);
        }
        let mut r = NsReport::from_logs(Some(&log), None);
        r.order_by(&self.layers);
        Ok(r)
    }
}

fn only_in(side: Side) -> String {
    match side {
        Side::Float => "only in the float file".into(),
        Side::Quant => "only in the quantized file".into(),
    }
}

impl DumpComparison {
    /// The comparison as one JSON object: `order` (`"metadata"` or `"name"`), `tensors`
    /// (in order; each with `name`, `shape`, `sqnr_db`, `normalized_l2`, `cosine`, `mse`,
    /// `max_abs`, `mean_error`, `samples`, and with `per_sample` also `sample_sqnr_db`, one
    /// number per index of the first axis), `skipped` (`name`, `reason`), `worst`,
    /// `largest_drop`, `first_below`, `jump_threshold_db`. Non-finite numbers are the
    /// strings `"inf"`, `"-inf"`, `"nan"`.
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    #[must_use]
    pub fn to_json(&self, per_sample: bool) -> String {
        use super::json;
        use super::report::Jump;
        #[derive(serde::Serialize)]
        struct Tensor<'a> {
            name: &'a str,
            shape: &'a [usize],
            #[serde(serialize_with = "json::f64")]
            sqnr_db: f64,
            #[serde(serialize_with = "json::f64")]
            normalized_l2: f64,
            #[serde(serialize_with = "json::f64")]
            cosine: f64,
            #[serde(serialize_with = "json::f64")]
            mse: f64,
            #[serde(serialize_with = "json::f64")]
            max_abs: f64,
            #[serde(serialize_with = "json::f64")]
            mean_error: f64,
            samples: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            #[serde(serialize_with = "opt_vec")]
            sample_sqnr_db: Option<Vec<f64>>,
        }
        fn opt_vec<S: serde::Serializer>(
            v: &Option<Vec<f64>>,
            s: S,
        ) -> std::result::Result<S::Ok, S::Error> {
            match v {
                Some(v) => json::vec_f64(v, s),
                None => s.serialize_none(),
            }
        }
        #[derive(serde::Serialize)]
        struct Out<'a> {
            order: OrderSource,
            tensors: Vec<Tensor<'a>>,
            skipped: &'a [SkippedTensor],
            worst: Option<&'a str>,
            largest_drop: Option<Jump>,
            first_below: Option<Jump>,
            #[serde(serialize_with = "json::f64")]
            jump_threshold_db: f64,
        }
        let tensors = self
            .report
            .layers
            .iter()
            .filter_map(|l| {
                let c = l.cumulative.as_ref()?;
                Some(Tensor {
                    name: &l.name,
                    shape: &c.shape,
                    sqnr_db: c.sqnr_db,
                    normalized_l2: c.normalized_l2,
                    cosine: c.cosine,
                    mse: c.mse,
                    max_abs: c.max_abs,
                    mean_error: c.mean_error,
                    samples: c.samples.len(),
                    sample_sqnr_db: per_sample.then(|| c.sample_sqnr_db()),
                })
            })
            .collect();
        let out = Out {
            order: self.order,
            tensors,
            skipped: &self.skipped,
            worst: self.report.worst().map(|l| l.name.as_str()),
            largest_drop: self.report.largest_drop(),
            first_below: self.report.first_below_threshold(),
            jump_threshold_db: self.report.jump_threshold_db,
        };
        serde_json::to_string(&out).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Per-sample figures as a text table ([`NsReport::sample_table`]).
    #[must_use]
    pub fn sample_table(&self, worst: usize) -> String {
        self.report.sample_table(Comparison::Cumulative, worst)
    }
}

impl fmt::Display for DumpComparison {
    /// The report's table, the order's source and the skipped tensors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.report)?;
        writeln!(
            f,
            "order: {}",
            match self.order {
                OrderSource::Metadata => "`order` metadata",
                OrderSource::Name => "by name",
            }
        )?;
        if !self.skipped.is_empty() {
            writeln!(f, "skipped:")?;
            for s in &self.skipped {
                writeln!(f, "  {}: {}", crate::text::display_name(&s.name), s.reason)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;

    fn dump(values: &[f32], order: Option<&str>) -> Vec<u8> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![values.len(), 1], &bytes).expect("view");
        let meta = order.map(|o| [("order".to_string(), o.to_string())].into());
        safetensors::serialize([("a", view)], meta).expect("serialize")
    }

    #[test]
    fn bytes_in_and_unreadable_bytes() {
        let f = dump(&[1.0, 2.0], Some("a"));
        let q = dump(&[1.0, 2.5], None);
        let c = compare_dumps(&f, &q).expect("compare");
        assert_eq!(c.order, OrderSource::Metadata);
        assert_eq!(c.report.layers.len(), 1);
        assert!(c.skipped.is_empty());
        let err = compare_dumps(b"junk", &q).expect_err("unreadable");
        assert!(
            matches!(&err, QuantError::Parse { op: "compare_dumps", what, .. } if what.starts_with("float dump: ")),
            "{err}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the parser's error is kept"
        );
        let err = compare_dumps(&f, &q[..q.len() - 1]).expect_err("truncated");
        assert!(
            matches!(&err, QuantError::Parse { what, .. } if what.starts_with("quantized dump: ")),
            "{err}"
        );
    }

    #[test]
    fn skip_reasons() {
        assert_eq!(
            reason(&QuantError::NonFinite {
                op: "x",
                what: "y",
                value: f64::INFINITY
            }),
            "non-finite value inf"
        );
        assert_eq!(
            reason(&QuantError::Empty { op: "x" }),
            "x: no data observed yet"
        );
    }
}
