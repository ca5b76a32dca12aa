//! Storage throughput: ingest of a `.npy` file, then streaming reads of the dataset (with and
//! without checksum verification) against fetching the same shard bytes raw, the limit.
//!
//! ```sh
//! cargo run --release -p svcca-storage --example storage_bench -- URL [ROWS] [COLS] [SHARD_ROWS] [IN_FLIGHT]
//! ```
//!
//! URL is a dataset URL (a path, `file://`, `s3://`...; S3 is configured from `AWS_*`). Data is
//! random f32 `[ROWS, COLS]` (default 200000 × 512 = 410 MB), written once to a temporary
//! `.npy`. Prints one Markdown table row per measurement. `benchmarks/storage/run.sh` runs it
//! against a local directory and a SeaweedFS server.

use std::time::Instant;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use svcca_storage::ingest::IngestConfig;
use svcca_storage::{Dataset, ReadOptions, ingest};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .expect("usage: storage_bench URL [ROWS] [COLS] [SHARD_ROWS] [IN_FLIGHT]");
    let arg = |i: usize, d: usize| {
        args.get(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(d)
    };
    let (rows, cols, shard_rows, in_flight) =
        (arg(2, 200_000), arg(3, 512), arg(4, 16_384), arg(5, 4));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(url, rows, cols, shard_rows, in_flight));
}

fn gbps(bytes: u64, secs: f64) -> String {
    format!("{:.2}", bytes as f64 / secs / 1e9)
}

async fn run(url: String, rows: usize, cols: usize, shard_rows: usize, in_flight: usize) {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("bench/seed0/step0");
    std::fs::create_dir_all(&dir).unwrap();
    // xorshift: fast, deterministic, incompressible enough.
    let mut s = 0x9E3779B97F4A7C15u64;
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    svcca_storage::npy::write_npy(dir.join("x.npy"), &[rows, cols], &data).unwrap();
    drop(data);
    let bytes = (rows * cols * 4) as u64;
    println!("| store | operation | GB | seconds | GB/s |");
    println!("|---|---|---|---|---|");
    let row = |op: &str, secs: f64| {
        println!(
            "| {} | {op} | {:.3} | {secs:.2} | {} |",
            store_kind(&url),
            bytes as f64 / 1e9,
            gbps(bytes, secs)
        );
    };

    let t = Instant::now();
    let report = ingest(
        IngestConfig::new(src.path(), &url)
            .with_pattern("{run}/seed{seed}/step{step}/{layer}.npy")
            .with_shard_rows(shard_rows)
            .with_force(true),
    )
    .await
    .expect("ingest");
    row(
        &format!(
            "ingest (.npy → {} shards)",
            report.shards_written + report.shards_reused
        ),
        t.elapsed().as_secs_f64(),
    );

    for verify in [true, false] {
        let ds = Dataset::open(
            &url,
            ReadOptions::default()
                .with_shards_in_flight(in_flight)
                .with_verify_checksums(verify),
        )
        .await
        .unwrap();
        let rep = ds.representations()[0].clone();
        let t = Instant::now();
        let mut stream = ds.shard_blocks(&rep, 0..rep.shards.len());
        let mut n = 0usize;
        let mut sum = 0f64;
        while let Some(b) = stream.next().await {
            let b = b.unwrap();
            n += b.rows;
            // Touch one value per row so the read is not optimised away.
            sum += b
                .values()
                .iter()
                .step_by(b.row_len)
                .map(|&v| v as f64)
                .sum::<f64>();
        }
        assert_eq!(n, rows);
        std::hint::black_box(sum);
        row(
            &format!(
                "read, decode{} (svcca, {in_flight} in flight)",
                if verify { " + sha256" } else { "" }
            ),
            t.elapsed().as_secs_f64(),
        );
    }

    // The limit: the same objects fetched with the same concurrency, no checks, no decode.
    let ds = Dataset::open(&url, ReadOptions::default()).await.unwrap();
    let rep = ds.representations()[0].clone();
    let loc = ds.location().clone();
    let t = Instant::now();
    let total: usize = futures::stream::iter(rep.shards.iter().map(|s| loc.child(&s.path)))
        .map(|p| {
            let store = loc.store.clone();
            async move { store.get(&p).await.unwrap().bytes().await.unwrap().len() }
        })
        .buffered(in_flight)
        .fold(0, |a, n| async move { a + n })
        .await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "| {} | raw get of the shard bytes ({:.3} GB, the limit) | {:.3} | {secs:.2} | {} |",
        store_kind(&url),
        total as f64 / 1e9,
        bytes as f64 / 1e9,
        gbps(bytes, secs)
    );
}

fn store_kind(url: &str) -> &'static str {
    if url.starts_with("s3://") {
        "S3 (SeaweedFS, loopback)"
    } else if url.starts_with("memory://") {
        "in-memory"
    } else {
        "local filesystem"
    }
}
