//! Cross products of representations stacked side by side, computed pair block by pair block.
//!
//! Pass-2 and raw tasks hold several representations' rows at once. One product of the whole
//! stack would round each pair's block according to what else the task holds (faer picks its
//! kernels and blocking from the whole shape), so a rerun that plans other tiles, or a resumed
//! job, could differ from a fresh run in the last bits. Each pair's block is therefore its own
//! product, with the member whose name sorts first on the left, and lands in the tile's matrix
//! transposed where needed (exact): a block has the same bits in every task it lands in.

use faer::{Accum, Mat, MatMut, MatRef};
use svcca_core::products;

/// One representation's columns in a stacked matrix.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// A name that identifies the representation's values in every job (a content or basis
    /// hash): it orders the two sides of each product.
    pub name: &'a str,
    /// First column in the stack.
    pub offset: usize,
    /// Number of columns.
    pub dims: usize,
}

/// Members laid out one after the other, in order.
pub fn stacked<'a>(names_and_dims: impl IntoIterator<Item = (&'a str, usize)>) -> Vec<Member<'a>> {
    let mut offset = 0;
    names_and_dims
        .into_iter()
        .map(|(name, dims)| {
            let m = Member { name, offset, dims };
            offset += dims;
            m
        })
        .collect()
}

/// Adds `Xᵀ Y` to `acc` (`x`'s stacked columns by `y`'s), or, with `y = None`, the Gram matrix
/// `Xᵀ X` (both triangles). `x` and `y` hold the same rows.
pub fn add_cross(
    acc: MatMut<'_, f64>,
    x: MatRef<'_, f64>,
    xm: &[Member<'_>],
    y: Option<(MatRef<'_, f64>, &[Member<'_>])>,
    threads: usize,
) {
    let xz = members_of(x, xm);
    let yz = y.map(|(y, ym)| (members_of(y, ym), ym));
    add_cross_members(
        acc,
        (&xz, xm),
        yz.as_ref().map(|(z, m)| (&z[..], *m)),
        threads,
    );
}

/// Each member's columns of a stacked matrix.
fn members_of<'a>(z: MatRef<'a, f64>, members: &[Member<'_>]) -> Vec<MatRef<'a, f64>> {
    members
        .iter()
        .map(|p| z.subcols(p.offset, p.dims))
        .collect()
}

/// As [`add_cross`], with each member's rows in a matrix of its own (`xz[i]` holds `xm[i]`'s
/// columns): the bits of every block are the same as from a stack of the same columns.
pub fn add_cross_members(
    mut acc: MatMut<'_, f64>,
    (xz, xm): (&[MatRef<'_, f64>], &[Member<'_>]),
    y: Option<(&[MatRef<'_, f64>], &[Member<'_>])>,
    threads: usize,
) {
    assert!(xz.len() == xm.len(), "one matrix per member");
    match y {
        Some((yz, ym)) => {
            assert!(yz.len() == ym.len(), "one matrix per member");
            for (&zp, p) in xz.iter().zip(xm) {
                for (&zq, q) in yz.iter().zip(ym) {
                    add_block(acc.as_mut(), (zp, p), (zq, q), threads);
                }
            }
        }
        None => {
            for (i, (&zp, p)) in xz.iter().zip(xm).enumerate() {
                for (&zq, q) in xz[..=i].iter().zip(&xm[..=i]) {
                    add_block(acc.as_mut(), (zp, p), (zq, q), threads);
                    if p.offset != q.offset {
                        // The mirror block: the same values transposed.
                        let (po, qo) = (p.offset, q.offset);
                        for c in 0..p.dims {
                            for r in 0..q.dims {
                                acc[(qo + r, po + c)] = acc[(po + c, qo + r)];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds `Z_pᵀ Z_q` to `acc[p's rows, q's columns]`.
fn add_block(
    mut acc: MatMut<'_, f64>,
    (zp, p): (MatRef<'_, f64>, &Member<'_>),
    (zq, q): (MatRef<'_, f64>, &Member<'_>),
    threads: usize,
) {
    assert!(
        zp.ncols() == p.dims && zq.ncols() == q.dims && zp.nrows() == zq.nrows(),
        "member shapes"
    );
    let mut block = acc
        .as_mut()
        .submatrix_mut(p.offset, q.offset, p.dims, q.dims);
    if p.name == q.name {
        // The same values on both sides: the exactly symmetric Gram matrix, so that the block
        // does not depend on which side the representation sits.
        let mut g = Mat::zeros(p.dims, p.dims);
        products::gram_lower(g.as_mut(), Accum::Replace, zp, 1.0, threads);
        for c in 0..p.dims {
            for r in 0..p.dims {
                block[(r, c)] += if r >= c { g[(r, c)] } else { g[(c, r)] };
            }
        }
    } else if p.name < q.name {
        let mut t = Mat::zeros(p.dims, q.dims);
        products::matmul(t.as_mut(), Accum::Replace, zp.transpose(), zq, 1.0, threads);
        for c in 0..q.dims {
            for r in 0..p.dims {
                block[(r, c)] += t[(r, c)];
            }
        }
    } else {
        let mut t = Mat::zeros(q.dims, p.dims);
        products::matmul(t.as_mut(), Accum::Replace, zq.transpose(), zp, 1.0, threads);
        for c in 0..q.dims {
            for r in 0..p.dims {
                block[(r, c)] += t[(c, r)];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
        let mut s = seed.wrapping_add(0x9e3779b97f4a7c15);
        Mat::from_fn(rows, cols, |_, _| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
    }

    /// Columns `cols` of `m`, side by side.
    fn stack(parts: &[&Mat<f64>]) -> Mat<f64> {
        let rows = parts[0].nrows();
        let total: usize = parts.iter().map(|p| p.ncols()).sum();
        let mut out = Mat::zeros(rows, total);
        let mut o = 0;
        for p in parts {
            out.as_mut().subcols_mut(o, p.ncols()).copy_from(p.as_ref());
            o += p.ncols();
        }
        out
    }

    fn block(m: &Mat<f64>, r: usize, c: usize, h: usize, w: usize) -> Vec<u64> {
        (0..w)
            .flat_map(|j| (0..h).map(move |i| (i, j)))
            .map(|(i, j)| m[(r + i, c + j)].to_bits())
            .collect()
    }

    #[test]
    fn a_pair_block_has_the_same_bits_whatever_else_the_task_stacks() {
        let rows = 100;
        let (a, b, c, d) = (
            data(rows, 3, 1),
            data(rows, 7, 2),
            data(rows, 20, 3),
            data(rows, 5, 4),
        );
        // a·b alone, as the (x = a, y = b) tile.
        let xm = stacked([("a", 3)]);
        let ym = stacked([("b", 7)]);
        let mut alone = Mat::zeros(3, 7);
        add_cross(alone.as_mut(), a.as_ref(), &xm, Some((b.as_ref(), &ym)), 1);
        let expected = a.transpose() * &b;
        for j in 0..7 {
            for i in 0..3 {
                assert!((alone[(i, j)] - expected[(i, j)]).abs() < 1e-12);
            }
        }
        let want = block(&alone, 0, 0, 3, 7);

        // The same pair stacked with others, on either side, and inside a Gram tile.
        let x = stack(&[&c, &a]);
        let y = stack(&[&d, &b]);
        let xm = stacked([("c", 20), ("a", 3)]);
        let ym = stacked([("d", 5), ("b", 7)]);
        let mut tile = Mat::zeros(23, 12);
        add_cross(tile.as_mut(), x.as_ref(), &xm, Some((y.as_ref(), &ym)), 2);
        assert_eq!(block(&tile, 20, 5, 3, 7), want);

        let mirrored_x = stack(&[&b, &d]);
        let mirrored_y = stack(&[&a]);
        let xm = stacked([("b", 7), ("d", 5)]);
        let ym = stacked([("a", 3)]);
        let mut tile = Mat::zeros(12, 3);
        add_cross(
            tile.as_mut(),
            mirrored_x.as_ref(),
            &xm,
            Some((mirrored_y.as_ref(), &ym)),
            3,
        );
        let t: Mat<f64> = tile.transpose().to_owned();
        assert_eq!(block(&t, 0, 0, 3, 7), want);

        let g = stack(&[&d, &b, &c, &a]);
        let gm = stacked([("d", 5), ("b", 7), ("c", 20), ("a", 3)]);
        let mut gram = Mat::zeros(35, 35);
        add_cross(gram.as_mut(), g.as_ref(), &gm, None, 0);
        assert_eq!(block(&gram, 32, 5, 3, 7), want);
        let gt: Mat<f64> = gram.transpose().to_owned();
        assert_eq!(block(&gt, 32, 5, 3, 7), want, "Gram tiles are symmetric");
    }

    #[test]
    fn identical_members_give_a_symmetric_block() {
        let z = data(50, 4, 9);
        let x = stack(&[&z, &z]);
        let m = stacked([("same", 4), ("same", 4)]);
        let mut gram = Mat::zeros(8, 8);
        add_cross(gram.as_mut(), x.as_ref(), &m, None, 1);
        for i in 0..8 {
            for j in 0..8 {
                assert_eq!(gram[(i, j)].to_bits(), gram[(j, i)].to_bits());
                assert_eq!(gram[(i % 4, j % 4)].to_bits(), gram[(i, j)].to_bits());
            }
        }
    }

    #[test]
    fn members_in_their_own_buffers_give_the_bits_of_a_stack() {
        let rows = 300;
        let (a, b, c) = (data(rows, 6, 5), data(rows, 9, 6), data(rows, 4, 7));
        let x = stack(&[&a, &b]);
        let xm = stacked([("a", 6), ("b", 9)]);
        let ym = stacked([("c", 4)]);
        for y in [None, Some(&c)] {
            let cols = if y.is_some() { 4 } else { 15 };
            let mut stacked_acc = Mat::zeros(15, cols);
            add_cross(
                stacked_acc.as_mut(),
                x.as_ref(),
                &xm,
                y.map(|c| (c.as_ref(), &ym[..])),
                2,
            );
            let own = [a.as_ref(), b.as_ref()];
            let yz = y.map(|c| [c.as_ref()]);
            let mut separate = Mat::zeros(15, cols);
            add_cross_members(
                separate.as_mut(),
                (&own, &xm),
                yz.as_ref().map(|z| (&z[..], &ym[..])),
                1,
            );
            assert_eq!(
                block(&separate, 0, 0, 15, cols),
                block(&stacked_acc, 0, 0, 15, cols)
            );
        }
    }
}
