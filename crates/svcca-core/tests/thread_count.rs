//! Results must not depend on the process-wide thread count: a sweep's driver and its workers
//! run with different counts (`svcca sweep --workers`, `svcca worker --threads`, pods of other
//! sizes), and their numbers are combined. Every metric and mode, dense and conv, on real
//! activations, computed with one thread and with several, bit for bit.
//!
//! Its own test binary: the thread count is process-wide.

mod common;
mod conv_support;

use common::*;
use svcca_core::conv::{ConvInput, ConvMethod, ConvOptions, Layout, compare_conv};
use svcca_core::{CompareOptions, JointMoments, KeepRule, Metric, Mode, RowBlock, compare_moments};

/// What is compared of one result: its name, mean, coefficients and PWCCA weights.
type Numbers = (String, f64, Vec<f64>, Option<Vec<f64>>);

fn dense(threads: usize) -> Vec<Numbers> {
    svcca_core::set_parallelism(threads);
    let load = |seed: u32, step: u32, name: &str| {
        read_npy(&fixtures().join(format!("digits/mlp/seed{seed}/step{step}/{name}.npy")))
    };
    let (x, y) = (load(0, 25, "h1"), load(0, 2250, "h2"));
    let (n, dx, dy) = (x.shape[0], x.shape[1], y.shape[1]);
    let mut j = JointMoments::new(dx, dy);
    j.push(
        RowBlock::f32(&x.raw_f32, n, dx).unwrap(),
        RowBlock::f32(&y.raw_f32, n, dy).unwrap(),
    )
    .unwrap();
    let mut out = metrics_and_modes("digits", &j);
    // The real layers are at most 128 neurons wide, below the sizes where faer's decompositions
    // would split their work (its parallel SVD rounds differently from 300 × 300 up): a wider,
    // synthetic pair, y a noisy shuffle of x's neurons.
    let (n, d) = (900, 320);
    let mut g = SplitMix64::new(14);
    let x: Vec<f64> = (0..n * d).map(|_| g.normal()).collect();
    let y: Vec<f64> = (0..n * d)
        .map(|i| x[i - i % d + (i % d * 7) % d] + 0.5 * g.normal())
        .collect();
    let mut wide = JointMoments::new(d, d);
    wide.push(
        RowBlock::f64(&x, n, d).unwrap(),
        RowBlock::f64(&y, n, d).unwrap(),
    )
    .unwrap();
    out.extend(metrics_and_modes("wide", &wide));
    out
}

/// Every metric in both modes, and SVCCA keeping one direction, of the pair `j`.
fn metrics_and_modes(name: &str, j: &JointMoments) -> Vec<Numbers> {
    let mut out = Vec::new();
    // One kept direction: the products have a single output column over every datapoint, the
    // shape faer's parallel products split across threads.
    for mode in [Mode::Default, Mode::GoogleCompat] {
        let c = compare_moments(
            j,
            &CompareOptions::default()
                .with_mode(mode)
                .with_keep(KeepRule::Dims(1)),
        )
        .unwrap();
        out.push((
            format!("{name}: Svcca keep 1 {mode:?}"),
            c.mean,
            c.coefficients,
            None,
        ));
    }
    for metric in [Metric::Svcca, Metric::Cca, Metric::Pwcca, Metric::Cka] {
        for mode in [Mode::Default, Mode::GoogleCompat] {
            let c = compare_moments(
                j,
                &CompareOptions::default()
                    .with_metric(metric)
                    .with_mode(mode),
            )
            .unwrap();
            out.push((
                format!("{name}: {metric:?} {mode:?}"),
                c.mean,
                c.coefficients,
                c.weights,
            ));
        }
    }
    out
}

fn conv(threads: usize) -> Vec<(String, f64, Vec<f64>)> {
    svcca_core::set_parallelism(threads);
    let (sa, a) = conv_support::read_f32(&conv_support::fixture(
        "digits/conv/seed0/step1500/conv1.npy",
    ));
    let (sb, b) = conv_support::read_f32(&conv_support::fixture(
        "digits/conv/seed1/step1500/conv1.npy",
    ));
    let mut out = Vec::new();
    for method in [ConvMethod::Dft, ConvMethod::Fold, ConvMethod::Pool] {
        let opts = ConvOptions::default().with_method(method);
        let c = compare_conv(
            ConvInput::f32(&a, &sa, Layout::Nhwc).unwrap(),
            ConvInput::f32(&b, &sb, Layout::Nhwc).unwrap(),
            &opts,
        )
        .unwrap();
        out.push((format!("{method:?}"), c.mean, c.coefficients));
    }
    out
}

#[test]
fn one_thread_and_several_give_the_same_bits() {
    let (d1, c1) = (dense(1), conv(1));
    for threads in [2, 3, 4] {
        let dn = dense(threads);
        for (a, b) in d1.iter().zip(&dn) {
            assert!(
                a.1.to_bits() == b.1.to_bits() && a.2 == b.2 && a.3 == b.3,
                "{} with {threads} threads: {} vs {} with one",
                a.0,
                b.1,
                a.1
            );
        }
        let cn = conv(threads);
        for (a, b) in c1.iter().zip(&cn) {
            assert!(
                a.1.to_bits() == b.1.to_bits() && a.2 == b.2,
                "conv {} with {threads} threads: {} vs {} with one",
                a.0,
                b.1,
                a.1
            );
        }
    }
}
