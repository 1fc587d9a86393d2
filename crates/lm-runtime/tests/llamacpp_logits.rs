//! Next-token log-probabilities against the real llama.cpp, from the reference fixtures that
//! `scripts/llamacpp_reference.py` records (llama.cpp's tokenization and its top-20
//! log-probabilities after each prompt). Runs when `LVH_TEST_MODEL` names
//! SmolLM2-135M-Instruct.Q4_1.gguf.
//!
//! Tolerances: llama.cpp rounds activations to 8-bit blocks before its quantized matmuls and
//! keeps K/V in f16, so neither it nor this runtime is bit-close to exact f32 maths. Measured
//! on this model, the top-20 log-probabilities of this runtime's quantized path and of its own
//! f32-weight path correlate at 0.97–0.999 per prompt, the same spread as against llama.cpp,
//! with differences up to ~0.3 nats. The checks are therefore: the top-1 token agrees whenever
//! llama.cpp's own top-2 gap exceeds that noise, Pearson > 0.96 on every prompt and > 0.99 on
//! average. A wrong RoPE, mask or norm drives Pearson towards 0.
//!
//! llama.cpp's server holds back a generated token that is an incomplete UTF-8 sequence and
//! reports the distribution of a later position; prompts whose most likely next token is
//! such a piece are therefore skipped.

use lm_runtime::gguf::GgufFile;
use lm_runtime::model::{Model, WeightMode};
use lm_runtime::score::{next_token_logprobs, top_k};
use lm_runtime::tokenizer::Tokenizer;

#[derive(serde::Deserialize)]
struct Reference {
    model_sha256: String,
    prompts: Vec<Prompt>,
}

#[derive(serde::Deserialize)]
struct Prompt {
    name: String,
    ids: Vec<u32>,
    #[serde(default)]
    top_logprobs: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    id: u32,
    logprob: f64,
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Compares every prompt; returns (worst Pearson, mean Pearson, top-1 mismatches, prompts
/// compared).
fn compare(
    model: &Model,
    tok: &Tokenizer,
    reference: &Reference,
) -> (f64, f64, Vec<String>, usize) {
    let mut worst = 1.0f64;
    let mut sum = 0.0;
    let mut mismatches = Vec::new();
    let mut n = 0;
    for p in reference
        .prompts
        .iter()
        .filter(|p| !p.ids.is_empty() && p.top_logprobs.len() >= 2)
    {
        let ours = next_token_logprobs(model, &p.ids, &[]).unwrap();
        let theirs: Vec<f64> = p.top_logprobs.iter().map(|e| e.logprob).collect();
        let mine: Vec<f64> = p
            .top_logprobs
            .iter()
            .map(|e| f64::from(ours[e.id as usize]))
            .collect();
        let r = pearson(&theirs, &mine);
        let max_abs = theirs
            .iter()
            .zip(&mine)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let our_top = top_k(&ours, 1)[0].0;
        if std::str::from_utf8(&tok.piece_bytes(our_top)).is_err() {
            eprintln!(
                "{:<18} skipped: most likely next token {our_top} is a partial UTF-8 piece",
                p.name
            );
            continue;
        }
        let gap = theirs[0] - theirs[1];
        eprintln!(
            "{:<18} n={:<4} pearson={r:.6} max|Δlogprob|={max_abs:.4} top1 ours={our_top} llama.cpp={} (gap {gap:.3})",
            p.name,
            p.ids.len(),
            p.top_logprobs[0].id
        );
        // A near tie in llama.cpp's own distribution may flip either way.
        if our_top != p.top_logprobs[0].id && gap > 0.3 {
            mismatches.push(p.name.clone());
        }
        worst = worst.min(r);
        sum += r;
        n += 1;
    }
    (worst, sum / n as f64, mismatches, n)
}

/// Loads `$env_var`'s model and checks it against `fixture` in both weight modes.
fn check(env_var: &str, fixture: &str, sha256: &str) {
    let path = match std::env::var(env_var) {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprintln!("skipping: {env_var} is not set (path to the model of {fixture})");
            return;
        }
    };
    let fixture = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    assert_eq!(reference.model_sha256, sha256);
    let tok = Tokenizer::from_gguf(GgufFile::open(&path).unwrap().content()).unwrap();
    for mode in [WeightMode::Quantized, WeightMode::F32] {
        let model = Model::load(&path, mode).unwrap();
        let (worst, mean, mismatches, n) = compare(&model, &tok, &reference);
        eprintln!(
            "{mode:?}: {n} prompts, Pearson worst {worst:.6} mean {mean:.6}, top-1 mismatches {mismatches:?}"
        );
        assert!(n >= 15, "only {n} prompts compared");
        assert!(
            mismatches.is_empty(),
            "{mode:?}: top-1 differs on {mismatches:?}"
        );
        assert!(worst > 0.96, "{mode:?}: worst Pearson {worst}");
        assert!(mean > 0.99, "{mode:?}: mean Pearson {mean}");
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    check(
        "LVH_TEST_MODEL",
        "tokenizer_reference_smollm2.json",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    );
}
