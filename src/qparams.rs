//! Quantization schemes and parameters.
//!
//! [`QParams`] (per tensor) and [`PerChannelQParams`] are validated values: once built, the
//! kernels trust them. [`QuantSpec`] describes *how* parameters are chosen (scheme, range, eps)
//! and [`QuantSpec::qparams_from_min_max`] is PyTorch's `_calculate_qparams`, bit for bit.

use crate::dtype::{QDType, QuantRange};
use crate::error::{QuantError, Result};

/// How values map to the integer grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum QScheme {
    /// One scale and zero point for the tensor, range `[min, max]` (extended to contain 0).
    PerTensorAffine,
    /// One scale for the tensor, range `[-amax, amax]`, fixed zero point.
    PerTensorSymmetric,
    /// One scale and zero point per channel.
    PerChannelAffine,
    /// One scale per channel, fixed zero point.
    PerChannelSymmetric,
    /// One scale and a *float* zero point per channel (PyTorch's embedding scheme).
    PerChannelAffineFloatQParams,
}

impl QScheme {
    /// Whether the scheme has one set of parameters per channel.
    #[must_use]
    pub const fn is_per_channel(self) -> bool {
        matches!(
            self,
            QScheme::PerChannelAffine
                | QScheme::PerChannelSymmetric
                | QScheme::PerChannelAffineFloatQParams
        )
    }

    /// Whether the scheme is symmetric.
    #[must_use]
    pub const fn is_symmetric(self) -> bool {
        matches!(
            self,
            QScheme::PerTensorSymmetric | QScheme::PerChannelSymmetric
        )
    }

    /// PyTorch's name (`per_tensor_affine`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            QScheme::PerTensorAffine => "per_tensor_affine",
            QScheme::PerTensorSymmetric => "per_tensor_symmetric",
            QScheme::PerChannelAffine => "per_channel_affine",
            QScheme::PerChannelSymmetric => "per_channel_symmetric",
            QScheme::PerChannelAffineFloatQParams => "per_channel_affine_float_qparams",
        }
    }

    /// Parses PyTorch's names.
    ///
    /// # Errors
    /// [`QuantError::Format`] for an unknown name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name.trim_start_matches("torch.") {
            "per_tensor_affine" => QScheme::PerTensorAffine,
            "per_tensor_symmetric" => QScheme::PerTensorSymmetric,
            "per_channel_affine" => QScheme::PerChannelAffine,
            "per_channel_symmetric" => QScheme::PerChannelSymmetric,
            "per_channel_affine_float_qparams" => QScheme::PerChannelAffineFloatQParams,
            _ => {
                return Err(QuantError::Format {
                    op: "QScheme::from_name",
                    detail: format!("unknown qscheme `{name}`"),
                })
            }
        })
    }
}

pub(crate) fn check_scale(op: &'static str, scale: f32) -> Result<()> {
    if scale.is_finite() && scale > 0.0 {
        Ok(())
    } else {
        Err(QuantError::InvalidScale {
            op,
            scale: scale as f64,
        })
    }
}

fn check_zero_point(op: &'static str, zp: i64, min: i64, max: i64) -> Result<()> {
    if zp < min || zp > max {
        Err(QuantError::ZeroPointOutOfRange {
            op,
            zero_point: zp,
            min,
            max,
        })
    } else {
        Ok(())
    }
}

/// Per-tensor quantization parameters: `q = clamp(rne(x * (1/scale)) + zero_point)`.
///
/// Invariants: `scale` is finite and `> 0`; `zero_point` lies in the range.
///
/// # Examples
/// ```
/// use qnumeric::{QDType, QParams};
/// let qp = QParams::new(0.1, 128, QDType::QUInt8)?;
/// assert_eq!(qp.scale(), 0.1);
/// assert!(QParams::new(0.0, 0, QDType::QUInt8).is_err());
/// assert!(QParams::new(0.1, 300, QDType::QUInt8).is_err());
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct QParams {
    scale: f32,
    zero_point: i32,
    range: QuantRange,
}

impl QParams {
    /// Parameters over the dtype's full range.
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`] for a zero, negative or non-finite scale;
    /// [`QuantError::ZeroPointOutOfRange`] for a zero point outside the dtype.
    pub fn new(scale: f32, zero_point: i64, dtype: QDType) -> Result<Self> {
        Self::with_range(scale, zero_point, dtype.full_range())
    }

    /// Parameters over a custom range; the zero point must lie in the range. Quantization
    /// clamps to the dtype's storage range (as PyTorch's `quantize_per_tensor`), fake
    /// quantization to the range.
    ///
    /// # Errors
    /// As [`QParams::new`], with the zero point checked against the range.
    pub fn with_range(scale: f32, zero_point: i64, range: QuantRange) -> Result<Self> {
        const OP: &str = "QParams::new";
        check_scale(OP, scale)?;
        check_zero_point(OP, zero_point, range.quant_min(), range.quant_max())?;
        Ok(QParams {
            scale,
            zero_point: zero_point as i32,
            range,
        })
    }

    /// The scale.
    #[must_use]
    pub const fn scale(&self) -> f32 {
        self.scale
    }

    /// The zero point.
    #[must_use]
    pub const fn zero_point(&self) -> i32 {
        self.zero_point
    }

    /// The quantization range.
    #[must_use]
    pub const fn range(&self) -> QuantRange {
        self.range
    }

    /// The dtype.
    #[must_use]
    pub const fn dtype(&self) -> QDType {
        self.range.dtype()
    }

    /// The float interval `[(qmin - zp)·scale, (qmax - zp)·scale]` that the range represents.
    #[must_use]
    pub fn representable(&self) -> (f32, f32) {
        (
            (self.range.quant_min() - self.zero_point as i64) as f32 * self.scale,
            (self.range.quant_max() - self.zero_point as i64) as f32 * self.scale,
        )
    }
}

/// Per-channel zero points: integers (affine/symmetric) or floats (float-qparams).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum ZeroPoints {
    /// Integer zero points, added after rounding.
    Int(Vec<i32>),
    /// Float zero points (`per_channel_affine_float_qparams`), added before rounding.
    Float(Vec<f32>),
}

impl ZeroPoints {
    /// Number of channels.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            ZeroPoints::Int(v) => v.len(),
            ZeroPoints::Float(v) => v.len(),
        }
    }

    /// Whether there are no channels.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The zero point of channel `c` as a float.
    ///
    /// # Panics
    /// If `c >= self.len()`.
    #[must_use]
    pub fn get_f32(&self, c: usize) -> f32 {
        match self {
            ZeroPoints::Int(v) => v[c] as f32,
            ZeroPoints::Float(v) => v[c],
        }
    }
}

/// Per-channel quantization parameters along one axis.
///
/// Invariants: as many scales as zero points, at least one channel, every scale finite and
/// `> 0`, every integer zero point inside the range, every float zero point finite.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PerChannelQParams {
    scales: Vec<f32>,
    /// `1 / scale` per channel (as the kernels use it), computed once at construction.
    #[cfg_attr(feature = "serde", serde(skip))]
    inv_scales: Vec<f32>,
    zero_points: ZeroPoints,
    axis: isize,
    range: QuantRange,
}

impl PerChannelQParams {
    /// Integer zero points over the dtype's full range. `axis` may be negative (counted from the
    /// end); it is checked against the array at use.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] when the lists differ in length or are empty;
    /// [`QuantError::InvalidScale`]; [`QuantError::ZeroPointOutOfRange`].
    ///
    /// # Examples
    /// ```
    /// use qnumeric::{PerChannelQParams, QDType};
    /// let qp = PerChannelQParams::new(vec![0.1, 0.2], vec![0, 3], 0, QDType::QInt8)?;
    /// assert_eq!(qp.channels(), 2);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    pub fn new(
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        axis: isize,
        dtype: QDType,
    ) -> Result<Self> {
        Self::with_range(
            scales,
            ZeroPoints::Int(zero_points),
            axis,
            dtype.full_range(),
        )
    }

    /// General constructor: any [`ZeroPoints`] and a custom range.
    ///
    /// # Errors
    /// As [`PerChannelQParams::new`]; a non-finite float zero point is
    /// [`QuantError::NonFinite`].
    pub fn with_range(
        scales: Vec<f32>,
        zero_points: ZeroPoints,
        axis: isize,
        range: QuantRange,
    ) -> Result<Self> {
        const OP: &str = "PerChannelQParams::new";
        if scales.is_empty() {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "scales",
                expected: 1,
                got: 0,
            });
        }
        if zero_points.len() != scales.len() {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "zero_points",
                expected: scales.len(),
                got: zero_points.len(),
            });
        }
        for &s in &scales {
            check_scale(OP, s)?;
        }
        match &zero_points {
            ZeroPoints::Int(z) => {
                for &zp in z {
                    check_zero_point(OP, zp as i64, range.quant_min(), range.quant_max())?;
                }
            }
            ZeroPoints::Float(z) => {
                for &zp in z {
                    if !zp.is_finite() {
                        return Err(QuantError::NonFinite {
                            op: OP,
                            what: "float zero point",
                            value: zp as f64,
                        });
                    }
                }
            }
        }
        Ok(PerChannelQParams {
            inv_scales: scales.iter().map(|&s| 1.0 / s).collect(),
            scales,
            zero_points,
            axis,
            range,
        })
    }

    /// Scales, one per channel.
    #[must_use]
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// `1 / scale` per channel, in `f32` (what the kernels multiply by).
    #[must_use]
    pub fn inv_scales(&self) -> &[f32] {
        &self.inv_scales
    }

    /// Zero points, one per channel.
    #[must_use]
    pub fn zero_points(&self) -> &ZeroPoints {
        &self.zero_points
    }

    /// The channel axis as given (may be negative).
    #[must_use]
    pub const fn axis(&self) -> isize {
        self.axis
    }

    /// Number of channels.
    #[must_use]
    pub fn channels(&self) -> usize {
        self.scales.len()
    }

    /// The quantization range.
    #[must_use]
    pub const fn range(&self) -> QuantRange {
        self.range
    }

    /// The dtype.
    #[must_use]
    pub const fn dtype(&self) -> QDType {
        self.range.dtype()
    }

    /// The per-tensor parameters of channel `c` (integer zero points only).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for float zero points;
    /// [`QuantError::LengthMismatch`] when `c` is not a channel.
    pub fn channel(&self, c: usize) -> Result<QParams> {
        if c >= self.channels() {
            return Err(QuantError::LengthMismatch {
                op: "PerChannelQParams::channel",
                what: "channel index",
                expected: self.channels(),
                got: c,
            });
        }
        match &self.zero_points {
            ZeroPoints::Int(z) => QParams::with_range(self.scales[c], z[c] as i64, self.range),
            ZeroPoints::Float(_) => Err(QuantError::UnsupportedConfig {
                op: "PerChannelQParams::channel",
                reason: "float zero points have no per-tensor equivalent",
            }),
        }
    }

    /// Resolves the axis against an array of rank `ndim` and checks the channel count.
    pub(crate) fn resolve_axis(&self, op: &'static str, shape: &[usize]) -> Result<usize> {
        let axis = resolve_axis(op, self.axis, shape.len())?;
        if shape[axis] != self.channels() {
            return Err(QuantError::LengthMismatch {
                op,
                what: "scales (one per channel)",
                expected: shape[axis],
                got: self.channels(),
            });
        }
        Ok(axis)
    }
}

/// Resolves a possibly negative axis against a rank.
pub(crate) fn resolve_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    let n = ndim as isize;
    let a = if axis < 0 { axis + n } else { axis };
    if a < 0 || a >= n {
        Err(QuantError::InvalidAxis { op, axis, ndim })
    } else {
        Ok(a as usize)
    }
}

/// How quantization parameters are chosen from a range: scheme, quantization range, eps floor.
///
/// `customized_range` records whether the caller gave `quant_min`/`quant_max` explicitly: it
/// decides PyTorch's symmetric `quint8` zero point (128 for the default range,
/// `floor((qmin + qmax) / 2)` for a custom one, even `0..=255` given explicitly).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct QuantSpec {
    /// The scheme.
    pub scheme: QScheme,
    /// The quantization range (after any `reduce_range`).
    pub range: QuantRange,
    /// Lower bound of the scale (PyTorch default: `f32::EPSILON`).
    pub eps: f32,
    /// Whether the range was given explicitly (see above).
    pub customized_range: bool,
}

/// One channel's parameters as chosen by [`QuantSpec::qparams_from_min_max`]: the zero point is
/// an integer value except for [`QScheme::PerChannelAffineFloatQParams`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChosenQParams {
    /// The scale.
    pub scale: f32,
    /// The zero point (integer-valued unless float qparams).
    pub zero_point: f32,
}

impl QuantSpec {
    /// PyTorch's defaults for a dtype and scheme: the full range (or halved with
    /// `reduce_range`), `eps = f32::EPSILON`, range not customized.
    #[must_use]
    pub fn new(scheme: QScheme, dtype: QDType) -> Self {
        QuantSpec {
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
    /// use qnumeric::{QDType, QScheme, QuantSpec};
    /// let s = QuantSpec::from_pytorch(QDType::QUInt8, QScheme::PerTensorAffine, true, None, None, None)?;
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
        check_scale("QuantSpec::from_pytorch", eps)?;
        let (range, customized_range) = match (quant_min, quant_max) {
            (Some(lo), Some(hi)) => {
                let r = QuantRange::new(dtype, lo, hi).map_err(|e| match e {
                    QuantError::InvalidQuantRange {
                        quant_min,
                        quant_max,
                        dtype,
                        reason,
                        ..
                    } => QuantError::InvalidQuantRange {
                        op: "QuantSpec::from_pytorch",
                        quant_min,
                        quant_max,
                        dtype,
                        reason,
                    },
                    other => other,
                })?;
                (
                    if reduce_range {
                        r.with_reduce_range()
                    } else {
                        r
                    },
                    true,
                )
            }
            _ => {
                let r = dtype.full_range();
                let halve = reduce_range && dtype.bits() == 8;
                (if halve { r.with_reduce_range() } else { r }, false)
            }
        };
        Ok(QuantSpec {
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
    pub fn qparams_from_min_max(&self, min: f32, max: f32) -> Result<ChosenQParams> {
        const OP: &str = "QuantSpec::qparams_from_min_max";
        for (what, v) in [("min", min), ("max", max)] {
            if !v.is_finite() {
                return Err(QuantError::NonFinite {
                    op: OP,
                    what,
                    value: v as f64,
                });
            }
        }
        if min > max {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "min",
                value: min as f64,
                reason: "min must not exceed max",
            });
        }
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
                Ok(ChosenQParams {
                    scale,
                    zero_point: zp as f32,
                })
            }
            QScheme::PerChannelAffineFloatQParams => {
                let mut scale = (max - min) / ((qmax - qmin) as f32);
                if scale <= self.eps {
                    scale = 1.0;
                }
                Ok(ChosenQParams {
                    scale,
                    zero_point: -min / scale,
                })
            }
            QScheme::PerTensorAffine | QScheme::PerChannelAffine => {
                let scale = ((max_pos - min_neg) / ((qmax - qmin) as f32)).max(self.eps);
                let zp = (qmin as f64 - ((min_neg / scale).round_ties_even() as f64))
                    .clamp(qmin as f64, qmax as f64);
                Ok(ChosenQParams {
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

    fn spec(s: QScheme, d: QDType) -> QuantSpec {
        QuantSpec::new(s, d)
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
        c.range = QuantRange::new(QDType::QUInt8, 0, 127).unwrap();
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

    #[test]
    fn axis_resolution() {
        assert_eq!(resolve_axis("t", -1, 3).unwrap(), 2);
        assert!(resolve_axis("t", 3, 3).is_err());
        assert!(resolve_axis("t", -4, 3).is_err());
    }
}
