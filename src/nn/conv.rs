//! Float convolutions: the float path (im2col + a matrix product through `matrixmultiply`),
//! [`Conv2d`] and [`Conv1d`] (a view of a height-1 [`Conv2d`]). The geometry both the float and
//! the int8 convolutions use is in `geometry.rs`.

use super::sgemm::{Lhs, Mat, Rhs, product, scratch};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

pub use super::geometry::{ConvGeometry, ConvGeometry1d};
pub(crate) use super::geometry::{
    ConvShape, as_height_one, conv_macs, copy_run, images_per_block, valid_range,
};
use super::weighted::finish_rows;
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
    let packed = core.packed_conv(s.geo.groups);
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
