//! `svcca ingest` (not built yet: see the open issues).

use crate::exit::{CmdResult, Failure};

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {}

pub fn run(_args: IngestArgs) -> CmdResult {
    Err(Failure::fatal("`svcca ingest` is not built yet"))
}
