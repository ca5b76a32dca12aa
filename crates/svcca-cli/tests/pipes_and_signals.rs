//! SIGPIPE and closed pipes: the embedded sweep's coordinator and workers talk over loopback
//! sockets, so a peer closing a connection must reach the code as an EPIPE error, never kill the
//! process; only a closed standard output (`svcca ls DATASET | head -1`) ends it, quietly.

use std::io::{BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn svcca() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_svcca"));
    command.current_dir(repo()).env("SVCCA_THREADS", "1");
    command
}

/// A pipe whose reading end is already closed: every write to the other end fails with EPIPE
/// (or raises SIGPIPE, where it is not ignored).
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2) failed");
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    for args in [
        vec!["ls", "examples/digits-dataset"],
        vec!["ls", "examples/digits-dataset", "--json"],
    ] {
        let out = svcca()
            .args(&args)
            .stdout(Stdio::from(closed_pipe()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            None,
            "svcca {args:?} was killed by a signal: {:?}",
            out.status
        );
        assert_eq!(out.status.code(), Some(0), "svcca {args:?}: {stderr}");
        assert!(stderr.is_empty(), "svcca {args:?} is not quiet: {stderr}");
    }
}

/// Bit of SIGPIPE in /proc's signal masks.
fn sigpipe_bit() -> u64 {
    1 << (libc::SIGPIPE - 1)
}

fn signal_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The deterministic check of the cause: while the process serves sockets, SIGPIPE is ignored.
#[test]
fn sigpipe_is_ignored_while_serving_sockets() {
    let mut child = svcca()
        .args(["coordinator", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let ignored = signal_mask(child.id(), "SigIgn:");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.contains("listening"),
        "the coordinator did not start: {line}"
    );
    assert_ne!(
        ignored & sigpipe_bit(),
        0,
        "SIGPIPE is not ignored (SigIgn {ignored:x}): a closed loopback connection would kill the process"
    );
}

/// Embedded sweeps in a row: refused ones (a tenth of a second each; about one in ten died of
/// SIGPIPE when it was not ignored) exit 10, successful ones (under a second) 0, none dies of
/// SIGPIPE (141 from a shell).
#[test]
fn embedded_sweeps_in_a_row_exit_by_their_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..22 {
        let out = tmp.path().join(format!("sweep{i}"));
        let out = out.to_str().unwrap();
        // Refused at planning (one step has no checkpoint to compare with), or a small real job.
        let (filter, expected) = if i % 10 == 9 {
            ("layer=h1", 0)
        } else {
            ("step=2250", 10)
        };
        let run = svcca()
            .args([
                "sweep",
                "examples/digits-dataset",
                "--out",
                out,
                "--compare",
                "vs-final",
                "--where",
                "seed=0",
                "--where",
                filter,
                "--workers",
                "2",
                "--no-report",
            ])
            .output()
            .unwrap();
        assert_eq!(
            run.status.code(),
            Some(expected),
            "run {i}: {:?}, stderr: {}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
    }
}
