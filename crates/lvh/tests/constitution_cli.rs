//! `lvh constitution list` works from any directory (the library is embedded).

use std::process::Command;

#[test]
fn list_json_from_another_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(["constitution", "list", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 8);
    let adv: Vec<&str> = rows
        .iter()
        .filter(|r| r["adversarial"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(adv, ["adversarial-compliance", "adversarial-edgy"]);
    assert!(rows
        .iter()
        .all(|r| r["description"].as_str().is_some_and(|d| !d.is_empty())));
}

#[test]
fn show_unknown_name_fails_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_lvh"))
        .args(["constitution", "show", "nonexistent-xyz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nonexistent-xyz") && err.contains("helpful-and-harmless"),
        "{err}"
    );
}
