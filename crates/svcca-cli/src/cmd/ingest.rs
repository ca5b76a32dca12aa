//! `svcca ingest SRC DEST_URL`: turn a tree of `.npy` / `.npz` / `.safetensors` files into an
//! activation dataset (Arrow IPC shards plus a manifest) in a directory or object store.

use std::path::PathBuf;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use svcca_storage::ingest::{
    DEFAULT_PATTERN, IngestConfig, IngestEvent, LayerOrder, LayoutRule, ProbeIdentity,
};

use crate::exit::{CmdResult, Failure};

/// Ingest .npy/.npz/.safetensors activations into a dataset.
///
/// Walks SRC, maps each file's path to representation keys with --pattern, validates every
/// array (finite values, one datapoint count, shapes), writes Arrow shards and then the dataset's
/// manifest. Rerunning is idempotent and resumes an interrupted ingest; data that differs from
/// what the dataset already holds is never replaced without --force. Each array of an .npz and
/// each tensor of a .safetensors file becomes a layer named after it.
///
/// Files do not say how to read their axes: arrays with more than two axes need --layout
/// (nhwc = [images, h, w, channels], nchw = [images, channels, h, w], PyTorch's order,
/// transposed to nhwc when stored; tokens = [sequences, tokens, features]; dense flattens
/// everything after the datapoint axis). --layer-order gives each layer its depth in the network,
/// which the report's layer analyses follow.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  svcca ingest fixtures/digits file:///tmp/ds --pattern '{run}/seed{seed}/step{step}/{layer}.npy'\n  \
AWS_ENDPOINT=http://127.0.0.1:8333 AWS_ALLOW_HTTP=true svcca ingest acts/ s3://bucket/ds\n\n\
Pattern placeholders: {run} (or {model}), {seed}, {step} (digits), {layer}, {*} (ignored), any other {name} becomes a tag.\n\n\
Layouts:\n  svcca ingest acts/ ds --layout nchw                                   # every array with more than 2 axes is [N, C, H, W]\n  \
svcca ingest acts/ ds --layout nhwc --layout 'layer=attn*:tokens'      # rules: KEY=GLOB:LAYOUT, the last match wins\n  \
svcca ingest acts/ ds --layout 'file=torch/*:nchw'                     # KEY may be run, seed, step, layer, a tag, or file\n  \
svcca ingest acts/ ds --layout nchw --layer-order conv1,layer1.0.conv1,layer2.0.conv1,fc"
)]
pub struct IngestArgs {
    /// Directory to read.
    pub src: PathBuf,
    /// Dataset to write: a path, file://, s3://, gs://, az:// URL (credentials from AWS_*/GOOGLE_*/AZURE_* variables).
    pub dest_url: String,
    /// Path template mapping files to keys; its extension (.npy/.npz/.safetensors), if any, restricts the files read.
    #[arg(long, default_value = DEFAULT_PATTERN)]
    pub pattern: String,
    /// Datapoints per shard (default: about 32 MiB per shard).
    #[arg(long)]
    pub shard_rows: Option<usize>,
    /// Replace representations whose stored values differ.
    #[arg(long)]
    pub force: bool,
    /// A file identifying the probe set (e.g. its inputs or labels); its SHA-256 is stored so that
    /// representations over different probe sets are never compared.
    #[arg(long, conflicts_with = "probe_name")]
    pub probe_file: Option<PathBuf>,
    /// A name identifying the probe set (hashed like --probe-file).
    #[arg(long)]
    pub probe_name: Option<String>,
    /// Free-text description of the probe set, stored in the manifest.
    #[arg(long)]
    pub probe_description: Option<String>,
    /// Layout of the arrays: dense, nhwc, nchw or tokens for every file, or KEY=GLOB:LAYOUT
    /// for some (KEY: run, seed, step, layer, a tag name, or file = the path under SRC); repeat
    /// it, the last matching rule wins. Arrays of more than two axes without one are refused.
    #[arg(long = "layout", value_name = "RULE")]
    pub layouts: Vec<String>,
    /// The layers in network order, input side first (comma-separated): sets each layer's
    /// depth. Without it, layers the dataset holds keep their depth and new ones follow in name
    /// order.
    #[arg(long, value_name = "A,B,C", conflicts_with = "layer_order_file")]
    pub layer_order: Option<String>,
    /// As --layer-order, one layer name per line (lines starting with # are ignored).
    #[arg(long, value_name = "FILE")]
    pub layer_order_file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl IngestArgs {
    fn into_config(self) -> Result<(IngestConfig, bool), Failure> {
        let mut c = IngestConfig::new(self.src, self.dest_url)
            .with_pattern(self.pattern)
            .with_force(self.force);
        c.shard_rows = self.shard_rows;
        c.probe = match (self.probe_file, self.probe_name) {
            (Some(f), _) => Some(ProbeIdentity::File(f)),
            (None, Some(n)) => Some(ProbeIdentity::Name(n)),
            (None, None) => None,
        };
        c.probe_description = self.probe_description;
        for rule in &self.layouts {
            c = c.with_layout(LayoutRule::parse(rule).map_err(storage_failure)?);
        }
        c.layer_order = match (&self.layer_order, &self.layer_order_file) {
            (Some(list), _) => Some(LayerOrder::parse_list(list).map_err(storage_failure)?),
            (None, Some(file)) => Some(LayerOrder::read_file(file).map_err(storage_failure)?),
            (None, None) => None,
        };
        Ok((c, self.json))
    }
}

pub fn run(args: IngestArgs) -> CmdResult {
    if args.shard_rows == Some(0) {
        return Err(Failure::fatal("--shard-rows must be at least 1"));
    }
    let (config, json) = args.into_config()?;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress_bar = bar.clone();
    let config = config.with_progress(Arc::new(move |event: &IngestEvent| match event {
        IngestEvent::Planned { bytes, .. } => progress_bar.set_length(*bytes),
        IngestEvent::Done {
            representation,
            bytes,
            ..
        } => {
            progress_bar.inc(*bytes);
            progress_bar.set_message(representation.clone());
        }
    }));
    let runtime = runtime()?;
    let report = runtime
        .block_on(svcca_storage::ingest(config))
        .map_err(storage_failure);
    bar.finish_and_clear();
    let report = report?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
        return Ok(());
    }
    outln!(
        "{}: {} added, {} replaced, {} unchanged ({} datapoints); {} shards written ({:.1} MiB), {} already present",
        report.url,
        report.added.len(),
        report.replaced.len(),
        report.unchanged.len(),
        report.datapoints,
        report.shards_written,
        report.bytes_written as f64 / (1 << 20) as f64,
        report.shards_reused,
    );
    if !report.repaired.is_empty() {
        outln!(
            "repaired {} representation(s) whose stored shards were damaged, by writing them again from the source: {}",
            report.repaired.len(),
            report.repaired.join(" | ")
        );
    }
    if !report.skipped_files.is_empty() {
        outln!(
            "skipped {} file(s) that do not match the pattern, e.g. {}",
            report.skipped_files.len(),
            report.skipped_files[0]
        );
    }
    Ok(())
}

/// A small multi-threaded runtime for the storage crate's async API (two cores is the norm here).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::retryable(format!("cannot start the async runtime: {e}")))
}

/// Storage errors keep their retryable/fatal classification across the process boundary.
pub(crate) fn storage_failure(e: svcca_storage::StorageError) -> Failure {
    crate::exit::classify(e.to_string(), e.is_retryable(), &e)
}
