//! lm-runtime: real GGUF transformers on CPU (candle), with typed hook points, activation
//! capture, interventions, a KV cache, generation and log-prob scoring.

pub mod config;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod hooks;
pub mod model;
pub mod score;
pub mod template;
pub mod tokenizer;
