//! The analyses that need activations, computed with `svcca-core` on representations given as
//! row-major matrices ([`RowBlock`]) or `.npy` files (read with svcca-storage's reader):
//! intrinsic dimensionality and the SVCCA directions, class sensitivity, and null baselines.
//!
//! Their results are plain serialisable data ([`ComputedAnalyses`], stored as `analyses.json`
//! next to `results.json`) so a report draws them again without recomputing.
//!
//! # Intrinsic dimensionality
//! For a pair (a layer `A` against its final self or another seed `B`), each side is reduced to
//! its SVCCA directions under the keep rule (default: 99% of the variance; `K` for `A`, `k_B`
//! for `B`). Keeping only `A`'s top `k ≤ K` singular directions, with `ρ_i(k)` the canonical
//! correlations between those and `B`'s directions:
//! - `carried(k) = Σ_i ρ_i(k) / min(K, k_B)`: the share of the pair's SVCCA similarity that `A`'s
//!   top `k` directions carry. It never decreases with `k` (the whitened directions are nested,
//!   so the correlations interlace) and equals the SVCCA mean at `k = K`;
//! - `both(k)`: the mean canonical correlation with the top `k` directions kept on *both* sides
//!   (the paper's "SVCCA with k directions"); it is not monotone: adding weakly shared directions
//!   lowers a mean. Its sum `k · both(k)` never decreases (both sides' subspaces are nested, so
//!   each canonical correlation can only grow);
//! - `k99_carried`: the smallest `k` with `carried(k) ≥ 0.99 · carried(K)`. Each kept direction
//!   adds its own correlation to `carried`, so when the pair is similar this is close to `K` and
//!   says little about how many directions matter;
//! - the headline numbers: `shared = Σ_i ρ_i` over all kept directions (`= SVCCA · min(K, k_B)`),
//!   how many directions the two sides share in effect; `best_both` at `best_both_k`, the highest
//!   `both(k)` on the curve; and `k99_both`, the fewest directions kept on both sides that reach
//!   99% of `best_both`. On the digits MLP's layers against another seed, `both(k)` peaks within
//!   the first few directions (about 0.95) and falls to the SVCCA value (about 0.7) as weaker
//!   directions join: a few directions are shared almost exactly, the rest partly.
//!
//! # Class sensitivity
//! The paper's interpretability experiment: for each class `c`, SVCCA between a layer (reduced
//! under the keep rule) and the single column of class `c`'s logit over the probe set, at every
//! checkpoint. With one column on one side there is one canonical correlation: the multiple
//! correlation of that logit with the layer's top directions. The target is the logits matrix the
//! caller passes (usually the final checkpoint's, so the curves show when a layer holds what the
//! trained network reads out), or the class indicator `1[label = c]` built from the labels.
//!
//! # Null baselines
//! What the same shapes give with no relation, so a score can be judged:
//! - *gaussian*: independent standard Gaussian data with the pair's datapoints and *kept*
//!   dimensions on each side (SVCCA's CCA step sees exactly these shapes), seeded;
//! - *permuted*: the real pair with the datapoints of one side shuffled (seeded), which keeps
//!   each side's spectrum and breaks only the pairing.
//!
//! Reported as mean, std, min and max over `draws`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use svcca_core::faer::Mat;
use svcca_core::{
    CompareOptions, CoreError, JointMoments, KeepRule, Metric, MomentAccumulator, MomentParts,
    RowBlock, WhitenOptions, Whitening, canonical_correlations, compare_moments,
};

use crate::dynamics::DynamicsPoint;

/// Errors of the computed analyses. Each names what it was computing.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("{what}: {source}")]
    Core { what: String, source: CoreError },
    #[error("{source}")]
    Read {
        source: svcca_storage::npy::NpyError,
    },
    #[error("labels {path}: {detail}")]
    Labels { path: PathBuf, detail: String },
    #[error("{what}: {detail}")]
    Input { what: String, detail: String },
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn core<T>(what: impl Into<String>, r: Result<T, CoreError>) -> Result<T, ComputeError> {
    r.map_err(|source| ComputeError::Core {
        what: what.into(),
        source,
    })
}

/// A representation read from a `.npy` file: `[rows, …]` flattened to `[rows, row_len]` f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRepresentation {
    pub path: PathBuf,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl LoadedRepresentation {
    pub fn block(&self) -> RowBlock<'_> {
        RowBlock::F32 {
            data: &self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// Reads a `.npy` activation file (f32 or f64; conv layers are flattened per datapoint).
pub fn load_npy(path: impl AsRef<Path>) -> Result<LoadedRepresentation, ComputeError> {
    let path = path.as_ref();
    let array =
        svcca_storage::npy::read_f32(path).map_err(|source| ComputeError::Read { source })?;
    Ok(LoadedRepresentation {
        path: path.to_path_buf(),
        rows: array.rows(),
        cols: array.row_len(),
        data: array.data,
    })
}

/// Reads integer class labels from a 1-D `.npy` file (`<i8`, `<i4`, `<i2`, `|i1`, `|u1`): svcca's
/// activation reader takes floats only, and labels are the one integer input of a report.
pub fn load_labels(path: impl AsRef<Path>) -> Result<Vec<i64>, ComputeError> {
    let path = path.as_ref();
    let bad = |detail: String| ComputeError::Labels {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (bad magic)".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header".into()))?;
    let field = |name: &str| -> Option<&str> {
        let at = header.find(&format!("'{name}'"))? + name.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .unwrap_or("");
    let size = match descr {
        "<i8" => 8,
        "<i4" => 4,
        "<i2" => 2,
        "|i1" | "|u1" => 1,
        other => {
            return Err(bad(format!(
                "dtype {other:?} is not a little-endian integer; save labels with `y.astype('<i8')`"
            )));
        }
    };
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(bad("stored in Fortran order".into()));
    }
    let shape = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .unwrap_or("");
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap_or(usize::MAX))
        .collect();
    let n = match dims.as_slice() {
        [n] | [n, 1] if *n != usize::MAX => *n,
        _ => {
            return Err(bad(format!(
                "shape ({shape}) is not one label per datapoint"
            )));
        }
    };
    let data = &bytes[start + header_len..];
    if data.len() != n * size {
        return Err(bad(format!(
            "{n} labels need {} bytes, found {}",
            n * size,
            data.len()
        )));
    }
    Ok(data
        .chunks_exact(size)
        .map(|c| match (size, descr) {
            (8, _) => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
            (4, _) => i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64,
            (2, _) => i16::from_le_bytes(c.try_into().unwrap_or([0; 2])) as i64,
            (_, "|u1") => c[0] as i64,
            _ => c[0] as i8 as i64,
        })
        .collect())
}

/// Everything computed from activations that a report shows; stored as `analyses.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputedAnalyses {
    #[serde(default)]
    pub dimensionality: Vec<DimensionalityCurve>,
    #[serde(default)]
    pub class_sensitivity: Vec<ClassSensitivity>,
    #[serde(default)]
    pub null_baselines: Vec<NullBaseline>,
    /// What was left out and why (caps, sizes), shown in the report's notes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ComputedAnalyses {
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut analyses: Self = serde_json::from_slice(bytes)?;
        for curve in &mut analyses.dimensionality {
            if curve.best_both_k == 0 {
                curve.summarise();
            }
        }
        Ok(analyses)
    }
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys and finite numbers: serialising cannot fail.
        serde_json::to_vec_pretty(self).expect("analyses serialise to JSON")
    }
}

/// Options of the computed analyses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComputeOptions {
    /// SVCCA reduction of each side. Default: 99% of the variance, as in the paper.
    pub keep: KeepRule,
    /// Relative variance cutoff for near-constant neurons (core's default 1e-10).
    pub epsilon: f64,
    /// Most points on a dimensionality curve (all `k` up to this many, then spaced out).
    pub max_curve_points: usize,
}

impl Default for ComputeOptions {
    fn default() -> Self {
        Self {
            keep: KeepRule::VarianceFraction(0.99),
            epsilon: 1e-10,
            max_curve_points: 64,
        }
    }
}

impl ComputeOptions {
    pub fn with_keep(mut self, keep: KeepRule) -> Self {
        self.keep = keep;
        self
    }
    fn whiten(&self) -> WhitenOptions {
        WhitenOptions::default()
            .with_keep(self.keep)
            .with_epsilon(self.epsilon)
    }
    fn keep_text(&self) -> String {
        match self.keep {
            KeepRule::All => "all directions".into(),
            KeepRule::Dims(k) => format!("top {k} directions"),
            KeepRule::VarianceFraction(f) => format!("{}% of the variance", f * 100.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DimensionalityPoint {
    pub k: usize,
    /// Share of the pair's SVCCA similarity carried by `A`'s top `k` directions (monotone).
    pub carried: f64,
    /// Mean canonical correlation with the top `k` directions kept on both sides.
    pub both: f64,
}

/// Similarity as a function of the number of kept directions; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DimensionalityCurve {
    pub a: String,
    pub b: String,
    pub keep: String,
    /// `A`'s neurons and SVCCA directions under the keep rule.
    pub neurons: usize,
    pub kept: usize,
    pub kept_b: usize,
    pub points: Vec<DimensionalityPoint>,
    /// The pair's SVCCA mean (the curve's value at `k = kept`).
    pub full: f64,
    /// Smallest `k` carrying 99% of `full` (`carried`; close to `kept` for similar pairs).
    #[serde(alias = "k99")]
    pub k99_carried: usize,
    /// `Σ ρ_i` over all kept directions: the pair's shared directions in effect.
    #[serde(default)]
    pub shared: f64,
    /// The highest `both(k)` on the curve, and the `k` where it is reached (the smallest if tied).
    #[serde(default)]
    pub best_both: f64,
    #[serde(default)]
    pub best_both_k: usize,
    /// Smallest `k` on the curve with `both(k) ≥ 0.99 · best_both`.
    #[serde(default)]
    pub k99_both: usize,
}

fn joint_of(a: RowBlock<'_>, b: RowBlock<'_>, what: &str) -> Result<JointMoments, ComputeError> {
    let mut joint = JointMoments::new(a.cols(), b.cols());
    core(what, joint.push(a, b))?;
    Ok(joint)
}

/// The curve of `a` (the layer whose directions are counted) against `b`.
pub fn dimensionality(
    a: RowBlock<'_>,
    b: RowBlock<'_>,
    labels: (&str, &str),
    opts: &ComputeOptions,
) -> Result<DimensionalityCurve, ComputeError> {
    let what = format!("dimensionality of {} against {}", labels.0, labels.1);
    let joint = joint_of(a, b, &what)?;
    let n = joint.n();
    let wa = core(&what, Whitening::from_moments(&joint.x(), &opts.whiten()))?;
    let wb = core(&what, Whitening::from_moments(&joint.y(), &opts.whiten()))?;
    // Rows of the whitened cross product are A's directions in descending variance, so the
    // top-k reduction of A is its first k rows (core keeps directions nested).
    let cross = core(&what, wa.whitened_cross(&wb, joint.cross().as_ref()))?;
    let (kept, kept_b) = (wa.dims(), wb.dims());
    if kept == 0 || kept_b == 0 {
        return Err(ComputeError::Input {
            what,
            detail: "a side has no direction left to compare".into(),
        });
    }
    let denom = kept.min(kept_b) as f64;
    let rho = |rows: usize, cols: usize| -> Result<Vec<f64>, ComputeError> {
        let cc = core(
            &what,
            canonical_correlations(cross.as_ref().submatrix(0, 0, rows, cols), n, false),
        )?;
        Ok(cc
            .coefficients
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect())
    };
    let mut points = Vec::new();
    for k in curve_ks(kept, opts.max_curve_points) {
        let carried = rho(k, kept_b)?.iter().sum::<f64>() / denom;
        let both_rho = rho(k, k.min(kept_b))?;
        let both = both_rho.iter().sum::<f64>() / both_rho.len().max(1) as f64;
        points.push(DimensionalityPoint { k, carried, both });
    }
    let full = points.last().map_or(0.0, |p| p.carried);
    let mut curve = DimensionalityCurve {
        a: labels.0.to_string(),
        b: labels.1.to_string(),
        keep: opts.keep_text(),
        neurons: a.cols(),
        kept,
        kept_b,
        points,
        full,
        k99_carried: kept,
        shared: 0.0,
        best_both: 0.0,
        best_both_k: 0,
        k99_both: 0,
    };
    curve.summarise();
    Ok(curve)
}

impl DimensionalityCurve {
    /// Derives the summary numbers from the points (also for `analyses.json` files written before
    /// they were stored).
    fn summarise(&mut self) {
        let (kept, full) = (self.kept, self.full);
        self.k99_carried = self
            .points
            .iter()
            .find(|p| p.carried >= 0.99 * full)
            .map_or(kept, |p| p.k);
        self.shared = full * kept.min(self.kept_b) as f64;
        let (best_k, best) = self
            .points
            .iter()
            .fold((kept, f64::NEG_INFINITY), |best, p| {
                if p.both > best.1 { (p.k, p.both) } else { best }
            });
        self.best_both_k = best_k;
        self.best_both = if best.is_finite() { best } else { 0.0 };
        self.k99_both = self
            .points
            .iter()
            .find(|p| p.both >= 0.99 * best)
            .map_or(kept, |p| p.k);
    }
}

/// `1..=kept`, every `k` when few, else evenly spaced on a log scale (always including `kept`).
fn curve_ks(kept: usize, max_points: usize) -> Vec<usize> {
    let max_points = max_points.max(2);
    if kept <= max_points {
        return (1..=kept).collect();
    }
    let mut ks: Vec<usize> = (0..max_points)
        .map(|i| {
            (kept as f64)
                .powf(i as f64 / (max_points - 1) as f64)
                .round() as usize
        })
        .collect();
    ks.push(kept);
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// The top SVCCA directions of `A` found against `B`, as matrices a user can apply to compress
/// `A` as in the paper: `z = (x − mean) · projection` gives the `k` canonical variates (unit
/// variance, uncorrelated), and `x̂ = mean + z · reconstruction` is the least-squares
/// reconstruction of `x` from them (`reconstruction = projectionᵀ Σ_A`).
#[derive(Debug, Clone, PartialEq)]
pub struct SvccaDirections {
    pub a: String,
    pub b: String,
    pub neurons: usize,
    pub k: usize,
    pub mean: Vec<f64>,
    /// Row-major `[neurons, k]`.
    pub projection: Vec<f64>,
    /// Row-major `[k, neurons]`.
    pub reconstruction: Vec<f64>,
    /// The canonical correlation of each direction, descending.
    pub coefficients: Vec<f64>,
}

/// The top `k` SVCCA directions of `a` against `b` (`None`: all of them).
pub fn svcca_directions(
    a: RowBlock<'_>,
    b: RowBlock<'_>,
    labels: (&str, &str),
    k: Option<usize>,
    opts: &ComputeOptions,
) -> Result<SvccaDirections, ComputeError> {
    let what = format!("SVCCA directions of {} against {}", labels.0, labels.1);
    let joint = joint_of(a, b, &what)?;
    svcca_directions_from_moments(&joint, labels, k, opts)
}

/// As [`svcca_directions`], from the pair's joint moments (what a streaming reader such as
/// `svcca compare` accumulates), so the data never has to be held in memory.
pub fn svcca_directions_from_moments(
    joint: &JointMoments,
    labels: (&str, &str),
    k: Option<usize>,
    opts: &ComputeOptions,
) -> Result<SvccaDirections, ComputeError> {
    let what = format!("SVCCA directions of {} against {}", labels.0, labels.1);
    let mx = joint.x();
    let wa = core(&what, Whitening::from_moments(&mx, &opts.whiten()))?;
    let wb = core(&what, Whitening::from_moments(&joint.y(), &opts.whiten()))?;
    let cross = core(&what, wa.whitened_cross(&wb, joint.cross().as_ref()))?;
    let cc = core(
        &what,
        canonical_correlations(cross.as_ref(), joint.n(), true),
    )?;
    let r = cc.coefficients.len();
    let k = k.unwrap_or(r);
    if k == 0 || k > r {
        return Err(ComputeError::Input {
            what,
            detail: format!("asked for {k} directions; the pair has {r}"),
        });
    }
    let d = mx.dim();
    let p: Mat<f64> = wa.transform() * cc.u.as_ref().submatrix(0, 0, cc.u.nrows(), k);
    let sigma = core(&what, mx.covariance())?;
    let recon: Mat<f64> = p.transpose() * sigma.as_ref();
    Ok(SvccaDirections {
        a: labels.0.to_string(),
        b: labels.1.to_string(),
        neurons: d,
        k,
        mean: mx.mean().to_vec(),
        projection: (0..d)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| p[(i, j)])
            .collect(),
        reconstruction: (0..k)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| recon[(i, j)])
            .collect(),
        coefficients: cc.coefficients[..k].to_vec(),
    })
}

/// Element type of exported matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    F32,
    #[default]
    F64,
}

/// Writes `<stem>_projection.npy` (`[neurons, k]`), `<stem>_reconstruction.npy` (`[k, neurons]`)
/// and `<stem>_mean.npy` (`[neurons]`) under `dir`; returns the paths written.
pub fn write_directions(
    dir: &Path,
    stem: &str,
    directions: &SvccaDirections,
    precision: Precision,
) -> Result<Vec<PathBuf>, ComputeError> {
    let (d, k) = (directions.neurons, directions.k);
    let files = [
        ("projection", vec![d, k], &directions.projection),
        ("reconstruction", vec![k, d], &directions.reconstruction),
        ("mean", vec![d], &directions.mean),
    ];
    let mut written = Vec::new();
    for (name, shape, values) in files {
        let path = dir.join(format!("{stem}_{name}.npy"));
        let result = match precision {
            Precision::F64 => svcca_storage::npy::write_npy(&path, &shape, values),
            Precision::F32 => {
                let narrow: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                svcca_storage::npy::write_npy(&path, &shape, &narrow)
            }
        };
        result.map_err(|source| ComputeError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// What each class's column is compared with.
#[derive(Debug, Clone, Copy)]
pub enum ClassTarget<'a> {
    /// A logits matrix `[datapoints, classes]` (column `c` is class `c`'s logit).
    Logits(RowBlock<'a>),
    /// The indicator `1[label = c]` built from the labels.
    LabelIndicator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCurve {
    pub class: i64,
    /// Datapoints of this class in the probe set.
    pub count: usize,
    /// Similarity of the layer with the class's target at each checkpoint, ascending steps.
    pub points: Vec<DynamicsPoint>,
    /// Why a checkpoint is missing (for example a constant target column).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSensitivity {
    pub layer: String,
    /// What each class was compared with, in words.
    pub target: String,
    pub keep: String,
    pub classes: Vec<ClassCurve>,
}

impl ClassSensitivity {
    /// The checkpoints of any class, ascending.
    pub fn steps(&self) -> Vec<i64> {
        let mut steps: Vec<i64> = self
            .classes
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.step))
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// The mean similarity over the classes compared at `step` (`None`: none was).
    pub fn mean_at(&self, step: i64) -> Option<f64> {
        let values: Vec<f64> = self
            .classes
            .iter()
            .filter_map(|c| c.points.iter().find(|p| p.step == step))
            .map(|p| p.similarity)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// For each class, SVCCA between the layer at each checkpoint (`steps`: `(step, activations)`)
/// and the class's target column; see the module docs.
pub fn class_sensitivity(
    layer: &str,
    steps: &[(i64, RowBlock<'_>)],
    target: ClassTarget<'_>,
    target_name: &str,
    labels: &[i64],
    opts: &ComputeOptions,
) -> Result<ClassSensitivity, ComputeError> {
    let what = format!("class sensitivity of {layer}");
    let input = |detail: String| ComputeError::Input {
        what: what.clone(),
        detail,
    };
    if let Some(bad) = labels.iter().find(|&&l| l < 0) {
        return Err(input(format!(
            "label {bad} is negative; classes are numbered from 0"
        )));
    }
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    if classes == 0 {
        return Err(input("no labels".into()));
    }
    let mut indicator: Vec<f64>;
    let (target_block, target_text) = match target {
        ClassTarget::Logits(block) => {
            if block.cols() < classes {
                return Err(input(format!(
                    "{target_name} has {} columns but labels go up to class {}",
                    block.cols(),
                    classes - 1
                )));
            }
            (block, format!("the class's logit column of {target_name}"))
        }
        ClassTarget::LabelIndicator => {
            indicator = vec![0.0f64; labels.len() * classes];
            for (r, &l) in labels.iter().enumerate() {
                indicator[r * classes + l as usize] = 1.0;
            }
            (
                RowBlock::F64 {
                    data: &indicator,
                    rows: labels.len(),
                    cols: classes,
                },
                "the class indicator 1[label = c]".to_string(),
            )
        }
    };
    if target_block.rows() != labels.len() {
        return Err(input(format!(
            "{} labels for {} datapoints of {target_name}",
            labels.len(),
            target_block.rows()
        )));
    }
    let mut curves: Vec<ClassCurve> = (0..classes)
        .map(|c| ClassCurve {
            class: c as i64,
            count: labels.iter().filter(|&&l| l as usize == c).count(),
            points: Vec::new(),
            warnings: Vec::new(),
        })
        .collect();
    let mut ordered: Vec<&(i64, RowBlock<'_>)> = steps.iter().collect();
    ordered.sort_by_key(|(s, _)| *s);
    for (step, block) in ordered {
        let at = format!("{what} at step {step}");
        if block.rows() != labels.len() {
            return Err(input(format!(
                "step {step} has {} datapoints, labels {}",
                block.rows(),
                labels.len()
            )));
        }
        let joint = joint_of(*block, target_block, &at)?;
        let wx = core(&at, Whitening::from_moments(&joint.x(), &opts.whiten()))?;
        let my = joint.y();
        let my_m = my.comoment();
        let mxy = joint.cross();
        for (c, curve) in curves.iter_mut().enumerate() {
            let column = MomentParts {
                n: joint.n(),
                mean: vec![my.mean()[c]],
                comoment: vec![my_m[(c, c)]],
            };
            let one = core(&at, MomentAccumulator::from_parts(column))?;
            let wc = match Whitening::from_moments(
                &one,
                &WhitenOptions::default().with_epsilon(opts.epsilon),
            ) {
                Ok(w) if w.dims() == 1 => w,
                Ok(_) | Err(_) => {
                    curve.warnings.push(format!(
                        "step {step}: the target column of class {c} is constant"
                    ));
                    continue;
                }
            };
            let cross = core(
                &at,
                wx.whitened_cross(&wc, mxy.as_ref().submatrix(0, c, mxy.nrows(), 1)),
            )?;
            let cc = core(
                &at,
                canonical_correlations(cross.as_ref(), joint.n(), false),
            )?;
            let similarity = cc
                .coefficients
                .first()
                .copied()
                .unwrap_or(0.0)
                .clamp(0.0, 1.0);
            curve.points.push(DynamicsPoint {
                step: *step,
                similarity,
            });
        }
    }
    Ok(ClassSensitivity {
        layer: layer.to_string(),
        target: target_text,
        keep: opts.keep_text(),
        classes: curves,
    })
}

/// A null baseline: the metric on data with no relation, over several seeded draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NullBaseline {
    /// `gaussian` or `permuted`.
    pub kind: String,
    pub metric: String,
    /// The pair it stands for (`permuted`), or the shapes (`gaussian`).
    pub of: String,
    pub datapoints: u64,
    pub dims_a: usize,
    pub dims_b: usize,
    pub draws: usize,
    pub seed: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable and the same on every platform.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn spread(values: &[f64]) -> (f64, f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, var.sqrt(), min, max)
}

/// Independent Gaussian data of `datapoints` × `dims_a` and × `dims_b`, compared with `metric`
/// (for svcca the dims are the kept directions, so the CCA step is run on them directly).
pub fn gaussian_null(
    datapoints: u64,
    dims_a: usize,
    dims_b: usize,
    metric: &str,
    draws: usize,
    seed: u64,
) -> Result<NullBaseline, ComputeError> {
    let what = format!("gaussian null for {datapoints} datapoints × {dims_a}/{dims_b} dims");
    let core_metric = match metric {
        "svcca" | "cca" => Metric::Cca,
        other => core(&what, other.parse::<Metric>())?,
    };
    if draws == 0 || dims_a == 0 || dims_b == 0 {
        return Err(ComputeError::Input {
            what,
            detail: "needs at least one draw and one dimension per side".into(),
        });
    }
    let n = datapoints as usize;
    let mut rng = SplitMix64::new(seed);
    let opts = CompareOptions::default().with_metric(core_metric);
    let mut values = Vec::with_capacity(draws);
    for _ in 0..draws {
        let a: Vec<f64> = (0..n * dims_a).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..n * dims_b).map(|_| rng.normal()).collect();
        let joint = joint_of(
            RowBlock::F64 {
                data: &a,
                rows: n,
                cols: dims_a,
            },
            RowBlock::F64 {
                data: &b,
                rows: n,
                cols: dims_b,
            },
            &what,
        )?;
        values.push(core(&what, compare_moments(&joint, &opts))?.mean);
    }
    let (mean, std, min, max) = spread(&values);
    Ok(NullBaseline {
        kind: "gaussian".into(),
        metric: metric.to_string(),
        of: format!("{datapoints} × {dims_a} vs {datapoints} × {dims_b}"),
        datapoints,
        dims_a,
        dims_b,
        draws,
        seed,
        mean,
        std,
        min,
        max,
    })
}

/// The real pair with `b`'s datapoints shuffled, compared with SVCCA under `opts.keep`.
pub fn permuted_null(
    a: RowBlock<'_>,
    b: RowBlock<'_>,
    label: &str,
    draws: usize,
    seed: u64,
    opts: &ComputeOptions,
) -> Result<NullBaseline, ComputeError> {
    let what = format!("permuted null for {label}");
    if draws == 0 {
        return Err(ComputeError::Input {
            what,
            detail: "needs at least one draw".into(),
        });
    }
    if a.rows() != b.rows() {
        return Err(ComputeError::Input {
            what,
            detail: format!("{} vs {} datapoints", a.rows(), b.rows()),
        });
    }
    let (n, db) = (b.rows(), b.cols());
    let b_rows: Vec<f64> = (0..n)
        .flat_map(|r| (0..db).map(move |c| (r, c)))
        .map(|(r, c)| b.get(r, c))
        .collect();
    let compare = CompareOptions::default()
        .with_keep(opts.keep)
        .with_epsilon(opts.epsilon);
    let mut rng = SplitMix64::new(seed);
    let mut values = Vec::with_capacity(draws);
    let mut dims = (0, 0);
    let mut perm: Vec<usize> = (0..n).collect();
    let mut shuffled = vec![0.0f64; n * db];
    for _ in 0..draws {
        for i in (1..n).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        for (dst, &src) in perm.iter().enumerate() {
            shuffled[dst * db..(dst + 1) * db].copy_from_slice(&b_rows[src * db..(src + 1) * db]);
        }
        let joint = joint_of(
            a,
            RowBlock::F64 {
                data: &shuffled,
                rows: n,
                cols: db,
            },
            &what,
        )?;
        let c = core(&what, compare_moments(&joint, &compare))?;
        dims = (c.dims_x, c.dims_y);
        values.push(c.mean);
    }
    let (mean, std, min, max) = spread(&values);
    Ok(NullBaseline {
        kind: "permuted".into(),
        metric: "svcca".into(),
        of: label.to_string(),
        datapoints: n as u64,
        dims_a: dims.0,
        dims_b: dims.1,
        draws,
        seed,
        mean,
        std,
        min,
        max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_normal_looking() {
        let (mut a, mut b) = (SplitMix64::new(3), SplitMix64::new(3));
        let xs: Vec<f64> = (0..20_000).map(|_| a.normal()).collect();
        let ys: Vec<f64> = (0..20_000).map(|_| b.normal()).collect();
        assert_eq!(xs, ys);
        let (mean, std, _, _) = spread(&xs);
        assert!(
            mean.abs() < 0.03 && (std - 1.0).abs() < 0.03,
            "{mean} {std}"
        );
        assert_ne!(SplitMix64::new(4).next_u64(), SplitMix64::new(3).next_u64());
    }

    #[test]
    fn curve_points_cover_one_to_kept() {
        assert_eq!(curve_ks(5, 64), vec![1, 2, 3, 4, 5]);
        let ks = curve_ks(1000, 20);
        assert_eq!((ks[0], *ks.last().unwrap()), (1, 1000));
        assert!(ks.len() <= 21 && ks.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn analyses_written_before_the_headline_numbers_still_read() {
        // An analyses.json of the earlier layout: `k99`, no shared/best_both/k99_both.
        let old = r#"{"dimensionality": [{"a": "h1", "b": "h1 seed1", "keep": "99% of the variance",
            "neurons": 8, "kept": 4, "kept_b": 4, "full": 0.6, "k99": 4, "points": [
            {"k": 1, "carried": 0.24, "both": 0.96}, {"k": 2, "carried": 0.4, "both": 0.8},
            {"k": 3, "carried": 0.5, "both": 0.7}, {"k": 4, "carried": 0.6, "both": 0.6}]}]}"#;
        let analyses = ComputedAnalyses::from_json(old.as_bytes()).unwrap();
        let c = &analyses.dimensionality[0];
        assert_eq!(c.k99_carried, 4);
        assert_eq!((c.best_both_k, c.best_both, c.k99_both), (1, 0.96, 1));
        assert!((c.shared - 2.4).abs() < 1e-12);
        assert!(analyses.notes.is_empty());
        // And the new layout round-trips unchanged.
        let again = ComputedAnalyses::from_json(&analyses.to_json()).unwrap();
        assert_eq!(again, analyses);
    }

    #[test]
    fn gaussian_null_matches_its_shape() {
        // Independent data: small with many datapoints per dimension, larger with few.
        let many = gaussian_null(2000, 5, 5, "svcca", 3, 0).unwrap();
        let few = gaussian_null(60, 20, 20, "svcca", 3, 0).unwrap();
        assert!(many.mean < 0.1, "{}", many.mean);
        assert!(few.mean > 3.0 * many.mean, "{} vs {}", few.mean, many.mean);
        assert_eq!(gaussian_null(60, 20, 20, "svcca", 3, 0).unwrap(), few);
        assert!(gaussian_null(60, 20, 20, "nonsense", 3, 0).is_err());
        assert!(gaussian_null(60, 0, 20, "svcca", 3, 0).is_err());
    }

    #[test]
    fn labels_read_integer_npy_and_refuse_floats() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("y.npy");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let mut header = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }".to_string();
        header.push_str(&" ".repeat(64 - (10 + header.len() + 1) % 64));
        header.push('\n');
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in [2i64, 0, 9] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load_labels(&path).unwrap(), vec![2, 0, 9]);
        let floats = tmp.path().join("f.npy");
        svcca_storage::npy::write_npy(&floats, &[3], &[1.0f32, 2.0, 3.0]).unwrap();
        let err = load_labels(&floats).unwrap_err().to_string();
        assert!(err.contains("astype"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(load_labels(&path).is_err());
    }
}
