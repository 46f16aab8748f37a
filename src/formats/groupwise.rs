//! Group-wise affine integers: each row (last axis) cut into groups of `group_size` sharing a
//! scale and a zero point, as torchao's `quant_primitives` (the int4 weight-only, GPTQ and AWQ
//! layouts) compute them, bit for bit; and tinygemm's float-zero-point variant.
//!
//! ```text
//! min_neg = min(min(group), 0),  max_pos = max(max(group), 0)                    (f32)
//! Symmetric:               scale = max(−min_neg, max_pos) / ((qmax − qmin) / 2),  zp = int((qmax + qmin + 1) / 2)
//! SymmetricNoClippingErr:  scale = min_neg / qmin if larger than max_pos / qmax, else the latter; zp as above
//! Asymmetric:              scale = (max_pos − min_neg) / (qmax − qmin),  zp = clamp(qmin − round(min_neg / scale), qmin, qmax)
//! scale = max(scale, eps);   q = clamp(round(x · (1 / scale)) + zp, qmin, qmax);   value = (q − zp) · scale
//! ```
//! `round` is half to even. With `Symmetric`, `+amax` rounds to `qmax + 1` and is clamped
//! (int4: `scale = amax / 7.5`): torchao's choice, reproduced; `SymmetricNoClippingErr` does
//! not clip.
//!
//! ```
//! use qnumeric::formats::Dequantize as _;
//! use qnumeric::formats::groupwise::{GroupMapping, GroupwiseSpec};
//! let spec = GroupwiseSpec::int4(4, GroupMapping::Asymmetric)?;
//! let t = spec.quantize_rows(&[0.0, 1.0, 2.0, 3.0], 4)?;
//! assert_eq!(t.scales, vec![0.2]);
//! assert_eq!(t.dequantize(), vec![0.0, 1.0, 2.0, 3.0]);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::fmt;

use half::bf16;

use super::{Dequantize, ElementFormat, check_finite, check_rows};
use crate::error::{QuantError, Result};

/// How a group's parameters are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GroupMapping {
    /// `scale = amax / ((qmax − qmin) / 2)`, fixed zero point.
    Symmetric,
    /// The group's range over `qmax − qmin` steps, zero point from its minimum.
    Asymmetric,
    /// The larger of `min / qmin` and `max / qmax`, fixed zero point (no clipping).
    SymmetricNoClippingErr,
}

/// A group-wise affine integer format.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupwiseSpec {
    /// The smallest code.
    pub quant_min: i32,
    /// The largest code.
    pub quant_max: i32,
    /// How scales and zero points are chosen.
    pub mapping: GroupMapping,
    /// Elements per group.
    pub group_size: usize,
    /// The smallest scale (torchao's default: the smallest normal f32, `2^-126`).
    pub eps: f32,
}

/// A tensor in a group-wise format.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupwiseTensor {
    /// The format.
    pub spec: GroupwiseSpec,
    /// Elements per row.
    pub row_len: usize,
    /// One scale per group, row-major (`[rows, row_len / group_size]`).
    pub scales: Vec<f32>,
    /// One zero point per group.
    pub zero_points: Vec<i32>,
    /// One code per element.
    pub codes: Vec<i32>,
}

impl GroupwiseSpec {
    /// A spec.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] unless `quant_min < quant_max` and the range holds at
    /// most 2^16 codes, for a zero group or an `eps` that is
    /// negative or not finite.
    pub fn new(
        quant_min: i32,
        quant_max: i32,
        mapping: GroupMapping,
        group_size: usize,
        eps: f32,
    ) -> Result<Self> {
        const OP: &str = "GroupwiseSpec::new";
        if quant_min >= quant_max || i64::from(quant_max) - i64::from(quant_min) > 65535 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "quant_max - quant_min",
                value: f64::from(quant_max) - f64::from(quant_min),
                reason: "quant_min must be below quant_max, at most 2^16 codes",
            });
        }
        if group_size == 0 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "group_size",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "eps",
                value: f64::from(eps),
                reason: "must be finite and >= 0",
            });
        }
        Ok(GroupwiseSpec {
            quant_min,
            quant_max,
            mapping,
            group_size,
            eps,
        })
    }

    /// The fields are public (and deserializable): a spec not built by
    /// [`GroupwiseSpec::new`] is checked as `new` checks it, its error given `op`.
    fn check(&self, op: &'static str) -> Result<()> {
        let s = self;
        GroupwiseSpec::new(s.quant_min, s.quant_max, s.mapping, s.group_size, s.eps)
            .map(|_| ())
            .map_err(|e| e.with_op(op))
    }

    /// int4 (`-8..=7`) with torchao's default eps.
    ///
    /// # Errors
    /// As [`GroupwiseSpec::new`].
    pub fn int4(group_size: usize, mapping: GroupMapping) -> Result<Self> {
        Self::new(-8, 7, mapping, group_size, f32::MIN_POSITIVE)
    }

    /// uint4 (`0..=15`) with torchao's default eps.
    ///
    /// # Errors
    /// As [`GroupwiseSpec::new`].
    pub fn uint4(group_size: usize, mapping: GroupMapping) -> Result<Self> {
        Self::new(0, 15, mapping, group_size, f32::MIN_POSITIVE)
    }

    /// int8 (`-128..=127`) with torchao's default eps.
    ///
    /// # Errors
    /// As [`GroupwiseSpec::new`].
    pub fn int8(group_size: usize, mapping: GroupMapping) -> Result<Self> {
        Self::new(-128, 127, mapping, group_size, f32::MIN_POSITIVE)
    }

    /// The scale and zero point of a group (`choose_qparams_affine`).
    #[must_use]
    #[inline(always)]
    pub fn qparams(&self, group: &[f32]) -> (f32, i32) {
        let (s, zp, _) = self.qparams_finite(group);
        (s, zp)
    }

    /// [`GroupwiseSpec::qparams`], and whether the group's values were finite (found in the
    /// same pass as its extremes).
    #[inline(always)]
    fn qparams_finite(&self, group: &[f32]) -> (f32, i32, bool) {
        let (qmin, qmax) = (self.quant_min as f32, self.quant_max as f32);
        // `(min(0, min x), max(0, max x))`.
        let (lo, hi, finite) = super::min_max_finite_from(group, 0.0, 0.0);
        let mid = ((i64::from(self.quant_max) + i64::from(self.quant_min) + 1) as f64 / 2.0) as i32;
        match self.mapping {
            GroupMapping::Symmetric => {
                let s = (-lo).max(hi) / ((qmax - qmin) / 2.0);
                (s.max(self.eps), mid, finite)
            }
            GroupMapping::SymmetricNoClippingErr => {
                let smin = lo / qmin;
                let smax = hi / qmax;
                let s = if smin > smax { smin } else { smax };
                (s.max(self.eps), mid, finite)
            }
            GroupMapping::Asymmetric => {
                let s = ((hi - lo) / (qmax - qmin)).max(self.eps);
                let zp = (qmin - (lo / s).round_ties_even()).clamp(qmin, qmax);
                (s, zp as i32, finite)
            }
        }
    }

    #[inline(always)]
    fn code(&self, v: f32, inv: f32, zp: i32) -> i32 {
        let q = (v * inv).round_ties_even() + zp as f32;
        // `clamp` then `as i32` (finite values), as one conversion that vectorises.
        crate::simd::trunc_clamped_i32(q, self.quant_min as f32, self.quant_max as f32)
    }

    /// Quantizes rows of `row_len` (a multiple of the group size).
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] for a row length that is not a positive multiple of the
    /// group or does not divide `x.len()`; [`QuantError::NanInput`] /
    /// [`QuantError::InfiniteInput`] (an integer format holds neither).
    pub fn quantize_rows(&self, x: &[f32], row_len: usize) -> Result<GroupwiseTensor> {
        // Sized as the input dictates (zeroed pages from the allocator, not a clearing pass);
        // the checks are the `_into` call's.
        let groups = x.len().checked_div(self.group_size).unwrap_or(0);
        let mut out = GroupwiseTensor {
            spec: *self,
            row_len,
            scales: vec![0.0; groups],
            zero_points: vec![0; groups],
            codes: vec![0; x.len()],
        };
        self.quantize_rows_into(x, row_len, &mut out)?;
        Ok(out)
    }

    /// [`GroupwiseSpec::quantize_rows`] into an existing tensor.
    ///
    /// The buffers of `out` are reused (resized, every entry overwritten): once they have
    /// the capacity, quantizing allocates nothing. On a length or spec error `out` is left
    /// as it was. NaN and inf are found by the encoding pass itself (with each group's
    /// extremes), not by a read-only scan before it, as the kernels find theirs: after such
    /// an error `out` holds unspecified values. Check the input first where it must stay
    /// untouched.
    ///
    /// # Errors
    /// As [`GroupwiseSpec::quantize_rows`].
    pub fn quantize_rows_into(
        &self,
        x: &[f32],
        row_len: usize,
        out: &mut GroupwiseTensor,
    ) -> Result<()> {
        const OP: &str = "GroupwiseSpec::quantize";
        self.check(OP)?;
        check_rows(OP, x.len(), row_len, self.group_size, x.len())?;
        let groups = x.len() / self.group_size;
        out.scales.resize(groups, 0.0);
        out.zero_points.resize(groups, 0);
        out.codes.resize(x.len(), 0);
        // Pieces of whole groups on the rayon pool (feature `rayon`), the same values.
        let g = self.group_size;
        let (scales, zeros, codes) = (&mut out.scales, &mut out.zero_points, &mut out.codes);
        let finite =
            crate::parallel::blocks4(x, g, (scales, zeros, 1), (codes, g), |x, s, z, c| {
                groups_into(self, x, s, z, c)
            });
        (out.spec, out.row_len) = (*self, row_len);
        if !finite {
            // The first NaN or infinity's index (only on this path).
            check_finite(OP, x)?;
        }
        Ok(())
    }
}

/// The groups of [`GroupwiseSpec::quantize_rows`] (lengths checked), compiled for the CPU's
/// vector width: whether every value was finite.
#[inline(always)]
fn groups_into_body(
    spec: &GroupwiseSpec,
    x: &[f32],
    scales: &mut [f32],
    zero_points: &mut [i32],
    codes: &mut [i32],
) -> bool {
    let mut all_finite = true;
    for (((g, c), s), z) in x
        .chunks_exact(spec.group_size)
        .zip(codes.chunks_exact_mut(spec.group_size))
        .zip(scales.iter_mut())
        .zip(zero_points.iter_mut())
    {
        let (scale, zp, finite) = spec.qparams_finite(g);
        all_finite &= finite;
        let inv = 1.0 / scale;
        for (c, &v) in c.iter_mut().zip(g) {
            *c = spec.code(v, inv, zp);
        }
        (*s, *z) = (scale, zp);
    }
    all_finite
}

crate::simd::dispatched512!(fn groups_into[](spec: &GroupwiseSpec, x: &[f32], scales: &mut [f32], zero_points: &mut [i32], codes: &mut [i32]) -> bool = groups_into_body);

impl Dequantize for GroupwiseTensor {
    fn element_count(&self) -> usize {
        self.codes.len()
    }

    fn write_values(&self, out: &mut [f32]) {
        let g = self.spec.group_size;
        group_values(g, &self.codes, &self.scales, &self.zero_points, out);
    }
}

/// `(q − zp)·s` group by group, compiled for the CPU's vector width.
#[inline(always)]
fn group_values_body(group: usize, codes: &[i32], scales: &[f32], zps: &[i32], out: &mut [f32]) {
    let g = group.max(1);
    for (((o, c), &s), &zp) in out.chunks_mut(g).zip(codes.chunks(g)).zip(scales).zip(zps) {
        for (o, &q) in o.iter_mut().zip(c) {
            *o = (q as f32 - zp as f32) * s;
        }
    }
}

crate::simd::dispatched512!(fn group_values[](group: usize, codes: &[i32], scales: &[f32], zps: &[i32], out: &mut [f32]) = group_values_body);

impl fmt::Display for GroupwiseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = match (self.quant_min, self.quant_max) {
            (-8, 7) => "int4".to_string(),
            (0, 15) => "uint4".to_string(),
            (-128, 127) => "int8".to_string(),
            (lo, hi) => format!("int[{lo},{hi}]"),
        };
        let m = match self.mapping {
            GroupMapping::Asymmetric => "",
            GroupMapping::Symmetric => "-sym",
            GroupMapping::SymmetricNoClippingErr => "-symnc",
        };
        write!(f, "{base}{m}-g{}", self.group_size)
    }
}

impl ElementFormat for GroupwiseSpec {
    /// Code bits plus a bf16 scale per group (and a bf16 zero point for `Asymmetric`), as
    /// torchao stores them.
    fn bits_per_element(&self) -> f64 {
        let levels = f64::from(self.quant_max) - f64::from(self.quant_min) + 1.0;
        let params = if self.mapping == GroupMapping::Asymmetric {
            32.0
        } else {
            16.0
        };
        levels.log2().ceil() + params / self.group_size as f64
    }

    fn block_len(&self) -> usize {
        self.group_size
    }

    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        check_rows(
            "GroupwiseSpec::fake_quantize_rows",
            x.len(),
            row_len,
            self.group_size,
            out.len(),
        )?;
        let t = self.quantize_rows(x, row_len)?;
        t.write_values(out);
        Ok(())
    }

    /// The gradient passes where `round(x / scale) + zp` is within the range (PyTorch's fake
    /// quantize mask).
    fn ste_mask_rows(&self, x: &[f32], row_len: usize, mask: &mut [bool]) -> Result<()> {
        const OP: &str = "GroupwiseSpec::ste_mask_rows";
        self.check(OP)?;
        check_rows(OP, x.len(), row_len, self.group_size, mask.len())?;
        check_finite(OP, x)?;
        for (g, m) in x
            .chunks_exact(self.group_size)
            .zip(mask.chunks_exact_mut(self.group_size))
        {
            let (s, zp) = self.qparams(g);
            let inv = 1.0 / s;
            for (m, &v) in m.iter_mut().zip(g) {
                let q = (v * inv).round_ties_even() + zp as f32;
                *m = q >= self.quant_min as f32 && q <= self.quant_max as f32;
            }
        }
        Ok(())
    }
}

/// The dtype tinygemm's parameters are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum QParamsDtype {
    /// `f32`.
    F32,
    /// `bf16` (tinygemm's own).
    BF16,
}

impl QParamsDtype {
    fn round(self, v: f32) -> f32 {
        match self {
            QParamsDtype::F32 => v,
            QParamsDtype::BF16 => bf16::from_f32(v).to_f32(),
        }
    }
}

/// tinygemm's uint4 groups with a float zero point (torchao's `Int4WeightOnlyConfig`
/// default layout):
///
/// ```text
/// scale = round_dtype(max((max − min) / 15, eps)),  zero = round_dtype(min + scale_f32 · 8)
/// min_val = zero − scale · 8   (each operation rounded to the dtype)
/// q = clamp(round((x − min_val) / scale), 0, 15);   value = f32(q − 8) · scale + zero
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TinygemmSpec {
    /// Elements per group.
    pub group_size: usize,
    /// The smallest scale.
    pub eps: f32,
    /// The parameters' dtype.
    pub qparams_dtype: QParamsDtype,
}

/// A tensor in tinygemm's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct TinygemmTensor {
    /// The format.
    pub spec: TinygemmSpec,
    /// One scale per group.
    pub scales: Vec<f32>,
    /// One float zero point per group.
    pub zero_points: Vec<f32>,
    /// One code (`0..=15`) per element.
    pub codes: Vec<u8>,
}

impl TinygemmSpec {
    /// A spec.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a zero group or a bad `eps`.
    pub fn new(group_size: usize, eps: f32, qparams_dtype: QParamsDtype) -> Result<Self> {
        GroupwiseSpec::new(0, 15, GroupMapping::Asymmetric, group_size, eps)?;
        Ok(TinygemmSpec {
            group_size,
            eps,
            qparams_dtype,
        })
    }

    /// Quantizes rows of `row_len` (a multiple of the group size).
    ///
    /// # Errors
    /// As [`GroupwiseSpec::quantize_rows`].
    pub fn quantize_rows(&self, x: &[f32], row_len: usize) -> Result<TinygemmTensor> {
        // Sized as the input dictates (zeroed pages from the allocator, not a clearing pass);
        // the checks are the `_into` call's.
        let mut out = TinygemmTensor {
            spec: *self,
            scales: Vec::new(),
            zero_points: Vec::new(),
            codes: vec![0; x.len()],
        };
        self.quantize_rows_into(x, row_len, &mut out)?;
        Ok(out)
    }

    /// [`TinygemmSpec::quantize_rows`] into an existing tensor.
    ///
    /// The buffers of `out` are reused (resized, every entry overwritten): once they have
    /// the capacity, quantizing allocates nothing. On a length or spec error `out` is left
    /// as it was; after a NaN or inf error it holds unspecified values (as
    /// [`GroupwiseSpec::quantize_rows_into`]).
    ///
    /// # Errors
    /// As [`TinygemmSpec::quantize_rows`].
    pub fn quantize_rows_into(
        &self,
        x: &[f32],
        row_len: usize,
        out: &mut TinygemmTensor,
    ) -> Result<()> {
        const OP: &str = "TinygemmSpec::quantize";
        TinygemmSpec::new(self.group_size, self.eps, self.qparams_dtype)
            .map_err(|e| e.with_op(OP))?;
        check_rows(OP, x.len(), row_len, self.group_size, x.len())?;
        let d = self.qparams_dtype;
        let TinygemmTensor {
            spec,
            scales,
            zero_points,
            codes,
        } = out;
        *spec = *self;
        let groups = x.len() / self.group_size;
        scales.resize(groups, 0.0);
        zero_points.resize(groups, 0.0);
        codes.resize(x.len(), 0);
        // Pieces of whole groups on the rayon pool (feature `rayon`), the same values.
        let g = self.group_size;
        let finite =
            crate::parallel::blocks4(x, g, (scales, zero_points, 1), (codes, g), |x, s, z, c| {
                tinygemm_groups(self, d, x, s, z, c)
            });
        if !finite {
            // The first NaN or infinity's index (only on this path).
            check_finite(OP, x)?;
        }
        Ok(())
    }
}

/// The groups of [`TinygemmSpec::quantize_rows_into`] (lengths checked): whether every value
/// was finite. Compiled for the CPU's vector width (the per-value `rintf` call and the scalar min/max
/// folds ran at 0.07 of the copy's speed). The extremes are found by compare-selects in 16
/// lanes: which zero a lane keeps on a tie of `−0` and `+0` may differ from a fold's, and
/// with `eps > 0` no parameter depends on it (`lo + 8·max(·, eps)` is positive or the sum of
/// a zero and a positive value).
#[inline(always)]
fn tinygemm_groups_body(
    spec: &TinygemmSpec,
    d: QParamsDtype,
    x: &[f32],
    scales: &mut [f32],
    zero_points: &mut [f32],
    codes: &mut [u8],
) -> bool {
    let mut all_finite = true;
    for (((g, c), sc), zp) in x
        .chunks_exact(spec.group_size)
        .zip(codes.chunks_exact_mut(spec.group_size))
        .zip(scales.iter_mut())
        .zip(zero_points.iter_mut())
    {
        let (lo, hi, finite) = super::min_max_finite_from(g, f32::INFINITY, f32::NEG_INFINITY);
        all_finite &= finite;
        let s32 = ((hi - lo) / 15.0).max(spec.eps);
        let zero = d.round(lo + s32 * 8.0);
        let s = d.round(s32);
        let min_val = d.round(zero - d.round(s * 8.0));
        for (c, &v) in c.iter_mut().zip(g) {
            // `clamp(0, 15)` then `as u8`; NaN (a refused input's) as 0.
            *c = crate::simd::trunc_clamped(((v - min_val) / s).round_ties_even(), 15.0) as u8;
        }
        (*sc, *zp) = (s, zero);
    }
    all_finite
}

crate::simd::dispatched512!(fn tinygemm_groups[](spec: &TinygemmSpec, d: QParamsDtype, x: &[f32], scales: &mut [f32], zero_points: &mut [f32], codes: &mut [u8]) -> bool = tinygemm_groups_body);

impl Dequantize for TinygemmTensor {
    fn element_count(&self) -> usize {
        self.codes.len()
    }

    fn write_values(&self, out: &mut [f32]) {
        let g = self.spec.group_size.max(1);
        for (((o, c), &s), &z) in out
            .chunks_mut(g)
            .zip(self.codes.chunks(g))
            .zip(&self.scales)
            .zip(&self.zero_points)
        {
            for (o, &q) in o.iter_mut().zip(c) {
                *o = (f32::from(q) - 8.0) * s + z;
            }
        }
    }
}

impl fmt::Display for TinygemmSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "int4-tinygemm-g{}", self.group_size)
    }
}

impl ElementFormat for TinygemmSpec {
    /// 4 bits plus a scale and a zero point per group in the parameters' dtype.
    fn bits_per_element(&self) -> f64 {
        let p = match self.qparams_dtype {
            QParamsDtype::F32 => 64.0,
            QParamsDtype::BF16 => 32.0,
        };
        4.0 + p / self.group_size as f64
    }

    fn block_len(&self) -> usize {
        self.group_size
    }

    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        check_rows(
            "TinygemmSpec::fake_quantize_rows",
            x.len(),
            row_len,
            self.group_size,
            out.len(),
        )?;
        self.quantize_rows(x, row_len)?.write_values(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tinygemm's group loop as first written (`f32::min` / `f32::max` folds, `clamp` then
    /// `as`), against the vectorised one: groups of 32, 40 and 128, both parameter dtypes,
    /// groups at many magnitudes, constant groups, one large value, zeros.
    #[test]
    fn vectorised_tinygemm_groups_equal_the_scalar_loop() {
        let mut r = crate::rng::Lcg::new(3);
        for group in [32usize, 40, 128] {
            let mut x = Vec::new();
            for k in 0..24 {
                let s = 2f32.powi(k * 5 - 60);
                x.extend((0..group).map(|_| (r.unit_f32() * 2.0 - 0.7) * s));
            }
            x.extend(vec![2.5f32; group]);
            x.extend(vec![0.0f32; group]);
            let mut spike = vec![0.01f32; group];
            spike[group / 3] = -300.0;
            x.extend(spike);
            for d in [QParamsDtype::F32, QParamsDtype::BF16] {
                let spec = TinygemmSpec::new(group, 1e-6, d).expect("valid");
                let t = spec.quantize_rows(&x, group).expect("whole groups");
                for (k, g) in x.chunks_exact(group).enumerate() {
                    let (lo, hi) = g
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                            (l.min(v), h.max(v))
                        });
                    let s32 = ((hi - lo) / 15.0).max(spec.eps);
                    let zero = d.round(lo + s32 * 8.0);
                    let s = d.round(s32);
                    let min_val = d.round(zero - d.round(s * 8.0));
                    assert_eq!(
                        t.scales[k].to_bits(),
                        s.to_bits(),
                        "{group} {d:?} group {k}"
                    );
                    assert_eq!(t.zero_points[k].to_bits(), zero.to_bits());
                    for (j, &v) in g.iter().enumerate() {
                        let c = ((v - min_val) / s).round_ties_even().clamp(0.0, 15.0) as u8;
                        assert_eq!(t.codes[k * group + j], c, "{group} {d:?} {v:e}");
                    }
                }
            }
        }
    }

    /// The group loop as first written (`f32::min` / `f32::max` folds, `clamp` then `as`):
    /// the oracle of the vectorised [`groups_into`].
    fn quantize_scalar(spec: &GroupwiseSpec, x: &[f32]) -> (Vec<f32>, Vec<i32>, Vec<i32>) {
        let (qmin, qmax) = (spec.quant_min as f32, spec.quant_max as f32);
        let (mut scales, mut zps, mut codes) = (Vec::new(), Vec::new(), Vec::new());
        for g in x.chunks_exact(spec.group_size) {
            let (lo, hi) = g
                .iter()
                .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
            let mid =
                ((i64::from(spec.quant_max) + i64::from(spec.quant_min) + 1) as f64 / 2.0) as i32;
            let (s, zp) = match spec.mapping {
                GroupMapping::Symmetric => {
                    ((((-lo).max(hi)) / ((qmax - qmin) / 2.0)).max(spec.eps), mid)
                }
                GroupMapping::SymmetricNoClippingErr => {
                    let (smin, smax) = (lo / qmin, hi / qmax);
                    ((if smin > smax { smin } else { smax }).max(spec.eps), mid)
                }
                GroupMapping::Asymmetric => {
                    let s = ((hi - lo) / (qmax - qmin)).max(spec.eps);
                    let zp = (qmin - (lo / s).round_ties_even()).clamp(qmin, qmax);
                    (s, zp as i32)
                }
            };
            let inv = 1.0 / s;
            codes.extend(
                g.iter()
                    .map(|&v| ((v * inv).round_ties_even() + zp as f32).clamp(qmin, qmax) as i32),
            );
            scales.push(s);
            zps.push(zp);
        }
        (scales, zps, codes)
    }

    /// Every mapping, int4 / uint4 / int8, groups of 32, 128 and 20 (a remainder of 4 past
    /// the lanes): groups at many magnitudes, all-zero groups of both signs, one-signed
    /// groups, and values at `f32` extremes.
    #[test]
    fn vectorised_groups_equal_the_scalar_loop() {
        let mut r = crate::rng::Lcg::new(23);
        for mapping in [
            GroupMapping::Symmetric,
            GroupMapping::Asymmetric,
            GroupMapping::SymmetricNoClippingErr,
        ] {
            for group in [32usize, 128, 20] {
                for spec in [
                    GroupwiseSpec::int4(group, mapping),
                    GroupwiseSpec::uint4(group, mapping),
                    GroupwiseSpec::int8(group, mapping),
                ] {
                    let spec = spec.expect("valid");
                    let mut x = Vec::new();
                    for k in 0..24 {
                        let s = 2f32.powi(k * 11 - 140);
                        x.extend((0..group).map(|_| (r.unit_f32() * 2.0 - 1.0) * s));
                    }
                    x.extend(vec![0.0f32; group]);
                    x.extend(vec![-0.0f32; group]);
                    x.extend((0..group).map(|i| 0.25 + i as f32));
                    x.extend((0..group).map(|i| -3.0 - i as f32));
                    x.extend((0..group).map(|i| if i % 2 == 0 { f32::MAX } else { -1e30 }));
                    let t = spec.quantize_rows(&x, group).expect("whole groups");
                    let (scales, zps, codes) = quantize_scalar(&spec, &x);
                    let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&t.scales), bits(&scales), "{mapping:?} {group}");
                    assert_eq!(t.zero_points, zps, "{mapping:?} {group}");
                    assert_eq!(t.codes, codes, "{mapping:?} {group}");
                }
            }
        }
    }
}
