//! The theorems of THEORY §6 as functions of a [`LatentModel`].
//!
//! Each block cites its theorem; the formulas are repeated in the doc comments so that a reader
//! can check code against the specification line by line.

use serde::Serialize;

use crate::agreement::{gaussian_expectation, sigmoid};
use crate::linalg::{add_scaled, dot, normalized, Cholesky, Mat};
use crate::mixing::{mixed_sup, MixSup};
use crate::model::LatentModel;

// ---------------------------------------------------------------------------------------------
// T1: improvement condition
// ---------------------------------------------------------------------------------------------

/// Per-round records of a population RLAIF run: `b_t = g + tηj`, t = 0..T.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Trajectory {
    /// `V_t = ⟨c, b_t⟩`.
    #[serde(rename = "V")]
    pub v: Vec<f64>,
    /// `K_t = b_tᵀ Σ_h b_t / 2`.
    #[serde(rename = "K")]
    pub k: Vec<f64>,
    /// `A_t = a(b_t)`.
    #[serde(rename = "A")]
    pub a: Vec<f64>,
}

impl Trajectory {
    /// Appends the record of policy tilt `b`.
    pub fn push(&mut self, m: &LatentModel, b: &[f64]) {
        self.v.push(m.value(b));
        self.k.push(m.kl(b));
        self.a.push(m.alignment(b));
    }
}

/// T1: in the population limit the BT fit returns `βj`, so `b_t = g + tηj` with `η = β/τ`.
pub fn population_trajectory(
    m: &LatentModel,
    g: &[f64],
    j: &[f64],
    eta: f64,
    rounds: usize,
) -> Trajectory {
    let mut tr = Trajectory::default();
    for t in 0..=rounds {
        tr.push(m, &add_scaled(g, t as f64 * eta, j));
    }
    tr
}

/// T1(a): value gained per round, `η ⟨c, j⟩ = η σ_u sd(s_j) a(j)`.
pub fn step_value(m: &LatentModel, j: &[f64], eta: f64) -> f64 {
    eta * m.value(j)
}

/// T1(a): KL of one round from the previous policy, `η² Var(s_j)/2`.
pub fn step_kl(m: &LatentModel, j: &[f64], eta: f64) -> f64 {
    eta * eta * m.var_score(j) / 2.0
}

/// T1(d): `dA(g + ηj)/dη at η = 0 = (sd(s_j)/sd(s_g)) (a(j) − ρ(g, j) a(g))`.
pub fn first_step_slope(m: &LatentModel, g: &[f64], j: &[f64]) -> f64 {
    let sg = m.sd_score(g);
    if sg == 0.0 {
        return f64::INFINITY * m.alignment(j).signum();
    }
    (m.sd_score(j) / sg) * (m.alignment(j) - m.rho(g, j) * m.alignment(g))
}

/// T1(b): `A(b_t) → a(j)` as t → ∞.
pub fn converged_alignment(m: &LatentModel, j: &[f64]) -> f64 {
    m.alignment(j)
}

/// T1(c): value over the default at the default's own KL budget `K₀ = K(g)`:
/// `σ_u √(2K₀) (a(j) − a(g))`.
pub fn budget_matched_gain(m: &LatentModel, g: &[f64], j: &[f64]) -> f64 {
    m.sigma_u() * (2.0 * m.kl(g)).sqrt() * (m.alignment(j) - m.alignment(g))
}

/// T1(e): the trajectory's supremum (Lemma M with w = g, v = j) and the (fractional) round at
/// which it is reached, `t*/(η sd(s_j)/sd(s_g))`.
pub fn trajectory_peak(m: &LatentModel, g: &[f64], j: &[f64], eta: f64) -> (MixSup, Option<f64>) {
    let sup = mixed_sup(m.alignment(g), m.alignment(j), m.rho(g, j));
    let per_round = eta * m.sd_score(j) / m.sd_score(g);
    (sup, sup.t_star.map(|t| t / per_round))
}

// ---------------------------------------------------------------------------------------------
// T2: ceiling and capacity
// ---------------------------------------------------------------------------------------------

/// T2(b): `∂q²/∂s² = −cᵀ Σ_h⁻² c / σ_u² < 0`.
pub fn dq2_ds2(m: &LatentModel) -> f64 {
    let x = m.sigma_h_chol().solve(m.c());
    -dot(&x, &x) / (m.sigma_u() * m.sigma_u())
}

/// T2(b) capacity model: `Σ_z = I`, `W(N) = U diag(γ)`, `s²(N) = s₀² (N/N₀)^{−α}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapacityModel {
    /// True value weights θ*.
    pub theta: Vec<f64>,
    /// Feature gains γ.
    pub gamma: Vec<f64>,
    /// Nuisance variance at the reference size.
    pub s0_2: f64,
    /// Reference size N₀.
    pub n0: f64,
    /// Noise decay exponent α.
    pub alpha: f64,
}

impl CapacityModel {
    /// `s²(N) = s₀² (N/N₀)^{−α}`.
    pub fn s2(&self, n: f64) -> f64 {
        self.s0_2 * (n / self.n0).powf(-self.alpha)
    }

    /// `q(N)² = Σ_l θ_l² γ_l² / (γ_l² + s²(N)) / |θ|²`.
    pub fn q(&self, n: f64) -> f64 {
        let s2 = self.s2(n);
        let num: f64 = self
            .theta
            .iter()
            .zip(&self.gamma)
            .map(|(t, g)| t * t * g * g / (g * g + s2))
            .sum();
        (num / dot(&self.theta, &self.theta)).sqrt()
    }

    /// Log-log slope of `1 − q²` between sizes `n1 < n2` (→ −α for large N).
    pub fn loglog_slope(&self, n1: f64, n2: f64) -> f64 {
        let f = |n: f64| (1.0 - self.q(n).powi(2)).ln();
        (f(n2) - f(n1)) / (n2.ln() - n1.ln())
    }
}

// ---------------------------------------------------------------------------------------------
// T3: adversarial constitutions
// ---------------------------------------------------------------------------------------------

/// T3(a): the dictionary principles with `λ_i ⟨c, d_i⟩ < 0`; an adversarial dictionary
/// constitution exists iff this is non-empty (`C = {i}` gives `a(j_C) = a(d_i)` when λ_i > 0).
pub fn adversarial_principles(m: &LatentModel, columns: &[Vec<f64>], lambda: &[f64]) -> Vec<usize> {
    columns
        .iter()
        .zip(lambda)
        .enumerate()
        .filter(|(_, (d, &l))| l * m.value(d) < 0.0)
        .map(|(i, _)| i)
        .collect()
}

/// T3(b): extremes of `a(P r)` over orthogonal projections P with `P r ≠ 0`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OrthExtremes {
    /// `inf_P a(Pr)`: `−q` if `k_r < 0`, else `−q √(1 − k_r²)` (not attained).
    pub inf: f64,
    /// `sup_P a(Pr)`: `q` if `k_r > 0`, else `q √(1 − k_r²)`.
    pub sup: f64,
    /// `k_r = ⟨w*, r⟩ / (√(w*ᵀ Σ_h w*) √(rᵀ Σ_h⁻¹ r))`.
    pub k_r: f64,
}

/// T3(b) extremes for the raw readout r.
pub fn orth_extremes(m: &LatentModel, r: &[f64]) -> OrthExtremes {
    let ws = m.w_star();
    let rinv = m.sigma_h_chol().solve(r);
    let k_r = dot(ws, r) / (m.var_score(ws).sqrt() * dot(r, &rinv).sqrt());
    let q = m.q();
    let perp = (1.0 - k_r * k_r).max(0.0).sqrt();
    OrthExtremes {
        inf: if k_r < 0.0 { -q } else { -q * perp },
        sup: if k_r > 0.0 { q } else { q * perp },
        k_r,
    }
}

/// T3(b) witness: the rank-1 orthogonal projection onto `v = r − (⟨r,c⟩/|c|²) c − ε c`, which
/// gives `a(P r) < 0` whenever r is not a multiple of c. Returns `None` if `Pr = 0`.
pub fn adversarial_projection(m: &LatentModel, r: &[f64], eps: f64) -> Option<Mat> {
    let c = m.c();
    let cc = dot(c, c);
    let v = add_scaled(&add_scaled(r, -dot(r, c) / cc, c), -eps, c);
    let vv = dot(&v, &v);
    if vv == 0.0 || dot(&v, r).abs() < 1e-14 * vv.sqrt() * dot(r, r).sqrt() {
        return None;
    }
    Some(Mat::from_fn(v.len(), v.len(), |i, k| v[i] * v[k] / vv))
}

// ---------------------------------------------------------------------------------------------
// T4: multi-principle constitutions
// ---------------------------------------------------------------------------------------------

/// T4: the effect of adding `v = ω_k λ_k d_k` to `j_C`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AddPrinciple {
    /// `A = a(j_C)`.
    pub a: f64,
    /// `a_v = a(v)`.
    pub a_v: f64,
    /// `ρ = ρ(j_C, v)`.
    pub rho: f64,
    /// `t = sd(s_v)/sd(s_{j_C})`.
    pub t: f64,
    /// `a(j_C + v) = (A + t a_v)/√(1 + 2ρt + t²)`.
    pub new_alignment: f64,
    /// Helps iff `A + t a_v > 0` and `2A(a_v − ρA) > t(A² − a_v²)`.
    pub helps: bool,
    /// For `ρA < a_v < A`: adding helps iff `t < t_max = 2A(a_v − ρA)/(A² − a_v²)`.
    pub t_max: Option<f64>,
    /// The best weight multiplier on v and the alignment it reaches (Lemma M).
    pub best: MixSup,
}

/// T4 for the current judgment direction `j` and the added component `v`.
pub fn add_principle(m: &LatentModel, j: &[f64], v: &[f64]) -> AddPrinciple {
    let a = m.alignment(j);
    let a_v = m.alignment(v);
    let rho = m.rho(j, v);
    let t = m.sd_score(v) / m.sd_score(j);
    let new_alignment = m.alignment(&add_scaled(j, 1.0, v));
    let helps = a + t * a_v > 0.0 && 2.0 * a * (a_v - rho * a) > t * (a * a - a_v * a_v);
    let t_max = (rho * a < a_v && a_v < a).then(|| 2.0 * a * (a_v - rho * a) / (a * a - a_v * a_v));
    AddPrinciple {
        a,
        a_v,
        rho,
        t,
        new_alignment,
        helps,
        t_max,
        best: mixed_sup(a, a_v, rho),
    }
}

/// T4 general form: with standardised weights `b_i = ω_i λ_i sd(s_{d_i})`, `α_i = a(d_i)`,
/// `R_il = ρ(d_i, d_l)`, `a(j_C) = bᵀα/√(bᵀRb)`; the maximum over real weights is
/// `√(αᵀ R⁻¹ α)`, at `b ∝ R⁻¹ α`. Returns (maximum, the weights ω_i = b_i/(λ_i sd_i)).
/// Components with λ_i = 0 cannot be activated and are left out (weight 0).
pub fn optimal_weights(m: &LatentModel, columns: &[Vec<f64>], lambda: &[f64]) -> (f64, Vec<f64>) {
    let active: Vec<usize> = (0..columns.len()).filter(|&i| lambda[i] != 0.0).collect();
    let n = active.len();
    let alpha: Vec<f64> = active.iter().map(|&i| m.alignment(&columns[i])).collect();
    let r = Mat::from_fn(n, n, |x, y| m.rho(&columns[active[x]], &columns[active[y]]));
    let Ok(ch) = Cholesky::new(&r) else {
        return (f64::NAN, vec![0.0; columns.len()]);
    };
    let b = ch.solve(&alpha);
    let best = dot(&alpha, &b).max(0.0).sqrt();
    let mut w = vec![0.0; columns.len()];
    for (x, &i) in active.iter().enumerate() {
        w[i] = b[x] / (lambda[i] * m.sd_score(&columns[i]));
    }
    (best, w)
}

/// T4 multi-objective truth: if `u* = Σ_k ψ_k u_k`, then `a(w) = Σ_k ψ_k σ_k a_k(w) / σ_ψ`.
/// `objectives` are the θ_k; returns the right-hand side for direction w.
pub fn multi_objective_alignment(
    m: &LatentModel,
    objectives: &[Vec<f64>],
    psi: &[f64],
    w: &[f64],
) -> f64 {
    let theta: Vec<f64> = (0..m.k())
        .map(|l| objectives.iter().zip(psi).map(|(t, p)| p * t[l]).sum())
        .collect();
    let sigma_psi = m.sigma_z().quad(&theta, &theta).sqrt();
    let mut s = 0.0;
    for (t, p) in objectives.iter().zip(psi) {
        let mk = m
            .with_theta(t.clone())
            .expect("objective with non-zero variance");
        s += p * mk.sigma_u() * mk.alignment(w);
    }
    s / sigma_psi
}

// ---------------------------------------------------------------------------------------------
// T6: finite samples
// ---------------------------------------------------------------------------------------------

/// T6: `B(κ) = E[σ'(κX + b_pos)]`, X ~ N(0, 1).
pub fn b_kappa(kappa: f64, b_pos: f64) -> f64 {
    gaussian_expectation(|x| {
        let s = sigmoid(kappa * x + b_pos);
        s * (1.0 - s)
    })
}

/// T6: `A(κ) = E[σ'(κX + b_pos) X²]`.
pub fn a_kappa(kappa: f64, b_pos: f64) -> f64 {
    gaussian_expectation(|x| {
        let s = sigmoid(kappa * x + b_pos);
        s * (1.0 - s) * x * x
    })
}

/// T6: `ψ(n, κ) = (1 + (d − 1)/(n B(κ) κ²))^{−1/2}`, so that `E[a(ŵ)] ≈ a(j) ψ`.
/// Valid when `x = (d − 1)/(n B κ²) ≲ 0.3`.
pub fn psi(n: f64, d: usize, kappa: f64, b_pos: f64) -> f64 {
    let b = b_kappa(kappa, b_pos);
    (1.0 + (d as f64 - 1.0) / (n * b * kappa * kappa)).powf(-0.5)
}

/// T6: pairs per round needed for the fitted reward to beat the default (a(j) > a(g) > 0):
/// `n_min = (d − 1)/(B κ²) · a(g)²/(a(j)² − a(g)²)`. `None` when a(j) ≤ a(g).
pub fn n_min(d: usize, kappa: f64, a_j: f64, a_g: f64, b_pos: f64) -> Option<f64> {
    (a_j > a_g).then(|| {
        (d as f64 - 1.0) / (b_kappa(kappa, b_pos) * kappa * kappa) * a_g * a_g
            / (a_j * a_j - a_g * a_g)
    })
}

// ---------------------------------------------------------------------------------------------
// T7: refusal direction and low-rank safety subspaces
// ---------------------------------------------------------------------------------------------

/// T7(a): the difference of means of classes selected on u* is ∝ c; its alignment is
/// `a(c) = |c|² / (σ_u √(cᵀ Σ_h c)) ≤ q`.
pub fn alignment_of_c(m: &LatentModel) -> f64 {
    m.alignment(m.c())
}

/// T7(a): LDA whitens the mean difference: `Σ_h⁻¹ (mean difference)`, which is ∝ w* when the
/// mean difference is ∝ c.
pub fn lda_direction(m: &LatentModel, mean_difference: &[f64]) -> Vec<f64> {
    m.sigma_h_chol().solve(mean_difference)
}

/// T7(b): the ceiling after projecting the span of `basis` out of h (directional ablation).
///
/// Readouts of `P h` are the w ⊥ span(U), so with `U` orthonormal
/// `q'² σ_u² = cᵀΣ_h⁻¹c − (UᵀΣ_h⁻¹c)ᵀ (UᵀΣ_h⁻¹U)⁻¹ (UᵀΣ_h⁻¹c)`,
/// which equals `c'ᵀ (P Σ_h P)⁺ c'` with `c' = Pc`.
pub fn ceiling_after_ablation(m: &LatentModel, basis: &[Vec<f64>]) -> f64 {
    let u = orthonormalize(basis);
    let ch = m.sigma_h_chol();
    let sc = ch.solve(m.c());
    let su: Vec<Vec<f64>> = u.iter().map(|x| ch.solve(x)).collect();
    let p = u.len();
    let g = Mat::from_fn(p, p, |i, k| dot(&u[i], &su[k]));
    let y: Vec<f64> = u.iter().map(|x| dot(x, &sc)).collect();
    let correction = Cholesky::new(&g)
        .map(|c| dot(&y, &c.solve(&y)))
        .unwrap_or(0.0);
    let q2 = (dot(m.c(), &sc) - correction) / (m.sigma_u() * m.sigma_u());
    q2.max(0.0).sqrt()
}

/// T7(c): the value subspace `V = span{c_k = W Σ_z θ_k}` as an orthonormal basis.
pub fn value_subspace(m: &LatentModel, objectives: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let wsz = m.w().matmul(m.sigma_z());
    orthonormalize(&objectives.iter().map(|t| wsz.matvec(t)).collect::<Vec<_>>())
}

/// T7(c): `Cov(Δh) = C diag(a²) Cᵀ + 2s² I` for contrast pairs whose latent difference is
/// `Δz = Σ_z Θ α`, `α ~ N(0, diag(a_k²))`, with fresh nuisance.
pub fn spiked_covariance(m: &LatentModel, objectives: &[Vec<f64>], a2: &[f64]) -> Mat {
    let wsz = m.w().matmul(m.sigma_z());
    let cs: Vec<Vec<f64>> = objectives.iter().map(|t| wsz.matvec(t)).collect();
    let d = m.d();
    let mut cov = Mat::from_fn(d, d, |i, k| {
        cs.iter().zip(a2).map(|(c, a)| a * c[i] * c[k]).sum()
    });
    cov.add_diag(2.0 * m.s2());
    cov
}

/// Gram–Schmidt (twice) on the given vectors, dropping numerically dependent ones.
pub fn orthonormalize(vectors: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    for v in vectors {
        let mut x = v.clone();
        for _ in 0..2 {
            for u in &out {
                x = add_scaled(&x, -dot(&x, u), u);
            }
        }
        if crate::linalg::norm(&x) > 1e-10 * crate::linalg::norm(v).max(f64::MIN_POSITIVE) {
            out.push(normalized(&x));
        }
    }
    out
}
