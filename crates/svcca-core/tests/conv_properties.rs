//! Properties of the conv comparisons: the DFT theorem on shift-closed data, conjugate
//! symmetry, fold/pool against the dense API, layouts, streaming and merge order, guards.

mod conv_support;

use conv_support::SplitMix;
use svcca_core::conv::{
    ConvError, ConvInput, ConvMethod, ConvMomentAccumulator, ConvOptions, ConvPlan, KeepRule,
    Layout, Mode, compare_conv,
};
use svcca_core::{CompareOptions, JointMoments, Metric, RowBlock, compare_moments};

/// `[n, h, w, c]` NHWC pair: `y = x·A` (channel mix) + a spatially smoothed copy + noise,
/// so per-frequency correlations vary and are neither 0 nor 1.
fn base_pair(
    rng: &mut SplitMix,
    n: usize,
    h: usize,
    w: usize,
    cx: usize,
    cy: usize,
) -> (Vec<f64>, Vec<f64>) {
    let x = rng.vec(n * h * w * cx);
    let a = rng.vec(cx * cy);
    let noise = rng.vec(n * h * w * cy);
    let mut y = vec![0.0; n * h * w * cy];
    for img in 0..n {
        for r in 0..h {
            for q in 0..w {
                let p = img * h * w + r * w + q;
                let right = img * h * w + r * w + (q + 1) % w;
                for o in 0..cy {
                    let mut v = 0.0;
                    for i in 0..cx {
                        v += (x[p * cx + i] + 0.5 * x[right * cx + i]) * a[i * cy + o];
                    }
                    y[p * cy + o] = v + 0.8 * noise[p * cy + o];
                }
            }
        }
    }
    (x, y)
}

/// Every circular shift of every base image (the same shift applied to x and y).
fn all_shifts(data: &[f64], n: usize, h: usize, w: usize, c: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(data.len() * h * w);
    for img in 0..n {
        for dr in 0..h {
            for dq in 0..w {
                for r in 0..h {
                    for q in 0..w {
                        let src = img * h * w + ((r + dr) % h) * w + (q + dq) % w;
                        out.extend_from_slice(&data[src * c..(src + 1) * c]);
                    }
                }
            }
        }
    }
    out
}

fn dense_cca(x: &[f64], y: &[f64], n: usize, dx: usize, dy: usize) -> Vec<f64> {
    dense_cca_mode(x, y, n, dx, dy, Mode::Default)
}

fn dense_cca_mode(x: &[f64], y: &[f64], n: usize, dx: usize, dy: usize, mode: Mode) -> Vec<f64> {
    let mut joint = JointMoments::new(dx, dy);
    joint
        .push(
            RowBlock::f64(x, n, dx).unwrap(),
            RowBlock::f64(y, n, dy).unwrap(),
        )
        .unwrap();
    compare_moments(
        &joint,
        &CompareOptions::default()
            .with_metric(Metric::Cca)
            .with_mode(mode),
    )
    .unwrap()
    .coefficients
}

fn nhwc(x: &[f64], shape: [usize; 4]) -> ConvInput<'_> {
    ConvInput::f64(x, &shape, Layout::Nhwc).unwrap()
}

#[test]
fn dft_equals_flattened_cca_on_shift_closed_data() {
    // non-square grid, odd and even sizes, both layers the same size
    for &(h, w) in &[(4, 3), (2, 4)] {
        let (cx, cy, base) = (3, 2, 14);
        let mut rng = SplitMix(7 + h as u64);
        let (bx, by) = base_pair(&mut rng, base, h, w, cx, cy);
        let x = all_shifts(&bx, base, h, w, cx);
        let y = all_shifts(&by, base, h, w, cy);
        let n = base * h * w;
        let conv = compare_conv(
            nhwc(&x, [n, h, w, cx]),
            nhwc(&y, [n, h, w, cy]),
            &ConvOptions::default(),
        )
        .unwrap();
        // flattened: each image is one datapoint of h*w*c neurons
        let flat = dense_cca(&x, &y, n, h * w * cx, h * w * cy);
        assert_eq!(conv.coefficients.len(), flat.len());
        let err = conv
            .coefficients
            .iter()
            .zip(&flat)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!("theorem {h}x{w}: max |dft - flattened| = {err:e}");
        assert!(err < 1e-9, "{h}x{w}: {err:e}");
        // not a trivial case: coefficients spread out
        assert!(flat[0] > 0.5 && *flat.last().unwrap() < 0.5, "{flat:?}");
        // the equality needs shift closure: drop one shift of every base image and it breaks
        let keep: Vec<usize> = (0..n).filter(|i| i % (h * w) != 1).collect();
        let pick = |d: &[f64], c: usize| -> Vec<f64> {
            keep.iter()
                .flat_map(|&i| d[i * h * w * c..(i + 1) * h * w * c].iter().copied())
                .collect()
        };
        let (px, py, m) = (pick(&x, cx), pick(&y, cy), keep.len());
        let conv = compare_conv(
            nhwc(&px, [m, h, w, cx]),
            nhwc(&py, [m, h, w, cy]),
            &ConvOptions::default(),
        )
        .unwrap();
        let flat = dense_cca(&px, &py, m, h * w * cx, h * w * cy);
        let err = conv
            .coefficients
            .iter()
            .zip(&flat)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err > 1e-4, "{h}x{w}: not shift-closed yet equal ({err:e})");
    }
}

#[test]
fn conjugate_frequencies_have_identical_coefficients() {
    let (n, h, w, cx, cy) = (120, 5, 6, 4, 3);
    let mut rng = SplitMix(11);
    let (x, y) = base_pair(&mut rng, n, h, w, cx, cy);
    let conv = compare_conv(
        nhwc(&x, [n, h, w, cx]),
        nhwc(&y, [n, h, w, cy]),
        &ConvOptions::default(),
    )
    .unwrap();
    // compute every location directly (no symmetry shortcut) from a full-grid accumulator
    // built by hand: each location's coefficients must equal its conjugate's
    let plan = ConvPlan::new(conv.x_shape, conv.y_shape, &ConvOptions::default()).unwrap();
    let mut paired = 0;
    for f in &conv.frequencies {
        let (ci, cj) = ((h - f.i) % h, (w - f.j) % w);
        let g = &conv.frequencies[ci * w + cj];
        assert_eq!(f.coefficients, g.coefficients);
        if (ci, cj) != (f.i, f.j) {
            paired += 1;
        }
    }
    assert_eq!(paired, h * w - 2, "5x6: (0,0) and (0,3) are self-conjugate");
    assert_eq!(plan.representatives().len(), (h * w - 2) / 2 + 2);

    // an independent check of symmetry: negate the grid by flipping the images
    // (x(-r, -q)); the spectrum becomes its conjugate, so every location moves to its
    // conjugate position and the per-location coefficients must agree across the flip.
    let flip = |d: &[f64], c: usize| -> Vec<f64> {
        let mut out = vec![0.0; d.len()];
        for img in 0..n {
            for r in 0..h {
                for q in 0..w {
                    let dst = img * h * w + r * w + q;
                    let src = img * h * w + ((h - r) % h) * w + (w - q) % w;
                    out[dst * c..(dst + 1) * c].copy_from_slice(&d[src * c..(src + 1) * c]);
                }
            }
        }
        out
    };
    let (fx, fy) = (flip(&x, cx), flip(&y, cy));
    let flipped = compare_conv(
        nhwc(&fx, [n, h, w, cx]),
        nhwc(&fy, [n, h, w, cy]),
        &ConvOptions::default(),
    )
    .unwrap();
    for f in &conv.frequencies {
        let g = &flipped.frequencies[((h - f.i) % h) * w + (w - f.j) % w];
        for (a, b) in f.coefficients.iter().zip(&g.coefficients) {
            assert!((a - b).abs() < 1e-10, "({}, {}): {a} vs {b}", f.i, f.j);
        }
    }
}

#[test]
fn pool_and_fold_match_the_dense_api() {
    let (n, h, w, cx, cy) = (150, 4, 5, 4, 3);
    let mut rng = SplitMix(21);
    let (mut x, y) = base_pair(&mut rng, n, h, w, cx, cy);
    // a large channel mean (ReLU-like offset) must not hurt
    for v in x.iter_mut() {
        *v += 3.0;
    }
    for (method, mode) in [
        (ConvMethod::Pool, Mode::Default),
        (ConvMethod::Fold, Mode::Default),
        (ConvMethod::Pool, Mode::GoogleCompat),
        (ConvMethod::Fold, Mode::GoogleCompat),
    ] {
        let conv = compare_conv(
            nhwc(&x, [n, h, w, cx]),
            nhwc(&y, [n, h, w, cy]),
            &ConvOptions::default().with_method(method).with_mode(mode),
        )
        .unwrap();
        let dense = match method {
            ConvMethod::Pool => {
                let avg = |d: &[f64], c: usize| -> Vec<f64> {
                    let mut out = vec![0.0; n * c];
                    for img in 0..n {
                        for p in 0..h * w {
                            for ch in 0..c {
                                out[img * c + ch] += d[(img * h * w + p) * c + ch] / (h * w) as f64;
                            }
                        }
                    }
                    out
                };
                dense_cca_mode(&avg(&x, cx), &avg(&y, cy), n, cx, cy, mode)
            }
            _ => dense_cca_mode(&x, &y, n * h * w, cx, cy, mode),
        };
        assert_eq!(conv.coefficients.len(), dense.len());
        for (a, b) in conv.coefficients.iter().zip(&dense) {
            assert!((a - b).abs() < 1e-10, "{method}: {a} vs {b}");
        }
        assert!(conv.frequencies.is_empty());
        assert!(conv.definition.starts_with(method.name()));
    }
}

#[test]
fn pool_is_the_zero_frequency() {
    let (n, h, w, cx, cy) = (90, 3, 3, 3, 4);
    let mut rng = SplitMix(5);
    let (x, y) = base_pair(&mut rng, n, h, w, cx, cy);
    let opts = ConvOptions::default();
    let dft = compare_conv(nhwc(&x, [n, h, w, cx]), nhwc(&y, [n, h, w, cy]), &opts).unwrap();
    let pool = compare_conv(
        nhwc(&x, [n, h, w, cx]),
        nhwc(&y, [n, h, w, cy]),
        &opts.with_method(ConvMethod::Pool),
    )
    .unwrap();
    for (a, b) in pool
        .coefficients
        .iter()
        .zip(&dft.frequencies[0].coefficients)
    {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn nchw_f32_and_streaming_agree() {
    let (n, h, w, cx, cy) = (100, 4, 4, 3, 5);
    let mut rng = SplitMix(3);
    let (x, y) = base_pair(&mut rng, n, h, w, cx, cy);
    let opts = ConvOptions::default();
    let whole = compare_conv(nhwc(&x, [n, h, w, cx]), nhwc(&y, [n, h, w, cy]), &opts).unwrap();

    // NCHW copy of x
    let mut xc = vec![0.0; x.len()];
    for img in 0..n {
        for p in 0..h * w {
            for ch in 0..cx {
                xc[img * h * w * cx + ch * h * w + p] = x[(img * h * w + p) * cx + ch];
            }
        }
    }
    let mixed = compare_conv(
        ConvInput::f64(&xc, &[n, cx, h, w], Layout::Nchw).unwrap(),
        nhwc(&y, [n, h, w, cy]),
        &opts,
    )
    .unwrap();
    let close = |a: &[f64], b: &[f64], tol: f64| {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).all(|(p, q)| (p - q).abs() < tol)
    };
    assert!(close(&whole.mean_grid, &mixed.mean_grid, 1e-12));

    // f32 input: same to f32 rounding
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let single = compare_conv(
        ConvInput::f32(&x32, &[n, h, w, cx], Layout::Nhwc).unwrap(),
        nhwc(&y, [n, h, w, cy]),
        &opts,
    )
    .unwrap();
    assert!(close(&whole.mean_grid, &single.mean_grid, 1e-5));

    // streaming in uneven blocks with a small chunk, merged in two different trees
    let plan = ConvPlan::new(whole.x_shape, whole.y_shape, &opts).unwrap();
    let cuts = [0, 7, 30, 31, 64, 100];
    let parts: Vec<ConvMomentAccumulator> = cuts
        .windows(2)
        .map(|c| {
            let mut acc = ConvMomentAccumulator::new(&plan).with_chunk(5);
            acc.push(
                nhwc(&x, [n, h, w, cx]).images_range(c[0], c[1]),
                nhwc(&y, [n, h, w, cy]).images_range(c[0], c[1]),
            )
            .unwrap();
            acc
        })
        .collect();
    let mut left = parts[0].clone();
    for p in &parts[1..] {
        left.merge(p).unwrap();
    }
    let mut right = parts[4].clone();
    for p in parts[..4].iter().rev() {
        right.merge(p).unwrap();
    }
    // and through serialised parts
    let right = ConvMomentAccumulator::from_parts(
        serde_json::from_str(&serde_json::to_string(&right.to_parts()).unwrap()).unwrap(),
    )
    .unwrap();
    for acc in [&left, &right] {
        assert_eq!(acc.n(), n as u64);
        let c = acc.compare(&opts).unwrap();
        assert!(close(&whole.coefficients, &c.coefficients, 1e-10));
    }
    for &l in plan.representatives() {
        let (a, b) = (left.comoment(l).unwrap(), right.comoment(l).unwrap());
        let scale = a.norm_max();
        assert!((a - b).norm_max() <= 1e-12 * scale, "location {l}");
    }
}

#[test]
fn frequency_blocks_assemble_to_the_whole() {
    let (n, h, w, cx, cy) = (80, 6, 6, 3, 3);
    let mut rng = SplitMix(9);
    let (x, y) = base_pair(&mut rng, n, h, w, cx, cy);
    let opts = ConvOptions::default().with_keep(KeepRule::Dims(2));
    let whole = compare_conv(nhwc(&x, [n, h, w, cx]), nhwc(&y, [n, h, w, cy]), &opts).unwrap();
    let plan = ConvPlan::new(whole.x_shape, whole.y_shape, &opts).unwrap();
    let mut results = Vec::new();
    for block in plan.frequency_blocks(3).iter().rev() {
        let mut acc = ConvMomentAccumulator::for_locations(&plan, block).unwrap();
        acc.push(nhwc(&x, [n, h, w, cx]), nhwc(&y, [n, h, w, cy]))
            .unwrap();
        results.extend(acc.frequency_results(block, &opts).unwrap());
    }
    let assembled =
        svcca_core::conv::ConvComparison::from_frequency_results(&plan, n as u64, results, &opts)
            .unwrap();
    assert_eq!(assembled, whole);
    // SVCCA per frequency keeps 2 dims per side
    assert!(whole.frequencies.iter().all(|f| f.coefficients.len() == 2));
}

#[test]
fn bad_input_is_a_typed_error() {
    let x = vec![0.5; 2 * 3 * 3 * 2];
    assert!(matches!(
        ConvInput::f64(&x, &[2, 9, 2], Layout::Nhwc),
        Err(ConvError::NotFourD { .. })
    ));
    assert!(matches!(
        ConvInput::f64(&x, &[3, 3, 3, 2], Layout::Nhwc),
        Err(ConvError::BufferLength { .. })
    ));
    let mut rng = SplitMix(1);
    let (a, b) = base_pair(&mut rng, 40, 4, 4, 3, 2);
    let opts = ConvOptions::default();
    // mismatched image counts
    assert!(matches!(
        compare_conv(
            nhwc(&a, [40, 4, 4, 3]),
            nhwc(&b[..39 * 32], [39, 4, 4, 2]),
            &opts
        ),
        Err(ConvError::ImageCountMismatch { x: 40, y: 39 })
    ));
    // channels >= images at a frequency: refused unless allowed
    let few = 5;
    let r = compare_conv(
        nhwc(&a[..few * 48], [few, 4, 4, 3]),
        nhwc(&b[..few * 32], [few, 4, 4, 2]),
        &opts,
    );
    assert!(
        matches!(r, Err(ConvError::TrivialCca { datapoints: 5, .. })),
        "{r:?}"
    );
    let r = compare_conv(
        nhwc(&a[..few * 48], [few, 4, 4, 3]),
        nhwc(&b[..few * 32], [few, 4, 4, 2]),
        &opts.with_allow_trivial(true),
    )
    .unwrap();
    assert!(r.coefficients.iter().all(|c| c.is_finite()));
    // fold has images x positions datapoints: fine with the same 5 images
    assert!(
        compare_conv(
            nhwc(&a[..few * 48], [few, 4, 4, 3]),
            nhwc(&b[..few * 32], [few, 4, 4, 2]),
            &opts.with_method(ConvMethod::Fold),
        )
        .is_ok()
    );
    // non-square resize in google-compat mode
    let c = vec![0.1; 40 * 2 * 3 * 2];
    let r = compare_conv(
        nhwc(&a, [40, 4, 4, 3]),
        nhwc(&c, [40, 2, 3, 2]),
        &opts.with_mode(Mode::GoogleCompat),
    );
    assert!(matches!(r, Err(ConvError::NonSquareResize { .. })), "{r:?}");
    // non-finite
    let mut bad = a.clone();
    bad[48 * 7 + 5] = f64::NAN;
    let r = compare_conv(nhwc(&bad, [40, 4, 4, 3]), nhwc(&b, [40, 4, 4, 2]), &opts);
    assert!(
        matches!(r, Err(ConvError::NonFinite { image: 7, .. })),
        "{r:?}"
    );
    // a constant layer: no NaN, a warning per frequency
    let flat = vec![2.0; 40 * 4 * 4 * 2];
    let r = compare_conv(nhwc(&a, [40, 4, 4, 3]), nhwc(&flat, [40, 4, 4, 2]), &opts).unwrap();
    assert!(r.mean == 0.0 && r.coefficients.is_empty() && !r.warnings.is_empty());
    // bad options
    assert!(matches!(
        compare_conv(
            nhwc(&a, [40, 4, 4, 3]),
            nhwc(&b, [40, 4, 4, 2]),
            &opts.with_threshold(0.0)
        ),
        Err(ConvError::InvalidOption { .. })
    ));
}

#[test]
fn default_mode_crops_non_square_layers() {
    // y is x average-pooled 2x2 along rows only (h halves, w stays): every frequency of the
    // cropped grid still carries shared signal.
    let (n, h, w, c) = (120, 6, 4, 3);
    let mut rng = SplitMix(17);
    let x = rng.vec(n * h * w * c);
    let mut y = vec![0.0; n * (h / 2) * w * c];
    for img in 0..n {
        for r in 0..h / 2 {
            for q in 0..w {
                for ch in 0..c {
                    let a = x[((img * h + 2 * r) * w + q) * c + ch];
                    let b = x[((img * h + 2 * r + 1) * w + q) * c + ch];
                    y[((img * (h / 2) + r) * w + q) * c + ch] = 0.5 * (a + b);
                }
            }
        }
    }
    let r = compare_conv(
        nhwc(&x, [n, h, w, c]),
        nhwc(&y, [n, h / 2, w, c]),
        &ConvOptions::default(),
    )
    .unwrap();
    assert!(r.cropped);
    assert_eq!(r.grid, [3, 4]);
    assert_eq!(r.mean_grid.len(), 12);
    // pooling along rows is exactly a per-frequency linear map at low row frequencies:
    // the zero row frequency is reproduced exactly
    for j in 0..4 {
        assert!(r.frequencies[j].mean > 0.999999, "{:?}", r.frequencies[j]);
    }
    assert!(r.coefficients.iter().all(|&c| (0.0..=1.0).contains(&c)));
}

#[test]
fn sample_size_is_judged_per_frequency_and_per_cca() {
    // 30 images, 7 and 3 channels: every frequency's CCA has 30 < 5 × 7 datapoints; fold's
    // one CCA has 30 × 9 and is fine; pool's has 30 and is not.
    let (n, h, w, cx, cy) = (30, 3, 3, 7, 3);
    let mut rng = SplitMix(8);
    let (x, y) = base_pair(&mut rng, n, h, w, cx, cy);
    let run = |method| {
        compare_conv(
            nhwc(&x, [n, h, w, cx]),
            nhwc(&y, [n, h, w, cy]),
            &ConvOptions::default().with_method(method),
        )
        .unwrap()
    };
    let few = |c: &svcca_core::conv::ConvComparison| {
        c.warnings
            .iter()
            .filter(|w| w.contains("(< 5x)"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let dft = run(ConvMethod::Dft);
    assert_eq!(
        few(&dft),
        [
            "only 30 datapoints per CCA for up to 7 dimensions at 9 of 9 frequencies (< 5x): \
          canonical correlations are biased upwards; the SVCCA authors advise 5-10x more \
          datapoints than neurons"
        ]
    );
    assert!(few(&run(ConvMethod::Fold)).is_empty(), "270 datapoints");
    assert_eq!(few(&run(ConvMethod::Pool)).len(), 1);
    // The summed dims are not what is judged: with 200 images every frequency has more than
    // 28 per dimension and there is no warning, though 5 × 9 × 7 > 200.
    let (n, mut rng) = (200, SplitMix(9));
    let (x, y) = base_pair(&mut rng, n, h, w, cx, cy);
    let dft = compare_conv(
        nhwc(&x, [n, h, w, cx]),
        nhwc(&y, [n, h, w, cy]),
        &ConvOptions::default(),
    )
    .unwrap();
    assert!(
        dft.x_dims * 5 > n && few(&dft).is_empty(),
        "{:?}",
        dft.warnings
    );
}
