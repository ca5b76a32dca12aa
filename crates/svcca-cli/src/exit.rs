//! How a command's failure becomes a message on stderr and an exit code.
//!
//! Exit codes are part of the deployment contract (`deploy/`): Kubernetes' pod failure policy
//! fails a Job at once on a non-retryable code and lets it retry on a retryable one.
//! - 0: success
//! - 2: usage error (clap's own code)
//! - 10: non-retryable failure: bad input, bad job spec, a result that cannot be computed
//! - 11: retryable failure: I/O, object store, a lost or unreachable coordinator or workers

use std::process::ExitCode;

pub const NON_RETRYABLE: u8 = 10;
pub const RETRYABLE: u8 = 11;

/// A failed command: the message to print and whether running it again could succeed.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub retryable: bool,
}

impl Failure {
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn report(&self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(if self.retryable {
            RETRYABLE
        } else {
            NON_RETRYABLE
        })
    }
}

pub type CmdResult = Result<(), Failure>;
