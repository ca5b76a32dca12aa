//! Who may call the coordinator: two roles, each with its own tokens.
//!
//! - *Submitters* (`svcca submit`, `svcca status`, cancelling) present a token from
//!   `--auth-token-file`; *workers* one from `--worker-token-file`. A token of one role is refused
//!   for the other's calls, so a leaked worker token cannot submit jobs (which write wherever
//!   their spec says) and a submitter token cannot register a worker (which would be handed other
//!   people's tasks and could report forged results).
//! - Each token is an identity: a job remembers the one that submitted it, and only that one may
//!   cancel it. A token file may hold several tokens (one per team or pipeline) for that reason.
//! - Tokens are compared as SHA-256 digests in constant time, against every configured token, so
//!   neither the position of a first differing byte nor which token matched shows in the timing.
//! - With no token configured, every caller is [`Identity::Anonymous`] and may do everything; the
//!   coordinator allows that only on a loopback address or with `--insecure`.
//! - The gRPC health service stays open: the kubelet's probes carry no token.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::credentials::{AUTHORIZATION, Token};

/// The two kinds of callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Submits, watches, lists and cancels jobs.
    Submitter,
    /// Registers, leases tasks and reports their results.
    Worker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Worker => "worker",
        }
    }
}

/// Who made a call, as far as the coordinator can tell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No authentication is configured.
    Anonymous,
    /// The caller presented this token; the string is a short fingerprint of it (the first 16 hex
    /// digits of its SHA-256), safe to log.
    Token(String),
    /// No token is configured, but the caller presented this client certificate (mutual TLS);
    /// the string is the first 16 hex digits of the certificate's SHA-256.
    Certificate(String),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::Token(fingerprint) => write!(f, "token {fingerprint}"),
            Identity::Certificate(fingerprint) => write!(f, "client certificate {fingerprint}"),
        }
    }
}

/// The tokens each role may present. Both empty: no authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    pub submitter_tokens: Vec<Token>,
    pub worker_tokens: Vec<Token>,
}

impl AuthConfig {
    pub fn new(submitter_tokens: Vec<Token>, worker_tokens: Vec<Token>) -> Self {
        Self {
            submitter_tokens,
            worker_tokens,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.submitter_tokens.is_empty() || !self.worker_tokens.is_empty()
    }

    /// Half a configuration would leave one role open to anyone; one token in both roles would
    /// make them one role.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.is_enabled() {
            return Ok(());
        }
        if self.submitter_tokens.is_empty() {
            return Err(
                "workers need a token (--worker-token-file) but submitters have none: give \
                 --auth-token-file too, or anyone could submit jobs"
                    .into(),
            );
        }
        if self.worker_tokens.is_empty() {
            return Err(
                "submitters need a token (--auth-token-file) but workers have none: give \
                 --worker-token-file too, or anyone could register a worker"
                    .into(),
            );
        }
        if self
            .submitter_tokens
            .iter()
            .any(|t| self.worker_tokens.contains(t))
        {
            return Err(
                "the same token is in --auth-token-file and --worker-token-file: the two roles \
                 need different tokens"
                    .into(),
            );
        }
        Ok(())
    }
}

type Digest32 = [u8; 32];

fn digest(text: &str) -> Digest32 {
    Sha256::digest(text.as_bytes()).into()
}

/// The identity of a client certificate (its DER bytes).
pub(crate) fn certificate_identity(der: &[u8]) -> Identity {
    let digest: Digest32 = Sha256::digest(der).into();
    Identity::Certificate(hex::encode(&digest[..8]))
}

/// Checks the token of each call against the tokens of the role the call needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Verifier {
    submitters: Vec<Digest32>,
    workers: Vec<Digest32>,
}

impl Verifier {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        let digests = |tokens: &[Token]| tokens.iter().map(|t| digest(t.as_str())).collect();
        Self {
            submitters: digests(&config.submitter_tokens),
            workers: digests(&config.worker_tokens),
        }
    }

    fn enabled(&self) -> bool {
        !self.submitters.is_empty() || !self.workers.is_empty()
    }

    /// The caller's identity, or `Unauthenticated` (no token, or not one of `role`'s tokens).
    pub(crate) fn check(&self, metadata: &MetadataMap, role: Role) -> Result<Identity, Status> {
        if !self.enabled() {
            return Ok(Identity::Anonymous);
        }
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "this coordinator requires a {} token and the call carried none: pass \
                 --auth-token-file (or set SVCCA_AUTH_TOKEN_FILE)",
                role.as_str()
            )));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(digest);
        let Some(presented) = presented else {
            return Err(Status::unauthenticated(
                "the authorization header is not `Bearer TOKEN`",
            ));
        };
        let allowed = match role {
            Role::Submitter => &self.submitters,
            Role::Worker => &self.workers,
        };
        // Every configured token is compared, whichever matches.
        let matched = allowed
            .iter()
            .fold(subtle::Choice::from(0), |any, t| any | t.ct_eq(&presented));
        if bool::from(matched) {
            return Ok(Identity::Token(hex::encode(&presented[..8])));
        }
        Err(Status::unauthenticated(format!(
            "the token is not a valid {} token for this coordinator",
            role.as_str()
        )))
    }
}
