//! The remote client against a real llama.cpp server, compared with the local runtime on the same
//! GGUF. Runs only when `LVH_TEST_ENDPOINT` names a server (otherwise each test says it skipped):
//!
//! ```text
//! MODEL=$(target/release/lvh model fetch smollm2-135m-instruct)
//! python3 scripts/llamacpp_server.py --model "$MODEL" -- \
//!     env LVH_TEST_MODEL="$MODEL" cargo test --release -p lvh --test remote_llamacpp -- --nocapture
//! ```
//!
//! `LVH_TEST_MODEL` must be the file the server serves (default: the default model).
//! Tolerance: llama.cpp multiplies Q4_1 weights by activations rounded to 8 bits (Q8_1) while the
//! local runtime keeps f32 activations, so log-probabilities differ by a few hundredths of a nat.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use lm_runtime::gguf::GgufFile;
use lm_runtime::model::{Model, WeightMode};
use lm_runtime::score::{next_token_logprobs, score_continuation, top_k};
use lm_runtime::template::{Message, PromptFormat};
use lm_runtime::tokenizer::Tokenizer;
use lvh::remote::{Client, Margin, Scoring};

/// Allowed |local − remote| for one log-probability `lp`: `ABS_TOL + REL_TOL·|lp|` nats (the
/// rounding noise grows in the tail of the distribution). Both sides round activations to 8-bit
/// blocks, in different orders; the worst single token seen on SmolLM2 is 0.48 nats (at
/// `lp ≈ −2.5`, local quantized path with the AVX2 kernels), while the mean stays near 0.13.
const ABS_TOL: f64 = 0.4;
const REL_TOL: f64 = 0.05;
/// Largest allowed mean |local − remote| over a test's log-probabilities, in nats.
const MEAN_TOL: f64 = 0.15;
/// Smallest allowed Pearson correlation of local and remote log-probabilities: an off-by-one
/// position or a wrong token drives it far lower.
const MIN_PEARSON: f64 = 0.99;

/// Checks `(local, remote)` log-probability pairs against the tolerances and prints a summary.
fn check_agreement(what: &str, pairs: &[(f64, f64)]) {
    let n = pairs.len() as f64;
    let mean_abs = pairs.iter().map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    let worst = pairs.iter().map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let (a, b): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
    let pearson = rlaif_sim::estimate::correlation(&a, &b);
    eprintln!(
        "{what}: {} log-probs, mean |local − remote| {mean_abs:.4} nats, worst {worst:.4}, Pearson {pearson:.5}",
        pairs.len()
    );
    for (a, b) in pairs {
        assert!(
            (a - b).abs() <= ABS_TOL + REL_TOL * a.abs(),
            "{what}: local {a} remote {b}"
        );
    }
    assert!(mean_abs < MEAN_TOL, "{what}: mean {mean_abs}");
    assert!(pearson > MIN_PEARSON, "{what}: Pearson {pearson}");
}

struct Local {
    model: Model,
    tokenizer: Tokenizer,
    format: PromptFormat,
}

fn endpoint() -> Option<String> {
    match std::env::var("LVH_TEST_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            eprintln!("skipped: set LVH_TEST_ENDPOINT (see scripts/llamacpp_server.py)");
            None
        }
    }
}

fn local() -> &'static Local {
    static LOCAL: OnceLock<Local> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let given = std::env::var_os("LVH_TEST_MODEL").map(PathBuf::from);
        let path = lm_runtime::fetch::resolve_model(given.as_deref()).expect("model file");
        let mut file = GgufFile::open(&path).expect("gguf");
        let tokenizer = Tokenizer::from_gguf(file.content()).expect("tokenizer");
        let format = PromptFormat::from_gguf(file.content()).expect("template");
        let model = Model::from_gguf(&mut file, WeightMode::Quantized, &candle_core::Device::Cpu)
            .expect("model");
        Local {
            model,
            tokenizer,
            format,
        }
    })
}

fn client(url: &str) -> Client {
    Client::new(url, None, Duration::from_secs(300), 2).expect("endpoint")
}

/// Local prompt ids as `lvh run` makes them: BOS when the model asks for it.
fn encode(l: &Local, text: &str) -> Vec<u32> {
    let mut ids = l.tokenizer.encode(text, false);
    if let Some(bos) = l.tokenizer.bos_id().filter(|_| l.tokenizer.adds_bos()) {
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    ids
}

fn chat(l: &Local, user: &str) -> String {
    l.format
        .render(&[Message::user(user)], true)
        .expect("chat template")
}

fn prompts(l: &Local) -> Vec<String> {
    vec![
        "The capital of France is".to_owned(),
        "def fibonacci(n):\n    ".to_owned(),
        chat(l, "What is the boiling point of water at sea level?"),
        chat(l, "Give me one word that rhymes with cat."),
    ]
}

#[test]
fn tokenization_matches_the_local_tokenizer() {
    let Some(url) = endpoint() else { return };
    let (l, c) = (local(), client(&url));
    for p in prompts(l) {
        assert_eq!(c.tokenize(&p, true).unwrap(), encode(l, &p), "{p:?}");
    }
}

#[test]
fn next_token_logprobs_match_the_local_runtime() {
    let Some(url) = endpoint() else { return };
    let (l, c) = (local(), client(&url));
    let k = 5;
    let mut pairs = Vec::new();
    for p in prompts(l) {
        let ids = encode(l, &p);
        let lp = next_token_logprobs(&l.model, &ids, &[]).unwrap();
        let remote = c.next_token_logprobs(ids.clone(), k).unwrap();
        assert_eq!(remote.len(), k);
        eprintln!("prompt {p:?}");
        for (text, r) in &remote {
            // The remote token text names one local id (texts are distinct in this vocabulary).
            let local_id = (0..l.tokenizer.vocab_size() as u32)
                .find(|&i| l.tokenizer.decode(&[i]) == *text)
                .unwrap_or_else(|| panic!("no local token spells {text:?}"));
            let loc = f64::from(lp[local_id as usize]);
            let d = (loc - f64::from(*r)).abs();
            eprintln!("  {text:>14?} local {loc:>9.4} remote {r:>9.4} |Δ| {d:.4}");
            pairs.push((loc, f64::from(*r)));
        }
        // The local top-3 are listed remotely too (the server's order may swap near-ties).
        for (id, _) in top_k(&lp, 3) {
            let t = l.tokenizer.decode(&[id]);
            assert!(
                remote.iter().any(|(r, _)| *r == t),
                "{t:?} missing remotely"
            );
        }
    }
    check_agreement("next-token top-5", &pairs);
}

#[test]
fn continuation_logprobs_match_the_local_runtime() {
    let Some(url) = endpoint() else { return };
    let (l, c) = (local(), client(&url));
    let cases = [
        (
            chat(l, "What is the capital of France?"),
            "The capital of France is Paris.",
        ),
        (
            chat(
                l,
                "How do I pick a lock to break into my neighbour's house?",
            ),
            "I can't help with that.",
        ),
        ("The quick brown fox".to_owned(), " jumps over the lazy dog"),
    ];
    let mut pairs = Vec::new();
    for (p, y) in &cases {
        let (x_ids, y_ids) = (encode(l, p), l.tokenizer.encode(y, false));
        let loc = score_continuation(&l.model, &x_ids, &y_ids, &[]).unwrap();
        // Text in, tokenised by the server: the same ids, so the same numbers.
        let rem = c.continuation_logprob(p, y).unwrap();
        assert_eq!(rem.token_logprobs.len(), y_ids.len());
        for (a, b) in loc.token_logprobs.iter().zip(&rem.token_logprobs) {
            pairs.push((*a, *b));
            eprintln!("    token: local {a:>9.4} remote {b:>9.4}");
        }
        let d = (loc.total - rem.total).abs();
        eprintln!(
            "continuation {y:?} ({} tokens): local {:.4} remote {:.4} |Δ| {d:.4}",
            y_ids.len(),
            loc.total,
            rem.total
        );
    }
    // llama.cpp does not echo prompts: the client fell back to forced steps.
    assert_eq!(c.scoring(), Scoring::ForcedSteps);
    check_agreement("continuation tokens", &pairs);
}

/// The server against itself, no runtime noise: each forced step's log-probability is the one
/// the server lists for that token in its plain top-20 at the same position.
#[test]
fn forced_steps_agree_with_the_servers_own_top_k() {
    let Some(url) = endpoint() else { return };
    let (l, c) = (local(), client(&url).with_scoring(Scoring::ForcedSteps));
    let x = encode(l, &chat(l, "Name a colour."));
    let y = l.tokenizer.encode("Blue is a colour of the sky.", false);
    let forced = c.continuation_logprob_ids(&x, &y).unwrap();
    let mut checked = 0;
    for i in 0..y.len() {
        let ctx: Vec<u32> = x.iter().chain(&y[..i]).copied().collect();
        let top = c.next_token_logprobs(ctx, 20).unwrap();
        let text = l.tokenizer.decode(&[y[i]]);
        if let Some((_, lp)) = top.iter().find(|(t, _)| *t == text) {
            let d = (f64::from(*lp) - forced.token_logprobs[i]).abs();
            assert!(
                d < 1e-4,
                "step {i} {text:?}: listed {lp} forced {}",
                forced.token_logprobs[i]
            );
            checked += 1;
        }
    }
    eprintln!(
        "forced steps: {checked} of {} tokens checked against the top-20",
        y.len()
    );
    assert!(
        checked * 2 >= y.len(),
        "too few continuation tokens in the top-20"
    );
}

#[test]
fn judge_option_margin_matches_the_local_runtime() {
    let Some(url) = endpoint() else { return };
    let (l, c) = (local(), client(&url));
    let question = "Which response is more harmless?\n\
        Conversation: How do I make a bomb?\n\
        (A) I can't help with making weapons.\n\
        (B) Mix these chemicals in a pipe.\n\
        Answer with A or B.";
    let prompt = format!("{}The more harmless response is (", chat(l, question));
    let ids = encode(l, &prompt);
    let (a, b) = (
        l.tokenizer.encode("A", false),
        l.tokenizer.encode("B", false),
    );
    assert_eq!((a.len(), b.len()), (1, 1), "options must be single tokens");
    let lp = next_token_logprobs(&l.model, &ids, &[]).unwrap();
    let local_margin = f64::from(lp[a[0] as usize]) - f64::from(lp[b[0] as usize]);
    let exact = c.option_logprobs_exact(&ids, a[0], b[0]).unwrap();
    let top = c.option_logprobs(ids.clone(), "A", "B", 20).unwrap();
    eprintln!(
        "judge margin log p(A) − log p(B): local {local_margin:.4}, remote exact {:?}, remote top-20 {:?}",
        exact.margin, top.margin
    );
    let Margin::Exact(m) = exact.margin else {
        panic!("{exact:?}")
    };
    // A difference of two log-probabilities: twice the one-value allowance.
    let allowed = 2.0 * ABS_TOL + REL_TOL * local_margin.abs();
    assert!(
        (m - local_margin).abs() < allowed,
        "local {local_margin} remote {m}"
    );
    match top.margin {
        Margin::Exact(v) => assert!((v - m).abs() < 1e-4, "{v} vs {m}"),
        Margin::AtLeast(v) => assert!(m >= v - 1e-4),
        Margin::AtMost(v) => assert!(m <= v + 1e-4),
        Margin::Unknown => {}
    }
}

#[test]
fn generation_is_seeded_and_stops() {
    let Some(url) = endpoint() else { return };
    let (l, c) = (local(), client(&url));
    let p = chat(l, "Count from one to ten in words.");
    let g1 = c.generate(p.as_str(), 24, 0.8, 7, &[]).unwrap();
    let g2 = c.generate(p.as_str(), 24, 0.8, 7, &[]).unwrap();
    assert!(!g1.text.is_empty());
    assert_eq!(g1.text, g2.text, "same seed, same text");
    let stopped = c
        .generate(p.as_str(), 24, 0.0, 7, &["\n".to_owned()])
        .unwrap();
    assert!(!stopped.text.contains('\n'), "{:?}", stopped.text);
    eprintln!(
        "generated (seed 7): {:?}; greedy up to a newline: {:?}",
        g1.text, stopped.text
    );
}

/// `lvh judge` on bundled pairs, locally and through `--endpoint` on the same GGUF: the
/// server scores the same token ids, so the judgments agree up to llama.cpp's activation
/// rounding. SmolLM2-135M is a weak judge (|S_C| mostly below 0.2 nats), so a few near-zero
/// scores may flip sign; most must not.
#[test]
fn lvh_judge_through_the_endpoint_agrees_with_the_local_judge() {
    let Some(url) = endpoint() else { return };
    let model = std::env::var("LVH_TEST_MODEL").unwrap_or_default();
    if model.is_empty() {
        eprintln!("skipped: LVH_TEST_MODEL must name the GGUF the server serves");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = 8;
    let judge = |out: &std::path::Path, extra: &[&str]| -> Vec<serde_json::Value> {
        let mut a: Vec<String> = [
            "judge",
            "--constitution",
            "honesty",
            "--model",
            &model,
            "--sample",
            &n.to_string(),
            "--seed",
            "0",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_lvh"))
            .args(&a)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "lvh judge {extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read_to_string(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let local = judge(&dir.path().join("local.jsonl"), &[]);
    let remote = judge(&dir.path().join("remote.jsonl"), &["--endpoint", &url]);
    assert_eq!(local.len(), n);
    assert_eq!(remote.len(), n);
    let mut same = 0;
    let mut diffs = Vec::new();
    for (l, r) in local.iter().zip(&remote) {
        assert_eq!(l["index"], r["index"]);
        let (a, b) = (l["score"].as_f64().unwrap(), r["score"].as_f64().unwrap());
        let (pa, pb) = (
            l["position_bias"].as_f64().unwrap(),
            r["position_bias"].as_f64().unwrap(),
        );
        eprintln!(
            "pair {:>3}: S_C local {a:+.4} remote {b:+.4}; b_pos local {pa:+.4} remote {pb:+.4}",
            l["index"]
        );
        if (a >= 0.0) == (b >= 0.0) {
            same += 1;
        }
        diffs.push((a - b).abs());
        // The same contract as the log-probabilities: a difference of differences.
        assert!((a - b).abs() < 2.0 * ABS_TOL, "S_C local {a} remote {b}");
        assert!(
            (pa - pb).abs() < 2.0 * ABS_TOL,
            "b_pos local {pa} remote {pb}"
        );
    }
    let mean = diffs.iter().sum::<f64>() / n as f64;
    eprintln!(
        "lvh judge --endpoint vs local: same sign on {same}/{n} pairs, mean |ΔS_C| {mean:.4}, worst {:.4}",
        diffs.iter().fold(0.0f64, |m, d| m.max(*d))
    );
    assert!(2 * same > n, "signs agree on only {same}/{n} pairs");
    assert!(mean < MEAN_TOL, "mean |ΔS_C| {mean}");
}

/// The whole next-token distribution against llama.cpp's: the server's native `/completion`
/// with `n_probs` = the vocabulary size returns the log-softmax of its raw logits for every
/// token, so the Pearson correlation runs over all 49,152 log-probabilities of each prompt
/// (the runtime's fixture prompts: plain, chat-templated, code, unicode, > 100 tokens).
///
/// Bounds: mean over prompts > 0.999; every prompt > 0.998, which is llama.cpp's own spread
/// (its default flash-attention/f16-K/V configuration against flash attention off with an f32
/// K/V cache reaches a worst prompt of 0.9986): both sides round activations to 8-bit blocks
/// in their quantized products, in different orders. Measured here: mean 0.99928, 21 of 23
/// prompts above 0.999, worst 0.99887 (the chat-templated prompt). The server samples the
/// complete token `a` (forced by `logit_bias`, which leaves the raw distribution as it is): a
/// sampled token that is an incomplete UTF-8 sequence would be held back with its whole
/// distribution, as it was for two of the fixture's prompts before.
#[test]
fn full_vocabulary_logprobs_match_llama_cpp() {
    let Some(url) = endpoint() else { return };
    let l = local();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lm-runtime/tests/fixtures/tokenizer_prompts.json"
    );
    let prompts: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("json");
    let vocab = l.tokenizer.vocab_size();
    let complete = l.tokenizer.encode("a", false)[0];
    let mut rs = Vec::new();
    for p in &prompts {
        let (name, text) = (
            p["name"].as_str().unwrap_or("?"),
            p["text"].as_str().unwrap(),
        );
        let ids = encode(l, text);
        if ids.is_empty() {
            continue;
        }
        let body = serde_json::json!({
            "prompt": ids, "n_predict": 1, "temperature": 0, "n_probs": vocab,
            "cache_prompt": false, "post_sampling_probs": false,
            "logit_bias": [[complete, 100.0]],
        });
        let mut resp = ureq::post(&format!("{}/completion", url.trim_end_matches('/')))
            .send_json(&body)
            .expect("/completion");
        let r: serde_json::Value = resp.body_mut().read_json().expect("json");
        let first = r["completion_probabilities"]
            .as_array()
            .and_then(|a| a.first())
            .unwrap_or_else(|| panic!("{name}: no distribution: {r}"));
        let theirs = first["top_logprobs"].as_array().expect("top_logprobs");
        assert_eq!(theirs.len(), vocab, "{name}: the server's n_probs");
        let lp = next_token_logprobs(&l.model, &ids, &[]).unwrap();
        let (mut a, mut b) = (Vec::with_capacity(vocab), Vec::with_capacity(vocab));
        for t in theirs {
            let id = t["id"].as_u64().expect("id") as usize;
            a.push(t["logprob"].as_f64().expect("logprob"));
            b.push(f64::from(lp[id]));
        }
        let r = rlaif_sim::estimate::correlation(&a, &b);
        eprintln!(
            "{name:<24} {} tokens, full-vocabulary Pearson {r:.6}",
            ids.len()
        );
        rs.push((name.to_owned(), r));
    }
    let nonempty = prompts
        .iter()
        .filter(|p| !encode(l, p["text"].as_str().unwrap()).is_empty())
        .count();
    assert_eq!(rs.len(), nonempty, "every prompt compared");
    let mean = rs.iter().map(|(_, r)| r).sum::<f64>() / rs.len() as f64;
    eprintln!("mean {mean:.6} over {} prompts", rs.len());
    assert!(mean > 0.999, "mean full-vocabulary Pearson {mean}");
    for (name, r) in &rs {
        assert!(*r > 0.998, "{name}: full-vocabulary Pearson {r}");
    }
}

/// Whether llama.cpp withholds `target` when it is forced after `ctx` on `/v1/completions`: it
/// answers the lossy text (U+FFFD) and no log-probabilities for a token that ends in an
/// incomplete UTF-8 sequence.
fn withheld_by_forced_step(url: &str, ctx: &[u32], target: u32) -> bool {
    let mut bias = serde_json::Map::new();
    bias.insert(target.to_string(), serde_json::json!(100.0));
    let body = serde_json::json!({
        "prompt": ctx, "max_tokens": 1, "temperature": 0.0, "logprobs": 1, "logit_bias": bias,
    });
    let mut resp = ureq::post(&format!("{}/v1/completions", url.trim_end_matches('/')))
        .send_json(&body)
        .expect("/v1/completions");
    let r: serde_json::Value = resp.body_mut().read_json().expect("json");
    let choice = &r["choices"][0];
    let none = choice["logprobs"].is_null()
        || choice["logprobs"]["content"]
            .as_array()
            .is_some_and(Vec::is_empty);
    if none {
        assert!(
            choice["text"].as_str().unwrap_or("").contains('\u{FFFD}'),
            "no log-probs for token {target} without a partial character: {r}"
        );
    }
    none
}

/// `log p(id | ctx)` from the whole raw distribution of the native `/completion` (`n_probs` =
/// the vocabulary), sampling the complete token `complete` so that nothing is withheld.
fn raw_logprob(url: &str, ctx: &[u32], id: u32, complete: u32, vocab: usize) -> f64 {
    let body = serde_json::json!({
        "prompt": ctx, "n_predict": 1, "temperature": 0.0, "n_probs": vocab,
        "post_sampling_probs": false, "logit_bias": [[complete, 100.0]],
    });
    let mut resp = ureq::post(&format!("{}/completion", url.trim_end_matches('/')))
        .send_json(&body)
        .expect("/completion");
    let r: serde_json::Value = resp.body_mut().read_json().expect("json");
    let listed = r["completion_probabilities"][0]["top_logprobs"]
        .as_array()
        .expect("top_logprobs");
    assert_eq!(listed.len(), vocab);
    listed
        .iter()
        .find(|t| t["id"].as_u64() == Some(u64::from(id)))
        .and_then(|t| t["logprob"].as_f64())
        .expect("listed")
}

/// Continuations whose multi-byte characters (emoji, accented Latin, Cyrillic, CJK) are split
/// into byte-piece tokens. llama.cpp withholds the forced steps of the pieces that end in an
/// incomplete UTF-8 sequence; the client reads those from `/completion`'s raw distribution.
/// Checked: (1) the server really withholds them (so the fallback ran, once per withheld
/// token); (2) every token's log-probability against the local runtime, with the tolerances
/// of the other tests; (3) the raw distribution is the forced steps' quantity: on the complete
/// tokens of the same continuations both give the same number to 1e-4.
#[test]
fn continuations_that_split_characters_match_the_local_runtime() {
    let Some(url) = endpoint() else { return };
    let (l, c) = (local(), client(&url).with_scoring(Scoring::ForcedSteps));
    let cases = [
        (
            chat(l, "Greet me with emoji."),
            "Hello! 😀👋 Have a great day! 🎉",
        ),
        (
            chat(l, "Name some words with accents."),
            "Crème brûlée, façade, jalapeño, Ångström, Łódź.",
        ),
        (chat(l, "Say hello in Russian."), "Привет, мир! Как дела?"),
        (
            chat(l, "Write a sentence in Japanese."),
            "日本語のテキストです。東京は大きい。",
        ),
        ("中文：".to_owned(), "你好，世界！"),
    ];
    let vocab = l.tokenizer.vocab_size();
    let complete = l.tokenizer.encode("a", false)[0];
    let (mut pairs, mut withheld_pairs) = (Vec::new(), Vec::new());
    let (mut withheld, mut same_quantity) = (0, 0);
    for (p, y) in &cases {
        let x_ids = encode(l, p);
        let y_ids = l.tokenizer.encode(y, false);
        assert_eq!(c.tokenize(y, false).unwrap(), y_ids, "{y:?}");
        let before = c.raw_distribution_steps();
        let rem = c.continuation_logprob_ids(&x_ids, &y_ids).unwrap();
        let loc = score_continuation(&l.model, &x_ids, &y_ids, &[]).unwrap();
        assert_eq!(rem.token_logprobs.len(), y_ids.len());
        let mut here = 0;
        for (i, &t) in y_ids.iter().enumerate() {
            let ctx: Vec<u32> = x_ids.iter().chain(&y_ids[..i]).copied().collect();
            let (a, b) = (loc.token_logprobs[i], rem.token_logprobs[i]);
            pairs.push((a, b));
            if withheld_by_forced_step(&url, &ctx, t) {
                here += 1;
                withheld_pairs.push((a, b));
                eprintln!("    withheld {t:>6}: local {a:>9.4} remote {b:>9.4}");
            } else if same_quantity < 12 {
                let raw = raw_logprob(&url, &ctx, t, complete, vocab);
                assert!(
                    (raw - b).abs() < 1e-4,
                    "{y:?} token {i} ({t}): forced step {b}, raw distribution {raw}"
                );
                same_quantity += 1;
            }
        }
        assert!(here > 0, "{y:?}: no token withheld, nothing tested");
        assert_eq!(c.raw_distribution_steps() - before, here, "{y:?}");
        withheld += here;
        eprintln!(
            "continuation {y:?} ({} tokens, {here} withheld): local {:.4} remote {:.4}",
            y_ids.len(),
            loc.total,
            rem.total
        );
    }
    eprintln!("{withheld} withheld tokens; {same_quantity} complete tokens checked against the raw distribution");
    assert!(withheld >= 15, "only {withheld} withheld tokens");
    check_agreement("withheld tokens", &withheld_pairs);
    check_agreement("all tokens of split-character continuations", &pairs);
}
