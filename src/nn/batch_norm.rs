//! [`BatchNorm`]: inference batch norm (`BatchNorm1d`, `BatchNorm2d`) and its parameters.

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
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub(crate) params: BatchNormParams,
    pub(crate) spatial_dims: usize,
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
}

impl Module for BatchNorm {
    fn role(&self) -> LayerRole<'_> {
        LayerRole::BatchNorm(self)
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
        let x = x.need_float(OP)?;
        let ranks: &[usize] = if self.spatial_dims == 1 {
            &[2, 3]
        } else {
            &[4]
        };
        if !ranks.contains(&x.ndim()) {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: vec![0; ranks[0]],
                got: x.shape().to_vec(),
            });
        }
        let c = self.params.num_features();
        if x.shape()[1] != c {
            return Err(QuantError::LengthMismatch {
                op: OP,
                what: "input channels",
                expected: c,
                got: x.shape()[1],
            });
        }
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
