//! CI mode: every target, a fixed seed, a bounded number of inputs; the regression corpus
//! replayed; and proof that the engine catches, minimises and saves both kinds of crash.

use std::path::Path;
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_svcca-fuzz");

/// Mutated inputs per target. The slowest targets (ingest, the coordinator) take a few
/// milliseconds per input in the debug profile, so the whole run stays well under a minute.
const ITERS: &str = "500";

#[test]
fn every_target_survives_a_fixed_seed_run() {
    let crashes = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .args(["--iters", ITERS, "--seed", "20261206", "--crash-dir"])
        .arg(crashes.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fuzzing found crashes (inputs saved in {}):\n{stdout}\n{}",
        crashes.path().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every target ran, and ran inputs.
    for target in svcca_fuzz::targets::ALL {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(target))
            .unwrap_or_else(|| panic!("no report for target {target}:\n{stdout}"));
        let execs: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(execs >= 500, "{target} ran only {execs} inputs: {line}");
    }
}

#[test]
fn the_regression_corpus_replays_cleanly() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in svcca_fuzz::targets::ALL {
        for (path, _) in svcca_fuzz::engine::regression_inputs(target) {
            replayed += 1;
            let out = Command::new(EXE)
                .args(["--target", target, "--replay"])
                .arg(&path)
                .output()
                .unwrap();
            if !out.status.success() {
                failures.push(format!(
                    "{} ({}): {}{}",
                    path.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(replayed > 0, "the regression corpus is empty");
    assert!(
        failures.is_empty(),
        "regression inputs crash again:\n{}",
        failures.join("\n")
    );
}

fn only_file(dir: &Path, prefix: &str) -> Vec<u8> {
    let found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "bin")
                && p.file_name().unwrap().to_string_lossy().starts_with(prefix)
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one {prefix}* crash in {found:?}");
    std::fs::read(&found[0]).unwrap()
}

#[test]
fn panics_and_oversize_allocations_are_caught_minimised_and_saved() {
    let crashes = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .args(["--target", "selftest", "--iters", "0", "--crash-dir"])
        .arg(crashes.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("selftest panic"), "{stdout}");
    assert!(
        stdout.contains("a single allocation of 1073741824 bytes"),
        "{stdout}"
    );
    // The shortest prefixes that still crash.
    assert_eq!(only_file(crashes.path(), "selftest-panic-"), b"xxPANIC");
    assert_eq!(only_file(crashes.path(), "selftest-oversize-"), b"yALLOC");
}
