//! Processes, data files and randomness for the differential harness.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SVCCA: &str = env!("CARGO_BIN_EXE_svcca");
/// No single wait may take longer (a job of the harness takes seconds).
pub const WAIT_LIMIT: Duration = Duration::from_secs(180);

pub fn repo() -> PathBuf {
    // Canonical: the engine refuses dataset paths with `..` in them.
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).expect("repo")
}

/// SplitMix64: small, seedable and stable across platforms and crate versions, so a seed printed
/// by a failing run replays the same cases anywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below(hi_inclusive - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Between `lo` and `hi` (inclusive) distinct items, in their original order.
    pub fn some<T: Clone>(&mut self, items: &[T], lo: usize, hi: usize) -> Vec<T> {
        let k = self.range(lo, hi);
        self.subset(items, k)
    }

    /// `k` distinct items, in their original order.
    pub fn subset<T: Clone>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut idx: Vec<usize> = (0..items.len()).collect();
        for i in 0..idx.len() {
            let j = i + self.below(idx.len() - i);
            idx.swap(i, j);
        }
        let mut chosen: Vec<usize> = idx.into_iter().take(k.min(items.len())).collect();
        chosen.sort_unstable();
        chosen.into_iter().map(|i| items[i].clone()).collect()
    }
}

/// Writes a C-order `.npy` (version 1.0) of float32 or float64 values.
pub fn write_npy(path: &Path, shape: &[usize], values: &[f64], f32_values: bool) {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "{path:?}");
    let descr = if f32_values { "<f4" } else { "<f8" };
    let dims = match shape {
        [one] => format!("{one},"),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        if f32_values {
            bytes.extend_from_slice(&(*v as f32).to_le_bytes());
        } else {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write .npy");
}

/// The outcome of one `svcca` invocation, kept for failure messages.
pub fn svcca(args: &[&str]) -> Output {
    Command::new(SVCCA)
        .args(args)
        .current_dir(repo())
        .env_remove("SVCCA_COORDINATOR")
        .env("SVCCA_THREADS", "1")
        .output()
        .expect("run svcca")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        ended(out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// "exit N", or the signal that ended the process (a kill from outside shows as signal 9 with
/// nothing on stderr).
pub fn ended(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended without an exit code".into(),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(SVCCA)
            .args(args)
            .current_dir(repo())
            .env("SVCCA_LOG", "info")
            .env("SVCCA_THREADS", "1")
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

    /// SIGKILL; returns false when the process had already exited by itself.
    pub fn sigkill(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let running = child.try_wait().expect("try_wait").is_none();
        let _ = child.kill();
        child.wait().expect("reaped");
        running
    }

    /// How the process ended, if it has (reaping it).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("try_wait")?;
        self.child = None;
        Some(status)
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
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

/// `svcca coordinator` and `svcca worker` processes on loopback, started once and given every job
/// of a run, as a long-lived deployment would be.
pub struct Cluster {
    pub dir: PathBuf,
    pub listen: String,
    pub url: String,
    pub coordinator: Proc,
    pub workers: Vec<Proc>,
    /// Registrations the coordinator's current log must show before a job is submitted.
    restarts: usize,
}

impl Cluster {
    pub fn start(dir: &Path, workers: usize) -> Cluster {
        std::fs::create_dir_all(dir).expect("mkdir");
        let listen = format!("127.0.0.1:{}", free_port());
        let coordinator = spawn_coordinator(dir, &listen, 0);
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            url: format!("http://{listen}"),
            listen,
            coordinator,
            workers: Vec::new(),
            restarts: 0,
        };
        cluster.wait_listening();
        for index in 0..workers {
            let health = format!("127.0.0.1:{}", free_port());
            let worker = Proc::spawn(
                &format!("worker-{index}"),
                dir,
                &[
                    "worker",
                    "--coordinator",
                    &cluster.url,
                    "--health-listen",
                    &health,
                    "--drain-timeout",
                    "5s",
                ],
            );
            cluster.workers.push(worker);
        }
        cluster.wait_for_workers();
        cluster
    }

    fn wait_listening(&self) {
        let addr: SocketAddr = self.listen.parse().expect("addr");
        let deadline = Instant::now() + WAIT_LIMIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "coordinator never listened; log:\n{}",
                self.coordinator.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every worker has registered with the current coordinator process.
    pub fn wait_for_workers(&self) {
        let deadline = Instant::now() + WAIT_LIMIT;
        while self
            .coordinator
            .log_text()
            .matches("worker registered")
            .count()
            < self.workers.len()
        {
            assert!(
                Instant::now() < deadline,
                "workers never registered; log:\n{}",
                self.coordinator.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the coordinator and starts a new one on the same address; the workers (the same
    /// processes, with whatever they keep in memory) must register with it again. Err: they did
    /// not within `limit`, with what the coordinator and the workers logged about registration.
    pub fn restart_coordinator(&mut self, limit: Duration) -> Result<(), String> {
        self.coordinator.sigkill();
        self.restarts += 1;
        self.coordinator = spawn_coordinator(&self.dir, &self.listen, self.restarts);
        self.wait_listening();
        let deadline = Instant::now() + limit;
        loop {
            let registered = self
                .coordinator
                .log_text()
                .matches("worker registered")
                .count();
            if registered >= self.workers.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut lines = vec![format!(
                    "after the coordinator restart only {registered} of {} worker processes \
                     registered again within {limit:?}; registrations logged:",
                    self.workers.len()
                )];
                let logs = std::iter::once(("old coordinator".to_string(), self.previous_log()))
                    .chain(std::iter::once((
                        "new coordinator".to_string(),
                        self.coordinator.log_text(),
                    )))
                    .chain(self.workers.iter().map(|w| (w.name.clone(), w.log_text())));
                for (name, log) in logs {
                    for line in log.lines().filter(|l| l.contains("registered")) {
                        lines.push(format!("  {name}: {line}"));
                    }
                }
                return Err(lines.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn previous_log(&self) -> String {
        let log = self.dir.join(format!(
            "coordinator-{}.log",
            self.restarts.saturating_sub(1)
        ));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// Stops every process.
    pub fn stop(&mut self) {
        for w in &mut self.workers {
            w.sigkill();
        }
        self.coordinator.sigkill();
    }

    /// `svcca submit` without waiting: the job id.
    pub fn submit(&self, job: &Path) -> Result<String, String> {
        let out = svcca(&[
            "submit",
            "--coordinator",
            &self.url,
            job.to_str().expect("utf-8"),
        ]);
        if !out.status.success() {
            return Err(text(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `svcca submit --wait`.
    pub fn submit_wait(&self, job: &Path) -> Output {
        svcca(&[
            "submit",
            "--coordinator",
            &self.url,
            "--wait",
            job.to_str().expect("utf-8"),
        ])
    }

    pub fn status(&self, job_id: &str) -> Option<serde_json::Value> {
        let out = svcca(&["status", "--coordinator", &self.url, "--json", job_id]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Every process of the cluster that has ended by itself, with its status and log tail.
    pub fn dead(&mut self) -> Vec<String> {
        let mut dead = Vec::new();
        for p in std::iter::once(&mut self.coordinator).chain(self.workers.iter_mut()) {
            if let Some(status) = p.exited() {
                let log = p.log_text();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                dead.push(format!(
                    "{} exited by itself ({status}); last log lines:\n{}",
                    p.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        dead
    }

    pub fn logs(&self) -> String {
        let mut all = format!("--- coordinator\n{}", self.coordinator.log_text());
        for w in &self.workers {
            let log = w.log_text();
            let tail: String = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            all.push_str(&format!("\n--- {} (last lines)\n{tail}", w.name));
        }
        all
    }
}

fn spawn_coordinator(dir: &Path, listen: &str, generation: usize) -> Proc {
    Proc::spawn(
        &format!("coordinator-{generation}"),
        dir,
        &[
            "coordinator",
            "--listen",
            listen,
            "--heartbeat-interval",
            "200ms",
            "--lease-timeout",
            "2s",
            "--worker-grace",
            "30s",
        ],
    )
}

/// Every file under `dir` (recursively), for telling whether a killed run had written anything.
pub fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = entry.path();
        let dest = to.join(entry.file_name());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}
