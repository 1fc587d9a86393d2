//! Monte Carlo estimators of closed-form quantities, used to check the theory by simulation.
//!
//! Every estimator returns `(estimate, standard error)`.

use rand::Rng;

use crate::agreement::sigmoid;
use crate::linalg::dot;
use crate::sim::Responses;

/// Sample correlation of `s_w = ⟨w, h⟩` with u* (estimates `a(w)`); SE `(1 − r²)/√n`.
pub fn alignment(resp: &Responses, w: &[f64]) -> (f64, f64) {
    let s: Vec<f64> = (0..resp.len()).map(|i| dot(w, resp.h_row(i))).collect();
    let r = correlation(&s, &resp.u);
    (r, (1.0 - r * r) / (resp.len() as f64).sqrt())
}

/// Pearson correlation, accumulated in f64 around the means.
pub fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Deterministic-judge agreement over consecutive pairs: `P[sign Δs_w = sign Δf(u*)]`.
pub fn agreement(resp: &Responses, w: &[f64], f: impl Fn(f64) -> f64) -> (f64, f64) {
    let pairs = resp.len() / 2;
    let hits = (0..pairs)
        .filter(|&i| {
            let ds = dot(w, resp.h_row(2 * i)) - dot(w, resp.h_row(2 * i + 1));
            let du = f(resp.u[2 * i]) - f(resp.u[2 * i + 1]);
            (ds > 0.0) == (du > 0.0)
        })
        .count();
    proportion(hits, pairs)
}

/// Bradley–Terry judge agreement over consecutive pairs: labels drawn from
/// `σ(β Δs_w + b_pos)`, compared with the sign of Δu*.
pub fn agreement_bt(
    resp: &Responses,
    w: &[f64],
    beta: f64,
    b_pos: f64,
    rng: &mut impl Rng,
) -> (f64, f64) {
    let pairs = resp.len() / 2;
    let hits = (0..pairs)
        .filter(|&i| {
            let ds = dot(w, resp.h_row(2 * i)) - dot(w, resp.h_row(2 * i + 1));
            let first = rng.gen::<f64>() < sigmoid(beta * ds + b_pos);
            first == (resp.u[2 * i] > resp.u[2 * i + 1])
        })
        .count();
    proportion(hits, pairs)
}

/// Mean and standard error of a sample.
pub fn mean_se(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, (v / n).sqrt())
}

fn proportion(hits: usize, n: usize) -> (f64, f64) {
    let p = hits as f64 / n as f64;
    (p, (p * (1.0 - p) / n as f64).sqrt())
}
