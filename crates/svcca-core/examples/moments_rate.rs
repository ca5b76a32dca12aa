//! The moments' accumulation rate on one block of float32 rows (widening, centring, column sums
//! and the triangular product). Usage: `moments_rate ROWS NEURONS THREADS [1 for mixed]`.
use std::time::Instant;
use svcca_core::{MomentAccumulator, RowBlock};

mod common;

fn main() {
    let args = common::number_args();
    let (n, d, threads) = (args[0], args[1], args[2]);
    // A fourth argument of 1 accumulates in mixed precision.
    let precision = if args.get(3) == Some(&1) {
        svcca_core::Precision::Mixed
    } else {
        svcca_core::Precision::F64
    };
    svcca_core::set_parallelism(threads);
    let data: Vec<f32> = common::uniform(n * d).map(|v| v as f32).collect();
    // The fastest of seven pushes, and their median: other work on a shared machine only slows.
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let mut acc = MomentAccumulator::with_precision(d, precision);
            acc.push(RowBlock::f32(&data, n, d).unwrap()).unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[3]);
    println!(
        "n={n} d={d} threads={threads} {precision:?}: best {best:.3} s, {:.1} GFLOP/s (n*d^2); median {median:.3} s",
        (n * d * d) as f64 / best / 1e9
    );
}
