//! Writes, for every prompt of a reference fixture (`scripts/llamacpp_reference.py` output,
//! prompts with token `ids`), the raw f32 logits at the last position and every block's
//! `resid_post` at every position, for comparison with an independent implementation.
//!
//! `cargo run --release -p lm-runtime --example dump_activations -- MODEL.gguf quantized|f32|bf16 FIXTURE.json OUTDIR`
//!
//! Output per prompt `NAME`: `OUTDIR/NAME.logits.f32` (`[vocab]` little-endian f32) and
//! `OUTDIR/NAME.resid.f32` (`[n_layers, n_tokens, d_model]`), plus `OUTDIR/index.json` with
//! the shapes.

use std::io::Write;

use lm_runtime::hooks::{Capture, HookPoint, Layer, Positions};
use lm_runtime::model::{Batch, Model, WeightMode};

fn write_f32(path: &std::path::Path, v: &[f32]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for x in v {
        f.write_all(&x.to_le_bytes())?;
    }
    f.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, mode, fixture, out] = args.as_slice() else {
        return Err(
            "usage: dump_activations MODEL.gguf quantized|f32|bf16 FIXTURE.json OUTDIR".into(),
        );
    };
    let mode = match mode.as_str() {
        "quantized" => WeightMode::Quantized,
        "f32" => WeightMode::F32,
        "bf16" => WeightMode::Bf16,
        other => return Err(format!("unknown weight mode `{other}`").into()),
    };
    let text = std::fs::read_to_string(fixture).map_err(|e| format!("{fixture}: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{fixture}: {e}"))?;
    let prompts = json["prompts"]
        .as_array()
        .ok_or_else(|| format!("{fixture}: no `prompts` list"))?;
    let model = Model::load(model, mode)?;
    let n_layers = model.config().n_layers;
    let out = std::path::Path::new(out);
    std::fs::create_dir_all(out)?;
    let mut index = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let name = p["name"]
            .as_str()
            .map_or_else(|| format!("prompt{i}"), str::to_owned);
        let ids: Vec<u32> = p["ids"]
            .as_array()
            .ok_or_else(|| format!("{fixture}: prompt {name}: no `ids`"))?
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| format!("{fixture}: prompt {name}: bad id {v}"))
            })
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            continue;
        }
        let hooks: Vec<HookPoint> = (0..n_layers)
            .map(|l| HookPoint::ResidPost(Layer(l)))
            .collect();
        let mut capture = Capture::new(hooks.clone(), Positions::All);
        let mut cache = model.new_cache();
        let logits = model.forward(&Batch::single(ids.clone()), &mut capture, &[], &mut cache)?;
        let logits: Vec<f32> = logits[0].flatten_all()?.to_vec1()?;
        write_f32(&out.join(format!("{name}.logits.f32")), &logits)?;
        let mut resid = Vec::new();
        for h in hooks {
            let t = capture.get(h, 0)?.ok_or("capture missing")?;
            resid.extend(t.flatten_all()?.to_vec1::<f32>()?);
        }
        write_f32(&out.join(format!("{name}.resid.f32")), &resid)?;
        index.push(serde_json::json!({
            "name": name, "n_tokens": ids.len(), "vocab": logits.len(),
            "n_layers": n_layers, "d_model": model.config().d_model,
        }));
    }
    std::fs::write(
        out.join("index.json"),
        serde_json::to_string_pretty(&index)?,
    )?;
    Ok(())
}
