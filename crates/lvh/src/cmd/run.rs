//! `lvh run`: one prompt through a model, with optional logits, activation capture and
//! generation.
//!
//! Outputs: `--logits OUT.npy` (f32 `[prompt positions, vocab]`), `--capture HOOKS --out
//! ACTS.safetensors` (one f32 `[positions, d_model]` tensor per hook, named by its hook name,
//! for the prompt tokens), and with `--generate N` the continuation (printed, or in `--json`).
//!
//! With `--endpoint URL` the continuation comes from an OpenAI-compatible server instead
//! (`/v1/completions`): the prompt is rendered and tokenized with `--model`'s tokenizer and
//! chat template (its weights are not loaded) and sent as token ids. Logits and activations
//! need the weights, so `--endpoint` refuses `--logits` and `--capture`.

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

use crate::remote::Client;

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// As stored (quantized matmuls).
    Quantized,
    /// Dequantized once to f32 (faster prefill, 4 bytes per weight).
    F32,
    /// Dequantized once to bfloat16 and multiplied on Intel AMX tiles with f32 sums (the
    /// fastest prefill, on Xeons from Sapphire Rapids on; activations rounded to bf16 too,
    /// ≈ 1 % relative error in the residual stream). Without AMX, the same as f32.
    Bf16,
}

impl From<Weights> for WeightMode {
    fn from(w: Weights) -> Self {
        match w {
            Weights::Quantized => WeightMode::Quantized,
            Weights::F32 => WeightMode::F32,
            Weights::Bf16 => WeightMode::Bf16,
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

/// A model server in place of the local weights, for the behavioural measurements (judge
/// log-probabilities, continuation scores, generation). Activations always stay local.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// OpenAI-compatible server (`http://host:port`: llama.cpp's `llama-server`, vLLM) that
    /// computes log-probabilities / generates instead of the local weights. Prompts are still
    /// rendered with --model's chat template and tokenized by its tokenizer (the weights are
    /// not loaded) and sent as token ids, so the server must serve that model (checked through
    /// its /tokenize).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model name sent in requests (vLLM serving several models needs it).
    #[arg(long, requires = "endpoint")]
    pub endpoint_model: Option<String>,
    /// Bearer token for the server (default: the LVH_API_KEY environment variable).
    #[arg(long, requires = "endpoint")]
    pub api_key: Option<String>,
    /// Seconds one request to the server may take.
    #[arg(long, default_value_t = 300.0)]
    pub endpoint_timeout: f64,
    /// Retries of a request after a connection failure or HTTP 5xx/429 (backoff doubling
    /// from 250 ms).
    #[arg(long, default_value_t = 2)]
    pub endpoint_retries: u32,
}

impl EndpointArgs {
    /// The client, when `--endpoint` is given.
    ///
    /// # Errors
    /// A malformed endpoint or timeout.
    pub fn client(&self) -> Result<Option<Client>> {
        let Some(url) = &self.endpoint else {
            return Ok(None);
        };
        if !(self.endpoint_timeout > 0.0 && self.endpoint_timeout.is_finite()) {
            bail!(
                "--endpoint-timeout must be a positive number of seconds, got {}",
                self.endpoint_timeout
            );
        }
        let key = self
            .api_key
            .clone()
            .or_else(|| std::env::var("LVH_API_KEY").ok());
        let client = Client::new(
            url,
            self.endpoint_model.clone(),
            std::time::Duration::from_secs_f64(self.endpoint_timeout),
            self.endpoint_retries,
        )
        .context("--endpoint")?
        .with_api_key(key);
        Ok(Some(client))
    }
}

/// A model's tokenizer and prompt format without its weights: what renders and tokenizes
/// prompts for a model that runs on a server.
#[derive(Debug)]
pub struct Prompting {
    /// The GGUF file.
    pub path: PathBuf,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template, or the plain format.
    pub format: PromptFormat,
}

impl Prompting {
    /// Reads the tokenizer and chat template of `model` (default: the default model, fetched
    /// on first use); the tensors are not read.
    ///
    /// # Errors
    /// Fetch, read and parse errors naming the file.
    pub fn load(model: Option<&Path>) -> Result<Self> {
        let path = lm_runtime::fetch::resolve_model(model).context("resolving the model file")?;
        let file = GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let tokenizer = Tokenizer::from_gguf(file.content())
            .with_context(|| format!("tokenizer of {}", path.display()))?;
        let format = PromptFormat::from_gguf(file.content())
            .with_context(|| format!("chat template of {}", path.display()))?;
        Ok(Self {
            path,
            tokenizer,
            format,
        })
    }

    /// Checks that `client`'s server tokenizes a chat-rendered probe followed by `suffix` as
    /// this tokenizer does (token-id prompts mean the same text there); warns when the server
    /// has no `/tokenize` to ask.
    ///
    /// # Errors
    /// A server that tokenizes differently (naming both id lists), transport errors.
    pub fn check_server(&self, client: &Client, suffix: &str) -> Result<()> {
        let body = "Which response is better?\n\n(A) Yes, gladly.\n\n(B) No, thanks.";
        let mut probe = self
            .format
            .render(&[Message::user(body)], true)
            .context("rendering the chat template")?;
        probe.push_str(suffix);
        let check = crate::remote::check_tokenizer(
            client,
            &self.path.display().to_string(),
            &[probe],
            |t| crate::judge::prompt::encode(&self.tokenizer, t),
        )?;
        if let crate::remote::TokenizerCheck::Unavailable(why) = check {
            eprintln!(
                "warning: {} has no /tokenize ({why}); cannot check that it serves the model of {}",
                client.endpoint(),
                self.path.display()
            );
        }
        Ok(())
    }
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
        self.tokens_with(&m.tokenizer, &m.format)
    }

    /// The prompt as token ids, by `tokenizer` and `format`.
    pub(crate) fn tokens_with(
        &self,
        tokenizer: &Tokenizer,
        format: &PromptFormat,
    ) -> Result<Vec<u32>> {
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
        encode_prompt_with(tokenizer, format, &text, self.chat)
    }
}

/// Tokenizes `text`, rendered as a user turn with the generation prompt when `chat`. BOS is
/// added when the model asks for it, unless the rendered text already starts with it.
pub(crate) fn encode_prompt(m: &Loaded, text: &str, chat: bool) -> Result<Vec<u32>> {
    encode_prompt_with(&m.tokenizer, &m.format, text, chat)
}

/// [`encode_prompt`] by a tokenizer and prompt format.
pub(crate) fn encode_prompt_with(
    tokenizer: &Tokenizer,
    format: &PromptFormat,
    text: &str,
    chat: bool,
) -> Result<Vec<u32>> {
    let text = if chat {
        format
            .render(&[Message::user(text)], true)
            .context("rendering the chat template")?
    } else {
        text.to_owned()
    };
    let mut ids = tokenizer.encode(&text, false);
    if let Some(bos) = tokenizer.bos_id().filter(|_| tokenizer.adds_bos()) {
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
    #[command(flatten)]
    pub endpoint: EndpointArgs,
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
    if let Some(client) = args.endpoint.client()? {
        return run_remote(&args, &client);
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

/// `lvh run --endpoint`: generation on the server; the prompt's ids come from the local
/// tokenizer. The server reports text, not token ids, so `generated_tokens` is `null`.
fn run_remote(args: &Args, client: &Client) -> Result<ExitCode> {
    let refuse = |flag: &str, why: &str| {
        anyhow::anyhow!("{flag} cannot be used with --endpoint: {why}; drop --endpoint to run the model locally")
    };
    if args.logits.is_some() {
        return Err(refuse("--logits", "the full logits need the local weights"));
    }
    if args.capture.is_some() || args.out.is_some() {
        return Err(refuse(
            "--capture",
            "activations are measured on the local weights only",
        ));
    }
    if args.top_k.is_some() || args.top_p.is_some() {
        return Err(refuse(
            "--top-k/--top-p",
            "the remote generation samples by temperature and seed only",
        ));
    }
    if args.generate == 0 {
        bail!("with --endpoint, lvh run only generates: give --generate N");
    }
    let p = Prompting::load(args.input.model.as_deref())?;
    p.check_server(client, "")?;
    let tokens = args.input.tokens_with(&p.tokenizer, &p.format)?;
    let g = client
        .generate(
            tokens.clone(),
            args.generate,
            f64::from(args.temperature),
            args.seed,
            &args.stop,
        )
        .context("generating on the server")?;
    let reason = match g.finish_reason.as_deref() {
        Some("length") => "max_tokens".to_owned(),
        Some(r) => format!("server:{r}"),
        None => "server:unknown".to_owned(),
    };
    if args.json {
        let obj = serde_json::json!({
            "model": p.path,
            "endpoint": client.endpoint(),
            "tokens": tokens,
            "generated_tokens": serde_json::Value::Null,
            "generated_text": g.text,
            "stop_reason": reason,
            "seed": args.seed,
            "logits": serde_json::Value::Null,
            "activations": serde_json::Value::Null,
            "hooks": Vec::<String>::new(),
        });
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        println!("{}", g.text);
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
