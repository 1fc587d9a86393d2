//! `lvh constitution list|show|analyze`: the constitution library, and the activated
//! direction of one constitution on a model (see [`crate::analyze`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Tensor;
use clap::Subcommand;
use rand::SeedableRng;

use super::gap::bootstrap_rng;
use super::judge::{JudgeModelArgs, PairSelection};
use crate::analyze::forward::{generation_response_diff, judge_pair_under, judge_response_diff};
use crate::analyze::{self, report, Analysis, PairRow};
use crate::audit::geometry::value_geometry;
use crate::cmd::audit::{activated_shift, judge_prompt_acts, mean_shift};
use crate::constitution::{Constitution, ConstitutionSummary};
use crate::datasets::{ContrastArgs, PreferenceArgs, PreferencePair};
use crate::geometry::export::{safetensors_bytes, ControlVector};
use crate::geometry::extract::progress_bar;
use crate::geometry::refusal::ablate_everywhere;
use crate::judge::stats::{s_c, win, DEFAULT_RESAMPLES};
use crate::judge::Judge;
use crate::run_dir::{FileProvenance, Manifest, RunDir};

#[derive(Debug, Subcommand)]
pub enum ConstitutionCommand {
    /// List the bundled constitutions (name, description, adversarial flag).
    List {
        /// Print JSON: `[{"name", "description", "adversarial"}]`.
        #[arg(long)]
        json: bool,
    },
    /// Print one constitution (a bundled name or a file path) as validated TOML.
    Show {
        /// Bundled name or path (`.toml`, or a Constitutional-AI `.jsonl` principle file).
        constitution: String,
    },
    /// The constitution-activated direction on a model, per layer: Δ_C against the neutral
    /// constitution, the ridge readouts ĵ_C and ĝ, their cosines with the value direction, and
    /// the ablation test of THEORY T7b. Δ_C itself is saved for every layer
    /// (`delta_c.safetensors`, and `delta_c.gguf` as a llama.cpp control vector).
    Analyze(Box<AnalyzeArgs>),
}

/// Arguments of `lvh constitution analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Bundled name or path (`.toml`, or a Constitutional-AI `.jsonl` principle file).
    pub constitution: String,
    #[command(flatten)]
    pub model: JudgeModelArgs,
    #[command(flatten)]
    pub pairs: PreferenceArgs,
    #[command(flatten)]
    pub contrast: ContrastArgs,
    /// Layers to report: `all`, or a list like `0,4,8-12` (default: every ⌈L/12⌉-th layer, the
    /// last and the best layer). The value geometry and Δ_C are computed at every layer anyway.
    #[arg(long)]
    pub layers: Option<String>,
    /// Rank p of the value subspace (PCA of paired contrast differences).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub top_p: u64,
    /// Seed of the pair subsample and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Preference pairs used (a seeded subsample; the file's size if smaller).
    #[arg(long, default_value_t = analyze::DEFAULT_LIMIT, value_parser = parse_limit)]
    pub limit: usize,
    /// Contrast items used for the value geometry (a seeded subsample keeping twins together;
    /// 0: all).
    #[arg(long, default_value_t = analyze::DEFAULT_CONTRAST_LIMIT)]
    pub contrast_limit: usize,
    /// Relative ridge strength of ĵ_C and ĝ (`λ = ridge · ‖X‖²_F / m`).
    #[arg(long, default_value_t = analyze::DEFAULT_RIDGE, value_parser = parse_ridge)]
    pub ridge: f64,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = DEFAULT_RESAMPLES, value_parser = parse_resamples)]
    pub resamples: usize,
    /// Run folder (default: `runs/analyze/<constitution name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 3 => Ok(n),
        _ => Err(format!("expected a number of pairs ≥ 3, got `{s}`")),
    }
}

fn parse_ridge(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("expected a finite ridge strength > 0, got `{s}`")),
    }
}

fn parse_resamples(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        _ => Err(format!(
            "expected at least 2 bootstrap resamples, got `{s}`"
        )),
    }
}

impl ConstitutionCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            ConstitutionCommand::List { json } => {
                let rows: Vec<ConstitutionSummary> = Constitution::bundled()?
                    .iter()
                    .map(Constitution::summary)
                    .collect();
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print!("{}", render_table(&rows));
                }
            }
            ConstitutionCommand::Show { constitution } => {
                let c = Constitution::resolve(&constitution)?;
                print!("{c}");
            }
            ConstitutionCommand::Analyze(args) => return run_analyze(*args),
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A plain-text table: name, adversarial flag, description.
pub fn render_table(rows: &[ConstitutionSummary]) -> String {
    let w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let mut out = format!("{:<w$}  {:<11}  DESCRIPTION\n", "NAME", "ADVERSARIAL");
    for r in rows {
        let flag = if r.adversarial { "yes" } else { "no" };
        out.push_str(&format!(
            "{:<w$}  {:<11}  {}\n",
            r.name, flag, r.description
        ));
    }
    out
}

/// Runs `lvh constitution analyze`.
///
/// # Errors
/// Bad constitution, data or model; a run folder of another run; forward-pass errors naming the
/// pair.
/// Saves `Δ_C,ℓ` (activation units, resid_post at the judge's answer position) for every layer:
/// `delta_c.safetensors` (tensors `delta_c.ℓ`, with the constitution, the baseline and the site
/// in the metadata) and `delta_c.gguf`, a llama.cpp control vector of the layers ℓ ≥ 1, which
/// adds the constitution's shift to generation (`--control-vector-scaled delta_c.gguf:S`).
fn write_shift_vectors(
    dir: &RunDir,
    constitution: &str,
    neutral: &str,
    cfg: &lm_runtime::config::ModelConfig,
    acts: &[Vec<f32>],
    base: &[Vec<f32>],
) -> Result<()> {
    let d = cfg.d_model;
    let shifts: Vec<Vec<f32>> = acts
        .iter()
        .zip(base)
        .map(|(a, b)| mean_shift(a, b, d).iter().map(|&x| x as f32).collect())
        .collect();
    let vectors: Vec<(String, Vec<f32>)> = shifts
        .iter()
        .enumerate()
        .map(|(l, v)| (format!("delta_c.{l}"), v.clone()))
        .collect();
    let meta = [
        ("constitution", constitution),
        ("baseline", neutral),
        ("hook", "blocks.*.hook_resid_post"),
        ("position", "the judge's answer position"),
        (
            "definition",
            "mean over pairs of h(judge prompt under C) - h(same under the baseline)",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    dir.write_bytes(
        "delta_c.safetensors",
        &safetensors_bytes(&vectors, Some(meta))?,
    )?;
    let layers: std::collections::BTreeMap<usize, Vec<f32>> =
        shifts.into_iter().enumerate().skip(1).collect();
    if layers.is_empty() {
        return Ok(()); // a one-layer model has no layer a control vector can address
    }
    ControlVector {
        model_hint: cfg.arch.to_string(),
        layers,
    }
    .write(&dir.file("delta_c.gguf"))
}

pub fn run_analyze(args: AnalyzeArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let c = Constitution::resolve(&args.constitution)?;
    let neutral = Constitution::bundled()?
        .into_iter()
        .find(|c| c.neutral)
        .map_or_else(Constitution::neutral_baseline, Ok)?;
    let n_file = args.pairs.load()?.len();
    anyhow::ensure!(
        n_file >= 3,
        "the preference set has {n_file} pairs; need at least 3"
    );
    let select = PairSelection {
        pairs: args.pairs.clone(),
        sample: Some(args.limit.min(n_file)),
        seed: args.seed,
    };
    let (pairs, pairs_prov) = select.load()?;
    let contrast = analyze::twin_subsample(
        args.contrast.load()?,
        args.contrast_limit,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed),
    );
    let n_contrast = contrast.len();
    let contrast_prov = match &args.contrast.contrast {
        Some(p) => FileProvenance::of(p)?,
        None => FileProvenance::bundled(
            "contrast.jsonl",
            crate::datasets::BUNDLED_CONTRAST_JSONL.as_bytes(),
        ),
    };
    let m = args.model.load()?;
    let cfg = m.model.config().clone();
    let (n_layers, d) = (cfg.n_layers, cfg.d_model);
    let model_prov = FileProvenance::of(&m.path)?;
    let top_p = args.top_p as usize;
    let mut manifest = Manifest::new(
        "constitution analyze",
        serde_json::json!({
            "constitution": {"name": c.name, "toml": c.to_string()},
            "neutral": neutral.name,
            "pairs": pairs.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            "layers": args.layers,
            "top_p": top_p,
            "ridge": args.ridge,
            "resamples": args.resamples,
            "contrast_limit": args.contrast_limit,
            "answer_prefix": args.model.answer_prefix,
            "weights": format!("{:?}", args.model.weights),
            "hook": "blocks.*.hook_resid_post",
        }),
    );
    manifest.seed = Some(args.seed);
    manifest.model = Some(model_prov.clone());
    manifest.data = vec![pairs_prov, contrast_prov];
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/analyze").join(&c.name));
    let dir = RunDir::open(&out, &manifest)?;

    // 1. Value geometry: v_ℓ and the top-p subspace at every layer, the best layer on dev.
    let mut stages: Vec<(String, f64)> = Vec::new();
    let mut lap = started;
    let mut stage = |name: &str| {
        stages.push((name.to_owned(), lap.elapsed().as_secs_f64()));
        lap = Instant::now();
    };
    stage("load");
    let pb = progress_bar(n_contrast as u64, "value geometry");
    let geometry = value_geometry(&m, contrast, top_p, args.seed, &pb)?;
    pb.finish_and_clear();
    stage("value geometry");
    let layers = analyze::parse_layers(args.layers.as_deref(), n_layers, geometry.best_layer)
        .map_err(anyhow::Error::msg)?;

    // 2. Per pair: S_C normally and with v ablated, the neutral judge, generation scores and
    //    the response activation differences.
    let judge_cfg = args.model.config();
    let judge = Judge::new(&m.model, &m.format, &m.tokenizer, &judge_cfg)?;
    let v = geometry.directions[geometry.best_layer].to_f32();
    let ablate = ablate_everywhere(n_layers, &Tensor::from_slice(&v, d, m.model.device())?)?;
    let (cw, nw) = (c.normalized_weights(), neutral.normalized_weights());
    let mut rows = Vec::with_capacity(pairs.len());
    let mut judge_rows = vec![vec![f64::NAN; pairs.len() * d]; layers.len()];
    let mut gen_rows = vec![vec![f64::NAN; pairs.len() * d]; layers.len()];
    let pb = progress_bar(pairs.len() as u64, "judge, ablate, read");
    for (k, (i, p)) in pairs.iter().enumerate() {
        let ctx = || format!("pair {i}");
        let under = |c: &Constitution, w: &[f64], iv| -> Result<f64> {
            let sc = judge_pair_under(&m.model, judge.prompter(), judge_cfg.reuse, c, p, iv)?;
            let (ab, ba) = sc.aggregate(w);
            Ok(s_c(ab, ba))
        };
        let s = under(&c, &cw, &[]).with_context(ctx)?;
        let s_abl = under(&c, &cw, &ablate).with_context(ctx)?;
        let s_neutral = under(&neutral, &nw, &[]).with_context(ctx)?;
        let g = judge
            .generation_scores(*i, &p.prompt, [&p.chosen, &p.rejected])
            .with_context(ctx)?;
        if let Some(rj) =
            judge_response_diff(&m, judge.prompter(), &c, p, &layers).with_context(ctx)?
        {
            for (l, row) in rj.iter().enumerate() {
                judge_rows[l][k * d..(k + 1) * d].copy_from_slice(row);
            }
        }
        if let Some(rg) = generation_response_diff(&m, p, &layers).with_context(ctx)? {
            for (l, row) in rg.iter().enumerate() {
                gen_rows[l][k * d..(k + 1) * d].copy_from_slice(row);
            }
        }
        rows.push(PairRow {
            index: *i,
            s_c: s,
            s_c_ablated: s_abl,
            s_neutral,
            gen_diff: g[0] - g[1],
        });
        pb.inc(1);
    }
    pb.finish_and_clear();

    stage("judge, ablate, read responses");
    // 3. Δ_C at the answer position (the audit's measurement), every layer.
    let refs: Vec<&PreferencePair> = pairs.iter().map(|(_, p)| p).collect();
    let pb = progress_bar(2 * refs.len() as u64, "activated shift");
    let acts = judge_prompt_acts(&m, &judge, &c, &refs, &pb)?;
    let base = judge_prompt_acts(&m, &judge, &neutral, &refs, &pb)?;
    pb.finish_and_clear();
    let shift = activated_shift(&geometry, &acts, &base, d);
    write_shift_vectors(&dir, &c.name, &neutral.name, &cfg, &acts, &base)?;
    stage("activated shift");

    // 4. Readouts, ablation test, report.
    let col = |f: fn(&PairRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let (sc, gd) = (col(|r| r.s_c), col(|r| r.gen_diff));
    let per_layer = analyze::per_layer(
        &geometry,
        &layers,
        &shift,
        &judge_rows,
        &gen_rows,
        &sc,
        &gd,
        d,
        args.ridge,
    )?;
    let ablation = analyze::ablation_test(
        geometry.best_layer,
        &sc,
        &col(|r| r.s_c_ablated),
        args.resamples,
        &mut bootstrap_rng(args.seed),
    );
    stage("readouts and bootstrap");
    let mean_win = |v: &[f64]| v.iter().map(|&x| win(x)).sum::<f64>() / v.len() as f64;
    let mut result = Analysis {
        constitution: c.name.clone(),
        neutral: neutral.name.clone(),
        labelled_adversarial: c.adversarial,
        model: m.path.display().to_string(),
        model_sha256: model_prov.sha256,
        n_pairs: pairs.len(),
        n_contrast,
        seed: args.seed,
        top_p,
        ridge: args.ridge,
        best_layer: geometry.best_layer,
        n_layers,
        layers: per_layer,
        p_neutral: mean_win(&col(|r| r.s_neutral)),
        p_gen: mean_win(&gd),
        ablation,
        findings: Vec::new(),
        pairs: rows,
        wall_seconds: 0.0,
        stage_seconds: stages,
    };
    result.findings = report::findings(&result);
    result.wall_seconds = started.elapsed().as_secs_f64();
    dir.write_json("analysis.json", &result)?;
    dir.write_json("pairs.json", &result.pairs)?;
    for (name, svg) in report::figures(&result) {
        dir.write_bytes(&format!("{name}.svg"), svg.as_bytes())?;
    }
    dir.write_bytes("report.html", report::html(&result).as_bytes())?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", report::text(&result));
        println!("\nreport: {}", dir.file("report.html").display());
    }
    Ok(ExitCode::SUCCESS)
}
