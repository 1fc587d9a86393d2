//! rlaif-sim
