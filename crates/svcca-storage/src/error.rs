//! The storage crate's error type: one enum, struct variants naming the dataset, representation,
//! shard and row the problem is about, and one place ([`StorageError::is_retryable`]) that says
//! whether running again can help.

use std::path::PathBuf;

use crate::npy::NpyError;

/// How long an operation on a remote store waited before [`StorageError::StoreTimeout`].
#[derive(Debug, Clone, PartialEq)]
pub struct Waited {
    pub endpoint: String,
    pub elapsed_s: f64,
    pub request_timeout_s: f64,
    pub connect_timeout_s: f64,
    pub retry_timeout_s: f64,
}

impl std::fmt::Display for Waited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gave up after {:.1} s; each request may take {} s, connecting {} s, retries stop after {} s",
            self.elapsed_s, self.request_timeout_s, self.connect_timeout_s, self.retry_timeout_s
        )
    }
}

/// Everything that can go wrong reading, writing or resolving a dataset.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    // ---- URLs and stores ----
    #[error(
        "unsupported URL scheme '{scheme}' in {url}; use a plain path, file://, s3://, gs://, az:// (or abfs://), or memory://"
    )]
    UnknownScheme { url: String, scheme: String },
    #[error("invalid dataset URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("no credentials for {url}: {hint}")]
    MissingCredentials { url: String, hint: String },
    #[error("cannot configure the object store for {url}: {source}")]
    StoreConfig {
        url: String,
        source: object_store::Error,
    },
    #[error("object store error at {location}: {source}")]
    ObjectStore {
        location: String,
        source: object_store::Error,
    },
    #[error(
        "the object store at {} did not answer in time for {location} ({waited}): {source}; \
         check that the endpoint is right and reachable, or wait longer by raising SVCCA_STORE_TIMEOUT, \
         SVCCA_STORE_CONNECT_TIMEOUT or SVCCA_STORE_RETRY_TIMEOUT (seconds)",
        waited.endpoint
    )]
    StoreTimeout {
        location: String,
        waited: Box<Waited>,
        source: object_store::Error,
    },
    #[error("{name}={value:?} is invalid: {reason}")]
    InvalidSetting {
        name: &'static str,
        value: String,
        reason: String,
    },

    // ---- manifest ----
    #[error("no dataset at {url}: {manifest} not found (create one with `svcca ingest`)")]
    ManifestNotFound { url: String, manifest: String },
    #[error("manifest {manifest} is invalid: {reason}")]
    ManifestInvalid { manifest: String, reason: String },
    #[error("cannot read the manifest {manifest}: {reason}")]
    ManifestUnreadable { manifest: String, reason: String },
    #[error(
        "representation {representation}: shape {shape:?} cannot be read: {reason}; the manifest is \
         inconsistent: re-ingest the representation from its source or correct its shape in the manifest"
    )]
    RepresentationTooLarge {
        representation: String,
        shape: Vec<usize>,
        reason: String,
    },

    // ---- shards ----
    #[error(
        "representation {representation}: shard {shard} ({path}) is missing from the store; \
         re-ingest the dataset (`svcca ingest` writes missing shards again)"
    )]
    ShardMissing {
        representation: String,
        shard: usize,
        path: String,
    },
    #[error(
        "representation {representation}: shard {shard} ({path}) is not a valid Arrow IPC file: {reason}"
    )]
    ShardCorrupt {
        representation: String,
        shard: usize,
        path: String,
        reason: String,
    },
    #[error(
        "representation {representation}: shard {shard} ({path}) has the wrong schema: {reason}"
    )]
    ShardSchema {
        representation: String,
        shard: usize,
        path: String,
        reason: String,
    },
    #[error(
        "representation {representation}: shard {shard} ({path}) has checksum {actual}, the manifest says {expected}; \
         the shard was changed or damaged after it was written: re-ingest the dataset (`svcca ingest` \
         rewrites damaged shards)"
    )]
    ShardChecksum {
        representation: String,
        shard: usize,
        path: String,
        expected: String,
        actual: String,
    },
    #[error(
        "representation {representation}: shard {shard} ({path}) is {actual} bytes but the manifest says {expected}; \
         the shard (or the manifest) changed after ingest: re-ingest the representation from its source with \
         `svcca ingest` (it rewrites damaged shards), or correct the shard's \"bytes\" in the manifest if only that is wrong"
    )]
    ShardSize {
        representation: String,
        shard: usize,
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "representation {representation}: shard {shard} ({path}) holds {actual} rows, the manifest says {expected}"
    )]
    ShardRows {
        representation: String,
        shard: usize,
        path: String,
        expected: usize,
        actual: usize,
    },
    #[error(
        "representation {representation}: shard {shard} has a null at datapoint {row}; activations must not be null"
    )]
    NullValue {
        representation: String,
        shard: usize,
        row: usize,
    },
    #[error(
        "representation {representation}: non-finite value ({value}) at datapoint {row}, flat column {col}{}",
        shard.map(|s| format!(" (shard {s})")).unwrap_or_default()
    )]
    NonFinite {
        representation: String,
        shard: Option<usize>,
        row: usize,
        col: usize,
        value: f64,
    },
    #[error("representation {representation}: the read of shard {shard} was cancelled")]
    Cancelled {
        representation: String,
        shard: usize,
    },
    #[error(
        "representation {representation}: requested rows {start}..{end} but it has {rows} datapoints"
    )]
    RowRange {
        representation: String,
        start: usize,
        end: usize,
        rows: usize,
    },
    #[error("representation {representation}: requested shards {start}..{end} but it has {shards}")]
    ShardRange {
        representation: String,
        start: usize,
        end: usize,
        shards: usize,
    },

    // ---- ingest ----
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error("cannot read {}: {source}", path.display())]
    SourceIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid {format} file: {reason}", path.display())]
    SourceCorrupt {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error(
        "{}: tensor '{tensor}' has dtype {dtype}; only F32, F64, F16 and BF16 can be ingested",
        path.display()
    )]
    UnsupportedTensorDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("invalid --pattern '{pattern}': {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("{}: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{representation} comes from both {} and {}", first.display(), second.display())]
    DuplicateRepresentation {
        representation: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("no input under {} matches the pattern '{pattern}'{}", src.display(),
        example.as_ref().map(|e| format!(" (for example {e} does not); pass --pattern to describe your layout")).unwrap_or_default())]
    NoInputs {
        src: PathBuf,
        pattern: String,
        example: Option<String>,
    },
    #[error(
        "representation {representation} ({}) has {actual} datapoints but the probe set has {expected}; \
         every representation of a dataset must cover the same probe set",
        source_path.display()
    )]
    DatapointMismatch {
        representation: String,
        source_path: PathBuf,
        expected: usize,
        actual: usize,
    },
    #[error("{} ({representation}) has shape {shape:?}: {reason}", source_path.display())]
    BadShape {
        representation: String,
        source_path: PathBuf,
        shape: Vec<usize>,
        reason: String,
    },
    #[error(
        "the dataset at {url} already holds different data for {representation}; rerun with --force to replace it"
    )]
    Conflict { url: String, representation: String },
    #[error("probe set mismatch: {reason}")]
    ProbeMismatch { reason: String },
    #[error(
        "{} ({representation}) has shape {shape:?}: its axes may be {}, and .npy/.npz/.safetensors \
         files do not say which; declare the layout with --layout {} (for all files) or \
         --layout 'layer=GLOB:LAYOUT' (for some)",
        source_path.display(),
        choices.iter().map(|l| format!("{} ({})", l.axes_text(), l.as_str())).collect::<Vec<_>>().join(" or "),
        choices.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("|")
    )]
    LayoutRequired {
        representation: String,
        source_path: PathBuf,
        shape: Vec<usize>,
        /// The layouts an array of that many axes may have.
        choices: Vec<crate::manifest::Layout>,
    },
    #[error("{}", no_such_array(path, member.as_deref(), available))]
    NoSuchArray {
        path: PathBuf,
        /// `None`: no name was given and the file holds several arrays.
        member: Option<String>,
        available: Vec<String>,
    },
    #[error("invalid --layout '{text}': {reason}")]
    InvalidLayoutRule { text: String, reason: String },
    #[error("--layer-order{}: {reason}", file.as_ref().map(|f| format!("-file {}", f.display())).unwrap_or_default())]
    LayerOrder {
        file: Option<PathBuf>,
        reason: String,
    },
    #[error("representation {representation}: {reason}")]
    WriteRows {
        representation: String,
        reason: String,
    },

    // ---- selectors ----
    #[error("invalid selector '{text}': {reason}")]
    InvalidSelector { text: String, reason: String },
    #[error("no representation in {url} matches {selector}{}", if available.is_empty() { String::new() } else { format!("; available: {}", available.join(" | ")) })]
    NoMatch {
        url: String,
        selector: String,
        available: Vec<String>,
    },
    #[error("selector {selector} matches {} representations in {url}: {}; add keys to pick one", matches.len(), matches.join(" | "))]
    Ambiguous {
        url: String,
        selector: String,
        matches: Vec<String>,
    },
}

fn no_such_array(path: &std::path::Path, member: Option<&str>, available: &[String]) -> String {
    let p = path.display();
    match (member, available.is_empty()) {
        (Some(m), true) => format!(
            "{p}: a .npy file holds one array; '::{m}' names an array inside an .npz or .safetensors file"
        ),
        (Some(m), false) => format!("{p} has no array '{m}'; it holds: {}", available.join(", ")),
        (None, _) => format!(
            "{p} holds {} arrays ({}); name one as {p}::NAME",
            available.len(),
            available.join(", ")
        ),
    }
}

impl StorageError {
    /// Whether running the same operation again may succeed (network, throttling, a store that
    /// was briefly unavailable). Bad data, bad configuration and missing objects are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::ObjectStore { source, .. } => is_transient(source),
            StorageError::StoreTimeout { .. } => true,
            StorageError::Cancelled { .. } => true,
            StorageError::SourceIo { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            StorageError::Npy(NpyError::Io { source, .. }) => {
                matches!(
                    source.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
                )
            }
            _ => false,
        }
    }
}

/// Object-store failures worth retrying: everything except those that say the request itself is
/// wrong (missing object, no permission, bad configuration, unsupported operation). The local
/// filesystem store reports an unreadable file as a generic error: its I/O cause decides.
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    let local = matches!(
        e,
        E::Generic {
            store: "LocalFileSystem",
            ..
        }
    );
    if local
        && io_cause(e).is_some_and(|k| {
            matches!(
                k,
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidData
            )
        })
    {
        return false;
    }
    !matches!(
        e,
        E::NotFound { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::UnknownConfigurationKey { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
    )
}

/// The kind of the first I/O error in `e`'s chain of causes.
pub(crate) fn io_cause(e: &object_store::Error) -> Option<std::io::ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}

/// Whether an HTTP request in `e`'s chain of causes timed out (connecting or waiting).
pub(crate) fn is_timeout(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<HttpError>()
            && h.kind() == HttpErrorKind::Timeout
        {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cause = c.source();
    }
    false
}
