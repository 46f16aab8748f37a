//! Metric cases (`metrics.jsonl`).

use super::case::{Case, CaseResult, compare_floats, tensor_f32};
use super::json::number;
use crate::metrics::Metric;

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    let metric = Metric::from_name(case.str_field("metric")?).map_err(|e| e.to_string())?;
    let x = case.read("x", tensor_f32)?;
    let y = case.read("y", tensor_f32)?;
    let v = metric.compute(&x, &y).map_err(|e| format!("error: {e}"))?;
    let expected = case.read_expected("value", number)?;
    compare_floats("value", &[v], &[expected], case.tolerance())
}
