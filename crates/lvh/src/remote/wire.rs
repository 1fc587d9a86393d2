//! Reading `/v1/completions` responses, in both log-prob shapes servers use.
//!
//! * **Legacy completions shape** (OpenAI's completions API, vLLM):
//!   `choices[0].logprobs = { tokens: [t], token_logprobs: [lp | null], top_logprobs: [{t: lp} | null] }`;
//!   with `echo` the prompt's tokens come first, the very first with `null` (it has no context).
//! * **Chat-style shape** (llama.cpp's server, also on `/v1/completions`):
//!   `choices[0].logprobs.content = [{ token, logprob, id?, top_logprobs: [{ token, logprob, id? }] }]`.
//! * **llama.cpp's native `/completion`** with `n_probs: N` ([`parse_raw_step`]):
//!   `completion_probabilities = [{ id, token, logprob, top_logprobs: [{ id, token, logprob }] }]`,
//!   the `N` most likely tokens of the raw distribution (`post_sampling_probs: false`).

use serde_json::Value;

use super::error::RemoteError;

/// One position of a response: the token emitted (or echoed) there and its log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text as the server spells it.
    pub token: String,
    /// Its id, when the server says (llama.cpp does, vLLM's legacy shape does not).
    pub id: Option<u32>,
    /// `log π(token | context)`; `None` for an echoed first prompt token.
    pub logprob: Option<f64>,
    /// The server's top-k alternatives `(text, log-prob)`, most likely first.
    pub top: Vec<(String, f64)>,
}

/// The first choice of a completion response.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Generated text (with `echo`, the prompt's text too).
    pub text: String,
    /// Why generation stopped (`length`, `stop`, ...), when given.
    pub finish_reason: Option<String>,
    /// Per-position log-probabilities; `None` when the response carries none.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Whether they came in the legacy shape (the only shape that can carry `echo`ed prompts).
    pub legacy_shape: bool,
}

fn bad(url: &str, reason: impl Into<String>) -> RemoteError {
    RemoteError::BadResponse {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// Parses the first choice of a `/v1/completions` response body.
///
/// # Errors
/// [`RemoteError::BadResponse`] when `choices[0]` is missing or a log-prob field has the wrong
/// type (naming the field).
pub fn parse_choice(body: &Value, url: &str) -> Result<Choice, RemoteError> {
    if let Some(err) = body.get("error") {
        return Err(bad(url, format!("error object instead of choices: {err}")));
    }
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| bad(url, "no `choices[0]`"))?;
    let text = match choice.get("text") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => {
            return Err(bad(
                url,
                format!("`choices[0].text` is not a string: {other}"),
            ))
        }
    };
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (logprobs, legacy_shape) = match choice.get("logprobs") {
        None | Some(Value::Null) => (None, false),
        Some(lp) if lp.get("content").is_some() => (parse_chat(lp, url)?, false),
        Some(lp) if lp.get("token_logprobs").is_some() || lp.get("tokens").is_some() => {
            (Some(parse_legacy(lp, url)?), true)
        }
        Some(other) => {
            return Err(bad(
                url,
                format!("`choices[0].logprobs` has neither `content` nor `tokens`: {other}"),
            ))
        }
    };
    Ok(Choice {
        text,
        finish_reason,
        logprobs,
        legacy_shape,
    })
}

fn num(v: &Value, url: &str, field: &str) -> Result<f64, RemoteError> {
    v.as_f64()
        .ok_or_else(|| bad(url, format!("`{field}` is not a number: {v}")))
}

fn opt_id(v: &Value, url: &str, field: &str) -> Result<Option<u32>, RemoteError> {
    match v.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(id) => id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| bad(url, format!("`{field}.id` is not a token id: {id}"))),
    }
}

fn sort_top(top: &mut [(String, f64)]) {
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

/// `logprobs.content[]`; an explicit `null` or empty content counts as no log-probs.
fn parse_chat(lp: &Value, url: &str) -> Result<Option<Vec<TokenLogprob>>, RemoteError> {
    let content = match lp.get("content") {
        Some(Value::Null) | None => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(bad(
                url,
                format!("`logprobs.content` is not an array: {other}"),
            ))
        }
    };
    let mut out = Vec::with_capacity(content.len());
    for (i, item) in content.iter().enumerate() {
        let field = format!("logprobs.content[{i}]");
        let token = item
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(url, format!("`{field}.token` is missing or not a string")))?
            .to_owned();
        let logprob = match item.get("logprob") {
            None | Some(Value::Null) => None,
            Some(v) => Some(num(v, url, &format!("{field}.logprob"))?),
        };
        let mut top = Vec::new();
        if let Some(t) = item.get("top_logprobs").filter(|t| !t.is_null()) {
            let arr = t
                .as_array()
                .ok_or_else(|| bad(url, format!("`{field}.top_logprobs` is not an array")))?;
            for (j, alt) in arr.iter().enumerate() {
                let f = format!("{field}.top_logprobs[{j}]");
                let tok = alt
                    .get("token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(url, format!("`{f}.token` is missing or not a string")))?;
                let lp = alt
                    .get("logprob")
                    .ok_or_else(|| bad(url, format!("`{f}.logprob` is missing")))?;
                top.push((tok.to_owned(), num(lp, url, &format!("{f}.logprob"))?));
            }
        }
        sort_top(&mut top);
        out.push(TokenLogprob {
            token,
            id: opt_id(item, url, &field)?,
            logprob,
            top,
        });
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// `logprobs.{tokens, token_logprobs, top_logprobs}`, parallel arrays.
fn parse_legacy(lp: &Value, url: &str) -> Result<Vec<TokenLogprob>, RemoteError> {
    let arr = |name: &str| -> Result<Vec<Value>, RemoteError> {
        match lp.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(other) => Err(bad(
                url,
                format!("`logprobs.{name}` is not an array: {other}"),
            )),
        }
    };
    let tokens = arr("tokens")?;
    let token_logprobs = arr("token_logprobs")?;
    let top_logprobs = arr("top_logprobs")?;
    if token_logprobs.len() != tokens.len() {
        return Err(bad(
            url,
            format!(
                "`logprobs.tokens` has {} entries but `logprobs.token_logprobs` {}",
                tokens.len(),
                token_logprobs.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(tokens.len());
    for (i, (t, l)) in tokens.iter().zip(&token_logprobs).enumerate() {
        let token = t
            .as_str()
            .ok_or_else(|| bad(url, format!("`logprobs.tokens[{i}]` is not a string")))?
            .to_owned();
        let logprob = match l {
            Value::Null => None,
            v => Some(num(v, url, &format!("logprobs.token_logprobs[{i}]"))?),
        };
        let mut top = Vec::new();
        match top_logprobs.get(i) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (tok, v) in m {
                    top.push((
                        tok.clone(),
                        num(v, url, &format!("logprobs.top_logprobs[{i}][{tok:?}]"))?,
                    ));
                }
            }
            Some(other) => {
                return Err(bad(
                    url,
                    format!("`logprobs.top_logprobs[{i}]` is not an object: {other}"),
                ))
            }
        }
        sort_top(&mut top);
        out.push(TokenLogprob {
            token,
            id: None,
            logprob,
            top,
        });
    }
    Ok(out)
}

/// The first generated position of a native `/completion` response: the sampled token and the
/// listed `(id, log p)` of the raw (pre-sampler) distribution, most likely first as the server
/// sends them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawStep {
    /// The token the server sampled there.
    pub sampled: u32,
    /// `(id, log p)`; `log p` is `None` where the server wrote `null` (a probability that
    /// underflowed to 0 in its `f32` softmax).
    pub listed: Vec<(u32, Option<f64>)>,
}

impl RawStep {
    /// `log p(id)` if listed: `Some(None)` when listed without a finite value.
    pub fn logprob_of(&self, id: u32) -> Option<Option<f64>> {
        self.listed
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, lp)| *lp)
    }
}

/// Parses `completion_probabilities[0]` of a native `/completion` response; `None` when the
/// field is absent or empty (llama.cpp leaves it out when it withholds the sampled token, and a
/// server that is not llama.cpp has no such field).
///
/// # Errors
/// [`RemoteError::BadResponse`] naming the field when an entry is malformed.
pub fn parse_raw_step(body: &Value, url: &str) -> Result<Option<RawStep>, RemoteError> {
    let first = match body.get("completion_probabilities") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => match a.first() {
            None => return Ok(None),
            Some(f) => f,
        },
        Some(other) => {
            return Err(bad(
                url,
                format!(
                    "`completion_probabilities` is not an array: {}",
                    short(other)
                ),
            ))
        }
    };
    let field = "completion_probabilities[0]";
    let sampled =
        opt_id(first, url, field)?.ok_or_else(|| bad(url, format!("`{field}.id` is missing")))?;
    let arr = first
        .get("top_logprobs")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            bad(
                url,
                format!("`{field}.top_logprobs` is missing or not an array"),
            )
        })?;
    let mut listed = Vec::with_capacity(arr.len());
    for (j, alt) in arr.iter().enumerate() {
        let f = format!("{field}.top_logprobs[{j}]");
        let id = opt_id(alt, url, &f)?.ok_or_else(|| bad(url, format!("`{f}.id` is missing")))?;
        let lp = match alt.get("logprob") {
            Some(Value::Null) => None,
            Some(v) => Some(num(v, url, &format!("{f}.logprob"))?),
            None => return Err(bad(url, format!("`{f}.logprob` is missing"))),
        };
        listed.push((id, lp));
    }
    Ok(Some(RawStep { sampled, listed }))
}

/// A JSON value cut to 200 characters for an error message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_shape_is_read_and_sorted() {
        let body = json!({"choices": [{"text": " Paris", "logprobs": {"content": [
            {"id": 7042, "token": " Paris", "logprob": -0.25,
             "top_logprobs": [{"token": " the", "logprob": -2.5}, {"token": " Paris", "logprob": -0.25}]}
        ]}, "finish_reason": "length"}]});
        let c = parse_choice(&body, "http://x").unwrap();
        let lp = c.logprobs.unwrap();
        assert!(!c.legacy_shape);
        assert_eq!(lp[0].id, Some(7042));
        assert_eq!(lp[0].logprob, Some(-0.25));
        assert_eq!(
            lp[0].top,
            vec![(" Paris".to_owned(), -0.25), (" the".to_owned(), -2.5)]
        );
        assert_eq!(c.finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn legacy_shape_with_echo_nulls() {
        let body = json!({"choices": [{"text": "ab", "logprobs": {
            "tokens": ["a", "b"], "token_logprobs": [null, -1.5],
            "top_logprobs": [null, {"b": -1.5, "c": -0.5}]}}]});
        let c = parse_choice(&body, "http://x").unwrap();
        let lp = c.logprobs.unwrap();
        assert!(c.legacy_shape);
        assert_eq!(lp[0].logprob, None);
        assert!(lp[0].top.is_empty());
        assert_eq!(lp[1].top[0], ("c".to_owned(), -0.5));
    }

    #[test]
    fn malformed_fields_are_named() {
        let body = json!({"choices": [{"logprobs": {"tokens": ["a"], "token_logprobs": ["x"]}}]});
        let e = parse_choice(&body, "http://x").unwrap_err().to_string();
        assert!(
            e.contains("token_logprobs[0]") && e.contains("http://x"),
            "{e}"
        );
        let body = json!({"choices": [{"logprobs": {"tokens": ["a"], "token_logprobs": []}}]});
        let e = parse_choice(&body, "http://x").unwrap_err().to_string();
        assert!(e.contains("1 entries"), "{e}");
        let e = parse_choice(&json!({"object": "x"}), "http://x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("choices[0]"), "{e}");
    }

    #[test]
    fn raw_step_is_read_by_id() {
        let body = json!({"content": "a", "completion_probabilities": [{"id": 81, "token": "a",
            "logprob": -10.8, "top_logprobs": [
                {"id": 476, "token": " \"", "logprob": -1.25},
                {"id": 218, "token": "\u{FFFD}", "bytes": [128], "logprob": -3.5},
                {"id": 9, "token": "x", "logprob": null}]}]});
        let r = parse_raw_step(&body, "http://x").unwrap().unwrap();
        assert_eq!(r.sampled, 81);
        assert_eq!(r.logprob_of(218), Some(Some(-3.5)));
        assert_eq!(r.logprob_of(9), Some(None));
        assert_eq!(r.logprob_of(81), None);
        assert_eq!(r.listed.len(), 3);
        // Withheld or not llama.cpp: no field, or an empty one.
        assert_eq!(parse_raw_step(&json!({"content": "x"}), "u").unwrap(), None);
        let empty = json!({"completion_probabilities": []});
        assert_eq!(parse_raw_step(&empty, "u").unwrap(), None);
        let e = parse_raw_step(
            &json!({"completion_probabilities": [{"id": 1, "top_logprobs": [{"id": "z", "logprob": 0}]}]}),
            "http://x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("completion_probabilities[0].top_logprobs[0].id"),
            "{e}"
        );
        let e = parse_raw_step(
            &json!({"completion_probabilities": [{"id": 1}]}),
            "http://x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("top_logprobs` is missing"), "{e}");
    }

    #[test]
    fn null_logprobs_is_none() {
        let body = json!({"choices": [{"text": "x", "logprobs": null}]});
        assert_eq!(parse_choice(&body, "u").unwrap().logprobs, None);
        let body = json!({"choices": [{"text": "x", "logprobs": {"content": []}}]});
        assert_eq!(parse_choice(&body, "u").unwrap().logprobs, None);
    }
}
