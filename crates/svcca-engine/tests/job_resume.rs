//! Resume, refusal of a different job's output, and incremental sweeps that read raw shards only
//! for new representations.

mod job_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use job_support::*;
use svcca_engine::driver::{JobDriverFactory, TaskExecutor, TaskFailure, TaskOutput, TaskSpec};
use svcca_engine::exec::{SweepExecutor, TaskPayload};
use svcca_engine::spec::{KeepRule, Mode};

const EXTRA: &str = "comparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cca\"]\n[select]\nwhere = { seed = \"0\", layer = [\"h2\", \"h4\"] }\n[resources]\nrows_per_task = 300\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_resumes_and_a_killed_run_finishes_with_the_same_numbers() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| {
        p.contains("seed0")
            && (p.contains("step25/") || p.contains("step400") || p.contains("step2250"))
    })
    .await;

    // A clean run.
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opener = CountingOpener::default();
    let toml = spec_toml(ds.path(), out.path(), cache.path(), EXTRA);
    run_job(&opener, &toml, Order::AsIssued).await.unwrap();
    let clean = read_results(out.path());
    assert_eq!(clean.pairs.len(), 15 * 2);
    assert!(opener.total() > 0);
    // Each representation's moments came in two row chunks (300 of 597 rows per task); once
    // merged, only the merge is kept.
    let moments: Vec<_> = std::fs::read_dir(cache.path().join("moments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(moments.len(), 6);
    for dir in &moments {
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["all.bin"], "{}", dir.display());
    }
    // Another output over the same cache computes from the merged moments: same numbers.
    let other = tempfile::tempdir().unwrap();
    let toml_other = spec_toml(ds.path(), other.path(), cache.path(), EXTRA);
    run_job(&opener, &toml_other, Order::Reversed)
        .await
        .unwrap();
    assert_eq!(read_results(other.path()).pairs, clean.pairs);

    // The same job again: nothing is read or run, the numbers are the same.
    opener.reset();
    let summary = run_job(&opener, &toml, Order::AsIssued).await.unwrap();
    assert_eq!(
        opener.total(),
        0,
        "a resumed finished job read raw shards: {:?}",
        opener.labels()
    );
    assert!(
        summary
            .lines
            .iter()
            .any(|l| l.contains("30 from the cache")),
        "{:?}",
        summary.lines
    );
    assert_eq!(read_results(out.path()).pairs, clean.pairs);

    // A run killed midway (after 9 task completions), then run again to the end.
    let (out2, cache2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml2 = spec_toml(ds.path(), out2.path(), cache2.path(), EXTRA);
    let mut driver = factory(&opener).create(toml2.clone()).await.unwrap();
    let stopped = drive(
        driver.as_mut(),
        &executor(&opener),
        Order::Reversed,
        Some(9),
    )
    .await
    .unwrap();
    assert!(stopped.is_none(), "the job should have been stopped midway");
    drop(driver);
    assert!(!out2.path().join("results.json").exists());
    opener.reset();
    run_job(&opener, &toml2, Order::Interleaved).await.unwrap();
    let resumed = read_results(out2.path());
    assert_eq!(
        resumed.pairs, clean.pairs,
        "a resumed job must give the clean run's numbers"
    );
    assert_matches_reference(
        "resumed job",
        &resumed,
        Mode::Default,
        KeepRule::Variance(0.99),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_job_is_refused_unless_told_to_overwrite() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| {
        p.contains("seed0/step2250") && (p.contains("h3") || p.contains("h4"))
    })
    .await;
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opener = CountingOpener::default();
    run_job(
        &opener,
        &spec_toml(ds.path(), out.path(), cache.path(), ""),
        Order::AsIssued,
    )
    .await
    .unwrap();
    let other = spec_toml(ds.path(), out.path(), cache.path(), "metrics = [\"cka\"]\n");
    let err = factory(&opener)
        .create(other.clone())
        .await
        .err()
        .expect("a different job must be refused");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("different job"), "{err}");
    let forced = spec_toml(
        ds.path(),
        out.path(),
        cache.path(),
        "metrics = [\"cka\"]\noverwrite = true\n",
    );
    run_job(&opener, &forced, Order::AsIssued).await.unwrap();
    let results = read_results(out.path());
    assert_eq!(results.metrics(), vec!["cka".to_string()]);
}

/// The nightly case: a dataset gains checkpoints; the same job reruns on the same output. Raw
/// shards are read only for the new representations, and only the new pairs are computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_run_reads_only_new_representations() {
    let ds = tempfile::tempdir().unwrap();
    let old = |p: &str| {
        p.contains("seed0")
            && (p.contains("step0/") || p.contains("step25/") || p.contains("step100/"))
    };
    ingest_digits(ds.path(), old).await;
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opener = CountingOpener::default();
    let toml = spec_toml(ds.path(), out.path(), cache.path(), EXTRA);
    run_job(&opener, &toml, Order::AsIssued).await.unwrap();
    let first = read_results(out.path());
    assert_eq!(first.representations.len(), 6);
    let first_reads = opener.total();
    // 2 passes (moments, projection) x 2 row chunks per representation.
    assert_eq!(first_reads, 6 * 2 * 2, "{:?}", opener.reads.lock().unwrap());

    // Two new checkpoints arrive.
    ingest_digits(ds.path(), |p| {
        p.contains("seed0") && (p.contains("step400") || p.contains("step2250"))
    })
    .await;
    opener.reset();
    let summary = run_job(&opener, &toml, Order::Reversed).await.unwrap();
    let second = read_results(out.path());
    assert_eq!(second.representations.len(), 10);
    assert_eq!(second.pairs.len(), 45 * 2);
    let read_labels = opener.labels();
    assert!(
        read_labels
            .iter()
            .all(|l| l.contains("step=400,") || l.contains("step=2250,")),
        "old representations were read again: {read_labels:?}"
    );
    assert_eq!(
        opener.total(),
        4 * 2 * 2,
        "{:?}",
        opener.reads.lock().unwrap()
    );
    // 15 old pairs x 2 metrics came from the cache, unchanged.
    assert!(
        summary
            .lines
            .iter()
            .any(|l| l.contains("30 from the cache")),
        "{:?}",
        summary.lines
    );
    for p in &first.pairs {
        assert!(
            second.pairs.contains(p),
            "old pair {} {} {} changed",
            p.metric,
            p.a.label(),
            p.b.label()
        );
    }
    assert_matches_reference(
        "incremental run",
        &second,
        Mode::Default,
        KeepRule::Variance(0.99),
    );
}

/// An output written before coefficients moved to pairs.parquet (results.json of schema 1, its
/// coefficients inline, no pairs.parquet) resumes as the same job, and the rerun stores the same
/// numbers in the current form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_of_the_previous_version_resumes() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| {
        p.contains("seed0") && (p.contains("step25/") || p.contains("step2250"))
    })
    .await;
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opener = CountingOpener::default();
    let toml = spec_toml(ds.path(), out.path(), cache.path(), EXTRA);
    run_job(&opener, &toml, Order::AsIssued).await.unwrap();
    let clean = read_results(out.path());
    assert!(clean.pairs.iter().all(|p| !p.coefficients.is_empty()));

    // Rewrite the output as the previous version left it.
    let mut old: serde_json::Value = serde_json::from_slice(
        &clean
            .stored_as(svcca_results::CoefficientStore::Json)
            .to_json(),
    )
    .unwrap();
    old["schema_version"] = 1.into();
    old.as_object_mut().unwrap().remove("coefficients");
    std::fs::write(
        out.path().join("results.json"),
        serde_json::to_vec_pretty(&old).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(out.path().join(svcca_results::PAIRS_TABLE_NAME)).unwrap();
    let read_back = svcca_results::ResultsFile::from_json(
        &std::fs::read(out.path().join("results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        read_back.coefficients,
        svcca_results::CoefficientStore::Json
    );
    assert_eq!(
        read_back.pairs, clean.pairs,
        "version-1 files keep their coefficients"
    );

    opener.reset();
    let summary = run_job(&opener, &toml, Order::Reversed).await.unwrap();
    assert_eq!(
        opener.total(),
        0,
        "resumed from the cache: {:?}",
        opener.labels()
    );
    assert!(
        summary.lines.iter().any(|l| l.contains("from the cache")),
        "{:?}",
        summary.lines
    );
    let resumed = read_results(out.path());
    assert_eq!(
        resumed.coefficients,
        svcca_results::CoefficientStore::Parquet
    );
    assert_eq!(resumed.pairs, clean.pairs);
}

/// A worker that counts the tasks it is given by kind. With `keep_two`, its `whiten` tasks keep
/// two directions whatever the job asked: numbers the driver would not derive itself.
#[derive(Clone)]
struct CountingWorker {
    inner: SweepExecutor,
    kinds: Arc<Mutex<BTreeMap<String, u64>>>,
    keep_two: bool,
}

impl CountingWorker {
    fn new(opener: &CountingOpener) -> Self {
        CountingWorker {
            inner: executor(opener),
            kinds: Arc::default(),
            keep_two: false,
        }
    }

    fn kinds(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.kinds.lock().unwrap())
    }
}

impl TaskExecutor for CountingWorker {
    fn execute(&self, mut task: TaskSpec) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        *self
            .kinds
            .lock()
            .unwrap()
            .entry(task.kind.clone())
            .or_default() += 1;
        if self.keep_two
            && let TaskPayload::Whiten {
                cache,
                key,
                content,
                cols,
                mut bases,
            } = serde_json::from_slice(&task.payload).unwrap()
        {
            for b in &mut bases {
                b.settings.keep_dims = Some(2);
                b.settings.keep_variance_bits = None;
            }
            let payload = TaskPayload::Whiten {
                cache,
                key,
                content,
                cols,
                bases,
            };
            task.payload = serde_json::to_vec(&payload).unwrap();
        }
        self.inner.execute(task)
    }
}

async fn run_counting(
    opener: &CountingOpener,
    worker: &CountingWorker,
    toml: &str,
) -> svcca_engine::driver::JobSummary {
    let mut driver = factory(opener).create(toml.to_string()).await.unwrap();
    drive(driver.as_mut(), worker, Order::Interleaved, None)
        .await
        .unwrap()
        .expect("ran to the end")
}

const FOUR: &str = "comparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cca\"]\n[resources]\nrows_per_task = 300\n";

fn four_layers(p: &str) -> bool {
    p.contains("seed0")
        && (p.contains("step25/") || p.contains("step2250"))
        && (p.contains("h1") || p.contains("h3"))
}

fn whitenings_in(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(dir) = std::fs::read_dir(cache.join("whitenings")) else {
        return Vec::new();
    };
    let mut files: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// Every eigendecomposition of a sweep is a `whiten` task run by a worker, stored in the cache; a
/// job killed after them, a rerun and a rerun without an output all take them from there, and
/// whitenings deleted from the cache are derived again with the same bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitenings_run_on_workers_and_a_resumed_job_reuses_them() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), four_layers).await;
    let opener = CountingOpener::default();
    let worker = CountingWorker::new(&opener);

    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = spec_toml(ds.path(), out.path(), cache.path(), FOUR);
    let summary = run_counting(&opener, &worker, &toml).await;
    let clean = read_results(out.path());
    let kinds = worker.kinds();
    assert_eq!(kinds.get("whiten"), Some(&4), "one per layer: {kinds:?}");
    assert!(
        summary.lines.iter().any(|l| l.contains("4 whiten")),
        "{:?}",
        summary.lines
    );
    // svcca and cca bases of each of the 4 layers.
    assert_eq!(whitenings_in(cache.path()).len(), 8);

    // Killed once every whitening is stored and projections are asked for, then resumed.
    let (out2, cache2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml2 = spec_toml(ds.path(), out2.path(), cache2.path(), FOUR);
    let mut driver = factory(&opener).create(toml2.clone()).await.unwrap();
    loop {
        let batch = driver.take_ready().await.unwrap();
        assert!(!batch.is_empty(), "the job ended before any projection");
        if batch.iter().any(|t| t.kind == "project") {
            break;
        }
        for task in batch {
            let id = task.id.clone();
            let output = worker.execute(task).await.unwrap();
            driver.complete(id, output).await.unwrap();
        }
    }
    drop(driver);
    assert_eq!(worker.kinds().get("whiten"), Some(&4));
    run_counting(&opener, &worker, &toml2).await;
    let kinds = worker.kinds();
    assert_eq!(kinds.get("whiten"), None, "whitened again: {kinds:?}");
    assert!(kinds.get("project").is_some_and(|&n| n > 0), "{kinds:?}");
    let resumed = read_results(out2.path());
    assert_eq!(resumed.representations, clean.representations);
    assert_eq!(resumed.pairs, clean.pairs);

    // A rerun into a new output: every pair and whitening comes from the cache.
    let out3 = tempfile::tempdir().unwrap();
    let toml3 = spec_toml(ds.path(), out3.path(), cache.path(), FOUR);
    let summary = run_counting(&opener, &worker, &toml3).await;
    assert_eq!(worker.kinds(), BTreeMap::new());
    assert!(
        summary.lines.iter().any(|l| l == "tasks run: none"),
        "{:?}",
        summary.lines
    );
    let again = read_results(out3.path());
    assert_eq!(again.representations, clean.representations);
    assert_eq!(again.pairs, clean.pairs);

    // Without the stored whitenings, the records' (svcca's) are derived again, bit for bit.
    for f in whitenings_in(cache.path()) {
        std::fs::remove_file(f).unwrap();
    }
    let out4 = tempfile::tempdir().unwrap();
    let toml4 = spec_toml(ds.path(), out4.path(), cache.path(), FOUR);
    run_counting(&opener, &worker, &toml4).await;
    assert_eq!(
        worker.kinds(),
        BTreeMap::from([("whiten".to_string(), 4)]),
        "only the whitenings were missing"
    );
    let rebuilt = read_results(out4.path());
    assert_eq!(rebuilt.representations, clean.representations);
    assert_eq!(rebuilt.pairs, clean.pairs);
}

/// The driver compares with the whitenings its workers stored: a worker that keeps two
/// directions, whatever the job asks, shows in every record. (A driver that whitened on its own
/// would report the keep rule's width.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_takes_its_whitenings_from_the_workers() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), four_layers).await;
    let opener = CountingOpener::default();
    let extra = "comparison = \"all-pairs\"\nmetrics = [\"svcca\"]\n";

    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_counting(
        &opener,
        &CountingWorker::new(&opener),
        &spec_toml(ds.path(), out.path(), cache.path(), extra),
    )
    .await;
    let honest = read_results(out.path());
    assert!(
        honest.representations.iter().all(|r| r.kept_dims > 2),
        "{:?}",
        honest
            .representations
            .iter()
            .map(|r| r.kept_dims)
            .collect::<Vec<_>>()
    );

    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let odd = CountingWorker {
        keep_two: true,
        ..CountingWorker::new(&opener)
    };
    run_counting(
        &opener,
        &odd,
        &spec_toml(ds.path(), out.path(), cache.path(), extra),
    )
    .await;
    assert_eq!(odd.kinds().get("whiten"), Some(&4));
    let results = read_results(out.path());
    assert!(results.representations.iter().all(|r| r.kept_dims == 2));
    assert!(
        results.pairs.iter().all(|p| p.dims_a == 2 && p.dims_b == 2),
        "{:?}",
        results
            .pairs
            .iter()
            .map(|p| (p.dims_a, p.dims_b))
            .collect::<Vec<_>>()
    );
}

/// Which cache entries a [`TamperingWorker`] spoils, right after the task that stored them.
#[derive(Clone, Copy)]
enum Tamper {
    /// Deletes each moments part (something that cleans the cache while a job runs, or a
    /// coordinator that cannot see the workers' cache).
    DeletePart,
    /// Deletes each whitening.
    DeleteWhitening,
    /// Turns each whitening into a symbolic link to itself: the coordinator's read of it then
    /// fails as an object store's refused read does (an error worth retrying), until the task,
    /// run again, stores it again over the link.
    LoopWhitening,
}

/// Runs tasks, then spoils what they stored (see [`Tamper`]) while `budget` lasts.
struct TamperingWorker {
    inner: SweepExecutor,
    cache: std::path::PathBuf,
    budget: Arc<Mutex<usize>>,
    tamper: Tamper,
}

impl TamperingWorker {
    fn new(
        opener: &CountingOpener,
        cache: &std::path::Path,
        budget: usize,
        tamper: Tamper,
    ) -> Self {
        TamperingWorker {
            inner: executor(opener),
            cache: cache.to_path_buf(),
            budget: Arc::new(Mutex::new(budget)),
            tamper,
        }
    }

    fn left(&self) -> usize {
        *self.budget.lock().unwrap()
    }
}

impl TaskExecutor for TamperingWorker {
    fn execute(&self, task: TaskSpec) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        use svcca_engine::cache::keys;
        let payload = serde_json::from_slice(&task.payload).unwrap();
        let targets: Vec<String> = match (self.tamper, payload) {
            (
                Tamper::DeletePart,
                TaskPayload::Moments {
                    content,
                    start,
                    end,
                    whole: false,
                    ..
                },
            ) => vec![keys::moments_part(&content, start, end)],
            (
                Tamper::DeleteWhitening | Tamper::LoopWhitening,
                TaskPayload::Whiten { bases, .. },
            ) => bases.iter().map(|b| keys::whitened(&b.hash)).collect(),
            _ => Vec::new(),
        };
        let targets: Vec<std::path::PathBuf> =
            targets.iter().map(|key| self.cache.join(key)).collect();
        let (budget, tamper) = (self.budget.clone(), self.tamper);
        let run = self.inner.execute(task);
        Box::pin(async move {
            let out = run.await;
            for path in targets {
                let mut left = budget.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    std::fs::remove_file(&path).unwrap();
                    if let Tamper::LoopWhitening = tamper {
                        std::os::unix::fs::symlink(&path, &path).unwrap();
                    }
                }
            }
            out
        })
    }
}

/// Drives a job as the coordinator does when the driver fails for now: a task whose result the
/// driver could not merge (a retryable failure of `complete`) is run again and reported again,
/// and a failed `take_ready` is called again, each at most `tries` times.
async fn drive_with_retries(
    driver: &mut dyn svcca_engine::driver::JobDriver,
    exec: &dyn TaskExecutor,
    tries: usize,
) -> Result<svcca_engine::driver::JobSummary, TaskFailure> {
    let mut retried = 0;
    loop {
        let batch = match driver.take_ready().await {
            Ok(batch) => batch,
            Err(failure) if failure.is_retryable() && retried < tries => {
                retried += 1;
                continue;
            }
            Err(failure) => return Err(failure),
        };
        if batch.is_empty() {
            assert!(
                driver.all_done(),
                "the driver has nothing ready but is not done"
            );
            return driver.finish().await;
        }
        for task in batch {
            let mut attempt = 0;
            loop {
                let output = exec.execute(task.clone()).await?;
                match driver.complete(task.id.clone(), output).await {
                    Ok(()) => break,
                    Err(failure) if failure.is_retryable() && attempt < tries => {
                        attempt += 1;
                        retried += 1;
                    }
                    Err(failure) => return Err(failure),
                }
            }
        }
    }
}

/// Two layers of one digits network, and the pairs of a clean run over them.
struct TwoLayers {
    dataset: tempfile::TempDir,
    opener: CountingOpener,
    clean: Vec<svcca_results::PairRecord>,
}

impl TwoLayers {
    async fn new() -> Self {
        let dataset = tempfile::tempdir().unwrap();
        ingest_digits(dataset.path(), |p| {
            p.contains("seed0") && p.contains("step2250") && (p.contains("h2") || p.contains("h4"))
        })
        .await;
        let opener = CountingOpener::default();
        let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let toml = spec_toml(dataset.path(), out.path(), cache.path(), EXTRA);
        run_job(&opener, &toml, Order::AsIssued).await.unwrap();
        let clean = read_results(out.path()).pairs;
        assert_eq!(clean.len(), 2);
        TwoLayers {
            dataset,
            opener,
            clean,
        }
    }

    /// Runs the job again on a fresh cache with a worker spoiling it (`tries`: driven as the
    /// coordinator retries, see [`drive_with_retries`]; `None`: no retries). Returns the pairs,
    /// or the failure, and how much of the worker's budget is left.
    async fn run_tampered(
        &self,
        budget: usize,
        tamper: Tamper,
        tries: Option<usize>,
    ) -> (Result<Vec<svcca_results::PairRecord>, TaskFailure>, usize) {
        let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let worker = TamperingWorker::new(&self.opener, cache.path(), budget, tamper);
        let toml = spec_toml(self.dataset.path(), out.path(), cache.path(), EXTRA);
        let mut driver = factory(&self.opener).create(toml).await.unwrap();
        let ran = match tries {
            Some(tries) => drive_with_retries(driver.as_mut(), &worker, tries)
                .await
                .map(|_| ()),
            None => drive(driver.as_mut(), &worker, Order::AsIssued, None)
                .await
                .map(|summary| assert!(summary.is_some(), "ran to the end")),
        };
        let pairs = ran.map(|()| read_results(out.path()).pairs);
        if pairs.is_err() {
            assert!(!out.path().join("results.json").exists());
        }
        (pairs, worker.left())
    }
}

/// The failure of a job whose entries never stay in the cache: it says what is wrong instead of
/// computing for ever.
fn assert_lost_for_good(pairs: Result<Vec<svcca_results::PairRecord>, TaskFailure>) {
    let message = pairs.expect_err("the entries never stay").to_string();
    assert!(
        message.contains("missing from the cache")
            && message.contains("does not see what the workers write"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moments_part_deleted_while_the_job_runs_is_computed_again() {
    let layers = TwoLayers::new().await;
    // One part deleted after its task stored it: computed again, the same numbers.
    let (pairs, left) = layers.run_tampered(1, Tamper::DeletePart, None).await;
    assert_eq!(left, 0, "a part was deleted");
    assert_eq!(pairs.unwrap(), layers.clean);
    // Every part deleted: the job fails, saying why.
    let (pairs, _) = layers
        .run_tampered(usize::MAX, Tamper::DeletePart, None)
        .await;
    assert_lost_for_good(pairs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_coordinator_could_not_read_is_merged_when_its_task_runs_again() {
    let layers = TwoLayers::new().await;
    // The first whiten task's two whitenings unreadable right after it stored them: the
    // coordinator's read fails (retryably), the task runs again, and its second report is merged.
    let (pairs, left) = layers.run_tampered(2, Tamper::LoopWhitening, Some(2)).await;
    assert_eq!(left, 0, "two whitenings were looped");
    assert_eq!(pairs.unwrap(), layers.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whitening_deleted_while_the_job_runs_is_computed_again() {
    let layers = TwoLayers::new().await;
    let (pairs, left) = layers.run_tampered(1, Tamper::DeleteWhitening, None).await;
    assert_eq!(left, 0, "a whitening was deleted");
    assert_eq!(pairs.unwrap(), layers.clean);
    let (pairs, _) = layers
        .run_tampered(usize::MAX, Tamper::DeleteWhitening, None)
        .await;
    assert_lost_for_good(pairs);
}
