//! svcca-engine: runs comparison jobs across workers.
//!
//! Two halves meet at the traits in [`driver`]:
//! - the *job* half (`spec`, `plan`, `exec`, `outputs`, `cache`) knows the maths and the data: it
//!   turns a [`spec::JobSpec`] into tasks, executes a task on a worker, merges task outputs in a fixed
//!   order and writes the results;
//! - the *cluster* half (`coordinator`, `worker`, `client`) knows gRPC, leases, heartbeats and
//!   retries, and treats tasks as opaque.

pub mod client;
pub mod coordinator;
pub mod driver;
pub mod worker;
