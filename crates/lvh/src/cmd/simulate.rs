//! `lvh simulate MODEL [--json] [--out DIR]`: RLAIF on a model file, in its mode.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use rlaif_sim::sim::simulate;

use crate::run_dir::{FileProvenance, Manifest, RunDir};
use crate::theory_io::{load_instance, trace_figures, write_atomic};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model file (JSON, or TOML by extension).
    pub model: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write `trace.json`, `alignment.svg` and `value.svg` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the model file's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fresh responses per round for the Monte Carlo value check (`mc_value`).
    #[arg(long, default_value_t = 50_000)]
    pub value_draws: usize,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let inst = load_instance(&args.model)?;
    let mut cfg = inst.sim.clone();
    cfg.value_draws = args.value_draws;
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    let trace = simulate(&inst.model, &inst.g, &inst.j, &cfg).context("simulation failed")?;
    let json = serde_json::to_string_pretty(&trace)?;
    if let Some(dir) = &args.out {
        // A manifest like every run folder's, so `lvh report` renders (and compares) it.
        let mut manifest = Manifest::new(
            "simulate",
            serde_json::json!({ "value_draws": cfg.value_draws }),
        );
        manifest.seed = Some(cfg.seed);
        manifest.data.push(FileProvenance::of(&args.model)?);
        RunDir::open(dir, &manifest)?;
        write_atomic(&dir.join("trace.json"), json.as_bytes())?;
        let (a, v) = trace_figures(&trace);
        write_atomic(&dir.join("alignment.svg"), a.to_svg().as_bytes())?;
        write_atomic(&dir.join("value.svg"), v.to_svg().as_bytes())?;
    }
    if args.json {
        println!("{json}");
    } else {
        println!(
            "mode {:?}, η = β/τ = {:.4}, n = {}, T = {}, seed {}",
            cfg.mode, trace.eta, cfg.pairs, cfg.rounds, cfg.seed
        );
        println!(
            "{:>5} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10} {:>10}",
            "round", "V", "K", "A", "A_pop", "a_hat", "agree_hat", "mc_value"
        );
        for (r, pa) in trace.records.iter().zip(&trace.population.a) {
            let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
            println!(
                "{:>5} {:>10.4} {:>10.4} {:>8.4} {:>8.4} {:>8} {:>10} {:>10}",
                r.round,
                r.v,
                r.k,
                r.a,
                pa,
                opt(r.a_hat),
                opt(r.agree_hat),
                opt(r.mc_value)
            );
        }
        if let Some(dir) = &args.out {
            println!(
                "wrote {}/{{trace.json,alignment.svg,value.svg}}",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
