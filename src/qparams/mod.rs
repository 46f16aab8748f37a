//! Quantization schemes and parameters.
//!
//! [`QParams`] (per tensor) and [`PerChannelQParams`] are validated values: once built, the
//! kernels trust them. [`QSpec`] describes *how* parameters are chosen (scheme, range, eps)
//! and [`QSpec::qparams_from_min_max`] is PyTorch's `_calculate_qparams`, bit for bit.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`QScheme`], [`QParams`], [`PerChannelQParams`], [`ZeroPoints`], [`AnyQParams`] |
//! | `spec.rs` | [`QSpec`], [`RawQParams`]: PyTorch's `_calculate_qparams` |
//! | `dynamic.rs` | [`choose_dynamic_qparams`]: fbgemm's per-call choice for dynamic quantization |

mod dynamic;
mod spec;

pub use dynamic::choose_dynamic_qparams;
pub(crate) use dynamic::choose_dynamic_qparams_levels;
pub use spec::{QSpec, RawQParams};

use crate::dtype::{QDType, QRange};
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
                });
            }
        })
    }
}

/// A scale must be finite, `> 0`, and have a finite `f32` reciprocal (the kernels multiply by
/// `1 / scale`; below about `2.9e-39` it is infinite and `0.0 * inf` would be NaN).
pub(crate) fn check_scale(op: &'static str, scale: f32) -> Result<()> {
    if scale.is_finite() && scale > 0.0 && (1.0f32 / scale).is_finite() {
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
/// Invariants: `scale` is finite and `> 0` with a finite reciprocal `1 / scale`; `zero_point`
/// lies in the range. Deserialization (feature `serde`) goes through [`QParams::with_range`].
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "QParamsRepr"))]
pub struct QParams {
    scale: f32,
    zero_point: i32,
    range: QRange,
}

impl QParams {
    /// Parameters over the dtype's full range.
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`] for a zero, negative or non-finite scale, or one whose
    /// `f32` reciprocal is infinite (below about `2.9e-39`);
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
    pub fn with_range(scale: f32, zero_point: i64, range: QRange) -> Result<Self> {
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
    pub const fn range(&self) -> QRange {
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
///
/// Deserialization (feature `serde`) refuses non-finite float zero points, which no
/// [`PerChannelQParams`] accepts.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "ZeroPointsRepr"))]
pub enum ZeroPoints {
    /// Integer zero points, added after rounding.
    Int(Vec<i32>),
    /// Float zero points (`per_channel_affine_float_qparams`), added before rounding.
    Float(Vec<f32>),
}

impl ZeroPoints {
    /// The integer zero points, if these are.
    #[must_use]
    pub fn as_int(&self) -> Option<&[i32]> {
        match self {
            ZeroPoints::Int(z) => Some(z),
            ZeroPoints::Float(_) => None,
        }
    }

    /// The float zero points, if these are.
    #[must_use]
    pub fn as_float(&self) -> Option<&[f32]> {
        match self {
            ZeroPoints::Int(_) => None,
            ZeroPoints::Float(z) => Some(z),
        }
    }

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

    /// The zero point of channel `c` as a float, `None` when `c >= self.len()`.
    #[must_use]
    pub fn get(&self, c: usize) -> Option<f32> {
        match self {
            ZeroPoints::Int(v) => v.get(c).map(|&z| z as f32),
            ZeroPoints::Float(v) => v.get(c).copied(),
        }
    }
}

/// Per-channel quantization parameters along one axis.
///
/// Invariants: as many scales as zero points, at least one channel, every scale valid as for
/// [`QParams`], every integer zero point inside the range, every float zero point finite.
/// Deserialization (feature `serde`) goes through [`PerChannelQParams::with_range`] (the
/// reciprocals are recomputed, never read).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "PerChannelQParamsRepr"))]
pub struct PerChannelQParams {
    scales: Vec<f32>,
    /// `1 / scale` per channel (as the kernels use it), computed once at construction.
    #[cfg_attr(feature = "serde", serde(skip))]
    inv_scales: Vec<f32>,
    zero_points: ZeroPoints,
    axis: isize,
    range: QRange,
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
        range: QRange,
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
            ZeroPoints::Float(z) => check_float_zero_points(OP, z)?,
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
    pub const fn range(&self) -> QRange {
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

/// Every float zero point must be finite.
fn check_float_zero_points(op: &'static str, z: &[f32]) -> Result<()> {
    match z.iter().find(|zp| !zp.is_finite()) {
        Some(&zp) => Err(QuantError::NonFinite {
            op,
            what: "float zero point",
            value: zp as f64,
        }),
        None => Ok(()),
    }
}

/// Checks a (min, max) range before parameters are chosen from it: both finite, `min <= max`.
pub(crate) fn check_min_max(op: &'static str, min: f32, max: f32) -> Result<()> {
    for (what, v) in [("min", min), ("max", max)] {
        if !v.is_finite() {
            return Err(QuantError::NonFinite {
                op,
                what,
                value: v as f64,
            });
        }
    }
    if min > max {
        return Err(QuantError::InvalidParameter {
            op,
            what: "min",
            value: min as f64,
            reason: "min must not exceed max",
        });
    }
    Ok(())
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
/// The parameters of a quantized tensor: per tensor or per channel.
///
/// Deserialization (feature `serde`) validates each variant through its own type's
/// constructor.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AnyQParams {
    /// One scale and zero point.
    PerTensor(QParams),
    /// One set per channel along an axis.
    PerChannel(PerChannelQParams),
}

impl From<QParams> for AnyQParams {
    fn from(p: QParams) -> Self {
        AnyQParams::PerTensor(p)
    }
}

impl From<PerChannelQParams> for AnyQParams {
    fn from(p: PerChannelQParams) -> Self {
        AnyQParams::PerChannel(p)
    }
}

impl AnyQParams {
    /// The per-tensor parameters, if these are.
    #[must_use]
    pub fn as_per_tensor(&self) -> Option<&QParams> {
        match self {
            AnyQParams::PerTensor(p) => Some(p),
            AnyQParams::PerChannel(_) => None,
        }
    }

    /// The per-channel parameters, if these are.
    #[must_use]
    pub fn as_per_channel(&self) -> Option<&PerChannelQParams> {
        match self {
            AnyQParams::PerTensor(_) => None,
            AnyQParams::PerChannel(p) => Some(p),
        }
    }

    /// Channels: 1 for per-tensor parameters.
    #[must_use]
    pub fn channels(&self) -> usize {
        match self {
            AnyQParams::PerTensor(_) => 1,
            AnyQParams::PerChannel(p) => p.channels(),
        }
    }

    /// The channel axis (`None` per tensor).
    #[must_use]
    pub fn axis(&self) -> Option<isize> {
        self.as_per_channel().map(PerChannelQParams::axis)
    }

    /// The scale of channel `c` (per tensor: the scale, whatever `c`); `None` past the last
    /// channel.
    ///
    /// # Examples
    /// ```
    /// use qnumeric::{AnyQParams, PerChannelQParams, QDType, QParams};
    /// let t: AnyQParams = QParams::new(0.5, 3, QDType::QUInt8)?.into();
    /// assert_eq!((t.scale(7), t.zero_point(7)), (Some(0.5), Some(3.0)));
    /// let c: AnyQParams = PerChannelQParams::new(vec![0.1, 0.2], vec![0, 0], 0, QDType::QInt8)?.into();
    /// assert_eq!((c.scale(1), c.scale(2)), (Some(0.2), None));
    /// assert_eq!(c.scales(), vec![0.1, 0.2]);
    /// # Ok::<(), qnumeric::QuantError>(())
    /// ```
    #[must_use]
    pub fn scale(&self, c: usize) -> Option<f32> {
        match self {
            AnyQParams::PerTensor(p) => Some(p.scale()),
            AnyQParams::PerChannel(p) => p.scales().get(c).copied(),
        }
    }

    /// The zero point of channel `c` as `f32` (integer zero points exactly); `None` past the
    /// last channel.
    #[must_use]
    pub fn zero_point(&self, c: usize) -> Option<f32> {
        match self {
            AnyQParams::PerTensor(p) => Some(p.zero_point() as f32),
            AnyQParams::PerChannel(p) => p.zero_points().get(c),
        }
    }

    /// Every channel's scale (one for per-tensor parameters).
    #[must_use]
    pub fn scales(&self) -> Vec<f32> {
        match self {
            AnyQParams::PerTensor(p) => vec![p.scale()],
            AnyQParams::PerChannel(p) => p.scales().to_vec(),
        }
    }

    /// Every channel's integer zero point (`None` for float zero points).
    #[must_use]
    pub fn int_zero_points(&self) -> Option<Vec<i64>> {
        match self {
            AnyQParams::PerTensor(p) => Some(vec![i64::from(p.zero_point())]),
            AnyQParams::PerChannel(p) => p
                .zero_points()
                .as_int()
                .map(|z| z.iter().map(|&v| i64::from(v)).collect()),
        }
    }
}

/// The serialized form of [`QParams`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct QParamsRepr {
    scale: f32,
    zero_point: i64,
    range: QRange,
}

#[cfg(feature = "serde")]
impl TryFrom<QParamsRepr> for QParams {
    type Error = QuantError;

    fn try_from(r: QParamsRepr) -> Result<Self> {
        QParams::with_range(r.scale, r.zero_point, r.range)
    }
}

/// The serialized form of [`ZeroPoints`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
enum ZeroPointsRepr {
    Int(Vec<i32>),
    Float(Vec<f32>),
}

#[cfg(feature = "serde")]
impl TryFrom<ZeroPointsRepr> for ZeroPoints {
    type Error = QuantError;

    fn try_from(r: ZeroPointsRepr) -> Result<Self> {
        Ok(match r {
            ZeroPointsRepr::Int(z) => ZeroPoints::Int(z),
            ZeroPointsRepr::Float(z) => {
                check_float_zero_points("ZeroPoints::deserialize", &z)?;
                ZeroPoints::Float(z)
            }
        })
    }
}

/// The serialized form of [`PerChannelQParams`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct PerChannelQParamsRepr {
    scales: Vec<f32>,
    zero_points: ZeroPoints,
    axis: isize,
    range: QRange,
}

#[cfg(feature = "serde")]
impl TryFrom<PerChannelQParamsRepr> for PerChannelQParams {
    type Error = QuantError;

    fn try_from(r: PerChannelQParamsRepr) -> Result<Self> {
        PerChannelQParams::with_range(r.scales, r.zero_points, r.axis, r.range)
    }
}

/// Parameters within a tolerance, for a backend's unit tests (`approx::assert_relative_eq!`):
/// the scale within the tolerance, the zero point and the range equal.
///
/// # Examples
/// ```
/// use approx::assert_relative_eq;
/// use qnumeric::{QDType, QParams};
/// let ours = QParams::new(0.1, 3, QDType::QUInt8)?;
/// let theirs = QParams::new(0.1 + 1e-9, 3, QDType::QUInt8)?;
/// assert_relative_eq!(ours, theirs, max_relative = 1e-6);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
impl approx::AbsDiffEq for QParams {
    type Epsilon = f32;

    fn default_epsilon() -> f32 {
        f32::EPSILON
    }

    fn abs_diff_eq(&self, other: &Self, epsilon: f32) -> bool {
        self.zero_point() == other.zero_point()
            && self.range() == other.range()
            && self.scale().abs_diff_eq(&other.scale(), epsilon)
    }
}

impl approx::RelativeEq for QParams {
    fn default_max_relative() -> f32 {
        f32::EPSILON
    }

    fn relative_eq(&self, other: &Self, epsilon: f32, max_relative: f32) -> bool {
        self.zero_point() == other.zero_point()
            && self.range() == other.range()
            && self
                .scale()
                .relative_eq(&other.scale(), epsilon, max_relative)
    }
}

impl approx::UlpsEq for QParams {
    fn default_max_ulps() -> u32 {
        4
    }

    fn ulps_eq(&self, other: &Self, epsilon: f32, max_ulps: u32) -> bool {
        self.zero_point() == other.zero_point()
            && self.range() == other.range()
            && self.scale().ulps_eq(&other.scale(), epsilon, max_ulps)
    }
}

/// Per-channel parameters within a tolerance: every scale within it, the zero points, axis and
/// range equal.
impl approx::AbsDiffEq for PerChannelQParams {
    type Epsilon = f32;

    fn default_epsilon() -> f32 {
        f32::EPSILON
    }

    fn abs_diff_eq(&self, other: &Self, epsilon: f32) -> bool {
        self.same_layout(other)
            && self
                .scales()
                .iter()
                .zip(other.scales())
                .all(|(a, b)| a.abs_diff_eq(b, epsilon))
    }
}

impl approx::RelativeEq for PerChannelQParams {
    fn default_max_relative() -> f32 {
        f32::EPSILON
    }

    fn relative_eq(&self, other: &Self, epsilon: f32, max_relative: f32) -> bool {
        self.same_layout(other)
            && self
                .scales()
                .iter()
                .zip(other.scales())
                .all(|(a, b)| a.relative_eq(b, epsilon, max_relative))
    }
}

impl PerChannelQParams {
    /// Same channels, zero points, axis and range.
    fn same_layout(&self, other: &Self) -> bool {
        self.channels() == other.channels()
            && self.zero_points() == other.zero_points()
            && self.axis() == other.axis()
            && self.range() == other.range()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_resolution() {
        assert_eq!(resolve_axis("t", -1, 3).unwrap(), 2);
        assert!(resolve_axis("t", 3, 3).is_err());
        assert!(resolve_axis("t", -4, 3).is_err());
    }

    #[cfg(feature = "serde")]
    mod serde_validation {
        use super::*;

        fn refused<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str, what: &str) {
            let e = serde_json::from_str::<T>(json).expect_err(json);
            // A value beyond f32 may be refused by the JSON reader itself (with
            // `float_roundtrip`) before the constructor sees it: a refusal either way.
            let e = e.to_string();
            assert!(
                e.contains(what) || e.contains("number out of range"),
                "{json}: {e}"
            );
        }

        const RANGE: &str = r#"{"dtype":"QUInt8","quant_min":0,"quant_max":255}"#;

        #[test]
        fn qparams_refuse_what_the_constructor_refuses() {
            let qp = |scale: &str, zp: &str, range: &str| {
                format!(r#"{{"scale":{scale},"zero_point":{zp},"range":{range}}}"#)
            };
            refused::<QParams>(&qp("0.0", "0", RANGE), "invalid scale 0");
            refused::<QParams>(&qp("-1.0", "0", RANGE), "invalid scale -1");
            refused::<QParams>(&qp("1e-45", "0", RANGE), "finite reciprocal");
            refused::<QParams>(&qp("1e39", "0", RANGE), "invalid scale inf");
            refused::<QParams>(&qp("0.1", "300", RANGE), "zero point 300 outside");
            refused::<QParams>(&qp("0.1", "4294967296", RANGE), "zero point 4294967296");
            let bad_range = r#"{"dtype":"QUInt8","quant_min":5,"quant_max":-3}"#;
            refused::<QParams>(&qp("0.1", "0", bad_range), "invalid quantization range");
            let p = QParams::new(0.1, 128, QDType::QUInt8).unwrap();
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<QParams>(&json).unwrap(), p);
        }

        #[test]
        fn zero_points_refuse_non_finite_floats() {
            refused::<ZeroPoints>(r#"{"Float":[0.5,1e39]}"#, "non-finite value inf");
            let z: ZeroPoints = serde_json::from_str(r#"{"Int":[-3,2147483647]}"#).unwrap();
            assert_eq!(z, ZeroPoints::Int(vec![-3, i32::MAX]));
        }

        #[test]
        fn per_channel_qparams_refuse_what_the_constructor_refuses() {
            let pc = |scales: &str, zps: &str| {
                format!(r#"{{"scales":{scales},"zero_points":{zps},"axis":0,"range":{RANGE}}}"#)
            };
            refused::<PerChannelQParams>(&pc("[]", r#"{"Int":[]}"#), "scales has length 0");
            refused::<PerChannelQParams>(&pc("[0.1]", r#"{"Int":[1,2]}"#), "zero_points");
            refused::<PerChannelQParams>(&pc("[0.1, 0.0]", r#"{"Int":[1,2]}"#), "scale 0");
            refused::<PerChannelQParams>(&pc("[0.1, 1e-40]", r#"{"Int":[1,2]}"#), "reciprocal");
            refused::<PerChannelQParams>(&pc("[0.1]", r#"{"Int":[256]}"#), "zero point 256");
            refused::<PerChannelQParams>(&pc("[0.1]", r#"{"Float":[1e39]}"#), "non-finite");
            // The reciprocals are recomputed, whatever the input says.
            let json = format!(
                r#"{{"scales":[0.5,0.25],"inv_scales":[7.0,7.0],"zero_points":{{"Int":[1,2]}},"axis":-1,"range":{RANGE}}}"#
            );
            let p: PerChannelQParams = serde_json::from_str(&json).unwrap();
            assert_eq!(p.inv_scales(), &[2.0, 4.0]);
            let back: PerChannelQParams =
                serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(back, p);
        }

        #[test]
        fn any_qparams_validate_their_variant() {
            refused::<AnyQParams>(
                &format!(r#"{{"PerTensor":{{"scale":0.0,"zero_point":0,"range":{RANGE}}}}}"#),
                "invalid scale 0",
            );
            refused::<AnyQParams>(
                &format!(
                    r#"{{"PerChannel":{{"scales":[0.1],"zero_points":{{"Int":[-1]}},"axis":0,"range":{RANGE}}}}}"#
                ),
                "zero point -1",
            );
            let a = AnyQParams::from(QParams::new(0.5, -3, QDType::QInt8).unwrap());
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<AnyQParams>(&json).unwrap(), a);
        }
    }
}
