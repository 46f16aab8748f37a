//! [`Format`]: any format of the crate by name, as data (what a plan, a replay and a remedy
//! carry), with the [`ElementFormat`] of the format it names.

use std::fmt;
use std::str::FromStr;

use super::{ElementFormat, Int8PerRow};
use crate::error::{QuantError, Result};

/// A low-precision format a layer's weights or inputs can be simulated in.
///
/// Names (`Display` / `FromStr`): see [`Format::NAMES`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
#[non_exhaustive]
pub enum Format {
    /// int8, symmetric, one scale per row ([`Int8PerRow`]).
    Int8PerRow(Int8PerRow),
}

impl Format {
    /// The names `FromStr` reads, one per standard format.
    pub const NAMES: &'static [&'static str] = &["int8"];

    /// The format's simulation.
    #[must_use]
    pub fn element_format(&self) -> &dyn ElementFormat {
        match self {
            Format::Int8PerRow(f) => f,
        }
    }

    /// Its short name (what `FromStr` reads).
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Format::Int8PerRow(_) => "int8".to_string(),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Format {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "int8" => Ok(Format::Int8PerRow(Int8PerRow)),
            _ => Err(QuantError::Format {
                op: "Format::from_str",
                detail: format!("unknown format `{s}` (known: {})", Format::NAMES.join(", ")),
            }),
        }
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
