//! Using a coordinator: submit a job, follow it, ask its state, cancel it; and the embedded mode,
//! which runs a coordinator and in-process workers for one job (what `svcca sweep` does).
//!
//! All of it goes through the same gRPC protocol as a cluster, so the embedded default exercises
//! the cluster code on every run.

use std::sync::Arc;
use std::time::Duration;

pub use crate::credentials::{
    AUTHORIZATION, Client, ClientConfig, ClientTls, DEFAULT_MAX_MESSAGE_SIZE, MIN_TOKEN_LEN, Token,
};
pub use crate::error::ClusterError;
use crate::error::error_chain;
use svcca_proto::v1;
use tokio::sync::watch;

use crate::coordinator::wire::info_from_proto;
use crate::coordinator::{Coordinator, CoordinatorConfig, JobInfo, JobState};
use crate::driver::{JobDriverFactory, JobSummary, Progress, TaskExecutor};
use crate::worker::{Worker, WorkerConfig};

/// Connects to the coordinator (e.g. `http://127.0.0.1:50051`, or a [`ClientConfig`] with a token
/// and TLS), failing fast (retryable) when nothing answers.
pub async fn connect(target: impl Into<ClientConfig>) -> Result<Client, ClusterError> {
    let config = target.into();
    let url = config.url.clone();
    let channel = config
        .endpoint()?
        .connect()
        .await
        .map_err(|e| ClusterError::Rpc {
            rpc: "connect",
            url: url.clone(),
            code: tonic::Code::Unavailable,
            message: error_chain(&e),
        })?;
    Ok(config.client(channel))
}

/// Submits a job spec (TOML text); returns the job id. A spec the coordinator's planner refuses
/// is a non-retryable [`ClusterError::Rpc`] with code `InvalidArgument`.
pub async fn submit(
    target: impl Into<ClientConfig>,
    job_spec_toml: String,
) -> Result<String, ClusterError> {
    let config = target.into();
    let mut client = connect(&config).await?;
    let response = client
        .submit_job(v1::SubmitJobRequest { job_spec_toml })
        .await
        .map_err(|status| config.rpc_error("SubmitJob", &status))?;
    Ok(response.into_inner().job_id)
}

/// Follows a job until it ends, calling `on_update` with every snapshot (the first is the current
/// state). Returns the final snapshot, whatever the outcome: see [`job_result`]. A lost
/// connection is an error at once: see [`follow_job`] to ride out a coordinator restart.
pub async fn wait_for_job(
    target: impl Into<ClientConfig>,
    job_id: &str,
    on_update: impl FnMut(&JobInfo) + Send,
) -> Result<JobInfo, ClusterError> {
    follow_job(target, job_id, Duration::ZERO, on_update).await
}

/// [`wait_for_job`], reconnecting while the coordinator is unreachable (restarting, or a
/// connection cut mid-stream) for up to `reconnect_for` in a row, with a backoff from 250 ms to
/// 5 s; each attempt is logged. A coordinator that comes back without the job (it keeps no
/// records, see `svcca coordinator --state`) ends the wait with [`ClusterError::JobForgotten`].
pub async fn follow_job(
    target: impl Into<ClientConfig>,
    job_id: &str,
    reconnect_for: Duration,
    mut on_update: impl FnMut(&JobInfo) + Send,
) -> Result<JobInfo, ClusterError> {
    const FIRST_BACKOFF: Duration = Duration::from_millis(250);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let config = target.into();
    let url = config.url.as_str();
    let mut lost_since: Option<std::time::Instant> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut seen_event = false;
        let outcome = watch_until_end(&config, job_id, &mut |info: &JobInfo| {
            seen_event = true;
            on_update(info)
        })
        .await;
        let error = match outcome {
            Ok(info) => return Ok(info),
            Err(ClusterError::Rpc {
                code: tonic::Code::NotFound,
                ..
            }) if lost_since.is_some() || seen_event => {
                return Err(ClusterError::JobForgotten {
                    url: url.to_string(),
                    job_id: job_id.to_string(),
                });
            }
            Err(error) if error.is_retryable() && !reconnect_for.is_zero() => error,
            Err(error) => return Err(error),
        };
        if seen_event {
            // The stream worked for a while: this is a new outage.
            lost_since = None;
            backoff = FIRST_BACKOFF;
        }
        let since = *lost_since.get_or_insert_with(std::time::Instant::now);
        let waited = since.elapsed();
        if waited >= reconnect_for {
            tracing::error!(%job_id, %error, waited_s = waited.as_secs_f64(), "the coordinator stayed unreachable; giving up");
            return Err(error);
        }
        tracing::warn!(%job_id, %error, retry_in_ms = backoff.as_millis() as u64, "lost the coordinator; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One watch of the job, from connecting to the job's end or the stream's.
async fn watch_until_end(
    config: &ClientConfig,
    job_id: &str,
    on_update: &mut (dyn FnMut(&JobInfo) + Send),
) -> Result<JobInfo, ClusterError> {
    let url = config.url.as_str();
    let mut client = connect(config).await?;
    let mut stream = client
        .watch_job(v1::WatchJobRequest {
            job_id: job_id.to_string(),
        })
        .await
        .map_err(|status| config.rpc_error("WatchJob", &status))?
        .into_inner();
    loop {
        let event = stream
            .message()
            .await
            .map_err(|status| config.rpc_error("WatchJob", &status))?;
        let Some(event) = event else {
            return Err(ClusterError::WatchEnded {
                url: url.to_string(),
                job_id: job_id.to_string(),
            });
        };
        let Some(info) = event.job else { continue };
        let info =
            info_from_proto(info).map_err(|status| ClusterError::rpc("WatchJob", url, &status))?;
        on_update(&info);
        if info.state.is_terminal() {
            return Ok(info);
        }
    }
}

/// A finished job's summary, or its failure as an error (keeping whether it is retryable).
pub fn job_result(info: JobInfo) -> Result<JobSummary, ClusterError> {
    match info.state {
        JobState::Succeeded => Ok(info.summary.unwrap_or_default()),
        JobState::Cancelled => Err(ClusterError::JobCancelled {
            job_id: info.job_id,
        }),
        JobState::Failed => {
            let failure = info.failure.unwrap_or(crate::coordinator::JobFailure {
                message: "no reason given".into(),
                retryable: false,
            });
            Err(ClusterError::JobFailed {
                job_id: info.job_id,
                message: failure.message,
                retryable: failure.retryable,
            })
        }
        JobState::Running | JobState::Finishing => Err(ClusterError::WatchEnded {
            url: String::new(),
            job_id: info.job_id,
        }),
    }
}

/// One job's state.
pub async fn status(
    target: impl Into<ClientConfig>,
    job_id: &str,
) -> Result<JobInfo, ClusterError> {
    let config = target.into();
    let url = config.url.as_str();
    let mut client = connect(&config).await?;
    let response = client
        .job_status(v1::JobStatusRequest {
            job_id: job_id.to_string(),
        })
        .await
        .map_err(|status| config.rpc_error("JobStatus", &status))?;
    let info = response.into_inner().job.ok_or_else(|| ClusterError::Rpc {
        rpc: "JobStatus",
        url: url.to_string(),
        code: tonic::Code::Internal,
        message: "empty reply".into(),
    })?;
    info_from_proto(info).map_err(|status| ClusterError::rpc("JobStatus", url, &status))
}

/// Every job the coordinator knows, oldest first.
pub async fn list_jobs(target: impl Into<ClientConfig>) -> Result<Vec<JobInfo>, ClusterError> {
    let config = target.into();
    let url = config.url.as_str();
    let mut client = connect(&config).await?;
    let response = client
        .list_jobs(v1::ListJobsRequest {})
        .await
        .map_err(|status| config.rpc_error("ListJobs", &status))?;
    response
        .into_inner()
        .jobs
        .into_iter()
        .map(|info| {
            info_from_proto(info).map_err(|status| ClusterError::rpc("ListJobs", url, &status))
        })
        .collect()
}

/// Cancels a job; returns its state afterwards. Where the coordinator authenticates its clients,
/// only the identity that submitted the job may cancel it (`PermissionDenied` otherwise).
pub async fn cancel(
    target: impl Into<ClientConfig>,
    job_id: &str,
) -> Result<JobInfo, ClusterError> {
    let config = target.into();
    let url = config.url.as_str();
    let mut client = connect(&config).await?;
    let response = client
        .cancel_job(v1::CancelJobRequest {
            job_id: job_id.to_string(),
        })
        .await
        .map_err(|status| config.rpc_error("CancelJob", &status))?;
    let info = response.into_inner().job.ok_or_else(|| ClusterError::Rpc {
        rpc: "CancelJob",
        url: url.to_string(),
        code: tonic::Code::Internal,
        message: "empty reply".into(),
    })?;
    info_from_proto(info).map_err(|status| ClusterError::rpc("CancelJob", url, &status))
}

/// Runs one job on a private cluster: a coordinator on a random loopback port and `workers`
/// in-process workers (one task each at a time), all speaking the same gRPC as a real cluster.
/// `on_progress` sees the job's progress at every change. Everything is shut down before it
/// returns.
pub async fn run_embedded(
    factory: Arc<dyn JobDriverFactory>,
    executor: Arc<dyn TaskExecutor>,
    job_spec_toml: String,
    workers: usize,
    on_progress: impl FnMut(Progress) + Send,
) -> Result<JobSummary, ClusterError> {
    let config =
        CoordinatorConfig::default().with_listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    run_embedded_with(
        config,
        factory,
        executor,
        job_spec_toml,
        workers,
        on_progress,
    )
    .await
}

/// [`run_embedded`] with the coordinator's settings given (its `listen` address is used as is).
pub async fn run_embedded_with(
    config: CoordinatorConfig,
    factory: Arc<dyn JobDriverFactory>,
    executor: Arc<dyn TaskExecutor>,
    job_spec_toml: String,
    workers: usize,
    mut on_progress: impl FnMut(Progress) + Send,
) -> Result<JobSummary, ClusterError> {
    let workers = workers.max(1);
    let coordinator = Coordinator::bind(config, factory).await?;
    let url = coordinator.url();
    // Workers stop before the coordinator so that they can deregister from it.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stop_server_tx, stop_server_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(coordinator.serve(stopped(stop_server_rx)));
    let mut pool = tokio::task::JoinSet::new();
    for i in 0..workers {
        let config = WorkerConfig::new(url.clone())
            .with_name(format!("embedded-{i}"))
            .with_concurrency(1)
            // Once the job has ended nothing is worth waiting for.
            .with_drain_timeout(Duration::from_millis(500));
        pool.spawn(Worker::new(config, executor.clone()).run(stopped(stop_rx.clone())));
    }

    let outcome = async {
        let job_id = submit(&url, job_spec_toml).await?;
        let mut last = None;
        let info = wait_for_job(&url, &job_id, |info| {
            if last != Some(info.progress) {
                last = Some(info.progress);
                on_progress(info.progress);
            }
        })
        .await?;
        job_result(info)
    }
    .await;

    let _ = stop_tx.send(true);
    while let Some(joined) = pool.join_next().await {
        if let Ok(Err(error)) = joined {
            tracing::warn!(%error, "embedded worker failed");
        }
    }
    let _ = stop_server_tx.send(true);
    match server.await {
        Ok(Err(error)) => tracing::warn!(%error, "embedded coordinator failed"),
        Err(error) => tracing::warn!(%error, "embedded coordinator panicked"),
        Ok(Ok(())) => {}
    }
    outcome
}
