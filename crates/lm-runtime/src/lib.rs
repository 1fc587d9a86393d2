//! lm-runtime
