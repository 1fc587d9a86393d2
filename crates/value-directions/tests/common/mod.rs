//! Synthetic activations from the linear model of THEORY §2 and T7.
#![allow(dead_code)]

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

/// A random orthogonal matrix (rows orthonormal), `[d, d]` row-major, by Gram–Schmidt.
pub fn random_orthogonal(d: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(d);
    while q.len() < d {
        let mut v: Vec<f64> = (0..d).map(|_| normal(rng)).collect();
        for _ in 0..2 {
            for b in &q {
                let c = dot(&v, b);
                v.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
            }
        }
        let n = dot(&v, &v).sqrt();
        if n > 1e-8 {
            q.push(v.into_iter().map(|x| x / n).collect());
        }
    }
    q
}

/// Gaussian noise with covariance `Σ = Qᵀ diag(λ) Q` (rows of Q are eigenvectors).
pub struct Covariance {
    pub q: Vec<Vec<f64>>,
    pub eig: Vec<f64>,
}

impl Covariance {
    pub fn isotropic(d: usize, s2: f64) -> Self {
        let q = (0..d)
            .map(|i| (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect();
        Covariance {
            q,
            eig: vec![s2; d],
        }
    }

    /// Eigenvalues log-uniform in `[lo, hi]`, random eigenvectors.
    pub fn random(d: usize, lo: f64, hi: f64, rng: &mut ChaCha8Rng) -> Self {
        let q = random_orthogonal(d, rng);
        let eig = (0..d)
            .map(|_| (lo.ln() + rng.gen::<f64>() * (hi.ln() - lo.ln())).exp())
            .collect();
        Covariance { q, eig }
    }

    pub fn d(&self) -> usize {
        self.eig.len()
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let d = self.d();
        let mut out = vec![0.0; d];
        for (row, &l) in self.q.iter().zip(&self.eig) {
            let a = l.sqrt() * normal(rng);
            out.iter_mut().zip(row).for_each(|(o, r)| *o += a * r);
        }
        out
    }

    /// `Σ x`.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        self.apply_pow(x, 1.0)
    }

    /// `Σ⁻¹ x`.
    pub fn solve(&self, x: &[f64]) -> Vec<f64> {
        self.apply_pow(x, -1.0)
    }

    fn apply_pow(&self, x: &[f64], p: f64) -> Vec<f64> {
        let mut out = vec![0.0; self.d()];
        for (row, &l) in self.q.iter().zip(&self.eig) {
            let a = dot(row, x) * l.powf(p);
            out.iter_mut().zip(row).for_each(|(o, r)| *o += a * r);
        }
        out
    }
}

/// THEORY T7a data: `u* ~ N(0,1)`, `h = c u* + ε`, `ε ~ N(0, Σ_ε)`. Items in the top third of u*
/// are harmless (+), the bottom third harmful (−), the middle third is discarded.
/// Returns (rows, labels). Population facts: `Σ_h = Σ_ε + c cᵀ`, `w* = Σ_h⁻¹ c ∝ Σ_ε⁻¹ c`.
pub fn t7a_set(
    c: &[f64],
    noise: &Covariance,
    n_draw: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<Vec<f32>>, Vec<bool>) {
    // Tertiles of N(0,1): ±0.430727.
    let cut = 0.430_727_299_295_457_5;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n_draw {
        let u = normal(rng);
        let e = noise.sample(rng);
        if u.abs() < cut {
            continue;
        }
        rows.push(
            c.iter()
                .zip(&e)
                .map(|(ci, ei)| (ci * u + ei) as f32)
                .collect(),
        );
        labels.push(u > 0.0);
    }
    (rows, labels)
}

/// Alignment `a(w) = <c, w> / (σ_u √(wᵀ Σ_h w))` with `σ_u = 1`, `Σ_h = Σ_ε + c cᵀ`.
pub fn alignment(w: &[f64], c: &[f64], noise: &Covariance) -> f64 {
    let sw = noise.apply(w);
    let var = dot(w, &sw) + dot(c, w).powi(2);
    dot(c, w) / var.sqrt()
}
