//! `lvh judge`, `lvh gap`, `lvh score` and `lvh run --generate` with `--endpoint` against an
//! in-process mock of llama.cpp's server with planted log-probabilities. The prompts are
//! rendered and tokenized locally with a tiny byte-level vocabulary (ids 0–255 are the bytes,
//! 256/257 the ChatML control tokens), so the mock reads each prompt back as text and answers:
//!
//! * judge prompts (ending in the answer prefix): the response containing `ZQGOOD` is
//!   preferred, `log p(preferred) = −0.7`, `log p(other) = −2.5`, and (A) gets `+0.5` (a
//!   position bias), so `score(GOOD as A) = 2.3`, `score(GOOD as B) = −1.3`, `S_C = ±1.8` and
//!   `b_pos = 0.5` exactly;
//! * every other forced token `t`: `log p(t) = −0.25` for a lowercase ASCII letter,
//!   `−1 − (t − 127)/100` for a non-ASCII byte (distinct per byte), else `−1.0`;
//! * like llama.cpp, a forced UTF-8 lead byte (an incomplete character) is withheld (U+FFFD, no
//!   log-probabilities) on `/v1/completions`, and the native `/completion` lists the planted
//!   distribution by id (`n_probs`), so continuations with non-ASCII text are still scored.
//!
//! The last tests drive the client itself against llama.cpp-like and other servers for the
//! withheld-token fallback (request shape, widening `n_probs`, failures).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lm_runtime::model::random::RandomLlama;
use lvh::judge::ANSWER_PREFIX;
use lvh::remote::mock::{MockResponse, MockServer, Recorded};
use lvh::remote::raw::{ALL_TOKENS, RAW_TOP};
use lvh::remote::{Client, RemoteError, Scoring};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};

const SPECIALS: [&str; 2] = ["<|im_start|>", "<|im_end|>"];

/// A random llama with the 258-token byte vocabulary and a ChatML template as a complete GGUF
/// (so the same file also runs locally).
/// The rows of a JSONL file.
fn read_jsonl(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_tiny(path: &Path) {
    RandomLlama {
        context: 2048,
        ..RandomLlama::default()
    }
    .write_chat(path, &mut ChaCha8Rng::seed_from_u64(5))
    .unwrap();
}

/// The byte vocabulary's tokenization (control tokens parsed), as the mock's `/tokenize`.
fn tokenize(text: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for (k, s) in SPECIALS.iter().enumerate() {
            if let Some(r) = rest.strip_prefix(s) {
                ids.push(256 + k as u32);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap();
        let mut buf = [0u8; 4];
        ids.extend(c.encode_utf8(&mut buf).bytes().map(u32::from));
        rest = &rest[c.len_utf8()..];
    }
    ids
}

fn detokenize(ids: &[u32]) -> String {
    let mut bytes = Vec::new();
    for &i in ids {
        match i {
            0..=255 => bytes.push(i as u8),
            _ => bytes.extend(SPECIALS[(i - 256) as usize].bytes()),
        }
    }
    // Lossy: a prompt may end inside a character (a byte piece of it).
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A byte token llama.cpp withholds when it is generated alone: a UTF-8 lead byte, the start of
/// an incomplete character.
fn is_lead_byte(t: u32) -> bool {
    (0xC0..=0xF7).contains(&t)
}

/// llama.cpp's `/v1/completions` answer for a withheld token.
fn withheld() -> MockResponse {
    MockResponse::json(
        &json!({"choices": [{"text": "\u{FFFD}", "index": 0, "logprobs": null,
        "finish_reason": "length"}]}),
    )
}

/// llama.cpp's native `/completion` answer: the `n_probs` most likely of `distribution`
/// (`(id, log p)`, most likely first), `sampled` emitted.
fn raw_answer(r: &Recorded, distribution: &[(u32, f64)], sampled: u32) -> MockResponse {
    let n = r.body["n_probs"].as_u64().expect("n_probs") as usize;
    let listed: Vec<Json> = distribution
        .iter()
        .take(n)
        .map(|&(id, lp)| {
            let token = if id < 258 {
                detokenize(&[id])
            } else {
                format!("t{id}")
            };
            json!({"id": id, "token": token, "logprob": lp})
        })
        .collect();
    MockResponse::json(
        &json!({"content": "a", "stop": true, "completion_probabilities": [
        {"id": sampled, "token": "a", "logprob": -0.25, "top_logprobs": listed}]}),
    )
}

/// The native `/completion` request the client sends for a withheld token: one token, the raw
/// distribution, `a` (97) forced.
fn assert_raw_request(r: &Recorded) {
    assert_eq!(r.body["n_predict"], json!(1), "{:?}", r.body);
    assert_eq!(r.body["post_sampling_probs"], json!(false));
    assert_eq!(r.body["logit_bias"], json!([[97, 100.0]]));
    assert!(r.body["prompt"].is_array(), "token-id prompt");
}

/// The planted generation log-probability of a forced token.
fn gen_lp(t: u32) -> f64 {
    if (u32::from(b'a')..=u32::from(b'z')).contains(&t) {
        -0.25
    } else if (128..256).contains(&t) {
        -1.0 - f64::from(t - 127) / 100.0
    } else {
        -1.0
    }
}

/// The planted judge log-probabilities `(log p(A), log p(B))` of a judge prompt.
fn judge_lps(text: &str) -> (f64, f64) {
    let (good, bad) = (text.find("ZQGOOD").unwrap(), text.find("ZQBAD").unwrap());
    let (pa, pb) = if good < bad {
        (-0.7, -2.5)
    } else {
        (-2.5, -0.7)
    };
    (pa + 0.5, pb)
}

fn step(id: u32, lp: f64) -> MockResponse {
    let token = detokenize(&[id]);
    MockResponse::json(
        &json!({"choices": [{"text": token, "index": 0, "finish_reason": "length",
        "logprobs": {"content": [{"id": id, "token": token, "logprob": lp,
            "top_logprobs": [{"id": id, "token": token, "logprob": lp}]}]}}]}),
    )
}

/// The planted generation distribution over the 258 tokens, most likely first.
fn planted_distribution() -> Vec<(u32, f64)> {
    let mut d: Vec<(u32, f64)> = (0..258).map(|t| (t, gen_lp(t))).collect();
    d.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    d
}

/// llama.cpp as the planted model: `/tokenize` by the byte vocabulary (`skew` adds one to every
/// id: another tokenizer), forced steps answered with planted log-probabilities (lead bytes
/// withheld), the raw distribution on `/completion`, `echo` ignored, plain generation
/// answering `generated text`.
fn planted(skew: u32) -> impl FnMut(&Recorded) -> MockResponse + Send + 'static {
    move |r: &Recorded| match r.path.as_str() {
        "/completion" => {
            assert_raw_request(r);
            raw_answer(r, &planted_distribution(), 97)
        }
        "/tokenize" => {
            let text = r.body["content"].as_str().unwrap_or_default();
            let ids: Vec<u32> = tokenize(text).into_iter().map(|i| i + skew).collect();
            MockResponse::json(&json!({ "tokens": ids }))
        }
        "/v1/completions" => {
            let ids: Vec<u32> = r.body["prompt"]
                .as_array()
                .expect("token-id prompts")
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let forced = r.body["logit_bias"]
                .as_object()
                .and_then(|m| m.keys().next().map(|k| k.parse::<u32>().unwrap()));
            let Some(t) = forced else {
                if r.body["max_tokens"] == json!(1) {
                    return step(0, -3.0); // the echo probe: answered without echo
                }
                return MockResponse::json(&json!({"choices": [{"text": "generated text",
                    "index": 0, "finish_reason": "stop"}]}));
            };
            let text = detokenize(&ids);
            let lp = if text.ends_with(ANSWER_PREFIX) {
                let (pa, pb) = judge_lps(&text);
                match t {
                    65 => pa,
                    66 => pb,
                    _ => panic!("judge prompt forced to {t}"),
                }
            } else if is_lead_byte(t) {
                return withheld();
            } else {
                gen_lp(t)
            };
            step(t, lp)
        }
        other => MockResponse::status(404, &format!("{{\"error\":\"no {other}\"}}")),
    }
}

fn lvh(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(args)
        .output()
        .unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "lvh failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    model: String,
    pairs: String,
    /// `(chosen, rejected)` as in the file.
    rows: Vec<(String, String)>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_tiny(&model);
    let rows: Vec<(String, String)> = vec![
        ("ZQGOOD sure, here it is.".into(), "ZQBAD NO WAY.".into()),
        ("ZQBAD go away".into(), "ZQGOOD Happy to help!".into()),
        ("ZQGOOD A B C".into(), "ZQBAD lower case words".into()),
        ("ZQBAD x".into(), "ZQGOOD Yes.".into()),
    ];
    let mut text = String::new();
    for (i, (c, r)) in rows.iter().enumerate() {
        text.push_str(
            &json!({"prompt": format!("Question {i}?"), "chosen": c, "rejected": r}).to_string(),
        );
        text.push('\n');
    }
    let pairs = dir.path().join("pairs.jsonl");
    std::fs::write(&pairs, text).unwrap();
    Setup {
        model: model.display().to_string(),
        pairs: pairs.display().to_string(),
        dir,
        rows,
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `s_gen` of a response under the planted model: the mean planted log-prob of its bytes.
fn planted_s_gen(response: &str) -> f64 {
    let ids = tokenize(response.trim());
    ids.iter().map(|&t| gen_lp(t)).sum::<f64>() / ids.len() as f64
}

#[test]
fn judge_through_the_endpoint_gives_the_planted_labels() {
    let s = setup();
    let server = MockServer::start(planted(0)).unwrap();
    let out = s.dir.path().join("labels.jsonl");
    let o = lvh(&args(&[
        "judge",
        "--constitution",
        "honesty",
        "--model",
        &s.model,
        "--endpoint",
        server.url(),
        "--pairs",
        &s.pairs,
        "--out",
        out.to_str().unwrap(),
    ]));
    ok(&o);
    let rows: Vec<Json> = read_jsonl(&out);
    assert_eq!(rows.len(), 4);
    for (i, (r, (c, rej))) in rows.iter().zip(&s.rows).enumerate() {
        let first_good = c.contains("ZQGOOD");
        let want = if first_good { 1.8 } else { -1.8 };
        let score = r["score"].as_f64().unwrap();
        assert!((score - want).abs() < 1e-9, "pair {i}: S_C {score}");
        assert!((r["position_bias"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        assert!((r["p_first"].as_f64().unwrap() - sigmoid(want)).abs() < 1e-12);
        let good = if first_good { c } else { rej };
        assert_eq!(r["chosen"].as_str().unwrap(), good, "pair {i}");
        let (ab, ba) = if first_good { (2.3, -1.3) } else { (-1.3, 2.3) };
        for v in r["principle_scores"]["ab"].as_array().unwrap() {
            assert!((v.as_f64().unwrap() - ab).abs() < 1e-9);
        }
        for v in r["principle_scores"]["ba"].as_array().unwrap() {
            assert!((v.as_f64().unwrap() - ba).abs() < 1e-9);
        }
    }
    // Every judge request was exact token ids, forced to A (65) or B (66) after the prefix.
    let reqs = server.requests();
    let forced: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.body["logit_bias"].is_object())
        .collect();
    let principles = rows[0]["principle_scores"]["ab"].as_array().unwrap().len();
    assert_eq!(forced.len(), 4 * principles * 2 * 2);
    let manifest: Json = serde_json::from_str(
        &std::fs::read_to_string(s.dir.path().join("labels.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["settings"]["endpoint"], json!(server.url()));
    // The same output resumed locally is refused: the manifests differ.
    let o = lvh(&args(&[
        "judge",
        "--constitution",
        "honesty",
        "--model",
        &s.model,
        "--pairs",
        &s.pairs,
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("different run"));
}

#[test]
fn gap_through_the_endpoint_has_the_local_keys_and_planted_scores() {
    let s = setup();
    let server = MockServer::start(planted(0)).unwrap();
    let scores = s.dir.path().join("scores.jsonl");
    let common = |extra: &[&str]| {
        let mut a = args(&[
            "gap",
            "--constitution",
            "honesty",
            "--model",
            &s.model,
            "--pairs",
            &s.pairs,
            "--resamples",
            "50",
            "--json",
        ]);
        a.extend(args(extra));
        a
    };
    let remote: Json = serde_json::from_str(&ok(&lvh(&common(&[
        "--endpoint",
        server.url(),
        "--scores",
        scores.to_str().unwrap(),
    ]))))
    .unwrap();
    let rows: Vec<Json> = read_jsonl(&scores);
    let mut wins_gen = 0.0;
    for (r, (c, rej)) in rows.iter().zip(&s.rows) {
        let want = [planted_s_gen(c), planted_s_gen(rej)];
        for k in 0..2 {
            let got = r["gen"][k].as_f64().unwrap();
            assert!((got - want[k]).abs() < 1e-12, "{got} vs {want:?}");
        }
        wins_gen += match want[0].partial_cmp(&want[1]).unwrap() {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Less => 0.0,
            std::cmp::Ordering::Equal => 0.5,
        };
    }
    let p_gen = remote["p_gen"].as_f64().unwrap();
    assert!((p_gen - wins_gen / 4.0).abs() < 1e-12, "P_gen {p_gen}");
    // The judge prefers ZQGOOD, which is the file's chosen in pairs 0 and 2.
    assert!((remote["p_judge"].as_f64().unwrap() - 0.5).abs() < 1e-12);
    assert_eq!(remote["endpoint"], json!(server.url()));
    // The local run of the same file (random weights) reports the same keys, plus none.
    let local: Json = serde_json::from_str(&ok(&lvh(&common(&[])))).unwrap();
    let keys = |v: &Json| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.retain(|k| k != "endpoint");
        k.sort();
        k
    };
    assert_eq!(keys(&remote), keys(&local));
}

#[test]
fn score_and_generate_through_the_endpoint() {
    let s = setup();
    let server = MockServer::start(planted(0)).unwrap();
    let out: Json = serde_json::from_str(&ok(&lvh(&args(&[
        "score",
        "--model",
        &s.model,
        "--endpoint",
        server.url(),
        "--prompt",
        "Say hi.",
        "--chat",
        "--continuation",
        "Hi there!",
        "--json",
    ]))))
    .unwrap();
    let sc = &out["scores"][0];
    let want: Vec<f64> = tokenize("Hi there!").into_iter().map(gen_lp).collect();
    assert_eq!(sc["tokens"], json!(tokenize("Hi there!")));
    let got: Vec<f64> = sc["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got, want);
    assert!((sc["total"].as_f64().unwrap() - want.iter().sum::<f64>()).abs() < 1e-12);
    assert_eq!(
        out["prompt_tokens"],
        json!(tokenize(
            "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
        ))
    );
    let g: Json = serde_json::from_str(&ok(&lvh(&args(&[
        "run",
        "--model",
        &s.model,
        "--endpoint",
        server.url(),
        "--prompt",
        "Say hi.",
        "--chat",
        "--generate",
        "8",
        "--seed",
        "3",
        "--json",
    ]))))
    .unwrap();
    assert_eq!(g["generated_text"], json!("generated text"));
    assert_eq!(g["stop_reason"], json!("server:stop"));
    let sent = server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/completions")
        .unwrap();
    assert_eq!(sent.body["max_tokens"], json!(8));
    assert_eq!(sent.body["seed"], json!(3));
    assert_eq!(sent.body["prompt"], g["tokens"]);
}

#[test]
fn a_server_with_another_tokenizer_is_refused() {
    let s = setup();
    let server = MockServer::start(planted(1)).unwrap();
    let o = lvh(&args(&[
        "judge",
        "--constitution",
        "honesty",
        "--model",
        &s.model,
        "--endpoint",
        server.url(),
        "--pairs",
        &s.pairs,
        "--out",
        s.dir.path().join("x.jsonl").to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tokenizes differently"), "{err}");
    assert!(err.contains("tiny.gguf"), "{err}");
    // No judging request was made.
    assert!(server.requests().iter().all(|r| r.path == "/tokenize"));
}

#[test]
fn activation_measurements_refuse_the_endpoint() {
    let s = setup();
    let o = lvh(&args(&[
        "run",
        "--model",
        &s.model,
        "--endpoint",
        "http://127.0.0.1:9",
        "--prompt",
        "Hi",
        "--capture",
        "blocks.0.hook_resid_post",
        "--out",
        s.dir.path().join("a.safetensors").to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--capture cannot be used with --endpoint"),
        "{err}"
    );
    let o = lvh(&args(&[
        "run",
        "--model",
        &s.model,
        "--endpoint",
        "http://127.0.0.1:9",
        "--prompt",
        "Hi",
        "--logits",
        s.dir.path().join("l.npy").to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--logits cannot be used with --endpoint"));
    // Commands that are built on activations have no --endpoint at all.
    for cmd in ["extract", "directions", "steer", "audit"] {
        let o = lvh(&args(&[cmd, "--endpoint", "http://127.0.0.1:9"]));
        assert!(!o.status.success(), "{cmd}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--endpoint"), "{cmd}: {err}");
    }
    // A local-only flag with --endpoint is an error, not silently ignored.
    let o = lvh(&args(&[
        "judge",
        "--constitution",
        "honesty",
        "--model",
        &s.model,
        "--endpoint",
        "http://127.0.0.1:9",
        "--no-prefix-reuse",
        "--out",
        s.dir.path().join("y.jsonl").to_str().unwrap(),
    ]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-prefix-reuse"));
}

/// The `/completion` requests among `reqs`, each with the forced `/v1/completions` step before it
/// that was withheld: same prompt, a lead byte forced.
fn raw_requests_follow_withheld_steps(reqs: &[Recorded]) -> usize {
    let mut n = 0;
    for (k, r) in reqs.iter().enumerate() {
        if r.path != "/completion" {
            continue;
        }
        assert_raw_request(r);
        let forced = reqs[..k]
            .iter()
            .rev()
            .find(|q| q.path == "/v1/completions")
            .expect("a forced step before the raw request");
        assert_eq!(forced.body["prompt"], r.body["prompt"]);
        let t: u32 = forced.body["logit_bias"]
            .as_object()
            .and_then(|m| m.keys().next())
            .and_then(|k| k.parse().ok())
            .expect("forced token");
        assert!(is_lead_byte(t), "raw request after forced token {t}");
        n += 1;
    }
    n
}

#[test]
fn gap_through_the_endpoint_scores_split_characters() {
    let s = setup();
    let rows: Vec<(String, String)> = vec![
        ("ZQGOOD café crème 😀".into(), "ZQBAD NON 🎉".into()),
        ("ZQBAD 日本".into(), "ZQGOOD Привет, мир!".into()),
        ("ZQGOOD façade".into(), "ZQBAD x".into()),
    ];
    let mut text = String::new();
    for (i, (c, r)) in rows.iter().enumerate() {
        text.push_str(
            &json!({"prompt": format!("Frage {i}, ça va?"), "chosen": c, "rejected": r})
                .to_string(),
        );
        text.push('\n');
    }
    let pairs = s.dir.path().join("unicode.jsonl");
    std::fs::write(&pairs, text).unwrap();
    let server = MockServer::start(planted(0)).unwrap();
    let scores = s.dir.path().join("scores.jsonl");
    let out: Json = serde_json::from_str(&ok(&lvh(&args(&[
        "gap",
        "--constitution",
        "honesty",
        "--model",
        &s.model,
        "--pairs",
        pairs.to_str().unwrap(),
        "--resamples",
        "50",
        "--json",
        "--endpoint",
        server.url(),
        "--scores",
        scores.to_str().unwrap(),
    ]))))
    .unwrap();
    let got: Vec<Json> = read_jsonl(&scores);
    assert_eq!(got.len(), rows.len());
    for (r, (c, rej)) in got.iter().zip(&rows) {
        let want = [planted_s_gen(c), planted_s_gen(rej)];
        for k in 0..2 {
            let g = r["gen"][k].as_f64().unwrap();
            assert!(
                (g - want[k]).abs() < 1e-12,
                "{c:?}/{rej:?}: {g} vs {want:?}"
            );
        }
    }
    assert!((out["p_judge"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    // Every lead byte of every response was withheld and read from the raw distribution.
    let reqs = server.requests();
    let lead_bytes: usize = rows
        .iter()
        .flat_map(|(c, r)| [c, r])
        .map(|t| {
            tokenize(t.trim())
                .into_iter()
                .filter(|&b| is_lead_byte(b))
                .count()
        })
        .sum();
    assert!(lead_bytes >= 15, "{lead_bytes}");
    assert_eq!(raw_requests_follow_withheld_steps(&reqs), lead_bytes);
    // The complete token is asked for once.
    let probes = reqs
        .iter()
        .filter(|r| r.path == "/tokenize" && r.body["content"] == json!("a"))
        .count();
    assert_eq!(probes, 1);
}

#[test]
fn score_through_the_endpoint_reads_withheld_bytes() {
    let s = setup();
    let server = MockServer::start(planted(0)).unwrap();
    let y = "Olá, 世界 👋";
    let out: Json = serde_json::from_str(&ok(&lvh(&args(&[
        "score",
        "--model",
        &s.model,
        "--endpoint",
        server.url(),
        "--prompt",
        "Say hi.",
        "--chat",
        "--continuation",
        y,
        "--json",
    ]))))
    .unwrap();
    let sc = &out["scores"][0];
    let want: Vec<f64> = tokenize(y).into_iter().map(gen_lp).collect();
    let got: Vec<f64> = sc["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(sc["tokens"], json!(tokenize(y)));
    assert_eq!(got, want);
    assert_eq!(raw_requests_follow_withheld_steps(&server.requests()), 4);
}

/// A llama.cpp-like server with a `vocab`-token vocabulary, `log p(t) = −0.5 − t/1000` at every
/// position (so id order is rank order), withholding the forced tokens in `withheld` and
/// answering `/completion` by `raw` (`None`: the raw distribution as llama.cpp lists it).
fn big_vocab_server(
    vocab: u32,
    withheld_ids: &'static [u32],
    raw: Option<MockResponse>,
) -> MockServer {
    let lp = |t: u32| -0.5 - f64::from(t) / 1000.0;
    let distribution: Vec<(u32, f64)> = (0..vocab).map(|t| (t, lp(t))).collect();
    MockServer::start(move |r: &Recorded| match r.path.as_str() {
        "/tokenize" => MockResponse::json(&json!({"tokens": [97]})),
        "/completion" => {
            assert_raw_request(r);
            raw.clone()
                .unwrap_or_else(|| raw_answer(r, &distribution, 97))
        }
        "/v1/completions" => {
            let t: u32 = r.body["logit_bias"]
                .as_object()
                .and_then(|m| m.keys().next())
                .and_then(|k| k.parse().ok())
                .expect("forced token");
            if withheld_ids.contains(&t) {
                withheld()
            } else {
                MockResponse::json(&json!({"choices": [{"text": "x", "index": 0,
                    "logprobs": {"content": [{"id": t, "token": "x", "logprob": lp(t),
                    "top_logprobs": []}]}}]}))
            }
        }
        other => MockResponse::status(404, &format!("{{\"error\":\"no {other}\"}}")),
    })
    .unwrap()
}

fn forced_client(url: &str) -> Client {
    Client::new(url, None, Duration::from_secs(5), 0)
        .unwrap()
        .with_backoff(Duration::from_millis(5))
        .with_scoring(Scoring::ForcedSteps)
}

#[test]
fn withheld_tokens_widen_n_probs_to_the_whole_vocabulary() {
    let server = big_vocab_server(5000, &[10, 4000], None);
    let c = forced_client(server.url());
    let s = c
        .continuation_logprob_ids(&[1, 2], &[10, 20, 4000])
        .unwrap();
    let want = [-0.51, -0.52, -4.5];
    for (g, w) in s.token_logprobs.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{:?}", s.token_logprobs);
    }
    assert_eq!(c.raw_distribution_steps(), 2);
    let reqs = server.requests();
    let n_probs: Vec<Json> = reqs
        .iter()
        .filter(|r| r.path == "/completion")
        .map(|r| r.body["n_probs"].clone())
        .collect();
    // Token 10 is among the first RAW_TOP; token 4000 needs the whole vocabulary.
    assert_eq!(
        n_probs,
        vec![json!(RAW_TOP), json!(RAW_TOP), json!(ALL_TOKENS)]
    );
    assert_eq!(ALL_TOKENS, i32::MAX as u32);
    // Each raw request continues the forced steps' prompt: x, then x ⧺ 10 ⧺ 20.
    let prompts: Vec<Json> = reqs
        .iter()
        .filter(|r| r.path == "/completion")
        .map(|r| r.body["prompt"].clone())
        .collect();
    assert_eq!(prompts[0], json!([1, 2]));
    assert_eq!(prompts[2], json!([1, 2, 10, 20]));
    assert_eq!(reqs.iter().filter(|r| r.path == "/tokenize").count(), 1);
}

#[test]
fn a_withheld_token_outside_the_vocabulary_is_named() {
    let server = big_vocab_server(5000, &[6000], None);
    let e = forced_client(server.url())
        .continuation_logprob_ids(&[1], &[6000])
        .unwrap_err();
    assert!(matches!(e, RemoteError::BadResponse { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("6000") && msg.contains("not in the server's vocabulary (5000 tokens"),
        "{msg}"
    );
}

#[test]
fn servers_without_a_raw_distribution_keep_the_withheld_error() {
    // Not llama.cpp: no `/completion`.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let server = MockServer::start(move |r: &Recorded| {
        log.lock().unwrap().push(r.path.clone());
        match r.path.as_str() {
            "/v1/completions" => withheld(),
            "/tokenize" => MockResponse::json(&json!({"tokens": [97]})),
            _ => MockResponse::status(404, "{\"error\":\"not found\"}"),
        }
    })
    .unwrap();
    let e = forced_client(server.url())
        .continuation_logprob_ids(&[1, 2], &[240])
        .unwrap_err();
    let RemoteError::WithheldToken { id, fallback, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*id, 240);
    assert!(fallback.contains("/completion: HTTP 404"), "{fallback}");
    assert!(e.to_string().contains("UTF-8"), "{e}");
    assert_eq!(
        *seen.lock().unwrap(),
        ["/v1/completions", "/tokenize", "/completion"]
    );
    // An answer without `completion_probabilities` (llama.cpp withholding there too).
    let server = big_vocab_server(
        300,
        &[240],
        Some(MockResponse::json(
            &json!({"content": "\u{FFFD}", "stop": true}),
        )),
    );
    let e = forced_client(server.url())
        .continuation_logprob_ids(&[1, 2], &[240])
        .unwrap_err();
    assert!(
        matches!(&e, RemoteError::WithheldToken { fallback, .. } if fallback.contains("completion_probabilities")),
        "{e:?}"
    );
    // A probability that underflowed: named, not taken as a number.
    let null = json!({"completion_probabilities": [{"id": 97, "logprob": -0.1,
        "top_logprobs": [{"id": 97, "logprob": -0.1}, {"id": 240, "logprob": null}]}]});
    let server = big_vocab_server(300, &[240], Some(MockResponse::json(&null)));
    let e = forced_client(server.url())
        .continuation_logprob_ids(&[1, 2], &[240])
        .unwrap_err()
        .to_string();
    assert!(e.contains("token id 240 is null"), "{e}");
}
