//! Where the job half reads activations: a narrow seam over the storage crate.
//!
//! The planner needs the list of representations (a manifest); executors need rows of one
//! representation by datapoint range. Both go through [`RowSource`], opened per dataset URL by a
//! [`SourceOpener`]. The production opener is [`StorageOpener`] (svcca-storage's Arrow shard
//! datasets over object stores); tests wrap it to count shard reads.

use std::sync::Arc;

use futures::future::BoxFuture;
use svcca_results::RepresentationKey;

use crate::plan::RepInfo;

/// Rows of one representation: row-major `[rows, cols]` f32, `cols` = product of its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
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

fn storage_error(url: &str, e: svcca_storage::StorageError) -> SourceError {
    if e.is_retryable() {
        SourceError::Io {
            url: url.to_string(),
            message: e.to_string(),
        }
    } else {
        SourceError::Invalid {
            url: url.to_string(),
            message: e.to_string(),
        }
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
                .map_err(|e| storage_error(&url, e))?;
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

impl RowSource for StorageSource {
    fn list(&self) -> BoxFuture<'_, Result<Vec<RepInfo>, SourceError>> {
        Box::pin(async move {
            Ok(self
                .dataset
                .representations()
                .iter()
                .map(|r| RepInfo {
                    key: results_key(&r.key),
                    shape: r.item_shape().to_vec(),
                    datapoints: r.rows() as u64,
                    checksum: r.content_checksum(),
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
            let cols = rep.row_len();
            let rows = (end - start) as usize;
            let mut data = Vec::with_capacity(rows * cols);
            let mut blocks = self.dataset.row_blocks(rep, start as usize..end as usize);
            while let Some(block) = blocks.next().await {
                let block = block.map_err(|e| storage_error(&self.url, e))?;
                data.extend_from_slice(block.values());
            }
            Ok(Rows { data, rows, cols })
        })
    }
}
