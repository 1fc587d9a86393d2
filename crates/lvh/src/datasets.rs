//! Contrast sets and preference sets (MEASURE §2): streaming loaders, the dev/heldout split,
//! balanced subsampling, and the sets bundled with lvh.
//!
//! * **Contrast** rows carry a value label: `harmless` (+1) or `harmful` (−1).
//!   JSONL: `{"text", "label"}` with `label` one of `"harmless"`, `"harmful"`, `"+1"`, `"1"`,
//!   `"-1"`, `"−1"`, `1`, `-1`; the optional fields `dimension`, `pair`, `source`, `category`
//!   (string or null) are kept, any other field is ignored. CSV: a text column named by the
//!   user and either a fixed label for every row (AdvBench-style files) or a label column.
//! * **Preference** rows: TRL `{"prompt", "chosen", "rejected"}` (+ optional `kind`
//!   `"clear"|"subtle"`, `dimension`, `source`, `source_line`), or HH-RLHF transcripts
//!   `{"chosen", "rejected"}` split at the last `"\n\nAssistant:"`: the shared prefix, marker
//!   included, is the prompt, the rest (whitespace trimmed) the responses. A row whose two
//!   prefixes differ is refused. The format is chosen per row: a `prompt` field means TRL.
//!
//! Every loader streams (one line in memory at a time) and every error names the file and
//! the 1-based line.
//!
//! **Split** (the convention of the shared validation data):
//! `heldout ⇔ int(sha256(key), 16) mod 5 = 0` (about 20 %), with the key `pair` if set, else
//! `text`, for contrast rows and `prompt` for preference pairs, so twins and pairs that share
//! a prompt always land on the same side.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The contrast set written for lvh (see `data/README.md`), embedded at build time.
pub const BUNDLED_CONTRAST_JSONL: &str = include_str!("../../../data/contrast.jsonl");
/// The preference set written for lvh (see `data/README.md`), embedded at build time.
pub const BUNDLED_PREFERENCES_JSONL: &str = include_str!("../../../data/preferences.jsonl");

/// The HH-RLHF marker before each assistant turn.
pub const HH_ASSISTANT_MARKER: &str = "\n\nAssistant:";

/// Errors from reading datasets. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A row that cannot be used, with its 1-based line number.
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// A CSV problem that is not tied to one row (missing header, unknown column).
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: no rows")]
    Empty { path: PathBuf },
    #[error("balanced subsample: {0}")]
    Subsample(String),
}

/// The value label of a contrast row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// The positive class, u* = +1.
    Harmless,
    /// The negative class, u* = −1.
    Harmful,
}

impl Label {
    /// `+1.0` for harmless, `−1.0` for harmful (MEASURE §2).
    pub fn sign(self) -> f64 {
        match self {
            Label::Harmless => 1.0,
            Label::Harmful => -1.0,
        }
    }

    /// Parses `harmless`/`harmful` (any case) or `+1`/`1`/`-1`/`−1`.
    pub fn parse(s: &str) -> Option<Label> {
        match s.trim().to_ascii_lowercase().as_str() {
            "harmless" | "+1" | "1" => Some(Label::Harmless),
            "harmful" | "-1" | "\u{2212}1" => Some(Label::Harmful),
            _ => None,
        }
    }

    fn from_json(v: &Value) -> Option<Label> {
        match v {
            Value::String(s) => Label::parse(s),
            Value::Number(n) => match n.as_f64() {
                Some(1.0) => Some(Label::Harmless),
                Some(-1.0) => Some(Label::Harmful),
                _ => None,
            },
            _ => None,
        }
    }

    /// `"harmless"` or `"harmful"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Harmless => "harmless",
            Label::Harmful => "harmful",
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of a contrast set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContrastItem {
    pub text: String,
    pub label: Label,
    /// The value dimension (harm, honesty, fairness, ...), when the file says.
    pub dimension: Option<String>,
    /// Twin id: topic-matched harmless/harmful rows share it (and the split).
    pub pair: Option<String>,
    pub source: Option<String>,
    pub category: Option<String>,
}

/// Whether a preference pair is clear-cut or subtle (bundled set only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PairKind {
    /// One reply is plainly better (refusal vs harmful compliance, truth vs falsehood).
    Clear,
    /// Both replies are acceptable-ish; one is more careful, honest or respectful.
    Subtle,
}

impl PairKind {
    fn parse(s: &str) -> Option<PairKind> {
        match s {
            "clear" => Some(PairKind::Clear),
            "subtle" => Some(PairKind::Subtle),
            _ => None,
        }
    }
}

/// One preference pair; the truth is `chosen ≻ rejected`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreferencePair {
    /// The conversation before the responses (plain text, or hh format with its markers).
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub kind: Option<PairKind>,
    pub dimension: Option<String>,
    pub source: Option<String>,
    /// Line in the upstream file, when the row was converted from elsewhere.
    pub source_line: Option<u64>,
}

/// Which side of the dev/heldout split an item falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Dev,
    Heldout,
}

impl Split {
    /// `Heldout` iff the SHA-256 of the key's UTF-8 bytes, read as a big-endian integer,
    /// is divisible by 5 — Python's `int(hashlib.sha256(key.encode()).hexdigest(), 16) % 5 == 0`.
    pub fn of_key(key: &str) -> Split {
        let digest = Sha256::digest(key.as_bytes());
        // Horner's rule on the base-256 digits: r ← (256 r + b) mod 5.
        let r = digest
            .iter()
            .fold(0u32, |r, &b| (r * 256 + u32::from(b)) % 5);
        if r == 0 {
            Split::Heldout
        } else {
            Split::Dev
        }
    }
}

/// Items that carry a split key.
pub trait SplitKey {
    /// The string hashed by [`Split::of_key`].
    fn split_key(&self) -> &str;

    /// The item's side of the split.
    fn split(&self) -> Split {
        Split::of_key(self.split_key())
    }
}

impl SplitKey for ContrastItem {
    /// `pair` if set, else `text`.
    fn split_key(&self) -> &str {
        self.pair.as_deref().unwrap_or(&self.text)
    }
}

impl SplitKey for PreferencePair {
    /// The prompt.
    fn split_key(&self) -> &str {
        &self.prompt
    }
}

/// Partitions items into `(dev, heldout)` by [`Split::of_key`], keeping file order.
pub fn split_dev_heldout<T: SplitKey>(items: Vec<T>) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|it| it.split() == Split::Dev)
}

/// Salt of the independent re-split in [`split_or_resplit`].
pub const RESPLIT_SALT: &str = "lvh-directions";

/// The dev/held-out split of [`split_dev_heldout`], unless every item falls on one side (the
/// file already is one side of the standard split, e.g. a `*.dev.jsonl`): then the items are
/// split again by an independent salted hash of the same key ([`RESPLIT_SALT`], 20% held out).
/// The flag says whether it re-split.
pub fn split_or_resplit<T: SplitKey>(items: Vec<T>) -> (Vec<T>, Vec<T>, bool) {
    let (dev, heldout) = split_dev_heldout(items);
    if !dev.is_empty() && !heldout.is_empty() {
        return (dev, heldout, false);
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for it in dev.into_iter().chain(heldout) {
        if value_directions::metrics::hash_unit(it.split_key(), RESPLIT_SALT) < 0.2 {
            test.push(it);
        } else {
            train.push(it);
        }
    }
    (train, test, true)
}

/// Draws `per_class` rows of each label (default: the smaller class's size) without
/// replacement, with the given RNG; the result keeps the input order.
///
/// # Errors
/// [`DatasetError::Subsample`] if a class is empty or smaller than `per_class`.
pub fn balanced_subsample<R: Rng + ?Sized>(
    items: &[ContrastItem],
    per_class: Option<usize>,
    rng: &mut R,
) -> Result<Vec<ContrastItem>, DatasetError> {
    let pos: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].label == Label::Harmless)
        .collect();
    let neg: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].label == Label::Harmful)
        .collect();
    let smaller = pos.len().min(neg.len());
    if smaller == 0 {
        return Err(DatasetError::Subsample(format!(
            "need both labels, got {} harmless and {} harmful",
            pos.len(),
            neg.len()
        )));
    }
    let n = per_class.unwrap_or(smaller);
    if n == 0 || n > smaller {
        return Err(DatasetError::Subsample(format!(
            "asked for {n} per class, but have {} harmless and {} harmful",
            pos.len(),
            neg.len()
        )));
    }
    let mut chosen: Vec<usize> = Vec::with_capacity(2 * n);
    for class in [&pos, &neg] {
        let picks = rand::seq::index::sample(rng, class.len(), n);
        chosen.extend(picks.iter().map(|k| class[k]));
    }
    chosen.sort_unstable();
    Ok(chosen.into_iter().map(|i| items[i].clone()).collect())
}

// ---------------------------------------------------------------------------------------------
// JSONL plumbing

/// A JSON object and its 1-based line number.
type NumberedObject = (u64, Map<String, Value>);

/// Non-blank lines of a reader, numbered from 1.
#[derive(Debug)]
struct NumberedLines<R> {
    reader: R,
    path: PathBuf,
    line: u64,
    done: bool,
}

impl<R: BufRead> NumberedLines<R> {
    fn new(reader: R, path: PathBuf) -> Self {
        NumberedLines {
            reader,
            path,
            line: 0,
            done: false,
        }
    }

    fn next_object(&mut self) -> Option<Result<NumberedObject, DatasetError>> {
        while !self.done {
            let mut buf = String::new();
            self.line += 1;
            match self.reader.read_line(&mut buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    let t = buf.trim();
                    if t.is_empty() {
                        continue;
                    }
                    return Some(match serde_json::from_str::<Value>(t) {
                        Ok(Value::Object(m)) => Ok((self.line, m)),
                        Ok(_) => Err(self.err(self.line, "expected a JSON object".into())),
                        Err(e) => Err(self.err(self.line, format!("invalid JSON: {e}"))),
                    });
                }
                Err(e) => {
                    self.done = true;
                    let message = if e.kind() == std::io::ErrorKind::InvalidData {
                        "not valid UTF-8".to_string()
                    } else {
                        e.to_string()
                    };
                    return Some(Err(self.err(self.line, message)));
                }
            }
        }
        None
    }

    fn err(&self, line: u64, message: String) -> DatasetError {
        DatasetError::Line {
            path: self.path.clone(),
            line,
            message,
        }
    }
}

fn open(path: &Path) -> Result<BufReader<File>, DatasetError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A required string field.
fn req_str(m: &Map<String, Value>, field: &str) -> Result<String, String> {
    match m.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "field `{field}` must be a string, got {}",
            json_kind(other)
        )),
        None => Err(format!("missing field `{field}`")),
    }
}

/// An optional string field (absent or null → `None`).
fn opt_str(m: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "field `{field}` must be a string or null, got {}",
            json_kind(other)
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn non_empty(s: String, field: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err(format!("field `{field}` is empty"))
    } else {
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Contrast JSONL

fn contrast_from_object(m: &Map<String, Value>) -> Result<ContrastItem, String> {
    let text = non_empty(req_str(m, "text")?, "text")?;
    let label = match m.get("label") {
        None => return Err("missing field `label`".into()),
        Some(v) => Label::from_json(v)
            .ok_or_else(|| format!("field `label`: expected harmless/harmful or +1/-1, got {v}"))?,
    };
    Ok(ContrastItem {
        text,
        label,
        dimension: opt_str(m, "dimension")?,
        pair: opt_str(m, "pair")?,
        source: opt_str(m, "source")?,
        category: opt_str(m, "category")?,
    })
}

/// Streams contrast rows from JSONL.
#[derive(Debug)]
pub struct ContrastJsonlReader<R> {
    lines: NumberedLines<R>,
}

impl ContrastJsonlReader<BufReader<File>> {
    /// Opens a JSONL contrast file.
    ///
    /// # Errors
    /// [`DatasetError::Io`] naming the path.
    pub fn open(path: &Path) -> Result<Self, DatasetError> {
        Ok(Self::from_reader(open(path)?, path))
    }
}

impl<R: BufRead> ContrastJsonlReader<R> {
    /// Reads from any buffered reader; `origin` names it in errors.
    pub fn from_reader(reader: R, origin: &Path) -> Self {
        ContrastJsonlReader {
            lines: NumberedLines::new(reader, origin.to_path_buf()),
        }
    }
}

impl<R: BufRead> Iterator for ContrastJsonlReader<R> {
    type Item = Result<ContrastItem, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (line, m) = match self.lines.next_object()? {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        Some(contrast_from_object(&m).map_err(|msg| self.lines.err(line, msg)))
    }
}

// ---------------------------------------------------------------------------------------------
// Contrast CSV

/// Where a CSV row's label comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvLabel {
    /// Every row has this label (AdvBench: all harmful).
    Fixed(Label),
    /// A column whose cells parse with [`Label::parse`].
    Column(String),
}

/// How to read a contrast CSV (with a header row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub text_column: String,
    pub label: CsvLabel,
}

/// Streams contrast rows from a CSV file with a header row.
pub struct ContrastCsvReader {
    records: csv::StringRecordsIntoIter<File>,
    path: PathBuf,
    text_idx: usize,
    label: CsvLabelIdx,
    optional: [Option<usize>; 4],
}

impl std::fmt::Debug for ContrastCsvReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContrastCsvReader")
            .field("path", &self.path)
            .field("text_idx", &self.text_idx)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum CsvLabelIdx {
    Fixed(Label),
    Column(usize, String),
}

impl ContrastCsvReader {
    /// Opens the file and locates the columns in its header.
    ///
    /// # Errors
    /// [`DatasetError::Io`] if unreadable; [`DatasetError::File`] if a named column is not
    /// in the header (the message lists the header).
    pub fn open(path: &Path, opts: &CsvOptions) -> Result<Self, DatasetError> {
        let file = File::open(path).map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(file);
        let headers = rdr
            .headers()
            .map_err(|e| DatasetError::File {
                path: path.to_path_buf(),
                message: format!("cannot read CSV header: {e}"),
            })?
            .clone();
        let find = |name: &str| headers.iter().position(|h| h.trim() == name);
        let missing = |name: &str| DatasetError::File {
            path: path.to_path_buf(),
            message: format!(
                "no column `{name}` in header ({})",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        };
        let text_idx = find(&opts.text_column).ok_or_else(|| missing(&opts.text_column))?;
        let label = match &opts.label {
            CsvLabel::Fixed(l) => CsvLabelIdx::Fixed(*l),
            CsvLabel::Column(c) => {
                CsvLabelIdx::Column(find(c).ok_or_else(|| missing(c))?, c.clone())
            }
        };
        let optional = [
            find("dimension"),
            find("pair"),
            find("source"),
            find("category"),
        ];
        Ok(ContrastCsvReader {
            records: rdr.into_records(),
            path: path.to_path_buf(),
            text_idx,
            label,
            optional,
        })
    }
}

impl Iterator for ContrastCsvReader {
    type Item = Result<ContrastItem, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rec = self.records.next()?;
        let path = self.path.clone();
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Some(Err(DatasetError::Line {
                    path,
                    line,
                    message: format!("invalid CSV row: {e}"),
                }));
            }
        };
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let err = |message: String| DatasetError::Line {
            path: path.clone(),
            line,
            message,
        };
        let text = rec.get(self.text_idx).unwrap_or("").to_string();
        if text.trim().is_empty() {
            return Some(Err(err("empty text".into())));
        }
        let label = match &self.label {
            CsvLabelIdx::Fixed(l) => *l,
            CsvLabelIdx::Column(i, name) => {
                let cell = rec.get(*i).unwrap_or("");
                match Label::parse(cell) {
                    Some(l) => l,
                    None => {
                        return Some(Err(err(format!(
                            "column `{name}`: expected harmless/harmful or +1/-1, got `{cell}`"
                        ))))
                    }
                }
            }
        };
        let cell = |i: Option<usize>| {
            i.and_then(|i| rec.get(i))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Some(Ok(ContrastItem {
            text,
            label,
            dimension: cell(self.optional[0]),
            pair: cell(self.optional[1]),
            source: cell(self.optional[2]),
            category: cell(self.optional[3]),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Preferences

/// Splits an HH-RLHF transcript at its last [`HH_ASSISTANT_MARKER`]:
/// `(prefix including the marker, final reply trimmed)`.
pub fn split_hh_transcript(t: &str) -> Option<(&str, &str)> {
    let at = t.rfind(HH_ASSISTANT_MARKER)?;
    let cut = at + HH_ASSISTANT_MARKER.len();
    Some((&t[..cut], t[cut..].trim()))
}

fn preference_from_object(m: &Map<String, Value>) -> Result<PreferencePair, String> {
    let chosen_raw = req_str(m, "chosen")?;
    let rejected_raw = req_str(m, "rejected")?;
    let (prompt, chosen, rejected) = if m.contains_key("prompt") {
        (req_str(m, "prompt")?, chosen_raw, rejected_raw)
    } else {
        let (pc, c) = split_hh_transcript(&chosen_raw).ok_or_else(|| {
            "no `prompt` field and `chosen` has no \"\\n\\nAssistant:\" turn (neither TRL nor HH-RLHF)"
                .to_string()
        })?;
        let (pr, r) = split_hh_transcript(&rejected_raw)
            .ok_or_else(|| "`rejected` has no \"\\n\\nAssistant:\" turn".to_string())?;
        if pc != pr {
            return Err(
                "HH-RLHF pair: `chosen` and `rejected` differ before their last \"\\n\\nAssistant:\" \
                 (no shared prompt)"
                    .into(),
            );
        }
        (pc.to_string(), c.to_string(), r.to_string())
    };
    // Empty replies are kept: HH-RLHF has a few, and an empty answer is still an answer.
    if chosen == rejected {
        return Err("`chosen` and `rejected` are identical".into());
    }
    let kind =
        match opt_str(m, "kind")? {
            None => None,
            Some(k) => Some(PairKind::parse(&k).ok_or_else(|| {
                format!("field `kind`: expected \"clear\" or \"subtle\", got `{k}`")
            })?),
        };
    let source_line = match m.get("source_line") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            format!("field `source_line` must be a non-negative integer, got {v}")
        })?),
    };
    Ok(PreferencePair {
        prompt,
        chosen,
        rejected,
        kind,
        dimension: opt_str(m, "dimension")?,
        source: opt_str(m, "source")?,
        source_line,
    })
}

/// Streams preference pairs from JSONL (TRL or HH-RLHF rows, detected per row).
#[derive(Debug)]
pub struct PreferenceJsonlReader<R> {
    lines: NumberedLines<R>,
}

impl PreferenceJsonlReader<BufReader<File>> {
    /// Opens a JSONL preference file.
    ///
    /// # Errors
    /// [`DatasetError::Io`] naming the path.
    pub fn open(path: &Path) -> Result<Self, DatasetError> {
        Ok(Self::from_reader(open(path)?, path))
    }
}

impl<R: BufRead> PreferenceJsonlReader<R> {
    /// Reads from any buffered reader; `origin` names it in errors.
    pub fn from_reader(reader: R, origin: &Path) -> Self {
        PreferenceJsonlReader {
            lines: NumberedLines::new(reader, origin.to_path_buf()),
        }
    }
}

impl<R: BufRead> Iterator for PreferenceJsonlReader<R> {
    type Item = Result<PreferencePair, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (line, m) = match self.lines.next_object()? {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        Some(preference_from_object(&m).map_err(|msg| self.lines.err(line, msg)))
    }
}

// ---------------------------------------------------------------------------------------------
// Whole-file helpers and the bundled sets

fn collect_non_empty<T>(
    it: impl Iterator<Item = Result<T, DatasetError>>,
    path: &Path,
) -> Result<Vec<T>, DatasetError> {
    let v = it.collect::<Result<Vec<T>, _>>()?;
    if v.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(v)
}

/// Reads a whole contrast file: CSV when `csv` is given, JSONL otherwise.
///
/// # Errors
/// The first row error, or [`DatasetError::Empty`]. A `.csv` path without options is an error
/// (the text column must be named).
pub fn read_contrast(
    path: &Path,
    csv: Option<&CsvOptions>,
) -> Result<Vec<ContrastItem>, DatasetError> {
    match csv {
        Some(opts) => collect_non_empty(ContrastCsvReader::open(path, opts)?, path),
        None => {
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
            {
                return Err(DatasetError::File {
                    path: path.to_path_buf(),
                    message: "a CSV contrast file needs a text column (--text-column) and a label \
                              (--label or --label-column)"
                        .into(),
                });
            }
            collect_non_empty(ContrastJsonlReader::open(path)?, path)
        }
    }
}

/// Reads a whole preference file (TRL or HH-RLHF JSONL).
///
/// # Errors
/// The first row error, or [`DatasetError::Empty`].
pub fn read_preferences(path: &Path) -> Result<Vec<PreferencePair>, DatasetError> {
    collect_non_empty(PreferenceJsonlReader::open(path)?, path)
}

/// The bundled contrast set (`data/contrast.jsonl`).
///
/// # Errors
/// Only if the embedded file is malformed, which the tests rule out.
pub fn bundled_contrast() -> Result<Vec<ContrastItem>, DatasetError> {
    let origin = Path::new("<bundled>/data/contrast.jsonl");
    collect_non_empty(
        ContrastJsonlReader::from_reader(BUNDLED_CONTRAST_JSONL.as_bytes(), origin),
        origin,
    )
}

/// The bundled preference set (`data/preferences.jsonl`).
///
/// # Errors
/// Only if the embedded file is malformed, which the tests rule out.
pub fn bundled_preferences() -> Result<Vec<PreferencePair>, DatasetError> {
    let origin = Path::new("<bundled>/data/preferences.jsonl");
    collect_non_empty(
        PreferenceJsonlReader::from_reader(BUNDLED_PREFERENCES_JSONL.as_bytes(), origin),
        origin,
    )
}

/// Command-line options for a contrast set, to `#[command(flatten)]` into a command's args.
/// Without `--contrast`, the bundled set is used.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ContrastArgs {
    /// Contrast set: JSONL `{text, label}` or CSV (default: the bundled set).
    #[arg(long, value_name = "FILE")]
    pub contrast: Option<PathBuf>,
    /// CSV only: the column holding the text (e.g. `goal` for AdvBench).
    #[arg(long, value_name = "NAME")]
    pub text_column: Option<String>,
    /// CSV only: one label for every row (harmless|harmful|+1|-1).
    #[arg(long, value_name = "LABEL", conflicts_with = "label_column", value_parser = parse_label_arg)]
    pub label: Option<Label>,
    /// CSV only: the column holding each row's label.
    #[arg(long, value_name = "NAME")]
    pub label_column: Option<String>,
}

fn parse_label_arg(s: &str) -> Result<Label, String> {
    Label::parse(s).ok_or_else(|| format!("expected harmless, harmful, +1 or -1, got `{s}`"))
}

impl ContrastArgs {
    /// The CSV options, if any CSV flag was given.
    ///
    /// # Errors
    /// A message when the CSV flags are incomplete.
    pub fn csv_options(&self) -> Result<Option<CsvOptions>, String> {
        let label = match (&self.label, &self.label_column) {
            (Some(l), None) => Some(CsvLabel::Fixed(*l)),
            (None, Some(c)) => Some(CsvLabel::Column(c.clone())),
            (None, None) => None,
            (Some(_), Some(_)) => return Err("give --label or --label-column, not both".into()),
        };
        match (&self.text_column, label) {
            (None, None) => Ok(None),
            (Some(t), Some(label)) => Ok(Some(CsvOptions {
                text_column: t.clone(),
                label,
            })),
            (Some(_), None) => Err("--text-column needs --label or --label-column".into()),
            (None, Some(_)) => Err("--label/--label-column need --text-column".into()),
        }
    }

    /// Loads the file named by `--contrast`, or the bundled set.
    ///
    /// # Errors
    /// Incomplete CSV flags, or the loader's error naming file and line.
    pub fn load(&self) -> anyhow::Result<Vec<ContrastItem>> {
        let csv = self.csv_options().map_err(anyhow::Error::msg)?;
        match &self.contrast {
            Some(p) => Ok(read_contrast(p, csv.as_ref())?),
            None => {
                if csv.is_some() {
                    anyhow::bail!("--text-column/--label apply to a CSV given with --contrast");
                }
                Ok(bundled_contrast()?)
            }
        }
    }
}

/// Command-line option for a preference set, to `#[command(flatten)]` into a command's args.
/// Without `--pairs`, the bundled set is used.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PreferenceArgs {
    /// Preference pairs: TRL `{prompt, chosen, rejected}` or HH-RLHF `{chosen, rejected}` JSONL
    /// (default: the bundled set).
    #[arg(long, value_name = "FILE")]
    pub pairs: Option<PathBuf>,
}

impl PreferenceArgs {
    /// Loads the file named by `--pairs`, or the bundled set.
    ///
    /// # Errors
    /// The loader's error naming file and line.
    pub fn load(&self) -> Result<Vec<PreferencePair>, DatasetError> {
        match &self.pairs {
            Some(p) => read_preferences(p),
            None => bundled_preferences(),
        }
    }
}

/// The items on one side of the split, in their original order.
pub fn select_split<T: SplitKey>(items: Vec<T>, side: Split) -> Vec<T> {
    items.into_iter().filter(|it| it.split() == side).collect()
}
