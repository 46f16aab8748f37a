//! Scaled float8 tensors: torchao's recipes, per tensor or per row.
//!
//! - **Training** (`hp_tensor_to_float8_dynamic`): `amax = max|x|` (tensor or row);
//!   `scale = f32(f64(max) / max(f64(amax), 1e-12))`, optionally rounded down to a power of two;
//!   `code = cast(clamp(x · scale, ±max))`; `value = f32(code) / scale`.
//! - **Inference** (`_choose_scale_float8` / `_quantize_affine_float8`): `scale = amax / max`
//!   (f32); `code = cast(clamp(x / scale, ±max))`; `value = f32(code) · scale`. An all-zero row
//!   has `scale = 0` and `0 / 0 = NaN` codes (`0xff`: x86's NaN is negative) and NaN values:
//!   torchao's behaviour, reproduced. [`Float8Recipe::InferenceSafe`] is the same recipe with
//!   the all-zero row stored as zeros (scale 0, codes 0, values 0): the correct result.
//!
//! ```
//! use ndarray::array;
//! use qnumeric::formats::Dequantize as _;
//! use qnumeric::formats::float8::{Float8Granularity, Float8Recipe, Float8Spec};
//! use qnumeric::formats::minifloat::MiniFloat;
//! let spec = Float8Spec::new(MiniFloat::E4M3Fn, Float8Recipe::InferenceSafe, Float8Granularity::Rowwise)?;
//! let t = spec.quantize(&array![[1.0f32, -2.0], [0.0, 0.0]])?;
//! assert_eq!(t.scales, vec![2.0 / 448.0, 0.0]);
//! assert_eq!(t.dequantize(), vec![1.0, -2.0, 0.0, 0.0]);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::fmt;

use ndarray::{ArrayRef, Ix2};

use super::Dequantize;
use super::lookup::ScaleOp;
use super::minifloat::{EncodeLoop, Encoder, MiniFloat, encode_f32s_with, with_value_encoder};
use super::{ElementFormat, check_rows, tensor_amax};
use crate::element::QFloat;
use crate::error::{QuantError, Result};

/// How the scale is chosen and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Float8Recipe {
    /// torchao's training recipe (`x · scale`, `scale = max / amax`).
    Training {
        /// Round the scale down to a power of two.
        round_scales_to_power_of_2: bool,
    },
    /// torchao's inference recipe (`x / scale`, `scale = amax / max`), all-zero rows NaN.
    Inference,
    /// The inference recipe with all-zero rows stored as zeros.
    InferenceSafe,
}

/// One scale for the tensor or one per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Float8Granularity {
    /// One scale.
    Tensorwise,
    /// One scale per row (last axis).
    Rowwise,
}

/// A scaled float8 format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Float8Spec {
    /// `E4M3Fn` or `E5M2`.
    pub dtype: MiniFloat,
    /// The recipe.
    pub recipe: Float8Recipe,
    /// Per tensor or per row.
    pub granularity: Float8Granularity,
}

/// A tensor in scaled float8.
#[derive(Debug, Clone, PartialEq)]
pub struct Float8Tensor {
    /// The format.
    pub spec: Float8Spec,
    /// Elements per row.
    pub row_len: usize,
    /// One scale (tensorwise) or one per row.
    pub scales: Vec<f32>,
    /// One code per element, row-major.
    pub codes: Vec<u8>,
}

impl Float8Spec {
    /// A spec; `dtype` must be `E4M3Fn` or `E5M2`.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedConfig`] for another element type.
    pub fn new(
        dtype: MiniFloat,
        recipe: Float8Recipe,
        granularity: Float8Granularity,
    ) -> Result<Self> {
        if !matches!(dtype, MiniFloat::E4M3Fn | MiniFloat::E5M2) {
            return Err(QuantError::UnsupportedConfig {
                op: "Float8Spec::new",
                reason: "scaled float8 takes float8_e4m3fn or float8_e5m2",
            });
        }
        Ok(Float8Spec {
            dtype,
            recipe,
            granularity,
        })
    }

    /// The scale of values whose largest magnitude is `amax`.
    #[must_use]
    pub fn scale_for(&self, amax: f32) -> f32 {
        let max = self.dtype.max();
        match self.recipe {
            Float8Recipe::Training {
                round_scales_to_power_of_2,
            } => {
                let s = (f64::from(max) / f64::from(amax).max(1e-12)) as f32;
                if round_scales_to_power_of_2 && s.is_finite() && s > 0.0 {
                    // exp2(floor(log2(s))): the exponent bits alone (s is a normal f32).
                    f32::from_bits(s.to_bits() & 0xff80_0000)
                } else {
                    s
                }
            }
            Float8Recipe::Inference | Float8Recipe::InferenceSafe => amax / max,
        }
    }

    /// The code of `v` under `scale`.
    #[cfg(test)]
    fn encode(&self, v: f32, scale: f32) -> u8 {
        let max = self.dtype.max();
        let scaled = match self.recipe {
            Float8Recipe::Training { .. } => v * scale,
            Float8Recipe::Inference => {
                if v == 0.0 && scale == 0.0 {
                    // x86's 0/0: the default NaN, sign bit set.
                    f32::from_bits(0xffc0_0000)
                } else {
                    v / scale
                }
            }
            Float8Recipe::InferenceSafe => {
                if scale == 0.0 {
                    0.0
                } else {
                    v / scale
                }
            }
        };
        let clamped = if scaled.is_nan() {
            scaled
        } else {
            scaled.clamp(-max, max)
        };
        self.dtype.encode(clamped)
    }

    #[cfg(test)]
    fn decode(&self, code: u8, scale: f32) -> f32 {
        let v = self.dtype.decode(code);
        match self.recipe {
            Float8Recipe::Training { .. } => v / scale,
            Float8Recipe::Inference | Float8Recipe::InferenceSafe => v * scale,
        }
    }

    /// Quantizes rows of `row_len` (a row-major slice): the reference's own results,
    /// NaN included (a NaN makes its row's or the tensor's scale NaN).
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`] when `row_len` is 0 or does not divide `x.len()`.
    pub fn quantize_rows(&self, x: &[f32], row_len: usize) -> Result<Float8Tensor> {
        // Sized as the input dictates (zeroed pages from the allocator, not a clearing pass);
        // the checks are the `_into` call's.
        let mut out = Float8Tensor {
            spec: *self,
            row_len,
            scales: Vec::new(),
            codes: vec![0; x.len()],
        };
        self.quantize_rows_into(x, row_len, &mut out)?;
        Ok(out)
    }

    /// [`Float8Spec::quantize_rows`] into an existing tensor.
    ///
    /// The buffers of `out` are reused (resized, every entry overwritten): once they have
    /// the capacity, quantizing allocates nothing. On an error `out` is left as it was.
    ///
    /// # Errors
    /// As [`Float8Spec::quantize_rows`].
    pub fn quantize_rows_into(
        &self,
        x: &[f32],
        row_len: usize,
        out: &mut Float8Tensor,
    ) -> Result<()> {
        // The fields are public (and deserializable): checked as `new` checks them.
        Float8Spec::new(self.dtype, self.recipe, self.granularity)
            .map_err(|e| e.with_op("Float8Spec::quantize"))?;
        check_rows("Float8Spec::quantize", x.len(), row_len, 1, x.len())?;
        let Float8Tensor {
            spec,
            row_len: len,
            scales,
            codes,
        } = out;
        (*spec, *len) = (*self, row_len);
        scales.clear();
        match self.granularity {
            Float8Granularity::Tensorwise => scales.push(self.scale_for(tensor_amax(x))),
            Float8Granularity::Rowwise => {
                // Pieces of whole rows on the rayon pool (feature `rayon`).
                scales.resize(x.len() / row_len, 0.0);
                crate::parallel::blocks2(x, row_len, scales, 1, |_, x, s| {
                    for (r, s) in x.chunks_exact(row_len).zip(s) {
                        *s = self.scale_for(tensor_amax(r));
                    }
                    true
                });
            }
        }
        codes.resize(x.len(), 0);
        // Pieces of whole rows on the rayon pool (feature `rayon`), the same bytes; a piece's
        // rows read their own scales (or the tensor's one).
        crate::parallel::blocks2(x, row_len, codes, row_len, |first, x, c| {
            let s = if scales.len() == 1 {
                &scales[..]
            } else {
                scales.get(first..).unwrap_or(&[])
            };
            encode_rows(self, x, row_len, s, c);
            true
        });
        Ok(())
    }

    /// Quantizes a 2-d array (rows along the last axis).
    ///
    /// # Errors
    /// As [`Float8Spec::quantize_rows`]; [`QuantError::NotMultiple`] for zero columns.
    pub fn quantize<F: QFloat>(&self, x: &ArrayRef<F, Ix2>) -> Result<Float8Tensor> {
        let v: Vec<f32> = x.iter().map(|v| v.to_compute()).collect();
        self.quantize_rows(&v, x.ncols())
    }
}

impl Dequantize for Float8Tensor {
    fn element_count(&self) -> usize {
        self.codes.len()
    }

    fn write_values(&self, out: &mut [f32]) {
        // e4m3fn and e5m2 by arithmetic where the CPU converts halves (no gather), the row
        // scale as `decode_rows` applies it.
        let op = if matches!(self.spec.recipe, Float8Recipe::Training { .. }) {
            ScaleOp::Div
        } else {
            ScaleOp::Mul
        };
        let scale = |r: usize| Some(row_scale(&self.scales, r));
        let row_len = self.row_len.max(1);
        if !super::lookup::fp8_blocks(self.spec.dtype, &self.codes, row_len, scale, op, out) {
            decode_rows(self, self.spec.dtype.table(), out);
        }
    }
}

/// The scale of row `r`: the one tensor scale or the row's (NaN where a tensor built field by
/// field has too few).
#[inline(always)]
fn row_scale(scales: &[f32], r: usize) -> f32 {
    let at = if scales.len() == 1 { 0 } else { r };
    scales.get(at).copied().unwrap_or(f32::NAN)
}

/// The codes of [`Float8Spec::quantize_rows_into`] (lengths checked, scales found), compiled
/// for the CPU's vector width: [`Float8Spec::encode`]'s operations through the branch-free
/// element encoder (the scalar cast per value ran at 0.03 of the copy's speed).
#[inline(always)]
fn encode_rows_body(
    spec: &Float8Spec,
    x: &[f32],
    row_len: usize,
    scales: &[f32],
    codes: &mut [u8],
) {
    struct Rows<'a> {
        spec: &'a Float8Spec,
        x: &'a [f32],
        row_len: usize,
        scales: &'a [f32],
        codes: &'a mut [u8],
    }
    impl EncodeLoop for Rows<'_> {
        #[inline(always)]
        fn run(self, enc: impl Fn(f32) -> u8 + Copy) {
            encode_rows_with(
                self.spec,
                self.x,
                self.row_len,
                self.scales,
                self.codes,
                enc,
            );
        }
    }
    let Some(enc) = Encoder::new(spec.dtype) else {
        return;
    };
    let rows = Rows {
        spec,
        x,
        row_len,
        scales,
        codes,
    };
    with_value_encoder(&enc, rows);
}

/// [`encode_rows_body`] with the element encoder `enc` (e4m3fn's and e5m2's own loops).
#[inline(always)]
fn encode_rows_with(
    spec: &Float8Spec,
    x: &[f32],
    row_len: usize,
    scales: &[f32],
    codes: &mut [u8],
    enc: impl Fn(f32) -> u8 + Copy,
) {
    let max = spec.dtype.max();
    // `clamp(-max, max)`, NaN kept, as compare-selects.
    let clamp = |v: f32| {
        let c = if v > max { max } else { v };
        if c < -max { -max } else { c }
    };
    for (r, (xr, cr)) in x
        .chunks_exact(row_len)
        .zip(codes.chunks_exact_mut(row_len))
        .enumerate()
    {
        let s = row_scale(scales, r);
        // Through the cast's own loop (16 values a step, the input prefetched): a loop per
        // value here compiled to eight lanes with a pack and an 8-byte store each, twice the
        // time of the cast's with AVX2 (measured on Zen 4).
        match spec.recipe {
            Float8Recipe::Training { .. } => encode_f32s_with(xr, cr, |v| enc(clamp(v * s))),
            Float8Recipe::InferenceSafe if s == 0.0 => {
                for c in cr.iter_mut() {
                    *c = enc(0.0);
                }
            }
            Float8Recipe::Inference | Float8Recipe::InferenceSafe => {
                encode_f32s_with(xr, cr, |v| {
                    // x86's 0/0 is the default NaN, sign bit set: spelled out, so that
                    // every target gives it.
                    let q = if v == 0.0 && s == 0.0 {
                        f32::from_bits(0xffc0_0000)
                    } else {
                        v / s
                    };
                    enc(clamp(q))
                });
            }
        }
    }
}

crate::simd::dispatched512!(fn encode_rows[](spec: &Float8Spec, x: &[f32], row_len: usize, scales: &[f32], codes: &mut [u8]) = encode_rows_body);

/// The values of a tensor ([`Float8Spec::decode`] with the table read once), compiled for the
/// CPU's vector width.
#[inline(always)]
fn decode_rows_body(t: &Float8Tensor, table: &[f32; 256], out: &mut [f32]) {
    let row_len = t.row_len.max(1);
    let training = matches!(t.spec.recipe, Float8Recipe::Training { .. });
    for (r, (cr, or)) in t
        .codes
        .chunks(row_len)
        .zip(out.chunks_mut(row_len))
        .enumerate()
    {
        let s = row_scale(&t.scales, r);
        if training {
            for (o, &c) in or.iter_mut().zip(cr) {
                *o = table[usize::from(c)] / s;
            }
        } else {
            for (o, &c) in or.iter_mut().zip(cr) {
                *o = table[usize::from(c)] * s;
            }
        }
    }
}

crate::simd::dispatched512!(fn decode_rows[](t: &Float8Tensor, table: &[f32; 256], out: &mut [f32]) = decode_rows_body);

impl Float8Tensor {}

impl fmt::Display for Float8Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.dtype {
            MiniFloat::E5M2 => "fp8-e5m2",
            _ => "fp8-e4m3",
        };
        let g = match self.granularity {
            Float8Granularity::Tensorwise => "tensor",
            Float8Granularity::Rowwise => "row",
        };
        write!(f, "{d}-{g}")
    }
}

impl ElementFormat for Float8Spec {
    fn bits_per_element(&self) -> f64 {
        8.0
    }

    fn block_len(&self) -> usize {
        1
    }

    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        const OP: &str = "Float8Spec::fake_quantize_rows";
        check_rows(OP, x.len(), row_len, 1, out.len())?;
        super::check_finite(OP, x)?;
        let safe = Float8Spec {
            recipe: match self.recipe {
                Float8Recipe::Inference => Float8Recipe::InferenceSafe,
                r => r,
            },
            ..*self
        };
        let t = safe.quantize_rows(x, row_len)?;
        t.write_values(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised rows give the scalar encoder's code and decoder's value for every
    /// element type, recipe and granularity: rows at many magnitudes, with a NaN, ±inf, an
    /// all-zero row (the inference recipe's 0/0), subnormals and `f32::MAX`; rows of 37
    /// (not a whole vector) and of 64 values. A tensor with too few scales decodes to NaN
    /// instead of panicking.
    #[test]
    fn vectorised_rows_equal_the_scalar_code() {
        let mut r = crate::rng::Lcg::new(5);
        for row_len in [37usize, 64] {
            let mut x = Vec::new();
            for k in 0..12 {
                let s = 2f32.powi(k * 12 - 70);
                x.extend((0..row_len).map(|_| (r.unit_f32() * 2.0 - 1.0) * s));
            }
            let special = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::MAX,
                1e-42,
                -0.0,
            ];
            for (i, &v) in special.iter().enumerate() {
                let mut row = vec![0.5f32; row_len];
                row[(i * 5) % row_len] = v;
                x.extend(row);
            }
            x.extend(vec![0.0f32; row_len]);
            for dtype in [MiniFloat::E4M3Fn, MiniFloat::E5M2] {
                for recipe in [
                    Float8Recipe::Training {
                        round_scales_to_power_of_2: true,
                    },
                    Float8Recipe::Training {
                        round_scales_to_power_of_2: false,
                    },
                    Float8Recipe::Inference,
                    Float8Recipe::InferenceSafe,
                ] {
                    for granularity in [Float8Granularity::Tensorwise, Float8Granularity::Rowwise] {
                        let spec = Float8Spec::new(dtype, recipe, granularity).expect("valid");
                        let t = spec.quantize_rows(&x, row_len).expect("whole rows");
                        let values = t.dequantize();
                        for (i, &v) in x.iter().enumerate() {
                            let s = row_scale(&t.scales, i / row_len);
                            let what = format!("{dtype} {recipe:?} {granularity:?} {v:e}");
                            assert_eq!(t.codes[i], spec.encode(v, s), "{what}");
                            let want = spec.decode(t.codes[i], s);
                            assert_eq!(values[i].to_bits(), want.to_bits(), "{what}");
                        }
                    }
                }
            }
        }
        let mut t = Float8Spec::new(
            MiniFloat::E4M3Fn,
            Float8Recipe::Inference,
            Float8Granularity::Rowwise,
        )
        .expect("valid")
        .quantize_rows(&[1.0; 8], 4)
        .expect("rows");
        t.scales.clear();
        assert!(t.dequantize().iter().all(|v| v.is_nan()));
    }
}
