//! `lvh rlaif` on the real default model (SmolLM2), when `LVH_TEST_MODEL` names its GGUF file:
//! a small loop runs, its responses are real text, the reward model is fitted on every judged
//! pair, the round-1 steering vector has the requested size, and every reported number is
//! finite. Skipped (passing) without the variable. Run in `--release`.

use std::process::Command;

#[test]
fn smollm2_small_rlaif_loop_reports_finite_observed_and_predicted_changes() {
    let Ok(model) = std::env::var("LVH_TEST_MODEL") else {
        eprintln!("LVH_TEST_MODEL not set: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let status = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args([
            "rlaif",
            "--constitution",
            "helpful-and-harmless",
            "--model",
            &model,
            "--n-prompts",
            "2",
            "--samples",
            "2",
            "--max-tokens",
            "8",
            "--rounds",
            "1",
            "--eval-pairs",
            "4",
            "--resamples",
            "100",
            "--eta",
            "0.25",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(out.join("round-0/samples.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .any(|r| r["text"].as_str().unwrap().chars().any(char::is_alphabetic)),
        "SmolLM2 answers in words: {rows:?}"
    );
    // SmolLM2-135M: d_model 576, 30 blocks; the default layer is the middle one.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(r["layer"].as_u64(), Some(15));
    let round = &r["round_reports"][0];
    assert_eq!(round["reward"]["n_pairs"].as_u64(), Some(2));
    let scale = round["steering"]["total_scale"].as_f64().unwrap();
    assert!((scale - 0.25).abs() < 1e-5, "|v_1|/n̄ = {scale}");
    for v in [
        &r["judge"]["a_c"]["value"],
        &r["judge"]["a_gen"]["value"],
        &r["probe"]["a_probe"]["value"],
        &r["base"]["probe_sd"],
        &round["best_of_n"]["observed"]["value"],
        &round["best_of_n"]["predicted"]["value"],
        &round["steering"]["observed"]["value"],
        &round["steering"]["predicted"]["value"],
    ] {
        assert!(v.as_f64().is_some_and(f64::is_finite), "{v} in {r}");
    }
    let acc = r["probe"]["contrast_heldout_accuracy"][0].as_f64().unwrap();
    assert!(
        acc > 0.7,
        "the value probe separates held-out contrast items: {acc}"
    );
}
