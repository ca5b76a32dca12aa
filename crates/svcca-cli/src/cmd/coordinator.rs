//! `svcca coordinator` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {}

pub fn run(_args: CoordinatorArgs) -> CmdResult {
    Err(Failure::fatal("`svcca coordinator` is not built yet"))
}
