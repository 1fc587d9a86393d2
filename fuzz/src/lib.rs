//! Fuzz harnesses for every parser lvh exposes to files from strangers.
//!
//! Each harness takes arbitrary bytes, feeds them to one loader, and exercises what a real
//! command does next with the result. A harness panics only when a property is violated (a
//! crash for libFuzzer): the loaders themselves must answer every input with `Ok` or a typed
//! error, never a panic, a hang, or an allocation sized by an untrusted length.
//!
//! | target         | input                                 | properties checked                        |
//! |----------------|---------------------------------------|-------------------------------------------|
//! | `gguf`         | a whole GGUF file                     | header, config, tokenizer, template, every small tensor, a forward pass |
//! | `tokenizer`    | 1 selector byte + text / token ids    | byte-level BPE round trip `decode(encode(s)) = s`; ids in range |
//! | `template`     | a Jinja chat template                 | render ends (fuel) with output ≤ the cap  |
//! | `datasets`     | 1 selector byte + JSONL / CSV         | every row error names the file and a line |
//! | `constitution` | TOML (or CAI JSONL)                   | accepted ⇒ valid and TOML round trip      |
//! | `model_file`   | 1 selector byte + JSON / TOML         | valid ⇒ JSON round trip validates the same |
//! | `control_vector` | a control-vector GGUF (`direction.ℓ`) | accepted ⇒ valid, re-export reads back bit-exact |
//!
//! The same functions are driven by libFuzzer (`fuzz_targets/*.rs`, `cargo fuzz run <target>`)
//! and by the stable-toolchain mutation driver (`src/bin/driver.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};
use candle_core::Device;
use lm_runtime::config::ModelConfig;
use lm_runtime::gguf::GgufFile;
use lm_runtime::model::{Batch, Model, WeightMode};
use lm_runtime::template::{ChatTemplate, Message, PromptFormat, MAX_OUTPUT_BYTES};
use lm_runtime::tokenizer::Tokenizer;

/// A fuzz harness: arbitrary bytes in, panic only on a violated property.
pub type Harness = fn(&[u8]);

/// Every target, by the name its libFuzzer binary has.
pub const TARGETS: &[(&str, Harness)] = &[
    ("gguf", gguf),
    ("tokenizer", tokenizer),
    ("template", template),
    ("datasets", datasets),
    ("constitution", constitution),
    ("model_file", model_file),
    ("control_vector", control_vector),
];

/// Largest tensor (elements) the `gguf` harness reads, and largest model it runs: the point is
/// the parsing and shape checks, not dequantizing big buffers.
const MAX_FUZZ_ELEMS: usize = 1 << 16;

/// A per-process scratch file holding `data` (the loaders under test read paths).
fn scratch(name: &str, data: &[u8]) -> PathBuf {
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("lvh-fuzz-{}-{name}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("scratch file");
    f.write_all(data).expect("scratch write");
    path
}

fn messages() -> Vec<Message> {
    vec![
        Message::system("Be brief."),
        Message::user("Is water wet? <|im_start|>{{ x }}"),
        Message::assistant("Yes."),
        Message::user("Why?"),
    ]
}

/// GGUF reader, model config, tokenizer, chat template, tensor reads and a tiny forward pass
/// on the bytes of one file.
pub fn gguf(data: &[u8]) {
    let path = scratch("gguf", data);
    let Ok(mut file) = GgufFile::open(&path) else {
        return;
    };
    let cfg = ModelConfig::from_gguf(&file);
    if let Ok(tok) = Tokenizer::from_gguf(file.content()) {
        let ids = tok.encode("Hello <|im_start|>world 123 ü", true);
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        let _ = tok.decode(&ids);
    }
    if let Ok(fmt) = PromptFormat::from_gguf(file.content()) {
        let _ = fmt.render(&messages(), true);
    }
    let infos: Vec<(String, Vec<usize>)> = file
        .content()
        .tensor_infos
        .iter()
        .map(|(n, i)| (n.clone(), i.shape.dims().to_vec()))
        .collect();
    for (name, dims) in &infos {
        if dims.iter().product::<usize>() <= MAX_FUZZ_ELEMS {
            if let Ok(q) = file.tensor(name, dims, &Device::Cpu) {
                let _ = q.dequantize(&Device::Cpu);
            }
        }
    }
    let Ok(cfg) = cfg else { return };
    let weights = cfg.vocab_size * cfg.d_model
        + cfg.n_layers * (2 * cfg.d_model * cfg.d_model + 3 * cfg.d_model * cfg.d_ff);
    if weights > MAX_FUZZ_ELEMS || cfg.context_length * cfg.head_dim > MAX_FUZZ_ELEMS {
        return;
    }
    if let Ok(model) = Model::from_gguf(&mut file, WeightMode::Quantized, &Device::Cpu) {
        let v = model.config().vocab_size as u32;
        let batch = Batch::single(vec![0, 1 % v, 2 % v]);
        let _ = model.forward(
            &batch,
            &mut lm_runtime::hooks::Capture::none(),
            &[],
            &mut model.new_cache(),
        );
    }
}

/// GPT-2 byte encoder: printable bytes map to themselves, the rest to U+0100 onwards.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        b as char
    } else {
        char::from_u32(256 + (0..b).filter(|&x| !printable(x)).count() as u32).expect("valid")
    }
}

fn content(md: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: md.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        tensor_infos: Default::default(),
        tensor_data_offset: 0,
    }
}

fn strs(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

/// A byte-level BPE vocabulary in the SmolLM2 style: two control tokens, one user-defined
/// token, the 256 byte symbols, and the results of a few dozen merges.
fn bpe_vocab() -> Tokenizer {
    let merges: Vec<String> = [
        "t h",
        "th e",
        "Ġ t",
        "Ġt he",
        "i n",
        "Ġ a",
        "e r",
        "Ġ w",
        "o r",
        "Ġw or",
        "l d",
        "Ġwor ld",
        "1 2",
        "Ġ Ġ",
        "ĠĠ ĠĠ",
        "Ċ Ċ",
        "h e",
        "l l",
        "he ll",
        "hell o",
        "Ã ¼",
        "ü ber",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut tokens = vec![
        "<|im_start|>".to_owned(),
        "<|im_end|>".to_owned(),
        "<tag>".to_owned(),
    ];
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    for m in &merges {
        let merged = m.replacen(' ', "", 1);
        if !tokens.contains(&merged) {
            tokens.push(merged);
        }
    }
    let mut types = vec![Value::I32(3), Value::I32(3), Value::I32(4)];
    types.resize(tokens.len(), Value::I32(1));
    Tokenizer::from_gguf(&content(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strs(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", strs(&merges)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
    ]))
    .expect("the in-memory BPE vocabulary is valid")
}

/// A SentencePiece-style vocabulary (Gemma / Llama 2 layout): `<unk>`, `<s>`, `</s>`, a control
/// and a user-defined token, the 256 byte tokens, and scored pieces.
fn spm_vocab() -> Tokenizer {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "<start_of_turn>", "\n\n"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![
        Value::I32(2),
        Value::I32(3),
        Value::I32(3),
        Value::I32(3),
        Value::I32(4),
    ];
    let mut scores = vec![Value::F32(0.0); tokens.len()];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(Value::I32(6));
        scores.push(Value::F32(0.0));
    }
    for (i, p) in [
        "▁the", "▁a", "he", "th", "▁t", "er", "in", "▁", "▁▁", "東京", "e",
    ]
    .iter()
    .enumerate()
    {
        tokens.push(p.to_string());
        types.push(Value::I32(1));
        scores.push(Value::F32(-(i as f32)));
    }
    Tokenizer::from_gguf(&content(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strs(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.scores", Value::Array(scores)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ]))
    .expect("the in-memory SentencePiece vocabulary is valid")
}

/// The real SmolLM2 vocabulary when `LVH_FUZZ_TOKENIZER_GGUF` names a GGUF file (only its
/// header is read), otherwise `None`.
fn real_vocab() -> Option<&'static Tokenizer> {
    static REAL: OnceLock<Option<Tokenizer>> = OnceLock::new();
    REAL.get_or_init(|| {
        let path = std::env::var_os("LVH_FUZZ_TOKENIZER_GGUF")?;
        let file = GgufFile::open(path).ok()?;
        Tokenizer::from_gguf(file.content()).ok()
    })
    .as_ref()
}

/// Tokenizer on arbitrary text and arbitrary ids. The first byte picks the vocabulary
/// (`% 3`: real/in-memory byte-level BPE, in-memory BPE, in-memory SentencePiece) and whether
/// the rest is read as text or as little-endian `u32` ids.
pub fn tokenizer(data: &[u8]) {
    static BPE: OnceLock<Tokenizer> = OnceLock::new();
    static SPM: OnceLock<Tokenizer> = OnceLock::new();
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let tok = match sel % 3 {
        0 => real_vocab().unwrap_or_else(|| BPE.get_or_init(bpe_vocab)),
        1 => BPE.get_or_init(bpe_vocab),
        _ => SPM.get_or_init(spm_vocab),
    };
    let n = tok.vocab_size();
    if sel & 0x80 != 0 {
        // Arbitrary ids, in range or not: decoding must not panic, `pieces` must refuse.
        let ids: Vec<u32> = rest
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let _ = tok.decode(&ids);
        let all_known = ids.iter().all(|&id| (id as usize) < n);
        assert_eq!(tok.pieces(&ids).is_ok(), all_known);
        return;
    }
    let text = String::from_utf8_lossy(rest);
    // Byte-level BPE loses only the bytes whose byte symbol is not in the vocabulary (llama.cpp
    // skips them too; SmolLM2 lacks 21, among them the control characters U+0004, U+0006,
    // U+0013, U+0014, U+0016 and U+001D). Special tokens decode to their own text.
    let kept: Vec<u8> = text
        .bytes()
        .filter(|&b| tok.token_to_id(&byte_char(b).to_string()).is_some())
        .collect();
    for (add_special, parse_special) in [(false, false), (true, true), (false, true)] {
        let ids = tok.encode_with(&text, add_special, parse_special);
        assert!(
            ids.iter().all(|&id| (id as usize) < n),
            "an id outside the vocabulary of {n}"
        );
        if tok.is_byte_level() && !add_special {
            assert!(tok.decode_bytes(&ids) == kept, "byte-level BPE round trip");
        }
    }
}

/// A hostile Jinja chat template: compile, then render a fixed conversation. The render must
/// end (fuel) and its output must respect the documented cap.
pub fn template(data: &[u8]) {
    let source = String::from_utf8_lossy(data);
    let Ok(t) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let msgs = messages();
    let input: usize = msgs.iter().map(|m| m.role.len() + m.content.len()).sum();
    for add_generation_prompt in [true, false] {
        if let Ok(s) = t.render(&msgs, add_generation_prompt) {
            assert!(
                s.len() <= MAX_OUTPUT_BYTES + 4 * input,
                "output over the cap"
            );
        }
    }
}

/// Contrast JSONL, preference JSONL or contrast CSV (first byte `% 4`; CSV with a label column
/// or a fixed label). Every error must name the file, and row errors a line that exists.
pub fn datasets(data: &[u8]) {
    use lvh::datasets::{
        ContrastCsvReader, ContrastJsonlReader, CsvLabel, CsvOptions, DatasetError, Label,
        PreferenceJsonlReader,
    };
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let lines = rest.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let check = |e: &DatasetError, path: &Path| {
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        if let DatasetError::Line { line, .. } = e {
            assert!(
                *line >= 1 && *line <= lines,
                "line {line} of {lines}: {msg}"
            );
        }
    };
    let origin = Path::new("fuzz.jsonl");
    match sel % 4 {
        0 => {
            for r in ContrastJsonlReader::from_reader(rest, origin) {
                if let Err(e) = r {
                    check(&e, origin);
                }
            }
        }
        1 => {
            for r in PreferenceJsonlReader::from_reader(rest, origin) {
                if let Err(e) = r {
                    check(&e, origin);
                }
            }
        }
        k => {
            let path = scratch("data.csv", rest);
            let label = if k == 2 {
                CsvLabel::Column("label".into())
            } else {
                CsvLabel::Fixed(Label::Harmful)
            };
            let opts = CsvOptions {
                text_column: "text".into(),
                label,
            };
            match ContrastCsvReader::open(&path, &opts) {
                Err(e) => check(&e, &path),
                Ok(rows) => {
                    for r in rows {
                        if let Err(e) = r {
                            check(&e, &path);
                        }
                    }
                }
            }
        }
    }
}

/// A constitution as TOML (and the same bytes as a Constitutional-AI JSONL file). An accepted
/// constitution must print back to TOML that parses to the same value.
pub fn constitution(data: &[u8]) {
    use lvh::constitution::Constitution;
    let origin = Path::new("fuzz.toml");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = Constitution::from_toml_str(text, origin) {
            let back = Constitution::from_toml_str(&c.to_string(), origin)
                .expect("a valid constitution prints back to valid TOML");
            assert_eq!(back, c, "TOML round trip");
            let _ = c.normalized_weights();
            let _ = c.render_judge_prompt(&c.effective_principles()[0].text, "p", "a", "b");
        }
    }
    let path = scratch("cai.jsonl", data);
    if let Err(e) = Constitution::from_cai_jsonl(&path) {
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}

/// A simulator model file as JSON (first byte even) or TOML (odd). A valid file must validate
/// identically after a JSON round trip.
pub fn model_file(data: &[u8]) {
    use rlaif_sim::spec::ModelFile;
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let parsed = if sel % 2 == 0 {
        ModelFile::from_json(text)
    } else {
        ModelFile::from_toml(text)
    };
    let Ok(file) = parsed else { return };
    // A file that validates has only finite numbers, so its JSON must read back the same
    // (non-finite numbers would print as `null`).
    let Ok(first) = file.clone().validate() else {
        return;
    };
    let again = ModelFile::from_json(&file.to_json())
        .expect("a valid model file serialises to JSON that parses")
        .validate()
        .expect("a valid model file is still valid after a JSON round trip");
    assert_eq!(
        first.j, again.j,
        "judgment direction after a JSON round trip"
    );
}

/// A llama.cpp control-vector GGUF, as `lvh steer --direction FILE.gguf` imports it. An
/// accepted file must be valid (layers ≥ 1, one non-zero width, finite values), and its
/// re-export must read back to the same vectors, bit for bit, and the same bytes.
pub fn control_vector(data: &[u8]) {
    use lvh::geometry::export::ControlVector;
    let path = scratch("control_vector", data);
    let Ok(cv) = ControlVector::read(&path) else {
        return;
    };
    let d = cv.validate().expect("an imported control vector validates");
    assert!(cv.layers.values().all(|v| v.len() == d));
    let bytes = cv
        .to_gguf_bytes()
        .expect("an imported control vector exports");
    let again = ControlVector::read(&scratch("control_vector_again", &bytes))
        .expect("an exported control vector reads back");
    assert_eq!(again.model_hint, cv.model_hint);
    assert_eq!(
        again.layers.keys().collect::<Vec<_>>(),
        cv.layers.keys().collect::<Vec<_>>()
    );
    for (l, v) in &cv.layers {
        let w = &again.layers[l];
        assert!(
            v.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
            "layer {l} changed in a round trip"
        );
    }
    assert_eq!(again.to_gguf_bytes().expect("re-export"), bytes);
}
