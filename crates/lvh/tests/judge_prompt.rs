//! The judge on a tiny random-weight model with an in-memory byte-level vocabulary and a
//! ChatML template: prompt rendering (both orders swap the labels), option tokens, prefix reuse
//! against fresh runs, antisymmetry of S_C, and `lvh judge` end to end with a killed-and-resumed
//! output.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::quantized::gguf_file::{Content, VersionedMagic};
use lm_runtime::model::random::{byte_chat_metadata, RandomLlama, CHATML};
use lm_runtime::model::{Model, WeightMode};
use lm_runtime::template::{ChatTemplate, PromptFormat};
use lm_runtime::tokenizer::Tokenizer;
use lvh::constitution::Constitution;
use lvh::judge::prefix::{next_token_logprobs_at, PrefixReuse};
use lvh::judge::prompt::{conversation_messages, conversation_text, encode, Order};
use lvh::judge::{Judge, JudgeConfig, JudgeError, JudgePrompter, ANSWER_PREFIX};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tokenizer(merges: &[&str]) -> Tokenizer {
    let c = Content {
        magic: VersionedMagic::GgufV3,
        metadata: byte_chat_metadata(merges)
            .into_iter()
            .collect::<HashMap<_, _>>(),
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    };
    Tokenizer::from_gguf(&c).unwrap()
}

fn chatml() -> PromptFormat {
    PromptFormat::Template(ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap())
}

/// A random llama with the 258-token vocabulary, written as a complete GGUF (weights,
/// tokenizer and chat template) so the `lvh` binary can load it.
fn write_tiny(path: &Path, seed: u64) {
    RandomLlama {
        context: 2048,
        ..RandomLlama::default()
    }
    .write_chat(path, &mut ChaCha8Rng::seed_from_u64(seed))
    .unwrap();
}

fn tiny_model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    write_tiny(&p, 7);
    let m = Model::load(&p, WeightMode::Quantized).unwrap();
    (dir, m)
}

#[test]
fn hh_transcripts_become_chat_turns() {
    let hh =
        "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?\n\nAssistant:";
    let m = conversation_messages(hh);
    let got: Vec<(&str, &str)> = m
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("user", "Hi there"),
            ("assistant", "Hello!"),
            ("user", "How do I pick a lock?")
        ]
    );
    assert_eq!(
        conversation_text(hh),
        "User: Hi there\nAssistant: Hello!\nUser: How do I pick a lock?"
    );
    // Plain text is one user turn, even when it mentions a marker mid-sentence.
    let plain = "What does \"Human: hi\" mean?";
    let m = conversation_messages(plain);
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].role.as_str(), m[0].content.as_str()), ("user", plain));
}

#[test]
fn option_letters_are_single_tokens_as_the_tokenizer_spells_them() {
    let tok = tokenizer(&[]);
    let fmt = chatml();
    let p = JudgePrompter::new(&fmt, &tok, ANSWER_PREFIX).unwrap();
    assert_eq!(p.option_ids(), [u32::from(b'A'), u32::from(b'B')]);
    // With a merge `n A`, "OptionA" spells A inside another token: refused, with the pieces.
    let tok = tokenizer(&["n A"]);
    match JudgePrompter::new(&fmt, &tok, "Option") {
        Err(JudgeError::OptionNotSingleToken { letter, pieces, .. }) => {
            assert_eq!(letter, "A");
            assert_eq!(pieces, vec![258]);
        }
        other => panic!("expected OptionNotSingleToken, got {other:?}"),
    }
    // The same vocabulary is fine with the default prefix: "(" ends a pre-token.
    assert!(JudgePrompter::new(&fmt, &tok, ANSWER_PREFIX).is_ok());
}

#[test]
fn both_orders_swap_the_labels_and_share_the_conversation_prefix() {
    let tok = tokenizer(&[]);
    let fmt = chatml();
    let c = Constitution::resolve("helpful-and-harmless").unwrap();
    let p = JudgePrompter::new(&fmt, &tok, ANSWER_PREFIX).unwrap();
    let principle = &c.effective_principles()[0].text;
    let (x, y1, y2) = ("How do I bake bread?", "Knead, proof, bake.", "No idea.");
    let t1 = p.render(&c, principle, x, y1, y2).unwrap();
    let t2 = p.render(&c, principle, x, y2, y1).unwrap();
    assert!(
        t1.contains("(A) Knead, proof, bake.") && t1.contains("(B) No idea."),
        "{t1}"
    );
    assert!(
        t2.contains("(A) No idea.") && t2.contains("(B) Knead, proof, bake."),
        "{t2}"
    );
    for t in [&t1, &t2] {
        assert!(t.starts_with("<|im_start|>user\n"));
        assert!(t.ends_with("<|im_end|>\n<|im_start|>assistant\nThe better response is ("));
        assert!(t.contains(principle.as_str()) && t.contains("User: How do I bake bread?"));
    }
    let ids1 = p.tokens(&c, principle, x, y1, y2, Order::FirstAsA).unwrap();
    let ids2 = p
        .tokens(&c, principle, x, y1, y2, Order::SecondAsA)
        .unwrap();
    assert_eq!(ids1, encode(&tok, &t1));
    assert_eq!(ids2, encode(&tok, &t2));
    let shared = ids1.iter().zip(&ids2).take_while(|(a, b)| a == b).count();
    let before_a = t1.find("(A) ").unwrap() + "(A) ".len();
    assert_eq!(
        shared,
        encode(&tok, &t1[..before_a]).len(),
        "the orders share every token up to response (A)"
    );
}

#[test]
fn prefix_reuse_matches_fresh_runs() {
    let (_d, model) = tiny_model();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut t = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.gen_range(0..258)).collect() };
    let root = t(20);
    let branch = t(7);
    let mut seqs = Vec::new();
    for k in 0..5 {
        let mut s = root.clone();
        if k % 2 == 0 {
            s.extend(&branch);
        }
        s.extend(t(k + 1));
        seqs.push(s);
    }
    seqs.push(root.clone()); // a prefix of the others
    seqs.push(seqs[0].clone()); // a duplicate
    seqs.push(t(9)); // shares nothing
    let ids = [65u32, 66, 3];
    let fresh = next_token_logprobs_at(&model, &seqs, &ids, PrefixReuse::Off).unwrap();
    for max_batch in [1, 2, 8] {
        let shared =
            next_token_logprobs_at(&model, &seqs, &ids, PrefixReuse::On { max_batch }).unwrap();
        for (a, b) in fresh.iter().zip(&shared) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y} (max_batch {max_batch})");
                assert!(*x < 0.0);
            }
        }
    }
}

#[test]
fn the_judge_is_antisymmetric_deterministic_and_per_principle() {
    let (_d, model) = tiny_model();
    let tok = tokenizer(&[]);
    let fmt = chatml();
    let c = Constitution::resolve("helpful-and-harmless").unwrap();
    let k = c.effective_principles().len();
    let judge = Judge::new(&model, &fmt, &tok, &JudgeConfig::default()).unwrap();
    let (x, y1, y2) = (
        "Is it safe to mix bleach and ammonia?",
        "No, it makes toxic gas.",
        "Yes.",
    );
    let s12 = judge.judge_pair(&c, x, y1, y2).unwrap();
    let s21 = judge.judge_pair(&c, x, y2, y1).unwrap();
    assert_eq!(s12.ab.len(), k);
    assert_eq!(s12.ba.len(), k);
    for i in 0..k {
        // Swapping y1 and y2 swaps the orders: the same two prompts are scored.
        assert!((s12.ab[i] - s21.ba[i]).abs() < 1e-4);
        assert!((s12.ba[i] - s21.ab[i]).abs() < 1e-4);
    }
    assert_eq!(
        s12,
        judge.judge_pair(&c, x, y1, y2).unwrap(),
        "deterministic"
    );
    let w = c.normalized_weights();
    let (ab, ba) = s12.aggregate(&w);
    let mean_ab: f64 = s12.ab.iter().zip(&w).map(|(s, w)| s * w).sum();
    assert!((ab - mean_ab).abs() < 1e-12);
    assert!(ab.is_finite() && ba.is_finite());
    let no_reuse = Judge::new(
        &model,
        &fmt,
        &tok,
        &JudgeConfig {
            reuse: PrefixReuse::Off,
            ..JudgeConfig::default()
        },
    )
    .unwrap();
    let fresh = no_reuse.judge_pair(&c, x, y1, y2).unwrap();
    for (a, b) in fresh
        .ab
        .iter()
        .chain(&fresh.ba)
        .zip(s12.ab.iter().chain(&s12.ba))
    {
        assert!((a - b).abs() < 1e-4);
    }
    let g = judge.generation_scores(0, x, [y1, y2]).unwrap();
    assert!(g[0] < 0.0 && g[1] < 0.0);
    assert!(judge.generation_scores(0, x, [y1, ""]).unwrap()[1].is_nan());
}

fn lvh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn lvh_judge_writes_trl_rows_and_resumes_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_tiny(&model, 3);
    let pairs = dir.path().join("pairs.jsonl");
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(
            &serde_json::json!({
                "prompt": format!("Question {i}?"),
                "chosen": format!("Careful answer {i}."),
                "rejected": format!("Reckless answer {i}!"),
            })
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&pairs, text).unwrap();
    let full = dir.path().join("full.jsonl");
    let base = |out: &Path| {
        vec![
            "judge".to_owned(),
            "--constitution".into(),
            "honesty".into(),
            "--model".into(),
            model.display().to_string(),
            "--pairs".into(),
            pairs.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let run = |out: &Path| {
        let a = base(out);
        let o = lvh(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&full);
    let full_text = std::fs::read_to_string(&full).unwrap();
    let rows: Vec<serde_json::Value> = full_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["index"], i);
        for key in [
            "prompt",
            "chosen",
            "rejected",
            "p_first",
            "score",
            "position_bias",
        ] {
            assert!(r.get(key).is_some(), "row {i} lacks {key}");
        }
        let p = r["p_first"].as_f64().unwrap();
        let s = r["score"].as_f64().unwrap();
        assert!((p - 1.0 / (1.0 + (-s).exp())).abs() < 1e-12);
        let first_wins = r["chosen"].as_str().unwrap().starts_with("Careful");
        assert_eq!(first_wins, s >= 0.0);
    }
    assert!(dir.path().join("full.manifest.json").is_file());
    // Kill simulation: two finished rows and a torn third, then resume.
    let part = dir.path().join("part.jsonl");
    let lines: Vec<&str> = full_text.lines().collect();
    std::fs::write(
        &part,
        format!(
            "{}\n{}\n{}",
            lines[0],
            lines[1],
            &lines[2][..lines[2].len() / 2]
        ),
    )
    .unwrap();
    run(&part);
    assert_eq!(std::fs::read_to_string(&part).unwrap(), full_text);
    // A resume with another constitution is refused, naming the difference.
    let mut a = base(&part);
    a[2] = "fairness".into();
    let o = lvh(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("settings"));
}
