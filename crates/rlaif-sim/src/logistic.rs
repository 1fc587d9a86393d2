//! L2-regularised logistic regression with an unpenalised intercept (THEORY §7 step 4).
//!
//! `(ŵ, ĉ₀) = argmin Σ_i [log(1 + e^{z_i}) − ℓ_i z_i] + (ρ_r/2)|ŵ|²`, `z_i = ⟨ŵ, x_i⟩ + ĉ₀`,
//! by Newton's method: the Hessian `Σ_i σ'(z_i) x̃_i x̃_iᵀ + ρ_r I_w` (x̃ = (x, 1)) is factored by
//! Cholesky, the step is backtracked until the Armijo condition holds, and iteration stops when
//! the step is below `1e-10`. Labels may be soft (ℓ ∈ [0, 1]). Rows are processed in fixed chunks
//! in parallel and reduced in chunk order, so results are bit-identical for any thread count.

use rayon::prelude::*;

use crate::agreement::sigmoid;
use crate::linalg::{dot, Cholesky, Mat};

/// Rows per parallel work item.
pub const CHUNK: usize = 512;

/// Errors of the logistic fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Inputs of inconsistent shape.
    #[error("logistic fit: {0}")]
    Shape(String),
    /// A label outside [0, 1] or a non-finite feature.
    #[error("logistic fit: invalid input ({0})")]
    Invalid(String),
    /// Newton's method failed to converge.
    #[error("logistic fit: no convergence after {0} Newton iterations")]
    NoConvergence(usize),
}

/// The fitted model.
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticFit {
    /// Weights ŵ (length d).
    pub w: Vec<f64>,
    /// Intercept ĉ₀.
    pub intercept: f64,
    /// Newton iterations taken.
    pub iterations: usize,
    /// Final objective value.
    pub loss: f64,
}

/// Fits the model to `x` (`n × d`, row-major) and labels `y` (n values in [0, 1]).
///
/// # Errors
/// [`FitError`] on shape mismatch, invalid labels or non-convergence (200 iterations).
pub fn fit(x: &[f64], d: usize, y: &[f64], ridge: f64) -> Result<LogisticFit, FitError> {
    let n = y.len();
    if d == 0 || x.len() != n * d {
        return Err(FitError::Shape(format!(
            "{} features for {n} labels of width {d}",
            x.len()
        )));
    }
    if y.iter().any(|l| !(0.0..=1.0).contains(l)) {
        return Err(FitError::Invalid("labels must lie in [0, 1]".into()));
    }
    if !(ridge >= 0.0 && ridge.is_finite()) {
        return Err(FitError::Invalid(format!("ridge must be ≥ 0, got {ridge}")));
    }
    let p = d + 1;
    let mut theta = vec![0.0; p];
    let mut loss = objective(x, d, y, &theta, ridge);
    for iter in 1..=200 {
        let (grad, hess) = grad_hess(x, d, y, &theta, ridge);
        let step = newton_step(&hess, &grad);
        let slope = dot(&grad, &step);
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..60 {
            let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a + t * s).collect();
            let l = objective(x, d, y, &cand, ridge);
            if l <= loss + 1e-4 * t * slope {
                theta = cand;
                loss = l;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        let step_norm = t * dot(&step, &step).sqrt();
        if !accepted || step_norm < 1e-10 {
            // No decrease possible at machine precision: we are at the optimum.
            return Ok(LogisticFit {
                w: theta[..d].to_vec(),
                intercept: theta[d],
                iterations: iter,
                loss,
            });
        }
    }
    Err(FitError::NoConvergence(200))
}

/// Solves `H δ = −g`, adding a tiny jitter if H is numerically singular (separable data without
/// ridge).
fn newton_step(hess: &Mat, grad: &[f64]) -> Vec<f64> {
    let neg: Vec<f64> = grad.iter().map(|g| -g).collect();
    let mut h = hess.clone();
    let mut jitter = 1e-12 * (0..h.rows()).map(|i| h.get(i, i)).fold(1.0, f64::max);
    loop {
        if let Ok(ch) = Cholesky::new(&h) {
            return ch.solve(&neg);
        }
        h.add_diag(jitter);
        jitter *= 10.0;
    }
}

/// The objective `Σ softplus(z_i) − ℓ_i z_i + (ρ_r/2)|w|²`.
fn objective(x: &[f64], d: usize, y: &[f64], theta: &[f64], ridge: f64) -> f64 {
    let (w, c0) = (&theta[..d], theta[d]);
    let parts: Vec<f64> = x
        .par_chunks(CHUNK * d)
        .zip(y.par_chunks(CHUNK))
        .map(|(xc, yc)| {
            xc.chunks_exact(d)
                .zip(yc)
                .map(|(xi, &l)| {
                    let z = dot(xi, w) + c0;
                    softplus(z) - l * z
                })
                .sum::<f64>()
        })
        .collect();
    parts.iter().sum::<f64>() + 0.5 * ridge * dot(w, w)
}

/// `log(1 + e^z)`, stable.
#[inline]
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Gradient and Hessian of the objective at `theta`.
fn grad_hess(x: &[f64], d: usize, y: &[f64], theta: &[f64], ridge: f64) -> (Vec<f64>, Mat) {
    let p = d + 1;
    let (w, c0) = (&theta[..d], theta[d]);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = x
        .par_chunks(CHUNK * d)
        .zip(y.par_chunks(CHUNK))
        .map(|(xc, yc)| {
            let rows = yc.len();
            let mut g = vec![0.0; p];
            let mut weights = Vec::with_capacity(rows);
            for (xi, &l) in xc.chunks_exact(d).zip(yc) {
                let s = sigmoid(dot(xi, w) + c0);
                let r = s - l;
                crate::linalg::axpy(r, xi, &mut g[..d]);
                g[d] += r;
                weights.push(s * (1.0 - s));
            }
            (g, weighted_gram_upper(xc, d, &weights))
        })
        .collect();
    let mut grad = vec![0.0; p];
    let mut upper = vec![0.0; p * p];
    for (g, h) in &parts {
        crate::linalg::axpy(1.0, g, &mut grad);
        crate::linalg::axpy(1.0, h, &mut upper);
    }
    for (gi, wi) in grad.iter_mut().zip(w) {
        *gi += ridge * wi;
    }
    let mut hess = Mat::from_fn(p, p, |a, b| {
        if a <= b {
            upper[a * p + b]
        } else {
            upper[b * p + a]
        }
    });
    for a in 0..d {
        hess.set(a, a, hess.get(a, a) + ridge);
    }
    (grad, hess)
}

/// Upper triangle (row-major, `p × p` with `p = d + 1`) of `Σ_i s_i x̃_i x̃_iᵀ`, x̃ = (x, 1).
///
/// This is the hot loop of the simulator: `n (d+1)²/2` multiply-adds per Newton iteration.
/// Rows are processed four at a time so that each load of a Hessian row is reused four times.
pub fn weighted_gram_upper(x: &[f64], d: usize, s: &[f64]) -> Vec<f64> {
    let p = d + 1;
    let mut h = vec![0.0; p * p];
    let mut rows = x.chunks_exact(d).zip(s);
    let mut buf = [vec![0.0; p], vec![0.0; p], vec![0.0; p], vec![0.0; p]];
    loop {
        let mut k = 0;
        let mut wts = [0.0; 4];
        for (slot, wt) in buf.iter_mut().zip(wts.iter_mut()) {
            match rows.next() {
                Some((xi, &si)) => {
                    slot[..d].copy_from_slice(xi);
                    slot[d] = 1.0;
                    *wt = si;
                    k += 1;
                }
                None => {
                    slot.iter_mut().for_each(|v| *v = 0.0);
                    *wt = 0.0;
                }
            }
        }
        if k == 0 {
            break;
        }
        let [r0, r1, r2, r3] = &buf;
        for a in 0..p {
            let (c0, c1, c2, c3) = (
                wts[0] * r0[a],
                wts[1] * r1[a],
                wts[2] * r2[a],
                wts[3] * r3[a],
            );
            let hrow = &mut h[a * p + a..a * p + p];
            let (s0, s1, s2, s3) = (&r0[a..], &r1[a..], &r2[a..], &r3[a..]);
            for b in 0..hrow.len() {
                hrow[b] += c0 * s0[b] + c1 * s1[b] + c2 * s2[b] + c3 * s3[b];
            }
        }
        if k < 4 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    #[test]
    fn recovers_planted_logistic_model() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, d) = (20_000, 5);
        let w_true = [1.0, -0.5, 0.25, 0.0, 2.0];
        let c_true = 0.3;
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let xi: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
            let p = sigmoid(dot(&xi, &w_true) + c_true);
            y.push(if rng.gen::<f64>() < p { 1.0 } else { 0.0 });
            x.extend(xi);
        }
        let f = fit(&x, d, &y, 1e-3).unwrap();
        for (a, b) in f.w.iter().zip(&w_true) {
            assert!((a - b).abs() < 0.08, "{a} vs {b}");
        }
        assert!((f.intercept - c_true).abs() < 0.08);
        // Gradient vanishes at the optimum.
        let mut theta = f.w.clone();
        theta.push(f.intercept);
        let (g, _) = grad_hess(&x, d, &y, &theta, 1e-3);
        assert!(dot(&g, &g).sqrt() < 1e-6, "{g:?}");
    }

    #[test]
    fn separable_data_with_ridge_converges() {
        let x = vec![-2.0, -1.0, 1.0, 2.0];
        let y = vec![0.0, 0.0, 1.0, 1.0];
        let f = fit(&x, 1, &y, 1e-3).unwrap();
        assert!(f.w[0] > 5.0);
    }

    #[test]
    fn gram_kernel_matches_naive() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for (n, d) in [(1, 3), (7, 4), (13, 9)] {
            let x: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
            let s: Vec<f64> = (0..n).map(|_| rng.gen()).collect();
            let h = weighted_gram_upper(&x, d, &s);
            let p = d + 1;
            for a in 0..p {
                for b in a..p {
                    let naive: f64 = (0..n)
                        .map(|i| {
                            let xa = if a < d { x[i * d + a] } else { 1.0 };
                            let xb = if b < d { x[i * d + b] } else { 1.0 };
                            s[i] * xa * xb
                        })
                        .sum();
                    assert!((h[a * p + b] - naive).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn rejects_bad_labels() {
        assert!(matches!(
            fit(&[1.0], 1, &[2.0], 0.0),
            Err(FitError::Invalid(_))
        ));
        assert!(matches!(
            fit(&[1.0, 2.0], 1, &[1.0], 0.0),
            Err(FitError::Shape(_))
        ));
    }
}
