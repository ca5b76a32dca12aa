//! Logging set-up shared by every subcommand: human-readable on a terminal, JSON for clusters.

use std::io::IsTerminal;

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log format: `text` (default) or `json` (one object per line, for cluster log collectors).
    #[arg(long, global = true, env = "SVCCA_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `svcca_engine=debug` (tracing's EnvFilter syntax).
    #[arg(long, global = true, env = "SVCCA_LOG", default_value = "warn")]
    pub log: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(args: &LogArgs) {
    let mut filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Progress lines are wanted off a terminal whatever the level (see `progress`), unless the
    // filter names them itself.
    if !args.log.contains(crate::progress::TARGET)
        && let Ok(directive) = format!("{}=info", crate::progress::TARGET).parse()
    {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Colour codes in redirected logs are noise for log collectors.
    let ansi = std::io::stderr().is_terminal();
    match args.log_format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
