//! The coordinator's state machine, driven by hand: fake workers that lease, finish, fail, go
//! silent or leave, on a fake clock. No gRPC, no threads.

use std::time::{Duration, Instant};

use svcca_engine::coordinator::testkit::{SumDriver, SumExecutor, SumSpec, sum_from_summary};
use svcca_engine::coordinator::{
    CoordinatorConfig, JobState, LeasedTask, Scheduler, SchedulerError,
};
use svcca_engine::driver::TaskFailure;

struct Clock(Instant);

impl Clock {
    fn at(&self, secs: f64) -> Instant {
        self.0 + Duration::from_secs_f64(secs)
    }
}

fn config() -> CoordinatorConfig {
    CoordinatorConfig::default()
        .with_heartbeat_interval(Duration::from_secs(1))
        .with_lease_timeout(Duration::from_secs(5))
        .with_worker_grace(Duration::from_secs(30))
        .with_max_attempts(3)
}

fn setup() -> (Clock, Scheduler) {
    let clock = Clock(Instant::now());
    let scheduler = Scheduler::new(config(), clock.at(0.0));
    (clock, scheduler)
}

async fn submit(scheduler: &mut Scheduler, spec: &SumSpec, now: Instant) -> String {
    scheduler
        .submit(Box::new(SumDriver::new(spec.clone())), now)
        .await
}

fn register(scheduler: &mut Scheduler, name: &str, now: Instant) -> String {
    scheduler
        .register_worker(name, svcca_proto::PROTOCOL_VERSION, now)
        .expect("register")
        .worker_id
}

/// Leases every ready task to `worker`.
fn lease_all(scheduler: &mut Scheduler, worker: &str, now: Instant) -> Vec<LeasedTask> {
    let mut leased = Vec::new();
    while let Some(task) = scheduler.lease(worker, now).expect("lease") {
        leased.push(task);
    }
    leased
}

async fn complete(scheduler: &mut Scheduler, worker: &str, leased: &LeasedTask, now: Instant) {
    let output = SumExecutor::new().run(&leased.task).expect("task runs");
    scheduler
        .report_result(worker, &leased.lease_id, output, now)
        .await
        .expect("result accepted");
}

/// Runs a job to the end with one worker, completing each wave of tasks in the given order.
async fn run_in_order(spec: &SumSpec, order: impl Fn(Vec<LeasedTask>) -> Vec<LeasedTask>) -> f64 {
    let (clock, mut scheduler) = setup();
    let worker = register(&mut scheduler, "w", clock.at(0.0));
    let job = submit(&mut scheduler, spec, clock.at(0.0)).await;
    loop {
        let wave = lease_all(&mut scheduler, &worker, clock.at(1.0));
        if wave.is_empty() {
            break;
        }
        for leased in order(wave) {
            complete(&mut scheduler, &worker, &leased, clock.at(1.0)).await;
        }
    }
    let info = scheduler.job(&job).expect("job");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    sum_from_summary(info.summary.as_ref().expect("summary")).expect("sum line")
}

#[tokio::test]
async fn job_completes_and_progress_grows_with_the_second_stage() {
    let spec = SumSpec::new(5);
    let (clock, mut scheduler) = setup();
    let a = register(&mut scheduler, "a", clock.at(0.0));
    let b = register(&mut scheduler, "b", clock.at(0.0));
    let job = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    assert_eq!(scheduler.job(&job).unwrap().progress.total, 5);

    // Two fake workers take turns.
    let mut parts = Vec::new();
    for turn in 0..5 {
        let worker = if turn % 2 == 0 { &a } else { &b };
        let leased = scheduler
            .lease(worker, clock.at(0.5))
            .unwrap()
            .expect("a part");
        parts.push((worker.clone(), leased));
    }
    assert!(
        scheduler.lease(&a, clock.at(0.5)).unwrap().is_none(),
        "every part is leased once"
    );
    for (holder, leased) in &parts {
        complete(&mut scheduler, holder, leased, clock.at(1.0)).await;
    }
    let info = scheduler.job(&job).unwrap();
    assert_eq!(info.state, JobState::Running);
    assert_eq!(
        (info.progress.done, info.progress.total),
        (5, 6),
        "the reduce stage adds one task"
    );
    let reduce = lease_all(&mut scheduler, &b, clock.at(1.5));
    assert_eq!(reduce.len(), 1);
    assert_eq!(reduce[0].task.kind, "reduce");
    complete(&mut scheduler, &b, &reduce[0], clock.at(2.0)).await;
    let info = scheduler.job(&job).unwrap();
    assert_eq!(info.state, JobState::Succeeded);
    assert_eq!((info.progress.done, info.progress.total), (6, 6));
    assert_eq!(
        sum_from_summary(info.summary.as_ref().unwrap()),
        Some(spec.expected_sum())
    );
}

#[tokio::test]
async fn a_worker_cannot_report_another_workers_lease() {
    let spec = SumSpec::new(1);
    let (clock, mut scheduler) = setup();
    let a = register(&mut scheduler, "a", clock.at(0.0));
    let b = register(&mut scheduler, "b", clock.at(0.0));
    submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let leased = scheduler.lease(&a, clock.at(0.1)).unwrap().expect("a task");
    let output = SumExecutor::new().run(&leased.task).unwrap();
    let refused = scheduler
        .report_result(&b, &leased.lease_id, output, clock.at(0.2))
        .await;
    assert!(
        matches!(refused, Err(SchedulerError::LeaseNotHeld { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn results_do_not_depend_on_completion_order() {
    let spec = SumSpec {
        terms_per_task: 3_000,
        ..SumSpec::new(12)
    };
    let forward = run_in_order(&spec, |wave| wave).await;
    let reversed = run_in_order(&spec, |mut wave| {
        wave.reverse();
        wave
    })
    .await;
    let interleaved = run_in_order(&spec, |wave| {
        let (even, odd): (Vec<_>, Vec<_>) =
            wave.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        odd.into_iter().chain(even).map(|(_, t)| t).collect()
    })
    .await;
    assert_eq!(forward.to_bits(), spec.expected_sum().to_bits());
    assert_eq!(reversed.to_bits(), forward.to_bits());
    assert_eq!(interleaved.to_bits(), forward.to_bits());
    // The check has teeth: summing the parts in another order changes the last bits.
    let parts: Vec<f64> = (0..spec.tasks)
        .map(|i| {
            let (s, e) = (i * spec.terms_per_task, (i + 1) * spec.terms_per_task);
            (s..e)
                .map(|k| 1.0 / (k as f64 + 1.0))
                .fold(0.0, |a, x| a + x)
        })
        .collect();
    let backwards = parts.iter().rev().fold(0.0, |a, p| a + p);
    let shuffled = [5usize, 0, 11, 3, 8, 1, 10, 2, 7, 4, 9, 6]
        .iter()
        .fold(0.0, |a, &i| a + parts[i]);
    assert!(
        backwards.to_bits() != forward.to_bits() || shuffled.to_bits() != forward.to_bits(),
        "pick terms whose sum depends on the order"
    );
}

#[tokio::test]
async fn a_lost_workers_leases_are_reassigned() {
    let spec = SumSpec::new(2);
    let (clock, mut scheduler) = setup();
    let lost = register(&mut scheduler, "lost", clock.at(0.0));
    let alive = register(&mut scheduler, "alive", clock.at(0.0));
    let job = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let taken = lease_all(&mut scheduler, &lost, clock.at(0.5));
    assert_eq!(taken.len(), 2);
    assert!(
        scheduler.lease(&alive, clock.at(0.5)).unwrap().is_none(),
        "nothing left to lease"
    );

    // `alive` keeps heartbeating; `lost` stops. Within the lease timeout nothing changes.
    for t in 1..=5 {
        scheduler
            .heartbeat(&alive, None, clock.at(t as f64))
            .unwrap();
        scheduler.tick(clock.at(t as f64));
    }
    assert_eq!(scheduler.workers_alive(), 2);
    assert!(scheduler.lease(&alive, clock.at(5.0)).unwrap().is_none());

    scheduler.heartbeat(&alive, None, clock.at(6.0)).unwrap();
    scheduler.tick(clock.at(6.0));
    assert_eq!(
        scheduler.workers_alive(),
        1,
        "silent for 6 s > 5 s lease timeout"
    );
    let retried = lease_all(&mut scheduler, &alive, clock.at(6.0));
    let mut ids: Vec<_> = retried.iter().map(|l| l.task.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["part-0", "part-1"]);
    assert!(
        retried.iter().all(|l| l.attempt == 2),
        "a lost lease counts as one failed attempt"
    );

    // The lost worker comes back too late: it is unknown and must register again.
    let output = SumExecutor::new().run(&taken[0].task).unwrap();
    let late = scheduler
        .report_result(&lost, &taken[0].lease_id, output, clock.at(6.5))
        .await;
    assert!(
        matches!(late, Err(SchedulerError::UnknownWorker { .. })),
        "{late:?}"
    );

    for leased in &retried {
        complete(&mut scheduler, &alive, leased, clock.at(7.0)).await;
    }
    let reduce = lease_all(&mut scheduler, &alive, clock.at(7.0));
    complete(&mut scheduler, &alive, &reduce[0], clock.at(7.0)).await;
    let info = scheduler.job(&job).unwrap();
    assert_eq!(info.state, JobState::Succeeded);
    assert_eq!(
        sum_from_summary(info.summary.as_ref().unwrap()),
        Some(spec.expected_sum())
    );
}

#[tokio::test]
async fn a_lease_whose_reply_was_lost_is_requeued_by_the_heartbeat() {
    let spec = SumSpec::new(1);
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let leased = scheduler.lease(&w, clock.at(0.0)).unwrap().expect("task");
    // The worker never got the reply: its heartbeats list no lease. Young leases are spared
    // (the reply may still be on its way); old ones are given up.
    scheduler.heartbeat(&w, Some(&[]), clock.at(1.0)).unwrap();
    assert!(scheduler.lease(&w, clock.at(1.0)).unwrap().is_none());
    scheduler.heartbeat(&w, Some(&[]), clock.at(5.5)).unwrap();
    let again = scheduler
        .lease(&w, clock.at(5.5))
        .unwrap()
        .expect("re-queued");
    assert_eq!(again.task.id, leased.task.id);
    assert_eq!(again.attempt, 2);
    // A heartbeat that lists the lease keeps it, however old.
    scheduler
        .heartbeat(
            &w,
            Some(std::slice::from_ref(&again.lease_id)),
            clock.at(20.0),
        )
        .unwrap();
    assert!(scheduler.lease(&w, clock.at(20.0)).unwrap().is_none());
}

#[tokio::test]
async fn retryable_failures_are_capped_and_the_job_names_the_task() {
    let spec = SumSpec::new(2);
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let job = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    for attempt in 1..=3u32 {
        let leased = scheduler
            .lease(&w, clock.at(attempt as f64))
            .unwrap()
            .expect("task");
        assert_eq!(
            leased.task.id, "part-0",
            "a retried task goes to the front of the queue"
        );
        assert_eq!(leased.attempt, attempt);
        let failure = TaskFailure::Retryable {
            task_id: String::new(),
            message: format!("store timed out #{attempt}"),
        };
        scheduler
            .report_failure(&w, &leased.lease_id, failure, clock.at(attempt as f64))
            .unwrap();
        let state = scheduler.job(&job).unwrap().state;
        assert_eq!(
            state,
            if attempt < 3 {
                JobState::Running
            } else {
                JobState::Failed
            }
        );
    }
    let info = scheduler.job(&job).unwrap();
    let failure = info.failure.expect("failure");
    assert!(failure.retryable);
    assert!(failure.message.contains("part-0"), "{}", failure.message);
    assert!(failure.message.contains("3 time(s)"), "{}", failure.message);
    assert!(
        failure.message.contains("store timed out #3"),
        "the last error: {}",
        failure.message
    );
    assert!(
        scheduler.lease(&w, clock.at(4.0)).unwrap().is_none(),
        "a failed job hands out no more tasks"
    );
}

#[tokio::test]
async fn a_fatal_failure_fails_the_job_at_once() {
    let spec = SumSpec::new(4);
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let job = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let leased = lease_all(&mut scheduler, &w, clock.at(0.0));
    let failure = TaskFailure::Fatal {
        task_id: String::new(),
        message: "layer h1 has NaN at row 7".into(),
    };
    scheduler
        .report_failure(&w, &leased[2].lease_id, failure, clock.at(1.0))
        .unwrap();
    let info = scheduler.job(&job).unwrap();
    assert_eq!(info.state, JobState::Failed);
    let failure = info.failure.unwrap();
    assert!(!failure.retryable);
    assert_eq!(
        failure.message,
        format!(
            "task {} failed: layer h1 has NaN at row 7",
            leased[2].task.id
        )
    );
    // Results still in flight for the dead job are dropped, not merged.
    let output = SumExecutor::new().run(&leased[0].task).unwrap();
    scheduler
        .report_result(&w, &leased[0].lease_id, output, clock.at(1.5))
        .await
        .unwrap();
    assert_eq!(scheduler.job(&job).unwrap().state, JobState::Failed);
}

#[tokio::test]
async fn with_no_worker_for_the_grace_period_the_job_fails() {
    let spec = SumSpec::new(3);
    let (clock, mut scheduler) = setup();
    // Submitted long after the coordinator started without workers: the grace counts from the
    // submission.
    let job = submit(&mut scheduler, &spec, clock.at(100.0)).await;
    scheduler.tick(clock.at(129.0));
    assert_eq!(scheduler.job(&job).unwrap().state, JobState::Running);
    scheduler.tick(clock.at(130.5));
    let info = scheduler.job(&job).unwrap();
    assert_eq!(info.state, JobState::Failed);
    let failure = info.failure.unwrap();
    assert!(
        failure.retryable,
        "workers may come back: a retry can succeed"
    );
    assert!(
        failure.message.contains("no worker was connected for 30s"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("3 task(s) pending"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn the_grace_period_starts_when_the_last_worker_is_lost() {
    let spec = SumSpec::new(2);
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let job = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let _leased = lease_all(&mut scheduler, &w, clock.at(0.0));
    scheduler.tick(clock.at(5.5)); // lost: silent for 5.5 s
    assert_eq!(scheduler.workers_alive(), 0);
    assert_eq!(
        scheduler.job(&job).unwrap().state,
        JobState::Running,
        "attempts are left"
    );
    scheduler.tick(clock.at(35.0));
    assert_eq!(
        scheduler.job(&job).unwrap().state,
        JobState::Running,
        "29.5 s without workers"
    );
    scheduler.tick(clock.at(35.6));
    assert_eq!(scheduler.job(&job).unwrap().state, JobState::Failed);
}

#[tokio::test]
async fn a_worker_that_returns_keeps_the_job_alive() {
    let spec = SumSpec::new(1);
    let (clock, mut scheduler) = setup();
    let job = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    scheduler.tick(clock.at(20.0));
    let w = register(&mut scheduler, "late", clock.at(25.0));
    for t in [30.0, 40.0, 50.0, 60.0] {
        scheduler.heartbeat(&w, None, clock.at(t - 1.0)).unwrap();
        scheduler.tick(clock.at(t));
    }
    assert_eq!(scheduler.job(&job).unwrap().state, JobState::Running);
}

#[tokio::test]
async fn cancel_stops_the_job_and_refuses_its_results() {
    let spec = SumSpec::new(3);
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let job = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let first = scheduler.lease(&w, clock.at(0.0)).unwrap().expect("task");
    let held = [first.lease_id.clone()];
    assert!(
        scheduler
            .heartbeat(&w, Some(&held), clock.at(0.05))
            .unwrap()
            .is_empty(),
        "a live lease is not revoked"
    );
    let info = scheduler.cancel(&job).unwrap();
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(
        scheduler
            .heartbeat(&w, Some(&held), clock.at(0.06))
            .unwrap(),
        held.to_vec(),
        "the worker is told to stop the cancelled job's task"
    );
    assert!(
        scheduler.lease(&w, clock.at(0.1)).unwrap().is_none(),
        "its queue is gone"
    );
    let output = SumExecutor::new().run(&first.task).unwrap();
    let refused = scheduler
        .report_result(&w, &first.lease_id, output, clock.at(0.2))
        .await;
    assert!(
        matches!(refused, Err(SchedulerError::LeaseNotHeld { .. })),
        "{refused:?}"
    );
    // Cancelling again, or an unknown job.
    assert_eq!(scheduler.cancel(&job).unwrap().state, JobState::Cancelled);
    assert!(matches!(
        scheduler.cancel("job-999"),
        Err(SchedulerError::UnknownJob { .. })
    ));
}

#[tokio::test]
async fn deregistering_returns_leases_without_costing_an_attempt() {
    let spec = SumSpec::new(1);
    let (clock, mut scheduler) = setup();
    let leaving = register(&mut scheduler, "leaving", clock.at(0.0));
    let staying = register(&mut scheduler, "staying", clock.at(0.0));
    submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let leased = scheduler
        .lease(&leaving, clock.at(0.0))
        .unwrap()
        .expect("task");
    scheduler
        .deregister_worker(&leaving, clock.at(1.0))
        .unwrap();
    let again = scheduler
        .lease(&staying, clock.at(1.0))
        .unwrap()
        .expect("returned task");
    assert_eq!(again.task.id, leased.task.id);
    assert_eq!(again.attempt, 1);
}

#[tokio::test]
async fn workers_of_another_protocol_version_are_refused() {
    let (clock, mut scheduler) = setup();
    let refused =
        scheduler.register_worker("old", svcca_proto::PROTOCOL_VERSION + 1, clock.at(0.0));
    let error = refused.expect_err("refused");
    assert!(matches!(error, SchedulerError::VersionMismatch { .. }));
    assert!(error.to_string().contains("same svcca release"), "{error}");
    assert_eq!(scheduler.workers_alive(), 0);
}

#[tokio::test]
async fn older_jobs_are_served_first() {
    let spec = SumSpec::new(2);
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let first = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let second = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let order: Vec<String> = lease_all(&mut scheduler, &w, clock.at(0.0))
        .into_iter()
        .map(|l| l.job_id)
        .collect();
    assert_eq!(order, [first.clone(), first, second.clone(), second]);
}

#[tokio::test]
async fn a_restarted_coordinator_never_reuses_an_earlier_ones_worker_or_lease_ids() {
    let spec = SumSpec::new(2);
    let (clock, mut before) = setup();
    let old_worker = register(&mut before, "a", clock.at(0.0));
    submit(&mut before, &spec, clock.at(0.0)).await;
    let old_lease = before
        .lease(&old_worker, clock.at(0.0))
        .unwrap()
        .expect("task");

    // The process restarts: a new scheduler, the same job resubmitted, another worker first.
    let mut after = Scheduler::new(config(), clock.at(1.0));
    let new_worker = register(&mut after, "b", clock.at(1.0));
    assert_ne!(new_worker, old_worker);
    submit(&mut after, &spec, clock.at(1.0)).await;
    let new_lease = after
        .lease(&new_worker, clock.at(1.0))
        .unwrap()
        .expect("task");
    assert_ne!(new_lease.lease_id, old_lease.lease_id);
    // The old worker's heartbeat is refused, so it registers again instead of carrying on
    // under an id the new coordinator may give to someone else.
    assert!(matches!(
        after.heartbeat(&old_worker, None, clock.at(1.5)),
        Err(SchedulerError::UnknownWorker { .. })
    ));
}

/// The job succeeded, with the sum its spec gives.
fn assert_succeeded_with(scheduler: &Scheduler, job: &str, spec: &SumSpec) {
    let info = scheduler.job(job).unwrap();
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(
        sum_from_summary(info.summary.as_ref().unwrap()),
        Some(spec.expected_sum())
    );
}

/// A sum job whose planner fails with a retryable error on the calls to `take_ready` listed in
/// `failing` (counted from 1: the submission's call is the first), as a cache on an object store
/// that refuses a read for a while would.
struct FlakyPlanner {
    inner: SumDriver,
    calls: u32,
    failing: Vec<u32>,
    /// How many calls to `finish` fail (retryably) before one writes the results.
    failing_finishes: u32,
}

impl svcca_engine::driver::JobDriver for FlakyPlanner {
    fn take_ready(
        &mut self,
    ) -> futures::future::BoxFuture<'_, Result<Vec<svcca_engine::driver::TaskSpec>, TaskFailure>>
    {
        self.calls += 1;
        if self.failing.contains(&self.calls) {
            let message = format!("the store timed out (planning call {})", self.calls);
            return Box::pin(async move {
                Err(TaskFailure::Retryable {
                    task_id: "plan".into(),
                    message,
                })
            });
        }
        self.inner.take_ready()
    }
    fn complete(
        &mut self,
        task_id: String,
        output: svcca_engine::driver::TaskOutput,
    ) -> futures::future::BoxFuture<'_, Result<(), TaskFailure>> {
        self.inner.complete(task_id, output)
    }
    fn all_done(&self) -> bool {
        self.inner.all_done()
    }
    fn finish(
        &mut self,
    ) -> futures::future::BoxFuture<'_, Result<svcca_engine::driver::JobSummary, TaskFailure>> {
        if self.failing_finishes > 0 {
            self.failing_finishes -= 1;
            let message = format!(
                "the store refused the results ({} more refusals)",
                self.failing_finishes
            );
            return Box::pin(async move {
                Err(TaskFailure::Retryable {
                    task_id: "finish".into(),
                    message,
                })
            });
        }
        self.inner.finish()
    }
    fn progress(&self) -> svcca_engine::driver::Progress {
        self.inner.progress()
    }
}

async fn submit_flaky(
    scheduler: &mut Scheduler,
    spec: &SumSpec,
    failing: &[u32],
    now: Instant,
) -> String {
    submit_flaky_finish(scheduler, spec, failing, 0, now).await
}

async fn submit_flaky_finish(
    scheduler: &mut Scheduler,
    spec: &SumSpec,
    failing: &[u32],
    failing_finishes: u32,
    now: Instant,
) -> String {
    let driver = FlakyPlanner {
        inner: SumDriver::new(spec.clone()),
        calls: 0,
        failing: failing.to_vec(),
        failing_finishes,
    };
    scheduler.submit(Box::new(driver), now).await
}

#[tokio::test]
async fn a_planner_that_fails_for_now_is_planned_again_and_the_job_ends_as_without_it() {
    // Planning fails on the second and third calls: after the first part's result (two parts
    // still running), then after the second (one running), and succeeds after the third.
    let spec = SumSpec::new(3);
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let job = submit_flaky(&mut scheduler, &spec, &[2, 3], clock.at(0.0)).await;
    let parts = lease_all(&mut scheduler, &w, clock.at(0.1));
    assert_eq!(parts.len(), 3);
    for (n, leased) in parts.iter().enumerate() {
        complete(&mut scheduler, &w, leased, clock.at(0.2)).await;
        let info = scheduler.job(&job).unwrap();
        assert_eq!(info.state, JobState::Running, "after part {n}: {info:?}");
    }
    let reduce = lease_all(&mut scheduler, &w, clock.at(0.3));
    assert_eq!(reduce.len(), 1, "planned once a result came in");
    complete(&mut scheduler, &w, &reduce[0], clock.at(0.4)).await;
    assert_succeeded_with(&scheduler, &job, &spec);

    // Planning fails after the last part, with nothing left running: no result will come in,
    // so the coordinator's tick plans again once the back-off has passed.
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let job = submit_flaky(&mut scheduler, &SumSpec::new(1), &[2], clock.at(0.0)).await;
    let part = lease_all(&mut scheduler, &w, clock.at(0.1));
    complete(&mut scheduler, &w, &part[0], clock.at(0.2)).await;
    assert_eq!(scheduler.job(&job).unwrap().state, JobState::Running);
    scheduler.retry_planning(clock.at(0.3)).await;
    assert!(
        lease_all(&mut scheduler, &w, clock.at(0.3)).is_empty(),
        "not before the back-off"
    );
    scheduler.retry_planning(clock.at(1.0)).await;
    let reduce = lease_all(&mut scheduler, &w, clock.at(1.0));
    assert_eq!(reduce.len(), 1, "planned again by the tick");
    complete(&mut scheduler, &w, &reduce[0], clock.at(1.1)).await;
    assert_succeeded_with(&scheduler, &job, &SumSpec::new(1));
}

#[tokio::test]
async fn a_planner_that_keeps_failing_fails_the_job_after_max_attempts_in_a_row() {
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    // max_attempts is 3: the calls after the part's result, and two retries.
    let job = submit_flaky(&mut scheduler, &SumSpec::new(1), &[2, 3, 4], clock.at(0.0)).await;
    let part = lease_all(&mut scheduler, &w, clock.at(0.1));
    complete(&mut scheduler, &w, &part[0], clock.at(0.2)).await;
    scheduler.retry_planning(clock.at(5.0)).await;
    assert_eq!(scheduler.job(&job).unwrap().state, JobState::Running);
    scheduler.retry_planning(clock.at(10.0)).await;
    let info = scheduler.job(&job).unwrap();
    assert_eq!(info.state, JobState::Failed, "{info:?}");
    let failure = info.failure.expect("failure");
    assert!(failure.retryable);
    assert!(
        failure.message.contains("3 time(s) in a row")
            && failure.message.contains("planning call 4"),
        "{}",
        failure.message
    );
}

/// A one-part sum job whose first `refusals` writes of the results fail (retryably), run by one
/// worker until every task is done (the part, then the reduce).
async fn one_part_job_refused(refusals: u32) -> (Clock, Scheduler, String) {
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let spec = SumSpec::new(1);
    let job = submit_flaky_finish(&mut scheduler, &spec, &[], refusals, clock.at(0.0)).await;
    for at in [0.1, 0.3] {
        let leased = lease_all(&mut scheduler, &w, clock.at(at));
        assert_eq!(leased.len(), 1);
        complete(&mut scheduler, &w, &leased[0], clock.at(at + 0.1)).await;
    }
    (clock, scheduler, job)
}

#[tokio::test]
async fn results_the_store_refused_to_take_are_written_again() {
    // Two refusals, then the results are written: the job succeeds with the right sum.
    let (clock, mut scheduler, job) = one_part_job_refused(2).await;
    let info = scheduler.job(&job).unwrap();
    assert_eq!(info.state, JobState::Running, "back to running: {info:?}");
    scheduler.retry_planning(clock.at(1.0)).await;
    assert_eq!(scheduler.job(&job).unwrap().state, JobState::Running);
    scheduler.retry_planning(clock.at(3.0)).await;
    assert_succeeded_with(&scheduler, &job, &SumSpec::new(1));

    // Refused every time: the job fails after max_attempts (3) writes, saying so.
    let (clock, mut scheduler, job) = one_part_job_refused(u32::MAX).await;
    for at in [1.0, 3.0] {
        scheduler.retry_planning(clock.at(at)).await;
    }
    let info = scheduler.job(&job).unwrap();
    assert_eq!(info.state, JobState::Failed, "{info:?}");
    let message = info.failure.expect("failure").message;
    assert!(
        message.contains("writing the job's results failed 3 time(s) in a row"),
        "{message}"
    );
}

#[tokio::test]
async fn a_task_that_failed_for_now_waits_out_its_back_off_and_others_go_first() {
    // Backs off 0.5 s after the first failure, 1 s after the second (the default base).
    let spec = SumSpec::new(2);
    let (clock, mut scheduler) = setup();
    let w = register(&mut scheduler, "w", clock.at(0.0));
    let job = submit(&mut scheduler, &spec, clock.at(0.0)).await;
    let first = scheduler.lease(&w, clock.at(1.0)).unwrap().expect("part-0");
    assert_eq!(first.task.id, "part-0");
    let failure = TaskFailure::Retryable {
        task_id: String::new(),
        message: "the store refused a read".into(),
    };
    scheduler
        .report_failure(&w, &first.lease_id, failure.clone(), clock.at(1.0))
        .unwrap();
    let other = scheduler.lease(&w, clock.at(1.1)).unwrap().expect("part-1");
    assert_eq!(
        other.task.id, "part-1",
        "the waiting task does not hold others up"
    );
    assert!(
        scheduler.lease(&w, clock.at(1.4)).unwrap().is_none(),
        "part-0 waits out its back-off"
    );
    let again = scheduler
        .lease(&w, clock.at(1.5))
        .unwrap()
        .expect("part-0 again");
    assert_eq!((again.task.id.as_str(), again.attempt), ("part-0", 2));
    scheduler
        .report_failure(&w, &again.lease_id, failure, clock.at(1.5))
        .unwrap();
    assert!(
        scheduler.lease(&w, clock.at(2.4)).unwrap().is_none(),
        "doubled"
    );
    let third = scheduler
        .lease(&w, clock.at(2.5))
        .unwrap()
        .expect("part-0, third");
    complete(&mut scheduler, &w, &third, clock.at(2.6)).await;
    complete(&mut scheduler, &w, &other, clock.at(2.6)).await;
    let reduce = lease_all(&mut scheduler, &w, clock.at(2.7));
    complete(&mut scheduler, &w, &reduce[0], clock.at(2.8)).await;
    assert_succeeded_with(&scheduler, &job, &spec);

    // A lost worker's tasks are not the tasks' fault: they go out again at once.
    let (clock, mut scheduler) = setup();
    let a = register(&mut scheduler, "a", clock.at(0.0));
    submit(&mut scheduler, &SumSpec::new(1), clock.at(0.0)).await;
    scheduler.lease(&a, clock.at(0.1)).unwrap().expect("part-0");
    let b = register(&mut scheduler, "b", clock.at(5.0));
    scheduler.tick(clock.at(6.0));
    let taken = scheduler.lease(&b, clock.at(6.0)).unwrap();
    assert_eq!(taken.map(|t| t.task.id).as_deref(), Some("part-0"));
}
