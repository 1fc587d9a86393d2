//! Small dense linear algebra in f64: row-major matrices, Cholesky, symmetric eigen (Jacobi).
//!
//! The theory works with d ≤ a few hundred, so plain loops are fast enough and keep every number
//! reproducible bit for bit; the Monte Carlo hot path (the logistic Hessian) has its own kernel in
//! [`crate::logistic`].

use rand::Rng;
use rand_distr::StandardNormal;

/// A dense row-major f64 matrix. `rows × cols`, element `(i, j)` at `data[i * cols + j]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

/// Raised when a matrix that must be symmetric positive definite is not.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("matrix is not positive definite (pivot {pivot} is {value:e})")]
pub struct NotPositiveDefinite {
    /// Index of the first non-positive pivot.
    pub pivot: usize,
    /// The pivot's value.
    pub value: f64,
}

impl Mat {
    /// The `rows × cols` zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// The `n × n` identity.
    pub fn identity(n: usize) -> Self {
        Self::from_fn(n, n, |i, j| if i == j { 1.0 } else { 0.0 })
    }

    /// Builds a matrix from `f(i, j)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f64) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(f(i, j));
            }
        }
        Self { rows, cols, data }
    }

    /// Builds a matrix from equal-length rows. Returns `None` when the rows are ragged.
    pub fn from_rows(rows: &[Vec<f64>]) -> Option<Self> {
        let cols = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != cols) {
            return None;
        }
        Some(Self {
            rows: rows.len(),
            cols,
            data: rows.concat(),
        })
    }

    /// Wraps a row-major buffer. Panics if `data.len() != rows * cols` (a programming error).
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f64>) -> Self {
        assert_eq!(data.len(), rows * cols, "Mat::from_vec: buffer length");
        Self { rows, cols, data }
    }

    /// The diagonal matrix with `diag` on its diagonal.
    pub fn diag(diag: &[f64]) -> Self {
        Self::from_fn(
            diag.len(),
            diag.len(),
            |i, j| if i == j { diag[i] } else { 0.0 },
        )
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)`.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    /// Sets element `(i, j)`.
    #[inline]
    pub fn set(&mut self, i: usize, j: usize, v: f64) {
        self.data[i * self.cols + j] = v;
    }

    /// Row `i` as a slice.
    #[inline]
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Column `j`, copied.
    pub fn col(&self, j: usize) -> Vec<f64> {
        (0..self.rows).map(|i| self.get(i, j)).collect()
    }

    /// The row-major buffer.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// The rows as nested vectors (for serialisation).
    pub fn to_rows(&self) -> Vec<Vec<f64>> {
        (0..self.rows).map(|i| self.row(i).to_vec()).collect()
    }

    /// `Aᵀ`.
    pub fn transpose(&self) -> Self {
        Self::from_fn(self.cols, self.rows, |i, j| self.get(j, i))
    }

    /// `A B`. Panics on mismatched inner dimensions (a programming error).
    pub fn matmul(&self, b: &Mat) -> Mat {
        assert_eq!(self.cols, b.rows, "matmul: inner dimensions");
        let mut out = Mat::zeros(self.rows, b.cols);
        for i in 0..self.rows {
            let orow = &mut out.data[i * b.cols..(i + 1) * b.cols];
            for (l, &a) in self.row(i).iter().enumerate() {
                if a != 0.0 {
                    axpy(a, b.row(l), orow);
                }
            }
        }
        out
    }

    /// `A x`.
    pub fn matvec(&self, x: &[f64]) -> Vec<f64> {
        assert_eq!(self.cols, x.len(), "matvec: dimensions");
        (0..self.rows).map(|i| dot(self.row(i), x)).collect()
    }

    /// `Aᵀ x`.
    pub fn t_matvec(&self, x: &[f64]) -> Vec<f64> {
        assert_eq!(self.rows, x.len(), "t_matvec: dimensions");
        let mut out = vec![0.0; self.cols];
        for (i, &xi) in x.iter().enumerate() {
            axpy(xi, self.row(i), &mut out);
        }
        out
    }

    /// The quadratic form `xᵀ A y`.
    pub fn quad(&self, x: &[f64], y: &[f64]) -> f64 {
        dot(x, &self.matvec(y))
    }

    /// `A + B`.
    pub fn add(&self, b: &Mat) -> Mat {
        assert_eq!((self.rows, self.cols), (b.rows, b.cols), "add: shapes");
        let data = self.data.iter().zip(&b.data).map(|(x, y)| x + y).collect();
        Mat {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }

    /// `α A`.
    pub fn scale(&self, alpha: f64) -> Mat {
        Mat {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|x| alpha * x).collect(),
        }
    }

    /// Adds `alpha` to every diagonal element.
    pub fn add_diag(&mut self, alpha: f64) {
        for i in 0..self.rows.min(self.cols) {
            self.data[i * self.cols + i] += alpha;
        }
    }

    /// Largest absolute entry of `A − Aᵀ` (0 for a symmetric matrix).
    pub fn asymmetry(&self) -> f64 {
        let mut m: f64 = 0.0;
        for i in 0..self.rows {
            for j in 0..self.cols.min(self.rows) {
                m = m.max((self.get(i, j) - self.get(j, i)).abs());
            }
        }
        m
    }

    /// Largest absolute entry.
    pub fn max_abs(&self) -> f64 {
        self.data.iter().fold(0.0, |m, x| m.max(x.abs()))
    }

    /// True when every entry is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|x| x.is_finite())
    }
}

/// `⟨x, y⟩`.
#[inline]
pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    debug_assert_eq!(x.len(), y.len());
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// `y ← y + α x`.
#[inline]
pub fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Euclidean norm.
pub fn norm(x: &[f64]) -> f64 {
    dot(x, x).sqrt()
}

/// `α x`, copied.
pub fn scaled(x: &[f64], alpha: f64) -> Vec<f64> {
    x.iter().map(|v| alpha * v).collect()
}

/// `x + α y`, copied.
pub fn add_scaled(x: &[f64], alpha: f64, y: &[f64]) -> Vec<f64> {
    x.iter().zip(y).map(|(a, b)| a + alpha * b).collect()
}

/// `x / |x|`; the zero vector stays zero.
pub fn normalized(x: &[f64]) -> Vec<f64> {
    let n = norm(x);
    if n == 0.0 {
        x.to_vec()
    } else {
        scaled(x, 1.0 / n)
    }
}

/// Cosine similarity `⟨x, y⟩ / (|x| |y|)`; 0 when either is zero.
pub fn cosine(x: &[f64], y: &[f64]) -> f64 {
    let d = norm(x) * norm(y);
    if d == 0.0 {
        0.0
    } else {
        dot(x, y) / d
    }
}

/// The lower-triangular Cholesky factor `L` with `A = L Lᵀ`.
#[derive(Clone, Debug)]
pub struct Cholesky {
    l: Mat,
}

impl Cholesky {
    /// Factors a symmetric positive definite matrix (only the lower triangle is read).
    ///
    /// # Errors
    /// [`NotPositiveDefinite`] when a pivot is not strictly positive (or not finite).
    pub fn new(a: &Mat) -> Result<Self, NotPositiveDefinite> {
        let n = a.rows();
        assert_eq!(n, a.cols(), "Cholesky: square matrix");
        let mut l = Mat::zeros(n, n);
        for j in 0..n {
            let mut s = a.get(j, j);
            for k in 0..j {
                s -= l.get(j, k) * l.get(j, k);
            }
            if !(s > 0.0 && s.is_finite()) {
                return Err(NotPositiveDefinite { pivot: j, value: s });
            }
            let ljj = s.sqrt();
            l.set(j, j, ljj);
            for i in j + 1..n {
                let mut s = a.get(i, j);
                let (ri, rj) = (i * n, j * n);
                for k in 0..j {
                    s -= l.data[ri + k] * l.data[rj + k];
                }
                l.set(i, j, s / ljj);
            }
        }
        Ok(Self { l })
    }

    /// The factor `L`.
    pub fn l(&self) -> &Mat {
        &self.l
    }

    /// Solves `A x = b`.
    pub fn solve(&self, b: &[f64]) -> Vec<f64> {
        let n = self.l.rows();
        let mut y = b.to_vec();
        for i in 0..n {
            let s = dot(&self.l.row(i)[..i], &y[..i]);
            y[i] = (y[i] - s) / self.l.get(i, i);
        }
        for i in (0..n).rev() {
            let mut s = y[i];
            for k in i + 1..n {
                s -= self.l.get(k, i) * y[k];
            }
            y[i] = s / self.l.get(i, i);
        }
        y
    }

    /// `A⁻¹`.
    pub fn inverse(&self) -> Mat {
        let n = self.l.rows();
        let mut inv = Mat::zeros(n, n);
        let mut e = vec![0.0; n];
        for j in 0..n {
            e.iter_mut().for_each(|v| *v = 0.0);
            e[j] = 1.0;
            let x = self.solve(&e);
            for i in 0..n {
                inv.set(i, j, x[i]);
            }
        }
        inv
    }

    /// `L x` (maps standard normal draws to `N(0, A)`).
    pub fn l_mul(&self, x: &[f64]) -> Vec<f64> {
        let n = self.l.rows();
        (0..n)
            .map(|i| dot(&self.l.row(i)[..=i], &x[..=i]))
            .collect()
    }
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations.
///
/// Returns eigenvalues in descending order and the matching orthonormal eigenvectors as the
/// columns of the returned matrix. Accurate to machine precision; O(n³) per sweep.
pub fn sym_eigen(a: &Mat) -> (Vec<f64>, Mat) {
    let n = a.rows();
    assert_eq!(n, a.cols(), "sym_eigen: square matrix");
    let mut m = a.clone();
    let mut v = Mat::identity(n);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m.get(i, j).powi(2))
            .sum();
        let scale: f64 = m
            .data
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m.get(p, q);
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m.get(p, p), m.get(q, q));
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m.get(k, p), m.get(k, q));
                    m.set(k, p, c * mkp - s * mkq);
                    m.set(k, q, s * mkp + c * mkq);
                }
                for k in 0..n {
                    let (mpk, mqk) = (m.get(p, k), m.get(q, k));
                    m.set(p, k, c * mpk - s * mqk);
                    m.set(q, k, s * mpk + c * mqk);
                }
                for k in 0..n {
                    let (vkp, vkq) = (v.get(k, p), v.get(k, q));
                    v.set(k, p, c * vkp - s * vkq);
                    v.set(k, q, s * vkp + c * vkq);
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m.get(j, j).total_cmp(&m.get(i, i)));
    let values = order.iter().map(|&i| m.get(i, i)).collect();
    let vectors = Mat::from_fn(n, n, |r, c| v.get(r, order[c]));
    (values, vectors)
}

/// A `d × k` matrix with orthonormal columns, drawn uniformly (Gram–Schmidt on Gaussians).
pub fn random_orthonormal(d: usize, k: usize, rng: &mut impl Rng) -> Mat {
    assert!(k <= d, "random_orthonormal: k ≤ d");
    let mut cols: Vec<Vec<f64>> = Vec::with_capacity(k);
    while cols.len() < k {
        let mut v: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        for _ in 0..2 {
            for c in &cols {
                let p = dot(&v, c);
                axpy(-p, c, &mut v);
            }
        }
        let n = norm(&v);
        if n > 1e-8 {
            cols.push(scaled(&v, 1.0 / n));
        }
    }
    Mat::from_fn(d, k, |i, j| cols[j][i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cholesky_solves_and_inverts() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for n in [1, 3, 10, 40] {
            let b = Mat::from_fn(n, n, |_, _| rng.sample(StandardNormal));
            let mut a = b.matmul(&b.transpose());
            a.add_diag(0.5);
            let ch = Cholesky::new(&a).unwrap();
            let x: Vec<f64> = (0..n).map(|i| i as f64 - 1.5).collect();
            let rhs = a.matvec(&x);
            let sol = ch.solve(&rhs);
            for (s, t) in sol.iter().zip(&x) {
                assert!((s - t).abs() < 1e-9, "{s} vs {t}");
            }
            let id = a.matmul(&ch.inverse());
            assert!(id.add(&Mat::identity(n).scale(-1.0)).max_abs() < 1e-9);
        }
    }

    #[test]
    fn cholesky_rejects_indefinite() {
        let a = Mat::from_rows(&[vec![1.0, 2.0], vec![2.0, 1.0]]).unwrap();
        assert_eq!(Cholesky::new(&a).unwrap_err().pivot, 1);
    }

    #[test]
    fn jacobi_reconstructs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let n = 12;
        let b = Mat::from_fn(n, n, |_, _| rng.sample(StandardNormal));
        let a = b.add(&b.transpose());
        let (vals, vecs) = sym_eigen(&a);
        assert!(vals.windows(2).all(|w| w[0] >= w[1]));
        let rec = vecs.matmul(&Mat::diag(&vals)).matmul(&vecs.transpose());
        assert!(rec.add(&a.scale(-1.0)).max_abs() < 1e-10);
        let vtv = vecs.transpose().matmul(&vecs);
        assert!(vtv.add(&Mat::identity(n).scale(-1.0)).max_abs() < 1e-12);
    }
}
