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
//! (harmless, harmful) pairs (= AUC) and the PCA uses class-conditional differences. Causal checks with the best layer's difference of
//! means: see [`crate::geometry::refusal`].
//!
//! Default data: the bundled contrast set with the hash split (dev = train, heldout = test).
//! A train file that lies wholly on one side of that split (such as a `*.dev.jsonl`) is split
//! again by an independent salted hash of the same key ([`RESPLIT_SALT`], 20% test).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use lm_runtime::hooks::{HookPoint, Layer};
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
    balanced_subsample, bundled_contrast, read_contrast, ContrastItem, Label, Split, SplitKey,
    BUNDLED_CONTRAST_JSONL,
};
use crate::geometry::export::{npy_bytes, safetensors_bytes, ControlVector};
use crate::geometry::extract::{pooled_all, progress_bar, twin_pairs, ExtractRun, Pooling};
use crate::geometry::refusal::{causal_checks, CausalReport, RefusalTokens};
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
    /// Skip the causal checks.
    #[arg(long)]
    pub no_causal: bool,
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
    /// Causal checks at the best layer, unless skipped.
    pub causal: Option<CausalReport>,
}

const CV_FOLDS: usize = 5;

/// Salt of the second hash split used when the train file is one side of the standard split.
pub const RESPLIT_SALT: &str = "lvh-directions";

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
            let all = sub(train_all, &mut rng)?;
            let (dev, heldout): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|it| it.split() == Split::Dev);
            if dev.is_empty() || heldout.is_empty() {
                // The file is one side of the standard split already (e.g. a `*.dev.jsonl`):
                // split it again by an independent salted hash of the same key.
                let mut train = Vec::new();
                let mut test = Vec::new();
                for it in dev.into_iter().chain(heldout) {
                    match metrics::hash_split(it.split_key(), RESPLIT_SALT, 0.2)? {
                        metrics::Split::Train => train.push(it),
                        metrics::Split::Test => test.push(it),
                    }
                }
                eprintln!(
                    "note: the train file lies on one side of the dev/heldout split; re-split by \
                     hash (salt `{RESPLIT_SALT}`, 20% test)"
                );
                (train, test)
            } else {
                (dev, heldout)
            }
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

    let causal = match (&data.model, args.no_causal) {
        (Some(m), false) => Some(run_causal(&args, &data, m, &best_dom, &test_ids)?),
        (None, false) => {
            eprintln!("note: causal checks skipped (no model or no prompt texts)");
            None
        }
        _ => None,
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
    };
    if let Some(out) = &args.out {
        save(&args, &data, out, &report, &directions, best)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_causal(
    args: &Args,
    data: &Data,
    m: &Loaded,
    dir: &Direction,
    test_ids: &[usize],
) -> Result<CausalReport> {
    let texts = match &data.texts {
        Some(t) => t.clone(),
        None => bail!("causal checks from an extract run need the prompt texts; rerun without --acts or with --no-causal"),
    };
    let pick = |pos: bool| -> Result<Vec<Vec<u32>>> {
        test_ids
            .iter()
            .filter(|&&i| data.labels[i] == pos)
            .take(args.causal_n)
            .map(|&i| contrast_prompt(m, &texts[i]))
            .collect()
    };
    let (harmless, harmful) = (pick(true)?, pick(false)?);
    let tokens = RefusalTokens::new(&m.tokenizer)?;
    let p = dir.provenance();
    let norm = p.mean_resid_norm;
    let scales = args
        .add_scale
        .clone()
        .unwrap_or_else(|| vec![p.raw_norm / norm.max(1e-12), 0.25, 0.5, 1.0]);
    let unit = dir.to_f32();
    causal_checks(
        &m.model,
        &tokens,
        &harmful,
        &harmless,
        &unit,
        p.site.layer.unwrap_or(0),
        norm,
        &scales,
        args.batch,
    )
}

fn save(
    args: &Args,
    data: &Data,
    out: &Path,
    report: &Report,
    directions: &[Direction],
    best: usize,
) -> Result<()> {
    let settings = serde_json::json!({
        "train": args.train, "test": args.test, "acts": args.acts,
        "per_class": args.per_class, "layers": args.layers, "bootstrap": args.bootstrap,
        "causal_n": args.causal_n, "no_causal": args.no_causal, "add_scale": args.add_scale,
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
        println!(
            "causal (layer {}): harmful refusal {:.3} -> {:.3} ablated [{}]; harmless KL(base‖ablated) {:.4} nats",
            c.layer,
            c.harmful_base.mean,
            c.harmful_ablated.mean,
            if c.ablation_lowers_refusal { "lower: ok" } else { "NOT lower" },
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
}
