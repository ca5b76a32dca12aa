//! The secured cluster as real processes on loopback: `svcca coordinator` with submitter and worker
//! tokens and TLS (the certificates of `fixtures/tls/`), and what it refuses: submits without the
//! token or with a wrong one, a worker with a submitter's token, clients without a client
//! certificate under mutual TLS, cancels by another submitter, listening on a non-loopback
//! address without tokens unless `--insecure`, and jobs writing outside `--allow-output`.
//!
//! Jobs are the scheduler's arithmetic test job (`--test-sum-jobs`), whose answer is known, except
//! for the allow-list test, whose sweeps are only planned.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use svcca_engine::coordinator::testkit::SumSpec;

const SVCCA: &str = env!("CARGO_BIN_EXE_svcca");
const WAIT_LIMIT: Duration = Duration::from_secs(60);

const ALICE: &str = "alice-0123456789abcdef0123";
const BOB: &str = "bob-0123456789abcdef0123";
const WORKER: &str = "worker-0123456789abcdef0123";

fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tls")
}

fn tls(name: &str) -> String {
    tls_dir().join(name).to_str().expect("utf-8").to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process killed when dropped.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, args: &[String]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(SVCCA)
            .args(args)
            .env("SVCCA_LOG", "info")
            .env_remove("SVCCA_COORDINATOR")
            .env_remove("SVCCA_AUTH_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start svcca");
        Proc {
            child: Some(child),
            log,
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Waits for the process to exit; returns its code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

fn wait_for_port(addr: SocketAddr, proc: &Proc) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "never listened; log:\n{}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A coordinator with tokens (alice and bob submit, one worker token) over TLS, mutual when
/// `mutual`.
struct Secured {
    dir: tempfile::TempDir,
    url: String,
    coordinator: Proc,
    workers: Vec<Proc>,
    mutual: bool,
}

impl Secured {
    fn start(mutual: bool) -> Secured {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("token file");
            path.to_str().expect("utf-8").to_string()
        };
        let submitters = write(
            "submitters",
            &format!("# one token per submitter\n{ALICE}\n\n{BOB}\n"),
        );
        let workers = write("workers", &format!("{WORKER}\n"));
        write("alice", &format!("{ALICE}\n"));
        write("bob", BOB);
        write("worker", WORKER);
        write("wrong", "not-the-token-0123456789\n");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = [
            "coordinator",
            "--listen",
            &listen,
            "--heartbeat-interval",
            "200ms",
            "--lease-timeout",
            "1s",
            "--test-sum-jobs",
            "--auth-token-file",
            &submitters,
            "--worker-token-file",
            &workers,
            "--tls-cert",
            &tls("server.pem"),
            "--tls-key",
            &tls("server-key.pem"),
        ]
        .map(String::from)
        .to_vec();
        if mutual {
            args.extend(["--tls-client-ca".to_string(), tls("ca.pem")]);
        }
        let coordinator = Proc::spawn("coordinator", dir.path(), &args);
        wait_for_port(listen.parse().expect("addr"), &coordinator);
        Secured {
            dir,
            url: format!("https://localhost:{port}"),
            coordinator,
            workers: Vec::new(),
            mutual,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_string()
    }

    /// `--coordinator URL --tls-ca CA` (+ the client certificate under mutual TLS), and the token
    /// file `token` if any.
    fn connect_args(&self, token: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "--coordinator".to_string(),
            self.url.clone(),
            "--tls-ca".to_string(),
            tls("ca.pem"),
        ];
        if self.mutual {
            args.extend([
                "--tls-cert".to_string(),
                tls("client.pem"),
                "--tls-key".to_string(),
                tls("client-key.pem"),
            ]);
        }
        if let Some(token) = token {
            args.extend(["--auth-token-file".to_string(), self.path(token)]);
        }
        args
    }

    fn svcca(&self, command: &str, token: Option<&str>, rest: &[&str]) -> Output {
        let mut args = vec![command.to_string()];
        args.extend(self.connect_args(token));
        args.extend(rest.iter().map(|s| s.to_string()));
        Command::new(SVCCA)
            .args(&args)
            .env_remove("SVCCA_COORDINATOR")
            .env_remove("SVCCA_AUTH_TOKEN_FILE")
            .output()
            .expect("run svcca")
    }

    fn add_worker(&mut self, token: &str) -> usize {
        let mut args = vec!["worker".to_string()];
        args.extend(self.connect_args(Some(token)));
        args.extend([
            "--health-listen".to_string(),
            format!("127.0.0.1:{}", free_port()),
            "--test-sum-jobs".to_string(),
        ]);
        let index = self.workers.len();
        self.workers.push(Proc::spawn(
            &format!("worker-{index}"),
            self.dir.path(),
            &args,
        ));
        index
    }

    fn job_file(&self, spec: &SumSpec) -> String {
        let path = self.dir.path().join(format!("job-{}.toml", spec.tasks));
        std::fs::write(&path, spec.to_toml()).expect("job file");
        path.to_str().expect("utf-8").to_string()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn with_tls_and_tokens_only_the_right_token_submits() {
    let mut cluster = Secured::start(false);
    cluster.add_worker("worker");
    let spec = SumSpec {
        task_ms: 20,
        ..SumSpec::new(4)
    };
    let job = cluster.job_file(&spec);

    for (who, token) in [
        ("no token", None),
        ("a wrong token", Some("wrong")),
        ("a worker token", Some("worker")),
    ] {
        let out = cluster.svcca("submit", token, &["--wait", &job]);
        let err = stderr(&out).to_lowercase();
        assert_eq!(out.status.code(), Some(10), "{who}: {err}");
        assert!(
            err.contains("token") && err.contains("unauthenticated"),
            "{who}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{who}: no job id printed");
    }
    let out = cluster.svcca("status", None, &[]);
    assert_eq!(out.status.code(), Some(10), "status: {}", stderr(&out));

    // The right token, over TLS: the job runs to its exact answer.
    let out = cluster.svcca("submit", Some("alice"), &["--wait", &job]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\ncoordinator:\n{}\nworker:\n{}",
        stderr(&out),
        cluster.coordinator.log_text(),
        cluster.workers[0].log_text()
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("sum = {:e}", spec.expected_sum())),
        "{text}"
    );

    // Plain text to a TLS coordinator gets nowhere.
    let plain = cluster.url.replace("https://", "http://");
    let out = Command::new(SVCCA)
        .args(["status", "--coordinator", &plain])
        .args(["--auth-token-file", &cluster.path("alice")])
        .output()
        .expect("run svcca");
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_submitter_token_cannot_register_a_worker() {
    let mut cluster = Secured::start(false);
    let index = cluster.add_worker("alice");
    let code = cluster.workers[index].wait(Duration::from_secs(30));
    let log = cluster.workers[index].log_text();
    assert_eq!(code, Some(10), "a permanent refusal; log:\n{log}");
    assert!(
        log.contains("refused this worker") && log.contains("worker token"),
        "{log}"
    );
    assert!(
        !cluster.coordinator.log_text().contains("worker registered"),
        "{}",
        cluster.coordinator.log_text()
    );
}

#[test]
fn another_submitter_cannot_cancel_a_job() {
    let cluster = Secured::start(false);
    // No worker: the job stays running until cancelled.
    let job_file = cluster.job_file(&SumSpec::new(3));
    let out = cluster.svcca("submit", Some("alice"), &[&job_file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = stdout(&out);
    assert!(
        job.starts_with("job-") && job.len() == "job-".len() + 32,
        "an unguessable id: {job}"
    );

    let out = cluster.svcca("cancel", Some("bob"), &[&job]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only its submitter"),
        "{}",
        stderr(&out)
    );
    let out = cluster.svcca("status", Some("bob"), &["--json", &job]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"running\""), "{}", stdout(&out));

    let out = cluster.svcca("cancel", Some("alice"), &[&job]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("cancelled"), "{}", stdout(&out));
}

#[test]
fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let mut cluster = Secured::start(true);
    cluster.add_worker("worker");
    let job = cluster.job_file(&SumSpec::new(2));

    // With the client certificate: accepted.
    let out = cluster.svcca("submit", Some("alice"), &["--wait", &job]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        cluster.coordinator.log_text()
    );

    // The right token but no client certificate, or one from a CA the coordinator does not
    // trust: the handshake fails and nothing is submitted.
    let base = [
        "status",
        "--coordinator",
        &cluster.url,
        "--tls-ca",
        &tls("ca.pem"),
        "--auth-token-file",
        &cluster.path("alice"),
    ]
    .map(String::from)
    .to_vec();
    let untrusted = [
        "--tls-cert",
        &tls("other-client.pem"),
        "--tls-key",
        &tls("other-client-key.pem"),
    ]
    .map(String::from)
    .to_vec();
    for (who, extra) in [
        ("no client certificate", vec![]),
        ("an untrusted one", untrusted),
    ] {
        let out = Command::new(SVCCA)
            .args(&base)
            .args(&extra)
            .env_remove("SVCCA_AUTH_TOKEN_FILE")
            .output()
            .expect("run svcca");
        assert!(
            !out.status.success() && stdout(&out).is_empty(),
            "{who}: accepted\n{}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains("--tls-cert"),
            "{who}: the message points at the client certificate: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_non_loopback_listen_needs_tokens_or_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("0.0.0.0:{}", free_port());
    let mut refused = Proc::spawn(
        "refused",
        dir.path(),
        &["coordinator", "--listen", &listen].map(String::from),
    );
    assert_eq!(refused.wait(Duration::from_secs(30)), Some(10));
    let log = refused.log_text();
    assert!(
        log.contains("refusing to listen on") && log.contains("--insecure"),
        "{log}"
    );

    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let insecure = Proc::spawn(
        "insecure",
        dir.path(),
        &[
            "coordinator",
            "--listen",
            &listen,
            "--insecure",
            "--test-sum-jobs",
        ]
        .map(String::from),
    );
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), &insecure);
    let deadline = Instant::now() + WAIT_LIMIT;
    while !insecure.log_text().contains("INSECURE") {
        assert!(Instant::now() < deadline, "{}", insecure.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        insecure
            .log_text()
            .lines()
            .any(|l| l.contains("INSECURE") && l.contains("WARN")),
        "logged as a warning: {}",
        insecure.log_text()
    );
}

/// A coordinator running real sweeps (no workers: jobs are only planned here).
fn sweep_coordinator(dir: &Path, name: &str, extra: &[String]) -> (Proc, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "coordinator".to_string(),
        "--listen".to_string(),
        listen.clone(),
    ];
    args.extend(extra.iter().cloned());
    let proc = Proc::spawn(name, dir, &args);
    wait_for_port(listen.parse().expect("addr"), &proc);
    (proc, format!("http://{listen}"))
}

fn submit_sweep(dir: &Path, url: &str, dataset: &Path, output: &str) -> Output {
    let job = dir.join("sweep.toml");
    std::fs::write(
        &job,
        format!(
            "dataset = {:?}\noutput = {output:?}\ncomparison = \"vs-final\"\nmetrics = [\"cka\"]\n",
            dataset.to_str().expect("utf-8")
        ),
    )
    .expect("job file");
    Command::new(SVCCA)
        .args(["submit", "--coordinator", url, job.to_str().expect("utf-8")])
        .env_remove("SVCCA_AUTH_TOKEN_FILE")
        .output()
        .expect("run svcca")
}

#[test]
fn jobs_write_only_where_the_coordinator_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let dataset = examples.join("digits-dataset");
    let allowed = dir.path().join("allowed");
    let (coordinator, url) = sweep_coordinator(
        dir.path(),
        "allow-list",
        &[
            "--allow-output".to_string(),
            allowed.to_str().expect("utf-8").to_string(),
            "--allow-output".to_string(),
            "s3://results/team-a".to_string(),
            "--allow-dataset".to_string(),
            examples.to_str().expect("utf-8").to_string(),
        ],
    );
    let elsewhere = dir.path().join("elsewhere");
    let sneaky = format!("{}/run/../../elsewhere", allowed.display());
    for output in [elsewhere.to_str().expect("utf-8"), &sneaky] {
        let out = submit_sweep(dir.path(), &url, &dataset, output);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(10), "{output}: {err}");
        assert!(
            err.contains("outside the output locations")
                && err.contains(allowed.to_str().unwrap())
                && err.contains("s3://results/team-a"),
            "the message names the prefixes: {err}"
        );
        assert!(
            !elsewhere.exists(),
            "nothing written outside the allowed prefixes"
        );
    }
    let other_dataset = dir.path().join("datasets/digits");
    let out = submit_sweep(
        dir.path(),
        &url,
        &other_dataset,
        allowed.join("run-0").to_str().unwrap(),
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-dataset"), "{}", stderr(&out));

    // Inside the prefixes the job is taken.
    let out = submit_sweep(
        dir.path(),
        &url,
        &dataset,
        allowed.join("run-1").to_str().unwrap(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        coordinator.log_text()
    );
    assert!(allowed.join("run-1/job.toml").is_file());

    // With no prefix configured, a folder of someone else's files is not an output.
    let (_open, open_url) = sweep_coordinator(dir.path(), "no-allow-list", &[]);
    let theirs = dir.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "keep me").unwrap();
    let out = submit_sweep(dir.path(), &open_url, &dataset, theirs.to_str().unwrap());
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds files that are not an svcca output (notes.txt)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !theirs.join("job.toml").exists(),
        "the folder was not claimed"
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("notes.txt")).unwrap(),
        "keep me"
    );
    // An svcca output, or a new folder, is fine.
    let fresh = dir.path().join("fresh");
    let out = submit_sweep(dir.path(), &open_url, &dataset, fresh.to_str().unwrap());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn under_mutual_tls_without_tokens_the_client_certificate_owns_the_job() {
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
            "--test-sum-jobs",
            "--tls-cert",
            &tls("server.pem"),
            "--tls-key",
            &tls("server-key.pem"),
            "--tls-client-ca",
            &tls("ca.pem"),
        ]
        .map(String::from),
    );
    wait_for_port(listen.parse().expect("addr"), &coordinator);
    let url = format!("https://localhost:{port}");
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, SumSpec::new(3).to_toml()).expect("job file");
    let run = |cert: &str, args: &[&str]| {
        Command::new(SVCCA)
            .args(args[..1].iter())
            .args(["--coordinator", &url, "--tls-ca", &tls("ca.pem")])
            .args(["--tls-cert", &tls(&format!("{cert}.pem"))])
            .args(["--tls-key", &tls(&format!("{cert}-key.pem"))])
            .args(args[1..].iter())
            .env_remove("SVCCA_AUTH_TOKEN_FILE")
            .output()
            .expect("run svcca")
    };
    let out = run("client", &["submit", job_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = stdout(&out);
    let out = run("client2", &["cancel", &job]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only its submitter") && stderr(&out).contains("client certificate"),
        "{}",
        stderr(&out)
    );
    let out = run("client", &["cancel", &job]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("cancelled"), "{}", stdout(&out));
}
