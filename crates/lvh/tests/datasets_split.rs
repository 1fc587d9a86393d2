//! The dev/heldout split reproduces the shared data's convention
//! `int(sha256(key), 16) % 5 == 0 → heldout`.

use std::path::PathBuf;

use lvh::datasets::{
    read_contrast, read_preferences, split_dev_heldout, ContrastItem, Label, Split, SplitKey,
    HH_ASSISTANT_MARKER,
};

/// `int(hashlib.sha256(key.encode()).hexdigest(), 16) % 5`, computed with Python 3.
const PYTHON_REFERENCE: &[(&str, u32)] = &[
    ("", 4),
    ("a", 4),
    ("hello", 0),
    ("jbb:Body shaming", 1),
    ("How do I kill a Python process?", 3),
    ("lvh:harm-01", 2),
    ("Grüße, ünïcödé −1", 3),
    ("key-0", 3),
    ("key-1", 0),
    ("key-2", 2),
    ("key-3", 1),
    ("key-4", 0),
    ("key-12", 4),
    ("key-13", 2),
];

#[test]
fn split_matches_python_reference() {
    for &(key, residue) in PYTHON_REFERENCE {
        let want = if residue == 0 {
            Split::Heldout
        } else {
            Split::Dev
        };
        assert_eq!(Split::of_key(key), want, "key {key:?} (residue {residue})");
    }
}

#[test]
fn split_key_is_pair_then_text() {
    let mut item = ContrastItem {
        text: "hello".into(),
        label: Label::Harmless,
        dimension: None,
        pair: None,
        source: None,
        category: None,
    };
    assert_eq!(item.split_key(), "hello");
    assert_eq!(item.split(), Split::Heldout);
    item.pair = Some("key-2".into());
    assert_eq!(item.split_key(), "key-2");
    assert_eq!(item.split(), Split::Dev);
}

fn shared_data() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.join("contrast.dev.jsonl").is_file() {
        Some(dir)
    } else {
        eprintln!("shared data not found at {}; skipping", dir.display());
        None
    }
}

#[test]
fn shared_contrast_dev_has_no_heldout_rows() {
    let Some(dir) = shared_data() else { return };
    let items = read_contrast(&dir.join("contrast.dev.jsonl"), None).unwrap();
    assert_eq!(items.len(), 1600);
    let harmful = items.iter().filter(|i| i.label == Label::Harmful).count();
    assert_eq!((harmful, items.len() - harmful), (1032, 568));
    assert!(items.iter().all(|i| i.source.is_some()));
    assert_eq!(items.iter().filter(|i| i.pair.is_some()).count(), 156);
    let (dev, heldout) = split_dev_heldout(items.clone());
    assert_eq!(dev.len(), 1600);
    assert!(heldout.is_empty());
    // The key matters: hashing the text instead of the twin id would send JBB rows to heldout.
    let by_text = items
        .iter()
        .filter(|i| i.pair.is_some() && Split::of_key(&i.text) == Split::Heldout)
        .count();
    assert!(
        by_text > 0,
        "expected the text key to disagree with the pair key somewhere"
    );
}

#[test]
fn shared_preference_dev_has_no_heldout_rows() {
    let Some(dir) = shared_data() else { return };
    let pairs = read_preferences(&dir.join("preference_hh_harmless.dev.jsonl")).unwrap();
    assert_eq!(pairs.len(), 1869);
    assert!(pairs.iter().all(|p| p.split() == Split::Dev));
    assert!(pairs
        .iter()
        .all(|p| p.prompt.starts_with("\n\nHuman: ") && p.prompt.ends_with(HH_ASSISTANT_MARKER)));
    assert!(pairs.iter().all(|p| p.source_line.is_some()));
    // Three upstream replies are empty; they load as empty strings rather than failing.
    let empty = pairs
        .iter()
        .filter(|p| p.chosen.is_empty() || p.rejected.is_empty())
        .count();
    assert_eq!(empty, 3);
}

#[test]
fn one_sided_files_are_split_again_by_an_independent_hash() {
    let items = lvh::datasets::bundled_contrast().unwrap();
    let (dev, heldout) = split_dev_heldout(items.clone());
    // A file with both sides keeps the standard split.
    let (d2, h2, resplit) = lvh::datasets::split_or_resplit(items);
    assert!(!resplit);
    assert_eq!((d2.len(), h2.len()), (dev.len(), heldout.len()));
    // A `*.dev.jsonl`-style file (one side only) is re-split, about 20% held out, deterministically.
    let n = dev.len();
    let (train, test, resplit) = lvh::datasets::split_or_resplit(dev.clone());
    assert!(resplit);
    assert_eq!(train.len() + test.len(), n);
    let frac = test.len() as f64 / n as f64;
    assert!((0.1..0.3).contains(&frac), "held-out share {frac}");
    let (train2, _, _) = lvh::datasets::split_or_resplit(dev);
    let keys = |v: &[ContrastItem]| {
        v.iter()
            .map(|i| i.split_key().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&train), keys(&train2));
}
