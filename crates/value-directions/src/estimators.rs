//! The estimator seam: [`DirectionEstimator`] and its four implementations.

use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::contrast::ContrastSet;
use crate::direction::{Direction, Method, Provenance, SignRule};
use crate::error::{Error, Result};
use crate::linalg::{self, dot, norm};
use crate::subspace::{pca, DifferenceSource, Differences};

/// `(labelled activations) → unit direction`, oriented so that positives project higher.
pub trait DirectionEstimator {
    /// Which method this is (recorded in the provenance).
    fn method(&self) -> Method;

    /// Estimate a direction from `set`.
    ///
    /// # Errors
    /// Implementation specific; every implementation refuses a set with an empty class
    /// ([`Error::TooFewPerClass`]) and returns [`Error::ZeroVector`] when the estimate is zero.
    fn estimate(&self, set: &ContrastSet) -> Result<Direction>;
}

/// Orient `v` by `rule` and wrap it with provenance taken from `set`.
fn finish(
    mut v: Vec<f64>,
    set: &ContrastSet,
    method: Method,
    rule: SignRule,
    n_pos: usize,
    n_neg: usize,
) -> Result<Direction> {
    let flip = match (rule, set.pairs()) {
        (SignRule::PairMajority, Some(pairs)) if !pairs.is_empty() => {
            let higher = pairs
                .iter()
                .filter(|&&(i, j)| {
                    let si: f64 = set
                        .row(i)
                        .iter()
                        .zip(&v)
                        .map(|(&x, w)| f64::from(x) * w)
                        .sum();
                    let sj: f64 = set
                        .row(j)
                        .iter()
                        .zip(&v)
                        .map(|(&x, w)| f64::from(x) * w)
                        .sum();
                    si > sj
                })
                .count();
            2 * higher < pairs.len()
        }
        _ => {
            let (mp, mn) = set.class_means();
            let diff: Vec<f64> = mp.iter().zip(&mn).map(|(a, b)| a - b).collect();
            dot(&v, &diff) < 0.0
        }
    };
    if flip {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    let applied = match (rule, set.pairs()) {
        (SignRule::PairMajority, Some(p)) if !p.is_empty() => SignRule::PairMajority,
        _ => SignRule::MeanDifference,
    };
    let raw_norm = norm(&v);
    Direction::new(
        v,
        Provenance {
            site: set.site().clone(),
            method: Some(method),
            sign_rule: applied,
            raw_norm,
            mean_resid_norm: set.mean_row_norm(),
            n_pos,
            n_neg,
        },
    )
}

/// How [`DiffOfMeans`] balances unequal classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Balance {
    /// Mean of each class over all its items. The estimate `mean(h|+) − mean(h|−)` already
    /// weights both classes equally whatever their sizes, so nothing is discarded; its
    /// expectation equals that of subsampling.
    #[default]
    ClassMeans,
    /// Subsample the larger class to the size of the smaller (without replacement, ChaCha8
    /// seeded by `seed`), as in MEASURE §3. Same expectation, more variance.
    Subsample {
        /// RNG seed (record it in the manifest).
        seed: u64,
    },
}

/// Difference of means, `ĉ ∝ mean(h | +) − mean(h | −)`.
///
/// Under THEORY T7a (classes chosen by any rule depending only on u*) the population value is
/// proportional to `c = Cov(h, u*)`: the refusal direction, not `w*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffOfMeans {
    /// Class balancing.
    pub balance: Balance,
}

impl DirectionEstimator for DiffOfMeans {
    fn method(&self) -> Method {
        Method::DiffOfMeans
    }

    /// # Errors
    /// [`Error::TooFewPerClass`] if a class is empty; [`Error::ZeroVector`] if the means coincide.
    fn estimate(&self, set: &ContrastSet) -> Result<Direction> {
        set.require_per_class(1)?;
        let (mut pos, mut neg) = set.class_indices();
        if let Balance::Subsample { seed } = self.balance {
            let m = pos.len().min(neg.len());
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for class in [&mut pos, &mut neg] {
                if class.len() > m {
                    let mut keep = rand::seq::index::sample(&mut rng, class.len(), m).into_vec();
                    keep.sort_unstable();
                    *class = keep.into_iter().map(|k| class[k]).collect();
                }
            }
        }
        let (n_pos, n_neg) = (pos.len(), neg.len());
        let mp = set.mean_of(pos);
        let mn = set.mean_of(neg);
        let v: Vec<f64> = mp.iter().zip(&mn).map(|(a, b)| a - b).collect();
        finish(
            v,
            set,
            Method::DiffOfMeans,
            SignRule::MeanDifference,
            n_pos,
            n_neg,
        )
    }
}

/// L2-regularised logistic regression fitted by Newton's method.
///
/// Minimises, with `y_i ∈ {0, 1}` (1 = positive) and `z_i = <w, x_i> + b`,
///
/// `L(w, b) = Σ_i [log(1 + e^{z_i}) − y_i z_i] + (λ/2) ‖w‖²`
///
/// (sum, not mean, over items: `λ = 1` is scikit-learn's `C = 1`; the intercept `b` is not
/// penalised). Gradient `g = Zᵀ(p − y) + λ[w; 0]`, Hessian `H = Zᵀ diag(p(1−p)) Z + λ diag(1,…,1,0)`
/// with `Z = [X, 1]`; the step `−H⁻¹g` is solved by Cholesky and shortened by backtracking
/// (Armijo, factor ½) until `L` decreases. Stops when the step norm is below
/// `tol · (1 + ‖(w, b)‖)` or the Newton decrement `−gᵀΔ/2` is below `1e-12 (1 + |L|)`.
///
/// With `standardise`, features are centred and divided by their standard deviation before
/// the fit (the penalty then acts on standardised weights) and the weights are mapped back,
/// `w_raw = w̃ / sd`, so the direction always lives in activation space.
///
/// In population (λ → 0, Gaussian h, labels depending on u* only) the weight is ∝ `w* = Σ_h⁻¹ c`
/// (THEORY T7a; the label depends on h only through `<w*, h>`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearProbe {
    /// Ridge strength λ ≥ 0 on the summed log-loss.
    pub l2: f64,
    /// Standardise features before fitting.
    pub standardise: bool,
    /// Maximum Newton iterations.
    pub max_iter: usize,
    /// Relative step-norm tolerance.
    pub tol: f64,
}

impl Default for LinearProbe {
    fn default() -> Self {
        LinearProbe {
            l2: 1.0,
            standardise: true,
            max_iter: 100,
            tol: 1e-10,
        }
    }
}

/// A fitted logistic probe in activation space: `P(+ | h) = σ(<weights, h> + intercept)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeFit {
    /// Weights `w` in activation space (not normalised).
    pub weights: Vec<f64>,
    /// Intercept `b`.
    pub intercept: f64,
    /// Newton iterations used.
    pub iterations: usize,
    /// Final objective `L(w, b)` (in the fitted, possibly standardised, coordinates).
    pub objective: f64,
}

/// `log(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl LinearProbe {
    fn validate(&self) -> Result<()> {
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "l2",
                value: self.l2.to_string(),
                reason: "must be finite and ≥ 0",
            });
        }
        if self.max_iter == 0 || self.tol.is_nan() || self.tol <= 0.0 {
            return Err(Error::InvalidParameter {
                name: "max_iter/tol",
                value: format!("{}/{}", self.max_iter, self.tol),
                reason: "need max_iter ≥ 1 and tol > 0",
            });
        }
        Ok(())
    }

    /// Fit the probe to a contrast set (`y = 1` for positives), with an intercept.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a negative/non-finite `l2`, `max_iter = 0` or a
    /// non-positive `tol`; [`Error::TooFewPerClass`] if a class is empty;
    /// [`Error::Decomposition`] if the Hessian is singular (λ = 0 on separable or rank-deficient
    /// data); [`Error::NotConverged`] after `max_iter` iterations.
    pub fn fit(&self, set: &ContrastSet) -> Result<ProbeFit> {
        self.validate()?;
        set.require_per_class(1)?;
        let (n, d) = (set.n(), set.d());
        let rows = set.rows();
        let y: Vec<f64> = set
            .labels()
            .iter()
            .map(|&l| if l { 1.0 } else { 0.0 })
            .collect();
        self.fit_rows(n, d, |i, j| f64::from(rows[i * d + j]), &y, true)
    }

    /// Logistic regression on soft targets `t_i ∈ [0, 1]`, e.g. a linear Bradley–Terry reward
    /// model on activation differences `Δh_i = h(y1) − h(y2)` with judge soft labels
    /// `σ(S_C)` (MEASURE §5 step 3): minimises `Σ_i [log(1 + e^{z_i}) − t_i z_i] + (λ/2)‖w‖²`.
    /// Without `intercept`, `z_i = <w, Δh_i>` and standardisation only rescales (no centring,
    /// which would need an intercept to absorb it).
    ///
    /// # Errors
    /// As [`LinearProbe::fit`]; [`Error::LengthMismatch`] if `targets.len()` differs from the
    /// number of rows; [`Error::InvalidParameter`] for a target outside [0, 1].
    pub fn fit_soft(
        &self,
        rows: &Differences,
        targets: &[f64],
        intercept: bool,
    ) -> Result<ProbeFit> {
        self.validate()?;
        let (n, d) = (rows.m(), rows.d());
        if targets.len() != n {
            return Err(Error::LengthMismatch {
                what: "rows vs targets",
                expected: n,
                got: targets.len(),
            });
        }
        if let Some((i, t)) = targets
            .iter()
            .enumerate()
            .find(|(_, t)| !(0.0..=1.0).contains(*t))
        {
            return Err(Error::InvalidParameter {
                name: "target",
                value: format!("{t} (row {i})"),
                reason: "soft labels must lie in [0, 1]",
            });
        }
        self.fit_rows(n, d, |i, j| rows.row(i)[j], targets, intercept)
    }

    /// Newton's method on `Z = [x̃, 1]` (or `x̃` without intercept).
    fn fit_rows(
        &self,
        n: usize,
        d: usize,
        x: impl Fn(usize, usize) -> f64,
        y: &[f64],
        intercept: bool,
    ) -> Result<ProbeFit> {
        let p1 = if intercept { d + 1 } else { d };
        // Feature shift/scale: x̃ = (x − shift) / scale.
        let mut shift = vec![0.0f64; d];
        let mut scale = vec![1.0f64; d];
        if self.standardise {
            let mut mean = vec![0.0f64; d];
            for i in 0..n {
                for (j, m) in mean.iter_mut().enumerate() {
                    *m += x(i, j);
                }
            }
            mean.iter_mut().for_each(|m| *m /= n as f64);
            let mut var = vec![0.0f64; d];
            for i in 0..n {
                for (j, (v, m)) in var.iter_mut().zip(&mean).enumerate() {
                    let c = x(i, j) - m;
                    *v += c * c;
                }
            }
            for (s, v) in scale.iter_mut().zip(var) {
                let sd = (v / n as f64).sqrt();
                // A constant feature carries no information; leave it unscaled.
                *s = if sd > 0.0 { sd } else { 1.0 };
            }
            if intercept {
                shift = mean;
            }
        }
        // z: [n, p1] = [x̃, 1]
        let z = Mat::from_fn(n, p1, |i, j| {
            if j == d {
                1.0
            } else {
                (x(i, j) - shift[j]) / scale[j]
            }
        });
        let lambda = self.l2;
        let objective = |beta: &[f64], eta: &[f64]| -> f64 {
            let loss: f64 = eta.iter().zip(y).map(|(&e, &t)| softplus(e) - t * e).sum();
            loss + 0.5 * lambda * dot(&beta[..d], &beta[..d])
        };
        let linear = |beta: &[f64]| -> Vec<f64> {
            let b = Mat::from_fn(p1, 1, |j, _| beta[j]);
            let e = linalg::matmul_ab(z.as_ref(), b.as_ref());
            (0..n).map(|i| e[(i, 0)]).collect()
        };

        let mut beta = vec![0.0f64; p1];
        let mut eta = vec![0.0f64; n];
        let mut f = objective(&beta, &eta);
        let mut last_step = f64::INFINITY;
        for iter in 1..=self.max_iter {
            let p: Vec<f64> = eta.iter().map(|&e| sigmoid(e)).collect();
            // Gradient g = Zᵀ(p − y) + λ[w; 0].
            let r = Mat::from_fn(n, 1, |i, _| p[i] - y[i]);
            let gm = linalg::matmul_ab(z.as_ref().transpose(), r.as_ref());
            let mut g: Vec<f64> = (0..p1).map(|j| gm[(j, 0)]).collect();
            for (gj, bj) in g.iter_mut().zip(&beta).take(d) {
                *gj += lambda * bj;
            }
            // Hessian H = (D^{1/2} Z)ᵀ (D^{1/2} Z) + λ diag(1..1, 0), D = diag(p(1−p)).
            let sw: Vec<f64> = p.iter().map(|&pi| (pi * (1.0 - pi)).sqrt()).collect();
            let zw = Mat::from_fn(n, p1, |i, j| z[(i, j)] * sw[i]);
            let mut h = linalg::gram_t(zw.as_ref());
            for j in 0..d {
                h[(j, j)] += lambda;
            }
            let neg_g: Vec<f64> = g.iter().map(|x| -x).collect();
            let step = linalg::cholesky_solve(&h, &neg_g, "probe Hessian")?;
            let decrement = -dot(&g, &step); // gᵀH⁻¹g ≥ 0
            if decrement / 2.0 <= 1e-12 * (1.0 + f.abs()) {
                return Ok(unscale(beta, &shift, &scale, intercept, iter, f));
            }
            // Backtracking line search (Armijo).
            let mut t = 1.0;
            let mut accepted = None;
            for _ in 0..60 {
                let cand: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + t * s).collect();
                let ec = linear(&cand);
                let fc = objective(&cand, &ec);
                if fc.is_finite() && fc <= f - 1e-4 * t * decrement {
                    accepted = Some((cand, ec, fc));
                    break;
                }
                t *= 0.5;
            }
            let Some((cand, ec, fc)) = accepted else {
                // No decrease possible in floating point: we are at the optimum to working
                // precision.
                return Ok(unscale(beta, &shift, &scale, intercept, iter, f));
            };
            last_step = t * norm(&step);
            let bnorm = norm(&cand);
            beta = cand;
            eta = ec;
            f = fc;
            if last_step <= self.tol * (1.0 + bnorm) {
                return Ok(unscale(beta, &shift, &scale, intercept, iter, f));
            }
        }
        Err(Error::NotConverged {
            what: "logistic probe (Newton)",
            iterations: self.max_iter,
            step_norm: last_step,
        })
    }
}

/// Map standardised coefficients back to activation space: `w = w̃ / sd`,
/// `b = b̃ − <w, shift>`.
fn unscale(
    beta: Vec<f64>,
    shift: &[f64],
    scale: &[f64],
    intercept: bool,
    iterations: usize,
    objective: f64,
) -> ProbeFit {
    let d = shift.len();
    let weights: Vec<f64> = (0..d).map(|j| beta[j] / scale[j]).collect();
    let intercept = if intercept {
        beta[d] - dot(&weights, shift)
    } else {
        0.0
    };
    ProbeFit {
        weights,
        intercept,
        iterations,
        objective,
    }
}

impl DirectionEstimator for LinearProbe {
    fn method(&self) -> Method {
        Method::LinearProbe
    }

    /// # Errors
    /// As [`LinearProbe::fit`], plus [`Error::ZeroVector`] for an all-zero weight vector.
    fn estimate(&self, set: &ContrastSet) -> Result<Direction> {
        let fit = self.fit(set)?;
        finish(
            fit.weights,
            set,
            Method::LinearProbe,
            SignRule::MeanDifference,
            set.n_pos(),
            set.n_neg(),
        )
    }
}

/// Covariance shrinkage for [`Lda`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Shrinkage {
    /// Ledoit–Wolf (2004) optimal intensity towards `(tr S / d) I` (the estimator of
    /// scikit-learn's `ledoit_wolf_shrinkage` on class-centred data).
    #[default]
    LedoitWolf,
    /// A fixed intensity α ∈ [0, 1].
    Fixed(f64),
}

/// Linear discriminant: `ŵ = Σ̂⁻¹ (mean(h|+) − mean(h|−))` with the pooled within-class
/// covariance `S = (1/n) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ` shrunk to
/// `Σ̂ = (1 − α) S + α (tr S / d) I`.
///
/// Under THEORY T7a the within-class covariance is `Σ_h + γ c cᵀ` for a scalar γ, and by
/// Sherman–Morrison `(Σ_h + γ c cᵀ)⁻¹ c ∝ Σ_h⁻¹ c = w*`: whitening the difference of means
/// recovers the optimal readout.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lda {
    /// Shrinkage rule.
    pub shrinkage: Shrinkage,
}

/// A fitted discriminant.
#[derive(Debug, Clone, PartialEq)]
pub struct LdaFit {
    /// `Σ̂⁻¹ Δμ` in activation space (not normalised).
    pub weights: Vec<f64>,
    /// The shrinkage intensity α used.
    pub shrinkage: f64,
}

impl Lda {
    /// Fit the discriminant.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a fixed α outside [0, 1]; [`Error::TooFewPerClass`]
    /// (needs 2 per class); [`Error::Decomposition`] if `Σ̂` is singular (α = 0 with n ≤ d).
    pub fn fit(&self, set: &ContrastSet) -> Result<LdaFit> {
        if let Shrinkage::Fixed(a) = self.shrinkage {
            if !(0.0..=1.0).contains(&a) {
                return Err(Error::InvalidParameter {
                    name: "shrinkage",
                    value: a.to_string(),
                    reason: "must lie in [0, 1]",
                });
            }
        }
        set.require_per_class(2)?;
        let (n, d) = (set.n(), set.d());
        let (mp, mn) = set.class_means();
        let labels = set.labels();
        let rows = set.rows();
        // xc: [n, d] class-centred rows.
        let xc = Mat::from_fn(n, d, |i, j| {
            let m = if labels[i] { mp[j] } else { mn[j] };
            f64::from(rows[i * d + j]) - m
        });
        let mut s = linalg::gram_t(xc.as_ref());
        let nf = n as f64;
        for j in 0..d {
            for i in 0..d {
                s[(i, j)] /= nf;
            }
        }
        let trace: f64 = (0..d).map(|j| s[(j, j)]).sum();
        let mu = trace / d as f64;
        let alpha = match self.shrinkage {
            Shrinkage::Fixed(a) => a,
            Shrinkage::LedoitWolf => {
                // β_ = Σ_i ‖x_i‖⁴, δ_ = ‖XᵀX‖²_F / n² = ‖S‖²_F.
                let beta_: f64 = (0..n)
                    .map(|i| {
                        let r: f64 = (0..d).map(|j| xc[(i, j)] * xc[(i, j)]).sum();
                        r * r
                    })
                    .sum();
                let mut delta_ = 0.0;
                for j in 0..d {
                    for i in 0..d {
                        delta_ += s[(i, j)] * s[(i, j)];
                    }
                }
                let beta = (beta_ / nf - delta_) / (d as f64 * nf);
                let delta = (delta_ - 2.0 * mu * trace + d as f64 * mu * mu) / d as f64;
                let beta = beta.min(delta);
                if beta <= 0.0 || delta <= 0.0 {
                    0.0
                } else {
                    beta / delta
                }
            }
        };
        for j in 0..d {
            for i in 0..d {
                s[(i, j)] *= 1.0 - alpha;
            }
            s[(j, j)] += alpha * mu;
        }
        let diff: Vec<f64> = mp.iter().zip(&mn).map(|(a, b)| a - b).collect();
        let weights = linalg::cholesky_solve(&s, &diff, "LDA shrunk covariance")?;
        Ok(LdaFit {
            weights,
            shrinkage: alpha,
        })
    }
}

impl DirectionEstimator for Lda {
    fn method(&self) -> Method {
        Method::Lda
    }

    /// # Errors
    /// As [`Lda::fit`], plus [`Error::ZeroVector`] if the class means coincide.
    fn estimate(&self, set: &ContrastSet) -> Result<Direction> {
        let fit = self.fit(set)?;
        finish(
            fit.weights,
            set,
            Method::Lda,
            SignRule::MeanDifference,
            set.n_pos(),
            set.n_neg(),
        )
    }
}

/// First principal component of contrast differences ([`Differences`], [`pca`]), with its
/// sign fixed by `sign_rule` (PCA itself has no sign).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pca {
    /// Which differences.
    pub source: DifferenceSource,
    /// Centre the differences (covariance) instead of the uncentred second moment.
    pub centre: bool,
    /// Orientation rule.
    pub sign_rule: SignRule,
}

impl DirectionEstimator for Pca {
    fn method(&self) -> Method {
        Method::Pca
    }

    /// # Errors
    /// As [`Differences::of_set`] and [`pca`].
    fn estimate(&self, set: &ContrastSet) -> Result<Direction> {
        set.require_per_class(1)?;
        let diffs = Differences::of_set(set, self.source)?;
        let fit = pca(&diffs, 1, self.centre)?;
        let v = fit.subspace.basis_vector(0).to_vec();
        let rule = match self.sign_rule {
            SignRule::AsGiven => SignRule::MeanDifference,
            r => r,
        };
        finish(v, set, Method::Pca, rule, set.n_pos(), set.n_neg())
    }
}

/// An estimator chosen at run time (e.g. by a CLI flag), with default settings.
pub fn default_estimator(method: Method) -> Box<dyn DirectionEstimator + Send + Sync> {
    match method {
        Method::DiffOfMeans => Box::new(DiffOfMeans::default()),
        Method::LinearProbe => Box::new(LinearProbe::default()),
        Method::Lda => Box::new(Lda::default()),
        Method::Pca => Box::new(Pca::default()),
    }
}

/// A fitted ridge regression `ŷ = <weights, x> + intercept`.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeFit {
    /// Weights in the input space (not normalised).
    pub weights: Vec<f64>,
    /// Intercept (0 without one).
    pub intercept: f64,
}

/// Ridge regression `argmin_{w,b} Σ_i (t_i − <w, x_i> − b)² + λ‖w‖²` (intercept unpenalised),
/// solved in closed form by Cholesky: with centred `x̃ = x − x̄`, `t̃ = t − t̄`,
/// `w = (X̃ᵀX̃ + λI)⁻¹ X̃ᵀ t̃` and `b = t̄ − <w, x̄>` (no centring without an intercept).
/// MEASURE §3 uses it to read the generation and judgment directions `ĝ`, `ĵ_C` off
/// activation differences: targets `s_gen(y1) − s_gen(y2)` (or `S_C`) on rows `h(y1) − h(y2)`.
///
/// # Errors
/// [`Error::InvalidParameter`] for a negative or non-finite `l2`; [`Error::LengthMismatch`]
/// if `targets.len()` differs from the number of rows; [`Error::NonFinite`] for a NaN target;
/// [`Error::Decomposition`] if `X̃ᵀX̃ + λI` is singular (λ = 0 and rank-deficient rows).
pub fn ridge(rows: &Differences, targets: &[f64], l2: f64, intercept: bool) -> Result<RidgeFit> {
    if !(l2 >= 0.0 && l2.is_finite()) {
        return Err(Error::InvalidParameter {
            name: "l2",
            value: l2.to_string(),
            reason: "must be finite and ≥ 0",
        });
    }
    let (m, d) = (rows.m(), rows.d());
    if targets.len() != m {
        return Err(Error::LengthMismatch {
            what: "rows vs targets",
            expected: m,
            got: targets.len(),
        });
    }
    if let Some((row, &value)) = targets.iter().enumerate().find(|(_, t)| !t.is_finite()) {
        return Err(Error::NonFinite {
            what: "ridge target",
            row,
            col: 0,
            value,
        });
    }
    let mut x_mean = vec![0.0f64; d];
    let mut t_mean = 0.0;
    if intercept {
        for i in 0..m {
            for (a, x) in x_mean.iter_mut().zip(rows.row(i)) {
                *a += x;
            }
        }
        x_mean.iter_mut().for_each(|a| *a /= m as f64);
        t_mean = targets.iter().sum::<f64>() / m as f64;
    }
    // xc: [m, d] centred rows.
    let xc = Mat::from_fn(m, d, |i, j| rows.row(i)[j] - x_mean[j]);
    let mut a = linalg::gram_t(xc.as_ref());
    for j in 0..d {
        a[(j, j)] += l2;
    }
    let tc = Mat::from_fn(m, 1, |i, _| targets[i] - t_mean);
    let rhs = linalg::matmul_ab(xc.as_ref().transpose(), tc.as_ref());
    let rhs: Vec<f64> = (0..d).map(|j| rhs[(j, 0)]).collect();
    let weights = linalg::cholesky_solve(&a, &rhs, "ridge normal equations")?;
    let intercept = if intercept {
        t_mean - dot(&weights, &x_mean)
    } else {
        0.0
    };
    Ok(RidgeFit { weights, intercept })
}
