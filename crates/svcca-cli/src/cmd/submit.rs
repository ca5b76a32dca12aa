//! `svcca submit` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {}

pub fn run(_args: SubmitArgs) -> CmdResult {
    Err(Failure::fatal("`svcca submit` is not built yet"))
}
