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
