//! Fit every estimator on synthetic activations of `L` layers (THEORY T7a data with a random
//! anisotropic noise covariance per layer) and print held-out metrics and timings.
//!
//! `cargo run --release -p value-directions --example layer_sweep -- [n] [d] [layers]`
//! (defaults 2000, 576, 30).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use value_directions::metrics::{auc, q_hat, scores, Bootstrap, Threshold};
use value_directions::subspace::pca;
use value_directions::{ContrastSet, DifferenceSource, Differences, Method, Site};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let n = args.first().copied().unwrap_or(2000);
    let d = args.get(1).copied().unwrap_or(576);
    let layers = args.get(2).copied().unwrap_or(30);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut per_method = vec![0.0f64; Method::ALL.len()];
    let mut pca_time = 0.0;
    println!("n = {n} (train) + {n} (test), d = {d}, layers = {layers}");
    for layer in 0..layers {
        // Signal grows with depth; noise has a per-feature scale in [0.3, 3].
        let strength = 0.2 + 1.5 * layer as f64 / layers as f64;
        let c: Vec<f64> = (0..d)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect();
        let cn = c.iter().map(|x| x * x).sum::<f64>().sqrt();
        let c: Vec<f64> = c.iter().map(|x| x * strength / cn).collect();
        let scale: Vec<f64> = (0..d).map(|_| 0.3 + 2.7 * rng.gen::<f64>()).collect();
        let draw = |m: usize, rng: &mut ChaCha8Rng| {
            let mut rows = Vec::with_capacity(m);
            let mut labels = Vec::with_capacity(m);
            for i in 0..m {
                let pos = i % 2 == 0;
                let u: f64 = rng.sample::<f64, _>(StandardNormal).abs() + 0.43;
                let u = if pos { u } else { -u };
                rows.push(
                    (0..d)
                        .map(|j| {
                            (c[j] * u + scale[j] * rng.sample::<f64, _>(StandardNormal)) as f32
                        })
                        .collect(),
                );
                labels.push(pos);
            }
            ContrastSet::new(rows, labels)
        };
        let site = Site {
            layer: Some(layer),
            hook: Some(format!("blocks.{layer}.hook_resid_post")),
            pooling: Some("last".into()),
        };
        let train = draw(n, &mut rng)?.with_site(site);
        let test = draw(n, &mut rng)?;
        let mut line = format!("layer {layer:2}:");
        for (k, method) in Method::ALL.into_iter().enumerate() {
            let t0 = Instant::now();
            let v = value_directions::default_estimator(method).estimate(&train)?;
            per_method[k] += t0.elapsed().as_secs_f64();
            let thr = Threshold::midpoint(&scores(&v, &train)?, train.labels())?;
            let s = scores(&v, &test)?;
            let acc = thr.accuracy(&s, test.labels())?;
            let p = auc(&s, test.labels())?;
            line += &format!("  {method} acc {acc:.3} P {p:.3} q̂ {:.3}", q_hat(p));
        }
        let t0 = Instant::now();
        let diffs = Differences::of_set(&train, DifferenceSource::ClassConditional)?;
        let fit = pca(&diffs, 4, false)?;
        pca_time += t0.elapsed().as_secs_f64();
        line += &format!(
            "  EV(1) {:.3} EV(4) {:.3}",
            fit.spectrum.explained_variance(1),
            fit.spectrum.explained_variance(4)
        );
        println!("{line}");
    }
    for (k, method) in Method::ALL.into_iter().enumerate() {
        println!(
            "{method:>14}: {:.2} s total, {:.3} s per layer",
            per_method[k],
            per_method[k] / layers as f64
        );
    }
    println!(
        "{:>14}: {pca_time:.2} s total (full spectrum)",
        "pca spectrum"
    );
    // A bootstrap interval, for scale.
    let t0 = Instant::now();
    let s: Vec<f64> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    let l: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
    let iv = Bootstrap::default().auc(&s, &l, &mut rng)?;
    println!(
        "bootstrap AUC (1000 resamples, n = {n}): {:.2} s, {iv:?}",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
