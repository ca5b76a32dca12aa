//! An in-process cluster over real gRPC on loopback: a coordinator and workers in one runtime,
//! running the test job of `coordinator::testkit` (no svcca maths: the scheduler is under test).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use svcca_engine::client::{self, ClusterError};
use svcca_engine::coordinator::testkit::{SumExecutor, SumJobFactory, SumSpec, sum_from_summary};
use svcca_engine::coordinator::{Coordinator, CoordinatorConfig, JobInfo, JobState};
use svcca_engine::driver::TaskExecutor;
use svcca_engine::worker::{Worker, WorkerConfig, WorkerStats};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Every test must end well within this.
const LIMIT: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn fast_config() -> CoordinatorConfig {
    CoordinatorConfig::default()
        .with_listen(loopback())
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_lease_timeout(Duration::from_millis(600))
        .with_worker_grace(Duration::from_secs(2))
        .with_max_lease_wait(Duration::from_millis(300))
}

struct RunningWorker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<Result<WorkerStats, ClusterError>>,
}

impl RunningWorker {
    fn start(url: &str, name: &str, executor: Arc<dyn TaskExecutor>) -> Self {
        Self::start_with(WorkerConfig::new(url).with_name(name), executor)
    }

    fn start_with(config: WorkerConfig, executor: Arc<dyn TaskExecutor>) -> Self {
        let (stop, rx) = watch::channel(false);
        let config = config
            .with_lease_wait(Duration::from_millis(300))
            .with_max_backoff(Duration::from_millis(200));
        let handle = tokio::spawn(Worker::new(config, executor).run(stopped(rx)));
        Self { stop, handle }
    }

    /// Graceful: drain and deregister.
    async fn stop(self) -> WorkerStats {
        let _ = self.stop.send(true);
        self.handle.await.expect("worker task").expect("worker ran")
    }

    /// A crash: the worker's tasks are dropped mid-flight, it says nothing to the coordinator.
    async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

struct RunningCoordinator {
    url: String,
    stop: watch::Sender<bool>,
    handle: JoinHandle<Result<(), ClusterError>>,
}

impl RunningCoordinator {
    async fn start(config: CoordinatorConfig) -> Self {
        let coordinator = Coordinator::bind(config, Arc::new(SumJobFactory))
            .await
            .expect("bind");
        let url = coordinator.url();
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(coordinator.serve(stopped(rx)));
        Self { url, stop, handle }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.handle
            .await
            .expect("coordinator task")
            .expect("coordinator served");
    }
}

async fn wait(url: &str, job_id: &str) -> (JobInfo, Vec<JobInfo>) {
    let mut seen = Vec::new();
    let info = client::wait_for_job(url, job_id, |info| seen.push(info.clone()))
        .await
        .expect("watch");
    (info, seen)
}

fn sum_of(info: &JobInfo) -> f64 {
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    sum_from_summary(info.summary.as_ref().expect("summary")).expect("sum line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_complete_a_job() {
    tokio::time::timeout(LIMIT, async {
        let coordinator = RunningCoordinator::start(fast_config()).await;
        let executor: Arc<dyn TaskExecutor> = Arc::new(SumExecutor::new());
        let workers: Vec<_> = (0..3)
            .map(|i| RunningWorker::start(&coordinator.url, &format!("w{i}"), executor.clone()))
            .collect();
        let spec = SumSpec {
            task_ms: 20,
            ..SumSpec::new(12)
        };
        let job_id = client::submit(&coordinator.url, spec.to_toml())
            .await
            .expect("submit");
        let (info, seen) = wait(&coordinator.url, &job_id).await;
        assert_eq!(sum_of(&info).to_bits(), spec.expected_sum().to_bits());
        assert_eq!((info.progress.done, info.progress.total), (13, 13));
        assert!(
            seen.windows(2)
                .all(|w| w[0].progress.done <= w[1].progress.done),
            "progress only grows"
        );
        assert!(
            seen.len() >= 2,
            "the watch reports changes, not only the end: {}",
            seen.len()
        );

        let listed = client::list_jobs(&coordinator.url).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].workers_alive, 3);
        assert_eq!(
            client::status(&coordinator.url, &job_id)
                .await
                .expect("status")
                .state,
            JobState::Succeeded
        );

        let mut done = 0;
        for worker in workers {
            done += worker.stop().await.succeeded;
        }
        assert_eq!(done, 13, "each task ran once");
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_identical_with_one_two_and_three_workers() {
    tokio::time::timeout(LIMIT, async {
        let spec = SumSpec {
            task_ms: 5,
            terms_per_task: 5_000,
            ..SumSpec::new(10)
        };
        let mut sums = Vec::new();
        for workers in 1..=3 {
            let mut progress = Vec::new();
            let summary = client::run_embedded(
                Arc::new(SumJobFactory),
                Arc::new(SumExecutor::new()),
                spec.to_toml(),
                workers,
                |p| progress.push(p),
            )
            .await
            .expect("embedded run");
            assert_eq!(progress.last().map(|p| (p.done, p.total)), Some((11, 11)));
            sums.push(sum_from_summary(&summary).expect("sum").to_bits());
        }
        assert_eq!(sums, vec![spec.expected_sum().to_bits(); 3]);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_their_class_across_the_wire() {
    tokio::time::timeout(LIMIT, async {
        // Retryable failures are retried and the job succeeds.
        let flaky = SumExecutor::new().with_retryable_failures(2);
        let spec = SumSpec::new(3);
        let summary = client::run_embedded(
            Arc::new(SumJobFactory),
            Arc::new(flaky),
            spec.to_toml(),
            1,
            |_| {},
        )
        .await
        .expect("two retryable failures are within four attempts");
        assert_eq!(sum_from_summary(&summary), Some(spec.expected_sum()));

        // A fatal failure fails the job, non-retryable, with the task's message.
        let spec = SumSpec {
            fatal_task: Some(2),
            ..SumSpec::new(4)
        };
        let error = client::run_embedded(
            Arc::new(SumJobFactory),
            Arc::new(SumExecutor::new()),
            spec.to_toml(),
            2,
            |_| {},
        )
        .await
        .expect_err("fatal");
        assert!(!error.is_retryable(), "{error}");
        match &error {
            ClusterError::JobFailed {
                message,
                retryable: false,
                ..
            } => {
                assert_eq!(
                    message,
                    "task part-2 failed: injected non-retryable failure"
                );
            }
            other => panic!("unexpected {other:?}"),
        }

        // Retryable failures past the attempt cap fail the job, retryable.
        let always = SumExecutor::new().with_retryable_failures(u64::MAX);
        let error = client::run_embedded_with(
            fast_config().with_max_attempts(2),
            Arc::new(SumJobFactory),
            Arc::new(always),
            SumSpec::new(1).to_toml(),
            1,
            |_| {},
        )
        .await
        .expect_err("attempts exhausted");
        assert!(error.is_retryable(), "{error}");
        assert!(
            error.to_string().contains("part-0 (part) failed 2 time(s)"),
            "{error}"
        );

        // A spec the planner refuses is a non-retryable submission error.
        let error = client::run_embedded(
            Arc::new(SumJobFactory),
            Arc::new(SumExecutor::new()),
            "not = [valid".into(),
            1,
            |_| {},
        )
        .await
        .expect_err("bad spec");
        assert!(
            matches!(
                &error,
                ClusterError::Rpc {
                    code: tonic::Code::InvalidArgument,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!error.is_retryable());
    })
    .await
    .expect("within the time limit");
}

/// Starts a job of `tasks` tasks, waits until `min_done` are done, and returns the job id and the
/// progress seen then.
async fn run_until(url: &str, spec: &SumSpec, min_done: u64) -> (String, JobInfo) {
    let job_id = client::submit(url, spec.to_toml()).await.expect("submit");
    loop {
        let info = client::status(url, &job_id).await.expect("status");
        if info.progress.done >= min_done || info.state.is_terminal() {
            return (job_id, info);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_tasks_are_finished_by_the_others() {
    tokio::time::timeout(LIMIT, async {
        let coordinator = RunningCoordinator::start(fast_config()).await;
        let executor: Arc<dyn TaskExecutor> = Arc::new(SumExecutor::new());
        let doomed = RunningWorker::start(&coordinator.url, "doomed", executor.clone());
        let survivor = RunningWorker::start(&coordinator.url, "survivor", executor.clone());
        let spec = SumSpec {
            task_ms: 150,
            ..SumSpec::new(10)
        };
        let (job_id, at_kill) = run_until(&coordinator.url, &spec, 2).await;
        doomed.kill().await;
        assert_eq!(at_kill.state, JobState::Running);
        assert!(
            at_kill.progress.done >= 2 && at_kill.progress.done < 10,
            "killed mid-job: {:?}",
            at_kill.progress
        );

        let (info, seen) = wait(&coordinator.url, &job_id).await;
        assert_eq!(sum_of(&info).to_bits(), spec.expected_sum().to_bits());
        assert!(
            seen.iter().any(|i| i.workers_alive == 1),
            "the crash was noticed"
        );
        survivor.stop().await;
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_worker_gone_the_job_fails_within_the_grace_period() {
    tokio::time::timeout(LIMIT, async {
        let config = fast_config();
        let (lease_timeout, grace) = (config.lease_timeout, config.worker_grace);
        let coordinator = RunningCoordinator::start(config).await;
        let worker = RunningWorker::start(&coordinator.url, "only", Arc::new(SumExecutor::new()));
        let spec = SumSpec {
            task_ms: 100,
            ..SumSpec::new(30)
        };
        let (job_id, at_kill) = run_until(&coordinator.url, &spec, 1).await;
        worker.kill().await;
        let killed_at = Instant::now();
        assert_eq!(at_kill.state, JobState::Running);

        let (info, _) = wait(&coordinator.url, &job_id).await;
        let elapsed = killed_at.elapsed();
        assert_eq!(info.state, JobState::Failed);
        let failure = info.failure.expect("failure");
        assert!(failure.retryable);
        assert!(
            failure.message.contains("no worker was connected"),
            "{}",
            failure.message
        );
        assert!(elapsed >= grace, "not before the grace period: {elapsed:?}");
        assert!(
            elapsed < lease_timeout + grace + Duration::from_secs(2),
            "promptly after it: {elapsed:?}"
        );
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_finishes_its_task_and_leaves() {
    tokio::time::timeout(LIMIT, async {
        let coordinator = RunningCoordinator::start(fast_config()).await;
        let executor: Arc<dyn TaskExecutor> = Arc::new(SumExecutor::new());
        let first = RunningWorker::start(&coordinator.url, "first", executor.clone());
        let spec = SumSpec {
            task_ms: 400,
            ..SumSpec::new(4)
        };
        let job_id = client::submit(&coordinator.url, spec.to_toml())
            .await
            .expect("submit");
        tokio::time::sleep(Duration::from_millis(150)).await; // mid-way through the first task
        let stats = first.stop().await;
        assert_eq!(
            stats.succeeded, 1,
            "finished the task it held, took no other"
        );
        assert_eq!(stats.refused, 0, "its result was accepted");
        let info = client::status(&coordinator.url, &job_id)
            .await
            .expect("status");
        assert_eq!((info.progress.done, info.workers_alive), (1, 0), "{info:?}");

        let second = RunningWorker::start(&coordinator.url, "second", executor);
        let (info, _) = wait(&coordinator.url, &job_id).await;
        assert_eq!(sum_of(&info).to_bits(), spec.expected_sum().to_bits());
        second.stop().await;
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_times_out_returns_the_lease() {
    tokio::time::timeout(LIMIT, async {
        let coordinator = RunningCoordinator::start(fast_config()).await;
        let executor: Arc<dyn TaskExecutor> = Arc::new(SumExecutor::new());
        let slow = RunningWorker::start_with(
            WorkerConfig::new(&coordinator.url)
                .with_name("slow")
                .with_drain_timeout(Duration::from_millis(100)),
            executor.clone(),
        );
        let spec = SumSpec {
            task_ms: 1_000,
            ..SumSpec::new(1)
        };
        let job_id = client::submit(&coordinator.url, spec.to_toml())
            .await
            .expect("submit");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stats = slow.stop().await;
        assert_eq!(stats.succeeded, 0, "gave up on its task");
        // The lease came back at once (deregistration), not after a lease timeout, and without
        // costing an attempt.
        let fresh = RunningWorker::start(&coordinator.url, "fresh", executor);
        let (info, _) = wait(&coordinator.url, &job_id).await;
        assert_eq!(sum_of(&info).to_bits(), spec.expected_sum().to_bits());
        fresh.stop().await;
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_jobs_running_task_is_abandoned_by_its_worker() {
    tokio::time::timeout(LIMIT, async {
        let coordinator = RunningCoordinator::start(fast_config()).await;
        let worker = RunningWorker::start_with(
            WorkerConfig::new(&coordinator.url)
                .with_name("w")
                .with_concurrency(1),
            Arc::new(SumExecutor::new()),
        );
        let spec = SumSpec {
            task_ms: 1500,
            ..SumSpec::new(4)
        };
        // One task done; the worker has leased the next one and is 200 ms into its 1.5 s.
        let (job_id, _) = run_until(&coordinator.url, &spec, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let info = client::cancel(&coordinator.url, &job_id)
            .await
            .expect("cancel");
        assert_eq!(info.state, JobState::Cancelled);
        // The next heartbeat (every 100 ms) revokes the lease; without that the drain below
        // would wait for the task's remaining 1.3 s.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let stopping = Instant::now();
        let stats = worker.stop().await;
        assert_eq!(stats.abandoned, 1, "{stats:?}");
        assert_eq!(stats.succeeded, 1, "{stats:?}");
        assert!(
            stopping.elapsed() < Duration::from_millis(900),
            "the worker still ran the cancelled task: stopped after {:?}",
            stopping.elapsed()
        );
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_watch() {
    tokio::time::timeout(LIMIT, async {
        let coordinator = RunningCoordinator::start(fast_config()).await;
        let worker = RunningWorker::start(&coordinator.url, "w", Arc::new(SumExecutor::new()));
        let spec = SumSpec {
            task_ms: 100,
            ..SumSpec::new(50)
        };
        let (job_id, _) = run_until(&coordinator.url, &spec, 1).await;
        let url = coordinator.url.clone();
        let watcher = tokio::spawn({
            let job_id = job_id.clone();
            async move { client::wait_for_job(&url, &job_id, |_| {}).await }
        });
        let info = client::cancel(&coordinator.url, &job_id)
            .await
            .expect("cancel");
        assert_eq!(info.state, JobState::Cancelled);
        let last = watcher.await.expect("watcher").expect("watch");
        assert_eq!(last.state, JobState::Cancelled);
        assert!(matches!(
            client::job_result(last),
            Err(ClusterError::JobCancelled { .. })
        ));
        let unknown = client::status(&coordinator.url, "job-404")
            .await
            .expect_err("unknown job");
        assert!(
            matches!(
                unknown,
                ClusterError::Rpc {
                    code: tonic::Code::NotFound,
                    ..
                }
            ),
            "{unknown:?}"
        );
        worker.stop().await;
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_another_protocol_version_is_refused() {
    tokio::time::timeout(LIMIT, async {
        let coordinator = RunningCoordinator::start(fast_config()).await;
        let mut raw = client::connect(&coordinator.url).await.expect("connect");
        let refused = raw
            .register_worker(svcca_proto::v1::RegisterWorkerRequest {
                protocol_version: svcca_proto::PROTOCOL_VERSION + 1,
                name: "from the future".into(),
                concurrency: 1,
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("protocol version"),
            "{}",
            refused.message()
        );
        assert!(!svcca_engine::coordinator::code_is_retryable(
            refused.code()
        ));
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(loopback())
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn health(addr: SocketAddr, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

async fn wait_for_health(addr: SocketAddr, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(addr, service).await != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{service} on {addr} never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_liveness_never_needs_the_coordinator_and_readiness_follows_registration() {
    tokio::time::timeout(LIMIT, async {
        let coordinator_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let health_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let worker = RunningWorker::start_with(
            WorkerConfig::new(format!("http://{coordinator_addr}"))
                .with_health_listen(Some(health_addr)),
            Arc::new(SumExecutor::new()),
        );
        // No coordinator yet: alive, not ready.
        wait_for_health(
            health_addr,
            svcca_proto::LIVENESS_SERVICE,
            ServingStatus::Serving,
        )
        .await;
        assert_eq!(health(health_addr, "").await, Some(ServingStatus::Serving));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            health(health_addr, svcca_proto::READINESS_SERVICE).await,
            Some(ServingStatus::NotServing)
        );

        // The coordinator comes up late; the worker registers on its own and becomes ready.
        let coordinator =
            RunningCoordinator::start(fast_config().with_listen(coordinator_addr)).await;
        wait_for_health(
            health_addr,
            svcca_proto::READINESS_SERVICE,
            ServingStatus::Serving,
        )
        .await;
        for service in [
            "",
            svcca_proto::LIVENESS_SERVICE,
            svcca_proto::READINESS_SERVICE,
            svcca_proto::COORDINATOR_SERVICE,
        ] {
            assert_eq!(
                health(coordinator_addr, service).await,
                Some(ServingStatus::Serving),
                "coordinator {service:?}"
            );
        }

        // The coordinator goes away: the worker stays live.
        coordinator.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            health(health_addr, svcca_proto::LIVENESS_SERVICE).await,
            Some(ServingStatus::Serving)
        );
        worker.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_again_with_a_restarted_coordinator() {
    tokio::time::timeout(LIMIT, async {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let spec = SumSpec {
            task_ms: 10,
            ..SumSpec::new(3)
        };
        let first = RunningCoordinator::start(fast_config().with_listen(addr)).await;
        let worker = RunningWorker::start(&first.url, "w", Arc::new(SumExecutor::new()));
        let job_id = client::submit(&first.url, spec.to_toml())
            .await
            .expect("submit");
        let (info, _) = wait(&first.url, &job_id).await;
        assert_eq!(sum_of(&info).to_bits(), spec.expected_sum().to_bits());
        first.stop().await;

        // Same address, empty memory: the worker's heartbeat is refused (unknown worker) and
        // it registers again on its own.
        let second = RunningCoordinator::start(fast_config().with_listen(addr)).await;
        let job_id = client::submit(&second.url, spec.to_toml())
            .await
            .expect("submit");
        let (info, _) = wait(&second.url, &job_id).await;
        assert_eq!(sum_of(&info).to_bits(), spec.expected_sum().to_bits());
        assert_eq!(info.workers_alive, 1);
        worker.stop().await;
        second.stop().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_started_for_one_job_leave_when_it_ends_and_not_before() {
    tokio::time::timeout(LIMIT, async {
        let coordinator = RunningCoordinator::start(fast_config()).await;
        let executor: Arc<dyn TaskExecutor> = Arc::new(SumExecutor::new());
        let mut workers: Vec<_> = (0..2)
            .map(|i| {
                RunningWorker::start_with(
                    WorkerConfig::new(&coordinator.url)
                        .with_name(format!("w{i}"))
                        .with_exit_when_done(true),
                    executor.clone(),
                )
            })
            .collect();
        // No job yet: the workers wait for one (many heartbeats) instead of leaving.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(workers.iter().all(|w| !w.handle.is_finished()));
        let spec = SumSpec {
            task_ms: 50,
            ..SumSpec::new(8)
        };
        let job_id = client::submit(&coordinator.url, spec.to_toml())
            .await
            .expect("submit");
        let (info, _) = wait(&coordinator.url, &job_id).await;
        assert_eq!(sum_of(&info).to_bits(), spec.expected_sum().to_bits());
        // Then each leaves on its own (their stop signals are still held), having deregistered.
        let mut done = 0;
        for worker in &mut workers {
            let stats = tokio::time::timeout(Duration::from_secs(10), &mut worker.handle)
                .await
                .expect("the worker leaves once the job has ended")
                .expect("worker task")
                .expect("worker ran");
            done += stats.succeeded;
        }
        assert_eq!(done, 9, "each task ran once");
        let listed = client::list_jobs(&coordinator.url).await.expect("list");
        assert_eq!(listed[0].workers_alive, 0, "both deregistered");
        drop(workers);
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}

/// A merge that takes seconds (a cache far away) holds up no other call: while the coordinator
/// merges one result, a heartbeat, a lease call and a client's status call are answered at once,
/// and the job ends with the exact answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_merge_holds_up_no_other_call() {
    // Far longer than any of the calls below may take; each call gets half of it.
    const MERGE: Duration = Duration::from_secs(4);
    let prompt = MERGE / 2;
    tokio::time::timeout(LIMIT, async {
        let coordinator =
            RunningCoordinator::start(fast_config().with_lease_timeout(Duration::from_secs(30)))
                .await;
        let url = coordinator.url.clone();
        let spec = SumSpec {
            merge_ms: u64::try_from(MERGE.as_millis()).unwrap(),
            ..SumSpec::new(2)
        };
        let job_id = client::submit(&url, spec.to_toml()).await.expect("submit");
        let mut raw = client::connect(&url).await.expect("connect");
        let worker_id = raw
            .register_worker(svcca_proto::v1::RegisterWorkerRequest {
                protocol_version: svcca_proto::PROTOCOL_VERSION,
                name: "by hand".into(),
                concurrency: 2,
            })
            .await
            .expect("register")
            .into_inner()
            .worker_id;
        let leaser = raw.clone();
        let lease_next = |wait_ms: u64| {
            let mut raw = leaser.clone();
            let worker_id = worker_id.clone();
            async move {
                raw.lease_task(svcca_proto::v1::LeaseTaskRequest { worker_id, wait_ms })
                    .await
                    .expect("lease call")
                    .into_inner()
                    .lease
            }
        };
        let leases = [
            lease_next(1000).await.expect("a part is ready"),
            lease_next(1000).await.expect("a part is ready"),
        ];
        let executor = SumExecutor::new();
        let reporter = raw.clone();
        let report = |lease: &svcca_proto::v1::Lease| {
            let task = svcca_engine::driver::TaskSpec {
                id: lease.task_id.clone(),
                kind: lease.task_kind.clone(),
                payload: lease.payload.clone(),
            };
            let output = executor.run(&task).expect("part runs");
            let mut raw = reporter.clone();
            let request = svcca_proto::v1::ReportResultRequest {
                worker_id: worker_id.clone(),
                lease_id: lease.lease_id.clone(),
                output: output.payload,
                task_id: lease.task_id.clone(),
            };
            tokio::spawn(async move { raw.report_result(request).await })
        };
        let first = report(&leases[0]);
        // The coordinator has taken the first lease (its merge has begun) once a heartbeat that
        // lists it hears it revoked; every heartbeat until then is answered promptly too.
        let started = Instant::now();
        loop {
            let heartbeat = tokio::time::timeout(
                prompt,
                raw.heartbeat(svcca_proto::v1::HeartbeatRequest {
                    worker_id: worker_id.clone(),
                    lease_ids: vec![leases[0].lease_id.clone(), leases[1].lease_id.clone()],
                }),
            )
            .await
            .expect("a heartbeat is answered while a result is merged")
            .expect("heartbeat")
            .into_inner();
            if heartbeat.revoked_lease_ids == [leases[0].lease_id.clone()] {
                break;
            }
            assert!(heartbeat.revoked_lease_ids.is_empty(), "{heartbeat:?}");
            assert!(
                started.elapsed() < prompt,
                "the report never reached the coordinator"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let leased = tokio::time::timeout(prompt, lease_next(0))
            .await
            .expect("a lease call is answered while a result is merged");
        assert!(leased.is_none(), "no task is ready yet");
        let info = tokio::time::timeout(prompt, client::status(&url, &job_id))
            .await
            .expect("a status call is answered while a result is merged")
            .expect("status");
        assert_eq!(info.state, JobState::Running);
        assert_eq!(info.progress.done, 0, "the first merge has not ended");
        assert!(!first.is_finished(), "these calls came while the merge ran");

        // The second result merges after the first; then the reduce task, and the answer.
        let second = report(&leases[1]);
        first
            .await
            .expect("report task")
            .expect("first result accepted");
        second
            .await
            .expect("report task")
            .expect("second result accepted");
        let reduce = lease_next(1000).await.expect("the reduce task is ready");
        report(&reduce)
            .await
            .expect("report task")
            .expect("reduce accepted");
        let (info, _) = wait(&url, &job_id).await;
        assert_eq!(sum_of(&info), spec.expected_sum());
        coordinator.stop().await;
    })
    .await
    .expect("within the time limit");
}
