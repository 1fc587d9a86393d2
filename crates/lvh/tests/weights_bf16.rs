//! `lvh run --weights bf16` on the real model: the residual stream it captures against the
//! `--weights f32` run of the same prompt. On CPUs with AMX-BF16 the products round weights and
//! activations to bf16 (f32 sums), so the two differ by about 1 % and never bit for bit; without
//! AMX the mode is the f32 path and must match it exactly. Runs when `LVH_TEST_MODEL` names
//! SmolLM2-135M-Instruct.Q4_1.gguf.

use std::path::Path;
use std::process::Command;

use safetensors::SafeTensors;

/// Runs `lvh run` with `weights`, capturing every `resid_post` into `out`.
fn capture(model: &str, weights: &str, prompt: &str, out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args([
            "run",
            "--model",
            model,
            "--weights",
            weights,
            "--prompt",
            prompt,
        ])
        .args(["--capture", "blocks.*.hook_resid_post", "--out"])
        .arg(out)
        .output()
        .expect("lvh runs");
    assert!(
        o.status.success(),
        "lvh run --weights {weights}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn values(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn bf16_residual_stream_is_within_two_percent_of_f32() {
    let model = match std::env::var("LVH_TEST_MODEL") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprintln!("skipping: LVH_TEST_MODEL is not set");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // Long enough (> 8 tokens) that the products go through the tiles, not the decode kernel.
    let prompt = "The committee reviewed the proposal in detail and asked for three changes: a \
                  clearer budget, a realistic timeline, and an honest account of the risks.";
    let (f, b) = (
        dir.path().join("f32.safetensors"),
        dir.path().join("bf16.safetensors"),
    );
    capture(&model, "f32", prompt, &f);
    capture(&model, "bf16", prompt, &b);
    let (fb, bb) = (std::fs::read(&f).unwrap(), std::fs::read(&b).unwrap());
    let (fs, bs) = (
        SafeTensors::deserialize(&fb).unwrap(),
        SafeTensors::deserialize(&bb).unwrap(),
    );
    let mut names: Vec<String> = fs.names().into_iter().cloned().collect();
    names.sort();
    assert_eq!(names.len(), 30, "one tensor per layer: {names:?}");
    let mut worst = 0f64;
    for name in &names {
        let (x, y) = (values(&fs, name), values(&bs, name));
        assert_eq!(x.len(), y.len(), "{name}: shapes differ");
        assert!(x.len() >= 20 * 576, "{name}: {} values", x.len());
        let num: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let den: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
        worst = worst.max((num / den).sqrt());
    }
    eprintln!(
        "bf16 against f32, every layer and position: worst relative L2 {worst:.3e} (AMX: {})",
        lm_runtime::model::amx_available()
    );
    if lm_runtime::model::amx_available() {
        assert!(worst < 0.02, "bf16 residual stream {worst} off f32");
        assert!(
            worst > 1e-5,
            "bf16 equal to f32 ({worst}): were the tiles used?"
        );
    } else {
        assert_eq!(worst, 0.0, "without AMX, bf16 is the f32 path");
    }
}
