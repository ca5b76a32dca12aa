//! `svcca submit`: sends a job spec to a coordinator, and optionally follows it to the end.

use std::path::PathBuf;

use svcca_engine::client;
use svcca_engine::coordinator::JobState;

use super::coordinator::{ConnectArgs, failure, runtime};
use super::status::describe;
use crate::exit::{CmdResult, Failure};

/// Submit a job (a JOB.toml file) to a coordinator and print its id. Paths and URLs in the job
/// spec are read by the coordinator and the workers: use object-store URLs or absolute paths
/// they can all see. With --wait, follow the job (progress on stderr) and exit with its outcome:
/// 0 on success, 10 when it failed for good (bad input), 11 when a retry could succeed (lost
/// workers, storage errors, an unreachable coordinator). A coordinator that requires a token
/// refuses a submit without one, or with a wrong one, with exit code 10.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The job spec file.
    pub job: PathBuf,
    /// Wait for the job to end, printing progress; exit with its outcome.
    #[arg(long)]
    pub wait: bool,
}

pub fn run(args: SubmitArgs) -> CmdResult {
    let client = args.connect.config()?;
    let text = std::fs::read_to_string(&args.job)
        .map_err(|e| Failure::fatal(format!("cannot read job file {}: {e}", args.job.display())))?;
    let runtime = runtime()?;
    let outcome = runtime.block_on(async move {
        let job_id = client::submit(&client, text).await.map_err(failure)?;
        outln!("{job_id}");
        if !args.wait {
            return Ok(());
        }
        let mut last = None;
        let info = client::wait_for_job(&client, &job_id, |info| {
            let shown = (info.state, info.progress, info.workers_alive);
            if last != Some(shown) {
                last = Some(shown);
                eprintln!("{}", describe(info));
            }
        })
        .await
        .map_err(failure)?;
        if info.state == JobState::Succeeded {
            for line in info.summary.iter().flat_map(|s| s.lines.iter()) {
                outln!("{line}");
            }
        }
        client::job_result(info).map(|_| ()).map_err(failure)
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    outcome
}
