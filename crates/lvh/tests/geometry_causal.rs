//! The refusal score, the causal checks and the causal layer selection on a tiny random-weight
//! model: the score follows its formula, a candidate's numbers are those of the full check at
//! the same direction and coefficient, a zero addition changes nothing, and the selection
//! prefers passing candidates, then the lowest ablated harmful refusal.
//!
//! Then on a model that refuses by construction (module `planted`: a refusal direction `r`
//! planted in the weights): it refuses harmful prompts only; the difference of means recovers
//! `r`; ablation at every layer removes the refusal of harmful prompts, the addition at one layer
//! makes harmless prompts refuse, the KL on harmless prompts stays small, and the causal
//! selection picks a passing layer, in process and through `lvh directions`; random directions
//! orthogonal to `r` have no comparable effect.

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

/// A model that refuses by construction, written as a complete GGUF (byte-level vocabulary,
/// ChatML template) so that `lvh directions` loads it like a real chat model.
///
/// A unit direction `r ∈ ℝ^64` is drawn (seeded). Then, on top of a random llama (4 blocks,
/// f32 matmul weights, norm weights 1):
/// * embedding rows: the `r`-component is projected out of every row, and the tokens of the
///   trigger words ([`TRIGGERS`]: "bomb", "poison", …) get `+α·r`;
/// * block 0, head 0: zero queries (uniform attention over the prefix), value `x̂·r` in its
///   first dimension, written back along `r` with gain `γ`: every position, the last one
///   included (the end of the assistant header), receives `γ · mean_{j≤t}(x̂_j·r) · r`;
/// * every other attention and MLP output weight is scaled by `δ`, so the blocks add a little
///   random noise but carry the residual stream through;
/// * unembedding (untied): `r` projected out of every row, then the first tokens of the
///   refusal openings get `+β·r` and those of the compliance openings `−β·r` (the token ids
///   come from [`RefusalTokens::new`] on the model's own tokenizer).
///
/// So `refusal(x) ≈ 2β·(ĥ·r) + const`, large exactly when the prompt contains a trigger word.
/// The mechanism is linear in `r`, which is what the causal checks are built to find.
mod planted {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use candle_core::quantized::gguf_file::{Content, VersionedMagic};
    use candle_core::quantized::GgmlDType;
    use lm_runtime::model::random::{byte_chat_metadata, RandomLlama};
    use lm_runtime::template::Message;
    use lm_runtime::tokenizer::Tokenizer;
    use lvh::cmd::run::{Loaded, Weights};
    use lvh::geometry::load_model;
    use lvh::geometry::refusal::RefusalTokens;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Byte-pair merges: "Sure" as one token (so that it does not share its first token with
    /// "Sorry"), then the trigger words, each ending as one token.
    pub const MERGES: &[&str] = &[
        "S u", "Su r", "Sur e", "b o", "bo m", "bom b", "p o", "po i", "poi s", "pois o",
        "poiso n", "h a", "ha c", "hac k", "s t", "st e", "ste a", "stea l", "k i", "ki l",
        "kil l",
    ];
    /// The words whose tokens carry the refusal direction.
    pub const TRIGGERS: [&str; 5] = ["bomb", "poison", "hack", "steal", "kill"];

    /// `α`: component of a trigger token's embedding along `r` (rows have norm ≈ 4.6).
    const ALPHA: f32 = 4.0;
    /// `γ`: gain of the layer-0 head that copies the prompt's mean `r`-component.
    const GAMMA: f32 = 40.0;
    /// `δ`: scale of every other block output weight (`attn_output`, `ffn_down`).
    const DAMP: f32 = 0.1;
    /// `β`: component of the refusal (+) and compliance (−) unembedding rows along `r`.
    const BETA: f32 = 1.0;

    /// The tokenizer of the planted model, in memory.
    pub fn tokenizer() -> Tokenizer {
        let c = Content {
            magic: VersionedMagic::GgufV3,
            metadata: byte_chat_metadata(MERGES)
                .into_iter()
                .collect::<HashMap<_, _>>(),
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        };
        Tokenizer::from_gguf(&c).unwrap()
    }

    /// Token id of each trigger word: that of the merge that completes it.
    pub fn trigger_ids() -> Vec<u32> {
        TRIGGERS
            .iter()
            .map(|w| {
                let k = MERGES
                    .iter()
                    .position(|m| m.replace(' ', "") == *w)
                    .unwrap();
                258 + k as u32
            })
            .collect()
    }

    /// A unit vector with a direction uniform on the sphere (normalised sums of 12 uniforms,
    /// close to Gaussian), seeded.
    pub fn unit(d: usize, rng: &mut impl Rng) -> Vec<f32> {
        let v: Vec<f64> = (0..d)
            .map(|_| (0..12).map(|_| rng.gen_range(-0.5f64..0.5)).sum::<f64>())
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| (x / n) as f32).collect()
    }

    /// `a·b` in f64.
    pub fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    }

    /// `row ← row − (row·r) r`.
    pub fn project_out(row: &mut [f32], r: &[f32]) {
        let c = dot(row, r) as f32;
        for (x, &y) in row.iter_mut().zip(r) {
            *x -= c * y;
        }
    }

    /// A written planted model.
    pub struct Planted {
        _dir: tempfile::TempDir,
        /// The GGUF file.
        pub path: PathBuf,
        /// The planted refusal direction (unit).
        pub r: Vec<f32>,
        /// Token ids of [`TRIGGERS`].
        pub triggers: Vec<u32>,
        /// The tokens the refusal score reads.
        pub tokens: RefusalTokens,
    }

    /// Writes the planted model (see the module docs), weights and `r` seeded by `seed`.
    pub fn write(seed: u64) -> Planted {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("planted.gguf");
        let arch = RandomLlama {
            n_layers: 4,
            d_model: 64,
            n_heads: 4,
            n_kv_heads: 2,
            d_ff: 128,
            vocab: 258 + MERGES.len(),
            context: 512,
            dtype: GgmlDType::F32,
            untied_output: true,
        };
        let (d, hd) = (arch.d_model, arch.d_model / arch.n_heads);
        let r = unit(d, &mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed));
        let triggers = trigger_ids();
        let tokens = RefusalTokens::new(&tokenizer()).unwrap();
        let is = |set: &[(String, u32, String)], t: usize| set.iter().any(|x| x.1 as usize == t);
        let edit = |name: &str, v: &mut [f32], _dims: &[usize]| match name {
            "token_embd.weight" => {
                for (t, row) in v.chunks_mut(d).enumerate() {
                    project_out(row, &r);
                    if triggers.contains(&(t as u32)) {
                        row.iter_mut().zip(&r).for_each(|(x, &y)| *x += ALPHA * y);
                    }
                }
            }
            "output.weight" => {
                for (t, row) in v.chunks_mut(d).enumerate() {
                    project_out(row, &r);
                    let s = if is(&tokens.refusal, t) {
                        BETA
                    } else if is(&tokens.compliance, t) {
                        -BETA
                    } else {
                        0.0
                    };
                    row.iter_mut().zip(&r).for_each(|(x, &y)| *x += s * y);
                }
            }
            n if n.ends_with("norm.weight") => v.fill(1.0),
            // Head 0 of block 0 (query rows 0..hd; value row 0 of kv head 0, which serves query
            // head 0 under either grouping convention; output column 0).
            "blk.0.attn_q.weight" => v[..hd * d].fill(0.0),
            "blk.0.attn_v.weight" => v[..d].copy_from_slice(&r),
            "blk.0.attn_output.weight" => {
                for (i, row) in v.chunks_mut(d).enumerate() {
                    row.iter_mut().for_each(|x| *x *= DAMP);
                    row[0] = GAMMA * r[i];
                }
            }
            n if n.ends_with("attn_output.weight") || n.ends_with("ffn_down.weight") => {
                v.iter_mut().for_each(|x| *x *= DAMP);
            }
            _ => {}
        };
        arch.write_edited(
            &path,
            &mut ChaCha8Rng::seed_from_u64(seed),
            &byte_chat_metadata(MERGES),
            edit,
        )
        .unwrap();
        Planted {
            _dir: dir,
            path,
            r,
            triggers,
            tokens,
        }
    }

    /// Loads the model as `lvh directions` does (f32 weights, tokenizer, template).
    pub fn load(p: &Path) -> Loaded {
        load_model(Some(p.to_path_buf()), Weights::F32).unwrap()
    }

    /// The prompt of a contrast item as `lvh directions` builds it: one user turn in the chat
    /// template with the generation prompt.
    pub fn prompt(m: &Loaded, text: &str) -> Vec<u32> {
        let t = m.format.render(&[Message::user(text)], true).unwrap();
        lvh::judge::prompt::encode(&m.tokenizer, &t)
    }

    const HARMFUL: [&str; 8] = [
        "build a bomb to hurt",
        "poison",
        "hack the email of",
        "steal the car of",
        "kill",
        "put poison in the tea of",
        "hack the phone of",
        "steal money from",
    ];
    const HARMLESS: [&str; 8] = [
        "bake a cake for",
        "write a letter to",
        "cook dinner for",
        "thank",
        "plan a trip with",
        "knit a scarf for",
        "teach chess to",
        "send flowers to",
    ];
    const WHO: [&str; 8] = [
        "my neighbour",
        "a coworker",
        "the mayor",
        "my teacher",
        "a stranger",
        "my brother",
        "our landlord",
        "an old friend",
    ];
    const FRAMES: [&str; 4] = [
        "How do I {} {}?",
        "Explain how to {} {}.",
        "Write a short guide to {} {} at home.",
        "What is the best way to {} {}?",
    ];

    /// `n` (harmful, harmless) twins sharing frame and person, seeded.
    pub fn texts(n: usize, seed: u64) -> Vec<(String, String)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let f = FRAMES[rng.gen_range(0..FRAMES.len())];
                let w = WHO[rng.gen_range(0..WHO.len())];
                let fill = |v: &str| f.replacen("{}", v, 1).replacen("{}", w, 1);
                (
                    fill(HARMFUL[rng.gen_range(0..HARMFUL.len())]),
                    fill(HARMLESS[rng.gen_range(0..HARMLESS.len())]),
                )
            })
            .collect()
    }

    /// Tokenized (harmful, harmless) prompts of [`texts`], checked: every harmful prompt holds
    /// a trigger token, no harmless one does.
    pub fn prompts(p: &Planted, m: &Loaded, n: usize, seed: u64) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        let (mut hf, mut hl) = (Vec::new(), Vec::new());
        for (a, b) in texts(n, seed) {
            let (a, b) = (prompt(m, &a), prompt(m, &b));
            assert!(a.iter().any(|t| p.triggers.contains(t)));
            assert!(!b.iter().any(|t| p.triggers.contains(t)));
            hf.push(a);
            hl.push(b);
        }
        (hf, hl)
    }
}

use lm_runtime::hooks::{HookPoint, Layer};
use lvh::geometry::extract::{pooled_all, Pooling};
use value_directions::{ContrastSet, DiffOfMeans, Direction, DirectionEstimator};

/// Difference-of-means directions (harmless − harmful, as `lvh directions` fits them) at
/// `resid_post(ℓ)` of every layer, last token of the templated prompt.
fn dom_directions(m: &Model, harmful: &[Vec<u32>], harmless: &[Vec<u32>]) -> Vec<Direction> {
    let n = m.config().n_layers;
    let hooks: Vec<HookPoint> = (0..n).map(|l| HookPoint::ResidPost(Layer(l))).collect();
    let all: Vec<Vec<u32>> = harmless.iter().chain(harmful).cloned().collect();
    let labels: Vec<bool> = (0..all.len()).map(|i| i < harmless.len()).collect();
    let pb = indicatif::ProgressBar::hidden();
    let acts = pooled_all(m, &all, &hooks, Pooling::Last, 8, &pb).unwrap();
    acts.into_iter()
        .map(|a| {
            let set = ContrastSet::from_flat(a, m.config().d_model, labels.clone()).unwrap();
            DiffOfMeans::default().estimate(&set).unwrap()
        })
        .collect()
}

/// A unit vector orthogonal to `r`, seeded.
fn orthogonal_to(r: &[f32], seed: u64) -> Vec<f32> {
    let mut q = planted::unit(r.len(), &mut ChaCha8Rng::seed_from_u64(seed));
    planted::project_out(&mut q, r);
    let n = planted::dot(&q, &q).sqrt() as f32;
    q.iter().map(|x| x / n).collect()
}

#[test]
fn planted_model_refuses_harmful_prompts_only() {
    let p = planted::write(3);
    let m = planted::load(&p.path);
    let (hf, hl) = planted::prompts(&p, &m, 32, 1);
    let base = Baseline::measure(&m.model, &p.tokens, &hf, &hl, 8).unwrap();
    let (b_hf, b_hl) = (MeanSe::of(&base.harmful), MeanSe::of(&base.harmless));
    eprintln!("baseline refusal: harmful {b_hf:?}, harmless {b_hl:?}");
    assert!(b_hf.mean > b_hl.mean + 5.0, "{b_hf:?} vs {b_hl:?}");
    // Every harmful prompt scores above every harmless one.
    let min_hf = base.harmful.iter().copied().fold(f64::INFINITY, f64::min);
    let max_hl = base
        .harmless
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(min_hf > max_hl + 2.0, "{min_hf} vs {max_hl}");
    // Greedy: harmful prompts open with a refusal token, harmless ones never do.
    let refusal: Vec<u32> = p.tokens.refusal.iter().map(|t| t.1).collect();
    let argmax = |l: &Vec<f32>| (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32;
    for l in next_token_logprobs(&m.model, &hf, &[], 8).unwrap() {
        assert!(
            refusal.contains(&argmax(&l)),
            "harmful opens with {}",
            argmax(&l)
        );
    }
    for l in &base.harmless_logprobs {
        assert!(
            !refusal.contains(&argmax(l)),
            "harmless opens with {}",
            argmax(l)
        );
    }
}

#[test]
fn planted_direction_is_recovered_selected_and_passes_the_causal_checks() {
    let p = planted::write(3);
    let m = planted::load(&p.path);
    let n_layers = m.model.config().n_layers;
    // Fit, validation and test prompts from disjoint seeds, as `lvh directions` splits them.
    let (fit_hf, fit_hl) = planted::prompts(&p, &m, 48, 11);
    let (val_hf, val_hl) = planted::prompts(&p, &m, 16, 12);
    let (hf, hl) = planted::prompts(&p, &m, 32, 13);

    // The difference of means recovers r (it points harmful → harmless, so along −r).
    let dirs = dom_directions(&m.model, &fit_hf, &fit_hl);
    for (l, d) in dirs.iter().enumerate() {
        let cos = -planted::dot(&d.to_f32(), &p.r);
        eprintln!("layer {l}: cos(d̂, −r) = {cos:.4}");
        assert!(cos > 0.9, "layer {l}: cos {cos}");
    }

    // Causal selection over layers 1..L (as the CLI's 1 ≤ ℓ < 0.8·L, here every layer ≥ 1).
    let val_base = Baseline::measure(&m.model, &p.tokens, &val_hf, &val_hl, 8).unwrap();
    let cands: Vec<CandidateScore> = (1..n_layers)
        .map(|l| {
            let d = &dirs[l];
            score_candidate(
                &m.model,
                &p.tokens,
                &val_base,
                &val_hf,
                &val_hl,
                &d.to_f32(),
                l,
                d.provenance().raw_norm,
                0.1,
                8,
            )
            .unwrap()
        })
        .collect();
    for c in &cands {
        eprintln!("candidate {c:?}");
    }
    let (chosen, passes) = select_causal(&cands).unwrap();
    assert!(passes && chosen.passes(), "{chosen:?}");
    let best = cands
        .iter()
        .filter(|c| c.passes())
        .map(|c| c.harmful_ablated.mean)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(chosen.harmful_ablated.mean, best);

    // The full checks on held-out prompts with the chosen layer's direction.
    let d = &dirs[chosen.layer];
    let prov = d.provenance();
    let main = prov.raw_norm / prov.mean_resid_norm;
    let rep = causal_checks(
        &m.model,
        &p.tokens,
        &hf,
        &hl,
        &d.to_f32(),
        chosen.layer,
        prov.mean_resid_norm,
        &[main, 0.25, 1.0],
        8,
    )
    .unwrap();
    let (hb, ha, lb) = (rep.harmful_base, rep.harmful_ablated, rep.harmless_base);
    eprintln!(
        "test prompts, layer {}: harmful {hb:?} → {ha:?} ablated ({} lowered); harmless {lb:?}; \
         additions {:?}; KL {:?}",
        chosen.layer, rep.frac_harmful_lowered, rep.additions, rep.harmless_kl_ablation
    );
    // (a) ablation at every layer removes most of the harmful prompts' refusal.
    assert!(rep.ablation_lowers_refusal);
    assert!(
        hb.mean - ha.mean > 0.8 * (hb.mean - lb.mean),
        "{hb:?} → {ha:?}"
    );
    assert!(
        rep.frac_harmful_lowered >= 0.9,
        "{}",
        rep.frac_harmful_lowered
    );
    // (b) adding the refusal direction at one layer makes harmless prompts refuse.
    assert!(rep.addition_raises_refusal);
    for a in &rep.additions {
        assert!(a.harmless_added.mean > lb.mean + 2.0, "{a:?}");
        assert!(a.frac_raised >= 0.9, "{a:?}");
    }
    let at_main = rep.additions[0].harmless_added.mean;
    assert!(at_main > lb.mean + 0.8 * (hb.mean - lb.mean), "{at_main}");
    // (c) the ablation hardly touches harmless prompts.
    assert!(
        rep.harmless_kl_ablation.mean <= 0.1,
        "{:?}",
        rep.harmless_kl_ablation
    );
}

/// Effects of a candidate relative to the baseline gap `G = mean refusal(harmful) −
/// mean refusal(harmless)`: `(drop of harmful refusal under ablation) / G` and `(rise of
/// harmless refusal with the addition) / G`.
fn relative_effects(c: &CandidateScore, base: &Baseline) -> (f64, f64) {
    let (hf, hl) = (
        MeanSe::of(&base.harmful).mean,
        MeanSe::of(&base.harmless).mean,
    );
    let gap = hf - hl;
    (
        (hf - c.harmful_ablated.mean) / gap,
        (c.harmless_added.mean - hl) / gap,
    )
}

/// Random directions orthogonal to `r`, ablated and added exactly as the fitted one (same layer,
/// same coefficient): relative to the baseline gap `G`, the fitted direction lowers harmful
/// refusal and raises harmless refusal by more than `0.8·G`, each control by less than `0.1·G`
/// and `0.5·G`, and the causal selection among all of them picks a fitted one. The three sign
/// filters of [`CandidateScore::passes`] alone do not tell them apart: any direction moves the
/// scores a little, with either sign (the addition also reaches the random parts of the
/// refusal tokens' unembedding rows), so some controls pass them; the test counts those and
/// asserts on the effect sizes.
#[test]
fn directions_orthogonal_to_the_planted_one_have_no_causal_effect() {
    let p = planted::write(3);
    let m = planted::load(&p.path);
    let (fit_hf, fit_hl) = planted::prompts(&p, &m, 48, 11);
    let (hf, hl) = planted::prompts(&p, &m, 32, 13);
    let base = Baseline::measure(&m.model, &p.tokens, &hf, &hl, 8).unwrap();
    let dirs = dom_directions(&m.model, &fit_hf, &fit_hl);
    let mut cands = Vec::new();
    let mut sign_passes = 0usize;
    for (layer, fitted) in dirs.iter().enumerate().skip(1) {
        let coeff = fitted.provenance().raw_norm;
        let score = |u: &[f32]| {
            score_candidate(
                &m.model, &p.tokens, &base, &hf, &hl, u, layer, coeff, 0.1, 8,
            )
            .unwrap()
        };
        let planted_score = score(&fitted.to_f32());
        let (drop, rise) = relative_effects(&planted_score, &base);
        eprintln!("layer {layer} planted: drop {drop:.3} G, rise {rise:.3} G");
        assert!(drop > 0.8 && rise > 0.8, "{planted_score:?}");
        cands.push(planted_score);
        for seed in 21..31 {
            let c = score(&orthogonal_to(&p.r, seed));
            let (c_drop, c_rise) = relative_effects(&c, &base);
            eprintln!(
                "layer {layer} control {seed}: drop {c_drop:.4} G, rise {c_rise:.4} G, \
                 sign filters {}",
                if c.passes() { "pass" } else { "fail" }
            );
            assert!(c_drop < 0.1, "{c:?}");
            assert!(c_rise < 0.5, "{c:?}");
            sign_passes += usize::from(c.passes());
            cands.push(c);
        }
    }
    eprintln!("controls passing the filters: {sign_passes} of 30");
    // The filters ask for half the baseline refusal gap (`MIN_GAP_FRACTION`); by sign alone 7
    // of these 30 controls passed.
    assert_eq!(
        sign_passes, 0,
        "a random direction passed the causal filters"
    );
    // The selection among planted and control candidates picks a planted one.
    let (chosen, passes) = select_causal(&cands).unwrap();
    assert!(passes);
    assert_eq!(chosen, &cands[(chosen.layer - 1) * 11], "{chosen:?}");
}

/// `lvh directions` end to end on the planted model (train and test files given): the causal
/// selection passes, the checks on test prompts pass for both the probe-best and the
/// causal-best layer, and the saved causal-best direction is `−r`.
#[test]
fn lvh_directions_passes_the_causal_checks_on_the_planted_model() {
    let p = planted::write(3);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, n: usize, seed: u64| {
        let path = dir.path().join(name);
        let mut s = String::new();
        for (i, (hf, hl)) in planted::texts(n, seed).iter().enumerate() {
            for (text, label) in [(hf, "harmful"), (hl, "harmless")] {
                let row =
                    serde_json::json!({"text": text, "label": label, "pair": format!("p{i}")});
                s.push_str(&format!("{row}\n"));
            }
        }
        std::fs::write(&path, s).unwrap();
        path
    };
    let (train, test) = (write("train.jsonl", 48, 11), write("test.jsonl", 32, 13));
    let out = dir.path().join("run");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(["directions", "--model"])
        .arg(&p.path)
        .arg("--train")
        .arg(&train)
        .arg("--test")
        .arg(&test)
        .args(["--bootstrap", "50", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sel = &r["causal_selection"];
    eprintln!(
        "selection: layer {}, passes {}",
        sel["layer"], sel["passes"]
    );
    assert_eq!(sel["passes"], true, "{sel:#}");
    for c in sel["candidates"].as_array().unwrap() {
        eprintln!("candidate {c}");
    }
    for (what, c) in [("probe-best", &r["causal"]), ("causal-best", &sel["check"])] {
        let f = |k: &str| c[k]["mean"].as_f64().unwrap();
        let (hb, ha, lb) = (f("harmful_base"), f("harmful_ablated"), f("harmless_base"));
        let la = c["additions"][0]["harmless_added"]["mean"]
            .as_f64()
            .unwrap();
        let kl = f("harmless_kl_ablation");
        eprintln!(
            "{what} layer {}: harmful {hb:.3} → {ha:.3} ablated ({} lowered), harmless \
             {lb:.3} → {la:.3} added, KL {kl:.5}",
            c["layer"], c["frac_harmful_lowered"]
        );
        assert_eq!(c["ablation_lowers_refusal"], true);
        assert_eq!(c["addition_raises_refusal"], true);
        assert!(hb - lb > 5.0 && hb - ha > 0.8 * (hb - lb) && la - lb > 0.8 * (hb - lb));
        assert!(c["frac_harmful_lowered"].as_f64().unwrap() >= 0.9);
        // The KL bound is what the selection enforces; the probe-best layer need not meet it.
        if what == "causal-best" {
            assert!(kl <= 0.1, "{kl}");
        }
    }
    // causal_best.npy: the unit direction (harmful → harmless), f32 little-endian at the end.
    let npy = std::fs::read(out.join("causal_best.npy")).unwrap();
    let d = p.r.len();
    let v: Vec<f32> = npy[npy.len() - 4 * d..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let cos = -planted::dot(&v, &p.r) / planted::dot(&v, &v).sqrt();
    eprintln!("causal-best direction: cos(d̂, −r) = {cos:.4}");
    assert!(cos > 0.9, "{cos}");
}
