//! The cluster as real processes on loopback: `svcca coordinator`, `svcca worker`, `svcca submit`
//! and `svcca status`, with workers killed (SIGKILL) or drained (SIGTERM) in the middle of jobs.
//!
//! These run the scheduler's arithmetic test job (the hidden `--test-sum-jobs` flag of the
//! coordinator and the workers; see `svcca_engine::coordinator::testkit`), whose answer is known
//! exactly and whose tasks take a set time, so a kill can be placed mid-job and proven so.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use svcca_engine::coordinator::testkit::SumSpec;

const SVCCA: &str = env!("CARGO_BIN_EXE_svcca");
/// No single wait in these tests may take longer.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
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

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
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

struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    coordinator: Proc,
    workers: Vec<Proc>,
    mode: Vec<String>,
}

/// Heartbeats every 200 ms, a worker is lost after 1 s of silence, a job fails after 3 s with no
/// worker.
const LEASE_TIMEOUT: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(3);

impl Cluster {
    /// A cluster running the scheduler's test job.
    fn start(workers: usize) -> Cluster {
        Cluster::start_with(workers, &["--test-sum-jobs"])
    }

    /// A cluster; `mode` is added to the coordinator's and the workers' flags.
    fn start_with(workers: usize, mode: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let coordinator = Proc::spawn(
            "coordinator",
            dir.path(),
            &[
                "coordinator",
                "--listen",
                &listen,
                "--heartbeat-interval",
                "200ms",
                "--lease-timeout",
                "1s",
                "--worker-grace",
                "3s",
            ]
            .iter()
            .chain(mode)
            .copied()
            .collect::<Vec<_>>(),
        );
        let addr: SocketAddr = listen.parse().expect("addr");
        let deadline = Instant::now() + WAIT_LIMIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "coordinator never listened; log:\n{}",
                coordinator.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut cluster = Cluster {
            dir,
            url: format!("http://{listen}"),
            coordinator,
            workers: Vec::new(),
            mode: mode.iter().map(|m| m.to_string()).collect(),
        };
        for _ in 0..workers {
            cluster.add_worker();
        }
        cluster.wait_for_workers(workers);
        cluster
    }

    fn add_worker(&mut self) -> usize {
        let index = self.workers.len();
        let health = format!("127.0.0.1:{}", free_port());
        let worker = Proc::spawn(
            &format!("worker-{index}"),
            self.dir.path(),
            &[
                "worker",
                "--coordinator",
                &self.url,
                "--health-listen",
                &health,
                "--drain-timeout",
                "10s",
            ]
            .iter()
            .copied()
            .chain(self.mode.iter().map(String::as_str))
            .collect::<Vec<_>>(),
        );
        self.workers.push(worker);
        index
    }

    fn svcca(&self, args: &[&str]) -> Output {
        Command::new(SVCCA)
            .args(args)
            .env_remove("SVCCA_COORDINATOR")
            .output()
            .expect("run svcca")
    }

    fn job_file(&self, spec: &SumSpec) -> PathBuf {
        let path = self.dir.path().join(format!("job-{}.toml", spec.tasks));
        std::fs::write(&path, spec.to_toml()).expect("job file");
        path
    }

    fn submit(&self, spec: &SumSpec) -> String {
        let job = self.job_file(spec);
        let out = self.svcca(&[
            "submit",
            "--coordinator",
            &self.url,
            job.to_str().expect("utf-8"),
        ]);
        assert!(
            out.status.success(),
            "submit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    }

    /// `svcca submit --wait` started as a process.
    fn submit_and_wait_process(&self, spec: &SumSpec) -> Proc {
        let job = self.job_file(spec);
        Proc::spawn(
            "submit",
            self.dir.path(),
            &[
                "submit",
                "--coordinator",
                &self.url,
                "--wait",
                job.to_str().expect("utf-8"),
            ],
        )
    }

    fn status(&self, job_id: &str) -> serde_json::Value {
        let out = self.svcca(&["status", "--coordinator", &self.url, "--json", job_id]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Polls until a running job (the one a `submit --wait` process started) satisfies `until`.
    fn poll_running(&self, until: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let out = self.svcca(&["status", "--coordinator", &self.url, "--json"]);
            assert!(
                out.status.success(),
                "status: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).expect("utf-8");
            let running = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("status JSON"))
                .find(|s| s["state"] == "running" && until(s));
            if let Some(status) = running {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no running job got there; last status:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the coordinator has logged `n` registrations in all.
    fn wait_for_workers(&self, n: usize) {
        let deadline = Instant::now() + WAIT_LIMIT;
        while self
            .coordinator
            .log_text()
            .matches("worker registered")
            .count()
            < n
        {
            assert!(
                Instant::now() < deadline,
                "workers never registered; log:\n{}",
                self.coordinator.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls the job's status until `until` holds; returns that status.
    fn poll(
        &self,
        job_id: &str,
        until: impl Fn(&serde_json::Value) -> bool,
        what: &str,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let status = self.status(job_id);
            if until(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: timed out at {status}; coordinator log:\n{}",
                self.coordinator.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until_done(&self, job_id: &str) -> serde_json::Value {
        self.poll(
            job_id,
            |s| ["succeeded", "failed", "cancelled"].contains(&s["state"].as_str().unwrap_or("")),
            "job ended",
        )
    }
}

fn summary_of(status: &serde_json::Value) -> Vec<String> {
    assert_eq!(status["state"], "succeeded", "{status}");
    status["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .map(|l| l.as_str().expect("line").to_string())
        .collect()
}

fn job_spec() -> SumSpec {
    SumSpec {
        task_ms: 250,
        terms_per_task: 20_000,
        ..SumSpec::new(16)
    }
}

#[test]
fn a_worker_killed_mid_job_changes_nothing_in_the_results() {
    let mut cluster = Cluster::start(2);
    let spec = job_spec();

    // The clean run.
    let clean_job = cluster.submit(&spec);
    let clean = summary_of(&cluster.wait_until_done(&clean_job));
    assert_eq!(clean[0], format!("sum = {:e}", spec.expected_sum()));

    // The same job again; SIGKILL one worker once a few tasks are done.
    let job = cluster.submit(&spec);
    let before = cluster.poll(
        &job,
        |s| s["done"].as_u64().unwrap_or(0) >= 3,
        "three tasks done",
    );
    cluster.workers[0].sigkill();
    let after = cluster.status(&job);
    let total = spec.tasks + 1;
    for seen in [&before, &after] {
        let done = seen["done"].as_u64().expect("done");
        assert!(
            done > 0 && done < total,
            "the kill happened mid-job: {seen}"
        );
        assert_eq!(seen["state"], "running", "{seen}");
    }

    let end = cluster.wait_until_done(&job);
    assert_eq!(summary_of(&end), clean, "same results as the clean run");
    assert_eq!(
        end["workers_alive"], 1,
        "the coordinator noticed the loss: {end}"
    );
    assert!(
        cluster.coordinator.log_text().contains("worker lost"),
        "the coordinator logged the loss:\n{}",
        cluster.coordinator.log_text()
    );
}

#[test]
fn with_every_worker_killed_the_job_fails_within_the_grace_period() {
    let mut cluster = Cluster::start(2);
    let spec = SumSpec {
        task_ms: 300,
        ..SumSpec::new(40)
    };
    let mut waiter = cluster.submit_and_wait_process(&spec);
    let status = cluster.poll_running(|s| s["done"].as_u64() >= Some(1));
    let done = status["done"].as_u64().expect("done");
    assert!(done >= 1 && done < spec.tasks, "killed mid-job: {status}");
    for worker in &mut cluster.workers {
        worker.sigkill();
    }
    let killed_at = Instant::now();
    let exit = waiter.wait(LEASE_TIMEOUT + GRACE + Duration::from_secs(10));
    let elapsed = killed_at.elapsed();
    let log = waiter.log_text();
    assert_eq!(exit.code(), Some(11), "a retryable failure; output:\n{log}");
    assert!(log.contains("no worker was connected for 3s"), "{log}");
    assert!(elapsed >= GRACE, "not before the grace period: {elapsed:?}");
    assert!(
        elapsed < LEASE_TIMEOUT + GRACE + Duration::from_secs(3),
        "within the grace period (plus the lease timeout that detects the loss): {elapsed:?}"
    );
}

#[test]
fn sigterm_drains_a_worker_which_exits_zero() {
    let mut cluster = Cluster::start(1);
    let spec = SumSpec {
        task_ms: 800,
        ..SumSpec::new(4)
    };
    let job = cluster.submit(&spec);
    // Mid-way through the first task.
    std::thread::sleep(Duration::from_millis(300));
    let before = cluster.status(&job);
    assert_eq!(before["done"], 0, "{before}");
    cluster.workers[0].sigterm();
    let exit = cluster.workers[0].wait(Duration::from_secs(15));
    let log = cluster.workers[0].log_text();
    assert_eq!(exit.code(), Some(0), "drained worker exits 0; log:\n{log}");
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("deregistered"), "{log}");
    let after = cluster.status(&job);
    assert_eq!(after["done"], 1, "it finished the task it held: {after}");
    assert_eq!(after["workers_alive"], 0, "and left: {after}");

    cluster.add_worker();
    let end = cluster.wait_until_done(&job);
    assert_eq!(
        summary_of(&end)[0],
        format!("sum = {:e}", spec.expected_sum())
    );
}

#[test]
fn exit_codes_tell_fatal_from_retryable() {
    let cluster = Cluster::start(1);
    let fatal = SumSpec {
        fatal_task: Some(1),
        ..SumSpec::new(3)
    };
    let mut waiter = cluster.submit_and_wait_process(&fatal);
    let exit = waiter.wait(WAIT_LIMIT);
    let log = waiter.log_text();
    assert_eq!(
        exit.code(),
        Some(10),
        "non-retryable job failure; output:\n{log}"
    );
    assert!(
        log.contains("task part-1 failed: injected non-retryable failure"),
        "{log}"
    );

    let bad = cluster.dir.path().join("bad.toml");
    std::fs::write(&bad, "[test_sum]\ntasks = 0\n").expect("write");
    let out = cluster.svcca(&[
        "submit",
        "--coordinator",
        &cluster.url,
        bad.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "a bad spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let job = cluster.job_file(&SumSpec::new(1));
    let out = cluster.svcca(&[
        "submit",
        "--coordinator",
        &nobody,
        job.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "unreachable coordinator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.svcca(&["status", "--coordinator", &nobody]);
    assert_eq!(out.status.code(), Some(11));
}

/// The digits MLP at its last step (3 seeds × 5 layers), ingested with `svcca ingest` into a
/// dataset under `dir`; returns the dataset's path.
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
    let out = Command::new(SVCCA)
        .args([
            "ingest",
            src.to_str().expect("utf-8"),
            dataset.to_str().expect("utf-8"),
            "--shard-rows",
            "200",
        ])
        .output()
        .expect("svcca ingest");
    assert!(
        out.status.success(),
        "ingest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dataset
}

fn real_job(dataset: &Path, output: &Path) -> String {
    format!(
        "dataset = {:?}\noutput = {:?}\ncomparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cka\"]\n\
         [resources]\nrows_per_task = 50\n",
        dataset.to_str().expect("utf-8"),
        output.to_str().expect("utf-8"),
    )
}

/// The compared pairs of a results folder (what must not depend on workers or kills).
fn pairs_of(output: &Path) -> serde_json::Value {
    let bytes = std::fs::read(output.join("results.json")).expect("results.json");
    // With the coefficients, which sweeps keep in pairs.parquet.
    let mut full = svcca_results::ResultsFile::from_json(&bytes).expect("results JSON");
    full.fill_coefficients(std::fs::read(output.join("pairs.parquet")).expect("pairs.parquet"))
        .expect("pairs.parquet matches results.json");
    assert!(full.pairs.iter().any(|p| !p.coefficients.is_empty()));
    let pairs = serde_json::to_value(&full.pairs).expect("pairs serialise");
    assert!(
        pairs.as_array().is_some_and(|p| p.len() == 2 * 105),
        "15 representations, 2 metrics: {pairs}"
    );
    pairs
}

#[test]
fn a_real_sweep_with_a_worker_killed_mid_job_equals_the_embedded_sweep() {
    let mut cluster = Cluster::start_with(2, &[]);
    let dataset = ingest_digits(cluster.dir.path());

    // The clean run: `svcca sweep` (embedded coordinator and workers).
    let clean_out = cluster.dir.path().join("clean");
    let clean_job = cluster.dir.path().join("clean.toml");
    std::fs::write(&clean_job, real_job(&dataset, &clean_out)).expect("job file");
    let out = cluster.svcca(&[
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

    // The cluster run, one worker SIGKILLed once a few tasks are done.
    let killed_out = cluster.dir.path().join("killed");
    let job_file = cluster.dir.path().join("killed.toml");
    std::fs::write(&job_file, real_job(&dataset, &killed_out)).expect("job file");
    let out = cluster.svcca(&[
        "submit",
        "--coordinator",
        &cluster.url,
        job_file.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let before = cluster.poll(&job, |s| s["done"].as_u64() >= Some(5), "five tasks done");
    cluster.workers[0].sigkill();
    let after = cluster.status(&job);
    for seen in [&before, &after] {
        let (done, total) = (
            seen["done"].as_u64().expect("done"),
            seen["total"].as_u64().expect("total"),
        );
        assert!(
            done > 0 && done < total,
            "the kill happened mid-job: {seen}"
        );
        assert_eq!(seen["state"], "running", "{seen}");
    }
    let end = cluster.wait_until_done(&job);
    assert_eq!(
        end["state"],
        "succeeded",
        "{end}; coordinator log:\n{}\nworker logs:\n{}",
        cluster.coordinator.log_text(),
        cluster
            .workers
            .iter()
            .map(|w| w.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        end["workers_alive"], 1,
        "the coordinator noticed the loss: {end}"
    );
    assert_eq!(
        pairs_of(&killed_out),
        clean,
        "the same numbers as the clean embedded run"
    );
}
