//! Errors of the remote client; every variant names the server URL it concerns.

/// What went wrong talking to an OpenAI-compatible server.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The endpoint is not an `http://host[:port][/prefix]` URL.
    #[error("invalid endpoint `{url}`: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The server could not be reached (connection refused, reset, DNS), even after retrying.
    #[error("could not reach the server at {url} ({attempts} attempt(s)): {message}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// Attempts made, the first included.
        attempts: u32,
        /// The last transport error.
        message: String,
    },
    /// No complete answer within the client's timeout. Not retried: a server too slow once is
    /// usually as slow the next time, and retrying would multiply the wait.
    #[error("the server at {url} did not answer within {seconds:.1} s (raise the timeout for big models)")]
    Timeout {
        /// The request URL.
        url: String,
        /// The timeout, in seconds.
        seconds: f64,
    },
    /// An HTTP error status: 4xx at once, 5xx/429 after the retries ran out.
    #[error("the server at {url} answered HTTP {status} ({attempts} attempt(s)): {body}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// Attempts made, the first included.
        attempts: u32,
        /// The start of the response body (the server's error message, usually).
        body: String,
    },
    /// The response is not the JSON this client expects.
    #[error("the server at {url} sent a response lvh cannot read: {reason}")]
    BadResponse {
        /// The request URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Log-probabilities were asked for and none came back.
    #[error(
        "the server at {url} returned no logprobs; start llama.cpp's server (`llama-server -m MODEL.gguf`, \
         any recent build answers `logprobs` on /v1/completions) or vLLM with `--max-logprobs N` \
         (N at least the top-k asked for), and check that no proxy strips the field"
    )]
    NoLogprobs {
        /// The request URL.
        url: String,
    },
    /// A token forced with `logit_bias` was not the one the server emitted, so the reported
    /// log-probability is not that token's.
    #[error(
        "the server at {url} ignored a forced token (wanted id {wanted}, got {got}); it must honour \
         `logit_bias` for continuation scoring without `echo`"
    )]
    ForcedTokenIgnored {
        /// The request URL.
        url: String,
        /// The token id that was forced.
        wanted: u32,
        /// What came back instead.
        got: String,
    },
    /// llama.cpp's server holds back a token that is an incomplete UTF-8 sequence (one byte
    /// piece of a multi-byte character) and reports no log-probability for it. The client then
    /// reads the token's log-probability from the raw distribution of llama.cpp's native
    /// `/completion` (`n_probs`); this error means that fallback failed too (a server that is
    /// not llama.cpp, or an old llama.cpp without `n_probs`).
    #[error(
        "the server at {url} withheld the log-probability of token id {id} (an incomplete UTF-8 \
         piece, text {text:?}), and reading it from the raw distribution of llama.cpp's \
         `/completion` failed ({fallback}); continuations that split a multi-byte character \
         cannot be scored by forced steps on this server (score them locally, or on a server \
         that supports `echo`)"
    )]
    WithheldToken {
        /// The request URL.
        url: String,
        /// The forced token id.
        id: u32,
        /// The text the server emitted.
        text: String,
        /// Why the `/completion` fallback gave no value.
        fallback: String,
    },
    /// The server tokenizes a probe text differently from the local tokenizer, so token-id
    /// prompts would mean other text there: it serves another model (or another tokenizer).
    #[error(
        "the server at {url} tokenizes differently from the local model {local_model}: {text:?} \
         is {local:?} locally but {remote:?} there; pass --model the GGUF file the server serves"
    )]
    TokenizerMismatch {
        /// The request URL.
        url: String,
        /// The local model file that renders and tokenizes prompts.
        local_model: String,
        /// The probe text.
        text: String,
        /// The local token ids (at most the first 32).
        local: Vec<u32>,
        /// The server's token ids (at most the first 32).
        remote: Vec<u32>,
    },
    /// A prompt with no tokens: the first continuation token would have no context.
    #[error("empty prompt for the server at {url}: the first token needs a context")]
    EmptyPrompt {
        /// The server's base URL.
        url: String,
    },
}
