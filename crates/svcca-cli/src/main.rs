//! The `svcca` binary: a thin layer that parses arguments into the library crates' config structs,
//! runs them, and turns their typed errors into messages and exit codes.

#[macro_use]
mod exit;
mod cmd;
mod heap;
mod logging;
mod progress;
mod source;

use clap::{Parser, Subcommand};

/// Compare neural network representations with SVCCA, CCA, PWCCA and linear CKA.
#[derive(Debug, Parser)]
#[command(name = "svcca", version = version(), about, long_about = None)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Compare(cmd::compare::CompareArgs),
    Ingest(cmd::ingest::IngestArgs),
    Ls(cmd::ls::LsArgs),
    Sweep(cmd::sweep::SweepArgs),
    Coordinator(cmd::coordinator::CoordinatorArgs),
    Worker(cmd::worker::WorkerArgs),
    Submit(cmd::submit::SubmitArgs),
    Status(cmd::status::StatusArgs),
    Cancel(cmd::cancel::CancelArgs),
    Report(cmd::report::ReportArgs),
}

/// The release, and the commit when the build names one (the container image's build does, through
/// `SVCCA_BUILD_REVISION`), so that `svcca --version` in a pod says exactly what runs there.
fn version() -> &'static str {
    match option_env!("SVCCA_BUILD_REVISION") {
        Some(revision) if !revision.is_empty() => {
            // Once per process: leaking it gives clap the `&'static str` it wants.
            format!("{} ({revision})", env!("CARGO_PKG_VERSION")).leak()
        }
        _ => env!("CARGO_PKG_VERSION"),
    }
}

fn main() -> std::process::ExitCode {
    ignore_sigpipe();
    heap::keep_large_buffers_mapped();
    let cli = Cli::parse();
    logging::init(&cli.log);
    let outcome = match cli.command {
        Command::Compare(args) => cmd::compare::run(args),
        Command::Ingest(args) => cmd::ingest::run(args),
        Command::Ls(args) => cmd::ls::run(args),
        Command::Sweep(args) => cmd::sweep::run(args),
        Command::Coordinator(args) => cmd::coordinator::run(args),
        Command::Worker(args) => cmd::worker::run(args),
        Command::Submit(args) => cmd::submit::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Cancel(args) => cmd::cancel::run(args),
        Command::Report(args) => cmd::report::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// The embedded cluster's coordinator and workers talk over loopback sockets: with SIGPIPE's
/// default action, a write to a connection the other side just closed kills the whole process
/// (exit 141, no message) instead of returning EPIPE to the code that can handle it. So SIGPIPE
/// stays ignored process-wide, and a closed standard output is handled where we write to it
/// (`outln!`), which ends the process quietly as other Unix tools do.
fn ignore_sigpipe() {
    // SAFETY: called once at start-up, before any thread exists; SIG_IGN is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
