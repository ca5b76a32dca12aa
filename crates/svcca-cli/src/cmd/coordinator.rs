//! `svcca coordinator`: serves the coordinator (and gRPC health) for a cluster of workers.
//!
//! Also home of the small helpers the cluster subcommands share: the async runtime, the
//! termination signal, duration flags, and turning a cluster error into an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use svcca_engine::client::{
    ClientConfig, ClientTls, ClusterError, DEFAULT_MAX_MESSAGE_SIZE, Token,
};
use svcca_engine::coordinator::{
    AuthConfig, CompletingFactory, Coordinator, CoordinatorConfig, GuardedFactory, JobPolicy,
    ServerTls,
};

use crate::exit::{CmdResult, Failure};

/// Run the coordinator: workers register with it and pull tasks, clients submit jobs to it.
/// It serves gRPC (svcca.v1.Coordinator and grpc.health.v1.Health) on --listen; SIGTERM stops it.
///
/// Secure by default: with --auth-token-file and --worker-token-file, submitters and workers must
/// each present a token of their own role; without tokens it listens only on a loopback address
/// unless --insecure is given. --tls-cert/--tls-key serve TLS, and --tls-client-ca requires client
/// certificates (mutual TLS).
#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "SVCCA_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// How often workers heartbeat (e.g. `2s`, `500ms`).
    #[arg(long, env = "SVCCA_HEARTBEAT_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is lost and its tasks are re-queued.
    #[arg(long, env = "SVCCA_LEASE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub lease_timeout: Duration,
    /// A running job fails when no worker has been connected for this long.
    #[arg(long, env = "SVCCA_WORKER_GRACE", default_value = "120s", value_parser = parse_duration)]
    pub worker_grace: Duration,
    /// Attempts per task (a lost worker or a retryable error costs one) before the job fails.
    #[arg(long, env = "SVCCA_MAX_ATTEMPTS", default_value_t = 4)]
    pub max_attempts: u32,
    /// How long a task that failed with an error worth retrying (a store that refused a request)
    /// waits before it runs again, doubled after each failure of the same task, at most 30 s; the
    /// coordinator's own planning and results writes are retried on the same schedule. `0s`
    /// retries at once.
    #[arg(long, env = "SVCCA_RETRY_BACKOFF", default_value = "500ms", value_parser = parse_duration)]
    pub retry_backoff: Duration,
    /// Tokens of submitters (submit, status, cancel), one per line; each is an identity, and only
    /// the one that submitted a job may cancel it.
    #[arg(long, env = "SVCCA_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Tokens of workers, one per line (must differ from the submitters').
    #[arg(long, env = "SVCCA_WORKER_TOKEN_FILE")]
    pub worker_token_file: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address: anyone who reaches the port can submit jobs
    /// and register workers.
    #[arg(long)]
    pub insecure: bool,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SVCCA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SVCCA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "SVCCA_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// The largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "SVCCA_MAX_MESSAGE_SIZE", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,
    /// Jobs may write their output (and cache) only under this prefix (a URL or a local path;
    /// repeatable). Without it, a job may write only to an empty folder or an svcca output.
    #[arg(long = "allow-output", value_name = "PREFIX")]
    pub allow_output: Vec<String>,
    /// Jobs may read datasets only under this prefix (repeatable; default: anywhere the
    /// coordinator can read).
    #[arg(long = "allow-dataset", value_name = "PREFIX")]
    pub allow_dataset: Vec<String>,
    /// Also serve gRPC health (only) here, in plain text without a token: for the kubelet's
    /// probes, which speak neither TLS nor tokens.
    #[arg(long, env = "SVCCA_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Record every job here (a local folder or an object-store URL such as
    /// `s3://bucket/svcca-state`), so that a coordinator restarted with the same --state resumes
    /// the jobs that were running, under the same ids. Without it, a restart forgets every job.
    #[arg(long, env = "SVCCA_STATE", value_name = "URL")]
    pub state: Option<String>,
    /// Do not write analyses.json nor the HTML report (`report/`) under a job's output when its
    /// results are written (they are written by default, as `svcca sweep` writes them).
    #[arg(long, env = "SVCCA_NO_REPORT")]
    pub no_report: bool,
    /// Testing only: run the scheduler's arithmetic test job (`[test_sum]` specs) instead of
    /// svcca sweeps. Workers must be started with the same flag.
    #[arg(long, hide = true)]
    pub test_sum_jobs: bool,
}

impl CoordinatorArgs {
    pub fn config(&self) -> Result<CoordinatorConfig, Failure> {
        let tokens = |path: &Option<PathBuf>| match path {
            Some(path) => Token::read_all(path).map_err(failure),
            None => Ok(Vec::new()),
        };
        let auth = AuthConfig::new(
            tokens(&self.auth_token_file)?,
            tokens(&self.worker_token_file)?,
        );
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(ServerTls::new(cert, key).with_client_ca(self.tls_client_ca.clone()))
            }
            _ => None,
        };
        Ok(CoordinatorConfig::default()
            .with_listen(self.listen)
            .with_heartbeat_interval(self.heartbeat_interval)
            .with_lease_timeout(self.lease_timeout)
            .with_worker_grace(self.worker_grace)
            .with_max_attempts(self.max_attempts)
            .with_retry_backoff(self.retry_backoff)
            .with_auth(auth)
            .with_insecure(self.insecure)
            .with_tls(tls)
            .with_max_message_size(self.max_message_size)
            .with_health_listen(self.health_listen)
            .with_state(self.state.clone()))
    }
}

/// How `worker`, `submit`, `status` and `cancel` reach a coordinator and prove who they are.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The coordinator's URL, e.g. `http://svcca-coordinator:50051` (`https://` with --tls-ca).
    #[arg(long, env = "SVCCA_COORDINATOR")]
    pub coordinator: String,
    /// A file holding the token to present (a submitter token, or for `svcca worker` a worker
    /// token), if the coordinator requires one.
    #[arg(long, env = "SVCCA_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the coordinator's certificate: connect over TLS.
    #[arg(long, env = "SVCCA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS; needs --tls-key and --tls-ca.
    #[arg(long, env = "SVCCA_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SVCCA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the coordinator's certificate must carry (default: the URL's host).
    #[arg(long, env = "SVCCA_TLS_DOMAIN", requires = "tls_ca")]
    pub tls_domain: Option<String>,
    /// The largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "SVCCA_MAX_MESSAGE_SIZE", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,
}

impl ConnectArgs {
    /// Checks the URL and reads the token file.
    pub fn config(&self) -> Result<ClientConfig, Failure> {
        check_coordinator_url(&self.coordinator)?;
        let token = self
            .auth_token_file
            .as_deref()
            .map(Token::read_one)
            .transpose()
            .map_err(failure)?;
        Ok(ClientConfig::new(self.coordinator.clone())
            .with_token(token)
            .with_tls(self.tls())
            .with_max_message_size(self.max_message_size))
    }

    pub fn tls(&self) -> Option<ClientTls> {
        let ca = self.tls_ca.as_ref()?;
        let mut tls = ClientTls::new(ca);
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.with_identity(cert, key);
        }
        if let Some(domain) = &self.tls_domain {
            tls = tls.with_domain(domain.clone());
        }
        Some(tls)
    }
}

pub fn run(args: CoordinatorArgs) -> CmdResult {
    let config = args.config()?;
    let policy = JobPolicy::new(args.allow_output.clone(), args.allow_dataset.clone());
    policy.validate().map_err(Failure::fatal)?;
    let jobs: std::sync::Arc<dyn svcca_engine::driver::JobDriverFactory> = if args.test_sum_jobs {
        std::sync::Arc::new(svcca_engine::coordinator::testkit::SumJobFactory)
    } else {
        svcca_engine::job_factory()
    };
    // The policy is checked first: the analyses read the job's labels.
    let jobs: std::sync::Arc<dyn svcca_engine::driver::JobDriverFactory> = if args.no_report {
        jobs
    } else {
        std::sync::Arc::new(CompletingFactory::new(
            jobs,
            std::sync::Arc::new(crate::cmd::sweep_outputs::SweepOutputsHook),
        ))
    };
    let factory: std::sync::Arc<dyn svcca_engine::driver::JobDriverFactory> =
        std::sync::Arc::new(GuardedFactory::new(jobs, policy));
    let runtime = runtime()?;
    let outcome = runtime.block_on(async move {
        let coordinator = Coordinator::bind(config, factory).await?;
        // Tests and wrappers read this line to learn a port-0 address.
        tracing::info!(addr = %coordinator.local_addr(), "listening");
        eprintln!(
            "svcca coordinator listening on {}",
            coordinator.local_addr()
        );
        coordinator.serve(shutdown_signal()).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome.map_err(failure)
}

/// A small multi-threaded runtime: the network side needs little, compute runs on blocking
/// threads.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::retryable(format!("cannot start the async runtime: {e}")))
}

/// Completes on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process")
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Exit code 11 for what may pass on a retry (an unreachable coordinator, lost workers), 10 for
/// the rest.
pub(crate) fn failure(error: ClusterError) -> Failure {
    if error.is_retryable() {
        Failure::retryable(error.to_string())
    } else {
        Failure::fatal(error.to_string())
    }
}

/// Checks a coordinator URL before anything connects. A URL without a scheme or host parses as
/// something else entirely (`svcca-coordinator:50051` is scheme `svcca-coordinator`), and would
/// only show up as a connection that never succeeds: retried forever by a worker, reported as
/// retryable by a client.
pub(crate) fn check_coordinator_url(url: &str) -> Result<(), Failure> {
    let bad = |why: String| {
        Failure::fatal(format!(
            "invalid coordinator URL `{url}`: {why} (expected e.g. http://svcca-coordinator:50051)"
        ))
    };
    let lower = url.to_ascii_lowercase();
    let scheme_len = ["http://", "https://"]
        .iter()
        .find(|s| lower.starts_with(*s))
        .map(|s| s.len())
        .ok_or_else(|| bad("it must start with http:// or https://".into()))?;
    let authority = url[scheme_len..]
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("the IPv6 address has no closing `]`".into()))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad(format!("`{host}` is not an IPv6 address")));
            }
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad(format!("unexpected `{after}` after the host"))),
                },
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(bad("it names no host".into()));
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad(format!("`{host}` is not a host name or address")));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(bad(format!("`{port}` is not a port number (0-65535)")));
    }
    Ok(())
}

/// Parses `250ms`, `2s`, `5m`, `1h` or a bare number of seconds (`1.5`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try `500ms`, `2s`, `5m`)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{check_coordinator_url, parse_duration};
    use std::time::Duration;

    #[test]
    fn coordinator_urls_need_a_scheme_a_host_and_a_numeric_port() {
        for good in [
            "http://svcca-coordinator:50051",
            "https://coord.example.org",
            "http://127.0.0.1:50051/",
            "HTTP://[::1]:50051",
        ] {
            assert!(check_coordinator_url(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("notaurl", "must start with http"),
            ("svcca-coordinator:50051", "must start with http"),
            ("grpc://host:1", "must start with http"),
            ("http://", "names no host"),
            ("http://:50051", "names no host"),
            ("http://host:port", "`port` is not a port number"),
            ("http://host:99999", "`99999` is not a port number"),
            ("http://ho st:1", "`ho st` is not a host name"),
            ("http://[::1", "no closing"),
            ("http://[nope]:1", "not an IPv6 address"),
        ] {
            let failure = check_coordinator_url(bad).expect_err(bad);
            assert!(!failure.retryable, "{bad}");
            assert!(failure.message.contains(why), "{bad}: {}", failure.message);
            assert!(failure.message.contains(bad), "{bad}: {}", failure.message);
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
