//! Activation extraction on a tiny random-weight model: batching with padding gives the
//! single-prompt activations, pooling follows its definition, and a killed extraction resumes
//! without recomputing or duplicating finished shards.

use std::cell::Cell;

use lm_runtime::hooks::{Capture, HookPoint, Layer, Positions};
use lm_runtime::model::random::RandomLlama;
use lm_runtime::model::{Batch, Model, WeightMode};
use lvh::geometry::extract::{
    pooled_all, pooled_batch, run_shards, shard_file, ExtractRun, ExtractSettings, ItemMeta,
    Pooling, POSITION_RULE,
};
use lvh::run_dir::{Manifest, RunDir};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn model(dir: &std::path::Path) -> Model {
    let p = dir.join("tiny.gguf");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    RandomLlama::default().write(&p, &mut rng).unwrap();
    Model::load(&p, WeightMode::F32).unwrap()
}

fn prompts(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.gen_range(2..24);
            (0..len).map(|_| rng.gen_range(0..101)).collect()
        })
        .collect()
}

fn hooks() -> Vec<HookPoint> {
    vec![
        HookPoint::ResidPost(Layer(0)),
        HookPoint::ResidPost(Layer(2)),
        HookPoint::ResidMid(Layer(1)),
    ]
}

/// All-position activations of one prompt alone: `[hook][position][d]`.
fn alone(m: &Model, p: &[u32], hooks: &[HookPoint]) -> Vec<Vec<Vec<f32>>> {
    let mut cap = Capture::new(hooks.iter().copied(), Positions::All);
    let mut cache = m.new_cache();
    m.forward(&Batch::single(p.to_vec()), &mut cap, &[], &mut cache)
        .unwrap();
    hooks
        .iter()
        .map(|&h| cap.get(h, 0).unwrap().unwrap().to_vec2().unwrap())
        .collect()
}

#[test]
fn batched_pooling_matches_its_definition_on_single_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let ps = prompts(6, 1);
    let hs = hooks();
    let last = pooled_batch(&m, &ps, &hs, Pooling::Last).unwrap();
    let mean = pooled_batch(&m, &ps, &hs, Pooling::Mean).unwrap();
    for (i, p) in ps.iter().enumerate() {
        let a = alone(&m, p, &hs);
        for h in 0..hs.len() {
            let rows = &a[h];
            let want_last = rows.last().unwrap();
            let d = want_last.len();
            let want_mean: Vec<f64> = (0..d)
                .map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / rows.len() as f64)
                .collect();
            for j in 0..d {
                assert!(
                    (last[h][i][j] - want_last[j]).abs() < 1e-4,
                    "last: prompt {i} hook {h} dim {j}"
                );
                assert!(
                    (f64::from(mean[h][i][j]) - want_mean[j]).abs() < 1e-4,
                    "mean: prompt {i} hook {h} dim {j}"
                );
            }
        }
    }
}

fn open_run(dir: &std::path::Path, n: usize, d: usize, shard: usize) -> RunDir {
    let hs = hooks();
    let settings = ExtractSettings {
        hooks: hs.iter().map(ToString::to_string).collect(),
        pooling: Pooling::Last,
        position_rule: POSITION_RULE.into(),
        shard_size: shard,
        n_items: n,
        d_model: d,
        selection: "test".into(),
    };
    let manifest = Manifest::new("extract", serde_json::to_value(&settings).unwrap());
    let run = RunDir::open(dir, &manifest).unwrap();
    let items: Vec<ItemMeta> = (0..n)
        .map(|id| ItemMeta {
            id,
            label: if id % 2 == 0 { "harmless" } else { "harmful" }.into(),
            pair: None,
            split: "dev".into(),
        })
        .collect();
    run.write_json("items.json", &items).unwrap();
    run
}

#[test]
fn killed_extraction_resumes_without_recomputing_or_duplicating() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let d = m.config().d_model;
    let (n, shard) = (23usize, 5usize);
    let ps = prompts(n, 2);
    let hs = hooks();
    let out = tmp.path().join("run");
    let run = open_run(&out, n, d, shard);
    let calls = Cell::new(0usize);
    let tokenize = |i: usize| {
        calls.set(calls.get() + 1);
        Ok(ps[i].clone())
    };
    let pb = indicatif::ProgressBar::hidden();
    let s = run_shards(&run, &m, n, &tokenize, &hs, Pooling::Last, 3, shard, &pb).unwrap();
    assert_eq!((s.computed, s.skipped, s.items), (5, 0, n));
    assert_eq!(calls.get(), n);
    let full = ExtractRun::open(&out).unwrap().load(&hs).unwrap();
    let first_bytes = std::fs::read(out.join(shard_file(1))).unwrap();

    // A kill after shard 1 was written but before it was logged, during shard 2, and with a
    // torn log row: drop log rows 1.. (leaving a torn fragment) and shard files 2.., keep
    // shard 1's file.
    let log = out.join("shards.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let first_line = text.lines().next().unwrap();
    std::fs::write(&log, format!("{first_line}\n{{\"shard\":1,\"fi")).unwrap();
    for k in 2..5 {
        std::fs::remove_file(out.join(shard_file(k))).unwrap();
    }
    let partial = ExtractRun::open(&out).unwrap().load(&hs);
    assert!(partial.is_err(), "an unfinished run must not load");

    calls.set(0);
    let s = run_shards(&run, &m, n, &tokenize, &hs, Pooling::Last, 3, shard, &pb).unwrap();
    assert_eq!((s.computed, s.skipped), (4, 1));
    assert_eq!(calls.get(), n - shard, "shard 0 must not be recomputed");
    // Shard 1 was recomputed with the same batches: the same bytes, in the same file.
    assert_eq!(std::fs::read(out.join(shard_file(1))).unwrap(), first_bytes);
    let log_rows = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log_rows.lines().count(), 5, "{log_rows}");
    let again = ExtractRun::open(&out).unwrap().load(&hs).unwrap();
    assert_eq!(again, full);

    // A third run finds everything done.
    calls.set(0);
    let s = run_shards(&run, &m, n, &tokenize, &hs, Pooling::Last, 3, shard, &pb).unwrap();
    assert_eq!((s.computed, s.skipped, calls.get()), (0, 5, 0));

    // Shards hold what an in-memory pass computes (batch composition differs: tolerance).
    let mem = pooled_all(&m, &ps, &hs, Pooling::Last, 4, &pb).unwrap();
    for (a, b) in mem.iter().zip(&full) {
        assert_eq!(a.len(), n * d);
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4));
    }
}

#[test]
fn loading_checks_hooks_and_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    open_run(&out, 4, 64, 2);
    let run = ExtractRun::open(&out).unwrap();
    let e = run.load(&[HookPoint::ResidPost(Layer(1))]).unwrap_err();
    assert!(format!("{e:#}").contains("was not extracted"), "{e:#}");
    let other = tmp.path().join("other");
    RunDir::open(&other, &Manifest::new("judge", serde_json::json!({}))).unwrap();
    assert!(ExtractRun::open(&other).is_err());
}
