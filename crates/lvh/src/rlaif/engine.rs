//! The model-facing stages of the loop, each resumable: sampling with the round's steering
//! vector, response features (`h`, residual norm, `s_gen`), judging a round's pairs, fitting the
//! reward model, and the human-data probe.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use lm_runtime::generate::{generate_from, Sampling, StopRule};
use lm_runtime::hooks::{Capture, HookPoint, Intervention, Layer, Positions};
use lm_runtime::model::Batch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use value_directions::metrics::{evaluate, Bootstrap};
use value_directions::{ContrastSet, DirectionEstimator, LinearProbe};

use super::{hex_f32, hex_f64, unhex_f32, LabelRow, ProbeFile, RewardFile, SampleRow};
use crate::cmd::run::Loaded;
use crate::constitution::Constitution;
use crate::datasets::{split_or_resplit, ContrastItem, Label};
use crate::geometry::extract::{pooled_all, Pooling};
use crate::judge::prompt::{conversation_messages, encode};
use crate::judge::stats::{s_c, sigmoid};
use crate::judge::Judge;
use crate::run_dir::{JsonlLog, RunDir};

/// Pooled features of one response.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `h(x, y)`: mean `resid_post(ℓ)` over the response tokens (`d_model`).
    pub h: Vec<f32>,
    /// Mean per-token residual norm over the same positions.
    pub resid_norm: f64,
    /// Mean token log-probability of the response; `None` when it is empty.
    pub s_gen: Option<f64>,
}

/// The model with the layer the loop reads and steers.
#[derive(Debug)]
pub struct Engine<'a> {
    /// The loaded model.
    pub m: &'a Loaded,
    /// Block ℓ.
    pub layer: usize,
}

impl<'a> Engine<'a> {
    /// The hook `blocks.ℓ.hook_resid_post`.
    pub fn hook(&self) -> HookPoint {
        HookPoint::ResidPost(Layer(self.layer))
    }

    /// The prompt as the policy sees it: the conversation in the chat template with the
    /// generation prompt, tokenized (BOS when the model wants it).
    ///
    /// # Errors
    /// Template failures; a prompt with no tokens.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let text = self
            .m
            .format
            .render(&conversation_messages(prompt), true)
            .context("rendering the chat template")?;
        let ids = encode(&self.m.tokenizer, &text);
        if ids.is_empty() {
            bail!("the prompt {prompt:?} is empty after tokenization");
        }
        Ok(ids)
    }

    /// Features of `response` after `prompt` under the unsteered model: one forward pass over
    /// `prompt ++ response`, recording `resid_post(ℓ)` at the response positions (at the last
    /// prompt position for an empty response) and the logits that predict each response token.
    ///
    /// # Errors
    /// Forward-pass errors (e.g. longer than the context).
    pub fn features(&self, prompt: &[u32], response: &[u32]) -> Result<Features> {
        let p = prompt.len();
        let r = response.len();
        let mut all = prompt.to_vec();
        all.extend_from_slice(response);
        let read: Vec<usize> = if r == 0 {
            vec![p - 1]
        } else {
            (p..p + r).collect()
        };
        let predict: Vec<usize> = (p - 1..p - 1 + r).collect();
        let mut cap = Capture::new([self.hook()], Positions::Indices(read));
        let mut cache = self.m.model.new_cache();
        let batch = Batch::single(all).logits_at(Positions::Indices(predict));
        let logits = self
            .m
            .model
            .forward(&batch, &mut cap, &[], &mut cache)?
            .remove(0);
        let rows: Vec<Vec<f32>> = cap
            .get(self.hook(), 0)?
            .context("resid_post was not recorded")?
            .to_vec2()?;
        let d = self.m.model.config().d_model;
        let mut acc = vec![0f64; d];
        let mut norm = 0f64;
        for row in &rows {
            let mut sq = 0f64;
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += f64::from(x);
                sq += f64::from(x) * f64::from(x);
            }
            norm += sq.sqrt();
        }
        let k = rows.len().max(1) as f64;
        let h: Vec<f32> = acc.iter().map(|a| (a / k) as f32).collect();
        if h.iter().any(|x| !x.is_finite()) {
            bail!("non-finite activation at {}", self.hook());
        }
        let s_gen = if r == 0 {
            None
        } else {
            let lg: Vec<Vec<f32>> = logits.to_vec2()?;
            let mut total = 0f64;
            for (row, &tok) in lg.iter().zip(response) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = f64::from(max)
                    + row
                        .iter()
                        .map(|&z| (f64::from(z) - f64::from(max)).exp())
                        .sum::<f64>()
                        .ln();
                total += f64::from(row[tok as usize]) - lse;
            }
            Some(total / r as f64)
        };
        Ok(Features {
            h,
            resid_norm: norm / k,
            s_gen,
        })
    }
}

/// The RNG of one response: the seed's ChaCha8 stream `(round, prompt, sample)`, so a response
/// is the same whether or not its neighbours were generated in this process.
pub fn sample_rng(seed: u64, round: usize, prompt: usize, sample: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((round as u64) << 48) | ((prompt as u64) << 24) | sample as u64 | 1 << 63);
    rng
}

/// How a round samples.
#[derive(Debug, Clone)]
pub struct SamplePlan<'p> {
    /// Round t.
    pub round: usize,
    /// The prompts.
    pub prompts: &'p [String],
    /// Responses per prompt.
    pub samples: usize,
    /// Token budget.
    pub max_tokens: usize,
    /// Temperature.
    pub temperature: f32,
    /// Seed.
    pub seed: u64,
    /// The steering vector added at `resid_post(ℓ)` (none in round 0).
    pub steer: Option<Vec<f32>>,
}

/// Samples the missing responses of a round into `round-t/samples.jsonl` and returns every row
/// in (prompt, sample) order. The prompt is prefilled once per prompt (with the steering
/// vector) and its KV cache forked for each response.
///
/// # Errors
/// Model and I/O errors naming the prompt; a log holding rows of another plan.
pub fn ensure_samples(
    engine: &Engine<'_>,
    dir: &RunDir,
    plan: &SamplePlan<'_>,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<SampleRow>> {
    let path = dir.file(&format!("round-{}/samples.jsonl", plan.round));
    let (mut log, done) = JsonlLog::open::<SampleRow>(&path)?;
    let mut have: BTreeSet<(usize, usize)> = BTreeSet::new();
    for r in &done {
        if r.prompt >= plan.prompts.len()
            || r.sample >= plan.samples
            || !have.insert((r.prompt, r.sample))
        {
            bail!(
                "{}: row (prompt {}, sample {}) is not part of this run",
                path.display(),
                r.prompt,
                r.sample
            );
        }
    }
    let m = engine.m;
    let ivs = match &plan.steer {
        Some(v) => vec![Intervention::add(
            engine.hook(),
            Tensor::from_slice(v, v.len(), m.model.device())?,
            1.0,
        )],
        None => Vec::new(),
    };
    let sampling = Sampling {
        temperature: plan.temperature,
        top_k: None,
        top_p: None,
    };
    let eos = m.tokenizer.end_of_generation_ids().to_vec();
    let mut rows = done;
    progress.inc(rows.len() as u64);
    for (pi, prompt) in plan.prompts.iter().enumerate() {
        let missing: Vec<usize> = (0..plan.samples)
            .filter(|s| !have.contains(&(pi, *s)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let ids = engine
            .prompt_ids(prompt)
            .with_context(|| format!("prompt {pi}"))?;
        let mut cache = m.model.new_cache();
        let logits = m
            .model
            .forward(
                &Batch::single(ids.clone()),
                &mut Capture::none(),
                &ivs,
                &mut cache,
            )
            .with_context(|| format!("prefill of prompt {pi}"))?
            .remove(0);
        let last: Vec<f32> = logits.get(logits.dim(0)? - 1)?.to_vec1()?;
        for s in missing {
            let stop = StopRule {
                max_tokens: plan.max_tokens,
                eos: eos.clone(),
                ..StopRule::default()
            };
            let mut rng = sample_rng(plan.seed, plan.round, pi, s);
            let mut c = cache.fork()?;
            let g = generate_from(
                &m.model,
                &mut c,
                last.clone(),
                &sampling,
                &stop,
                &mut Capture::none(),
                &ivs,
                &mut rng,
            )
            .with_context(|| format!("generating prompt {pi} sample {s}"))?;
            let mut toks = g.tokens;
            if toks.last().is_some_and(|t| eos.contains(t)) {
                toks.pop();
            }
            let f = engine
                .features(&ids, &toks)
                .with_context(|| format!("features of prompt {pi} sample {s}"))?;
            let row = SampleRow {
                prompt: pi,
                sample: s,
                text: m.tokenizer.decode(&toks),
                tokens: toks,
                s_gen: f.s_gen,
                resid_norm: f.resid_norm,
                h: hex_f32(&f.h),
            };
            log.append(&row)?;
            rows.push(row);
            progress.inc(1);
        }
    }
    rows.sort_by_key(|r| (r.prompt, r.sample));
    Ok(rows)
}

/// The pairs judged per prompt: every `(i, j)` with `i < j < n`, in order.
pub fn round_pairs(n_prompts: usize, samples: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for p in 0..n_prompts {
        for i in 0..samples {
            for j in i + 1..samples {
                out.push((p, i, j));
            }
        }
    }
    out
}

/// Judges the missing pairs of a round's responses into `round-t/labels.jsonl`; returns every
/// row in pair order.
///
/// # Errors
/// Judge and I/O errors naming the pair; a log holding other pairs.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the stage
pub fn ensure_labels(
    judge: &Judge<'_>,
    constitution: &Constitution,
    dir: &RunDir,
    round: usize,
    prompts: &[String],
    samples: &[SampleRow],
    n: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<LabelRow>> {
    let path = dir.file(&format!("round-{round}/labels.jsonl"));
    let (mut log, done) = JsonlLog::open::<LabelRow>(&path)?;
    let wanted = round_pairs(prompts.len(), n);
    let set: BTreeSet<(usize, usize, usize)> = wanted.iter().copied().collect();
    let mut have = BTreeSet::new();
    for r in &done {
        if !set.contains(&(r.prompt, r.i, r.j)) || !have.insert((r.prompt, r.i, r.j)) {
            bail!(
                "{}: pair (prompt {}, {} vs {}) is not part of this run",
                path.display(),
                r.prompt,
                r.i,
                r.j
            );
        }
    }
    let text = |p: usize, s: usize| &samples[p * n + s].text;
    let mut rows = done;
    progress.inc(rows.len() as u64);
    for (p, i, j) in wanted {
        if have.contains(&(p, i, j)) {
            continue;
        }
        let scores = judge
            .judge_pair(constitution, &prompts[p], text(p, i), text(p, j))
            .with_context(|| format!("judging prompt {p}, responses {i} vs {j}"))?;
        let row = LabelRow {
            prompt: p,
            i,
            j,
            scores,
        };
        log.append(&row)?;
        rows.push(row);
        progress.inc(1);
    }
    rows.sort_by_key(|r| (r.prompt, r.i, r.j));
    Ok(rows)
}

/// Decodes the `h` of every row (`[rows][d_model]`), f64.
///
/// # Errors
/// Malformed hex or a wrong width, naming the row.
pub fn decode_h(rows: &[SampleRow], d: usize) -> Result<Vec<Vec<f64>>> {
    rows.iter()
        .map(|r| {
            let what = format!("h of prompt {} sample {}", r.prompt, r.sample);
            let v = unhex_f32(&r.h, &what).map_err(anyhow::Error::msg)?;
            if v.len() != d {
                bail!("{what}: {} values, expected {d}", v.len());
            }
            Ok(v.into_iter().map(f64::from).collect())
        })
        .collect()
}

/// Fits round t's reward model to the labels of `S_{t−1}` and accumulates the steering vector
/// `v_t = v_{t−1} + η n̄ ŵ_t/|ŵ_t|` (see the module docs of [`crate::rlaif`]).
///
/// # Errors
/// A failed logistic fit; a zero reward direction.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the fit
pub fn fit_reward(
    round: usize,
    labels: &[LabelRow],
    h: &[Vec<f64>],
    n: usize,
    weights: &[f64],
    ridge: f64,
    eta: f64,
    mean_resid_norm: f64,
    previous_steer: Option<&[f32]>,
) -> Result<RewardFile> {
    let d = h.first().map_or(0, Vec::len);
    let mut x = Vec::with_capacity(labels.len() * d);
    let mut y = Vec::with_capacity(labels.len());
    for l in labels {
        let (a, b) = (&h[l.prompt * n + l.i], &h[l.prompt * n + l.j]);
        x.extend(a.iter().zip(b).map(|(u, v)| u - v));
        let (ab, ba) = l.scores.aggregate(weights);
        y.push(sigmoid(s_c(ab, ba)));
    }
    let fit = rlaif_sim::logistic::fit(&x, d, &y, ridge)
        .with_context(|| format!("fitting the reward model of round {round}"))?;
    let norm = fit.w.iter().map(|w| w * w).sum::<f64>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        bail!("round {round}: the reward direction is zero (all soft labels ½?)");
    }
    let step = eta * mean_resid_norm / norm;
    let steer: Vec<f32> = (0..d)
        .map(|k| {
            let prev = previous_steer.map_or(0.0, |p| f64::from(p[k]));
            (prev + step * fit.w[k]) as f32
        })
        .collect();
    Ok(RewardFile {
        round,
        n_pairs: labels.len(),
        mean_soft_label: y.iter().sum::<f64>() / y.len().max(1) as f64,
        w: hex_f64(&fit.w),
        intercept: fit.intercept,
        iterations: fit.iterations,
        loss: fit.loss,
        mean_resid_norm,
        steer: hex_f32(&steer),
    })
}

/// The human-data probe at ℓ: a logistic probe ([`LinearProbe`], defaults) on the contrast
/// set's dev split, pooled at the last prompt token (MEASURE §1), evaluated on the held-out
/// split.
///
/// # Errors
/// A split with one class only; forward and estimator errors.
pub fn fit_probe(
    engine: &Engine<'_>,
    items: Vec<ContrastItem>,
    seed: u64,
    progress: &indicatif::ProgressBar,
) -> Result<ProbeFile> {
    let (dev, test, _) = split_or_resplit(items);
    anyhow::ensure!(
        !dev.is_empty() && !test.is_empty(),
        "contrast set too small to split into dev and held-out (needs items on both sides of a hash split)"
    );
    let all: Vec<&ContrastItem> = dev.iter().chain(&test).collect();
    let prompts: Vec<Vec<u32>> = all
        .iter()
        .map(|it| engine.prompt_ids(&it.text))
        .collect::<Result<_>>()?;
    let acts = pooled_all(
        &engine.m.model,
        &prompts,
        &[engine.hook()],
        Pooling::Last,
        16,
        progress,
    )?;
    let d = engine.m.model.config().d_model;
    let labels: Vec<bool> = all.iter().map(|it| it.label == Label::Harmless).collect();
    let flat = &acts[0];
    let split = dev.len();
    let train = ContrastSet::from_flat(flat[..split * d].to_vec(), d, labels[..split].to_vec())?;
    let test_set = ContrastSet::from_flat(flat[split * d..].to_vec(), d, labels[split..].to_vec())?;
    let probe = LinearProbe::default().estimate(&train)?;
    let boot = Bootstrap {
        resamples: 200,
        level: 0.95,
    };
    let ev = evaluate(
        &probe,
        &train,
        &test_set,
        &boot,
        &mut ChaCha8Rng::seed_from_u64(seed),
    )?;
    Ok(ProbeFile {
        layer: engine.layer,
        direction: hex_f64(probe.as_slice()),
        n_train: train.n(),
        n_test: test_set.n(),
        heldout_accuracy: [ev.accuracy.estimate, ev.accuracy.lo, ev.accuracy.hi],
        heldout_q_hat: [ev.q_hat.estimate, ev.q_hat.lo, ev.q_hat.hi],
    })
}
