//! `svcca status`: what a coordinator is doing.

use svcca_engine::client;
use svcca_engine::coordinator::JobInfo;

use super::coordinator::{ConnectArgs, failure, runtime};
use crate::exit::CmdResult;

/// Show one job (with JOB_ID) or every job a coordinator knows: state, tasks done of known,
/// workers connected, and the failure or the result summary.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The job to show (default: all jobs).
    pub job_id: Option<String>,
    /// One JSON object per job and line, for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> CmdResult {
    let client = args.connect.config()?;
    let runtime = runtime()?;
    let outcome = runtime.block_on(async {
        match &args.job_id {
            Some(job_id) => client::status(&client, job_id).await.map(|info| vec![info]),
            None => client::list_jobs(&client).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    let jobs = outcome.map_err(failure)?;
    if jobs.is_empty() && !args.json {
        outln!("no jobs");
    }
    for info in &jobs {
        if args.json {
            outln!("{}", to_json(info));
            continue;
        }
        outln!("{}", describe(info));
        if let Some(failure) = &info.failure {
            let kind = if failure.retryable {
                "retryable"
            } else {
                "not retryable"
            };
            outln!("  failed ({kind}): {}", failure.message);
        }
        if let Some(summary) = &info.summary {
            outln!("  results: {}", summary.output_url);
            for line in &summary.lines {
                outln!("  {line}");
            }
        }
    }
    Ok(())
}

/// One line: `job-3  running  12/40 tasks  2 worker(s)`.
pub(crate) fn describe(info: &JobInfo) -> String {
    format!(
        "{}  {}  {}/{} tasks  {} worker(s)",
        info.job_id, info.state, info.progress.done, info.progress.total, info.workers_alive
    )
}

fn to_json(info: &JobInfo) -> serde_json::Value {
    serde_json::json!({
        "job_id": info.job_id,
        "state": info.state.as_str(),
        "done": info.progress.done,
        "total": info.progress.total,
        "workers_alive": info.workers_alive,
        "failure": info.failure.as_ref().map(|f| serde_json::json!({"message": f.message, "retryable": f.retryable})),
        "output_url": info.summary.as_ref().map(|s| s.output_url.clone()),
        "summary": info.summary.as_ref().map(|s| s.lines.clone()).unwrap_or_default(),
    })
}
