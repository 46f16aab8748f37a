//! [`QatConvBn`]: a Conv2d and the BatchNorm (and ReLU) after it, kept unfolded for training
//! in a model prepared by [`prepare_qat`](super::prepare_qat) (PyTorch's `fuse_modules_qat`
//! + `prepare_qat`: `torch.ao.nn.intrinsic.qat.ConvBn2d` / `ConvBnReLU2d`).

use std::sync::{Mutex, MutexGuard, PoisonError};

use ndarray::{ArrayD, Axis};

use super::{FakeQuantize, QatAction};
use crate::error::{QuantError, Result};
use crate::fusion::{ConvLayout, fuse_conv_bn_weights};
use crate::nn::{Activation, BatchNormParams, Conv2d, LayerGrads, LayerRole, Module};
use crate::qparams::{AnyQParams, QParams};

/// PyTorch's BatchNorm momentum (the running statistics move by this fraction per step).
const MOMENTUM: f32 = 0.1;

/// What a training forward moves: the weight fake quant, the running statistics, the BN
/// switch, and what the backward pass needs from the forward (the scale factors the weight
/// was folded with, before this step's running-statistics update).
#[derive(Debug, Clone)]
struct State {
    weight_fq: FakeQuantize,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    bn_frozen: bool,
    last_sf: Option<Vec<f32>>,
}

/// A Conv2d followed by a BatchNorm2d (and a ReLU) kept unfolded in training, as PyTorch's
/// QAT `ConvBn2d` / `ConvBnReLU2d` (`_forward_approximate`, the same steps as the step-exact
/// [`ConvBn2d`](super::ConvBn2d), here with the configuration's weight fake quant and the
/// crate's convolution):
/// 1. `sf = γ / sqrt(running_var + eps)` with the running statistics before this step;
/// 2. the weight folded and fake-quantized per output channel: `w_fq = fq(w · sf[o])` (the
///    weight fake quant observes the folded weight when its observer is enabled);
/// 3. `z = conv(x, w_fq) / sf[o] + bias[o]`;
/// 4. BatchNorm of `z`: in training with the batch mean and biased variance over
///    `(N, H, W)`, the running statistics moving by momentum 0.1 towards the batch mean and
///    unbiased variance; frozen ([`QatAction::FreezeBnStats`]) with the running statistics;
///    then the ReLU, then the output fake quant.
///
/// Backward: the output fake quant's and the ReLU's masks, BatchNorm's backward (batch
/// statistics in training, running ones when frozen), the convolution's backward with the
/// fake-quantized weight, the weight fake quant's straight-through mask and the fold (`· sf`).
/// As in PyTorch with the straight-through estimator, `sf` cancels between the fold and the
/// division, so `γ`'s gradient is the BatchNorm's (its path through `sf` is not followed).
///
/// [`QatModel::convert`](super::QatModel::convert) folds the BatchNorm with the running
/// statistics (PyTorch's `fuse_conv_bn_weights`), lets the weight fake quant see the folded
/// weight, and quantizes it with the fake quant's parameters, as PyTorch's `from_float` does
/// for these modules.
#[derive(Debug)]
pub struct QatConvBn {
    conv: Conv2d,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f64,
    relu: bool,
    state: Mutex<State>,
    output_fq: Option<Mutex<FakeQuantize>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Clone for QatConvBn {
    fn clone(&self) -> Self {
        QatConvBn {
            conv: self.conv.clone(),
            gamma: self.gamma.clone(),
            beta: self.beta.clone(),
            eps: self.eps,
            relu: self.relu,
            state: Mutex::new(lock(&self.state).clone()),
            output_fq: self.output_fq.as_ref().map(|m| Mutex::new(lock(m).clone())),
        }
    }
}

/// `[N, C, H, W]` channel statistics of `z`: per channel `(mean, biased variance, count)`.
fn channel_stats(z: &ArrayD<f32>) -> (Vec<f64>, Vec<f64>, usize) {
    let c = z.shape()[1];
    let (mut mean, mut var) = (vec![0.0f64; c], vec![0.0f64; c]);
    let count = z.len() / c.max(1);
    for (ch, plane) in z.axis_iter(Axis(1)).enumerate() {
        let m = plane.iter().map(|&v| f64::from(v)).sum::<f64>() / count.max(1) as f64;
        let v = plane
            .iter()
            .map(|&v| (f64::from(v) - m).powi(2))
            .sum::<f64>()
            / count.max(1) as f64;
        mean[ch] = m;
        var[ch] = v;
    }
    (mean, var, count)
}

impl QatConvBn {
    /// A Conv2d (without a fused ReLU) and the BatchNorm after it, with a per-channel weight
    /// fake quant (axis 0) and an optional output fake quant.
    ///
    /// # Errors
    /// [`QuantError::UnsupportedLayer`] for a Conv2d with a fused ReLU (fuse the ReLU here
    /// with `relu`); [`QuantError::LengthMismatch`] when the BatchNorm's channels differ from
    /// the convolution's; [`QuantError::UnsupportedConfig`] for a weight fake quant that is not
    /// per channel along axis 0; the BatchNorm's own validation errors.
    pub fn new(
        conv: Conv2d,
        bn: &BatchNormParams,
        relu: bool,
        weight_fq: FakeQuantize,
        output_fq: Option<FakeQuantize>,
    ) -> Result<Self> {
        const OP: &str = "QatConvBn::new";
        if conv.core().has_relu() {
            return Err(QuantError::UnsupportedLayer {
                op: OP,
                kind: "Conv2d".into(),
                reason: "the convolution already has a fused ReLU",
            });
        }
        bn.validate(OP)?;
        let o = conv.out_channels();
        if bn.num_features() != o {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "BatchNorm channels",
                expected: o,
                got: bn.num_features(),
            });
        }
        if weight_fq.ch_axis() != Some(0) {
            return Err(QuantError::UnsupportedConfig {
                op: OP,
                reason: "the weight fake quant must be per channel along axis 0",
            });
        }
        Ok(QatConvBn {
            conv,
            gamma: bn.weight.clone().unwrap_or_else(|| vec![1.0; o]),
            beta: bn.bias.clone().unwrap_or_else(|| vec![0.0; o]),
            eps: bn.eps,
            relu,
            state: Mutex::new(State {
                weight_fq,
                running_mean: bn.running_mean.clone(),
                running_var: bn.running_var.clone(),
                bn_frozen: false,
                last_sf: None,
            }),
            output_fq: output_fq.map(Mutex::new),
        })
    }

    /// The convolution (its float, trained weight and bias).
    #[must_use]
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The BatchNorm's parameters with the current running statistics.
    #[must_use]
    pub fn batch_norm(&self) -> BatchNormParams {
        let st = lock(&self.state);
        BatchNormParams {
            running_mean: st.running_mean.clone(),
            running_var: st.running_var.clone(),
            weight: Some(self.gamma.clone()),
            bias: Some(self.beta.clone()),
            eps: self.eps,
        }
    }

    /// Whether a ReLU follows the BatchNorm (`ConvBnReLU2d`).
    #[must_use]
    pub fn has_relu(&self) -> bool {
        self.relu
    }

    /// Whether the BatchNorm statistics are frozen.
    #[must_use]
    pub fn bn_frozen(&self) -> bool {
        lock(&self.state).bn_frozen
    }

    /// A copy of the weight fake quant.
    #[must_use]
    pub fn weight_fake_quant(&self) -> FakeQuantize {
        lock(&self.state).weight_fq.clone()
    }

    /// A copy of the output fake quant, if any.
    #[must_use]
    pub fn output_fake_quant(&self) -> Option<FakeQuantize> {
        self.output_fq.as_ref().map(|m| lock(m).clone())
    }

    /// Applies a switch: BatchNorm freezing, the fake quants' observer and fake-quant
    /// switches (train/eval do not concern them).
    pub fn apply(&self, action: QatAction) {
        {
            let mut st = lock(&self.state);
            match action {
                QatAction::FreezeBnStats => st.bn_frozen = true,
                QatAction::UpdateBnStats => st.bn_frozen = false,
                QatAction::DisableObserver => st.weight_fq.enable_observer(false),
                QatAction::EnableObserver => st.weight_fq.enable_observer(true),
                QatAction::DisableFakeQuant => st.weight_fq.enable_fake_quant(false),
                QatAction::EnableFakeQuant => st.weight_fq.enable_fake_quant(true),
                QatAction::Eval | QatAction::Train => {}
            }
        }
        if let Some(m) = &self.output_fq {
            let mut fq = lock(m);
            match action {
                QatAction::DisableObserver => fq.enable_observer(false),
                QatAction::EnableObserver => fq.enable_observer(true),
                QatAction::DisableFakeQuant => fq.enable_fake_quant(false),
                QatAction::EnableFakeQuant => fq.enable_fake_quant(true),
                _ => {}
            }
        }
    }

    /// The output's parameters (per tensor).
    ///
    /// # Errors
    /// [`QuantError::NotFound`] without an output fake quant; the parameters' errors.
    pub fn output_qparams(&self) -> Result<QParams> {
        const OP: &str = "QatConvBn::output_qparams";
        let m = self
            .output_fq
            .as_ref()
            .ok_or_else(|| QuantError::NotFound {
                op: OP,
                what: "output fake quant of layer kind",
                name: self.kind().to_string(),
            })?;
        match lock(m).qparams()? {
            AnyQParams::PerTensor(p) => Ok(p),
            AnyQParams::PerChannel(_) => Err(QuantError::UnsupportedQParams {
                op: OP,
                reason: "activation fake quants must be per tensor",
            }),
        }
    }

    /// The float convolution `convert` quantizes: the BatchNorm folded with the running
    /// statistics, the ReLU fused; and the weight parameters, the weight fake quant having
    /// seen the folded weight (when its observer is enabled), as PyTorch's `from_float`.
    ///
    /// # Errors
    /// Errors of the fold and of the observation.
    pub(crate) fn folded(&self) -> Result<(Conv2d, AnyQParams)> {
        let bn = self.batch_norm();
        let core = self.conv.core();
        let (w, b) = fuse_conv_bn_weights(core.weight(), core.bias(), &bn, ConvLayout::Conv)?;
        let mut conv = Conv2d::new(w, Some(b), self.conv.geometry())?;
        if self.relu {
            conv = conv.with_relu();
        }
        let mut st = lock(&self.state);
        if st.weight_fq.observer_enabled() {
            st.weight_fq.forward(conv.core().weight())?;
        }
        let qp = st.weight_fq.qparams()?;
        Ok((conv, qp))
    }

    /// `sf = γ / sqrt(running_var + eps)` in `f32`, refused when zero or not finite.
    fn scale_factors(&self, op: &'static str, running_var: &[f32]) -> Result<Vec<f32>> {
        let eps = self.eps as f32;
        self.gamma
            .iter()
            .zip(running_var)
            .map(|(&g, &v)| {
                let sf = g / (v + eps).sqrt();
                if sf.is_finite() && sf != 0.0 {
                    Ok(sf)
                } else {
                    Err(QuantError::InvalidParameter {
                        op,
                        what: "bn_weight / running_std",
                        value: f64::from(sf),
                        reason: "must be finite and non-zero (the convolution is divided by it)",
                    })
                }
            })
            .collect()
    }

    /// The weight folded with `sf`.
    fn fold(&self, sf: &[f32]) -> ArrayD<f32> {
        let mut w = self.conv.core().weight().clone();
        for (mut row, &s) in w.axis_iter_mut(Axis(0)).zip(sf) {
            row.mapv_inplace(|v| v * s);
        }
        w
    }

    /// `z = conv(x, w_fq) / sf + bias` and the convolution without bias it came from.
    fn pre_bn(
        &self,
        x: &Activation,
        w_fq: ArrayD<f32>,
        sf: &[f32],
    ) -> Result<(Conv2d, ArrayD<f32>, ArrayD<f32>)> {
        let conv = Conv2d::new(w_fq, None, self.conv.geometry())?;
        let z0 = conv.forward(x)?.into_float();
        let mut z = z0.clone();
        let bias = self.conv.core().bias_slice();
        for (c, mut plane) in z.axis_iter_mut(Axis(1)).enumerate() {
            let b = bias.map_or(0.0, |b| b[c]);
            plane.mapv_inplace(|v| v / sf[c] + b);
        }
        Ok((conv, z0, z))
    }

    /// BatchNorm of `z` with per-channel `(mean, var)`, then the ReLU.
    fn normalize(&self, z: &ArrayD<f32>, mean: &[f64], var: &[f64]) -> ArrayD<f32> {
        let mut y = z.clone();
        for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
            let inv = 1.0 / (var[c] + self.eps).sqrt();
            let (g, b) = (f64::from(self.gamma[c]), f64::from(self.beta[c]));
            plane.mapv_inplace(|v| {
                let r = (g * (f64::from(v) - mean[c]) * inv + b) as f32;
                if self.relu { r.max(0.0) } else { r }
            });
        }
        y
    }

    fn forward_impl(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "QatConvBn::forward";
        let mut st = lock(&self.state);
        let sf = self.scale_factors(OP, &st.running_var)?;
        let mut fq = st.weight_fq.clone();
        let folded = self.fold(&sf);
        let w_fq = fq.forward(&folded)?;
        let (_, _, z) = self.pre_bn(x, w_fq, &sf)?;
        if z.ndim() != 4 {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0; 4],
                got: z.shape().to_vec(),
            });
        }
        let (mut rm, mut rv) = (st.running_mean.clone(), st.running_var.clone());
        let y = if st.bn_frozen {
            let mean: Vec<f64> = rm.iter().map(|&v| f64::from(v)).collect();
            let var: Vec<f64> = rv.iter().map(|&v| f64::from(v)).collect();
            self.normalize(&z, &mean, &var)
        } else {
            let (mean, var, count) = channel_stats(&z);
            if count <= 1 {
                return Err(QuantError::InvalidParameter {
                    op: OP,
                    what: "values per channel",
                    value: count as f64,
                    reason: "BatchNorm in training needs more than one value per channel",
                });
            }
            let unbiased = count as f64 / (count - 1) as f64;
            for c in 0..rm.len() {
                rm[c] = (1.0 - MOMENTUM) * rm[c] + MOMENTUM * mean[c] as f32;
                rv[c] = (1.0 - MOMENTUM) * rv[c] + MOMENTUM * (var[c] * unbiased) as f32;
            }
            self.normalize(&z, &mean, &var)
        };
        let y = match &self.output_fq {
            None => y,
            Some(m) => lock(m).forward(&y)?,
        };
        st.weight_fq = fq;
        st.running_mean = rm;
        st.running_var = rv;
        st.last_sf = Some(sf);
        Ok(Activation::Float(y))
    }

    fn backward_impl(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Result<LayerGrads> {
        const OP: &str = "QatConvBn::backward";
        let x = crate::nn::module::one_input(OP, inputs)?;
        if output.shape() != grad_output.shape() {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: output.shape().to_vec(),
                got: grad_output.shape().to_vec(),
            });
        }
        let st = lock(&self.state).clone();
        let sf = st.last_sf.clone().ok_or(QuantError::UnsupportedConfig {
            op: OP,
            reason: "backward needs a training forward first (the fold's scale factors)",
        })?;
        let folded = self.fold(&sf);
        let (w_fq, w_mask) = st.weight_fq.fake_quantize_current(OP, &folded)?;
        let (conv, z0, z) = self.pre_bn(x, w_fq, &sf)?;
        let (mean, var, count) = if st.bn_frozen {
            // Frozen: the running statistics, as used by the forward (unchanged by it).
            let m = st.running_mean.iter().map(|&v| f64::from(v)).collect();
            let v = st.running_var.iter().map(|&v| f64::from(v)).collect();
            (m, v, 0)
        } else {
            channel_stats(&z)
        };
        let y = self.normalize(&z, &mean, &var);
        let mut g = grad_output.clone();
        if let Some(m) = &self.output_fq {
            let (_, mask) = lock(m).fake_quantize_current(OP, &y)?;
            g = super::util::times_mask(&g, mask.as_ref());
        }
        if self.relu {
            ndarray::Zip::from(&mut g).and(&y).for_each(|g, &y| {
                if y <= 0.0 {
                    *g = 0.0;
                }
            });
        }
        // BatchNorm backward, per channel.
        let c_out = self.gamma.len();
        let (mut dgamma, mut dbeta) = (vec![0.0f32; c_out], vec![0.0f32; c_out]);
        let mut dz = g.clone();
        for c in 0..c_out {
            let inv = 1.0 / (var[c] + self.eps).sqrt();
            let gc = g.index_axis(Axis(1), c);
            let zc = z.index_axis(Axis(1), c);
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for (&gv, &zv) in gc.iter().zip(zc.iter()) {
                let xhat = (f64::from(zv) - mean[c]) * inv;
                sg += f64::from(gv);
                sgx += f64::from(gv) * xhat;
            }
            dbeta[c] = sg as f32;
            dgamma[c] = sgx as f32;
            let gamma = f64::from(self.gamma[c]);
            let n = count as f64;
            let mut dzc = dz.index_axis_mut(Axis(1), c);
            ndarray::Zip::from(&mut dzc).and(&zc).for_each(|d, &zv| {
                let gv = f64::from(*d);
                let v = if st.bn_frozen {
                    gamma * inv * gv
                } else {
                    let xhat = (f64::from(zv) - mean[c]) * inv;
                    gamma * inv * (gv - sg / n - xhat * sgx / n)
                };
                *d = v as f32;
            });
        }
        // z = z0 / sf + bias.
        let dbias: Vec<f32> = dz.axis_iter(Axis(1)).map(|p| p.sum()).collect();
        let mut dz0 = dz;
        for (c, mut plane) in dz0.axis_iter_mut(Axis(1)).enumerate() {
            plane.mapv_inplace(|v| v / sf[c]);
        }
        let conv_grads = conv
            .backward(&[x], &Activation::Float(z0), &dz0)
            .unwrap_or_else(|| {
                Err(QuantError::UnsupportedLayer {
                    op: OP,
                    kind: "Conv2d".into(),
                    reason: "the convolution has no backward pass",
                })
            })?;
        let dw_fq = conv_grads
            .param("weight")
            .cloned()
            .ok_or(QuantError::UnsupportedConfig {
                op: OP,
                reason: "the convolution's backward gave no weight gradient",
            })?;
        let mut dw = super::util::times_mask(&dw_fq, w_mask.as_ref());
        for (mut row, &s) in dw.axis_iter_mut(Axis(0)).zip(&sf) {
            row.mapv_inplace(|v| v * s);
        }
        let mut params = vec![("weight", dw)];
        if self.conv.core().bias().is_some() {
            params.push((
                "bias",
                ArrayD::from_shape_vec(ndarray::IxDyn(&[c_out]), dbias).map_err(|_| {
                    QuantError::UnsupportedConfig {
                        op: OP,
                        reason: "bias gradient shape",
                    }
                })?,
            ));
        }
        params.push(("bn_weight", ndarray::Array1::from(dgamma).into_dyn()));
        params.push(("bn_bias", ndarray::Array1::from(dbeta).into_dyn()));
        Ok(LayerGrads {
            inputs: conv_grads.inputs,
            params,
            buffers: Vec::new(),
        })
    }
}

impl Module for QatConvBn {
    fn kind(&self) -> &'static str {
        if self.relu {
            "QatConvBnReLU2d"
        } else {
            "QatConvBn2d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_impl(x)
    }

    fn role(&self) -> LayerRole<'_> {
        LayerRole::Float
    }

    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<LayerGrads>> {
        Some(self.backward_impl(inputs, output, grad_output))
    }

    fn params(&self) -> Vec<(&'static str, ArrayD<f32>)> {
        // The convolution's own parameters (weight, bias), then the BatchNorm's.
        let mut p = self.conv.params();
        p.push((
            "bn_weight",
            ndarray::Array1::from(self.gamma.clone()).into_dyn(),
        ));
        p.push((
            "bn_bias",
            ndarray::Array1::from(self.beta.clone()).into_dyn(),
        ));
        p
    }

    fn with_params(&self, params: &[(&str, ArrayD<f32>)]) -> Option<Result<Box<dyn Module>>> {
        Some(self.with_params_impl(params))
    }
}

impl QatConvBn {
    fn with_params_impl(&self, params: &[(&str, ArrayD<f32>)]) -> Result<Box<dyn Module>> {
        const OP: &str = "QatConvBn::with_params";
        let mut next = self.clone();
        let core = self.conv.core();
        let (mut w, mut b) = (core.weight().clone(), core.bias().cloned());
        for (name, v) in params {
            let check = |expected: &[usize]| {
                if v.shape() == expected {
                    Ok(())
                } else {
                    Err(QuantError::ShapeMismatch {
                        op: OP,
                        expected: expected.to_vec(),
                        got: v.shape().to_vec(),
                    })
                }
            };
            match *name {
                "weight" => {
                    check(w.shape())?;
                    w = v.clone();
                }
                "bias" if b.is_some() => {
                    check(&[self.gamma.len()])?;
                    b = Some(v.clone());
                }
                "bn_weight" => {
                    check(&[self.gamma.len()])?;
                    next.gamma = v.iter().copied().collect();
                }
                "bn_bias" => {
                    check(&[self.gamma.len()])?;
                    next.beta = v.iter().copied().collect();
                }
                other => {
                    return Err(QuantError::NotFound {
                        op: OP,
                        what: "parameter",
                        name: other.to_string(),
                    });
                }
            }
        }
        next.conv = Conv2d::new(w, b, self.conv.geometry())?;
        Ok(Box::new(next))
    }
}
