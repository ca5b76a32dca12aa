//! Reading a dataset: [`open_dataset`] reads the manifest; [`Dataset`] lists representations,
//! resolves [`Selector`]s and streams row blocks with a bounded number of shards in flight.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use crate::layout::{RowBlock, ShardContext, decode_shard};
use crate::manifest::{MANIFEST_NAME, Manifest, Representation, ShardCheck};
use crate::selector::Selector;
use crate::store::{Env, Location, retrying};
use crate::{StorageError, error::is_transient};

/// How a [`Dataset`] reads.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Shards fetched concurrently by the streams; memory is about this many shards (default 4).
    pub shards_in_flight: usize,
    /// Check each shard's size and checksum against the manifest (default true): its CRC-32
    /// when the manifest lists one, else its SHA-256 (see [`ReadOptions::full_checksums`]). The
    /// size is checked on every read; a shard is checksummed the first time a [`Dataset`] (and
    /// its clones) reads it only, since a sweep reads every shard twice (moments, then
    /// projection). Off, neither is checked and only the decoder stands between a damaged shard
    /// and the maths.
    pub verify_checksums: bool,
    /// Check the SHA-256 of every shard even where the manifest lists a CRC-32 (default false):
    /// for `svcca verify`, which vouches for the content addresses caches are keyed on.
    pub full_checksums: bool,
    /// Reject NaN/±Inf values (default true).
    pub check_finite: bool,
    /// Extra attempts after a transient store error, with exponential backoff (default 3). The
    /// cloud clients also retry HTTP requests internally.
    pub retries: u32,
    /// First backoff delay (default 100 ms), doubled each attempt.
    pub retry_backoff: Duration,
    /// Environment for store configuration (default: the process environment).
    pub env: Option<Env>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            shards_in_flight: 4,
            verify_checksums: true,
            full_checksums: false,
            check_finite: true,
            retries: 3,
            retry_backoff: Duration::from_millis(100),
            env: None,
        }
    }
}

impl ReadOptions {
    pub fn with_shards_in_flight(mut self, n: usize) -> Self {
        self.shards_in_flight = n.max(1);
        self
    }
    pub fn with_verify_checksums(mut self, on: bool) -> Self {
        self.verify_checksums = on;
        self
    }
    pub fn with_full_checksums(mut self, on: bool) -> Self {
        self.full_checksums = on;
        self
    }
    pub fn with_check_finite(mut self, on: bool) -> Self {
        self.check_finite = on;
        self
    }
    pub fn with_retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
    pub fn with_env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }
}

/// An opened dataset: its location and manifest. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dataset {
    location: Location,
    manifest: Arc<Manifest>,
    options: ReadOptions,
    /// Shards whose bytes already matched their SHA-256 (by path and checksum).
    verified: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

/// Opens the dataset at `url` with default options.
pub async fn open_dataset(url: &str) -> Result<Dataset, StorageError> {
    Dataset::open(url, ReadOptions::default()).await
}

static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes this process has fetched from datasets (shards and manifests) since it started: a
/// counter for metrics.
pub fn bytes_read() -> u64 {
    BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// Fetches an object, retrying transient errors. `Ok(None)` when it does not exist.
pub(crate) async fn get_with_retry(
    location: &Location,
    relative: &str,
    retries: u32,
    backoff: Duration,
) -> Result<Option<bytes::Bytes>, StorageError> {
    let path = location.child(relative);
    retrying(location, relative, retries, backoff, || {
        let path = &path;
        async move {
            let result = if location.map_files {
                crate::store::map_file(path)
            } else {
                match location.store.get(path).await {
                    Ok(r) => r.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            if let Ok(Some(b)) = &result {
                BYTES_READ.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            result
        }
    })
    .await
}

/// The bytes of the dataset's manifest; `Ok(None)` only when nothing is there. Something
/// other than a readable file at its place is an error saying what it is.
pub(crate) async fn fetch_manifest(
    location: &Location,
    retries: u32,
    backoff: Duration,
) -> Result<Option<bytes::Bytes>, StorageError> {
    let manifest = location.display(MANIFEST_NAME);
    let unreadable = |reason: String| StorageError::ManifestUnreadable {
        manifest: manifest.clone(),
        reason,
    };
    // A permanent failure (permission, a path that is not a directory) is said as such, not
    // as "no dataset"; the stores report a directory as "not found": tell the cases apart.
    let failure = match get_with_retry(location, MANIFEST_NAME, retries, backoff).await {
        Ok(Some(bytes)) => return Ok(Some(bytes)),
        Ok(None) => None,
        Err(StorageError::ObjectStore { source, .. }) if !is_transient(&source) => Some(source),
        Err(e) => return Err(e),
    };
    if let Some(dir) = &location.local_dir {
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(unreadable(format!(
                    "{} is a file, not a dataset directory; name the directory that holds {MANIFEST_NAME}",
                    dir.display()
                )));
            }
            _ => {}
        }
        match std::fs::metadata(dir.join(MANIFEST_NAME)) {
            Ok(m) if m.is_dir() => {
                return Err(unreadable(
                    "it is a directory, not a file; a dataset's manifest is the file `svcca ingest` writes".into(),
                ));
            }
            Ok(m) if !m.is_file() => {
                return Err(unreadable("it is not a regular file".into()));
            }
            _ => {}
        }
    } else {
        let prefix = location.child(MANIFEST_NAME);
        if let Some(Ok(inner)) = location.store.list(Some(&prefix)).next().await {
            return Err(unreadable(format!(
                "it is a prefix holding other objects (such as {inner}), not an object; a dataset's manifest is the object `svcca ingest` writes",
                inner = inner.location
            )));
        }
    }
    match failure {
        Some(source) => Err(unreadable(source.to_string())),
        None => Ok(None),
    }
}

impl Dataset {
    /// Resolves `url` and reads its manifest.
    pub async fn open(url: &str, options: ReadOptions) -> Result<Dataset, StorageError> {
        let env = options.env.clone().unwrap_or_else(Env::from_process);
        let location = crate::store::resolve_with_env(url, &env)?;
        Self::open_at(location, options).await
    }

    /// Reads the manifest of an already resolved location.
    pub async fn open_at(
        location: Location,
        options: ReadOptions,
    ) -> Result<Dataset, StorageError> {
        let bytes = fetch_manifest(&location, options.retries, options.retry_backoff)
            .await?
            .ok_or_else(|| StorageError::ManifestNotFound {
                url: location.url.clone(),
                manifest: location.display(MANIFEST_NAME),
            })?;
        let manifest = Manifest::from_json(&bytes, &location.display(MANIFEST_NAME))?;
        Ok(Dataset {
            location,
            manifest: Arc::new(manifest),
            options,
            verified: Arc::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.location.url
    }
    pub fn location(&self) -> &Location {
        &self.location
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn options(&self) -> &ReadOptions {
        &self.options
    }

    /// The object at `relative` (a shard's path) under the dataset, fetched with this dataset's
    /// retries; `Ok(None)` when it does not exist.
    pub async fn fetch(&self, relative: &str) -> Result<Option<bytes::Bytes>, StorageError> {
        get_with_retry(
            &self.location,
            relative,
            self.options.retries,
            self.options.retry_backoff,
        )
        .await
    }

    /// The metadata (size, modification time, ETag, version) of the object at `relative`, with
    /// this dataset's retries; `Ok(None)` when it does not exist.
    pub async fn head(
        &self,
        relative: &str,
    ) -> Result<Option<object_store::ObjectMeta>, StorageError> {
        let path = self.location.child(relative);
        retrying(
            &self.location,
            relative,
            self.options.retries,
            self.options.retry_backoff,
            || {
                let path = &path;
                async move {
                    match self.location.store.head(path).await {
                        Ok(m) => Ok(Some(m)),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            },
        )
        .await
    }

    /// Every representation, in canonical order (run, seed, step numerically, layer).
    pub fn representations(&self) -> &[Representation] {
        &self.manifest.representations
    }

    /// The representation with this canonical id (`run=..,seed=..,step=..,layer=..`).
    pub fn representation(&self, id: &str) -> Option<&Representation> {
        self.manifest.representations.iter().find(|r| r.id() == id)
    }

    /// The single representation a selector picks (its dataset URL is not consulted).
    pub fn resolve(&self, selector: &Selector) -> Result<&Representation, StorageError> {
        selector.resolve_in(self.url(), &self.manifest)
    }

    /// Fetches and decodes one shard (checksum, schema, row count, nulls and finiteness checked).
    pub async fn read_shard(
        &self,
        rep: &Representation,
        shard: usize,
    ) -> Result<Vec<RowBlock>, StorageError> {
        let id: Arc<str> = rep.id().into();
        self.read_shard_with_id(rep, &id, shard).await
    }

    async fn read_shard_with_id(
        &self,
        rep: &Representation,
        id: &Arc<str>,
        shard: usize,
    ) -> Result<Vec<RowBlock>, StorageError> {
        let entry = rep
            .shards
            .get(shard)
            .ok_or_else(|| StorageError::ShardRange {
                representation: id.to_string(),
                start: shard,
                end: shard + 1,
                shards: rep.shards.len(),
            })?;
        let bytes = get_with_retry(
            &self.location,
            &entry.path,
            self.options.retries,
            self.options.retry_backoff,
        )
        .await?
        .ok_or_else(|| StorageError::ShardMissing {
            representation: id.to_string(),
            shard,
            path: self.location.display(&entry.path),
        })?;
        let seen = (entry.path.clone(), entry.sha256.clone());
        let already = self
            .verified
            .lock()
            .expect("verified shards")
            .contains(&seen);
        let path = self.location.display(&entry.path);
        let ctx = ShardContext {
            representation: id.clone(),
            shard,
            path,
            first_row: entry.row_start,
            expected_rows: entry.rows,
            item_shape: rep.item_shape().to_vec(),
            // A shard enters `verified` once its checksum matched and it decoded with every
            // value finite, and its size is checked on every read: a later read (a sweep's
            // projection after its moments) neither hashes nor scans it again.
            check_finite: self.options.check_finite && !already,
        };
        // Cheap, and it tells a shard changed in size (truncated, replaced, a wrong manifest)
        // apart from one damaged in place, on every read: later reads of a verified shard are
        // not hashed again.
        if self.options.verify_checksums && bytes.len() as u64 != entry.bytes {
            return Err(StorageError::ShardSize {
                representation: id.to_string(),
                shard,
                path: ctx.path.clone(),
                expected: entry.bytes,
                actual: bytes.len() as u64,
            });
        }
        let check = (self.options.verify_checksums && !already).then(|| {
            let level = if self.options.full_checksums {
                ShardCheck::Full
            } else {
                ShardCheck::Fast
            };
            (entry.clone(), level)
        });
        let verified = self.verified.clone();
        // Checksums, decoding and the finiteness scan are CPU work: keep them off the async
        // workers.
        tokio::task::spawn_blocking(move || {
            let checked = check.is_some();
            if let Some((entry, level)) = check
                && let Err((expected, actual)) = entry.check_bytes(&bytes, level)
            {
                return Err(StorageError::ShardChecksum {
                    representation: ctx.representation.to_string(),
                    shard: ctx.shard,
                    path: ctx.path.clone(),
                    expected,
                    actual,
                });
            }
            let blocks = decode_shard(bytes, &ctx)?;
            if checked {
                verified.lock().expect("verified shards").insert(seen);
            }
            Ok(blocks)
        })
        .await
        .map_err(|e| StorageError::ShardCorrupt {
            representation: id.to_string(),
            shard,
            path: self.location.display(&entry.path),
            reason: format!("decoder task failed: {e}"),
        })?
    }

    /// Streams the row blocks of shards `shards` (indices into `rep.shards`), in order, with up
    /// to `shards_in_flight` fetches running ahead.
    pub fn shard_blocks(
        &self,
        rep: &Representation,
        shards: Range<usize>,
    ) -> BoxStream<'static, Result<RowBlock, StorageError>> {
        let id: Arc<str> = rep.id().into();
        if let Err(e) = rep.check_size() {
            return stream::once(async move { Err(e) }).boxed();
        }
        if shards.start > shards.end || shards.end > rep.shards.len() {
            let err = StorageError::ShardRange {
                representation: id.to_string(),
                start: shards.start,
                end: shards.end,
                shards: rep.shards.len(),
            };
            return stream::once(async move { Err(err) }).boxed();
        }
        // Each fetch runs as its own task so that fetching and decoding overlap across shards.
        let this = self.clone();
        let rep_owned = Arc::new(rep.clone());
        stream::iter(shards)
            .map(move |i| {
                let (this, rep, id) = (this.clone(), rep_owned.clone(), id.clone());
                let id_for_err = id.clone();
                async move {
                    match tokio::spawn(async move { this.read_shard_with_id(&rep, &id, i).await })
                        .await
                    {
                        Ok(r) => r,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => Err(StorageError::Cancelled {
                            representation: id_for_err.to_string(),
                            shard: i,
                        }),
                    }
                }
            })
            .buffered(self.options.shards_in_flight.max(1))
            .map_ok(|blocks| stream::iter(blocks.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Streams datapoints `rows` of `rep` as row blocks, slicing shards at the range's ends
    /// without copying. Use this to align two representations whose shards differ.
    pub fn row_blocks(
        &self,
        rep: &Representation,
        rows: Range<usize>,
    ) -> BoxStream<'static, Result<RowBlock, StorageError>> {
        if rows.start > rows.end || rows.end > rep.rows() {
            let err = StorageError::RowRange {
                representation: rep.id(),
                start: rows.start,
                end: rows.end,
                rows: rep.rows(),
            };
            return stream::once(async move { Err(err) }).boxed();
        }
        if rows.is_empty() {
            return stream::empty().boxed();
        }
        let first = rep
            .shards
            .iter()
            .position(|s| s.row_start + s.rows > rows.start)
            .unwrap_or(0);
        let last = rep
            .shards
            .iter()
            .rposition(|s| s.row_start < rows.end)
            .unwrap_or(0);
        self.shard_blocks(rep, first..last + 1)
            .try_filter_map(move |b| {
                let start = rows.start.max(b.first_row);
                let end = rows.end.min(b.first_row + b.rows);
                let out = (start < end).then(|| b.slice_rows(start - b.first_row, end - start));
                async move { Ok(out) }
            })
            .boxed()
    }

    /// Reads a whole representation into one row-major `Vec` (for small ones).
    /// Refuses a shape its shards cannot hold ([`Representation::check_size`]) before allocating.
    pub async fn read_all(&self, rep: &Representation) -> Result<Vec<f32>, StorageError> {
        let bytes = rep.check_size()?;
        let mut out = Vec::with_capacity((bytes / 4) as usize);
        let mut s = self.shard_blocks(rep, 0..rep.shards.len());
        while let Some(b) = s.next().await {
            out.extend_from_slice(b?.values());
        }
        Ok(out)
    }
}
