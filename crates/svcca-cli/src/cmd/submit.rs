//! `svcca submit`: sends a job spec to a coordinator, and optionally follows it to the end.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use svcca_engine::client::{self, ClientConfig};
use svcca_engine::coordinator::{JobInfo, JobState};

use super::coordinator::{ConnectArgs, failure, parse_duration, runtime, shutdown_signal};
use crate::exit::{CmdResult, Failure};
use crate::progress::{ProgressLog, TARGET, emit};

/// Submit a job (a JOB.toml file) to a coordinator and print its id. Paths and URLs in the job
/// spec are read by the coordinator and the workers: use object-store URLs or absolute paths
/// they can all see. Submitting a spec identical to a job of yours that is still running prints
/// that job's id instead of starting a second one.
///
/// With --wait, follow the job and exit with its outcome: 0 on success, 10 when it failed for
/// good (bad input), 11 when a retry could succeed (lost workers, storage errors, a coordinator
/// unreachable for longer than --reconnect-timeout). Off a terminal a progress line (tasks
/// done/total, rate, ETA; JSON fields under --log-format json) comes at most every
/// --progress-every seconds, and a line at every change of the job's state. A coordinator that
/// requires a token refuses a submit without one, or with a wrong one, with exit code 10.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The job spec file.
    pub job: PathBuf,
    /// Wait for the job to end, printing progress; exit with its outcome.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: while the coordinator cannot be reached (a restart), keep reconnecting for
    /// this long before giving up with exit code 11.
    #[arg(long, env = "SVCCA_RECONNECT_TIMEOUT", default_value = "5m", value_parser = parse_duration, requires = "wait")]
    pub reconnect_timeout: Duration,
    /// With --wait: cancel the job when this command ends before the job does (Ctrl-C, SIGTERM,
    /// or giving up on the coordinator). A SIGKILL cannot be caught: the job then runs on.
    #[arg(long, requires = "wait")]
    pub cancel_on_exit: bool,
    /// With --wait, off a terminal: a progress line at most every this many seconds; 0 turns
    /// them off (state changes are still printed).
    #[arg(
        long,
        env = "SVCCA_PROGRESS_EVERY",
        default_value_t = 30.0,
        value_name = "SECONDS"
    )]
    pub progress_every: f64,
}

pub fn run(args: SubmitArgs) -> CmdResult {
    let client = args.connect.config()?;
    if !(args.progress_every.is_finite() && args.progress_every >= 0.0) {
        return Err(Failure::fatal(format!(
            "--progress-every must be a number of seconds, 0 or more (got {})",
            args.progress_every
        )));
    }
    let text = std::fs::read_to_string(&args.job)
        .map_err(|e| Failure::fatal(format!("cannot read job file {}: {e}", args.job.display())))?;
    let runtime = runtime()?;
    let outcome = runtime.block_on(async move {
        let job_id = client::submit(&client, text).await.map_err(failure)?;
        outln!("{job_id}");
        if !args.wait {
            return Ok(());
        }
        if !args.cancel_on_exit {
            return follow(&client, &job_id, &args).await;
        }
        let outcome = tokio::select! {
            outcome = follow(&client, &job_id, &args) => outcome,
            _ = shutdown_signal() => Err(Failure::retryable(format!(
                "interrupted while following job {job_id}: the job is cancelled (--cancel-on-exit)"
            ))),
        };
        if outcome.is_err() {
            // Cancelling a job that already ended changes nothing, so this is safe after any
            // failure; only the job's owner may cancel it, which this submitter is.
            match client::cancel(&client, &job_id).await {
                Ok(info) => tracing::info!(%job_id, state = %info.state, "job cancelled on exit"),
                Err(error) => tracing::warn!(%job_id, %error, "could not cancel the job on exit"),
            }
        }
        outcome
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    outcome
}

/// Follows the job to its end, printing a summary of its progress rather than every task.
async fn follow(client: &ClientConfig, job_id: &str, args: &SubmitArgs) -> CmdResult {
    let mut view = ProgressView::new(args.progress_every);
    let info = client::follow_job(client, job_id, args.reconnect_timeout, |info| {
        view.update(info)
    })
    .await
    .map_err(failure)?;
    view.finish();
    if info.state == JobState::Succeeded {
        for line in info.summary.iter().flat_map(|s| s.lines.iter()) {
            outln!("{line}");
        }
    }
    client::job_result(info).map(|_| ()).map_err(failure)
}

/// What `submit --wait` shows: a bar on a terminal; elsewhere a line per state change and
/// periodic progress lines.
struct ProgressView {
    bar: Option<indicatif::ProgressBar>,
    log: Option<ProgressLog>,
    state: Option<JobState>,
}

impl ProgressView {
    fn new(every_s: f64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let log = (bar.is_none() && every_s > 0.0).then(|| {
            ProgressLog::from_first_report(Duration::from_secs_f64(every_s), Instant::now())
        });
        Self {
            bar,
            log,
            state: None,
        }
    }

    fn update(&mut self, info: &JobInfo) {
        let (done, total) = (info.progress.done, info.progress.total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(format!("{} ({} worker(s))", info.state, info.workers_alive));
        }
        if self.state != Some(info.state) {
            self.state = Some(info.state);
            if self.bar.is_none() {
                tracing::info!(
                    target: TARGET,
                    job_id = %info.job_id,
                    state = %info.state,
                    done,
                    total,
                    workers_alive = info.workers_alive,
                    "{}",
                    super::status::describe(info)
                );
            }
        }
        if let Some(line) = self
            .log
            .as_mut()
            .and_then(|log| log.observe(done, total, Instant::now()))
        {
            emit(&line);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
