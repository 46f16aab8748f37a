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
use super::minifloat::MiniFloat;
use super::{ElementFormat, check_rows};
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
        let amax = |s: &[f32]| {
            s.iter().fold(0.0f32, |m, v| {
                if v.is_nan() || m.is_nan() {
                    f32::NAN
                } else {
                    m.max(v.abs())
                }
            })
        };
        let Float8Tensor {
            spec,
            row_len: len,
            scales,
            codes,
        } = out;
        (*spec, *len) = (*self, row_len);
        scales.clear();
        match self.granularity {
            Float8Granularity::Tensorwise => scales.push(self.scale_for(amax(x))),
            Float8Granularity::Rowwise => {
                scales.extend(x.chunks_exact(row_len).map(|r| self.scale_for(amax(r))));
            }
        }
        codes.resize(x.len(), 0);
        for (r, (xr, cr)) in x
            .chunks_exact(row_len)
            .zip(codes.chunks_exact_mut(row_len))
            .enumerate()
        {
            let s = scales[if scales.len() == 1 { 0 } else { r }];
            for (c, &v) in cr.iter_mut().zip(xr) {
                *c = self.encode(v, s);
            }
        }
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
        let row_len = self.row_len.max(1);
        for (r, (cr, or)) in self
            .codes
            .chunks(row_len)
            .zip(out.chunks_mut(row_len))
            .enumerate()
        {
            let s = self.scales[if self.scales.len() == 1 { 0 } else { r }];
            for (o, &c) in or.iter_mut().zip(cr) {
                *o = self.spec.decode(c, s);
            }
        }
    }
}

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
