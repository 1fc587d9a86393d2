//! `lvh run`: one prompt through a model, with optional logits, activation capture and
//! generation.
//!
//! Outputs: `--logits OUT.npy` (f32 `[prompt positions, vocab]`), `--capture HOOKS --out
//! ACTS.safetensors` (one f32 `[positions, d_model]` tensor per hook, named by its hook name,
//! for the prompt tokens), and with `--generate N` the continuation (printed, or in `--json`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::ValueEnum;
use lm_runtime::generate::{generate_from, Sampling, StopReason, StopRule};
use lm_runtime::gguf::GgufFile;
use lm_runtime::hooks::{parse_hook_list, Capture, Positions};
use lm_runtime::model::{Batch, Model, WeightMode};
use lm_runtime::template::{Message, PromptFormat};
use lm_runtime::tokenizer::Tokenizer;
use rand::SeedableRng;

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// As stored (quantized matmuls).
    Quantized,
    /// Dequantized once to f32 (faster prefill, 4 bytes per weight).
    F32,
}

impl From<Weights> for WeightMode {
    fn from(w: Weights) -> Self {
        match w {
            Weights::Quantized => WeightMode::Quantized,
            Weights::F32 => WeightMode::F32,
        }
    }
}

/// Which prompt positions `--capture` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CapturePositions {
    /// Every prompt token.
    All,
    /// The last prompt token.
    Last,
}

/// The model and the prompt, shared by `run` and `score`.
#[derive(Debug, clap::Args)]
pub struct PromptArgs {
    /// GGUF model file (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prompt text (control tokens such as `<|im_start|>` become their ids).
    #[arg(long, group = "input")]
    pub prompt: Option<String>,
    /// Read the prompt text from this file.
    #[arg(long, group = "input")]
    pub prompt_file: Option<PathBuf>,
    /// Prompt as comma-separated token ids (bypasses the tokenizer).
    #[arg(long, group = "input", value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    /// Render the prompt as one user turn with the model's chat template and generation prompt.
    #[arg(long)]
    pub chat: bool,
    /// Weight storage.
    #[arg(long, value_enum, default_value_t = Weights::Quantized)]
    pub weights: Weights,
}

/// A loaded model with its tokenizer and prompt format (chat template or the plain format).
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub format: PromptFormat,
}

impl PromptArgs {
    /// Resolves and loads the model and its tokenizer.
    pub fn load(&self) -> Result<Loaded> {
        let path = lm_runtime::fetch::resolve_model(self.model.as_deref())
            .context("resolving the model file")?;
        let mut file =
            GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let tokenizer = Tokenizer::from_gguf(file.content())
            .with_context(|| format!("tokenizer of {}", path.display()))?;
        let format = PromptFormat::from_gguf(file.content())
            .with_context(|| format!("chat template of {}", path.display()))?;
        let model = Model::from_gguf(&mut file, self.weights.into(), &candle_core::Device::Cpu)
            .with_context(|| format!("loading {}", path.display()))?;
        Ok(Loaded {
            path,
            model,
            tokenizer,
            format,
        })
    }

    /// The prompt as token ids.
    pub(crate) fn tokens(&self, m: &Loaded) -> Result<Vec<u32>> {
        if let Some(t) = &self.tokens {
            if self.chat {
                bail!("--chat needs a text prompt (--prompt or --prompt-file), not --tokens");
            }
            return Ok(t.clone());
        }
        let text = match (&self.prompt, &self.prompt_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| format!("reading prompt file {}", f.display()))?,
            (None, None) => bail!("give a prompt: --prompt, --prompt-file or --tokens"),
        };
        encode_prompt(m, &text, self.chat)
    }
}

/// Tokenizes `text`, rendered as a user turn with the generation prompt when `chat`. BOS is
/// added when the model asks for it, unless the rendered text already starts with it.
pub(crate) fn encode_prompt(m: &Loaded, text: &str, chat: bool) -> Result<Vec<u32>> {
    let text = if chat {
        m.format
            .render(&[Message::user(text)], true)
            .context("rendering the chat template")?
    } else {
        text.to_owned()
    };
    let mut ids = m.tokenizer.encode(&text, false);
    if let Some(bos) = m.tokenizer.bos_id().filter(|_| m.tokenizer.adds_bos()) {
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    if ids.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    Ok(ids)
}

/// Arguments of `lvh run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: PromptArgs,
    /// Write f32 logits `[prompt positions, vocab]` to this `.npy` file.
    #[arg(long)]
    pub logits: Option<PathBuf>,
    /// Hooks to record, comma-separated, `*` for every layer
    /// (e.g. `blocks.*.hook_resid_post,ln_final.hook_normalized`).
    #[arg(long, requires = "out")]
    pub capture: Option<String>,
    /// Safetensors file for the captured activations.
    #[arg(long, requires = "capture")]
    pub out: Option<PathBuf>,
    /// Prompt positions to record.
    #[arg(long, value_enum, default_value_t = CapturePositions::All)]
    pub positions: CapturePositions,
    /// Generate up to this many tokens after the prompt.
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// Seed of the sampling RNG (ChaCha8).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens when sampling.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Stop generating at this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print a JSON object (token ids, generated text, output paths).
    #[arg(long)]
    pub json: bool,
}

/// Runs `lvh run`.
///
/// # Errors
/// Bad arguments, unreadable model or prompt, unwritable outputs.
pub fn run(args: Args) -> Result<ExitCode> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be >= 0, got {}", args.temperature);
    }
    if let Some(p) = args.top_p {
        if !(p > 0.0 && p <= 1.0) {
            bail!("--top-p must be in (0, 1], got {p}");
        }
    }
    let m = args.input.load()?;
    let cfg = m.model.config().clone();
    let hooks = match &args.capture {
        Some(list) => parse_hook_list(list, cfg.n_layers).context("--capture")?,
        None => Vec::new(),
    };
    let tokens = args.input.tokens(&m)?;
    let positions = match args.positions {
        CapturePositions::All => Positions::All,
        CapturePositions::Last => Positions::Last,
    };
    let mut capture = Capture::new(hooks.iter().copied(), positions);
    let logit_rows = if args.logits.is_some() {
        Positions::All
    } else {
        Positions::Last
    };
    let mut cache = m.model.new_cache();
    let batch = Batch::single(tokens.clone()).logits_at(logit_rows);
    let logits = m
        .model
        .forward(&batch, &mut capture, &[], &mut cache)
        .context("forward pass")?
        .remove(0);

    if let Some(path) = &args.logits {
        let (rows, vocab) = logits.dims2()?;
        let data: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        write_npy_f32(path, &[rows, vocab], &data)?;
    }
    if let Some(out) = &args.out {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for &h in &hooks {
            let t = capture
                .get(h, 0)?
                .with_context(|| format!("hook {h} was not recorded"))?;
            tensors.insert(h.to_string(), t);
        }
        candle_core::safetensors::save(&tensors, out)
            .with_context(|| format!("writing {}", out.display()))?;
    }

    let mut generated = Vec::new();
    let mut reason = None;
    if args.generate > 0 {
        let last = logits.get(logits.dim(0)? - 1)?.to_vec1::<f32>()?;
        let sampling = Sampling {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
        };
        let decode = |ids: &[u32]| m.tokenizer.decode(ids);
        let stop = StopRule {
            max_tokens: args.generate,
            eos: m.tokenizer.end_of_generation_ids().to_vec(),
            stop_sequences: Vec::new(),
            stop_strings: args.stop.clone(),
            decode: Some(&decode),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
        let g = generate_from(
            &m.model,
            &mut cache,
            last,
            &sampling,
            &stop,
            &mut Capture::none(),
            &[],
            &mut rng,
        )
        .context("generating")?;
        generated = g.tokens;
        reason = Some(g.reason);
    }
    let text = m.tokenizer.decode(&generated);
    if args.json {
        let obj = serde_json::json!({
            "model": m.path,
            "tokens": tokens,
            "generated_tokens": generated,
            "generated_text": text,
            "stop_reason": reason.as_ref().map(stop_name),
            "seed": args.seed,
            "logits": args.logits,
            "activations": args.out,
            "hooks": hooks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        if args.generate > 0 {
            println!("{text}");
        } else {
            eprintln!("{} prompt tokens", tokens.len());
        }
        if let Some(p) = &args.logits {
            eprintln!("logits: {}", p.display());
        }
        if let Some(p) = &args.out {
            eprintln!("activations ({} hooks): {}", hooks.len(), p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stop_name(r: &StopReason) -> String {
    match r {
        StopReason::Eos(id) => format!("eos:{id}"),
        StopReason::StopSequence(i) => format!("stop_sequence:{i}"),
        StopReason::StopString(i) => format!("stop_string:{i}"),
        StopReason::MaxTokens => "max_tokens".into(),
    }
}

/// Writes a little-endian f32 NumPy `.npy` (format 1.0) of `shape`.
///
/// The header is `\x93NUMPY`, version `1 0`, a u16 header length, then a Python dict literal
/// padded with spaces and ended by `\n` so that the data starts at a multiple of 64 bytes.
pub(crate) fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        bail!("npy: shape {shape:?} does not match {} values", data.len());
    }
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.div_ceil(64) * 64 - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_data_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        write_npy_f32(&p, &[2, 3], &data).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'));
        let back: Vec<f32> = b[10 + hl..]
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(back, data);
        assert!(write_npy_f32(&p, &[4], &data).is_err());
    }
}
