//! Stage 1 of the audit: how well each layer encodes the value, and where (MEASURE §3).

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use lm_runtime::hooks::{HookPoint, Layer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use value_directions::metrics::{evaluate, Bootstrap, Interval};
use value_directions::subspace::{pca, Differences, Subspace};
use value_directions::{ContrastSet, Direction};
use value_directions::{DiffOfMeans, DirectionEstimator, LinearProbe};

use crate::cmd::judge::LoadedJudgeModel;
use crate::datasets::{split_or_resplit, ContrastItem, Label};
use crate::geometry::extract::{pooled_all, Pooling};
use crate::judge::prompt::{conversation_messages, encode};

/// Per-layer value geometry.
#[derive(Clone, Debug, Serialize)]
pub struct LayerGeometry {
    /// Block index ℓ (hook `blocks.ℓ.hook_resid_post`).
    pub layer: usize,
    /// Held-out accuracy of the difference-of-means direction.
    pub dom_accuracy: Interval,
    /// Held-out `q̂` of the difference of means (`a(c)`, T7a).
    pub dom_q_hat: Interval,
    /// Held-out `q̂` of the logistic probe (the ceiling `q`, T2).
    pub probe_q_hat: Interval,
    /// Held-out AUC of the probe.
    pub probe_auc: Interval,
    /// Dev-split accuracy of the difference of means (used to pick the best layer).
    pub dev_accuracy: f64,
    /// Explained variance of the top-p subspace of paired differences, p = 1, 2, 4, 8.
    pub explained_variance: Vec<(usize, f64)>,
    /// Mean residual norm at this layer (steering units).
    pub mean_resid_norm: f64,
}

/// The value geometry of the model on the contrast set.
#[derive(Clone, Debug, Serialize)]
pub struct Geometry {
    /// Per layer.
    pub layers: Vec<LayerGeometry>,
    /// The best layer, by dev-split accuracy only.
    pub best_layer: usize,
    /// Dev / held-out items.
    pub n_dev: usize,
    /// Held-out items.
    pub n_test: usize,
    /// Rank p of the value subspace used for shift shares.
    pub subspace_rank: usize,
    /// Per layer, the unit difference-of-means direction `c_ℓ` (not serialised).
    #[serde(skip)]
    pub directions: Vec<Direction>,
    /// Per layer, the top-p value subspace (not serialised).
    #[serde(skip)]
    pub subspaces: Vec<Subspace>,
}

/// Token ids of a contrast item as the model sees an instruction: one user turn rendered with
/// the chat template and its generation prompt (the pooled position is the last token, MEASURE §1).
pub fn instruction_tokens(m: &LoadedJudgeModel, text: &str) -> Result<Vec<u32>> {
    let rendered = m
        .format
        .render(&conversation_messages(text), true)
        .context("chat template")?;
    Ok(encode(&m.tokenizer, &rendered))
}

/// All `resid_post` hooks of the model.
pub fn resid_hooks(n_layers: usize) -> Vec<HookPoint> {
    (0..n_layers)
        .map(|l| HookPoint::ResidPost(Layer(l)))
        .collect()
}

fn rows(flat: &[f32], d: usize, idx: &[usize]) -> Vec<Vec<f32>> {
    idx.iter()
        .map(|&i| flat[i * d..(i + 1) * d].to_vec())
        .collect()
}

/// Runs stage 1.
///
/// # Errors
/// Forward-pass and estimator errors (e.g. a split with one class only).
pub fn value_geometry(
    m: &LoadedJudgeModel,
    items: Vec<ContrastItem>,
    subspace_rank: usize,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Geometry> {
    let cfg = m.model.config();
    let (n_layers, d) = (cfg.n_layers, cfg.d_model);
    let (dev, test, _) = split_or_resplit(items);
    anyhow::ensure!(
        !dev.is_empty() && !test.is_empty(),
        "contrast set too small to split into dev and held-out (needs items on both sides of a hash split)"
    );
    let all: Vec<&ContrastItem> = dev.iter().chain(&test).collect();
    let prompts: Vec<Vec<u32>> = all
        .iter()
        .map(|it| instruction_tokens(m, &it.text))
        .collect::<Result<_>>()?;
    let hooks = resid_hooks(n_layers);
    let acts = pooled_all(&m.model, &prompts, &hooks, Pooling::Last, 16, progress)?;
    let labels: Vec<bool> = all.iter().map(|it| it.label == Label::Harmless).collect();
    let dev_idx: Vec<usize> = (0..dev.len()).collect();
    let test_idx: Vec<usize> = (dev.len()..all.len()).collect();
    // Twin pairs on the dev split (harmless, harmful) for the paired-difference PCA.
    let mut twins: std::collections::BTreeMap<&str, [Option<usize>; 2]> = Default::default();
    for &i in &dev_idx {
        if let Some(p) = all[i].pair.as_deref() {
            let slot = usize::from(!labels[i]);
            twins.entry(p).or_default()[slot] = Some(i);
        }
    }
    let pairs: Vec<(usize, usize)> = twins
        .values()
        .filter_map(|t| Some((t[0]?, t[1]?)))
        .collect();
    let boot = Bootstrap {
        resamples: 200,
        level: 0.95,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut layers = Vec::with_capacity(n_layers);
    let mut directions = Vec::with_capacity(n_layers);
    let mut subspaces = Vec::with_capacity(n_layers);
    for (l, flat) in acts.iter().enumerate() {
        let train = ContrastSet::new(
            rows(flat, d, &dev_idx),
            dev_idx.iter().map(|&i| labels[i]).collect(),
        )?;
        let test_set = ContrastSet::new(
            rows(flat, d, &test_idx),
            test_idx.iter().map(|&i| labels[i]).collect(),
        )?;
        let dom = DiffOfMeans::default().estimate(&train)?;
        let dom_eval = evaluate(&dom, &train, &test_set, &boot, &mut rng)?;
        let dev_eval = evaluate(
            &dom,
            &train,
            &train,
            &Bootstrap {
                resamples: 2,
                level: 0.95,
            },
            &mut rng,
        )?;
        let probe = LinearProbe::default().estimate(&train)?;
        let probe_eval = evaluate(&probe, &train, &test_set, &boot, &mut rng)?;
        let diffs: Vec<f64> = if pairs.len() >= 2 {
            pairs
                .iter()
                .flat_map(|&(a, b)| {
                    (0..d).map(move |k| f64::from(flat[a * d + k]) - f64::from(flat[b * d + k]))
                })
                .collect()
        } else {
            // No twins: differences of each harmless item from the harmful mean.
            let neg: Vec<usize> = dev_idx.iter().copied().filter(|&i| !labels[i]).collect();
            let mut mean = vec![0f64; d];
            for &i in &neg {
                for k in 0..d {
                    mean[k] += f64::from(flat[i * d + k]) / neg.len() as f64;
                }
            }
            dev_idx
                .iter()
                .filter(|&&i| labels[i])
                .flat_map(|&i| {
                    (0..d)
                        .map(move |k| f64::from(flat[i * d + k]))
                        .zip(mean.clone())
                        .map(|(x, m)| x - m)
                })
                .collect()
        };
        let fit = pca(
            &Differences::from_flat(diffs, d)?,
            subspace_rank.max(8),
            false,
        )?;
        let explained = [1usize, 2, 4, 8]
            .iter()
            .map(|&p| (p, fit.spectrum.explained_variance(p)))
            .collect();
        let mean_resid_norm = (0..all.len())
            .map(|i| {
                flat[i * d..(i + 1) * d]
                    .iter()
                    .map(|&x| f64::from(x).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .sum::<f64>()
            / all.len() as f64;
        layers.push(LayerGeometry {
            layer: l,
            dom_accuracy: dom_eval.accuracy,
            dom_q_hat: dom_eval.q_hat,
            probe_q_hat: probe_eval.q_hat,
            probe_auc: probe_eval.auc,
            dev_accuracy: dev_eval.accuracy.estimate,
            explained_variance: explained,
            mean_resid_norm,
        });
        directions.push(dom);
        subspaces.push(fit.subspace.truncate(subspace_rank)?);
    }
    let best_layer = layers
        .iter()
        .max_by(|a, b| {
            a.dev_accuracy
                .total_cmp(&b.dev_accuracy)
                .then(b.layer.cmp(&a.layer))
        })
        .map_or(0, |l| l.layer);
    Ok(Geometry {
        layers,
        best_layer,
        n_dev: dev_idx.len(),
        n_test: test_idx.len(),
        subspace_rank,
        directions,
        subspaces,
    })
}
