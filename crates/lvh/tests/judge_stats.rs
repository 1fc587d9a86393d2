//! The judge's statistics on hand-built score tables: reference values, paired bootstrap
//! determinism, the agreement coefficient, position bias and principle sensitivity.

use lvh::datasets::PairKind;
use lvh::judge::sensitivity::{compare, pearson, sensitivity_report, ConstitutionScores};
use lvh::judge::stats::{
    agreement_coefficient, bootstrap_means, gap_report, gap_stats, position_bias, quantile_sorted,
    s_c, sigmoid, win, GapRow,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn agreement_coefficient_inverts_theory_section_4() {
    assert_eq!(agreement_coefficient(0.5), 0.0);
    assert!(close(agreement_coefficient(1.0), 1.0, 1e-15));
    assert!(close(agreement_coefficient(0.0), -1.0, 1e-15));
    assert!(close(
        agreement_coefficient(0.75),
        std::f64::consts::FRAC_1_SQRT_2,
        1e-15
    ));
    // Odd around ½: a(½ + x) = −a(½ − x).
    for x in [0.01, 0.1, 0.33] {
        assert!(close(
            agreement_coefficient(0.5 + x),
            -agreement_coefficient(0.5 - x),
            1e-15
        ));
    }
}

#[test]
fn both_orders_split_into_preference_and_position_bias() {
    // A judge that always says (A) by 2 nats and prefers y1 by 1 nat.
    let (ab, ba) = (2.0 + 1.0, 2.0 - 1.0);
    assert_eq!(s_c(ab, ba), 1.0);
    assert_eq!(position_bias(ab, ba), 2.0);
    assert!(close(sigmoid(0.0), 0.5, 0.0));
    assert!(close(sigmoid(1.0) + sigmoid(-1.0), 1.0, 1e-15));
    assert_eq!(win(0.3), 1.0);
    assert_eq!(win(-0.3), 0.0);
    assert_eq!(win(0.0), 0.5);
    assert_eq!(win(f64::NAN), 0.5);
}

#[test]
fn quantile_matches_numpy_linear_interpolation() {
    // numpy.quantile([1, 2, 3, 4, 10], [0.025, 0.5, 0.975]) = [1.1, 3.0, 9.4]
    let d = [1.0, 2.0, 3.0, 4.0, 10.0];
    assert!(close(quantile_sorted(&d, 0.025), 1.1, 1e-12));
    assert!(close(quantile_sorted(&d, 0.5), 3.0, 1e-12));
    assert!(close(quantile_sorted(&d, 0.975), 9.4, 1e-12));
}

#[test]
fn paired_bootstrap_is_deterministic_given_the_seed_and_covers_the_mean() {
    let mut data = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f64> = (0..200)
        .map(|_| f64::from(u8::from(data.gen_bool(0.6))))
        .collect();
    let y: Vec<f64> = (0..200).map(|_| data.gen_range(-1.0..1.0)).collect();
    let a = bootstrap_means(&[&x, &y], 500, &mut ChaCha8Rng::seed_from_u64(9));
    let b = bootstrap_means(&[&x, &y], 500, &mut ChaCha8Rng::seed_from_u64(9));
    let c = bootstrap_means(&[&x, &y], 500, &mut ChaCha8Rng::seed_from_u64(10));
    assert_eq!(a, b, "same seed, bit-identical intervals");
    assert_ne!(a, c, "another seed draws other resamples");
    let mx = x.iter().sum::<f64>() / 200.0;
    assert!(a[0].contains(mx) && a[0].lo < a[0].hi);
    // Standard error of a proportion: the 95% half-width is ≈ 1.96 √(p(1−p)/n).
    let half = 1.96 * (mx * (1.0 - mx) / 200.0).sqrt();
    assert!(
        close((a[0].hi - a[0].lo) / 2.0, half, 0.25 * half),
        "{a:?} vs ±{half}"
    );
    // A constant column has a degenerate interval at the constant.
    let k = vec![0.25; 50];
    let ci = bootstrap_means(&[&k], 100, &mut ChaCha8Rng::seed_from_u64(1))[0];
    assert_eq!((ci.lo, ci.hi), (0.25, 0.25));
}

fn row(gen_c: f64, gen_r: f64, ab: f64, ba: f64, kind: Option<PairKind>) -> GapRow {
    GapRow {
        gen: [gen_c, gen_r],
        ab,
        ba,
        kind,
    }
}

#[test]
fn gap_statistics_reference_values() {
    let rows = [
        // gen right, judge right (S = 1), A wins order 1, B wins order 2
        row(-1.0, -2.0, 1.5, -0.5, Some(PairKind::Clear)),
        // gen wrong, judge right (S = 0.5) but A wins both orders
        row(-3.0, -2.0, 3.0, 2.0, Some(PairKind::Clear)),
        // gen right, judge wrong (S = −1), A wins both orders
        row(-1.0, -1.5, 1.0, 3.0, Some(PairKind::Subtle)),
        // gen tie (empty response), judge wrong (S = −0.5), B wins both
        row(f64::NAN, -1.0, -2.0, -1.0, Some(PairKind::Subtle)),
    ];
    let s = gap_stats(&rows, 200, &mut ChaCha8Rng::seed_from_u64(0));
    assert_eq!(s.n_pairs, 4);
    assert!(close(s.p_gen, (1.0 + 0.0 + 1.0 + 0.5) / 4.0, 1e-15));
    assert!(close(s.p_judge, 0.5, 1e-15));
    assert!(close(s.gap, 0.5 - 0.625, 1e-15));
    assert!(close(s.a_judge, 0.0, 1e-15));
    assert!(close(s.a_gen, agreement_coefficient(0.625), 1e-15));
    assert!(close(
        s.position_bias.mean,
        (0.5 + 2.5 + 2.0 - 1.5) / 4.0,
        1e-15
    ));
    assert!(close(s.position_bias.same_letter_share, 0.75, 1e-15));
    assert!(close(s.position_bias.a_both_share, 0.5, 1e-15));
    // chosen as A correct when ab > 0: rows 1,2,3; chosen as B correct when ba < 0: rows 1,4.
    assert!(close(s.single_order.chosen_as_a, 0.75, 1e-15));
    assert!(close(s.single_order.chosen_as_b, 0.5, 1e-15));
    assert!(s.gap_ci.contains(s.gap));
    let r = gap_report(&rows, 200, &mut ChaCha8Rng::seed_from_u64(0));
    assert_eq!(
        r.overall, s,
        "overall is computed first from the same stream"
    );
    assert_eq!(r.by_kind.len(), 2);
    assert!(close(r.by_kind["clear"].p_judge, 1.0, 0.0));
    assert!(close(r.by_kind["subtle"].p_judge, 0.0, 0.0));
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "p_gen",
        "p_judge",
        "gap",
        "gap_ci",
        "a_gen",
        "a_judge",
        "position_bias",
        "n_pairs",
        "by_kind",
    ] {
        assert!(json.get(key).is_some(), "missing key {key}");
    }
}

#[test]
fn pairing_removes_shared_noise_from_the_gap_interval() {
    // Judge and generation agree on every pair: the gap is exactly 0 in every resample.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let rows: Vec<GapRow> = (0..100)
        .map(|_| {
            let d: f64 = rng.gen_range(-1.0..1.0);
            row(d, 0.0, d, -d, None)
        })
        .collect();
    let s = gap_stats(&rows, 300, &mut ChaCha8Rng::seed_from_u64(1));
    assert_eq!(s.gap, 0.0);
    assert_eq!((s.gap_ci.lo, s.gap_ci.hi), (0.0, 0.0));
    assert!(
        s.p_judge_ci.hi - s.p_judge_ci.lo > 0.1,
        "the marginals still vary"
    );
    assert!(gap_report(&rows, 10, &mut rng).by_kind.is_empty());
}

fn table(name: &str, s: Vec<f64>) -> ConstitutionScores {
    ConstitutionScores {
        name: name.into(),
        adversarial: false,
        s_c: s,
    }
}

#[test]
fn pearson_reference_and_degenerate_cases() {
    let x = [1.0, 2.0, 3.0, 4.0];
    let y = [2.0, 4.1, 5.9, 8.2];
    // numpy.corrcoef(x, y)[0, 1]
    assert!(close(pearson(&x, &y), 0.998_992_298_023_759_2, 1e-12));
    assert!(close(pearson(&x, &[4.0, 3.0, 2.0, 1.0]), -1.0, 1e-15));
    assert!(pearson(&x, &[1.0; 4]).is_nan());
}

#[test]
fn a_judge_that_ignores_its_constitution_is_reported_first() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let base: Vec<f64> = (0..300).map(|_| rng.gen_range(-1.0..1.5)).collect();
    let nudged: Vec<f64> = base
        .iter()
        .map(|s| s + rng.gen_range(-0.01..0.01))
        .collect();
    let tables = [table("harmless", base.clone()), table("edgy", nudged)];
    let r = sensitivity_report(&tables, 500, &mut ChaCha8Rng::seed_from_u64(3));
    assert!(r.ignoring_constitution, "{r:?}");
    assert!(
        r.verdict.contains("ignoring its constitution"),
        "{}",
        r.verdict
    );
    assert!(r.comparisons[0].correlation > 0.99);
    // An adversarial constitution that reverses the judge: correlation −1, P_C difference
    // far from 0, so the judge responds to its constitution.
    let flipped: Vec<f64> = base.iter().map(|s| -s).collect();
    let c = compare(
        &table("harmless", base.clone()),
        &table("adversarial", flipped.clone()),
        500,
        &mut ChaCha8Rng::seed_from_u64(4),
    );
    assert!(close(c.correlation, -1.0, 1e-12));
    assert!(c.sign_agreement < 0.01);
    assert!(!c.delta_p_ci.contains(0.0) && c.delta_p > 0.0);
    assert!(!c.indistinguishable);
    let r = sensitivity_report(
        &[table("harmless", base), table("adversarial", flipped)],
        500,
        &mut ChaCha8Rng::seed_from_u64(3),
    );
    assert!(!r.ignoring_constitution);
    assert!(r.verdict.contains("responds"), "{}", r.verdict);
    assert_eq!(r.constitutions.len(), 2);
    assert!(close(
        r.constitutions[0].p_judge + r.constitutions[1].p_judge,
        1.0,
        1e-12
    ));
}
