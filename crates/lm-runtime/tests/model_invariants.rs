//! Invariants of the forward pass on tiny random-weight llamas written to temporary GGUF files.

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use lm_runtime::generate::{generate, Sampling, StopRule};
use lm_runtime::hooks::{Capture, HookPoint, Intervention, Layer, LayerHook, Positions};
use lm_runtime::model::random::RandomLlama;
use lm_runtime::model::{Batch, Model, ModelError, WeightMode};
use lm_runtime::score::{score_continuation, score_continuations};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tiny(spec: &RandomLlama, seed: u64, mode: WeightMode) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    spec.write(&path, &mut ChaCha8Rng::seed_from_u64(seed))
        .unwrap();
    let model = Model::load(&path, mode).unwrap();
    (dir, model)
}

fn default_model() -> (tempfile::TempDir, Model) {
    tiny(&RandomLlama::default(), 11, WeightMode::Quantized)
}

fn tokens(rng: &mut impl Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(0..vocab as u32)).collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn full_logits(model: &Model, toks: &[u32]) -> Tensor {
    let batch = Batch::single(toks.to_vec()).logits_at(Positions::All);
    let mut cache = model.new_cache();
    model
        .forward(&batch, &mut Capture::none(), &[], &mut cache)
        .unwrap()
        .remove(0)
}

#[test]
fn kv_cache_decoding_equals_full_recompute() {
    let (_d, model) = default_model();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let toks = tokens(&mut rng, 40, model.config().vocab_size);
    let full = full_logits(&model, &toks);
    // Prefill 7 tokens, then chunks of 1, 1, 5, then single tokens.
    let mut cache = model.new_cache();
    let mut got = Vec::new();
    let mut i = 0;
    for chunk in [7usize, 1, 1, 5].into_iter().chain(std::iter::repeat(1)) {
        if i >= toks.len() {
            break;
        }
        let end = (i + chunk).min(toks.len());
        let batch = Batch::single(toks[i..end].to_vec()).logits_at(Positions::All);
        got.push(
            model
                .forward(&batch, &mut Capture::none(), &[], &mut cache)
                .unwrap()
                .remove(0),
        );
        i = end;
    }
    let got = Tensor::cat(&got, 0).unwrap();
    let diff = max_abs_diff(&got, &full);
    assert!(diff < 1e-4, "cached vs full: max |Δlogit| = {diff}");
    assert_eq!(cache.seq_lens(), &[40]);
}

#[test]
fn padded_batch_equals_one_by_one() {
    let (_d, model) = default_model();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let vocab = model.config().vocab_size;
    let seqs: Vec<Vec<u32>> = [5usize, 13, 1, 9]
        .iter()
        .map(|&n| tokens(&mut rng, n, vocab))
        .collect();
    let hook = HookPoint::ResidPost(Layer(1));
    let mut cap = Capture::new([hook], Positions::All);
    let mut cache = model.new_cache();
    let batch = Batch::new(seqs.clone()).logits_at(Positions::All);
    let batched = model.forward(&batch, &mut cap, &[], &mut cache).unwrap();
    // Continue every row by two more tokens in batch (rows now have unequal cached lengths).
    let more: Vec<Vec<u32>> = seqs.iter().map(|_| tokens(&mut rng, 2, vocab)).collect();
    let batched2 = model
        .forward(
            &Batch::new(more.clone()).logits_at(Positions::All),
            &mut cap,
            &[],
            &mut cache,
        )
        .unwrap();
    for (i, s) in seqs.iter().enumerate() {
        let mut whole = s.clone();
        whole.extend(&more[i]);
        let mut cap1 = Capture::new([hook], Positions::All);
        let mut c1 = model.new_cache();
        let single = model
            .forward(
                &Batch::single(whole.clone()).logits_at(Positions::All),
                &mut cap1,
                &[],
                &mut c1,
            )
            .unwrap()
            .remove(0);
        let both = Tensor::cat(&[&batched[i], &batched2[i]], 0).unwrap();
        let d = max_abs_diff(&both, &single);
        assert!(d < 1e-4, "row {i}: max |Δlogit| = {d}");
        let a = cap.get(hook, i).unwrap().unwrap();
        let b = cap1.get(hook, 0).unwrap().unwrap();
        assert_eq!(a.dims(), &[whole.len(), model.config().d_model]);
        assert!(
            max_abs_diff(&a, &b) < 1e-4,
            "row {i}: captured resid differs"
        );
    }
}

#[test]
fn residual_hooks_chain_and_capture_is_free_of_side_effects() {
    let (_d, model) = default_model();
    let n_layers = model.config().n_layers;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let toks = tokens(&mut rng, 12, model.config().vocab_size);
    let mut all = vec![HookPoint::Embed, HookPoint::LnFinal];
    for l in 0..n_layers {
        for k in [
            LayerHook::ResidPre,
            LayerHook::ResidMid,
            LayerHook::ResidPost,
            LayerHook::AttnOut,
            LayerHook::MlpOut,
        ] {
            all.push(k.at(Layer(l)));
        }
    }
    let mut cap = Capture::new(all, Positions::All);
    let batch = Batch::single(toks.clone()).logits_at(Positions::All);
    let with = model
        .forward(&batch, &mut cap, &[], &mut model.new_cache())
        .unwrap()
        .remove(0);
    let without = full_logits(&model, &toks);
    assert_eq!(max_abs_diff(&with, &without), 0.0, "capture changed logits");
    let get = |h| cap.get(h, 0).unwrap().unwrap();
    assert_eq!(
        max_abs_diff(&get(HookPoint::Embed), &get(HookPoint::ResidPre(Layer(0)))),
        0.0
    );
    for l in 0..n_layers {
        let (pre, mid, post) = (
            get(HookPoint::ResidPre(Layer(l))),
            get(HookPoint::ResidMid(Layer(l))),
            get(HookPoint::ResidPost(Layer(l))),
        );
        let attn = get(HookPoint::AttnOut(Layer(l)));
        let mlp = get(HookPoint::MlpOut(Layer(l)));
        assert!(max_abs_diff(&(pre + attn).unwrap(), &mid) < 1e-6);
        assert!(max_abs_diff(&(mid + mlp).unwrap(), &post) < 1e-6);
        if l + 1 < n_layers {
            assert_eq!(
                max_abs_diff(&post, &get(HookPoint::ResidPre(Layer(l + 1)))),
                0.0,
                "resid_post({l}) != resid_pre({})",
                l + 1
            );
        }
    }
    // The logit lens on ln_final reproduces the logits.
    let lens = model.unembed(&get(HookPoint::LnFinal)).unwrap();
    assert!(max_abs_diff(&lens, &without) < 1e-4);
    // Last-position capture is the last row of the all-position capture.
    let mut last = Capture::new([HookPoint::ResidPost(Layer(1))], Positions::Last);
    model
        .forward(&batch, &mut last, &[], &mut model.new_cache())
        .unwrap();
    let l1 = last
        .get(HookPoint::ResidPost(Layer(1)), 0)
        .unwrap()
        .unwrap();
    let a1 = get(HookPoint::ResidPost(Layer(1)))
        .narrow(0, 11, 1)
        .unwrap();
    assert_eq!(max_abs_diff(&l1, &a1), 0.0);
}

#[test]
fn ablation_removes_the_direction_exactly() {
    let (_d, model) = default_model();
    let d_model = model.config().d_model;
    let n_layers = model.config().n_layers;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let toks = tokens(&mut rng, 10, model.config().vocab_size);
    let dir: Vec<f32> = (0..d_model).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let dir = Tensor::new(dir, &Device::Cpu).unwrap();
    let unit = (&dir
        / dir
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64)
        .unwrap();
    let ivs = Intervention::ablate_at_every_layer(LayerHook::ResidPost, n_layers, &dir).unwrap();
    let hooks: Vec<HookPoint> = (0..n_layers)
        .map(|l| HookPoint::ResidPost(Layer(l)))
        .collect();
    let mut cap = Capture::new(hooks.clone(), Positions::All);
    let mut plain = Capture::new(hooks.clone(), Positions::All);
    let batch = Batch::single(toks);
    let ablated = model
        .forward(&batch, &mut cap, &ivs, &mut model.new_cache())
        .unwrap()
        .remove(0);
    let base = model
        .forward(&batch, &mut plain, &[], &mut model.new_cache())
        .unwrap()
        .remove(0);
    for h in hooks {
        let x = cap.get(h, 0).unwrap().unwrap();
        let proj: Vec<f32> = x
            .matmul(&unit.unsqueeze(1).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let norm = x
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let worst = proj.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(worst < 1e-5 * norm.max(1.0), "{h}: |x·d| = {worst}");
        let p0: Vec<f32> = plain
            .get(h, 0)
            .unwrap()
            .unwrap()
            .matmul(&unit.unsqueeze(1).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            p0.iter().any(|v| v.abs() > 1e-2),
            "{h}: direction was absent anyway"
        );
    }
    assert!(
        max_abs_diff(&ablated, &base) > 1e-3,
        "ablation had no effect"
    );
}

#[test]
fn added_vector_shifts_downstream_only() {
    let (_d, model) = default_model();
    let d_model = model.config().d_model;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let toks = tokens(&mut rng, 8, model.config().vocab_size);
    let v: Vec<f32> = (0..d_model).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let v = Tensor::new(v, &Device::Cpu).unwrap();
    let at = HookPoint::ResidPost(Layer(0));
    let hooks = [
        HookPoint::ResidPre(Layer(0)),
        at,
        HookPoint::ResidPre(Layer(1)),
    ];
    let mut steered = Capture::new(hooks, Positions::All);
    let mut plain = Capture::new(hooks, Positions::All);
    let batch = Batch::single(toks);
    let a = model
        .forward(
            &batch,
            &mut steered,
            &[Intervention::add(at, v.clone(), 2.5)],
            &mut model.new_cache(),
        )
        .unwrap()
        .remove(0);
    let b = model
        .forward(&batch, &mut plain, &[], &mut model.new_cache())
        .unwrap()
        .remove(0);
    let g = |c: &Capture, h| c.get(h, 0).unwrap().unwrap();
    // Upstream untouched, the hook itself shifted by exactly 2.5·v at every position.
    assert_eq!(
        max_abs_diff(&g(&steered, hooks[0]), &g(&plain, hooks[0])),
        0.0
    );
    let shift = (g(&steered, at) - g(&plain, at)).unwrap();
    let expect = (v.unsqueeze(0).unwrap().broadcast_as(shift.shape()).unwrap() * 2.5).unwrap();
    assert!(max_abs_diff(&shift, &expect) < 1e-5);
    assert_eq!(max_abs_diff(&g(&steered, at), &g(&steered, hooks[2])), 0.0);
    assert!(
        max_abs_diff(&a, &b) > 1e-3,
        "steering had no downstream effect"
    );
    // A wrong-sized vector is refused, naming the hook.
    let bad = Intervention::add(
        at,
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        1.0,
    );
    let err = model
        .forward(&batch, &mut Capture::none(), &[bad], &mut model.new_cache())
        .unwrap_err();
    assert!(
        err.to_string().contains("blocks.0.hook_resid_post"),
        "{err}"
    );
}

#[test]
fn shared_prefix_scoring_and_forks_match_fresh_runs() {
    let (_d, model) = default_model();
    let vocab = model.config().vocab_size;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let prompt = tokens(&mut rng, 9, vocab);
    let conts: Vec<Vec<u32>> = [3usize, 1, 0, 6, 2]
        .iter()
        .map(|&n| tokens(&mut rng, n, vocab))
        .collect();
    let shared = score_continuations(&model, &prompt, &conts, &[]).unwrap();
    for (c, s) in conts.iter().zip(&shared) {
        let one = score_continuation(&model, &prompt, c, &[]).unwrap();
        assert_eq!(one.token_logprobs.len(), c.len());
        assert!(
            (one.total - s.total).abs() < 1e-4,
            "{} vs {}",
            one.total,
            s.total
        );
        for (a, b) in one.token_logprobs.iter().zip(&s.token_logprobs) {
            assert!((a - b).abs() < 1e-4);
            assert!(*a <= 0.0);
        }
    }
    // Fork: two different continuations of one cached prefix, each equal to a fresh run.
    let mut base = model.new_cache();
    model
        .forward(
            &Batch::single(prompt.clone()),
            &mut Capture::none(),
            &[],
            &mut base,
        )
        .unwrap();
    for c in conts.iter().filter(|c| !c.is_empty()) {
        let mut fork = base.fork().unwrap();
        let got = model
            .forward(
                &Batch::single(c.clone()).logits_at(Positions::All),
                &mut Capture::none(),
                &[],
                &mut fork,
            )
            .unwrap()
            .remove(0);
        let mut whole = prompt.clone();
        whole.extend(c);
        let full = full_logits(&model, &whole);
        let tail = full.narrow(0, prompt.len(), c.len()).unwrap();
        assert!(max_abs_diff(&got, &tail) < 1e-4);
    }
    assert_eq!(
        base.seq_lens(),
        &[prompt.len()],
        "forks must not touch the base cache"
    );
}

#[test]
fn generation_is_greedy_argmax_and_seeded_sampling_reproducible() {
    let (_d, model) = default_model();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let prompt = tokens(&mut rng, 5, model.config().vocab_size);
    let stop = StopRule {
        max_tokens: 12,
        ..StopRule::default()
    };
    let g = generate(
        &model,
        &mut model.new_cache(),
        &prompt,
        &Sampling::GREEDY,
        &stop,
        &mut Capture::none(),
        &[],
        &mut rng,
    )
    .unwrap();
    assert_eq!(g.tokens.len(), 12);
    // Recompute each step from scratch and take the argmax.
    let mut seq = prompt.clone();
    for &t in &g.tokens {
        let l: Vec<f32> = full_logits(&model, &seq)
            .get(seq.len() - 1)
            .unwrap()
            .to_vec1()
            .unwrap();
        let best = (0..l.len()).fold(0, |b, i| if l[i] > l[b] { i } else { b });
        assert_eq!(t as usize, best);
        seq.push(t);
    }
    let s = Sampling {
        temperature: 0.8,
        top_k: Some(20),
        top_p: Some(0.9),
    };
    let run = |seed| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        generate(
            &model,
            &mut model.new_cache(),
            &prompt,
            &s,
            &stop,
            &mut Capture::none(),
            &[],
            &mut r,
        )
        .unwrap()
        .tokens
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
    // EOS stops generation and is kept.
    let eos = g.tokens[3];
    let stop_eos = StopRule {
        max_tokens: 12,
        eos: vec![eos],
        ..StopRule::default()
    };
    let ge = generate(
        &model,
        &mut model.new_cache(),
        &prompt,
        &Sampling::GREEDY,
        &stop_eos,
        &mut Capture::none(),
        &[],
        &mut rng,
    )
    .unwrap();
    let first = g.tokens.iter().position(|&t| t == eos).unwrap();
    assert_eq!(ge.tokens, g.tokens[..=first].to_vec());
}

#[test]
fn f32_weights_match_quantized_for_f32_files_and_untied_output_loads() {
    let spec = RandomLlama {
        dtype: GgmlDType::F32,
        untied_output: true,
        ..RandomLlama::default()
    };
    let (_d1, q) = tiny(&spec, 21, WeightMode::Quantized);
    let (_d2, f) = tiny(&spec, 21, WeightMode::F32);
    assert!(!q.config().tied_embeddings);
    let toks: Vec<u32> = (0..15).collect();
    let d = max_abs_diff(&full_logits(&q, &toks), &full_logits(&f, &toks));
    assert!(d < 1e-4, "{d}");
    // Q4_0 weights: the f32 path dequantizes the same numbers, so logits agree closely.
    let spec4 = RandomLlama {
        dtype: GgmlDType::Q4_0,
        ..RandomLlama::default()
    };
    let (_d3, q4) = tiny(&spec4, 22, WeightMode::Quantized);
    let (_d4, f4) = tiny(&spec4, 22, WeightMode::F32);
    let (a, b) = (full_logits(&q4, &toks), full_logits(&f4, &toks));
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    // The quantized path rounds activations to 8-bit blocks; a few percent of the range.
    assert!(
        max_abs_diff(&a, &b) < 0.05 * scale,
        "{} vs scale {scale}",
        max_abs_diff(&a, &b)
    );
}

#[test]
fn bad_inputs_give_named_errors() {
    let (dir, model) = default_model();
    let vocab = model.config().vocab_size as u32;
    let err = model
        .forward(
            &Batch::single(vec![1, vocab]),
            &mut Capture::none(),
            &[],
            &mut model.new_cache(),
        )
        .unwrap_err();
    assert!(
        matches!(err, ModelError::TokenOutOfRange { pos: 1, .. }),
        "{err}"
    );
    let long = vec![1u32; model.config().context_length + 1];
    assert!(matches!(
        model.forward(
            &Batch::single(long),
            &mut Capture::none(),
            &[],
            &mut model.new_cache()
        ),
        Err(ModelError::ContextOverflow { .. })
    ));
    let cap_bad = HookPoint::ResidPost(Layer(99));
    let err = model
        .forward(
            &Batch::single(vec![1]),
            &mut Capture::new([cap_bad], Positions::All),
            &[],
            &mut model.new_cache(),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("blocks.99.hook_resid_post"),
        "{err}"
    );
    let mut cache = model.new_cache();
    model
        .forward(
            &Batch::new(vec![vec![1], vec![2]]),
            &mut Capture::none(),
            &[],
            &mut cache,
        )
        .unwrap();
    assert!(matches!(
        model.forward(
            &Batch::single(vec![1]),
            &mut Capture::none(),
            &[],
            &mut cache
        ),
        Err(ModelError::BatchMismatch { cache: 2, batch: 1 })
    ));
    // A truncated file names the tensor whose data is missing.
    let path = dir.path().join("tiny.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let err = Model::load(&cut, WeightMode::Quantized)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor `") && err.contains("past the end"),
        "{err}"
    );
    std::fs::write(&cut, &bytes[..40]).unwrap();
    let err = Model::load(&cut, WeightMode::Quantized)
        .unwrap_err()
        .to_string();
    assert!(err.contains("corrupt GGUF header"), "{err}");
}
