//! Metric cases (`metrics.jsonl`).

use super::case::{compare_floats, tensor_f32, Case, CaseResult};
use crate::metrics::Metric;

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    let metric = Metric::from_name(case.str_field("metric")?).map_err(|e| e.to_string())?;
    let x = tensor_f32(case.field("x")?)?;
    let y = tensor_f32(case.field("y")?)?;
    let v = metric.compute(&x, &y).map_err(|e| format!("error: {e}"))?;
    let expected = case
        .expected("value")?
        .as_f64()
        .ok_or("`expected.value` is not a number")?;
    compare_floats("value", &[v], &[expected], case.tolerance())
}
