//! Observed RLAIF on a real model (MEASURE §5): the model labels its own responses under a
//! constitution C, a linear Bradley–Terry reward model is fitted to those labels, the policy is
//! improved without weight updates, and the change in true value is measured by evaluators that
//! never saw C's labels, beside THEORY T1's prediction from `a_C` and `a_gen`.
//!
//! # The loop, exactly
//! `h(x, y)` is the pooled `resid_post` of block ℓ: the mean over the response tokens of the
//! prompt (chat template, one user turn, generation prompt) followed by the response's token
//! ids, run through the *unsteered* model (an empty response is read at the last prompt token).
//! `s_gen(x, y)` is the mean token log-probability of the response under the unsteered model.
//!
//! * **Round 0.** The base policy `π_0` samples n responses per prompt: `S_0`.
//! * **Round t = 1..T.**
//!   1. The judge under C scores every pair `(y_i, y_j)`, `i < j`, of the n responses to each
//!      prompt in `S_{t−1}` in both orders; the soft label is `σ(S_C)` (MEASURE §4).
//!   2. `r̂_t(y) = ⟨ŵ_t, h(y)⟩`: `(ŵ_t, ĉ₀) = argmin Σ_p [log(1 + e^{z_p}) − σ(S_C,p) z_p] +
//!      (ρ/2)|ŵ|²` with `z_p = ⟨ŵ, h(y_i) − h(y_j)⟩ + ĉ₀`, the simulator's logistic regression
//!      (THEORY §7 step 4, [`rlaif_sim::logistic::fit`]).
//!   3. **Best-of-n on top of `π_{t−1}`:** per prompt, the response of `S_{t−1}` with the highest
//!      `r̂_t` (`B_t`); `KL(B_t ‖ π_{t−1}) ≈ log n − (n−1)/n`. Its default-generation comparator
//!      picks the response with the highest `s_gen` instead (best-of-n under g).
//!   4. **Steering:** `v_t = v_{t−1} + η n̄ ŵ_t/|ŵ_t|` (`v_0 = 0`, `n̄` the mean per-token residual
//!      norm at ℓ over `S_0`), added to `resid_post(ℓ)` at every position while generating:
//!      `π_t` samples `S_t`. Rounds accumulate like `b_t = g + Σ_s ŵ_s/τ` in the simulator.
//!
//! # True value and the prediction
//! The human-data probe `p` (a logistic probe on the contrast set's dev split at ℓ, unit
//! vector) scores a response by `s_p(y) = ⟨p̂, h(y)⟩`; changes are reported in units of
//! `sd(s_p)` over `S_0`, with 95% bootstrap intervals over prompts. On held-out human
//! preference pairs the run measures `a_gen`, `a_C` (MEASURE §3), the probe's own alignment
//! `a_p = sin(π(P_p − ½))` and every reward model's human-label agreement.
//!
//! If the probe and the reward relate only through the true value u* (THEORY §2 with
//! `corr(s_p, r̂) = a_p · a(r̂)`) and `a(r̂) = a_C` (T1, population limit), then
//! * best-of-n moves the probe by `Δs_p / sd(s_p) = a_p · a_C · e_n`, with
//!   `e_n = E[max of n iid N(0, 1)]`; under g by `a_p · a_gen · e_n` (T1(c): RLAIF beats the
//!   default at the same KL iff `a_C > a_gen`);
//! * a tilt that moves the reward by `Δr̂/sd(r̂) = √(2K)` moves the probe by
//!   `a_p · a_C · √(2K)` (the efficiency identity `V = σ_u A √(2K)`); the run measures
//!   `Δr̂/sd(r̂)` of the steered policy and predicts its probe change from it.
//!
//! # Checkpoints
//! Every expensive stage writes through [`crate::run_dir`]: `probe.json` (atomic),
//! `human.jsonl` (judge and generation scores of the human pairs, one row per pair),
//! `human_acts.jsonl`, `round-t/samples.jsonl` (one row per response, activations included),
//! `round-t/labels.jsonl` (one row per judged pair) and `round-t/reward.json` (atomic). A
//! killed run, rerun with the same arguments, skips finished rows and files; every value the
//! report uses is read back from those files, so the final `result.json` is byte-identical
//! to an uninterrupted run's.

pub mod engine;
pub mod report;
pub mod stats;

use serde::{Deserialize, Serialize};

use crate::judge::PairScores;

/// What determines an RLAIF run's results; stored as the manifest's settings (a rerun with
/// other settings into the same folder is refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlaifSettings {
    /// Constitution name.
    pub constitution: String,
    /// The constitution as TOML (what the judge read).
    pub constitution_toml: String,
    /// The prompts the policy answers, in order.
    pub prompts: Vec<String>,
    /// Where the prompts came from (split rule or file).
    pub prompt_source: String,
    /// Indices (in the preference file) of the held-out human pairs.
    pub human_pairs: Vec<usize>,
    /// Rounds T.
    pub rounds: usize,
    /// Responses per prompt n (≥ 2).
    pub samples: usize,
    /// Token budget of a response.
    pub max_tokens: usize,
    /// Block ℓ whose `resid_post` is read and steered.
    pub layer: usize,
    /// Steering step η per round, in units of the mean residual norm.
    pub eta: f64,
    /// Sampling temperature.
    pub temperature: f64,
    /// Ridge ρ of the reward fit.
    pub ridge: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Weight storage.
    pub weights: String,
    /// The judge's answer prefix.
    pub answer_prefix: String,
}

/// One response of a round's policy (a row of `round-t/samples.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleRow {
    /// Prompt index.
    pub prompt: usize,
    /// Sample index within the prompt.
    pub sample: usize,
    /// Decoded response (end-of-generation token removed).
    pub text: String,
    /// Response token ids (end-of-generation token removed).
    pub tokens: Vec<u32>,
    /// `s_gen`: mean token log-probability under the unsteered model; `None` when empty.
    pub s_gen: Option<f64>,
    /// Mean per-token residual norm at ℓ over the pooled positions.
    pub resid_norm: f64,
    /// `h(x, y)`: little-endian f32 bytes, hex.
    pub h: String,
}

/// One judged pair of a round's responses (a row of `round-t/labels.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRow {
    /// Prompt index.
    pub prompt: usize,
    /// First response (`y1`).
    pub i: usize,
    /// Second response (`y2`).
    pub j: usize,
    /// Judge scores with `y1 = i`, per principle, both orders.
    pub scores: PairScores,
}

/// Activations of one human preference pair (a row of `human_acts.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanActsRow {
    /// Index of the pair in the preference file.
    pub index: usize,
    /// `h(x, chosen)`, hex f32.
    pub chosen: String,
    /// `h(x, rejected)`, hex f32.
    pub rejected: String,
}

/// The human-data probe at ℓ (`probe.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    /// Block ℓ.
    pub layer: usize,
    /// Unit direction (harmful → harmless), little-endian f64 bytes, hex.
    pub direction: String,
    /// Contrast items used to fit (dev split).
    pub n_train: usize,
    /// Held-out contrast items.
    pub n_test: usize,
    /// Held-out accuracy `[estimate, lo, hi]`.
    pub heldout_accuracy: [f64; 3],
    /// Held-out `q̂ = sin(π(AUC − ½))` `[estimate, lo, hi]`.
    pub heldout_q_hat: [f64; 3],
}

/// The reward model and steering vector of round t (`round-t/reward.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardFile {
    /// Round t ≥ 1.
    pub round: usize,
    /// Judged pairs it was fitted on.
    pub n_pairs: usize,
    /// Mean soft label `σ(S_C)` of `y1`.
    pub mean_soft_label: f64,
    /// `ŵ_t`, hex f64.
    pub w: String,
    /// `ĉ₀`.
    pub intercept: f64,
    /// Newton iterations.
    pub iterations: usize,
    /// Final objective.
    pub loss: f64,
    /// `n̄`: mean residual norm at ℓ over `S_0`.
    pub mean_resid_norm: f64,
    /// The accumulated steering vector `v_t` (as added), hex f32.
    pub steer: String,
}

/// Little-endian bytes of f32 values as lowercase hex.
pub fn hex_f32(v: &[f32]) -> String {
    v.iter()
        .flat_map(|x| x.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Little-endian bytes of f64 values as lowercase hex.
pub fn hex_f64(v: &[f64]) -> String {
    v.iter()
        .flat_map(|x| x.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(s: &str, width: usize, what: &str) -> Result<Vec<u8>, String> {
    if s.len() % (2 * width) != 0 || !s.is_ascii() {
        return Err(format!(
            "{what}: {} hex digits is not a whole number of {width}-byte values",
            s.len()
        ));
    }
    (0..s.len() / 2)
        .map(|i| {
            u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("{what}: bad hex at digit {}: {e}", 2 * i))
        })
        .collect()
}

/// Inverse of [`hex_f32`].
///
/// # Errors
/// A message naming `what` for malformed hex.
pub fn unhex_f32(s: &str, what: &str) -> Result<Vec<f32>, String> {
    Ok(unhex(s, 4, what)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Inverse of [`hex_f64`].
///
/// # Errors
/// A message naming `what` for malformed hex.
pub fn unhex_f64(s: &str, what: &str) -> Result<Vec<f64>, String> {
    Ok(unhex(s, 8, what)?
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_are_bit_exact() {
        let v = [0.0f32, -0.0, 1.5e-38, f32::MAX, -3.25, f32::MIN_POSITIVE];
        let back = unhex_f32(&hex_f32(&v), "v").unwrap();
        assert_eq!(
            v.map(f32::to_bits).to_vec(),
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        let w = [std::f64::consts::PI, -1e-300, 0.1 + 0.2];
        let back = unhex_f64(&hex_f64(&w), "w").unwrap();
        assert_eq!(w.to_vec(), back);
        assert!(unhex_f32("abc", "h").unwrap_err().contains("h:"));
        assert!(unhex_f64("zz00000000000000", "w").is_err());
    }
}
