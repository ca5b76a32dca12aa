//! svcca-compare: one comparison of two representations, streamed block by block.
//!
//! This is the code path behind `svcca compare` and the Python package's `svcca.compare`, so the
//! two give the same numbers bit for bit: both hand their inputs to [`compare`] as
//! [`BlockSource`]s (files and dataset selectors in the CLI, NumPy arrays in Python), which reads
//! aligned blocks of `block_rows` datapoints from each side into svcca-core's exactly mergeable
//! moments and compares them. [`to_json`] is the `--json` record of a result.
//!
//! SVCCA reads both inputs twice, as the sweep does: each side's moments and whitening first,
//! then each side projected on its kept directions, whose small cross product is all the
//! comparison needs (never the full `d_x × d_y` cross co-moment). Every other metric reads them
//! once into the joint moments of `[x | y]`. Reading the next blocks overlaps the products on
//! the current ones.
//!
//! Memory is bounded by the statistics and two blocks per side (the one being read and the one
//! being multiplied): a comparison is estimated from the shapes before anything is read and
//! refused when over [`CompareConfig::memory_mb`].
//!
//! It does not open files or parse arguments (the front-ends do) and has no maths of its own
//! (svcca-core does). Errors are a typed [`CompareError`] whose messages name the inputs and the
//! caller's own options ([`OptionNames`]).

use std::borrow::Cow;

use serde_json::json;
use svcca_core::conv::{
    ConvComparison, ConvError, ConvMethod, ConvMomentAccumulator, ConvOptions, ConvPlan, Layout,
};
use svcca_core::faer::{Accum, Mat};
use svcca_core::{
    CompareOptions, Comparison, CoreError, JointMoments, KeepRule, Metric, Mode, MomentAccumulator,
    Precision, RowBlock, Side, Whitening, compare_whitened, products,
};

/// A block of consecutive datapoints, row-major, in the source's own precision: borrowed when
/// the source already holds the rows contiguously (an in-memory array), owned when it read or
/// gathered them.
pub enum Block<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
}

impl Block<'_> {
    /// Values in the block (rows × values per datapoint).
    pub fn len(&self) -> usize {
        match self {
            Block::F32(v) => v.len(),
            Block::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block with its own copy of the values (moved when it already owns them).
    pub fn into_owned(self) -> Block<'static> {
        match self {
            Block::F32(v) => Block::F32(Cow::Owned(v.into_owned())),
            Block::F64(v) => Block::F64(Cow::Owned(v.into_owned())),
        }
    }

    fn as_core(&self, rows: usize, cols: usize) -> Result<svcca_core::RowBlock<'_>, CoreError> {
        match self {
            Block::F32(v) => svcca_core::RowBlock::f32(v, rows, cols),
            Block::F64(v) => svcca_core::RowBlock::f64(v, rows, cols),
        }
    }

    fn as_conv<'b>(
        &'b self,
        shape: &[usize],
        layout: Layout,
    ) -> Result<svcca_core::conv::ConvInput<'b>, ConvError> {
        match self {
            Block::F32(v) => svcca_core::conv::ConvInput::f32(v, shape, layout),
            Block::F64(v) => svcca_core::conv::ConvInput::f64(v, shape, layout),
        }
    }
}

/// A representation read as blocks of datapoints.
pub trait BlockSource {
    /// What the user called it, for messages.
    fn name(&self) -> &str;
    /// Datapoints first (`[n, d]`, or `[n, h, w, c]` / `[n, c, h, w]` as stored); never empty.
    fn shape(&self) -> &[usize];
    /// Exactly the next `rows` datapoints (fewer only at the end; `None` when exhausted), so two
    /// sources whose native blocks differ stay aligned datapoint by datapoint.
    fn next_block(&mut self, rows: usize) -> Result<Option<Block<'_>>, CompareError>;
    /// Starts over at the first datapoint: SVCCA reads both sides twice (moments, then each
    /// side projected on its kept directions).
    fn rewind(&mut self) -> Result<(), CompareError>;

    fn datapoints(&self) -> usize {
        self.shape()[0]
    }

    /// Values per datapoint. Only used once the memory bound has been checked against the
    /// shape, which a claim too large to multiply out cannot pass.
    fn row_len(&self) -> usize {
        self.shape()[1..]
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }
}

/// How a front-end spells the options that messages suggest, so that advice names what the
/// user can actually type.
#[derive(Debug, Clone, Copy)]
pub struct OptionNames {
    pub metric: &'static str,
    /// Choosing a conv method for 4-D inputs.
    pub conv: &'static str,
    pub memory: &'static str,
    pub block_rows: &'static str,
    /// Asking for mixed precision.
    pub mixed: &'static str,
}

impl OptionNames {
    pub const CLI: OptionNames = OptionNames {
        metric: "--metric",
        conv: "--conv dft|fold|pool",
        memory: "--memory-mb",
        block_rows: "--block-rows",
        mixed: "--precision mixed",
    };
}

/// What to compute, as plain data: the CLI's flags and the Python keyword arguments both
/// convert into this.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub metric: Metric,
    pub mode: Mode,
    /// SVCCA's reduction; conv CCA ignores it and keeps every direction.
    pub keep: KeepRule,
    /// Relative variance cutoff; `None` is the metric's and mode's default.
    pub epsilon: Option<f64>,
    /// Fraction of the coefficient sum that google's truncated mean covers.
    pub threshold: f64,
    /// 4-D conv inputs: the method and how the stored axes are ordered. `None` for dense.
    pub conv: Option<(ConvMethod, Layout)>,
    pub allow_trivial: bool,
    /// Datapoints read per block, at most (wide layers and conv images read fewer: see
    /// `dense_block_rows` and `conv_block_images`); results are bitwise reproducible for a
    /// given value.
    pub block_rows: usize,
    /// Memory the comparison may use, MiB.
    pub memory_mb: u64,
    /// The moments' products: f64, or mixed (f32 per block; dense layers only).
    pub precision: Precision,
    /// Keep the joint moments of `[x | y]` in the outcome (to export SVCCA directions from
    /// them). Otherwise SVCCA reads both inputs twice and never forms the cross co-moment.
    pub joint_moments: bool,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            metric: Metric::Svcca,
            mode: Mode::Default,
            keep: KeepRule::VarianceFraction(0.99),
            epsilon: None,
            threshold: 0.98,
            conv: None,
            allow_trivial: false,
            block_rows: 8192,
            // The sweep's per-task default (`[resources] memory_mb`), so that a pair that
            // compares alone also fits a sweep's task.
            memory_mb: 1024,
            precision: Precision::F64,
            joint_moments: false,
        }
    }
}

impl CompareConfig {
    /// The dense comparison options this config describes.
    pub fn compare_options(&self) -> CompareOptions {
        let mut opts = CompareOptions::default()
            .with_metric(self.metric)
            .with_mode(self.mode)
            .with_keep(self.keep)
            .with_threshold(self.threshold)
            .with_allow_trivial(self.allow_trivial)
            .with_precision(self.precision);
        if let Some(e) = self.epsilon {
            opts = opts.with_epsilon(e);
        }
        opts
    }

    /// The conv comparison options this config describes for `method`.
    pub fn conv_options(
        &self,
        method: ConvMethod,
        names: &OptionNames,
    ) -> Result<ConvOptions, CompareError> {
        if self.precision != Precision::F64 {
            return Err(CompareError::ConvPrecision {
                option: names.mixed,
            });
        }
        let keep = match self.metric {
            Metric::Svcca => self.keep,
            Metric::Cca => KeepRule::All,
            Metric::Pwcca | Metric::Cka => {
                return Err(CompareError::ConvMetric {
                    metric: self.metric,
                    option: names.metric,
                    conv: names.conv,
                });
            }
        };
        let mut opts = ConvOptions::default()
            .with_method(method)
            .with_mode(self.mode)
            .with_keep(keep)
            .with_threshold(self.threshold)
            .with_allow_trivial(self.allow_trivial);
        if let Some(e) = self.epsilon {
            opts = opts.with_epsilon(e);
        }
        Ok(opts)
    }
}

/// Why a comparison could not be made. Every message names the inputs involved.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A source could not be read; its message names it. `retryable` when the store, not the
    /// data, failed.
    #[error("{message}")]
    Read { message: String, retryable: bool },
    /// The caller stopped the comparison (Ctrl-C in Python).
    #[error("interrupted")]
    Interrupted,
    #[error("{option} must be at least 1")]
    BlockRows { option: &'static str },
    #[error(
        "{x} has {x_rows} datapoints but {y} has {y_rows}: both representations must cover the same \
         datapoints in the same order"
    )]
    DatapointMismatch {
        x: String,
        x_rows: usize,
        y: String,
        y_rows: usize,
    },
    #[error(
        "{name} has shape {shape:?}; dense comparisons need [datapoints, neurons] (pass {conv} \
         for 4-D conv activations)"
    )]
    NotDense {
        name: String,
        shape: Vec<usize>,
        conv: &'static str,
    },
    #[error("{x} and {y} ended at different {unit}")]
    UnevenEnd {
        x: String,
        y: String,
        unit: &'static str,
    },
    #[error(
        "{x} / {y} changed while being compared: the first pass read {first} datapoints, the \
         second {second}; compare them again once they are no longer being written"
    )]
    ChangedWhileRead {
        x: String,
        y: String,
        first: u64,
        second: u64,
    },
    #[error(
        "{what} needs {needed}, over the bound of {bound_mb} MiB; raise {memory} if the machine \
         has the memory, or reduce the neurons (compare a subset or pooled units; {conv_short} for \
         4-D conv layers; a smaller {block_rows} for very wide rows)"
    )]
    OverMemory {
        what: String,
        needed: String,
        bound_mb: u64,
        memory: &'static str,
        conv_short: &'static str,
        block_rows: &'static str,
    },
    #[error(
        "{option} {metric} is not available with {conv}; conv layers are compared with svcca or cca \
         (per frequency for dft)"
    )]
    ConvMetric {
        metric: Metric,
        option: &'static str,
        conv: &'static str,
    },
    #[error("{option} is for dense layers; conv layers are compared in f64")]
    ConvPrecision { option: &'static str },
    #[error(
        "{name}: non-finite value {value} at datapoint {row}, neuron {column}; NaN or infinite \
         activations cannot be compared (check the layer for overflow)"
    )]
    NonFinite {
        name: String,
        value: f64,
        row: u64,
        column: usize,
    },
    #[error("{source} (x = {x}, y = {y})")]
    Core {
        source: CoreError,
        x: String,
        y: String,
    },
    #[error("{name}: {source}")]
    ConvShape { name: String, source: ConvError },
    #[error("{source} (x = {x}, y = {y})")]
    Conv {
        source: ConvError,
        x: String,
        y: String,
    },
}

impl CompareError {
    /// Whether running the same comparison again could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CompareError::Read {
                retryable: true,
                ..
            }
        )
    }
}

/// A finished comparison.
#[derive(Debug)]
pub enum Outcome {
    /// Dense: the result, and the joint moments it came from when they were formed (every
    /// metric but SVCCA, or [`CompareConfig::joint_moments`]).
    Dense {
        result: Comparison,
        joint: Option<Box<JointMoments>>,
    },
    Conv(ConvComparison),
}

/// Compares `x` with `y` as `config` says, reading both in aligned blocks.
pub fn compare(
    x: &mut dyn BlockSource,
    y: &mut dyn BlockSource,
    config: &CompareConfig,
    names: &OptionNames,
) -> Result<Outcome, CompareError> {
    if config.block_rows == 0 {
        return Err(CompareError::BlockRows {
            option: names.block_rows,
        });
    }
    if x.datapoints() != y.datapoints() {
        return Err(CompareError::DatapointMismatch {
            x: x.name().to_string(),
            x_rows: x.datapoints(),
            y: y.name().to_string(),
            y_rows: y.datapoints(),
        });
    }
    match config.conv {
        None => {
            for s in [&*x, &*y] {
                if s.shape().len() != 2 {
                    return Err(CompareError::NotDense {
                        name: s.name().to_string(),
                        shape: s.shape().to_vec(),
                        conv: names.conv,
                    });
                }
            }
            let (dx, dy) = (x.shape()[1], y.shape()[1]);
            let block_rows = dense_block_rows(config.block_rows, dx.max(dy));
            let needed = dense_bytes(dx, dy, x.datapoints().min(block_rows));
            check_memory(needed, config.memory_mb, names, || {
                format!(
                    "comparing {} ({dx} neurons) with {} ({dy} neurons)",
                    x.name(),
                    y.name()
                )
            })?;
            let opts = config.compare_options();
            if opts.metric == Metric::Svcca && !config.joint_moments {
                let result = compare_svcca_two_pass(x, y, &opts, block_rows)?;
                return Ok(Outcome::Dense {
                    result,
                    joint: None,
                });
            }
            let (result, joint) = compare_dense(x, y, &opts, block_rows)?;
            Ok(Outcome::Dense {
                result,
                joint: Some(Box::new(joint)),
            })
        }
        Some((method, layout)) => {
            let opts = config.conv_options(method, names)?;
            compare_conv(x, y, &opts, layout, config, names).map(Outcome::Conv)
        }
    }
}

fn compare_dense(
    x: &mut dyn BlockSource,
    y: &mut dyn BlockSource,
    opts: &CompareOptions,
    block_rows: usize,
) -> Result<(Comparison, JointMoments), CompareError> {
    let (xn, yn) = (x.name().to_string(), y.name().to_string());
    let core = |e: CoreError| core_error(e, &xn, &yn);
    opts.validate().map_err(core)?;
    let (dx, dy) = (x.row_len(), y.row_len());
    let mut joint = JointMoments::with_precision(dx, dy, opts.precision);
    for_each_block_pair(x, y, block_rows, |bx, by| joint.push(bx, by))?;
    let result = svcca_core::compare_moments(&joint, opts).map_err(core)?;
    Ok((result, joint))
}

/// SVCCA in two passes over both inputs: each side's own moments and whitening first, then
/// each side projected on its kept directions and the small whitened cross product
/// `Σ z_x z_yᵀ = Wₓᵀ M_xy W_y` accumulated, as the sweep computes it. The joint pass forms the
/// whole `d_x × d_y` cross co-moment; SVCCA keeps `k ≪ d` directions, and projecting costs
/// `d·k` per datapoint and side (at 2,048 neurons keeping 240: about 40% fewer flops in all).
fn compare_svcca_two_pass(
    x: &mut dyn BlockSource,
    y: &mut dyn BlockSource,
    opts: &CompareOptions,
    block_rows: usize,
) -> Result<Comparison, CompareError> {
    let (xn, yn) = (x.name().to_string(), y.name().to_string());
    let core = |e: CoreError| core_error(e, &xn, &yn);
    opts.validate().map_err(core)?;
    let (dx, dy) = (x.row_len(), y.row_len());
    let mut mx = MomentAccumulator::with_precision(dx, opts.precision);
    let mut my = MomentAccumulator::with_precision(dy, opts.precision);
    let n = for_each_block_pair(x, y, block_rows, |bx, by| {
        mx.push(bx)?;
        my.push(by).map_err(on_y)
    })?;
    if n == 0 {
        return Err(core(CoreError::Empty {
            what: "no datapoints",
        }));
    }
    let wo = opts.whiten_options();
    let (wx, wy) = Whitening::pair_from_moments(&mx, &my, &wo).map_err(core)?;
    x.rewind()?;
    y.rewind()?;
    let (kx, ky) = (wx.dims(), wy.dims());
    let mut cross = Mat::<f64>::zeros(kx, ky);
    let (mut zx, mut zy) = (Mat::<f64>::zeros(0, kx), Mat::<f64>::zeros(0, ky));
    let mut scratch = Vec::new();
    let threads = svcca_core::parallelism();
    let again = for_each_block_pair(x, y, block_rows, |bx, by| {
        let rows = bx.rows();
        zx.resize_with(rows, kx, |_, _| 0.0);
        zy.resize_with(rows, ky, |_, _| 0.0);
        wx.whiten_rows_into(bx, zx.as_mut(), &mut scratch)?;
        wy.whiten_rows_into(by, zy.as_mut(), &mut scratch)
            .map_err(on_y)?;
        products::matmul(
            cross.as_mut(),
            Accum::Add,
            zx.transpose(),
            zy.as_ref(),
            1.0,
            threads,
        );
        Ok(())
    })?;
    if again != n {
        return Err(CompareError::ChangedWhileRead {
            x: xn,
            y: yn,
            first: n,
            second: again,
        });
    }
    compare_whitened(
        Side::with_moments(&wx, &mx),
        Side::with_moments(&wy, &my),
        cross.as_ref(),
        opts,
    )
    .map_err(core)
}

/// A single-input core error about y's data: its non-finite value is in input 1.
fn on_y(e: CoreError) -> CoreError {
    match e {
        CoreError::NonFinite {
            row, column, value, ..
        } => CoreError::NonFinite {
            input: 1,
            row,
            column,
            value,
        },
        e => e,
    }
}

/// Reads `x` and `y` to the end in aligned blocks of `block_rows` datapoints, handing each pair
/// to `f`; returns the datapoints read. Core errors name the input they came from.
///
/// Reading overlaps the work: while `f` works on one pair on its own thread (its products on
/// the shared pool), this thread reads the next, so neither waits for the other (reading a
/// `.npy` pair is ~40% of a single-pair SVCCA otherwise).
fn for_each_block_pair<F>(
    x: &mut dyn BlockSource,
    y: &mut dyn BlockSource,
    block_rows: usize,
    f: F,
) -> Result<u64, CompareError>
where
    F: FnMut(RowBlock<'_>, RowBlock<'_>) -> Result<(), CoreError> + Send,
{
    let (xn, yn) = (x.name().to_string(), y.name().to_string());
    let (dx, dy) = (x.row_len(), y.row_len());
    for (d, what) in [(dx, "x has no neurons"), (dy, "y has no neurons")] {
        if d == 0 {
            return Err(core_error(CoreError::Empty { what }, &xn, &yn));
        }
    }
    let work = |mut f: F, bx: Block<'static>, by: Block<'static>| {
        let rows = bx.len() / dx;
        let core = |e: CoreError| core_error(e, &xn, &yn);
        let outcome = bx
            .as_core(rows, dx)
            .and_then(|bx| Ok((bx, by.as_core(rows, dy)?)))
            .map_err(core)
            .and_then(|(bx, by)| f(bx, by).map_err(core));
        (f, outcome)
    };
    std::thread::scope(|scope| {
        let mut f = Some(f);
        let mut running: Option<std::thread::ScopedJoinHandle<'_, _>> = None;
        let mut n = 0u64;
        loop {
            let (bx, by) = (x.next_block(block_rows)?, y.next_block(block_rows)?);
            let uneven = match (&bx, &by) {
                (Some(bx), Some(by)) => bx.len() / dx != by.len() / dy,
                (None, None) => false,
                _ => true,
            };
            if uneven {
                return Err(CompareError::UnevenEnd {
                    x: xn.clone(),
                    y: yn.clone(),
                    unit: "datapoints",
                });
            }
            if let Some(handle) = running.take() {
                let (back, outcome): (F, Result<(), CompareError>) = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                outcome?;
                f = Some(back);
            }
            // Copied only once the previous pair is done with: two blocks per side at most
            // (the reader's and this copy), as without the overlap.
            let (Some(bx), Some(by)) = (bx, by) else {
                return Ok(n);
            };
            let (bx, by) = (bx.into_owned(), by.into_owned());
            n += (bx.len() / dx) as u64;
            let (g, work) = (f.take().expect("returned by the last pair's work"), &work);
            running = Some(scope.spawn(move || work(g, bx, by)));
        }
    })
}

fn compare_conv(
    x: &mut dyn BlockSource,
    y: &mut dyn BlockSource,
    opts: &ConvOptions,
    layout: Layout,
    config: &CompareConfig,
    names: &OptionNames,
) -> Result<ConvComparison, CompareError> {
    for s in [&*x, &*y] {
        if s.shape().len() != 4 {
            return Err(CompareError::ConvShape {
                name: s.name().to_string(),
                source: ConvError::NotFourD {
                    shape: s.shape().to_vec(),
                },
            });
        }
    }
    let (xn, yn) = (x.name().to_string(), y.name().to_string());
    let conv = |e: ConvError| CompareError::Conv {
        source: e,
        x: xn.clone(),
        y: yn.clone(),
    };
    let (sx, sy) = (
        layout.spatial_shape(x.shape()).map_err(conv)?,
        layout.spatial_shape(y.shape()).map_err(conv)?,
    );
    let block_images = conv_block_images(
        config.block_rows,
        opts.chunk_images,
        x.row_len().max(y.row_len()),
    );
    let needed = conv_bytes(
        [sx.height, sx.width, sx.channels],
        [sy.height, sy.width, sy.channels],
        opts,
        x.datapoints().min(block_images),
    );
    check_memory(needed, config.memory_mb, names, || {
        format!(
            "comparing conv layers {xn} ({} channels) and {yn} ({} channels) by {}",
            sx.channels, sy.channels, opts.method
        )
    })?;
    let plan = ConvPlan::new(sx, sy, opts).map_err(conv)?;
    let mut acc = ConvMomentAccumulator::new(&plan).with_chunk(opts.chunk_images);
    let (shape_x, shape_y) = (x.shape().to_vec(), y.shape().to_vec());
    let row_x = x.row_len();
    loop {
        let (bx, by) = (x.next_block(block_images)?, y.next_block(block_images)?);
        match (bx, by) {
            (Some(bx), Some(by)) => {
                let rows = bx.len() / row_x;
                let sx = [rows, shape_x[1], shape_x[2], shape_x[3]];
                let sy = [rows, shape_y[1], shape_y[2], shape_y[3]];
                let ix = bx.as_conv(&sx, layout).map_err(conv)?;
                let iy = by.as_conv(&sy, layout).map_err(conv)?;
                acc.push(ix, iy).map_err(conv)?;
            }
            (None, None) => break,
            _ => {
                return Err(CompareError::UnevenEnd {
                    x: xn,
                    y: yn,
                    unit: "images",
                });
            }
        }
    }
    acc.compare(opts).map_err(conv)
}

const MIB: u128 = 1 << 20;

/// Bytes of one side's block of a dense comparison, as f32: the default 8,192 datapoints of
/// 512 neurons. Wider layers read fewer datapoints per block: a block is read, decoded and
/// copied once more while the previous one is multiplied, and at 2,048 neurons 8,192 rows were
/// 200 MB per side in those buffers, more than the moments themselves.
const DENSE_BLOCK_BYTES: usize = 16 << 20;

/// Datapoints per block of a dense comparison: at most `block_rows`, and within
/// [`DENSE_BLOCK_BYTES`] per side for the wider side's `neurons`.
fn dense_block_rows(block_rows: usize, neurons: usize) -> usize {
    let fit = DENSE_BLOCK_BYTES / neurons.saturating_mul(4).max(1);
    block_rows.min(fit.max(256)).max(1)
}

/// Bytes of one side's block of images a conv comparison reads at a time (as f64; half that
/// for f32 files). A conv image is large (`h·w·c` values) and the spectra are computed a chunk
/// at a time anyway, so reading thousands of images per block only adds memory and page faults.
const CONV_BLOCK_BYTES: usize = 8 << 20;

/// Images per block for a conv comparison: at most `block_rows`, and otherwise whole chunks of
/// the moment accumulator within [`CONV_BLOCK_BYTES`], so the chunks (and so the result's bits)
/// are the same as reading everything at once.
fn conv_block_images(block_rows: usize, chunk: usize, row_len: usize) -> usize {
    let chunk = chunk.max(1);
    let chunks = (CONV_BLOCK_BYTES / row_len.saturating_mul(8).saturating_mul(chunk).max(1)).max(1);
    block_rows.min(chunks.saturating_mul(chunk)).max(1)
}

/// Shapes come from file headers and manifests, which may claim anything: every product is taken
/// in u128 and saturates, so an absurd claim is "over the bound", never an overflow.
fn product(factors: &[u128]) -> u128 {
    factors.iter().fold(1u128, |acc, &f| acc.saturating_mul(f))
}

/// Bytes a dense comparison of `dx` and `dy` neurons needs, reading `rows` datapoints per block:
/// the joint co-moments `(dx + dy)²` (f64), each side's whitening (the sweep's `24·d²` rule), two
/// copies of a block of both sides as f64 (as read and widened), and a fixed 32 MiB.
fn dense_bytes(dx: usize, dy: usize, rows: usize) -> u128 {
    let (dx, dy, rows) = (dx as u128, dy as u128, rows as u128);
    let d = dx.saturating_add(dy);
    product(&[8, d, d])
        .saturating_add(product(&[24, dx, dx]))
        .saturating_add(product(&[24, dy, dy]))
        .saturating_add(product(&[16, rows, d]))
        .saturating_add(32 * MIB)
}

/// Bytes a conv comparison needs: per compared location (every position of the smaller grid for
/// dft and fold, one for pool) the complex co-moments of `c_x + c_y` channels and a chunk of
/// gathered spectra, one location's CCA at a time, two copies of a block of both layers as f64,
/// and a fixed 32 MiB.
fn conv_bytes(x: [usize; 3], y: [usize; 3], opts: &ConvOptions, rows: usize) -> u128 {
    let [hx, wx, cx] = x.map(|v| v as u128);
    let [hy, wy, cy] = y.map(|v| v as u128);
    let locations = match opts.method {
        ConvMethod::Pool => 1,
        ConvMethod::Dft | ConvMethod::Fold => hx.min(hy).saturating_mul(wx.min(wy)),
    };
    let d = cx.saturating_add(cy);
    let row = product(&[hx, wx, cx]).saturating_add(product(&[hy, wy, cy]));
    product(&[16, locations, d, d])
        .saturating_add(product(&[16, locations, opts.chunk_images as u128, d]))
        .saturating_add(product(&[16 * 24, d, d]))
        .saturating_add(product(&[16, rows as u128, row]))
        .saturating_add(32 * MIB)
}

/// Refuses a comparison whose estimate is over the bound, before anything is allocated.
fn check_memory(
    needed: u128,
    bound_mb: u64,
    names: &OptionNames,
    what: impl FnOnce() -> String,
) -> Result<(), CompareError> {
    if needed <= u128::from(bound_mb) * MIB {
        return Ok(());
    }
    let needed_mb = needed.div_ceil(MIB);
    let needed = if needed_mb > u128::from(u64::MAX) {
        "more memory than any machine has".to_string()
    } else {
        format!("about {needed_mb} MiB")
    };
    Err(CompareError::OverMemory {
        what: what(),
        needed,
        bound_mb,
        memory: names.memory,
        conv_short: names.conv.split(' ').next().unwrap_or(names.conv),
        block_rows: names.block_rows,
    })
}

/// Core errors speak of "x"/"y" or input 0/1: name the user's inputs instead.
fn core_error(e: CoreError, x: &str, y: &str) -> CompareError {
    match e {
        CoreError::NonFinite {
            input,
            row,
            column,
            value,
        } => CompareError::NonFinite {
            name: if input == 0 { x } else { y }.to_string(),
            value,
            row,
            column,
        },
        source => CompareError::Core {
            source,
            x: x.to_string(),
            y: y.to_string(),
        },
    }
}

/// An input as the JSON record names it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
}

/// The `--json` record of a comparison: the same fields from the CLI and from Python.
pub fn to_json(x: Input<'_>, y: Input<'_>, metric: Metric, outcome: &Outcome) -> String {
    let side = |i: Input<'_>| json!({"input": i.name, "shape": i.shape});
    let value = match outcome {
        Outcome::Dense { result: r, .. } => json!({
            "x": side(x),
            "y": side(y),
            "metric": r.metric,
            "mode": r.mode,
            "mean": r.mean,
            "google_mean": r.google_mean,
            "equal_k_mean": r.equal_k_mean,
            "sum": r.sum,
            "coefficients": r.coefficients,
            "weights": r.weights,
            "dims_x": r.dims_x,
            "dims_y": r.dims_y,
            "dropped_x": r.dropped_x,
            "dropped_y": r.dropped_y,
            "datapoints": r.n_datapoints,
            "definition": r.definition,
            "warnings": r.warnings,
        }),
        Outcome::Conv(r) => {
            let mut value = serde_json::to_value(r).expect("plain data serialises");
            if let Some(obj) = value.as_object_mut() {
                obj.insert("metric".into(), json!(metric));
                obj.insert("x".into(), side(x));
                obj.insert("y".into(), side(y));
            }
            value
        }
    };
    serde_json::to_string_pretty(&value).expect("plain JSON values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory source that hands out blocks of its own size, whatever is asked, unless
    /// told to honour the request: the comparison must re-align nothing itself, so a source that
    /// breaks the contract shows up as an uneven end rather than a wrong number.
    struct Rows {
        name: String,
        shape: Vec<usize>,
        data: Vec<f64>,
        next: usize,
    }

    impl Rows {
        fn new(name: &str, rows: usize, cols: usize, seed: u64) -> Rows {
            let mut state = seed;
            let data = (0..rows * cols)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect();
            Rows {
                name: name.into(),
                shape: vec![rows, cols],
                data,
                next: 0,
            }
        }
    }

    impl BlockSource for Rows {
        fn name(&self) -> &str {
            &self.name
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn next_block(&mut self, rows: usize) -> Result<Option<Block<'_>>, CompareError> {
            let cols: usize = self.shape[1..].iter().product();
            let rows = rows.min(self.shape[0] - self.next);
            if rows == 0 {
                return Ok(None);
            }
            let start = self.next * cols;
            self.next += rows;
            Ok(Some(Block::F64(Cow::Borrowed(
                &self.data[start..start + rows * cols],
            ))))
        }
        fn rewind(&mut self) -> Result<(), CompareError> {
            self.next = 0;
            Ok(())
        }
    }

    #[test]
    fn block_size_changes_the_number_only_by_rounding() {
        let run = |block_rows| {
            let (mut x, mut y) = (Rows::new("a", 300, 6, 1), Rows::new("b", 300, 5, 2));
            let config = CompareConfig {
                block_rows,
                ..CompareConfig::default()
            };
            match compare(&mut x, &mut y, &config, &OptionNames::CLI).unwrap() {
                Outcome::Dense { result, .. } => result.mean,
                Outcome::Conv(_) => unreachable!("dense config"),
            }
        };
        let (whole, blocks) = (run(8192), run(7));
        assert!((whole - blocks).abs() < 1e-12, "{whole} vs {blocks}");
        assert!(whole > 0.0 && whole < 1.0);
    }

    #[test]
    fn svcca_two_passes_equal_the_joint_moments() {
        for (block_rows, keep) in [
            (8192, KeepRule::VarianceFraction(0.9)),
            (37, KeepRule::Dims(3)),
            (37, KeepRule::All),
        ] {
            let run = |joint_moments| {
                let (mut x, mut y) = (Rows::new("a", 300, 6, 1), Rows::new("b", 300, 5, 2));
                // Shared signal, so the coefficients are not all near zero.
                for r in 0..300 {
                    for c in 0..5 {
                        y.data[r * 5 + c] += x.data[r * 6 + c] * (c as f64 + 1.0);
                    }
                }
                let config = CompareConfig {
                    block_rows,
                    keep,
                    joint_moments,
                    ..CompareConfig::default()
                };
                match compare(&mut x, &mut y, &config, &OptionNames::CLI).unwrap() {
                    Outcome::Dense { result, joint } => {
                        assert_eq!(joint.is_some(), joint_moments);
                        result
                    }
                    Outcome::Conv(_) => unreachable!("dense config"),
                }
            };
            let (two, joint) = (run(false), run(true));
            assert_eq!((two.dims_x, two.dims_y), (joint.dims_x, joint.dims_y));
            assert_eq!(two.coefficients.len(), joint.coefficients.len());
            for (a, b) in two.coefficients.iter().zip(&joint.coefficients) {
                assert!((a - b).abs() < 1e-12, "{keep:?}: {a} vs {b}");
            }
            assert!(two.mean > 0.1 && two.mean <= 1.0, "{}", two.mean);
        }
    }

    /// Rows that come back different after a rewind, as a file rewritten mid-comparison does.
    struct Shrinking(Rows);

    impl BlockSource for Shrinking {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn shape(&self) -> &[usize] {
            self.0.shape()
        }
        fn next_block(&mut self, rows: usize) -> Result<Option<Block<'_>>, CompareError> {
            self.0.next_block(rows)
        }
        fn rewind(&mut self) -> Result<(), CompareError> {
            self.0.rewind()?;
            self.0.next = 10;
            Ok(())
        }
    }

    #[test]
    fn svcca_second_pass_names_bad_values_and_changed_inputs() {
        let config = CompareConfig::default();
        let (mut x, mut y) = (Rows::new("a", 200, 4, 1), Rows::new("b", 200, 3, 2));
        y.data[7 * 3 + 2] = f64::NAN;
        let e = compare(&mut x, &mut y, &config, &OptionNames::CLI).unwrap_err();
        assert!(
            matches!(&e, CompareError::NonFinite { name, row: 7, column: 2, .. } if name == "b"),
            "{e}"
        );
        let mut x = Shrinking(Rows::new("a", 200, 4, 1));
        let mut y = Shrinking(Rows::new("b", 200, 3, 2));
        let e = compare(&mut x, &mut y, &config, &OptionNames::CLI).unwrap_err();
        assert!(
            matches!(
                e,
                CompareError::ChangedWhileRead {
                    first: 200,
                    second: 190,
                    ..
                }
            ),
            "{e}"
        );
        // Only one side changed: its blocks no longer line up with the other's.
        let (mut x, mut y) = (
            Rows::new("a", 200, 4, 1),
            Shrinking(Rows::new("b", 200, 3, 2)),
        );
        let e = compare(&mut x, &mut y, &config, &OptionNames::CLI).unwrap_err();
        assert!(matches!(e, CompareError::UnevenEnd { .. }), "{e}");
    }

    #[test]
    fn dense_blocks_shrink_for_wide_layers_only() {
        assert_eq!(dense_block_rows(8192, 512), 8192);
        assert_eq!(dense_block_rows(8192, 2048), 2048);
        assert_eq!(dense_block_rows(100, 2048), 100);
        // Very wide rows still read a useful number of datapoints; nothing is ever zero.
        assert_eq!(dense_block_rows(8192, 1 << 30), 256);
        assert_eq!(dense_block_rows(0, 0), 1);
    }

    #[test]
    fn conv_blocks_are_whole_chunks_within_the_byte_budget() {
        // A 16×16×128 f64 image is 256 KiB: 32 of them fill the budget, less than one chunk.
        assert_eq!(conv_block_images(8192, 64, 16 * 16 * 128), 64);
        // 4 KiB images: 2,048 fit, i.e. 32 whole chunks.
        assert_eq!(conv_block_images(8192, 64, 512), 2048);
        // The caller's smaller block wins; nothing is ever zero.
        assert_eq!(conv_block_images(10, 64, 512), 10);
        assert_eq!(conv_block_images(0, 0, 0), 1);
        assert_eq!(conv_block_images(8192, 64, usize::MAX), 64);
    }

    #[test]
    fn conv_results_do_not_depend_on_whole_chunk_blocks() {
        let run = |block_rows| {
            let (mut x, mut y) = (Rows::new("a", 200, 48, 1), Rows::new("b", 200, 32, 2));
            x.shape = vec![200, 4, 4, 3];
            y.shape = vec![200, 4, 4, 2];
            let config = CompareConfig {
                block_rows,
                metric: Metric::Cca,
                conv: Some((ConvMethod::Dft, Layout::Nhwc)),
                ..CompareConfig::default()
            };
            match compare(&mut x, &mut y, &config, &OptionNames::CLI).unwrap() {
                Outcome::Conv(result) => result,
                Outcome::Dense { .. } => unreachable!("conv config"),
            }
        };
        let (whole, chunks, odd) = (run(8192), run(64), run(7));
        assert_eq!(whole.coefficients, chunks.coefficients);
        assert!(
            (whole.mean - odd.mean).abs() < 1e-12,
            "{} vs {}",
            whole.mean,
            odd.mean
        );
        assert!(whole.mean > 0.0 && whole.mean < 1.0);
    }

    #[test]
    fn messages_name_inputs_and_the_callers_options() {
        let (mut x, mut y) = (Rows::new("first", 30, 3, 1), Rows::new("second", 20, 3, 2));
        let names = OptionNames {
            metric: "metric=",
            conv: "layout='nhwc'|'nchw'",
            memory: "memory_mb=",
            block_rows: "block_rows=",
            mixed: "precision='mixed'",
        };
        let e = compare(&mut x, &mut y, &CompareConfig::default(), &names).unwrap_err();
        assert_eq!(
            e.to_string(),
            "first has 30 datapoints but second has 20: both representations must cover the same \
             datapoints in the same order"
        );
        let mut z = Rows::new("third", 30, 3, 3);
        let tiny = CompareConfig {
            memory_mb: 16,
            ..CompareConfig::default()
        };
        let e = compare(&mut x, &mut z, &tiny, &names).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("raise memory_mb="), "{text}");
        assert!(text.contains("layout='nhwc'|'nchw' for 4-D"), "{text}");
        assert!(!e.is_retryable());
    }
}
