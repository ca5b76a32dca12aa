//! Times `compare_conv` on two `[n, h, w, c]` f32 `.npy` files (the issue-3 benchmark shape):
//! `cargo run --release -p svcca-core --example conv_bench -- X.npy Y.npy [google]`.

#[path = "../tests/conv_support/mod.rs"]
mod conv_support;

use std::time::Instant;

use svcca_core::conv::{ConvInput, ConvMomentAccumulator, ConvOptions, ConvPlan, Layout, Mode};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (sx, x) = conv_support::read_f32(std::path::Path::new(&args[1]));
    let (sy, y) = conv_support::read_f32(std::path::Path::new(&args[2]));
    let mode = if args.get(3).map(String::as_str) == Some("google") {
        Mode::GoogleCompat
    } else {
        Mode::Default
    };
    if std::env::var("SEQ").is_ok() {
        svcca_core::set_parallelism(1);
    }
    let opts = ConvOptions::default().with_mode(mode);
    let t = Instant::now();
    let xi = ConvInput::f32(&x, &sx, Layout::Nhwc).unwrap();
    let yi = ConvInput::f32(&y, &sy, Layout::Nhwc).unwrap();
    let plan = ConvPlan::new(xi.spatial(), yi.spatial(), &opts).unwrap();
    let mut acc = ConvMomentAccumulator::new(&plan);
    acc.push(xi, yi).unwrap();
    let t_acc = t.elapsed().as_secs_f64();
    let r = acc.compare(&opts).unwrap();
    println!(
        "{mode}: mean {:.10} mean_of_means {:.10}; moments {:.3} s, CCAs {:.3} s",
        r.mean,
        r.mean_of_frequency_means,
        t_acc,
        t.elapsed().as_secs_f64() - t_acc
    );
}
