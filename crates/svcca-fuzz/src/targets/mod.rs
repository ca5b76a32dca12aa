//! The fuzz targets: one per reader of user or network input, each reached through the public
//! API the CLI, the coordinator or a worker uses.

mod coordinator;
mod files;
mod shards;
mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::mutate::Format;

/// One reader under test.
pub trait Target {
    fn name(&self) -> &'static str;
    fn format(&self) -> Format;
    /// Seed inputs built from the repository's real files (and small encodings of them).
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Runs one input. Errors are the expected outcome for most inputs; the returned signature
    /// (the error's message with numbers blanked) is the engine's only feedback: an input that
    /// produces a signature not seen before joins the corpus.
    fn run(&mut self, input: &[u8]) -> String;
}

/// Every target, in the order a full run visits them.
pub const ALL: &[&str] = &[
    "npy",
    "npz",
    "safetensors",
    "ingest-npy",
    "template",
    "shard",
    "manifest",
    "selector",
    "spec",
    "coordinator",
];

/// Builds a target by name; `selftest` (a target that crashes on purpose, for the engine's own
/// tests) is accepted too but is not in [`ALL`].
pub fn make(name: &str) -> Option<Box<dyn Target>> {
    Some(match name {
        "npy" => Box::new(files::NpyTarget),
        "npz" => Box::new(files::IngestTarget::new("npz")),
        "safetensors" => Box::new(files::IngestTarget::new("safetensors")),
        "ingest-npy" => Box::new(files::IngestTarget::new("npy")),
        "template" => Box::new(files::TemplateTarget::new()),
        "shard" => Box::new(shards::ShardTarget::new()),
        "manifest" => Box::new(shards::ManifestTarget::new()),
        "selector" => Box::new(text::SelectorTarget::new()),
        "spec" => Box::new(text::SpecTarget::new()),
        "coordinator" => Box::new(coordinator::CoordinatorTarget::new()),
        "selftest" => Box::new(SelfTest),
        _ => return None,
    })
}

/// The repository root (the fuzz crate lives in `crates/svcca-fuzz`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A short, number-free description of an outcome, used as feedback.
pub fn signature(text: &str) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    for c in text.chars().take(160) {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
        if out.len() >= 72 {
            break;
        }
    }
    out
}

fn outcome<T, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => signature(&e.to_string()),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the fuzz targets")
}

/// A fresh in-memory location, so one case never sees another's objects.
fn memory_location(url: &str) -> svcca_storage::store::Location {
    svcca_storage::store::Location {
        store: Arc::new(object_store::memory::InMemory::new()),
        root: object_store::path::Path::from(""),
        url: url.to_string(),
        local_dir: None,
        map_files: false,
        remote: None,
    }
}

/// Files of the repository under `rel` with extension `ext`, smallest first, at most `max`.
fn repo_files(rel: &str, ext: &str, max: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![repo_root().join(rel)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                let len = p.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                found.push((len, p));
            }
        }
    }
    found.sort();
    found.into_iter().take(max).map(|(_, p)| p).collect()
}

/// Crashes on purpose: a panic for inputs containing `PANIC`, an allocation of 1 GiB for
/// inputs containing `ALLOC`. Proves that the engine detects, minimises and records both.
struct SelfTest;

impl Target for SelfTest {
    fn name(&self) -> &'static str {
        "selftest"
    }
    fn format(&self) -> Format {
        Format::Binary
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![b"xxPANIC tail".to_vec(), b"yALLOC tail".to_vec()]
    }
    fn run(&mut self, input: &[u8]) -> String {
        if input.windows(5).any(|w| w == b"PANIC") {
            panic!("selftest panic");
        }
        if input.windows(5).any(|w| w == b"ALLOC") {
            let v: Vec<u8> = Vec::with_capacity(1 << 30);
            return format!("allocated {}", v.capacity());
        }
        "ok".into()
    }
}

/// Whether `name` is a target, without building it.
pub fn make_check(name: &str) -> Option<()> {
    (ALL.contains(&name) || name == "selftest").then_some(())
}
