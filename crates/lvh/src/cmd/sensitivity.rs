//! `lvh sensitivity`: does the judge's decision depend on the constitution? The same pairs are
//! judged under each constitution; the report gives `P_C` per constitution, and per pair of
//! constitutions the correlation and sign agreement of `S_C` and the paired difference of
//! `P_C` with its bootstrap interval. The verdict comes first, in words.

use std::process::ExitCode;

use anyhow::{bail, Result};

use super::gap::bootstrap_rng;
use super::judge::{score_pairs, JudgeModelArgs, JudgeSource, PairSelection};
use super::run::EndpointArgs;
use crate::constitution::Constitution;
use crate::judge::sensitivity::{sensitivity_report, ConstitutionScores, SensitivityReport};
use crate::judge::stats::{s_c, DEFAULT_RESAMPLES};

/// Arguments of `lvh sensitivity`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Two or more constitutions, comma-separated (bundled names or files).
    #[arg(long, value_delimiter = ',', required = true)]
    pub constitutions: Vec<String>,
    #[command(flatten)]
    pub model: JudgeModelArgs,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    #[command(flatten)]
    pub select: PairSelection,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = DEFAULT_RESAMPLES)]
    pub resamples: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `lvh sensitivity`.
///
/// # Errors
/// Fewer than two constitutions; bad constitution, data or model.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.constitutions.len() < 2 {
        bail!("--constitutions needs at least two, comma-separated");
    }
    let cs = args
        .constitutions
        .iter()
        .map(|c| Constitution::resolve(c))
        .collect::<Result<Vec<_>, _>>()?;
    let (pairs, _) = args.select.load()?;
    let m = JudgeSource::load(&args.model, &args.endpoint)?;
    let judge = m.judge(&args.model)?;
    let started = std::time::Instant::now();
    let mut tables = Vec::new();
    for c in &cs {
        let rows = score_pairs(&judge, c, &pairs, false, None, &format!("judge {}", c.name))?;
        let w = c.normalized_weights();
        tables.push(ConstitutionScores {
            name: c.name.clone(),
            adversarial: c.adversarial,
            s_c: rows
                .iter()
                .map(|r| {
                    let (ab, ba) = r.judge.aggregate(&w);
                    s_c(ab, ba)
                })
                .collect(),
        });
    }
    let report = sensitivity_report(
        &tables,
        args.resamples,
        &mut bootstrap_rng(args.select.seed),
    );
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("wall_seconds".into(), secs.into());
            o.insert("model".into(), m.path().display().to_string().into());
            if let Some(e) = m.endpoint() {
                o.insert("endpoint".into(), e.into());
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render_text(&report));
        println!(
            "({} pairs, {secs:.1} s, model {})",
            report.n_pairs,
            m.path().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The human-readable report, verdict first.
pub fn render_text(r: &SensitivityReport) -> String {
    let mut s = format!("VERDICT: {}\n\n", r.verdict);
    s.push_str("agreement with the human labels per constitution:\n");
    for c in &r.constitutions {
        s.push_str(&format!(
            "  {:<28} P_C {:.3} [{:.3}, {:.3}]  a_C {:+.3}{}\n",
            c.name,
            c.p_judge,
            c.p_judge_ci.lo,
            c.p_judge_ci.hi,
            c.a_judge,
            if c.adversarial { "  (adversarial)" } else { "" }
        ));
    }
    s.push_str("pairs of constitutions:\n");
    for c in &r.comparisons {
        s.push_str(&format!(
            "  {} vs {}: r = {:.3}, same sign {:.1}%, ΔP = {:+.3} [{:+.3}, {:+.3}]{}\n",
            c.a,
            c.b,
            c.correlation,
            100.0 * c.sign_agreement,
            c.delta_p,
            c.delta_p_ci.lo,
            c.delta_p_ci.hi,
            if c.indistinguishable {
                "  indistinguishable"
            } else {
                ""
            }
        ));
    }
    s
}
