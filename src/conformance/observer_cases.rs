//! Observer cases (`observers.jsonl`).

use super::case::{Case, CaseResult};
use super::UNSUPPORTED;

pub(crate) fn run(_case: &Case) -> CaseResult<()> {
    Err(UNSUPPORTED.into())
}
