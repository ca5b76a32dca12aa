//! A dataset as a reader (`svcca sweep`, a worker) meets it: Arrow IPC shards and
//! `manifest.json`, read through [`Dataset`] from an object store.

use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use svcca_storage::layout::encode_shard;
use svcca_storage::manifest::MANIFEST_NAME;
use svcca_storage::store::Location;
use svcca_storage::{
    Dataset, Env, Manifest, ProbeSet, ReadOptions, RepKey, Representation, Selector, ShardEntry,
};

use super::{Target, memory_location, outcome, repo_root, runtime};
use crate::mutate::Format;

fn sha256_hex(bytes: &[u8]) -> String {
    // The manifest fingerprint helper hashes with the same SHA-256; strip its prefix.
    ProbeSet::fingerprint_of(bytes)
        .trim_start_matches("sha256:")
        .to_string()
}

/// Input layout of the `shard` target: the representation's datapoint shape travels with the
/// shard bytes so that mutations reach past the schema check:
/// `[rank: u8][rank × dim: u32 LE][rows: u32 LE][Arrow IPC file]`.
fn shard_input(item_shape: &[usize], rows: usize, shard: &[u8]) -> Vec<u8> {
    let mut out = vec![item_shape.len() as u8];
    for &d in item_shape {
        out.extend_from_slice(&(d as u32).to_le_bytes());
    }
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(shard);
    out
}

fn split_shard_input(input: &[u8]) -> Option<(Vec<usize>, usize, &[u8])> {
    let rank = *input.first()? as usize % 5;
    let mut at = 1;
    let word = |at: &mut usize| -> Option<usize> {
        let b = input.get(*at..*at + 4)?;
        *at += 4;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    };
    let mut shape = Vec::with_capacity(rank);
    for _ in 0..rank {
        shape.push(word(&mut at)?);
    }
    let rows = word(&mut at)?;
    Some((shape, rows, &input[at..]))
}

fn one_rep(item_shape: &[usize], rows: usize, shard: &[u8], path: &str) -> Manifest {
    let mut manifest = Manifest::new(ProbeSet {
        datapoints: rows,
        fingerprint: None,
        description: None,
    });
    let mut shape = vec![rows];
    shape.extend_from_slice(item_shape);
    manifest.upsert(Representation {
        key: RepKey {
            run: "fuzz".into(),
            seed: Some(0),
            step: Some(0),
            layer: "l".into(),
            tags: Default::default(),
        },
        layout: svcca_storage::Layout::assumed_for(shape.len()),
        depth: 0,
        source_layout: None,
        shape,
        dtype: "float32".into(),
        source_dtype: None,
        source: None,
        shards: vec![ShardEntry {
            path: path.into(),
            row_start: 0,
            rows,
            bytes: shard.len() as u64,
            sha256: sha256_hex(shard),
            crc32: None,
        }],
        values_sha256: None,
    });
    manifest
}

async fn put(location: &Location, rel: &str, bytes: Vec<u8>) {
    location
        .store
        .put(&location.child(rel), PutPayload::from(bytes))
        .await
        .expect("an in-memory put");
}

/// One Arrow IPC shard, listed with its true size and checksum in a one-representation
/// manifest, decoded through [`Dataset::read_shard`].
pub struct ShardTarget {
    rt: tokio::runtime::Runtime,
}

impl ShardTarget {
    pub fn new() -> Self {
        ShardTarget { rt: runtime() }
    }
}

async fn read_one_shard(
    item_shape: Vec<usize>,
    rows: usize,
    shard: &[u8],
    check_finite: bool,
) -> Result<usize, svcca_storage::StorageError> {
    let location = memory_location("memory://svcca-fuzz-shard");
    let path = "fuzz/seed0/step0/l/part-00000.arrow";
    let manifest = one_rep(&item_shape, rows, shard, path);
    if manifest.validate().is_err() {
        // Not a dataset any writer produces or any reader accepts: nothing to decode.
        return Ok(0);
    }
    put(&location, path, shard.to_vec()).await;
    put(&location, MANIFEST_NAME, manifest.to_json()).await;
    let ds = Dataset::open_at(
        location,
        ReadOptions::default()
            .with_env(Env::default())
            .with_check_finite(check_finite),
    )
    .await?;
    let rep = ds.representations()[0].clone();
    let blocks = ds.read_shard(&rep, 0).await?;
    let mut values = 0;
    for b in &blocks {
        assert_eq!(b.values().len(), b.rows * b.row_len, "a row block's length");
        values += b.values().len();
    }
    Ok(values)
}

impl Target for ShardTarget {
    fn name(&self) -> &'static str {
        "shard"
    }
    fn format(&self) -> Format {
        Format::Binary
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        for (shape, rows) in [(vec![3usize], 4usize), (vec![2, 2, 3], 2), (vec![1], 1)] {
            let n: usize = rows * shape.iter().product::<usize>();
            let values: Vec<f32> = (0..n).map(|i| i as f32 - 2.5).collect();
            seeds.push(shard_input(&shape, rows, &encode_shard(&shape, &values)));
        }
        // Real shards of the example dataset: the smallest of each item shape.
        let dir = repo_root().join("examples/digits-dataset");
        if let Ok(bytes) = std::fs::read(dir.join(MANIFEST_NAME))
            && let Ok(m) = Manifest::from_json(&bytes, "manifest.json")
        {
            let mut shapes_seen = std::collections::HashSet::new();
            for rep in &m.representations {
                let Some(s) = rep.shards.first() else {
                    continue;
                };
                if s.bytes > 64 << 10 || !shapes_seen.insert(rep.item_shape().to_vec()) {
                    continue;
                }
                if let Ok(shard) = std::fs::read(dir.join(&s.path)) {
                    seeds.push(shard_input(rep.item_shape(), s.rows, &shard));
                }
            }
        }
        seeds
    }
    fn run(&mut self, input: &[u8]) -> String {
        let Some((shape, rows, shard)) = split_shard_input(input) else {
            return "short".into();
        };
        let check_finite = input.len().is_multiple_of(2);
        outcome(
            &self
                .rt
                .block_on(read_one_shard(shape, rows, shard, check_finite)),
        )
    }
}

const JSON_DICT: &[&str] = &[
    "\"format\"",
    "\"svcca-dataset\"",
    "\"version\"",
    "\"probe_set\"",
    "\"datapoints\"",
    "\"fingerprint\"",
    "\"representations\"",
    "\"key\"",
    "\"run\"",
    "\"seed\"",
    "\"step\"",
    "\"layer\"",
    "\"tags\"",
    "\"shape\"",
    "\"dtype\"",
    "\"float32\"",
    "\"shards\"",
    "\"path\"",
    "\"row_start\"",
    "\"rows\"",
    "\"bytes\"",
    "\"sha256\"",
    "\"values_sha256\"",
    "null",
    "[]",
    "{}",
    "\"../x\"",
    "\"/\"",
];

/// `manifest.json` of a dataset whose shards are the example dataset's (loaded into an
/// in-memory store once): parsed, then representations resolved and read as a sweep would.
pub struct ManifestTarget {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
}

impl ManifestTarget {
    pub fn new() -> Self {
        let rt = runtime();
        let location = memory_location("memory://svcca-fuzz-manifest");
        let dir = repo_root().join("examples/digits-dataset");
        rt.block_on(async {
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "arrow")
                        && let (Ok(rel), Ok(bytes)) = (p.strip_prefix(&dir), std::fs::read(&p))
                    {
                        put(&location, &rel.to_string_lossy(), bytes).await;
                    }
                }
            }
        });
        ManifestTarget {
            rt,
            store: location.store,
        }
    }
}

async fn read_manifest(
    store: Arc<dyn ObjectStore>,
    input: &[u8],
    verify: bool,
) -> Result<usize, svcca_storage::StorageError> {
    let location = Location {
        store,
        root: object_store::path::Path::from(""),
        url: "memory://svcca-fuzz-manifest".into(),
        local_dir: None,
        map_files: false,
        remote: None,
    };
    put(&location, MANIFEST_NAME, input.to_vec()).await;
    let ds = Dataset::open_at(
        location,
        ReadOptions::default()
            .with_env(Env::default())
            .with_verify_checksums(verify)
            .with_retries(0),
    )
    .await?;
    for rep in ds.representations() {
        let _ = (
            rep.id(),
            rep.key.shard_dir(),
            rep.content_checksum(),
            rep.bytes(),
        );
        let selector = Selector::parse(&format!("memory://x#{}", rep.id()))?;
        ds.resolve(&selector)?;
    }
    let mut values = 0;
    // Reading every representation would make one case slow; two reach every code path.
    for rep in ds.representations().iter().take(2) {
        let mut blocks = ds.row_blocks(rep, 0..rep.rows());
        while let Some(b) = blocks.next().await {
            values += b?.values().len();
        }
    }
    Ok(values)
}

impl Target for ManifestTarget {
    fn name(&self) -> &'static str {
        "manifest"
    }
    fn format(&self) -> Format {
        Format::Text(JSON_DICT)
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        let root = repo_root();
        for p in [
            "examples/digits-dataset/manifest.json",
            "fixtures/digits/manifest.json",
        ] {
            if let Ok(b) = std::fs::read(root.join(p)) {
                seeds.push(b);
            }
        }
        // A small one, so most mutations land on a field rather than deep in a long list.
        if let Some(full) = seeds.first()
            && let Ok(mut m) = Manifest::from_json(full, "manifest.json")
        {
            m.representations.truncate(2);
            seeds.push(m.to_json());
        }
        seeds
    }
    fn run(&mut self, input: &[u8]) -> String {
        let verify = input.len().is_multiple_of(2);
        outcome(
            &self
                .rt
                .block_on(read_manifest(self.store.clone(), input, verify)),
        )
    }
}
