//! Log-probabilities of continuations and next-token distributions.
//!
//! For a prompt `x` and continuation `y = (y_1..y_m)`:
//! `log π(y | x) = Σ_i log softmax(z(x, y_<i))[y_i]`, where `z` are the logits at the position
//! just before `y_i`. Sums are accumulated in f64.

use candle_core::Tensor;

use crate::hooks::{Capture, Intervention, Positions};
use crate::model::{log_softmax, Batch, KvCache, Model, ModelError};

/// Per-token and total log-probability of a continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuationScore {
    /// `log π(y_i | x, y_<i)` for each continuation token.
    pub token_logprobs: Vec<f64>,
    /// Their sum, `log π(y | x)`.
    pub total: f64,
}

impl ContinuationScore {
    fn new(token_logprobs: Vec<f64>) -> Self {
        let total = token_logprobs.iter().sum();
        Self {
            token_logprobs,
            total,
        }
    }

    /// Mean per-token log-probability (`s_gen` of MEASURE §3); NaN for an empty continuation.
    pub fn mean(&self) -> f64 {
        self.total / self.token_logprobs.len() as f64
    }
}

/// Scores `continuation` after `prompt` in one forward pass.
///
/// # Errors
/// [`ModelError::EmptyBatch`] if `prompt` is empty (the first token has no context), and any
/// forward-pass error.
pub fn score_continuation(
    model: &Model,
    prompt: &[u32],
    continuation: &[u32],
    interventions: &[Intervention],
) -> Result<ContinuationScore, ModelError> {
    if prompt.is_empty() {
        return Err(ModelError::EmptyBatch);
    }
    if continuation.is_empty() {
        return Ok(ContinuationScore::new(Vec::new()));
    }
    let n = prompt.len();
    let mut tokens = prompt.to_vec();
    tokens.extend_from_slice(continuation);
    let at = (n - 1..n - 1 + continuation.len()).collect();
    let batch = Batch::single(tokens).logits_at(Positions::Indices(at));
    let mut cache = model.new_cache();
    let logits = model.forward(&batch, &mut Capture::none(), interventions, &mut cache)?;
    Ok(ContinuationScore::new(pick(&logits[0], continuation)?))
}

/// Scores many continuations of one prompt: the prompt is computed once, its KV cache
/// repeated for every continuation, and the continuations run as one padded batch.
///
/// # Errors
/// As [`score_continuation`].
pub fn score_continuations(
    model: &Model,
    prompt: &[u32],
    continuations: &[Vec<u32>],
    interventions: &[Intervention],
) -> Result<Vec<ContinuationScore>, ModelError> {
    let mut cache = model.new_cache();
    let first = prefill(model, &mut cache, prompt, interventions)?;
    score_after_prefix(model, &cache, &first, continuations, interventions)
}

/// Like [`score_continuations`] but from an already computed one-sequence prefix `cache`
/// whose last-position log-probabilities are `first` (`[vocab]`, from [`prefill`]). The
/// cache is not modified.
///
/// # Errors
/// [`ModelError::BatchMismatch`] unless `cache` holds one sequence; forward-pass errors.
pub fn score_after_prefix(
    model: &Model,
    cache: &KvCache,
    first: &Tensor,
    continuations: &[Vec<u32>],
    interventions: &[Intervention],
) -> Result<Vec<ContinuationScore>, ModelError> {
    let first: Vec<f32> = first.to_vec1()?;
    let mut out: Vec<Option<ContinuationScore>> = vec![None; continuations.len()];
    // Continuations of length ≤ 1 need only the prefix's distribution.
    let mut rows = Vec::new();
    for (i, c) in continuations.iter().enumerate() {
        match c.first() {
            None => out[i] = Some(ContinuationScore::new(Vec::new())),
            Some(&t0) => {
                let lp0 = lookup(&first, t0)?;
                if c.len() == 1 {
                    out[i] = Some(ContinuationScore::new(vec![lp0]));
                } else {
                    rows.push((i, lp0));
                }
            }
        }
    }
    if !rows.is_empty() {
        let mut cache = cache.repeat(rows.len())?;
        // Feed y_1..y_{m-1}; position j predicts y_{j+1}.
        let tokens = rows
            .iter()
            .map(|&(i, _)| continuations[i][..continuations[i].len() - 1].to_vec())
            .collect();
        let batch = Batch::new(tokens).logits_at(Positions::All);
        let logits = model.forward(&batch, &mut Capture::none(), interventions, &mut cache)?;
        for ((i, lp0), l) in rows.into_iter().zip(&logits) {
            let mut lps = vec![lp0];
            lps.extend(pick(l, &continuations[i][1..])?);
            out[i] = Some(ContinuationScore::new(lps));
        }
    }
    Ok(out
        .into_iter()
        .map(|s| s.expect("every row scored"))
        .collect())
}

/// Runs `prompt` into `cache` and returns the next-token log-probabilities `[vocab]` (f32).
///
/// # Errors
/// Forward-pass errors, e.g. [`ModelError::EmptyBatch`] for an empty prompt.
pub fn prefill(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[u32],
    interventions: &[Intervention],
) -> Result<Tensor, ModelError> {
    let logits = model.forward(
        &Batch::single(prompt.to_vec()),
        &mut Capture::none(),
        interventions,
        cache,
    )?;
    Ok(log_softmax(&logits[0])?.get(0)?)
}

/// The next-token log-probabilities `[vocab]` after `prompt`.
///
/// # Errors
/// As [`prefill`].
pub fn next_token_logprobs(
    model: &Model,
    prompt: &[u32],
    interventions: &[Intervention],
) -> Result<Vec<f32>, ModelError> {
    let mut cache = model.new_cache();
    Ok(prefill(model, &mut cache, prompt, interventions)?.to_vec1()?)
}

/// The `k` most likely `(id, log-prob)` pairs, most likely first (ties: lower id first).
pub fn top_k(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut ix: Vec<u32> = (0..logprobs.len() as u32).collect();
    let by = |a: &u32, b: &u32| {
        logprobs[*b as usize]
            .total_cmp(&logprobs[*a as usize])
            .then(a.cmp(b))
    };
    if k < ix.len() && k > 0 {
        ix.select_nth_unstable_by(k - 1, by);
        ix.truncate(k);
    }
    ix.sort_unstable_by(by);
    ix.truncate(k);
    ix.into_iter().map(|i| (i, logprobs[i as usize])).collect()
}

/// Log-probabilities of `targets[j]` under row `j` of `logits` (`[m, vocab]`).
fn pick(logits: &Tensor, targets: &[u32]) -> Result<Vec<f64>, ModelError> {
    let lp: Vec<Vec<f32>> = log_softmax(logits)?.to_vec2()?;
    lp.iter()
        .zip(targets)
        .map(|(row, &t)| lookup(row, t))
        .collect()
}

fn lookup(row: &[f32], id: u32) -> Result<f64, ModelError> {
    row.get(id as usize)
        .map(|&x| f64::from(x))
        .ok_or(ModelError::TokenOutOfRange {
            seq: 0,
            pos: 0,
            id,
            vocab: row.len(),
        })
}
