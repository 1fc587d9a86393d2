//! The judge and the generation preference on a loaded model, or on any [`LogprobBackend`]
//! (a model server: `crate::remote::RemoteBackend`).

use lm_runtime::model::Model;
use lm_runtime::score::{score_continuations, ContinuationScore};
use lm_runtime::template::PromptFormat;
use lm_runtime::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use super::prefix::{next_token_logprobs_at, PrefixReuse};
use super::prompt::{conversation_messages, encode, JudgePrompter, Order, ANSWER_PREFIX};
use super::JudgeError;
use crate::constitution::Constitution;

/// Settings of the judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeConfig {
    /// Text after the assistant header; the next token is the option letter.
    pub answer_prefix: String,
    /// Shared-prefix reuse through the KV cache.
    pub reuse: PrefixReuse,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            answer_prefix: ANSWER_PREFIX.to_owned(),
            reuse: PrefixReuse::default(),
        }
    }
}

/// The judge's raw scores for one pair `(y1, y2)`, per principle `k` (constitution order):
/// `ab[k] = score_k(y1 as A, y2 as B)`, `ba[k] = score_k(y2 as A, y1 as B)`, each
/// `log p(A) − log p(B)` of the next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairScores {
    /// Order 1 (y1 shown as (A)), per principle.
    pub ab: Vec<f64>,
    /// Order 2 (y2 shown as (A)), per principle.
    pub ba: Vec<f64>,
}

impl PairScores {
    /// The weighted order scores `(Σ w̄_k ab_k, Σ w̄_k ba_k)` with `weights` normalised to sum 1.
    ///
    /// # Panics
    /// If `weights` has another length than the principle scores.
    pub fn aggregate(&self, weights: &[f64]) -> (f64, f64) {
        assert_eq!(weights.len(), self.ab.len(), "one weight per principle");
        let dot = |v: &[f64]| v.iter().zip(weights).map(|(s, w)| s * w).sum::<f64>();
        (dot(&self.ab), dot(&self.ba))
    }
}

/// Where the judge's log-probabilities come from: the local runtime ([`LocalBackend`]) or a
/// model server (`crate::remote::RemoteBackend`). Both take token ids, so a judge prompt is the
/// same tokens whichever backend computes it.
pub trait LogprobBackend: std::fmt::Debug {
    /// For each sequence `s`, `log p(t | s)` for each `t` in `ids` (next token after the whole
    /// of `s`); rows in input order.
    ///
    /// # Errors
    /// An empty sequence; the backend's failures.
    fn next_token_logprobs_at(
        &self,
        seqs: &[Vec<u32>],
        ids: &[u32],
    ) -> Result<Vec<Vec<f64>>, JudgeError>;

    /// `log π(c | prompt) = Σ_i log π(c_i | prompt, c_<i)` for each continuation `c`, per token.
    ///
    /// # Errors
    /// An empty prompt; the backend's failures.
    fn score_continuations(
        &self,
        prompt: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<ContinuationScore>, JudgeError>;
}

/// A loaded model: next-token log-probabilities through the prefix-sharing trie walk of
/// [`super::prefix`], continuations with the prompt's KV cache shared.
#[derive(Debug)]
pub struct LocalBackend<'a> {
    /// The model.
    pub model: &'a Model,
    /// Shared-prefix reuse through the KV cache.
    pub reuse: PrefixReuse,
}

impl LogprobBackend for LocalBackend<'_> {
    fn next_token_logprobs_at(
        &self,
        seqs: &[Vec<u32>],
        ids: &[u32],
    ) -> Result<Vec<Vec<f64>>, JudgeError> {
        Ok(next_token_logprobs_at(self.model, seqs, ids, self.reuse)?)
    }

    fn score_continuations(
        &self,
        prompt: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<ContinuationScore>, JudgeError> {
        Ok(score_continuations(self.model, prompt, continuations, &[])?)
    }
}

/// The model as judge.
#[derive(Debug)]
pub struct Judge<'a> {
    backend: Box<dyn LogprobBackend + 'a>,
    format: &'a PromptFormat,
    tokenizer: &'a Tokenizer,
    prompter: JudgePrompter<'a>,
}

impl<'a> Judge<'a> {
    /// A judge on `model`, checking the option tokens (see [`JudgePrompter::new`]).
    ///
    /// # Errors
    /// As [`JudgePrompter::new`].
    pub fn new(
        model: &'a Model,
        format: &'a PromptFormat,
        tokenizer: &'a Tokenizer,
        config: &JudgeConfig,
    ) -> Result<Self, JudgeError> {
        Self::with_backend(
            Box::new(LocalBackend {
                model,
                reuse: config.reuse,
            }),
            format,
            tokenizer,
            &config.answer_prefix,
        )
    }

    /// A judge whose log-probabilities come from `backend`; prompts are rendered with `format`
    /// and tokenized with `tokenizer` (those of the model the backend runs), followed by
    /// `answer_prefix`. Prefix reuse is the backend's business.
    ///
    /// # Errors
    /// As [`JudgePrompter::new`].
    pub fn with_backend(
        backend: Box<dyn LogprobBackend + 'a>,
        format: &'a PromptFormat,
        tokenizer: &'a Tokenizer,
        answer_prefix: &str,
    ) -> Result<Self, JudgeError> {
        Ok(Self {
            backend,
            format,
            tokenizer,
            prompter: JudgePrompter::new(format, tokenizer, answer_prefix)?,
        })
    }

    /// The prompt builder.
    pub fn prompter(&self) -> &JudgePrompter<'a> {
        &self.prompter
    }

    /// Judges `(y1, y2)` after `prompt` under every principle of `constitution`, both orders.
    /// Deterministic: no sampling, the same inputs give the same scores.
    ///
    /// # Errors
    /// Template and model errors.
    pub fn judge_pair(
        &self,
        constitution: &Constitution,
        prompt: &str,
        y1: &str,
        y2: &str,
    ) -> Result<PairScores, JudgeError> {
        let principles = constitution.effective_principles();
        let mut seqs = Vec::with_capacity(2 * principles.len());
        for p in &principles {
            for order in [Order::FirstAsA, Order::SecondAsA] {
                seqs.push(
                    self.prompter
                        .tokens(constitution, &p.text, prompt, y1, y2, order)?,
                );
            }
        }
        let lp = self
            .backend
            .next_token_logprobs_at(&seqs, &self.prompter.option_ids())?;
        let score = |r: &Vec<f64>| r[0] - r[1];
        Ok(PairScores {
            ab: lp.iter().step_by(2).map(score).collect(),
            ba: lp.iter().skip(1).step_by(2).map(score).collect(),
        })
    }

    /// The generation preference `s_gen(x, y) = mean token log π(y | x)` of each response,
    /// after the conversation rendered with the chat template and its generation prompt (no
    /// constitution). The prompt is computed once for both. An empty response has no tokens
    /// and scores NaN (counted as a tie downstream).
    ///
    /// # Errors
    /// [`JudgeError::Empty`] for a prompt with no tokens; template and model errors.
    pub fn generation_scores(
        &self,
        index: usize,
        prompt: &str,
        responses: [&str; 2],
    ) -> Result<[f64; 2], JudgeError> {
        let text = self.format.render(&conversation_messages(prompt), true)?;
        let ids = encode(self.tokenizer, &text);
        if ids.is_empty() {
            return Err(JudgeError::Empty {
                index,
                what: "prompt",
            });
        }
        let conts: Vec<Vec<u32>> = responses
            .iter()
            .map(|r| self.tokenizer.encode(r.trim(), false))
            .collect();
        let s = self.backend.score_continuations(&ids, &conts)?;
        Ok([s[0].mean(), s[1].mean()])
    }
}

/// Generation scores of one pair, `[s_gen(y1), s_gen(y2)]`.
pub type GenScores = [f64; 2];
