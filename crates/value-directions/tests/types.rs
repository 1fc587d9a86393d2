//! Invariants of the value types: constructors refuse bad input, round trips are exact.

use proptest::prelude::*;
use value_directions::{
    labels_from_signs, ContrastSet, DiffOfMeans, Direction, DirectionEstimator, Error, Lda,
    LinearProbe, Method, Provenance, Shrinkage, SignRule, Site,
};

#[test]
fn direction_new_normalises_and_refuses_bad_vectors() {
    let v = Direction::new(vec![0.0, -3.0, 4.0], Provenance::default()).unwrap();
    assert_eq!(v.as_slice(), &[0.0, -0.6, 0.8]);
    assert_eq!(v.provenance().raw_norm, 5.0);
    assert_eq!(v.provenance().sign_rule, SignRule::AsGiven);
    assert!(matches!(
        Direction::from_vector(vec![0.0; 3]),
        Err(Error::ZeroVector { .. })
    ));
    assert!(matches!(
        Direction::from_vector(vec![1.0, f64::NAN]),
        Err(Error::NonFinite { col: 1, .. })
    ));
    assert!(matches!(
        Direction::from_vector(vec![]),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn direction_arithmetic() {
    let u = Direction::from_vector(vec![1.0, 0.0, 0.0]).unwrap();
    let v = Direction::from_vector(vec![1.0, 1.0, 0.0]).unwrap();
    assert!((u.cosine(&v).unwrap() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-15);
    let mut x = vec![2.0, 3.0, 4.0];
    u.project_out(&mut x).unwrap();
    assert_eq!(x, vec![0.0, 3.0, 4.0]);
    let w = v.orthogonalised_against(&u).unwrap();
    assert!((w.as_slice()[1] - 1.0).abs() < 1e-15);
    assert!(matches!(
        u.orthogonalised_against(&u),
        Err(Error::ZeroVector { .. })
    ));
    assert_eq!(u.scaled(2.5), vec![2.5, 0.0, 0.0]);
    assert!(matches!(
        u.steering_vector(1.0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        u.dot(&[1.0, 2.0]),
        Err(Error::LengthMismatch { .. })
    ));
    let short = Direction::from_vector(vec![1.0, 0.0]).unwrap();
    assert!(u.cosine(&short).is_err());
}

#[test]
fn estimated_direction_round_trips_through_json_bit_exactly() {
    let rows = vec![
        vec![1.0f32, 0.3, -0.2],
        vec![0.9, 0.1, 0.4],
        vec![-1.1, 0.2, 0.0],
        vec![-0.7, -0.3, 0.1],
    ];
    let set = ContrastSet::new(rows, vec![true, true, false, false])
        .unwrap()
        .with_site(Site {
            layer: Some(3),
            hook: Some("blocks.3.hook_resid_post".into()),
            pooling: Some("last".into()),
        });
    let v = DiffOfMeans::default().estimate(&set).unwrap();
    let json = serde_json::to_string(&v).unwrap();
    let back: Direction = serde_json::from_str(&json).unwrap();
    assert_eq!(back, v);
    for (a, b) in back.as_slice().iter().zip(v.as_slice()) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
    assert!(json.contains("\"blocks.3.hook_resid_post\""));
    assert!(json.contains("\"diff-of-means\""));
    // Steering in units of the mean residual norm.
    let r = v.provenance().mean_resid_norm;
    assert!(r > 0.0);
    let sv = v.steering_vector(2.0).unwrap();
    let n: f64 = sv.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((n - 2.0 * r).abs() < 1e-12);
}

#[test]
fn deserialising_refuses_non_unit_and_unknown_fields() {
    let good = Direction::from_vector(vec![0.6, 0.8]).unwrap();
    let json = serde_json::to_string(&good).unwrap();
    let not_unit = json.replace("0.6", "0.7");
    let err = serde_json::from_str::<Direction>(&not_unit).unwrap_err();
    assert!(err.to_string().contains("unit norm"), "{err}");
    let extra = json.replacen('{', "{\"colour\": 1,", 1);
    assert!(serde_json::from_str::<Direction>(&extra).is_err());
}

#[test]
fn contrast_set_refuses_bad_input() {
    assert!(matches!(
        ContrastSet::new(vec![], vec![]),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        ContrastSet::new(vec![vec![1.0, 2.0], vec![1.0]], vec![true, false]),
        Err(Error::RaggedRows {
            row: 1,
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        ContrastSet::new(vec![vec![1.0], vec![2.0]], vec![true]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        ContrastSet::new(vec![vec![1.0, 2.0], vec![1.0, f32::NAN]], vec![true, false]),
        Err(Error::NonFinite { row: 1, col: 1, .. })
    ));
    assert!(matches!(
        ContrastSet::from_flat(vec![1.0; 6], 0, vec![true; 6]),
        Err(Error::Empty { .. })
    ));
    let set = ContrastSet::new(vec![vec![1.0], vec![2.0]], vec![true, false]).unwrap();
    assert!(matches!(
        set.clone().with_pairs(vec![(1, 0)]),
        Err(Error::BadPair { pair: 0, .. })
    ));
    assert!(matches!(
        set.clone().with_pairs(vec![(0, 1), (0, 5)]),
        Err(Error::BadPair { pair: 1, .. })
    ));
    assert!(matches!(
        ContrastSet::from_pairs(vec![vec![1.0]], vec![]),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(
        labels_from_signs(&[1, -1, 1]).unwrap(),
        vec![true, false, true]
    );
    assert!(labels_from_signs(&[1, 0]).is_err());
}

#[test]
fn estimators_refuse_degenerate_sets() {
    let one_class = ContrastSet::new(vec![vec![1.0], vec![2.0]], vec![true, true]).unwrap();
    assert!(matches!(
        DiffOfMeans::default().estimate(&one_class),
        Err(Error::TooFewPerClass { .. })
    ));
    assert!(matches!(
        LinearProbe::default().estimate(&one_class),
        Err(Error::TooFewPerClass { .. })
    ));
    let same = ContrastSet::new(vec![vec![1.0, 1.0], vec![1.0, 1.0]], vec![true, false]).unwrap();
    assert!(matches!(
        DiffOfMeans::default().estimate(&same),
        Err(Error::ZeroVector { .. })
    ));
    let two_each = ContrastSet::new(
        vec![
            vec![1.0, 0.0],
            vec![2.0, 0.0],
            vec![-1.0, 0.0],
            vec![-2.0, 0.0],
        ],
        vec![true, true, false, false],
    )
    .unwrap();
    // Unshrunk pooled covariance is singular (no variance in column 1).
    assert!(matches!(
        Lda {
            shrinkage: Shrinkage::Fixed(0.0)
        }
        .estimate(&two_each),
        Err(Error::Decomposition { .. })
    ));
    assert!(matches!(
        Lda {
            shrinkage: Shrinkage::Fixed(1.5)
        }
        .estimate(&two_each),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        LinearProbe {
            l2: -1.0,
            ..LinearProbe::default()
        }
        .estimate(&two_each),
        Err(Error::InvalidParameter { .. })
    ));
    // Separable data with a ridge: the probe still converges and points along column 0.
    let v = LinearProbe::default().estimate(&two_each).unwrap();
    assert!(v.as_slice()[0] > 0.999);
    assert_eq!(v.provenance().method, Some(Method::LinearProbe));
}

#[test]
fn subset_keeps_pairs_whose_members_survive() {
    let set = ContrastSet::from_pairs(
        vec![vec![1.0], vec![2.0], vec![3.0]],
        vec![vec![-1.0], vec![-2.0], vec![-3.0]],
    )
    .unwrap();
    // items: 0:+1 1:-1 2:+2 3:-2 4:+3 5:-3; keep pair 0 and 2, and item 2 without its partner.
    let sub = set.subset(&[4, 5, 0, 1, 2]).unwrap();
    assert_eq!(sub.n(), 5);
    assert_eq!(sub.pairs().unwrap(), &[(2, 3), (0, 1)]);
    assert_eq!(sub.row(0), &[3.0]);
    assert!(set.subset(&[]).is_err());
    assert!(set.subset(&[9]).is_err());
}

proptest! {
    /// Direction::new: unit norm, same sign pattern, scale invariant.
    #[test]
    fn new_is_unit_and_scale_invariant(
        v in prop::collection::vec(-1e3f64..1e3, 1..40),
        scale in 1e-3f64..1e3,
    ) {
        prop_assume!(v.iter().any(|&x| x.abs() > 1e-6));
        let a = Direction::from_vector(v.clone()).unwrap();
        let b = Direction::from_vector(v.iter().map(|x| x * scale).collect()).unwrap();
        let n: f64 = a.as_slice().iter().map(|x| x * x).sum();
        prop_assert!((n - 1.0).abs() < 1e-12);
        for ((x, y), z) in a.as_slice().iter().zip(b.as_slice()).zip(&v) {
            prop_assert!((x - y).abs() < 1e-12);
            prop_assert!(x * z >= 0.0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every estimator's direction is unchanged when all activations are shifted by a common
    /// vector and scaled by a positive factor (the probe standardises, so the penalty does not
    /// break scale invariance).
    #[test]
    fn estimators_are_shift_and_scale_invariant(
        seed in 0u64..1000,
        shift in prop::collection::vec(-5.0f64..5.0, 5),
        scale in 0.2f64..5.0,
    ) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let d = 5;
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..60 {
            let pos = i % 2 == 0;
            let r: Vec<f64> = (0..d)
                .map(|j| rng.gen_range(-1.0..1.0) + if pos && j < 2 { 0.7 } else { 0.0 })
                .collect();
            rows.push(r);
            labels.push(pos);
        }
        let to_set = |f: &dyn Fn(usize, f64) -> f64| {
            ContrastSet::new(
                rows.iter()
                    .map(|r| r.iter().enumerate().map(|(j, &x)| f(j, x) as f32).collect())
                    .collect(),
                labels.clone(),
            )
            .unwrap()
        };
        let base = to_set(&|_, x| x);
        let moved = to_set(&|j, x| scale * x + shift[j]);
        let estimators: Vec<Box<dyn DirectionEstimator>> = vec![
            Box::new(DiffOfMeans::default()),
            Box::new(LinearProbe::default()),
            Box::new(Lda::default()),
            Box::new(value_directions::Pca::default()),
        ];
        for e in estimators {
            let a = e.estimate(&base).unwrap();
            let b = e.estimate(&moved).unwrap();
            let cos = a.cosine(&b).unwrap();
            prop_assert!(cos > 1.0 - 1e-6, "{}: cos = {}", e.method(), cos);
        }
    }
}
