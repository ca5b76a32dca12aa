//! `svcca compare X Y`: one comparison of two representations, streamed from files or datasets.

use std::fmt::Write as _;

use clap::ValueEnum;
use svcca_compare::{
    BlockSource, CompareConfig, CompareError, Input, OptionNames, Outcome, to_json,
};
use svcca_core::conv::{ConvComparison, ConvMethod, Layout};
use svcca_core::{Comparison, JointMoments, KeepRule, Metric, Mode, Precision};

use crate::exit::{CmdResult, Failure};
use crate::source::{Block, Source};

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
    /// Arithmetic of the moments: f64 (the default), or mixed: f32 products per block,
    /// accumulated in f64 (dense layers). A comparison whose estimated error exceeds 1e-3 on a
    /// canonical correlation is refused.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F64)]
    pub precision: PrecisionArg,
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
    /// Datapoints read per block, at most (wide layers and conv images read fewer, within
    /// 16 MiB and 8 MiB per side).
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

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PrecisionArg {
    F64,
    Mixed,
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

    /// The comparison these flags describe.
    pub fn config(&self) -> CompareConfig {
        CompareConfig {
            metric: self.metric.into(),
            mode: self.mode(),
            keep: self.keep(),
            epsilon: self.epsilon,
            threshold: self.threshold,
            conv: self.conv.map(|method| {
                let layout = if self.nchw {
                    Layout::Nchw
                } else {
                    Layout::Nhwc
                };
                (method.into(), layout)
            }),
            allow_trivial: self.allow_trivial,
            block_rows: self.block_rows,
            memory_mb: self.memory_mb,
            precision: match self.precision {
                PrecisionArg::F64 => Precision::F64,
                PrecisionArg::Mixed => Precision::Mixed,
            },
            joint_moments: self.export_directions.is_some(),
        }
    }
}

/// A source read on the command's I/O runtime.
struct Opened<'r> {
    source: Source,
    runtime: &'r tokio::runtime::Runtime,
}

impl BlockSource for Opened<'_> {
    fn name(&self) -> &str {
        &self.source.name
    }

    fn shape(&self) -> &[usize] {
        &self.source.shape
    }

    fn next_block(&mut self, rows: usize) -> Result<Option<Block<'_>>, CompareError> {
        self.source.next(rows, self.runtime).map_err(read_error)
    }

    fn rewind(&mut self) -> Result<(), CompareError> {
        self.source.rewind().map_err(read_error)
    }
}

fn read_error(f: Failure) -> CompareError {
    CompareError::Read {
        message: f.message,
        retryable: f.retryable,
    }
}

fn compare_failure(e: CompareError, neurons_first: bool) -> Failure {
    match e {
        CompareError::Read { message, retryable } => Failure { message, retryable },
        e @ CompareError::DatapointMismatch { .. } if !neurons_first => Failure::fatal(format!(
            "{e} (if your files are [neurons, datapoints], pass --neurons-first)"
        )),
        e => Failure::fatal(e.to_string()),
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
    let x = Source::open(&args.x, args.neurons_first, &runtime)?;
    let y = Source::open(&args.y, args.neurons_first, &runtime)?;
    if args.export_directions.is_some() && args.conv.is_some() {
        return Err(Failure::fatal(
            "--export-directions is for dense layers; conv layers have per-frequency directions",
        ));
    }
    if let Some(dir) = &args.export_directions {
        refuse_existing_directions(dir)?;
    }
    let (mut x, mut y) = (
        Opened {
            source: x,
            runtime: &runtime,
        },
        Opened {
            source: y,
            runtime: &runtime,
        },
    );
    let outcome = svcca_compare::compare(&mut x, &mut y, &args.config(), &OptionNames::CLI)
        .map_err(|e| compare_failure(e, args.neurons_first))?;
    let (x, y) = (&x.source, &y.source);
    if let (
        Some(dir),
        Outcome::Dense {
            joint: Some(joint), ..
        },
    ) = (&args.export_directions, &outcome)
    {
        export_directions(dir, joint, (x, y), args.directions, &args)?;
    }
    let output = if args.json {
        to_json(input(x), input(y), args.metric.into(), &outcome)
    } else {
        match &outcome {
            Outcome::Dense { result, .. } => dense_table(x, y, result),
            Outcome::Conv(result) => conv_table(x, y, args.metric, result),
        }
    };
    outln!("{output}");
    Ok(())
}

fn input(s: &Source) -> Input<'_> {
    Input {
        name: &s.name,
        shape: &s.shape,
    }
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

fn shape_text(s: &Source) -> String {
    s.shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
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
    if let Some(e) = r.equal_k_mean.filter(|_| r.dims_x != r.dims_y) {
        let _ = writeln!(
            out,
            "equal-k mean {e:.6}  (both sides kept at {} directions)",
            r.dims_x.min(r.dims_y)
        );
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
