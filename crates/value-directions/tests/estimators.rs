//! Planted directions are recovered (THEORY T7a).

mod common;

use common::{alignment, cosine, normal, t7a_set, Covariance};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use value_directions::{
    Balance, ContrastSet, DiffOfMeans, DirectionEstimator, Lda, LinearProbe, Method, Pca,
    Shrinkage, SignRule, Site,
};

fn random_vec(d: usize, norm: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let v: Vec<f64> = (0..d).map(|_| normal(rng)).collect();
    let n = common::dot(&v, &v).sqrt();
    v.into_iter().map(|x| x * norm / n).collect()
}

/// Isotropic noise: the difference of means recovers the planted c for d ∈ {16, 64, 576}.
#[test]
fn diff_of_means_recovers_planted_direction_on_isotropic_noise() {
    for (d, n_draw, seed) in [(16, 3000, 1), (64, 6000, 2), (576, 15000, 3)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = random_vec(d, 3.0, &mut rng);
        let noise = Covariance::isotropic(d, 1.0);
        let (rows, labels) = t7a_set(&c, &noise, n_draw, &mut rng);
        let set = ContrastSet::new(rows, labels).unwrap();
        for est in [
            DiffOfMeans::default(),
            DiffOfMeans {
                balance: Balance::Subsample { seed: 7 },
            },
        ] {
            let v = est.estimate(&set).unwrap();
            let cos = cosine(v.as_slice(), &c);
            eprintln!("isotropic d = {d}, n = {}: cos(DoM, c) = {cos:.5}", set.n());
            assert!(cos > 0.99, "d = {d}: cos(DoM, c) = {cos}");
            assert_eq!(v.provenance().method, Some(Method::DiffOfMeans));
            assert_eq!(v.provenance().sign_rule, SignRule::MeanDifference);
            // ‖Δμ‖ = |c| (E[u|top third] − E[u|bottom third]) = 3 · 2 · 1.0908 ≈ 6.54 (plus noise).
            let raw = v.provenance().raw_norm;
            assert!(
                (raw - 6.545).abs() < 0.15 * 6.545,
                "d = {d}: raw norm {raw}"
            );
        }
    }
}

/// Anisotropic noise (THEORY T7a): the difference of means estimates c, LDA and the probe
/// estimate w* = Σ_h⁻¹ c and attain the ceiling q, which c does not.
#[test]
fn lda_and_probe_recover_w_star_while_diff_of_means_recovers_c() {
    for (d, n_draw, seed) in [(16, 30_000, 11), (64, 90_000, 12)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Covariance::random(d, 0.2, 5.0, &mut rng);
        let c = random_vec(d, 2.0, &mut rng);
        let w_star = noise.solve(&c);
        let cos_c_w = cosine(&c, &w_star);
        assert!(
            cos_c_w < 0.85,
            "test setup: c and w* should differ, cos = {cos_c_w}"
        );
        let q = alignment(&w_star, &c, &noise);
        let a_c = alignment(&c, &c, &noise);
        assert!(q - a_c > 0.02, "test setup: q = {q}, a(c) = {a_c}");

        let (rows, labels) = t7a_set(&c, &noise, n_draw, &mut rng);
        let set = ContrastSet::new(rows, labels).unwrap();

        let dom = DiffOfMeans::default().estimate(&set).unwrap();
        let cos_dom_c = cosine(dom.as_slice(), &c);
        let cos_dom_w = cosine(dom.as_slice(), &w_star);
        eprintln!(
            "anisotropic d = {d}, n = {}: cos(c, w*) = {cos_c_w:.4}, q = {q:.4}, a(c) = {a_c:.4}; \
             cos(DoM, c) = {cos_dom_c:.5}, cos(DoM, w*) = {cos_dom_w:.4}",
            set.n()
        );
        assert!(cos_dom_c > 0.99, "d = {d}: cos(DoM, c) = {cos_dom_c}");
        assert!(
            (cos_dom_w - cos_c_w).abs() < 0.03,
            "d = {d}: cos(DoM, w*) = {cos_dom_w} vs cos(c, w*) = {cos_c_w}"
        );

        let probe = LinearProbe {
            l2: 1e-3,
            ..LinearProbe::default()
        };
        for (name, v) in [
            ("lda (Ledoit-Wolf)", Lda::default().estimate(&set).unwrap()),
            ("probe", probe.estimate(&set).unwrap()),
        ] {
            let cos_w = cosine(v.as_slice(), &w_star);
            assert!(cos_w > 0.99, "d = {d}, {name}: cos(·, w*) = {cos_w}");
            let a = alignment(v.as_slice(), &c, &noise);
            eprintln!("  {name}: cos(·, w*) = {cos_w:.5}, a = {a:.5} (q = {q:.5})");
            assert!(a > 0.995 * q, "d = {d}, {name}: a = {a}, q = {q}");
            assert!(a > a_c, "d = {d}, {name}: a = {a} ≤ a(c) = {a_c}");
        }
    }
}

#[test]
fn lda_fixed_shrinkage_one_is_diff_of_means() {
    // With α = 1 the covariance is (tr S / d) I, so LDA returns the mean difference.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let noise = Covariance::random(8, 0.5, 2.0, &mut rng);
    let c = random_vec(8, 1.0, &mut rng);
    let (rows, labels) = t7a_set(&c, &noise, 600, &mut rng);
    let set = ContrastSet::new(rows, labels).unwrap();
    let lda = Lda {
        shrinkage: Shrinkage::Fixed(1.0),
    }
    .estimate(&set)
    .unwrap();
    let dom = DiffOfMeans::default().estimate(&set).unwrap();
    assert!(lda.cosine(&dom).unwrap() > 1.0 - 1e-12);
    let fit = Lda::default().fit(&set).unwrap();
    assert!((0.0..=1.0).contains(&fit.shrinkage));
}

#[test]
fn ledoit_wolf_shrinks_more_when_d_is_large_relative_to_n() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let d = 64;
    let c = random_vec(d, 2.0, &mut rng);
    let noise = Covariance::isotropic(d, 1.0);
    let (rows, labels) = t7a_set(&c, &noise, 20_000, &mut rng);
    let big = ContrastSet::new(rows.clone(), labels.clone()).unwrap();
    let idx: Vec<usize> = (0..100).collect();
    let small = big.subset(&idx).unwrap();
    let a_big = Lda::default().fit(&big).unwrap().shrinkage;
    let a_small = Lda::default().fit(&small).unwrap().shrinkage;
    // True within-class covariance is isotropic: the optimal target is the truth, so the
    // intensity is near 1 for n ≈ d and decreases as n grows.
    assert!(a_small > 0.5, "n = 100: α = {a_small}");
    assert!(
        a_small > a_big,
        "α(n=100) = {a_small} vs α(n≈13k) = {a_big}"
    );
}

/// The probe's Newton fit reaches the stationarity condition of the penalised objective:
/// `Σ_i (p_i − y_i) x_i + λ w = 0` and `Σ_i (p_i − y_i) = 0`.
#[test]
fn probe_fit_is_stationary_without_standardisation() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let d = 10;
    let noise = Covariance::random(d, 0.5, 2.0, &mut rng);
    let c = random_vec(d, 1.0, &mut rng);
    let (rows, labels) = t7a_set(&c, &noise, 900, &mut rng);
    let set = ContrastSet::new(rows.clone(), labels.clone()).unwrap();
    let lambda = 2.5;
    let fit = LinearProbe {
        l2: lambda,
        standardise: false,
        ..LinearProbe::default()
    }
    .fit(&set)
    .unwrap();
    let mut grad = vec![0.0; d + 1];
    for (r, &l) in rows.iter().zip(&labels) {
        let z: f64 = r
            .iter()
            .zip(&fit.weights)
            .map(|(&x, w)| f64::from(x) * w)
            .sum::<f64>()
            + fit.intercept;
        let resid = 1.0 / (1.0 + (-z).exp()) - if l { 1.0 } else { 0.0 };
        for (g, &x) in grad.iter_mut().zip(r) {
            *g += resid * f64::from(x);
        }
        grad[d] += resid;
    }
    for (g, w) in grad.iter_mut().zip(&fit.weights) {
        *g += lambda * w;
    }
    let gnorm = common::dot(&grad, &grad).sqrt();
    assert!(gnorm < 1e-6, "gradient norm at the fit: {gnorm}");
    assert!(fit.iterations < 30);
}

#[test]
fn standardised_and_raw_probes_agree_as_penalty_vanishes() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let d = 12;
    let noise = Covariance::random(d, 0.1, 10.0, &mut rng);
    let c = random_vec(d, 1.5, &mut rng);
    let (rows, labels) = t7a_set(&c, &noise, 3000, &mut rng);
    let set = ContrastSet::new(rows, labels).unwrap();
    let fit = |standardise| {
        LinearProbe {
            l2: 1e-9,
            standardise,
            ..LinearProbe::default()
        }
        .fit(&set)
        .unwrap()
    };
    let (a, b) = (fit(true), fit(false));
    assert!(cosine(&a.weights, &b.weights) > 1.0 - 1e-8);
    assert!((a.intercept - b.intercept).abs() < 1e-5 * (1.0 + b.intercept.abs()));
}

/// Every estimator orients so that positives project higher: swapping the labels flips the
/// sign of the estimate and nothing else.
#[test]
fn swapping_labels_flips_every_estimator() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let d = 20;
    let noise = Covariance::random(d, 0.5, 3.0, &mut rng);
    let c = random_vec(d, 1.5, &mut rng);
    let (rows, labels) = t7a_set(&c, &noise, 3000, &mut rng);
    let flipped: Vec<bool> = labels.iter().map(|l| !l).collect();
    let set = ContrastSet::new(rows.clone(), labels).unwrap();
    let set_f = ContrastSet::new(rows, flipped).unwrap();
    let estimators: Vec<Box<dyn DirectionEstimator>> = vec![
        Box::new(DiffOfMeans::default()),
        Box::new(LinearProbe::default()),
        Box::new(Lda::default()),
        Box::new(Pca::default()),
    ];
    for e in estimators {
        let v = e.estimate(&set).unwrap();
        let w = e.estimate(&set_f).unwrap();
        let cos = v.cosine(&w).unwrap();
        assert!(cos < -1.0 + 1e-9, "{}: cos = {cos}", e.method());
        // Positives project higher on average.
        let (mp, mn) = set.class_means();
        assert!(v.dot(&mp).unwrap() > v.dot(&mn).unwrap(), "{}", e.method());
        assert!((v.provenance().mean_resid_norm - set.mean_row_norm()).abs() < 1e-12);
    }
}

/// PCA of paired differences: pairs differ by `c·α_k + noise` with a random sign of α_k, so
/// the mean difference carries nothing; the sign comes from the pair-majority rule.
#[test]
fn pca_of_paired_differences_recovers_direction_and_sign() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let d = 64;
    let c = random_vec(d, 1.0, &mut rng);
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for _ in 0..2000 {
        let base: Vec<f64> = (0..d).map(|_| 2.0 * normal(&mut rng)).collect();
        let a = 2.0 + 0.5 * normal(&mut rng);
        let p: Vec<f32> = base
            .iter()
            .zip(&c)
            .map(|(b, ci)| (b + 0.5 * a * ci + 0.3 * normal(&mut rng)) as f32)
            .collect();
        let n: Vec<f32> = base
            .iter()
            .zip(&c)
            .map(|(b, ci)| (b - 0.5 * a * ci + 0.3 * normal(&mut rng)) as f32)
            .collect();
        pos.push(p);
        neg.push(n);
    }
    let set = ContrastSet::from_pairs(pos, neg).unwrap().with_site(Site {
        layer: Some(6),
        hook: Some("blocks.6.hook_resid_post".into()),
        pooling: Some("mean".into()),
    });
    for rule in [SignRule::MeanDifference, SignRule::PairMajority] {
        let v = Pca {
            sign_rule: rule,
            ..Pca::default()
        }
        .estimate(&set)
        .unwrap();
        let cos = cosine(v.as_slice(), &c);
        assert!(cos > 0.99, "{rule:?}: cos = {cos}");
        assert_eq!(v.provenance().sign_rule, rule);
        assert_eq!(v.provenance().site.layer, Some(6));
        assert_eq!(v.provenance().n_pos, 2000);
    }
}

#[test]
fn methods_parse_and_print() {
    for m in Method::ALL {
        assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, format!("\"{m}\""));
    }
    assert_eq!("DOM".parse::<Method>().unwrap(), Method::DiffOfMeans);
    assert_eq!(
        "linear-probe".parse::<Method>().unwrap(),
        Method::LinearProbe
    );
    let err = "pcaa".parse::<Method>().unwrap_err();
    assert!(err.to_string().contains("pcaa"));
}

/// Bradley–Terry reward model (MEASURE §5 step 3, THEORY §7 step 4): soft labels
/// `t_i = σ(<βj, Δh_i> + b_pos)` are fitted exactly in population, so the soft-label MLE
/// recovers `βj` (norm included) and `b_pos`.
#[test]
fn soft_label_logistic_recovers_bradley_terry_weights() {
    use value_directions::Differences;
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let d = 8;
    let m = 4000;
    let j = random_vec(d, 1.3, &mut rng);
    let b_pos = 0.4;
    let mut data = Vec::with_capacity(m * d);
    let mut targets = Vec::with_capacity(m);
    for _ in 0..m {
        let dh: Vec<f64> = (0..d)
            .map(|_| std::f64::consts::SQRT_2 * normal(&mut rng))
            .collect();
        let z = common::dot(&j, &dh) + b_pos;
        targets.push(1.0 / (1.0 + (-z).exp()));
        data.extend(dh);
    }
    let rows = Differences::from_flat(data, d).unwrap();
    let probe = LinearProbe {
        l2: 1e-8,
        ..LinearProbe::default()
    };
    for standardise in [false, true] {
        let p = LinearProbe {
            standardise,
            ..probe
        };
        let fit = p.fit_soft(&rows, &targets, true).unwrap();
        let err: f64 = fit
            .weights
            .iter()
            .zip(&j)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(err < 1e-5, "standardise = {standardise}: |ŵ − βj| = {err}");
        assert!((fit.intercept - b_pos).abs() < 1e-5, "{}", fit.intercept);
        // Without an intercept the fit is biased but still points along j.
        let fit0 = p.fit_soft(&rows, &targets, false).unwrap();
        assert_eq!(fit0.intercept, 0.0);
        assert!(cosine(&fit0.weights, &j) > 0.99);
    }
    assert!(probe.fit_soft(&rows, &targets[1..], true).is_err());
    let mut bad = targets.clone();
    bad[3] = 1.5;
    assert!(probe.fit_soft(&rows, &bad, true).is_err());
}

/// Ridge regression: with targets `t = <β, x> + b + noise` and a vanishing penalty the
/// weights converge to β; a large penalty shrinks them towards 0 as `(XᵀX + λI)⁻¹Xᵀt`.
#[test]
fn ridge_recovers_linear_weights_and_shrinks() {
    use value_directions::{ridge, Differences};
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let (m, d) = (3000, 10);
    let beta = random_vec(d, 2.0, &mut rng);
    let mut data = Vec::with_capacity(m * d);
    let mut t = Vec::with_capacity(m);
    for _ in 0..m {
        let x: Vec<f64> = (0..d).map(|_| 1.0 + normal(&mut rng)).collect();
        t.push(common::dot(&beta, &x) - 0.7 + 0.1 * normal(&mut rng));
        data.extend(x);
    }
    let rows = Differences::from_flat(data, d).unwrap();
    let fit = ridge(&rows, &t, 1e-9, true).unwrap();
    for (w, b) in fit.weights.iter().zip(&beta) {
        // SE of each coefficient ≈ 0.1/√m ≈ 0.002.
        assert!((w - b).abs() < 0.01, "{w} vs {b}");
    }
    assert!((fit.intercept + 0.7).abs() < 0.05, "{}", fit.intercept);
    let shrunk = ridge(&rows, &t, 1e6, true).unwrap();
    let n0: f64 = fit.weights.iter().map(|x| x * x).sum();
    let n1: f64 = shrunk.weights.iter().map(|x| x * x).sum();
    assert!(n1 < 0.1 * n0, "{n1} vs {n0}");
    assert!(ridge(&rows, &t[1..], 1.0, true).is_err());
    assert!(ridge(&rows, &t, -1.0, true).is_err());
}

/// Fewer items than dimensions: the pooled covariance is singular, Ledoit–Wolf shrinkage
/// keeps it positive definite and the probe's ridge keeps the Newton system solvable.
#[test]
fn lda_and_probe_work_with_fewer_items_than_dimensions() {
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let d = 200;
    let c = random_vec(d, 4.0, &mut rng);
    let noise = Covariance::isotropic(d, 1.0);
    let (rows, labels) = t7a_set(&c, &noise, 150, &mut rng);
    let set = ContrastSet::new(rows, labels).unwrap();
    assert!(set.n() < d);
    let fit = Lda::default().fit(&set).unwrap();
    assert!(fit.shrinkage > 0.3, "α = {}", fit.shrinkage);
    for v in [
        Lda::default().estimate(&set).unwrap(),
        LinearProbe::default().estimate(&set).unwrap(),
    ] {
        let cos = cosine(v.as_slice(), &c);
        // Noise alone would give |cos| ≈ 1/√d ≈ 0.07.
        assert!(cos > 0.5, "{:?}: cos = {cos}", v.provenance().method);
    }
}
