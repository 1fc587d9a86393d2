//! Randomised property checks of the theorems (`lvh theory check`): closed forms against
//! identities, against each other and against Monte Carlo, over seeded random instances.

use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::agreement::{agree_deterministic, agree_quadratic, kappa};
use crate::constitution::{Constitution, Dictionary};
use crate::estimate;
use crate::linalg::{add_scaled, dot, random_orthonormal, scaled, sym_eigen, Mat};
use crate::mixing::{mixed_alignment, mixed_sup};
use crate::model::LatentModel;
use crate::sim::{sample_policy, simulate, Mode, SimConfig};
use crate::theorems::*;

/// The outcome of one theorem's checks.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// Short name (e.g. `T1`).
    pub name: &'static str,
    /// What was checked.
    pub claim: &'static str,
    /// Number of random cases.
    pub cases: usize,
    /// True when every case passed.
    pub passed: bool,
    /// The first failure, or a summary.
    pub detail: String,
}

/// A random instance for property checks: model, dictionary, λ, g and a principle subset.
#[derive(Clone, Debug)]
pub struct RandomInstance {
    /// The model.
    pub model: LatentModel,
    /// Dictionary of canonical readouts of random value systems.
    pub dict: Dictionary,
    /// Prevalences λ.
    pub lambda: Vec<f64>,
    /// Raw readout `r = Dλ`.
    pub r: Vec<f64>,
    /// Default generation direction.
    pub g: Vec<f64>,
    /// Judgment direction of a random non-empty principle subset.
    pub j: Vec<f64>,
}

/// Draws a random instance with `d` dims, `k` features and `m` value systems.
pub fn random_instance(rng: &mut ChaCha8Rng, d: usize, k: usize, m: usize) -> RandomInstance {
    loop {
        let w = Mat::from_fn(d, k, |_, _| {
            rng.sample::<f64, _>(StandardNormal) / (k as f64).sqrt()
        });
        let a = Mat::from_fn(k, k, |_, _| rng.sample::<f64, _>(StandardNormal));
        let mut sz = a.matmul(&a.transpose()).scale(1.0 / k as f64);
        sz.add_diag(0.3);
        let theta: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        let mu0: Vec<f64> = (0..k)
            .map(|_| rng.sample::<f64, _>(StandardNormal) * 0.5)
            .collect();
        let s2 = rng.gen_range(0.2..2.0);
        let model = LatentModel::new(w, s2, theta, sz, mu0).expect("random model is valid");
        let cols: Vec<Vec<f64>> = (0..m)
            .map(|_| {
                let t: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
                model.canonical_readout(&t)
            })
            .collect();
        let Ok(dict) = Dictionary::new(cols) else {
            continue;
        };
        let lambda: Vec<f64> = (0..m).map(|_| rng.gen_range(-0.5..1.0)).collect();
        let r = dict.combine(&lambda);
        let noise: Vec<f64> = (0..d)
            .map(|_| rng.sample::<f64, _>(StandardNormal) * 0.3)
            .collect();
        let g = add_scaled(&r, 1.0, &noise);
        let mut idx: Vec<usize> = (0..m).collect();
        idx.shuffle(rng);
        idx.truncate(rng.gen_range(1..=m));
        let j = Constitution::principles(&idx)
            .judgment_direction(Some(&dict), Some(&lambda), None)
            .unwrap();
        if model.sd_score(&j) > 1e-9 && model.sd_score(&g) > 1e-9 {
            return RandomInstance {
                model,
                dict,
                lambda,
                r,
                g,
                j,
            };
        }
    }
}

/// A named monotone transform of u*.
pub type NamedFn = (&'static str, fn(f64) -> f64);

struct Acc {
    name: &'static str,
    claim: &'static str,
    cases: usize,
    failure: Option<String>,
    worst: f64,
}

impl Acc {
    fn new(name: &'static str, claim: &'static str) -> Self {
        Self {
            name,
            claim,
            cases: 0,
            failure: None,
            worst: 0.0,
        }
    }
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        self.cases += 1;
        if !ok && self.failure.is_none() {
            self.failure = Some(msg());
        }
    }
    fn close(&mut self, got: f64, want: f64, tol: f64, what: &str) {
        let err = (got - want).abs();
        self.worst = self.worst.max(err / tol);
        self.check(err <= tol, || {
            format!("{what}: {got} vs {want} (tolerance {tol:e})")
        });
    }
    fn done(self) -> CheckResult {
        let passed = self.failure.is_none();
        let detail = self
            .failure
            .unwrap_or_else(|| format!("worst error {:.2} of tolerance", self.worst));
        CheckResult {
            name: self.name,
            claim: self.claim,
            cases: self.cases,
            passed,
            detail,
        }
    }
}

fn random_vec(rng: &mut ChaCha8Rng, d: usize) -> Vec<f64> {
    (0..d).map(|_| rng.sample(StandardNormal)).collect()
}

/// Runs every check with `instances` random instances per theorem.
pub fn run_all(seed: u64, instances: usize) -> Vec<CheckResult> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let insts: Vec<RandomInstance> = (0..instances)
        .map(|i| {
            let d = [4, 8, 16, 24][i % 4];
            let k = (d / 2).max(2);
            random_instance(&mut rng, d, k, 3.min(d))
        })
        .collect();
    vec![
        check_identities(&insts, &mut rng),
        check_lemma_m(&insts, &mut rng),
        check_t1(&insts, seed),
        check_t2(&insts),
        check_t3(&insts, &mut rng),
        check_t4(&insts, &mut rng),
        check_t5(&insts, seed),
        check_t6(seed),
        check_t7(&insts, seed),
        check_p10(&insts),
    ]
}

fn check_identities(insts: &[RandomInstance], rng: &mut ChaCha8Rng) -> CheckResult {
    let mut acc = Acc::new(
        "§3",
        "efficiency identity V = σ_u A √(2K); a(w) = q ρ(w, w*); |a(w)| ≤ q; a(w*) = q",
    );
    for ri in insts {
        let m = &ri.model;
        for _ in 0..5 {
            let b = random_vec(rng, m.d());
            acc.close(
                m.value_from_efficiency(&b),
                m.value(&b),
                1e-9 * (1.0 + m.value(&b).abs()),
                "V",
            );
            acc.close(
                m.alignment(&b),
                m.q() * m.rho(&b, m.w_star()),
                1e-9,
                "a = qρ",
            );
            acc.check(m.alignment(&b).abs() <= m.q() + 1e-12, || "|a| > q".into());
        }
        acc.close(m.alignment(m.w_star()), m.q(), 1e-9, "a(w*)");
    }
    acc.done()
}

fn check_lemma_m(insts: &[RandomInstance], rng: &mut ChaCha8Rng) -> CheckResult {
    let mut acc = Acc::new("Lemma M", "a(w + ηv) formula, slope sign and supremum");
    for ri in insts {
        let m = &ri.model;
        let (w, v) = (random_vec(rng, m.d()), random_vec(rng, m.d()));
        let (aw, av, rho) = (m.alignment(&w), m.alignment(&v), m.rho(&w, &v));
        let per = m.sd_score(&v) / m.sd_score(&w);
        let mut best = f64::MIN;
        for i in 0..4000 {
            let eta = i as f64 * 0.005;
            let direct = m.alignment(&add_scaled(&w, eta, &v));
            acc.close(
                mixed_alignment(aw, av, rho, eta * per),
                direct,
                1e-9,
                "a(w+ηv)",
            );
            best = best.max(direct);
        }
        let sup = mixed_sup(aw, av, rho);
        acc.check(sup.sup >= best - 1e-9, || {
            format!("sup {} below grid max {best}", sup.sup)
        });
    }
    acc.done()
}

fn check_t1(insts: &[RandomInstance], seed: u64) -> CheckResult {
    let mut acc = Acc::new(
        "T1",
        "ΔV = η⟨c,j⟩; first-step slope; A_t → a(j); budget-matched gain; Monte Carlo RLAIF matches population",
    );
    for (n, ri) in insts.iter().enumerate() {
        let m = &ri.model;
        let (g, j) = (&ri.g, &ri.j);
        let eta = 0.3;
        let tr = population_trajectory(m, g, j, eta, 5);
        for t in 0..5 {
            acc.close(tr.v[t + 1] - tr.v[t], step_value(m, j, eta), 1e-9, "ΔV");
        }
        let h = 1e-6;
        let fd =
            (m.alignment(&add_scaled(g, h, j)) - m.alignment(&add_scaled(g, -h, j))) / (2.0 * h);
        acc.close(
            first_step_slope(m, g, j),
            fd,
            1e-5 * (1.0 + fd.abs()),
            "dA/dη",
        );
        let far = m.alignment(&add_scaled(g, 1e7, j));
        acc.close(far, converged_alignment(m, j), 1e-5, "A_∞");
        // Value of the KL-budget-matched tilt along j, minus the default's value.
        let k0 = m.kl(g);
        let jb = scaled(j, (2.0 * k0 / m.var_score(j)).sqrt());
        acc.close(
            m.value(&jb) - m.value(g),
            budget_matched_gain(m, g, j),
            1e-9,
            "budget-matched gain",
        );
        // Monte Carlo vs population on a few instances: fresh-draw E[u*] tracks V_t.
        if n < 4 {
            let cfg = SimConfig {
                beta: 2.0 / (2.0 * m.var_score(j)).sqrt(),
                b_pos: 0.0,
                tau: 4.0 / (2.0 * m.var_score(j)).sqrt(),
                pairs: 3000,
                rounds: 4,
                ridge: 1e-3,
                mode: Mode::MonteCarlo,
                seed: seed.wrapping_add(n as u64),
                value_draws: 40_000,
            };
            let trace = simulate(m, g, j, &cfg).expect("fit converges");
            for rec in &trace.records {
                let (mc, se) = (rec.mc_value.unwrap(), rec.mc_value_se.unwrap());
                acc.close(mc, rec.v, 4.5 * se, "mc_value vs V");
            }
            let last = trace.records.last().unwrap();
            let pop = trace.population.a.last().unwrap();
            acc.close(last.a, *pop, 0.08, "A_T Monte Carlo vs population");
        }
    }
    acc.done()
}

fn check_t2(insts: &[RandomInstance]) -> CheckResult {
    let mut acc = Acc::new(
        "T2",
        "a(j) ≤ q; q strictly decreasing in s²; ∂q²/∂s² closed form; capacity q(N) increasing",
    );
    for ri in insts {
        let m = &ri.model;
        acc.check(m.alignment(&ri.j) <= m.q() + 1e-12, || "a(j) > q".into());
        let h = 1e-5 * m.s2();
        let up = m.with_s2(m.s2() + h).unwrap().q().powi(2);
        let down = m.with_s2(m.s2() - h).unwrap().q().powi(2);
        acc.check(up < down, || "q not decreasing in s²".into());
        acc.close(
            (up - down) / (2.0 * h),
            dq2_ds2(m),
            1e-4 * (1.0 + dq2_ds2(m).abs()),
            "∂q²/∂s²",
        );
    }
    let cm = CapacityModel {
        theta: vec![1.0, -0.4, 0.7],
        gamma: vec![0.9, 1.3, 0.4],
        s0_2: 2.0,
        n0: 1e6,
        alpha: 0.25,
    };
    let qs: Vec<f64> = (0..12).map(|e| cm.q(10f64.powi(6 + e))).collect();
    acc.check(qs.windows(2).all(|w| w[1] > w[0]), || {
        "q(N) not increasing".into()
    });
    acc.close(cm.loglog_slope(1e20, 1e22), -0.25, 0.01, "log-log slope");
    acc.done()
}

fn check_t3(insts: &[RandomInstance], rng: &mut ChaCha8Rng) -> CheckResult {
    let mut acc = Acc::new(
        "T3",
        "adversarial dictionary principle iff λ_i⟨c,d_i⟩ < 0; orthogonal projections stay within [inf, sup]; witness is adversarial",
    );
    for ri in insts {
        let m = &ri.model;
        let cols = ri.dict.columns();
        let adv = adversarial_principles(m, cols, &ri.lambda);
        for i in 0..cols.len() {
            let j = scaled(&cols[i], ri.lambda[i]);
            let a = m.alignment(&j);
            acc.check((a < 0.0) == adv.contains(&i), || {
                format!("principle {i}: a = {a}, flagged {}", adv.contains(&i))
            });
        }
        let ex = orth_extremes(m, &ri.r);
        for _ in 0..20 {
            let rank = rng.gen_range(1..=m.d());
            let u = random_orthonormal(m.d(), rank, rng);
            let p = u.matmul(&u.transpose());
            let pr = p.matvec(&ri.r);
            if dot(&pr, &pr) < 1e-18 {
                continue;
            }
            acc.check(dot(&pr, &ri.r) > 0.0, || "⟨Pr, r⟩ ≤ 0".into());
            let a = m.alignment(&pr);
            acc.check(a >= ex.inf - 1e-9 && a <= ex.sup + 1e-9, || {
                format!("a(Pr) = {a} outside [{}, {}]", ex.inf, ex.sup)
            });
        }
        if let Some(p) = adversarial_projection(m, &ri.r, 1e-3) {
            acc.check(m.alignment(&p.matvec(&ri.r)) < 0.0, || {
                "witness not adversarial".into()
            });
        }
    }
    acc.done()
}

fn check_t4(insts: &[RandomInstance], rng: &mut ChaCha8Rng) -> CheckResult {
    let mut acc = Acc::new(
        "T4",
        "adding a principle helps iff the T4 condition holds; optimal weights reach √(αᵀR⁻¹α)",
    );
    for ri in insts {
        let m = &ri.model;
        let v = random_vec(rng, m.d());
        let j = if m.alignment(&ri.j) > 0.0 {
            ri.j.clone()
        } else {
            m.w_star().to_vec()
        };
        let ap = add_principle(m, &j, &v);
        acc.check(ap.helps == (ap.new_alignment > ap.a), || {
            format!(
                "helps flag {} but {} vs {}",
                ap.helps, ap.new_alignment, ap.a
            )
        });
        let cols = ri.dict.columns();
        let (best, w) = optimal_weights(m, cols, &ri.lambda);
        let coef: Vec<f64> = w.iter().zip(&ri.lambda).map(|(a, b)| a * b).collect();
        let jbest = ri.dict.combine(&coef);
        if best.is_finite() && coef.iter().any(|c| *c != 0.0) {
            acc.close(m.alignment(&jbest), best, 1e-8, "a(j_opt)");
            for _ in 0..10 {
                let c: Vec<f64> = (0..cols.len())
                    .map(|_| rng.sample(StandardNormal))
                    .collect();
                let coef: Vec<f64> = c
                    .iter()
                    .zip(&ri.lambda)
                    .map(|(a, l)| if *l != 0.0 { *a } else { 0.0 })
                    .collect();
                acc.check(m.alignment(&ri.dict.combine(&coef)) <= best + 1e-9, || {
                    "random weights beat the optimum".into()
                });
            }
        }
    }
    acc.done()
}

fn check_t5(insts: &[RandomInstance], seed: u64) -> CheckResult {
    let mut acc = Acc::new(
        "T5",
        "agreement ½ + arcsin(a)/π for monotone f; quadratic f formula (Monte Carlo)",
    );
    for (n, ri) in insts.iter().take(4).enumerate() {
        let m = &ri.model;
        let resp = sample_policy(m, &ri.g, 200_000, seed, 1000 + n);
        let a = m.alignment(&ri.j);
        let want = agree_deterministic(a);
        let fs: [NamedFn; 3] = [
            ("exp", f64::exp),
            ("cube", |u| u * u * u),
            ("tanh", f64::tanh),
        ];
        for (name, f) in fs {
            let (p, se) = estimate::agreement(&resp, &ri.j, f);
            acc.close(p, want, 4.5 * se, name);
        }
        let mu = dot(m.theta(), &m.tilted_z_mean(&ri.g));
        let mpeak = mu + 0.3 * m.sigma_u();
        let (p, se) = estimate::agreement(&resp, &ri.j, |u| -(u - mpeak).powi(2));
        acc.close(
            p,
            agree_quadratic(a, mpeak, mu, m.sigma_u()),
            4.5 * se,
            "quadratic",
        );
    }
    acc.done()
}

fn check_t6(seed: u64) -> CheckResult {
    let mut acc = Acc::new("T6", "E[a(ŵ)] ≈ a(j) ψ(n, κ) (Monte Carlo, x ≤ 0.2)");
    let inst = whitened_instance(16, 0.8, 0.627);
    let (m, j) = (&inst.0, &inst.1);
    for &n in &[300usize, 1000] {
        let (mean, se) = finite_sample_alignment(m, j, n, 2.0, 60, seed);
        let want = m.alignment(j) * psi(n as f64, 16, 2.0, 0.0);
        acc.close(mean, want, (3.0 * se).max(0.02), &format!("n = {n}"));
    }
    acc.done()
}

fn check_t7(insts: &[RandomInstance], seed: u64) -> CheckResult {
    let mut acc = Acc::new(
        "T7",
        "difference of means ∝ c; LDA ∝ w*; ablating c zeroes q and every judge; spiked covariance spans the value subspace",
    );
    for (n, ri) in insts.iter().enumerate() {
        let m = &ri.model;
        acc.check(alignment_of_c(m) <= m.q() + 1e-12, || "a(c) > q".into());
        let q_abl = ceiling_after_ablation(m, &[m.c().to_vec()]);
        acc.check(q_abl < 1e-6, || format!("q after ablating c = {q_abl}"));
        let chat = crate::linalg::normalized(m.c());
        let pj = add_scaled(&ri.j, -dot(&ri.j, &chat), &chat);
        acc.check(
            m.value(&pj).abs() < 1e-9 * (1.0 + crate::linalg::norm(&ri.j)),
            || "ablated judge still aligned".into(),
        );
        if n < 3 {
            let resp = sample_policy(m, &vec![0.0; m.d()], 200_000, seed, 2000 + n);
            let mut order: Vec<usize> = (0..resp.len()).collect();
            order.sort_by(|&a, &b| resp.u[a].total_cmp(&resp.u[b]));
            let q = resp.len() / 4;
            let mean = |idx: &[usize]| -> Vec<f64> {
                let mut s = vec![0.0; m.d()];
                for &i in idx {
                    crate::linalg::axpy(1.0, resp.h_row(i), &mut s);
                }
                scaled(&s, 1.0 / idx.len() as f64)
            };
            let diff = add_scaled(&mean(&order[resp.len() - q..]), -1.0, &mean(&order[..q]));
            let cos_c = crate::linalg::cosine(&diff, m.c());
            acc.check(cos_c > 0.99, || format!("cos(diff of means, c) = {cos_c}"));
            let lda = lda_direction(m, &diff);
            let cos_w = crate::linalg::cosine(&lda, m.w_star());
            acc.check(cos_w > 0.98, || format!("cos(LDA, w*) = {cos_w}"));
        }
        // Spiked covariance with p = 2 objectives.
        let objectives = vec![
            m.theta().to_vec(),
            (0..m.k()).map(|i| (i as f64).sin()).collect::<Vec<_>>(),
        ];
        let basis = value_subspace(m, &objectives);
        let cov = spiked_covariance(m, &objectives, &[1.5, 0.7]);
        let (vals, vecs) = sym_eigen(&cov);
        let p = basis.len();
        for &v in &vals[p..] {
            acc.close(v, 2.0 * m.s2(), 1e-8, "bulk eigenvalue");
        }
        for i in 0..p {
            let e = vecs.col(i);
            let inside: f64 = basis.iter().map(|b| dot(b, &e).powi(2)).sum();
            acc.close(inside, 1.0, 1e-8, "top eigenvector inside V");
        }
        let q_v = ceiling_after_ablation(m, &basis);
        acc.check(q_v < 1e-6, || format!("q after ablating V = {q_v}"));
    }
    acc.done()
}

fn check_p10(insts: &[RandomInstance]) -> CheckResult {
    let mut acc = Acc::new(
        "P10",
        "a(j_C) ≤ q; first-step sign = sign(a(j) − ρ a(g)); converged A beats a(g) iff a(j) > a(g); ΔV has the sign of a(j)",
    );
    for ri in insts {
        let m = &ri.model;
        let (g, j) = (&ri.g, &ri.j);
        acc.check(m.alignment(j) <= m.q() + 1e-12, || "a(j) > q".into());
        let slope = first_step_slope(m, g, j);
        let cond = m.alignment(j) - m.rho(g, j) * m.alignment(g);
        acc.check(slope.signum() == cond.signum(), || "first-step sign".into());
        let a_inf = m.alignment(&add_scaled(g, 1e8, j));
        acc.check(
            (a_inf > m.alignment(g)) == (m.alignment(j) > m.alignment(g)),
            || "converged ordering".into(),
        );
        acc.check(
            step_value(m, j, 0.1).signum() == m.alignment(j).signum(),
            || "ΔV sign".into(),
        );
    }
    acc.done()
}

/// A whitened instance (W = I, Σ_z = I, θ* = e₁) with ceiling `q` and a judgment direction of
/// alignment `a_j` (used for the finite-sample checks of T6).
pub fn whitened_instance(d: usize, q: f64, a_j: f64) -> (LatentModel, Vec<f64>) {
    let s2 = 1.0 / (q * q) - 1.0;
    let mut theta = vec![0.0; d];
    theta[0] = 1.0;
    let m = LatentModel::new(Mat::identity(d), s2, theta, Mat::identity(d), vec![0.0; d])
        .expect("valid");
    let cos = a_j / q;
    let mut j = vec![0.0; d];
    j[0] = cos;
    j[1] = (1.0 - cos * cos).sqrt();
    (m, j)
}

/// Mean and SE over `reps` of `a(ŵ)` for one round of n pairs labelled at sharpness κ.
pub fn finite_sample_alignment(
    m: &LatentModel,
    j: &[f64],
    n: usize,
    kappa_target: f64,
    reps: usize,
    seed: u64,
) -> (f64, f64) {
    let beta = kappa_target / (2.0 * m.var_score(j)).sqrt();
    debug_assert!((kappa(beta, m.var_score(j)) - kappa_target).abs() < 1e-12);
    let cfg = SimConfig {
        beta,
        b_pos: 0.0,
        tau: 1.0,
        pairs: n,
        rounds: 1,
        ridge: 1e-3,
        mode: Mode::MonteCarlo,
        seed: 0,
        value_draws: 0,
    };
    let zero = vec![0.0; m.d()];
    let vals: Vec<f64> = (0..reps)
        .map(|r| {
            let cfg = SimConfig {
                seed: seed.wrapping_mul(1_000_003).wrapping_add(r as u64),
                ..cfg.clone()
            };
            simulate(m, &zero, j, &cfg).expect("fit").records[1]
                .a_hat
                .unwrap()
        })
        .collect();
    estimate::mean_se(&vals)
}
