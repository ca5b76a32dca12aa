//! Real conv activations (digits CNN, two seeds, last step): all three methods behave.

mod conv_support;

use conv_support::{fixture, read_f32};
use svcca_core::conv::{
    ConvComparison, ConvInput, ConvMethod, ConvOptions, KeepRule, Layout, compare_conv,
};

struct Layer {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn layer(seed: u32, name: &str) -> Layer {
    let (shape, data) = read_f32(&fixture(&format!(
        "digits/conv/seed{seed}/step1500/{name}.npy"
    )));
    assert_eq!(shape.len(), 4);
    Layer { shape, data }
}

fn run(a: &Layer, b: &Layer, opts: &ConvOptions) -> ConvComparison {
    compare_conv(
        ConvInput::f32(&a.data, &a.shape, Layout::Nhwc).unwrap(),
        ConvInput::f32(&b.data, &b.shape, Layout::Nhwc).unwrap(),
        opts,
    )
    .unwrap()
}

fn sane(c: &ConvComparison, what: &str) {
    assert!(!c.coefficients.is_empty(), "{what}: no coefficients");
    for &v in &c.coefficients {
        assert!(v.is_finite() && (0.0..=1.0).contains(&v), "{what}: {v}");
    }
    assert!(
        c.coefficients.windows(2).all(|w| w[0] >= w[1]),
        "{what}: not descending"
    );
    for f in &c.frequencies {
        assert!(f.coefficients.windows(2).all(|w| w[0] >= w[1]));
        assert!(f.mean.is_finite() && (0.0..=1.0).contains(&f.mean));
    }
    assert!(c.mean.is_finite() && c.google_mean.is_finite());
    assert_eq!(c.mean_grid.len(), c.grid[0] * c.grid[1]);
}

/// The same layer with its images in another order: the images no longer correspond.
fn shuffled(l: &Layer) -> Layer {
    let n = l.shape[0];
    let per = l.data.len() / n;
    let mut data = Vec::with_capacity(l.data.len());
    for i in 0..n {
        let j = (i * 389 + 101) % n; // 389 is coprime to 597
        data.extend_from_slice(&l.data[j * per..(j + 1) * per]);
    }
    Layer {
        shape: l.shape.clone(),
        data,
    }
}

#[test]
fn digits_conv_layers_all_methods() {
    let s0c1 = layer(0, "conv1");
    let s0c2 = layer(0, "conv2");
    let s1c1 = layer(1, "conv1");
    let s1c2 = layer(1, "conv2");
    let shuffled_s1c1 = shuffled(&s1c1);
    for method in [ConvMethod::Dft, ConvMethod::Fold, ConvMethod::Pool] {
        let opts = ConvOptions::default().with_method(method);
        let own = run(&s0c1, &s0c1, &opts);
        sane(&own, "self");
        assert!(
            own.mean > 1.0 - 1e-8,
            "{method}: self-similarity {}",
            own.mean
        );

        let c1 = run(&s0c1, &s1c1, &opts);
        let c2 = run(&s0c2, &s1c2, &opts);
        let across = run(&s0c1, &s0c2, &opts); // 16 vs 32 channels
        let noise = run(&s0c1, &shuffled_s1c1, &opts);
        for (c, what) in [
            (&c1, "conv1 s0/s1"),
            (&c2, "conv2 s0/s1"),
            (&across, "conv1/conv2"),
            (&noise, "shuffled"),
        ] {
            sane(c, what);
            assert!(c.mean < 1.0 - 1e-3, "{method} {what}: {}", c.mean);
        }
        assert!(
            across
                .frequencies
                .iter()
                .all(|f| f.coefficients.len() <= 16)
        );
        // aligned images are far more similar than misaligned ones
        for (c, what) in [(&c1, "conv1"), (&c2, "conv2"), (&across, "conv1/conv2")] {
            assert!(
                c.mean > noise.mean + 0.1,
                "{method} {what}: aligned {} vs shuffled {}",
                c.mean,
                noise.mean
            );
        }
        eprintln!(
            "{method}: conv1 s0/s1 {:.4}, conv2 s0/s1 {:.4}, conv1/conv2 {:.4}, shuffled {:.4}",
            c1.mean, c2.mean, across.mean, noise.mean
        );
    }
}

#[test]
fn digits_svcca_per_frequency() {
    let a = layer(0, "conv2");
    let b = layer(1, "conv2");
    let plain = run(&a, &b, &ConvOptions::default());
    let svcca = run(
        &a,
        &b,
        &ConvOptions::default().with_keep(KeepRule::VarianceFraction(0.99)),
    );
    sane(&svcca, "svcca");
    // fewer directions kept, at every frequency
    for (p, s) in plain.frequencies.iter().zip(&svcca.frequencies) {
        assert!(s.x_dims <= p.x_dims && s.y_dims <= p.y_dims);
    }
    assert!(svcca.x_dims < plain.x_dims);
    // SVCCA drops low-variance noise directions: the mean correlation goes up
    assert!(svcca.mean > plain.mean, "{} vs {}", svcca.mean, plain.mean);
}
