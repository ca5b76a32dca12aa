//! `svcca compare` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {}

pub fn run(_args: CompareArgs) -> CmdResult {
    Err(Failure::fatal("`svcca compare` is not built yet"))
}
