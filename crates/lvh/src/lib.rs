//! lvh: the latent value hypothesis of RLAIF, made checkable.
//!
//! This crate is the command-line front end. Each subcommand lives in its own module under
//! [`cmd`]; [`cli`] only lists them. Maths lives in `rlaif-sim` and `value-directions`, the
//! transformer runtime in `lm-runtime`.

pub mod analyze;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod constitution;
pub mod datasets;
pub mod geometry;
pub mod judge;
pub mod plot;
pub mod remote;
pub mod rlaif;
pub mod run_dir;
pub mod theory_io;
