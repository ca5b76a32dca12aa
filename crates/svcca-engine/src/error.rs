//! The one error type of the cluster half (coordinator, worker, client), and the one place a gRPC
//! status code is read as retryable or not.
//!
//! It sits below all three roles so that none of them imports another for its errors: `client`
//! uses `coordinator` and `worker` (the embedded mode), never the other way round.

use std::net::SocketAddr;

use tonic::Code;

/// What went wrong talking to, or running, a coordinator or worker. [`ClusterError::is_retryable`]
/// says whether the same call could succeed later; the CLI turns it into exit code 11 (retryable)
/// or 10 (not).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid coordinator URL `{url}`: {message}")]
    InvalidUrl { url: String, message: String },
    #[error("invalid configuration: {message}")]
    InvalidConfig { message: String },
    #[error("token file {}: {message}", path.display())]
    TokenFile {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("TLS {what} {}: {message}", path.display())]
    TlsFile {
        path: std::path::PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("invalid TLS configuration: {message}")]
    TlsConfig { message: String },
    #[error(
        "refusing to listen on {addr} without authentication: anyone who reaches that port could \
         submit jobs and register workers. Give --auth-token-file and --worker-token-file, listen \
         on a loopback address, or pass --insecure to accept that"
    )]
    InsecureListen { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the gRPC server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("{rpc} to the coordinator at {url} failed ({code:?}): {message}")]
    Rpc {
        rpc: &'static str,
        url: String,
        code: tonic::Code,
        message: String,
    },
    #[error("the coordinator at {url} refused this worker: {message}")]
    Refused { url: String, message: String },
    #[error("job {job_id} failed: {message}")]
    JobFailed {
        job_id: String,
        message: String,
        retryable: bool,
    },
    #[error("job {job_id} was cancelled")]
    JobCancelled { job_id: String },
    #[error("the coordinator at {url} closed the watch of job {job_id} before the job ended")]
    WatchEnded { url: String, job_id: String },
    #[error("the coordinator's job records at {url}: {message}")]
    StateStore { url: String, message: String },
    #[error(
        "job {job_id} is unknown to the coordinator at {url}: it restarted and forgot the job (start \
         it with --state to keep jobs across restarts); submit the job again, it resumes from its \
         stored results"
    )]
    JobForgotten { url: String, job_id: String },
}

impl ClusterError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ClusterError::InvalidUrl { .. }
            | ClusterError::InvalidConfig { .. }
            | ClusterError::TokenFile { .. }
            | ClusterError::TlsFile { .. }
            | ClusterError::TlsConfig { .. }
            | ClusterError::InsecureListen { .. }
            | ClusterError::Bind { .. }
            | ClusterError::Refused { .. }
            | ClusterError::JobCancelled { .. } => false,
            ClusterError::Serve { .. }
            | ClusterError::WatchEnded { .. }
            | ClusterError::StateStore { .. }
            | ClusterError::JobForgotten { .. } => true,
            ClusterError::Rpc { code, .. } => code_is_retryable(*code),
            ClusterError::JobFailed { retryable, .. } => *retryable,
        }
    }

    pub(crate) fn rpc(rpc: &'static str, url: &str, status: &tonic::Status) -> Self {
        ClusterError::Rpc {
            rpc,
            url: url.to_string(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// Whether an RPC that failed with `code` may succeed if tried again.
pub fn code_is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            // A connection that breaks mid-call surfaces as UNKNOWN in tonic.
            | Code::Unknown
            | Code::Internal
    )
}

/// An error and its chain of sources on one line (tonic's transport errors hide the cause in
/// `source()`).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
