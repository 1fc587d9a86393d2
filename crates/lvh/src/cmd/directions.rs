//! `lvh directions`: value directions per layer on a real model (MEASURE §1–§3).
//!
//! For every layer ℓ (pooled `resid_post`, last token of the templated prompt) and every
//! method (difference of means, L2 logistic probe, LDA with shrinkage, PCA): the direction is
//! fitted on the train split and reported on the test split — accuracy at the train midpoint
//! threshold, AUC, pairwise agreement `P`, `q̂ = sin(π(P − ½))`, each with a bootstrap 95%
//! interval over test items. The PCA spectrum of train differences (twins from the `pair`
//! field when present, else class-conditional differences) gives the top-p explained variance
//! (p = 1, 2, 4, 8). The best layer is chosen on the train split only: 5-fold cross-validated
//! AUC of the difference of means, ties broken by the cross-validated separation
//! `d' = (m₊ − m₋) / sqrt((s₊² + s₋²)/2)`. Twins (items sharing `pair`, one per label) are
//! used only when they cover at least half of a split's items; otherwise P is counted over all
//! (harmless, harmful) pairs (= AUC) and the PCA uses class-conditional differences.
//!
//! Causal layer selection (the refusal-direction recipe, see [`crate::geometry::refusal`]): the
//! best probe layer need not be the layer whose direction *mediates* refusal. Every candidate
//! layer (default: `1 ≤ ℓ < 0.8·L`) gets a difference of means fitted on the train split less
//! a validation subset (`--causal-val-n` prompts per class, seeded), and is scored on that
//! subset by ablation at every layer (harmful refusal must drop), addition of the refusal
//! direction `−(μ₊ − μ₋)` at ℓ (harmless refusal must rise) and the KL of harmless next-token
//! distributions under ablation (≤ `--max-kl`); among those passing, the lowest ablated
//! harmful refusal wins. Then the causal checks run on the test split's prompts for both the
//! probe-best and the causal-best layer, each with the full-train difference of means.
//!
//! Default data: the bundled contrast set with the hash split (dev = train, heldout = test).
//! A train file that lies wholly on one side of that split (such as a `*.dev.jsonl`) is split
//! again by an independent salted hash of the same key ([`RESPLIT_SALT`], 20% test).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use lm_runtime::hooks::{HookPoint, Layer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use value_directions::metrics::{self, Bootstrap, Interval, Threshold};
use value_directions::subspace::pca;
use value_directions::{
    default_estimator, ContrastSet, DiffOfMeans, DifferenceSource, Differences, Direction,
    DirectionEstimator, Method, Site,
};

use crate::cmd::run::{Loaded, Weights};
use crate::datasets::{
    balanced_subsample, bundled_contrast, read_contrast, split_or_resplit, ContrastItem, Label,
    BUNDLED_CONTRAST_JSONL,
};
use crate::geometry::export::{npy_bytes, safetensors_bytes, ControlVector};
use crate::geometry::extract::{pooled_all, progress_bar, twin_pairs, ExtractRun, Pooling};
use crate::geometry::refusal::{
    causal_checks_with, score_candidate, select_causal, Baseline, CandidateScore, CausalReport,
    MeanSe, RefusalTokens,
};
use crate::geometry::{contrast_prompt, load_model};
use crate::run_dir::{FileProvenance, Manifest, RunDir};

/// Arguments of `lvh directions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model file or known model name (default: SmolLM2-135M-Instruct; with --acts, the
    /// model recorded in the extract run).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight storage (f32 is much faster for prefill-only work).
    #[arg(long, value_enum, default_value_t = Weights::F32)]
    pub weights: Weights,
    /// Train contrast set, JSONL (default: the bundled set). Without --test it is split by hash:
    /// dev = train, heldout = test.
    #[arg(long, conflicts_with = "acts")]
    pub train: Option<PathBuf>,
    /// Test contrast set, JSONL (then the train file is used whole).
    #[arg(long, conflicts_with = "acts")]
    pub test: Option<PathBuf>,
    /// Read activations from an `lvh extract` run folder instead (its items' hash split).
    #[arg(long)]
    pub acts: Option<PathBuf>,
    /// Balanced subsample of each file: this many items per label (seeded by --seed).
    #[arg(long)]
    pub per_class: Option<usize>,
    /// Layers, e.g. `0-29` or `4,8,12` (default: every layer).
    #[arg(long)]
    pub layers: Option<String>,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Seed of the subsample, the folds and the bootstrap (ChaCha8).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Prompts of each class for the causal checks (taken from the test split).
    #[arg(long, default_value_t = 32)]
    pub causal_n: usize,
    /// Skip the causal checks (and the causal layer selection).
    #[arg(long)]
    pub no_causal: bool,
    /// Candidate layers of the causal selection, e.g. `4-20` (default: `1 ≤ ℓ < 0.8·L` among
    /// --layers).
    #[arg(long)]
    pub causal_layers: Option<String>,
    /// Validation prompts of each class for the causal selection (taken out of the train split).
    #[arg(long, default_value_t = 16)]
    pub causal_val_n: usize,
    /// Largest mean KL (nats) of harmless next-token distributions under ablation for a
    /// candidate to pass.
    #[arg(long, default_value_t = 0.1)]
    pub max_kl: f64,
    /// Multiples of the layer's mean residual norm added along the refusal direction in check
    /// (b), comma-separated (default: ‖mean(h|harmful) − mean(h|harmless)‖ / n̄_ℓ, i.e. the
    /// full mean difference, then 0.25, 0.5, 1). The first is the main one.
    #[arg(long, value_delimiter = ',')]
    pub add_scale: Option<Vec<f64>>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run folder for the report and the directions.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One (layer, method) row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    /// Block index ℓ.
    pub layer: usize,
    /// Hook name.
    pub hook: String,
    /// Estimator.
    pub method: Method,
    /// Held-out accuracy at the train midpoint threshold.
    pub accuracy: f64,
    /// Its 95% bootstrap interval.
    pub accuracy_ci: [f64; 2],
    /// Held-out AUC.
    pub auc: f64,
    /// Its interval.
    pub auc_ci: [f64; 2],
    /// Held-out pairwise agreement P.
    pub agreement: f64,
    /// Its interval.
    pub agreement_ci: [f64; 2],
    /// `q̂ = sin(π(P − ½))`.
    pub q_hat: f64,
    /// Its interval.
    pub q_hat_ci: [f64; 2],
    /// Cosine with the difference of means of the same layer.
    pub cos_with_diff_of_means: f64,
    /// `‖raw estimate‖` (for diff of means: the mean difference, activation units).
    pub raw_norm: f64,
    /// Mean residual norm `n̄_ℓ` over train items.
    pub mean_resid_norm: f64,
}

/// PCA spectrum of train differences at one layer.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumRow {
    /// Block index.
    pub layer: usize,
    /// `paired` (twins) or `class-conditional`.
    pub source: &'static str,
    /// Differences used.
    pub n_differences: usize,
    /// Top eigenvalues of the uncentred second moment `(1/m) Σ Δ Δᵀ`.
    pub eigenvalues: Vec<f64>,
    /// Explained variance of the top-p subspace, for p = 1, 2, 4, 8.
    pub explained_variance: HashMap<String, f64>,
}

/// Train-only layer selection statistics.
#[derive(Debug, Clone, Serialize)]
pub struct CvRow {
    /// Block index.
    pub layer: usize,
    /// Mean held-out-fold AUC of the difference of means.
    pub cv_auc: f64,
    /// Mean held-out-fold accuracy.
    pub cv_accuracy: f64,
    /// Mean held-out-fold separation d'.
    pub cv_dprime: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Model file.
    pub model: Option<String>,
    /// Pooling.
    pub pooling: &'static str,
    /// Train items (positive, negative).
    pub n_train: [usize; 2],
    /// Test items (positive, negative).
    pub n_test: [usize; 2],
    /// Twin pairs in train / test.
    pub n_pairs: [usize; 2],
    /// One row per (layer, method).
    pub layers: Vec<LayerRow>,
    /// Spectra per layer.
    pub spectra: Vec<SpectrumRow>,
    /// Train-only selection statistics per layer.
    pub selection: Vec<CvRow>,
    /// The chosen layer.
    pub best_layer: usize,
    /// How it was chosen.
    pub best_layer_rule: &'static str,
    /// Causal checks at the best (probe) layer, unless skipped.
    pub causal: Option<CausalReport>,
    /// Causal layer selection and the checks at its layer, unless skipped.
    pub causal_selection: Option<CausalSelection>,
}

/// The causal layer selection (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct CausalSelection {
    /// Validation prompts per class (harmless, harmful), out of the train split.
    pub n_val: [usize; 2],
    /// The KL bound of the filter, nats.
    pub max_kl: f64,
    /// Refusal scores of the validation prompts without intervention (harmful, harmless).
    pub val_base: [MeanSe; 2],
    /// Every candidate's scores.
    pub candidates: Vec<CandidateScore>,
    /// The chosen layer.
    pub layer: usize,
    /// Whether it passes all three filters on the validation prompts.
    pub passes: bool,
    /// The rule.
    pub rule: &'static str,
    /// The causal checks at the chosen layer on the test prompts.
    pub check: CausalReport,
}

const CV_FOLDS: usize = 5;

/// Salt of the second hash split used when the train file is one side of the standard split.
pub use crate::datasets::RESPLIT_SALT;

/// Refuses splits too small for the folds and the test metrics, before any model work.
fn check_counts(train: &[bool], test: &[bool]) -> Result<()> {
    let count = |v: &[bool]| {
        let p = v.iter().filter(|&&x| x).count();
        [p, v.len() - p]
    };
    let (a, b) = (count(train), count(test));
    if a.iter().any(|&c| c < CV_FOLDS) || b.iter().any(|&c| c < 2) {
        bail!(
            "too few items: train {a:?}, test {b:?} (harmless, harmful); need ≥ {CV_FOLDS} per class in train and ≥ 2 in test"
        );
    }
    Ok(())
}

struct Data {
    /// Per layer: row-major `[n, d]`.
    acts: Vec<Vec<f32>>,
    d: usize,
    labels: Vec<bool>,
    is_train: Vec<bool>,
    pair: Vec<Option<String>>,
    texts: Option<Vec<String>>,
    model: Option<Loaded>,
    model_path: Option<PathBuf>,
    manifest_data: Vec<FileProvenance>,
}

fn parse_layers(spec: Option<&str>, n_layers: usize) -> Result<Vec<usize>> {
    let Some(spec) = spec else {
        return Ok((0..n_layers).collect());
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let p = |s: &str| {
            s.parse::<usize>()
                .with_context(|| format!("--layers: `{part}` is not a layer or range a-b"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (p(a)?, p(b)?),
            None => (p(part)?, p(part)?),
        };
        if hi >= n_layers || lo > hi {
            bail!("--layers: `{part}` outside 0..{n_layers}");
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn load_items(path: Option<&Path>) -> Result<(Vec<ContrastItem>, FileProvenance)> {
    Ok(match path {
        Some(p) => (read_contrast(p, None)?, FileProvenance::of(p)?),
        None => (
            bundled_contrast()?,
            FileProvenance::bundled("data/contrast.jsonl", BUNDLED_CONTRAST_JSONL.as_bytes()),
        ),
    })
}

fn gather(args: &Args) -> Result<(Data, Vec<usize>)> {
    if let Some(dir) = &args.acts {
        let run = ExtractRun::open(dir)?;
        if run.settings.pooling != Pooling::Last {
            eprintln!(
                "note: the extract run pooled with `{}`",
                run.settings.pooling.name()
            );
        }
        let hooks: Vec<HookPoint> = run
            .hooks()?
            .into_iter()
            .filter(|h| matches!(h, HookPoint::ResidPost(_)))
            .collect();
        if hooks.is_empty() {
            bail!(
                "{}: no blocks.N.hook_resid_post was extracted",
                dir.display()
            );
        }
        let max_layer = hooks.iter().filter_map(|h| h.layer()).map(|l| l.0).max();
        let wanted = parse_layers(args.layers.as_deref(), max_layer.map_or(0, |m| m + 1))?;
        let hooks: Vec<HookPoint> = hooks
            .into_iter()
            .filter(|h| h.layer().is_some_and(|l| wanted.contains(&l.0)))
            .collect();
        let layers = hooks
            .iter()
            .filter_map(|h| h.layer())
            .map(|l| l.0)
            .collect();
        let acts = run.load(&hooks)?;
        let labels = run
            .items
            .iter()
            .map(|it| match Label::parse(&it.label) {
                Some(l) => Ok(l == Label::Harmless),
                None => bail!("{}/items.json: item {}: bad label", dir.display(), it.id),
            })
            .collect::<Result<Vec<_>>>()?;
        let model_path = args
            .model
            .clone()
            .or_else(|| run.manifest.model.as_ref().map(|m| PathBuf::from(&m.path)));
        let model = match (&model_path, args.no_causal) {
            (Some(p), false) if p.is_file() || args.model.is_some() => {
                Some(load_model(Some(p.clone()), args.weights)?)
            }
            _ => None,
        };
        let data = Data {
            acts,
            d: run.settings.d_model,
            labels,
            is_train: run.items.iter().map(|it| it.split == "dev").collect(),
            pair: run.items.iter().map(|it| it.pair.clone()).collect(),
            texts: None,
            model,
            model_path,
            manifest_data: run.manifest.data.clone(),
        };
        return Ok((data, layers));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let (train_all, train_prov) = load_items(args.train.as_deref())?;
    let mut provs = vec![train_prov];
    let sub = |items: Vec<ContrastItem>, rng: &mut ChaCha8Rng| -> Result<Vec<ContrastItem>> {
        Ok(match args.per_class {
            Some(k) => balanced_subsample(&items, Some(k), rng)?,
            None => items,
        })
    };
    let (train, test) = match &args.test {
        Some(t) => {
            let (test_all, prov) = load_items(Some(t))?;
            provs.push(prov);
            (sub(train_all, &mut rng)?, sub(test_all, &mut rng)?)
        }
        None => {
            let (train, test, resplit) = split_or_resplit(sub(train_all, &mut rng)?);
            if resplit {
                eprintln!(
                    "note: the train file lies on one side of the dev/heldout split; re-split by \
                     hash (salt `{RESPLIT_SALT}`, 20% test)"
                );
            }
            (train, test)
        }
    };
    check_counts(
        &train
            .iter()
            .map(|it| it.label == Label::Harmless)
            .collect::<Vec<_>>(),
        &test
            .iter()
            .map(|it| it.label == Label::Harmless)
            .collect::<Vec<_>>(),
    )?;
    let m = load_model(args.model.clone(), args.weights)?;
    let cfg = m.model.config().clone();
    let layers = parse_layers(args.layers.as_deref(), cfg.n_layers)?;
    let hooks: Vec<HookPoint> = layers
        .iter()
        .map(|&l| HookPoint::ResidPost(Layer(l)))
        .collect();
    let items: Vec<&ContrastItem> = train.iter().chain(&test).collect();
    let prompts = items
        .iter()
        .map(|it| contrast_prompt(&m, &it.text))
        .collect::<Result<Vec<_>>>()?;
    let pb = progress_bar(prompts.len() as u64, "activations");
    let acts = pooled_all(&m.model, &prompts, &hooks, Pooling::Last, args.batch, &pb)?;
    pb.finish_and_clear();
    let data = Data {
        acts,
        d: cfg.d_model,
        labels: items.iter().map(|it| it.label == Label::Harmless).collect(),
        is_train: (0..items.len()).map(|i| i < train.len()).collect(),
        pair: items.iter().map(|it| it.pair.clone()).collect(),
        texts: Some(items.iter().map(|it| it.text.clone()).collect()),
        model_path: Some(m.path.clone()),
        model: Some(m),
        manifest_data: provs,
    };
    Ok((data, layers))
}

fn iv(i: &Interval) -> [f64; 2] {
    [i.lo, i.hi]
}

fn build_set(data: &Data, k: usize, ids: &[usize], site: &Site) -> Result<ContrastSet> {
    let d = data.d;
    let mut rows = Vec::with_capacity(ids.len() * d);
    for &i in ids {
        rows.extend_from_slice(&data.acts[k][i * d..(i + 1) * d]);
    }
    let labels = ids.iter().map(|&i| data.labels[i]).collect();
    let pairs = twin_pairs(ids, |i| data.pair[i].clone(), |i| data.labels[i]);
    let set = ContrastSet::from_flat(rows, d, labels)?.with_site(site.clone());
    // Twins are used (paired agreement, paired differences) only when they cover at least
    // half of the items; a handful of pairs would make P and the spectrum rest on them alone.
    Ok(if 4 * pairs.len() < ids.len() {
        set
    } else {
        set.with_pairs(pairs)?
    })
}

fn cv_row(set: &ContrastSet, layer: usize, rng: &mut ChaCha8Rng) -> Result<CvRow> {
    let folds = metrics::stratified_kfold(set.labels(), CV_FOLDS, rng)?;
    let (mut auc, mut acc, mut dp) = (0.0, 0.0, 0.0);
    for fold in &folds {
        let tr = set.subset(&metrics::complement(set.n(), fold))?;
        let te = set.subset(fold)?;
        let dir = DiffOfMeans::default().estimate(&tr)?;
        let s_tr = metrics::scores(&dir, &tr)?;
        let s_te = metrics::scores(&dir, &te)?;
        auc += metrics::auc(&s_te, te.labels())?;
        acc += Threshold::midpoint(&s_tr, tr.labels())?.accuracy(&s_te, te.labels())?;
        let stats = |pos: bool| {
            let v: Vec<f64> = s_te
                .iter()
                .zip(te.labels())
                .filter(|(_, &l)| l == pos)
                .map(|(s, _)| *s)
                .collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var =
                v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0).max(1.0);
            (m, var)
        };
        let ((mp, vp), (mn, vn)) = (stats(true), stats(false));
        dp += (mp - mn) / ((vp + vn) / 2.0).sqrt().max(1e-12);
    }
    let k = folds.len() as f64;
    Ok(CvRow {
        layer,
        cv_auc: auc / k,
        cv_accuracy: acc / k,
        cv_dprime: dp / k,
    })
}

/// Runs `lvh directions`.
///
/// # Errors
/// Bad arguments, unreadable model or data, too few items per class, I/O errors.
pub fn run(args: Args) -> Result<ExitCode> {
    let (data, layers) = gather(&args)?;
    let train_ids: Vec<usize> = (0..data.labels.len())
        .filter(|&i| data.is_train[i])
        .collect();
    let test_ids: Vec<usize> = (0..data.labels.len())
        .filter(|&i| !data.is_train[i])
        .collect();
    let count = |ids: &[usize]| {
        let p = ids.iter().filter(|&&i| data.labels[i]).count();
        [p, ids.len() - p]
    };
    let (n_train, n_test) = (count(&train_ids), count(&test_ids));
    check_counts(
        &train_ids
            .iter()
            .map(|&i| data.labels[i])
            .collect::<Vec<_>>(),
        &test_ids.iter().map(|&i| data.labels[i]).collect::<Vec<_>>(),
    )?;
    let boot = Bootstrap {
        resamples: args.bootstrap,
        ..Bootstrap::default()
    };
    let mut rows = Vec::new();
    let mut spectra = Vec::new();
    let mut selection = Vec::new();
    let mut directions: Vec<Direction> = Vec::new();
    let mut n_pairs = [0, 0];
    let pb = progress_bar(layers.len() as u64, "layers");
    for (k, &layer) in layers.iter().enumerate() {
        let hook = HookPoint::ResidPost(Layer(layer)).to_string();
        let site = Site {
            layer: Some(layer),
            hook: Some(hook.clone()),
            pooling: Some(Pooling::Last.name().into()),
        };
        let train = build_set(&data, k, &train_ids, &site)?;
        let test = build_set(&data, k, &test_ids, &site)?;
        n_pairs = [
            train.pairs().map_or(0, <[_]>::len),
            test.pairs().map_or(0, <[_]>::len),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ (0x9e37_79b9 * (layer as u64 + 1)));
        let dom = DiffOfMeans::default().estimate(&train)?;
        for method in Method::ALL {
            let dir = default_estimator(method)
                .estimate(&train)
                .with_context(|| format!("layer {layer}, {method}"))?;
            let ev = metrics::evaluate(&dir, &train, &test, &boot, &mut rng)?;
            let p = dir.provenance();
            rows.push(LayerRow {
                layer,
                hook: hook.clone(),
                method,
                accuracy: ev.accuracy.estimate,
                accuracy_ci: iv(&ev.accuracy),
                auc: ev.auc.estimate,
                auc_ci: iv(&ev.auc),
                agreement: ev.agreement.estimate,
                agreement_ci: iv(&ev.agreement),
                q_hat: ev.q_hat.estimate,
                q_hat_ci: iv(&ev.q_hat),
                cos_with_diff_of_means: dir.cosine(&dom)?,
                raw_norm: p.raw_norm,
                mean_resid_norm: p.mean_resid_norm,
            });
            directions.push(dir);
        }
        let diffs = Differences::of_set(&train, DifferenceSource::PairedOrClass)?;
        let kmax = 8.min(diffs.m()).min(data.d);
        let fit = pca(&diffs, kmax, false)?;
        spectra.push(SpectrumRow {
            layer,
            source: if train.pairs().is_some_and(|p| !p.is_empty()) {
                "paired"
            } else {
                "class-conditional"
            },
            n_differences: diffs.m(),
            eigenvalues: fit.spectrum.eigenvalues.iter().take(16).copied().collect(),
            explained_variance: [1usize, 2, 4, 8]
                .iter()
                .map(|&p| (p.to_string(), fit.spectrum.explained_variance(p)))
                .collect(),
        });
        selection.push(cv_row(&train, layer, &mut rng)?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let best = selection
        .iter()
        .max_by(|a, b| {
            a.cv_auc
                .total_cmp(&b.cv_auc)
                .then(a.cv_dprime.total_cmp(&b.cv_dprime))
        })
        .map(|c| c.layer)
        .context("no layer")?;
    let best_dom = directions
        .iter()
        .find(|d| {
            d.provenance().site.layer == Some(best)
                && d.provenance().method == Some(Method::DiffOfMeans)
        })
        .context("best-layer direction")?
        .clone();

    let (causal, causal_selection) = match (&data.model, args.no_causal) {
        (Some(m), false) => {
            let (c, s) = run_causal(&args, &data, m, &layers, &best_dom, &train_ids, &test_ids)?;
            (Some(c), Some(s))
        }
        (None, false) => {
            eprintln!("note: causal checks skipped (no model or no prompt texts)");
            (None, None)
        }
        _ => (None, None),
    };
    let report = Report {
        model: data.model_path.as_ref().map(|p| p.display().to_string()),
        pooling: Pooling::Last.name(),
        n_train,
        n_test,
        n_pairs,
        layers: rows,
        spectra,
        selection,
        best_layer: best,
        best_layer_rule: "max 5-fold CV AUC of diff-of-means on the train split, ties by CV d'",
        causal,
        causal_selection,
    };
    if let Some(out) = &args.out {
        let causal_best = report.causal_selection.as_ref().map(|c| c.layer);
        save(&args, &data, out, &report, &directions, best, causal_best)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits the train items into (fit, validation): `val_n` of each class, seeded.
fn val_split(
    data: &Data,
    train_ids: &[usize],
    val_n: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00ca_05a1);
    let mut val = Vec::new();
    for pos in [true, false] {
        let mut ids: Vec<usize> = train_ids
            .iter()
            .copied()
            .filter(|&i| data.labels[i] == pos)
            .collect();
        ids.shuffle(&mut rng);
        if ids.len() < val_n + CV_FOLDS {
            bail!(
                "--causal-val-n {val_n}: the train split has only {} {} items",
                ids.len(),
                if pos { "harmless" } else { "harmful" }
            );
        }
        val.extend_from_slice(&ids[..val_n]);
    }
    val.sort_unstable();
    let fit = train_ids
        .iter()
        .copied()
        .filter(|i| val.binary_search(i).is_err())
        .collect();
    Ok((fit, val))
}

/// Candidate layers: `--causal-layers` or `1 ≤ ℓ < 0.8·L`, among the computed layers.
fn candidate_layers(args: &Args, layers: &[usize], n_layers: usize) -> Result<Vec<usize>> {
    let wanted = match &args.causal_layers {
        Some(spec) => parse_layers(Some(spec), n_layers)?,
        None => (1..n_layers)
            .filter(|&l| (l as f64) < 0.8 * n_layers as f64)
            .collect(),
    };
    let out: Vec<usize> = wanted.into_iter().filter(|l| layers.contains(l)).collect();
    if out.is_empty() {
        bail!("no candidate layer for the causal selection among the computed layers {layers:?}");
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)] // the pieces of one run
fn run_causal(
    args: &Args,
    data: &Data,
    m: &Loaded,
    layers: &[usize],
    probe_dom: &Direction,
    train_ids: &[usize],
    test_ids: &[usize],
) -> Result<(CausalReport, CausalSelection)> {
    let texts = match &data.texts {
        Some(t) => t.clone(),
        None => bail!("causal checks from an extract run need the prompt texts; rerun without --acts or with --no-causal"),
    };
    let prompts_of = |ids: &[usize], pos: bool, n: usize| -> Result<Vec<Vec<u32>>> {
        ids.iter()
            .filter(|&&i| data.labels[i] == pos)
            .take(n)
            .map(|&i| contrast_prompt(m, &texts[i]))
            .collect()
    };
    let tokens = RefusalTokens::new(&m.tokenizer)?;

    // Causal selection on a validation subset of the train split.
    let n_layers = m.model.config().n_layers;
    let cands = candidate_layers(args, layers, n_layers)?;
    let (fit_ids, val_ids) = val_split(data, train_ids, args.causal_val_n, args.seed)?;
    let (val_hl, val_hf) = (
        prompts_of(&val_ids, true, usize::MAX)?,
        prompts_of(&val_ids, false, usize::MAX)?,
    );
    let val_base = Baseline::measure(&m.model, &tokens, &val_hf, &val_hl, args.batch)?;
    let pb = progress_bar(cands.len() as u64, "causal selection");
    let mut candidates = Vec::with_capacity(cands.len());
    for &layer in &cands {
        let k = layers
            .iter()
            .position(|&l| l == layer)
            .context("candidate layer")?;
        let site = Site {
            layer: Some(layer),
            hook: Some(HookPoint::ResidPost(Layer(layer)).to_string()),
            pooling: Some(Pooling::Last.name().into()),
        };
        let fit = build_set(data, k, &fit_ids, &site)?;
        let dir = DiffOfMeans::default().estimate(&fit)?;
        candidates.push(score_candidate(
            &m.model,
            &tokens,
            &val_base,
            &val_hf,
            &val_hl,
            &dir.to_f32(),
            layer,
            dir.provenance().raw_norm,
            args.max_kl,
            args.batch,
        )?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let (chosen, passes) = select_causal(&candidates).context("no candidate")?;
    let chosen_layer = chosen.layer;

    // Checks on the test prompts, for the probe-best and the causal-best layer.
    let (harmless, harmful) = (
        prompts_of(test_ids, true, args.causal_n)?,
        prompts_of(test_ids, false, args.causal_n)?,
    );
    let base = Baseline::measure(&m.model, &tokens, &harmful, &harmless, args.batch)?;
    let check = |dir: &Direction| -> Result<CausalReport> {
        let p = dir.provenance();
        let norm = p.mean_resid_norm;
        let scales = args
            .add_scale
            .clone()
            .unwrap_or_else(|| vec![p.raw_norm / norm.max(1e-12), 0.25, 0.5, 1.0]);
        causal_checks_with(
            &m.model,
            &tokens,
            &base,
            &harmful,
            &harmless,
            &dir.to_f32(),
            p.site.layer.unwrap_or(0),
            norm,
            &scales,
            args.batch,
        )
    };
    let probe_report = check(probe_dom)?;
    let causal_dom = dir_at(data, layers, train_ids, chosen_layer)?;
    let causal_report = if probe_dom.provenance().site.layer == Some(chosen_layer) {
        probe_report.clone()
    } else {
        check(&causal_dom)?
    };
    let sel = CausalSelection {
        n_val: [val_hl.len(), val_hf.len()],
        max_kl: args.max_kl,
        val_base: [
            MeanSe::of(&val_base.harmful),
            MeanSe::of(&val_base.harmless),
        ],
        candidates,
        layer: chosen_layer,
        passes,
        rule: "on validation prompts: ablation lowers harmful refusal, addition raises harmless \
               refusal, KL(base‖ablated) ≤ max; among those, the lowest ablated harmful refusal \
               (if none passes: fewest failed filters, then the lowest)",
        check: causal_report,
    };
    Ok((probe_report, sel))
}

/// The full-train difference of means at `layer`.
fn dir_at(data: &Data, layers: &[usize], train_ids: &[usize], layer: usize) -> Result<Direction> {
    let k = layers
        .iter()
        .position(|&l| l == layer)
        .context("layer not computed")?;
    let site = Site {
        layer: Some(layer),
        hook: Some(HookPoint::ResidPost(Layer(layer)).to_string()),
        pooling: Some(Pooling::Last.name().into()),
    };
    Ok(DiffOfMeans::default().estimate(&build_set(data, k, train_ids, &site)?)?)
}

fn save(
    args: &Args,
    data: &Data,
    out: &Path,
    report: &Report,
    directions: &[Direction],
    best: usize,
    causal_best: Option<usize>,
) -> Result<()> {
    let settings = serde_json::json!({
        "train": args.train, "test": args.test, "acts": args.acts,
        "per_class": args.per_class, "layers": args.layers, "bootstrap": args.bootstrap,
        "causal_n": args.causal_n, "no_causal": args.no_causal, "add_scale": args.add_scale,
        "causal_layers": args.causal_layers, "causal_val_n": args.causal_val_n, "max_kl": args.max_kl,
        "pooling": "last", "position_rule": crate::geometry::extract::POSITION_RULE,
    });
    let mut manifest = Manifest::new("directions", settings);
    manifest.seed = Some(args.seed);
    manifest.model = match &data.model_path {
        Some(p) if p.is_file() => Some(FileProvenance::of(p)?),
        _ => None,
    };
    manifest.data = data.manifest_data.clone();
    let dir = RunDir::open(out, &manifest)?;
    dir.write_json("report.json", report)?;
    dir.write_json("directions.json", &directions)?;
    let vectors: Vec<(String, Vec<f32>)> = directions
        .iter()
        .map(|d| {
            let p = d.provenance();
            let name = format!(
                "{}/{}",
                p.method.map_or("given", Method::name),
                p.site.hook.as_deref().unwrap_or("?")
            );
            (name, d.to_f32())
        })
        .collect();
    let meta: HashMap<String, String> = [
        (
            "orientation".to_string(),
            "harmful -> harmless (unit norm)".to_string(),
        ),
        ("best_layer".to_string(), best.to_string()),
    ]
    .into();
    dir.write_bytes(
        "directions.safetensors",
        &safetensors_bytes(&vectors, Some(meta))?,
    )?;
    // Control vector: the mean difference itself (harmless − harmful, activation units) for
    // every layer ≥ 1; adding it with a positive scale pushes toward harmless (less refusal).
    let hint = match &data.model {
        Some(m) => m.model.config().arch.to_string(),
        None => String::new(),
    };
    let mut layers = std::collections::BTreeMap::new();
    for d in directions {
        let p = d.provenance();
        if let (Some(Method::DiffOfMeans), Some(l)) = (p.method, p.site.layer) {
            if l >= 1 {
                layers.insert(l, d.scaled(p.raw_norm).iter().map(|&x| x as f32).collect());
            }
        }
    }
    if !layers.is_empty() {
        ControlVector {
            model_hint: hint,
            layers,
        }
        .write(&dir.file("control_vector.diff-of-means.gguf"))?;
    }
    let best_dir = directions
        .iter()
        .find(|d| {
            d.provenance().site.layer == Some(best)
                && d.provenance().method == Some(Method::DiffOfMeans)
        })
        .context("best direction")?;
    dir.write_bytes(
        "best.npy",
        &npy_bytes(&[best_dir.dim()], &best_dir.to_f32())?,
    )?;
    if let Some(l) = causal_best {
        let d = directions
            .iter()
            .find(|d| {
                d.provenance().site.layer == Some(l)
                    && d.provenance().method == Some(Method::DiffOfMeans)
            })
            .context("causal-best direction")?;
        dir.write_bytes("causal_best.npy", &npy_bytes(&[d.dim()], &d.to_f32())?)?;
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "train {:?} test {:?} (harmless, harmful), twin pairs {:?}; best layer {} ({})",
        r.n_train, r.n_test, r.n_pairs, r.best_layer, r.best_layer_rule
    );
    println!(
        "{:>5} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "layer",
        "cv_auc",
        "dom_acc",
        "dom_q",
        "probe",
        "p_q",
        "lda",
        "lda_q",
        "pca",
        "ev1",
        "ev4",
        "ev8"
    );
    for (s, c) in r.spectra.iter().zip(&r.selection) {
        let get = |m: Method| {
            r.layers
                .iter()
                .find(|x| x.layer == s.layer && x.method == m)
        };
        let f = |m: Method| get(m).map_or((f64::NAN, f64::NAN), |x| (x.accuracy, x.q_hat));
        let (da, dq) = f(Method::DiffOfMeans);
        let (pa, pq) = f(Method::LinearProbe);
        let (la, lq) = f(Method::Lda);
        let (ca, _) = f(Method::Pca);
        let ev = |p: &str| s.explained_variance.get(p).copied().unwrap_or(f64::NAN);
        println!(
            "{:>5} {:>7.3} {:>7.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
            s.layer, c.cv_auc, da, dq, pa, pq, la, lq, ca, ev("1"), ev("4"), ev("8")
        );
    }
    if let Some(c) = &r.causal {
        let pieces = |v: &[(String, u32, String)]| {
            v.iter()
                .map(|(o, id, p)| format!("{o:?}→{id}:{p:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "refusal score = lse(refusal) − lse(compliance) of the first answer token; refusal {}; compliance {}",
            pieces(&c.tokens.refusal),
            pieces(&c.tokens.compliance)
        );
        println!(
            "baseline on test prompts: harmful {:.3} ± {:.3} vs harmless {:.3} ± {:.3} [{}]",
            c.harmful_base.mean,
            c.harmful_base.se,
            c.harmless_base.mean,
            c.harmless_base.se,
            if c.harmful_base.mean > c.harmless_base.mean {
                "harmful higher: ok"
            } else {
                "harmful NOT higher"
            }
        );
        print_causal("probe-best", c);
    }
    if let Some(s) = &r.causal_selection {
        println!(
            "causal selection on {:?} validation prompts (harmless, harmful): base harmful {:.3}, harmless {:.3}; KL bound {}",
            s.n_val, s.val_base[0].mean, s.val_base[1].mean, s.max_kl
        );
        println!(
            "{:>5} {:>9} {:>12} {:>12} {:>9}  pass",
            "layer", "add_norm", "hf_ablated", "hl_added", "kl"
        );
        for c in &s.candidates {
            println!(
                "{:>5} {:>9.3} {:>12.3} {:>12.3} {:>9.4}  {}{}{}",
                c.layer,
                c.add_coeff,
                c.harmful_ablated.mean,
                c.harmless_added.mean,
                c.harmless_kl.mean,
                if c.ablation_lowers { "a" } else { "-" },
                if c.addition_raises { "b" } else { "-" },
                if c.kl_ok { "c" } else { "-" },
            );
        }
        println!(
            "causal-best layer {} ({}on validation)",
            s.layer,
            if s.passes {
                "passes all filters "
            } else {
                "passes NOT all filters "
            }
        );
        print_causal("causal-best", &s.check);
    }
}

fn print_causal(what: &str, c: &CausalReport) {
    println!(
        "{what} layer {}: harmful refusal {:.3} -> {:.3} ablated [{}], {:.0}% of prompts lowered; harmless KL(base‖ablated) {:.4} nats",
        c.layer,
        c.harmful_base.mean,
        c.harmful_ablated.mean,
        if c.ablation_lowers_refusal { "lower: ok" } else { "NOT lower" },
        100.0 * c.frac_harmful_lowered,
        c.harmless_kl_ablation.mean
    );
    for a in &c.additions {
        println!(
            "  harmless refusal {:.3} -> {:.3} with {:.3}·n̄ added along the refusal direction ({:.0}% of prompts raised){}",
            c.harmless_base.mean,
            a.harmless_added.mean,
            a.scale,
            100.0 * a.frac_raised,
            if a.harmless_added.mean > c.harmless_base.mean { "" } else { " [NOT higher]" }
        );
    }
}
