//! Real activations: the digits MLP's hidden layers, seed 0 vs seed 1 at the last checkpoint
//! (`fixtures/digits/mlp/seed{0,1}/step2250/{h1,h4}.npy`, f32 `[597, neurons]`, post-ReLU), fed
//! as f32 row blocks, compared in both modes.
// Matrix code indexes (row, column) pairs: index loops read clearer than iterator chains.
#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use svcca_core::{
    CompareOptions, Comparison, JointMoments, KeepRule, Metric, Mode, RowBlock, compare_moments,
};

fn layer(seed: u32, name: &str) -> Npy {
    let p = fixtures().join(format!("digits/mlp/seed{seed}/step2250/{name}.npy"));
    let a = read_npy(&p);
    assert!(a.is_f32 && a.shape.len() == 2 && a.shape[0] == 597);
    a
}

fn joint_f32(x: &Npy, y: &Npy, rows: Option<&[usize]>) -> JointMoments {
    let (n, dx, dy) = (x.shape[0], x.shape[1], y.shape[1]);
    let mut j = JointMoments::new(dx, dy);
    let permuted: Vec<f32>;
    let ydata = match rows {
        Some(order) => {
            permuted = order
                .iter()
                .flat_map(|&r| y.raw_f32[r * dy..(r + 1) * dy].iter().copied())
                .collect();
            &permuted[..]
        }
        None => &y.raw_f32[..],
    };
    // Uneven blocks, as shards would arrive.
    let mut r = 0;
    for size in [100usize, 37, 260, 200] {
        let e = (r + size).min(n);
        j.push(
            RowBlock::f32(&x.raw_f32[r * dx..e * dx], e - r, dx).unwrap(),
            RowBlock::f32(&ydata[r * dy..e * dy], e - r, dy).unwrap(),
        )
        .unwrap();
        r = e;
    }
    assert_eq!(j.n(), n as u64);
    j
}

fn run(j: &JointMoments, metric: Metric, mode: Mode) -> Comparison {
    let c = compare_moments(
        j,
        &CompareOptions::default()
            .with_metric(metric)
            .with_mode(mode),
    )
    .unwrap();
    assert!(c.mean.is_finite() && c.coefficients.iter().all(|v| v.is_finite()));
    c
}

/// Largest condition number (λ_max / λ_min of the kept covariance) over both sides.
fn condition(j: &JointMoments) -> f64 {
    let wo = CompareOptions::default()
        .with_metric(Metric::Cca)
        .with_mode(Mode::GoogleCompat)
        .whiten_options();
    [j.x(), j.y()]
        .iter()
        .map(|m| {
            let w = svcca_core::Whitening::from_moments(m, &wo).unwrap();
            let s = w.spectrum();
            s[0] / s[s.len() - 1]
        })
        .fold(0.0, f64::max)
}

fn check_layer(name: &str) {
    let x = layer(0, name);
    let y = layer(1, name);
    let j = joint_f32(&x, &y, None);

    // CCA: the modes differ only by google's ridge (epsilon 1e-10 on covariances rescaled to
    // max entry 1), which shifts each whitened direction's variance by at most
    // epsilon / λ_min (relative), hence the coefficients by about epsilon x the condition
    // number; 10x that is the tolerance.
    let d = run(&j, Metric::Cca, Mode::Default);
    let g = run(&j, Metric::Cca, Mode::GoogleCompat);
    assert_eq!(d.dropped_x, g.dropped_x, "{name}: dead neurons");
    assert_eq!(d.dropped_y, g.dropped_y);
    assert_eq!(d.coefficients.len(), g.coefficients.len(), "{name}: rank");
    let tol = 10.0 * 1e-10 * condition(&j);
    let e = max_abs_diff(&d.coefficients, &g.coefficients);
    println!(
        "{name}: cca default vs google max diff {e:e} (tol {tol:e}); dims {}/{}, dropped {:?}/{:?}",
        d.dims_x, d.dims_y, d.dropped_x, d.dropped_y
    );
    assert!(e <= tol.max(1e-12), "{name}: {e:e} > {tol:e}");
    assert!(d.warnings.iter().any(|w| w.contains("5-10x")) == (597 < 5 * d.dims_x.max(d.dims_y)));

    // SVCCA at 99% variance: both modes take k from the covariance's eigenvalues.
    let d = run(&j, Metric::Svcca, Mode::Default);
    let g = run(&j, Metric::Svcca, Mode::GoogleCompat);
    assert_eq!(
        (d.dims_x, d.dims_y),
        (g.dims_x, g.dims_y),
        "{name}: SVCCA k"
    );
    assert!(d.dims_x < x.shape[1] && d.dims_y < y.shape[1]);
    // google's ridge acts on the reduced covariance rescaled by λ_1: bias ~ epsilon x λ_1/λ_k.
    let svd_cond = [j.x(), j.y()]
        .iter()
        .zip([d.dims_x, d.dims_y])
        .map(|(m, k)| {
            let w =
                svcca_core::Whitening::from_moments(m, &CompareOptions::default().whiten_options())
                    .unwrap();
            w.spectrum()[0] / w.spectrum()[k - 1]
        })
        .fold(0.0, f64::max);
    let stol = 10.0 * 1e-10 * svd_cond;
    let e = max_abs_diff(&d.coefficients, &g.coefficients);
    println!(
        "{name}: svcca k {}/{}, mean {:.6} / {:.6}, max diff {e:e}",
        d.dims_x, d.dims_y, d.mean, g.mean
    );
    assert!(e <= stol, "{name}: svcca {e:e} > {stol:e}");

    // Two seeds of the same trained network are far more similar than the same layers with
    // the datapoints misaligned.
    let mut order: Vec<usize> = (0..597).collect();
    let mut rng = SplitMix64::new(2250);
    for i in (1..597).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let shuffled = joint_f32(&x, &y, Some(&order));
    let opts = CompareOptions::default().with_keep(KeepRule::Dims(d.dims_x.min(d.dims_y)));
    let aligned = compare_moments(&j, &opts).unwrap().mean;
    let misaligned = compare_moments(&shuffled, &opts).unwrap().mean;
    println!("{name}: svcca aligned {aligned:.4} vs shuffled {misaligned:.4}");
    assert!(
        aligned > misaligned + 0.2,
        "{name}: {aligned} vs {misaligned}"
    );

    // CKA does not depend on the mode; PWCCA is finite in both.
    let a = run(&j, Metric::Cka, Mode::Default);
    let b = run(&j, Metric::Cka, Mode::GoogleCompat);
    assert_eq!(a.mean, b.mean);
    assert!(a.mean > 0.0 && a.mean <= 1.0);
    run(&j, Metric::Pwcca, Mode::Default);
    run(&j, Metric::Pwcca, Mode::GoogleCompat);
}

#[test]
fn digits_mlp_h1_seed0_vs_seed1() {
    check_layer("h1");
}

#[test]
fn digits_mlp_h4_seed0_vs_seed1() {
    check_layer("h4");
}
