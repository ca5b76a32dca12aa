//! The tonic glue: serves the [`Scheduler`] as `svcca.v1.Coordinator`.
//!
//! Every handler reads the clock *before* it waits for the scheduler's lock (a fair, FIFO lock),
//! and the ticker does the same: heartbeats that queue up behind another call are applied with
//! their arrival times before any later tick judges a worker lost. A job driver's work (merging a
//! result, planning, writing results) runs with the lock released (see `state::turns`), so the
//! lock is only ever held for the scheduler's own bookkeeping.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use svcca_proto::v1;
use tokio::sync::{Mutex, Notify, watch};
use tonic::{Request, Response, Status};

use super::auth::{Identity, Role, Verifier, certificate_identity};
use super::state::{JobInfo, Scheduler};
use super::wire::info_to_proto;
use crate::driver::{JobDriver, JobDriverFactory, TaskFailure, TaskOutput};

pub(super) struct Shared {
    pub(super) durable: super::durable::Durable,
    pub(super) scheduler: Mutex<Scheduler>,
    pub(super) factory: Arc<dyn JobDriverFactory>,
    /// Woken whenever tasks may have become ready, for long-polling LeaseTask calls.
    pub(super) work: Notify,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) max_lease_wait: Duration,
    pub(super) verifier: Verifier,
    pub(super) max_message_size: usize,
}

/// Expires lost workers and idle jobs, and plans again jobs whose planning failed for now, a few
/// times per heartbeat interval.
pub(super) async fn tick_loop(shared: Arc<Shared>) {
    let period = {
        let scheduler = shared.scheduler.lock().await;
        (scheduler.config().heartbeat_interval / 4).max(Duration::from_millis(20))
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let due = {
            let mut scheduler = shared.scheduler.lock().await;
            scheduler.tick(now);
            scheduler.due_planning(now)
        };
        for turn in due {
            // Off the ticker: planning may take a while, and ticks must go on meanwhile.
            let shared = shared.clone();
            tokio::spawn(async move { run_turn(&shared, turn).await });
        }
        shared.work.notify_waiters();
    }
}

/// Runs a job driver's turn with the scheduler's lock released while it merges, plans or writes
/// results (see `state::turns`), then starts the after-steps of the jobs it finished.
///
/// The turn runs on a task of its own, to its end even when the call that started it goes away
/// (a worker that disconnects while its result is merged): a merge dropped half-way would leave
/// its task neither done nor queued again, and the job waiting for it for ever.
pub(super) async fn run_turn(
    shared: &Arc<Shared>,
    turn: super::state::DriverTurn,
) -> Result<(), super::state::SchedulerError> {
    let shared = shared.clone();
    let turn = tokio::spawn(async move {
        let outcome = super::state::run_turn(&mut &shared.scheduler, turn).await;
        let after = shared.scheduler.lock().await.take_after_steps();
        super::completion::spawn_after_steps(&shared, after);
        shared.work.notify_waiters();
        outcome
    });
    match turn.await {
        Ok(outcome) => outcome,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // The runtime is shutting down.
        Err(_) => Ok(()),
    }
}

/// Takes a job (restored under `job_id`, else under a new id) and plans its first tasks with the
/// scheduler's lock released; a job whose results were all stored finishes here, and its
/// completion step (analyses, report) starts. Returns the job's id.
pub(super) async fn start_job(
    shared: &Arc<Shared>,
    job_id: Option<String>,
    driver: Box<dyn JobDriver>,
    owner: Identity,
) -> String {
    let (job_id, turn) =
        shared
            .scheduler
            .lock()
            .await
            .insert_job(job_id, driver, owner, Instant::now());
    if let Some(turn) = turn {
        // A planning turn merges no result, so it cannot meet an invalid one.
        let _ = run_turn(shared, turn).await;
    }
    job_id
}

#[derive(Clone)]
pub(super) struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Who is calling, if allowed to call as `role`: the token's identity, else (no tokens
    /// configured) the client certificate's, else anonymous.
    fn authorize<T>(&self, request: &Request<T>, role: Role) -> Result<Identity, Status> {
        let identity = self
            .shared
            .verifier
            .check(request.metadata(), role)
            .inspect_err(|status| {
                tracing::warn!(role = ?role, peer = ?request.remote_addr(), error = %status.message(), "call refused");
            })?;
        if identity != Identity::Anonymous {
            return Ok(identity);
        }
        Ok(request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| certificate_identity(c.as_ref())))
            .unwrap_or(Identity::Anonymous))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl v1::coordinator_server::Coordinator for CoordinatorService {
    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        self.authorize(&request, Role::Worker)?;
        let now = Instant::now();
        let request = request.into_inner();
        let registration = self
            .shared
            .scheduler
            .lock()
            .await
            .register_worker(&request.name, request.protocol_version, now)
            .inspect_err(|error| tracing::warn!(name = %request.name, %error, "worker refused"))?;
        Ok(Response::new(v1::RegisterWorkerResponse {
            worker_id: registration.worker_id,
            protocol_version: svcca_proto::PROTOCOL_VERSION,
            heartbeat_interval_ms: millis(registration.heartbeat_interval),
            lease_timeout_ms: millis(registration.lease_timeout),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.authorize(&request, Role::Worker)?;
        let now = Instant::now();
        let request = request.into_inner();
        let mut scheduler = self.shared.scheduler.lock().await;
        let revoked_lease_ids =
            scheduler.heartbeat(&request.worker_id, Some(&request.lease_ids), now)?;
        let active_jobs = scheduler.active_jobs();
        drop(scheduler);
        self.shared.work.notify_waiters();
        Ok(Response::new(v1::HeartbeatResponse {
            revoked_lease_ids,
            active_jobs,
        }))
    }

    async fn lease_task(
        &self,
        request: Request<v1::LeaseTaskRequest>,
    ) -> Result<Response<v1::LeaseTaskResponse>, Status> {
        self.authorize(&request, Role::Worker)?;
        let request = request.into_inner();
        let wait = Duration::from_millis(request.wait_ms).min(self.shared.max_lease_wait);
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            // Register for a wake-up before looking, so a task queued in between is not missed.
            let notified = self.shared.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let leased = self
                .shared
                .scheduler
                .lock()
                .await
                .lease(&request.worker_id, Instant::now())?;
            if let Some(leased) = leased {
                return Ok(Response::new(v1::LeaseTaskResponse {
                    lease: Some(v1::Lease {
                        lease_id: leased.lease_id,
                        job_id: leased.job_id,
                        task_id: leased.task.id,
                        task_kind: leased.task.kind,
                        payload: leased.task.payload,
                        attempt: leased.attempt,
                    }),
                }));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Response::new(v1::LeaseTaskResponse { lease: None })),
                _ = shutdown.wait_for(|stop| *stop) => return Err(Status::unavailable("the coordinator is shutting down")),
            }
        }
    }

    async fn report_result(
        &self,
        request: Request<v1::ReportResultRequest>,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        self.authorize(&request, Role::Worker)?;
        let now = Instant::now();
        let request = request.into_inner();
        let output = TaskOutput {
            payload: request.output,
        };
        let taken = {
            let mut scheduler = self.shared.scheduler.lock().await;
            scheduler.take_report(
                &request.worker_id,
                &request.lease_id,
                Some(&request.task_id),
                output,
                now,
            )
        };
        self.shared.work.notify_waiters();
        let outcome = match taken {
            Ok(Some(turn)) => run_turn(&self.shared, turn).await,
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        outcome?;
        Ok(Response::new(v1::ReportResultResponse {}))
    }

    async fn report_failure(
        &self,
        request: Request<v1::ReportFailureRequest>,
    ) -> Result<Response<v1::ReportFailureResponse>, Status> {
        self.authorize(&request, Role::Worker)?;
        let now = Instant::now();
        let request = request.into_inner();
        let mut scheduler = self.shared.scheduler.lock().await;
        // The scheduler names the task from the lease.
        let task_id = String::new();
        let failure = if request.retryable {
            TaskFailure::Retryable {
                task_id,
                message: request.message,
            }
        } else {
            TaskFailure::Fatal {
                task_id,
                message: request.message,
            }
        };
        let outcome = scheduler.report_failure(&request.worker_id, &request.lease_id, failure, now);
        drop(scheduler);
        self.shared.work.notify_waiters();
        outcome?;
        Ok(Response::new(v1::ReportFailureResponse {}))
    }

    async fn deregister_worker(
        &self,
        request: Request<v1::DeregisterWorkerRequest>,
    ) -> Result<Response<v1::DeregisterWorkerResponse>, Status> {
        self.authorize(&request, Role::Worker)?;
        let now = Instant::now();
        let request = request.into_inner();
        let outcome = self
            .shared
            .scheduler
            .lock()
            .await
            .deregister_worker(&request.worker_id, now);
        self.shared.work.notify_waiters();
        outcome?;
        Ok(Response::new(v1::DeregisterWorkerResponse {}))
    }

    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let identity = self.authorize(&request, Role::Submitter)?;
        let request = request.into_inner();
        let job_id =
            super::durable::submit_or_attach(&self.shared, request.job_spec_toml, identity).await?;
        self.shared.work.notify_waiters();
        Ok(Response::new(v1::SubmitJobResponse { job_id }))
    }

    async fn job_status(
        &self,
        request: Request<v1::JobStatusRequest>,
    ) -> Result<Response<v1::JobStatusResponse>, Status> {
        self.authorize(&request, Role::Submitter)?;
        let request = request.into_inner();
        let info = self.shared.scheduler.lock().await.job(&request.job_id)?;
        Ok(Response::new(v1::JobStatusResponse {
            job: Some(info_to_proto(&info)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        self.authorize(&request, Role::Submitter)?;
        let jobs = self.shared.scheduler.lock().await.jobs();
        Ok(Response::new(v1::ListJobsResponse {
            jobs: jobs.iter().map(info_to_proto).collect(),
        }))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.authorize(&request, Role::Submitter)?;
        let request = request.into_inner();
        let events = self
            .shared
            .scheduler
            .lock()
            .await
            .subscribe(&request.job_id)?;
        Ok(Response::new(watch_stream(
            events,
            self.shared.shutdown.clone(),
        )))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let identity = self.authorize(&request, Role::Submitter)?;
        let request = request.into_inner();
        let info = self
            .shared
            .scheduler
            .lock()
            .await
            .cancel_as(&request.job_id, &identity)?;
        super::durable::persist(&self.shared, &request.job_id).await;
        Ok(Response::new(v1::CancelJobResponse {
            job: Some(info_to_proto(&info)),
        }))
    }
}

/// The job's current snapshot, then one per change, ending after a terminal state (or when the
/// coordinator shuts down, which the client sees as a stream that ended early).
fn watch_stream(events: watch::Receiver<JobInfo>, shutdown: watch::Receiver<bool>) -> WatchStream {
    struct State {
        events: watch::Receiver<JobInfo>,
        shutdown: watch::Receiver<bool>,
        first: bool,
    }
    let stream = futures::stream::unfold(
        Some(State {
            events,
            shutdown,
            first: true,
        }),
        |state| async move {
            let mut state = state?;
            if !state.first {
                tokio::select! {
                    changed = state.events.changed() => changed.ok()?,
                    _ = state.shutdown.wait_for(|stop| *stop) => return None,
                }
            }
            state.first = false;
            let info = state.events.borrow_and_update().clone();
            let event = v1::JobEvent {
                job: Some(info_to_proto(&info)),
            };
            let next = (!info.state.is_terminal()).then_some(state);
            Some((Ok(event), next))
        },
    );
    Box::pin(stream)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
