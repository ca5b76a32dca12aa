//! The coordinator's defences, in process over real gRPC on loopback: token roles, unguessable
//! job ids, cancel by the submitter only, message size limits, and a worker that reports forged
//! results (a raw gRPC client here) being dropped while the job still completes with the right
//! answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use svcca_engine::client::{self, ClientConfig, ClusterError, Token};
use svcca_engine::coordinator::testkit::{SumExecutor, SumJobFactory, SumSpec, sum_from_summary};
use svcca_engine::coordinator::{AuthConfig, Coordinator, CoordinatorConfig, JobState};
use svcca_engine::worker::{Worker, WorkerConfig};
use svcca_proto::v1;
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(60);

fn token(text: &str) -> Token {
    Token::new(text).expect("a valid token")
}

fn alice() -> Token {
    token("alice-0123456789abcdef")
}
fn bob() -> Token {
    token("bob-0123456789abcdef")
}
fn worker_token() -> Token {
    token("worker-0123456789abcdef")
}

fn config() -> CoordinatorConfig {
    CoordinatorConfig::default()
        .with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_lease_timeout(Duration::from_millis(600))
        .with_worker_grace(Duration::from_secs(5))
        .with_max_lease_wait(Duration::from_millis(300))
        .with_auth(AuthConfig::new(vec![alice(), bob()], vec![worker_token()]))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A coordinator serving in the background; stopped when `stop` is sent.
async fn start(config: CoordinatorConfig) -> (String, watch::Sender<bool>) {
    let coordinator = Coordinator::bind(config, Arc::new(SumJobFactory))
        .await
        .expect("bind");
    let url = coordinator.url();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(coordinator.serve(stopped(rx)));
    (url, stop)
}

fn as_user(url: &str, token: Option<Token>) -> ClientConfig {
    ClientConfig::new(url).with_token(token)
}

fn code_of(error: &ClusterError) -> Option<tonic::Code> {
    match error {
        ClusterError::Rpc { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_needs_its_own_token() {
    tokio::time::timeout(LIMIT, async {
        let (url, stop) = start(config()).await;
        let spec = SumSpec::new(2).to_toml();
        for (who, token) in [
            ("no token", None),
            ("a wrong token", Some(token("mallory-0123456789abcdef"))),
            ("a worker token", Some(worker_token())),
        ] {
            let error = client::submit(as_user(&url, token), spec.clone())
                .await
                .expect_err(who);
            assert_eq!(
                code_of(&error),
                Some(tonic::Code::Unauthenticated),
                "{who}: {error}"
            );
            assert!(!error.is_retryable(), "{who}: {error}");
            assert!(error.to_string().contains("token"), "{who}: {error}");
        }
        let listed = client::list_jobs(as_user(&url, None)).await;
        assert!(listed.is_err(), "listing needs a token too");

        // A submitter token cannot register a worker.
        let mut raw = client::connect(as_user(&url, Some(alice())))
            .await
            .expect("connect");
        let refused = raw
            .register_worker(v1::RegisterWorkerRequest {
                protocol_version: svcca_proto::PROTOCOL_VERSION,
                name: "impostor".into(),
                concurrency: 1,
            })
            .await
            .expect_err("a submitter token registers no worker");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);

        // And a worker started with one gives up at once, saying why.
        let worker = Worker::new(
            WorkerConfig::new(url.clone()).with_token(Some(alice())),
            Arc::new(SumExecutor::new()),
        )
        .run(std::future::pending());
        let error = tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .expect("the worker stops trying")
            .expect_err("refused");
        assert!(
            matches!(error, ClusterError::Refused { .. }) && error.to_string().contains("token"),
            "{error}"
        );
        let _ = stop.send(true);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_ids_are_random_and_only_the_submitter_cancels() {
    tokio::time::timeout(LIMIT, async {
        let (url, stop) = start(config()).await;
        let spec = SumSpec::new(2).to_toml();
        let a = client::submit(as_user(&url, Some(alice())), spec.clone())
            .await
            .expect("submit");
        // The same spec from another submitter is another job (an identical one from the same
        // submitter would join `a`).
        let b = client::submit(as_user(&url, Some(bob())), spec.clone())
            .await
            .expect("submit");
        for id in [&a, &b] {
            let hex = id.strip_prefix("job-").expect("job- prefix");
            assert_eq!(hex.len(), 32, "128 random bits: {id}");
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        assert_ne!(a, b);

        let error = client::cancel(as_user(&url, Some(bob())), &a)
            .await
            .expect_err("bob cannot cancel alice's job");
        assert_eq!(
            code_of(&error),
            Some(tonic::Code::PermissionDenied),
            "{error}"
        );
        assert!(error.to_string().contains("only its submitter"), "{error}");
        let info = client::status(as_user(&url, Some(bob())), &a)
            .await
            .expect("bob may look");
        assert_eq!(info.state, JobState::Running);

        let info = client::cancel(as_user(&url, Some(alice())), &a)
            .await
            .expect("alice cancels her job");
        assert_eq!(info.state, JobState::Cancelled);
        let _ = stop.send(true);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_limit_are_refused() {
    tokio::time::timeout(LIMIT, async {
        let (url, stop) = start(config().with_max_message_size(64 << 10)).await;
        let padded = format!("{}# {}\n", SumSpec::new(2).to_toml(), "x".repeat(100 << 10));
        let user = as_user(&url, Some(alice())).with_max_message_size(1 << 20);
        let error = client::submit(user.clone(), padded)
            .await
            .expect_err("over the coordinator's limit");
        assert_eq!(code_of(&error), Some(tonic::Code::OutOfRange), "{error}");
        // Under the limit, the same coordinator takes it.
        client::submit(user, SumSpec::new(2).to_toml())
            .await
            .expect("a small spec passes");
        let _ = stop.send(true);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reporting_garbage_is_dropped_and_the_job_still_completes() {
    tokio::time::timeout(LIMIT, async {
        let (url, stop) = start(config()).await;
        let worker_client = as_user(&url, Some(worker_token()));

        // The forger registers first, alone, so that it is the one leased the first tasks.
        let mut forger = client::connect(worker_client.clone())
            .await
            .expect("connect");
        let registered = forger
            .register_worker(v1::RegisterWorkerRequest {
                protocol_version: svcca_proto::PROTOCOL_VERSION,
                name: "forger".into(),
                concurrency: 2,
            })
            .await
            .expect("a worker token registers")
            .into_inner();
        let forger_id = registered.worker_id;

        let spec = SumSpec {
            task_ms: 20,
            ..SumSpec::new(6)
        };
        let user = as_user(&url, Some(alice()));
        let job = client::submit(user.clone(), spec.to_toml())
            .await
            .expect("submit");
        let lease = |forger: &mut client::Client| {
            let mut forger = forger.clone();
            let worker_id = forger_id.clone();
            async move {
                forger
                    .lease_task(v1::LeaseTaskRequest {
                        worker_id,
                        wait_ms: 1000,
                    })
                    .await
                    .expect("lease")
                    .into_inner()
                    .lease
                    .expect("a task is ready")
            }
        };
        let first = lease(&mut forger).await;
        let second = lease(&mut forger).await;

        // A forged number for the leased task: outside what its terms can sum to.
        let refused = forger
            .report_result(v1::ReportResultRequest {
                worker_id: forger_id.clone(),
                lease_id: first.lease_id.clone(),
                output: 1.0e6f64.to_le_bytes().to_vec(),
                task_id: first.task_id.clone(),
            })
            .await
            .expect_err("garbage is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("invalid result"), "{refused:?}");

        // The forger is gone for good: its other lease is not honoured, its calls are refused.
        let after = forger
            .report_result(v1::ReportResultRequest {
                worker_id: forger_id.clone(),
                lease_id: second.lease_id.clone(),
                output: f64::NAN.to_le_bytes().to_vec(),
                task_id: second.task_id.clone(),
            })
            .await
            .expect_err("a dropped worker reports nothing");
        assert_eq!(after.code(), tonic::Code::PermissionDenied, "{after:?}");
        let heartbeat = forger
            .heartbeat(v1::HeartbeatRequest {
                worker_id: forger_id.clone(),
                lease_ids: vec![],
            })
            .await
            .expect_err("a dropped worker is not heard");
        assert_eq!(heartbeat.code(), tonic::Code::PermissionDenied);

        // An honest worker finishes the job, forged tasks included, with the exact answer.
        let (stop_worker, rx) = watch::channel(false);
        let honest = tokio::spawn(
            Worker::new(
                WorkerConfig::new(url.clone())
                    .with_token(Some(worker_token()))
                    .with_lease_wait(Duration::from_millis(300)),
                Arc::new(SumExecutor::new()),
            )
            .run(stopped(rx)),
        );
        let info = client::wait_for_job(user, &job, |_| {})
            .await
            .expect("watch");
        assert_eq!(info.state, JobState::Succeeded, "{info:?}");
        let sum = sum_from_summary(info.summary.as_ref().expect("summary")).expect("sum");
        assert_eq!(sum.to_bits(), spec.expected_sum().to_bits(), "{sum}");
        let _ = stop_worker.send(true);
        honest.await.expect("worker task").expect("worker ran");
        let _ = stop.send(true);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_naming_another_task_is_refused() {
    tokio::time::timeout(LIMIT, async {
        let (url, stop) = start(config()).await;
        let mut forger = client::connect(as_user(&url, Some(worker_token())))
            .await
            .expect("connect");
        let worker_id = forger
            .register_worker(v1::RegisterWorkerRequest {
                protocol_version: svcca_proto::PROTOCOL_VERSION,
                name: "swapper".into(),
                concurrency: 1,
            })
            .await
            .expect("register")
            .into_inner()
            .worker_id;
        client::submit(as_user(&url, Some(alice())), SumSpec::new(3).to_toml())
            .await
            .expect("submit");
        let lease = forger
            .lease_task(v1::LeaseTaskRequest {
                worker_id: worker_id.clone(),
                wait_ms: 1000,
            })
            .await
            .expect("lease")
            .into_inner()
            .lease
            .expect("a task");
        // A plausible number, computed for another task.
        let refused = forger
            .report_result(v1::ReportResultRequest {
                worker_id,
                lease_id: lease.lease_id,
                output: 0.5f64.to_le_bytes().to_vec(),
                task_id: "part-2".into(),
            })
            .await
            .expect_err("another task's result is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("names task"), "{refused:?}");
        let _ = stop.send(true);
    })
    .await
    .expect("within the time limit");
}
