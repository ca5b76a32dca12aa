//! The paper's analyses and the report on real activations: the digits MLP in `fixtures/digits`
//! (3 seeds × 5 checkpoints × 5 layers, 597 probe images).
//!
//! Until `svcca sweep` writes `results.json` for these, the results are built here by calling
//! svcca-core directly, exactly as a vs-final + cross-seed sweep would store them.
//!
//! Set `SVCCA_REPORT_OUT=DIR` to keep the report of `report_renders_...` in `DIR` for a look.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use svcca_core::{
    CompareOptions, JointMoments, KeepRule, RowBlock, WhitenOptions, Whitening, compare_moments,
};
use svcca_report::compute::{
    ClassTarget, ComputeOptions, ComputedAnalyses, LoadedRepresentation, Precision,
    class_sensitivity, dimensionality, gaussian_null, load_labels, load_npy, permuted_null,
    svcca_directions, write_directions,
};
use svcca_report::dynamics::learning_dynamics;
use svcca_report::seeds::cross_seed;
use svcca_report::{ReportOptions, write_report};
use svcca_results::{
    PairRecord, RepresentationKey, RepresentationRecord, ResultsFile, SCHEMA_VERSION,
};

const SEEDS: [i64; 3] = [0, 1, 2];
const STEPS: [i64; 5] = [0, 25, 100, 400, 2250];
const LAYERS: [&str; 5] = ["h1", "h2", "h3", "h4", "logits"];
const FINAL: i64 = 2250;

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits")
}

fn key(seed: i64, step: i64, layer: &str) -> RepresentationKey {
    RepresentationKey {
        run: "mlp".into(),
        seed: Some(seed),
        step: Some(step),
        layer: layer.into(),
        tags: BTreeMap::new(),
    }
}

type Store = BTreeMap<(i64, i64, String), LoadedRepresentation>;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let mut out = BTreeMap::new();
        for seed in SEEDS {
            for step in STEPS {
                for layer in LAYERS {
                    let path = digits().join(format!("mlp/seed{seed}/step{step}/{layer}.npy"));
                    out.insert((seed, step, layer.to_string()), load_npy(&path).unwrap());
                }
            }
        }
        out
    })
}

fn rep(seed: i64, step: i64, layer: &str) -> RowBlock<'static> {
    store()[&(seed, step, layer.to_string())].block()
}

fn svcca_pair(a: &RepresentationKey, b: &RepresentationKey) -> PairRecord {
    let (x, y) = (
        rep(a.seed.unwrap(), a.step.unwrap(), &a.layer),
        rep(b.seed.unwrap(), b.step.unwrap(), &b.layer),
    );
    let mut joint = JointMoments::new(x.cols(), y.cols());
    joint.push(x, y).unwrap();
    let c = compare_moments(&joint, &CompareOptions::default()).unwrap();
    PairRecord {
        a: a.clone(),
        b: b.clone(),
        metric: "svcca".into(),
        mean: c.mean,
        google_mean: c.google_mean,
        equal_k_mean: c.equal_k_mean,
        dims_a: c.dims_x,
        dims_b: c.dims_y,
        coefficients: c.coefficients,
        weights: None,
        frequencies: None,
        conv: None,
        warnings: c.warnings,
    }
}

/// vs-final pairs for every seed, cross-seed pairs at the final step, and seed 0 × seed 1
/// layer × layer at the final step: SVCCA keeping 99% of the variance.
fn results() -> &'static ResultsFile {
    static RESULTS: OnceLock<ResultsFile> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let mut representations = Vec::new();
        for seed in SEEDS {
            for step in STEPS {
                for layer in LAYERS {
                    let r = &store()[&(seed, step, layer.to_string())];
                    let mut m = svcca_core::MomentAccumulator::new(r.cols);
                    m.push(r.block()).unwrap();
                    let w = Whitening::from_moments(
                        &m,
                        &WhitenOptions::default().with_keep(KeepRule::VarianceFraction(0.99)),
                    )
                    .unwrap();
                    representations.push(RepresentationRecord {
                        key: key(seed, step, layer),
                        shape: vec![r.cols],
                        datapoints: r.rows as u64,
                        kept_dims: w.dims(),
                        dropped_neurons: w.dropped_neurons().to_vec(),
                        spectrum: w.spectrum().to_vec(),
                        checksum: String::new(),
                        depth: None,
                        layout: None,
                    });
                }
            }
        }
        let mut pairs = Vec::new();
        for seed in SEEDS {
            for layer in LAYERS {
                for step in &STEPS[..STEPS.len() - 1] {
                    pairs.push(svcca_pair(
                        &key(seed, *step, layer),
                        &key(seed, FINAL, layer),
                    ));
                }
            }
        }
        for (i, &sa) in SEEDS.iter().enumerate() {
            for &sb in &SEEDS[i + 1..] {
                for layer in LAYERS {
                    pairs.push(svcca_pair(&key(sa, FINAL, layer), &key(sb, FINAL, layer)));
                }
            }
        }
        for la in LAYERS {
            for lb in LAYERS {
                if la != lb {
                    pairs.push(svcca_pair(&key(0, FINAL, la), &key(1, FINAL, lb)));
                }
            }
        }
        ResultsFile {
            schema_version: SCHEMA_VERSION,
            coefficients: svcca_results::CoefficientStore::Json,
            job_spec: "comparison = \"vs-final\"\nmetric = \"svcca\"\n".into(),
            versions: BTreeMap::new(),
            comparison: "vs-final".into(),
            settings: "svcca var 0.99, default mode".into(),
            representations,
            pairs,
        }
    })
}

#[test]
fn learning_dynamics_converge_bottom_up_on_every_seed() {
    let d = learning_dynamics(results(), "svcca", 0.95).unwrap();
    assert_eq!(d.networks.len(), SEEDS.len());
    for net in &d.networks {
        let at25 = |layer: &str| {
            net.layers
                .iter()
                .find(|l| l.layer == layer)
                .unwrap()
                .similarity_at(25)
                .unwrap()
        };
        let (h1, h4) = (at25("h1"), at25("h4"));
        assert!(
            h1 > h4,
            "seed {:?}: h1 {h1:.3} should be closer to its final state than h4 {h4:.3} at step 25",
            net.seed
        );
        let order: Vec<&str> = net.layers.iter().map(|l| l.layer.as_str()).collect();
        assert_eq!(order, LAYERS, "layers in network order");
        for l in &net.layers {
            let steps: Vec<i64> = l.points.iter().map(|p| p.step).collect();
            assert_eq!(steps, STEPS, "ordered numerically, final included");
            assert!(l.points.iter().all(|p| (0.0..=1.0).contains(&p.similarity)));
        }
        // Checkpoint-wise criterion over the hidden layers (the logits, deepest, set aside).
        assert_eq!(net.depth_layers, ["h1", "h2", "h3", "h4"]);
        let steps: Vec<i64> = net.checkpoint_order.iter().map(|c| c.step).collect();
        assert_eq!(steps, STEPS[..STEPS.len() - 1]);
        let at_25 = &net.checkpoint_order[1];
        // Measured: at step 25 most (lower, deeper) pairs are in depth order on every seed
        // (5, 6 and 6 of 6), though not all: seed 0 has h3 0.743 < h4 0.747.
        assert!(
            2 * at_25.pairs_in_order > at_25.pairs,
            "seed {:?}: {} of {} pairs in order at step 25",
            net.seed,
            at_25.pairs_in_order,
            at_25.pairs
        );
        let holding = net
            .checkpoint_order
            .iter()
            .filter(|c| c.non_increasing)
            .count();
        assert_eq!(
            net.non_increasing_share,
            Some(holding as f64 / net.checkpoint_order.len() as f64)
        );
        for c in &net.checkpoint_order {
            assert_eq!(c.non_increasing, c.rises.is_empty());
            for r in &c.rises {
                assert!(r.deeper_similarity > r.lower_similarity);
            }
        }
        // With checkpoints at 0, 25, 100, 400 the hidden layers converge together at 400 (or not
        // at all) and the logits at 100: the convergence-step verdict says so instead of a bare no.
        assert!(!net.bottom_up);
        let verdict = net.bottom_up_verdict(true);
        assert!(
            verdict[0].contains("logits converges at step 100")
                && verdict[0].contains("tie at step 400"),
            "{}",
            verdict[0]
        );
        assert!(verdict[1].starts_with("Checkpoint-wise over h1, h2, h3, h4"));
        // Freeze suggestions never go down with depth.
        let freeze: Vec<Option<i64>> = net.layers.iter().map(|l| l.suggested_freeze_step).collect();
        for w in freeze.windows(2) {
            if let (Some(a), Some(b)) = (w[0], w[1]) {
                assert!(a <= b, "{freeze:?}");
            }
        }
    }
}

#[test]
fn null_baselines_sit_below_real_cross_seed_similarity() {
    let spread = cross_seed(results(), "svcca");
    assert_eq!(spread.len(), LAYERS.len());
    for s in &spread {
        assert_eq!(s.pairs, 3);
        // The Gaussian null at the largest shape any seed pair of this layer used.
        let (da, db) = results()
            .pairs
            .iter()
            .filter(|p| p.a.layer == s.layer && p.b.layer == s.layer && p.a.seed != p.b.seed)
            .map(|p| (p.dims_a, p.dims_b))
            .max()
            .unwrap();
        let null = gaussian_null(597, da, db, "svcca", 3, 7).unwrap();
        assert!(null.mean > 0.0 && null.mean < 1.0);
        assert!(
            null.max < s.min,
            "{}: gaussian null {:.3} vs cross-seed {:.3}",
            s.layer,
            null.max,
            s.min
        );
    }
    let opts = ComputeOptions::default();
    let perm = permuted_null(
        rep(0, FINAL, "h2"),
        rep(1, FINAL, "h2"),
        "h2 seed0 vs seed1",
        3,
        1,
        &opts,
    )
    .unwrap();
    let real = spread.iter().find(|s| s.layer == "h2").unwrap();
    assert!(
        perm.max < real.min,
        "permuted {:.3} vs real {:.3}",
        perm.max,
        real.min
    );
    // Seeded: the same draws give the same numbers.
    let again = permuted_null(
        rep(0, FINAL, "h2"),
        rep(1, FINAL, "h2"),
        "h2 seed0 vs seed1",
        3,
        1,
        &opts,
    )
    .unwrap();
    assert_eq!(perm, again);
}

#[test]
fn dimensionality_curve_rises_to_the_full_svcca_value() {
    let opts = ComputeOptions::default();
    let (a, b) = (rep(0, 400, "h2"), rep(0, FINAL, "h2"));
    let curve = dimensionality(a, b, ("h2@400", "h2@2250"), &opts).unwrap();
    for w in curve.points.windows(2) {
        assert!(
            w[1].carried >= w[0].carried - 1e-9,
            "not monotone at k = {}",
            w[1].k
        );
    }
    let last = curve.points.last().unwrap();
    assert_eq!(last.k, curve.kept);
    let mut joint = JointMoments::new(a.cols(), b.cols());
    joint.push(a, b).unwrap();
    let full = compare_moments(&joint, &CompareOptions::default()).unwrap();
    assert!(
        (last.carried - full.mean).abs() < 1e-9,
        "{} vs {}",
        last.carried,
        full.mean
    );
    assert!((curve.full - full.mean).abs() < 1e-9);
    assert!(curve.k99_carried >= 1 && curve.k99_carried <= curve.kept);
    assert!(
        curve
            .points
            .iter()
            .find(|p| p.k == curve.k99_carried)
            .unwrap()
            .carried
            >= 0.99 * curve.full
    );

    // The nested-directions shortcut agrees with core's own top-k reduction.
    let k = 5;
    let wa = Whitening::from_moments(
        &joint.x(),
        &WhitenOptions::default().with_keep(KeepRule::Dims(k)),
    )
    .unwrap();
    let wb = Whitening::from_moments(
        &joint.y(),
        &WhitenOptions::default().with_keep(KeepRule::VarianceFraction(0.99)),
    )
    .unwrap();
    let cross = wa.whitened_cross(&wb, joint.cross().as_ref()).unwrap();
    let cc = svcca_core::canonical_correlations(cross.as_ref(), joint.n(), false).unwrap();
    let carried = cc.coefficients.iter().sum::<f64>() / curve.kept.min(curve.kept_b) as f64;
    let at_k = curve.points.iter().find(|p| p.k == k).unwrap();
    assert!(
        (at_k.carried - carried).abs() < 1e-9,
        "{} vs {}",
        at_k.carried,
        carried
    );
}

/// Each layer at the final checkpoint against the same layer of another seed, as the sweep
/// computes it: the headline numbers hold their definitions, and a few directions shared on both
/// sides give the highest similarity, far fewer than the kept count.
#[test]
fn dimensionality_headline_numbers_against_another_seed() {
    let opts = ComputeOptions::default();
    for layer in ["h1", "h2", "h3", "h4"] {
        let curve = dimensionality(
            rep(0, FINAL, layer),
            rep(1, FINAL, layer),
            (layer, "seed1"),
            &opts,
        )
        .unwrap();
        eprintln!(
            "{layer}: kept {}/{}, svcca {:.3}, shared {:.1}, best both {:.3} at k = {}, k99_both {}, k99_carried {}",
            curve.kept,
            curve.kept_b,
            curve.full,
            curve.shared,
            curve.best_both,
            curve.best_both_k,
            curve.k99_both,
            curve.k99_carried
        );
        let both_at = |k: usize| curve.points.iter().find(|p| p.k == k).unwrap().both;
        // Definitions.
        assert!(curve.points.iter().all(|p| p.both <= curve.best_both));
        assert_eq!(both_at(curve.best_both_k), curve.best_both);
        assert!(both_at(curve.k99_both) >= 0.99 * curve.best_both);
        assert!(
            curve
                .points
                .iter()
                .filter(|p| p.k < curve.k99_both)
                .all(|p| p.both < 0.99 * curve.best_both),
            "{layer}: k99_both is the smallest such k"
        );
        let min_kept = curve.kept.min(curve.kept_b) as f64;
        assert!((curve.shared - curve.full * min_kept).abs() < 1e-9);
        // Nested subspaces on both sides: the sum of the correlations never decreases with k, and
        // neither does carried(k).
        for w in curve.points.windows(2) {
            let sum = |p: &svcca_report::compute::DimensionalityPoint| {
                p.both * p.k.min(curve.kept_b) as f64
            };
            assert!(
                sum(&w[1]) >= sum(&w[0]) - 1e-9,
                "{layer}: Σρ falls at k = {}",
                w[1].k
            );
            assert!(w[1].carried >= w[0].carried - 1e-9);
        }
        // Measured: the top directions are shared almost exactly across seeds, the later ones
        // partly, so the mean with few directions is above the full SVCCA value and few
        // directions reach 99% of the best; the count carrying 99% stays near the kept count.
        assert!(
            curve.best_both > curve.full + 0.1,
            "{layer}: best both(k) {:.3} vs SVCCA {:.3}",
            curve.best_both,
            curve.full
        );
        assert!(
            curve.k99_both * 4 < curve.kept,
            "{layer}: {} of {} directions",
            curve.k99_both,
            curve.kept
        );
        assert!(curve.shared < min_kept && curve.shared > 0.5 * min_kept);
        assert!(curve.k99_carried + 5 >= curve.kept.min(curve.kept_b));
    }
}

#[test]
fn exported_directions_are_whitened_canonical_variates() {
    let (a, b) = (rep(1, FINAL, "h3"), rep(2, FINAL, "h3"));
    let dirs = svcca_directions(
        a,
        b,
        ("h3 seed1", "h3 seed2"),
        Some(10),
        &ComputeOptions::default(),
    )
    .unwrap();
    assert_eq!((dirs.neurons, dirs.k), (64, 10));
    let tmp = tempfile::tempdir().unwrap();
    let files = write_directions(tmp.path(), "h3", &dirs, Precision::F64).unwrap();
    let p = svcca_storage::npy::read_f64(&files[0]).unwrap();
    assert_eq!(p.shape, vec![64, 10]);
    assert_eq!(p.data, dirs.projection);
    let r = svcca_storage::npy::read_f64(&files[1]).unwrap();
    assert_eq!(r.shape, vec![10, 64]);
    // z = (x − μ) P has unit variance and uncorrelated columns.
    let (n, d, k) = (a.rows(), 64, 10);
    let mut z = vec![0.0f64; n * k];
    for row in 0..n {
        for j in 0..k {
            z[row * k + j] = (0..d)
                .map(|i| (a.get(row, i) - dirs.mean[i]) * dirs.projection[i * k + j])
                .sum();
        }
    }
    for i in 0..k {
        for j in 0..k {
            let c: f64 = (0..n).map(|r| z[r * k + i] * z[r * k + j]).sum::<f64>() / (n - 1) as f64;
            let expect = if i == j { 1.0 } else { 0.0 };
            assert!((c - expect).abs() < 1e-6, "cov[{i},{j}] = {c}");
        }
    }
    let f32_files = write_directions(tmp.path(), "h3_f32", &dirs, Precision::F32).unwrap();
    assert_eq!(
        svcca_storage::npy::read_f32(&f32_files[0]).unwrap().shape,
        vec![64, 10]
    );
}

#[test]
fn class_sensitivity_grows_with_training() {
    let labels = load_labels(digits().join("probe_y.npy")).unwrap();
    assert_eq!(labels.len(), 597);
    let steps: Vec<(i64, RowBlock<'static>)> =
        STEPS.iter().map(|&s| (s, rep(0, s, "h4"))).collect();
    let logits = rep(0, FINAL, "logits");
    let cs = class_sensitivity(
        "mlp/seed0/h4",
        &steps,
        ClassTarget::Logits(logits),
        "logits@2250",
        &labels,
        &ComputeOptions::default(),
    )
    .unwrap();
    assert_eq!(cs.classes.len(), 10);
    assert_eq!(cs.classes.iter().map(|c| c.count).sum::<usize>(), 597);
    let mean_at = |step: i64| {
        cs.classes
            .iter()
            .map(|c| c.points.iter().find(|p| p.step == step).unwrap().similarity)
            .sum::<f64>()
            / 10.0
    };
    // The final logits are an affine map of the final h4: their columns lie in its span (up to
    // the 1% of variance SVCCA drops).
    assert!(mean_at(FINAL) > 0.95, "{}", mean_at(FINAL));
    assert_eq!(cs.steps(), STEPS);
    for step in STEPS {
        assert!((cs.mean_at(step).unwrap() - mean_at(step)).abs() < 1e-12);
    }
    assert_eq!(cs.mean_at(1), None);
    assert!(
        mean_at(FINAL) > mean_at(0),
        "{} vs {}",
        mean_at(FINAL),
        mean_at(0)
    );
    let ind = class_sensitivity(
        "mlp/seed0/h4",
        &steps,
        ClassTarget::LabelIndicator,
        "labels",
        &labels,
        &ComputeOptions::default(),
    )
    .unwrap();
    assert!(ind.classes.iter().all(|c| c.points.len() == STEPS.len()));
    // Bad labels are refused with a message, not a panic.
    let short = &labels[..10];
    assert!(
        class_sensitivity(
            "x",
            &steps,
            ClassTarget::LabelIndicator,
            "labels",
            short,
            &ComputeOptions::default()
        )
        .is_err()
    );
}

/// Reads width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

/// Checks that tags open and close in order (a well-formedness check sufficient for plotters'
/// output: no CDATA, no comments) and returns the root element's attributes text.
fn check_xml(text: &str) -> String {
    let mut stack: Vec<String> = Vec::new();
    let mut root = None;
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched closing tag"
            );
        } else {
            let name = tag
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
            if root.is_none() {
                root = Some(tag.to_string());
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    root.expect("no root element")
}

fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let pat = format!("{attr}=\"");
    html.match_indices(&pat)
        .map(|(i, _)| {
            let s = &html[i + pat.len()..];
            &s[..s.find('"').unwrap()]
        })
        .collect()
}

#[test]
fn report_renders_references_existing_files_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("SVCCA_REPORT_OUT").map(PathBuf::from);
    let first = keep.clone().unwrap_or_else(|| tmp.path().join("first"));
    let second = tmp.path().join("second");

    // Analyses computed from activations travel with the report through analyses.json.
    let labels = load_labels(digits().join("probe_y.npy")).unwrap();
    let opts = ComputeOptions::default();
    let steps: Vec<(i64, RowBlock<'static>)> =
        STEPS.iter().map(|&s| (s, rep(0, s, "h3"))).collect();
    let computed = ComputedAnalyses {
        dimensionality: vec![
            dimensionality(
                rep(0, 400, "h1"),
                rep(0, FINAL, "h1"),
                ("mlp/seed0/step400/h1", "step2250"),
                &opts,
            )
            .unwrap(),
            dimensionality(
                rep(0, FINAL, "h3"),
                rep(1, FINAL, "h3"),
                ("mlp/seed0/step2250/h3", "seed1"),
                &opts,
            )
            .unwrap(),
        ],
        class_sensitivity: vec![
            class_sensitivity(
                "mlp/seed0/h3",
                &steps,
                ClassTarget::Logits(rep(0, FINAL, "logits")),
                "logits@2250",
                &labels,
                &opts,
            )
            .unwrap(),
        ],
        null_baselines: vec![
            permuted_null(
                rep(0, FINAL, "h1"),
                rep(1, FINAL, "h1"),
                "mlp h1 seed0 vs seed1 @2250",
                3,
                0,
                &opts,
            )
            .unwrap(),
        ],
        notes: vec!["a note from the analyses".into()],
    };
    let computed = ComputedAnalyses::from_json(&computed.to_json()).unwrap();

    let stored = ResultsFile::from_json(&results().to_json()).unwrap();
    let options = ReportOptions::default()
        .with_computed(computed)
        .with_source("fixtures/digits (built in the test)");
    let summary = write_report(&stored, &first, &options).unwrap();
    let again = write_report(&stored, &second, &options).unwrap();

    assert!(summary.text.contains("bottom-up"), "{}", summary.text);
    assert!(
        summary
            .text
            .contains("class sensitivity mlp/seed0 (mean over classes): h3 "),
        "{}",
        summary.text
    );
    assert!(summary.files.contains(&"index.html".to_string()));
    assert_eq!(summary.files, again.files);
    let pngs: Vec<&String> = summary
        .files
        .iter()
        .filter(|f| f.ends_with(".png"))
        .collect();
    // 3 dynamics, 1 cross-seed, 1 layer × layer, 1 spectrum, 1 dimensionality, 1 class chart.
    assert!(pngs.len() >= 8, "{pngs:?}");

    let html = std::fs::read_to_string(first.join("index.html")).unwrap();
    check_xml(
        &html
            .replace("<!DOCTYPE html>", "")
            .replace("<meta charset=\"utf-8\">", ""),
    );
    let mut referenced: Vec<&str> = attr_values(&html, "src");
    referenced.extend(
        attr_values(&html, "href")
            .into_iter()
            .filter(|h| !h.starts_with('#')),
    );
    assert!(!referenced.is_empty());
    for r in &referenced {
        assert!(first.join(r).is_file(), "index.html references missing {r}");
    }
    for png in &pngs {
        assert!(
            referenced.contains(&png.as_str()),
            "{png} not shown on the page"
        );
        let bytes = std::fs::read(first.join(png)).unwrap();
        let (w, h) = png_size(&bytes);
        // The page states each picture's size; the PNG must have it.
        let tag = html
            .split("<img ")
            .find(|t| t.starts_with(&format!("src=\"{png}\"")))
            .unwrap();
        let expect_w: u32 = attr_values(tag, "width")[0].parse().unwrap();
        let expect_h: u32 = attr_values(tag, "height")[0].parse().unwrap();
        assert_eq!((w, h), (expect_w, expect_h), "{png}");
        assert!(w >= 300 && h >= 200, "{png}: {w}x{h}");
        assert!(
            bytes.len() > 5_000,
            "{png} looks empty ({} bytes)",
            bytes.len()
        );
        let svg_name = png.replace(".png", ".svg");
        let svg = std::fs::read_to_string(first.join(&svg_name)).unwrap();
        let root = check_xml(&svg);
        assert!(root.starts_with("svg"), "{svg_name}: root {root}");
        assert!(
            root.contains(&format!("width=\"{w}\"")) && root.contains(&format!("height=\"{h}\"")),
            "{root}"
        );
        assert!(svg.contains("<text"), "{svg_name} has no text");
    }
    for needle in [
        "Learning dynamics",
        "suggestion: h1 could be frozen",
        "Null baselines",
        "gaussian",
        "permuted",
        "k for 99%",
        "Class sensitivity",
        "logits@2250",
        "a note from the analyses",
        "Mean over the classes",
        "Checkpoint-wise over h1, h2, h3, h4",
    ] {
        assert!(html.contains(needle), "page lacks {needle:?}");
    }

    // Regenerated from the same stored results: the same bytes.
    for f in &summary.files {
        let a = std::fs::read(first.join(f)).unwrap();
        let b = std::fs::read(second.join(f)).unwrap();
        assert!(a == b, "{f} differs between two renderings");
    }
}
