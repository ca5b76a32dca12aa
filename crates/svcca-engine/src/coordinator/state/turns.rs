//! A job's driver runs its steps (merging a result, planning, writing the results) without the
//! scheduler's lock.
//!
//! Merging a result reads and writes the cache: with a cache in an object store, a merge is a few
//! round trips, and the results written at the end can take minutes. Were the scheduler locked
//! meanwhile, every lease, heartbeat and report of every job would wait for it. So each job's
//! driver sits behind a lock of its own ([`SharedDriver`]), and a step of it is a [`DriverTurn`]
//! in three parts:
//!
//! 1. under the scheduler's lock, the turn is taken: for a result, its lease is removed from the
//!    worker (the task still counts as in flight, so no one takes the job for stalled or done);
//! 2. with the driver's lock and not the scheduler's, the driver validates and merges the result,
//!    then says what became ready ([`JobDriver::take_ready`]), whether all is done and its progress;
//! 3. under the scheduler's lock again, still holding the driver's, what the driver said is
//!    applied: tasks queued, the task no longer in flight, a failed attempt, the job finishing.
//!
//! Holding the driver's lock until (3) is done applies turns in the order the driver took them, so
//! the scheduler never acts on a stale view (a job taken for stalled by an older turn's answer).
//! The scheduler's lock is never held while waiting for a driver's: the order is always driver,
//! then scheduler, so the two cannot deadlock. The driver merges in its own fixed order, so the
//! order in which turns come does not change a result.
//!
//! A job that is all done is finished the same way: its state becomes `finishing` in (3), the
//! driver writes the results with the scheduler free, and the outcome is applied under its lock.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::{
    Job, JobState, LeaseEntry, PendingTask, PlanningRetry, RetryPolicy, Scheduler, SchedulerError,
    failed_attempt,
};
use crate::driver::{
    AfterFinish, JobDriver, JobSummary, Progress, TaskFailure, TaskOutput, TaskSpec,
};

/// A job's driver, locked by whoever runs a step of it (see the module documentation).
pub(crate) type SharedDriver = Arc<tokio::sync::Mutex<Box<dyn JobDriver>>>;

/// Where the scheduler is: owned by the caller (tests and benchmarks drive it by hand, on a fake
/// clock), or behind the coordinator's lock.
pub(crate) trait SchedulerAccess: Send {
    /// The time to act at.
    fn now(&self) -> Instant;

    /// Runs `f` with the scheduler (under its lock, where it has one).
    fn with<R: Send>(
        &mut self,
        f: impl FnOnce(&mut Scheduler) -> R + Send,
    ) -> impl Future<Output = R> + Send;
}

/// A scheduler held by the caller, at a fixed time.
pub(crate) struct Owned<'a> {
    pub(crate) scheduler: &'a mut Scheduler,
    pub(crate) now: Instant,
}

impl SchedulerAccess for Owned<'_> {
    fn now(&self) -> Instant {
        self.now
    }

    fn with<R: Send>(
        &mut self,
        f: impl FnOnce(&mut Scheduler) -> R + Send,
    ) -> impl Future<Output = R> + Send {
        std::future::ready(f(self.scheduler))
    }
}

impl SchedulerAccess for &tokio::sync::Mutex<Scheduler> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn with<R: Send>(
        &mut self,
        f: impl FnOnce(&mut Scheduler) -> R + Send,
    ) -> impl Future<Output = R> + Send {
        let scheduler = *self;
        async move { f(&mut *scheduler.lock().await) }
    }
}

/// A step of a job's driver, taken under the scheduler's lock and run without it.
pub(crate) struct DriverTurn {
    seq: u64,
    driver: SharedDriver,
    step: Step,
}

enum Step {
    /// Checks and merges a worker's result, then plans.
    Merge {
        worker_id: String,
        lease: LeaseEntry,
        output: TaskOutput,
    },
    /// Plans: a job's first tasks, or planning again after a failure.
    Plan,
}

/// What the driver said in a turn.
struct Said {
    /// For a merge: the driver's verdict on the result.
    merged: Option<Merged>,
    /// What became ready, unless the merge failed.
    planned: Option<Planned>,
}

enum Merged {
    Accepted,
    /// The result is not what the task gives: the worker that sent it is dropped.
    Invalid(String),
    Failed(TaskFailure),
}

struct Planned {
    ready: Result<Vec<TaskSpec>, TaskFailure>,
    progress: Progress,
    all_done: bool,
}

/// A job that is all done: its results are to be written.
struct FinishTurn {
    seq: u64,
}

struct Finished {
    outcome: Result<JobSummary, TaskFailure>,
    progress: Progress,
    after: Option<AfterFinish>,
}

impl DriverTurn {
    async fn run(&mut self, driver: &mut dyn JobDriver) -> Said {
        let merged = match &mut self.step {
            Step::Plan => None,
            Step::Merge { lease, output, .. } => {
                let task_id = lease.task.id.clone();
                // The output moves into the driver; what the step keeps is the lease.
                let output = std::mem::replace(
                    output,
                    TaskOutput {
                        payload: Vec::new(),
                    },
                );
                Some(match driver.validate(&task_id, &output) {
                    Err(message) => Merged::Invalid(message),
                    Ok(()) => match driver.complete(task_id, output).await {
                        Ok(()) => Merged::Accepted,
                        Err(failure) => Merged::Failed(failure),
                    },
                })
            }
        };
        let planned = match merged {
            None | Some(Merged::Accepted) => {
                let ready = driver.take_ready().await;
                Some(Planned {
                    ready,
                    progress: driver.progress(),
                    all_done: driver.all_done(),
                })
            }
            Some(_) => None,
        };
        Said { merged, planned }
    }
}

/// Runs `turn`: the driver's step without the scheduler, what it said applied with it, and the
/// job's results written when it is all done. An invalid result is the one error.
pub(crate) async fn run_turn(
    access: &mut impl SchedulerAccess,
    mut turn: DriverTurn,
) -> Result<(), SchedulerError> {
    let mut driver = turn.driver.clone().lock_owned().await;
    let said = turn.run(&mut **driver).await;
    let now = access.now();
    let finish = access.with(move |s| s.apply_turn(turn, said, now)).await?;
    let Some(finish) = finish else {
        return Ok(());
    };
    let outcome = driver.finish().await;
    let after = match &outcome {
        Ok(summary) => driver.after_finish(summary),
        Err(_) => None,
    };
    let finished = Finished {
        outcome,
        progress: driver.progress(),
        after,
    };
    let now = access.now();
    access
        .with(move |s| s.apply_finished(finish, finished, now))
        .await;
    Ok(())
}

/// A worker reports the result of `lease_id` (naming its task, where it does): the lease is taken
/// and the result merged (see [`Scheduler::report_checked_result`]).
pub(crate) async fn report(
    access: &mut impl SchedulerAccess,
    worker_id: &str,
    lease_id: &str,
    task_id: Option<&str>,
    output: TaskOutput,
) -> Result<(), SchedulerError> {
    let now = access.now();
    let turn = access
        .with(|s| s.take_report(worker_id, lease_id, task_id, output, now))
        .await?;
    match turn {
        Some(turn) => run_turn(access, turn).await,
        None => Ok(()),
    }
}

impl Scheduler {
    /// Part 1 of a result's turn: takes the lease from its worker. `None` when the job no longer
    /// runs (its result is dropped). A result that names another task than the lease's drops the
    /// worker at once.
    pub(crate) fn take_report(
        &mut self,
        worker_id: &str,
        lease_id: &str,
        task_id: Option<&str>,
        output: TaskOutput,
        now: Instant,
    ) -> Result<Option<DriverTurn>, SchedulerError> {
        let lease = self.take_lease(worker_id, lease_id, now)?;
        if let Some(named) = task_id
            && named != lease.task.id
        {
            let message = format!(
                "the output names task `{named}` but lease {lease_id} is for task `{}`",
                lease.task.id
            );
            return Err(self.reject_worker(worker_id, lease, message, now));
        }
        let Some(seq) = self.job_seq.get(&lease.job_id).copied() else {
            return Ok(None);
        };
        let Some(job) = self.jobs.get_mut(&seq) else {
            return Ok(None);
        };
        let driver = match (&job.driver, job.state) {
            (Some(driver), JobState::Running) => driver.clone(),
            _ => {
                job.in_flight = job.in_flight.saturating_sub(1);
                return Ok(None);
            }
        };
        tracing::debug!(%worker_id, %lease_id, job_id = %job.id, task_id = %lease.task.id, "task done");
        Ok(Some(DriverTurn {
            seq,
            driver,
            step: Step::Merge {
                worker_id: worker_id.to_string(),
                lease,
                output,
            },
        }))
    }

    /// Part 1 of a planning turn, for a running job (`None` otherwise).
    pub(super) fn plan_turn(&self, seq: u64) -> Option<DriverTurn> {
        let job = self.jobs.get(&seq)?;
        let driver = job.driver.as_ref()?;
        (job.state == JobState::Running).then(|| DriverTurn {
            seq,
            driver: driver.clone(),
            step: Step::Plan,
        })
    }

    /// The planning turns of running jobs whose failed planning is due again (see
    /// [`PlanningRetry`]); the coordinator takes them with each [`Scheduler::tick`].
    pub(crate) fn due_planning(&mut self, now: Instant) -> Vec<DriverTurn> {
        let due: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.state == JobState::Running && j.planning.due.is_some_and(|due| due <= now)
            })
            .map(|(seq, _)| *seq)
            .collect();
        due.into_iter()
            .filter_map(|seq| {
                if let Some(job) = self.jobs.get_mut(&seq) {
                    job.planning.due = None;
                }
                self.plan_turn(seq)
            })
            .collect()
    }

    /// Part 3 of a turn: applies what the driver said. Returns the job's finishing turn when it
    /// is all done.
    fn apply_turn(
        &mut self,
        turn: DriverTurn,
        said: Said,
        now: Instant,
    ) -> Result<Option<FinishTurn>, SchedulerError> {
        let seq = turn.seq;
        let policy = RetryPolicy::of(&self.config);
        let mut finish = None;
        match (turn.step, said.merged) {
            (
                Step::Merge {
                    worker_id, lease, ..
                },
                Some(Merged::Invalid(message)),
            ) => {
                // The worker is dropped even when the job ended meanwhile.
                return Err(self.reject_worker(&worker_id, lease, message, now));
            }
            (Step::Merge { lease, .. }, merged) => {
                let Some(job) = self.jobs.get_mut(&seq) else {
                    return Ok(None);
                };
                job.in_flight = job.in_flight.saturating_sub(1);
                if job.state == JobState::Running {
                    match merged {
                        Some(Merged::Failed(failure)) => {
                            failed_attempt(job, lease, &failure, policy, Some(now), &mut self.stats)
                        }
                        _ => {
                            self.stats.tasks_done += 1;
                            self.stats
                                .task_latency
                                .observe(now.saturating_duration_since(lease.granted_at));
                        }
                    }
                }
            }
            (Step::Plan, _) => {}
        }
        if let (Some(planned), Some(job)) = (said.planned, self.jobs.get_mut(&seq))
            && job.state == JobState::Running
            && apply_planned(job, planned, now, policy)
        {
            finish = Some(FinishTurn { seq });
        }
        self.publish(seq);
        Ok(finish)
    }

    /// The results of a job are written (or failed to be): applies the outcome, unless the job
    /// ended meanwhile (cancelled).
    fn apply_finished(&mut self, finish: FinishTurn, finished: Finished, now: Instant) {
        let seq = finish.seq;
        let policy = RetryPolicy::of(&self.config);
        let Some(job) = self.jobs.get_mut(&seq) else {
            return;
        };
        if job.state != JobState::Finishing {
            return;
        }
        job.progress = finished.progress;
        match finished.outcome {
            Ok(summary) if finished.after.is_some() => {
                // Run by the caller with the scheduler free (see `take_after_steps`); the job stays
                // `finishing` until then.
                tracing::info!(job_id = %job.id, output_url = %summary.output_url, "results written; running the job's after-step");
                job.summary = Some(summary);
                job.after = finished.after;
                job.driver = None;
            }
            Ok(summary) => {
                tracing::info!(job_id = %job.id, output_url = %summary.output_url, "job succeeded");
                job.summary = Some(summary);
                job.end(JobState::Succeeded);
            }
            Err(failure) => {
                give_up_or_retry(job, &failure, "writing the job's results", now, policy);
            }
        }
        self.publish(seq);
    }
}

/// After a submission or a merged result (or when a failed planning is due again): queues newly
/// ready tasks. True when the job is all done and its results are to be written (its state is
/// then `finishing`).
fn apply_planned(job: &mut Job, planned: Planned, now: Instant, policy: RetryPolicy) -> bool {
    job.progress = planned.progress;
    match planned.ready {
        Ok(tasks) => {
            if !planned.all_done {
                // Planning works again; a job that is done carries its count into writing the
                // results, so that a write that keeps failing is not retried for ever.
                job.planning = PlanningRetry::default();
            }
            job.queue.extend(tasks.into_iter().map(|task| PendingTask {
                task,
                failed_attempts: 0,
                not_before: None,
            }));
        }
        Err(failure) => {
            give_up_or_retry(job, &failure, "planning the job's next tasks", now, policy);
            return false;
        }
    }
    if !job.queue.is_empty() || job.in_flight > 0 {
        return false;
    }
    if !planned.all_done {
        // Nothing queued, nothing running, yet not done: waiting would hang for ever.
        let message = format!(
            "job {} stalled: its planner made no task ready but reports unfinished work \
             ({} of {} tasks done); this is a bug in the job driver",
            job.id, job.progress.done, job.progress.total
        );
        job.fail(message, false);
        return false;
    }
    job.state = JobState::Finishing;
    let workers_alive = job.events.borrow().workers_alive;
    let info = job.info(workers_alive);
    job.events.send_replace(info);
    tracing::info!(job_id = %job.id, "all tasks done; writing results");
    true
}

/// Planning or writing the results failed: a retryable failure leaves the job running, to be
/// tried again after the next result or at its back-off (see [`PlanningRetry`]), until
/// `max_attempts` attempts in a row have failed; any other fails the job.
fn give_up_or_retry(
    job: &mut Job,
    failure: &TaskFailure,
    what: &str,
    now: Instant,
    policy: RetryPolicy,
) {
    let retryable = failure.is_retryable();
    if retryable && job.planning.failures + 1 < policy.max_attempts {
        job.planning.failures += 1;
        let wait = policy.wait(job.planning.failures);
        job.planning.due = Some(now + wait);
        // A job whose results could not be written goes back to running until they are.
        job.state = JobState::Running;
        tracing::warn!(
            job_id = %job.id,
            attempt = job.planning.failures,
            retry_in_s = wait.as_secs_f64(),
            error = %failure,
            "{what} failed; trying again"
        );
        return;
    }
    let message = if job.planning.failures > 0 {
        format!(
            "{what} failed {} time(s) in a row, the limit; last error: {failure}",
            job.planning.failures + 1
        )
    } else {
        failure.to_string()
    };
    job.fail(message, retryable);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use futures::FutureExt;
    use futures::future::BoxFuture;
    use tokio::sync::{Mutex, Semaphore};

    use super::*;
    use crate::coordinator::auth::Identity;
    use crate::coordinator::testkit::{SumDriver, SumExecutor, SumSpec, sum_from_summary};
    use crate::coordinator::{CoordinatorConfig, LeasedTask};
    use crate::driver::JobSummary;

    /// A sum job whose merges wait at a gate: each `complete` takes one permit.
    struct GatedDriver {
        inner: SumDriver,
        gate: Arc<Semaphore>,
    }

    impl JobDriver for GatedDriver {
        fn take_ready(&mut self) -> BoxFuture<'_, Result<Vec<TaskSpec>, TaskFailure>> {
            self.inner.take_ready()
        }

        fn complete(
            &mut self,
            task_id: String,
            output: TaskOutput,
        ) -> BoxFuture<'_, Result<(), TaskFailure>> {
            let gate = self.gate.clone();
            async move {
                gate.acquire().await.expect("gate open").forget();
                self.inner.complete(task_id, output).await
            }
            .boxed()
        }

        fn validate(&self, task_id: &str, output: &TaskOutput) -> Result<(), String> {
            self.inner.validate(task_id, output)
        }

        fn all_done(&self) -> bool {
            self.inner.all_done()
        }

        fn finish(&mut self) -> BoxFuture<'_, Result<JobSummary, TaskFailure>> {
            self.inner.finish()
        }

        fn progress(&self) -> Progress {
            self.inner.progress()
        }
    }

    /// The scheduler answers at once, or the test fails.
    async fn promptly<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), future)
            .await
            .unwrap_or_else(|_| panic!("{what} waited for a merge"))
    }

    /// Runs a leased task of the sum job and reports its result, as a worker does.
    async fn run_and_report(
        scheduler: &Mutex<Scheduler>,
        worker: &str,
        lease: &LeasedTask,
    ) -> Result<(), SchedulerError> {
        let output = SumExecutor::new().run(&lease.task).unwrap();
        let task_id = Some(lease.task.id.as_str());
        report(&mut &*scheduler, worker, &lease.lease_id, task_id, output).await
    }

    #[tokio::test]
    async fn the_scheduler_serves_while_a_driver_merges_and_applies_turns_in_order() {
        let spec = SumSpec::new(3);
        let gate = Arc::new(Semaphore::new(0));
        let now = Instant::now();
        let scheduler = Mutex::new(Scheduler::new(CoordinatorConfig::default(), now));
        let (worker, job_id, turn) = {
            let mut s = scheduler.lock().await;
            let worker = s
                .register_worker("w", svcca_proto::PROTOCOL_VERSION, now)
                .unwrap()
                .worker_id;
            let driver = GatedDriver {
                inner: SumDriver::new(spec.clone()),
                gate: gate.clone(),
            };
            let (job_id, turn) = s.insert_job(None, Box::new(driver), Identity::Anonymous, now);
            (worker, job_id, turn)
        };
        run_turn(&mut &scheduler, turn.expect("a first planning turn"))
            .await
            .unwrap();
        let mut leased = Vec::new();
        while let Some(lease) = scheduler.lock().await.lease(&worker, now).unwrap() {
            leased.push(lease);
        }
        assert!(
            leased.len() >= 2,
            "the sum job has tasks to run side by side"
        );

        // Every result reported at once: the first merge waits at the gate, holding the driver;
        // the others wait for the driver.
        let reports: Vec<_> = leased
            .iter()
            .map(|lease| run_and_report(&scheduler, &worker, lease))
            .collect();
        let reports = futures::future::join_all(reports);
        tokio::pin!(reports);
        let merging = async {
            tokio::task::yield_now().await;
            // While merges wait, the scheduler serves: a heartbeat, a lease call, a status.
            let mut s = promptly("taking the scheduler", scheduler.lock()).await;
            s.heartbeat(&worker, Some(&[]), now).unwrap();
            let info = s.job(&job_id).unwrap();
            assert_eq!(info.state, JobState::Running, "results not merged yet");
            assert_eq!(info.progress.done, 0);
            // The reported tasks still count as in flight: nothing is queued, and the job is
            // neither stalled nor finishing.
            assert!(s.lease(&worker, now).unwrap().is_none());
            drop(s);
            gate.add_permits(leased.len());
        };
        let (outcomes, ()) = futures::join!(&mut reports, merging);
        for outcome in outcomes {
            outcome.expect("result accepted");
        }

        // Later waves until the job is done.
        loop {
            let lease = scheduler.lock().await.lease(&worker, now).unwrap();
            let Some(lease) = lease else { break };
            gate.add_permits(1);
            run_and_report(&scheduler, &worker, &lease).await.unwrap();
        }
        let info = scheduler.lock().await.job(&job_id).unwrap();
        assert_eq!(info.state, JobState::Succeeded, "{info:?}");
        let sum = sum_from_summary(info.summary.as_ref().unwrap()).unwrap();
        assert_eq!(sum, spec.expected_sum());
    }
}
