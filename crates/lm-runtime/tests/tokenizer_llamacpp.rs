//! Tokenization identical to llama.cpp's on the real models.
//!
//! The fixtures `tests/fixtures/tokenizer_reference_*.json` hold llama.cpp's token ids for the
//! prompts of `tests/fixtures/tokenizer_prompts.json` (plain text, ChatML and Gemma turns, code,
//! unicode and emoji, numbers, runs of spaces / newlines / tabs, contractions, more than 100 tokens,
//! special tokens inside text, HTML, the empty string), made with
//! `scripts/llamacpp_reference.py --model M --prompts tests/fixtures/tokenizer_prompts.json
//! --top-logprobs 20` (xllamacpp 2026.10.11549).
//!
//! Set `LVH_TEST_MODEL` to the SmolLM2 GGUF path and/or `LVH_TEST_GEMMA` to the Gemma 3 one; each
//! fixture runs against the file whose sha256 it records. Without either the test prints why it
//! skips.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use lm_runtime::fetch::sha256_file;
use lm_runtime::tokenizer::Tokenizer;
use serde_json::Value;

const FIXTURES: &[&str] = &[
    "tokenizer_reference_smollm2.json",
    "tokenizer_reference_gemma3.json",
];

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn models() -> Option<Vec<(PathBuf, String)>> {
    let paths: Vec<PathBuf> = ["LVH_TEST_MODEL", "LVH_TEST_GEMMA"]
        .iter()
        .filter_map(std::env::var_os)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        return None;
    }
    Some(
        paths
            .into_iter()
            .map(|p| {
                let sha = sha256_file(&p).unwrap_or_else(|e| panic!("{e}"));
                (p, sha)
            })
            .collect(),
    )
}

fn load(path: &Path) -> Tokenizer {
    let mut f = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut f).unwrap();
    Tokenizer::from_gguf(&content).unwrap()
}

#[test]
fn token_ids_match_llama_cpp() {
    let Some(models) = models() else {
        eprintln!(
            "skipped: set LVH_TEST_MODEL (SmolLM2) and/or LVH_TEST_GEMMA (Gemma 3) to GGUF paths"
        );
        return;
    };
    let mut checked = 0;
    for name in FIXTURES {
        let fx = fixture(name);
        let sha = fx["model_sha256"].as_str().unwrap();
        let Some((path, _)) = models.iter().find(|(_, s)| s == sha) else {
            eprintln!("skipped {name}: neither LVH_TEST_MODEL nor LVH_TEST_GEMMA has sha256 {sha}");
            continue;
        };
        let tok = load(path);
        let add_special = fx["add_special"].as_bool().unwrap();
        let mut mismatches = Vec::new();
        for p in fx["prompts"].as_array().unwrap() {
            let text = p["text"].as_str().unwrap();
            let want: Vec<u32> = p["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let got = tok.encode(text, add_special);
            if got != want {
                mismatches.push(format!(
                    "{name} / {}:\n  llama.cpp {want:?}\n  ours      {got:?}",
                    p["name"]
                ));
            }
            // Decoding gives the text back (after the BOS the model adds).
            let body = match (tok.bos_id(), got.first()) {
                (Some(b), Some(&f)) if add_special && tok.adds_bos() && f == b => &got[1..],
                _ => &got[..],
            };
            // SentencePiece vocabularies write spaces as `▁`, so a literal `▁` cannot come back.
            let lossy = !tok.is_byte_level() && text.contains('\u{2581}');
            if !lossy && tok.decode(body) != text {
                mismatches.push(format!(
                    "{name} / {}: decode gives {:?}",
                    p["name"],
                    tok.decode(body)
                ));
            }
            checked += 1;
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }
    eprintln!("{checked} prompts tokenized identically to llama.cpp");
}
