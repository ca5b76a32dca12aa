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
//!
//! ## Conv layers
//! A conv pair's result is not one CCA, so its null is not one either; it is computed the way the
//! result is ([`conv_cca_shapes`], [`conv_gaussian_null`]):
//! - *dft*: one Gaussian CCA per location of the frequency grid, with that location's kept
//!   dimensions on each side and the images as datapoints; complex circular Gaussian data on a
//!   side whose DFT values are complex there, real data where they are real (the zero and
//!   Nyquist frequencies). The result is the mean of every location's coefficients pooled, so
//!   the null pools the Gaussian coefficients the same way: `Σ_f Σ_i ρ_fi / Σ_f k_f`, each
//!   location weighted by its number of coefficients `k_f = min(dims_a_f, dims_b_f)`. A pair's
//!   summed dims (`dims_a` = Σ_f over 64 frequencies) treated as one CCA on the images would
//!   give a null near 1 for a result that never saw them together.
//! - *fold*: one real CCA over images × positions; *pool*: one real CCA over the images.
//!
//! Draws of one shape are cached ([`NullCache`]): the per-frequency shapes of a grid repeat, and
//! so do they across pairs. Every shape's draws start from the same seed, so frequencies of one
//! shape share their draws; the mean is unaffected, the std over draws is then an upper bound
//! for independent frequencies.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use svcca_core::faer::{Mat, c64};
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
    /// Conv pairs: how the null was made of per-frequency CCAs. `dims_a`/`dims_b` above are
    /// then the largest dimensions of any one of them, never their sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<ConvNull>,
}

/// The per-frequency make-up of a conv pair's null baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvNull {
    /// `dft`, `fold` or `pool`.
    pub method: String,
    /// CCAs pooled: the grid's locations for dft, 1 for fold and pool.
    pub frequencies: usize,
    /// Locations whose data is complex on at least one side.
    pub complex_frequencies: usize,
    /// Kept dimensions per frequency of each side.
    pub dims_a: DimsSummary,
    pub dims_b: DimsSummary,
}

/// Dimensions over the frequencies of a conv pair, each number named.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DimsSummary {
    pub min: usize,
    pub median: f64,
    pub max: usize,
    /// Sum over the frequencies: what no single CCA sees.
    pub total: usize,
}

impl DimsSummary {
    /// `None` for no values.
    pub fn of(values: &[usize]) -> Option<Self> {
        let mut v = values.to_vec();
        v.sort_unstable();
        let (min, max) = (*v.first()?, *v.last()?);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid] as f64
        } else {
            (v[mid - 1] + v[mid]) as f64 / 2.0
        };
        Some(Self {
            min,
            median,
            max,
            total: v.iter().sum(),
        })
    }

    /// `min 12 / median 20 / max 29, total 1299`.
    pub fn text(&self) -> String {
        format!(
            "min {} / median {} / max {}, total {}",
            self.min, self.median, self.max, self.total
        )
    }
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
        conv: None,
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
        conv: None,
    })
}

/// The shape of one CCA of a null baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CcaShape {
    pub datapoints: u64,
    pub dims_a: usize,
    pub dims_b: usize,
    /// The side's values are complex (a DFT frequency that is not its own conjugate).
    pub complex_a: bool,
    pub complex_b: bool,
}

impl CcaShape {
    /// A rough operation count of one draw, for cost caps.
    pub fn cost(&self) -> f64 {
        let width = if self.complex_a || self.complex_b {
            4.0
        } else {
            1.0
        };
        self.datapoints as f64 * ((self.dims_a + self.dims_b) as f64).powi(2) * width
    }
}

/// The CCAs a conv pair's result is made of: one per grid location for dft (conjugate
/// locations included, since the result pools their coefficients too), one for fold and pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvShapes {
    pub method: String,
    pub ccas: Vec<CcaShape>,
}

/// The CCA shapes behind a stored pair when it compares conv (or tokens) layers; `Ok(None)` for
/// a dense pair. `shape_a`/`shape_b` are the representations' per-datapoint shapes
/// (`[h, w, c]` for conv layers) and `datapoints` their images.
pub fn conv_cca_shapes(
    pair: &svcca_results::PairRecord,
    shape_a: &[usize],
    shape_b: &[usize],
    datapoints: u64,
) -> Result<Option<ConvShapes>, ComputeError> {
    let what = || format!("null of {} vs {}", pair.a.label(), pair.b.label());
    let stale = |detail: &str| ComputeError::Input {
        what: what(),
        detail: format!(
            "{detail}; these results were written before it was recorded, rerun the sweep to \
             get this conv pair's null"
        ),
    };
    let conv = match (&pair.conv, &pair.frequencies) {
        (None, None) if shape_a.len() < 3 && shape_b.len() < 3 => return Ok(None),
        (None, _) => return Err(stale("the pair does not record its conv method")),
        (Some(conv), _) => conv,
    };
    match (conv.method.as_str(), &pair.frequencies) {
        ("dft", Some(freqs)) => {
            let layer = |shape: &[usize]| match shape {
                [h, w, _] => Ok((*h, *w)),
                other => Err(ComputeError::Input {
                    what: what(),
                    detail: format!("a dft pair of a layer of shape {other:?}, not [h, w, c]"),
                }),
            };
            let (la, lb) = (layer(shape_a)?, layer(shape_b)?);
            let grid = (conv.grid[0], conv.grid[1]);
            let ccas = freqs
                .iter()
                .map(|f| {
                    let (Some(dims_a), Some(dims_b)) = (f.dims_a, f.dims_b) else {
                        return Err(stale("no per-frequency dims"));
                    };
                    Ok(CcaShape {
                        datapoints,
                        dims_a,
                        dims_b,
                        complex_a: !svcca_core::conv::real_at(f.i, f.j, grid, la),
                        complex_b: !svcca_core::conv::real_at(f.i, f.j, grid, lb),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if ccas.len() != grid.0 * grid.1 {
                return Err(ComputeError::Input {
                    what: what(),
                    detail: format!(
                        "{} frequency records for a {}x{} grid",
                        ccas.len(),
                        grid.0,
                        grid.1
                    ),
                });
            }
            Ok(Some(ConvShapes {
                method: conv.method.clone(),
                ccas,
            }))
        }
        ("fold" | "pool", _) => Ok(Some(ConvShapes {
            method: conv.method.clone(),
            ccas: vec![CcaShape {
                datapoints: conv.datapoints,
                dims_a: pair.dims_a,
                dims_b: pair.dims_b,
                complex_a: false,
                complex_b: false,
            }],
        })),
        (other, _) => Err(ComputeError::Input {
            what: what(),
            detail: format!("conv method {other:?} without per-frequency records"),
        }),
    }
}

/// Gaussian draws of CCA shapes, computed once per shape: `(Σρ, count)` per draw.
#[derive(Debug, Clone)]
pub struct NullCache {
    draws: usize,
    seed: u64,
    epsilon: f64,
    sums: BTreeMap<CcaShape, Vec<(f64, usize)>>,
}

impl NullCache {
    pub fn new(draws: usize, seed: u64) -> Self {
        Self {
            draws,
            seed,
            epsilon: ComputeOptions::default().epsilon,
            sums: BTreeMap::new(),
        }
    }

    /// Distinct shapes computed so far.
    pub fn shapes(&self) -> usize {
        self.sums.len()
    }

    /// Whether `shape` is already computed.
    pub fn has(&self, shape: &CcaShape) -> bool {
        self.sums.contains_key(shape)
    }

    /// The draws of `shape`: for each draw, independent standard Gaussian `a` (`datapoints ×
    /// dims_a`, row-major; a complex entry draws its real then its imaginary part) then `b`,
    /// from a generator seeded with the cache's seed, compared by the DFT method's own
    /// per-frequency CCA ([`svcca_core::conv::complex_cca`]).
    fn draws_of(&mut self, shape: CcaShape) -> Result<&[(f64, usize)], ComputeError> {
        if !self.sums.contains_key(&shape) {
            let what = format!(
                "gaussian null for {} datapoints × {}/{} dims",
                shape.datapoints, shape.dims_a, shape.dims_b
            );
            let n = shape.datapoints as usize;
            let mut rng = SplitMix64::new(self.seed);
            let mut draw = |dims: usize, complex: bool| -> Vec<c64> {
                (0..n * dims)
                    .map(|_| {
                        let re = rng.normal();
                        c64::new(re, if complex { rng.normal() } else { 0.0 })
                    })
                    .collect()
            };
            let mut out = Vec::with_capacity(self.draws);
            for _ in 0..self.draws {
                let a = draw(shape.dims_a, shape.complex_a);
                let b = draw(shape.dims_b, shape.complex_b);
                let rho = svcca_core::conv::complex_cca(
                    &a,
                    &b,
                    n,
                    (shape.dims_a, shape.dims_b),
                    self.epsilon,
                )
                .map_err(|e| ComputeError::Input {
                    what: what.clone(),
                    detail: e.to_string(),
                })?;
                out.push((rho.iter().sum(), rho.len()));
            }
            self.sums.insert(shape, out);
        }
        Ok(&self.sums[&shape])
    }
}

/// The Gaussian null of a conv pair (`of` names it) made of `shapes`' CCAs: for each draw, every
/// CCA's Gaussian coefficients pooled into one mean, as the pair's result pools its own; see the
/// module docs.
pub fn conv_gaussian_null(
    of: &str,
    metric: &str,
    shapes: &ConvShapes,
    cache: &mut NullCache,
) -> Result<NullBaseline, ComputeError> {
    let what = format!("gaussian null of {of}");
    if cache.draws == 0 {
        return Err(ComputeError::Input {
            what,
            detail: "needs at least one draw".into(),
        });
    }
    let mut pooled = vec![(0.0f64, 0usize); cache.draws];
    for shape in &shapes.ccas {
        if shape.dims_a == 0 || shape.dims_b == 0 {
            continue; // no coefficient at this frequency in the result either
        }
        for (acc, (sum, count)) in pooled.iter_mut().zip(cache.draws_of(*shape)?) {
            acc.0 += sum;
            acc.1 += count;
        }
    }
    if pooled.iter().any(|&(_, count)| count == 0) {
        return Err(ComputeError::Input {
            what,
            detail: "no frequency has a direction on both sides".into(),
        });
    }
    let values: Vec<f64> = pooled
        .iter()
        .map(|&(sum, count)| sum / count as f64)
        .collect();
    let (mean, std, min, max) = spread(&values);
    let dims = |side: fn(&CcaShape) -> usize| {
        let v: Vec<usize> = shapes.ccas.iter().map(side).collect();
        DimsSummary::of(&v).unwrap_or(DimsSummary {
            min: 0,
            median: 0.0,
            max: 0,
            total: 0,
        })
    };
    let (dims_a, dims_b) = (dims(|c| c.dims_a), dims(|c| c.dims_b));
    Ok(NullBaseline {
        kind: "gaussian".into(),
        metric: metric.to_string(),
        of: of.to_string(),
        datapoints: shapes.ccas.first().map_or(0, |c| c.datapoints),
        dims_a: dims_a.max,
        dims_b: dims_b.max,
        draws: cache.draws,
        seed: cache.seed,
        mean,
        std,
        min,
        max,
        conv: Some(ConvNull {
            method: shapes.method.clone(),
            frequencies: shapes.ccas.len(),
            complex_frequencies: shapes
                .ccas
                .iter()
                .filter(|c| c.complex_a || c.complex_b)
                .count(),
            dims_a,
            dims_b,
        }),
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

    /// Realifies complex rows (`n × d`, row-major) after centring each column: `[Re Z, −Im Z;
    /// Im Z, Re Z]` (`2n × 2d`). Its real CCA has every canonical correlation of the complex CCA
    /// twice, so the mean of its coefficients is the complex CCA's.
    fn realify(z: &[(f64, f64)], n: usize, d: usize) -> Vec<f64> {
        let mut mean = vec![(0.0, 0.0); d];
        for r in 0..n {
            for c in 0..d {
                mean[c].0 += z[r * d + c].0 / n as f64;
                mean[c].1 += z[r * d + c].1 / n as f64;
            }
        }
        let mut out = vec![0.0; 2 * n * 2 * d];
        for r in 0..n {
            for c in 0..d {
                let (re, im) = (z[r * d + c].0 - mean[c].0, z[r * d + c].1 - mean[c].1);
                out[r * 2 * d + c] = re;
                out[r * 2 * d + d + c] = -im;
                out[(n + r) * 2 * d + c] = im;
                out[(n + r) * 2 * d + d + c] = re;
            }
        }
        out
    }

    /// One frequency's Gaussian null computed on its own: the same draws (seeded generator, `a`
    /// then `b`, real part then imaginary part), compared by the core's plain real CCA (on the
    /// realified data where complex). Returns `(Σρ, count)` per draw, counted once per complex
    /// correlation.
    fn one_frequency_null(
        n: usize,
        (da, db): (usize, usize),
        (complex_a, complex_b): (bool, bool),
        draws: usize,
        seed: u64,
    ) -> Vec<(f64, usize)> {
        let mut rng = SplitMix64::new(seed);
        let opts = CompareOptions::default()
            .with_metric(Metric::Cca)
            .with_keep(KeepRule::All);
        (0..draws)
            .map(|_| {
                let mut side = |d: usize, complex: bool| -> Vec<(f64, f64)> {
                    (0..n * d)
                        .map(|_| {
                            let re = rng.normal();
                            (re, if complex { rng.normal() } else { 0.0 })
                        })
                        .collect()
                };
                let (a, b) = (side(da, complex_a), side(db, complex_b));
                let (xa, xb) = (realify(&a, n, da), realify(&b, n, db));
                let joint = joint_of(
                    RowBlock::F64 {
                        data: &xa,
                        rows: 2 * n,
                        cols: 2 * da,
                    },
                    RowBlock::F64 {
                        data: &xb,
                        rows: 2 * n,
                        cols: 2 * db,
                    },
                    "test",
                )
                .unwrap();
                let c = compare_moments(&joint, &opts).unwrap();
                // Each correlation appears twice in the realified CCA.
                assert_eq!(c.coefficients.len(), 2 * da.min(db));
                (c.coefficients.iter().sum::<f64>() / 2.0, da.min(db))
            })
            .collect()
    }

    #[test]
    fn conv_null_is_the_pooled_mean_of_independent_per_frequency_nulls() {
        use svcca_results::{ConvRecord, FrequencyRecord, PairRecord, RepresentationKey};
        // A dft pair of an 8x8 layer (16 channels) and a 4x4 one (12 channels): the 8x8
        // spectrum is cropped to the 4x4 grid, so locations are real on both sides, complex on
        // both, or (columns/rows of index 2) real on the 4x4 side only.
        let (n, seed, draws) = (90usize, 11u64, 3usize);
        let dims = |i: usize, j: usize| (3 + (i * 4 + j) % 5, 2 + (i + 2 * j) % 4);
        let key = |layer: &str| RepresentationKey {
            run: "convnet".into(),
            seed: Some(0),
            step: Some(1),
            layer: layer.into(),
            tags: Default::default(),
        };
        let frequencies: Vec<FrequencyRecord> = (0..16)
            .map(|k| {
                let (i, j) = (k / 4, k % 4);
                FrequencyRecord {
                    i,
                    j,
                    coefficients: vec![],
                    mean: 0.5,
                    dims_a: Some(dims(i, j).0),
                    dims_b: Some(dims(i, j).1),
                }
            })
            .collect();
        let pair = PairRecord {
            a: key("conv1"),
            b: key("conv2"),
            metric: "svcca".into(),
            mean: 0.5,
            google_mean: None,
            equal_k_mean: None,
            dims_a: frequencies.iter().filter_map(|f| f.dims_a).sum(),
            dims_b: frequencies.iter().filter_map(|f| f.dims_b).sum(),
            coefficients: vec![],
            weights: None,
            frequencies: Some(frequencies),
            conv: Some(ConvRecord {
                method: "dft".into(),
                datapoints: n as u64,
                grid: [4, 4],
            }),
            warnings: vec![],
        };
        let shapes = conv_cca_shapes(&pair, &[8, 8, 16], &[4, 4, 12], n as u64)
            .unwrap()
            .unwrap();
        let mut cache = NullCache::new(draws, seed);
        let null = conv_gaussian_null("conv1 vs conv2", "svcca", &shapes, &mut cache).unwrap();

        // Independently: each of the 16 frequencies' nulls, realness read off the crop by hand
        // (the 8-wide layer keeps frequencies 0, 1, -2, -1: real only at 0; the 4-wide one is
        // real at 0 and 2), pooled with the result's weights (its number of coefficients).
        let mut pooled = vec![(0.0, 0usize); draws];
        let mut per_frequency_means = Vec::new();
        for i in 0..4 {
            for j in 0..4 {
                let complex_a = !(i == 0 && j == 0);
                let complex_b = !(i % 2 == 0 && j % 2 == 0);
                let one = one_frequency_null(n, dims(i, j), (complex_a, complex_b), draws, seed);
                for (acc, (sum, count)) in pooled.iter_mut().zip(&one) {
                    acc.0 += sum;
                    acc.1 += count;
                }
                per_frequency_means
                    .push(one.iter().map(|(s, c)| s / *c as f64).sum::<f64>() / draws as f64);
            }
        }
        let values: Vec<f64> = pooled.iter().map(|(s, c)| s / *c as f64).collect();
        let want = values.iter().sum::<f64>() / draws as f64;
        assert!(
            (null.mean - want).abs() < 1e-9,
            "conv null {} vs independent {want}",
            null.mean
        );
        let (_, std, min, max) = spread(&values);
        assert!((null.std - std).abs() < 1e-9 && (null.min - min).abs() < 1e-9);
        assert!((null.max - max).abs() < 1e-9);
        // The weighting is what the test pins down: the plain mean of the frequencies' nulls
        // differs.
        let unweighted = per_frequency_means.iter().sum::<f64>() / 16.0;
        assert!((unweighted - want).abs() > 1e-4, "{unweighted} vs {want}");
        // 16 locations, 15 with complex values on a side; dims summarised, never summed alone.
        let conv = null.conv.as_ref().unwrap();
        assert_eq!((conv.frequencies, conv.complex_frequencies), (16, 15));
        assert_eq!(conv.dims_a.total, pair.dims_a);
        assert_eq!((conv.dims_a.min, conv.dims_a.max), (3, 7));
        assert_eq!((null.dims_a, null.dims_b), (7, 5));
        // Shapes repeat across the grid: fewer computed than locations.
        assert!(cache.shapes() < 16, "{}", cache.shapes());
    }

    #[test]
    fn conv_shapes_need_recorded_dims_and_say_so() {
        use svcca_results::{ConvRecord, FrequencyRecord, PairRecord, RepresentationKey};
        let key = RepresentationKey {
            run: "c".into(),
            seed: None,
            step: None,
            layer: "conv".into(),
            tags: Default::default(),
        };
        let mut pair = PairRecord {
            a: key.clone(),
            b: key,
            metric: "svcca".into(),
            mean: 0.5,
            google_mean: None,
            equal_k_mean: None,
            dims_a: 8,
            dims_b: 8,
            coefficients: vec![],
            weights: None,
            frequencies: Some(vec![FrequencyRecord {
                i: 0,
                j: 0,
                coefficients: vec![0.5],
                mean: 0.5,
                dims_a: None,
                dims_b: None,
            }]),
            conv: None,
            warnings: vec![],
        };
        let err = conv_cca_shapes(&pair, &[1, 1, 8], &[1, 1, 8], 50).unwrap_err();
        assert!(err.to_string().contains("rerun the sweep"), "{err}");
        // A dense pair has no conv shapes; fold's one CCA sees images × positions.
        pair.frequencies = None;
        assert_eq!(conv_cca_shapes(&pair, &[8], &[8], 50).unwrap(), None);
        pair.conv = Some(ConvRecord {
            method: "fold".into(),
            datapoints: 50 * 16,
            grid: [1, 1],
        });
        let fold = conv_cca_shapes(&pair, &[4, 4, 8], &[4, 4, 8], 50)
            .unwrap()
            .unwrap();
        assert_eq!(fold.ccas.len(), 1);
        assert_eq!(fold.ccas[0].datapoints, 800);
        assert!(!fold.ccas[0].complex_a && !fold.ccas[0].complex_b);
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
