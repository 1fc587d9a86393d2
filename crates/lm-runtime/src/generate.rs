//! Token generation: greedy or seeded sampling with temperature, top-k and top-p, stopping at
//! end-of-sequence ids, stop token sequences, stop strings, or a token budget.
//!
//! Sampling draws from `p_i ∝ exp(z_i / T)` restricted to the `k` most likely tokens, then to
//! the smallest prefix (by descending probability) whose mass reaches `top_p`. `T = 0` is
//! greedy (argmax, ties to the lowest id). The probabilities are accumulated in f64.

use candle_core::Tensor;
use rand::Rng;

use crate::hooks::{Capture, Intervention};
use crate::model::{Batch, KvCache, Model, ModelError};

/// How the next token is chosen from logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; `0` means greedy.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens with total probability ≥ `top_p`
    /// (`None` or `1.0`: all).
    pub top_p: Option<f32>,
}

impl Sampling {
    /// Greedy decoding.
    pub const GREEDY: Self = Self {
        temperature: 0.0,
        top_k: None,
        top_p: None,
    };

    /// Picks a token id from `logits` (`[vocab]`).
    ///
    /// # Panics
    /// Never for a non-empty `logits`; an empty slice returns 0.
    pub fn pick(&self, logits: &[f32], rng: &mut impl Rng) -> u32 {
        let argmax = || {
            let mut best = 0;
            for (i, &z) in logits.iter().enumerate() {
                if z > logits[best] {
                    best = i;
                }
            }
            best as u32
        };
        if self.temperature <= 0.0 || logits.is_empty() {
            return argmax();
        }
        // Candidates sorted by descending logit (ties: lower id first).
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if let Some(k) = self.top_k.filter(|&k| k > 0 && k < idx.len()) {
            idx.select_nth_unstable_by(k - 1, by_logit);
            idx.truncate(k);
        }
        idx.sort_unstable_by(by_logit);
        let t = f64::from(self.temperature);
        let z0 = f64::from(logits[idx[0] as usize]);
        let mut p: Vec<f64> = idx
            .iter()
            .map(|&i| ((f64::from(logits[i as usize]) - z0) / t).exp())
            .collect();
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
        if let Some(top_p) = self.top_p.filter(|&q| q < 1.0) {
            let mut mass = 0.0;
            let mut keep = p.len();
            for (j, &pj) in p.iter().enumerate() {
                mass += pj;
                if mass >= f64::from(top_p) {
                    keep = j + 1;
                    break;
                }
            }
            p.truncate(keep);
            idx.truncate(keep);
        }
        let total: f64 = p.iter().sum();
        let mut u = rng.gen::<f64>() * total;
        for (j, &pj) in p.iter().enumerate() {
            if u < pj {
                return idx[j];
            }
            u -= pj;
        }
        idx[idx.len() - 1]
    }
}

/// Turns generated ids into text (e.g. a tokenizer's decode).
pub type Decode<'a> = &'a dyn Fn(&[u32]) -> String;

/// When to stop.
#[derive(Default)]
pub struct StopRule<'a> {
    /// Budget of new tokens.
    pub max_tokens: usize,
    /// End-of-sequence ids (the id is kept as the last generated token).
    pub eos: Vec<u32>,
    /// Stop after generating any of these token sequences.
    pub stop_sequences: Vec<Vec<u32>>,
    /// Stop once the decoded generation contains any of these strings.
    pub stop_strings: Vec<String>,
    /// Decodes generated ids to text; needed when `stop_strings` is not empty.
    pub decode: Option<Decode<'a>>,
}

impl std::fmt::Debug for StopRule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopRule")
            .field("max_tokens", &self.max_tokens)
            .field("eos", &self.eos)
            .field("stop_sequences", &self.stop_sequences)
            .field("stop_strings", &self.stop_strings)
            .finish_non_exhaustive()
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-sequence id was generated.
    Eos(u32),
    /// Stop sequence `i` of the rule was generated.
    StopSequence(usize),
    /// Stop string `i` of the rule appeared in the decoded text.
    StopString(usize),
    /// The token budget was used up.
    MaxTokens,
}

/// The result of [`generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids (including the stopping EOS / stop sequence, if any).
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub reason: StopReason,
}

/// Appends `prompt` to `cache` (which may already hold a prefix), then generates up to
/// `stop.max_tokens` tokens. `capture` and `interventions` apply to the prompt and every
/// step (so a steering vector acts while generating).
///
/// # Errors
/// Any [`ModelError`] of the forward pass (e.g. the prompt is empty and the cache too, or the
/// context overflows).
#[allow(clippy::too_many_arguments)] // each argument is a distinct, explicit input
pub fn generate(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[u32],
    sampling: &Sampling,
    stop: &StopRule<'_>,
    capture: &mut Capture,
    interventions: &[Intervention],
    rng: &mut impl Rng,
) -> Result<Generation, ModelError> {
    if stop.max_tokens == 0 {
        return Ok(Generation {
            tokens: Vec::new(),
            reason: StopReason::MaxTokens,
        });
    }
    let logits = last_logits(model.forward(
        &Batch::single(prompt.to_vec()),
        capture,
        interventions,
        cache,
    )?)?;
    generate_from(
        model,
        cache,
        logits,
        sampling,
        stop,
        capture,
        interventions,
        rng,
    )
}

/// Generates from a one-sequence `cache` whose next-token logits are `logits` (`[vocab]`,
/// e.g. the last row of a prefill the caller ran itself, with its own capture).
///
/// # Errors
/// Any [`ModelError`] of the forward pass.
#[allow(clippy::too_many_arguments)] // each argument is a distinct, explicit input
pub fn generate_from(
    model: &Model,
    cache: &mut KvCache,
    mut logits: Vec<f32>,
    sampling: &Sampling,
    stop: &StopRule<'_>,
    capture: &mut Capture,
    interventions: &[Intervention],
    rng: &mut impl Rng,
) -> Result<Generation, ModelError> {
    let mut tokens = Vec::new();
    if stop.max_tokens == 0 {
        return Ok(Generation {
            tokens,
            reason: StopReason::MaxTokens,
        });
    }
    loop {
        let next = sampling.pick(&logits, rng);
        tokens.push(next);
        if let Some(reason) = stopped(&tokens, stop) {
            return Ok(Generation { tokens, reason });
        }
        if tokens.len() >= stop.max_tokens
            || cache.seq_lens().first().copied().unwrap_or(0) + 1 > model.config().context_length
        {
            return Ok(Generation {
                tokens,
                reason: StopReason::MaxTokens,
            });
        }
        logits = last_logits(model.forward(
            &Batch::single(vec![next]),
            capture,
            interventions,
            cache,
        )?)?;
    }
}

fn last_logits(mut rows: Vec<Tensor>) -> Result<Vec<f32>, ModelError> {
    let t = rows.swap_remove(0);
    let n = t.dim(0)?;
    Ok(t.get(n - 1)?.to_vec1::<f32>()?)
}

fn stopped(tokens: &[u32], stop: &StopRule<'_>) -> Option<StopReason> {
    let last = *tokens.last()?;
    if stop.eos.contains(&last) {
        return Some(StopReason::Eos(last));
    }
    if let Some(i) = stop
        .stop_sequences
        .iter()
        .position(|s| !s.is_empty() && tokens.ends_with(s))
    {
        return Some(StopReason::StopSequence(i));
    }
    if let (false, Some(decode)) = (stop.stop_strings.is_empty(), stop.decode) {
        let text = decode(tokens);
        if let Some(i) = stop
            .stop_strings
            .iter()
            .position(|s| !s.is_empty() && text.contains(s.as_str()))
        {
            return Some(StopReason::StopString(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn greedy_is_argmax_and_sampling_matches_softmax() {
        let logits = [0.0f32, 2.0, 1.0, -1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(Sampling::GREEDY.pick(&logits, &mut rng), 1);
        let s = Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.pick(&logits, &mut rng) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&x| f64::from(x).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let p = f64::from(logits[i]).exp() / z;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (c as f64 / n as f64 - p).abs() < 5.0 * se,
                "token {i}: {c} vs {p}"
            );
        }
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let logits = [0.0f32, 3.0, 2.9, -1.0, 2.8];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let k2 = Sampling {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        };
        let p_small = Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.3),
        };
        for _ in 0..2000 {
            assert!(matches!(k2.pick(&logits, &mut rng), 1 | 2));
            assert_eq!(p_small.pick(&logits, &mut rng), 1);
        }
    }

    #[test]
    fn stop_rules() {
        let dec = |ids: &[u32]| ids.iter().map(|i| i.to_string()).collect::<String>();
        let rule = StopRule {
            max_tokens: 10,
            eos: vec![9],
            stop_sequences: vec![vec![4, 5]],
            stop_strings: vec!["77".into()],
            decode: Some(&dec),
        };
        assert_eq!(stopped(&[1, 9], &rule), Some(StopReason::Eos(9)));
        assert_eq!(
            stopped(&[3, 4, 5], &rule),
            Some(StopReason::StopSequence(0))
        );
        assert_eq!(stopped(&[7, 7], &rule), Some(StopReason::StopString(0)));
        assert_eq!(stopped(&[5, 4], &rule), None);
    }
}
