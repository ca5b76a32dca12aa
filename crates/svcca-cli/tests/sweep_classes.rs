//! `svcca sweep` with class labels: class sensitivity computed after the job into analyses.json
//! and drawn in the report, on the example dataset kept in the repository (the digits MLP), and
//! the bad label files refused before any work with exit code 10 and the file named.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn svcca(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_svcca"))
        .args(args)
        .current_dir(repo())
        .env("SVCCA_THREADS", "2")
        .output()
        .expect("the svcca binary runs")
}

/// A 1-D little-endian int64 `.npy` holding `values`.
fn write_labels(path: &Path, values: &[i64]) {
    let mut header = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    header.push_str(&" ".repeat(63 - (10 + header.len()) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// The example job's `[analyses]` section, as the README's first command uses it.
fn example_analyses() -> toml::Value {
    let text = std::fs::read_to_string(repo().join("examples/digits-mlp.toml")).unwrap();
    let job: toml::Value = toml::from_str(&text).unwrap();
    job["analyses"].clone()
}

#[test]
fn example_job_names_labels_that_match_the_probe_set() {
    let analyses = example_analyses();
    let labels = analyses["labels"].as_str().unwrap();
    assert_eq!(analyses["logits"].as_str(), Some("logits"));
    // The copy in examples/ is the fixture's labels, byte for byte.
    assert_eq!(
        std::fs::read(repo().join(labels)).unwrap(),
        std::fs::read(repo().join("fixtures/digits/probe_y.npy")).unwrap()
    );
}

#[test]
fn sweep_with_labels_writes_class_sensitivity_and_draws_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("sweep");
    // The example job, made smaller: vs-final and one metric.
    let analyses = example_analyses();
    let job = format!(
        "dataset = {dataset:?}\noutput = {out:?}\ncomparison = \"vs-final\"\nmetrics = [\"svcca\"]\n\
         [select]\nwhere = {{ run = \"mlp\" }}\n[keep]\nvariance = 0.99\n\
         [analyses]\nlabels = {labels:?}\nlogits = {logits:?}\n",
        // Relative paths are read from the working directory, the repository root here.
        dataset = "examples/digits-dataset",
        out = out_dir.to_string_lossy(),
        labels = analyses["labels"].as_str().unwrap(),
        logits = analyses["logits"].as_str().unwrap(),
    );
    let job_path = tmp.path().join("job.toml");
    std::fs::write(&job_path, job).unwrap();
    let run = svcca(&["sweep", &job_path.to_string_lossy(), "--workers", "2"]);
    assert!(
        run.status.success(),
        "sweep failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("class sensitivity run=mlp,seed=0 (mean over classes): h1 "),
        "{stdout}"
    );

    let analyses: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("analyses.json")).unwrap()).unwrap();
    let tracks = analyses["class_sensitivity"].as_array().unwrap();
    let layers: Vec<&str> = tracks
        .iter()
        .map(|t| t["layer"].as_str().unwrap())
        .collect();
    // Every dense layer but the logits themselves, per seed in network order.
    let expected: Vec<String> = (0..3)
        .flat_map(|seed| ["h1", "h2", "h3", "h4"].map(|l| format!("run=mlp,seed={seed},layer={l}")))
        .collect();
    assert_eq!(layers, expected);
    for seed in 0..3 {
        check_h4(&tracks[4 * seed + 3], seed);
    }

    // The report shows one class chart per seed and layer, and they exist.
    let report = out_dir.join("report");
    let index = std::fs::read_to_string(report.join("index.html")).unwrap();
    let charts: Vec<&str> = index
        .split("src=\"")
        .skip(1)
        .map(|p| p.split('"').next().unwrap())
        .filter(|f| f.contains("classes_run_mlp_seed_"))
        .collect();
    assert_eq!(charts.len(), 12, "{charts:?}");
    assert!(
        charts
            .iter()
            .any(|c| c.contains("classes_run_mlp_seed_2_layer_h4"))
    );
    for chart in charts {
        let png = std::fs::read(report.join(chart)).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{chart}");
    }
    assert!(index.contains("Class sensitivity"));
}

/// h4 of one seed against each class's column of that seed's final logits, at every checkpoint.
fn check_h4(h4: &Value, seed: usize) {
    assert!(
        h4["target"]
            .as_str()
            .unwrap()
            .contains(&format!("run=mlp,seed={seed},step=2250,layer=logits")),
        "{}",
        h4["target"]
    );
    let classes = h4["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 10);
    let counted: u64 = classes.iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 597);
    let mean_at = |index: usize| -> f64 {
        classes
            .iter()
            .map(|c| c["points"][index]["similarity"].as_f64().unwrap())
            .sum::<f64>()
            / classes.len() as f64
    };
    let steps: Vec<i64> = classes[0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [0, 25, 100, 400, 2250]);
    let (first, last) = (mean_at(0), mean_at(steps.len() - 1));
    // h4 becomes sensitive to the classes the trained network reads out: its final state holds
    // the final logits (an affine map of it) up to the variance SVCCA drops.
    assert!(
        last > first && last > 0.99,
        "seed {seed} h4: mean over classes {first:.3} at step 0, {last:.3} at step 2250"
    );
}

#[test]
fn bad_labels_are_refused_before_the_sweep_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("sweep");
    let out = out_dir.to_string_lossy().into_owned();
    let short = tmp.path().join("short_labels.npy");
    write_labels(&short, &[0, 1, 2, 3]);
    let negative = tmp.path().join("negative_labels.npy");
    let mut values = vec![1i64; 597];
    values[7] = -1;
    write_labels(&negative, &values);
    let too_many_classes = tmp.path().join("twelve_classes.npy");
    let mut values = vec![0i64; 597];
    values[3] = 12;
    write_labels(&too_many_classes, &values);
    let floats = repo().join("fixtures/digits/mlp/seed0/step0/h1.npy");
    let missing = tmp.path().join("no_such_labels.npy");
    let good = repo().join("examples/digits-labels.npy");

    // --logits alone: the spec names a logits layer without labels.
    let run = svcca(&[
        "sweep",
        "examples/digits-dataset",
        "--out",
        &out,
        "--logits",
        "logits",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(10), "{stderr}");
    assert!(stderr.contains("needs analyses.labels"), "{stderr}");

    let cases: [(&Path, Option<&str>, &[&str]); 6] = [
        (&short, None, &["4 labels", "597 datapoints"]),
        (&negative, None, &["negative", "datapoint 7"]),
        (
            &too_many_classes,
            Some("logits"),
            &["label 12", "10 columns"],
        ),
        (&floats, None, &["not a little-endian integer"]),
        (&missing, None, &[]),
        (&good, Some("softmax"), &["`softmax`", "h1"]),
    ];
    for (labels, logits, expected) in cases {
        let labels = labels.to_string_lossy().into_owned();
        let mut args = vec![
            "sweep",
            "examples/digits-dataset",
            "--out",
            &out,
            "--compare",
            "vs-final",
            "--where",
            "layer=h1",
            "--labels",
            &labels,
        ];
        if let Some(l) = logits {
            args.extend(["--logits", l]);
        }
        let run = svcca(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(10), "{labels}: {stderr}");
        let named = if logits == Some("softmax") {
            "softmax"
        } else {
            &labels
        };
        assert!(stderr.contains(named), "{labels}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{labels}: expected {e:?} in {stderr}");
        }
        assert!(
            !out_dir.join("results.json").exists(),
            "{labels}: refused before the sweep ran"
        );
    }
}
