//! `lvh constitution analyze C`: the constitution-activated direction of one constitution on a
//! real model, next to the value direction, and a causal test that the judge uses it.
//!
//! Per layer ℓ (hook `blocks.ℓ.hook_resid_post`), on a subset of preference pairs `(x, y1, y2)`
//! with `y1 = chosen`:
//!
//! ```text
//! v_ℓ      = unit mean(h | harmless) − mean(h | harmful)          contrast set (T7a, the audit's stage 1)
//! V_ℓ      = top-p PCA subspace of paired contrast differences      (T7c)
//! Δ_C,ℓ    = mean_i[h_ℓ(judge prompt under C) − h_ℓ(same under neutral)]   answer position
//! share    = ‖P_V Δ_C,ℓ‖² / ‖Δ_C,ℓ‖²
//! ĵ_C,ℓ    = argmin_w Σ_i (S_C,i − <w, δ^J_i>)² + λ‖w‖²            δ^J_i = h^J(y1) − h^J(y2)
//! ĝ_ℓ      = argmin_w Σ_i (Δs_gen,i − <w, δ^G_i>)² + λ‖w‖²         δ^G_i = h^G(y1) − h^G(y2)
//! λ        = ridge · ‖X‖²_F / m                                    (scale-free; rows X, m pairs)
//! ```
//!
//! * `h^J(y)` is the mean `resid_post` over the tokens of `y` inside the judge prompt of C's
//!   first principle ("as the judge reads it"), averaged over both answer orders so that the
//!   (A)/(B) position cancels: `δ^J = ½[(h_A − h_B)|y1 as A + (h_B − h_A)|y2 as A]`.
//! * `h^G(y)` is the mean `resid_post` over the tokens of `y` after the chat-templated prompt
//!   (MEASURE §1), the context in which `s_gen(y) = mean log π(y | x)` is measured.
//! * The regressions have no intercept: swapping `y1` and `y2` flips the sign of both the target
//!   and the row, so the symmetrised data set is centred by construction.
//!
//! **Ablation test (THEORY T7b).** `v` = the unit `v_ℓ*` of the best layer ℓ* (dev-split
//! accuracy), projected out of `resid_pre`, `resid_mid` and `resid_post` at every layer while
//! judging (`h → h − <h, v> v`). T7b: if the judge's value information runs along `v`, the
//! agreement `P_C = mean_i win(S_C,i)` moves toward ½. Both agreements and the shrinkage
//! `|P_C − ½| − |P_C^abl − ½|` get paired percentile bootstrap intervals over pairs.
//!
//! Layout: this module holds the result types and the pure maths (planted-data tests in
//! `tests/constitution_analyze.rs`); [`forward`] runs the model; [`report`] renders words, SVG
//! and HTML from a saved [`Analysis`].

pub mod forward;
pub mod report;

use rand::Rng;
use serde::Serialize;
use value_directions::subspace::Differences;

use crate::audit::geometry::Geometry;
use crate::judge::stats::{quantile_sorted, win, Interval};

/// Default number of preference pairs (keeps the default run near 3 minutes with SmolLM2-135M
/// on 2 CPU cores).
pub const DEFAULT_LIMIT: usize = 12;

/// Default relative ridge strength (`λ = ridge · ‖X‖²_F / m`).
pub const DEFAULT_RIDGE: f64 = 1.0;

/// What the analysis says about one layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerAnalysis {
    /// Block index ℓ.
    pub layer: usize,
    /// Held-out accuracy of `v_ℓ` on the contrast set (from the value geometry).
    pub value_accuracy: f64,
    /// `‖Δ_C,ℓ‖`.
    pub shift_norm: f64,
    /// `cos(Δ_C,ℓ, v_ℓ)`.
    pub shift_cos_value: f64,
    /// Share of `‖Δ_C,ℓ‖²` inside the top-p value subspace.
    pub shift_share_in_value_subspace: f64,
    /// `cos(ĵ_C,ℓ, v_ℓ)` (NaN when the fit failed, e.g. all rows zero).
    pub judge_cos_value: f64,
    /// `cos(ĝ_ℓ, v_ℓ)`.
    pub gen_cos_value: f64,
    /// `cos(ĵ_C,ℓ, ĝ_ℓ)`.
    pub judge_cos_gen: f64,
    /// Fraction of pairs whose `S_C` sign `<ĵ_C, δ^J>` reproduces in leave-one-out fits.
    pub judge_loo_sign_agreement: f64,
    /// The same for `ĝ` and `Δs_gen`.
    pub gen_loo_sign_agreement: f64,
}

/// The ablation test of T7b.
#[derive(Clone, Debug, Serialize)]
pub struct AblationTest {
    /// Layer of the ablated direction (the best layer).
    pub layer: usize,
    /// Pairs judged.
    pub n_pairs: usize,
    /// `P_C` judged normally.
    pub p_normal: f64,
    /// Its 95% interval.
    pub p_normal_ci: Interval,
    /// `P_C` with `v` ablated at every layer.
    pub p_ablated: f64,
    /// Its 95% interval.
    pub p_ablated_ci: Interval,
    /// `|P_C − ½| − |P_C^abl − ½|` (positive: moved toward ½).
    pub shrinkage: f64,
    /// Its paired 95% interval.
    pub shrinkage_ci: Interval,
    /// `|P_C − ½|` shrank (point estimate).
    pub shrank: bool,
    /// The shrinkage interval excludes 0 from above (significant move toward ½).
    pub shrank_significantly: bool,
    /// Mean `S_C` judged normally.
    pub mean_s_normal: f64,
    /// Mean `S_C` with the ablation.
    pub mean_s_ablated: f64,
    /// Mean `|S_C|` judged normally (the judge's decisiveness).
    pub mean_abs_s_normal: f64,
    /// Mean `|S_C|` with the ablation.
    pub mean_abs_s_ablated: f64,
}

/// The per-pair scores of the run (saved as `pairs.json`).
#[derive(Clone, Debug, Serialize)]
pub struct PairRow {
    /// Index of the pair in the input file.
    pub index: usize,
    /// `S_C` judged normally.
    pub s_c: f64,
    /// `S_C` with `v` ablated at every layer.
    pub s_c_ablated: f64,
    /// `S` under the neutral constitution.
    pub s_neutral: f64,
    /// `s_gen(y1) − s_gen(y2)` (NaN for an empty response).
    pub gen_diff: f64,
}

/// The full result (written as `analysis.json`, printed by `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// The constitution analysed.
    pub constitution: String,
    /// The baseline Δ_C is measured against.
    pub neutral: String,
    /// The constitution file labels itself adversarial.
    pub labelled_adversarial: bool,
    /// The model file.
    pub model: String,
    /// Its sha256.
    pub model_sha256: String,
    /// Pairs used.
    pub n_pairs: usize,
    /// Contrast items (dev + held-out).
    pub n_contrast: usize,
    /// Seed of the pair subsample and the bootstrap.
    pub seed: u64,
    /// Rank p of the value subspace.
    pub top_p: usize,
    /// Relative ridge strength.
    pub ridge: f64,
    /// Best layer of the value direction (dev-split accuracy).
    pub best_layer: usize,
    /// Number of layers of the model.
    pub n_layers: usize,
    /// Per reported layer, ascending.
    pub layers: Vec<LayerAnalysis>,
    /// `P_C` under the neutral constitution (context for the ablation test).
    pub p_neutral: f64,
    /// `P_gen`, the generation preference's agreement on the same pairs.
    pub p_gen: f64,
    /// T7b.
    pub ablation: AblationTest,
    /// Headline findings in words.
    pub findings: Vec<String>,
    /// Per-pair scores.
    #[serde(skip)]
    pub pairs: Vec<PairRow>,
    /// Wall time in seconds.
    pub wall_seconds: f64,
    /// Wall time per stage, seconds.
    pub stage_seconds: Vec<(String, f64)>,
}

/// `<a, b> / (‖a‖‖b‖)` in f64; NaN when either is zero or non-finite.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na > 0.0 && nb > 0.0 {
        dot / (na * nb)
    } else {
        f64::NAN
    }
}

/// The ridge readout `w = (XᵀX + λI)⁻¹ Xᵀt` of targets `t` on rows `X` (`rows`: row-major
/// `[m, d]`), no intercept, `λ = ridge · ‖X‖²_F / m`. Rows or targets that are not finite are
/// dropped first. `None` when fewer than 2 rows remain or the rows are all zero.
///
/// # Errors
/// A failed factorisation (cannot happen for `ridge > 0`) or a negative `ridge`.
pub fn ridge_readout(
    rows: &[f64],
    d: usize,
    targets: &[f64],
    ridge: f64,
) -> value_directions::Result<Option<Vec<f64>>> {
    let keep: Vec<usize> = (0..targets.len())
        .filter(|&i| {
            targets[i].is_finite() && rows[i * d..(i + 1) * d].iter().all(|x| x.is_finite())
        })
        .collect();
    if keep.len() < 2 {
        return Ok(None);
    }
    let flat: Vec<f64> = keep
        .iter()
        .flat_map(|&i| rows[i * d..(i + 1) * d].iter().copied())
        .collect();
    let frob: f64 = flat.iter().map(|x| x * x).sum();
    if frob == 0.0 {
        return Ok(None);
    }
    let t: Vec<f64> = keep.iter().map(|&i| targets[i]).collect();
    let l2 = ridge * frob / keep.len() as f64;
    let fit = value_directions::ridge(&Differences::from_flat(flat, d)?, &t, l2, false)?;
    Ok(Some(fit.weights))
}

/// Leave-one-out check of a readout: for each finite row `i`, fit on the others and score
/// `sign(<w_{−i}, x_i>) == sign(t_i)` (ties and zero targets count ½). NaN for fewer than 3 rows.
///
/// # Errors
/// As [`ridge_readout`].
pub fn loo_sign_agreement(
    rows: &[f64],
    d: usize,
    targets: &[f64],
    ridge: f64,
) -> value_directions::Result<f64> {
    let ok: Vec<usize> = (0..targets.len())
        .filter(|&i| {
            targets[i].is_finite() && rows[i * d..(i + 1) * d].iter().all(|x| x.is_finite())
        })
        .collect();
    if ok.len() < 3 {
        return Ok(f64::NAN);
    }
    let mut hits = 0.0;
    for &held in &ok {
        let train: Vec<usize> = ok.iter().copied().filter(|&i| i != held).collect();
        let x: Vec<f64> = train
            .iter()
            .flat_map(|&i| rows[i * d..(i + 1) * d].iter().copied())
            .collect();
        let t: Vec<f64> = train.iter().map(|&i| targets[i]).collect();
        let pred = match ridge_readout(&x, d, &t, ridge)? {
            Some(w) => w
                .iter()
                .zip(&rows[held * d..(held + 1) * d])
                .map(|(a, b)| a * b)
                .sum::<f64>(),
            None => 0.0,
        };
        hits += if targets[held] == 0.0 || pred == 0.0 {
            0.5
        } else {
            f64::from(u8::from((pred > 0.0) == (targets[held] > 0.0)))
        };
    }
    Ok(hits / ok.len() as f64)
}

/// The T7b test from paired scores: `P = mean win(S)` for each column, the shrinkage
/// `|P − ½| − |P_abl − ½|`, and percentile 95% intervals from `resamples` paired resamples of
/// pair indices (one index draw serves all three statistics).
///
/// # Panics
/// If the columns differ in length.
pub fn ablation_test<R: Rng + ?Sized>(
    layer: usize,
    s_normal: &[f64],
    s_ablated: &[f64],
    resamples: usize,
    rng: &mut R,
) -> AblationTest {
    assert_eq!(s_normal.len(), s_ablated.len(), "paired columns");
    let n = s_normal.len();
    let wn: Vec<f64> = s_normal.iter().map(|&s| win(s)).collect();
    let wa: Vec<f64> = s_ablated.iter().map(|&s| win(s)).collect();
    let stats = |idx: &mut dyn Iterator<Item = usize>| {
        let (mut a, mut b, mut k) = (0.0, 0.0, 0.0);
        for i in idx {
            a += wn[i];
            b += wa[i];
            k += 1.0;
        }
        let (pn, pa) = (a / k, b / k);
        [pn, pa, (pn - 0.5).abs() - (pa - 0.5).abs()]
    };
    let point = stats(&mut (0..n));
    let mut draws: [Vec<f64>; 3] = Default::default();
    if n > 0 {
        for _ in 0..resamples {
            let idx: Vec<usize> = (0..n).map(|_| rng.gen_range(0..n)).collect();
            for (d, v) in draws.iter_mut().zip(stats(&mut idx.into_iter())) {
                d.push(v);
            }
        }
    }
    let ci = |mut v: Vec<f64>| {
        if v.is_empty() {
            return Interval {
                lo: f64::NAN,
                hi: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        Interval {
            lo: quantile_sorted(&v, 0.025),
            hi: quantile_sorted(&v, 0.975),
        }
    };
    let [dn, da, ds] = draws;
    let mean = |v: &[f64], f: fn(f64) -> f64| v.iter().map(|&x| f(x)).sum::<f64>() / n as f64;
    let shrinkage_ci = ci(ds);
    AblationTest {
        layer,
        n_pairs: n,
        p_normal: point[0],
        p_normal_ci: ci(dn),
        p_ablated: point[1],
        p_ablated_ci: ci(da),
        shrinkage: point[2],
        shrank: point[2] > 0.0,
        shrank_significantly: shrinkage_ci.lo > 0.0,
        shrinkage_ci,
        mean_s_normal: mean(s_normal, |x| x),
        mean_s_ablated: mean(s_ablated, |x| x),
        mean_abs_s_normal: mean(s_normal, f64::abs),
        mean_abs_s_ablated: mean(s_ablated, f64::abs),
    }
}

/// Rows `δ_i` of one layer (`[m, d]` row-major, f64) from per-pair vectors.
pub fn stack(rows: &[Vec<f64>]) -> Vec<f64> {
    rows.iter().flatten().copied().collect()
}

/// The per-layer analysis from the measured pieces. `judge_rows[k]` / `gen_rows[k]` are the
/// `[m, d]` difference rows at `layers[k]`; `shift` is the audit's activated shift (indexed by
/// layer over all layers).
///
/// # Errors
/// Ridge failures.
#[allow(clippy::too_many_arguments)] // each is a distinct measured input
pub fn per_layer(
    g: &Geometry,
    layers: &[usize],
    shift: &crate::audit::ActivatedShift,
    judge_rows: &[Vec<f64>],
    gen_rows: &[Vec<f64>],
    s_c: &[f64],
    gen_diff: &[f64],
    d: usize,
    ridge: f64,
) -> value_directions::Result<Vec<LayerAnalysis>> {
    let mut out = Vec::with_capacity(layers.len());
    for (k, &l) in layers.iter().enumerate() {
        let v = g.directions[l].as_slice();
        let j = ridge_readout(&judge_rows[k], d, s_c, ridge)?;
        let gg = ridge_readout(&gen_rows[k], d, gen_diff, ridge)?;
        let cos_v = |w: &Option<Vec<f64>>| w.as_ref().map_or(f64::NAN, |w| cosine(w, v));
        out.push(LayerAnalysis {
            layer: l,
            value_accuracy: g
                .layers
                .get(l)
                .map_or(f64::NAN, |x| x.dom_accuracy.estimate),
            shift_norm: shift.norm[l],
            shift_cos_value: shift.cos_value[l],
            shift_share_in_value_subspace: shift.share_in_value_subspace[l],
            judge_cos_value: cos_v(&j),
            gen_cos_value: cos_v(&gg),
            judge_cos_gen: match (&j, &gg) {
                (Some(a), Some(b)) => cosine(a, b),
                _ => f64::NAN,
            },
            judge_loo_sign_agreement: loo_sign_agreement(&judge_rows[k], d, s_c, ridge)?,
            gen_loo_sign_agreement: loo_sign_agreement(&gen_rows[k], d, gen_diff, ridge)?,
        });
    }
    Ok(out)
}

/// Parses `--layers`: `all`, or a comma list of layers and inclusive ranges `a-b`; `None` gives
/// every `stride`-th layer (`stride = ⌈L/12⌉`) plus the last one. Sorted, deduplicated, and
/// always including `best`.
///
/// # Errors
/// A message naming the bad item or a layer outside `0..n_layers`.
pub fn parse_layers(
    spec: Option<&str>,
    n_layers: usize,
    best: usize,
) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = match spec.map(str::trim) {
        None => {
            let stride = n_layers.div_ceil(12).max(1);
            (0..n_layers)
                .step_by(stride)
                .chain(n_layers.checked_sub(1))
                .collect()
        }
        Some("all") => (0..n_layers).collect(),
        Some(list) => {
            let mut v = Vec::new();
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let p = |x: &str| {
                    x.trim().parse::<usize>().map_err(|_| {
                        format!("--layers: `{item}` is not a layer number or range a-b")
                    })
                };
                let (lo, hi) = match item.split_once('-') {
                    Some((a, b)) => (p(a)?, p(b)?),
                    None => (p(item)?, p(item)?),
                };
                if lo > hi || hi >= n_layers {
                    return Err(format!(
                        "--layers: `{item}` is outside the model's layers 0..{n_layers}"
                    ));
                }
                v.extend(lo..=hi);
            }
            if v.is_empty() {
                return Err("--layers: no layer given".into());
            }
            v
        }
    };
    if best < n_layers {
        out.push(best);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Default size of the contrast subsample (`--contrast-limit`; 0 keeps every item).
pub const DEFAULT_CONTRAST_LIMIT: usize = 160;

/// A seeded subsample of at most `max_items` contrast items that keeps twins together: items
/// sharing a `pair` id form one group (an item without one is a group alone), groups are drawn
/// in a random order until the next would overflow, and the input order is kept. `max_items = 0`
/// or a set already small enough returns the input.
pub fn twin_subsample<R: Rng + ?Sized>(
    items: Vec<crate::datasets::ContrastItem>,
    max_items: usize,
    rng: &mut R,
) -> Vec<crate::datasets::ContrastItem> {
    if max_items == 0 || items.len() <= max_items {
        return items;
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_pair: std::collections::HashMap<&str, usize> = Default::default();
    for (i, it) in items.iter().enumerate() {
        match it.pair.as_deref() {
            Some(p) => match by_pair.get(p) {
                Some(&g) => groups[g].push(i),
                None => {
                    by_pair.insert(p, groups.len());
                    groups.push(vec![i]);
                }
            },
            None => groups.push(vec![i]),
        }
    }
    rand::seq::SliceRandom::shuffle(groups.as_mut_slice(), rng);
    let mut keep = vec![false; items.len()];
    let mut n = 0;
    for g in &groups {
        if n + g.len() > max_items {
            continue;
        }
        n += g.len();
        g.iter().for_each(|&i| keep[i] = true);
    }
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(it, k)| k.then_some(it))
        .collect()
}
