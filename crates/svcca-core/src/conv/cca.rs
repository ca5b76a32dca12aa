//! Complex CCA of one frequency location from its Hermitian covariance.
//!
//! Input: `Σ = M/(n−1)` over `[x | y]` (`d = c_x + c_y`, Hermitian). Each side is whitened,
//! `W_x` (`c_x × k_x`) with `W_xᴴ Σ_xx W_x = I` (up to google's ridge in google-compat mode),
//! and the canonical correlations are the singular values of `W_xᴴ Σ_xy W_y`, descending,
//! `min(k_x, k_y)` of them. These are invariant to a complex rescaling of either side, so they
//! do not depend on DFT normalisation conventions, and a location and its conjugate (whose
//! covariance is `conj Σ`) give the same values.
//!
//! This mirrors the real whitening of [`crate::whiten`] (same rules, complex arithmetic):
//!
//! * **Default mode.** Channels with variance `≤ ε·max variance` are dropped (at a frequency
//!   where a channel carries no energy it has nothing to correlate). Plain CCA
//!   ([`KeepRule::All`]): eigendecompose the correlation matrix `R = D^{-1/2} Σ D^{-1/2}`, drop
//!   eigenvalues `≤ tol·λ_max` (`tol = max(ε, d·2⁻⁵²)`), `W = D^{-1/2} V_k Λ_k^{-1/2}`; when a
//!   cheap bound proves nothing would be dropped, the Cholesky factor whitens instead (same
//!   coefficients, a third of the cost). SVCCA
//!   ([`KeepRule::Dims`], [`KeepRule::VarianceFraction`]), applied per frequency: the top `k`
//!   eigenvectors of `Σ`, then the same cutoff, `W = V_k Λ_k^{-1/2}`. Correlations are clipped
//!   to `[0, 1]`. A side with no direction left gives no coefficients (and a warning), never NaN.
//! * **google-compat mode** (`cca_core.get_cca_similarity`): `S = Σ/max|Σ_ij|` per side,
//!   channels with `|S_ii| < ε` dropped, `A = S_kept + εI`, `A^{-1/2}` as google computes it
//!   (pseudo-inverse with cutoff `1e-15·max|λ|`, then square roots of the eigenvalues; a
//!   negative eigenvalue above the cutoff, where google gives NaN, counts as zero), cross block
//!   scaled by `1/sqrt(max_x·max_y)`. For SVCCA the covariance is first reduced to its top-`k`
//!   eigenvectors, as google's SVCCA recipe does with the data. Values are not clipped (google
//!   reports e.g. 1.0000000000000033).

use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::traits::Conjugate;
use faer::{Accum, Mat, MatRef, Par, c64};

use crate::whiten::{KeepRule, Mode, RankCutoff};

/// Settings of the per-location CCA.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CcaSettings {
    pub mode: Mode,
    pub keep: KeepRule,
    pub epsilon: f64,
}

/// One location's canonical correlations.
#[derive(Debug, Clone, Default)]
pub(crate) struct CcaOutcome {
    pub coefficients: Vec<f64>,
    pub x_dims: usize,
    pub y_dims: usize,
    pub warnings: Vec<String>,
}

/// Failed decomposition (not expected on finite input).
#[derive(Debug)]
pub(crate) struct NoConvergence(pub &'static str);

/// Hermitian eigendecomposition, eigenvalues descending (lower triangle read).
fn eigh_desc(a: MatRef<'_, c64>) -> Result<(Vec<f64>, Mat<c64>), NoConvergence> {
    let k = a.nrows();
    if k == 0 {
        return Ok((Vec::new(), Mat::zeros(0, 0)));
    }
    let (s, u) = crate::decompose::self_adjoint_eigen(a)
        .map_err(|_| NoConvergence("Hermitian eigendecomposition"))?;
    let s = s.column_vector();
    let vals = (0..k).map(|i| s[k - 1 - i].re).collect();
    let vecs = Mat::from_fn(k, k, |i, j| u[(i, k - 1 - j)]);
    Ok((vals, vecs))
}

fn mul<A, B>(a: MatRef<'_, A>, b: MatRef<'_, B>) -> Mat<c64>
where
    A: Conjugate<Canonical = c64>,
    B: Conjugate<Canonical = c64>,
{
    let mut out = Mat::zeros(a.nrows(), b.ncols());
    faer::linalg::matmul::matmul(
        out.as_mut(),
        Accum::Replace,
        a,
        b,
        c64::new(1.0, 0.0),
        Par::Seq,
    );
    out
}

/// Default-mode whitening of one side's covariance `c`; returns `W` (`m × k`).
fn whiten_default(
    c: MatRef<'_, c64>,
    s: &CcaSettings,
    side: &str,
    warnings: &mut Vec<String>,
) -> Result<Mat<c64>, NoConvergence> {
    let m = c.nrows();
    let var: Vec<f64> = (0..m).map(|i| c[(i, i)].re).collect();
    let vmax = var.iter().fold(0.0f64, |a, &v| a.max(v));
    if !(vmax > 0.0 && vmax.is_finite()) {
        warnings.push(format!(
            "{side}: no variance at this frequency; no coefficients"
        ));
        return Ok(Mat::zeros(m, 0));
    }
    let kept: Vec<usize> = (0..m).filter(|&i| var[i] > s.epsilon * vmax).collect();
    let cutoff = RankCutoff::new(s.epsilon, m);
    let tol = cutoff.tol;
    match s.keep {
        KeepRule::All => {
            let k = kept.len();
            let dinv: Vec<f64> = kept.iter().map(|&i| 1.0 / var[i].sqrt()).collect();
            let r = Mat::from_fn(k, k, |i, j| c[(kept[i], kept[j])] * (dinv[i] * dinv[j]));
            if let Some(w) = cholesky_whitening(r.as_ref(), &dinv, &kept, m, tol) {
                return Ok(w);
            }
            let (vals, vecs) = eigh_desc(r.as_ref())?;
            let r_kept = cutoff.rank(&vals);
            let mut w = Mat::zeros(m, r_kept);
            for j in 0..r_kept {
                let g = 1.0 / vals[j].sqrt();
                for (i, &ki) in kept.iter().enumerate() {
                    w[(ki, j)] = vecs[(i, j)] * (dinv[i] * g);
                }
            }
            Ok(w)
        }
        KeepRule::Dims(_) | KeepRule::VarianceFraction(_) => {
            let (vals, vecs) = eigh_desc(c)?;
            let k = cutoff.rank(&vals).min(s.keep.count(&vals));
            Ok(Mat::from_fn(m, k, |i, j| {
                vecs[(i, j)] * (1.0 / vals[j].sqrt())
            }))
        }
    }
}

/// Fast path of the default whitening when no eigen-direction of `r` would be cut: with
/// `r = L Lᴴ`, `W = D^{-1/2} L^{-H}` satisfies `Wᴴ Σ W = I` like the eigen-based `W`, so the
/// singular values of `W_xᴴ Σ_xy W_y` are the same. The cut is provably empty when
/// `λ_min ≥ 1/‖L⁻¹‖_F² > tol·‖r‖_F ≥ tol·λ_max`; otherwise (or if Cholesky fails) `None`, and
/// the caller takes the eigendecomposition route.
fn cholesky_whitening(
    r: MatRef<'_, c64>,
    dinv: &[f64],
    kept: &[usize],
    m: usize,
    tol: f64,
) -> Option<Mat<c64>> {
    let k = r.nrows();
    let l = crate::decompose::cholesky_lower(r)?;
    let mut linv = Mat::<c64>::zeros(k, k);
    invert_lower_triangular(linv.as_mut(), l.as_ref(), Par::Seq);
    let mut inv_f2 = 0.0;
    for j in 0..k {
        for i in j..k {
            inv_f2 += linv[(i, j)].norm_sqr();
        }
    }
    if !(inv_f2.is_finite() && 1.0 / inv_f2 > tol * r.norm_l2()) {
        return None;
    }
    let mut w = Mat::zeros(m, k);
    for (i, &ki) in kept.iter().enumerate() {
        for j in i..k {
            w[(ki, j)] = linv[(j, i)].conj() * dinv[i];
        }
    }
    Some(w)
}

/// google's whitening of one side: returns `W` (`m × k`) with `Wᴴ Σ_xy W_y` equal to google's
/// `invsqrt_xx · Σxy/sqrt(max_x max_y) · invsqrt_yy` (restricted to kept channels).
fn whiten_google(
    c: MatRef<'_, c64>,
    s: &CcaSettings,
    side: &str,
    warnings: &mut Vec<String>,
) -> Result<Mat<c64>, NoConvergence> {
    let m = c.nrows();
    // SVCCA recipe: reduce to the top-k eigenvectors first.
    let (basis, reduced): (Option<Mat<c64>>, Mat<c64>) = match s.keep {
        KeepRule::All => (None, c.to_owned()),
        _ => {
            let (vals, vecs) = eigh_desc(c)?;
            let k = s.keep.count(&vals);
            let v = vecs.subcols(0, k).to_owned();
            let red = mul(mul(v.adjoint(), c).as_ref(), v.as_ref());
            (Some(v), red)
        }
    };
    let r = reduced.nrows();
    let mut cmax = 0.0f64;
    for j in 0..r {
        for i in 0..r {
            cmax = cmax.max(reduced[(i, j)].norm());
        }
    }
    if !(cmax > 0.0 && cmax.is_finite()) {
        warnings.push(format!(
            "{side}: no variance at this frequency; no coefficients"
        ));
        return Ok(Mat::zeros(m, 0));
    }
    let kept: Vec<usize> = (0..r)
        .filter(|&i| (reduced[(i, i)] / cmax).norm() >= s.epsilon)
        .collect();
    if kept.is_empty() {
        warnings.push(format!(
            "{side}: every channel below the variance cutoff at this frequency; no coefficients"
        ));
        return Ok(Mat::zeros(m, 0));
    }
    let k = kept.len();
    let a = Mat::from_fn(k, k, |i, j| {
        reduced[(kept[i], kept[j])] / cmax
            + if i == j {
                c64::new(s.epsilon, 0.0)
            } else {
                c64::new(0.0, 0.0)
            }
    });
    let (vals, vecs) = eigh_desc(a.as_ref())?;
    let (g, negative) = crate::whiten::google_inv_sqrt_gains(&vals);
    if negative > 0 {
        warnings.push(format!(
            "{side}: {negative} negative eigenvalue(s) of the covariance (google would give NaN \
             here); treated as zero"
        ));
    }
    let scaled = Mat::from_fn(k, k, |i, j| vecs[(i, j)] * g[j]);
    let inv_sqrt = mul(scaled.as_ref(), vecs.adjoint());
    let f = 1.0 / cmax.sqrt();
    let mut w = Mat::zeros(r, k);
    for j in 0..k {
        for (i, &ki) in kept.iter().enumerate() {
            w[(ki, j)] = inv_sqrt[(i, j)] * f;
        }
    }
    Ok(match basis {
        None => w,
        Some(v) => mul(v.as_ref(), w.as_ref()),
    })
}

/// The CCA of one location from its co-moment `m` (`d × d`, full Hermitian) over `n` datapoints.
pub(crate) fn location_cca(
    m: MatRef<'_, c64>,
    n: f64,
    cx: usize,
    s: &CcaSettings,
) -> Result<CcaOutcome, NoConvergence> {
    let d = m.nrows();
    let cy = d - cx;
    let scale = 1.0 / (n - 1.0);
    let sxx = Mat::from_fn(cx, cx, |i, j| m[(i, j)] * scale);
    let syy = Mat::from_fn(cy, cy, |i, j| m[(cx + i, cx + j)] * scale);
    let sxy = Mat::from_fn(cx, cy, |i, j| m[(i, cx + j)] * scale);
    let mut warnings = Vec::new();
    let (wx, wy) = match s.mode {
        Mode::Default => (
            whiten_default(sxx.as_ref(), s, "x", &mut warnings)?,
            whiten_default(syy.as_ref(), s, "y", &mut warnings)?,
        ),
        Mode::GoogleCompat => (
            whiten_google(sxx.as_ref(), s, "x", &mut warnings)?,
            whiten_google(syy.as_ref(), s, "y", &mut warnings)?,
        ),
    };
    let (kx, ky) = (wx.ncols(), wy.ncols());
    if kx == 0 || ky == 0 {
        return Ok(CcaOutcome {
            coefficients: Vec::new(),
            x_dims: kx,
            y_dims: ky,
            warnings,
        });
    }
    let t = mul(mul(wx.adjoint(), sxy.as_ref()).as_ref(), wy.as_ref());
    let mut coefficients = crate::decompose::singular_values(t.as_ref())
        .map_err(|_| NoConvergence("singular value decomposition"))?;
    if s.mode == Mode::Default {
        for c in &mut coefficients {
            *c = c.clamp(0.0, 1.0);
        }
    }
    coefficients.sort_by(|a, b| b.total_cmp(a));
    Ok(CcaOutcome {
        coefficients,
        x_dims: kx,
        y_dims: ky,
        warnings,
    })
}

/// google's `sum_threshold` + truncated mean: the mean of the leading coefficients up to the
/// first prefix whose sum reaches `threshold` of the total (all of them if none does).
pub(crate) fn google_truncated_mean(coefs: &[f64], threshold: f64) -> f64 {
    if coefs.is_empty() {
        return 0.0;
    }
    let total: f64 = coefs.iter().sum();
    let mut idx = coefs.len();
    let mut prefix = 0.0;
    for (i, c) in coefs.iter().enumerate() {
        // numpy compares sum(s[:i]) / sum(s) >= threshold for i = 0..len-1
        if total > 0.0 && prefix / total >= threshold {
            idx = i;
            break;
        }
        prefix += c;
    }
    let idx = idx.max(1);
    coefs[..idx].iter().sum::<f64>() / idx as f64
}

/// Mean of all coefficients (0 when there are none).
pub(crate) fn mean_all(coefs: &[f64]) -> f64 {
    if coefs.is_empty() {
        0.0
    } else {
        coefs.iter().sum::<f64>() / coefs.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Hermitian co-moment from deterministic complex data (`n × d`), optionally with
    /// column `dup` an exact copy of column 0.
    fn comoment(n: usize, d: usize, dup: Option<usize>) -> Mat<c64> {
        let mut s: u64 = 12345;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let mut z = Mat::from_fn(n, d, |_, _| c64::new(next(), next()));
        for i in 0..n {
            // correlate y (last half) with x
            for j in d / 2..d {
                let v = z[(i, j - d / 2)] * 0.7;
                z[(i, j)] += v;
            }
            if let Some(c) = dup {
                z[(i, c)] = z[(i, 0)];
            }
        }
        for j in 0..d {
            let mu = (0..n).map(|i| z[(i, j)]).sum::<c64>() / n as f64;
            for i in 0..n {
                z[(i, j)] -= mu;
            }
        }
        mul(z.transpose(), z.conjugate())
    }

    fn settings() -> CcaSettings {
        CcaSettings {
            mode: Mode::Default,
            keep: KeepRule::All,
            epsilon: 1e-10,
        }
    }

    #[test]
    fn cholesky_and_eigen_whitening_agree() {
        let m = comoment(200, 8, None);
        let sxx = m.submatrix(0, 0, 4, 4).to_owned();
        let mut warnings = Vec::new();
        // fast path taken
        let var: Vec<f64> = (0..4).map(|i| sxx[(i, i)].re).collect();
        let dinv: Vec<f64> = var.iter().map(|v| 1.0 / v.sqrt()).collect();
        let r = Mat::from_fn(4, 4, |i, j| sxx[(i, j)] * (dinv[i] * dinv[j]));
        let kept = [0, 1, 2, 3];
        let wc = cholesky_whitening(r.as_ref(), &dinv, &kept, 4, 1e-10).expect("full rank");
        let id = mul(mul(wc.adjoint(), sxx.as_ref()).as_ref(), wc.as_ref());
        for i in 0..4 {
            for j in 0..4 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((id[(i, j)] - c64::new(want, 0.0)).norm() < 1e-12);
            }
        }
        // google-compat (eigen route, epsilon 0) gives the same coefficients as default
        let a = location_cca(m.as_ref(), 200.0, 4, &settings()).unwrap();
        let g = location_cca(
            m.as_ref(),
            200.0,
            4,
            &CcaSettings {
                mode: Mode::GoogleCompat,
                keep: KeepRule::All,
                epsilon: 0.0,
            },
        )
        .unwrap();
        for (p, q) in a.coefficients.iter().zip(&g.coefficients) {
            assert!((p - q).abs() < 1e-12, "{p} vs {q}");
        }
        let _ = whiten_default(sxx.as_ref(), &settings(), "x", &mut warnings).unwrap();
        assert!(warnings.is_empty());
    }

    #[test]
    fn dependent_channels_fall_back_to_the_eigen_cut() {
        // channel 1 duplicates channel 0: Cholesky must refuse, the eigen cut drops one
        // direction, coefficients stay finite and within [0, 1]
        let m = comoment(150, 8, Some(1));
        let sxx = m.submatrix(0, 0, 4, 4).to_owned();
        let var: Vec<f64> = (0..4).map(|i| sxx[(i, i)].re).collect();
        let dinv: Vec<f64> = var.iter().map(|v| 1.0 / v.sqrt()).collect();
        let r = Mat::from_fn(4, 4, |i, j| sxx[(i, j)] * (dinv[i] * dinv[j]));
        assert!(cholesky_whitening(r.as_ref(), &dinv, &[0, 1, 2, 3], 4, 1e-10).is_none());
        let out = location_cca(m.as_ref(), 150.0, 4, &settings()).unwrap();
        assert_eq!(out.x_dims, 3);
        assert_eq!(out.coefficients.len(), 3);
        assert!(out.coefficients.iter().all(|c| (0.0..=1.0).contains(c)));
    }

    #[test]
    fn truncated_mean_follows_numpy() {
        // sum = 4; prefixes 0, 1.0/4, 1.9/4, 2.7/4, 3.4/4 -> first >= 0.8 is i = 4
        let s = [1.0, 0.9, 0.8, 0.7, 0.6];
        assert!((google_truncated_mean(&s, 0.8) - 3.4 / 4.0).abs() < 1e-15);
        // never reached: all of them
        assert!((google_truncated_mean(&s, 1.0) - 0.8).abs() < 1e-15);
        assert_eq!(google_truncated_mean(&[], 0.98), 0.0);
    }
}
