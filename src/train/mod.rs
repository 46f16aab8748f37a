//! Training the crate's layers: enough to fine-tune a small model (quantization-aware
//! training of [`crate::qat`]), not a training framework.
//!
//! | item | file | what it is |
//! |---|---|---|
//! | [`Tape`], [`backward`], [`ModelGrads`] | `tape.rs` | records a forward pass of any [`Model`](crate::nn::Model) and runs it backwards through every layer's [`Module::backward`](crate::nn::Module::backward) |
//! | [`cross_entropy`], [`mse_loss`] | `loss.rs` | losses with their gradient |
//! | [`Sgd`], [`Adam`] | `optim.rs` | PyTorch's `torch.optim.SGD` (momentum, Nesterov, weight decay) and `torch.optim.Adam`, stepping a whole model |
//!
//! The float layers' backward passes are checked against finite differences
//! (`tests/models/train.rs`).
//!
//! # Examples
//! A linear model learns `y = 2x` in a few steps:
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use qnumeric::nn::{Activation, Linear, Model, Sequential};
//! use qnumeric::train::{Adam, Tape, backward, mse_loss};
//!
//! let mut model = Sequential::new().with("fc", Linear::new(ArrayD::zeros(IxDyn(&[1, 1])), None)?)?;
//! let x = ArrayD::from_shape_fn(IxDyn(&[8, 1]), |i| i[0] as f32 / 8.0);
//! let target = x.mapv(|v| 2.0 * v);
//! let mut opt = Adam::new(0.1)?;
//! let mut losses = Vec::new();
//! for _ in 0..50 {
//!     let mut tape = Tape::new();
//!     let y = model.run(Activation::Float(x.clone()), &mut tape)?.into_float();
//!     let (loss, grad) = mse_loss(&y, &target)?;
//!     losses.push(loss);
//!     let grads = backward(&model, &tape, &grad)?;
//!     opt.step(&mut model, &grads)?;
//! }
//! assert!(losses[49] < losses[0] / 100.0);
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

mod loss;
mod optim;
mod tape;

pub use loss::{cross_entropy, mse_loss};
pub use optim::{Adam, Sgd};
pub use tape::{ModelGrads, Tape, backward};
