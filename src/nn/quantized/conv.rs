//! [`QuantizedConv2d`] and [`QuantizedConv1d`] (a view of a height-1 [`QuantizedConv2d`]).

use ndarray::{ArrayD, IxDyn};

use super::accumulate::{ActRow, ExactByte, Int8Accumulation, IntWeights, vnni_rows};
#[cfg(target_arch = "x86_64")]
use super::direct;
use super::requant::{Requant, check_bias_values, need_quint8, weight_channels};
use crate::error::{QuantError, Result};
use crate::nn::conv::conv_float;
use crate::nn::geometry::{
    ConvShape, as_height_one, conv_macs, copy_run, images_per_block, valid_range,
};
use crate::nn::module::one_input;
use crate::nn::weighted::check_bias;
use crate::nn::{
    Activation, ConvGeometry, ConvGeometry1d, LayerRole, Module, WeightRef, WeightedCore,
};
use crate::parallel::for_each_block;
use crate::qparams::QParams;
use crate::tensor::QuantizedTensor;

/// Quantized 2-D convolution: quint8 `[N, C, H, W]` → quint8, qint8 weight
/// `[out, in/groups, kh, kw]` per tensor or per output channel, float bias, optional fused ReLU.
/// Padding contributes the input zero point (the value 0). The reduction runs over
/// `(kh, kw, input channel)` with the input channel fastest, within each group (the order of
/// [`Int8Accumulation::X86Avx2`]'s pairs).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedConv2d {
    weight: QuantizedTensor<i8>,
    bias: Option<ArrayD<f32>>,
    geo: ConvGeometry,
    out: QParams,
    relu: bool,
    accumulation: Int8Accumulation,
    /// One set of prepared rows per group, `[out/groups, kh·kw·in/groups]`.
    groups: Vec<IntWeights>,
    w_scales: Vec<f32>,
    /// The weights in the direct convolution's order (`direct.rs`).
    #[cfg(target_arch = "x86_64")]
    direct_w: Vec<i8>,
}

impl QuantizedConv2d {
    /// A quantized convolution; exact accumulation, no ReLU.
    ///
    /// # Errors
    /// As [`QuantizedLinear::new`](super::QuantizedLinear::new) for a 4-D weight;
    /// [`QuantError::InvalidParameter`] for a bad geometry.
    pub fn new(
        weight: QuantizedTensor<i8>,
        bias: Option<ArrayD<f32>>,
        geo: ConvGeometry,
        output: QParams,
    ) -> Result<Self> {
        const OP: &str = "QuantizedConv2d::new";
        let &[o, cg, kh, kw] = weight.shape() else {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0; 4],
                got: weight.shape().to_vec(),
            });
        };
        check_bias(OP, bias.as_ref(), o)?;
        check_bias_values(OP, bias.as_ref())?;
        geo.check(OP, o)?;
        need_quint8(OP, &output)?;
        let (w_scales, zps) = weight_channels(OP, &weight)?;
        let raw = weight.int_repr().as_standard_layout();
        let raw = raw.as_slice().expect("standard layout");
        let og = o / geo.groups;
        let kk = cg * kh * kw;
        let mut groups = Vec::with_capacity(geo.groups);
        for g in 0..geo.groups {
            // [og, cg, kh, kw] → [og, kh, kw, cg]
            let mut rows = Vec::with_capacity(og * kk);
            for oc in g * og..(g + 1) * og {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for ci in 0..cg {
                            rows.push(raw[((oc * cg + ci) * kh + ky) * kw + kx]);
                        }
                    }
                }
            }
            groups.push(IntWeights::new(
                OP,
                &rows,
                og,
                kk,
                &zps[g * og..(g + 1) * og],
            )?);
        }
        #[cfg(target_arch = "x86_64")]
        let direct_w = direct::pack_weights(raw, o, cg, kh * kw);
        Ok(QuantizedConv2d {
            weight,
            bias,
            geo,
            out: output,
            relu: false,
            accumulation: Int8Accumulation::Exact,
            groups,
            w_scales,
            #[cfg(target_arch = "x86_64")]
            direct_w,
        })
    }

    /// Quantizes a float [`Conv2d`](crate::nn::Conv2d)'s weight with `weight_params` (its
    /// fused ReLU is kept).
    ///
    /// # Errors
    /// As [`QuantizedTensor::quantize`] and [`QuantizedConv2d::new`].
    pub fn from_float(
        conv: &crate::nn::Conv2d,
        weight_params: impl Into<crate::qparams::AnyQParams>,
        output: QParams,
    ) -> Result<Self> {
        let core = conv.core();
        let w = QuantizedTensor::<i8>::quantize(core.weight(), weight_params)?;
        let q = QuantizedConv2d::new(w, core.bias().cloned(), conv.geometry(), output)?;
        Ok(if core.has_relu() { q.with_relu() } else { q })
    }

    /// The same layer with a fused ReLU.
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// The same layer with another accumulation mode.
    #[must_use]
    pub fn with_accumulation(mut self, accumulation: Int8Accumulation) -> Self {
        self.accumulation = accumulation;
        self
    }

    /// The accumulation mode.
    #[must_use]
    pub fn accumulation(&self) -> Int8Accumulation {
        self.accumulation
    }

    /// Whether a ReLU is fused.
    #[must_use]
    pub fn has_relu(&self) -> bool {
        self.relu
    }

    /// The geometry.
    #[must_use]
    pub fn geometry(&self) -> ConvGeometry {
        self.geo
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        &self.out
    }

    /// The quantized weight.
    #[must_use]
    pub fn quantized_weight(&self) -> &QuantizedTensor<i8> {
        &self.weight
    }

    fn check_input<'a>(
        &self,
        op: &'static str,
        x: &'a Activation,
    ) -> Result<(&'a QuantizedTensor<u8>, QParams, ConvShape)> {
        let q = x.need_quantized(op)?;
        let qp = *q.need_per_tensor(op)?;
        let s = ConvShape::new(op, q.shape(), self.weight.shape(), self.geo)?;
        Ok((q, qp, s))
    }

    /// The reference path: `dequantize → f32 convolution (+ ReLU) → quantize`.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "QuantizedConv2d::forward_reference";
        let (q, _, _) = self.check_input(OP, x)?;
        let mut core = WeightedCore::new(self.weight.to_float(), self.bias.clone())?;
        if self.relu {
            core = core.with_relu();
        }
        let y = conv_float(OP, q.to_float().view(), core.weight_view(), &core, self.geo)?;
        Ok(Activation::Quantized(QuantizedTensor::quantize(
            &y, self.out,
        )?))
    }

    /// The integer path on a checked input: per block of images, the input is transposed to
    /// channels-last order, unfolded into one row per output position (columns
    /// `(ky, kx, ci)`, the input zero point in the padding), multiplied by each group's weight
    /// panels, requantized and written back channels-first. Rows are `u8` for the x86 AVX2
    /// mode and for exact accumulation where no pair can saturate, else `i16`; exact
    /// accumulation on a CPU with AVX512-VNNI reads `u8` rows summed exactly by quads
    /// (`vpdpbusd`) whatever the input. Blocks run on
    /// the rayon pool for large layers.
    fn run(&self, q: &QuantizedTensor<u8>, qp: QParams, s: &ConvShape) -> Activation {
        #[cfg(target_arch = "x86_64")]
        if let Some(plan) = self.direct_plan(s) {
            return self.run_direct(q, qp, s, &plan);
        }
        if self.accumulation == Int8Accumulation::Exact && vnni_rows() {
            return self.run_as::<ExactByte>(q, qp, s);
        }
        let bytes = match self.accumulation {
            Int8Accumulation::Exact => {
                let x_max = q.int_repr().iter().fold(0, |a, &v| a.max(v));
                self.groups.iter().all(|w| w.bytes_are_exact(x_max))
            }
            Int8Accumulation::X86Avx2 => true,
        };
        if bytes {
            self.run_as::<u8>(q, qp, s)
        } else {
            self.run_as::<i16>(q, qp, s)
        }
    }

    /// The requantization of this layer's sums for an input with parameters `qp`.
    fn requant(&self, qp: QParams) -> Requant {
        Requant::new(
            qp.scale(),
            &self.w_scales,
            self.bias.as_ref(),
            &self.out,
            self.relu,
        )
    }

    /// The direct path's layout (`direct.rs`) where it applies to this layer and input: exact
    /// accumulation, weights without zero points, and the shapes [`direct::Plan::new`] takes.
    #[cfg(target_arch = "x86_64")]
    fn direct_plan(&self, s: &ConvShape) -> Option<direct::Plan> {
        if self.accumulation != Int8Accumulation::Exact
            || self.groups.iter().any(IntWeights::has_zero_points)
        {
            return None;
        }
        direct::Plan::new(s)
    }

    /// [`QuantizedConv2d::run`] by the direct convolution (`direct.rs`): the same sums, so
    /// the same bytes.
    #[cfg(target_arch = "x86_64")]
    fn run_direct(
        &self,
        q: &QuantizedTensor<u8>,
        qp: QParams,
        s: &ConvShape,
        plan: &direct::Plan,
    ) -> Activation {
        let xs = q.int_repr().as_standard_layout();
        let xd = xs.as_slice().expect("standard layout");
        let zx = u8::try_from(qp.zero_point()).expect("a quint8 zero point is in 0..=255");
        let sums = self.groups.iter().flat_map(|w| w.sums().iter().copied());
        let pre = direct::Prepared::new(&self.direct_w, sums, zx, &self.requant(qp));
        let (image, per_image) = (s.c_in * s.h * s.w, s.c_out * s.positions());
        let mut out = vec![0u8; s.n * per_image];
        let block = images_per_block(s, ROWS_PER_BLOCK);
        for_each_block(
            &mut out,
            block * per_image,
            conv_macs(s),
            |bi, out_b: &mut [u8], scratch: &mut direct::Scratch| {
                let nb = out_b.len() / per_image.max(1);
                let x_b = &xd[bi * block * image..][..nb * image];
                direct::run_block(s, plan, &pre, x_b, out_b, scratch);
            },
        );
        let arr =
            ArrayD::from_shape_vec(IxDyn(&[s.n, s.c_out, s.oh, s.ow]), out).expect("output size");
        Activation::Quantized(QuantizedTensor::from_valid_parts(arr, self.out))
    }

    /// [`QuantizedConv2d::run`] with rows of `T`.
    fn run_as<T: ActRow>(&self, q: &QuantizedTensor<u8>, qp: QParams, s: &ConvShape) -> Activation {
        let xs = q.int_repr().as_standard_layout();
        let xd = xs.as_slice().expect("standard layout");
        let zx = qp.zero_point();

        let (og, l) = (s.og(), s.positions());
        let plane = s.h * s.w;
        let pad_byte = u8::try_from(zx).expect("a quint8 zero point is in 0..=255");
        let pad = T::from(pad_byte);
        let padded = padded_plane(s);
        let rq = self.requant(qp);
        let mut out = vec![0u8; s.n * s.c_out * l];
        let block = images_per_block(s, ROWS_PER_BLOCK);
        let per_image = s.c_out * l;
        for_each_block(
            &mut out,
            block * per_image,
            conv_macs(s),
            |bi0, out_b: &mut [u8], scratch: &mut Scratch<T>| {
                let b0 = bi0 * block;
                let nb = out_b.len() / per_image.max(1);
                let m = nb * l;
                let Scratch {
                    hwc,
                    wide,
                    rows,
                    acc,
                    q,
                } = scratch;
                let x_b = &xd[b0 * s.c_in * plane..][..nb * s.c_in * plane];
                let img_len = match padded {
                    // [nb, c_in, h, w] → [nb, h + 2·ph, w + 2·pw, c_in], the zero point around
                    Some((hp, wp)) => {
                        let img_len = hp * wp * s.c_in;
                        hwc.clear();
                        hwc.resize(nb * img_len + SLACK, pad_byte);
                        let [ph, pw] = s.geo.padding;
                        for (src, dst) in x_b
                            .chunks_exact((s.c_in * plane).max(1))
                            .zip(hwc.chunks_exact_mut(img_len.max(1)))
                        {
                            for iy in 0..s.h {
                                let d = &mut dst[((iy + ph) * wp + pw) * s.c_in..];
                                transpose_bytes(&src[iy * s.w..], plane, s.c_in, s.w, d, s.c_in);
                            }
                        }
                        img_len
                    }
                    // [nb, c_in, h, w] → [nb, h, w, c_in]
                    None => {
                        hwc.resize(nb * plane * s.c_in, 0);
                        for (src, dst) in x_b
                            .chunks_exact((s.c_in * plane).max(1))
                            .zip(hwc.chunks_exact_mut((s.c_in * plane).max(1)))
                        {
                            transpose_bytes(src, plane, s.c_in, plane, dst, s.c_in);
                        }
                        plane * s.c_in
                    }
                };
                wide.clear();
                wide.extend(hwc.iter().map(|&v| T::from(v)));
                for (g, w) in self.groups.iter().enumerate() {
                    let lda = w.row_len::<T>();
                    rows.resize(m * lda + SLACK, T::default());
                    for i in 0..nb {
                        let img = &wide[i * img_len..];
                        let rows_i = &mut rows[i * l * lda..];
                        match padded {
                            Some((_, wp)) => unfold_padded(s, wp, img, g, lda, rows_i),
                            None => unfold(s, img, g, pad, lda, &mut rows_i[..l * lda]),
                        }
                    }
                    let rows = &rows[..m * lda];
                    acc.resize(m * og, 0);
                    w.accumulate_rows(rows, m, lda, zx, acc);
                    q.resize(m * og, 0);
                    rq.apply_rows(acc, g * og, og, q);
                    // [nb, l, og] → [nb, og, l] into the group's channels
                    for (src, dst) in q
                        .chunks_exact(l * og)
                        .zip(out_b.chunks_exact_mut(per_image))
                    {
                        transpose_bytes(src, og, l, og, &mut dst[g * og * l..], l);
                    }
                }
            },
        );
        let arr =
            ArrayD::from_shape_vec(IxDyn(&[s.n, s.c_out, s.oh, s.ow]), out).expect("output size");
        Activation::Quantized(QuantizedTensor::from_valid_parts(arr, self.out))
    }
}

/// Values of unfolded rows per block of images of [`QuantizedConv2d::run`] (in L2; blocks of
/// 16 K values, in L1, measured no faster).
const ROWS_PER_BLOCK: usize = 256 << 10;

/// Per-thread buffers of [`QuantizedConv2d::run`]: the channels-last input, the unfolded
/// rows, the accumulators and the requantized rows of one block.
#[derive(Default)]
struct Scratch<T> {
    hwc: Vec<u8>,
    wide: Vec<T>,
    rows: Vec<T>,
    acc: Vec<i32>,
    q: Vec<u8>,
}

/// The unfolded rows of one channels-last image `img` (`[h, w, c_in]`, widened) for group `g`: row `p`
/// (an output position) is `rows[p·lda..]`, column `(ky·kw + kx)·cg + ci` the input value
/// under tap `(ky, kx)` of channel `g·cg + ci` (`pad`, the input zero point, in the padding),
/// then zeros up to `lda`.
#[inline(always)]
fn unfold_body<T: ActRow>(s: &ConvShape, img: &[T], g: usize, pad: T, lda: usize, rows: &mut [T]) {
    let cg = s.cg();
    let kk = cg * s.kh * s.kw;
    let [sh, sw] = s.geo.stride;
    let [ph, pw] = s.geo.padding;
    let [dh, dw] = s.geo.dilation;
    for ky in 0..s.kh {
        for kx in 0..s.kw {
            let tap = (ky * s.kw + kx) * cg;
            let (lo, hi) = valid_range(s.w, s.ow, sw, kx * dw, pw);
            for oy in 0..s.oh {
                let rows_y = &mut rows[oy * s.ow * lda..][..s.ow * lda];
                let iy = (oy * sh + ky * dh).checked_sub(ph).filter(|&iy| iy < s.h);
                let (lo, hi) = if iy.is_some() { (lo, hi) } else { (s.ow, s.ow) };
                // (Index arithmetic: `chunks_exact_mut(lda)` divides by `lda` per call.)
                for ox in (0..lo).chain(hi..s.ow) {
                    rows_y[ox * lda + tap..][..cg].fill(pad);
                }
                if let Some(iy) = iy.filter(|_| lo < hi) {
                    let src0 = (iy * s.w + lo * sw + kx * dw - pw) * s.c_in + g * cg;
                    for (j, ox) in (lo..hi).enumerate() {
                        let src = &img[src0 + j * sw * s.c_in..][..cg];
                        copy_run(&mut rows_y[ox * lda + tap..][..cg], src);
                    }
                }
            }
        }
    }
    for row in rows.chunks_exact_mut(lda) {
        row[kk..].fill(T::default());
    }
}

crate::simd::dispatched!(fn unfold[T: ActRow](s: &ConvShape, img: &[T], g: usize, pad: T, lda: usize, rows: &mut [T]) = unfold_body);

/// Spare values after the padded images and the unfolded rows of [`QuantizedConv2d::run`], so
/// [`copy_over`] can move whole 8-value pieces up to their end.
const SLACK: usize = 8;

/// The padded plane `(h + 2·ph, w + 2·pw)` of [`unfold_padded`], where it is no larger than
/// the image and its unfolded taps (else the unfolding skips the padding per position).
fn padded_plane(s: &ConvShape) -> Option<(usize, usize)> {
    let [ph, pw] = s.geo.padding;
    let hp = ph.checked_mul(2)?.checked_add(s.h)?;
    let wp = pw.checked_mul(2)?.checked_add(s.w)?;
    let area = hp.checked_mul(wp)?;
    let taps = s.positions().saturating_mul(s.kh * s.kw);
    (area <= (s.h * s.w).saturating_add(taps)).then_some((hp, wp))
}

/// The number `C` of 8-value pieces a copy of [`unfold_padded`] moves, as a type: a copy of
/// a size known when compiling is a few moves, where one of a size known only when running
/// is a call to `memcpy` (which cost more than the copy for these short runs). `C = 0`: any
/// size.
#[derive(Clone, Copy)]
struct Pieces<const C: usize>;

/// `dst[..n] = src[..n]`, as `C` whole 8-value pieces where `C > 0` and both slices have
/// room for them (it then also writes `dst[n..8·C]`, which the caller overwrites later).
#[inline(always)]
fn copy_over<T: Copy, const C: usize>(dst: &mut [T], src: &[T], n: usize, _: Pieces<C>) {
    if C > 0 && dst.len() >= 8 * C && src.len() >= 8 * C {
        dst[..8 * C].copy_from_slice(&src[..8 * C]);
    } else {
        copy_run(&mut dst[..n], &src[..n]);
    }
}

/// The rows of [`unfold`] from a padded channels-last image (`img`: `[h + 2·ph, wp, c_in]`,
/// the zero point in the border, then at least [`SLACK`] values): every tap lies inside, so a
/// row is a copy per tap (per kernel row where the taps of a kernel row are adjacent). `rows`
/// holds at least [`SLACK`] values after the image's rows; values past the rows may be
/// overwritten.
fn unfold_padded<T: ActRow>(
    s: &ConvShape,
    wp: usize,
    img: &[T],
    g: usize,
    lda: usize,
    rows: &mut [T],
) {
    let run = if s.geo.dilation[1] == 1 && s.cg() == s.c_in {
        s.kw * s.cg()
    } else {
        s.cg()
    };
    let a = (s, wp, img, g, lda);
    match run.div_ceil(8) {
        1 => unfold_pieces(a, Pieces::<1>, rows),
        2 => unfold_pieces(a, Pieces::<2>, rows),
        3 => unfold_pieces(a, Pieces::<3>, rows),
        4 => unfold_pieces(a, Pieces::<4>, rows),
        5 => unfold_pieces(a, Pieces::<5>, rows),
        6 => unfold_pieces(a, Pieces::<6>, rows),
        8 => unfold_pieces(a, Pieces::<8>, rows),
        _ => unfold_pieces(a, Pieces::<0>, rows),
    }
}

/// The arguments of [`unfold_padded`] but the rows.
type UnfoldArgs<'a, T> = (&'a ConvShape, usize, &'a [T], usize, usize);

/// [`unfold_padded`] with runs of `C` pieces.
#[inline(always)]
fn unfold_pieces_body<T: ActRow, const C: usize>(
    a: UnfoldArgs<'_, T>,
    c: Pieces<C>,
    rows: &mut [T],
) {
    let (s, wp, img, g, lda) = a;
    let cg = s.cg();
    let kk = cg * s.kh * s.kw;
    let [sh, sw] = s.geo.stride;
    let [dh, dw] = s.geo.dilation;
    let adjacent = dw == 1 && cg == s.c_in;
    let zeros = [T::default(); 8];
    for oy in 0..s.oh {
        for ox in 0..s.ow {
            let at = (oy * s.ow + ox) * lda;
            for ky in 0..s.kh {
                let base = ((oy * sh + ky * dh) * wp + ox * sw) * s.c_in + g * cg;
                let col = at + ky * s.kw * cg;
                if adjacent {
                    copy_over(&mut rows[col..], &img[base..], s.kw * cg, c);
                } else {
                    for kx in 0..s.kw {
                        let src = &img[base + kx * dw * s.c_in..];
                        copy_over(&mut rows[col + kx * cg..], src, cg, c);
                    }
                }
            }
            for col in (kk..lda).step_by(8) {
                copy_over(
                    &mut rows[at + col..],
                    &zeros,
                    (lda - col).min(8),
                    Pieces::<1>,
                );
            }
        }
    }
}

crate::simd::dispatched!(fn unfold_pieces[T: ActRow, const C: usize](a: UnfoldArgs<'_, T>, c: Pieces<C>, rows: &mut [T]) = unfold_pieces_body);

/// `dst[j·dst_stride + i] = src[i·src_stride + j]` for `i < rows`, `j < cols`: 16 × 16 and
/// 8 × 8 blocks transposed in registers, the edges one byte at a time.
fn transpose_bytes(
    src: &[u8],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [u8],
    dst_stride: usize,
) {
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    // 16 × 16 blocks with SSE2 byte unpacks (every x86-64 CPU) where the shape has them.
    #[cfg(target_arch = "x86_64")]
    let (r16, c16) = {
        let (r16, c16) = (rows / 16 * 16, cols / 16 * 16);
        for i0 in (0..r16).step_by(16) {
            for j0 in (0..c16).step_by(16) {
                sse2::block16(src, src_stride, i0, j0, dst, dst_stride);
            }
        }
        (r16, c16)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (r16, c16) = (0, 0);
    for i0 in (0..r8).step_by(8) {
        for j0 in (0..c8).step_by(8) {
            if i0 < r16 && j0 < c16 {
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            sse2::block8(src, src_stride, i0, j0, dst, dst_stride);
            #[cfg(not(target_arch = "x86_64"))]
            block8(src, src_stride, i0, j0, dst, dst_stride);
        }
    }
    for i in 0..rows {
        let js = if i < r8 { c8..cols } else { 0..cols };
        for j in js {
            dst[j * dst_stride + i] = src[i * src_stride + j];
        }
    }
}

/// One 8 × 8 block of [`transpose_bytes`] in 64-bit words (three rounds of byte swaps between
/// rows), where SSE2 is not there.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn block8(src: &[u8], src_stride: usize, i0: usize, j0: usize, dst: &mut [u8], dst_stride: usize) {
    let mut x = [0u64; 8];
    for (r, v) in x.iter_mut().enumerate() {
        let b: [u8; 8] = src[(i0 + r) * src_stride + j0..][..8]
            .try_into()
            .expect("eight bytes");
        *v = u64::from_le_bytes(b);
    }
    for (half, mask) in [
        (4usize, 0x0000_0000_ffff_ffffu64),
        (2, 0x0000_ffff_0000_ffff),
        (1, 0x00ff_00ff_00ff_00ff),
    ] {
        for i in (0..8).filter(|i| i & half == 0) {
            let t = ((x[i] >> (8 * half)) ^ x[i + half]) & mask;
            x[i] ^= t << (8 * half);
            x[i + half] ^= t;
        }
    }
    for (c, v) in x.iter().enumerate() {
        dst[(j0 + c) * dst_stride + i0..][..8].copy_from_slice(&v.to_le_bytes());
    }
}

/// The 16 × 16 byte transpose of [`transpose_bytes`] in SSE2 registers.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod sse2 {
    use std::arch::x86_64::*;

    /// `dst[(j0 + c)·dst_stride + i0 + r] = src[(i0 + r)·src_stride + j0 + c]` for
    /// `r, c < 16`: four rounds of unpacks (bytes, 16-bit, 32-bit, 64-bit units).
    pub(super) fn block16(
        src: &[u8],
        src_stride: usize,
        i0: usize,
        j0: usize,
        dst: &mut [u8],
        dst_stride: usize,
    ) {
        // SAFETY: SSE2 is part of every x86-64 CPU.
        unsafe { block16_sse2(src, src_stride, i0, j0, dst, dst_stride) }
    }

    /// [`block16`] for `r, c < 8`: three rounds of unpacks (bytes, 16-bit, 32-bit units).
    pub(super) fn block8(
        src: &[u8],
        src_stride: usize,
        i0: usize,
        j0: usize,
        dst: &mut [u8],
        dst_stride: usize,
    ) {
        // SAFETY: SSE2 is part of every x86-64 CPU.
        unsafe { block8_sse2(src, src_stride, i0, j0, dst, dst_stride) }
    }

    #[target_feature(enable = "sse2")]
    fn block8_sse2(
        src: &[u8],
        src_stride: usize,
        i0: usize,
        j0: usize,
        dst: &mut [u8],
        dst_stride: usize,
    ) {
        let r: [__m128i; 8] = std::array::from_fn(|k| {
            let row: &[u8; 8] = src[(i0 + k) * src_stride + j0..][..8]
                .try_into()
                .expect("eight bytes");
            // SAFETY: `row` is 8 readable bytes; the 64-bit load is unaligned.
            unsafe { _mm_loadl_epi64(row.as_ptr().cast()) }
        });
        // Bytes: a[m] columns 0–7 of rows 2m, 2m + 1, interleaved.
        let a = [
            _mm_unpacklo_epi8(r[0], r[1]),
            _mm_unpacklo_epi8(r[2], r[3]),
            _mm_unpacklo_epi8(r[4], r[5]),
            _mm_unpacklo_epi8(r[6], r[7]),
        ];
        // 16-bit units: b[2h + q] columns 4q..4q + 4 of rows 4h..4h + 4.
        let b = [
            _mm_unpacklo_epi16(a[0], a[1]),
            _mm_unpackhi_epi16(a[0], a[1]),
            _mm_unpacklo_epi16(a[2], a[3]),
            _mm_unpackhi_epi16(a[2], a[3]),
        ];
        // 32-bit units: c[q] columns 2q, 2q + 1 of rows 0..8 (8 bytes each).
        let c = [
            _mm_unpacklo_epi32(b[0], b[2]),
            _mm_unpackhi_epi32(b[0], b[2]),
            _mm_unpacklo_epi32(b[1], b[3]),
            _mm_unpackhi_epi32(b[1], b[3]),
        ];
        for j in 0..8 {
            let col = if j % 2 == 0 {
                c[j / 2]
            } else {
                _mm_unpackhi_epi64(c[j / 2], c[j / 2])
            };
            let out: &mut [u8; 8] = (&mut dst[(j0 + j) * dst_stride + i0..][..8])
                .try_into()
                .expect("eight bytes");
            // SAFETY: `out` is 8 writable bytes; the 64-bit store is unaligned.
            unsafe { _mm_storel_epi64(out.as_mut_ptr().cast(), col) };
        }
    }

    #[target_feature(enable = "sse2")]
    fn block16_sse2(
        src: &[u8],
        src_stride: usize,
        i0: usize,
        j0: usize,
        dst: &mut [u8],
        dst_stride: usize,
    ) {
        let r: [__m128i; 16] = std::array::from_fn(|k| {
            let row: &[u8; 16] = src[(i0 + k) * src_stride + j0..][..16]
                .try_into()
                .expect("sixteen bytes");
            // SAFETY: `row` is 16 readable bytes; the load is unaligned.
            unsafe { _mm_loadu_si128(row.as_ptr().cast()) }
        });
        // Bytes: a[2k] columns 0–7, a[2k + 1] columns 8–15 of rows 2k, 2k + 1, interleaved.
        // (Written out: array-building closures kept the registers in memory.)
        let a = [
            _mm_unpacklo_epi8(r[0], r[1]),
            _mm_unpackhi_epi8(r[0], r[1]),
            _mm_unpacklo_epi8(r[2], r[3]),
            _mm_unpackhi_epi8(r[2], r[3]),
            _mm_unpacklo_epi8(r[4], r[5]),
            _mm_unpackhi_epi8(r[4], r[5]),
            _mm_unpacklo_epi8(r[6], r[7]),
            _mm_unpackhi_epi8(r[6], r[7]),
            _mm_unpacklo_epi8(r[8], r[9]),
            _mm_unpackhi_epi8(r[8], r[9]),
            _mm_unpacklo_epi8(r[10], r[11]),
            _mm_unpackhi_epi8(r[10], r[11]),
            _mm_unpacklo_epi8(r[12], r[13]),
            _mm_unpackhi_epi8(r[12], r[13]),
            _mm_unpacklo_epi8(r[14], r[15]),
            _mm_unpackhi_epi8(r[14], r[15]),
        ];
        // 16-bit units: b[4m + q] columns 4q..4q + 4 of rows 4m..4m + 4.
        let b = [
            _mm_unpacklo_epi16(a[0], a[2]),
            _mm_unpackhi_epi16(a[0], a[2]),
            _mm_unpacklo_epi16(a[1], a[3]),
            _mm_unpackhi_epi16(a[1], a[3]),
            _mm_unpacklo_epi16(a[4], a[6]),
            _mm_unpackhi_epi16(a[4], a[6]),
            _mm_unpacklo_epi16(a[5], a[7]),
            _mm_unpackhi_epi16(a[5], a[7]),
            _mm_unpacklo_epi16(a[8], a[10]),
            _mm_unpackhi_epi16(a[8], a[10]),
            _mm_unpacklo_epi16(a[9], a[11]),
            _mm_unpackhi_epi16(a[9], a[11]),
            _mm_unpacklo_epi16(a[12], a[14]),
            _mm_unpackhi_epi16(a[12], a[14]),
            _mm_unpacklo_epi16(a[13], a[15]),
            _mm_unpackhi_epi16(a[13], a[15]),
        ];
        // 32-bit units: c[8h + 2q + e] columns 4q + 2e, 4q + 2e + 1 of rows 8h..8h + 8.
        let c = [
            _mm_unpacklo_epi32(b[0], b[4]),
            _mm_unpackhi_epi32(b[0], b[4]),
            _mm_unpacklo_epi32(b[1], b[5]),
            _mm_unpackhi_epi32(b[1], b[5]),
            _mm_unpacklo_epi32(b[2], b[6]),
            _mm_unpackhi_epi32(b[2], b[6]),
            _mm_unpacklo_epi32(b[3], b[7]),
            _mm_unpackhi_epi32(b[3], b[7]),
            _mm_unpacklo_epi32(b[8], b[12]),
            _mm_unpackhi_epi32(b[8], b[12]),
            _mm_unpacklo_epi32(b[9], b[13]),
            _mm_unpackhi_epi32(b[9], b[13]),
            _mm_unpacklo_epi32(b[10], b[14]),
            _mm_unpackhi_epi32(b[10], b[14]),
            _mm_unpacklo_epi32(b[11], b[15]),
            _mm_unpackhi_epi32(b[11], b[15]),
        ];
        // 64-bit units: column j = 4q + 2e + f, rows 0..16.
        for j in 0..16 {
            let (q, e, f) = (j / 4, (j % 4) / 2, j % 2);
            let (x, y) = (c[2 * q + e], c[8 + 2 * q + e]);
            let col = if f == 0 {
                _mm_unpacklo_epi64(x, y)
            } else {
                _mm_unpackhi_epi64(x, y)
            };
            let out: &mut [u8; 16] = (&mut dst[(j0 + j) * dst_stride + i0..][..16])
                .try_into()
                .expect("sixteen bytes");
            // SAFETY: `out` is 16 writable bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), col) };
        }
    }
}

impl Module for QuantizedConv2d {
    fn kind(&self) -> &'static str {
        if self.relu {
            "QuantizedConvReLU2d"
        } else {
            "QuantizedConv2d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        let (q, qp, s) = self.check_input("QuantizedConv2d::forward", x)?;
        Ok(self.run(q, qp, &s))
    }

    fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
        Some(one_input("Module::reference", inputs).and_then(|x| self.forward_reference(x)))
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Quantized(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.bias.as_ref()
    }
}

/// Quantized 1-D convolution over `[N, C, L]`, weight `[out, in/groups, k]`: a height-1
/// [`QuantizedConv2d`] (PyTorch's quantized `Conv1d`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedConv1d {
    weight: QuantizedTensor<i8>,
    inner: QuantizedConv2d,
}

impl QuantizedConv1d {
    /// A quantized 1-D convolution; exact accumulation, no ReLU.
    ///
    /// # Errors
    /// As [`QuantizedConv2d::new`] for a 3-D weight.
    pub fn new(
        weight: QuantizedTensor<i8>,
        bias: Option<ArrayD<f32>>,
        geo: ConvGeometry1d,
        output: QParams,
    ) -> Result<Self> {
        if weight.shape().len() != 3 {
            return Err(QuantError::ShapeMismatch {
                op: "QuantizedConv1d::new",
                expected: vec![0; 3],
                got: weight.shape().to_vec(),
            });
        }
        let (data, params) = weight.clone().into_parts();
        let w4 = data
            .into_shape_with_order(IxDyn(&as_height_one(weight.shape())))
            .ok()
            .map(|d| QuantizedTensor::from_parts(d, params))
            .transpose()?
            .ok_or(QuantError::ShapeMismatch {
                op: "QuantizedConv1d::new",
                expected: as_height_one(weight.shape()),
                got: weight.shape().to_vec(),
            })?;
        let inner = QuantizedConv2d::new(w4, bias, geo.to_2d(), output)?;
        Ok(QuantizedConv1d { weight, inner })
    }

    /// The same layer with a fused ReLU.
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.inner = self.inner.with_relu();
        self
    }

    /// The same layer with another accumulation mode.
    #[must_use]
    pub fn with_accumulation(mut self, accumulation: Int8Accumulation) -> Self {
        self.inner = self.inner.with_accumulation(accumulation);
        self
    }

    /// The output parameters.
    #[must_use]
    pub fn output_qparams(&self) -> &QParams {
        self.inner.output_qparams()
    }

    /// The height-1 2-D convolution it runs.
    #[must_use]
    pub fn as_conv2d(&self) -> &QuantizedConv2d {
        &self.inner
    }

    fn lift(op: &'static str, x: &Activation) -> Result<Activation> {
        let q = x.need_quantized(op)?;
        if q.shape().len() != 3 {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: vec![0; 3],
                got: q.shape().to_vec(),
            });
        }
        let data = q
            .int_repr()
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&as_height_one(q.shape())))
            .expect("same number of elements");
        Ok(Activation::Quantized(q.with_data(data)))
    }

    fn lower(y: Activation) -> Activation {
        match y {
            Activation::Quantized(q) => {
                let s = q.shape();
                let shape = [s[0], s[1], s[3]];
                let data = q
                    .int_repr()
                    .clone()
                    .into_shape_with_order(IxDyn(&shape))
                    .expect("height-1 output");
                Activation::Quantized(q.with_data(data))
            }
            float => float,
        }
    }

    /// The reference path: `dequantize → f32 convolution (+ ReLU) → quantize`.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_reference(&self, x: &Activation) -> Result<Activation> {
        let x4 = Self::lift("QuantizedConv1d::forward_reference", x)?;
        Ok(Self::lower(self.inner.forward_reference(&x4)?))
    }
}

impl Module for QuantizedConv1d {
    fn kind(&self) -> &'static str {
        if self.inner.has_relu() {
            "QuantizedConvReLU1d"
        } else {
            "QuantizedConv1d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        let x4 = Self::lift("QuantizedConv1d::forward", x)?;
        Ok(Self::lower(self.inner.forward(&x4)?))
    }

    fn reference(&self, inputs: &[&Activation]) -> Option<Result<Activation>> {
        Some(one_input("Module::reference", inputs).and_then(|x| self.forward_reference(x)))
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Quantized
    }

    fn weight(&self) -> Option<WeightRef<'_>> {
        Some(WeightRef::Quantized(&self.weight))
    }

    fn bias(&self) -> Option<&ArrayD<f32>> {
        self.inner.bias()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ConvGeometry;

    /// The unfolding from a padded image writes the rows the per-position unfolding writes
    /// (strides, dilations, groups, kernels wider than the image, channel counts below and
    /// above the 8-value moves), for byte and 16-bit rows.
    #[test]
    fn padded_unfolding_equals_the_clipped_one() {
        fn check<T: ActRow + PartialEq + std::fmt::Debug>(s: &ConvShape, lda: usize, pad: u8) {
            let (plane, c) = (s.h * s.w, s.c_in);
            let img: Vec<u8> = (0..plane * c).map(|i| (i * 37 % 251) as u8).collect();
            let wide: Vec<T> = img.iter().map(|&v| T::from(v)).collect();
            let (hp, wp) = padded_plane(s).expect("small padding");
            let [ph, pw] = s.geo.padding;
            let mut padded = vec![T::from(pad); hp * wp * c + SLACK];
            for iy in 0..s.h {
                for ix in 0..s.w {
                    for ci in 0..c {
                        padded[((iy + ph) * wp + ix + pw) * c + ci] =
                            wide[(iy * s.w + ix) * c + ci];
                    }
                }
            }
            let l = s.positions();
            for g in 0..s.geo.groups {
                let mut want = vec![T::default(); l * lda];
                unfold(s, &wide, g, T::from(pad), lda, &mut want);
                let mut got = vec![T::from(99); l * lda + SLACK];
                unfold_padded(s, wp, &padded, g, lda, &mut got);
                assert_eq!(&got[..l * lda], &want[..], "{s:?} group {g} lda {lda}");
            }
        }
        for (c_in, c_out, [h, w], [kh, kw], geo) in [
            (1, 16, [8, 8], [3, 3], ConvGeometry::default().padding(1, 1)),
            (3, 4, [9, 7], [3, 3], ConvGeometry::default().padding(1, 1)),
            (
                16,
                32,
                [8, 8],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
            (2, 2, [5, 6], [5, 5], ConvGeometry::default().padding(2, 3)),
            (
                4,
                6,
                [11, 10],
                [3, 3],
                ConvGeometry::default().stride(2, 2).padding(1, 0),
            ),
            (
                6,
                4,
                [12, 12],
                [3, 3],
                ConvGeometry::default().dilation(2, 3).padding(2, 3),
            ),
            (
                8,
                8,
                [7, 9],
                [3, 3],
                ConvGeometry::default().groups(4).padding(1, 1),
            ),
            (12, 6, [6, 6], [1, 1], ConvGeometry::default().groups(3)),
            (
                5,
                5,
                [4, 4],
                [3, 3],
                ConvGeometry::default().groups(5).stride(1, 2).padding(1, 1),
            ),
            (3, 3, [2, 2], [3, 3], ConvGeometry::default().padding(2, 2)),
        ] {
            let s = ConvShape::new(
                "t",
                &[2, c_in, h, w],
                &[c_out, c_in / geo.groups, kh, kw],
                geo,
            )
            .expect("shape");
            let kk = s.cg() * kh * kw;
            for lda in [kk.next_multiple_of(4), kk.next_multiple_of(2), kk + 9] {
                check::<u8>(&s, lda, 7);
                check::<i16>(&s, lda, 200);
            }
        }
        // A padding much larger than the image is unfolded per position instead.
        let huge = ConvGeometry::default().padding(40, 40).stride(40, 40);
        let s = ConvShape::new("t", &[1, 1, 2, 2], &[1, 1, 1, 1], huge).expect("shape");
        assert_eq!(padded_plane(&s), None);
    }

    /// The direct convolution (`direct.rs`) writes the bytes of the general path: geometries
    /// with and without padding, dilations, groups, 1 × 1 and wide kernels, channel counts
    /// that are and are not multiples of four, full-range inputs and weights, zero points
    /// at both ends, a fused ReLU, and biases that saturate (±inf) or swamp the sums.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn direct_convolution_writes_the_bytes_of_the_general_path() {
        use crate::dtype::QDType;
        use crate::qparams::PerChannelQParams;
        if !crate::simd::has_avx512_vnni() {
            return; // no AVX512-VNNI here (or QNUMERIC_NO_VNNI / QNUMERIC_NO_AVX512): no direct path
        }
        let mut rng = crate::rng::Lcg::new(41);
        let mut tried = 0;
        for (n, c_in, c_out, [h, w], [kh, kw], geo) in [
            (
                3,
                1,
                16,
                [8, 8],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
            (
                2,
                16,
                32,
                [8, 8],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
            (2, 3, 5, [5, 7], [3, 3], ConvGeometry::default()),
            (
                2,
                5,
                9,
                [6, 9],
                [5, 3],
                ConvGeometry::default().padding(2, 1),
            ),
            (
                1,
                8,
                12,
                [7, 7],
                [3, 3],
                ConvGeometry::default().dilation(2, 2).padding(2, 2),
            ),
            (
                2,
                8,
                8,
                [6, 6],
                [3, 3],
                ConvGeometry::default().groups(2).padding(1, 1),
            ),
            (2, 12, 6, [4, 4], [1, 1], ConvGeometry::default().groups(3)),
            (
                1,
                64,
                17,
                [5, 5],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
            (
                1,
                126,
                9,
                [4, 6],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
            (
                2,
                2,
                3,
                [1, 30],
                [1, 5],
                ConvGeometry::default().padding(0, 2),
            ),
            (
                4,
                3,
                40,
                [3, 3],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
            (
                1,
                2,
                3,
                [2, 2],
                [3, 3],
                ConvGeometry::default().padding(2, 2),
            ),
            (
                2,
                7,
                9,
                [13, 11],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
        ] {
            let cg = c_in / geo.groups;
            let wshape = [c_out, cg, kh, kw];
            let wn: usize = wshape.iter().product();
            let wq: Vec<i8> = (0..wn)
                .map(|i| match i % 11 {
                    0 => -128,
                    1 => 127,
                    _ => (rng.next_u64() >> 56) as u8 as i8,
                })
                .collect();
            let scales: Vec<f32> = (0..c_out).map(|o| 0.002 + 0.0007 * o as f32).collect();
            let wp = PerChannelQParams::new(scales, vec![0; c_out], 0, QDType::QInt8).expect("qp");
            let weight = QuantizedTensor::from_parts(
                ArrayD::from_shape_vec(IxDyn(&wshape), wq).expect("w"),
                wp,
            )
            .expect("weight");
            let bias: Vec<f32> = (0..c_out)
                .map(|o| match o % 7 {
                    0 => f32::INFINITY,
                    1 => f32::NEG_INFINITY,
                    2 => 1e6,
                    _ => (o as f32 - 3.0) * 0.37,
                })
                .collect();
            let bias = ArrayD::from_shape_vec(IxDyn(&[c_out]), bias).expect("bias");
            let xn = n * c_in * h * w;
            let x: Vec<u8> = (0..xn)
                .map(|i| match i % 13 {
                    0 => 255,
                    1 => 0,
                    _ => (rng.next_u64() >> 56) as u8,
                })
                .collect();
            for (zx, zo, relu) in [
                (0, 0, false),
                (128, 77, true),
                (255, 255, false),
                (3, 128, true),
            ] {
                let xq = QuantizedTensor::from_parts(
                    ArrayD::from_shape_vec(IxDyn(&[n, c_in, h, w]), x.clone()).expect("x"),
                    QParams::new(0.04, zx, QDType::QUInt8).expect("qp"),
                )
                .expect("input");
                let out = QParams::new(0.3, zo, QDType::QUInt8).expect("qp");
                let mut layer = QuantizedConv2d::new(weight.clone(), Some(bias.clone()), geo, out)
                    .expect("layer");
                if relu {
                    layer = layer.with_relu();
                }
                let xa = Activation::Quantized(xq);
                let (q, qp, s) = layer.check_input("t", &xa).expect("input");
                let plan = layer.direct_plan(&s).expect("a shape of the direct path");
                let direct = layer.run_direct(q, qp, &s, &plan);
                let general = layer.run_as::<ExactByte>(q, qp, &s);
                assert_eq!(
                    direct.need_quantized("t").expect("q").int_repr(),
                    general.need_quantized("t").expect("q").int_repr(),
                    "{s:?} zx={zx} zo={zo} relu={relu}"
                );
                tried += 1;
            }
        }
        assert_eq!(tried, 52);
    }

    /// Strides, weight zero points, the emulated mode and wide layers keep the general path.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn direct_convolution_only_where_it_applies() {
        use crate::dtype::QDType;
        if !crate::simd::has_avx512_vnni() {
            return; // no AVX512-VNNI here: no direct path at all
        }
        let layer = |cg: usize, zw: i64, geo: ConvGeometry| {
            let w = QuantizedTensor::from_parts(
                ArrayD::from_elem(IxDyn(&[4, cg, 3, 3]), 1i8),
                QParams::new(0.01, zw, QDType::QInt8).expect("qp"),
            )
            .expect("w");
            let out = QParams::new(0.1, 0, QDType::QUInt8).expect("qp");
            QuantizedConv2d::new(w, None, geo, out).expect("layer")
        };
        let shape = |cg: usize, geo| {
            ConvShape::new("t", &[1, cg, 8, 8], &[4, cg, 3, 3], geo).expect("shape")
        };
        let same = ConvGeometry::default().padding(1, 1);
        assert!(layer(4, 0, same).direct_plan(&shape(4, same)).is_some());
        let strided = same.stride(2, 2);
        assert!(
            layer(4, 0, strided)
                .direct_plan(&shape(4, strided))
                .is_none()
        );
        assert!(layer(4, 3, same).direct_plan(&shape(4, same)).is_none());
        let emulated = layer(4, 0, same).with_accumulation(Int8Accumulation::X86Avx2);
        assert!(emulated.direct_plan(&shape(4, same)).is_none());
        assert!(layer(128, 0, same).direct_plan(&shape(128, same)).is_some());
        assert!(layer(129, 0, same).direct_plan(&shape(129, same)).is_none());
    }

    #[test]
    fn byte_transpose_equals_the_plain_one_at_every_shape() {
        for (rows, cols) in [
            (1, 1),
            (3, 5),
            (8, 8),
            (9, 17),
            (16, 64),
            (64, 32),
            (23, 8),
            (33, 47),
            (48, 200),
            (196, 256),
        ] {
            let (ss, ds) = (cols + 3, rows + 5);
            let src: Vec<u8> = (0..rows * ss).map(|i| (i * 37 % 251) as u8).collect();
            let mut dst = vec![0u8; cols * ds];
            transpose_bytes(&src, ss, rows, cols, &mut dst, ds);
            // The portable 8 × 8 blocks (other CPUs) on the whole 8 × 8 grid.
            let mut port = vec![0u8; cols * ds];
            for i0 in (0..rows / 8 * 8).step_by(8) {
                for j0 in (0..cols / 8 * 8).step_by(8) {
                    block8(&src, ss, i0, j0, &mut port, ds);
                    for (i, j) in (0..64).map(|t| (i0 + t / 8, j0 + t % 8)) {
                        assert_eq!(port[j * ds + i], src[i * ss + j], "portable block");
                    }
                }
            }
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[j * ds + i],
                        src[i * ss + j],
                        "{rows}×{cols} at ({i}, {j})"
                    );
                }
            }
        }
    }
}
