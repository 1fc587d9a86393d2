//! Hostile GGUF files: truncations at many offsets, wrong magic, absurd counts, lengths and
//! dimensions, out-of-range offsets, wrong quantization sizes, duplicate keys and tensors,
//! invalid UTF-8, NaN weights, mixture-of-experts models and prompts longer than the context.
//! Every case must end in a typed error whose message names the byte offset, key or tensor at
//! fault; none may panic or allocate by an untrusted length. `docs/bad-inputs.md` lists these
//! messages.

use std::path::{Path, PathBuf};

use candle_core::Device;
use lm_runtime::config::ModelConfig;
use lm_runtime::gguf::{GgufError, GgufFile};
use lm_runtime::hooks::Capture;
use lm_runtime::model::random::RandomLlama;
use lm_runtime::model::{Batch, Model, ModelError, WeightMode};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A metadata value for the raw writer: the type id and its little-endian bytes.
enum V<'a> {
    U32(u32),
    F32(f32),
    Bool(u8),
    Str(&'a [u8]),
    /// Any other type id with raw bytes.
    Raw(u32, Vec<u8>),
}

fn gguf_str(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s);
}

/// A GGUF v3 file written byte by byte, so that every field can be made hostile:
/// metadata `(key, value)`, tensors `(name, ggml dims innermost first, ggml type, offset)`,
/// then `data_len` zero bytes of tensor data after 32-byte alignment.
fn raw(kvs: &[(&[u8], V)], tensors: &[(&str, &[u64], u32, u64)], data_len: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        gguf_str(&mut b, k);
        match v {
            V::U32(x) => {
                b.extend_from_slice(&4u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            V::F32(x) => {
                b.extend_from_slice(&6u32.to_le_bytes());
                b.extend_from_slice(&x.to_le_bytes());
            }
            V::Bool(x) => {
                b.extend_from_slice(&7u32.to_le_bytes());
                b.push(*x);
            }
            V::Str(s) => {
                b.extend_from_slice(&8u32.to_le_bytes());
                gguf_str(&mut b, s);
            }
            V::Raw(t, bytes) => {
                b.extend_from_slice(&t.to_le_bytes());
                b.extend_from_slice(bytes);
            }
        }
    }
    for (name, dims, ty, offset) in tensors {
        gguf_str(&mut b, name.as_bytes());
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
    }
    b.resize(b.len().div_ceil(32) * 32, 0);
    b.resize(b.len() + data_len, 0);
    b
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The error of opening these bytes as GGUF, then reading the config, then loading the
    /// model: the first stage that refuses.
    fn error(&self, bytes: &[u8]) -> String {
        let p = self.write("hostile.gguf", bytes);
        match load(&p) {
            Ok(_) => panic!("accepted a hostile file"),
            Err(e) => e.to_string(),
        }
    }
}

fn load(p: &Path) -> Result<Model, ModelError> {
    let mut f = GgufFile::open(p)?;
    ModelConfig::from_gguf(&f)?;
    Model::from_gguf(&mut f, WeightMode::Quantized, &Device::Cpu)
}

fn tiny() -> RandomLlama {
    RandomLlama {
        n_layers: 1,
        d_model: 32,
        n_heads: 2,
        n_kv_heads: 1,
        d_ff: 32,
        vocab: 8,
        context: 16,
        ..RandomLlama::default()
    }
}

fn tiny_file(s: &Scratch, spec: &RandomLlama) -> (PathBuf, Vec<u8>) {
    let p = s.dir.path().join("tiny.gguf");
    spec.write(&p, &mut ChaCha8Rng::seed_from_u64(6)).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    (p, bytes)
}

fn assert_has(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
}

/// The byte offset a `corrupt GGUF header at byte N` message names.
fn corrupt_offset(msg: &str) -> Option<u64> {
    let rest = msg.strip_prefix("corrupt GGUF header at byte ")?;
    rest.split(':').next()?.parse().ok()
}

#[test]
fn truncation_at_every_64th_of_the_header_and_inside_tensor_data() {
    let s = Scratch::new();
    let (p, bytes) = tiny_file(&s, &tiny());
    let header_len = GgufFile::open(&p).unwrap().content().tensor_data_offset as usize;
    assert!(header_len > 64 && header_len < bytes.len());
    let mut cuts: Vec<usize> = (0..64).map(|k| header_len * k / 64).collect();
    let data = bytes.len() - header_len;
    cuts.extend([
        header_len,
        header_len + 1,
        header_len + data / 3,
        header_len + data / 2,
        bytes.len() - 1,
    ]);
    for cut in cuts {
        let msg = s.error(&bytes[..cut]);
        if let Some(at) = corrupt_offset(&msg) {
            // A header error: it points inside what was kept and says why.
            assert!(at <= cut as u64, "cut {cut}: {msg}");
            assert!(
                msg.contains("unexpected end of file") || msg.contains("exceeds the"),
                "cut {cut}: {msg}"
            );
        } else {
            // The header survived: a tensor runs past the end and is named.
            assert!(cut >= header_len - 32, "cut {cut}: {msg}");
            assert_has(
                &msg,
                &["tensor `", "past the end of the file", "truncated?"],
            );
        }
    }
    // The untouched file loads.
    load(&p).unwrap();
}

#[test]
fn empty_file_wrong_magic_and_version() {
    let s = Scratch::new();
    assert_eq!(
        s.error(b""),
        "corrupt GGUF header at byte 0: unexpected end of file"
    );
    let (_, mut bytes) = tiny_file(&s, &tiny());
    let good = bytes.clone();
    bytes[..4].copy_from_slice(b"GGML");
    assert_eq!(
        s.error(&bytes),
        "corrupt GGUF header at byte 4: not a GGUF file (magic 0x4c4d4747)"
    );
    let mut bytes = good.clone();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(
        s.error(&bytes),
        "corrupt GGUF header at byte 8: unsupported GGUF version 1"
    );
    let mut bytes = good;
    bytes[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
    assert_has(&s.error(&bytes), &["not a GGUF file (magic 0x464c457f)"]);
}

#[test]
fn absurd_counts_are_refused_before_any_allocation() {
    let s = Scratch::new();
    let (_, good) = tiny_file(&s, &tiny());
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_has(
        &s.error(&b),
        &["at byte 24", "absurd counts: 18446744073709551615 tensors"],
    );
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_has(
        &s.error(&b),
        &["absurd counts", "1099511627776 metadata entries"],
    );
    // A million tensors is under the absolute cap but cannot fit in this small file; before the
    // fix the reader reserved room for all of them (~70 MB) before reading the first name.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let msg = s.error(&b);
    assert_has(
        &msg,
        &[
            "1048576 tensors and",
            "need at least",
            "which exceeds the",
            "bytes left in the file",
        ],
    );
    let mut b = good;
    b[16..24].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert_has(&s.error(&b), &["1048576 metadata entries need at least"]);
}

#[test]
fn absurd_string_and_array_lengths_are_refused() {
    let s = Scratch::new();
    let (_, good) = tiny_file(&s, &tiny());
    // The first metadata key's length.
    let mut b = good.clone();
    b[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let msg = s.error(&b);
    assert_has(
        &msg,
        &[
            "at byte 32",
            "metadata key length 1099511627776 exceeds the",
        ],
    );
    // A string value.
    let file = raw(
        &[(
            b"general.name",
            V::Raw(8, (u64::MAX - 3).to_le_bytes().to_vec()),
        )],
        &[],
        0,
    );
    assert_has(
        &s.error(&file),
        &["general.name length 18446744073709551612 exceeds the"],
    );
    // An array of 2^60 u32.
    let mut arr = 4u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let file = raw(&[(b"tokenizer.ggml.scores", V::Raw(9, arr))], &[], 0);
    assert_has(
        &s.error(&file),
        &["tokenizer.ggml.scores length 1152921504606846976 exceeds the"],
    );
    // Arrays of arrays of arrays.
    let mut arr = 9u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&1u64.to_le_bytes());
    arr.extend_from_slice(&9u32.to_le_bytes());
    arr.extend_from_slice(&1u64.to_le_bytes());
    arr.extend_from_slice(&9u32.to_le_bytes());
    arr.extend_from_slice(&[0; 16]);
    let file = raw(&[(b"deep", V::Raw(9, arr))], &[], 0);
    assert_has(&s.error(&file), &["key `deep`: arrays nested too deep"]);
}

#[test]
fn bad_value_types_and_alignment() {
    let s = Scratch::new();
    let msg = s.error(&raw(&[(b"x", V::Raw(13, vec![0; 8]))], &[], 0));
    assert_has(&msg, &["key `x`: unknown value type 13"]);
    let msg = s.error(&raw(&[(b"flag", V::Bool(2))], &[], 0));
    assert_has(&msg, &["key `flag`: bool byte 2"]);
    let msg = s.error(&raw(&[(b"general.alignment", V::U32(3))], &[], 0));
    assert_has(&msg, &["bad general.alignment U32(3)"]);
    let msg = s.error(&raw(&[(b"general.alignment", V::U32(0))], &[], 0));
    assert_has(&msg, &["bad general.alignment U32(0)"]);
}

#[test]
fn absurd_dimensions_types_and_offsets_name_the_tensor() {
    let s = Scratch::new();
    let one = |dims: &[u64], ty: u32, offset: u64, data: usize| {
        s.error(&raw(&[], &[("w", dims, ty, offset)], data))
    };
    assert_has(&one(&[0, 4], 0, 0, 64), &["tensor `w`: absurd dims [0, 4]"]);
    assert_has(
        &one(&[1 << 21, 1 << 21], 0, 0, 64),
        &["tensor `w`: absurd dims [2097152, 2097152]"],
    );
    assert_has(
        &one(&[u64::MAX, u64::MAX], 0, 0, 64),
        &["tensor `w`: absurd dims"],
    );
    assert_has(
        &one(&[1, 1, 1, 1, 1], 0, 0, 64),
        &["tensor `w`: 5 dimensions"],
    );
    assert_has(
        &one(&[32], 99, 0, 64),
        &["tensor `w`: unsupported ggml type 99"],
    );
    // Q8_0 rows come in blocks of 32.
    assert_has(
        &one(&[33, 2], 8, 0, 1024),
        &["tensor `w`: row length 33 not a multiple of block size 32"],
    );
    // Offsets outside the file, including one that overflows u64 when added to the data start.
    assert_has(
        &one(&[32], 0, 1 << 62, 128),
        &[
            "tensor `w`: data [4611686018427387904, +128) past the end of the file",
            "truncated?",
        ],
    );
    assert_has(
        &one(&[32], 0, u64::MAX, 128),
        &["tensor `w`: data [18446744073709551615, +128) past the end"],
    );
    // Wrong quantization size: F32 [2, 32] needs 256 bytes, the file holds 128.
    assert_has(
        &one(&[32, 2], 0, 0, 128),
        &["tensor `w`: data [0, +256) past the end of the file"],
    );
    // The same bytes declared Q8_0 need 68 bytes: they fit (the type is not recoverable from
    // the data, so a wrong but smaller type is only caught by the shape checks of the model).
    let p = s.write("q8.gguf", &raw(&[], &[("w", &[32, 2], 8, 0)], 128));
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensor_info("w").unwrap().shape.dims(), &[2, 32]);
}

#[test]
fn duplicate_keys_and_tensor_names_are_refused() {
    let s = Scratch::new();
    let msg = s.error(&raw(
        &[
            (b"general.architecture", V::Str(b"llama")),
            (b"general.architecture", V::Str(b"gemma")),
        ],
        &[],
        0,
    ));
    assert_has(&msg, &["duplicate metadata key `general.architecture`"]);
    let msg = s.error(&raw(&[], &[("w", &[32], 0, 0), ("w", &[32], 0, 128)], 256));
    assert_eq!(msg, "tensor `w`: declared twice in the header");
}

/// The metadata of a llama config whose `token_embd.weight` is `[vocab 4, d 32]` F32.
fn llama_kvs<'a>(over: &[(&'a [u8], V<'a>)]) -> Vec<(&'a [u8], V<'a>)> {
    let mut kvs: Vec<(&[u8], V)> = vec![
        (b"general.architecture", V::Str(b"llama")),
        (b"llama.block_count", V::U32(1)),
        (b"llama.context_length", V::U32(16)),
        (b"llama.embedding_length", V::U32(32)),
        (b"llama.feed_forward_length", V::U32(32)),
        (b"llama.attention.head_count", V::U32(2)),
    ];
    for (k, v) in over {
        let v = match v {
            V::U32(x) => V::U32(*x),
            V::F32(x) => V::F32(*x),
            V::Bool(x) => V::Bool(*x),
            V::Str(x) => V::Str(x),
            V::Raw(t, b) => V::Raw(*t, b.clone()),
        };
        match kvs.iter().position(|(kk, _)| kk == k) {
            Some(i) => kvs[i].1 = v,
            None => kvs.push((k, v)),
        }
    }
    kvs
}

fn config_error(s: &Scratch, over: &[(&[u8], V)]) -> String {
    s.error(&raw(
        &llama_kvs(over),
        &[("token_embd.weight", &[32, 4], 0, 0)],
        512,
    ))
}

#[test]
fn config_refuses_moe_absurd_sizes_and_inconsistent_heads() {
    let s = Scratch::new();
    assert_eq!(
        config_error(&s, &[(b"llama.expert_count", V::U32(8))]),
        "metadata key `llama.expert_count` has invalid value 8: mixture-of-experts models are not supported"
    );
    assert_eq!(
        config_error(&s, &[(b"llama.embedding_length", V::U32(0))]),
        "metadata key `llama.embedding_length` has invalid value 0: must be in 1..=4194304"
    );
    assert_has(
        &config_error(&s, &[(b"llama.block_count", V::U32(u32::MAX))]),
        &["`llama.block_count` has invalid value 4294967295: must be in 1..=4194304"],
    );
    assert_has(
        &config_error(&s, &[(b"llama.attention.head_count", V::U32(3))]),
        &["`llama.attention.head_count` has invalid value 3: head_count × head_dim must equal embedding_length"],
    );
    assert_has(
        &config_error(&s, &[(b"llama.attention.head_count_kv", V::U32(3))]),
        &["`llama.attention.head_count_kv` has invalid value 3: must divide attention.head_count"],
    );
    assert_has(
        &config_error(&s, &[(b"llama.rope.freq_base", V::F32(f32::NAN))]),
        &["`llama.rope.freq_base` has invalid value NaN: must be > 1"],
    );
    assert_has(
        &config_error(
            &s,
            &[(b"llama.attention.layer_norm_rms_epsilon", V::F32(0.0))],
        ),
        &["`llama.attention.layer_norm_rms_epsilon` has invalid value 0: must be in (0, 1)"],
    );
    assert_has(
        &config_error(&s, &[(b"llama.context_length", V::Str(b"long"))]),
        &[
            "metadata key `llama.context_length` has type String",
            "expected unsigned integer",
        ],
    );
    assert_has(
        &config_error(&s, &[(b"general.architecture", V::Str(b"mamba"))]),
        &["metadata key `general.architecture` has invalid value mamba: unsupported architecture (supported: llama"],
    );
    let msg = s.error(&raw(
        &llama_kvs(&[]),
        &[("token_embd.weight", &[16, 4], 0, 0)],
        512,
    ));
    assert_eq!(
        msg,
        "tensor `token_embd.weight` has shape [4, 16], expected [0, 32]"
    );
    // Config fine, a weight missing.
    let msg = config_error(&s, &[]);
    assert_eq!(msg, "tensor `blk.0.attn_norm.weight` is missing");
}

#[test]
fn invalid_utf8_in_metadata_is_replaced_then_refused_by_name() {
    let s = Scratch::new();
    // In a value: decoded lossily (U+FFFD), then the architecture is unknown.
    let msg = config_error(&s, &[(b"general.architecture", V::Str(b"ll\xffama"))]);
    assert_has(
        &msg,
        &["metadata key `general.architecture` has invalid value ll\u{FFFD}ama: unsupported architecture"],
    );
    // In a key: the key is not the one looked for.
    let mut kvs = llama_kvs(&[]);
    kvs[0].0 = b"general.architectur\xfe";
    let msg = s.error(&raw(&kvs, &[("token_embd.weight", &[32, 4], 0, 0)], 512));
    assert_eq!(msg, "metadata key `general.architecture` is missing");
}

#[test]
fn nan_weights_load_and_what_the_logits_then_are() {
    // Weights are not scanned for NaN/Inf at load time (a real model's matmul weights are
    // quantized; scanning them would cost a full dequantization). What a NaN in a norm weight
    // does then depends on the weight mode, and is documented in docs/bad-inputs.md.
    let s = Scratch::new();
    let spec = RandomLlama {
        dtype: candle_core::quantized::GgmlDType::F32,
        ..tiny()
    };
    let (p, mut bytes) = tiny_file(&s, &spec);
    let f = GgufFile::open(&p).unwrap();
    let info = f.tensor_info("output_norm.weight").unwrap();
    let at = (f.content().tensor_data_offset + info.offset) as usize;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let p = s.write("nan.gguf", &bytes);
    let logits = |mode: WeightMode| -> Vec<f32> {
        let model = Model::load(&p, mode).expect("NaN weights are not refused at load");
        let out = model
            .forward(
                &Batch::single(vec![1, 2, 3]),
                &mut Capture::none(),
                &[],
                &mut model.new_cache(),
            )
            .unwrap();
        out[0].flatten_all().unwrap().to_vec1().unwrap()
    };
    // Dequantized weights: the NaN reaches every logit.
    let v = logits(WeightMode::F32);
    assert!(v.iter().all(|x| x.is_nan()), "{v:?}");
    // Quantized unembedding (Q8_0, tied): candle quantizes the activation row to 8 bits first,
    // and the NaN channel becomes 0, so the logits are finite but silently wrong.
    let v = logits(WeightMode::Quantized);
    assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
}

#[test]
fn prompts_longer_than_the_context_are_refused() {
    let s = Scratch::new();
    let (p, _) = tiny_file(&s, &tiny());
    let model = Model::load(&p, WeightMode::Quantized).unwrap();
    let err = model
        .forward(
            &Batch::single(vec![1; 17]),
            &mut Capture::none(),
            &[],
            &mut model.new_cache(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sequence 0 needs 17 positions, the context length is 16"
    );
    // The same limit across calls: 10 tokens cached, then 7 more.
    let mut cache = model.new_cache();
    model
        .forward(
            &Batch::single(vec![1; 10]),
            &mut Capture::none(),
            &[],
            &mut cache,
        )
        .unwrap();
    let err = model
        .forward(
            &Batch::single(vec![1; 7]),
            &mut Capture::none(),
            &[],
            &mut cache,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sequence 0 needs 17 positions, the context length is 16"
    );
    let err = model
        .forward(
            &Batch::single(vec![8]),
            &mut Capture::none(),
            &[],
            &mut model.new_cache(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sequence 0, position 0: token id 8 outside the vocabulary of 8"
    );
}

#[test]
fn error_variants_carry_the_key() {
    // The typed errors keep what a caller needs to act (not only the message).
    let s = Scratch::new();
    let p = s.write(
        "moe.gguf",
        &raw(
            &llama_kvs(&[(b"llama.expert_count", V::U32(4))]),
            &[("token_embd.weight", &[32, 4], 0, 0)],
            512,
        ),
    );
    let f = GgufFile::open(&p).unwrap();
    match ModelConfig::from_gguf(&f).unwrap_err() {
        GgufError::BadValue { key, value, .. } => {
            assert_eq!((key.as_str(), value.as_str()), ("llama.expert_count", "4"))
        }
        e => panic!("{e}"),
    }
}

#[test]
fn huge_context_length_is_refused_before_building_rope_tables() {
    // Before the cap, this 10 KB file took 10 s and 512 MB to load (RoPE tables of
    // 2^22 positions × 8 angles); with a wider head the same trick needs gigabytes.
    let s = Scratch::new();
    let spec = RandomLlama {
        context: 1 << 22,
        ..tiny()
    };
    let (_, bytes) = tiny_file(&s, &spec);
    assert!(bytes.len() < 20_000);
    assert_eq!(
        s.error(&bytes),
        "metadata key `llama.context_length` has invalid value 4194304: context_length × \
         head_dim (16) exceeds 33554432 (RoPE tables over 128 MiB)"
    );
    // A real long-context shape is still accepted: 131 072 positions × head_dim 128.
    let spec = RandomLlama {
        context: 1 << 17,
        d_model: 128,
        n_heads: 1,
        n_kv_heads: 1,
        ..tiny()
    };
    let (p, _) = tiny_file(&s, &spec);
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(ModelConfig::from_gguf(&f).unwrap().context_length, 1 << 17);
}

#[test]
fn q4_1_and_q5_rows_with_an_odd_number_of_blocks_run() {
    // Found by the `gguf` fuzz target: candle's Q4_1 / Q5_0 / Q5_1 dot products debug-assert an
    // even number of 32-element blocks per row, so a model with d_model = 32 in one of these
    // types panicked in debug builds. Such weights are now handed out as F32; the logits must
    // equal those of the dequantized model.
    let s = Scratch::new();
    for dtype in [
        candle_core::quantized::GgmlDType::Q4_1,
        candle_core::quantized::GgmlDType::Q5_0,
        candle_core::quantized::GgmlDType::Q5_1,
    ] {
        let spec = RandomLlama {
            dtype,
            untied_output: true,
            ..tiny()
        };
        let (p, _) = tiny_file(&s, &spec);
        let logits = |mode: WeightMode| -> Vec<f32> {
            let model = Model::load(&p, mode).unwrap();
            let out = model
                .forward(
                    &Batch::single(vec![1, 2, 3]),
                    &mut Capture::none(),
                    &[],
                    &mut model.new_cache(),
                )
                .unwrap();
            out[0].flatten_all().unwrap().to_vec1().unwrap()
        };
        let (q, f) = (logits(WeightMode::Quantized), logits(WeightMode::F32));
        assert_eq!(q.len(), 8);
        // The Q8_0 token embedding is still quantized in one mode and not the other.
        for (a, b) in q.iter().zip(&f) {
            assert!(
                (a - b).abs() < 0.05 * (1.0 + b.abs()),
                "{dtype:?}: {q:?} vs {f:?}"
            );
        }
    }
}
