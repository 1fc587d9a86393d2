//! `lvh rlaif`: a real self-judging RLAIF loop on a model (MEASURE §5), checkpointed and
//! resumable. See [`crate::rlaif`] for the loop, the evaluators and the prediction.
//!
//! Run folder: `manifest.json`, `probe.json`, `human.jsonl`, `human_acts.jsonl`,
//! `round-t/{samples.jsonl,labels.jsonl,reward.json}`, then `result.json`, `report.html` and
//! `figure.svg`. A killed run, rerun with the same arguments, resumes; other arguments into the
//! same folder are refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::gap::gap_rows;
use super::judge::{score_pairs, JudgeModelArgs, ScoreRow};
use crate::constitution::Constitution;
use crate::datasets::{
    select_split, ContrastArgs, PreferenceArgs, PreferencePair, Split, BUNDLED_CONTRAST_JSONL,
    BUNDLED_PREFERENCES_JSONL,
};
use crate::geometry::extract::progress_bar;
use crate::judge::stats::gap_stats;
use crate::judge::Judge;
use crate::rlaif::engine::{
    decode_h, ensure_labels, ensure_samples, fit_probe, fit_reward, Engine, SamplePlan,
};
use crate::rlaif::report::{analyse, figure, html, RunData};
use crate::rlaif::{
    hex_f32, unhex_f32, HumanActsRow, ProbeFile, RewardFile, RlaifSettings, SampleRow,
};
use crate::run_dir::{read_json, FileProvenance, JsonlLog, Manifest, RunDir};

/// Arguments of `lvh rlaif`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Constitution: a bundled name, a TOML file or a Constitutional-AI principles JSONL file.
    #[arg(long)]
    pub constitution: String,
    #[command(flatten)]
    pub model: JudgeModelArgs,
    /// Prompts the policy answers: a text file (one prompt per line) or JSONL with a `prompt`
    /// field (default: the held-out split of the preference set's prompts).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Use at most this many prompts (a seeded subsample, file order kept).
    #[arg(long, default_value_t = 12)]
    pub n_prompts: usize,
    #[command(flatten)]
    pub pairs: PreferenceArgs,
    #[command(flatten)]
    pub contrast: ContrastArgs,
    /// Held-out human pairs (dev split of the preference set, seeded subsample) that measure
    /// a_gen, a_C and the evaluators' agreement with human labels.
    #[arg(long, default_value_t = 24)]
    pub eval_pairs: usize,
    /// Rounds T.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Responses per prompt n (≥ 2).
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Token budget of a response.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Block ℓ whose resid_post is read and steered (default: the middle block).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Steering step per round, in units of the mean residual norm at ℓ.
    #[arg(long, default_value_t = 0.25)]
    pub eta: f64,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Ridge ρ of the Bradley–Terry reward fit.
    #[arg(long, default_value_t = 1.0)]
    pub ridge: f64,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of every random choice (prompt and pair subsamples, sampling, bootstrap).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run folder.
    #[arg(long, default_value = "runs/rlaif")]
    pub out: PathBuf,
    /// Print result.json on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Reads a prompt file: JSONL objects with a `prompt` string (`.jsonl`) or one prompt per
/// non-empty line.
///
/// # Errors
/// I/O errors and malformed lines, naming file and line.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if jsonl {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            let p = v.get("prompt").and_then(|p| p.as_str()).with_context(|| {
                format!("{}:{}: no string field `prompt`", path.display(), i + 1)
            })?;
            out.push(p.to_owned());
        } else {
            out.push(line.trim().to_owned());
        }
    }
    if out.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(out)
}

fn subsample<T: Clone>(items: &[T], k: usize, seed: u64, stream: u64) -> Vec<usize> {
    if items.len() <= k {
        return (0..items.len()).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut idx = rand::seq::index::sample(&mut rng, items.len(), k).into_vec();
    idx.sort_unstable();
    idx
}

fn bar(len: usize, what: &str) -> ProgressBar {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress_bar(len as u64, what)
    } else {
        ProgressBar::hidden()
    }
}

/// Runs `lvh rlaif`.
///
/// # Errors
/// Bad arguments or inputs (naming the file), model failures, a folder holding another run.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.samples < 2 {
        bail!("--samples must be at least 2 (pairs of responses are judged)");
    }
    if args.n_prompts == 0 || args.eval_pairs == 0 {
        bail!("--n-prompts and --eval-pairs must be at least 1");
    }
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be > 0, got {}", args.temperature);
    }
    if !(args.eta.is_finite() && args.ridge > 0.0 && args.ridge.is_finite()) {
        bail!("--eta must be finite and --ridge > 0");
    }
    let constitution = Constitution::resolve(&args.constitution)?;
    let weights = constitution.normalized_weights();

    // Data: prompts (held-out split), human pairs (dev split), contrast set.
    let all_pairs = args.pairs.load()?;
    let pairs_prov = match &args.pairs.pairs {
        Some(p) => FileProvenance::of(p)?,
        None => FileProvenance::bundled("preferences.jsonl", BUNDLED_PREFERENCES_JSONL.as_bytes()),
    };
    let (prompt_pool, prompt_source, prompt_prov) = match &args.prompts {
        Some(p) => (
            read_prompts(p)?,
            format!("file {}", p.display()),
            Some(FileProvenance::of(p)?),
        ),
        None => {
            let mut seen = BTreeSet::new();
            let pool: Vec<String> = select_split(all_pairs.clone(), Split::Heldout)
                .into_iter()
                .map(|p| p.prompt)
                .filter(|p| seen.insert(p.clone()))
                .collect();
            (
                pool,
                "preference set, held-out split (sha256 of prompt % 5 == 0)".to_owned(),
                None,
            )
        }
    };
    let prompts: Vec<String> = subsample(&prompt_pool, args.n_prompts, args.seed, 3)
        .into_iter()
        .map(|i| prompt_pool[i].clone())
        .collect();
    let used: BTreeSet<&str> = prompts.iter().map(String::as_str).collect();
    let dev: Vec<(usize, PreferencePair)> = all_pairs
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, p)| {
            crate::datasets::SplitKey::split(p) == Split::Dev && !used.contains(p.prompt.as_str())
        })
        .collect();
    if dev.is_empty() {
        bail!("no dev-split preference pairs left for the human-label evaluation");
    }
    let human: Vec<(usize, PreferencePair)> = subsample(&dev, args.eval_pairs, args.seed, 4)
        .into_iter()
        .map(|i| dev[i].clone())
        .collect();
    let contrast = args.contrast.load()?;
    let contrast_prov = match &args.contrast.contrast {
        Some(p) => FileProvenance::of(p)?,
        None => FileProvenance::bundled("contrast.jsonl", BUNDLED_CONTRAST_JSONL.as_bytes()),
    };

    let m = args.model.load()?;
    let cfg = m.model.config().clone();
    let layer = args.layer.unwrap_or(cfg.n_layers / 2);
    if layer >= cfg.n_layers {
        bail!("--layer {layer}: the model has blocks 0..{}", cfg.n_layers);
    }
    let settings = RlaifSettings {
        constitution: constitution.name.clone(),
        constitution_toml: constitution.to_string(),
        prompts: prompts.clone(),
        prompt_source,
        human_pairs: human.iter().map(|(i, _)| *i).collect(),
        rounds: args.rounds,
        samples: args.samples,
        max_tokens: args.max_tokens,
        layer,
        eta: args.eta,
        temperature: args.temperature,
        ridge: args.ridge,
        resamples: args.resamples,
        weights: format!("{:?}", args.model.weights),
        answer_prefix: args.model.answer_prefix.clone(),
    };
    let model_prov = FileProvenance::of(&m.path)?;
    let mut manifest = Manifest::new("rlaif", serde_json::to_value(&settings)?);
    manifest.seed = Some(args.seed);
    manifest.model = Some(model_prov.clone());
    manifest.data = [Some(pairs_prov), Some(contrast_prov), prompt_prov]
        .into_iter()
        .flatten()
        .collect();
    let dir = RunDir::open(&args.out, &manifest)?;
    let engine = Engine { m: &m, layer };
    let judge = Judge::new(&m.model, &m.format, &m.tokenizer, &args.model.config())?;

    // Stage 1: the human-data probe.
    let probe_path = dir.file("probe.json");
    if !probe_path.exists() {
        let pb = bar(contrast.len(), "probe");
        let probe = fit_probe(&engine, contrast, args.seed, &pb)?;
        pb.finish_and_clear();
        dir.write_json("probe.json", &probe)?;
    }
    let probe: ProbeFile = read_json(&probe_path)?;

    // Stage 2: judge and generation scores of the human pairs; their activations.
    let (mut log, done) = JsonlLog::open::<ScoreRow>(&dir.file("human.jsonl"))?;
    let scored = score_pairs(
        &judge,
        &constitution,
        &human,
        true,
        Some((&mut log, done)),
        "human pairs",
    )?;
    let mut brng = ChaCha8Rng::seed_from_u64(args.seed);
    brng.set_stream(1);
    let human_stats = gap_stats(&gap_rows(&scored, &weights), args.resamples, &mut brng);
    let human_acts = ensure_human_acts(&engine, &dir, &human)?;

    // Stage 3: rounds.
    let d = cfg.d_model;
    let mut samples: Vec<Vec<SampleRow>> = Vec::with_capacity(args.rounds + 1);
    let mut rewards: Vec<RewardFile> = Vec::with_capacity(args.rounds);
    for t in 0..=args.rounds {
        let steer = match rewards.last() {
            Some(r) => Some(
                unhex_f32(&r.steer, &format!("round-{t}/reward.json"))
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        let plan = SamplePlan {
            round: t,
            prompts: &prompts,
            samples: args.samples,
            max_tokens: args.max_tokens,
            temperature: args.temperature as f32,
            seed: args.seed,
            steer,
        };
        let pb = bar(prompts.len() * args.samples, &format!("round {t} samples"));
        let rows = ensure_samples(&engine, &dir, &plan, &pb)?;
        pb.finish_and_clear();
        if t < args.rounds {
            let name = format!("round-{}/reward.json", t + 1);
            if !dir.file(&name).exists() {
                let n_pairs = prompts.len() * args.samples * (args.samples - 1) / 2;
                let pb = bar(n_pairs, &format!("round {} labels", t + 1));
                let labels = ensure_labels(
                    &judge,
                    &constitution,
                    &dir,
                    t,
                    &prompts,
                    &rows,
                    args.samples,
                    &pb,
                )?;
                pb.finish_and_clear();
                let h = decode_h(&rows, d)?;
                let base = samples.first().unwrap_or(&rows);
                let nbar = base.iter().map(|r| r.resid_norm).sum::<f64>() / base.len() as f64;
                let prev = rewards
                    .last()
                    .map(|r| unhex_f32(&r.steer, "previous steering vector"))
                    .transpose()
                    .map_err(anyhow::Error::msg)?;
                let reward = fit_reward(
                    t + 1,
                    &labels,
                    &h,
                    args.samples,
                    &weights,
                    args.ridge,
                    args.eta,
                    nbar,
                    prev.as_deref(),
                )?;
                dir.write_json(&name, &reward)?;
            }
            rewards.push(read_json(&dir.file(&name))?);
        }
        samples.push(rows);
    }

    // Stage 4: the report, from the saved files only.
    let data = RunData {
        settings: &settings,
        seed: args.seed,
        d_model: d,
        probe: &probe,
        human: &human_stats,
        human_acts: &human_acts,
        samples: &samples,
        rewards: &rewards,
    };
    let result = analyse(&data, &m.path.display().to_string(), &model_prov.sha256)?;
    let svg = figure(&result);
    dir.write_bytes("figure.svg", svg.as_bytes())?;
    dir.write_bytes("report.html", html(&result, &svg).as_bytes())?;
    dir.write_json("result.json", &result)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        for f in &result.findings {
            println!("- {f}");
        }
        println!("report: {}", dir.file("report.html").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Activations of the held-out human pairs (`human_acts.jsonl`, one row per pair, resumable),
/// in selection order.
fn ensure_human_acts(
    engine: &Engine<'_>,
    dir: &RunDir,
    pairs: &[(usize, PreferencePair)],
) -> Result<Vec<HumanActsRow>> {
    let path = dir.file("human_acts.jsonl");
    let (mut log, done) = JsonlLog::open::<HumanActsRow>(&path)?;
    let wanted: BTreeSet<usize> = pairs.iter().map(|(i, _)| *i).collect();
    let mut have = std::collections::BTreeMap::new();
    for r in done {
        if !wanted.contains(&r.index) || have.contains_key(&r.index) {
            bail!(
                "{}: pair {} is not part of this run",
                path.display(),
                r.index
            );
        }
        have.insert(r.index, r);
    }
    let pb = bar(pairs.len(), "human pair activations");
    pb.inc(have.len() as u64);
    for (i, p) in pairs {
        if have.contains_key(i) {
            continue;
        }
        let ids = engine.prompt_ids(&p.prompt)?;
        let enc = |t: &str| engine.m.tokenizer.encode(t.trim(), false);
        let c = engine
            .features(&ids, &enc(&p.chosen))
            .with_context(|| format!("human pair {i}, chosen"))?;
        let r = engine
            .features(&ids, &enc(&p.rejected))
            .with_context(|| format!("human pair {i}, rejected"))?;
        let row = HumanActsRow {
            index: *i,
            chosen: hex_f32(&c.h),
            rejected: hex_f32(&r.h),
        };
        log.append(&row)?;
        have.insert(*i, row);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(pairs
        .iter()
        .map(|(i, _)| have.remove(i).expect("every pair was computed"))
        .collect())
}
