//! `svcca cancel`: stops a job on a coordinator.

use svcca_engine::client;

use super::coordinator::{ConnectArgs, failure, runtime};
use super::status::describe;
use crate::exit::CmdResult;

/// Cancel a job: its workers stop its tasks and it ends as `cancelled` (a job that already ended
/// is left as it is). Where the coordinator requires tokens, only the token that submitted the job
/// may cancel it; another is refused with exit code 10.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The job to cancel (as `svcca submit` printed it).
    pub job_id: String,
}

pub fn run(args: CancelArgs) -> CmdResult {
    let client = args.connect.config()?;
    let runtime = runtime()?;
    let outcome = runtime.block_on(client::cancel(&client, &args.job_id));
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    let info = outcome.map_err(failure)?;
    outln!("{}", describe(&info));
    Ok(())
}
