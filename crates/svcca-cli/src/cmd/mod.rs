//! One module per subcommand. Each owns its clap `Args` struct, converts it into the library's
//! config struct and runs it.

pub mod cancel;
pub mod compare;
pub mod coordinator;
pub mod ingest;
pub mod ls;
pub mod report;
pub mod status;
pub mod submit;
pub mod sweep;
pub mod sweep_analyses;
pub mod sweep_outputs;
pub mod worker;
