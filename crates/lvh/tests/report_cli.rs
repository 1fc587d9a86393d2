//! `lvh report` on saved runs: a run folder (`manifest.json`) and an output with its manifest
//! beside it render together (tables, JSONL rows, embedded SVG, escaped text); runs whose
//! manifests disagree (lvh version, model, data bytes, seed) are refused naming the field and
//! both values; a folder without a manifest is refused naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use lvh::cmd::judge::{check_manifest, manifest_path};
use lvh::run_dir::{FileProvenance, Manifest, RunDir, VERSION};

const SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><script>alert(1)</script><rect width=\"5\" height=\"5\"/></svg>";

fn prov(path: &str, sha: char) -> FileProvenance {
    FileProvenance {
        path: path.into(),
        sha256: sha.to_string().repeat(64),
    }
}

/// An extract-like run folder written through `RunDir`.
fn extract_run(dir: &Path, model_sha: char) -> PathBuf {
    let mut m = Manifest::new(
        "extract",
        serde_json::json!({"hooks": ["blocks.0.hook_resid_post"], "pooling": "mean", "shard_size": 2}),
    );
    m.model = Some(prov("tiny.gguf", model_sha));
    m.data = vec![prov("data/contrast.jsonl", 'c')];
    let run = RunDir::open(dir, &m).unwrap();
    run.write_json(
        "items.json",
        &serde_json::json!([
            {"id": 0, "label": "harmless", "pair": "p0", "split": "dev"},
            {"id": 1, "label": "harmful", "pair": "p0", "split": "heldout"},
        ]),
    )
    .unwrap();
    run.write_json(
        "summary.json",
        &serde_json::json!({"items": 2, "items_per_s": 12.345678, "peak_rss_bytes": 123456789u64}),
    )
    .unwrap();
    run.write_bytes(
        "shards.jsonl",
        b"{\"shard\":0,\"file\":\"acts-00000.safetensors\",\"first\":0,\"n_items\":2,\"n_tokens\":17}\n",
    )
    .unwrap();
    run.write_bytes("acts-00000.safetensors", &[0u8; 2048])
        .unwrap();
    run.write_bytes("geometry.svg", SVG.as_bytes()).unwrap();
    dir.to_path_buf()
}

/// A judge-like output `labels.jsonl` with `labels.manifest.json` beside it.
fn judge_run(dir: &Path, seed: u64, data_sha: char) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("labels.jsonl");
    let mut m = Manifest::new(
        "judge",
        serde_json::json!({"constitutions": [{"name": "honesty"}], "sample": null}),
    );
    m.seed = Some(seed);
    m.model = Some(prov("tiny.gguf", 'a'));
    m.data = vec![prov("data/preferences.jsonl", data_sha)];
    check_manifest(&manifest_path(&out), &m).unwrap();
    let mut text = String::new();
    for i in 0..3 {
        text.push_str(
            &serde_json::json!({
                "index": i,
                "prompt": format!("<b>question {i}</b>"),
                "chosen": "yes",
                "rejected": "no",
                "p_first": 0.75,
                "score": 1.0986,
            })
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&out, text).unwrap();
    out
}

fn lvh(args: &[&Path], extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .arg("report")
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn matching_runs_render_together() {
    let tmp = tempfile::tempdir().unwrap();
    let a = extract_run(&tmp.path().join("extract"), 'a');
    let judge_dir = tmp.path().join("judge");
    judge_run(&judge_dir, 0, 'p');
    let html_path = tmp.path().join("report.html");
    let (ok, stdout, err) = lvh(
        &[&a, &judge_dir],
        &["--out", html_path.to_str().unwrap(), "--json"],
    );
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    // Both runs, their manifests and their files.
    assert!(html.contains(&format!("{} <small>(", "extract")), "{html}");
    assert!(html.contains(&format!(
        "<small>({})</small>",
        judge_dir.join("labels.manifest.json").display()
    )));
    assert!(html.contains(&"a".repeat(64)) && html.contains(&"p".repeat(64)));
    assert!(html.contains(&format!("<td>{VERSION}</td>")));
    // items.json as a table, summary.json as key/value rows with rounded numbers.
    assert!(html.contains("<th>label</th>") && html.contains("<td>heldout</td>"));
    assert!(html.contains("<tr><th>items_per_s</th><td>12.3457</td></tr>"));
    assert!(html.contains("<tr><th>peak_rss_bytes</th><td>123456789</td></tr>"));
    // JSONL logs: row counts and rows, text escaped.
    assert!(html.contains("labels.jsonl <small>(3 rows)</small>"));
    assert!(html.contains("shards.jsonl <small>(1 rows)</small>"));
    assert!(html.contains("&lt;b&gt;question 2&lt;/b&gt;"));
    assert!(!html.contains("<b>question"));
    // The SVG is embedded as an image (its script inert), other files listed with their size.
    assert!(html.contains("src=\"data:image/svg+xml;base64,PHN2ZyB4bWxucz0i"));
    assert!(!html.contains("<script>"));
    assert!(html.contains("acts-00000.safetensors (2.00 KiB)"));
    // The JSON view.
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["manifest"]["command"], "extract");
    assert_eq!(runs[1]["manifest"]["command"], "judge");
    let labels = &runs[1]["files"][0];
    assert_eq!(labels["name"], "labels.jsonl");
    assert_eq!(labels["rows"], 3);
    let summary = runs[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "summary.json")
        .unwrap();
    assert_eq!(summary["json"]["peak_rss_bytes"], 123456789u64);
    // The output file names a run too; HTML goes to stdout without --out. Only the files of
    // that output belong to it (`labels.v2.*` is another run's, `labels.jsonl` not `labels.v2`'s).
    std::fs::copy(
        judge_dir.join("labels.jsonl"),
        judge_dir.join("labels.v2.jsonl"),
    )
    .unwrap();
    std::fs::copy(
        judge_dir.join("labels.manifest.json"),
        judge_dir.join("labels.v2.manifest.json"),
    )
    .unwrap();
    let (ok, stdout, err) = lvh(&[&judge_dir.join("labels.jsonl")], &[]);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("<!DOCTYPE html>") && stdout.contains("labels.jsonl <small>"));
    assert!(!stdout.contains("labels.v2.jsonl"));
    let (ok, stdout, err) = lvh(&[&judge_dir.join("labels.v2.jsonl")], &["--json"]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = j["runs"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["labels.v2.jsonl"]);
    // The folder holds both runs.
    let (ok, stdout, err) = lvh(&[&judge_dir], &["--json"]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["runs"].as_array().unwrap().len(), 2);
}

#[test]
fn runs_that_disagree_are_refused_naming_the_field_and_both_values() {
    let tmp = tempfile::tempdir().unwrap();
    let a = extract_run(&tmp.path().join("a"), 'a');
    let b = extract_run(&tmp.path().join("b"), 'b');
    let (ok, _, err) = lvh(&[&a, &b], &[]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "error: refusing to mix runs: {} and {} differ in model sha256: {} (tiny.gguf) vs {} (tiny.gguf)",
            a.display(),
            b.display(),
            "a".repeat(64),
            "b".repeat(64)
        )
    );
    // Another lvh version.
    let c = extract_run(&tmp.path().join("c"), 'a');
    let mpath = c.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).unwrap().replace(
        &format!("\"lvh_version\": \"{VERSION}\""),
        "\"lvh_version\": \"0.0.1-old\"",
    );
    std::fs::write(&mpath, text).unwrap();
    let (ok, _, err) = lvh(&[&a, &c], &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{} and {} differ in lvh_version: {VERSION} vs 0.0.1-old",
            a.display(),
            c.display()
        )),
        "{err}"
    );
    // Two judge runs with other seeds, or the same data path with other bytes.
    let j0 = judge_run(&tmp.path().join("j0"), 0, 'p');
    let j1 = judge_run(&tmp.path().join("j1"), 1, 'p');
    let (ok, _, err) = lvh(&[&j0, &j1], &[]);
    assert!(!ok);
    assert!(err.contains("differ in seed: 0 vs 1"), "{err}");
    let j2 = judge_run(&tmp.path().join("j2"), 0, 'q');
    let (ok, _, err) = lvh(&[&j0, &j2], &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "differ in data sha256 of data/preferences.jsonl: {} vs {}",
            "p".repeat(64),
            "q".repeat(64)
        )),
        "{err}"
    );
    // The extract run read other data than the judge run: that is no conflict.
    let (ok, _, err) = lvh(&[&a, &j0], &["--json"]);
    assert!(ok, "{err}");
}

#[test]
fn a_folder_without_a_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("trace.json"), "{}").unwrap();
    let (ok, _, err) = lvh(&[tmp.path()], &[]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "error: {}: not a run folder (no manifest.json and no *.manifest.json)",
            tmp.path().display()
        )
    );
}

/// `lvh theory demo --out` and `lvh simulate --out` leave a manifest (seed, the model file's
/// hash), so their folders render; two simulations of one model file with different seeds are
/// refused together, and rerunning into a folder with another seed is refused.
#[test]
fn theory_demo_and_simulate_folders_render() {
    let tmp = std::env::temp_dir().join(format!("lvh-report-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (demo, sim_a, sim_b) = (tmp.join("demo"), tmp.join("sim-a"), tmp.join("sim-b"));
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lvh"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    assert!(run(&["theory", "demo", "--quick", "--out", &s(&demo)]).0);
    let model = s(&demo.join("demo-model.json"));
    assert!(run(&["simulate", &model, "--seed", "3", "--out", &s(&sim_a)]).0);
    assert!(run(&["simulate", &model, "--seed", "4", "--out", &s(&sim_b)]).0);
    let m: Manifest =
        serde_json::from_str(&std::fs::read_to_string(sim_a.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!((m.command.as_str(), m.seed), ("simulate", Some(3)));
    assert_eq!(m.data[0].path, model);

    let (ok, stdout, stderr) = lvh(&[&demo, &sim_a], &["--json"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("trace.json") && stdout.contains("results.json"),
        "{stdout}"
    );
    let (ok, _, stderr) = lvh(&[&sim_a, &sim_b], &["--json"]);
    assert!(!ok && stderr.contains("seed"), "{stderr}");
    let (ok, stderr) = run(&["simulate", &model, "--seed", "5", "--out", &s(&sim_a)]);
    assert!(!ok && stderr.contains("different run"), "{stderr}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
