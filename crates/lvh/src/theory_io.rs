//! Reading model files of the theory engine and writing its figures and reports.

use std::path::Path;

use anyhow::{Context, Result};
use rlaif_sim::sim::SimTrace;
use rlaif_sim::spec::{Instance, ModelFile};

use crate::plot::{Plot, Series, Style};
pub use crate::run_dir::write_atomic;

/// Reads and validates a model file (`.toml` as TOML, anything else as JSON).
///
/// # Errors
/// An error naming the file and the field (or line and column) that is wrong.
pub fn load_instance(path: &Path) -> Result<Instance> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading model file {}", path.display()))?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let file = if is_toml {
        ModelFile::from_toml(&text)
    } else {
        ModelFile::from_json(&text)
    };
    file.and_then(ModelFile::validate)
        .with_context(|| format!("model file {}", path.display()))
}

/// The figures of a simulation: A_t and V_t, simulated, with the population prediction overlaid.
pub fn trace_figures(trace: &SimTrace) -> (Plot, Plot) {
    let rounds = |v: &[f64]| {
        v.iter()
            .enumerate()
            .map(|(t, x)| (t as f64, *x))
            .collect::<Vec<_>>()
    };
    let sim_a: Vec<f64> = trace.records.iter().map(|r| r.a).collect();
    let sim_v: Vec<f64> = trace.records.iter().map(|r| r.v).collect();
    let mc_v: Vec<f64> = trace.records.iter().filter_map(|r| r.mc_value).collect();
    let a = Plot::new("Policy alignment A_t", "round t", "A_t = a(b_t)")
        .with(Series::new(
            "population (T1)",
            rounds(&trace.population.a),
            Style::Dashed,
        ))
        .with(Series::new("simulated", rounds(&sim_a), Style::Line));
    let mut v = Plot::new("Value gain V_t", "round t", "V_t = E[u*] − E_ref[u*]")
        .with(Series::new(
            "population (T1)",
            rounds(&trace.population.v),
            Style::Dashed,
        ))
        .with(Series::new(
            "simulated ⟨c, b_t⟩",
            rounds(&sim_v),
            Style::Line,
        ));
    if !mc_v.is_empty() {
        v = v.with(Series::new(
            "Monte Carlo mean u*",
            rounds(&mc_v),
            Style::Points,
        ));
    }
    (a, v)
}

/// A self-contained HTML page with a title, a body of pre-rendered HTML and inline SVG figures.
pub fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}\
td:first-child,td:nth-child(2){{text-align:left}}.fail{{background:#fdd}}.ok{{background:#efe}}\
figure{{display:inline-block;margin:8px}}figcaption{{font-size:12px;max-width:640px}}</style></head>\n<body>\n<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = crate::plot::esc(title)
    )
}
