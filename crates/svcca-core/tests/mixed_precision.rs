//! Mixed precision (f32 products per chunk, f64 everywhere else) against f64: on the digits MLP's
//! real layers it stays within its stated bound, it keeps large means harmless, and it refuses
//! what f32 products cannot resolve.

mod common;

use common::*;
use svcca_core::{
    CompareOptions, CoreError, JointMoments, MIXED_PRECISION_TOLERANCE, Metric, Mode, Precision,
    RowBlock, Whitening, compare_moments, mixed_precision_bound,
};

fn layer(seed: u32, name: &str) -> Npy {
    read_npy(&fixtures().join(format!("digits/mlp/seed{seed}/step2250/{name}.npy")))
}

fn joint(x: &[f32], y: &[f32], n: usize, precision: Precision) -> JointMoments {
    let (dx, dy) = (x.len() / n, y.len() / n);
    let mut j = JointMoments::with_precision(dx, dy, precision);
    j.push(
        RowBlock::f32(x, n, dx).unwrap(),
        RowBlock::f32(y, n, dy).unwrap(),
    )
    .unwrap();
    j
}

/// The larger of the two sides' bounds, from the f64 whitenings' spectra and kept dims.
fn bound(j: &JointMoments, opts: &CompareOptions) -> f64 {
    [j.x(), j.y()]
        .iter()
        .map(|m| {
            let w = Whitening::from_moments(m, &opts.whiten_options()).unwrap();
            let s = w.spectrum();
            let k = w.dims();
            // The decomposed matrix: covariance (SVCCA) or correlation (CCA) of the kept neurons.
            let trace = s.iter().sum::<f64>();
            mixed_precision_bound(trace, s.len(), s[k - 1], m.n())
        })
        .fold(0.0, f64::max)
}

#[test]
fn mixed_precision_stays_within_its_bound_on_real_layers() {
    let mut accepted = 0;
    for name in ["h1", "h2", "h3", "h4", "logits"] {
        let (x, y) = (layer(0, name), layer(1, name));
        let n = x.shape[0];
        let exact = joint(&x.raw_f32, &y.raw_f32, n, Precision::F64);
        let mixed = joint(&x.raw_f32, &y.raw_f32, n, Precision::Mixed);
        for metric in [Metric::Svcca, Metric::Cca] {
            let opts = CompareOptions::default().with_metric(metric);
            let want = compare_moments(&exact, &opts).unwrap();
            let b = bound(&exact, &opts);
            match compare_moments(&mixed, &opts.with_precision(Precision::Mixed)) {
                Ok(got) => {
                    assert_eq!(got.coefficients.len(), want.coefficients.len(), "{name}");
                    let e = max_abs_diff(&got.coefficients, &want.coefficients);
                    let de = (got.mean - want.mean).abs();
                    println!(
                        "{name} {metric:?}: max |Δρ| {e:.2e}, |Δ mean| {de:.2e}, bound {b:.2e}"
                    );
                    assert!(e <= b, "{name} {metric:?}: {e:e} over the bound {b:e}");
                    assert!(b <= MIXED_PRECISION_TOLERANCE);
                    // Mixed precision must really round: identical bits would mean f64 ran.
                    assert_ne!(got.coefficients, want.coefficients, "{name} {metric:?}");
                    accepted += 1;
                }
                Err(CoreError::MixedPrecisionUnsafe { bound: got, .. }) => {
                    println!("{name} {metric:?}: refused, bound {got:.2e} (f64 spectra: {b:.2e})");
                    assert!(
                        b > MIXED_PRECISION_TOLERANCE / 2.0,
                        "{name}: refused at {b:e}"
                    );
                    assert_eq!(metric, Metric::Cca, "{name}: SVCCA at 99% must be accepted");
                }
                Err(e) => panic!("{name} {metric:?}: {e}"),
            }
        }
    }
    assert!(accepted >= 5, "SVCCA on every layer");
}

#[test]
fn mixed_precision_centres_in_f64_so_large_means_cost_nothing() {
    // ReLU-like layers: a large common offset over a small spread. Centring in f32 would keep
    // about 7 − log10(offset/spread) digits; centring in f64 before rounding keeps them all.
    let (n, d) = (3000, 24);
    let mut g = SplitMix64::new(7);
    let latent: Vec<f64> = (0..n * 4).map(|_| g.normal()).collect();
    let mix: Vec<f64> = (0..4 * 2 * d).map(|_| g.uniform_pm1()).collect();
    const OFFSET: f64 = 1000.0;
    let side = |s: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(n * d);
        for r in 0..n {
            for c in 0..d {
                let v: f64 = (0..4)
                    .map(|l| latent[r * 4 + l] * mix[(l * 2 + s) * d + c])
                    .sum();
                out.push((OFFSET + v) as f32);
            }
        }
        out
    };
    let (x, y) = (side(0), side(1));
    let opts = CompareOptions::default().with_metric(Metric::Svcca);
    let want = compare_moments(&joint(&x, &y, n, Precision::F64), &opts).unwrap();
    let got = compare_moments(
        &joint(&x, &y, n, Precision::Mixed),
        &opts.with_precision(Precision::Mixed),
    )
    .unwrap();
    let e = max_abs_diff(&got.coefficients, &want.coefficients);
    assert!(e < 1e-5, "offset 1000: {e:e}");
}

#[test]
fn ill_conditioned_directions_are_refused_in_mixed_precision_and_computed_in_f64() {
    // CCA keeps every direction: a neuron pair that differs by 1e-3 of its scale has a
    // correlation-matrix eigenvalue near 5e-7, kept by the rank cutoff (1e-10) but far below what
    // f32 products over 2,000 rows resolve.
    let (n, d) = (2000, 8);
    let mut g = SplitMix64::new(11);
    let mut x = vec![0f32; n * d];
    for r in 0..n {
        for c in 0..d {
            x[r * d + c] = g.normal() as f32;
        }
        x[r * d + 1] = x[r * d] + 1e-3 * g.normal() as f32;
    }
    let y: Vec<f32> = (0..n * d).map(|_| g.normal() as f32).collect();
    let opts = CompareOptions::default().with_metric(Metric::Cca);
    compare_moments(&joint(&x, &y, n, Precision::F64), &opts).unwrap();
    let err = compare_moments(
        &joint(&x, &y, n, Precision::Mixed),
        &opts.with_precision(Precision::Mixed),
    )
    .unwrap_err();
    match &err {
        CoreError::MixedPrecisionUnsafe {
            side,
            bound,
            tolerance,
            kept,
            ..
        } => {
            assert_eq!(*side, "x");
            assert!(*bound > *tolerance && *tolerance == MIXED_PRECISION_TOLERANCE);
            assert_eq!(*kept, d);
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("--precision f64") && msg.starts_with("x: mixed precision"),
        "{msg}"
    );
}

#[test]
fn google_compat_is_never_mixed() {
    let (n, d) = (200, 4);
    let mut g = SplitMix64::new(3);
    let x: Vec<f32> = (0..n * d).map(|_| g.normal() as f32).collect();
    let j = joint(&x, &x, n, Precision::Mixed);
    let opts = CompareOptions::default().with_mode(Mode::GoogleCompat);
    let err = compare_moments(&j, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::InvalidOption {
                name: "precision",
                ..
            }
        ),
        "{err}"
    );
    // Asked for in the options on f64 moments, the same refusal.
    let j = joint(&x, &x, n, Precision::F64);
    let err = compare_moments(&j, &opts.with_precision(Precision::Mixed)).unwrap_err();
    assert!(err.to_string().contains("google-compat"), "{err}");
}
