//! `svcca-fuzz`: fuzz svcca's readers (see the library docs for targets and what a crash is).
//!
//! ```text
//! svcca-fuzz [--secs N | --iters N] [--target T]... [--seed S] [--crash-dir DIR]
//! svcca-fuzz --target T --replay FILE      # run one input once
//! svcca-fuzz [--target T]... --dump-seeds DIR
//! ```
//!
//! `--secs` and `--iters` are per target (default: 10 s each). Crashing inputs go to DIR
//! (default `target/fuzz-crashes`), one `.bin` with a `.txt` saying why. Exit status 0 when
//! nothing crashed, 1 when something did, 2 on a usage error.
//!
//! Each target runs in a child process (this binary with `--child`): an oversize allocation
//! aborts the child after it records the input, and this process saves it, minimises it by
//! replaying shorter prefixes (`--replay`), and starts a new child for the rest of the budget.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use svcca_fuzz::engine::{self, Budget};
use svcca_fuzz::{guard, targets};

struct Args {
    secs: Option<f64>,
    iters: Option<u64>,
    targets: Vec<String>,
    seed: u64,
    crash_dir: PathBuf,
    child: bool,
    record: Option<PathBuf>,
    replay: Option<PathBuf>,
    dump_seeds: Option<PathBuf>,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("svcca-fuzz: {msg}");
    eprintln!(
        "usage: svcca-fuzz [--secs N | --iters N] [--target T]... [--seed S] [--crash-dir DIR]\n\
         targets: {}",
        targets::ALL.join(", ")
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        secs: None,
        iters: None,
        targets: Vec::new(),
        seed: 1,
        crash_dir: PathBuf::from("target/fuzz-crashes"),
        child: false,
        record: None,
        replay: None,
        dump_seeds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--secs" => {
                a.secs = Some(
                    value("--secs")?
                        .parse()
                        .map_err(|_| "--secs takes a number of seconds")?,
                )
            }
            "--iters" => {
                a.iters = Some(
                    value("--iters")?
                        .parse()
                        .map_err(|_| "--iters takes a count")?,
                )
            }
            "--target" => a.targets.push(value("--target")?),
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|_| "--seed takes an integer")?
            }
            "--crash-dir" => a.crash_dir = PathBuf::from(value("--crash-dir")?),
            "--child" => a.child = true,
            "--record" => a.record = Some(PathBuf::from(value("--record")?)),
            "--replay" => a.replay = Some(PathBuf::from(value("--replay")?)),
            "--dump-seeds" => a.dump_seeds = Some(PathBuf::from(value("--dump-seeds")?)),
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    for t in &a.targets {
        if targets::make_check(t).is_none() {
            return Err(format!("unknown target '{t}'"));
        }
    }
    if a.secs.is_some() && a.iters.is_some() {
        return Err("give --secs or --iters, not both".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e == "help" => return usage("fuzz svcca's readers of user and network input"),
        Err(e) => return usage(&e),
    };
    if let Some(record) = &args.record {
        match std::fs::File::create(record) {
            Ok(f) => guard::set_record_file(f),
            Err(e) => return usage(&format!("cannot create {}: {e}", record.display())),
        }
    }
    if let Some(dir) = &args.dump_seeds {
        return dump_seeds(&args, dir);
    }
    if let Some(file) = &args.replay {
        return replay(&args, file);
    }
    if args.child {
        return child(&args);
    }
    supervise(&args)
}

/// Writes each target's seed inputs to `DIR/<target>/seed-N.bin`, to look at or replay.
fn dump_seeds(args: &Args, dir: &Path) -> ExitCode {
    let names: Vec<String> = if args.targets.is_empty() {
        targets::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.targets.clone()
    };
    for name in names {
        let Some(target) = targets::make(&name) else {
            return usage(&format!("unknown target '{name}'"));
        };
        let d = dir.join(&name);
        for (i, seed) in target.seeds().iter().enumerate() {
            if let Err(e) = std::fs::create_dir_all(&d)
                .and_then(|()| std::fs::write(d.join(format!("seed-{i}.bin")), seed))
            {
                eprintln!("svcca-fuzz: cannot write to {}: {e}", d.display());
                return ExitCode::from(11);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Runs one saved input once: 0 when it is handled, 3 when it panics (an oversize allocation
/// aborts the process).
fn replay(args: &Args, file: &Path) -> ExitCode {
    engine::install_panic_hook();
    let Some(name) = args.targets.first() else {
        return usage("--replay needs --target");
    };
    let Some(mut target) = targets::make(name) else {
        return usage(&format!("unknown target '{name}'"));
    };
    let input = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return usage(&format!("cannot read {}: {e}", file.display())),
    };
    match engine::run_case(target.as_mut(), &input) {
        Ok(outcome) => {
            println!("ok: {outcome}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            println!("panic: {msg}");
            ExitCode::from(3)
        }
    }
}

fn child(args: &Args) -> ExitCode {
    engine::install_panic_hook();
    let name = args.targets.first().cloned().unwrap_or_default();
    let Some(mut target) = targets::make(&name) else {
        return usage(&format!("unknown target '{name}'"));
    };
    let budget = match (args.iters, args.secs) {
        (Some(n), _) => Budget::Iterations(n),
        (None, s) => Budget::Until(Instant::now() + Duration::from_secs_f64(s.unwrap_or(10.0))),
    };
    let stats = engine::fuzz(
        target.as_mut(),
        args.seed,
        budget,
        &args.crash_dir,
        |_, found| {
            println!(
                "crash {}\t{}",
                found.path.display(),
                found.reason.replace('\n', " ")
            )
        },
        |execs| println!("execs {execs}"),
    );
    println!(
        "done {} {} {}",
        stats.execs, stats.corpus, stats.largest_alloc
    );
    ExitCode::SUCCESS
}

struct TargetReport {
    name: String,
    execs: u64,
    corpus: usize,
    largest_alloc: usize,
    crashes: Vec<String>,
    wall: Duration,
}

fn supervise(args: &Args) -> ExitCode {
    let names: Vec<String> = if args.targets.is_empty() {
        targets::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.targets.clone()
    };
    let _ = std::fs::create_dir_all(&args.crash_dir);
    let exe = std::env::current_exe().expect("the path of this executable");
    let mut reports = Vec::new();
    for name in &names {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(args.secs.unwrap_or(10.0));
        let mut report = TargetReport {
            name: name.clone(),
            execs: 0,
            corpus: 0,
            largest_alloc: 0,
            crashes: Vec::new(),
            wall: Duration::ZERO,
        };
        let record = args.crash_dir.join(format!(".record-{name}"));
        for restart in 0..20u64 {
            let _ = std::fs::remove_file(&record);
            let mut cmd = Command::new(&exe);
            cmd.arg("--child")
                .arg("--target")
                .arg(name)
                .arg("--seed")
                .arg((args.seed + restart).to_string())
                .arg("--crash-dir")
                .arg(&args.crash_dir)
                .arg("--record")
                .arg(&record);
            match args.iters {
                Some(n) => {
                    cmd.arg("--iters")
                        .arg(n.saturating_sub(report.execs).to_string());
                }
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    cmd.arg("--secs").arg(format!("{:.3}", left.as_secs_f64()));
                }
            }
            let mut proc = match cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("svcca-fuzz: cannot start a fuzzing process: {e}");
                    return ExitCode::from(11);
                }
            };
            let mut execs = 0;
            let mut past_seeds = false;
            let stdout = proc.stdout.take().expect("piped stdout");
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("execs ") {
                    execs = n.parse().unwrap_or(execs);
                    past_seeds = true;
                } else if let Some(c) = line.strip_prefix("crash ") {
                    report.crashes.push(c.replace('\t', ": "));
                } else if let Some(d) = line.strip_prefix("done ") {
                    let f: Vec<u64> = d.split(' ').filter_map(|x| x.parse().ok()).collect();
                    if let [e, c, l] = f[..] {
                        execs = e;
                        report.corpus = c as usize;
                        report.largest_alloc = report.largest_alloc.max(l as usize);
                    }
                }
            }
            let status = proc.wait().expect("waiting for the fuzzing process");
            report.execs += execs;
            if status.success() {
                break;
            }
            let Some((size, target, input)) = std::fs::read(&record)
                .ok()
                .and_then(|b| guard::parse_record(&b))
            else {
                report.crashes.push(format!(
                    "the fuzzing process died ({status}) without a record"
                ));
                break;
            };
            report.largest_alloc = report.largest_alloc.max(size);
            let small = minimise_oversize(&exe, &target, &input, &args.crash_dir);
            let path = engine::save_crash(
                &args.crash_dir,
                &target,
                "oversize",
                &small,
                &format!(
                    "a single allocation of {size} bytes (limit {})",
                    guard::ALLOC_LIMIT
                ),
            );
            report.crashes.push(format!(
                "{}: a single allocation of {size} bytes",
                path.display()
            ));
            if !past_seeds {
                // It dies on a seed or regression input: restarting would only repeat it.
                break;
            }
        }
        let _ = std::fs::remove_file(&record);
        report.wall = started.elapsed();
        println!(
            "{:<12} {:>9} execs {:>7.1}/s  corpus {:>4}  largest allocation {:>11} B  crashes {}",
            report.name,
            report.execs,
            report.execs as f64 / report.wall.as_secs_f64().max(1e-9),
            report.corpus,
            report.largest_alloc,
            report.crashes.len()
        );
        for c in &report.crashes {
            println!("  crash: {c}");
        }
        reports.push(report);
    }
    let total: usize = reports.iter().map(|r| r.crashes.len()).sum();
    println!(
        "total: {} execs, {total} crashes",
        reports.iter().map(|r| r.execs).sum::<u64>()
    );
    if total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The shortest prefix that still makes a fresh process abort on an oversize allocation.
fn minimise_oversize(exe: &Path, target: &str, input: &[u8], dir: &Path) -> Vec<u8> {
    let candidate = dir.join(format!(".minimise-{target}.bin"));
    let record = dir.join(format!(".minimise-{target}.record"));
    let small = engine::minimise(input, |cand| {
        let _ = std::fs::remove_file(&record);
        if std::fs::write(&candidate, cand).is_err() {
            return false;
        }
        let status = Command::new(exe)
            .arg("--replay")
            .arg(&candidate)
            .arg("--target")
            .arg(target)
            .arg("--record")
            .arg(&record)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        status.is_ok_and(|s| !s.success())
            && std::fs::read(&record)
                .ok()
                .and_then(|b| guard::parse_record(&b))
                .is_some()
    });
    let _ = std::fs::remove_file(&candidate);
    let _ = std::fs::remove_file(&record);
    small
}
