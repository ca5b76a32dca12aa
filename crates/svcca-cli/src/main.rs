//! The `svcca` binary: a thin layer that parses arguments into the library crates' config structs,
//! runs them, and turns their typed errors into messages and exit codes.

mod cmd;
mod exit;
mod logging;
mod source;

use clap::{Parser, Subcommand};

/// Compare neural network representations with SVCCA, CCA, PWCCA and linear CKA.
#[derive(Debug, Parser)]
#[command(name = "svcca", version, about, long_about = None)]
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
    Report(cmd::report::ReportArgs),
}

fn main() -> std::process::ExitCode {
    restore_default_sigpipe();
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
        Command::Report(args) => cmd::report::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// `svcca ls | head` must end quietly when `head` closes the pipe, as other Unix tools do.
/// Rust ignores SIGPIPE by default, which turns a closed pipe into a panic in `println!`.
fn restore_default_sigpipe() {
    // SAFETY: called once at start-up, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
