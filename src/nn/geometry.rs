//! Convolution geometry shared by the float and the int8 convolutions: [`ConvGeometry`] /
//! [`ConvGeometry1d`], the checked output-shape arithmetic ([`ConvShape`]), image blocks and
//! the unfolding's column runs.

use crate::error::{QuantError, Result};

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
        if !out_channels.is_multiple_of(self.groups) {
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

/// Inserts a unit axis at position 2 of a 3-D shape (`[a, b, c]` → `[a, b, 1, c]`).
pub(crate) fn as_height_one(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    s.insert(2.min(s.len()), 1);
    s
}
