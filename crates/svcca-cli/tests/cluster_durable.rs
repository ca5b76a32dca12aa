//! Durable jobs and metrics, as real processes on loopback: a coordinator killed (SIGKILL) in the
//! middle of a sweep and started again on the same `--state` finishes the job with the numbers of
//! an embedded sweep while `submit --wait` rides out the restart; identical submits run one job;
//! `submit --wait --cancel-on-exit` cancels its job on SIGTERM; `/metrics` on the health
//! listeners of a coordinator and a worker counts what they did.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use svcca_engine::coordinator::testkit::SumSpec;

const SVCCA: &str = env!("CARGO_BIN_EXE_svcca");
const WAIT_LIMIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process, killed (SIGKILL) when dropped; stdout and stderr go to one log file.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(SVCCA)
            .args(args)
            .env("SVCCA_LOG", "info")
            .env_remove("SVCCA_COORDINATOR")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start svcca");
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    fn sigterm(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_listening(addr: &str, proc: &Proc) {
    let addr: SocketAddr = addr.parse().expect("addr");
    let deadline = Instant::now() + WAIT_LIMIT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never listened; log:\n{}",
            proc.name,
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn svcca(args: &[&str]) -> Output {
    Command::new(SVCCA)
        .args(args)
        .env_remove("SVCCA_COORDINATOR")
        .output()
        .expect("run svcca")
}

/// Every job the coordinator at `url` knows (`svcca status --json`).
fn jobs(url: &str) -> Vec<serde_json::Value> {
    let out = svcca(&["status", "--coordinator", url, "--json"]);
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("status JSON"))
        .collect()
}

/// Polls the coordinator's jobs until one satisfies `until`.
fn poll_job(
    url: &str,
    what: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let all = jobs(url);
        if let Some(job) = all.iter().find(|j| until(j)) {
            return job.clone();
        }
        assert!(Instant::now() < deadline, "{what}: timed out at {all:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The digits MLP at its last step (3 seeds × 5 layers), ingested under `dir`.
fn ingest_digits(dir: &Path) -> PathBuf {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits");
    let src = dir.join("src");
    for seed in 0..3 {
        for layer in ["h1", "h2", "h3", "h4", "logits"] {
            let rel = format!("mlp/seed{seed}/step2250/{layer}.npy");
            let to = src.join(&rel);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(digits.join(&rel), &to).expect("copy fixture");
        }
    }
    let dataset = dir.join("dataset");
    let out = svcca(&[
        "ingest",
        src.to_str().expect("utf-8"),
        dataset.to_str().expect("utf-8"),
        "--shard-rows",
        "200",
    ]);
    assert!(
        out.status.success(),
        "ingest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dataset
}

fn real_job(dataset: &Path, output: &Path, rows_per_task: u32) -> String {
    format!(
        "dataset = {:?}\noutput = {:?}\ncomparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cka\"]\n\
         [resources]\nrows_per_task = {rows_per_task}\n",
        dataset.to_str().expect("utf-8"),
        output.to_str().expect("utf-8"),
    )
}

fn pairs_of(output: &Path) -> serde_json::Value {
    let bytes = std::fs::read(output.join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_slice(&bytes).expect("results JSON");
    let pairs = results["pairs"].clone();
    assert!(
        pairs.as_array().is_some_and(|p| p.len() == 2 * 105),
        "15 representations, 2 metrics: {pairs}"
    );
    pairs
}

fn coordinator_args<'a>(listen: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "coordinator",
        "--listen",
        listen,
        "--heartbeat-interval",
        "200ms",
        "--lease-timeout",
        "1s",
        "--worker-grace",
        "60s",
    ];
    args.extend_from_slice(extra);
    args
}

fn worker(dir: &Path, name: &str, url: &str, extra: &[&str]) -> Proc {
    let health = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["worker", "--coordinator", url, "--health-listen", &health];
    args.extend_from_slice(extra);
    Proc::spawn(name, dir, &args)
}

#[test]
fn a_coordinator_killed_mid_job_and_restarted_finishes_it_with_the_embedded_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dataset = ingest_digits(dir.path());

    let clean_out = dir.path().join("clean");
    let clean_job = dir.path().join("clean.toml");
    std::fs::write(&clean_job, real_job(&dataset, &clean_out, 50)).expect("job file");
    let out = svcca(&[
        "sweep",
        clean_job.to_str().expect("utf-8"),
        "--workers",
        "2",
    ]);
    assert!(
        out.status.success(),
        "sweep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean = pairs_of(&clean_out);

    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let state = dir.path().join("state");
    let state_arg = state.to_str().expect("utf-8").to_string();
    let args = coordinator_args(&listen, &["--state", &state_arg]);
    let mut coordinator = Proc::spawn("coordinator", dir.path(), &args);
    wait_listening(&listen, &coordinator);
    let _workers: Vec<Proc> = (0..2)
        .map(|i| worker(dir.path(), &format!("worker-{i}"), &url, &[]))
        .collect();

    let out_dir = dir.path().join("restarted");
    let job_file = dir.path().join("restarted.toml");
    std::fs::write(&job_file, real_job(&dataset, &out_dir, 50)).expect("job file");
    let mut submit = Proc::spawn(
        "submit",
        dir.path(),
        &[
            "submit",
            "--coordinator",
            &url,
            "--wait",
            "--log-format",
            "json",
            "--progress-every",
            "1",
            job_file.to_str().expect("utf-8"),
        ],
    );
    let before = poll_job(&url, "five tasks done", |j| {
        j["state"] == "running" && j["done"].as_u64() >= Some(5)
    });
    let job_id = before["job_id"].as_str().expect("id").to_string();
    let total_before = before["total"].as_u64().expect("total");
    assert!(
        before["done"].as_u64() < Some(total_before),
        "the kill comes mid-job: {before}"
    );
    // Progress is recorded at most a second apart: kill as soon as the record has caught up
    // with the tasks done (a fixed wait let an optimised build finish the job first).
    let record_path = state.join(format!("jobs/{job_id}.json"));
    let read_record = || -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(&record_path).ok()?).ok()
    };
    let deadline = Instant::now() + WAIT_LIMIT;
    while read_record().is_none_or(|r| r["done"].as_u64() < Some(5)) {
        assert!(
            Instant::now() < deadline,
            "the job's record never showed 5 tasks done"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    coordinator.sigkill();
    let record = read_record().expect("the job's record");
    assert_eq!(record["state"], "running", "{record}");
    assert!(record["done"].as_u64() >= Some(5), "{record}");
    assert!(
        record["owner"] == "anonymous" && !record["spec_toml"].as_str().unwrap_or("").is_empty(),
        "{record}"
    );

    // A moment with no coordinator at all, then the same command again.
    std::thread::sleep(Duration::from_millis(1500));
    let coordinator = Proc::spawn("coordinator-2", dir.path(), &args);
    wait_listening(&listen, &coordinator);

    let status = submit.wait(WAIT_LIMIT);
    let submit_log = submit.log_text();
    assert!(
        status.success(),
        "submit --wait exits 0 across the restart: {status}; submit log:\n{submit_log}\n\
         coordinator log:\n{}",
        coordinator.log_text()
    );
    assert!(
        submit_log.contains("reconnecting"),
        "the submitter said it reconnected:\n{submit_log}"
    );
    assert!(
        coordinator
            .log_text()
            .contains("job restored from its record"),
        "{}",
        coordinator.log_text()
    );
    let end = jobs(&url);
    assert_eq!(end.len(), 1, "one job, under its old id: {end:?}");
    assert_eq!(end[0]["job_id"], job_id.as_str());
    assert_eq!(end[0]["state"], "succeeded", "{end:?}");
    assert_eq!(
        pairs_of(&out_dir),
        clean,
        "the same numbers as the clean embedded run"
    );

    // A summary, not a line per task: JSON progress lines with done/total/rate/ETA, and the total
    // of each job run never grows.
    let progress: Vec<serde_json::Value> = submit_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "svcca_progress" && v["fields"]["rate_per_s"].is_number())
        .collect();
    assert!(!progress.is_empty(), "progress lines:\n{submit_log}");
    // Against the largest plan a line reported: the restored run may find everything its first
    // run finished already stored and plan few tasks, or none.
    let planned = progress
        .iter()
        .filter_map(|l| l["fields"]["total"].as_u64())
        .max()
        .unwrap_or(0)
        .max(total_before);
    assert!(
        progress.len() < planned as usize / 4,
        "{} progress lines for {planned} tasks",
        progress.len()
    );
    for line in &progress {
        let fields = &line["fields"];
        assert!(
            fields["done"].is_u64() && fields["total"].is_u64(),
            "{line}"
        );
    }
}

#[test]
fn twenty_five_identical_submits_run_one_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let coordinator = Proc::spawn(
        "coordinator",
        dir.path(),
        &coordinator_args(&listen, &["--test-sum-jobs"]),
    );
    wait_listening(&listen, &coordinator);
    let _worker = worker(dir.path(), "worker", &url, &["--test-sum-jobs"]);
    let spec = SumSpec {
        task_ms: 100,
        ..SumSpec::new(8)
    };
    let job = dir.path().join("job.toml");
    std::fs::write(&job, spec.to_toml()).expect("job file");

    let submits: Vec<_> = (0..25)
        .map(|_| {
            let (url, job) = (url.clone(), job.clone());
            std::thread::spawn(move || {
                svcca(&[
                    "submit",
                    "--coordinator",
                    &url,
                    "--wait",
                    job.to_str().expect("utf-8"),
                ])
            })
        })
        .collect();
    let mut ids = Vec::new();
    for submit in submits {
        let out = submit.join().expect("joined");
        assert!(
            out.status.success(),
            "every submitter exits 0: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        ids.push(stdout.lines().next().expect("the job id").to_string());
        assert!(
            stdout.contains(&format!("sum = {}", spec.expected_sum())),
            "each submitter sees the result: {stdout}"
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one id for all: {ids:?}");
    let all = jobs(&url);
    assert_eq!(all.len(), 1, "one job ran: {all:?}");
    assert_eq!(all[0]["state"], "succeeded");
    assert_eq!(
        coordinator.log_text().matches("job submitted").count(),
        1,
        "{}",
        coordinator.log_text()
    );

    // Once it has ended, the same spec starts a new job.
    let out = svcca(&[
        "submit",
        "--coordinator",
        &url,
        job.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success());
    let again = String::from_utf8(out.stdout).expect("utf-8");
    assert_ne!(again.trim(), ids[0], "a new job after the first ended");
}

#[test]
fn a_submitter_with_cancel_on_exit_cancels_its_job_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    // No worker: the job stays running until someone cancels it.
    let coordinator = Proc::spawn(
        "coordinator",
        dir.path(),
        &coordinator_args(&listen, &["--test-sum-jobs"]),
    );
    wait_listening(&listen, &coordinator);
    let job = dir.path().join("job.toml");
    std::fs::write(&job, SumSpec::new(4).to_toml()).expect("job file");

    let mut plain = Proc::spawn(
        "plain",
        dir.path(),
        &[
            "submit",
            "--coordinator",
            &url,
            "--wait",
            job.to_str().expect("utf-8"),
        ],
    );
    let running = poll_job(&url, "the job runs", |j| j["state"] == "running");
    plain.sigterm();
    plain.wait(WAIT_LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    let after = jobs(&url);
    assert_eq!(
        after[0]["state"], "running",
        "without --cancel-on-exit the job runs on: {after:?}"
    );

    let mut submit = Proc::spawn(
        "submit",
        dir.path(),
        &[
            "submit",
            "--coordinator",
            &url,
            "--wait",
            "--cancel-on-exit",
            job.to_str().expect("utf-8"),
        ],
    );
    // The same spec and owner: the submitter joins the running job.
    let deadline = Instant::now() + WAIT_LIMIT;
    while !submit
        .log_text()
        .contains(running["job_id"].as_str().expect("id"))
    {
        assert!(Instant::now() < deadline, "{}", submit.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    submit.sigterm();
    let status = submit.wait(WAIT_LIMIT);
    assert_eq!(status.code(), Some(11), "{}", submit.log_text());
    assert!(
        submit.log_text().contains("cancelled"),
        "{}",
        submit.log_text()
    );
    let end = jobs(&url);
    assert_eq!(end.len(), 1, "{end:?}");
    assert_eq!(end[0]["state"], "cancelled", "{end:?}");
}

/// `GET /metrics` on `addr`: the metric lines by name (with labels) and value.
fn scrape(addr: &str) -> Vec<(String, f64)> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn metric(page: &[(String, f64)], name: &str) -> f64 {
    page.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in {page:?}"))
}

#[test]
fn metrics_on_the_health_listeners_count_tasks_workers_and_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dataset = ingest_digits(dir.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let coordinator_health = format!("127.0.0.1:{}", free_port());
    let coordinator = Proc::spawn(
        "coordinator",
        dir.path(),
        &coordinator_args(&listen, &["--health-listen", &coordinator_health]),
    );
    wait_listening(&listen, &coordinator);
    wait_listening(&coordinator_health, &coordinator);
    let worker_health = format!("127.0.0.1:{}", free_port());
    let worker = Proc::spawn(
        "worker",
        dir.path(),
        &[
            "worker",
            "--coordinator",
            &url,
            "--health-listen",
            &worker_health,
        ],
    );
    wait_listening(&worker_health, &worker);

    let before = scrape(&coordinator_health);
    assert_eq!(metric(&before, "svcca_tasks_done_total"), 0.0);
    assert_eq!(metric(&before, "svcca_task_seconds_count"), 0.0);
    let worker_before = scrape(&worker_health);
    assert_eq!(
        metric(&worker_before, "svcca_worker_tasks_succeeded_total"),
        0.0
    );
    assert_eq!(
        metric(&worker_before, "svcca_dataset_bytes_read_total"),
        0.0
    );

    let out_dir = dir.path().join("out");
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, real_job(&dataset, &out_dir, 400)).expect("job file");
    let out = svcca(&[
        "submit",
        "--coordinator",
        &url,
        "--wait",
        job_file.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = jobs(&url).remove(0);
    let tasks = job["total"].as_u64().expect("total") as f64;

    let after = scrape(&coordinator_health);
    assert_eq!(metric(&after, "svcca_tasks_done_total"), tasks, "{after:?}");
    assert_eq!(metric(&after, "svcca_task_seconds_count"), tasks);
    assert_eq!(metric(&after, "svcca_tasks_failed_total"), 0.0);
    assert_eq!(metric(&after, "svcca_workers_alive"), 1.0);
    assert_eq!(metric(&after, "svcca_jobs{state=\"succeeded\"}"), 1.0);
    assert_eq!(metric(&after, "svcca_jobs{state=\"running\"}"), 0.0);
    let worker_after = scrape(&worker_health);
    assert_eq!(
        metric(&worker_after, "svcca_worker_tasks_succeeded_total"),
        tasks,
        "{worker_after:?}"
    );
    assert_eq!(
        metric(&worker_after, "svcca_worker_task_seconds_count"),
        tasks
    );
    assert!(
        metric(&worker_after, "svcca_dataset_bytes_read_total") > 0.0,
        "the worker read shards: {worker_after:?}"
    );
    // The probes' gRPC health still answers on the same port.
    let addr: SocketAddr = worker_health.parse().expect("addr");
    assert!(TcpStream::connect(addr).is_ok());
}
