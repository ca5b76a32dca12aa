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

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs svcca from the repository root, as the README does; fails the test on a failure.
fn svcca_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_svcca"))
        .args(args)
        .current_dir(repo())
        .env("SVCCA_THREADS", "2")
        .env_remove("SVCCA_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "svcca {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The part of a page before its table of contents: what a reader sees first.
fn lead(html: &str) -> &str {
    &html[..html.find("<nav>").expect("a table of contents")]
}

#[test]
fn the_digits_report_opens_with_the_answers_and_another_metric_goes_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let out_str = out.to_str().unwrap();
    // Every pair of two layers at three checkpoints of three seeds: checkpoints against the
    // final one, and seeds against each other.
    let sweep_args = [
        "sweep",
        "examples/digits-dataset",
        "--out",
        out_str,
        "--compare",
        "all-pairs",
        "--where",
        "layer=h1",
        "--where",
        "layer=h4",
        "--where",
        "step=25",
        "--where",
        "step=400",
        "--where",
        "step=2250",
        "--metric",
        "svcca",
        "--metric",
        "cka",
        "--workers",
        "2",
    ];
    let swept = svcca_ok(&sweep_args);
    let data = read_json(&out.join("report/report.json"));
    let answers = &data["answers"];
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    let first = lead(&html);

    // The summary comes before the figures, the definitions and settings after them.
    let at = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("no {needle}"));
    assert!(at("id=\"summary\"") < at("<figure"));
    assert!(html.rfind("<figure").unwrap() < at("id=\"definitions\""));
    assert!(at("id=\"definitions\"") < at("id=\"run\""));

    // The bottom-up verdict, on the page and on the terminal, and why, per network.
    let networks = answers["networks"].as_array().unwrap();
    assert_eq!(networks.len(), 3, "{answers}");
    let up = networks
        .iter()
        .filter(|n| n["bottom_up"].as_bool().unwrap())
        .count();
    let headline = if up == 3 {
        "Yes: the layers converge bottom-up in all 3 networks"
    } else if up == 0 {
        "No: the layers converge bottom-up in none of the 3 networks"
    } else {
        "In part: the layers converge bottom-up"
    };
    assert!(first.contains(headline), "{first}");
    assert!(swept.contains(headline), "{swept}");
    for (n, net) in networks
        .iter()
        .zip(data["dynamics"]["networks"].as_array().unwrap())
    {
        let why = n["verdict"][0].as_str().unwrap();
        assert!(why.starts_with("By convergence step:"), "{why}");
        assert!(first.contains(why), "{why} not in {first}");
        // Convergence step per layer, as the learning dynamics found them, linked to the curves.
        let name = n["network"].as_str().unwrap();
        let mut row = format!(
            "<td><a href=\"#fig-dynamics_svcca_{}\">{name}</a></td>",
            name.replace(['=', ','], "_")
        );
        for layer in net["layers"].as_array().unwrap() {
            let step = layer["convergence_step"]
                .as_i64()
                .map_or("—".to_string(), |s| s.to_string());
            row.push_str(&format!("<td>{step}</td>"));
        }
        assert!(first.contains(&row), "{row} not in {first}");
    }

    // Cross-seed agreement per layer at the last step, each against its null.
    let seeds = answers["cross_seed"].as_array().unwrap();
    let layers: Vec<&str> = seeds.iter().map(|s| s["layer"].as_str().unwrap()).collect();
    assert_eq!(layers, ["h1", "h4"]);
    for s in seeds {
        assert_eq!(s["step"], 2250);
        assert_eq!(s["pairs"], 3);
        let null = s["null"].as_f64().expect("a null per layer");
        let mean = s["mean"].as_f64().unwrap();
        assert!(
            first.contains(&format!("<td>{mean:.3} ± "))
                && first.contains(&format!("<td>{null:.3}</td>")),
            "{first}"
        );
        assert!(
            swept.contains(&format!("{} {mean:.3}±", s["layer"].as_str().unwrap())),
            "{swept}"
        );
    }
    // Learning dynamics under both metrics.
    assert!(html.contains("id=\"dynamics-svcca\"") && html.contains("id=\"dynamics-cka\""));
    assert!(
        first.contains("Under cka: bottom-up by convergence step in"),
        "{first}"
    );

    // The report of another metric goes beside the default one, which stays byte for byte.
    let before: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.join("report"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    let text = svcca_ok(&["report", out_str, "--metric", "cka"]);
    assert!(text.contains("metric cka"), "{text}");
    assert!(text.contains(&format!(
        "report: {}",
        out.join("report/cka/index.html").display()
    )));
    for (path, bytes) in &before {
        assert!(std::fs::read(path).unwrap() == *bytes, "{path} changed");
    }
    let cka = read_json(&out.join("report/cka/report.json"));
    assert_eq!(cka["metric"], "cka");
    assert_eq!(cka["answers"]["metric"], "cka");
    let cka_html = std::fs::read_to_string(out.join("report/cka/index.html")).unwrap();
    assert!(lead(&cka_html).contains("(cka similarity to the final checkpoint"));
    // The default metric named explicitly is the default report, where it always was.
    svcca_ok(&["report", out_str, "--metric", "svcca"]);
    assert!(!out.join("report/svcca").exists());
    // A metric the sweep did not compute is refused, and leaves no folder.
    let refused = Command::new(env!("CARGO_BIN_EXE_svcca"))
        .args(["report", out_str, "--metric", "pwcca"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(10));
    assert!(!out.join("report/pwcca").exists());

    // The same job again (as a nightly run would): the first run's results are kept beside the
    // new ones, and the report says what changed since (here nothing: the dataset did not grow).
    let first_results = std::fs::read(out.join("results.json")).unwrap();
    let again = svcca_ok(&sweep_args);
    assert!(again.contains("306 from the cache"), "{again}");
    assert!(std::fs::read(out.join("results.prev.json")).unwrap() == first_results);
    let since = "Since the last run: 0 new checkpoint(s) (18 representations, 18 before)";
    assert!(again.contains(since), "{again}");
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(lead(&html).contains(since), "{}", lead(&html));
}

#[test]
fn pairs_of_a_conv_and_a_dense_layer_are_shown_skipped_with_why() {
    let tmp = tempfile::tempdir().unwrap();
    // Real digits activations: the conv net's conv2 ([597, 8, 8, 32]) and the MLP's h1
    // ([597, 128]) of two seeds each.
    let src = tmp.path().join("acts");
    for rel in [
        "conv/seed0/step1500/conv2.npy",
        "conv/seed1/step1500/conv2.npy",
        "mlp/seed0/step2250/h1.npy",
        "mlp/seed1/step2250/h1.npy",
    ] {
        let to = src.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo().join("fixtures/digits").join(rel), &to).unwrap();
    }
    let ds = tmp.path().join("ds");
    let out = tmp.path().join("sweep");
    svcca_ok(&[
        "ingest",
        src.to_str().unwrap(),
        ds.to_str().unwrap(),
        "--pattern",
        "{run}/seed{seed}/step{step}/{layer}.npy",
        "--layout",
        "nhwc",
    ]);
    let swept = svcca_ok(&[
        "sweep",
        ds.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--compare",
        "all-pairs",
        "--workers",
        "2",
    ]);
    // 6 planned pairs: conv2 × conv2 and h1 × h1 compared, the 4 mixed ones skipped.
    let expect = [
        "skipped 4 planned pair(s): a conv layer and a dense layer have no common definition",
        "  run=conv,layer=conv2 × run=mlp,layer=h1: 4 pair(s)",
    ];
    for line in expect {
        assert_eq!(swept.matches(line).count(), 1, "{line:?} once in {swept}");
    }
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["skipped"][0]["pairs"], 4);
    assert_eq!(summary["skipped"][0]["reason"], "conv-with-dense");

    let reported = svcca_ok(&["report", out.to_str().unwrap()]);
    for line in expect {
        assert!(reported.contains(line), "{line:?} not in {reported}");
    }
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(
        lead(&html).contains("4 planned pair(s) were not compared"),
        "{}",
        lead(&html)
    );
    let listed = &html[html
        .find("id=\"skipped\"")
        .expect("a skipped-pairs section")..];
    assert!(
        listed.contains("<td>run=conv,layer=conv2</td><td>run=mlp,layer=h1</td><td>4</td>"),
        "{listed}"
    );
}
