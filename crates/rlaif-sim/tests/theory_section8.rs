//! THEORY §8: the closed-form predictions of the demo instance, as regression tests.

use rlaif_sim::agreement::{agree_bt, agree_deterministic, agree_quadratic, kappa};
use rlaif_sim::constitution::Constitution;
use rlaif_sim::demo::{demo_instance, CONSTITUTIONS};
use rlaif_sim::linalg::add_scaled;
use rlaif_sim::mixing::MixShape;
use rlaif_sim::spec::Instance;
use rlaif_sim::theorems::*;

fn j_of(inst: &Instance, principles: &[usize]) -> Vec<f64> {
    Constitution::principles(principles)
        .judgment_direction(
            inst.dictionary.as_ref(),
            inst.lambda.as_deref(),
            inst.r.as_deref(),
        )
        .unwrap()
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

#[test]
fn p1_ceiling_and_alignments() {
    let inst = demo_instance();
    let m = &inst.model;
    close(m.q(), 0.8273, 5e-5, "q");
    close(m.alignment(&inst.g), 0.3533, 5e-5, "a(g)");
    close(m.alignment(inst.r.as_ref().unwrap()), 0.4666, 5e-5, "a(r)");
    let want = [0.8053, 0.3290, -0.4667, 0.6573, 0.4666];
    for ((name, s), w) in CONSTITUTIONS.iter().zip(want) {
        close(m.alignment(&j_of(&inst, s)), w, 5e-5, name);
    }
}

#[test]
fn p2_agreement() {
    let inst = demo_instance();
    let m = &inst.model;
    close(
        agree_deterministic(m.alignment(&inst.g)),
        0.6149,
        5e-5,
        "P_det(g)",
    );
    let hh = j_of(&inst, &[0]);
    close(
        agree_deterministic(m.alignment(&hh)),
        0.7980,
        5e-5,
        "P_det(C_hh)",
    );
    close(
        agree_deterministic(m.alignment(&j_of(&inst, &[2]))),
        0.3455,
        5e-5,
        "P_det(C_adv)",
    );
    let k = kappa(inst.sim.beta, m.var_score(&hh));
    close(k, 2.0, 1e-12, "κ");
    close(
        agree_bt(m.alignment(&hh), 2.0, 0.0),
        0.7104,
        5e-5,
        "P_BT(C_hh)",
    );
}

#[test]
fn p3_adding_helpful_to_hh_hurts() {
    let inst = demo_instance();
    let m = &inst.model;
    let hh = j_of(&inst, &[0]);
    let v = add_scaled(&j_of(&inst, &[0, 1]), -1.0, &hh);
    let ap = add_principle(m, &hh, &v);
    close(ap.a, 0.805, 5e-4, "A");
    close(ap.a_v, 0.329, 5e-4, "a_v");
    close(ap.rho, 0.387, 5e-4, "ρ");
    close(ap.t, 1.173, 5e-4, "t");
    close(ap.new_alignment, 0.657, 5e-4, "a(j+v)");
    assert!(!ap.helps);
    close(ap.t_max.unwrap(), 0.052, 5e-4, "t_max");
}

#[test]
fn p4_population_rlaif() {
    let inst = demo_instance();
    let m = &inst.model;
    let g0 = &inst.g;
    close(m.kl(g0), 1.0, 1e-12, "K(g0)");
    let hh = j_of(&inst, &[0]);
    let eta = inst.sim.beta / inst.sim.tau;
    close(eta, 0.5, 1e-15, "η");
    let tr = population_trajectory(m, g0, &hh, eta, 10);
    close(tr.v[0], 0.583, 5e-4, "V0");
    close(tr.v[10], 4.443, 5e-4, "V10");
    for (t, want) in [0.353, 0.508, 0.604, 0.664].iter().enumerate() {
        close(tr.a[t], *want, 5e-4, &format!("A{t}"));
    }
    close(tr.a[10], 0.778, 5e-4, "A10");
    close(tr.k[10], 12.0, 0.05, "K10");

    let adv = j_of(&inst, &[2]);
    let tr = population_trajectory(m, g0, &adv, 0.5, 10);
    close(tr.v[10], -1.222, 5e-4, "V10 adv");
    close(tr.a[10], -0.280, 5e-4, "A10 adv");
    close(converged_alignment(m, &adv), -0.4667, 5e-5, "A∞ adv");

    let help = j_of(&inst, &[1]);
    let tr = population_trajectory(m, g0, &help, 0.5, 10);
    assert!(tr.v.windows(2).all(|w| w[1] > w[0]), "V rises every round");
    close(m.rho(g0, &help), 0.677, 5e-4, "ρ(g, j_help)");
    let (peak, round) = trajectory_peak(m, g0, &help, 0.5);
    assert_eq!(peak.shape, MixShape::InteriorPeak);
    close(peak.sup, 0.3738, 5e-5, "peak");
    close(round.unwrap(), 2.0, 0.05, "peak round");
    assert!(tr.a[10] < peak.sup && tr.a[10] > 0.329);
}

#[test]
fn p6_capacity() {
    let cm = CapacityModel {
        theta: vec![1.0, 0.6, 0.3, 0.0, 0.2],
        gamma: vec![1.2, 1.0, 0.8, 0.9, 0.5],
        s0_2: 1.0,
        n0: 1e6,
        alpha: 0.3,
    };
    for (n, want) in [
        (1e6, 0.7388),
        (1e7, 0.8376),
        (1e8, 0.9063),
        (1e9, 0.9487),
        (1e10, 0.9730),
        (1e14, 0.9982),
    ] {
        close(cm.q(n), want, 5e-5, &format!("q({n:e})"));
    }
    close(cm.loglog_slope(1e16, 1e18), -0.30, 0.005, "log-log slope");
}

#[test]
fn p7_finite_samples() {
    close(b_kappa(2.0, 0.0), 0.15143, 5e-6, "B(2)");
    close(b_kappa(1.0, 0.0), 0.20662, 5e-6, "B(1)");
    close(psi(150.0, 16, 2.0, 0.0), 0.9264, 5e-5, "ψ(150,16,2)");
    close(psi(400.0, 16, 1.0, 0.0), 0.9200, 5e-5, "ψ(400,16,1)");
    close(n_min(16, 2.0, 0.6, 0.5, 0.0).unwrap(), 56.3, 0.05, "n_min");
}

#[test]
fn p8_refusal_direction_and_orthogonal_extremes() {
    let inst = demo_instance();
    let m = &inst.model;
    close(alignment_of_c(m), 0.8234, 5e-5, "a(c)");
    assert!(alignment_of_c(m) < m.q());
    assert!(ceiling_after_ablation(m, &[m.c().to_vec()]) < 1e-6);
    close(
        ceiling_after_ablation(m, &[m.w_star().to_vec()]),
        0.0908,
        5e-5,
        "q after ablating w*",
    );
    let ex = orth_extremes(m, inst.r.as_ref().unwrap());
    close(ex.inf, -0.7139, 5e-5, "inf");
    close(ex.sup, 0.8273, 5e-5, "sup");
    close(ex.k_r, 0.5055, 5e-5, "k_r");
}

#[test]
fn p9_quadratic_agreement() {
    close(
        agree_quadratic(0.8, 1.0, 0.0, 1.0),
        0.7487,
        5e-5,
        "(.8,1,0,1)",
    );
    close(agree_quadratic(0.8, 0.3, 0.3, 1.0), 0.5, 1e-15, "m = μ");
    close(
        agree_quadratic(0.5, -0.5, 0.5, 2.0),
        0.4133,
        5e-5,
        "(.5,-.5,.5,2)",
    );
}
