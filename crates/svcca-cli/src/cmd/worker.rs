//! `svcca worker` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {}

pub fn run(_args: WorkerArgs) -> CmdResult {
    Err(Failure::fatal("`svcca worker` is not built yet"))
}
