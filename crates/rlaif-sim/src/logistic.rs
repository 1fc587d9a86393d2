//! L2-regularised logistic regression with an unpenalised intercept (THEORY §7 step 4).
//!
//! `(ŵ, ĉ₀) = argmin Σ_i [log(1 + e^{z_i}) − ℓ_i z_i] + (ρ_r/2)|ŵ|²`, `z_i = ⟨ŵ, x_i⟩ + ĉ₀`,
//! by Newton's method: the Hessian `Σ_i σ'(z_i) x̃_i x̃_iᵀ + ρ_r I_w` (x̃ = (x, 1)) is factored by
//! Cholesky, and iteration stops when the Newton step is below `1e-10` (the step is then not
//! taken). Otherwise the step is backtracked (halving) until the Armijo condition
//! `L(θ + tδ) ≤ L(θ) + 10⁻⁴ t ∇Lᵀδ` holds, or, when the predicted decrease `−t ∇Lᵀδ` is below
//! the loss's rounding resolution `2⁻⁴⁰ |L|`, until the loss has not risen by more than
//! that resolution: near the optimum the change of a sum of n terms is lost in its rounding, and
//! the Armijo test would reject good steps at random. Iteration also stops when no trial
//! decreases the loss or the accepted step `t|δ|` is below `1e-10` (separable rows, where the
//! unpenalised intercept has no optimum). Labels may be soft (ℓ ∈ [0, 1]). Rows are
//! processed in fixed chunks on a [`Crew`] and reduced in chunk order, so results are
//! bit-identical for any thread count.

use std::cell::Cell;

use crate::aligned::Aligned;
use crate::crew::Crew;
use crate::linalg::dot;

mod narrow;

/// Rows per parallel work item.
pub const CHUNK: usize = 512;

/// Errors of the logistic fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Inputs of inconsistent shape.
    #[error("logistic fit: {0}")]
    Shape(String),
    /// A label outside [0, 1] or a non-finite feature.
    #[error("logistic fit: invalid input ({0})")]
    Invalid(String),
    /// Newton's method failed to converge.
    #[error("logistic fit: no convergence after {0} Newton iterations")]
    NoConvergence(usize),
}

/// The fitted model.
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticFit {
    /// Weights ŵ (length d).
    pub w: Vec<f64>,
    /// Intercept ĉ₀.
    pub intercept: f64,
    /// Newton iterations taken.
    pub iterations: usize,
    /// Final objective value.
    pub loss: f64,
}

/// Rows × columns below which [`fit`] runs on the calling thread alone (about four chunks'
/// worth of work at d = 16). Above it [`fit`] runs in a [`Crew`] of the whole rayon pool: one
/// round trip into the pool for the fit, then every pass spreads its chunks over the crew.
/// Callers that already hold a crew (the simulator's rounds) use [`fit_in`] at any size. The
/// chunking, and so every result bit, is the same either way.
const PAR_MIN_ELEMS: usize = 1 << 15;

/// Fits the model to `x` (`n × d`, row-major) and labels `y` (n values in [0, 1]).
///
/// Each Newton iteration makes two passes over `x`: one for the gradient and Hessian at the
/// current margins `z_i = ⟨ŵ, x_i⟩ + ĉ₀` (kept from the previous iteration), and one for the
/// margin change `X̃ δ` of the Newton step δ. Every backtracking trial `z + t X̃δ` then costs O(n).
/// Up to d = 31 the passes run on a feature-major copy of `x` (`narrow`: SIMD along the rows);
/// wider inputs are read as given (register tiles along each row, [`weighted_gram_upper`]).
///
/// # Errors
/// [`FitError`] on shape mismatch, invalid labels or non-convergence (200 iterations).
pub fn fit(x: &[f64], d: usize, y: &[f64], ridge: f64) -> Result<LogisticFit, FitError> {
    validate(x, d, y, ridge)?;
    if y.len() * (d + 1) >= PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
        Crew::scope(|crew| fit_valid(crew, x, d, y, ridge))
    } else {
        fit_valid(&Crew::serial(), x, d, y, ridge)
    }
}

/// [`fit`] with its row passes spread over `crew` (whatever the size): the same result, bit for
/// bit, for every crew.
///
/// # Errors
/// As [`fit`].
pub fn fit_in(
    crew: &Crew,
    x: &[f64],
    d: usize,
    y: &[f64],
    ridge: f64,
) -> Result<LogisticFit, FitError> {
    validate(x, d, y, ridge)?;
    fit_valid(crew, x, d, y, ridge)
}

fn validate(x: &[f64], d: usize, y: &[f64], ridge: f64) -> Result<(), FitError> {
    let n = y.len();
    if d == 0 || x.len() != n * d {
        return Err(FitError::Shape(format!(
            "{} features for {n} labels of width {d}",
            x.len()
        )));
    }
    validate_labels(y, ridge)
}

fn validate_labels(y: &[f64], ridge: f64) -> Result<(), FitError> {
    if y.iter().any(|l| !(0.0..=1.0).contains(l)) {
        return Err(FitError::Invalid("labels must lie in [0, 1]".into()));
    }
    if !(ridge >= 0.0 && ridge.is_finite()) {
        return Err(FitError::Invalid(format!("ridge must be ≥ 0, got {ridge}")));
    }
    Ok(())
}

fn fit_valid(
    crew: &Crew,
    x: &[f64],
    d: usize,
    y: &[f64],
    ridge: f64,
) -> Result<LogisticFit, FitError> {
    if d <= narrow::MAX_D {
        fit_impl(
            crew,
            &mut narrow::FeatureMajor::new(crew, x, d),
            d,
            y,
            ridge,
        )
    } else {
        fit_impl(crew, &mut RowMajor::new(x, d), d, y, ridge)
    }
}

/// A design of n rows of width d ≤ 31 in the feature-major layout the fit reads for narrow
/// inputs, written in place by its producer (the simulator's sampler) instead of copied from
/// row-major rows: [`Columns::chunks_mut`], then [`fit_columns`].
#[derive(Debug)]
pub(crate) struct Columns {
    design: narrow::FeatureMajor,
    n: usize,
}

pub(crate) use narrow::{transpose, ColumnChunk};

impl Columns {
    /// Room for `n` rows of width `d`; `None` unless `1 ≤ d ≤ 31`.
    pub(crate) fn new(n: usize, d: usize) -> Option<Self> {
        (1..=narrow::MAX_D).contains(&d).then(|| Self {
            design: narrow::FeatureMajor::with_rows(n, d),
            n,
        })
    }

    /// The chunks of [`CHUNK`] rows in order, each to be written for its rows below n and
    /// features below d (the padding is zero).
    pub(crate) fn chunks_mut(&mut self) -> Vec<ColumnChunk<'_>> {
        self.design.columns_mut(self.n)
    }
}

/// [`fit_in`] on a design written in place: the same result, bit for bit, as [`fit_in`] on the
/// same rows in row-major order.
///
/// # Errors
/// As [`fit`].
pub(crate) fn fit_columns(
    crew: &Crew,
    cols: &mut Columns,
    y: &[f64],
    ridge: f64,
) -> Result<LogisticFit, FitError> {
    if y.len() != cols.n {
        return Err(FitError::Shape(format!(
            "{} labels for {} rows",
            y.len(),
            cols.n
        )));
    }
    validate_labels(y, ridge)?;
    let d = cols.design.d();
    fit_impl(crew, &mut cols.design, d, y, ridge)
}

/// The design matrix `X̃ = [X 1]` in the layout one of the fit's kernels reads, with the
/// passes of a Newton iteration over it. Rows beyond n in the per-row buffers are padding:
/// their σ and label are 0, so their weight and residual are 0. Both layouts cut the rows into
/// chunks of [`CHUNK`], the units of work of a [`Crew`].
trait Design: std::fmt::Debug + Sync {
    /// Length of the per-row buffers (`≥ n`).
    fn padded_rows(&self) -> usize;
    /// Gradient (p) and upper triangle of the Hessian (`p × p` row-major, zero below the
    /// diagonal) of the objective at `theta` into `grad` and `upper`, where `sig_i = σ(z_i)`
    /// and `y` holds the labels (both padded). The fit passes the same buffers every iteration:
    /// at d = 256 a fresh Hessian is 0.5 MB, and allocating and freeing one per iteration cost
    /// page faults and, with a second thread, TLB shootdowns (the fit ran 3× slower).
    #[allow(clippy::too_many_arguments)]
    fn grad_hess(
        &mut self,
        crew: &Crew,
        y: &[f64],
        sig: &[f64],
        theta: &[f64],
        ridge: f64,
        grad: &mut [f64],
        upper: &mut [f64],
    );
    /// `dz_i = ⟨δ_w, x_i⟩ + δ_c` for the step `δ = (δ_w, δ_c)` on the padded rows of chunk `c`
    /// (`dz` holds that chunk's rows).
    fn margin_chunk(&self, c: usize, step: &[f64], dz: &mut [f64]);
}

/// Row-major `X` as given: Hessian by [`weighted_gram_upper`]'s register tiles.
#[derive(Debug)]
struct RowMajor<'a> {
    x: &'a [f64],
    d: usize,
    /// Row weights σ'(z_i) and residuals σ(z_i) − ℓ_i of the current iterate.
    wt: Vec<f64>,
    res: Vec<f64>,
    /// Each chunk's gradient and Hessian, reused from pass to pass.
    parts: Vec<(Vec<f64>, Vec<f64>)>,
}

impl<'a> RowMajor<'a> {
    fn new(x: &'a [f64], d: usize) -> Self {
        let n = x.len() / d;
        Self {
            x,
            d,
            wt: vec![0.0; n],
            res: vec![0.0; n],
            parts: Vec::new(),
        }
    }
}

impl Design for RowMajor<'_> {
    fn padded_rows(&self) -> usize {
        self.wt.len()
    }
    fn grad_hess(
        &mut self,
        crew: &Crew,
        y: &[f64],
        sig: &[f64],
        theta: &[f64],
        ridge: f64,
        grad: &mut [f64],
        upper: &mut [f64],
    ) {
        let (d, p) = (self.d, self.d + 1);
        // Row weights σ'(z_i) = s_i(1 − s_i) and residuals r_i = s_i − ℓ_i.
        for (((w, r), &s), &l) in self.wt.iter_mut().zip(self.res.iter_mut()).zip(sig).zip(y) {
            *w = s * (1.0 - s);
            *r = s - l;
        }
        let (x, wt, res) = (self.x, &self.wt[..], &self.res[..]);
        self.parts
            .resize_with(wt.len().div_ceil(CHUNK), Default::default);
        crew.for_each_mut(&mut self.parts, |c, (g, h)| {
            let rows = c * CHUNK..wt.len().min((c + 1) * CHUNK);
            let xc = &x[rows.start * d..rows.end * d];
            g.clear();
            g.resize(p, 0.0);
            h.clear();
            h.resize(p * p, 0.0);
            gram_upper_into(xc, d, &wt[rows.clone()], Some(&res[rows]), h, g);
        });
        sum_parts(&self.parts, theta, ridge, grad, upper);
    }
    fn margin_chunk(&self, c: usize, step: &[f64], dz: &mut [f64]) {
        let d = self.d;
        let x = &self.x[c * CHUNK * d..(c * CHUNK + dz.len()) * d];
        margin_rows(x, d, step, dz);
    }
}

/// The gradient and Hessian pass of one Newton iteration exactly as [`fit`] runs it (the same
/// layout of `x`, chunks, kernels and threading), to time it: the hot loop of the simulator.
///
/// ```
/// use rlaif_sim::logistic::HessianPass;
/// let x = [1.0, 2.0, -1.0, 0.5, 0.0, 3.0]; // three rows of width 2
/// let mut pass = HessianPass::new(&x, 2, &[1.0, 0.0, 1.0], &[0.5, 0.5, 0.5]).unwrap();
/// let (grad, upper) = pass.run(&[0.0; 3]);
/// // Intercept corner: Σ σ'(z_i) = 3 · 0.25; intercept gradient Σ σ_i − ℓ_i = −0.5.
/// assert!((upper[2 * 3 + 2] - 0.75).abs() < 1e-15 && (grad[2] + 0.5).abs() < 1e-15);
/// ```
#[derive(Debug)]
pub struct HessianPass<'a> {
    design: Layout<'a>,
    y: Vec<f64>,
    sig: Vec<f64>,
}

/// The two layouts of [`fit`].
#[derive(Debug)]
enum Layout<'a> {
    Rows(RowMajor<'a>),
    Narrow(narrow::FeatureMajor),
}

impl<'a> HessianPass<'a> {
    /// The pass over `x` (`n × d`, row-major) with labels `y` and `sig_i = σ(z_i)` (n each).
    ///
    /// # Errors
    /// [`FitError::Shape`] when the lengths disagree or d = 0.
    pub fn new(x: &'a [f64], d: usize, y: &[f64], sig: &[f64]) -> Result<Self, FitError> {
        let n = y.len();
        if d == 0 || x.len() != n * d || sig.len() != n {
            return Err(FitError::Shape(format!(
                "{} features, {} σ values for {n} labels of width {d}",
                x.len(),
                sig.len()
            )));
        }
        let design = if d <= narrow::MAX_D {
            Layout::Narrow(narrow::FeatureMajor::new(&Crew::serial(), x, d))
        } else {
            Layout::Rows(RowMajor::new(x, d))
        };
        let rows = match &design {
            Layout::Rows(r) => r.padded_rows(),
            Layout::Narrow(f) => f.padded_rows(),
        };
        let (mut y, mut sig) = (y.to_vec(), sig.to_vec());
        y.resize(rows, 0.0);
        sig.resize(rows, 0.0);
        Ok(Self { design, y, sig })
    }

    /// Gradient (length d + 1) and upper triangle of the Hessian (`(d+1) × (d+1)`, row-major)
    /// of the unpenalised objective at `theta`.
    pub fn run(&mut self, theta: &[f64]) -> (Vec<f64>, Vec<f64>) {
        self.run_in(&Crew::serial(), theta)
    }

    /// [`HessianPass::run`] with the chunks spread over `crew`, as [`fit_in`] runs it.
    pub fn run_in(&mut self, crew: &Crew, theta: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let p = theta.len();
        let (mut grad, mut upper) = (vec![0.0; p], vec![0.0; p * p]);
        let (y, sig) = (&self.y, &self.sig);
        match &mut self.design {
            Layout::Rows(r) => r.grad_hess(crew, y, sig, theta, 0.0, &mut grad, &mut upper),
            Layout::Narrow(f) => f.grad_hess(crew, y, sig, theta, 0.0, &mut grad, &mut upper),
        }
        (grad, upper)
    }
}

/// The Newton iterations of [`fit`] on validated input, in this thread's [`Workspace`].
fn fit_impl(
    crew: &Crew,
    design: &mut impl Design,
    d: usize,
    labels: &[f64],
    ridge: f64,
) -> Result<LogisticFit, FitError> {
    let mut ws = WORKSPACE.with(Cell::take).unwrap_or_default();
    let fit = newton(crew, design, d, labels, ridge, &mut ws);
    WORKSPACE.with(|w| w.set(Some(ws)));
    fit
}

/// Newton's method from θ = 0 (module docs), with the per-row buffers of `ws`.
fn newton(
    crew: &Crew,
    design: &mut impl Design,
    d: usize,
    labels: &[f64],
    ridge: f64,
    ws: &mut Workspace,
) -> Result<LogisticFit, FitError> {
    let (n, p) = (labels.len(), d + 1);
    let rows = design.padded_rows();
    let Workspace {
        y,
        z,
        z_cand,
        dz,
        sig,
        sig_cand,
    } = ws;
    for buf in [
        &mut *y,
        &mut *z,
        &mut *z_cand,
        &mut *dz,
        &mut *sig,
        &mut *sig_cand,
    ] {
        buf.resize(rows);
    }
    // Labels, and σ(z_i) (a by-product of each loss evaluation, reused by the next gradient
    // and Hessian) are 0 on the padding rows, which the loss never writes.
    y[..n].copy_from_slice(labels);
    for buf in [&mut *y, &mut *sig, &mut *sig_cand] {
        buf[n..].fill(0.0);
    }
    let mut theta = vec![0.0; p];
    let mut chol = vec![0.0; p * p];
    let (mut grad, mut hess) = (vec![0.0; p], vec![0.0; p * p]);
    let (mut z, mut z_cand, mut sig, mut sig_cand) = (z, z_cand, sig, sig_cand);
    let y = &y[..];
    let done = |theta: &[f64], iterations: usize, loss: f64| {
        Ok(LogisticFit {
            w: theta[..d].to_vec(),
            intercept: theta[d],
            iterations,
            loss,
        })
    };
    // Margins and σ at θ = 0.
    let mut loss = initial_loss(&mut z[..n], &mut sig[..n]);
    for iter in 1..=200 {
        design.grad_hess(crew, y, sig, &theta, ridge, &mut grad, &mut hess);
        let step = newton_step(&hess, &grad, &mut chol);
        let step_norm = dot(&step, &step).sqrt();
        if step_norm < STEP_TOL {
            // θ is within about |δ| of the optimum.
            return done(&theta, iter, loss);
        }
        let slope = dot(&grad, &step);
        let resolution = LOSS_RESOLUTION * loss.abs();
        let mut t = 1.0;
        let mut accepted = false;
        for trial in 0..60 {
            let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a + t * s).collect();
            let data = if trial == 0 {
                // The margin change X̃δ and the first trial (t = 1) in one pass per chunk.
                margin_and_loss(
                    crew,
                    &*design,
                    &step,
                    &z[..n],
                    &mut dz[..],
                    &y[..n],
                    &mut z_cand[..n],
                    &mut sig_cand[..n],
                )
            } else {
                data_loss(
                    crew,
                    &z[..n],
                    &dz[..n],
                    t,
                    &y[..n],
                    &mut z_cand[..n],
                    &mut sig_cand[..n],
                )
            };
            let l = data + 0.5 * ridge * dot(&cand[..d], &cand[..d]);
            let armijo = l <= loss + 1e-4 * t * slope;
            let unresolved = -t * slope <= resolution && l <= loss + resolution;
            if armijo || unresolved {
                theta = cand;
                std::mem::swap(&mut z, &mut z_cand);
                std::mem::swap(&mut sig, &mut sig_cand);
                loss = l;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !accepted || t * step_norm < STEP_TOL {
            // No decrease possible at machine precision (or only by a step below the
            // tolerance): we are at the optimum, or, where there is none (separable rows), as
            // far along the loss's decrease as it can be resolved.
            return done(&theta, iter, loss);
        }
    }
    Err(FitError::NoConvergence(200))
}

/// Newton steps shorter than this end the fit (THEORY §7 step 4).
const STEP_TOL: f64 = 1e-10;

/// The loss's rounding resolution relative to `|L|`: 2⁻⁴⁰, about 4096 units in the last
/// place, above the rounding error of a sum of up to 10⁷ terms of similar size (which grows
/// like √n ulp).
const LOSS_RESOLUTION: f64 = 1.0 / (1u64 << 40) as f64;

/// The per-row buffers of a fit, kept by the calling thread for its next fit. Allocating and
/// zeroing them on every fit put every line of them in the caller's cache, and the helpers of
/// a [`Crew`] then fetched their half of the rows back on each pass: a fit at d = 16,
/// n = 10³ ran 40 % slower on the helper than on the caller.
#[derive(Debug, Default)]
struct Workspace {
    y: Aligned,
    z: Aligned,
    z_cand: Aligned,
    dz: Aligned,
    sig: Aligned,
    sig_cand: Aligned,
}

thread_local! {
    static WORKSPACE: Cell<Option<Box<Workspace>>> = const { Cell::new(None) };
}

/// Solves `H δ = −g` for the symmetric `H` given by its upper triangle (`p × p` row-major,
/// `p = g.len()`), by the Cholesky factorisation `H = UᵀU` computed in `u` (a `p × p` scratch
/// buffer); adds a tiny jitter to the diagonal if H is numerically singular (separable data
/// without ridge), ten times larger at each retry.
fn newton_step(upper: &[f64], grad: &[f64], u: &mut [f64]) -> Vec<f64> {
    let p = grad.len();
    let mut jitter = 1e-12 * (0..p).map(|i| upper[i * p + i]).fold(1.0, f64::max);
    let mut added = 0.0;
    loop {
        u.copy_from_slice(upper);
        if added > 0.0 {
            for i in 0..p {
                u[i * p + i] += added;
            }
        }
        if cholesky_upper_in_place(u, p) {
            // Uᵀ y = −g (row by row of U: y_i is final once the rows above are subtracted), then
            // U δ = y; the diagonal holds 1/U_ii.
            let mut x: Vec<f64> = grad.iter().map(|g| -g).collect();
            for i in 0..p {
                let xi = x[i] * u[i * p + i];
                x[i] = xi;
                for (xl, &uil) in x[i + 1..].iter_mut().zip(&u[i * p + i + 1..(i + 1) * p]) {
                    *xl -= uil * xi;
                }
            }
            for i in (0..p).rev() {
                let mut v = x[i];
                for (&uik, &xk) in u[i * p + i + 1..(i + 1) * p].iter().zip(&x[i + 1..]) {
                    v -= uik * xk;
                }
                x[i] = v * u[i * p + i];
            }
            return x;
        }
        added += jitter;
        jitter *= 10.0;
    }
}

/// Overwrites the upper triangle of `a` (`p × p` row-major, symmetric positive definite, upper
/// triangle read) with U, `A = UᵀU`, except that the diagonal receives `1/U_jj`; false when a
/// pivot is not strictly positive and finite. Right-looking: once row j of U is final, its outer
/// product is subtracted from the rows below, so every inner loop runs along a row.
fn cholesky_upper_in_place(a: &mut [f64], p: usize) -> bool {
    for j in 0..p {
        let s = a[j * p + j];
        if !(s > 0.0 && s.is_finite()) {
            return false;
        }
        let inv = 1.0 / s.sqrt();
        a[j * p + j] = inv;
        for v in &mut a[j * p + j + 1..(j + 1) * p] {
            *v *= inv;
        }
        let (top, bottom) = a.split_at_mut((j + 1) * p);
        let uj = &top[j * p + j + 1..(j + 1) * p];
        // Row i > j is updated from column j + 1 on, not from its diagonal: the entries left of
        // the diagonal are never read, and loops of one length per j vectorise better.
        for (row, &uji) in bottom.chunks_exact_mut(p).zip(uj) {
            for (v, &ujl) in row[j + 1..].iter_mut().zip(uj) {
                *v -= uji * ujl;
            }
        }
    }
    true
}

/// One chunk's share of a loss evaluation: its trial margins and σ (written) and its partial
/// sum.
struct LossPart<'a> {
    zc: &'a mut [f64],
    sig: &'a mut [f64],
    sum: f64,
}

/// The chunks of a loss evaluation.
fn loss_parts<'a>(zc: &'a mut [f64], sig: &'a mut [f64]) -> Vec<LossPart<'a>> {
    zc.chunks_mut(CHUNK)
        .zip(sig.chunks_mut(CHUNK))
        .map(|(zc, sig)| LossPart { zc, sig, sum: 0.0 })
        .collect()
}

impl LossPart<'_> {
    /// Evaluates chunk c, whose rows' `z`, `dz` and `y` are given.
    fn eval(&mut self, z: &[f64], dz: &[f64], t: f64, y: &[f64]) {
        self.sum = pulp::Arch::new().dispatch(LossChunk {
            z,
            dz,
            t,
            y,
            zc: self.zc,
            sig: self.sig,
        });
    }
}

/// `Σ_i softplus(ζ_i) − ℓ_i ζ_i` at the trial margins `ζ_i = z_i + t dz_i`, which are written
/// to `zc`, with `sig_i = σ(ζ_i)` written on the way; summed in eight interleaved partial sums
/// per chunk (element i into sum i mod 8), then the sums in order, then chunks in order.
///
/// With `e = exp(−|ζ|)`: `softplus(ζ) = max(ζ, 0) + ln(1 + e)` and `σ(ζ) = 1/(1 + e)` for
/// ζ ≥ 0, `e/(1 + e)` otherwise, so one exponential serves both; `exp` and `ln` are the
/// vectorisable kernels of [`crate::vmath`].
fn data_loss(
    crew: &Crew,
    z: &[f64],
    dz: &[f64],
    t: f64,
    y: &[f64],
    zc: &mut [f64],
    sig: &mut [f64],
) -> f64 {
    let mut parts = loss_parts(zc, sig);
    crew.for_each_mut(&mut parts, |c, part| {
        let rows = c * CHUNK..c * CHUNK + part.zc.len();
        part.eval(&z[rows.clone()], &dz[rows.clone()], t, &y[rows]);
    });
    parts.iter().map(|p| p.sum).sum()
}

/// [`data_loss`] at θ = 0, where every margin is 0 (written to `zc`), σ = 1/2 and every row's
/// loss is `ln 2` (`max(0, 0) + ln(1 + e⁰) − ℓ·0`, the same bits as the kernel gives): the
/// chunks' sums of n copies of `vmath::ln(2)` without evaluating a row.
fn initial_loss(zc: &mut [f64], sig: &mut [f64]) -> f64 {
    zc.fill(0.0);
    sig.fill(0.5);
    let ln2 = crate::vmath::ln(2.0);
    let n = zc.len();
    (0..n.div_ceil(CHUNK))
        .map(|c| {
            let m = CHUNK.min(n - c * CHUNK);
            let mut acc = [0.0f64; 8];
            for i in 0..m {
                acc[i % 8] += ln2;
            }
            lane_tree(&acc)
        })
        .sum()
}

/// `dz = X̃δ` on every padded row, then [`data_loss`] at t = 1, in one pass per chunk.
#[allow(clippy::too_many_arguments)]
fn margin_and_loss(
    crew: &Crew,
    design: &impl Design,
    step: &[f64],
    z: &[f64],
    dz: &mut [f64],
    y: &[f64],
    zc: &mut [f64],
    sig: &mut [f64],
) -> f64 {
    // Padded and unpadded rows have the same number of chunks (CHUNK is a multiple of the
    // row padding).
    let mut parts: Vec<(&mut [f64], LossPart<'_>)> =
        dz.chunks_mut(CHUNK).zip(loss_parts(zc, sig)).collect();
    crew.for_each_mut(&mut parts, |c, (dz, part)| {
        design.margin_chunk(c, step, dz);
        let rows = c * CHUNK..c * CHUNK + part.zc.len();
        let m = rows.len();
        part.eval(&z[rows.clone()], &dz[..m], 1.0, &y[rows]);
    });
    parts.iter().map(|(_, p)| p.sum).sum()
}

/// One chunk of [`data_loss`].
struct LossChunk<'a> {
    z: &'a [f64],
    dz: &'a [f64],
    t: f64,
    y: &'a [f64],
    zc: &'a mut [f64],
    sig: &'a mut [f64],
}

impl pulp::WithSimd for LossChunk<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> f64 {
        let LossChunk {
            z,
            dz,
            t,
            y,
            zc,
            sig,
        } = self;
        let n = y.len().min(CHUNK);
        let (z, dz, y) = (&z[..n], &dz[..n], &y[..n]);
        let (zc, sig) = (&mut zc[..n], &mut sig[..n]);
        // Element-wise first (a plain loop the compiler vectorises), then the sums.
        let mut val = [0.0f64; CHUNK];
        let val = &mut val[..n];
        for i in 0..n {
            let zt = z[i] + t * dz[i];
            zc[i] = zt;
            let e = crate::vmath::exp_nonpos(-zt.abs());
            let one_e = 1.0 + e;
            let num = if zt >= 0.0 { 1.0 } else { e };
            sig[i] = num / one_e;
            val[i] = zt.max(0.0) + crate::vmath::ln(one_e) - y[i] * zt;
        }
        sum_lanes(val)
    }
}

/// `dz_i = ⟨δ_w, x_i⟩ + δ_c` for the step `δ = (δ_w, δ_c)`.
fn margin_rows(x: &[f64], d: usize, step: &[f64], dz: &mut [f64]) {
    pulp::Arch::new().dispatch(MarginRows {
        x,
        d,
        w: &step[..d],
        c: step[d],
        out: dz,
    });
}

/// `out_i = ⟨x_i, w⟩ + c` for the rows of `x`.
struct MarginRows<'a> {
    x: &'a [f64],
    d: usize,
    w: &'a [f64],
    c: f64,
    out: &'a mut [f64],
}

impl pulp::WithSimd for MarginRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let MarginRows { x, d, w, c, out } = self;
        for (xi, o) in x.chunks_exact(d).zip(out.iter_mut()) {
            *o = dot_lanes(xi, w) + c;
        }
    }
}

/// `⟨x, w⟩` in eight interleaved partial sums (element i into sum i mod 8, fused
/// multiply-adds) added in a fixed tree: vectorises, and gives the same bits on every
/// instruction set. Call it only from code compiled for the selected instruction set (inside a
/// `pulp` dispatch), where `mul_add` is one instruction.
#[inline(always)]
pub(crate) fn dot_lanes(x: &[f64], w: &[f64]) -> f64 {
    const L: usize = 8;
    let mut acc = [0.0f64; L];
    let full = x.len() - x.len() % L;
    for (xs, ws) in x[..full].chunks_exact(L).zip(w[..full].chunks_exact(L)) {
        for q in 0..L {
            acc[q] = xs[q].mul_add(ws[q], acc[q]);
        }
    }
    for (q, (a, b)) in x[full..].iter().zip(&w[full..]).enumerate() {
        acc[q] = a.mul_add(*b, acc[q]);
    }
    lane_tree(&acc)
}

/// Gradient and Hessian of the objective at `theta` (margins computed from scratch).
#[cfg(test)]
fn grad_hess(x: &[f64], d: usize, y: &[f64], theta: &[f64], ridge: f64) -> (Vec<f64>, Vec<f64>) {
    let mut z = vec![0.0; y.len()];
    margin_rows(x, d, theta, &mut z);
    let (mut zc, mut sig) = (vec![0.0; y.len()], vec![0.0; y.len()]);
    let crew = Crew::serial();
    data_loss(&crew, &z, &z, 0.0, y, &mut zc, &mut sig);
    let p = d + 1;
    let (mut grad, mut upper) = (vec![0.0; p], vec![0.0; p * p]);
    RowMajor::new(x, d).grad_hess(&crew, y, &sig, theta, ridge, &mut grad, &mut upper);
    (grad, upper)
}

/// `grad` and `upper` from the chunks' `(gradient, Hessian)` added in chunk order, plus the
/// ridge `ρ_r θ_w` and `ρ_r I_w`.
fn sum_parts(
    parts: &[(Vec<f64>, Vec<f64>)],
    theta: &[f64],
    ridge: f64,
    grad: &mut [f64],
    upper: &mut [f64],
) {
    let (p, d) = (grad.len(), grad.len() - 1);
    grad.fill(0.0);
    upper.fill(0.0);
    for (g, h) in parts {
        crate::linalg::axpy(1.0, g, grad);
        crate::linalg::axpy(1.0, h, upper);
    }
    for (gi, wi) in grad.iter_mut().zip(&theta[..d]) {
        *gi += ridge * wi;
    }
    for a in 0..d {
        upper[a * p + a] += ridge;
    }
}

/// Bytes of `x` per cache block of the Gram kernel: a block of rows stays in L1 while every
/// register tile of the triangle sweeps it.
const GRAM_BLOCK_BYTES: usize = 24 * 1024;

/// Upper triangle (row-major, `p × p` with `p = d + 1`) of `Σ_i s_i x̃_i x̃_iᵀ`, x̃ = (x, 1).
///
/// This is the hot loop of the simulator: `n (d+1)(d+2)/2` multiply-adds per Newton iteration.
/// The `d × d` block is computed by a register-tiled kernel over L1-sized blocks of rows
/// (tiles of 8 Hessian rows × 2 SIMD vectors of columns with AVX-512, 4 × 2 otherwise, one
/// fused multiply-add per element and row, the row weights folded into the vector operand; a
/// tile whose first column vector lies entirely below the diagonal computes only the second),
/// dispatched at run time to the widest instruction set available (AVX-512, AVX2+FMA, or
/// scalar); columns beyond the last full tile are accumulated directly, and the intercept
/// row/column on the pass that scales the rows. Every sum runs over rows in their order, so the
/// result depends only on the input and the instruction set, never on threading. Entries below
/// the diagonal are zero.
pub fn weighted_gram_upper(x: &[f64], d: usize, s: &[f64]) -> Vec<f64> {
    let p = d + 1;
    let rows = s.len().min(x.len() / d.max(1));
    let mut h = vec![0.0; p * p];
    if d == 0 {
        h[0] = s.iter().sum();
        return h;
    }
    gram_upper_into(&x[..rows * d], d, &s[..rows], None, &mut h, &mut []);
    h
}

/// Adds `Σ_i s_i x̃_i x̃_iᵀ` (upper triangle) to `h` and, when `r` is given, `Σ_i r_i x̃_i` to
/// `g` (length d + 1), in one pass over the rows of `x` (`s.len()` rows of width `d ≥ 1`).
fn gram_upper_into(
    x: &[f64],
    d: usize,
    s: &[f64],
    r: Option<&[f64]>,
    h: &mut [f64],
    g: &mut [f64],
) {
    pulp::Arch::new().dispatch(GramKernel { x, d, s, r, h, g });
}

/// The SIMD body of [`gram_upper_into`].
struct GramKernel<'a> {
    x: &'a [f64],
    d: usize,
    s: &'a [f64],
    r: Option<&'a [f64]>,
    h: &'a mut [f64],
    g: &'a mut [f64],
}

impl pulp::WithSimd for GramKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Self::Output {
        if S::F64_LANES >= 8 {
            gram_tiles::<S, 8>(simd, self);
        } else {
            gram_tiles::<S, 4>(simd, self);
        }
    }
}

/// One register tile: `h[a0 + r][b0 ..] += Σ_i x_{i,a0+r} · y_i[b0 .. b0 + NV lanes]` over the
/// rows of a block, where `y_i = s_i x_i` (row stride d for both).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gram_tile<S: pulp::Simd, const MR: usize, const NV: usize>(
    simd: S,
    xb: &[f64],
    yb: &[f64],
    d: usize,
    p: usize,
    a0: usize,
    b0: usize,
    h: &mut [f64],
) {
    let lanes = S::F64_LANES;
    let mut acc = [[simd.splat_f64s(0.0); NV]; MR];
    for (xi, yi) in xb.chunks_exact(d).zip(yb.chunks_exact(d)) {
        let (v, _) = S::as_simd_f64s(&yi[b0..b0 + NV * lanes]);
        let xa = &xi[a0..a0 + MR];
        for (accr, &x) in acc.iter_mut().zip(xa) {
            let xv = simd.splat_f64s(x);
            for (accq, &vq) in accr.iter_mut().zip(v) {
                *accq = simd.mul_add_f64s(xv, vq, *accq);
            }
        }
    }
    for (r, accr) in acc.iter().enumerate() {
        let a = a0 + r;
        let (hv, _) = S::as_mut_simd_f64s(&mut h[a * p + b0..a * p + b0 + NV * lanes]);
        for (hq, &aq) in hv.iter_mut().zip(accr) {
            *hq = simd.add_f64s(*hq, aq);
        }
    }
}

/// A tile of `mr ≤ 8` rows, dispatched to its fixed size.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gram_tile_rows<S: pulp::Simd, const NV: usize>(
    simd: S,
    xb: &[f64],
    yb: &[f64],
    d: usize,
    p: usize,
    a0: usize,
    mr: usize,
    b0: usize,
    h: &mut [f64],
) {
    match mr {
        8 => gram_tile::<S, 8, NV>(simd, xb, yb, d, p, a0, b0, h),
        7 => gram_tile::<S, 7, NV>(simd, xb, yb, d, p, a0, b0, h),
        6 => gram_tile::<S, 6, NV>(simd, xb, yb, d, p, a0, b0, h),
        5 => gram_tile::<S, 5, NV>(simd, xb, yb, d, p, a0, b0, h),
        4 => gram_tile::<S, 4, NV>(simd, xb, yb, d, p, a0, b0, h),
        3 => gram_tile::<S, 3, NV>(simd, xb, yb, d, p, a0, b0, h),
        2 => gram_tile::<S, 2, NV>(simd, xb, yb, d, p, a0, b0, h),
        1 => gram_tile::<S, 1, NV>(simd, xb, yb, d, p, a0, b0, h),
        _ => unreachable!("tiles have at most 8 rows"),
    }
}

/// `y_i = s_i x_i` for the rows of a block, with `col += Σ_i y_i` and (when `r` is given)
/// `gw += Σ_i r_i x_i`, accumulated in registers one column vector at a time (each column is
/// summed over the block's rows in order, then added to its running total).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scale_rows<S: pulp::Simd>(
    simd: S,
    xb: &[f64],
    d: usize,
    sb: &[f64],
    rb: Option<&[f64]>,
    yb: &mut [f64],
    col: &mut [f64],
    gw: &mut [f64],
) {
    let lanes = S::F64_LANES;
    let mut c0 = 0;
    while c0 + lanes <= d {
        let mut cacc = simd.splat_f64s(0.0);
        let mut gacc = simd.splat_f64s(0.0);
        for (i, (xi, yi)) in xb.chunks_exact(d).zip(yb.chunks_exact_mut(d)).enumerate() {
            let (xv, _) = S::as_simd_f64s(&xi[c0..c0 + lanes]);
            let yv = simd.mul_f64s(simd.splat_f64s(sb[i]), xv[0]);
            let (yo, _) = S::as_mut_simd_f64s(&mut yi[c0..c0 + lanes]);
            yo[0] = yv;
            cacc = simd.add_f64s(cacc, yv);
            if let Some(rb) = rb {
                gacc = simd.mul_add_f64s(simd.splat_f64s(rb[i]), xv[0], gacc);
            }
        }
        let (cv, _) = S::as_mut_simd_f64s(&mut col[c0..c0 + lanes]);
        cv[0] = simd.add_f64s(cv[0], cacc);
        if rb.is_some() {
            let (gv, _) = S::as_mut_simd_f64s(&mut gw[c0..c0 + lanes]);
            gv[0] = simd.add_f64s(gv[0], gacc);
        }
        c0 += lanes;
    }
    for c in c0..d {
        let (mut cacc, mut gacc) = (0.0, 0.0);
        for (i, (xi, yi)) in xb.chunks_exact(d).zip(yb.chunks_exact_mut(d)).enumerate() {
            yi[c] = sb[i] * xi[c];
            cacc += yi[c];
            if let Some(rb) = rb {
                gacc = rb[i].mul_add(xi[c], gacc);
            }
        }
        col[c] += cacc;
        if rb.is_some() {
            gw[c] += gacc;
        }
    }
}

/// `v[0] + … + v[L−1]` by pairwise halving (`v[i] += v[i + L/2]`, L = 1, 2, 4 or 8): for
/// eight lanes `((v₀ + v₄) + (v₂ + v₆)) + ((v₁ + v₅) + (v₃ + v₇))`, the order of every lane sum
/// of the simulator (the SIMD kernels' lanes and the eight interleaved partial sums of
/// [`sum_lanes`] and [`dot_lanes`]); written out, so that it stays in registers.
#[inline(always)]
pub(crate) fn lane_tree(v: &[f64]) -> f64 {
    match *v {
        [a] => a,
        [a, b] => a + b,
        [a, b, c, d] => (a + c) + (b + d),
        [a, b, c, d, e, f, g, h] => ((a + e) + (c + g)) + ((b + f) + (d + h)),
        _ => unreachable!("SIMD vectors of f64 have 1, 2, 4 or 8 lanes"),
    }
}

/// `Σ v_i` in eight interleaved partial sums (element i into sum i mod 8) added in a fixed tree.
#[inline(always)]
fn sum_lanes(v: &[f64]) -> f64 {
    const L: usize = 8;
    let mut acc = [0.0f64; L];
    let full = v.len() - v.len() % L;
    for vs in v[..full].chunks_exact(L) {
        for q in 0..L {
            acc[q] += vs[q];
        }
    }
    for (q, x) in v[full..].iter().enumerate() {
        acc[q] += x;
    }
    lane_tree(&acc)
}

#[inline(always)]
fn gram_tiles<S: pulp::Simd, const MR: usize>(simd: S, k: GramKernel<'_>) {
    let GramKernel { x, d, s, r, h, g } = k;
    let p = d + 1;
    let lanes = S::F64_LANES;
    let nr = 2 * lanes;
    // Columns [0, full) are covered by SIMD tiles, [full, d) by the scalar tail.
    let full = (d / nr) * nr;
    let block_rows = (GRAM_BLOCK_BYTES / (8 * d)).clamp(8, 256);
    let mut y = Aligned::zeros(block_rows * d);
    // Intercept column Σ s_i x_i and corner Σ s_i; gradient Σ r_i x̃_i.
    let mut col = vec![0.0; d];
    let (mut ssum, mut rsum) = (0.0, 0.0);
    let mut gw = vec![0.0; if r.is_some() { d } else { 0 }];
    for (bi, (xb, sb)) in x
        .chunks(block_rows * d)
        .zip(s.chunks(block_rows))
        .enumerate()
    {
        let yb = &mut y[..xb.len()];
        let rb = r.map(|r| &r[bi * block_rows..bi * block_rows + sb.len()]);
        scale_rows(simd, xb, d, sb, rb, yb, &mut col, &mut gw);
        ssum += sum_lanes(sb);
        if let Some(rb) = rb {
            rsum += sum_lanes(rb);
        }
        let yb = &*yb;
        let mut b0 = 0;
        while b0 < full {
            // Row tiles of the column block [b0, b0 + nr): rows a < b0 + nr.
            let rows_end = b0 + nr;
            let mut a0 = 0;
            while a0 < rows_end {
                let mr = MR.min(rows_end - a0);
                if a0 >= b0 + lanes {
                    // The first column vector lies below the diagonal for every row here.
                    gram_tile_rows::<S, 1>(simd, xb, yb, d, p, a0, mr, b0 + lanes, h);
                } else {
                    gram_tile_rows::<S, 2>(simd, xb, yb, d, p, a0, mr, b0, h);
                }
                a0 += MR;
            }
            b0 += nr;
        }
        // Scalar tail columns b ∈ [full, d), rows a ≤ b.
        for b in full..d {
            for (xi, yi) in xb.chunks_exact(d).zip(yb.chunks_exact(d)) {
                let c = yi[b];
                for (a, &xa) in xi[..=b].iter().enumerate() {
                    h[a * p + b] += c * xa;
                }
            }
        }
    }
    for (a, v) in col.iter().enumerate() {
        h[a * p + d] += v;
    }
    h[d * p + d] += ssum;
    if r.is_some() {
        for (gc, v) in g.iter_mut().zip(&gw) {
            *gc += v;
        }
        g[d] += rsum;
    }
    // The SIMD tiles also filled some entries below the diagonal: clear them.
    for a in 1..d {
        for v in &mut h[a * p..a * p + a.min(full)] {
            *v = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agreement::sigmoid;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    #[test]
    fn recovers_planted_logistic_model() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, d) = (20_000, 5);
        let w_true = [1.0, -0.5, 0.25, 0.0, 2.0];
        let c_true = 0.3;
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let xi: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
            let p = sigmoid(dot(&xi, &w_true) + c_true);
            y.push(if rng.gen::<f64>() < p { 1.0 } else { 0.0 });
            x.extend(xi);
        }
        let f = fit(&x, d, &y, 1e-3).unwrap();
        for (a, b) in f.w.iter().zip(&w_true) {
            assert!((a - b).abs() < 0.08, "{a} vs {b}");
        }
        assert!((f.intercept - c_true).abs() < 0.08);
        // Gradient vanishes at the optimum.
        let mut theta = f.w.clone();
        theta.push(f.intercept);
        let (g, _) = grad_hess(&x, d, &y, &theta, 1e-3);
        assert!(dot(&g, &g).sqrt() < 1e-6, "{g:?}");
    }

    #[test]
    fn separable_data_with_ridge_converges() {
        let x = vec![-2.0, -1.0, 1.0, 2.0];
        let y = vec![0.0, 0.0, 1.0, 1.0];
        let f = fit(&x, 1, &y, 1e-3).unwrap();
        assert!(f.w[0] > 5.0);
    }

    #[test]
    fn gram_kernel_matches_naive() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for (n, d) in [(1, 3), (7, 4), (13, 9)] {
            let x: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
            let s: Vec<f64> = (0..n).map(|_| rng.gen()).collect();
            let h = weighted_gram_upper(&x, d, &s);
            let p = d + 1;
            for a in 0..p {
                for b in a..p {
                    let naive: f64 = (0..n)
                        .map(|i| {
                            let xa = if a < d { x[i * d + a] } else { 1.0 };
                            let xb = if b < d { x[i * d + b] } else { 1.0 };
                            s[i] * xa * xb
                        })
                        .sum();
                    assert!((h[a * p + b] - naive).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn gram_kernel_simd_tiles_match_naive() {
        // Widths that exercise full SIMD tiles, partial row tiles, the scalar column tail and
        // several cache blocks of rows.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (n, d) in [(50, 16), (300, 17), (97, 37), (700, 64), (40, 130)] {
            let x: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
            let s: Vec<f64> = (0..n).map(|_| rng.gen()).collect();
            let h = weighted_gram_upper(&x, d, &s);
            let p = d + 1;
            for a in 0..p {
                for b in 0..p {
                    let got = h[a * p + b];
                    if b < a {
                        assert_eq!(got, 0.0, "below diagonal ({a},{b}) d={d}");
                        continue;
                    }
                    let naive: f64 = (0..n)
                        .map(|i| {
                            let xa = if a < d { x[i * d + a] } else { 1.0 };
                            let xb = if b < d { x[i * d + b] } else { 1.0 };
                            s[i] * xa * xb
                        })
                        .sum();
                    assert!(
                        (got - naive).abs() < 1e-10 * (1.0 + naive.abs()),
                        "({a},{b}) d={d}: {got} vs {naive}"
                    );
                }
            }
        }
    }

    #[test]
    fn fit_is_the_same_serial_or_parallel() {
        // Above the parallel threshold the fit runs on rayon; the result must not depend on it.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let (n, d) = (5000, 12);
        let w_true: Vec<f64> = (0..d)
            .map(|_| rng.sample::<f64, _>(StandardNormal) * 0.5)
            .collect();
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let xi: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
            y.push(if rng.gen::<f64>() < sigmoid(dot(&xi, &w_true)) {
                1.0
            } else {
                0.0
            });
            x.extend(xi);
        }
        let f = fit(&x, d, &y, 1e-3).unwrap();
        let g = pool(1).install(|| fit(&x, d, &y, 1e-3).unwrap());
        assert_eq!(f, g);
        // And the optimum is the optimum: zero gradient.
        let mut theta = f.w.clone();
        theta.push(f.intercept);
        let (grad, _) = grad_hess(&x, d, &y, &theta, 1e-3);
        assert!(dot(&grad, &grad).sqrt() < 1e-6, "{grad:?}");
    }

    /// n rows of d standard normals and labels drawn from a planted logistic model with weights
    /// `scale · N(0, 1)` and intercept `bias`.
    fn planted(
        rng: &mut rand_chacha::ChaCha8Rng,
        n: usize,
        d: usize,
        scale: f64,
        bias: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let w: Vec<f64> = (0..d)
            .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let x: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
        let y: Vec<f64> = x
            .chunks_exact(d)
            .map(|xi| f64::from(rng.gen::<f64>() < sigmoid(dot(xi, &w) + bias)))
            .collect();
        (x, y)
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Random rows, σ values (0 on the padding) and labels for the design tests.
    fn design_data(n: usize, d: usize, rows: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
        let mut sig: Vec<f64> = (0..n).map(|_| rng.gen()).collect();
        let mut y: Vec<f64> = (0..n).map(|_| f64::from(rng.gen::<bool>())).collect();
        sig.resize(rows, 0.0);
        y.resize(rows, 0.0);
        (x, sig, y)
    }

    #[test]
    fn feature_major_passes_match_the_formulas() {
        // Widths around the 4-feature tiles and the limit, row counts around the 8-row padding
        // and the 512-row chunks; one thread's buffer is reused from size to size.
        let ridge = 0.3;
        for (n, d) in [
            (1, 1),
            (7, 3),
            (8, 4),
            (9, 5),
            (100, 16),
            (513, 17),
            (1100, 31),
        ] {
            let rows = usize::div_ceil(n, 8) * 8;
            let (x, sig, y) = design_data(n, d, rows, (n * 100 + d) as u64);
            let crew = Crew::serial();
            let mut fm = narrow::FeatureMajor::new(&crew, &x, d);
            assert_eq!(fm.padded_rows(), rows);
            let p = d + 1;
            let theta: Vec<f64> = (0..p).map(|a| 0.1 * a as f64 - 0.5).collect();
            let (mut grad, mut upper) = (vec![f64::NAN; p], vec![f64::NAN; p * p]);
            fm.grad_hess(&crew, &y, &sig, &theta, ridge, &mut grad, &mut upper);
            let xt = |i: usize, a: usize| if a < d { x[i * d + a] } else { 1.0 };
            for a in 0..p {
                let mut g: f64 = (0..n).map(|i| (sig[i] - y[i]) * xt(i, a)).sum();
                if a < d {
                    g += ridge * theta[a];
                }
                assert!(
                    (grad[a] - g).abs() < 1e-10 * (1.0 + g.abs()),
                    "n={n} d={d} g[{a}]"
                );
                for b in 0..p {
                    let got = upper[a * p + b];
                    if b < a {
                        assert_eq!(got, 0.0, "n={n} d={d} below the diagonal ({a},{b})");
                        continue;
                    }
                    let mut h: f64 = (0..n)
                        .map(|i| sig[i] * (1.0 - sig[i]) * xt(i, a) * xt(i, b))
                        .sum();
                    if a == b && a < d {
                        h += ridge;
                    }
                    assert!(
                        (got - h).abs() < 1e-10 * (1.0 + h.abs()),
                        "n={n} d={d} H[{a}][{b}] = {got} vs {h}"
                    );
                }
            }
            let mut dz = vec![f64::NAN; rows];
            margin_all(&fm, &theta, &mut dz);
            for i in 0..n {
                let want: f64 = (0..p).map(|a| theta[a] * xt(i, a)).sum();
                assert!(
                    (dz[i] - want).abs() < 1e-12 * (1.0 + want.abs()),
                    "n={n} d={d} row {i}"
                );
            }
        }
    }

    #[test]
    fn initial_loss_is_the_loss_kernel_at_zero() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        for n in [0, 7, 512, 1000, 1537] {
            let y: Vec<f64> = (0..n).map(|_| f64::from(rng.gen::<bool>())).collect();
            let zeros = vec![0.0; n];
            let (mut zc, mut sig) = (vec![f64::NAN; n], vec![f64::NAN; n]);
            let want = data_loss(&Crew::serial(), &zeros, &zeros, 0.0, &y, &mut zc, &mut sig);
            let (mut zc0, mut sig0) = (vec![f64::NAN; n], vec![f64::NAN; n]);
            let got = initial_loss(&mut zc0, &mut sig0);
            assert_eq!(got.to_bits(), want.to_bits(), "n = {n}");
            assert_eq!(zc0, zc);
            assert_eq!(sig0, sig);
        }
    }

    /// `X̃θ` on every padded row, chunk by chunk.
    fn margin_all(design: &impl Design, theta: &[f64], dz: &mut [f64]) {
        for (c, out) in dz.chunks_mut(CHUNK).enumerate() {
            design.margin_chunk(c, theta, out);
        }
    }

    #[test]
    fn feature_major_passes_are_the_same_serial_or_parallel() {
        let (n, d) = (3000, 13);
        let rows = 3000;
        let (x, sig, y) = design_data(n, d, rows, 9);
        let theta: Vec<f64> = (0..=d).map(|a| 0.05 * a as f64).collect();
        let run = |crew: &Crew| {
            let mut fm = narrow::FeatureMajor::new(crew, &x, d);
            let p = d + 1;
            let mut gh = (vec![0.0; p], vec![0.0; p * p]);
            fm.grad_hess(crew, &y, &sig, &theta, 1e-3, &mut gh.0, &mut gh.1);
            let mut dz = vec![0.0; rows];
            margin_all(&fm, &theta, &mut dz);
            (gh, dz)
        };
        let serial = run(&Crew::serial());
        for threads in [2, 3] {
            let crewed = pool(threads).install(|| Crew::scope(|crew| run(crew)));
            assert_eq!(crewed, serial, "{threads} threads");
        }
    }

    #[test]
    fn fits_are_the_same_on_any_crew() {
        // The simulator's size (two chunks), a ragged one, and the row-major layout.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for (n, d) in [(1000, 16), (1700, 5), (1200, 40)] {
            let (x, y) = planted(&mut rng, n, d, 0.4, -0.3);
            let serial = fit_in(&Crew::serial(), &x, d, &y, 1e-3).unwrap();
            for threads in [2, 3] {
                // Many fits in one crew, as the simulator runs them.
                let all = pool(threads).install(|| {
                    Crew::scope(|crew| {
                        (0..20)
                            .map(|_| fit_in(crew, &x, d, &y, 1e-3).unwrap())
                            .collect::<Vec<_>>()
                    })
                });
                for f in all {
                    assert_eq!(f, serial, "n={n} d={d}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn feature_major_and_row_major_fits_find_the_same_optimum() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
        for (n, d) in [(300, 2), (2000, 16), (1500, 31)] {
            let (x, y) = planted(&mut rng, n, d, 0.5, 0.2);
            let crew = Crew::serial();
            let narrow = fit_impl(
                &crew,
                &mut narrow::FeatureMajor::new(&crew, &x, d),
                d,
                &y,
                1e-3,
            )
            .unwrap();
            let rows = fit_impl(&crew, &mut RowMajor::new(&x, d), d, &y, 1e-3).unwrap();
            for (a, b) in narrow.w.iter().zip(&rows.w) {
                assert!((a - b).abs() < 1e-8, "d={d}: {a} vs {b}");
            }
            assert!((narrow.intercept - rows.intercept).abs() < 1e-8);
            assert!((narrow.loss - rows.loss).abs() < 1e-9 * rows.loss, "d={d}");
            // And the public entry point takes the feature-major path up to d = 31.
            assert_eq!(fit(&x, d, &y, 1e-3).unwrap(), narrow);
        }
    }

    /// Near the optimum a step's decrease of the loss is below the sum's rounding error; the
    /// Armijo test alone then rejected good steps at random, and some fits halved their way
    /// through seven extra iterations (up to 15 instead of 7 at d = 16, n = 10³).
    #[test]
    fn converges_quadratically_to_machine_precision() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (d, n, ridge) = (16, 1000, 1e-3);
        let mut worst = 0;
        for _ in 0..40 {
            let (x, y) = planted(&mut rng, n, d, 0.375, 0.1);
            let f = fit(&x, d, &y, ridge).unwrap();
            worst = worst.max(f.iterations);
            // The gradient at the fit, summed naively.
            let mut g = vec![0.0; d + 1];
            for (xi, &yi) in x.chunks_exact(d).zip(&y) {
                let r = sigmoid(dot(xi, &f.w) + f.intercept) - yi;
                for a in 0..d {
                    g[a] += r * xi[a];
                }
                g[d] += r;
            }
            for a in 0..d {
                g[a] += ridge * f.w[a];
            }
            let gn = dot(&g, &g).sqrt();
            assert!(gn < 1e-9 * n as f64, "|∇L| = {gn:e}");
        }
        assert!(worst <= 8, "a fit took {worst} Newton iterations");
    }

    /// With every label 1 the unpenalised intercept has no optimum: the loss falls towards 0
    /// until it is exactly 0 and no step can decrease it, and the fit stops there.
    #[test]
    fn labels_all_one_stop_where_the_loss_vanishes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for (n, d) in [(1, 5), (7, 16), (40, 3)] {
            let x: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
            let f = fit(&x, d, &vec![1.0; n], 1e-3).unwrap();
            assert!(f.intercept > 30.0 && f.loss < 1e-12, "n={n}: {f:?}");
        }
    }

    #[test]
    fn newton_step_solves_spd_systems_and_jitters_singular_ones() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for p in [1, 2, 5, 17, 40] {
            // H = AᵀA + I (SPD); only its upper triangle is passed.
            let a: Vec<f64> = (0..p * p).map(|_| rng.sample(StandardNormal)).collect();
            let h: Vec<f64> = (0..p * p)
                .map(|ij| {
                    let (i, j) = (ij / p, ij % p);
                    let v: f64 = (0..p).map(|k| a[k * p + i] * a[k * p + j]).sum();
                    v + if i == j { 1.0 } else { 0.0 }
                })
                .collect();
            let upper: Vec<f64> = (0..p * p)
                .map(|ij| if ij / p <= ij % p { h[ij] } else { 0.0 })
                .collect();
            let g: Vec<f64> = (0..p).map(|_| rng.sample(StandardNormal)).collect();
            let mut scratch = vec![0.0; p * p];
            let step = newton_step(&upper, &g, &mut scratch);
            for i in 0..p {
                let hd: f64 = (0..p).map(|j| h[i * p + j] * step[j]).sum();
                assert!(
                    (hd + g[i]).abs() < 1e-9 * (1.0 + g[i].abs()),
                    "p={p} row {i}"
                );
            }
        }
        // A singular H (rank one): the jitter makes it solvable and the step finite.
        let upper = [1.0, 1.0, 0.0, 1.0];
        let step = newton_step(&upper, &[1.0, -1.0], &mut [0.0; 4]);
        assert!(step.iter().all(|v| v.is_finite()), "{step:?}");
    }

    #[test]
    fn no_rows_give_the_ridge_optimum_on_both_paths() {
        for d in [3, 40] {
            let f = fit(&[], d, &[], 1e-3).unwrap();
            assert_eq!(f.w, vec![0.0; d]);
            assert_eq!((f.intercept, f.loss), (0.0, 0.0));
        }
    }

    #[test]
    fn rejects_bad_labels() {
        assert!(matches!(
            fit(&[1.0], 1, &[2.0], 0.0),
            Err(FitError::Invalid(_))
        ));
        assert!(matches!(
            fit(&[1.0, 2.0], 1, &[1.0], 0.0),
            Err(FitError::Shape(_))
        ));
    }
}
