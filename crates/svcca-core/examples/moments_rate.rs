use std::time::Instant;
use svcca_core::{MomentAccumulator, RowBlock};
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (n, d, threads) = (args[0], args[1], args[2]);
    svcca_core::set_parallelism(threads);
    let mut s = 1u64;
    let data: Vec<f32> = (0..n * d)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / 16777216.0
        })
        .collect();
    for _ in 0..3 {
        let t = Instant::now();
        let mut acc = MomentAccumulator::new(d);
        acc.push(RowBlock::f32(&data, n, d).unwrap()).unwrap();
        let dt = t.elapsed().as_secs_f64();
        println!(
            "n={n} d={d} threads={threads}: {:.3} s, {:.1} GFLOP/s (n*d^2)",
            dt,
            (n * d * d) as f64 / dt / 1e9
        );
    }
}
