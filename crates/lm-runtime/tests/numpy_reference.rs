//! The residual stream and next-token log-probabilities against a second, independent
//! implementation: a plain f64 numpy forward with the weights dequantized by the `gguf` Python
//! package (`scripts/llamacpp_reference.py --numpy-reference`).
//!
//! * SmolLM2 (llama): the fixture holds the last position's `resid_post` at layers 0, 9, 19, 29
//!   and the 50 most likely next tokens for three prompts, 8 to 141 tokens; runs when
//!   `LVH_TEST_MODEL` names SmolLM2-135M-Instruct.Q4_1.gguf.
//! * Gemma 3 270M (gemma3: √d embedding scale, q/k norms, NEOX RoPE, sliding-window layers,
//!   post-norms, tanh-GELU): layers 0, 5, 11, 17 for four prompts of 9 to 701 tokens, the last
//!   longer than the 512-token window; runs when `LVH_TEST_GEMMA` names
//!   gemma-3-270m-q4_k_m.gguf.
//!
//! * [`WeightMode::F32`] computes the same function as the reference, so it must agree to f32
//!   rounding: relative L2 error ‖ours − ref‖ / ‖ref‖ below 1e-4 at every recorded layer
//!   (measured ≤ 1.6e-6) and |Δ log-prob| below 1e-3 (measured ≤ 2.3e-4).
//! * [`WeightMode::Quantized`] rounds activations to 8-bit blocks (Q8_1) before every Q4_1
//!   matmul, as llama.cpp does, so it is a few percent off any f32 path: measured relative L2
//!   0.8–2.7 % at these positions (up to 8 % at the last layer over all positions of the
//!   fixture prompts), top-50 log-prob Pearson 0.995–0.999. Bounds: relative L2 < 5 % and
//!   Pearson > 0.99.
//! * [`WeightMode::Bf16`] (on CPUs with AMX-BF16) rounds weights and activations to bf16 with
//!   f32 sums: measured relative L2 ≤ 0.75 % (SmolLM2) and ≤ 0.55 % (Gemma 3), top-50 Pearson
//!   0.99993 and 0.99973. Bounds: relative L2 < 2 % (and > 1e-5: really rounded), Pearson >
//!   0.9995. Without AMX the mode is the f32 path and must be exact.

use lm_runtime::hooks::{Capture, HookPoint, Layer, Positions};
use lm_runtime::model::{log_softmax, Batch, Model, WeightMode};

#[derive(serde::Deserialize)]
struct Reference {
    model_sha256: String,
    prompts: Vec<Prompt>,
}

#[derive(serde::Deserialize)]
struct Prompt {
    name: String,
    ids: Vec<u32>,
    /// Layer index (as a string) -> `resid_post` at the last position.
    resid_post_last: std::collections::BTreeMap<String, Vec<f64>>,
    top_logprobs: Vec<Entry>,
}

mod common;
use common::{pearson, Entry};

fn rel_l2(ours: &[f32], reference: &[f64]) -> f64 {
    let num: f64 = ours
        .iter()
        .zip(reference)
        .map(|(&a, b)| (f64::from(a) - b).powi(2))
        .sum();
    let den: f64 = reference.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

/// Worst relative L2 over prompts and layers, worst Pearson and worst |Δ log-prob|.
fn compare(model: &Model, reference: &Reference) -> (f64, f64, f64) {
    let (mut worst_rel, mut worst_r, mut worst_abs) = (0.0f64, 1.0f64, 0.0f64);
    for p in &reference.prompts {
        let layers: Vec<usize> = p
            .resid_post_last
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        let hooks: Vec<HookPoint> = layers
            .iter()
            .map(|&l| HookPoint::ResidPost(Layer(l)))
            .collect();
        let mut capture = Capture::new(hooks.clone(), Positions::Last);
        let mut cache = model.new_cache();
        let logits = model
            .forward(&Batch::single(p.ids.clone()), &mut capture, &[], &mut cache)
            .unwrap();
        let lp: Vec<f32> = log_softmax(&logits[0].flatten_all().unwrap())
            .unwrap()
            .to_vec1()
            .unwrap();
        for (l, h) in layers.iter().zip(hooks) {
            let ours: Vec<f32> = capture
                .get(h, 0)
                .unwrap()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let rel = rel_l2(&ours, &p.resid_post_last[&l.to_string()]);
            eprintln!("{:<8} layer {l:>2}: relative L2 {rel:.3e}", p.name);
            worst_rel = worst_rel.max(rel);
        }
        let theirs: Vec<f64> = p.top_logprobs.iter().map(|e| e.logprob).collect();
        let mine: Vec<f64> = p
            .top_logprobs
            .iter()
            .map(|e| f64::from(lp[e.id as usize]))
            .collect();
        let r = pearson(&theirs, &mine);
        let max_abs = theirs
            .iter()
            .zip(&mine)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{:<8} n={:<4} top-{} Pearson {r:.7} max|Δ log-prob| {max_abs:.3e}",
            p.name,
            p.ids.len(),
            theirs.len()
        );
        worst_r = worst_r.min(r);
        worst_abs = worst_abs.max(max_abs);
    }
    (worst_rel, worst_r, worst_abs)
}

fn load_reference(name: &str, sha256: &str, prompts: usize) -> Reference {
    let fixture = format!(
        "{}/tests/fixtures/numpy_reference_{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    assert_eq!(reference.model_sha256, sha256);
    assert_eq!(reference.prompts.len(), prompts);
    reference
}

/// The model file named by the environment variable `var`, or `None` (the test skips).
fn model_path(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!("skipping: {var} is not set");
            None
        }
    }
}

/// Bounds of one model's comparison: the f32 path's |Δ log-prob|, the quantized path's worst
/// relative L2 and its smallest top-50 Pearson.
struct Bounds {
    f32_abs: f64,
    quantized_rel: f64,
    quantized_pearson: f64,
    bf16_rel: f64,
    bf16_pearson: f64,
}

/// The three weight modes against the reference: the f32 path to f32 rounding (relative L2 <
/// 1e-4, Pearson > 0.99999), the quantized and bf16 paths within `bounds` and clearly not exact.
fn check_modes(path: &str, reference: &Reference, bounds: &Bounds) {
    let f32_model = Model::load(path, WeightMode::F32).unwrap();
    let (rel, r, abs) = compare(&f32_model, reference);
    eprintln!("F32: worst relative L2 {rel:.3e}, Pearson {r:.7}, max|Δ| {abs:.3e}");
    assert!(rel < 1e-4, "F32: residual relative L2 {rel}");
    assert!(abs < bounds.f32_abs, "F32: |Δ log-prob| {abs}");
    assert!(r > 0.99999, "F32: Pearson {r}");
    drop(f32_model);

    let q_model = Model::load(path, WeightMode::Quantized).unwrap();
    let (rel, r, abs) = compare(&q_model, reference);
    eprintln!("Quantized: worst relative L2 {rel:.3e}, Pearson {r:.7}, max|Δ| {abs:.3e}");
    assert!(
        rel < bounds.quantized_rel,
        "Quantized: residual relative L2 {rel}"
    );
    // Not a rounding-level agreement: the quantized path must still be clearly off f32.
    assert!(
        rel > 1e-3,
        "Quantized: suspiciously exact ({rel}); is it really quantized?"
    );
    assert!(r > bounds.quantized_pearson, "Quantized: Pearson {r}");
    drop(q_model);

    // bf16 on AMX tiles where the CPU has them (every block matrix of both models tiles);
    // elsewhere the mode falls back to the f32 path and must then be exact.
    let b_model = Model::load(path, WeightMode::Bf16).unwrap();
    let (amx, total) = b_model.amx_matrices();
    let (rel, r, abs) = compare(&b_model, reference);
    eprintln!(
        "Bf16 ({amx}/{total} matrices on AMX): worst relative L2 {rel:.3e}, Pearson {r:.7}, max|Δ| {abs:.3e}"
    );
    if lm_runtime::model::amx_available() {
        assert_eq!(amx, total, "Bf16: every block matrix should run on AMX");
        assert!(rel < bounds.bf16_rel, "Bf16: residual relative L2 {rel}");
        assert!(
            rel > 1e-5,
            "Bf16: suspiciously exact ({rel}); is it really bf16?"
        );
        assert!(r > bounds.bf16_pearson, "Bf16: Pearson {r}");
    } else {
        assert_eq!(amx, 0);
        assert!(
            rel < 1e-4,
            "Bf16 without AMX is the f32 path: relative L2 {rel}"
        );
    }
}

#[test]
fn smollm2_matches_numpy_forward() {
    let Some(path) = model_path("LVH_TEST_MODEL") else {
        return;
    };
    let reference = load_reference(
        "smollm2",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        3,
    );
    let bounds = Bounds {
        f32_abs: 1e-3,
        quantized_rel: 0.05,
        quantized_pearson: 0.99,
        bf16_rel: 0.02,
        bf16_pearson: 0.9995,
    };
    check_modes(&path, &reference, &bounds);
}

/// Gemma 3's f32 path computes the reference's function: measured relative L2 ≤ 2.4e-6 at every
/// recorded layer, the 701-token prompt included (so the sliding window, the local RoPE base
/// and the norms agree), and |Δ log-prob| ≤ 9.2e-4 over the top 50 (logits of magnitude ~30
/// over a 262,144-token vocabulary in f32; bound 3e-3). The quantized path rounds activations
/// to 8 bits before its K-quant products, as llama.cpp does: measured relative L2 4.6 %,
/// top-50 Pearson 0.981 (bounds 10 %, 0.97).
#[test]
fn gemma3_matches_numpy_forward() {
    let Some(path) = model_path("LVH_TEST_GEMMA") else {
        return;
    };
    let reference = load_reference(
        "gemma3",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        4,
    );
    assert!(reference.prompts.iter().any(|p| p.ids.len() > 512));
    let bounds = Bounds {
        f32_abs: 3e-3,
        quantized_rel: 0.1,
        quantized_pearson: 0.97,
        bf16_rel: 0.02,
        bf16_pearson: 0.9995,
    };
    check_modes(&path, &reference, &bounds);
}
