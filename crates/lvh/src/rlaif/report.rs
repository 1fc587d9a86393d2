//! The RLAIF run's result, computed only from the saved checkpoint files (so a resumed run
//! reports exactly what an uninterrupted one does), and its HTML page with an SVG figure.

use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::engine::decode_h;
use super::stats::{
    argmax, best_of_n_kl, expected_max_normal, human_agreement, prompt_mean, sd, Estimate,
};
use super::{unhex_f32, unhex_f64, HumanActsRow, ProbeFile, RewardFile, RlaifSettings, SampleRow};
use crate::audit::{predict, Prediction};
use crate::judge::stats::{mean, GapStats, Interval};
use crate::plot::{esc, Plot, Series, Style};

/// Everything the report reads, loaded from the run folder.
#[derive(Debug)]
pub struct RunData<'a> {
    /// The settings.
    pub settings: &'a RlaifSettings,
    /// Seed.
    pub seed: u64,
    /// `d_model`.
    pub d_model: usize,
    /// The probe.
    pub probe: &'a ProbeFile,
    /// Gap statistics of the held-out human pairs under C.
    pub human: &'a GapStats,
    /// Activations of the same pairs, in the same order.
    pub human_acts: &'a [HumanActsRow],
    /// `samples[t]` = the rows of `S_t`, in (prompt, sample) order.
    pub samples: &'a [Vec<SampleRow>],
    /// `rewards[t − 1]` = round t's reward file.
    pub rewards: &'a [RewardFile],
}

/// The probe as an evaluator.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Block ℓ.
    pub layer: usize,
    /// Held-out contrast accuracy `[estimate, lo, hi]`.
    pub contrast_heldout_accuracy: [f64; 3],
    /// Held-out contrast `q̂` `[estimate, lo, hi]`.
    pub contrast_heldout_q_hat: [f64; 3],
    /// Agreement with human labels on the held-out pairs, `P_p`.
    pub human_agreement: Estimate,
    /// `a_p = sin(π(P_p − ½))`, the factor in every prediction.
    pub a_probe: Estimate,
}

/// The judge and default generation on held-out human pairs, and T1's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeReport {
    /// Pairs.
    pub n_pairs: usize,
    /// `a_gen`.
    pub a_gen: Estimate,
    /// `a_C`.
    pub a_c: Estimate,
    /// `G_C = P_C − P_gen`.
    pub gap: Estimate,
    /// Mean position bias (log-odds toward (A)).
    pub position_bias: f64,
    /// T1 from the gap's interval.
    pub t1: Prediction,
    /// T1(a): a KL-regularised step under C raises true value iff `a_C > 0`:
    /// `rises`, `falls` or `uncertain` (interval of `a_C` contains 0).
    pub step_value: &'static str,
}

/// The base policy `S_0`.
#[derive(Debug, Clone, Serialize)]
pub struct BaseReport {
    /// Mean probe score.
    pub probe_mean: f64,
    /// `sd(s_p)`, the unit of every probe change.
    pub probe_sd: f64,
    /// `n̄`, mean residual norm at ℓ.
    pub mean_resid_norm: f64,
    /// Mean response length in tokens.
    pub mean_tokens: f64,
    /// Share of empty responses.
    pub empty_share: f64,
}

/// Round t's reward model.
#[derive(Debug, Clone, Serialize)]
pub struct RewardReport {
    /// Judged pairs.
    pub n_pairs: usize,
    /// Mean soft label of `y1`.
    pub mean_soft_label: f64,
    /// Newton iterations.
    pub iterations: usize,
    /// `|ŵ_t|`.
    pub w_norm: f64,
    /// `cos(ŵ_t, p̂)`.
    pub cos_probe: f64,
    /// Human-label agreement of `r̂_t` on the held-out pairs.
    pub human_agreement: Estimate,
    /// Its `a(r̂_t) = sin(π(P − ½))` (T1 population limit: `a_C`).
    pub a_reward: Estimate,
}

/// Best-of-n on top of `π_{t−1}`.
#[derive(Debug, Clone, Serialize)]
pub struct BestOfN {
    /// `log n − (n − 1)/n`.
    pub kl: f64,
    /// `e_n`.
    pub e_n: f64,
    /// Observed probe change of `B_t` (in `sd(s_p)`), interval over prompts.
    pub observed: Estimate,
    /// Predicted `a_p · a_C · e_n` (interval: corners of the factors' intervals).
    pub predicted: Estimate,
    /// Observed probe change of best-of-n under `s_gen` (the default's own preference).
    pub default_observed: Estimate,
    /// Predicted `a_p · a_gen · e_n`.
    pub default_predicted: Estimate,
}

/// The steered policy `π_t` against `π_0`.
#[derive(Debug, Clone, Serialize)]
pub struct Steering {
    /// `|v_t| / n̄`.
    pub total_scale: f64,
    /// `Δr̂_t/sd(r̂_t)` of `S_t` against `S_0` (the `√(2K)` of the tilt along `r̂_t`).
    pub reward_shift: Estimate,
    /// Observed probe change `S_t` vs `S_0` (in `sd(s_p)`).
    pub observed: Estimate,
    /// Predicted `a_p · a_C · Δr̂/sd(r̂)`.
    pub predicted: Estimate,
    /// Mean response length in tokens.
    pub mean_tokens: f64,
}

/// One round t ≥ 1.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// t.
    pub round: usize,
    /// `r̂_t`.
    pub reward: RewardReport,
    /// `B_t`.
    pub best_of_n: BestOfN,
    /// `π_t`.
    pub steering: Steering,
}

/// `result.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RlaifResult {
    /// Constitution.
    pub constitution: String,
    /// Model file.
    pub model: String,
    /// Its sha256.
    pub model_sha256: String,
    /// Seed.
    pub seed: u64,
    /// Block ℓ.
    pub layer: usize,
    /// Prompts.
    pub n_prompts: usize,
    /// n.
    pub samples: usize,
    /// T.
    pub rounds: usize,
    /// Token budget.
    pub max_tokens: usize,
    /// η.
    pub eta: f64,
    /// The evaluator.
    pub probe: ProbeReport,
    /// The judge on human pairs and T1.
    pub judge: JudgeReport,
    /// `S_0`.
    pub base: BaseReport,
    /// Rounds 1..T.
    pub round_reports: Vec<RoundReport>,
    /// Headline findings in words.
    pub findings: Vec<String>,
}

fn est(value: f64, lo: f64, hi: f64) -> Estimate {
    Estimate {
        value,
        ci: Interval { lo, hi },
    }
}

/// The product of estimates; the interval spans the products of every corner of the factors'
/// intervals (conservative; exact bounds of the product over the box).
pub fn product(factors: &[Estimate]) -> Estimate {
    let value = factors.iter().map(|f| f.value).product();
    let mut corners = vec![1.0f64];
    for f in factors {
        corners = corners
            .iter()
            .flat_map(|c| [c * f.ci.lo, c * f.ci.hi])
            .collect();
    }
    let lo = corners.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    est(value, lo, hi)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn per_prompt_means(scores: &[f64], n: usize) -> Vec<f64> {
    scores.chunks(n).map(mean).collect()
}

fn sign_word(x: Interval) -> &'static str {
    if x.lo > 0.0 {
        "rises"
    } else if x.hi < 0.0 {
        "falls"
    } else {
        "uncertain"
    }
}

/// Computes the result. `model`/`model_sha256` are recorded as given.
///
/// # Errors
/// Inconsistent checkpoint files (wrong counts or widths), naming what is wrong.
pub fn analyse(data: &RunData<'_>, model: &str, model_sha256: &str) -> Result<RlaifResult> {
    let s = data.settings;
    let (n, d) = (s.samples, data.d_model);
    let n_prompts = s.prompts.len();
    if data.samples.len() != s.rounds + 1 || data.rewards.len() != s.rounds {
        bail!("the run has not finished every round");
    }
    for (t, rows) in data.samples.iter().enumerate() {
        if rows.len() != n_prompts * n {
            bail!(
                "round {t}: {} responses, expected {}",
                rows.len(),
                n_prompts * n
            );
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(data.seed);
    rng.set_stream(2);
    let b = s.resamples;
    let probe = unhex_f64(&data.probe.direction, "probe direction").map_err(anyhow::Error::msg)?;
    if probe.len() != d {
        bail!("probe.json: {} values, expected {d}", probe.len());
    }
    let h: Vec<Vec<Vec<f64>>> = data
        .samples
        .iter()
        .map(|rows| decode_h(rows, d))
        .collect::<Result<_>>()?;
    let sp: Vec<Vec<f64>> = h
        .iter()
        .map(|hs| hs.iter().map(|x| dot(&probe, x)).collect())
        .collect();
    let sigma_p = sd(&sp[0]);

    // Human pairs: the probe's and every reward model's agreement with human labels.
    let human_h = |which: fn(&HumanActsRow) -> &String| -> Result<Vec<Vec<f64>>> {
        data.human_acts
            .iter()
            .map(|r| {
                let v = unhex_f32(which(r), &format!("human pair {}", r.index))
                    .map_err(anyhow::Error::msg)?;
                if v.len() != d {
                    bail!("human pair {}: {} values, expected {d}", r.index, v.len());
                }
                Ok(v.into_iter().map(f64::from).collect())
            })
            .collect()
    };
    let hc = human_h(|r| &r.chosen)?;
    let hr = human_h(|r| &r.rejected)?;
    let score_all =
        |w: &[f64], hs: &[Vec<f64>]| -> Vec<f64> { hs.iter().map(|x| dot(w, x)).collect() };
    let (p_agree, a_probe) = human_agreement(
        &score_all(&probe, &hc),
        &score_all(&probe, &hr),
        b,
        &mut rng,
    );
    let g = data.human;
    let a_c = est(g.a_judge, g.a_judge_ci.lo, g.a_judge_ci.hi);
    let a_gen = est(g.a_gen, g.a_gen_ci.lo, g.a_gen_ci.hi);
    let judge = JudgeReport {
        n_pairs: g.n_pairs,
        a_gen,
        a_c,
        gap: est(g.gap, g.gap_ci.lo, g.gap_ci.hi),
        position_bias: g.position_bias.mean,
        t1: predict(g),
        step_value: sign_word(a_c.ci),
    };
    let mean_resid_norm = mean(
        &data.samples[0]
            .iter()
            .map(|r| r.resid_norm)
            .collect::<Vec<_>>(),
    );
    let tokens = |rows: &[SampleRow]| {
        mean(
            &rows
                .iter()
                .map(|r| r.tokens.len() as f64)
                .collect::<Vec<_>>(),
        )
    };
    let base = BaseReport {
        probe_mean: mean(&sp[0]),
        probe_sd: sigma_p,
        mean_resid_norm,
        mean_tokens: tokens(&data.samples[0]),
        empty_share: mean(
            &data.samples[0]
                .iter()
                .map(|r| f64::from(u8::from(r.tokens.is_empty())))
                .collect::<Vec<_>>(),
        ),
    };
    let e_n = expected_max_normal(n);
    let base_pp = per_prompt_means(&sp[0], n);
    let mut round_reports = Vec::with_capacity(s.rounds);
    for t in 1..=s.rounds {
        let rf = &data.rewards[t - 1];
        let w = unhex_f64(&rf.w, &format!("round {t} reward")).map_err(anyhow::Error::msg)?;
        let steer = unhex_f32(&rf.steer, &format!("round {t} steering vector"))
            .map_err(anyhow::Error::msg)?;
        if w.len() != d || steer.len() != d {
            bail!("round-{t}/reward.json: vectors of the wrong width (expected {d})");
        }
        let w_norm = dot(&w, &w).sqrt();
        let (hp, ha) = human_agreement(&score_all(&w, &hc), &score_all(&w, &hr), b, &mut rng);
        let reward = RewardReport {
            n_pairs: rf.n_pairs,
            mean_soft_label: rf.mean_soft_label,
            iterations: rf.iterations,
            w_norm,
            cos_probe: dot(&w, &probe) / w_norm,
            human_agreement: hp,
            a_reward: ha,
        };
        // Best-of-n on top of π_{t−1}, under r̂_t and under s_gen.
        let prev = &data.samples[t - 1];
        let r_prev = score_all(&w, &h[t - 1]);
        let mut bon = Vec::with_capacity(n_prompts);
        let mut bon_default = Vec::with_capacity(n_prompts);
        for x in 0..n_prompts {
            let range = x * n..(x + 1) * n;
            let sp_x = &sp[t - 1][range.clone()];
            let m = mean(sp_x);
            let pick =
                |scores: &[f64]| argmax(scores).map_or(f64::NAN, |k| (sp_x[k] - m) / sigma_p);
            bon.push(pick(&r_prev[range.clone()]));
            let sg: Vec<f64> = prev[range]
                .iter()
                .map(|r| r.s_gen.unwrap_or(f64::NAN))
                .collect();
            bon_default.push(pick(&sg));
        }
        let en = est(e_n, e_n, e_n);
        let best_of_n = BestOfN {
            kl: best_of_n_kl(n),
            e_n,
            observed: prompt_mean(&bon, b, &mut rng),
            predicted: product(&[a_probe, a_c, en]),
            default_observed: prompt_mean(&bon_default, b, &mut rng),
            default_predicted: product(&[a_probe, a_gen, en]),
        };
        // Steering: S_t against S_0.
        let r0 = score_all(&w, &h[0]);
        let sigma_r = sd(&r0);
        let rt = score_all(&w, &h[t]);
        let shift: Vec<f64> = per_prompt_means(&rt, n)
            .iter()
            .zip(per_prompt_means(&r0, n))
            .map(|(a, z)| (a - z) / sigma_r)
            .collect();
        let moved: Vec<f64> = per_prompt_means(&sp[t], n)
            .iter()
            .zip(&base_pp)
            .map(|(a, z)| (a - z) / sigma_p)
            .collect();
        let reward_shift = prompt_mean(&shift, b, &mut rng);
        let steer_norm = steer
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let steering = Steering {
            total_scale: steer_norm / rf.mean_resid_norm,
            reward_shift,
            observed: prompt_mean(&moved, b, &mut rng),
            predicted: product(&[a_probe, a_c, reward_shift]),
            mean_tokens: tokens(&data.samples[t]),
        };
        round_reports.push(RoundReport {
            round: t,
            reward,
            best_of_n,
            steering,
        });
    }
    let probe_report = ProbeReport {
        layer: data.probe.layer,
        contrast_heldout_accuracy: data.probe.heldout_accuracy,
        contrast_heldout_q_hat: data.probe.heldout_q_hat,
        human_agreement: p_agree,
        a_probe,
    };
    let findings = findings(s, &judge, &probe_report, &round_reports);
    Ok(RlaifResult {
        constitution: s.constitution.clone(),
        model: model.into(),
        model_sha256: model_sha256.into(),
        seed: data.seed,
        layer: s.layer,
        n_prompts,
        samples: n,
        rounds: s.rounds,
        max_tokens: s.max_tokens,
        eta: s.eta,
        probe: probe_report,
        judge,
        base,
        round_reports,
        findings,
    })
}

fn fe(e: &Estimate) -> String {
    format!("{:+.3} [{:+.3}, {:+.3}]", e.value, e.ci.lo, e.ci.hi)
}

fn findings(
    s: &RlaifSettings,
    j: &JudgeReport,
    p: &ProbeReport,
    rounds: &[RoundReport],
) -> Vec<String> {
    let mut out = vec![
        format!(
            "judge under `{}` on {} held-out human pairs: a_C = {}, a_gen = {}; T1: converged alignment {} (RLAIF beats the default at equal KL iff a_C > a_gen); a KL-regularised step {} true value (T1a)",
            s.constitution,
            j.n_pairs,
            fe(&j.a_c),
            fe(&j.a_gen),
            j.t1.converged_alignment,
            j.step_value
        ),
        format!(
            "evaluator: the human-data probe at layer {} agrees with human labels with a_p = {} (contrast held-out q̂ = {:+.3}); predictions scale with a_p",
            p.layer,
            fe(&p.a_probe),
            p.contrast_heldout_q_hat[0]
        ),
    ];
    if let Some(r) = rounds.first() {
        let b = &r.best_of_n;
        out.push(format!(
            "best-of-{} under r̂_1 (KL ≈ {:.3}): probe {} sd observed vs {} predicted; under the model's own s_gen: {} observed vs {} predicted",
            s.samples,
            b.kl,
            fe(&b.observed),
            fe(&b.predicted),
            fe(&b.default_observed),
            fe(&b.default_predicted)
        ));
    }
    if let Some(r) = rounds.last() {
        let st = &r.steering;
        out.push(format!(
            "steering after {} round(s) (|v| = {:.2} n̄): reward r̂_{} moved {} sd, probe {} sd observed vs {} predicted",
            r.round,
            st.total_scale,
            r.round,
            fe(&st.reward_shift),
            fe(&st.observed),
            fe(&st.predicted)
        ));
    }
    out
}

/// The figure: observed and predicted probe change per round, best-of-n and steering.
pub fn figure(r: &RlaifResult) -> String {
    let pts = |f: &dyn Fn(&RoundReport) -> f64| -> Vec<(f64, f64)> {
        r.round_reports
            .iter()
            .map(|x| (x.round as f64, f(x)))
            .collect()
    };
    let mut plot = Plot::new(
        &format!(
            "RLAIF under `{}`: true-value change (probe)",
            r.constitution
        ),
        "round t",
        "probe change (sd of S_0)",
    )
    .with(
        Series::new(
            "steering, observed",
            pts(&|x| x.steering.observed.value),
            Style::Points,
        )
        .color(0),
    )
    .with(
        Series::new(
            "steering, predicted",
            pts(&|x| x.steering.predicted.value),
            Style::Dashed,
        )
        .color(0),
    )
    .with(
        Series::new(
            "best-of-n r̂, observed",
            pts(&|x| x.best_of_n.observed.value),
            Style::Points,
        )
        .color(1),
    )
    .with(
        Series::new(
            "best-of-n r̂, predicted",
            pts(&|x| x.best_of_n.predicted.value),
            Style::Dashed,
        )
        .color(1),
    )
    .with(
        Series::new(
            "best-of-n s_gen, observed",
            pts(&|x| x.best_of_n.default_observed.value),
            Style::Points,
        )
        .color(2),
    )
    .with(
        Series::new(
            "best-of-n s_gen, predicted",
            pts(&|x| x.best_of_n.default_predicted.value),
            Style::Dashed,
        )
        .color(2),
    );
    plot.h_lines.push((0.0, "no change".into()));
    plot.to_svg()
}

/// The HTML page: findings, a table per round, the figure.
pub fn html(r: &RlaifResult, svg: &str) -> String {
    let mut s = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>lvh rlaif: {c}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}\
         th{{background:#eee}}</style></head><body><h1>Observed RLAIF under <code>{c}</code></h1>\
         <p>model {m} (sha256 {sha}), layer {l}, {np} prompts × {n} samples, {t} round(s), seed {seed}, η = {eta}</p><ul>",
        c = esc(&r.constitution),
        m = esc(&r.model),
        sha = esc(&r.model_sha256),
        l = r.layer,
        np = r.n_prompts,
        n = r.samples,
        t = r.rounds,
        seed = r.seed,
        eta = r.eta,
    );
    for f in &r.findings {
        s.push_str(&format!("<li>{}</li>", esc(f)));
    }
    s.push_str("</ul>");
    s.push_str(svg);
    s.push_str(
        "<table><tr><th>round</th><th>a(r̂) human</th><th>BoN obs</th><th>BoN pred</th>\
         <th>BoN s_gen obs</th><th>steer Δr̂</th><th>steer obs</th><th>steer pred</th></tr>",
    );
    for x in &r.round_reports {
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            x.round,
            fe(&x.reward.a_reward),
            fe(&x.best_of_n.observed),
            fe(&x.best_of_n.predicted),
            fe(&x.best_of_n.default_observed),
            fe(&x.steering.reward_shift),
            fe(&x.steering.observed),
            fe(&x.steering.predicted),
        ));
    }
    s.push_str("</table><p>Probe changes are in units of the probe score's standard deviation over the base policy's responses; intervals are 95% bootstrap intervals over prompts (observed) or products of the factors' intervals (predicted).</p></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_interval_spans_all_corners() {
        let a = est(0.5, -0.1, 0.8);
        let b = est(2.0, 1.0, 3.0);
        let p = product(&[a, b]);
        assert!((p.value - 1.0).abs() < 1e-15);
        assert!((p.ci.lo + 0.3).abs() < 1e-15 && (p.ci.hi - 2.4).abs() < 1e-15);
    }
}
