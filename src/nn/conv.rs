//! Float convolutions: the float path (im2col + a matrix product through `matrixmultiply`),
//! [`Conv2d`] and [`Conv1d`] (a view of a height-1 [`Conv2d`]). The geometry both the float and
//! the int8 convolutions use is in `geometry.rs`.

use super::sgemm::{Lhs, Mat, PANEL_ROWS, PackedB, Rhs, product, scratch};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

pub use super::geometry::{ConvGeometry, ConvGeometry1d};
pub(crate) use super::geometry::{
    ConvShape, as_height_one, conv_macs, copy_run, images_per_block, valid_range,
};
use super::weighted::{PackedConv, finish_rows, relu_f32};
use super::{Activation, LayerRole, Module, WeightedCore, WeightedKind, WeightedLayer};
use crate::error::{QuantError, Result};
use crate::parallel::for_each_block;

/// The input plane `src` (`h·w`) under kernel tap `(ky, kx)` at every output position, row by
/// row into `dst` (`oh·ow`), `zero` in the padding.
#[inline]
fn unfold_tap<T: Copy>(s: &ConvShape, src: &[T], ky: usize, kx: usize, zero: T, dst: &mut [T]) {
    let [sh, sw] = s.geo.stride;
    let [ph, pw] = s.geo.padding;
    let [dh, dw] = s.geo.dilation;
    let off = kx * dw;
    let (lo, hi) = valid_range(s.w, s.ow, sw, off, pw);
    if sh == 1 && sw == 1 && s.ow == s.w && lo < hi {
        // Stride 1 and rows as wide as the input's: every valid output row reads the input at
        // one constant offset, so the valid rows are one copy, then the columns outside
        // `[lo, hi)` (which read the neighbouring rows) are set to `zero`.
        let (oy0, oy1) = valid_range(s.h, s.oh, 1, ky * dh, ph);
        let ow = s.ow;
        dst[..oy0 * ow].fill(zero);
        dst[oy1 * ow..s.oh * ow].fill(zero);
        if oy0 < oy1 {
            let (d0, d1) = (oy0 * ow + lo, (oy1 - 1) * ow + hi);
            // Input index of output position `d`: `d + (ky·dh − ph)·w + off − pw`.
            let s0 = (oy0 + ky * dh - ph) * s.w + lo + off - pw;
            dst[d0..d1].copy_from_slice(&src[s0..][..d1 - d0]);
            for row in dst[oy0 * ow..oy1 * ow].chunks_exact_mut(ow) {
                row[..lo].fill(zero);
                row[hi..].fill(zero);
            }
        }
        return;
    }
    for (oy, row) in dst.chunks_exact_mut(s.ow).take(s.oh).enumerate() {
        let iy = (oy * sh + ky * dh).checked_sub(ph).filter(|&iy| iy < s.h);
        let Some(iy) = iy else {
            row.fill(zero);
            continue;
        };
        let (left, rest) = row.split_at_mut(lo);
        for d in left.iter_mut().chain(&mut rest[hi - lo..]) {
            *d = zero;
        }
        if lo < hi {
            let srow = &src[iy * s.w..][..s.w];
            let ix0 = lo * sw + off - pw;
            let mid = &mut row[lo..hi];
            if sw == 1 {
                copy_run(mid, &srow[ix0..][..hi - lo]);
            } else {
                for (d, &v) in mid.iter_mut().zip(srow[ix0..].iter().step_by(sw)) {
                    *d = v;
                }
            }
        }
    }
}

/// Float convolution: per block of images and group, the group's weight rows times the
/// unfolded input (im2col: rows `(ci, ky, kx)`, columns the output positions of every image of
/// the block), each unfolded row computed as the matrix product packs it (the weights are packed
/// once, on the first pass).
/// Blocks of images run on the rayon pool for large layers.
pub(crate) fn conv_float(
    op: &'static str,
    x: ArrayViewD<'_, f32>,
    weight: ArrayViewD<'_, f32>,
    core: &WeightedCore,
    geo: ConvGeometry,
) -> Result<ArrayD<f32>> {
    conv_float_packed(op, x, weight, core, geo, core.packed_conv(geo.groups))
}

/// [`conv_float`] with the weights packed as given (`None`: not packed).
fn conv_float_packed(
    op: &'static str,
    x: ArrayViewD<'_, f32>,
    weight: ArrayViewD<'_, f32>,
    core: &WeightedCore,
    geo: ConvGeometry,
    packed: Option<PackedConv<'_>>,
) -> Result<ArrayD<f32>> {
    let s = ConvShape::new(op, x.shape(), weight.shape(), geo)?;
    let xs = x.as_standard_layout();
    let xd = xs.as_slice().expect("standard layout");
    let ws = weight.as_standard_layout();
    let wd = ws.as_slice().expect("standard layout");
    let (cg, og, l) = (s.cg(), s.og(), s.positions());
    let kk = cg * s.kh * s.kw;
    let plane = s.h * s.w;
    let mut out = vec![0.0f32; s.n * s.c_out * l];
    // With the crate's product: up to 1 M values (4 MiB) of unfolded columns, enough columns
    // per product that the last partial panel weighs little. With `matrixmultiply` (CPUs
    // without AVX-512): 256 K values (1 MiB, in L2), as before. At least one block per thread.
    let threads = crate::parallel::threads_for(conv_macs(&s));
    let values = if super::sgemm::packing_pays() {
        1 << 20
    } else {
        256 << 10
    };
    let block = images_per_block(&s, values).min(s.n.div_ceil(threads).max(1));
    let per_image = s.c_out * l;
    let packed = match packed {
        Some(PackedConv::Columns(wt)) => {
            if let Some(pad) = Padded::new(&s) {
                conv_columns(&s, xd, wt, core, &pad, block, &mut out);
                return Ok(
                    ArrayD::from_shape_vec(IxDyn(&[s.n, s.c_out, s.oh, s.ow]), out)
                        .expect("output size"),
                );
            }
            None
        }
        Some(PackedConv::Rows(wr)) => Some(wr),
        None => None,
    };
    for_each_block(
        &mut out,
        block * per_image,
        conv_macs(&s),
        |bi0, out_b: &mut [f32], (): &mut ()| {
            let mut prod = scratch::take(scratch::OUTPUT);
            let b0 = bi0 * block;
            let nb = out_b.len() / per_image.max(1);
            let width = nb * l;
            prod.resize(og * width, 0.0);
            for g in 0..s.geo.groups {
                // Row `(ci, ky, kx)` of the group's unfolded input (im2col), every image of
                // the block side by side: computed as the product packs it, never stored.
                let unfold = |row: usize, dst: &mut [f32]| {
                    let (ci, tap) = (row / (s.kh * s.kw), row % (s.kh * s.kw));
                    let (ky, kx) = (tap / s.kw, tap % s.kw);
                    for (bi, d) in dst.chunks_exact_mut(l).enumerate() {
                        let src = &xd[((b0 + bi) * s.c_in + g * cg + ci) * plane..][..plane];
                        unfold_tap(&s, src, ky, kx, 0.0, d);
                    }
                };
                let weights = match packed {
                    Some(groups) => Lhs::Packed(&groups[g]),
                    None => Lhs::Mat(Mat::rows(&wd[g * og * kk..][..og * kk], kk)),
                };
                product(
                    og,
                    width,
                    kk,
                    weights,
                    Rhs::Rows(&unfold),
                    &mut prod[..og * width],
                );
                for o in 0..og {
                    let prow = &prod[o * width..][..width];
                    for (bi, dst) in out_b.chunks_exact_mut(per_image).enumerate() {
                        dst[(g * og + o) * l..][..l].copy_from_slice(&prow[bi * l..][..l]);
                    }
                }
            }
            finish_rows(out_b, s.c_out, l, core);
            scratch::give(scratch::OUTPUT, prod);
        },
    );
    Ok(ArrayD::from_shape_vec(IxDyn(&[s.n, s.c_out, s.oh, s.ow]), out).expect("output size"))
}

/// The zero-padded input planes of the positions-major float convolution (`hp × wp` each,
/// the input at `(ph, pw)`) and the offset of each reduction step `(ci, ky, kx)` of a group
/// from an output position's top-left tap.
struct Padded {
    wp: usize,
    plane: usize,
    offsets: Vec<usize>,
}

impl Padded {
    /// `None` where the padded planes would be much larger than the unfolded input they
    /// replace (padding far wider than the kernel, or strides that skip most of the input):
    /// that layer takes the channels-major path, which never pads.
    fn new(s: &ConvShape) -> Option<Self> {
        let [ph, pw] = s.geo.padding;
        let [dh, dw] = s.geo.dilation;
        let hp = ph.checked_mul(2)?.checked_add(s.h)?;
        let wp = pw.checked_mul(2)?.checked_add(s.w)?;
        let plane = hp.checked_mul(wp)?;
        let unfolded = (s.kh * s.kw).checked_mul(s.positions())?;
        if plane > unfolded.saturating_mul(4).max(1 << 12) {
            return None;
        }
        let offsets = (0..s.cg() * s.kh * s.kw)
            .map(|p| {
                let (ci, tap) = (p / (s.kh * s.kw), p % (s.kh * s.kw));
                ci * plane + (tap / s.kw) * dh * wp + (tap % s.kw) * dw
            })
            .collect();
        Some(Padded { wp, plane, offsets })
    }

    /// Writes images `b0..` (channels `c0..c0 + cg` of each) of the `[n, c_in, h, w]` input
    /// into `dst`, padded.
    fn fill(&self, s: &ConvShape, x: &[f32], b0: usize, c0: usize, dst: &mut [f32]) {
        let [ph, pw] = s.geo.padding;
        let planes = dst.len() / self.plane.max(1);
        let wp = self.wp;
        for (pi, padded) in dst.chunks_exact_mut(self.plane).take(planes).enumerate() {
            let (bi, ci) = (pi / s.cg(), pi % s.cg());
            let src = &x[((b0 + bi) * s.c_in + c0 + ci) * s.h * s.w..][..s.h * s.w];
            // The padding rows above and below, then each row's padding columns around it.
            padded[..ph * wp].fill(0.0);
            padded[(ph + s.h) * wp..].fill(0.0);
            for (row, src) in padded[ph * wp..][..s.h * wp]
                .chunks_exact_mut(wp)
                .zip(src.chunks_exact(s.w))
            {
                row[..pw].fill(0.0);
                copy_short(&mut row[pw..pw + s.w], src);
                row[pw + s.w..].fill(0.0);
            }
        }
    }

    /// One panel of the unfolded input, positions as rows ([`PanelFn`]): rows `r0..` of the
    /// `width` positions of the padded images `padded`, reduction steps `p0..`.
    ///
    /// [`PanelFn`]: super::sgemm::PanelFn
    fn panel(
        &self,
        s: &ConvShape,
        padded: &[f32],
        width: usize,
        r0: usize,
        p0: usize,
        dst: &mut [f32],
    ) -> Option<usize> {
        const MR: usize = PANEL_ROWS;
        let [sh, sw] = s.geo.stride;
        let l = s.positions();
        let offsets = &self.offsets[p0..][..dst.len() / MR];
        let base = |j: usize| {
            let (bi, q) = (j / l, j % l);
            bi * s.cg() * self.plane + (q / s.ow) * sh * self.wp + (q % s.ow) * sw
        };
        if sw == 1 && r0 + MR <= width && (r0 % l) % s.ow + MR <= s.ow {
            // The panel's positions are consecutive in one output row: each step is a run of
            // a padded row, read in place by the product.
            return Some(base(r0));
        }
        let bases: [Option<usize>; MR] =
            std::array::from_fn(|i| (r0 + i < width).then(|| base(r0 + i)));
        for (d, &off) in dst.chunks_exact_mut(MR).zip(offsets) {
            for (v, b) in d.iter_mut().zip(&bases) {
                *v = b.map_or(0.0, |b| padded[b + off]);
            }
        }
        None
    }
}

/// `dst.copy_from_slice(src)` for the short rows of an image: in fixed runs of 8 values, which
/// compile to register moves (a `copy_from_slice` of a run-time length is a call to `memcpy`,
/// which cost more than the copy for rows of a few dozen values).
#[inline]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let d: &mut [f32; 8] = d.try_into().expect("8 values");
        *d = s.try_into().expect("8 values");
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}

/// Float convolution with the output channels as the product's columns (weights packed as
/// its second operand, [`PackedConv::Columns`]): per block of images and group, the unfolded
/// input with positions as rows, each panel gathered from the padded input as the product
/// packs it (no unfolded copy), then the `positions × channels` result transposed into the
/// output. The products' columns are whole panels, so no padding column is computed; each
/// output is the same chain of products as on the channels-major path.
fn conv_columns(
    s: &ConvShape,
    xd: &[f32],
    weights: &[PackedB],
    core: &WeightedCore,
    pad: &Padded,
    block: usize,
    out: &mut [f32],
) {
    let (cg, og, l) = (s.cg(), s.og(), s.positions());
    let kk = cg * s.kh * s.kw;
    let per_image = s.c_out * l;
    for_each_block(
        out,
        block * per_image,
        conv_macs(s),
        |bi0, out_b: &mut [f32], (): &mut ()| {
            let (mut prod, mut padded) = (
                scratch::take(scratch::OUTPUT),
                scratch::take(scratch::PADDED),
            );
            let b0 = bi0 * block;
            let nb = out_b.len() / per_image.max(1);
            let width = nb * l;
            prod.resize(width * og, 0.0);
            padded.resize(nb * cg * pad.plane, 0.0);
            for (g, wg) in weights.iter().enumerate() {
                pad.fill(s, xd, b0, g * cg, &mut padded);
                let panel = |r0: usize, p0: usize, dst: &mut [f32]| {
                    pad.panel(s, &padded, width, r0, p0, dst)
                };
                product(
                    width,
                    og,
                    kk,
                    Lhs::Panels {
                        f: &panel,
                        data: &padded,
                        offsets: &pad.offsets,
                    },
                    Rhs::Packed(wg),
                    &mut prod[..width * og],
                );
                // The bias and ReLU applied as the result is transposed (no pass of their own).
                let bias = core.bias_slice().map(|b| &b[g * og..][..og]);
                for (bi, img) in prod[..width * og].chunks_exact(l * og).enumerate() {
                    let dst = &mut out_b[bi * per_image + g * og * l..][..og * l];
                    transpose(img, og, dst, bias, core.has_relu());
                }
            }
            scratch::give(scratch::OUTPUT, prod);
            scratch::give(scratch::PADDED, padded);
        },
    );
}

/// `dst[o·l + q] = finish(src[q·cols + o])` for a row-major `l × cols` matrix `src` (`l =
/// src.len() / cols`), `finish` adding `bias[o]` when given and applying the ReLU when
/// `relu` (the operations of [`finish_rows`], in its order): 16 rows at a time, so that each
/// written run is 16 values.
fn transpose(src: &[f32], cols: usize, dst: &mut [f32], bias: Option<&[f32]>, relu: bool) {
    match (bias, relu) {
        (None, false) => transpose_with(src, cols, dst, |_, v| v),
        (None, true) => transpose_with(src, cols, dst, |_, v| relu_f32(v)),
        (Some(b), false) => transpose_with(src, cols, dst, |o, v| v + b[o]),
        (Some(b), true) => transpose_with(src, cols, dst, |o, v| relu_f32(v + b[o])),
    }
}

#[inline(always)]
fn transpose_with(src: &[f32], cols: usize, dst: &mut [f32], f: impl Fn(usize, f32) -> f32) {
    const T: usize = 16;
    let l = src.len() / cols.max(1);
    let mut q0 = 0;
    while q0 + T <= l {
        let rows: [&[f32]; T] = std::array::from_fn(|t| &src[(q0 + t) * cols..][..cols]);
        for (o, run) in dst.chunks_exact_mut(l).enumerate() {
            let run: &mut [f32; T] = (&mut run[q0..q0 + T]).try_into().expect("16 values");
            for (d, row) in run.iter_mut().zip(&rows) {
                *d = f(o, row[o]);
            }
        }
        q0 += T;
    }
    for q in q0..l {
        for (o, &v) in src[q * cols..][..cols].iter().enumerate() {
            dst[o * l + q] = f(o, v);
        }
    }
}

/// 2-D convolution over `[N, C, H, W]` with weight `[out, in/groups, kh, kw]`, optional bias and
/// fused ReLU (PyTorch's `Conv2d` / `ConvReLU2d`).
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::nn::{Activation, Conv2d, ConvGeometry, Module};
/// let conv = Conv2d::new(ArrayD::from_elem(IxDyn(&[1, 1, 2, 2]), 1.0), None, ConvGeometry::default())?;
/// let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
/// assert_eq!(conv.forward(&Activation::Float(x))?.as_float()?.as_slice(), Some(&[10.0f32][..]));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    core: WeightedCore,
    geo: ConvGeometry,
}

impl Conv2d {
    /// A convolution from its weight `[out, in/groups, kh, kw]`, optional bias `[out]` and
    /// geometry.
    ///
    /// # Errors
    /// [`QuantError::ShapeMismatch`] for a weight that is not 4-D or a bias of the wrong
    /// shape; [`QuantError::InvalidParameter`] for a zero stride, dilation or groups, or groups
    /// that do not divide the output channels.
    pub fn new(weight: ArrayD<f32>, bias: Option<ArrayD<f32>>, geo: ConvGeometry) -> Result<Self> {
        Self::from_core(WeightedCore::new(weight, bias)?, geo)
    }

    /// A convolution from a core whose weight is `[out, in/groups, kh, kw]`.
    ///
    /// # Errors
    /// As [`Conv2d::new`].
    pub fn from_core(core: WeightedCore, geo: ConvGeometry) -> Result<Self> {
        const OP: &str = "Conv2d::new";
        if core.weight().ndim() != 4 {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0; 4],
                got: core.weight().shape().to_vec(),
            });
        }
        geo.check(OP, core.out_channels())?;
        Ok(Conv2d { core, geo })
    }

    /// The same layer with a fused ReLU (`ConvReLU2d`).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.core = self.core.with_relu();
        self
    }

    /// Output channels.
    #[must_use]
    pub fn out_channels(&self) -> usize {
        self.core.out_channels()
    }

    /// The geometry.
    #[must_use]
    pub fn geometry(&self) -> ConvGeometry {
        self.geo
    }

    /// Weight, bias and fused ReLU.
    #[must_use]
    pub fn core(&self) -> &WeightedCore {
        &self.core
    }
}

impl Module for Conv2d {
    fn kind(&self) -> &'static str {
        if self.core.has_relu() {
            "ConvReLU2d"
        } else {
            "Conv2d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "Conv2d::forward";
        let x = x.need_float(OP)?;
        conv_float(OP, x.view(), self.core.weight_view(), &self.core, self.geo)
            .map(Activation::Float)
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Weighted(self)
    }

    /// Through im2col: `dW = Σ g·colsᵀ`, `dx = col2im(Wᵀ·g)`, `db = Σ g` (`g` masked where a
    /// fused ReLU clipped).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        const OP: &str = "Conv2d::backward";
        Some(
            super::backward::float_input(OP, inputs, output, grad_output).and_then(|x| {
                super::backward::conv2d(
                    OP,
                    x,
                    self.core.weight(),
                    &self.core,
                    self.geo,
                    output,
                    grad_output,
                )
            }),
        )
    }

    fn params(&self) -> Vec<(&'static str, ArrayD<f32>)> {
        super::backward::core_param_list(&self.core)
    }

    fn with_params(&self, params: &[(&str, ArrayD<f32>)]) -> Option<Result<Box<dyn Module>>> {
        Some(
            super::backward::core_with("Conv2d::with_params", &self.core, params)
                .and_then(|c| Ok(Box::new(Conv2d::from_core(c, self.geo)?) as Box<dyn Module>)),
        )
    }
}

impl WeightedLayer for Conv2d {
    fn weighted_kind(&self) -> WeightedKind {
        WeightedKind::Conv {
            spatial_dims: 2,
            groups: self.geo.groups,
        }
    }

    fn core(&self) -> &WeightedCore {
        &self.core
    }

    fn with_core(&self, core: WeightedCore) -> Result<Box<dyn Module>> {
        Ok(Box::new(Conv2d::from_core(core, self.geo)?))
    }
}

/// 1-D convolution over `[N, C, L]` with weight `[out, in/groups, k]` (PyTorch's `Conv1d` /
/// `ConvReLU1d`): a view of a height-1 [`Conv2d`] (input and weight are reshaped, not copied).
///
/// # Examples
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use qnumeric::nn::{Activation, Conv1d, ConvGeometry1d, Module};
/// let conv = Conv1d::new(ArrayD::from_elem(IxDyn(&[1, 1, 2]), 1.0), None, ConvGeometry1d::default().stride(2))?;
/// let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 4]), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
/// assert_eq!(conv.forward(&Activation::Float(x))?.as_float()?.as_slice(), Some(&[3.0f32, 7.0][..]));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Conv1d {
    core: WeightedCore,
    geo: ConvGeometry1d,
}

impl Conv1d {
    /// A 1-D convolution from its weight `[out, in/groups, k]`, optional bias and geometry.
    ///
    /// # Errors
    /// As [`Conv2d::new`], for a 3-D weight.
    pub fn new(
        weight: ArrayD<f32>,
        bias: Option<ArrayD<f32>>,
        geo: ConvGeometry1d,
    ) -> Result<Self> {
        Self::from_core(WeightedCore::new(weight, bias)?, geo)
    }

    /// A 1-D convolution from a core whose weight is `[out, in/groups, k]`.
    ///
    /// # Errors
    /// As [`Conv1d::new`].
    pub fn from_core(core: WeightedCore, geo: ConvGeometry1d) -> Result<Self> {
        const OP: &str = "Conv1d::new";
        if core.weight().ndim() != 3 {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0; 3],
                got: core.weight().shape().to_vec(),
            });
        }
        geo.to_2d().check(OP, core.out_channels())?;
        Ok(Conv1d { core, geo })
    }

    /// The same layer with a fused ReLU (`ConvReLU1d`).
    #[must_use]
    pub fn with_relu(mut self) -> Self {
        self.core = self.core.with_relu();
        self
    }

    /// Output channels.
    #[must_use]
    pub fn out_channels(&self) -> usize {
        self.core.out_channels()
    }

    /// The geometry.
    #[must_use]
    pub fn geometry(&self) -> ConvGeometry1d {
        self.geo
    }

    /// Weight, bias and fused ReLU.
    #[must_use]
    pub fn core(&self) -> &WeightedCore {
        &self.core
    }
}

impl Module for Conv1d {
    fn kind(&self) -> &'static str {
        if self.core.has_relu() {
            "ConvReLU1d"
        } else {
            "Conv1d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "Conv1d::forward";
        let x = x.need_float(OP)?;
        if x.ndim() != 3 {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0; 3],
                got: x.shape().to_vec(),
            });
        }
        let x4 = x
            .view()
            .into_shape_with_order(IxDyn(&as_height_one(x.shape())))
            .ok();
        let x4 = match x4 {
            Some(v) => v.to_owned(),
            None => x
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&as_height_one(x.shape())))
                .expect("same number of elements"),
        };
        let w4 = self
            .core
            .weight_view()
            .into_shape_with_order(IxDyn(&as_height_one(self.core.weight().shape())))
            .expect("standard-layout weight");
        let y = conv_float(OP, x4.view(), w4, &self.core, self.geo.to_2d())?;
        let (n, c, l) = (y.shape()[0], y.shape()[1], y.shape()[3]);
        Ok(Activation::Float(
            y.into_shape_with_order(IxDyn(&[n, c, l]))
                .expect("height-1 output"),
        ))
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Weighted(self)
    }

    /// The height-1 [`Conv2d`]'s backward, reshaped.
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        Some(self.backward_1d(inputs, output, grad_output))
    }

    fn params(&self) -> Vec<(&'static str, ArrayD<f32>)> {
        super::backward::core_param_list(&self.core)
    }

    fn with_params(&self, params: &[(&str, ArrayD<f32>)]) -> Option<Result<Box<dyn Module>>> {
        Some(
            super::backward::core_with("Conv1d::with_params", &self.core, params)
                .and_then(|c| Ok(Box::new(Conv1d::from_core(c, self.geo)?) as Box<dyn Module>)),
        )
    }
}

impl Conv1d {
    fn backward_1d(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Result<super::LayerGrads> {
        const OP: &str = "Conv1d::backward";
        let x = super::backward::float_input(OP, inputs, output, grad_output)?;
        let four = |a: &ArrayD<f32>| -> Result<ArrayD<f32>> {
            if a.ndim() != 3 {
                return Err(QuantError::ShapeMismatch {
                    op: OP,
                    expected: vec![0; 3],
                    got: a.shape().to_vec(),
                });
            }
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&as_height_one(a.shape())))
                .map_err(|_| QuantError::ShapeMismatch {
                    op: OP,
                    expected: as_height_one(a.shape()),
                    got: a.shape().to_vec(),
                })
        };
        let (x4, g4, w4) = (four(x)?, four(grad_output)?, four(self.core.weight())?);
        let y4 = Activation::Float(four(&output.to_float())?);
        let mut grads =
            super::backward::conv2d(OP, &x4, &w4, &self.core, self.geo.to_2d(), &y4, &g4)?;
        let back = |a: ArrayD<f32>, shape: &[usize]| {
            a.into_shape_with_order(IxDyn(shape))
                .map_err(|_| QuantError::ShapeMismatch {
                    op: OP,
                    expected: shape.to_vec(),
                    got: vec![],
                })
        };
        grads.inputs = grads
            .inputs
            .into_iter()
            .map(|d| back(d, x.shape()))
            .collect::<Result<_>>()?;
        for (name, g) in &mut grads.params {
            if *name == "weight" {
                *g = back(std::mem::take(g), self.core.weight().shape())?;
            }
        }
        Ok(grads)
    }
}

impl WeightedLayer for Conv1d {
    fn weighted_kind(&self) -> WeightedKind {
        WeightedKind::Conv {
            spatial_dims: 1,
            groups: self.geo.groups,
        }
    }

    fn core(&self) -> &WeightedCore {
        &self.core
    }

    fn with_core(&self, core: WeightedCore) -> Result<Box<dyn Module>> {
        Ok(Box::new(Conv1d::from_core(core, self.geo)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::sgemm::{PackedA, packing_pays};

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Lcg::new(seed);
        (0..len).map(|_| rng.unit_f32() * 2.0 - 1.0).collect()
    }

    /// The convolution in `f64`, one output at a time.
    fn naive(x: &ArrayD<f32>, w: &ArrayD<f32>, bias: &[f32], geo: ConvGeometry) -> Vec<f64> {
        let s = ConvShape::new("test", x.shape(), w.shape(), geo).expect("shape");
        let (cg, og) = (s.cg(), s.og());
        let mut out = Vec::new();
        for b in 0..s.n {
            for o in 0..s.c_out {
                let g = o / og;
                for oy in 0..s.oh {
                    for ox in 0..s.ow {
                        let mut acc = f64::from(bias[o]);
                        for ci in 0..cg {
                            for ky in 0..s.kh {
                                for kx in 0..s.kw {
                                    let iy = (oy * geo.stride[0] + ky * geo.dilation[0])
                                        .checked_sub(geo.padding[0]);
                                    let ix = (ox * geo.stride[1] + kx * geo.dilation[1])
                                        .checked_sub(geo.padding[1]);
                                    if let (Some(iy), Some(ix)) = (iy, ix)
                                        && iy < s.h
                                        && ix < s.w
                                    {
                                        acc += f64::from(x[[b, g * cg + ci, iy, ix]])
                                            * f64::from(w[[o, ci, ky, kx]]);
                                    }
                                }
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        out
    }

    /// The positions-major path (output channels as the product's columns, its rows read in
    /// place from the padded input where a panel is one run of a row) gives the bits of the
    /// channels-major path, which sums each output in the same order, and the exact value
    /// within rounding: padding, strides, dilation, groups, rows wider and narrower than a
    /// panel, one image and several.
    #[test]
    fn positions_major_convolution_writes_the_bits_of_the_channels_major_one() {
        // (images, input channels, output channels, image, kernel, geometry)
        type Case = (usize, usize, usize, [usize; 2], [usize; 2], ConvGeometry);
        let shapes: &[Case] = &[
            (
                2,
                16,
                32,
                [14, 14],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
            (
                1,
                8,
                64,
                [7, 7],
                [3, 3],
                ConvGeometry::default().padding(1, 1),
            ),
            (
                3,
                5,
                32,
                [13, 9],
                [3, 2],
                ConvGeometry::default().padding(2, 1),
            ),
            (2, 4, 32, [28, 30], [1, 1], ConvGeometry::default()),
            (
                2,
                6,
                32,
                [15, 17],
                [3, 3],
                ConvGeometry::default().stride(2, 2).padding(1, 1),
            ),
            (
                1,
                4,
                32,
                [16, 20],
                [3, 3],
                ConvGeometry::default().dilation(2, 3).padding(2, 3),
            ),
            (
                2,
                8,
                64,
                [10, 15],
                [3, 3],
                ConvGeometry::default().groups(2).padding(1, 1),
            ),
            (1, 3, 32, [1, 1], [1, 1], ConvGeometry::default()),
            (
                1,
                3,
                32,
                [2, 40],
                [1, 5],
                ConvGeometry::default().padding(0, 2),
            ),
        ];
        let mut compared = 0;
        for (i, &(n, c_in, c_out, [h, w], [kh, kw], geo)) in shapes.iter().enumerate() {
            let seed = i as u64 * 10;
            let x = ArrayD::from_shape_vec(IxDyn(&[n, c_in, h, w]), values(n * c_in * h * w, seed))
                .expect("x");
            let cg = c_in / geo.groups;
            let wv = values(c_out * cg * kh * kw, seed + 1);
            let weight = ArrayD::from_shape_vec(IxDyn(&[c_out, cg, kh, kw]), wv).expect("w");
            let bias = values(c_out, seed + 2);
            let core = WeightedCore::new(
                weight.clone(),
                Some(ArrayD::from_shape_vec(IxDyn(&[c_out]), bias.clone()).expect("b")),
            )
            .expect("core");
            let got = conv_float("test", x.view(), weight.view(), &core, geo).expect("conv");
            let exact = naive(&x, &weight, &bias, geo);
            assert_eq!(got.len(), exact.len(), "shape {i}");
            for (g, e) in got.iter().zip(&exact) {
                let tol = 1e-5 * (1.0 + e.abs()) * (cg * kh * kw) as f64;
                assert!(
                    (f64::from(*g) - e).abs() <= tol,
                    "shape {i}: {g} against {e}"
                );
            }
            if !packing_pays() {
                continue;
            }
            assert!(
                matches!(core.packed_conv(geo.groups), Some(PackedConv::Columns(_))),
                "shape {i} takes the positions-major path"
            );
            let (og, kk) = (c_out / geo.groups, cg * kh * kw);
            let rows: Vec<PackedA> = (0..geo.groups)
                .map(|g| {
                    PackedA::new(
                        og,
                        kk,
                        Mat::rows(&weight.as_slice().expect("w")[g * og * kk..], kk),
                    )
                })
                .collect();
            // The layer as `core` through both paths: the same bits, with the bias (the
            // `f64` check above), with a fused ReLU, and without a bias.
            let both_paths = |core: &WeightedCore| {
                let columns = conv_float("test", x.view(), weight.view(), core, geo).expect("conv");
                let rows_path = conv_float_packed(
                    "test",
                    x.view(),
                    weight.view(),
                    core,
                    geo,
                    Some(PackedConv::Rows(&rows)),
                )
                .expect("conv");
                assert!(
                    columns
                        .iter()
                        .zip(&rows_path)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "shape {i}: the two paths differ (ReLU {})",
                    core.has_relu()
                );
                columns
            };
            assert_eq!(both_paths(&core), got);
            assert!(
                both_paths(&core.clone().with_relu())
                    .iter()
                    .all(|&v| v >= 0.0)
            );
            both_paths(&WeightedCore::new(weight.clone(), None).expect("core"));
            compared += 1;
        }
        assert!(!packing_pays() || compared == shapes.len());
    }
}
