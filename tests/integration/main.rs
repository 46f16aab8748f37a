//! The integration tests, as one test binary (one link of the crate and its dependencies,
//! instead of one per file). Each module is one area; those that need a feature are compiled
//! with it only.
//!
//! `model` and `faults` are the digits example's own files (`examples/digits/`), shared so the
//! tests run the very model and faults the example shows.

#[cfg(feature = "safetensors")]
#[path = "../../examples/digits/model.rs"]
mod model;

#[cfg(feature = "safetensors")]
#[path = "../../examples/digits/faults.rs"]
mod faults;

mod calibrators;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "conformance")]
mod conformance;
mod diagnose;
#[cfg(feature = "safetensors")]
mod digits;
mod errors;
mod fusion;
mod kernels;
mod metrics;
mod nn;
mod nn_hostile;
mod ns;
mod observers;
#[cfg(feature = "rayon")]
mod parallel;
mod properties;
mod quantized_layers;
