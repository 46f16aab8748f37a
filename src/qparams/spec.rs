//! [`QSpec`]: how parameters are chosen from a range (PyTorch's `_calculate_qparams`).

use super::{QScheme, check_min_max};
use crate::dtype::{QDType, QRange};
use crate::error::{QuantError, Result};

/// How quantization parameters are chosen from a range: scheme, quantization range, eps floor.
///
/// Built from PyTorch's observer arguments with a builder that applies PyTorch's rules
/// (`calculate_qmin_qmax`, `validate_qmin_qmax`):
///
/// | PyTorch argument | builder | default |
/// |---|---|---|
/// | `qscheme`, `dtype` | [`QSpec::new`] | — |
/// | `reduce_range=True` | [`QSpec::with_reduce_range`] | off |
/// | `quant_min`, `quant_max` (both given) | [`QSpec::with_quant_range`] | the dtype's full range |
/// | `eps` | [`QSpec::with_eps`] | `f32::EPSILON` |
///
/// The builders may come in any order; the range is always PyTorch's for the arguments given:
/// - without a custom range: the dtype's full range, halved by `reduce_range` for 8-bit
///   dtypes only (`0..=127`, `-64..=63`);
/// - with a custom range: it must contain 0, have `quant_min < quant_max` and lie in the
///   dtype; `reduce_range` then halves both ends with floor division (PyTorch's quirk:
///   `-127..=127` becomes `-64..=63`), and the halved range must still be valid.
///
/// Whether the range was given explicitly ([`QSpec::is_range_customized`]) decides PyTorch's
/// symmetric `quint8` zero point: 128 for the default range, `floor((qmin + qmax) / 2)` for a
/// custom one (even `0..=255` given explicitly).
///
/// Every `QSpec` is valid: `eps` is finite, `> 0`, with a finite reciprocal (so no scale
/// chosen by [`QSpec::qparams_from_min_max`] is below a usable value). With the `serde`
/// feature a spec serializes as its PyTorch arguments and deserializes through the builders
/// (an invalid one is refused).
///
/// # Examples
/// ```
/// use qnumeric::{QDType, QScheme, QSpec};
///
/// // PyTorch's x86 activation default: quint8 with reduce_range.
/// let s = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8).with_reduce_range()?;
/// assert_eq!((s.range().quant_min(), s.range().quant_max()), (0, 127));
///
/// // A custom range, halved by reduce_range with floor division.
/// let c = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8)
///     .with_quant_range(-127, 127)?
///     .with_reduce_range()?;
/// assert_eq!((c.range().quant_min(), c.range().quant_max()), (-64, 63));
/// assert!(c.is_range_customized());
///
/// // An eps of 0 would give a zero scale: refused.
/// assert!(QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8).with_eps(0.0).is_err());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(into = "SpecArgs", try_from = "SpecArgs")
)]
pub struct QSpec {
    scheme: QScheme,
    dtype: QDType,
    reduce_range: bool,
    /// `(quant_min, quant_max)` as given, before `reduce_range`.
    custom: Option<(i64, i64)>,
    eps: f32,
    /// The range the arguments give (derived from the fields above).
    range: QRange,
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

/// Checks an `eps`: finite, `> 0`, with a finite `f32` reciprocal (the kernels multiply by
/// `1 / scale`, and a scale can be as small as `eps`).
fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps > 0.0 && (1.0 / eps).is_finite() {
        Ok(())
    } else {
        Err(QuantError::InvalidScale {
            op,
            scale: eps as f64,
        })
    }
}

/// PyTorch's `calculate_qmin_qmax` (with `validate_qmin_qmax`) as a validated range.
fn pytorch_range(
    op: &'static str,
    dtype: QDType,
    custom: Option<(i64, i64)>,
    reduce_range: bool,
) -> Result<QRange> {
    let relabel = |e: QuantError| e.with_op(op);
    match custom {
        Some((lo, hi)) => {
            let r = QRange::new(dtype, lo, hi).map_err(relabel)?;
            if reduce_range {
                // Floor division of both ends; the halved range is checked again (`0..=1`
                // would become the empty `0..=0`).
                QRange::new(dtype, lo.div_euclid(2), hi.div_euclid(2)).map_err(relabel)
            } else {
                Ok(r)
            }
        }
        None if reduce_range && dtype.bits() == 8 => {
            QRange::new(dtype, dtype.min().div_euclid(2), dtype.max().div_euclid(2))
                .map_err(relabel)
        }
        None => Ok(dtype.full_range()),
    }
}

impl QSpec {
    /// PyTorch's defaults for a scheme and dtype: the dtype's full range, no `reduce_range`,
    /// `eps = f32::EPSILON`.
    #[must_use]
    pub fn new(scheme: QScheme, dtype: QDType) -> Self {
        QSpec {
            scheme,
            dtype,
            reduce_range: false,
            custom: None,
            eps: f32::EPSILON,
            range: dtype.full_range(),
        }
    }

    /// The spec with the fields changed, validated.
    fn rebuild(
        self,
        op: &'static str,
        reduce_range: bool,
        custom: Option<(i64, i64)>,
    ) -> Result<Self> {
        let range = pytorch_range(op, self.dtype, custom, reduce_range)?;
        Ok(QSpec {
            reduce_range,
            custom,
            range,
            ..self
        })
    }

    /// PyTorch's `reduce_range=True`: the range is halved (see the type's docs).
    ///
    /// # Errors
    /// [`QuantError::InvalidQuantRange`] when a custom range halves into an invalid one
    /// (`0..=1` becomes `0..=0`).
    pub fn with_reduce_range(self) -> Result<Self> {
        self.rebuild("QSpec::with_reduce_range", true, self.custom)
    }

    /// PyTorch's `quant_min`/`quant_max` (both given): a custom range inside the dtype,
    /// containing 0, `quant_min < quant_max` (halved if `reduce_range` is set).
    ///
    /// PyTorch skips the dtype check for `quint8` (it accepts `0..=300` or `-4..=251`); such a
    /// range cannot hold `quint8` values and is refused here.
    ///
    /// # Errors
    /// [`QuantError::InvalidQuantRange`] for a range PyTorch refuses or the dtype cannot hold.
    pub fn with_quant_range(self, quant_min: i64, quant_max: i64) -> Result<Self> {
        self.rebuild(
            "QSpec::with_quant_range",
            self.reduce_range,
            Some((quant_min, quant_max)),
        )
    }

    /// PyTorch's `eps`: the smallest scale [`QSpec::qparams_from_min_max`] returns.
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`] unless `eps` is finite, `> 0`, and its reciprocal is finite
    /// in `f32` (`eps >= ~2.9e-39`).
    pub fn with_eps(self, eps: f32) -> Result<Self> {
        check_eps("QSpec::with_eps", eps)?;
        Ok(QSpec { eps, ..self })
    }

    /// A spec over an already validated range (affine, not customized when `range` is the
    /// dtype's full range). For observers that are handed a range rather than PyTorch's
    /// arguments.
    pub(crate) fn from_range(scheme: QScheme, range: QRange) -> Self {
        QSpec {
            scheme,
            dtype: range.dtype(),
            reduce_range: false,
            custom: (!range.is_full()).then(|| (range.quant_min(), range.quant_max())),
            eps: f32::EPSILON,
            range,
        }
    }

    /// The scheme.
    #[must_use]
    pub const fn scheme(&self) -> QScheme {
        self.scheme
    }

    /// The dtype.
    #[must_use]
    pub const fn dtype(&self) -> QDType {
        self.dtype
    }

    /// The quantization range (after any `reduce_range`).
    #[must_use]
    pub const fn range(&self) -> QRange {
        self.range
    }

    /// The smallest scale chosen (PyTorch's `eps`).
    #[must_use]
    pub const fn eps(&self) -> f32 {
        self.eps
    }

    /// Whether `reduce_range` was asked for.
    #[must_use]
    pub const fn reduce_range(&self) -> bool {
        self.reduce_range
    }

    /// Whether the range was given explicitly ([`QSpec::with_quant_range`]).
    #[must_use]
    pub const fn is_range_customized(&self) -> bool {
        self.custom.is_some()
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
    /// infinite scale); [`QuantError::InvalidParameter`] when `min > max`;
    /// [`QuantError::RangeOverflow`] when the scale overflows `f32` (finite bounds whose
    /// difference does not fit, e.g. `-3e38..=3e38` under an affine scheme; PyTorch returns an
    /// infinite scale).
    pub fn qparams_from_min_max(&self, min: f32, max: f32) -> Result<RawQParams> {
        const OP: &str = "QSpec::qparams_from_min_max";
        check_min_max(OP, min, max)?;
        let overflow = || QuantError::RangeOverflow {
            op: OP,
            min: min as f64,
            max: max as f64,
        };
        let qmin = self.range.quant_min();
        let qmax = self.range.quant_max();
        let min_neg = min.min(0.0);
        let max_pos = max.max(0.0);
        let raw = match self.scheme {
            QScheme::PerTensorSymmetric | QScheme::PerChannelSymmetric => {
                let amax = (-min_neg).max(max_pos);
                let denom = ((qmax - qmin) as f64 / 2.0) as f32;
                let scale = (amax / denom).max(self.eps);
                let zp = match self.dtype {
                    QDType::QUInt8 | QDType::QUInt4 if self.is_range_customized() => {
                        (qmin + qmax).div_euclid(2)
                    }
                    QDType::QUInt8 | QDType::QUInt4 => (self.dtype.max() + 1) / 2,
                    QDType::QUInt16 => 32768,
                    _ => 0,
                };
                RawQParams {
                    scale,
                    zero_point: zp as f32,
                }
            }
            QScheme::PerChannelAffineFloatQParams => {
                let mut scale = (max - min) / ((qmax - qmin) as f32);
                if scale <= self.eps {
                    scale = 1.0;
                }
                if !scale.is_finite() {
                    return Err(overflow());
                }
                RawQParams {
                    scale,
                    zero_point: -min / scale,
                }
            }
            QScheme::PerTensorAffine | QScheme::PerChannelAffine => {
                let scale = ((max_pos - min_neg) / ((qmax - qmin) as f32)).max(self.eps);
                if !scale.is_finite() {
                    return Err(overflow());
                }
                let zp = (qmin as f64 - ((min_neg / scale).round_ties_even() as f64))
                    .clamp(qmin as f64, qmax as f64);
                RawQParams {
                    scale,
                    zero_point: zp as f32,
                }
            }
        };
        if raw.scale.is_finite() {
            Ok(raw)
        } else {
            Err(overflow())
        }
    }
}

/// The serialized form of a [`QSpec`]: PyTorch's observer arguments.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct SpecArgs {
    qscheme: QScheme,
    dtype: QDType,
    reduce_range: bool,
    quant_min: Option<i64>,
    quant_max: Option<i64>,
    eps: f32,
}

#[cfg(feature = "serde")]
impl From<QSpec> for SpecArgs {
    fn from(s: QSpec) -> Self {
        SpecArgs {
            qscheme: s.scheme,
            dtype: s.dtype,
            reduce_range: s.reduce_range,
            quant_min: s.custom.map(|c| c.0),
            quant_max: s.custom.map(|c| c.1),
            eps: s.eps,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<SpecArgs> for QSpec {
    type Error = QuantError;

    /// Rebuilds through the builders, so a deserialized spec obeys the same rules.
    fn try_from(a: SpecArgs) -> Result<Self> {
        let mut s = QSpec::new(a.qscheme, a.dtype);
        match (a.quant_min, a.quant_max) {
            (Some(lo), Some(hi)) => s = s.with_quant_range(lo, hi)?,
            (None, None) => {}
            _ => {
                return Err(QuantError::Format {
                    op: "QSpec::deserialize",
                    detail: "quant_min and quant_max must be given together".into(),
                });
            }
        }
        if a.reduce_range {
            s = s.with_reduce_range()?;
        }
        s.with_eps(a.eps)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(s: QScheme, d: QDType) -> QSpec {
        QSpec::new(s, d)
    }

    fn qp(s: &QSpec, min: f32, max: f32) -> (f32, f32) {
        let p = s.qparams_from_min_max(min, max).unwrap();
        (p.scale, p.zero_point)
    }

    // The expected values below are pytorch.md §10 (PyTorch's `_calculate_qparams` on these
    // ranges); the hand computation is shown beside each.

    #[test]
    fn all_zero_range_gives_eps() {
        // scale = max(0 / 255, eps) = eps
        let a = spec(QScheme::PerTensorAffine, QDType::QUInt8);
        assert_eq!(qp(&a, 0.0, 0.0), (f32::EPSILON, 0.0));
    }

    #[test]
    fn affine_quint8_positive_range() {
        // [3, 3] extended to [0, 3]: scale = 3 / 255 = 0.011764706, zp = 0 - rne(0 / s) = 0
        let a = spec(QScheme::PerTensorAffine, QDType::QUInt8);
        assert_eq!(qp(&a, 3.0, 3.0), (0.011_764_706, 0.0));
    }

    #[test]
    fn affine_qint8_two_sided_range() {
        // scale = 3 / 255 = 0.011764706, zp = -128 - rne(-1 / s) = -128 + 85 = -43
        let a8 = spec(QScheme::PerTensorAffine, QDType::QInt8);
        assert_eq!(qp(&a8, -1.0, 2.0), (0.011_764_706, -43.0));
    }

    #[test]
    fn symmetric_qint8_negative_range() {
        // amax = 3, scale = 3 / 127.5 = 0.023529412, zp 0
        let s = spec(QScheme::PerTensorSymmetric, QDType::QInt8);
        assert_eq!(qp(&s, -3.0, -3.0), (0.023_529_412, 0.0));
    }

    #[test]
    fn symmetric_quint8_default_range_zero_point_is_128() {
        // amax = 2, scale = 2 / 127.5 = 0.015686275, zp 128
        let s = spec(QScheme::PerTensorSymmetric, QDType::QUInt8);
        assert_eq!(qp(&s, -1.0, 2.0), (0.015_686_275, 128.0));
    }

    #[test]
    fn symmetric_quint8_custom_range_zero_point_is_the_midpoint() {
        // 0..=127: scale = 2 / 63.5 = 0.031496063, zp = floor(127 / 2) = 63
        let c = spec(QScheme::PerTensorSymmetric, QDType::QUInt8)
            .with_quant_range(0, 127)
            .unwrap();
        assert_eq!(qp(&c, -1.0, 2.0), (0.031_496_063, 63.0));
        // 0..=255 given explicitly is customized too: floor(255 / 2) = 127
        let full = spec(QScheme::PerTensorSymmetric, QDType::QUInt8)
            .with_quant_range(0, 255)
            .unwrap();
        assert_eq!(qp(&full, -1.0, 2.0).1, 127.0);
    }

    #[test]
    fn float_qparams_degenerate_range_uses_scale_one() {
        // (1 - 1) / 255 = 0 <= eps → scale 1, zp = -1 / 1
        let f = spec(QScheme::PerChannelAffineFloatQParams, QDType::QUInt8);
        assert_eq!(qp(&f, 1.0, 1.0), (1.0, -1.0));
    }

    #[test]
    fn non_finite_bounds_are_refused() {
        let a = spec(QScheme::PerTensorAffine, QDType::QUInt8);
        assert!(matches!(
            a.qparams_from_min_max(f32::NAN, 1.0),
            Err(QuantError::NonFinite { .. })
        ));
    }

    #[test]
    fn min_above_max_is_refused() {
        let a = spec(QScheme::PerTensorAffine, QDType::QUInt8);
        assert!(matches!(
            a.qparams_from_min_max(2.0, 1.0),
            Err(QuantError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn overflowing_affine_range_is_range_overflow() {
        // 3e38 - (-3e38) overflows f32; PyTorch returns an infinite scale.
        for scheme in [
            QScheme::PerTensorAffine,
            QScheme::PerChannelAffineFloatQParams,
        ] {
            let a = spec(scheme, QDType::QUInt8);
            assert!(matches!(
                a.qparams_from_min_max(-3e38, 3e38),
                Err(QuantError::RangeOverflow { .. })
            ));
        }
        // Symmetric: 3e38 / 127.5 is finite.
        let s = spec(QScheme::PerTensorSymmetric, QDType::QInt8);
        assert!(s.qparams_from_min_max(-3e38, 3e38).is_ok());
        // Symmetric over a two-level range: f32::MAX / 0.5 overflows.
        let tiny = spec(QScheme::PerTensorSymmetric, QDType::QInt8)
            .with_quant_range(-1, 0)
            .unwrap();
        assert!(matches!(
            tiny.qparams_from_min_max(-f32::MAX, 0.0),
            Err(QuantError::RangeOverflow { .. })
        ));
    }

    #[test]
    fn reduce_range_halves_8_bit_defaults_only() {
        let r = |d| {
            let s = QSpec::new(QScheme::PerTensorAffine, d)
                .with_reduce_range()
                .unwrap()
                .range();
            (s.quant_min(), s.quant_max())
        };
        // PyTorch's calculate_qmin_qmax: (0, 127), (-64, 63); other dtypes unchanged.
        assert_eq!(r(QDType::QUInt8), (0, 127));
        assert_eq!(r(QDType::QInt8), (-64, 63));
        assert_eq!(r(QDType::QInt32), (i32::MIN as i64, i32::MAX as i64));
        assert_eq!(r(QDType::QUInt16), (0, 65535));
        assert_eq!(r(QDType::QUInt4), (0, 15));
    }

    #[test]
    fn reduce_range_floors_a_custom_range_in_any_builder_order() {
        // -127 // 2 = -64, 127 // 2 = 63 (Python floor division)
        let a = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8)
            .with_quant_range(-127, 127)
            .unwrap()
            .with_reduce_range()
            .unwrap();
        let b = QSpec::new(QScheme::PerTensorSymmetric, QDType::QInt8)
            .with_reduce_range()
            .unwrap()
            .with_quant_range(-127, 127)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!((a.range().quant_min(), a.range().quant_max()), (-64, 63));
        assert!(a.is_range_customized() && a.reduce_range());
    }

    #[test]
    fn reduce_range_refuses_a_custom_range_that_halves_to_nothing() {
        // 0..=1 halves to 0..=0 (PyTorch would divide by qmax - qmin = 0).
        let s = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8)
            .with_quant_range(0, 1)
            .unwrap();
        assert!(matches!(
            s.with_reduce_range(),
            Err(QuantError::InvalidQuantRange {
                op: "QSpec::with_reduce_range",
                ..
            })
        ));
    }

    #[test]
    fn custom_range_must_contain_zero_and_fit_the_dtype() {
        let s = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
        for (lo, hi) in [(10, 5), (1, 127), (0, 300), (-4, 251), (3, 3)] {
            assert!(
                matches!(
                    s.with_quant_range(lo, hi),
                    Err(QuantError::InvalidQuantRange {
                        op: "QSpec::with_quant_range",
                        ..
                    })
                ),
                "{lo}..={hi}"
            );
        }
    }

    #[test]
    fn eps_must_be_positive_finite_with_finite_reciprocal() {
        let s = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
        for eps in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-45, 2.0e-39] {
            assert!(
                matches!(s.with_eps(eps), Err(QuantError::InvalidScale { .. })),
                "{eps:e}"
            );
        }
        // The smallest normal f32 has a finite reciprocal (2^126).
        assert_eq!(
            s.with_eps(f32::MIN_POSITIVE).unwrap().eps(),
            f32::MIN_POSITIVE
        );
    }
}
