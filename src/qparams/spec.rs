//! [`QSpec`]: how parameters are chosen from a range (PyTorch's `_calculate_qparams`).

use super::{check_min_max, check_scale, QScheme};
use crate::dtype::{QDType, QRange};
use crate::error::{QuantError, Result};

/// How quantization parameters are chosen from a range: scheme, quantization range, eps floor.
///
/// `customized_range` records whether the caller gave `quant_min`/`quant_max` explicitly: it
/// decides PyTorch's symmetric `quint8` zero point (128 for the default range,
/// `floor((qmin + qmax) / 2)` for a custom one, even `0..=255` given explicitly).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QSpec {
    /// The scheme.
    pub scheme: QScheme,
    /// The quantization range (after any `reduce_range`).
    pub range: QRange,
    /// Lower bound of the scale (PyTorch default: `f32::EPSILON`).
    pub eps: f32,
    /// Whether the range was given explicitly (see above).
    pub customized_range: bool,
}

/// One channel's parameters as chosen by [`QSpec::qparams_from_min_max`]: the zero point is
/// an integer value except for [`QScheme::PerChannelAffineFloatQParams`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawQParams {
    /// The scale.
    pub scale: f32,
    /// The zero point (integer-valued unless float qparams).
    pub zero_point: f32,
}

impl QSpec {
    /// PyTorch's defaults for a dtype and scheme: the full range (or halved with
    /// `reduce_range`), `eps = f32::EPSILON`, range not customized.
    #[must_use]
    pub fn new(scheme: QScheme, dtype: QDType) -> Self {
        QSpec {
            scheme,
            range: dtype.full_range(),
            eps: f32::EPSILON,
            customized_range: false,
        }
    }

    /// A spec from PyTorch's observer arguments (`dtype`, `qscheme`, `reduce_range`,
    /// `quant_min`, `quant_max`, `eps`), with PyTorch's rules (`calculate_qmin_qmax`,
    /// `validate_qmin_qmax`):
    /// - without a custom range: the dtype's full range, halved by `reduce_range` for 8-bit
    ///   dtypes (`0..=127`, `-64..=63`);
    /// - with both `quant_min` and `quant_max`: the range must contain 0, `min < max`, and lie
    ///   in the dtype; `reduce_range` then halves it with floor division (PyTorch's quirk:
    ///   `-127..=127` becomes `-64..=63`).
    ///
    /// Giving only one of `quant_min`/`quant_max` is ignored as PyTorch does (defaults apply).
    ///
    /// # Errors
    /// [`QuantError::InvalidQuantRange`] for a bad custom range; [`QuantError::InvalidScale`]
    /// for an `eps` that is not finite and > 0.
    ///
    /// # Examples
    /// ```
    /// use qnumeric::{QDType, QScheme, QSpec};
    /// let s = QSpec::from_pytorch(QDType::QUInt8, QScheme::PerTensorAffine, true, None, None, None)?;
    /// assert_eq!((s.range.quant_min(), s.range.quant_max()), (0, 127));
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn from_pytorch(
        dtype: QDType,
        scheme: QScheme,
        reduce_range: bool,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        eps: Option<f32>,
    ) -> Result<Self> {
        let eps = eps.unwrap_or(f32::EPSILON);
        check_scale("QSpec::from_pytorch", eps)?;
        let (range, customized_range) = match (quant_min, quant_max) {
            (Some(lo), Some(hi)) => {
                let r = QRange::new(dtype, lo, hi).map_err(|e| match e {
                    QuantError::InvalidQuantRange {
                        quant_min,
                        quant_max,
                        dtype,
                        reason,
                        ..
                    } => QuantError::InvalidQuantRange {
                        op: "QSpec::from_pytorch",
                        quant_min,
                        quant_max,
                        dtype,
                        reason,
                    },
                    other => other,
                })?;
                (
                    if reduce_range {
                        r.with_reduce_range()?
                    } else {
                        r
                    },
                    true,
                )
            }
            _ => {
                let r = dtype.full_range();
                let halve = reduce_range && dtype.bits() == 8;
                (if halve { r.with_reduce_range()? } else { r }, false)
            }
        };
        Ok(QSpec {
            scheme,
            range,
            eps,
            customized_range,
        })
    }

    /// PyTorch's `_calculate_qparams` for one (min, max) pair, bit for bit (see
    /// `docs/quantization-model.md`).
    ///
    /// ```text
    /// affine:    scale = max((max(max,0) - min(min,0)) / (qmax - qmin), eps)
    ///            zp    = clamp(qmin - rne(min(min,0) / scale), qmin, qmax)
    /// symmetric: scale = max(max(-min(min,0), max(max,0)) / ((qmax - qmin) / 2), eps)
    ///            zp    = 0, or 128 / floor((qmin+qmax)/2) for quint8, 32768 for quint16
    /// float qp:  scale = (max - min) / (qmax - qmin), replaced by 1 if <= eps
    ///            zp    = -min / scale (a float)
    /// ```
    ///
    /// # Errors
    /// [`QuantError::NonFinite`] when min or max is not finite (PyTorch would return a NaN or
    /// infinite scale); [`QuantError::InvalidParameter`] when `min > max`.
    pub fn qparams_from_min_max(&self, min: f32, max: f32) -> Result<RawQParams> {
        check_min_max("QSpec::qparams_from_min_max", min, max)?;
        let qmin = self.range.quant_min();
        let qmax = self.range.quant_max();
        let min_neg = min.min(0.0);
        let max_pos = max.max(0.0);
        match self.scheme {
            QScheme::PerTensorSymmetric | QScheme::PerChannelSymmetric => {
                let amax = (-min_neg).max(max_pos);
                let denom = ((qmax - qmin) as f64 / 2.0) as f32;
                let scale = (amax / denom).max(self.eps);
                let dtype = self.range.dtype();
                let zp = match dtype {
                    QDType::QUInt8 | QDType::QUInt4 if self.customized_range => {
                        (qmin + qmax).div_euclid(2)
                    }
                    QDType::QUInt8 | QDType::QUInt4 => (dtype.max() + 1) / 2,
                    QDType::QUInt16 => 32768,
                    _ => 0,
                };
                Ok(RawQParams {
                    scale,
                    zero_point: zp as f32,
                })
            }
            QScheme::PerChannelAffineFloatQParams => {
                let mut scale = (max - min) / ((qmax - qmin) as f32);
                if scale <= self.eps {
                    scale = 1.0;
                }
                Ok(RawQParams {
                    scale,
                    zero_point: -min / scale,
                })
            }
            QScheme::PerTensorAffine | QScheme::PerChannelAffine => {
                let scale = ((max_pos - min_neg) / ((qmax - qmin) as f32)).max(self.eps);
                let zp = (qmin as f64 - ((min_neg / scale).round_ties_even() as f64))
                    .clamp(qmin as f64, qmax as f64);
                Ok(RawQParams {
                    scale,
                    zero_point: zp as f32,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: QScheme, d: QDType) -> QSpec {
        QSpec::new(s, d)
    }

    #[test]
    fn spec_examples() {
        // pytorch.md §10
        let a = spec(QScheme::PerTensorAffine, QDType::QUInt8);
        let p = a.qparams_from_min_max(0.0, 0.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (f32::EPSILON, 0.0));
        let p = a.qparams_from_min_max(3.0, 3.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (0.011_764_706, 0.0));
        let s = spec(QScheme::PerTensorSymmetric, QDType::QInt8);
        let p = s.qparams_from_min_max(-3.0, -3.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (0.023_529_412, 0.0));
        let s = spec(QScheme::PerTensorSymmetric, QDType::QUInt8);
        let p = s.qparams_from_min_max(-1.0, 2.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (0.015_686_275, 128.0));
        let mut c = s;
        c.range = QRange::new(QDType::QUInt8, 0, 127).unwrap();
        c.customized_range = true;
        let p = c.qparams_from_min_max(-1.0, 2.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (0.031_496_063, 63.0));
        let a8 = spec(QScheme::PerTensorAffine, QDType::QInt8);
        let p = a8.qparams_from_min_max(-1.0, 2.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (0.011_764_706, -43.0));
        let f = spec(QScheme::PerChannelAffineFloatQParams, QDType::QUInt8);
        let p = f.qparams_from_min_max(1.0, 1.0).unwrap();
        assert_eq!((p.scale, p.zero_point), (1.0, -1.0));
    }

    #[test]
    fn rejects_bad_ranges() {
        let a = spec(QScheme::PerTensorAffine, QDType::QUInt8);
        assert!(matches!(
            a.qparams_from_min_max(f32::NAN, 1.0),
            Err(QuantError::NonFinite { .. })
        ));
        assert!(matches!(
            a.qparams_from_min_max(2.0, 1.0),
            Err(QuantError::InvalidParameter { .. })
        ));
    }
}
