//! Content-keyed storage of intermediate results, for resume and incremental sweeps.
//!
//! Everything a sweep computes that can be reused lives under the cache URL (default
//! `<output>.cache`, beside the output: see [`crate::spec`]) at a key derived from *what it was
//! computed from*, never from the job that computed it:
//!
//! - `moments/<content>/<start>-<end>.bin`: a representation's moments over one row range, and
//!   `moments/<content>/all.bin` merged over every row (pass 1; a job that reads each
//!   representation in one range stores only `all.bin`). `<content>` hashes the
//!   representation's checksum, shape and the row transform (conv method).
//! - `z/<basis>/<start>-<end>.bin`: the whitened projection `Z` (rows × k, f64, column-major) of
//!   one row range. `<basis>` hashes `<content>` with every setting that changes the whitening
//!   (metric family, keep rule, mode).
//! - `pairs/<hash>.json`: one stored comparison, keyed by both sides' bases and the metric.
//! - `partials/<hash>.bin`: large task outputs referenced from a `TaskOutput`.
//!
//! A later sweep that finds an entry uses it instead of reading raw shards; an entry is written
//! once, complete (object stores' `put` is atomic), so a crashed job leaves no half entries.
//! On a `file://` cache, entries are read by mapping the file (never rewritten in place: a write
//! renames a new file over the old one).

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use svcca_core::moments::MomentParts;
use svcca_core::{Mode, WhiteningParts};

/// A failure reading or writing the cache or the output location.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("`{url}` is not a usable object-store URL or path: {message}")]
    Url { url: String, message: String },
    #[error("object store error at `{key}`: {source}")]
    Store {
        key: String,
        source: object_store::Error,
    },
    #[error(
        "stored object `{key}` is damaged ({message}); delete it (or the cache folder) and run again"
    )]
    Corrupt { key: String, message: String },
}

impl CacheError {
    /// Object-store failures may pass; a damaged entry will not, nor a local path that cannot
    /// be used (a regular file in the way, no permission, a read-only file system).
    pub fn is_retryable(&self) -> bool {
        match self {
            CacheError::Store { source, .. } => {
                crate::outputs::permanent_io_cause(source).is_none()
            }
            _ => false,
        }
    }
}

/// How many requests to one store a batch keeps in flight (existence checks, pair records, a
/// task's inputs): enough to hide an object store's latency, few enough not to be throttled.
pub const REQUESTS_IN_FLIGHT: usize = 32;

static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes this process has read through [`Store::get`] (caches, outputs, job records) since it
/// started: a counter for metrics.
pub fn bytes_read() -> u64 {
    BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// A folder of an object store, addressed by relative keys.
#[derive(Clone)]
pub struct Store {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    /// A `file://` store: entries are mapped, not read (see `svcca_storage::store::map_file`).
    map_files: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

/// Turns a local path into a `file://` URL; other strings must already be URLs.
pub fn normalise_url(url_or_path: &str) -> Result<url::Url, CacheError> {
    let text = url_or_path.trim();
    let bad = |message: String| CacheError::Url {
        url: text.to_string(),
        message,
    };
    if text.contains("://") || text.starts_with("file:") || text.starts_with("memory:") {
        return url::Url::parse(text).map_err(|e| bad(e.to_string()));
    }
    let absolute = svcca_storage::store::absolute_path(std::path::Path::new(text))
        .map_err(|e| bad(e.to_string()))?;
    url::Url::from_directory_path(&absolute).map_err(|()| bad("not an absolute local path".into()))
}

impl Store {
    /// Opens the object store named by a URL (`file:///...`, `s3://bucket/prefix`, ...) or a
    /// local path. Cloud credentials come from the standard environment variables.
    pub fn open(url_or_path: &str) -> Result<Store, CacheError> {
        let url = normalise_url(url_or_path)?;
        let (store, root) =
            object_store::parse_url_opts(&url, std::env::vars()).map_err(|e| CacheError::Url {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(Store {
            store: Arc::from(store),
            root,
            map_files: url.scheme() == "file",
            url: url.to_string(),
        })
    }

    /// The same store, rooted in a sub-folder.
    pub fn child(&self, prefix: &str) -> Store {
        let mut root = self.root.clone();
        for part in prefix.split('/').filter(|p| !p.is_empty()) {
            root = root.clone().join(part);
        }
        Store {
            store: self.store.clone(),
            root,
            url: format!("{}/{}", self.url.trim_end_matches('/'), prefix),
            map_files: self.map_files,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> Path {
        let mut path = self.root.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// The object at `key`, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        if self.map_files {
            let got = svcca_storage::store::map_file(&self.path(key)).map_err(|source| {
                CacheError::Store {
                    key: key.to_string(),
                    source,
                }
            })?;
            if let Some(bytes) = &got {
                BYTES_READ.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            return Ok(got);
        }
        match self.store.get(&self.path(key)).await {
            Ok(result) => match result.bytes().await {
                Ok(bytes) => {
                    BYTES_READ.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Ok(Some(bytes))
                }
                Err(source) => Err(CacheError::Store {
                    key: key.to_string(),
                    source,
                }),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(CacheError::Store {
                key: key.to_string(),
                source,
            }),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, CacheError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(CacheError::Store {
                key: key.to_string(),
                source,
            }),
        }
    }

    /// Whether each of `keys` is stored, in their order. The requests go out
    /// [`REQUESTS_IN_FLIGHT`] at a time: on an object store each is a round trip of tens of
    /// milliseconds, and the coordinator waits for them while it plans.
    pub async fn exists_many(&self, keys: &[String]) -> Result<Vec<bool>, CacheError> {
        use futures::{StreamExt, TryStreamExt};
        // The futures are made first: a stream that maps with a borrowing closure is not
        // `Send` for every lifetime, which the job driver's boxed futures need.
        let checks: Vec<_> = keys.iter().map(|key| self.exists(key)).collect();
        futures::stream::iter(checks)
            .buffered(REQUESTS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// The objects at `keys` (`None` where there is none), in their order,
    /// [`REQUESTS_IN_FLIGHT`] at a time.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        use futures::{StreamExt, TryStreamExt};
        let reads: Vec<_> = keys.iter().map(|key| self.get(key)).collect();
        futures::stream::iter(reads)
            .buffered(REQUESTS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Writes every entry, [`REQUESTS_IN_FLIGHT`] at a time. On failure some may be written
    /// and others not; each is whole (a `put` is atomic), so writing them all again is safe.
    pub async fn put_many(&self, entries: Vec<(String, Bytes)>) -> Result<(), CacheError> {
        use futures::{StreamExt, TryStreamExt};
        let writes: Vec<_> = entries
            .into_iter()
            .map(|(key, bytes)| async move { self.put(&key, bytes).await })
            .collect();
        futures::stream::iter(writes)
            .buffer_unordered(REQUESTS_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    pub async fn put(&self, key: &str, bytes: impl Into<Bytes>) -> Result<(), CacheError> {
        let payload = PutPayload::from_bytes(bytes.into());
        self.store
            .put(&self.path(key), payload)
            .await
            .map(|_| ())
            .map_err(|source| CacheError::Store {
                key: key.to_string(),
                source,
            })
    }

    /// Writes a file a browser may open straight from the store (a report page, a figure), with
    /// its content type, so that an object store's web endpoint serves `index.html` as a page.
    /// Stores that keep no attributes (a local folder) get the bytes alone.
    pub async fn put_typed(
        &self,
        key: &str,
        bytes: impl Into<Bytes>,
        content_type: &'static str,
    ) -> Result<(), CacheError> {
        let bytes = bytes.into();
        let mut opts = object_store::PutOptions::default();
        opts.attributes.insert(
            object_store::Attribute::ContentType,
            object_store::AttributeValue::from(content_type),
        );
        let typed = self
            .store
            .put_opts(&self.path(key), PutPayload::from_bytes(bytes.clone()), opts)
            .await;
        match typed {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotImplemented { .. }) => self.put(key, bytes).await,
            Err(source) => Err(CacheError::Store {
                key: key.to_string(),
                source,
            }),
        }
    }

    /// The content type of a report file, by its extension.
    pub fn content_type_of(key: &str) -> &'static str {
        match key.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            Some("json") => "application/json",
            Some("csv") => "text/csv; charset=utf-8",
            _ => "application/octet-stream",
        }
    }

    /// Whether any object lies under this folder (one listing request at most).
    pub async fn holds_anything(&self) -> Result<bool, CacheError> {
        use futures::StreamExt;
        match self.store.list(Some(&self.root)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(source)) => Err(CacheError::Store {
                key: String::new(),
                source,
            }),
        }
    }

    /// Deletes every object under `prefix` (a folder, `/`-separated); none is not an error.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), CacheError> {
        use futures::TryStreamExt;
        let store_err = |source| CacheError::Store {
            key: prefix.to_string(),
            source,
        };
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.path(prefix)))
            .try_collect()
            .await
            .map_err(store_err)?;
        for meta in listed {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(store_err(source)),
            }
        }
        Ok(())
    }

    /// The names of the objects directly in folder `prefix` (not in its sub-folders); a folder
    /// that does not exist holds none.
    pub async fn list_names(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let listed = match self
            .store
            .list_with_delimiter(Some(&self.path(prefix)))
            .await
        {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(source) => {
                return Err(CacheError::Store {
                    key: prefix.to_string(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = listed
            .objects
            .iter()
            .filter_map(|meta| meta.location.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(CacheError::Store {
                key: key.to_string(),
                source,
            }),
        }
    }
}

/// A short stable hash of several strings (hex, 128 bits), for content-derived keys and task ids.
pub fn hash_parts(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Hex SHA-256 of bytes, as stored beside cache entries whose readers must check them.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const MOMENTS_MAGIC: &[u8; 8] = b"SVCCAMO1";
const MATRIX_MAGIC: &[u8; 8] = b"SVCCAMX1";

fn push_f64s(out: &mut Vec<u8>, values: &[f64]) {
    let at = out.len();
    out.resize(at + values.len() * 8, 0);
    for (dst, v) in out[at..].chunks_exact_mut(8).zip(values) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn read_f64s(bytes: &[u8], at: usize, count: usize) -> Option<Vec<f64>> {
    let end = at.checked_add(count.checked_mul(8)?)?;
    let slice = bytes.get(at..end)?;
    Some(
        slice
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
    )
}

/// Moments as bytes: magic, `n`, `d`, mean (`d`), co-moment (`d × d`), all little-endian.
pub fn encode_moments(parts: &MomentParts) -> Vec<u8> {
    let d = parts.mean.len();
    let mut out = Vec::with_capacity(24 + 8 * (d + d * d));
    out.extend_from_slice(MOMENTS_MAGIC);
    out.extend_from_slice(&parts.n.to_le_bytes());
    out.extend_from_slice(&(d as u64).to_le_bytes());
    push_f64s(&mut out, &parts.mean);
    push_f64s(&mut out, &parts.comoment);
    out
}

pub fn decode_moments(key: &str, bytes: &[u8]) -> Result<MomentParts, CacheError> {
    let corrupt = |message: &str| CacheError::Corrupt {
        key: key.to_string(),
        message: message.to_string(),
    };
    if bytes.get(..8) != Some(MOMENTS_MAGIC.as_slice()) {
        return Err(corrupt("not a moments file"));
    }
    let n = read_u64(bytes, 8).ok_or_else(|| corrupt("truncated header"))?;
    let d = read_u64(bytes, 16).ok_or_else(|| corrupt("truncated header"))? as usize;
    let expected = d
        .checked_mul(d)
        .and_then(|dd| dd.checked_add(d))
        .and_then(|c| c.checked_mul(8))
        .and_then(|b| b.checked_add(24));
    if expected != Some(bytes.len()) {
        return Err(corrupt("length does not match its dimension"));
    }
    let mean = read_f64s(bytes, 24, d).ok_or_else(|| corrupt("truncated mean"))?;
    let comoment =
        read_f64s(bytes, 24 + 8 * d, d * d).ok_or_else(|| corrupt("truncated co-moment"))?;
    Ok(MomentParts { n, mean, comoment })
}

const WHITENING_MAGIC: &[u8; 8] = b"SVCCAWH1";

/// The small fields of a whitening, stored as JSON between the header and the f64 arrays.
#[derive(serde::Serialize, serde::Deserialize)]
struct WhiteningHeader {
    mode: String,
    n: u64,
    d: usize,
    dims: usize,
    kept_neurons: Vec<usize>,
    dropped_neurons: Vec<usize>,
    spectrum: Vec<f64>,
    reduced_dims: usize,
    warnings: Vec<String>,
}

/// A whitening as bytes: magic, JSON header length, JSON header, mean (`d`), `W` (`d × k`,
/// column-major). The driver derives each whitening once and workers read it, so both use the
/// very same matrix and no worker repeats the eigendecomposition.
pub fn encode_whitening(parts: &WhiteningParts) -> Vec<u8> {
    let header = WhiteningHeader {
        mode: parts.mode.to_string(),
        n: parts.n,
        d: parts.mean.len(),
        dims: parts.dims,
        kept_neurons: parts.kept_neurons.clone(),
        dropped_neurons: parts.dropped_neurons.clone(),
        spectrum: parts.spectrum.clone(),
        reduced_dims: parts.reduced_dims,
        warnings: parts.warnings.clone(),
    };
    let json = serde_json::to_vec(&header).expect("plain data serialises");
    let mut out =
        Vec::with_capacity(16 + json.len() + 8 * (parts.mean.len() + parts.transform.len()));
    out.extend_from_slice(WHITENING_MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    push_f64s(&mut out, &parts.mean);
    push_f64s(&mut out, &parts.transform);
    out
}

pub fn decode_whitening(key: &str, bytes: &[u8]) -> Result<WhiteningParts, CacheError> {
    let corrupt = |message: String| CacheError::Corrupt {
        key: key.to_string(),
        message,
    };
    if bytes.get(..8) != Some(WHITENING_MAGIC.as_slice()) {
        return Err(corrupt("not a whitening file".into()));
    }
    let len = read_u64(bytes, 8).ok_or_else(|| corrupt("truncated header".into()))? as usize;
    let json = bytes
        .get(16..16usize.saturating_add(len))
        .ok_or_else(|| corrupt("truncated header".into()))?;
    let h: WhiteningHeader =
        serde_json::from_slice(json).map_err(|e| corrupt(format!("bad header: {e}")))?;
    let mode = match h.mode.as_str() {
        "default" => Mode::Default,
        "google-compat" => Mode::GoogleCompat,
        other => return Err(corrupt(format!("unknown mode `{other}`"))),
    };
    let at = 16 + len;
    let values =
        h.d.checked_mul(h.dims)
            .and_then(|t| t.checked_add(h.d))
            .ok_or_else(|| corrupt("dimensions overflow".into()))?;
    if values.checked_mul(8).and_then(|b| b.checked_add(at)) != Some(bytes.len()) {
        return Err(corrupt("length does not match its dimensions".into()));
    }
    let mean = read_f64s(bytes, at, h.d).ok_or_else(|| corrupt("truncated mean".into()))?;
    let transform = read_f64s(bytes, at + 8 * h.d, h.d * h.dims)
        .ok_or_else(|| corrupt("truncated transform".into()))?;
    Ok(WhiteningParts {
        mode,
        n: h.n,
        mean,
        dims: h.dims,
        transform,
        kept_neurons: h.kept_neurons,
        dropped_neurons: h.dropped_neurons,
        spectrum: h.spectrum,
        reduced_dims: h.reduced_dims,
        warnings: h.warnings,
    })
}

/// A dense f64 matrix stored column-major.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix {
    pub rows: usize,
    pub cols: usize,
    /// Column-major, `rows * cols` values.
    pub data: Vec<f64>,
}

impl DenseMatrix {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        DenseMatrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn view(&self) -> faer::MatRef<'_, f64> {
        faer::MatRef::from_column_major_slice(&self.data, self.rows, self.cols)
    }

    pub fn view_mut(&mut self) -> faer::MatMut<'_, f64> {
        faer::MatMut::from_column_major_slice_mut(&mut self.data, self.rows, self.cols)
    }

    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[j * self.rows + i]
    }

    /// Bytes: magic, rows, cols, values column-major, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        encode_matrix(self.view())
    }

    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, CacheError> {
        let (rows, cols) = matrix_shape(key, bytes)?;
        let data =
            read_f64s(bytes, MATRIX_HEADER, rows * cols).ok_or_else(|| CacheError::Corrupt {
                key: key.to_string(),
                message: "truncated values".into(),
            })?;
        Ok(DenseMatrix { rows, cols, data })
    }
}

/// Bytes before a stored matrix's values: magic, rows, cols.
const MATRIX_HEADER: usize = 24;

/// `matrix` (column-major) as [`DenseMatrix::encode`] stores it, without an owned copy first.
pub fn encode_matrix(matrix: faer::MatRef<'_, f64>) -> Vec<u8> {
    let (rows, cols) = (matrix.nrows(), matrix.ncols());
    let mut out = Vec::with_capacity(MATRIX_HEADER + 8 * rows * cols);
    out.extend_from_slice(MATRIX_MAGIC);
    out.extend_from_slice(&(rows as u64).to_le_bytes());
    out.extend_from_slice(&(cols as u64).to_le_bytes());
    for j in 0..cols {
        match matrix.col(j).try_as_col_major() {
            Some(col) => push_f64s(&mut out, col.as_slice()),
            None => {
                for v in matrix.col(j).iter() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    out
}

/// The shape in a stored matrix's header, checked against the bytes' length.
fn matrix_shape(key: &str, bytes: &[u8]) -> Result<(usize, usize), CacheError> {
    let corrupt = |message: &str| CacheError::Corrupt {
        key: key.to_string(),
        message: message.to_string(),
    };
    if bytes.get(..8) != Some(MATRIX_MAGIC.as_slice()) {
        return Err(corrupt("not a matrix file"));
    }
    let rows = read_u64(bytes, 8).ok_or_else(|| corrupt("truncated header"))? as usize;
    let cols = read_u64(bytes, 16).ok_or_else(|| corrupt("truncated header"))? as usize;
    let count = rows
        .checked_mul(cols)
        .ok_or_else(|| corrupt("impossible shape"))?;
    if count
        .checked_mul(8)
        .and_then(|b| b.checked_add(MATRIX_HEADER))
        != Some(bytes.len())
    {
        return Err(corrupt("length does not match its shape"));
    }
    Ok((rows, cols))
}

/// A stored matrix read back. A tile reads each member's `Z` chunk (megabytes) once per tile it
/// belongs to; decoding it into a new vector copied it into fresh memory every time, so where
/// the values in the bytes read are 8-byte aligned and this machine is little-endian (the
/// stored order) they are used where they lie, and decoded only otherwise.
#[derive(Debug, Clone)]
pub struct StoredMatrix {
    pub rows: usize,
    pub cols: usize,
    values: StoredValues,
}

#[derive(Debug, Clone)]
enum StoredValues {
    InPlace(Bytes),
    Decoded(Vec<f64>),
}

impl StoredMatrix {
    pub fn decode(key: &str, bytes: Bytes) -> Result<Self, CacheError> {
        let (rows, cols) = matrix_shape(key, &bytes)?;
        let values = if in_place_f64s(&bytes[MATRIX_HEADER..]).is_some() {
            StoredValues::InPlace(bytes)
        } else {
            StoredValues::Decoded(DenseMatrix::decode(key, &bytes)?.data)
        };
        Ok(StoredMatrix { rows, cols, values })
    }

    /// The values, column-major.
    pub fn values(&self) -> &[f64] {
        match &self.values {
            StoredValues::InPlace(bytes) => {
                in_place_f64s(&bytes[MATRIX_HEADER..]).expect("checked when decoded")
            }
            StoredValues::Decoded(values) => values,
        }
    }

    pub fn view(&self) -> faer::MatRef<'_, f64> {
        faer::MatRef::from_column_major_slice(self.values(), self.rows, self.cols)
    }

    /// Whether the values are read where they lie in the bytes (for tests).
    pub fn is_in_place(&self) -> bool {
        matches!(self.values, StoredValues::InPlace(_))
    }
}

/// Little-endian f64 values viewed in place, when `bytes` is 8-byte aligned on a little-endian
/// machine.
fn in_place_f64s(bytes: &[u8]) -> Option<&[f64]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: every bit pattern of 8 bytes is a valid f64, and `align_to` only reinterprets
    // the aligned middle of the slice, which outlives the result.
    let (head, values, tail) = unsafe { bytes.align_to::<f64>() };
    (head.is_empty() && tail.is_empty()).then_some(values)
}

/// Keys of the cache layout described in the module docs.
pub mod keys {
    pub fn moments_part(content: &str, start: u64, end: u64) -> String {
        format!("moments/{content}/{start}-{end}.bin")
    }
    pub fn moments_all(content: &str) -> String {
        format!("moments/{content}/all.bin")
    }
    pub fn z_chunk(basis: &str, start: u64, end: u64) -> String {
        format!("z/{basis}/{start}-{end}.bin")
    }
    /// A whitening, by the hash of its content and settings (see `SweepDriver::basis_hash`).
    pub fn whitened(basis: &str) -> String {
        format!("whitenings/{basis}.bin")
    }
    pub fn pair(hash: &str) -> String {
        format!("pairs/{hash}.json")
    }
    pub fn partial(hash: &str) -> String {
        format!("partials/{hash}.bin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose every request takes one second of tokio's (paused) clock.
    fn slow_store() -> Store {
        let config = object_store::throttle::ThrottleConfig {
            wait_get_per_call: std::time::Duration::from_secs(1),
            wait_put_per_call: std::time::Duration::from_secs(1),
            ..Default::default()
        };
        let throttled = object_store::throttle::ThrottledStore::new(
            object_store::memory::InMemory::new(),
            config,
        );
        Store {
            store: Arc::new(throttled),
            root: Path::from("cache"),
            url: "memory:///cache".into(),
            map_files: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_of_requests_wait_for_one_round_trip_per_batch_not_per_entry() {
        let store = slow_store();
        let entries: Vec<(String, Bytes)> = (0..REQUESTS_IN_FLIGHT)
            .map(|i| (format!("pairs/{i}.json"), Bytes::from(vec![i as u8])))
            .collect();
        let started = tokio::time::Instant::now();
        store.put_many(entries).await.unwrap();
        // One by one, these writes would take 32 s of the store's time.
        assert_eq!(started.elapsed().as_secs(), 1);

        // Every other key was written; the answers come back in the keys' order.
        let keys: Vec<String> = (0..2 * REQUESTS_IN_FLIGHT)
            .map(|i| format!("pairs/{}.json", 2 * i))
            .collect();
        let started = tokio::time::Instant::now();
        let found = store.exists_many(&keys).await.unwrap();
        assert_eq!(started.elapsed().as_secs(), 2);
        let expected: Vec<bool> = (0..2 * REQUESTS_IN_FLIGHT)
            .map(|i| 2 * i < REQUESTS_IN_FLIGHT)
            .collect();
        assert_eq!(found, expected);
        let started = tokio::time::Instant::now();
        let got = store.get_many(&keys).await.unwrap();
        assert_eq!(started.elapsed().as_secs(), 2);
        for (i, got) in got.iter().enumerate() {
            let expected = (2 * i < REQUESTS_IN_FLIGHT).then(|| vec![2 * i as u8]);
            assert_eq!(got.as_deref(), expected.as_deref(), "{}", keys[i]);
        }
    }

    #[tokio::test]
    async fn typed_puts_keep_their_content_type_and_fall_back_where_none_is_kept() {
        let memory = Arc::new(object_store::memory::InMemory::new());
        let store = Store {
            store: memory.clone(),
            root: Path::from("out"),
            url: "memory:///out".into(),
            map_files: false,
        };
        store
            .put_typed(
                "report/index.html",
                "<html>",
                Store::content_type_of("index.html"),
            )
            .await
            .unwrap();
        let got = memory
            .get(&Path::from("out/report/index.html"))
            .await
            .unwrap();
        assert_eq!(
            got.attributes.get(&object_store::Attribute::ContentType),
            Some(&object_store::AttributeValue::from(
                "text/html; charset=utf-8"
            ))
        );
        assert_eq!(Store::content_type_of("fig01.svg"), "image/svg+xml");

        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(&format!("file://{}", dir.path().display())).unwrap();
        local
            .put_typed(
                "report/fig.png",
                vec![1u8, 2],
                Store::content_type_of("fig.png"),
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("report/fig.png")).unwrap(),
            [1, 2]
        );
    }

    #[tokio::test]
    async fn a_cache_under_a_regular_file_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let store = Store::open(file.join("cache").to_str().unwrap()).unwrap();
        let err = store.put("a/b.bin", vec![1u8]).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
    }

    #[test]
    fn encodings_round_trip_and_reject_damage() {
        let parts = MomentParts {
            n: 7,
            mean: vec![1.0, -2.5],
            comoment: vec![3.0, 0.5, 0.5, 4.0],
        };
        let bytes = encode_moments(&parts);
        assert_eq!(decode_moments("k", &bytes).unwrap(), parts);
        assert!(matches!(
            decode_moments("k", &bytes[..bytes.len() - 1]),
            Err(CacheError::Corrupt { .. })
        ));
        let m = DenseMatrix {
            rows: 2,
            cols: 3,
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        let back = DenseMatrix::decode("m", &m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.get(1, 2), 6.0);
        assert!(DenseMatrix::decode("m", b"SVCCAMX1").is_err());
        assert_ne!(hash_parts(&["ab", "c"]), hash_parts(&["a", "bc"]));
    }

    #[test]
    fn a_whitening_round_trips_bit_for_bit_and_damage_is_reported() {
        let parts = WhiteningParts {
            mode: Mode::GoogleCompat,
            n: 11,
            mean: vec![0.25, -1.0 / 3.0, 7.0],
            dims: 2,
            transform: vec![1.0, 0.1, -0.2, 0.3, std::f64::consts::PI, 1e-300],
            kept_neurons: vec![0, 1, 2],
            dropped_neurons: vec![],
            spectrum: vec![3.0, 2.0, 1e-9],
            reduced_dims: 2,
            warnings: vec!["few datapoints".into()],
        };
        let bytes = encode_whitening(&parts);
        assert_eq!(decode_whitening("w", &bytes).unwrap(), parts);
        for damaged in [
            &bytes[..bytes.len() - 8],
            &bytes[..12],
            b"SVCCAMO1xxxxxxxx".as_slice(),
        ] {
            assert!(matches!(
                decode_whitening("w", damaged),
                Err(CacheError::Corrupt { .. })
            ));
        }
    }

    #[tokio::test]
    async fn a_local_store_puts_gets_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap())
            .unwrap()
            .child("cache");
        assert_eq!(store.get("a/b.bin").await.unwrap(), None);
        store
            .put("a/b.bin", Bytes::from_static(b"xyz"))
            .await
            .unwrap();
        assert!(store.exists("a/b.bin").await.unwrap());
        assert_eq!(
            store.get("a/b.bin").await.unwrap().unwrap().as_ref(),
            b"xyz"
        );
        assert!(dir.path().join("cache/a/b.bin").exists());
    }

    #[test]
    fn stored_matrices_are_read_in_place_when_aligned_and_decoded_otherwise() {
        let mut m = DenseMatrix::zeros(5, 3);
        for (i, v) in m.data.iter_mut().enumerate() {
            *v = i as f64 * 0.37 - 2.0;
        }
        let encoded = encode_matrix(m.view());
        assert_eq!(encoded, m.encode());
        // An 8-byte aligned copy of the bytes, and one a byte off alignment.
        let mut aligned = vec![0u64; encoded.len().div_ceil(8) + 1];
        let base = aligned.as_mut_ptr() as *mut u8;
        for shift in [0usize, 1] {
            // SAFETY: `aligned` holds at least `encoded.len() + 8` bytes.
            let dst = unsafe { std::slice::from_raw_parts_mut(base.add(shift), encoded.len()) };
            dst.copy_from_slice(&encoded);
            let bytes = Bytes::copy_from_slice(dst);
            let got = StoredMatrix::decode("z/x/0-5.bin", bytes.clone()).unwrap();
            assert_eq!((got.rows, got.cols), (5, 3));
            assert_eq!(got.values(), &m.data[..]);
            let in_place = (bytes.as_ptr() as usize + MATRIX_HEADER).is_multiple_of(8);
            assert_eq!(
                got.is_in_place(),
                in_place && cfg!(target_endian = "little")
            );
        }
        // Damaged bytes are refused, in place or not.
        let short = Bytes::copy_from_slice(&encoded[..encoded.len() - 8]);
        let err = StoredMatrix::decode("z/x/0-5.bin", short).unwrap_err();
        assert!(err.to_string().contains("z/x/0-5.bin"), "{err}");
    }
}
