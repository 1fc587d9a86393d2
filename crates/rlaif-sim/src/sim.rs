//! The RLAIF simulator of THEORY §7, in Monte Carlo and population modes.
//!
//! Set `b ← g` and record round 0. Then for t = 1..T:
//! 1. sample 2n responses from π_b: `z = μ₀ + Σ_z Wᵀ b + L ξ`, `ε = s² b + s ζ`,
//!    `h = W z + ε`;
//! 2. pair them consecutively, `Δh_i = h_{2i} − h_{2i+1}`;
//! 3. label `ℓ_i ~ Bernoulli(σ(β ⟨j, Δh_i⟩ + b_pos))`;
//! 4. fit the ridge logistic regression of [`crate::logistic`] → ŵ;
//! 5. update `b ← b + ŵ/τ` (never renormalised: its norm is the KL budget spent);
//! 6. record `V_t = ⟨c, b⟩`, `K_t = bᵀΣ_h b/2`, `A_t = a(b)`, `a(ŵ_t)`, `P_agree(ŵ_t)` and, as a
//!    self-check, the Monte Carlo mean of u* over fresh draws from π_b minus `⟨θ*, μ₀⟩`, which
//!    must match `V_t` within sampling error.
//!
//! Population mode replaces steps 1–4 with `ŵ = βj`.
//!
//! The policy's mean shift `W Σ_z Wᵀ b + s² b` is the same for both responses of a pair, so
//! `Δh = W L (ξ₁ − ξ₂) + s (ζ₁ − ζ₂)` and the labels do not depend on b: steps 1–4 of round t
//! depend only on the seed and t. [`simulate`] uses this to fit the rounds of a small run in
//! parallel, each thread sampling and fitting whole rounds, and then applies steps 5–6 in round
//! order: the same numbers as the loop above, bit for bit.
//!
//! Randomness: every block of [`PAIRS_PER_BLOCK`] pairs draws from its own counter-based
//! stream ([`CounterStream`], SplitMix64 keyed by (seed, round, block), filled eight words at a
//! time), and blocks are written to fixed slots, so a run is bit-identical whatever the number
//! of threads (and the instruction set). The `mc_value` self-check and [`sample_policy`] draw
//! from ChaCha8 streams keyed the same way.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::Serialize;

use crate::agreement::agree_deterministic;
use crate::crew::Crew;
use crate::linalg::{axpy, dot, scaled};
use crate::logistic::{self, FitError};
use crate::model::LatentModel;
use crate::rng::{CounterStream, NORMAL_GROUP};
use crate::theorems::{population_trajectory, Trajectory};

/// Pairs per random stream / parallel work item.
pub const PAIRS_PER_BLOCK: usize = 256;

/// How the reward model of each round is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `ŵ = βj` (n → ∞).
    Population,
    /// Sample, label and fit n pairs per round.
    MonteCarlo,
}

/// Judge and RLAIF settings of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimConfig {
    /// Judge inverse temperature β ≥ 0.
    pub beta: f64,
    /// Position-bias logit b_pos.
    pub b_pos: f64,
    /// KL temperature τ > 0 (η = β/τ).
    pub tau: f64,
    /// Preference pairs per round n.
    pub pairs: usize,
    /// Rounds T.
    pub rounds: usize,
    /// Ridge ρ_r of the reward fit.
    pub ridge: f64,
    /// Population or Monte Carlo.
    pub mode: Mode,
    /// Seed of every random draw.
    pub seed: u64,
    /// Fresh responses per round for the `mc_value` self-check (0 disables it).
    pub value_draws: usize,
}

/// One round's record (round 0 is the default policy).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundRecord {
    /// Round index t.
    pub round: usize,
    /// `V_t = ⟨c, b_t⟩`.
    #[serde(rename = "V")]
    pub v: f64,
    /// `K_t = b_tᵀ Σ_h b_t / 2`.
    #[serde(rename = "K")]
    pub k: f64,
    /// `A_t = a(b_t)`.
    #[serde(rename = "A")]
    pub a: f64,
    /// `a(ŵ_t)` (None at round 0).
    pub a_hat: Option<f64>,
    /// `½ + arcsin(a(ŵ_t))/π` (None at round 0).
    pub agree_hat: Option<f64>,
    /// Monte Carlo mean of u* under π_{b_t} minus the reference mean.
    pub mc_value: Option<f64>,
    /// Its standard error.
    pub mc_value_se: Option<f64>,
    /// Newton iterations of this round's fit (Monte Carlo mode).
    pub newton_iterations: Option<usize>,
}

/// A full simulation: the records and the population prediction for the same (g, j, η, T).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimTrace {
    /// Settings used.
    pub config: SimConfig,
    /// `η = β/τ`.
    pub eta: f64,
    /// Rounds 0..T.
    pub records: Vec<RoundRecord>,
    /// The closed-form population trajectory (T1) for comparison.
    pub population: Trajectory,
}

/// Runs RLAIF from the default tilt `g` with judgment direction `j` (module docs: the rounds'
/// reward models are fitted in parallel, then the policy moves round by round).
///
/// # Errors
/// [`FitError`] if a round's logistic fit fails.
pub fn simulate(
    m: &LatentModel,
    g: &[f64],
    j: &[f64],
    cfg: &SimConfig,
) -> Result<SimTrace, FitError> {
    let eta = cfg.beta / cfg.tau;
    // The reward model of every round: ŵ_t = βj in the population mode; by Monte Carlo, a fit
    // to round t's pairs, which do not depend on the policy (see `sample_labelled_pairs`), so
    // the rounds' fits are independent of each other and of b.
    let fits: Vec<(Vec<f64>, Option<usize>)> = match cfg.mode {
        Mode::Population => (0..cfg.rounds)
            .map(|_| (scaled(j, cfg.beta), None))
            .collect(),
        Mode::MonteCarlo => monte_carlo_fits(m, j, cfg)?
            .into_iter()
            .map(|f| (f.w, Some(f.iterations)))
            .collect(),
    };
    // Steps 5 and 6 in round order.
    let mut b = g.to_vec();
    let mut records = vec![record(m, &b, 0, None, None, cfg)];
    for (t, (w_hat, iters)) in fits.iter().enumerate() {
        axpy(1.0 / cfg.tau, w_hat, &mut b);
        records.push(record(m, &b, t + 1, Some(w_hat), *iters, cfg));
    }
    let population = population_trajectory(m, g, j, eta, cfg.rounds);
    Ok(SimTrace {
        config: cfg.clone(),
        eta,
        records,
        population,
    })
}

/// Steps 1–4 of every round: the reward models `(ŵ_t, ĉ_t)`, t = 1..T, in round order.
///
/// Small rounds (n (d + 1) below [`ROUND_PARALLEL_MAX_ELEMS`]) run whole, one per unit of a
/// crew: each thread samples and fits its own rounds, with no hand-off inside a round (a
/// round at d = 16, n = 10³ is about thirty passes of 1–6 µs, too short to split). Larger
/// rounds run one after the other, each pass spread over the crew. Either way the fits are the
/// same, bit for bit, on any number of threads.
fn monte_carlo_fits(
    m: &LatentModel,
    j: &[f64],
    cfg: &SimConfig,
) -> Result<Vec<logistic::LogisticFit>, FitError> {
    let (n, d) = (cfg.pairs, m.d());
    let one_round = |crew: &Crew, t: usize, dh: &mut Vec<f64>, labels: &mut Vec<f64>| {
        dh.resize(n * d, 0.0);
        labels.resize(n, 0.0);
        sample_labelled_pairs_in(crew, m, j, cfg, t, dh, labels);
        logistic::fit_in(crew, dh, d, labels, cfg.ridge)
    };
    Crew::scope(|crew| {
        if n * (d + 1) < ROUND_PARALLEL_MAX_ELEMS {
            crew.map(cfg.rounds, |r| {
                ROUND_BUFFERS.with(|cell| {
                    let (mut dh, mut labels) = cell.take();
                    let fit = one_round(&Crew::serial(), r + 1, &mut dh, &mut labels);
                    cell.set((dh, labels));
                    fit
                })
            })
            .into_iter()
            .collect()
        } else {
            let (mut dh, mut labels) = (Vec::new(), Vec::new());
            (1..=cfg.rounds)
                .map(|t| one_round(crew, t, &mut dh, &mut labels))
                .collect()
        }
    })
}

/// Pairs × (d + 1) below which [`simulate`] runs whole rounds in parallel (about d = 16,
/// n = 2000); each thread then holds one round's pairs.
const ROUND_PARALLEL_MAX_ELEMS: usize = 1 << 15;

thread_local! {
    /// The pairs and labels of the last round this thread ran whole, kept for its next one.
    static ROUND_BUFFERS: std::cell::Cell<(Vec<f64>, Vec<f64>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

fn record(
    m: &LatentModel,
    b: &[f64],
    round: usize,
    w_hat: Option<&[f64]>,
    newton_iterations: Option<usize>,
    cfg: &SimConfig,
) -> RoundRecord {
    let a_hat = w_hat.map(|w| m.alignment(w));
    let (mc_value, mc_value_se) = if cfg.value_draws > 0 {
        let (mean, se) = mc_value(m, b, cfg.value_draws, stream(cfg.seed, round, 1, 0));
        (Some(mean), Some(se))
    } else {
        (None, None)
    };
    RoundRecord {
        round,
        v: m.value(b),
        k: m.kl(b),
        a: m.alignment(b),
        a_hat,
        agree_hat: a_hat.map(agree_deterministic),
        mc_value,
        mc_value_se,
        newton_iterations,
    }
}

/// The id of one block's stream: round, purpose (0 = pairs, 1 = value draws, 2 = policy
/// samples) and block index.
pub fn stream_id(round: usize, purpose: u64, block: usize) -> u64 {
    ((round as u64) << 33) | (purpose << 32) | block as u64
}

/// The ChaCha8 RNG of one block (value draws and policy samples).
fn stream(seed: u64, round: usize, purpose: u64, block: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream_id(round, purpose, block));
    rng
}

/// Steps 1–3: fills `dh` (`n × d`) and `labels` (n) for round `round`.
///
/// Block `B` of [`PAIRS_PER_BLOCK`] pairs (`r` pairs; the last block may be shorter) reads the
/// stream `CounterStream::new(seed, stream_id(round, 0, B))`: standard normals
/// `0 .. rk` are the `ξ` of the first responses of its pairs (pair by pair, k each),
/// `rk .. 2rk` those of the second responses, `2rk .. 2rk + rd` the `ζ` of the first responses,
/// `2rk + rd .. 2rk + 2rd` those of the second; the label uniforms are words `N .. N + r` with
/// `N = 2r(k + d)` rounded up to a whole normal group. The responses of a pair are
/// `h_r = W z_r + m_ε + s ζ_r` with `z_r = m_z + L ξ_r` (`m_z = μ₀ + Σ_z Wᵀ b`, `m_ε = s² b`
/// under policy tilt b), so their difference is
///
/// `Δh = h₁ − h₂ = M (ξ₁ − ξ₂) + s (ζ₁ − ζ₂)`, `M = W L`:
///
/// the policy's mean shift is common to both responses and cancels, and the pairs (hence the
/// labels `ℓ = [u < σ(β⟨j, Δh⟩ + b_pos)]`) do not depend on b. `Δh` is computed in this form,
/// which also avoids the cancellation of a large common mean late in a run. (So
/// [`simulate`] can fit its rounds independently of each other.) The draws are vectorised
/// fills and each pair is one pass of a SIMD kernel chosen at run time; nothing is allocated
/// per sample.
/// Up to [`SERIAL_MAX_BLOCKS`] blocks (any number when rayon has one thread) run on the
/// calling thread; the result is the same either way.
pub fn sample_labelled_pairs(
    m: &LatentModel,
    j: &[f64],
    cfg: &SimConfig,
    round: usize,
    dh: &mut [f64],
    labels: &mut [f64],
) {
    if labels.len().div_ceil(PAIRS_PER_BLOCK) <= SERIAL_MAX_BLOCKS
        || rayon::current_num_threads() == 1
    {
        sample_labelled_pairs_in(&Crew::serial(), m, j, cfg, round, dh, labels);
    } else {
        Crew::scope(|crew| sample_labelled_pairs_in(crew, m, j, cfg, round, dh, labels));
    }
}

/// [`sample_labelled_pairs`] with the blocks spread over `crew`: the same numbers for every
/// crew.
#[allow(clippy::too_many_arguments)]
pub fn sample_labelled_pairs_in(
    crew: &Crew,
    m: &LatentModel,
    j: &[f64],
    cfg: &SimConfig,
    round: usize,
    dh: &mut [f64],
    labels: &mut [f64],
) {
    let d = m.d();
    let k = m.k();
    let s = m.s2().sqrt();
    // Mᵀ = (W L)ᵀ row-major (k × d), so that column a of M is a contiguous row.
    let mt = m.w().matmul(m.sigma_z_chol().l()).transpose();
    let pairs = Pairs {
        k,
        d,
        mt: mt.as_slice(),
        s,
        j,
        beta: cfg.beta,
        b_pos: cfg.b_pos,
    };
    let mut blocks: Vec<(&mut [f64], &mut [f64])> = dh
        .chunks_mut(PAIRS_PER_BLOCK * d)
        .zip(labels.chunks_mut(PAIRS_PER_BLOCK))
        .collect();
    crew.for_each_mut(&mut blocks, |bi, (h1, lab)| {
        let rng = CounterStream::new(cfg.seed, stream_id(round, 0, bi));
        pairs.block(&rng, h1, lab);
    });
}

/// Blocks of pairs that [`sample_labelled_pairs`] draws on the calling thread.
pub const SERIAL_MAX_BLOCKS: usize = 1;

/// What every block of [`sample_labelled_pairs`] needs.
struct Pairs<'a> {
    k: usize,
    d: usize,
    mt: &'a [f64],
    s: f64,
    j: &'a [f64],
    beta: f64,
    b_pos: f64,
}

impl Pairs<'_> {
    /// One block: `h1` (r × d) receives Δh, `lab` (r) the labels.
    fn block(&self, rng: &CounterStream, h1: &mut [f64], lab: &mut [f64]) {
        let (k, d) = (self.k, self.d);
        let rows = lab.len();
        let (rk, rd) = ((rows * k) as u64, (rows * d) as u64);
        // This thread's buffers for the block's ξ and second ζ, kept between blocks (every
        // value is overwritten by the fills).
        let (mut xi, mut h2) = BLOCK_BUFFERS.with(std::cell::Cell::take);
        xi.resize(2 * rows * k, 0.0);
        h2.resize(rows * d, 0.0);
        rng.fill_normal(0, &mut xi);
        rng.fill_normal(2 * rk, h1);
        rng.fill_normal(2 * rk + rd, &mut h2);
        let group = NORMAL_GROUP as u64;
        // `lab` holds the pairs' uniforms until the kernel turns them into labels.
        rng.fill_uniform((2 * (rk + rd)).div_ceil(group) * group, lab);
        let (xi1, xi2) = xi.split_at(rows * k);
        pulp::Arch::new().dispatch(PairKernel {
            p: self,
            xi1,
            xi2,
            h1,
            h2: &h2,
            lab,
        });
        BLOCK_BUFFERS.with(|c| c.set((xi, h2)));
    }
}

thread_local! {
    /// [`Pairs::block`]'s buffers on this thread.
    static BLOCK_BUFFERS: std::cell::Cell<(Vec<f64>, Vec<f64>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// The SIMD body of [`Pairs::block`]: per pair, `Δh = s (ζ₁ − ζ₂) + Σ_a (ξ₁ₐ − ξ₂ₐ) M_a` into
/// `h1` (which holds ζ₁ on entry), and the label.
struct PairKernel<'a, 'b> {
    p: &'a Pairs<'b>,
    xi1: &'a [f64],
    xi2: &'a [f64],
    h1: &'a mut [f64],
    h2: &'a [f64],
    lab: &'a mut [f64],
}

impl pulp::WithSimd for PairKernel<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Self::Output {
        let PairKernel {
            p,
            xi1,
            xi2,
            h1,
            h2,
            lab,
        } = self;
        let (d, lanes) = (p.d, S::F64_LANES);
        // The logits β⟨j, Δh⟩ + b_pos of the block's pairs, labelled after the loop.
        let rows = lab.len().min(PAIRS_PER_BLOCK);
        let mut logits = [0.0f64; PAIRS_PER_BLOCK];
        if lanes == 8 && d % 8 == 0 && d <= 8 * NARROW_BLOCKS {
            narrow_pairs(simd, p, xi1, xi2, h1, h2, &mut logits[..rows]);
        } else {
            wide_pairs(simd, p, xi1, xi2, h1, h2, &mut logits[..rows]);
        }
        label(lab, &logits[..rows]);
    }
}

/// Column blocks of eight that [`narrow_pairs`] keeps in registers (d ≤ 32).
const NARROW_BLOCKS: usize = 4;

/// [`PairKernel`] for eight-lane vectors and d a multiple of eight up to 32: each pair's `Δh`
/// stays in registers while the k latent terms are added (one broadcast of `ξ₁ₐ − ξ₂ₐ` per
/// term for all column blocks). Every entry gets the same operations in the same order as in
/// [`wide_pairs`].
#[inline(always)]
fn narrow_pairs<S: pulp::Simd>(
    simd: S,
    p: &Pairs<'_>,
    xi1: &[f64],
    xi2: &[f64],
    h1: &mut [f64],
    h2: &[f64],
    logits: &mut [f64],
) {
    let (k, d) = (p.k, p.d);
    let nb = d / 8;
    let sv = simd.splat_f64s(p.s);
    let zero = simd.splat_f64s(0.0);
    let (jv, _) = S::as_simd_f64s(p.j);
    let (mt, _) = S::as_simd_f64s(p.mt);
    for ((((x1, x2), o), z2), x) in xi1
        .chunks_exact(k)
        .zip(xi2.chunks_exact(k))
        .zip(h1.chunks_exact_mut(d))
        .zip(h2.chunks_exact(d))
        .zip(logits.iter_mut())
    {
        let (z1v, _) = S::as_simd_f64s(o);
        let (z2v, _) = S::as_simd_f64s(z2);
        let mut acc = [zero; NARROW_BLOCKS];
        for b in 0..nb {
            acc[b] = simd.mul_f64s(sv, simd.sub_f64s(z1v[b], z2v[b]));
        }
        for (a, (&e1, &e2)) in x1.iter().zip(x2).enumerate() {
            let e = simd.splat_f64s(e1 - e2);
            let m = &mt[a * nb..(a + 1) * nb];
            for b in 0..nb {
                acc[b] = simd.mul_add_f64s(e, m[b], acc[b]);
            }
        }
        // Stores and the logit's sum straight from the registers (`copy_from_slice` of a
        // run-time length became a call to `memcpy` through the stack).
        let (ov, _) = S::as_mut_simd_f64s(o);
        let mut dacc = zero;
        for b in 0..nb {
            ov[b] = acc[b];
            dacc = simd.mul_add_f64s(jv[b], acc[b], dacc);
        }
        // The lane tree of `dot_lanes` (pulp's reduction; see `register_reduction_is_the_lane_tree`).
        *x = p.beta * simd.reduce_sum_f64s(dacc) + p.b_pos;
    }
}

/// [`PairKernel`] in general: column blocks of the vector width, then the columns left over.
#[inline(always)]
fn wide_pairs<S: pulp::Simd>(
    simd: S,
    p: &Pairs<'_>,
    xi1: &[f64],
    xi2: &[f64],
    h1: &mut [f64],
    h2: &[f64],
    logits: &mut [f64],
) {
    let (k, d, s) = (p.k, p.d, p.s);
    let lanes = S::F64_LANES;
    let sv = simd.splat_f64s(s);
    for ((((x1, x2), o), z2), x) in xi1
        .chunks_exact(k)
        .zip(xi2.chunks_exact(k))
        .zip(h1.chunks_exact_mut(d))
        .zip(h2.chunks_exact(d))
        .zip(logits.iter_mut())
    {
        // ⟨j, Δh⟩ in eight lanes (column c into lane c mod 8), as `dot_lanes` sums it: with
        // eight-lane vectors the lanes are the vector's, accumulated as Δh is formed.
        let mut dacc = simd.splat_f64s(0.0);
        let mut c0 = 0;
        while c0 + lanes <= d {
            let (z1v, _) = S::as_simd_f64s(&o[c0..c0 + lanes]);
            let (z2v, _) = S::as_simd_f64s(&z2[c0..c0 + lanes]);
            let mut acc = simd.mul_f64s(sv, simd.sub_f64s(z1v[0], z2v[0]));
            for ((&e1, &e2), mrow) in x1.iter().zip(x2).zip(p.mt.chunks_exact(d)) {
                let (mv, _) = S::as_simd_f64s(&mrow[c0..c0 + lanes]);
                acc = simd.mul_add_f64s(simd.splat_f64s(e1 - e2), mv[0], acc);
            }
            let (ov, _) = S::as_mut_simd_f64s(&mut o[c0..c0 + lanes]);
            ov[0] = acc;
            if lanes == 8 {
                let (jv, _) = S::as_simd_f64s(&p.j[c0..c0 + lanes]);
                dacc = simd.mul_add_f64s(jv[0], ov[0], dacc);
            }
            c0 += lanes;
        }
        for col in c0..d {
            let mut acc = s * (o[col] - z2[col]);
            for ((&e1, &e2), mrow) in x1.iter().zip(x2).zip(p.mt.chunks_exact(d)) {
                acc = (e1 - e2).mul_add(mrow[col], acc);
            }
            o[col] = acc;
        }
        let dot = if lanes == 8 && c0 == d {
            // pulp's reduction adds the vector's halves, then the halves' halves, then the
            // last two lanes: `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`, the tree of
            // `lane_tree`, in registers (test `register_reduction_is_the_lane_tree`).
            simd.reduce_sum_f64s(dacc)
        } else if lanes == 8 {
            let mut acc = [0.0f64; 8];
            S::as_mut_simd_f64s(&mut acc).0[0] = dacc;
            for (q, col) in (c0..d).enumerate() {
                acc[q] = p.j[col].mul_add(o[col], acc[q]);
            }
            crate::logistic::lane_tree(&acc)
        } else {
            crate::logistic::dot_lanes(p.j, o)
        };
        *x = p.beta * dot + p.b_pos;
    }
}

/// ℓ = [u < σ(x)] for the logits x, σ(x) = 1/(1 + e^{−x}) = e^{x}/(1 + e^{x}), with `lab`
/// holding the uniforms u on entry; a plain loop that the compiler vectorises (the `exp` is
/// branch-free).
#[inline(always)]
fn label(lab: &mut [f64], logits: &[f64]) {
    for (u, &x) in lab.iter_mut().zip(logits) {
        let e = crate::vmath::exp_nonpos(-x.abs());
        let prob = if x >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        *u = if *u < prob { 1.0 } else { 0.0 };
    }
}

/// One response: `z = m_z + L ξ`, `h = W z + m_ε + s ζ` written to `h`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn sample_response(
    rng: &mut ChaCha8Rng,
    mz: &[f64],
    me: &[f64],
    s: f64,
    l: &crate::linalg::Mat,
    w: &crate::linalg::Mat,
    xi: &mut [f64],
    z: &mut [f64],
    h: &mut [f64],
) {
    for v in xi.iter_mut() {
        *v = rng.sample(StandardNormal);
    }
    for (i, zi) in z.iter_mut().enumerate() {
        *zi = mz[i] + dot(&l.row(i)[..=i], &xi[..=i]);
    }
    for (i, hi) in h.iter_mut().enumerate() {
        let zeta: f64 = rng.sample(StandardNormal);
        *hi = dot(w.row(i), z) + me[i] + s * zeta;
    }
}

/// Responses drawn from a policy: representations `h` (`n × d`, row-major) and true values u*.
#[derive(Clone, Debug, PartialEq)]
pub struct Responses {
    /// Representations, `n × d` row-major.
    pub h: Vec<f64>,
    /// True values `u* = ⟨θ*, z⟩`.
    pub u: Vec<f64>,
    /// Width d.
    pub d: usize,
}

impl Responses {
    /// Number of responses.
    pub fn len(&self) -> usize {
        self.u.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    /// Row i of h.
    pub fn h_row(&self, i: usize) -> &[f64] {
        &self.h[i * self.d..(i + 1) * self.d]
    }
}

/// Draws `n` responses from π_b (THEORY §7 step 1), deterministically from `(seed, stream_id)`.
pub fn sample_policy(
    m: &LatentModel,
    b: &[f64],
    n: usize,
    seed: u64,
    stream_id: usize,
) -> Responses {
    let (d, k) = (m.d(), m.k());
    let mz = m.tilted_z_mean(b);
    let me = scaled(b, m.s2());
    let s = m.s2().sqrt();
    let mut h = vec![0.0; n * d];
    let mut u = vec![0.0; n];
    h.par_chunks_mut(PAIRS_PER_BLOCK * d)
        .zip(u.par_chunks_mut(PAIRS_PER_BLOCK))
        .enumerate()
        .for_each(|(block, (hb, ub))| {
            let mut rng = stream(seed, stream_id, 2, block);
            let mut xi = vec![0.0; k];
            let mut z = vec![0.0; k];
            for (hi, ui) in hb.chunks_exact_mut(d).zip(ub.iter_mut()) {
                sample_response(
                    &mut rng,
                    &mz,
                    &me,
                    s,
                    m.sigma_z_chol().l(),
                    m.w(),
                    &mut xi,
                    &mut z,
                    hi,
                );
                *ui = dot(m.theta(), &z);
            }
        });
    Responses { h, u, d }
}

/// Mean and standard error of `u* − ⟨θ*, μ₀⟩` over `n` fresh draws of z from π_b.
/// (u* does not depend on the nuisance ε, so only z is drawn.)
fn mc_value(m: &LatentModel, b: &[f64], n: usize, mut rng: ChaCha8Rng) -> (f64, f64) {
    let mz = m.tilted_z_mean(b);
    let base = dot(m.theta(), m.mu0());
    let k = m.k();
    // u = θᵀ(m_z + Lξ) = θᵀm_z + (Lᵀθ)ᵀ ξ.
    let lt_theta = m.sigma_z_chol().l().t_matvec(m.theta());
    let mean_u = dot(m.theta(), &mz);
    let (mut s1, mut s2) = (0.0, 0.0);
    let mut xi = vec![0.0; k];
    for _ in 0..n {
        for v in xi.iter_mut() {
            *v = rng.sample(StandardNormal);
        }
        let u = mean_u + dot(&lt_theta, &xi) - base;
        s1 += u;
        s2 += u * u;
    }
    let nf = n as f64;
    let mean = s1 / nf;
    let var = (s2 / nf - mean * mean).max(0.0) * nf / (nf - 1.0).max(1.0);
    (mean, (var / nf).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register-resident pair kernel and the general one give the same `Δh` and logits,
    /// bit for bit (they are chosen by the vector width and d).
    #[test]
    fn narrow_and_wide_pair_kernels_agree_bit_for_bit() {
        struct Both<'a> {
            p: &'a Pairs<'a>,
            xi: &'a [f64],
            z1: &'a [f64],
            z2: &'a [f64],
        }
        impl pulp::WithSimd for Both<'_> {
            type Output = Option<(Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)>;
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, simd: S) -> Self::Output {
                if S::F64_LANES != 8 {
                    return None;
                }
                let rows = self.z2.len() / self.p.d;
                let (xi1, xi2) = self.xi.split_at(rows * self.p.k);
                let (mut h_a, mut h_b) = (self.z1.to_vec(), self.z1.to_vec());
                let (mut l_a, mut l_b) = (vec![0.0; rows], vec![0.0; rows]);
                narrow_pairs(simd, self.p, xi1, xi2, &mut h_a, self.z2, &mut l_a);
                wide_pairs(simd, self.p, xi1, xi2, &mut h_b, self.z2, &mut l_b);
                Some((h_a, h_b, l_a, l_b))
            }
        }
        for (d, k) in [(8, 4), (16, 4), (24, 6), (32, 8)] {
            let rows = 37;
            let rng = CounterStream::new(3, d as u64);
            let draw = |first: u64, len: usize| {
                let mut v = vec![0.0; len];
                rng.fill_normal(first, &mut v);
                v
            };
            let mt = draw(0, k * d);
            let j = draw(10_000, d);
            let xi = draw(20_000, 2 * rows * k);
            let z1 = draw(40_000, rows * d);
            let z2 = draw(60_000, rows * d);
            let p = Pairs {
                k,
                d,
                mt: &mt,
                s: 0.7,
                j: &j,
                beta: 1.3,
                b_pos: -0.2,
            };
            let out = pulp::Arch::new().dispatch(Both {
                p: &p,
                xi: &xi,
                z1: &z1,
                z2: &z2,
            });
            let Some((h_a, h_b, l_a, l_b)) = out else {
                return; // not an eight-lane machine: only the general kernel runs
            };
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&h_a), bits(&h_b), "Δh, d = {d}");
            assert_eq!(bits(&l_a), bits(&l_b), "logits, d = {d}");
        }
    }
    #[test]
    fn register_reduction_is_the_lane_tree() {
        struct Check;
        impl pulp::WithSimd for Check {
            type Output = usize;
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, simd: S) -> usize {
                if S::F64_LANES != 8 {
                    return 0;
                }
                let mut x = 0.123_456_789_f64;
                for _ in 0..1000 {
                    let mut a = [0.0f64; 8];
                    for v in &mut a {
                        // Values of mixed signs and magnitudes, so that the order shows.
                        x = (x * 3.7 + 0.31).fract();
                        *v = (x - 0.5) * 10f64.powi((x * 30.0) as i32 - 15);
                    }
                    let tree = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
                    let v = S::as_simd_f64s(&a).0[0];
                    assert_eq!(simd.reduce_sum_f64s(v).to_bits(), tree.to_bits(), "{a:?}");
                }
                1000
            }
        }
        let checked = pulp::Arch::new().dispatch(Check);
        // Only eight-lane (AVX-512) machines use the register reduction.
        eprintln!("{checked} eight-lane reductions checked");
    }
}
