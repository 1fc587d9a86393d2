//! lm-runtime: real GGUF transformers on CPU (candle), with typed hook points, activation
//! capture, interventions, a KV cache, generation and log-prob scoring.

pub mod fetch;
pub mod template;
pub mod tokenizer;
