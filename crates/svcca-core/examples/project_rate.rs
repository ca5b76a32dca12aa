//! The projection's rate: `Z = (X − 1μᵀ) W` of float32 rows through a whitening that keeps `k`
//! directions. Usage: `project_rate ROWS NEURONS K`.
use std::time::Instant;
use svcca_core::{KeepRule, MomentAccumulator, RowBlock, WhitenOptions, Whitening};

mod common;

fn main() {
    let args = common::number_args();
    let (n, d, k) = (args[0], args[1], args[2]);
    let data: Vec<f32> = common::uniform(n * d).map(|v| v as f32).collect();
    let mut acc = MomentAccumulator::new(d);
    acc.push(RowBlock::f32(&data, n, d).unwrap()).unwrap();
    let opts = WhitenOptions::default().with_keep(KeepRule::Dims(k));
    let w = Whitening::from_moments(&acc, &opts).unwrap();
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let z = w.whiten_rows(RowBlock::f32(&data, n, d).unwrap()).unwrap();
            std::hint::black_box(z);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "n={n} d={d} k={}: best {:.4} s, {:.1} GFLOP/s (2ndk); median {:.4} s",
        w.dims(),
        times[0],
        (2 * n * d * w.dims()) as f64 / times[0] / 1e9,
        times[3]
    );
}
