//! THEORY §8 P5 and P7: the Monte Carlo simulator agrees with the closed forms.

use rlaif_sim::checks::{finite_sample_alignment, whitened_instance};
use rlaif_sim::demo::demo_instance;
use rlaif_sim::sim::{simulate, Mode};
use rlaif_sim::theorems::psi;

#[test]
fn p5_monte_carlo_rlaif_demo() {
    let inst = demo_instance();
    assert_eq!(inst.sim.mode, Mode::MonteCarlo);
    let trace = simulate(&inst.model, &inst.g, &inst.j, &inst.sim).unwrap();
    let last = trace.records.last().unwrap();
    assert!((last.a - 0.778).abs() < 0.03, "A_10 = {}", last.a);
    for r in &trace.records {
        let mc = r.mc_value.unwrap();
        assert!(
            (mc - r.v).abs() < 0.015,
            "round {}: mc {} vs V {}",
            r.round,
            mc,
            r.v
        );
        assert!((mc - r.v).abs() < 4.0 * r.mc_value_se.unwrap());
    }
    // Deterministic: same seed, same bits.
    let again = simulate(&inst.model, &inst.g, &inst.j, &inst.sim).unwrap();
    assert_eq!(trace, again);
}

#[test]
fn p7_finite_sample_means_follow_psi() {
    let (m, j) = whitened_instance(16, 0.8, 0.627);
    assert!((m.alignment(&j) - 0.627).abs() < 1e-12);
    for n in [150usize, 400, 1000, 4000] {
        let (mean, se) = finite_sample_alignment(&m, &j, n, 2.0, 80, 5);
        let want = 0.627 * psi(n as f64, 16, 2.0, 0.0);
        let tol = (3.0 * se).max(0.02);
        assert!(
            (mean - want).abs() <= tol,
            "n = {n}: {mean} ± {se} vs {want}"
        );
    }
}
