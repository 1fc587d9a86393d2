//! Run folders: every command that produces results writes them through one [`RunDir`], with a
//! `manifest.json` recording the command, program version, seed, model sha256 and data hashes,
//! and resumable JSONL logs ([`JsonlLog`]) for long runs.
//!
//! Writes of whole files go through a temporary file and a rename, so a killed run never leaves
//! a torn file. Appends to a JSONL log are flushed and fsynced per row; on resume, a torn last
//! line (a row the kill interrupted) is cut off and the finished rows are returned, so a rerun
//! neither loses nor duplicates rows.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The program version recorded in manifests.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Provenance of a file an analysis read (a model or a dataset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProvenance {
    /// Where it was read from (as given).
    pub path: String,
    /// sha256 of its bytes, lowercase hex.
    pub sha256: String,
}

impl FileProvenance {
    /// Hashes the file at `path`.
    ///
    /// # Errors
    /// I/O errors naming the path.
    pub fn of(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.display().to_string(),
            sha256: sha256_file(path)?,
        })
    }

    /// Provenance of bundled (embedded) data: its name and the hash of its bytes.
    pub fn bundled(name: &str, bytes: &[u8]) -> Self {
        Self {
            path: format!("bundled:{name}"),
            sha256: hex(&Sha256::digest(bytes)),
        }
    }
}

/// `manifest.json` of a run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The subcommand (e.g. `judge`).
    pub command: String,
    /// lvh version.
    pub lvh_version: String,
    /// Seed of every random choice, when the command samples.
    pub seed: Option<u64>,
    /// The model file, when one was used.
    pub model: Option<FileProvenance>,
    /// Datasets read.
    pub data: Vec<FileProvenance>,
    /// The validated settings of the run (command-specific).
    pub settings: serde_json::Value,
}

impl Manifest {
    /// A manifest for `command` with the given settings.
    pub fn new(command: &str, settings: serde_json::Value) -> Self {
        Self {
            command: command.into(),
            lvh_version: VERSION.into(),
            seed: None,
            model: None,
            data: Vec::new(),
            settings,
        }
    }

    /// Explains how `self` and `other` differ in what determines results (everything but the
    /// version), or `None` when they agree.
    pub fn mismatch(&self, other: &Manifest) -> Option<String> {
        let fields = [
            ("command", self.command != other.command),
            ("seed", self.seed != other.seed),
            (
                "model",
                self.model.as_ref().map(|m| &m.sha256) != other.model.as_ref().map(|m| &m.sha256),
            ),
            (
                "data",
                self.data
                    .iter()
                    .map(|d| &d.sha256)
                    .ne(other.data.iter().map(|d| &d.sha256)),
            ),
            ("settings", self.settings != other.settings),
        ];
        let diff: Vec<&str> = fields.iter().filter(|(_, d)| *d).map(|(n, _)| *n).collect();
        (!diff.is_empty()).then(|| diff.join(", "))
    }
}

/// A run folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates (or reopens) the folder and checks its manifest: a folder holding a manifest of a
    /// different run (other model, data, seed or settings) is refused rather than mixed.
    ///
    /// # Errors
    /// I/O errors, or a manifest that disagrees with `manifest`.
    pub fn open(path: &Path, manifest: &Manifest) -> Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating run folder {}", path.display()))?;
        let dir = Self {
            path: path.to_path_buf(),
        };
        // Temporary files of a killed run are debris, never results: sweep them.
        remove_stale_temps(path, None)?;
        let mpath = dir.file("manifest.json");
        if mpath.exists() {
            let old: Manifest = read_json(&mpath)?;
            if let Some(diff) = old.mismatch(manifest) {
                bail!(
                    "run folder {} holds a different run (differs in: {diff}); use another --out or delete it",
                    path.display()
                );
            }
        }
        dir.write_json("manifest.json", manifest)?;
        Ok(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of a file inside the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes pretty JSON atomically.
    ///
    /// # Errors
    /// I/O errors naming the path.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        write_atomic(&self.file(name), text.as_bytes())
    }

    /// Writes bytes atomically.
    ///
    /// # Errors
    /// I/O errors naming the path.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.file(name), bytes)
    }
}

/// Writes `contents` to `path` through a temporary file in the same folder, fsync and rename.
///
/// # Errors
/// I/O errors naming the path.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(contents)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    // Make the rename itself durable (a power cut after the rename must not bring back the old
    // file while a log row already claims the new one). Not every platform lets a folder be
    // opened for syncing; there the rename is as durable as the OS makes it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    remove_stale_temps(dir, Some(name))?;
    Ok(())
}

/// Removes the temporary files `.<name>.<pid>.tmp` that [`write_atomic`] leaves behind when its
/// process is killed between creating the file and renaming it, for every `name` (or only the
/// given one). A temporary file whose process is still running (checked through `/proc` on
/// Linux; elsewhere, any process but this one counts as gone) is left alone. Returns how many
/// were removed.
///
/// # Errors
/// I/O errors naming the folder or file.
pub fn remove_stale_temps(dir: &Path, name: Option<&str>) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let file_name = entry.file_name();
        let Some(fname) = file_name.to_str() else {
            continue;
        };
        let Some((stem, pid)) = parse_temp_name(fname) else {
            continue;
        };
        if name.is_some_and(|n| n != stem) || process_alive(pid) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing {}", entry.path().display()))
            }
        }
    }
    Ok(removed)
}

/// `.<name>.<pid>.tmp` → `(name, pid)`.
fn parse_temp_name(fname: &str) -> Option<(&str, u32)> {
    let inner = fname.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (stem, pid) = inner.rsplit_once('.')?;
    if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem, pid.parse().ok()?))
}

fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        false
    }
}

/// Peak resident set size of this process in bytes (`VmHWM` of `/proc/self/status`), where the
/// platform reports it (Linux); `None` elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in bytes (the kernel writes kB).
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// Reads a JSON file, naming it in errors.
///
/// # Errors
/// I/O or parse errors naming the path (with line and column).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// sha256 of a file, lowercase hex, streamed (the runtime's model-cache hash).
///
/// # Errors
/// I/O errors naming the path.
pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(lm_runtime::fetch::sha256_file(path)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An append-only JSONL log of rows, one fsynced line per row, resumable after a kill.
#[derive(Debug)]
pub struct JsonlLog {
    path: PathBuf,
    file: File,
}

impl JsonlLog {
    /// Opens (or creates) the log and returns the rows already finished. A torn last line (no
    /// trailing newline, or not valid JSON) is cut off; a malformed line elsewhere is an error
    /// naming the line, because it means the file was edited or written by something else.
    ///
    /// # Errors
    /// I/O errors and malformed interior lines, naming path and line.
    pub fn open<T: DeserializeOwned>(path: &Path) -> Result<(Self, Vec<T>)> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut rows = Vec::new();
        let mut good_len: u64 = 0;
        {
            let mut reader = BufReader::new(&mut file);
            reader.seek(SeekFrom::Start(0))?;
            let mut line = String::new();
            let mut lineno = 0usize;
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    break;
                }
                lineno += 1;
                if !line.ends_with('\n') {
                    break; // a torn last row (each row is written with its newline): dropped below
                }
                match serde_json::from_str::<T>(line.trim_end()) {
                    Ok(row) => {
                        rows.push(row);
                        good_len += n as u64;
                    }
                    Err(e) => bail!(
                        "{}:{lineno}: malformed row in a resumable log: {e}",
                        path.display()
                    ),
                }
            }
        }
        let len = file.metadata()?.len();
        if len != good_len {
            file.set_len(good_len)
                .with_context(|| format!("truncating torn row of {}", path.display()))?;
            file.sync_all()?;
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
            },
            rows,
        ))
    }

    /// Appends one row and fsyncs it.
    ///
    /// # Errors
    /// I/O errors naming the path.
    pub fn append<T: Serialize>(&mut self, row: &T) -> Result<()> {
        let mut line = serde_json::to_string(row)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("appending to {}", self.path.display()))?;
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        i: usize,
    }

    #[test]
    fn torn_last_line_is_dropped_and_appends_resume() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rows.jsonl");
        std::fs::write(&p, "{\"i\":0}\n{\"i\":1}\n{\"i\":").unwrap();
        let (mut log, rows) = JsonlLog::open::<Row>(&p).unwrap();
        assert_eq!(rows, vec![Row { i: 0 }, Row { i: 1 }]);
        log.append(&Row { i: 2 }).unwrap();
        drop(log);
        let (_, rows) = JsonlLog::open::<Row>(&p).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n"
        );
    }

    #[test]
    fn malformed_interior_line_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rows.jsonl");
        std::fs::write(&p, "{\"i\":0}\nnot json\n{\"i\":2}\n").unwrap();
        let e = JsonlLog::open::<Row>(&p).unwrap_err().to_string();
        assert!(e.contains("rows.jsonl:2"), "{e}");
    }

    #[test]
    fn stale_temporary_files_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 is never a user process (and /proc/0 does not exist).
        std::fs::write(dir.path().join(".acts-00001.safetensors.0.tmp"), b"torn").unwrap();
        let own = format!(".items.json.{}.tmp", std::process::id());
        std::fs::write(dir.path().join(&own), b"in flight").unwrap();
        std::fs::write(dir.path().join(".hidden.tmp"), b"not ours").unwrap();
        std::fs::write(dir.path().join("x.0.tmp"), b"not ours").unwrap();
        let m = Manifest::new("extract", serde_json::json!({}));
        RunDir::open(dir.path(), &m).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".hidden.tmp", own.as_str(), "manifest.json", "x.0.tmp"]
        );
        // write_atomic sweeps leftovers of the file it writes.
        std::fs::write(dir.path().join(".a.json.0.tmp"), b"{").unwrap();
        write_atomic(&dir.path().join("a.json"), b"{}").unwrap();
        assert!(!dir.path().join(".a.json.0.tmp").exists());
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"{}");
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tlvh\nVmPeak:\t  200 kB\nVmHWM:\t    1536 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1536 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 1 << 20);
        }
    }

    #[test]
    fn run_dir_refuses_a_different_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::new("judge", serde_json::json!({"k": 1}));
        m.seed = Some(1);
        RunDir::open(dir.path(), &m).unwrap();
        RunDir::open(dir.path(), &m).unwrap();
        m.seed = Some(2);
        let e = RunDir::open(dir.path(), &m).unwrap_err().to_string();
        assert!(e.contains("seed"), "{e}");
    }
}
