//! Bad constitutions are refused with the file and the field named.

use std::path::Path;

use lvh::constitution::{Constitution, ConstitutionError};

const OK_TAIL: &str = "[[principles]]\ntext = \"Which response is better for the user?\"\n";

fn parse(text: &str) -> Result<Constitution, ConstitutionError> {
    Constitution::from_toml_str(text, Path::new("lib/c.toml"))
}

fn err(text: &str) -> String {
    parse(text).expect_err("expected an error").to_string()
}

#[test]
fn unknown_keys_are_errors() {
    let e = err(&format!(
        "name = \"a\"\ndescription = \"d\"\ncolour = \"red\"\n{OK_TAIL}"
    ));
    assert!(e.starts_with("lib/c.toml:") && e.contains("colour"), "{e}");
    let e =
        err("name = \"a\"\ndescription = \"d\"\n[[principles]]\ntext = \"Which?\"\nwieght = 2.0\n");
    assert!(e.contains("wieght"), "{e}");
}

#[test]
fn syntax_errors_give_the_line() {
    let e = err("name = \"a\"\ndescription = \"d\"\nadversarial = maybe\n");
    assert!(e.starts_with("lib/c.toml:") && e.contains("line 3"), "{e}");
    let e = err("name = \"a\"\ndescription = \"d\"\nadversarial = \"yes\"\n");
    assert!(e.contains("adversarial") || e.contains("line 3"), "{e}");
}

#[test]
fn invalid_values_name_the_field() {
    let cases = [
        (format!("name = \"\"\ndescription = \"d\"\n{OK_TAIL}"), "`name`"),
        (format!("name = \"two words\"\ndescription = \"d\"\n{OK_TAIL}"), "`name`"),
        (format!("name = \"a\"\ndescription = \" \"\n{OK_TAIL}"), "`description`"),
        ("name = \"a\"\ndescription = \"d\"\n".to_string(), "`principles`"),
        (format!("name = \"a\"\ndescription = \"d\"\n{OK_TAIL}[[principles]]\ntext = \"Which is b?\"\nweight = 0.0\n"), "`principles[1].weight`"),
        (format!("name = \"a\"\ndescription = \"d\"\n{OK_TAIL}[[principles]]\ntext = \"Which is b?\"\nweight = -1.0\n"), "`principles[1].weight`"),
        (format!("name = \"a\"\ndescription = \"d\"\n{OK_TAIL}[[principles]]\ntext = \"Which is b?\"\nweight = nan\n"), "`principles[1].weight`"),
        (format!("name = \"a\"\ndescription = \"d\"\n{OK_TAIL}[[principles]]\ntext = \"Which is b?\"\nweight = inf\n"), "`principles[1].weight`"),
        (format!("name = \"a\"\ndescription = \"d\"\n{OK_TAIL}[[principles]]\ntext = \"\"\n"), "`principles[1].text`"),
        (format!("name = \"a\"\ndescription = \"d\"\n{OK_TAIL}{OK_TAIL}"), "`principles[1].text`"),
        (format!("name = \"a\"\ndescription = \"d\"\nneutral = true\nadversarial = true\n{OK_TAIL}"), "`adversarial`"),
        (format!("name = \"a\"\ndescription = \"d\"\njudge_template = \"{{principle}} {{prompt}} {{response_a}}\"\n{OK_TAIL}"), "missing placeholder `{response_b}`"),
        (format!("name = \"a\"\ndescription = \"d\"\njudge_template = \"{{principle}} {{prompt}} {{response_a}} {{response_b}} {{model}}\"\n{OK_TAIL}"), "unknown placeholder `{model}`"),
        (format!("name = \"a\"\ndescription = \"d\"\njudge_template = \"{{principle}} {{prompt}} {{response_a}} {{response_b\"\n{OK_TAIL}"), "unclosed"),
    ];
    for (text, field) in cases {
        let e = err(&text);
        assert!(e.starts_with("lib/c.toml: field"), "{e}");
        assert!(e.contains(field), "{e:?} should name {field:?}");
    }
}

#[test]
fn neutral_may_have_no_principles() {
    let c = parse("name = \"base\"\ndescription = \"d\"\nneutral = true\n").unwrap();
    assert!(c.principles.is_empty());
    assert_eq!(c.effective_principles().len(), 1);
    assert_eq!(c.normalized_weights(), vec![1.0]);
}

#[test]
fn file_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.toml");
    let e = Constitution::from_file(&missing).unwrap_err().to_string();
    assert!(e.contains("gone.toml"), "{e}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"a\"\ndescription = \"d\"\nextra = 1\n").unwrap();
    let e = Constitution::resolve(bad.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("extra"), "{e}");

    let cai = dir.path().join("cai.jsonl");
    std::fs::write(
        &cai,
        "{\"id\": \"a\", \"critique\": \"Is it rude?\"}\n{oops\n",
    )
    .unwrap();
    let e = Constitution::from_cai_jsonl(&cai).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2:", cai.display())), "{e}");
    std::fs::write(&cai, "{\"id\": \"a\", \"revision\": \"r\"}\n").unwrap();
    let e = Constitution::from_cai_jsonl(&cai).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:1:", cai.display())) && e.contains("critique"),
        "{e}"
    );
    std::fs::write(&cai, "\n").unwrap();
    assert!(Constitution::from_cai_jsonl(&cai).is_err());
}
