//! Pairwise agreement between a judge and the truth (THEORY §4, T5).
//!
//! For iid pairs, `Δs = s_w(y₁) − s_w(y₂)` and `Δu = u*(y₁) − u*(y₂)` are jointly Gaussian with
//! correlation `a = a(w)`, whatever the policy. Hence:
//!
//! - deterministic judge (Sheppard): `P = ½ + arcsin(a)/π`, inverse `a = sin(π(P − ½))`;
//! - Bradley–Terry judge with sharpness `κ = β √(2 Var(s_w))` and position bias `b`:
//!   `P = E_X[σ(κX + b) p(X) + (1 − σ(κX + b))(1 − p(X))]`, `p(X) = Φ(aX / √(1 − a²))`;
//! - probit approximation (λ = √(π/8)): `P ≈ ½ + arcsin(aλκ / √(1 + λ²κ²))/π`.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// The logistic function `σ(x) = 1 / (1 + e^{−x})`, stable for large |x|.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The standard normal CDF Φ, to full double precision (via `erfc`).
#[inline]
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
}

/// The standard normal density φ.
#[inline]
pub fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// Deterministic-judge agreement `½ + arcsin(a)/π` (Sheppard's formula).
pub fn agree_deterministic(a: f64) -> f64 {
    0.5 + a.clamp(-1.0, 1.0).asin() / PI
}

/// Inverse of [`agree_deterministic`]: `a = sin(π(P − ½))` (the `q̂` of MEASURE §3).
pub fn alignment_from_agreement(p: f64) -> f64 {
    (PI * (p - 0.5)).sin()
}

/// Expectation of `f(X)`, X ~ N(0,1), by the rectangle rule on [−12, 12] with step 0.001
/// (the reference rule of THEORY §4).
pub fn gaussian_expectation(f: impl Fn(f64) -> f64) -> f64 {
    const STEP: f64 = 0.001;
    const N: i64 = 12_000;
    let mut s = 0.0;
    for i in -N..=N {
        let x = i as f64 * STEP;
        s += normal_pdf(x) * f(x);
    }
    s * STEP
}

/// Bradley–Terry judge agreement by quadrature (THEORY §4).
///
/// `a` is the judge direction's alignment, `kappa = β √(2 Var(s_w))` its sharpness and `b_pos`
/// the position-bias logit. When |a| = 1, `p(X) = 1[X > 0]` (½ at 0).
pub fn agree_bt(a: f64, kappa: f64, b_pos: f64) -> f64 {
    let a = a.clamp(-1.0, 1.0);
    let p_y = |x: f64| -> f64 {
        if a.abs() >= 1.0 {
            let s = a.signum() * x;
            if s > 0.0 {
                1.0
            } else if s < 0.0 {
                0.0
            } else {
                0.5
            }
        } else {
            normal_cdf(a * x / (1.0 - a * a).sqrt())
        }
    };
    gaussian_expectation(|x| {
        let l = sigmoid(kappa * x + b_pos);
        let p = p_y(x);
        l * p + (1.0 - l) * (1.0 - p)
    })
}

/// Probit approximation of [`agree_bt`] with `b_pos = 0`: `½ + arcsin(aλκ/√(1 + λ²κ²))/π`,
/// λ = √(π/8). Error ≤ 0.005 for |a| ≤ 0.6 and κ ∈ [0.5, 5]; it grows to about 0.0063 at
/// a = 0.8 and 0.0072 at a = 0.9 (κ = 2).
pub fn agree_probit(a: f64, kappa: f64) -> f64 {
    let lam = (PI / 8.0).sqrt();
    let lk = lam * kappa;
    0.5 + (a * lk / (1.0 + lk * lk).sqrt()).clamp(-1.0, 1.0).asin() / PI
}

/// Judge sharpness `κ = β √(2 Var(s_w))`.
pub fn kappa(beta: f64, var_score: f64) -> f64 {
    beta * (2.0 * var_score).sqrt()
}

/// T5(b): agreement of a judge with alignment `a` on the non-monotone value `f(u) = −(u − m)²`,
/// for pairs from a policy under which `u* ~ N(μ, σ_u²)`:
/// `P = ½ + (arcsin(a)/π)(2Φ(√2 (m − μ)/σ_u) − 1)`.
pub fn agree_quadratic(a: f64, m: f64, mu: f64, sigma_u: f64) -> f64 {
    0.5 + (a.clamp(-1.0, 1.0).asin() / PI)
        * (2.0 * normal_cdf(2f64.sqrt() * (m - mu) / sigma_u) - 1.0)
}

/// T5(b): `E_π[f] = −((μ − m)² + σ_u²)` for `f(u) = −(u − m)²`.
pub fn quadratic_expected_value(m: f64, mu: f64, sigma_u: f64) -> f64 {
    -((mu - m).powi(2) + sigma_u * sigma_u)
}

/// T5(b): a step that shifts μ by `dv > 0` improves `E[f]` iff `dv < 2(m − μ)`.
pub fn quadratic_step_improves(dv: f64, m: f64, mu: f64) -> bool {
    dv < 2.0 * (m - mu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheppard_round_trip() {
        for a in [-0.9, -0.3, 0.0, 0.2, 0.8, 1.0] {
            assert!((alignment_from_agreement(agree_deterministic(a)) - a).abs() < 1e-12);
        }
    }

    #[test]
    fn bt_tends_to_sheppard_and_probit_is_close() {
        for a in [-0.8, -0.4, 0.1, 0.5, 0.8, 0.95] {
            assert!((agree_bt(a, 400.0, 0.0) - agree_deterministic(a)).abs() < 2e-3);
        }
        // The probit approximation is within 0.005 for |a| ≤ 0.6; its error grows towards
        // |a| = 1 (0.0063 at a = 0.8, κ = 2; 0.0072 at a = 0.9, κ = 2).
        for a in [-0.6, -0.4, 0.1, 0.5, 0.6] {
            for kappa in [0.5, 1.0, 2.0, 5.0] {
                let (bt, pr) = (agree_bt(a, kappa, 0.0), agree_probit(a, kappa));
                assert!((bt - pr).abs() < 0.005, "a={a} κ={kappa}: {bt} vs {pr}");
            }
        }
    }

    #[test]
    fn normal_cdf_reference_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((normal_cdf(1.959963984540054) - 0.975).abs() < 1e-14);
        assert!((normal_cdf(-8.0) - 6.22096057427178e-16).abs() < 1e-28);
    }
}
