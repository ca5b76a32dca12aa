//! `svcca ingest` and `svcca ls` as a user runs them, on the digits fixtures (dense and conv
//! layers), including re-runs, conflicts and bad input exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SVCCA: &str = env!("CARGO_BIN_EXE_svcca");
const PATTERN: &str = "{run}/seed{seed}/step{step}/{layer}.npy";

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits")
}

fn svcca(args: &[&str]) -> Output {
    Command::new(SVCCA)
        .args(args)
        .env_remove("SVCCA_LOG")
        .output()
        .expect("run svcca")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ingest_digits_then_ls() {
    let out = tempfile::tempdir().unwrap();
    let url = format!("file://{}/ds", out.path().display());
    let src = digits();
    // The conv activations are 4-D: .npy files do not say whether they are NHWC or NCHW.
    let o = svcca(&["ingest", src.to_str().unwrap(), &url, "--pattern", PATTERN]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        (err.contains("conv1.npy") && err.contains("[597, 8, 8, 16]")
            || err.contains("conv2.npy") && err.contains("[597, 8, 8, 32]"))
            && err.contains("--layout"),
        "{err}"
    );
    assert!(!out.path().join("ds/manifest.json").exists());

    let o = svcca(&[
        "ingest",
        src.to_str().unwrap(),
        &url,
        "--pattern",
        PATTERN,
        "--layout",
        "nhwc",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // 3 seeds × 5 steps × 5 layers of the MLP; of the conv net, 2 seeds × 2 layers at the final
    // step and conv2 of seed 0 at step 0.
    assert_eq!(report["added"].as_array().unwrap().len(), 75 + 5);
    assert_eq!(report["datapoints"], 597);
    assert!(
        report["skipped_files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "probe_y.npy")
    );

    let o = svcca(&["ls", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("80 representations, 597 datapoints"),
        "{text}"
    );
    assert!(
        text.contains("conv1") && text.contains("[597, 8, 8, 16]"),
        "{text}"
    );
    // Numeric checkpoint order: step 25 before step 100 before step 2250.
    let (a, b, c) = (
        text.find("step 25\n").unwrap(),
        text.find("step 100\n").unwrap(),
        text.find("step 2250\n").unwrap(),
    );
    assert!(a < b && b < c, "{text}");

    let o = svcca(&["ls", &url, "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let reps = v["representations"].as_array().unwrap();
    assert_eq!(reps.len(), 80);
    let conv2 = reps
        .iter()
        .find(|r| r["id"] == "run=conv,seed=1,step=1500,layer=conv2")
        .unwrap();
    assert_eq!(conv2["shape"], serde_json::json!([597, 8, 8, 32]));
    assert_eq!(conv2["item_shape"], serde_json::json!([8, 8, 32]));

    assert_eq!(conv2["layout"], "nhwc");

    // Re-running changes nothing.
    let o = svcca(&[
        "ingest",
        src.to_str().unwrap(),
        &url,
        "--pattern",
        PATTERN,
        "--layout",
        "nhwc",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(again["unchanged"].as_array().unwrap().len(), 80);
    assert_eq!(again["shards_written"], 0);
}

#[test]
fn bad_input_exit_codes() {
    let out = tempfile::tempdir().unwrap();
    // Missing dataset: non-retryable (10) with a message naming the manifest.
    let o = svcca(&["ls", out.path().join("nothing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    assert!(stderr(&o).contains("manifest.json"));
    // Unknown scheme.
    let o = svcca(&["ls", "ftp://host/ds"]);
    assert_eq!(o.status.code(), Some(10));
    assert!(
        stderr(&o).contains("unsupported URL scheme 'ftp'"),
        "{}",
        stderr(&o)
    );
    // A NaN in the input: the file, row and column are named, and nothing is written.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("m/seed0/step1")).unwrap();
    let mut v = vec![0.5f32; 20];
    v[13] = f32::NAN;
    svcca_storage::npy::write_npy(src.path().join("m/seed0/step1/h.npy"), &[5, 4], &v).unwrap();
    let url = out.path().join("ds").display().to_string();
    let o = svcca(&[
        "ingest",
        src.path().to_str().unwrap(),
        &url,
        "--pattern",
        PATTERN,
    ]);
    assert_eq!(o.status.code(), Some(10));
    let err = stderr(&o);
    assert!(
        err.contains("h.npy") && err.contains("datapoint 3") && err.contains("column 1"),
        "{err}"
    );
    assert!(!out.path().join("ds/manifest.json").exists());
}

#[test]
fn reingest_repairs_a_damaged_shard_and_says_so() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("mlp/seed0/step0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(digits().join("mlp/seed0/step0/h4.npy"), dir.join("h4.npy")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let ds = out.path().join("ds");
    let args = [
        "ingest",
        src.path().to_str().unwrap(),
        ds.to_str().unwrap(),
        "--pattern",
        PATTERN,
        "--shard-rows",
        "300",
    ];
    assert!(svcca(&args).status.success());
    let shard = std::fs::read_dir(ds.join("data/mlp/seed0/step0/h4"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&shard, bytes).unwrap();

    let o = svcca(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("0 unchanged"), "{text}");
    assert!(
        text.contains("repaired 1 representation(s)")
            && text.contains("run=mlp,seed=0,step=0,layer=h4"),
        "{text}"
    );
}

#[test]
fn an_s3_endpoint_that_never_answers_is_a_retryable_failure_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let started = std::time::Instant::now();
    let o = Command::new(SVCCA)
        .args(["ls", "s3://bucket/ds"])
        .env_remove("SVCCA_LOG")
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", &endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("SVCCA_STORE_TIMEOUT", "1")
        .env("SVCCA_STORE_CONNECT_TIMEOUT", "1")
        .output()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&endpoint) && err.contains("SVCCA_STORE_TIMEOUT"),
        "{err}"
    );
}

#[test]
fn ls_verify_names_each_shard_that_does_not_match_the_manifest() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("mlp/seed0/step0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(digits().join("mlp/seed0/step0/h4.npy"), dir.join("h4.npy")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let ds = out.path().join("ds");
    let ds_arg = ds.to_str().unwrap();
    let o = svcca(&[
        "ingest",
        src.path().to_str().unwrap(),
        ds_arg,
        "--pattern",
        PATTERN,
        "--shard-rows",
        "300",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = svcca(&["ls", ds_arg, "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("verified 2 shards of 1 representations"));

    // The manifest's size of shard 1 is wrong; the shard itself is intact.
    let manifest_path = ds.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let shard1 = m["representations"][0]["shards"][1].clone();
    let bytes = shard1["bytes"].as_u64().unwrap();
    m["representations"][0]["shards"][1]["bytes"] = (bytes + 1).into();
    std::fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();

    // compare of a selector reads the shards: the first read refuses the size.
    let sel = format!("{ds_arg}#run=mlp,seed=0,step=0,layer=h4");
    let o = svcca(&["compare", &sel, &sel]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "is {bytes} bytes but the manifest says {}",
            bytes + 1
        )),
        "{}",
        stderr(&o)
    );

    // Plain ls reads only the manifest; --verify reads the shards and names the bad one.
    assert!(svcca(&["ls", ds_arg]).status.success());
    let o = svcca(&["ls", ds_arg, "--verify"]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("run=mlp,seed=0,step=0,layer=h4: shard 1")
            && err.contains(shard1["path"].as_str().unwrap())
            && err.contains(&format!(
                "is {bytes} bytes but the manifest says {}",
                bytes + 1
            ))
            && err.contains("1 of 2 shards"),
        "{err}"
    );
}
