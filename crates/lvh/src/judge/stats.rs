//! Statistics of judged pairs (MEASURE §3–§4), pure functions over score tables.
//!
//! Per pair `i` with truth `chosen ≻ rejected`, judged with `y1 = chosen`, `y2 = rejected`:
//!
//! ```text
//! S_C,i   = ½[ab_i − ba_i]           b_pos,i = ½[ab_i + ba_i]
//! P_C     = mean_i win(S_C,i)        P_gen   = mean_i win(s_gen(chosen_i) − s_gen(rejected_i))
//! G_C     = P_C − P_gen              a       = sin(π(P − ½))   (THEORY §4 inverse)
//! win(d)  = 1 if d > 0, 0 if d < 0, ½ for a tie or an undefined score
//! ```
//!
//! Intervals are paired percentile bootstraps over pairs: one set of resampled pair indices
//! serves every statistic, so `G_C`'s interval accounts for the correlation of `P_C` and
//! `P_gen` on the same pairs.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::datasets::PairKind;

/// Bootstrap resamples used by the commands unless told otherwise.
pub const DEFAULT_RESAMPLES: usize = 2000;

/// `1` if `d > 0`, `0` if `d < 0`, `½` for a tie or NaN.
pub fn win(d: f64) -> f64 {
    if d > 0.0 {
        1.0
    } else if d < 0.0 {
        0.0
    } else {
        0.5
    }
}

/// The agreement coefficient `a = sin(π(P − ½))` of a pairwise agreement `P`.
pub fn agreement_coefficient(p: f64) -> f64 {
    (std::f64::consts::PI * (p - 0.5)).sin()
}

/// `S_C = ½[score(y1 as A, y2 as B) − score(y2 as A, y1 as B)]`.
pub fn s_c(ab: f64, ba: f64) -> f64 {
    0.5 * (ab - ba)
}

/// `b_pos = ½[score(y1 as A, y2 as B) + score(y2 as A, y1 as B)]`; positive favours (A).
pub fn position_bias(ab: f64, ba: f64) -> f64 {
    0.5 * (ab + ba)
}

/// The logistic function `σ(s) = 1 / (1 + e^{−s})`.
pub fn sigmoid(s: f64) -> f64 {
    1.0 / (1.0 + (-s).exp())
}

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Whether `x` lies inside (ends included).
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }

    /// The image under a non-decreasing map.
    pub fn map(self, f: impl Fn(f64) -> f64) -> Self {
        Self {
            lo: f(self.lo),
            hi: f(self.hi),
        }
    }
}

/// Mean in f64; NaN for no values.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Paired percentile bootstrap 95% intervals of the means of several per-item columns (all of
/// length `n`): each of `resamples` draws `n` item indices with replacement from `rng` and
/// takes every column's mean on the same indices.
///
/// # Panics
/// If the columns differ in length.
pub fn bootstrap_means<R: Rng + ?Sized>(
    columns: &[&[f64]],
    resamples: usize,
    rng: &mut R,
) -> Vec<Interval> {
    let n = columns.first().map_or(0, |c| c.len());
    assert!(
        columns.iter().all(|c| c.len() == n),
        "columns of equal length"
    );
    if n == 0 || resamples == 0 {
        return vec![
            Interval {
                lo: f64::NAN,
                hi: f64::NAN
            };
            columns.len()
        ];
    }
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); columns.len()];
    let mut sums = vec![0.0f64; columns.len()];
    for _ in 0..resamples {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for _ in 0..n {
            let i = rng.gen_range(0..n);
            for (s, c) in sums.iter_mut().zip(columns) {
                *s += c[i];
            }
        }
        for (d, s) in draws.iter_mut().zip(&sums) {
            d.push(s / n as f64);
        }
    }
    draws
        .into_iter()
        .map(|mut d| {
            d.sort_by(f64::total_cmp);
            Interval {
                lo: quantile_sorted(&d, 0.025),
                hi: quantile_sorted(&d, 0.975),
            }
        })
        .collect()
}

/// Linear-interpolation quantile of sorted data (numpy's default).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// One judged pair with its generation scores: `y1 = chosen`, `y2 = rejected`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GapRow {
    /// `s_gen(chosen)`, `s_gen(rejected)` (mean token log-probability; NaN if empty).
    pub gen: [f64; 2],
    /// Weighted judge score with chosen shown as (A).
    pub ab: f64,
    /// Weighted judge score with rejected shown as (A).
    pub ba: f64,
    /// Clear or subtle, when the data says.
    pub kind: Option<PairKind>,
}

/// Position-bias summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionBiasStats {
    /// Mean `b_pos` (log-odds toward (A); positive favours (A)).
    pub mean: f64,
    /// Its bootstrap interval.
    pub mean_ci: Interval,
    /// Share of pairs where the same letter wins in both orders (the decision follows the
    /// position, not the responses).
    pub same_letter_share: f64,
    /// Share of pairs where (A) wins in both orders.
    pub a_both_share: f64,
}

/// Agreement with the truth of one order alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingleOrder {
    /// `P[score(chosen as A, rejected as B) > 0]`.
    pub chosen_as_a: f64,
    /// `P[score(rejected as A, chosen as B) < 0]`.
    pub chosen_as_b: f64,
}

/// The gap statistics of a set of pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapStats {
    /// Pairs.
    pub n_pairs: usize,
    /// `P_gen`.
    pub p_gen: f64,
    /// Its interval.
    pub p_gen_ci: Interval,
    /// `P_C`.
    pub p_judge: f64,
    /// Its interval.
    pub p_judge_ci: Interval,
    /// `G_C = P_C − P_gen`.
    pub gap: f64,
    /// Paired interval of the gap.
    pub gap_ci: Interval,
    /// `a_gen = sin(π(P_gen − ½))`.
    pub a_gen: f64,
    /// Interval of `a_gen` (image of `P_gen`'s).
    pub a_gen_ci: Interval,
    /// `a_C = sin(π(P_C − ½))`.
    pub a_judge: f64,
    /// Interval of `a_C`.
    pub a_judge_ci: Interval,
    /// Mean soft label of the chosen response, `mean σ(S_C)`.
    pub mean_soft_label: f64,
    /// Position bias.
    pub position_bias: PositionBiasStats,
    /// Single-order accuracies.
    pub single_order: SingleOrder,
}

/// [`GapStats`] overall and, when pairs carry a kind, per kind (`clear`, `subtle`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapReport {
    /// Over all pairs.
    #[serde(flatten)]
    pub overall: GapStats,
    /// Per kind, absent when no pair has one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_kind: BTreeMap<String, GapStats>,
}

/// Gap statistics of `rows` (see the module formulas), intervals from `resamples` paired
/// bootstrap draws of `rng`. NaN everywhere for no rows.
pub fn gap_stats<R: Rng + ?Sized>(rows: &[GapRow], resamples: usize, rng: &mut R) -> GapStats {
    let win_gen: Vec<f64> = rows.iter().map(|r| win(r.gen[0] - r.gen[1])).collect();
    let win_c: Vec<f64> = rows.iter().map(|r| win(s_c(r.ab, r.ba))).collect();
    let diff: Vec<f64> = win_c.iter().zip(&win_gen).map(|(c, g)| c - g).collect();
    let bpos: Vec<f64> = rows.iter().map(|r| position_bias(r.ab, r.ba)).collect();
    let ci = bootstrap_means(&[&win_gen, &win_c, &diff, &bpos], resamples, rng);
    let same: Vec<f64> = rows
        .iter()
        .map(|r| {
            f64::from(u8::from(
                (r.ab > 0.0) == (r.ba > 0.0) && r.ab != 0.0 && r.ba != 0.0,
            ))
        })
        .collect();
    let a_both: Vec<f64> = rows
        .iter()
        .map(|r| f64::from(u8::from(r.ab > 0.0 && r.ba > 0.0)))
        .collect();
    let (p_gen, p_judge) = (mean(&win_gen), mean(&win_c));
    GapStats {
        n_pairs: rows.len(),
        p_gen,
        p_gen_ci: ci[0],
        p_judge,
        p_judge_ci: ci[1],
        gap: mean(&diff),
        gap_ci: ci[2],
        a_gen: agreement_coefficient(p_gen),
        a_gen_ci: ci[0].map(agreement_coefficient),
        a_judge: agreement_coefficient(p_judge),
        a_judge_ci: ci[1].map(agreement_coefficient),
        mean_soft_label: mean(
            &rows
                .iter()
                .map(|r| sigmoid(s_c(r.ab, r.ba)))
                .collect::<Vec<_>>(),
        ),
        position_bias: PositionBiasStats {
            mean: mean(&bpos),
            mean_ci: ci[3],
            same_letter_share: mean(&same),
            a_both_share: mean(&a_both),
        },
        single_order: SingleOrder {
            chosen_as_a: mean(&rows.iter().map(|r| win(r.ab)).collect::<Vec<_>>()),
            chosen_as_b: mean(&rows.iter().map(|r| win(-r.ba)).collect::<Vec<_>>()),
        },
    }
}

/// [`gap_stats`] overall, then per kind in `clear`, `subtle` order, all from one `rng`.
pub fn gap_report<R: Rng + ?Sized>(rows: &[GapRow], resamples: usize, rng: &mut R) -> GapReport {
    let overall = gap_stats(rows, resamples, rng);
    let mut by_kind = BTreeMap::new();
    for kind in [PairKind::Clear, PairKind::Subtle] {
        let sub: Vec<GapRow> = rows
            .iter()
            .filter(|r| r.kind == Some(kind))
            .copied()
            .collect();
        if !sub.is_empty() {
            let name = match kind {
                PairKind::Clear => "clear",
                PairKind::Subtle => "subtle",
            };
            by_kind.insert(name.to_owned(), gap_stats(&sub, resamples, rng));
        }
    }
    GapReport { overall, by_kind }
}
