//! Folding BatchNorm into the preceding convolution or linear layer, and fusing ReLUs.
//!
//! | item | what it does |
//! |---|---|
//! | [`fuse_conv_bn_weights`] | folds BN statistics into a Conv1d/2d/3d weight and bias (also transposed, also grouped transposed) |
//! | [`fuse_linear_bn_weights`] | folds BN statistics into a Linear weight and bias |
//! | [`fuse_modules`] | fuses named groups of any [`Model`](crate::nn::Model): Conv-BN, Conv-BN-ReLU, Conv-ReLU, Linear-BN, Linear-BN-ReLU, Linear-ReLU |
//! | [`fuse_auto`] | finds every fusable pattern of any model, fuses it, reports what it fused |
//!
//! `weights.rs` holds the weight-level folding, `modules.rs` the model-level fusion (which
//! recognises layers by their [`LayerRole`](crate::nn::LayerRole)).
//!
//! The weight-level functions follow PyTorch's `torch.nn.utils.fusion` operation order in
//! `f32`, so their results match PyTorch's bit for bit:
//!
//! ```text
//! r[c]  = 1 / sqrt(rv[c] + f32(eps))
//! conv:   W'[o, ...] = W[o, ...] · (γ[o]·r[o])        b'[c] = ((b[c] − rm[c])·r[c])·γ[c] + β[c]
//! linear: W'[o, :]   = W[o, :] · (γ[o]·r[o])          b'[c] = (b[c] − rm[c])·(γ[c]·r[c]) + β[c]
//! ```
//!
//! For transposed convolutions (weight `[in, out/groups, k...]`) the scale applies to the
//! output channel `g·(out/groups) + j` of the element at `[i, j, ...]`, `g = i / (in/groups)`:
//! correct also for `groups > 1`, where PyTorch 2.15 fails with a broadcast error.
//!
//! Module-level fusion replaces the first layer of a group by the fused layer and the others
//! by [`Identity`](crate::nn::Identity) (PyTorch's convention, so names stay stable). A failed request leaves the
//! model unchanged.
//!
//! # Examples
//! ```
//! use ndarray::{arr1, ArrayD, IxDyn};
//! use qnumeric::fusion::{fuse_conv_bn_weights, ConvLayout};
//! use qnumeric::nn::BatchNormParams;
//!
//! let w = ArrayD::from_elem(IxDyn(&[2, 1, 1, 1]), 1.0f32);
//! let bn = BatchNormParams {
//!     running_mean: vec![1.0, 0.0],
//!     running_var: vec![4.0, 1.0],
//!     weight: Some(vec![2.0, 1.0]),
//!     bias: Some(vec![0.5, 0.0]),
//!     eps: 0.0,
//! };
//! let (w2, b2) = fuse_conv_bn_weights(&w, None, &bn, ConvLayout::Conv)?;
//! assert_eq!(w2.as_slice(), Some(&[1.0f32, 1.0][..]));
//! assert_eq!(b2, arr1(&[-0.5f32, 0.0]).into_dyn());
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

mod modules;
mod weights;

pub use modules::{FusedGroup, FusionPattern, fuse_auto, fuse_modules};
pub use weights::{ConvLayout, fuse_conv_bn_weights, fuse_linear_bn_weights};
