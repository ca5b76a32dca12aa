//! The fuzzing loop of one target: replay the corpus, then mutate, run, keep inputs whose
//! outcome is new, and minimise and save the ones that panic.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::guard;
use crate::mutate::mutate;
use crate::rng::Rng;
use crate::targets::Target;

/// The corpus cap: inputs with new outcomes join the corpus up to this many.
const MAX_CORPUS: usize = 512;

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Routes panic messages into [`LAST_PANIC`] instead of stderr: a panic is an expected event
/// during fuzzing, and the engine reports it itself.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = match (
            info.payload().downcast_ref::<&str>(),
            info.payload().downcast_ref::<String>(),
        ) {
            (Some(s), _) => s.to_string(),
            (_, Some(s)) => s.clone(),
            _ => "a panic with a non-string payload".to_string(),
        };
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut slot) = LAST_PANIC.lock() {
            *slot = Some(format!("{msg} (at {at})"));
        }
    }));
}

/// Runs one input with the allocation guard armed. `Err` carries the panic message.
pub fn run_case(target: &mut dyn Target, input: &[u8]) -> Result<String, String> {
    guard::set_current(target.name(), input);
    if let Ok(mut slot) = LAST_PANIC.lock() {
        *slot = None;
    }
    guard::arm(true);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.run(input)));
    guard::arm(false);
    r.map_err(|_| {
        LAST_PANIC
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_else(|| "a panic".into())
    })
}

/// Where a panic came from: the `(at file:line)` suffix, which identifies the bug.
fn panic_site(msg: &str) -> &str {
    msg.rfind(" (at ").map_or(msg, |i| &msg[i..])
}

/// The shortest prefix of `input` that still crashes, found by bisection on the length
/// (assuming a longer prefix of a crashing prefix crashes too, which holds for the usual
/// "the reader trusted a field" bug); at most ~21 runs for a 1 MiB input.
pub fn minimise(input: &[u8], mut still_crashes: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let (mut lo, mut hi) = (0, input.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if still_crashes(&input[..mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    input[..hi].to_vec()
}

/// FNV-1a, to name crash files by content.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes a crash as `<dir>/<target>-<kind>-<hash>.bin` with a `.txt` beside it saying why.
pub fn save_crash(dir: &Path, target: &str, kind: &str, input: &[u8], reason: &str) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{target}-{kind}-{:016x}.bin", fnv(input)));
    let _ = std::fs::write(&path, input);
    let _ = std::fs::write(path.with_extension("txt"), format!("{reason}\n"));
    path
}

/// The regression corpus of a target: every crash found and fixed, kept as a file.
pub fn regression_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

pub fn regression_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(regression_dir(target)) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "bin")
                && let Ok(bytes) = std::fs::read(&p)
            {
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// How long to fuzz.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Exactly this many mutated inputs (reproducible with the seed: CI).
    Iterations(u64),
    /// Until this instant (soak).
    Until(Instant),
}

pub struct Found {
    pub path: PathBuf,
    pub reason: String,
}

pub struct Stats {
    pub execs: u64,
    pub crashes: Vec<Found>,
    pub corpus: usize,
    pub largest_alloc: usize,
}

/// Fuzzes one target. `progress(execs)` is called about once a second.
pub fn fuzz(
    target: &mut dyn Target,
    seed: u64,
    budget: Budget,
    crash_dir: &Path,
    mut progress: impl FnMut(u64, &Found),
    mut tick: impl FnMut(u64),
) -> Stats {
    let name = target.name();
    let format = target.format();
    let mut corpus: Vec<Vec<u8>> = target.seeds();
    corpus.extend(regression_inputs(name).into_iter().map(|(_, b)| b));
    corpus.retain(|c| c.len() <= crate::mutate::MAX_INPUT);
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut rng = Rng::new(seed);
    let mut seen_outcomes = HashSet::new();
    let mut seen_sites = HashSet::new();
    let mut stats = Stats {
        execs: 0,
        crashes: Vec::new(),
        corpus: 0,
        largest_alloc: 0,
    };
    let mut last_tick = Instant::now();
    let mut handle =
        |target: &mut dyn Target, input: Vec<u8>, corpus: &mut Vec<Vec<u8>>, stats: &mut Stats| {
            stats.execs += 1;
            let r = run_case(target, &input);
            stats.largest_alloc = stats.largest_alloc.max(guard::largest());
            match r {
                Ok(sig) => {
                    if seen_outcomes.insert(sig) && corpus.len() < MAX_CORPUS {
                        corpus.push(input);
                    }
                }
                Err(msg) => {
                    let site = panic_site(&msg).to_string();
                    if seen_sites.insert(site.clone()) {
                        let small = minimise(&input, |cand| {
                            run_case(target, cand).is_err_and(|m| panic_site(&m) == site)
                        });
                        let path = save_crash(crash_dir, name, "panic", &small, &msg);
                        let found = Found { path, reason: msg };
                        progress(stats.execs, &found);
                        stats.crashes.push(found);
                    }
                }
            }
        };
    // Every seed and regression input runs as it is first.
    for input in corpus.clone() {
        handle(target, input, &mut corpus, &mut stats);
    }
    // Tells a supervisor the seeds are behind us (a crash from here on is a mutated input's).
    tick(stats.execs);
    let mut done = 0u64;
    loop {
        match budget {
            Budget::Iterations(n) if done >= n => break,
            Budget::Until(t) if Instant::now() >= t => break,
            _ => {}
        }
        done += 1;
        let mut input = rng.pick(&corpus).clone();
        let other = rng.pick(&corpus).clone();
        mutate(&mut rng, &mut input, &other, format);
        handle(target, input, &mut corpus, &mut stats);
        if last_tick.elapsed().as_secs_f64() >= 1.0 {
            tick(stats.execs);
            last_tick = Instant::now();
        }
    }
    stats.corpus = corpus.len();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimise_keeps_the_shortest_prefix_that_still_crashes() {
        let input: Vec<u8> = (0..200).collect();
        // "Crashes" while byte 37 is present: the answer is the first 38 bytes.
        let small = minimise(&input, |c| c.contains(&37));
        assert_eq!(small.len(), 38);
        assert_eq!(minimise(&input, |_| false), input);
    }
}
