//! The remote client against an in-process mock server replaying vLLM's and llama.cpp's response
//! shapes, error statuses, slow answers and a closed port.

use std::time::{Duration, Instant};

use lvh::remote::mock::{MockResponse, MockServer, Recorded};
use lvh::remote::{Client, Margin, OptionLogprob, RemoteError, Scoring};
use serde_json::{json, Value};

fn client(url: &str, retries: u32) -> Client {
    Client::new(url, None, Duration::from_secs(5), retries)
        .unwrap()
        .with_backoff(Duration::from_millis(5))
}

/// A toy model both mock servers share: `log π(t | context)`, distinct per token and position.
fn toy_lp(context_len: usize, t: u32) -> f64 {
    -0.5 - 0.1 * f64::from(t % 7) - 0.01 * context_len as f64
}

fn prompt_ids(r: &Recorded) -> Vec<u32> {
    r.body["prompt"]
        .as_array()
        .expect("token-id prompt")
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// llama.cpp: the chat-style shape, ids included; `echo` ignored; `logit_bias` forces a token
/// whose reported log-prob is the unbiased one. Unbiased, it emits token 3.
fn llamacpp(r: &Recorded) -> MockResponse {
    if r.path != "/v1/completions" {
        return MockResponse::status(404, "{\"error\":\"not found\"}");
    }
    let ids = prompt_ids(r);
    let forced = r.body["logit_bias"]
        .as_object()
        .and_then(|m| m.keys().next().map(|k| k.parse::<u32>().unwrap()));
    let t = forced.unwrap_or(3);
    json_ok(
        json!({"choices": [{"text": "x", "index": 0, "finish_reason": "length",
        "logprobs": {"content": [{"id": t, "token": format!("t{t}"), "logprob": toy_lp(ids.len(), t),
            "top_logprobs": [{"id": 3, "token": "t3", "logprob": toy_lp(ids.len(), 3)}]}]}}]}),
    )
}

/// vLLM: the legacy shape; with `echo` every prompt position is listed, the first with `null`.
fn vllm(r: &Recorded) -> MockResponse {
    let ids = prompt_ids(r);
    assert_eq!(
        r.body["echo"],
        json!(true),
        "vLLM mock only answers echo requests"
    );
    let mut tokens: Vec<Value> = ids.iter().map(|t| json!(format!("t{t}"))).collect();
    let mut lps: Vec<Value> = vec![Value::Null];
    lps.extend((1..ids.len()).map(|i| json!(toy_lp(i, ids[i]))));
    tokens.push(json!("t3"));
    lps.push(json!(toy_lp(ids.len(), 3)));
    let tops: Vec<Value> = lps.iter().map(|_| Value::Null).collect();
    json_ok(json!({"choices": [{"text": "x", "logprobs": {
        "tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": []}}]}))
}

fn json_ok(v: Value) -> MockResponse {
    MockResponse::json(&v)
}

fn chat_top(top: &[(&str, f64)]) -> Value {
    let alts: Vec<Value> = top
        .iter()
        .map(|(t, l)| json!({"token": t, "logprob": l}))
        .collect();
    json!({"choices": [{"text": top[0].0, "logprobs": {"content": [
        {"token": top[0].0, "logprob": top[0].1, "top_logprobs": alts}]}}]})
}

#[test]
fn next_token_logprobs_in_the_chat_shape() {
    let body = chat_top(&[(" Paris", -0.26), (" London", -4.29), (" the", -2.76)]);
    let server = MockServer::scripted(vec![MockResponse::json(&body)]).unwrap();
    let c = Client::new(server.url(), Some("m1".into()), Duration::from_secs(5), 0).unwrap();
    let top = c
        .next_token_logprobs("The capital of France is", 3)
        .unwrap();
    assert_eq!(
        top,
        vec![
            (" Paris".to_owned(), -0.26f32),
            (" the".to_owned(), -2.76),
            (" London".to_owned(), -4.29)
        ]
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/completions");
    assert_eq!(reqs[0].body["logprobs"], json!(3));
    assert_eq!(reqs[0].body["max_tokens"], json!(1));
    assert_eq!(reqs[0].body["model"], json!("m1"));
    assert_eq!(reqs[0].body["prompt"], json!("The capital of France is"));
}

#[test]
fn next_token_logprobs_in_the_legacy_shape() {
    let body = json!({"choices": [{"text": " A", "logprobs": {"tokens": [" A"], "token_logprobs": [-0.1],
        "top_logprobs": [{" A": -0.1, " B": -2.4, " C": -3.0}]}}]});
    let server = MockServer::scripted(vec![MockResponse::json(&body)]).unwrap();
    // A trailing /v1 in the endpoint is accepted.
    let c = client(&format!("{}/v1/", server.url()), 0);
    let top = c.next_token_logprobs(vec![1u32, 2, 3], 2).unwrap();
    assert_eq!(
        top,
        vec![(" A".to_owned(), -0.1f32), (" B".to_owned(), -2.4)]
    );
    assert_eq!(server.requests()[0].body["prompt"], json!([1, 2, 3]));
    assert_eq!(server.requests()[0].path, "/v1/completions");
}

#[test]
fn a_server_without_logprobs_gets_a_clear_error() {
    let plain = json!({"choices": [{"text": " Paris", "logprobs": null}]});
    let server = MockServer::scripted(vec![MockResponse::json(&plain); 2]).unwrap();
    let c = client(server.url(), 0);
    let e = c.next_token_logprobs("x", 5).unwrap_err();
    assert!(matches!(e, RemoteError::NoLogprobs { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(server.url()), "{msg}");
    assert!(
        msg.contains("--max-logprobs") && msg.contains("llama"),
        "{msg}"
    );
    let e = c.continuation_logprob_ids(&[1], &[2]).unwrap_err();
    assert!(matches!(e, RemoteError::NoLogprobs { .. }), "{e:?}");
}

#[test]
fn a_500_is_retried_then_succeeds() {
    let ok = chat_top(&[("A", -0.5), ("B", -1.0)]);
    let server = MockServer::scripted(vec![
        MockResponse::status(500, "{\"error\":\"busy\"}"),
        MockResponse::status(503, "{\"error\":\"loading\"}"),
        MockResponse::json(&ok),
    ])
    .unwrap();
    let c = client(server.url(), 2);
    let top = c.next_token_logprobs("x", 2).unwrap();
    assert_eq!(top[0], ("A".to_owned(), -0.5f32));
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn retries_run_out_and_4xx_is_not_retried() {
    let server = MockServer::scripted(vec![MockResponse::status(500, "boom"); 5]).unwrap();
    let e = client(server.url(), 2)
        .next_token_logprobs("x", 2)
        .unwrap_err();
    match e {
        RemoteError::Status {
            status,
            attempts,
            ref body,
            ref url,
        } => {
            assert_eq!((status, attempts), (500, 3));
            assert_eq!(body, "boom");
            assert!(url.ends_with("/v1/completions"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 3);

    let server = MockServer::scripted(vec![
        MockResponse::status(400, "{\"error\":\"logprobs must be <= 20\"}"),
        MockResponse::json(&chat_top(&[("A", -0.5)])),
    ])
    .unwrap();
    let e = client(server.url(), 3)
        .next_token_logprobs("x", 50)
        .unwrap_err();
    assert!(
        matches!(
            e,
            RemoteError::Status {
                status: 400,
                attempts: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("logprobs must be <= 20"));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_slow_server_times_out() {
    let server = MockServer::scripted(vec![
        MockResponse::json(&chat_top(&[("A", -0.5)])).delayed(Duration::from_secs(3))
    ])
    .unwrap();
    let c = Client::new(server.url(), None, Duration::from_millis(300), 3).unwrap();
    let t = Instant::now();
    let e = c.next_token_logprobs("x", 1).unwrap_err();
    assert!(matches!(e, RemoteError::Timeout { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(e.to_string().contains(server.url()));
}

#[test]
fn a_closed_port_is_unreachable_after_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let e = client(&url, 2).next_token_logprobs("x", 1).unwrap_err();
    match e {
        RemoteError::Unreachable {
            attempts, ref url, ..
        } => {
            assert_eq!(attempts, 3);
            assert!(url.contains(&port.to_string()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn continuation_by_echo_against_a_vllm_shape() {
    let server = MockServer::start(vllm).unwrap();
    let c = client(server.url(), 0);
    let (prompt, cont) = (vec![5u32, 9, 2], vec![4u32, 11, 6]);
    let s = c.continuation_logprob_ids(&prompt, &cont).unwrap();
    let want: Vec<f64> = (0..3).map(|i| toy_lp(3 + i, cont[i])).collect();
    assert_eq!(s.token_logprobs, want);
    assert!((s.total - want.iter().sum::<f64>()).abs() < 1e-12);
    assert_eq!(c.scoring(), Scoring::Echo);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(prompt_ids(&reqs[0]), vec![5, 9, 2, 4, 11, 6]);
}

#[test]
fn continuation_by_forced_steps_against_a_llamacpp_shape() {
    let server = MockServer::start(llamacpp).unwrap();
    let c = client(server.url(), 0);
    let (prompt, cont) = (vec![5u32, 9], vec![4u32, 11, 6, 3]);
    let s = c.continuation_logprob_ids(&prompt, &cont).unwrap();
    let want: Vec<f64> = (0..4).map(|i| toy_lp(2 + i, cont[i])).collect();
    assert_eq!(s.token_logprobs, want);
    assert_eq!(c.scoring(), Scoring::ForcedSteps);
    let reqs = server.requests();
    // One probe with echo (ignored), then one forced step per token.
    assert_eq!(reqs.len(), 1 + 4);
    assert_eq!(reqs[0].body["echo"], json!(true));
    for (i, r) in reqs[1..].iter().enumerate() {
        let mut want_prompt = prompt.clone();
        want_prompt.extend(&cont[..i]);
        assert_eq!(prompt_ids(r), want_prompt);
        assert_eq!(r.body["logit_bias"], json!({cont[i].to_string(): 100.0}));
    }
    // The choice is remembered: no more echo probes.
    c.continuation_logprob_ids(&prompt, &cont[..1]).unwrap();
    assert_eq!(server.requests().len(), 6);
    // Option margins scored exactly, as one-token continuations.
    let o = c.option_logprobs_exact(&prompt, 4, 6).unwrap();
    assert_eq!(o.margin, Margin::Exact(toy_lp(2, 4) - toy_lp(2, 6)));
}

#[test]
fn a_server_that_ignores_logit_bias_is_caught() {
    // Always emits token 3, whatever the bias.
    let server = MockServer::start(|r: &Recorded| {
        let n = prompt_ids(r).len();
        MockResponse::json(&json!({"choices": [{"text": "x", "logprobs": {"content": [
            {"id": 3, "token": "t3", "logprob": toy_lp(n, 3), "top_logprobs": []}]}}]}))
    })
    .unwrap();
    let c = client(server.url(), 0).with_scoring(Scoring::ForcedSteps);
    let e = c.continuation_logprob_ids(&[1, 2], &[4]).unwrap_err();
    assert!(
        matches!(e, RemoteError::ForcedTokenIgnored { wanted: 4, .. }),
        "{e:?}"
    );
    // Echo fixed on a server that does not echo: an error, not a silent fallback.
    let c = client(server.url(), 0).with_scoring(Scoring::Echo);
    let e = c.continuation_logprob_ids(&[1, 2], &[4]).unwrap_err();
    assert!(e.to_string().contains("did not echo"), "{e}");
}

#[test]
fn option_margins_are_exact_or_bounded() {
    let body = chat_top(&[("A", -0.4), ("B", -1.9), ("C", -3.0)]);
    let server = MockServer::scripted(vec![MockResponse::json(&body); 3]).unwrap();
    let c = client(server.url(), 0);
    let o = c.option_logprobs("judge prompt", "A", "B", 3).unwrap();
    let Margin::Exact(m) = o.margin else {
        panic!("{o:?}")
    };
    assert!((m - 1.5).abs() < 1e-12);
    let o = c.option_logprobs("judge prompt", "A", " B", 3).unwrap();
    assert_eq!(o.b, OptionLogprob::AtMost(-3.0));
    assert!(matches!(o.margin, Margin::AtLeast(v) if (v - 2.6).abs() < 1e-12));
    let o = c.option_logprobs("judge prompt", " A", "B", 3).unwrap();
    assert!(matches!(o.margin, Margin::AtMost(v) if (v + 1.1).abs() < 1e-12));
}

#[test]
fn generate_sends_sampling_parameters() {
    let body =
        json!({"choices": [{"text": ", there was", "finish_reason": "stop", "logprobs": null}]});
    let server = MockServer::scripted(vec![MockResponse::json(&body)]).unwrap();
    let c = client(server.url(), 0);
    let g = c
        .generate("Once upon a time", 16, 0.7, 42, &[".".to_owned()])
        .unwrap();
    assert_eq!(g.text, ", there was");
    assert_eq!(g.finish_reason.as_deref(), Some("stop"));
    let r = &server.requests()[0].body;
    assert_eq!(r["max_tokens"], json!(16));
    assert_eq!(r["temperature"], json!(0.7));
    assert_eq!(r["seed"], json!(42));
    assert_eq!(r["stop"], json!(["."]));
}

#[test]
fn tokenize_reads_both_servers() {
    let server = MockServer::scripted(vec![
        MockResponse::json(&json!({"tokens": [504, 3575]})),
        MockResponse::json(
            &json!({"tokens": [{"id": 504, "piece": "The"}, {"id": 3575, "piece": " capital"}]}),
        ),
        MockResponse::json(&json!({"tokens": ["x"]})),
    ])
    .unwrap();
    let c = client(server.url(), 0);
    assert_eq!(c.tokenize("The capital", true).unwrap(), vec![504, 3575]);
    assert_eq!(c.tokenize("The capital", false).unwrap(), vec![504, 3575]);
    let e = c.tokenize("x", false).unwrap_err().to_string();
    assert!(e.contains("tokens[0]"), "{e}");
    let r = server.requests();
    assert_eq!(r[0].path, "/tokenize");
    assert_eq!(r[0].body["content"], json!("The capital"));
    assert_eq!(r[0].body["add_special"], json!(true));
    assert_eq!(r[0].body["prompt"], json!("The capital"));
}

#[test]
fn empty_prompts_and_continuations() {
    let server = MockServer::scripted(vec![]).unwrap();
    let c = client(server.url(), 0);
    assert!(matches!(
        c.continuation_logprob_ids(&[], &[1]),
        Err(RemoteError::EmptyPrompt { .. })
    ));
    assert!(matches!(
        c.next_token_logprobs("", 1),
        Err(RemoteError::EmptyPrompt { .. })
    ));
    let s = c.continuation_logprob_ids(&[1], &[]).unwrap();
    assert_eq!((s.token_logprobs.len(), s.total), (0, 0.0));
    assert!(server.requests().is_empty());
}

#[test]
fn a_withheld_partial_utf8_token_is_named() {
    // llama.cpp's answer when the forced token is one byte piece of an emoji.
    let body =
        json!({"choices": [{"text": " \u{FFFD}", "logprobs": null, "finish_reason": "length"}]});
    let plain = json!({"choices": [{"text": "x", "logprobs": null}]});
    // The raw-distribution fallback then asks `/tokenize` first; a server without it (not
    // llama.cpp) leaves the error standing.
    let server = MockServer::scripted(vec![
        MockResponse::json(&body),
        MockResponse::status(404, "{\"error\":\"not found\"}"),
        MockResponse::json(&plain),
    ])
    .unwrap();
    let c = client(server.url(), 0).with_scoring(Scoring::ForcedSteps);
    let e = c.continuation_logprob_ids(&[1, 2], &[40303]).unwrap_err();
    assert!(
        matches!(e, RemoteError::WithheldToken { id: 40303, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("UTF-8"), "{e}");
    // Without the replacement character it is a server without log-probs.
    let e = c.continuation_logprob_ids(&[1, 2], &[7]).unwrap_err();
    assert!(matches!(e, RemoteError::NoLogprobs { .. }), "{e:?}");
}
