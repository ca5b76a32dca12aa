//! `svcca compare X Y`: one comparison of two representations, streamed from files or datasets.

use std::fmt::Write as _;

use clap::ValueEnum;
use serde_json::json;
use svcca_core::conv::{
    ConvComparison, ConvError, ConvMethod, ConvMomentAccumulator, ConvOptions, ConvPlan, Layout,
};
use svcca_core::{CompareOptions, Comparison, CoreError, JointMoments, KeepRule, Metric, Mode};

use crate::exit::{CmdResult, Failure};
use crate::source::Source;

/// Compare two representations (SVCCA by default).
///
/// X and Y are `.npy` files (float16, float32 or float64, C or Fortran order, either byte order),
/// arrays inside `.npz` or `.safetensors` files named as `FILE::NAME` (`acts.npz::h1`; a file
/// holding one array needs no name), or dataset representations named by a selector such as
/// `file:///data/acts#run=mlp,seed=0,step=2250,layer=h1`. Dense inputs are
/// `[datapoints, neurons]` (use --neurons-first for google/svcca's `[neurons, datapoints]`);
/// conv inputs are `[images, h, w, channels]` (NHWC, or --nchw) and need --conv. Files are read in
/// blocks: memory is bounded by the statistics, not by the file size.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct CompareArgs {
    /// First representation: a .npy path, FILE.npz::NAME, FILE.safetensors::NAME or DATASET_URL#key=value,...
    pub x: String,
    /// Second representation, over the same datapoints in the same order.
    pub y: String,
    /// Similarity to compute.
    #[arg(long, value_enum, default_value_t = MetricArg::Svcca)]
    pub metric: MetricArg,
    /// SVCCA: keep the top directions explaining this fraction of the variance (default 0.99).
    #[arg(long, value_name = "F", conflicts_with = "keep_dims")]
    pub keep_variance: Option<f64>,
    /// SVCCA: keep this many top directions instead.
    #[arg(long, value_name = "K")]
    pub keep_dims: Option<usize>,
    /// Relative variance cutoff for near-constant neurons (google-compat: also the ridge added to
    /// the covariances). Default 1e-10; 0 for google-compat --conv dft, as in google's fourier_ccas.
    #[arg(long, value_name = "E")]
    pub epsilon: Option<f64>,
    /// Fraction of the coefficient sum that google's truncated mean covers.
    #[arg(long, value_name = "T", default_value_t = 0.98)]
    pub threshold: f64,
    /// Reproduce google/svcca's arithmetic (cca_core.get_cca_similarity, pwcca.compute_pwcca,
    /// dft_ccas.fourier_ccas) instead of the numerically robust default.
    #[arg(long)]
    pub google_compat: bool,
    /// Dense .npy inputs are [neurons, datapoints] (google/svcca's layout).
    #[arg(long)]
    pub neurons_first: bool,
    /// Compare 4-D conv layers: `dft` (one CCA per spatial frequency), `fold` (every image x
    /// position is a datapoint) or `pool` (average over h, w).
    #[arg(long, value_enum)]
    pub conv: Option<ConvArg>,
    /// Conv inputs are [images, channels, h, w] (PyTorch's layout) instead of NHWC.
    #[arg(long, requires = "conv")]
    pub nchw: bool,
    /// Compute even when there are as many dimensions as datapoints (CCA is then trivially 1).
    #[arg(long)]
    pub allow_trivial: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Datapoints read per block.
    #[arg(long, value_name = "N", default_value_t = 8192)]
    pub block_rows: usize,
    /// Threads for the linear algebra (default: all cores).
    #[arg(long, env = "SVCCA_THREADS")]
    pub threads: Option<usize>,
    /// Memory the comparison may use, MiB (the same bound as a sweep's task). Estimated from the
    /// shapes before anything is read; a comparison over the bound is refused.
    #[arg(long, value_name = "MIB", default_value_t = svcca_engine::spec::Resources::default().memory_mb)]
    pub memory_mb: u64,
    /// Also write X's SVCCA directions (found against Y, under the keep rule) as `.npy` files in
    /// DIR, to compress X as in the paper: `svcca_projection.npy` `[neurons, k]` gives
    /// `z = (x − svcca_mean) · projection`, and `svcca_reconstruction.npy` `[k, neurons]` maps
    /// `z` back (`x̂ = mean + z · reconstruction`). Dense inputs only; existing files are not
    /// overwritten.
    #[arg(long, value_name = "DIR")]
    pub export_directions: Option<std::path::PathBuf>,
    /// How many directions to export (default: every SVCCA direction of the pair).
    #[arg(long, value_name = "K", requires = "export_directions")]
    pub directions: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    Svcca,
    Cca,
    Pwcca,
    Cka,
}

impl From<MetricArg> for Metric {
    fn from(m: MetricArg) -> Metric {
        match m {
            MetricArg::Svcca => Metric::Svcca,
            MetricArg::Cca => Metric::Cca,
            MetricArg::Pwcca => Metric::Pwcca,
            MetricArg::Cka => Metric::Cka,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvArg {
    Dft,
    Fold,
    Pool,
}

impl From<ConvArg> for ConvMethod {
    fn from(c: ConvArg) -> ConvMethod {
        match c {
            ConvArg::Dft => ConvMethod::Dft,
            ConvArg::Fold => ConvMethod::Fold,
            ConvArg::Pool => ConvMethod::Pool,
        }
    }
}

impl CompareArgs {
    fn mode(&self) -> Mode {
        if self.google_compat {
            Mode::GoogleCompat
        } else {
            Mode::Default
        }
    }

    fn keep(&self) -> KeepRule {
        match (self.keep_dims, self.keep_variance) {
            (Some(k), _) => KeepRule::Dims(k),
            (None, Some(f)) => KeepRule::VarianceFraction(f),
            (None, None) => KeepRule::VarianceFraction(0.99),
        }
    }

    /// The dense comparison options these flags describe.
    pub fn compare_options(&self) -> CompareOptions {
        let mut opts = CompareOptions::default()
            .with_metric(self.metric.into())
            .with_mode(self.mode())
            .with_keep(self.keep())
            .with_threshold(self.threshold)
            .with_allow_trivial(self.allow_trivial);
        if let Some(e) = self.epsilon {
            opts = opts.with_epsilon(e);
        }
        opts
    }

    /// The conv comparison options these flags describe.
    pub fn conv_options(&self, method: ConvMethod) -> Result<ConvOptions, Failure> {
        let keep = match self.metric {
            MetricArg::Svcca => self.keep(),
            MetricArg::Cca => KeepRule::All,
            MetricArg::Pwcca | MetricArg::Cka => {
                return Err(Failure::fatal(format!(
                    "--metric {} is not available with --conv; conv layers are compared with svcca or cca \
                     (per frequency for dft)",
                    Metric::from(self.metric)
                )));
            }
        };
        let mut opts = ConvOptions::default()
            .with_method(method)
            .with_mode(self.mode())
            .with_keep(keep)
            .with_threshold(self.threshold)
            .with_allow_trivial(self.allow_trivial);
        if let Some(e) = self.epsilon {
            opts = opts.with_epsilon(e);
        }
        Ok(opts)
    }
}

pub fn run(args: CompareArgs) -> CmdResult {
    if args.block_rows == 0 {
        return Err(Failure::fatal("--block-rows must be at least 1"));
    }
    svcca_core::set_parallelism(args.threads.unwrap_or(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::retryable(format!("cannot start the I/O runtime: {e}")))?;
    let mut x = Source::open(&args.x, args.neurons_first, &runtime)?;
    let mut y = Source::open(&args.y, args.neurons_first, &runtime)?;
    if x.datapoints() != y.datapoints() {
        return Err(Failure::fatal(format!(
            "{} has {} datapoints but {} has {}: both representations must cover the same datapoints \
             in the same order{}",
            x.name,
            x.datapoints(),
            y.name,
            y.datapoints(),
            if args.neurons_first {
                ""
            } else {
                " (if your files are [neurons, datapoints], pass --neurons-first)"
            }
        )));
    }
    if args.export_directions.is_some() && args.conv.is_some() {
        return Err(Failure::fatal(
            "--export-directions is for dense layers; conv layers have per-frequency directions",
        ));
    }
    if let Some(dir) = &args.export_directions {
        refuse_existing_directions(dir)?;
    }
    let output = match args.conv {
        None => {
            for s in [&x, &y] {
                if s.shape.len() != 2 {
                    return Err(Failure::fatal(format!(
                        "{} has shape {:?}; dense comparisons need [datapoints, neurons] (pass --conv dft|fold|pool \
                         for 4-D conv activations)",
                        s.name, s.shape
                    )));
                }
            }
            let (dx, dy) = (x.shape[1], y.shape[1]);
            let needed = dense_bytes(dx, dy, x.datapoints().min(args.block_rows));
            check_memory(needed, args.memory_mb, || {
                format!(
                    "comparing {} ({dx} neurons) with {} ({dy} neurons)",
                    x.name, y.name
                )
            })?;
            let opts = args.compare_options();
            let (result, joint) = compare_dense(&mut x, &mut y, &opts, args.block_rows, &runtime)?;
            if let Some(dir) = &args.export_directions {
                export_directions(dir, &joint, (&x, &y), args.directions, &args)?;
            }
            if args.json {
                dense_json(&x, &y, &result)
            } else {
                dense_table(&x, &y, &result)
            }
        }
        Some(method) => {
            let opts = args.conv_options(method.into())?;
            let layout = if args.nchw {
                Layout::Nchw
            } else {
                Layout::Nhwc
            };
            let result = compare_conv(
                &mut x,
                &mut y,
                &opts,
                layout,
                (args.block_rows, args.memory_mb),
                &runtime,
            )?;
            if args.json {
                conv_json(&x, &y, args.metric, &result)
            } else {
                conv_table(&x, &y, args.metric, &result)
            }
        }
    };
    outln!("{output}");
    Ok(())
}

fn compare_dense(
    x: &mut Source,
    y: &mut Source,
    opts: &CompareOptions,
    block_rows: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<(Comparison, JointMoments), Failure> {
    opts.validate().map_err(|e| core_failure(e, x, y))?;
    let (dx, dy) = (x.row_len(), y.row_len());
    let mut joint = JointMoments::new(dx, dy);
    loop {
        let (bx, by) = (x.next(block_rows, runtime)?, y.next(block_rows, runtime)?);
        match (bx, by) {
            (Some(bx), Some(by)) => {
                let rows = bx.len() / dx;
                joint
                    .push(bx.as_core(rows, dx)?, by.as_core(rows, dy)?)
                    .map_err(|e| core_failure(e, x, y))?;
            }
            (None, None) => break,
            _ => {
                return Err(Failure::fatal(format!(
                    "{} and {} ended at different datapoints",
                    x.name, y.name
                )));
            }
        }
    }
    let result = svcca_core::compare_moments(&joint, opts).map_err(|e| core_failure(e, x, y))?;
    Ok((result, joint))
}

const DIRECTIONS_STEM: &str = "svcca";
const DIRECTION_FILES: [&str; 3] = ["projection", "reconstruction", "mean"];

/// Checked before reading anything, so a long comparison does not end in a refusal.
fn refuse_existing_directions(dir: &std::path::Path) -> Result<(), Failure> {
    for name in DIRECTION_FILES {
        let path = dir.join(format!("{DIRECTIONS_STEM}_{name}.npy"));
        if path.exists() {
            return Err(Failure::fatal(format!(
                "{} already exists; remove it or choose another --export-directions folder",
                path.display()
            )));
        }
    }
    Ok(())
}

fn export_directions(
    dir: &std::path::Path,
    joint: &JointMoments,
    (x, y): (&Source, &Source),
    k: Option<usize>,
    args: &CompareArgs,
) -> Result<(), Failure> {
    use svcca_report::compute::{
        ComputeOptions, Precision, svcca_directions_from_moments, write_directions,
    };
    let mut opts = ComputeOptions::default().with_keep(args.keep());
    if let Some(e) = args.epsilon {
        opts.epsilon = e;
    }
    let directions = svcca_directions_from_moments(joint, (&x.name, &y.name), k, &opts)
        .map_err(|e| Failure::fatal(e.to_string()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::fatal(format!("cannot create {}: {e}", dir.display())))?;
    let written = write_directions(dir, DIRECTIONS_STEM, &directions, Precision::F64)
        .map_err(|e| Failure::fatal(e.to_string()))?;
    for path in written {
        eprintln!("wrote {} ({} directions)", path.display(), directions.k);
    }
    Ok(())
}

fn compare_conv(
    x: &mut Source,
    y: &mut Source,
    opts: &ConvOptions,
    layout: Layout,
    (block_rows, memory_mb): (usize, u64),
    runtime: &tokio::runtime::Runtime,
) -> Result<ConvComparison, Failure> {
    for s in [&*x, &*y] {
        if s.shape.len() != 4 {
            return Err(Failure::fatal(format!(
                "{}: {}",
                s.name,
                ConvError::NotFourD {
                    shape: s.shape.clone()
                }
            )));
        }
    }
    let conv = |e: ConvError| conv_failure(e, x, y);
    let spatial = |s: &Source| layout.spatial_shape(&s.shape);
    let (sx, sy) = (spatial(x).map_err(conv)?, spatial(y).map_err(conv)?);
    let needed = conv_bytes(
        [sx.height, sx.width, sx.channels],
        [sy.height, sy.width, sy.channels],
        opts,
        x.datapoints().min(block_rows),
    );
    check_memory(needed, memory_mb, || {
        format!(
            "comparing conv layers {} ({} channels) and {} ({} channels) by {}",
            x.name, sx.channels, y.name, sy.channels, opts.method
        )
    })?;
    let plan = ConvPlan::new(sx, sy, opts).map_err(conv)?;
    let mut acc = ConvMomentAccumulator::new(&plan).with_chunk(opts.chunk_images);
    let (shape_x, shape_y) = (x.shape.clone(), y.shape.clone());
    loop {
        let (bx, by) = (x.next(block_rows, runtime)?, y.next(block_rows, runtime)?);
        match (bx, by) {
            (Some(bx), Some(by)) => {
                let rows = bx.len() / x.row_len();
                let sx = [rows, shape_x[1], shape_x[2], shape_x[3]];
                let sy = [rows, shape_y[1], shape_y[2], shape_y[3]];
                let ix = bx.as_conv(&sx, layout).map_err(|e| conv_failure(e, x, y))?;
                let iy = by.as_conv(&sy, layout).map_err(|e| conv_failure(e, x, y))?;
                acc.push(ix, iy).map_err(|e| conv_failure(e, x, y))?;
            }
            (None, None) => break,
            _ => {
                return Err(Failure::fatal(format!(
                    "{} and {} ended at different images",
                    x.name, y.name
                )));
            }
        }
    }
    acc.compare(opts).map_err(|e| conv_failure(e, x, y))
}

const MIB: u128 = 1 << 20;

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

/// Refuses a comparison whose estimate is over `--memory-mb`, before anything is allocated.
fn check_memory(needed: u128, bound_mb: u64, what: impl FnOnce() -> String) -> Result<(), Failure> {
    if needed <= u128::from(bound_mb) * MIB {
        return Ok(());
    }
    let needed_mb = needed.div_ceil(MIB);
    let needed_text = if needed_mb > u128::from(u64::MAX) {
        "more memory than any machine has".to_string()
    } else {
        format!("about {needed_mb} MiB")
    };
    Err(Failure::fatal(format!(
        "{} needs {needed_text}, over the bound of {bound_mb} MiB; raise --memory-mb if the machine \
         has the memory, or reduce the neurons (compare a subset or pooled units; --conv for 4-D \
         conv layers; a smaller --block-rows for very wide rows)",
        what()
    )))
}

/// Core errors speak of "x"/"y" or input 0/1: name the user's inputs instead.
fn core_failure(e: CoreError, x: &Source, y: &Source) -> Failure {
    let names = format!("(x = {}, y = {})", x.name, y.name);
    match &e {
        CoreError::NonFinite {
            input,
            row,
            column,
            value,
        } => {
            let name = if *input == 0 { &x.name } else { &y.name };
            Failure::fatal(format!(
                "{name}: non-finite value {value} at datapoint {row}, neuron {column}; NaN or infinite \
                 activations cannot be compared (check the layer for overflow)"
            ))
        }
        _ => Failure::fatal(format!("{e} {names}")),
    }
}

fn conv_failure(e: ConvError, x: &Source, y: &Source) -> Failure {
    Failure::fatal(format!("{e} (x = {}, y = {})", x.name, y.name))
}

fn shape_text(s: &Source) -> String {
    s.shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
}

fn dense_json(x: &Source, y: &Source, r: &Comparison) -> String {
    let value = json!({
        "x": {"input": x.name, "shape": x.shape},
        "y": {"input": y.name, "shape": y.shape},
        "metric": r.metric,
        "mode": r.mode,
        "mean": r.mean,
        "google_mean": r.google_mean,
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
    });
    serde_json::to_string_pretty(&value).expect("plain JSON values serialise")
}

fn list_preview(values: &[f64]) -> String {
    const SHOW: usize = 8;
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|c| format!("{c:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if values.len() <= 2 * SHOW {
        fmt(values)
    } else {
        format!(
            "{} ... {}",
            fmt(&values[..SHOW]),
            fmt(&values[values.len() - SHOW..])
        )
    }
}

fn indices_preview(idx: &[usize]) -> String {
    match idx.len() {
        0 => "none".into(),
        n if n <= 12 => format!("{idx:?}"),
        n => format!("{n} neurons ({:?} ...)", &idx[..12]),
    }
}

fn dense_table(x: &Source, y: &Source, r: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "x            {} [{}]", x.name, shape_text(x));
    let _ = writeln!(out, "y            {} [{}]", y.name, shape_text(y));
    let _ = writeln!(out, "metric       {} ({} mode)", r.metric, r.mode);
    let _ = writeln!(out, "mean         {:.6}", r.mean);
    let _ = writeln!(out, "             {}", r.definition);
    if let Some(g) = r.google_mean {
        let _ = writeln!(out, "google mean  {g:.6}  (google/svcca's truncated mean)");
    }
    let _ = writeln!(
        out,
        "dims         x: {}   y: {}   over {} datapoints",
        r.dims_x, r.dims_y, r.n_datapoints
    );
    let _ = writeln!(
        out,
        "dropped      x: {}   y: {}",
        indices_preview(&r.dropped_x),
        indices_preview(&r.dropped_y)
    );
    if !r.coefficients.is_empty() {
        let _ = writeln!(out, "coefficients {}", list_preview(&r.coefficients));
    }
    if let Some(w) = &r.weights {
        let _ = writeln!(out, "weights      {}", list_preview(w));
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning      {w}");
    }
    out.trim_end().to_string()
}

fn conv_json(x: &Source, y: &Source, metric: MetricArg, r: &ConvComparison) -> String {
    let mut value = serde_json::to_value(r).expect("plain data serialises");
    if let Some(obj) = value.as_object_mut() {
        obj.insert("metric".into(), json!(Metric::from(metric)));
        obj.insert("x".into(), json!({"input": x.name, "shape": x.shape}));
        obj.insert("y".into(), json!({"input": y.name, "shape": y.shape}));
    }
    serde_json::to_string_pretty(&value).expect("plain JSON values serialise")
}

fn conv_table(x: &Source, y: &Source, metric: MetricArg, r: &ConvComparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "x            {} [{}]", x.name, shape_text(x));
    let _ = writeln!(out, "y            {} [{}]", y.name, shape_text(y));
    let _ = writeln!(
        out,
        "metric       {} (conv {}, {} mode)",
        Metric::from(metric),
        r.method,
        r.mode
    );
    let _ = writeln!(
        out,
        "mean         {:.6}  (mean of all coefficients)",
        r.mean
    );
    let _ = writeln!(out, "             {}", r.definition);
    if r.method == ConvMethod::Dft {
        let _ = writeln!(
            out,
            "mean of per-frequency means {:.6}",
            r.mean_of_frequency_means
        );
        let _ = writeln!(
            out,
            "grid         {} x {}{}",
            r.grid[0],
            r.grid[1],
            if r.cropped {
                " (cropped to the smaller layer)"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "per-frequency means (rows i, columns j):");
        for i in 0..r.grid[0] {
            let row: Vec<String> = (0..r.grid[1])
                .map(|j| format!("{:.3}", r.mean_grid[i * r.grid[1] + j]))
                .collect();
            let _ = writeln!(out, "  {}", row.join(" "));
        }
    }
    let _ = writeln!(out, "images       {}", r.images);
    for w in &r.warnings {
        let _ = writeln!(out, "warning      {w}");
    }
    out.trim_end().to_string()
}
