//! Low-rank value subspaces (THEORY T7c): spiked covariance recovered, principal angles.

mod common;

use common::{dot, normal, random_orthogonal};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use value_directions::subspace::pca;
use value_directions::{ContrastSet, DifferenceSource, Differences, Error, Subspace};

/// `Δh = C α + √2 s ξ`, `α ~ N(0, diag(a²))`: `Cov(Δh) = C diag(a²) Cᵀ + 2s² I`.
fn spiked(
    d: usize,
    m: usize,
    c: &[Vec<f64>],
    a: &[f64],
    s: f64,
    rng: &mut ChaCha8Rng,
) -> Differences {
    let mut data = Vec::with_capacity(m * d);
    for _ in 0..m {
        let mut row: Vec<f64> = (0..d)
            .map(|_| std::f64::consts::SQRT_2 * s * normal(rng))
            .collect();
        for (ck, ak) in c.iter().zip(a) {
            let alpha = ak * normal(rng);
            row.iter_mut().zip(ck).for_each(|(r, x)| *r += alpha * x);
        }
        data.extend(row);
    }
    Differences::from_flat(data, d).unwrap()
}

#[test]
fn spiked_covariance_subspace_and_spectrum_are_recovered() {
    for (d, m, seed) in [(16, 20_000, 1u64), (64, 20_000, 2), (576, 20_000, 3)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let p = 3;
        // Orthonormal C so the population spikes are a_k² + 2s² exactly.
        let q = random_orthogonal(d, &mut rng);
        let c: Vec<Vec<f64>> = q[..p].to_vec();
        let a = [3.0, 2.0, 1.5];
        let s = 1.0;
        let diffs = spiked(d, m, &c, &a, s, &mut rng);
        for centre in [false, true] {
            let fit = pca(&diffs, p, centre).unwrap();
            let truth = Subspace::from_vectors(&c).unwrap();
            let angles = fit.subspace.principal_angles(&truth).unwrap();
            let ev = &fit.spectrum.eigenvalues;
            eprintln!(
                "d = {d}, m = {m}, centre = {centre}: angles = {angles:.4?}, top = {:.3?}, \
                 bulk mean = {:.4}, bulk range = [{:.3}, {:.3}], EV(3) = {:.4}",
                &ev[..p],
                ev[p..].iter().sum::<f64>() / (d - p) as f64,
                ev[d - 1],
                ev[p],
                fit.spectrum.explained_variance(p)
            );
            assert_eq!(ev.len(), d);
            // First-order perturbation theory for the weakest spike λ_p over a bulk 2s²:
            // E sin²θ ≈ ((d − p)/m) · λ_p 2s² / (λ_p − 2s²)². Allow twice that angle.
            let lp = a[p - 1] * a[p - 1] + 2.0 * s * s;
            let bound = 2.0
                * ((d - p) as f64 / m as f64 * lp * 2.0 * s * s / (lp - 2.0 * s * s).powi(2))
                    .sqrt();
            assert!(
                angles.iter().all(|&t| t < bound),
                "angles {angles:?}, bound {bound}"
            );
            // Sample spikes are biased up (spiked-model asymptotics, γ = d/m, bulk σ² = 2s²):
            // λ̂ ≈ λ (1 + γ σ² / (λ − σ²)).
            let gamma = d as f64 / m as f64;
            for (k, ak) in a.iter().enumerate() {
                let lambda = ak * ak + 2.0 * s * s;
                let want = lambda * (1.0 + gamma * 2.0 * s * s / (lambda - 2.0 * s * s));
                assert!(
                    (ev[k] - want).abs() < 0.05 * want,
                    "spike {k}: {} vs {want}",
                    ev[k]
                );
            }
            // Bulk = 2s², spread by Marchenko–Pastur: 2s²(1 ± √(d/m))².
            let r = (d as f64 / m as f64).sqrt();
            let bulk_mean = ev[p..].iter().sum::<f64>() / (d - p) as f64;
            assert!(
                (bulk_mean - 2.0).abs() < 0.02 * 2.0,
                "bulk mean {bulk_mean}"
            );
            assert!(
                ev[p] < 2.0 * (1.0 + r).powi(2) * 1.03,
                "top of bulk {}",
                ev[p]
            );
            assert!(
                ev[d - 1] > 2.0 * (1.0 - r).powi(2) * 0.97,
                "bottom of bulk {}",
                ev[d - 1]
            );
            let spikes: f64 = a.iter().map(|x| x * x + 2.0).sum();
            let ev_want = spikes / (spikes + 2.0 * (d - p) as f64);
            let ev_got = fit.spectrum.explained_variance(p);
            assert!((ev_got - ev_want).abs() < 0.02, "{ev_got} vs {ev_want}");
            assert!(fit.spectrum.explained_variance(d) > 1.0 - 1e-12);
            assert_eq!(fit.spectrum.explained_variance(0), 0.0);
        }
    }
}

/// When there are fewer differences than dimensions the m × m Gram matrix is used; its
/// eigenpairs must satisfy `S v = λ v` for the explicit `S = (1/m) Σ Δ Δᵀ`.
#[test]
fn gram_path_gives_true_eigenpairs_of_the_second_moment() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (d, m, k) = (100, 40, 5);
    let data: Vec<f64> = (0..m * d).map(|_| normal(&mut rng)).collect();
    let diffs = Differences::from_flat(data.clone(), d).unwrap();
    let fit = pca(&diffs, k, false).unwrap();
    let s_times = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; d];
        for row in data.chunks(d) {
            let c = dot(row, v) / m as f64;
            out.iter_mut().zip(row).for_each(|(o, r)| *o += c * r);
        }
        out
    };
    let trace: f64 = data.iter().map(|x| x * x).sum::<f64>() / m as f64;
    assert!((fit.spectrum.total() - trace).abs() < 1e-9 * trace);
    assert!(fit.spectrum.eigenvalues[m..].iter().all(|&l| l == 0.0));
    for i in 0..k {
        let v = fit.subspace.basis_vector(i);
        let sv = s_times(v);
        let lambda = fit.spectrum.eigenvalues[i];
        let resid: f64 = sv
            .iter()
            .zip(v)
            .map(|(a, b)| (a - lambda * b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(resid < 1e-9 * lambda, "eigenpair {i}: residual {resid}");
        assert!((dot(v, v) - 1.0).abs() < 1e-12);
    }
}

#[test]
fn principal_angles_match_a_constructed_pair_of_planes() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let d = 10;
    let q = random_orthogonal(d, &mut rng);
    let (t1, t2) = (0.3f64, 1.1f64);
    let comb = |a: &[f64], b: &[f64], t: f64| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(x, y)| t.cos() * x + t.sin() * y)
            .collect()
    };
    let s1 = Subspace::from_vectors(&[q[0].clone(), q[1].clone()]).unwrap();
    let s2 = Subspace::from_vectors(&[comb(&q[1], &q[3], t2), comb(&q[0], &q[2], t1)]).unwrap();
    let angles = s1.principal_angles(&s2).unwrap();
    assert!(
        (angles[0] - t1).abs() < 1e-10 && (angles[1] - t2).abs() < 1e-10,
        "{angles:?}"
    );
    // Symmetric; a subspace has zero angles with itself; a line inside a plane has angle 0.
    let back = s2.principal_angles(&s1).unwrap();
    assert!((back[0] - t1).abs() < 1e-10 && (back[1] - t2).abs() < 1e-10);
    assert!(s1.principal_angles(&s1).unwrap().iter().all(|&a| a < 1e-7));
    let line = Subspace::from_vectors(&[comb(&q[0], &q[1], 0.7)]).unwrap();
    let a = line.principal_angles(&s1).unwrap();
    assert_eq!(a.len(), 1);
    assert!(a[0] < 1e-7);
}

#[test]
fn projection_ablation_and_fraction_inside() {
    let s = Subspace::from_vectors(&[vec![1.0, 1.0, 0.0, 0.0], vec![1.0, 0.0, 0.0, 0.0]]).unwrap();
    // Span is {e1, e2}.
    let x = [3.0, -2.0, 1.0, 5.0];
    assert_eq!(s.k(), 2);
    let p = s.project(&x).unwrap();
    let r = s.ablate(&x).unwrap();
    for (i, want) in [3.0, -2.0, 0.0, 0.0].iter().enumerate() {
        assert!((p[i] - want).abs() < 1e-12);
        assert!((r[i] - (x[i] - want)).abs() < 1e-12);
    }
    let f = s.fraction_inside(&x).unwrap();
    assert!((f - 13.0 / 39.0).abs() < 1e-12);
    assert!(matches!(
        s.fraction_inside(&[0.0; 4]),
        Err(Error::ZeroVector { .. })
    ));
    assert!(matches!(
        s.project(&[1.0; 3]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        Subspace::from_vectors(&[vec![1.0, 0.0], vec![2.0, 0.0]]),
        Err(Error::RankDeficient { index: 1 })
    ));
    assert!(s.truncate(3).is_err());
    assert_eq!(s.truncate(1).unwrap().k(), 1);
}

#[test]
fn class_conditional_differences_and_pair_errors() {
    let rows = vec![
        vec![2.0f32, 0.0],
        vec![4.0, 0.0],
        vec![0.0, 1.0],
        vec![0.0, 3.0],
    ];
    let set = ContrastSet::new(rows, vec![true, true, false, false]).unwrap();
    let diffs = Differences::of_set(&set, DifferenceSource::ClassConditional).unwrap();
    // mean(+) = (3, 0), mean(−) = (0, 2).
    assert_eq!(diffs.m(), 4);
    assert_eq!(diffs.row(0), &[2.0, -2.0]);
    assert_eq!(diffs.row(1), &[4.0, -2.0]);
    assert_eq!(diffs.row(2), &[3.0, -1.0]);
    assert_eq!(diffs.row(3), &[3.0, -3.0]);
    assert!(matches!(
        Differences::of_set(&set, DifferenceSource::Paired),
        Err(Error::BadPair { .. })
    ));
    // Falls back to class-conditional without pairs.
    assert_eq!(
        Differences::of_set(&set, DifferenceSource::PairedOrClass).unwrap(),
        diffs
    );
    assert!(pca(&diffs, 3, false).is_err());
}

#[test]
fn subspace_serde_round_trip_is_exact_and_validated() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let q = random_orthogonal(7, &mut rng);
    let s = Subspace::from_vectors(&q[..3]).unwrap();
    let json = serde_json::to_string(&s).unwrap();
    let back: Subspace = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let bad = r#"{"d": 2, "basis": [[1.0, 0.0], [1.0, 0.0]]}"#;
    assert!(serde_json::from_str::<Subspace>(bad).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// P is idempotent and symmetric, P + (I − P) = I, and ‖Px‖² + ‖(I−P)x‖² = ‖x‖².
    #[test]
    fn projection_identities(seed in 0u64..10_000, d in 2usize..12, kk in 1usize..6) {
        let k = kk.min(d);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vs: Vec<Vec<f64>> = (0..k).map(|_| (0..d).map(|_| normal(&mut rng)).collect()).collect();
        let s = Subspace::from_vectors(&vs).unwrap();
        let x: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
        let y: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
        let px = s.project(&x).unwrap();
        let ppx = s.project(&px).unwrap();
        let rx = s.ablate(&x).unwrap();
        for i in 0..d {
            prop_assert!((px[i] - ppx[i]).abs() < 1e-9);
            prop_assert!((px[i] + rx[i] - x[i]).abs() < 1e-9);
        }
        let py = s.project(&y).unwrap();
        prop_assert!((dot(&px, &y) - dot(&x, &py)).abs() < 1e-9);
        let f = s.fraction_inside(&x).unwrap();
        prop_assert!((f - dot(&px, &px) / dot(&x, &x)).abs() < 1e-9);
        prop_assert!((dot(&px, &px) + dot(&rx, &rx) - dot(&x, &x)).abs() < 1e-9 * dot(&x, &x));
        for v in &vs {
            prop_assert!(s.fraction_inside(v).unwrap() > 1.0 - 1e-9);
        }
    }
}
