//! `svcca ls` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct LsArgs {}

pub fn run(_args: LsArgs) -> CmdResult {
    Err(Failure::fatal("`svcca ls` is not built yet"))
}
