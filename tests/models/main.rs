//! Integration tests of the model floors: layers, fusion, int8 layers, the Numeric Suite, the
//! diagnosis and the command line. One test binary (one link) for the area, compiled in
//! parallel with `tests/kernels` and `tests/numerics`. Modules that need a feature are compiled
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

#[cfg(feature = "cli")]
mod cli;
mod diagnose;
mod diagnosis_data;
#[cfg(feature = "safetensors")]
mod digits;
#[cfg(feature = "safetensors")]
mod dumps_v2;
mod fusion;
mod kernel_check;
mod nn;
mod nn_hostile;
mod ns;
mod qat_model;
mod quantized_layers;
mod replay;
mod simulate;
#[cfg(feature = "safetensors")]
mod tiny_bert;
mod train;
#[cfg(feature = "safetensors")]
mod transformer;

/// Property-test cases: `PROPTEST_CASES` when set (CI sets more), `default` otherwise.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
