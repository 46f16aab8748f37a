//! Optimizers stepping a whole model: [`Sgd`] and [`Adam`] (PyTorch's `torch.optim`).

use std::collections::HashMap;

use ndarray::ArrayD;

use super::ModelGrads;
use crate::error::{QuantError, Result};
use crate::nn::Model;
use crate::qat::{SgdMomentum, sgd_step};

/// Applies `update(layer, param name, param, grad)` to every parameter with a gradient, then
/// rebuilds each layer with its new parameters and buffers ([`Module::with_params`](crate::nn::Module::with_params))
/// and puts it back in the model.
fn apply<M: Model + ?Sized>(
    op: &'static str,
    model: &mut M,
    grads: &ModelGrads,
    mut update: impl FnMut(&str, &'static str, &mut ArrayD<f32>, &ArrayD<f32>) -> Result<()>,
) -> Result<()> {
    // A layer run several times: its gradients summed.
    let mut order: Vec<&str> = Vec::new();
    let mut summed: HashMap<&str, Vec<(&'static str, ArrayD<f32>)>> = HashMap::new();
    let mut buffers: HashMap<&str, Vec<(&'static str, ArrayD<f32>)>> = HashMap::new();
    for (name, lg) in &grads.layers {
        let entry = summed.entry(name.as_str()).or_insert_with(|| {
            order.push(name.as_str());
            Vec::new()
        });
        for (p, g) in &lg.params {
            match entry.iter_mut().find(|(q, _)| q == p) {
                Some((_, s)) if s.shape() == g.shape() => *s += g,
                Some(_) => {
                    return Err(QuantError::ShapeMismatch {
                        op,
                        expected: g.shape().to_vec(),
                        got: vec![],
                    });
                }
                None => entry.push((p, g.clone())),
            }
        }
        buffers.insert(name.as_str(), lg.buffers.clone());
    }
    for name in order {
        let layer = model.layer(name).ok_or_else(|| QuantError::NotFound {
            op,
            what: "layer with gradients",
            name: name.to_string(),
        })?;
        let mut params = layer.params();
        let mut new: Vec<(&str, ArrayD<f32>)> = Vec::new();
        for (p, g) in &summed[name] {
            let (_, value) =
                params
                    .iter_mut()
                    .find(|(q, _)| q == p)
                    .ok_or_else(|| QuantError::NotFound {
                        op,
                        what: "parameter of the layer",
                        name: format!("{name}.{p}"),
                    })?;
            if value.shape() != g.shape() {
                return Err(QuantError::ShapeMismatch {
                    op,
                    expected: value.shape().to_vec(),
                    got: g.shape().to_vec(),
                });
            }
            update(name, p, value, g)?;
            new.push((p, value.clone()));
        }
        for (b, v) in buffers.get(name).into_iter().flatten() {
            new.push((b, v.clone()));
        }
        if new.is_empty() {
            continue;
        }
        let rebuilt = layer.with_params(&new).ok_or_else(|| QuantError::UnsupportedLayer {
            op,
            kind: layer.kind().to_string(),
            reason: "the layer has gradients but cannot take new parameters (Module::with_params)",
        })??;
        model.replace_layer(name, rebuilt)?;
    }
    Ok(())
}

fn slice_of<'a>(op: &'static str, a: &'a mut ArrayD<f32>) -> Result<&'a mut [f32]> {
    a.as_slice_mut().ok_or(QuantError::UnsupportedConfig {
        op,
        reason: "parameters must be in standard layout",
    })
}

/// PyTorch's `torch.optim.SGD` over a model: weight decay `g + wd·p`, then plain
/// (`p = fma(−lr, g, p)`) or with momentum (dampening, Nesterov) through [`SgdMomentum`],
/// one momentum buffer per (layer, parameter).
#[derive(Debug, Clone)]
pub struct Sgd {
    lr: f64,
    momentum: f32,
    dampening: f32,
    nesterov: bool,
    weight_decay: f32,
    buffers: HashMap<(String, &'static str), SgdMomentum>,
}

impl Sgd {
    /// Plain SGD at learning rate `lr`.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a learning rate that is not finite and `>= 0`.
    pub fn new(lr: f64) -> Result<Self> {
        SgdMomentum::new(lr, 0.0, 0.0, false)?;
        Ok(Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            buffers: HashMap::new(),
        })
    }

    /// With momentum, dampening and Nesterov (PyTorch's rules: Nesterov needs a momentum and
    /// no dampening).
    ///
    /// # Errors
    /// As [`SgdMomentum::new`].
    pub fn with_momentum(mut self, momentum: f32, dampening: f32, nesterov: bool) -> Result<Self> {
        SgdMomentum::new(self.lr, momentum, dampening, nesterov)?;
        self.momentum = momentum;
        self.dampening = dampening;
        self.nesterov = nesterov;
        Ok(self)
    }

    /// With weight decay (L2: `g + wd·p`).
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a decay that is not finite and `>= 0`.
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Result<Self> {
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(QuantError::InvalidParameter {
                op: "Sgd::with_weight_decay",
                what: "weight_decay",
                value: f64::from(weight_decay),
                reason: "must be finite and >= 0",
            });
        }
        self.weight_decay = weight_decay;
        Ok(self)
    }

    /// One step on every parameter with a gradient in `grads`.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] for a layer or parameter the model does not have; shape
    /// mismatches; [`QuantError::UnsupportedLayer`] for a layer that cannot take new
    /// parameters. Layers before the failing one are already updated.
    pub fn step<M: Model + ?Sized>(&mut self, model: &mut M, grads: &ModelGrads) -> Result<()> {
        const OP: &str = "Sgd::step";
        let (lr, wd) = (self.lr, self.weight_decay);
        let (momentum, dampening, nesterov) = (self.momentum, self.dampening, self.nesterov);
        let buffers = &mut self.buffers;
        apply(OP, model, grads, |layer, name, p, g| {
            let mut g = g.clone();
            if wd != 0.0 {
                g.zip_mut_with(p, |g, &p| *g += wd * p);
            }
            let gs = g.as_standard_layout();
            let gs = gs.as_slice().unwrap_or(&[]);
            let ps = slice_of(OP, p)?;
            if momentum == 0.0 {
                return sgd_step(lr, ps, gs);
            }
            let key = (layer.to_string(), name);
            let buf = match buffers.get_mut(&key) {
                Some(b) => b,
                None => buffers
                    .entry(key)
                    .or_insert(SgdMomentum::new(lr, momentum, dampening, nesterov)?),
            };
            buf.step(ps, gs)
        })
    }
}

/// PyTorch's `torch.optim.Adam` over a model (`amsgrad` off): per parameter
/// `m = β₁·m + (1 − β₁)·g`, `v = β₂·v + (1 − β₂)·g²`,
/// `p −= lr/(1 − β₁ᵗ) · m / (sqrt(v)/sqrt(1 − β₂ᵗ) + ε)`, weight decay `g + wd·p` first.
#[derive(Debug, Clone)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    state: HashMap<(String, &'static str), AdamState>,
}

impl Adam {
    /// Adam at learning rate `lr` with PyTorch's defaults: betas `(0.9, 0.999)`, eps `1e-8`,
    /// no weight decay.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a learning rate that is not finite and `> 0`.
    pub fn new(lr: f64) -> Result<Self> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(QuantError::InvalidParameter {
                op: "Adam::new",
                what: "lr",
                value: lr,
                reason: "must be finite and > 0",
            });
        }
        Ok(Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            state: HashMap::new(),
        })
    }

    /// With other betas, eps and weight decay.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for betas outside `[0, 1)`, an eps that is not finite
    /// and `> 0`, a weight decay that is not finite and `>= 0`.
    pub fn with(mut self, betas: (f64, f64), eps: f64, weight_decay: f64) -> Result<Self> {
        let bad = |what, value: f64, reason| {
            Err(QuantError::InvalidParameter {
                op: "Adam::with",
                what,
                value,
                reason,
            })
        };
        for (what, b) in [("beta1", betas.0), ("beta2", betas.1)] {
            if !(0.0..1.0).contains(&b) {
                return bad(what, b, "must lie in [0, 1)");
            }
        }
        if !(eps.is_finite() && eps > 0.0) {
            return bad("eps", eps, "must be finite and > 0");
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad("weight_decay", weight_decay, "must be finite and >= 0");
        }
        self.betas = betas;
        self.eps = eps;
        self.weight_decay = weight_decay;
        Ok(self)
    }

    /// One step on every parameter with a gradient in `grads`.
    ///
    /// # Errors
    /// As [`Sgd::step`].
    pub fn step<M: Model + ?Sized>(&mut self, model: &mut M, grads: &ModelGrads) -> Result<()> {
        const OP: &str = "Adam::step";
        let (lr, (b1, b2), eps, wd) = (self.lr, self.betas, self.eps, self.weight_decay);
        let state = &mut self.state;
        apply(OP, model, grads, |layer, name, p, g| {
            let gs = g.as_standard_layout();
            let gs = gs.as_slice().unwrap_or(&[]);
            let ps = slice_of(OP, p)?;
            let (t, m, v) = state
                .entry((layer.to_string(), name))
                .or_insert_with(|| (0, vec![0.0; ps.len()], vec![0.0; ps.len()]));
            if m.len() != ps.len() {
                return Err(QuantError::LengthMismatch {
                    op: OP,
                    what: "parameter (its size changed between steps)",
                    expected: m.len(),
                    got: ps.len(),
                });
            }
            *t += 1;
            let c1 = 1.0 - b1.powf(*t as f64);
            let c2 = (1.0 - b2.powf(*t as f64)).sqrt();
            let step = lr / c1;
            for (((p, &g), m), v) in ps.iter_mut().zip(gs).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = f64::from(g) + wd * f64::from(*p);
                let mm = b1 * f64::from(*m) + (1.0 - b1) * g;
                let vv = b2 * f64::from(*v) + (1.0 - b2) * g * g;
                *m = mm as f32;
                *v = vv as f32;
                *p = (f64::from(*p) - step * mm / (vv.sqrt() / c2 + eps)) as f32;
            }
            Ok(())
        })
    }
}

/// Adam's state of one parameter: the step count and the two moment estimates.
type AdamState = (u64, Vec<f32>, Vec<f32>);
