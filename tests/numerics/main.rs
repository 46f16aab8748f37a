//! Integration tests of the numeric floors: kernels, metrics, observers and calibrators, the
//! error model, property tests, the PyTorch golden files and the `rayon` identity. One test
//! binary (one link) for the area; `tests/models` is the other, so the two compile in
//! parallel. Modules that need a feature are compiled with it only.

mod calibrators;
#[cfg(feature = "conformance")]
mod conformance;
mod errors;
mod kernels;
mod metrics;
mod observers;
#[cfg(feature = "rayon")]
mod parallel;
mod properties;
