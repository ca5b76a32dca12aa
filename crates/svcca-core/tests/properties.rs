//! Seeded property tests of the maths: exact mergeability of moments, invariances of CCA,
//! SVCCA and CKA, symmetry, equality of the whiten-once path with `compare_moments`, and the
//! guards on bad input.
// Matrix code indexes (row, column) pairs: index loops read clearer than iterator chains.
#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use svcca_core::faer::{Mat, Par};
use svcca_core::{
    CompareOptions, Comparison, CoreError, JointMoments, KeepRule, Metric, Mode, MomentAccumulator,
    RowBlock, Side, Whitening, compare_moments, compare_whitened,
};

fn rel_err_mat(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut scale = 0.0f64;
    let mut e = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            scale = scale.max(b[(i, j)].abs());
            e = e.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    e / scale.max(f64::MIN_POSITIVE)
}

/// Two-pass reference: mean, then Σ (x−μ)(x−μ)ᵀ, in f64.
fn two_pass(x: &Rows) -> (Vec<f64>, Mat<f64>) {
    let mut mu = vec![0.0; x.d];
    for r in 0..x.n {
        for c in 0..x.d {
            mu[c] += x.get(r, c);
        }
    }
    mu.iter_mut().for_each(|m| *m /= x.n as f64);
    let mut m = Mat::zeros(x.d, x.d);
    for r in 0..x.n {
        for i in 0..x.d {
            let a = x.get(r, i) - mu[i];
            for j in 0..x.d {
                m[(i, j)] += a * (x.get(r, j) - mu[j]);
            }
        }
    }
    (mu, m)
}

fn random_orthogonal(g: &mut SplitMix64, d: usize) -> Mat<f64> {
    let a = Mat::from_fn(d, d, |_, _| g.normal());
    a.qr().compute_thin_Q()
}

/// `[n, d]` data: a shared low-rank signal through a random map, plus noise and offsets.
fn shared_pair(seed: u64, n: usize, dx: usize, dy: usize, rank: usize, noise: f64) -> (Rows, Rows) {
    let mut g = SplitMix64::new(seed);
    let z = Mat::from_fn(n, rank, |_, _| g.normal());
    let wx = Mat::from_fn(rank, dx, |_, _| g.normal());
    let wy = Mat::from_fn(rank, dy, |_, _| g.normal());
    let mut x = matmul(&z, &wx);
    let mut y = matmul(&z, &wy);
    for j in 0..dx {
        let off = 3.0 * g.normal();
        for i in 0..n {
            x[(i, j)] += noise * g.normal() + off;
        }
    }
    for j in 0..dy {
        let off = 3.0 * g.normal();
        for i in 0..n {
            y[(i, j)] += noise * g.normal() + off;
        }
    }
    (Rows::from_mat(&x), Rows::from_mat(&y))
}

fn cmp(x: &Rows, y: &Rows, opts: &CompareOptions) -> Comparison {
    compare_moments(&joint(x, y), opts).unwrap()
}

fn assert_coefs_close(a: &Comparison, b: &Comparison, tol: f64, what: &str) {
    let e = max_abs_diff(&a.coefficients, &b.coefficients);
    assert!(
        e <= tol,
        "{what}: coefficients differ by {e:e} (tol {tol:e})"
    );
    assert!(
        (a.mean - b.mean).abs() <= tol,
        "{what}: means {} vs {}",
        a.mean,
        b.mean
    );
}

#[test]
fn moments_match_two_pass_and_are_partition_and_order_independent() {
    let mut g = SplitMix64::new(7);
    for &(n, d) in &[(1000usize, 7usize), (777, 33), (300, 1)] {
        let x = random_rows(&mut g, n, d);
        let (mu, m) = two_pass(&x);
        let whole = moments(&x);
        assert_eq!(whole.n(), n as u64);
        assert!(max_abs_diff(whole.mean(), &mu) < 1e-13);
        assert!(rel_err_mat(&whole.comoment(), &m) < 1e-12);
        for trial in 0..5 {
            // Random shards, each fed in random blocks, merged in random order...
            let mut cuts = vec![0, n];
            for _ in 0..(1 + g.below(8)) {
                cuts.push(g.below(n + 1));
            }
            cuts.sort();
            let mut shards: Vec<MomentAccumulator> = cuts
                .windows(2)
                .map(|w| {
                    let mut a = MomentAccumulator::new(d);
                    let mut r = w[0];
                    while r < w[1] {
                        let e = (r + 1 + g.below(50)).min(w[1]);
                        a.push(x.rows(r, e)).unwrap();
                        r = e;
                    }
                    a
                })
                .collect();
            // ...sequentially in shuffled order...
            let mut order: Vec<usize> = (0..shards.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, g.below(i + 1));
            }
            let mut seq = MomentAccumulator::new(d);
            for &i in &order {
                seq.merge(&shards[i]).unwrap();
            }
            // ...and as a pairwise tree.
            while shards.len() > 1 {
                let b = shards.pop().unwrap();
                let k = g.below(shards.len());
                shards[k].merge(&b).unwrap();
            }
            let tree = &shards[0];
            for (name, acc) in [("sequential", &seq), ("tree", tree)] {
                assert_eq!(acc.n(), n as u64);
                let em = max_abs_diff(acc.mean(), whole.mean());
                let ec = rel_err_mat(&acc.comoment(), &whole.comoment());
                assert!(
                    em < 1e-13 && ec < 1e-12,
                    "{name} trial {trial}: {em:e} {ec:e}"
                );
            }
        }
    }
}

#[test]
fn moments_do_not_cancel_with_large_means() {
    // ReLU-like activations with means 1e4 times their spread: Σxxᵀ − nμμᵀ would lose ~8 digits.
    let mut g = SplitMix64::new(11);
    let x0 = random_rows(&mut g, 2000, 5);
    let x = Rows {
        data: x0.data.iter().map(|v| v + 1e4).collect(),
        ..x0
    };
    let (_, m) = two_pass(&x);
    let mut acc = MomentAccumulator::new(5);
    for r in (0..2000).step_by(300) {
        acc.push(x.rows(r, (r + 300).min(2000))).unwrap();
    }
    assert!(rel_err_mat(&acc.comoment(), &m) < 1e-11);
}

#[test]
fn f32_blocks_equal_widened_f64_blocks() {
    let mut g = SplitMix64::new(5);
    let x = random_rows(&mut g, 500, 9);
    let f: Vec<f32> = x.data.iter().map(|&v| v as f32).collect();
    let widened: Vec<f64> = f.iter().map(|&v| v as f64).collect();
    let mut a = MomentAccumulator::new(9);
    a.push(RowBlock::f32(&f, 500, 9).unwrap()).unwrap();
    let mut b = MomentAccumulator::new(9);
    b.push(RowBlock::f64(&widened, 500, 9).unwrap()).unwrap();
    assert!(rel_err_mat(&a.comoment(), &b.comoment()) < 1e-14);
    assert!(max_abs_diff(a.mean(), b.mean()) < 1e-15);
}

#[test]
fn parts_round_trip_and_joint_marginals() {
    let mut g = SplitMix64::new(9);
    let x = random_rows(&mut g, 400, 6);
    let y = random_rows(&mut g, 400, 4);
    let acc = moments(&x);
    let back = MomentAccumulator::from_parts(acc.to_parts()).unwrap();
    assert_eq!(back.n(), acc.n());
    assert_eq!(back.mean(), acc.mean());
    assert!(rel_err_mat(&back.comoment(), &acc.comoment()) == 0.0);
    let j = joint(&x, &y);
    assert!(rel_err_mat(&j.x().comoment(), &acc.comoment()) < 1e-13);
    assert!(rel_err_mat(&j.y().comoment(), &moments(&y).comoment()) < 1e-13);
    // Cross co-moment against a two-pass reference.
    let (mx, _) = two_pass(&x);
    let (my, _) = two_pass(&y);
    let mut c = Mat::zeros(6, 4);
    for r in 0..400 {
        for i in 0..6 {
            for k in 0..4 {
                c[(i, k)] += (x.get(r, i) - mx[i]) * (y.get(r, k) - my[k]);
            }
        }
    }
    assert!(rel_err_mat(&j.cross(), &c) < 1e-12);
    // Bad parts are rejected.
    let mut p = acc.to_parts();
    p.comoment.pop();
    assert!(matches!(
        MomentAccumulator::from_parts(p),
        Err(CoreError::InvalidParts { .. })
    ));
}

#[test]
fn cca_is_invariant_to_invertible_maps_and_shifts() {
    let (x, y) = shared_pair(21, 3000, 12, 9, 4, 0.7);
    let mut g = SplitMix64::new(22);
    // A well-conditioned invertible map and per-neuron shifts on y (and on x).
    let a = Mat::from_fn(9, 9, |i, j| if i == j { 2.0 } else { 0.4 * g.normal() });
    let mut y2 = matmul(&y.to_mat(), &a);
    let b = Mat::from_fn(12, 12, |i, j| if i == j { 1.5 } else { 0.3 * g.normal() });
    let mut x2 = matmul(&x.to_mat(), &b);
    for j in 0..9 {
        let s = 100.0 * g.normal();
        for i in 0..3000 {
            y2[(i, j)] += s;
        }
    }
    for j in 0..12 {
        let s = 50.0 * g.normal();
        for i in 0..3000 {
            x2[(i, j)] += s;
        }
    }
    let (x2, y2) = (Rows::from_mat(&x2), Rows::from_mat(&y2));
    for mode in [Mode::Default, Mode::GoogleCompat] {
        let opts = CompareOptions::default()
            .with_metric(Metric::Cca)
            .with_mode(mode);
        let c1 = cmp(&x, &y, &opts);
        let c2 = cmp(&x2, &y2, &opts);
        assert_eq!(c1.coefficients.len(), 9);
        // google's epsilon ridge is relative to each side's scale, so it is only
        // approximately invariant: its bias is ~epsilon x condition number.
        let tol = if mode == Mode::Default { 1e-10 } else { 1e-7 };
        assert_coefs_close(&c1, &c2, tol, &format!("cca {mode}"));
        assert!(c1.coefficients[0] > 0.5 && c1.coefficients[8] < 0.2);
    }
}

#[test]
fn svcca_and_cka_are_invariant_to_orthogonal_maps_and_isotropic_scaling() {
    let (x, y) = shared_pair(31, 2500, 20, 16, 5, 0.05);
    let mut g = SplitMix64::new(32);
    let qx = random_orthogonal(&mut g, 20);
    let qy = random_orthogonal(&mut g, 16);
    let mut x2 = matmul(&x.to_mat(), &qx);
    x2 *= svcca_core::faer::Scale(7.5);
    let mut y2 = matmul(&y.to_mat(), &qy);
    y2 *= svcca_core::faer::Scale(0.01);
    let (x2, y2) = (Rows::from_mat(&x2), Rows::from_mat(&y2));
    for mode in [Mode::Default, Mode::GoogleCompat] {
        for keep in [
            KeepRule::VarianceFraction(0.99),
            KeepRule::Dims(5),
            KeepRule::Dims(8),
        ] {
            let opts = CompareOptions::default()
                .with_metric(Metric::Svcca)
                .with_mode(mode)
                .with_keep(keep);
            let c1 = cmp(&x, &y, &opts);
            let c2 = cmp(&x2, &y2, &opts);
            assert_eq!((c1.dims_x, c1.dims_y), (c2.dims_x, c2.dims_y), "{keep:?}");
            assert_coefs_close(&c1, &c2, 1e-9, &format!("svcca {mode} {keep:?}"));
        }
        let opts = CompareOptions::default()
            .with_metric(Metric::Cka)
            .with_mode(mode);
        let c1 = cmp(&x, &y, &opts);
        let c2 = cmp(&x2, &y2, &opts);
        assert!(
            (c1.mean - c2.mean).abs() < 1e-12,
            "cka {} {}",
            c1.mean,
            c2.mean
        );
        assert!(c1.mean > 0.0 && c1.mean <= 1.0);
    }
    // The variance rule finds the shared rank-5 signal.
    let c = cmp(&x, &y, &CompareOptions::default());
    assert_eq!((c.dims_x, c.dims_y), (5, 5));
    assert!(c.coefficients.iter().all(|&r| r > 0.99));
}

#[test]
fn cka_is_not_invariant_to_general_invertible_maps() {
    // Guards against a CKA that whitens (which would make it CCA-like).
    let (x, y) = shared_pair(41, 1000, 8, 8, 3, 0.5);
    let mut g = SplitMix64::new(42);
    let a = Mat::from_fn(8, 8, |i, j| {
        if i == j {
            5.0 * (i + 1) as f64
        } else {
            g.normal()
        }
    });
    let y2 = Rows::from_mat(&matmul(&y.to_mat(), &a));
    let opts = CompareOptions::default().with_metric(Metric::Cka);
    assert!((cmp(&x, &y, &opts).mean - cmp(&x, &y2, &opts).mean).abs() > 1e-3);
}

#[test]
fn symmetric_metrics_are_symmetric() {
    let (x, y) = shared_pair(51, 2000, 14, 10, 4, 0.4);
    for mode in [Mode::Default, Mode::GoogleCompat] {
        for metric in [Metric::Cca, Metric::Svcca, Metric::Cka] {
            let opts = CompareOptions::default()
                .with_metric(metric)
                .with_mode(mode);
            let a = cmp(&x, &y, &opts);
            let b = cmp(&y, &x, &opts);
            assert_coefs_close(&a, &b, 1e-10, &format!("{metric} {mode}"));
            assert_eq!((a.dims_x, a.dims_y), (b.dims_y, b.dims_x));
        }
        // PWCCA takes its weights from the narrower side, whichever argument it is.
        let opts = CompareOptions::default()
            .with_metric(Metric::Pwcca)
            .with_mode(mode);
        let a = cmp(&x, &y, &opts);
        let b = cmp(&y, &x, &opts);
        assert!((a.mean - b.mean).abs() < 1e-10, "pwcca {mode}");
        let w = a.weights.unwrap();
        assert_eq!(w.len(), 10);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn pwcca_default_weights_favour_shared_directions() {
    // Paper-faithful PWCCA: the shared (high-variance, high-correlation) directions carry most
    // of the representation, so the weighted mean exceeds the plain mean.
    let (x, y) = shared_pair(61, 3000, 16, 16, 3, 0.3);
    let c = cmp(
        &x,
        &y,
        &CompareOptions::default().with_metric(Metric::Pwcca),
    );
    let plain = c.sum / c.coefficients.len() as f64;
    assert!(c.mean > plain + 0.2, "pwcca {} vs plain {}", c.mean, plain);
    let w = c.weights.unwrap();
    assert!(w[..3].iter().sum::<f64>() > 0.5);
}

#[test]
fn whiten_once_path_equals_compare_moments() {
    let (x, y) = shared_pair(71, 1500, 18, 11, 4, 0.5);
    for mode in [Mode::Default, Mode::GoogleCompat] {
        for metric in [Metric::Svcca, Metric::Cca, Metric::Pwcca] {
            let opts = CompareOptions::default()
                .with_metric(metric)
                .with_mode(mode);
            let direct = cmp(&x, &y, &opts);
            // The engine's path: moments per side (from shards), whiten once, accumulate
            // Σ z_x z_yᵀ block by block from the rows.
            let mut mx = MomentAccumulator::new(x.d);
            let mut my = MomentAccumulator::new(y.d);
            for r in (0..1500).step_by(400) {
                let e = (r + 400).min(1500);
                mx.push(x.rows(r, e)).unwrap();
                my.push(y.rows(r, e)).unwrap();
            }
            let wo = opts.whiten_options();
            let wx = Whitening::from_moments(&mx, &wo).unwrap();
            let wy = Whitening::from_moments(&my, &wo).unwrap();
            let mut cross = Mat::<f64>::zeros(wx.dims(), wy.dims());
            for r in (0..1500).step_by(256) {
                let e = (r + 256).min(1500);
                let zx = wx.whiten_rows(x.rows(r, e)).unwrap();
                let zy = wy.whiten_rows(y.rows(r, e)).unwrap();
                svcca_core::faer::linalg::matmul::matmul(
                    cross.as_mut(),
                    svcca_core::faer::Accum::Add,
                    zx.transpose(),
                    zy.as_ref(),
                    1.0,
                    Par::Seq,
                );
            }
            let via = compare_whitened(
                Side::with_moments(&wx, &mx),
                Side::with_moments(&wy, &my),
                cross.as_ref(),
                &opts,
            )
            .unwrap();
            assert_coefs_close(&direct, &via, 1e-12, &format!("{metric} {mode}"));
            assert_eq!(direct.dims_x, via.dims_x);
            if let (Some(a), Some(b)) = (&direct.weights, &via.weights) {
                assert!(max_abs_diff(a, b) < 1e-12);
            }
        }
    }
}

#[test]
fn whitened_rows_have_identity_covariance_in_default_mode() {
    let mut g = SplitMix64::new(81);
    let x = random_rows(&mut g, 800, 10);
    let m = moments(&x);
    let w = Whitening::from_moments(&m, &Default::default()).unwrap();
    let z = w.whiten_rows(x.block()).unwrap();
    let c = z.transpose() * &z;
    for i in 0..w.dims() {
        for j in 0..w.dims() {
            let want = if i == j { 799.0 } else { 0.0 };
            assert!((c[(i, j)] - want).abs() < 1e-9, "({i},{j}) {}", c[(i, j)]);
        }
    }
}

#[test]
fn default_and_google_modes_agree_on_well_conditioned_data() {
    // google's ridge biases coefficients by ~epsilon x condition number (1e-10 x ~10 here).
    let (x, y) = shared_pair(91, 4000, 24, 20, 6, 0.6);
    for metric in [Metric::Cca, Metric::Svcca] {
        let d = cmp(&x, &y, &CompareOptions::default().with_metric(metric));
        let gc = cmp(
            &x,
            &y,
            &CompareOptions::default()
                .with_metric(metric)
                .with_mode(Mode::GoogleCompat),
        );
        assert_coefs_close(&d, &gc, 1e-8, &format!("{metric}"));
        assert_eq!((d.dims_x, d.dims_y), (gc.dims_x, gc.dims_y));
    }
}

#[test]
fn rank_deficient_input_gives_finite_results_with_diagnostics() {
    let (x, y) = shared_pair(101, 1000, 6, 5, 2, 0.5);
    // Duplicate and linearly dependent neurons, and a constant one.
    let mut xm = Mat::zeros(1000, 9);
    for i in 0..1000 {
        for j in 0..6 {
            xm[(i, j)] = x.get(i, j);
        }
        xm[(i, 6)] = x.get(i, 0);
        xm[(i, 7)] = x.get(i, 1) - 2.0 * x.get(i, 2);
        xm[(i, 8)] = 4.0;
    }
    let xr = Rows::from_mat(&xm);
    for metric in [Metric::Cca, Metric::Pwcca, Metric::Svcca, Metric::Cka] {
        let c = cmp(&xr, &y, &CompareOptions::default().with_metric(metric));
        assert!(c.mean.is_finite() && c.coefficients.iter().all(|v| v.is_finite()));
        if metric != Metric::Cka {
            assert_eq!(c.dropped_x, vec![8], "{metric}");
        }
        if metric == Metric::Cca {
            assert_eq!(c.dims_x, 6, "rank used");
            assert!(c.warnings.iter().any(|w| w.contains("rank used")));
            // Same coefficients as on the independent neurons.
            let base = cmp(&x, &y, &CompareOptions::default().with_metric(metric));
            assert_coefs_close(&c, &base, 1e-8, "dependent neurons");
        }
    }
}

#[test]
fn guards_refuse_trivial_and_warn_on_few_datapoints() {
    let (x, y) = shared_pair(111, 40, 39, 10, 3, 1.0);
    let opts = CompareOptions::default().with_metric(Metric::Cca);
    let j = joint(&x, &y);
    let err = compare_moments(&j, &opts).unwrap_err();
    assert!(
        matches!(err, CoreError::TrivialComparison { n: 40, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("trivially 1") && msg.contains("5-10x"),
        "{msg}"
    );
    let c = compare_moments(&j, &opts.with_allow_trivial(true)).unwrap();
    assert!(c.coefficients.iter().all(|v| v.is_finite()));
    assert!(c.warnings.iter().any(|w| w.contains("trivially")));
    // 10 neurons over 40 datapoints: allowed, with a warning.
    let c = compare_moments(&joint(&y, &y), &opts).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("5-10x")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut acc = MomentAccumulator::new(3);
    acc.push(RowBlock::f64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3).unwrap())
        .unwrap();
    let bad = [1.0, 2.0, 3.0, 4.0, f64::NAN, 6.0];
    let e = acc.push(RowBlock::f64(&bad, 2, 3).unwrap()).unwrap_err();
    // NaN != NaN, so match on the position.
    assert!(matches!(
        e,
        CoreError::NonFinite {
            input: 0,
            row: 3,
            column: 1,
            ..
        }
    ));
    assert_eq!(acc.n(), 2, "failed push leaves the accumulator unchanged");
    let inf = [f32::INFINITY; 3];
    let mut j = JointMoments::new(3, 3);
    let fine = [0.0f32; 3];
    let e = j
        .push(
            RowBlock::f32(&fine, 1, 3).unwrap(),
            RowBlock::f32(&inf, 1, 3).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(
        e,
        CoreError::NonFinite {
            input: 1,
            row: 0,
            column: 0,
            ..
        }
    ));
    assert!(matches!(
        RowBlock::f64(&[1.0; 5], 2, 3),
        Err(CoreError::BlockShape { .. })
    ));
    assert!(matches!(
        acc.push(RowBlock::f64(&[1.0; 4], 2, 2).unwrap()),
        Err(CoreError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        acc.merge(&MomentAccumulator::new(4)),
        Err(CoreError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        j.push(
            RowBlock::f32(&[0.0; 6], 2, 3).unwrap(),
            RowBlock::f32(&[0.0; 3], 1, 3).unwrap()
        ),
        Err(CoreError::DatapointMismatch { .. })
    ));
    // Empty and constant inputs.
    let opts = CompareOptions::default();
    assert!(matches!(
        compare_moments(&JointMoments::new(3, 3), &opts),
        Err(CoreError::Empty { .. })
    ));
    let mut g = SplitMix64::new(3);
    let y = random_rows(&mut g, 50, 3);
    let constant = Rows {
        n: 50,
        d: 4,
        data: vec![2.5; 200],
    };
    for mode in [Mode::Default, Mode::GoogleCompat] {
        for metric in [Metric::Svcca, Metric::Cca, Metric::Pwcca, Metric::Cka] {
            let e = compare_moments(
                &joint(&constant, &y),
                &opts.with_mode(mode).with_metric(metric),
            )
            .unwrap_err();
            assert!(
                matches!(e, CoreError::ConstantLayer { side: "x", .. }),
                "{mode} {metric}: {e}"
            );
        }
    }
    // Whitenings over different datapoints cannot be compared.
    let a = random_rows(&mut g, 60, 3);
    let wa = Whitening::from_moments(&moments(&a), &Default::default()).unwrap();
    let wy = Whitening::from_moments(&moments(&y), &Default::default()).unwrap();
    let cross = Mat::<f64>::zeros(3, 3);
    assert!(matches!(
        compare_whitened(Side::new(&wa), Side::new(&wy), cross.as_ref(), &opts),
        Err(CoreError::DatapointMismatch { n_x: 60, n_y: 50 })
    ));
    // Invalid options.
    for bad in [
        opts.with_threshold(0.0),
        opts.with_epsilon(-1.0),
        opts.with_keep(KeepRule::Dims(0)),
        opts.with_keep(KeepRule::VarianceFraction(1.5)),
    ] {
        assert!(matches!(
            compare_moments(&joint(&a, &a), &bad),
            Err(CoreError::InvalidOption { .. })
        ));
    }
}

#[test]
fn metric_and_mode_names_round_trip_and_result_serialises() {
    for m in [Metric::Svcca, Metric::Cca, Metric::Pwcca, Metric::Cka] {
        assert_eq!(m.to_string().parse::<Metric>().unwrap(), m);
        assert_eq!(serde_json::to_value(m).unwrap(), m.to_string());
    }
    for m in [Mode::Default, Mode::GoogleCompat] {
        assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
    }
    assert!("svd".parse::<Metric>().is_err());
    let (x, y) = shared_pair(121, 500, 6, 6, 2, 0.5);
    let c = cmp(&x, &y, &CompareOptions::default().with_metric(Metric::Cca));
    let v = serde_json::to_value(&c).unwrap();
    for key in [
        "metric",
        "mean",
        "google_mean",
        "sum",
        "coefficients",
        "dims_x",
        "dims_y",
        "dropped_x",
        "dropped_y",
        "n_datapoints",
        "warnings",
        "definition",
    ] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert_eq!(v["metric"], "cca");
    let mean_all = c.coefficients.iter().sum::<f64>() / c.coefficients.len() as f64;
    assert!((c.mean - mean_all).abs() < 1e-15);
    assert!(c.definition.contains("mean of all"));
}

#[test]
fn whitening_parts_round_trip() {
    let (x, _) = shared_pair(131, 600, 9, 4, 2, 0.5);
    let m = moments(&x);
    for mode in [Mode::Default, Mode::GoogleCompat] {
        let wo = CompareOptions::default()
            .with_mode(mode)
            .with_keep(KeepRule::Dims(3))
            .whiten_options();
        let w = Whitening::from_moments(&m, &wo).unwrap();
        let back = Whitening::from_parts(w.to_parts()).unwrap();
        assert_eq!(back.to_parts(), w.to_parts());
        assert_eq!(
            back.whiten_rows(x.block()).unwrap(),
            w.whiten_rows(x.block()).unwrap()
        );
        let mut bad = w.to_parts();
        bad.transform.pop();
        assert!(matches!(
            Whitening::from_parts(bad),
            Err(CoreError::InvalidParts { .. })
        ));
    }
}

/// The centred `[n, d]` data (standardised per neuron if asked) projected onto its top `k`
/// principal directions, found by an SVD of the data matrix itself rather than by the
/// eigendecomposition of the covariance the whitening uses.
fn top_directions(x: &Rows, k: usize, standardise: bool) -> Mat<f64> {
    let mut c = x.to_mat();
    for j in 0..x.d {
        let mu = (0..x.n).map(|i| c[(i, j)]).sum::<f64>() / x.n as f64;
        (0..x.n).for_each(|i| c[(i, j)] -= mu);
        if standardise {
            let sd = (0..x.n).map(|i| c[(i, j)] * c[(i, j)]).sum::<f64>().sqrt();
            (0..x.n).for_each(|i| c[(i, j)] /= sd);
        }
    }
    let svd = c.thin_svd().unwrap();
    let v = svd.V().subcols(0, k).to_owned();
    matmul(&c, &v)
}

/// Mean canonical correlation of two centred data matrices: singular values of `Q_aᵀ Q_b`
/// (thin QR of each), the textbook route, sharing nothing with the whitened one.
fn mean_cca_from_scratch(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let qa = a.qr().compute_thin_Q();
    let qb = b.qr().compute_thin_Q();
    let s = matmul(&qa.transpose().to_owned(), &qb)
        .singular_values()
        .unwrap();
    s.iter().map(|v| v.clamp(0.0, 1.0)).sum::<f64>() / s.len() as f64
}

#[test]
fn equal_k_mean_is_the_comparison_with_the_larger_side_cut_to_the_smaller_k() {
    // x: 4 neurons, y: 11; rank-4 shared signal plus noise, so y's extra directions are the
    // ones that inflate the plain SVCCA/CCA mean.
    let (x, y) = shared_pair(211, 1200, 4, 11, 4, 0.6);
    for (keep, metric, standardise) in [
        (KeepRule::Dims(7), Metric::Svcca, false),
        (KeepRule::VarianceFraction(0.99), Metric::Svcca, false),
        (KeepRule::All, Metric::Cca, true),
    ] {
        let opts = CompareOptions::default()
            .with_metric(metric)
            .with_keep(keep);
        for swap in [false, true] {
            let (a, b) = if swap { (&y, &x) } else { (&x, &y) };
            let c = cmp(a, b, &opts);
            let k = c.dims_x.min(c.dims_y);
            assert_ne!(c.dims_x, c.dims_y, "{metric} {keep:?}: dims must differ");
            let want = mean_cca_from_scratch(
                &top_directions(a, k, standardise),
                &top_directions(b, k, standardise),
            );
            let got = c
                .equal_k_mean
                .expect("default-mode svcca/cca has an equal-k mean");
            assert!(
                (got - want).abs() < 1e-10,
                "{metric} {keep:?} swap={swap}: equal-k {got} vs from scratch {want}"
            );
            assert!(
                (got - c.mean).abs() > 1e-3,
                "{metric} {keep:?}: the cut must matter on this data ({got} vs {})",
                c.mean
            );
            assert!(c.definition.contains("equal_k_mean"), "{}", c.definition);
        }
    }

    // Whitenings kept at different counts, compared through the engine's path.
    let (mx, my) = (moments(&x), moments(&y));
    let opts = CompareOptions::default();
    let wo = |k| opts.whiten_options().with_keep(KeepRule::Dims(k));
    let wx = Whitening::from_moments(&mx, &wo(3)).unwrap();
    let wy = Whitening::from_moments(&my, &wo(9)).unwrap();
    let cross = wx
        .whitened_cross(&wy, joint(&x, &y).cross().as_ref())
        .unwrap();
    let c = compare_whitened(Side::new(&wx), Side::new(&wy), cross.as_ref(), &opts).unwrap();
    let want = mean_cca_from_scratch(&top_directions(&x, 3, false), &top_directions(&y, 3, false));
    assert!((c.equal_k_mean.unwrap() - want).abs() < 1e-10);
}

#[test]
fn equal_k_mean_is_the_mean_at_equal_dims_and_absent_where_undefined() {
    let (x, y) = shared_pair(212, 900, 6, 6, 3, 0.5);
    for metric in [Metric::Svcca, Metric::Cca] {
        let opts = CompareOptions::default()
            .with_metric(metric)
            .with_keep(KeepRule::Dims(4));
        let c = cmp(&x, &y, &opts);
        assert_eq!(c.dims_x, c.dims_y);
        assert_eq!(c.equal_k_mean, Some(c.mean), "{metric}");
    }
    let (x, y) = shared_pair(213, 900, 4, 9, 3, 0.5);
    for (metric, mode) in [
        (Metric::Pwcca, Mode::Default),
        (Metric::Cka, Mode::Default),
        (Metric::Svcca, Mode::GoogleCompat),
        (Metric::Cca, Mode::GoogleCompat),
    ] {
        let opts = CompareOptions::default()
            .with_metric(metric)
            .with_mode(mode);
        let c = cmp(&x, &y, &opts);
        assert_eq!(c.equal_k_mean, None, "{metric} {mode}");
        let v = serde_json::to_value(&c).unwrap();
        assert!(v["equal_k_mean"].is_null(), "{metric} {mode}: {v}");
    }
}
