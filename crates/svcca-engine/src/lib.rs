//! svcca-engine: runs comparison jobs across workers.
//!
//! Two halves meet at the traits in [`driver`]:
//! - the *job* half (`spec`, `plan`, `exec`, `outputs`, `cache`) knows the maths and the data: it
//!   turns a [`spec::JobSpec`] into tasks, executes a task on a worker, merges task outputs in a fixed
//!   order and writes the results;
//! - the *cluster* half (`coordinator`, `worker`, `client`) knows gRPC, leases, heartbeats and
//!   retries, and treats tasks as opaque; `metrics` serves both roles' Prometheus metrics.
//!   `error` ([`error::ClusterError`]) and `credentials` (tokens, TLS, the gRPC client) sit
//!   beneath all three, so coordinator and worker never import `client`, which builds on them.

pub mod cache;
pub mod client;
pub mod coordinator;
pub mod credentials;
pub mod driver;
pub mod error;
pub mod exec;
pub mod job;
pub mod metrics;
pub mod outputs;
pub mod pair_products;
pub mod plan;
pub mod source;
pub mod spec;
pub mod worker;

/// The sweep job logic for a coordinator: builds a [`job::SweepDriver`] from a job spec's TOML,
/// reading datasets through svcca-storage.
pub fn job_factory() -> std::sync::Arc<dyn driver::JobDriverFactory> {
    let opener = std::sync::Arc::new(source::StorageOpener::default());
    std::sync::Arc::new(job::SweepFactory::new(opener))
}

/// The sweep task runner for a worker ([`exec::SweepExecutor`] over svcca-storage datasets).
pub fn task_executor(config: exec::ExecutorConfig) -> std::sync::Arc<dyn driver::TaskExecutor> {
    let opener = std::sync::Arc::new(source::StorageOpener::default());
    std::sync::Arc::new(exec::SweepExecutor::new(opener, config))
}
