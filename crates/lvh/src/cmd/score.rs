//! `lvh score`: log-probabilities of continuations after a prompt,
//! `log π(y | x) = Σ_i log π(y_i | x, y_<i)`, per token and in total.
//!
//! Each continuation is tokenized on its own (no special tokens added) and appended to the
//! prompt's ids; the prompt is computed once and its KV cache shared by all continuations.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use lm_runtime::score::score_continuations;

use super::run::PromptArgs;

/// Arguments of `lvh score`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: PromptArgs,
    /// Continuation text to score (repeatable).
    #[arg(long)]
    pub continuation: Vec<String>,
    /// A continuation as comma-separated token ids (repeatable).
    #[arg(long)]
    pub continuation_tokens: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `lvh score`.
///
/// # Errors
/// No continuation given, bad token lists, model or prompt errors.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.continuation.is_empty() && args.continuation_tokens.is_empty() {
        bail!("give at least one --continuation or --continuation-tokens");
    }
    let m = args.input.load()?;
    let prompt = args.input.tokens(&m)?;
    let mut conts: Vec<(String, Vec<u32>)> = args
        .continuation
        .iter()
        .map(|c| (c.clone(), m.tokenizer.encode(c, false)))
        .collect();
    for list in &args.continuation_tokens {
        let ids = list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .with_context(|| format!("--continuation-tokens: `{s}` is not a token id"))
            })
            .collect::<Result<Vec<u32>>>()?;
        conts.push((m.tokenizer.decode(&ids), ids));
    }
    let ids: Vec<Vec<u32>> = conts.iter().map(|(_, ids)| ids.clone()).collect();
    let scores = score_continuations(&m.model, &prompt, &ids, &[]).context("scoring")?;
    let mut out = Vec::new();
    for ((text, ids), s) in conts.iter().zip(&scores) {
        let pieces: Vec<String> = ids.iter().map(|&i| m.tokenizer.decode(&[i])).collect();
        if !args.json {
            println!(
                "{text:?}: total {:.4}, mean {:.4} over {} tokens",
                s.total,
                s.mean(),
                ids.len()
            );
            for ((id, piece), lp) in ids.iter().zip(&pieces).zip(&s.token_logprobs) {
                println!("  {id:>7} {piece:?} {lp:.4}");
            }
        }
        out.push(serde_json::json!({
            "continuation": text,
            "tokens": ids,
            "pieces": pieces,
            "token_logprobs": s.token_logprobs,
            "total": s.total,
            "mean": if ids.is_empty() { None } else { Some(s.mean()) },
        }));
    }
    if args.json {
        let obj = serde_json::json!({
            "model": m.path,
            "prompt_tokens": prompt,
            "scores": out,
        });
        println!("{}", serde_json::to_string_pretty(&obj)?);
    }
    Ok(ExitCode::SUCCESS)
}
