//! `lvh steer`: generate with a direction added to `resid_post(ℓ)` (scale in units of the
//! layer's mean residual norm) or ablated at every layer, side by side with the unsteered
//! output. Greedy by default; both generations use the same seed.
//!
//! Directions are read from an `lvh directions` run folder (or its `directions.json`), a
//! control-vector GGUF (`direction.ℓ`), a 1-D `.npy`, or a safetensors file (tensor
//! `direction.ℓ`, `{method}/blocks.ℓ.hook_resid_post`, or its only tensor). Directions are
//! normalised; a positive scale moves toward the direction's positive side (for lvh
//! directions: harmless, i.e. less refusal).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use lm_runtime::generate::{generate, Sampling, StopRule};
use lm_runtime::hooks::{Capture, HookPoint, Intervention, Layer, Positions};
use lm_runtime::model::Batch;
use rand::SeedableRng;
use value_directions::{Direction, Method};

use crate::cmd::run::{encode_prompt, Weights};
use crate::geometry::export::{read_npy, read_safetensors_vectors, ControlVector};
use crate::geometry::load_model;
use crate::geometry::refusal::ablate_everywhere;

/// Arguments of `lvh steer`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["scale", "ablate"])))]
pub struct Args {
    /// GGUF model file or known model name (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight storage.
    #[arg(long, value_enum, default_value_t = Weights::F32)]
    pub weights: Weights,
    /// Direction: a `lvh directions` run folder or its directions.json, a control-vector
    /// .gguf, a 1-D .npy, or a .safetensors file.
    #[arg(long)]
    pub direction: PathBuf,
    /// Block ℓ whose resid_post is steered (and whose direction is read).
    #[arg(long)]
    pub layer: usize,
    /// Method to pick from a directions run.
    #[arg(long, default_value = "diff-of-means")]
    pub method: Method,
    /// Add `scale · n̄_ℓ · d̂` at resid_post(ℓ), n̄_ℓ the layer's mean residual norm.
    #[arg(long, allow_hyphen_values = true)]
    pub scale: Option<f64>,
    /// Project the direction out of the residual stream at every layer instead.
    #[arg(long)]
    pub ablate: bool,
    /// The user message (rendered with the chat template).
    #[arg(long)]
    pub prompt: String,
    /// Send the prompt as raw text, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling seed (ChaCha8).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A unit direction with the mean residual norm of its layer (0 when unknown).
#[derive(Debug, Clone)]
pub struct LoadedDirection {
    /// Unit vector.
    pub unit: Vec<f32>,
    /// `n̄_ℓ`, 0 if the file does not say.
    pub mean_resid_norm: f64,
    /// What was read.
    pub source: String,
}

fn unit_of(v: &[f32], source: String) -> Result<LoadedDirection> {
    let d = Direction::from_vector(v.iter().map(|&x| f64::from(x)).collect())
        .with_context(|| source.clone())?;
    Ok(LoadedDirection {
        unit: d.to_f32(),
        mean_resid_norm: 0.0,
        source,
    })
}

/// Reads the direction of `layer` from `path` (see the module docs).
///
/// # Errors
/// Unreadable files, or no direction for that layer / method, naming the file.
pub fn load_direction(path: &Path, layer: usize, method: Method) -> Result<LoadedDirection> {
    let path = if path.is_dir() {
        path.join("directions.json")
    } else {
        path.to_path_buf()
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let shown = path.display().to_string();
    match ext.as_str() {
        "json" => {
            let dirs: Vec<Direction> = crate::run_dir::read_json(&path)?;
            let d = dirs
                .iter()
                .find(|d| {
                    d.provenance().site.layer == Some(layer)
                        && d.provenance().method == Some(method)
                })
                .with_context(|| format!("{shown}: no {method} direction for layer {layer}"))?;
            Ok(LoadedDirection {
                unit: d.to_f32(),
                mean_resid_norm: d.provenance().mean_resid_norm,
                source: format!("{shown} ({method}, layer {layer})"),
            })
        }
        "gguf" => {
            let cv = ControlVector::read(&path)?;
            let v = cv.layers.get(&layer).with_context(|| {
                format!(
                    "{shown}: no direction.{layer} (has {:?})",
                    cv.layers.keys().collect::<Vec<_>>()
                )
            })?;
            unit_of(v, format!("{shown} (direction.{layer})"))
        }
        "npy" => {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {shown}"))?;
            let (shape, v) = read_npy(&bytes, &path)?;
            if shape.len() != 1 {
                bail!("{shown}: expected a 1-D array, got shape {shape:?}");
            }
            unit_of(&v, shown)
        }
        "safetensors" => {
            let all = read_safetensors_vectors(&path)?;
            let hook = HookPoint::ResidPost(Layer(layer)).to_string();
            let keys = [
                format!("direction.{layer}"),
                format!("{method}/{hook}"),
                hook,
            ];
            let v = keys
                .iter()
                .find_map(|k| all.get(k))
                .or_else(|| (all.len() == 1).then(|| all.values().next()).flatten())
                .with_context(|| format!("{shown}: none of the tensors {keys:?}"))?;
            unit_of(v, shown)
        }
        _ => bail!("{shown}: unknown direction format (expected a run folder, .json, .gguf, .npy or .safetensors)"),
    }
}

/// Runs `lvh steer`.
///
/// # Errors
/// Bad arguments, unreadable model or direction, generation failures.
pub fn run(args: Args) -> Result<ExitCode> {
    let m = load_model(args.model.clone(), args.weights)?;
    let cfg = m.model.config().clone();
    if args.layer >= cfg.n_layers {
        bail!(
            "--layer {}: the model has layers 0..{}",
            args.layer,
            cfg.n_layers
        );
    }
    let dir = load_direction(&args.direction, args.layer, args.method)?;
    if dir.unit.len() != cfg.d_model {
        bail!(
            "{}: length {} but the model's d_model is {}",
            dir.source,
            dir.unit.len(),
            cfg.d_model
        );
    }
    let prompt = encode_prompt(&m, &args.prompt, !args.raw)?;
    let at = HookPoint::ResidPost(Layer(args.layer));
    let mut norm = dir.mean_resid_norm;
    let mut norm_rule = "from the direction's provenance";
    if norm <= 0.0 {
        // Unknown: the mean residual norm of this prompt's tokens at the layer.
        let mut cap = Capture::new([at], Positions::All);
        let mut cache = m.model.new_cache();
        let batch = Batch::single(prompt.clone()).logits_at(Positions::Indices(Vec::new()));
        m.model.forward(&batch, &mut cap, &[], &mut cache)?;
        let rows: Vec<Vec<f32>> = cap.get(at, 0)?.context("capture")?.to_vec2()?;
        norm = rows
            .iter()
            .map(|r| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt())
            .sum::<f64>()
            / rows.len() as f64;
        norm_rule = "measured on this prompt";
    }
    let t = Tensor::from_slice(&dir.unit, dir.unit.len(), m.model.device())?;
    let (ivs, how) = match (args.scale, args.ablate) {
        (Some(s), false) => (
            vec![Intervention::add(at, t, (s * norm) as f32)],
            format!("add {s} x n̄ (n̄ = {norm:.3}, {norm_rule}) at {at}"),
        ),
        (None, true) => (
            ablate_everywhere(cfg.n_layers, &t)?,
            "ablated at every layer".to_string(),
        ),
        _ => bail!("give exactly one of --scale and --ablate"),
    };
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: None,
        top_p: None,
    };
    let gen = |ivs: &[Intervention]| -> Result<String> {
        let stop = StopRule {
            max_tokens: args.max_tokens,
            eos: m.tokenizer.end_of_generation_ids().to_vec(),
            ..StopRule::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
        let mut cache = m.model.new_cache();
        let g = generate(
            &m.model,
            &mut cache,
            &prompt,
            &sampling,
            &stop,
            &mut Capture::none(),
            ivs,
            &mut rng,
        )?;
        let mut toks = g.tokens;
        if toks
            .last()
            .is_some_and(|t| m.tokenizer.end_of_generation_ids().contains(t))
        {
            toks.pop();
        }
        Ok(m.tokenizer.decode(&toks))
    };
    let plain = gen(&[])?;
    let steered = gen(&ivs)?;
    if args.json {
        let obj = serde_json::json!({
            "model": m.path, "direction": dir.source, "layer": args.layer,
            "intervention": how, "scale": args.scale, "ablate": args.ablate,
            "mean_resid_norm": norm, "seed": args.seed, "prompt": args.prompt,
            "unsteered": plain, "steered": steered,
        });
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        println!("direction: {}\nintervention: {how}\n", dir.source);
        println!("--- unsteered ---\n{plain}\n");
        println!("--- steered ---\n{steered}");
    }
    Ok(ExitCode::SUCCESS)
}
