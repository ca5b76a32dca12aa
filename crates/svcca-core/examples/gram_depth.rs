//! How the layout of a chunk changes the rate of the moments' product (`products::gram_lower`):
//! row-major rows `d` apart (a power of two bytes when `d` is 512 or 4,096) against rows a padded
//! stride apart (`moments::padded_stride`), the widening copy included, and faer's own parallel
//! product for reference. Usage:
//! `cargo run --release -p svcca-core --example gram_depth -- D TOTAL_ROWS THREADS CHUNK_ROWS...`
//! (e.g. `512 40960 1 512` or `4096 8192 2 256`).
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};
use std::time::Instant;

mod common;

fn main() {
    let args = common::number_args();
    let (d, total, threads) = (args[0], args[1], args[2]);
    svcca_core::set_parallelism(threads);
    let data: Vec<f64> = common::uniform(total * d).collect();
    let modes = [
        "copy, stride d",
        "copy, padded stride",
        "faer parallel, stride d",
    ];
    for &rows in &args[3..] {
        for (mode, name) in modes.iter().enumerate() {
            let ld = if mode == 1 {
                svcca_core::moments::padded_stride(d, 8)
            } else {
                d
            };
            let mut scratch = vec![0.0f64; rows * ld];
            let mut c = Mat::<f64>::zeros(d, d);
            let t = Instant::now();
            let mut r0 = 0;
            while r0 < total {
                let nb = rows.min(total - r0);
                for i in 0..nb {
                    scratch[i * ld..i * ld + d]
                        .copy_from_slice(&data[(r0 + i) * d..(r0 + i + 1) * d]);
                }
                let x = MatRef::from_row_major_slice_with_stride(&scratch[..nb * ld], nb, d, ld);
                if mode == 2 {
                    let par = if threads == 1 {
                        Par::Seq
                    } else {
                        Par::rayon(threads)
                    };
                    triangular::matmul(
                        c.as_mut(),
                        BlockStructure::TriangularLower,
                        Accum::Add,
                        x.transpose(),
                        BlockStructure::Rectangular,
                        x,
                        BlockStructure::Rectangular,
                        1.0,
                        par,
                    );
                } else {
                    svcca_core::products::gram_lower(c.as_mut(), Accum::Add, x, 1.0, threads);
                }
                r0 += nb;
            }
            let dt = t.elapsed().as_secs_f64();
            println!(
                "d={d} rows={total} chunk={rows} threads={threads} {name}: {dt:.3} s, {:.1} GFLOP/s",
                (total * d * (d + 1)) as f64 / dt / 1e9
            );
        }
    }
}
