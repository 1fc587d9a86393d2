//! `lvh report`: one HTML (or JSON) report of saved runs, rendered from what their folders
//! hold, never recomputed.
//!
//! A run is found through its manifest: `DIR/manifest.json` (the run folders of `audit`,
//! `extract`, `directions`, ...) or `DIR/<stem>.manifest.json` beside an output file (`judge`,
//! `gap`); a path to such a manifest or to the output beside it names that run alone. Every
//! file of a run is rendered generically: JSON objects as key/value tables, arrays of objects
//! as tables, JSONL logs as a row count and their first rows, SVG plots embedded as images
//! (`data:` URIs, so their scripts never run), anything else listed with its size. Folders
//! without a manifest carry no provenance to check and are refused.
//!
//! Runs are only shown together when they agree on what makes results comparable: the lvh
//! version, the model (sha256), the bytes of any data file both read (same path, same sha256),
//! and, for runs of one command, the seed and the data set list. A disagreement is refused
//! naming the field and both values.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::run_dir::{read_json, write_atomic, Manifest};

/// Arguments of `lvh report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folders (or a `*.manifest.json`, or an output file with its manifest beside it).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Write the HTML report here (default: standard output, unless --json).
    #[arg(long, value_name = "FILE.html")]
    pub out: Option<PathBuf>,
    /// Print the runs as JSON (manifests and parsed files) on standard output.
    #[arg(long)]
    pub json: bool,
}

/// Rows of a table or JSONL log shown in the HTML before "… more rows".
const MAX_ROWS: usize = 200;
/// Characters of one cell before it is cut.
const MAX_CELL: usize = 300;
/// JSON files larger than this are listed, not parsed.
const MAX_JSON_BYTES: u64 = 32 << 20;
/// SVG files larger than this are listed, not embedded.
const MAX_SVG_BYTES: u64 = 8 << 20;

/// One saved run: its manifest and the files that belong to it.
#[derive(Debug, Clone)]
pub struct SavedRun {
    /// Where the manifest was found.
    pub manifest_path: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// The run's files (manifest excluded), sorted by name.
    pub files: Vec<PathBuf>,
}

impl SavedRun {
    /// The folder or output the run is known by.
    pub fn label(&self) -> String {
        let name = self
            .manifest_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if name == "manifest.json" {
            self.manifest_path
                .parent()
                .map_or_else(String::new, |p| p.display().to_string())
        } else {
            self.manifest_path.display().to_string()
        }
    }
}

fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name();
        let hidden = name.to_str().map_or(true, |n| n.starts_with('.'));
        if !hidden && e.file_type()?.is_file() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn beside_manifest(manifest_path: &Path) -> Result<SavedRun> {
    let manifest: Manifest = read_json(manifest_path)?;
    let name = manifest_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let stem = name.strip_suffix(".manifest.json").unwrap_or(name);
    let dir = manifest_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let all = sorted_files(dir)?;
    let name_of = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned()
    };
    // Stems of every output in the folder: `labels.v2.jsonl` belongs to `labels.v2`, not to
    // `labels`, when both have a manifest.
    let stems: Vec<String> = all
        .iter()
        .filter_map(|p| name_of(p).strip_suffix(".manifest.json").map(str::to_owned))
        .collect();
    let owner = |n: &str| {
        stems
            .iter()
            .filter(|s| {
                n.strip_prefix(s.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .max_by_key(|s| s.len())
            .cloned()
    };
    let files = all
        .into_iter()
        .filter(|p| {
            let n = name_of(p);
            !n.ends_with(".manifest.json") && owner(&n).as_deref() == Some(stem)
        })
        .collect();
    Ok(SavedRun {
        manifest_path: manifest_path.to_path_buf(),
        manifest,
        files,
    })
}

/// The runs a path names: a run folder (`manifest.json`), a folder of outputs with manifests
/// beside them, a `*.manifest.json`, or an output file whose manifest is beside it.
///
/// # Errors
/// A path holding no manifest, and unreadable or malformed manifests, naming the file.
pub fn load_runs(path: &Path) -> Result<Vec<SavedRun>> {
    if path.is_dir() {
        let m = path.join("manifest.json");
        if m.is_file() {
            let manifest: Manifest = read_json(&m)?;
            let files = sorted_files(path)?
                .into_iter()
                .filter(|p| p.file_name().and_then(|n| n.to_str()) != Some("manifest.json"))
                .collect();
            return Ok(vec![SavedRun {
                manifest_path: m,
                manifest,
                files,
            }]);
        }
        let runs = sorted_files(path)?
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".manifest.json"))
            })
            .map(|p| beside_manifest(&p))
            .collect::<Result<Vec<_>>>()?;
        if runs.is_empty() {
            bail!(
                "{}: not a run folder (no manifest.json and no *.manifest.json)",
                path.display()
            );
        }
        return Ok(runs);
    }
    if !path.exists() {
        bail!("{}: no such file or folder", path.display());
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".manifest.json") {
        return Ok(vec![beside_manifest(path)?]);
    }
    let beside = crate::cmd::judge::manifest_path(path);
    if beside.is_file() {
        return Ok(vec![beside_manifest(&beside)?]);
    }
    bail!(
        "{}: no manifest beside it ({} is missing)",
        path.display(),
        beside.display()
    )
}

/// Explains why two runs may not be shown together: the first field on which they disagree,
/// with both values; `None` when they agree.
pub fn conflict(a: &SavedRun, b: &SavedRun) -> Option<String> {
    let (ma, mb) = (&a.manifest, &b.manifest);
    let differ = |field: &str, x: &str, y: &str| {
        Some(format!(
            "refusing to mix runs: {} and {} differ in {field}: {x} vs {y}",
            a.label(),
            b.label()
        ))
    };
    if ma.lvh_version != mb.lvh_version {
        return differ("lvh_version", &ma.lvh_version, &mb.lvh_version);
    }
    if let (Some(x), Some(y)) = (&ma.model, &mb.model) {
        if x.sha256 != y.sha256 {
            return differ(
                "model sha256",
                &format!("{} ({})", x.sha256, x.path),
                &format!("{} ({})", y.sha256, y.path),
            );
        }
    }
    for x in &ma.data {
        if let Some(y) = mb.data.iter().find(|y| y.path == x.path) {
            if x.sha256 != y.sha256 {
                return differ(&format!("data sha256 of {}", x.path), &x.sha256, &y.sha256);
            }
        }
    }
    if ma.command == mb.command {
        let hashes = |m: &Manifest| {
            m.data
                .iter()
                .map(|d| format!("{} ({})", d.sha256, d.path))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if ma
            .data
            .iter()
            .map(|d| &d.sha256)
            .ne(mb.data.iter().map(|d| &d.sha256))
        {
            return differ("data sha256", &hashes(ma), &hashes(mb));
        }
        if ma.seed != mb.seed {
            let s = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
            return differ("seed", &s(ma.seed), &s(mb.seed));
        }
    }
    None
}

/// Checks every run against every other (see [`conflict`]).
///
/// # Errors
/// The first disagreement, naming both runs, the field and both values.
pub fn check_consistent(runs: &[SavedRun]) -> Result<()> {
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if let Some(why) = conflict(a, b) {
                bail!(why);
            }
        }
    }
    Ok(())
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (k, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                o.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX_CELL).collect();
        t.push('…');
        t
    }
}

/// A number as a table shows it: integers exactly, others to 4 decimals (or in scientific
/// notation when tiny or huge).
fn num(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let x = n.as_f64().unwrap_or(f64::NAN);
    let a = x.abs();
    if a == 0.0 || (1e-3..1e6).contains(&a) {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{x:.3e}")
    }
}

/// One cell: scalars as text, anything nested as compact JSON (cut).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => num(n),
        Value::String(s) => esc(&cut(s)),
        other => format!("<code>{}</code>", esc(&cut(&other.to_string()))),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// A table of rows (objects): one column per key, in first-seen order.
fn rows_table(b: &mut String, rows: &[&serde_json::Map<String, Value>], total: usize) {
    let mut cols: Vec<&str> = Vec::new();
    for r in rows {
        for k in r.keys() {
            if !cols.contains(&k.as_str()) {
                cols.push(k);
            }
        }
    }
    b.push_str("<table><tr>");
    for c in &cols {
        let _ = write!(b, "<th>{}</th>", esc(c));
    }
    b.push_str("</tr>");
    for r in rows {
        b.push_str("<tr>");
        for c in &cols {
            let _ = write!(b, "<td>{}</td>", r.get(*c).map_or_else(String::new, cell));
        }
        b.push_str("</tr>");
    }
    b.push_str("</table>");
    if total > rows.len() {
        let _ = write!(
            b,
            "<p class=\"note\">… {} more rows</p>",
            total - rows.len()
        );
    }
}

/// Renders any JSON value: objects as key/value tables (nested containers as sub-sections),
/// arrays of objects as tables, other arrays inline.
fn render_value(b: &mut String, v: &Value, depth: usize) {
    match v {
        Value::Object(map) => {
            let scalars: Vec<(&String, &Value)> =
                map.iter().filter(|(_, v)| is_scalar(v)).collect();
            if !scalars.is_empty() {
                b.push_str("<table class=\"kv\">");
                for (k, v) in scalars {
                    let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(k), cell(v));
                }
                b.push_str("</table>");
            }
            for (k, v) in map.iter().filter(|(_, v)| !is_scalar(v)) {
                if depth >= 3 {
                    let _ = write!(
                        b,
                        "<p><b>{}</b>: <code>{}</code></p>",
                        esc(k),
                        esc(&cut(&v.to_string()))
                    );
                    continue;
                }
                let _ = write!(b, "<div class=\"sub\"><h4>{}</h4>", esc(k));
                render_value(b, v, depth + 1);
                b.push_str("</div>");
            }
        }
        Value::Array(items) => {
            let objects: Vec<&serde_json::Map<String, Value>> =
                items.iter().filter_map(Value::as_object).collect();
            if !items.is_empty() && objects.len() == items.len() {
                let shown: Vec<_> = objects.into_iter().take(MAX_ROWS).collect();
                rows_table(b, &shown, items.len());
            } else if items.iter().all(is_scalar) {
                let shown: Vec<String> = items.iter().take(MAX_ROWS).map(cell).collect();
                let more = items.len().saturating_sub(MAX_ROWS);
                let _ = write!(
                    b,
                    "<p>[{}{}]</p>",
                    shown.join(", "),
                    if more > 0 {
                        format!(", … {more} more")
                    } else {
                        String::new()
                    }
                );
            } else {
                let _ = write!(b, "<p><code>{}</code></p>", esc(&cut(&v.to_string())));
            }
        }
        scalar => {
            let _ = write!(b, "<p>{}</p>", cell(scalar));
        }
    }
}

/// What a file of a run holds, as the report sees it.
#[derive(Debug)]
enum FileView {
    Json(Value),
    Jsonl {
        rows: Vec<Value>,
        total: usize,
        torn: bool,
    },
    Svg(Vec<u8>),
    Other,
    Unreadable(String),
}

fn view(path: &Path) -> FileView {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let ext = name.rsplit('.').next().unwrap_or("");
    let read = || std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()));
    match ext {
        "json" if size <= MAX_JSON_BYTES => match read() {
            Ok(bytes) => serde_json::from_slice(&bytes).map_or_else(
                |e| FileView::Unreadable(format!("{}: {e}", path.display())),
                FileView::Json,
            ),
            Err(e) => FileView::Unreadable(e),
        },
        "jsonl" => match std::fs::File::open(path) {
            Ok(f) => {
                use std::io::BufRead;
                let mut rows = Vec::new();
                let (mut total, mut torn) = (0, false);
                for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
                    let Ok(line) = line else {
                        return FileView::Unreadable(format!(
                            "{}:{}: not UTF-8",
                            path.display(),
                            i + 1
                        ));
                    };
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => {
                            total += 1;
                            if rows.len() < MAX_ROWS {
                                rows.push(v);
                            }
                        }
                        Err(_) => torn = true,
                    }
                }
                FileView::Jsonl { rows, total, torn }
            }
            Err(e) => FileView::Unreadable(format!("reading {}: {e}", path.display())),
        },
        "svg" if size <= MAX_SVG_BYTES => match read() {
            Ok(bytes) => FileView::Svg(bytes),
            Err(e) => FileView::Unreadable(e),
        },
        _ => FileView::Other,
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;\
text-align:left;vertical-align:top;font-size:.9em}th{background:#f4f4f4}table.kv th{width:14em}\
.sub{margin-left:1em}.note{color:#666}img.plot{max-width:100%;border:1px solid #eee}\
section.run{border-top:2px solid #333;margin-top:2em}code{font-size:.85em}";

/// The HTML report of `runs` (already checked consistent).
pub fn html(runs: &[SavedRun]) -> String {
    let mut b = String::new();
    b.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lvh report</title>");
    let _ = write!(
        b,
        "<style>{STYLE}</style></head><body>\n<h1>lvh report</h1>\n"
    );
    b.push_str("<table><tr><th>run</th><th>command</th><th>lvh</th><th>seed</th><th>model</th><th>data</th></tr>");
    for (i, r) in runs.iter().enumerate() {
        let m = &r.manifest;
        let _ = writeln!(
            b,
            "<tr><td><a href=\"#run{i}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.label()),
            esc(&m.command),
            esc(&m.lvh_version),
            m.seed.map_or_else(|| "–".into(), |s| s.to_string()),
            m.model.as_ref().map_or_else(
                || "–".into(),
                |p| format!("{} <code>{}</code>", esc(&p.path), esc(&p.sha256[..12.min(p.sha256.len())]))
            ),
            m.data
                .iter()
                .map(|d| format!("{} <code>{}</code>", esc(&d.path), esc(&d.sha256[..12.min(d.sha256.len())])))
                .collect::<Vec<_>>()
                .join("<br>"),
        );
    }
    b.push_str("</table>\n");
    for (i, r) in runs.iter().enumerate() {
        let m = &r.manifest;
        let _ = write!(
            b,
            "<section class=\"run\" id=\"run{i}\"><h2>{} <small>({})</small></h2>",
            esc(&m.command),
            esc(&r.label())
        );
        b.push_str("<h3>Manifest</h3><table class=\"kv\">");
        let _ = write!(
            b,
            "<tr><th>command</th><td>{}</td></tr><tr><th>lvh version</th><td>{}</td></tr><tr><th>seed</th><td>{}</td></tr>",
            esc(&m.command),
            esc(&m.lvh_version),
            m.seed.map_or_else(|| "–".into(), |s| s.to_string())
        );
        if let Some(p) = &m.model {
            let _ = write!(
                b,
                "<tr><th>model</th><td>{}<br><code>{}</code></td></tr>",
                esc(&p.path),
                esc(&p.sha256)
            );
        }
        for d in &m.data {
            let _ = write!(
                b,
                "<tr><th>data</th><td>{}<br><code>{}</code></td></tr>",
                esc(&d.path),
                esc(&d.sha256)
            );
        }
        b.push_str("</table><h4>settings</h4>");
        render_value(&mut b, &m.settings, 1);
        for f in &r.files {
            let name = file_name(f);
            let size = std::fs::metadata(f).map_or(0, |m| m.len());
            match view(f) {
                FileView::Json(v) => {
                    let _ = write!(b, "<h3>{}</h3>", esc(&name));
                    render_value(&mut b, &v, 0);
                }
                FileView::Jsonl { rows, total, torn } => {
                    let _ = write!(
                        b,
                        "<h3>{} <small>({total} rows{})</small></h3>",
                        esc(&name),
                        if torn {
                            ", unparsable lines skipped"
                        } else {
                            ""
                        }
                    );
                    let objects: Vec<&serde_json::Map<String, Value>> =
                        rows.iter().filter_map(Value::as_object).collect();
                    rows_table(&mut b, &objects, total);
                }
                FileView::Svg(bytes) => {
                    let _ = write!(
                        b,
                        "<h3>{}</h3><img class=\"plot\" alt=\"{}\" src=\"data:image/svg+xml;base64,{}\">",
                        esc(&name),
                        esc(&name),
                        base64(&bytes)
                    );
                }
                FileView::Other => {
                    let _ = write!(
                        b,
                        "<p class=\"note\">{} ({})</p>",
                        esc(&name),
                        crate::geometry::extract::human_bytes(size)
                    );
                }
                FileView::Unreadable(why) => {
                    let _ = write!(b, "<p class=\"note\">{}: {}</p>", esc(&name), esc(&why));
                }
            }
        }
        b.push_str("</section>\n");
    }
    b.push_str("</body></html>\n");
    b
}

/// The runs as JSON: manifest, and per file its name, size and parsed content (JSON files),
/// row count and rows (JSONL logs, first rows only), or nothing (other files).
pub fn json(runs: &[SavedRun]) -> Value {
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            let files: Vec<Value> = r
                .files
                .iter()
                .map(|f| {
                    let size = std::fs::metadata(f).map_or(0, |m| m.len());
                    let mut o = serde_json::json!({"name": file_name(f), "bytes": size});
                    match view(f) {
                        FileView::Json(v) => o["json"] = v,
                        FileView::Jsonl { rows, total, torn } => {
                            o["rows"] = total.into();
                            o["first_rows"] = Value::Array(rows);
                            o["torn"] = torn.into();
                        }
                        FileView::Svg(_) => o["kind"] = "svg".into(),
                        FileView::Other => {}
                        FileView::Unreadable(why) => o["error"] = why.into(),
                    }
                    o
                })
                .collect();
            serde_json::json!({
                "run": r.label(),
                "manifest": r.manifest,
                "files": files,
            })
        })
        .collect();
    serde_json::json!({ "runs": runs })
}

/// Runs `lvh report`.
///
/// # Errors
/// Paths without a manifest, runs that disagree (see [`conflict`]), I/O errors.
pub fn run(args: Args) -> Result<ExitCode> {
    let mut runs = Vec::new();
    for d in &args.dirs {
        runs.extend(load_runs(d)?);
    }
    check_consistent(&runs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json(&runs))?);
    }
    match &args.out {
        Some(out) => {
            write_atomic(out, html(&runs).as_bytes())?;
            eprintln!("{} runs -> {}", runs.len(), out.display());
        }
        None if !args.json => {
            std::io::stdout()
                .write_all(html(&runs).as_bytes())
                .context("writing the report to standard output")?;
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn numbers_and_text_render_safely() {
        let n = |x: f64| num(&serde_json::Number::from_f64(x).unwrap());
        assert_eq!(n(0.5), "0.5");
        assert_eq!(n(0.123456), "0.1235");
        assert_eq!(n(2.0e-7), "2.000e-7");
        assert_eq!(num(&serde_json::Number::from(42u64)), "42");
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
