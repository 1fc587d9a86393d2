//! The AI judge of MEASURE §4, the generation–judgment gap of §3 and principle sensitivity.
//!
//! For a prompt `x` and two responses `y1`, `y2`, the model reads a multiple-choice prompt (the
//! principle, the conversation, `(A)` and `(B)`, an answer cue) rendered with its own chat
//! template and followed by [`prompt::ANSWER_PREFIX`], so that the next token is the letter:
//!
//! ```text
//! score(y_a as A, y_b as B) = log p(A) − log p(B)                (next token)
//! S_C(x, y1, y2) = ½[score(y1 as A, y2 as B) − score(y2 as A, y1 as B)]   (both orders)
//! b_pos          = ½[score(y1 as A, y2 as B) + score(y2 as A, y1 as B)]   (position bias)
//! ```
//!
//! A constitution with principles `k = 1..K` and weights `w_k` gets `S_C = Σ_k w̄_k S_k` with
//! `w̄_k = w_k / Σ w`; every per-principle score is kept.
//!
//! Layout: [`prompt`] renders and tokenizes judge prompts; [`prefix`] computes next-token
//! log-probabilities of many sequences sharing prefixes through the KV cache; [`engine`] runs
//! the judge and the generation scores on a model; [`stats`] and [`sensitivity`] are pure
//! functions over score tables (no model), so reports can be recomputed from saved scores.

pub mod engine;
pub mod prefix;
pub mod prompt;
pub mod sensitivity;
pub mod stats;

pub use engine::{GenScores, Judge, JudgeConfig, PairScores};
pub use prompt::{JudgePrompter, ANSWER_PREFIX};

/// Errors of the judge.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] lm_runtime::model::ModelError),
    /// The model server failed.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// The chat template failed to render.
    #[error(transparent)]
    Template(#[from] lm_runtime::template::TemplateError),
    /// An option letter is not one token where the judge reads it.
    #[error(
        "option `{letter}` is not a single token after the answer prefix {prefix:?}: the tokenizer \
         spells it as {pieces:?}; choose another --answer-prefix"
    )]
    OptionNotSingleToken {
        /// The letter.
        letter: String,
        /// The answer prefix in force.
        prefix: String,
        /// How the tokenizer spells the letter there.
        pieces: Vec<u32>,
    },
    /// Both option letters map to the same token.
    #[error("options (A) and (B) map to the same token id {0}")]
    SameOptionToken(u32),
    /// A prompt that tokenizes to nothing.
    #[error("pair {index}: the {what} is empty after tokenization")]
    Empty {
        /// Pair index.
        index: usize,
        /// Which text.
        what: &'static str,
    },
}
