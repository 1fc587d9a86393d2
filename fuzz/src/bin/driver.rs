//! Stable-toolchain companion of the libFuzzer targets.
//!
//! ```text
//! driver seeds <corpus-dir> [model.gguf]       # write generated seeds (tiny GGUF models, templates, ...)
//! driver run <target> <seconds> <dir>... [--seed N]
//!                                              # seeded random mutation of the seed files, bounded time
//! driver replay <target> <file>...             # run a target on given inputs (crash reproduction)
//! ```
//!
//! `run` is blind (no coverage feedback): each round picks a seed file, applies 1-8 random
//! mutations (bit flips, byte sets to 0/0xff/random, interesting little-endian integers written
//! at random offsets, truncation, block duplication and deletion, splices from another seed), and
//! runs the harness under `catch_unwind`. A panic writes the input to `artifacts/<target>/` and
//! exits non-zero. The RNG is ChaCha8 seeded from `--seed` (default 0), so a run is reproducible.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use lm_runtime::model::random::RandomLlama;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// Under `cargo fuzz build` every binary is coverage-instrumented and needs libFuzzer's
// callbacks: linking the libFuzzer runtime takes an input function, which this driver never
// calls (its own `main` runs instead of libFuzzer's).
#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});

fn usage() -> ! {
    eprintln!(
        "usage: driver seeds <dir> [model.gguf] | driver run <target> <seconds> <dir>... [--seed N] | \
         driver replay <target> <file>..."
    );
    std::process::exit(2)
}

fn harness(name: &str) -> lvh_fuzz::Harness {
    match lvh_fuzz::TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, h)) => *h,
        None => {
            let names: Vec<_> = lvh_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
            eprintln!("unknown target `{name}` (known: {})", names.join(", "));
            std::process::exit(2)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("seeds") if args.len() == 2 || args.len() == 3 => {
            seeds(Path::new(&args[1]), args.get(2).map(Path::new))
        }
        Some("run") if args.len() >= 4 => {
            let secs: u64 = args[2].parse().unwrap_or_else(|_| usage());
            let mut dirs = Vec::new();
            let mut seed = 0u64;
            let mut it = args[3..].iter();
            while let Some(a) = it.next() {
                if a == "--seed" {
                    seed = it
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage());
                } else {
                    dirs.push(PathBuf::from(a));
                }
            }
            run(&args[1], Duration::from_secs(secs), &dirs, seed)
        }
        Some("replay") if args.len() >= 3 => {
            let h = harness(&args[1]);
            for f in &args[2..] {
                let data = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
                h(&data);
                println!("{f}: ok");
            }
        }
        _ => usage(),
    }
}

fn read_corpus(dirs: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.is_file() {
                if let Ok(b) = std::fs::read(&p) {
                    files.push(b);
                }
            }
        }
    }
    if files.is_empty() {
        files.push(Vec::new());
    }
    files
}

const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    9,
    12,
    13,
    31,
    32,
    255,
    256,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 20,
    1 << 32,
    1 << 40,
    1 << 62,
    u64::MAX / 2,
    u64::MAX,
];

fn mutate(rng: &mut ChaCha8Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..=8) {
        let len = v.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] = [0u8, 0xff, rng.gen(), b'"', b'{', b'\n', b'[', b'%'][rng.gen_range(0..8)];
            }
            2 if len > 0 => {
                let x = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.gen_range(0..4)];
                let i = rng.gen_range(0..len);
                for (k, b) in x.to_le_bytes()[..width].iter().enumerate() {
                    if let Some(slot) = v.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            3 if len > 0 => v.truncate(rng.gen_range(0..len)),
            4 if len > 1 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..len.min(a + 64) + 1).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.gen_range(0..=len);
                v.splice(at..at, chunk);
            }
            5 if len > 1 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..len.min(a + 64) + 1).min(len);
                v.drain(a..b);
            }
            6 => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                if !other.is_empty() {
                    let a = rng.gen_range(0..other.len());
                    let b = rng
                        .gen_range(a..other.len().min(a + 256) + 1)
                        .min(other.len());
                    let at = rng.gen_range(0..=len);
                    v.splice(at..at, other[a..b].iter().copied());
                }
            }
            7 => {
                // Decimal numbers are what the text formats are made of.
                let s = [
                    "0",
                    "-1",
                    "1e309",
                    "NaN",
                    "inf",
                    "99999999999999999999",
                    "\u{0}",
                ][rng.gen_range(0..7)];
                let at = rng.gen_range(0..=len);
                v.splice(at..at, s.bytes());
            }
            _ => {
                let at = rng.gen_range(0..=len);
                v.insert(at, rng.gen());
            }
        }
    }
    v.truncate(1 << 20);
    v
}

fn run(target: &str, budget: Duration, dirs: &[PathBuf], seed: u64) {
    let h = harness(target);
    let corpus = read_corpus(dirs);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    std::panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let mut n: u64 = 0;
    // Every seed as is first, then mutants until the budget is spent.
    let mut queue: std::collections::VecDeque<Vec<u8>> = corpus.iter().cloned().collect();
    while start.elapsed() < budget {
        let input = queue.pop_front().unwrap_or_else(|| {
            let base = &corpus[rng.gen_range(0..corpus.len())];
            mutate(&mut rng, base, &corpus)
        });
        let t0 = Instant::now();
        let res = std::panic::catch_unwind(|| h(&input));
        let dt = t0.elapsed();
        n += 1;
        if res.is_err() || dt > Duration::from_secs(10) {
            let _ = std::panic::take_hook();
            let dir = PathBuf::from("artifacts").join(target);
            std::fs::create_dir_all(&dir).expect("artifacts dir");
            let path = dir.join(format!("crash-driver-{seed}-{n}"));
            std::fs::write(&path, &input).expect("write artifact");
            let what = if res.is_err() { "panic" } else { "slow input" };
            eprintln!(
                "{target}: {what} after {n} inputs ({dt:?}); input saved to {}; reproduce with \
                 `driver replay {target} {}`",
                path.display(),
                path.display()
            );
            std::process::exit(1);
        }
    }
    println!(
        "{target}: {n} inputs in {:.1} s, no panic (seed {seed}, {} seed files)",
        start.elapsed().as_secs_f64(),
        corpus.len()
    );
}

/// Writes generated seeds: tiny random-weight GGUF models (tied / untied, Q8_0 / Q4_0 / F32),
/// a GGUF with a tokenizer and chat template, hostile chat templates, the simulator's demo
/// model file (JSON and TOML), tokenizer inputs; and from a real model file, when given, the
/// head of its header, its chat template and prompts in its vocabulary.
fn seeds(dir: &Path, model: Option<&Path>) {
    let gguf_dir = dir.join("gguf");
    let tmpl_dir = dir.join("template");
    let mf_dir = dir.join("model_file");
    let tok_dir = dir.join("tokenizer");
    let cv_dir = dir.join("control_vector");
    for d in [&gguf_dir, &tmpl_dir, &mf_dir, &tok_dir, &cv_dir] {
        std::fs::create_dir_all(d).expect("create seed dir");
    }
    let demo = rlaif_sim::demo::demo_model_file();
    let mut json = vec![0u8];
    json.extend_from_slice(demo.to_json().as_bytes());
    std::fs::write(mf_dir.join("demo-model.json"), json).expect("write seed");
    let mut tml = vec![1u8];
    tml.extend_from_slice(toml::to_string(&demo).expect("demo as TOML").as_bytes());
    std::fs::write(mf_dir.join("demo-model.toml"), tml).expect("write seed");
    let texts = [
        "<|im_start|>user\nHello, world! 123 4567<|im_end|>\n<|im_start|>assistant\n",
        "héllo wörld\n\n\t  x 🚀 e\u{301} 東京 ١٢٣ <tag>",
        "<start_of_turn>user\n\nthe answer<end_of_turn>",
        "   leading and trailing   ",
    ];
    for (i, t) in texts.iter().enumerate() {
        for sel in [0u8, 1, 2] {
            let mut b = vec![sel];
            b.extend_from_slice(t.as_bytes());
            std::fs::write(tok_dir.join(format!("text-{sel}-{i}")), b).expect("write seed");
        }
    }
    let mut ids = vec![0x80u8];
    for id in [0u32, 1, 2, 3, 5, 255, 300, 49151, 49152, u32::MAX] {
        ids.extend_from_slice(&id.to_le_bytes());
    }
    std::fs::write(tok_dir.join("ids"), ids).expect("write seed");
    if let Some(m) = model {
        use std::io::Read;
        let mut head = vec![0u8; 1 << 16];
        let mut f = std::fs::File::open(m).expect("open the seed model");
        let n = f.read(&mut head).expect("read the seed model");
        head.truncate(n);
        std::fs::write(gguf_dir.join("model-head-64k.gguf"), &head).expect("write seed");
        std::fs::write(gguf_dir.join("model-head-4k.gguf"), &head[..n.min(4096)])
            .expect("write seed");
        if let Ok(g) = lm_runtime::gguf::GgufFile::open(m) {
            if let Ok(t) = g.str("tokenizer.chat_template") {
                std::fs::write(tmpl_dir.join("model.jinja"), t).expect("write seed");
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for (i, (dtype, untied)) in [
        (GgmlDType::Q8_0, false),
        (GgmlDType::Q4_0, true),
        (GgmlDType::F32, false),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = RandomLlama {
            n_layers: 1,
            d_model: 32,
            n_heads: 2,
            n_kv_heads: 1,
            d_ff: 32,
            vocab: 8,
            context: 16,
            dtype,
            untied_output: untied,
        };
        spec.write(&gguf_dir.join(format!("random-llama-{i}.gguf")), &mut rng)
            .expect("write random llama");
    }
    // Metadata only: a byte-level vocabulary, merges and a chat template, one small tensor.
    let tokens: Vec<Value> = ["<|im_start|>", "<|im_end|>", "a", "b", "ab", "Ġ", "Ġab"]
        .iter()
        .map(|s| Value::String(s.to_string()))
        .collect();
    let n = tokens.len();
    let meta = vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(
                [3, 3]
                    .into_iter()
                    .chain(std::iter::repeat_n(1, n - 2))
                    .map(Value::I32)
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("a b".into()), Value::String("Ġ ab".into())]),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(0)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        (
            "tokenizer.chat_template",
            Value::String(
                "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                 {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
                    .into(),
            ),
        ),
        ("llama.expert_count", Value::U32(0)),
    ];
    let t = Tensor::arange(0f32, 32.0, &Device::Cpu).expect("arange");
    let q = QTensor::quantize(&t, GgmlDType::F32).expect("quantize");
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(gguf_dir.join("tokenizer-template.gguf")).expect("create");
    gguf_file::write(&mut f, &meta_refs, &[("output_norm.weight", &q)]).expect("write gguf");

    let templates = [
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}<start_of_turn>user\n{{ m.content | trim }}<end_of_turn>\n{% elif m.role == 'assistant' %}<start_of_turn>model\n{{ m.content | trim }}<end_of_turn>\n{% else %}{{ raise_exception('bad role') }}{% endif %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% set s = 'ab' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}{{ s }}",
        "{{ 'x' * 1000000000 }}",
        "{% for m in messages %}{{ m.content.strip().upper() }}{% for k, v in m.items() %}{{ k }}{% endfor %}{% break %}{% endfor %}",
        "{{ messages[0]['content'] | tojson }}{{ messages | length }}{% if messages|selectattr('role','eq','system')|list %}S{% endif %}",
    ];
    for (i, t) in templates.iter().enumerate() {
        std::fs::write(tmpl_dir.join(format!("seed-{i}.jinja")), t).expect("write template");
    }
    control_vector_seeds(&cv_dir);
    println!("seeds written under {}", dir.display());
}

/// Control vectors as `lvh directions --export` writes them (one, three and sparse layers,
/// widths 32 and 576), and the same file with the optional `controlvector.model_hint` removed.
fn control_vector_seeds(dir: &Path) {
    use lvh::geometry::export::ControlVector;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let shapes: [(&[usize], usize); 3] = [(&[1], 32), (&[1, 2, 3], 32), (&[5, 29], 576)];
    for (i, (layers, d)) in shapes.into_iter().enumerate() {
        let cv = ControlVector {
            model_hint: "llama".into(),
            layers: layers
                .iter()
                .map(|&l| (l, (0..d).map(|_| rng.gen_range(-1.0f32..1.0)).collect()))
                .collect(),
        };
        cv.write(&dir.join(format!("lvh-{i}.gguf")))
            .expect("write control vector seed");
    }
    // Without the model hint (repeng files of other versions omit it), written by candle.
    let v: Vec<f32> = (0..32).map(|i| i as f32 / 32.0).collect();
    let t = Tensor::from_vec(v, 32, &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&t, GgmlDType::F32).expect("quantize");
    let meta = [
        (
            "general.architecture",
            Value::String("controlvector".into()),
        ),
        ("controlvector.layer_count", Value::U32(1)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(dir.join("no-hint.gguf")).expect("create");
    gguf_file::write(&mut f, &meta_refs, &[("direction.4", &q)]).expect("write gguf");
}
