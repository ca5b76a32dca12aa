//! The sweep's [`JobDriver`]: a state machine that plans tasks stage by stage, merges their
//! outputs in a fixed order and writes the results.
//!
//! Stages (each representation moves through them on its own; a later stage of one may run
//! while an earlier stage of another still does):
//! 1. *moments*: one task per (content, row chunk); when a content's chunks are all in, the
//!    parts are merged in chunk order (Chan's update) and stored as `moments/<content>/all.bin`;
//! 2. *whiten*: one task per content derives its whitenings (core's `Whitening::from_moments`, on
//!    a worker: the driver runs no eigendecomposition) and stores them content-keyed at
//!    `whitenings/<basis>.bin`; the driver reads them back (for widths, pair comparisons and
//!    representation records), then *project*: one task per (content, row chunk) writing `Z`;
//! 3. once every representation has its whitening, tiles are planned (blocks need each one's
//!    width `k`); a tile's *cross* tasks start when all its members' `Z` are stored; the partial
//!    products of a tile are summed in group order and each pair is compared with core's
//!    `compare_whitened`; *cka* tiles return finished pair results.
//!
//! Nothing depends on which worker ran what or in which order tasks finished: merges follow
//! chunk and group indices. Stored results (content-keyed, see [`crate::cache`]) are used instead
//! of tasks: merged moments, whitenings, `Z` chunks, moment parts and finished pairs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use svcca_core::{MomentAccumulator, Whitening};
use svcca_results::{
    PairRecord, RepresentationKey, RepresentationRecord, ResultsFile, SCHEMA_VERSION, SkipReason,
    SkippedPairs, skipped_lines,
};

use crate::cache::{self, CacheError, DenseMatrix, Store, hash_parts, keys};
use crate::driver::{
    JobDriver, JobDriverFactory, JobSummary, Progress, TaskFailure, TaskOutput, TaskSpec,
};
use crate::exec::{
    BasisRef, BasisSettings, Blob, ConvSettings, CrossCompare, ExecError, RawRef, TaskPayload,
    WhitenRef, ZRef, compare_options, conv_record, spatial, tile_pair_records,
};
use crate::outputs::{self, Claim, OutputError, Summary};
use crate::plan::{self, PlanError, RepInfo};
use crate::source::{SourceError, SourceOpener};
use crate::spec::{ConvMethod, JobSpec, Metric, Precision, SpecError};

/// Frequency blocks per conv pair (dft): enough to spread one pair's frequencies over workers.
const CONV_BLOCKS: usize = 4;

/// Why a job could not be set up or finished (before classification into a [`TaskFailure`]).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{what}: {source}")]
    Maths {
        what: String,
        source: svcca_core::CoreError,
    },
    #[error("{what}: {source}")]
    Conv {
        what: String,
        source: svcca_core::conv::ConvError,
    },
    #[error("{0}")]
    Internal(String),
}

impl JobError {
    pub fn classify(self, task_id: &str) -> TaskFailure {
        let retryable = match &self {
            JobError::Source(e) => e.is_retryable(),
            JobError::Cache(e) => e.is_retryable(),
            JobError::Output(e) => e.is_retryable(),
            JobError::Internal(_) => true,
            _ => false,
        };
        let message = self.to_string();
        let task_id = task_id.to_string();
        if retryable {
            TaskFailure::Retryable { task_id, message }
        } else {
            TaskFailure::Fatal { task_id, message }
        }
    }
}

/// Which whitening a metric compares in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Family {
    /// The keep rule's top directions (svcca).
    Svcca,
    /// Every direction (cca, pwcca).
    Cca,
}

impl Family {
    fn of(metric: Metric) -> Option<Family> {
        match metric {
            Metric::Svcca => Some(Family::Svcca),
            Metric::Cca => Some(Family::Cca),
            // From raw cross co-moments (see `exec`): pwcca's weights are too ill-conditioned
            // to take from Z.
            Metric::Pwcca | Metric::Cka => None,
        }
    }
    fn metric(self) -> Metric {
        match self {
            Family::Svcca => Metric::Svcca,
            Family::Cca => Metric::Cca,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Family::Svcca => "svcca",
            Family::Cca => "cca",
        }
    }
}

struct ContentState {
    rep: usize,
    /// Every representation with this content (the same layer listed twice), in index order:
    /// kept here so that no step scans all representations per content, which a job of 100,000
    /// representations could not afford.
    reps: Vec<usize>,
    cols: usize,
    /// Chunk indices whose moments are not yet stored.
    pending: BTreeSet<usize>,
    /// The merged moments are stored (in the cache). The driver never holds them: a sweep over
    /// hundreds of wide layers could not keep every `d × d` co-moment in one process.
    merged: bool,
    issued: bool,
    /// Times its moments parts (found missing at the merge although their tasks had stored them,
    /// or the planner had found them) or its whitening (missing although its task stored it)
    /// were computed again: at most [`LOST_ENTRY_RECOMPUTES`].
    recomputed: usize,
    /// A `whiten` task is out for this content.
    whitening: bool,
    prepared: bool,
}

/// How many times a content's missing moments parts or whitening are computed again before the
/// job fails. Once covers an entry deleted while the job ran; an entry that is missing again
/// right after its task stored it means the coordinator does not see what the workers write.
const LOST_ENTRY_RECOMPUTES: usize = 2;

struct ZState {
    /// Row chunks whose `Z` is not stored yet.
    pending: BTreeSet<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TileKind {
    Whitened(Family),
    /// pwcca and cka, from raw cross co-moments.
    Raw,
}

struct Tile {
    kind: TileKind,
    a: Vec<usize>,
    /// Empty for a diagonal tile.
    b: Vec<usize>,
    pairs: Vec<(usize, usize)>,
    groups: Vec<Vec<(u64, u64)>>,
    parts: Vec<Option<DenseMatrix>>,
    issued: bool,
    done: bool,
}

#[derive(Clone)]
enum TaskRef {
    MomentsPart { content: String, chunk: usize },
    Whiten { content: String },
    Project { bases: Vec<String>, chunk: usize },
    Cross { tile: usize, group: usize },
    Raw { tile: usize },
    Conv { job: usize, block: usize },
}

/// The [`JobDriver`] of a sweep; see the module docs.
pub struct SweepDriver {
    spec: JobSpec,
    cache: Store,
    out: Store,
    claim: Claim,
    started: Instant,
    reps: Vec<RepInfo>,
    content_of: Vec<String>,
    chunks: Vec<(u64, u64)>,
    pairs: Vec<(usize, usize)>,
    metrics: Vec<Metric>,
    contents: BTreeMap<String, ContentState>,
    whitenings: HashMap<(Family, String), Arc<Whitening>>,
    basis_of: HashMap<(Family, String), String>,
    /// Where each stored whitening is and its SHA-256, by basis: workers check what they read
    /// against it.
    stored_basis: HashMap<String, BasisRef>,
    /// Every whitening basis this job has read back, by name: what a worker comparing a tile's
    /// pairs loads.
    basis_refs: HashMap<String, BasisRef>,
    /// Unique to this run of the driver: workers open the dataset afresh for each run, so a
    /// long-lived worker never answers a new run from a manifest or shard check of an old one.
    run: String,
    z: BTreeMap<String, ZState>,
    /// (family, rep) that must have `Z` because they are in a pair still to compute.
    z_needed: BTreeSet<(Family, usize)>,
    needed: BTreeMap<Metric, Vec<(usize, usize)>>,
    results: BTreeMap<(usize, usize, Metric), PairRecord>,
    from_cache: usize,
    tiles: Vec<Tile>,
    tiles_planned: bool,
    outstanding: HashMap<String, TaskRef>,
    ready: Vec<TaskSpec>,
    progress: Progress,
    /// The job's task count from the plan (see [`SweepDriver::progress`]); `None` until the
    /// first tasks are issued.
    planned_total: Option<u64>,
    task_counts: BTreeMap<String, u64>,
    warnings: Vec<String>,
    /// Planned pairs not compared, by layer pair and reason (`summary.json`).
    skipped: Vec<SkippedPairs>,
    /// How tokens layers were compared, named in each of their pairs' warnings.
    tokens_note: Option<String>,
    /// Conv layer pairs still to compare, one per (pair, metric).
    convs: Vec<ConvJob>,
    convs_issued: bool,
}

/// A conv pair comparison in progress: its frequency blocks and their results.
struct ConvJob {
    i: usize,
    j: usize,
    metric: Metric,
    settings: ConvSettings,
    /// dft: representative locations per block; fold/pool: one empty block (the whole pair).
    blocks: Vec<Vec<usize>>,
    results: Vec<Option<Blob>>,
    done: bool,
}

/// Builds [`SweepDriver`]s for the coordinator.
pub struct SweepFactory {
    opener: Arc<dyn SourceOpener>,
}

impl SweepFactory {
    pub fn new(opener: Arc<dyn SourceOpener>) -> Self {
        SweepFactory { opener }
    }
}

impl JobDriverFactory for SweepFactory {
    fn create(
        &self,
        job_spec_toml: String,
    ) -> BoxFuture<'static, Result<Box<dyn JobDriver>, TaskFailure>> {
        let opener = self.opener.clone();
        Box::pin(async move {
            let driver = SweepDriver::new(&job_spec_toml, opener)
                .await
                .map_err(|e| e.classify("plan"))?;
            Ok(Box::new(driver) as Box<dyn JobDriver>)
        })
    }
}

/// Tokens layers are compared by the conv method their `tokens` choice names; there is no default
/// (folding and averaging answer different questions). Sets the spec's conv method to it and
/// returns the note that names the choice in the job's warnings.
fn tokens_method(spec: &mut JobSpec, reps: &[RepInfo]) -> Result<Option<String>, JobError> {
    let Some(first) = reps.iter().find(|r| r.is_tokens()) else {
        return Ok(None);
    };
    let Some(tokens) = spec.tokens else {
        return Err(PlanError::TokensMethodRequired {
            label: first.key.label(),
        }
        .into());
    };
    let needed = tokens.conv_method();
    let other_conv = reps.iter().any(|r| r.is_conv() && !r.is_tokens());
    if other_conv && spec.conv != needed {
        return Err(PlanError::TokensConvConflict {
            tokens: tokens.as_str(),
            needed: needed.as_str(),
            conv: spec.conv.as_str(),
        }
        .into());
    }
    spec.conv = needed;
    Ok(Some(format!("tokens layers: {}", tokens.describe())))
}

/// A token unique to one run of a driver (time, process and a counter; not a secret).
fn run_nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hash_parts(&[
        "run",
        &now.to_string(),
        &std::process::id().to_string(),
        &RUNS.fetch_add(1, Ordering::Relaxed).to_string(),
    ])
}

/// A layer across seeds and checkpoints, named as canonical keys name it
/// (`run=conv,layer=conv1`, then the tags).
fn layer_id(key: &RepresentationKey) -> String {
    RepresentationKey {
        seed: None,
        step: None,
        ..key.clone()
    }
    .id()
}

/// The job's cache: the spec's, or by default the one beside the output, unless the output holds
/// a cache of an earlier svcca release (`<output>/cache`), which it then keeps using.
async fn open_cache(spec: &JobSpec) -> Result<Store, CacheError> {
    if let Some(legacy) = spec.legacy_cache_url() {
        let store = Store::open(&legacy)?;
        // A listing that fails is no reason to fail here: claiming the output reports an unusable
        // output with its real cause, and without the earlier cache the job still gives the
        // same numbers, only computing them again.
        match store.holds_anything().await {
            Ok(true) => {
                tracing::info!(cache = %legacy, "using the cache inside the output, where an earlier run left it");
                return Ok(store);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(cache = %legacy, %error, "cannot list the output for an earlier cache; using the default cache");
            }
        }
    }
    Store::open(&spec.cache_url())
}

impl SweepDriver {
    /// Parses the spec, claims the output, reads the manifest, plans the pairs and loads what
    /// the cache already holds.
    pub async fn new(
        job_spec_toml: &str,
        opener: Arc<dyn SourceOpener>,
    ) -> Result<SweepDriver, JobError> {
        let mut spec = JobSpec::from_toml(job_spec_toml)?;
        let out = Store::open(&spec.output)?;
        let cache = open_cache(&spec).await?;
        let source = opener.open(spec.dataset.clone()).await?;
        let all = source.list().await?;
        let reps = plan::select(&all, &spec.select)?;
        let tokens_note = tokens_method(&mut spec, &reps)?;
        let n = plan::common_datapoints(&reps)?;
        let planned = plan::plan_pairs(&reps, &spec)?;
        // A conv layer is compared with conv layers only (by the spec's conv method); a mixed
        // pair has no common definition and is reported as skipped.
        let mut warnings = Vec::new();
        let mut pairs = Vec::new();
        let mut skipped = 0usize;
        // Grouped by the two layers so that the summary says which pairs are missing, not only
        // how many.
        let mut skipped_by_layers: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (i, j) in planned {
            if reps[i].is_conv() == reps[j].is_conv() {
                pairs.push((i, j));
            } else {
                skipped += 1;
                let (conv, dense) = if reps[i].is_conv() { (i, j) } else { (j, i) };
                *skipped_by_layers
                    .entry((layer_id(&reps[conv].key), layer_id(&reps[dense].key)))
                    .or_default() += 1;
            }
        }
        let skipped_pairs: Vec<SkippedPairs> = skipped_by_layers
            .into_iter()
            .map(|((a, b), pairs)| SkippedPairs {
                a,
                b,
                pairs,
                reason: SkipReason::ConvWithDense,
            })
            .collect();
        if skipped > 0 {
            warnings.push(format!("{skipped} pair(s) of a conv layer with a dense layer were skipped: select them separately"));
        }
        warnings.extend(tokens_note.clone());
        let conv_pairs = pairs.iter().filter(|&&(i, _)| reps[i].is_conv()).count();
        if spec.precision == Precision::Mixed && conv_pairs > 0 {
            warnings.push(format!(
                "{conv_pairs} pair(s) of conv layers were compared in f64: mixed precision applies \
                 to dense layers only"
            ));
        }
        if pairs.is_empty() {
            return Err(PlanError::NoPairs {
                detail: "every planned pair mixes a conv layer with a dense layer".into(),
            }
            .into());
        }
        for r in reps.iter().filter(|r| r.is_conv() || r.shape.len() != 1) {
            if r.shape.len() != 3 {
                return Err(PlanError::ConvUnsupported {
                    label: r.key.label(),
                    shape: r.shape.clone(),
                    method: spec.conv.as_str(),
                }
                .into());
            }
        }
        let max_cols = reps.iter().map(|r| r.columns() as u64).max().unwrap_or(1);
        let rows = plan::rows_per_task(&spec, n, max_cols)?;
        let chunks = plan::row_chunks(n, rows);
        let metrics = spec.metric_set();
        // Claimed only once the job is known to be plannable, so a bad spec leaves no trace.
        let claim = outputs::claim(&out, &spec).await?;
        // Everything cached is keyed by the manifest's checksums: make sure the shards still hold
        // the bytes those name before anything is taken from the cache. A cache that holds
        // nothing has nothing to lend: every number then comes from tasks that read the shards,
        // and each read checks its shard against the manifest, so a first run does not read the
        // whole dataset one extra time.
        // Nor is anything looked up in it below: on an object store, a first run of an all-pairs
        // job would otherwise ask for every pair record in turn, to be told each time that there
        // is none.
        let cache_holds_anything = cache.holds_anything().await?;
        if cache_holds_anything {
            let keys: Vec<_> = reps.iter().map(|r| r.key.clone()).collect();
            let checked = source.verify(&keys, &cache).await?;
            tracing::debug!(
                unchanged = checked.unchanged,
                hashed = checked.hashed,
                "dataset shards verified"
            );
        }
        // Every cached number follows from the content and the row split: moments are merged
        // chunk by chunk, so another split rounds differently, and whitenings, Z and pairs derived
        // from one split must never be mixed with another's.
        let split = chunks
            .iter()
            .map(|(s, e)| format!("{s}-{e}"))
            .collect::<Vec<_>>()
            .join(",");
        // Mixed-precision moments are other numbers: they never share keys with f64 ones (and
        // f64 keys stay as they were before mixed precision existed).
        let precision = match spec.precision {
            Precision::F64 => None,
            Precision::Mixed => Some("precision=mixed"),
        };
        let content_of: Vec<String> = reps
            .iter()
            .map(|r| {
                let shape = format!("{:?}", r.shape);
                let datapoints = r.datapoints.to_string();
                let mut parts = vec!["content", &r.checksum, &shape, &datapoints, &split];
                parts.extend(precision);
                hash_parts(&parts)
            })
            .collect();
        let mut contents = BTreeMap::new();
        for (i, c) in content_of.iter().enumerate() {
            if reps[i].is_conv() {
                continue;
            }
            contents
                .entry(c.clone())
                .or_insert_with(|| ContentState {
                    rep: i,
                    reps: Vec::new(),
                    cols: reps[i].columns(),
                    pending: (0..chunks.len()).collect(),
                    merged: false,
                    issued: false,
                    recomputed: 0,
                    whitening: false,
                    prepared: false,
                })
                .reps
                .push(i);
        }
        let mut driver = SweepDriver {
            spec,
            cache,
            out,
            claim,
            started: Instant::now(),
            reps,
            content_of,
            chunks,
            pairs,
            metrics,
            contents,
            whitenings: HashMap::new(),
            stored_basis: HashMap::new(),
            basis_refs: HashMap::new(),
            run: run_nonce(),
            basis_of: HashMap::new(),
            z: BTreeMap::new(),
            z_needed: BTreeSet::new(),
            needed: BTreeMap::new(),
            results: BTreeMap::new(),
            from_cache: 0,
            tiles: Vec::new(),
            tiles_planned: false,
            outstanding: HashMap::new(),
            ready: Vec::new(),
            progress: Progress::default(),
            planned_total: None,
            task_counts: BTreeMap::new(),
            warnings,
            skipped: skipped_pairs,
            tokens_note,
            convs: Vec::new(),
            convs_issued: false,
        };
        // Read by the `whiten` and `raw` tasks that need them, never here.
        let merged_keys: Vec<String> = driver
            .contents
            .keys()
            .map(|c| keys::moments_all(c))
            .collect();
        let merged = if cache_holds_anything {
            driver.cache.exists_many(&merged_keys).await?
        } else {
            vec![false; merged_keys.len()]
        };
        for (state, merged) in driver.contents.values_mut().zip(merged) {
            if merged {
                state.merged = true;
                state.pending.clear();
            }
        }
        driver.load_cached_pairs(cache_holds_anything).await?;
        Ok(driver)
    }

    fn basis_settings(&self, family: Family) -> BasisSettings {
        BasisSettings::new(
            family.metric(),
            self.spec.mode,
            self.spec.keep,
            self.spec.precision,
        )
    }

    fn basis_hash(&self, family: Family, content: &str) -> String {
        hash_parts(&["basis", content, &self.basis_settings(family).fingerprint()])
    }

    fn pair_cache_key(&self, i: usize, j: usize, metric: Metric) -> String {
        let opts = compare_options(metric, self.spec.mode, self.spec.keep);
        if self.reps[i].is_conv() {
            let settings =
                ConvSettings::new(metric, self.spec.conv, self.spec.mode, self.spec.keep);
            let fingerprint = format!("{settings:?}");
            return keys::pair(&hash_parts(&[
                "pair-conv",
                &self.content_of[i],
                &self.content_of[j],
                &fingerprint,
            ]));
        }
        let h = match Family::of(metric) {
            Some(f) => hash_parts(&[
                "pair",
                &self.basis_hash(f, &self.content_of[i]),
                &self.basis_hash(f, &self.content_of[j]),
                metric.as_str(),
                &format!("{:016x}", opts.threshold.to_bits()),
            ]),
            None => hash_parts(&[
                "pair-raw",
                &self.content_of[i],
                &self.content_of[j],
                metric.as_str(),
                &self.basis_settings(Family::Cca).fingerprint(),
                &format!("{:016x}", opts.threshold.to_bits()),
            ]),
        };
        keys::pair(&h)
    }

    /// Takes the stored pair records from the cache (`look`: whether it may hold any) and
    /// notes what the others need.
    async fn load_cached_pairs(&mut self, look: bool) -> Result<(), JobError> {
        let mut wanted = Vec::new();
        for &m in &self.metrics {
            for &(i, j) in &self.pairs {
                wanted.push((i, j, m, self.pair_cache_key(i, j, m)));
            }
        }
        let found = if look {
            let keys: Vec<String> = wanted.iter().map(|w| w.3.clone()).collect();
            self.cache.get_many(&keys).await?
        } else {
            vec![None; wanted.len()]
        };
        for ((i, j, m, key), got) in wanted.into_iter().zip(found) {
            match got {
                Some(bytes) => {
                    let mut record: PairRecord =
                        serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
                            key: key.clone(),
                            message: e.to_string(),
                        })?;
                    record.a = self.reps[i].key.clone();
                    record.b = self.reps[j].key.clone();
                    self.results.insert((i, j, m), record);
                    self.from_cache += 1;
                }
                None if self.reps[i].is_conv() => {
                    if matches!(m, Metric::Svcca | Metric::Cca) {
                        self.add_conv_job(i, j, m)?;
                    } else if !self.warnings.iter().any(|w| w.starts_with("pwcca and cka")) {
                        self.warnings.push("pwcca and cka are not computed for conv layers (svcca and cca are, by the conv method)".into());
                    }
                }
                None => {
                    self.needed.entry(m).or_default().push((i, j));
                    if let Some(f) = Family::of(m) {
                        self.z_needed.insert((f, i));
                        self.z_needed.insert((f, j));
                    }
                }
            }
        }
        Ok(())
    }

    fn conv_shapes(&self, i: usize, j: usize) -> [[usize; 3]; 2] {
        let s = |r: &RepInfo| [r.shape[0], r.shape[1], r.shape[2]];
        [s(&self.reps[i]), s(&self.reps[j])]
    }

    fn conv_plan(
        &self,
        i: usize,
        j: usize,
        settings: &ConvSettings,
    ) -> Result<svcca_core::conv::ConvPlan, JobError> {
        let [a, b] = self.conv_shapes(i, j);
        svcca_core::conv::ConvPlan::new(spatial(a), spatial(b), &settings.options()).map_err(
            |source| JobError::Conv {
                what: format!(
                    "{} of {} and {}",
                    settings.metric.as_str(),
                    self.reps[i].key.label(),
                    self.reps[j].key.label()
                ),
                source,
            },
        )
    }

    /// Plans a conv pair: dft frequencies in blocks (so they spread over workers), fold and pool
    /// as one task.
    fn add_conv_job(&mut self, i: usize, j: usize, metric: Metric) -> Result<(), JobError> {
        let settings = ConvSettings::new(metric, self.spec.conv, self.spec.mode, self.spec.keep);
        let blocks = if self.spec.conv == ConvMethod::Dft {
            self.conv_plan(i, j, &settings)?
                .frequency_blocks(CONV_BLOCKS)
        } else {
            vec![Vec::new()]
        };
        let results = vec![None; blocks.len()];
        self.convs.push(ConvJob {
            i,
            j,
            metric,
            settings,
            blocks,
            results,
            done: false,
        });
        Ok(())
    }

    fn issue_convs(&mut self) {
        let mut tasks = Vec::new();
        for (job, c) in self.convs.iter().enumerate() {
            for (block, locations) in c.blocks.iter().enumerate() {
                let payload = TaskPayload::Conv {
                    dataset: self.spec.dataset.clone(),
                    run: self.run.clone(),
                    a: self.reps[c.i].key.clone(),
                    b: self.reps[c.j].key.clone(),
                    checksums: [
                        self.reps[c.i].checksum.clone(),
                        self.reps[c.j].checksum.clone(),
                    ],
                    shapes: self.conv_shapes(c.i, c.j),
                    settings: c.settings,
                    locations: locations.clone(),
                    chunks: self.chunks.clone(),
                };
                let loc_text: Vec<String> = locations.iter().map(|l| l.to_string()).collect();
                let h = hash_parts(&[
                    "conv",
                    &self.content_of[c.i],
                    &self.content_of[c.j],
                    &format!("{:?}", c.settings),
                    &loc_text.join(","),
                ]);
                tasks.push((format!("conv/{h}"), payload, TaskRef::Conv { job, block }));
            }
        }
        for (id, payload, r) in tasks {
            self.emit(id, payload, r);
        }
        self.convs_issued = true;
    }

    async fn finish_conv(&mut self, job: usize) -> Result<(), JobError> {
        let (i, j, metric, settings) = {
            let c = &self.convs[job];
            (c.i, c.j, c.metric, c.settings)
        };
        // The blocks' results stay until the pair is stored (see `finish_whitened_tile`).
        let blobs: Vec<Blob> = self.convs[job]
            .results
            .iter()
            .map(|r| r.clone().expect("every block present"))
            .collect();
        let record = if settings.method == ConvMethod::Dft {
            let mut frequencies = Vec::new();
            for b in blobs {
                match b {
                    Blob::Frequencies(f) => frequencies.extend(f),
                    other => {
                        return Err(JobError::Internal(format!("conv block returned {other:?}")));
                    }
                }
            }
            let plan = self.conv_plan(i, j, &settings)?;
            let c = svcca_core::conv::ConvComparison::from_frequency_results(
                &plan,
                self.reps[i].datapoints,
                frequencies,
                &settings.options(),
            )
            .map_err(|source| JobError::Conv {
                what: format!(
                    "assembling {} of {} and {}",
                    metric.as_str(),
                    self.reps[i].key.label(),
                    self.reps[j].key.label()
                ),
                source,
            })?;
            conv_record(
                self.reps[i].key.clone(),
                self.reps[j].key.clone(),
                metric.as_str(),
                &c,
            )
        } else {
            match blobs.into_iter().next() {
                Some(Blob::Pairs(mut records)) if records.len() == 1 => records.remove(0),
                other => return Err(JobError::Internal(format!("conv task returned {other:?}"))),
            }
        };
        self.store_pairs(vec![((i, j, metric), record)]).await?;
        self.convs[job].results.iter_mut().for_each(|r| *r = None);
        self.convs[job].done = true;
        Ok(())
    }

    /// Queues the moments task of `chunk` of `content` (read from the content's representation);
    /// `whole`: the job has one chunk, and the task stores the merged moments.
    fn emit_moments(&mut self, content: &str, chunk: usize, whole: bool) {
        let (rep, cols) = (self.contents[content].rep, self.contents[content].cols);
        let (start, end) = self.chunks[chunk];
        let payload = TaskPayload::Moments {
            dataset: self.spec.dataset.clone(),
            run: self.run.clone(),
            cache: self.cache.url().to_string(),
            key: self.reps[rep].key.clone(),
            checksum: self.reps[rep].checksum.clone(),
            content: content.to_string(),
            cols,
            start,
            end,
            whole,
            precision: self.spec.precision,
        };
        self.emit(
            format!("moments/{content}/{start}-{end}"),
            payload,
            TaskRef::MomentsPart {
                content: content.to_string(),
                chunk,
            },
        );
    }

    /// Moments parts of `content` that a merge did not find although their tasks stored them,
    /// or the planner found them: an entry deleted while the job ran (a cache cleaned by hand or
    /// by an expiry rule) is computed again, from the same rows, so the numbers do not change.
    /// Missing again after that, the coordinator cannot see what the workers write.
    fn recompute_parts(&mut self, content: &str, missing: &[usize]) -> Result<(), JobError> {
        let keys: Vec<String> = missing
            .iter()
            .map(|&c| keys::moments_part(content, self.chunks[c].0, self.chunks[c].1))
            .collect();
        self.count_lost_entries(content, "moments parts", &keys)?;
        self.contents
            .get_mut(content)
            .expect("content")
            .pending
            .extend(missing.iter().copied());
        for &chunk in missing {
            self.emit_moments(content, chunk, false);
        }
        Ok(())
    }

    /// Counts one more computation of `content`'s entries `keys` (`what`: moments parts, a
    /// whitening) that are missing from the cache although their tasks stored them; past
    /// [`LOST_ENTRY_RECOMPUTES`], the job fails saying why.
    fn count_lost_entries(
        &mut self,
        content: &str,
        what: &str,
        keys: &[String],
    ) -> Result<(), JobError> {
        let label = self.reps[self.contents[content].rep].key.label();
        let state = self.contents.get_mut(content).expect("content");
        if state.recomputed >= LOST_ENTRY_RECOMPUTES {
            return Err(JobError::Internal(format!(
                "{what} {} of {label}: missing from the cache {} although their tasks stored \
                 them, {} times: the coordinator does not see what the workers write (a \
                 file:// cache must be one folder that the coordinator and every worker share; \
                 or something deletes entries while the job runs)",
                keys.join(", "),
                self.cache.url(),
                LOST_ENTRY_RECOMPUTES + 1
            )));
        }
        state.recomputed += 1;
        tracing::warn!(
            representation = %label,
            entries = %keys.join(", "),
            cache = %self.cache.url(),
            "{what} missing from the cache although their tasks stored them; computing them again"
        );
        Ok(())
    }

    fn emit(&mut self, id: String, payload: TaskPayload, what: TaskRef) {
        *self
            .task_counts
            .entry(payload.kind().to_string())
            .or_default() += 1;
        self.ready.push(payload.to_task(id.clone()));
        self.outstanding.insert(id, what);
        self.progress.total += 1;
    }

    /// Moves every stage as far as it can go; emits newly ready tasks.
    async fn advance(&mut self) -> Result<(), JobError> {
        if !self.convs_issued {
            self.issue_convs();
        }
        // Stage 1: moments tasks for contents not in the cache.
        let to_issue: Vec<String> = self
            .contents
            .iter()
            .filter(|(_, s)| !s.issued && !s.merged)
            .map(|(c, _)| c.clone())
            .collect();
        // One chunk: the task stores the merged moments itself (whose absence brought us here),
        // so a part left by an earlier run is not looked for.
        let whole = self.chunks.len() == 1;
        // Every look into the cache first, all of them in one batch: one that fails leaves
        // nothing half-issued for the next attempt to issue twice.
        let mut looked_for = Vec::new();
        for content in to_issue.iter().filter(|_| !whole) {
            for &chunk in &self.contents[content].pending {
                looked_for.push((content.as_str(), chunk));
            }
        }
        let part_keys: Vec<String> = looked_for
            .iter()
            .map(|&(content, chunk)| {
                let (start, end) = self.chunks[chunk];
                keys::moments_part(content, start, end)
            })
            .collect();
        let found = self.cache.exists_many(&part_keys).await?;
        let mut stored: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (&(content, chunk), found) in looked_for.iter().zip(found) {
            if found {
                stored.entry(content.to_string()).or_default().insert(chunk);
            }
        }
        for content in to_issue {
            let stored = stored.remove(&content).unwrap_or_default();
            let state = self.contents.get_mut(&content).expect("content");
            let pending = state.pending.clone();
            state.pending.retain(|chunk| !stored.contains(chunk));
            state.issued = true;
            for &chunk in pending.difference(&stored) {
                self.emit_moments(&content, chunk, whole);
            }
        }
        // Merge finished contents in chunk order.
        let to_merge: Vec<String> = self
            .contents
            .iter()
            .filter(|(_, s)| !s.merged && s.pending.is_empty())
            .map(|(c, _)| c.clone())
            .collect();
        for content in to_merge {
            if self.chunks.len() == 1 {
                // The moments task stored them merged.
                self.contents.get_mut(&content).expect("content").merged = true;
                continue;
            }
            let cols = self.contents[&content].cols;
            let mut acc = MomentAccumulator::new(cols);
            let mut missing = Vec::new();
            let part_keys: Vec<String> = self
                .chunks
                .iter()
                .map(|&(start, end)| keys::moments_part(&content, start, end))
                .collect();
            // Merged in chunk order, read ahead of the merge: a few parts in flight hide the
            // store's latency, and a bound on their bytes keeps wide layers' parts (128 MiB at
            // 4,096 neurons) from piling up on the coordinator.
            const PART_BYTES_IN_FLIGHT: usize = 128 << 20;
            let ahead = (PART_BYTES_IN_FLIGHT / (cols * cols * 8).max(1))
                .clamp(1, cache::REQUESTS_IN_FLIGHT);
            let reads: Vec<_> = part_keys.iter().map(|key| self.cache.get(key)).collect();
            let mut reads = stream::iter(reads).buffered(ahead);
            let mut chunk = 0;
            while let Some(read) = reads.next().await {
                let key = &part_keys[chunk];
                match read? {
                    None => missing.push(chunk),
                    // The merge will not happen this time: only see what else is missing.
                    Some(_) if !missing.is_empty() => {}
                    Some(bytes) => {
                        let maths = |source| JobError::Maths {
                            what: key.clone(),
                            source,
                        };
                        let part =
                            MomentAccumulator::from_parts(cache::decode_moments(key, &bytes)?)
                                .map_err(maths)?;
                        acc.merge(&part).map_err(maths)?;
                    }
                }
                chunk += 1;
            }
            drop(reads);
            if !missing.is_empty() {
                self.recompute_parts(&content, &missing)?;
                continue;
            }
            let parts = acc.to_parts();
            self.cache
                .put(&keys::moments_all(&content), cache::encode_moments(&parts))
                .await?;
            self.contents.get_mut(&content).expect("content").merged = true;
            // Nothing reads a part once the merge is stored (a rerun starts from `all.bin`), and
            // at d = 2,048 they are 33 MB each: three quarters of a transformer-sized cache. A
            // part a failed delete leaves behind costs space, not a result.
            let part_keys: Vec<String> = self
                .chunks
                .iter()
                .map(|&(start, end)| keys::moments_part(&content, start, end))
                .collect();
            let deleted =
                futures::future::join_all(part_keys.iter().map(|key| self.cache.delete(key))).await;
            if let Some(Err(e)) = deleted.into_iter().find(Result::is_err) {
                tracing::warn!(error = %e, "could not delete merged moments parts");
            }
        }
        // Stage 2: whitenings (stored, or a `whiten` task) and projections for contents with
        // moments.
        let to_prepare: Vec<String> = self
            .contents
            .iter()
            .filter(|(_, s)| s.merged && !s.prepared && !s.whitening)
            .map(|(c, _)| c.clone())
            .collect();
        self.prepare_all(to_prepare).await?;
        // Stage 3: tiles, once every representation has its whitening.
        if !self.tiles_planned && self.contents.values().all(|s| s.prepared) {
            self.plan_tiles()?;
            self.tiles_planned = true;
        }
        let ready: Vec<usize> = (0..self.tiles.len())
            .filter(|&t| !self.tiles[t].issued && self.tile_inputs_ready(t))
            .collect();
        for t in ready {
            self.issue_tile(t);
        }
        if self.planned_total.is_none() {
            self.planned_total = Some(self.estimate_total()?);
        }
        Ok(())
    }

    /// The families a content is whitened in: those its pairs compare in, and the one its
    /// representation record states.
    fn families_of(&self, content: &str) -> Vec<Family> {
        let reps_here = &self.contents[content].reps;
        let mut families: BTreeSet<Family> =
            self.metrics.iter().filter_map(|&m| Family::of(m)).collect();
        if self.metrics.contains(&Metric::Pwcca) && families.is_empty() {
            // Only for the representation's record (kept dims, spectrum).
            families.insert(Family::Cca);
        }
        // The record of a representation states its SVCCA dims when svcca is asked, else CCA's.
        families.retain(|&f| {
            f == Family::Svcca
                || !self.metrics.contains(&Metric::Svcca)
                || reps_here.iter().any(|&i| self.z_needed.contains(&(f, i)))
        });
        families.into_iter().collect()
    }

    /// Takes a content's whitenings from the cache and issues its missing projections; a
    /// whitening not stored yet is derived by a `whiten` task first (`whitened`: that task has
    /// run, so every whitening must be there).
    async fn prepare(&mut self, content: &str, whitened: bool) -> Result<(), JobError> {
        let mut read = self.read_for_prepare(&[content.to_string()]).await?;
        self.apply_prepare(content, read.pop().expect("one content read"), whitened)
    }

    /// [`Self::prepare`] for many contents, reading the cache a batch of contents at a time (one
    /// round trip for their whitenings, one for their `Z` chunks) rather than one after another:
    /// on an object store a rerun of 100,000 representations would otherwise wait over an hour.
    async fn prepare_all(&mut self, contents: Vec<String>) -> Result<(), JobError> {
        // Each batch's stored whitenings are held at once, undecoded: a bound on their size.
        const BATCH_BYTES: usize = 256 << 20;
        let mut batch: Vec<String> = Vec::new();
        let mut bytes = 0;
        let mut contents = contents.into_iter().peekable();
        while let Some(content) = contents.next() {
            let cols = self.contents[&content].cols;
            bytes += cols * cols * 8 * self.families_of(&content).len();
            batch.push(content);
            let full = batch.len() >= cache::REQUESTS_IN_FLIGHT || bytes >= BATCH_BYTES;
            if full || contents.peek().is_none() {
                // Every read of the batch first, then the state: a failed read leaves every
                // content of the batch as it was, for the next attempt.
                let read = self.read_for_prepare(&batch).await?;
                for (content, read) in batch.drain(..).zip(read) {
                    self.apply_prepare(&content, read, false)?;
                }
                bytes = 0;
            }
        }
        Ok(())
    }

    /// The cache reads of [`Self::prepare`] for `contents`, in their order; changes nothing.
    async fn read_for_prepare(&self, contents: &[String]) -> Result<Vec<PrepareRead>, JobError> {
        let mut wanted = Vec::new();
        for content in contents {
            for family in self.families_of(content) {
                let hash = self.basis_hash(family, content);
                let key = keys::whitened(&hash);
                wanted.push((content.as_str(), family, hash, key));
            }
        }
        let whitening_keys: Vec<String> = wanted.iter().map(|w| w.3.clone()).collect();
        let found = self.cache.get_many(&whitening_keys).await?;
        let mut reads: BTreeMap<&str, (Vec<WhitenRef>, Vec<StoredWhitening>)> = BTreeMap::new();
        for ((content, family, hash, key), bytes) in wanted.into_iter().zip(found) {
            let (missing, stored) = reads.entry(content).or_default();
            match bytes {
                Some(bytes) => stored.push(StoredWhitening {
                    family,
                    hash,
                    key,
                    bytes,
                }),
                None => missing.push(WhitenRef {
                    hash,
                    settings: self.basis_settings(family),
                }),
            }
        }
        // Decode the stored whitenings of contents that have all of theirs, and look for the
        // `Z` chunks of those that need them.
        let mut out = Vec::with_capacity(contents.len());
        let mut z_keys = Vec::new();
        for content in contents {
            let (missing, stored) = reads.remove(content.as_str()).unwrap_or_default();
            if !missing.is_empty() {
                out.push(PrepareRead::Missing(missing));
                continue;
            }
            let state = &self.contents[content];
            let label = &self.reps[state.rep].key;
            let mut bases = Vec::with_capacity(stored.len());
            for StoredWhitening {
                family,
                hash,
                key,
                bytes,
            } in stored
            {
                let digest = cache::sha256_hex(&bytes);
                let whitening = read_whitening(&key, &bytes, state.cols, label)?;
                // `Z` is stored under a name that includes the whitening's own digest: a `Z`
                // chunk is only ever combined with chunks projected by the very same whitening,
                // whatever an earlier run (another machine, another split, another svcca) left
                // in the cache.
                let basis = hash_parts(&[&hash, &digest]);
                let needs_z = state
                    .reps
                    .iter()
                    .any(|&i| self.z_needed.contains(&(family, i)))
                    && !self.z.contains_key(&basis);
                if needs_z {
                    z_keys.extend(
                        self.chunks
                            .iter()
                            .map(|&(start, end)| keys::z_chunk(&basis, start, end)),
                    );
                }
                bases.push(ReadBasis {
                    family,
                    key,
                    whitening,
                    basis,
                    digest,
                    z_pending: needs_z.then(BTreeSet::new),
                });
            }
            out.push(PrepareRead::Stored(bases));
        }
        // Each `Z` that is needed, in the order its chunks were looked for: the chunks not stored.
        let mut z_found = self.cache.exists_many(&z_keys).await?.into_iter();
        for read in &mut out {
            let PrepareRead::Stored(bases) = read else {
                continue;
            };
            for pending in bases.iter_mut().filter_map(|b| b.z_pending.as_mut()) {
                pending.extend(
                    z_found
                        .by_ref()
                        .take(self.chunks.len())
                        .enumerate()
                        .filter(|&(_, found)| !found)
                        .map(|(chunk, _)| chunk),
                );
            }
        }
        Ok(out)
    }

    /// The state changes and tasks of [`Self::prepare`], from what [`Self::read_for_prepare`]
    /// read.
    fn apply_prepare(
        &mut self,
        content: &str,
        read: PrepareRead,
        whitened: bool,
    ) -> Result<(), JobError> {
        let rep = self.contents[content].rep;
        let read = match read {
            PrepareRead::Missing(missing) => {
                if whitened {
                    // Its task stored them: an entry deleted since is computed again, as
                    // moments parts are (see `recompute_parts`).
                    let keys: Vec<String> =
                        missing.iter().map(|w| keys::whitened(&w.hash)).collect();
                    self.count_lost_entries(content, "whitenings", &keys)?;
                }
                let names: Vec<&str> = missing.iter().map(|w| w.hash.as_str()).collect();
                let id = format!("whiten/{}", hash_parts(&names));
                let payload = TaskPayload::Whiten {
                    cache: self.cache.url().to_string(),
                    key: self.reps[rep].key.clone(),
                    content: content.to_string(),
                    cols: self.contents[content].cols,
                    bases: missing,
                };
                self.emit(
                    id,
                    payload,
                    TaskRef::Whiten {
                        content: content.to_string(),
                    },
                );
                self.contents.get_mut(content).expect("content").whitening = true;
                return Ok(());
            }
            PrepareRead::Stored(read) => read,
        };
        let mut to_project: Vec<(String, BTreeSet<usize>)> = Vec::new();
        for ReadBasis {
            family,
            key,
            whitening,
            basis,
            digest,
            z_pending,
        } in read
        {
            let stored = BasisRef {
                name: basis.clone(),
                whitening: key,
                sha256: digest,
            };
            self.whitenings
                .insert((family, content.to_string()), Arc::new(whitening));
            self.basis_of
                .insert((family, content.to_string()), basis.clone());
            self.basis_refs.insert(basis.clone(), stored.clone());
            let Some(pending) = z_pending else {
                continue;
            };
            // Workers project with this very whitening (read from the cache and checked against
            // its digest).
            self.stored_basis.insert(basis.clone(), stored);
            to_project.push((basis.clone(), pending.clone()));
            self.z.insert(basis, ZState { pending });
        }
        // One task per row chunk projects every basis missing there: raw rows are read once.
        for (chunk, (start, end)) in self.chunks.clone().into_iter().enumerate() {
            let bases: Vec<String> = to_project
                .iter()
                .filter(|(_, pending)| pending.contains(&chunk))
                .map(|(b, _)| b.clone())
                .collect();
            if bases.is_empty() {
                continue;
            }
            let names: Vec<&str> = bases.iter().map(String::as_str).collect();
            let id = format!("project/{}/{start}-{end}", hash_parts(&names));
            let payload = TaskPayload::Project {
                dataset: self.spec.dataset.clone(),
                run: self.run.clone(),
                cache: self.cache.url().to_string(),
                key: self.reps[rep].key.clone(),
                checksum: self.reps[rep].checksum.clone(),
                bases: bases.iter().map(|b| self.stored_basis[b].clone()).collect(),
                start,
                end,
            };
            self.emit(id, payload, TaskRef::Project { bases, chunk });
        }
        let state = self.contents.get_mut(content).expect("content");
        state.prepared = true;
        state.whitening = false;
        Ok(())
    }

    fn plan_tiles(&mut self) -> Result<(), JobError> {
        let dims_of = |family: Family, i: usize| -> usize {
            self.whitenings
                .get(&(family, self.content_of[i].clone()))
                .map(|w| w.dims())
                .unwrap_or(0)
        };
        self.tiles = self.layout_tiles(&dims_of)?;
        // Pass 2 is planned now, so the count of its tasks is exact from here on.
        let pass2: u64 = self.tiles.iter().map(|t| t.parts.len() as u64).sum();
        self.planned_total = Some(self.progress.total + pass2);
        Ok(())
    }

    /// The job's task count as far as the plan can tell before pass 2 is planned (see
    /// [`SweepDriver::progress`]): every task already issued, a whitening task and a projection
    /// task per row chunk for each content still to whiten, and the pass-2 tiles as they would be planned if
    /// whitening kept every dimension (the layers' widths).
    fn estimate_total(&self) -> Result<u64, JobError> {
        let mut total = self.progress.total;
        for (content, state) in &self.contents {
            let needs_z = state.reps.iter().any(|&i| {
                self.z_needed.contains(&(Family::Svcca, i))
                    || self.z_needed.contains(&(Family::Cca, i))
            });
            if !state.prepared && needs_z {
                total += self.chunks.len() as u64;
            }
            if !state.prepared && !state.whitening && !self.families_of(content).is_empty() {
                total += 1;
            }
        }
        let tiles: u64 = if self.tiles_planned {
            self.tiles
                .iter()
                .filter(|t| !t.issued)
                .map(|t| t.parts.len() as u64)
                .sum()
        } else {
            let widest = |_: Family, i: usize| -> usize {
                let r = &self.reps[i];
                r.columns()
                    .min(usize::try_from(r.datapoints).unwrap_or(usize::MAX))
            };
            self.layout_tiles(&widest)?
                .iter()
                .map(|t| t.parts.len() as u64)
                .sum()
        };
        Ok(total + tiles)
    }

    /// The pass-2 tiles, given each representation's whitened dimension in each family.
    fn layout_tiles(
        &self,
        dims_of: &dyn Fn(Family, usize) -> usize,
    ) -> Result<Vec<Tile>, JobError> {
        let bound = self.spec.resources.memory_mb << 20;
        let chunk_rows = self.chunks.iter().map(|c| c.1 - c.0).max().unwrap_or(1);
        // Widest block whose tile fits the bound: 2·rows·2K·8 + K²·8 ≤ bound.
        let max_dims = |rows: u64| -> usize {
            let r = rows as f64;
            let b = bound as f64 / 8.0;
            ((-4.0 * r + (16.0 * r * r + 4.0 * b).sqrt()) / 2.0)
                .floor()
                .max(1.0) as usize
        };
        let mut tiles = Vec::new();
        let families: BTreeSet<Family> =
            self.needed.keys().filter_map(|&m| Family::of(m)).collect();
        for family in families {
            let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
            for (&m, ps) in &self.needed {
                if Family::of(m) == Some(family) {
                    pairs.extend(ps.iter().copied());
                }
            }
            let pairs: Vec<(usize, usize)> = pairs.into_iter().collect();
            let dims: Vec<usize> = (0..self.reps.len()).map(|i| dims_of(family, i)).collect();
            let widest = dims.iter().copied().max().unwrap_or(1);
            let cap = max_dims(chunk_rows);
            if widest > cap {
                return Err(PlanError::OverMemory {
                    what: format!("a pass-2 tile of {widest} whitened dims over {chunk_rows} rows"),
                    needed_mb: plan::bytes_cross(chunk_rows, widest as u64, widest as u64)
                        .div_ceil(1 << 20),
                    bound_mb: self.spec.resources.memory_mb,
                }
                .into());
            }
            let blocks = plan::blocks(&self.reps, &dims, self.spec.comparison, &pairs, cap);
            let planned = plan::tiles(&blocks, &pairs);
            // Few pairs: split the rows too, so the work still spreads over workers. The split
            // follows the job's whole pair list, not the pairs still to compute: a pair's sum
            // over row groups then rounds the same in a fresh run, a resumed one and a rerun.
            let groups_wanted =
                (8usize.div_ceil(self.pairs.len().max(1))).clamp(1, self.chunks.len());
            let per_group = self.chunks.len().div_ceil(groups_wanted);
            let groups: Vec<Vec<(u64, u64)>> =
                self.chunks.chunks(per_group).map(|g| g.to_vec()).collect();
            for ((ba, bb), tile_pairs) in planned {
                tiles.push(Tile {
                    kind: TileKind::Whitened(family),
                    a: blocks[ba].clone(),
                    b: if ba == bb {
                        Vec::new()
                    } else {
                        blocks[bb].clone()
                    },
                    pairs: tile_pairs,
                    parts: vec![None; groups.len()],
                    groups: groups.clone(),
                    issued: false,
                    done: false,
                });
            }
        }
        let raw_pairs: Vec<(usize, usize)> = [Metric::Pwcca, Metric::Cka]
            .iter()
            .filter_map(|m| self.needed.get(m))
            .flatten()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !raw_pairs.is_empty() {
            let pairs = &raw_pairs;
            let dims: Vec<usize> = self.reps.iter().map(|r| r.columns()).collect();
            // A raw task holds both blocks' raw rows and their whole co-moment.
            let cap = max_dims(chunk_rows) / 2;
            let blocks = plan::blocks(&self.reps, &dims, self.spec.comparison, pairs, cap.max(1));
            for ((ba, bb), tile_pairs) in plan::tiles(&blocks, pairs) {
                tiles.push(Tile {
                    kind: TileKind::Raw,
                    a: blocks[ba].clone(),
                    b: if ba == bb {
                        Vec::new()
                    } else {
                        blocks[bb].clone()
                    },
                    pairs: tile_pairs,
                    groups: vec![self.chunks.clone()],
                    parts: vec![None],
                    issued: false,
                    done: false,
                });
            }
        }
        Ok(tiles)
    }

    /// The raw-path metrics this job still computes, in canonical order.
    fn raw_metrics(&self) -> Vec<Metric> {
        [Metric::Pwcca, Metric::Cka]
            .into_iter()
            .filter(|m| self.needed.get(m).is_some_and(|p| !p.is_empty()))
            .collect()
    }

    fn tile_inputs_ready(&self, t: usize) -> bool {
        let tile = &self.tiles[t];
        match tile.kind {
            TileKind::Raw => true,
            TileKind::Whitened(family) => tile.a.iter().chain(&tile.b).all(|&i| {
                self.basis_of
                    .get(&(family, self.content_of[i].clone()))
                    .and_then(|b| self.z.get(b))
                    .is_some_and(|z| z.pending.is_empty())
            }),
        }
    }

    fn zref(&self, family: Family, i: usize) -> ZRef {
        let content = &self.content_of[i];
        ZRef {
            basis: self.basis_of[&(family, content.clone())].clone(),
            dims: self.whitenings[&(family, content.clone())].dims(),
        }
    }

    /// What a whitened tile's single `cross` task needs to compare its pairs: the members' keys
    /// and stored whitenings, and each pair still to compute, oriented as `finish_whitened_tile`
    /// orients it (`i` on the rows if it is a row member).
    fn cross_compare(&self, t: usize, family: Family) -> CrossCompare {
        let tile = &self.tiles[t];
        let members: Vec<usize> = tile.a.iter().chain(&tile.b).copied().collect();
        let n_a = tile.a.len();
        let rows: HashMap<usize, usize> = tile.a.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let cols: HashMap<usize, usize> = if tile.b.is_empty() {
            rows.clone()
        } else {
            tile.b
                .iter()
                .enumerate()
                .map(|(p, &i)| (i, n_a + p))
                .collect()
        };
        // `whitened_todo` lists a pair's metrics one after another: one entry per pair.
        let mut pairs: Vec<(usize, usize, Vec<Metric>)> = Vec::new();
        let mut last = None;
        for (i, j, m) in self.whitened_todo(t) {
            if last == Some((i, j))
                && let Some(entry) = pairs.last_mut()
            {
                entry.2.push(m);
                continue;
            }
            last = Some((i, j));
            let (x, y) = match (rows.get(&i), cols.get(&j)) {
                (Some(&x), Some(&y)) => (x, y),
                _ => (cols[&i], rows[&j]),
            };
            pairs.push((x, y, vec![m]));
        }
        let members = members
            .into_iter()
            .map(|i| {
                let basis = &self.basis_of[&(family, self.content_of[i].clone())];
                (self.reps[i].key.clone(), self.basis_refs[basis].clone())
            })
            .collect();
        CrossCompare {
            members,
            pairs,
            mode: self.spec.mode,
            keep: self.spec.keep,
        }
    }

    fn issue_tile(&mut self, t: usize) {
        let tile = &self.tiles[t];
        match tile.kind {
            TileKind::Whitened(family) => {
                let a: Vec<ZRef> = tile.a.iter().map(|&i| self.zref(family, i)).collect();
                let b: Vec<ZRef> = tile.b.iter().map(|&i| self.zref(family, i)).collect();
                // One group covers all rows: the worker can finish the pairs itself.
                let compare = (tile.groups.len() == 1).then(|| self.cross_compare(t, family));
                let mut tasks = Vec::new();
                for (g, chunks) in tile.groups.iter().enumerate() {
                    let mut parts: Vec<String> = vec!["cross".into(), family.name().into()];
                    parts.extend(a.iter().map(|z| z.basis.clone()));
                    parts.push("|".into());
                    parts.extend(b.iter().map(|z| z.basis.clone()));
                    parts.extend(chunks.iter().map(|c| format!("{}-{}", c.0, c.1)));
                    let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
                    let h = hash_parts(&refs);
                    let payload = TaskPayload::Cross {
                        cache: self.cache.url().to_string(),
                        a: a.clone(),
                        b: b.clone(),
                        chunks: chunks.clone(),
                        out: h.clone(),
                        compare: compare.clone(),
                    };
                    tasks.push((
                        format!("cross/{h}"),
                        payload,
                        TaskRef::Cross { tile: t, group: g },
                    ));
                }
                for (id, payload, r) in tasks {
                    self.emit(id, payload, r);
                }
            }
            TileKind::Raw => {
                let members_idx: Vec<usize> = tile.a.iter().chain(&tile.b).copied().collect();
                let pos: HashMap<usize, usize> = members_idx
                    .iter()
                    .enumerate()
                    .map(|(p, &i)| (i, p))
                    .collect();
                let members: Vec<RawRef> = members_idx
                    .iter()
                    .map(|&i| RawRef {
                        key: self.reps[i].key.clone(),
                        checksum: self.reps[i].checksum.clone(),
                        content: self.content_of[i].clone(),
                        cols: self.reps[i].columns(),
                    })
                    .collect();
                let pairs: Vec<(usize, usize)> =
                    tile.pairs.iter().map(|(i, j)| (pos[i], pos[j])).collect();
                let metrics = self.raw_metrics();
                let mut parts: Vec<String> = vec!["raw".into(), self.spec.mode.as_str().into()];
                parts.extend(metrics.iter().map(|m| m.as_str().to_string()));
                parts.extend(members.iter().map(|m| m.content.clone()));
                parts.extend(pairs.iter().map(|p| format!("{}:{}", p.0, p.1)));
                parts.extend(self.chunks.iter().map(|c| format!("{}-{}", c.0, c.1)));
                let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
                let h = hash_parts(&refs);
                let payload = TaskPayload::Raw {
                    dataset: self.spec.dataset.clone(),
                    run: self.run.clone(),
                    cache: self.cache.url().to_string(),
                    members,
                    pairs,
                    metrics,
                    chunks: self.chunks.clone(),
                    settings: self.basis_settings(Family::Cca),
                };
                self.emit(format!("raw/{h}"), payload, TaskRef::Raw { tile: t });
            }
        }
        self.tiles[t].issued = true;
    }

    /// Stores pair results in the cache, then keeps them: all or none, so that a result merged
    /// again after a failed write (see [`Self::on_complete`]) finds the same pairs still to do.
    async fn store_pairs(
        &mut self,
        records: Vec<((usize, usize, Metric), PairRecord)>,
    ) -> Result<(), JobError> {
        let entries = records
            .iter()
            .map(|&((i, j, metric), ref record)| {
                let bytes = serde_json::to_vec(record).expect("pair record serialises");
                (self.pair_cache_key(i, j, metric), bytes.into())
            })
            .collect();
        self.cache.put_many(entries).await?;
        self.results.extend(records);
        Ok(())
    }

    /// All groups of a whitened tile are in: sum them in group order and compare each pair.
    async fn finish_whitened_tile(&mut self, t: usize, family: Family) -> Result<(), JobError> {
        // The parts stay until the tile's pairs are stored: if storing fails, the group merged
        // again finds the others still here.
        let mut parts = self.tiles[t]
            .parts
            .iter()
            .map(|p| p.as_ref().expect("every group present"));
        let mut total = parts.next().expect("a tile has at least one group").clone();
        for p in parts {
            for (x, y) in total.data.iter_mut().zip(&p.data) {
                *x += y;
            }
        }
        let compare = self.cross_compare(t, family);
        let tile = &self.tiles[t];
        let whitenings: Vec<Arc<Whitening>> = tile
            .a
            .iter()
            .chain(&tile.b)
            .map(|&i| self.whitenings[&(family, self.content_of[i].clone())].clone())
            .collect();
        let dims: Vec<usize> = whitenings.iter().map(|w| w.dims()).collect();
        let (n_a, diagonal) = (tile.a.len(), tile.b.is_empty());
        let records = tokio::task::spawn_blocking(move || {
            tile_pair_records(total.view(), (n_a, diagonal, &dims), &whitenings, &compare)
        })
        .await
        .map_err(|e| JobError::Internal(e.to_string()))?
        .map_err(|e| match e {
            ExecError::Maths { what, source } => JobError::Maths { what, source },
            other => JobError::Internal(other.to_string()),
        })?;
        self.store_tile_pairs(t, records).await?;
        self.tiles[t].parts.iter_mut().for_each(|p| *p = None);
        Ok(())
    }

    /// A whitened tile's (pair, metric)s still to compute, pair by pair: the order of
    /// [`Self::cross_compare`]'s pairs and their metrics.
    fn whitened_todo(&self, t: usize) -> Vec<(usize, usize, Metric)> {
        let TileKind::Whitened(family) = self.tiles[t].kind else {
            return Vec::new();
        };
        self.tiles[t]
            .pairs
            .iter()
            .flat_map(|&(i, j)| {
                self.metrics
                    .iter()
                    .copied()
                    .filter(move |&m| Family::of(m) == Some(family))
                    .map(move |m| (i, j, m))
            })
            .filter(|k| !self.results.contains_key(k))
            .collect()
    }

    /// The records a whitened tile's worker computed, in [`Self::cross_compare`]'s order.
    async fn store_tile_pairs(
        &mut self,
        t: usize,
        records: Vec<PairRecord>,
    ) -> Result<(), JobError> {
        let wanted = self.whitened_todo(t);
        if records.len() != wanted.len() {
            return Err(JobError::Internal(format!(
                "a cross task returned {} pair results where {} were asked for",
                records.len(),
                wanted.len()
            )));
        }
        self.store_pairs(wanted.into_iter().zip(records).collect())
            .await?;
        self.tiles[t].done = true;
        Ok(())
    }

    /// Merges a task's result. The task stays outstanding until its result is merged: when
    /// merging fails (a cache read or write the store refused for now), the coordinator runs the
    /// task again and its next report is merged as if it were the first, so every step below
    /// either completes or leaves the driver as it found it.
    async fn on_complete(&mut self, task_id: &str, output: TaskOutput) -> Result<(), JobError> {
        let Some(what) = self.outstanding.remove(task_id) else {
            // A duplicate report (a retried task that finished twice) changes nothing.
            return Ok(());
        };
        if let Err(e) = self.merge_result(task_id, what.clone(), output).await {
            // Waited for again: the coordinator runs the task again (or fails the job).
            self.outstanding.entry(task_id.to_string()).or_insert(what);
            return Err(e);
        }
        self.progress.done += 1;
        Ok(())
    }

    async fn merge_result(
        &mut self,
        task_id: &str,
        what: TaskRef,
        output: TaskOutput,
    ) -> Result<(), JobError> {
        let blob =
            Blob::from_output(task_id, &output).map_err(|f| JobError::Internal(f.to_string()))?;
        match what {
            TaskRef::MomentsPart { content, chunk } => {
                if let Some(s) = self.contents.get_mut(&content) {
                    s.pending.remove(&chunk);
                }
            }
            TaskRef::Whiten { content } => {
                self.prepare(&content, true).await?;
            }
            TaskRef::Project { bases, chunk } => {
                for basis in bases {
                    if let Some(z) = self.z.get_mut(&basis) {
                        z.pending.remove(&chunk);
                    }
                }
            }
            TaskRef::Cross { tile, group } => {
                let m = match blob {
                    Blob::Pairs(records) => return self.store_tile_pairs(tile, records).await,
                    Blob::Matrix(bytes) => DenseMatrix::decode(task_id, &bytes)?,
                    Blob::MatrixAt(key) => {
                        let bytes = self.cache.get(&key).await?.ok_or_else(|| {
                            JobError::Internal(format!("partial `{key}` vanished"))
                        })?;
                        let m = DenseMatrix::decode(&key, &bytes)?;
                        // Partials are scratch: the pair results are what is kept, and one left
                        // behind by a failed delete costs space, not a result.
                        if let Err(e) = self.cache.delete(&key).await {
                            tracing::warn!(error = %e, "could not delete a merged partial");
                        }
                        m
                    }
                    other => {
                        return Err(JobError::Internal(format!("cross task returned {other:?}")));
                    }
                };
                self.tiles[tile].parts[group] = Some(m);
                if self.tiles[tile].parts.iter().all(|p| p.is_some()) {
                    let TileKind::Whitened(family) = self.tiles[tile].kind else {
                        unreachable!("cross tasks belong to whitened tiles")
                    };
                    self.finish_whitened_tile(tile, family).await?;
                }
            }
            TaskRef::Conv { job, block } => {
                self.convs[job].results[block] = Some(blob);
                if self.convs[job].results.iter().all(|r| r.is_some()) {
                    self.finish_conv(job).await?;
                }
            }
            TaskRef::Raw { tile } => {
                let Blob::Pairs(records) = blob else {
                    return Err(JobError::Internal("raw task returned no pairs".into()));
                };
                let metrics = self.raw_metrics();
                let wanted: Vec<(usize, usize, Metric)> = self.tiles[tile]
                    .pairs
                    .iter()
                    .flat_map(|&(i, j)| metrics.iter().map(move |&m| (i, j, m)))
                    .collect();
                if records.len() != wanted.len() {
                    return Err(JobError::Internal(
                        "raw task returned the wrong number of pairs".into(),
                    ));
                }
                // A pair may be here for one metric while the other came from the cache.
                let fresh = wanted
                    .into_iter()
                    .zip(records)
                    .filter(|(k, _)| !self.results.contains_key(k))
                    .collect();
                self.store_pairs(fresh).await?;
                self.tiles[tile].done = true;
            }
        }
        // The coordinator asks for ready tasks (`take_ready`) after every merged result.
        Ok(())
    }

    fn results_file(&self) -> ResultsFile {
        let record_family = if self.metrics.contains(&Metric::Svcca) {
            Some(Family::Svcca)
        } else if self
            .metrics
            .iter()
            .any(|m| matches!(m, Metric::Cca | Metric::Pwcca))
        {
            Some(Family::Cca)
        } else {
            None
        };
        let representations = self
            .reps
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let w = record_family
                    .and_then(|f| self.whitenings.get(&(f, self.content_of[i].clone())));
                RepresentationRecord {
                    key: r.key.clone(),
                    shape: r.shape.clone(),
                    datapoints: r.datapoints,
                    kept_dims: w.map(|w| w.dims()).unwrap_or(r.columns()),
                    dropped_neurons: w.map(|w| w.dropped_neurons().to_vec()).unwrap_or_default(),
                    spectrum: w.map(|w| w.spectrum().to_vec()).unwrap_or_default(),
                    checksum: r.checksum.clone(),
                    depth: r.depth,
                    layout: r.layout.clone(),
                }
            })
            .collect();
        let mut pairs = Vec::new();
        for &(i, j) in &self.pairs {
            for &m in &self.metrics {
                if let Some(r) = self.results.get(&(i, j, m)) {
                    let mut r = r.clone();
                    if let Some(note) = &self.tokens_note
                        && (self.reps[i].is_tokens() || self.reps[j].is_tokens())
                        && !r.warnings.contains(note)
                    {
                        r.warnings.push(note.clone());
                    }
                    pairs.push(r);
                }
            }
        }
        ResultsFile {
            schema_version: SCHEMA_VERSION,
            coefficients: svcca_results::CoefficientStore::Json,
            job_spec: self.spec.to_toml(),
            versions: outputs::versions(),
            comparison: self.spec.comparison.as_str().to_string(),
            settings: self.spec.describe_settings(),
            representations,
            pairs,
        }
    }

    async fn write(&mut self) -> Result<JobSummary, JobError> {
        let results = self.results_file();
        let summary = Summary {
            representations: results.representations.len(),
            pairs: self.pairs.len(),
            metrics: self
                .metrics
                .iter()
                .map(|m| m.as_str().to_string())
                .collect(),
            pairs_from_cache: self.from_cache,
            tasks: self.task_counts.clone(),
            seconds: self.started.elapsed().as_secs_f64(),
            resumed: self.claim == Claim::Resume,
            warnings: self.warnings.clone(),
            skipped: self.skipped.clone(),
        };
        outputs::write_all(&self.out, &results, &summary).await?;
        let mut lines = vec![
            format!(
                "{} representations, {} pairs x {} metric(s) ({}), {} from the cache",
                summary.representations,
                summary.pairs,
                summary.metrics.len(),
                summary.metrics.join(", "),
                summary.pairs_from_cache
            ),
            format!(
                "tasks run: {}",
                if summary.tasks.is_empty() {
                    "none".to_string()
                } else {
                    summary
                        .tasks
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ];
        for m in &self.metrics {
            let values: Vec<f64> = results.pairs_of(m.as_str()).map(|p| p.mean).collect();
            if !values.is_empty() {
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                lines.push(format!(
                    "{}: mean similarity from {lo:.4} to {hi:.4}",
                    m.as_str()
                ));
            }
        }
        lines.extend(skipped_lines(&summary.skipped));
        lines.push(format!(
            "results: {}/results.json, matrices: matrix_<metric>.csv/.arrow",
            self.out.url().trim_end_matches('/')
        ));
        Ok(JobSummary {
            output_url: self.out.url().to_string(),
            lines,
        })
    }
}

impl JobDriver for SweepDriver {
    fn validate(&self, task_id: &str, output: &TaskOutput) -> Result<(), String> {
        self.check_output(task_id, output)
    }

    fn take_ready(&mut self) -> BoxFuture<'_, Result<Vec<TaskSpec>, TaskFailure>> {
        Box::pin(async move {
            self.advance().await.map_err(|e| e.classify("plan"))?;
            Ok(std::mem::take(&mut self.ready))
        })
    }

    fn complete(
        &mut self,
        task_id: String,
        output: TaskOutput,
    ) -> BoxFuture<'_, Result<(), TaskFailure>> {
        Box::pin(async move {
            self.on_complete(&task_id, output)
                .await
                .map_err(|e| e.classify(&task_id))
        })
    }

    fn all_done(&self) -> bool {
        self.tiles_planned
            && self.convs_issued
            && self.outstanding.is_empty()
            && self.ready.is_empty()
            && self.tiles.iter().all(|t| t.done)
            && self.convs.iter().all(|c| c.done)
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<JobSummary, TaskFailure>> {
        Box::pin(async move { self.write().await.map_err(|e| e.classify("finish")) })
    }

    /// Tasks done of the plan's total. The total is known from the first tasks on (see
    /// `estimate_total`) rather than growing stage by stage; it is exact once pass 2 is planned
    /// (after pass 1), and until then counts pass 2 as if whitening kept every dimension, which
    /// it corrects then, usually downwards.
    fn progress(&self) -> Progress {
        Progress {
            done: self.progress.done,
            total: self.planned_total.map_or(self.progress.total, |planned| {
                planned.max(self.progress.total)
            }),
        }
    }
}

impl SweepDriver {
    /// What a worker may report for `task_id` (see [`JobDriver::validate`]): the kind of output
    /// the task gives, finite numbers, the right number of pairs, and for a partial left in the
    /// cache the key the task was told to use (any other key would make the driver read, then
    /// delete, another cache entry).
    fn check_output(&self, task_id: &str, output: &TaskOutput) -> Result<(), String> {
        let Some(what) = self.outstanding.get(task_id) else {
            // Not waited for (a duplicate, or an unknown id): `complete` ignores it.
            return Ok(());
        };
        let blob = Blob::from_output(task_id, output).map_err(|f| f.to_string())?;
        fn finite(mut values: impl Iterator<Item = f64>, what: &str) -> Result<(), String> {
            if values.all(f64::is_finite) {
                Ok(())
            } else {
                Err(format!("{what} holds a value that is not finite"))
            }
        }
        match (what, &blob) {
            (
                TaskRef::MomentsPart { .. } | TaskRef::Whiten { .. } | TaskRef::Project { .. },
                Blob::Stored,
            ) => Ok(()),
            (TaskRef::Cross { .. }, Blob::Matrix(bytes)) => {
                let m = DenseMatrix::decode(task_id, bytes).map_err(|e| e.to_string())?;
                if m.rows == 0 || m.cols == 0 {
                    return Err(format!("an empty {}x{} matrix", m.rows, m.cols));
                }
                finite(m.data.iter().copied(), "the matrix")
            }
            (TaskRef::Cross { .. }, Blob::MatrixAt(key)) => {
                let expected = task_id.strip_prefix("cross/").map(keys::partial);
                if expected.as_deref() == Some(key.as_str()) {
                    Ok(())
                } else {
                    Err(format!(
                        "the partial is at `{key}`, not where the task put it"
                    ))
                }
            }
            (TaskRef::Cross { tile, .. }, Blob::Pairs(records))
                if self.tiles[*tile].groups.len() == 1 =>
            {
                let wanted = self.whitened_todo(*tile).len();
                if records.len() != wanted {
                    return Err(format!("{} pair records, not {wanted}", records.len()));
                }
                finite(
                    records.iter().flat_map(|r| {
                        std::iter::once(r.mean)
                            .chain(r.google_mean)
                            .chain(r.coefficients.iter().copied())
                    }),
                    "a pair record",
                )
            }
            (TaskRef::Raw { tile }, Blob::Pairs(records)) => {
                let wanted = self.tiles[*tile].pairs.len() * self.raw_metrics().len();
                if records.len() != wanted {
                    return Err(format!("{} pair records, not {wanted}", records.len()));
                }
                finite(
                    records.iter().flat_map(|r| {
                        std::iter::once(r.mean)
                            .chain(r.google_mean)
                            .chain(r.coefficients.iter().copied())
                    }),
                    "a pair record",
                )
            }
            // Methods other than the DFT compare the whole pair in one task.
            (TaskRef::Conv { .. }, Blob::Pairs(records)) if records.len() == 1 => finite(
                records.iter().flat_map(|r| {
                    std::iter::once(r.mean)
                        .chain(r.google_mean)
                        .chain(r.coefficients.iter().copied())
                }),
                "the pair record",
            ),
            (TaskRef::Conv { .. }, Blob::Frequencies(results)) => finite(
                results.iter().flat_map(|r| {
                    [r.mean, r.google_mean]
                        .into_iter()
                        .chain(r.coefficients.iter().copied())
                }),
                "a frequency result",
            ),
            (_, other) => Err(format!(
                "a {} task does not return {}",
                task_id.split('/').next().unwrap_or(task_id),
                match other {
                    Blob::Stored => "`stored`",
                    Blob::Matrix(_) => "a matrix",
                    Blob::MatrixAt(_) => "a matrix key",
                    Blob::Pairs(_) => "pair records",
                    Blob::Frequencies(_) => "frequency results",
                }
            )),
        }
    }
}

/// A whitening read back from the cache, checked against the representation it belongs to (a
/// damaged or foreign entry is reported, never compared with).
/// What [`SweepDriver::read_for_prepare`] found for one content.
enum PrepareRead {
    /// Whitenings not stored yet: a `whiten` task derives them.
    Missing(Vec<WhitenRef>),
    /// Every whitening stored, decoded.
    Stored(Vec<ReadBasis>),
}

/// A stored whitening as read, before it is decoded.
struct StoredWhitening {
    family: Family,
    hash: String,
    key: String,
    bytes: bytes::Bytes,
}

/// A stored whitening, decoded, with the `Z` chunks still to project under it (`None` when no
/// pair of this job needs its `Z`).
struct ReadBasis {
    family: Family,
    key: String,
    whitening: Whitening,
    basis: String,
    digest: String,
    z_pending: Option<BTreeSet<usize>>,
}

fn read_whitening(
    key: &str,
    bytes: &[u8],
    cols: usize,
    rep: &RepresentationKey,
) -> Result<Whitening, JobError> {
    let w = Whitening::from_parts(cache::decode_whitening(key, bytes)?).map_err(|source| {
        JobError::Maths {
            what: format!("whitening {} at `{key}`", rep.label()),
            source,
        }
    })?;
    if w.input_dim() != cols {
        return Err(CacheError::Corrupt {
            key: key.to_string(),
            message: format!(
                "a whitening of {} columns for {}, which has {cols}",
                w.input_dim(),
                rep.label()
            ),
        }
        .into());
    }
    Ok(w)
}
