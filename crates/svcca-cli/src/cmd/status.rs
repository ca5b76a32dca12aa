//! `svcca status` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

pub fn run(_args: StatusArgs) -> CmdResult {
    Err(Failure::fatal("`svcca status` is not built yet"))
}
