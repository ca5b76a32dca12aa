//! `svcca sweep` as the README runs it: the embedded default (coordinator and in-process workers)
//! on the example dataset kept in the repository, then the report it writes.

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

fn label(key: &Value) -> String {
    format!(
        "{}/seed{}/step{}/{}",
        key["run"].as_str().unwrap(),
        key["seed"],
        key["step"],
        key["layer"].as_str().unwrap()
    )
}

#[test]
fn vs_final_sweep_on_the_example_dataset_shows_bottom_up_convergence_and_writes_a_report() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("sweep");
    let out_str = out_dir.to_string_lossy().into_owned();
    let run = svcca(&[
        "sweep",
        "examples/digits-dataset",
        "--out",
        &out_str,
        "--compare",
        "vs-final",
        "--where",
        "layer=h1",
        "--where",
        "layer=h4",
        "--metric",
        "svcca",
        "--workers",
        "2",
    ]);
    assert!(
        run.status.success(),
        "sweep failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    let results: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
    let pairs = results["pairs"].as_array().unwrap();
    // 3 seeds x 2 layers x 4 earlier checkpoints against the final one (plus the final itself
    // when the plan includes it).
    assert!(pairs.len() >= 24, "{} pairs", pairs.len());
    let at_step_25 = |seed: i64, layer: &str| -> f64 {
        pairs
            .iter()
            .find(|p| {
                let (a, b) = (&p["a"], &p["b"]);
                let early = if a["step"] == 25 { a } else { b };
                early["step"] == 25 && early["seed"] == seed && early["layer"] == layer
            })
            .unwrap_or_else(|| panic!("no step-25 pair for seed {seed} {layer}"))["mean"]
            .as_f64()
            .unwrap()
    };
    for seed in 0..3 {
        let (h1, h4) = (at_step_25(seed, "h1"), at_step_25(seed, "h4"));
        assert!(
            h1 > h4,
            "seed {seed}: bottom-up convergence expects h1 ({h1}) > h4 ({h4}) at step 25"
        );
    }

    // One pair checked against `svcca compare` on the original .npy files.
    let pair = pairs
        .iter()
        .find(|p| {
            p["a"]["seed"] == 1
                && p["a"]["layer"] == "h4"
                && (p["a"]["step"] == 100 || p["b"]["step"] == 100)
        })
        .expect("a seed-1 h4 pair with step 100");
    let npy = |key: &Value| {
        repo()
            .join("fixtures/digits")
            .join(format!("{}.npy", label(key)))
            .to_string_lossy()
            .into_owned()
    };
    let compare = svcca(&["compare", &npy(&pair["a"]), &npy(&pair["b"]), "--json"]);
    assert!(
        compare.status.success(),
        "{}",
        String::from_utf8_lossy(&compare.stderr)
    );
    let compare: Value = serde_json::from_slice(&compare.stdout).unwrap();
    let (swept, direct) = (
        pair["mean"].as_f64().unwrap(),
        compare["mean"].as_f64().unwrap(),
    );
    assert!(
        (swept - direct).abs() < 1e-9,
        "sweep {swept} vs compare {direct}"
    );

    // The report is written by default and references only files that exist.
    let index =
        std::fs::read_to_string(out_dir.join("report/index.html")).expect("report/index.html");
    let mut referenced = 0;
    for part in index.split("src=\"").skip(1) {
        let file = part.split('"').next().unwrap();
        assert!(
            out_dir.join("report").join(file).is_file(),
            "index.html references missing {file}"
        );
        referenced += 1;
    }
    assert!(referenced > 0, "the report shows pictures");
}

/// Off a terminal (the test's pipes) a sweep logs progress lines, as text and as JSON.
#[test]
fn a_sweep_off_a_terminal_logs_progress_with_done_total_and_eta() {
    let out = tempfile::tempdir().unwrap();
    let run = |dir: &str, every: &str, extra: &[&str]| {
        let out_dir = out.path().join(dir).to_string_lossy().into_owned();
        let mut args = vec![
            "sweep",
            "examples/digits-dataset",
            "--out",
            &out_dir,
            "--compare",
            "vs-final",
            "--where",
            "seed=0",
            "--where",
            "layer=h1",
            "--no-report",
            "--progress-every",
            every,
        ];
        args.extend_from_slice(extra);
        let done = svcca(&args);
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        String::from_utf8(done.stderr).unwrap()
    };

    let text = run("text", "0.001", &[]);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("progress: ")).collect();
    assert!(!lines.is_empty(), "no progress line in:\n{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" tasks, ") && l.contains("ETA"))
    );
    let last = lines.last().unwrap();
    // The text format prefixes the target (`svcca_progress: progress: 5/5 tasks, …`).
    let counts = last
        .rsplit("progress: ")
        .next()
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    let (done, total) = counts.split_once('/').unwrap();
    assert_eq!(done, total, "the last line reports the end: {last}");
    assert!(last.contains("ETA 0s"), "{last}");

    let json = run("json", "0.001", &["--log-format", "json"]);
    let records: Vec<Value> = json
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "svcca_progress")
        .collect();
    assert!(!records.is_empty(), "no JSON progress record in:\n{json}");
    let last = &records.last().unwrap()["fields"];
    assert!(last["done"].as_u64().unwrap() > 0, "{last}");
    assert_eq!(last["done"], last["total"], "{last}");
    assert!(last["rate_per_s"].as_f64().unwrap() > 0.0, "{last}");
    assert_eq!(last["eta_s"].as_f64(), Some(0.0), "{last}");

    let quiet = run("quiet", "0", &[]);
    assert!(!quiet.contains("progress: "), "{quiet}");
}

#[test]
fn a_progress_interval_that_is_not_a_duration_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("never").to_string_lossy().into_owned();
    for bad in ["-1", "NaN", "inf"] {
        let flag = format!("--progress-every={bad}");
        let run = svcca(&[
            "sweep",
            "examples/digits-dataset",
            "--out",
            &out_dir,
            "--no-report",
            &flag,
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(10), "{bad}: {stderr}");
        assert!(
            stderr.contains("--progress-every must be a number of seconds, 0 or more"),
            "{bad}: {stderr}"
        );
    }
}

/// `--coefficients` says where each pair's canonical correlations go; the means stay the same
/// and results.json holds the coefficients only under `json`.
#[test]
fn coefficients_go_where_the_flag_says() {
    let out = tempfile::tempdir().unwrap();
    let mut stored = Vec::new();
    for store in ["parquet", "json", "none"] {
        let dir = out.path().join(store);
        let run = svcca(&[
            "sweep",
            "examples/digits-dataset",
            "--out",
            dir.to_str().unwrap(),
            "--compare",
            "vs-final",
            "--where",
            "seed=0",
            "--where",
            "layer=h2",
            "--no-report",
            "--coefficients",
            store,
        ]);
        assert!(
            run.status.success(),
            "--coefficients {store}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let bytes = std::fs::read(dir.join("results.json")).unwrap();
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["coefficients"], store);
        let inline = json["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p.get("coefficients").is_some())
            .count();
        assert_eq!(
            inline > 0,
            store == "json",
            "{store}: {inline} pairs inline"
        );
        let mut full = svcca_results::ResultsFile::from_json(&bytes).unwrap();
        full.fill_coefficients(std::fs::read(dir.join("pairs.parquet")).unwrap())
            .unwrap();
        stored.push((full.pairs, bytes.len()));
    }
    let (parquet, json, none) = (&stored[0], &stored[1], &stored[2]);
    assert_eq!(
        parquet.0, json.0,
        "the same numbers, wherever they are kept"
    );
    assert!(none.0.iter().all(|p| p.coefficients.is_empty()));
    assert!(
        parquet.0.iter().zip(&none.0).all(|(p, n)| p.mean == n.mean),
        "means do not depend on it"
    );
    assert!(parquet.1 < json.1, "results.json is smaller without them");
}

/// Across seeds, best matches of the digits MLP's hidden layers rank at equal kept dimensions,
/// and where the match is not the same layer of the other seed the page says why, with both
/// numbers: the match was compared at a smaller `k` (the logits keep 8 directions, h1 over 60).
/// Over all kept directions the logits win every hidden row.
#[test]
fn cross_seed_best_matches_rank_at_equal_kept_dims_and_the_page_says_why_not_the_same_layer() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("sweep");
    let out_str = out_dir.to_string_lossy().into_owned();
    let run = svcca(&[
        "sweep",
        "examples/digits-dataset",
        "--out",
        &out_str,
        "--compare",
        "all-pairs",
        "--where",
        "run=mlp",
        "--where",
        "step=2250",
        "--metric",
        "svcca",
        "--metric",
        "cka",
        "--workers",
        "2",
    ]);
    assert!(
        run.status.success(),
        "sweep failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report/report.json")).unwrap())
            .unwrap();
    let index = std::fs::read_to_string(out_dir.join("report/index.html")).unwrap();
    assert!(
        index.contains("equal kept dimensions k = min(kₐ, k_b)"),
        "the page says what ranks best matches"
    );
    let mats = report["layer_matrices"].as_array().unwrap();
    let (mut cross_seed, mut wide_wins, mut same_layer) = (0, 0, 0);
    for m in mats {
        let labels = |axis: &str| -> Vec<String> {
            m["matrix"][axis]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect()
        };
        let (rows, cols) = (labels("row_labels"), labels("col_labels"));
        let names = format!("{} × {}", m["a"], m["b"]);
        let k = |r: usize, c: usize| -> u64 {
            let dims = m["dims"][r * cols.len() + c].as_array().expect("dims");
            dims.iter().map(|d| d.as_u64().unwrap()).min().unwrap()
        };
        assert_eq!(m["ranked_by"], "equal-k", "{names}");
        for (r, best) in m["best_match"].as_array().unwrap().iter().enumerate() {
            let c = best["col"].as_u64().unwrap() as usize;
            let col = cols[c].as_str();
            assert!(best["cka"].as_f64().is_some(), "{names}: {best}");
            assert_eq!(best["value"], best["equal_k_mean"], "{names}: {best}");
            if m["a"] == m["b"] {
                assert_ne!(col, rows[r], "{names}: {} matched itself", rows[r]);
                continue;
            }
            if rows[r] == "logits" {
                continue;
            }
            let by_mean = m["best_by_mean"][r].as_u64().unwrap() as usize;
            wide_wins += usize::from(cols[by_mean] != rows[r]);
            if col == rows[r] {
                same_layer += 1;
                continue;
            }
            let same = cols.iter().position(|l| *l == rows[r]).unwrap();
            assert!(
                k(r, c) < k(r, same),
                "{names}: {} matched {col} at k = {} though itself at k = {}",
                rows[r],
                k(r, c),
                k(r, same)
            );
            let stated = format!("{} → {col} at k = {} (", rows[r], k(r, c));
            assert!(
                index.contains(&stated),
                "{names}: the page does not state `{stated}`"
            );
        }
        cross_seed += usize::from(m["a"] != m["b"]);
    }
    assert_eq!(cross_seed, 3, "three seed pairs at step 2250");
    // Over all kept directions some hidden layer's best match is another layer.
    assert!(
        wide_wins > 0,
        "no row picks another layer over all kept dims"
    );
    eprintln!("hidden rows matched by the same layer at equal k: {same_layer} of 12");
}
