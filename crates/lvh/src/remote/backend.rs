//! A model server as the judge's [`LogprobBackend`]: the same token-id prompts the local runtime
//! would run, scored through [`Client`].
//!
//! * Next token: `log p(t | s)` for each option `t` is scored as a one-token continuation of
//!   `s` ([`Client::continuation_logprob_ids`]), so it is exact whatever the server's top-k
//!   (two requests per judge prompt; with llama.cpp the second reuses the first's prompt cache
//!   and costs one token).
//! * Continuations: [`Client::continuation_logprob_ids`] per continuation (`echo` or forced
//!   steps, see the module docs of [`super`]).
//!
//! Prefix reuse is the server's business: llama.cpp keeps each slot's last prompt in its KV
//! cache and computes only the tokens after the common prefix; vLLM has automatic prefix
//! caching. The backend sends a batch's prompts in lexicographic order of their token ids so
//! that consecutive prompts share as long a prefix as the batch allows.
//!
//! Token ids mean the same text only when the server runs the same tokenizer, so
//! [`check_tokenizer`] compares the server's `/tokenize` with the local tokenizer on a probe.

use lm_runtime::score::ContinuationScore;
use lm_runtime::tokenizer::Tokenizer;

use super::{Client, RemoteError};
use crate::judge::engine::LogprobBackend;
use crate::judge::JudgeError;

/// The judge's log-probabilities from a server.
#[derive(Debug)]
pub struct RemoteBackend<'a> {
    client: &'a Client,
}

impl<'a> RemoteBackend<'a> {
    /// A backend over `client`.
    pub fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        self.client
    }
}

impl LogprobBackend for RemoteBackend<'_> {
    fn next_token_logprobs_at(
        &self,
        seqs: &[Vec<u32>],
        ids: &[u32],
    ) -> Result<Vec<Vec<f64>>, JudgeError> {
        // In lexicographic order of token ids, consecutive prompts share their longest common
        // prefixes, which a server's prompt cache (llama.cpp keeps each slot's last prompt)
        // then computes once: for the judge, each order's (A)/(B) block once across the
        // principles.
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by(|&i, &j| seqs[i].cmp(&seqs[j]));
        let mut out: Vec<Vec<f64>> = vec![Vec::new(); seqs.len()];
        for i in order {
            out[i] = ids
                .iter()
                .map(|&t| {
                    Ok::<f64, JudgeError>(
                        self.client.continuation_logprob_ids(&seqs[i], &[t])?.total,
                    )
                })
                .collect::<Result<Vec<f64>, JudgeError>>()?;
        }
        Ok(out)
    }

    fn score_continuations(
        &self,
        prompt: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<ContinuationScore>, JudgeError> {
        continuations
            .iter()
            .map(|c| Ok(self.client.continuation_logprob_ids(prompt, c)?))
            .collect()
    }
}

/// What [`check_tokenizer`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerCheck {
    /// The server's ids equal the local ones on every probe.
    Agrees,
    /// The server offers no usable `/tokenize` (e.g. a hosted API); nothing was checked. The
    /// reason is the server's error.
    Unavailable(String),
}

/// Compares the server's tokenization of each probe text (`/tokenize`, special tokens parsed,
/// BOS as the model asks) with `local(text)`, the ids the local path would send.
///
/// # Errors
/// [`RemoteError::TokenizerMismatch`] naming the first probe that differs; transport errors
/// other than a missing endpoint (HTTP 404/405/501), which gives
/// [`TokenizerCheck::Unavailable`].
pub fn check_tokenizer(
    client: &Client,
    local_model: &str,
    probes: &[String],
    local: impl Fn(&str) -> Vec<u32>,
) -> Result<TokenizerCheck, RemoteError> {
    for text in probes {
        let remote = match client.tokenize(text, true) {
            Ok(r) => r,
            Err(RemoteError::Status { status, body, .. }) if matches!(status, 404 | 405 | 501) => {
                return Ok(TokenizerCheck::Unavailable(format!(
                    "HTTP {status}: {body}"
                )));
            }
            Err(e) => return Err(e),
        };
        let ids = local(text);
        if ids != remote {
            let head = |v: &[u32]| v.iter().take(32).copied().collect::<Vec<u32>>();
            return Err(RemoteError::TokenizerMismatch {
                url: format!("{}/tokenize", client.endpoint()),
                local_model: local_model.to_owned(),
                text: text.clone(),
                local: head(&ids),
                remote: head(&remote),
            });
        }
    }
    Ok(TokenizerCheck::Agrees)
}

/// The local ids of rendered prompt text as [`crate::judge::prompt::encode`] makes them.
pub fn local_ids(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    crate::judge::prompt::encode(tokenizer, text)
}
