//! `lvh score`: log-probabilities of continuations after a prompt,
//! `log π(y | x) = Σ_i log π(y_i | x, y_<i)`, per token and in total.
//!
//! Each continuation is tokenized on its own (no special tokens added) and appended to the
//! prompt's ids; the prompt is computed once and its KV cache shared by all continuations.
//!
//! With `--endpoint URL` a server scores the same token ids (prompt and continuations
//! tokenized by `--model`'s tokenizer, whose weights are not loaded): by `echo` where the server
//! supports it (vLLM), else one `logit_bias`-forced request per continuation token (llama.cpp).

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use lm_runtime::score::score_continuations;

use super::run::{EndpointArgs, PromptArgs, Prompting};

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
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// Runs `lvh score`.
///
/// # Errors
/// No continuation given, bad token lists, model or prompt errors.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.continuation.is_empty() && args.continuation_tokens.is_empty() {
        bail!("give at least one --continuation or --continuation-tokens");
    }
    let client = args.endpoint.client()?;
    // Locally the whole model; with --endpoint only its tokenizer and template.
    let (local, remote) = match &client {
        None => (Some(args.input.load()?), None),
        Some(c) => {
            let p = Prompting::load(args.input.model.as_deref())?;
            p.check_server(c, "")?;
            (None, Some(p))
        }
    };
    let (path, tokenizer, format) = match (&local, &remote) {
        (Some(m), _) => (&m.path, &m.tokenizer, &m.format),
        (None, Some(p)) => (&p.path, &p.tokenizer, &p.format),
        (None, None) => unreachable!("one of them is loaded"),
    };
    let prompt = args.input.tokens_with(tokenizer, format)?;
    let mut conts: Vec<(String, Vec<u32>)> = args
        .continuation
        .iter()
        .map(|c| (c.clone(), tokenizer.encode(c, false)))
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
        conts.push((tokenizer.decode(&ids), ids));
    }
    let ids: Vec<Vec<u32>> = conts.iter().map(|(_, ids)| ids.clone()).collect();
    let scores = match (&local, &client) {
        (Some(m), _) => score_continuations(&m.model, &prompt, &ids, &[]).context("scoring")?,
        (None, Some(c)) => ids
            .iter()
            .map(|y| c.continuation_logprob_ids(&prompt, y))
            .collect::<Result<Vec<_>, _>>()
            .context("scoring on the server")?,
        (None, None) => unreachable!("one of them is loaded"),
    };
    let mut out = Vec::new();
    for ((text, ids), s) in conts.iter().zip(&scores) {
        let pieces: Vec<String> = ids.iter().map(|&i| tokenizer.decode(&[i])).collect();
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
        let mut obj = serde_json::json!({
            "model": path,
            "prompt_tokens": prompt,
            "scores": out,
        });
        if let Some(c) = &client {
            obj["endpoint"] = serde_json::json!(c.endpoint());
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
    }
    Ok(ExitCode::SUCCESS)
}
