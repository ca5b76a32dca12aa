//! Null baselines of conv pairs on the real digits convnet (`fixtures/digits/conv`: `conv1`
//! [597, 8, 8, 16] and `conv2` [597, 8, 8, 32], two seeds at the last step; `conv2` of seed 0 at
//! step 0 too),
//! compared by the DFT method with SVCCA (99% of the variance per frequency), as a sweep stores
//! them: each pair's null is computed per frequency and sits below the pair's similarity, and the
//! report shows the dims per frequency, never the bare sum beside the images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use svcca_core::conv::{ConvComparison, ConvInput, ConvOptions, KeepRule, Layout, compare_conv};
use svcca_report::compute::{NullCache, conv_cca_shapes, conv_gaussian_null};
use svcca_report::{ReportOptions, write_report};
use svcca_results::{
    ConvRecord, FrequencyRecord, PairRecord, RepresentationKey, RepresentationRecord, ResultsFile,
    SCHEMA_VERSION,
};

fn fixture(seed: i64, step: i64, layer: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../fixtures/digits/conv/seed{seed}/step{step}/{layer}.npy"
    ))
}

fn key(seed: i64, step: i64, layer: &str) -> RepresentationKey {
    RepresentationKey {
        run: "convnet".into(),
        seed: Some(seed),
        step: Some(step),
        layer: layer.into(),
        tags: BTreeMap::new(),
    }
}

struct Layer {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn load(seed: i64, step: i64, layer: &str) -> Layer {
    let a = svcca_storage::npy::read_f32(fixture(seed, step, layer)).unwrap();
    assert_eq!(a.shape.len(), 4, "{layer}");
    Layer {
        shape: a.shape.clone(),
        data: a.data,
    }
}

/// The pair as the sweep stores it (the engine's `conv_record`).
fn record(a: RepresentationKey, b: RepresentationKey, c: &ConvComparison) -> PairRecord {
    PairRecord {
        a,
        b,
        metric: "svcca".into(),
        mean: c.mean,
        google_mean: Some(c.google_mean),
        equal_k_mean: None,
        dims_a: c.x_dims,
        dims_b: c.y_dims,
        coefficients: c.coefficients.clone(),
        weights: None,
        frequencies: Some(
            c.frequencies
                .iter()
                .map(|f| FrequencyRecord {
                    i: f.i,
                    j: f.j,
                    coefficients: f.coefficients.clone(),
                    mean: f.mean,
                    dims_a: Some(f.x_dims),
                    dims_b: Some(f.y_dims),
                })
                .collect(),
        ),
        conv: Some(ConvRecord {
            method: "dft".into(),
            datapoints: c.images,
            grid: c.grid,
        }),
        warnings: c.warnings.clone(),
    }
}

/// vs-final (`conv2` at step 0 against step 1500, seed 0: the least similar pair) and
/// cross-seed (seed 0 against seed 1 at step 1500) pairs of both conv layers.
fn results() -> ResultsFile {
    let opts = ConvOptions::default().with_keep(KeepRule::VarianceFraction(0.99));
    let wanted = [
        ((0, 0, "conv2"), (0, 1500, "conv2")),
        ((0, 1500, "conv1"), (1, 1500, "conv1")),
        ((0, 1500, "conv2"), (1, 1500, "conv2")),
    ];
    let mut pairs = Vec::new();
    let mut reps: BTreeMap<RepresentationKey, Vec<usize>> = BTreeMap::new();
    for ((sa, ta, la), (sb, tb, lb)) in wanted {
        let (x, y) = (load(sa, ta, la), load(sb, tb, lb));
        let c = compare_conv(
            ConvInput::f32(&x.data, &x.shape, Layout::Nhwc).unwrap(),
            ConvInput::f32(&y.data, &y.shape, Layout::Nhwc).unwrap(),
            &opts,
        )
        .unwrap();
        reps.insert(key(sa, ta, la), x.shape[1..].to_vec());
        reps.insert(key(sb, tb, lb), y.shape[1..].to_vec());
        pairs.push(record(key(sa, ta, la), key(sb, tb, lb), &c));
    }
    ResultsFile {
        schema_version: SCHEMA_VERSION,
        job_spec: String::new(),
        versions: BTreeMap::new(),
        comparison: "pairs".into(),
        settings: "metrics svcca; keep var 0.99; mode default; conv dft".into(),
        representations: reps
            .into_iter()
            .map(|(key, shape)| RepresentationRecord {
                key,
                shape,
                datapoints: 597,
                kept_dims: 0,
                dropped_neurons: vec![],
                spectrum: vec![],
                checksum: String::new(),
                depth: None,
                layout: Some("nhwc".into()),
            })
            .collect(),
        pairs,
        coefficients: svcca_results::CoefficientStore::Json,
    }
}

#[test]
fn every_conv_pairs_null_sits_below_its_similarity() {
    let results = results();
    let mut cache = NullCache::new(3, 0);
    for p in &results.pairs {
        let shape = |k: &RepresentationKey| {
            results
                .representations
                .iter()
                .find(|r| &r.key == k)
                .unwrap()
                .shape
                .clone()
        };
        let shapes = conv_cca_shapes(p, &shape(&p.a), &shape(&p.b), 597)
            .unwrap()
            .unwrap();
        assert_eq!(shapes.ccas.len(), 64);
        // The summed dims exceed the images for conv2: as one CCA that would be trivially 1.
        let null = conv_gaussian_null("pair", "svcca", &shapes, &mut cache).unwrap();
        let conv = null.conv.as_ref().unwrap();
        assert_eq!(conv.dims_a.total, p.dims_a);
        assert!(conv.dims_a.max <= 32 && null.dims_a == conv.dims_a.max);
        eprintln!(
            "{} vs {}: svcca {:.3}, null {:.3} ± {:.3} (max {:.3}); dims a {}, b {}",
            p.a.label(),
            p.b.label(),
            p.mean,
            null.mean,
            null.std,
            null.max,
            conv.dims_a.text(),
            conv.dims_b.text()
        );
        assert!(
            null.max < p.mean,
            "{} vs {}: null {:.3} is not below the pair's {:.3}",
            p.a.label(),
            p.b.label(),
            null.max,
            p.mean
        );
        // With 597 images and at most 32 dims per frequency, the null of each CCA is small.
        assert!(null.mean > 0.0 && null.mean < 0.5, "{}", null.mean);
    }
    // Frequencies of one shape are computed once, across the grid and across pairs.
    assert!(cache.shapes() < 3 * 64, "{}", cache.shapes());
    // No per-frequency CCA of these layers has fewer than 5 images per dimension.
    assert!(
        results
            .pairs
            .iter()
            .all(|p| p.warnings.iter().all(|w| !w.contains("< 5x"))),
        "{:?}",
        results.pairs[0].warnings
    );
}

#[test]
fn report_shows_dims_per_frequency_and_conv_nulls() {
    let results = results();
    let tmp = tempfile::tempdir().unwrap();
    let summary = write_report(&results, tmp.path(), &ReportOptions::default()).unwrap();
    let data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("report.json")).unwrap()).unwrap();
    let conv = data["conv_nulls"].as_array().unwrap();
    assert_eq!(conv.len(), 3);
    for c in conv {
        let (null, score) = (
            c["null"]["mean"].as_f64().unwrap(),
            c["score"].as_f64().unwrap(),
        );
        assert!(null < score, "{c}");
        assert_eq!(c["null"]["conv"]["frequencies"], 64);
    }
    // The terminal names each per-frequency number; the summed dims never appear beside the
    // images as if they were one CCA's.
    let text = &summary.text;
    assert!(
        text.contains(
            "null baselines of conv layers, convnet: conv2 vs conv2 (dft, 2 pairs, one CCA per \
             frequency over 597 datapoints; dims per frequency min"
        ),
        "{text}"
    );
    assert!(
        text.contains("/ median ") && text.contains("/ max "),
        "{text}"
    );
    assert!(text.contains("total over 64 frequencies"), "{text}");
    assert!(!text.contains("pair(s) at or below their null"), "{text}");
    for p in &results.pairs {
        assert!(
            !text.contains(&format!("{} vs {}", p.dims_a, p.dims_b))
                && !text.contains(&format!("597 × {}", p.dims_a)),
            "{text}"
        );
    }
    let html = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
    assert!(html.contains("dims of a per frequency"), "conv null table");
    assert!(html.contains("Not computed for the conv layers (conv1, conv2)"));
    assert!(html.contains("0 of 3 conv pairs score at or below their own null"));
    assert!(!html.contains("No null baseline was computed"));
}
