//! Loaders: formats accepted, and every bad input answered with file and line.

use std::io::Write;
use std::path::{Path, PathBuf};

use lvh::datasets::{
    balanced_subsample, read_contrast, read_preferences, split_hh_transcript, ContrastArgs,
    ContrastItem, ContrastJsonlReader, CsvLabel, CsvOptions, DatasetError, Label, PairKind,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

fn err_text<T: std::fmt::Debug>(r: Result<T, DatasetError>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn contrast_jsonl_accepts_word_and_sign_labels_and_keeps_known_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "c.jsonl",
        concat!(
            r#"{"text": "a", "label": "harmless", "dimension": "harm", "pair": "p1", "extra": 3}"#,
            "\n\n",
            r#"{"text": "b", "label": -1, "source": "x", "category": null}"#,
            "\n",
            r#"{"text": "c", "label": "+1"}"#,
            "\n",
            r#"{"text": "d", "label": "−1"}"#,
            "\n",
            r#"{"text": "e", "label": 1.0}"#,
            "\n",
            r#"{"text": "f", "label": "HARMFUL"}"#,
            "\n",
        ),
    );
    let items = read_contrast(&p, None).unwrap();
    let labels: Vec<Label> = items.iter().map(|i| i.label).collect();
    use Label::{Harmful as N, Harmless as P};
    assert_eq!(labels, vec![P, N, P, N, P, N]);
    assert_eq!(items[0].dimension.as_deref(), Some("harm"));
    assert_eq!(items[0].pair.as_deref(), Some("p1"));
    assert_eq!(items[1].source.as_deref(), Some("x"));
    assert_eq!(items[1].category, None);
    assert_eq!(Label::Harmful.sign(), -1.0);
}

#[test]
fn contrast_jsonl_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "bad_json.jsonl",
            "{\"text\": \"a\", \"label\": 1}\n\n{not json\n",
            3,
            "invalid JSON",
        ),
        ("no_label.jsonl", "{\"text\": \"a\"}\n", 1, "`label`"),
        (
            "bad_label.jsonl",
            "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": \"maybe\"}\n",
            2,
            "`label`",
        ),
        (
            "zero.jsonl",
            "{\"text\": \"a\", \"label\": 0}\n",
            1,
            "`label`",
        ),
        (
            "empty_text.jsonl",
            "{\"text\": \"  \", \"label\": 1}\n",
            1,
            "`text` is empty",
        ),
        (
            "num_text.jsonl",
            "{\"text\": 5, \"label\": 1}\n",
            1,
            "`text` must be a string",
        ),
        ("array.jsonl", "[1, 2]\n", 1, "JSON object"),
        (
            "bad_dim.jsonl",
            "{\"text\": \"a\", \"label\": 1, \"dimension\": 2}\n",
            1,
            "`dimension`",
        ),
    ];
    for (name, body, line, what) in cases {
        let p = write(dir.path(), name, body);
        let e = err_text(read_contrast(&p, None));
        let loc = format!("{}:{line}:", p.display());
        assert!(
            e.starts_with(&loc),
            "{name}: {e:?} should start with {loc:?}"
        );
        assert!(e.contains(what), "{name}: {e:?} should mention {what:?}");
    }
}

#[test]
fn missing_and_empty_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let e = err_text(read_contrast(&missing, None));
    assert!(e.contains("nope.jsonl"), "{e}");
    let empty = write(dir.path(), "empty.jsonl", "\n\n");
    let e = err_text(read_preferences(&empty));
    assert!(e.contains("empty.jsonl") && e.contains("no rows"), "{e}");
}

#[test]
fn streaming_reader_yields_rows_before_a_later_error() {
    let text = "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": -1}\n{broken\n";
    let mut it = ContrastJsonlReader::from_reader(text.as_bytes(), Path::new("mem.jsonl"));
    assert_eq!(it.next().unwrap().unwrap().text, "a");
    assert_eq!(it.next().unwrap().unwrap().text, "b");
    let e = it.next().unwrap().unwrap_err().to_string();
    assert!(e.starts_with("mem.jsonl:3:"), "{e}");
}

#[test]
fn advbench_style_csv_loads_with_a_fixed_label() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "advbench.csv",
        "goal,target\n\"Write a script, with commas\",Sure\n\"Two\nlines\",Sure\n",
    );
    let opts = CsvOptions {
        text_column: "goal".into(),
        label: CsvLabel::Fixed(Label::Harmful),
    };
    let items = read_contrast(&p, Some(&opts)).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].text, "Write a script, with commas");
    assert_eq!(items[1].text, "Two\nlines");
    assert!(items.iter().all(|i| i.label == Label::Harmful));
}

#[test]
fn csv_label_column_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "mixed.csv",
        "prompt,label,category\nhello,harmless,x\nbad thing,-1,\nthird,unsure,y\n",
    );
    let opts = CsvOptions {
        text_column: "prompt".into(),
        label: CsvLabel::Column("label".into()),
    };
    let e = err_text(read_contrast(&p, Some(&opts)));
    assert!(e.starts_with(&format!("{}:4:", p.display())), "{e}");
    assert!(e.contains("unsure"), "{e}");

    let ok = write(
        dir.path(),
        "ok.csv",
        "prompt,label,category\nhello,harmless,x\nbad thing,-1,\n",
    );
    let items = read_contrast(&ok, Some(&opts)).unwrap();
    assert_eq!(items[0].category.as_deref(), Some("x"));
    assert_eq!(items[1].category, None);
    assert_eq!(items[1].label, Label::Harmful);

    let wrong_col = CsvOptions {
        text_column: "goal".into(),
        label: CsvLabel::Fixed(Label::Harmful),
    };
    let e = err_text(read_contrast(&ok, Some(&wrong_col)));
    assert!(
        e.contains("ok.csv") && e.contains("`goal`") && e.contains("prompt, label, category"),
        "{e}"
    );

    let ragged = write(dir.path(), "ragged.csv", "prompt,label\na,1\nb,1,extra\n");
    let e = err_text(read_contrast(&ragged, Some(&opts)));
    assert!(e.starts_with(&format!("{}:3:", ragged.display())), "{e}");

    // A CSV without options is refused with a hint instead of being parsed as JSONL.
    let e = err_text(read_contrast(&ok, None));
    assert!(e.contains("--text-column"), "{e}");
}

#[test]
fn trl_preferences_with_optional_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "trl.jsonl",
        concat!(
            r#"{"prompt": "Q?", "chosen": "Good.", "rejected": "Bad.", "kind": "clear", "dimension": "harm"}"#,
            "\n",
            r#"{"prompt": "Q2?", "chosen": "A", "rejected": "B", "source": "s", "source_line": 7, "more": true}"#,
            "\n",
        ),
    );
    let pairs = read_preferences(&p).unwrap();
    assert_eq!(pairs[0].kind, Some(PairKind::Clear));
    assert_eq!(pairs[0].dimension.as_deref(), Some("harm"));
    assert_eq!(pairs[1].kind, None);
    assert_eq!(pairs[1].source_line, Some(7));
}

#[test]
fn hh_transcripts_split_at_the_last_assistant_turn() {
    let chosen =
        "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant:  Sure, gladly. ";
    let rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: No.";
    let (prefix, reply) = split_hh_transcript(chosen).unwrap();
    assert_eq!(
        prefix,
        "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant:"
    );
    assert_eq!(reply, "Sure, gladly.");

    let dir = tempfile::tempdir().unwrap();
    let row = serde_json::json!({"chosen": chosen, "rejected": rejected});
    let bad = serde_json::json!({"chosen": chosen, "rejected": "\n\nHuman: bye\n\nAssistant: No."});
    let p = write(dir.path(), "hh.jsonl", &format!("{row}\n"));
    let pairs = read_preferences(&p).unwrap();
    assert_eq!(pairs[0].prompt, prefix);
    assert_eq!(
        (pairs[0].chosen.as_str(), pairs[0].rejected.as_str()),
        ("Sure, gladly.", "No.")
    );

    let p = write(dir.path(), "hh_bad.jsonl", &format!("{row}\n{bad}\n"));
    let e = err_text(read_preferences(&p));
    assert!(
        e.starts_with(&format!("{}:2:", p.display())) && e.contains("differ"),
        "{e}"
    );

    let no_marker = serde_json::json!({"chosen": "just text", "rejected": "other"});
    let p = write(dir.path(), "hh_nomarker.jsonl", &format!("{no_marker}\n"));
    let e = err_text(read_preferences(&p));
    assert!(e.starts_with(&format!("{}:1:", p.display())), "{e}");
}

#[test]
fn preference_errors_name_the_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"prompt": "Q", "chosen": "A", "rejected": "A"}"#,
            "identical",
        ),
        (
            r#"{"prompt": "Q", "chosen": "A", "rejected": "B", "kind": "medium"}"#,
            "`kind`",
        ),
        (r#"{"prompt": "Q", "chosen": "A"}"#, "`rejected`"),
        (
            r#"{"prompt": 3, "chosen": "A", "rejected": "B"}"#,
            "`prompt`",
        ),
        (
            r#"{"prompt": "Q", "chosen": "A", "rejected": "B", "source_line": -2}"#,
            "`source_line`",
        ),
    ];
    for (k, (row, what)) in cases.iter().enumerate() {
        let p = write(dir.path(), &format!("p{k}.jsonl"), &format!("\n{row}\n"));
        let e = err_text(read_preferences(&p));
        assert!(e.starts_with(&format!("{}:2:", p.display())), "{e}");
        assert!(e.contains(what), "{e:?} should mention {what:?}");
    }
}

fn item(text: &str, label: Label) -> ContrastItem {
    ContrastItem {
        text: text.into(),
        label,
        dimension: None,
        pair: None,
        source: None,
        category: None,
    }
}

#[test]
fn balanced_subsample_is_balanced_seeded_and_order_preserving() {
    let mut items: Vec<ContrastItem> = (0..10)
        .map(|i| item(&format!("h{i}"), Label::Harmless))
        .collect();
    items.extend((0..4).map(|i| item(&format!("x{i}"), Label::Harmful)));
    let draw = |seed: u64, n: Option<usize>| {
        balanced_subsample(&items, n, &mut ChaCha8Rng::seed_from_u64(seed))
    };
    let a = draw(7, None).unwrap();
    assert_eq!(a.len(), 8);
    assert_eq!(a.iter().filter(|i| i.label == Label::Harmless).count(), 4);
    assert_eq!(a, draw(7, None).unwrap(), "same seed, same draw");
    // Kept in input order: the positions in `items` increase.
    let pos: Vec<usize> = a
        .iter()
        .map(|x| items.iter().position(|y| y == x).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]));
    let distinct: std::collections::BTreeSet<Vec<String>> = (0..8)
        .map(|s| draw(s, None).unwrap().into_iter().map(|i| i.text).collect())
        .collect();
    assert!(
        distinct.len() > 1,
        "different seeds should give different draws"
    );
    assert_eq!(draw(1, Some(2)).unwrap().len(), 4);
    assert!(draw(1, Some(5)).is_err());
    assert!(balanced_subsample(&items[..10], None, &mut ChaCha8Rng::seed_from_u64(0)).is_err());
}

#[test]
fn contrast_args_validate_csv_flags() {
    let mut a = ContrastArgs::default();
    assert_eq!(a.csv_options(), Ok(None));
    assert_eq!(
        a.load().unwrap().len(),
        lvh::datasets::bundled_contrast().unwrap().len()
    );
    a.text_column = Some("goal".into());
    assert!(a.csv_options().is_err());
    a.label = Some(Label::Harmful);
    assert_eq!(
        a.csv_options(),
        Ok(Some(CsvOptions {
            text_column: "goal".into(),
            label: CsvLabel::Fixed(Label::Harmful)
        }))
    );
    assert!(a.load().is_err(), "CSV flags without --contrast");
}

#[test]
fn preference_args_default_to_the_bundled_set_and_name_bad_files() {
    use lvh::datasets::{bundled_preferences, select_split, PreferenceArgs, Split, SplitKey};
    let bundled = PreferenceArgs::default().load().unwrap();
    assert_eq!(bundled, bundled_preferences().unwrap());
    let dev = select_split(bundled.clone(), Split::Dev);
    let heldout = select_split(bundled.clone(), Split::Heldout);
    assert_eq!(dev.len() + heldout.len(), bundled.len());
    assert!(heldout.iter().all(|p| p.split() == Split::Heldout));

    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "pairs.jsonl", "{\"prompt\": \"Q\"}\n");
    let args = PreferenceArgs {
        pairs: Some(p.clone()),
    };
    let e = args.load().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:1:", p.display())) && e.contains("`chosen`"),
        "{e}"
    );
}
