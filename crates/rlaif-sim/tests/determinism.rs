//! The Monte Carlo simulator is bit-deterministic for any number of threads, and its sampler
//! draws exactly the responses of THEORY §7 step 1–3.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rlaif_sim::agreement::sigmoid;
use rlaif_sim::linalg::{dot, Mat};
use rlaif_sim::model::LatentModel;
use rlaif_sim::rng::CounterStream;
use rlaif_sim::sim::{
    sample_labelled_pairs, simulate, stream_id, Mode, SimConfig, PAIRS_PER_BLOCK,
};

/// A model with a non-trivial Σ_z and μ₀, width d and k latent features.
fn model(d: usize, k: usize, seed: u64) -> (LatentModel, Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = || -> f64 { rng.sample(StandardNormal) };
    let w = Mat::from_fn(d, k, |_, _| normal() / (k as f64).sqrt());
    let a = Mat::from_fn(k, k, |_, _| normal() * 0.3);
    let mut sigma_z = a.matmul(&a.transpose());
    sigma_z.add_diag(0.5);
    let sigma_z = Mat::from_fn(k, k, |i, j| 0.5 * (sigma_z.get(i, j) + sigma_z.get(j, i)));
    let theta: Vec<f64> = (0..k).map(|_| normal()).collect();
    let mu0: Vec<f64> = (0..k).map(|_| normal()).collect();
    let j: Vec<f64> = (0..d).map(|_| normal() / (d as f64).sqrt()).collect();
    let g: Vec<f64> = (0..d).map(|_| 0.1 * normal()).collect();
    let m = LatentModel::new(w, 0.7, theta, sigma_z, mu0).unwrap();
    (m, j, g)
}

fn config(pairs: usize, rounds: usize) -> SimConfig {
    SimConfig {
        beta: 1.3,
        b_pos: 0.2,
        tau: 2.0,
        pairs,
        rounds,
        ridge: 1e-3,
        mode: Mode::MonteCarlo,
        seed: 77,
        value_draws: 500,
    }
}

fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn simulation_is_bit_identical_for_1_2_and_3_threads() {
    // 3000 pairs: several sampling blocks and fit chunks, above the fit's parallel threshold.
    let (m, j, g) = model(24, 6, 1);
    let cfg = config(3000, 3);
    let one = with_threads(1, || simulate(&m, &g, &j, &cfg).unwrap());
    let two = with_threads(2, || simulate(&m, &g, &j, &cfg).unwrap());
    let three = with_threads(3, || simulate(&m, &g, &j, &cfg).unwrap());
    assert_eq!(one, two);
    assert_eq!(one, three);
    // The run did something: the policy moved and every round fitted.
    let last = one.records.last().unwrap();
    assert!(last.k > one.records[0].k);
    assert!(one.records[1..]
        .iter()
        .all(|r| r.newton_iterations.unwrap() >= 3));
    // A different seed gives a different run.
    let other = with_threads(2, || {
        simulate(
            &m,
            &g,
            &j,
            &SimConfig {
                seed: 78,
                ..cfg.clone()
            },
        )
        .unwrap()
    });
    assert_ne!(one.records[1].a_hat, other.records[1].a_hat);
}

#[test]
fn sampled_pairs_are_bit_identical_for_any_thread_count() {
    let (m, j, _) = model(64, 16, 2);
    let cfg = config(2 * PAIRS_PER_BLOCK + 17, 1);
    let run = |threads| {
        with_threads(threads, || {
            let mut dh = vec![0.0; cfg.pairs * m.d()];
            let mut labels = vec![0.0; cfg.pairs];
            sample_labelled_pairs(&m, &j, &cfg, 1, &mut dh, &mut labels);
            (dh, labels)
        })
    };
    let (a, b) = (run(1), run(2));
    assert!(a
        .0
        .iter()
        .zip(&b.0)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(a.1, b.1);
}

/// The sampler against a direct, one-response-at-a-time transcription of THEORY §7 steps 1–3
/// from the same streams, read one number at a time with the scalar references
/// `normal_at` / `uniform_at` in the documented layout: `z = μ₀ + Σ_z Wᵀ b + L ξ`,
/// `ε = s² b + s ζ`, `h = W z + ε`, `Δh = h₁ − h₂`, `ℓ ~ Bernoulli(σ(β⟨j, Δh⟩ + b_pos))`.
#[test]
fn sampler_matches_a_direct_transcription_of_section_7() {
    for (d, k) in [(5, 3), (40, 10)] {
        let (m, j, b) = model(d, k, 3);
        let round = 4;
        let cfg = config(PAIRS_PER_BLOCK + 9, 1);
        let mut dh = vec![0.0; cfg.pairs * d];
        let mut labels = vec![0.0; cfg.pairs];
        sample_labelled_pairs(&m, &j, &cfg, round, &mut dh, &mut labels);

        let sz_wt_b = m.sigma_z().matvec(&m.w().t_matvec(&b));
        let l = m.sigma_z_chol().l();
        let s = m.s2().sqrt();
        // One response from ξ_a = normal xi0 + a·step, ζ_c = normal zeta0 + c·step of the
        // stream (a block's draws are feature-major: step = the block's pairs).
        let respond = |rng: &CounterStream, xi0: u64, zeta0: u64, step: u64| -> Vec<f64> {
            let xi: Vec<f64> = (0..k as u64)
                .map(|a| rng.normal_at(xi0 + a * step))
                .collect();
            let lxi = l.matvec(&xi);
            let z: Vec<f64> = (0..k).map(|i| m.mu0()[i] + sz_wt_b[i] + lxi[i]).collect();
            let wz = m.w().matvec(&z);
            (0..d)
                .map(|i| wz[i] + m.s2() * b[i] + s * rng.normal_at(zeta0 + i as u64 * step))
                .collect()
        };
        let mut mismatched_labels = 0;
        for i in 0..cfg.pairs {
            let block = i / PAIRS_PER_BLOCK;
            let t = (i % PAIRS_PER_BLOCK) as u64;
            let rows = PAIRS_PER_BLOCK.min(cfg.pairs - block * PAIRS_PER_BLOCK) as u64;
            let (k64, d64) = (k as u64, d as u64);
            let (rk, rd) = (rows * k64, rows * d64);
            let rng = CounterStream::new(cfg.seed, stream_id(round, 0, block));
            let h1 = respond(&rng, t, 2 * rk + t, rows);
            let h2 = respond(&rng, rk + t, 2 * rk + rd + t, rows);
            let want: Vec<f64> = h1.iter().zip(&h2).map(|(a, c)| a - c).collect();
            let got = &dh[i * d..(i + 1) * d];
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-9 * (1.0 + w.abs()),
                    "pair {i}: {g} vs {w}"
                );
            }
            let p = sigmoid(cfg.beta * dot(&j, &want) + cfg.b_pos);
            let first_uniform = (2 * (rk + rd)).div_ceil(16) * 16;
            let label = if rng.uniform_at(first_uniform + t) < p {
                1.0
            } else {
                0.0
            };
            if label != labels[i] {
                mismatched_labels += 1;
            }
        }
        // A label can only differ if u lands within rounding of p.
        assert_eq!(mismatched_labels, 0);
    }
}

/// Small rounds run whole and in parallel (each thread samples and fits its own rounds); the
/// run must be exactly the sequential loop of THEORY §7 (sample round t, fit it, move b by
/// ŵ_t/τ), bit for bit, for any number of threads. A round's pairs do not depend on the
/// policy, which is what makes the rounds independent.
#[test]
fn parallel_rounds_are_the_sequential_loop() {
    let (m, j, g) = model(16, 4, 5);
    let cfg = SimConfig {
        value_draws: 0,
        ..config(700, 7)
    };
    let mut b = g.clone();
    let mut want = Vec::new();
    for t in 1..=cfg.rounds {
        let mut dh = vec![0.0; cfg.pairs * m.d()];
        let mut labels = vec![0.0; cfg.pairs];
        sample_labelled_pairs(&m, &j, &cfg, t, &mut dh, &mut labels);
        let f = rlaif_sim::logistic::fit(&dh, m.d(), &labels, cfg.ridge).unwrap();
        for (bi, wi) in b.iter_mut().zip(&f.w) {
            *bi += wi / cfg.tau;
        }
        want.push((f.w, f.iterations, m.value(&b)));
    }
    for threads in [1, 2, 3] {
        let run = with_threads(threads, || simulate(&m, &g, &j, &cfg).unwrap());
        for (r, (w, iters, v)) in run.records[1..].iter().zip(&want) {
            assert_eq!(r.newton_iterations, Some(*iters), "{threads} threads");
            assert_eq!(r.a_hat, Some(m.alignment(w)), "{threads} threads");
            assert_eq!(r.v.to_bits(), v.to_bits(), "{threads} threads");
        }
    }
}

/// A round as `simulate` runs it (narrow rows sampled straight into the fit's feature-major
/// layout) is the public sampler's rows fitted by `logistic::fit`, bit for bit, whatever the
/// tails: partial vectors of pairs, partial sampling blocks and fit chunks, one pair; on one
/// thread and on a crew of three.
#[test]
fn a_round_is_the_sampled_rows_fitted() {
    use rlaif_sim::crew::Crew;
    use rlaif_sim::sim::monte_carlo_round;
    for (d, k) in [(5, 2), (16, 4), (24, 20), (40, 6)] {
        let (m, j, _) = model(d, k, 6);
        for n in [1, 7, 255, 256, 513, 1100] {
            let cfg = config(n, 1);
            let mut dh = vec![0.0; n * d];
            let mut labels = vec![0.0; n];
            sample_labelled_pairs(&m, &j, &cfg, 3, &mut dh, &mut labels);
            let want = rlaif_sim::logistic::fit(&dh, d, &labels, cfg.ridge)
                .unwrap_or_else(|e| panic!("d={d} n={n}: {e} {labels:?}"));
            let serial = monte_carlo_round(&Crew::serial(), &m, &j, &cfg, 3).unwrap();
            let crew = with_threads(3, || {
                Crew::scope(|crew| monte_carlo_round(crew, &m, &j, &cfg, 3).unwrap())
            });
            for got in [serial, crew] {
                assert_eq!(got.iterations, want.iterations, "d={d} n={n}");
                assert_eq!(
                    got.intercept.to_bits(),
                    want.intercept.to_bits(),
                    "d={d} n={n}"
                );
                assert!(
                    got.w
                        .iter()
                        .zip(&want.w)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "d={d} n={n}"
                );
            }
        }
    }
}
