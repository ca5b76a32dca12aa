//! Differential tests: every way of running a comparison must give the same numbers.
//!
//! Random job specs (metrics, keep rules, google-compat, conv methods, tags, selections, row
//! splits, task memory, worker counts) over the example dataset, the conv fixtures and small
//! generated datasets are each run
//! - (a) pair by pair with `svcca compare` (a random few pairs per job),
//! - (b) with `svcca sweep` (embedded coordinator and in-process workers),
//! - (c) on one `svcca coordinator` with two `svcca worker` processes, started once and given every
//!   job of the run, as a long-lived deployment is,
//! - (d) after SIGKILLing the embedded sweep, or the coordinator, in the middle of the job and
//!   running it again (it resumes from what was stored),
//! - (e) after the dataset changed (re-ingested, a shard replaced behind the manifest's back, or a
//!   shard rewritten with a stale `values_sha256`): the rerun must equal a fresh run on the new
//!   data, never the cached old numbers.
//!
//! (b)–(e) run the same arithmetic and must agree bitwise; every result must equal (a) to 1e-9.
//! A failure prints the case (seeds, spec TOML, pair, path and both numbers); every case of the
//! run is checked before the test fails, so one report shows all disagreements.
//!
//! CI runs a fixed seed and number of cases. Environment:
//! - `SVCCA_DIFF_SEED`: the run's seed (decimal or 0x hex);
//! - `SVCCA_DIFF_CASES`: how many cases (CI default below);
//! - `SVCCA_DIFF_SOAK_SECS`: instead, draw cases until this many seconds have passed;
//! - `SVCCA_DIFF_CASE`: replay the one case with this case seed (as printed on failure);
//! - `SVCCA_DIFF_KEEP`: keep the run's folder (datasets, job files, outputs, process logs).

mod cases;
mod check;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cases::{Case, Change, Dataset, Kind};
use check::{Results, bitwise_differences, compare_differences, read_results};
use serde_json::Value;
use support::{Cluster, Proc, Rng, count_files, svcca, text};

const DEFAULT_SEED: u64 = 0x5eed_d1ff;
const CI_CASES: usize = 30;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// What a run of a job ended with: its stored results, or its exit code and message.
#[derive(Debug)]
enum Outcome {
    Ok(Results),
    Failed { code: Option<i32>, message: String },
}

impl Outcome {
    fn of(out: &std::process::Output, output: &Path) -> Outcome {
        if out.status.success() {
            match read_results(output) {
                Ok(r) => Outcome::Ok(r),
                Err(message) => Outcome::Failed {
                    code: Some(0),
                    message: format!("exit 0 but {message}"),
                },
            }
        } else {
            Outcome::Failed {
                code: out.status.code(),
                message: text(out),
            }
        }
    }

    fn summary(&self) -> String {
        match self {
            Outcome::Ok(r) => format!("succeeded with {} pair results", r.pairs.len()),
            Outcome::Failed { message, .. } => {
                let short: String = message.chars().take(600).collect();
                format!("failed: {short}")
            }
        }
    }
}

struct Harness {
    run_seed: u64,
    dir: tempfile::TempDir,
    cluster: Cluster,
    digits: Dataset,
    conv: Dataset,
    generated: Dataset,
    failures: Vec<String>,
    refusals: Vec<String>,
    cases: usize,
    compares: usize,
    sweep_kills: usize,
    coordinator_kills: usize,
    kill_attempts: usize,
    /// Reruns after a kill whose summary says they resumed from stored results.
    resumed: usize,
    changes: usize,
    /// Clusters started after one broke.
    cluster_generation: usize,
}

impl Harness {
    fn start(run_seed: u64) -> Harness {
        let keep = std::env::var_os("SVCCA_DIFF_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("svcca-diff-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("tempdir");
        if keep {
            eprintln!("differential: keeping {}", dir.path().display());
        }
        let cluster = Cluster::start(&dir.path().join("cluster"), 2);
        let conv = cases::conv(dir.path());
        let generated = cases::generated(dir.path(), &mut Rng::new(run_seed ^ 0xda7a));
        Harness {
            run_seed,
            cluster,
            digits: cases::digits(),
            conv,
            generated,
            dir,
            failures: Vec::new(),
            refusals: Vec::new(),
            cases: 0,
            compares: 0,
            sweep_kills: 0,
            coordinator_kills: 0,
            kill_attempts: 0,
            resumed: 0,
            changes: 0,
            cluster_generation: 0,
        }
    }

    fn case_seed(&self, index: usize) -> u64 {
        Rng::new(self.run_seed ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)).next_u64()
    }

    fn fail(&mut self, case: &Case, path: &str, details: &str) {
        let message = format!(
            "DIFFERENCE (replay: SVCCA_DIFF_SEED={:#x} SVCCA_DIFF_CASE={:#x})\n{}\n--- path: {path}\n{details}",
            self.run_seed,
            case.seed,
            case.describe()
        );
        eprintln!("{message}\n");
        self.failures.push(message);
    }

    /// Outcomes that must be bitwise equal (or fail alike).
    fn same(&mut self, case: &Case, path: &str, reference: &Outcome, other: &Outcome) {
        match (reference, other) {
            (Outcome::Ok(a), Outcome::Ok(b)) => {
                let diffs = bitwise_differences(a, b);
                if !diffs.is_empty() {
                    let shown: Vec<&String> = diffs.iter().take(12).collect();
                    self.fail(
                        case,
                        path,
                        &format!(
                            "{} of {} pair results differ bitwise from the reference (reference first):\n{}",
                            diffs.len(),
                            a.pairs.len(),
                            shown
                                .iter()
                                .map(|s| format!("  {s}"))
                                .collect::<Vec<_>>()
                                .join("\n")
                        ),
                    );
                }
            }
            // Refused alike (by exit code); a process ended by a signal never counts as agreeing.
            (Outcome::Failed { code: Some(a), .. }, Outcome::Failed { code: Some(b), .. })
                if a == b => {}
            _ => self.fail(
                case,
                path,
                &format!(
                    "reference {}\nthis path {}",
                    reference.summary(),
                    other.summary()
                ),
            ),
        }
    }

    fn write_job(&self, case: &Case, dataset: &Path, output: &Path, name: &str) -> PathBuf {
        let job = output.with_file_name(format!("{name}.toml"));
        std::fs::create_dir_all(job.parent().expect("parent")).expect("mkdir");
        std::fs::write(&job, case.spec(dataset, output)).expect("job file");
        job
    }

    fn sweep(&self, case: &Case, job: &Path, output: &Path) -> Outcome {
        let workers = case.workers.to_string();
        let out = svcca(&[
            "sweep",
            job.to_str().expect("utf-8"),
            "--no-report",
            "--workers",
            &workers,
        ]);
        Outcome::of(&out, output)
    }

    fn cluster_run(&self, job: &Path, output: &Path) -> Outcome {
        Outcome::of(&self.cluster.submit_wait(job), output)
    }

    /// A cluster process that died by itself is a difference; the run goes on with a new cluster.
    fn check_cluster(&mut self, case: &Case, after: &str) {
        let dead = self.cluster.dead();
        if !dead.is_empty() {
            self.fail(
                case,
                &format!("cluster processes after {after}"),
                &dead.join("\n"),
            );
            self.replace_cluster();
        }
    }

    fn replace_cluster(&mut self) {
        self.cluster.stop();
        self.cluster_generation += 1;
        self.cluster = Cluster::start(
            &self
                .dir
                .path()
                .join(format!("cluster-{}", self.cluster_generation)),
            2,
        );
    }

    fn run_case(&mut self, case: &Case) {
        let case_dir = self.dir.path().join(format!("case-{}", case.index));
        let base = match case.kind {
            Kind::Digits => &self.digits,
            Kind::Conv => &self.conv,
            Kind::Generated => &self.generated,
        };
        // Generated data is ingested again for each case: its shard size varies, and (e) changes it.
        let ds = if case.kind == Kind::Generated {
            base.ingest_copy(&case_dir, case.shard_rows)
        } else {
            base.clone()
        };
        let mut rng = Rng::new(case.seed ^ 0xc0ffee);

        // (b) the embedded sweep: the reference of (c)-(e).
        let out_b = case_dir.join("embedded");
        let job_b = self.write_job(case, &ds.root, &out_b, "embedded");
        let embedded = self.sweep(case, &job_b, &out_b);
        if let Outcome::Failed { code, message } = &embedded {
            self.refusals.push(format!(
                "case {} (exit {code:?}): {}",
                case.index,
                message
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("")
            ));
        }

        // (c) the long-lived cluster, with its coordinator killed mid-job in some cases (d).
        let out_c = case_dir.join("cluster");
        let job_c = self.write_job(case, &ds.root, &out_c, "cluster");
        let clustered = if case.kill_coordinator {
            self.cluster_run_with_coordinator_killed(case, &job_c, &out_c)
        } else {
            self.cluster_run(&job_c, &out_c)
        };
        self.kill_attempts += usize::from(case.kill_coordinator) + usize::from(case.kill_sweep);
        let path = if case.kill_coordinator {
            "(d) coordinator SIGKILLed mid-job, job resubmitted, vs (b) embedded sweep"
        } else {
            "(c) coordinator + 2 worker processes (reused across jobs) vs (b) embedded sweep"
        };
        self.same(case, path, &embedded, &clustered);
        self.check_cluster(case, "the job");

        // (d) the embedded sweep killed mid-job and run again.
        if case.kill_sweep {
            let out_d = case_dir.join("killed");
            let job_d = self.write_job(case, &ds.root, &out_d, "killed");
            let workers = case.workers.to_string();
            let mut proc = Proc::spawn(
                "killed-sweep",
                &case_dir,
                &[
                    "sweep",
                    job_d.to_str().expect("utf-8"),
                    "--no-report",
                    "--workers",
                    &workers,
                ],
            );
            let deadline = Instant::now() + support::WAIT_LIMIT;
            while proc.running() && count_files(&out_d) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(rng.below(150) as u64));
            if proc.sigkill() {
                self.sweep_kills += 1;
            }
            let resumed = self.sweep(case, &job_d, &out_d);
            self.resumed += usize::from(said_resumed(&out_d));
            self.same(
                case,
                "(d) embedded sweep SIGKILLed mid-job and run again vs (b) embedded sweep",
                &embedded,
                &resumed,
            );
        }

        // (a) `svcca compare` on a few of the pairs.
        if let Outcome::Ok(results) = &embedded {
            let records: Vec<Value> = results.pairs.values().cloned().collect();
            for record in rng.subset(&records, case.compares) {
                self.check_against_compare(case, &ds, &record, &mut rng, "(b) embedded sweep");
            }
        }

        // (e) the data changes; reruns must see it.
        if let (Some(change), Outcome::Ok(results)) = (case.change, &embedded) {
            self.changes += 1;
            let records: Vec<Value> = results.pairs.values().cloned().collect();
            let record = rng.pick(&records).clone();
            let changed = cases_rep(&ds, &record["a"]);
            change_data(&ds, &changed, change, &case_dir, &mut rng);
            let out_f = case_dir.join("fresh");
            let job_f = self.write_job(case, &ds.root, &out_f, "fresh");
            let fresh = self.sweep(case, &job_f, &out_f);
            let rerun_b = self.sweep(case, &job_b, &out_b);
            let rerun_c = self.cluster_run(&job_c, &out_c);
            self.check_cluster(case, "the rerun after the data change");
            let what = format!("{change:?} of {}", changed.label());
            for (name, rerun) in [("embedded sweep", &rerun_b), ("cluster", &rerun_c)] {
                let stale = stale_pairs(&embedded, &fresh, rerun, &changed.label());
                let path = format!(
                    "(e) {what}, {name} rerun into its old output vs a fresh embedded sweep{}",
                    if stale > 0 {
                        format!(
                            " — {stale} pair result(s) of the changed representation are the OLD \
                             ones (answered from the cache)"
                        )
                    } else {
                        String::new()
                    }
                );
                self.same(case, &path, &fresh, rerun);
            }
            if let Outcome::Ok(new) = &fresh
                && let Some(record) = new.pairs.get(&check::pair_id(&record))
            {
                let record = record.clone();
                self.check_against_compare(
                    case,
                    &ds,
                    &record,
                    &mut rng,
                    &format!("(e) fresh sweep after {what}"),
                );
            }
        }
        self.cases += 1;
    }

    fn cluster_run_with_coordinator_killed(
        &mut self,
        case: &Case,
        job: &Path,
        output: &Path,
    ) -> Outcome {
        let landed = match self.cluster.submit(job) {
            Ok(id) => {
                let deadline = Instant::now() + support::WAIT_LIMIT;
                let mut landed = false;
                while Instant::now() < deadline {
                    match self.cluster.status(&id) {
                        Some(s) if s["state"] == "running" => {
                            if s["done"].as_u64().unwrap_or(0) >= 1 {
                                landed = s["done"].as_u64() < s["total"].as_u64();
                                break;
                            }
                        }
                        _ => break,
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                landed
            }
            Err(message) => {
                self.fail(
                    case,
                    "(d) submit before the coordinator kill",
                    &format!("submit failed: {message}"),
                );
                false
            }
        };
        if let Err(message) = self.cluster.restart_coordinator(Duration::from_secs(20)) {
            self.fail(
                case,
                "(d) coordinator SIGKILLed mid-job and restarted on the same address",
                &message,
            );
            // The rest of the run needs a working cluster: a new one (its pool is cold again).
            self.replace_cluster();
        }
        if landed {
            self.coordinator_kills += 1;
        }
        let outcome = self.cluster_run(job, output);
        self.resumed += usize::from(said_resumed(output));
        outcome
    }

    fn check_against_compare(
        &mut self,
        case: &Case,
        ds: &Dataset,
        record: &Value,
        rng: &mut Rng,
        against: &str,
    ) {
        let metric = record["metric"].as_str().expect("metric");
        let (a, b) = (cases_rep(ds, &record["a"]), cases_rep(ds, &record["b"]));
        let input = |rep: &cases::Rep, rng: &mut Rng| match &rep.npy {
            Some(npy) if rng.chance(0.5) => npy.to_string_lossy().into_owned(),
            _ => ds.selector(rep),
        };
        let (x, y) = (input(&a, rng), input(&b, rng));
        let mut args = vec!["compare".to_string(), x.clone(), y.clone()];
        args.extend(case.compare_flags(metric));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = svcca(&argv);
        self.compares += 1;
        let pair = check::pair_id(record);
        let path = format!("(a) svcca {} vs {against}", args.join(" "));
        if !out.status.success() {
            self.fail(
                case,
                &path,
                &format!(
                    "pair {pair}: the sweep stored mean {} but svcca compare failed:\n{}",
                    record["mean"],
                    text(&out)
                ),
            );
            return;
        }
        let direct: Value = serde_json::from_slice(&out.stdout).expect("compare JSON");
        let mut diffs = compare_differences(record, &direct, case.tolerance());
        if !diffs.is_empty() && metric == "pwcca" {
            // PWCCA's mean can be ill-conditioned where canonical correlations nearly tie: on
            // the digits MLP, `svcca compare` itself moves it by 5e-5 between --block-rows 7,
            // 64 and 1000. There the reference is compare summing the moments in the sweep's
            // row chunks, still held to the same tolerance.
            let mut again = vec!["compare".to_string(), x, y];
            again.extend(case.compare_flags_at_sweep_chunks(metric));
            let argv: Vec<&str> = again.iter().map(String::as_str).collect();
            let out = svcca(&argv);
            self.compares += 1;
            if out.status.success() {
                let direct: Value = serde_json::from_slice(&out.stdout).expect("compare JSON");
                if compare_differences(record, &direct, case.tolerance()).is_empty() {
                    diffs.clear();
                }
            }
        }
        if !diffs.is_empty() {
            self.fail(
                case,
                &path,
                &format!(
                    "pair {pair} (tolerance {:e}):\n{}",
                    case.tolerance(),
                    diffs
                        .iter()
                        .map(|d| format!("  {d}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            );
        }
    }
}

/// Whether a run's `summary.json` says it resumed an earlier, interrupted run of the same job.
fn said_resumed(output: &Path) -> bool {
    std::fs::read(output.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|s| s["resumed"] == true)
}

/// Pair results of `label` that a rerun after a data change took from before the change: equal to
/// the old run's to 1e-12 where the fresh run on the new data differs by more than the tolerance.
fn stale_pairs(old: &Outcome, fresh: &Outcome, rerun: &Outcome, label: &str) -> usize {
    let (Outcome::Ok(old), Outcome::Ok(rerun)) = (old, rerun) else {
        return 0;
    };
    let fresh = match fresh {
        Outcome::Ok(f) => Some(f),
        Outcome::Failed { .. } => None,
    };
    let mean = |v: &Value| v["mean"].as_f64().unwrap_or(f64::NAN);
    rerun
        .pairs
        .iter()
        .filter(|(id, _)| id.contains(&format!("{label},")) || id.contains(&format!("{label} ")))
        .filter(|(id, r)| {
            old.pairs
                .get(*id)
                .is_some_and(|o| check::within(mean(o), mean(r), 1e-12))
                && fresh.is_none_or(|f| {
                    f.pairs
                        .get(*id)
                        .is_none_or(|f| !check::within(mean(f), mean(r), check::TOLERANCE))
                })
        })
        .count()
}

/// The dataset's representation a stored key names.
fn cases_rep(ds: &Dataset, key: &Value) -> cases::Rep {
    ds.reps
        .iter()
        .find(|r| {
            key["run"] == r.run.as_str()
                && key["seed"] == r.seed
                && key["step"] == r.step
                && key["layer"] == r.layer.as_str()
        })
        .unwrap_or_else(|| panic!("{key} is not in {}", ds.root.display()))
        .clone()
}

/// New values for `rep`, written as `change` says.
fn change_data(ds: &Dataset, rep: &cases::Rep, change: Change, dir: &Path, rng: &mut Rng) {
    let latent: Vec<f64> = (0..cases::GEN_ROWS * 5).map(|_| rng.normal()).collect();
    let values = cases::generated_values(rng, &latent, rep.shape[1], &rep.layer);
    let f32_values = rep.layer != "c";
    let npy = rep.npy.as_ref().expect("generated data has sources");
    let rel = npy
        .strip_prefix(ds.src.as_ref().expect("src"))
        .expect("under src");
    match change {
        Change::Reingest => {
            support::write_npy(npy, &rep.shape, &values, f32_values);
            let out = ds.ingest(true);
            assert!(out.status.success(), "re-ingest: {}", text(&out));
        }
        Change::ShardBehindManifest | Change::StaleValuesHash => {
            // The source file follows, so that `svcca compare` on it sees what the shards hold.
            support::write_npy(npy, &rep.shape, &values, f32_values);
            // Valid shards of the new values, made by ingesting them elsewhere.
            let scratch = Dataset {
                root: dir.join("scratch"),
                src: Some(dir.join("scratch-src")),
                ..ds.clone()
            };
            support::write_npy(
                &scratch.src.as_ref().expect("src").join(rel),
                &rep.shape,
                &values,
                f32_values,
            );
            let out = scratch.ingest(false);
            assert!(out.status.success(), "scratch ingest: {}", text(&out));
            let (new_manifest, new_index) = manifest_entry(&scratch.root, rep);
            let new_entry = &new_manifest["representations"][new_index];
            let (mut manifest, index) = manifest_entry(&ds.root, rep);
            let entry = &mut manifest["representations"][index];
            let old_shards = entry["shards"].as_array().expect("shards").clone();
            let new_shards = new_entry["shards"].as_array().expect("shards");
            assert_eq!(old_shards.len(), new_shards.len(), "same shard rows");
            for (i, (old, new)) in old_shards.iter().zip(new_shards).enumerate() {
                std::fs::copy(
                    scratch.root.join(new["path"].as_str().expect("path")),
                    ds.root.join(old["path"].as_str().expect("path")),
                )
                .expect("replace shard");
                if change == Change::StaleValuesHash {
                    entry["shards"][i]["sha256"] = new["sha256"].clone();
                    entry["shards"][i]["bytes"] = new["bytes"].clone();
                }
            }
            if change == Change::StaleValuesHash {
                std::fs::write(
                    ds.root.join("manifest.json"),
                    serde_json::to_vec_pretty(&manifest).expect("JSON"),
                )
                .expect("write manifest");
            }
        }
    }
}

/// The manifest and the index of `rep`'s entry.
fn manifest_entry(root: &Path, rep: &cases::Rep) -> (Value, usize) {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    let index = manifest["representations"]
        .as_array()
        .expect("representations")
        .iter()
        .position(|r| {
            let k = &r["key"];
            k["run"] == rep.run.as_str()
                && k["seed"] == rep.seed
                && k["step"] == rep.step
                && k["layer"] == rep.layer.as_str()
        })
        .expect("entry in manifest");
    (manifest, index)
}

#[test]
fn every_way_of_running_a_job_gives_the_same_numbers() {
    let started = Instant::now();
    let run_seed = env_u64("SVCCA_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let soak = env_u64("SVCCA_DIFF_SOAK_SECS").map(Duration::from_secs);
    let only = env_u64("SVCCA_DIFF_CASE");
    let count = env_u64("SVCCA_DIFF_CASES").map_or(CI_CASES, |n| n as usize);
    let mut harness = Harness::start(run_seed);
    eprintln!(
        "differential: seed {run_seed:#x}; {}",
        match (only, soak) {
            (Some(c), _) => format!("replaying case seed {c:#x}"),
            (None, Some(s)) => format!("soak for {}s", s.as_secs()),
            (None, None) => format!("{count} cases"),
        }
    );
    let datasets = [&harness.digits, &harness.conv, &harness.generated];
    let datasets: Vec<Dataset> = datasets.into_iter().cloned().collect();
    let refs: Vec<&Dataset> = datasets.iter().collect();
    let mut index = 0;
    let mut mixed = 0usize;
    loop {
        let seed = match only {
            Some(c) if index == 0 => c,
            Some(_) => break,
            None => harness.case_seed(index),
        };
        match soak {
            Some(limit) if only.is_none() && started.elapsed() >= limit => break,
            None if only.is_none() && index >= count => break,
            _ => {}
        }
        let case = Case::draw(index, seed, &refs);
        mixed += usize::from(case.mixed);
        let case_started = Instant::now();
        harness.run_case(&case);
        let took = case_started.elapsed();
        eprintln!(
            "differential: case {index} ({:?}, seed {seed:#x}) in {:.1}s",
            case.kind,
            took.as_secs_f64()
        );
        if took > Duration::from_secs(30) {
            // Slow cases are what blow the CI budget when the draws change: say what they were.
            eprintln!("differential: slow case:\n{}", case.describe());
        }
        index += 1;
    }
    eprintln!(
        "differential: {} cases in {:.1}s (seed {run_seed:#x}): {} compare runs, {} sweeps and {} \
         coordinators killed mid-job ({} kills tried, {} reruns resumed), {} data changes, {mixed} \
         in mixed precision; {} refused by every path{}; {} differences",
        harness.cases,
        started.elapsed().as_secs_f64(),
        harness.compares,
        harness.sweep_kills,
        harness.coordinator_kills,
        harness.kill_attempts,
        harness.resumed,
        harness.changes,
        harness.refusals.len(),
        if harness.refusals.is_empty() {
            String::new()
        } else {
            format!(" ({})", harness.refusals.join("; "))
        },
        harness.failures.len()
    );
    // Every path must be exercised in both precisions, or a wrong mixed path would pass unseen.
    assert!(
        mixed > 0 || harness.cases < 20,
        "no case of {} ran in mixed precision",
        harness.cases
    );
    assert!(
        harness.failures.is_empty(),
        "{} differences in {} cases; the first:\n{}",
        harness.failures.len(),
        harness.cases,
        harness.failures[0]
    );
}

/// The sequence that showed a long-lived worker pool reusing one job's whitenings in the next:
/// on one coordinator with two workers, job A (rows per task derived from memory) and then job B
/// over the same 25 representations with `rows_per_task = 60`. B must equal B run embedded
/// (bitwise) and `svcca compare` (to 1e-9).
#[test]
fn a_warm_worker_pool_gives_the_next_job_the_numbers_of_a_fresh_run() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("cluster"), 2);
    let dataset = cases::digits().root;
    let job = |name: &str, rows: Option<u64>| {
        let output = dir.path().join(name);
        let mut text = format!(
            "dataset = {:?}\noutput = {:?}\ncomparison = \"all-pairs\"\nmetrics = [\"svcca\"]\n\n\
             [select]\nwhere = {{ seed = \"0\" }}\n",
            dataset.to_str().expect("utf-8"),
            output.to_str().expect("utf-8"),
        );
        if let Some(rows) = rows {
            text.push_str(&format!("\n[resources]\nrows_per_task = {rows}\n"));
        }
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).expect("job file");
        (path, output, text)
    };
    let (job_a, out_a, _) = job("a", None);
    let (job_b, out_b, spec_b) = job("b", Some(60));
    let (job_e, out_e, _) = job("b-embedded", Some(60));
    for (path, output) in [(&job_a, &out_a), (&job_b, &out_b)] {
        let out = cluster.submit_wait(path);
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            path.display(),
            text(&out),
            cluster.logs()
        );
        assert!(output.join("results.json").is_file());
    }
    let out = svcca(&[
        "sweep",
        job_e.to_str().expect("utf-8"),
        "--no-report",
        "--workers",
        "2",
    ]);
    assert!(out.status.success(), "embedded B: {}", text(&out));

    let distributed = read_results(&out_b).expect("B on the cluster");
    let embedded = read_results(&out_e).expect("B embedded");
    assert_eq!(embedded.pairs.len(), 300, "25 representations, one metric");
    let fixture = |rel: &str| {
        support::repo()
            .join("fixtures/digits/mlp")
            .join(rel)
            .to_string_lossy()
            .into_owned()
    };
    let named = "mlp/seed0/step25/h1 vs mlp/seed0/step2250/h1 [svcca]";
    let direct = svcca(&[
        "compare",
        &fixture("seed0/step25/h1.npy"),
        &fixture("seed0/step2250/h1.npy"),
        "--json",
    ]);
    assert!(direct.status.success(), "compare: {}", text(&direct));
    let direct: Value = serde_json::from_slice(&direct.stdout).expect("compare JSON");
    let mean = |r: &Results| {
        r.pairs
            .get(named)
            .unwrap_or_else(|| panic!("{named} not stored"))["mean"]
            .as_f64()
            .expect("mean")
    };
    let diffs = bitwise_differences(&embedded, &distributed);
    let worst = embedded
        .pairs
        .iter()
        .filter_map(|(id, e)| {
            let d = distributed.pairs.get(id)?;
            Some((e["mean"].as_f64()? - d["mean"].as_f64()?).abs())
        })
        .fold(0.0f64, f64::max);
    let beyond = embedded
        .pairs
        .iter()
        .filter(|(id, e)| {
            distributed.pairs.get(*id).is_none_or(|d| {
                // A missing mean (NaN) counts as beyond.
                !check::within(
                    e["mean"].as_f64().unwrap_or(f64::NAN),
                    d["mean"].as_f64().unwrap_or(f64::NAN),
                    check::TOLERANCE,
                )
            })
        })
        .count();
    eprintln!(
        "warm pool: job B distributed vs embedded: {} of {} pair results differ bitwise, {beyond} \
         by more than {:e} in mean, worst |mean diff| {worst:.3e}; {named}: distributed {}, \
         embedded {}, compare {}; {:.1}s",
        diffs.len(),
        embedded.pairs.len(),
        check::TOLERANCE,
        mean(&distributed),
        mean(&embedded),
        direct["mean"],
        started.elapsed().as_secs_f64()
    );
    let against_compare = compare_differences(&embedded.pairs[named], &direct, check::TOLERANCE);
    assert!(
        against_compare.is_empty(),
        "embedded B vs svcca compare on {named}: {against_compare:?}"
    );
    assert!(
        diffs.is_empty(),
        "job B on a warm pool (after job A) differs from job B embedded in {} of {} pair results \
         ({beyond} by more than {:e} in mean, worst |mean diff| {worst:.3e}); {named}: distributed {}, embedded {}, compare {}.\n\
         job B:\n{spec_b}\nfirst differences:\n{}",
        diffs.len(),
        embedded.pairs.len(),
        check::TOLERANCE,
        mean(&distributed),
        mean(&embedded),
        direct["mean"],
        diffs
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
