//! The tokenizer on small vocabularies built in memory: merge priority, digit isolation, special
//! tokens, byte fallback, BOS, round trips, and errors that name the metadata key at fault.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};
use lm_runtime::tokenizer::{Tokenizer, TokenizerError};

fn content(md: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: md
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<HashMap<_, _>>(),
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

fn strs(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

/// GPT-2 byte encoder, written independently of the crate: printable bytes map to themselves.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        b as char
    } else {
        char::from_u32(256 + (0..b).filter(|&x| !printable(x)).count() as u32).unwrap()
    }
}

/// A byte-level BPE vocabulary: id 0 `<|im_start|>` (control), ids 1..=256 the byte symbols, then
/// the merge results in merge order.
fn bpe(pre: &str, merges: &[&str]) -> (Tokenizer, HashMap<String, u32>) {
    let mut tokens = vec!["<|im_start|>".to_owned()];
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    for m in merges {
        let merged = m.replacen(' ', "", 1);
        if !tokens.contains(&merged) {
            tokens.push(merged);
        }
    }
    let mut types = vec![Value::I32(3)];
    types.extend(std::iter::repeat(Value::I32(1)).take(tokens.len() - 1));
    let ids = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<String> = merges.iter().map(|s| s.to_string()).collect();
    let c = content(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strs(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", strs(&merges)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ]);
    (Tokenizer::from_gguf(&c).unwrap(), ids)
}

fn pieces(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    tok.pieces(ids)
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bpe_applies_the_lowest_rank_merge_first() {
    let (tok, _) = bpe("smollm", &["b c", "a b"]);
    assert_eq!(pieces(&tok, &tok.encode("abc", false)), ["a", "bc"]);
    let (tok, _) = bpe("smollm", &["a b", "b c"]);
    assert_eq!(pieces(&tok, &tok.encode("abc", false)), ["ab", "c"]);
}

#[test]
fn bpe_merges_chain_into_whole_words() {
    let (tok, ids) = bpe("smollm", &["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]);
    assert_eq!(tok.encode("hello", false), [ids["hello"]]);
    assert_eq!(
        pieces(&tok, &tok.encode("hello wo", false)),
        ["hello", "Ġwo"]
    );
}

#[test]
fn smollm_isolates_digits_but_gpt2_does_not() {
    let merges = ["Ġ 1", "Ġ1 2", "1 2"];
    let (smol, _) = bpe("smollm", &merges);
    assert_eq!(
        pieces(&smol, &smol.encode("a 12", false)),
        ["a", "Ġ", "1", "2"]
    );
    let (gpt2, _) = bpe("gpt2", &merges);
    assert_eq!(pieces(&gpt2, &gpt2.encode("a 12", false)), ["a", "Ġ12"]);
}

#[test]
fn control_tokens_are_matched_only_with_special_parsing() {
    let (tok, ids) = bpe("smollm", &["h i"]);
    assert_eq!(tok.encode("<|im_start|>hi", false), [0, ids["hi"]]);
    let plain = tok.encode_with("<|im_start|>hi", false, false);
    assert_eq!(plain.len(), "<|im_start|>".len() + 1);
    assert!(!plain.contains(&0));
    assert_eq!(tok.decode(&plain), "<|im_start|>hi");
}

#[test]
fn bpe_round_trips_arbitrary_text() {
    let (tok, _) = bpe("smollm", &["h e", "Ġ w"]);
    for text in [
        "",
        " ",
        "héllo wörld\n\n\t  x",
        "🚀 e\u{301} 東京 ١٢٣",
        "a\r\nb\u{a0}c",
    ] {
        assert_eq!(tok.decode(&tok.encode(text, true)), text, "{text:?}");
    }
}

/// A SentencePiece-style vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens, then scored pieces.
fn spm(pieces: &[(&str, f32)], add_space_prefix: bool) -> (Tokenizer, HashMap<String, u32>) {
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
    let mut scores = vec![Value::F32(0.0); 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(Value::I32(6));
        scores.push(Value::F32(0.0));
    }
    for (p, s) in pieces {
        tokens.push((*p).to_owned());
        types.push(Value::I32(1));
        scores.push(Value::F32(*s));
    }
    let ids = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let c = content(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strs(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.scores", Value::Array(scores)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        (
            "tokenizer.ggml.add_space_prefix",
            Value::Bool(add_space_prefix),
        ),
    ]);
    (Tokenizer::from_gguf(&c).unwrap(), ids)
}

#[test]
fn spm_merges_by_score_and_adds_bos() {
    let base = [
        ("▁", -5.0),
        ("a", -3.0),
        ("b", -3.0),
        ("ab", -1.0),
        ("▁a", -0.5),
    ];
    // "▁a" (score -0.5) beats "ab" (-1); then "▁a"+"b" = "▁ab" merges only if it is a piece.
    let (tok, _) = spm(&base, false);
    assert_eq!(pieces(&tok, &tok.encode(" ab", true)), ["<s>", "▁a", "b"]);
    let mut with = base.to_vec();
    with.push(("▁ab", -9.0));
    let (tok, _) = spm(&with, false);
    assert_eq!(pieces(&tok, &tok.encode(" ab", true)), ["<s>", "▁ab"]);
    assert_eq!(tok.decode(&tok.encode(" ab", false)), " ab");
}

#[test]
fn spm_falls_back_to_bytes_and_strips_the_space_prefix_on_decode() {
    let (tok, ids) = spm(&[("▁", -5.0), ("a", -3.0), ("▁a", -1.0)], true);
    let got = tok.encode("aé", false);
    // add_space_prefix: "aé" becomes "▁aé"; "é" is not a piece, so its two UTF-8 bytes are used.
    assert_eq!(got, [ids["▁a"], ids["<0xC3>"], ids["<0xA9>"]]);
    assert_eq!(tok.decode(&got), "aé");
    assert_eq!(tok.encode("a</s>", true), [1, ids["▁a"], 2]);
}

fn err(md: Vec<(&str, Value)>) -> TokenizerError {
    Tokenizer::from_gguf(&content(md)).unwrap_err()
}

#[test]
fn bad_metadata_names_the_key() {
    let toks = strs(&["a".into(), "b".into()]);
    let e = err(vec![("tokenizer.ggml.tokens", toks.clone())]);
    assert!(e.to_string().contains("tokenizer.ggml.model"), "{e}");

    let e = err(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", toks.clone()),
    ]);
    assert!(e.to_string().contains("tokenizer.ggml.merges"), "{e}");

    let e = err(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("qwen2".into())),
        ("tokenizer.ggml.tokens", toks.clone()),
        ("tokenizer.ggml.merges", strs(&[])),
    ]);
    assert!(
        matches!(e, TokenizerError::UnsupportedPreTokenizer(_)),
        "{e}"
    );

    let e = err(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", toks.clone()),
        ("tokenizer.ggml.pre", Value::String("gpt2".into())),
        ("tokenizer.ggml.merges", strs(&["ab".into()])),
    ]);
    assert!(
        matches!(e, TokenizerError::BadMerge { index: 0, .. }),
        "{e}"
    );

    let e = err(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", toks.clone()),
        ("tokenizer.ggml.merges", strs(&[])),
        (
            "tokenizer.ggml.token_type",
            Value::Array(vec![Value::I32(1)]),
        ),
    ]);
    assert!(e.to_string().contains("tokenizer.ggml.token_type"), "{e}");

    let e = err(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", toks.clone()),
        ("tokenizer.ggml.merges", strs(&[])),
        ("tokenizer.ggml.bos_token_id", Value::U32(7)),
    ]);
    assert!(e.to_string().contains("tokenizer.ggml.bos_token_id"), "{e}");

    let e = err(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", toks),
    ]);
    assert!(matches!(e, TokenizerError::MissingByteToken { .. }), "{e}");

    let e = err(vec![
        ("tokenizer.ggml.model", Value::String("bert".into())),
        ("tokenizer.ggml.tokens", Value::U32(3)),
    ]);
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
}
