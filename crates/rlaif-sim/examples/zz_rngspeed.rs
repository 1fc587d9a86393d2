use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::time::Instant;
fn main() {
    let n = 10_000_000;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n { acc ^= rng.next_u64(); }
    println!("next_u64 {:.2} ns {acc}", t.elapsed().as_secs_f64() / n as f64 * 1e9);
    let mut buf = vec![0u8; 8 * 4096];
    let t = Instant::now();
    for _ in 0..n / 4096 { rng.fill_bytes(&mut buf); acc ^= buf[7] as u64; }
    println!("fill_bytes {:.2} ns/u64 {acc}", t.elapsed().as_secs_f64() / n as f64 * 1e9);
    let t = Instant::now();
    let mut s = 0.0;
    for _ in 0..n { let x: f64 = rng.sample(StandardNormal); s += x; }
    println!("normal {:.2} ns {s}", t.elapsed().as_secs_f64() / n as f64 * 1e9);
    let t = Instant::now();
    let mut s = 0.0;
    for i in 0..n { let x = (i as f64 * 1e-7 - 0.5).exp(); s += x; }
    println!("exp {:.2} ns {s}", t.elapsed().as_secs_f64() / n as f64 * 1e9);
    let t = Instant::now();
    let mut s = 0.0;
    for i in 0..n { let x = (i as f64 * 1e-7 - 0.5).exp().ln_1p(); s += x; }
    println!("exp+ln1p {:.2} ns {s}", t.elapsed().as_secs_f64() / n as f64 * 1e9);
}
