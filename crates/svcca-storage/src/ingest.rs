//! Ingest: a directory of `.npy` / `.npz` / `.safetensors` files into a dataset.
//!
//! 1. Walk the source, map each file's relative path to keys with a [template](crate::template)
//!    (files that do not match are skipped and reported), list every array from its header.
//! 2. Validate before writing anything: keys, duplicates, shapes (at least `[datapoints, x]`),
//!    one datapoint count for the whole probe set (and the existing dataset's), dtypes.
//! 3. Per representation, stream the source in shard-sized blocks (bounded memory), reject
//!    NaN/±Inf with the first bad position, encode each shard and upload it under a
//!    content-addressed name (`part-00000-<sha256 prefix>.arrow`). An existing object with that
//!    name is compared with those bytes: equal, a resumed or repeated ingest keeps it; damaged
//!    (changed in place, truncated), it is written again from the source and reported as repaired.
//!    A representation is reported unchanged only when every shard its manifest entry lists
//!    still holds the bytes the manifest says.
//! 4. Write `manifest.json` last, in one atomic put. An interrupted or failed ingest leaves the
//!    previous manifest (and so a readable dataset) untouched; rerunning resumes.
//!
//! A representation already in the manifest with different values is a conflict unless
//! `force` is set; then it is replaced and its old shards are deleted after the new manifest is
//! written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::StorageError;
use crate::dataset::{fetch_manifest, get_with_retry};
use crate::layout::encode_shard;
use crate::manifest::{MANIFEST_NAME, Manifest, ProbeSet, RepKey, Representation, ShardEntry};
use crate::sources::{FileKind, SourceArray, list_arrays};
use crate::store::{Env, Location, retrying};
use crate::template::Template;

pub use crate::template::DEFAULT_PATTERN;

/// Default shard size target when `shard_rows` is not given.
pub const DEFAULT_SHARD_BYTES: usize = 32 << 20;

/// Extra attempts after a transient store error, and the first backoff delay (doubled each time).
const RETRIES: u32 = 3;
const RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// What identifies the probe set, hashed into the manifest's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeIdentity {
    /// The bytes of a file (the probe inputs or labels, e.g. `probe_y.npy`).
    File(PathBuf),
    /// A name the user chooses (e.g. `imagenet-val-5k-v2`).
    Name(String),
}

/// Progress events, for a progress bar.
#[derive(Debug, Clone)]
pub enum IngestEvent {
    /// Validation passed: this many representations and source bytes (f32) will be processed.
    Planned { representations: usize, bytes: u64 },
    /// A representation finished (written, or found unchanged).
    Done {
        representation: String,
        bytes: u64,
        unchanged: bool,
    },
}

/// Callback receiving [`IngestEvent`]s.
pub type ProgressFn = Arc<dyn Fn(&IngestEvent) + Send + Sync>;

/// What to ingest, where, and how.
#[derive(Clone)]
pub struct IngestConfig {
    /// Directory to walk.
    pub src: PathBuf,
    /// Dataset URL to write (created if missing).
    pub dest_url: String,
    /// Path template (see [`crate::template`]); default [`DEFAULT_PATTERN`].
    pub pattern: String,
    /// Datapoints per shard; `None` picks about [`DEFAULT_SHARD_BYTES`] per shard.
    pub shard_rows: Option<usize>,
    /// Replace representations whose stored values differ.
    pub force: bool,
    /// Fingerprint source for the probe set.
    pub probe: Option<ProbeIdentity>,
    /// Free-text description stored with the probe set.
    pub probe_description: Option<String>,
    /// Concurrent shard uploads (default 4).
    pub uploads_in_flight: usize,
    /// Store configuration environment (default: the process environment).
    pub env: Option<Env>,
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field("src", &self.src)
            .field("dest_url", &self.dest_url)
            .field("pattern", &self.pattern)
            .field("shard_rows", &self.shard_rows)
            .field("force", &self.force)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl IngestConfig {
    pub fn new(src: impl Into<PathBuf>, dest_url: impl Into<String>) -> Self {
        IngestConfig {
            src: src.into(),
            dest_url: dest_url.into(),
            pattern: DEFAULT_PATTERN.into(),
            shard_rows: None,
            force: false,
            probe: None,
            probe_description: None,
            uploads_in_flight: 4,
            env: None,
            progress: None,
        }
    }
    pub fn with_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.pattern = pattern.into();
        self
    }
    pub fn with_shard_rows(mut self, rows: usize) -> Self {
        self.shard_rows = Some(rows);
        self
    }
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
    pub fn with_probe(mut self, probe: ProbeIdentity) -> Self {
        self.probe = Some(probe);
        self
    }
    pub fn with_env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    pub url: String,
    pub datapoints: usize,
    /// Representations new to the dataset.
    pub added: Vec<String>,
    /// Representations replaced (`force`).
    pub replaced: Vec<String>,
    /// Representations already present with the same values.
    pub unchanged: Vec<String>,
    pub shards_written: usize,
    /// Shards already present with the right bytes (resumed or repeated ingest).
    pub shards_reused: usize,
    /// Shards present under their name but damaged (wrong size or checksum), written again from
    /// the source.
    pub shards_repaired: usize,
    /// Representations that had at least one damaged shard rewritten.
    pub repaired: Vec<String>,
    pub bytes_written: u64,
    /// Bytes of f32 values processed.
    pub bytes_processed: u64,
    /// Supported files that did not match the pattern (relative paths).
    pub skipped_files: Vec<String>,
}

struct Planned {
    key: RepKey,
    source: SourceArray,
    relative: String,
}

/// Runs an ingest. See the module docs for the steps and guarantees.
pub async fn ingest(config: IngestConfig) -> Result<IngestReport, StorageError> {
    ingest_inner(config, None).await
}

/// As [`ingest`], into an already resolved location (a wrapped or custom store); `dest_url`
/// only names it in messages.
pub async fn ingest_into(
    location: Location,
    config: IngestConfig,
) -> Result<IngestReport, StorageError> {
    ingest_inner(config, Some(location)).await
}

async fn ingest_inner(
    config: IngestConfig,
    location: Option<Location>,
) -> Result<IngestReport, StorageError> {
    let template = Template::parse(&config.pattern)?;
    let env = config.env.clone().unwrap_or_else(Env::from_process);

    // 1. Walk and list (headers only).
    let src = config.src.clone();
    let (files, skipped) = tokio::task::spawn_blocking({
        let template = template.clone();
        move || walk(&src, &template)
    })
    .await
    .expect("walk task")?;
    let run_default = config
        .src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "default".into());
    // Reading every header is blocking file I/O: keep it off the async workers.
    let listed = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|(relative, path, kind, caps)| {
                Ok((relative, list_arrays(&path, kind)?, path, caps))
            })
            .collect::<Result<Vec<_>, StorageError>>()
    })
    .await
    .expect("listing task")?;
    let mut planned: Vec<Planned> = Vec::new();
    for (relative, arrays, path, caps) in listed {
        for source in arrays {
            let layer = match (&source.member, caps.layer.clone()) {
                (None, Some(l)) => l,
                (None, None) => {
                    return Err(StorageError::BadKey {
                        path: path.clone(),
                        reason: format!(
                            "the pattern '{}' has no {{layer}} for a .npy file",
                            template.text()
                        ),
                    });
                }
                (Some(m), None) => m.clone(),
                (Some(m), Some(l)) => format!("{l}.{m}"),
            };
            let key = RepKey {
                run: caps.run.clone().unwrap_or_else(|| run_default.clone()),
                seed: caps.seed,
                step: caps.step,
                layer,
                tags: caps.tags.clone(),
            };
            planned.push(Planned {
                key,
                source,
                relative: relative.clone(),
            });
        }
    }
    if planned.is_empty() {
        return Err(StorageError::NoInputs {
            src: config.src.clone(),
            pattern: config.pattern.clone(),
            example: skipped.first().cloned(),
        });
    }
    planned.sort_by(|a, b| a.key.cmp(&b.key));

    // 2. Validate everything before writing anything.
    let mut seen: HashMap<&RepKey, &Planned> = HashMap::new();
    for p in &planned {
        if let Some(first) = seen.insert(&p.key, p) {
            return Err(StorageError::DuplicateRepresentation {
                representation: p.key.id(),
                first: first.source.path.clone(),
                second: PathBuf::from(p.source.display()),
            });
        }
        if p.source.shape.len() < 2 {
            return Err(StorageError::BadShape {
                representation: p.key.id(),
                source_path: PathBuf::from(p.source.display()),
                shape: p.source.shape.clone(),
                reason: "a representation needs at least two axes, [datapoints, neurons] or [datapoints, h, w, c]".into(),
            });
        }
        if p.source.shape.contains(&0) {
            return Err(StorageError::BadShape {
                representation: p.key.id(),
                source_path: PathBuf::from(p.source.display()),
                shape: p.source.shape.clone(),
                reason: "it is empty".into(),
            });
        }
        if let Err(reason) = p.key.validate() {
            return Err(StorageError::BadKey {
                path: PathBuf::from(p.source.display()),
                reason,
            });
        }
    }

    let location = match location {
        Some(l) => l,
        None => crate::store::resolve_for_write(&config.dest_url, &env)?,
    };
    let existing = match fetch_manifest(&location, RETRIES, RETRY_BACKOFF).await? {
        Some(bytes) => Some(Manifest::from_json(
            &bytes,
            &location.display(MANIFEST_NAME),
        )?),
        None => None,
    };

    let datapoints = existing
        .as_ref()
        .map(|m| m.probe_set.datapoints)
        .unwrap_or(planned[0].source.rows());
    for p in &planned {
        if p.source.rows() != datapoints {
            return Err(StorageError::DatapointMismatch {
                representation: p.key.id(),
                source_path: PathBuf::from(p.source.display()),
                expected: datapoints,
                actual: p.source.rows(),
            });
        }
    }
    let fingerprint = match &config.probe {
        None => None,
        Some(ProbeIdentity::Name(n)) => Some(ProbeSet::fingerprint_of(n.as_bytes())),
        Some(ProbeIdentity::File(f)) => {
            let bytes = std::fs::read(f).map_err(|source| StorageError::SourceIo {
                path: f.clone(),
                source,
            })?;
            Some(ProbeSet::fingerprint_of(&bytes))
        }
    };
    let mut manifest = match existing.clone() {
        Some(m) => {
            match (&m.probe_set.fingerprint, &fingerprint) {
                (Some(a), Some(b)) if a != b => {
                    return Err(StorageError::ProbeMismatch {
                        reason: format!(
                            "the dataset at {} was ingested with probe set {a}, this ingest names {b}",
                            config.dest_url
                        ),
                    });
                }
                (None, Some(b)) if !m.representations.is_empty() => {
                    return Err(StorageError::ProbeMismatch {
                        reason: format!(
                            "the dataset at {} has no probe set fingerprint, so it cannot be confirmed to be {b}; ingest into a new dataset",
                            config.dest_url
                        ),
                    });
                }
                _ => {}
            }
            let mut m = m;
            if m.probe_set.fingerprint.is_none() {
                m.probe_set.fingerprint = fingerprint.clone();
            }
            if config.probe_description.is_some() {
                m.probe_set.description = config.probe_description.clone();
            }
            m
        }
        None => Manifest::new(ProbeSet {
            datapoints,
            fingerprint,
            description: config.probe_description.clone(),
        }),
    };

    let total_bytes: u64 = planned
        .iter()
        .map(|p| (p.source.rows() * p.source.row_len() * 4) as u64)
        .sum();
    emit(
        &config,
        IngestEvent::Planned {
            representations: planned.len(),
            bytes: total_bytes,
        },
    );
    tracing::info!(representations = planned.len(), bytes = total_bytes, url = %config.dest_url, "ingest planned");

    // 3. Write shards, one representation at a time.
    let mut report = IngestReport {
        url: config.dest_url.clone(),
        datapoints,
        skipped_files: skipped,
        ..Default::default()
    };
    let mut stale_shards: Vec<String> = Vec::new();
    for p in planned {
        let id = p.key.id();
        let row_len = p.source.row_len();
        let shard_rows = config
            .shard_rows
            .unwrap_or_else(|| (DEFAULT_SHARD_BYTES / (row_len * 4)).max(1))
            .max(1);
        let written =
            write_representation(&location, &p, shard_rows, config.uploads_in_flight.max(1))
                .await?;
        let rep = Representation {
            key: p.key.clone(),
            shape: p.source.shape.clone(),
            dtype: "float32".into(),
            source_dtype: Some(p.source.dtype.clone()),
            source: Some(match &p.source.member {
                Some(m) => format!("{}:{m}", p.relative),
                None => p.relative.clone(),
            }),
            shards: written.shards,
            values_sha256: Some(written.values_sha256),
        };
        report.shards_written += written.uploaded;
        report.shards_reused += written.reused;
        report.shards_repaired += written.repaired;
        report.bytes_written += written.bytes_uploaded;
        report.bytes_processed += (rep.rows() * row_len * 4) as u64;
        let bytes = rep.bytes();
        let unchanged = match manifest.get(&rep.key) {
            None => {
                report.added.push(id.clone());
                manifest.upsert(rep);
                false
            }
            Some(old) if same_values(old, &rep) => {
                // The values match, but the shards the manifest lists must still hold them: the
                // ones just written were compared above; others (sharded differently) are hashed.
                let old_intact = old.shards == rep.shards || shards_intact(&location, old).await?;
                if old_intact && written.repaired == 0 {
                    report.unchanged.push(id.clone());
                    true
                } else {
                    if !old_intact {
                        stale_shards.extend(no_longer_listed(old, &rep));
                        manifest.upsert(rep);
                    }
                    report.repaired.push(id.clone());
                    false
                }
            }
            Some(old) => {
                if !config.force {
                    return Err(StorageError::Conflict {
                        url: config.dest_url.clone(),
                        representation: id,
                    });
                }
                stale_shards.extend(no_longer_listed(old, &rep));
                report.replaced.push(id.clone());
                manifest.upsert(rep);
                false
            }
        };
        tracing::info!(representation = %id, unchanged, "representation done");
        emit(
            &config,
            IngestEvent::Done {
                representation: id,
                bytes,
                unchanged,
            },
        );
    }

    // 4. The manifest, last and in one put.
    manifest
        .validate()
        .map_err(|reason| StorageError::ManifestInvalid {
            manifest: location.display(MANIFEST_NAME),
            reason,
        })?;
    if existing.as_ref() != Some(&manifest) {
        put(&location, MANIFEST_NAME, manifest.to_json()).await?;
    }
    let still_used: std::collections::HashSet<&str> = manifest
        .representations
        .iter()
        .flat_map(|r| r.shards.iter().map(|s| s.path.as_str()))
        .collect();
    for path in stale_shards
        .iter()
        .filter(|p| !still_used.contains(p.as_str()))
    {
        if let Err(e) = location.store.delete(&location.child(path)).await {
            tracing::warn!(path = %location.display(path), error = %e, "could not delete a replaced shard");
        }
    }
    Ok(report)
}

fn emit(config: &IngestConfig, event: IngestEvent) {
    if let Some(p) = &config.progress {
        p(&event);
    }
}

/// Whether every shard of `rep` is stored with the size and SHA-256 the manifest lists.
async fn shards_intact(location: &Location, rep: &Representation) -> Result<bool, StorageError> {
    for entry in &rep.shards {
        let Some(stored) = get_with_retry(location, &entry.path, RETRIES, RETRY_BACKOFF).await?
        else {
            return Ok(false);
        };
        if stored.len() as u64 != entry.bytes {
            return Ok(false);
        }
        let expected = entry.sha256.clone();
        let same =
            tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&stored)) == expected)
                .await
                .unwrap_or(false);
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Paths of `old`'s shards that `new` no longer lists.
fn no_longer_listed(old: &Representation, new: &Representation) -> Vec<String> {
    let keep: std::collections::HashSet<&str> =
        new.shards.iter().map(|s| s.path.as_str()).collect();
    old.shards
        .iter()
        .filter(|s| !keep.contains(s.path.as_str()))
        .map(|s| s.path.clone())
        .collect()
}

/// True when two entries hold the same values (regardless of how they are sharded).
fn same_values(a: &Representation, b: &Representation) -> bool {
    if a.shape != b.shape || a.dtype != b.dtype {
        return false;
    }
    match (&a.values_sha256, &b.values_sha256) {
        (Some(x), Some(y)) => x == y,
        _ => a.content_checksum() == b.content_checksum(),
    }
}

type WalkResult = (
    Vec<(String, PathBuf, FileKind, crate::template::Captures)>,
    Vec<String>,
);

/// Supported files under `src` (sorted) with their captures, and the supported files skipped.
fn walk(src: &Path, template: &Template) -> Result<WalkResult, StorageError> {
    let mut stack = vec![src.to_path_buf()];
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let meta = std::fs::metadata(src).map_err(|source| StorageError::SourceIo {
        path: src.into(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(StorageError::SourceIo {
            path: src.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "the ingest source must be a directory",
            ),
        });
    }
    let mut all = Vec::new();
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| StorageError::SourceIo {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| StorageError::SourceIo {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|source| StorageError::SourceIo {
                path: path.clone(),
                source,
            })?;
            if ft.is_dir() {
                stack.push(path);
            } else if let Some(kind) = FileKind::from_path(&path) {
                // Symlinked files are followed; symlinked directories are not (no cycles).
                if ft.is_symlink() && !path.is_file() {
                    tracing::warn!(path = %path.display(), "skipping a symlink that is not a file");
                    continue;
                }
                all.push((path, kind));
            }
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, kind) in all {
        let relative = path
            .strip_prefix(src)
            .expect("walked under src")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        match template.matches(&relative, kind) {
            Some(caps) => {
                if kind == FileKind::Npy || kind.is_container() {
                    files.push((relative, path, kind, caps));
                }
            }
            None => {
                tracing::debug!(file = %relative, "does not match the pattern; skipped");
                skipped.push(relative);
            }
        }
    }
    Ok((files, skipped))
}

struct Written {
    shards: Vec<ShardEntry>,
    values_sha256: String,
    uploaded: usize,
    reused: usize,
    /// Uploaded over a damaged object of the same name.
    repaired: usize,
    bytes_uploaded: u64,
}

/// What was stored under a shard's name before this ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardState {
    Absent,
    Intact,
    Damaged,
}

struct EncodedShard {
    index: usize,
    row_start: usize,
    rows: usize,
    bytes: Vec<u8>,
    sha256: String,
}

/// Streams one representation's source into shards and uploads them.
async fn write_representation(
    location: &Location,
    p: &Planned,
    shard_rows: usize,
    uploads_in_flight: usize,
) -> Result<Written, StorageError> {
    let id = p.key.id();
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<EncodedShard, StorageError>>(uploads_in_flight);
    let source = p.source.clone();
    let item_shape = source.shape[1..].to_vec();
    let id_for_producer = format!("{id} ({})", source.display());
    // The producer reads and encodes on a blocking thread; the channel bounds how far it runs
    // ahead of the uploads, so memory stays at a few shards.
    let producer = tokio::task::spawn_blocking(move || -> Result<String, StorageError> {
        let mut values_hash = Sha256::new();
        let mut index = 0;
        let row_len: usize = item_shape.iter().product();
        let result = source.for_each_block(shard_rows, |first_row, rows, values| {
            if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
                return Err(StorageError::NonFinite {
                    representation: id_for_producer.clone(),
                    shard: None,
                    row: first_row + pos / row_len,
                    col: pos % row_len,
                    value: values[pos] as f64,
                });
            }
            hash_f32_le(&mut values_hash, values);
            let bytes = encode_shard(&item_shape, values);
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let shard = EncodedShard {
                index,
                row_start: first_row,
                rows,
                bytes,
                sha256,
            };
            index += 1;
            // A closed channel means the uploads failed: stop reading; their error is reported.
            tx.blocking_send(Ok(shard))
                .map_err(|_| StorageError::Cancelled {
                    representation: id_for_producer.clone(),
                    shard: index - 1,
                })
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
            return Ok(String::new());
        }
        Ok(hex::encode(values_hash.finalize()))
    });

    let dir = p.key.shard_dir();
    let uploads = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(|item| {
        let dir = dir.clone();
        async move {
            let shard = item?;
            let path = format!(
                "{dir}/part-{:05}-{}.arrow",
                shard.index,
                &shard.sha256[..16]
            );
            let len = shard.bytes.len() as u64;
            // The name is content-addressed, but what is stored under it may have been damaged
            // since: compare it with the bytes it must hold before trusting it.
            let state = match get_with_retry(location, &path, RETRIES, RETRY_BACKOFF).await? {
                None => ShardState::Absent,
                Some(stored) if stored.as_ref() == shard.bytes.as_slice() => ShardState::Intact,
                Some(stored) => {
                    tracing::warn!(
                        shard = %location.display(&path),
                        stored_bytes = stored.len(),
                        expected_bytes = len,
                        "a stored shard differs from its source; writing it again"
                    );
                    ShardState::Damaged
                }
            };
            if state != ShardState::Intact {
                put(location, &path, shard.bytes).await?;
            }
            let entry = ShardEntry {
                path,
                row_start: shard.row_start,
                rows: shard.rows,
                bytes: len,
                sha256: shard.sha256,
            };
            Ok::<_, StorageError>((entry, state))
        }
    })
    .buffered(uploads_in_flight);
    // Boxed (not pinned on the stack) so that dropping it on an error really closes the channel
    // and unblocks the producer.
    let mut uploads = Box::pin(uploads);
    let mut written = Written {
        shards: Vec::new(),
        values_sha256: String::new(),
        uploaded: 0,
        reused: 0,
        repaired: 0,
        bytes_uploaded: 0,
    };
    let mut first_error = None;
    while let Some(r) = uploads.next().await {
        match r {
            Ok((entry, state)) => {
                if state == ShardState::Intact {
                    written.reused += 1;
                } else {
                    written.uploaded += 1;
                    written.bytes_uploaded += entry.bytes;
                }
                if state == ShardState::Damaged {
                    written.repaired += 1;
                }
                written.shards.push(entry);
            }
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    drop(uploads);
    let values = producer.await.expect("ingest producer task")?;
    if let Some(e) = first_error {
        return Err(e);
    }
    written.values_sha256 = values;
    let mut by_row: BTreeMap<usize, ShardEntry> = BTreeMap::new();
    for s in written.shards.drain(..) {
        by_row.insert(s.row_start, s);
    }
    written.shards = by_row.into_values().collect();
    Ok(written)
}

/// Puts an object atomically, retrying transient errors.
async fn put(location: &Location, relative: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
    let path = location.child(relative);
    let payload = PutPayload::from(bytes);
    retrying(location, relative, RETRIES, RETRY_BACKOFF, || {
        location.store.put(&path, payload.clone())
    })
    .await
    .map(|_| ())
}

/// Feeds `values` to `hash` as little-endian f32 bytes.
fn hash_f32_le(hash: &mut Sha256, values: &[f32]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and any byte pattern is a valid u8; on a little-endian
        // target the in-memory bytes are the little-endian encoding, so no copy is needed.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        hash.update(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    for v in values {
        hash.update(v.to_le_bytes());
    }
}
