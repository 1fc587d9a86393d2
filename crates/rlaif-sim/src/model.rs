//! The latent model of THEORY §2–§3: responses, representations, alignment and the ceiling.
//!
//! A response has latent features `z ~ N(μ₀, Σ_z)` and nuisance `ε ~ N(0, s² I_d)`; its
//! representation is `h = W z + ε` and its true value `u* = ⟨θ*, z⟩`. Everything the theory needs
//! follows from three moments:
//!
//! - `Σ_h = W Σ_z Wᵀ + s² I` (covariance of h),
//! - `c = W Σ_z θ*` (covariance of h with u*),
//! - `σ_u = √(θ*ᵀ Σ_z θ*)` (sd of u*).
//!
//! The alignment of a direction is `a(w) = ⟨c, w⟩ / (σ_u √(wᵀ Σ_h w))`, the ceiling is
//! `q = max_w a(w) = √(cᵀ Σ_h⁻¹ c) / σ_u`, attained at `w* = Σ_h⁻¹ c`, and `a(w) = q ρ(w, w*)`.

use crate::linalg::{dot, Cholesky, Mat, NotPositiveDefinite};

/// Errors building a [`LatentModel`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A parameter has the wrong shape.
    #[error("{field}: {problem}")]
    Shape {
        field: &'static str,
        problem: String,
    },
    /// A parameter holds NaN or ±∞.
    #[error("{field}: contains a non-finite number")]
    NonFinite { field: &'static str },
    /// `s² ≤ 0`.
    #[error("s2: must be > 0, got {0}")]
    NonPositiveS2(f64),
    /// Σ_z is not symmetric positive definite.
    #[error("Sigma_z: not symmetric positive definite ({0})")]
    SigmaZ(String),
    /// θ* has zero variance under Σ_z, so u* is constant and alignment is undefined.
    #[error("theta: θ*ᵀ Σ_z θ* = 0, so the true value u* is constant")]
    ZeroValue,
}

/// The linear latent model with its derived moments precomputed.
#[derive(Clone, Debug)]
pub struct LatentModel {
    w: Mat,
    s2: f64,
    theta: Vec<f64>,
    sigma_z: Mat,
    mu0: Vec<f64>,
    sigma_h: Mat,
    sigma_h_chol: Cholesky,
    sigma_z_chol: Cholesky,
    c: Vec<f64>,
    sigma_u: f64,
    w_star: Vec<f64>,
    q: f64,
}

impl LatentModel {
    /// Builds the model `h = W z + ε` with `W` (`d × k`), `s² > 0`, `θ*` (k), `Σ_z` (k × k SPD)
    /// and `μ₀` (k).
    ///
    /// # Errors
    /// A [`ModelError`] naming the offending parameter.
    pub fn new(
        w: Mat,
        s2: f64,
        theta: Vec<f64>,
        sigma_z: Mat,
        mu0: Vec<f64>,
    ) -> Result<Self, ModelError> {
        let (d, k) = (w.rows(), w.cols());
        if d == 0 || k == 0 {
            return Err(ModelError::Shape {
                field: "W",
                problem: "must be non-empty".into(),
            });
        }
        if !w.is_finite() {
            return Err(ModelError::NonFinite { field: "W" });
        }
        if !s2.is_finite() {
            return Err(ModelError::NonFinite { field: "s2" });
        }
        if s2 <= 0.0 {
            return Err(ModelError::NonPositiveS2(s2));
        }
        check_len("theta", &theta, k)?;
        check_len("mu0", &mu0, k)?;
        if sigma_z.rows() != k || sigma_z.cols() != k {
            return Err(ModelError::Shape {
                field: "Sigma_z",
                problem: format!(
                    "expected {k}×{k}, got {}×{}",
                    sigma_z.rows(),
                    sigma_z.cols()
                ),
            });
        }
        if !sigma_z.is_finite() {
            return Err(ModelError::NonFinite { field: "Sigma_z" });
        }
        if sigma_z.asymmetry() > 1e-9 * sigma_z.max_abs().max(1.0) {
            return Err(ModelError::SigmaZ("not symmetric".into()));
        }
        let sigma_z_chol = Cholesky::new(&sigma_z)
            .map_err(|e: NotPositiveDefinite| ModelError::SigmaZ(e.to_string()))?;
        let wsz = w.matmul(&sigma_z);
        let mut sigma_h = wsz.matmul(&w.transpose());
        sigma_h.add_diag(s2);
        let sigma_h_chol =
            Cholesky::new(&sigma_h).expect("Σ_h = W Σ_z Wᵀ + s² I is SPD when s² > 0");
        let c = wsz.matvec(&theta);
        let var_u = sigma_z.quad(&theta, &theta);
        if var_u <= 0.0 {
            return Err(ModelError::ZeroValue);
        }
        let sigma_u = var_u.sqrt();
        let w_star = sigma_h_chol.solve(&c);
        let q = (dot(&c, &w_star).max(0.0)).sqrt() / sigma_u;
        Ok(Self {
            w,
            s2,
            theta,
            sigma_z,
            mu0,
            sigma_h,
            sigma_h_chol,
            sigma_z_chol,
            c,
            sigma_u,
            w_star,
            q,
        })
    }

    /// Representation width d.
    pub fn d(&self) -> usize {
        self.w.rows()
    }

    /// Number of latent features k.
    pub fn k(&self) -> usize {
        self.w.cols()
    }

    /// The encoding matrix W (`d × k`).
    pub fn w(&self) -> &Mat {
        &self.w
    }

    /// Nuisance variance s².
    pub fn s2(&self) -> f64 {
        self.s2
    }

    /// True value weights θ*.
    pub fn theta(&self) -> &[f64] {
        &self.theta
    }

    /// Feature covariance Σ_z.
    pub fn sigma_z(&self) -> &Mat {
        &self.sigma_z
    }

    /// Cholesky factor of Σ_z.
    pub fn sigma_z_chol(&self) -> &Cholesky {
        &self.sigma_z_chol
    }

    /// Reference feature mean μ₀.
    pub fn mu0(&self) -> &[f64] {
        &self.mu0
    }

    /// `Σ_h = W Σ_z Wᵀ + s² I`.
    pub fn sigma_h(&self) -> &Mat {
        &self.sigma_h
    }

    /// Cholesky factor of Σ_h.
    pub fn sigma_h_chol(&self) -> &Cholesky {
        &self.sigma_h_chol
    }

    /// `c = W Σ_z θ* = Cov(h, u*)`.
    pub fn c(&self) -> &[f64] {
        &self.c
    }

    /// `σ_u = √(θ*ᵀ Σ_z θ*)`.
    pub fn sigma_u(&self) -> f64 {
        self.sigma_u
    }

    /// The optimal readout `w* = Σ_h⁻¹ c`.
    pub fn w_star(&self) -> &[f64] {
        &self.w_star
    }

    /// The ceiling `q = √(cᵀ Σ_h⁻¹ c) / σ_u` (the R of the best linear prediction of u* from h).
    pub fn q(&self) -> f64 {
        self.q
    }

    /// `Var(s_w) = wᵀ Σ_h w`.
    pub fn var_score(&self, w: &[f64]) -> f64 {
        self.sigma_h.quad(w, w)
    }

    /// `sd(s_w)`.
    pub fn sd_score(&self, w: &[f64]) -> f64 {
        self.var_score(w).max(0.0).sqrt()
    }

    /// Alignment `a(w) = ⟨c, w⟩ / (σ_u √(wᵀ Σ_h w))`, with `a(0) = 0`.
    pub fn alignment(&self, w: &[f64]) -> f64 {
        let sd = self.sd_score(w);
        if sd == 0.0 {
            0.0
        } else {
            (dot(&self.c, w) / (self.sigma_u * sd)).clamp(-1.0, 1.0)
        }
    }

    /// Score correlation `ρ(w, v) = wᵀ Σ_h v / (sd(s_w) sd(s_v))` (0 if either is zero).
    pub fn rho(&self, w: &[f64], v: &[f64]) -> f64 {
        let den = self.sd_score(w) * self.sd_score(v);
        if den == 0.0 {
            0.0
        } else {
            (self.sigma_h.quad(w, v) / den).clamp(-1.0, 1.0)
        }
    }

    /// Value gain of the tilted policy π_b: `V(b) = ⟨c, b⟩` (Lemma G).
    pub fn value(&self, b: &[f64]) -> f64 {
        dot(&self.c, b)
    }

    /// KL of π_b from the reference: `K(b) = bᵀ Σ_h b / 2` (Lemma G).
    pub fn kl(&self, b: &[f64]) -> f64 {
        self.var_score(b) / 2.0
    }

    /// The efficiency identity's right-hand side `σ_u A(b) √(2 K(b))`, which equals `V(b)` exactly.
    pub fn value_from_efficiency(&self, b: &[f64]) -> f64 {
        self.sigma_u * self.alignment(b) * (2.0 * self.kl(b)).sqrt()
    }

    /// Mean of the features under π_b: `μ₀ + Σ_z Wᵀ b` (Lemma G).
    pub fn tilted_z_mean(&self, b: &[f64]) -> Vec<f64> {
        let wtb = self.w.t_matvec(b);
        let shift = self.sigma_z.matvec(&wtb);
        self.mu0.iter().zip(shift).map(|(m, s)| m + s).collect()
    }

    /// The canonical readout of a value system θ_i: `normalize(Σ_h⁻¹ W Σ_z θ_i)` (THEORY §5).
    pub fn canonical_readout(&self, theta_i: &[f64]) -> Vec<f64> {
        let ci = self.w.matmul(&self.sigma_z).matvec(theta_i);
        crate::linalg::normalized(&self.sigma_h_chol.solve(&ci))
    }

    /// The same model with a different nuisance variance (used by the capacity model, T2b).
    pub fn with_s2(&self, s2: f64) -> Result<Self, ModelError> {
        Self::new(
            self.w.clone(),
            s2,
            self.theta.clone(),
            self.sigma_z.clone(),
            self.mu0.clone(),
        )
    }

    /// The same model with a different true value θ*.
    pub fn with_theta(&self, theta: Vec<f64>) -> Result<Self, ModelError> {
        Self::new(
            self.w.clone(),
            self.s2,
            theta,
            self.sigma_z.clone(),
            self.mu0.clone(),
        )
    }
}

fn check_len(field: &'static str, v: &[f64], n: usize) -> Result<(), ModelError> {
    if v.len() != n {
        return Err(ModelError::Shape {
            field,
            problem: format!("expected {n} numbers, got {}", v.len()),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(ModelError::NonFinite { field });
    }
    Ok(())
}
