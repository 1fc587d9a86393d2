//! One module per subcommand: its clap `Args` and a `run` function.

pub mod audit;
pub mod constitution;
pub mod directions;
pub mod extract;
pub mod gap;
pub mod judge;
pub mod model;
pub mod report;
pub mod rlaif;
pub mod run;
pub mod score;
pub mod sensitivity;
pub mod simulate;
pub mod steer;
pub mod theory;
pub mod tokenize;
