//! svcca-fuzz: mutation fuzzing, on stable Rust, of every svcca reader of user or network input.
//!
//! # Targets
//!
//! Each reader is reached through the public entry point its real caller uses
//! ([`targets::ALL`]): `npy` ([`svcca_storage::npy::NpyReader`]), `npz`, `safetensors` and
//! `ingest-npy` (a one-file source tree through [`svcca_storage::ingest::ingest_into`], then read
//! back), `template` (ingest path patterns), `shard` (an Arrow IPC shard through
//! [`svcca_storage::Dataset::read_shard`]), `manifest` (`manifest.json` through
//! [`svcca_storage::Dataset::open_at`], then resolved and read), `selector`
//! ([`svcca_storage::Selector::parse`]), `spec` (job TOML through
//! [`svcca_engine::spec::JobSpec::from_toml`] and the coordinator's job factory) and
//! `coordinator` (bytes decoded with prost as each gRPC request and driven through the
//! coordinator's [`svcca_engine::coordinator::Scheduler`], with the real job factory and task
//! executor, no network).
//!
//! # Engine
//!
//! A seeded PRNG ([`rng`]), mutations ([`mutate`]), a corpus seeded from the repository's real
//! files plus the regression corpus (`corpus/<target>/*.bin`), and crude feedback: an input whose
//! outcome (the error message with numbers blanked) is new joins the corpus ([`engine`]).
//!
//! # What counts as a crash
//!
//! - A panic: every input runs under `catch_unwind`; the panic is minimised (the shortest
//!   crashing prefix) and written to the crash folder.
//! - One allocation above [`guard::ALLOC_LIMIT`] (256 MiB) while an input runs: every reader's
//!   legitimate buffers are bounded by the input's size or a fixed block size, so a larger
//!   request was sized from a field of the input. A global allocator must not unwind, so the
//!   guard ([`guard`]) checks the size before allocating, writes the input to a record file
//!   opened in advance and aborts; the supervising process (the binary, `src/main.rs`) saves
//!   and minimises it by replaying in fresh processes, and fuzzing goes on in a new process.
//!
//! # Modes
//!
//! - CI: `cargo test -p svcca-fuzz` runs every target for a fixed number of inputs from a fixed
//!   seed, after replaying the regression corpus, and fails listing the crashing inputs.
//! - Soak: `cargo run -p svcca-fuzz --release -- --secs N [--target T] [--seed S]`.

pub mod engine;
pub mod guard;
pub mod mutate;
pub mod rng;
pub mod targets;

#[global_allocator]
static GLOBAL: guard::GuardAlloc = guard::GuardAlloc;
