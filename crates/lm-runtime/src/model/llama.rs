//! The llama and gemma3 block stacks on candle's quantized matmuls, with hooks at every
//! residual site.
//!
//! Per block (llama.cpp `build_llama`):
//! ```text
//! h   = x + Wo · Attn(RoPE(Wq·n), RoPE(Wk·n), Wv·n),   n = RMSNorm(x) ⊙ w_attn
//! out = h + Wdown · (SiLU(Wgate·m) ⊙ Wup·m),            m = RMSNorm(h) ⊙ w_ffn
//! ```
//! RMSNorm(x) = x / sqrt(mean(x²) + eps). Attention is causal with grouped-query heads
//! (query head j reads key/value head j / (n_heads / n_kv_heads)) and scale 1/sqrt(head_dim).
//! Gemma 3 adds the pieces listed at [`Architecture::Gemma3`](crate::config::Architecture):
//! per-head q/k norms, norms of the attention and MLP outputs before each residual add,
//! sliding-window layers with their own RoPE base, scaled embeddings and GELU gating.

use std::path::Path;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use super::qmatmul::Linear;
use super::{Batch, KvCache, ModelError};
use crate::config::{ModelConfig, RopeStyle};
use crate::gguf::GgufFile;
use crate::hooks::{Capture, HookPoint, Intervention, Layer, Positions};

/// How matmul weights are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// As stored in the file (quantized dot products; smallest, fastest decode).
    #[default]
    Quantized,
    /// Dequantized once to f32 (4 bytes/weight; plain GEMM, often faster for long prefills).
    /// Q4_1 and Q8_0 matrices are also kept as stored, on AVX2 CPUs, for products of at most 8
    /// rows (decode): those multiply the stored weights exactly against the f32 activations, so
    /// results equal the dense product up to f32 summation order at a fifth of the bytes read.
    F32,
    /// Dequantized once and rounded to bfloat16, multiplied on Intel AMX tiles with f32 sums
    /// (2 bytes/weight; the fastest prefill on Sapphire Rapids and later Xeons). Each matmul
    /// rounds its activations to bf16 too (relative error ≤ 2⁻⁹ per operand). Small inputs
    /// (decode) use the stored weights as [`WeightMode::F32`] does; embeddings and the
    /// unembedding are f32 as in that mode. Matrices whose shape does not tile (`n`, `k`
    /// multiples of 32), and every matrix on CPUs without AMX-BF16 (see
    /// [`super::amx_available`]), fall back to the f32 mode's kernels.
    Bf16,
}

#[derive(Debug)]
struct Block {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
    /// Gemma 3 only: RMSNorm weights `[head_dim]` of each query / key head.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    /// Gemma 3 only: norms of the attention / MLP outputs before the residual adds.
    post_attn_norm: Option<Tensor>,
    post_ffn_norm: Option<Tensor>,
}

/// A loaded transformer.
#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    /// Token embeddings `[vocab, d_model]`, for the row lookup.
    embed: Embedding,
    blocks: Vec<Block>,
    final_norm: Tensor,
    /// Unembedding `[vocab, d_model]` (the embedding matrix when tied).
    output: Linear,
    /// RoPE tables `[context, head_dim / 2]` of global layers and of sliding-window layers.
    rope: (Tensor, Tensor),
    rope_local: (Tensor, Tensor),
    device: Device,
}

/// The embedding table: dense f32, or (quantized mode, CPU) the file's quantized rows,
/// dequantized per lookup so that the largest matrix is not held a second time in f32.
#[derive(Debug)]
enum Embedding {
    Dense(Tensor),
    Quantized {
        /// Raw blocks, row after row.
        data: Vec<u8>,
        dtype: GgmlDType,
        /// Bytes per row.
        row_bytes: usize,
        d_model: usize,
    },
    /// Tied embeddings in quantized mode: the rows are gathered from the unembedding's
    /// quantized matrix ([`Linear::rows`]), so the largest matrix is held once.
    FromOutput,
}

impl Embedding {
    fn new(
        q: &QTensor,
        d_model: usize,
        mode: WeightMode,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let dtype = q.dtype();
        let quantized = mode == WeightMode::Quantized
            && device.is_cpu()
            && !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
            && d_model % dtype.block_size() == 0;
        if !quantized {
            return Ok(Self::Dense(q.dequantize(device)?));
        }
        Ok(Self::Quantized {
            data: q.data()?.into_owned(),
            dtype,
            row_bytes: d_model / dtype.block_size() * dtype.type_size(),
            d_model,
        })
    }

    /// Rows `ids` (all `< vocab`, checked by the caller) as f32 `[ids.len(), d_model]`.
    fn lookup(&self, ids: &[u32], output: &Linear, device: &Device) -> Result<Tensor, ModelError> {
        match self {
            Self::FromOutput => {
                let rows = output
                    .rows(ids)
                    .expect("FromOutput is only chosen when the unembedding has rows");
                let d = rows.len() / ids.len().max(1);
                Ok(Tensor::from_vec(rows, (ids.len(), d), device)?)
            }
            Self::Dense(t) => Ok(t.index_select(&Tensor::new(ids, device)?, 0)?),
            Self::Quantized {
                data,
                dtype,
                row_bytes,
                d_model,
            } => {
                // Dequantize each distinct id once, then gather.
                let mut distinct: Vec<u32> = ids.to_vec();
                distinct.sort_unstable();
                distinct.dedup();
                let mut bytes = Vec::with_capacity(distinct.len() * row_bytes);
                for &id in &distinct {
                    let start = id as usize * row_bytes;
                    bytes.extend_from_slice(&data[start..start + row_bytes]);
                }
                // Borrowed on purpose: candle 0.9's `from_data` reinterprets the slice in place
                // and copies it, and an owned buffer would be dropped before that copy.
                let storage =
                    QStorage::from_data(std::borrow::Cow::Borrowed(&bytes), device, *dtype)?;
                let rows = QTensor::new(storage, (distinct.len(), *d_model))?.dequantize(device)?;
                let at: Vec<u32> = ids
                    .iter()
                    .map(|id| distinct.binary_search(id).map_or(0, |i| i as u32))
                    .collect();
                Ok(rows.index_select(&Tensor::new(at.as_slice(), device)?, 0)?)
            }
        }
    }
}

/// Positions per MLP chunk in a long quantized prefill (see [`Model::mlp`]).
const MLP_CHUNK: usize = 256;

/// Per-call facts shared by every block.
struct Step<'a> {
    lens: &'a [usize],
    t: usize,
    /// `(cos, sin)` `[b, t, head_dim / 2]` at each token's position: global, local.
    rope: (Tensor, Tensor),
    rope_local: (Tensor, Tensor),
    mask: Option<Tensor>,
    mask_local: Option<Tensor>,
    interventions: &'a [Intervention],
}

impl Model {
    /// Loads a model from the GGUF file at `path` onto the CPU.
    ///
    /// # Errors
    /// [`ModelError::Gguf`] naming the key or tensor at fault.
    pub fn load(path: impl AsRef<Path>, mode: WeightMode) -> Result<Self, ModelError> {
        let mut file = GgufFile::open(path)?;
        Self::from_gguf(&mut file, mode, &Device::Cpu)
    }

    /// Builds the model from an open GGUF file.
    ///
    /// # Errors
    /// [`ModelError::Gguf`] for missing keys or tensors and wrong shapes.
    pub fn from_gguf(
        file: &mut GgufFile,
        mode: WeightMode,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(file)?;
        let (d, hd, ff) = (cfg.d_model, cfg.head_dim, cfg.d_ff);
        let (qd, kv) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
        let gemma = cfg.arch == crate::config::Architecture::Gemma3;
        let mm = |q: QTensor| -> Result<Linear, ModelError> {
            Ok(match mode {
                WeightMode::Quantized => Linear::quantized(q)?,
                WeightMode::F32 => Linear::dense(&q, None, device)?,
                WeightMode::Bf16 => Linear::bf16(&q, device)?,
            })
        };
        let vec_n = |file: &mut GgufFile, name: &str, n: usize| -> Result<Tensor, ModelError> {
            Ok(file.tensor(name, &[n], device)?.dequantize(device)?)
        };
        let vec = |file: &mut GgufFile, name: &str| vec_n(file, name, d);
        let embd_q = file.tensor("token_embd.weight", &[cfg.vocab_size, d], device)?;
        let (embed, output) = if cfg.tied_embeddings && mode == WeightMode::Quantized {
            let output = Linear::quantized(embd_q)?;
            if output.has_rows() {
                (Embedding::FromOutput, output)
            } else {
                let q = file.tensor("token_embd.weight", &[cfg.vocab_size, d], device)?;
                (Embedding::new(&q, d, mode, device)?, output)
            }
        } else {
            let embed = Embedding::new(&embd_q, d, mode, device)?;
            let output = match &embed {
                Embedding::Dense(t) if cfg.tied_embeddings => {
                    Linear::dense(&embd_q, Some(t.clone()), device)?
                }
                _ if cfg.tied_embeddings => Linear::quantized(embd_q)?,
                _ => mm(file.tensor("output.weight", &[cfg.vocab_size, d], device)?)?,
            };
            (embed, output)
        };
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            blocks.push(Block {
                attn_norm: vec(file, &n("attn_norm"))?,
                wq: mm(file.tensor(&n("attn_q"), &[qd, d], device)?)?,
                wk: mm(file.tensor(&n("attn_k"), &[kv, d], device)?)?,
                wv: mm(file.tensor(&n("attn_v"), &[kv, d], device)?)?,
                wo: mm(file.tensor(&n("attn_output"), &[d, qd], device)?)?,
                ffn_norm: vec(file, &n("ffn_norm"))?,
                w_gate: mm(file.tensor(&n("ffn_gate"), &[ff, d], device)?)?,
                w_up: mm(file.tensor(&n("ffn_up"), &[ff, d], device)?)?,
                w_down: mm(file.tensor(&n("ffn_down"), &[d, ff], device)?)?,
                q_norm: gemma
                    .then(|| vec_n(file, &n("attn_q_norm"), hd))
                    .transpose()?,
                k_norm: gemma
                    .then(|| vec_n(file, &n("attn_k_norm"), hd))
                    .transpose()?,
                post_attn_norm: gemma
                    .then(|| vec(file, &n("post_attention_norm")))
                    .transpose()?,
                post_ffn_norm: gemma.then(|| vec(file, &n("post_ffw_norm"))).transpose()?,
            });
        }
        let final_norm = vec(file, "output_norm.weight")?;
        let rope = rope_table(cfg.rope_base, hd, cfg.context_length, device)?;
        let rope_local = if cfg.sliding_window.is_some() {
            rope_table(cfg.rope_base_local, hd, cfg.context_length, device)?
        } else {
            rope.clone()
        };
        Ok(Self {
            cfg,
            embed,
            blocks,
            final_norm,
            output,
            rope,
            rope_local,
            device: device.clone(),
        })
    }

    /// How many of the blocks' weight matrices multiply on AMX tiles ([`WeightMode::Bf16`]),
    /// out of how many.
    pub fn amx_matrices(&self) -> (usize, usize) {
        let all: Vec<&Linear> = self
            .blocks
            .iter()
            .flat_map(|b| [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down])
            .collect();
        (all.iter().filter(|l| l.is_amx()).count(), all.len())
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layers)
    }

    /// Runs `batch` through the model, appending to `cache`.
    ///
    /// Returns, per sequence, f32 logits `[positions, vocab]` at `batch.logits` (positions
    /// within that sequence's tokens of this call). `capture` receives the requested hooks at
    /// its positions; `interventions` are applied at their hooks at every position.
    ///
    /// # Errors
    /// [`ModelError::EmptyBatch`], [`ModelError::TokenOutOfRange`],
    /// [`ModelError::ContextOverflow`], [`ModelError::BatchMismatch`],
    /// [`ModelError::BadPosition`], [`ModelError::BadHook`]; the cache is unchanged on error
    /// raised before the computation starts.
    pub fn forward(
        &self,
        batch: &Batch,
        capture: &mut Capture,
        interventions: &[Intervention],
        cache: &mut KvCache,
    ) -> Result<Vec<Tensor>, ModelError> {
        let cfg = &self.cfg;
        let lens: Vec<usize> = batch.tokens.iter().map(Vec::len).collect();
        let (b, t) = (lens.len(), lens.iter().copied().max().unwrap_or(0));
        if t == 0 {
            return Err(ModelError::EmptyBatch);
        }
        self.check_hooks(capture, interventions)?;
        let mut ids = Vec::with_capacity(b * t);
        for (seq, toks) in batch.tokens.iter().enumerate() {
            for (pos, &id) in toks.iter().enumerate() {
                if id as usize >= cfg.vocab_size {
                    return Err(ModelError::TokenOutOfRange {
                        seq,
                        pos,
                        id,
                        vocab: cfg.vocab_size,
                    });
                }
            }
            ids.extend_from_slice(toks);
            ids.resize(ids.len() + t - toks.len(), 0);
        }
        let logit_pos = resolve_all(&batch.logits, &lens)?;
        if let Some(ix) = capture.positions_if_any() {
            resolve_all(ix, &lens)?;
        }
        let (positions, mask, mask_local) = cache.plan(
            &lens,
            t,
            cfg.context_length,
            cfg.sliding_window,
            &self.device,
        )?;
        let pos = Tensor::from_vec(positions, b * t, &self.device)?;
        let half = cfg.head_dim / 2;
        let at = |(c, s): &(Tensor, Tensor)| -> Result<(Tensor, Tensor), ModelError> {
            Ok((
                c.index_select(&pos, 0)?.reshape((b, t, half))?,
                s.index_select(&pos, 0)?.reshape((b, t, half))?,
            ))
        };
        let step = Step {
            lens: &lens,
            t,
            rope: at(&self.rope)?,
            rope_local: at(&self.rope_local)?,
            mask,
            mask_local,
            interventions,
        };

        let x = self
            .embed
            .lookup(&ids, &self.output, &self.device)?
            .reshape((b, t, cfg.d_model))?;
        let x = if cfg.embed_scale == 1.0 {
            x
        } else {
            (x * f64::from(cfg.embed_scale))?
        };
        let mut x = self.hook(HookPoint::Embed, x, &step, capture)?;
        for (l, block) in self.blocks.iter().enumerate() {
            let layer = Layer(l);
            x = self.hook(HookPoint::ResidPre(layer), x, &step, capture)?;
            let n = candle_nn::ops::rms_norm(&x, &block.attn_norm, cfg.rms_eps)?;
            let mut attn = self.attention(block, l, &n, &step, cache)?;
            if let Some(w) = &block.post_attn_norm {
                attn = candle_nn::ops::rms_norm(&attn, w, cfg.rms_eps)?;
            }
            let attn = self.hook(HookPoint::AttnOut(layer), attn, &step, capture)?;
            x = self.hook(HookPoint::ResidMid(layer), (x + attn)?, &step, capture)?;
            let m = candle_nn::ops::rms_norm(&x, &block.ffn_norm, cfg.rms_eps)?;
            let mut mlp = self.mlp(block, &m)?;
            if let Some(w) = &block.post_ffn_norm {
                mlp = candle_nn::ops::rms_norm(&mlp, w, cfg.rms_eps)?;
            }
            let mlp = self.hook(HookPoint::MlpOut(layer), mlp, &step, capture)?;
            x = self.hook(HookPoint::ResidPost(layer), (x + mlp)?, &step, capture)?;
        }
        cache.commit(&lens, t);
        let x = candle_nn::ops::rms_norm(&x, &self.final_norm, cfg.rms_eps)?;
        let x = self.hook(HookPoint::LnFinal, x, &step, capture)?;

        // Unembed only the requested rows: gather them from [b·t, d].
        let flat: Vec<u32> = logit_pos
            .iter()
            .enumerate()
            .flat_map(|(i, ps)| ps.iter().map(move |&p| (i * t + p) as u32))
            .collect();
        if flat.is_empty() {
            let empty = Tensor::zeros((0, cfg.vocab_size), DType::F32, &self.device)?;
            return Ok(vec![empty; b]);
        }
        let idx = Tensor::from_vec(
            flat,
            logit_pos.iter().map(Vec::len).sum::<usize>(),
            &self.device,
        )?;
        let rows = x.reshape((b * t, cfg.d_model))?.index_select(&idx, 0)?;
        let logits = self.output.forward(&rows)?;
        let mut out = Vec::with_capacity(b);
        let mut start = 0;
        for ps in &logit_pos {
            out.push(logits.narrow(0, start, ps.len())?);
            start += ps.len();
        }
        Ok(out)
    }

    /// The gated MLP `W_down (act(W_gate m) ⊙ W_up m)` of `m` (`[b, t, d]`), position by position.
    ///
    /// With row-independent (quantized) products, inputs of more than [`MLP_CHUNK`] positions go
    /// through in chunks of that many rows, so the `[rows, d_ff]` intermediates of a long
    /// prefill stay small; every output row is computed exactly as without chunking.
    fn mlp(&self, block: &Block, m: &Tensor) -> Result<Tensor, ModelError> {
        let d = self.cfg.d_model;
        let rows = m.elem_count() / d;
        let row_independent = [&block.w_gate, &block.w_up, &block.w_down]
            .iter()
            .all(|w| w.row_independent());
        if rows <= MLP_CHUNK || !row_independent {
            return self.mlp_rows(block, m);
        }
        let flat = m.reshape((rows, d))?;
        let parts = (0..rows)
            .step_by(MLP_CHUNK)
            .map(|s| self.mlp_rows(block, &flat.narrow(0, s, MLP_CHUNK.min(rows - s))?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::cat(&parts, 0)?.reshape(m.dims())?)
    }

    /// [`Model::mlp`] in one piece.
    fn mlp_rows(&self, block: &Block, m: &Tensor) -> Result<Tensor, ModelError> {
        let gate = block.w_gate.forward(m)?;
        let up = block.w_up.forward(m)?;
        let hidden = super::act::gated(&gate, &up, self.cfg.activation())?;
        Ok(block.w_down.forward(&hidden)?)
    }

    /// Causal grouped-query self-attention of `n` (`[b, t, d]`) against the cache.
    fn attention(
        &self,
        block: &Block,
        layer: usize,
        n: &Tensor,
        step: &Step<'_>,
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let cfg = &self.cfg;
        let (b, t, _) = n.dims3()?;
        let (h, kvh, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let g = h / kvh;
        let sliding = cfg.is_sliding(layer);
        let (cos, sin) = if sliding {
            &step.rope_local
        } else {
            &step.rope
        };
        let mask = if sliding {
            &step.mask_local
        } else {
            &step.mask
        };
        // [b, t, h·hd] -> [b, t, h, hd] (per-head norm here)
        let mut q = block.wq.forward(n)?.reshape((b, t, h, hd))?;
        let mut k = block.wk.forward(n)?.reshape((b, t, kvh, hd))?;
        if let (Some(qn), Some(kn)) = (&block.q_norm, &block.k_norm) {
            q = candle_nn::ops::rms_norm(&q.contiguous()?, qn, cfg.rms_eps)?;
            k = candle_nn::ops::rms_norm(&k.contiguous()?, kn, cfg.rms_eps)?;
        }
        let v = block.wv.forward(n)?.reshape((b, t, kvh, hd))?;
        let scale = cfg.attn_scale;
        let style = cfg.rope_style;
        // [b, h, t, hd] with RoPE (q also scaled): one fused pass on the CPU, candle elsewhere.
        let fused = (
            super::attend::heads_first(&q, Some((cos, sin, style)), scale)?,
            super::attend::heads_first(&k, Some((cos, sin, style)), 1.0)?,
            super::attend::heads_first(&v, None, 1.0)?,
        );
        let (q, k, v) = match fused {
            (Some(q), Some(k), Some(v)) => (q, k, v),
            _ => {
                let q = q.transpose(1, 2)?.contiguous()?;
                let k = k.transpose(1, 2)?.contiguous()?;
                let (q, k) = match style {
                    RopeStyle::Interleaved => (
                        candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                        candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
                    ),
                    RopeStyle::Neox => (
                        candle_nn::rotary_emb::rope(&q, cos, sin)?,
                        candle_nn::rotary_emb::rope(&k, cos, sin)?,
                    ),
                };
                ((q * f64::from(scale))?, k, v.transpose(1, 2)?.contiguous()?)
            }
        };
        // k, v: [b, kvh, T, hd] with T = cached + t.
        let (k, v) = cache.append(layer, &k, &v)?;
        let total = k.dim(2)?;
        // Group the g query heads that share a kv head: [b, kvh, g·t, hd], no kv copy.
        let q = q.reshape((b, kvh, g * t, hd))?;
        // [b, t, h·hd]: the fused CPU kernel, or candle's dense product elsewhere.
        let y = match super::attend::attend(&q, &k, &v, mask.as_ref(), g)? {
            Some(y) => y,
            None => {
                let scores = q.matmul(&k.t()?)?; // [b, kvh, g·t, T]
                let scores = match mask {
                    None => scores,
                    Some(m) => scores
                        .reshape((b, kvh, g, t, total))?
                        .broadcast_add(m)?
                        .reshape((b, kvh, g * t, total))?,
                };
                candle_nn::ops::softmax_last_dim(&scores)?
                    .matmul(&v)? // [b, kvh, g·t, hd]
                    .reshape((b, h, t, hd))?
                    .transpose(1, 2)?
                    .reshape((b, t, h * hd))?
            }
        };
        Ok(block.wo.forward(&y)?)
    }

    /// Applies the interventions at `point`, then records it if captured.
    fn hook(
        &self,
        point: HookPoint,
        mut x: Tensor,
        step: &Step<'_>,
        capture: &mut Capture,
    ) -> Result<Tensor, ModelError> {
        for iv in step.interventions.iter().filter(|iv| iv.at() == point) {
            x = iv.apply(&x)?;
        }
        if capture.wants(point) {
            for (i, &len) in step.lens.iter().enumerate() {
                let row = x.get(i)?; // [t, d]
                let sel = match capture.positions() {
                    Positions::All => row.narrow(0, 0, len)?,
                    Positions::Last if len == 0 => row.narrow(0, 0, 0)?,
                    Positions::Last => row.narrow(0, len - 1, 1)?,
                    Positions::Indices(ix) => {
                        let ix: Vec<u32> = ix.iter().map(|&p| p as u32).collect();
                        let n = ix.len();
                        row.index_select(&Tensor::from_vec(ix, n, &self.device)?, 0)?
                    }
                };
                capture.push(point, i, sel.to_dtype(DType::F32)?.contiguous()?);
            }
            debug_assert_eq!(x.dim(1).ok(), Some(step.t));
        }
        Ok(x)
    }

    fn check_hooks(
        &self,
        capture: &Capture,
        interventions: &[Intervention],
    ) -> Result<(), ModelError> {
        let n_layers = self.cfg.n_layers;
        let check_layer = |h: HookPoint| match h.layer() {
            Some(Layer(l)) if l >= n_layers => Err(ModelError::BadHook {
                hook: h,
                why: format!("the model has layers 0..{n_layers}"),
            }),
            _ => Ok(()),
        };
        for &h in capture.hooks() {
            check_layer(h)?;
        }
        for iv in interventions {
            check_layer(iv.at())?;
            let v = match iv {
                Intervention::Add { vector, .. } => vector,
                Intervention::Ablate { direction, .. } => direction,
            };
            if v.dims() != [self.cfg.d_model] {
                return Err(ModelError::BadHook {
                    hook: iv.at(),
                    why: format!(
                        "vector has shape {:?}, expected [{}]",
                        v.dims(),
                        self.cfg.d_model
                    ),
                });
            }
        }
        Ok(())
    }

    /// Dot products `logits[i] = ⟨x_i, e_v⟩` against the unembedding, for `x` `[n, d_model]`
    /// (e.g. the logit lens on a captured, final-normed residual).
    ///
    /// # Errors
    /// A candle error on a shape mismatch.
    pub fn unembed(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.output.forward(x)?)
    }

    /// Applies the final RMSNorm to `x` `[..., d_model]`.
    ///
    /// # Errors
    /// A candle error on a shape mismatch.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.final_norm,
            self.cfg.rms_eps,
        )?)
    }
}

/// Resolves a position rule for every sequence, naming the first bad one.
fn resolve_all(p: &Positions, lens: &[usize]) -> Result<Vec<Vec<usize>>, ModelError> {
    lens.iter()
        .enumerate()
        .map(|(seq, &len)| {
            p.resolve(len)
                .map_err(|index| ModelError::BadPosition { seq, index, len })
        })
        .collect()
}

/// RoPE tables `[context, head_dim / 2]`: angle(p, i) = p · base^(−2i/head_dim), in f64.
fn rope_table(
    base: f32,
    hd: usize,
    ctx: usize,
    device: &Device,
) -> Result<(Tensor, Tensor), ModelError> {
    let half = hd / 2;
    let mut cos = Vec::with_capacity(ctx * half);
    let mut sin = Vec::with_capacity(ctx * half);
    let theta: Vec<f64> = (0..half)
        .map(|i| f64::from(base).powf(-2.0 * i as f64 / hd as f64))
        .collect();
    for p in 0..ctx {
        for th in &theta {
            let a = p as f64 * th;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (ctx, half), device)?,
        Tensor::from_vec(sin, (ctx, half), device)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quantized table's per-lookup dequantization gives exactly the rows of the dense,
    /// once-dequantized table (repeated and unsorted ids included).
    #[test]
    fn quantized_embedding_rows_equal_dense_rows() {
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..64 * 96)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32))
            .collect();
        let w = Tensor::from_vec(vals, (64, 96), &dev).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let dense = Embedding::new(&q, 96, WeightMode::F32, &dev).unwrap();
            let quant = Embedding::new(&q, 96, WeightMode::Quantized, &dev).unwrap();
            assert!(matches!(quant, Embedding::Quantized { .. }));
            let ids = [5u32, 3, 5, 63, 0, 17];
            let out = Linear::quantized(QTensor::quantize(&w, dtype).unwrap()).unwrap();
            let a: Vec<Vec<f32>> = dense.lookup(&ids, &out, &dev).unwrap().to_vec2().unwrap();
            let b: Vec<Vec<f32>> = quant.lookup(&ids, &out, &dev).unwrap().to_vec2().unwrap();
            assert_eq!(a, b, "{dtype:?}");
            // Tied embeddings read from the unembedding's SIMD layout (on CPUs that have it).
            if out.has_rows() {
                let c = Embedding::FromOutput.lookup(&ids, &out, &dev).unwrap();
                let c: Vec<Vec<f32>> = c.to_vec2().unwrap();
                assert_eq!(a, c, "{dtype:?} from the unembedding");
            }
            let full: Vec<Vec<f32>> = q.dequantize(&dev).unwrap().to_vec2().unwrap();
            assert_eq!(b[3], full[63]);
            assert_ne!(b[0], b[1]);
        }
    }

    /// A long quantized prefill goes through the MLP in chunks and gives exactly the unchunked
    /// result.
    #[test]
    fn chunked_mlp_equals_one_piece() {
        use rand::{Rng, SeedableRng};
        let path = std::env::temp_dir().join(format!("lvh-mlp-chunk-{}.gguf", std::process::id()));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let spec = crate::model::random::RandomLlama::default();
        spec.write(&path, &mut rng).unwrap();
        let model = Model::load(&path, WeightMode::Quantized).unwrap();
        std::fs::remove_file(&path).unwrap();
        let rows = 2 * MLP_CHUNK + 37;
        let m: Vec<f32> = (0..rows * spec.d_model)
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect();
        let m = Tensor::from_vec(m, (1, rows, spec.d_model), &Device::Cpu).unwrap();
        let block = &model.blocks[1];
        assert!(block.w_gate.row_independent());
        let a: Vec<f32> = model
            .mlp(block, &m)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = model
            .mlp_rows(block, &m)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a.len(), rows * spec.d_model);
        assert_eq!(a, b);
    }
}
