//! Shared helpers of the job tests: a digits dataset ingested with svcca-storage, a counting
//! dataset opener, a tiny local driver loop (no gRPC) with chosen completion orders, and the
//! reference comparison (`svcca_core::compare_moments` on the two `.npy` files).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use svcca_core::{Comparison, JointMoments, RowBlock};
use svcca_engine::driver::{
    JobDriver, JobDriverFactory, JobSummary, TaskExecutor, TaskFailure, TaskOutput, TaskSpec,
};
use svcca_engine::exec::{ExecutorConfig, SweepExecutor, compare_options};
use svcca_engine::job::SweepFactory;
use svcca_engine::plan::RepInfo;
use svcca_engine::source::{RowSource, Rows, SourceError, SourceOpener, StorageOpener};
use svcca_engine::spec::{KeepRule, Metric, Mode};
use svcca_results::{RepresentationKey, ResultsFile};

pub fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits")
}

/// Copies the digits MLP files whose relative path passes `keep` into a source tree and ingests
/// them into the dataset at `dest` (shards of 200 datapoints, so each representation has three).
pub async fn ingest_digits(dest: &Path, keep: impl Fn(&str) -> bool) {
    let src = tempfile::tempdir().unwrap();
    let mut copied = 0;
    for seed in 0..3 {
        for step in [0, 25, 100, 400, 2250] {
            for layer in ["h1", "h2", "h3", "h4", "logits"] {
                let rel = format!("mlp/seed{seed}/step{step}/{layer}.npy");
                if keep(&rel) {
                    let to = src.path().join(&rel);
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(digits().join(&rel), &to).unwrap();
                    copied += 1;
                }
            }
        }
    }
    assert!(copied > 0, "the filter kept no file");
    let config = svcca_storage::IngestConfig::new(src.path(), dest.to_str().unwrap().to_string())
        .with_shard_rows(200);
    svcca_storage::ingest(config).await.unwrap();
}

/// Counts `read_rows` calls per representation label: each is one read of raw shards.
#[derive(Clone, Default)]
pub struct CountingOpener {
    inner: StorageOpener,
    pub reads: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CountingOpener {
    pub fn total(&self) -> u64 {
        self.reads.lock().unwrap().values().sum()
    }
    pub fn labels(&self) -> Vec<String> {
        self.reads.lock().unwrap().keys().cloned().collect()
    }
    pub fn reset(&self) {
        self.reads.lock().unwrap().clear();
    }
}

struct CountingSource {
    inner: Arc<dyn RowSource>,
    reads: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RowSource for CountingSource {
    fn list(&self) -> BoxFuture<'_, Result<Vec<RepInfo>, SourceError>> {
        self.inner.list()
    }
    fn read_rows<'a>(
        &'a self,
        key: &'a RepresentationKey,
        start: u64,
        end: u64,
    ) -> BoxFuture<'a, Result<Rows, SourceError>> {
        *self.reads.lock().unwrap().entry(key.label()).or_default() += 1;
        self.inner.read_rows(key, start, end)
    }
    fn verify<'a>(
        &'a self,
        keys: &'a [RepresentationKey],
        records: &'a svcca_engine::cache::Store,
    ) -> BoxFuture<'a, Result<svcca_engine::source::VerifyReport, SourceError>> {
        self.inner.verify(keys, records)
    }
}

impl SourceOpener for CountingOpener {
    fn open(&self, url: String) -> BoxFuture<'static, Result<Arc<dyn RowSource>, SourceError>> {
        let inner = self.inner.open(url);
        let reads = self.reads.clone();
        Box::pin(async move {
            Ok(Arc::new(CountingSource {
                inner: inner.await?,
                reads,
            }) as Arc<dyn RowSource>)
        })
    }
}

pub fn factory(opener: &CountingOpener) -> SweepFactory {
    SweepFactory::new(Arc::new(opener.clone()))
}

pub fn executor(opener: &CountingOpener) -> SweepExecutor {
    SweepExecutor::new(Arc::new(opener.clone()), ExecutorConfig::default())
}

/// The order in which a batch of finished tasks is reported to the driver.
#[derive(Debug, Clone, Copy)]
pub enum Order {
    AsIssued,
    Reversed,
    /// Odd positions first, then even ones.
    Interleaved,
}

/// Drives a job to the end without a coordinator: take every ready task, run the batch
/// concurrently, report the results in `order`. With `stop_after`, returns `None` after that
/// many completions (a job "killed" midway).
pub async fn drive(
    driver: &mut dyn JobDriver,
    exec: &dyn TaskExecutor,
    order: Order,
    stop_after: Option<usize>,
) -> Result<Option<JobSummary>, TaskFailure> {
    let mut completed = 0usize;
    loop {
        let batch: Vec<TaskSpec> = driver.take_ready().await?;
        if batch.is_empty() {
            assert!(
                driver.all_done(),
                "the driver has nothing ready but is not done"
            );
            return Ok(Some(driver.finish().await?));
        }
        let outputs =
            futures::future::join_all(batch.iter().map(|t| exec.execute(t.clone()))).await;
        let mut done: Vec<(String, Result<TaskOutput, TaskFailure>)> =
            batch.into_iter().map(|t| t.id).zip(outputs).collect();
        match order {
            Order::AsIssued => {}
            Order::Reversed => done.reverse(),
            Order::Interleaved => {
                let (odd, even): (Vec<_>, Vec<_>) =
                    done.into_iter().enumerate().partition(|(i, _)| i % 2 == 1);
                done = odd.into_iter().chain(even).map(|(_, x)| x).collect();
            }
        }
        for (id, out) in done {
            driver.complete(id, out?).await?;
            completed += 1;
            if stop_after == Some(completed) {
                return Ok(None);
            }
        }
    }
}

/// Creates a driver from TOML and drives it to the end.
pub async fn run_job(
    opener: &CountingOpener,
    toml: &str,
    order: Order,
) -> Result<JobSummary, TaskFailure> {
    let mut driver = factory(opener).create(toml.to_string()).await?;
    let exec = executor(opener);
    Ok(drive(driver.as_mut(), &exec, order, None)
        .await?
        .expect("ran to the end"))
}

/// The full record: `results.json` with the coefficients put back from `pairs.parquet`, where
/// sweeps keep them by default (so every comparison of coefficients below reads that table).
pub fn read_results(out: &Path) -> ResultsFile {
    let mut results =
        ResultsFile::from_json(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    if results.coefficients != svcca_results::CoefficientStore::Json {
        assert!(
            results.pairs.iter().all(|p| p.coefficients.is_empty()),
            "results.json holds coefficients although it says they are in pairs.parquet"
        );
        results
            .fill_coefficients(std::fs::read(out.join(svcca_results::PAIRS_TABLE_NAME)).unwrap())
            .unwrap();
    }
    results
}

fn npy_path(key: &RepresentationKey) -> PathBuf {
    digits().join(format!(
        "{}/seed{}/step{}/{}.npy",
        key.run,
        key.seed.unwrap(),
        key.step.unwrap(),
        key.layer
    ))
}

/// `svcca compare`'s computation on the two `.npy` files: core's `compare_moments` over joint
/// moments, with the options a sweep uses for `metric`. With a [`Feed`] other than `Whole`, the
/// same datapoints arrive reversed or in blocks merged with Chan's update (the same statistics
/// in exact arithmetic): how far that moves a number is the reference's own rounding
/// sensitivity.
pub fn reference_with(
    a: &RepresentationKey,
    b: &RepresentationKey,
    metric: Metric,
    mode: Mode,
    keep: KeepRule,
    feed: Feed,
) -> Comparison {
    let reversed = feed == Feed::Reversed;
    let mut x = svcca_storage::npy::read_f32(npy_path(a)).unwrap();
    let mut y = svcca_storage::npy::read_f32(npy_path(b)).unwrap();
    if reversed {
        for arr in [&mut x, &mut y] {
            let len = arr.row_len();
            arr.data = arr
                .data
                .chunks_exact(len)
                .rev()
                .flatten()
                .copied()
                .collect();
        }
    }
    let mut joint = JointMoments::new(x.row_len(), y.row_len());
    let block = if feed == Feed::Blocks { 200 } else { x.rows() };
    let (dx, dy) = (x.row_len(), y.row_len());
    for start in (0..x.rows()).step_by(block) {
        let end = (start + block).min(x.rows());
        joint
            .push(
                RowBlock::f32(&x.data[start * dx..end * dx], end - start, dx).unwrap(),
                RowBlock::f32(&y.data[start * dy..end * dy], end - start, dy).unwrap(),
            )
            .unwrap();
    }
    svcca_core::compare_moments(&joint, &compare_options(metric, mode, keep)).unwrap()
}

/// How the reference is fed the datapoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Whole,
    Reversed,
    Blocks,
}

pub fn reference(
    a: &RepresentationKey,
    b: &RepresentationKey,
    metric: Metric,
    mode: Mode,
    keep: KeepRule,
) -> Comparison {
    reference_with(a, b, metric, mode, keep, Feed::Whole)
}

/// How a results file differs from the reference.
#[derive(Debug, Default)]
pub struct Differences {
    /// svcca, cca, cka: largest difference of mean, google mean or any coefficient.
    pub strict: f64,
    /// pwcca: largest difference of the canonical correlations.
    pub pwcca_coefficients: f64,
    /// pwcca: largest |sweep − compare| of the mean, and that pair's reference self-spread.
    pub pwcca_mean: f64,
    /// pwcca: pairs whose mean differs by more than 1e-9 and more than 10x the reference's own
    /// spread (datapoints reversed, or merged in blocks); must be none.
    pub pwcca_unexplained: Vec<String>,
}

/// Compares every pair of a results file with the reference (dims must agree exactly).
///
/// PWCCA weights come from the singular vectors of the cross-covariance, which are determined
/// only up to rotation within clusters of (nearly) equal canonical correlations: rounding at
/// 1e-16 moves them a lot there, and the weighted mean with them. So PWCCA is held to the
/// reference's own reproducibility (the same inputs in another row order), not to 1e-9.
pub fn differences(results: &ResultsFile, mode: Mode, keep: KeepRule) -> Differences {
    let mut d = Differences::default();
    for p in &results.pairs {
        let metric: Metric = p.metric.parse().unwrap();
        let r = reference(&p.a, &p.b, metric, mode, keep);
        assert_eq!(
            (p.dims_a, p.dims_b),
            (r.dims_x, r.dims_y),
            "{} {} vs {}",
            p.metric,
            p.a.label(),
            p.b.label()
        );
        assert_eq!(p.coefficients.len(), r.coefficients.len());
        let coef = p
            .coefficients
            .iter()
            .zip(&r.coefficients)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max);
        if metric == Metric::Pwcca {
            d.pwcca_coefficients = d.pwcca_coefficients.max(coef);
            let diff = (p.mean - r.mean).abs();
            d.pwcca_mean = d.pwcca_mean.max(diff);
            if diff > 1e-9 {
                let spread = [Feed::Reversed, Feed::Blocks]
                    .into_iter()
                    .map(|feed| {
                        (reference_with(&p.a, &p.b, metric, mode, keep, feed).mean - r.mean).abs()
                    })
                    .fold(0.0, f64::max);
                if diff > 10.0 * spread {
                    d.pwcca_unexplained.push(format!(
                        "{} vs {}: |sweep - compare| {diff:e}, compare's own spread {spread:e}",
                        p.a.label(),
                        p.b.label()
                    ));
                }
            }
            continue;
        }
        let mut worst = (p.mean - r.mean).abs().max(coef);
        if let (Some(g), Some(h)) = (p.google_mean, r.google_mean) {
            worst = worst.max((g - h).abs());
        }
        d.strict = d.strict.max(worst);
    }
    d
}

/// Asserts the sweep agrees with the reference (see [`differences`]) and prints the numbers.
pub fn assert_matches_reference(
    what: &str,
    results: &ResultsFile,
    mode: Mode,
    keep: KeepRule,
) -> Differences {
    let d = differences(results, mode, keep);
    println!(
        "{what}: max |sweep - compare| = {:e} (svcca/cca/cka), pwcca coefficients {:e}, pwcca mean {:e}",
        d.strict, d.pwcca_coefficients, d.pwcca_mean
    );
    assert!(d.strict < 1e-9, "{what}: {:e}", d.strict);
    assert!(
        d.pwcca_coefficients < 1e-9,
        "{what}: pwcca coefficients {:e}",
        d.pwcca_coefficients
    );
    assert!(
        d.pwcca_unexplained.is_empty(),
        "{what}: {:#?}",
        d.pwcca_unexplained
    );
    d
}

/// A job spec's TOML for the tests.
pub fn spec_toml(dataset: &Path, out: &Path, cache: &Path, extra: &str) -> String {
    format!(
        "dataset = {:?}\noutput = {:?}\ncache = {:?}\n{extra}\n",
        dataset.to_str().unwrap(),
        out.to_str().unwrap(),
        cache.to_str().unwrap()
    )
}
