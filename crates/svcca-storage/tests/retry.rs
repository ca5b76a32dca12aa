//! Transient store errors are retried with backoff; permanent ones are not. A fault-injecting
//! wrapper around the in-memory store fails the first N reads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use svcca_storage::ingest::{IngestConfig, ingest_into};
use svcca_storage::store::{Location, resolve_with_env};
use svcca_storage::{Dataset, Env, ReadOptions, StorageError, ingest};

#[derive(Debug, Clone, Copy)]
enum Fault {
    Transient,
    Denied,
    /// What the local filesystem store reports for a file it may not open.
    Unreadable,
}

#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn ObjectStore>,
    failures_left: AtomicUsize,
    gets: AtomicUsize,
    fault: Fault,
    /// Puts that fail (with `fault`) before puts succeed again; `usize::MAX` for always.
    put_failures_left: AtomicUsize,
    puts: AtomicUsize,
}

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .put_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(match self.fault {
                Fault::Transient => object_store::Error::Generic {
                    store: "flaky",
                    source: "503 slow down (injected)".into(),
                },
                Fault::Denied => object_store::Error::PermissionDenied {
                    path: location.to_string(),
                    source: "access denied (injected)".into(),
                },
                Fault::Unreadable => unreadable(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(match self.fault {
                Fault::Transient => object_store::Error::Generic {
                    store: "flaky",
                    source: "connection reset by peer (injected)".into(),
                },
                Fault::Denied => object_store::Error::PermissionDenied {
                    path: location.to_string(),
                    source: "access denied (injected)".into(),
                },
                Fault::Unreadable => unreadable(),
            });
        }
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn unreadable() -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "Permission denied (os error 13) (injected)",
        )),
    }
}

async fn dataset_in_memory(name: &str) -> Location {
    let src = tempfile::tempdir().unwrap();
    let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/digits/mlp/seed0/step0/h4.npy");
    std::fs::create_dir_all(src.path().join("mlp/seed0/step0")).unwrap();
    std::fs::copy(f, src.path().join("mlp/seed0/step0/h4.npy")).unwrap();
    let url = format!("memory://{name}/ds");
    ingest(
        IngestConfig::new(src.path(), &url)
            .with_pattern("{run}/seed{seed}/step{step}/{layer}.npy")
            .with_shard_rows(200)
            .with_env(Env::default()),
    )
    .await
    .unwrap();
    resolve_with_env(&url, &Env::default()).unwrap()
}

fn flaky(loc: &Location, failures: usize, fault: Fault) -> (Location, Arc<Flaky>) {
    let store = Arc::new(Flaky {
        inner: loc.store.clone(),
        failures_left: AtomicUsize::new(failures),
        gets: AtomicUsize::new(0),
        fault,
        put_failures_left: AtomicUsize::new(0),
        puts: AtomicUsize::new(0),
    });
    (
        Location {
            store: store.clone(),
            root: loc.root.clone(),
            url: loc.url.clone(),
            local_dir: loc.local_dir.clone(),
            // Reads must go through the fault-injecting store.
            map_files: false,
            remote: loc.remote.clone(),
        },
        store,
    )
}

fn options(retries: u32) -> ReadOptions {
    let mut o = ReadOptions::default()
        .with_retries(retries)
        .with_env(Env::default());
    o.retry_backoff = Duration::from_millis(1);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried() {
    let loc = dataset_in_memory("retry-ok").await;
    // Two failures: the manifest read needs three attempts.
    let (flaky_loc, store) = flaky(&loc, 2, Fault::Transient);
    let ds = Dataset::open_at(flaky_loc, options(3)).await.unwrap();
    assert_eq!(store.gets.load(Ordering::SeqCst), 3);
    // Failures in the middle of shard reads are retried too.
    store.failures_left.store(2, Ordering::SeqCst);
    let rep = ds.representations()[0].clone();
    let data = ds.read_all(&rep).await.unwrap();
    assert_eq!(data.len(), 597 * 64);
    assert_eq!(store.gets.load(Ordering::SeqCst), 3 + 3 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_and_the_error_is_retryable() {
    let loc = dataset_in_memory("retry-exhausted").await;
    let (flaky_loc, store) = flaky(&loc, 10, Fault::Transient);
    let e = Dataset::open_at(flaky_loc, options(2)).await.unwrap_err();
    assert!(matches!(e, StorageError::ObjectStore { .. }), "{e}");
    assert!(
        e.is_retryable(),
        "a transient store error is retryable: {e}"
    );
    assert!(e.to_string().contains("manifest.json"), "{e}");
    assert_eq!(store.gets.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_not_retried() {
    let loc = dataset_in_memory("retry-denied").await;
    let (flaky_loc, store) = flaky(&loc, 1, Fault::Denied);
    let e = Dataset::open_at(flaky_loc, options(5)).await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(store.gets.load(Ordering::SeqCst), 1);
}

fn digits_h4_src() -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/digits/mlp/seed0/step0/h4.npy");
    std::fs::create_dir_all(src.path().join("mlp/seed0/step0")).unwrap();
    std::fs::copy(f, src.path().join("mlp/seed0/step0/h4.npy")).unwrap();
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_retries_transient_put_errors() {
    let src = digits_h4_src();
    let url = "memory://ingest-retry/ds";
    let loc = resolve_with_env(url, &Env::default()).unwrap();
    let (flaky_loc, store) = flaky(&loc, 0, Fault::Transient);
    store.put_failures_left.store(2, Ordering::SeqCst);
    let config = IngestConfig::new(src.path(), url)
        .with_pattern("{run}/seed{seed}/step{step}/{layer}.npy")
        .with_shard_rows(50);
    let report = ingest_into(flaky_loc, config.with_env(Env::default()))
        .await
        .unwrap();
    assert_eq!(report.shards_written, 12);
    // 12 shards + the manifest, plus the two failed attempts.
    assert_eq!(store.puts.load(Ordering::SeqCst), 12 + 1 + 2);
    let ds = Dataset::open_at(loc, options(0)).await.unwrap();
    assert_eq!(
        ds.read_all(&ds.representations()[0]).await.unwrap().len(),
        597 * 64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stops_on_a_permanent_put_error_without_a_manifest() {
    let src = digits_h4_src();
    let url = "memory://ingest-denied/ds";
    let loc = resolve_with_env(url, &Env::default()).unwrap();
    let (flaky_loc, store) = flaky(&loc, 0, Fault::Denied);
    store.put_failures_left.store(usize::MAX, Ordering::SeqCst);
    // Tiny shards: the reader runs far ahead of the failing uploads and must be stopped, not hang.
    let config = IngestConfig::new(src.path(), url)
        .with_pattern("{run}/seed{seed}/step{step}/{layer}.npy")
        .with_shard_rows(1)
        .with_env(Env::default());
    let e = tokio::time::timeout(Duration::from_secs(30), ingest_into(flaky_loc, config))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(e, StorageError::ObjectStore { .. }), "{e}");
    assert!(!e.is_retryable());
    assert!(
        store.puts.load(Ordering::SeqCst) < 20,
        "uploads stopped early"
    );
    assert!(matches!(
        Dataset::open_at(loc, options(0)).await,
        Err(StorageError::ManifestNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_manifest_is_neither_retried_nor_a_missing_dataset() {
    let loc = dataset_in_memory("retry-unreadable").await;
    let (flaky_loc, store) = flaky(&loc, 1, Fault::Unreadable);
    let e = Dataset::open_at(flaky_loc, options(5)).await.unwrap_err();
    assert!(matches!(e, StorageError::ManifestUnreadable { .. }), "{e}");
    assert!(!e.is_retryable(), "{e}");
    assert!(
        e.to_string().contains("manifest.json") && e.to_string().contains("Permission denied"),
        "{e}"
    );
    assert_eq!(store.gets.load(Ordering::SeqCst), 1);
}
