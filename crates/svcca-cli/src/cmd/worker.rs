//! `svcca worker`: registers with a coordinator and runs the tasks it leases.

use std::net::SocketAddr;
use std::time::Duration;

use svcca_engine::worker::{Worker, WorkerConfig};

use super::coordinator::{ConnectArgs, failure, parse_duration, runtime, shutdown_signal};
use crate::exit::CmdResult;

/// Run a worker: it connects to the coordinator (waiting for it if needed), pulls tasks, reads
/// shards from the object store and reports results. It serves gRPC health on --health-listen
/// (service `liveness`: the process is up; `readiness`: registered and not draining). On SIGTERM
/// it stops taking tasks, finishes those it holds within --drain-timeout, hands back the rest,
/// and exits 0; with --exit-when-done it does the same once its coordinator's job has ended.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Tasks to run at once.
    #[arg(long, env = "SVCCA_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// Compute threads per task (default: the cores divided by --concurrency).
    #[arg(long, env = "SVCCA_THREADS")]
    pub threads: Option<usize>,
    /// Address to serve gRPC health on.
    #[arg(long, env = "SVCCA_HEALTH_LISTEN", default_value = "0.0.0.0:50052")]
    pub health_listen: SocketAddr,
    /// On SIGTERM, how long to wait for running tasks before handing them back.
    #[arg(long, env = "SVCCA_DRAIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Name shown in the coordinator's logs (default: $HOSTNAME, the pod name on Kubernetes).
    #[arg(long, env = "SVCCA_WORKER_NAME")]
    pub name: Option<String>,
    /// Exit (0) once the coordinator has no job left, after it had one while this worker was
    /// there: for workers started for one job, as in a per-run pool (deploy/README.md).
    #[arg(long, env = "SVCCA_EXIT_WHEN_DONE")]
    pub exit_when_done: bool,
    /// Testing only: run the scheduler's arithmetic test tasks (see `svcca coordinator`).
    #[arg(long, hide = true)]
    pub test_sum_jobs: bool,
}

pub fn run(args: WorkerArgs) -> CmdResult {
    let client = args.connect.config()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let concurrency = args.concurrency.max(1);
    let threads = args.threads.unwrap_or(cores / concurrency).max(1);
    // The moments and whitening products in svcca-core use the process-wide setting: without
    // this each concurrent task would spread over every core and the tasks would contend.
    svcca_core::set_parallelism(threads);
    let executor: std::sync::Arc<dyn svcca_engine::driver::TaskExecutor> = if args.test_sum_jobs {
        std::sync::Arc::new(svcca_engine::coordinator::testkit::SumExecutor::new())
    } else {
        crate::heap::HeapReleasingExecutor::wrap(svcca_engine::task_executor(
            svcca_engine::exec::ExecutorConfig::default().with_threads(threads),
        ))
    };
    let name = args
        .name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let config = WorkerConfig::new(client.url)
        .with_token(client.token)
        .with_tls(client.tls)
        .with_max_message_size(client.max_message_size)
        .with_name(name)
        .with_concurrency(concurrency)
        .with_health_listen(Some(args.health_listen))
        .with_drain_timeout(args.drain_timeout)
        .with_exit_when_done(args.exit_when_done);
    let runtime = runtime()?;
    let outcome = runtime.block_on(Worker::new(config, executor).run(shutdown_signal()));
    // Tasks abandoned at the drain timeout may still be computing on blocking threads: do not
    // wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    outcome.map(|_| ()).map_err(failure)
}
