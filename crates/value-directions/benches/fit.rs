//! Timings of the hot paths at the size of one layer of a small model (n = 2000 items,
//! d = 576), median of 5 runs. `cargo bench -p value-directions` (plain harness: no framework
//! needed to read a few medians).

use std::hint::black_box;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use value_directions::metrics::{auc, Bootstrap};
use value_directions::subspace::pca;
use value_directions::{
    ContrastSet, DiffOfMeans, DifferenceSource, Differences, DirectionEstimator, Lda, LinearProbe,
};

fn median_secs(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[2]
}

fn main() {
    let (n, d) = (2000, 576);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let shift: Vec<f64> = (0..d)
        .map(|_| 0.1 * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let mut rows = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let pos = i % 2 == 0;
        let sign = if pos { 1.0 } else { -1.0 };
        rows.push(
            (0..d)
                .map(|j| (sign * shift[j] + rng.sample::<f64, _>(StandardNormal)) as f32)
                .collect(),
        );
        labels.push(pos);
    }
    let set = ContrastSet::new(rows, labels).expect("valid synthetic set");
    let report = |name: &str, secs: f64| println!("{name:<32} {:>9.1} ms", secs * 1e3);
    println!("n = {n}, d = {d}");
    report(
        "diff of means",
        median_secs(|| {
            black_box(DiffOfMeans::default().estimate(&set).expect("fit"));
        }),
    );
    report(
        "logistic probe (Newton)",
        median_secs(|| {
            black_box(LinearProbe::default().estimate(&set).expect("fit"));
        }),
    );
    report(
        "LDA (Ledoit-Wolf)",
        median_secs(|| {
            black_box(Lda::default().estimate(&set).expect("fit"));
        }),
    );
    let diffs = Differences::of_set(&set, DifferenceSource::ClassConditional).expect("differences");
    report(
        "PCA full spectrum + top-8",
        median_secs(|| {
            black_box(pca(&diffs, 8, false).expect("pca"));
        }),
    );
    let v = DiffOfMeans::default().estimate(&set).expect("fit");
    let s = value_directions::metrics::scores(&v, &set).expect("scores");
    report(
        "AUC",
        median_secs(|| {
            black_box(auc(&s, set.labels()).expect("auc"));
        }),
    );
    report(
        "bootstrap AUC (1000 resamples)",
        median_secs(|| {
            black_box(
                Bootstrap::default()
                    .auc(&s, set.labels(), &mut ChaCha8Rng::seed_from_u64(1))
                    .expect("bootstrap"),
            );
        }),
    );
}
