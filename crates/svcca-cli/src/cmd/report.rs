//! `svcca report` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {}

pub fn run(_args: ReportArgs) -> CmdResult {
    Err(Failure::fatal("`svcca report` is not built yet"))
}
