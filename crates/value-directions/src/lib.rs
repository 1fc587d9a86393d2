//! Value directions and subspaces from activations: estimators, held-out metrics and
//! low-rank geometry. Pure maths, f64 accumulation, no model runtime and no I/O.
//!
//! # The model (THEORY §1–§4, T7)
//! A representation `h = W z + ε ∈ R^d` carries a true value `u* = <θ*, z>`. With
//! `Σ_h = Cov(h)` and `c = Cov(h, u*)`:
//!
//! * alignment of a readout `w`: `a(w) = <c, w> / (σ_u √(wᵀ Σ_h w))`;
//! * ceiling `q = max_w a(w)`, attained at `w* = Σ_h⁻¹ c`;
//! * pairwise agreement of Gaussian pairs (Sheppard): `P = ½ + arcsin(a)/π`, hence
//!   `q̂ = sin(π (P − ½))`;
//! * T7a: for classes chosen by u*, `E[h|harmless] − E[h|harmful] ∝ c` (the refusal direction),
//!   while whitening it, `Σ⁻¹ Δμ ∝ w*`, attains q;
//! * T7c: paired contrast differences have `Cov(Δh) = C diag(a²) Cᵀ + 2s² I`, a spiked
//!   covariance whose top-p eigenvectors span the value subspace `V = span C`.
//!
//! # Estimators (MEASURE §3 → this crate)
//! | theory | estimator | here |
//! |---|---|---|
//! | `c` | `mean(h|+) − mean(h|−)`, classes balanced | [`DiffOfMeans`] ([`Balance`]) |
//! | `w*`, ceiling `q` | L2 logistic probe, or LDA with shrinkage | [`LinearProbe`], [`Lda`] ([`Shrinkage`]) |
//! | `P`, `q̂` | held-out agreement and `sin(π(P − ½))` | [`metrics::auc`], [`metrics::paired_agreement`], [`metrics::q_hat`] |
//! | intervals | bootstrap 95% over items | [`metrics::Bootstrap`]; all held-out numbers of one direction: [`metrics::evaluate`] |
//! | splits | fixed dev/test split by a hash of the prompt, or k-fold | [`metrics::hash_split`], [`metrics::stratified_kfold`] |
//! | `ĝ`, `ĵ_C` in activation space | ridge regression of score differences on `h(y1) − h(y2)` | [`ridge`] |
//! | BT reward model on `h` differences (§5) | logistic regression on soft labels | [`LinearProbe::fit_soft`] |
//! | value subspace (T7c) | PCA of paired / class-conditional differences; spectrum, top-p explained variance, principal angles | [`Pca`], [`subspace::pca`], [`Spectrum::explained_variance`], [`Subspace::principal_angles`] |
//! | ablation (T7b) | `h → (I − ĉĉᵀ) h`, or `(I − P_V) h` | [`Direction::project_out`], [`Subspace::ablate`] |
//! | constitution shift in V | fraction of `‖Δ‖²` inside the top-p subspace | [`Subspace::fraction_inside`] |
//!
//! Every estimator implements one seam, [`DirectionEstimator`], and returns a [`Direction`]:
//! unit norm, oriented so that positives (harmless, chosen, +1) project higher, carrying its
//! [`Provenance`] (layer, hook, pooling, method, sign rule, raw norm, mean residual norm, class
//! sizes).
//!
//! ```
//! use value_directions::{ContrastSet, DiffOfMeans, DirectionEstimator};
//! let rows = vec![vec![1.0, 0.1], vec![1.2, -0.1], vec![-1.0, 0.0], vec![-0.8, 0.2]];
//! let set = ContrastSet::new(rows, vec![true, true, false, false]).unwrap();
//! let v = DiffOfMeans::default().estimate(&set).unwrap();
//! assert!(v.as_slice()[0] > 0.99);
//! ```
//!
//! Linear algebra (matrix products, Cholesky, symmetric eigen-decomposition, SVD) is done by
//! `faer` in f64.

mod contrast;
mod direction;
mod error;
mod estimators;
mod linalg;
pub mod metrics;
pub mod subspace;

pub use contrast::{labels_from_signs, ContrastSet};
pub use direction::{Direction, Method, Provenance, SignRule, Site};
pub use error::{Error, Result};
pub use estimators::{
    default_estimator, ridge, Balance, DiffOfMeans, DirectionEstimator, Lda, LdaFit, LinearProbe,
    Pca, ProbeFit, RidgeFit, Shrinkage,
};
pub use subspace::{DifferenceSource, Differences, PcaFit, Spectrum, Subspace};
