//! The Kubernetes manifests under `deploy/` and the `svcca` binary agree.
//!
//! The sweep overlay is rendered with `kubectl kustomize` (what `kubectl apply -k` applies), and the
//! coordinator, worker and submitter containers are run as processes on loopback with exactly the
//! arguments and environment the manifests give them (the image's ENTRYPOINT read from
//! `deploy/Dockerfile`, then `args`; `env` and nothing else). Only what cannot be the same
//! off-cluster is rewritten: the coordinator Service's host becomes 127.0.0.1, the ports become free
//! ports, the ConfigMap's mount becomes a temporary folder, each Secret volume becomes a folder
//! holding the items that pod projects (test tokens, and the certificates of `fixtures/tls` for
//! `svcca-tls`), and the job spec's dataset and output URLs become temporary folders (a dataset
//! ingested from `fixtures/digits`). Then:
//! - the probes the manifests declare answer as they must: a worker's liveness is SERVING with no
//!   coordinator anywhere, its readiness only once it has registered;
//! - the ConfigMap's job, submitted with the submitter's arguments, runs to completion and leaves
//!   its results under the output URL;
//! - the exit codes the Job's `podFailurePolicy` fails on are the codes the binary returns for a
//!   usage error and for a non-retryable failure;
//! - the processes log JSON, as the manifests ask;
//! - a worker sent SIGTERM drains and exits 0 within the pod's `terminationGracePeriodSeconds`;
//! - the nightly overlay runs the same pool and the same submitter;
//! - every overlay fences the pool with NetworkPolicies and mounts no API token into its pods;
//! - the nightly overlays without a standing pool run their job to its end too: the one-pod
//!   `svcca sweep` (as many workers as the pod requests CPUs), and the per-run pool (coordinator
//!   sidecar and submitter in one pod, workers that exit 0 once the job has ended), each leaving
//!   results and report under the output and the cache beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use svcca_engine::spec::{JobSpec, glob_match};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SVCCA: &str = env!("CARGO_BIN_EXE_svcca");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------------------------------------
// Reading the rendered manifests.

/// Every object `kubectl kustomize deploy/overlays/<overlay>` renders.
fn render(overlay: &str) -> Vec<Value> {
    let dir = repo().join("deploy/overlays").join(overlay);
    let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `kubectl kustomize {}` ({e}): kubectl 1.27+ renders the manifests, here as in CI \
             (see deploy/README.md)",
            dir.display()
        )
    });
    assert!(
        out.status.success(),
        "`kubectl kustomize {}` failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kubectl prints UTF-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("kubectl kustomize prints valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the rendered manifests hold no {kind}/{name}"))
}

fn pod_spec(obj: &Value) -> &Value {
    match obj["kind"].as_str() {
        Some("CronJob") => &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &obj["spec"]["template"]["spec"],
    }
}

fn job_spec(obj: &Value) -> &Value {
    match obj["kind"].as_str() {
        Some("CronJob") => &obj["spec"]["jobTemplate"]["spec"],
        _ => &obj["spec"],
    }
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container `{name}` in pod spec {pod}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    s.as_str()
                        .unwrap_or_else(|| panic!("{s} is not a string"))
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn int(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// The image's entry point, from the exec-form `ENTRYPOINT` of `deploy/Dockerfile`.
fn image_entrypoint() -> Vec<String> {
    let text =
        std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("ENTRYPOINT"))
        .expect("deploy/Dockerfile sets an ENTRYPOINT");
    serde_json::from_str(line["ENTRYPOINT".len()..].trim())
        .expect("ENTRYPOINT is in exec form (a JSON array)")
}

/// A container's process as the kubelet starts it.
#[derive(Debug, Clone, PartialEq)]
struct Launch {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

fn launch_of(c: &Value, entrypoint: &[String]) -> Launch {
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e.get("value") {
            v.as_str()
                .unwrap_or_else(|| panic!("env {name}: value {v} is not a string"))
                .to_string()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => format!("{}-0", c["name"].as_str().unwrap_or("pod")),
                "metadata.namespace" => "default".to_string(),
                "status.podIP" => "127.0.0.1".to_string(),
                other => panic!("env {name}: fieldRef {other} is not reproduced by this test"),
            }
        } else if let Some(field) = e["valueFrom"].get("resourceFieldRef") {
            // CPUs as the kubelet gives them with divisor 1: whole cores, rounded up.
            let resource = field["resource"].as_str().expect("resource");
            let (kind, what) = resource.split_once('.').expect("requests.X or limits.X");
            assert_eq!(what, "cpu", "env {name}: only CPU resources are reproduced");
            assert_eq!(field["divisor"], "1", "env {name}: divisor 1 (whole cores)");
            let cpu = c["resources"][kind]["cpu"]
                .as_str()
                .unwrap_or_else(|| panic!("env {name}: the container sets no {resource}"));
            let cores = match cpu.strip_suffix('m') {
                Some(milli) => milli.parse::<u64>().expect("millicores").div_ceil(1000),
                None => cpu.parse().expect("cores"),
            };
            cores.to_string()
        } else {
            panic!(
                "env {name}: only `value`, `fieldRef` and CPU `resourceFieldRef` are reproduced \
                 by this test: {e}"
            )
        };
        env.push((name, value));
    }
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let source = from
            .get("secretRef")
            .or_else(|| from.get("configMapRef"))
            .expect("envFrom source");
        assert_eq!(
            source["optional"],
            Value::Bool(true),
            "envFrom {from} is not optional: pods would not start without it, and it must stay a \
             place for optional static keys only"
        );
    }
    // The kubelet expands $(VAR) in command and args from the container's environment.
    let expand = |arg: String| {
        env.iter().fold(arg, |arg, (name, value)| {
            arg.replace(&format!("$({name})"), value)
        })
    };
    let mut argv = if c.get("command").is_some() {
        strings(&c["command"])
    } else {
        entrypoint.to_vec()
    };
    argv.extend(strings(&c["args"]));
    let argv: Vec<String> = argv.into_iter().map(expand).collect();
    // The image's entrypoint is the binary's absolute path (there is no PATH in an image FROM
    // scratch); here it is the binary under test.
    assert!(
        argv.first()
            .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "svcca")),
        "container {} does not run svcca: {argv:?}",
        c["name"]
    );
    Launch { argv, env }
}

/// Literal substring replacements, each of which must be used at least once.
struct Rewrite(Vec<(String, String)>);

impl Rewrite {
    fn apply(&self, launch: &Launch, what: &str) -> Launch {
        let mut used = vec![false; self.0.len()];
        let mut sub = |s: &str| {
            let mut s = s.to_string();
            for (i, (from, to)) in self.0.iter().enumerate() {
                if s.contains(from.as_str()) {
                    s = s.replace(from.as_str(), to);
                    used[i] = true;
                }
            }
            s
        };
        let argv = launch.argv.iter().map(|a| sub(a)).collect();
        let env = launch
            .env
            .iter()
            .map(|(k, v)| (k.clone(), sub(v)))
            .collect();
        for (i, (from, _)) in self.0.iter().enumerate() {
            assert!(
                used[i],
                "the {what} manifest never mentions `{from}`, which the other manifests rely on \
                 (a listen address, a probe port or the coordinator's Service): {launch:?}"
            );
        }
        Launch { argv, env }
    }
}

/// The worker's drain timeout: its `--drain-timeout` (or `SVCCA_DRAIN_TIMEOUT`), else the default
/// that `svcca worker --help` shows.
fn drain_timeout(worker: &Launch) -> Duration {
    let from_args = worker.argv.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--drain-timeout=")
            .map(str::to_string)
            .or_else(|| {
                (a == "--drain-timeout").then(|| {
                    worker
                        .argv
                        .get(i + 1)
                        .cloned()
                        .expect("--drain-timeout value")
                })
            })
    });
    let from_env = worker
        .env
        .iter()
        .find(|(k, _)| k == "SVCCA_DRAIN_TIMEOUT")
        .map(|(_, v)| v.clone());
    let text = from_args.or(from_env).unwrap_or_else(|| {
        let help = Command::new(SVCCA)
            .args(["worker", "--help"])
            .output()
            .expect("svcca worker --help");
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let at = help
            .find("--drain-timeout")
            .expect("svcca worker has --drain-timeout");
        let rest = &help[at..];
        let start = rest
            .find("[default: ")
            .expect("--drain-timeout has a default")
            + "[default: ".len();
        rest[start..start + rest[start..].find(']').unwrap()].to_string()
    });
    parse_duration(&text)
}

/// The duration syntax of svcca's flags: `500ms`, `60s`, `5m`, `1h` or bare seconds.
fn parse_duration(text: &str) -> Duration {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("`{text}` is not a duration"));
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => panic!("unknown duration unit `{other}` in `{text}`"),
    };
    Duration::from_secs_f64(seconds)
}

/// What the test puts in the Secrets the manifests mount (the real ones are made by the user or
/// cert-manager, see deploy/README.md): tokens, and the test certificates for `svcca-tls`.
fn secret_item(secret: &str, key: &str) -> Vec<u8> {
    let tls = |name: &str| std::fs::read(repo().join("fixtures/tls").join(name)).unwrap();
    match (secret, key) {
        ("svcca-auth", "submitter-token") => b"submitter-0123456789abcdef0123\n".to_vec(),
        ("svcca-auth", "worker-token") => b"worker-0123456789abcdef0123\n".to_vec(),
        ("svcca-tls", "tls.crt") => tls("server.pem"),
        ("svcca-tls", "tls.key") => tls("server-key.pem"),
        ("svcca-tls", "ca.crt") => tls("ca.pem"),
        other => panic!("the manifests mount {other:?}, which this test does not know"),
    }
}

/// Reproduces a container's Secret volumes under `root`: each mount becomes a folder holding the
/// items its volume projects, and the rewrite from the mount path to that folder is returned.
/// A pod that projects only some keys of a Secret sees only those files, as on a cluster.
fn secret_mounts(pod: &Value, c: &Value, root: &Path) -> Vec<(String, String)> {
    let mut rewrites = Vec::new();
    for mount in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
            .expect("a mounted volume exists");
        let Some(secret) = volume.get("secret") else {
            continue;
        };
        let name = secret["secretName"].as_str().expect("secretName");
        let dir = root.join(format!(
            "{}-{}",
            c["name"].as_str().unwrap(),
            mount["name"].as_str().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let items = secret["items"]
            .as_array()
            .unwrap_or_else(|| panic!("Secret volume {volume} projects no items: name each key"));
        for item in items {
            let key = item["key"].as_str().expect("item key");
            let path = item["path"].as_str().expect("item path");
            std::fs::write(dir.join(path), secret_item(name, key)).unwrap();
        }
        let mount_path = mount["mountPath"].as_str().unwrap().trim_end_matches('/');
        rewrites.push((format!("{mount_path}/"), format!("{}/", dir.display())));
    }
    rewrites
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A running svcca process, killed when dropped so that a failing test leaves nothing behind.
struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(name: &str, launch: &Launch, logs: &Path) -> Proc {
        let stdout = logs.join(format!("{name}.stdout"));
        let stderr = logs.join(format!("{name}.stderr"));
        let child = command(launch)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let tail = |s: String| {
            s.chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        };
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            tail(read(&self.stdout)),
            self.name,
            tail(read(&self.stderr))
        )
    }

    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process exactly as configured: no environment from the test runner.
fn command(launch: &Launch) -> Command {
    let mut cmd = Command::new(SVCCA);
    cmd.args(&launch.argv[1..])
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs a command to its end (killed after `timeout`) and returns its exit code and output.
fn run(name: &str, launch: &Launch, logs: &Path, timeout: Duration) -> (Option<i32>, String) {
    let mut proc = Proc::spawn(name, launch, logs);
    let status = proc.wait_timeout(timeout);
    let out = proc.logs();
    match status {
        Some(status) => (status.code(), out),
        None => panic!("{name} did not finish within {timeout:?}\n{out}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Health probes, as the kubelet's gRPC probe asks them.

async fn probe(port: u16, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// A manifest's gRPC probe: the port (before rewriting) and the service name.
fn grpc_probe(c: &Value, which: &str) -> (u16, String) {
    let grpc = &c[which]["grpc"];
    assert!(
        grpc.is_object(),
        "container {} has no gRPC {which}",
        c["name"]
    );
    let port = int(&grpc["port"], "probe port") as u16;
    (port, grpc["service"].as_str().unwrap_or("").to_string())
}

fn wait_for(
    rt: &tokio::runtime::Runtime,
    port: u16,
    service: &str,
    want: ServingStatus,
    timeout: Duration,
    procs: &[&Proc],
) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = rt.block_on(probe(port, service));
        if got == Some(want) {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = procs.iter().map(|p| p.logs()).collect();
            panic!(
                "health `{service}` on port {port} is {got:?}, not {want:?}, after {timeout:?}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// The dataset.

/// The representations the test dataset holds: (seed, step, layer) of the digits MLP. Two seeds and
/// two layers at the last step, plus one earlier checkpoint that the sweep's selection may or may
/// not take: the expected pairs come from the ConfigMap's own `where` filter.
const REPRESENTATIONS: [(u32, u32, &str); 5] = [
    (0, 2250, "h3"),
    (0, 2250, "h4"),
    (1, 2250, "h3"),
    (1, 2250, "h4"),
    (0, 400, "h4"),
];

/// The canonical key results name a representation by.
fn label(seed: u32, step: u32, layer: &str) -> String {
    format!("run=mlp,seed={seed},step={step},layer={layer}")
}

/// Copies a few representations of `fixtures/digits` (same layout) and ingests them with
/// `svcca ingest` into an svcca dataset; returns the dataset's URL.
fn ingest(tmp: &Path) -> String {
    let fixtures = repo().join("fixtures/digits");
    let src = tmp.join("npy");
    for (seed, step, layer) in REPRESENTATIONS {
        let rel = format!("mlp/seed{seed}/step{step}/{layer}.npy");
        let to = src.join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixtures.join(&rel), &to)
            .unwrap_or_else(|e| panic!("fixtures/digits/{rel}: {e}"));
    }
    let dataset = tmp.join("dataset");
    std::fs::create_dir_all(&dataset).unwrap();
    let out = Command::new(SVCCA)
        .arg("ingest")
        .arg(&src)
        .arg(url_of(&dataset))
        .args(["--pattern", "{run}/seed{seed}/step{step}/{layer}.npy"])
        .output()
        .expect("run svcca ingest");
    assert!(
        out.status.success(),
        "svcca ingest failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    url_of(&dataset)
}

fn url_of(path: &Path) -> String {
    format!(
        "file://{}",
        path.canonicalize()
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
    )
}

/// The job spec with its dataset and output (and cache, if set) moved to local folders; every
/// other setting is the ConfigMap's.
fn adapt(job_toml: &str, dataset: &str, output: &Path) -> String {
    let mut table: toml::Table = toml::from_str(job_toml).unwrap();
    table.insert("dataset".into(), dataset.into());
    table.insert("output".into(), url_of(output).into());
    if table.contains_key("cache") {
        table.insert(
            "cache".into(),
            url_of(&output.with_extension("cache")).into(),
        );
    }
    let adapted = toml::to_string(&table).unwrap();
    JobSpec::from_toml(&adapted).expect("the adapted job spec is valid");
    adapted
}

/// The labels of [`REPRESENTATIONS`] that the spec's selection takes.
fn selected(spec: &JobSpec) -> BTreeSet<String> {
    REPRESENTATIONS
        .iter()
        .filter(|(seed, step, layer)| {
            // Job specs may name keys in the canonical form or the earlier one.
            let full = [
                label(*seed, *step, layer),
                format!("mlp/seed{seed}/step{step}/{layer}"),
            ];
            let fields: BTreeMap<&str, String> = [
                ("run", "mlp".to_string()),
                ("seed", seed.to_string()),
                ("step", step.to_string()),
                ("layer", layer.to_string()),
            ]
            .into();
            let keys_ok = spec.select.keys.is_empty()
                || spec
                    .select
                    .keys
                    .iter()
                    .any(|k| full.iter().any(|f| glob_match(k, f)));
            let filters_ok = spec.select.filters.iter().all(|(field, patterns)| {
                fields
                    .get(field.as_str())
                    .is_some_and(|v| patterns.as_slice().iter().any(|p| glob_match(p, v)))
            });
            keys_ok && filters_ok
        })
        .map(|(seed, step, layer)| label(*seed, *step, layer))
        .collect()
}

// ---------------------------------------------------------------------------------------------

struct Pool {
    entrypoint: Vec<String>,
    coordinator: Launch,
    worker: Launch,
    submit: Launch,
    coordinator_pod: Value,
    worker_pod: Value,
    submit_container: Value,
    submit_job: Value,
    job_toml: String,
    service: (String, u64),
}

/// The pieces of one overlay the test runs.
fn pool(overlay: &str, submitter_kind: &str, submitter_name: &str) -> Pool {
    let docs = render(overlay);
    let entrypoint = image_entrypoint();
    let coordinator_pod = pod_spec(object(&docs, "Deployment", "svcca-coordinator")).clone();
    let worker_pod = pod_spec(object(&docs, "Deployment", "svcca-worker")).clone();
    let submitter = object(&docs, submitter_kind, submitter_name);
    let submit_pod = pod_spec(submitter);
    let submit_container = container(submit_pod, "submit").clone();

    // The job spec: the ConfigMap volume mounted into the submitter.
    let mount = submit_container["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.first())
        .expect("the submitter mounts the job spec")
        .clone();
    let volume = submit_pod["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
        .expect("the mounted volume exists");
    let cm_name = volume["configMap"]["name"]
        .as_str()
        .expect("the job spec volume is a ConfigMap");
    let cm = object(&docs, "ConfigMap", cm_name);
    let data = cm["data"].as_object().expect("ConfigMap data");
    assert_eq!(
        data.len(),
        1,
        "the job ConfigMap holds one file, the job spec"
    );
    let (key, job_toml) = data.iter().next().unwrap();
    let spec_path = format!(
        "{}/{key}",
        mount["mountPath"].as_str().unwrap().trim_end_matches('/')
    );
    let submit = launch_of(&submit_container, &entrypoint);
    assert!(
        submit.argv.contains(&spec_path),
        "the submitter does not submit the mounted job spec {spec_path}: {submit:?}"
    );

    let svc = object(&docs, "Service", "svcca-coordinator");
    let port = &svc["spec"]["ports"][0];
    Pool {
        coordinator: launch_of(container(&coordinator_pod, "coordinator"), &entrypoint),
        worker: launch_of(container(&worker_pod, "worker"), &entrypoint),
        submit,
        entrypoint,
        coordinator_pod,
        worker_pod,
        submit_container,
        submit_job: job_spec(submitter).clone(),
        job_toml: job_toml.as_str().expect("job spec text").to_string(),
        service: (
            svc["metadata"]["name"].as_str().unwrap().to_string(),
            int(&port["port"], "Service port"),
        ),
    }
}

/// Exit codes on which the Job's pod failure policy fails the Job at once.
fn fail_job_codes(job: &Value) -> BTreeSet<i64> {
    job["podFailurePolicy"]["rules"]
        .as_array()
        .expect("the submitter Job has a podFailurePolicy")
        .iter()
        .filter(|r| r["action"] == "FailJob" && r["onExitCodes"]["operator"] == "In")
        .flat_map(|r| {
            r["onExitCodes"]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
        })
        .collect()
}

#[test]
fn the_manifests_command_lines_run_a_sweep_on_loopback() {
    let sweep = pool("sweep", "Job", "svcca-sweep");
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Ports, as the manifests wire them.
    let coordinator_c = container(&sweep.coordinator_pod, "coordinator");
    let grpc_port = coordinator_c["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "grpc"))
        .map(|p| int(&p["containerPort"], "containerPort"))
        .expect("the coordinator declares its grpc port");
    let (svc_host, svc_port) = sweep.service.clone();
    let worker_c = container(&sweep.worker_pod, "worker");
    let (live_port, live_service) = grpc_probe(worker_c, "livenessProbe");
    let (ready_port, ready_service) = grpc_probe(worker_c, "readinessProbe");
    assert_eq!(
        live_port, ready_port,
        "the worker's probes ask one health server"
    );
    let (c_live_port, c_live_service) = grpc_probe(coordinator_c, "livenessProbe");
    let (c_ready_port, c_ready_service) = grpc_probe(coordinator_c, "readinessProbe");
    let c_health_port = coordinator_c["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "health"))
        .map(|p| int(&p["containerPort"], "containerPort"))
        .expect("the coordinator declares its health port");
    assert_eq!(
        (c_live_port as u64, c_ready_port as u64),
        (c_health_port, c_health_port),
        "the coordinator's probes ask its plain health port (the kubelet speaks no TLS)"
    );
    assert_ne!(c_health_port, grpc_port);

    // The Secrets, as each pod projects them.
    let secrets = tmp.path().join("secrets");
    let coordinator_secrets = secret_mounts(&sweep.coordinator_pod, coordinator_c, &secrets);
    let worker_secrets = secret_mounts(&sweep.worker_pod, worker_c, &secrets);
    let submit_pod = pod_spec(object(&render("sweep"), "Job", "svcca-sweep")).clone();
    let submit_secrets = secret_mounts(&submit_pod, &sweep.submit_container, &secrets);

    let port = free_port();
    let c_health = free_port();
    let coordinator_url = format!("{svc_host}:{svc_port}");
    let to_coordinator = (coordinator_url.clone(), format!("127.0.0.1:{port}"));
    let coordinator = Rewrite(
        [
            (format!("0.0.0.0:{grpc_port}"), format!("127.0.0.1:{port}")),
            (
                format!("0.0.0.0:{c_health_port}"),
                format!("127.0.0.1:{c_health}"),
            ),
        ]
        .into_iter()
        .chain(coordinator_secrets.clone())
        .collect(),
    )
    .apply(&sweep.coordinator, "coordinator");
    let health_ports = [free_port(), free_port()];
    let workers: Vec<Launch> = health_ports
        .iter()
        .map(|hp| {
            Rewrite(
                [
                    to_coordinator.clone(),
                    (format!("0.0.0.0:{live_port}"), format!("127.0.0.1:{hp}")),
                ]
                .into_iter()
                .chain(worker_secrets.clone())
                .collect(),
            )
            .apply(&sweep.worker, "worker")
        })
        .collect();

    // The job spec, with the dataset and output moved to temporary folders.
    let spec_dir = tmp.path().join("spec");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let original = JobSpec::from_toml(&sweep.job_toml).expect("the ConfigMap's job spec is valid");
    let output = tmp.path().join("output");
    let dataset = ingest(tmp.path());
    let adapted = adapt(&sweep.job_toml, &dataset, &output);
    let mount_dir = sweep.submit_container["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let spec_file = sweep
        .submit
        .argv
        .iter()
        .find(|a| a.starts_with(&format!("{mount_dir}/")))
        .unwrap()
        .clone();
    std::fs::write(spec_dir.join(&spec_file[mount_dir.len() + 1..]), &adapted).unwrap();
    let to_spec = (format!("{mount_dir}/"), format!("{}/", spec_dir.display()));
    let submit = Rewrite(
        [to_coordinator.clone(), to_spec.clone()]
            .into_iter()
            .chain(submit_secrets.clone())
            .collect(),
    )
    .apply(&sweep.submit, "submitter");

    // Workers first, with no coordinator anywhere: alive, not ready. Liveness must never depend on
    // the coordinator, or a coordinator outage would get every worker restarted.
    let w0 = Proc::spawn("worker-0", &workers[0], &logs);
    let w1 = Proc::spawn("worker-1", &workers[1], &logs);
    for (hp, w) in health_ports.iter().zip([&w0, &w1]) {
        wait_for(
            &rt,
            *hp,
            &live_service,
            ServingStatus::Serving,
            Duration::from_secs(60),
            &[w],
        );
        assert_ne!(
            rt.block_on(probe(*hp, &ready_service)),
            Some(ServingStatus::Serving),
            "a worker is ready before any coordinator exists\n{}",
            w.logs()
        );
    }

    // The coordinator: both probes pass; then the workers register and become ready.
    let coord = Proc::spawn("coordinator", &coordinator, &logs);
    wait_for(
        &rt,
        c_health,
        &c_ready_service,
        ServingStatus::Serving,
        Duration::from_secs(60),
        &[&coord],
    );
    wait_for(
        &rt,
        c_health,
        &c_live_service,
        ServingStatus::Serving,
        Duration::from_secs(5),
        &[&coord],
    );
    for (hp, w) in health_ports.iter().zip([&w0, &w1]) {
        wait_for(
            &rt,
            *hp,
            &ready_service,
            ServingStatus::Serving,
            Duration::from_secs(60),
            &[w, &coord],
        );
        wait_for(
            &rt,
            *hp,
            &live_service,
            ServingStatus::Serving,
            Duration::from_secs(5),
            &[w],
        );
    }

    // The ConfigMap's job, submitted exactly as the Job's pod does, runs to completion.
    let (code, out) = run("submit", &submit, &logs, Duration::from_secs(300));
    assert_eq!(
        code,
        Some(0),
        "the sweep failed\n{out}\n{}\n{}\n{}",
        coord.logs(),
        w0.logs(),
        w1.logs()
    );

    // Its results are under the output URL.
    let results = svcca_results::ResultsFile::from_json(
        &std::fs::read(output.join("results.json"))
            .unwrap_or_else(|e| panic!("no results.json: {e}\n{}", coord.logs())),
    )
    .expect("results.json parses");
    let expected = selected(&original);
    assert!(
        expected.len() >= 2,
        "the test dataset must hold at least two representations the spec selects"
    );
    let got: BTreeSet<String> = results
        .representations
        .iter()
        .map(|r| r.key.label())
        .collect();
    assert_eq!(
        got, expected,
        "the sweep compared other representations than the ConfigMap's selection"
    );
    let metrics: BTreeSet<String> = original
        .metric_set()
        .iter()
        .map(|m| m.as_str().to_string())
        .collect();
    assert_eq!(
        results.metrics().into_iter().collect::<BTreeSet<_>>(),
        metrics
    );
    for metric in &metrics {
        let pairs = results.pairs_of(metric).count();
        if original.comparison.as_str() == "all-pairs" {
            let n = expected.len();
            assert_eq!(
                pairs,
                n * (n - 1) / 2,
                "{metric}: all-pairs over {n} representations"
            );
        } else {
            assert!(pairs > 0, "{metric}: no pair compared");
        }
        assert!(
            output.join(format!("matrix_{metric}.csv")).is_file(),
            "no matrix_{metric}.csv"
        );
        for p in results.pairs_of(metric) {
            assert!(
                p.mean.is_finite() && (-1e-9..=1.0 + 1e-9).contains(&p.mean),
                "{metric} {p:?}"
            );
        }
    }
    assert!(
        output.join("summary.json").is_file(),
        "no summary.json under the output URL"
    );

    // The podFailurePolicy fails the Job at once on the codes the binary uses for failures that a
    // retry cannot fix, and only on those.
    let fail_codes = fail_job_codes(&sweep.submit_job);
    let mut usage = submit.clone();
    usage.argv.push("--no-such-flag".into());
    let (code, out) = run("submit-usage", &usage, &logs, Duration::from_secs(30));
    let code = code.expect("exit code") as i64;
    assert!(
        fail_codes.contains(&code),
        "a usage error exits {code}, which the podFailurePolicy retries\n{out}"
    );
    std::fs::write(spec_dir.join("bad.toml"), "output = \"file:///nowhere\"\n").unwrap();
    let mut bad = submit.clone();
    for a in bad.argv.iter_mut() {
        if *a
            == format!(
                "{}/{}",
                spec_dir.display(),
                &spec_file[mount_dir.len() + 1..]
            )
        {
            *a = format!("{}/bad.toml", spec_dir.display());
        }
    }
    let (code, out) = run("submit-bad-spec", &bad, &logs, Duration::from_secs(60));
    let code = code.expect("exit code") as i64;
    assert!(
        fail_codes.contains(&code),
        "a bad job spec exits {code}, which the podFailurePolicy retries\n{out}"
    );
    assert!(!fail_codes.contains(&0) && !fail_codes.is_empty());

    // The nightly overlay runs the same pool with the same submitter.
    let nightly = pool("nightly", "CronJob", "svcca-nightly");
    assert_eq!(nightly.entrypoint, sweep.entrypoint);
    assert_eq!(
        nightly.coordinator, sweep.coordinator,
        "the nightly coordinator differs from the sweep's"
    );
    assert_eq!(
        nightly.worker, sweep.worker,
        "the nightly workers differ from the sweep's"
    );
    assert_eq!(
        nightly.submit, sweep.submit,
        "the nightly submitter differs from the sweep's"
    );
    assert_eq!(fail_job_codes(&nightly.submit_job), fail_codes);
    assert_eq!(nightly.service, sweep.service);

    // ... and its job spec, submitted to the same pool, runs to completion: each checkpoint of a
    // layer against the last checkpoint of the same seed and layer.
    let nightly_spec =
        JobSpec::from_toml(&nightly.job_toml).expect("the nightly ConfigMap's job spec is valid");
    let nightly_dir = tmp.path().join("spec-nightly");
    std::fs::create_dir_all(&nightly_dir).unwrap();
    let nightly_output = tmp.path().join("output-nightly");
    std::fs::write(
        nightly_dir.join(&spec_file[mount_dir.len() + 1..]),
        adapt(&nightly.job_toml, &dataset, &nightly_output),
    )
    .unwrap();
    let nightly_pod = pod_spec(object(&render("nightly"), "CronJob", "svcca-nightly")).clone();
    let nightly_secrets = secret_mounts(
        &nightly_pod,
        &nightly.submit_container,
        &secrets.join("nightly"),
    );
    let nightly_submit = Rewrite(
        [
            to_coordinator.clone(),
            (
                format!("{mount_dir}/"),
                format!("{}/", nightly_dir.display()),
            ),
        ]
        .into_iter()
        .chain(nightly_secrets)
        .collect(),
    )
    .apply(&nightly.submit, "nightly submitter");
    let (code, out) = run(
        "submit-nightly",
        &nightly_submit,
        &logs,
        Duration::from_secs(300),
    );
    assert_eq!(
        code,
        Some(0),
        "the nightly job failed\n{out}\n{}",
        coord.logs()
    );
    let results = svcca_results::ResultsFile::from_json(
        &std::fs::read(nightly_output.join("results.json")).expect("nightly results.json"),
    )
    .expect("nightly results.json parses");
    let chosen = selected(&nightly_spec);
    let mut expected_pairs = BTreeSet::new();
    if nightly_spec.comparison.as_str() == "vs-final" {
        for (seed, step, layer) in REPRESENTATIONS {
            let last = REPRESENTATIONS
                .iter()
                .filter(|(s, t, l)| *s == seed && *l == layer && chosen.contains(&label(*s, *t, l)))
                .map(|(_, t, _)| *t)
                .max();
            if chosen.contains(&label(seed, step, layer)) && last.is_some_and(|last| last > step) {
                expected_pairs
                    .insert((label(seed, step, layer), label(seed, last.unwrap(), layer)));
            }
        }
        assert!(
            !expected_pairs.is_empty(),
            "the test dataset gives the nightly spec nothing to compare"
        );
    }
    for metric in nightly_spec.metric_set() {
        let got: BTreeSet<(String, String)> = results
            .pairs_of(metric.as_str())
            .map(|p| (p.a.label(), p.b.label()))
            .collect();
        if nightly_spec.comparison.as_str() == "vs-final" {
            assert_eq!(
                got,
                expected_pairs,
                "nightly {}: not each checkpoint against the last",
                metric.as_str()
            );
        } else {
            assert!(
                !got.is_empty(),
                "nightly {}: no pair compared",
                metric.as_str()
            );
        }
    }

    // JSON logs, one object per line, as the manifests ask (SVCCA_LOG_FORMAT=json).
    for (launch, proc) in [(&coordinator, &coord), (&workers[0], &w0)] {
        assert!(
            launch
                .env
                .iter()
                .any(|(k, v)| k == "SVCCA_LOG_FORMAT" && v == "json"),
            "{} does not log JSON: {launch:?}",
            proc.name
        );
        let text = std::fs::read_to_string(&proc.stderr).unwrap();
        // Tracing's events; a plain line a command prints for people (the coordinator's
        // "listening on" line) is not a log event.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .collect();
        assert!(
            !lines.is_empty(),
            "{} logged no JSON event at the manifests' log level:\n{text}",
            proc.name
        );
        for line in lines {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", proc.name));
            assert!(
                v.is_object() && v.get("level").is_some(),
                "{}: {line}",
                proc.name
            );
        }
    }

    // A worker sent SIGTERM (a scale-down, a node drain) drains and exits 0 within the pod's grace
    // period, so the kubelet never has to SIGKILL it.
    let grace = int(
        &sweep.worker_pod["terminationGracePeriodSeconds"],
        "worker terminationGracePeriodSeconds",
    );
    let drain = drain_timeout(&sweep.worker);
    assert!(
        Duration::from_secs(grace) >= drain + Duration::from_secs(5),
        "the workers' terminationGracePeriodSeconds ({grace} s) leaves no margin over their drain \
         timeout ({drain:?}): the kubelet would SIGKILL a draining worker"
    );
    let mut w0 = w0;
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(w0.pid().to_string())
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = w0.wait_timeout(Duration::from_secs(grace));
    assert!(
        status.is_some(),
        "a worker did not exit within the grace period of {grace} s after SIGTERM\n{}",
        w0.logs()
    );
    assert_eq!(
        status.unwrap().code(),
        Some(0),
        "a drained worker exits 0\n{}",
        w0.logs()
    );
    drop((coord, w1));
}

/// The pieces of "secure by default" that no process run can show: every overlay renders
/// NetworkPolicies that let only the pool's workers and submitters reach the coordinator's gRPC
/// port, no pod gets a Kubernetes API token, the coordinator has a CPU limit, and every container
/// that talks gRPC uses TLS and a token of its own role.
#[test]
fn every_overlay_fences_the_pool_and_secures_its_connections() {
    for (overlay, submitter_kind, submitter_name) in [
        ("sweep", "Job", "svcca-sweep"),
        ("nightly", "CronJob", "svcca-nightly"),
    ] {
        let docs = render(overlay);
        let policies: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "NetworkPolicy")
            .collect();
        let selecting = |component: &str| {
            policies
                .iter()
                .find(|p| {
                    p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                        == component
                })
                .copied()
                .unwrap_or_else(|| panic!("{overlay}: no NetworkPolicy selects the {component}"))
        };
        let coordinator_policy = selecting("coordinator");
        let ingress = coordinator_policy["spec"]["ingress"]
            .as_array()
            .expect("coordinator ingress rules");
        assert_eq!(ingress.len(), 1, "{overlay}: one ingress rule: {ingress:?}");
        let from: BTreeSet<String> = ingress[0]["from"]
            .as_array()
            .expect("from")
            .iter()
            .map(|peer| {
                assert!(
                    peer.get("ipBlock").is_none() && peer.get("namespaceSelector").is_none(),
                    "{overlay}: the coordinator admits more than the pool's pods: {peer}"
                );
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                    .as_str()
                    .expect("a component")
                    .to_string()
            })
            .collect();
        assert_eq!(
            from,
            BTreeSet::from(["submit".to_string(), "worker".to_string()]),
            "{overlay}"
        );
        for component in ["coordinator", "worker", "submit"] {
            let types = strings(&selecting(component)["spec"]["policyTypes"]);
            assert!(
                types.contains(&"Ingress".to_string()) && types.contains(&"Egress".to_string()),
                "{overlay}: the {component} policy restricts both directions: {types:?}"
            );
        }

        let pods = [
            (
                "coordinator",
                pod_spec(object(&docs, "Deployment", "svcca-coordinator")),
            ),
            (
                "worker",
                pod_spec(object(&docs, "Deployment", "svcca-worker")),
            ),
            (
                "submit",
                pod_spec(object(&docs, submitter_kind, submitter_name)),
            ),
        ];
        for (name, pod) in pods {
            assert_eq!(
                pod["automountServiceAccountToken"],
                Value::Bool(false),
                "{overlay}: the {name} pod gets an API token it never uses"
            );
            let c = container(pod, name);
            let args = strings(&c["args"]);
            if name == "coordinator" {
                for flag in [
                    "--auth-token-file",
                    "--worker-token-file",
                    "--tls-cert",
                    "--tls-key",
                ] {
                    assert!(args.contains(&flag.to_string()), "{overlay}: {args:?}");
                }
                assert!(
                    !args.contains(&"--insecure".to_string()),
                    "{overlay}: {args:?}"
                );
                assert!(
                    c["resources"]["limits"]["cpu"].is_string(),
                    "{overlay}: the coordinator has no CPU limit"
                );
            } else {
                let url = args
                    .iter()
                    .skip_while(|a| *a != "--coordinator")
                    .nth(1)
                    .expect("--coordinator URL");
                assert!(url.starts_with("https://"), "{overlay} {name}: {url}");
                assert!(
                    args.contains(&"--tls-ca".to_string())
                        && args.contains(&"--auth-token-file".to_string()),
                    "{overlay} {name}: {args:?}"
                );
                // Each role sees only its own token.
                let token = args
                    .iter()
                    .skip_while(|a| *a != "--auth-token-file")
                    .nth(1)
                    .expect("token file");
                let own = if name == "worker" {
                    "worker-token"
                } else {
                    "submitter-token"
                };
                assert!(token.ends_with(own), "{overlay} {name}: {token}");
                let projected: Vec<String> = pod["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| v["secret"]["secretName"] == "svcca-auth")
                    .flat_map(|v| {
                        v["secret"]["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|i| i["key"].as_str().unwrap_or_default().to_string())
                            .collect::<Vec<_>>()
                    })
                    .collect();
                assert_eq!(projected, vec![own.to_string()], "{overlay} {name}");
            }
        }
    }
}

/// The container of a pod's init containers (a sidecar).
fn init_container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no init container `{name}` in pod spec {pod}"))
}

/// The job spec a pod mounts from the ConfigMap, written adapted (dataset and output moved to
/// local folders) under `dir`; returns the rewrite from the mount path to `dir`.
fn mounted_job_spec(
    docs: &[Value],
    pod: &Value,
    c: &Value,
    dataset: &str,
    output: &Path,
    dir: &Path,
) -> (String, String) {
    let mount = c["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == "job-spec"))
        .expect("the container mounts the job spec");
    let volume = pod["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "job-spec"))
        .expect("the job-spec volume");
    let cm = object(
        docs,
        "ConfigMap",
        volume["configMap"]["name"].as_str().unwrap(),
    );
    let (key, text) = cm["data"]
        .as_object()
        .and_then(|d| d.iter().next())
        .expect("the job ConfigMap holds the job spec");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join(key),
        adapt(text.as_str().unwrap(), dataset, output),
    )
    .unwrap();
    let mount_path = mount["mountPath"].as_str().unwrap().trim_end_matches('/');
    (format!("{mount_path}/"), format!("{}/", dir.display()))
}

#[test]
fn the_nightly_overlays_without_a_pool_run_their_job_and_end() {
    let entrypoint = image_entrypoint();
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let dataset = ingest(tmp.path());
    let wrote_everything = |output: &Path, what: &str| {
        // (No analyses.json: the nightly spec selects one seed and names no labels.)
        for file in ["results.json", "report/index.html"] {
            assert!(
                output.join(file).is_file(),
                "{what}: no {file} under the output"
            );
        }
        assert!(
            !output.join("cache").exists() && output.with_extension("cache").is_dir(),
            "{what}: the cache lies beside the output"
        );
    };

    // One pod: `svcca sweep` with one in-process worker per requested CPU.
    let docs = render("nightly-single");
    let pod = pod_spec(object(&docs, "CronJob", "svcca-nightly")).clone();
    let sweep_c = container(&pod, "sweep");
    let launch = launch_of(sweep_c, &entrypoint);
    let workers = launch
        .env
        .iter()
        .find(|(k, _)| k == "SVCCA_WORKERS")
        .map(|(_, v)| v.clone())
        .expect("the sweep's workers follow the pod's CPU request");
    assert_eq!(
        Some(workers.as_str()),
        sweep_c["resources"]["requests"]["cpu"].as_str()
    );
    assert!(
        docs.iter().any(|d| d["kind"] == "NetworkPolicy"
            && d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                == pod_labels_component(&docs)
            && d["spec"]["ingress"]
                .as_array()
                .is_some_and(|i| i.is_empty())),
        "a NetworkPolicy fences the sweep pod"
    );
    let output = tmp.path().join("single-out");
    let spec = mounted_job_spec(
        &docs,
        &pod,
        sweep_c,
        &dataset,
        &output,
        &tmp.path().join("single-spec"),
    );
    let launch = Rewrite(vec![spec]).apply(&launch, "nightly-single sweep");
    let (code, out) = run("nightly-single", &launch, &logs, Duration::from_secs(300));
    assert_eq!(code, Some(0), "{out}");
    wrote_everything(&output, "nightly-single");

    // A pool per run: coordinator sidecar + submitter in one pod, an Indexed Job of workers
    // that leave once the job has ended.
    let docs = render("nightly-per-run");
    let run_cron = object(&docs, "CronJob", "svcca-nightly");
    let workers_cron = object(&docs, "CronJob", "svcca-nightly-workers");
    assert_eq!(
        run_cron["spec"]["schedule"], workers_cron["spec"]["schedule"],
        "the coordinator and its workers start together"
    );
    let run_pod = pod_spec(run_cron).clone();
    let worker_pod = pod_spec(workers_cron).clone();
    let coordinator_c = init_container(&run_pod, "coordinator");
    assert_eq!(coordinator_c["restartPolicy"], "Always", "a sidecar");
    let submit_c = container(&run_pod, "submit");
    let worker_c = container(&worker_pod, "worker");
    let worker_job = job_spec(workers_cron);
    assert_eq!(worker_job["completionMode"], "Indexed");
    let svc = object(&docs, "Service", "svcca-coordinator");
    for (key, value) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &run_pod_labels(run_cron)[key],
            value,
            "the Service selects the coordinator's pod"
        );
    }

    let secrets = tmp.path().join("secrets");
    let (port, health) = (free_port(), free_port());
    let coordinator = Rewrite(
        [
            ("0.0.0.0:50051".to_string(), format!("127.0.0.1:{port}")),
            ("0.0.0.0:50053".to_string(), format!("127.0.0.1:{health}")),
        ]
        .into_iter()
        .chain(secret_mounts(&run_pod, coordinator_c, &secrets))
        .collect(),
    )
    .apply(
        &launch_of(coordinator_c, &entrypoint),
        "per-run coordinator",
    );
    let output = tmp.path().join("per-run-out");
    let submit = Rewrite(
        [
            ("localhost:50051".to_string(), format!("localhost:{port}")),
            mounted_job_spec(
                &docs,
                &run_pod,
                submit_c,
                &dataset,
                &output,
                &tmp.path().join("per-run-spec"),
            ),
        ]
        .into_iter()
        .chain(secret_mounts(&run_pod, submit_c, &secrets))
        .collect(),
    )
    .apply(&launch_of(submit_c, &entrypoint), "per-run submitter");
    let worker_secrets = secret_mounts(&worker_pod, worker_c, &secrets);
    let worker = |i: usize| {
        Rewrite(
            [
                (
                    "svcca-coordinator:50051".to_string(),
                    format!("127.0.0.1:{port}"),
                ),
                (
                    "0.0.0.0:50052".to_string(),
                    format!("127.0.0.1:{}", free_port()),
                ),
            ]
            .into_iter()
            .chain(worker_secrets.clone())
            .collect(),
        )
        .apply(
            &launch_of(worker_c, &entrypoint),
            &format!("per-run worker {i}"),
        )
    };
    let mut workers: Vec<Proc> = (0..2)
        .map(|i| Proc::spawn(&format!("per-run-worker-{i}"), &worker(i), &logs))
        .collect();
    let mut coord = Proc::spawn("per-run-coordinator", &coordinator, &logs);
    // The pod starts the submitter once the coordinator's startup probe passes; so does this.
    let (probe_port, probe_service) = grpc_probe(coordinator_c, "startupProbe");
    assert_eq!(probe_port, 50053, "the startup probe asks the health port");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    wait_for(
        &rt,
        health,
        &probe_service,
        ServingStatus::Serving,
        Duration::from_secs(60),
        &[&coord],
    );
    let (code, out) = run("per-run-submit", &submit, &logs, Duration::from_secs(300));
    assert_eq!(code, Some(0), "{out}\n{}", coord.logs());
    wrote_everything(&output, "nightly-per-run");
    // The job has ended: each worker leaves on its own, with exit 0, so the Indexed Job completes.
    for w in &mut workers {
        let status = w.wait_timeout(Duration::from_secs(30));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "a worker of the run did not leave once its job ended\n{}",
            w.logs()
        );
    }
    assert!(
        coord.wait_timeout(Duration::from_millis(10)).is_none(),
        "the sidecar is stopped by the kubelet, not by itself"
    );
}

/// The `app.kubernetes.io/component` label of the nightly-single sweep pod.
fn pod_labels_component(docs: &[Value]) -> Value {
    pod_template_labels(object(docs, "CronJob", "svcca-nightly"))["app.kubernetes.io/component"]
        .clone()
}

fn run_pod_labels(cron: &Value) -> &Value {
    pod_template_labels(cron)
}

fn pod_template_labels(cron: &Value) -> &Value {
    &cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
}
