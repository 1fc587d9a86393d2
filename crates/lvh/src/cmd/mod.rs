//! One module per subcommand: its clap `Args` and a `run` function.

pub mod constitution;
pub mod run;
pub mod score;
pub mod simulate;
pub mod theory;
