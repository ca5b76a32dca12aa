//! Prometheus metrics in the text exposition format (version 0.0.4), served at `GET /metrics` on
//! the plain-text health listener of the coordinator and of each worker.
//!
//! The health listener speaks gRPC (HTTP/2 with prior knowledge, for the kubelet's probes); a
//! Prometheus scrape is an HTTP/1.1 `GET`. Each accepted connection is told apart by its first
//! bytes (`GET ` against HTTP/2's `PRI ` preface): a scrape is answered here, by hand, and closed;
//! anything else goes to the gRPC health server. No HTTP framework is needed for one read-only
//! path, and the probes keep working unchanged.
//!
//! [`Exposition`] writes the format; [`Histogram`] is a fixed-bucket histogram for latencies.
//! What each process exports is listed in `deploy/README.md`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Upper bounds (seconds) of the task-latency buckets: from a cache hit to a long pass-2 tile.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A histogram over [`LATENCY_BUCKETS_S`] (plus `+Inf`), safe to update from any thread.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    count: AtomicU64,
    /// The sum in microseconds, so that it can be an integer atomic.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = LATENCY_BUCKETS_S
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        let _ = writeln!(self.text, "{name} {value}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// One gauge with a label taking each of `values`.
    pub fn labelled_gauge(&mut self, name: &str, help: &str, label: &str, values: &[(&str, f64)]) {
        self.header(name, help, "gauge");
        for (value_of_label, value) in values {
            let _ = writeln!(self.text, "{name}{{{label}=\"{value_of_label}\"}} {value}");
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, help, "histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
            cumulative += histogram.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(self.text, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += histogram.buckets[LATENCY_BUCKETS_S.len()].load(Ordering::Relaxed);
        let _ = writeln!(self.text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = histogram.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(self.text, "{name}_sum {sum}");
        let _ = writeln!(self.text, "{name}_count {cumulative}");
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Renders the metrics page when scraped.
pub type Render = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

/// Bytes this process read from datasets' shards and manifests, and from caches.
pub fn storage_metrics(page: &mut Exposition) {
    page.counter(
        "svcca_dataset_bytes_read_total",
        "Bytes read from datasets (shards and manifests).",
        svcca_storage::dataset::bytes_read(),
    );
    page.counter(
        "svcca_cache_bytes_read_total",
        "Bytes read from caches (moments, whitenings, projections, pairs).",
        crate::cache::bytes_read(),
    );
}

/// Serves gRPC health (`routes`) and `GET /metrics` on `listener` until `stop` turns true.
pub(crate) async fn serve_health_and_metrics(
    listener: TcpListener,
    routes: tonic::service::Routes,
    render: Render,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel::<std::io::Result<TcpStream>>(64);
    let mut accept_stop = stop.clone();
    let acceptor = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = accept_stop.wait_for(|s| *s) => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "health listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let grpc_tx = grpc_tx.clone();
            let render = render.clone();
            tokio::spawn(async move {
                if is_http1_get(&stream).await {
                    if let Err(error) = answer_http(stream, render).await {
                        tracing::debug!(%error, "metrics request failed");
                    }
                } else {
                    let _ = grpc_tx.send(Ok(stream)).await;
                }
            });
        }
    });
    let outcome = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(grpc_rx),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await;
    acceptor.abort();
    outcome
}

/// Whether the connection starts with `GET ` (waits up to a second for four bytes).
async fn is_http1_get(stream: &TcpStream) -> bool {
    let mut head = [0u8; 4];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut head)).await;
        match peeked {
            Ok(Ok(n)) if n >= 4 => return &head == b"GET ",
            // A prefix of neither yet: wait for more bytes.
            Ok(Ok(n)) if n > 0 && b"GET "[..n] == head[..n] => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return false,
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
    }
}

/// Answers one HTTP/1.1 request: the metrics page at `/metrics`, 404 elsewhere; then closes.
async fn answer_http(mut stream: TcpStream, render: Render) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let line = String::from_utf8_lossy(&request);
    let path = line
        .lines()
        .next()
        .and_then(|first| first.split_whitespace().nth(1))
        .unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let (status, content_type, body) = if path == "/metrics" {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render().await,
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only /metrics is served here\n".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_millis(700));
        h.observe(Duration::from_secs(1000));
        let mut page = Exposition::new();
        page.histogram("x_seconds", "help", &h);
        let text = page.finish();
        assert!(text.contains("# TYPE x_seconds histogram"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"0.01\"} 0\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"0.05\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"300\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_sum 1000.73\n"), "{text}");
        assert!(text.contains("x_seconds_count 3\n"), "{text}");
    }

    #[tokio::test]
    async fn one_port_answers_scrapes_and_grpc_health() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("probe", tonic_health::ServingStatus::Serving)
            .await;
        let render: Render = Arc::new(|| {
            Box::pin(async {
                let mut page = Exposition::new();
                page.counter("svcca_test_total", "A test counter.", 7);
                page.finish()
            })
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_health_and_metrics(
            listener,
            tonic::service::Routes::new(service),
            render,
            stop_rx,
        ));

        let get = |path: &'static str| async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("request");
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await.expect("reply");
            reply
        };
        let page = get("/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains("text/plain; version=0.0.4"), "{page}");
        assert!(page.ends_with("svcca_test_total 7\n"), "{page}");
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("gRPC connect");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "probe".into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        let _ = stop_tx.send(true);
        server.await.expect("joined").expect("served");
    }
}
