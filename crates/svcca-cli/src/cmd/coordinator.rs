//! `svcca coordinator`: serves the coordinator (and gRPC health) for a cluster of workers.
//!
//! Also home of the small helpers the cluster subcommands share: the async runtime, the
//! termination signal, duration flags, and turning a cluster error into an exit code.

use std::net::SocketAddr;
use std::time::Duration;

use svcca_engine::client::ClusterError;
use svcca_engine::coordinator::{Coordinator, CoordinatorConfig};

use crate::exit::{CmdResult, Failure};

/// Run the coordinator: workers register with it and pull tasks, clients submit jobs to it.
/// It serves gRPC (svcca.v1.Coordinator and grpc.health.v1.Health) on --listen; SIGTERM stops it.
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
    /// Testing only: run the scheduler's arithmetic test job (`[test_sum]` specs) instead of
    /// svcca sweeps. Workers must be started with the same flag.
    #[arg(long, hide = true)]
    pub test_sum_jobs: bool,
}

impl CoordinatorArgs {
    pub fn config(&self) -> CoordinatorConfig {
        CoordinatorConfig::default()
            .with_listen(self.listen)
            .with_heartbeat_interval(self.heartbeat_interval)
            .with_lease_timeout(self.lease_timeout)
            .with_worker_grace(self.worker_grace)
            .with_max_attempts(self.max_attempts)
    }
}

pub fn run(args: CoordinatorArgs) -> CmdResult {
    let config = args.config();
    let factory: std::sync::Arc<dyn svcca_engine::driver::JobDriverFactory> = if args.test_sum_jobs
    {
        std::sync::Arc::new(svcca_engine::coordinator::testkit::SumJobFactory)
    } else {
        svcca_engine::job_factory()
    };
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
