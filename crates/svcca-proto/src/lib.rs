//! svcca-proto: the gRPC contract between svcca's coordinator, workers and clients.
//!
//! The protocol lives in `proto/svcca.proto` (package `svcca.v1`); this crate compiles it with a
//! vendored `protoc` at build time, so nothing downstream needs one. It holds no logic: the
//! coordinator and worker services are in `svcca-engine`.
//!
//! - [`v1`]: the generated messages, the `Coordinator` client and server.
//! - [`PROTOCOL_VERSION`]: what workers send when they register; a coordinator refuses others.
//! - The health-check service names that deployments probe ([`LIVENESS_SERVICE`],
//!   [`READINESS_SERVICE`]).

/// Messages and services of `proto/svcca.proto`.
pub mod v1 {
    tonic::include_proto!("svcca.v1");
}

/// Version of the worker ↔ coordinator protocol. Bump it whenever a change would make an older
/// worker misread a lease or a newer one be misread (new required semantics, not new optional
/// fields); the package name's `v1` changes only with incompatible message layouts.
pub const PROTOCOL_VERSION: u32 = 2;

/// Health-check service name that is SERVING for as long as the process is alive. Liveness probes
/// must never depend on another process (a worker stays live while its coordinator is away).
pub const LIVENESS_SERVICE: &str = "liveness";

/// Health-check service name that is SERVING once the role is ready for work: for a worker, after
/// it has registered with its coordinator (and not while it drains); for a coordinator, once it
/// accepts connections.
pub const READINESS_SERVICE: &str = "readiness";

/// The fully qualified gRPC name of the coordinator service, also reported by its health service.
pub const COORDINATOR_SERVICE: &str = "svcca.v1.Coordinator";
