//! AUC, agreement, q̂ and bootstrap intervals against brute force and closed forms.

mod common;

use common::normal;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use value_directions::metrics::{
    auc, complement, hash_split, paired_agreement, q_hat, scores, sheppard, stratified_kfold,
    Bootstrap, Split, Threshold,
};
use value_directions::{ContrastSet, DiffOfMeans, DirectionEstimator, Error};

/// O(n₊n₋) definition: the fraction of (positive, negative) pairs ordered correctly, ties ½.
fn brute_force_agreement(scores: &[f64], labels: &[bool]) -> f64 {
    let mut num = 0.0;
    let mut den = 0.0;
    for (i, (&si, &li)) in scores.iter().zip(labels).enumerate() {
        for (j, (&sj, &lj)) in scores.iter().zip(labels).enumerate() {
            if li && !lj && i != j {
                den += 1.0;
                num += if si > sj {
                    1.0
                } else if si == sj {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    num / den
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Mann–Whitney with mid-ranks equals the all-pairs agreement, ties included.
    #[test]
    fn auc_equals_brute_force_with_ties(
        items in prop::collection::vec((0i32..6, any::<bool>()), 2..60)
    ) {
        let scores: Vec<f64> = items.iter().map(|&(s, _)| f64::from(s)).collect();
        let labels: Vec<bool> = items.iter().map(|&(_, l)| l).collect();
        let n_pos = labels.iter().filter(|&&l| l).count();
        prop_assume!(n_pos > 0 && n_pos < labels.len());
        let fast = auc(&scores, &labels).unwrap();
        let slow = brute_force_agreement(&scores, &labels);
        prop_assert!((fast - slow).abs() < 1e-12, "{} vs {}", fast, slow);
    }

    /// q̂ inverts Sheppard's formula exactly on [-1, 1].
    #[test]
    fn q_hat_inverts_sheppard(a in -1.0f64..=1.0) {
        prop_assert!((q_hat(sheppard(a)) - a).abs() < 1e-12);
    }
}

#[test]
fn auc_extremes_and_errors() {
    let labels = [true, true, false, false];
    assert_eq!(auc(&[3.0, 4.0, 1.0, 2.0], &labels).unwrap(), 1.0);
    assert_eq!(auc(&[1.0, 2.0, 3.0, 4.0], &labels).unwrap(), 0.0);
    assert_eq!(auc(&[1.0; 4], &labels).unwrap(), 0.5);
    assert!(matches!(
        auc(&[1.0, 2.0], &[true, true]),
        Err(Error::TooFewPerClass { .. })
    ));
    assert!(matches!(
        auc(&[1.0, f64::NAN], &[true, false]),
        Err(Error::NonFinite { row: 1, .. })
    ));
    assert!(matches!(
        auc(&[1.0], &[true, false]),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(q_hat(0.5), 0.0);
    assert!((q_hat(1.0) - 1.0).abs() < 1e-15);
}

/// Monte Carlo: pairs of Gaussian items with corr(s, u) = a agree in sign with probability
/// ½ + arcsin(a)/π, and q̂ recovers a, within 4 standard errors, over a grid of a.
#[test]
fn q_hat_recovers_correlation_of_gaussian_pairs() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let m = 40_000;
    for a in [-0.8, -0.3, 0.0, 0.3, 0.6, 0.9, 0.97] {
        let b = (1.0f64 - a * a).sqrt();
        let mut chosen = Vec::with_capacity(m);
        let mut rejected = Vec::with_capacity(m);
        for _ in 0..m {
            // Two items; u is the truth, s = a u + √(1−a²) ξ the score.
            let (u1, u2) = (normal(&mut rng), normal(&mut rng));
            let s1 = a * u1 + b * normal(&mut rng);
            let s2 = a * u2 + b * normal(&mut rng);
            if u1 > u2 {
                chosen.push(s1);
                rejected.push(s2);
            } else {
                chosen.push(s2);
                rejected.push(s1);
            }
        }
        let p = paired_agreement(&chosen, &rejected).unwrap();
        let p_true = sheppard(a);
        let se_p = (p_true * (1.0 - p_true) / m as f64).sqrt();
        let q = q_hat(p);
        let se_q = std::f64::consts::PI * (std::f64::consts::PI * (p_true - 0.5)).cos() * se_p;
        eprintln!("a = {a}: P = {p:.4} (Sheppard {p_true:.4}), q̂ = {q:.4} ± {se_q:.4}");
        assert!(
            (p - p_true).abs() < 4.0 * se_p,
            "a = {a}: P = {p}, want {p_true}"
        );
        assert!((q - a).abs() < 4.0 * se_q + 1e-12, "a = {a}: q̂ = {q}");
    }
}

#[test]
fn paired_agreement_counts_ties_as_half_and_checks_input() {
    assert_eq!(
        paired_agreement(&[2.0, 1.0, 3.0, 0.0], &[1.0, 1.0, 4.0, -1.0]).unwrap(),
        (1.0 + 0.5 + 0.0 + 1.0) / 4.0
    );
    assert!(matches!(
        paired_agreement(&[], &[]),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        paired_agreement(&[1.0, 2.0], &[1.0]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        paired_agreement(&[1.0, 2.0], &[1.0, f64::INFINITY]),
        Err(Error::NonFinite { row: 1, .. })
    ));
}

#[test]
fn midpoint_threshold_and_accuracy() {
    let train = [4.0, 2.0, 0.0, -2.0];
    let labels = [true, true, false, false];
    let t = Threshold::midpoint(&train, &labels).unwrap();
    assert_eq!(t.0, 1.0);
    // held out: 1.0 counts as positive (s ≥ t).
    let held = [1.0, 0.5, 0.9, -3.0];
    assert_eq!(t.accuracy(&held, &labels).unwrap(), 0.75);
}

fn gaussian_scores(n: usize, shift: f64, rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<bool>) {
    let mut s = Vec::with_capacity(n);
    let mut l = Vec::with_capacity(n);
    for i in 0..n {
        let pos = i % 3 != 0; // unbalanced on purpose
        s.push(normal(rng) + if pos { shift } else { 0.0 });
        l.push(pos);
    }
    (s, l)
}

#[test]
fn bootstrap_is_deterministic_given_the_seed() {
    let mut data_rng = ChaCha8Rng::seed_from_u64(1);
    let (s, l) = gaussian_scores(300, 1.0, &mut data_rng);
    let boot = Bootstrap {
        resamples: 500,
        level: 0.95,
    };
    let run = |seed| {
        boot.auc(&s, &l, &mut ChaCha8Rng::seed_from_u64(seed))
            .unwrap()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b, "same seed, same interval, bit for bit");
    assert_ne!(a, c, "different seed should change the interval");
    assert_eq!(a.estimate, auc(&s, &l).unwrap());
    assert!(a.lo < a.estimate && a.estimate < a.hi, "{a:?}");
    assert!(matches!(
        Bootstrap {
            resamples: 1,
            level: 0.95
        }
        .auc(&s, &l, &mut ChaCha8Rng::seed_from_u64(0)),
        Err(Error::InvalidParameter { .. })
    ));
}

/// The width of the percentile interval of a proportion matches the normal approximation
/// 2 · 1.96 · √(P(1−P)/m) within 15%, and the q̂ interval is its image under q̂.
#[test]
fn bootstrap_width_matches_binomial_standard_error() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let m = 2000;
    let chosen: Vec<f64> = (0..m).map(|_| normal(&mut rng) + 0.5).collect();
    let rejected: Vec<f64> = (0..m).map(|_| normal(&mut rng)).collect();
    let iv = Bootstrap::default()
        .paired_agreement(&chosen, &rejected, &mut rng)
        .unwrap();
    let p = iv.estimate;
    let want = 2.0 * 1.96 * (p * (1.0 - p) / m as f64).sqrt();
    let got = iv.hi - iv.lo;
    eprintln!("P = {p:.4}, interval width {got:.4}, normal approximation {want:.4}");
    assert!((got / want - 1.0).abs() < 0.15, "width {got} vs {want}");
    let q = iv.map(q_hat);
    assert_eq!(q.estimate, q_hat(p));
    assert!(q.lo < q.estimate && q.estimate < q.hi);
}

/// Bootstrap coverage on a known truth: over 200 independent samples of a Gaussian contrast,
/// the 90% interval for the AUC covers the true AUC Φ(δ/√2) between 80% and 97% of the time.
#[test]
fn bootstrap_auc_interval_covers_the_truth() {
    let delta = 1.0f64;
    // Φ(1/√2) = 0.760249938…
    let truth = 0.760_249_938_087_498_2;
    let boot = Bootstrap {
        resamples: 300,
        level: 0.9,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let trials = 200;
    let mut covered = 0;
    for _ in 0..trials {
        let (s, l) = gaussian_scores(150, delta, &mut rng);
        let iv = boot.auc(&s, &l, &mut rng).unwrap();
        if iv.lo <= truth && truth <= iv.hi {
            covered += 1;
        }
    }
    let rate = covered as f64 / trials as f64;
    eprintln!("90% AUC interval coverage: {rate}");
    assert!((0.80..=0.97).contains(&rate), "coverage {rate}");
}

#[test]
fn held_out_metrics_of_an_estimated_direction() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let d = 8;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for i in 0..400 {
        let pos = i % 2 == 0;
        let mut r: Vec<f32> = (0..d).map(|_| normal(&mut rng) as f32).collect();
        r[0] += if pos { 1.5 } else { -1.5 };
        rows.push(r);
        labels.push(pos);
    }
    let set = ContrastSet::new(rows, labels).unwrap();
    let folds = stratified_kfold(set.labels(), 5, &mut rng).unwrap();
    let test_idx = &folds[0];
    let train_idx = complement(set.n(), test_idx);
    assert_eq!(test_idx.len() + train_idx.len(), set.n());
    let train = set.subset(&train_idx).unwrap();
    let test = set.subset(test_idx).unwrap();
    let v = DiffOfMeans::default().estimate(&train).unwrap();
    let t = Threshold::midpoint(&scores(&v, &train).unwrap(), train.labels()).unwrap();
    let s = scores(&v, &test).unwrap();
    let acc = t.accuracy(&s, test.labels()).unwrap();
    let a = auc(&s, test.labels()).unwrap();
    // Bayes accuracy Φ(1.5) = 0.933, AUC Φ(3/√2) = 0.983.
    assert!(acc > 0.85 && acc <= 1.0, "accuracy {acc}");
    assert!(a > 0.95, "AUC {a}");
}

#[test]
fn stratified_kfold_partitions_and_balances() {
    let labels: Vec<bool> = (0..103).map(|i| i % 4 != 0).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let folds = stratified_kfold(&labels, 5, &mut rng).unwrap();
    let mut all: Vec<usize> = folds.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..103).collect::<Vec<_>>());
    for f in &folds {
        let pos = f.iter().filter(|&&i| labels[i]).count();
        assert!((15..=16).contains(&pos), "positives in fold: {pos}");
        assert!((20..=21).contains(&f.len()));
    }
    let again = stratified_kfold(&labels, 5, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    assert_eq!(folds, again);
    assert!(stratified_kfold(&labels, 1, &mut rng).is_err());
}

#[test]
fn hash_split_is_stable_and_near_the_requested_fraction() {
    // SHA-256("lvh\0abc") starts with d8a1531c44066a11 (computed independently with Python's hashlib).
    let u = value_directions::metrics::hash_unit("abc", "lvh");
    assert_eq!(
        u,
        0xd8a1_531c_4406_6a11_u64 as f64 / 18_446_744_073_709_551_616.0
    );
    let n = 10_000;
    let test = (0..n)
        .filter(|i| hash_split(&format!("prompt {i}"), "lvh", 0.2).unwrap() == Split::Test)
        .count();
    let frac = test as f64 / n as f64;
    assert!(
        (frac - 0.2).abs() < 4.0 * (0.2f64 * 0.8 / n as f64).sqrt(),
        "{frac}"
    );
    assert_eq!(
        hash_split("same", "s", 0.5).unwrap(),
        hash_split("same", "s", 0.5).unwrap()
    );
    assert_eq!(hash_split("x", "s", 0.0).unwrap(), Split::Train);
    assert_eq!(hash_split("x", "s", 1.0).unwrap(), Split::Test);
    assert!(hash_split("x", "s", 1.5).is_err());
}

#[test]
fn evaluate_reports_consistent_numbers() {
    use value_directions::metrics::{evaluate, AgreementKind};
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let d = 6;
    let make = |m: usize, rng: &mut ChaCha8Rng| {
        let mut pos = Vec::new();
        let mut neg = Vec::new();
        for _ in 0..m {
            let base: Vec<f64> = (0..d).map(|_| normal(rng)).collect();
            pos.push(
                base.iter()
                    .enumerate()
                    .map(|(j, b)| (b + if j == 0 { 0.4 } else { 0.0 } + 0.3 * normal(rng)) as f32)
                    .collect(),
            );
            neg.push(
                base.iter()
                    .map(|b| (b + 0.3 * normal(rng)) as f32)
                    .collect(),
            );
        }
        ContrastSet::from_pairs(pos, neg).unwrap()
    };
    let train = make(300, &mut rng);
    let test = make(300, &mut rng);
    let v = DiffOfMeans::default().estimate(&train).unwrap();
    let boot = Bootstrap {
        resamples: 200,
        level: 0.95,
    };
    let ev = evaluate(&v, &train, &test, &boot, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    assert_eq!(ev.agreement_kind, AgreementKind::GivenPairs);
    let s = scores(&v, &test).unwrap();
    let chosen: Vec<f64> = (0..300).map(|k| s[2 * k]).collect();
    let rejected: Vec<f64> = (0..300).map(|k| s[2 * k + 1]).collect();
    assert_eq!(
        ev.agreement.estimate,
        paired_agreement(&chosen, &rejected).unwrap()
    );
    assert_eq!(ev.auc.estimate, auc(&s, test.labels()).unwrap());
    assert_eq!(ev.q_hat.estimate, q_hat(ev.agreement.estimate));
    // Paired comparisons cancel the shared base: given pairs agree far more often than
    // arbitrary (positive, negative) pairs.
    assert!(ev.agreement.estimate > ev.auc.estimate + 0.1, "{ev:?}");
    assert_eq!(ev.n_test, 600);
    // Without pairs, agreement is the AUC.
    let unpaired = ContrastSet::new(
        (0..test.n()).map(|i| test.row(i).to_vec()).collect(),
        test.labels().to_vec(),
    )
    .unwrap();
    let ev2 = evaluate(
        &v,
        &train,
        &unpaired,
        &boot,
        &mut ChaCha8Rng::seed_from_u64(1),
    )
    .unwrap();
    assert_eq!(ev2.agreement_kind, AgreementKind::AllPairs);
    assert_eq!(ev2.agreement, ev2.auc);
    let json = serde_json::to_string(&ev2).unwrap();
    let back: value_directions::metrics::Evaluation = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ev2);
}
