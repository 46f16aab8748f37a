//! Plain SGD as `torch.optim.SGD` applies it (no momentum, no weight decay): one fused
//! multiply-add per parameter.

use crate::error::{QuantError, Result};

/// `p = fma(−f32(lr), grad, p)` for every parameter: `torch.optim.SGD(lr)`'s
/// `param.add_(grad, alpha=-lr)`, one rounding per element (PyTorch's CPU kernel fuses the
/// multiply and the add).
///
/// # Errors
/// [`QuantError::NonFinite`] for a non-finite `lr`; [`QuantError::LengthMismatch`] when
/// `grads` and `params` differ in length (then nothing is written).
///
/// # Examples
/// ```
/// use qnumeric::qat::sgd_step;
/// let mut p = [1.0f32, -2.0];
/// sgd_step(0.5, &mut p, &[2.0, -4.0])?;
/// assert_eq!(p, [0.0, 0.0]);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn sgd_step(lr: f64, params: &mut [f32], grads: &[f32]) -> Result<()> {
    sgd_update("sgd_step", lr, params, grads)
}

pub(crate) fn sgd_update(
    op: &'static str,
    lr: f64,
    params: &mut [f32],
    grads: &[f32],
) -> Result<()> {
    if !lr.is_finite() {
        return Err(QuantError::NonFinite {
            op,
            what: "learning rate",
            value: lr,
        });
    }
    if params.len() != grads.len() {
        return Err(QuantError::LengthMismatch {
            op,
            what: "gradients",
            expected: params.len(),
            got: grads.len(),
        });
    }
    let alpha = -(lr as f32);
    for (p, &g) in params.iter_mut().zip(grads) {
        *p = alpha.mul_add(g, *p);
    }
    Ok(())
}

/// SGD with momentum, as `torch.optim.SGD(lr, momentum, dampening, nesterov)` (no weight
/// decay): per parameter a velocity buffer `b`; the first step sets `b = g`, later ones
/// `b = fma(1 − dampening, g, momentum·b)`; the update direction is `fma(momentum, b, g)`
/// with Nesterov, else `b`; then `p = fma(−lr, direction, p)` (PyTorch's `mul_`, then `add_`
/// with `alpha`, which its CPU kernels fuse).
///
/// # Examples
/// ```
/// use qnumeric::qat::SgdMomentum;
/// let mut opt = SgdMomentum::new(0.1, 0.9, 0.0, false)?;
/// let mut p = [1.0f32];
/// opt.step(&mut p, &[1.0])?; // b = 1,   p = 1 − 0.1
/// opt.step(&mut p, &[1.0])?; // b = 1.9, p = 0.9 − 0.19
/// assert!((p[0] - 0.71).abs() < 1e-6);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SgdMomentum {
    lr: f64,
    momentum: f32,
    dampening: f32,
    nesterov: bool,
    buffer: Option<Vec<f32>>,
}

impl SgdMomentum {
    /// An optimizer with no velocity yet.
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a non-finite or negative `lr` or `momentum`, a
    /// `dampening` outside `[0, 1]`, or Nesterov without momentum or with dampening (PyTorch's
    /// `ValueError`).
    pub fn new(lr: f64, momentum: f32, dampening: f32, nesterov: bool) -> Result<Self> {
        const OP: &str = "SgdMomentum::new";
        let bad = |what, value: f64, reason| QuantError::InvalidParameter {
            op: OP,
            what,
            value,
            reason,
        };
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(bad("lr", lr, "must be finite and >= 0"));
        }
        if !(momentum.is_finite() && momentum >= 0.0) {
            return Err(bad(
                "momentum",
                f64::from(momentum),
                "must be finite and >= 0",
            ));
        }
        if !(0.0..=1.0).contains(&dampening) {
            return Err(bad("dampening", f64::from(dampening), "must lie in [0, 1]"));
        }
        if nesterov && (momentum <= 0.0 || dampening != 0.0) {
            return Err(bad(
                "momentum",
                f64::from(momentum),
                "Nesterov momentum requires a momentum and zero dampening",
            ));
        }
        Ok(SgdMomentum {
            lr,
            momentum,
            dampening,
            nesterov,
            buffer: None,
        })
    }

    /// The velocity buffer (`None` before the first step).
    #[must_use]
    pub fn buffer(&self) -> Option<&[f32]> {
        self.buffer.as_deref()
    }

    /// One step on `params` with `grads`.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] when `grads`, `params` and the buffer differ in length
    /// (nothing is written).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<()> {
        const OP: &str = "SgdMomentum::step";
        let n = params.len();
        for (what, got) in [
            ("gradients", grads.len()),
            ("velocity buffer", self.buffer.as_ref().map_or(n, Vec::len)),
        ] {
            if got != n {
                return Err(QuantError::LengthMismatch {
                    op: OP,
                    what,
                    expected: n,
                    got,
                });
            }
        }
        let m = self.momentum;
        let buf = match self.buffer.take() {
            None => grads.to_vec(),
            Some(mut b) => {
                let keep = 1.0 - self.dampening;
                for (v, &g) in b.iter_mut().zip(grads) {
                    *v = keep.mul_add(g, m * *v);
                }
                b
            }
        };
        let alpha = -(self.lr as f32);
        for ((p, &g), &v) in params.iter_mut().zip(grads).zip(&buf) {
            let d = if self.nesterov { m.mul_add(v, g) } else { v };
            *p = alpha.mul_add(d, *p);
        }
        self.buffer = Some(buf);
        Ok(())
    }
}
