//! Jobs that outlive the coordinator process, and submissions that join a running job.
//!
//! - **Records.** With a state location (`svcca coordinator --state URL`: a local folder or an
//!   object-store prefix), every job is recorded at `URL/jobs/<job id>.json` ([`JobRecord`]): its
//!   spec, its owner (the identity's fingerprint, a hash: never a token), its state and progress.
//!   A record is written whole in one `put` (a local store writes a temporary file and renames
//!   it; an object store's put is atomic), when the job is accepted, when it is cancelled, and
//!   otherwise at most once a second while its state or progress changes.
//! - **Restart.** A coordinator started on the same state location plans every job whose record
//!   says `running` or `finishing` again from its spec and takes it back under the same id and
//!   owner, so a submitter that was following it finds it. Planning again is the same resume a
//!   resubmitted spec gets: whatever the job had stored (pass-1 moments, whitened projections,
//!   compared pairs) is reused, and the results come out the same. A job whose spec no longer
//!   plans is restored as failed, with the reason.
//! - **Attaching.** A spec submitted by the same identity as a job still running, and identical
//!   to that job's spec once both are read as TOML (comments, layout and key order do not count),
//!   gets that job's id instead of a second job on the same output. Submissions of one spec and
//!   owner are taken one at a time, so concurrent identical submits start one job.
//!
//! Without a state location jobs live in memory only, as before: a restarted coordinator has
//! forgotten them (resubmitting still resumes from their stored results).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tonic::Status;

use super::auth::Identity;
use super::service::Shared;
use super::state::{JobFailure, JobState};
use super::wire::task_failure_to_status;
use crate::cache::{Store, hash_parts};
use crate::driver::Progress;
use crate::error::ClusterError;

/// The version of the record format; a record of another version is skipped with a warning.
const RECORD_FORMAT: u32 = 1;

/// How often changed progress is written.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// What is stored of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub format: u32,
    pub job_id: String,
    /// The job spec as submitted (TOML).
    pub spec_toml: String,
    /// Who submitted it: `anonymous`, `token:<fingerprint>` or `certificate:<fingerprint>`.
    pub owner: String,
    /// `running`, `finishing`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub done: u64,
    pub total: u64,
    pub failure: Option<FailureRecord>,
    /// When the record was written (milliseconds since the Unix epoch).
    pub updated_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub message: String,
    pub retryable: bool,
}

/// An identity as recorded: its kind and fingerprint (a hash), never a secret.
pub fn identity_to_record(identity: &Identity) -> String {
    match identity {
        Identity::Anonymous => "anonymous".into(),
        Identity::Token(fingerprint) => format!("token:{fingerprint}"),
        Identity::Certificate(fingerprint) => format!("certificate:{fingerprint}"),
    }
}

/// The identity a record names; `None` for a form this version does not know.
pub fn identity_from_record(text: &str) -> Option<Identity> {
    match text.split_once(':') {
        None if text == "anonymous" => Some(Identity::Anonymous),
        Some(("token", fingerprint)) => Some(Identity::Token(fingerprint.to_string())),
        Some(("certificate", fingerprint)) => Some(Identity::Certificate(fingerprint.to_string())),
        _ => None,
    }
}

fn state_from_record(text: &str) -> Option<JobState> {
    [
        JobState::Running,
        JobState::Finishing,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
}

/// The key under which identical submissions of one owner meet: the spec read as TOML and
/// written back (tables are ordered maps, so key order, layout and comments drop out), and the
/// owner. A spec that is not TOML keys by its text (the planner refuses it anyway).
pub fn attach_key(spec_toml: &str, owner: &Identity) -> String {
    let canonical = toml::from_str::<toml::Table>(spec_toml)
        .ok()
        .and_then(|table| toml::to_string(&table).ok())
        .unwrap_or_else(|| spec_toml.to_string());
    hash_parts(&["attach", &canonical, &identity_to_record(owner)])
}

/// Where job records are kept.
#[derive(Debug, Clone)]
pub struct JobRecords {
    store: Store,
}

impl JobRecords {
    pub fn open(url: &str) -> Result<Self, ClusterError> {
        let store = Store::open(url).map_err(|e| ClusterError::StateStore {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        Ok(Self { store })
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    fn error(&self, message: String) -> ClusterError {
        ClusterError::StateStore {
            url: self.store.url().to_string(),
            message,
        }
    }

    pub async fn write(&self, record: &JobRecord) -> Result<(), ClusterError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| self.error(e.to_string()))?;
        self.store
            .put(&format!("jobs/{}.json", record.job_id), bytes)
            .await
            .map_err(|e| self.error(e.to_string()))
    }

    /// Every record, oldest first. A record that cannot be read is skipped with a warning rather
    /// than keeping the coordinator from starting.
    pub async fn read_all(&self) -> Result<Vec<JobRecord>, ClusterError> {
        let names = self
            .store
            .list_names("jobs")
            .await
            .map_err(|e| self.error(e.to_string()))?;
        let mut records = Vec::new();
        for name in names.iter().filter(|n| n.ends_with(".json")) {
            let key = format!("jobs/{name}");
            let Some(bytes) = self
                .store
                .get(&key)
                .await
                .map_err(|e| self.error(e.to_string()))?
            else {
                continue;
            };
            match serde_json::from_slice::<JobRecord>(&bytes) {
                Ok(record) if record.format == RECORD_FORMAT => records.push(record),
                Ok(record) => {
                    tracing::warn!(
                        key,
                        format = record.format,
                        "job record of another format; skipped"
                    )
                }
                Err(error) => tracing::warn!(key, %error, "unreadable job record; skipped"),
            }
        }
        records.sort_by_key(|r| r.updated_unix_ms);
        Ok(records)
    }
}

/// What a job's record was last written with.
type Written = (JobState, Progress, Option<JobFailure>);

struct Tracked {
    spec_toml: String,
    owner: Identity,
    written: Option<Written>,
}

/// The coordinator's part that records jobs and joins identical submissions.
#[derive(Default)]
pub(super) struct Durable {
    records: Option<JobRecords>,
    /// One slot per attach key: the job last started for it. Its lock is held while a
    /// submission of that key plans and starts its job.
    slots: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<Option<String>>>>>,
    /// Jobs whose record is not yet terminal, by id.
    tracked: StdMutex<BTreeMap<String, Tracked>>,
    /// One record write at a time, so an older snapshot never overwrites a newer one.
    writing: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Durable {
    pub(super) fn new(records: Option<JobRecords>) -> Self {
        Self {
            records,
            ..Self::default()
        }
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<String>>> {
        lock(&self.slots)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn track(&self, job_id: &str, spec_toml: String, owner: Identity) {
        lock(&self.tracked).insert(
            job_id.to_string(),
            Tracked {
                spec_toml,
                owner,
                written: None,
            },
        );
    }
}

/// Submits a job for `owner`, or returns the id of the identical job `owner` already runs.
pub(super) async fn submit_or_attach(
    shared: &Arc<Shared>,
    spec_toml: String,
    owner: Identity,
) -> Result<String, Status> {
    let key = attach_key(&spec_toml, &owner);
    let slot = shared.durable.slot(&key);
    let mut current = slot.lock().await;
    if let Some(job_id) = current.as_ref() {
        let running = shared
            .scheduler
            .lock()
            .await
            .job(job_id)
            .is_ok_and(|info| !info.state.is_terminal());
        if running {
            tracing::info!(%job_id, owner = %owner, "the same job is running: the submission joins it");
            return Ok(job_id.clone());
        }
    }
    // Planning may read the dataset's manifest: do it before taking the scheduler's lock.
    let driver = shared
        .factory
        .create(spec_toml.clone())
        .await
        .map_err(|failure| {
            tracing::warn!(error = %failure, "job refused");
            task_failure_to_status(&failure)
        })?;
    let job_id = super::service::start_job(shared, None, driver, owner.clone()).await;
    *current = Some(job_id.clone());
    drop(current);
    shared.durable.track(&job_id, spec_toml, owner);
    // Recorded before the submitter learns the id: a coordinator killed from here on still
    // knows the job when it comes back.
    persist(shared, &job_id).await;
    Ok(job_id)
}

/// Writes the job's record if its state, progress or failure changed since the last write.
/// Failures to write are logged, not returned: the job goes on (only a restart would miss it).
pub(super) async fn persist(shared: &Shared, job_id: &str) {
    let Some(records) = &shared.durable.records else {
        return;
    };
    let _one_writer = shared.durable.writing.lock().await;
    let Ok(info) = shared.scheduler.lock().await.job(job_id) else {
        return;
    };
    let now: Written = (info.state, info.progress, info.failure.clone());
    let record = {
        let tracked = lock(&shared.durable.tracked);
        let Some(entry) = tracked.get(job_id) else {
            return;
        };
        if entry.written.as_ref() == Some(&now) {
            return;
        }
        JobRecord {
            format: RECORD_FORMAT,
            job_id: job_id.to_string(),
            spec_toml: entry.spec_toml.clone(),
            owner: identity_to_record(&entry.owner),
            state: info.state.as_str().to_string(),
            done: info.progress.done,
            total: info.progress.total,
            failure: info.failure.as_ref().map(|f| FailureRecord {
                message: f.message.clone(),
                retryable: f.retryable,
            }),
            updated_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or_default(),
        }
    };
    if let Err(error) = records.write(&record).await {
        tracing::warn!(%job_id, %error, "cannot record the job's state; it goes on, but a restarted coordinator would not resume it from this point");
        return;
    }
    let mut tracked = lock(&shared.durable.tracked);
    if info.state.is_terminal() {
        tracked.remove(job_id);
    } else if let Some(entry) = tracked.get_mut(job_id) {
        entry.written = Some(now);
    }
}

/// Writes every tracked job whose record is out of date.
pub(super) async fn persist_all(shared: &Shared) {
    let ids: Vec<String> = lock(&shared.durable.tracked).keys().cloned().collect();
    for job_id in ids {
        persist(shared, &job_id).await;
    }
}

/// Keeps records up to date while the coordinator serves.
pub(super) async fn persist_loop(shared: Arc<Shared>) {
    if shared.durable.records.is_none() {
        return;
    }
    let mut interval = tokio::time::interval(PERSIST_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        persist_all(&shared).await;
    }
}

/// Takes back the jobs an earlier coordinator recorded as running (see the module
/// documentation). Returns how many were restored.
pub(super) async fn restore(shared: &Arc<Shared>) -> Result<usize, ClusterError> {
    let Some(records) = &shared.durable.records else {
        return Ok(0);
    };
    let mut restored = 0;
    for record in records.read_all().await? {
        let Some(state) = state_from_record(&record.state) else {
            tracing::warn!(job_id = %record.job_id, state = %record.state, "job record with an unknown state; skipped");
            continue;
        };
        if state.is_terminal() {
            continue;
        }
        let Some(owner) = identity_from_record(&record.owner) else {
            tracing::warn!(job_id = %record.job_id, owner = %record.owner, "job record with an unknown owner; skipped");
            continue;
        };
        let job_id = record.job_id.clone();
        shared
            .durable
            .track(&job_id, record.spec_toml.clone(), owner.clone());
        match shared.factory.create(record.spec_toml.clone()).await {
            Ok(driver) => {
                super::service::start_job(shared, Some(job_id.clone()), driver, owner.clone())
                    .await;
                let key = attach_key(&record.spec_toml, &owner);
                *shared.durable.slot(&key).lock().await = Some(job_id.clone());
                restored += 1;
            }
            Err(failure) => {
                tracing::error!(%job_id, error = %failure, "a recorded job cannot be planned again; it is marked failed");
                let failure = JobFailure {
                    message: format!(
                        "the coordinator restarted and could not plan the job again: {failure}"
                    ),
                    retryable: failure.is_retryable(),
                };
                shared.scheduler.lock().await.restore_failed(
                    job_id.clone(),
                    owner,
                    failure,
                    Instant::now(),
                );
            }
        }
        persist(shared, &job_id).await;
    }
    if restored > 0 {
        tracing::info!(restored, state = %records.url(), "jobs of the previous coordinator resumed");
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_recorded_by_fingerprint_and_read_back() {
        for identity in [
            Identity::Anonymous,
            Identity::Token("0123456789abcdef".into()),
            Identity::Certificate("fedcba9876543210".into()),
        ] {
            let text = identity_to_record(&identity);
            assert_eq!(identity_from_record(&text), Some(identity), "{text}");
        }
        assert_eq!(identity_from_record("password:hunter2"), None);
    }

    #[test]
    fn attach_keys_ignore_layout_but_not_content_or_owner() {
        let alice = Identity::Token("a".repeat(16));
        let bob = Identity::Token("b".repeat(16));
        let spec = "dataset = \"/d\"\noutput = \"/o\"\n[resources]\nrows_per_task = 50\n";
        let same = "# the nightly job\noutput   = \"/o\"\ndataset = \"/d\"\n\n[resources]\nrows_per_task = 50 # small\n";
        let other = "dataset = \"/d\"\noutput = \"/o2\"\n[resources]\nrows_per_task = 50\n";
        assert_eq!(attach_key(spec, &alice), attach_key(same, &alice));
        assert_ne!(attach_key(spec, &alice), attach_key(other, &alice));
        assert_ne!(attach_key(spec, &alice), attach_key(spec, &bob));
    }

    #[tokio::test]
    async fn records_round_trip_through_a_local_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = JobRecords::open(dir.path().to_str().expect("utf-8")).expect("open");
        assert!(records.read_all().await.expect("empty").is_empty());
        let mut record = JobRecord {
            format: RECORD_FORMAT,
            job_id: "job-1".into(),
            spec_toml: "[test_sum]\ntasks = 2\n".into(),
            owner: "token:0123456789abcdef".into(),
            state: "running".into(),
            done: 1,
            total: 3,
            failure: None,
            updated_unix_ms: 1,
        };
        records.write(&record).await.expect("write");
        record.done = 2;
        records.write(&record).await.expect("rewrite");
        std::fs::write(dir.path().join("jobs/job-2.json"), b"{ not json").expect("damaged");
        let read = records.read_all().await.expect("read");
        assert_eq!(
            read,
            vec![record],
            "the rewrite, and the damaged record skipped"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("jobs"))
            .expect("jobs folder")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    }
}
