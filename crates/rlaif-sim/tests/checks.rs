//! Every randomised theorem check passes (closed forms vs identities and Monte Carlo).

#[test]
fn all_theorem_checks_pass() {
    let results = rlaif_sim::checks::run_all(11, 12);
    for r in &results {
        eprintln!(
            "{:8} {:4} cases  {}  {}",
            r.name,
            r.cases,
            if r.passed { "pass" } else { "FAIL" },
            r.detail
        );
    }
    assert!(results.iter().all(|r| r.passed));
    assert_eq!(results.len(), 10);
}
