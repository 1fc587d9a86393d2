//! Held-out metrics of a direction: accuracy, AUC, pairwise agreement, `q̂`, bootstrap
//! intervals, and deterministic splits.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::contrast::ContrastSet;
use crate::direction::Direction;
use crate::error::{Error, Result};

/// Scores `s_i = <v, h_i>` of every item, accumulated in f64.
///
/// # Errors
/// [`Error::LengthMismatch`] if the direction's dimension differs from the set's `d`.
pub fn scores(direction: &Direction, set: &ContrastSet) -> Result<Vec<f64>> {
    (0..set.n())
        .map(|i| direction.dot_f32(set.row(i)))
        .collect()
}

fn check_scores(scores: &[f64], labels: &[bool]) -> Result<(usize, usize)> {
    if scores.len() != labels.len() {
        return Err(Error::LengthMismatch {
            what: "scores vs labels",
            expected: labels.len(),
            got: scores.len(),
        });
    }
    if let Some((row, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(Error::NonFinite {
            what: "score",
            row,
            col: 0,
            value,
        });
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::TooFewPerClass {
            needed: 1,
            n_pos,
            n_neg,
        });
    }
    Ok((n_pos, n_neg))
}

/// A decision threshold on scores: predict positive iff `s ≥ t`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold(pub f64);

impl Threshold {
    /// The train midpoint `t = ½ (mean(s | +) + mean(s | −))`. Fitted on the *training* scores
    /// and applied unchanged to held-out scores; the same rule for every method (a probe's own
    /// intercept refers to its unnormalised weights and is not used here).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::NonFinite`], [`Error::TooFewPerClass`].
    pub fn midpoint(scores: &[f64], labels: &[bool]) -> Result<Self> {
        let (n_pos, n_neg) = check_scores(scores, labels)?;
        let (mut sp, mut sn) = (0.0, 0.0);
        for (&s, &l) in scores.iter().zip(labels) {
            if l {
                sp += s;
            } else {
                sn += s;
            }
        }
        Ok(Threshold(0.5 * (sp / n_pos as f64 + sn / n_neg as f64)))
    }

    /// Accuracy `(1/n) Σ_i 1[(s_i ≥ t) = y_i]`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::NonFinite`], [`Error::Empty`] for no items.
    pub fn accuracy(&self, scores: &[f64], labels: &[bool]) -> Result<f64> {
        if scores.is_empty() {
            return Err(Error::Empty { what: "scores" });
        }
        if scores.len() != labels.len() {
            return Err(Error::LengthMismatch {
                what: "scores vs labels",
                expected: labels.len(),
                got: scores.len(),
            });
        }
        if let Some((row, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(Error::NonFinite {
                what: "score",
                row,
                col: 0,
                value,
            });
        }
        let correct = scores
            .iter()
            .zip(labels)
            .filter(|(&s, &l)| (s >= self.0) == l)
            .count();
        Ok(correct as f64 / scores.len() as f64)
    }
}

/// Area under the ROC curve by Mann–Whitney with mid-ranks:
/// `AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)`, where `R₊` is the rank sum of the positives.
///
/// This *is* the pairwise agreement over all (positive, negative) pairs,
/// `P = (1/(n₊n₋)) Σ_{i∈+, j∈−} (1[s_i > s_j] + ½ 1[s_i = s_j])`: on a contrast set the two
/// coincide exactly. They differ only on preference data, where the pairs are given
/// (chosen_k, rejected_k) and [`paired_agreement`] counts those pairs alone. O(n log n).
///
/// # Errors
/// [`Error::LengthMismatch`], [`Error::NonFinite`], [`Error::TooFewPerClass`].
pub fn auc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    let (n_pos, n_neg) = check_scores(scores, labels)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut k = 0;
    while k < order.len() {
        let mut e = k + 1;
        while e < order.len() && scores[order[e]] == scores[order[k]] {
            e += 1;
        }
        // Ranks k+1..=e share the mid-rank (k+1+e)/2.
        let mid = (k + 1 + e) as f64 / 2.0;
        let pos_in_tie = order[k..e].iter().filter(|&&i| labels[i]).count();
        rank_sum_pos += mid * pos_in_tie as f64;
        k = e;
    }
    let np = n_pos as f64;
    Ok((rank_sum_pos - np * (np + 1.0) / 2.0) / (np * n_neg as f64))
}

/// Agreement over given pairs: `P = (1/m) Σ_k (1[s(chosen_k) > s(rejected_k)] + ½ 1[=])`.
///
/// # Errors
/// [`Error::Empty`], [`Error::LengthMismatch`], [`Error::NonFinite`].
pub fn paired_agreement(chosen: &[f64], rejected: &[f64]) -> Result<f64> {
    if chosen.is_empty() {
        return Err(Error::Empty { what: "pairs" });
    }
    if chosen.len() != rejected.len() {
        return Err(Error::LengthMismatch {
            what: "chosen vs rejected scores",
            expected: chosen.len(),
            got: rejected.len(),
        });
    }
    let mut acc = 0.0;
    for (k, (&c, &r)) in chosen.iter().zip(rejected).enumerate() {
        if !c.is_finite() || !r.is_finite() {
            return Err(Error::NonFinite {
                what: "pair score",
                row: k,
                col: usize::from(c.is_finite()),
                value: if c.is_finite() { r } else { c },
            });
        }
        acc += if c > r {
            1.0
        } else if c == r {
            0.5
        } else {
            0.0
        };
    }
    Ok(acc / chosen.len() as f64)
}

/// `q̂ = sin(π (P − ½))`, the inverse of Sheppard's formula `P = ½ + arcsin(a)/π`
/// (THEORY §4). Monotone on P ∈ [0, 1], so it maps interval endpoints to interval endpoints.
pub fn q_hat(p: f64) -> f64 {
    (std::f64::consts::PI * (p - 0.5)).sin()
}

/// Sheppard's formula `P(sign Δs = sign Δu) = ½ + arcsin(a)/π` for jointly Gaussian pairs with
/// correlation `a`.
pub fn sheppard(a: f64) -> f64 {
    0.5 + a.clamp(-1.0, 1.0).asin() / std::f64::consts::PI
}

/// A point estimate with a percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    /// Estimate on the full sample.
    pub estimate: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Apply a nondecreasing map to all three numbers (e.g. [`q_hat`] to an agreement interval).
    pub fn map(self, f: impl Fn(f64) -> f64) -> Interval {
        Interval {
            estimate: f(self.estimate),
            lo: f(self.lo),
            hi: f(self.hi),
        }
    }
}

/// Percentile bootstrap over items: resample item indices with replacement (within each
/// stratum, so every resample keeps the class sizes), recompute the statistic, and take the
/// `(1−level)/2` and `(1+level)/2` quantiles (linear interpolation between order statistics).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bootstrap {
    /// Number of resamples B.
    pub resamples: usize,
    /// Coverage, e.g. 0.95.
    pub level: f64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: 1000,
            level: 0.95,
        }
    }
}

fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (pos - lo as f64) * (v[hi] - v[lo])
}

impl Bootstrap {
    fn validate(&self) -> Result<()> {
        if self.resamples < 2 {
            return Err(Error::InvalidParameter {
                name: "resamples",
                value: self.resamples.to_string(),
                reason: "need at least 2 bootstrap resamples",
            });
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(Error::InvalidParameter {
                name: "level",
                value: self.level.to_string(),
                reason: "coverage must lie in (0, 1)",
            });
        }
        Ok(())
    }

    /// Interval for `stat` over strata of item indices. `stat` receives the resampled indices
    /// (stratum by stratum, concatenated) and returns the statistic.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for `resamples < 2` or `level ∉ (0, 1)`; [`Error::Empty`]
    /// if a stratum is empty; any error of `stat`.
    pub fn interval<R: Rng + ?Sized>(
        &self,
        strata: &[Vec<usize>],
        mut stat: impl FnMut(&[usize]) -> Result<f64>,
        rng: &mut R,
    ) -> Result<Interval> {
        self.validate()?;
        if strata.is_empty() || strata.iter().any(Vec::is_empty) {
            return Err(Error::Empty {
                what: "bootstrap stratum",
            });
        }
        let all: Vec<usize> = strata.iter().flatten().copied().collect();
        let estimate = stat(&all)?;
        let mut values = Vec::with_capacity(self.resamples);
        let mut idx = Vec::with_capacity(all.len());
        for _ in 0..self.resamples {
            idx.clear();
            for s in strata {
                idx.extend((0..s.len()).map(|_| s[rng.gen_range(0..s.len())]));
            }
            values.push(stat(&idx)?);
        }
        values.sort_by(f64::total_cmp);
        let a = (1.0 - self.level) / 2.0;
        Ok(Interval {
            estimate,
            lo: quantile_sorted(&values, a),
            hi: quantile_sorted(&values, 1.0 - a),
        })
    }

    /// AUC (= all-pairs agreement) with an interval from resampling positives and negatives
    /// separately.
    ///
    /// # Errors
    /// As [`auc`] and [`Bootstrap::interval`].
    pub fn auc<R: Rng + ?Sized>(
        &self,
        scores: &[f64],
        labels: &[bool],
        rng: &mut R,
    ) -> Result<Interval> {
        check_scores(scores, labels)?;
        let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
        let neg: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
        let mut s = Vec::new();
        let mut l = Vec::new();
        self.interval(
            &[pos, neg],
            |idx| {
                s.clear();
                l.clear();
                s.extend(idx.iter().map(|&i| scores[i]));
                l.extend(idx.iter().map(|&i| labels[i]));
                auc(&s, &l)
            },
            rng,
        )
    }

    /// Accuracy at a fixed threshold with an interval from resampling each class.
    ///
    /// # Errors
    /// As [`Threshold::accuracy`] and [`Bootstrap::interval`]; [`Error::TooFewPerClass`].
    pub fn accuracy<R: Rng + ?Sized>(
        &self,
        threshold: Threshold,
        scores: &[f64],
        labels: &[bool],
        rng: &mut R,
    ) -> Result<Interval> {
        check_scores(scores, labels)?;
        let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
        let neg: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
        self.interval(
            &[pos, neg],
            |idx| {
                let correct = idx
                    .iter()
                    .filter(|&&i| (scores[i] >= threshold.0) == labels[i])
                    .count();
                Ok(correct as f64 / idx.len() as f64)
            },
            rng,
        )
    }

    /// Agreement over given pairs with an interval from resampling pairs.
    ///
    /// # Errors
    /// As [`paired_agreement`] and [`Bootstrap::interval`].
    pub fn paired_agreement<R: Rng + ?Sized>(
        &self,
        chosen: &[f64],
        rejected: &[f64],
        rng: &mut R,
    ) -> Result<Interval> {
        paired_agreement(chosen, rejected)?;
        let all: Vec<usize> = (0..chosen.len()).collect();
        let mut c = Vec::new();
        let mut r = Vec::new();
        self.interval(
            &[all],
            |idx| {
                c.clear();
                r.clear();
                c.extend(idx.iter().map(|&i| chosen[i]));
                r.extend(idx.iter().map(|&i| rejected[i]));
                paired_agreement(&c, &r)
            },
            rng,
        )
    }
}

/// Which side of a deterministic split an item falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Fit here.
    Train,
    /// Report here.
    Test,
}

/// The split coordinate of a key: the first 8 bytes of `SHA-256(salt ‖ 0x00 ‖ key)` read
/// big-endian, divided by 2⁶⁴, a number in [0, 1) that is stable across platforms and
/// releases.
pub fn hash_unit(key: &str, salt: &str) -> f64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) as f64 / 18_446_744_073_709_551_616.0 // 2^64
}

/// Deterministic split by a hash of the item key (e.g. the prompt text, MEASURE §2): `Test`
/// iff [`hash_unit`]`(key, salt) < test_fraction`. The same key always lands on the same side,
/// whatever the file order or the other items; change `salt` for an independent split.
///
/// # Errors
/// [`Error::InvalidParameter`] unless `0 ≤ test_fraction ≤ 1`.
pub fn hash_split(key: &str, salt: &str, test_fraction: f64) -> Result<Split> {
    if !(0.0..=1.0).contains(&test_fraction) {
        return Err(Error::InvalidParameter {
            name: "test_fraction",
            value: test_fraction.to_string(),
            reason: "must lie in [0, 1]",
        });
    }
    Ok(if hash_unit(key, salt) < test_fraction {
        Split::Test
    } else {
        Split::Train
    })
}

/// Stratified k-fold: shuffle the positives and the negatives (seeded RNG passed in), deal
/// each class round-robin into k folds. Returns the k test folds (sorted indices); fold f's
/// training set is every other index.
///
/// # Errors
/// [`Error::InvalidParameter`] for `k < 2`; [`Error::TooFewPerClass`] when a class has fewer
/// than k items.
pub fn stratified_kfold<R: Rng + ?Sized>(
    labels: &[bool],
    k: usize,
    rng: &mut R,
) -> Result<Vec<Vec<usize>>> {
    use rand::seq::SliceRandom;
    if k < 2 {
        return Err(Error::InvalidParameter {
            name: "k",
            value: k.to_string(),
            reason: "k-fold needs k ≥ 2",
        });
    }
    let mut pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
    let mut neg: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
    if pos.len() < k || neg.len() < k {
        return Err(Error::TooFewPerClass {
            needed: k,
            n_pos: pos.len(),
            n_neg: neg.len(),
        });
    }
    pos.shuffle(rng);
    neg.shuffle(rng);
    let mut folds = vec![Vec::new(); k];
    for (j, &i) in pos.iter().chain(&neg).enumerate() {
        folds[j % k].push(i);
    }
    folds.iter_mut().for_each(|f| f.sort_unstable());
    Ok(folds)
}

/// The complement of `fold` in `0..n` (a fold's training indices).
pub fn complement(n: usize, fold: &[usize]) -> Vec<usize> {
    let mut mark = vec![false; n];
    fold.iter()
        .filter(|&&i| i < n)
        .for_each(|&i| mark[i] = true);
    (0..n).filter(|&i| !mark[i]).collect()
}

/// How the agreement `P` of an [`Evaluation`] was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgreementKind {
    /// Over all (positive, negative) pairs of the test set: identical to the AUC.
    AllPairs,
    /// Over the test set's explicit (chosen, rejected) pairs.
    GivenPairs,
}

/// Held-out metrics of one direction (MEASURE §2–§3): fitted on `train`, reported on `test`
/// with percentile bootstrap intervals over test items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// Decision threshold: the train midpoint ([`Threshold::midpoint`]).
    pub threshold: f64,
    /// Test accuracy at that threshold.
    pub accuracy: Interval,
    /// Test AUC.
    pub auc: Interval,
    /// Test pairwise agreement `P`.
    pub agreement: Interval,
    /// How `P` was counted.
    pub agreement_kind: AgreementKind,
    /// `q̂ = sin(π(P − ½))`, with the interval mapped from `P`'s.
    pub q_hat: Interval,
    /// Test items.
    pub n_test: usize,
}

/// Evaluate `direction` on `test`, with the threshold fitted on `train`. Agreement is over the
/// test set's explicit pairs when it has any (preference data), else over all
/// (positive, negative) pairs, where it equals the AUC.
///
/// # Errors
/// [`Error::LengthMismatch`] if the direction's dimension differs from a set's `d`;
/// [`Error::TooFewPerClass`] if a set lacks a class; bootstrap errors as
/// [`Bootstrap::interval`].
pub fn evaluate<R: Rng + ?Sized>(
    direction: &Direction,
    train: &ContrastSet,
    test: &ContrastSet,
    boot: &Bootstrap,
    rng: &mut R,
) -> Result<Evaluation> {
    let threshold = Threshold::midpoint(&scores(direction, train)?, train.labels())?;
    let s = scores(direction, test)?;
    let labels = test.labels();
    let accuracy = boot.accuracy(threshold, &s, labels, rng)?;
    let auc_iv = boot.auc(&s, labels, rng)?;
    let (agreement, agreement_kind) = match test.pairs() {
        Some(pairs) if !pairs.is_empty() => {
            let chosen: Vec<f64> = pairs.iter().map(|&(i, _)| s[i]).collect();
            let rejected: Vec<f64> = pairs.iter().map(|&(_, j)| s[j]).collect();
            (
                boot.paired_agreement(&chosen, &rejected, rng)?,
                AgreementKind::GivenPairs,
            )
        }
        _ => (auc_iv, AgreementKind::AllPairs),
    };
    Ok(Evaluation {
        threshold: threshold.0,
        accuracy,
        auc: auc_iv,
        agreement,
        agreement_kind,
        q_hat: agreement.map(q_hat),
        n_test: test.n(),
    })
}
