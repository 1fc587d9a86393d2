//! `lvh tokenize`: the model's own tokenization of a prompt, ids and vocabulary pieces.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use candle_core::quantized::gguf_file::Content;
use lm_runtime::fetch;
use lm_runtime::tokenizer::Tokenizer;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF file, or a known model name (fetched on first use). Default: smollm2-135m-instruct.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The text to tokenize; control tokens written in it (`<|im_start|>`) become their ids.
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the text from a file, verbatim (a trailing newline is part of the text).
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Do not add the BOS / EOS tokens the model's metadata asks for.
    #[arg(long)]
    pub no_add_special: bool,
    /// Print `{"ids": [...], "pieces": [...]}`; pieces are vocabulary entries (`Ġworld`, `▁world`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give --prompt or --prompt-file"),
    };
    let path = fetch::resolve_model(args.model.as_deref())?;
    let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let content = Content::read(&mut f)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading GGUF header of {}", path.display()))?;
    let tok = Tokenizer::from_gguf(&content)
        .with_context(|| format!("tokenizer of {}", path.display()))?;
    let ids = tok.encode(&text, !args.no_add_special);
    let pieces = tok.pieces(&ids)?;
    if args.json {
        let out = serde_json::json!({ "ids": ids, "pieces": pieces });
        println!("{out}");
    } else {
        for (id, piece) in ids.iter().zip(&pieces) {
            println!("{id}\t{piece:?}");
        }
        eprintln!("{} tokens", ids.len());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn prompt_and_prompt_file_are_exclusive_and_one_is_required() {
        assert!(Cli::try_parse_from(["lvh", "tokenize"]).is_err());
        assert!(
            Cli::try_parse_from(["lvh", "tokenize", "--prompt", "x", "--prompt-file", "f"])
                .is_err()
        );
        let cli = Cli::try_parse_from(["lvh", "tokenize", "--prompt", "<|im_start|>x", "--json"])
            .unwrap();
        match cli.command {
            Command::Tokenize(a) => {
                assert_eq!(a.prompt.as_deref(), Some("<|im_start|>x"));
                assert!(a.json && !a.no_add_special && a.model.is_none());
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
