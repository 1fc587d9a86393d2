//! Value geometry on a real model (MEASURE §1–§3): pooled activations of contrast sets
//! ([`extract`]), direction files in the formats other tools read ([`export`]), and the
//! refusal score with its causal checks ([`refusal`]).
//!
//! Orientation everywhere: a direction `d̂` points from harmful to harmless (positives project
//! higher, as in `value-directions`). The refusal direction of the refusal-direction work is
//! therefore `r̂ = −d̂`.

pub mod export;
pub mod extract;
pub mod refusal;

use std::path::PathBuf;

use anyhow::Result;

use crate::cmd::run::{encode_prompt, Loaded, PromptArgs, Weights};

/// Loads a model (default: SmolLM2, fetched on first use) with its tokenizer and template.
///
/// # Errors
/// An unresolvable or unreadable model file.
pub fn load_model(model: Option<PathBuf>, weights: Weights) -> Result<Loaded> {
    PromptArgs {
        model,
        prompt: None,
        prompt_file: None,
        tokens: None,
        chat: true,
        weights,
    }
    .load()
}

/// The prompt of a contrast item: one user turn in the model's chat template with the
/// generation prompt (MEASURE §1), as token ids.
///
/// # Errors
/// Template or tokenization failures.
pub(crate) fn contrast_prompt(m: &Loaded, text: &str) -> Result<Vec<u32>> {
    encode_prompt(m, text, true)
}
