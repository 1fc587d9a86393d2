//! Hostile files handed to lvh: datasets, constitutions and simulator model files with invalid
//! UTF-8, duplicate keys, empty content; and model files through `lvh run` (a prompt longer than
//! the context, a truncated GGUF, a mixture-of-experts GGUF); and `lvh steer` with a control vector
//! or `.npy` direction of another width than the model's. Each must give an error naming the
//! file and the line, field, key or tensor; `docs/bad-inputs.md` lists the messages.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::Device;
use lm_runtime::model::random::RandomLlama;
use lvh::constitution::Constitution;
use lvh::datasets::{read_contrast, read_preferences, CsvLabel, CsvOptions, Label};
use rand::SeedableRng;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn datasets_with_invalid_utf8_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.jsonl",
        b"{\"text\": \"fine\", \"label\": 1}\n{\"text\": \"caf\xe9\", \"label\": 1}\n",
    );
    let e = read_contrast(&p, None).unwrap_err().to_string();
    assert_eq!(e, format!("{}:2: not valid UTF-8", p.display()));
    let p = write(
        dir.path(),
        "bad-pairs.jsonl",
        b"{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n\n{\"prompt\": \"\xff\"}\n",
    );
    let e = read_preferences(&p).unwrap_err().to_string();
    assert_eq!(e, format!("{}:3: not valid UTF-8", p.display()));
    let p = write(
        dir.path(),
        "bad.csv",
        b"text,label\n\"ok\",harmless\n\"caf\xe9\",harmful\n",
    );
    let opts = CsvOptions {
        text_column: "text".into(),
        label: CsvLabel::Column("label".into()),
    };
    let e = read_contrast(&p, Some(&opts)).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:3: invalid CSV row", p.display())) && e.contains("UTF-8"),
        "{e}"
    );
}

#[test]
fn empty_dataset_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "empty.jsonl", b"");
    let e = read_contrast(&p, None).unwrap_err().to_string();
    assert_eq!(e, format!("{}: no rows", p.display()));
    let p = write(dir.path(), "empty.csv", b"");
    let opts = CsvOptions {
        text_column: "text".into(),
        label: CsvLabel::Fixed(Label::Harmful),
    };
    let e = read_contrast(&p, Some(&opts)).unwrap_err().to_string();
    assert_eq!(e, format!("{}: no column `text` in header ()", p.display()));
    let p = write(dir.path(), "header-only.csv", b"text\n");
    let e = read_contrast(&p, Some(&opts)).unwrap_err().to_string();
    assert_eq!(e, format!("{}: no rows", p.display()));
}

#[test]
fn duplicate_json_keys_in_a_dataset_row_keep_the_last_value() {
    // As Python's `json` and serde_json do: the last occurrence wins (documented in
    // docs/bad-inputs.md). The row is not refused.
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "dup.jsonl",
        b"{\"text\": \"a\", \"label\": \"harmless\", \"label\": \"harmful\"}\n",
    );
    let rows = read_contrast(&p, None).unwrap();
    assert_eq!(rows[0].label, Label::Harmful);
}

#[test]
fn hostile_constitutions_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "dup.toml",
        b"name = \"a\"\nname = \"b\"\ndescription = \"d\"\n[[principles]]\ntext = \"t\"\n",
    );
    let e = Constitution::from_file(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(&p.display().to_string())
            && e.contains("line 2")
            && e.contains("duplicate key"),
        "{e}"
    );
    let p = write(dir.path(), "utf8.toml", b"name = \"caf\xe9\"\n");
    let e = Constitution::from_file(&p).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}: stream did not contain valid UTF-8", p.display())
    );
    let p = write(dir.path(), "empty.toml", b"");
    let e = Constitution::from_file(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(&p.display().to_string()) && e.contains("missing field `name`"),
        "{e}"
    );
    let p = write(
        dir.path(),
        "nan.toml",
        b"name = \"a\"\ndescription = \"d\"\n[[principles]]\ntext = \"t\"\nweight = nan\n",
    );
    let e = Constitution::from_file(&p).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: field `principles[0].weight`: must be finite and > 0, got NaN",
            p.display()
        )
    );
    let p = write(dir.path(), "cai.jsonl", b"{\"critique\": \"x\"}\n\xff\n");
    let e = Constitution::from_cai_jsonl(&p).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}: stream did not contain valid UTF-8", p.display())
    );
}

#[test]
fn hostile_simulator_model_files_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let demo = rlaif_sim::demo::demo_model_file().to_json();
    // A duplicate key in JSON: serde refuses it.
    let dup = demo.replacen("\"s2\":", "\"s2\": 1.0, \"s2\":", 1);
    let p = write(dir.path(), "dup.json", dup.as_bytes());
    let e = format!("{:#}", lvh::theory_io::load_instance(&p).unwrap_err());
    assert!(
        e.starts_with(&format!("model file {}: duplicate field `s2`", p.display())),
        "{e}"
    );
    let p = write(dir.path(), "dup.toml", b"s2 = 1.0\ns2 = 2.0\n");
    let e = format!("{:#}", lvh::theory_io::load_instance(&p).unwrap_err());
    assert!(
        e.starts_with(&format!("model file {}:", p.display())) && e.contains("duplicate key"),
        "{e}"
    );
    let p = write(dir.path(), "utf8.json", b"{\"W\": [[1.0]], \"s2\xff\": 1}");
    let e = format!("{:#}", lvh::theory_io::load_instance(&p).unwrap_err());
    assert_eq!(
        e,
        format!(
            "reading model file {}: stream did not contain valid UTF-8",
            p.display()
        )
    );
    let p = write(dir.path(), "empty.json", b"");
    let e = format!("{:#}", lvh::theory_io::load_instance(&p).unwrap_err());
    assert_eq!(
        e,
        format!(
            "model file {}: EOF while parsing a value at line 1 column 0",
            p.display()
        )
    );
    // Absurd work: refused at validation rather than allocated.
    let huge = demo.replacen("\"pairs\": 1500", "\"pairs\": 18446744073709551615", 1);
    assert_ne!(huge, demo);
    let p = write(dir.path(), "huge.json", huge.as_bytes());
    let e = format!("{:#}", lvh::theory_io::load_instance(&p).unwrap_err());
    assert!(e.contains("rlaif.pairs: pairs × d × rounds exceeds"), "{e}");
}

/// GPT-2 byte encoder (printable bytes map to themselves).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        b as char
    } else {
        char::from_u32(256 + (0..b).filter(|&x| !printable(x)).count() as u32).unwrap()
    }
}

/// A tiny random llama (context 16) with a byte-level vocabulary of 257 tokens, so the real
/// `lvh run` path (tokenizer, template, model) can load it; `extra` metadata is added.
fn tiny_chat_model(dir: &Path, extra: Vec<(&str, Value)>) -> PathBuf {
    tiny_chat_model_with(dir, 1, extra)
}

/// [`tiny_chat_model`] with `n_layers` blocks.
fn tiny_chat_model_with(dir: &Path, n_layers: usize, extra: Vec<(&str, Value)>) -> PathBuf {
    let raw = dir.join("raw.gguf");
    RandomLlama {
        n_layers,
        d_model: 32,
        n_heads: 2,
        n_kv_heads: 1,
        d_ff: 32,
        vocab: 257,
        context: 16,
        ..RandomLlama::default()
    }
    .write(&raw, &mut rand_chacha::ChaCha8Rng::seed_from_u64(6))
    .unwrap();
    let mut f = std::fs::File::open(&raw).unwrap();
    let content = Content::read(&mut f).unwrap();
    let mut tensors = Vec::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for n in names {
        tensors.push((n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap()));
    }
    let mut tokens = vec![Value::String("<|im_start|>".into())];
    tokens.extend((0..=255u8).map(|b| Value::String(byte_char(b).to_string())));
    let mut types = vec![Value::I32(3)];
    types.extend(std::iter::repeat(Value::I32(1)).take(256));
    let mut meta: Vec<(String, Value)> = content.metadata.into_iter().collect();
    meta.extend(
        [
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("smollm".into())),
            ("tokenizer.ggml.tokens", Value::Array(tokens)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.merges", Value::Array(Vec::new())),
        ]
        .into_iter()
        .chain(extra)
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let out = dir.join("tiny-chat.gguf");
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &_)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut w = std::fs::File::create(&out).unwrap();
    gguf_file::write(&mut w, &meta_refs, &t_refs).unwrap();
    out
}

fn lvh(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lvh_run_refuses_prompts_longer_than_the_context_and_bad_models() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_chat_model(dir.path(), Vec::new());
    let m = model.to_str().unwrap();
    // 15 bytes, 15 tokens: fits in 16.
    let (ok, _, err) = lvh(&["run", "--model", m, "--prompt", "abcdefghijklmno"]);
    assert!(ok, "{err}");
    // 40 tokens do not.
    let long = "x".repeat(40);
    let (ok, _, err) = lvh(&["run", "--model", m, "--prompt", &long]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: forward pass: sequence 0 needs 40 positions, the context length is 16"
    );
    // A truncated model file.
    let bytes = std::fs::read(&model).unwrap();
    let cut = write(dir.path(), "cut.gguf", &bytes[..bytes.len() / 2]);
    let (ok, _, err) = lvh(&["run", "--model", cut.to_str().unwrap(), "--prompt", "a"]);
    assert!(!ok);
    assert!(
        err.starts_with(&format!("error: reading {}: tensor `", cut.display()))
            && err.contains("past the end of the file"),
        "{err}"
    );
    // A mixture-of-experts model.
    let moe_dir = dir.path().join("moe");
    std::fs::create_dir(&moe_dir).unwrap();
    let moe = tiny_chat_model(&moe_dir, vec![("llama.expert_count", Value::U32(8))]);
    let (ok, _, err) = lvh(&["run", "--model", moe.to_str().unwrap(), "--prompt", "a"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "error: loading {}: metadata key `llama.expert_count` has invalid value 8: \
             mixture-of-experts models are not supported",
            moe.display()
        )
    );
}

#[test]
fn a_control_vector_of_another_width_names_both_sizes() {
    use lvh::geometry::export::{npy_bytes, ControlVector};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_chat_model_with(dir.path(), 2, Vec::new());
    let m = model.to_str().unwrap();
    // The model's d_model is 32; a control vector made for a 64-wide model.
    let cv = ControlVector {
        model_hint: "llama".into(),
        layers: [(1usize, vec![0.5f32; 64]), (2, vec![0.25f32; 64])]
            .into_iter()
            .collect(),
    };
    let cv_path = dir.path().join("other-model.gguf");
    cv.write(&cv_path).unwrap();
    let steer = |direction: &Path| {
        lvh(&[
            "steer",
            "--model",
            m,
            "--direction",
            direction.to_str().unwrap(),
            "--layer",
            "1",
            "--scale",
            "4",
            "--prompt",
            "a",
        ])
    };
    let (ok, _, err) = steer(&cv_path);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "error: {} (direction.1): length 64 but the model's d_model is 32",
            cv_path.display()
        )
    );
    // The same through a .npy direction, one element short.
    let npy = write(
        dir.path(),
        "short.npy",
        &npy_bytes(&[31], &[1.0f32; 31]).unwrap(),
    );
    let (ok, _, err) = steer(&npy);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "error: {}: length 31 but the model's d_model is 32",
            npy.display()
        )
    );
    // A control vector of the right width steers.
    let good = ControlVector {
        model_hint: "llama".into(),
        layers: [(1usize, vec![0.5f32; 32])].into_iter().collect(),
    };
    let good_path = dir.path().join("right.gguf");
    good.write(&good_path).unwrap();
    let (ok, _, err) = lvh(&[
        "steer",
        "--model",
        m,
        "--direction",
        good_path.to_str().unwrap(),
        "--layer",
        "1",
        "--scale",
        "4",
        "--prompt",
        "a",
        "--raw",
        "--max-tokens",
        "2",
    ]);
    assert!(ok, "{err}");
}
