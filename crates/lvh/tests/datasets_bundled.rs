//! The bundled contrast and preference sets: size, balance, coverage, no duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use lvh::datasets::{
    bundled_contrast, bundled_preferences, read_contrast, read_preferences, split_dev_heldout,
    Label, PairKind, Split, SplitKey,
};

const DIMENSIONS: [&str; 6] = [
    "harm",
    "honesty",
    "fairness",
    "privacy",
    "cruelty_kindness",
    "legality",
];

fn normalize(s: &str) -> String {
    s.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(['.', '?', '!'])
        .to_string()
}

#[test]
fn bundled_contrast_is_balanced_paired_and_unique() {
    let items = bundled_contrast().unwrap();
    assert!(items.len() >= 320, "{} items", items.len());
    let harmless = items.iter().filter(|i| i.label == Label::Harmless).count();
    assert_eq!(harmless * 2, items.len(), "labels not balanced");

    let mut per_dim: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for i in &items {
        let d = i
            .dimension
            .as_deref()
            .expect("every bundled row has a dimension");
        let e = per_dim.entry(d).or_default();
        match i.label {
            Label::Harmless => e.0 += 1,
            Label::Harmful => e.1 += 1,
        }
    }
    for d in DIMENSIONS {
        let (h, x) = per_dim.get(d).copied().unwrap_or_default();
        assert!(
            h >= 20 && h == x,
            "dimension {d}: {h} harmless, {x} harmful"
        );
    }

    // Every pair is one harmless and one harmful twin of the same dimension.
    let mut pairs: BTreeMap<&str, Vec<(Label, &str)>> = BTreeMap::new();
    for i in &items {
        let p = i.pair.as_deref().expect("every bundled row has a pair id");
        pairs
            .entry(p)
            .or_default()
            .push((i.label, i.dimension.as_deref().unwrap()));
    }
    for (p, v) in &pairs {
        assert_eq!(v.len(), 2, "pair {p}");
        assert_ne!(v[0].0, v[1].0, "pair {p} has one label twice");
        assert_eq!(v[0].1, v[1].1, "pair {p} spans two dimensions");
    }

    let texts: BTreeSet<String> = items.iter().map(|i| normalize(&i.text)).collect();
    assert_eq!(texts.len(), items.len(), "duplicate texts");
}

#[test]
fn bundled_contrast_has_scary_sounding_harmless_items() {
    let items = bundled_contrast().unwrap();
    for needle in [
        "kill a python process",
        "shoot a photo",
        "execute a shell script",
    ] {
        let hit = items
            .iter()
            .find(|i| i.text.to_lowercase().contains(needle))
            .unwrap_or_else(|| panic!("no item containing {needle:?}"));
        assert_eq!(hit.label, Label::Harmless, "{}", hit.text);
    }
}

#[test]
fn bundled_contrast_twins_share_a_split_and_both_splits_are_used() {
    let items = bundled_contrast().unwrap();
    let (dev, heldout) = split_dev_heldout(items);
    assert!(!dev.is_empty() && !heldout.is_empty());
    let dev_pairs: BTreeSet<_> = dev.iter().map(|i| i.pair.clone()).collect();
    assert!(heldout.iter().all(|i| !dev_pairs.contains(&i.pair)));
    // About a fifth held out (74 of 320 rows with the current pair ids).
    let share = heldout.len() as f64 / (dev.len() + heldout.len()) as f64;
    assert!((0.1..0.3).contains(&share), "heldout share {share}");
}

#[test]
fn bundled_preferences_cover_clear_and_subtle_in_every_dimension() {
    let pairs = bundled_preferences().unwrap();
    assert!(pairs.len() >= 160, "{} pairs", pairs.len());
    let clear = pairs
        .iter()
        .filter(|p| p.kind == Some(PairKind::Clear))
        .count();
    let subtle = pairs
        .iter()
        .filter(|p| p.kind == Some(PairKind::Subtle))
        .count();
    assert_eq!(clear + subtle, pairs.len(), "every pair has a kind");
    assert!(
        clear.abs_diff(subtle) <= pairs.len() / 10,
        "{clear} clear vs {subtle} subtle"
    );
    for kind in [PairKind::Clear, PairKind::Subtle] {
        for d in DIMENSIONS {
            let n = pairs
                .iter()
                .filter(|p| p.kind == Some(kind) && p.dimension.as_deref() == Some(d))
                .count();
            assert!(n >= 8, "{kind:?}/{d}: {n} pairs");
        }
    }
    let prompts: BTreeSet<String> = pairs.iter().map(|p| normalize(&p.prompt)).collect();
    assert_eq!(prompts.len(), pairs.len(), "duplicate prompts");
    for p in &pairs {
        assert!(!p.prompt.contains("Human:"), "plain prompts, not hh format");
        for r in [&p.chosen, &p.rejected] {
            let words = r.split_whitespace().count();
            assert!(
                words <= 45,
                "response too long for a small judge ({words} words): {r}"
            );
        }
    }
    let heldout = pairs.iter().filter(|p| p.split() == Split::Heldout).count();
    assert!(heldout > 0 && heldout < pairs.len() / 2);
}

#[test]
fn files_on_disk_equal_the_embedded_sets() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data");
    assert_eq!(
        read_contrast(&data.join("contrast.jsonl"), None).unwrap(),
        bundled_contrast().unwrap()
    );
    assert_eq!(
        read_preferences(&data.join("preferences.jsonl")).unwrap(),
        bundled_preferences().unwrap()
    );
}

#[test]
fn bundled_texts_are_not_in_the_shared_third_party_data() {
    let shared =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/contrast.dev.jsonl");
    if !shared.is_file() {
        eprintln!("{} not found; skipping", shared.display());
        return;
    }
    let theirs: BTreeSet<String> = read_contrast(&shared, None)
        .unwrap()
        .iter()
        .map(|i| normalize(&i.text))
        .collect();
    let ours = bundled_contrast().unwrap();
    let copied: Vec<&str> = ours
        .iter()
        .filter(|i| theirs.contains(&normalize(&i.text)))
        .map(|i| i.text.as_str())
        .collect();
    assert!(
        copied.is_empty(),
        "bundled rows found in third-party data: {copied:?}"
    );
}
