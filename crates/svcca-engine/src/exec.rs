//! The worker side of a sweep: what each task does.
//!
//! Task kinds (payloads are [`TaskPayload`], JSON):
//! - `moments`: rows `start..end` of one representation → its [`MomentParts`], always written to
//!   the cache at `moments/<content>/<start>-<end>.bin` (so a rerun skips it);
//! - `whiten`: the merged moments of one representation (`moments/<content>/all.bin`) → one
//!   whitening per basis the job needs (core's `Whitening::from_moments`), stored at
//!   `whitenings/<basis>.bin`, where `<basis>` names the content and the settings: so the
//!   eigendecompositions run on workers, never on the coordinator, and a rerun reuses them;
//! - `project`: rows `start..end` → the whitened rows `Z` (`rows × k`, f64, column-major) at
//!   `z/<basis>/<start>-<end>.bin`, with the stored whitening (checked against its SHA-256, and
//!   memoised);
//! - `cross`: for a tile of blocks `A`, `B` and a list of row chunks, `C = Σ_chunks Z_Aᵀ Z_B`:
//!   each chunk's `Z` of every member is laid side by side in one column-major scratch and
//!   multiplied in one GEMM (a triangular one for diagonal tiles). `C` comes back inline when
//!   small, else at `partials/<hash>.bin`;
//! - `raw`: the same over raw rows centred on the global means, then each pair's linear CKA
//!   (core's `compare_cka`) and PWCCA (`Wₓᵀ M_xy W_y`, then `compare_whitened`, exactly the path
//!   of `compare_moments`) from its block of the cross co-moment — the raw product is too large
//!   to send back, so the pair results are. PWCCA takes this path because its weights (L1 norms
//!   of singular vectors) change by up to 1e-3 under rounding-level changes of the cross product
//!   wherever canonical correlations are (nearly) equal, e.g. adjacent layers with ρ = 1
//!   clusters: from `Z` it would not reproduce `svcca compare`.
//!
//! Failures are classified once: the object store and dataset I/O are retryable; bad data, a
//! damaged cache entry or a maths error on the input is fatal.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use faer::MatRef;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use svcca_core::conv::{
    ConvComparison, ConvError, ConvInput, ConvMomentAccumulator, ConvOptions, ConvPlan,
    FrequencyResult, Layout, SpatialShape,
};
use svcca_core::{CompareOptions, MomentAccumulator, RowBlock, Side, Whitening};
use svcca_results::{ConvRecord, FrequencyRecord, PairRecord, RepresentationKey};

use crate::cache::{self, CacheError, DenseMatrix, Store, StoredMatrix, keys};
use crate::driver::{TaskExecutor, TaskFailure, TaskOutput, TaskSpec};
use crate::pair_products;
use crate::source::{RowSource, SourceError, SourceOpener};
use crate::spec::{ConvMethod, KeepRule, Metric, Mode, Precision};

/// Outputs up to this size travel inline in the `TaskOutput`; larger ones go to the cache.
pub const INLINE_LIMIT: usize = 256 << 10;

/// The numerical settings of one whitening basis, exactly as the driver uses them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BasisSettings {
    /// `svcca` (keep rule applies) or `cca` (every direction; also PWCCA's basis).
    pub metric: Metric,
    pub mode: Mode,
    /// The keep rule; a variance fraction travels as its bit pattern so it is exact.
    pub keep_dims: Option<usize>,
    pub keep_variance_bits: Option<u64>,
    /// The precision the moments were accumulated in (mixed: the whitening checks its bound).
    #[serde(default, skip_serializing_if = "Precision::is_f64")]
    pub precision: Precision,
}

impl BasisSettings {
    pub fn new(metric: Metric, mode: Mode, keep: KeepRule, precision: Precision) -> Self {
        let (keep_dims, keep_variance_bits) = match keep {
            KeepRule::Dims(k) => (Some(k), None),
            KeepRule::Variance(f) => (None, Some(f.to_bits())),
        };
        BasisSettings {
            metric,
            mode,
            keep_dims,
            keep_variance_bits,
            precision,
        }
    }

    /// Core's options for this metric (the same call on driver and worker).
    pub fn compare_options(&self) -> CompareOptions {
        compare_options(self.metric, self.mode, self.keep()).with_precision(self.precision)
    }

    pub fn keep(&self) -> KeepRule {
        match (self.keep_dims, self.keep_variance_bits) {
            (Some(k), _) => KeepRule::Dims(k),
            (None, Some(bits)) => KeepRule::Variance(f64::from_bits(bits)),
            (None, None) => KeepRule::default(),
        }
    }

    /// A stable text of everything that changes the whitening, for cache keys.
    pub fn fingerprint(&self) -> String {
        let keep = match self.metric {
            Metric::Svcca => self.keep().describe(),
            _ => "all".to_string(),
        };
        let o = self.compare_options();
        // No precision here: mixed moments have their own content keys, which every key built
        // from this fingerprint also holds.
        format!(
            "{}|{}|{}|eps{:016x}",
            if self.metric == Metric::Svcca {
                "svcca"
            } else {
                "cca"
            },
            keep,
            self.mode.as_str(),
            o.epsilon.to_bits()
        )
    }
}

/// Core's comparison options for a metric under the job's keep rule and mode.
pub fn compare_options(metric: Metric, mode: Mode, keep: KeepRule) -> CompareOptions {
    let core_metric = match metric {
        Metric::Svcca => svcca_core::Metric::Svcca,
        Metric::Cca => svcca_core::Metric::Cca,
        Metric::Pwcca => svcca_core::Metric::Pwcca,
        Metric::Cka => svcca_core::Metric::Cka,
    };
    let core_mode = match mode {
        Mode::Default => svcca_core::Mode::Default,
        Mode::GoogleCompat => svcca_core::Mode::GoogleCompat,
    };
    let core_keep = match keep {
        KeepRule::Dims(k) => svcca_core::KeepRule::Dims(k),
        KeepRule::Variance(f) => svcca_core::KeepRule::VarianceFraction(f),
    };
    CompareOptions::default()
        .with_metric(core_metric)
        .with_mode(core_mode)
        .with_keep(core_keep)
}

/// One member of a pass-2 block: where its `Z` lives and its width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZRef {
    pub basis: String,
    pub dims: usize,
}

/// A stored whitening: the name its `Z` is stored under, where the whitening is, and the SHA-256
/// of its stored bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BasisRef {
    pub name: String,
    /// The whitening's cache key (`whitenings/<basis>.bin`).
    pub whitening: String,
    pub sha256: String,
}

/// One whitening a `whiten` task derives: the content-and-settings hash it is stored under
/// (`whitenings/<hash>.bin`) and the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhitenRef {
    pub hash: String,
    pub settings: BasisSettings,
}

/// What a `cross` task over all of a tile's rows needs to finish the tile's pairs on the worker,
/// so that their comparisons (one small SVD each) run in parallel on workers rather than one
/// after another on the coordinator, which holds its scheduler while it handles a result. The
/// records are those the driver would compute from the same `C` and the same stored whitenings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossCompare {
    /// Per member of `a`, then of `b`: the representation (for records) and its whitening.
    pub members: Vec<(RepresentationKey, BasisRef)>,
    /// Pairs as indices into `members`, in the order their records come back, metric by metric.
    pub pairs: Vec<(usize, usize, Vec<Metric>)>,
    pub mode: Mode,
    pub keep: KeepRule,
}

/// The records of a whitened tile's pairs from its summed cross product `c` (`members[..n_a]`
/// on the rows, the rest on the columns, or the same members on both for a diagonal tile;
/// `dims` their widths), in `compare.pairs` order, metric by metric. The driver and a worker
/// finishing a tile both call this, so a pair's record does not depend on where it was made.
pub fn tile_pair_records(
    c: MatRef<'_, f64>,
    (n_a, diagonal, dims): (usize, bool, &[usize]),
    whitenings: &[Arc<Whitening>],
    compare: &CrossCompare,
) -> Result<Vec<PairRecord>, ExecError> {
    let offsets = |members: std::ops::Range<usize>| {
        let mut off = 0;
        let mut at = vec![None; dims.len()];
        for m in members {
            at[m] = Some(off);
            off += dims[m];
        }
        at
    };
    let rows = offsets(0..n_a);
    let cols = if diagonal {
        rows.clone()
    } else {
        offsets(n_a..dims.len())
    };
    let mut records = Vec::new();
    for (x, y, metrics) in &compare.pairs {
        let (x, y) = (*x, *y);
        let (kx, ky) = (dims[x], dims[y]);
        // x's block of C on the rows and y's on the columns, or mirrored.
        let cross = match (rows[x], cols[y]) {
            (Some(r), Some(c0)) => c.submatrix(r, c0, kx, ky).to_owned(),
            _ => {
                let (Some(r), Some(c0)) = (rows[y], cols[x]) else {
                    return Err(ExecError::Invalid(format!(
                        "cross pair ({x}, {y}) is in neither orientation of its tile"
                    )));
                };
                c.submatrix(r, c0, ky, kx).transpose().to_owned()
            }
        };
        let (key_x, key_y) = (&compare.members[x].0, &compare.members[y].0);
        for &metric in metrics {
            let result = svcca_core::compare_whitened(
                Side::new(&whitenings[x]),
                Side::new(&whitenings[y]),
                cross.as_ref(),
                &compare_options(metric, compare.mode, compare.keep),
            )
            .map_err(|source| ExecError::Maths {
                what: format!(
                    "{} of {} and {}",
                    metric.as_str(),
                    key_x.label(),
                    key_y.label()
                ),
                source,
            })?;
            records.push(pair_record(
                key_x.clone(),
                key_y.clone(),
                metric.as_str(),
                &result,
            ));
        }
    }
    Ok(records)
}

/// One member of a raw (pwcca, cka) block: how to read its raw rows and its merged moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRef {
    pub key: RepresentationKey,
    /// The manifest's content checksum the driver planned with.
    pub checksum: String,
    pub content: String,
    pub cols: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum TaskPayload {
    Moments {
        dataset: String,
        /// The driver run this task belongs to (see `SweepExecutor::source`).
        run: String,
        cache: String,
        key: RepresentationKey,
        /// The manifest's content checksum the driver planned with.
        checksum: String,
        content: String,
        cols: usize,
        start: u64,
        end: u64,
        /// The rows are all the representation has: the part is its merged moments, stored as
        /// such (nothing to merge, read back or write again).
        #[serde(default)]
        whole: bool,
        #[serde(default, skip_serializing_if = "Precision::is_f64")]
        precision: Precision,
    },
    /// The whitenings of one representation, from its merged moments in the cache.
    Whiten {
        cache: String,
        /// For messages only: the representation the content was planned from.
        key: RepresentationKey,
        content: String,
        cols: usize,
        bases: Vec<WhitenRef>,
    },
    Project {
        dataset: String,
        run: String,
        cache: String,
        key: RepresentationKey,
        checksum: String,
        /// Every basis of this representation whose `Z` is missing for these rows (the driver
        /// has stored each one's whitening): the raw rows are read once for all of them.
        bases: Vec<BasisRef>,
        start: u64,
        end: u64,
    },
    Cross {
        cache: String,
        a: Vec<ZRef>,
        /// Empty for a diagonal tile (`B = A`).
        b: Vec<ZRef>,
        chunks: Vec<(u64, u64)>,
        /// Where a large result goes (`partials/<out>.bin`).
        out: String,
        /// Set when `chunks` are all of the tile's rows: the worker then compares the tile's
        /// pairs itself and returns their records instead of `C`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compare: Option<CrossCompare>,
    },
    /// One frequency block of a conv layer pair (dft), or the whole pair (fold, pool): the
    /// images are read in row chunks, both layers together.
    Conv {
        dataset: String,
        run: String,
        a: RepresentationKey,
        b: RepresentationKey,
        /// The manifest's content checksums of `a` and `b` the driver planned with.
        checksums: [String; 2],
        /// `[h, w, c]` of each side (NHWC).
        shapes: [[usize; 3]; 2],
        settings: ConvSettings,
        /// Representative locations of the block (dft only).
        locations: Vec<usize>,
        chunks: Vec<(u64, u64)>,
    },
    /// Metrics computed from the raw cross co-moment `M_xy`: cka, and pwcca (whose weights are
    /// too ill-conditioned to take from `Z`; see the module docs).
    Raw {
        dataset: String,
        run: String,
        cache: String,
        members: Vec<RawRef>,
        /// Pairs as indices into `members`, `(x, y)` in the order results are reported.
        pairs: Vec<(usize, usize)>,
        /// Computed for every pair; results come back pair by pair, metric by metric.
        metrics: Vec<Metric>,
        chunks: Vec<(u64, u64)>,
        /// Settings of the CCA whitening (pwcca), rebuilt on the worker from the moments.
        settings: BasisSettings,
    },
}

impl TaskPayload {
    pub fn kind(&self) -> &'static str {
        match self {
            TaskPayload::Moments { .. } => "moments",
            TaskPayload::Whiten { .. } => "whiten",
            TaskPayload::Project { .. } => "project",
            TaskPayload::Cross { .. } => "cross",
            TaskPayload::Raw { .. } => "raw",
            TaskPayload::Conv { .. } => "conv",
        }
    }

    pub fn to_task(&self, id: String) -> TaskSpec {
        // Plain data always serialises.
        let payload = serde_json::to_vec(self).expect("task payload serialises");
        TaskSpec {
            id,
            kind: self.kind().to_string(),
            payload,
        }
    }
}

/// A task's result: small ones inline, large ones by cache key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Blob {
    /// Nothing to return: the result is at a key the driver derives from the task.
    Stored,
    /// Bytes of a [`DenseMatrix`].
    Matrix(#[serde(with = "hex_bytes")] Vec<u8>),
    /// A [`DenseMatrix`] in the cache under this key.
    MatrixAt(String),
    /// Finished pair results (CKA).
    Pairs(Vec<PairRecord>),
    /// Per-frequency CCAs of one dft block.
    Frequencies(Vec<FrequencyResult>),
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

impl Blob {
    pub fn to_output(&self) -> TaskOutput {
        TaskOutput {
            payload: serde_json::to_vec(self).expect("task output serialises"),
        }
    }

    pub fn from_output(task_id: &str, output: &TaskOutput) -> Result<Blob, TaskFailure> {
        serde_json::from_slice(&output.payload).map_err(|e| TaskFailure::Fatal {
            task_id: task_id.to_string(),
            message: format!("task output is not understood by this svcca version: {e}"),
        })
    }
}

/// Worker-side settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Threads for one task's matrix products (1 = sequential). With several in-process workers
    /// on few cores, 1 avoids oversubscription.
    pub threads: usize,
    /// Whitenings memoised per worker.
    pub whitening_cache: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            threads: 1,
            whitening_cache: 64,
        }
    }
}

impl ExecutorConfig {
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }
}

/// Why a task failed, before classification.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{what}: {source}")]
    Maths {
        what: String,
        source: svcca_core::CoreError,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("a worker thread failed: {0}")]
    Join(String),
}

impl ExecError {
    /// The one place a failure is classified.
    pub fn classify(self, task_id: &str) -> TaskFailure {
        let retryable = match &self {
            ExecError::Source(e) => e.is_retryable(),
            ExecError::Cache(e) => e.is_retryable(),
            ExecError::Join(_) => true,
            ExecError::Maths { .. } | ExecError::Invalid(_) => false,
        };
        let message = self.to_string();
        if retryable {
            TaskFailure::Retryable {
                task_id: task_id.to_string(),
                message,
            }
        } else {
            TaskFailure::Fatal {
                task_id: task_id.to_string(),
                message,
            }
        }
    }
}

/// Datasets kept open per worker: a few concurrent jobs' worth.
const OPEN_SOURCES: usize = 8;

/// A dataset URL and the driver run it was opened for.
type SourceId = (String, String);

struct OpenedSource {
    source: Arc<dyn RowSource>,
    /// Content checksum of every representation in the manifest as opened.
    checksums: HashMap<RepresentationKey, String>,
}

struct Inner {
    opener: Arc<dyn SourceOpener>,
    config: ExecutorConfig,
    /// Datasets opened per (url, driver run), most recent last.
    sources: Mutex<VecDeque<(SourceId, Arc<OpenedSource>)>>,
    stores: Mutex<HashMap<String, Store>>,
    whitenings: Mutex<VecDeque<(String, Arc<Whitening>)>>,
}

/// The [`TaskExecutor`] of sweeps. Cheap to clone; safe to call concurrently.
#[derive(Clone)]
pub struct SweepExecutor {
    inner: Arc<Inner>,
}

impl SweepExecutor {
    pub fn new(opener: Arc<dyn SourceOpener>, config: ExecutorConfig) -> Self {
        SweepExecutor {
            inner: Arc::new(Inner {
                opener,
                config,
                sources: Mutex::new(VecDeque::new()),
                stores: Mutex::new(HashMap::new()),
                whitenings: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Runs one task payload (what [`TaskExecutor::execute`] does after decoding).
    pub async fn run(&self, payload: TaskPayload) -> Result<Blob, ExecError> {
        match payload {
            TaskPayload::Moments {
                dataset,
                run,
                cache,
                key,
                checksum,
                content,
                cols,
                start,
                end,
                whole,
                precision,
            } => {
                let rows = self
                    .source(&dataset, &run, &[(&key, &checksum)])
                    .await?
                    .read_rows(&key, start, end)
                    .await?;
                check_rows(&key, &rows, cols, start, end)?;
                let label = key.label();
                let parts = blocking(move || {
                    let mut acc = MomentAccumulator::with_precision(cols, precision);
                    let pieces = rows.pieces().map_err(|source| ExecError::Maths {
                        what: label.clone(),
                        source,
                    })?;
                    let block = RowBlock::stacked(&pieces, rows.cols).map_err(|source| {
                        ExecError::Maths {
                            what: label.clone(),
                            source,
                        }
                    })?;
                    acc.push(block).map_err(|source| ExecError::Maths {
                        what: format!("{label}, datapoints {start}..{end}"),
                        source,
                    })?;
                    Ok(cache::encode_moments(&acc.to_parts()))
                })
                .await?;
                let key = if whole {
                    keys::moments_all(&content)
                } else {
                    keys::moments_part(&content, start, end)
                };
                self.store(&cache)?.put(&key, parts).await?;
                Ok(Blob::Stored)
            }
            TaskPayload::Whiten {
                cache,
                key,
                content,
                cols,
                bases,
            } => self.run_whiten(cache, key, content, cols, bases).await,
            TaskPayload::Project {
                dataset,
                run,
                cache,
                key,
                checksum,
                bases,
                start,
                end,
            } => {
                let store = self.store(&cache)?;
                let mut whitenings = Vec::with_capacity(bases.len());
                for basis in &bases {
                    whitenings.push(self.whitening(&store, basis, &key).await?);
                }
                let rows = Arc::new(
                    self.source(&dataset, &run, &[(&key, &checksum)])
                        .await?
                        .read_rows(&key, start, end)
                        .await?,
                );
                for (basis, whitening) in bases.iter().zip(whitenings) {
                    check_rows(&key, &rows, whitening.input_dim(), start, end)?;
                    let label = key.label();
                    let rows = rows.clone();
                    let bytes = blocking(move || {
                        let maths = |source| ExecError::Maths {
                            what: label.clone(),
                            source,
                        };
                        let pieces = rows.pieces().map_err(maths)?;
                        let block = RowBlock::stacked(&pieces, rows.cols).map_err(maths)?;
                        let z =
                            whitening
                                .whiten_rows(block)
                                .map_err(|source| ExecError::Maths {
                                    what: format!("whitening {label}, datapoints {start}..{end}"),
                                    source,
                                })?;
                        Ok(cache::encode_matrix(z.as_ref()))
                    })
                    .await?;
                    store
                        .put(&keys::z_chunk(&basis.name, start, end), bytes)
                        .await?;
                }
                Ok(Blob::Stored)
            }
            TaskPayload::Cross {
                cache,
                a,
                b,
                chunks,
                out,
                compare,
            } => {
                let store = self.store(&cache)?;
                let diagonal = b.is_empty();
                let dims_a: usize = a.iter().map(|z| z.dims).sum();
                let dims_b: usize = if diagonal {
                    dims_a
                } else {
                    b.iter().map(|z| z.dims).sum()
                };
                let mut acc = DenseMatrix::zeros(dims_a, dims_b);
                let threads = self.product_threads();
                let (a, b) = (Arc::new(a), Arc::new(b));
                for &(start, end) in &chunks {
                    let rows = (end - start) as usize;
                    let za = load_side(&store, &a, start, end, rows).await?;
                    let zb = if diagonal {
                        Vec::new()
                    } else {
                        load_side(&store, &b, start, end, rows).await?
                    };
                    let (a, b) = (a.clone(), b.clone());
                    acc = blocking(move || {
                        let am = pair_products::stacked(a.iter().map(|z| (&*z.basis, z.dims)));
                        let bm = pair_products::stacked(b.iter().map(|z| (&*z.basis, z.dims)));
                        let xa: Vec<MatRef<'_, f64>> = za.iter().map(StoredMatrix::view).collect();
                        let xb: Vec<MatRef<'_, f64>> = zb.iter().map(StoredMatrix::view).collect();
                        let y = (!diagonal).then_some((&xb[..], &bm[..]));
                        pair_products::add_cross_members(acc.view_mut(), (&xa, &am), y, threads);
                        Ok(acc)
                    })
                    .await?;
                }
                if let Some(compare) = compare {
                    let n_a = a.len();
                    let dims: Vec<usize> = a.iter().chain(b.iter()).map(|z| z.dims).collect();
                    return self
                        .compare_tile(&store, (n_a, diagonal, dims), acc, compare)
                        .await
                        .map(Blob::Pairs);
                }
                let bytes = acc.encode();
                if bytes.len() <= INLINE_LIMIT {
                    Ok(Blob::Matrix(bytes))
                } else {
                    let key = keys::partial(&out);
                    store.put(&key, bytes).await?;
                    Ok(Blob::MatrixAt(key))
                }
            }
            TaskPayload::Raw {
                dataset,
                run,
                cache,
                members,
                pairs,
                metrics,
                chunks,
                settings,
            } => {
                self.run_raw(
                    (dataset, run),
                    cache,
                    members,
                    (pairs, metrics),
                    chunks,
                    settings,
                )
                .await
            }
            TaskPayload::Conv {
                dataset,
                run,
                a,
                b,
                checksums,
                shapes,
                settings,
                locations,
                chunks,
            } => {
                let source = self
                    .source(&dataset, &run, &[(&a, &checksums[0]), (&b, &checksums[1])])
                    .await?;
                self.run_conv(source, [a, b], shapes, settings, locations, chunks)
                    .await
            }
        }
    }

    /// The records of a tile's pairs from its whole cross product `acc`, with the members'
    /// stored whitenings (checked against their SHA-256, so each keeps the `k` the job planned).
    async fn compare_tile(
        &self,
        store: &Store,
        (n_a, diagonal, dims): (usize, bool, Vec<usize>),
        acc: DenseMatrix,
        compare: CrossCompare,
    ) -> Result<Vec<PairRecord>, ExecError> {
        let mut whitenings = Vec::with_capacity(compare.members.len());
        for (key, basis) in &compare.members {
            whitenings.push(self.whitening(store, basis, key).await?);
        }
        blocking(move || {
            tile_pair_records(acc.view(), (n_a, diagonal, &dims), &whitenings, &compare)
        })
        .await
    }

    /// Whitens one representation for each basis, with the very call the driver used to make
    /// (`Whitening::from_moments` on the merged moments as stored), so the numbers do not depend
    /// on where it runs. Its products use this worker's threads (their bits do not depend on the
    /// count); the eigendecomposition itself runs on one thread, since faer's parallel one rounds
    /// differently (see svcca-core's `decompose`).
    async fn run_whiten(
        &self,
        cache: String,
        key: RepresentationKey,
        content: String,
        cols: usize,
        bases: Vec<WhitenRef>,
    ) -> Result<Blob, ExecError> {
        let store = self.store(&cache)?;
        let moments = Arc::new(load_moments(&store, &content).await?);
        if moments.dim() != cols {
            return Err(ExecError::Invalid(format!(
                "merged moments of {} have {} columns, the job planned {cols}; delete the cache \
                 and rerun",
                key.label(),
                moments.dim()
            )));
        }
        for basis in bases {
            let m = moments.clone();
            let label = key.label();
            let opts = basis.settings.compare_options().whiten_options();
            let stored = keys::whitened(&basis.hash);
            let at = stored.clone();
            let (encoded, whitening) = blocking(move || {
                let what = || format!("whitening {label}");
                let w = Whitening::from_moments(&m, &opts).map_err(|source| ExecError::Maths {
                    what: what(),
                    source,
                })?;
                let encoded = cache::encode_whitening(&w.to_parts());
                // What a projection would read back, so a memo hit computes with the same matrix.
                let rebuilt = Whitening::from_parts(cache::decode_whitening(&at, &encoded)?)
                    .map_err(|source| ExecError::Maths {
                        what: what(),
                        source,
                    })?;
                Ok((encoded, rebuilt))
            })
            .await?;
            let digest = cache::sha256_hex(&encoded);
            store.put(&stored, encoded).await?;
            // Projections of this representation often land on this worker next.
            self.remember_whitening(digest, Arc::new(whitening));
        }
        Ok(Blob::Stored)
    }

    async fn run_raw(
        &self,
        (dataset, run): (String, String),
        cache: String,
        members: Vec<RawRef>,
        (pairs, metrics): (Vec<(usize, usize)>, Vec<Metric>),
        chunks: Vec<(u64, u64)>,
        settings: BasisSettings,
    ) -> Result<Blob, ExecError> {
        let store = self.store(&cache)?;
        let expect: Vec<(&RepresentationKey, &String)> =
            members.iter().map(|m| (&m.key, &m.checksum)).collect();
        let source = self.source(&dataset, &run, &expect).await?;
        // All are held at once anyway: read them side by side.
        let loads: Vec<_> = members
            .iter()
            .map(|m| load_moments(&store, &m.content))
            .collect();
        let moments: Vec<Arc<MomentAccumulator>> = futures::stream::iter(loads)
            .buffered(cache::REQUESTS_IN_FLIGHT)
            .map_ok(Arc::new)
            .try_collect()
            .await?;
        let mode = settings.mode;
        let offsets: Vec<usize> = members
            .iter()
            .scan(0usize, |acc, m| {
                let o = *acc;
                *acc += m.cols;
                Some(o)
            })
            .collect();
        let total: usize = members.iter().map(|m| m.cols).sum();
        let mut acc = DenseMatrix::zeros(total, total);
        let threads = self.product_threads();
        let names: Arc<Vec<(String, usize)>> = Arc::new(
            members
                .iter()
                .map(|m| (m.content.clone(), m.cols))
                .collect(),
        );
        for &(start, end) in &chunks {
            let rows = (end - start) as usize;
            let mut scratch = vec![0.0f64; rows * total];
            for (idx, m) in members.iter().enumerate() {
                let rows_read = source.read_rows(&m.key, start, end).await?;
                check_rows(&m.key, &rows_read, m.cols, start, end)?;
                let data = rows_read.data.contiguous();
                let mean = moments[idx].mean();
                let base = offsets[idx] * rows;
                // Centre on the global mean while transposing into the column-major scratch.
                for r in 0..rows {
                    let row = &data[r * m.cols..(r + 1) * m.cols];
                    for (c, (&v, &mu)) in row.iter().zip(mean).enumerate() {
                        scratch[base + c * rows + r] = v as f64 - mu;
                    }
                }
            }
            let names = names.clone();
            acc = blocking(move || {
                let s = MatRef::from_column_major_slice(&scratch, rows, total);
                let m = pair_products::stacked(names.iter().map(|(n, d)| (n.as_str(), *d)));
                pair_products::add_cross(acc.view_mut(), s, &m, None, threads);
                Ok(acc)
            })
            .await?;
        }
        let results = blocking(move || {
            let full = acc.view();
            // PWCCA whitens each member from its own block of this same product, so that
            // `M_xx`, `M_yy` and `M_xy` come from one accumulation, as in compare_moments (its
            // weights are that sensitive; see the module docs).
            let mut tile_moments = Vec::new();
            let mut whitenings = Vec::new();
            if metrics.contains(&Metric::Pwcca) {
                let wopts = settings.compare_options().whiten_options();
                for (idx, m) in members.iter().enumerate() {
                    let (o, d) = (offsets[idx], m.cols);
                    let mut comoment = vec![0.0; d * d];
                    for i in 0..d {
                        for j in 0..=i {
                            let v = full[(o + i, o + j)];
                            comoment[i * d + j] = v;
                            comoment[j * d + i] = v;
                        }
                    }
                    let parts = svcca_core::MomentParts {
                        n: moments[idx].n(),
                        mean: moments[idx].mean().to_vec(),
                        comoment,
                    };
                    let what = || format!("moments of {} in a raw tile", m.key.label());
                    let tm = MomentAccumulator::from_parts(parts).map_err(|source| {
                        ExecError::Maths {
                            what: what(),
                            source,
                        }
                    })?;
                    let w = Whitening::from_moments(&tm, &wopts).map_err(|source| {
                        ExecError::Maths {
                            what: what(),
                            source,
                        }
                    })?;
                    tile_moments.push(tm);
                    whitenings.push(w);
                }
            }
            let mut out = Vec::with_capacity(pairs.len() * metrics.len());
            for &(x, y) in &pairs {
                let (ox, oy) = (offsets[x], offsets[y]);
                let (cx, cy) = (members[x].cols, members[y].cols);
                let mxy = full.submatrix(ox, oy, cx, cy).to_owned();
                for &metric in &metrics {
                    let opts = compare_options(metric, mode, settings.keep());
                    let what = || {
                        format!(
                            "{} of {} and {}",
                            metric.as_str(),
                            members[x].key.label(),
                            members[y].key.label()
                        )
                    };
                    let c = if metric == Metric::Cka {
                        svcca_core::compare_cka(&moments[x], &moments[y], mxy.as_ref(), &opts)
                    } else {
                        // Exactly compare_moments' path: Wₓᵀ M_xy W_y from the raw co-moment.
                        let (wx, wy) = (&whitenings[x], &whitenings[y]);
                        wx.whitened_cross(wy, mxy.as_ref()).and_then(|cross| {
                            svcca_core::compare_whitened(
                                Side::with_moments(wx, &tile_moments[x]),
                                Side::with_moments(wy, &tile_moments[y]),
                                cross.as_ref(),
                                &opts,
                            )
                        })
                    }
                    .map_err(|source| ExecError::Maths {
                        what: what(),
                        source,
                    })?;
                    out.push(pair_record(
                        members[x].key.clone(),
                        members[y].key.clone(),
                        metric.as_str(),
                        &c,
                    ));
                }
            }
            Ok(out)
        })
        .await?;
        Ok(Blob::Pairs(results))
    }

    async fn run_conv(
        &self,
        source: Arc<dyn RowSource>,
        [a, b]: [RepresentationKey; 2],
        shapes: [[usize; 3]; 2],
        settings: ConvSettings,
        locations: Vec<usize>,
        chunks: Vec<(u64, u64)>,
    ) -> Result<Blob, ExecError> {
        let options = settings.options();
        let conv_err =
            |what: String| move |e: ConvError| ExecError::Invalid(format!("{what}: {e}"));
        let what = format!(
            "{} of {} and {}",
            settings.metric.as_str(),
            a.label(),
            b.label()
        );
        let plan = ConvPlan::new(spatial(shapes[0]), spatial(shapes[1]), &options)
            .map_err(conv_err(what.clone()))?;
        let mut acc = if settings.method == ConvMethod::Dft {
            ConvMomentAccumulator::for_locations(&plan, &locations)
                .map_err(conv_err(what.clone()))?
        } else {
            ConvMomentAccumulator::new(&plan)
        };
        for &(start, end) in &chunks {
            let x = source.read_rows(&a, start, end).await?;
            let y = source.read_rows(&b, start, end).await?;
            let rows = (end - start) as usize;
            let (sa, sb) = (shapes[0], shapes[1]);
            check_rows(&a, &x, sa.iter().product(), start, end)?;
            check_rows(&b, &y, sb.iter().product(), start, end)?;
            let what = what.clone();
            acc = blocking(move || {
                let (xv, yv) = (x.data.contiguous(), y.data.contiguous());
                let xi = ConvInput::f32(&xv, &[rows, sa[0], sa[1], sa[2]], Layout::Nhwc)
                    .map_err(conv_err(what.clone()))?;
                let yi = ConvInput::f32(&yv, &[rows, sb[0], sb[1], sb[2]], Layout::Nhwc)
                    .map_err(conv_err(what.clone()))?;
                acc.push(xi, yi).map_err(conv_err(what))?;
                Ok(acc)
            })
            .await?;
        }
        blocking(move || {
            if settings.method == ConvMethod::Dft {
                let results = acc
                    .frequency_results(&locations, &options)
                    .map_err(conv_err(what))?;
                Ok(Blob::Frequencies(results))
            } else {
                let c = acc.compare(&options).map_err(conv_err(what))?;
                Ok(Blob::Pairs(vec![conv_record(
                    a,
                    b,
                    settings.metric.as_str(),
                    &c,
                )]))
            }
        })
        .await
    }

    /// Threads for one task's products (see `svcca_core::products`; never 0, which would mean
    /// the whole pool).
    fn product_threads(&self) -> usize {
        self.inner.config.threads.max(1)
    }

    /// The dataset at `url` as opened for driver run `run`, after checking that each of
    /// `expect`'s representations has the content checksum the driver planned with.
    ///
    /// A dataset is opened once per run, not once per worker: its manifest and its record of
    /// shards already hashed belong to one run, so a long-lived worker never reads a re-ingested
    /// dataset through an old manifest, nor skips hashing a shard replaced since an earlier job.
    async fn source(
        &self,
        url: &str,
        run: &str,
        expect: &[(&RepresentationKey, &String)],
    ) -> Result<Arc<dyn RowSource>, ExecError> {
        let id = (url.to_string(), run.to_string());
        let found = self
            .inner
            .sources
            .lock()
            .expect("source map")
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, s)| s.clone());
        let opened = match found {
            Some(s) => s,
            None => {
                let source = self.inner.opener.open(url.to_string()).await?;
                let checksums = source
                    .list()
                    .await?
                    .into_iter()
                    .map(|r| (r.key, r.checksum))
                    .collect();
                let opened = Arc::new(OpenedSource { source, checksums });
                let mut sources = self.inner.sources.lock().expect("source map");
                sources.push_back((id, opened.clone()));
                while sources.len() > OPEN_SOURCES {
                    sources.pop_front();
                }
                opened
            }
        };
        for (key, planned) in expect {
            let now = opened.checksums.get(*key);
            if now != Some(*planned) {
                return Err(ExecError::Invalid(format!(
                    "dataset `{url}` changed while the job ran: {} {}; run the job again",
                    key.label(),
                    match now {
                        Some(_) => "now has other content than the job was planned with",
                        None => "is no longer in its manifest",
                    }
                )));
            }
        }
        Ok(opened.source.clone())
    }

    fn store(&self, url: &str) -> Result<Store, ExecError> {
        let mut stores = self.inner.stores.lock().expect("store map");
        if let Some(s) = stores.get(url) {
            return Ok(s.clone());
        }
        let store = Store::open(url)?;
        stores.insert(url.to_string(), store.clone());
        Ok(store)
    }

    /// The whitening a `whiten` task stored for `basis`, memoised per worker by the SHA-256 of its
    /// stored bytes: a memo entry is the very whitening the driver checked, whichever job, cache
    /// or row split it came from.
    async fn whitening(
        &self,
        store: &Store,
        basis: &BasisRef,
        key: &RepresentationKey,
    ) -> Result<Arc<Whitening>, ExecError> {
        if let Some((_, w)) = self
            .inner
            .whitenings
            .lock()
            .expect("whitening memo")
            .iter()
            .find(|(digest, _)| *digest == basis.sha256)
        {
            return Ok(w.clone());
        }
        let stored = &basis.whitening;
        let bytes = store.get(stored).await?.ok_or_else(|| {
            ExecError::Invalid(format!(
                "whitening `{stored}` is missing from the cache; rerun the job"
            ))
        })?;
        let actual = cache::sha256_hex(&bytes);
        if actual != basis.sha256 {
            return Err(ExecError::Invalid(format!(
                "whitening `{stored}` in the cache has SHA-256 {actual}, not the {} the job stored \
                 (another job is writing the same cache?); rerun the job",
                basis.sha256
            )));
        }
        let w =
            Whitening::from_parts(cache::decode_whitening(stored, &bytes)?).map_err(|source| {
                ExecError::Maths {
                    what: format!("whitening {}", key.label()),
                    source,
                }
            })?;
        let w = Arc::new(w);
        self.remember_whitening(basis.sha256.clone(), w.clone());
        Ok(w)
    }

    /// Memoises a whitening by the SHA-256 of its stored bytes.
    fn remember_whitening(&self, sha256: String, w: Arc<Whitening>) {
        let mut memo = self.inner.whitenings.lock().expect("whitening memo");
        if memo.iter().any(|(digest, _)| *digest == sha256) {
            return;
        }
        memo.push_back((sha256, w));
        while memo.len() > self.inner.config.whitening_cache.max(1) {
            memo.pop_front();
        }
    }
}

impl TaskExecutor for SweepExecutor {
    fn execute(&self, task: TaskSpec) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        let this = self.clone();
        Box::pin(async move {
            let payload: TaskPayload =
                serde_json::from_slice(&task.payload).map_err(|e| TaskFailure::Fatal {
                    task_id: task.id.clone(),
                    message: format!("task payload is not understood by this svcca version: {e}"),
                })?;
            match this.run(payload).await {
                Ok(blob) => Ok(blob.to_output()),
                Err(e) => Err(e.classify(&task.id)),
            }
        })
    }
}

/// Runs CPU-bound work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExecError> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Join(e.to_string()))?
}

fn check_rows(
    key: &RepresentationKey,
    rows: &crate::source::Rows,
    cols: usize,
    start: u64,
    end: u64,
) -> Result<(), ExecError> {
    if rows.cols != cols
        || rows.rows as u64 != end - start
        || rows.data.len() != rows.rows * rows.cols
    {
        return Err(ExecError::Invalid(format!(
            "{}: asked for datapoints {start}..{end} of {cols} values each, the dataset returned {} rows of {} ({} values); the manifest and the shards disagree",
            key.label(),
            rows.rows,
            rows.cols,
            rows.data.len()
        )));
    }
    Ok(())
}

/// The merged moments of a representation, from the cache.
pub async fn load_moments(store: &Store, content: &str) -> Result<MomentAccumulator, ExecError> {
    let key = keys::moments_all(content);
    let bytes = store.get(&key).await?.ok_or_else(|| {
        ExecError::Invalid(format!(
            "merged moments `{key}` are missing from the cache; rerun the job"
        ))
    })?;
    let parts = cache::decode_moments(&key, &bytes)?;
    MomentAccumulator::from_parts(parts).map_err(|source| ExecError::Maths { what: key, source })
}

/// One row chunk of several members' `Z`, each as stored (`rows × dims`, column-major).
async fn load_side(
    store: &Store,
    side: &[ZRef],
    start: u64,
    end: u64,
    rows: usize,
) -> Result<Vec<StoredMatrix>, ExecError> {
    // Every member's chunk is held at once anyway: read them side by side.
    let loads: Vec<_> = side
        .iter()
        .map(|z| async move {
            let key = keys::z_chunk(&z.basis, start, end);
            let bytes = store.get(&key).await?.ok_or_else(|| {
                ExecError::Invalid(format!(
                    "whitened rows `{key}` are missing from the cache; rerun the job"
                ))
            })?;
            let m = StoredMatrix::decode(&key, bytes)?;
            if m.rows != rows || m.cols != z.dims {
                return Err(ExecError::Invalid(format!(
                    "`{key}` holds {}x{} values, expected {rows}x{}; delete the cache and rerun",
                    m.rows, m.cols, z.dims
                )));
            }
            Ok(m)
        })
        .collect();
    futures::stream::iter(loads)
        .buffered(cache::REQUESTS_IN_FLIGHT)
        .try_collect()
        .await
}

/// A core comparison as a stored pair record.
pub fn pair_record(
    a: RepresentationKey,
    b: RepresentationKey,
    metric: &str,
    c: &svcca_core::Comparison,
) -> PairRecord {
    let mut warnings = c.warnings.clone();
    // Only the sides that lost neurons are named: a report lists every representation a warning
    // names as concerned by it.
    let dropped: Vec<String> = [(&c.dropped_x, &a), (&c.dropped_y, &b)]
        .into_iter()
        .filter(|(d, _)| !d.is_empty())
        .map(|(d, k)| format!("{} from {}", d.len(), k.label()))
        .collect();
    if !dropped.is_empty() {
        warnings.push(format!(
            "near-constant neurons dropped: {}",
            dropped.join(", ")
        ));
    }
    PairRecord {
        a,
        b,
        metric: metric.to_string(),
        mean: c.mean,
        google_mean: c.google_mean,
        equal_k_mean: c.equal_k_mean,
        dims_a: c.dims_x,
        dims_b: c.dims_y,
        coefficients: c.coefficients.clone(),
        weights: c.weights.clone(),
        frequencies: None,
        conv: None,
        warnings,
    }
}

/// The settings of a conv pair comparison, exactly as driver and worker use them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConvSettings {
    /// `svcca` (keep rule per frequency) or `cca`.
    pub metric: Metric,
    pub method: ConvMethod,
    pub mode: Mode,
    pub keep_dims: Option<usize>,
    pub keep_variance_bits: Option<u64>,
}

impl ConvSettings {
    pub fn new(metric: Metric, method: ConvMethod, mode: Mode, keep: KeepRule) -> Self {
        // Conv comparisons run their own f64 products whatever the job's precision.
        let b = BasisSettings::new(metric, mode, keep, Precision::F64);
        ConvSettings {
            metric,
            method,
            mode,
            keep_dims: b.keep_dims,
            keep_variance_bits: b.keep_variance_bits,
        }
    }

    /// Core's conv options (the keep rule applies to svcca only, as for dense layers).
    pub fn options(&self) -> ConvOptions {
        let b = BasisSettings {
            metric: self.metric,
            mode: self.mode,
            keep_dims: self.keep_dims,
            keep_variance_bits: self.keep_variance_bits,
            precision: Precision::F64,
        };
        let base = b.compare_options();
        let method = match self.method {
            ConvMethod::Dft => svcca_core::conv::ConvMethod::Dft,
            ConvMethod::Fold => svcca_core::conv::ConvMethod::Fold,
            ConvMethod::Pool => svcca_core::conv::ConvMethod::Pool,
        };
        ConvOptions::default()
            .with_method(method)
            .with_mode(base.mode)
            .with_keep(base.whiten_options().keep)
    }
}

pub fn spatial(s: [usize; 3]) -> SpatialShape {
    SpatialShape::new(s[0], s[1], s[2])
}

/// A core conv comparison as a stored pair record (per-frequency results included for dft).
pub fn conv_record(
    a: RepresentationKey,
    b: RepresentationKey,
    metric: &str,
    c: &ConvComparison,
) -> PairRecord {
    let frequencies = (!c.frequencies.is_empty()).then(|| {
        c.frequencies
            .iter()
            .map(|f| FrequencyRecord {
                i: f.i,
                j: f.j,
                coefficients: f.coefficients.clone(),
                mean: f.mean,
                dims_a: Some(f.x_dims),
                dims_b: Some(f.y_dims),
            })
            .collect()
    });
    // fold's one CCA has a datapoint per image and position of the common (cropped) grid;
    // dft's and pool's, one per image.
    let datapoints = match c.method {
        svcca_core::conv::ConvMethod::Fold => {
            let positions =
                c.x_shape.height.min(c.y_shape.height) * c.x_shape.width.min(c.y_shape.width);
            c.images * positions as u64
        }
        _ => c.images,
    };
    PairRecord {
        a,
        b,
        metric: metric.to_string(),
        mean: c.mean,
        google_mean: Some(c.google_mean),
        // Each frequency (or the one folded/pooled CCA) keeps its own k per side: no single
        // equal-k cut exists for the pair.
        equal_k_mean: None,
        dims_a: c.x_dims,
        dims_b: c.y_dims,
        coefficients: c.coefficients.clone(),
        weights: None,
        frequencies,
        conv: Some(ConvRecord {
            method: c.method.name().to_string(),
            datapoints,
            grid: c.grid,
        }),
        warnings: c.warnings.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svcca_core::JointMoments;

    fn key(layer: &str) -> RepresentationKey {
        RepresentationKey {
            run: "mlp".into(),
            seed: Some(0),
            step: Some(0),
            layer: layer.into(),
            tags: Default::default(),
        }
    }

    /// 30 datapoints of 12 neurons (the last constant) against 3: fewer than 5 per dimension.
    fn compared(metric: svcca_core::Metric) -> svcca_core::Comparison {
        let x: Vec<f64> = (0..30 * 12)
            .map(|i| {
                if i % 12 == 11 {
                    1.0
                } else {
                    ((i * 7919) % 101) as f64
                }
            })
            .collect();
        let y: Vec<f64> = (0..30 * 3).map(|i| ((i * 104729) % 97) as f64).collect();
        let mut joint = JointMoments::new(12, 3);
        joint
            .push(
                RowBlock::f64(&x, 30, 12).unwrap(),
                RowBlock::f64(&y, 30, 3).unwrap(),
            )
            .unwrap();
        svcca_core::compare_moments(&joint, &CompareOptions::default().with_metric(metric)).unwrap()
    }

    #[test]
    fn a_pair_names_only_the_sides_that_lost_neurons() {
        let c = compared(svcca_core::Metric::Cca);
        assert_eq!((c.dropped_x.len(), c.dropped_y.len()), (1, 0));
        let r = pair_record(key("h1"), key("h2"), "cca", &c);
        let dropped: Vec<&String> = r
            .warnings
            .iter()
            .filter(|w| w.starts_with("near-constant neurons dropped"))
            .collect();
        assert_eq!(dropped.len(), 1, "{:?}", r.warnings);
        assert!(dropped[0].contains(&format!("1 from {}", key("h1").label())));
        assert!(!dropped[0].contains(&key("h2").label()), "{dropped:?}");
    }

    #[test]
    fn only_cca_family_records_say_canonical_correlations_are_biased() {
        let cca = pair_record(
            key("h1"),
            key("h2"),
            "cca",
            &compared(svcca_core::Metric::Cca),
        );
        assert!(
            cca.warnings.iter().any(|w| w.contains("biased upwards")),
            "{:?}",
            cca.warnings
        );
        let cka = pair_record(
            key("h1"),
            key("h2"),
            "cka",
            &compared(svcca_core::Metric::Cka),
        );
        assert!(
            cka.warnings.iter().any(|w| w.contains("linear CKA")),
            "{:?}",
            cka.warnings
        );
        assert!(
            !cka.warnings
                .iter()
                .any(|w| w.contains("canonical correlations")),
            "{:?}",
            cka.warnings
        );
    }
}
