//! Integration tests of the numeric floors: observers and calibrators, the error model,
//! property tests, the PyTorch golden files and the `rayon` identity. One test binary for the
//! area, compiled in parallel with `tests/kernels` and `tests/models`. Modules that need a
//! feature are compiled with it only.

mod calibrators;
#[cfg(feature = "conformance")]
mod conformance;
mod errors;
mod formats;
mod observers;
#[cfg(feature = "rayon")]
mod parallel;
mod properties;
mod qat;
