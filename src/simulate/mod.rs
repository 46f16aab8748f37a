//! Models simulated in low-precision formats: a float model whose layers keep their weights in
//! a [`formats`](crate::formats) format (weight-only int4, MXFP4, NVFP4, Q4_0, ...) and pass
//! their inputs through another (float8, MXFP8), layer by layer. The result is an ordinary
//! [`Model`](crate::nn::Model), so the Numeric Suite compares it with the float model and the
//! diagnosis measures format changes on it like any other remedy.

mod compare;
mod layer;
mod plan;

pub use compare::{PlanComparison, PlanLayer, PlanResult, compare_plans};
pub use layer::{FormatLayer, SharedFormat, fake_quantize_last_axis, fake_quantize_weight};
pub use plan::{FormatPlan, LayerFormats, Misfit, Simulated};
