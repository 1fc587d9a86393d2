//! Models behind an OpenAI-compatible server (vLLM, llama.cpp's `llama-server`), for the
//! behavioural measurements: next-token log-probabilities (the judge), continuation
//! log-probabilities `log π(y | x)` (generation scores) and sampling. Activation measurements
//! need the weights and stay local.
//!
//! Everything goes through `POST {endpoint}/v1/completions` with raw prompts (text, or token ids
//! when exact tokenisation matters): the caller renders the chat template itself, exactly as the
//! local runtime does, so local and remote prompts are the same tokens.
//!
//! # The three quantities
//! * **Next token**: `max_tokens: 1, logprobs: k` gives the top-k `(token, log p)` after the
//!   prompt ([`Client::next_token_logprobs`]). The judge's margin `log p(A) − log p(B)`
//!   ([`Client::option_logprobs`]) is exact when both options are in the top-k and a one-sided
//!   bound otherwise (see [`options`]); [`Client::option_logprobs_exact`] is always exact.
//! * **Continuation**: `log π(y | x) = Σ_i log π(y_i | x, y_<i)` over the continuation's tokens
//!   ([`Client::continuation_logprob`]). Two ways to get it ([`Scoring`]):
//!   - `echo` (vLLM, OpenAI): one request with prompt `x ⧺ y` as token ids, `echo: true,
//!     max_tokens: 1, logprobs: 1`; the legacy response shape lists every prompt position's
//!     log-probability, and positions `|x| .. |x|+|y|` are the answer.
//!   - forced steps (llama.cpp, whose server does not echo): for each `i`, a request with prompt
//!     `x ⧺ y_<i`, `max_tokens: 1, logprobs: 1` and `logit_bias {y_i: +100}`, so that `y_i` is
//!     the token emitted. llama.cpp reports the emitted token's log-probability from the raw
//!     logits, before any sampler (bias included), which is exactly `log π(y_i | x, y_<i)`; the
//!     client checks the emitted id is `y_i`. The server's prompt cache makes each step cost one
//!     new token. (A server that applied the bias before reporting would give ≈ 0 here: vLLM's
//!     V0 engine did; use `echo` with vLLM.)
//!
//!   llama.cpp withholds the log-probability of a token that is an incomplete UTF-8 sequence
//!   (a byte piece of a multi-byte character such as an emoji or `é` split into bytes). Such a
//!   step is read instead from the raw distribution of llama.cpp's native `/completion`
//!   (`n_probs`, by token id) while a complete token is sampled: the same log-softmax of the
//!   logits, so the score stays exact (see [`raw`]). A server without that endpoint gives
//!   [`RemoteError::WithheldToken`].
//!
//!   [`Scoring::Auto`] tries `echo` once and falls back to forced steps if the server does not
//!   echo, remembering the choice.
//! * **Generation**: `max_tokens, temperature, seed, stop` ([`Client::generate`]).
//!
//! Both log-prob response shapes are accepted ([`wire`]): the legacy completions shape
//! (`choices[0].logprobs.{tokens, token_logprobs, top_logprobs}`) and the chat-style shape
//! llama.cpp returns (`choices[0].logprobs.content[].top_logprobs[]`).
//!
//! # In the commands
//! [`RemoteBackend`] is the judge's `LogprobBackend` over a client (`lvh judge`, `gap`,
//! `sensitivity` with `--endpoint`); `lvh score` and `lvh run --generate` call the client
//! directly. All of them send the token ids the local tokenizer makes of the locally rendered
//! prompt, after [`check_tokenizer`] has compared the server's `/tokenize` on a probe.
//!
//! # Failures
//! Each request has a timeout ([`RemoteError::Timeout`], not retried). Connection failures and
//! HTTP 5xx/429 are retried `retries` times with exponential backoff (`backoff · 2^(attempt−1)`,
//! at most 10 s); 4xx fail at once with the server's message. A server that answers without
//! log-probabilities gives [`RemoteError::NoLogprobs`], which says how to start one that does.
//! Only `http://` endpoints: this build carries no TLS stack (reach a remote server through an
//! SSH tunnel or a local proxy).
//!
//! # A real server for tests and CI
//! `scripts/llamacpp_server.py` serves a GGUF through the PyPI package `xllamacpp` (llama.cpp's
//! server, in-process, no build) on `127.0.0.1` at a free port, and can run a command with
//! `LVH_TEST_ENDPOINT` set to its URL:
//!
//! ```text
//! python3 -m pip install xllamacpp
//! MODEL=$(target/release/lvh model fetch smollm2-135m-instruct)
//! python3 scripts/llamacpp_server.py --model "$MODEL" -- \
//!     env LVH_TEST_MODEL="$MODEL" cargo test --release -p lvh --test remote_llamacpp
//! ```
//!
//! The test compares the server's log-probabilities with the local runtime's on the same GGUF
//! (same token ids; llama.cpp rounds activations to 8 bits for its quantized matmuls, so on
//! SmolLM2-135M Q4_1 the two differ by ≈ 0.08–0.10 nats on average, up to ≈ 0.6 nats for
//! unlikely tokens), and checks forced-step scores against the server's own top-k exactly.

pub mod backend;
pub mod error;
pub mod mock;
pub mod options;
pub mod raw;
pub mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use lm_runtime::score::ContinuationScore;
use serde_json::{json, Value};

pub use backend::{check_tokenizer, RemoteBackend, TokenizerCheck};
pub use error::RemoteError;
pub use options::{Margin, OptionComparison, OptionLogprob};
pub use wire::TokenLogprob;

/// The bias that forces a token in forced-step scoring (OpenAI's and vLLM's maximum).
const FORCE_BIAS: f64 = 100.0;
/// Largest response body read (a full-vocabulary top-k list is a few MB).
const MAX_BODY: u64 = 256 << 20;
/// Longest backoff between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A prompt as text (the server tokenises it, adding BOS as its model asks) or as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Raw text; control tokens such as `<|im_start|>` are parsed by the server.
    Text(String),
    /// Token ids, sent as they are.
    Tokens(Vec<u32>),
}

impl Prompt {
    fn to_json(&self) -> Value {
        match self {
            Self::Text(t) => json!(t),
            Self::Tokens(t) => json!(t),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Text(t) => t.is_empty(),
            Self::Tokens(t) => t.is_empty(),
        }
    }
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<Vec<u32>> for Prompt {
    fn from(t: Vec<u32>) -> Self {
        Self::Tokens(t)
    }
}

impl From<&[u32]> for Prompt {
    fn from(t: &[u32]) -> Self {
        Self::Tokens(t.to_vec())
    }
}

/// How continuation log-probabilities are obtained (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scoring {
    /// Try `echo`, fall back to forced steps if the server does not echo.
    #[default]
    Auto,
    /// One `echo` request (vLLM, OpenAI).
    Echo,
    /// One `logit_bias`-forced request per continuation token (llama.cpp).
    ForcedSteps,
}

/// A generated completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (without the prompt).
    pub text: String,
    /// Why it stopped (`length`, `stop`), when the server says.
    pub finish_reason: Option<String>,
}

/// A client for one OpenAI-compatible server.
#[derive(Debug)]
pub struct Client {
    base: String,
    model: Option<String>,
    agent: ureq::Agent,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    scoring: Mutex<Scoring>,
    api_key: Option<Secret>,
    /// The server's token for `"a"`, forced while a withheld step is read ([`raw`]).
    complete_token: Mutex<Option<u32>>,
    /// Forced steps read from the raw distribution so far.
    raw_steps: AtomicUsize,
}

/// An API key, kept out of `Debug` output.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Client {
    /// A client for `endpoint` (`http://host:port`, with or without a trailing `/v1`), naming
    /// `model` in requests when given (vLLM serving several models needs it; llama.cpp ignores
    /// it). Each request may take `timeout`; connection errors and 5xx are retried `retries`
    /// times, first after 250 ms, doubling.
    ///
    /// # Errors
    /// [`RemoteError::BadEndpoint`] unless the endpoint is an `http://` URL with a host.
    pub fn new(
        endpoint: &str,
        model: Option<String>,
        timeout: Duration,
        retries: u32,
    ) -> Result<Self, RemoteError> {
        let base = normalize_endpoint(endpoint)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            base,
            model,
            agent,
            timeout,
            retries,
            backoff: Duration::from_millis(250),
            scoring: Mutex::new(Scoring::Auto),
            api_key: None,
            complete_token: Mutex::new(None),
            raw_steps: AtomicUsize::new(0),
        })
    }

    /// The same client with another first backoff (tests use a short one).
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The same client sending `Authorization: Bearer {key}` with every request (servers
    /// started with an API key: `llama-server --api-key`, `vllm serve --api-key`).
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty()).map(Secret);
        self
    }

    /// The same client with a fixed continuation-scoring strategy.
    pub fn with_scoring(self, scoring: Scoring) -> Self {
        if let Ok(mut s) = self.scoring.lock() {
            *s = scoring;
        }
        self
    }

    /// The strategy in use: [`Scoring::Auto`] until the first continuation was scored.
    pub fn scoring(&self) -> Scoring {
        self.scoring.lock().map(|s| *s).unwrap_or_default()
    }

    /// How many continuation tokens this client has read from llama.cpp's raw distribution
    /// because the forced step withheld them (incomplete UTF-8 pieces, see [`raw`]).
    pub fn raw_distribution_steps(&self) -> usize {
        self.raw_steps.load(Ordering::Relaxed)
    }

    fn count_raw_step(&self) {
        self.raw_steps.fetch_add(1, Ordering::Relaxed);
    }

    /// The server's base URL (`http://host:port`).
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// Tokenises `text` with the server's tokenizer (`POST /tokenize`, which llama.cpp and vLLM
    /// both offer), control tokens parsed, BOS added only when `add_special` and the model asks.
    ///
    /// # Errors
    /// Transport errors; [`RemoteError::BadResponse`] without a `tokens` list.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, RemoteError> {
        // Field names of both servers: llama.cpp reads `content`/`add_special`/`parse_special`,
        // vLLM `prompt`/`add_special_tokens`; each ignores the other's.
        let mut body = json!({
            "content": text, "add_special": add_special, "parse_special": true,
            "prompt": text, "add_special_tokens": add_special,
        });
        self.add_model(&mut body);
        let (url, v) = self.post("/tokenize", &body)?;
        let tokens = v
            .get("tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(&url, "no `tokens` list"))?;
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // llama.cpp with `with_pieces` answers `{id, piece}` objects.
                t.as_u64()
                    .or_else(|| t.get("id").and_then(Value::as_u64))
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| bad(&url, format!("`tokens[{i}]` is not a token id: {t}")))
            })
            .collect()
    }

    /// The `top_k` most likely next tokens after `prompt` as `(text, log p)`, most likely first.
    ///
    /// # Errors
    /// [`RemoteError::NoLogprobs`] when the server returns none; transport errors.
    pub fn next_token_logprobs(
        &self,
        prompt: impl Into<Prompt>,
        top_k: usize,
    ) -> Result<Vec<(String, f32)>, RemoteError> {
        let (_, top) = self.next_token_top(&prompt.into(), top_k)?;
        Ok(top.into_iter().map(|(t, l)| (t, l as f32)).collect())
    }

    fn next_token_top(
        &self,
        prompt: &Prompt,
        top_k: usize,
    ) -> Result<(String, Vec<(String, f64)>), RemoteError> {
        self.check_prompt(prompt)?;
        let mut body = json!({
            "prompt": prompt.to_json(), "max_tokens": 1, "temperature": 0.0, "logprobs": top_k,
        });
        self.add_model(&mut body);
        let (url, v) = self.post("/v1/completions", &body)?;
        let choice = wire::parse_choice(&v, &url)?;
        let step = choice
            .logprobs
            .and_then(|l| l.into_iter().next())
            .ok_or_else(|| RemoteError::NoLogprobs { url: url.clone() })?;
        if step.top.is_empty() && top_k > 0 {
            return Err(RemoteError::NoLogprobs { url });
        }
        let mut top = step.top;
        top.truncate(top_k);
        Ok((url, top))
    }

    /// `log p(A) − log p(B)` for the next token after `prompt`, from one top-`top_k` request;
    /// exact when both options are listed, else a one-sided bound (see [`options`]). `a` and `b`
    /// are the option tokens' texts as the server spells them.
    ///
    /// # Errors
    /// As [`Client::next_token_logprobs`].
    pub fn option_logprobs(
        &self,
        prompt: impl Into<Prompt>,
        a: &str,
        b: &str,
        top_k: usize,
    ) -> Result<OptionComparison, RemoteError> {
        let (_, top) = self.next_token_top(&prompt.into(), top_k)?;
        Ok(OptionComparison::from_top(&top, a, b))
    }

    /// Exact `log p(A)` and `log p(B)` for single option tokens `a`, `b` (ids), each scored as a
    /// one-token continuation of `prompt`: two requests, whatever the top-k.
    ///
    /// # Errors
    /// As [`Client::continuation_logprob_ids`].
    pub fn option_logprobs_exact(
        &self,
        prompt: &[u32],
        a: u32,
        b: u32,
    ) -> Result<OptionComparison, RemoteError> {
        let la = self.continuation_logprob_ids(prompt, &[a])?.total;
        let lb = self.continuation_logprob_ids(prompt, &[b])?.total;
        Ok(OptionComparison::exact(la, lb))
    }

    /// `log π(continuation | prompt)`, per token and in total. Both texts are tokenised by the
    /// server separately (the prompt with BOS as the model asks, the continuation without), as
    /// `lvh score` does locally, and scored with [`Client::continuation_logprob_ids`].
    ///
    /// # Errors
    /// As [`Client::tokenize`] and [`Client::continuation_logprob_ids`].
    pub fn continuation_logprob(
        &self,
        prompt: &str,
        continuation: &str,
    ) -> Result<ContinuationScore, RemoteError> {
        let p = self.tokenize(prompt, true)?;
        let c = self.tokenize(continuation, false)?;
        self.continuation_logprob_ids(&p, &c)
    }

    /// `log π(y | x) = Σ_i log π(y_i | x, y_<i)` for token ids, by the client's [`Scoring`].
    ///
    /// # Errors
    /// [`RemoteError::EmptyPrompt`]; [`RemoteError::NoLogprobs`];
    /// [`RemoteError::ForcedTokenIgnored`]; [`RemoteError::WithheldToken`] when a withheld
    /// partial UTF-8 token cannot be read from a raw distribution either;
    /// [`RemoteError::BadResponse`] when [`Scoring::Echo`] is fixed and the server does not
    /// echo; transport errors.
    pub fn continuation_logprob_ids(
        &self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<ContinuationScore, RemoteError> {
        if prompt.is_empty() {
            return Err(RemoteError::EmptyPrompt {
                url: self.base.clone(),
            });
        }
        if continuation.is_empty() {
            return Ok(score(Vec::new()));
        }
        match self.scoring() {
            Scoring::ForcedSteps => self.score_forced(prompt, continuation),
            Scoring::Echo => self.score_echo(prompt, continuation)?.ok_or_else(|| {
                bad(
                    &self.url("/v1/completions"),
                    "the server did not echo the prompt's log-probabilities; use forced steps",
                )
            }),
            Scoring::Auto => match self.score_echo(prompt, continuation)? {
                Some(s) => {
                    self.set_scoring(Scoring::Echo);
                    Ok(s)
                }
                None => {
                    self.set_scoring(Scoring::ForcedSteps);
                    self.score_forced(prompt, continuation)
                }
            },
        }
    }

    fn set_scoring(&self, s: Scoring) {
        if let Ok(mut g) = self.scoring.lock() {
            *g = s;
        }
    }

    /// `None` when the server answered without echoing the prompt (llama.cpp ignores `echo`).
    fn score_echo(
        &self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<Option<ContinuationScore>, RemoteError> {
        let ids: Vec<u32> = prompt.iter().chain(continuation).copied().collect();
        let mut body = json!({
            "prompt": ids, "max_tokens": 1, "temperature": 0.0, "logprobs": 1, "echo": true,
        });
        self.add_model(&mut body);
        let (url, v) = self.post("/v1/completions", &body)?;
        let choice = wire::parse_choice(&v, &url)?;
        let Some(steps) = choice.logprobs else {
            return Err(RemoteError::NoLogprobs { url });
        };
        let (n, m) = (prompt.len(), continuation.len());
        if !choice.legacy_shape || steps.len() < n + m {
            return Ok(None);
        }
        let lps = steps[n..n + m]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.logprob.ok_or_else(|| {
                    bad(
                        &url,
                        format!("echoed position {} has no log-probability", n + i),
                    )
                })
            })
            .collect::<Result<Vec<f64>, _>>()?;
        Ok(Some(score(lps)))
    }

    fn score_forced(
        &self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<ContinuationScore, RemoteError> {
        let mut ids = prompt.to_vec();
        let mut lps = Vec::with_capacity(continuation.len());
        for &target in continuation {
            let mut bias = serde_json::Map::new();
            bias.insert(target.to_string(), json!(FORCE_BIAS));
            let mut body = json!({
                "prompt": ids, "max_tokens": 1, "temperature": 0.0, "logprobs": 1,
                "logit_bias": bias,
            });
            self.add_model(&mut body);
            let (url, v) = self.post("/v1/completions", &body)?;
            let choice = wire::parse_choice(&v, &url)?;
            let Some(step) = choice.logprobs.and_then(|l| l.into_iter().next()) else {
                // llama.cpp emits the text of a held-back partial UTF-8 token lossily (U+FFFD)
                // but no log-probability for it: read it from the raw distribution.
                if choice.text.contains('\u{FFFD}') {
                    lps.push(self.withheld_step(&ids, target, url, choice.text)?);
                    ids.push(target);
                    continue;
                }
                return Err(RemoteError::NoLogprobs { url });
            };
            if let Some(id) = step.id {
                if id != target {
                    return Err(RemoteError::ForcedTokenIgnored {
                        url,
                        wanted: target,
                        got: format!("id {id} {:?}", step.token),
                    });
                }
            }
            lps.push(step.logprob.ok_or(RemoteError::NoLogprobs { url })?);
            ids.push(target);
        }
        Ok(score(lps))
    }

    /// Samples up to `max_tokens` tokens after `prompt` at `temperature` (0: greedy) with the
    /// server's RNG seeded by `seed`, stopping at any of `stop`.
    ///
    /// # Errors
    /// Transport errors; [`RemoteError::BadResponse`].
    pub fn generate(
        &self,
        prompt: impl Into<Prompt>,
        max_tokens: usize,
        temperature: f64,
        seed: u64,
        stop: &[String],
    ) -> Result<Generation, RemoteError> {
        let prompt = prompt.into();
        self.check_prompt(&prompt)?;
        let mut body = json!({
            "prompt": prompt.to_json(), "max_tokens": max_tokens, "temperature": temperature,
            "seed": seed,
        });
        if !stop.is_empty() {
            body["stop"] = json!(stop);
        }
        self.add_model(&mut body);
        let (url, v) = self.post("/v1/completions", &body)?;
        let choice = wire::parse_choice(&v, &url)?;
        Ok(Generation {
            text: choice.text,
            finish_reason: choice.finish_reason,
        })
    }

    fn check_prompt(&self, prompt: &Prompt) -> Result<(), RemoteError> {
        if prompt.is_empty() {
            return Err(RemoteError::EmptyPrompt {
                url: self.base.clone(),
            });
        }
        Ok(())
    }

    fn add_model(&self, body: &mut Value) {
        if let Some(m) = &self.model {
            body["model"] = json!(m);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as JSON with retries; returns the URL and the parsed response.
    fn post(&self, path: &str, body: &Value) -> Result<(String, Value), RemoteError> {
        let url = self.url(path);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let retry_left = attempt <= self.retries;
            let mut request = self.agent.post(&url);
            if let Some(Secret(key)) = &self.api_key {
                request = request.header("Authorization", format!("Bearer {key}"));
            }
            let result = request.send_json(body);
            let mut resp = match result {
                Ok(r) => r,
                Err(e) => match self.transport_error(&url, attempt, e) {
                    Retry::Again if retry_left => {
                        self.sleep_backoff(attempt);
                        continue;
                    }
                    Retry::Again => {
                        return Err(RemoteError::Unreachable {
                            url,
                            attempts: attempt,
                            message: "connection failed".into(),
                        })
                    }
                    Retry::Fail(e) => return Err(e),
                },
            };
            let status = resp.status().as_u16();
            let text = match resp
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_string()
            {
                Ok(t) => t,
                Err(e) => match self.transport_error(&url, attempt, e) {
                    Retry::Again if retry_left => {
                        self.sleep_backoff(attempt);
                        continue;
                    }
                    Retry::Again => {
                        return Err(RemoteError::Unreachable {
                            url,
                            attempts: attempt,
                            message: "connection lost while reading the response".into(),
                        })
                    }
                    Retry::Fail(e) => return Err(e),
                },
            };
            if (200..300).contains(&status) {
                let v = serde_json::from_str(&text)
                    .map_err(|e| bad(&url, format!("not JSON ({e}): {}", truncate(&text, 200))))?;
                return Ok((url, v));
            }
            if (status >= 500 || status == 429) && retry_left {
                self.sleep_backoff(attempt);
                continue;
            }
            return Err(RemoteError::Status {
                url,
                status,
                attempts: attempt,
                body: truncate(&text, 500),
            });
        }
    }

    /// Retry connection-level failures; a timeout or anything else fails at once.
    fn transport_error(&self, url: &str, attempt: u32, e: ureq::Error) -> Retry {
        match e {
            ureq::Error::Timeout(_) => Retry::Fail(RemoteError::Timeout {
                url: url.to_owned(),
                seconds: self.timeout.as_secs_f64(),
            }),
            ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Retry::Fail(RemoteError::Timeout {
                    url: url.to_owned(),
                    seconds: self.timeout.as_secs_f64(),
                })
            }
            ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Io(_)
            | ureq::Error::Protocol(_) => {
                if attempt <= self.retries {
                    Retry::Again
                } else {
                    Retry::Fail(RemoteError::Unreachable {
                        url: url.to_owned(),
                        attempts: attempt,
                        message: e.to_string(),
                    })
                }
            }
            other => Retry::Fail(RemoteError::Unreachable {
                url: url.to_owned(),
                attempts: attempt,
                message: other.to_string(),
            }),
        }
    }

    fn sleep_backoff(&self, attempt: u32) {
        let factor = 1u32 << (attempt - 1).min(16);
        std::thread::sleep((self.backoff * factor).min(MAX_BACKOFF));
    }
}

enum Retry {
    Again,
    Fail(RemoteError),
}

fn score(token_logprobs: Vec<f64>) -> ContinuationScore {
    let total = token_logprobs.iter().sum();
    ContinuationScore {
        token_logprobs,
        total,
    }
}

fn bad(url: &str, reason: impl Into<String>) -> RemoteError {
    RemoteError::BadResponse {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// `http://host[:port][/prefix]` without a trailing `/` or `/v1`.
fn normalize_endpoint(endpoint: &str) -> Result<String, RemoteError> {
    let refuse = |reason: &str| RemoteError::BadEndpoint {
        url: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let e = endpoint.trim();
    let rest = if let Some(r) = e.strip_prefix("http://") {
        r
    } else if e.starts_with("https://") {
        return Err(refuse(
            "https needs TLS, which this build leaves out; reach the server over http \
             (an SSH tunnel or a local proxy)",
        ));
    } else {
        return Err(refuse("expected http://host:port"));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(refuse("no host"));
    }
    let mut base = e.trim_end_matches('/').to_owned();
    if let Some(b) = base.strip_suffix("/v1") {
        base = b.to_owned();
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        for (given, want) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://h:1/v1", "http://h:1"),
            ("http://h:1/v1/", "http://h:1"),
            ("http://h/api", "http://h/api"),
        ] {
            assert_eq!(normalize_endpoint(given).unwrap(), want);
        }
        for bad in ["https://h", "h:8080", "http://", "http://:80", "ftp://h"] {
            let e = normalize_endpoint(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn truncation_respects_chars() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
