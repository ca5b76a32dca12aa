//! Dataset URLs → object stores.
//!
//! | URL | store |
//! |---|---|
//! | `/abs/path`, `rel/path`, `file:///abs/path` | local filesystem |
//! | `s3://bucket/prefix` | AWS S3 or any S3-compatible server (path-style requests) |
//! | `gs://bucket/prefix` | Google Cloud Storage |
//! | `az://container/prefix`, `abfs[s]://...`, `azure://...` | Azure Blob Storage |
//! | `memory://name/prefix` | an in-process store shared by name (tests, embedding) |
//!
//! Cloud stores are configured from the standard environment variables (`AWS_*`, `GOOGLE_*`,
//! `AZURE_*`), for example `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT` (S3-compatible servers such as SeaweedFS or MinIO) and `AWS_ALLOW_HTTP=true`
//! (plain-HTTP endpoints). Credentials come from the platform, never from flags.
//!
//! Credentials follow each cloud's default chain, as object_store resolves it: keys in the
//! environment, then the platform's identity — IRSA's web identity token
//! (`AWS_WEB_IDENTITY_TOKEN_FILE`), ECS and EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_*`),
//! Azure workload identity (`AZURE_FEDERATED_TOKEN_FILE`), a service account file
//! (`GOOGLE_APPLICATION_CREDENTIALS`) — and last the instance metadata service (an EC2 instance
//! profile, GKE Workload Identity or a GCE service account, an Azure managed identity). A store
//! for which none of these exists is refused up front with [`StorageError::MissingCredentials`],
//! naming what was tried, rather than failing later on a metadata endpoint that is not there:
//! the metadata service counts as present when a TCP connection to it opens within
//! [`METADATA_PROBE_TIMEOUT`] (looked for once per process, and only when nothing else is set;
//! see [`Metadata`]). `SVCCA_USE_INSTANCE_CREDENTIALS=1` skips that look.
//!
//! Cloud stores never wait forever on an endpoint that accepts connections but does not answer:
//! `SVCCA_STORE_CONNECT_TIMEOUT` (seconds to connect, default 10), `SVCCA_STORE_TIMEOUT`
//! (seconds for one request, body included, default 60) and `SVCCA_STORE_RETRY_TIMEOUT`
//! (seconds after which transient failures are no longer retried, default twice
//! `SVCCA_STORE_TIMEOUT`) bound every operation; see [`Remote`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::path::Path as StorePath;

use crate::StorageError;
use crate::error::{is_timeout, is_transient};

/// A snapshot of the environment variables store configuration reads, and whether the cloud's
/// instance metadata service may be looked for. Tests build one by hand (no metadata service:
/// nothing is probed); [`Env::from_process`] reads the real environment and probes when needed.
#[derive(Debug, Clone, Default)]
pub struct Env(pub BTreeMap<String, String>, pub Metadata);

/// Whether the cloud's instance metadata service (the last link of every cloud's credential
/// chain) is there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Metadata {
    /// Taken as absent, without looking (an [`Env`] built by hand, tests).
    #[default]
    Absent,
    /// Taken as present (tests of the checks).
    Present,
    /// Looked for when a credential check needs it: a TCP connection to `169.254.169.254:80`
    /// (where EC2, GKE, GCE and Azure all serve it) that opens within
    /// [`METADATA_PROBE_TIMEOUT`]. The answer is kept for the life of the process.
    Probe,
}

/// How long the metadata service is waited for when looked for.
pub const METADATA_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

const METADATA_ADDR: ([u8; 4], u16) = ([169, 254, 169, 254], 80);

impl Metadata {
    fn present(self) -> bool {
        match self {
            Metadata::Absent => false,
            Metadata::Present => true,
            Metadata::Probe => {
                static FOUND: OnceLock<bool> = OnceLock::new();
                *FOUND.get_or_init(|| {
                    let addr = std::net::SocketAddr::from(METADATA_ADDR);
                    std::net::TcpStream::connect_timeout(&addr, METADATA_PROBE_TIMEOUT).is_ok()
                })
            }
        }
    }
}

impl Env {
    pub fn from_process() -> Self {
        Env(std::env::vars().collect(), Metadata::Probe)
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.1 = metadata;
        self
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn truthy(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    }
}

/// Seconds to connect to a cloud store's endpoint, unless `SVCCA_STORE_CONNECT_TIMEOUT` says.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds for one request (until its body is read), unless `SVCCA_STORE_TIMEOUT` says.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How a cloud store is reached and how long it is waited for. Every operation on it (all
/// attempts together) ends within about `retry_timeout + request_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The endpoint requests go to, for messages.
    pub endpoint: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// No new attempt starts this long after an operation's first one.
    pub retry_timeout: Duration,
}

impl Remote {
    /// Timeouts from `SVCCA_STORE_CONNECT_TIMEOUT`, `SVCCA_STORE_TIMEOUT` and
    /// `SVCCA_STORE_RETRY_TIMEOUT` (whole or fractional seconds, greater than zero).
    pub fn from_env(endpoint: String, env: &Env) -> Result<Remote, StorageError> {
        let connect_timeout =
            seconds(env, "SVCCA_STORE_CONNECT_TIMEOUT")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let request_timeout =
            seconds(env, "SVCCA_STORE_TIMEOUT")?.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let retry_timeout =
            seconds(env, "SVCCA_STORE_RETRY_TIMEOUT")?.unwrap_or(request_timeout * 2);
        Ok(Remote {
            endpoint,
            connect_timeout,
            request_timeout,
            retry_timeout,
        })
    }

    fn client_options(&self) -> object_store::ClientOptions {
        object_store::ClientOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
    }

    /// The cloud client's own retries stop when ours would, so that the two never multiply.
    fn retry_config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            retry_timeout: self.retry_timeout,
            ..Default::default()
        }
    }
}

fn seconds(env: &Env, name: &'static str) -> Result<Option<Duration>, StorageError> {
    let Some(value) = env.get(name) else {
        return Ok(None);
    };
    let invalid = |reason: &str| StorageError::InvalidSetting {
        name,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let s: f64 = value
        .trim()
        .parse()
        .map_err(|_| invalid("expected a number of seconds, e.g. 30 or 2.5"))?;
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
        return Err(invalid("expected seconds greater than 0 and at most 86400"));
    }
    Ok(Some(Duration::from_secs_f64(s)))
}

/// A resolved dataset location: the store and the root prefix inside it.
#[derive(Debug, Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub root: StorePath,
    /// The URL as the user gave it (for messages).
    pub url: String,
    /// The dataset's directory when the store is the local filesystem.
    pub local_dir: Option<std::path::PathBuf>,
    /// Read files by mapping them ([`map_file`]) instead of through `store`: set only where
    /// `store` is the plain local filesystem, not a wrapper around it.
    pub map_files: bool,
    /// Endpoint and timeouts when the store is reached over the network.
    pub remote: Option<Remote>,
}

impl Location {
    /// Path of `relative` (`/`-separated) under the dataset root.
    pub fn child(&self, relative: &str) -> StorePath {
        let mut p = self.root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// A human-readable location of `relative` for error messages.
    pub fn display(&self, relative: &str) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), relative)
    }

    /// The error for a failed operation on `relative` that started at `started`: a timeout of a
    /// remote store names its endpoint and the settings that control the wait.
    pub(crate) fn error(
        &self,
        relative: &str,
        source: object_store::Error,
        started: Instant,
    ) -> StorageError {
        match &self.remote {
            Some(r) if is_timeout(&source) => StorageError::StoreTimeout {
                location: self.display(relative),
                waited: Box::new(crate::error::Waited {
                    endpoint: r.endpoint.clone(),
                    elapsed_s: started.elapsed().as_secs_f64(),
                    request_timeout_s: r.request_timeout.as_secs_f64(),
                    connect_timeout_s: r.connect_timeout.as_secs_f64(),
                    retry_timeout_s: r.retry_timeout.as_secs_f64(),
                }),
                source,
            },
            _ => StorageError::ObjectStore {
                location: self.display(relative),
                source,
            },
        }
    }
}

/// Runs `op` on `relative` until it succeeds or fails permanently, with up to `retries` extra
/// attempts after transient errors (exponential backoff from `backoff`). On a remote store no
/// attempt starts after its retry timeout, so an unresponsive endpoint fails in bounded time.
pub(crate) async fn retrying<T, Fut>(
    location: &Location,
    relative: &str,
    retries: u32,
    backoff: Duration,
    mut op: impl FnMut() -> Fut,
) -> Result<T, StorageError>
where
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let delay = backoff.saturating_mul(2u32.saturating_pow(attempt));
        let in_time = location
            .remote
            .as_ref()
            .is_none_or(|r| started.elapsed() + delay < r.retry_timeout);
        if !(is_transient(&e) && attempt < retries && in_time) {
            return Err(location.error(relative, e, started));
        }
        tracing::warn!(location = %location.display(relative), attempt, error = %e, "transient store error, retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

fn memory_stores() -> &'static Mutex<BTreeMap<String, Arc<dyn ObjectStore>>> {
    static STORES: OnceLock<Mutex<BTreeMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Resolves a dataset URL with the process environment.
pub fn resolve(url: &str) -> Result<Location, StorageError> {
    resolve_with_env(url, &Env::from_process())
}

/// Resolves a dataset URL. `create_local` makes a missing local directory (for ingest).
pub fn resolve_with_env(url: &str, env: &Env) -> Result<Location, StorageError> {
    resolve_inner(url, env, false)
}

/// As [`resolve`], creating the local directory if the URL is a local path that does not exist.
pub fn resolve_for_write(url: &str, env: &Env) -> Result<Location, StorageError> {
    resolve_inner(url, env, true)
}

fn resolve_inner(url: &str, env: &Env, create_local: bool) -> Result<Location, StorageError> {
    let invalid = |reason: String| StorageError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let scheme = url.find("://").map(|i| url[..i].to_ascii_lowercase());
    let Some(scheme) = scheme else {
        return local(std::path::Path::new(url), url, create_local);
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let prefix =
        |p: &str| StorePath::parse(p.trim_matches('/')).map_err(|e| invalid(e.to_string()));
    match scheme.as_str() {
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|_| invalid("not an absolute local path".into()))?;
            local(&path, url, create_local)
        }
        "memory" => {
            let name = parsed.host_str().unwrap_or("").to_string();
            let store = memory_stores()
                .lock()
                .expect("memory store registry")
                .entry(name)
                .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()))
                .clone();
            Ok(Location {
                store,
                root: prefix(parsed.path())?,
                url: url.to_string(),
                local_dir: None,
                map_files: false,
                remote: None,
            })
        }
        "s3" | "s3a" => {
            check_aws_credentials(url, env)?;
            let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|k| env.get(k))
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let region = env
                        .get("AWS_REGION")
                        .or_else(|| env.get("AWS_DEFAULT_REGION"))
                        .unwrap_or("us-east-1");
                    format!("https://s3.{region}.amazonaws.com")
                });
            let remote = Remote::from_env(endpoint, env)?;
            // Client options first: the AWS_* settings below (AWS_ALLOW_HTTP, ...) amend them.
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_client_options(remote.client_options())
                .with_retry(remote.retry_config());
            for (k, v) in &env.0 {
                if k.starts_with("AWS_")
                    && let Ok(key) = k.to_ascii_lowercase().parse()
                {
                    b = b.with_config(key, v);
                }
            }
            // S3-compatible servers (SeaweedFS, MinIO) want path-style requests; AWS accepts them.
            let store = b
                .with_url(url)
                .with_virtual_hosted_style_request(env.truthy("AWS_VIRTUAL_HOSTED_STYLE_REQUEST"))
                .build()
                .map_err(|source| StorageError::StoreConfig {
                    url: url.into(),
                    source,
                })?;
            Ok(Location {
                store: Arc::new(store),
                root: prefix(parsed.path())?,
                url: url.into(),
                local_dir: None,
                map_files: false,
                remote: Some(remote),
            })
        }
        "gs" => {
            check_gcp_credentials(url, env)?;
            let remote = Remote::from_env("https://storage.googleapis.com".into(), env)?;
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_client_options(remote.client_options())
                .with_retry(remote.retry_config());
            for (k, v) in &env.0 {
                if k.starts_with("GOOGLE_")
                    && let Ok(key) = k.to_ascii_lowercase().parse()
                {
                    b = b.with_config(key, v);
                }
            }
            if let Some(sa) = env.get("SERVICE_ACCOUNT") {
                b = b.with_service_account_path(sa);
            }
            let store = b
                .with_url(url)
                .build()
                .map_err(|source| StorageError::StoreConfig {
                    url: url.into(),
                    source,
                })?;
            Ok(Location {
                store: Arc::new(store),
                root: prefix(parsed.path())?,
                url: url.into(),
                local_dir: None,
                map_files: false,
                remote: Some(remote),
            })
        }
        "az" | "abfs" | "abfss" | "azure" | "adl" => {
            check_azure_credentials(url, env)?;
            let endpoint = match env.get("AZURE_STORAGE_ACCOUNT_NAME") {
                Some(account) => format!("https://{account}.blob.core.windows.net"),
                None => format!("the Azure Blob Storage account of {url}"),
            };
            let remote = Remote::from_env(endpoint, env)?;
            let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                .with_client_options(remote.client_options())
                .with_retry(remote.retry_config());
            for (k, v) in &env.0 {
                if k.starts_with("AZURE_")
                    && let Ok(key) = k.to_ascii_lowercase().parse()
                {
                    b = b.with_config(key, v);
                }
            }
            let store = b
                .with_url(url)
                .build()
                .map_err(|source| StorageError::StoreConfig {
                    url: url.into(),
                    source,
                })?;
            Ok(Location {
                store: Arc::new(store),
                root: prefix(parsed.path())?,
                url: url.into(),
                local_dir: None,
                map_files: false,
                remote: Some(remote),
            })
        }
        _ => Err(StorageError::UnknownScheme {
            url: url.to_string(),
            scheme,
        }),
    }
}

/// `path` made absolute against the working directory, with `.` and `..` resolved lexically
/// (object-store paths cannot hold them). Lexical, like `std::path::absolute` on Windows: a
/// `..` after a symbolic link names the link's parent, as most shells' `cd` does.
pub fn absolute_path(path: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::path::Component;
    let abs = std::path::absolute(path)?;
    let mut out = std::path::PathBuf::new();
    for part in abs.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn local(path: &std::path::Path, url: &str, create: bool) -> Result<Location, StorageError> {
    if create {
        std::fs::create_dir_all(path).map_err(|source| StorageError::SourceIo {
            path: path.into(),
            source,
        })?;
    }
    let abs = absolute_path(path).map_err(|source| StorageError::SourceIo {
        path: path.into(),
        source,
    })?;
    // The filesystem store is rooted at `/` so that paths under the dataset are plain children;
    // `from_absolute_path` percent-encodes what object_store paths cannot hold.
    let root = StorePath::from_absolute_path(&abs).map_err(|e| StorageError::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Location {
        store: Arc::new(object_store::local::LocalFileSystem::new()),
        root,
        url: url.to_string(),
        local_dir: Some(abs),
        map_files: true,
        remote: None,
    })
}

/// The bytes of the local file at `location` (an object store path under the filesystem root),
/// mapped rather than read: a task reads tens of MB per shard, and reading them copied every
/// byte into fresh memory (zeroed first, then faulted in) on every read. `Ok(None)` when there
/// is no file there, or a directory, as the object store says; other failures are the store's
/// `Generic` errors around the `io::Error`, which names the file and keeps its kind.
pub fn map_file(location: &StorePath) -> object_store::Result<Option<bytes::Bytes>> {
    map_local_file(location).map_err(|source| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    })
}

fn map_local_file(location: &StorePath) -> std::io::Result<Option<bytes::Bytes>> {
    use std::io::ErrorKind;
    let path = object_store::local::LocalFileSystem::new()
        .path_to_filesystem(location)
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
    // The error keeps its kind (whether running again can help is decided by it) and names
    // the file, as the object store's own errors do.
    let named = |what: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(named("unable to open file", e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| named("unable to read the metadata of", e))?;
    if meta.is_dir() {
        return Ok(None);
    }
    if meta.len() == 0 {
        return Ok(Some(bytes::Bytes::new()));
    }
    // SAFETY: a mapped file that shrinks while mapped faults on access. svcca never rewrites a
    // shard or a cache entry in place (object store writes go to a temporary file renamed over
    // the old one, whose mapping stays intact), and every shard read checks its size and CRC.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| named("unable to map file", e))?;
    Ok(Some(bytes::Bytes::from_owner(map)))
}

const INSTANCE: &str = "SVCCA_USE_INSTANCE_CREDENTIALS";

/// The last link of every chain: the instance metadata service, unless set aside. Looked for
/// only once the environment offered nothing (see [`Metadata`]).
fn instance_metadata(env: &Env) -> bool {
    env.truthy(INSTANCE) || env.1.present()
}

/// What every refusal says was tried last.
fn metadata_tried(env: &Env, what: &str) -> String {
    let outcome = match env.1 {
        Metadata::Probe => format!("no answer within {} ms", METADATA_PROBE_TIMEOUT.as_millis()),
        _ => "not looked for".into(),
    };
    format!("{what} at 169.254.169.254 ({outcome})")
}

fn check_aws_credentials(url: &str, env: &Env) -> Result<(), StorageError> {
    let ok = (env.has("AWS_ACCESS_KEY_ID") && env.has("AWS_SECRET_ACCESS_KEY"))
        || (env.has("AWS_WEB_IDENTITY_TOKEN_FILE") && env.has("AWS_ROLE_ARN"))
        || env.has("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || env.has("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || env.truthy("AWS_SKIP_SIGNATURE");
    if ok {
        return Ok(());
    }
    // A half-set pair is a mistake to name, not a reason to fall back on the instance.
    if env.has("AWS_ACCESS_KEY_ID") {
        return Err(StorageError::MissingCredentials {
            url: url.into(),
            hint: "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
        });
    }
    if instance_metadata(env) {
        return Ok(());
    }
    let profile = if env.has("AWS_PROFILE") {
        " (AWS_PROFILE files are not read: `eval $(aws configure export-credentials --format env)` exports them)"
    } else {
        ""
    };
    Err(StorageError::MissingCredentials {
        url: url.into(),
        hint: format!(
            "tried AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY{profile}, IRSA's \
             AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, ECS / EKS Pod Identity's \
             AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI, and {}; set one of them (plus \
             AWS_ENDPOINT and AWS_ALLOW_HTTP=true for an S3-compatible server), or \
             AWS_SKIP_SIGNATURE=true for a public bucket",
            metadata_tried(env, "the EC2 instance metadata service")
        ),
    })
}

fn check_gcp_credentials(url: &str, env: &Env) -> Result<(), StorageError> {
    let adc = env
        .get("HOME")
        .map(|h| {
            std::path::Path::new(h).join(".config/gcloud/application_default_credentials.json")
        })
        .is_some_and(|p| p.is_file());
    let ok = [
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SERVICE_ACCOUNT",
        "GOOGLE_BEARER_TOKEN",
    ]
    .iter()
    .any(|k| env.has(k))
        || env.truthy("GOOGLE_SKIP_SIGNATURE")
        || adc;
    if ok || instance_metadata(env) {
        return Ok(());
    }
    Err(StorageError::MissingCredentials {
        url: url.into(),
        hint: format!(
            "tried GOOGLE_APPLICATION_CREDENTIALS, GOOGLE_SERVICE_ACCOUNT_KEY (or _PATH), \
             gcloud's application default credentials (~/.config/gcloud/\
             application_default_credentials.json: `gcloud auth application-default login`), \
             and {}; set one of them, or run where GKE Workload Identity or a GCE service \
             account serves tokens",
            metadata_tried(env, "the GCE/GKE metadata server")
        ),
    })
}

fn check_azure_credentials(url: &str, env: &Env) -> Result<(), StorageError> {
    let ok = [
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_MASTER_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_TOKEN",
        "AZURE_FEDERATED_TOKEN_FILE",
    ]
    .iter()
    .any(|k| env.has(k))
        || (env.has("AZURE_CLIENT_SECRET") || env.has("AZURE_STORAGE_CLIENT_SECRET"))
        || env.truthy("AZURE_STORAGE_USE_EMULATOR")
        || env.truthy("AZURE_USE_AZURE_CLI")
        || env.truthy("AZURE_SKIP_SIGNATURE");
    if ok || instance_metadata(env) {
        return Ok(());
    }
    Err(StorageError::MissingCredentials {
        url: url.into(),
        hint: format!(
            "tried AZURE_STORAGE_ACCOUNT_KEY and AZURE_STORAGE_SAS_TOKEN (with \
             AZURE_STORAGE_ACCOUNT_NAME), workload identity's AZURE_FEDERATED_TOKEN_FILE, a \
             service principal's AZURE_CLIENT_ID / AZURE_CLIENT_SECRET / AZURE_TENANT_ID, \
             AZURE_USE_AZURE_CLI=true, and {}; set one of them",
            metadata_tried(env, "the managed identity endpoint")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_resolve_dot_and_dot_dot() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_path(std::path::Path::new("../a/./b/../c")).unwrap(),
            cwd.parent().unwrap().join("a/c")
        );
        assert_eq!(
            absolute_path(std::path::Path::new("/x/y/../z")).unwrap(),
            std::path::PathBuf::from("/x/z")
        );
        // A dataset named with `..` opens (object-store paths cannot hold `..`).
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let via_parent = dir.path().join("sub/..").join("ds");
        let location = resolve(via_parent.to_str().unwrap());
        assert!(location.is_ok(), "{:?}", location.err());
    }

    #[test]
    fn unknown_scheme() {
        let e = resolve_with_env("ftp://host/x", &Env::default()).unwrap_err();
        assert!(
            matches!(e, StorageError::UnknownScheme { ref scheme, .. } if scheme == "ftp"),
            "{e}"
        );
        assert!(e.to_string().contains("ftp://host/x"));
    }

    #[test]
    fn missing_credentials_are_refused_up_front_naming_what_was_tried() {
        for (url, tried) in [
            (
                "s3://bucket/ds",
                &[
                    "AWS_ACCESS_KEY_ID",
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "EC2 instance metadata service",
                ][..],
            ),
            (
                "gs://bucket/ds",
                &[
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "application_default_credentials.json",
                    "GCE/GKE metadata server",
                ][..],
            ),
            (
                "az://container/ds",
                &[
                    "AZURE_STORAGE_ACCOUNT_KEY",
                    "AZURE_FEDERATED_TOKEN_FILE",
                    "AZURE_CLIENT_SECRET",
                    "managed identity endpoint",
                ][..],
            ),
        ] {
            let e =
                resolve_with_env(url, &Env::default().with("HOME", "/nonexistent")).unwrap_err();
            assert!(
                matches!(e, StorageError::MissingCredentials { .. }),
                "{url}: {e}"
            );
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("no credentials for {url}: tried ")),
                "{text}"
            );
            for name in tried {
                assert!(text.contains(name), "{url}: {name} not named in: {text}");
            }
            assert!(text.contains("169.254.169.254 (not looked for)"), "{text}");
        }
        let e = resolve_with_env("s3://b/ds", &Env::default().with("AWS_ACCESS_KEY_ID", "x"))
            .unwrap_err();
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    }

    #[test]
    fn the_platforms_identity_counts_without_an_extra_variable() {
        let none = Env::default().with("HOME", "/nonexistent");
        // Each cloud's workload identity, from the variables its platform injects.
        for (url, env) in [
            (
                "s3://bucket/ds",
                none.clone()
                    .with("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks/token")
                    .with("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ),
            (
                "s3://bucket/ds",
                none.clone().with(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://169.254.170.23/v1/credentials",
                ),
            ),
            (
                "gs://bucket/ds",
                none.clone().with(
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "/var/run/secrets/google/key.json",
                ),
            ),
            (
                "az://container/ds",
                none.clone()
                    .with("AZURE_STORAGE_ACCOUNT_NAME", "acct")
                    .with(
                        "AZURE_FEDERATED_TOKEN_FILE",
                        "/var/run/secrets/azure/tokens/token",
                    )
                    .with("AZURE_CLIENT_ID", "c")
                    .with("AZURE_TENANT_ID", "t"),
            ),
        ] {
            let checked = match url.split(':').next() {
                Some("s3") => check_aws_credentials(url, &env),
                Some("gs") => check_gcp_credentials(url, &env),
                _ => check_azure_credentials(url, &env),
            };
            assert!(checked.is_ok(), "{url}: {checked:?}");
        }
        // An instance profile, GKE Workload Identity, a managed identity: nothing in the
        // environment, the metadata service answers. No variable of ours is needed.
        let on_instance = none.clone().with_metadata(Metadata::Present);
        assert!(check_aws_credentials("s3://b/ds", &on_instance).is_ok());
        assert!(check_gcp_credentials("gs://b/ds", &on_instance).is_ok());
        assert!(check_azure_credentials("az://c/ds", &on_instance).is_ok());
        // A half-set key pair is named, not papered over by the instance's identity.
        let half = on_instance.with("AWS_ACCESS_KEY_ID", "k");
        let e = check_aws_credentials("s3://b/ds", &half).unwrap_err();
        assert!(
            e.to_string().contains("AWS_SECRET_ACCESS_KEY is not"),
            "{e}"
        );
        // The old switch still skips the look.
        assert!(check_gcp_credentials("gs://b/ds", &none.clone().with(INSTANCE, "1")).is_ok());
    }

    #[test]
    fn the_metadata_service_is_looked_for_only_when_nothing_else_is_set() {
        // Probing is what the process environment asks for; an environment with keys never
        // needs it, so this does not touch the network.
        let keys = Env(BTreeMap::new(), Metadata::Probe)
            .with("AWS_ACCESS_KEY_ID", "k")
            .with("AWS_SECRET_ACCESS_KEY", "s");
        let started = Instant::now();
        assert!(check_aws_credentials("s3://b/ds", &keys).is_ok());
        assert!(started.elapsed() < METADATA_PROBE_TIMEOUT);
        assert_eq!(Env::from_process().1, Metadata::Probe);
        assert_eq!(Env::default().1, Metadata::Absent);
    }

    #[test]
    fn cloud_urls_configure_from_env() {
        let env = Env::default()
            .with("AWS_ACCESS_KEY_ID", "k")
            .with("AWS_SECRET_ACCESS_KEY", "s")
            .with("AWS_ENDPOINT", "http://127.0.0.1:9")
            .with("AWS_ALLOW_HTTP", "true");
        let loc = resolve_with_env("s3://bucket/some/prefix", &env).unwrap();
        assert_eq!(loc.root.as_ref(), "some/prefix");
        assert!(format!("{}", loc.store).contains("bucket"));

        let env = Env::default().with("GOOGLE_SERVICE_ACCOUNT_KEY", "{}");
        // An invalid key is a configuration error, not a panic.
        assert!(resolve_with_env("gs://bucket/p", &env).is_err());

        let env = Env::default()
            .with("AZURE_STORAGE_ACCOUNT_NAME", "acct")
            .with("AZURE_STORAGE_ACCOUNT_KEY", "a2V5");
        let loc = resolve_with_env("az://container/p/q", &env).unwrap();
        assert_eq!(loc.root.as_ref(), "p/q");
        let e = resolve_with_env(
            "az://container/p",
            &Env::default().with("AZURE_STORAGE_ACCOUNT_KEY", "a2V5"),
        )
        .unwrap_err();
        assert!(matches!(e, StorageError::StoreConfig { .. }), "{e}");
    }

    #[test]
    fn local_paths_and_file_urls_agree() {
        let dir = tempfile::tempdir().unwrap();
        let a = resolve_with_env(dir.path().to_str().unwrap(), &Env::default()).unwrap();
        let b =
            resolve_with_env(&format!("file://{}", dir.path().display()), &Env::default()).unwrap();
        assert_eq!(a.root, b.root);
        assert!(resolve_with_env("file://relative/x", &Env::default()).is_err());
    }

    #[test]
    fn mapped_files_read_as_the_store_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| StorePath::from_absolute_path(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join("shard.arrow"), b"some bytes").unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(
            map_file(&at("shard.arrow")).unwrap().as_deref(),
            Some(&b"some bytes"[..])
        );
        assert_eq!(map_file(&at("empty")).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(map_file(&at("missing")).unwrap(), None);
        assert_eq!(
            map_file(&at("sub")).unwrap(),
            None,
            "a directory is not an object"
        );
        // Under a regular file: an error that keeps its kind and names the file.
        let err = map_file(&at("shard.arrow/x")).unwrap_err();
        let io = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("an io::Error inside");
        assert_eq!(io.kind(), std::io::ErrorKind::NotADirectory);
        assert!(
            err.to_string().contains("shard.arrow/x: Not a directory"),
            "{err}"
        );
        // Replacing a file (as every object store write does: a new file renamed over the old)
        // leaves an earlier mapping intact.
        let before = map_file(&at("shard.arrow")).unwrap().unwrap();
        std::fs::write(dir.path().join("next"), b"other bytes!").unwrap();
        std::fs::rename(dir.path().join("next"), dir.path().join("shard.arrow")).unwrap();
        assert_eq!(&before[..], b"some bytes");
        assert_eq!(
            &map_file(&at("shard.arrow")).unwrap().unwrap()[..],
            b"other bytes!"
        );
    }
}
