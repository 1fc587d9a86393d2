//! Tokenizers built from GGUF metadata, token for token as llama.cpp's `llama-vocab.cpp` builds them.
//!
//! Two vocabulary kinds are supported, chosen by `tokenizer.ggml.model`:
//!
//! * `gpt2`: byte-level BPE (SmolLM2, GPT-2, StarCoder, …). Text is pre-tokenized by the pattern that
//!   `tokenizer.ggml.pre` names, each piece is mapped byte by byte onto printable code points (the GPT-2
//!   byte encoder), and adjacent symbols are merged greedily by merge rank from `tokenizer.ggml.merges`
//!   (lowest rank first, leftmost first on ties).
//! * `llama`: SentencePiece-style vocabulary with scores (Gemma, Llama 2, …). Spaces become `▁`, the
//!   text is split into UTF-8 characters, adjacent symbols are merged while their concatenation is a
//!   token (highest score first, leftmost first on ties), and characters that never form a token fall
//!   back to the `<0xXX>` byte tokens.
//!
//! Before either runs, the text is partitioned on special tokens exactly as llama.cpp does: every
//! token whose `tokenizer.ggml.token_type` is control (3), user-defined (4) or unknown (2) is searched
//! for verbatim, longest token text first, and each occurrence becomes that token's id. Control and
//! unknown tokens are matched only when special parsing is on ([`Tokenizer::encode`] turns it on,
//! so `<|im_start|>` written in a prompt becomes id 1 for SmolLM2); user-defined tokens (Gemma's runs
//! of spaces, newlines and tabs, its HTML tags) are always matched.
//!
//! Not reproduced: per-token `lstrip`/`rstrip` attributes that llama.cpp hard-codes for a few model
//! names (none of them SmolLM2 or Gemma), and pre-tokenizers other than the GPT-2 family.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use candle_core::quantized::gguf_file::{Content, Value};
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Errors building a tokenizer from GGUF metadata. Each names the metadata key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey { key: &'static str },
    #[error("GGUF metadata key `{key}` has type {got}, expected {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("GGUF metadata key `{key}`[{index}] has type {got}, expected {expected}")]
    WrongElementType {
        key: &'static str,
        index: usize,
        expected: &'static str,
        got: String,
    },
    #[error(
        "GGUF metadata key `{key}` has {got} entries, but `tokenizer.ggml.tokens` has {expected}"
    )]
    LengthMismatch {
        key: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("GGUF metadata key `tokenizer.ggml.tokens` is empty")]
    EmptyVocabulary,
    #[error("unsupported tokenizer model `{0}` (tokenizer.ggml.model); supported: gpt2, llama")]
    UnsupportedModel(String),
    #[error(
        "unsupported pre-tokenizer `{0}` (tokenizer.ggml.pre) for a byte-level BPE vocabulary; \
         supported: smollm, starcoder, refact, command-r, codeshell, exaone, minerva, gpt2, mpt, olmo, jais"
    )]
    UnsupportedPreTokenizer(String),
    #[error("GGUF metadata key `{key}` = {id} is outside the vocabulary of {vocab} tokens")]
    IdOutOfRange {
        key: &'static str,
        id: i128,
        vocab: usize,
    },
    #[error("`tokenizer.ggml.merges`[{index}] = {merge:?} is not of the form `left right`")]
    BadMerge { index: usize, merge: String },
    #[error("the vocabulary lacks the byte-fallback token `{piece}`")]
    MissingByteToken { piece: String },
    #[error("`{flag}` is set but the model has no `{key}`")]
    MissingSpecialToken {
        flag: &'static str,
        key: &'static str,
    },
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    UnknownId { id: u32, vocab: usize },
}

/// The kind of a vocabulary entry, from `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// 1: an ordinary piece of text.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a control token such as `<|im_start|>` or `<bos>`; matched in text only with special parsing.
    Control,
    /// 4: a user-defined token, always matched verbatim in text.
    UserDefined,
    /// 5: an unused slot; never produced by encoding, decodes to nothing.
    Unused,
    /// 6: a byte-fallback token `<0xXX>`.
    Byte,
    /// 0 or anything else.
    Undefined,
}

impl TokenType {
    fn from_gguf(v: i64) -> Self {
        match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }

    /// Whether text containing this token verbatim is partitioned on it (with special parsing on).
    fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::UserDefined | Self::Unknown)
    }
}

/// Token texts that llama.cpp treats as end of generation when they are in the vocabulary.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
];

/// A tokenizer reproducing llama.cpp's for the vocabulary stored in a GGUF file.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle_core::quantized::gguf_file::Content;
/// let mut f = std::fs::File::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let content = Content::read(&mut f)?;
/// let tok = lm_runtime::tokenizer::Tokenizer::from_gguf(&content)?;
/// let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", true);
/// assert_eq!(ids[0], 1); // the control token, matched verbatim
/// assert_eq!(tok.decode(&ids), "<|im_start|>user\nHi<|im_end|>");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    model: Model,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    token_to_id: HashMap<String, u32>,
    /// Ids of the control, user-defined and unknown tokens, longest text first (llama.cpp's
    /// `cache_special_tokens`, whose order decides which of two overlapping specials wins).
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    end_of_generation: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

/// A summary: the vocabulary itself (up to 262 144 strings) is not printed.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.model {
            Model::Bpe { ranks, pre } => {
                format!("byte-level BPE ({} merges, {pre:?})", ranks.len())
            }
            Model::Spm { .. } => "SentencePiece (scores, byte fallback)".to_owned(),
        };
        f.debug_struct("Tokenizer")
            .field("kind", &kind)
            .field("vocab_size", &self.tokens.len())
            .field("special_tokens", &self.specials.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish()
    }
}

#[derive(Clone)]
enum Model {
    /// Byte-level BPE: merge ranks keyed by (left, right) symbol text.
    Bpe {
        ranks: HashMap<(String, String), u32>,
        pre: PreTokenizer,
    },
    /// SentencePiece-style: one score per token; `byte_tokens[b]` is the id of `<0xXX>`.
    Spm {
        scores: Vec<f32>,
        byte_tokens: Box<[u32; 256]>,
    },
}

/// The pre-tokenizer families llama.cpp implements for byte-level BPE vocabularies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreTokenizer {
    /// `\p{N}` isolated first, then the GPT-2 pattern (llama.cpp's `smollm`, `starcoder`, …).
    DigitsThenGpt2,
    /// The GPT-2 pattern alone.
    Gpt2,
}

impl Tokenizer {
    /// Builds the tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file.
    ///
    /// # Errors
    /// A [`TokenizerError`] naming the key when a required key is missing or mistyped, an id is out
    /// of range, a merge is malformed, or the model / pre-tokenizer kind is not supported.
    pub fn from_gguf(content: &Content) -> Result<Self, TokenizerError> {
        let md = &content.metadata;
        let model_name = req_string(md, "tokenizer.ggml.model")?;
        let tokens =
            string_array(md, "tokenizer.ggml.tokens")?.ok_or(TokenizerError::MissingKey {
                key: "tokenizer.ggml.tokens",
            })?;
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocabulary);
        }
        let n = tokens.len();
        let types = match md.get("tokenizer.ggml.token_type") {
            None => vec![TokenType::Normal; n],
            Some(v) => {
                let arr = array(v, "tokenizer.ggml.token_type")?;
                check_len("tokenizer.ggml.token_type", n, arr.len())?;
                arr.iter()
                    .enumerate()
                    .map(|(i, x)| {
                        int_of(x).map(TokenType::from_gguf).ok_or_else(|| {
                            TokenizerError::WrongElementType {
                                key: "tokenizer.ggml.token_type",
                                index: i,
                                expected: "integer",
                                got: type_name(x),
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };

        // Later duplicates win, as in llama.cpp's `token_to_id[word] = i`.
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            token_to_id.insert(t.clone(), i as u32);
        }

        let (model, default_add_bos, default_space_prefix) = match model_name {
            "gpt2" => {
                let pre_name = opt_string(md, "tokenizer.ggml.pre")?.unwrap_or("default");
                let pre = match pre_name {
                    "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
                    | "minerva" => PreTokenizer::DigitsThenGpt2,
                    "gpt2" | "mpt" | "olmo" | "jais" => PreTokenizer::Gpt2,
                    other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_owned())),
                };
                let merges = string_array(md, "tokenizer.ggml.merges")?.ok_or(
                    TokenizerError::MissingKey {
                        key: "tokenizer.ggml.merges",
                    },
                )?;
                let mut ranks = HashMap::with_capacity(merges.len());
                for (i, m) in merges.iter().enumerate() {
                    // llama.cpp splits at the first space after the first byte.
                    let split = m
                        .as_bytes()
                        .iter()
                        .skip(1)
                        .position(|&b| b == b' ')
                        .map(|p| p + 1)
                        .ok_or_else(|| TokenizerError::BadMerge {
                            index: i,
                            merge: m.clone(),
                        })?;
                    let (left, right) = (&m[..split], &m[split + 1..]);
                    ranks.insert((left.to_owned(), right.to_owned()), i as u32);
                }
                (Model::Bpe { ranks, pre }, false, false)
            }
            "llama" => {
                let scores = match md.get("tokenizer.ggml.scores") {
                    None => vec![0.0; n],
                    Some(v) => {
                        let arr = array(v, "tokenizer.ggml.scores")?;
                        check_len("tokenizer.ggml.scores", n, arr.len())?;
                        arr.iter()
                            .enumerate()
                            .map(|(i, x)| match x {
                                Value::F32(s) => Ok(*s),
                                Value::F64(s) => Ok(*s as f32),
                                other => Err(TokenizerError::WrongElementType {
                                    key: "tokenizer.ggml.scores",
                                    index: i,
                                    expected: "f32",
                                    got: type_name(other),
                                }),
                            })
                            .collect::<Result<Vec<_>, _>>()?
                    }
                };
                let mut byte_tokens = Box::new([0u32; 256]);
                for (b, slot) in byte_tokens.iter_mut().enumerate() {
                    let piece = format!("<0x{b:02X}>");
                    *slot = match token_to_id.get(&piece) {
                        Some(&id) => id,
                        None => return Err(TokenizerError::MissingByteToken { piece }),
                    };
                }
                (
                    Model::Spm {
                        scores,
                        byte_tokens,
                    },
                    true,
                    true,
                )
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        };

        let bos = opt_id(md, "tokenizer.ggml.bos_token_id", n)?;
        let eos = opt_id(md, "tokenizer.ggml.eos_token_id", n)?;
        let eot = opt_id(md, "tokenizer.ggml.eot_token_id", n)?;
        let add_bos = opt_bool(md, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let add_eos = opt_bool(md, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let add_space_prefix =
            opt_bool(md, "tokenizer.ggml.add_space_prefix")?.unwrap_or(default_space_prefix);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                flag: "tokenizer.ggml.add_bos_token",
                key: "tokenizer.ggml.bos_token_id",
            });
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                flag: "tokenizer.ggml.add_eos_token",
                key: "tokenizer.ggml.eos_token_id",
            });
        }

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&id| types[id as usize].is_special())
            .collect();
        // Stable sort: equal lengths keep id order.
        specials.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()));

        let mut end_of_generation: Vec<u32> = eos.into_iter().chain(eot).collect();
        for text in END_OF_GENERATION_TEXTS {
            if let Some(&id) = token_to_id.get(*text) {
                if types[id as usize] == TokenType::Control || Some(id) == eos {
                    end_of_generation.push(id);
                }
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        Ok(Self {
            model,
            tokens,
            types,
            token_to_id,
            specials,
            bos,
            eos,
            end_of_generation,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    /// Encodes `text` with special parsing on: control tokens written in the text become their ids.
    /// With `add_special`, BOS / EOS are added as the model's metadata asks
    /// (`tokenizer.ggml.add_bos_token`: no for SmolLM2, yes for Gemma).
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_with(text, add_special, true)
    }

    /// Encodes `text`; `parse_special` decides whether control tokens written in the text are
    /// matched (user-defined tokens always are), as llama.cpp's `llama_tokenize` does.
    pub fn encode_with(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.model {
            Model::Bpe { ranks, pre } => {
                for f in &fragments {
                    match *f {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => self.bpe_fragment(t, ranks, *pre, &mut out),
                    }
                }
            }
            Model::Spm {
                scores,
                byte_tokens,
            } => {
                let mut prev_special = true;
                for f in &fragments {
                    match *f {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(t) => {
                            let mut s = String::with_capacity(t.len() + 3);
                            if self.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            let escaped = s.replace(' ', "\u{2581}");
                            self.spm_fragment(&escaped, scores, byte_tokens, &mut out);
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Decodes ids to text, special tokens written out (`<|im_end|>`), byte tokens reassembled;
    /// invalid UTF-8 (a sequence cut inside a character) is replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// Decodes ids to raw bytes (llama.cpp's `llama_detokenize` with special tokens rendered).
    /// Ids outside the vocabulary contribute nothing.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut strip_space = self.add_space_prefix;
        for &id in ids {
            let start = out.len();
            self.append_piece_bytes(id, &mut out);
            if strip_space && out.get(start) == Some(&b' ') {
                out.remove(start);
            }
            strip_space = false;
        }
        out
    }

    /// The bytes one token stands for in decoded text.
    pub fn piece_bytes(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_piece_bytes(id, &mut out);
        out
    }

    /// The vocabulary entries (SentencePiece "pieces") of `ids`, as stored in the GGUF file:
    /// `Ġworld` for byte-level BPE, `▁world` for SentencePiece.
    ///
    /// # Errors
    /// [`TokenizerError::UnknownId`] for an id outside the vocabulary.
    pub fn pieces(&self, ids: &[u32]) -> Result<Vec<&str>, TokenizerError> {
        ids.iter()
            .map(|&id| {
                self.tokens
                    .get(id as usize)
                    .map(String::as_str)
                    .ok_or(TokenizerError::UnknownId {
                        id,
                        vocab: self.tokens.len(),
                    })
            })
            .collect()
    }

    /// The id of a vocabulary entry, by its stored text (`<|im_start|>`, `Ġworld`, `▁world`).
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.token_to_id.get(piece).copied()
    }

    /// The stored text of a token, or `None` outside the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The kind of a token, or `None` outside the vocabulary.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Vocabulary size (the length of `tokenizer.ggml.tokens`).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// `tokenizer.ggml.bos_token_id`.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether [`encode`](Self::encode) with `add_special` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Tokens that end generation, sorted: EOS, `tokenizer.ggml.eot_token_id`, and the control
    /// tokens llama.cpp recognises by text (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, …).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// Whether this is a byte-level BPE (`gpt2`) vocabulary rather than a SentencePiece one.
    pub fn is_byte_level(&self) -> bool {
        matches!(self.model, Model::Bpe { .. })
    }

    fn append_piece_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let (Some(text), Some(ty)) = (self.tokens.get(id as usize), self.types.get(id as usize))
        else {
            return;
        };
        match ty {
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => {
                out.extend_from_slice(text.as_bytes())
            }
            TokenType::Normal => match &self.model {
                Model::Bpe { .. } => {
                    for c in text.chars() {
                        match byte_of_char(c) {
                            Some(b) => out.push(b),
                            // Not a byte-level code point: keep it as is rather than lose it.
                            None => {
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                }
                Model::Spm { .. } => {
                    out.extend_from_slice(text.replace('\u{2581}', " ").as_bytes())
                }
            },
            TokenType::Byte => {
                if let Some(b) = parse_byte_token(text) {
                    out.push(b);
                }
            }
            TokenType::Unused | TokenType::Undefined => {}
        }
    }

    /// Splits `text` on special tokens (llama.cpp's `tokenizer_st_partition`): for each special
    /// token, longest first, every occurrence inside the remaining text fragments is cut out.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(text));
        for &id in &self.specials {
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if needle.is_empty() {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            let mut changed = false;
            for f in frags.iter().copied() {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(p) = rest.find(needle) {
                    changed = true;
                    if p > 0 {
                        next.push(Fragment::Text(&rest[..p]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[p + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            if changed {
                frags = next;
            }
        }
        frags
    }

    /// Byte-level BPE of one text fragment (llama.cpp's `llm_tokenizer_bpe_session::tokenize`).
    fn bpe_fragment(
        &self,
        text: &str,
        ranks: &HashMap<(String, String), u32>,
        pre: PreTokenizer,
        out: &mut Vec<u32>,
    ) {
        for word in pre_tokenize(text, pre) {
            let encoded: String = word.bytes().map(char_of_byte).collect();
            for sym in bpe_merge(&encoded, ranks) {
                match self.token_to_id.get(sym) {
                    Some(&id) => out.push(id),
                    None => {
                        // llama.cpp falls back to single-byte tokens and skips bytes it cannot find.
                        for b in sym.bytes() {
                            if let Ok(s) = std::str::from_utf8(&[b]) {
                                if let Some(&id) = self.token_to_id.get(s) {
                                    out.push(id);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// SentencePiece-style merging of one escaped fragment (llama.cpp's `llm_tokenizer_spm_session`).
    fn spm_fragment(
        &self,
        text: &str,
        scores: &[f32],
        byte_tokens: &[u32; 256],
        out: &mut Vec<u32>,
    ) {
        let mut syms = char_symbols(text);
        let mut queue = BinaryHeap::new();
        let try_add =
            |syms: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<SpmBigram>| {
                let (l, r) = (&syms[left], &syms[right]);
                let merged = &text[l.start..r.start + r.len];
                if let Some(&id) = self.token_to_id.get(merged) {
                    queue.push(SpmBigram {
                        score: scores[id as usize],
                        left,
                        right,
                        size: merged.len(),
                    });
                }
            };
        for i in 1..syms.len() {
            try_add(&syms, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (&syms[b.left], &syms[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            merge_right_into_left(&mut syms, b.left, b.right);
            if let Some(p) = syms[b.left].prev {
                try_add(&syms, p, b.left, &mut queue);
            }
            if let Some(nx) = syms[b.left].next {
                try_add(&syms, b.left, nx, &mut queue);
            }
        }
        let mut i = if syms.is_empty() { None } else { Some(0) };
        while let Some(k) = i {
            let s = &syms[k];
            let piece = &text[s.start..s.start + s.len];
            match self.token_to_id.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().map(|b| byte_tokens[b as usize])),
            }
            i = s.next;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A run of the word being merged: `text[start..start + len]`, linked to its live neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

fn char_symbols(text: &str) -> Vec<Symbol> {
    let n = text.chars().count();
    text.char_indices()
        .enumerate()
        .map(|(i, (start, c))| Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: (i + 1 < n).then_some(i + 1),
        })
        .collect()
}

fn merge_right_into_left(syms: &mut [Symbol], left: usize, right: usize) {
    let r = syms[right];
    syms[left].len += r.len;
    syms[right].len = 0;
    syms[left].next = r.next;
    if let Some(nx) = r.next {
        syms[nx].prev = Some(left);
    }
}

/// SentencePiece candidate merge: highest score first, then leftmost.
#[derive(Debug)]
struct SpmBigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for SpmBigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for SpmBigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for SpmBigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for SpmBigram {}

/// BPE candidate merge: lowest rank first, then leftmost. Stale entries are recognised by the
/// symbol lengths they were made for.
#[derive(Debug, PartialEq, Eq)]
struct BpeBigram {
    rank: u32,
    left: usize,
    right: usize,
    left_len: usize,
    right_len: usize,
}

impl Ord for BpeBigram {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for BpeBigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Merges the characters of one byte-encoded word by rank; returns the final symbols in order.
fn bpe_merge<'w>(word: &'w str, ranks: &HashMap<(String, String), u32>) -> Vec<&'w str> {
    let mut syms = char_symbols(word);
    let mut queue = BinaryHeap::new();
    let mut key = (String::new(), String::new());
    let mut try_add =
        |syms: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<BpeBigram>| {
            let (l, r) = (syms[left], syms[right]);
            key.0.clear();
            key.0.push_str(&word[l.start..l.start + l.len]);
            key.1.clear();
            key.1.push_str(&word[r.start..r.start + r.len]);
            if let Some(&rank) = ranks.get(&key) {
                queue.push(BpeBigram {
                    rank,
                    left,
                    right,
                    left_len: l.len,
                    right_len: r.len,
                });
            }
        };
    for i in 1..syms.len() {
        try_add(&syms, i - 1, i, &mut queue);
    }
    while let Some(b) = queue.pop() {
        if syms[b.left].len != b.left_len || syms[b.right].len != b.right_len {
            continue;
        }
        merge_right_into_left(&mut syms, b.left, b.right);
        if let Some(p) = syms[b.left].prev {
            try_add(&syms, p, b.left, &mut queue);
        }
        if let Some(nx) = syms[b.left].next {
            try_add(&syms, b.left, nx, &mut queue);
        }
    }
    syms.iter()
        .filter(|s| s.len > 0)
        .map(|s| &word[s.start..s.start + s.len])
        .collect()
}

/// Splits a text fragment into words as llama.cpp's `unicode_regex_split` does for `pre`.
fn pre_tokenize(text: &str, pre: PreTokenizer) -> Vec<&str> {
    let mut words = Vec::new();
    match pre {
        PreTokenizer::Gpt2 => split_gpt2(text, &mut words),
        PreTokenizer::DigitsThenGpt2 => {
            // Stage 1, pattern `\p{N}`: every numeric code point is its own piece; the runs between
            // them are pieces too. Stage 2 runs on each piece separately, so no word spans a digit.
            let mut last = 0;
            for (i, c) in text.char_indices() {
                if is_number(c) {
                    if i > last {
                        split_gpt2(&text[last..i], &mut words);
                    }
                    split_gpt2(&text[i..i + c.len_utf8()], &mut words);
                    last = i + c.len_utf8();
                }
            }
            if last < text.len() {
                split_gpt2(&text[last..], &mut words);
            }
        }
    }
    words
}

/// The GPT-2 pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// written out as llama.cpp's `unicode_regex_split_custom_gpt2` does (the lookahead included;
/// code points without any Unicode category become single-character words there, and here).
fn split_gpt2<'a>(text: &'a str, words: &mut Vec<&'a str>) {
    let cs: Vec<(usize, char)> = text.char_indices().collect();
    let n = cs.len();
    let at = |i: usize| cs.get(i).map(|&(_, c)| c);
    let byte_at = |i: usize| cs.get(i).map_or(text.len(), |&(b, _)| b);
    let class = |i: usize| at(i).map(Class::of);
    let mut pos = 0;
    let mut start = 0;
    while pos < n {
        let c = cs[pos].1;
        let cls = Class::of(c);
        // 's|'t|'re|'ve|'m|'ll|'d
        if c == '\'' && pos + 1 < n {
            let c1 = cs[pos + 1].1;
            if matches!(c1, 's' | 't' | 'm' | 'd') {
                pos += 2;
                words.push(&text[byte_at(start)..byte_at(pos)]);
                start = pos;
                continue;
            }
            if pos + 2 < n {
                let c2 = cs[pos + 2].1;
                if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    pos += 3;
                    words.push(&text[byte_at(start)..byte_at(pos)]);
                    start = pos;
                    continue;
                }
            }
        }
        // The class after an optional leading space.
        let cls2 = if c == ' ' { class(pos + 1) } else { Some(cls) };
        let run = |pos: &mut usize, pred: &dyn Fn(Class) -> bool| {
            *pos += usize::from(c == ' ');
            while class(*pos).is_some_and(pred) {
                *pos += 1;
            }
        };
        match cls2 {
            // ` ?\p{L}+`
            Some(Class::Letter) => run(&mut pos, &|k| k == Class::Letter),
            // ` ?\p{N}+`
            Some(Class::Number) => run(&mut pos, &|k| k == Class::Number),
            // ` ?[^\s\p{L}\p{N}]+`
            Some(Class::Other) => run(&mut pos, &|k| k == Class::Other),
            _ => {
                let mut ws = 0;
                while class(pos + ws) == Some(Class::Space) {
                    ws += 1;
                }
                if ws > 1 && pos + ws < n {
                    // `\s+(?!\S)`: all but the last whitespace when something follows.
                    pos += ws - 1;
                } else if ws > 0 {
                    // `\s+`
                    pos += ws;
                } else {
                    // No alternative matches (an unassigned code point): one character alone.
                    pos += 1;
                }
            }
        }
        words.push(&text[byte_at(start)..byte_at(pos)]);
        start = pos;
    }
}

/// The character classes the GPT-2 pattern distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    /// Neither letter, number nor whitespace, but an assigned code point.
    Other,
    /// No Unicode category (llama.cpp's `is_undefined`).
    Undefined,
}

impl Class {
    fn of(c: char) -> Self {
        if c.is_whitespace() {
            return Self::Space;
        }
        match c.general_category_group() {
            GeneralCategoryGroup::Letter => Self::Letter,
            GeneralCategoryGroup::Number => Self::Number,
            _ if c.general_category() == GeneralCategory::Unassigned => Self::Undefined,
            _ => Self::Other,
        }
    }
}

fn is_number(c: char) -> bool {
    c.general_category_group() == GeneralCategoryGroup::Number
}

/// GPT-2's byte encoder: printable bytes map to themselves, the other 68 to U+0100 onwards in order.
fn char_of_byte(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Inverse of [`char_of_byte`].
fn byte_of_char(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        256..=323 => {
            let rank = (cp - 256) as usize;
            (0u8..=255)
                .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
                .nth(rank)
        }
        _ => None,
    }
}

fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

// ---- GGUF metadata access, every failure naming its key ----

type Metadata = HashMap<String, Value>;

fn type_name(v: &Value) -> String {
    format!("{:?}", v.value_type())
}

fn array<'a>(v: &'a Value, key: &'static str) -> Result<&'a [Value], TokenizerError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(TokenizerError::WrongType {
            key,
            expected: "array",
            got: type_name(other),
        }),
    }
}

fn check_len(key: &'static str, expected: usize, got: usize) -> Result<(), TokenizerError> {
    if expected == got {
        Ok(())
    } else {
        Err(TokenizerError::LengthMismatch { key, expected, got })
    }
}

fn string_array(md: &Metadata, key: &'static str) -> Result<Option<Vec<String>>, TokenizerError> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    array(v, key)?
        .iter()
        .enumerate()
        .map(|(i, x)| match x {
            Value::String(s) => Ok(s.clone()),
            other => Err(TokenizerError::WrongElementType {
                key,
                index: i,
                expected: "string",
                got: type_name(other),
            }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn opt_string<'a>(md: &'a Metadata, key: &'static str) -> Result<Option<&'a str>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(TokenizerError::WrongType {
            key,
            expected: "string",
            got: type_name(other),
        }),
    }
}

fn req_string<'a>(md: &'a Metadata, key: &'static str) -> Result<&'a str, TokenizerError> {
    opt_string(md, key)?.ok_or(TokenizerError::MissingKey { key })
}

fn opt_bool(md: &Metadata, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(TokenizerError::WrongType {
            key,
            expected: "bool",
            got: type_name(other),
        }),
    }
}

fn int_of(v: &Value) -> Option<i64> {
    Some(match *v {
        Value::U8(x) => x.into(),
        Value::I8(x) => x.into(),
        Value::U16(x) => x.into(),
        Value::I16(x) => x.into(),
        Value::U32(x) => x.into(),
        Value::I32(x) => x.into(),
        Value::U64(x) => i64::try_from(x).ok()?,
        Value::I64(x) => x,
        _ => return None,
    })
}

/// An optional token id; llama.cpp stores "none" as -1 in some converters, taken as absent here.
fn opt_id(md: &Metadata, key: &'static str, vocab: usize) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let id = int_of(v).ok_or_else(|| TokenizerError::WrongType {
        key,
        expected: "integer",
        got: type_name(v),
    })?;
    if id == -1 {
        return Ok(None);
    }
    match usize::try_from(id) {
        Ok(u) if u < vocab => Ok(Some(u as u32)),
        _ => Err(TokenizerError::IdOutOfRange {
            key,
            id: id.into(),
            vocab,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_encoder_is_a_bijection() {
        let chars: Vec<char> = (0..=255u8).map(char_of_byte).collect();
        let mut sorted = chars.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(byte_of_char(char_of_byte(b)), Some(b));
        }
        assert_eq!(char_of_byte(b' '), 'Ġ');
        assert_eq!(char_of_byte(b'\n'), 'Ċ');
    }

    #[test]
    fn gpt2_split_matches_the_pattern() {
        let mut w = Vec::new();
        split_gpt2("Hello  world's 12  \n x!!", &mut w);
        assert_eq!(w, ["Hello", " ", " world", "'s", " 12", "  \n", " x", "!!"]);
        let mut w = Vec::new();
        split_gpt2("a\nb   ", &mut w);
        assert_eq!(w, ["a", "\n", "b", "   "]);
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(
            pre_tokenize("abc 123x", PreTokenizer::DigitsThenGpt2),
            ["abc", " ", "1", "2", "3", "x"]
        );
    }
}
