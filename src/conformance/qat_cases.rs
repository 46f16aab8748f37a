//! (being written)

use super::case::{Case, CaseResult};

pub(crate) fn run(_case: &Case) -> CaseResult<()> {
    Err(super::UNSUPPORTED.to_string())
}
