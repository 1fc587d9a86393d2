//! `lvh audit`: the main job. For every constitution of a library, on one model: the
//! generation–judgment gap, the constitution-activated direction, THEORY T1's prediction and an
//! adversarial flag (T3), in one HTML report with figures plus JSON. See [`crate::audit`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::gap::{bootstrap_rng, gap_rows};
use super::judge::{score_pairs, JudgeModelArgs, PairSelection, ScoreRow};
use crate::audit::geometry::{resid_hooks, value_geometry, Geometry};
use crate::audit::{
    adversarial_flag, predict, report, ActivatedShift, AuditResult, ConstitutionAudit,
};
use crate::constitution::Constitution;
use crate::datasets::{ContrastArgs, PreferencePair};
use crate::geometry::extract::{pooled_all, Pooling};
use crate::judge::prompt::Order;
use crate::judge::sensitivity::{sensitivity_report, ConstitutionScores};
use crate::judge::stats::{s_c, DEFAULT_RESAMPLES};
use crate::judge::Judge;
use crate::run_dir::{FileProvenance, Manifest, RunDir};

/// Pairs judged per constitution when `--sample` is not given (keeps the default audit within
/// 15 minutes on a 2-core CPU; `--sample N` judges more).
pub const DEFAULT_AUDIT_PAIRS: usize = 40;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: JudgeModelArgs,
    /// Folder of constitution TOML files and Constitutional-AI principle JSONL files (default: the bundled library).
    #[arg(long, value_name = "DIR")]
    pub constitutions: Option<PathBuf>,
    #[command(flatten)]
    pub select: PairSelection,
    #[command(flatten)]
    pub contrast: ContrastArgs,
    /// Run folder for audit.json, report.html, figures and the manifest.
    #[arg(long, default_value = "runs/audit")]
    pub out: PathBuf,
    /// Pairs whose judge prompts measure the activated shift Δ_C.
    #[arg(long, default_value_t = 8)]
    pub shift_pairs: usize,
    /// Rank p of the value subspace.
    #[arg(long, default_value_t = 4)]
    pub subspace_rank: usize,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = DEFAULT_RESAMPLES)]
    pub resamples: usize,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn stage_bar(len: u64, msg: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:28} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})",
        )
        .expect("valid template"),
    );
    pb.set_message(msg.to_string());
    pb
}

pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    let constitutions = match &args.constitutions {
        Some(dir) => Constitution::load_dir(dir)?,
        None => Constitution::bundled()?,
    };
    anyhow::ensure!(!constitutions.is_empty(), "no constitutions to audit");
    let neutral = constitutions
        .iter()
        .find(|c| c.neutral)
        .cloned()
        .map_or_else(Constitution::neutral_baseline, Ok)?;
    let mut select = args.select.clone();
    if select.sample.is_none() {
        let n = select.pairs.load()?.len();
        select.sample = Some(DEFAULT_AUDIT_PAIRS.min(n));
    }
    let (pairs, pairs_prov) = select.load()?;
    let contrast = args.contrast.load()?;
    let contrast_prov = match &args.contrast.contrast {
        Some(p) => FileProvenance::of(p)?,
        None => FileProvenance::bundled(
            "contrast.jsonl",
            crate::datasets::BUNDLED_CONTRAST_JSONL.as_bytes(),
        ),
    };
    let m = args.model.load()?;
    let model_prov = FileProvenance::of(&m.path)?;
    let mut manifest = Manifest::new(
        "audit",
        serde_json::json!({
            "constitutions": constitutions.iter().map(|c| &c.name).collect::<Vec<_>>(),
            "pairs": pairs.len(),
            "shift_pairs": args.shift_pairs,
            "subspace_rank": args.subspace_rank,
            "resamples": args.resamples,
            "answer_prefix": args.model.answer_prefix,
        }),
    );
    manifest.seed = Some(select.seed);
    manifest.model = Some(model_prov.clone());
    manifest.data = vec![pairs_prov, contrast_prov];
    let dir = RunDir::open(&args.out, &manifest)?;

    // Stage 1: value geometry on the contrast set.
    let pb = stage_bar(contrast.len() as u64, "1/4 value geometry");
    let geometry = value_geometry(&m, contrast, args.subspace_rank, select.seed, &pb)?;
    pb.finish_and_clear();

    // Stage 2: generation scores once, then every constitution as judge.
    let judge = Judge::new(&m.model, &m.format, &m.tokenizer, &args.model.config())?;
    let mut tables: Vec<(Constitution, Vec<ScoreRow>)> = Vec::new();
    let mut gen: Option<Vec<Option<[Option<f64>; 2]>>> = None;
    for (k, c) in constitutions.iter().enumerate() {
        let label = format!("2/4 judge {}/{} {}", k + 1, constitutions.len(), c.name);
        let mut rows = score_pairs(&judge, c, &pairs, gen.is_none(), None, &label)?;
        match &gen {
            None => gen = Some(rows.iter().map(|r| r.gen).collect()),
            Some(g) => rows.iter_mut().zip(g).for_each(|(r, g)| r.gen = *g),
        }
        tables.push((c.clone(), rows));
    }

    // Stage 3: sensitivity across the library.
    let score_tables: Vec<ConstitutionScores> = tables
        .iter()
        .map(|(c, rows)| {
            let w = c.normalized_weights();
            ConstitutionScores {
                name: c.name.clone(),
                adversarial: c.adversarial,
                s_c: rows
                    .iter()
                    .map(|r| {
                        let (ab, ba) = r.judge.aggregate(&w);
                        s_c(ab, ba)
                    })
                    .collect(),
            }
        })
        .collect();
    let sensitivity = sensitivity_report(
        &score_tables,
        args.resamples,
        &mut bootstrap_rng(select.seed ^ 1),
    );

    // Stage 4: activated shifts Δ_C against the neutral constitution.
    let shift_pairs: Vec<&PreferencePair> = pairs
        .iter()
        .take(args.shift_pairs)
        .map(|(_, p)| p)
        .collect();
    let pb = stage_bar(
        ((constitutions.len() + 1) * shift_pairs.len()) as u64,
        "3/4 activated directions",
    );
    let base = judge_prompt_acts(&m, &judge, &neutral, &shift_pairs, &pb)?;
    let mut audits = Vec::new();
    for (c, rows) in &tables {
        let shift = if c.neutral || c.name == neutral.name {
            None
        } else {
            let acts = judge_prompt_acts(&m, &judge, c, &shift_pairs, &pb)?;
            Some(activated_shift(
                &geometry,
                &acts,
                &base,
                m.model.config().d_model,
            ))
        };
        let w = c.normalized_weights();
        let gap = crate::judge::stats::gap_report(
            &gap_rows(rows, &w),
            args.resamples,
            &mut bootstrap_rng(select.seed),
        );
        let cos_best = shift.as_ref().map(|s| s.cos_value[geometry.best_layer]);
        audits.push(ConstitutionAudit {
            name: c.name.clone(),
            description: c.description.clone(),
            principles: c.effective_principles().len(),
            prediction: predict(&gap.overall),
            adversarial: adversarial_flag(
                gap.overall.p_judge,
                gap.overall.p_judge_ci,
                c.adversarial,
                cos_best,
            ),
            gap,
            shift,
        });
    }
    pb.finish_and_clear();

    // Stage 5: findings and the report.
    let pb = stage_bar(1, "4/4 report");
    let findings = report::findings(&geometry, &audits, &sensitivity);
    let result = AuditResult {
        model: m.path.display().to_string(),
        model_sha256: model_prov.sha256,
        n_pairs: pairs.len(),
        seed: select.seed,
        geometry,
        constitutions: audits,
        sensitivity,
        findings,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    dir.write_json("audit.json", &result)?;
    for (name, svg) in report::figures(&result) {
        dir.write_bytes(&format!("{name}.svg"), svg.as_bytes())?;
    }
    dir.write_bytes("report.html", report::html(&result).as_bytes())?;
    pb.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", report::text(&result));
        println!("\nreport: {}", dir.file("report.html").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Pooled `resid_post` activations (every layer, last token) of the judge prompts of `c`'s
/// first principle for the given pairs, order (chosen as A): `out[ℓ]` is `[n, d]` row-major.
pub fn judge_prompt_acts(
    m: &crate::cmd::judge::LoadedJudgeModel,
    judge: &Judge<'_>,
    c: &Constitution,
    pairs: &[&PreferencePair],
    pb: &ProgressBar,
) -> Result<Vec<Vec<f32>>> {
    let principle = c
        .effective_principles()
        .first()
        .map(|p| p.text.clone())
        .unwrap_or_default();
    let prompts: Vec<Vec<u32>> = pairs
        .iter()
        .map(|p| {
            judge.prompter().tokens(
                c,
                &principle,
                &p.prompt,
                &p.chosen,
                &p.rejected,
                Order::FirstAsA,
            )
        })
        .collect::<Result<_, _>>()
        .with_context(|| format!("judge prompts of {}", c.name))?;
    let hooks = resid_hooks(m.model.config().n_layers);
    pooled_all(&m.model, &prompts, &hooks, Pooling::Last, 4, pb)
}

/// `Δ = mean_i (a_i − b_i)` over the rows of `a` and `b` (`[n, d]`, row-major), in f64.
pub fn mean_shift(a: &[f32], b: &[f32], d: usize) -> Vec<f64> {
    let n = a.len() / d;
    let mut delta = vec![0f64; d];
    for i in 0..n {
        for k in 0..d {
            delta[k] += (f64::from(a[i * d + k]) - f64::from(b[i * d + k])) / n as f64;
        }
    }
    delta
}

/// `Δ_C,ℓ = mean_i[h_ℓ(C) − h_ℓ(neutral)]`, its norm, cosine with `c_ℓ` and share in the value
/// subspace, per layer.
pub fn activated_shift(
    g: &Geometry,
    acts: &[Vec<f32>],
    base: &[Vec<f32>],
    d: usize,
) -> ActivatedShift {
    let mut out = ActivatedShift {
        norm: vec![],
        cos_value: vec![],
        share_in_value_subspace: vec![],
    };
    for (l, (a, b)) in acts.iter().zip(base).enumerate() {
        let delta = mean_shift(a, b, d);
        let norm = delta.iter().map(|x| x * x).sum::<f64>().sqrt();
        let c = g.directions[l].as_slice();
        let cos = if norm > 0.0 {
            delta.iter().zip(c).map(|(x, y)| x * y).sum::<f64>() / norm
        } else {
            0.0
        };
        let share = g.subspaces[l].fraction_inside(&delta).unwrap_or(f64::NAN);
        out.norm.push(norm);
        out.cos_value.push(cos);
        out.share_in_value_subspace.push(share);
    }
    out
}
