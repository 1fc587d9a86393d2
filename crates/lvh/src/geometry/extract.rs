//! Pooled activations of prompts (MEASURE §1) and the resumable, sharded extraction run.
//!
//! For a contrast item (an instruction alone) the prompt is the model's chat template with one
//! user turn and the generation prompt, so the last token is the last token of the assistant
//! header: the position from which the model starts to answer. Pooling:
//! * `last`: `h_ℓ = resid(ℓ)[T − 1]` at that position (the default for contrast sets);
//! * `mean`: `h_ℓ = (1/T) Σ_t resid(ℓ)[t]` over every prompt token (summed in f64).
//!
//! # Run folder
//! ```text
//! manifest.json            command, model sha256, data sha256, settings (hooks, pooling, shard size)
//! items.json               [{id, label, pair, split}] in item order
//! acts-00000.safetensors   one f32 tensor [items, d_model] per hook (named by the hook), and
//!                          `index`: i64 [items], the item ids of the rows
//! shards.jsonl             one fsynced row per finished shard
//! summary.json             statistics of the last invocation (throughput, batch, peak RSS);
//!                          not a result: a resumed run rewrites it
//! ```
//! A shard (items `k·S .. (k+1)·S`) is the unit of resume: it is written atomically, then logged.
//! A killed run, rerun with the same arguments, skips the logged shards; a shard whose write
//! finished but whose log row did not is computed again and overwrites the same file, so items
//! are never duplicated. Memory holds one shard of activations at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use lm_runtime::hooks::{Capture, HookPoint, Positions};
use lm_runtime::model::{Batch, Model, ModelError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::run_dir::{read_json, JsonlLog, Manifest, RunDir};

/// How the activations of a prompt's tokens become one vector (MEASURE §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The last prompt token (for contrast sets: the end of the assistant header).
    Last,
    /// The mean over every prompt token.
    Mean,
}

impl Pooling {
    /// `last` or `mean`.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Last => "last",
            Pooling::Mean => "mean",
        }
    }
}

/// The position rule recorded in manifests and direction provenance.
pub const POSITION_RULE: &str =
    "chat template, one user turn + generation prompt; last token = end of the assistant header";

/// Pooled activations of one batch of prompts: `out[h][i]` is the `d_model` vector of hook
/// `hooks[h]` for prompt `i`. Padding is masked by the runtime; no logits are computed.
///
/// # Errors
/// Any forward-pass error, e.g. an empty prompt or one longer than the context.
pub fn pooled_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    hooks: &[HookPoint],
    pooling: Pooling,
) -> Result<Vec<Vec<Vec<f32>>>, ModelError> {
    let positions = match pooling {
        Pooling::Last => Positions::Last,
        Pooling::Mean => Positions::All,
    };
    let mut capture = Capture::new(hooks.iter().copied(), positions);
    let batch = Batch::new(prompts.to_vec()).logits_at(Positions::Indices(Vec::new()));
    let mut cache = model.new_cache();
    model.forward(&batch, &mut capture, &[], &mut cache)?;
    let mut out = Vec::with_capacity(hooks.len());
    for &h in hooks {
        let mut per_item = Vec::with_capacity(prompts.len());
        for i in 0..prompts.len() {
            let t = capture.get(h, i)?.ok_or_else(|| ModelError::BadHook {
                hook: h,
                why: "not recorded".into(),
            })?;
            let rows: Vec<Vec<f32>> = t.to_vec2()?;
            let v = match pooling {
                Pooling::Last => rows.into_iter().last().unwrap_or_default(),
                Pooling::Mean => {
                    let d = rows.first().map_or(0, Vec::len);
                    let mut acc = vec![0f64; d];
                    for r in &rows {
                        for (a, &x) in acc.iter_mut().zip(r) {
                            *a += f64::from(x);
                        }
                    }
                    let n = rows.len().max(1) as f64;
                    acc.into_iter().map(|a| (a / n) as f32).collect()
                }
            };
            per_item.push(v);
        }
        out.push(per_item);
    }
    Ok(out)
}

/// Pooled activations of many prompts, `batch` at a time (prompts of similar length batched
/// together to waste little padding), in input order: `out[h]` is row-major `[n, d_model]`.
/// `progress` advances by one per prompt.
///
/// # Errors
/// As [`pooled_batch`], naming the first prompt of the failing batch.
pub fn pooled_all(
    model: &Model,
    prompts: &[Vec<u32>],
    hooks: &[HookPoint],
    pooling: Pooling,
    batch: usize,
    progress: &ProgressBar,
) -> Result<Vec<Vec<f32>>> {
    let d = model.config().d_model;
    let n = prompts.len();
    let mut out = vec![vec![0f32; n * d]; hooks.len()];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (prompts[i].len(), i));
    for chunk in order.chunks(batch.max(1)) {
        let toks: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let acts = pooled_batch(model, &toks, hooks, pooling)
            .with_context(|| format!("forward pass of prompt {}", chunk[0]))?;
        for (h, per_item) in acts.into_iter().enumerate() {
            for (&i, v) in chunk.iter().zip(per_item) {
                if v.len() != d {
                    bail!("hook {}: got {} values, expected {d}", hooks[h], v.len());
                }
                out[h][i * d..(i + 1) * d].copy_from_slice(&v);
            }
        }
        progress.inc(chunk.len() as u64);
    }
    Ok(out)
}

/// A progress bar on stderr counting `what` (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// What determines an extraction's results; stored as the manifest's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractSettings {
    /// Hook names, in tensor order.
    pub hooks: Vec<String>,
    /// Pooling rule.
    pub pooling: Pooling,
    /// Token position rule.
    pub position_rule: String,
    /// Items per shard.
    pub shard_size: usize,
    /// Number of items.
    pub n_items: usize,
    /// Width of every tensor row.
    pub d_model: usize,
    /// How items were selected (split, subsample, limit), for the record.
    pub selection: String,
}

/// One item of an extraction, as recorded in `items.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemMeta {
    /// Row id (0-based position in the run).
    pub id: usize,
    /// `harmless` or `harmful`.
    pub label: String,
    /// Twin id, when the dataset has one.
    pub pair: Option<String>,
    /// `dev` or `heldout` by the hash split.
    pub split: String,
}

/// A row of `shards.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRow {
    /// Shard number `k`.
    pub shard: usize,
    /// File name inside the run folder.
    pub file: String,
    /// First item id.
    pub first: usize,
    /// Items in the shard.
    pub n_items: usize,
    /// Prompt tokens in the shard.
    pub n_tokens: usize,
}

/// Name of shard `k`.
pub fn shard_file(k: usize) -> String {
    format!("acts-{k:05}.safetensors")
}

/// What a call of [`run_shards`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardSummary {
    /// Shards computed now.
    pub computed: usize,
    /// Shards found finished and skipped.
    pub skipped: usize,
    /// Items computed now.
    pub items: usize,
    /// Prompt tokens computed now.
    pub tokens: usize,
}

/// Computes the missing shards of the run in `dir`. `tokenize(i)` gives the prompt of item `i`
/// (called only for items of shards still to do). `progress` counts items, finished ones
/// included.
///
/// # Errors
/// Forward-pass and I/O errors naming the shard or file.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the run
pub fn run_shards(
    dir: &RunDir,
    model: &Model,
    n_items: usize,
    tokenize: &dyn Fn(usize) -> Result<Vec<u32>>,
    hooks: &[HookPoint],
    pooling: Pooling,
    batch: usize,
    shard_size: usize,
    progress: &ProgressBar,
) -> Result<ShardSummary> {
    if shard_size == 0 {
        bail!("shard size must be at least 1");
    }
    let (mut log, done) = JsonlLog::open::<ShardRow>(&dir.file("shards.jsonl"))?;
    let finished: BTreeMap<usize, ShardRow> = done
        .into_iter()
        .filter(|r| dir.file(&r.file).is_file())
        .map(|r| (r.shard, r))
        .collect();
    let d = model.config().d_model;
    let mut summary = ShardSummary::default();
    for k in 0..n_items.div_ceil(shard_size) {
        let first = k * shard_size;
        let n = shard_size.min(n_items - first);
        if finished.contains_key(&k) {
            summary.skipped += 1;
            progress.inc(n as u64);
            continue;
        }
        let prompts = (first..first + n)
            .map(tokenize)
            .collect::<Result<Vec<_>>>()?;
        let acts = pooled_all(model, &prompts, hooks, pooling, batch, progress)
            .with_context(|| format!("shard {k} (items {first}..{})", first + n))?;
        let ids: Vec<i64> = (first..first + n).map(|i| i as i64).collect();
        let bytes = shard_bytes(hooks, &acts, &ids, d)?;
        let file = shard_file(k);
        dir.write_bytes(&file, &bytes)?;
        let n_tokens = prompts.iter().map(Vec::len).sum();
        log.append(&ShardRow {
            shard: k,
            file,
            first,
            n_items: n,
            n_tokens,
        })?;
        summary.computed += 1;
        summary.items += n;
        summary.tokens += n_tokens;
    }
    Ok(summary)
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// f32 values of little-endian bytes.
pub fn f32_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn shard_bytes(hooks: &[HookPoint], acts: &[Vec<f32>], ids: &[i64], d: usize) -> Result<Vec<u8>> {
    let n = ids.len();
    let mut owned: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = hooks
        .iter()
        .zip(acts)
        .map(|(h, a)| {
            if a.iter().any(|x| !x.is_finite()) {
                bail!("hook {h}: non-finite activation in items {}..", ids[0]);
            }
            Ok((h.to_string(), f32_bytes(a), Dtype::F32, vec![n, d]))
        })
        .collect::<Result<_>>()?;
    owned.push((
        "index".into(),
        ids.iter().flat_map(|i| i.to_le_bytes()).collect(),
        Dtype::I64,
        vec![n],
    ));
    let views = owned
        .iter()
        .map(|(name, b, dt, shape)| Ok((name.clone(), TensorView::new(*dt, shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, &None)?)
}

/// Parses a memory size: plain bytes (`1048576`) or a number with a binary unit `K`, `M`, `G`,
/// `T` (1K = 1024 bytes), optionally followed by `B` or `iB` and possibly fractional (`1.5G`).
///
/// # Errors
/// A message naming the text when it is not such a size, is zero, or overflows u64.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a memory size (e.g. 512M, 2G, 1.5G, 1048576)");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    if num.is_empty() || num.matches('.').count() > 1 || num == "." {
        return Err(bad());
    }
    let bytes = if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| bad())?;
        let b = (v * mult as f64).floor();
        if !(b.is_finite() && b < u64::MAX as f64) {
            return Err(format!("`{text}` is too large"));
        }
        b as u64
    } else {
        let v: u64 = num.parse().map_err(|_| format!("`{text}` is too large"))?;
        v.checked_mul(mult)
            .ok_or_else(|| format!("`{text}` is too large"))?
    };
    if bytes == 0 {
        return Err(format!(
            "`{text}`: a memory budget must be more than 0 bytes"
        ));
    }
    Ok(bytes)
}

/// A size in bytes for messages: `1.50 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2} {}", UNITS[u])
}

/// Factor between the tensors [`ActivationShape::forward_bytes`] counts and what a forward pass
/// costs in resident memory. Measured on SmolLM2-135M (Q4_1, 30 hooks, last-token pooling,
/// 48-token prompts): peak RSS grew by 8.4 MiB per extra prompt in a batch (batch 7: 288 MiB,
/// batch 16: 364 MiB) against 3.9 MiB counted.
pub const HEADROOM: u128 = 2;

/// The shapes that size an extraction's activation memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationShape {
    /// Blocks (the KV cache holds every layer).
    pub n_layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value width per position, `n_kv_heads · head_dim`.
    pub kv_dim: usize,
    /// MLP width.
    pub d_ff: usize,
    /// Hooks captured.
    pub n_hooks: usize,
    /// Pooling (`mean` captures every position, `last` one).
    pub pooling: Pooling,
}

impl ActivationShape {
    /// The shape of `cfg` with `n_hooks` hooks.
    pub fn of(cfg: &lm_runtime::config::ModelConfig, n_hooks: usize, pooling: Pooling) -> Self {
        Self {
            n_layers: cfg.n_layers,
            d_model: cfg.d_model,
            n_heads: cfg.n_heads,
            kv_dim: cfg.n_kv_heads * cfg.head_dim,
            d_ff: cfg.d_ff,
            n_hooks,
            pooling,
        }
    }

    /// Estimated peak bytes of one forward pass of `batch` prompts padded to `len` tokens, all
    /// f32 (4 bytes), whatever the weight storage:
    ///
    /// `HEADROOM · 4·b·(T·(6·d + 3·d_ff + 2·H·T + T + 2·L·kv) + 2·hooks·P·d)`: live inside one
    /// block (residual, norm, q, attention output and projection; gate, up and their product;
    /// scores and softmax `[b, H, T, T]`; the mask), the KV cache of every layer, and the
    /// captures with their copies (`P = T` for mean pooling, `1` for last-token pooling).
    /// [`HEADROOM`] covers what the count leaves out (RoPE and head-repeat copies, the
    /// allocator's retained pages).
    pub fn forward_bytes(&self, batch: usize, len: usize) -> u128 {
        let (b, t) = (batch as u128, len as u128);
        let d = self.d_model as u128;
        let per_block = 6 * d + 3 * self.d_ff as u128 + 2 * self.n_heads as u128 * t + t;
        let kv = 2 * self.n_layers as u128 * self.kv_dim as u128;
        let pooled_positions = match self.pooling {
            Pooling::Mean => t,
            Pooling::Last => 1,
        };
        let capture = 2 * self.n_hooks as u128 * pooled_positions * d;
        HEADROOM * 4 * b * (t * (per_block + kv) + capture)
    }

    /// Estimated bytes of one shard of `items` held while it is written: the pooled rows,
    /// their little-endian copy and the serialized file, `4·3·hooks·items·d`.
    pub fn shard_bytes(&self, items: usize) -> u128 {
        4 * 3 * self.n_hooks as u128 * items as u128 * self.d_model as u128
    }
}

/// Batch and shard size chosen under a memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Prompts per forward pass.
    pub batch: usize,
    /// Items per shard.
    pub shard_size: usize,
    /// Estimated peak activation bytes with these sizes.
    pub estimate: u64,
}

/// Picks the largest batch `≤ max_batch` whose forward pass, plus one shard of `max_shard`
/// items, fits in `budget` bytes for prompts of up to `max_len` tokens. The shard size (recorded
/// in the manifest, the unit of resume) is kept when any batch fits beside it; otherwise it is
/// cut to what fits beside a batch of 1.
///
/// # Errors
/// When even one prompt of `max_len` tokens and a one-item shard exceed the budget, naming
/// the estimate, the budget and the prompt length.
pub fn plan_memory(
    shape: &ActivationShape,
    budget: u64,
    max_len: usize,
    max_batch: usize,
    max_shard: usize,
) -> Result<MemoryPlan> {
    let budget_u = u128::from(budget);
    let (max_batch, max_shard) = (max_batch.max(1), max_shard.max(1));
    let one = shape.forward_bytes(1, max_len) + shape.shard_bytes(1);
    if one > budget_u {
        bail!(
            "--max-memory {}: even a batch of 1 does not fit: the longest prompt ({max_len} tokens) \
             needs about {} of activations",
            human_bytes(budget),
            human_bytes(u64::try_from(one).unwrap_or(u64::MAX))
        );
    }
    let fits =
        |b: usize, s: usize| shape.forward_bytes(b, max_len) + shape.shard_bytes(s) <= budget_u;
    let (batch, shard_size) = if fits(1, max_shard) {
        // The estimate grows with the batch: binary search the largest that fits.
        let (mut lo, mut hi) = (1usize, max_batch);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid, max_shard) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        (lo, max_shard)
    } else {
        let room = budget_u - shape.forward_bytes(1, max_len);
        let per_item = shape.shard_bytes(1).max(1);
        (
            1,
            usize::try_from(room / per_item)
                .unwrap_or(usize::MAX)
                .clamp(1, max_shard),
        )
    };
    let estimate = shape.forward_bytes(batch, max_len) + shape.shard_bytes(shard_size);
    Ok(MemoryPlan {
        batch,
        shard_size,
        estimate: u64::try_from(estimate).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("100MB"), Ok(100 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size(" 3 M "), Ok(3 << 20));
        for bad in ["", "M", "2X", "-1G", "1.2.3G", "G2", ".", "0", "0M"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    fn shape() -> ActivationShape {
        ActivationShape {
            n_layers: 30,
            d_model: 576,
            n_heads: 9,
            kv_dim: 192,
            d_ff: 1536,
            n_hooks: 30,
            pooling: Pooling::Mean,
        }
    }

    #[test]
    fn forward_estimate_follows_its_formula() {
        let s = shape();
        let (b, t) = (3u128, 40u128);
        let want = HEADROOM
            * 4
            * b
            * (t * (6 * 576 + 3 * 1536 + 2 * 9 * t + t + 2 * 30 * 192) + 2 * 30 * t * 576);
        assert_eq!(s.forward_bytes(3, 40), want);
        let last = ActivationShape {
            pooling: Pooling::Last,
            ..s
        };
        assert_eq!(
            s.forward_bytes(3, 40) - last.forward_bytes(3, 40),
            HEADROOM * 4 * b * 2 * 30 * (t - 1) * 576
        );
        assert_eq!(s.shard_bytes(64), 4 * 3 * 30 * 64 * 576);
    }

    #[test]
    fn the_plan_is_the_largest_batch_within_the_budget() {
        let s = shape();
        let budget = 256u64 << 20;
        let p = plan_memory(&s, budget, 100, 64, 64).unwrap();
        assert_eq!(p.shard_size, 64);
        assert!(u128::from(p.estimate) <= u128::from(budget));
        assert_eq!(
            u128::from(p.estimate),
            s.forward_bytes(p.batch, 100) + s.shard_bytes(64)
        );
        assert!(p.batch < 64, "256 MiB should not hold 64 prompts: {p:?}");
        assert!(s.forward_bytes(p.batch + 1, 100) + s.shard_bytes(64) > u128::from(budget));
        // A roomy budget keeps the requested sizes.
        assert_eq!(
            plan_memory(&s, 64 << 30, 100, 8, 64).unwrap(),
            MemoryPlan {
                batch: 8,
                shard_size: 64,
                estimate: u64::try_from(s.forward_bytes(8, 100) + s.shard_bytes(64)).unwrap(),
            }
        );
        // The budget shrinks with the prompt length: longer prompts, smaller batches.
        let long = plan_memory(&s, budget, 400, 64, 64).unwrap();
        assert!(long.batch < p.batch);
    }

    #[test]
    fn the_shard_shrinks_when_no_batch_fits_beside_it_and_too_small_budgets_fail() {
        let s = shape();
        let one = s.forward_bytes(1, 50);
        let budget = u64::try_from(one + s.shard_bytes(10)).unwrap();
        let p = plan_memory(&s, budget, 50, 8, 64).unwrap();
        assert_eq!((p.batch, p.shard_size), (1, 10));
        let e = plan_memory(&s, u64::try_from(one).unwrap(), 50, 8, 64)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("even a batch of 1 does not fit") && e.contains("50 tokens"),
            "{e}"
        );
    }
}

/// A finished (or partly finished) extraction run, read back.
#[derive(Debug, Clone)]
pub struct ExtractRun {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The settings inside the manifest.
    pub settings: ExtractSettings,
    /// `items.json`.
    pub items: Vec<ItemMeta>,
}

impl ExtractRun {
    /// Reads the manifest and the item list of the run in `dir`.
    ///
    /// # Errors
    /// Missing or malformed files, naming them; a manifest of another command.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest: Manifest = read_json(&dir.join("manifest.json"))?;
        if manifest.command != "extract" {
            bail!(
                "{}: a run of `{}`, not of `extract`",
                dir.display(),
                manifest.command
            );
        }
        let settings: ExtractSettings = serde_json::from_value(manifest.settings.clone())
            .with_context(|| format!("settings in {}/manifest.json", dir.display()))?;
        let items: Vec<ItemMeta> = read_json(&dir.join("items.json"))?;
        if items.len() != settings.n_items {
            bail!(
                "{}/items.json has {} items, the manifest says {}",
                dir.display(),
                items.len(),
                settings.n_items
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            settings,
            items,
        })
    }

    /// The hooks of the run.
    ///
    /// # Errors
    /// A hook name that does not parse.
    pub fn hooks(&self) -> Result<Vec<HookPoint>> {
        self.settings
            .hooks
            .iter()
            .map(|h| {
                h.parse()
                    .with_context(|| format!("hook in {}", self.dir.display()))
            })
            .collect()
    }

    /// Every item's activations at `hooks`: `out[h]` row-major `[n_items, d_model]` in item
    /// order, checked complete (each id exactly once) and finite.
    ///
    /// # Errors
    /// An unfinished run, a hook the run lacks, a malformed or inconsistent shard.
    pub fn load(&self, hooks: &[HookPoint]) -> Result<Vec<Vec<f32>>> {
        let (n, d) = (self.settings.n_items, self.settings.d_model);
        for h in hooks {
            if !self.settings.hooks.contains(&h.to_string()) {
                bail!(
                    "{}: hook {h} was not extracted (have {})",
                    self.dir.display(),
                    self.settings.hooks.join(", ")
                );
            }
        }
        let (_, rows) = JsonlLog::open::<ShardRow>(&self.dir.join("shards.jsonl"))?;
        let shards: BTreeMap<usize, ShardRow> = rows.into_iter().map(|r| (r.shard, r)).collect();
        let expected = n.div_ceil(self.settings.shard_size.max(1));
        if shards.len() != expected {
            bail!(
                "{}: {} of {expected} shards finished; rerun `lvh extract` with the same arguments to finish it",
                self.dir.display(),
                shards.len()
            );
        }
        let mut out = vec![vec![0f32; n * d]; hooks.len()];
        let mut seen = vec![false; n];
        for row in shards.values() {
            let path = self.dir.join(&row.file);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let st = SafeTensors::deserialize(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?;
            let index = st
                .tensor("index")
                .with_context(|| format!("{}: tensor `index`", path.display()))?;
            if index.dtype() != Dtype::I64 {
                bail!("{}: `index` must be i64", path.display());
            }
            let ids: Vec<usize> = index
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
                .collect();
            for &id in &ids {
                if id >= n || std::mem::replace(&mut seen[id], true) {
                    bail!("{}: item id {id} out of range or repeated", path.display());
                }
            }
            for (h, hook) in hooks.iter().enumerate() {
                let name = hook.to_string();
                let t = st
                    .tensor(&name)
                    .with_context(|| format!("{}: tensor `{name}`", path.display()))?;
                if t.dtype() != Dtype::F32 || t.shape() != [ids.len(), d] {
                    bail!(
                        "{}: tensor `{name}` is {:?} {:?}, expected F32 [{}, {d}]",
                        path.display(),
                        t.dtype(),
                        t.shape(),
                        ids.len()
                    );
                }
                let v = f32_from_bytes(t.data());
                for (r, &id) in ids.iter().enumerate() {
                    out[h][id * d..(id + 1) * d].copy_from_slice(&v[r * d..(r + 1) * d]);
                }
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            bail!("{}: item {missing} is in no shard", self.dir.display());
        }
        Ok(out)
    }
}

/// Groups items into twins: `(positive id, negative id)` for every `pair` value held by
/// exactly one harmless and one harmful item among `ids` (other groups are ignored).
pub fn twin_pairs(
    ids: &[usize],
    pair_of: impl Fn(usize) -> Option<String>,
    is_pos: impl Fn(usize) -> bool,
) -> Vec<(usize, usize)> {
    let mut groups: HashMap<String, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (row, &id) in ids.iter().enumerate() {
        if let Some(p) = pair_of(id) {
            let g = groups.entry(p).or_default();
            if is_pos(id) {
                g.0.push(row);
            } else {
                g.1.push(row);
            }
        }
    }
    let mut pairs: Vec<(usize, usize)> = groups
        .into_values()
        .filter(|(p, n)| p.len() == 1 && n.len() == 1)
        .map(|(p, n)| (p[0], n[0]))
        .collect();
    pairs.sort_unstable();
    pairs
}
