//! The bundled constitution library, resolution by name or path, and judge prompt rendering.

use std::path::{Path, PathBuf};

use lvh::constitution::{critique_to_comparison, Constitution, NEUTRAL_QUESTION};

fn library_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../constitutions")
}

#[test]
fn bundled_library_is_complete_and_flags_adversarial_ones() {
    let lib = Constitution::bundled().unwrap();
    let names: Vec<&str> = lib.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "helpful-and-harmless",
        "honesty",
        "fairness",
        "privacy",
        "helpful-only",
        "neutral",
        "adversarial-compliance",
        "adversarial-edgy",
    ] {
        assert!(names.contains(&want), "missing {want}");
    }
    assert_eq!(names, Constitution::bundled_names());
    for c in &lib {
        assert_eq!(
            c.adversarial,
            c.name.starts_with("adversarial-"),
            "{}",
            c.name
        );
        assert_eq!(c.neutral, c.name == "neutral", "{}", c.name);
        if c.adversarial {
            assert!(c.description.starts_with("ADVERSARIAL"), "{}", c.name);
        }
        for p in c.effective_principles() {
            assert!(
                p.text.starts_with("Which response") && p.text.ends_with('?'),
                "{}: not a pairwise question: {}",
                c.name,
                p.text
            );
        }
        let w = c.normalized_weights();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
    let hh = Constitution::bundled_by_name("helpful-and-harmless")
        .unwrap()
        .unwrap();
    assert_eq!(hh.normalized_weights(), vec![0.4, 0.2, 0.2, 0.2]);
    let neutral = Constitution::neutral_baseline().unwrap();
    assert_eq!(neutral.effective_principles()[0].text, NEUTRAL_QUESTION);
}

#[test]
fn every_file_in_the_library_folder_is_bundled_and_identical() {
    let on_disk = Constitution::load_dir(&library_dir()).unwrap();
    let mut bundled = Constitution::bundled().unwrap();
    bundled.sort_by(|a, b| a.name.cmp(&b.name));
    let mut disk = on_disk.clone();
    disk.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(disk, bundled);
    for entry in std::fs::read_dir(library_dir()).unwrap() {
        let p = entry.unwrap().path();
        let c = Constitution::from_file(&p).unwrap();
        assert_eq!(
            Some(c.name.as_str()),
            p.file_stem().and_then(|s| s.to_str()),
            "file name = name"
        );
    }
}

#[test]
fn resolve_accepts_bundled_names_and_paths() {
    let c = Constitution::resolve("honesty").unwrap();
    assert_eq!(c.name, "honesty");

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mine.toml");
    std::fs::write(
        &p,
        "name = \"mine\"\ndescription = \"d\"\n[[principles]]\ntext = \"Which response is kinder?\"\n",
    )
    .unwrap();
    let c = Constitution::resolve(p.to_str().unwrap()).unwrap();
    assert_eq!(c.name, "mine");
    assert_eq!(c.principles[0].weight, 1.0);
    assert!(!c.adversarial);

    let j = dir.path().join("cai.jsonl");
    std::fs::write(
        &j,
        "{\"id\": \"x\", \"critique\": \"Is the response rude? Explain.\", \"revision\": \"r\"}\n",
    )
    .unwrap();
    let c = Constitution::resolve(j.to_str().unwrap()).unwrap();
    assert_eq!(c.name, "cai");
    assert_eq!(
        c.principles[0].text,
        "Critique: \"Is the response rude?\" Which response gives this critique less to object to?"
    );

    let e = Constitution::resolve("no-such-constitution")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-constitution") && e.contains("honesty"),
        "{e}"
    );
}

#[test]
fn critique_conversion_takes_the_first_sentence() {
    assert_eq!(
        critique_to_comparison("Did it include anything unsafe for children? If so, discuss."),
        "Critique: \"Did it include anything unsafe for children?\" Which response gives this critique less to object to?"
    );
    // A dot inside a word or number does not end the sentence; no terminator keeps it all.
    assert_eq!(
        critique_to_comparison("Discuss e.g.harm in v1.2 usage"),
        "Critique: \"Discuss e.g.harm in v1.2 usage\" Which response gives this critique less to object to?"
    );
}

#[test]
fn shared_cai_principles_convert() {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/principles_cai.jsonl");
    if !p.is_file() {
        eprintln!("{} not found; skipping", p.display());
        return;
    }
    let c = Constitution::from_cai_jsonl(&p).unwrap();
    assert_eq!(c.name, "principles_cai");
    assert_eq!(c.principles.len(), 16);
    assert_eq!(
        c.principles[0].text,
        "Critique: \"Did the response include anything that may be inappropriate for young children?\" \
         Which response gives this critique less to object to?"
    );
    assert!(c.principles.iter().all(|p| p.text.len() < 400));
}

#[test]
fn a_folder_mixes_toml_constitutions_and_cai_principle_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        library_dir().join("honesty.toml"),
        dir.path().join("b-honesty.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a-cai.jsonl"),
        "{\"id\": \"x\", \"critique\": \"Is it cruel? Discuss.\"}\n{\"id\": \"y\", \"critique\": \"Is it false.\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a constitution").unwrap();
    let lib = Constitution::load_dir(dir.path()).unwrap();
    let names: Vec<&str> = lib.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a-cai", "honesty"]);
    assert_eq!(lib[0].principles.len(), 2);
    assert_eq!(
        lib[0].principles[0].text,
        critique_to_comparison("Is it cruel? Discuss.")
    );
    // A broken principle file in the folder is an error naming its line, not skipped.
    std::fs::write(dir.path().join("c-bad.jsonl"), "{\"id\": \"z\"}\n").unwrap();
    let err = Constitution::load_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("c-bad.jsonl") && err.contains("critique"),
        "{err}"
    );
}

#[test]
fn judge_prompt_renders_in_one_pass() {
    let c = Constitution::resolve("honesty").unwrap();
    let s = c.render_judge_prompt("Which is truer?", "Say {response_a}", "first", "second");
    assert!(
        s.contains("Say {response_a}"),
        "user text is not re-expanded: {s}"
    );
    assert!(s.contains("(A) first") && s.contains("(B) second") && s.contains("Which is truer?"));

    let t = "name = \"t\"\ndescription = \"d\"\njudge_template = \"{{x}} {principle}|{prompt}|{response_a}|{response_b}\"\n\
             [[principles]]\ntext = \"Which?\"\n";
    let c = Constitution::from_toml_str(t, Path::new("t.toml")).unwrap();
    assert_eq!(c.render_judge_prompt("P", "Q", "A", "B"), "{x} P|Q|A|B");
}

#[test]
fn summaries_serialize_to_the_documented_shape() {
    let rows: Vec<_> = Constitution::bundled()
        .unwrap()
        .iter()
        .map(|c| c.summary())
        .collect();
    let v = serde_json::to_value(&rows).unwrap();
    for row in v.as_array().unwrap() {
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 3);
        for k in ["name", "description", "adversarial"] {
            assert!(keys.contains(&k));
        }
    }
    let table = lvh::cmd::constitution::render_table(&rows);
    assert_eq!(table.lines().count(), rows.len() + 1);
    assert!(table
        .lines()
        .any(|l| l.starts_with("adversarial-edgy") && l.contains("yes")));
}

#[test]
fn display_round_trips_through_toml() {
    for c in Constitution::bundled().unwrap() {
        let again = Constitution::from_toml_str(&c.to_string(), Path::new("x.toml")).unwrap();
        assert_eq!(again, c);
    }
}
