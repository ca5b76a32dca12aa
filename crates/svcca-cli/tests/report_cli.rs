//! `svcca report` as a user runs it: on a sweep folder holding results.json, twice, and on a
//! folder without results.

use std::collections::BTreeMap;
use std::process::Command;

use svcca_results::{
    PairRecord, RepresentationKey, RepresentationRecord, ResultsFile, SCHEMA_VERSION,
};

fn key(seed: i64, step: i64, layer: &str) -> RepresentationKey {
    RepresentationKey {
        run: "mlp".into(),
        seed: Some(seed),
        step: Some(step),
        layer: layer.into(),
        tags: BTreeMap::new(),
    }
}

/// A small vs-final sweep: two layers, three checkpoints, two seeds; h1 converges first.
fn results() -> ResultsFile {
    let mut representations = Vec::new();
    let mut pairs = Vec::new();
    for seed in [0, 1] {
        for step in [0, 100, 1000] {
            for layer in ["h1", "h2"] {
                representations.push(RepresentationRecord {
                    key: key(seed, step, layer),
                    shape: vec![16],
                    datapoints: 200,
                    kept_dims: 6,
                    dropped_neurons: vec![],
                    spectrum: vec![5.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.01],
                    checksum: String::new(),
                    depth: None,
                    layout: None,
                });
            }
        }
        for (step, h1, h2) in [(0, 0.5, 0.3), (100, 0.97, 0.8)] {
            for (layer, v) in [("h1", h1), ("h2", h2)] {
                pairs.push(PairRecord {
                    a: key(seed, step, layer),
                    b: key(seed, 1000, layer),
                    metric: "svcca".into(),
                    mean: v,
                    google_mean: None,
                    equal_k_mean: None,
                    dims_a: 6,
                    dims_b: 6,
                    coefficients: vec![],
                    weights: None,
                    frequencies: None,
                    conv: None,
                    warnings: vec![],
                });
            }
        }
    }
    ResultsFile {
        schema_version: SCHEMA_VERSION,
        coefficients: svcca_results::CoefficientStore::Json,
        job_spec: "comparison = \"vs-final\"".into(),
        versions: BTreeMap::new(),
        comparison: "vs-final".into(),
        settings: "svcca var 0.99".into(),
        representations,
        pairs,
    }
}

#[test]
fn report_writes_the_page_and_prints_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("sweep");
    std::fs::create_dir_all(&sweep).unwrap();
    std::fs::write(sweep.join("results.json"), results().to_json()).unwrap();

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_svcca"))
            .arg("report")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[sweep.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("h1@100 h2@—"), "{stdout}");
    assert!(
        stdout.contains("By convergence step: bottom-up"),
        "{stdout}"
    );
    let page = sweep.join("report/index.html");
    assert!(page.is_file());

    // The results file named by a file:// URL, with --out, gives the same report.
    let other = tmp.path().join("other");
    let url = format!("file://{}/results.json", sweep.display());
    let out = run(&[&url, "--out", other.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Everything but the page header (which names the source as given) is the same.
    let mut names: Vec<_> = std::fs::read_dir(sweep.join("report"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "index.html")
        .collect();
    names.sort();
    assert!(
        names.iter().any(|n| n.ends_with(".png")) && names.contains(&"report.json".to_string())
    );
    for name in &names {
        let same = std::fs::read(sweep.join("report").join(name)).unwrap()
            == std::fs::read(other.join(name)).unwrap();
        assert!(same, "{name} differs");
    }
    assert!(other.join("index.html").is_file());

    let out = run(&[
        sweep.to_str().unwrap(),
        "--metric",
        "cka",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cka"));
}

#[test]
fn report_without_results_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_svcca"))
        .args(["report", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("results.json") && err.contains("svcca sweep"),
        "{err}"
    );
}
