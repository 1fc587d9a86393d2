//! `lvh theory demo` reproduces every prediction of THEORY §8 (quick sample sizes).

#[test]
fn every_prediction_p1_to_p10_is_reproduced() {
    let res = rlaif_sim::predictions::run_demo(7, true);
    for r in &res.rows {
        eprintln!(
            "{:4} {:60} pred {:>10.4} sim {:>10.4} tol {:.1e} {}",
            r.id,
            r.quantity,
            r.predicted,
            r.simulated,
            r.tolerance,
            if r.passed { "ok" } else { "FAIL" }
        );
    }
    for id in ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10"] {
        assert!(res.rows.iter().any(|r| r.id == id), "{id} missing");
    }
    assert!(res.rows.iter().all(|r| r.passed));
    assert!(res.figures.phase.len() >= 20);
}
