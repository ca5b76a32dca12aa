//! `svcca compare` as a user runs it: the real binary on real files, checking the JSON it prints,
//! its exit codes and its error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use svcca_storage::npy::{read_f32, read_f64, write_npy};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn digits(rel: &str) -> String {
    fixtures()
        .join("digits")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn svcca(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svcca"))
        .args(args)
        .env("SVCCA_THREADS", "2")
        .output()
        .expect("the svcca binary runs")
}

fn json_of(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = svcca(&all);
    assert!(
        out.status.success(),
        "svcca {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON object")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// Fails with the exit code for bad input and a message containing every `needle`.
fn fails_with(args: &[&str], needles: &[&str]) {
    let out = svcca(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(10),
        "svcca {args:?}: expected exit 10, stderr: {stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "svcca {args:?}: {needle:?} missing from: {stderr}"
        );
    }
    assert!(
        !stderr.contains("panicked"),
        "svcca {args:?} panicked: {stderr}"
    );
}

#[test]
fn real_layers_in_both_modes_agree_where_they_must() {
    let x = digits("mlp/seed0/step2250/h1.npy");
    let y = digits("mlp/seed1/step2250/h1.npy");
    for metric in ["svcca", "cca"] {
        let default = json_of(&["compare", &x, &y, "--metric", metric]);
        let google = json_of(&["compare", &x, &y, "--metric", metric, "--google-compat"]);
        assert_eq!(default["metric"], metric);
        assert_eq!(google["metric"], metric);
        let (cd, cg) = (
            floats(&default["coefficients"]),
            floats(&google["coefficients"]),
        );
        // Both modes keep directions by the same eigenvalues: same dims, hence as many
        // coefficients. The google ridge (1e-10 of the largest covariance entry) moves them only
        // slightly on these well-conditioned layers.
        assert_eq!(default["dims_x"], google["dims_x"], "{metric}: dims_x");
        assert_eq!(default["dims_y"], google["dims_y"], "{metric}: dims_y");
        assert_eq!(cd.len(), cg.len(), "{metric}: coefficient counts");
        for (a, b) in cd.iter().zip(&cg) {
            assert!((a - b).abs() < 1e-5, "{metric}: default {a} vs google {b}");
        }
        assert!(
            cd.windows(2).all(|w| w[0] >= w[1]),
            "{metric}: coefficients descend"
        );
        assert!(
            cd.iter().all(|c| (0.0..=1.0 + 1e-12).contains(c)),
            "{metric}: coefficients in [0, 1]"
        );
        let mean: f64 = cd.iter().sum::<f64>() / cd.len() as f64;
        assert!(
            (default["mean"].as_f64().unwrap() - mean).abs() < 1e-12,
            "{metric}: mean is the mean of all"
        );
        assert!(
            default["google_mean"].as_f64().is_some(),
            "{metric}: google_mean reported"
        );
    }
    // SVCCA at 99% variance keeps fewer directions than the 128 neurons of h1.
    let svcca = json_of(&["compare", &x, &y]);
    let kept = svcca["dims_x"].as_u64().unwrap();
    assert!(
        kept > 5 && kept < 128,
        "SVCCA kept {kept} of 128 directions"
    );
}

#[test]
fn neurons_first_reproduces_golden_and_matches_datapoints_first() {
    let case = fixtures().join("golden/cca_lowrank_shared");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(case.join("expected.json")).unwrap()).unwrap();
    let a1 = case.join("acts1.npy").to_string_lossy().into_owned();
    let a2 = case.join("acts2.npy").to_string_lossy().into_owned();
    let got = json_of(&[
        "compare",
        &a1,
        &a2,
        "--neurons-first",
        "--google-compat",
        "--metric",
        "cca",
        "--epsilon",
        "1e-10",
        "--block-rows",
        "333",
    ]);
    let want = floats(&expected["result"]["cca_coef1"]);
    let have = floats(&got["coefficients"]);
    assert_eq!(want.len(), have.len());
    for (w, h) in want.iter().zip(&have) {
        assert!((w - h).abs() < 1e-9, "golden {w} vs {h}");
    }
    let google_mean = expected["result"]["mean"][0].as_f64().unwrap();
    assert!((got["google_mean"].as_f64().unwrap() - google_mean).abs() < 1e-9);

    // The same data stored datapoints-first gives the same numbers without the flag.
    let dir = tempfile::tempdir().unwrap();
    let transposed = |src: &str, name: &str| {
        let arr = read_f64(src).unwrap();
        let (d, n) = (arr.shape[0], arr.shape[1]);
        let mut t = vec![0f64; d * n];
        for i in 0..d {
            for j in 0..n {
                t[j * d + i] = arr.data[i * n + j];
            }
        }
        let path = dir.path().join(name);
        write_npy(&path, &[n, d], &t).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (t1, t2) = (transposed(&a1, "t1.npy"), transposed(&a2, "t2.npy"));
    let again = json_of(&[
        "compare",
        &t1,
        &t2,
        "--google-compat",
        "--metric",
        "cca",
        "--epsilon",
        "1e-10",
    ]);
    for (a, b) in floats(&again["coefficients"]).iter().zip(&have) {
        assert!(
            (a - b).abs() < 1e-12,
            "datapoints-first {a} vs neurons-first {b}"
        );
    }
}

#[test]
fn every_metric_prints_the_documented_fields() {
    let x = digits("mlp/seed0/step2250/h2.npy");
    let y = digits("mlp/seed2/step2250/h3.npy");
    for metric in ["svcca", "cca", "pwcca", "cka"] {
        let v = json_of(&["compare", &x, &y, "--metric", metric]);
        for field in [
            "metric",
            "mean",
            "coefficients",
            "google_mean",
            "dims_x",
            "dims_y",
            "dropped_x",
            "dropped_y",
            "warnings",
            "definition",
        ] {
            assert!(
                v.get(field).is_some(),
                "{metric}: field {field} missing from {v}"
            );
        }
        let mean = v["mean"].as_f64().unwrap();
        assert!(
            mean.is_finite() && mean > 0.0 && mean <= 1.0,
            "{metric}: mean {mean}"
        );
    }
    let pwcca = json_of(&["compare", &x, &y, "--metric", "pwcca"]);
    let w = floats(&pwcca["weights"]);
    assert!(
        (w.iter().sum::<f64>() - 1.0).abs() < 1e-9,
        "pwcca weights sum to 1"
    );
}

#[test]
fn table_output_names_the_definition() {
    let x = digits("mlp/seed0/step2250/h4.npy");
    let y = digits("mlp/seed1/step2250/h4.npy");
    let out = svcca(&["compare", &x, &y]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "metric       svcca",
        "mean ",
        "google mean",
        "dims ",
        "coefficients",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the table:\n{text}"
        );
    }
}

#[test]
fn conv_layers_with_all_three_methods_and_both_layouts() {
    let c1 = digits("conv/seed0/step1500/conv1.npy");
    let c2 = digits("conv/seed1/step1500/conv2.npy");
    let dft = json_of(&["compare", &c1, &c2, "--conv", "dft", "--metric", "cca"]);
    let freqs = dft["frequencies"]
        .as_array()
        .expect("dft lists frequencies");
    assert_eq!(freqs.len(), 64, "8 x 8 grid");
    for f in freqs {
        assert!(
            f.get("i").is_some()
                && f.get("j").is_some()
                && f.get("coefficients").is_some()
                && f.get("mean").is_some()
        );
    }
    for method in ["fold", "pool"] {
        let v = json_of(&["compare", &c1, &c2, "--conv", method, "--metric", "cca"]);
        let m = v["mean"].as_f64().unwrap();
        assert!(m > 0.0 && m <= 1.0, "{method}: mean {m}");
    }

    // NCHW input (PyTorch's layout) gives the same numbers as NHWC.
    let dir = tempfile::tempdir().unwrap();
    let to_nchw = |src: &str, name: &str| {
        let arr = read_f32(src).unwrap();
        let (n, h, w, c) = (arr.shape[0], arr.shape[1], arr.shape[2], arr.shape[3]);
        let mut t = vec![0f32; n * h * w * c];
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        t[((i * c + ch) * h + y) * w + x] =
                            arr.data[((i * h + y) * w + x) * c + ch];
                    }
                }
            }
        }
        let path = dir.path().join(name);
        write_npy(&path, &[n, c, h, w], &t).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (n1, n2) = (to_nchw(&c1, "c1.npy"), to_nchw(&c2, "c2.npy"));
    let nchw = json_of(&[
        "compare", &n1, &n2, "--conv", "dft", "--metric", "cca", "--nchw",
    ]);
    assert!((nchw["mean"].as_f64().unwrap() - dft["mean"].as_f64().unwrap()).abs() < 1e-9);
}

#[test]
fn bad_inputs_get_clear_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let good = digits("mlp/seed0/step2250/h4.npy");

    // NaN with its position.
    let mut data: Vec<f32> = read_f32(&good).unwrap().data;
    data[5 * 64 + 7] = f32::NAN;
    write_npy(p("nan.npy"), &[597, 64], &data).unwrap();
    fails_with(
        &["compare", &p("nan.npy"), &good],
        &["nan.npy", "datapoint 5", "7"],
    );

    // Different datapoint counts.
    let short: Vec<f32> = read_f32(&good).unwrap().data[..500 * 64].to_vec();
    write_npy(p("short.npy"), &[500, 64], &short).unwrap();
    fails_with(
        &["compare", &p("short.npy"), &good],
        &["short.npy", "500", "597"],
    );

    // Wrong rank for a dense comparison, and a conv method on dense data.
    write_npy(p("rank3.npy"), &[597, 8, 8], &vec![0.5f32; 597 * 64]).unwrap();
    fails_with(
        &["compare", &p("rank3.npy"), &good],
        &["rank3.npy", "[597, 8, 8]"],
    );
    fails_with(&["compare", &good, &good, "--conv", "dft"], &["4-D"]);

    // Unsupported dtype: the int64 labels.
    fails_with(
        &["compare", &digits("probe_y.npy"), &good],
        &["probe_y.npy", "dtype"],
    );

    // Truncated file.
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(p("trunc.npy"), &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &["compare", &p("trunc.npy"), &good],
        &["trunc.npy", "truncated"],
    );

    // Corrupt header.
    std::fs::write(p("junk.npy"), b"this is not numpy").unwrap();
    fails_with(&["compare", &p("junk.npy"), &good], &["junk.npy"]);

    // Fortran order is read as such: the same matrix stored column-major compares the same.
    let mut fortran = bytes.clone();
    let (from, to) = (b"'fortran_order': False", b"'fortran_order': True ");
    let at = fortran
        .windows(from.len())
        .position(|w| w == from)
        .expect("a C-order header");
    fortran[at..at + to.len()].copy_from_slice(to);
    let m = read_f32(&good).unwrap();
    let (n, d) = (m.shape[0], m.shape[1]);
    let data_at = fortran.len() - n * d * 4;
    for j in 0..d {
        for i in 0..n {
            let k = data_at + (j * n + i) * 4;
            fortran[k..k + 4].copy_from_slice(&m.data[i * d + j].to_le_bytes());
        }
    }
    std::fs::write(p("fortran.npy"), &fortran).unwrap();
    let other = digits("mlp/seed1/step2250/h4.npy");
    let c_order = json_of(&["compare", &good, &other]);
    let f_order = json_of(&["compare", &p("fortran.npy"), &other]);
    assert_eq!(c_order["coefficients"], f_order["coefficients"]);

    // Empty array.
    write_npy(p("empty.npy"), &[0, 64], &Vec::<f32>::new()).unwrap();
    fails_with(
        &["compare", &p("empty.npy"), &p("empty.npy")],
        &["empty.npy"],
    );

    // An all-constant layer.
    write_npy(p("const.npy"), &[597, 64], &vec![3.0f32; 597 * 64]).unwrap();
    fails_with(
        &["compare", &p("const.npy"), &good, "--metric", "cca"],
        &["constant"],
    );

    // Missing file.
    fails_with(&["compare", &p("missing.npy"), &good], &["missing.npy"]);
}

#[test]
fn as_many_dims_as_datapoints_is_refused_unless_opted_in() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    // 40 datapoints of 64 neurons: more neurons than datapoints.
    let h4 = read_f32(digits("mlp/seed0/step2250/h4.npy")).unwrap().data;
    let g4 = read_f32(digits("mlp/seed1/step2250/h4.npy")).unwrap().data;
    write_npy(p("a.npy"), &[40, 64], &h4[..40 * 64]).unwrap();
    write_npy(p("b.npy"), &[40, 64], &g4[..40 * 64]).unwrap();
    fails_with(
        &["compare", &p("a.npy"), &p("b.npy"), "--metric", "cca"],
        &["trivially 1", "datapoints"],
    );
    let forced = json_of(&[
        "compare",
        &p("a.npy"),
        &p("b.npy"),
        "--metric",
        "cca",
        "--allow-trivial",
    ]);
    assert!(forced["mean"].as_f64().unwrap().is_finite());
}

#[test]
fn flag_combinations_that_cannot_work_are_refused() {
    let dense = digits("mlp/seed0/step2250/h4.npy");
    let conv = digits("conv/seed0/step1500/conv1.npy");
    fails_with(
        &[
            "compare", &conv, &conv, "--conv", "dft", "--metric", "pwcca",
        ],
        &["--metric pwcca", "--conv"],
    );
    fails_with(
        &["compare", &dense, &dense, "--block-rows", "0"],
        &["--block-rows"],
    );
    fails_with(
        &[
            "compare",
            "file:///nowhere#run=mlp,layer=h1",
            &dense,
            "--neurons-first",
        ],
        &["--neurons-first", ".npy files only"],
    );
}

/// `--export-directions` writes matrices that compress a layer as the paper does: applied to the
/// layer's own activations they give uncorrelated unit-variance canonical variates.
#[test]
fn exported_svcca_directions_whiten_the_layer_and_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("h1");
    let out_s = out.to_string_lossy().into_owned();
    let (x, y) = (
        digits("mlp/seed0/step2250/h1.npy"),
        digits("mlp/seed1/step2250/h1.npy"),
    );
    let report = json_of(&["compare", &x, &y, "--export-directions", &out_s]);
    // Exporting keeps the one-pass joint moments; the result is the two-pass SVCCA's.
    let plain = json_of(&["compare", &x, &y]);
    assert_eq!(report["dims_x"], plain["dims_x"]);
    assert_eq!(report["dims_y"], plain["dims_y"]);
    let (a, b) = (
        report["mean"].as_f64().unwrap(),
        plain["mean"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    let k_pair = report["dims_x"]
        .as_u64()
        .unwrap()
        .min(report["dims_y"].as_u64().unwrap()) as usize;
    let p = read_f64(out.join("svcca_projection.npy")).unwrap();
    let mean = read_f64(out.join("svcca_mean.npy")).unwrap();
    let recon = read_f64(out.join("svcca_reconstruction.npy")).unwrap();
    let data = read_f32(&x).unwrap();
    let (n, d) = (data.shape[0], data.shape[1]);
    assert_eq!(
        p.shape,
        vec![d, k_pair],
        "every SVCCA direction of the pair"
    );
    assert_eq!(recon.shape, vec![k_pair, d]);
    assert_eq!(mean.shape, vec![d]);
    // z = (x - mean) P, then its covariance must be the identity.
    let k = k_pair;
    let mut z = vec![0f64; n * k];
    for r in 0..n {
        for j in 0..k {
            z[r * k + j] = (0..d)
                .map(|i| (data.data[r * d + i] as f64 - mean.data[i]) * p.data[i * k + j])
                .sum();
        }
    }
    let mut worst = 0f64;
    for a in 0..k {
        for b in 0..k {
            let c: f64 = (0..n).map(|r| z[r * k + a] * z[r * k + b]).sum::<f64>() / (n - 1) as f64;
            worst = worst.max((c - if a == b { 1.0 } else { 0.0 }).abs());
        }
    }
    assert!(
        worst < 1e-8,
        "covariance of the variates is off the identity by {worst:e}"
    );

    // Asked again into the same folder: refused before anything is read, files untouched.
    let before = std::fs::read(out.join("svcca_projection.npy")).unwrap();
    fails_with(
        &["compare", &x, &y, "--export-directions", &out_s],
        &["svcca_projection.npy", "already exists"],
    );
    assert_eq!(
        std::fs::read(out.join("svcca_projection.npy")).unwrap(),
        before
    );

    // A chosen number of directions; a conv comparison cannot export.
    let five = dir.path().join("five");
    let five_s = five.to_string_lossy().into_owned();
    json_of(&[
        "compare",
        &x,
        &y,
        "--export-directions",
        &five_s,
        "--directions",
        "5",
    ]);
    assert_eq!(
        read_f64(five.join("svcca_projection.npy")).unwrap().shape,
        vec![d, 5]
    );
    fails_with(
        &[
            "compare",
            &x,
            &y,
            "--export-directions",
            &five_s,
            "--directions",
            "500",
        ],
        &["already exists"],
    );
    let conv = digits("conv/seed0/step1500/conv1.npy");
    let conv_dir = dir.path().join("conv").to_string_lossy().into_owned();
    fails_with(
        &[
            "compare",
            &conv,
            &conv,
            "--conv",
            "dft",
            "--export-directions",
            &conv_dir,
        ],
        &["--export-directions is for dense layers"],
    );
    assert!(!dir.path().join("conv").exists(), "nothing written");
}

/// Two 12 MB files of 100 x 30,000 float32 would need about 70 GiB of statistics: refused from
/// the shapes, before anything is allocated, with what to do about it; a bound the estimate fits
/// under is accepted.
#[test]
fn a_comparison_over_the_memory_bound_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (100usize, 30_000usize);
    let values: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 1013) as f32).collect();
    let wide = dir.path().join("wide.npy");
    write_npy(&wide, &[n, d], &values).unwrap();
    let wide = wide.to_string_lossy().into_owned();
    fails_with(
        &["compare", &wide, &wide],
        &[
            "(30000 neurons)",
            "over the bound of 1024 MiB",
            "raise --memory-mb",
            "reduce the neurons",
        ],
    );
    fails_with(
        &["compare", &wide, &wide, "--memory-mb", "60000"],
        &["over the bound of 60000 MiB"],
    );
    // The real layers of the other tests fit the default bound, and a tight one refuses them.
    let x = digits("mlp/seed0/step2250/h1.npy");
    let ok = svcca(&["compare", &x, &x, "--memory-mb", "40"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    fails_with(
        &["compare", &x, &x, "--memory-mb", "16"],
        &["over the bound of 16 MiB"],
    );
    let conv = digits("conv/seed0/step1500/conv1.npy");
    fails_with(
        &[
            "compare",
            &conv,
            &conv,
            "--conv",
            "dft",
            "--memory-mb",
            "16",
        ],
        &["conv layers", "over the bound of 16 MiB"],
    );
}

/// A dataset whose manifest claims 10^12 neurons for a layer (its shards say otherwise) is
/// refused before anything is sized by the claim: the shards cannot hold it, and the arithmetic
/// cannot overflow.
#[test]
fn a_manifest_claiming_absurd_shapes_is_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits-dataset");
    let claim = |name: &str, columns: serde_json::Value| -> String {
        let ds = dir.path().join(name);
        std::fs::create_dir_all(&ds).unwrap();
        std::os::unix::fs::symlink(example.join("data"), ds.join("data")).unwrap();
        let mut manifest: Value =
            serde_json::from_slice(&std::fs::read(example.join("manifest.json")).unwrap()).unwrap();
        let rep = manifest["representations"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|r| r["key"]["layer"] == "h1" && r["key"]["seed"] == 0 && r["key"]["step"] == 0)
            .unwrap();
        if columns.as_array().unwrap().len() == 4 {
            rep["layout"] = "nhwc".into();
        }
        rep["shape"] = columns;
        std::fs::write(ds.join("manifest.json"), manifest.to_string()).unwrap();
        format!("file://{}", ds.display())
    };
    let ds = claim("wide", serde_json::json!([597, 1_000_000_000_000u64]));
    let h1 = format!("{ds}#run=mlp,seed=0,step=0,layer=h1");
    let h2 = format!("{ds}#run=mlp,seed=0,step=0,layer=h2");
    fails_with(
        &["compare", &h1, &h2],
        &[
            "shape [597, 1000000000000] cannot be read",
            "too small for 597 datapoints",
        ],
    );
    // Per-datapoint values that do not even fit a machine word.
    let ds = claim(
        "overflowing",
        serde_json::json!([597, 4_294_967_296u64, 4_294_967_296u64, 16]),
    );
    let h1 = format!("{ds}#run=mlp,seed=0,step=0,layer=h1");
    fails_with(
        &["compare", &h1, &h1, "--conv", "pool"],
        &["layer=h1", "its number of values overflows"],
    );
}

/// The same two layers as `.npy` files, as members of an `.npz` (`FILE::NAME`) and as tensors of
/// a `.safetensors` file give the same JSON; a container without a name, or with a wrong one,
/// is refused with the names it holds.
#[test]
fn npz_and_safetensors_members_compare_like_the_npy_files() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        digits("mlp/seed0/step2250/h2.npy"),
        digits("mlp/seed1/step2250/h2.npy"),
    );
    let npz = tmp.path().join("acts.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&npz).unwrap());
    for (name, path) in [("seed0", &a), ("seed1", &b)] {
        zip.start_file(
            format!("{name}.npy"),
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        zip.write_all(&std::fs::read(path).unwrap()).unwrap();
    }
    zip.finish().unwrap();

    // safetensors: 8-byte header length, JSON header, little-endian data.
    let st = tmp.path().join("acts.safetensors");
    let (xa, xb) = (read_f32(&a).unwrap(), read_f32(&b).unwrap());
    let mut data: Vec<u8> = Vec::new();
    let mut header = serde_json::Map::new();
    for (name, x) in [("seed0", &xa), ("seed1", &xb)] {
        let start = data.len();
        data.extend(x.data.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.into(),
            serde_json::json!({"dtype": "F32", "shape": x.shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    std::fs::write(&st, bytes).unwrap();

    let expected = json_of(&["compare", &a, &b]);
    for file in [&npz, &st] {
        let f = file.display();
        let got = json_of(&["compare", &format!("{f}::seed0"), &format!("{f}::seed1")]);
        assert_eq!(got["mean"], expected["mean"], "{f}");
        assert_eq!(got["coefficients"], expected["coefficients"], "{f}");
        assert_eq!(got["dims_x"], expected["dims_x"], "{f}");
    }
    let f = npz.display().to_string();
    fails_with(
        &["compare", &f, &b],
        &["acts.npz holds 2 arrays", "seed0, seed1", "::NAME"],
    );
    fails_with(
        &["compare", &format!("{f}::seed7"), &b],
        &["has no array 'seed7'", "seed0, seed1"],
    );
    fails_with(&["compare", &format!("{a}::h2"), &b], &["h2.npy", "'::h2'"]);
}
