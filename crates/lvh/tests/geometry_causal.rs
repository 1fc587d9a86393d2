//! The refusal score, the causal checks and the causal layer selection on a tiny random-weight
//! model: the score follows its formula, a candidate's numbers are those of the full check at
//! the same direction and coefficient, a zero addition changes nothing, and the selection
//! prefers passing candidates, then the lowest ablated harmful refusal.

use lm_runtime::model::random::RandomLlama;
use lm_runtime::model::{Model, WeightMode};
use lvh::geometry::refusal::{
    causal_checks, causal_checks_with, kl, next_token_logprobs, score_candidate, select_causal,
    Baseline, CandidateScore, MeanSe, RefusalTokens,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn model(dir: &std::path::Path) -> Model {
    let p = dir.join("tiny.gguf");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    RandomLlama::default().write(&p, &mut rng).unwrap();
    Model::load(&p, WeightMode::F32).unwrap()
}

fn prompts(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.gen_range(3..16);
            (0..len).map(|_| rng.gen_range(0..101)).collect()
        })
        .collect()
}

fn tokens() -> RefusalTokens {
    RefusalTokens {
        refusal: vec![("I".into(), 7, "I".into()), ("Sorry".into(), 9, "S".into())],
        compliance: vec![("Sure".into(), 11, "Sure".into())],
    }
}

fn unit(d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn refusal_score_follows_its_formula() {
    let mut lp = vec![-20.0f32; 16];
    lp[7] = -1.0;
    lp[9] = -2.0;
    lp[11] = -0.5;
    let s = tokens().score(&lp);
    let expected = ((-1.0f64).exp() + (-2.0f64).exp()).ln() - (-0.5);
    assert!((s - expected).abs() < 1e-12, "{s} vs {expected}");
    // A duplicated id counts once.
    let mut t = tokens();
    t.refusal.push(("I'm sorry".into(), 7, "I".into()));
    assert!((t.score(&lp) - expected).abs() < 1e-12);
}

#[test]
fn candidate_scores_match_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let d = m.config().d_model;
    let (harmful, harmless) = (prompts(5, 1), prompts(6, 2));
    let t = tokens();
    let u = unit(d, 3);
    let layer = 1;
    let base = Baseline::measure(&m, &t, &harmful, &harmless, 3).unwrap();
    // The full check with its own baseline equals the one with the shared baseline.
    let norm = 2.5;
    let full = causal_checks(&m, &t, &harmful, &harmless, &u, layer, norm, &[0.8, 0.0], 3).unwrap();
    let shared = causal_checks_with(
        &m,
        &t,
        &base,
        &harmful,
        &harmless,
        &u,
        layer,
        norm,
        &[0.8, 0.0],
        3,
    )
    .unwrap();
    assert_eq!(full, shared);
    // A candidate at coefficient 0.8·n̄ sees the same ablation and addition numbers.
    let c = score_candidate(
        &m,
        &t,
        &base,
        &harmful,
        &harmless,
        &u,
        layer,
        0.8 * norm,
        1e9,
        3,
    )
    .unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(c.harmful_ablated.mean, full.harmful_ablated.mean));
    assert!(close(c.harmless_kl.mean, full.harmless_kl_ablation.mean));
    assert!(close(
        c.harmless_added.mean,
        full.additions[0].harmless_added.mean
    ));
    assert_eq!(c.ablation_lowers, full.ablation_lowers_refusal);
    assert_eq!(c.addition_raises, full.addition_raises_refusal);
    assert!(c.kl_ok);
    // The ablation moves the distributions (KL > 0) of this random model.
    assert!(full.harmless_kl_ablation.mean > 0.0);
    // Adding nothing changes nothing.
    assert_eq!(full.additions[1].harmless_added, full.harmless_base);
    assert_eq!(full.additions[1].frac_raised, 0.0);
    // KL of a distribution with itself is zero, and the baseline logprobs are the plain ones.
    let plain = next_token_logprobs(&m, &harmless, &[], 3).unwrap();
    assert_eq!(plain, base.harmless_logprobs);
    assert_eq!(kl(&plain[0], &plain[0]), 0.0);
}

fn cand(layer: usize, ablated: f64, a: bool, b: bool, c: bool) -> CandidateScore {
    let ms = |mean| MeanSe { mean, se: 0.0 };
    CandidateScore {
        layer,
        add_coeff: 1.0,
        harmful_ablated: ms(ablated),
        harmless_added: ms(0.0),
        harmless_kl: ms(0.0),
        ablation_lowers: a,
        addition_raises: b,
        kl_ok: c,
    }
}

#[test]
fn selection_prefers_passing_then_lowest_ablated_refusal() {
    let cs = vec![
        cand(1, -9.0, true, false, true), // lowest, but fails (b)
        cand(2, -1.0, true, true, true),
        cand(3, -2.0, true, true, true),
        cand(4, 0.5, false, true, true),
    ];
    let (best, passes) = select_causal(&cs).unwrap();
    assert_eq!((best.layer, passes), (3, true));
    // None passes: the fewest failures, then the lowest.
    let cs = vec![
        cand(1, -9.0, false, false, true),
        cand(2, -1.0, true, false, true),
        cand(3, -3.0, true, true, false),
    ];
    let (best, passes) = select_causal(&cs).unwrap();
    assert_eq!((best.layer, passes), (3, false));
    assert!(select_causal(&[]).is_none());
}
