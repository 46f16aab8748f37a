//! Convolution geometry and the direct (im2col + row-major product) convolution core shared by
//! the float and the integer layers.

use std::ops::{AddAssign, Mul};

use crate::error::{QuantError, Result};

/// Stride, padding, dilation and groups of a 2-D convolution (a 1-D convolution uses the
/// second entry of each pair and height 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvGeometry {
    /// Stride (height, width), each >= 1.
    pub stride: [usize; 2],
    /// Zero padding (height, width).
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

    /// Checks stride, dilation and groups against a weight `[out, in/groups, kh, kw]`.
    pub(crate) fn check(&self, op: &'static str, out_channels: usize) -> Result<()> {
        let bad = |what: &'static str, value: usize| QuantError::InvalidParameter {
            op,
            what,
            value: value as f64,
            reason: "must be >= 1",
        };
        if self.stride[0] == 0 || self.stride[1] == 0 {
            return Err(bad("stride", 0));
        }
        if self.dilation[0] == 0 || self.dilation[1] == 0 {
            return Err(bad("dilation", 0));
        }
        if self.groups == 0 {
            return Err(bad("groups", 0));
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

/// Everything the core needs: input `[n, c_in, h, w]`, weight `[c_out, c_in/groups, kh, kw]`.
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

impl ConvShape {
    /// Validates an input shape against a weight shape and computes the output size.
    pub(crate) fn new(
        op: &'static str,
        input: [usize; 4],
        weight: [usize; 4],
        geo: ConvGeometry,
    ) -> Result<ConvShape> {
        let [n, c_in, h, w] = input;
        let [c_out, cg, kh, kw] = weight;
        geo.check(op, c_out)?;
        if cg * geo.groups != c_in {
            return Err(QuantError::LengthMismatch {
                op,
                what: "input channels (weight.shape[1] * groups)",
                expected: cg * geo.groups,
                got: c_in,
            });
        }
        let out = |len: usize, k: usize, s: usize, p: usize, d: usize| -> Result<usize> {
            let span = d * (k.max(1) - 1) + 1;
            let padded = len + 2 * p;
            if k == 0 || padded < span {
                return Err(QuantError::ShapeMismatch {
                    op,
                    expected: vec![span],
                    got: vec![padded],
                });
            }
            Ok((padded - span) / s + 1)
        };
        let oh = out(h, kh, geo.stride[0], geo.padding[0], geo.dilation[0])?;
        let ow = out(w, kw, geo.stride[1], geo.padding[1], geo.dilation[1])?;
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
}

/// Direct convolution: per image and group, unfold the input (im2col, padding = `zero`) and
/// multiply by the weight rows. Accumulation order per output: input channel, then kernel row,
/// then kernel column.
pub(crate) fn conv2d_core<T>(x: &[T], wt: &[T], s: &ConvShape, zero: T) -> Vec<T>
where
    T: Copy + Mul<Output = T> + AddAssign,
{
    let g = s.geo.groups;
    let cg = s.c_in / g;
    let og = s.c_out / g;
    let kk = cg * s.kh * s.kw;
    let l = s.oh * s.ow;
    let plane = s.h * s.w;
    let mut out = vec![zero; s.n * s.c_out * l];
    let mut cols = vec![zero; kk * l];
    let [sy, sx] = s.geo.stride;
    let [py, px] = s.geo.padding;
    let [dy, dx] = s.geo.dilation;
    for b in 0..s.n {
        for gi in 0..g {
            for ci in 0..cg {
                let src = &x[(b * s.c_in + gi * cg + ci) * plane..][..plane];
                for ky in 0..s.kh {
                    for kx in 0..s.kw {
                        let row = (ci * s.kh + ky) * s.kw + kx;
                        let crow = &mut cols[row * l..(row + 1) * l];
                        for oy in 0..s.oh {
                            let iy = (oy * sy + ky * dy) as isize - py as isize;
                            let dst = &mut crow[oy * s.ow..(oy + 1) * s.ow];
                            if iy < 0 || iy >= s.h as isize {
                                dst.fill(zero);
                                continue;
                            }
                            let srow = &src[iy as usize * s.w..][..s.w];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * sx + kx * dx) as isize - px as isize;
                                *d = if ix < 0 || ix >= s.w as isize {
                                    zero
                                } else {
                                    srow[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
            for o in 0..og {
                let oc = gi * og + o;
                let orow = &mut out[(b * s.c_out + oc) * l..][..l];
                let wrow = &wt[oc * kk..][..kk];
                for (k, &wv) in wrow.iter().enumerate() {
                    let crow = &cols[k * l..][..l];
                    for (acc, &c) in orow.iter_mut().zip(crow) {
                        *acc += wv * c;
                    }
                }
            }
        }
    }
    out
}

/// Row-by-row product `out[n, o] = Σ_k x[n, k] · w[o, k]` (accumulation in `k` order).
pub(crate) fn linear_core<T>(x: &[T], wt: &[T], n: usize, k: usize, o: usize, zero: T) -> Vec<T>
where
    T: Copy + Mul<Output = T> + AddAssign,
{
    let mut out = vec![zero; n * o];
    for b in 0..n {
        let xr = &x[b * k..][..k];
        for j in 0..o {
            let wr = &wt[j * k..][..k];
            let mut acc = zero;
            for (&a, &w) in xr.iter().zip(wr) {
                acc += a * w;
            }
            out[b * o + j] = acc;
        }
    }
    out
}
