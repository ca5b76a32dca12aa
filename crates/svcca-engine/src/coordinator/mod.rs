//! The coordinator: holds jobs, hands their tasks to workers as leases, and survives lost workers.
//!
//! - [`state`]: the state machine ([`Scheduler`]), pure and clock-injected, testable without gRPC;
//! - `service`: the tonic glue that serves it as `svcca.v1.Coordinator`, with the gRPC health
//!   service on the same port;
//! - [`Coordinator`]: binds a listener and serves both until told to stop.
//!
//! Jobs live in memory only: a restarted coordinator has forgotten them (workers re-register on
//! their own; clients must submit again, and a job's stored results make the rerun cheap).

mod service;
pub mod state;
pub mod testkit;
pub(crate) mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify, watch};

pub use state::{
    JobFailure, JobInfo, JobState, LeasedTask, Registration, Scheduler, SchedulerError,
};
pub use wire::code_is_retryable;

use crate::client::ClusterError;
use crate::driver::JobDriverFactory;

/// The coordinator's settings. Build it in code with [`Default`] and the `with_*` methods; the CLI
/// converts its flags into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Where to serve gRPC (the coordinator service and health). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// How often workers must heartbeat (told to them when they register).
    pub heartbeat_interval: Duration,
    /// A worker silent for longer than this is lost, and its leases are re-queued.
    pub lease_timeout: Duration,
    /// A running job fails when no worker has been registered for this long.
    pub worker_grace: Duration,
    /// Attempts per task before the job fails (each lost lease or retryable failure is one).
    pub max_attempts: u32,
    /// The longest a worker's LeaseTask call is held open waiting for work.
    pub max_lease_wait: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            heartbeat_interval: Duration::from_secs(2),
            lease_timeout: Duration::from_secs(10),
            worker_grace: Duration::from_secs(120),
            max_attempts: 4,
            max_lease_wait: Duration::from_secs(5),
        }
    }
}

impl CoordinatorConfig {
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }
    pub fn with_lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout;
        self
    }
    pub fn with_worker_grace(mut self, grace: Duration) -> Self {
        self.worker_grace = grace;
        self
    }
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }
    pub fn with_max_lease_wait(mut self, wait: Duration) -> Self {
        self.max_lease_wait = wait;
        self
    }

    /// Rejects settings under which the coordinator would misjudge live workers.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let invalid = |message: String| Err(ClusterError::InvalidConfig { message });
        if self.heartbeat_interval.is_zero() {
            return invalid("the heartbeat interval must be above zero".into());
        }
        if self.lease_timeout <= self.heartbeat_interval {
            return invalid(format!(
                "the lease timeout ({:?}) must be longer than the heartbeat interval ({:?}), \
                 or every worker would be lost between two heartbeats",
                self.lease_timeout, self.heartbeat_interval
            ));
        }
        if self.max_attempts == 0 {
            return invalid("max attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// A bound coordinator, ready to [`serve`](Coordinator::serve).
pub struct Coordinator {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<service::Shared>,
    shutdown_tx: watch::Sender<bool>,
}

impl Coordinator {
    /// Validates the config and binds the listen address (so callers learn a port-0 address
    /// before serving).
    pub async fn bind(
        config: CoordinatorConfig,
        factory: Arc<dyn JobDriverFactory>,
    ) -> Result<Self, ClusterError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ClusterError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ClusterError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(service::Shared {
            max_lease_wait: config.max_lease_wait,
            scheduler: Mutex::new(Scheduler::new(config, Instant::now())),
            factory,
            work: Notify::new(),
            shutdown: shutdown_rx,
        });
        Ok(Self {
            listener,
            local_addr,
            shared,
            shutdown_tx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients and workers on this machine use to reach it.
    pub fn url(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// Serves until `shutdown` completes. Open watch streams and long polls end at shutdown; jobs
    /// still running are abandoned (they live in memory only).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ClusterError> {
        let Coordinator {
            listener,
            local_addr,
            shared,
            shutdown_tx,
        } = self;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for name in [
            svcca_proto::LIVENESS_SERVICE,
            svcca_proto::READINESS_SERVICE,
            svcca_proto::COORDINATOR_SERVICE,
        ] {
            health_reporter
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }

        let ticker = tokio::spawn(service::tick_loop(shared.clone()));
        tracing::info!(%local_addr, "coordinator serving");
        let signal = async move {
            shutdown.await;
            tracing::info!("coordinator shutting down");
            let _ = shutdown_tx.send(true);
        };
        let outcome = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(svcca_proto::v1::coordinator_server::CoordinatorServer::new(
                service::CoordinatorService::new(shared),
            ))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                signal,
            )
            .await;
        ticker.abort();
        outcome.map_err(|source| ClusterError::Serve {
            addr: local_addr,
            source,
        })
    }
}
