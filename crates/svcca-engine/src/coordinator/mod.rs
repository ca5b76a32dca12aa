//! The coordinator: holds jobs, hands their tasks to workers as leases, and survives lost workers.
//!
//! - [`state`]: the state machine ([`Scheduler`]), pure and clock-injected, testable without gRPC;
//! - `service`: the tonic glue that serves it as `svcca.v1.Coordinator`, with the gRPC health
//!   service on the same port;
//! - [`auth`]: who may call what (submitter and worker tokens, identities);
//! - [`policy`]: where submitted jobs may read and write (`--allow-output`, `--allow-dataset`);
//! - [`completion`]: work after a job's results are written (the binary's analyses and report),
//!   off the scheduler's lock;
//! - [`Coordinator`]: binds a listener and serves both until told to stop, over TLS when
//!   configured ([`ServerTls`]).
//!
//! With a state location ([`CoordinatorConfig::state`]) every job is recorded there and a
//! restarted coordinator resumes the jobs that were running, under their ids (`durable`); without
//! one, jobs live in memory only. Workers re-register on their own after a restart.

pub mod auth;
pub mod completion;
pub mod durable;
pub mod policy;
mod scrape;
mod service;
pub mod state;
pub mod testkit;
pub(crate) mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify, watch};

pub use auth::{AuthConfig, Identity, Role};
pub use completion::{CompletedJob, CompletingFactory, CompletionHook};
pub use policy::{GuardedFactory, JobPolicy};
pub use state::{
    JobFailure, JobInfo, JobState, LeasedTask, Registration, Scheduler, SchedulerError,
};
pub use wire::code_is_retryable;

use crate::credentials::{DEFAULT_MAX_MESSAGE_SIZE, read_pem};
use crate::driver::JobDriverFactory;
use crate::error::ClusterError;

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
    /// How long a task that failed with an error worth retrying waits before it is leased again,
    /// doubled after each failure of the same task (at most 30 s); planning and writing a job's
    /// results are retried on the same schedule. A lost worker's tasks go out again at once.
    pub retry_backoff: Duration,
    /// The longest a worker's LeaseTask call is held open waiting for work.
    pub max_lease_wait: Duration,
    /// Tokens of submitters and workers; none configured means no authentication.
    pub auth: AuthConfig,
    /// Serve without authentication on a non-loopback address (refused otherwise).
    pub insecure: bool,
    /// The largest gRPC message the coordinator accepts or sends, in bytes.
    pub max_message_size: usize,
    /// Serve over TLS (and with a client CA, require client certificates).
    pub tls: Option<ServerTls>,
    /// Also serve the gRPC health service, in plain text and without authentication, here: for
    /// probes that speak neither TLS nor tokens (the kubelet's), and Prometheus metrics at
    /// `GET /metrics` (see [`crate::metrics`]). It serves nothing else.
    pub health_listen: Option<SocketAddr>,
    /// Where jobs are recorded so that a restarted coordinator resumes them (a local folder or
    /// an object-store URL); `None` keeps jobs in memory only.
    pub state: Option<String>,
}

/// PEM files for serving TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a CA, every client must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }
    pub fn with_client_ca(mut self, ca: Option<PathBuf>) -> Self {
        self.client_ca = ca;
        self
    }

    fn load(&self) -> Result<tonic::transport::ServerTlsConfig, ClusterError> {
        use tonic::transport::{Certificate, Identity as TlsIdentity, ServerTlsConfig};
        let mut config = ServerTlsConfig::new().identity(TlsIdentity::from_pem(
            read_pem(&self.cert, "certificate")?,
            read_pem(&self.key, "private key")?,
        ));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_pem(ca, "client CA")?));
        }
        Ok(config)
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            heartbeat_interval: Duration::from_secs(2),
            lease_timeout: Duration::from_secs(10),
            worker_grace: Duration::from_secs(120),
            max_attempts: 4,
            retry_backoff: Duration::from_millis(500),
            max_lease_wait: Duration::from_secs(5),
            auth: AuthConfig::default(),
            insecure: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            tls: None,
            health_listen: None,
            state: None,
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
    pub fn with_retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }
    pub fn with_max_lease_wait(mut self, wait: Duration) -> Self {
        self.max_lease_wait = wait;
        self
    }
    pub fn with_auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }
    pub fn with_insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }
    pub fn with_health_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.health_listen = addr;
        self
    }
    pub fn with_state(mut self, state: Option<String>) -> Self {
        self.state = state;
        self
    }

    /// Whether callers must prove who they are: tokens, or client certificates (mutual TLS).
    pub fn authenticates(&self) -> bool {
        self.auth.is_enabled() || self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
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
        if self.max_message_size < 1024 {
            return invalid(format!(
                "the message size limit ({} bytes) is too small for any svcca message; the \
                 default is {DEFAULT_MAX_MESSAGE_SIZE}",
                self.max_message_size
            ));
        }
        self.auth
            .validate()
            .map_err(|message| ClusterError::InvalidConfig { message })?;
        if !self.authenticates() && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ClusterError::InsecureListen { addr: self.listen });
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
    server: tonic::transport::Server,
    /// Whether clients must use https://.
    tls: bool,
    health_listener: Option<TcpListener>,
}

impl Coordinator {
    /// Validates the config and binds the listen address (so callers learn a port-0 address
    /// before serving).
    pub async fn bind(
        config: CoordinatorConfig,
        factory: Arc<dyn JobDriverFactory>,
    ) -> Result<Self, ClusterError> {
        config.validate()?;
        if !config.authenticates() && !config.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %config.listen,
                "INSECURE: serving without authentication (--insecure): anyone who can reach this \
                 port can submit jobs that write to any output the coordinator can write, cancel \
                 jobs and register as a worker"
            );
        }
        let tls = config.tls.as_ref().map(ServerTls::load).transpose()?;
        // Built here so that a certificate and key that do not fit fail before anything listens.
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            server = server
                .tls_config(tls.clone())
                .map_err(|e| ClusterError::TlsConfig {
                    message: crate::error::error_chain(&e),
                })?;
        }
        let tls = tls.is_some();
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
        let health_listener = match config.health_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ClusterError::Bind { addr, source })?,
            ),
            None => None,
        };
        let records = config
            .state
            .as_deref()
            .map(durable::JobRecords::open)
            .transpose()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(service::Shared {
            durable: durable::Durable::new(records),
            max_lease_wait: config.max_lease_wait,
            verifier: auth::Verifier::new(&config.auth),
            max_message_size: config.max_message_size,
            scheduler: Mutex::new(Scheduler::new(config, Instant::now())),
            factory,
            work: Notify::new(),
            shutdown: shutdown_rx,
        });
        durable::restore(&shared).await?;
        Ok(Self {
            listener,
            local_addr,
            shared,
            shutdown_tx,
            server,
            tls,
            health_listener,
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
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// Serves until `shutdown` completes. Open watch streams and long polls end at shutdown; jobs
    /// still running are abandoned, or, with a state location, recorded for the next coordinator.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ClusterError> {
        let Coordinator {
            listener,
            local_addr,
            shared,
            shutdown_tx,
            server,
            tls: _,
            health_listener,
        } = self;
        let max_message_size = shared.max_message_size;
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

        let plain_health = health_listener.map(|listener| {
            let routes = tonic::service::Routes::new(health_service.clone());
            let stop = shared.shutdown.clone();
            let render = scrape::render(shared.clone());
            tokio::spawn(async move {
                let addr = listener.local_addr().ok();
                tracing::info!(?addr, "health service and /metrics listening");
                let outcome =
                    crate::metrics::serve_health_and_metrics(listener, routes, render, stop).await;
                if let Err(error) = outcome {
                    tracing::error!(%error, "health service failed");
                }
            })
        });
        let ticker = tokio::spawn(service::tick_loop(shared.clone()));
        let recorder = tokio::spawn(durable::persist_loop(shared.clone()));
        let last_records = shared.clone();
        tracing::info!(%local_addr, "coordinator serving");
        let signal = async move {
            shutdown.await;
            tracing::info!("coordinator shutting down");
            let _ = shutdown_tx.send(true);
        };
        let mut server = server;
        let outcome = server
            .add_service(health_service)
            .add_service(
                svcca_proto::v1::coordinator_server::CoordinatorServer::new(
                    service::CoordinatorService::new(shared),
                )
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size),
            )
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY a reply written in two segments (headers, then data) waits
                // for the client's delayed ACK: ~40 ms between a worker's report and its next
                // lease, longer than many tasks.
                tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |stream| {
                        if let Ok(stream) = &stream
                            && let Err(error) = stream.set_nodelay(true)
                        {
                            tracing::debug!(%error, "could not set TCP_NODELAY");
                        }
                        stream
                    },
                ),
                signal,
            )
            .await;
        ticker.abort();
        recorder.abort();
        durable::persist_all(&last_records).await;
        if let Some(health) = plain_health {
            let _ = health.await;
        }
        outcome.map_err(|source| ClusterError::Serve {
            addr: local_addr,
            source,
        })
    }
}
