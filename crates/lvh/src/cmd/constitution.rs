//! `lvh constitution list|show`: the constitution library.

use std::process::ExitCode;

use clap::Subcommand;

use crate::constitution::{Constitution, ConstitutionSummary};

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
