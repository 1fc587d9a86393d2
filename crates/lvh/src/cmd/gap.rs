//! `lvh gap`: the generation–judgment gap `G_C = P_C − P_gen` (MEASURE §3) on preference
//! pairs, with paired bootstrap intervals, the agreement coefficients `a_gen`, `a_C`, the
//! judge's position bias and single-order accuracies, overall and per kind (clear / subtle).
//!
//! With `--scores FILE` the per-pair raw scores are kept in a resumable JSONL log (a killed run
//! continues where it stopped) with `<stem>.manifest.json` beside it.
//!
//! With `--endpoint URL` a server computes both the judge's and the generation
//! log-probabilities (see `lvh judge`); `s_gen` of a response is then scored token by token on
//! the server (forced steps on llama.cpp, which cannot score a response that splits a
//! multi-byte character across tokens: such a pair fails with the server's reason).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::judge::{
    check_manifest, judge_manifest_for, manifest_path, score_pairs, JudgeModelArgs, JudgeSource,
    PairSelection, ScoreRow,
};
use super::run::EndpointArgs;
use crate::constitution::Constitution;
use crate::datasets::PairKind;
use crate::judge::stats::{gap_report, GapReport, GapRow, GapStats, DEFAULT_RESAMPLES};
use crate::run_dir::JsonlLog;

/// Arguments of `lvh gap`.
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
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = DEFAULT_RESAMPLES)]
    pub resamples: usize,
    /// Keep per-pair raw scores in this resumable JSONL file.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Report from the rows already in `--scores` without loading the model (e.g. of a run
    /// still going or stopped early); `n_pairs` says how many were scored.
    #[arg(long, requires = "scores")]
    pub report_only: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The rows of the gap statistics from saved per-pair scores and the constitution's weights.
pub fn gap_rows(rows: &[ScoreRow], weights: &[f64]) -> Vec<GapRow> {
    rows.iter()
        .map(|r| {
            let (ab, ba) = r.judge.aggregate(weights);
            let g = r.gen.unwrap_or([None, None]);
            GapRow {
                gen: [g[0].unwrap_or(f64::NAN), g[1].unwrap_or(f64::NAN)],
                ab,
                ba,
                kind: match r.kind.as_deref() {
                    Some("clear") => Some(PairKind::Clear),
                    Some("subtle") => Some(PairKind::Subtle),
                    _ => None,
                },
            }
        })
        .collect()
}

/// Bootstrap RNG of a seed: the seed's ChaCha8 stream 1 (stream 0 draws the subsample).
pub fn bootstrap_rng(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng
}

/// Runs `lvh gap`.
///
/// # Errors
/// Bad constitution, data or model; a resume against a different run; I/O errors.
pub fn run(args: Args) -> Result<ExitCode> {
    let constitution = Constitution::resolve(&args.constitution)?;
    if args.report_only {
        return report_only(&args, &constitution);
    }
    let (pairs, data) = args.select.load()?;
    let m = JudgeSource::load(&args.model, &args.endpoint)?;
    let judge = m.judge(&args.model)?;
    let started = std::time::Instant::now();
    let label = format!("gap {}", constitution.name);
    let rows = match &args.scores {
        Some(path) => {
            let manifest = judge_manifest_for(
                "gap",
                &m,
                data,
                std::slice::from_ref(&constitution),
                &args.model,
                &args.select,
            )?;
            check_manifest(&manifest_path(path), &manifest)?;
            let (mut log, done) = JsonlLog::open::<ScoreRow>(path)?;
            score_pairs(
                &judge,
                &constitution,
                &pairs,
                true,
                Some((&mut log, done)),
                &label,
            )?
        }
        None => score_pairs(&judge, &constitution, &pairs, true, None, &label)?,
    };
    let weights = constitution.normalized_weights();
    let report = gap_report(
        &gap_rows(&rows, &weights),
        args.resamples,
        &mut bootstrap_rng(args.select.seed),
    );
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let mut obj = serde_json::json!({
            "constitution": constitution.name,
            "principles": constitution.effective_principles().len(),
            "weights": weights,
            "model": m.path(),
            "seed": args.select.seed,
            "resamples": args.resamples,
            "wall_seconds": secs,
        });
        if let Some(e) = m.endpoint() {
            obj["endpoint"] = serde_json::json!(e);
        }
        // The documented top-level keys (p_gen, p_judge, gap, …) come from the report itself.
        if let (Some(o), serde_json::Value::Object(r)) =
            (obj.as_object_mut(), serde_json::to_value(&report)?)
        {
            o.extend(r);
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        print!("{}", render_text(&constitution, &report, m.path(), secs));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--report-only`: the statistics of the rows saved so far, no model.
fn report_only(args: &Args, constitution: &Constitution) -> Result<ExitCode> {
    let path = args.scores.as_deref().expect("clap requires --scores");
    let mpath = manifest_path(path);
    let manifest: crate::run_dir::Manifest = crate::run_dir::read_json(&mpath)?;
    let saved = manifest.settings["constitutions"][0]["name"].as_str();
    if saved != Some(constitution.name.as_str()) {
        anyhow::bail!(
            "{} was scored under {saved:?}, not `{}`",
            path.display(),
            constitution.name
        );
    }
    let (_, rows) = JsonlLog::open::<ScoreRow>(path)?;
    let weights = constitution.normalized_weights();
    let report = gap_report(
        &gap_rows(&rows, &weights),
        args.resamples,
        &mut bootstrap_rng(args.select.seed),
    );
    let model = manifest.model.map(|m| m.path).unwrap_or_default();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("constitution".into(), constitution.name.clone().into());
            o.insert("model".into(), model.into());
            o.insert("scores".into(), path.display().to_string().into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!(
            "{}",
            render_text(constitution, &report, std::path::Path::new(&model), 0.0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_ci(x: f64, ci: crate::judge::stats::Interval) -> String {
    format!("{x:+.3} [{:+.3}, {:+.3}]", ci.lo, ci.hi)
}

fn render_stats(s: &GapStats, indent: &str) -> String {
    let pb = &s.position_bias;
    format!(
        "{indent}pairs {}\n\
         {indent}P_gen {}   a_gen {}\n\
         {indent}P_C   {}   a_C   {}\n\
         {indent}gap G_C = P_C − P_gen {}\n\
         {indent}position bias: mean b_pos {} (log-odds toward (A)); the same letter wins both orders in {:.1}% of pairs ((A) both: {:.1}%)\n\
         {indent}single order: chosen as (A) {:.3}, chosen as (B) {:.3}; mean soft label σ(S_C) {:.3}\n",
        s.n_pairs,
        fmt_ci(s.p_gen, s.p_gen_ci),
        fmt_ci(s.a_gen, s.a_gen_ci),
        fmt_ci(s.p_judge, s.p_judge_ci),
        fmt_ci(s.a_judge, s.a_judge_ci),
        fmt_ci(s.gap, s.gap_ci),
        fmt_ci(pb.mean, pb.mean_ci),
        100.0 * pb.same_letter_share,
        100.0 * pb.a_both_share,
        s.single_order.chosen_as_a,
        s.single_order.chosen_as_b,
        s.mean_soft_label,
    )
}

/// The human-readable report.
pub fn render_text(
    c: &Constitution,
    report: &GapReport,
    model: &std::path::Path,
    secs: f64,
) -> String {
    let mut s = format!(
        "generation–judgment gap under `{}` ({} principle(s)), model {} ({secs:.1} s)\n",
        c.name,
        c.effective_principles().len(),
        model.display()
    );
    s.push_str(&render_stats(&report.overall, "  "));
    for (kind, st) in &report.by_kind {
        s.push_str(&format!("  {kind}:\n"));
        s.push_str(&render_stats(st, "    "));
    }
    s
}
