//! [`BatchNorm`]: inference batch norm (`BatchNorm1d`, `BatchNorm2d`) and its parameters.

use ndarray::ArrayD;

use super::{Activation, LayerRole, Module};
use crate::error::{QuantError, Result};

/// Batch-norm statistics and affine parameters (PyTorch names). `weight`/`bias` are `None`
/// for `affine=False` (then 1 and 0).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormParams {
    /// Running mean, one per channel.
    pub running_mean: Vec<f32>,
    /// Running variance, one per channel.
    pub running_var: Vec<f32>,
    /// Scale (`gamma`), one per channel.
    pub weight: Option<Vec<f32>>,
    /// Shift (`beta`), one per channel.
    pub bias: Option<Vec<f32>>,
    /// `eps` as PyTorch received it (a Python float; rounded to f32 where used).
    pub eps: f64,
}

impl BatchNormParams {
    /// Number of channels.
    #[must_use]
    pub fn num_features(&self) -> usize {
        self.running_mean.len()
    }

    /// Checks that every list has the same length, `eps` is finite and `>= 0`, every running
    /// variance is finite and `>= 0` with `running_var + eps > 0` (so `1/sqrt(var + eps)` is
    /// finite), the means and affine parameters are finite, and so are the per-channel scale
    /// `weight / sqrt(var + eps)` and shift `bias − mean · scale` in `f32`.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`]; [`QuantError::InvalidParameter`] for `eps` or a running
    /// variance; [`QuantError::NonFinite`] for a mean, weight, bias, scale or shift.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let c = self.running_mean.len();
        let lists: [(&'static str, Option<usize>); 3] = [
            ("running_var", Some(self.running_var.len())),
            ("weight", self.weight.as_ref().map(Vec::len)),
            ("bias", self.bias.as_ref().map(Vec::len)),
        ];
        for (what, len) in lists {
            if let Some(got) = len
                && got != c
            {
                return Err(QuantError::LengthMismatch {
                    op,
                    what,
                    expected: c,
                    got,
                });
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(QuantError::InvalidParameter {
                op,
                what: "eps",
                value: self.eps,
                reason: "must be finite and >= 0",
            });
        }
        let eps = self.eps as f32;
        for &v in &self.running_var {
            // var + eps must be a positive finite number, or 1/sqrt(var + eps) is NaN or inf.
            let d = v + eps;
            if !(v.is_finite() && v >= 0.0 && d > 0.0 && d.is_finite()) {
                return Err(QuantError::InvalidParameter {
                    op,
                    what: "running_var",
                    value: v as f64,
                    reason: "must be finite and >= 0, with running_var + eps > 0",
                });
            }
        }
        for (what, list) in [
            ("running_mean", Some(&self.running_mean)),
            ("weight", self.weight.as_ref()),
            ("bias", self.bias.as_ref()),
        ] {
            if let Some(&v) = list.and_then(|l| l.iter().find(|v| !v.is_finite())) {
                return Err(QuantError::NonFinite {
                    op,
                    what,
                    value: v as f64,
                });
            }
        }
        // The per-channel scale γ / sqrt(var + eps) and shift β − mean·scale must be finite
        // in f32 too (a tiny variance under a large γ overflows): else the forward gives NaN
        // and a fused weight infinity.
        for i in 0..c {
            let scale = self.weight.as_ref().map_or(1.0, |w| w[i])
                * (1.0 / (self.running_var[i] + eps).sqrt());
            let shift = self.bias.as_ref().map_or(0.0, |b| b[i]) - self.running_mean[i] * scale;
            for (what, v) in [
                ("weight / sqrt(running_var + eps)", scale),
                ("bias − running_mean · scale", shift),
            ] {
                if !v.is_finite() {
                    return Err(QuantError::NonFinite {
                        op,
                        what,
                        value: f64::from(v),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Inference batch norm (`BatchNorm1d` on `[N, C]` or `[N, C, L]`, `BatchNorm2d` on
/// `[N, C, H, W]`): `y = x·α + β` with `α = γ / sqrt(var + eps)`, `β = beta − mean·α` (f32,
/// PyTorch's CPU order).
///
/// In training mode ([`BatchNorm::training`]) it normalizes with the batch statistics (mean
/// and biased variance over every axis but the channels, in `f64`), and its backward pass
/// gives the new running statistics (PyTorch's update: `(1 − momentum)·running +
/// momentum·batch`, the variance unbiased) as [`LayerGrads::buffers`](super::LayerGrads),
/// applied with the parameters by [`Module::with_params`]. A BatchNorm in training mode is
/// not foldable ([`LayerRole::Float`]): fusion leaves it alone, PTQ keeps it as a float
/// island; [`BatchNorm::eval`] returns it to inference.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub(crate) params: BatchNormParams,
    pub(crate) spatial_dims: usize,
    pub(crate) momentum: Option<f32>,
}

impl BatchNorm {
    /// `BatchNorm1d`.
    ///
    /// # Errors
    /// As [`BatchNormParams::validate`].
    pub fn new_1d(params: BatchNormParams) -> Result<Self> {
        params.validate("BatchNorm::new_1d")?;
        Ok(BatchNorm {
            params,
            spatial_dims: 1,
            momentum: None,
        })
    }

    /// `BatchNorm2d`.
    ///
    /// # Errors
    /// As [`BatchNormParams::validate`].
    pub fn new_2d(params: BatchNormParams) -> Result<Self> {
        params.validate("BatchNorm::new_2d")?;
        Ok(BatchNorm {
            params,
            spatial_dims: 2,
            momentum: None,
        })
    }

    /// The parameters.
    #[must_use]
    pub fn params(&self) -> &BatchNormParams {
        &self.params
    }

    /// 1 for `BatchNorm1d`, 2 for `BatchNorm2d`.
    #[must_use]
    pub fn spatial_dims(&self) -> usize {
        self.spatial_dims
    }

    /// The same BatchNorm in training mode: batch statistics, running statistics moving by
    /// `momentum` per step (PyTorch's default is 0.1).
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a momentum outside `[0, 1]`.
    pub fn training(mut self, momentum: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&momentum) {
            return Err(QuantError::InvalidParameter {
                op: "BatchNorm::training",
                what: "momentum",
                value: f64::from(momentum),
                reason: "must lie in [0, 1]",
            });
        }
        self.momentum = Some(momentum);
        Ok(self)
    }

    /// The same BatchNorm in inference mode (its running statistics).
    #[must_use]
    pub fn eval(mut self) -> Self {
        self.momentum = None;
        self
    }

    /// The momentum when in training mode.
    #[must_use]
    pub fn momentum(&self) -> Option<f32> {
        self.momentum
    }

    /// The checked input of a forward or backward pass.
    fn check_input<'a>(&self, op: &'static str, x: &'a ArrayD<f32>) -> Result<&'a ArrayD<f32>> {
        let ranks: &[usize] = if self.spatial_dims == 1 {
            &[2, 3]
        } else {
            &[4]
        };
        if !ranks.contains(&x.ndim()) {
            return Err(QuantError::ShapeMismatch {
                op,
                expected: vec![0; ranks[0]],
                got: x.shape().to_vec(),
            });
        }
        let c = self.params.num_features();
        if x.shape()[1] != c {
            return Err(QuantError::LengthMismatch {
                op,
                what: "input channels",
                expected: c,
                got: x.shape()[1],
            });
        }
        Ok(x)
    }

    fn gamma(&self) -> Vec<f32> {
        let c = self.params.num_features();
        self.params.weight.clone().unwrap_or_else(|| vec![1.0; c])
    }

    /// Training forward: the batch statistics.
    fn forward_training(&self, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        const OP: &str = "BatchNorm::forward";
        let c = self.params.num_features();
        let count = x.len() / c.max(1);
        if count <= 1 {
            return Err(QuantError::InvalidParameter {
                op: OP,
                what: "values per channel",
                value: count as f64,
                reason: "BatchNorm in training needs more than one value per channel",
            });
        }
        let gamma = self.gamma();
        let mut y = x.as_standard_layout().into_owned();
        for ch in 0..c {
            let xc = x.index_axis(ndarray::Axis(1), ch);
            let n = count as f64;
            let mean = xc.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = xc
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let inv = 1.0 / (var + self.params.eps).sqrt();
            let g = f64::from(gamma[ch]);
            let b = f64::from(self.params.bias.as_ref().map_or(0.0, |b| b[ch]));
            y.index_axis_mut(ndarray::Axis(1), ch)
                .mapv_inplace(|v| (g * (f64::from(v) - mean) * inv + b) as f32);
        }
        Ok(y)
    }

    fn backward_impl(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad: &ArrayD<f32>,
    ) -> Result<super::LayerGrads> {
        const OP: &str = "BatchNorm::backward";
        let x = self.check_input(OP, super::backward::float_input(OP, inputs, output, grad)?)?;
        let p = &self.params;
        let mut grads = match self.momentum {
            Some(m) => super::backward::batch_norm_train(
                OP,
                x,
                &self.gamma(),
                p.eps,
                (&p.running_mean, &p.running_var),
                m,
                grad,
            )?,
            None => {
                // Inference: y = x·α + β' per channel.
                let c = p.num_features();
                let gamma = self.gamma();
                let mut dx = grad.as_standard_layout().into_owned();
                let (mut dg, mut db) = (vec![0.0f32; c], vec![0.0f32; c]);
                for ch in 0..c {
                    let inv = 1.0 / (p.running_var[ch] + p.eps as f32).sqrt();
                    let gc = grad.index_axis(ndarray::Axis(1), ch);
                    let xc = x.index_axis(ndarray::Axis(1), ch);
                    for (&g, &v) in gc.iter().zip(xc.iter()) {
                        dg[ch] += g * (v - p.running_mean[ch]) * inv;
                        db[ch] += g;
                    }
                    dx.index_axis_mut(ndarray::Axis(1), ch)
                        .mapv_inplace(|g| g * gamma[ch] * inv);
                }
                super::LayerGrads {
                    inputs: vec![dx],
                    params: vec![
                        ("weight", ndarray::Array1::from(dg).into_dyn()),
                        ("bias", ndarray::Array1::from(db).into_dyn()),
                    ],
                    buffers: Vec::new(),
                }
            }
        };
        // Parameters the BatchNorm does not have (no affine) get no gradient.
        grads.params.retain(|(n, _)| match *n {
            "weight" => p.weight.is_some(),
            _ => p.bias.is_some(),
        });
        Ok(grads)
    }

    fn with_params_impl(&self, params: &[(&str, ArrayD<f32>)]) -> Result<Box<dyn Module>> {
        const OP: &str = "BatchNorm::with_params";
        use super::backward::{known_params, param};
        known_params(
            OP,
            params,
            &["weight", "bias", "running_mean", "running_var"],
        )?;
        let c = self.params.num_features();
        let vec_of = |name| -> Result<Option<Vec<f32>>> {
            Ok(param(OP, params, name, &[c])?.map(|a| a.iter().copied().collect()))
        };
        let mut next = self.params.clone();
        if let (Some(_), Some(w)) = (&next.weight, vec_of("weight")?) {
            next.weight = Some(w);
        }
        if let (Some(_), Some(b)) = (&next.bias, vec_of("bias")?) {
            next.bias = Some(b);
        }
        if let Some(m) = vec_of("running_mean")? {
            next.running_mean = m;
        }
        if let Some(v) = vec_of("running_var")? {
            next.running_var = v;
        }
        next.validate(OP)?;
        Ok(Box::new(BatchNorm {
            params: next,
            spatial_dims: self.spatial_dims,
            momentum: self.momentum,
        }))
    }
}

impl Module for BatchNorm {
    fn role(&self) -> LayerRole<'_> {
        if self.momentum.is_some() {
            LayerRole::Float
        } else {
            LayerRole::BatchNorm(self)
        }
    }

    /// Training mode: batch statistics and the new running ones (in
    /// [`LayerGrads::buffers`](super::LayerGrads)); inference: the affine map's.
    fn backward(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Option<Result<super::LayerGrads>> {
        Some(self.backward_impl(inputs, output, grad_output))
    }

    fn params(&self) -> Vec<(&'static str, ArrayD<f32>)> {
        let mut p = Vec::new();
        if let Some(w) = &self.params.weight {
            p.push(("weight", ndarray::Array1::from(w.clone()).into_dyn()));
        }
        if let Some(b) = &self.params.bias {
            p.push(("bias", ndarray::Array1::from(b.clone()).into_dyn()));
        }
        p
    }

    fn with_params(&self, params: &[(&str, ArrayD<f32>)]) -> Option<Result<Box<dyn Module>>> {
        Some(self.with_params_impl(params))
    }

    fn kind(&self) -> &'static str {
        if self.spatial_dims == 1 {
            "BatchNorm1d"
        } else {
            "BatchNorm2d"
        }
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        const OP: &str = "BatchNorm::forward";
        let x = self.check_input(OP, x.need_float(OP)?)?;
        if self.momentum.is_some() {
            return self.forward_training(x).map(Activation::Float);
        }
        let c = self.params.num_features();
        let eps = self.params.eps as f32;
        let p = &self.params;
        let (alpha, beta): (Vec<f32>, Vec<f32>) = (0..c)
            .map(|i| {
                let invstd = 1.0 / (p.running_var[i] + eps).sqrt();
                let w = p.weight.as_ref().map_or(1.0, |w| w[i]);
                let b = p.bias.as_ref().map_or(0.0, |b| b[i]);
                let a = invstd * w;
                (a, b - p.running_mean[i] * a)
            })
            .unzip();
        let inner: usize = x.shape()[2..].iter().product();
        let mut out = x.as_standard_layout().into_owned();
        if inner > 0 {
            let data = out.as_slice_mut().expect("standard layout");
            for (i, chunk) in data.chunks_mut(inner).enumerate() {
                let ch = i % c;
                for v in chunk {
                    *v = *v * alpha[ch] + beta[ch];
                }
            }
        }
        Ok(Activation::Float(out))
    }
}
