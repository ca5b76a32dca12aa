//! The coordinator's gRPC surface without a network: arbitrary bytes decoded with prost as each
//! request message, driven through the coordinator's [`Scheduler`] the way its tonic service
//! does, with the real sweep job factory and task executor behind it.
//!
//! Input: frames `[op: u8][len: u16 LE][body]`; `op % 12` picks the request type (register,
//! heartbeat, lease, report result, report failure, deregister, submit, status, list, watch,
//! cancel, clock tick) and `body` is decoded as that message. So that garbage reaches past the
//! "unknown worker" check, an empty worker, lease or job id stands for the last one the
//! coordinator handed out, and an empty `output` in a result report stands for what the real
//! executor computes for that lease.

use std::time::{Duration, Instant};

use prost::Message;
use svcca_engine::coordinator::{CoordinatorConfig, LeasedTask, Scheduler};
use svcca_engine::driver::{JobDriverFactory, TaskExecutor, TaskFailure, TaskOutput};
use svcca_engine::exec::ExecutorConfig;
use svcca_engine::spec::JobSpec;
use svcca_proto::v1;
use svcca_storage::ingest::IngestConfig;
use svcca_storage::npy::encode_npy;
use svcca_storage::{Env, ingest};

use super::{Target, signature};
use crate::mutate::Format;

const DATASET_URL: &str = "memory://svcca-fuzz-ds";

/// Stands for the fuzzer's own output folder in spec inputs, so that inputs (and the saved
/// crashes) do not depend on where a temporary folder happened to be.
pub const OUT_TOKEN: &str = "@OUT@";

/// A small dataset in the process's named in-memory store (2 seeds × 2 steps × 2 layers of 24
/// datapoints, so that planned jobs run real tasks in milliseconds), and a folder for the
/// results of the jobs fuzzed specs describe.
pub struct FuzzDataset {
    out: tempfile::TempDir,
}

impl FuzzDataset {
    pub fn create(rt: &tokio::runtime::Runtime) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut state = 0x1234_5678u32;
        for seed in 0..2 {
            for step in [0, 10] {
                for (layer, width) in [("h1", 3usize), ("h2", 2)] {
                    let n = 24 * width;
                    let values: Vec<f32> = (0..n)
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 17;
                            state ^= state << 5;
                            (state % 1000) as f32 / 500.0 - 1.0
                        })
                        .collect();
                    let mut bytes = Vec::new();
                    encode_npy(&mut bytes, &[24, width], &values);
                    let p = dir
                        .path()
                        .join(format!("mlp/seed{seed}/step{step}/{layer}.npy"));
                    std::fs::create_dir_all(p.parent().expect("a parent")).expect("dir");
                    std::fs::write(p, bytes).expect("write");
                }
            }
        }
        rt.block_on(ingest(
            IngestConfig::new(dir.path(), DATASET_URL)
                .with_env(Env::default())
                .with_force(true),
        ))
        .expect("ingesting the fuzz dataset");
        FuzzDataset {
            out: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn out_url(&self) -> String {
        format!("file://{}", self.out.path().display())
    }

    /// The input's text with [`OUT_TOKEN`] replaced by the output folder's URL.
    pub fn expand(&self, text: &str) -> String {
        text.replace(OUT_TOKEN, &self.out_url())
    }

    /// Jobs write their results and cache to the output URLs of their spec; a mutated spec must
    /// never make the fuzzer write elsewhere, so only specs whose outputs are inside the
    /// fuzzer's output folder are planned.
    pub fn sandboxed(&self, spec: &JobSpec) -> bool {
        let base = self.out_url();
        let inside = |u: &str| {
            u.strip_prefix(&base)
                .is_some_and(|rest| rest.starts_with('/') && !rest.contains(".."))
        };
        inside(&spec.output) && inside(&spec.cache_url())
    }

    pub fn spec_seeds(&self) -> Vec<Vec<u8>> {
        [
            "comparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cka\"]\n[resources]\nmemory_mb = 1024\n",
            "comparison = \"cross-seed\"\nmetrics = [\"pwcca\"]\n[keep]\ndims = 2\n",
            "comparison = \"vs-final\"\nmetrics = [\"cca\"]\n[select]\nwhere = { layer = \"h*\", seed = \"0\" }\n[resources]\nrows_per_task = 7\n",
            "comparison = \"pairs\"\npairs = [[\"mlp/seed0/step10/h1\", \"mlp/seed1/step10/h1\"]]\n",
        ]
        .iter()
        .map(|body| {
            format!("dataset = \"{DATASET_URL}\"\noutput = \"{OUT_TOKEN}/job\"\n{body}").into_bytes()
        })
        .collect()
    }

    /// Forgets every job's results, so one case never resumes another's job.
    pub fn clear_outputs(&self) {
        if let Ok(entries) = std::fs::read_dir(self.out.path()) {
            for e in entries.flatten() {
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
    }
}

pub struct CoordinatorTarget {
    rt: tokio::runtime::Runtime,
    dataset: FuzzDataset,
    factory: std::sync::Arc<dyn JobDriverFactory>,
    executor: std::sync::Arc<dyn TaskExecutor>,
}

impl CoordinatorTarget {
    pub fn new() -> Self {
        let rt = super::runtime();
        let dataset = FuzzDataset::create(&rt);
        CoordinatorTarget {
            rt,
            dataset,
            factory: svcca_engine::job_factory(),
            executor: svcca_engine::task_executor(ExecutorConfig::default()),
        }
    }
}

fn frame(op: u8, msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = vec![op];
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn frames(input: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < input.len() && out.len() < 64 {
        let op = input[at] % 12;
        let len = input
            .get(at + 1..at + 3)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let start = (at + 3).min(input.len());
        let end = (start + len).min(input.len());
        out.push((op, &input[start..end]));
        at = end.max(at + 1);
    }
    out
}

struct Session {
    now: Instant,
    worker: String,
    lease: Option<LeasedTask>,
    job: String,
}

fn or_last(id: String, last: &str) -> String {
    if id.is_empty() { last.to_string() } else { id }
}

impl CoordinatorTarget {
    async fn drive(&self, input: &[u8]) -> Vec<String> {
        let start = Instant::now();
        let mut scheduler = Scheduler::new(
            CoordinatorConfig::default()
                .with_lease_timeout(Duration::from_secs(10))
                .with_max_attempts(2),
            start,
        );
        let mut s = Session {
            now: start,
            worker: String::new(),
            lease: None,
            job: String::new(),
        };
        let mut outcomes = Vec::new();
        for (op, body) in frames(input) {
            let r: Result<String, tonic::Status> = match op {
                0 => match v1::RegisterWorkerRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => scheduler
                        .register_worker(&req.name, req.protocol_version, s.now)
                        .map(|reg| {
                            s.worker = reg.worker_id;
                            "registered".into()
                        })
                        .map_err(Into::into),
                },
                1 => match v1::HeartbeatRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => {
                        let last_lease = s.lease.as_ref().map_or("", |l| l.lease_id.as_str());
                        let held: Vec<String> = req
                            .lease_ids
                            .into_iter()
                            .map(|id| or_last(id, last_lease))
                            .collect();
                        scheduler
                            .heartbeat(&or_last(req.worker_id, &s.worker), Some(&held), s.now)
                            .map(|revoked| format!("revoked {}", revoked.len()))
                            .map_err(Into::into)
                    }
                },
                2 => match v1::LeaseTaskRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => scheduler
                        .lease(&or_last(req.worker_id, &s.worker), s.now)
                        .map(|l| {
                            let got = l.is_some();
                            if got {
                                s.lease = l;
                            }
                            format!("leased {got}")
                        })
                        .map_err(Into::into),
                },
                3 => match v1::ReportResultRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => {
                        let lease_id =
                            or_last(req.lease_id, s.lease.as_ref().map_or("", |l| &l.lease_id));
                        let payload = if req.output.is_empty() {
                            match &s.lease {
                                Some(l) => match self.executor.execute(l.task.clone()).await {
                                    Ok(out) => out.payload,
                                    Err(f) => f.to_string().into_bytes(),
                                },
                                None => Vec::new(),
                            }
                        } else {
                            req.output
                        };
                        scheduler
                            .report_result(
                                &or_last(req.worker_id, &s.worker),
                                &lease_id,
                                TaskOutput { payload },
                                s.now,
                            )
                            .await
                            .map(|()| "reported".into())
                            .map_err(Into::into)
                    }
                },
                4 => match v1::ReportFailureRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => {
                        let lease_id =
                            or_last(req.lease_id, s.lease.as_ref().map_or("", |l| &l.lease_id));
                        let failure = if req.retryable {
                            TaskFailure::Retryable {
                                task_id: String::new(),
                                message: req.message,
                            }
                        } else {
                            TaskFailure::Fatal {
                                task_id: String::new(),
                                message: req.message,
                            }
                        };
                        scheduler
                            .report_failure(
                                &or_last(req.worker_id, &s.worker),
                                &lease_id,
                                failure,
                                s.now,
                            )
                            .map(|()| "failed".into())
                            .map_err(Into::into)
                    }
                },
                5 => match v1::DeregisterWorkerRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => scheduler
                        .deregister_worker(&or_last(req.worker_id, &s.worker), s.now)
                        .map(|()| "deregistered".into())
                        .map_err(Into::into),
                },
                6 => match v1::SubmitJobRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => {
                        let toml = self.dataset.expand(&req.job_spec_toml);
                        let sandboxed = JobSpec::parse_toml(&toml)
                            .is_ok_and(|spec| self.dataset.sandboxed(&spec));
                        if !sandboxed {
                            Ok("submit skipped (outputs outside the sandbox)".into())
                        } else {
                            match self.factory.create(toml).await {
                                Ok(driver) => {
                                    s.job = scheduler.submit(driver, s.now).await;
                                    Ok("submitted".into())
                                }
                                Err(f) => Ok(format!("refused {}", signature(&f.to_string()))),
                            }
                        }
                    }
                },
                7 => match v1::JobStatusRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => scheduler
                        .job(&or_last(req.job_id, &s.job))
                        .map(|info| format!("{:?}", info.state))
                        .map_err(Into::into),
                },
                8 => match v1::ListJobsRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(_) => Ok(format!("jobs {}", scheduler.jobs().len())),
                },
                9 => match v1::WatchJobRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => scheduler
                        .subscribe(&or_last(req.job_id, &s.job))
                        .map(|rx| format!("{:?}", rx.borrow().state))
                        .map_err(Into::into),
                },
                10 => match v1::CancelJobRequest::decode(body) {
                    Err(e) => Ok(format!("decode {e}")),
                    Ok(req) => scheduler
                        .cancel(&or_last(req.job_id, &s.job))
                        .map(|info| format!("{:?}", info.state))
                        .map_err(Into::into),
                },
                _ => {
                    // The clock: up to ~65 s per tick, enough to expire leases and workers.
                    let ms = body
                        .get(..2)
                        .map_or(1000, |b| u16::from_le_bytes([b[0], b[1]]) as u64);
                    s.now += Duration::from_millis(ms);
                    scheduler.tick(s.now);
                    Ok("tick".into())
                }
            };
            outcomes.push(match r {
                Ok(text) => signature(&text),
                Err(status) => format!("{:?}", status.code()),
            });
        }
        outcomes
    }
}

impl Target for CoordinatorTarget {
    fn name(&self) -> &'static str {
        "coordinator"
    }
    fn format(&self) -> Format {
        Format::Binary
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let register = frame(
            0,
            &v1::RegisterWorkerRequest {
                protocol_version: svcca_proto::PROTOCOL_VERSION,
                name: "w".into(),
                concurrency: 1,
            },
        );
        let lease = frame(
            2,
            &v1::LeaseTaskRequest {
                worker_id: String::new(),
                wait_ms: 0,
            },
        );
        let report_real = frame(3, &v1::ReportResultRequest::default());
        let report_garbage = frame(
            3,
            &v1::ReportResultRequest {
                worker_id: String::new(),
                lease_id: String::new(),
                output: b"{\"kind\":\"moments\",\"rows\":-1}".to_vec(),
                task_id: String::new(),
            },
        );
        let heartbeat = frame(
            1,
            &v1::HeartbeatRequest {
                worker_id: String::new(),
                lease_ids: vec![String::new(), "lease-999".into()],
            },
        );
        let fail = frame(
            4,
            &v1::ReportFailureRequest {
                worker_id: String::new(),
                lease_id: String::new(),
                retryable: true,
                message: "disk on fire".into(),
            },
        );
        let status = frame(7, &v1::JobStatusRequest::default());
        let tick = vec![11, 2, 0, 0xff, 0x7f];
        let mut seeds = Vec::new();
        for spec in self.dataset.spec_seeds() {
            let submit = frame(
                6,
                &v1::SubmitJobRequest {
                    job_spec_toml: String::from_utf8(spec).expect("utf-8 seed"),
                },
            );
            // A whole job run by one well-behaved worker.
            let mut run = register.clone();
            run.extend_from_slice(&submit);
            for _ in 0..30 {
                run.extend_from_slice(&lease);
                run.extend_from_slice(&report_real);
            }
            run.extend_from_slice(&status);
            seeds.push(run);
            // A worker that reports garbage, fails, goes silent and comes back.
            let mut bad = register.clone();
            bad.extend_from_slice(&submit);
            for _ in 0..4 {
                bad.extend_from_slice(&lease);
                bad.extend_from_slice(&report_garbage);
                bad.extend_from_slice(&lease);
                bad.extend_from_slice(&fail);
                bad.extend_from_slice(&lease);
                bad.extend_from_slice(&tick);
                bad.extend_from_slice(&heartbeat);
            }
            bad.extend_from_slice(&frame(10, &v1::CancelJobRequest::default()));
            bad.extend_from_slice(&frame(5, &v1::DeregisterWorkerRequest::default()));
            seeds.push(bad);
        }
        seeds
    }
    fn run(&mut self, input: &[u8]) -> String {
        let outcomes = self.rt.block_on(self.drive(input));
        self.dataset.clear_outputs();
        let mut kinds: Vec<String> = outcomes;
        kinds.sort();
        kinds.dedup();
        kinds.join("|")
    }
}
