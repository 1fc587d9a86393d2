//! `lvh extract`: pooled activations of a contrast set at chosen hooks into a resumable run
//! folder of safetensors shards (see [`crate::geometry::extract`] for the layout).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lm_runtime::hooks::parse_hook_list;
use rand::SeedableRng;

use crate::cmd::run::Weights;
use crate::datasets::{balanced_subsample, ContrastArgs, SplitKey, BUNDLED_CONTRAST_JSONL};
use crate::geometry::extract::{
    human_bytes, parse_size, plan_memory, progress_bar, run_shards, ActivationShape,
    ExtractSettings, ItemMeta, Pooling, POSITION_RULE,
};
use crate::geometry::{contrast_prompt, load_model};
use crate::run_dir::{peak_rss_bytes, FileProvenance, Manifest, RunDir};

/// Which side of the hash split to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitChoice {
    /// Every item.
    All,
    /// The dev side.
    Dev,
    /// The held-out side.
    Heldout,
}

/// Arguments of `lvh extract`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file or known model name (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight storage.
    #[arg(long, value_enum, default_value_t = Weights::Quantized)]
    pub weights: Weights,
    #[command(flatten)]
    pub data: ContrastArgs,
    /// Items of this side of the hash split only.
    #[arg(long, value_enum, default_value_t = SplitChoice::All)]
    pub split: SplitChoice,
    /// Balanced subsample: this many items of each label (seeded by --seed).
    #[arg(long)]
    pub per_class: Option<usize>,
    /// Keep only the first N items (after split and subsample).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the subsample (ChaCha8).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hooks, comma-separated; `*` for every layer, `a-b` for a range.
    #[arg(long, default_value = "blocks.*.hook_resid_post")]
    pub hooks: String,
    /// Pooling of the prompt's token activations.
    #[arg(long, value_enum, default_value_t = Pooling::Last)]
    pub pooling: Pooling,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Items per shard (the unit of resume).
    #[arg(long, default_value_t = 64)]
    pub shard_size: usize,
    /// Budget for activation memory (e.g. `512M`, `2G`; binary units): the batch (and, when
    /// needed, the shard size) is cut so the estimate for the longest prompt fits. Weights are
    /// not counted. Peak RSS is reported either way.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Run folder (created, or resumed when it holds the same run).
    #[arg(long)]
    pub out: PathBuf,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs `lvh extract`.
///
/// # Errors
/// Bad arguments, unreadable model or data, a run folder of a different run, I/O errors.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.batch == 0 || args.shard_size == 0 {
        bail!("--batch and --shard-size must be at least 1");
    }
    let mut items = args.data.load()?;
    items = match args.split {
        SplitChoice::All => items,
        SplitChoice::Dev => crate::datasets::select_split(items, crate::datasets::Split::Dev),
        SplitChoice::Heldout => {
            crate::datasets::select_split(items, crate::datasets::Split::Heldout)
        }
    };
    let mut selection = format!("split={:?}", args.split).to_lowercase();
    if let Some(k) = args.per_class {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
        items = balanced_subsample(&items, Some(k), &mut rng)?;
        selection.push_str(&format!(", per_class={k}, seed={}", args.seed));
    }
    if let Some(n) = args.limit {
        items.truncate(n);
        selection.push_str(&format!(", limit={n}"));
    }
    if items.is_empty() {
        bail!("no items to extract");
    }
    let m = load_model(args.model.clone(), args.weights)?;
    let cfg = m.model.config().clone();
    let hooks = parse_hook_list(&args.hooks, cfg.n_layers).context("--hooks")?;
    if hooks.is_empty() {
        bail!("--hooks names no hook");
    }
    let (batch, shard_size, memory) = match args.max_memory {
        None => (args.batch, args.shard_size, None),
        Some(budget) => {
            let mut max_len = 0;
            for (i, it) in items.iter().enumerate() {
                let n = contrast_prompt(&m, &it.text)
                    .with_context(|| format!("prompt of item {i}"))?
                    .len();
                max_len = max_len.max(n);
            }
            let shape = ActivationShape::of(&cfg, hooks.len(), args.pooling);
            let plan = plan_memory(&shape, budget, max_len, args.batch, args.shard_size)?;
            if plan.batch != args.batch || plan.shard_size != args.shard_size {
                eprintln!(
                    "--max-memory {}: batch {} (asked {}), shard size {} (asked {}), about {} \
                     of activations for the longest prompt ({max_len} tokens)",
                    human_bytes(budget),
                    plan.batch,
                    args.batch,
                    plan.shard_size,
                    args.shard_size,
                    human_bytes(plan.estimate)
                );
            }
            let memory = serde_json::json!({
                "budget_bytes": budget,
                "estimate_bytes": plan.estimate,
                "longest_prompt_tokens": max_len,
            });
            (plan.batch, plan.shard_size, Some(memory))
        }
    };
    let settings = ExtractSettings {
        hooks: hooks.iter().map(ToString::to_string).collect(),
        pooling: args.pooling,
        position_rule: POSITION_RULE.into(),
        shard_size,
        n_items: items.len(),
        d_model: cfg.d_model,
        selection,
    };
    let mut manifest = Manifest::new("extract", serde_json::to_value(&settings)?);
    manifest.seed = args.per_class.map(|_| args.seed);
    manifest.model = Some(FileProvenance::of(&m.path)?);
    manifest.data = vec![match &args.data.contrast {
        Some(p) => FileProvenance::of(p)?,
        None => FileProvenance::bundled("data/contrast.jsonl", BUNDLED_CONTRAST_JSONL.as_bytes()),
    }];
    let dir = RunDir::open(&args.out, &manifest)?;
    let metas: Vec<ItemMeta> = items
        .iter()
        .enumerate()
        .map(|(id, it)| ItemMeta {
            id,
            label: it.label.as_str().into(),
            pair: it.pair.clone(),
            split: format!("{:?}", it.split()).to_lowercase(),
        })
        .collect();
    dir.write_json("items.json", &metas)?;

    let pb = progress_bar(items.len() as u64, "extract");
    let t0 = Instant::now();
    let tokenize = |i: usize| contrast_prompt(&m, &items[i].text);
    let summary = run_shards(
        &dir,
        &m.model,
        items.len(),
        &tokenize,
        &hooks,
        args.pooling,
        batch,
        shard_size,
        &pb,
    )?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let peak_rss = peak_rss_bytes();
    let obj = serde_json::json!({
        "out": args.out,
        "items": items.len(),
        "hooks": settings.hooks.len(),
        "pooling": args.pooling.name(),
        "batch": batch,
        "shard_size": shard_size,
        "max_memory": memory,
        "peak_rss_bytes": peak_rss,
        "shards_computed": summary.computed,
        "shards_skipped": summary.skipped,
        "items_computed": summary.items,
        "tokens_computed": summary.tokens,
        "seconds": secs,
        "items_per_s": summary.items as f64 / secs.max(1e-9),
        "tokens_per_s": summary.tokens as f64 / secs.max(1e-9),
    });
    // The statistics of this invocation (not results: a resumed run rewrites it).
    dir.write_json("summary.json", &obj)?;
    let rss = peak_rss.map_or_else(|| "unknown".to_owned(), human_bytes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        println!("peak RSS {rss}");
        eprintln!(
            "{} items x {} hooks ({}): {} shards computed, {} already done; {:.1} items/s, {:.0} tokens/s -> {}",
            items.len(),
            settings.hooks.len(),
            args.pooling.name(),
            summary.computed,
            summary.skipped,
            obj["items_per_s"].as_f64().unwrap_or(0.0),
            obj["tokens_per_s"].as_f64().unwrap_or(0.0),
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
