//! Will RLAIF with a constitution help? The T1 answer for the demo instance's constitutions,
//! in closed form, then checked by a Monte Carlo run.
//!
//! `cargo run --release -p rlaif-sim --example will_rlaif_help`

use rlaif_sim::constitution::Constitution;
use rlaif_sim::demo::{demo_instance, CONSTITUTIONS};
use rlaif_sim::sim::simulate;
use rlaif_sim::spec::Instance;
use rlaif_sim::theorems::{budget_matched_gain, first_step_slope};

fn main() {
    let base = demo_instance();
    let m = &base.model;
    println!(
        "ceiling q = {:.4}, default generation a(g) = {:.4}\n",
        m.q(),
        m.alignment(&base.g)
    );
    println!(
        "{:<10} {:>7} {:>8} {:>10} {:>12} {:>12}",
        "C", "a(j)", "gap", "dA/dη", "value@K(g)", "A_10 (MC)"
    );
    for (name, principles) in CONSTITUTIONS {
        let j = Constitution::principles(principles)
            .judgment_direction(
                base.dictionary.as_ref(),
                base.lambda.as_deref(),
                base.r.as_deref(),
            )
            .expect("principles in range");
        let inst = Instance {
            j: j.clone(),
            ..base.clone()
        };
        let trace = simulate(m, &inst.g, &j, &inst.sim).expect("fit converges");
        println!(
            "{:<10} {:>7.3} {:>+8.3} {:>+10.3} {:>+12.3} {:>12.3}",
            name,
            m.alignment(&j),
            m.alignment(&j) - m.alignment(&base.g),
            first_step_slope(m, &base.g, &j),
            budget_matched_gain(m, &base.g, &j),
            trace.records.last().expect("rounds").a,
        );
    }
    println!("\nRLAIF ends better aligned than the default exactly when the gap a(j) − a(g) is positive (T1b).");
}
