//! [`Format`]: any format of the crate by name, as data (what a plan, a replay and a remedy
//! carry), with the [`ElementFormat`] of the format it names.

use std::fmt;
use std::str::FromStr;

use super::float8::{Float8Granularity, Float8Recipe, Float8Spec};
use super::ggml::GgmlType;
use super::groupwise::{GroupMapping, GroupwiseSpec, QParamsDtype, TinygemmSpec};
use super::minifloat::MiniFloat;
use super::mx::{MxScaleMode, MxSpec};
use super::nf4::Nf4Spec;
use super::nvfp4::Nvfp4Spec;
use super::{ElementFormat, Int8PerRow};
use crate::error::{QuantError, Result};

/// A low-precision format a layer's weights or inputs can be simulated in.
///
/// Names (`Display` / `FromStr`, case-insensitive): `int8` (per row), `fp8-e4m3-row`,
/// `fp8-e4m3-tensor`, `fp8-e5m2-row`, `fp8-e5m2-tensor` (torchao's inference recipe, all-zero
/// rows as zeros), `mxfp8`, `mxfp8-e5m2`, `mxfp6`, `mxfp6-e3m2`, `mxfp4` (floor mode, blocks of
/// 32; `-rceil`, `-ceil`, `-even` for the other modes), `nvfp4`, `int4-g<N>` (asymmetric),
/// `int4-sym-g<N>`, `uint4-g<N>`, `int8-g<N>` / `int8-sym-g<N>`, `int4-tinygemm-g<N>`,
/// `nf4`, and the GGML types `q8_0`, `q4_0`, `q4_1`, `q5_0`, `q5_1`, `mxfp4-ggml`.
///
/// ```
/// use qnumeric::formats::{ElementFormat, Format};
/// let f: Format = "int4-g128".parse()?;
/// assert_eq!(f.to_string(), "int4-g128");
/// assert_eq!(f.block_len(), 128);
/// assert_eq!("mxfp4".parse::<Format>()?.bits_per_element(), 4.25);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
#[non_exhaustive]
pub enum Format {
    /// int8, symmetric, one scale per row ([`Int8PerRow`]).
    Int8PerRow(Int8PerRow),
    /// Scaled float8.
    Float8(Float8Spec),
    /// OCP MX.
    Mx(MxSpec),
    /// NVFP4.
    Nvfp4(Nvfp4Spec),
    /// Group-wise affine integers.
    Groupwise(GroupwiseSpec),
    /// tinygemm's uint4 with float zero points.
    Tinygemm(TinygemmSpec),
    /// NF4.
    Nf4(Nf4Spec),
    /// A GGML block type that can be encoded.
    Ggml(GgmlType),
}

impl Format {
    /// The names of the standard formats (without a group size: `int4-g128` stands for the
    /// group family).
    pub const NAMES: &'static [&'static str] = &[
        "int8",
        "fp8-e4m3-row",
        "fp8-e5m2-row",
        "mxfp8",
        "mxfp6",
        "mxfp4",
        "nvfp4",
        "int4-g128",
        "int4-g64",
        "int4-g32",
        "int4-sym-g128",
        "uint4-g128",
        "int8-g128",
        "int4-tinygemm-g128",
        "nf4",
        "q8_0",
        "q4_0",
        "q4_1",
        "q5_0",
        "q5_1",
        "mxfp4-ggml",
    ];

    /// The formats the diagnosis tries by default in place of a weight format: the finer
    /// group sizes of int4, the wider MX and GGML formats, float8 and int8 per row.
    #[must_use]
    pub fn weight_candidates() -> Vec<Format> {
        [
            "int8",
            "fp8-e4m3-row",
            "mxfp8",
            "mxfp6",
            "mxfp4",
            "nvfp4",
            "int4-g128",
            "int4-g64",
            "int4-g32",
            "nf4",
            "q8_0",
            "q5_1",
            "q4_0",
            "q4_1",
        ]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
    }

    /// The format's simulation.
    #[must_use]
    pub fn element_format(&self) -> &dyn ElementFormat {
        match self {
            Format::Int8PerRow(f) => f,
            Format::Float8(f) => f,
            Format::Mx(f) => f,
            Format::Nvfp4(f) => f,
            Format::Groupwise(f) => f,
            Format::Tinygemm(f) => f,
            Format::Nf4(f) => f,
            Format::Ggml(f) => f,
        }
    }

    /// Its short name (what `FromStr` reads).
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Format::Int8PerRow(_) => "int8".to_string(),
            Format::Ggml(GgmlType::Mxfp4) => "mxfp4-ggml".to_string(),
            Format::Ggml(t) => t.name().to_ascii_lowercase(),
            Format::Float8(f) => f.to_string(),
            Format::Mx(f) => f.to_string(),
            Format::Nvfp4(f) => f.to_string(),
            Format::Groupwise(f) => f.to_string(),
            Format::Tinygemm(f) => f.to_string(),
            Format::Nf4(f) => f.to_string(),
        }
    }
}

fn unknown(s: &str) -> QuantError {
    QuantError::Format {
        op: "Format::from_str",
        detail: format!(
            "unknown format `{s}` (known: {}; any group size for the int families)",
            Format::NAMES.join(", ")
        ),
    }
}

impl FromStr for Format {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self> {
        let n = s.trim().to_ascii_lowercase();
        let fp8 =
            |dtype, g| Float8Spec::new(dtype, Float8Recipe::InferenceSafe, g).map(Format::Float8);
        match n.as_str() {
            "int8" => return Ok(Format::Int8PerRow(Int8PerRow)),
            "fp8-e4m3-row" => return fp8(MiniFloat::E4M3Fn, Float8Granularity::Rowwise),
            "fp8-e4m3-tensor" => return fp8(MiniFloat::E4M3Fn, Float8Granularity::Tensorwise),
            "fp8-e5m2-row" => return fp8(MiniFloat::E5M2, Float8Granularity::Rowwise),
            "fp8-e5m2-tensor" => return fp8(MiniFloat::E5M2, Float8Granularity::Tensorwise),
            "nvfp4" => return Ok(Format::Nvfp4(Nvfp4Spec::new(true))),
            "nvfp4-no-tensor-scale" => return Ok(Format::Nvfp4(Nvfp4Spec::new(false))),
            "nf4" => return Nf4Spec::new(64, 256).map(Format::Nf4),
            "mxfp4-ggml" => return Ok(Format::Ggml(GgmlType::Mxfp4)),
            _ => {}
        }
        if let Ok(t) = n.parse::<GgmlType>()
            && t.can_quantize()
            && t != GgmlType::Mxfp4
        {
            return Ok(Format::Ggml(t));
        }
        if let Some(rest) = n.strip_prefix("mx") {
            let (base, mode) = match rest.rsplit_once('-') {
                Some((b, m)) if MxScaleMode::ALL.iter().any(|x| x.name() == m) => (b, m),
                _ => (rest, "floor"),
            };
            let mode = MxScaleMode::ALL
                .into_iter()
                .find(|x| x.name() == mode)
                .ok_or_else(|| unknown(s))?;
            let elem = match base {
                "fp8" => MiniFloat::E4M3Fn,
                "fp8-e5m2" => MiniFloat::E5M2,
                "fp6" => MiniFloat::E2M3Fn,
                "fp6-e3m2" => MiniFloat::E3M2Fn,
                "fp4" => MiniFloat::E2M1Fn,
                _ => return Err(unknown(s)),
            };
            return MxSpec::new(elem, 32, mode).map(Format::Mx);
        }
        let (family, group) = n.rsplit_once("-g").ok_or_else(|| unknown(s))?;
        let group: usize = group.parse().map_err(|_| unknown(s))?;
        let spec = match family {
            "int4" => GroupwiseSpec::int4(group, GroupMapping::Asymmetric),
            "int4-sym" => GroupwiseSpec::int4(group, GroupMapping::Symmetric),
            "int4-symnc" => GroupwiseSpec::int4(group, GroupMapping::SymmetricNoClippingErr),
            "uint4" => GroupwiseSpec::uint4(group, GroupMapping::Asymmetric),
            "uint4-sym" => GroupwiseSpec::uint4(group, GroupMapping::Symmetric),
            "int8" => GroupwiseSpec::int8(group, GroupMapping::Asymmetric),
            "int8-sym" => GroupwiseSpec::int8(group, GroupMapping::Symmetric),
            "int4-tinygemm" => {
                return TinygemmSpec::new(group, f32::MIN_POSITIVE, QParamsDtype::BF16)
                    .map(Format::Tinygemm);
            }
            _ => return Err(unknown(s)),
        };
        spec.map(Format::Groupwise)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl From<Format> for String {
    fn from(f: Format) -> String {
        f.name()
    }
}

impl TryFrom<String> for Format {
    type Error = QuantError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl ElementFormat for Format {
    fn bits_per_element(&self) -> f64 {
        self.element_format().bits_per_element()
    }

    fn block_len(&self) -> usize {
        self.element_format().block_len()
    }

    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        self.element_format().fake_quantize_rows(x, row_len, out)
    }

    fn ste_mask_rows(&self, x: &[f32], row_len: usize, mask: &mut [bool]) -> Result<()> {
        self.element_format().ste_mask_rows(x, row_len, mask)
    }
}
