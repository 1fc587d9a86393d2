//! Crash consistency of the resumable commands: `lvh extract` and `lvh judge` (the real binary,
//! on a tiny random-weight model written to a temporary GGUF) are killed with SIGKILL at seeded
//! random moments, many times, and rerun until they finish. After every kill no file is torn
//! (each finished shard parses; every log line but a torn last one parses) and after the final
//! run the output equals an uninterrupted run's byte for byte: no lost rows, no duplicates.
//!
//! Canonical form: `summary.json` of an extract folder holds the statistics of the last
//! invocation (seconds, throughput, peak RSS) and is left out of the comparison; every other
//! file must be identical and no other file (a temporary file of a killed write) may remain.
//!
//! Also here, as it runs the same binary on the same model: `lvh extract --max-memory` picks the
//! batch from its estimate, reports the estimate and peak RSS, and refuses a budget too small
//! for one prompt before writing anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lm_runtime::model::random::RandomLlama;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random 3-layer llama with a byte-level vocabulary (ids 0..256 the bytes, then
/// `<|im_start|>`, `<|im_end|>`) and a ChatML template: loads like a real chat model.
fn write_tiny_chat_model(path: &Path) {
    RandomLlama {
        context: 2048,
        ..RandomLlama::default()
    }
    .write_chat(path, &mut ChaCha8Rng::seed_from_u64(5))
    .unwrap();
}

/// Every file under `dir` (relative name → bytes); none when a kill came before `dir` was made.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    for e in entries {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            out.insert(
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}

/// Lines of a resumable JSONL log: every complete line must be JSON; a last line without its
/// newline is the torn row of a kill. Returns the number of complete lines.
fn check_log(path: &Path) -> usize {
    let Ok(text) = std::fs::read(path) else {
        return 0;
    };
    let text = String::from_utf8(text).expect("logs are UTF-8 even when torn at a row");
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut n = 0;
    for (i, line) in complete.lines().enumerate() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("{}:{}: torn interior line: {e}", path.display(), i + 1));
        n += 1;
    }
    n
}

/// Kills that left a temporary file of an unfinished atomic write behind (debris that the next
/// run must sweep, or the final comparison fails).
static KILLS_WITH_TEMP_FILES: AtomicUsize = AtomicUsize::new(0);

fn count_temp_files(dir: &Path) {
    if snapshot(dir).keys().any(|n| n.ends_with(".tmp")) {
        KILLS_WITH_TEMP_FILES.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a killed attempt left behind, checked for torn files.
fn check_extract_after_kill(dir: &Path) -> usize {
    count_temp_files(dir);
    for (name, bytes) in snapshot(dir) {
        if name.ends_with(".safetensors") {
            safetensors::SafeTensors::deserialize(&bytes)
                .unwrap_or_else(|e| panic!("{name} is torn: {e}"));
        } else if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{name} is torn: {e}"));
        }
    }
    check_log(&dir.join("shards.jsonl"))
}

fn check_judge_after_kill(out: &Path) -> usize {
    count_temp_files(out.parent().unwrap());
    let manifest = out.with_file_name("labels.manifest.json");
    if let Ok(bytes) = std::fs::read(&manifest) {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|e| panic!("{} is torn: {e}", manifest.display()));
    }
    check_log(out)
}

/// The command to kill and how.
struct KillPlan<'a> {
    /// Arguments of `lvh`.
    args: &'a [String],
    /// Duration of an uninterrupted run (kill delays are drawn in `[0, full)`).
    full: Duration,
    /// Rows of a finished run.
    total_rows: usize,
    /// Kills of a running process wanted.
    min_kills: usize,
    /// Seed of the kill delays.
    seed: u64,
}

struct KillStats {
    /// Attempts killed while running.
    kills: usize,
    /// Kills that left some but not all rows finished.
    partial: usize,
    /// Attempts in all (the last finished on its own).
    attempts: usize,
}

/// Runs `args` again and again, each attempt SIGKILLed after a seeded random delay in
/// `[0, full)`, checking the leftovers after each kill with `check` (which returns the finished
/// rows), until an attempt finishes by itself. A fresh output (`reset`) starts each trial; trials
/// repeat until `min_kills` attempts were killed while running.
fn kill_until_done(
    plan: &KillPlan<'_>,
    reset: &dyn Fn(),
    check: &dyn Fn() -> usize,
    on_finished: &dyn Fn(),
) -> KillStats {
    let KillPlan {
        args,
        full,
        total_rows,
        min_kills,
        seed,
    } = *plan;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats = KillStats {
        kills: 0,
        partial: 0,
        attempts: 0,
    };
    let full_us = full.as_micros().max(1000) as u64;
    while stats.kills < min_kills {
        reset();
        loop {
            assert!(
                stats.attempts < 40 * min_kills,
                "no progress after many kills"
            );
            stats.attempts += 1;
            let delay = Duration::from_micros(rng.gen_range(0..full_us));
            let mut child = Command::new(env!("CARGO_BIN_EXE_lvh"))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let start = Instant::now();
            let mut exited = None;
            while start.elapsed() < delay {
                if let Some(s) = child.try_wait().unwrap() {
                    exited = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            if exited.is_none() {
                // `Child::kill` sends SIGKILL on Unix: no destructor, no flush runs.
                child.kill().unwrap();
            }
            let out = child.wait_with_output().unwrap();
            match exited {
                Some(status) => {
                    assert!(
                        status.success(),
                        "attempt {} failed: {}",
                        stats.attempts,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    on_finished();
                    break;
                }
                None if out.status.success() => {
                    // It finished in the instant between the last poll and the kill.
                    on_finished();
                    break;
                }
                None => {
                    stats.kills += 1;
                    let rows = check();
                    if rows > 0 && rows < total_rows {
                        stats.partial += 1;
                    }
                }
            }
        }
    }
    stats
}

fn run_ok(args: &[String]) -> (Duration, String) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (t.elapsed(), String::from_utf8(out.stdout).unwrap())
}

fn contrast_file(dir: &Path, n: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let (label, verb) = if i % 2 == 0 {
            ("harmless", "bake")
        } else {
            ("harmful", "poison")
        };
        text.push_str(
            &serde_json::json!({
                "text": format!("How do I {verb} bread number {i} for my family?"),
                "label": label,
                "pair": format!("p{}", i / 2),
            })
            .to_string(),
        );
        text.push('\n');
    }
    let p = dir.join("contrast.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn extract_killed_at_random_points_finishes_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    write_tiny_chat_model(&model);
    let (n, shard) = (48usize, 2usize);
    let data = contrast_file(tmp.path(), n);
    let args = |out: &Path| -> Vec<String> {
        [
            "extract",
            "--model",
            model.to_str().unwrap(),
            "--weights",
            "f32",
            "--contrast",
            data.to_str().unwrap(),
            "--hooks",
            "blocks.*.hook_resid_post",
            "--pooling",
            "mean",
            "--batch",
            "2",
            "--shard-size",
            &shard.to_string(),
            "--json",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let reference = tmp.path().join("reference");
    let (full, stdout) = run_ok(&args(&reference));
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["shards_computed"], n / shard);
    assert!(
        summary["peak_rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{summary}"
    );
    let mut want = snapshot(&reference);
    let saved: serde_json::Value =
        serde_json::from_slice(&want.remove("summary.json").expect("summary.json")).unwrap();
    assert_eq!(saved["peak_rss_bytes"], summary["peak_rss_bytes"]);
    assert_eq!(
        want.keys().filter(|k| k.ends_with(".safetensors")).count(),
        n / shard
    );

    let out = tmp.path().join("killed");
    let stats = kill_until_done(
        &KillPlan {
            args: &args(&out),
            full,
            total_rows: n / shard,
            min_kills: 12,
            seed: 0x5eed,
        },
        &|| {
            let _ = std::fs::remove_dir_all(&out);
        },
        &|| check_extract_after_kill(&out),
        &|| {
            let mut got = snapshot(&out);
            got.remove("summary.json").expect("summary.json");
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "files differ (a leftover temporary file or a missing shard)"
            );
            for (name, bytes) in &want {
                assert!(
                    got[name] == *bytes,
                    "{name} differs from the uninterrupted run"
                );
            }
        },
    );
    eprintln!(
        "extract: {} kills ({} with partial progress) in {} attempts; full run {:?}; \
         kills leaving temporary files (both tests): {}",
        stats.kills,
        stats.partial,
        stats.attempts,
        full,
        KILLS_WITH_TEMP_FILES.load(Ordering::Relaxed)
    );
    assert!(stats.kills >= 12);
    assert!(
        stats.partial >= 3,
        "only {} kills landed mid-run",
        stats.partial
    );
}

#[test]
fn judge_killed_at_random_points_finishes_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    write_tiny_chat_model(&model);
    let n = 10usize;
    let pairs = tmp.path().join("pairs.jsonl");
    let mut text = String::new();
    for i in 0..n {
        text.push_str(
            &serde_json::json!({
                "prompt": format!("Question {i}?"),
                "chosen": format!("Careful answer {i}."),
                "rejected": format!("Reckless answer {i}!"),
            })
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&pairs, text).unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "judge",
            "--constitution",
            "honesty",
            "--model",
            model.to_str().unwrap(),
            "--pairs",
            pairs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let ref_dir = tmp.path().join("reference");
    std::fs::create_dir(&ref_dir).unwrap();
    let (full, _) = run_ok(&args(&ref_dir.join("labels.jsonl")));
    let want = snapshot(&ref_dir);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        ["labels.jsonl", "labels.manifest.json"]
    );
    assert_eq!(
        String::from_utf8_lossy(&want["labels.jsonl"])
            .lines()
            .count(),
        n
    );

    let out_dir = tmp.path().join("killed");
    let out = out_dir.join("labels.jsonl");
    let stats = kill_until_done(
        &KillPlan {
            args: &args(&out),
            full,
            total_rows: n,
            min_kills: 12,
            seed: 0x7a11,
        },
        &|| {
            let _ = std::fs::remove_dir_all(&out_dir);
            std::fs::create_dir(&out_dir).unwrap();
        },
        &|| check_judge_after_kill(&out),
        &|| {
            let got = snapshot(&out_dir);
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "files differ (a leftover temporary file?)"
            );
            for (name, bytes) in &want {
                assert!(
                    got[name] == *bytes,
                    "{name} differs from the uninterrupted run"
                );
            }
        },
    );
    eprintln!(
        "judge: {} kills ({} with partial progress) in {} attempts; full run {:?}; \
         kills leaving temporary files (both tests): {}",
        stats.kills,
        stats.partial,
        stats.attempts,
        full,
        KILLS_WITH_TEMP_FILES.load(Ordering::Relaxed)
    );
    assert!(stats.kills >= 12);
    assert!(
        stats.partial >= 3,
        "only {} kills landed mid-run",
        stats.partial
    );
}

#[test]
fn extract_fits_its_batch_to_max_memory_and_refuses_a_budget_too_small() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    write_tiny_chat_model(&model);
    let data = contrast_file(tmp.path(), 6);
    let run = |out: &str, budget: &str| {
        Command::new(env!("CARGO_BIN_EXE_lvh"))
            .args([
                "extract",
                "--model",
                model.to_str().unwrap(),
                "--contrast",
                data.to_str().unwrap(),
                "--pooling",
                "mean",
                "--batch",
                "8",
                "--shard-size",
                "4",
                "--json",
                "--max-memory",
                budget,
                "--out",
                tmp.path().join(out).to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    // About 0.7 MB per prompt on this model: 1 MiB holds one prompt, not two.
    let o = run("one", "1M");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["batch"], 1, "{j}");
    assert_eq!(j["shard_size"], 4);
    assert_eq!(j["max_memory"]["budget_bytes"], 1 << 20);
    let est = j["max_memory"]["estimate_bytes"].as_u64().unwrap();
    assert!(est <= 1 << 20 && est > 1 << 18, "{j}");
    assert!(j["max_memory"]["longest_prompt_tokens"].as_u64().unwrap() > 20);
    assert!(j["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    // A roomy budget keeps the asked batch.
    let o = run("roomy", "1G");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["batch"], 8, "{j}");
    // Too small for even one prompt: refused before any work, naming budget and prompt.
    let o = run("none", "1K");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(
            "error: --max-memory 1.00 KiB: even a batch of 1 does not fit: the longest prompt ("
        ) && err.contains("tokens) needs about"),
        "{err}"
    );
    assert!(!tmp.path().join("none").exists());
}
