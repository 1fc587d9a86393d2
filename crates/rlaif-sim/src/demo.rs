//! The demo instance of THEORY §8, built from its definition.
//!
//! k = 8, d = 24, `W = U diag(1.2, 1.0, 0.9, 0.8, 1.0, 0.7, 0.6, 0.5)` with U a seeded random
//! 24 × 8 matrix with orthonormal columns, s² = 0.6, Σ_z = I, θ* = e₁ + 0.6 e₂. Value systems
//! (harmless_ethical, helpful_only, harmful_antisocial, style_fluency) are encoded by their
//! canonical readouts, `λ = (0.6, 0.8, 0.5, 0)`, `r = Dλ`, `g = r + 1.2 d_style` scaled to
//! K(g) = 1. The constitution is C_hh = {0} with β set for κ = 2, τ = 2β, n = 1500, T = 10.
//!
//! Every quantity of §8 is invariant to the choice of U (it cancels in Σ_h⁻¹ W), so this
//! instance reproduces the published numbers exactly while being generated, not copied.

use rand::SeedableRng;

use crate::linalg::{random_orthonormal, scaled, Mat};
use crate::model::LatentModel;
use crate::sim::Mode;
use crate::spec::{ConstitutionSpec, Instance, JudgeSpec, ModelFile, RlaifSpec};

/// Names of the demo's value systems, in dictionary order.
pub const SYSTEMS: [&str; 4] = [
    "harmless_ethical",
    "helpful_only",
    "harmful_antisocial",
    "style_fluency",
];

/// The constitutions of P1: (name, principles).
pub const CONSTITUTIONS: [(&str, &[usize]); 5] = [
    ("C_hh", &[0]),
    ("C_helpful", &[1]),
    ("C_adv", &[2]),
    ("C_hh+help", &[0, 1]),
    ("C_all", &[0, 1, 2, 3]),
];

/// Feature gains γ of the demo's W.
pub const GAINS: [f64; 8] = [1.2, 1.0, 0.9, 0.8, 1.0, 0.7, 0.6, 0.5];

/// θ for each value system (8 features).
pub fn system_thetas() -> [Vec<f64>; 4] {
    let e = |pairs: &[(usize, f64)]| {
        let mut v = vec![0.0; 8];
        for &(i, x) in pairs {
            v[i] = x;
        }
        v
    };
    [
        e(&[(0, 1.0), (1, 0.6), (2, 0.3)]),
        e(&[(1, 1.0), (3, 0.8)]),
        e(&[(0, -0.8), (4, 1.0)]),
        e(&[(5, 1.0), (6, 0.5)]),
    ]
}

/// The demo as a model file (the seed fixes U and the Monte Carlo draws).
pub fn demo_model_file() -> ModelFile {
    let (d, k) = (24, 8);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2603_03000);
    let u = random_orthonormal(d, k, &mut rng);
    let w = u.matmul(&Mat::diag(&GAINS));
    let theta = vec![1.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let model = LatentModel::new(
        w.clone(),
        0.6,
        theta.clone(),
        Mat::identity(k),
        vec![0.0; k],
    )
    .expect("demo model is valid");
    let dict: Vec<Vec<f64>> = system_thetas()
        .iter()
        .map(|t| model.canonical_readout(t))
        .collect();
    let lambda = vec![0.6, 0.8, 0.5, 0.0];
    let mut r = vec![0.0; d];
    for (c, l) in dict.iter().zip(&lambda) {
        crate::linalg::axpy(*l, c, &mut r);
    }
    let g_raw = crate::linalg::add_scaled(&r, 1.2, &dict[3]);
    let g = scaled(&g_raw, 2f64.sqrt() / model.sd_score(&g_raw));
    let j = scaled(&dict[0], lambda[0]);
    let beta = 2.0 / (2.0 * model.var_score(&j)).sqrt();
    ModelFile {
        w: w.to_rows(),
        s2: 0.6,
        theta,
        sigma_z: None,
        mu0: None,
        dictionary: Some(dict),
        lambda: Some(lambda),
        r: None,
        g,
        constitution: ConstitutionSpec {
            principles: Some(vec![0]),
            ..Default::default()
        },
        judge: JudgeSpec {
            beta,
            position_bias: 0.0,
        },
        rlaif: RlaifSpec {
            tau: 2.0 * beta,
            pairs: 1500,
            rounds: 10,
            ridge: 1e-3,
            mode: Mode::MonteCarlo,
        },
        seed: 7,
    }
}

/// The validated demo instance.
pub fn demo_instance() -> Instance {
    demo_model_file()
        .validate()
        .expect("demo model file is valid")
}
