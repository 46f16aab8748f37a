//! [`QatLayer`]: a layer of a model prepared for QAT ([`prepare_qat`](super::prepare_qat)):
//! the float layer with its weight and output fake-quantized, trainable through
//! [`Module::backward`].

use std::sync::{Mutex, MutexGuard};

use ndarray::ArrayD;

use super::{FakeQuantize, QatAction};
use crate::error::{QuantError, Result};
use crate::nn::{Activation, LayerGrads, LayerRole, Module, WeightedCore};
use crate::qparams::{AnyQParams, QParams};

/// A float layer with PyTorch's QAT fake quantization around it: its weight through a weight
/// [`FakeQuantize`] (weighted layers: `torch.ao.nn.qat.Linear` / `Conv2d`'s
/// `weight_fake_quant`), its output through an activation [`FakeQuantize`] (the
/// `activation_post_process` eager-mode `prepare_qat` attaches).
///
/// [`Module::forward`] is the training forward: each enabled observer sees its tensor (the
/// weight, then the output) and fake quantization uses the new parameters, as in PyTorch.
/// The fake quants live behind a mutex so that a forward through `&self` (the [`Module`]
/// contract) can move their statistics; switch them with [`QatLayer::apply`]
/// ([`QatAction::DisableObserver`] to evaluate, as PyTorch's `disable_observer`).
///
/// [`Module::backward`] is the straight-through estimator around the float layer's own
/// backward pass: the output gradient masked where the output fake quant clamped, the float
/// layer's backward with the fake-quantized weight (and the pre-quantization output, so a
/// fused ReLU masks as it should), the weight gradient masked where the weight fake quant
/// clamped. It recomputes the forward with the current parameters (no observation).
#[derive(Debug)]
pub struct QatLayer {
    inner: Box<dyn Module>,
    weight_fq: Option<Mutex<FakeQuantize>>,
    output_fq: Option<Mutex<FakeQuantize>>,
}

impl Clone for QatLayer {
    fn clone(&self) -> Self {
        QatLayer {
            inner: self.inner.box_clone(),
            weight_fq: self.weight_fq.as_ref().map(|m| Mutex::new(lock(m).clone())),
            output_fq: self.output_fq.as_ref().map(|m| Mutex::new(lock(m).clone())),
        }
    }
}

/// The fake quant behind a mutex; a poisoned lock (a panic in another thread mid-step) still
/// holds a consistent module: every step commits its state only on success.
fn lock(m: &Mutex<FakeQuantize>) -> MutexGuard<'_, FakeQuantize> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn float_of<'a>(op: &'static str, a: &'a Activation) -> Result<&'a ArrayD<f32>> {
    match a {
        Activation::Float(x) => Ok(x),
        Activation::Quantized(_) => Err(QuantError::UnsupportedConfig {
            op,
            reason: "a QAT layer runs on float activations (fake quantization), not on a quantized tensor",
        }),
    }
}

impl QatLayer {
    /// Wraps `inner`: its weight fake-quantized by `weight` (a weighted layer only) and its
    /// output by `output` (either may be absent).
    ///
    /// # Errors
    /// [`QuantError::UnsupportedLayer`] for a weight fake quant on a layer without a weight,
    /// or a layer that is already quantized or already a QAT layer.
    pub fn new(
        inner: Box<dyn Module>,
        weight: Option<FakeQuantize>,
        output: Option<FakeQuantize>,
    ) -> Result<Self> {
        const OP: &str = "QatLayer::new";
        let unsupported = |reason| QuantError::UnsupportedLayer {
            op: OP,
            kind: inner.kind().to_string(),
            reason,
        };
        if inner.as_any().is::<QatLayer>() {
            return Err(unsupported("the layer is already prepared for QAT"));
        }
        match inner.role() {
            LayerRole::Quantized => return Err(unsupported("an integer layer cannot be trained")),
            LayerRole::Weighted(_) => {}
            _ if weight.is_some() => {
                return Err(unsupported("a weight fake quant needs a weighted layer"));
            }
            _ => {}
        }
        Ok(QatLayer {
            inner,
            weight_fq: weight.map(Mutex::new),
            output_fq: output.map(Mutex::new),
        })
    }

    /// The float layer (with its float, trained, weight).
    #[must_use]
    pub fn inner(&self) -> &dyn Module {
        self.inner.as_ref()
    }

    /// A copy of the weight fake quant's state, if the layer has one.
    #[must_use]
    pub fn weight_fake_quant(&self) -> Option<FakeQuantize> {
        self.weight_fq.as_ref().map(|m| lock(m).clone())
    }

    /// A copy of the output fake quant's state, if the layer has one.
    #[must_use]
    pub fn output_fake_quant(&self) -> Option<FakeQuantize> {
        self.output_fq.as_ref().map(|m| lock(m).clone())
    }

    /// Applies a switch to the layer's fake quants: the observer and fake-quant switches;
    /// the BatchNorm and train/eval actions do not concern them (PyTorch's `FakeQuantize`
    /// keeps observing in `eval()`).
    pub fn apply(&self, action: QatAction) {
        for m in self.weight_fq.iter().chain(self.output_fq.iter()) {
            let mut fq = lock(m);
            match action {
                QatAction::DisableObserver => fq.enable_observer(false),
                QatAction::EnableObserver => fq.enable_observer(true),
                QatAction::DisableFakeQuant => fq.enable_fake_quant(false),
                QatAction::EnableFakeQuant => fq.enable_fake_quant(true),
                QatAction::FreezeBnStats
                | QatAction::UpdateBnStats
                | QatAction::Eval
                | QatAction::Train => {}
            }
        }
    }

    /// The output's parameters (per tensor), what `convert` quantizes the output with.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] without an output fake quant; the parameters' errors.
    pub fn output_qparams(&self) -> Result<QParams> {
        const OP: &str = "QatLayer::output_qparams";
        let m = self
            .output_fq
            .as_ref()
            .ok_or_else(|| QuantError::NotFound {
                op: OP,
                what: "output fake quant of layer kind",
                name: self.inner.kind().to_string(),
            })?;
        match lock(m).qparams()? {
            AnyQParams::PerTensor(p) => Ok(p),
            AnyQParams::PerChannel(_) => Err(QuantError::UnsupportedQParams {
                op: OP,
                reason: "activation fake quants must be per tensor",
            }),
        }
    }

    /// PyTorch's `convert` of the weight: the weight fake quant sees the trained weight once
    /// more (when its observer is enabled, as `from_float` runs `weight_post_process(weight)`)
    /// and gives its parameters.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] without a weight fake quant; errors of the observation.
    pub(crate) fn final_weight_qparams(&self) -> Result<AnyQParams> {
        const OP: &str = "QatLayer::final_weight_qparams";
        let (m, core) = match (&self.weight_fq, self.inner.role()) {
            (Some(m), LayerRole::Weighted(w)) => (m, w.core()),
            _ => {
                return Err(QuantError::NotFound {
                    op: OP,
                    what: "weight fake quant of layer kind",
                    name: self.inner.kind().to_string(),
                });
            }
        };
        let mut fq = lock(m);
        if fq.observer_enabled() {
            fq.forward(core.weight())?;
        }
        fq.qparams()
    }

    /// The float layer with its weight fake-quantized: observed first when `observe`; the
    /// weight's straight-through mask with it.
    fn with_fake_weight(&self, op: &'static str, observe: bool) -> Result<FakeWeighted> {
        let (Some(m), LayerRole::Weighted(w)) = (&self.weight_fq, self.inner.role()) else {
            return Ok((self.inner.box_clone(), None));
        };
        let core = w.core();
        let mut fq = lock(m);
        if observe {
            // The observation (and the new parameters) first, as PyTorch's forward; the
            // module's state changes only on success.
            let wq = fq.forward(core.weight())?;
            drop(fq);
            return Ok((rebuild(w, core, wq)?, None));
        }
        let (wq, mask) = fq.fake_quantize_current(op, core.weight())?;
        drop(fq);
        Ok((rebuild(w, core, wq)?, mask))
    }
}

fn rebuild(
    w: &dyn crate::nn::WeightedLayer,
    core: &WeightedCore,
    weight: ArrayD<f32>,
) -> Result<Box<dyn Module>> {
    let mut c = WeightedCore::new(weight, core.bias().cloned())?;
    if core.has_relu() {
        c = c.with_relu();
    }
    w.with_core(c)
}

impl Module for QatLayer {
    fn kind(&self) -> &'static str {
        "QatLayer"
    }

    fn forward(&self, x: &Activation) -> Result<Activation> {
        self.forward_many(&[x])
    }

    fn forward_many(&self, inputs: &[&Activation]) -> Result<Activation> {
        const OP: &str = "QatLayer::forward";
        let (layer, _) = self.with_fake_weight(OP, true)?;
        let y = layer.forward_many(inputs)?;
        match &self.output_fq {
            None => Ok(y),
            Some(m) => {
                let y = float_of(OP, &y)?;
                Ok(Activation::Float(lock(m).forward(y)?))
            }
        }
    }

    fn num_inputs(&self) -> usize {
        self.inner.num_inputs()
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
        self.inner.params()
    }

    fn with_params(&self, params: &[(&str, ArrayD<f32>)]) -> Option<Result<Box<dyn Module>>> {
        let inner = self.inner.with_params(params)?;
        Some(inner.map(|inner| {
            let mut next = self.clone();
            next.inner = inner;
            Box::new(next) as Box<dyn Module>
        }))
    }
}

impl QatLayer {
    fn backward_impl(
        &self,
        inputs: &[&Activation],
        output: &Activation,
        grad_output: &ArrayD<f32>,
    ) -> Result<LayerGrads> {
        const OP: &str = "QatLayer::backward";
        if output.shape() != grad_output.shape() {
            return Err(QuantError::ShapeMismatch {
                op: OP,
                expected: output.shape().to_vec(),
                got: grad_output.shape().to_vec(),
            });
        }
        let (layer, weight_mask) = self.with_fake_weight(OP, false)?;
        // The float layer's own output (before the output fake quant), recomputed.
        let z = layer.forward_many(inputs)?;
        let g = match &self.output_fq {
            None => grad_output.clone(),
            Some(m) => {
                let (_, mask) = lock(m).fake_quantize_current(OP, float_of(OP, &z)?)?;
                super::util::times_mask(grad_output, mask.as_ref())
            }
        };
        let mut grads = layer.backward(inputs, &z, &g).unwrap_or_else(|| {
            Err(QuantError::UnsupportedLayer {
                op: OP,
                kind: self.inner.kind().to_string(),
                reason: "the layer has no backward pass",
            })
        })?;
        if let Some(mask) = weight_mask {
            for (name, gw) in &mut grads.params {
                if *name == "weight" {
                    *gw = super::util::times_mask(gw, Some(&mask));
                }
            }
        }
        Ok(grads)
    }
}

/// A layer with its weight fake-quantized, and the weight's straight-through mask.
type FakeWeighted = (Box<dyn Module>, Option<ArrayD<f32>>);
