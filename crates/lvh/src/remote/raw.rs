//! Forced steps that llama.cpp withholds, read from its raw next-token distribution instead.
//!
//! llama.cpp's server sends a generated token (its text and log-probability) only once the text
//! generated so far ends in complete UTF-8. A forced step generates one token, so a target that
//! is an incomplete UTF-8 sequence (a byte piece of a multi-byte character: `" \xF0\x9F\x98"`,
//! the first three bytes of 😀 with its space, or the lead byte of `日`) comes back as `"\u{FFFD}"`
//! with no log-probability. What is withheld depends only on the token the server *samples*: a
//! partial character at the end of a token-id prompt is fine, and so is reading a partial
//! token's probability while another token is sampled.
//!
//! llama.cpp's native `POST /completion` with `n_probs: N` and `post_sampling_probs: false` lists,
//! for the generated position, the `N` most likely tokens of the raw distribution
//! `log softmax(logits)` by id: the same numbers a forced step reports for its emitted token
//! (both come from the logits before any sampler; `logit_bias` does not change them). So a
//! withheld step `log π(y_i | x, y_<i)` is read from one request with prompt `x ⧺ y_<i`,
//! `n_predict: 1`, a `logit_bias` that forces a complete ASCII token (the server's token for
//! `"a"`, so that nothing is withheld), and `n_probs` = [`RAW_TOP`]; when `y_i` is not among
//! those, once more with `n_probs` = [`ALL_TOKENS`] (the server clamps it to its vocabulary
//! size, so the list is then the whole distribution). The next forced step continues from
//! `x ⧺ y_≤i` as usual, and the server's prompt cache makes each request cost one new token.
//!
//! On a server that is not llama.cpp (no `/completion`, or an answer without
//! `completion_probabilities`) the step fails with [`RemoteError::WithheldToken`], saying why.

use serde_json::json;

use super::{wire, Client, RemoteError, FORCE_BIAS};

/// `n_probs` of the first raw-distribution request: enough for the byte pieces of ordinary
/// text, a few tens of kB of JSON.
pub const RAW_TOP: u32 = 1024;
/// `n_probs` asking for the whole vocabulary (`i32::MAX`; llama.cpp clamps it to the vocabulary
/// size and parses `n_probs` as a 32-bit signed integer).
pub const ALL_TOKENS: u32 = i32::MAX as u32;

/// Text whose tokens are all complete UTF-8 (ASCII), forced while a withheld token is read.
const COMPLETE_PROBE: &str = "a";

impl Client {
    /// `log π(target | prompt)` for a target the server withheld in a forced step (`url` and
    /// `text` are that step's request URL and emitted text), from llama.cpp's raw distribution.
    ///
    /// # Errors
    /// [`RemoteError::WithheldToken`] when the server offers no raw distribution (HTTP 4xx on
    /// `/completion` or `/tokenize`, or no `completion_probabilities`); [`RemoteError::BadResponse`]
    /// when the target is not in the server's whole vocabulary or its log-probability is not a
    /// number; transport errors.
    pub(super) fn withheld_step(
        &self,
        prompt: &[u32],
        target: u32,
        url: String,
        text: String,
    ) -> Result<f64, RemoteError> {
        let withheld = |fallback: String| RemoteError::WithheldToken {
            url: url.clone(),
            id: target,
            text: text.clone(),
            fallback,
        };
        match self.raw_logprob(prompt, target) {
            Ok(Some(lp)) => {
                self.count_raw_step();
                Ok(lp)
            }
            Ok(None) => Err(withheld(
                "the answer has no `completion_probabilities`".to_owned(),
            )),
            Err(RemoteError::Status {
                url: u,
                status,
                body,
                ..
            }) if (400..500).contains(&status) => {
                Err(withheld(format!("{u}: HTTP {status}: {body}")))
            }
            Err(e) => Err(e),
        }
    }

    /// `Some(log p(target))` from `/completion`'s raw top-`n_probs` list, widened to the whole
    /// vocabulary when needed; `None` when the server lists no distribution.
    fn raw_logprob(&self, prompt: &[u32], target: u32) -> Result<Option<f64>, RemoteError> {
        let complete = self.complete_token()?;
        for n_probs in [RAW_TOP, ALL_TOKENS] {
            let mut body = json!({
                "prompt": prompt, "n_predict": 1, "temperature": 0.0, "n_probs": n_probs,
                "post_sampling_probs": false, "logit_bias": [[complete, FORCE_BIAS]],
            });
            self.add_model(&mut body);
            let (url, v) = self.post("/completion", &body)?;
            let Some(step) = wire::parse_raw_step(&v, &url)? else {
                return Ok(None);
            };
            match step.logprob_of(target) {
                Some(Some(lp)) => return Ok(Some(lp)),
                Some(None) => {
                    return Err(bad(
                        &url,
                        format!(
                            "the log-probability of token id {target} is null (its probability \
                             underflowed to 0)"
                        ),
                    ))
                }
                // Fewer than asked for: that was the whole vocabulary.
                None if step.listed.len() < n_probs as usize => {
                    return Err(bad(
                        &url,
                        format!(
                            "token id {target} is not in the server's vocabulary ({} tokens \
                             listed)",
                            step.listed.len()
                        ),
                    ))
                }
                None => {}
            }
        }
        Err(bad(
            &self.url("/completion"),
            format!("token id {target} is not among {ALL_TOKENS} listed tokens"),
        ))
    }

    /// The server's first token for [`COMPLETE_PROBE`], asked once per client.
    fn complete_token(&self) -> Result<u32, RemoteError> {
        if let Some(t) = self.complete_token.lock().ok().and_then(|g| *g) {
            return Ok(t);
        }
        let t = *self
            .tokenize(COMPLETE_PROBE, false)?
            .first()
            .ok_or_else(|| {
                bad(
                    &self.url("/tokenize"),
                    format!("{COMPLETE_PROBE:?} tokenizes to no tokens"),
                )
            })?;
        if let Ok(mut g) = self.complete_token.lock() {
            *g = Some(t);
        }
        Ok(t)
    }
}

fn bad(url: &str, reason: impl Into<String>) -> RemoteError {
    RemoteError::BadResponse {
        url: url.to_owned(),
        reason: reason.into(),
    }
}
