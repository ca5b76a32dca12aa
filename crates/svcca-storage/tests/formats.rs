//! Ingest inputs: `.npz` (stored and deflated), `.safetensors` (f32/f64/f16/bf16), templates with
//! tags, and the errors bad inputs get.

mod common;

use std::io::Write;
use std::path::Path;

use svcca_storage::Layout;
use svcca_storage::ingest::{IngestConfig, LayerOrder, LayoutRule};
use svcca_storage::npy::encode_npy;
use svcca_storage::{Dataset, Env, ReadOptions, StorageError, ingest};

fn write_npz(path: &Path, members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        w.start_file(
            format!("{name}.npy"),
            zip::write::SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
}

fn npy_bytes_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_npy(&mut out, shape, data);
    out
}

fn npy_bytes_f64(shape: &[usize], data: &[f64]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_npy(&mut out, shape, data);
    out
}

/// A safetensors file by hand: (name, dtype, shape, raw little-endian bytes).
fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"framework": "test"}),
    );
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    // Multiples of 1/4 in a small range: exact in f16 and bf16, so conversions can be checked exactly.
    (0..n)
        .map(|i| ((i as u32 * 7 + seed * 13) % 37) as f32 * 0.25 - 4.0)
        .collect()
}

async fn open(url: &str) -> Dataset {
    Dataset::open(url, ReadOptions::default().with_env(Env::default()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npz_members_stored_and_deflated_become_layers() {
    let src = tempfile::tempdir().unwrap();
    let (a, b) = (values(30 * 4, 1), values(30 * 2 * 2 * 3, 2));
    let c: Vec<f64> = values(30 * 5, 3).iter().map(|&v| v as f64 + 1e-9).collect();
    write_npz(
        &src.path().join("net/seed3/step10/acts.npz"),
        &[
            ("fc1", npy_bytes_f32(&[30, 4], &a)),
            ("conv", npy_bytes_f32(&[30, 2, 2, 3], &b)),
        ],
        zip::CompressionMethod::Stored,
    );
    write_npz(
        &src.path().join("net/seed3/step9/acts.npz"),
        &[
            ("fc1", npy_bytes_f32(&[30, 4], &a)),
            ("fc2", npy_bytes_f64(&[30, 5], &c)),
        ],
        zip::CompressionMethod::Deflated,
    );
    let out = tempfile::tempdir().unwrap();
    let url = out.path().display().to_string();
    let report = ingest(
        IngestConfig::new(src.path(), &url)
            .with_pattern("{model}/seed{seed}/step{step}/acts.npz")
            .with_shard_rows(7)
            .with_env(Env::default())
            .with_layout(LayoutRule::parse("layer=con?:nhwc").unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(report.added.len(), 4);
    let ds = open(&url).await;
    let ids: Vec<String> = ds.representations().iter().map(|r| r.id()).collect();
    assert_eq!(
        ids,
        vec![
            "run=net,seed=3,step=9,layer=fc1",
            "run=net,seed=3,step=9,layer=fc2",
            "run=net,seed=3,step=10,layer=conv",
            "run=net,seed=3,step=10,layer=fc1",
        ]
    );
    let reps = ds.representations();
    assert_eq!(ds.read_all(&reps[0]).await.unwrap(), a);
    let fc2 = ds.read_all(&reps[1]).await.unwrap();
    assert_eq!(fc2, c.iter().map(|&v| v as f32).collect::<Vec<_>>());
    assert_eq!(reps[1].source_dtype.as_deref(), Some("float64"));
    assert_eq!(reps[2].shape, vec![30, 2, 2, 3]);
    assert_eq!(ds.read_all(&reps[2]).await.unwrap(), b);
    assert_eq!(reps[2].shards.len(), 5);
    assert_eq!(
        reps[3].source.as_deref(),
        Some("net/seed3/step10/acts.npz:fc1")
    );
    // values_sha256 is the SHA-256 of the little-endian f32 values, whatever the sharding.
    let le: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&le));
    assert_eq!(reps[0].values_sha256.as_deref(), Some(want.as_str()));
    // Same values from two files: same values checksum, whatever the container.
    assert_eq!(reps[0].content_checksum(), reps[3].content_checksum());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safetensors_dtypes_convert_to_f32() {
    let src = tempfile::tempdir().unwrap();
    let v = values(12 * 3, 5);
    let f32b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let f64b: Vec<u8> = v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect();
    let f16b: Vec<u8> = v
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let bf16b: Vec<u8> = v
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    write_safetensors(
        &src.path().join("lm_lr=0.5/ckpt-0042.safetensors"),
        &[
            ("layers.0.f32", "F32", vec![12, 3], f32b),
            ("layers.1.f64", "F64", vec![12, 3], f64b),
            ("layers.2.f16", "F16", vec![12, 3], f16b),
            ("layers.3.bf16", "BF16", vec![12, 3], bf16b),
        ],
    );
    let out = tempfile::tempdir().unwrap();
    let url = format!("file://{}", out.path().display());
    ingest(
        IngestConfig::new(src.path(), &url)
            .with_pattern("{run}_lr={lr}/ckpt-{step}.safetensors")
            .with_env(Env::default()),
    )
    .await
    .unwrap();
    let ds = open(&url).await;
    assert_eq!(ds.representations().len(), 4);
    for rep in ds.representations() {
        assert_eq!(rep.key.run, "lm");
        assert_eq!(rep.key.step, Some(42));
        assert_eq!(rep.key.tags["lr"], "0.5");
        assert_eq!(ds.read_all(rep).await.unwrap(), v, "{}", rep.id());
    }
    let dtypes: Vec<_> = ds
        .representations()
        .iter()
        .map(|r| r.source_dtype.clone().unwrap())
        .collect();
    assert_eq!(dtypes, vec!["float32", "float64", "float16", "bfloat16"]);
    assert!(
        ds.representations()[0]
            .id()
            .ends_with("layer=layers.0.f32,lr=0.5")
    );
}

async fn ingest_err(src: &Path, pattern: &str) -> StorageError {
    let out = tempfile::tempdir().unwrap();
    let url = out.path().display().to_string();
    let e = ingest(
        IngestConfig::new(src, &url)
            .with_pattern(pattern)
            .with_env(Env::default()),
    )
    .await
    .unwrap_err();
    // Nothing readable was left behind.
    assert!(matches!(
        Dataset::open(&url, ReadOptions::default().with_env(Env::default())).await,
        Err(StorageError::ManifestNotFound { .. })
    ));
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_named() {
    // Integer tensor.
    let src = tempfile::tempdir().unwrap();
    write_safetensors(
        &src.path().join("m/x.safetensors"),
        &[("ids", "I64", vec![4, 2], vec![0; 64])],
    );
    let e = ingest_err(src.path(), "{run}/{*}.safetensors").await;
    assert!(
        matches!(e, StorageError::UnsupportedTensorDtype { ref tensor, .. } if tensor == "ids"),
        "{e}"
    );
    assert!(e.to_string().contains("x.safetensors"));

    // Truncated safetensors.
    let src = tempfile::tempdir().unwrap();
    let p = src.path().join("m/t.safetensors");
    write_safetensors(&p, &[("a", "F32", vec![4, 2], vec![0; 32])]);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
    let e = ingest_err(src.path(), "{run}/{*}.safetensors").await;
    assert!(
        matches!(
            e,
            StorageError::SourceCorrupt {
                format: "safetensors",
                ..
            }
        ),
        "{e}"
    );

    // Corrupt zip.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("m")).unwrap();
    std::fs::write(
        src.path().join("m/bad.npz"),
        b"PK\x03\x04 this is not a zip",
    )
    .unwrap();
    let e = ingest_err(src.path(), "{run}/{*}.npz").await;
    assert!(
        matches!(e, StorageError::SourceCorrupt { format: "npz", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("bad.npz"));

    // Truncated npz member.
    let src = tempfile::tempdir().unwrap();
    let mut member = npy_bytes_f32(&[10, 3], &values(30, 1));
    member.truncate(member.len() - 8);
    write_npz(
        &src.path().join("m/a.npz"),
        &[("h", member)],
        zip::CompressionMethod::Deflated,
    );
    let e = ingest_err(src.path(), "{run}/{*}.npz").await;
    assert!(
        e.to_string().contains("a.npz:h") && e.to_string().contains("truncated"),
        "{e}"
    );

    // Rank 1.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("m")).unwrap();
    svcca_storage::npy::write_npy(src.path().join("m/v.npy"), &[5], &[1.0f32; 5]).unwrap();
    let e = ingest_err(src.path(), "{run}/{layer}.npy").await;
    assert!(matches!(e, StorageError::BadShape { .. }), "{e}");

    // Two files mapping to one key.
    let src = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        std::fs::create_dir_all(src.path().join(format!("m/{d}"))).unwrap();
        svcca_storage::npy::write_npy(
            src.path().join(format!("m/{d}/h.npy")),
            &[2, 2],
            &[1.0f32; 4],
        )
        .unwrap();
    }
    let e = ingest_err(src.path(), "{run}/{*}/{layer}.npy").await;
    assert!(
        matches!(e, StorageError::DuplicateRepresentation { .. }),
        "{e}"
    );

    // Nothing matches: the error shows a file that did not match.
    let e = ingest_err(src.path(), "{run}/seed{seed}/{layer}.npy").await;
    assert!(matches!(e, StorageError::NoInputs { .. }), "{e}");
    assert!(e.to_string().contains("m/a/h.npy"), "{e}");

    // Bad template.
    let e = ingest_err(src.path(), "{run}{layer}.npy").await;
    assert!(matches!(e, StorageError::InvalidPattern { .. }), "{e}");

    // A float16 NaN is found after conversion, with its position.
    let src = tempfile::tempdir().unwrap();
    let mut v: Vec<half::f16> = values(6 * 2, 1)
        .iter()
        .map(|&x| half::f16::from_f32(x))
        .collect();
    v[9] = half::f16::NAN;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_safetensors(
        &src.path().join("m/n.safetensors"),
        &[("h", "F16", vec![6, 2], bytes)],
    );
    let e = ingest_err(src.path(), "{run}/{*}.safetensors").await;
    assert!(
        matches!(e, StorageError::NonFinite { row: 4, col: 1, .. }),
        "{e}"
    );
}

/// PyTorch-order activations ingested with `--layout nchw` are stored exactly as the same values
/// transposed to channels-last and ingested as nhwc; without a layout they are refused; a 2-D
/// array in the same files stays dense; `--layer-order` sets depths, not names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nchw_sources_are_stored_as_their_nhwc_transpose_with_declared_depths() {
    let (n, c, h, w) = (11, 3, 2, 5);
    let nchw = values(n * c * h * w, 5);
    let mut nhwc = vec![0f32; nchw.len()];
    for i in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    nhwc[((i * h + y) * w + x) * c + ch] = nchw[((i * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    let fc = values(n * 4, 6);
    let write = |dir: &Path, conv: &[f32], shape: &[usize]| {
        let d = dir.join("net/seed0/step1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("zconv.npy"), npy_bytes_f32(shape, conv)).unwrap();
        std::fs::write(d.join("fc.npy"), npy_bytes_f32(&[n, 4], &fc)).unwrap();
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), &nchw, &[n, c, h, w]);
    write(b.path(), &nhwc, &[n, h, w, c]);
    let out = tempfile::tempdir().unwrap();
    let config = |src: &Path, url: &str| {
        IngestConfig::new(src, url)
            .with_pattern("{run}/seed{seed}/step{step}/{layer}.npy")
            .with_shard_rows(4)
            .with_env(Env::default())
    };

    let url_a = out.path().join("a").display().to_string();
    let e = ingest(config(a.path(), &url_a)).await.unwrap_err();
    assert!(
        matches!(&e, StorageError::LayoutRequired { shape, .. } if *shape == vec![n, c, h, w]),
        "{e}"
    );
    assert!(e.to_string().contains("--layout nhwc|nchw|dense"), "{e}");

    let e = ingest(
        config(a.path(), &url_a)
            .with_layout(LayoutRule::all(Layout::Nchw))
            .with_layer_order(LayerOrder::parse_list("zconv").unwrap()),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("layer 'fc'"), "{e}");

    ingest(
        config(a.path(), &url_a)
            .with_layout(LayoutRule::all(Layout::Nchw))
            .with_layer_order(LayerOrder::parse_list("zconv, fc").unwrap()),
    )
    .await
    .unwrap();
    let url_b = out.path().join("b").display().to_string();
    ingest(config(b.path(), &url_b).with_layout(LayoutRule::parse("nhwc").unwrap()))
        .await
        .unwrap();
    let (da, db) = (open(&url_a).await, open(&url_b).await);
    let conv = |ds: &Dataset| {
        ds.representations()
            .iter()
            .find(|r| r.key.layer == "zconv")
            .unwrap()
            .clone()
    };
    let (ra, rb) = (conv(&da), conv(&db));
    assert_eq!(ra.shape, vec![n, h, w, c]);
    assert_eq!(
        (ra.layout, ra.source_layout),
        (Layout::Nhwc, Some(Layout::Nchw))
    );
    assert_eq!((rb.layout, rb.source_layout), (Layout::Nhwc, None));
    assert_eq!(ra.values_sha256, rb.values_sha256);
    assert_eq!(da.read_all(&ra).await.unwrap(), nhwc);
    let depth = |ds: &Dataset, l: &str| ds.manifest().depth_of("net", l).unwrap();
    assert_eq!((depth(&da, "zconv"), depth(&da, "fc")), (0, 1));
    // Without an order, names: fc before zconv.
    assert_eq!((depth(&db, "fc"), depth(&db, "zconv")), (0, 1));
    let fc_layout = da
        .representations()
        .iter()
        .find(|r| r.key.layer == "fc")
        .unwrap()
        .layout;
    assert_eq!(fc_layout, Layout::Dense);

    // A new order for the same data changes the depths only.
    let report = ingest(
        config(b.path(), &url_b)
            .with_layout(LayoutRule::all(Layout::Nhwc))
            .with_layer_order(LayerOrder::parse_list("zconv,fc").unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(report.unchanged.len(), 2);
    assert_eq!(report.shards_written, 0);
    let db = open(&url_b).await;
    assert_eq!((depth(&db, "zconv"), depth(&db, "fc")), (0, 1));
}
