//! Conv layers in sweeps: per-frequency (DFT) blocks spread over tasks, assembled into the same
//! comparison as core's `compare_conv` on the two `.npy` files; fold and pool as one task.

mod job_support;

use job_support::*;
use svcca_core::conv::{ConvInput, Layout, compare_conv};
use svcca_engine::exec::ConvSettings;
use svcca_engine::spec::{ConvMethod, KeepRule, Metric, Mode};
use svcca_results::{RepresentationKey, ResultsFile};

async fn ingest_conv(dest: &std::path::Path) {
    let src = tempfile::tempdir().unwrap();
    for seed in 0..2 {
        for layer in ["conv1", "conv2"] {
            let rel = format!("conv/seed{seed}/step1500/{layer}.npy");
            let to = src.path().join(&rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(digits().join(&rel), &to).unwrap();
        }
    }
    let config = svcca_storage::IngestConfig::new(src.path(), dest.to_str().unwrap().to_string())
        .with_shard_rows(200)
        .with_layout(svcca_storage::LayoutRule::all(svcca_storage::Layout::Nhwc));
    svcca_storage::ingest(config).await.unwrap();
}

fn conv_reference(
    a: &RepresentationKey,
    b: &RepresentationKey,
    settings: &ConvSettings,
) -> svcca_core::conv::ConvComparison {
    let path = |k: &RepresentationKey| {
        digits().join(format!(
            "conv/seed{}/step{}/{}.npy",
            k.seed.unwrap(),
            k.step.unwrap(),
            k.layer
        ))
    };
    let x = svcca_storage::npy::read_f32(path(a)).unwrap();
    let y = svcca_storage::npy::read_f32(path(b)).unwrap();
    compare_conv(
        ConvInput::f32(&x.data, &x.shape, Layout::Nhwc).unwrap(),
        ConvInput::f32(&y.data, &y.shape, Layout::Nhwc).unwrap(),
        &settings.options(),
    )
    .unwrap()
}

fn max_conv_difference(results: &ResultsFile, method: ConvMethod) -> f64 {
    let mut worst = 0.0f64;
    for p in &results.pairs {
        let metric: Metric = p.metric.parse().unwrap();
        let settings = ConvSettings::new(metric, method, Mode::Default, KeepRule::Variance(0.99));
        let r = conv_reference(&p.a, &p.b, &settings);
        assert_eq!((p.dims_a, p.dims_b), (r.x_dims, r.y_dims));
        assert_eq!(p.coefficients.len(), r.coefficients.len());
        // What each CCA saw, for nulls and sample-size judgements: fold's datapoints are the
        // images × the 8x8 positions.
        let conv = p.conv.as_ref().expect("conv pairs record their method");
        let per_image = if method == ConvMethod::Fold { 64 } else { 1 };
        assert_eq!(
            (conv.method.as_str(), conv.datapoints),
            (method.as_str(), 597 * per_image)
        );
        assert_eq!(p.warnings, r.warnings);
        worst = worst.max((p.mean - r.mean).abs());
        worst = worst.max((p.google_mean.unwrap() - r.google_mean).abs());
        for (u, v) in p.coefficients.iter().zip(&r.coefficients) {
            worst = worst.max((u - v).abs());
        }
        if method == ConvMethod::Dft {
            let freqs = p
                .frequencies
                .as_ref()
                .expect("dft pairs carry per-frequency results");
            assert_eq!(freqs.len(), r.frequencies.len());
            for (f, g) in freqs.iter().zip(&r.frequencies) {
                assert_eq!((f.i, f.j), (g.i, g.j));
                assert_eq!((f.dims_a, f.dims_b), (Some(g.x_dims), Some(g.y_dims)));
                worst = worst.max((f.mean - g.mean).abs());
            }
        }
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dft_blocks_over_tasks_equal_compare_conv() {
    let ds = tempfile::tempdir().unwrap();
    ingest_conv(ds.path()).await;
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opener = CountingOpener::default();
    let toml = spec_toml(
        ds.path(),
        out.path(),
        cache.path(),
        "comparison = \"all-pairs\"\nconv = \"dft\"\nmetrics = [\"svcca\", \"cca\", \"cka\"]\n[resources]\nrows_per_task = 250\n",
    );
    let summary = run_job(&opener, &toml, Order::Reversed).await.unwrap();
    let results = read_results(out.path());
    // 4 conv layers: 6 pairs x (svcca, cca); cka is not computed for conv layers.
    assert_eq!(results.pairs.len(), 12, "{:?}", summary.lines);
    let worst = max_conv_difference(&results, ConvMethod::Dft);
    println!("conv dft all-pairs: max |sweep - compare_conv| = {worst:e}");
    assert!(worst < 1e-9, "{worst:e}");
    let summary_json = std::fs::read_to_string(out.path().join("summary.json")).unwrap();
    assert!(
        summary_json.contains("not computed for conv layers"),
        "{summary_json}"
    );
    assert!(
        summary_json.contains("\"conv\""),
        "conv tasks are counted: {summary_json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_and_fold_equal_compare_conv() {
    let ds = tempfile::tempdir().unwrap();
    ingest_conv(ds.path()).await;
    for (method, name) in [(ConvMethod::Pool, "pool"), (ConvMethod::Fold, "fold")] {
        let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opener = CountingOpener::default();
        let toml = spec_toml(
            ds.path(),
            out.path(),
            cache.path(),
            &format!(
                "comparison = \"cross-seed\"\nconv = \"{name}\"\nmetrics = [\"svcca\", \"cca\"]\n"
            ),
        );
        run_job(&opener, &toml, Order::AsIssued).await.unwrap();
        let results = read_results(out.path());
        assert_eq!(
            results.pairs.len(),
            4,
            "{name}: 2 layers x 1 seed pair x 2 metrics"
        );
        let worst = max_conv_difference(&results, method);
        println!("conv {name} cross-seed: max |sweep - compare_conv| = {worst:e}");
        assert!(worst < 1e-9, "{name}: {worst:e}");
    }
}

/// Mixed precision covers dense layers only: a mixed sweep of conv layers gives the f64 sweep's
/// numbers bit for bit and says that its conv pairs were compared in f64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_sweep_compares_conv_layers_in_f64_and_says_so() {
    let ds = tempfile::tempdir().unwrap();
    ingest_conv(ds.path()).await;
    let opener = CountingOpener::default();
    let mut runs = Vec::new();
    for precision in ["f64", "mixed"] {
        let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let toml = spec_toml(
            ds.path(),
            out.path(),
            cache.path(),
            &format!(
                "precision = \"{precision}\"\ncomparison = \"all-pairs\"\nconv = \"pool\"\nmetrics = [\"svcca\"]\n"
            ),
        );
        run_job(&opener, &toml, Order::AsIssued).await.unwrap();
        let summary = std::fs::read_to_string(out.path().join("summary.json")).unwrap();
        let said = summary.contains("6 pair(s) of conv layers were compared in f64");
        assert_eq!(said, precision == "mixed", "{precision}: {summary}");
        let pairs: Vec<_> = read_results(out.path())
            .pairs
            .into_iter()
            .map(|p| (p.a.label(), p.b.label(), p.mean, p.coefficients))
            .collect();
        assert_eq!(pairs.len(), 6);
        runs.push(pairs);
    }
    assert_eq!(runs[0], runs[1]);
}
