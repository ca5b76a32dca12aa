//! Matrix products whose every element is computed the same way whatever the thread count.
//!
//! faer's parallel products are not: for degenerate shapes (one output column over many rows,
//! as when SVCCA keeps a single direction) it splits the inner dimension across threads and
//! adds the partial sums, so `--workers 1` and `--workers 2` of one sweep differed in the last
//! bits. Here the output is cut into tiles whose boundaries depend on the shapes alone; each tile
//! is one sequential faer product, and threads only decide which tile runs where. Each tile packs
//! its operands once, so the extra packing is about `1 / TILE` of the product's work.

use faer::linalg::matmul::matmul as faer_matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};
use faer_traits::{ComplexField, Conjugate};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The element types the products run in: f64, and f32 for mixed precision's per-chunk products.
pub trait Element: ComplexField + Conjugate<Canonical = Self> + Copy + Send + Sync {}
impl Element for f64 {}
impl Element for f32 {}

/// Rows and columns of an output tile.
const TILE: usize = 192;

/// A tile of the output: first row, first column, rows, columns.
type Tile = (usize, usize, usize, usize);

/// The output's base pointer and strides, shared by the tasks that each write one tile.
struct Output<T> {
    ptr: *mut T,
    row_stride: isize,
    col_stride: isize,
}

// SAFETY: every task writes a different tile of the output (see `run_tiles`), and the output
// outlives the tasks, which all end before `run_tiles` returns.
unsafe impl<T> Send for Output<T> {}
unsafe impl<T> Sync for Output<T> {}

impl<T> Clone for Output<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Output<T> {}

impl<T> Output<T> {
    fn of(dst: &mut MatMut<'_, T>) -> Output<T> {
        Output {
            ptr: dst.as_ptr_mut(),
            row_stride: dst.row_stride(),
            col_stride: dst.col_stride(),
        }
    }

    /// SAFETY: the tile lies inside the output and no other live view writes to it.
    unsafe fn tile(&self, (i, j, h, w): Tile) -> MatMut<'_, T> {
        unsafe {
            let ptr = self
                .ptr
                .offset(i as isize * self.row_stride + j as isize * self.col_stride);
            MatMut::from_raw_parts_mut(ptr, h, w, self.row_stride, self.col_stride)
        }
    }
}

fn spans(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(TILE).map(move |s| (s, TILE.min(n - s)))
}

/// Runs `f` on every tile, on at most `threads` threads (0: all of rayon's pool).
fn run_tiles(tiles: &[Tile], threads: usize, f: impl Fn(Tile) + Sync + Send) {
    let threads = if threads == 0 {
        rayon::current_num_threads()
    } else {
        threads
    };
    if threads <= 1 || tiles.len() <= 1 {
        tiles.iter().copied().for_each(f);
    } else {
        // `threads` runners take the next tile from a shared counter until none is left, so
        // at most `threads` tiles run at once and uneven tiles (the triangular diagonal ones,
        // the narrow last span) balance. Splitting with rayon's `with_min_len(len / threads)`
        // instead never split an odd count (253 tiles at 4,096 wide): one thread did all.
        let next = AtomicUsize::new(0);
        let runner = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match tiles.get(i) {
                    Some(&tile) => f(tile),
                    None => break,
                }
            }
        };
        rayon::scope(|s| {
            for _ in 1..threads.min(tiles.len()) {
                s.spawn(|_| runner());
            }
            runner();
        });
    }
}

/// `dst = beta·dst + alpha·lhs·rhs`, on at most `threads` threads (0: all of rayon's pool).
///
/// Panics if the shapes do not agree, as faer's product does.
pub fn matmul(
    mut dst: MatMut<'_, f64>,
    beta: Accum,
    lhs: MatRef<'_, f64>,
    rhs: MatRef<'_, f64>,
    alpha: f64,
    threads: usize,
) {
    assert!(
        dst.nrows() == lhs.nrows() && dst.ncols() == rhs.ncols() && lhs.ncols() == rhs.nrows(),
        "product shapes: dst {}x{}, lhs {}x{}, rhs {}x{}",
        dst.nrows(),
        dst.ncols(),
        lhs.nrows(),
        lhs.ncols(),
        rhs.nrows(),
        rhs.ncols()
    );
    let tiles: Vec<Tile> = spans(dst.ncols())
        .flat_map(|(j, w)| spans(dst.nrows()).map(move |(i, h)| (i, j, h, w)))
        .collect();
    let out = Output::of(&mut dst);
    run_tiles(&tiles, threads, |(i, j, h, w)| {
        // SAFETY: the tiles partition `dst`, which `out` borrows for this call.
        let tile = unsafe { out.tile((i, j, h, w)) };
        faer_matmul(
            tile,
            beta,
            lhs.subrows(i, h),
            rhs.subcols(j, w),
            alpha,
            Par::Seq,
        );
    });
}

/// The lower triangle (diagonal included) of `dst = beta·dst + alpha·xᵀx`, on at most `threads`
/// threads (0: all of rayon's pool). The strict upper triangle of `dst` is not touched.
///
/// Panics unless `dst` is square with as many rows as `x` has columns.
pub fn gram_lower<T: Element>(
    mut dst: MatMut<'_, T>,
    beta: Accum,
    x: MatRef<'_, T>,
    alpha: T,
    threads: usize,
) {
    let d = x.ncols();
    assert!(
        dst.nrows() == d && dst.ncols() == d,
        "Gram shapes: dst {}x{}, x {}x{}",
        dst.nrows(),
        dst.ncols(),
        x.nrows(),
        d
    );
    let tiles: Vec<Tile> = spans(d)
        .flat_map(|(j, w)| {
            spans(d)
                .filter(move |&(i, _)| i >= j)
                .map(move |(i, h)| (i, j, h, w))
        })
        .collect();
    let out = Output::of(&mut dst);
    run_tiles(&tiles, threads, |(i, j, h, w)| {
        // SAFETY: the tiles partition the lower part of `dst`, which `out` borrows.
        let tile = unsafe { out.tile((i, j, h, w)) };
        let (xi, xj) = (x.subcols(i, h), x.subcols(j, w));
        if i == j {
            triangular::matmul(
                tile,
                BlockStructure::TriangularLower,
                beta,
                xi.transpose(),
                BlockStructure::Rectangular,
                xj,
                BlockStructure::Rectangular,
                alpha,
                Par::Seq,
            );
        } else {
            faer_matmul(tile, beta, xi.transpose(), xj, alpha, Par::Seq);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    fn data(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        Mat::from_fn(rows, cols, |_, _| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
    }

    fn bits(m: &Mat<f64>) -> Vec<u64> {
        (0..m.ncols())
            .flat_map(|j| (0..m.nrows()).map(move |i| (i, j)))
            .map(|(i, j)| m[(i, j)].to_bits())
            .collect()
    }

    #[test]
    fn products_agree_with_faer_and_do_not_depend_on_threads() {
        // Shapes around the tile size, and the degenerate ones that split the inner dimension.
        for &(m, k, n) in &[
            (1, 5000, 1),
            (3, 4000, 1),
            (1, 3000, 7),
            (200, 300, 1),
            (193, 50, 385),
            (400, 1000, 400),
        ] {
            let a = data(m, k, 1);
            let b = data(k, n, 2);
            let mut seq = Mat::zeros(m, n);
            matmul(seq.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, 1);
            let expected = &a * &b;
            let scale = k as f64;
            for j in 0..n {
                for i in 0..m {
                    assert!(
                        (seq[(i, j)] - expected[(i, j)]).abs() <= 1e-13 * scale,
                        "{m}x{k}x{n} at ({i},{j})"
                    );
                }
            }
            for threads in [0, 2, 3, 8] {
                let mut par = Mat::zeros(m, n);
                matmul(
                    par.as_mut(),
                    Accum::Replace,
                    a.as_ref(),
                    b.as_ref(),
                    1.0,
                    threads,
                );
                assert_eq!(bits(&seq), bits(&par), "{m}x{k}x{n} on {threads} threads");
            }
        }
    }

    #[test]
    fn gram_is_the_lower_triangle_of_the_product_on_any_thread_count() {
        for &(rows, d) in &[(5000, 1), (300, 2), (250, 193), (500, 450)] {
            let x = data(rows, d, 3);
            let mut seq = Mat::from_fn(d, d, |_, _| 7.0);
            gram_lower(seq.as_mut(), Accum::Add, x.as_ref(), 1.0, 1);
            let expected = x.transpose() * &x;
            for j in 0..d {
                for i in 0..d {
                    if i >= j {
                        let e = 7.0 + expected[(i, j)];
                        assert!((seq[(i, j)] - e).abs() <= 1e-12 * rows as f64, "({i},{j})");
                    } else {
                        assert_eq!(seq[(i, j)], 7.0, "upper ({i},{j}) was written");
                    }
                }
            }
            for threads in [0, 2, 5] {
                let mut par = Mat::from_fn(d, d, |_, _| 7.0);
                gram_lower(par.as_mut(), Accum::Add, x.as_ref(), 1.0, threads);
                assert_eq!(bits(&seq), bits(&par), "{rows}x{d} on {threads} threads");
            }
        }
    }
}
