//! What a damaged dataset or an unresponsive store looks like to a reader: a wrong shard size,
//! a manifest that is not a manifest, shapes too large to hold, shards damaged in place and then
//! re-ingested, and an S3 endpoint that accepts connections but never answers.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use svcca_storage::ingest::IngestConfig;
use svcca_storage::manifest::MANIFEST_NAME;
use svcca_storage::{Dataset, Env, Manifest, ReadOptions, StorageError, ingest};

const PATTERN: &str = "{run}/seed{seed}/step{step}/{layer}.npy";
const H4: &str = "run=mlp,seed=0,step=0,layer=h4";

fn opts() -> ReadOptions {
    ReadOptions::default().with_env(Env::default())
}

async fn open(url: &str) -> Result<Dataset, StorageError> {
    Dataset::open(url, opts()).await
}

/// A local dataset of digits' h4 (597 × 64) in shards of `shard_rows`.
async fn h4_dataset(dir: &Path, shard_rows: usize) -> (tempfile::TempDir, String) {
    let src = tempfile::tempdir().unwrap();
    common::copy_digits(src.path(), &["mlp/seed0/step0/h4.npy"]);
    let url = dir.display().to_string();
    ingest(config(src.path(), &url).with_shard_rows(shard_rows))
        .await
        .unwrap();
    (src, url)
}

fn config(src: &Path, url: &str) -> IngestConfig {
    IngestConfig::new(src, url)
        .with_pattern(PATTERN)
        .with_env(Env::default())
        // The digits conv activations are [images, h, w, channels].
        .with_layout(svcca_storage::LayoutRule::all(svcca_storage::Layout::Nhwc))
}

fn h4_values() -> Vec<f32> {
    let f =
        svcca_storage::npy::NpyFile::open(common::fixtures().join("digits/mlp/seed0/step0/h4.npy"))
            .unwrap();
    let mut blocks = f.blocks_f32(1000);
    blocks.next_block().unwrap().unwrap().data.to_vec()
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join(MANIFEST_NAME);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

async fn first_error(ds: &Dataset) -> Option<StorageError> {
    let rep = ds.representations()[0].clone();
    ds.read_all(&rep).await.err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_shard_size_is_refused_on_the_first_read_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (_src, url) = h4_dataset(dir.path(), 300).await;
    let ds = open(&url).await.unwrap();
    let shard1 = ds.representations()[0].shards[1].clone();
    // The manifest is wrong, the shard intact: its checksum still matches, its size does not.
    edit_manifest(dir.path(), |v| {
        v["representations"][0]["shards"][1]["bytes"] = (shard1.bytes + 8).into();
    });
    let fresh = open(&url).await.unwrap();
    let e = first_error(&fresh).await.expect("the size is checked");
    match &e {
        StorageError::ShardSize {
            representation,
            shard,
            expected,
            actual,
            ..
        } => {
            assert_eq!(representation, H4);
            assert_eq!(*shard, 1);
            assert_eq!(*expected, shard1.bytes + 8);
            assert_eq!(*actual, shard1.bytes);
        }
        other => panic!("expected ShardSize, got {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&shard1.path), "{msg}");
    assert!(
        msg.contains("re-ingest") && msg.contains("manifest"),
        "{msg}"
    );
    assert!(!e.is_retryable());

    // A shard truncated after a dataset verified it: the same error, not a checksum mismatch
    // claiming to have hashed it.
    edit_manifest(dir.path(), |v| {
        v["representations"][0]["shards"][1]["bytes"] = shard1.bytes.into();
    });
    let seen = open(&url).await.unwrap();
    assert!(first_error(&seen).await.is_none());
    let path = dir.path().join(&shard1.path);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() - 100]).unwrap();
    let e = first_error(&seen).await.unwrap();
    assert!(
        matches!(e, StorageError::ShardSize { shard: 1, actual, .. } if actual == shard1.bytes - 100),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_is_not_a_manifest_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let (_src, url) = h4_dataset(dir.path(), 300).await;
    let manifest = dir.path().join(MANIFEST_NAME);
    let good = std::fs::read(&manifest).unwrap();
    let err = |e: StorageError| e.to_string();

    // A directory in its place.
    std::fs::remove_file(&manifest).unwrap();
    std::fs::create_dir(&manifest).unwrap();
    let e = open(&url).await.unwrap_err();
    assert!(matches!(e, StorageError::ManifestUnreadable { .. }), "{e}");
    let msg = err(e);
    assert!(
        msg.contains("directory") && msg.contains(&format!("{url}/{MANIFEST_NAME}")),
        "{msg}"
    );
    // Ingest must not take it for a new dataset either.
    let src = tempfile::tempdir().unwrap();
    common::copy_digits(src.path(), &["mlp/seed0/step0/h4.npy"]);
    let e = ingest(config(src.path(), &url)).await.unwrap_err();
    assert!(err(e).contains("directory"));
    std::fs::remove_dir(&manifest).unwrap();

    // The dataset URL naming a file.
    std::fs::write(&manifest, &good).unwrap();
    let e = open(manifest.to_str().unwrap()).await.unwrap_err();
    assert!(err(e).contains("is a file, not a dataset directory"));

    // Empty, not JSON, another format, a newer version with fields this one does not know.
    let cases: [(&[u8], &str); 6] = [
        (b"", "empty"),
        (b"  \n", "empty"),
        (
            b"{\"format\": \"svcca-dataset\", \"version\": 1",
            "not valid JSON",
        ),
        (b"[1, 2]", "not a JSON object"),
        (b"{\"format\": \"zarr\"}", "format is 'zarr'"),
        (
            b"{\"format\": \"svcca-dataset\", \"version\": 2, \"chunks\": {}}",
            "version 2 is not supported",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&manifest, bytes).unwrap();
        let e = open(&url).await.unwrap_err();
        assert!(matches!(e, StorageError::ManifestInvalid { .. }), "{e}");
        let msg = err(e);
        assert!(
            msg.contains(want) && msg.contains(MANIFEST_NAME),
            "{want}: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_prefix_holding_objects_is_not_a_missing_dataset() {
    let url = "memory://robust-prefix/ds";
    let loc = svcca_storage::store::resolve_with_env(url, &Env::default()).unwrap();
    object_store::ObjectStoreExt::put(
        &*loc.store,
        &loc.child("manifest.json/part-0"),
        object_store::PutPayload::from(vec![1u8]),
    )
    .await
    .unwrap();
    let e = open(url).await.unwrap_err();
    assert!(matches!(e, StorageError::ManifestUnreadable { .. }), "{e}");
    assert!(e.to_string().contains("prefix"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_claimed_shapes_are_listed_but_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (_src, url) = h4_dataset(dir.path(), 300).await;
    // [597, 10^12]: 2.4 PB of values, in shards of a few KiB.
    edit_manifest(dir.path(), |v| {
        v["representations"][0]["shape"] = serde_json::json!([597, 1_000_000_000_000u64]);
    });
    let ds = open(&url).await.expect("a large shape is a valid manifest");
    let rep = ds.representations()[0].clone();
    assert_eq!(rep.checked_value_bytes(), Some(597 * 4_000_000_000_000));
    let e = rep.check_size().unwrap_err();
    assert!(
        e.to_string().contains("too small for 300 datapoints"),
        "{e}"
    );
    let e = ds.read_all(&rep).await.unwrap_err();
    assert!(
        matches!(e, StorageError::RepresentationTooLarge { .. }),
        "{e}"
    );
    assert!(e.to_string().contains(H4), "{e}");
    let e = first_block_error(&ds, &rep).await;
    assert!(
        matches!(e, StorageError::RepresentationTooLarge { .. }),
        "{e}"
    );

    // A product that overflows: still listed, never computed unchecked.
    edit_manifest(dir.path(), |v| {
        v["representations"][0]["shape"] =
            serde_json::json!([597, 1u64 << 40, 1u64 << 40, 1u64 << 40]);
        v["representations"][0]["layout"] = "nhwc".into();
    });
    let ds = open(&url).await.expect("listed");
    let rep = ds.representations()[0].clone();
    assert_eq!(rep.checked_row_len(), None);
    assert_eq!(rep.row_len(), usize::MAX);
    let e = ds.read_all(&rep).await.unwrap_err();
    assert!(e.to_string().contains("overflows"), "{e}");
}

async fn first_block_error(ds: &Dataset, rep: &svcca_storage::Representation) -> StorageError {
    use futures::StreamExt;
    match ds.row_blocks(rep, 0..rep.rows()).next().await.unwrap() {
        Err(e) => e,
        Ok(_) => panic!("expected an error before any block"),
    }
}

#[test]
fn shard_row_counts_that_overflow_are_invalid_not_a_panic() {
    let sha = "0".repeat(64);
    let json = serde_json::json!({
        "format": "svcca-dataset", "version": 1,
        "probe_set": {"datapoints": 10},
        "representations": [{
            "key": {"run": "r", "layer": "l"}, "shape": [10, 4], "dtype": "float32",
            "shards": [
                {"path": "a", "row_start": 0, "rows": 5, "bytes": u64::MAX, "sha256": sha},
                {"path": "b", "row_start": 5, "rows": usize::MAX, "bytes": u64::MAX, "sha256": sha}
            ]
        }]
    });
    let e = Manifest::from_json(&serde_json::to_vec(&json).unwrap(), "m.json").unwrap_err();
    assert!(matches!(e, StorageError::ManifestInvalid { .. }), "{e}");
    assert!(e.to_string().contains("shard 1"), "{e}");
}

/// Flips one bit in the middle of a shard file, keeping its size.
fn flip_a_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// What a damaged shard's refusal reports as the expected checksum.
async fn refused_checksum(url: &str, options: ReadOptions) -> String {
    let ds = Dataset::open(url, options).await.unwrap();
    match first_error(&ds).await {
        Some(StorageError::ShardChecksum {
            shard: 1, expected, ..
        }) => expected,
        other => panic!("expected shard 1 to be refused for its checksum, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_check_the_crc_written_at_ingest_and_old_manifests_the_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let (_src, url) = h4_dataset(dir.path(), 300).await;
    let ds = open(&url).await.unwrap();
    let shards = ds.representations()[0].shards.clone();
    assert!(shards.iter().all(|s| s.crc32.is_some()), "{shards:?}");
    flip_a_bit(&dir.path().join(&shards[1].path));

    // A plain read checks the CRC-32; `svcca verify`'s full check refuses on the SHA-256 too
    // (the CRC-32 is checked first, so it names that).
    let crc = format!("crc32:{:08x}", shards[1].crc32.unwrap());
    assert_eq!(refused_checksum(&url, opts()).await, crc);
    assert_eq!(
        refused_checksum(&url, opts().with_full_checksums(true)).await,
        crc
    );

    // A manifest whose CRC-32 was made to match the damaged bytes: only the full check sees it.
    let damaged = std::fs::read(dir.path().join(&shards[1].path)).unwrap();
    edit_manifest(dir.path(), |m| {
        m["representations"][0]["shards"][1]["crc32"] =
            serde_json::json!(crc32fast::hash(&damaged));
    });
    assert!(first_error(&open(&url).await.unwrap()).await.is_none());
    assert_eq!(
        refused_checksum(&url, opts().with_full_checksums(true)).await,
        shards[1].sha256
    );

    // Written before the CRC-32 existed: the SHA-256 is checked on every read.
    edit_manifest(dir.path(), |m| {
        for s in m["representations"][0]["shards"].as_array_mut().unwrap() {
            s.as_object_mut().unwrap().remove("crc32");
        }
    });
    assert_eq!(refused_checksum(&url, opts()).await, shards[1].sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reingest_rewrites_a_shard_damaged_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (src, url) = h4_dataset(dir.path(), 300).await;
    let shard1 = open(&url).await.unwrap().representations()[0].shards[1].clone();
    flip_a_bit(&dir.path().join(&shard1.path));
    let e = first_error(&open(&url).await.unwrap()).await.unwrap();
    assert!(
        matches!(e, StorageError::ShardChecksum { shard: 1, .. }),
        "{e}"
    );

    let report = ingest(config(src.path(), &url).with_shard_rows(300))
        .await
        .unwrap();
    assert!(report.unchanged.is_empty(), "{report:?}");
    assert_eq!(report.repaired, vec![H4.to_string()]);
    assert_eq!(report.shards_repaired, 1);
    assert_eq!((report.shards_written, report.shards_reused), (1, 1));
    let ds = open(&url).await.unwrap();
    assert_eq!(
        ds.read_all(&ds.representations()[0]).await.unwrap(),
        h4_values()
    );

    // Nothing damaged now: a third ingest changes nothing.
    let report = ingest(config(src.path(), &url).with_shard_rows(300))
        .await
        .unwrap();
    assert_eq!(report.unchanged, vec![H4.to_string()]);
    assert!(report.repaired.is_empty() && report.shards_written == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reingest_with_other_shards_replaces_damaged_ones_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let (src, url) = h4_dataset(dir.path(), 300).await;
    let old = open(&url).await.unwrap().representations()[0]
        .shards
        .clone();
    flip_a_bit(&dir.path().join(&old[0].path));

    let report = ingest(config(src.path(), &url).with_shard_rows(200))
        .await
        .unwrap();
    assert_eq!(report.repaired, vec![H4.to_string()], "{report:?}");
    let ds = open(&url).await.unwrap();
    let rep = &ds.representations()[0];
    assert_eq!(
        rep.shards.len(),
        3,
        "the manifest lists the shards just written"
    );
    assert_eq!(ds.read_all(rep).await.unwrap(), h4_values());
    assert!(
        !dir.path().join(&old[0].path).exists(),
        "the damaged shard is no longer listed and is deleted"
    );
}

/// An "S3 endpoint" that accepts connections and never sends a byte.
fn silent_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    format!("http://{addr}")
}

fn s3_env(endpoint: &str) -> Env {
    Env::default()
        .with("AWS_ACCESS_KEY_ID", "k")
        .with("AWS_SECRET_ACCESS_KEY", "s")
        .with("AWS_REGION", "us-east-1")
        .with("AWS_ENDPOINT", endpoint)
        .with("AWS_ALLOW_HTTP", "true")
        .with("SVCCA_STORE_TIMEOUT", "1")
        .with("SVCCA_STORE_CONNECT_TIMEOUT", "1")
}

fn assert_names_the_endpoint(e: &StorageError, endpoint: &str) {
    assert!(matches!(e, StorageError::StoreTimeout { .. }), "{e}");
    assert!(e.is_retryable(), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(endpoint), "{msg}");
    assert!(msg.contains("SVCCA_STORE_TIMEOUT"), "{msg}");
    assert!(msg.contains("each request may take 1 s"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_endpoint_that_never_answers_fails_within_the_timeouts() {
    let endpoint = silent_endpoint();
    let env = s3_env(&endpoint);
    let started = Instant::now();
    let e = Dataset::open(
        "s3://bucket/ds",
        ReadOptions::default().with_env(env.clone()),
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert_names_the_endpoint(&e, &endpoint);
    // 1 s per request, retries stop after 2 s: about 3 s, never minutes.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(took >= Duration::from_secs(1), "took {took:?}");

    // Ingest reads the manifest first: the same bound.
    let src = tempfile::tempdir().unwrap();
    common::copy_digits(src.path(), &["mlp/seed0/step0/h4.npy"]);
    let started = Instant::now();
    let e = ingest(
        IngestConfig::new(src.path(), "s3://bucket/ds")
            .with_pattern(PATTERN)
            .with_env(env),
    )
    .await
    .unwrap_err();
    assert_names_the_endpoint(&e, &endpoint);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn timeout_settings_are_validated() {
    for bad in ["abc", "0", "-1", "inf"] {
        let e = svcca_storage::store::resolve_with_env(
            "s3://bucket/ds",
            &s3_env("http://127.0.0.1:9").with("SVCCA_STORE_TIMEOUT", bad),
        )
        .unwrap_err();
        assert!(
            matches!(e, StorageError::InvalidSetting { .. }),
            "{bad}: {e}"
        );
        assert!(e.to_string().contains("SVCCA_STORE_TIMEOUT"), "{e}");
    }
    let loc = svcca_storage::store::resolve_with_env(
        "s3://bucket/ds",
        &s3_env("http://127.0.0.1:9").with("SVCCA_STORE_RETRY_TIMEOUT", "7.5"),
    )
    .unwrap();
    let remote = loc.remote.unwrap();
    assert_eq!(remote.endpoint, "http://127.0.0.1:9");
    assert_eq!(remote.request_timeout, Duration::from_secs(1));
    assert_eq!(remote.retry_timeout, Duration::from_millis(7500));
    let defaults = svcca_storage::store::Remote::from_env("e".into(), &Env::default()).unwrap();
    assert_eq!(defaults.connect_timeout, Duration::from_secs(10));
    assert_eq!(defaults.request_timeout, Duration::from_secs(60));
    assert_eq!(defaults.retry_timeout, Duration::from_secs(120));
}

/// A `.npy` header claiming `shape` (float32), without the data.
fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_npz_member_claiming_more_than_its_bytes_is_refused_before_reading() {
    use std::io::Write;
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("m/a.npz");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A header for 1 GiB of values, followed by 16 bytes.
    let shape = [1usize, 1 << 28];
    let mut member = npy_header(&shape);
    let claimed = (member.len() + (4 << 28)) as u32;
    member.extend_from_slice(&[0u8; 16]);
    let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    w.start_file(
        "h.npy",
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
    )
    .unwrap();
    w.write_all(&member).unwrap();
    w.finish().unwrap();
    // Forge the uncompressed size in the local and the central header.
    let mut bytes = std::fs::read(&path).unwrap();
    let central = bytes
        .windows(4)
        .position(|w| w == b"PK\x01\x02")
        .expect("a central directory");
    for at in [22, central + 24] {
        bytes[at..at + 4].copy_from_slice(&claimed.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();

    let dest = tempfile::tempdir().unwrap();
    let e = ingest(
        IngestConfig::new(src.path(), dest.path().to_str().unwrap())
            .with_pattern("{run}/{*}.npz")
            .with_env(Env::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, StorageError::SourceCorrupt { format: "npz", .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("a.npz") && msg.contains("'h.npy' claims"),
        "{msg}"
    );
}
