//! Whitening one representation from its moments (the "pass 1" product of the design).
//!
//! Input: a [`MomentAccumulator`] over `d` neurons (`n`, `μ`, `M`; covariance `Σ = M/(n−1)`).
//! Output: a [`Whitening`] holding `μ` and a `d × k` transform `W` such that the whitened row
//! `z = (x − μ)ᵀ W` (length `k`) has the covariance
//!
//! * `Wᵀ Σ W = I_k` exactly (to rounding) in [`Mode::Default`];
//! * `Wᵀ Σ W = A (A + εI)⁻¹` in [`Mode::GoogleCompat`], google's regularised version, where `A` is
//!   the (kept, rescaled) covariance — i.e. `I` up to the ε ridge.
//!
//! Canonical correlations of a pair are then the singular values of `Wₓᵀ Σ_xy W_y` (see
//! [`crate::compare`]), so each representation is whitened once and reused for every pair.
//!
//! # Default mode
//! 1. Neurons with variance `≤ ε · max variance` are dropped as near-constant (reported).
//! 2. [`KeepRule::All`] (plain CCA, PWCCA): the correlation matrix `R = D^{-1/2} Σ D^{-1/2}` of
//!    the kept neurons (`D = diag Σ`) is eigendecomposed, `R = V Λ Vᵀ`; directions with
//!    `λ ≤ tol · λ_max` are dropped as numerically dependent, `tol = max(ε, d·2⁻⁵²)`, and
//!    `W = D^{-1/2} V_k Λ_k^{-1/2}`. Working on `R` keeps the rank cutoff independent of each
//!    neuron's scale, as CCA itself is.
//! 3. [`KeepRule::Dims`] / [`KeepRule::VarianceFraction`] (SVCCA): `Σ = V Λ Vᵀ` (descending)
//!    gives the singular directions of the centred data (`s_i² = (n−1) λ_i`); keep the top `k`
//!    (a fixed count, or the smallest `k` with `Σ_{i<k} λ_i ≥ f · Σ λ`), then drop those with
//!    `λ ≤ tol · λ_max`, and `W = V_k Λ_k^{-1/2}`.
//!
//! The rank actually used is `dims()`; it never produces NaN: a constant layer is an error.
//!
//! # google-compatible mode (`cca_core.get_cca_similarity`)
//! With `S = Σ / max|Σ_ij|` (google rescales each side by its largest covariance entry):
//! neurons with `S_ii < ε` are dropped, `A = S_kept + εI`, and `G = A^{-1/2}` computed as google
//! does (pseudo-inverse with cutoff `1e-15·λ_max`, then the inverse square root of its
//! eigenvalues). `W = E_kept G / sqrt(max|Σ_ij|)`, so the columns of `W` correspond to the kept
//! neurons (which google's PWCCA needs). For SVCCA the recipe's reduction comes first (top-`k`
//! eigenvectors `V_k` of the full covariance, no neuron dropped), then the same procedure on
//! the reduced covariance `V_kᵀ Σ V_k`, giving `W = V_k E_kept G / sqrt(max)`.

use faer::{Accum, Mat, MatMut, MatRef};
use serde::Serialize;

use crate::error::{CoreError, Result};
use crate::moments::{MomentAccumulator, Precision, RowBlock, mixed_precision_bound};

/// Which arithmetic to follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Numerically robust: relative eigenvalue cutoff, exact whitening, paper-faithful PWCCA.
    #[default]
    Default,
    /// Reproduces google/svcca's `get_cca_similarity` and `compute_pwcca`.
    GoogleCompat,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Default => "default",
            Mode::GoogleCompat => "google-compat",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "default" => Ok(Mode::Default),
            "google-compat" | "google_compat" | "google" => Ok(Mode::GoogleCompat),
            _ => Err(CoreError::InvalidOption {
                name: "mode",
                detail: format!("unknown mode {s:?}; expected default or google-compat"),
            }),
        }
    }
}

/// How many directions of a representation to keep before CCA.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepRule {
    /// Every (non-constant, numerically independent) direction: plain CCA.
    All,
    /// The top `k` singular directions (SVCCA with a fixed count; fewer if the rank is lower).
    Dims(usize),
    /// The smallest `k` whose eigenvalues reach this fraction of the total variance (SVCCA,
    /// the paper uses 0.99).
    VarianceFraction(f64),
}

impl KeepRule {
    /// How many leading eigenvalues (sorted descending) this rule keeps. Negative eigenvalues
    /// (round-off of a semi-definite matrix) count as zero variance. The one definition used by
    /// the dense whitening and by each frequency of the conv methods, so that a `k` means the
    /// same everywhere.
    pub fn count(&self, descending_eigenvalues: &[f64]) -> usize {
        let vals = descending_eigenvalues;
        match *self {
            KeepRule::All => vals.len(),
            KeepRule::Dims(k) => k.min(vals.len()),
            KeepRule::VarianceFraction(f) => {
                let total: f64 = vals.iter().map(|v| v.max(0.0)).sum();
                if total <= 0.0 {
                    return vals.len().min(1);
                }
                let mut acc = 0.0;
                for (i, v) in vals.iter().enumerate() {
                    acc += v.max(0.0);
                    if acc / total >= f {
                        return i + 1;
                    }
                }
                vals.len()
            }
        }
    }

    fn validate(&self) -> Result<()> {
        match *self {
            KeepRule::All => Ok(()),
            KeepRule::Dims(0) => Err(CoreError::InvalidOption {
                name: "keep_dims",
                detail: "must keep at least 1 dimension".into(),
            }),
            KeepRule::Dims(_) => Ok(()),
            KeepRule::VarianceFraction(f) if f > 0.0 && f <= 1.0 => Ok(()),
            KeepRule::VarianceFraction(f) => Err(CoreError::InvalidOption {
                name: "keep_variance",
                detail: format!("{f} is not a fraction in (0, 1]"),
            }),
        }
    }
}

/// Options of [`Whitening::from_moments`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WhitenOptions {
    /// Arithmetic to follow.
    pub mode: Mode,
    /// Directions to keep (SVCCA reduction); `All` for CCA / PWCCA.
    pub keep: KeepRule,
    /// Relative variance cutoff (and, in google-compat mode, the ridge). Default 1e-10.
    pub epsilon: f64,
    /// The precision the moments were accumulated in. With [`Precision::Mixed`] the whitening
    /// is refused where the f32 products' error could exceed [`MIXED_PRECISION_TOLERANCE`].
    pub precision: Precision,
}

/// The most mixed precision may move a canonical correlation, by [`mixed_precision_bound`]'s
/// estimate; a representation whose bound is larger is refused.
pub const MIXED_PRECISION_TOLERANCE: f64 = 1e-3;

impl Default for WhitenOptions {
    fn default() -> Self {
        WhitenOptions {
            mode: Mode::Default,
            keep: KeepRule::All,
            epsilon: 1e-10,
            precision: Precision::F64,
        }
    }
}

impl WhitenOptions {
    /// Sets the mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the keep rule.
    pub fn with_keep(mut self, keep: KeepRule) -> Self {
        self.keep = keep;
        self
    }
    /// Sets epsilon.
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Sets the precision the moments were accumulated in.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.mode == Mode::GoogleCompat && self.precision != Precision::F64 {
            return Err(CoreError::InvalidOption {
                name: "precision",
                detail: "google-compat mode reproduces google/svcca's f64 arithmetic; mixed \
                         precision is only available in the default mode"
                    .into(),
            });
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(CoreError::InvalidOption {
                name: "epsilon",
                detail: format!("{} must be finite and >= 0", self.epsilon),
            });
        }
        self.keep.validate()
    }
}

/// Plain-data form of a [`Whitening`], so the engine can ship it to workers or store it.
#[derive(Clone, Debug, PartialEq)]
pub struct WhiteningParts {
    /// Mode it was built in.
    pub mode: Mode,
    /// Datapoints of the moments it came from.
    pub n: u64,
    /// Mean, length `d`.
    pub mean: Vec<f64>,
    /// Number of whitened dims `k`.
    pub dims: usize,
    /// `W`, `d × k`, column-major (column `j` is `transform[j*d..(j+1)*d]`).
    pub transform: Vec<f64>,
    /// Neurons that entered the decomposition.
    pub kept_neurons: Vec<usize>,
    /// Neurons dropped as near-constant.
    pub dropped_neurons: Vec<usize>,
    /// Eigenvalues, descending (see [`Whitening::spectrum`]).
    pub spectrum: Vec<f64>,
    /// Directions chosen by the keep rule before the rank cutoff.
    pub reduced_dims: usize,
    /// Diagnostics.
    pub warnings: Vec<String>,
}

/// The whitening of one representation; see the module docs.
#[derive(Clone, Debug)]
pub struct Whitening {
    mode: Mode,
    n: u64,
    mean: Vec<f64>,
    transform: Mat<f64>,
    kept_neurons: Vec<usize>,
    dropped_neurons: Vec<usize>,
    spectrum: Vec<f64>,
    reduced_dims: usize,
    warnings: Vec<String>,
}

/// Eigendecomposition of a symmetric matrix (lower triangle read), eigenvalues descending.
pub(crate) fn eigh_desc(a: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let (s, u) = crate::decompose::self_adjoint_eigen(a).map_err(|_| CoreError::NoConvergence {
        what: "self-adjoint eigendecomposition",
    })?;
    let k = a.nrows();
    let s = s.column_vector();
    // faer returns ascending order.
    let vals: Vec<f64> = (0..k).map(|i| s[k - 1 - i]).collect();
    let vecs = Mat::from_fn(k, k, |i, j| u[(i, k - 1 - j)]);
    Ok((vals, vecs))
}

/// The rank cutoff of the default mode: eigenvalues `≤ tol·λ_max` are numerically dependent,
/// `tol = max(ε, d·2⁻⁵²)` for a `d × d` matrix. Shared by the dense and the per-frequency
/// whitening so that both drop the same directions of the same spectrum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RankCutoff {
    pub tol: f64,
}

impl RankCutoff {
    pub(crate) fn new(epsilon: f64, dims: usize) -> Self {
        RankCutoff {
            tol: epsilon.max(dims as f64 * f64::EPSILON),
        }
    }

    /// How many leading eigenvalues (sorted descending) lie above the cutoff.
    pub(crate) fn rank(&self, descending_eigenvalues: &[f64]) -> usize {
        let lmax = descending_eigenvalues.first().copied().unwrap_or(0.0);
        descending_eigenvalues
            .iter()
            .take_while(|&&l| l > self.tol * lmax)
            .count()
    }
}

/// The eigenvalue gains of google's `positivedef_matrix_sqrt(pinv(A))`: `1/sqrt(λ)` where
/// `|λ| > 1e-15·max|λ|` (numpy's pinv cutoff), else 0; a negative eigenvalue above the cutoff
/// (where google gives NaN) also gets 0 and is counted. Shared by the dense and the per-frequency
/// (complex) google-compat whitening. Returns (gains, negatives).
pub(crate) fn google_inv_sqrt_gains(eigenvalues: &[f64]) -> (Vec<f64>, usize) {
    let amax = eigenvalues.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let cutoff = 1e-15 * amax;
    let mut negative = 0usize;
    let gains = eigenvalues
        .iter()
        .map(|&l| {
            if l.abs() <= cutoff {
                0.0
            } else if l < 0.0 {
                negative += 1;
                0.0
            } else {
                1.0 / l.sqrt()
            }
        })
        .collect();
    (gains, negative)
}

/// google's `positivedef_matrix_sqrt(pinv(A))` for a symmetric `A`: `V diag(g) Vᵀ` with
/// `g = 1/sqrt(λ)` where `|λ| > 1e-15·max|λ|` (numpy's pinv cutoff), else 0. A negative
/// eigenvalue above the cutoff (where google would produce NaN) gets 0 and a warning.
fn google_inv_sqrt(a: MatRef<'_, f64>, warnings: &mut Vec<String>, side: &str) -> Result<Mat<f64>> {
    let (vals, vecs) = eigh_desc(a)?;
    let (g, negative) = google_inv_sqrt_gains(&vals);
    if negative > 0 {
        warnings.push(format!(
            "{side}: {negative} negative eigenvalue(s) of the regularised covariance \
             (google would return NaN here); treated as zero. Use a larger epsilon"
        ));
    }
    let k = a.nrows();
    let scaled = Mat::from_fn(k, k, |i, j| vecs[(i, j)] * g[j]);
    let mut out = Mat::zeros(k, k);
    crate::products::matmul(
        out.as_mut(),
        Accum::Replace,
        scaled.as_ref(),
        vecs.transpose(),
        1.0,
        crate::parallelism(),
    );
    Ok(out)
}

/// (`W`, kept, dropped, spectrum) of [`google_whiten_cov`].
type GoogleWhitened = (Mat<f64>, Vec<usize>, Vec<usize>, Vec<f64>);

/// google's CCA whitening of a (reduced) covariance `c` (`m × m`, full symmetric):
/// returns (`G / sqrt(max)` with rows = all m inputs, kept indices, dropped indices).
fn google_whiten_cov(
    c: MatRef<'_, f64>,
    epsilon: f64,
    warnings: &mut Vec<String>,
    side: &str,
) -> Result<GoogleWhitened> {
    let m = c.nrows();
    let mut cmax = 0.0f64;
    for j in 0..m {
        for i in 0..m {
            cmax = cmax.max(c[(i, j)].abs());
        }
    }
    if cmax == 0.0 {
        return Err(CoreError::ConstantLayer {
            side: side_name(side),
            neurons: m,
            cutoff: epsilon,
        });
    }
    let (kept, dropped): (Vec<usize>, Vec<usize>) =
        (0..m).partition(|&i| (c[(i, i)] / cmax).abs() >= epsilon);
    if kept.is_empty() {
        return Err(CoreError::ConstantLayer {
            side: side_name(side),
            neurons: m,
            cutoff: epsilon,
        });
    }
    let k = kept.len();
    let a = Mat::from_fn(k, k, |i, j| {
        c[(kept[i], kept[j])] / cmax + if i == j { epsilon } else { 0.0 }
    });
    let g = google_inv_sqrt(a.as_ref(), warnings, side)?;
    let s = 1.0 / cmax.sqrt();
    let mut w = Mat::zeros(m, k);
    for j in 0..k {
        for (i, &ki) in kept.iter().enumerate() {
            w[(ki, j)] = g[(i, j)] * s;
        }
    }
    // Spectrum of the kept covariance, recovered from the regularised one.
    let (vals, _) = eigh_desc(a.as_ref())?;
    let spectrum = vals
        .iter()
        .map(|&l| ((l - epsilon) * cmax).max(0.0))
        .collect();
    Ok((w, kept, dropped, spectrum))
}

/// Rows per chunk of a projection ([`Whitening::whiten_rows_into`]): as many `d`-wide f64 rows
/// as fit in 2 MiB, so that the widened chunk is still in L2/L3 when the product reads it (with
/// two threads at 20,000 × 512, 2 MB chunks took 15% less time than 8 MB ones, 1 and 4 MB within
/// 5%, measured when the moments used the same chunks), but never fewer than 256 rows (wide
/// layers still give the product tall blocks), and at most `rows`.
fn projection_chunk_rows(d: usize, rows: usize) -> usize {
    const CHUNK_BYTES: usize = 2 << 20;
    const MIN_CHUNK_ROWS: usize = 256;
    (CHUNK_BYTES / (8 * d.max(1))).max(MIN_CHUNK_ROWS).min(rows)
}

/// Refuses a whitening of mixed-precision moments whose `k` kept directions (of the descending
/// eigenvalues `vals` of the decomposed matrix) are too ill-conditioned for f32 products.
fn check_mixed_precision(
    opts: &WhitenOptions,
    side: &str,
    vals: &[f64],
    k: usize,
    n: u64,
) -> Result<()> {
    if opts.precision != Precision::Mixed {
        return Ok(());
    }
    let trace: f64 = vals.iter().map(|v| v.max(0.0)).sum();
    let smallest = vals[k - 1];
    let bound = mixed_precision_bound(trace, vals.len(), smallest, n);
    if bound <= MIXED_PRECISION_TOLERANCE {
        return Ok(());
    }
    Err(CoreError::MixedPrecisionUnsafe {
        side: side_name(side),
        bound,
        tolerance: MIXED_PRECISION_TOLERANCE,
        kept: k,
        smallest_share: smallest / trace,
    })
}

fn side_name(side: &str) -> &'static str {
    match side {
        "x" => "x",
        "y" => "y",
        _ => "representation",
    }
}

impl Whitening {
    /// Whitens one representation from its moments. `side` in errors is "representation";
    /// use [`Whitening::from_moments_named`] to name it "x" or "y".
    pub fn from_moments(m: &MomentAccumulator, opts: &WhitenOptions) -> Result<Whitening> {
        Self::from_moments_named(m, opts, "representation")
    }

    /// Whitens x and y (so named in errors and warnings) side by side. Each decomposition runs
    /// on one thread, so doing the two at once halves their wall time without changing a bit.
    /// They run one after the other with [`crate::set_parallelism`]`(1)`, and in google-compat
    /// mode, whose pseudo-inverse and square root hold about twice the workspace: side by side
    /// they took a 2,048-neuron pair's peak from 920 MB to 1.05–1.08 GB. On two failures, x's
    /// error is the one returned, as if run in order.
    pub fn pair_from_moments(
        mx: &MomentAccumulator,
        my: &MomentAccumulator,
        opts: &WhitenOptions,
    ) -> Result<(Whitening, Whitening)> {
        let x = || Self::from_moments_named(mx, opts, "x");
        let y = || Self::from_moments_named(my, opts, "y");
        let (wx, wy) = if crate::parallelism() == 1 || opts.mode == Mode::GoogleCompat {
            (x(), y())
        } else {
            rayon::join(x, y)
        };
        Ok((wx?, wy?))
    }

    /// As [`Whitening::from_moments`], naming the side ("x" or "y") in errors and warnings.
    pub fn from_moments_named(
        m: &MomentAccumulator,
        opts: &WhitenOptions,
        side: &str,
    ) -> Result<Whitening> {
        // Moments accumulated in mixed precision are checked whatever the options say.
        let opts = &WhitenOptions {
            precision: match (opts.precision, m.precision()) {
                (Precision::F64, Precision::F64) => Precision::F64,
                _ => Precision::Mixed,
            },
            ..*opts
        };
        opts.validate()?;
        let d = m.dim();
        if d == 0 {
            return Err(CoreError::Empty {
                what: "a representation with no neurons",
            });
        }
        if m.n() == 0 {
            return Err(CoreError::Empty {
                what: "a representation with no datapoints",
            });
        }
        if m.n() < 2 {
            return Err(CoreError::TooFewDatapoints { n: m.n() });
        }
        let cov = m.covariance()?;
        match opts.mode {
            Mode::GoogleCompat => Self::google(m, cov, opts, side),
            Mode::Default => Self::default_mode(m, cov, opts, side),
        }
    }

    fn google(
        m: &MomentAccumulator,
        cov: Mat<f64>,
        opts: &WhitenOptions,
        side: &str,
    ) -> Result<Whitening> {
        let d = m.dim();
        let mut warnings = Vec::new();
        match opts.keep {
            KeepRule::All => {
                let (w, kept, dropped, spectrum) =
                    google_whiten_cov(cov.as_ref(), opts.epsilon, &mut warnings, side)?;
                let k = kept.len();
                Ok(Whitening {
                    mode: Mode::GoogleCompat,
                    n: m.n(),
                    mean: m.mean().to_vec(),
                    transform: w,
                    kept_neurons: kept,
                    dropped_neurons: dropped,
                    spectrum,
                    reduced_dims: k,
                    warnings,
                })
            }
            rule => {
                let (vals, vecs) = eigh_desc(cov.as_ref())?;
                if vals.first().copied().unwrap_or(0.0) <= 0.0 {
                    return Err(CoreError::ConstantLayer {
                        side: side_name(side),
                        neurons: d,
                        cutoff: 0.0,
                    });
                }
                let k = rule.count(&vals);
                let vk = vecs.as_ref().subcols(0, k);
                // The recipe runs np.cov on the projected data: reproduce V_kᵀ Σ V_k.
                let mut tmp = Mat::zeros(d, k);
                crate::products::matmul(
                    tmp.as_mut(),
                    Accum::Replace,
                    cov.as_ref(),
                    vk,
                    1.0,
                    crate::parallelism(),
                );
                let mut red = Mat::zeros(k, k);
                crate::products::matmul(
                    red.as_mut(),
                    Accum::Replace,
                    vk.transpose(),
                    tmp.as_ref(),
                    1.0,
                    crate::parallelism(),
                );
                let red = symmetrise(red);
                let (g, kept, dropped, _) =
                    google_whiten_cov(red.as_ref(), opts.epsilon, &mut warnings, side)?;
                if !dropped.is_empty() {
                    warnings.push(format!(
                        "{side}: {} of the {k} SVD directions have relative variance below \
                         epsilon {:e} and were dropped by google's CCA",
                        dropped.len(),
                        opts.epsilon
                    ));
                }
                let mut w = Mat::zeros(d, kept.len());
                crate::products::matmul(
                    w.as_mut(),
                    Accum::Replace,
                    vk,
                    g.as_ref(),
                    1.0,
                    crate::parallelism(),
                );
                Ok(Whitening {
                    mode: Mode::GoogleCompat,
                    n: m.n(),
                    mean: m.mean().to_vec(),
                    transform: w,
                    kept_neurons: (0..d).collect(),
                    dropped_neurons: Vec::new(),
                    spectrum: vals.iter().map(|v| v.max(0.0)).collect(),
                    reduced_dims: k,
                    warnings,
                })
            }
        }
    }

    fn default_mode(
        m: &MomentAccumulator,
        cov: Mat<f64>,
        opts: &WhitenOptions,
        side: &str,
    ) -> Result<Whitening> {
        let d = m.dim();
        let mut warnings = Vec::new();
        let var: Vec<f64> = (0..d).map(|i| cov[(i, i)]).collect();
        let vmax = var.iter().fold(0.0f64, |a, &b| a.max(b));
        let (kept, dropped): (Vec<usize>, Vec<usize>) =
            (0..d).partition(|&i| var[i] > opts.epsilon * vmax && var[i] > 0.0);
        if kept.is_empty() {
            return Err(CoreError::ConstantLayer {
                side: side_name(side),
                neurons: d,
                cutoff: opts.epsilon,
            });
        }
        let dk = kept.len();
        let cutoff = RankCutoff::new(opts.epsilon, dk);
        let tol = cutoff.tol;
        let (transform, spectrum, reduced_dims) = match opts.keep {
            KeepRule::All => {
                let scale: Vec<f64> = kept.iter().map(|&i| 1.0 / var[i].sqrt()).collect();
                let r = Mat::from_fn(dk, dk, |i, j| cov[(kept[i], kept[j])] * scale[i] * scale[j]);
                let (vals, vecs) = eigh_desc(r.as_ref())?;
                let k = cutoff.rank(&vals).max(1);
                if k < dk {
                    warnings.push(format!(
                        "{side}: {} of {dk} directions are numerically dependent \
                         (eigenvalue <= {tol:e} x the largest of the correlation matrix) \
                         and were not used; rank used = {k}",
                        dk - k
                    ));
                }
                check_mixed_precision(opts, side, &vals, k, m.n())?;
                let mut w = Mat::zeros(d, k);
                for j in 0..k {
                    let f = 1.0 / vals[j].sqrt();
                    for (i, &ki) in kept.iter().enumerate() {
                        w[(ki, j)] = vecs[(i, j)] * scale[i] * f;
                    }
                }
                (w, vals, k)
            }
            rule => {
                let c = Mat::from_fn(dk, dk, |i, j| cov[(kept[i], kept[j])]);
                let (vals, vecs) = eigh_desc(c.as_ref())?;
                let k_rule = rule.count(&vals);
                // The cutoff is relative to the largest eigenvalue of all, not of the kept ones.
                let k = cutoff.rank(&vals).min(k_rule).max(1);
                if k < k_rule {
                    warnings.push(format!(
                        "{side}: the keep rule asked for {k_rule} directions but only {k} have \
                         eigenvalue > {tol:e} x the largest; rank used = {k}"
                    ));
                }
                check_mixed_precision(opts, side, &vals, k, m.n())?;
                let mut w = Mat::zeros(d, k);
                for j in 0..k {
                    let f = 1.0 / vals[j].sqrt();
                    for (i, &ki) in kept.iter().enumerate() {
                        w[(ki, j)] = vecs[(i, j)] * f;
                    }
                }
                (w, vals.iter().map(|v| v.max(0.0)).collect(), k_rule)
            }
        };
        Ok(Whitening {
            mode: Mode::Default,
            n: m.n(),
            mean: m.mean().to_vec(),
            transform,
            kept_neurons: kept,
            dropped_neurons: dropped,
            spectrum,
            reduced_dims,
            warnings,
        })
    }

    /// The mode it was built in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of datapoints of the moments it was built from.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Input neurons `d`.
    pub fn input_dim(&self) -> usize {
        self.mean.len()
    }

    /// Whitened dimensions `k` (columns of `W`): the rank actually used.
    pub fn dims(&self) -> usize {
        self.transform.ncols()
    }

    /// The mean `μ` subtracted before projecting.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The `d × k` transform `W` (`z = (x − μ)ᵀ W`).
    pub fn transform(&self) -> MatRef<'_, f64> {
        self.transform.as_ref()
    }

    /// Neurons that entered the decomposition, ascending.
    pub fn kept_neurons(&self) -> &[usize] {
        &self.kept_neurons
    }

    /// Neurons dropped as (near-)constant, ascending.
    pub fn dropped_neurons(&self) -> &[usize] {
        &self.dropped_neurons
    }

    /// Eigenvalues (descending) of the decomposed matrix: the covariance of the kept neurons
    /// (SVCCA, and google-compat CCA), or their correlation matrix (default-mode CCA/PWCCA).
    pub fn spectrum(&self) -> &[f64] {
        &self.spectrum
    }

    /// Directions selected by the keep rule before the rank cutoff (SVCCA's `k`); for
    /// [`KeepRule::All`], the number of kept neurons' directions considered.
    pub fn reduced_dims(&self) -> usize {
        self.reduced_dims
    }

    /// Diagnostics gathered while whitening.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The plain-data form.
    pub fn to_parts(&self) -> WhiteningParts {
        let (d, k) = (self.input_dim(), self.dims());
        let mut transform = Vec::with_capacity(d * k);
        for j in 0..k {
            for i in 0..d {
                transform.push(self.transform[(i, j)]);
            }
        }
        WhiteningParts {
            mode: self.mode,
            n: self.n,
            mean: self.mean.clone(),
            dims: k,
            transform,
            kept_neurons: self.kept_neurons.clone(),
            dropped_neurons: self.dropped_neurons.clone(),
            spectrum: self.spectrum.clone(),
            reduced_dims: self.reduced_dims,
            warnings: self.warnings.clone(),
        }
    }

    /// Rebuilds a whitening from [`WhiteningParts`], checking lengths and finiteness.
    pub fn from_parts(p: WhiteningParts) -> Result<Whitening> {
        let d = p.mean.len();
        if p.transform.len() != d * p.dims {
            return Err(CoreError::InvalidParts {
                detail: format!(
                    "transform needs {d} x {} = {} values, got {}",
                    p.dims,
                    d * p.dims,
                    p.transform.len()
                ),
            });
        }
        if p.mean.iter().chain(&p.transform).any(|v| !v.is_finite()) {
            return Err(CoreError::InvalidParts {
                detail: "whitening has a non-finite mean or transform entry".into(),
            });
        }
        if p.kept_neurons
            .iter()
            .chain(&p.dropped_neurons)
            .any(|&i| i >= d)
        {
            return Err(CoreError::InvalidParts {
                detail: format!("a kept or dropped neuron index is >= {d}"),
            });
        }
        let transform = Mat::from_fn(d, p.dims, |i, j| p.transform[j * d + i]);
        Ok(Whitening {
            mode: p.mode,
            n: p.n,
            mean: p.mean,
            transform,
            kept_neurons: p.kept_neurons,
            dropped_neurons: p.dropped_neurons,
            spectrum: p.spectrum,
            reduced_dims: p.reduced_dims,
            warnings: p.warnings,
        })
    }

    /// Whitens a block of rows: `Z = (X − 1μᵀ) W`, `rows × k`.
    pub fn whiten_rows(&self, block: RowBlock<'_>) -> Result<Mat<f64>> {
        let mut out = Mat::zeros(block.rows(), self.dims());
        let mut scratch = Vec::new();
        self.whiten_rows_into(block, out.as_mut(), &mut scratch)?;
        Ok(out)
    }

    /// As [`Whitening::whiten_rows`] into `out` (`rows × k`), reusing `scratch` (grown to
    /// `rows × d`) so a hot loop does not allocate. On a non-finite input value the error names
    /// its row and column, and `out` holds partial results.
    pub fn whiten_rows_into(
        &self,
        block: RowBlock<'_>,
        out: MatMut<'_, f64>,
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        block.check_shape()?;
        let d = self.input_dim();
        if block.cols() != d {
            return Err(CoreError::DimensionMismatch {
                what: "row block to whiten",
                expected: d,
                found: block.cols(),
            });
        }
        let rows = block.rows();
        if out.nrows() != rows || out.ncols() != self.dims() {
            return Err(CoreError::DimensionMismatch {
                what: "whitened output rows",
                expected: rows,
                found: out.nrows(),
            });
        }
        let non_finite = || {
            block
                .first_non_finite(0, rows)
                .map(|(r, c, v)| CoreError::NonFinite {
                    input: 0,
                    row: r as u64,
                    column: c,
                    value: v,
                })
        };
        // A non-finite input value makes its output row non-finite (NaN and ±Inf survive every
        // product and sum), so the much smaller output is scanned instead of the input, after
        // the products; with no output columns there is nothing to carry it, so scan the input.
        if (self.dims() == 0 || d == 0)
            && let Some(e) = non_finite()
        {
            return Err(e);
        }
        // Row chunks bound the f64 scratch (a whole representation widened would be 8 bytes per
        // value) and keep it warm in cache between the widening and the product.
        let chunk = projection_chunk_rows(d, rows);
        let ld = crate::moments::padded_stride(d, 8);
        if scratch.len() < chunk * ld {
            scratch.resize(chunk * ld, 0.0);
        }
        let mut out = out;
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + chunk).min(rows);
            let nb = r1 - r0;
            block.write_centred_rows(r0, r1, &self.mean, &mut scratch[..nb * ld], (ld, 0));
            let s = MatRef::from_row_major_slice_with_stride(&scratch[..nb * ld], nb, d, ld);
            crate::products::matmul(
                out.as_mut().subrows_mut(r0, nb),
                Accum::Replace,
                s,
                self.transform.as_ref(),
                1.0,
                crate::parallelism(),
            );
            r0 = r1;
        }
        let finite = (0..out.ncols()).all(|j| {
            out.as_ref()
                .col(j)
                .iter()
                .fold(true, |ok, v| ok & v.is_finite())
        });
        // Or finite values whose products overflowed: the input scan tells.
        if !finite && let Some(e) = non_finite() {
            return Err(e);
        }
        Ok(())
    }

    /// `Wₓᵀ M_xy W_y` for this whitening (x) and `other` (y), given the raw cross co-moment
    /// `M_xy` (`d_x × d_y`). Equals `Σ_r z_x,r z_y,rᵀ` over the datapoints.
    pub fn whitened_cross(&self, other: &Whitening, mxy: MatRef<'_, f64>) -> Result<Mat<f64>> {
        if mxy.nrows() != self.input_dim() || mxy.ncols() != other.input_dim() {
            return Err(CoreError::DimensionMismatch {
                what: "cross co-moment",
                expected: self.input_dim() * other.input_dim(),
                found: mxy.nrows() * mxy.ncols(),
            });
        }
        let mut t = Mat::zeros(self.input_dim(), other.dims());
        crate::products::matmul(
            t.as_mut(),
            Accum::Replace,
            mxy,
            other.transform.as_ref(),
            1.0,
            crate::parallelism(),
        );
        let mut c = Mat::zeros(self.dims(), other.dims());
        crate::products::matmul(
            c.as_mut(),
            Accum::Replace,
            self.transform.transpose(),
            t.as_ref(),
            1.0,
            crate::parallelism(),
        );
        Ok(c)
    }
}

fn symmetrise(a: Mat<f64>) -> Mat<f64> {
    let n = a.nrows();
    Mat::from_fn(n, n, |i, j| 0.5 * (a[(i, j)] + a[(j, i)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_whitened_side_by_side_equals_one_after_the_other() {
        let moments = |n: usize, d: usize, seed: usize| {
            let x: Vec<f64> = (0..n * d)
                .map(|i| ((i * 7919 + seed) % 1013) as f64 / 97.0)
                .map(|v| v.sin() + v.cos() * 0.3)
                .collect();
            let mut m = MomentAccumulator::new(d);
            m.push(RowBlock::f64(&x, n, d).unwrap()).unwrap();
            m
        };
        let (mx, my) = (moments(400, 40, 1), moments(400, 30, 5));
        let opts = WhitenOptions::default().with_keep(KeepRule::VarianceFraction(0.9));
        let (wx, wy) = Whitening::pair_from_moments(&mx, &my, &opts).unwrap();
        let bits = |w: &Whitening| -> Vec<u64> {
            let t = w.transform();
            (0..t.ncols())
                .flat_map(|j| (0..t.nrows()).map(move |i| t[(i, j)].to_bits()))
                .collect()
        };
        let one = Whitening::from_moments_named(&mx, &opts, "x").unwrap();
        let other = Whitening::from_moments_named(&my, &opts, "y").unwrap();
        assert_eq!(bits(&wx), bits(&one));
        assert_eq!(bits(&wy), bits(&other));
        assert!(wx.dims() > 0 && wy.dims() > 0);
        // Both failing: x's error, as in order; y failing alone: y's.
        let (empty, one_row) = (MomentAccumulator::new(3), moments(1, 3, 0));
        let x_error = Whitening::from_moments(&empty, &opts)
            .unwrap_err()
            .to_string();
        let y_error = Whitening::from_moments(&one_row, &opts)
            .unwrap_err()
            .to_string();
        assert_ne!(x_error, y_error);
        let both = Whitening::pair_from_moments(&empty, &one_row, &opts).unwrap_err();
        assert_eq!(both.to_string(), x_error);
        let y_only = Whitening::pair_from_moments(&mx, &one_row, &opts).unwrap_err();
        assert_eq!(y_only.to_string(), y_error);
    }

    #[test]
    fn non_finite_rows_are_named_though_only_the_output_is_scanned() {
        let (n, d) = (3000, 6);
        let mut x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919 % 1013) as f32 / 97.0).sin() + (i % d) as f32)
            .collect();
        let mut m = MomentAccumulator::new(d);
        m.push(RowBlock::f32(&x, n, d).unwrap()).unwrap();
        let w = Whitening::from_moments(&m, &WhitenOptions::default()).unwrap();
        assert!(w.dims() > 0);
        // The first, a middle and the last row, in different columns: NaN and both infinities.
        for (row, col, bad) in [
            (1500, 4, f32::NAN),
            (0, 0, f32::INFINITY),
            (2999, 5, f32::NEG_INFINITY),
        ] {
            let keep = x[row * d + col];
            x[row * d + col] = bad;
            let e = w.whiten_rows(RowBlock::f32(&x, n, d).unwrap()).unwrap_err();
            x[row * d + col] = keep;
            let CoreError::NonFinite {
                input,
                row: r,
                column,
                ..
            } = e
            else {
                panic!("{e:?}");
            };
            assert_eq!((input, r, column), (0, row as u64, col));
        }
        assert!(w.whiten_rows(RowBlock::f32(&x, n, d).unwrap()).is_ok());
    }

    #[test]
    fn keep_count_rules() {
        let vals = [6.0, 3.0, 1.0, -1e-17];
        assert_eq!(KeepRule::VarianceFraction(0.9).count(&vals), 2);
        assert_eq!(KeepRule::VarianceFraction(0.5).count(&vals), 1);
        assert_eq!(KeepRule::VarianceFraction(1.0).count(&vals), 3);
        assert_eq!(KeepRule::Dims(9).count(&vals), 4);
        assert_eq!(KeepRule::All.count(&vals), 4);
    }

    #[test]
    fn rank_cutoff_is_relative_to_the_largest_eigenvalue() {
        let c = RankCutoff::new(1e-10, 4);
        assert_eq!(c.tol, 1e-10);
        assert_eq!(c.rank(&[2.0, 1.0, 2.1e-10, 1.9e-10]), 3);
        assert_eq!(c.rank(&[]), 0);
        // For large d the floating-point floor d·2⁻⁵² takes over from ε.
        assert_eq!(RankCutoff::new(0.0, 1000).tol, 1000.0 * f64::EPSILON);
    }

    #[test]
    fn google_gains_zero_the_pinv_cut_and_count_negatives() {
        let (g, negative) = google_inv_sqrt_gains(&[4.0, 1e-16, -1.0, -1e-16]);
        assert_eq!(g, vec![0.5, 0.0, 0.0, 0.0]);
        assert_eq!(negative, 1);
    }

    #[test]
    fn google_inverse_sqrt_inverts_and_cuts_like_pinv() {
        let a = Mat::from_fn(2, 2, |i, j| if i == j { 4.0 } else { 1.0 });
        let mut w = Vec::new();
        let g = google_inv_sqrt(a.as_ref(), &mut w, "x").unwrap();
        // G A G = I
        let gag = &g * &a * &g;
        for i in 0..2 {
            for j in 0..2 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((gag[(i, j)] - want).abs() < 1e-14);
            }
        }
        // A singular matrix: the null direction gets 0, not inf or NaN.
        let s = Mat::from_fn(2, 2, |_, _| 1.0);
        let g = google_inv_sqrt(s.as_ref(), &mut w, "x").unwrap();
        assert!(g.col_iter().all(|c| c.iter().all(|v| v.is_finite())));
        assert!(w.is_empty());
    }
}
