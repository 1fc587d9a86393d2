//! `lvh rlaif` end to end on a tiny random-weight model (byte vocabulary, ChatML template,
//! written as a complete GGUF so the real binary loads it): the full loop runs and is
//! deterministic, its checkpoint files have exactly the rows the plan asks for, a rerun with
//! other arguments into the same folder is refused, and a run killed with SIGKILL at several
//! seeded random moments, then rerun, ends with every file byte-identical to an uninterrupted
//! run's (rows neither lost nor duplicated).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use lm_runtime::model::random::RandomLlama;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random llama with a 258-token byte vocabulary (`<|im_start|>`, `<|im_end|>` = EOS) and a
/// ChatML template.
fn write_tiny(path: &Path, seed: u64) {
    RandomLlama {
        context: 4096,
        ..RandomLlama::default()
    }
    .write_chat(path, &mut ChaCha8Rng::seed_from_u64(seed))
    .unwrap();
}

/// A small contrast set (the bundled one has 320 items; 40 keep the debug build quick).
fn write_contrast(path: &Path) {
    let mut text = String::new();
    for i in 0..20 {
        for (label, what) in [("harmless", "bake bread"), ("harmful", "hurt people")] {
            text.push_str(
                &serde_json::json!({"text": format!("How do I {what}, case {i}?"), "label": label, "pair": format!("p{i}")})
                    .to_string(),
            );
            text.push('\n');
        }
    }
    std::fs::write(path, text).unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    contrast: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = root.join("tiny.gguf");
    write_tiny(&model, 5);
    let contrast = root.join("contrast.jsonl");
    write_contrast(&contrast);
    Setup {
        _dir: dir,
        root,
        model,
        contrast,
    }
}

const N_PROMPTS: usize = 3;
const SAMPLES: usize = 3;
const ROUNDS: usize = 2;

fn args(s: &Setup, out: &Path, overrides: &[(&str, &str)]) -> Vec<String> {
    let model = s.model.display().to_string();
    let contrast = s.contrast.display().to_string();
    let out = out.display().to_string();
    let mut flags: Vec<(&str, &str)> = vec![
        ("--constitution", "honesty"),
        ("--weights", "quantized"),
        ("--n-prompts", "3"),
        ("--samples", "3"),
        ("--rounds", "2"),
        ("--max-tokens", "6"),
        ("--eval-pairs", "4"),
        ("--resamples", "50"),
        ("--layer", "1"),
        ("--eta", "0.5"),
        ("--seed", "11"),
        ("--model", &model),
        ("--contrast", &contrast),
        ("--out", &out),
    ];
    for (k, v) in overrides {
        flags.iter_mut().find(|f| f.0 == *k).expect("known flag").1 = v;
    }
    let mut v = vec!["rlaif".to_owned(), "--json".to_owned()];
    for (k, x) in flags {
        v.push(k.to_owned());
        v.push(x.to_owned());
    }
    v
}

fn lvh(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(args)
        .output()
        .unwrap()
}

/// Every non-hidden file under `dir` (relative path → bytes). Hidden files are the temporary
/// files of atomic writes a kill may leave behind.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn jsonl_rows(bytes: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn full_loop_is_deterministic_with_exact_checkpoints_and_refuses_other_args() {
    let s = setup();
    let a = s.root.join("a");
    let b = s.root.join("b");
    let out_a = lvh(&args(&s, &a, &[]));
    assert!(
        out_a.status.success(),
        "{}",
        String::from_utf8_lossy(&out_a.stderr)
    );
    let out_b = lvh(&args(&s, &b, &[]));
    assert!(out_b.status.success());
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(
            v == &fb[k],
            "{k} differs between two runs with the same seed"
        );
    }
    assert_eq!(out_a.stdout, out_b.stdout);

    // Checkpoint files hold exactly the planned rows.
    for t in 0..=ROUNDS {
        let rows = jsonl_rows(&fa[&format!("round-{t}/samples.jsonl")]);
        let keys: BTreeSet<(u64, u64)> = rows
            .iter()
            .map(|r| (r["prompt"].as_u64().unwrap(), r["sample"].as_u64().unwrap()))
            .collect();
        assert_eq!(rows.len(), N_PROMPTS * SAMPLES);
        assert_eq!(keys.len(), rows.len(), "round {t}: duplicated responses");
        for r in &rows {
            assert!(r["tokens"].as_array().unwrap().len() <= 6);
            assert_eq!(r["h"].as_str().unwrap().len(), 64 * 8, "64 f32 in hex");
        }
        if t < ROUNDS {
            let labels = jsonl_rows(&fa[&format!("round-{t}/labels.jsonl")]);
            assert_eq!(labels.len(), N_PROMPTS * SAMPLES * (SAMPLES - 1) / 2);
            assert!(fa.contains_key(&format!("round-{}/reward.json", t + 1)));
        }
    }
    assert_eq!(jsonl_rows(&fa["human.jsonl"]).len(), 4);
    assert_eq!(jsonl_rows(&fa["human_acts.jsonl"]).len(), 4);

    // The result: the round-1 steering vector has norm exactly η n̄; best-of-n KL is log n −
    // (n−1)/n; the predictions are the products the docs state.
    let r: serde_json::Value = serde_json::from_slice(&fa["result.json"]).unwrap();
    let rounds = r["round_reports"].as_array().unwrap();
    assert_eq!(rounds.len(), ROUNDS);
    let first = &rounds[0];
    let scale = first["steering"]["total_scale"].as_f64().unwrap();
    assert!((scale - 0.5).abs() < 1e-5, "|v_1| / n̄ = {scale}");
    let second = rounds[1]["steering"]["total_scale"].as_f64().unwrap();
    assert!(second <= 1.0 + 1e-5 && second > 0.0, "|v_2| / n̄ = {second}");
    let bon = &first["best_of_n"];
    let kl = bon["kl"].as_f64().unwrap();
    assert!((kl - (3f64.ln() - 2.0 / 3.0)).abs() < 1e-12);
    let e3 = bon["e_n"].as_f64().unwrap();
    assert!((e3 - 1.5 / std::f64::consts::PI.sqrt()).abs() < 1e-6);
    let a_p = r["probe"]["a_probe"]["value"].as_f64().unwrap();
    let a_c = r["judge"]["a_c"]["value"].as_f64().unwrap();
    let pred = bon["predicted"]["value"].as_f64().unwrap();
    assert!((pred - a_p * a_c * e3).abs() < 1e-12);
    let shift = first["steering"]["reward_shift"]["value"].as_f64().unwrap();
    let spred = first["steering"]["predicted"]["value"].as_f64().unwrap();
    assert!((spred - a_p * a_c * shift).abs() < 1e-12);
    for k in ["observed", "default_observed"] {
        let o = &bon[k];
        let (v, lo, hi) = (
            o["value"].as_f64().unwrap(),
            o["ci"]["lo"].as_f64().unwrap(),
            o["ci"]["hi"].as_f64().unwrap(),
        );
        assert!(
            v.is_finite() && lo <= v + 1e-12 && v <= hi + 1e-12,
            "{k}: {o}"
        );
    }
    assert!(std::str::from_utf8(&fa["report.html"])
        .unwrap()
        .contains("<svg"));

    // Rerunning the finished run recomputes nothing and reports the same bytes.
    let again = lvh(&args(&s, &a, &[]));
    assert!(again.status.success());
    assert_eq!(again.stdout, out_a.stdout);
    assert_eq!(files(&a), fa);

    // Other arguments into the same folder: refused, naming what differs; nothing touched.
    let other = lvh(&args(&s, &a, &[("--eta", "0.7")]));
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("differs in: settings"), "{err}");
    let seed = lvh(&args(&s, &a, &[("--seed", "12")]));
    assert!(String::from_utf8_lossy(&seed.stderr).contains("seed"));
    assert_eq!(files(&a), fa);
}

#[test]
fn sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run_byte_for_byte() {
    let s = setup();
    let full = s.root.join("full");
    let started = Instant::now();
    let out = lvh(&args(&s, &full, &[]));
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = files(&full);

    let killed = s.root.join("killed");
    let a = args(&s, &killed, &[]);
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut kills = 0;
    let mut partial = 0;
    let mut kill_points = Vec::new();
    for _ in 0..12 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lvh"))
            .args(&a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A seeded moment early in the uninterrupted run's wall time: every rerun resumes, so
        // each kill lands in a later stage (probe, human pairs, samples, labels, rewards).
        let at = wall.mul_f64(rng.gen_range(0.08..0.3));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        kills += 1;
        // What the kill left: finished checkpoint rows and files, no result yet.
        let state = files(&killed);
        let rows: usize = state
            .iter()
            .filter(|(k, _)| k.ends_with(".jsonl"))
            .map(|(_, v)| v.iter().filter(|&&b| b == b'\n').count())
            .sum();
        eprintln!(
            "kill {kills} at {at:?}: {rows} checkpoint rows, files {:?}",
            state.keys().collect::<Vec<_>>()
        );
        if rows > 0 && !state.contains_key("result.json") {
            partial += 1;
        }
        kill_points.push(at);
        if kills == 5 {
            break;
        }
    }
    assert!(
        partial >= 1,
        "no kill interrupted a run midway ({kills} kills at {kill_points:?})"
    );
    assert!(kills >= 3, "only {kills} kills landed (run took {wall:?})");
    let last = lvh(&a);
    assert!(
        last.status.success(),
        "after kills at {kill_points:?}: {}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert_eq!(last.stdout, out.stdout);
    let got = files(&killed);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (k, v) in &reference {
        assert!(
            v == &got[k],
            "{k} differs after {kills} kills at {kill_points:?}"
        );
    }
}
