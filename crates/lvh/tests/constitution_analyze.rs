//! `lvh constitution analyze`: the maths on planted data (Δ_C, its share in the value subspace,
//! the ridge readouts ĵ_C / ĝ, the T7b ablation statistics), the judge under interventions on a
//! tiny random-weight model (prefix reuse exact under ablation, no intervention = the judge), and
//! the command end to end on that model.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use lm_runtime::model::random::RandomLlama;
use lvh::analyze::forward::{judge_pair_under, locate_responses, token_span};
use lvh::analyze::{
    ablation_test, cosine, loo_sign_agreement, parse_layers, ridge_readout, twin_subsample,
};
use lvh::audit::geometry::Geometry;
use lvh::cmd::audit::activated_shift;
use lvh::cmd::run::Weights;
use lvh::constitution::Constitution;
use lvh::datasets::{bundled_contrast, bundled_preferences};
use lvh::geometry::refusal::ablate_everywhere;
use lvh::judge::prefix::{next_token_logprobs_under, PrefixReuse};
use lvh::judge::prompt::encode;
use lvh::judge::{Judge, JudgeConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use value_directions::{Direction, Subspace};

/// Standard normal draws (Box–Muller).
fn gauss(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}

fn unit(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// A geometry whose only used fields are the per-layer directions and subspaces.
fn planted_geometry(directions: Vec<Vec<f64>>, subspaces: Vec<Vec<Vec<f64>>>) -> Geometry {
    Geometry {
        layers: Vec::new(),
        best_layer: 0,
        n_dev: 0,
        n_test: 0,
        subspace_rank: subspaces[0].len(),
        directions: directions
            .into_iter()
            .map(|v| Direction::from_vector(v).unwrap())
            .collect(),
        subspaces: subspaces
            .iter()
            .map(|b| Subspace::from_vectors(b).unwrap())
            .collect(),
    }
}

#[test]
fn planted_shift_is_recovered_with_its_subspace_share() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(d, n) in &[(16usize, 10usize), (48, 25), (96, 40)] {
        let v = unit(&gauss(&mut rng, d));
        let w = unit(&gauss(&mut rng, d));
        // Layer 0: C adds 3·v plus tiny noise; layer 1: C adds w ⟂-ish to a subspace {v, e}.
        let e = unit(&gauss(&mut rng, d));
        let base: Vec<Vec<f32>> = (0..2)
            .map(|_| gauss(&mut rng, n * d).iter().map(|&x| x as f32).collect())
            .collect();
        let mut acts = base.clone();
        for i in 0..n {
            let noise = gauss(&mut rng, d);
            for k in 0..d {
                acts[0][i * d + k] += (3.0 * v[k] + 1e-3 * noise[k]) as f32;
                acts[1][i * d + k] += (2.0 * v[k] + 1.0 * w[k]) as f32;
            }
        }
        let g = planted_geometry(
            vec![v.clone(), v.clone()],
            vec![vec![v.clone(), e.clone()]; 2],
        );
        let s = activated_shift(&g, &acts, &base, d);
        assert!(s.cos_value[0] > 0.999, "d={d}: cos {}", s.cos_value[0]);
        assert!((s.norm[0] - 3.0).abs() < 1e-2, "norm {}", s.norm[0]);
        assert!(s.share_in_value_subspace[0] > 0.999);
        // Layer 1: Δ = 2v + w exactly (f32 rounding aside); share = ‖P(2v + w)‖²/‖2v + w‖².
        let delta: Vec<f64> = (0..d).map(|k| 2.0 * v[k] + w[k]).collect();
        let sub = Subspace::from_vectors(&[v.clone(), e.clone()]).unwrap();
        let p = sub.project(&delta).unwrap();
        let want = p.iter().map(|x| x * x).sum::<f64>() / delta.iter().map(|x| x * x).sum::<f64>();
        assert!(
            (s.share_in_value_subspace[1] - want).abs() < 1e-4,
            "share {} vs {want}",
            s.share_in_value_subspace[1]
        );
        assert!((s.cos_value[1] - cosine(&delta, &v)).abs() < 1e-4);
        assert!(want < 0.99, "w adds an outside component");
    }
}

#[test]
fn ridge_readout_recovers_a_planted_judgment_direction() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for &(d, m) in &[(8usize, 60usize), (32, 200), (64, 400)] {
        let j = unit(&gauss(&mut rng, d));
        let rows = gauss(&mut rng, m * d);
        let noise = gauss(&mut rng, m);
        let t: Vec<f64> = (0..m)
            .map(|i| {
                2.0 * cosine(&rows[i * d..(i + 1) * d], &j) * norm(&rows[i * d..(i + 1) * d])
                    + 0.05 * noise[i]
            })
            .collect();
        let w = ridge_readout(&rows, d, &t, 1e-3).unwrap().unwrap();
        assert!(cosine(&w, &j) > 0.99, "d={d} m={m}: cos {}", cosine(&w, &j));
        // The sign follows the targets: flipping them flips the readout.
        let neg: Vec<f64> = t.iter().map(|x| -x).collect();
        let wn = ridge_readout(&rows, d, &neg, 1e-3).unwrap().unwrap();
        assert!(cosine(&wn, &j) < -0.99);
        // Held-out sign agreement of the planted readout is near perfect.
        let loo = loo_sign_agreement(&rows, d, &t, 1e-3).unwrap();
        assert!(loo > 0.9, "loo {loo}");
    }
    // Non-finite rows are dropped; all-zero rows give no readout.
    let d = 4;
    let mut rows = vec![0.0; 3 * d];
    assert!(ridge_readout(&rows, d, &[1.0, -1.0, 2.0], 1.0)
        .unwrap()
        .is_none());
    rows[0] = 1.0;
    rows[d + 1] = f64::NAN;
    rows[2 * d] = 2.0;
    let w = ridge_readout(&rows, d, &[1.0, 5.0, 2.0], 1e-9)
        .unwrap()
        .unwrap();
    assert!(cosine(&w, &[1.0, 0.0, 0.0, 0.0]) > 0.999_999);
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn ablation_statistics_match_hand_counts() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // 20 pairs: normally 16 right, 4 wrong (P = 0.8); ablated 10/10 (P = 0.5).
    let normal: Vec<f64> = (0..20).map(|i| if i < 16 { 1.0 } else { -1.0 }).collect();
    let ablated: Vec<f64> = (0..20)
        .map(|i| if i % 2 == 0 { 0.5 } else { -0.5 })
        .collect();
    let t = ablation_test(7, &normal, &ablated, 2000, &mut rng);
    assert_eq!(t.layer, 7);
    assert_eq!(t.n_pairs, 20);
    assert!((t.p_normal - 0.8).abs() < 1e-12);
    assert!((t.p_ablated - 0.5).abs() < 1e-12);
    assert!((t.shrinkage - 0.3).abs() < 1e-12);
    assert!(t.shrank);
    assert!(t.p_normal_ci.lo < 0.8 && 0.8 < t.p_normal_ci.hi);
    assert!(t.p_normal_ci.lo > 0.5, "{:?}", t.p_normal_ci);
    assert!((t.mean_s_normal - 0.6).abs() < 1e-12);
    assert!((t.mean_abs_s_ablated - 0.5).abs() < 1e-12);
    // Ties count ½; a judge that moves away from ½ does not "shrink".
    let tied = vec![0.0; 20];
    let t = ablation_test(0, &tied, &normal, 500, &mut rng);
    assert!((t.p_normal - 0.5).abs() < 1e-12);
    assert!(t.shrinkage < 0.0 && !t.shrank && !t.shrank_significantly);
    // Same scores: shrinkage exactly 0 in every resample.
    let t = ablation_test(0, &normal, &normal, 200, &mut rng);
    assert_eq!((t.shrinkage_ci.lo, t.shrinkage_ci.hi), (0.0, 0.0));
}

#[test]
fn layers_parse_with_ranges_and_always_hold_the_best_layer() {
    assert_eq!(
        parse_layers(None, 30, 13).unwrap(),
        vec![0, 3, 6, 9, 12, 13, 15, 18, 21, 24, 27, 29]
    );
    assert_eq!(parse_layers(None, 3, 1).unwrap(), vec![0, 1, 2]);
    assert_eq!(parse_layers(Some("all"), 4, 0).unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(
        parse_layers(Some("5, 1-3,2"), 10, 9).unwrap(),
        vec![1, 2, 3, 5, 9]
    );
    let e = parse_layers(Some("1,12"), 10, 0).unwrap_err();
    assert!(e.contains("`12`") && e.contains("0..10"), "{e}");
    assert!(parse_layers(Some("x"), 10, 0).unwrap_err().contains("`x`"));
    assert!(parse_layers(Some("4-2"), 10, 0).is_err());
    assert!(parse_layers(Some(" , "), 10, 0).is_err());
}

#[test]
fn twin_subsample_keeps_twins_together_and_is_seeded() {
    let items = bundled_contrast().unwrap();
    let a = twin_subsample(items.clone(), 41, &mut ChaCha8Rng::seed_from_u64(5));
    let b = twin_subsample(items.clone(), 41, &mut ChaCha8Rng::seed_from_u64(5));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.text == y.text));
    assert!(a.len() <= 41 && a.len() >= 38, "{}", a.len());
    let mut per_pair: HashMap<&str, usize> = HashMap::new();
    for it in &a {
        *per_pair.entry(it.pair.as_deref().unwrap()).or_default() += 1;
    }
    let full: HashMap<&str, usize> = items.iter().fold(HashMap::new(), |mut m, it| {
        *m.entry(it.pair.as_deref().unwrap()).or_default() += 1;
        m
    });
    assert!(
        per_pair.iter().all(|(p, n)| full[p] == *n),
        "a twin group was split"
    );
    assert_eq!(
        twin_subsample(items.clone(), 0, &mut ChaCha8Rng::seed_from_u64(5)).len(),
        items.len()
    );
}

// ---------------------------------------------------------------------------------------------
// A tiny random llama with a byte-level vocabulary and a ChatML template.

/// A random 4-layer chat model over a byte-level vocabulary with a ChatML template.
fn write_tiny(path: &Path) {
    RandomLlama {
        n_layers: 4,
        context: 2048,
        ..RandomLlama::default()
    }
    .write_chat(path, &mut ChaCha8Rng::seed_from_u64(11))
    .unwrap();
}

#[test]
fn judge_under_ablation_is_exact_through_prefix_reuse_and_changes_scores() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    write_tiny(&p);
    let m = lvh::geometry::load_model(Some(p), Weights::F32).unwrap();
    let judge = Judge::new(&m.model, &m.format, &m.tokenizer, &JudgeConfig::default()).unwrap();
    let c = Constitution::resolve("helpful-and-harmless").unwrap();
    let pairs = bundled_preferences().unwrap();
    let d = m.model.config().d_model;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let v: Vec<f32> = unit(&gauss(&mut rng, d))
        .iter()
        .map(|&x| x as f32)
        .collect();
    let ablate = ablate_everywhere(4, &Tensor::from_slice(&v, d, &Device::Cpu).unwrap()).unwrap();
    let reuse = PrefixReuse::On { max_batch: 3 };
    let mut moved = 0.0f64;
    for pair in pairs.iter().take(2) {
        let plain = judge_pair_under(&m.model, judge.prompter(), reuse, &c, pair, &[]).unwrap();
        let want = judge
            .judge_pair(&c, &pair.prompt, &pair.chosen, &pair.rejected)
            .unwrap();
        assert_eq!(plain, want, "no intervention = the judge");
        let abl = judge_pair_under(&m.model, judge.prompter(), reuse, &c, pair, &ablate).unwrap();
        let fresh = judge_pair_under(
            &m.model,
            judge.prompter(),
            PrefixReuse::Off,
            &c,
            pair,
            &ablate,
        )
        .unwrap();
        for (a, b) in abl
            .ab
            .iter()
            .chain(&abl.ba)
            .zip(fresh.ab.iter().chain(&fresh.ba))
        {
            assert!(
                (a - b).abs() < 1e-3,
                "ablated prefix reuse {a} vs fresh {b}"
            );
        }
        moved = moved.max(
            abl.ab
                .iter()
                .zip(&plain.ab)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max),
        );
    }
    assert!(moved > 1e-4, "ablation must change the scores: {moved}");
    // The lower-level function with no seqs sharing a prefix agrees too.
    let seqs = vec![encode(&m.tokenizer, "abc"), encode(&m.tokenizer, "abd")];
    let a = next_token_logprobs_under(&m.model, &seqs, &[1, 2], reuse, &ablate).unwrap();
    let b = next_token_logprobs_under(&m.model, &seqs, &[1, 2], PrefixReuse::Off, &ablate).unwrap();
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-4);
    }
}

#[test]
fn token_spans_cover_the_response_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    write_tiny(&p);
    let m = lvh::geometry::load_model(Some(p), Weights::F32).unwrap();
    // Byte-level vocabulary: one token per byte, so spans are byte offsets exactly.
    let text = "<|im_start|>user\n(A) Sure thing\n(B) No<|im_end|>\n";
    let toks = encode(&m.tokenizer, text);
    let start = text.find("Sure").unwrap();
    let (a, b) = token_span(&m.tokenizer, text, &toks, start, start + "Sure thing".len()).unwrap();
    assert_eq!(m.tokenizer.decode(&toks[a..b]), "Sure thing");
    assert!(token_span(&m.tokenizer, text, &toks, start, start).is_none());
    // Responses that also occur in the conversation and in each other are found in their slots.
    let judge = Judge::new(&m.model, &m.format, &m.tokenizer, &JudgeConfig::default()).unwrap();
    let c = Constitution::resolve("helpful-and-harmless").unwrap();
    let principle = c.effective_principles()[0].text.clone();
    let (prompt, a, b) = ("Reply Yes or Yes. Yes?", "Yes", "Yes. Yes");
    for (ra, rb) in [(a, b), (b, a)] {
        let text = judge
            .prompter()
            .render(&c, &principle, prompt, ra, rb)
            .unwrap();
        let [x, y] = locate_responses(judge.prompter(), &c, &principle, prompt, &text, ra, rb)
            .unwrap()
            .unwrap();
        assert_eq!((&text[x.0..x.1], &text[y.0..y.1]), (ra, rb));
        assert_eq!(&text[x.0 - 4..x.0], "(A) ");
        assert_eq!(&text[y.0 - 4..y.0], "(B) ");
    }
}

#[test]
fn analyze_runs_end_to_end_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    write_tiny(&p);
    let out = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args([
            "constitution",
            "analyze",
            "adversarial-compliance",
            "--model",
            p.to_str().unwrap(),
            "--limit",
            "4",
            "--contrast-limit",
            "40",
            "--resamples",
            "50",
            "--layers",
            "all",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["constitution"], "adversarial-compliance");
    assert_eq!(j["labelled_adversarial"], true);
    assert_eq!(j["n_pairs"], 4);
    assert_eq!(j["n_layers"], 4);
    let layers = j["layers"].as_array().unwrap();
    assert_eq!(
        layers
            .iter()
            .map(|l| l["layer"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    for l in layers {
        let c = l["shift_cos_value"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&c));
        let s = l["shift_share_in_value_subspace"].as_f64().unwrap();
        assert!((0.0..=1.0 + 1e-9).contains(&s));
        assert!(
            l["shift_norm"].as_f64().unwrap() > 0.0,
            "C differs from neutral"
        );
        for k in ["judge_cos_value", "gen_cos_value", "judge_cos_gen"] {
            let x = l[k].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&x), "{k} = {x}");
        }
    }
    let t = &j["ablation"];
    for k in ["p_normal", "p_ablated"] {
        let p = t[k].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&p) && (p * 8.0).fract() == 0.0,
            "{k} = {p}: 4 pairs, ties ½"
        );
    }
    let shrink = t["shrinkage"].as_f64().unwrap();
    let (pn, pa) = (
        t["p_normal"].as_f64().unwrap(),
        t["p_ablated"].as_f64().unwrap(),
    );
    assert!((shrink - ((pn - 0.5).abs() - (pa - 0.5).abs())).abs() < 1e-12);
    assert_eq!(t["shrank"].as_bool().unwrap(), shrink > 0.0);
    for f in [
        "manifest.json",
        "analysis.json",
        "pairs.json",
        "report.html",
        "cosines.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let pairs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pairs.json")).unwrap()).unwrap();
    assert_eq!(pairs.as_array().unwrap().len(), 4);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Ablation test"));
    // Δ_C is saved per layer; its norms are the report's, and the control vector holds the
    // same vectors for the layers llama.cpp can address (ℓ ≥ 1).
    let saved =
        lvh::geometry::export::read_safetensors_vectors(&out.join("delta_c.safetensors")).unwrap();
    assert_eq!(saved.len(), 4);
    for l in layers {
        let i = l["layer"].as_u64().unwrap();
        let v = &saved[&format!("delta_c.{i}")];
        assert_eq!(v.len(), 64);
        let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let want = l["shift_norm"].as_f64().unwrap();
        assert!(
            (norm - want).abs() <= 1e-5 * want,
            "layer {i}: {norm} vs {want}"
        );
    }
    let cv = lvh::geometry::export::ControlVector::read(&out.join("delta_c.gguf")).unwrap();
    assert_eq!(cv.layers.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(cv.layers[&2], saved["delta_c.2"]);
    // Rerunning into the same folder with other settings is refused, naming the folder.
    let o = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args([
            "constitution",
            "analyze",
            "adversarial-compliance",
            "--model",
            p.to_str().unwrap(),
            "--limit",
            "3",
            "--contrast-limit",
            "40",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("different run"));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_lvh"))
            .args(["constitution", "analyze"])
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["helpful-and-harmless", "--limit", "1"]);
    assert!(!ok && err.contains("≥ 3"), "{err}");
    let (ok, err) = run(&["helpful-and-harmless", "--ridge=-1"]);
    assert!(!ok && err.contains("ridge"), "{err}");
    let (ok, err) = run(&["no-such-constitution", "--limit", "3"]);
    assert!(!ok && err.contains("no-such-constitution"), "{err}");
}

/// The real model, when `LVH_TEST_MODEL` names SmolLM2's GGUF file (run in `--release`).
#[test]
fn analyze_on_the_real_model() {
    let Ok(model) = std::env::var("LVH_TEST_MODEL") else {
        eprintln!("LVH_TEST_MODEL not set: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args([
            "constitution",
            "analyze",
            "helpful-and-harmless",
            "--model",
            &model,
            "--limit",
            "3",
            "--contrast-limit",
            "80",
            "--layers",
            "0,8,16",
            "--resamples",
            "200",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let best = j["best_layer"].as_u64().unwrap();
    let layers: Vec<u64> = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].as_u64().unwrap())
        .collect();
    assert!(layers.contains(&best) && layers.contains(&8));
    for l in j["layers"].as_array().unwrap() {
        // The value direction is real on SmolLM2: better than chance on held-out items.
        if l["layer"].as_u64().unwrap() == best {
            assert!(l["value_accuracy"].as_f64().unwrap() > 0.6, "{l}");
        }
        assert!(l["shift_norm"].as_f64().unwrap() > 0.0);
        assert!(l["judge_cos_value"].as_f64().unwrap().is_finite());
    }
    let t = &j["ablation"];
    assert_eq!(t["layer"].as_u64().unwrap(), best);
    assert!(t["p_normal_ci"]["lo"].as_f64().unwrap() <= t["p_normal"].as_f64().unwrap());
}
