//! `svcca sweep --overwrite`: the earlier job's output stays whole (readable and resumable) until
//! the overwriting job has computed everything; a run that fails on the way loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sweep(dataset: &Path, out: &Path, layer: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svcca"))
        .args(["sweep", dataset.to_str().unwrap(), "--out"])
        .arg(out)
        .args(["--compare", "vs-final", "--where", "seed=0", "--where"])
        .arg(format!("layer={layer}"))
        .args(["--workers", "2", "--no-report"])
        .args(extra)
        .env("SVCCA_THREADS", "1")
        .output()
        .expect("the svcca binary runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file of the output folder except the content-keyed cache, which both jobs share.
fn snapshot(out: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_failed_overwrite_leaves_the_earlier_output_whole_and_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("ds");
    copy_dir(&repo().join("examples/digits-dataset"), &dataset);
    let out = tmp.path().join("out");

    let first = sweep(&dataset, &out, "h1", &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = snapshot(&out);
    for name in [
        "job.toml",
        "results.json",
        "summary.json",
        "matrix_svcca.csv",
    ] {
        assert!(
            before.contains_key(name),
            "{name} missing: {:?}",
            before.keys()
        );
    }

    // The other job reads layer h2, one of whose shards is now damaged: it is planned, claims
    // the output, and fails when its shards are verified, before any task.
    let shard_dir = dataset.join("data/mlp/seed0/step0/h2");
    let shard = std::fs::read_dir(&shard_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&shard).unwrap();
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle..middle + 64].fill(0x7f);
    std::fs::write(&shard, &damaged).unwrap();
    let other = ["--metric", "cka", "--overwrite"];
    let failed = sweep(&dataset, &out, "h2", &other);
    assert_eq!(failed.status.code(), Some(10), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("mlp/seed0/step0/h2")
            && stderr(&failed).contains("does not hold the bytes the manifest names"),
        "the failure names the damaged shard: {}",
        stderr(&failed)
    );
    assert_eq!(
        snapshot(&out),
        before,
        "the earlier job's files must be byte-identical after a failed overwrite"
    );

    // The earlier job is still the folder's: rerunning it resumes, every pair from the cache.
    let resumed = sweep(&dataset, &out, "h1", &[]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let lines = String::from_utf8_lossy(&resumed.stdout).into_owned();
    assert!(
        lines.contains("4 pairs x 1 metric(s) (svcca), 4 from the cache"),
        "{lines}"
    );
    assert!(lines.contains("tasks run: none"), "{lines}");

    // Once the overwriting job can finish, it replaces the earlier one entirely: its job.toml,
    // its results, no matrix of a metric it does not compute, and no report of the earlier job
    // (this one runs with --no-report, so none is drawn over it).
    std::fs::create_dir_all(out.join("report/figures")).unwrap();
    std::fs::write(out.join("report/index.html"), "the earlier job's report").unwrap();
    std::fs::write(out.join("report/figures/a.png"), "an earlier figure").unwrap();
    std::fs::write(&shard, &good).unwrap();
    let replaced = sweep(&dataset, &out, "h2", &other);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    let after = snapshot(&out);
    let job = String::from_utf8_lossy(&after["job.toml"]).into_owned();
    assert!(job.contains("h2") && job.contains("cka"), "{job}");
    let results: serde_json::Value = serde_json::from_slice(&after["results.json"]).unwrap();
    assert!(
        results["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metric"] == "cka" && p["a"]["layer"] == "h2")
    );
    assert!(after.contains_key("matrix_cka.csv"));
    assert!(
        !after.contains_key("matrix_svcca.csv") && !after.contains_key("matrix_svcca.arrow"),
        "the earlier job's matrices are gone: {:?}",
        after.keys()
    );
    assert!(
        !out.join("report/index.html").exists() && !out.join("report/figures/a.png").exists(),
        "the earlier job's report is gone"
    );
    // And it is now the folder's job: the earlier spec without --overwrite is refused.
    let refused = sweep(&dataset, &out, "h1", &[]);
    assert_eq!(refused.status.code(), Some(10), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("different job"),
        "{}",
        stderr(&refused)
    );
}
