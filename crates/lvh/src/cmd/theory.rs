//! `lvh theory eval|demo|check`.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TheoryCommand {
    /// Closed forms for one model file.
    Eval,
}

impl TheoryCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Ok(ExitCode::SUCCESS)
    }
}
