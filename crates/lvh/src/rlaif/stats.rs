//! Pure statistics of the RLAIF loop: best-of-n selection and its KL, the expected maximum of
//! n normals, agreement with human labels and prompt-level bootstrap intervals.

use rand::Rng;
use rlaif_sim::agreement::{gaussian_expectation, normal_cdf};

use crate::judge::stats::{bootstrap_means, mean, win, Interval};

/// `KL(best-of-n ‖ π) ≈ log n − (n − 1)/n` (the standard best-of-n estimate, exact for
/// continuous rewards in the large-vocabulary limit).
pub fn best_of_n_kl(n: usize) -> f64 {
    let n = n.max(1) as f64;
    n.ln() - (n - 1.0) / n
}

/// `e_n = E[max of n iid N(0, 1)] = ∫ x · n φ(x) Φ(x)^{n−1} dx` (the density of the maximum),
/// by THEORY §4's reference quadrature. `e_1 = 0`, `e_2 = 1/√π`.
pub fn expected_max_normal(n: usize) -> f64 {
    let n = n.max(1);
    let k = (n - 1) as i32;
    gaussian_expectation(|x| x * n as f64 * normal_cdf(x).powi(k))
}

/// The index of the largest score; NaN never wins, ties go to the lowest index. `None` for
/// an empty slice or all NaN.
pub fn argmax(scores: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        match best {
            Some(b) if s <= scores[b] => {}
            _ => best = Some(i),
        }
    }
    best
}

/// Sample standard deviation (n − 1); NaN for fewer than two values.
pub fn sd(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// A point estimate with a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// Its 95% interval.
    pub ci: Interval,
}

/// Pairwise agreement of a score with human labels, `P = mean win(s(chosen) − s(rejected))`,
/// with its bootstrap interval over pairs, and `a = sin(π(P − ½))` with the mapped interval.
pub fn human_agreement<R: Rng + ?Sized>(
    chosen: &[f64],
    rejected: &[f64],
    resamples: usize,
    rng: &mut R,
) -> (Estimate, Estimate) {
    let wins: Vec<f64> = chosen
        .iter()
        .zip(rejected)
        .map(|(c, r)| win(c - r))
        .collect();
    let p = mean(&wins);
    let ci = bootstrap_means(&[&wins], resamples, rng)[0];
    let a = crate::judge::stats::agreement_coefficient;
    (
        Estimate { value: p, ci },
        Estimate {
            value: a(p),
            ci: ci.map(a),
        },
    )
}

/// The mean of per-prompt values with its bootstrap interval over prompts.
pub fn prompt_mean<R: Rng + ?Sized>(per_prompt: &[f64], resamples: usize, rng: &mut R) -> Estimate {
    Estimate {
        value: mean(per_prompt),
        ci: bootstrap_means(&[per_prompt], resamples, rng)[0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn expected_maximum_matches_closed_forms_and_simulation() {
        assert!(expected_max_normal(1).abs() < 1e-9);
        let e2 = 1.0 / std::f64::consts::PI.sqrt();
        assert!((expected_max_normal(2) - e2).abs() < 1e-6);
        // e_3 = 3/(2√π).
        assert!((expected_max_normal(3) - 1.5 * e2).abs() < 1e-6);
        // Monte Carlo for n = 4 (reference 1.029375).
        assert!((expected_max_normal(4) - 1.029_375).abs() < 1e-5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let reps = 200_000;
        let mut acc = 0.0;
        for _ in 0..reps {
            // Box–Muller normals.
            let m = (0..4)
                .map(|_| {
                    let (u1, u2): (f64, f64) = (rng.gen(), rng.gen());
                    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                })
                .fold(f64::NEG_INFINITY, f64::max);
            acc += m;
        }
        assert!((acc / reps as f64 - expected_max_normal(4)).abs() < 0.01);
    }

    #[test]
    fn best_of_n_kl_and_argmax() {
        assert_eq!(best_of_n_kl(1), 0.0);
        assert!((best_of_n_kl(4) - (4f64.ln() - 0.75)).abs() < 1e-15);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f64::NAN]), Some(1));
        assert_eq!(argmax(&[f64::NAN, -1.0]), Some(1));
        assert_eq!(argmax(&[f64::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn human_agreement_counts_wins_and_maps_to_alignment() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let (p, a) = human_agreement(&[1.0, 2.0, 0.0, 5.0], &[0.0, 3.0, 0.0, 1.0], 200, &mut rng);
        assert!((p.value - 0.625).abs() < 1e-12);
        assert!((a.value - (std::f64::consts::PI * 0.125).sin()).abs() < 1e-12);
        assert!(p.ci.lo <= p.value && p.value <= p.ci.hi);
        assert!((sd(&[1.0, 3.0]) - 2f64.sqrt()).abs() < 1e-12);
    }
}
