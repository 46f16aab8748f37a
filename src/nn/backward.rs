//! The backward passes of the float layers (what their [`Module::backward`](super::Module::backward)
//! computes): shared checks, the weighted layers (linear, convolution through im2col and its
//! transpose), the activations, pooling, shapes and BatchNorm in training mode.

use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, Axis, IxDyn, linalg::general_mat_mul};

use super::conv::ConvShape;
use super::{Activation, LayerGrads, WeightedCore};
use crate::error::{QuantError, Result};

/// The one float input of a single-input layer and the checked gradient of its output.
pub(crate) fn float_input<'a>(
    op: &'static str,
    inputs: &[&'a Activation],
    output: &Activation,
    grad: &ArrayD<f32>,
) -> Result<&'a ArrayD<f32>> {
    let x = super::module::one_input(op, inputs)?;
    check_grad(op, output, grad)?;
    match x {
        Activation::Float(a) => Ok(a),
        Activation::Quantized(_) => Err(QuantError::UnsupportedConfig {
            op,
            reason: "no gradient through a quantized activation (train the float model)",
        }),
    }
}

/// `grad` has the output's shape.
pub(crate) fn check_grad(op: &'static str, output: &Activation, grad: &ArrayD<f32>) -> Result<()> {
    if output.shape() == grad.shape() {
        Ok(())
    } else {
        Err(QuantError::ShapeMismatch {
            op,
            expected: output.shape().to_vec(),
            got: grad.shape().to_vec(),
        })
    }
}

/// `grad` where the fused ReLU let the output through (`output > 0`), as PyTorch's
/// `threshold_backward`; `grad` itself without a fused ReLU.
fn through_relu(core: &WeightedCore, output: &Activation, grad: &ArrayD<f32>) -> ArrayD<f32> {
    let mut g = grad.as_standard_layout().into_owned();
    if core.has_relu() {
        let y = output.to_float();
        ndarray::Zip::from(&mut g).and(&y).for_each(|g, &y| {
            if y <= 0.0 {
                *g = 0.0;
            }
        });
    }
    g
}

fn shaped(op: &'static str, shape: &[usize], data: Vec<f32>) -> Result<ArrayD<f32>> {
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|_| QuantError::ShapeMismatch {
        op,
        expected: shape.to_vec(),
        got: vec![],
    })
}

/// The gradients of the weighted core's parameters: `"weight"`, then `"bias"` when present.
fn core_params(
    op: &'static str,
    core: &WeightedCore,
    dw: Vec<f32>,
    db: Vec<f32>,
) -> Result<Vec<(&'static str, ArrayD<f32>)>> {
    let mut p = vec![("weight", shaped(op, core.weight().shape(), dw)?)];
    if core.bias().is_some() {
        p.push(("bias", shaped(op, &[core.out_channels()], db)?));
    }
    Ok(p)
}

/// `y = x·Wᵀ + b` (ReLU) over any leading shape: `dx = g·W`, `dW = gᵀ·x`, `db = Σ g`.
pub(crate) fn linear(
    op: &'static str,
    x: &ArrayD<f32>,
    core: &WeightedCore,
    output: &Activation,
    grad: &ArrayD<f32>,
) -> Result<LayerGrads> {
    let w = core.weight();
    let (o, k) = (w.shape()[0], w.shape()[1]);
    let n = super::linear::linear_rows(op, x.shape(), k)?;
    let g = through_relu(core, output, grad);
    let xs = x.as_standard_layout();
    let x2 = ArrayView2::from_shape((n, k), xs.as_slice().unwrap_or(&[])).map_err(|_| {
        QuantError::ShapeMismatch {
            op,
            expected: vec![n, k],
            got: x.shape().to_vec(),
        }
    })?;
    let g2 = ArrayView2::from_shape((n, o), g.as_slice().unwrap_or(&[])).map_err(|_| {
        QuantError::ShapeMismatch {
            op,
            expected: vec![n, o],
            got: g.shape().to_vec(),
        }
    })?;
    let w2 = ArrayView2::from_shape((o, k), core.weight_slice()).map_err(|_| {
        QuantError::ShapeMismatch {
            op,
            expected: vec![o, k],
            got: w.shape().to_vec(),
        }
    })?;
    let dx = g2.dot(&w2);
    let dw = g2.t().dot(&x2);
    let db = g2.sum_axis(Axis(0));
    Ok(LayerGrads {
        inputs: vec![shaped(op, x.shape(), dx.into_iter().collect())?],
        params: core_params(op, core, dw.into_iter().collect(), db.into_iter().collect())?,
        buffers: Vec::new(),
    })
}

/// The input position kernel tap `(ky, kx)` reads for output `(oy, ox)`, if inside.
#[inline]
fn tap(s: &ConvShape, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * s.geo.stride[0] + ky * s.geo.dilation[0]).checked_sub(s.geo.padding[0])?;
    let ix = (ox * s.geo.stride[1] + kx * s.geo.dilation[1]).checked_sub(s.geo.padding[1])?;
    (iy < s.h && ix < s.w).then_some((iy, ix))
}

/// Convolution over `[N, C, H, W]`: per image and group, the input unfolded (im2col, rows
/// `(ci, ky, kx)`) gives `dW += g·colsᵀ`, and `Wᵀ·g` folded back (col2im) gives `dx`.
pub(crate) fn conv2d(
    op: &'static str,
    x: &ArrayD<f32>,
    weight: &ArrayD<f32>,
    core: &WeightedCore,
    geo: super::ConvGeometry,
    output: &Activation,
    grad: &ArrayD<f32>,
) -> Result<LayerGrads> {
    let s = ConvShape::new(op, x.shape(), weight.shape(), geo)?;
    let g = through_relu(core, output, grad);
    let gd = g.as_slice().unwrap_or(&[]);
    let xs = x.as_standard_layout();
    let xd = xs.as_slice().unwrap_or(&[]);
    let ws = weight.as_standard_layout();
    let wd = ws.as_slice().unwrap_or(&[]);
    let (cg, og, l) = (s.cg(), s.og(), s.positions());
    let kk = cg * s.kh * s.kw;
    let plane = s.h * s.w;
    let mut dx = vec![0.0f32; x.len()];
    let mut dw = vec![0.0f32; weight.len()];
    let mut db = vec![0.0f32; s.c_out];
    let mut cols = vec![0.0f32; kk * l];
    let mut dcols = vec![0.0f32; kk * l];
    for n in 0..s.n {
        for gi in 0..s.geo.groups {
            // im2col of this image and group.
            for ci in 0..cg {
                let src = &xd[(n * s.c_in + gi * cg + ci) * plane..][..plane];
                for ky in 0..s.kh {
                    for kx in 0..s.kw {
                        let row = &mut cols[((ci * s.kh + ky) * s.kw + kx) * l..][..l];
                        for oy in 0..s.oh {
                            for ox in 0..s.ow {
                                row[oy * s.ow + ox] = tap(&s, oy, ox, ky, kx)
                                    .map_or(0.0, |(iy, ix)| src[iy * s.w + ix]);
                            }
                        }
                    }
                }
            }
            let g_off = (n * s.c_out + gi * og) * l;
            let gv = ArrayView2::from_shape((og, l), &gd[g_off..][..og * l]).map_err(|_| {
                QuantError::ShapeMismatch {
                    op,
                    expected: vec![og, l],
                    got: g.shape().to_vec(),
                }
            })?;
            let cv = ArrayView2::from_shape((kk, l), &cols[..]).map_err(|_| {
                QuantError::ShapeMismatch {
                    op,
                    expected: vec![kk, l],
                    got: vec![cols.len()],
                }
            })?;
            let mut dwv = ArrayViewMut2::from_shape((og, kk), &mut dw[gi * og * kk..][..og * kk])
                .map_err(|_| QuantError::ShapeMismatch {
                op,
                expected: vec![og, kk],
                got: weight.shape().to_vec(),
            })?;
            general_mat_mul(1.0, &gv, &cv.t(), 1.0, &mut dwv);
            for o in 0..og {
                db[gi * og + o] += gv.row(o).sum();
            }
            let wv =
                ArrayView2::from_shape((og, kk), &wd[gi * og * kk..][..og * kk]).map_err(|_| {
                    QuantError::ShapeMismatch {
                        op,
                        expected: vec![og, kk],
                        got: weight.shape().to_vec(),
                    }
                })?;
            let mut dcv = ArrayViewMut2::from_shape((kk, l), &mut dcols[..]).map_err(|_| {
                QuantError::ShapeMismatch {
                    op,
                    expected: vec![kk, l],
                    got: vec![],
                }
            })?;
            general_mat_mul(1.0, &wv.t(), &gv, 0.0, &mut dcv);
            // col2im: every tap's gradient back to the input position it read.
            for ci in 0..cg {
                let dst = &mut dx[(n * s.c_in + gi * cg + ci) * plane..][..plane];
                for ky in 0..s.kh {
                    for kx in 0..s.kw {
                        let row = &dcols[((ci * s.kh + ky) * s.kw + kx) * l..][..l];
                        for oy in 0..s.oh {
                            for ox in 0..s.ow {
                                if let Some((iy, ix)) = tap(&s, oy, ox, ky, kx) {
                                    dst[iy * s.w + ix] += row[oy * s.ow + ox];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(LayerGrads {
        inputs: vec![shaped(op, x.shape(), dx)?],
        params: core_params(op, core, dw, db)?,
        buffers: Vec::new(),
    })
}

/// `grad` where `pass(x)` (ReLU: `x > 0`; ReLU6: `0 < x < 6`, PyTorch's `hardtanh_backward`).
pub(crate) fn masked(
    op: &'static str,
    inputs: &[&Activation],
    output: &Activation,
    grad: &ArrayD<f32>,
    pass: impl Fn(f32) -> bool,
) -> Result<LayerGrads> {
    let x = float_input(op, inputs, output, grad)?;
    let mut g = grad.clone();
    ndarray::Zip::from(&mut g).and(x).for_each(|g, &x| {
        if !pass(x) {
            *g = 0.0;
        }
    });
    Ok(LayerGrads {
        inputs: vec![g],
        ..LayerGrads::default()
    })
}

/// The gradient reshaped to the input's shape (flatten, identity).
pub(crate) fn reshape(
    op: &'static str,
    inputs: &[&Activation],
    output: &Activation,
    grad: &ArrayD<f32>,
) -> Result<LayerGrads> {
    let x = float_input(op, inputs, output, grad)?;
    let g = grad.as_standard_layout().into_owned();
    let g = g
        .into_shape_with_order(IxDyn(x.shape()))
        .map_err(|_| QuantError::ShapeMismatch {
            op,
            expected: x.shape().to_vec(),
            got: grad.shape().to_vec(),
        })?;
    Ok(LayerGrads {
        inputs: vec![g],
        ..LayerGrads::default()
    })
}

/// BatchNorm over the channel axis 1 in training: `y = γ·(x − μ)/sqrt(σ² + ε) + β` with the
/// batch mean and biased variance over every other axis. Returns the gradients and the new
/// running statistics (`(1 − m)·running + m·batch`, the variance unbiased).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train(
    op: &'static str,
    x: &ArrayD<f32>,
    gamma: &[f32],
    eps: f64,
    running: (&[f32], &[f32]),
    momentum: f32,
    grad: &ArrayD<f32>,
) -> Result<LayerGrads> {
    let c = gamma.len();
    let count = x.len() / c.max(1);
    if count <= 1 {
        return Err(QuantError::InvalidParameter {
            op,
            what: "values per channel",
            value: count as f64,
            reason: "BatchNorm in training needs more than one value per channel",
        });
    }
    let mut dx = grad.as_standard_layout().into_owned();
    let (mut dgamma, mut dbeta) = (vec![0.0f32; c], vec![0.0f32; c]);
    let (mut rm, mut rv) = (running.0.to_vec(), running.1.to_vec());
    let n = count as f64;
    for ch in 0..c {
        let xc = x.index_axis(Axis(1), ch);
        let mean = xc.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = xc
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + eps).sqrt();
        let gc = grad.index_axis(Axis(1), ch);
        let (mut sg, mut sgx) = (0.0f64, 0.0f64);
        for (&g, &v) in gc.iter().zip(xc.iter()) {
            sg += f64::from(g);
            sgx += f64::from(g) * (f64::from(v) - mean) * inv;
        }
        dgamma[ch] = sgx as f32;
        dbeta[ch] = sg as f32;
        let gm = f64::from(gamma[ch]) * inv;
        let mut dc = dx.index_axis_mut(Axis(1), ch);
        ndarray::Zip::from(&mut dc).and(&xc).for_each(|d, &v| {
            let xhat = (f64::from(v) - mean) * inv;
            *d = (gm * (f64::from(*d) - sg / n - xhat * sgx / n)) as f32;
        });
        rm[ch] = (1.0 - momentum) * rm[ch] + momentum * mean as f32;
        rv[ch] = (1.0 - momentum) * rv[ch] + momentum * (var * n / (n - 1.0)) as f32;
    }
    Ok(LayerGrads {
        inputs: vec![dx],
        params: vec![
            ("weight", ndarray::Array1::from(dgamma).into_dyn()),
            ("bias", ndarray::Array1::from(dbeta).into_dyn()),
        ],
        buffers: vec![
            ("running_mean", ndarray::Array1::from(rm).into_dyn()),
            ("running_var", ndarray::Array1::from(rv).into_dyn()),
        ],
    })
}

/// The named parameter among `params`, checked to have `shape`.
pub(crate) fn param<'a>(
    op: &'static str,
    params: &'a [(&str, ArrayD<f32>)],
    name: &str,
    shape: &[usize],
) -> Result<Option<&'a ArrayD<f32>>> {
    match params.iter().find(|(n, _)| *n == name) {
        None => Ok(None),
        Some((_, v)) if v.shape() == shape => Ok(Some(v)),
        Some((_, v)) => Err(QuantError::ShapeMismatch {
            op,
            expected: shape.to_vec(),
            got: v.shape().to_vec(),
        }),
    }
}

/// Refuses a parameter name outside `known`.
pub(crate) fn known_params(
    op: &'static str,
    params: &[(&str, ArrayD<f32>)],
    known: &[&str],
) -> Result<()> {
    match params.iter().find(|(n, _)| !known.contains(n)) {
        Some((n, _)) => Err(QuantError::NotFound {
            op,
            what: "parameter",
            name: (*n).to_string(),
        }),
        None => Ok(()),
    }
}

/// The weighted core with new `"weight"` / `"bias"` (shapes checked), the fused ReLU kept.
pub(crate) fn core_with(
    op: &'static str,
    core: &WeightedCore,
    params: &[(&str, ArrayD<f32>)],
) -> Result<WeightedCore> {
    known_params(op, params, &["weight", "bias"])?;
    let w = param(op, params, "weight", core.weight().shape())?
        .unwrap_or(core.weight())
        .clone();
    let b = match (
        core.bias(),
        param(op, params, "bias", &[core.out_channels()])?,
    ) {
        (Some(_), Some(b)) => Some(b.clone()),
        (b, _) => b.cloned(),
    };
    let c = WeightedCore::new(w, b)?;
    Ok(if core.has_relu() { c.with_relu() } else { c })
}

/// The weighted core's parameters: `"weight"`, then `"bias"` when present.
pub(crate) fn core_param_list(core: &WeightedCore) -> Vec<(&'static str, ArrayD<f32>)> {
    let mut p = vec![("weight", core.weight().clone())];
    if let Some(b) = core.bias() {
        p.push(("bias", b.clone()));
    }
    p
}
