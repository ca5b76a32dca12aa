//! Where the job half reads activations: a narrow seam over the storage crate.
//!
//! The planner needs the list of representations (a manifest); executors need rows of one
//! representation by datapoint range. Both go through [`RowSource`], opened per dataset URL by a
//! [`SourceOpener`]. The production opener is [`StorageOpener`] (svcca-storage's Arrow shard
//! datasets over object stores); tests wrap it to count shard reads.

use std::sync::Arc;

use futures::future::BoxFuture;
use svcca_results::RepresentationKey;

use crate::cache::{Store, hash_parts};
use crate::plan::RepInfo;

/// Rows of one representation: row-major `[rows, cols]` f32, `cols` = product of its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub data: RowValues,
    pub rows: usize,
    pub cols: usize,
}

impl Rows {
    /// The rows as svcca-core blocks, one per piece, for `RowBlock::stacked`.
    pub fn pieces(&self) -> Result<Vec<svcca_core::RowBlock<'_>>, svcca_core::CoreError> {
        if self.cols == 0 {
            return Ok(vec![svcca_core::RowBlock::f32(&[], self.rows, 0)?]);
        }
        self.data
            .pieces()
            .into_iter()
            .map(|v| svcca_core::RowBlock::f32(v, v.len() / self.cols, self.cols))
            .collect()
    }
}

/// The values of [`Rows`]: slices of consecutive shards, in row order, shared with the shards'
/// buffers. A task reads tens of MB per shard, and gathering them into one new buffer cost a
/// copy into fresh memory (and its page faults) on every read. Consumers that can take the rows
/// piece by piece ([`RowValues::pieces`], for svcca-core's stacked row blocks) never copy them.
#[derive(Debug, Clone)]
pub struct RowValues(pub Vec<svcca_storage::RowBlock>);

impl RowValues {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.iter().map(|b| b.values().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each piece's values, row-major, in row order.
    pub fn pieces(&self) -> Vec<&[f32]> {
        self.0.iter().map(|b| b.values()).collect()
    }

    /// All values in one slice: borrowed where one piece holds them, else copied together.
    pub fn contiguous(&self) -> std::borrow::Cow<'_, [f32]> {
        match self.pieces()[..] {
            [] => std::borrow::Cow::Borrowed(&[]),
            [one] => std::borrow::Cow::Borrowed(one),
            ref many => std::borrow::Cow::Owned(many.concat()),
        }
    }
}

impl PartialEq for RowValues {
    fn eq(&self, other: &RowValues) -> bool {
        self.contiguous() == other.contiguous()
    }
}

/// A failure reading a dataset, classified where it is understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// I/O or object store: running again may succeed.
    #[error("reading dataset `{url}`: {message}")]
    Io { url: String, message: String },
    /// Bad or missing data: running again cannot help.
    #[error("dataset `{url}`: {message}")]
    Invalid { url: String, message: String },
}

impl SourceError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SourceError::Io { .. })
    }
}

/// One opened dataset.
pub trait RowSource: Send + Sync {
    /// Every representation in the dataset's manifest.
    fn list(&self) -> BoxFuture<'_, Result<Vec<RepInfo>, SourceError>>;

    /// Datapoints `start..end` of one representation.
    fn read_rows<'a>(
        &'a self,
        key: &'a RepresentationKey,
        start: u64,
        end: u64,
    ) -> BoxFuture<'a, Result<Rows, SourceError>>;

    /// Checks that the stored bytes of `keys` are still those the manifest names, before a job
    /// trusts anything cached under the manifest's checksums. `records` keeps what was checked
    /// (see [`StorageSource`]'s implementation) so that an unchanged dataset is not re-read.
    fn verify<'a>(
        &'a self,
        keys: &'a [RepresentationKey],
        records: &'a Store,
    ) -> BoxFuture<'a, Result<VerifyReport, SourceError>>;
}

/// What [`RowSource::verify`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Shards whose size, modification time and ETag matched an earlier check's record.
    pub unchanged: usize,
    /// Shards read and hashed now.
    pub hashed: usize,
}

/// Opens datasets by URL.
pub trait SourceOpener: Send + Sync + 'static {
    fn open(&self, url: String) -> BoxFuture<'static, Result<Arc<dyn RowSource>, SourceError>>;
}

/// Opens svcca-storage datasets (Arrow IPC shards + manifest over any object store).
#[derive(Debug, Clone, Default)]
pub struct StorageOpener {
    options: svcca_storage::ReadOptions,
}

impl StorageOpener {
    pub fn new(options: svcca_storage::ReadOptions) -> Self {
        StorageOpener { options }
    }
}

fn from_storage(url: &str, e: svcca_storage::StorageError) -> SourceError {
    storage_error(url, e.is_retryable(), e.to_string())
}

fn storage_error(url: &str, retryable: bool, message: String) -> SourceError {
    let url = url.to_string();
    if retryable {
        SourceError::Io { url, message }
    } else {
        SourceError::Invalid { url, message }
    }
}

/// The results schema's key for a storage key (seeds and steps are numbers in both).
pub fn results_key(key: &svcca_storage::RepKey) -> RepresentationKey {
    RepresentationKey {
        run: key.run.clone(),
        seed: key.seed.map(|s| s as i64),
        step: key.step.map(|s| s as i64),
        layer: key.layer.clone(),
        tags: key.tags.clone(),
    }
}

impl SourceOpener for StorageOpener {
    fn open(&self, url: String) -> BoxFuture<'static, Result<Arc<dyn RowSource>, SourceError>> {
        let options = self.options.clone();
        Box::pin(async move {
            let dataset = svcca_storage::Dataset::open(&url, options)
                .await
                .map_err(|e| from_storage(&url, e))?;
            let index = dataset
                .representations()
                .iter()
                .enumerate()
                .map(|(i, r)| (results_key(&r.key), i))
                .collect();
            Ok(Arc::new(StorageSource {
                url,
                dataset,
                index,
            }) as Arc<dyn RowSource>)
        })
    }
}

struct StorageSource {
    url: String,
    dataset: svcca_storage::Dataset,
    index: std::collections::BTreeMap<RepresentationKey, usize>,
}

impl StorageSource {
    fn invalid(&self, message: String) -> SourceError {
        SourceError::Invalid {
            url: self.url.clone(),
            message,
        }
    }

    /// One shard of [`RowSource::verify`]: `Ok(true)` when it was hashed now, `Ok(false)` when
    /// its record was still good.
    async fn verify_shard(
        &self,
        records: &Store,
        label: String,
        n: usize,
        entry: &svcca_storage::ShardEntry,
    ) -> Result<bool, SourceError> {
        let shown = self.dataset.location().display(&entry.path);
        // Transient store errors were retried already; what is left is classified as the
        // storage layer classifies it.
        let io = |e: svcca_storage::StorageError| {
            let message = format!("checking shard {n} of {label} (`{shown}`): {e}");
            storage_error(&self.url, e.is_retryable(), message)
        };
        let missing = || {
            self.invalid(format!(
                "shard {n} of {label} (`{shown}`) is missing; re-ingest the dataset"
            ))
        };
        let meta = self
            .dataset
            .head(&entry.path)
            .await
            .map_err(io)?
            .ok_or_else(missing)?;
        if meta.size != entry.bytes {
            return Err(self.invalid(format!(
                "shard {n} of {label} (`{shown}`) has {} bytes where the manifest says {}: \
                 it changed after the dataset was written; re-ingest the dataset",
                meta.size, entry.bytes
            )));
        }
        let stamp = format!(
            "{}|{}|{:?}|{:?}|{:?}\n",
            entry.sha256, meta.size, meta.last_modified, meta.e_tag, meta.version
        );
        let record = format!("verified/{}.txt", hash_parts(&["shard", &shown]));
        let cache_io = |e: crate::cache::CacheError| {
            let (url, message) = (records.url().to_string(), e.to_string());
            if e.is_retryable() {
                SourceError::Io { url, message }
            } else {
                SourceError::Invalid { url, message }
            }
        };
        let known = records.get(&record).await.map_err(cache_io)?;
        if known.as_deref() == Some(stamp.as_bytes()) {
            return Ok(false);
        }
        let bytes = self
            .dataset
            .fetch(&entry.path)
            .await
            .map_err(io)?
            .ok_or_else(missing)?;
        // The CRC-32 where the manifest has one: it tells a replaced shard at memory speed, and
        // every job with a new output store checks every shard.
        let owned = entry.clone();
        let checked = tokio::task::spawn_blocking(move || {
            owned.check_bytes(&bytes, svcca_storage::ShardCheck::Fast)
        })
        .await
        .map_err(|e| self.invalid(format!("hashing shard {n} of {label}: {e}")))?;
        if let Err((expected, actual)) = checked {
            return Err(self.invalid(format!(
                "shard {n} of {label} (`{shown}`) does not hold the bytes the manifest names \
                 (checksum {actual}, manifest {expected}): it was replaced after the dataset was \
                 written; re-ingest the dataset"
            )));
        }
        records
            .put(&record, stamp.into_bytes())
            .await
            .map_err(cache_io)?;
        Ok(true)
    }
}

impl RowSource for StorageSource {
    fn list(&self) -> BoxFuture<'_, Result<Vec<RepInfo>, SourceError>> {
        Box::pin(async move {
            Ok(self
                .dataset
                .representations()
                .iter()
                .map(|r| RepInfo {
                    key: results_key(&r.key),
                    // A tokens layer is a one-row image whose positions are its tokens: the
                    // conv methods fold and pool then fold or average its tokens.
                    shape: match r.layout {
                        svcca_storage::Layout::Tokens => [&[1][..], r.item_shape()].concat(),
                        _ => r.item_shape().to_vec(),
                    },
                    datapoints: r.rows() as u64,
                    checksum: r.content_checksum(),
                    depth: Some(r.depth),
                    layout: Some(r.layout.as_str().to_string()),
                })
                .collect())
        })
    }

    fn read_rows<'a>(
        &'a self,
        key: &'a RepresentationKey,
        start: u64,
        end: u64,
    ) -> BoxFuture<'a, Result<Rows, SourceError>> {
        use futures::StreamExt;
        Box::pin(async move {
            let rep = self
                .index
                .get(key)
                .map(|&i| &self.dataset.representations()[i])
                .ok_or_else(|| SourceError::Invalid {
                    url: self.url.clone(),
                    message: format!("no representation {} in the manifest", key.label()),
                })?;
            // The shape is the manifest's claim: refuse one its shards cannot hold before a
            // buffer is sized by it.
            rep.check_size().map_err(|e| from_storage(&self.url, e))?;
            let cols = rep.row_len();
            let rows = end.saturating_sub(start) as usize;
            let mut blocks = self.dataset.row_blocks(rep, start as usize..end as usize);
            let mut pieces = Vec::new();
            while let Some(block) = blocks.next().await {
                pieces.push(block.map_err(|e| from_storage(&self.url, e))?);
            }
            let data = RowValues(pieces);
            Ok(Rows { data, rows, cols })
        })
    }

    /// Every shard's size is checked against the manifest, and its SHA-256 too unless the
    /// record of an earlier check (kept in `records` under `verified/`) names the same size,
    /// modification time and ETag: the same test `make` and git's index rely on, which an
    /// in-place rewrite, a copy or a rename over the shard all fail.
    fn verify<'a>(
        &'a self,
        keys: &'a [RepresentationKey],
        records: &'a Store,
    ) -> BoxFuture<'a, Result<VerifyReport, SourceError>> {
        use futures::StreamExt;
        Box::pin(async move {
            let mut shards = Vec::new();
            for key in keys {
                let Some(&i) = self.index.get(key) else {
                    continue;
                };
                let rep = &self.dataset.representations()[i];
                for (n, entry) in rep.shards.iter().enumerate() {
                    shards.push((key.label(), n, entry));
                }
            }
            let checks: Vec<_> = shards
                .into_iter()
                .map(|(label, n, entry)| self.verify_shard(records, label, n, entry))
                .collect();
            let checks = futures::stream::iter(checks);
            let mut report = VerifyReport::default();
            let mut checks = checks.buffer_unordered(crate::cache::REQUESTS_IN_FLIGHT);
            while let Some(done) = checks.next().await {
                if done? {
                    report.hashed += 1;
                } else {
                    report.unchanged += 1;
                }
            }
            Ok(report)
        })
    }
}
