//! pyarrow interop: the README's Python snippet writes shards and a manifest; Rust reads them
//! back bit-exactly (special values included).
//!
//! Needs `python3` with `numpy` and `pyarrow` (`.ci/storage-services.sh` installs them). Without
//! them the test fails with instructions, unless `SVCCA_SKIP_PYTHON_TESTS=1` is set.

mod common;

use std::process::Command;

use svcca_storage::{Dataset, Env, ReadOptions, npy};

/// The ```python block of the README: the documented snippet is the code under test.
fn readme_snippet() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```python\n")
        .expect("README has a python block")
        + "```python\n".len();
    let end = start + readme[start..].find("```").expect("python block is closed");
    readme[start..end].to_string()
}

const DRIVER: &str = r#"
import json, os, sys
import numpy as np
root = sys.argv[1]
rng = np.random.default_rng(7)
dense = rng.standard_normal((50, 7)).astype(np.float32)
# Values that must survive bit-exactly: signed zero, subnormals, extremes.
dense[0, :4] = [-0.0, np.float32(1e-45), np.finfo(np.float32).max, np.finfo(np.float32).tiny]
conv = rng.standard_normal((50, 4, 3, 2)).astype(np.float64)   # f64 in, f32 stored
os.makedirs(f"{root}/data/py/dense", exist_ok=True)
os.makedirs(f"{root}/data/py/conv", exist_ok=True)
shards = [write_shard(root, "data/py/dense/a.arrow", dense[:20], 0),
          write_shard(root, "data/py/dense/b.arrow", dense[20:], 20)]
conv_shard = write_shard(root, "data/py/conv/0.arrow", conv, 0)
manifest = {
    "format": "svcca-dataset", "version": 1,
    "probe_set": {"datapoints": 50, "fingerprint": None},
    "representations": [
        {"key": {"run": "py", "seed": 1, "step": 10, "layer": "dense"}, "shape": [50, 7], "dtype": "float32", "shards": shards},
        {"key": {"run": "py", "seed": 1, "step": 10, "layer": "conv"}, "shape": [50, 4, 3, 2], "dtype": "float32", "shards": [conv_shard]},
    ],
}
with open(f"{root}/manifest.json", "w") as f:
    json.dump(manifest, f)
np.save(f"{root}/dense.npy", dense)
np.save(f"{root}/conv.npy", conv.astype(np.float32))
"#;

fn python_available() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import numpy, pyarrow; print(pyarrow.__version__)"])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_written_shards_read_bit_exactly() {
    if common::skip_requested("SVCCA_SKIP_PYTHON_TESTS") {
        eprintln!("SVCCA_SKIP_PYTHON_TESTS=1: skipping the pyarrow interop test as requested");
        return;
    }
    if let Err(e) = python_available() {
        panic!(
            "python3 with numpy and pyarrow is needed for this test: {e}\n\
             install them with `pip install pyarrow numpy` (see .ci/storage-services.sh), \
             or set SVCCA_SKIP_PYTHON_TESTS=1 to skip it explicitly"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let script = format!("{}\n{}", readme_snippet(), DRIVER);
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let url = format!("file://{}", dir.path().display());
    let ds = Dataset::open(&url, ReadOptions::default().with_env(Env::default()))
        .await
        .unwrap();
    let reps = ds.representations();
    // Natural order: conv before dense.
    assert_eq!(reps[0].id(), "run=py,seed=1,step=10,layer=conv");
    assert_eq!(reps[1].id(), "run=py,seed=1,step=10,layer=dense");
    for (rep, file) in [(&reps[0], "conv.npy"), (&reps[1], "dense.npy")] {
        let want = npy::NpyFile::open(dir.path().join(file))
            .unwrap()
            .read_all::<f32>()
            .unwrap();
        assert_eq!(rep.shape, want.shape);
        let got = ds.read_all(rep).await.unwrap();
        assert_eq!(got.len(), want.data.len());
        for (i, (a, b)) in got.iter().zip(&want.data).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{} value {i}: {a} vs {b}",
                rep.id()
            );
        }
    }
    // The special values really went through.
    let dense = ds.read_all(&reps[1]).await.unwrap();
    assert_eq!(dense[0].to_bits(), (-0.0f32).to_bits());
    assert_eq!(dense[1].to_bits(), 1);
    assert_eq!(dense[2], f32::MAX);
}
