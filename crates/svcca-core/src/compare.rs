//! Similarity of two representations from their moments: CCA, SVCCA, PWCCA, linear CKA.
//!
//! # Definitions (shapes for `x`: `d_x` neurons, `y`: `d_y`, over the same `n` datapoints)
//!
//! * **Canonical correlations.** With whitenings `Wₓ` (`d_x × k_x`) and `W_y` (`d_y × k_y`)
//!   (see [`crate::whiten`]) and the whitened cross product `C = Σ_r z_x,r z_y,rᵀ = Wₓᵀ M_xy W_y`
//!   (`k_x × k_y`), the canonical correlations `ρ_1 ≥ … ≥ ρ_r`, `r = min(k_x, k_y)`, are the
//!   singular values of `C / (n − 1)`; `C/(n−1) = U diag(ρ) Vᵀ`. In default mode they are
//!   clamped to `[0, 1]` (rounding can give `1 + 1e-16`); google-compat reports them raw.
//!   Identity: the canonical variates `Zₓ U` and `Z_y V` have identity covariance and
//!   cross-covariance `diag(ρ)`.
//! * **CCA**: all directions ([`KeepRule::All`]). **SVCCA**: the top directions by
//!   [`CompareOptions::keep`] first. `mean` = mean of all `ρ_i`; `google_mean` = google's
//!   truncated mean (mean of the leading `ρ_i` up to the first `i` with
//!   `Σ_{j<i} ρ_j ≥ threshold · Σ ρ`, google's `sum_threshold`); `sum = Σ ρ_i`.
//! * **PWCCA** (Morcos et al. 2018): `mean = Σ_i α_i ρ_i` with weights `α` (sum 1) from one
//!   side — the side with fewer whitened dims (ties: x), as google does, so it is **not
//!   symmetric** in general (swapping x and y changes the result when the side choice changes or
//!   dims tie).
//!   - default mode: `α_i ∝ Σ_j |⟨h_i, x_j⟩|`, `h_i = Z u_i` the centred canonical variates of
//!     the chosen side after whitening, `x_j` its centred neurons: `α ∝ rowsum|Uᵀ Wᵀ M|`.
//!   - google-compat (`pwcca.compute_pwcca`): directions `D = Uᵀ (X_kept − μ) + μ` (rotation
//!     without whitening, means re-added), `P = qr(Dᵀ).Q`, `α_i ∝ Σ_j |(Pᵀ X_keptᵀ)_ij|` with
//!     the *uncentred* activations. From moments: `D Xᵀ = Uᵀ M + n μμᵀ` and the `R` of
//!     `qr(Dᵀ)` is the `R` of the small `[(Λ^{1/2} Vᵀ U); √n μᵀ]` where `M = V Λ Vᵀ`.
//!     google crashes (IndexError) when the y side is chosen; here it uses y's activations.
//!     Because the means are re-added *after* rotating, these weights depend on the arbitrary
//!     sign of each singular vector (LAPACK's choice in google); here each chosen-side vector
//!     has its largest-magnitude entry positive. google's numbers are reproduced exactly given
//!     its signs (golden tests) and to ~1e-3 with ours.
//! * **Equal kept dimensions** (`equal_k_mean`; svcca and cca in default mode). With
//!   `k_x < k_y`, x's `k_x` directions fit inside y's larger subspace more easily than inside
//!   one of `k_x` dimensions, so `mean` rises with the larger side's `k` whatever the layers are
//!   (a 7-direction layer against a 60-direction one scores high). Default-mode whitenings order
//!   their columns by decreasing eigenvalue (SVCCA: of the covariance, so the leading `j`
//!   columns whiten the top-`j` SVD directions; CCA: of the kept neurons' correlation matrix,
//!   the top principal components of the standardised neurons), so the leading
//!   `k_min × k_min` block of `C`, `k_min = min(k_x, k_y)`, is the whitened cross product with
//!   the larger side cut to its top `k_min` directions: `equal_k_mean` is the mean of its
//!   singular values over `n − 1` — SVCCA with the larger side kept at `k_min` directions. It
//!   equals `mean` when `k_x = k_y`. google-compat whitenings are not ordered so (for CCA their
//!   columns follow the kept neurons), and PWCCA's weights follow one side's neurons rather than
//!   a direction count: both give `None`.
//! * **Linear CKA** (Kornblith et al. 2019): `‖M_xy‖²_F / (‖M_xx‖_F ‖M_yy‖_F)` (the `(n−1)`
//!   factors cancel); invariant to orthogonal maps and isotropic scaling, not to general
//!   invertible maps. It needs the raw cross co-moment, not whitenings.

use faer::{Accum, Mat, MatRef};
use serde::Serialize;

use crate::error::{CoreError, Result};
use crate::moments::{JointMoments, MomentAccumulator, Precision};
use crate::whiten::{KeepRule, Mode, WhitenOptions, Whitening, eigh_desc};

/// Which similarity to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// SVCCA: keep top directions, then CCA (the default).
    #[default]
    Svcca,
    /// Plain CCA over all non-constant neurons.
    Cca,
    /// Projection-weighted CCA.
    Pwcca,
    /// Linear centred kernel alignment.
    Cka,
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::Svcca => "svcca",
            Metric::Cca => "cca",
            Metric::Pwcca => "pwcca",
            Metric::Cka => "cka",
        })
    }
}

impl std::str::FromStr for Metric {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "svcca" => Ok(Metric::Svcca),
            "cca" => Ok(Metric::Cca),
            "pwcca" => Ok(Metric::Pwcca),
            "cka" => Ok(Metric::Cka),
            _ => Err(CoreError::InvalidOption {
                name: "metric",
                detail: format!("unknown metric {s:?}; expected svcca, cca, pwcca or cka"),
            }),
        }
    }
}

/// Options of a comparison. Plain data with `with_*` builders.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompareOptions {
    /// Default [`Metric::Svcca`].
    pub metric: Metric,
    /// Default [`Mode::Default`].
    pub mode: Mode,
    /// SVCCA reduction; only used by [`Metric::Svcca`]. Default `VarianceFraction(0.99)`.
    pub keep: KeepRule,
    /// Relative variance cutoff (google: also the ridge). Default 1e-10 (the tutorials' value;
    /// google's function default is 0).
    pub epsilon: f64,
    /// google's truncated-mean threshold. Default 0.98.
    pub threshold: f64,
    /// Compute even when the dims reach the number of datapoints (CCA trivially 1).
    pub allow_trivial: bool,
    /// The precision the moments are accumulated in. Default f64.
    pub precision: Precision,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            metric: Metric::Svcca,
            mode: Mode::Default,
            keep: KeepRule::VarianceFraction(0.99),
            epsilon: 1e-10,
            threshold: 0.98,
            allow_trivial: false,
            precision: Precision::F64,
        }
    }
}

impl CompareOptions {
    /// Sets the metric.
    pub fn with_metric(mut self, metric: Metric) -> Self {
        self.metric = metric;
        self
    }
    /// Sets the mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the SVCCA keep rule.
    pub fn with_keep(mut self, keep: KeepRule) -> Self {
        self.keep = keep;
        self
    }
    /// Sets epsilon.
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }
    /// Sets the truncated-mean threshold.
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }
    /// Allows trivial comparisons (dims ≥ datapoints − 1).
    pub fn with_allow_trivial(mut self, allow: bool) -> Self {
        self.allow_trivial = allow;
        self
    }

    /// Sets the precision the moments are accumulated in.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The whitening each side needs for this metric: the keep rule applies to SVCCA only.
    pub fn whiten_options(&self) -> WhitenOptions {
        WhitenOptions {
            mode: self.mode,
            keep: match self.metric {
                Metric::Svcca => self.keep,
                _ => KeepRule::All,
            },
            epsilon: self.epsilon,
            precision: self.precision,
        }
    }

    /// Checks ranges: threshold in (0, 1], epsilon finite ≥ 0, keep rule valid.
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(CoreError::InvalidOption {
                name: "threshold",
                detail: format!("{} is not in (0, 1]", self.threshold),
            });
        }
        self.whiten_options().validate()
    }
}

/// The result of a comparison, with its diagnostics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The metric computed.
    pub metric: Metric,
    /// The arithmetic followed.
    pub mode: Mode,
    /// Mean of all coefficients (cca, svcca); weighted mean (pwcca); the value (cka). See
    /// `definition`.
    pub mean: f64,
    /// google's truncated mean at `threshold` (cca, svcca only).
    pub google_mean: Option<f64>,
    /// The mean at equal kept dimensions: the mean of the `min(k_x, k_y)` canonical
    /// correlations after cutting the side with more directions to its leading
    /// `min(k_x, k_y)` (see the module docs). Equal to `mean` when `k_x = k_y`. `None` for
    /// pwcca, cka and google-compat mode.
    pub equal_k_mean: Option<f64>,
    /// Sum of the coefficients (cka: the value).
    pub sum: f64,
    /// Canonical correlations, descending (empty for cka).
    pub coefficients: Vec<f64>,
    /// PWCCA weights (sum 1), aligned with `coefficients`.
    pub weights: Option<Vec<f64>>,
    /// Dimensions of x used (whitened rank; SVCCA's k; neurons for cka).
    pub dims_x: usize,
    /// Dimensions of y used.
    pub dims_y: usize,
    /// Neurons of x dropped as near-constant.
    pub dropped_x: Vec<usize>,
    /// Neurons of y dropped as near-constant.
    pub dropped_y: Vec<usize>,
    /// Datapoints compared.
    pub n_datapoints: u64,
    /// Diagnostics (few datapoints, dependent directions, ...).
    pub warnings: Vec<String>,
    /// One line stating exactly what `mean` is.
    pub definition: String,
}

/// One side of a whitened comparison: its whitening and, for PWCCA, its moments.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    /// The side's whitening.
    pub whitening: &'a Whitening,
    /// The side's moments (needed by PWCCA only).
    pub moments: Option<&'a MomentAccumulator>,
}

impl<'a> Side<'a> {
    /// A side without moments (enough for CCA and SVCCA).
    pub fn new(whitening: &'a Whitening) -> Self {
        Side {
            whitening,
            moments: None,
        }
    }
    /// A side with its moments (needed for PWCCA).
    pub fn with_moments(whitening: &'a Whitening, moments: &'a MomentAccumulator) -> Self {
        Side {
            whitening,
            moments: Some(moments),
        }
    }
}

/// Canonical correlations and the singular vectors (in whitened coordinates).
#[derive(Clone, Debug)]
pub struct CanonicalCorrelations {
    /// `ρ`, descending, length `r = min(k_x, k_y)`.
    pub coefficients: Vec<f64>,
    /// Left singular vectors, `k_x × r`.
    pub u: Mat<f64>,
    /// Right singular vectors, `k_y × r`.
    pub v: Mat<f64>,
}

/// google's `sum_threshold` truncated mean: the mean of `s[..i]` for the first `i` with
/// `Σ s[..i] / Σ s ≥ threshold`, or of all of `s` when no such `i < len` exists.
pub fn truncated_mean(s: &[f64], threshold: f64) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let total: f64 = s.iter().sum();
    let mut acc = 0.0;
    for (i, v) in s.iter().enumerate() {
        if i > 0 && acc / total >= threshold {
            return acc / i as f64;
        }
        acc += v;
    }
    total / s.len() as f64
}

fn mean_of(s: &[f64]) -> f64 {
    if s.is_empty() {
        0.0
    } else {
        s.iter().sum::<f64>() / s.len() as f64
    }
}

/// Flips columns so that each column's largest-magnitude entry is positive.
fn fix_signs(m: &mut Mat<f64>) {
    for j in 0..m.ncols() {
        let (mut best, mut at) = (0.0f64, 0);
        for i in 0..m.nrows() {
            if m[(i, j)].abs() > best {
                best = m[(i, j)].abs();
                at = i;
            }
        }
        if m[(at, j)] < 0.0 {
            for i in 0..m.nrows() {
                m[(i, j)] = -m[(i, j)];
            }
        }
    }
}

/// Singular values (and vectors if `vectors`) of `cross / (n − 1)`.
pub fn canonical_correlations(
    cross: MatRef<'_, f64>,
    n: u64,
    vectors: bool,
) -> Result<CanonicalCorrelations> {
    if n < 2 {
        return Err(CoreError::TooFewDatapoints { n });
    }
    let (kx, ky) = (cross.nrows(), cross.ncols());
    let r = kx.min(ky);
    let scale = 1.0 / (n - 1) as f64;
    let a = Mat::from_fn(kx, ky, |i, j| cross[(i, j)] * scale);
    if let Some(bad) = (0..kx)
        .flat_map(|i| (0..ky).map(move |j| (i, j)))
        .find(|&(i, j)| !a[(i, j)].is_finite())
    {
        return Err(CoreError::InvalidOption {
            name: "cross",
            detail: format!("whitened cross product has a non-finite entry at {bad:?}"),
        });
    }
    if r == 0 {
        return Ok(CanonicalCorrelations {
            coefficients: Vec::new(),
            u: Mat::zeros(kx, 0),
            v: Mat::zeros(ky, 0),
        });
    }
    if vectors {
        let (s, su, sv) = crate::decompose::thin_svd(a.as_ref())
            .map_err(|_| CoreError::NoConvergence { what: "SVD" })?;
        let s = s.column_vector();
        let mut idx: Vec<usize> = (0..r).collect();
        idx.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
        let coefficients = idx.iter().map(|&i| s[i].abs()).collect();
        let mut u = Mat::from_fn(kx, r, |i, j| su[(i, idx[j])]);
        let mut v = Mat::from_fn(ky, r, |i, j| sv[(i, idx[j])]);
        // Singular vectors are defined up to a joint sign; fix it (largest |entry| of each u
        // column positive) so results are reproducible. google's PWCCA depends on this sign
        // (it re-adds means after rotating), and LAPACK's choice follows no simple rule.
        for j in 0..r {
            let col = u.col(j);
            let (mut best, mut at) = (0.0f64, 0);
            for i in 0..kx {
                if col[i].abs() > best {
                    best = col[i].abs();
                    at = i;
                }
            }
            if col[at] < 0.0 {
                for i in 0..kx {
                    u[(i, j)] = -u[(i, j)];
                }
                for i in 0..ky {
                    v[(i, j)] = -v[(i, j)];
                }
            }
        }
        Ok(CanonicalCorrelations { coefficients, u, v })
    } else {
        let mut s = crate::decompose::singular_values(a.as_ref())
            .map_err(|_| CoreError::NoConvergence { what: "SVD" })?;
        s.iter_mut().for_each(|v| *v = v.abs());
        s.sort_by(|a, b| b.total_cmp(a));
        Ok(CanonicalCorrelations {
            coefficients: s,
            u: Mat::zeros(kx, 0),
            v: Mat::zeros(ky, 0),
        })
    }
}

/// Linear CKA from co-moments (or covariances: the scale cancels):
/// `‖M_xy‖²_F / (‖M_xx‖_F ‖M_yy‖_F)`. A zero-variance side is an error.
pub fn linear_cka(mxx: MatRef<'_, f64>, myy: MatRef<'_, f64>, mxy: MatRef<'_, f64>) -> Result<f64> {
    if mxy.nrows() != mxx.nrows() || mxy.ncols() != myy.nrows() {
        return Err(CoreError::DimensionMismatch {
            what: "cross co-moment for CKA",
            expected: mxx.nrows() * myy.nrows(),
            found: mxy.nrows() * mxy.ncols(),
        });
    }
    let nx = mxx.norm_l2();
    let ny = myy.norm_l2();
    if nx == 0.0 {
        return Err(CoreError::ConstantLayer {
            side: "x",
            neurons: mxx.nrows(),
            cutoff: 0.0,
        });
    }
    if ny == 0.0 {
        return Err(CoreError::ConstantLayer {
            side: "y",
            neurons: myy.nrows(),
            cutoff: 0.0,
        });
    }
    let nxy = mxy.norm_l2();
    // Divide before squaring so huge activations cannot overflow.
    Ok((nxy / nx) * (nxy / ny))
}

fn sample_warnings(n: u64, kx: usize, ky: usize, warnings: &mut Vec<String>) {
    let k = kx.max(ky) as u64;
    if n < 5 * k {
        warnings.push(format!(
            "only {n} datapoints for {k} dimensions (< 5x): canonical correlations are biased \
             upwards; the SVCCA authors advise 5-10x more datapoints than neurons"
        ));
    }
}

/// CKA's own small-sample caveat: it has no canonical correlations, but its (biased) HSIC
/// estimator also rises with neurons per datapoint (Murphy et al. 2024).
fn cka_sample_warnings(n: u64, kx: usize, ky: usize, warnings: &mut Vec<String>) {
    let k = kx.max(ky) as u64;
    if n < 5 * k {
        warnings.push(format!(
            "only {n} datapoints for {k} neurons (< 5x): linear CKA's estimator is inflated when \
             neurons are many per datapoint; read it against the null baseline"
        ));
    }
}

fn trivial_guard(n: u64, kx: usize, ky: usize, opts: &CompareOptions) -> Result<Vec<String>> {
    let k = kx.max(ky) as u64;
    if k + 1 >= n {
        if !opts.allow_trivial {
            return Err(CoreError::TrivialComparison {
                dims_x: kx,
                dims_y: ky,
                n,
            });
        }
        return Ok(vec![format!(
            "{kx}/{ky} dimensions over {n} datapoints: canonical correlations are trivially 1 \
             (allowed by allow_trivial)"
        )]);
    }
    Ok(Vec::new())
}

/// `equal_k_mean` of a [`Comparison`] (see the module docs): the mean canonical correlation of
/// the leading `k_min × k_min` block of `cross`, with `coefs` the whole pair's (clamped as the
/// mode clamps them), reused when both sides have as many dims. Only one extra small SVD, and
/// only when the dims differ.
fn equal_k_mean(
    wx: &Whitening,
    wy: &Whitening,
    cross: MatRef<'_, f64>,
    coefs: &[f64],
    opts: &CompareOptions,
) -> Result<Option<f64>> {
    let ordered = wx.mode() == Mode::Default && wy.mode() == Mode::Default;
    if !ordered || !matches!(opts.metric, Metric::Svcca | Metric::Cca) {
        return Ok(None);
    }
    let (kx, ky) = (cross.nrows(), cross.ncols());
    if kx == ky {
        return Ok(Some(mean_of(coefs)));
    }
    let k = kx.min(ky);
    let mut cc = canonical_correlations(cross.submatrix(0, 0, k, k), wx.n(), false)?;
    cc.coefficients
        .iter_mut()
        .for_each(|v| *v = v.clamp(0.0, 1.0));
    Ok(Some(mean_of(&cc.coefficients)))
}

/// Compares two whitened representations from their whitened cross product
/// `cross = Σ_r z_x,r z_y,rᵀ = Wₓᵀ M_xy W_y` (`k_x × k_y`) over the same datapoints.
///
/// Computes svcca/cca/pwcca (PWCCA needs the chosen side's moments in [`Side::moments`]);
/// cka needs raw moments: use [`compare_cka`] / [`compare_moments`].
pub fn compare_whitened(
    x: Side<'_>,
    y: Side<'_>,
    cross: MatRef<'_, f64>,
    opts: &CompareOptions,
) -> Result<Comparison> {
    opts.validate()?;
    if opts.metric == Metric::Cka {
        return Err(CoreError::InvalidOption {
            name: "metric",
            detail: "cka needs the raw cross co-moment, not whitened data: use compare_cka or \
                     compare_moments"
                .into(),
        });
    }
    let (wx, wy) = (x.whitening, y.whitening);
    if wx.n() != wy.n() {
        return Err(CoreError::DatapointMismatch {
            n_x: wx.n(),
            n_y: wy.n(),
        });
    }
    let n = wx.n();
    let (kx, ky) = (wx.dims(), wy.dims());
    if cross.nrows() != kx || cross.ncols() != ky {
        return Err(CoreError::DimensionMismatch {
            what: "whitened cross product",
            expected: kx * ky,
            found: cross.nrows() * cross.ncols(),
        });
    }
    let mut warnings = trivial_guard(n, kx, ky, opts)?;
    sample_warnings(n, kx, ky, &mut warnings);
    for (name, w) in [("x", wx), ("y", wy)] {
        warnings.extend(w.warnings().iter().map(|s| {
            if s.starts_with(name) {
                s.clone()
            } else {
                format!("{name}: {s}")
            }
        }));
    }
    let pwcca = opts.metric == Metric::Pwcca;
    let mut cc = canonical_correlations(cross, n, pwcca)?;
    if opts.mode == Mode::Default {
        cc.coefficients
            .iter_mut()
            .for_each(|v| *v = v.clamp(0.0, 1.0));
    }
    let coefs = cc.coefficients.clone();
    let sum: f64 = coefs.iter().sum();
    let r = coefs.len();
    let equal_k_mean = equal_k_mean(x.whitening, y.whitening, cross, &coefs, opts)?;
    let (mean, google_mean, weights, definition) = if pwcca {
        let (side, name) = if kx <= ky { (x, "x") } else { (y, "y") };
        let mut dirs = if kx <= ky { cc.u.clone() } else { cc.v.clone() };
        // google-compat weights depend on these signs (see the module docs): fix them on the
        // chosen side so that swapping x and y gives the same PWCCA.
        fix_signs(&mut dirs);
        let dirs = dirs.as_ref();
        let m = side.moments.ok_or(CoreError::InvalidOption {
            name: "metric",
            detail: "pwcca needs the moments of the side with fewer dims".into(),
        })?;
        let w = pwcca_weights(m, side.whitening, dirs, opts.mode)?;
        let mean: f64 = w.iter().zip(&coefs).map(|(a, b)| a * b).sum();
        if let Some(tie) = pwcca_tie_sensitivity(&coefs, &w, mean) {
            warnings.push(tie.warning());
        }
        let def = match opts.mode {
            Mode::Default => format!(
                "mean = sum_i w_i rho_i over {r} canonical correlations, w_i ∝ sum_j \
                 |<h_i, x_j>| (h_i centred canonical variates of {name}, x_j its centred \
                 neurons; Morcos et al. 2018); weights from {name} (fewer dims), not symmetric"
            ),
            Mode::GoogleCompat => format!(
                "mean = sum_i w_i rho_i over {r} canonical correlations, weights as \
                 google pwcca.compute_pwcca (QR of unwhitened directions of {name} with \
                 means re-added, |inner products| with uncentred activations)"
            ),
        };
        (mean, None, Some(w), def)
    } else {
        let what = if opts.metric == Metric::Svcca {
            format!("between the top {kx} (x) / {ky} (y) SVD directions (SVCCA)")
        } else {
            format!("over {kx} (x) / {ky} (y) whitened dims (CCA)")
        };
        let equal_k = if equal_k_mean.is_some() {
            format!(
                "; equal_k_mean = the same with both sides kept at {} directions",
                kx.min(ky)
            )
        } else {
            String::new()
        };
        (
            mean_of(&coefs),
            Some(truncated_mean(&coefs, opts.threshold)),
            None,
            format!(
                "mean = mean of all {r} canonical correlations {what}; google_mean = mean of \
                 the leading ones holding {} of their sum{equal_k}",
                opts.threshold
            ),
        )
    };
    Ok(Comparison {
        metric: opts.metric,
        mode: opts.mode,
        mean,
        google_mean,
        equal_k_mean,
        sum,
        coefficients: coefs,
        weights,
        dims_x: kx,
        dims_y: ky,
        dropped_x: wx.dropped_neurons().to_vec(),
        dropped_y: wy.dropped_neurons().to_vec(),
        n_datapoints: n,
        warnings,
        definition,
    })
}

/// Canonical correlations closer than this are treated as tied by [`pwcca_tie_sensitivity`]:
/// rounding differences of ~1e-16 in the moments rotate tied directions by up to ~1e-16 / gap,
/// which moves a PWCCA mean past 1e-9 only below about this gap.
const PWCCA_TIE: f64 = 1e-6;

/// Near-tied canonical correlations in a PWCCA result, and how far they can move its mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PwccaTie {
    /// 1-based indices of the first and last correlation of the widest tied run.
    pub first: usize,
    pub last: usize,
    /// The smallest gap between neighbouring correlations in a tied run.
    pub gap: f64,
    /// Bound on how far the mean moves when weight shifts within the tied runs:
    /// `Σ_runs (their weight) · max |ρ_i − mean|`.
    pub bound: f64,
}

impl PwccaTie {
    /// The result warning that states the tie and its bound.
    pub fn warning(&self) -> String {
        let tie = if self.gap == 0.0 {
            "tie".to_string()
        } else {
            format!("nearly tie (gap {:.1e})", self.gap)
        };
        format!(
            "pwcca: canonical correlations {}-{} {tie}; how the weight splits between their \
             directions is not determined by the data, so the mean can move by up to {:.1e} with \
             rounding (e.g. the rows per block or task the moments were summed in)",
            self.first, self.last, self.bound
        )
    }

    /// The bound stated in a warning made by [`PwccaTie::warning`], if `warning` is one.
    pub fn bound_in(warning: &str) -> Option<f64> {
        let rest = warning.strip_prefix("pwcca: canonical correlations")?;
        let (_, after) = rest.split_once("can move by up to ")?;
        after.split_whitespace().next()?.parse().ok()
    }
}

/// The runs of near-tied correlations (neighbours within [`PWCCA_TIE`]) among `coefs` (sorted
/// descending), with the weights `w` and the PWCCA `mean` they gave. PWCCA's weights are not
/// invariant to rotations within a tied run, so there the mean is only defined up to the bound.
/// `None` when nothing ties or the bound is below 1e-12.
pub fn pwcca_tie_sensitivity(coefs: &[f64], w: &[f64], mean: f64) -> Option<PwccaTie> {
    let mut worst: Option<PwccaTie> = None;
    let mut bound = 0.0;
    let mut i = 0;
    while i < coefs.len() {
        let mut j = i;
        let mut gap = f64::INFINITY;
        while j + 1 < coefs.len() && (coefs[j] - coefs[j + 1]).abs() <= PWCCA_TIE {
            gap = gap.min((coefs[j] - coefs[j + 1]).abs());
            j += 1;
        }
        if j > i {
            let weight: f64 = w[i..=j].iter().sum();
            let spread = coefs[i..=j]
                .iter()
                .map(|r| (r - mean).abs())
                .fold(0.0, f64::max);
            bound += weight * spread;
            if worst.is_none_or(|t| j - i > t.last - t.first) {
                worst = Some(PwccaTie {
                    first: i + 1,
                    last: j + 1,
                    gap,
                    bound: 0.0,
                });
            }
        }
        i = j + 1;
    }
    let mut tie = worst?;
    tie.bound = bound;
    (bound >= 1e-12).then_some(tie)
}

/// PWCCA weights (sum 1) of one side from its moments, its whitening and its singular vectors
/// `dirs` (`k × r`, whitened coordinates). See the module docs for both modes.
pub fn pwcca_weights(
    m: &MomentAccumulator,
    w: &Whitening,
    dirs: MatRef<'_, f64>,
    mode: Mode,
) -> Result<Vec<f64>> {
    if m.dim() != w.input_dim() || dirs.nrows() != w.dims() {
        return Err(CoreError::DimensionMismatch {
            what: "pwcca side",
            expected: w.input_dim(),
            found: m.dim(),
        });
    }
    let r = dirs.ncols();
    let mm = m.comoment();
    let raw = match mode {
        Mode::Default => {
            // Uᵀ Wᵀ M: inner products of the canonical variates with the centred neurons.
            let mut wu = Mat::zeros(w.input_dim(), r);
            crate::products::matmul(
                wu.as_mut(),
                Accum::Replace,
                w.transform(),
                dirs,
                1.0,
                crate::parallelism(),
            );
            let mut p = Mat::zeros(r, m.dim());
            crate::products::matmul(
                p.as_mut(),
                Accum::Replace,
                wu.transpose(),
                mm.as_ref(),
                1.0,
                crate::parallelism(),
            );
            p
        }
        Mode::GoogleCompat => google_pwcca_products(m, &mm, w, dirs)?,
    };
    let mut weights: Vec<f64> = (0..r)
        .map(|i| (0..raw.ncols()).map(|j| raw[(i, j)].abs()).sum())
        .collect();
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(CoreError::InvalidOption {
            name: "pwcca",
            detail: "projection weights are all zero or not finite".into(),
        });
    }
    weights.iter_mut().for_each(|v| *v /= total);
    Ok(weights)
}

/// `Pᵀ X_keptᵀ` of google's `compute_pwcca` (`r × k`), from moments.
fn google_pwcca_products(
    m: &MomentAccumulator,
    mm: &Mat<f64>,
    w: &Whitening,
    dirs: MatRef<'_, f64>,
) -> Result<Mat<f64>> {
    let kept = w.kept_neurons();
    let k = kept.len();
    if w.dims() != k {
        return Err(CoreError::InvalidOption {
            name: "pwcca",
            detail: "google-compatible PWCCA needs a whitening over kept neurons (KeepRule::All)"
                .into(),
        });
    }
    let r = dirs.ncols();
    let nf = m.n() as f64;
    let mu: Vec<f64> = kept.iter().map(|&i| m.mean()[i]).collect();
    let mk = Mat::from_fn(k, k, |i, j| mm[(kept[i], kept[j])]);
    // D Xᵀ = Uᵀ M + n μ μᵀ, where row i of D carries + μ_i (google adds each neuron's mean to
    // the direction of the same index).
    let mut dx = Mat::zeros(r, k);
    crate::products::matmul(
        dx.as_mut(),
        Accum::Replace,
        dirs.transpose(),
        mk.as_ref(),
        1.0,
        crate::parallelism(),
    );
    for i in 0..r {
        for j in 0..k {
            dx[(i, j)] += nf * mu[i] * mu[j];
        }
    }
    // R of qr(Dᵀ) = R of F = [Λ^{1/2} Vᵀ U ; √n μᵀ] since Dᵀ = [C̃ | 1/√n] F with orthonormal
    // columns (centred data ⟂ constant vector): no Gram matrix, no squared condition number.
    let (vals, vecs) = eigh_desc(mk.as_ref())?;
    let mut vu = Mat::zeros(k, r);
    crate::products::matmul(
        vu.as_mut(),
        Accum::Replace,
        vecs.transpose(),
        dirs,
        1.0,
        crate::parallelism(),
    );
    let f = Mat::from_fn(k + 1, r, |i, j| {
        if i < k {
            vals[i].max(0.0).sqrt() * vu[(i, j)]
        } else {
            nf.sqrt() * mu[j]
        }
    });
    let rr = crate::decompose::qr_r(f.as_ref());
    let rt = Mat::from_fn(r, r, |i, j| if i >= j { rr[(j, i)] } else { 0.0 });
    if (0..r).any(|i| rt[(i, i)] == 0.0) {
        return Err(CoreError::InvalidOption {
            name: "pwcca",
            detail: "google PWCCA directions are linearly dependent (QR is singular)".into(),
        });
    }
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(
        rt.as_ref(),
        dx.as_mut(),
        faer::Par::Seq,
    );
    Ok(dx)
}

/// Linear CKA as a [`Comparison`] from both sides' moments and the raw cross co-moment.
pub fn compare_cka(
    x: &MomentAccumulator,
    y: &MomentAccumulator,
    mxy: MatRef<'_, f64>,
    opts: &CompareOptions,
) -> Result<Comparison> {
    opts.validate()?;
    if x.n() != y.n() {
        return Err(CoreError::DatapointMismatch {
            n_x: x.n(),
            n_y: y.n(),
        });
    }
    for (m, what) in [(x, "x has no neurons"), (y, "y has no neurons")] {
        if m.dim() == 0 {
            return Err(CoreError::Empty { what });
        }
    }
    if x.n() < 2 {
        return Err(CoreError::TooFewDatapoints { n: x.n() });
    }
    let mx = x.comoment();
    let my = y.comoment();
    let v = linear_cka(mx.as_ref(), my.as_ref(), mxy)?;
    let mut warnings = Vec::new();
    cka_sample_warnings(x.n(), x.dim(), y.dim(), &mut warnings);
    Ok(Comparison {
        metric: Metric::Cka,
        mode: opts.mode,
        mean: v,
        google_mean: None,
        equal_k_mean: None,
        sum: v,
        coefficients: Vec::new(),
        weights: None,
        dims_x: x.dim(),
        dims_y: y.dim(),
        dropped_x: Vec::new(),
        dropped_y: Vec::new(),
        n_datapoints: x.n(),
        warnings,
        definition: "mean = linear CKA = ||S_xy||_F^2 / (||S_xx||_F ||S_yy||_F) over centred \
                     activations (Kornblith et al. 2019)"
            .into(),
    })
}

/// Compares x and y from their joint moments. For svcca/cca/pwcca this whitens each side with
/// [`Whitening::from_moments`] and calls [`compare_whitened`] with `Wₓᵀ M_xy W_y`, exactly the
/// path the distributed engine takes; for cka it calls [`compare_cka`].
pub fn compare_moments(joint: &JointMoments, opts: &CompareOptions) -> Result<Comparison> {
    opts.validate()?;
    if joint.dx() == 0 {
        return Err(CoreError::Empty {
            what: "x has no neurons",
        });
    }
    if joint.dy() == 0 {
        return Err(CoreError::Empty {
            what: "y has no neurons",
        });
    }
    if joint.n() == 0 {
        return Err(CoreError::Empty {
            what: "no datapoints",
        });
    }
    let mx = joint.x();
    let my = joint.y();
    if opts.metric == Metric::Cka {
        return compare_cka(&mx, &my, joint.cross().as_ref(), opts);
    }
    let wo = opts.whiten_options();
    let (wx, wy) = Whitening::pair_from_moments(&mx, &my, &wo)?;
    // Copied out only now: the two decompositions' workspaces are the peak of a wide pair.
    let cross = wx.whitened_cross(&wy, joint.cross().as_ref())?;
    compare_whitened(
        Side::with_moments(&wx, &mx),
        Side::with_moments(&wy, &my),
        cross.as_ref(),
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pwcca_ties_are_found_and_bounded() {
        let w = [0.4, 0.3, 0.2, 0.1];
        let apart = [0.99, 0.9, 0.5, 0.2];
        let mean: f64 = w.iter().zip(&apart).map(|(a, b)| a * b).sum();
        assert_eq!(pwcca_tie_sensitivity(&apart, &w, mean), None);

        let tied = [0.99, 0.9, 0.9 - 1e-9, 0.2];
        let mean: f64 = w.iter().zip(&tied).map(|(a, b)| a * b).sum();
        let tie = pwcca_tie_sensitivity(&tied, &w, mean).expect("a tie");
        assert_eq!((tie.first, tie.last), (2, 3));
        assert!((tie.gap - 1e-9).abs() < 1e-12, "{tie:?}");
        let expected = 0.5 * (0.9 - mean).abs();
        assert!((tie.bound - expected).abs() < 1e-12, "{tie:?}");
        let parsed = PwccaTie::bound_in(&tie.warning()).expect("bound parses back");
        assert!((parsed - tie.bound).abs() <= 0.05 * tie.bound);
        assert_eq!(PwccaTie::bound_in("near-constant neurons dropped"), None);

        // Tied exactly at the mean: nothing can move.
        let flat = [0.5, 0.5, 0.5, 0.5];
        assert_eq!(pwcca_tie_sensitivity(&flat, &w, 0.5), None);
    }

    #[test]
    fn cka_small_sample_warning_speaks_of_cka_not_canonical_correlations() {
        let mut x = MomentAccumulator::new(12);
        let mut y = MomentAccumulator::new(3);
        let rows: Vec<f64> = (0..40 * 12).map(|i| ((i * 7919) % 101) as f64).collect();
        let rows_y: Vec<f64> = (0..40 * 3).map(|i| ((i * 104729) % 97) as f64).collect();
        x.push(crate::RowBlock::f64(&rows, 40, 12).unwrap())
            .unwrap();
        y.push(crate::RowBlock::f64(&rows_y, 40, 3).unwrap())
            .unwrap();
        let mxy = Mat::<f64>::zeros(12, 3);
        let c = compare_cka(&x, &y, mxy.as_ref(), &CompareOptions::default()).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("linear CKA"), "{:?}", c.warnings);
        assert!(!c.warnings[0].contains("canonical"), "{:?}", c.warnings);
        // One sentence, not a line break's indentation carried into the text.
        assert!(!c.warnings[0].contains("  "), "{:?}", c.warnings);
    }

    #[test]
    fn truncated_mean_follows_google_sum_threshold() {
        // Partial sums / total: 0, 0.6, 0.933...; google returns the first i reaching the
        // threshold and averages s[:i]; none reached -> all.
        let s = [0.9, 0.5, 0.1];
        assert!((truncated_mean(&s, 0.98) - 0.5).abs() < 1e-15);
        assert!((truncated_mean(&s, 0.9) - 0.7).abs() < 1e-15);
        assert!((truncated_mean(&s, 0.5) - 0.9).abs() < 1e-15);
        assert_eq!(truncated_mean(&[0.0, 0.0], 0.98), 0.0);
        assert_eq!(truncated_mean(&[], 0.98), 0.0);
    }

    #[test]
    fn linear_cka_of_identical_sides_is_one() {
        let m = Mat::from_fn(3, 3, |i, j| if i == j { 2.0 + i as f64 } else { 0.5 });
        let v = linear_cka(m.as_ref(), m.as_ref(), m.as_ref()).unwrap();
        assert!((v - 1.0).abs() < 1e-15);
        let z = Mat::<f64>::zeros(3, 3);
        assert!(matches!(
            linear_cka(z.as_ref(), m.as_ref(), z.as_ref()),
            Err(CoreError::ConstantLayer { side: "x", .. })
        ));
    }
}
