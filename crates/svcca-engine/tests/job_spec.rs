//! Bad job specs and bad selections fail at job creation with a clear, non-retryable error.

mod job_support;

use job_support::*;
use svcca_engine::driver::JobDriverFactory;
use svcca_engine::spec::{ComparisonPlan, JobSpec, Metric};

async fn create_error(opener: &CountingOpener, toml: &str) -> String {
    match factory(opener).create(toml.to_string()).await {
        Ok(_) => panic!("job was accepted: {toml}"),
        Err(e) => {
            assert!(!e.is_retryable(), "{e} should not be retryable");
            e.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_and_selections_are_refused_with_a_reason() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| {
        p.contains("seed0/step2250") || p.contains("seed1/step0/h1")
    })
    .await;
    let opener = CountingOpener::default();
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let base = |extra: &str| spec_toml(ds.path(), out.path(), cache.path(), extra);
    let cases = [
        ("comparison = \"everything\"\n", "unknown variant"),
        ("metrics = [\"svcca\", \"mystery\"]\n", "unknown variant"),
        ("[keep]\nvariance = 0.0\n", "not a fraction"),
        (
            "[select]\nwhere = { run = \"resnet\" }\n",
            "matches no representation",
        ),
        (
            "[select]\nkeys = [\"mlp/seed7/*\"]\n",
            "matches no representation",
        ),
        (
            "comparison = \"cross-seed\"\n[select]\nwhere = { seed = \"0\" }\n",
            "no pair",
        ),
        (
            "comparison = \"vs-final\"\n[select]\nwhere = { step = \"2250\" }\n",
            "no pair",
        ),
        (
            "comparison = \"pairs\"\npairs = [[\"mlp/seed0/step2250/h1\", \"mlp/seed0/step9/h1\"]]\n",
            "not a selected representation",
        ),
        ("[resources]\nmemory_mb = 1\n", "memory_mb"),
    ];
    for (extra, expected) in cases {
        let err = create_error(&opener, &base(extra)).await;
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
    let missing = tempfile::tempdir().unwrap();
    let err = create_error(
        &opener,
        &spec_toml(missing.path(), out.path(), cache.path(), ""),
    )
    .await;
    assert!(err.contains("manifest") || err.contains("dataset"), "{err}");
    assert_eq!(opener.total(), 0, "no shard is read while planning");
}

#[test]
fn specs_built_in_code_equal_their_toml() {
    let spec = JobSpec::new("s3://bucket/acts", "s3://bucket/out")
        .with_comparison(ComparisonPlan::CrossSeed)
        .with_where("layer", "h*")
        .with_metrics(vec![Metric::Cka, Metric::Svcca]);
    let back = JobSpec::from_toml(&spec.to_toml()).unwrap();
    assert_eq!(back, spec);
    assert_eq!(back.metric_set(), vec![Metric::Svcca, Metric::Cka]);
}
