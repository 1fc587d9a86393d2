//! The crate's error type.

/// Everything that can go wrong in this crate. Variants carry the data needed to act on them
/// (which row, which field, which sizes), so the caller can name the offending file or item.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A vector had zero norm where a direction was required.
    #[error("{what}: zero vector cannot be normalised into a direction")]
    ZeroVector {
        /// What was being normalised.
        what: &'static str,
    },
    /// A NaN or infinity was found.
    #[error("{what}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Row (item) index; 0 for a single vector.
        row: usize,
        /// Column (feature) index.
        col: usize,
        /// The offending value.
        value: f64,
    },
    /// Rows of a matrix did not all have the same length.
    #[error("row {row} has {got} columns, expected {expected} (the length of row 0)")]
    RaggedRows {
        /// Index of the first bad row.
        row: usize,
        /// Length of row 0.
        expected: usize,
        /// Length of the bad row.
        got: usize,
    },
    /// Two inputs disagree on a length.
    #[error("{what}: length mismatch, expected {expected}, got {got}")]
    LengthMismatch {
        /// Which pair of inputs.
        what: &'static str,
        /// The length implied by the first input.
        expected: usize,
        /// The length of the second input.
        got: usize,
    },
    /// An input had no rows or no columns.
    #[error("{what} is empty")]
    Empty {
        /// Which input.
        what: &'static str,
    },
    /// A method needs a minimum number of items per class.
    #[error("need at least {needed} items per class, got {n_pos} positive and {n_neg} negative")]
    TooFewPerClass {
        /// Minimum per class.
        needed: usize,
        /// Positives present.
        n_pos: usize,
        /// Negatives present.
        n_neg: usize,
    },
    /// A pair refers to an item that does not exist or has the wrong label.
    #[error("pair {pair}: {reason}")]
    BadPair {
        /// Index of the pair.
        pair: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// The valid range.
        reason: &'static str,
    },
    /// An iterative fit did not converge.
    #[error(
        "{what} did not converge after {iterations} iterations (last step norm {step_norm:e})"
    )]
    NotConverged {
        /// Which fit.
        what: &'static str,
        /// Iterations run.
        iterations: usize,
        /// Norm of the last Newton step.
        step_norm: f64,
    },
    /// A matrix decomposition failed (not positive definite, no convergence).
    #[error("{what}: {reason}")]
    Decomposition {
        /// Which decomposition.
        what: &'static str,
        /// The reason reported by the linear-algebra backend.
        reason: String,
    },
    /// Vectors meant to span a subspace are linearly dependent.
    #[error(
        "subspace basis is rank deficient: vector {index} lies in the span of the previous ones"
    )]
    RankDeficient {
        /// Index of the dependent vector.
        index: usize,
    },
    /// A string did not name a known method.
    #[error("unknown method `{0}` (expected one of: diff-of-means, probe, lda, pca)")]
    UnknownMethod(String),
}

/// Shorthand for `Result<T, value_directions::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
