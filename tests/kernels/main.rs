//! Integration tests of the kernels and metrics: their generic code is instantiated here for
//! every float and integer type, which makes this the slowest test crate to compile, so it is
//! a binary of its own that compiles in parallel with `tests/numerics` and `tests/models`.

mod kernels;
mod metrics;
