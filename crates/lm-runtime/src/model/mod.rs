//! The transformer forward pass: batches, the KV cache, errors, and the model itself.
//!
//! One forward call takes a [`Batch`] of token sequences of possibly different lengths
//! (right-padded internally and masked), appends them to a [`KvCache`], records the
//! activations a [`Capture`](crate::hooks::Capture) asks for, applies
//! [`Intervention`](crate::hooks::Intervention)s, and returns logits only at the requested
//! positions. Prefill, decode and prefix reuse are all the same call: the cache carries, per
//! sequence, which key slots are real and the next RoPE position.

mod act;
mod amx;
mod attend;
mod llama;
mod qmatmul;
pub mod random;

pub use llama::{Model, WeightMode};

/// Whether this CPU and OS multiply on Intel AMX tiles in bf16 ([`WeightMode::Bf16`]):
/// AMX-TILE and AMX-BF16 in CPUID, and the tile state granted by Linux.
pub fn amx_available() -> bool {
    amx::available()
}

/// The first `n` f32 values of a contiguous CPU tensor's storage (from its `storage_and_layout`
/// guard), for the kernels that read tensors directly.
pub(crate) fn cpu_slice<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
    n: usize,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::Storage::Cpu(cpu) = storage else {
        candle_core::bail!("expected a tensor on the CPU");
    };
    let start = layout.start_offset();
    Ok(&cpu.as_slice::<f32>()?[start..start + n])
}

use candle_core::{DType, Device, Tensor};

use crate::gguf::GgufError;
use crate::hooks::{HookPoint, Positions};

/// Errors from building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The GGUF file could not be read or describes an unsupported model.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The batch holds no tokens at all.
    #[error("empty batch: no sequence has any token")]
    EmptyBatch,
    /// A token id is outside the vocabulary.
    #[error("sequence {seq}, position {pos}: token id {id} outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// Sequence index in the batch.
        seq: usize,
        /// Position in the sequence.
        pos: usize,
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// A sequence would exceed the model's context length.
    #[error("sequence {seq} needs {needed} positions, the context length is {limit}")]
    ContextOverflow {
        /// Sequence index.
        seq: usize,
        /// Positions needed.
        needed: usize,
        /// Context length.
        limit: usize,
    },
    /// The batch size differs from the one the cache was started with.
    #[error("the KV cache holds {cache} sequences but the batch has {batch}")]
    BatchMismatch {
        /// Cache rows.
        cache: usize,
        /// Batch rows.
        batch: usize,
    },
    /// A requested position is outside a sequence.
    #[error("sequence {seq}: position {index} requested but it has {len} tokens in this call")]
    BadPosition {
        /// Sequence index.
        seq: usize,
        /// Requested index.
        index: usize,
        /// Tokens in the call.
        len: usize,
    },
    /// An intervention or capture refers to a hook the model lacks, or has a bad vector.
    #[error("hook {hook}: {why}")]
    BadHook {
        /// The hook.
        hook: HookPoint,
        /// Why.
        why: String,
    },
}

/// Token sequences for one forward call, and where logits are wanted.
#[derive(Debug, Clone)]
pub struct Batch {
    /// One token sequence per row; lengths may differ (0 allowed: that row only waits).
    pub tokens: Vec<Vec<u32>>,
    /// Positions (within each row's tokens of this call) whose logits are returned.
    pub logits: Positions,
}

impl Batch {
    /// One sequence, logits at its last position.
    pub fn single(tokens: Vec<u32>) -> Self {
        Self::new(vec![tokens])
    }

    /// Several sequences, logits at each last position.
    pub fn new(tokens: Vec<Vec<u32>>) -> Self {
        Self {
            tokens,
            logits: Positions::Last,
        }
    }

    /// Sets which positions get logits.
    pub fn logits_at(mut self, positions: Positions) -> Self {
        self.logits = positions;
        self
    }
}

/// Keys and values of every layer for a batch of sequences, with a per-sequence validity mask.
///
/// Storage per layer is `[batch, n_kv_heads, capacity, head_dim]`, grown by doubling, and
/// written in place, so a decode step copies only its own new entries.
/// [`KvCache::fork`] deep-copies (for many continuations of one computed prefix) and
/// [`KvCache::repeat`] turns a one-sequence cache into `n` identical rows.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Used slots (the same for every row; padding slots are masked).
    len: usize,
    capacity: usize,
    /// `[batch][slot]`: RoPE position of the real token at that slot, `None` for padding.
    valid: Vec<Vec<Option<u32>>>,
    /// Next RoPE position of each row (= its number of real tokens).
    next_pos: Vec<usize>,
}

impl KvCache {
    /// An empty cache for `n_layers` layers; its batch size is fixed by the first forward call.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            len: 0,
            capacity: 0,
            valid: Vec::new(),
            next_pos: Vec::new(),
        }
    }

    /// Number of sequences (0 before the first call).
    pub fn batch_size(&self) -> usize {
        self.next_pos.len()
    }

    /// Real tokens held for each sequence.
    pub fn seq_lens(&self) -> &[usize] {
        &self.next_pos
    }

    /// Whether nothing has been computed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A deep copy: later calls on either cache do not affect the other.
    ///
    /// # Errors
    /// A candle error if copying fails.
    pub fn fork(&self) -> Result<Self, ModelError> {
        self.map_rows(|t| Ok(t.copy()?), self.valid.clone(), self.next_pos.clone())
    }

    /// From a one-sequence cache, a cache of `n` copies of that sequence (e.g. a shared prompt
    /// prefix followed by `n` different continuations in one batch).
    ///
    /// # Errors
    /// [`ModelError::BatchMismatch`] unless the cache holds exactly one sequence.
    pub fn repeat(&self, n: usize) -> Result<Self, ModelError> {
        if self.batch_size() != 1 {
            return Err(ModelError::BatchMismatch {
                cache: self.batch_size(),
                batch: 1,
            });
        }
        self.map_rows(
            |t| Ok(t.repeat((n, 1, 1, 1))?),
            vec![self.valid[0].clone(); n],
            vec![self.next_pos[0]; n],
        )
    }

    fn map_rows(
        &self,
        f: impl Fn(&Tensor) -> Result<Tensor, ModelError>,
        valid: Vec<Vec<Option<u32>>>,
        next_pos: Vec<usize>,
    ) -> Result<Self, ModelError> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                None => Ok(None),
                Some((k, v)) => {
                    let k = f(&k.narrow(2, 0, self.len)?.contiguous()?)?;
                    let v = f(&v.narrow(2, 0, self.len)?.contiguous()?)?;
                    Ok(Some((k, v)))
                }
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Self {
            layers,
            len: self.len,
            capacity: self.len,
            valid,
            next_pos,
        })
    }

    /// Appends `k`, `v` (`[batch, kv_heads, t, head_dim]`) at layer `layer` and returns the
    /// whole cached keys and values `[batch, kv_heads, len + t, head_dim]` (views, no copy).
    fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (b, h, t, d) = k.dims4()?;
        let need = self.len + t;
        let slot = &mut self.layers[layer];
        let grow = |old: Option<&Tensor>, cap: usize| -> Result<Tensor, ModelError> {
            let buf = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
            if let Some(old) = old {
                if self.len > 0 {
                    buf.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            }
            Ok(buf)
        };
        let cap_now = slot.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0));
        if cap_now < need {
            let cap = need.max(2 * cap_now).max(64);
            let (nk, nv) = (
                grow(slot.as_ref().map(|s| &s.0), cap)?,
                grow(slot.as_ref().map(|s| &s.1), cap)?,
            );
            *slot = Some((nk, nv));
        }
        let (kb, vb) = slot.as_ref().expect("allocated above");
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((kb.narrow(2, 0, need)?, vb.narrow(2, 0, need)?))
    }

    /// Checks the batch against the cache and returns the RoPE positions `[b, t]` (flattened),
    /// plus the additive attention masks `[b, 1, 1, t, len + t]` for global layers and, when
    /// `window` is given, for sliding-window layers (a query at position p sees keys at
    /// p − window < p' ≤ p). A mask is `None` when nothing needs masking (one new token per row,
    /// every cached slot real and inside the window).
    #[allow(clippy::type_complexity)]
    fn plan(
        &mut self,
        lens: &[usize],
        t: usize,
        context: usize,
        window: Option<usize>,
        device: &Device,
    ) -> Result<(Vec<u32>, Option<Tensor>, Option<Tensor>), ModelError> {
        let b = lens.len();
        if self.next_pos.is_empty() && self.len == 0 {
            self.next_pos = vec![0; b];
            self.valid = vec![Vec::new(); b];
        } else if self.next_pos.len() != b {
            return Err(ModelError::BatchMismatch {
                cache: self.next_pos.len(),
                batch: b,
            });
        }
        let mut positions = Vec::with_capacity(b * t);
        for (i, &len) in lens.iter().enumerate() {
            let start = self.next_pos[i];
            if start + len > context {
                return Err(ModelError::ContextOverflow {
                    seq: i,
                    needed: start + len,
                    limit: context,
                });
            }
            // Padding slots get a harmless in-range position; they are masked anyway.
            positions.extend((0..t).map(|j| (start + j.min(len.saturating_sub(1))) as u32));
        }
        let all_valid = self.valid.iter().all(|v| v.iter().all(Option::is_some));
        let no_pad = lens.iter().all(|&l| l == t);
        let max_pos = self.next_pos.iter().max().copied().unwrap_or(0) + t;
        let build = |window: Option<usize>| -> Result<Option<Tensor>, ModelError> {
            let within = window.map_or(true, |w| max_pos <= w);
            if t == 1 && all_valid && no_pad && within {
                return Ok(None);
            }
            let total = self.len + t;
            let mut m = vec![f32::NEG_INFINITY; b * t * total];
            for (i, &len) in lens.iter().enumerate() {
                let start = self.next_pos[i];
                for j in 0..t {
                    let q = (start + j) as u32;
                    let sees = |k: u32| window.map_or(true, |w| q - k < w as u32);
                    let row = &mut m[(i * t + j) * total..(i * t + j + 1) * total];
                    for (s, k) in self.valid[i].iter().enumerate() {
                        if let Some(k) = *k {
                            if sees(k) {
                                row[s] = 0.0;
                            }
                        }
                    }
                    for jj in 0..=j {
                        // Real queries see real new keys up to themselves; a padding query
                        // sees itself too, so its softmax is never over an empty set.
                        if (jj < len && sees((start + jj) as u32)) || jj == j {
                            row[self.len + jj] = 0.0;
                        }
                    }
                }
            }
            Ok(Some(Tensor::from_vec(m, (b, 1, 1, t, total), device)?))
        };
        let global = build(None)?;
        let local = match window {
            Some(w) if w < max_pos => build(Some(w))?,
            _ => global.clone(),
        };
        Ok((positions, global, local))
    }

    /// Records the new slots after a successful forward call.
    fn commit(&mut self, lens: &[usize], t: usize) {
        for (i, &len) in lens.iter().enumerate() {
            let start = self.next_pos[i];
            self.valid[i].extend((0..t).map(|j| (j < len).then_some((start + j) as u32)));
            self.next_pos[i] += len;
        }
        self.len += t;
        self.capacity = self.capacity.max(self.len);
    }
}

/// Converts `[n, vocab]` logits rows to f32 log-probabilities (log-softmax over the vocabulary).
///
/// # Errors
/// A candle error on a shape problem.
pub fn log_softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let max = logits.max_keepdim(candle_core::D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(candle_core::D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Visible key slots of each query row of a `[1, 1, 1, t, total]` mask.
    fn visible(mask: &Tensor) -> Vec<Vec<usize>> {
        let (_, _, _, t, total) = mask.dims5().unwrap();
        let m: Vec<f32> = mask.flatten_all().unwrap().to_vec1().unwrap();
        (0..t)
            .map(|j| (0..total).filter(|&s| m[j * total + s] == 0.0).collect())
            .collect()
    }

    #[test]
    fn sliding_window_mask_keeps_the_last_w_positions() {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1);
        let (pos, global, local) = cache.plan(&[5], 5, 100, Some(3), &dev).unwrap();
        assert_eq!(pos, vec![0, 1, 2, 3, 4]);
        assert_eq!(visible(&global.unwrap())[4], vec![0, 1, 2, 3, 4]);
        let local = visible(&local.unwrap());
        assert_eq!(local[4], vec![2, 3, 4]);
        assert_eq!(local[1], vec![0, 1]);
        cache.commit(&[5], 5);
        // A decode step at position 5 with the window: slots 3, 4 and the new one.
        let (pos, global, local) = cache.plan(&[1], 1, 100, Some(3), &dev).unwrap();
        assert_eq!(pos, vec![5]);
        assert!(global.is_none(), "no masking needed globally");
        assert_eq!(visible(&local.unwrap())[0], vec![3, 4, 5]);
        // Without a window, both masks agree.
        let (_, g, l) = cache.plan(&[2], 2, 100, None, &dev).unwrap();
        assert_eq!(visible(&g.unwrap()), visible(&l.unwrap()));
    }
}
