//! Every non-`dft_*` case of `fixtures/golden` (google/svcca's own numbers) in google-compatible
//! mode: coefficients, truncated and plain means, sums, kept/removed neurons, SVCCA k's and
//! PWCCA weights within 1e-9 absolute. Recipe-only inputs are rebuilt from the splitmix64 recipe
//! and checked against the stored checksums first.
// Matrix code indexes (row, column) pairs: index loops read clearer than iterator chains.
#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use serde_json::Value;
use svcca_core::faer::Mat;
use svcca_core::{
    CompareOptions, Comparison, KeepRule, Metric, Mode, Whitening, canonical_correlations,
    compare_moments, pwcca_weights,
};

const TOL: f64 = 1e-9;

fn load(case: &str) -> Value {
    let p = fixtures().join("golden").join(case).join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn shape(v: &Value) -> (usize, usize) {
    let s = usizes(v);
    (s[0], s[1])
}

/// Checks a rebuilt `[neurons, datapoints]` input against its recipe checksum.
fn check_checksum(m: &Mat<f64>, ck: &Value) {
    let (d, n) = shape(&ck["shape"]);
    assert_eq!((m.nrows(), m.ncols()), (d, n));
    let mut sum = 0.0;
    let mut sum_abs = 0.0;
    for i in 0..d {
        for j in 0..n {
            sum += m[(i, j)];
            sum_abs += m[(i, j)].abs();
        }
    }
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1.0);
    assert!(rel(sum_abs, ck["sum_abs"].as_f64().unwrap()) < 1e-11);
    // The plain sum cancels: compare relative to the sum of |x|.
    assert!((sum - ck["sum"].as_f64().unwrap()).abs() / sum_abs < 1e-12);
    let first = f64s(&ck["first"]);
    for (k, f) in first.iter().enumerate() {
        assert!((m[(0, k)] - f).abs() < 1e-12, "first[{k}]");
    }
    let last = f64s(&ck["last"]);
    assert!((m[(d - 1, n - 2)] - last[0]).abs() < 1e-12);
    assert!((m[(d - 1, n - 1)] - last[1]).abs() < 1e-12);
}

/// `W @ Z + c * N` from the recipe (the form of every recipe-only case).
fn rebuild_linear(recipe: &Value, w: &str, noise: &str, c: f64) -> Mat<f64> {
    let mats = &recipe["matrices"];
    let get = |name: &str| {
        let (r, c) = shape(&mats[name]["shape"]);
        recipe_matrix(mats[name]["seed"].as_u64().unwrap(), r, c)
    };
    let z = get("Z");
    let wm = get(w);
    let nm = get(noise);
    let mut out = matmul(&wm, &z);
    for i in 0..out.nrows() {
        for j in 0..out.ncols() {
            out[(i, j)] += c * nm[(i, j)];
        }
    }
    out
}

/// Inputs of a case as row-major `[datapoints, neurons]`.
fn inputs(case: &str, exp: &Value) -> (Rows, Rows) {
    if exp["inputs_stored_as_npy"].as_bool().unwrap() {
        let dir = fixtures().join("golden").join(case);
        let a = read_npy(&dir.join("acts1.npy"));
        let b = read_npy(&dir.join("acts2.npy"));
        assert!(!a.is_f32 && !b.is_f32);
        (
            Rows::from_neurons_first_slice(&a.data, a.shape[0], a.shape[1]),
            Rows::from_neurons_first_slice(&b.data, b.shape[0], b.shape[1]),
        )
    } else {
        let recipe = &exp["recipe"];
        let formulas = &recipe["formulas"];
        let parse = |f: &str, w: &str, n: &str| {
            // "W1 @ Z + 0.7 * N1"
            let prefix = format!("{w} @ Z + ");
            let rest = f.strip_prefix(&prefix).expect("recipe form W @ Z + c * N");
            let c: f64 = rest
                .strip_suffix(&format!(" * {n}"))
                .expect("recipe form")
                .parse()
                .unwrap();
            rebuild_linear(recipe, w, n, c)
        };
        let a = parse(formulas["acts1"].as_str().unwrap(), "W1", "N1");
        let b = parse(formulas["acts2"].as_str().unwrap(), "W2", "N2");
        check_checksum(&a, &exp["acts1_checksum"]);
        check_checksum(&b, &exp["acts2_checksum"]);
        (Rows::from_neurons_first(&a), Rows::from_neurons_first(&b))
    }
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let e = max_abs_diff(got, want);
    assert!(e <= tol, "{what}: max abs error {e:e} > {tol:e}");
    e
}

fn check_cca_fields(case: &str, c: &Comparison, r: &Value) -> f64 {
    let mut err = assert_close(
        &format!("{case} coefficients"),
        &c.coefficients,
        &f64s(&r["cca_coef1"]),
        TOL,
    );
    assert_eq!(
        c.coefficients.len(),
        r["n_coefs"].as_u64().unwrap() as usize
    );
    let gm = r["mean"][0].as_f64().unwrap();
    let e = (c.google_mean.unwrap() - gm).abs();
    assert!(e <= TOL, "{case} google mean {e:e}");
    err = err.max(e);
    let e = (c.mean - r["mean_all_coefs"].as_f64().unwrap()).abs();
    assert!(e <= TOL, "{case} mean of all {e:e}");
    err = err.max(e);
    // The sum adds up to n_coefs errors: scale the tolerance by sqrt(n).
    let e = (c.sum - r["sum"][0].as_f64().unwrap()).abs();
    let stol = TOL * (c.coefficients.len() as f64).sqrt().max(1.0);
    assert!(e <= stol, "{case} sum {e:e}");
    assert_eq!(
        c.dims_x,
        r["x_kept"].as_u64().unwrap() as usize,
        "{case} x_kept"
    );
    assert_eq!(
        c.dims_y,
        r["y_kept"].as_u64().unwrap() as usize,
        "{case} y_kept"
    );
    assert_eq!(c.dropped_x, usizes(&r["x_removed_idx"]), "{case} x removed");
    assert_eq!(c.dropped_y, usizes(&r["y_removed_idx"]), "{case} y removed");
    err
}

fn run_cca(case: &str) {
    let exp = load(case);
    let r = &exp["result"];
    assert_eq!(r["function"], "cca_core.get_cca_similarity");
    let (x, y) = inputs(case, &exp);
    let opts = CompareOptions::default()
        .with_metric(Metric::Cca)
        .with_mode(Mode::GoogleCompat)
        .with_epsilon(r["epsilon"].as_f64().unwrap())
        .with_threshold(r["threshold"].as_f64().unwrap());
    let c = compare_moments(&joint(&x, &y), &opts).unwrap();
    let err = check_cca_fields(case, &c, r);
    println!("{case}: max abs error {err:e}");
}

fn run_svcca(case: &str) {
    let exp = load(case);
    let r = &exp["result"];
    let (x, y) = inputs(case, &exp);
    let rule = r["k_rule"].as_str().unwrap();
    let keep = if rule == "fixed" {
        assert_eq!(r["k1"], r["k2"]);
        KeepRule::Dims(r["k1"].as_u64().unwrap() as usize)
    } else {
        KeepRule::VarianceFraction(rule.strip_prefix("var:").unwrap().parse().unwrap())
    };
    let opts = CompareOptions::default()
        .with_metric(Metric::Svcca)
        .with_mode(Mode::GoogleCompat)
        .with_keep(keep)
        .with_epsilon(r["epsilon"].as_f64().unwrap())
        .with_threshold(r["threshold"].as_f64().unwrap());
    let c = compare_moments(&joint(&x, &y), &opts).unwrap();
    assert_eq!(c.dims_x, r["k1"].as_u64().unwrap() as usize, "{case} k1");
    assert_eq!(c.dims_y, r["k2"].as_u64().unwrap() as usize, "{case} k2");
    let err = check_cca_fields(case, &c, r);
    let e = (c.mean - r["svcca_mean"].as_f64().unwrap()).abs();
    assert!(e <= TOL);
    println!("{case}: max abs error {:e}", err.max(e));
}

/// google's PWCCA adds each neuron's mean back *after* rotating by the SVD's singular vectors,
/// so its weights depend on the arbitrary sign LAPACK gives each singular vector (flipping
/// `u_i` turns direction `u_iᵀ(x−μ) + μ_i` into `−u_iᵀ(x−μ) + μ_i`, not into its negative).
/// No simple rule reproduces LAPACK's signs, so the end-to-end weights and weighted mean are
/// checked at these looser tolerances (measured with our sign convention: weights off by up to
/// 1.03e-3 (`pwcca_x_smaller`, swapped) and 6.8e-4 / 2.3e-4 (`pwcca_x_smaller` /
/// `pwcca_equal_counts`), PWCCA means by 1.7e-4 / 1.0e-4; the inputs' means are ~0.03 of their
/// spread, larger means give larger differences). The exact arithmetic is then checked at 1e-9
/// by `sign_resolved_weights`, which recovers google's signs from the expected weights: it
/// matches to ~2e-13.
const PWCCA_SIGN_TOL: f64 = 3e-3;
const PWCCA_SIGN_MEAN_TOL: f64 = 1e-3;

/// Chooses the sign of each singular vector to match google's weights: weight `i` relative to
/// weight 0 depends only on the signs of directions `0..=i` (QR is Gram-Schmidt in order), so
/// the signs are found one at a time. Returns the weights with those signs.
fn sign_resolved_weights(
    m: &svcca_core::MomentAccumulator,
    w: &svcca_core::Whitening,
    dirs: &Mat<f64>,
    expected: &[f64],
) -> Vec<f64> {
    let weights = |d: &Mat<f64>| pwcca_weights(m, w, d.as_ref(), Mode::GoogleCompat).unwrap();
    let flip = |d: &mut Mat<f64>, j: usize| {
        for i in 0..d.nrows() {
            d[(i, j)] = -d[(i, j)];
        }
    };
    let mut best: Option<(f64, Vec<f64>)> = None;
    for s0 in [false, true] {
        let mut d = dirs.clone();
        if s0 {
            flip(&mut d, 0);
        }
        for i in 1..d.ncols() {
            let ratio_err = |d: &Mat<f64>| {
                let ws = weights(d);
                (ws[i] / ws[0] - expected[i] / expected[0]).abs()
            };
            let keep = ratio_err(&d);
            flip(&mut d, i);
            if ratio_err(&d) >= keep {
                flip(&mut d, i);
            }
        }
        let ws = weights(&d);
        let e = max_abs_diff(&ws, expected);
        if best.as_ref().is_none_or(|b| e < b.0) {
            best = Some((e, ws));
        }
    }
    best.unwrap().1
}

fn run_pwcca(case: &str, swap: bool) {
    let exp = load(case);
    let r = &exp["result"];
    assert_eq!(r["function"], "pwcca.compute_pwcca");
    let (mut x, mut y) = inputs(case, &exp);
    if swap {
        std::mem::swap(&mut x, &mut y);
    }
    let eps = r["epsilon"].as_f64().unwrap();
    let opts = CompareOptions::default()
        .with_metric(Metric::Pwcca)
        .with_mode(Mode::GoogleCompat)
        .with_epsilon(eps);
    let j = joint(&x, &y);
    let c = compare_moments(&j, &opts).unwrap();
    let want_w = f64s(&r["weights"]);
    let want_mean = r["pwcca_mean"].as_f64().unwrap();
    let coef_err = assert_close(
        &format!("{case} coefs"),
        &c.coefficients,
        &f64s(&r["coefs"]),
        TOL,
    );
    let sign_err = assert_close(
        &format!("{case} weights (up to SVD signs)"),
        c.weights.as_ref().unwrap(),
        &want_w,
        PWCCA_SIGN_TOL,
    );
    assert!((c.mean - want_mean).abs() <= PWCCA_SIGN_MEAN_TOL);
    let sum: f64 = c.weights.as_ref().unwrap().iter().sum();
    assert!((sum - 1.0).abs() < 1e-12);
    let unweighted = c.sum / c.coefficients.len() as f64;
    let e2 = (unweighted - r["unweighted_mean_coefs"].as_f64().unwrap()).abs();
    assert!(e2 <= TOL);

    // Exact arithmetic, with google's signs recovered.
    let wo = opts.whiten_options();
    let (mx, my) = (j.x(), j.y());
    let wx = Whitening::from_moments(&mx, &wo).unwrap();
    let wy = Whitening::from_moments(&my, &wo).unwrap();
    let cross = wx.whitened_cross(&wy, j.cross().as_ref()).unwrap();
    let cc = canonical_correlations(cross.as_ref(), j.n(), true).unwrap();
    // google's side: the one with fewer kept neurons (x on ties); swapped inputs pick y.
    let (m, w, dirs) = if wx.dims() <= wy.dims() {
        assert!(!swap);
        (&mx, &wx, &cc.u)
    } else {
        assert!(swap);
        (&my, &wy, &cc.v)
    };
    let ws = sign_resolved_weights(m, w, dirs, &want_w);
    let werr = assert_close(&format!("{case} sign-resolved weights"), &ws, &want_w, TOL);
    let mean: f64 = ws.iter().zip(&c.coefficients).map(|(a, b)| a * b).sum();
    let merr = (mean - want_mean).abs();
    assert!(merr <= TOL, "{case} sign-resolved pwcca mean {merr:e}");
    println!(
        "{case} (swapped: {swap}): coefs {coef_err:e}, weights as computed {sign_err:e} \
         (pwcca mean {:e}), sign-resolved weights {werr:e}, mean {merr:e}",
        (c.mean - want_mean).abs()
    );
}

#[test]
fn golden_cca_identical() {
    run_cca("cca_identical");
}

#[test]
fn golden_cca_linear_transform() {
    run_cca("cca_linear_transform");
}

#[test]
fn golden_cca_independent_noise() {
    run_cca("cca_independent_noise");
}

#[test]
fn golden_cca_lowrank_shared() {
    run_cca("cca_lowrank_shared");
}

#[test]
fn golden_cca_near_square() {
    run_cca("cca_near_square");
}

#[test]
fn golden_cca_zero_variance() {
    run_cca("cca_zero_variance");
}

#[test]
fn golden_cca_different_counts() {
    run_cca("cca_different_counts");
}

#[test]
fn golden_cca_large_a() {
    run_cca("cca_large_a");
}

#[test]
fn golden_cca_large_b() {
    run_cca("cca_large_b");
}

#[test]
fn golden_cca_default_args() {
    run_cca("cca_default_args");
}

#[test]
fn golden_svcca_fixed_k() {
    run_svcca("svcca_fixed_k");
}

#[test]
fn golden_svcca_var99() {
    run_svcca("svcca_var99");
}

#[test]
fn golden_pwcca_equal_counts() {
    run_pwcca("pwcca_equal_counts", false);
}

#[test]
fn golden_pwcca_x_smaller() {
    run_pwcca("pwcca_x_smaller", false);
}

/// google's `compute_pwcca` raises IndexError when the first input is wider (upstream PR #9);
/// here the y side is chosen and gives google's numbers for the unswapped call.
#[test]
fn golden_pwcca_wider_first_input_works() {
    run_pwcca("pwcca_x_smaller", true);
}
