//! What the coordinator asks the sweep driver before it merges a worker's output
//! (`JobDriver::validate`): every real output of a sweep passes, and forged ones (the wrong kind
//! of output for the task, a non-finite matrix, a partial at another cache key, a wrong number of
//! pair records) are refused, so a faulty or hostile worker cannot slip them into the results.

mod job_support;

use job_support::*;
use svcca_engine::cache::DenseMatrix;
use svcca_engine::driver::{JobDriverFactory, TaskExecutor, TaskOutput};
use svcca_engine::exec::Blob;

fn forged(blob: Blob) -> TaskOutput {
    blob.to_output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_driver_accepts_real_outputs_and_refuses_forged_ones() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| p.contains("step2250") && p.contains("seed0")).await;
    let out = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opener = CountingOpener::default();
    let toml = spec_toml(
        ds.path(),
        out.path(),
        cache.path(),
        "comparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cka\"]\n[resources]\nrows_per_task = 250\n",
    );
    let mut driver = factory(&opener).create(toml).await.unwrap();
    let exec = executor(&opener);
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    let mut refuse =
        |driver: &dyn svcca_engine::driver::JobDriver, id: &str, output: TaskOutput, why: &str| {
            let error = driver
                .validate(id, &output)
                .expect_err(&format!("{id}: {why} accepted"));
            assert!(error.contains(why), "{id}: {error}");
            *refused
                .entry(id.split('/').next().unwrap().to_string())
                .or_default() += 1;
        };
    loop {
        let batch = driver.take_ready().await.unwrap();
        if batch.is_empty() {
            break;
        }
        for task in batch {
            let id = task.id.clone();
            let output = exec.execute(task).await.unwrap();
            let kind = id.split('/').next().unwrap();
            match kind {
                "moments" | "whiten" | "project" => {
                    refuse(
                        driver.as_ref(),
                        &id,
                        forged(Blob::Pairs(vec![])),
                        "does not return",
                    );
                }
                "cross" => {
                    let nan = DenseMatrix {
                        rows: 2,
                        cols: 2,
                        data: vec![0.5, f64::NAN, 0.1, 0.2],
                    };
                    refuse(
                        driver.as_ref(),
                        &id,
                        forged(Blob::Matrix(nan.encode())),
                        "not finite",
                    );
                    refuse(
                        driver.as_ref(),
                        &id,
                        forged(Blob::MatrixAt("partials/someone-else.bin".into())),
                        "not where the task put it",
                    );
                }
                "raw" => {
                    refuse(
                        driver.as_ref(),
                        &id,
                        forged(Blob::Pairs(vec![])),
                        "pair records, not",
                    );
                }
                other => panic!("unexpected task kind {other}"),
            }
            refuse(
                driver.as_ref(),
                &id,
                TaskOutput {
                    payload: b"not json".to_vec(),
                },
                "not understood",
            );
            driver
                .validate(&id, &output)
                .unwrap_or_else(|e| panic!("{id}: a real output refused: {e}"));
            driver.complete(id, output).await.unwrap();
        }
    }
    for kind in ["moments", "whiten", "project", "cross", "raw"] {
        assert!(
            refused.get(kind).is_some_and(|n| *n > 0),
            "no {kind} task was tried: {refused:?}"
        );
    }
    assert!(driver.all_done());
    driver.finish().await.unwrap();
    let results = read_results(out.path());
    assert_eq!(results.pairs.len(), 10 * 2, "5 layers all-pairs, 2 metrics");
    assert!(results.pairs.iter().all(|p| p.mean.is_finite()));
}
