//! Quantized dtypes and quantization ranges.
//!
//! A [`QDType`] names the integer grid a tensor is quantized to (its *storage* range); a
//! [`QRange`] is the part of that grid a quantizer may use (`quant_min..=quant_max`),
//! validated against the dtype. PyTorch's `reduce_range` halving is available through
//! [`QRange::with_reduce_range`].

use crate::error::{QuantError, Result};
use std::fmt;

/// A quantized integer dtype and its storage range.
///
/// | dtype | range | typical storage |
/// |---|---|---|
/// | `QUInt4` | 0..=15 | `u8` |
/// | `QInt4` | -8..=7 | `i8` |
/// | `QUInt8` | 0..=255 | `u8` |
/// | `QInt8` | -128..=127 | `i8` |
/// | `QUInt16` | 0..=65535 | `u16` |
/// | `QInt16` | -32768..=32767 | `i16` |
/// | `QInt32` | -2^31..=2^31-1 | `i32` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum QDType {
    /// Unsigned 4-bit, 0..=15 (PyTorch's `quint4x2` values, unpacked).
    QUInt4,
    /// Signed 4-bit, -8..=7.
    QInt4,
    /// Unsigned 8-bit, 0..=255 (PyTorch `quint8`).
    QUInt8,
    /// Signed 8-bit, -128..=127 (PyTorch `qint8`).
    QInt8,
    /// Unsigned 16-bit, 0..=65535 (PyTorch `uint16`).
    QUInt16,
    /// Signed 16-bit, -32768..=32767 (PyTorch `int16`).
    QInt16,
    /// Signed 32-bit (PyTorch `qint32`, used for biases and accumulators).
    QInt32,
}

impl QDType {
    /// Every dtype, narrowest first.
    pub const ALL: [QDType; 7] = [
        QDType::QUInt4,
        QDType::QInt4,
        QDType::QUInt8,
        QDType::QInt8,
        QDType::QUInt16,
        QDType::QInt16,
        QDType::QInt32,
    ];

    /// Lowest storable value.
    #[must_use]
    pub const fn min(self) -> i64 {
        match self {
            QDType::QUInt4 | QDType::QUInt8 | QDType::QUInt16 => 0,
            QDType::QInt4 => -8,
            QDType::QInt8 => -128,
            QDType::QInt16 => -32768,
            QDType::QInt32 => i32::MIN as i64,
        }
    }

    /// Highest storable value.
    #[must_use]
    pub const fn max(self) -> i64 {
        match self {
            QDType::QUInt4 => 15,
            QDType::QInt4 => 7,
            QDType::QUInt8 => 255,
            QDType::QInt8 => 127,
            QDType::QUInt16 => 65535,
            QDType::QInt16 => 32767,
            QDType::QInt32 => i32::MAX as i64,
        }
    }

    /// Number of bits of the dtype.
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            QDType::QUInt4 | QDType::QInt4 => 4,
            QDType::QUInt8 | QDType::QInt8 => 8,
            QDType::QUInt16 | QDType::QInt16 => 16,
            QDType::QInt32 => 32,
        }
    }

    /// Whether the dtype is signed.
    #[must_use]
    pub const fn is_signed(self) -> bool {
        self.min() < 0
    }

    /// PyTorch's name for the dtype (`quint8`, `qint8`, `qint32`, `quint4x2`, `int4`, `uint16`, `int16`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            QDType::QUInt4 => "quint4x2",
            QDType::QInt4 => "int4",
            QDType::QUInt8 => "quint8",
            QDType::QInt8 => "qint8",
            QDType::QUInt16 => "uint16",
            QDType::QInt16 => "int16",
            QDType::QInt32 => "qint32",
        }
    }

    /// Parses PyTorch's dtype names (`quint8`, `qint8`, `uint8`, `int8`, `qint32`, `int32`,
    /// `quint4x2`, `uint4`, `int4`, `uint16`, `int16`).
    ///
    /// # Errors
    /// [`QuantError::Format`] for any other name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "quint8" | "uint8" | "torch.quint8" => QDType::QUInt8,
            "qint8" | "int8" | "torch.qint8" => QDType::QInt8,
            "qint32" | "int32" | "torch.qint32" => QDType::QInt32,
            "quint4x2" | "uint4" | "quint4" => QDType::QUInt4,
            "qint4" | "int4" => QDType::QInt4,
            "uint16" | "quint16" => QDType::QUInt16,
            "int16" | "qint16" => QDType::QInt16,
            _ => {
                return Err(QuantError::Format {
                    op: "QDType::from_name",
                    detail: format!("unknown quantized dtype `{name}`"),
                });
            }
        })
    }

    /// The full range of the dtype as a [`QRange`].
    #[must_use]
    pub const fn full_range(self) -> QRange {
        QRange {
            dtype: self,
            quant_min: self.min(),
            quant_max: self.max(),
        }
    }
}

impl fmt::Display for QDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated quantization range `quant_min..=quant_max` inside a dtype.
///
/// Invariants: every range has `quant_min <= quant_max`, both inside the dtype's storage range.
/// A range from [`QRange::new`] also has `quant_min < quant_max` and `quant_min <= 0 <= quant_max`;
/// a range from [`QRange::for_fake_quant`] needs only the first, as PyTorch's fake quantization;
/// [`QRange::with_reduce_range`] keeps whichever its input had. Deserialization (feature
/// `serde`) checks the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "QRangeRepr"))]
pub struct QRange {
    dtype: QDType,
    quant_min: i64,
    quant_max: i64,
}

/// The serialized form of a [`QRange`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct QRangeRepr {
    dtype: QDType,
    quant_min: i64,
    quant_max: i64,
}

#[cfg(feature = "serde")]
impl TryFrom<QRangeRepr> for QRange {
    type Error = QuantError;

    fn try_from(r: QRangeRepr) -> Result<Self> {
        let (dtype, quant_min, quant_max) = (r.dtype, r.quant_min, r.quant_max);
        if quant_min > quant_max || quant_min < dtype.min() || quant_max > dtype.max() {
            return Err(QuantError::InvalidQuantRange {
                op: "QRange::deserialize",
                quant_min,
                quant_max,
                dtype,
                reason: "quant_min must be <= quant_max and both inside the dtype's storage range",
            });
        }
        Ok(QRange {
            dtype,
            quant_min,
            quant_max,
        })
    }
}

impl QRange {
    /// A custom range inside `dtype`.
    ///
    /// # Errors
    /// [`QuantError::InvalidQuantRange`] when `quant_min >= quant_max`, when the range does not
    /// contain 0, or when it leaves the dtype's storage range.
    ///
    /// # Examples
    /// ```
    /// use qnumeric::{QDType, QRange};
    /// let r = QRange::new(QDType::QInt8, -127, 127)?;
    /// assert_eq!((r.quant_min(), r.quant_max()), (-127, 127));
    /// assert!(QRange::new(QDType::QInt8, 1, 127).is_err()); // must contain 0
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn new(dtype: QDType, quant_min: i64, quant_max: i64) -> Result<Self> {
        let err = |reason| QuantError::InvalidQuantRange {
            op: "QRange::new",
            quant_min,
            quant_max,
            dtype,
            reason,
        };
        if quant_min >= quant_max {
            return Err(err("quant_min must be strictly less than quant_max"));
        }
        if quant_min > 0 || quant_max < 0 {
            return Err(err("the range must include 0"));
        }
        if quant_min < dtype.min() || quant_max > dtype.max() {
            return Err(err("the range must lie inside the dtype's storage range"));
        }
        Ok(QRange {
            dtype,
            quant_min,
            quant_max,
        })
    }

    /// A range for fake quantization, where PyTorch only requires `quant_min <= quant_max`
    /// (the range need not contain 0 and is not tied to a dtype).
    ///
    /// The dtype recorded is the narrowest one that holds the range.
    ///
    /// # Errors
    /// [`QuantError::InvalidQuantRange`] when `quant_min > quant_max` or the range does not fit in
    /// 32 bits.
    pub fn for_fake_quant(quant_min: i64, quant_max: i64) -> Result<Self> {
        let dtype = QDType::ALL
            .into_iter()
            .find(|d| d.min() <= quant_min && quant_max <= d.max())
            .unwrap_or(QDType::QInt32);
        if quant_min > quant_max || quant_min < dtype.min() || quant_max > dtype.max() {
            return Err(QuantError::InvalidQuantRange {
                op: "QRange::for_fake_quant",
                quant_min,
                quant_max,
                dtype,
                reason: "quant_min must be <= quant_max and both must fit in 32 bits",
            });
        }
        Ok(QRange {
            dtype,
            quant_min,
            quant_max,
        })
    }

    /// PyTorch's `reduce_range`: halve both ends with floor division (`-128..=127` becomes
    /// `-64..=63`, `0..=255` becomes `0..=127`). The full range of a 16- or 32-bit dtype is
    /// returned unchanged (PyTorch's observers keep `qint32` whole under `reduce_range`).
    ///
    /// # Errors
    /// [`QuantError::InvalidQuantRange`] when the halved range would break the range's
    /// invariants (`0..=1` would become `0..=0`).
    ///
    /// # Examples
    /// ```
    /// use qnumeric::{QDType, QRange};
    /// let r = QDType::QUInt8.full_range().with_reduce_range()?;
    /// assert_eq!((r.quant_min(), r.quant_max()), (0, 127));
    /// assert_eq!(QDType::QInt32.full_range().with_reduce_range()?, QDType::QInt32.full_range());
    /// assert!(QRange::new(QDType::QUInt8, 0, 1)?.with_reduce_range().is_err());
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn with_reduce_range(self) -> Result<Self> {
        if self.is_full() && self.dtype.bits() >= 16 {
            return Ok(self);
        }
        let (quant_min, quant_max) = (self.quant_min.div_euclid(2), self.quant_max.div_euclid(2));
        if quant_min == quant_max && self.quant_min < self.quant_max {
            return Err(QuantError::InvalidQuantRange {
                op: "QRange::with_reduce_range",
                quant_min: self.quant_min,
                quant_max: self.quant_max,
                dtype: self.dtype,
                reason: "halving the range would leave a single level",
            });
        }
        Ok(QRange {
            dtype: self.dtype,
            quant_min,
            quant_max,
        })
    }

    /// The dtype the range lives in.
    #[must_use]
    pub const fn dtype(&self) -> QDType {
        self.dtype
    }

    /// Lowest quantized value.
    #[must_use]
    pub const fn quant_min(&self) -> i64 {
        self.quant_min
    }

    /// Highest quantized value.
    #[must_use]
    pub const fn quant_max(&self) -> i64 {
        self.quant_max
    }

    /// Number of levels, `quant_max - quant_min + 1`.
    #[must_use]
    pub const fn levels(&self) -> u64 {
        (self.quant_max - self.quant_min + 1) as u64
    }

    /// Whether this is the dtype's full storage range.
    #[must_use]
    pub const fn is_full(&self) -> bool {
        self.quant_min == self.dtype.min() && self.quant_max == self.dtype.max()
    }

    /// Whether `v` lies in the range.
    #[must_use]
    pub const fn contains(&self, v: i64) -> bool {
        self.quant_min <= v && v <= self.quant_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_range_floors() {
        let r = QRange::new(QDType::QInt8, -127, 127).unwrap();
        let h = r.with_reduce_range().unwrap();
        assert_eq!((h.quant_min(), h.quant_max()), (-64, 63));
        let u = QDType::QUInt8.full_range().with_reduce_range().unwrap();
        assert_eq!((u.quant_min(), u.quant_max()), (0, 127));
        let n = QRange::new(QDType::QInt8, -1, 1).unwrap();
        let nh = n.with_reduce_range().unwrap();
        assert_eq!((nh.quant_min(), nh.quant_max()), (-1, 0));
    }

    #[test]
    fn reduce_range_leaves_full_wide_ranges_unchanged() {
        for d in [QDType::QInt32, QDType::QInt16, QDType::QUInt16] {
            assert_eq!(d.full_range().with_reduce_range().unwrap(), d.full_range());
        }
        // A custom 32-bit range is halved like any other.
        let r = QRange::new(QDType::QInt32, -1000, 1001).unwrap();
        let h = r.with_reduce_range().unwrap();
        assert_eq!((h.quant_min(), h.quant_max()), (-500, 500));
    }

    #[test]
    fn reduce_range_refuses_to_collapse_a_two_level_range() {
        let r = QRange::new(QDType::QUInt8, 0, 1).unwrap();
        assert!(matches!(
            r.with_reduce_range(),
            Err(QuantError::InvalidQuantRange {
                op: "QRange::with_reduce_range",
                quant_min: 0,
                quant_max: 1,
                ..
            })
        ));
    }

    #[test]
    fn names_round_trip() {
        for d in QDType::ALL {
            assert_eq!(QDType::from_name(d.name()).unwrap(), d);
        }
        assert!(QDType::from_name("float").is_err());
    }

    #[test]
    fn invalid_ranges() {
        assert!(QRange::new(QDType::QUInt8, 10, 5).is_err());
        assert!(QRange::new(QDType::QUInt8, 0, 256).is_err());
        assert!(QRange::new(QDType::QInt8, 1, 100).is_err());
        assert!(QRange::for_fake_quant(5, 3).is_err());
        assert!(QRange::for_fake_quant(3, 5).is_ok());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserialization_refuses_invalid_ranges() {
        let parse = |s: &str| serde_json::from_str::<QRange>(s);
        let e = parse(r#"{"dtype":"QInt8","quant_min":5,"quant_max":-3}"#).unwrap_err();
        assert!(
            e.to_string().contains("invalid quantization range 5..=-3"),
            "{e}"
        );
        assert!(parse(r#"{"dtype":"QUInt8","quant_min":0,"quant_max":256}"#).is_err());
        assert!(parse(r#"{"dtype":"QInt4","quant_min":-9,"quant_max":7}"#).is_err());
        for r in [
            QDType::QUInt8.full_range(),
            QRange::new(QDType::QInt8, -127, 127).unwrap(),
            QRange::for_fake_quant(3, 5).unwrap(),
            QRange::for_fake_quant(4, 4).unwrap(),
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(parse(&json).unwrap(), r, "{json}");
        }
    }
}
