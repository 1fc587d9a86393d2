//! The `lvh` binary: parse the command line, run one command, map errors to exit codes.

use clap::Parser;

fn main() -> std::process::ExitCode {
    lvh::cli::quiet_broken_pipe();
    let cli = lvh::cli::Cli::parse();
    match cli.command.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
