//! Words, per-layer SVG curves and the HTML page of an [`Analysis`], rendered only from it.

use std::fmt::Write as _;

use super::{AblationTest, Analysis, LayerAnalysis};
use crate::plot::{esc, Plot, Series, Style};
use crate::theory_io::html_page;

fn at_best(a: &Analysis) -> Option<&LayerAnalysis> {
    a.layers.iter().find(|l| l.layer == a.best_layer)
}

/// Headline findings, most important first.
pub fn findings(a: &Analysis) -> Vec<String> {
    let mut out = Vec::new();
    let t = &a.ablation;
    out.push(format!(
        "Ablation test (T7b): P_C = {:.3} [{:.3}, {:.3}] judged normally, {:.3} [{:.3}, {:.3}] with the \
         value direction of layer {} ablated at every layer; |P_C − ½| {} by {:+.3} [{:+.3}, {:+.3}]{}.",
        t.p_normal,
        t.p_normal_ci.lo,
        t.p_normal_ci.hi,
        t.p_ablated,
        t.p_ablated_ci.lo,
        t.p_ablated_ci.hi,
        t.layer,
        if t.shrank { "shrank" } else { "did not shrink" },
        t.shrinkage,
        t.shrinkage_ci.lo,
        t.shrinkage_ci.hi,
        if t.shrank_significantly {
            " (interval above 0: the judge uses the value direction)"
        } else {
            " (interval includes 0: not distinguishable on these pairs)"
        }
    ));
    if let Some(b) = at_best(a) {
        out.push(format!(
            "At the best layer {}: cos(Δ_C, v) = {:+.3}, {:.0}% of ‖Δ_C‖² in the top-{} value subspace; \
             cos(ĵ_C, v) = {:+.3}, cos(ĝ, v) = {:+.3}, cos(ĵ_C, ĝ) = {:+.3}.",
            b.layer,
            b.shift_cos_value,
            100.0 * b.shift_share_in_value_subspace,
            a.top_p,
            b.judge_cos_value,
            b.gen_cos_value,
            b.judge_cos_gen
        ));
    }
    let strongest = a
        .layers
        .iter()
        .filter(|l| l.shift_cos_value.is_finite())
        .max_by(|x, y| x.shift_cos_value.abs().total_cmp(&y.shift_cos_value.abs()));
    if let Some(l) = strongest {
        out.push(format!(
            "The activated shift is most aligned with the value direction at layer {} (cos {:+.3}){}.",
            l.layer,
            l.shift_cos_value,
            if l.shift_cos_value < 0.0 {
                ": the constitution pushes the answer position toward the HARMFUL side"
            } else {
                ""
            }
        ));
    }
    out.push(format!(
        "Agreement with human preferences on these {} pairs: P_C = {:.3}, neutral judge {:.3}, generation P_gen = {:.3}.{}",
        a.n_pairs,
        a.ablation.p_normal,
        a.p_neutral,
        a.p_gen,
        if a.labelled_adversarial {
            " The constitution labels itself adversarial."
        } else {
            ""
        }
    ));
    out
}

/// Plain-text summary for the terminal.
pub fn text(a: &Analysis) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "lvh constitution analyze {} on {} ({} pairs, {} contrast items, seed {}, {:.0} s)\n",
        a.constitution, a.model, a.n_pairs, a.n_contrast, a.seed, a.wall_seconds
    );
    for f in &a.findings {
        let _ = writeln!(s, "* {f}");
    }
    let _ = writeln!(
        s,
        "\n{:>5} {:>7} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "layer",
        "acc(v)",
        "|Δ_C|",
        "cos Δ,v",
        "share",
        "cos ĵ,v",
        "cos ĝ,v",
        "cos ĵ,ĝ",
        "loo ĵ",
        "loo ĝ"
    );
    for l in &a.layers {
        let _ = writeln!(
            s,
            "{:>4}{} {:>7.3} {:>9.3} {:>+9.3} {:>8.3} {:>+9.3} {:>+9.3} {:>+9.3} {:>8.3} {:>8.3}",
            l.layer,
            if l.layer == a.best_layer { "*" } else { " " },
            l.value_accuracy,
            l.shift_norm,
            l.shift_cos_value,
            l.shift_share_in_value_subspace,
            l.judge_cos_value,
            l.gen_cos_value,
            l.judge_cos_gen,
            l.judge_loo_sign_agreement,
            l.gen_loo_sign_agreement,
        );
    }
    let _ = writeln!(s, "(* best layer of the value direction)");
    s
}

fn curve(a: &Analysis, f: impl Fn(&LayerAnalysis) -> f64) -> Vec<(f64, f64)> {
    a.layers.iter().map(|l| (l.layer as f64, f(l))).collect()
}

/// The figures: `(file stem, SVG)`.
pub fn figures(a: &Analysis) -> Vec<(&'static str, String)> {
    let mut cos = Plot::new(
        &format!(
            "{}: directions against the value direction v_ℓ",
            a.constitution
        ),
        "layer ℓ",
        "cosine / share",
    )
    .with(Series::new("cos(Δ_C, v)", curve(a, |l| l.shift_cos_value), Style::Line).color(0))
    .with(
        Series::new(
            format!("‖Δ_C‖² share in V (p={})", a.top_p),
            curve(a, |l| l.shift_share_in_value_subspace),
            Style::Dashed,
        )
        .color(0),
    )
    .with(Series::new("cos(ĵ_C, v)", curve(a, |l| l.judge_cos_value), Style::Line).color(1))
    .with(Series::new("cos(ĝ, v)", curve(a, |l| l.gen_cos_value), Style::Line).color(2))
    .with(Series::new("cos(ĵ_C, ĝ)", curve(a, |l| l.judge_cos_gen), Style::Points).color(3));
    cos.h_lines.push((0.0, String::new()));
    cos.v_lines.push((a.best_layer as f64, "best layer".into()));
    let norm = Plot::new(
        &format!("{}: size of the activated shift", a.constitution),
        "layer ℓ",
        "‖Δ_C,ℓ‖",
    )
    .with(Series::new("‖Δ_C‖", curve(a, |l| l.shift_norm), Style::Line).color(0));
    let mut loo = Plot::new(
        "held-out (leave-one-out) sign agreement of the ridge readouts",
        "layer ℓ",
        "agreement",
    )
    .with(
        Series::new(
            "ĵ_C → sign S_C",
            curve(a, |l| l.judge_loo_sign_agreement),
            Style::Line,
        )
        .color(1),
    )
    .with(
        Series::new(
            "ĝ → sign Δs_gen",
            curve(a, |l| l.gen_loo_sign_agreement),
            Style::Line,
        )
        .color(2),
    );
    loo.h_lines.push((0.5, "chance".into()));
    vec![
        ("cosines", cos.to_svg()),
        ("shift_norm", norm.to_svg()),
        ("loo", loo.to_svg()),
    ]
}

fn ablation_rows(t: &AblationTest) -> String {
    format!(
        "<table><tr><th>judged</th><th>P_C [95%]</th><th>mean S_C</th><th>mean |S_C|</th></tr>\
         <tr><td>normally</td><td>{:.3} [{:.3}, {:.3}]</td><td>{:+.3}</td><td>{:.3}</td></tr>\
         <tr><td>v (layer {}) ablated at every layer</td><td>{:.3} [{:.3}, {:.3}]</td><td>{:+.3}</td><td>{:.3}</td></tr>\
         <tr class=\"{}\"><td>|P_C − ½| shrinkage</td><td>{:+.3} [{:+.3}, {:+.3}]</td><td colspan=\"2\">{}</td></tr></table>",
        t.p_normal,
        t.p_normal_ci.lo,
        t.p_normal_ci.hi,
        t.mean_s_normal,
        t.mean_abs_s_normal,
        t.layer,
        t.p_ablated,
        t.p_ablated_ci.lo,
        t.p_ablated_ci.hi,
        t.mean_s_ablated,
        t.mean_abs_s_ablated,
        if t.shrank { "ok" } else { "fail" },
        t.shrinkage,
        t.shrinkage_ci.lo,
        t.shrinkage_ci.hi,
        if t.shrank {
            "moved toward ½ (T7b)"
        } else {
            "did not move toward ½"
        }
    )
}

/// The HTML page.
pub fn html(a: &Analysis) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<p>Constitution <code>{}</code> against <code>{}</code>; model <code>{}</code> (sha256 {}); \
         {} preference pairs, {} contrast items, value subspace rank {}, ridge {}, seed {}, {:.0} s.</p>",
        esc(&a.constitution),
        esc(&a.neutral),
        esc(&a.model),
        &a.model_sha256[..12.min(a.model_sha256.len())],
        a.n_pairs,
        a.n_contrast,
        a.top_p,
        a.ridge,
        a.seed,
        a.wall_seconds
    );
    b.push_str("<h2>Findings</h2><ul>");
    for f in &a.findings {
        let _ = write!(b, "<li>{}</li>", esc(f));
    }
    b.push_str("</ul><h2>Ablation test (THEORY T7b)</h2>");
    b.push_str(&ablation_rows(&a.ablation));
    b.push_str("<h2>Per layer</h2><table><tr><th>layer</th><th>held-out acc(v)</th><th>‖Δ_C‖</th><th>cos(Δ_C, v)</th><th>share in V</th><th>cos(ĵ_C, v)</th><th>cos(ĝ, v)</th><th>cos(ĵ_C, ĝ)</th><th>LOO ĵ_C</th><th>LOO ĝ</th></tr>");
    for l in &a.layers {
        let _ = writeln!(
            b,
            "<tr{}><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:+.3}</td><td>{:.3}</td><td>{:+.3}</td><td>{:+.3}</td><td>{:+.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            if l.layer == a.best_layer { " class=\"ok\"" } else { "" },
            l.layer,
            l.value_accuracy,
            l.shift_norm,
            l.shift_cos_value,
            l.shift_share_in_value_subspace,
            l.judge_cos_value,
            l.gen_cos_value,
            l.judge_cos_gen,
            l.judge_loo_sign_agreement,
            l.gen_loo_sign_agreement,
        );
    }
    b.push_str("</table><h2>Figures</h2>");
    for (_, svg) in figures(a) {
        let _ = write!(b, "<figure>{svg}</figure>");
    }
    b.push_str("<h2>How to read this</h2><p>v_ℓ is the difference of means harmless − harmful on the contrast set at the answer position (T7a). Δ_C is the mean change of the residual stream at the judge's answer position when C's principle replaces the neutral one; a positive cosine means the constitution moves the judgment toward the harmless side, and the share says how much of the shift lies in the low-rank value subspace (T7c). ĵ_C and ĝ are ridge readouts of the judge's score S_C and of the generation preference from the activation differences of the two responses (as read inside the judge prompt, and after the plain prompt); LOO is their leave-one-out sign agreement, chance ½. The ablation test projects v out of every layer while judging: if the judge's value information runs along v, P_C moves toward ½ (T7b).</p>");
    html_page(&format!("lvh constitution analyze: {}", a.constitution), &b)
}
