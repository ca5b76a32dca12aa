//! The worker: registers with a coordinator, pulls leases, runs tasks, reports back.
//!
//! The worker dials the coordinator and never the reverse, so it needs no inbound port except its
//! own health service. Its pieces:
//! - registration, retried with backoff until the coordinator answers (it may start later than
//!   the workers, as pods do); a protocol-version refusal is final;
//! - a heartbeat task of its own, so a long task never starves the heartbeats; when the
//!   coordinator has forgotten the worker (restart, or it was judged lost) it registers again;
//! - `concurrency` slots, each leasing one task at a time and running it on a blocking thread
//!   (compute never runs on the async workers, which serve heartbeats and gRPC);
//! - the gRPC health service on `health_listen`: `liveness` is SERVING while the process lives
//!   and never depends on the coordinator; `readiness` is SERVING only while registered and not
//!   draining;
//! - drain: when `shutdown` completes the worker stops leasing, finishes its running tasks within
//!   `drain_timeout`, deregisters (the coordinator re-queues what was not finished without
//!   counting an attempt) and returns;
//! - with `exit_when_done` (a worker started for one job, as in a per-run pool), the worker drains
//!   and returns on its own once the coordinator, which had a job while the worker was there,
//!   reports none left.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svcca_proto::v1;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tonic::{Code, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::credentials::{Client, ClientConfig, ClientTls, Token};
use crate::driver::{TaskExecutor, TaskFailure, TaskSpec};
use crate::error::{ClusterError, code_is_retryable};

/// The worker's settings; build with [`WorkerConfig::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// e.g. `http://svcca-coordinator:50051`.
    pub coordinator_url: String,
    /// Shown in the coordinator's logs (pod or host name).
    pub name: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Where to serve gRPC health; `None` serves none (in-process workers).
    pub health_listen: Option<SocketAddr>,
    /// How long a draining worker waits for its running tasks before returning them.
    pub drain_timeout: Duration,
    /// The longest pause between two registration attempts (backoff starts at 100 ms).
    pub max_backoff: Duration,
    /// How long one LeaseTask call may wait for work at the coordinator.
    pub lease_wait: Duration,
    /// The worker token the coordinator expects, if it authenticates workers.
    pub token: Option<Token>,
    /// TLS to the coordinator (an `https://` URL).
    pub tls: Option<ClientTls>,
    /// The largest gRPC message sent or accepted, in bytes.
    pub max_message_size: usize,
    /// Drain and return once the coordinator has no job left, after it had one (see the
    /// module documentation).
    pub exit_when_done: bool,
}

impl WorkerConfig {
    pub fn new(coordinator_url: impl Into<String>) -> Self {
        Self {
            coordinator_url: coordinator_url.into(),
            name: "worker".into(),
            concurrency: 1,
            health_listen: None,
            drain_timeout: Duration::from_secs(60),
            max_backoff: Duration::from_secs(5),
            lease_wait: Duration::from_secs(5),
            token: None,
            tls: None,
            max_message_size: crate::credentials::DEFAULT_MAX_MESSAGE_SIZE,
            exit_when_done: false,
        }
    }
    pub fn with_exit_when_done(mut self, exit: bool) -> Self {
        self.exit_when_done = exit;
        self
    }
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }
    pub fn with_health_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.health_listen = addr;
        self
    }
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
    pub fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }
    pub fn with_lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }
    pub fn with_token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.coordinator_url.clone())
            .with_token(self.token.clone())
            .with_tls(self.tls.clone())
            .with_max_message_size(self.max_message_size)
    }
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub succeeded: u64,
    pub failed: u64,
    /// Results the coordinator refused (the lease had expired or the job had ended).
    pub refused: u64,
    /// Tasks stopped before they finished because the coordinator revoked their lease.
    pub abandoned: u64,
}

/// A worker bound to its executor; [`Worker::run`] does the rest.
pub struct Worker {
    config: WorkerConfig,
    executor: Arc<dyn TaskExecutor>,
}

struct Shared {
    url: String,
    client: Client,
    executor: Arc<dyn TaskExecutor>,
    lease_wait: Duration,
    max_backoff: Duration,
    /// The id the coordinator gave us; `None` while (re-)registering.
    worker_id: watch::Sender<Option<String>>,
    /// Leases being worked on, each with the signal that abandons it when the coordinator
    /// revokes it (job cancelled, lease expired).
    held: Mutex<HashMap<String, Arc<Notify>>>,
    stats: Arc<Mutex<WorkerStats>>,
    /// How long successful tasks took, for metrics.
    latency: Arc<crate::metrics::Histogram>,
    draining: watch::Receiver<bool>,
    /// Starts the drain from inside (`exit_when_done`); `None` when the worker waits for its
    /// shutdown signal only.
    done: Option<Arc<watch::Sender<bool>>>,
    health: Option<HealthReporter>,
}

impl Worker {
    pub fn new(config: WorkerConfig, executor: Arc<dyn TaskExecutor>) -> Self {
        Self { config, executor }
    }

    /// Runs until `shutdown` completes and the drain is over. Fails only for what retrying cannot
    /// fix: a bad URL, an unusable health address, a coordinator that refuses this protocol
    /// version. An unreachable coordinator is waited for.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<WorkerStats, ClusterError> {
        let Worker { config, executor } = self;
        if config.concurrency == 0 {
            return Err(ClusterError::InvalidConfig {
                message: "worker concurrency must be at least 1".into(),
            });
        }
        let url = config.coordinator_url.clone();
        let client_config = config.client_config();
        let endpoint = client_config
            .endpoint()?
            // A connection that dies silently (a partition, a node gone) is noticed within
            // seconds rather than when the kernel gives up on TCP.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        // Lazy: the coordinator may not be up yet; every call (re)connects as needed.
        let client = client_config.client(endpoint.connect_lazy());

        let (drain_tx, draining) = watch::channel(false);
        let drain_tx = Arc::new(drain_tx);
        let done = config.exit_when_done.then(|| drain_tx.clone());
        let (health_stop_tx, health_stop) = watch::channel(false);
        let mut background = JoinSet::new();
        let stats = Arc::new(Mutex::new(WorkerStats::default()));
        let latency = Arc::new(crate::metrics::Histogram::default());
        let health = match config.health_listen {
            Some(addr) => {
                let render = metrics_render(stats.clone(), latency.clone());
                Some(serve_health(addr, health_stop, &mut background, render).await?)
            }
            None => None,
        };
        background.spawn(async move {
            shutdown.await;
            let _ = drain_tx.send(true);
        });

        let shared = Arc::new(Shared {
            url: url.clone(),
            client,
            executor,
            lease_wait: config.lease_wait,
            max_backoff: config.max_backoff,
            worker_id: watch::channel(None).0,
            held: Mutex::new(HashMap::new()),
            stats,
            latency,
            draining: draining.clone(),
            done,
            health,
        });

        let outcome = run_registered(&shared, &config).await;
        let _ = health_stop_tx.send(true);
        background.abort_all();
        while background.join_next().await.is_some() {}
        outcome?;
        let stats = *lock(&shared.stats);
        tracing::info!(
            succeeded = stats.succeeded,
            failed = stats.failed,
            refused = stats.refused,
            abandoned = stats.abandoned,
            "worker stopped"
        );
        Ok(stats)
    }
}

async fn run_registered(shared: &Arc<Shared>, config: &WorkerConfig) -> Result<(), ClusterError> {
    let mut draining = shared.draining.clone();
    let heartbeat_interval = tokio::select! {
        registered = register(shared, &config.name, config.concurrency) => registered?,
        _ = draining.wait_for(|d| *d) => return Ok(()),
    };

    let mut heartbeat = JoinSet::new();
    heartbeat.spawn(heartbeat_loop(
        shared.clone(),
        config.name.clone(),
        config.concurrency,
        heartbeat_interval,
    ));
    let mut slots = JoinSet::new();
    for slot in 0..config.concurrency {
        slots.spawn(slot_loop(shared.clone(), slot));
    }

    let refused = tokio::select! {
        _ = draining.wait_for(|d| *d) => None,
        ended = heartbeat.join_next() => ended.and_then(Result::ok),
    };
    if let Some(error) = refused {
        // Dropped by the coordinator: whatever the slots hold was already re-queued there.
        set_health(
            shared,
            svcca_proto::READINESS_SERVICE,
            ServingStatus::NotServing,
        )
        .await;
        slots.abort_all();
        while slots.join_next().await.is_some() {}
        return Err(error);
    }
    tracing::info!(
        drain_timeout_s = config.drain_timeout.as_secs_f64(),
        "draining: no new leases"
    );
    set_health(
        shared,
        svcca_proto::READINESS_SERVICE,
        ServingStatus::NotServing,
    )
    .await;
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while slots.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout: returning unfinished leases to the coordinator");
        slots.abort_all();
    }
    heartbeat.abort_all();
    let worker_id = shared.worker_id.borrow().clone();
    if let Some(worker_id) = worker_id {
        let request = v1::DeregisterWorkerRequest {
            worker_id: worker_id.clone(),
        };
        match tokio::time::timeout(
            Duration::from_secs(5),
            shared.client.clone().deregister_worker(request),
        )
        .await
        {
            Ok(Ok(_)) => tracing::info!(%worker_id, "deregistered"),
            Ok(Err(status)) => tracing::warn!(%worker_id, error = %status, "deregistration failed"),
            Err(_) => tracing::warn!(%worker_id, "deregistration timed out"),
        }
    }
    Ok(())
}

/// Registers, retrying with backoff while the coordinator is unreachable; returns the heartbeat
/// interval to keep.
async fn register(
    shared: &Shared,
    name: &str,
    concurrency: usize,
) -> Result<Duration, ClusterError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let request = v1::RegisterWorkerRequest {
            protocol_version: svcca_proto::PROTOCOL_VERSION,
            name: name.to_string(),
            concurrency: u32::try_from(concurrency).unwrap_or(u32::MAX),
        };
        match shared.client.clone().register_worker(request).await {
            Ok(response) => {
                let response = response.into_inner();
                tracing::info!(worker_id = %response.worker_id, coordinator = %shared.url, "registered");
                shared.worker_id.send_replace(Some(response.worker_id));
                set_health(
                    shared,
                    svcca_proto::READINESS_SERVICE,
                    ServingStatus::Serving,
                )
                .await;
                return Ok(Duration::from_millis(
                    response.heartbeat_interval_ms.max(10),
                ));
            }
            Err(status) if is_refusal(status.code()) => {
                return Err(ClusterError::Refused {
                    url: shared.url.clone(),
                    message: status.message().to_string(),
                });
            }
            Err(status) => {
                tracing::warn!(coordinator = %shared.url, error = %status, retry_in_ms = backoff.as_millis() as u64, "cannot register yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(shared.max_backoff);
            }
        }
    }
}

/// Codes after which calling again cannot help: a protocol version the coordinator does not
/// speak, a token it does not accept for workers, or this worker dropped for invalid results.
fn is_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition | Code::Unauthenticated | Code::PermissionDenied
    )
}

/// Heartbeats until the coordinator refuses this worker for good; returns why.
async fn heartbeat_loop(
    shared: Arc<Shared>,
    name: String,
    concurrency: usize,
    mut period: Duration,
) -> ClusterError {
    // Whether the coordinator has had a job while this worker was there (`exit_when_done`).
    let mut saw_job = false;
    loop {
        tokio::time::sleep(period).await;
        let Some(worker_id) = shared.worker_id.borrow().clone() else {
            continue;
        };
        let lease_ids: Vec<String> = lock(&shared.held).keys().cloned().collect();
        let mut request = tonic::Request::new(v1::HeartbeatRequest {
            worker_id: worker_id.clone(),
            lease_ids,
        });
        request.set_timeout((period * 3).max(Duration::from_secs(5)));
        match shared.client.clone().heartbeat(request).await {
            Ok(response) => {
                let response = response.into_inner();
                let held = lock(&shared.held);
                for lease_id in response.revoked_lease_ids {
                    if let Some(stop) = held.get(&lease_id) {
                        // A stored permit: the task sees it even if it is not waiting yet.
                        stop.notify_one();
                    }
                }
                drop(held);
                if let Some(done) = &shared.done {
                    let stats = *lock(&shared.stats);
                    // A task run counts too: a job shorter than a heartbeat is never seen active.
                    saw_job |= response.active_jobs > 0 || stats.succeeded + stats.failed > 0;
                    if saw_job && response.active_jobs == 0 && !*done.borrow() {
                        tracing::info!(%worker_id, "the coordinator has no job left: leaving (exit when done)");
                        let _ = done.send(true);
                    }
                }
            }
            Err(status) if status.code() == Code::NotFound => {
                // The coordinator forgot us (restart, or judged lost): our leases are void.
                tracing::warn!(%worker_id, error = %status, "coordinator no longer knows this worker; registering again");
                shared.worker_id.send_replace(None);
                set_health(
                    &shared,
                    svcca_proto::READINESS_SERVICE,
                    ServingStatus::NotServing,
                )
                .await;
                match register(&shared, &name, concurrency).await {
                    Ok(p) => period = p,
                    Err(error) => {
                        tracing::error!(%error, "registration refused");
                        return error;
                    }
                }
            }
            Err(status) if is_refusal(status.code()) => {
                tracing::error!(%worker_id, error = %status, "the coordinator refuses this worker");
                return ClusterError::Refused {
                    url: shared.url.clone(),
                    message: status.message().to_string(),
                };
            }
            Err(status) => tracing::warn!(%worker_id, error = %status, "heartbeat failed"),
        }
    }
}

/// A slot leases, runs and reports one task at a time, but sends each report while it leases and
/// runs the next task: merging a result on the coordinator takes its own round trips to the cache,
/// and the slot would idle through them. At most one report is in flight per slot (results are
/// not piled up), and a slot that stops waits for it, so a drained worker deregisters only once
/// its results are in.
async fn slot_loop(shared: Arc<Shared>, slot: usize) {
    let mut reporting = ReportInFlight(None);
    lease_and_run(&shared, slot, &mut reporting).await;
    reporting.finish().await;
}

/// The report a slot is sending; aborted with the slot (a worker dropped by the coordinator, or
/// past its drain timeout, abandons its slots).
struct ReportInFlight(Option<tokio::task::JoinHandle<()>>);

impl ReportInFlight {
    async fn finish(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.await;
        }
    }

    /// Sends `report` once the report before it is in.
    async fn send(&mut self, shared: &Arc<Shared>, lease_id: String, report: Report) {
        self.finish().await;
        let shared = shared.clone();
        self.0 = Some(tokio::spawn(async move {
            send_report(&shared, &lease_id, report).await;
            lock(&shared.held).remove(&lease_id);
        }));
    }
}

impl Drop for ReportInFlight {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

async fn lease_and_run(shared: &Arc<Shared>, slot: usize, reporting: &mut ReportInFlight) {
    let mut draining = shared.draining.clone();
    let mut ids = shared.worker_id.subscribe();
    let mut backoff = Duration::from_millis(50);
    loop {
        if *draining.borrow() {
            return;
        }
        let worker_id = tokio::select! {
            id = ids.wait_for(Option::is_some) => match id { Ok(id) => id.clone().unwrap_or_default(), Err(_) => return },
            _ = draining.wait_for(|d| *d) => return,
        };
        let mut request = tonic::Request::new(v1::LeaseTaskRequest {
            worker_id: worker_id.clone(),
            wait_ms: u64::try_from(shared.lease_wait.as_millis()).unwrap_or(u64::MAX),
        });
        // Well past the long poll. Should a granted lease's reply be lost this way, the
        // heartbeat's lease list gets it re-queued.
        request.set_timeout(shared.lease_wait + Duration::from_secs(30));
        let mut client = shared.client.clone();
        let leased = tokio::select! {
            leased = client.lease_task(request) => leased,
            // A lease granted while we stop listening is returned by the deregistration.
            _ = draining.wait_for(|d| *d) => return,
        };
        match leased {
            Ok(response) => {
                backoff = Duration::from_millis(50);
                if let Some(lease) = response.into_inner().lease {
                    let lease_id = lease.lease_id.clone();
                    if let Some(report) = run_lease(shared, &worker_id, slot, lease).await {
                        reporting.send(shared, lease_id, report).await;
                    }
                }
            }
            Err(status) => {
                tracing::debug!(slot, error = %status, "lease call failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = draining.wait_for(|d| *d) => return,
                }
                backoff = (backoff * 2).min(shared.max_backoff);
            }
        }
    }
}

/// Runs a leased task; the report to send, or `None` when the task was abandoned.
async fn run_lease(
    shared: &Shared,
    worker_id: &str,
    slot: usize,
    lease: v1::Lease,
) -> Option<Report> {
    let lease_id = lease.lease_id.clone();
    let stop = Arc::new(Notify::new());
    lock(&shared.held).insert(lease_id.clone(), stop.clone());
    let task = TaskSpec {
        id: lease.task_id.clone(),
        kind: lease.task_kind.clone(),
        payload: lease.payload,
    };
    tracing::info!(slot, %lease_id, job_id = %lease.job_id, task_id = %task.id, kind = %task.kind, attempt = lease.attempt, "task started");
    let started = std::time::Instant::now();
    let outcome = execute_blocking(shared.executor.clone(), task, stop).await;
    let elapsed_s = started.elapsed().as_secs_f64();
    let Some(outcome) = outcome else {
        tracing::info!(slot, %lease_id, task_id = %lease.task_id, elapsed_s, "task abandoned: the coordinator revoked its lease (job cancelled or ended, or the lease expired)");
        lock(&shared.stats).abandoned += 1;
        lock(&shared.held).remove(&lease_id);
        return None;
    };
    let report = match outcome {
        Ok(output) => {
            tracing::info!(slot, %lease_id, task_id = %lease.task_id, elapsed_s, "task succeeded");
            lock(&shared.stats).succeeded += 1;
            shared.latency.observe(started.elapsed());
            Report::Result(v1::ReportResultRequest {
                worker_id: worker_id.to_string(),
                lease_id: lease_id.clone(),
                output: output.payload,
                task_id: lease.task_id.clone(),
            })
        }
        Err(failure) => {
            tracing::warn!(slot, %lease_id, task_id = %lease.task_id, elapsed_s, error = %failure, retryable = failure.is_retryable(), "task failed");
            lock(&shared.stats).failed += 1;
            let (retryable, message) = match failure {
                TaskFailure::Retryable { message, .. } => (true, message),
                TaskFailure::Fatal { message, .. } => (false, message),
            };
            Report::Failure(v1::ReportFailureRequest {
                worker_id: worker_id.to_string(),
                lease_id: lease_id.clone(),
                retryable,
                message,
            })
        }
    };
    Some(report)
}

/// Runs the executor's future on a blocking thread, so compute never stalls the async workers
/// that carry heartbeats. A panic becomes a fatal failure of the task. `None` when `stop` fired
/// first: the task's future is dropped at its next await point (between reads and compute
/// steps), so a cancelled job stops using the worker within a step.
async fn execute_blocking(
    executor: Arc<dyn TaskExecutor>,
    task: TaskSpec,
    stop: Arc<Notify>,
) -> Option<Result<crate::driver::TaskOutput, TaskFailure>> {
    let task_id = task.id.clone();
    let handle = tokio::runtime::Handle::current();
    let run = move || {
        handle.block_on(async move {
            tokio::select! {
                outcome = executor.execute(task) => Some(outcome),
                _ = stop.notified() => None,
            }
        })
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(outcome) => outcome,
        Err(join_error) => Some(Err(TaskFailure::Fatal {
            task_id,
            message: format!("the executor panicked: {join_error}"),
        })),
    }
}

enum Report {
    Result(v1::ReportResultRequest),
    Failure(v1::ReportFailureRequest),
}

/// Sends a report, retrying while the coordinator is unreachable (a result is worth keeping);
/// gives up when the coordinator refuses it (the lease is gone: the task runs elsewhere).
async fn send_report(shared: &Shared, lease_id: &str, report: Report) {
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=8 {
        let outcome: Result<(), Status> = match &report {
            Report::Result(r) => shared
                .client
                .clone()
                .report_result(r.clone())
                .await
                .map(|_| ()),
            Report::Failure(r) => shared
                .client
                .clone()
                .report_failure(r.clone())
                .await
                .map(|_| ()),
        };
        match outcome {
            Ok(()) => return,
            Err(status) if code_is_retryable(status.code()) => {
                tracing::warn!(%lease_id, attempt, error = %status, "report failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(shared.max_backoff);
            }
            Err(status) => {
                tracing::warn!(%lease_id, error = %status, "coordinator refused the report; dropping it");
                lock(&shared.stats).refused += 1;
                return;
            }
        }
    }
    tracing::error!(%lease_id, "could not report to the coordinator; the lease will expire and the task run again");
}

async fn set_health(shared: &Shared, service: &str, status: ServingStatus) {
    if let Some(reporter) = &shared.health {
        reporter.set_service_status(service, status).await;
    }
}

/// Serves gRPC health and `GET /metrics` on `addr` until `stop` turns true. Liveness is SERVING
/// at once.
async fn serve_health(
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
    render: crate::metrics::Render,
) -> Result<HealthReporter, ClusterError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ClusterError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ClusterError::Bind { addr, source })?;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(svcca_proto::LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(svcca_proto::READINESS_SERVICE, ServingStatus::NotServing)
        .await;
    tracing::info!(addr = %local, "health service and /metrics listening");
    tasks.spawn(async move {
        let routes = tonic::service::Routes::new(service);
        let outcome =
            crate::metrics::serve_health_and_metrics(listener, routes, render, stop).await;
        if let Err(error) = outcome {
            tracing::error!(%error, "health service failed");
        }
    });
    Ok(reporter)
}

/// The worker's metrics: its task counters and latencies, and the bytes it read.
fn metrics_render(
    stats: Arc<Mutex<WorkerStats>>,
    latency: Arc<crate::metrics::Histogram>,
) -> crate::metrics::Render {
    use futures::FutureExt;
    Arc::new(move || {
        let stats = *lock(&stats);
        let latency = latency.clone();
        async move {
            let mut page = crate::metrics::Exposition::new();
            page.counter(
                "svcca_worker_tasks_succeeded_total",
                "Tasks this worker ran to a result.",
                stats.succeeded,
            );
            page.counter(
                "svcca_worker_tasks_failed_total",
                "Tasks that failed on this worker.",
                stats.failed,
            );
            page.counter(
                "svcca_worker_tasks_abandoned_total",
                "Tasks stopped because the coordinator revoked their lease.",
                stats.abandoned,
            );
            page.counter(
                "svcca_worker_results_refused_total",
                "Results the coordinator refused (expired lease, ended job).",
                stats.refused,
            );
            page.histogram(
                "svcca_worker_task_seconds",
                "Time this worker took to run a task that succeeded.",
                &latency,
            );
            crate::metrics::storage_metrics(&mut page);
            page.finish()
        }
        .boxed()
    })
}

/// Locks a std mutex, recovering from poisoning (the data is plain counters and ids).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
