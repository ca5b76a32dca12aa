//! google/svcca's `fourier_ccas` reference cases, reproduced in google-compatible mode.

mod conv_support;

use conv_support::{fixture, read_f64};
use serde_json::Value;
use svcca_core::conv::{ConvInput, ConvMethod, ConvOptions, Layout, Mode, compare_conv};

const TOL: f64 = 1e-5;

fn run_case(case: &str) -> f64 {
    let dir = fixture(&format!("golden/{case}"));
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let r = &expected["result"];
    let (sx, x) = read_f64(&dir.join("acts1.npy"));
    let (sy, y) = read_f64(&dir.join("acts2.npy"));
    let opts = ConvOptions::default()
        .with_method(ConvMethod::Dft)
        .with_mode(Mode::GoogleCompat);
    let got = compare_conv(
        ConvInput::f64(&x, &sx, Layout::Nhwc).unwrap(),
        ConvInput::f64(&y, &sy, Layout::Nhwc).unwrap(),
        &opts,
    )
    .unwrap();
    assert_eq!(
        got.cropped,
        r["resized"].as_bool().unwrap(),
        "{case}: resized"
    );
    let locs = r["locations"].as_array().unwrap();
    assert_eq!(got.frequencies.len(), locs.len(), "{case}: n_locations");
    assert_eq!(
        got.frequencies.len() as u64,
        r["n_locations"].as_u64().unwrap()
    );
    let mut max_err = 0.0f64;
    let mut check = |what: &str, a: f64, b: f64| {
        let e = (a - b).abs();
        assert!(
            e <= TOL,
            "{case}: {what}: got {a}, google {b} (|diff| {e:e})"
        );
        max_err = max_err.max(e);
    };
    for (f, loc) in got.frequencies.iter().zip(locs) {
        let l = loc["location"].as_array().unwrap();
        assert_eq!(
            (f.i as u64, f.j as u64),
            (l[0].as_u64().unwrap(), l[1].as_u64().unwrap()),
            "{case}: location order"
        );
        let want: Vec<f64> = loc["cca_coef1"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(
            f.coefficients.len(),
            want.len(),
            "{case}: ({}, {}) count",
            f.i,
            f.j
        );
        for (k, (a, b)) in f.coefficients.iter().zip(&want).enumerate() {
            check(&format!("({}, {}) coef {k}", f.i, f.j), *a, *b);
        }
        check(
            &format!("({}, {}) truncated mean", f.i, f.j),
            f.google_mean,
            loc["mean"][0].as_f64().unwrap(),
        );
        check(
            &format!("({}, {}) sum", f.i, f.j),
            f.coefficients.iter().sum(),
            loc["sum"][0].as_f64().unwrap(),
        );
    }
    check(
        "mean_all_coefs",
        got.mean,
        r["mean_all_coefs"].as_f64().unwrap(),
    );
    check(
        "mean_of_location_means",
        got.mean_of_frequency_means,
        r["mean_of_location_means"].as_f64().unwrap(),
    );
    check(
        "google mean of location means",
        got.google_mean,
        r["mean_of_location_means"].as_f64().unwrap(),
    );
    // sums over up to 64 locations x 12 coefficients: scale the tolerance with the count
    let n_coefs = got.coefficients.len() as f64;
    let se = (got.sum - r["sum_all_coefs"].as_f64().unwrap()).abs();
    assert!(se <= TOL * n_coefs, "{case}: sum_all_coefs off by {se:e}");
    assert_eq!(got.mean_grid.len(), got.grid[0] * got.grid[1]);
    eprintln!("{case}: max |error| {max_err:e}");
    max_err
}

#[test]
fn dft_identical_matches_google() {
    run_case("dft_identical");
}

#[test]
fn dft_same_size_matches_google() {
    run_case("dft_same_size");
}

#[test]
fn dft_resize_matches_google() {
    run_case("dft_resize");
}
