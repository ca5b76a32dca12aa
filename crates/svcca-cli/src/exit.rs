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

/// A failed local read or write: permanent (10) when the path itself is the problem (missing,
/// not a folder, a folder where a file should be, not writable), retryable (11) otherwise.
pub fn io_failure(message: String, error: &(dyn std::error::Error + 'static)) -> Failure {
    classify(message, true, error)
}

/// A library error the library calls `retryable` or not. Storage libraries call every failure
/// of the store retryable, which is right for a network store and wrong for a local path that
/// is a regular file or cannot be created: those are found in the error's causes and are 10.
pub fn classify(
    message: String,
    retryable: bool,
    error: &(dyn std::error::Error + 'static),
) -> Failure {
    if retryable && svcca_engine::outputs::permanent_io_cause(error).is_none() {
        Failure::retryable(message)
    } else {
        Failure::fatal(message)
    }
}

/// Writes to standard output. A reader that has gone away (`svcca ls URL | head -1`) ends the
/// process quietly with exit 0: nobody is left to read the rest. Any other failure to write the
/// output is an I/O failure (exit 11).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // Flushed per call so that a closed pipe is noticed at the write that hits it.
    if let Err(error) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {error}");
        std::process::exit(i32::from(RETRYABLE));
    }
}

/// `println!` for command output, through [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::exit::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for command output, through [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::exit::write_stdout(format_args!($($arg)*))
    };
}
