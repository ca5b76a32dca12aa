//! Paths that cross jobs: one long-lived executor (a warm worker pool) serving job after job with
//! other row splits and caches, and datasets that change under a cache. Each run must give
//! exactly the numbers of a fresh run on the data as it is now, or refuse with a message.

mod job_support;

use std::path::Path;
use std::sync::Arc;

use job_support::*;
use svcca_engine::driver::{JobDriverFactory, TaskExecutor};
use svcca_engine::exec::{ExecutorConfig, SweepExecutor};
use svcca_results::ResultsFile;

fn keep(p: &str) -> bool {
    (p.contains("seed0") || p.contains("seed1"))
        && (p.contains("step25/") || p.contains("step2250"))
        && (p.contains("h1") || p.contains("h3"))
}

const METRICS: &str =
    "comparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cca\", \"pwcca\", \"cka\"]\n";

/// Runs `toml` on `exec` (a warm one when the caller reuses it).
async fn run_on(opener: &CountingOpener, exec: &SweepExecutor, toml: &str) -> Result<(), String> {
    let mut driver = factory(opener)
        .create(toml.to_string())
        .await
        .map_err(|e| format!("{e:?}"))?;
    drive(driver.as_mut(), exec, Order::Interleaved, None)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// The same job on a fresh executor, fresh output and fresh cache.
async fn fresh(ds: &Path, extra: &str) -> ResultsFile {
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opener = CountingOpener::default();
    run_job(
        &opener,
        &spec_toml(ds, out.path(), cache.path(), extra),
        Order::AsIssued,
    )
    .await
    .unwrap();
    read_results(out.path())
}

fn assert_same_pairs(what: &str, got: &ResultsFile, want: &ResultsFile) {
    assert_eq!(got.pairs.len(), want.pairs.len(), "{what}: pair count");
    for (g, w) in got.pairs.iter().zip(&want.pairs) {
        assert_eq!(
            (&g.a, &g.b, &g.metric),
            (&w.a, &w.b, &w.metric),
            "{what}: pair order"
        );
        // Bitwise: the same arithmetic on the same data.
        assert!(
            g == w,
            "{what}: {} {} vs {}: {} where a fresh run gives {}",
            g.metric,
            g.a.label(),
            g.b.label(),
            g.mean,
            w.mean
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_executor_gives_each_job_the_numbers_of_a_fresh_run() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), keep).await;
    let opener = CountingOpener::default();
    // A memo smaller than the job's bases, so entries are evicted and reloaded mid-job.
    let warm = SweepExecutor::new(
        Arc::new(opener.clone()),
        ExecutorConfig {
            whitening_cache: 2,
            ..ExecutorConfig::default()
        },
    );
    let splits = [
        "",
        "[resources]\nrows_per_task = 60\n",
        "[resources]\nrows_per_task = 250\n",
    ];
    // Each job with its own output and cache, then each again into one cache shared by all.
    let shared_cache = tempfile::tempdir().unwrap();
    for shared in [false, true] {
        for (n, split) in splits.iter().enumerate() {
            let extra = format!("{METRICS}{split}");
            let want = fresh(ds.path(), &extra).await;
            let (out, own_cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let cache = if shared {
                shared_cache.path()
            } else {
                own_cache.path()
            };
            run_on(
                &opener,
                &warm,
                &spec_toml(ds.path(), out.path(), cache, &extra),
            )
            .await
            .unwrap();
            assert_same_pairs(
                &format!("job {n} on a warm executor (shared cache: {shared})"),
                &read_results(out.path()),
                &want,
            );
        }
    }
}

/// The manifest entry of the representation stored under `dir`, as JSON.
fn manifest(ds: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(ds.join("manifest.json")).unwrap()).unwrap()
}

/// The (representation index, shard index) of the first shard whose path contains `part`.
fn find_shard(m: &serde_json::Value, part: &str) -> (usize, usize) {
    for (r, rep) in m["representations"].as_array().unwrap().iter().enumerate() {
        for (s, shard) in rep["shards"].as_array().unwrap().iter().enumerate() {
            if shard["path"].as_str().unwrap().contains(part) {
                return (r, s);
            }
        }
    }
    panic!("no shard path contains {part}");
}

/// Copies the bytes of shard `from` over shard `to` (same shape, other values); with
/// `update_manifest`, the manifest's file checksums (`sha256`, `crc32`) and `bytes` follow but
/// `values_sha256` goes stale.
fn replace_shard(ds: &Path, to: &str, from: &str, update_manifest: bool) {
    let mut m = manifest(ds);
    let (tr, ts) = find_shard(&m, to);
    let (fr, fs) = find_shard(&m, from);
    let src = m["representations"][fr]["shards"][fs].clone();
    let dst_path = m["representations"][tr]["shards"][ts]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let src_path = src["path"].as_str().unwrap().to_string();
    std::fs::copy(ds.join(&src_path), ds.join(&dst_path)).unwrap();
    if update_manifest {
        let shard = &mut m["representations"][tr]["shards"][ts];
        shard["sha256"] = src["sha256"].clone();
        shard["crc32"] = src["crc32"].clone();
        shard["bytes"] = src["bytes"].clone();
        std::fs::write(
            ds.join("manifest.json"),
            serde_json::to_vec_pretty(&m).unwrap(),
        )
        .unwrap();
    }
}

/// A dataset, a warm executor and one finished job on it (its output, cache and spec).
struct FirstRun {
    ds: tempfile::TempDir,
    opener: CountingOpener,
    warm: SweepExecutor,
    out: tempfile::TempDir,
    cache: tempfile::TempDir,
    toml: String,
}

async fn first_run() -> FirstRun {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), keep).await;
    let opener = CountingOpener::default();
    let warm = executor(&opener);
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = spec_toml(ds.path(), out.path(), cache.path(), METRICS);
    run_on(&opener, &warm, &toml).await.unwrap();
    FirstRun {
        ds,
        opener,
        warm,
        out,
        cache,
        toml,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_shard_with_a_stale_values_checksum_is_computed_again() {
    let FirstRun {
        ds,
        opener,
        warm,
        out,
        cache,
        toml: _,
    } = first_run().await;
    let before = read_results(out.path());

    // seed0/step25/h1's first shard now holds seed1/step2250/h1's first 200 datapoints.
    replace_shard(ds.path(), "seed0/step25/h1", "seed1/step2250/h1", true);
    let (out2, cache2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml2 = spec_toml(ds.path(), out2.path(), cache2.path(), METRICS);
    run_on(&opener, &warm, &toml2).await.unwrap();
    let want = read_results(out2.path());
    assert_ne!(
        want.pairs, before.pairs,
        "the changed shard should change some numbers"
    );

    // The first job's output and cache, on the same warm executor: a new job over new content.
    let out3 = tempfile::tempdir().unwrap();
    let toml3 = spec_toml(ds.path(), out3.path(), cache.path(), METRICS);
    run_on(&opener, &warm, &toml3).await.unwrap();
    let again = read_results(out3.path());
    assert_same_pairs("rerun over the old cache", &again, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_replaced_behind_the_manifests_back_is_refused_not_answered_from_the_cache() {
    let FirstRun {
        ds,
        opener,
        warm,
        // Kept alive: the folders go with them.
        out: _out,
        cache: _cache,
        toml,
    } = first_run().await;

    // Unchanged: the rerun is answered from the cache without reading a row.
    opener.reset();
    run_on(&opener, &warm, &toml).await.unwrap();
    assert_eq!(opener.total(), 0, "{:?}", opener.labels());

    replace_shard(ds.path(), "seed0/step25/h1", "seed1/step2250/h1", false);
    let err = run_on(&opener, &warm, &toml).await.unwrap_err();
    assert!(
        err.contains("seed0/step25/h1") && err.contains("re-ingest"),
        "{err}"
    );
}

/// The files directly in `dir`, sorted.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_re_ingested_while_the_job_runs_is_refused_by_the_worker() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), keep).await;
    let opener = CountingOpener::default();
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = spec_toml(ds.path(), out.path(), cache.path(), METRICS);
    let mut driver = factory(&opener).create(toml).await.unwrap();
    let batch = driver.take_ready().await.unwrap();
    assert!(!batch.is_empty());

    // Planned, then re-ingested (shard and manifest both new) before a worker reads it.
    replace_shard(ds.path(), "seed0/step25/h1", "seed1/step2250/h1", true);
    let exec = executor(&opener);
    let mut refused = Vec::new();
    for task in batch {
        if let Err(e) = exec.execute(task).await {
            refused.push(format!("{e:?}"));
        }
    }
    assert!(!refused.is_empty(), "no task noticed the changed dataset");
    for err in &refused {
        assert!(
            err.contains("changed while the job ran")
                && err.contains("run=mlp,seed=0,step=25,layer=h1")
                && err.contains("run the job again"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whitening_changed_in_the_cache_is_refused_by_the_worker() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), keep).await;
    let opener = CountingOpener::default();
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = spec_toml(
        ds.path(),
        out.path(),
        cache.path(),
        "comparison = \"all-pairs\"\nmetrics = [\"svcca\"]\n",
    );
    let mut driver = factory(&opener).create(toml).await.unwrap();
    let exec = executor(&opener);
    // Run tasks until the driver has stored whitenings and asks for projections.
    let projections = loop {
        let batch = driver.take_ready().await.unwrap();
        assert!(!batch.is_empty(), "the job ended before any projection");
        if batch.iter().any(|t| t.kind == "project") {
            break batch;
        }
        for task in batch {
            let id = task.id.clone();
            let output = exec.execute(task).await.unwrap();
            driver.complete(id, output).await.unwrap();
        }
    };

    // Two stored whitenings swap bytes: each is a valid whitening, but not the one the job stored.
    let stored = files_under(&cache.path().join("whitenings"));
    assert!(stored.len() >= 2, "{stored:?}");
    let (first, second) = (
        std::fs::read(&stored[0]).unwrap(),
        std::fs::read(&stored[1]).unwrap(),
    );
    std::fs::write(&stored[0], &second).unwrap();
    std::fs::write(&stored[1], &first).unwrap();

    let fresh_worker = executor(&opener);
    let mut refused = Vec::new();
    for task in projections.into_iter().filter(|t| t.kind == "project") {
        if let Err(e) = fresh_worker.execute(task).await {
            refused.push(format!("{e:?}"));
        }
    }
    assert!(
        !refused.is_empty(),
        "no projection noticed the swapped whitening"
    );
    for err in &refused {
        assert!(
            err.contains("whitening") && err.contains("SHA-256") && err.contains("rerun the job"),
            "{err}"
        );
    }
}
