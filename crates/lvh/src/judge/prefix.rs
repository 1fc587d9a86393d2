//! Next-token log-probabilities of many token sequences that share prefixes, each shared
//! prefix computed once.
//!
//! The sequences are walked as a trie: at each node the longest common prefix of the
//! sequences below it is run once into a KV cache; the sequences are then grouped by their
//! next token, groups of several recurse on a fork of that cache, and the sequences that are
//! alone in their group run as one padded batch on [`KvCache::repeat`] copies of it. For the
//! judge this computes the conversation once per pair, each order's `(A) … (B) …` block once,
//! and only the principle and answer cue per principle.
//!
//! With [`PrefixReuse::Off`] every sequence runs alone from an empty cache (the reference the
//! trie is tested against, and the baseline of `bench/judge.sh`).

use std::collections::BTreeMap;

use candle_core::Tensor;
use lm_runtime::hooks::{Capture, Intervention, Positions};
use lm_runtime::model::{log_softmax, Batch, KvCache, Model, ModelError};

/// Whether shared prefixes are computed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixReuse {
    /// Trie walk through the KV cache; at most `max_batch` sequences per padded batch.
    On {
        /// Rows per padded batch of leaf suffixes (bounds the memory of repeated caches).
        max_batch: usize,
    },
    /// Each sequence computed from scratch.
    Off,
}

impl Default for PrefixReuse {
    fn default() -> Self {
        PrefixReuse::On { max_batch: 8 }
    }
}

/// For each sequence `s`, `log p(t | s)` for each `t` in `ids` (log-softmax over the whole
/// vocabulary of the logits after the last token of `s`), in f64. Rows are in input order.
///
/// # Errors
/// [`ModelError::EmptyBatch`] for an empty sequence; forward-pass errors.
pub fn next_token_logprobs_at(
    model: &Model,
    seqs: &[Vec<u32>],
    ids: &[u32],
    reuse: PrefixReuse,
) -> Result<Vec<Vec<f64>>, ModelError> {
    next_token_logprobs_under(model, seqs, ids, reuse, &[])
}

/// [`next_token_logprobs_at`] with `interventions` applied at every position of every forward
/// call (shared prefixes included, so a cached prefix is the one the intervened model computes),
/// e.g. a direction ablated at every layer while judging.
///
/// # Errors
/// As [`next_token_logprobs_at`]; [`ModelError::BadHook`] for an intervention the model lacks.
pub fn next_token_logprobs_under(
    model: &Model,
    seqs: &[Vec<u32>],
    ids: &[u32],
    reuse: PrefixReuse,
    interventions: &[Intervention],
) -> Result<Vec<Vec<f64>>, ModelError> {
    let mut out: Vec<Option<Vec<f64>>> = vec![None; seqs.len()];
    if seqs.iter().any(Vec::is_empty) {
        return Err(ModelError::EmptyBatch);
    }
    match reuse {
        PrefixReuse::Off => {
            for (i, s) in seqs.iter().enumerate() {
                let mut cache = model.new_cache();
                let logits = model.forward(
                    &Batch::single(s.clone()),
                    &mut Capture::none(),
                    interventions,
                    &mut cache,
                )?;
                out[i] = Some(pick(&logits[0], ids)?);
            }
        }
        PrefixReuse::On { max_batch } => {
            let items: Vec<(usize, &[u32])> = seqs
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.as_slice()))
                .collect();
            let walk = Walk {
                model,
                ids,
                max_batch: max_batch.max(1),
                interventions,
            };
            walk.node(None, None, items, &mut out)?;
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every sequence scored"))
        .collect())
}

struct Walk<'a> {
    model: &'a Model,
    ids: &'a [u32],
    max_batch: usize,
    interventions: &'a [Intervention],
}

impl Walk<'_> {
    /// `cache` holds the tokens consumed so far (None: nothing yet) and `last` the
    /// log-probabilities at ids after them; `items` are the remaining suffixes.
    fn node(
        &self,
        cache: Option<&KvCache>,
        last: Option<&[f64]>,
        items: Vec<(usize, &[u32])>,
        out: &mut [Option<Vec<f64>>],
    ) -> Result<(), ModelError> {
        let lcp = if items.len() == 1 {
            // A lone sequence is a leaf: run it whole (keeps the padded-batch path uniform).
            0
        } else {
            common_prefix(&items)
        };
        let owned;
        let mut here_last = last.map(<[f64]>::to_vec);
        let cache = if lcp > 0 {
            let mut c = match cache {
                Some(c) => c.fork()?,
                None => self.model.new_cache(),
            };
            let prefix = items[0].1[..lcp].to_vec();
            let logits = self.model.forward(
                &Batch::single(prefix),
                &mut Capture::none(),
                self.interventions,
                &mut c,
            )?;
            here_last = Some(pick(&logits[0], self.ids)?);
            owned = c;
            Some(&owned)
        } else {
            cache
        };
        let mut groups: BTreeMap<u32, Vec<(usize, &[u32])>> = BTreeMap::new();
        for (i, s) in items {
            let rest = &s[lcp..];
            match rest.first() {
                None => out[i] = Some(here_last.clone().ok_or(ModelError::EmptyBatch)?),
                Some(&t) => groups.entry(t).or_default().push((i, rest)),
            }
        }
        let mut leaves = Vec::new();
        for (_, g) in groups {
            if g.len() == 1 {
                leaves.extend(g);
            } else {
                self.node(cache, here_last.as_deref(), g, out)?;
            }
        }
        for chunk in leaves.chunks(self.max_batch) {
            let mut c = match cache {
                Some(c) => c.repeat(chunk.len())?,
                None => self.model.new_cache(),
            };
            let batch = Batch::new(chunk.iter().map(|(_, s)| s.to_vec()).collect())
                .logits_at(Positions::Last);
            let logits =
                self.model
                    .forward(&batch, &mut Capture::none(), self.interventions, &mut c)?;
            for ((i, _), l) in chunk.iter().zip(&logits) {
                out[*i] = Some(pick(l, self.ids)?);
            }
        }
        Ok(())
    }
}

/// Length of the longest common prefix of all suffixes.
fn common_prefix(items: &[(usize, &[u32])]) -> usize {
    let first = items[0].1;
    items[1..].iter().fold(first.len(), |n, (_, s)| {
        first[..n]
            .iter()
            .zip(*s)
            .take_while(|(a, b)| a == b)
            .count()
    })
}

/// Log-probabilities at `ids` of the last row of `logits` (`[positions, vocab]`).
fn pick(logits: &Tensor, ids: &[u32]) -> Result<Vec<f64>, ModelError> {
    let n = logits.dim(0)?;
    let row: Vec<f32> = log_softmax(&logits.narrow(0, n - 1, 1)?)?
        .get(0)?
        .to_vec1()?;
    ids.iter()
        .map(|&id| {
            row.get(id as usize)
                .map(|&x| f64::from(x))
                .ok_or(ModelError::TokenOutOfRange {
                    seq: 0,
                    pos: 0,
                    id,
                    vocab: row.len(),
                })
        })
        .collect()
}
