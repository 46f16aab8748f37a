//! [`MaxPool2d`] and [`AvgPool2d`] over `[N, C, H, W]`, float or quantized.

use ndarray::{ArrayD, IxDyn};

use super::{Activation, LayerRole, Module};
use crate::error::{QuantError, Result};

/// The checked shape of a pooling: planes, input and output sizes.
#[derive(Debug, Clone, Copy)]
struct PoolShape {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
}

impl PoolShape {
    fn new(
        op: &'static str,
        shape: &[usize],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Self> {
        let &[n, c, h, w] = shape else {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: vec![0; 4],
                got: shape.to_vec(),
            });
        };
        for (what, v) in [("kernel_size", kernel), ("stride", stride)] {
            if v.contains(&0) {
                return Err(QuantError::InvalidParameter {
                    op,
                    what,
                    value: 0.0,
                    reason: "must be >= 1",
                });
            }
        }
        if padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2 {
            return Err(QuantError::InvalidParameter {
                op,
                what: "padding",
                value: padding[0].max(padding[1]) as f64,
                reason: "must be at most half the kernel size",
            });
        }
        // padding <= kernel / 2, so 2·padding cannot overflow; the sum with the input can.
        let padded = |len: usize, p: usize| {
            len.checked_add(2 * p).ok_or(QuantError::GeometryOverflow {
                op,
                what: "input + 2 · padding",
            })
        };
        let (ph, pw) = (padded(h, padding[0])?, padded(w, padding[1])?);
        if ph < kernel[0] || pw < kernel[1] {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: kernel.to_vec(),
                got: vec![ph, pw],
            });
        }
        let (oh, ow) = (
            (ph - kernel[0]) / stride[0] + 1,
            (pw - kernel[1]) / stride[1] + 1,
        );
        crate::nn::shape::checked_elements(op, "pooling output", &[n, c, oh, ow])?;
        Ok(PoolShape {
            planes: n * c,
            h,
            w,
            oh,
            ow,
            kernel,
            stride,
            padding,
        })
    }

    /// The input rows (or columns) window `o` covers: the window clipped to the input, so a
    /// huge padded window costs what its real taps cost.
    fn span(o: usize, stride: usize, k: usize, pad: usize, len: usize) -> std::ops::Range<usize> {
        // (o·stride + k) <= len + 2·pad, which fits: checked when the shape was built.
        let start = (o * stride).saturating_sub(pad).min(len);
        let end = (o * stride + k).saturating_sub(pad).min(len);
        start..end.max(start)
    }

    /// Runs `f(window values)` over every window (the taps inside the input; padded taps
    /// are left out).
    fn run<T: Copy, U>(&self, data: &[T], mut f: impl FnMut(&[T]) -> U) -> Vec<U> {
        let mut out = Vec::with_capacity(self.planes * self.oh * self.ow);
        let mut win = Vec::new();
        for p in 0..self.planes {
            let plane = &data[p * self.h * self.w..][..self.h * self.w];
            for oy in 0..self.oh {
                let ys = Self::span(oy, self.stride[0], self.kernel[0], self.padding[0], self.h);
                for ox in 0..self.ow {
                    let xs =
                        Self::span(ox, self.stride[1], self.kernel[1], self.padding[1], self.w);
                    win.clear();
                    for iy in ys.clone() {
                        win.extend_from_slice(&plane[iy * self.w..][xs.clone()]);
                    }
                    out.push(f(&win));
                }
            }
        }
        out
    }

    /// Without padding, every window lies inside the input: the output row by row, one tap
    /// `(ky, kx)` at a time over the whole row (`fold(acc, value)` in the taps' order, the
    /// order [`PoolShape::run`] lists a window in), so the inner loop runs along contiguous
    /// outputs instead of gathering each window. `None` with padding.
    fn run_rows<T: Copy, U: Copy>(
        &self,
        data: &[T],
        init: U,
        fold: impl Fn(U, T) -> U,
    ) -> Option<Vec<U>> {
        if self.padding != [0, 0] {
            return None;
        }
        let (ow, [kh, kw], [sh, sw]) = (self.ow, self.kernel, self.stride);
        let mut out = vec![init; self.planes * self.oh * ow];
        for (p, out_p) in out.chunks_exact_mut((self.oh * ow).max(1)).enumerate() {
            let plane = &data[p * self.h * self.w..][..self.h * self.w];
            for (oy, row) in out_p.chunks_exact_mut(ow.max(1)).enumerate() {
                for ky in 0..kh {
                    let src = &plane[(oy * sh + ky) * self.w..][..self.w];
                    if sw == kw {
                        // Windows side by side (`nn.MaxPool2d(k)`): each output's row of taps
                        // is one chunk, folded in order.
                        for (o, taps) in row.iter_mut().zip(src.chunks_exact(kw)) {
                            for &v in taps {
                                *o = fold(*o, v);
                            }
                        }
                    } else {
                        for kx in 0..kw {
                            let taps = src[kx..].iter().step_by(sw);
                            for (o, &v) in row.iter_mut().zip(taps) {
                                *o = fold(*o, v);
                            }
                        }
                    }
                }
            }
        }
        Some(out)
    }

    /// `2 × 2` windows side by side covering the input exactly (`nn.MaxPool2d(2)` on even
    /// planes).
    fn is_2x2_tiling(&self) -> bool {
        self.kernel == [2, 2]
            && self.stride == [2, 2]
            && self.padding == [0, 0]
            && self.h == 2 * self.oh
            && self.w == 2 * self.ow
    }

    /// `nn.MaxPool2d(2)` on even planes (`2 × 2` windows side by side covering the input, no
    /// padding): each window as its top pair folded with its bottom pair, two rows of the
    /// input at a time. Regrouping `((a, b), (c, d))` is exact only for a fold that is
    /// associative, as MaxPool's is (the largest value, the first of equals, the last NaN);
    /// `None` for any other geometry.
    fn run_2x2<T: Copy>(&self, data: &[T], fold: impl Fn(T, T) -> T) -> Option<Vec<T>> {
        if !self.is_2x2_tiling() || data.is_empty() {
            return None;
        }
        let (w, ow) = (self.w, self.ow);
        let mut out = Vec::with_capacity(data.len() / 4);
        for rows in data.chunks_exact(2 * w) {
            let (top, bottom) = rows.split_at(w);
            out.extend(
                top.chunks_exact(2)
                    .zip(bottom.chunks_exact(2))
                    .take(ow)
                    .map(|(t, b)| fold(fold(t[0], t[1]), fold(b[0], b[1]))),
            );
        }
        Some(out)
    }

    /// [`PoolShape::run_2x2`] for quantized values (`u8::max`, which is also commutative),
    /// in long loops the compiler vectorises whatever the plane's width: per block of row
    /// pairs, each row's maximum with the row below, then of adjacent pairs, then every other
    /// output row kept. `None` for any other geometry.
    fn run_2x2_u8(&self, data: &[u8]) -> Option<Vec<u8>> {
        if !self.is_2x2_tiling() || data.is_empty() {
            return None;
        }
        let (w, ow) = (self.w, self.ow);
        // Row pairs per block: about 4 KiB of input.
        let pairs = (2048 / w).max(1);
        let mut out = vec![0u8; data.len() / 4];
        let (mut down, mut across) = (Vec::new(), Vec::new());
        for (block, out_b) in data.chunks(2 * w * pairs).zip(out.chunks_mut(ow * pairs)) {
            // Rows 2r and 2r + 1 (and, unused, 2r + 1 and 2r + 2).
            down.resize(block.len() - w, 0);
            across.resize(down.len() / 2, 0);
            max_down_across(block, w, &mut down, &mut across);
            let rows = out_b.len() / ow;
            // Rows of at most 8 bytes as one 8-byte move each while both sides have room
            // (the bytes past `ow` are the next row's, written after): a call to `memcpy`
            // per row cost more than the pool.
            let short = if ow <= 8 {
                let room = |len: usize, step: usize| len.checked_sub(8).map_or(0, |s| s / step + 1);
                room(across.len(), 2 * ow)
                    .min(room(out_b.len(), ow))
                    .min(rows)
            } else {
                0
            };
            for r in 0..short {
                let a: [u8; 8] = across[2 * r * ow..][..8].try_into().expect("eight bytes");
                out_b[r * ow..][..8].copy_from_slice(&a);
            }
            for r in short..rows {
                out_b[r * ow..][..ow].copy_from_slice(&across[2 * r * ow..][..ow]);
            }
        }
        Some(out)
    }

    /// Calls `f(output index, input indices of its window)` for every window, in the order
    /// [`PoolShape::run`] visits them (indices into the whole `[N, C, H, W]` input).
    fn for_each_window(&self, mut f: impl FnMut(usize, &[usize])) {
        let mut win = Vec::new();
        let mut j = 0;
        for p in 0..self.planes {
            let base = p * self.h * self.w;
            for oy in 0..self.oh {
                let ys = Self::span(oy, self.stride[0], self.kernel[0], self.padding[0], self.h);
                for ox in 0..self.ow {
                    let xs =
                        Self::span(ox, self.stride[1], self.kernel[1], self.padding[1], self.w);
                    win.clear();
                    for iy in ys.clone() {
                        win.extend(xs.clone().map(|ix| base + iy * self.w + ix));
                    }
                    f(j, &win);
                    j += 1;
                }
            }
        }
    }

    /// The backward pass of a pooling: `route(x, window, g)` adds each output's gradient
    /// `g` to the input positions its window took it from.
    fn backward(
        op: &'static str,
        layer: (&[usize; 2], &[usize; 2], &[usize; 2]),
        inputs: &[&Activation],
        output: &Activation,
        grad: &ArrayD<f32>,
        route: impl Fn(&[f32], &[usize], f32, &mut [f32]),
    ) -> Result<super::LayerGrads> {
        let x = super::backward::float_input(op, inputs, output, grad)?;
        let s = PoolShape::new(op, x.shape(), *layer.0, *layer.1, *layer.2)?;
        let xs = x.as_standard_layout();
        let xd = xs.as_slice().unwrap_or(&[]);
        let gs = grad.as_standard_layout();
        let gd = gs.as_slice().unwrap_or(&[]);
        let mut dx = vec![0.0f32; x.len()];
        s.for_each_window(|j, win| route(xd, win, gd[j], &mut dx));
        Ok(super::LayerGrads {
            inputs: vec![ArrayD::from_shape_vec(IxDyn(x.shape()), dx).map_err(|_| {
                QuantError::ShapeMismatch {
                    op,
                    expected: x.shape().to_vec(),
                    got: vec![],
                }
            })?],
            ..super::LayerGrads::default()
        })
    }

    fn out_shape(&self, input: &[usize]) -> [usize; 4] {
        [input[0], input[1], self.oh, self.ow]
    }
}

/// Max pooling over `[N, C, H, W]` (padding never wins, `ceil_mode = false`, dilation 1).
/// Works on quantized activations too (the maximum of the integers, parameters kept, exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Window (height, width).
    pub kernel: [usize; 2],
    /// Stride (height, width); PyTorch's default is the kernel size.
    pub stride: [usize; 2],
    /// Padding (height, width).
    pub padding: [usize; 2],
}

impl MaxPool2d {
    /// A square window `k`, stride `k`, no padding (`nn.MaxPool2d(k)`).
    #[must_use]
    pub fn new(k: usize) -> Self {
        MaxPool2d {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
        }
    }
}

/// `down[i] = max(x[i], x[i + w])`, then `across[j] = max(down[2j], down[2j + 1])` (the
/// pairs read as little-endian `u16`, which the compiler vectorises).
#[inline(always)]
fn max_down_across_body(x: &[u8], w: usize, down: &mut [u8], across: &mut [u8]) {
    for ((d, &a), &b) in down.iter_mut().zip(x).zip(&x[w..]) {
        *d = a.max(b);
    }
    for (o, p) in across.iter_mut().zip(down.chunks_exact(2)) {
        let v = u16::from_le_bytes([p[0], p[1]]);
        *o = (v as u8).max((v >> 8) as u8);
    }
}

crate::simd::dispatched!(fn max_down_across[](x: &[u8], w: usize, down: &mut [u8], across: &mut [u8]) = max_down_across_body);

impl Module for MaxPool2d {
    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "MaxPool2d::forward";
        let s = PoolShape::new(OP, x.shape(), self.kernel, self.stride, self.padding)?;
        let shape = s.out_shape(x.shape());
        match x {
            Activation::Float(a) => {
                let data = a.as_standard_layout();
                let data = data.as_slice().expect("standard layout");
                // PyTorch's rule: a later value wins only if larger, and NaN always wins
                // (so a NaN stays, and of equal values the first is kept).
                let take = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
                let out = match s.run_2x2(data, take) {
                    Some(out) => out,
                    None => match s.run_rows(data, f32::NEG_INFINITY, take) {
                        Some(out) => out,
                        None => s.run(data, |w| w.iter().copied().fold(f32::NEG_INFINITY, take)),
                    },
                };
                Ok(Activation::Float(
                    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("output size"),
                ))
            }
            Activation::Quantized(q) => {
                let data = q.int_repr().as_standard_layout();
                let data = data.as_slice().expect("standard layout");
                let out = match s.run_2x2_u8(data) {
                    Some(out) => out,
                    None => match s.run_rows(data, 0u8, |m, v| m.max(v)) {
                        Some(out) => out,
                        None => s.run(data, |w| w.iter().copied().max().unwrap_or(0)),
                    },
                };
                let arr = ArrayD::from_shape_vec(IxDyn(&shape), out).expect("output size");
                Ok(Activation::Quantized(q.with_data(arr)))
            }
        }
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::PassThrough
    }

    /// The gradient goes to the window's maximum (the first one, a NaN winning, as PyTorch's
    /// `max_pool2d` picks its index).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        Some(PoolShape::backward(
            "MaxPool2d::backward",
            (&self.kernel, &self.stride, &self.padding),
            inputs,
            output,
            grad_output,
            |x, win, g, dx| {
                let mut best: Option<usize> = None;
                for &i in win {
                    match best {
                        None => best = Some(i),
                        Some(b) if x[b].is_nan() => {}
                        Some(b) if x[i].is_nan() || x[i] > x[b] => best = Some(i),
                        Some(_) => {}
                    }
                }
                if let Some(b) = best {
                    dx[b] += g;
                }
            },
        ))
    }
}

/// Average pooling over `[N, C, H, W]` (`count_include_pad = true`, `ceil_mode = false`).
/// On a quantized activation the parameters are kept and the average is computed on the
/// integers, summed in `i64`: `zp + rne((Σq − count·zp) / window)`, clamped to `0..=255`
/// (PyTorch's quantized `avg_pool2d` with equal input and output parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    /// Window (height, width).
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Padding (height, width), counted in the divisor.
    pub padding: [usize; 2],
}

impl AvgPool2d {
    /// A square window `k`, stride `k`, no padding (`nn.AvgPool2d(k)`).
    #[must_use]
    pub fn new(k: usize) -> Self {
        AvgPool2d {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
        }
    }
}

impl Module for AvgPool2d {
    fn kind(&self) -> &'static str {
        "AvgPool2d"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "AvgPool2d::forward";
        let s = PoolShape::new(OP, x.shape(), self.kernel, self.stride, self.padding)?;
        let shape = s.out_shape(x.shape());
        // The divisor counts padded taps; as f64 it is exact up to 2^53.
        let div = self.kernel[0] as f64 * self.kernel[1] as f64;
        match x {
            Activation::Float(a) => {
                let data = a.as_standard_layout();
                let data = data.as_slice().expect("standard layout");
                // Each window summed in its taps' order from -0.0 (what `Iterator::sum`
                // does), then divided: the same operations either way.
                let out = match s.run_rows(data, -0.0f32, |a, v| a + v) {
                    Some(mut sums) => {
                        for v in &mut sums {
                            *v /= div as f32;
                        }
                        sums
                    }
                    None => s.run(data, |w| w.iter().sum::<f32>() / div as f32),
                };
                Ok(Activation::Float(
                    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("output size"),
                ))
            }
            Activation::Quantized(q) => {
                let zp = i64::from(q.need_per_tensor(OP)?.zero_point());
                let data = q.int_repr().as_standard_layout();
                let out = s.run(data.as_slice().expect("standard layout"), |w| {
                    let sum: i64 = w.iter().map(|&v| i64::from(v) - zp).sum();
                    let v = (sum as f64 / div).round_ties_even() + zp as f64;
                    v.clamp(0.0, 255.0) as u8
                });
                let arr = ArrayD::from_shape_vec(IxDyn(&shape), out).expect("output size");
                Ok(Activation::Quantized(q.with_data(arr)))
            }
        }
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::PassThrough
    }

    /// Each tap of the window gets `g / (kh·kw)` (padding counted, as the forward divides).
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        let div = (self.kernel[0] as f64 * self.kernel[1] as f64) as f32;
        Some(PoolShape::backward(
            "AvgPool2d::backward",
            (&self.kernel, &self.stride, &self.padding),
            inputs,
            output,
            grad_output,
            |_, win, g, dx| {
                for &i in win {
                    dx[i] += g / div;
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row-by-row path gives what gathering each window gives, bit for bit (NaN, ±0,
    /// overlapping and strided windows).
    #[test]
    fn rows_equal_windows() {
        let mut rng = crate::rng::Lcg::new(5);
        for &([n, c, h, w], kernel, stride) in &[
            ([2, 3, 8, 8], [2, 2], [2, 2]),
            ([3, 2, 4, 6], [2, 2], [2, 2]),
            ([1, 2, 7, 9], [3, 2], [2, 3]),
            ([1, 1, 5, 5], [3, 3], [1, 1]),
            ([2, 1, 6, 4], [1, 4], [1, 1]),
        ] {
            let len = n * c * h * w;
            let data: Vec<f32> = (0..len)
                .map(|i| match i % 29 {
                    0 => f32::NAN,
                    1 => -0.0,
                    2 => 0.0,
                    _ => rng.unit_f32() * 4.0 - 2.0,
                })
                .collect();
            let s = PoolShape::new("t", &[n, c, h, w], kernel, stride, [0, 0]).expect("shape");
            let take = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
            let rows = s
                .run_rows(&data, f32::NEG_INFINITY, take)
                .expect("no padding");
            let wins = s.run(&data, |w| w.iter().copied().fold(f32::NEG_INFINITY, take));
            assert_eq!(rows.len(), wins.len());
            for (a, b) in rows.iter().zip(&wins) {
                assert_eq!(a.to_bits(), b.to_bits());
            }
            let sums = s
                .run_rows(&data, -0.0f32, |a, v| a + v)
                .expect("no padding");
            let wsum = s.run(&data, |w| w.iter().sum::<f32>());
            for (a, b) in sums.iter().zip(&wsum) {
                assert_eq!(a.to_bits(), b.to_bits());
            }
            let bytes: Vec<u8> = (0..len).map(|_| (rng.next_u64() >> 56) as u8).collect();
            let q = s
                .run_rows(&bytes, 0u8, |m, v| m.max(v))
                .expect("no padding");
            assert_eq!(q, s.run(&bytes, |w| w.iter().copied().max().unwrap_or(0)));
            if let Some(pairs) = s.run_2x2(&data, take) {
                for (a, b) in pairs.iter().zip(&wins) {
                    assert_eq!(a.to_bits(), b.to_bits(), "2×2 regrouped");
                }
                assert_eq!(s.run_2x2(&bytes, |m: u8, v| m.max(v)), Some(q.clone()));
                assert_eq!(s.run_2x2_u8(&bytes), Some(q));
            }
        }
        // The quantized 2 × 2 pool at plane widths below, at and above its 8-byte rows, and
        // with blocks of row pairs that end mid-plane.
        for &[n, c, h, w] in &[
            [1, 1, 2, 2],
            [2, 3, 4, 6],
            [5, 32, 8, 8],
            [3, 4, 6, 16],
            [2, 2, 10, 18],
            [1, 3, 2, 4098],
            [2, 2, 300, 34],
        ] {
            let s = PoolShape::new("t", &[n, c, h, w], [2, 2], [2, 2], [0, 0]).expect("shape");
            let bytes: Vec<u8> = (0..n * c * h * w)
                .map(|_| (rng.next_u64() >> 56) as u8)
                .collect();
            let want = s.run(&bytes, |w| w.iter().copied().max().unwrap_or(0));
            assert_eq!(s.run_2x2_u8(&bytes), Some(want), "{:?}", [n, c, h, w]);
        }
        let odd = PoolShape::new("t", &[1, 1, 5, 4], [2, 2], [2, 2], [0, 0]).expect("shape");
        assert_eq!(odd.run_2x2_u8(&[0; 20]), None);
        let padded = PoolShape::new("t", &[1, 1, 4, 4], [3, 3], [1, 1], [1, 1]).expect("shape");
        assert!(padded.run_rows(&[0.0f32; 16], 0.0, |a, v| a + v).is_none());
    }
}
