//! Shared by the reference tests (`llamacpp_logits`, `numpy_reference`): a reference log-prob
//! entry and the Pearson correlation they are compared by.

/// One `(token id, log-probability)` of a reference fixture.
#[derive(serde::Deserialize)]
pub struct Entry {
    pub id: u32,
    pub logprob: f64,
}

/// Pearson correlation of two equally long samples.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}
