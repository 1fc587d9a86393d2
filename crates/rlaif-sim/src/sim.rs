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
    Crew::scope(|crew| {
        if n * (d + 1) < ROUND_PARALLEL_MAX_ELEMS {
            crew.map(cfg.rounds, |r| {
                monte_carlo_round(&Crew::serial(), m, j, cfg, r + 1)
            })
            .into_iter()
            .collect()
        } else {
            (1..=cfg.rounds)
                .map(|t| monte_carlo_round(crew, m, j, cfg, t))
                .collect()
        }
    })
}

/// Steps 1–4 of round `round` on `crew`, as [`simulate`] runs them: the round's pairs
/// ([`sample_labelled_pairs`]) and the reward model fitted to them ([`logistic::fit`]), the
/// same numbers bit for bit. Narrow rows (d ≤ 31) are sampled straight into the fit's
/// feature-major layout instead of as rows that the fit then copies; the buffers are the
/// calling thread's, kept for its next round.
///
/// # Errors
/// [`FitError`] if the fit fails.
pub fn monte_carlo_round(
    crew: &Crew,
    m: &LatentModel,
    j: &[f64],
    cfg: &SimConfig,
    round: usize,
) -> Result<logistic::LogisticFit, FitError> {
    let (n, d) = (cfg.pairs, m.d());
    ROUND_BUFFERS.with(|cell| {
        let (mut dh, mut labels) = cell.take();
        labels.resize(n, 0.0);
        let fit = if let Some(mut cols) = logistic::Columns::new(n, d) {
            sample_columns_in(crew, m, j, cfg, round, &mut cols, &mut labels);
            logistic::fit_columns(crew, &mut cols, &labels, cfg.ridge)
        } else {
            dh.resize(n * d, 0.0);
            sample_labelled_pairs_in(crew, m, j, cfg, round, &mut dh, &mut labels);
            logistic::fit_in(crew, &dh, d, &labels, cfg.ridge)
        };
        cell.set((dh, labels));
        fit
    })
}

/// Pairs × (d + 1) below which [`simulate`] runs whole rounds in parallel (about d = 16,
/// n = 2000); each thread then holds one round's pairs.
const ROUND_PARALLEL_MAX_ELEMS: usize = 1 << 15;

thread_local! {
    /// The pairs and labels of the last round this thread ran, kept for its next one.
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
/// stream `CounterStream::new(seed, stream_id(round, 0, B))`, feature by feature: standard
/// normal `a·r + t` is `ξ₁ₐ` of the block's pair t (the first response's latent draw),
/// `rk + a·r + t` its `ξ₂ₐ`, `2rk + c·r + t` its `ζ₁c` and `2rk + rd + c·r + t` its `ζ₂c`; the
/// label uniforms are words `N .. N + r` with `N = 2r(k + d)` rounded up to a whole normal
/// group. The responses of a pair are `h_r = W z_r + m_ε + s ζ_r` with `z_r = m_z + L ξ_r`
/// (`m_z = μ₀ + Σ_z Wᵀ b`, `m_ε = s² b` under policy tilt b), so their difference is
///
/// `Δh = h₁ − h₂ = M (ξ₁ − ξ₂) + s (ζ₁ − ζ₂)`, `M = W L`:
///
/// the policy's mean shift is common to both responses and cancels, and the pairs (hence the
/// labels `ℓ = [u < σ(β⟨j, Δh⟩ + b_pos)]`) do not depend on b. `Δh` is computed in this form,
/// which also avoids the cancellation of a large common mean late in a run. (So
/// [`simulate`] can fit its rounds independently of each other.) The draws are vectorised
/// fills and a SIMD kernel forms the pairs with one pair per lane (the feature-major draws
/// are its operands); nothing is allocated per sample. Up to [`SERIAL_MAX_BLOCKS`] blocks (any
/// number when rayon has one thread) run on the calling thread; the result is the same either
/// way.
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
    let wl = m.w().matmul(m.sigma_z_chol().l());
    let pairs = Pairs::new(m, &wl, j, cfg);
    let mut blocks: Vec<(&mut [f64], &mut [f64])> = dh
        .chunks_mut(PAIRS_PER_BLOCK * d)
        .zip(labels.chunks_mut(PAIRS_PER_BLOCK))
        .collect();
    crew.for_each_mut(&mut blocks, |bi, (rows, lab)| {
        let rng = CounterStream::new(cfg.seed, stream_id(round, 0, bi));
        let r = lab.len();
        // The block's pairs feature-major (stride r), then transposed into its rows.
        let mut cols = COLUMN_BUFFER.with(std::cell::Cell::take);
        cols.resize(d * r, 0.0);
        pairs.block(&rng, &mut cols, r, lab);
        logistic::transpose(&cols, r, rows, d);
        COLUMN_BUFFER.with(|b| b.set(cols));
    });
}

/// [`sample_labelled_pairs_in`] straight into the feature-major design the fit reads for
/// narrow rows: the same pairs and labels.
fn sample_columns_in(
    crew: &Crew,
    m: &LatentModel,
    j: &[f64],
    cfg: &SimConfig,
    round: usize,
    cols: &mut logistic::Columns,
    labels: &mut [f64],
) {
    let wl = m.w().matmul(m.sigma_z_chol().l());
    let pairs = Pairs::new(m, &wl, j, cfg);
    // A fit chunk holds whole blocks.
    const BLOCKS_PER_CHUNK: usize = logistic::CHUNK / PAIRS_PER_BLOCK;
    let mut jobs: Vec<_> = cols
        .chunks_mut()
        .into_iter()
        .zip(labels.chunks_mut(logistic::CHUNK))
        .collect();
    crew.for_each_mut(&mut jobs, |c, (chunk, lab)| {
        for (q, lab) in lab.chunks_mut(PAIRS_PER_BLOCK).enumerate() {
            let bi = c * BLOCKS_PER_CHUNK + q;
            debug_assert_eq!(chunk.first_row, c * logistic::CHUNK);
            let rng = CounterStream::new(cfg.seed, stream_id(round, 0, bi));
            pairs.block(
                &rng,
                &mut chunk.data[q * PAIRS_PER_BLOCK..],
                chunk.stride,
                lab,
            );
        }
    });
}

thread_local! {
    /// A block's pairs feature-major, before [`sample_labelled_pairs_in`] writes them as rows.
    static COLUMN_BUFFER: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Blocks of pairs that [`sample_labelled_pairs`] draws on the calling thread.
pub const SERIAL_MAX_BLOCKS: usize = 1;

/// What every block of [`sample_labelled_pairs`] needs.
struct Pairs<'a> {
    k: usize,
    d: usize,
    /// `M = W L` row-major (d × k).
    m: &'a [f64],
    s: f64,
    j: &'a [f64],
    beta: f64,
    b_pos: f64,
}

impl<'a> Pairs<'a> {
    fn new(model: &LatentModel, m: &'a crate::linalg::Mat, j: &'a [f64], cfg: &SimConfig) -> Self {
        Self {
            k: model.k(),
            d: model.d(),
            m: m.as_slice(),
            s: model.s2().sqrt(),
            j,
            beta: cfg.beta,
            b_pos: cfg.b_pos,
        }
    }

    /// One block of `r = lab.len()` pairs: `Δh` of pair t, feature c, into `out[c·stride + t]`,
    /// and the labels into `lab`.
    fn block(&self, rng: &CounterStream, out: &mut [f64], stride: usize, lab: &mut [f64]) {
        let (k, d) = (self.k, self.d);
        let r = lab.len();
        let (rk, rd) = ((r * k) as u64, (r * d) as u64);
        // This thread's buffers for the block's ξ and ζ, kept between blocks (every value is
        // overwritten by the fills).
        let (mut xi, mut zeta) = BLOCK_BUFFERS.with(std::cell::Cell::take);
        xi.resize(2 * r * k, 0.0);
        zeta.resize(2 * r * d, 0.0);
        rng.fill_normal(0, &mut xi);
        rng.fill_normal(2 * rk, &mut zeta);
        let group = NORMAL_GROUP as u64;
        // `lab` holds the pairs' uniforms until they are turned into labels.
        rng.fill_uniform((2 * (rk + rd)).div_ceil(group) * group, lab);
        pulp::Arch::new().dispatch(PairKernel {
            p: self,
            xi: &mut xi,
            zeta: &zeta,
            out,
            stride,
            lab,
        });
        BLOCK_BUFFERS.with(|c| c.set((xi, zeta)));
    }
}

thread_local! {
    /// [`Pairs::block`]'s buffers on this thread.
    static BLOCK_BUFFERS: std::cell::Cell<(Vec<f64>, Vec<f64>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// The SIMD body of [`Pairs::block`], one pair per lane: for each feature c,
/// `Δh_c = s (ζ₁c − ζ₂c) + Σ_a M_ca (ξ₁ₐ − ξ₂ₐ)` (terms added in order of a, fused
/// multiply-adds) and the logit `β Σ_c j_c Δh_c + b_pos` (features added in order), then the
/// labels. Pairs beyond the last whole vector get the same operations one at a time, so every
/// pair's numbers are the same wherever it falls.
struct PairKernel<'a, 'b> {
    p: &'a Pairs<'b>,
    /// `ξ₁` then `ξ₂` (each k × r, feature-major); overwritten with `ξ₁ − ξ₂`.
    xi: &'a mut [f64],
    /// `ζ₁` then `ζ₂` (each d × r, feature-major).
    zeta: &'a [f64],
    out: &'a mut [f64],
    stride: usize,
    /// The pairs' uniforms on entry, their labels on return.
    lab: &'a mut [f64],
}

impl pulp::WithSimd for PairKernel<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Self::Output {
        let PairKernel {
            p,
            xi,
            zeta,
            out,
            stride,
            lab,
        } = self;
        let (k, d, r) = (p.k, p.d, lab.len());
        let mut logits = [0.0f64; PAIRS_PER_BLOCK];
        let logits = &mut logits[..r];
        let lanes = S::F64_LANES;
        let (e, xi2) = xi.split_at_mut(r * k);
        for (a, &b) in e.iter_mut().zip(&xi2[..r * k]) {
            *a -= b;
        }
        let e = &*e;
        let (z1, z2) = zeta.split_at(r * d);
        let (m, j) = (&p.m[..d * k], &p.j[..d]);
        let sv = simd.splat_f64s(p.s);
        let (beta, b_pos) = (simd.splat_f64s(p.beta), simd.splat_f64s(p.b_pos));
        // Four vectors of pairs per step (the latent terms' loop runs once per four fused
        // multiply-adds), then single vectors, then single pairs.
        let ops = PairOps {
            e,
            z1,
            z2,
            m,
            j,
            r,
            k,
            s: sv,
            beta,
            b_pos,
        };
        let (step4, step1) = (4 * lanes, lanes);
        let full4 = r / step4 * step4;
        let full = r / step1 * step1;
        for t0 in (0..full4).step_by(step4) {
            ops.vectors::<S, 4>(simd, t0, out, stride, logits);
        }
        for t0 in (full4..full).step_by(step1) {
            ops.vectors::<S, 1>(simd, t0, out, stride, logits);
        }
        for t in full..r {
            let mut logit = 0.0;
            for c in 0..d {
                let mut acc = p.s * (z1[c * r + t] - z2[c * r + t]);
                for a in 0..k {
                    acc = m[c * k + a].mul_add(e[a * r + t], acc);
                }
                out[c * stride + t] = acc;
                logit = j[c].mul_add(acc, logit);
            }
            logits[t] = p.beta * logit + p.b_pos;
        }
        label(lab, logits);
    }
}

/// The operands of [`PairKernel`]'s vector steps.
struct PairOps<'a, V> {
    /// `ξ₁ − ξ₂`, k × r.
    e: &'a [f64],
    z1: &'a [f64],
    z2: &'a [f64],
    /// M, d × k.
    m: &'a [f64],
    j: &'a [f64],
    r: usize,
    k: usize,
    s: V,
    beta: V,
    b_pos: V,
}

impl<V: Copy> PairOps<'_, V> {
    /// Pairs `t0 .. t0 + NV·lanes`: their `Δh` into `out` and their logits.
    #[inline(always)]
    fn vectors<S: pulp::Simd<f64s = V>, const NV: usize>(
        &self,
        simd: S,
        t0: usize,
        out: &mut [f64],
        stride: usize,
        logits: &mut [f64],
    ) {
        let (r, k, lanes) = (self.r, self.k, S::F64_LANES);
        let width = NV * lanes;
        let load = |x: &[f64]| -> [V; NV] {
            let (v, _) = S::as_simd_f64s(&x[..width]);
            std::array::from_fn(|q| v[q])
        };
        let mut logit = [simd.splat_f64s(0.0); NV];
        let cols = self.z1.chunks_exact(r).zip(self.z2.chunks_exact(r));
        for (c, ((z1c, z2c), (mc, &jc))) in cols.zip(self.m.chunks_exact(k).zip(self.j)).enumerate()
        {
            let (a1, a2) = (load(&z1c[t0..]), load(&z2c[t0..]));
            let mut acc: [V; NV] =
                std::array::from_fn(|q| simd.mul_f64s(self.s, simd.sub_f64s(a1[q], a2[q])));
            for (ea, &mca) in self.e.chunks_exact(r).zip(mc) {
                let ev = load(&ea[t0..]);
                let mv = simd.splat_f64s(mca);
                for q in 0..NV {
                    acc[q] = simd.mul_add_f64s(mv, ev[q], acc[q]);
                }
            }
            let o = c * stride + t0;
            let (ov, _) = S::as_mut_simd_f64s(&mut out[o..o + width]);
            let jv = simd.splat_f64s(jc);
            for q in 0..NV {
                ov[q] = acc[q];
                logit[q] = simd.mul_add_f64s(jv, acc[q], logit[q]);
            }
        }
        let (lv, _) = S::as_mut_simd_f64s(&mut logits[t0..t0 + width]);
        for q in 0..NV {
            lv[q] = simd.add_f64s(simd.mul_f64s(self.beta, logit[q]), self.b_pos);
        }
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
