//! The data model as a user meets it: conv activations in PyTorch order (`--layout nchw`), layer
//! depth declared at ingest (`--layer-order`) and followed by the report, and tags that keep two
//! representations apart in every matrix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::Array;
use serde_json::Value;
use svcca_storage::npy;

const SVCCA: &str = env!("CARGO_BIN_EXE_svcca");
const PATTERN: &str = "{run}/seed{seed}/step{step}/{layer}.npy";

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits")
}

fn svcca(args: &[&str]) -> Output {
    Command::new(SVCCA)
        .args(args)
        .env_remove("SVCCA_LOG")
        .env("SVCCA_THREADS", "2")
        .output()
        .expect("run svcca")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "svcca failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The real digits conv activations (`[597, 8, 8, c]`), written as given (`nhwc`) or transposed
/// to PyTorch's `[597, c, 8, 8]` (`nchw`).
fn write_conv(dir: &Path, nchw: bool) {
    for seed in [0, 1] {
        for layer in ["conv1", "conv2"] {
            let rel = format!("conv/seed{seed}/step1500/{layer}.npy");
            let a = npy::read_f32(digits().join(&rel)).unwrap();
            let to = dir.join(&rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            if !nchw {
                npy::write_npy(&to, &a.shape, &a.data).unwrap();
                continue;
            }
            let [n, h, w, c] = a.shape[..] else {
                panic!("conv fixture shape {:?}", a.shape)
            };
            let mut t = vec![0f32; a.data.len()];
            for i in 0..n {
                for y in 0..h {
                    for x in 0..w {
                        for ch in 0..c {
                            t[((i * c + ch) * h + y) * w + x] =
                                a.data[((i * h + y) * w + x) * c + ch];
                        }
                    }
                }
            }
            npy::write_npy(&to, &[n, c, h, w], &t).unwrap();
        }
    }
}

/// (a, b, metric) -> mean, with keys as canonical ids.
fn means(results: &Value) -> BTreeMap<(String, String, String), f64> {
    let id = |k: &Value| {
        format!(
            "{}/{}/{}/{}",
            k["run"].as_str().unwrap(),
            k["seed"],
            k["step"],
            k["layer"].as_str().unwrap()
        )
    };
    results["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                (
                    id(&p["a"]),
                    id(&p["b"]),
                    p["metric"].as_str().unwrap().to_string(),
                ),
                p["mean"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn conv_activations_in_pytorch_order_sweep_to_the_same_numbers_as_channels_last() {
    let tmp = tempfile::tempdir().unwrap();
    let (src_nhwc, src_nchw) = (tmp.path().join("nhwc"), tmp.path().join("nchw"));
    write_conv(&src_nhwc, false);
    write_conv(&src_nchw, true);
    let ds = |name: &str| tmp.path().join(name).display().to_string();

    // Undeclared, the 4-D arrays are refused and nothing is written.
    let o = svcca(&[
        "ingest",
        src_nchw.to_str().unwrap(),
        &ds("ds-nchw"),
        "--pattern",
        PATTERN,
    ]);
    assert_eq!(o.status.code(), Some(10));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("[597, 16, 8, 8]") && err.contains("--layout nhwc|nchw|dense"),
        "{err}"
    );
    assert!(!tmp.path().join("ds-nchw/manifest.json").exists());

    for (src, name, layout) in [
        (&src_nhwc, "ds-nhwc", "nhwc"),
        (&src_nchw, "ds-nchw", "nchw"),
    ] {
        ok(svcca(&[
            "ingest",
            src.to_str().unwrap(),
            &ds(name),
            "--pattern",
            PATTERN,
            "--layout",
            layout,
            "--shard-rows",
            "250",
        ]));
    }
    let ls = read_json_stdout(svcca(&["ls", &ds("ds-nchw"), "--json"]));
    let conv2 = ls["representations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "run=conv,seed=0,step=1500,layer=conv2")
        .unwrap()
        .clone();
    assert_eq!(conv2["shape"], serde_json::json!([597, 8, 8, 32]));
    assert_eq!(conv2["layout"], "nhwc");
    assert_eq!(conv2["source_layout"], "nchw");

    let mut all = Vec::new();
    for (name, conv) in [
        ("ds-nhwc", "dft"),
        ("ds-nchw", "dft"),
        ("ds-nhwc", "pool"),
        ("ds-nchw", "pool"),
    ] {
        let out = tmp.path().join(format!("out-{name}-{conv}"));
        let spec = tmp.path().join(format!("{name}-{conv}.toml"));
        std::fs::write(
            &spec,
            format!(
                "dataset = {:?}\noutput = {:?}\ncomparison = \"all-pairs\"\nmetrics = [\"svcca\", \"cka\"]\nconv = {conv:?}\n",
                ds(name),
                out.display().to_string()
            ),
        )
        .unwrap();
        ok(svcca(&["sweep", spec.to_str().unwrap(), "--no-report"]));
        all.push(means(&read_json(&out.join("results.json"))));
    }
    for (nhwc, nchw) in [(&all[0], &all[1]), (&all[2], &all[3])] {
        assert!(nhwc.len() >= 6, "4 representations, 6 pairs: {nhwc:?}");
        assert_eq!(
            nhwc.keys().collect::<Vec<_>>(),
            nchw.keys().collect::<Vec<_>>()
        );
        for (k, a) in nhwc {
            let b = nchw[k];
            assert!((a - b).abs() <= 1e-9, "{k:?}: nhwc {a} vs nchw {b}");
        }
    }
    // The two conv methods differ, so equal numbers above are not an accident of the method.
    let k = all[0].keys().next().unwrap();
    assert!((all[0][k] - all[2][k]).abs() > 1e-6);
}

fn read_json_stdout(o: Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap()
}

/// The digits MLP's hidden layers renamed as a ResNet's, so that the names' natural order
/// (conv1, fc, layer1.0.conv1, layer2.0.conv1) is not the network's.
const RENAMED: [(&str, &str); 4] = [
    ("h1", "conv1"),
    ("h2", "layer1.0.conv1"),
    ("h3", "layer2.0.conv1"),
    ("h4", "fc"),
];

#[test]
fn declared_layer_order_drives_learning_dynamics_and_freeze_suggestions() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for step in [0, 25, 100, 400, 2250] {
        for (from, to) in RENAMED {
            let dir = src.join(format!("resnet/seed0/step{step}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(
                digits().join(format!("mlp/seed0/step{step}/{from}.npy")),
                dir.join(format!("{to}.npy")),
            )
            .unwrap();
        }
    }
    let order = tmp.path().join("order.txt");
    std::fs::write(
        &order,
        "# input side first\nconv1\nlayer1.0.conv1\nlayer2.0.conv1\nfc\n",
    )
    .unwrap();
    let ds = tmp.path().join("ds").display().to_string();
    ok(svcca(&[
        "ingest",
        src.to_str().unwrap(),
        &ds,
        "--pattern",
        PATTERN,
        "--layer-order-file",
        order.to_str().unwrap(),
    ]));
    let out = tmp.path().join("out");
    ok(svcca(&[
        "sweep",
        &ds,
        "--out",
        out.to_str().unwrap(),
        "--compare",
        "vs-final",
        "--metric",
        "svcca",
    ]));
    let report = read_json(&out.join("report/report.json"));
    let networks = report["dynamics"]["networks"].as_array().unwrap();
    assert_eq!(networks.len(), 1);
    let layers = networks[0]["layers"].as_array().unwrap();
    let names: Vec<&str> = layers
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["conv1", "layer1.0.conv1", "layer2.0.conv1", "fc"]);
    let depths: Vec<u64> = layers
        .iter()
        .map(|l| l["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [0, 1, 2, 3]);
    // A layer's suggested freeze step is the latest convergence among it and the layers below
    // it, in depth order.
    let mut latest: Option<i64> = Some(i64::MIN);
    for l in layers {
        let conv = l["convergence_step"].as_i64();
        latest = match (latest, conv) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        assert_eq!(l["suggested_freeze_step"].as_i64(), latest, "{l}");
    }
    assert_eq!(
        networks[0]["depth_layers"],
        serde_json::json!(["conv1", "layer1.0.conv1", "layer2.0.conv1"])
    );
    let results = read_json(&out.join("results.json"));
    let depth_of = |layer: &str| {
        results["representations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"]["layer"] == layer)
            .unwrap()["depth"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(depth_of("fc"), 3);
    assert_eq!(depth_of("conv1"), 0);
}

#[test]
fn two_tag_values_give_a_symmetric_matrix_with_distinct_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // Two seeds per tag value (another fixture checkpoint for each value, so no two are equal).
    for (lr, from_step) in [("0.1", 2250), ("0.01", 400)] {
        for seed in [0, 1] {
            let dir = src.join(format!("lr={lr}/mlp/seed{seed}/step2250"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(
                digits().join(format!("mlp/seed{seed}/step{from_step}/h1.npy")),
                dir.join("h1.npy"),
            )
            .unwrap();
        }
    }
    let ds = tmp.path().join("ds").display().to_string();
    ok(svcca(&[
        "ingest",
        src.to_str().unwrap(),
        &ds,
        "--pattern",
        "lr={lr}/{run}/seed{seed}/step{step}/{layer}.npy",
    ]));
    let out = tmp.path().join("out");
    ok(svcca(&[
        "sweep",
        &ds,
        "--out",
        out.to_str().unwrap(),
        "--compare",
        "all-pairs",
        "--metric",
        "svcca",
    ]));
    let csv = std::fs::read_to_string(out.join("matrix_svcca.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv.lines().map(csv_fields).collect();
    let header = &rows[0][1..];
    assert_eq!(header.len(), 4, "{csv}");
    let labels: std::collections::BTreeSet<&String> = header.iter().collect();
    assert_eq!(labels.len(), 4, "labels must be distinct: {header:?}");
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(
            &row[0], &header[i],
            "row and column labels in the same order"
        );
        for (j, cell) in row[1..].iter().enumerate() {
            if i == j {
                assert_eq!(cell, "", "a representation is not compared with itself");
                continue;
            }
            let v: f64 = cell
                .parse()
                .unwrap_or_else(|_| panic!("cell ({i}, {j}) is `{cell}`: {csv}"));
            let w: f64 = rows[j + 1][i + 1].parse().unwrap();
            assert!((v - w).abs() < 1e-12, "({i}, {j}) {v} vs {w}");
            assert!(v < 0.9999, "different representations: {v}");
        }
    }
    // Every place names a representation by the same canonical key, tags included: the
    // matrices (CSV and Arrow), `svcca ls`, the analyses, pairs.parquet, the report, and a
    // selector picks the representation it names.
    let key = |seed: u32, lr: &str| format!("run=mlp,seed={seed},step=2250,layer=h1,lr={lr}");
    let expected: std::collections::BTreeSet<String> =
        [key(0, "0.01"), key(0, "0.1"), key(1, "0.01"), key(1, "0.1")].into();
    assert_eq!(
        header
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected,
        "{csv}"
    );
    let arrow = std::fs::read(out.join("matrix_svcca.arrow")).unwrap();
    let batches: Vec<_> = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(arrow), None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let arrow_columns: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .skip(1)
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(arrow_columns, header, "Arrow and CSV matrices share labels");
    let listed = ok(svcca(&["ls", &ds]));
    for k in &expected {
        assert!(
            listed.contains(k.as_str()),
            "`svcca ls` names {k}:\n{listed}"
        );
    }
    let index = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    for k in &expected {
        assert!(index.contains(k.as_str()), "the report names {k}");
    }
    // Cross-seed agreement pairs the seeds of one learning rate, never across them.
    for lr in ["0.1", "0.01"] {
        assert!(
            index.contains(&format!("<td>run=mlp,lr={lr}</td>")),
            "the report's seed table has a row for lr={lr}"
        );
    }
    let table =
        svcca_results::read_pairs_parquet(std::fs::read(out.join("pairs.parquet")).unwrap())
            .unwrap();
    assert_eq!(table.num_rows(), 6, "4 choose 2 pairs, one metric");
    let strings = |name: &str| -> Vec<String> {
        let column = table
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"));
        let column = column
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        (0..column.len())
            .map(|i| column.value(i).to_string())
            .collect()
    };
    for side in ["a", "b"] {
        let keys = strings(&format!("{side}_key"));
        let lrs = strings(&format!("{side}_tag_lr"));
        for (k, lr) in keys.iter().zip(&lrs) {
            assert!(
                expected.contains(k) && k.ends_with(&format!(",lr={lr}")),
                "{k} / {lr}"
            );
        }
    }
    let results = read_json(&out.join("results.json"));
    let cell = |a: &str, b: &str| -> f64 {
        let (i, j) = (
            header.iter().position(|h| h == a).unwrap(),
            header.iter().position(|h| h == b).unwrap(),
        );
        rows[i + 1][j + 1].parse().unwrap()
    };
    let compared = read_json_stdout(svcca(&[
        "compare",
        &format!("{ds}#{}", key(0, "0.1")),
        &format!("{ds}#{}", key(1, "0.01")),
        "--json",
    ]));
    let got = compared["mean"].as_f64().unwrap();
    let want = cell(&key(0, "0.1"), &key(1, "0.01"));
    assert!((got - want).abs() < 1e-9, "selector {got} vs matrix {want}");
    assert!(
        results["pairs"][0].get("coefficients").is_none(),
        "results.json keeps no coefficients by default"
    );
    // The analyses keep the tag values apart too: one dimensionality curve per tag value, each
    // between the two seeds of that value.
    let analyses = read_json(&out.join("analyses.json"));
    let mut curves: Vec<(String, String)> = analyses["dimensionality"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["a"].as_str().unwrap().into(),
                c["b"].as_str().unwrap().into(),
            )
        })
        .collect();
    curves.sort();
    assert_eq!(
        curves,
        [
            (key(0, "0.01"), key(1, "0.01")),
            (key(0, "0.1"), key(1, "0.1"))
        ]
    );
}

/// Fields of one CSV line; labels may be quoted (they can hold commas).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// `[sequences, tokens, features]` layers are compared only once `--tokens` says how, and each
/// choice gives the numbers of the matching dense layers: `fold` those of every token as a
/// datapoint, `mean` those of each sequence's mean; every pair names the choice.
#[test]
fn tokens_layers_are_folded_or_averaged_as_chosen_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, f) = (8usize, 16usize);
    let write = |root: &str, layer: &str, seed: u64, shape: &[usize], data: &[f32]| {
        let dir = tmp.path().join(format!("{root}/net/seed{seed}/step1"));
        std::fs::create_dir_all(&dir).unwrap();
        npy::write_npy(dir.join(format!("{layer}.npy")), shape, data).unwrap();
    };
    for seed in [0u64, 1] {
        let h = npy::read_f32(digits().join(format!("mlp/seed{seed}/step2250/h1.npy"))).unwrap();
        let n = h.shape[0];
        assert_eq!(h.shape[1], t * f);
        write("tokens", "tok", seed, &[n, t, f], &h.data);
        write("folded", "tok", seed, &[n * t, f], &h.data);
        let mean: Vec<f32> = (0..n)
            .flat_map(|i| {
                let h = &h.data;
                (0..f).map(move |c| {
                    (0..t).map(|k| h[(i * t + k) * f + c] as f64).sum::<f64>() as f32 / t as f32
                })
            })
            .collect();
        write("means", "tok", seed, &[n, f], &mean);
    }
    let ds = |name: &str| tmp.path().join(format!("ds-{name}")).display().to_string();
    for (name, layout) in [
        ("tokens", "tokens"),
        ("folded", "dense"),
        ("means", "dense"),
    ] {
        ok(svcca(&[
            "ingest",
            tmp.path().join(name).to_str().unwrap(),
            &ds(name),
            "--pattern",
            PATTERN,
            "--layout",
            layout,
        ]));
    }
    let sweep = |name: &str, out: &str, tokens: Option<&str>| {
        let out = tmp.path().join(out);
        let mut args = vec![
            "sweep".to_string(),
            ds(name),
            "--out".into(),
            out.display().to_string(),
            "--compare".into(),
            "all-pairs".into(),
            "--metric".into(),
            "svcca".into(),
            "--no-report".into(),
        ];
        if let Some(t) = tokens {
            args.extend(["--tokens".to_string(), t.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (svcca(&args), out)
    };
    let (o, _) = sweep("tokens", "refused", None);
    assert_eq!(o.status.code(), Some(10));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tokens layer [sequences, tokens, features]") && err.contains("--tokens fold"),
        "{err}"
    );
    let only_pair = |out: &Path| {
        let r = read_json(&out.join("results.json"));
        let pairs = r["pairs"].as_array().unwrap().clone();
        assert_eq!(pairs.len(), 1, "{r}");
        (
            pairs[0].clone(),
            r["settings"].as_str().unwrap().to_string(),
        )
    };
    for (method, dense, tolerance) in [("fold", "folded", 1e-9), ("mean", "means", 1e-5)] {
        let (o, out) = sweep("tokens", &format!("out-{method}"), Some(method));
        ok(o);
        let (pair, settings) = only_pair(&out);
        let (o, out) = sweep(dense, &format!("out-{dense}"), None);
        ok(o);
        let (reference, _) = only_pair(&out);
        let (a, b) = (
            pair["mean"].as_f64().unwrap(),
            reference["mean"].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= tolerance, "--tokens {method}: {a} vs {b}");
        let note = format!("tokens {method}");
        assert!(settings.contains(&note), "{settings}");
        assert!(
            pair["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains(&note)),
            "{pair}"
        );
    }
}
