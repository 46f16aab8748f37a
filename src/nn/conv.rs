//! Convolutions: [`ConvGeometry`] / [`ConvGeometry1d`], the checked output-shape arithmetic,
//! the float path (im2col + a matrix product through `matrixmultiply`), [`Conv2d`] and
//! [`Conv1d`] (a view of a height-1 [`Conv2d`]).

use ndarray::{ArrayD, ArrayView2, ArrayViewD, ArrayViewMut2, IxDyn, linalg::general_mat_mul};

use super::quantized::{Int8Accumulation, QuantizedConv1d, QuantizedConv2d};
use super::weighted::finish_rows;
use super::{Activation, LayerRole, Module, WeightedCore, WeightedKind, WeightedLayer};
use crate::error::{QuantError, Result};
use crate::qparams::QParams;
use crate::tensor::QuantizedTensor;

/// Stride, padding, dilation and groups of a 2-D convolution (height, width).
///
/// # Examples
/// ```
/// use qnumeric::nn::ConvGeometry;
/// let g = ConvGeometry::default().stride(2, 2).padding(1, 1).groups(4);
/// assert_eq!((g.stride, g.padding, g.dilation, g.groups), ([2, 2], [1, 1], [1, 1], 4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvGeometry {
    /// Stride (height, width), each >= 1.
    pub stride: [usize; 2],
    /// Padding (height, width): the value 0.0 for a float input; for a quantized input the
    /// input zero point (the stored value that means 0.0), as PyTorch pads.
    pub padding: [usize; 2],
    /// Dilation (height, width), each >= 1.
    pub dilation: [usize; 2],
    /// Groups, >= 1, dividing both channel counts.
    pub groups: usize,
}

impl Default for ConvGeometry {
    /// Stride 1, no padding, dilation 1, one group.
    fn default() -> Self {
        ConvGeometry {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl ConvGeometry {
    /// Sets the stride (builder style).
    #[must_use]
    pub fn stride(mut self, h: usize, w: usize) -> Self {
        self.stride = [h, w];
        self
    }

    /// Sets the padding (builder style).
    #[must_use]
    pub fn padding(mut self, h: usize, w: usize) -> Self {
        self.padding = [h, w];
        self
    }

    /// Sets the dilation (builder style).
    #[must_use]
    pub fn dilation(mut self, h: usize, w: usize) -> Self {
        self.dilation = [h, w];
        self
    }

    /// Sets the number of groups (builder style).
    #[must_use]
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Checks stride, dilation and groups against the output channel count.
    pub(crate) fn check(&self, op: &'static str, out_channels: usize) -> Result<()> {
        let bad = |what: &'static str| QuantError::InvalidParameter {
            op,
            what,
            value: 0.0,
            reason: "must be >= 1",
        };
        if self.stride.contains(&0) {
            return Err(bad("stride"));
        }
        if self.dilation.contains(&0) {
            return Err(bad("dilation"));
        }
        if self.groups == 0 {
            return Err(bad("groups"));
        }
        if out_channels % self.groups != 0 {
            return Err(QuantError::InvalidParameter {
                op,
                what: "groups",
                value: self.groups as f64,
                reason: "must divide the number of output channels",
            });
        }
        Ok(())
    }
}

/// Stride, padding, dilation and groups of a 1-D convolution.
///
/// # Examples
/// ```
/// use qnumeric::nn::ConvGeometry1d;
/// let g = ConvGeometry1d::default().stride(2).padding(1);
/// assert_eq!((g.stride, g.padding, g.dilation, g.groups), (2, 1, 1, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvGeometry1d {
    /// Stride, >= 1.
    pub stride: usize,
    /// Padding: 0.0 for a float input, the input zero point for a quantized one.
    pub padding: usize,
    /// Dilation, >= 1.
    pub dilation: usize,
    /// Groups, >= 1, dividing both channel counts.
    pub groups: usize,
}

impl Default for ConvGeometry1d {
    /// Stride 1, no padding, dilation 1, one group.
    fn default() -> Self {
        ConvGeometry1d {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

impl ConvGeometry1d {
    /// Sets the stride (builder style).
    #[must_use]
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }

    /// Sets the padding (builder style).
    #[must_use]
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = p;
        self
    }

    /// Sets the dilation (builder style).
    #[must_use]
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }

    /// Sets the number of groups (builder style).
    #[must_use]
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// The same geometry as a height-1 2-D one.
    #[must_use]
    pub fn to_2d(self) -> ConvGeometry {
        ConvGeometry {
            stride: [1, self.stride],
            padding: [0, self.padding],
            dilation: [1, self.dilation],
            groups: self.groups,
        }
    }
}

/// Everything a convolution kernel needs: input `[n, c_in, h, w]`, weight
/// `[c_out, c_in/groups, kh, kw]`, output `[n, c_out, oh, ow]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub geo: ConvGeometry,
}

/// `(len + 2p − (d·(k − 1) + 1)) / s + 1` with every step checked.
pub(crate) fn conv_out_len(
    op: &'static str,
    len: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
) -> Result<usize> {
    let overflow = |what| QuantError::GeometryOverflow { op, what };
    let span = k
        .checked_sub(1)
        .and_then(|k1| d.checked_mul(k1))
        .and_then(|v| v.checked_add(1))
        .ok_or(overflow("dilation · (kernel − 1)"))?;
    let padded = p
        .checked_mul(2)
        .and_then(|pp| len.checked_add(pp))
        .ok_or(overflow("input + 2 · padding"))?;
    if k == 0 || padded < span {
        return Err(QuantError::ShapeMismatch {
            op,
            expected: vec![span],
            got: vec![padded],
        });
    }
    Ok((padded - span) / s + 1)
}

impl ConvShape {
    /// Validates an input shape against a weight shape and computes the output size.
    pub(crate) fn new(
        op: &'static str,
        input: &[usize],
        weight: &[usize],
        geo: ConvGeometry,
    ) -> Result<ConvShape> {
        let (&[n, c_in, h, w], &[c_out, cg, kh, kw]) = (input, weight) else {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: vec![0; 4],
                got: input.to_vec(),
            });
        };
        geo.check(op, c_out)?;
        if cg.checked_mul(geo.groups) != Some(c_in) {
            return Err(QuantError::LengthMismatch {
                op,
                what: "input channels (weight.shape[1] · groups)",
                expected: cg.saturating_mul(geo.groups),
                got: c_in,
            });
        }
        let oh = conv_out_len(op, h, kh, geo.stride[0], geo.padding[0], geo.dilation[0])?;
        let ow = conv_out_len(op, w, kw, geo.stride[1], geo.padding[1], geo.dilation[1])?;
        // Checked before anything is allocated: the output (whatever the batch: `positions`
        // is used on its own), and one image's unfolded input.
        crate::nn::shape::checked_elements(op, "output positions", &[oh, ow])?;
        crate::nn::shape::checked_elements(op, "output", &[n, c_out, oh, ow])?;
        crate::nn::shape::checked_elements(
            op,
            "one image's unfolded input",
            &[cg, kh, kw, oh, ow],
        )?;
        Ok(ConvShape {
            n,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            oh,
            ow,
            geo,
        })
    }

    /// Output positions per image (`oh · ow`, checked in [`ConvShape::new`]).
    pub(crate) fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Input channels per group.
    pub(crate) fn cg(&self) -> usize {
        self.c_in / self.geo.groups
    }

    /// Output channels per group.
    pub(crate) fn og(&self) -> usize {
        self.c_out / self.geo.groups
    }
}

/// Images per block so that the unfolded input of a block (one group) stays near `values`
/// values, at least one image.
pub(crate) fn images_per_block(s: &ConvShape, values: usize) -> usize {
    let per_image = (s.cg() * s.kh * s.kw * s.positions()).max(1);
    (values / per_image).clamp(1, s.n.max(1))
}

/// Multiply-accumulates of a convolution, saturated.
pub(crate) fn conv_macs(s: &ConvShape) -> usize {
    [s.n, s.c_out, s.cg(), s.kh, s.kw, s.positions()]
        .iter()
        .fold(1usize, |a, &v| a.saturating_mul(v))
}

/// Layers of at least this many multiply-accumulates are split across the rayon pool.
const PAR_MIN_MACS: usize = 1 << 22;

/// Calls `f(index, piece, scratch)` for the consecutive `chunk`-element pieces of `out` (the
/// last may be shorter). With the `rayon` feature, a layer of at least [`PAR_MIN_MACS`]
/// multiply-accumulates (`work`) runs its pieces on the pool (each thread with its own
/// scratch); otherwise they run in order on this thread. A piece is computed the same way
/// either way, so results do not depend on the feature or the pool.
pub(crate) fn for_each_block<T: Send, S: Default + Send>(
    out: &mut [T],
    chunk: usize,
    work: usize,
    f: impl Fn(usize, &mut [T], &mut S) + Sync + Send,
) {
    let chunk = chunk.max(1);
    #[cfg(feature = "rayon")]
    if work >= PAR_MIN_MACS && out.len() > chunk && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(S::default, |s, (i, c)| f(i, c, s));
        return;
    }
    let _ = (work, PAR_MIN_MACS);
    let mut scratch = S::default();
    for (i, c) in out.chunks_mut(chunk).enumerate() {
        f(i, c, &mut scratch);
    }
}

/// The output columns `[lo, hi)` of a row whose input column `ox·stride + off − pad` lies in
/// `[0, len)`.
#[inline]
pub(crate) fn valid_range(
    len: usize,
    out_len: usize,
    stride: usize,
    off: usize,
    pad: usize,
) -> (usize, usize) {
    let lo = if off >= pad {
        0
    } else {
        (pad - off).div_ceil(stride)
    };
    let hi = if len + pad <= off {
        0
    } else {
        (len + pad - off).div_ceil(stride)
    };
    let lo = lo.min(out_len);
    (lo, hi.clamp(lo, out_len))
}

/// `dst.copy_from_slice(src)` for the short runs of an unfolding, in fixed 8-value pieces
/// (a call to `memcpy` per run cost more than the copy).
#[inline(always)]
pub(crate) fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, s) in (&mut d8).zip(&mut s8) {
        let s: &[T; 8] = s.try_into().expect("eight values");
        d.copy_from_slice(s);
    }
    for (d, &s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        *d = s;
    }
}

/// The input plane `src` (`h·w`) under kernel tap `(ky, kx)` at every output position, row by
/// row into `dst` (`oh·ow`), `zero` in the padding.
#[inline]
fn unfold_tap<T: Copy>(s: &ConvShape, src: &[T], ky: usize, kx: usize, zero: T, dst: &mut [T]) {
    let [sh, sw] = s.geo.stride;
    let [ph, pw] = s.geo.padding;
    let [dh, dw] = s.geo.dilation;
    let off = kx * dw;
    let (lo, hi) = valid_range(s.w, s.ow, sw, off, pw);
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

/// Float convolution: per block of images and group, unfold the input (im2col, rows
/// `(ci, ky, kx)`, columns the output positions of every image of the block) and multiply the
/// group's weight rows by it (`matrixmultiply`). Blocks of images run on the rayon pool for
/// large layers.
pub(crate) fn conv_float(
    op: &'static str,
    x: ArrayViewD<'_, f32>,
    weight: ArrayViewD<'_, f32>,
    core: &WeightedCore,
    geo: ConvGeometry,
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
    // 256 K values: 1 MiB of `f32` columns, in L2.
    let block = images_per_block(&s, 256 << 10);
    let per_image = s.c_out * l;
    for_each_block(
        &mut out,
        block * per_image,
        conv_macs(&s),
        |bi0, out_b: &mut [f32], (cols, prod): &mut (Vec<f32>, Vec<f32>)| {
            let b0 = bi0 * block;
            let nb = out_b.len() / per_image.max(1);
            let width = nb * l;
            cols.resize(kk * width, 0.0);
            prod.resize(og * width, 0.0);
            for g in 0..s.geo.groups {
                for ci in 0..cg {
                    for ky in 0..s.kh {
                        for kx in 0..s.kw {
                            let row = (ci * s.kh + ky) * s.kw + kx;
                            let crow = &mut cols[row * width..][..width];
                            for (bi, dst) in crow.chunks_exact_mut(l).enumerate() {
                                let src =
                                    &xd[((b0 + bi) * s.c_in + g * cg + ci) * plane..][..plane];
                                unfold_tap(&s, src, ky, kx, 0.0, dst);
                            }
                        }
                    }
                }
                let wg = ArrayView2::from_shape((og, kk), &wd[g * og * kk..][..og * kk])
                    .expect("og·kk weights");
                let cv = ArrayView2::from_shape((kk, width), &cols[..kk * width])
                    .expect("kk·width columns");
                let mut pv = ArrayViewMut2::from_shape((og, width), &mut prod[..og * width])
                    .expect("og·width products");
                general_mat_mul(1.0, &wg, &cv, 0.0, &mut pv);
                for o in 0..og {
                    let prow = &prod[o * width..][..width];
                    for (bi, dst) in out_b.chunks_exact_mut(per_image).enumerate() {
                        dst[(g * og + o) * l..][..l].copy_from_slice(&prow[bi * l..][..l]);
                    }
                }
            }
            finish_rows(out_b, s.c_out, l, core);
        },
    );
    Ok(ArrayD::from_shape_vec(IxDyn(&[s.n, s.c_out, s.oh, s.ow]), out).expect("output size"))
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

    fn quantize(
        &self,
        weight: QuantizedTensor<i8>,
        output: QParams,
        accumulation: Int8Accumulation,
    ) -> Result<Box<dyn Module>> {
        let q = QuantizedConv2d::new(weight, self.core.bias().cloned(), self.geo, output)?
            .with_accumulation(accumulation);
        Ok(Box::new(if self.core.has_relu() {
            q.with_relu()
        } else {
            q
        }))
    }
}

/// Inserts a unit axis at position 2 of a 3-D shape (`[a, b, c]` → `[a, b, 1, c]`).
pub(crate) fn as_height_one(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    s.insert(2.min(s.len()), 1);
    s
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

    fn quantize(
        &self,
        weight: QuantizedTensor<i8>,
        output: QParams,
        accumulation: Int8Accumulation,
    ) -> Result<Box<dyn Module>> {
        let q = QuantizedConv1d::new(weight, self.core.bias().cloned(), self.geo, output)?
            .with_accumulation(accumulation);
        Ok(Box::new(if self.core.has_relu() {
            q.with_relu()
        } else {
            q
        }))
    }
}
