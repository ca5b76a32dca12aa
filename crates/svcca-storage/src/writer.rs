//! Writing representations into a dataset batch by batch: what `svcca ingest` does for each
//! file, open to other writers (the Python package, a training loop).
//!
//! - [`DatasetWriter::open`] reads the existing manifest (if any) of a dataset URL.
//! - [`DatasetWriter::begin`] starts one representation: its key, the *source* shape and
//!   [`Layout`], and optionally its depth. It validates them against the dataset (datapoint
//!   count, axes) before anything is stored.
//! - [`RepresentationWriter::write`] takes whole datapoints, row-major in the source layout, in
//!   any batch sizes; every full shard is converted to the stored layout (nchw is transposed to
//!   nhwc datapoint by datapoint), checked for NaN/±Inf, encoded and uploaded, so memory stays at
//!   one shard whatever the probe set's size.
//! - [`RepresentationWriter::finish`] uploads the last shard; [`DatasetWriter::add`] puts the
//!   result in the manifest (a conflict unless the values are the same or `force` is set) and
//!   [`DatasetWriter::commit`] writes the manifest, in one atomic put, last.
//!
//! Shards are named and encoded exactly as `svcca ingest` names and encodes them, so the same
//! values with the same shard size give the same bytes and the same manifest entry.
//!
//! A depth left out is, for a layer the dataset already holds in that run, the depth it has;
//! otherwise one more than the deepest layer of the run: layers written in forward execution
//! order get their depth from that order.

use std::path::PathBuf;

use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::StorageError;
use crate::dataset::{fetch_manifest, get_with_retry};
use crate::ingest::{DEFAULT_SHARD_BYTES, ProbeIdentity};
use crate::layout::encode_shard;
use crate::manifest::{
    Layout, MANIFEST_NAME, Manifest, ProbeSet, RepKey, Representation, ShardEntry, to_stored,
};
use crate::store::{Env, Location, retrying};

/// Extra attempts after a transient store error, and the first backoff delay (doubled each time).
pub(crate) const RETRIES: u32 = 3;
pub(crate) const RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Options of a [`DatasetWriter`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Datapoints per shard; `None` picks about 32 MiB per shard (as `svcca ingest`).
    pub shard_rows: Option<usize>,
    /// Replace representations whose stored values differ.
    pub force: bool,
    /// What identifies the probe set (hashed into the manifest's fingerprint).
    pub probe: Option<ProbeIdentity>,
    pub probe_description: Option<String>,
    /// Store configuration environment (default: the process environment).
    pub env: Option<Env>,
}

impl WriteOptions {
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
}

/// Describes one representation to write.
#[derive(Debug, Clone, PartialEq)]
pub struct RepresentationSpec {
    pub key: RepKey,
    /// Shape of the whole source array, datapoints first, in `layout`.
    pub shape: Vec<usize>,
    /// Layout of the values passed to [`RepresentationWriter::write`].
    pub layout: Layout,
    /// Depth of the layer (input side first); see the module docs when `None`.
    pub depth: Option<u32>,
    /// Element type of the source, recorded as `source_dtype`.
    pub source_dtype: Option<String>,
    /// Where the values come from, recorded as `source`.
    pub source: Option<String>,
}

impl RepresentationSpec {
    pub fn new(key: RepKey, shape: Vec<usize>, layout: Layout) -> Self {
        RepresentationSpec {
            key,
            shape,
            layout,
            depth: None,
            source_dtype: None,
            source: None,
        }
    }
    pub fn with_depth(mut self, depth: u32) -> Self {
        self.depth = Some(depth);
        self
    }
}

/// What happened to a representation added to the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    /// Same values as before (its layout, depth or source may have been updated).
    Unchanged,
    Replaced,
}

/// A dataset being written; see the module docs.
pub struct DatasetWriter {
    url: String,
    location: Location,
    existing: Option<Manifest>,
    manifest: Option<Manifest>,
    options: WriteOptions,
    fingerprint: Option<String>,
    stale_shards: Vec<String>,
}

impl std::fmt::Debug for DatasetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetWriter")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl DatasetWriter {
    /// Opens (or prepares to create) the dataset at `url`.
    pub async fn open(url: &str, options: WriteOptions) -> Result<Self, StorageError> {
        let env = options.env.clone().unwrap_or_else(Env::from_process);
        let location = crate::store::resolve_for_write(url, &env)?;
        Self::open_at(location, url, options).await
    }

    /// As [`DatasetWriter::open`], at an already resolved location; `url` names it in messages.
    pub async fn open_at(
        location: Location,
        url: &str,
        options: WriteOptions,
    ) -> Result<Self, StorageError> {
        let existing = match fetch_manifest(&location, RETRIES, RETRY_BACKOFF).await? {
            Some(bytes) => Some(Manifest::from_json(
                &bytes,
                &location.display(MANIFEST_NAME),
            )?),
            None => None,
        };
        let fingerprint = probe_fingerprint(options.probe.as_ref())?;
        let manifest = match &existing {
            Some(m) => Some(merge_probe(
                m.clone(),
                fingerprint.clone(),
                options.probe_description.clone(),
                url,
            )?),
            None => None,
        };
        Ok(DatasetWriter {
            url: url.to_string(),
            location,
            existing,
            manifest,
            options,
            fingerprint,
            stale_shards: Vec::new(),
        })
    }

    /// The manifest as it will be committed (`None` before anything was added to a new dataset).
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Starts writing a representation. Validates the key, the shape against the layout and the
    /// dataset's datapoint count before anything is stored.
    pub fn begin(&self, spec: RepresentationSpec) -> Result<RepresentationWriter, StorageError> {
        let id = spec.key.id();
        let source_path = PathBuf::from(spec.source.clone().unwrap_or_else(|| id.clone()));
        spec.key.validate().map_err(|reason| StorageError::BadKey {
            path: source_path.clone(),
            reason,
        })?;
        let stored_shape =
            spec.layout
                .stored_shape(&spec.shape)
                .map_err(|reason| StorageError::BadShape {
                    representation: id.clone(),
                    source_path: source_path.clone(),
                    shape: spec.shape.clone(),
                    reason,
                })?;
        if spec.shape.contains(&0) {
            return Err(StorageError::BadShape {
                representation: id,
                source_path,
                shape: spec.shape,
                reason: "it is empty".into(),
            });
        }
        if let Some(m) = &self.manifest
            && m.probe_set.datapoints != spec.shape[0]
        {
            return Err(StorageError::DatapointMismatch {
                representation: id,
                source_path,
                expected: m.probe_set.datapoints,
                actual: spec.shape[0],
            });
        }
        let row_len: usize = stored_shape[1..].iter().product();
        let shard_rows = self
            .options
            .shard_rows
            .unwrap_or_else(|| (DEFAULT_SHARD_BYTES / (row_len * 4)).max(1))
            .max(1);
        Ok(RepresentationWriter {
            location: self.location.clone(),
            encoder: ShardEncoder::new(id, &spec.shape, spec.layout),
            dir: spec.key.shard_dir(),
            shard_rows,
            pending: Vec::new(),
            pending_rows: 0,
            rows_seen: 0,
            shards: Vec::new(),
            uploaded: 0,
            reused: 0,
            repaired: 0,
            bytes_uploaded: 0,
            stored_shape,
            spec,
        })
    }

    /// The depth a representation of `run`/`layer` gets when none is declared.
    pub fn default_depth(&self, run: &str, layer: &str) -> u32 {
        let Some(m) = &self.manifest else { return 0 };
        m.depth_of(run, layer).unwrap_or_else(|| {
            m.representations
                .iter()
                .filter(|r| r.key.run == run)
                .map(|r| r.depth + 1)
                .max()
                .unwrap_or(0)
        })
    }

    /// Puts a finished representation in the manifest. A representation with the same key and
    /// different values is a conflict unless `force`; then its old shards are deleted after
    /// [`DatasetWriter::commit`].
    pub fn add(&mut self, written: WrittenRepresentation) -> Result<Change, StorageError> {
        let mut rep = written.representation;
        rep.depth = match written.depth {
            Some(d) => d,
            None => self.default_depth(&rep.key.run, &rep.key.layer),
        };
        let manifest = self.manifest.get_or_insert_with(|| {
            Manifest::new(ProbeSet {
                datapoints: rep.rows(),
                fingerprint: self.fingerprint.clone(),
                description: self.options.probe_description.clone(),
            })
        });
        if rep.rows() != manifest.probe_set.datapoints {
            return Err(StorageError::DatapointMismatch {
                representation: rep.id(),
                source_path: PathBuf::from(rep.source.clone().unwrap_or_default()),
                expected: manifest.probe_set.datapoints,
                actual: rep.rows(),
            });
        }
        let change = match manifest.get(&rep.key) {
            None => Change::Added,
            Some(old) if same_values(old, &rep) => Change::Unchanged,
            Some(old) => {
                if !self.options.force {
                    return Err(StorageError::Conflict {
                        url: self.url.clone(),
                        representation: rep.id(),
                    });
                }
                self.stale_shards.extend(no_longer_listed(old, &rep));
                Change::Replaced
            }
        };
        manifest.upsert(rep);
        Ok(change)
    }

    /// Validates and writes the manifest (only when it changed), then deletes replaced shards.
    pub async fn commit(&mut self) -> Result<(), StorageError> {
        let Some(manifest) = &self.manifest else {
            return Ok(());
        };
        manifest
            .validate()
            .map_err(|reason| StorageError::ManifestInvalid {
                manifest: self.location.display(MANIFEST_NAME),
                reason,
            })?;
        if self.existing.as_ref() != Some(manifest) {
            put(&self.location, MANIFEST_NAME, manifest.to_json()).await?;
            self.existing = Some(manifest.clone());
        }
        let still_used: std::collections::HashSet<&str> = manifest
            .representations
            .iter()
            .flat_map(|r| r.shards.iter().map(|s| s.path.as_str()))
            .collect();
        for path in self
            .stale_shards
            .drain(..)
            .filter(|p| !still_used.contains(p.as_str()))
        {
            if let Err(e) = self
                .location
                .store
                .delete(&self.location.child(&path))
                .await
            {
                tracing::warn!(path = %self.location.display(&path), error = %e, "could not delete a replaced shard");
            }
        }
        Ok(())
    }
}

/// A representation being written; see [`DatasetWriter::begin`].
pub struct RepresentationWriter {
    location: Location,
    spec: RepresentationSpec,
    stored_shape: Vec<usize>,
    encoder: ShardEncoder,
    dir: String,
    shard_rows: usize,
    pending: Vec<f32>,
    pending_rows: usize,
    rows_seen: usize,
    shards: Vec<ShardEntry>,
    uploaded: usize,
    reused: usize,
    repaired: usize,
    bytes_uploaded: u64,
}

impl std::fmt::Debug for RepresentationWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepresentationWriter")
            .field("spec", &self.spec)
            .field("rows_seen", &self.rows_seen)
            .finish_non_exhaustive()
    }
}

/// A representation whose shards are stored, ready for [`DatasetWriter::add`].
#[derive(Debug, Clone)]
pub struct WrittenRepresentation {
    /// Its manifest entry (the depth is set by [`DatasetWriter::add`]).
    pub representation: Representation,
    /// The declared depth, if any.
    pub depth: Option<u32>,
    pub shards_written: usize,
    pub shards_reused: usize,
    /// Shards found damaged under their name and written again.
    pub shards_repaired: usize,
    pub bytes_written: u64,
}

impl RepresentationWriter {
    /// Values per datapoint.
    pub fn row_len(&self) -> usize {
        self.spec.shape[1..].iter().product()
    }

    /// Appends whole datapoints (row-major, in the source layout).
    pub async fn write(&mut self, values: &[f32]) -> Result<(), StorageError> {
        let row_len = self.row_len();
        let refuse = |reason: String| StorageError::WriteRows {
            representation: self.spec.key.id(),
            reason,
        };
        if !values.len().is_multiple_of(row_len) {
            return Err(refuse(format!(
                "a batch of {} values is not a whole number of datapoints of {row_len} values",
                values.len()
            )));
        }
        // Checked here as well as when a shard is encoded, so the error comes with the batch
        // that holds the value rather than with a later one.
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            return Err(StorageError::NonFinite {
                representation: self.spec.key.id(),
                shard: None,
                row: self.rows_seen + pos / row_len,
                col: pos % row_len,
                value: values[pos] as f64,
            });
        }
        let rows = values.len() / row_len;
        if self.rows_seen + rows > self.spec.shape[0] {
            return Err(refuse(format!(
                "{} datapoints written but the shape {:?} has {}",
                self.rows_seen + rows,
                self.spec.shape,
                self.spec.shape[0]
            )));
        }
        self.rows_seen += rows;
        let mut rest = values;
        while !rest.is_empty() {
            let take = (self.shard_rows - self.pending_rows).min(rest.len() / row_len);
            let (now, later) = rest.split_at(take * row_len);
            if self.pending_rows == 0 && take == self.shard_rows {
                // A whole shard in the caller's batch: no copy.
                self.flush(Some(now)).await?;
            } else {
                self.pending.extend_from_slice(now);
                self.pending_rows += take;
                if self.pending_rows == self.shard_rows {
                    self.flush(None).await?;
                }
            }
            rest = later;
        }
        Ok(())
    }

    async fn flush(&mut self, whole: Option<&[f32]>) -> Result<(), StorageError> {
        let first_row = self.shards.len() * self.shard_rows;
        let (values, rows) = match whole {
            Some(v) => (v, self.shard_rows),
            None => (self.pending.as_slice(), self.pending_rows),
        };
        if rows == 0 {
            return Ok(());
        }
        let shard = self.encoder.encode(first_row, rows, values)?;
        self.pending.clear();
        self.pending_rows = 0;
        let (entry, state) = store_shard(&self.location, &self.dir, shard).await?;
        match state {
            ShardState::Intact => self.reused += 1,
            ShardState::Absent | ShardState::Damaged => {
                self.uploaded += 1;
                self.bytes_uploaded += entry.bytes;
            }
        }
        if state == ShardState::Damaged {
            self.repaired += 1;
        }
        self.shards.push(entry);
        Ok(())
    }

    /// Stores the last shard; errors unless every datapoint of the shape was written.
    pub async fn finish(mut self) -> Result<WrittenRepresentation, StorageError> {
        if self.rows_seen != self.spec.shape[0] {
            return Err(StorageError::WriteRows {
                representation: self.spec.key.id(),
                reason: format!(
                    "{} datapoints were written but the shape {:?} has {}",
                    self.rows_seen, self.spec.shape, self.spec.shape[0]
                ),
            });
        }
        self.flush(None).await?;
        let stored_layout = self.spec.layout.stored();
        let representation = Representation {
            key: self.spec.key.clone(),
            shape: self.stored_shape,
            layout: stored_layout,
            depth: self.spec.depth.unwrap_or(0),
            source_layout: source_layout(self.spec.layout, &self.spec.shape),
            dtype: "float32".into(),
            source_dtype: self.spec.source_dtype,
            source: self.spec.source,
            shards: self.shards,
            values_sha256: Some(self.encoder.finish()),
        };
        Ok(WrittenRepresentation {
            representation,
            depth: self.spec.depth,
            shards_written: self.uploaded,
            shards_reused: self.reused,
            shards_repaired: self.repaired,
            bytes_written: self.bytes_uploaded,
        })
    }
}

/// The `source_layout` recorded for a source of `shape` in `layout`: set when the stored layout
/// differs (nchw transposed, or more than two axes flattened to dense).
pub(crate) fn source_layout(layout: Layout, shape: &[usize]) -> Option<Layout> {
    match layout {
        Layout::Nchw => Some(Layout::Nchw),
        Layout::Dense if shape.len() > 2 => Some(Layout::Dense),
        _ => None,
    }
}

/// Converts, checks, hashes and encodes the blocks of one representation, in row order.
pub(crate) struct ShardEncoder {
    /// Names the representation (and its source) in errors.
    id: String,
    layout: Layout,
    source_item: Vec<usize>,
    stored_item: Vec<usize>,
    row_len: usize,
    values_hash: Sha256,
    index: usize,
    scratch: Vec<f32>,
}

/// One encoded shard, ready to store.
pub(crate) struct EncodedShard {
    pub index: usize,
    pub row_start: usize,
    pub rows: usize,
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub crc32: u32,
}

impl ShardEncoder {
    /// `shape` is the whole source shape in `layout`, already validated by
    /// [`Layout::stored_shape`].
    pub fn new(id: String, shape: &[usize], layout: Layout) -> Self {
        let stored = layout
            .stored_shape(shape)
            .expect("shape validated against the layout");
        ShardEncoder {
            id,
            layout,
            source_item: shape[1..].to_vec(),
            row_len: stored[1..].iter().product(),
            stored_item: stored[1..].to_vec(),
            values_hash: Sha256::new(),
            index: 0,
            scratch: Vec::new(),
        }
    }

    pub fn encode(
        &mut self,
        first_row: usize,
        rows: usize,
        values: &[f32],
    ) -> Result<EncodedShard, StorageError> {
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            // Positions are the source's: they are what the user can look up.
            return Err(StorageError::NonFinite {
                representation: self.id.clone(),
                shard: None,
                row: first_row + pos / self.row_len,
                col: pos % self.row_len,
                value: values[pos] as f64,
            });
        }
        let values = if self.layout == Layout::Nchw {
            to_stored(self.layout, &self.source_item, values, &mut self.scratch);
            self.scratch.as_slice()
        } else {
            values
        };
        hash_f32_le(&mut self.values_hash, values);
        let bytes = encode_shard(&self.stored_item, values);
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let crc32 = crc32fast::hash(&bytes);
        let shard = EncodedShard {
            index: self.index,
            row_start: first_row,
            rows,
            bytes,
            sha256,
            crc32,
        };
        self.index += 1;
        Ok(shard)
    }

    /// Hex SHA-256 of all stored values (`values_sha256`).
    pub fn finish(self) -> String {
        hex::encode(self.values_hash.finalize())
    }
}

/// What was stored under a shard's name before this write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShardState {
    Absent,
    Intact,
    Damaged,
}

/// Stores one shard under its content-addressed name in `dir`, unless an object with that name
/// already holds exactly its bytes.
pub(crate) async fn store_shard(
    location: &Location,
    dir: &str,
    shard: EncodedShard,
) -> Result<(ShardEntry, ShardState), StorageError> {
    let path = format!(
        "{dir}/part-{:05}-{}.arrow",
        shard.index,
        &shard.sha256[..16]
    );
    let len = shard.bytes.len() as u64;
    // The name is content-addressed, but what is stored under it may have been damaged since:
    // compare it with the bytes it must hold before trusting it.
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
        crc32: Some(shard.crc32),
    };
    Ok((entry, state))
}

/// The fingerprint of what identifies the probe set.
pub(crate) fn probe_fingerprint(
    probe: Option<&ProbeIdentity>,
) -> Result<Option<String>, StorageError> {
    Ok(match probe {
        None => None,
        Some(ProbeIdentity::Name(n)) => Some(ProbeSet::fingerprint_of(n.as_bytes())),
        Some(ProbeIdentity::File(f)) => {
            let bytes = std::fs::read(f).map_err(|source| StorageError::SourceIo {
                path: f.clone(),
                source,
            })?;
            Some(ProbeSet::fingerprint_of(&bytes))
        }
    })
}

/// The existing manifest with this write's probe identity, refused when they disagree.
pub(crate) fn merge_probe(
    mut m: Manifest,
    fingerprint: Option<String>,
    description: Option<String>,
    url: &str,
) -> Result<Manifest, StorageError> {
    match (&m.probe_set.fingerprint, &fingerprint) {
        (Some(a), Some(b)) if a != b => {
            return Err(StorageError::ProbeMismatch {
                reason: format!(
                    "the dataset at {url} was ingested with probe set {a}, this ingest names {b}"
                ),
            });
        }
        (None, Some(b)) if !m.representations.is_empty() => {
            return Err(StorageError::ProbeMismatch {
                reason: format!(
                    "the dataset at {url} has no probe set fingerprint, so it cannot be confirmed to be {b}; ingest into a new dataset"
                ),
            });
        }
        _ => {}
    }
    if m.probe_set.fingerprint.is_none() {
        m.probe_set.fingerprint = fingerprint;
    }
    if description.is_some() {
        m.probe_set.description = description;
    }
    Ok(m)
}

/// Paths of `old`'s shards that `new` no longer lists.
pub(crate) fn no_longer_listed(old: &Representation, new: &Representation) -> Vec<String> {
    let keep: std::collections::HashSet<&str> =
        new.shards.iter().map(|s| s.path.as_str()).collect();
    old.shards
        .iter()
        .filter(|s| !keep.contains(s.path.as_str()))
        .map(|s| s.path.clone())
        .collect()
}

/// True when two entries hold the same values (regardless of how they are sharded).
pub(crate) fn same_values(a: &Representation, b: &Representation) -> bool {
    if a.shape != b.shape || a.dtype != b.dtype || a.layout != b.layout {
        return false;
    }
    match (&a.values_sha256, &b.values_sha256) {
        (Some(x), Some(y)) => x == y,
        _ => a.content_checksum() == b.content_checksum(),
    }
}

/// Puts an object atomically, retrying transient errors.
pub(crate) async fn put(
    location: &Location,
    relative: &str,
    bytes: Vec<u8>,
) -> Result<(), StorageError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open_dataset;

    fn key(layer: &str) -> RepKey {
        RepKey {
            run: "net".into(),
            seed: Some(0),
            step: Some(1),
            layer: layer.into(),
            tags: Default::default(),
        }
    }

    /// Values that differ at every position, so a wrong transpose cannot go unnoticed.
    fn ramp(len: usize) -> Vec<f32> {
        (0..len).map(|i| i as f32 * 0.5 - 7.0).collect()
    }

    async fn write(
        w: &mut DatasetWriter,
        spec: RepresentationSpec,
        values: &[f32],
        batches: &[usize],
    ) -> Change {
        let mut rw = w.begin(spec).unwrap();
        let row_len = rw.row_len();
        let mut at = 0;
        for &rows in batches {
            rw.write(&values[at..at + rows * row_len]).await.unwrap();
            at += rows * row_len;
        }
        assert_eq!(at, values.len(), "the batches cover the values");
        let written = rw.finish().await.unwrap();
        w.add(written).unwrap()
    }

    #[tokio::test]
    async fn nchw_is_stored_channels_last_whatever_the_batches() {
        let (n, c, h, wd) = (7, 3, 2, 4);
        let nchw = ramp(n * c * h * wd);
        let url = "memory://writer-nchw/ds";
        let options = WriteOptions::default().with_shard_rows(3);
        let mut w = DatasetWriter::open(url, options).await.unwrap();
        let spec = RepresentationSpec::new(key("conv"), vec![n, c, h, wd], Layout::Nchw);
        assert_eq!(
            write(&mut w, spec.clone(), &nchw, &[1, 2, 1, 3]).await,
            Change::Added
        );
        w.commit().await.unwrap();

        let ds = open_dataset(url).await.unwrap();
        let rep = &ds.representations()[0];
        assert_eq!(rep.shape, vec![n, h, wd, c]);
        assert_eq!(rep.layout, Layout::Nhwc);
        assert_eq!(rep.source_layout, Some(Layout::Nchw));
        assert_eq!(rep.shards.len(), 3, "7 rows in shards of 3");
        let stored = ds.read_all(rep).await.unwrap();
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..wd {
                        let src = nchw[((i * c + ch) * h + y) * wd + x];
                        let dst = stored[((i * h + y) * wd + x) * c + ch];
                        assert_eq!(src, dst, "image {i} channel {ch} at ({y}, {x})");
                    }
                }
            }
        }

        // The same values in other batches give the same shards: unchanged.
        let mut w = DatasetWriter::open(url, WriteOptions::default().with_shard_rows(3))
            .await
            .unwrap();
        assert_eq!(write(&mut w, spec, &nchw, &[7]).await, Change::Unchanged);
    }

    #[tokio::test]
    async fn depths_follow_the_order_layers_are_written_unless_declared() {
        let url = "memory://writer-depth/ds";
        let mut w = DatasetWriter::open(url, WriteOptions::default())
            .await
            .unwrap();
        let values = ramp(5 * 2);
        for layer in ["conv1", "layer1.0.conv1", "fc", "aux"] {
            let mut spec = RepresentationSpec::new(key(layer), vec![5, 2], Layout::Dense);
            if layer == "aux" {
                spec = spec.with_depth(9);
            }
            write(&mut w, spec, &values, &[5]).await;
        }
        w.commit().await.unwrap();
        let ds = open_dataset(url).await.unwrap();
        let depth = |layer: &str| ds.manifest().depth_of("net", layer).unwrap();
        assert_eq!(
            [
                depth("conv1"),
                depth("layer1.0.conv1"),
                depth("fc"),
                depth("aux")
            ],
            [0, 1, 2, 9]
        );
    }

    #[tokio::test]
    async fn wrong_batches_and_shapes_are_refused_by_name() {
        let w = DatasetWriter::open("memory://writer-bad/ds", WriteOptions::default())
            .await
            .unwrap();
        let e = w
            .begin(RepresentationSpec::new(
                key("c"),
                vec![4, 2, 3],
                Layout::Nchw,
            ))
            .unwrap_err();
        assert!(e.to_string().contains("layout 'nchw' needs 4 axes"), "{e}");
        let mut rw = w
            .begin(RepresentationSpec::new(key("d"), vec![4, 3], Layout::Dense))
            .unwrap();
        let e = rw.write(&[1.0; 4]).await.unwrap_err();
        assert!(
            e.to_string().contains("not a whole number of datapoints"),
            "{e}"
        );
        rw.write(&[1.0; 6]).await.unwrap();
        let e = rw.finish().await.unwrap_err();
        assert!(
            e.to_string()
                .contains("2 datapoints were written but the shape [4, 3] has 4"),
            "{e}"
        );
        let mut rw = w
            .begin(RepresentationSpec::new(key("d"), vec![4, 3], Layout::Dense))
            .unwrap();
        rw.write(&[1.0; 3]).await.unwrap();
        let mut bad = vec![1.0f32; 6];
        bad[4] = f32::NAN;
        let e = rw.write(&bad).await.unwrap_err();
        assert!(
            matches!(e, StorageError::NonFinite { row: 2, col: 1, .. }),
            "{e}"
        );
    }
}
