//! Tiny random-weight llama models written as real GGUF files, for tests and benchmarks that
//! must not download anything. Loading one exercises the same code path as a real model.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::Rng;

/// Sizes of a random llama. Row lengths (`d_model`, `d_ff`) must be multiples of the
/// quantization block (32 for Q8_0/Q4_0).
#[derive(Debug, Clone)]
pub struct RandomLlama {
    /// Blocks.
    pub n_layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// MLP width.
    pub d_ff: usize,
    /// Vocabulary.
    pub vocab: usize,
    /// Context length.
    pub context: usize,
    /// Storage type of the matmul weights.
    pub dtype: GgmlDType,
    /// Write a separate `output.weight` (otherwise tied embeddings).
    pub untied_output: bool,
}

impl Default for RandomLlama {
    fn default() -> Self {
        Self {
            n_layers: 3,
            d_model: 64,
            n_heads: 4,
            n_kv_heads: 2,
            d_ff: 128,
            vocab: 101,
            context: 256,
            dtype: GgmlDType::Q8_0,
            untied_output: false,
        }
    }
}

/// ChatML in its minimal form (the template family of SmolLM2 and many chat models).
pub const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Id of `<|im_start|>` in [`byte_chat_metadata`]'s vocabulary.
pub const IM_START: u32 = 256;
/// Id of `<|im_end|>` (the end-of-sequence token) in [`byte_chat_metadata`]'s vocabulary.
pub const IM_END: u32 = 257;

/// The GPT-2 byte encoder: printable bytes map to themselves, the others to U+0100 onwards in
/// byte order (the symbols byte-level BPE vocabularies store).
pub fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        b as char
    } else {
        char::from_u32(256 + (0..b).filter(|&x| !printable(x)).count() as u32)
            .expect("at most 68 non-printable bytes")
    }
}

/// Tokenizer and chat-template metadata of a byte-level chat vocabulary, as a SmolLM2-style
/// GGUF stores it: ids `0..256` are the bytes (GPT-2 byte symbols), then `<|im_start|>`
/// ([`IM_START`]) and `<|im_end|>` ([`IM_END`], end of sequence) as control tokens, then one
/// token per merge (`"a b"` makes `"ab"`); no BOS, the [`CHATML`] template. A [`RandomLlama`]
/// with `vocab = 258 + merges.len()` written with this metadata loads like a real chat model.
pub fn byte_chat_metadata(merges: &[&str]) -> Vec<(String, Value)> {
    let strs = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    tokens.extend(merges.iter().map(|m| m.replacen(' ', "", 1)));
    let mut types = vec![Value::I32(1); 256];
    types.extend([Value::I32(3), Value::I32(3)]);
    types.extend(std::iter::repeat(Value::I32(1)).take(merges.len()));
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strs(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            strs(merges.iter().map(|s| s.to_string()).collect()),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(IM_END)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHATML.into()),
        ),
    ]
}

impl RandomLlama {
    /// A random chat model over [`byte_chat_metadata`]'s vocabulary (no merges) with this
    /// architecture's other sizes: `vocab` is set to 258.
    ///
    /// # Errors
    /// A candle error (I/O included) if writing fails.
    pub fn write_chat(&self, path: &Path, rng: &mut impl Rng) -> candle_core::Result<()> {
        Self {
            vocab: 258,
            ..self.clone()
        }
        .write_with_metadata(path, rng, &byte_chat_metadata(&[]))
    }

    /// Writes the model to `path`, weights uniform with variance `1/fan_in` (so activations
    /// stay O(1)), norm weights `1 ± 0.1`.
    ///
    /// # Errors
    /// A candle error (I/O included) if writing fails.
    pub fn write(&self, path: &Path, rng: &mut impl Rng) -> candle_core::Result<()> {
        self.write_with_metadata(path, rng, &[])
    }

    /// [`RandomLlama::write`] with extra metadata (a tokenizer, a chat template) after the
    /// architecture's keys.
    ///
    /// # Errors
    /// A candle error (I/O included) if writing fails.
    pub fn write_with_metadata(
        &self,
        path: &Path,
        rng: &mut impl Rng,
        extra: &[(String, Value)],
    ) -> candle_core::Result<()> {
        self.write_edited(path, rng, extra, |_, _, _| {})
    }

    /// [`RandomLlama::write_with_metadata`] with `edit(name, values, dims)` called on each
    /// tensor's f32 values after they are drawn and before they are quantized: `values` is
    /// row-major `[rows, cols]` (`dims`) for a matrix (`[out, in]`, e.g. `token_embd.weight`
    /// `[vocab, d_model]`, `blk.0.attn_v.weight` `[kv_dim, d_model]`), `[d_model]` for a norm.
    /// The draws do not depend on the edit, so an edit that changes nothing writes the same file
    /// as [`RandomLlama::write_with_metadata`]. For tests that plant a mechanism in a model.
    ///
    /// # Errors
    /// A candle error (I/O included) if writing fails.
    pub fn write_edited(
        &self,
        path: &Path,
        rng: &mut impl Rng,
        extra: &[(String, Value)],
        mut edit: impl FnMut(&str, &mut [f32], &[usize]),
    ) -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let d = self.d_model;
        let hd = d / self.n_heads;
        let kv = self.n_kv_heads * hd;
        let a = |fan_in: usize| (3.0 / fan_in as f32).sqrt();
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        // Draws `[rows, cols]` uniform in `±scale` plus `offset`, lets `edit` change them and
        // quantizes; a norm (`rows == 1`) is stored flat as `[cols]`.
        let mut push = |name: String,
                        (rows, cols): (usize, usize),
                        scale: f32,
                        offset: f32,
                        dtype: GgmlDType|
         -> candle_core::Result<()> {
            let mut v: Vec<f32> = (0..rows * cols)
                .map(|_| rng.gen_range(-scale..scale) + offset)
                .collect();
            let t = if rows == 1 {
                edit(&name, &mut v, &[cols]);
                Tensor::from_vec(v, cols, &dev)?
            } else {
                edit(&name, &mut v, &[rows, cols]);
                Tensor::from_vec(v, (rows, cols), &dev)?
            };
            tensors.push((name, QTensor::quantize(&t, dtype)?));
            Ok(())
        };
        push(
            "token_embd.weight".into(),
            (self.vocab, d),
            1.0,
            0.0,
            GgmlDType::Q8_0,
        )?;
        for l in 0..self.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let dt = self.dtype;
            push(n("attn_norm"), (1, d), 0.1, 1.0, GgmlDType::F32)?;
            push(n("attn_q"), (d, d), a(d), 0.0, dt)?;
            push(n("attn_k"), (kv, d), a(d), 0.0, dt)?;
            push(n("attn_v"), (kv, d), a(d), 0.0, dt)?;
            push(n("attn_output"), (d, d), a(d), 0.0, dt)?;
            push(n("ffn_norm"), (1, d), 0.1, 1.0, GgmlDType::F32)?;
            push(n("ffn_gate"), (self.d_ff, d), a(d), 0.0, dt)?;
            push(n("ffn_up"), (self.d_ff, d), a(d), 0.0, dt)?;
            push(n("ffn_down"), (d, self.d_ff), a(self.d_ff), 0.0, dt)?;
        }
        push(
            "output_norm.weight".into(),
            (1, d),
            0.1,
            1.0,
            GgmlDType::F32,
        )?;
        if self.untied_output {
            push(
                "output.weight".into(),
                (self.vocab, d),
                a(d),
                0.0,
                self.dtype,
            )?;
        }
        let u = |x: usize| Value::U32(x as u32);
        let meta: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", u(self.n_layers)),
            ("llama.context_length", u(self.context)),
            ("llama.embedding_length", u(d)),
            ("llama.feed_forward_length", u(self.d_ff)),
            ("llama.attention.head_count", u(self.n_heads)),
            ("llama.attention.head_count_kv", u(self.n_kv_heads)),
            ("llama.rope.freq_base", Value::F32(10_000.0)),
            ("llama.rope.dimension_count", u(hd)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ];
        let meta_refs: Vec<(&str, &Value)> = meta
            .iter()
            .map(|(k, v)| (*k, v))
            .chain(extra.iter().map(|(k, v)| (k.as_str(), v)))
            .collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path)?;
        gguf_file::write(&mut f, &meta_refs, &tensor_refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Every tensor of a GGUF file, dequantized: name → (dims, values).
    fn read(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        let mut f = std::fs::File::open(path).unwrap();
        let c = gguf_file::Content::read(&mut f).unwrap();
        let names: Vec<String> = c.tensor_infos.keys().cloned().collect();
        names
            .into_iter()
            .map(|n| {
                let t = c.tensor(&mut f, &n, &Device::Cpu).unwrap();
                let t = t.dequantize(&Device::Cpu).unwrap();
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (n, (t.dims().to_vec(), v))
            })
            .collect()
    }

    #[test]
    fn an_edit_changes_only_its_tensor_and_sees_its_shape() {
        let arch = RandomLlama {
            dtype: GgmlDType::F32,
            untied_output: true,
            ..RandomLlama::default()
        };
        let dir = std::env::temp_dir();
        let tag = std::process::id();
        let (plain, edited) = (
            dir.join(format!("lm-runtime-random-plain-{tag}.gguf")),
            dir.join(format!("lm-runtime-random-edited-{tag}.gguf")),
        );
        arch.write(&plain, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap();
        let mut seen = Vec::new();
        arch.write_edited(
            &edited,
            &mut ChaCha8Rng::seed_from_u64(1),
            &[],
            |n, v, dims| {
                seen.push((n.to_owned(), dims.to_vec()));
                if n == "blk.1.attn_v.weight" {
                    for (i, x) in v.iter_mut().enumerate() {
                        *x = i as f32 * 0.25;
                    }
                }
            },
        )
        .unwrap();
        let (a, b) = (read(&plain), read(&edited));
        let _ = (std::fs::remove_file(&plain), std::fs::remove_file(&edited));
        // The edit saw every tensor once with its `[rows, cols]` (or `[d]`) shape.
        assert_eq!(seen.len(), a.len());
        let (d, kv) = (arch.d_model, arch.n_kv_heads * arch.d_model / arch.n_heads);
        for (n, dims) in &seen {
            assert_eq!(&b[n].0, dims, "{n}");
        }
        let dims_of = |n: &str| seen.iter().find(|s| s.0 == n).unwrap().1.clone();
        assert_eq!(dims_of("token_embd.weight"), [arch.vocab, d]);
        assert_eq!(dims_of("blk.1.attn_v.weight"), [kv, d]);
        assert_eq!(dims_of("blk.2.ffn_down.weight"), [d, arch.d_ff]);
        assert_eq!(dims_of("output_norm.weight"), [d]);
        // Only the edited tensor differs, and it holds the edited values (f32 storage).
        for (n, (dims, v)) in &a {
            if n == "blk.1.attn_v.weight" {
                let want: Vec<f32> = (0..kv * d).map(|i| i as f32 * 0.25).collect();
                assert_eq!(b[n].1, want);
                assert_ne!(*v, want);
            } else {
                assert_eq!(&b[n], &(dims.clone(), v.clone()), "{n}");
            }
        }
    }
}
