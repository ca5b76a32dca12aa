//! What a client or a worker presents to a coordinator, and how it reaches it: a bearer token
//! (sent as `authorization: Bearer TOKEN` on every call), TLS settings, and the message size
//! limit.
//!
//! Tokens are read from files, never from flags or plain environment values, so they stay out of
//! process listings and shell history; their `Debug` form is redacted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use svcca_proto::v1::coordinator_client::CoordinatorClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::error::{ClusterError, error_chain};

/// The metadata key tokens travel under.
pub const AUTHORIZATION: &str = "authorization";

/// The largest gRPC message any svcca service or client sends or accepts unless configured
/// otherwise. Task outputs above 256 KiB go through the object store, not the wire, and job specs
/// are small: 64 MiB leaves room for large task lists while bounding what one call can make a
/// process allocate.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Shortest accepted token: long enough that guessing is hopeless (`openssl rand -hex 32` gives
/// 64 characters).
pub const MIN_TOKEN_LEN: usize = 16;

/// A shared secret. Compared in constant time by the coordinator; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Checks that `text` can be a token: at least [`MIN_TOKEN_LEN`] characters, all visible
    /// ASCII (it travels in an HTTP/2 header).
    pub fn new(text: &str) -> Result<Token, String> {
        if text.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "a token is {} character(s) long; use at least {MIN_TOKEN_LEN} (e.g. the output of \
                 `openssl rand -hex 32`)",
                text.len()
            ));
        }
        if let Some(bad) = text.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "a token holds {bad:?}; tokens are visible ASCII characters without spaces"
            ));
        }
        Ok(Token(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the tokens of a token file: one per line; blank lines and lines starting with `#`
    /// are ignored, as is the trailing newline editors and `kubectl create secret` leave.
    pub fn read_all(path: &Path) -> Result<Vec<Token>, ClusterError> {
        let bad = |message: String| ClusterError::TokenFile {
            path: path.to_path_buf(),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            tokens.push(Token::new(line).map_err(|why| bad(format!("line {}: {why}", n + 1)))?);
        }
        if tokens.is_empty() {
            return Err(bad("it holds no token".into()));
        }
        Ok(tokens)
    }

    /// Reads a client's token file, which must hold exactly one token.
    pub fn read_one(path: &Path) -> Result<Token, ClusterError> {
        let mut tokens = Token::read_all(path)?;
        if tokens.len() > 1 {
            return Err(ClusterError::TokenFile {
                path: path.to_path_buf(),
                message: format!(
                    "it holds {} tokens; a client or worker sends exactly one",
                    tokens.len()
                ),
            });
        }
        Ok(tokens.remove(0))
    }
}

/// PEM files a client uses for TLS: the CA that signed the coordinator's certificate, and for
/// mutual TLS its own certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTls {
    pub ca: PathBuf,
    /// Certificate and private key (both PEM), presented when the coordinator asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the coordinator's certificate must carry (default: the URL's host).
    pub domain: Option<String>,
}

impl ClientTls {
    pub fn new(ca: impl Into<PathBuf>) -> Self {
        Self {
            ca: ca.into(),
            ..Self::default()
        }
    }
    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    fn load(&self) -> Result<ClientTlsConfig, ClusterError> {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_pem(&self.ca, "CA certificate")?));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read_pem(cert, "certificate")?,
                read_pem(key, "private key")?,
            ));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

/// Reads a PEM file, checking that it is one (rustls's own error for a DER or empty file names no
/// file).
pub(crate) fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, ClusterError> {
    let bad = |message: String| ClusterError::TlsFile {
        path: path.to_path_buf(),
        what,
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(bad("it is not PEM (no `-----BEGIN` line)".into()));
    }
    Ok(bytes)
}

/// How to reach a coordinator: its URL and what to present to it. Build with
/// [`ClientConfig::new`] and the `with_*` methods; a bare URL converts into one with no
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// e.g. `http://svcca-coordinator:50051`, or `https://...` with [`ClientConfig::tls`].
    pub url: String,
    pub token: Option<Token>,
    pub tls: Option<ClientTls>,
    pub max_message_size: usize,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            tls: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
    pub fn with_token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The endpoint for this URL with TLS applied, not yet connected.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, ClusterError> {
        let invalid = |message: String| ClusterError::InvalidUrl {
            url: self.url.clone(),
            message,
        };
        let https = self.url.to_ascii_lowercase().starts_with("https://");
        match (&self.tls, https) {
            (Some(_), false) => {
                return Err(invalid(
                    "TLS is configured (--tls-ca) but the URL is not https://".into(),
                ));
            }
            (None, true) => {
                return Err(invalid(
                    "an https:// URL needs the CA that signed the coordinator's certificate \
                     (--tls-ca)"
                        .into(),
                ));
            }
            _ => {}
        }
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.load()?)
                .map_err(|e| ClusterError::TlsConfig {
                    message: error_chain(&e),
                })?;
        }
        Ok(endpoint)
    }

    /// A failed call as an error. Over TLS, a connection the coordinator cut during or right
    /// after the handshake reaches the client only as a transport error: say what usually causes
    /// it, since the coordinator's reason never arrives.
    pub(crate) fn rpc_error(&self, rpc: &'static str, status: &Status) -> ClusterError {
        let mut error = ClusterError::rpc(rpc, &self.url, status);
        let cut = matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
        );
        if let (Some(tls), true, ClusterError::Rpc { message, .. }) = (&self.tls, cut, &mut error) {
            message.push_str(if tls.identity.is_none() {
                " (over TLS: if the coordinator requires client certificates (mutual TLS), pass \
                 --tls-cert and --tls-key; check that --tls-ca signed its certificate)"
            } else {
                " (over TLS: check that the coordinator's client CA signed --tls-cert, and that \
                 --tls-ca signed its certificate)"
            });
        }
        error
    }

    /// A client over `channel` that sends this config's token with every call.
    pub(crate) fn client(&self, channel: Channel) -> Client {
        CoordinatorClient::with_interceptor(channel, self.credentials())
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size)
    }

    pub(crate) fn credentials(&self) -> Credentials {
        Credentials {
            header: self.token.as_ref().and_then(|t| {
                MetadataValue::try_from(format!("Bearer {}", t.as_str()))
                    .ok()
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
            }),
        }
    }
}

impl From<&str> for ClientConfig {
    fn from(url: &str) -> Self {
        ClientConfig::new(url)
    }
}

impl From<&String> for ClientConfig {
    fn from(url: &String) -> Self {
        ClientConfig::new(url.as_str())
    }
}

impl From<String> for ClientConfig {
    fn from(url: String) -> Self {
        ClientConfig::new(url)
    }
}

impl From<&ClientConfig> for ClientConfig {
    fn from(config: &ClientConfig) -> Self {
        config.clone()
    }
}

/// Adds the token to every outgoing call.
#[derive(Clone)]
pub struct Credentials {
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

/// A coordinator client that presents its credentials.
pub type Client = CoordinatorClient<InterceptedService<Channel, Credentials>>;
