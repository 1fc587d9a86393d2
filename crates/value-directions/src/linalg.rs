//! Thin wrappers over `faer` for the few dense operations this crate needs. All in f64.
//!
//! Keeping the backend behind these functions means the estimators read as maths and the
//! `faer` API (which changes between minor versions) is touched in one file only.

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{get_global_parallelism, Accum, Mat, MatRef, Side};

use crate::error::{Error, Result};

/// `A^T A` for `A` of shape `[n, d]` (rows: items, cols: features), a `[d, d]` matrix.
pub(crate) fn gram_t(a: MatRef<'_, f64>) -> Mat<f64> {
    let d = a.ncols();
    let mut out = Mat::<f64>::zeros(d, d);
    matmul(
        out.as_mut(),
        Accum::Replace,
        a.transpose(),
        a,
        1.0,
        get_global_parallelism(),
    );
    out
}

/// `A A^T` for `A` of shape `[n, d]`, an `[n, n]` matrix.
pub(crate) fn gram(a: MatRef<'_, f64>) -> Mat<f64> {
    let n = a.nrows();
    let mut out = Mat::<f64>::zeros(n, n);
    matmul(
        out.as_mut(),
        Accum::Replace,
        a,
        a.transpose(),
        1.0,
        get_global_parallelism(),
    );
    out
}

/// `A B` for row-compatible `A`, `B`.
pub(crate) fn matmul_ab(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(
        out.as_mut(),
        Accum::Replace,
        a,
        b,
        1.0,
        get_global_parallelism(),
    );
    out
}

/// Solve `A x = b` for symmetric positive definite `A` by Cholesky (`A = L L^T`).
///
/// # Errors
/// [`Error::Decomposition`] when `A` is not numerically positive definite.
pub(crate) fn cholesky_solve(a: &Mat<f64>, b: &[f64], what: &'static str) -> Result<Vec<f64>> {
    let llt = a.llt(Side::Lower).map_err(|e| Error::Decomposition {
        what,
        reason: format!("Cholesky failed: {e:?}"),
    })?;
    let mut rhs = Mat::from_fn(b.len(), 1, |i, _| b[i]);
    llt.solve_in_place(rhs.as_mut());
    Ok((0..b.len()).map(|i| rhs[(i, 0)]).collect())
}

/// Eigen-decomposition of a symmetric matrix: eigenvalues in **descending** order and the
/// matching unit eigenvectors as rows (`[k, d]` row-major, `k = d`).
///
/// # Errors
/// [`Error::Decomposition`] if the iteration does not converge.
pub(crate) fn sym_eigen_desc(a: &Mat<f64>, what: &'static str) -> Result<(Vec<f64>, Vec<f64>)> {
    let d = a.nrows();
    let evd = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Decomposition {
            what,
            reason: format!("eigen-decomposition failed: {e:?}"),
        })?;
    let s = evd.S().column_vector();
    let u = evd.U();
    // faer sorts ascending; we report descending.
    let mut values = Vec::with_capacity(d);
    let mut vectors = Vec::with_capacity(d * d);
    for k in (0..d).rev() {
        values.push(s[k]);
        for i in 0..d {
            vectors.push(u[(i, k)]);
        }
    }
    Ok((values, vectors))
}

/// Singular values of a (small) matrix, descending.
///
/// # Errors
/// [`Error::Decomposition`] if the iteration does not converge.
pub(crate) fn singular_values(a: &Mat<f64>, what: &'static str) -> Result<Vec<f64>> {
    a.singular_values().map_err(|e| Error::Decomposition {
        what,
        reason: format!("SVD failed: {e:?}"),
    })
}

/// `<a, b>` accumulated in f64.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm in f64.
#[inline]
pub(crate) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}
