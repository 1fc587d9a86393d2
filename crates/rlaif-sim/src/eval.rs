//! Every closed form for one instance (`lvh theory eval`).

use serde::Serialize;

use crate::agreement::{agree_bt, agree_deterministic, kappa};
use crate::mixing::MixSup;
use crate::spec::Instance;
use crate::theorems::*;

/// The closed forms of THEORY §3–§7 for an instance. Field names are the CLI's JSON keys.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// Ceiling q.
    pub q: f64,
    /// sd(u*).
    pub sigma_u: f64,
    /// a(g).
    pub a_g: f64,
    /// a(r), when r or λ is given.
    pub a_r: Option<f64>,
    /// a(j_C).
    pub a_j: f64,
    /// ρ(g, j).
    pub rho_gj: f64,
    /// Generation–judgment gap `a(j) − a(g)`.
    pub gap: f64,
    /// Gap in agreement units `P_det(j) − P_det(g)`.
    pub gap_agreement: f64,
    /// Deterministic-judge agreement of g.
    pub agree_det_g: f64,
    /// Deterministic-judge agreement of j.
    pub agree_det_j: f64,
    /// Bradley–Terry agreement of j at the model's β and position bias.
    pub agree_bt_j: f64,
    /// κ_j = β √(2 Var(s_j)).
    pub kappa_j: f64,
    /// η = β/τ.
    pub eta: f64,
    /// T1(d): dA/dη at η = 0.
    pub first_step_slope: f64,
    /// T1(b): lim A_t = a(j).
    pub converged_alignment: f64,
    /// T1(b): a(j) > a(g).
    pub improves_converged: bool,
    /// T1(a): per-round value gain η⟨c, j⟩.
    pub step_value: f64,
    /// T1(a): per-round KL η² Var(s_j)/2.
    pub step_kl: f64,
    /// T1(c): budget-matched gain σ_u √(2K(g)) (a(j) − a(g)).
    pub budget_matched_gain: f64,
    /// T1(e): the trajectory's supremum (Lemma M).
    pub trajectory_peak: MixSup,
    /// T1(e): the (fractional) round of the peak, when interior.
    pub trajectory_peak_round: Option<f64>,
    /// The population trajectory for rounds 0..T.
    pub population: Trajectory,
    /// T3(b) extremes over orthogonal projections of r.
    pub orth_extremes: Option<OrthExtremes>,
    /// T3(a): indices of adversarial dictionary principles.
    pub adversarial_principles: Option<Vec<usize>>,
    /// T4: the best dictionary weights' alignment √(αᵀR⁻¹α) and weights.
    pub optimal_weights: Option<(f64, Vec<f64>)>,
    /// T6: ψ(n, κ_j) at the model's n.
    pub psi: f64,
    /// T6: expected a(ŵ) per round, a(j) ψ.
    pub expected_a_hat: f64,
    /// T6: pairs per round to beat the default, when a(j) > a(g) > 0.
    pub n_min: Option<f64>,
    /// T7(a): a(c), the alignment of the difference-of-means (refusal) direction.
    pub a_c: f64,
    /// T7(b): q after ablating c (0) and after ablating w*.
    pub q_after_ablating_c: f64,
    /// T7(b): q after ablating w*.
    pub q_after_ablating_w_star: f64,
    /// The optimal readout w* = Σ_h⁻¹ c.
    pub w_star: Vec<f64>,
    /// c = Cov(h, u*).
    pub c: Vec<f64>,
    /// The judgment direction j_C.
    pub j: Vec<f64>,
}

/// Evaluates every closed form for `inst`.
pub fn evaluate(inst: &Instance) -> Evaluation {
    let m = &inst.model;
    let (g, j) = (&inst.g, &inst.j);
    let cfg = &inst.sim;
    let eta = cfg.beta / cfg.tau;
    let (a_g, a_j) = (m.alignment(g), m.alignment(j));
    let kappa_j = kappa(cfg.beta, m.var_score(j));
    let (peak, peak_round) = trajectory_peak(m, g, j, eta);
    let n = cfg.pairs.max(1) as f64;
    let psi_n = psi(n, m.d(), kappa_j, cfg.b_pos);
    Evaluation {
        q: m.q(),
        sigma_u: m.sigma_u(),
        a_g,
        a_r: inst.r.as_ref().map(|r| m.alignment(r)),
        a_j,
        rho_gj: m.rho(g, j),
        gap: a_j - a_g,
        gap_agreement: agree_deterministic(a_j) - agree_deterministic(a_g),
        agree_det_g: agree_deterministic(a_g),
        agree_det_j: agree_deterministic(a_j),
        agree_bt_j: agree_bt(a_j, kappa_j, cfg.b_pos),
        kappa_j,
        eta,
        first_step_slope: first_step_slope(m, g, j),
        converged_alignment: converged_alignment(m, j),
        improves_converged: a_j > a_g,
        step_value: step_value(m, j, eta),
        step_kl: step_kl(m, j, eta),
        budget_matched_gain: budget_matched_gain(m, g, j),
        trajectory_peak: peak,
        trajectory_peak_round: peak_round,
        population: population_trajectory(m, g, j, eta, cfg.rounds),
        orth_extremes: inst.r.as_ref().map(|r| orth_extremes(m, r)),
        adversarial_principles: inst
            .dictionary
            .as_ref()
            .zip(inst.lambda.as_ref())
            .map(|(d, l)| adversarial_principles(m, d.columns(), l)),
        optimal_weights: inst
            .dictionary
            .as_ref()
            .zip(inst.lambda.as_ref())
            .map(|(d, l)| optimal_weights(m, d.columns(), l)),
        psi: psi_n,
        expected_a_hat: a_j * psi_n,
        n_min: (a_g > 0.0)
            .then(|| n_min(m.d(), kappa_j, a_j, a_g, cfg.b_pos))
            .flatten(),
        a_c: alignment_of_c(m),
        q_after_ablating_c: ceiling_after_ablation(m, &[m.c().to_vec()]),
        q_after_ablating_w_star: ceiling_after_ablation(m, &[m.w_star().to_vec()]),
        w_star: m.w_star().to_vec(),
        c: m.c().to_vec(),
        j: j.clone(),
    }
}
