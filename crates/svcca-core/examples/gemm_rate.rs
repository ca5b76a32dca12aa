//! The machine's f64 (and f32) product rates on one core, for the flop floor in
//! `benchmarks/README.md`: faer's triangular product `SᵀS` (what the moments run) and a full
//! product, on a 2,048 × 512 block. Usage: `cargo run --release --example gemm_rate [rows] [cols]`.
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, Par};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let n = args.first().copied().unwrap_or(2048);
    let d = args.get(1).copied().unwrap_or(512);
    let a64 = Mat::<f64>::from_fn(n, d, |i, j| ((i * 7 + j * 13) % 101) as f64 / 101.0);
    let a32 = Mat::<f32>::from_fn(n, d, |i, j| ((i * 7 + j * 13) % 101) as f32 / 101.0);
    let mut c64 = Mat::<f64>::zeros(d, d);
    let mut c32 = Mat::<f32>::zeros(d, d);
    const REPS: usize = 10;
    // Flops as counted in the README: the lower triangle with its diagonal, n·d(d+1).
    let tri = (REPS * n * d * (d + 1)) as f64;
    let full = (REPS * 2 * n * d * d) as f64;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..REPS {
            triangular::matmul(
                c64.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Replace,
                a64.transpose(),
                BlockStructure::Rectangular,
                a64.as_ref(),
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
        }
        let t64 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..REPS {
            triangular::matmul(
                c32.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Replace,
                a32.transpose(),
                BlockStructure::Rectangular,
                a32.as_ref(),
                BlockStructure::Rectangular,
                1.0f32,
                Par::Seq,
            );
        }
        let t32 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..REPS {
            matmul(
                c64.as_mut(),
                Accum::Replace,
                a64.transpose(),
                a64.as_ref(),
                1.0,
                Par::Seq,
            );
        }
        let g64 = t.elapsed().as_secs_f64();
        println!(
            "{n} x {d}, one core: triangular f64 {:.1} GFLOP/s, f32 {:.1} GFLOP/s; full f64 {:.1} GFLOP/s",
            tri / t64 / 1e9,
            tri / t32 / 1e9,
            full / g64 / 1e9
        );
    }
}
