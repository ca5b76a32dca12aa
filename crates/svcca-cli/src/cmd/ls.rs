//! `svcca ls URL`: what a dataset holds, grouped by run, seed, checkpoint and layer.

use futures::StreamExt;
use svcca_storage::{Dataset, ReadOptions, Representation};

use super::ingest::{runtime, storage_failure};
use crate::exit::{CmdResult, Failure};

/// List a dataset's representations with their shapes and sizes.
///
/// Reads only the manifest, unless --verify. Checkpoints are listed in numeric step order; each
/// representation by its canonical key (`run=mlp,seed=0,step=2250,layer=h1`, then its tags),
/// which sweeps use as its label and selectors (`URL#KEY`) accept.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The dataset: a path, file://, s3://, gs://, az:// URL.
    pub url: String,
    /// Print one JSON object (probe set and every representation) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also read every shard and check it against the manifest (size, SHA-256 and CRC-32, layout, row
    /// count, finite values); every damaged shard is named. Reads the whole dataset.
    #[arg(long)]
    pub verify: bool,
}

pub fn run(args: LsArgs) -> CmdResult {
    let runtime = runtime()?;
    let dataset = runtime
        // Reads check a shard's CRC-32 where the manifest has one; --verify vouches for the
        // SHA-256 that names the shard and keys the caches.
        .block_on(Dataset::open(
            &args.url,
            ReadOptions::default().with_full_checksums(args.verify),
        ))
        .map_err(storage_failure)?;
    list(&args, &dataset)?;
    if args.verify {
        runtime.block_on(verify(&dataset, args.json))?;
    }
    Ok(())
}

/// Reads every shard (a few at a time), reporting each damaged one on stderr. A store failure
/// stops at once (retryable); damaged shards fail after all were checked.
async fn verify(dataset: &Dataset, json: bool) -> CmdResult {
    let mut shards = 0usize;
    let mut damaged = 0usize;
    for rep in dataset.representations() {
        if let Err(e) = rep.check_size() {
            eprintln!("damaged: {e}");
            damaged += rep.shards.len();
            shards += rep.shards.len();
            continue;
        }
        let mut reads = futures::stream::iter(0..rep.shards.len())
            .map(|i| dataset.read_shard(rep, i))
            .buffered(dataset.options().shards_in_flight.max(1));
        while let Some(read) = reads.next().await {
            shards += 1;
            match read {
                Ok(_) => {}
                Err(e) if e.is_retryable() => return Err(storage_failure(e)),
                Err(e) => {
                    eprintln!("damaged: {e}");
                    damaged += 1;
                }
            }
        }
    }
    let reps = dataset.representations().len();
    if damaged > 0 {
        return Err(Failure::fatal(format!(
            "{damaged} of {shards} shards of {} do not match its manifest (listed above); \
             re-ingest the affected representations from their sources with `svcca ingest`",
            dataset.url()
        )));
    }
    let summary =
        format!("verified {shards} shards of {reps} representations: they match the manifest");
    // Keep stdout one JSON document under --json.
    if json {
        eprintln!("{summary}");
    } else {
        outln!("{summary}");
    }
    Ok(())
}

fn list(args: &LsArgs, dataset: &Dataset) -> CmdResult {
    let manifest = dataset.manifest();
    if args.json {
        let reps: Vec<serde_json::Value> = manifest.representations.iter().map(rep_json).collect();
        let out = serde_json::json!({
            "url": args.url,
            "probe_set": manifest.probe_set,
            "representations": reps,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialises")
        );
        return Ok(());
    }
    let total = manifest
        .representations
        .iter()
        .fold(0u64, |acc, r| acc.saturating_add(r.bytes()));
    outln!(
        "{}: {} representations, {} datapoints, probe set {}, {}",
        args.url,
        manifest.representations.len(),
        manifest.probe_set.datapoints,
        manifest
            .probe_set
            .fingerprint
            .as_deref()
            .unwrap_or("(no fingerprint)"),
        human(total)
    );
    let mut last: (Option<&str>, Option<Option<u64>>, Option<Option<u64>>) = (None, None, None);
    for r in &manifest.representations {
        let k = &r.key;
        if last.0 != Some(k.run.as_str()) {
            outln!("{}", k.run);
            last = (Some(k.run.as_str()), None, None);
        }
        if last.1 != Some(k.seed) {
            outln!(
                "  {}",
                k.seed
                    .map(|s| format!("seed {s}"))
                    .unwrap_or_else(|| "(no seed)".into())
            );
            last.1 = Some(k.seed);
            last.2 = None;
        }
        if last.2 != Some(k.step) {
            outln!(
                "    {}",
                k.step
                    .map(|s| format!("step {s}"))
                    .unwrap_or_else(|| "(no step)".into())
            );
            last.2 = Some(k.step);
        }
        // The canonical key: what sweeps label the representation by and what a selector
        // (`URL#KEY`) names it with.
        outln!(
            "      {:<44} {:<18} {:<6} depth {:<3} {:<8} {:>3} shard{} {:>10}",
            r.id(),
            format!("{:?}", r.shape),
            r.layout.as_str(),
            r.depth,
            r.dtype,
            r.shards.len(),
            if r.shards.len() == 1 { " " } else { "s" },
            human(r.bytes())
        );
    }
    Ok(())
}

fn rep_json(r: &Representation) -> serde_json::Value {
    serde_json::json!({
        "id": r.id(),
        "key": r.key,
        "shape": r.shape,
        "item_shape": r.item_shape(),
        "layout": r.layout,
        "depth": r.depth,
        "source_layout": r.source_layout,
        "dtype": r.dtype,
        "source_dtype": r.source_dtype,
        "shards": r.shards.len(),
        "bytes": r.bytes(),
        "checksum": r.content_checksum(),
    })
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
