//! `precision = "mixed"`: the sweep's moments run f32 products. Its numbers stay within core's
//! tolerance of the f64 sweep's, never share cache entries with f64 ones, do not depend on task
//! order, resume like any job, and a representation too ill-conditioned for f32 fails the job
//! with a message naming it.

mod job_support;

use std::collections::BTreeMap;

use job_support::*;
use svcca_engine::spec::{JobSpec, Mode, Precision, SpecError};
use svcca_results::ResultsFile;

const SELECT: &str = "comparison = \"all-pairs\"\n[select]\nwhere = { step = \"2250\", layer = [\"h2\", \"h4\"] }\n[resources]\nrows_per_task = 250\n";

fn by_pair(results: &ResultsFile) -> BTreeMap<(String, String, String), (f64, Vec<f64>)> {
    results
        .pairs
        .iter()
        .map(|p| {
            (
                (p.a.label(), p.b.label(), p.metric.clone()),
                (p.mean, p.coefficients.clone()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_sweeps_stay_within_tolerance_of_f64_and_never_share_its_cache() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| p.contains("step2250")).await;
    let cache = tempfile::tempdir().unwrap();
    let opener = CountingOpener::default();

    let exact_out = tempfile::tempdir().unwrap();
    let exact_toml = spec_toml(ds.path(), exact_out.path(), cache.path(), SELECT);
    run_job(&opener, &exact_toml, Order::AsIssued)
        .await
        .unwrap();
    let exact = by_pair(&read_results(exact_out.path()));

    // Same cache: the f64 moments must not be taken for mixed ones.
    let mixed_out = tempfile::tempdir().unwrap();
    let mixed_toml = spec_toml(
        ds.path(),
        mixed_out.path(),
        cache.path(),
        &format!("precision = \"mixed\"\n{SELECT}"),
    );
    run_job(&opener, &mixed_toml, Order::AsIssued)
        .await
        .unwrap();
    let mixed_results = read_results(mixed_out.path());
    let mixed = by_pair(&mixed_results);
    assert_eq!(mixed.len(), exact.len());
    assert_eq!(mixed.len(), 15, "6 representations: 15 pairs of svcca");
    let mut largest = 0f64;
    for (pair, (mean, coefficients)) in &mixed {
        let (want_mean, want) = &exact[pair];
        assert_eq!(coefficients.len(), want.len(), "{pair:?}");
        let e = coefficients
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold((mean - want_mean).abs(), f64::max);
        largest = largest.max(e);
        assert!(
            e <= svcca_core::MIXED_PRECISION_TOLERANCE,
            "{pair:?}: {e:e}"
        );
    }
    // Equal bits would mean the f64 moments were reused (or f64 ran).
    assert!(largest > 0.0, "mixed precision gave the f64 numbers");
    println!(
        "mixed vs f64: largest |Δ| {largest:e} over {} pairs",
        mixed.len()
    );

    // The same mixed job again resumes from the output: no task runs, same numbers.
    opener.reset();
    run_job(&opener, &mixed_toml, Order::AsIssued)
        .await
        .unwrap();
    assert_eq!(opener.total(), 0, "a finished job reads no shard again");
    assert_eq!(by_pair(&read_results(mixed_out.path())), mixed);

    // In another task order, on a fresh cache, the same bits.
    let (out, fresh) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = spec_toml(
        ds.path(),
        out.path(),
        fresh.path(),
        &format!("precision = \"mixed\"\n{SELECT}"),
    );
    run_job(&opener, &toml, Order::Reversed).await.unwrap();
    assert_eq!(by_pair(&read_results(out.path())), mixed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_representation_too_ill_conditioned_for_f32_fails_the_job_naming_it() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| p.contains("step2250") && p.contains("seed0")).await;
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opener = CountingOpener::default();
    // CCA keeps every direction, down to ones holding about 5e-5 of the variance.
    let toml = spec_toml(
        ds.path(),
        out.path(),
        cache.path(),
        "precision = \"mixed\"\nmetrics = [\"cca\"]\ncomparison = \"all-pairs\"\n[select]\nwhere = { layer = [\"h2\", \"h4\"] }\n",
    );
    let err = run_job(&opener, &toml, Order::AsIssued)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mixed precision could move")
            && err.contains("--precision f64")
            && err.contains("run=mlp,seed=0,step=2250,layer=h"),
        "{err}"
    );
    assert!(!out.path().join("results.json").exists());
}

#[test]
fn google_compat_and_mixed_precision_are_refused_together() {
    let mut spec = JobSpec::new("file:///d", "file:///o");
    spec.precision = Precision::Mixed;
    spec.validate().unwrap();
    spec.mode = Mode::GoogleCompat;
    match spec.validate() {
        Err(SpecError::Invalid { field, message }) => {
            assert_eq!(field, "precision");
            assert!(message.contains("google-compat"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A job file says it as the flag does; f64 is what an unmarked file means.
    let parsed = JobSpec::parse_toml(
        "dataset = \"file:///d\"\noutput = \"file:///o\"\nprecision = \"mixed\"\n",
    )
    .unwrap();
    assert_eq!(parsed.precision, Precision::Mixed);
    let parsed = JobSpec::parse_toml("dataset = \"file:///d\"\noutput = \"file:///o\"\n").unwrap();
    assert_eq!(parsed.precision, Precision::F64);
    assert!(!parsed.to_toml().contains("precision"));
}
