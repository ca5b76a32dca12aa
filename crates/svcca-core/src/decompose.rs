//! Eigen-, singular-value, QR and Cholesky decompositions run sequentially, whatever the
//! process-wide parallelism.
//!
//! faer's parallel decompositions round differently from its sequential ones (eigenvectors of a
//! 512 × 512 covariance differ by ~1e-12). A sweep whitens on the coordinator and compares on
//! workers, and its results must not depend on how many threads each process was given, so the
//! decompositions (small next to the products that feed them) always run on one thread. Matrix
//! products go through [`crate::products`] for the same reason. (faer's convenience methods such
//! as `Mat::qr`, `Mat::llt` and `Mat::singular_values` use the process-wide setting: call these
//! instead.)

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors, EvdError};
use faer::linalg::svd::{self, ComputeSvdVectors, SvdError};
use faer::traits::ComplexField;
use faer::{Mat, MatRef, Par};

/// Eigenvalues (ascending, as faer returns them) and eigenvectors of the self-adjoint `a`
/// (lower triangle read).
pub(crate) fn self_adjoint_eigen<T: ComplexField>(
    a: MatRef<'_, T>,
) -> Result<(Diag<T>, Mat<T>), EvdError> {
    let n = a.nrows();
    let mut s = Diag::zeros(n);
    let mut u = Mat::zeros(n, n);
    let scratch = evd::self_adjoint_evd_scratch::<T>(
        n,
        ComputeEigenvectors::Yes,
        Par::Seq,
        Default::default(),
    );
    evd::self_adjoint_evd(
        a,
        s.as_mut(),
        Some(u.as_mut()),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )?;
    Ok((s, u))
}

/// Singular values, `U` and `V` of a thin SVD.
pub(crate) type ThinSvd<T> = (Diag<T>, Mat<T>, Mat<T>);

/// Thin SVD `a = U S Vᵀ` (singular values in faer's order).
pub(crate) fn thin_svd<T: ComplexField>(a: MatRef<'_, T>) -> Result<ThinSvd<T>, SvdError> {
    let (m, n) = a.shape();
    let size = m.min(n);
    let mut s = Diag::zeros(size);
    let mut u = Mat::zeros(m, size);
    let mut v = Mat::zeros(n, size);
    let scratch = svd::svd_scratch::<T>(
        m,
        n,
        ComputeSvdVectors::Thin,
        ComputeSvdVectors::Thin,
        Par::Seq,
        Default::default(),
    );
    svd::svd(
        a,
        s.as_mut(),
        Some(u.as_mut()),
        Some(v.as_mut()),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )?;
    Ok((s, u, v))
}

/// Singular values of `a` (faer's order, non-negative). faer's `Mat::singular_values` follows the
/// process-wide parallelism, and its parallel bidiagonalisation rounds differently (measured: up to
/// 1.6e-13 apart at 2,048 × 2,048, from 300 × 300 up).
pub(crate) fn singular_values<T: ComplexField>(a: MatRef<'_, T>) -> Result<Vec<T::Real>, SvdError> {
    let (m, n) = a.shape();
    let mut s = Diag::<T>::zeros(m.min(n));
    let scratch = svd::svd_scratch::<T>(
        m,
        n,
        ComputeSvdVectors::No,
        ComputeSvdVectors::No,
        Par::Seq,
        Default::default(),
    );
    svd::svd(
        a,
        s.as_mut(),
        None,
        None,
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )?;
    Ok(s.column_vector()
        .iter()
        .map(faer::traits::math_utils::real)
        .collect())
}

/// The `R` factor (upper triangular, `min(m, n) × n`) of `a = QR`, unpivoted.
pub(crate) fn qr_r<T: ComplexField>(a: MatRef<'_, T>) -> Mat<T> {
    use faer::linalg::qr::no_pivoting::factor;
    let (m, n) = a.shape();
    let size = m.min(n);
    let mut qr = a.to_owned();
    let block = factor::recommended_block_size::<T>(m, n);
    let mut coeff = Mat::zeros(block, size);
    let scratch = factor::qr_in_place_scratch::<T>(m, n, block, Par::Seq, Default::default());
    factor::qr_in_place(
        qr.as_mut(),
        coeff.as_mut(),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    );
    Mat::from_fn(size, n, |i, j| {
        if i <= j {
            qr[(i, j)].clone()
        } else {
            T::zero_impl()
        }
    })
}

/// The lower Cholesky factor `L` of the self-adjoint positive definite `a` (lower triangle
/// read), or `None` when `a` is not positive definite.
pub(crate) fn cholesky_lower<T: ComplexField>(a: MatRef<'_, T>) -> Option<Mat<T>> {
    use faer::linalg::cholesky::llt::factor;
    let n = a.nrows();
    let mut l = a.to_owned();
    let scratch = factor::cholesky_in_place_scratch::<T>(n, Par::Seq, Default::default());
    factor::cholesky_in_place(
        l.as_mut(),
        Default::default(),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .ok()?;
    for j in 0..n {
        for i in 0..j {
            l[(i, j)] = T::zero_impl();
        }
    }
    Some(l)
}
