//! Checks on a real GGUF model, run when `LVH_TEST_MODEL` names SmolLM2-135M-Instruct.

use lm_runtime::generate::{generate, Sampling, StopRule};
use lm_runtime::hooks::Capture;
use lm_runtime::model::{Model, WeightMode};
use rand::SeedableRng;

/// `<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n`,
/// as tokenized by llama.cpp's `/tokenize`.
const PROMPT: [u32; 16] = [
    1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
];

fn model_path() -> Option<String> {
    match std::env::var("LVH_TEST_MODEL") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!(
                "skipping: LVH_TEST_MODEL is not set (path to SmolLM2-135M-Instruct.Q4_1.gguf)"
            );
            None
        }
    }
}

#[test]
fn smollm2_answers_paris() {
    let Some(path) = model_path() else { return };
    for mode in [WeightMode::Quantized, WeightMode::F32] {
        let model = Model::load(&path, mode).unwrap();
        assert_eq!(model.config().n_layers, 30);
        let mut cache = model.new_cache();
        let stop = StopRule {
            max_tokens: 12,
            eos: vec![2],
            ..StopRule::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let g = generate(
            &model,
            &mut cache,
            &PROMPT,
            &Sampling::GREEDY,
            &stop,
            &mut Capture::none(),
            &[],
            &mut rng,
        )
        .unwrap();
        eprintln!("{mode:?}: {:?}", g.tokens);
        // " Paris" / "Paris" must appear among the first tokens ("The capital of France is Paris.").
        assert!(
            g.tokens.contains(&7042) || g.tokens.contains(&42716),
            "{:?}",
            g.tokens
        );
    }
}
