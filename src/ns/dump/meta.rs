//! The `layers` metadata of a v2 dump: what a framework knows about each layer (its kind,
//! how its weights and inputs are quantized), read where present.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::qparams::QParams;

/// What a layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum LayerKind {
    /// `y = x·Wᵀ + b` over the last axis.
    Linear,
    /// A 1-d convolution.
    Conv1d,
    /// A 2-d convolution.
    Conv2d,
    /// Anything else (LayerNorm, an activation, attention, ...).
    Other,
}

/// How a layer's input is quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ActivationMode {
    /// At run time from the input's own range (PyTorch `quantize_dynamic`).
    Dynamic,
    /// By calibrated parameters.
    Static,
    /// Not at all (weight-only quantization).
    Float,
}

/// A layer's weight quantization, as the dump describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WeightMeta {
    /// The integer width.
    pub bits: Option<u8>,
    /// One scale per output channel (`false`: one per tensor).
    pub per_channel: Option<bool>,
    /// Zero point 0.
    pub symmetric: Option<bool>,
}

/// A layer's input quantization, as the dump describes it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ActivationMeta {
    /// Dynamic, static or float.
    pub mode: Option<ActivationMode>,
    /// The integer width.
    pub bits: Option<u8>,
    /// 7 of 8 bits used (PyTorch fbgemm).
    pub reduce_range: Option<bool>,
    /// One dynamic scale per row (`false`: per forward call).
    pub per_token: Option<bool>,
    /// The static input parameters.
    pub qparams: Option<QParams>,
}

/// A convolution's geometry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ConvMeta {
    /// Stride per spatial axis.
    pub stride: Vec<usize>,
    /// Zero padding per spatial axis.
    pub padding: Vec<usize>,
    /// Dilation per spatial axis.
    pub dilation: Vec<usize>,
    /// Groups.
    pub groups: Option<usize>,
}

/// Everything the `layers` metadata says about one layer (every field optional).
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LayerMeta {
    /// What it computes.
    pub kind: Option<LayerKind>,
    /// Its weight quantization.
    pub weight: Option<WeightMeta>,
    /// Its input quantization.
    pub activation: Option<ActivationMeta>,
    /// Its output's static parameters.
    pub output: Option<QParams>,
    /// A convolution's geometry.
    pub conv: Option<ConvMeta>,
}

/// Parses the `layers` metadata value.
pub(crate) fn parse_layers(op: &'static str, text: &str) -> Result<BTreeMap<String, LayerMeta>> {
    let bad = |detail: String| QuantError::Format {
        op,
        detail: format!("the `layers` metadata: {detail}"),
    };
    let v: Value = serde_json::from_str(text)
        .map_err(|e| QuantError::parse(op, "the `layers` metadata", e))?;
    let Value::Object(map) = v else {
        return Err(bad("not a JSON object of layer names".into()));
    };
    let mut out = BTreeMap::new();
    for (name, v) in map {
        let meta = parse_layer(&v).map_err(|d| bad(format!("layer `{name}`: {d}")))?;
        out.insert(name, meta);
    }
    Ok(out)
}

type R<T> = std::result::Result<T, String>;

fn parse_layer(v: &Value) -> R<LayerMeta> {
    let Value::Object(o) = v else {
        return Err("not a JSON object".into());
    };
    let kind = match o.get("kind").map(str_of).transpose()? {
        None => None,
        Some("linear") => Some(LayerKind::Linear),
        Some("conv1d") => Some(LayerKind::Conv1d),
        Some("conv2d") => Some(LayerKind::Conv2d),
        Some(_) => Some(LayerKind::Other),
    };
    let weight = o
        .get("weight")
        .map(|w| -> R<WeightMeta> {
            Ok(WeightMeta {
                bits: bits_of(w.get("bits"))?,
                per_channel: w
                    .get("granularity")
                    .map(str_of)
                    .transpose()?
                    .map(|g| match g {
                        "per_tensor" => Ok(false),
                        "per_channel" => Ok(true),
                        other => Err(format!("weight granularity `{other}`")),
                    })
                    .transpose()?,
                symmetric: bool_of(w.get("symmetric"))?,
            })
        })
        .transpose()?;
    let activation = o
        .get("activation")
        .map(|a| -> R<ActivationMeta> {
            let mode = a
                .get("mode")
                .map(str_of)
                .transpose()?
                .map(|m| match m {
                    "dynamic" => Ok(ActivationMode::Dynamic),
                    "static" => Ok(ActivationMode::Static),
                    "float" => Ok(ActivationMode::Float),
                    other => Err(format!("activation mode `{other}`")),
                })
                .transpose()?;
            let per_token = a
                .get("granularity")
                .map(str_of)
                .transpose()?
                .map(|g| match g {
                    "per_tensor" => Ok(false),
                    "per_token" => Ok(true),
                    other => Err(format!("activation granularity `{other}`")),
                })
                .transpose()?;
            Ok(ActivationMeta {
                mode,
                bits: bits_of(a.get("bits"))?,
                reduce_range: bool_of(a.get("reduce_range"))?,
                per_token,
                qparams: qparams_of(a)?,
            })
        })
        .transpose()?;
    let output = o.get("output").map(qparams_of).transpose()?.flatten();
    let conv = o
        .get("conv")
        .map(|c| -> R<ConvMeta> {
            Ok(ConvMeta {
                stride: list_of(c.get("stride"))?,
                padding: list_of(c.get("padding"))?,
                dilation: list_of(c.get("dilation"))?,
                groups: c.get("groups").map(usize_of).transpose()?,
            })
        })
        .transpose()?;
    Ok(LayerMeta {
        kind,
        weight,
        activation,
        output,
        conv,
    })
}

fn str_of(v: &Value) -> R<&str> {
    v.as_str().ok_or_else(|| format!("{v} is not a string"))
}

fn bool_of(v: Option<&Value>) -> R<Option<bool>> {
    v.map(|v| {
        v.as_bool()
            .ok_or_else(|| format!("{v} is not true or false"))
    })
    .transpose()
}

fn usize_of(v: &Value) -> R<usize> {
    v.as_u64()
        .and_then(|u| usize::try_from(u).ok())
        .ok_or_else(|| format!("{v} is not a non-negative integer"))
}

fn bits_of(v: Option<&Value>) -> R<Option<u8>> {
    v.map(|v| {
        let b = usize_of(v)?;
        if (2..=8).contains(&b) {
            Ok(b as u8)
        } else {
            Err(format!("{b} bits: must be 2..=8"))
        }
    })
    .transpose()
}

fn list_of(v: Option<&Value>) -> R<Vec<usize>> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(usize_of).collect(),
        Some(v) => Ok(vec![usize_of(v)?]),
    }
}

/// `scale`, `zero_point`, `dtype` of an object, when it has a scale.
fn qparams_of(v: &Value) -> R<Option<QParams>> {
    let Some(scale) = v.get("scale") else {
        return Ok(None);
    };
    let scale = scale
        .as_f64()
        .ok_or_else(|| format!("scale {scale} is not a number"))?;
    let zp = v
        .get("zero_point")
        .map(|z| {
            z.as_i64()
                .ok_or_else(|| format!("zero point {z} is not an integer"))
        })
        .transpose()?
        .unwrap_or(0);
    let dtype = match v.get("dtype").map(str_of).transpose()? {
        None | Some("quint8") => QDType::QUInt8,
        Some("qint8") => QDType::QInt8,
        Some(other) => return Err(format!("dtype `{other}`")),
    };
    #[allow(clippy::cast_possible_truncation)]
    QParams::new(scale as f32, zp, dtype)
        .map(Some)
        .map_err(|e| e.to_string())
}
