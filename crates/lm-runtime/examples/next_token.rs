//! Prints the next-token log-probabilities after a prompt given as token ids, as JSON lines
//! `{"id": .., "logprob": ..}` for the `k` most likely tokens.
//!
//! `cargo run --release -p lm-runtime --example next_token -- MODEL.gguf quantized|f32|bf16 K 1,2,3`

use lm_runtime::model::{Model, WeightMode};
use lm_runtime::score::{next_token_logprobs, top_k};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, mode, k, ids] = args.as_slice() else {
        return Err("usage: next_token MODEL.gguf quantized|f32|bf16 K ID,ID,...".into());
    };
    let mode = match mode.as_str() {
        "quantized" => WeightMode::Quantized,
        "f32" => WeightMode::F32,
        "bf16" => WeightMode::Bf16,
        other => return Err(format!("unknown weight mode `{other}`").into()),
    };
    let k: usize = k.parse()?;
    let ids = ids
        .split(',')
        .map(|s| s.trim().parse::<u32>())
        .collect::<Result<Vec<_>, _>>()?;
    let model = Model::load(model, mode)?;
    let lp = next_token_logprobs(&model, &ids, &[])?;
    for (id, logprob) in top_k(&lp, k) {
        println!("{{\"id\": {id}, \"logprob\": {logprob}}}");
    }
    Ok(())
}
