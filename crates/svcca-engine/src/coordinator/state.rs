//! The coordinator's state machine: workers, jobs, the ready queue and leases.
//!
//! [`Scheduler`] knows nothing of gRPC. It is driven by method calls, each given the current time
//! (`now`), so tests drive it with fake workers and a fake clock: a worker that stops calling
//! [`Scheduler::heartbeat`] is lost once [`Scheduler::tick`] runs past its lease timeout.
//!
//! Rules it enforces:
//! - a lease belongs to one worker; a worker that misses its heartbeats for longer than the lease
//!   timeout loses all its leases, and each lost lease counts as one retryable failed attempt;
//! - a failure is classified once, by whoever understood it (the worker's executor, or the driver):
//!   a fatal one fails the job at once with the task's message; a retryable one re-queues the task
//!   at the front, until `max_attempts` attempts have failed, which fails the job naming the task
//!   and its last error. A task that failed retryably waits out a back-off (`retry_backoff`,
//!   doubled per failure) before it is leased again, while the tasks behind it go out; a lost
//!   worker's tasks go out again at once;
//! - a job whose planner, or the writing of its results, fails with a retryable error (a store
//!   that refused a read or a write) is tried again after the next result, or after a back-off
//!   when none comes, until `max_attempts` attempts in a row have failed; a driver leaves its
//!   state as it was when planning or merging a result fails, so the retry (or the task run
//!   again) goes on from there;
//! - while no worker is registered for `worker_grace`, running jobs fail with a message saying so,
//!   instead of waiting forever;
//! - results are handed to the job's [`JobDriver`], which merges them in its own fixed order, so
//!   the order in which workers finish never changes a result;
//! - a result is checked before it is merged: it must name the leased task, and the driver must
//!   accept it ([`JobDriver::validate`]: shape, finiteness). A worker that reports an invalid
//!   result is dropped for good (its later calls are refused), every lease it held goes back to
//!   the queue as a failed attempt, and the job goes on with the other workers;
//! - job and worker ids are random (128 and 64 bits from the OS), so they cannot be guessed; a
//!   job remembers who submitted it, and only that [`Identity`] may cancel it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::CoordinatorConfig;
use super::auth::Identity;
use crate::driver::{
    AfterFinish, JobDriver, JobSummary, Progress, TaskFailure, TaskOutput, TaskSpec,
};

mod turns;

pub(crate) use turns::{DriverTurn, report, run_turn};
use turns::{Owned, SharedDriver};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Tasks are queued or leased.
    Running,
    /// Every task is done; the driver is writing the results (then the job's after-step runs,
    /// if it has one: see [`JobDriver::after_finish`]).
    Finishing,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finishing => "finishing",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed, and whether submitting it again could succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub message: String,
    pub retryable: bool,
}

/// A snapshot of a job, as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub job_id: String,
    pub state: JobState,
    pub progress: Progress,
    /// Set when `state` is [`JobState::Failed`].
    pub failure: Option<JobFailure>,
    /// Set when `state` is [`JobState::Succeeded`].
    pub summary: Option<JobSummary>,
    pub workers_alive: u32,
}

/// What a worker learns when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub worker_id: String,
    pub heartbeat_interval: Duration,
    pub lease_timeout: Duration,
}

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedTask {
    pub lease_id: String,
    pub job_id: String,
    pub task: TaskSpec,
    /// 1 for the first try.
    pub attempt: u32,
}

/// Calls the state machine refuses. Each maps to one gRPC status code (see `wire`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error(
        "worker speaks svcca protocol version {worker} but this coordinator speaks version \
         {coordinator}: run the same svcca release for the coordinator and its workers"
    )]
    VersionMismatch { worker: u32, coordinator: u32 },
    #[error(
        "unknown worker {worker_id} (lost after missed heartbeats, or the coordinator restarted): register again"
    )]
    UnknownWorker { worker_id: String },
    #[error("lease {lease_id} is not held by worker {worker_id} (it expired or was returned)")]
    LeaseNotHeld { lease_id: String, worker_id: String },
    #[error("unknown job {job_id}")]
    UnknownJob { job_id: String },
    #[error(
        "job {job_id} was submitted by another identity ({owner}); only its submitter may cancel it"
    )]
    NotJobOwner { job_id: String, owner: String },
    #[error(
        "worker {worker_id} reported an invalid result for task {task_id} and was dropped: {message}"
    )]
    InvalidResult {
        worker_id: String,
        task_id: String,
        message: String,
    },
    #[error(
        "worker {worker_id} was dropped after reporting an invalid result; restart it to register \
         again"
    )]
    WorkerDropped { worker_id: String },
}

#[derive(Debug)]
struct WorkerEntry {
    name: String,
    last_heartbeat: Instant,
    leases: BTreeSet<String>,
}

#[derive(Debug)]
struct LeaseEntry {
    job_id: String,
    worker_id: String,
    task: TaskSpec,
    /// Failed attempts before this one.
    failed_attempts: u32,
    granted_at: Instant,
}

#[derive(Debug)]
struct PendingTask {
    task: TaskSpec,
    failed_attempts: u32,
    /// A task that failed with an error worth retrying waits out its back-off before it is
    /// leased again (see [`RetryPolicy::wait`]); a lost worker's tasks go out again at once.
    not_before: Option<Instant>,
}

struct Job {
    id: String,
    /// Who submitted it: the only identity that may cancel it.
    owner: Identity,
    /// Dropped when the job ends, to free what the driver holds (merged matrices). Locked by
    /// whoever runs a step of it, never under the scheduler's lock (see `turns`).
    driver: Option<SharedDriver>,
    state: JobState,
    queue: VecDeque<PendingTask>,
    /// Leases of this job currently out with workers.
    in_flight: usize,
    progress: Progress,
    failure: Option<JobFailure>,
    summary: Option<JobSummary>,
    submitted_at: Instant,
    events: watch::Sender<JobInfo>,
    /// The after-step of a job whose results are written, until it is handed out to run.
    after: Option<AfterFinish>,
    /// Attempts at planning (`take_ready`) or at writing the results (`finish`) that failed with
    /// a retryable error, in a row, and when the next is due if no result comes in before.
    planning: PlanningRetry,
}

/// A job whose planner, or the writing of its results, failed for now (a store that refused a
/// read or a write, say): it is tried again after every result that comes in and at `due` (its
/// back-off, as a task's) when none does, until `max_attempts` attempts in a row have failed.
#[derive(Debug, Default)]
struct PlanningRetry {
    failures: u32,
    due: Option<Instant>,
}

impl Job {
    fn info(&self, workers_alive: u32) -> JobInfo {
        JobInfo {
            job_id: self.id.clone(),
            state: self.state,
            progress: self.progress,
            failure: self.failure.clone(),
            summary: self.summary.clone(),
            workers_alive,
        }
    }

    fn fail(&mut self, message: String, retryable: bool) {
        tracing::error!(job_id = %self.id, retryable, %message, "job failed");
        self.end(JobState::Failed);
        self.failure = Some(JobFailure { message, retryable });
    }

    fn end(&mut self, state: JobState) {
        self.state = state;
        self.queue.clear();
        self.driver = None;
    }
}

/// What the scheduler has done since it started, for metrics.
#[derive(Debug, Default)]
pub struct TaskStats {
    /// Results accepted and merged.
    pub tasks_done: u64,
    /// Failed attempts: failures reported by workers, lost leases, invalid results.
    pub tasks_failed: u64,
    /// Failed attempts whose task was queued again.
    pub tasks_retried: u64,
    /// Workers lost after missing heartbeats.
    pub workers_lost: u64,
    /// Workers dropped for invalid results.
    pub workers_dropped: u64,
    /// From a lease's grant to its accepted result.
    pub task_latency: crate::metrics::Histogram,
}

/// The coordinator's state: see the module documentation.
pub struct Scheduler {
    stats: TaskStats,
    config: CoordinatorConfig,
    workers: BTreeMap<String, WorkerEntry>,
    /// Keyed by submission order, so leasing serves older jobs first.
    jobs: BTreeMap<u64, Job>,
    job_seq: HashMap<String, u64>,
    leases: HashMap<String, LeaseEntry>,
    /// Workers dropped for invalid results; their calls are refused from then on.
    dropped: BTreeSet<String>,
    next_job: u64,
    next_lease: u64,
    /// Distinguishes this scheduler's worker and lease ids from those of an earlier coordinator
    /// process: after a restart, a worker still holding an old id must re-register, and a result
    /// reported under an old lease must never be taken for a new lease's.
    incarnation: String,
    /// Since when no worker has been registered (None while at least one is).
    no_workers_since: Option<Instant>,
}

/// `N` random bytes from the operating system, in hex. Ids made of these cannot be guessed from
/// others (a sequence could: `job-15` names the job after `job-14`).
fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    // The OS generator fails only where no entropy source exists at all; fall back to the
    // incarnation's clock-and-pid hash rather than to a predictable counter.
    if getrandom::fill(&mut bytes).is_err() {
        let seed = incarnation();
        let hash = crate::cache::hash_parts(&[&seed, &format!("{N}")]);
        return hash[..(2 * N).min(hash.len())].to_string();
    }
    hex::encode(bytes)
}

/// A short token that differs between coordinator processes (and schedulers in one process).
fn incarnation() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SCHEDULERS: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seed = format!(
        "{now}-{}-{}",
        std::process::id(),
        SCHEDULERS.fetch_add(1, Ordering::Relaxed)
    );
    crate::cache::hash_parts(&[&seed])[..8].to_string()
}

impl Scheduler {
    pub fn new(config: CoordinatorConfig, now: Instant) -> Self {
        Self {
            stats: TaskStats::default(),
            config,
            workers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            job_seq: HashMap::new(),
            leases: HashMap::new(),
            dropped: BTreeSet::new(),
            next_job: 1,
            next_lease: 1,
            incarnation: incarnation(),
            no_workers_since: Some(now),
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    pub fn stats(&self) -> &TaskStats {
        &self.stats
    }

    /// How many jobs are in each state.
    pub fn job_counts(&self) -> Vec<(JobState, usize)> {
        [
            JobState::Running,
            JobState::Finishing,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .map(|state| {
            (
                state,
                self.jobs.values().filter(|j| j.state == state).count(),
            )
        })
        .collect()
    }

    pub fn workers_alive(&self) -> u32 {
        u32::try_from(self.workers.len()).unwrap_or(u32::MAX)
    }

    /// True when some running job has a task waiting for a worker.
    pub fn has_ready_task(&self) -> bool {
        self.jobs
            .values()
            .any(|j| j.state == JobState::Running && !j.queue.is_empty())
    }

    pub fn register_worker(
        &mut self,
        name: &str,
        protocol_version: u32,
        now: Instant,
    ) -> Result<Registration, SchedulerError> {
        if protocol_version != svcca_proto::PROTOCOL_VERSION {
            return Err(SchedulerError::VersionMismatch {
                worker: protocol_version,
                coordinator: svcca_proto::PROTOCOL_VERSION,
            });
        }
        let worker_id = format!("worker-{}-{}", self.incarnation, random_hex::<8>());
        tracing::info!(%worker_id, name, "worker registered");
        self.workers.insert(
            worker_id.clone(),
            WorkerEntry {
                name: name.to_string(),
                last_heartbeat: now,
                leases: BTreeSet::new(),
            },
        );
        self.no_workers_since = None;
        self.publish_all();
        Ok(Registration {
            worker_id,
            heartbeat_interval: self.config.heartbeat_interval,
            lease_timeout: self.config.lease_timeout,
        })
    }

    /// Records that the worker is alive. `held_leases` (when given) lists the leases the worker
    /// is working on: a lease it does not know of, granted longer than a lease timeout ago, was
    /// lost on the way (a lease reply that never arrived) and is failed like a lost worker's.
    /// Returns the held leases that are no longer live (cancelled or ended job, expired lease),
    /// so the worker can stop working on them.
    pub fn heartbeat(
        &mut self,
        worker_id: &str,
        held_leases: Option<&[String]>,
        now: Instant,
    ) -> Result<Vec<String>, SchedulerError> {
        let worker = self.worker_mut(worker_id)?;
        worker.last_heartbeat = worker.last_heartbeat.max(now);
        let Some(held) = held_leases else {
            return Ok(Vec::new());
        };
        let revoked: Vec<String> = held
            .iter()
            .filter(|id| !self.leases.contains_key(*id))
            .cloned()
            .collect();
        let timeout = self.config.lease_timeout;
        let Some(worker) = self.workers.get(worker_id) else {
            return Ok(revoked);
        };
        let orphans: Vec<String> = worker
            .leases
            .iter()
            .filter(|id| !held.contains(id))
            .filter(|id| {
                self.leases
                    .get(*id)
                    .is_some_and(|l| now.saturating_duration_since(l.granted_at) > timeout)
            })
            .cloned()
            .collect();
        for lease_id in orphans {
            let message =
                format!("worker {worker_id} does not hold lease {lease_id} (its reply was lost)");
            self.drop_lease(&lease_id, Some(message));
        }
        Ok(revoked)
    }

    /// Hands the oldest ready task to the worker, if any (a task waiting out its back-off after a
    /// retryable failure is not ready until its time).
    pub fn lease(
        &mut self,
        worker_id: &str,
        now: Instant,
    ) -> Result<Option<LeasedTask>, SchedulerError> {
        // Asking for work is as good a sign of life as a heartbeat.
        let worker = self.worker_mut(worker_id)?;
        worker.last_heartbeat = worker.last_heartbeat.max(now);
        // The oldest job's first task that is not waiting out a back-off (those wait at the
        // front of the queue, so the search rarely goes past the first entry).
        let Some((job, at)) = self
            .jobs
            .values_mut()
            .filter(|j| j.state == JobState::Running)
            .find_map(|j| {
                let at = j
                    .queue
                    .iter()
                    .position(|p| p.not_before.is_none_or(|due| due <= now))?;
                Some((j, at))
            })
        else {
            return Ok(None);
        };
        let Some(pending) = job.queue.remove(at) else {
            return Ok(None);
        };
        job.in_flight += 1;
        let lease_id = format!("lease-{}-{}", self.incarnation, self.next_lease);
        self.next_lease += 1;
        let leased = LeasedTask {
            lease_id: lease_id.clone(),
            job_id: job.id.clone(),
            task: pending.task.clone(),
            attempt: pending.failed_attempts + 1,
        };
        tracing::debug!(%worker_id, %lease_id, job_id = %job.id, task_id = %pending.task.id, attempt = leased.attempt, "task leased");
        self.leases.insert(
            lease_id.clone(),
            LeaseEntry {
                job_id: job.id.clone(),
                worker_id: worker_id.to_string(),
                task: pending.task,
                failed_attempts: pending.failed_attempts,
                granted_at: now,
            },
        );
        if let Some(worker) = self.workers.get_mut(worker_id) {
            worker.leases.insert(lease_id);
        }
        Ok(Some(leased))
    }

    /// Takes a new job from an anonymous submitter: see [`Scheduler::submit_as`].
    pub async fn submit(&mut self, driver: Box<dyn JobDriver>, now: Instant) -> String {
        self.submit_as(driver, Identity::Anonymous, now).await
    }

    /// Takes a new job: asks its driver for the first tasks (or finishes it at once when nothing
    /// is left to do, e.g. a resumed job whose results are all stored). `owner` is the identity
    /// that may cancel it.
    pub async fn submit_as(
        &mut self,
        driver: Box<dyn JobDriver>,
        owner: Identity,
        now: Instant,
    ) -> String {
        let (job_id, turn) = self.insert_job(None, driver, owner, now);
        self.run_owned(turn, now).await;
        job_id
    }

    /// Takes back a job an earlier coordinator process recorded (see `durable`), under the id
    /// its submitter knows. Its driver was planned again from the recorded spec, so it resumes
    /// from the results that job already stored.
    pub async fn restore_as(
        &mut self,
        job_id: String,
        driver: Box<dyn JobDriver>,
        owner: Identity,
        now: Instant,
    ) -> String {
        let (job_id, turn) = self.insert_job(Some(job_id), driver, owner, now);
        self.run_owned(turn, now).await;
        job_id
    }

    /// Runs a driver's turn on this scheduler, at `now` (the coordinator runs turns with its
    /// lock released instead: see `turns`).
    async fn run_owned(&mut self, turn: Option<DriverTurn>, now: Instant) {
        if let Some(turn) = turn {
            let mut owned = Owned {
                scheduler: self,
                now,
            };
            // A planning turn merges nothing, so it cannot meet an invalid result.
            let _ = run_turn(&mut owned, turn).await;
        }
    }

    /// Records a job an earlier coordinator process ran that cannot be taken back (its spec no
    /// longer plans), as failed with `failure`, so that its submitter learns why.
    pub fn restore_failed(
        &mut self,
        job_id: String,
        owner: Identity,
        failure: JobFailure,
        now: Instant,
    ) {
        let seq = self.next_job;
        self.next_job += 1;
        let info = JobInfo {
            job_id: job_id.clone(),
            state: JobState::Failed,
            progress: Progress::default(),
            failure: Some(failure.clone()),
            summary: None,
            workers_alive: self.workers_alive(),
        };
        let (events, _) = watch::channel(info);
        self.jobs.insert(
            seq,
            Job {
                id: job_id.clone(),
                owner,
                driver: None,
                state: JobState::Failed,
                queue: VecDeque::new(),
                in_flight: 0,
                progress: Progress::default(),
                failure: Some(failure),
                summary: None,
                submitted_at: now,
                events,
                after: None,
                planning: PlanningRetry::default(),
            },
        );
        self.job_seq.insert(job_id, seq);
    }

    /// Records a new job (under `job_id` when restored, else a new random id) and returns its
    /// first planning turn, to run with [`run_turn`].
    pub(crate) fn insert_job(
        &mut self,
        job_id: Option<String>,
        driver: Box<dyn JobDriver>,
        owner: Identity,
        now: Instant,
    ) -> (String, Option<DriverTurn>) {
        let job_id = match job_id {
            Some(job_id) => {
                tracing::info!(%job_id, "job restored from its record");
                job_id
            }
            None => format!("job-{}", random_hex::<16>()),
        };
        let seq = self.next_job;
        self.next_job += 1;
        let progress = driver.progress();
        let (events, _) = watch::channel(JobInfo {
            job_id: job_id.clone(),
            state: JobState::Running,
            progress,
            failure: None,
            summary: None,
            workers_alive: self.workers_alive(),
        });
        tracing::info!(%job_id, owner = %owner, "job submitted");
        let job = Job {
            id: job_id.clone(),
            owner,
            driver: Some(std::sync::Arc::new(tokio::sync::Mutex::new(driver))),
            state: JobState::Running,
            queue: VecDeque::new(),
            in_flight: 0,
            progress,
            failure: None,
            summary: None,
            submitted_at: now,
            events,
            after: None,
            planning: PlanningRetry::default(),
        };
        self.jobs.insert(seq, job);
        self.job_seq.insert(job_id.clone(), seq);
        (job_id, self.plan_turn(seq))
    }

    /// A worker finished a leased task. Results for leases that are no longer held (expired,
    /// returned, or their job ended) are refused and dropped: the task was or will be run again.
    pub async fn report_result(
        &mut self,
        worker_id: &str,
        lease_id: &str,
        output: TaskOutput,
        now: Instant,
    ) -> Result<(), SchedulerError> {
        self.report_checked_result(worker_id, lease_id, None, output, now)
            .await
    }

    /// [`Scheduler::report_result`], where the worker also names the task the output is for
    /// (`task_id`, checked against the lease). An output that names another task, or that the
    /// job's driver finds invalid, drops the worker: see the module documentation.
    pub async fn report_checked_result(
        &mut self,
        worker_id: &str,
        lease_id: &str,
        task_id: Option<&str>,
        output: TaskOutput,
        now: Instant,
    ) -> Result<(), SchedulerError> {
        let mut owned = Owned {
            scheduler: self,
            now,
        };
        report(&mut owned, worker_id, lease_id, task_id, output).await
    }

    /// A worker's task failed; the worker classified the failure (the task id in `failure` is
    /// replaced by the lease's).
    pub fn report_failure(
        &mut self,
        worker_id: &str,
        lease_id: &str,
        failure: TaskFailure,
        now: Instant,
    ) -> Result<(), SchedulerError> {
        let lease = self.take_lease(worker_id, lease_id, now)?;
        // The worker names the lease; the task is the scheduler's to name.
        let task_id = lease.task.id.clone();
        let failure = match failure {
            TaskFailure::Retryable { message, .. } => TaskFailure::Retryable { task_id, message },
            TaskFailure::Fatal { message, .. } => TaskFailure::Fatal { task_id, message },
        };
        let Some(seq) = self.job_seq.get(&lease.job_id).copied() else {
            return Ok(());
        };
        let policy = RetryPolicy::of(&self.config);
        if let Some(job) = self.jobs.get_mut(&seq) {
            job.in_flight = job.in_flight.saturating_sub(1);
            if job.state == JobState::Running {
                tracing::warn!(%worker_id, %lease_id, job_id = %job.id, error = %failure, "task failed");
                failed_attempt(job, lease, &failure, policy, Some(now), &mut self.stats);
            }
        }
        self.publish(seq);
        Ok(())
    }

    /// A worker leaves on purpose (drain): its leases go back to the front of their queues without
    /// counting as failed attempts.
    pub fn deregister_worker(
        &mut self,
        worker_id: &str,
        now: Instant,
    ) -> Result<(), SchedulerError> {
        let worker =
            self.workers
                .remove(worker_id)
                .ok_or_else(|| SchedulerError::UnknownWorker {
                    worker_id: worker_id.to_string(),
                })?;
        tracing::info!(%worker_id, name = %worker.name, returned = worker.leases.len(), "worker deregistered");
        for lease_id in worker.leases {
            self.drop_lease(&lease_id, None);
        }
        if self.workers.is_empty() {
            self.no_workers_since = Some(now);
        }
        self.publish_all();
        Ok(())
    }

    /// Drops a worker that reported an invalid result on `lease`: the lease is a failed attempt of
    /// its task, the worker's other leases go back to the queue the same way, and the worker's
    /// later calls are refused. Returns the error that tells the worker why.
    fn reject_worker(
        &mut self,
        worker_id: &str,
        lease: LeaseEntry,
        message: String,
        now: Instant,
    ) -> SchedulerError {
        let task_id = lease.task.id.clone();
        tracing::warn!(%worker_id, task_id = %lease.task.id, job_id = %lease.job_id, %message, "invalid result: dropping the worker");
        let failure = format!("worker {worker_id} reported an invalid result: {message}");
        self.dropped.insert(worker_id.to_string());
        self.stats.workers_dropped += 1;
        if let Some(worker) = self.workers.remove(worker_id) {
            for lease_id in worker.leases {
                self.drop_lease(&lease_id, Some(failure.clone()));
            }
        }
        // The rejected lease itself was already taken from the worker.
        let policy = RetryPolicy::of(&self.config);
        if let Some(seq) = self.job_seq.get(&lease.job_id).copied() {
            if let Some(job) = self.jobs.get_mut(&seq) {
                job.in_flight = job.in_flight.saturating_sub(1);
                if job.state == JobState::Running {
                    let attempt = TaskFailure::Retryable {
                        task_id: lease.task.id.clone(),
                        message: failure,
                    };
                    failed_attempt(job, lease, &attempt, policy, None, &mut self.stats);
                }
            }
            self.publish(seq);
        }
        if self.workers.is_empty() {
            self.no_workers_since = Some(now);
        }
        self.publish_all();
        SchedulerError::InvalidResult {
            worker_id: worker_id.to_string(),
            task_id,
            message,
        }
    }

    /// Cancels a job for `caller`, who must be the identity that submitted it (anyone may cancel
    /// a job that an anonymous caller submitted: there was no identity to keep).
    pub fn cancel_as(
        &mut self,
        job_id: &str,
        caller: &Identity,
    ) -> Result<JobInfo, SchedulerError> {
        let seq = self.seq_of(job_id)?;
        if let Some(job) = self.jobs.get(&seq)
            && job.owner != Identity::Anonymous
            && job.owner != *caller
        {
            tracing::warn!(%job_id, caller = %caller, owner = %job.owner, "cancel refused: not the job's submitter");
            return Err(SchedulerError::NotJobOwner {
                job_id: job_id.to_string(),
                owner: job.owner.to_string(),
            });
        }
        self.cancel(job_id)
    }

    /// Cancels a job; a job that already ended is left as it is.
    pub fn cancel(&mut self, job_id: &str) -> Result<JobInfo, SchedulerError> {
        let seq = self.seq_of(job_id)?;
        let lease_ids: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, l)| l.job_id == job_id)
            .map(|(id, _)| id.clone())
            .collect();
        let mut cancelled = false;
        if let Some(job) = self.jobs.get_mut(&seq)
            && !job.state.is_terminal()
        {
            tracing::info!(%job_id, "job cancelled");
            job.end(JobState::Cancelled);
            cancelled = true;
        }
        if cancelled {
            for lease_id in lease_ids {
                self.forget_lease(&lease_id);
            }
        }
        self.publish(seq);
        self.job(job_id)
    }

    /// Advances time: workers silent for longer than the lease timeout are lost (their leases
    /// fail as retryable attempts), and running jobs fail once no worker has been registered for
    /// the grace period.
    pub fn tick(&mut self, now: Instant) {
        let timeout = self.config.lease_timeout;
        let lost: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_heartbeat) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for worker_id in lost {
            let Some(worker) = self.workers.remove(&worker_id) else {
                continue;
            };
            let silent = now.saturating_duration_since(worker.last_heartbeat);
            tracing::warn!(%worker_id, name = %worker.name, silent_s = silent.as_secs_f64(), leases = worker.leases.len(), "worker lost");
            self.stats.workers_lost += 1;
            for lease_id in worker.leases {
                let message = format!(
                    "worker {worker_id} ({}) was lost: no heartbeat for {:.1}s",
                    worker.name,
                    silent.as_secs_f64()
                );
                self.drop_lease(&lease_id, Some(message));
            }
            if self.workers.is_empty() {
                self.no_workers_since = Some(now);
            }
            self.publish_all();
        }

        let Some(since) = self.no_workers_since else {
            return;
        };
        let grace = self.config.worker_grace;
        let mut failed = Vec::new();
        for (seq, job) in &mut self.jobs {
            if job.state != JobState::Running {
                continue;
            }
            let waiting_since = since.max(job.submitted_at);
            if now.saturating_duration_since(waiting_since) >= grace {
                let pending = job.queue.len() + job.in_flight;
                let message = format!(
                    "no worker was connected for {:.0}s (the worker grace period) while job {} had \
                         {pending} task(s) pending; start workers with `svcca worker --coordinator URL` \
                         or raise the coordinator's --worker-grace",
                    grace.as_secs_f64(),
                    job.id
                );
                job.fail(message, true);
                failed.push(*seq);
            }
        }
        for seq in failed {
            self.publish(seq);
        }
    }

    /// Plans again the running jobs whose planning failed for now and is due (see
    /// [`PlanningRetry`]); the coordinator does this with [`Scheduler::tick`], running the turns
    /// of [`Scheduler::due_planning`] with its lock released.
    pub async fn retry_planning(&mut self, now: Instant) {
        for turn in self.due_planning(now) {
            self.run_owned(Some(turn), now).await;
        }
    }

    /// How many jobs have not ended (running, or finishing).
    pub fn active_jobs(&self) -> u32 {
        let active = self
            .jobs
            .values()
            .filter(|j| !j.state.is_terminal())
            .count();
        u32::try_from(active).unwrap_or(u32::MAX)
    }

    /// The after-steps of jobs whose results were written since the last call, with their job
    /// ids: the caller runs each without holding the scheduler, then reports its outcome with
    /// [`Scheduler::after_step_done`].
    pub fn take_after_steps(&mut self) -> Vec<(String, AfterFinish)> {
        self.jobs
            .values_mut()
            .filter_map(|job| job.after.take().map(|step| (job.id.clone(), step)))
            .collect()
    }

    /// A job's after-step ended: the job succeeds (with the step's summary lines) or fails. A
    /// job that ended meanwhile (cancelled) stays as it is.
    pub fn after_step_done(&mut self, job_id: &str, outcome: Result<Vec<String>, TaskFailure>) {
        let Ok(seq) = self.seq_of(job_id) else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        if job.state != JobState::Finishing {
            return;
        }
        match outcome {
            Ok(lines) => {
                if let Some(summary) = job.summary.as_mut() {
                    summary.lines.extend(lines);
                }
                tracing::info!(%job_id, "job succeeded");
                job.end(JobState::Succeeded);
            }
            Err(failure) => {
                job.summary = None;
                job.fail(failure.to_string(), failure.is_retryable());
            }
        }
        self.publish(seq);
    }

    pub fn job(&self, job_id: &str) -> Result<JobInfo, SchedulerError> {
        let seq = self.seq_of(job_id)?;
        let job = self
            .jobs
            .get(&seq)
            .ok_or_else(|| SchedulerError::UnknownJob {
                job_id: job_id.to_string(),
            })?;
        Ok(job.info(self.workers_alive()))
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Vec<JobInfo> {
        self.jobs
            .values()
            .map(|j| j.info(self.workers_alive()))
            .collect()
    }

    /// A receiver that sees every change of the job (its current value first).
    pub fn subscribe(&self, job_id: &str) -> Result<watch::Receiver<JobInfo>, SchedulerError> {
        let seq = self.seq_of(job_id)?;
        let job = self
            .jobs
            .get(&seq)
            .ok_or_else(|| SchedulerError::UnknownJob {
                job_id: job_id.to_string(),
            })?;
        Ok(job.events.subscribe())
    }

    fn seq_of(&self, job_id: &str) -> Result<u64, SchedulerError> {
        self.job_seq
            .get(job_id)
            .copied()
            .ok_or_else(|| SchedulerError::UnknownJob {
                job_id: job_id.to_string(),
            })
    }

    fn worker_mut(&mut self, worker_id: &str) -> Result<&mut WorkerEntry, SchedulerError> {
        if self.dropped.contains(worker_id) {
            return Err(SchedulerError::WorkerDropped {
                worker_id: worker_id.to_string(),
            });
        }
        self.workers
            .get_mut(worker_id)
            .ok_or_else(|| SchedulerError::UnknownWorker {
                worker_id: worker_id.to_string(),
            })
    }

    /// Removes a lease that `worker_id` reports on.
    fn take_lease(
        &mut self,
        worker_id: &str,
        lease_id: &str,
        now: Instant,
    ) -> Result<LeaseEntry, SchedulerError> {
        let not_held = || SchedulerError::LeaseNotHeld {
            lease_id: lease_id.to_string(),
            worker_id: worker_id.to_string(),
        };
        let worker = self.worker_mut(worker_id)?;
        worker.last_heartbeat = worker.last_heartbeat.max(now);
        if !worker.leases.remove(lease_id) {
            return Err(not_held());
        }
        self.leases.remove(lease_id).ok_or_else(not_held)
    }

    /// Takes a lease away from its worker. With `failure`, the attempt counts as a retryable
    /// failure; without, the task goes back to the queue as if never leased.
    fn drop_lease(&mut self, lease_id: &str, failure: Option<String>) {
        let Some(lease) = self.forget_lease(lease_id) else {
            return;
        };
        let Some(seq) = self.job_seq.get(&lease.job_id).copied() else {
            return;
        };
        let policy = RetryPolicy::of(&self.config);
        if let Some(job) = self.jobs.get_mut(&seq) {
            job.in_flight = job.in_flight.saturating_sub(1);
            if job.state == JobState::Running {
                match failure {
                    Some(message) => {
                        let failure = TaskFailure::Retryable {
                            task_id: lease.task.id.clone(),
                            message,
                        };
                        failed_attempt(job, lease, &failure, policy, None, &mut self.stats);
                    }
                    None => job.queue.push_front(PendingTask {
                        task: lease.task,
                        failed_attempts: lease.failed_attempts,
                        not_before: None,
                    }),
                }
            }
        }
        self.publish(seq);
    }

    fn forget_lease(&mut self, lease_id: &str) -> Option<LeaseEntry> {
        let lease = self.leases.remove(lease_id)?;
        if let Some(worker) = self.workers.get_mut(&lease.worker_id) {
            worker.leases.remove(lease_id);
        }
        Some(lease)
    }

    fn publish(&self, seq: u64) {
        if let Some(job) = self.jobs.get(&seq) {
            let info = job.info(self.workers_alive());
            job.events.send_if_modified(|current| {
                let changed = *current != info;
                *current = info;
                changed
            });
        }
    }

    fn publish_all(&self) {
        let seqs: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.state.is_terminal())
            .map(|(s, _)| *s)
            .collect();
        for seq in seqs {
            self.publish(seq);
        }
    }
}

/// The attempt of `lease` failed: fail the job, or queue its task again. With `failed_at`, the
/// task failed itself and waits out its back-off from then; without, it goes out again at once
/// (its worker was lost or dropped).
fn failed_attempt(
    job: &mut Job,
    lease: LeaseEntry,
    failure: &TaskFailure,
    policy: RetryPolicy,
    failed_at: Option<Instant>,
    stats: &mut TaskStats,
) {
    let max_attempts = policy.max_attempts;
    let failed_attempts = lease.failed_attempts + 1;
    let task = lease.task;
    stats.tasks_failed += 1;
    let requeued = failure.is_retryable() && failed_attempts < max_attempts;
    if requeued {
        stats.tasks_retried += 1;
    }
    match failure {
        TaskFailure::Fatal { .. } => job.fail(failure.to_string(), false),
        TaskFailure::Retryable { message, .. } if failed_attempts >= max_attempts => job.fail(
            format!(
                "task {} ({}) failed {failed_attempts} time(s), the limit; last error: {message}",
                task.id, task.kind
            ),
            true,
        ),
        TaskFailure::Retryable { .. } => job.queue.push_front(PendingTask {
            task,
            failed_attempts,
            not_before: failed_at.map(|at| at + policy.wait(failed_attempts)),
        }),
    }
}

/// How often and how patiently something that failed with an error worth retrying is tried
/// again (from [`CoordinatorConfig`]): a task, a job's planning, the writing of its results.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    max_attempts: u32,
    backoff: Duration,
}

impl RetryPolicy {
    fn of(config: &CoordinatorConfig) -> Self {
        RetryPolicy {
            max_attempts: config.max_attempts,
            backoff: config.retry_backoff,
        }
    }

    /// The wait after `failures` failures in a row: the back-off, doubled after each failure, at
    /// most 30 seconds.
    fn wait(self, failures: u32) -> Duration {
        self.backoff
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(Duration::from_secs(30))
    }
}
