//! Sweeps over the digits MLP: every pair equals core's `compare_moments` on the same two `.npy`
//! files, and results do not depend on task completion order or the number of workers.

mod job_support;

use std::sync::Arc;

use job_support::*;
use svcca_engine::exec::ExecutorConfig;
use svcca_engine::spec::{KeepRule, Mode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_pairs_at_the_last_step_match_compare_for_every_metric() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| p.contains("step2250")).await;
    let out = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opener = CountingOpener::default();
    // 250 rows per task over 200-row shards: chunks straddle shard boundaries.
    let toml = spec_toml(
        ds.path(),
        out.path(),
        cache.path(),
        "comparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cca\", \"pwcca\", \"cka\"]\n[select]\nwhere = { run = \"mlp\", step = \"2250\" }\n[resources]\nrows_per_task = 250\n",
    );
    let summary = run_job(&opener, &toml, Order::AsIssued).await.unwrap();
    let results = read_results(out.path());
    assert_eq!(results.representations.len(), 15);
    assert_eq!(results.pairs.len(), 105 * 4, "{:?}", summary.lines);
    assert_matches_reference(
        "all-pairs step 2250, 4 metrics",
        &results,
        Mode::Default,
        KeepRule::Variance(0.99),
    );
    // h1 keeps 66 of its 128 directions at 99% variance in the digits MLP (seed 0).
    let h1 = results
        .representations
        .iter()
        .find(|r| r.key.label() == "run=mlp,seed=0,step=2250,layer=h1")
        .unwrap();
    assert!(
        h1.kept_dims > 10 && h1.kept_dims < 128,
        "kept {}",
        h1.kept_dims
    );
    for metric in ["svcca", "cca", "pwcca", "cka"] {
        let csv = std::fs::read_to_string(out.path().join(format!("matrix_{metric}.csv"))).unwrap();
        assert_eq!(csv.lines().count(), 16, "{metric}: header + 15 rows");
        assert!(
            // Canonical keys hold commas: CSV quotes them.
            csv.starts_with("label,\"run=mlp,seed=0,step=2250,layer=h1\","),
            "{metric}: {}",
            &csv[..80]
        );
        assert!(out.path().join(format!("matrix_{metric}.arrow")).exists());
    }
    assert!(out.path().join("summary.json").exists());
    assert!(out.path().join("job.toml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vs_final_over_checkpoints_matches_compare() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| {
        p.contains("/h2.npy") || p.contains("/logits.npy")
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opener = CountingOpener::default();
    let toml = spec_toml(
        ds.path(),
        out.path(),
        cache.path(),
        "comparison = \"vs-final\"\nmetrics = [\"svcca\", \"pwcca\"]\n[keep]\ndims = 20\n",
    );
    run_job(&opener, &toml, Order::Reversed).await.unwrap();
    let results = read_results(out.path());
    // 3 seeds x 2 layers x 4 earlier checkpoints, two metrics.
    assert_eq!(results.pairs.len(), 24 * 2);
    for p in &results.pairs {
        assert_eq!(p.b.step, Some(2250));
        assert_eq!((p.a.seed, &p.a.layer), (p.b.seed, &p.b.layer));
    }
    assert_matches_reference(
        "vs-final h2+logits, svcca dims 20 + pwcca",
        &results,
        Mode::Default,
        KeepRule::Dims(20),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_compat_cross_seed_matches_compare() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| {
        p.contains("step400") && (p.contains("h3") || p.contains("h4"))
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opener = CountingOpener::default();
    let toml = spec_toml(
        ds.path(),
        out.path(),
        cache.path(),
        "comparison = \"cross-seed\"\nmode = \"google-compat\"\nmetrics = [\"svcca\", \"cca\"]\n",
    );
    run_job(&opener, &toml, Order::Interleaved).await.unwrap();
    let results = read_results(out.path());
    assert_eq!(
        results.pairs.len(),
        2 * 3 * 2,
        "2 layers x 3 seed pairs x 2 metrics"
    );
    assert_matches_reference(
        "cross-seed google-compat",
        &results,
        Mode::GoogleCompat,
        KeepRule::Variance(0.99),
    );
}

/// Runs the same job (fresh output and cache each time) in several completion orders and
/// through the embedded gRPC cluster with 1, 2 and 3 workers: the results must be identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_do_not_depend_on_order_or_worker_count() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| {
        p.contains("seed0") || (p.contains("seed1") && p.contains("step2250"))
    })
    .await;
    let extra = "comparison = \"all-pairs\"\nmetrics = [\"svcca\", \"pwcca\", \"cka\"]\n[select]\nwhere = { layer = [\"h1\", \"h3\"], step = [\"100\", \"2250\"] }\n[resources]\nrows_per_task = 150\n";
    let mut runs = Vec::new();
    for order in [Order::AsIssued, Order::Reversed, Order::Interleaved] {
        let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opener = CountingOpener::default();
        run_job(
            &opener,
            &spec_toml(ds.path(), out.path(), cache.path(), extra),
            order,
        )
        .await
        .unwrap();
        runs.push((format!("{order:?}"), read_results(out.path())));
    }
    for workers in [1, 2, 3] {
        let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opener = CountingOpener::default();
        let summary = svcca_engine::client::run_embedded(
            Arc::new(factory(&opener)),
            Arc::new(svcca_engine::exec::SweepExecutor::new(
                Arc::new(opener.clone()),
                ExecutorConfig::default(),
            )),
            spec_toml(ds.path(), out.path(), cache.path(), extra),
            workers,
            |_| {},
        )
        .await
        .unwrap();
        assert!(!summary.lines.is_empty());
        runs.push((format!("{workers} workers"), read_results(out.path())));
    }
    let (first_name, first) = &runs[0];
    // 6 representations (seed0 x 2 steps x 2 layers + seed1 x 1 step x 2 layers) -> 15 pairs.
    assert_eq!(first.pairs.len(), 15 * 3);
    for (name, r) in &runs[1..] {
        assert_eq!(r.pairs, first.pairs, "{name} differs from {first_name}");
        assert_eq!(
            r.representations, first.representations,
            "{name} differs from {first_name}"
        );
    }
    assert_matches_reference(
        "order/worker-count job",
        first,
        Mode::Default,
        KeepRule::Variance(0.99),
    );
}

/// The progress total comes from the plan before any task runs: it never climbs as stages are
/// planned, and it is exact from the start where pass 2 does not depend on whitening (CKA alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_is_known_up_front_and_never_grows() {
    let ds = tempfile::tempdir().unwrap();
    ingest_digits(ds.path(), |p| {
        p.contains("seed0") || (p.contains("seed1") && p.contains("step2250"))
    })
    .await;
    for (metrics, exact_from_start) in [("[\"cka\"]", true), ("[\"svcca\", \"cka\"]", false)] {
        let extra = format!(
            "comparison = \"all-pairs\"\nmetrics = {metrics}\n[select]\nwhere = {{ layer = [\"h1\", \"h3\"], step = [\"100\", \"2250\"] }}\n[resources]\nrows_per_task = 150\n"
        );
        let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opener = CountingOpener::default();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        svcca_engine::client::run_embedded(
            Arc::new(factory(&opener)),
            Arc::new(svcca_engine::exec::SweepExecutor::new(
                Arc::new(opener.clone()),
                ExecutorConfig::default(),
            )),
            spec_toml(ds.path(), out.path(), cache.path(), &extra),
            2,
            move |p| record.lock().unwrap().push(p),
        )
        .await
        .unwrap();
        let seen = seen.lock().unwrap().clone();
        let (first, last) = (seen[0], *seen.last().unwrap());
        assert_eq!(last.done, last.total, "{metrics}: {seen:?}");
        assert!(
            first.total >= last.total && first.total > first.done,
            "{metrics}: {seen:?}"
        );
        for pair in seen.windows(2) {
            assert!(
                pair[1].total <= pair[0].total,
                "{metrics}: the total grew: {pair:?} in {seen:?}"
            );
        }
        if exact_from_start {
            assert!(
                seen.iter().all(|p| p.total == last.total),
                "{metrics}: exact from the start: {seen:?}"
            );
        }
    }
}
