//! The typed model configuration read from GGUF metadata (`{arch}.*` keys, llama.cpp names).

use crate::gguf::{GgufError, GgufFile};

/// Largest accepted `d_model`, `d_ff`, vocabulary, context or layer count: a guard against
/// hostile headers before any weight is allocated.
const MAX_DIM: u64 = 1 << 22;

/// Largest `context_length × head_dim` accepted: 2^25 (e.g. 262 144 positions × 128), so the
/// RoPE tables built at load stay under 128 MiB.
const MAX_ROPE_ANGLES: u64 = 1 << 25;

/// A transformer family with its own block layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama / SmolLM2 / Mistral: pre-norm blocks, RMSNorm, SwiGLU, interleaved ("normal") RoPE.
    Llama,
    /// Gemma 3 (llama.cpp `build_gemma3`): embeddings scaled by `sqrt(d_model)`, RMSNorm of
    /// each query/key head, NeoX RoPE with base `rope_base` on global layers and 10 000 on
    /// sliding-window layers (every 6th layer, `ℓ % 6 == 5`, is global), post-attention and
    /// post-MLP norms before the residual adds, GELU(tanh)-gated MLP. The converter stores the
    /// norm weights as `1 + w`, so the same `x / rms(x) ⊙ w` applies.
    Gemma3,
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Architecture::Llama => "llama",
            Architecture::Gemma3 => "gemma3",
        })
    }
}

/// How RoPE pairs dimensions (llama.cpp `LLAMA_ROPE_TYPE_NORM` vs `_NEOX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: llama.cpp "normal" mode, used for the llama architecture because the
    /// converter permutes the Q/K rows of the Hugging Face checkpoint into this layout.
    Interleaved,
    /// Pairs `(i, i + d/2)`: GPT-NeoX mode.
    Neox,
}

/// The shape and hyper-parameters of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Block layout.
    pub arch: Architecture,
    /// Number of transformer blocks `L`.
    pub n_layers: usize,
    /// Residual width `d_model`.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (`n_heads` a multiple of it: grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Hidden width of the gated MLP.
    pub d_ff: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Training context length (positions beyond it are refused).
    pub context_length: usize,
    /// RMSNorm epsilon: `y = x / sqrt(mean(x²) + eps) * w`.
    pub rms_eps: f32,
    /// RoPE base θ: position `p` rotates pair `i` by `p · θ^(-2i/d)`.
    pub rope_base: f32,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// Whether the unembedding reuses `token_embd.weight` (no `output.weight` tensor).
    pub tied_embeddings: bool,
    /// Multiplier of the token embeddings (`sqrt(d_model)` for Gemma, else 1).
    pub embed_scale: f32,
    /// Query scale before `q·k` (`1/sqrt(head_dim)`).
    pub attn_scale: f32,
    /// Sliding-window length of local layers (`None`: every layer is global).
    pub sliding_window: Option<usize>,
    /// RoPE base of sliding-window layers.
    pub rope_base_local: f32,
}

/// The gated-MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(x) = x·σ(x)` (SwiGLU).
    Silu,
    /// GELU, tanh approximation (GeGLU), as ggml computes it.
    GeluTanh,
}

impl ModelConfig {
    /// Whether layer `layer` attends within the sliding window only.
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && layer % 6 < 5
    }

    /// The activation of the gated MLP.
    pub fn activation(&self) -> Activation {
        match self.arch {
            Architecture::Llama => Activation::Silu,
            Architecture::Gemma3 => Activation::GeluTanh,
        }
    }
}

impl ModelConfig {
    /// Reads the configuration from GGUF metadata.
    ///
    /// # Errors
    /// [`GgufError::MissingKey`] / [`GgufError::WrongType`] for absent or mistyped keys;
    /// [`GgufError::BadValue`] for an unsupported architecture, a mixture-of-experts model
    /// (`{arch}.expert_count > 0`), or inconsistent or absurd sizes.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, GgufError> {
        let arch_name = file.str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Architecture::Llama,
            "gemma3" => Architecture::Gemma3,
            other => {
                return Err(GgufError::BadValue {
                    key: "general.architecture".into(),
                    value: other.into(),
                    why: "unsupported architecture (supported: llama, gemma3)".into(),
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let dim = |k: &str| -> Result<usize, GgufError> {
            let k = key(k);
            let v = file.u64(&k)?;
            if v == 0 || v > MAX_DIM {
                return Err(GgufError::BadValue {
                    key: k,
                    value: v.to_string(),
                    why: format!("must be in 1..={MAX_DIM}"),
                });
            }
            Ok(v as usize)
        };
        let experts_key = key("expert_count");
        if let Some(n) = file.opt_u64(&experts_key)? {
            if n > 0 {
                return Err(GgufError::BadValue {
                    key: experts_key,
                    value: n.to_string(),
                    why: "mixture-of-experts models are not supported".into(),
                });
            }
        }
        let n_layers = dim("block_count")?;
        let d_model = dim("embedding_length")?;
        let d_ff = dim("feed_forward_length")?;
        let n_heads = dim("attention.head_count")?;
        let n_kv_heads = match file.opt_u64(&key("attention.head_count_kv"))? {
            Some(_) => dim("attention.head_count_kv")?,
            None => n_heads,
        };
        let context_length = dim("context_length")?;
        let head_dim = match file.opt_u64(&key("attention.key_length"))? {
            Some(_) => dim("attention.key_length")?,
            None => d_model / n_heads,
        };
        let bad = |k: &str, v: String, why: &str| GgufError::BadValue {
            key: key(k),
            value: v,
            why: why.into(),
        };
        if n_heads % n_kv_heads != 0 {
            return Err(bad(
                "attention.head_count_kv",
                n_kv_heads.to_string(),
                "must divide attention.head_count",
            ));
        }
        let llama_heads = arch == Architecture::Llama && head_dim * n_heads != d_model;
        if head_dim % 2 != 0 || llama_heads || (head_dim * n_heads) as u64 > MAX_DIM {
            return Err(bad(
                "attention.head_count",
                n_heads.to_string(),
                "head_count × head_dim must equal embedding_length (llama) with an even head_dim",
            ));
        }
        // The RoPE tables (cos and sin, f32) hold context_length × head_dim / 2 angles each and
        // are built at load, so a hostile header in a tiny file must not size them freely.
        if context_length as u64 * head_dim as u64 > MAX_ROPE_ANGLES {
            return Err(bad(
                "context_length",
                context_length.to_string(),
                &format!(
                    "context_length × head_dim ({head_dim}) exceeds {MAX_ROPE_ANGLES} \
                     (RoPE tables over 128 MiB)"
                ),
            ));
        }
        if let Some(r) = file.opt_u64(&key("rope.dimension_count"))? {
            if r as usize != head_dim {
                return Err(bad(
                    "rope.dimension_count",
                    r.to_string(),
                    "partial rotary embeddings are not supported",
                ));
            }
        }
        let rms_eps = file
            .opt_f64(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        if !(rms_eps > 0.0 && rms_eps < 1.0) {
            return Err(bad(
                "attention.layer_norm_rms_epsilon",
                rms_eps.to_string(),
                "must be in (0, 1)",
            ));
        }
        let rope_base = file.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let sliding_window = match (arch, file.opt_u64(&key("attention.sliding_window"))?) {
            (Architecture::Gemma3, Some(w)) if w > 0 => {
                if w > MAX_DIM {
                    return Err(bad("attention.sliding_window", w.to_string(), "absurd"));
                }
                Some(w as usize)
            }
            _ => None,
        };
        if !(rope_base > 1.0 && rope_base.is_finite()) {
            return Err(bad("rope.freq_base", rope_base.to_string(), "must be > 1"));
        }
        let embd = file.tensor_info("token_embd.weight")?;
        let vocab_size = match embd.shape.dims() {
            &[v, d] if d == d_model && v > 0 && (v as u64) <= MAX_DIM => v,
            dims => {
                return Err(GgufError::ShapeMismatch {
                    name: "token_embd.weight".into(),
                    expected: vec![0, d_model],
                    got: dims.to_vec(),
                })
            }
        };
        Ok(Self {
            arch,
            n_layers,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff,
            vocab_size,
            context_length,
            rms_eps: rms_eps as f32,
            rope_base: rope_base as f32,
            rope_style: match arch {
                Architecture::Llama => RopeStyle::Interleaved,
                Architecture::Gemma3 => RopeStyle::Neox,
            },
            tied_embeddings: !file.has_tensor("output.weight"),
            embed_scale: match arch {
                Architecture::Llama => 1.0,
                Architecture::Gemma3 => (d_model as f32).sqrt(),
            },
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            sliding_window,
            rope_base_local: 10_000.0,
        })
    }
}
