//! `svcca sweep` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {}

pub fn run(_args: SweepArgs) -> CmdResult {
    Err(Failure::fatal("`svcca sweep` is not built yet"))
}
