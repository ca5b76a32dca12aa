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
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use crate::StorageError;
use crate::dataset::{fetch_manifest, get_with_retry};
use crate::manifest::{
    Layout, MANIFEST_NAME, Manifest, ProbeSet, RepKey, Representation, ShardEntry, natural_cmp,
};
use crate::sources::{FileKind, SourceArray, list_arrays};
use crate::store::{Env, Location};
use crate::template::Template;
use crate::writer::{
    EncodedShard, RETRIES, RETRY_BACKOFF, ShardEncoder, ShardState, merge_probe, no_longer_listed,
    probe_fingerprint, put, same_values, source_layout, store_shard,
};

pub use crate::template::DEFAULT_PATTERN;

/// Default shard size target when `shard_rows` is not given.
pub const DEFAULT_SHARD_BYTES: usize = 32 << 20;

/// Which layout the arrays of some files have: `--layout nchw` (every file) or
/// `--layout 'KEY=GLOB:LAYOUT'`, where KEY is `run`, `seed`, `step`, `layer`, a tag name, or
/// `file` (the path relative to the ingest source, `path:member` inside a container) and GLOB
/// may use `*` and `?`. A rule applies to the arrays it matches whose number of axes fits its
/// layout (4 for nhwc and nchw, 3 for tokens, any for dense), so `--layout nchw` leaves 2-D
/// arrays dense. Of several rules the last that applies wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRule {
    /// `(key, glob)`; `None` matches every array.
    pub selector: Option<(String, String)>,
    pub layout: Layout,
}

impl LayoutRule {
    pub fn all(layout: Layout) -> Self {
        LayoutRule {
            selector: None,
            layout,
        }
    }

    pub fn parse(text: &str) -> Result<Self, StorageError> {
        let invalid = |reason: String| StorageError::InvalidLayoutRule {
            text: text.to_string(),
            reason,
        };
        let Some((selector, layout)) = text.rsplit_once(':').filter(|_| text.contains('=')) else {
            return Ok(LayoutRule::all(text.trim().parse().map_err(invalid)?));
        };
        let layout: Layout = layout.trim().parse().map_err(invalid)?;
        let (key, glob) = selector.split_once('=').ok_or_else(|| {
            invalid("expected LAYOUT or KEY=GLOB:LAYOUT, e.g. 'layer=conv*:nchw'".into())
        })?;
        let key = match key.trim() {
            "model" => "run",
            k => k,
        };
        if key.is_empty() || glob.is_empty() {
            return Err(invalid(
                "expected LAYOUT or KEY=GLOB:LAYOUT, e.g. 'layer=conv*:nchw'".into(),
            ));
        }
        Ok(LayoutRule {
            selector: Some((key.to_string(), glob.to_string())),
            layout,
        })
    }

    fn matches(&self, key: &RepKey, file: &str) -> bool {
        let Some((k, glob)) = &self.selector else {
            return true;
        };
        let value = match k.as_str() {
            "run" => Some(key.run.clone()),
            "seed" => key.seed.map(|s| s.to_string()),
            "step" => key.step.map(|s| s.to_string()),
            "layer" => Some(key.layer.clone()),
            "file" => Some(file.to_string()),
            tag => key.tags.get(tag).cloned(),
        };
        value.is_some_and(|v| crate::selector::glob_match(glob, &v))
    }
}

/// The layers of a network, shallowest first (`--layer-order a,b,c` or `--layer-order-file F`,
/// one name per line): a layer's depth is its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOrder {
    pub layers: Vec<String>,
    /// The file the names came from, for messages.
    pub file: Option<PathBuf>,
}

impl LayerOrder {
    pub fn parse_list(text: &str) -> Result<Self, StorageError> {
        Self::from_names(text.split(','), None)
    }

    /// One layer name per line; blank lines and lines starting with `#` are ignored.
    pub fn read_file(path: &Path) -> Result<Self, StorageError> {
        let text = std::fs::read_to_string(path).map_err(|source| StorageError::SourceIo {
            path: path.into(),
            source,
        })?;
        Self::from_names(
            text.lines().filter(|l| !l.trim_start().starts_with('#')),
            Some(path.into()),
        )
    }

    fn from_names<'a>(
        names: impl Iterator<Item = &'a str>,
        file: Option<PathBuf>,
    ) -> Result<Self, StorageError> {
        let mut layers: Vec<String> = Vec::new();
        for name in names.map(str::trim).filter(|n| !n.is_empty()) {
            if layers.iter().any(|l| l == name) {
                return Err(StorageError::LayerOrder {
                    file,
                    reason: format!("layer '{name}' is listed twice"),
                });
            }
            layers.push(name.to_string());
        }
        if layers.is_empty() {
            return Err(StorageError::LayerOrder {
                file,
                reason: "no layer names".into(),
            });
        }
        Ok(LayerOrder { layers, file })
    }

    pub fn depth(&self, layer: &str) -> Option<u32> {
        self.layers
            .iter()
            .position(|l| l == layer)
            .map(|d| d as u32)
    }
}

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
    /// Layouts of the source arrays. Arrays with two axes are dense without a rule; any other
    /// array without a matching rule is refused (files do not say how to read their axes).
    pub layouts: Vec<LayoutRule>,
    /// Layer depths. Without it a layer the dataset already holds keeps its depth and new
    /// layers follow in natural name order.
    pub layer_order: Option<LayerOrder>,
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
            .field("layouts", &self.layouts)
            .field("layer_order", &self.layer_order)
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
            layouts: Vec::new(),
            layer_order: None,
        }
    }
    pub fn with_layout(mut self, rule: LayoutRule) -> Self {
        self.layouts.push(rule);
        self
    }
    pub fn with_layer_order(mut self, order: LayerOrder) -> Self {
        self.layer_order = Some(order);
        self
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
    /// Layout of the source array.
    layout: Layout,
    depth: u32,
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
                layout: Layout::Dense,
                depth: 0,
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
    for p in &mut planned {
        let file = match &p.source.member {
            Some(m) => format!("{}:{m}", p.relative),
            None => p.relative.clone(),
        };
        let axes = p.source.shape.len();
        let rule =
            config.layouts.iter().rev().find(|r| {
                r.layout.source_axes().is_none_or(|n| n == axes) && r.matches(&p.key, &file)
            });
        p.layout = match (rule, axes) {
            (Some(r), _) => r.layout,
            (None, 0..=2) => Layout::Dense,
            (None, axes) => {
                return Err(StorageError::LayoutRequired {
                    representation: p.key.id(),
                    source_path: PathBuf::from(p.source.display()),
                    shape: p.source.shape.clone(),
                    choices: match axes {
                        3 => vec![Layout::Tokens, Layout::Dense],
                        4 => vec![Layout::Nhwc, Layout::Nchw, Layout::Dense],
                        _ => vec![Layout::Dense],
                    },
                });
            }
        };
    }

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
        if let Err(reason) = p.layout.stored_shape(&p.source.shape) {
            return Err(StorageError::BadShape {
                representation: p.key.id(),
                source_path: PathBuf::from(p.source.display()),
                shape: p.source.shape.clone(),
                reason,
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
    let fingerprint = probe_fingerprint(config.probe.as_ref())?;
    let mut manifest = match existing.clone() {
        Some(m) => merge_probe(
            m,
            fingerprint,
            config.probe_description.clone(),
            &config.dest_url,
        )?,
        None => Manifest::new(ProbeSet {
            datapoints,
            fingerprint,
            description: config.probe_description.clone(),
        }),
    };
    assign_depths(&mut planned, &mut manifest, config.layer_order.as_ref())?;

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
            shape: p
                .layout
                .stored_shape(&p.source.shape)
                .expect("validated above"),
            layout: p.layout.stored(),
            depth: p.depth,
            source_layout: source_layout(p.layout, &p.source.shape),
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
                    if old.depth != rep.depth || old.source_layout != rep.source_layout {
                        // Same values, new description (a --layer-order): keep the old shards.
                        let mut updated = old.clone();
                        updated.depth = rep.depth;
                        updated.source_layout = rep.source_layout;
                        manifest.upsert(updated);
                    }
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
    let id_for_producer = format!("{id} ({})", source.display());
    let mut encoder = ShardEncoder::new(id_for_producer.clone(), &source.shape, p.layout);
    // The producer reads and encodes on a blocking thread; the channel bounds how far it runs
    // ahead of the uploads, so memory stays at a few shards.
    let producer = tokio::task::spawn_blocking(move || -> Result<String, StorageError> {
        let result = source.for_each_block(shard_rows, |first_row, rows, values| {
            let shard = encoder.encode(first_row, rows, values)?;
            let index = shard.index;
            // A closed channel means the uploads failed: stop reading; their error is reported.
            tx.blocking_send(Ok(shard))
                .map_err(|_| StorageError::Cancelled {
                    representation: id_for_producer.clone(),
                    shard: index,
                })
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
            return Ok(String::new());
        }
        Ok(encoder.finish())
    });

    let dir = p.key.shard_dir();
    let uploads = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(|item| {
        let dir = dir.clone();
        async move { store_shard(location, &dir, item?).await }
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

/// Sets every planned representation's depth: from `order` when given (every ingested layer must
/// be listed; layers of the same runs already in the dataset and listed are updated too), else
/// the depth the dataset already holds for that run and layer, else after the run's deepest
/// layer in natural name order.
fn assign_depths(
    planned: &mut [Planned],
    manifest: &mut Manifest,
    order: Option<&LayerOrder>,
) -> Result<(), StorageError> {
    if let Some(order) = order {
        for p in planned.iter_mut() {
            p.depth = order
                .depth(&p.key.layer)
                .ok_or_else(|| StorageError::LayerOrder {
                    file: order.file.clone(),
                    reason: format!(
                        "layer '{}' ({}) is not listed; list every layer, shallowest first",
                        p.key.layer,
                        p.source.display()
                    ),
                })?;
        }
        let runs: std::collections::HashSet<String> =
            planned.iter().map(|p| p.key.run.clone()).collect();
        for r in manifest.representations.iter_mut() {
            if runs.contains(&r.key.run)
                && let Some(d) = order.depth(&r.key.layer)
            {
                r.depth = d;
            }
        }
        return Ok(());
    }
    let mut new_layers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in planned.iter() {
        if manifest.depth_of(&p.key.run, &p.key.layer).is_none() {
            new_layers
                .entry(p.key.run.clone())
                .or_default()
                .push(p.key.layer.clone());
        }
    }
    for names in new_layers.values_mut() {
        names.sort_by(|a, b| natural_cmp(a, b));
        names.dedup();
    }
    for p in planned.iter_mut() {
        p.depth = match manifest.depth_of(&p.key.run, &p.key.layer) {
            Some(d) => d,
            None => {
                let after = manifest
                    .representations
                    .iter()
                    .filter(|r| r.key.run == p.key.run)
                    .map(|r| r.depth + 1)
                    .max()
                    .unwrap_or(0);
                let rank = new_layers[&p.key.run]
                    .iter()
                    .position(|l| *l == p.key.layer)
                    .expect("collected above");
                after + rank as u32
            }
        };
    }
    Ok(())
}
