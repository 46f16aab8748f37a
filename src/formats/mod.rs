//! Low-precision formats inference engines ship: float8, OCP microscaling (MX), NVFP4,
//! group-wise integers (int4/uint4/int8, tinygemm), NF4 and the GGML blocks of llama.cpp.
//!
//! Each format has an encoder (quantize) to the bytes its reference stores, a decoder
//! (dequantize), and fake-quantize (forward and straight-through backward), bit-exact with
//! its reference implementation (PyTorch's float8 casts, torchao, ml_dtypes, gguf / ggml's C
//! reference); `tests/golden/formats.jsonl` holds the reference's own results and `cargo
//! test` runs them.
//!
//! | module | format |
//! |---|---|
//! | [`minifloat`] | element casts: float8 (e4m3fn, e5m2, the fnuz pair, e8m0fnu), fp6 (e2m3, e3m2), fp4 (e2m1) |
//! | [`float8`] | scaled float8 tensors (torchao's training and inference recipes, per tensor / per row) |
//! | [`mx`] | OCP MX: blocks of 32 sharing an E8M0 scale (MXFP8, MXFP6, MXFP4; four scale modes) |
//! | [`nvfp4`] | NVFP4: E2M1 elements, an E4M3 scale per 16, an optional per-tensor scale |
//! | [`groupwise`] | group-wise affine integers (GPTQ/AWQ/torchao int4 weight-only, tinygemm) |
//! | [`nf4`] | NF4 (QLoRA), with double quantization of the block scales |
//! | [`ggml`] | GGML blocks: Q8_0, Q4_0/1, Q5_0/1, MXFP4, the k-quants, NVFP4 |
//! | [`Int8PerRow`] | PyTorch's int8 weight scheme (symmetric, per output channel), for comparisons |
//! | [`observe`] | calibration: a mergeable `amax` (per tensor / column block), the MSE search over group scales |
//! | [`packing`] | two 4-bit codes a byte, in either nibble order |
//!
//! Every format also implements [`ElementFormat`], the one interface the Numeric Suite, the
//! diagnosis and the kernel check use to simulate a tensor in any format.

use std::fmt;

use crate::error::Result;

pub use format::Format;
pub use int8::Int8PerRow;

pub mod float8;
mod format;
pub mod ggml;
pub mod groupwise;
mod int8;
mod lookup;
pub mod minifloat;
pub mod mx;
pub mod nf4;
pub mod nvfp4;
pub mod observe;
pub mod packing;

/// A format that can simulate (fake-quantize) a tensor: the interface the Numeric Suite and
/// the diagnosis use to put a layer's weights or activations in any format.
///
/// A tensor is seen as rows along its last axis (`row_len` elements each; the data is
/// row-major). Block and group formats cut each row into blocks of [`block_len`]
/// (`row_len` must be a multiple of it).
///
/// [`block_len`]: ElementFormat::block_len
pub trait ElementFormat: fmt::Debug + fmt::Display + Send + Sync {
    /// Bits of storage per element, scales and zero points included (Q4_0: 4.5, MXFP4:
    /// 4.25, int4 with group 128 and f32 scale and zero point: 4.5).
    fn bits_per_element(&self) -> f64;

    /// The length a row must be a multiple of (a block or group; 1 when the format has none).
    fn block_len(&self) -> usize;

    /// Quantizes then dequantizes `x` (rows of `row_len`) into `out` (same length).
    ///
    /// # Errors
    /// A typed error when `row_len` is zero or does not divide `x.len()` or is not a multiple
    /// of [`block_len`](ElementFormat::block_len), when `out` has another length, or when
    /// `x` holds a value the format refuses (NaN where the format has no NaN).
    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()>;

    /// The straight-through estimator's mask for `x`: `true` where the gradient passes.
    /// Formats whose scales cover every block's range pass everything (the default); formats
    /// that clip (a fixed scale, a clamped element range) override it.
    ///
    /// # Errors
    /// As [`fake_quantize_rows`](ElementFormat::fake_quantize_rows).
    fn ste_mask_rows(&self, x: &[f32], row_len: usize, mask: &mut [bool]) -> Result<()> {
        check_rows(
            "formats::ste_mask_rows",
            x.len(),
            row_len,
            self.block_len(),
            mask.len(),
        )?;
        mask.fill(true);
        Ok(())
    }
}

/// One row in a format's stored layout: what a backend's kernel reads. GGML rows are their
/// blocks (scales inside, `scales` empty); MX and NVFP4 rows are the packed elements plus one
/// scale byte per block (E8M0 / E4M3) and, for NVFP4, the tensor's scale.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedRow {
    /// The element bytes (GGML: whole blocks; MX/NVFP4: packed elements, fp8/fp6 one a byte).
    pub data: Vec<u8>,
    /// One scale byte per block (MX: E8M0; NVFP4: E4M3); empty for GGML.
    pub scales: Vec<u8>,
    /// NVFP4's per-tensor scale, when used.
    pub tensor_scale: Option<f32>,
}

/// A format whose rows can be encoded to and decoded from the bytes its reference stores:
/// the interface the kernel check for format kernels (dot products, dequantization) uses.
pub trait RowCodec: ElementFormat {
    /// Encodes one row (its length a multiple of [`ElementFormat::block_len`]).
    ///
    /// # Errors
    /// As [`ElementFormat::fake_quantize_rows`].
    fn encode_row(&self, x: &[f32]) -> Result<EncodedRow>;

    /// Decodes one row of `out.len()` elements.
    ///
    /// # Errors
    /// [`QuantError::NotMultiple`](crate::QuantError::NotMultiple) /
    /// [`QuantError::LengthMismatch`](crate::QuantError::LengthMismatch) when `row` does not
    /// hold `out.len()` elements.
    fn decode_row(&self, row: &EncodedRow, out: &mut [f32]) -> Result<()>;
}

/// A tensor in a stored format that decodes to `f32` values: every format's tensor type
/// (`Float8Tensor`, `MxTensor`, `Nvfp4Tensor`, `GroupwiseTensor`, `TinygemmTensor`,
/// `Nf4Tensor`) implements the two required methods and gets `dequantize` and
/// `dequantize_into`.
pub trait Dequantize {
    /// Elements stored.
    fn element_count(&self) -> usize;

    /// Writes the values (row-major) into `out`, which holds exactly
    /// [`element_count`](Dequantize::element_count) elements.
    fn write_values(&self, out: &mut [f32]);

    /// The values, row-major.
    fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.element_count()];
        self.write_values(&mut out);
        out
    }

    /// The values into `out`.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`](crate::QuantError::LengthMismatch) when `out` has
    /// another length (nothing written).
    fn dequantize_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.element_count() {
            return Err(crate::QuantError::LengthMismatch {
                op: "formats::Dequantize::dequantize_into",
                what: "output",
                expected: self.element_count(),
                got: out.len(),
            });
        }
        self.write_values(out);
        Ok(())
    }
}

/// Checks a rows argument: `row_len > 0`, a multiple of `block_len`, dividing `len`, and an
/// output of `len` elements.
pub(crate) fn check_rows(
    op: &'static str,
    len: usize,
    row_len: usize,
    block_len: usize,
    out_len: usize,
) -> Result<()> {
    use crate::error::QuantError;
    let not_multiple = |what, len, multiple_of| QuantError::NotMultiple {
        op,
        what,
        len,
        multiple_of,
    };
    if block_len == 0 || row_len == 0 || !row_len.is_multiple_of(block_len) {
        return Err(not_multiple("row length", row_len, block_len));
    }
    if !len.is_multiple_of(row_len) {
        return Err(not_multiple("element count", len, row_len));
    }
    if out_len != len {
        return Err(QuantError::LengthMismatch {
            op,
            what: "output",
            expected: len,
            got: out_len,
        });
    }
    Ok(())
}

/// Refuses NaN and ±inf (the simulation path: a format's scale cannot cover them).
pub(crate) fn check_finite(op: &'static str, x: &[f32]) -> Result<()> {
    use crate::error::QuantError;
    if all_finite(x) {
        return Ok(());
    }
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) if x[index].is_nan() => Err(QuantError::NanInput { op, index }),
        Some(index) => Err(QuantError::InfiniteInput {
            op,
            index,
            value: f64::from(x[index]),
        }),
    }
}

/// The largest `|v|`, or NaN if any value is NaN (the block formats' amax): in 8 lanes, which
/// vectorise (the result does not depend on the grouping).
#[inline(always)]
pub(crate) fn amax_or_nan(x: &[f32]) -> f32 {
    let mut m = [0.0f32; 8];
    let mut nan = [false; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for ((m, n), &v) in m.iter_mut().zip(&mut nan).zip(c) {
            *m = if v.abs() > *m { v.abs() } else { *m };
            *n |= v.is_nan();
        }
    }
    let mut any_nan = nan.iter().any(|&n| n);
    let mut amax = m.iter().fold(0.0f32, |a, &v| if v > a { v } else { a });
    for &v in chunks.remainder() {
        any_nan |= v.is_nan();
        amax = if v.abs() > amax { v.abs() } else { amax };
    }
    if any_nan { f32::NAN } else { amax }
}

/// The largest `|v|` of `x`, `f32::NAN` if any value is NaN: the maximum of the sign-cleared
/// bit patterns ([`crate::simd::block_amax_bits`]; a NaN's sorts above `+inf`'s). A long slice
/// (a tensor's) runs in pieces on the rayon pool (feature `rayon`), their patterns folded by a
/// maximum: the same on any thread count. NVFP4's per-tensor scale and scaled float8's.
pub(crate) fn tensor_amax(x: &[f32]) -> f32 {
    let piece_max = |p: &[f32]| {
        let mut a = [0];
        crate::simd::block_amax_bits(p, p.len(), &mut a);
        a[0]
    };
    let a = crate::parallel::map_fold_exact(x, piece_max, 0, u32::max);
    if a > 0x7f80_0000 {
        f32::NAN
    } else {
        f32::from_bits(a)
    }
}

/// `(min(lo, min x), max(hi, max x))` of finite values in 16 lanes (compare-selects, which
/// vectorise; `f32::min` / `f32::max` folds stayed scalar), the input asked for
/// [`PREFETCH_AHEAD`](crate::simd::PREFETCH_AHEAD) values ahead. Which zero a lane keeps on
/// a tie of `−0` and `+0` may differ from a fold's: callers whose result depends on it say
/// how they settle it. The third result says whether every value was finite (the largest
/// sign-cleared bit pattern of each lane below inf's: NaN, which the compare-selects skip, is
/// seen too), so that an encoder needs no pass of its own to refuse NaN and inf.
#[inline(always)]
pub(crate) fn min_max_finite_from(x: &[f32], lo: f32, hi: f32) -> (f32, f32, bool) {
    let (mut lanes_lo, mut lanes_hi, mut mag) = ([lo; 16], [hi; 16], [0u32; 16]);
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        crate::simd::prefetch_read(c.as_ptr().wrapping_add(crate::simd::PREFETCH_AHEAD));
        for (((l, h), m), &v) in lanes_lo.iter_mut().zip(&mut lanes_hi).zip(&mut mag).zip(c) {
            *l = if v < *l { v } else { *l };
            *h = if v > *h { v } else { *h };
            *m = (*m).max(v.to_bits() & 0x7fff_ffff);
        }
    }
    let mut l = lanes_lo.iter().fold(lo, |a, &v| if v < a { v } else { a });
    let mut h = lanes_hi.iter().fold(hi, |a, &v| if v > a { v } else { a });
    let mut finite = mag.iter().all(|&m| m < 0x7f80_0000);
    for &v in chunks.remainder() {
        l = if v < l { v } else { l };
        h = if v > h { v } else { h };
        finite &= v.is_finite();
    }
    (l, h, finite)
}

/// Whether every value is finite: one vectorised pass over the exponent fields (the position
/// of a bad value is looked for only when there is one).
#[inline(always)]
fn all_finite_body(x: &[f32]) -> bool {
    let mut seen = [0u32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        crate::simd::prefetch_read(c.as_ptr().wrapping_add(crate::simd::PREFETCH_AHEAD));
        for (s, v) in seen.iter_mut().zip(c) {
            // An all-ones exponent (inf, NaN) compares at or above `0x7f80_0000`.
            *s |= u32::from(v.to_bits() & 0x7fff_ffff >= 0x7f80_0000);
        }
    }
    seen.iter().all(|&s| s == 0) && chunks.remainder().iter().all(|v| v.is_finite())
}

crate::simd::dispatched512!(fn all_finite[](x: &[f32]) -> bool = all_finite_body);

/// `x` fake-quantized in `format` along its last axis (rows of the last dimension), for any
/// of the crate's float types (computed in `f32`, written back in `F`).
///
/// ```
/// use ndarray::array;
/// use qnumeric::formats::{fake_quantize, Format};
/// let f: Format = "mxfp8".parse()?;
/// let x = array![[0.3f64; 32]];
/// let y: ndarray::Array2<f64> = fake_quantize(&f, &x)?;
/// assert_eq!(y[[0, 0]], 0.3125); // 0.3 · 2^10 = 307.2 → e4m3 320, · 2^-10
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
///
/// # Errors
/// The format's errors (a last axis that is not whole blocks, NaN, ±inf); a 0-d array is a
/// row of one.
pub fn fake_quantize<F: crate::QFloat, D: ndarray::Dimension>(
    format: &dyn ElementFormat,
    x: &ndarray::ArrayRef<F, D>,
) -> Result<ndarray::Array<F, D>> {
    let row_len = x.shape().last().copied().unwrap_or(1);
    let v: Vec<f32> = x.iter().map(|v| v.to_compute()).collect();
    let mut out = vec![0.0f32; v.len()];
    if !v.is_empty() {
        format.fake_quantize_rows(&v, row_len, &mut out)?;
    }
    let mut it = out.into_iter();
    Ok(x.map(|_| F::from_compute(it.next().unwrap_or(0.0))))
}

/// The straight-through backward of [`fake_quantize`]: `dy` where the format's mask lets the
/// gradient pass ([`ElementFormat::ste_mask_rows`]), 0 elsewhere.
///
/// # Errors
/// [`QuantError::ShapeMismatch`](crate::QuantError::ShapeMismatch) when `dy` has another
/// shape; the format's errors.
pub fn fake_quantize_backward<F: crate::QFloat, D: ndarray::Dimension>(
    format: &dyn ElementFormat,
    x: &ndarray::ArrayRef<F, D>,
    dy: &ndarray::ArrayRef<F, D>,
) -> Result<ndarray::Array<F, D>> {
    if x.shape() != dy.shape() {
        return Err(crate::QuantError::ShapeMismatch {
            op: "formats::fake_quantize_backward",
            expected: x.shape().to_vec(),
            got: dy.shape().to_vec(),
        });
    }
    let row_len = x.shape().last().copied().unwrap_or(1);
    let v: Vec<f32> = x.iter().map(|v| v.to_compute()).collect();
    let mut mask = vec![true; v.len()];
    if !v.is_empty() {
        format.ste_mask_rows(&v, row_len, &mut mask)?;
    }
    let mut m = mask.into_iter();
    Ok(dy.map(|&g| {
        if m.next().unwrap_or(false) {
            g
        } else {
            F::zero()
        }
    }))
}
