//! `lvh judge`: AI preference labels under a constitution (MEASURE §4), as TRL-style JSONL
//! `{prompt, chosen, rejected, p_first, score, position_bias}`.
//!
//! Each input pair `(first, second) = (chosen, rejected)` of the file is judged in both orders
//! under every principle; `score = S_C` with the first response as `y1`,
//! `p_first = σ(S_C)` is the soft label that the first response wins, and `chosen` /
//! `rejected` are written as the judge decided (the first wins ties). Rows carry the input
//! `index` and the per-principle order scores. The output is a resumable log: a killed run,
//! started again with the same arguments, continues after the last finished row; a manifest
//! `<out>.manifest.json` records model, data, constitution and settings and refuses a resume
//! with different ones.
//!
//! With `--endpoint URL` the log-probabilities come from an OpenAI-compatible server
//! (llama.cpp, vLLM) instead of the local weights ([`JudgeSource`]). The judge prompt is the
//! same text either way — `--model`'s chat template around the constitution's judge prompt,
//! then the answer prefix — tokenized by `--model`'s tokenizer and sent as token ids, so the
//! server scores exactly the tokens the local runtime would; `log p(A)` and `log p(B)` are each
//! scored as one-token continuations, exact whatever the server's top-k. The server must serve
//! the same model: its `/tokenize` is compared with the local tokenizer on a probe first. A
//! `/v1/completions` client cannot reach the server's own chat template, which is why a local
//! GGUF (tokenizer and template only, no weights) is always needed.
//!
//! This module also holds what `lvh gap` and `lvh sensitivity` share: model and pair
//! selection arguments, the judge source and the resumable per-pair scoring loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::run::{EndpointArgs, Prompting, Weights};
use crate::constitution::Constitution;
use crate::datasets::{PairKind, PreferenceArgs, PreferencePair, BUNDLED_PREFERENCES_JSONL};
use crate::judge::prefix::PrefixReuse;
use crate::judge::stats::{position_bias, s_c, sigmoid};
use crate::judge::{Judge, JudgeConfig, PairScores, ANSWER_PREFIX};
use crate::remote::{Client, RemoteBackend};
use crate::run_dir::{read_json, write_atomic, FileProvenance, JsonlLog, Manifest};

/// The judging model and how it is run.
#[derive(Debug, Clone, clap::Args)]
pub struct JudgeModelArgs {
    /// GGUF model file (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight storage. f32 (dequantized once) by default: judging is prefill-bound and f32
    /// GEMM is about 5× faster than candle's Q4_1 dot products on a CPU.
    #[arg(long, value_enum, default_value_t = Weights::F32)]
    pub weights: Weights,
    /// Text after the assistant header; the next token must be the option letter.
    #[arg(long, default_value = ANSWER_PREFIX)]
    pub answer_prefix: String,
    /// Compute every judge prompt from scratch instead of sharing prefixes through the KV cache
    /// (same scores up to float rounding; for benchmarks).
    #[arg(long)]
    pub no_prefix_reuse: bool,
    /// Sequences per padded batch when sharing prefixes.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch: u64,
}

/// A loaded model with its tokenizer and prompt format (the same loader as `lvh run`).
pub type LoadedJudgeModel = super::run::Loaded;

impl JudgeModelArgs {
    /// Resolves and loads the model.
    ///
    /// # Errors
    /// Fetch, read and parse errors naming the file.
    pub fn load(&self) -> Result<LoadedJudgeModel> {
        crate::geometry::load_model(self.model.clone(), self.weights)
    }

    /// The judge settings.
    pub fn config(&self) -> JudgeConfig {
        JudgeConfig {
            answer_prefix: self.answer_prefix.clone(),
            reuse: if self.no_prefix_reuse {
                PrefixReuse::Off
            } else {
                PrefixReuse::On {
                    max_batch: self.max_batch as usize,
                }
            },
        }
    }
}

/// Where the judge runs: the local weights, or a server with the local GGUF's tokenizer and
/// chat template rendering the prompts.
#[derive(Debug)]
pub enum JudgeSource {
    /// The local runtime.
    Local(LoadedJudgeModel),
    /// A model server.
    Remote {
        /// Tokenizer and chat template of the served model.
        prompting: Prompting,
        /// The server.
        client: Client,
    },
}

impl JudgeSource {
    /// Loads the local model, or with `--endpoint` only its tokenizer and template, and checks
    /// that the server tokenizes a rendered judge prompt as the local tokenizer does.
    ///
    /// # Errors
    /// Fetch, read and parse errors naming the file; `--no-prefix-reuse` with `--endpoint`;
    /// an unreachable server or one serving another tokenizer.
    pub fn load(model: &JudgeModelArgs, endpoint: &EndpointArgs) -> Result<Self> {
        let Some(client) = endpoint.client()? else {
            return Ok(Self::Local(model.load()?));
        };
        if model.no_prefix_reuse {
            bail!(
                "--no-prefix-reuse applies to the local model; with --endpoint the server's \
                 prompt cache decides what is recomputed"
            );
        }
        let prompting = Prompting::load(model.model.as_deref())?;
        prompting.check_server(&client, &format!("{}A", model.answer_prefix))?;
        Ok(Self::Remote { prompting, client })
    }

    /// The GGUF file whose tokenizer and template render the prompts (and, locally, whose
    /// weights run).
    pub fn path(&self) -> &Path {
        match self {
            Self::Local(m) => &m.path,
            Self::Remote { prompting, .. } => &prompting.path,
        }
    }

    /// The server, when remote.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Self::Local(_) => None,
            Self::Remote { client, .. } => Some(client.endpoint()),
        }
    }

    /// The judge on this source.
    ///
    /// # Errors
    /// As [`Judge::new`].
    pub fn judge(&self, args: &JudgeModelArgs) -> Result<Judge<'_>> {
        let config = args.config();
        Ok(match self {
            Self::Local(m) => Judge::new(&m.model, &m.format, &m.tokenizer, &config)?,
            Self::Remote { prompting, client } => Judge::with_backend(
                Box::new(RemoteBackend::new(client)),
                &prompting.format,
                &prompting.tokenizer,
                &config.answer_prefix,
            )?,
        })
    }
}

/// Which pairs are judged.
#[derive(Debug, Clone, clap::Args)]
pub struct PairSelection {
    #[command(flatten)]
    pub pairs: PreferenceArgs,
    /// Use a seeded random subsample of this many pairs (file order kept).
    #[arg(long)]
    pub sample: Option<usize>,
    /// Seed of the subsample (and of bootstrap intervals where a command reports them).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl PairSelection {
    /// The selected pairs with their 0-based index in the input, and the data's provenance.
    ///
    /// # Errors
    /// Loader errors naming file and line; a `--sample` larger than the file.
    pub fn load(&self) -> Result<(Vec<(usize, PreferencePair)>, FileProvenance)> {
        let all = self.pairs.load()?;
        let prov = match &self.pairs.pairs {
            Some(p) => FileProvenance::of(p)?,
            None => {
                FileProvenance::bundled("preferences.jsonl", BUNDLED_PREFERENCES_JSONL.as_bytes())
            }
        };
        let n = all.len();
        let mut idx: Vec<usize> = match self.sample {
            None => (0..n).collect(),
            Some(k) if k > n => bail!("--sample {k} but the preference set has only {n} pairs"),
            Some(k) => {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rand::seq::index::sample(&mut rng, n, k).into_vec()
            }
        };
        idx.sort_unstable();
        let mut all: Vec<Option<PreferencePair>> = all.into_iter().map(Some).collect();
        Ok((
            idx.into_iter()
                .map(|i| (i, all[i].take().expect("indices are distinct")))
                .collect(),
            prov,
        ))
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(n: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} pairs  {{elapsed_precise}} (eta {{eta}})"
        ))
        .expect("valid template"),
    );
    pb
}

/// Raw scores of one pair, as saved by `lvh gap --scores` and read back on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRow {
    /// Index of the pair in the input file.
    pub index: usize,
    /// `clear` or `subtle`, when the data says.
    pub kind: Option<String>,
    /// `[s_gen(chosen), s_gen(rejected)]`; `null` for an empty response.
    pub gen: Option<[Option<f64>; 2]>,
    /// Judge scores with `y1 = chosen`.
    pub judge: PairScores,
}

/// The name of a pair kind as written in data files.
pub fn kind_name(k: PairKind) -> String {
    match k {
        PairKind::Clear => "clear",
        PairKind::Subtle => "subtle",
    }
    .to_owned()
}

/// Scores every selected pair (judge always, generation preference when `with_gen`), skipping
/// indices already in `log`'s rows and appending new rows to it. Returns rows in input order.
///
/// # Errors
/// Model errors naming the pair; log write errors.
pub fn score_pairs(
    judge: &Judge<'_>,
    constitution: &Constitution,
    pairs: &[(usize, PreferencePair)],
    with_gen: bool,
    mut log: Option<(&mut JsonlLog, Vec<ScoreRow>)>,
    label: &str,
) -> Result<Vec<ScoreRow>> {
    let mut done: BTreeMap<usize, ScoreRow> = BTreeMap::new();
    if let Some((_, rows)) = &mut log {
        for r in rows.drain(..) {
            done.insert(r.index, r);
        }
    }
    let wanted: std::collections::BTreeSet<usize> = pairs.iter().map(|(i, _)| *i).collect();
    if let Some(extra) = done.keys().find(|i| !wanted.contains(i)) {
        bail!("the saved scores hold pair {extra}, which is not in this selection");
    }
    let pb = progress(pairs.len(), label);
    pb.inc(done.len() as u64);
    for (i, p) in pairs {
        if done.contains_key(i) {
            continue;
        }
        let scores = judge
            .judge_pair(constitution, &p.prompt, &p.chosen, &p.rejected)
            .with_context(|| format!("judging pair {i}"))?;
        let gen = if with_gen {
            let g = judge
                .generation_scores(*i, &p.prompt, [&p.chosen, &p.rejected])
                .with_context(|| format!("generation scores of pair {i}"))?;
            Some(g.map(|x| x.is_finite().then_some(x)))
        } else {
            None
        };
        let row = ScoreRow {
            index: *i,
            kind: p.kind.map(kind_name),
            gen,
            judge: scores,
        };
        if let Some((l, _)) = &mut log {
            l.append(&row)?;
        }
        done.insert(*i, row);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(done.into_values().collect())
}

/// Checks a manifest beside an output file: refuses one from a different run, writes it
/// otherwise.
///
/// # Errors
/// A mismatching manifest; I/O errors naming the path.
pub fn check_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    if path.exists() {
        let old: Manifest = read_json(path)?;
        if let Some(diff) = old.mismatch(manifest) {
            bail!(
                "{} belongs to a different run (differs in: {diff}); use another output or delete it",
                path.display()
            );
        }
    }
    let mut text = serde_json::to_string_pretty(manifest)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// `<stem>.manifest.json` beside `out`.
pub fn manifest_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}.manifest.json"))
}

/// The manifest of a judging run.
///
/// # Errors
/// Hashing errors naming the file.
pub fn judge_manifest(
    command: &str,
    model: &LoadedJudgeModel,
    data: FileProvenance,
    constitutions: &[Constitution],
    args: &JudgeModelArgs,
    select: &PairSelection,
) -> Result<Manifest> {
    manifest_of(
        command,
        &model.path,
        None,
        data,
        constitutions,
        args,
        select,
    )
}

/// The manifest of a judging run on `source`; a remote run records the endpoint (and so
/// refuses to resume a local run's output, and the other way round).
///
/// # Errors
/// Hashing errors naming the file.
pub fn judge_manifest_for(
    command: &str,
    source: &JudgeSource,
    data: FileProvenance,
    constitutions: &[Constitution],
    args: &JudgeModelArgs,
    select: &PairSelection,
) -> Result<Manifest> {
    let endpoint = match source {
        JudgeSource::Local(_) => None,
        JudgeSource::Remote { client, .. } => Some(client),
    };
    manifest_of(
        command,
        source.path(),
        endpoint,
        data,
        constitutions,
        args,
        select,
    )
}

fn manifest_of(
    command: &str,
    model_path: &Path,
    endpoint: Option<&Client>,
    data: FileProvenance,
    constitutions: &[Constitution],
    args: &JudgeModelArgs,
    select: &PairSelection,
) -> Result<Manifest> {
    let mut settings = serde_json::json!({
        "constitutions": constitutions.iter().map(|c| serde_json::json!({
            "name": c.name,
            "toml": c.to_string(),
            "weights": c.normalized_weights(),
        })).collect::<Vec<_>>(),
        "answer_prefix": args.answer_prefix,
        "weights": format!("{:?}", args.weights),
        "sample": select.sample,
    });
    if let Some(c) = endpoint {
        // The weights live on the server; the local file gives the tokenizer and template.
        settings["weights"] = serde_json::json!("server");
        settings["endpoint"] = serde_json::json!(c.endpoint());
    }
    let mut m = Manifest::new(command, settings);
    m.seed = Some(select.seed);
    m.model = Some(FileProvenance::of(model_path)?);
    m.data = vec![data];
    Ok(m)
}

/// Arguments of `lvh judge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Constitution: a bundled name, a TOML file or a Constitutional-AI principles JSONL file.
    #[arg(long)]
    pub constitution: String,
    #[command(flatten)]
    pub model: JudgeModelArgs,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    #[command(flatten)]
    pub select: PairSelection,
    /// Output JSONL (resumable; `<stem>.manifest.json` is written beside it).
    #[arg(long)]
    pub out: PathBuf,
}

/// One output row: TRL/OpenRLHF preference columns plus the judge's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeRow {
    /// Index of the pair in the input file.
    pub index: usize,
    /// The prompt, as in the input.
    pub prompt: String,
    /// The response the judge prefers.
    pub chosen: String,
    /// The other response.
    pub rejected: String,
    /// `σ(S_C)`: probability that the input's first response wins.
    pub p_first: f64,
    /// `S_C` with the input's first response as `y1`.
    pub score: f64,
    /// `b_pos` (log-odds toward (A)).
    pub position_bias: f64,
    /// Per-principle order scores.
    pub principle_scores: PairScores,
}

impl JudgeRow {
    /// The row for pair `index` from its raw scores and the constitution's weights.
    pub fn new(index: usize, pair: &PreferencePair, scores: PairScores, weights: &[f64]) -> Self {
        let (ab, ba) = scores.aggregate(weights);
        let score = s_c(ab, ba);
        let (chosen, rejected) = if score >= 0.0 {
            (&pair.chosen, &pair.rejected)
        } else {
            (&pair.rejected, &pair.chosen)
        };
        Self {
            index,
            prompt: pair.prompt.clone(),
            chosen: chosen.clone(),
            rejected: rejected.clone(),
            p_first: sigmoid(score),
            score,
            position_bias: position_bias(ab, ba),
            principle_scores: scores,
        }
    }
}

/// Runs `lvh judge`.
///
/// # Errors
/// Bad constitution, data or model; a resume against a different run; I/O errors.
pub fn run(args: Args) -> Result<ExitCode> {
    let constitution = Constitution::resolve(&args.constitution)?;
    let (pairs, data) = args.select.load()?;
    let m = JudgeSource::load(&args.model, &args.endpoint)?;
    let manifest = judge_manifest_for(
        "judge",
        &m,
        data,
        std::slice::from_ref(&constitution),
        &args.model,
        &args.select,
    )?;
    check_manifest(&manifest_path(&args.out), &manifest)?;
    let judge = m.judge(&args.model)?;
    let weights = constitution.normalized_weights();
    let (mut log, done) = JsonlLog::open::<JudgeRow>(&args.out)?;
    let done: BTreeMap<usize, JudgeRow> = done.into_iter().map(|r| (r.index, r)).collect();
    let wanted: std::collections::BTreeSet<usize> = pairs.iter().map(|(i, _)| *i).collect();
    if let Some(extra) = done.keys().find(|i| !wanted.contains(i)) {
        bail!(
            "{} holds pair {extra}, which is not in this selection",
            args.out.display()
        );
    }
    let started = std::time::Instant::now();
    let pb = progress(pairs.len(), &format!("judge {}", constitution.name));
    pb.inc(done.len() as u64);
    let mut new = 0usize;
    for (i, p) in &pairs {
        if done.contains_key(i) {
            continue;
        }
        let scores = judge
            .judge_pair(&constitution, &p.prompt, &p.chosen, &p.rejected)
            .with_context(|| format!("judging pair {i}"))?;
        log.append(&JudgeRow::new(*i, p, scores, &weights))?;
        new += 1;
        pb.inc(1);
    }
    pb.finish_and_clear();
    eprintln!(
        "judged {new} pairs ({} resumed) under `{}`{} in {:.1} s -> {}",
        done.len(),
        constitution.name,
        m.endpoint().map(|e| format!(" on {e}")).unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
