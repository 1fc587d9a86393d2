//! Fused masked attention on the CPU: `softmax(q·kᵀ + M) · v` one query row at a time.
//!
//! For query row `q` (already scaled) against keys `k_j` and values `v_j`, `j < T`, with the
//! additive mask row `M` (0 where the query sees key `j`, −∞ where it does not):
//! ```text
//! s_j = ⟨q, k_j⟩ + M_j,   m = max_j s_j,   p_j = e^(s_j − m),   y = Σ_j p_j v_j / Σ_j p_j
//! ```
//! Masked keys are skipped outright (`p_j = 0`, neither dot product nor value read), so a
//! causal prefill does half the work of the dense product, and no `[rows, T]` score tensor is
//! materialised. Work is shared out over rayon by (sequence, kv head, block of query rows); each
//! row's result is computed the same way whatever the split. The keys are transposed per head
//! (`[hd, T]`) so that a row's scores are computed for eight keys at once, each summed in the
//! order of a 16-lane dot product (`scores_block`); `e^x` is [`super::act::exp`] (about 1 ulp);
//! max and sum reduce in 16 lanes. On x86-64 CPUs
//! with AVX2 the loops are compiled for it and chosen at run time.

use std::mem::MaybeUninit;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::act::exp;
use super::cpu_slice;
use crate::config::RopeStyle;

/// Query rows per parallel work item.
const ROWS: usize = 32;
/// Lanes of the dot products and of the max and sum reductions.
const LANES: usize = 16;

/// Grouped-query attention for `q` `[b, kvh, g·t, hd]` (the `g` query heads of each kv head
/// stacked, head-major), `k`, `v` `[b, kvh, T, hd]` and `mask` `[b, 1, 1, t, T]` (0 / −∞),
/// giving `[b, t, h·hd]` (`h = kvh·g`, query head `hi·g + gi` at columns of its index: the
/// layout the output projection reads, so no transpose follows). `None` when the inputs are not
/// f32 on the CPU (the caller then takes candle's path).
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    g: usize,
) -> candle_core::Result<Option<Tensor>> {
    let cpu_f32 = |x: &Tensor| x.device().is_cpu() && x.dtype() == DType::F32;
    if !(cpu_f32(q) && cpu_f32(k) && cpu_f32(v) && mask.map_or(true, cpu_f32)) {
        return Ok(None);
    }
    let (b, kvh, gt, hd) = q.dims4()?;
    let total = k.dim(2)?;
    if k.dims() != [b, kvh, total, hd] || v.dims() != [b, kvh, total, hd] || g == 0 || gt % g != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not match",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let t = gt / g;
    if let Some(m) = mask {
        if m.dims() != [b, 1, 1, t, total] {
            candle_core::bail!(
                "attention: mask {:?}, expected [{b}, 1, 1, {t}, {total}]",
                m.dims()
            );
        }
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let mask = mask.map(Tensor::contiguous).transpose()?;
    let len = b * kvh * gt * hd;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    {
        let (qg, ql) = q.storage_and_layout();
        let (kg, kl) = k.storage_and_layout();
        let (vg, vl) = v.storage_and_layout();
        let qs = cpu_slice(&qg, ql, len)?;
        let ks = cpu_slice(&kg, kl, b * kvh * total * hd)?;
        let vs = cpu_slice(&vg, vl, b * kvh * total * hd)?;
        // Keys transposed per head, [hd, tp] with tp = total rounded up to whole vectors of
        // keys (zero keys beyond `total`, never seen): the scores of a query row are then
        // computed for a block of keys at once (see `scores`).
        let tp = total.div_ceil(KEYS) * KEYS;
        let mut kt = vec![0f32; b * kvh * tp * hd];
        kt.par_chunks_mut(tp * hd)
            .zip(ks.par_chunks(total * hd))
            .for_each(|(dst, src)| {
                for (j, row) in src.chunks_exact(hd).enumerate() {
                    for (d, &x) in row.iter().enumerate() {
                        dst[d * tp + j] = x;
                    }
                }
            });
        let mg = mask.as_ref().map(Tensor::storage_and_layout);
        let ms = match &mg {
            Some((g, l)) => Some(cpu_slice(g, l, b * t * total)?),
            None => None,
        };
        let chunks = gt.div_ceil(ROWS);
        let h = kvh * g;
        let dst = OutPtr(out.as_mut_ptr());
        (0..b * kvh * chunks).into_par_iter().for_each(|w| {
            let (head, r0) = (w / chunks, (w % chunks) * ROWS);
            let (bi, hi) = (head / kvh, head % kvh);
            let job = Job {
                q: &qs[(head * gt + r0) * hd..],
                kt: &kt[head * tp * hd..(head + 1) * tp * hd],
                v: &vs[head * total * hd..(head + 1) * total * hd],
                mask: ms.map(|m| &m[bi * t * total..(bi + 1) * t * total]),
                hd,
                t,
                total,
                tp,
                r0,
            };
            let dst = &dst;
            let rows = ROWS.min(gt - r0);
            job.run(rows, |r| {
                // Stacked row r0 + r is query head hi·g + gi at position i.
                let (gi, i) = ((r0 + r) / t, (r0 + r) % t);
                let at = ((bi * t + i) * h + hi * g + gi) * hd;
                // SAFETY: `at + hd ≤ len`, and every (sequence, position, head) row is written
                // by exactly one work item, once.
                #[allow(unsafe_code)]
                unsafe {
                    std::slice::from_raw_parts_mut(dst.0.add(at).cast::<MaybeUninit<f32>>(), hd)
                }
            });
        });
        // SAFETY: the work items wrote every one of the `b · t · h` rows of `hd` values.
        #[allow(unsafe_code)]
        unsafe {
            out.set_len(len)
        };
    }
    Ok(Some(Tensor::from_vec(
        out,
        (b, t, kvh * g * hd),
        q.device(),
    )?))
}

/// `x` `[b, t, heads, hd]` (a projection's output) as `[b, heads, t, hd]`, rotated by RoPE when
/// `rope` gives the angles (`cos`, `sin` `[b, t, hd/2]` at each token's position) and multiplied
/// by `scale` when it is not 1, in one pass. The rotation of the pair `(x₁, x₂)` (elements
/// `2i, 2i+1` interleaved, `i, i + hd/2` NEOX) is candle's, operation for operation:
/// ```text
/// x₁' = x₁ cos θᵢ − x₂ sin θᵢ,   x₂' = x₁ sin θᵢ + x₂ cos θᵢ
/// ```
/// `None` when `x` is not f32 on the CPU.
pub(crate) fn heads_first(
    x: &Tensor,
    rope: Option<(&Tensor, &Tensor, RopeStyle)>,
    scale: f32,
) -> candle_core::Result<Option<Tensor>> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return Ok(None);
    }
    let (b, t, heads, hd) = x.dims4()?;
    let half = hd / 2;
    if let Some((cos, sin, _)) = rope {
        if cos.dims() != [b, t, half] || sin.dims() != [b, t, half] || hd % 2 != 0 {
            candle_core::bail!(
                "rope: angles {:?} for heads of {hd} at [{b}, {t}]",
                cos.dims()
            );
        }
    }
    let x = x.contiguous()?;
    let angles = match rope {
        Some((c, s, style)) => Some((c.contiguous()?, s.contiguous()?, style)),
        None => None,
    };
    let len = b * t * heads * hd;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    {
        let (xg, xl) = x.storage_and_layout();
        let xs = cpu_slice(&xg, xl, len)?;
        let guards = angles
            .as_ref()
            .map(|(c, s, style)| (c.storage_and_layout(), s.storage_and_layout(), *style));
        let tables = match &guards {
            Some(((cg, cl), (sg, sl), style)) => Some((
                cpu_slice(cg, cl, b * t * half)?,
                cpu_slice(sg, sl, b * t * half)?,
                *style,
            )),
            None => None,
        };
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(t * hd)
            .enumerate()
            .for_each(|(w, dst)| {
                let (bi, hh) = (w / heads, w % heads);
                for (ti, row) in dst.chunks_exact_mut(hd).enumerate() {
                    let src = &xs[((bi * t + ti) * heads + hh) * hd..][..hd];
                    match tables {
                        None => {
                            for (d, &v) in row.iter_mut().zip(src) {
                                d.write(if scale == 1.0 { v } else { v * scale });
                            }
                        }
                        Some((cos, sin, style)) => {
                            let at = (bi * t + ti) * half;
                            let (cos, sin) = (&cos[at..at + half], &sin[at..at + half]);
                            for i in 0..half {
                                let (i1, i2) = match style {
                                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                                    RopeStyle::Neox => (i, i + half),
                                };
                                let (x1, x2) = (src[i1], src[i2]);
                                let y1 = x1 * cos[i] - x2 * sin[i];
                                let y2 = x1 * sin[i] + x2 * cos[i];
                                let (y1, y2) = if scale == 1.0 {
                                    (y1, y2)
                                } else {
                                    (y1 * scale, y2 * scale)
                                };
                                row[i1].write(y1);
                                row[i2].write(y2);
                            }
                        }
                    }
                }
            });
        // SAFETY: the chunks cover `len` exactly and every element of each row was written
        // (a rotation writes both members of each of the `hd/2` pairs).
        #[allow(unsafe_code)]
        unsafe {
            out.set_len(len)
        };
    }
    Ok(Some(Tensor::from_vec(out, (b, heads, t, hd), x.device())?))
}

/// The output buffer, written by several work items at disjoint rows.
struct OutPtr(*mut f32);
// SAFETY: the work items of `attend` write disjoint rows of the buffer, which outlives them.
#[allow(unsafe_code)]
unsafe impl Sync for OutPtr {}

/// One work item: query rows `r0..` of one (sequence, kv head).
struct Job<'a> {
    /// The item's query rows, `hd` values each, from row `r0` of the head.
    q: &'a [f32],
    /// The head's keys transposed and padded, `[hd, tp]`, and its values, `[total, hd]`.
    kt: &'a [f32],
    v: &'a [f32],
    /// The sequence's mask rows `[t, total]`, `None` when every key is seen.
    mask: Option<&'a [f32]>,
    hd: usize,
    t: usize,
    total: usize,
    tp: usize,
    r0: usize,
}

impl Job<'_> {
    /// Computes `rows` query rows, writing row `r` into `out(r)` (`hd` values).
    fn run<'o>(&self, rows: usize, out: impl FnMut(usize) -> &'o mut [MaybeUninit<f32>]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            #[allow(unsafe_code)]
            unsafe {
                return self.run_avx2(rows, out);
            }
        }
        self.run_portable(rows, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(unsafe_code)]
    unsafe fn run_avx2<'o>(
        &self,
        rows: usize,
        out: impl FnMut(usize) -> &'o mut [MaybeUninit<f32>],
    ) {
        self.run_rows(rows, out, true);
    }

    fn run_portable<'o>(&self, rows: usize, out: impl FnMut(usize) -> &'o mut [MaybeUninit<f32>]) {
        self.run_rows(rows, out, false);
    }

    /// The rows; `avx2`: the CPU has AVX2 (the scores then use [`scores_block_avx2`]).
    #[inline(always)]
    fn run_rows<'o>(
        &self,
        rows: usize,
        mut out: impl FnMut(usize) -> &'o mut [MaybeUninit<f32>],
        avx2: bool,
    ) {
        let (hd, total) = (self.hd, self.total);
        let mut p = vec![0f32; total];
        let mut y = vec![0f32; hd];
        for r in 0..rows {
            let dst = out(r);
            let q = &self.q[r * hd..(r + 1) * hd];
            // Row `r0 + r` of the stacked heads is query position (r0 + r) mod t.
            let mask = self
                .mask
                .map(|m| &m[((self.r0 + r) % self.t) * total..][..total]);
            // Keys outside first..=last are all masked (causal rows end early).
            let (first, last) = match mask {
                None => (0, total - 1),
                Some(m) => {
                    let seen = |j: &usize| m[*j] != f32::NEG_INFINITY;
                    match ((0..total).find(seen), (0..total).rev().find(seen)) {
                        (Some(f), Some(l)) => (f, l),
                        _ => (0, 0), // no key seen: the model never asks (a query sees itself)
                    }
                }
            };
            let keys = first..last + 1;
            // s_j = ⟨q, k_j⟩ for whole vectors of keys from `first` (padding keys read zeros).
            let j0 = first / KEYS * KEYS;
            let jn = (last + 1).div_ceil(KEYS) * KEYS;
            for jb in (j0..jn).step_by(KEYS) {
                let s = if avx2 {
                    scores_block_simd(q, self.kt, self.tp, jb)
                } else {
                    scores_block(q, self.kt, self.tp, jb)
                };
                let (lo, hi) = (jb.max(first), (jb + KEYS).min(last + 1));
                p[lo..hi].copy_from_slice(&s[lo - jb..hi - jb]);
            }
            let scores = &mut p[keys.clone()];
            if let Some(m) = mask {
                for (s, &m) in scores.iter_mut().zip(&m[keys.clone()]) {
                    *s = if m == f32::NEG_INFINITY { m } else { *s + m };
                }
            }
            let max = lanes(scores, f32::NEG_INFINITY, |a, b| if a > b { a } else { b });
            // e^(s − max), exactly 0 for masked keys: one vectorisable pass, then the sum.
            for e in scores.iter_mut() {
                let x = exp(*e - max);
                *e = if *e == f32::NEG_INFINITY { 0.0 } else { x };
            }
            let sum = lanes(scores, 0.0, |a, b| a + b);
            y.iter_mut().for_each(|v| *v = 0.0);
            weighted_sum(
                &p[keys.clone()],
                &self.v[first * hd..(last + 1) * hd],
                &mut y,
            );
            let inv = 1.0 / sum;
            for (d, &yv) in dst.iter_mut().zip(&y) {
                d.write(yv * inv);
            }
        }
    }
}

/// `y += Σ_j p_j v_j` for rows `v_j` of `y.len()` values, skipping zero weights; `y` is
/// accumulated in blocks of 64 values held in registers across all rows.
#[inline(always)]
fn weighted_sum(p: &[f32], v: &[f32], y: &mut [f32]) {
    const BLOCK: usize = 64;
    let hd = y.len();
    let mut c = 0;
    while c + BLOCK <= hd {
        let mut acc = [0f32; BLOCK];
        for (j, &e) in p.iter().enumerate() {
            if e != 0.0 {
                let row = &v[j * hd + c..j * hd + c + BLOCK];
                for l in 0..BLOCK {
                    acc[l] += e * row[l];
                }
            }
        }
        for (yv, a) in y[c..c + BLOCK].iter_mut().zip(acc) {
            *yv += a;
        }
        c += BLOCK;
    }
    if c < hd {
        for (j, &e) in p.iter().enumerate() {
            if e != 0.0 {
                for (yv, &vv) in y[c..].iter_mut().zip(&v[j * hd + c..(j + 1) * hd]) {
                    *yv += e * vv;
                }
            }
        }
    }
}

/// Keys per score block (one vector of f32 lanes).
const KEYS: usize = 8;

/// `⟨q, k_j⟩` for the [`KEYS`] keys `jb..jb + KEYS` of the transposed keys `kt` (`[hd, tp]`).
///
/// Each key's sum is formed exactly as a 16-lane dot product would: lane `l` accumulates
/// `q_d k_jd` for `d ≡ l (mod 16)` in increasing `d`, then the lanes are added pairwise
/// (`l + 8`, `+ 4`, `+ 2`, `+ 1`). The 16 accumulators hold a vector of keys each and stay in
/// registers, so the products run along the keys without any horizontal reduction.
#[inline(always)]
fn scores_block(q: &[f32], kt: &[f32], tp: usize, jb: usize) -> [f32; KEYS] {
    let hd = q.len();
    let whole = hd / LANES * LANES;
    // Lanes 0..8 and 8..16 are independent sums: one pass each, so that eight accumulators
    // (one vector of keys each) and the operands fit the sixteen AVX2 registers.
    let mut half = [[[0f32; KEYS]; 8]; 2];
    for (hh, acc) in half.iter_mut().enumerate() {
        /// Lane `8·hh + l` of the chunk at `c`, written out per lane so that every
        /// accumulator stays a register.
        macro_rules! lane {
            ($c:expr, $($l:literal)*) => {$({
                let d = $c + 8 * hh + $l;
                let k: &[f32; KEYS] =
                    kt[d * tp + jb..d * tp + jb + KEYS].try_into().expect("in range");
                let qd = q[d];
                for j in 0..KEYS {
                    acc[$l][j] += qd * k[j];
                }
            })*};
        }
        for c in (0..whole).step_by(LANES) {
            lane!(c, 0 1 2 3 4 5 6 7);
        }
    }
    // The last hd mod 16 dimensions go to lanes 0.. after the whole chunks, as in a dot product.
    for l in 0..hd - whole {
        let d = whole + l;
        let (qd, k) = (q[d], &kt[d * tp + jb..d * tp + jb + KEYS]);
        let a = &mut half[l / 8][l % 8];
        for j in 0..KEYS {
            a[j] += qd * k[j];
        }
    }
    // Pairwise: lane l + 8 into l, then + 4, + 2, + 1.
    let [mut acc, hi] = half;
    for l in 0..8 {
        for j in 0..KEYS {
            acc[l][j] += hi[l][j];
        }
    }
    let mut w = 8;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            for j in 0..KEYS {
                acc[l][j] += acc[l + w][j];
            }
        }
    }
    acc[0]
}

/// [`scores_block`] with AVX2 intrinsics (the same additions and multiplications in the same
/// order, so the same bits); for callers that checked the CPU has AVX2.
#[inline(always)]
fn scores_block_simd(q: &[f32], kt: &[f32], tp: usize, jb: usize) -> [f32; KEYS] {
    #[cfg(target_arch = "x86_64")]
    {
        let hd = q.len();
        assert!(
            hd > 0 && jb + KEYS <= tp && kt.len() >= hd * tp,
            "score block out of range"
        );
        // SAFETY: only reached from `Job::run_avx2` (AVX2 present); the loads read
        // `kt[d·tp + jb .. d·tp + jb + 8]` for d < hd, inside `kt` by the assert above.
        #[allow(unsafe_code)]
        unsafe {
            scores_block_avx2(q, kt, tp, jb)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        scores_block(q, kt, tp, jb)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn scores_block_avx2(q: &[f32], kt: &[f32], tp: usize, jb: usize) -> [f32; KEYS] {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    let hd = q.len();
    let whole = hd / LANES * LANES;
    let base = kt.as_ptr().add(jb);
    let term = |d: usize| -> __m256 {
        _mm256_mul_ps(_mm256_set1_ps(q[d]), _mm256_loadu_ps(base.add(d * tp)))
    };
    let mut half = [[_mm256_setzero_ps(); 8]; 2];
    for (hh, acc) in half.iter_mut().enumerate() {
        let mut c = 0;
        while c < whole {
            for (l, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, term(c + 8 * hh + l));
            }
            c += LANES;
        }
    }
    for l in 0..hd - whole {
        let a = &mut half[l / 8][l % 8];
        *a = _mm256_add_ps(*a, term(whole + l));
    }
    let [mut acc, hi] = half;
    for l in 0..8 {
        acc[l] = _mm256_add_ps(acc[l], hi[l]);
    }
    let mut w = 8;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] = _mm256_add_ps(acc[l], acc[l + w]);
        }
    }
    let mut out = [0f32; KEYS];
    _mm256_storeu_ps(out.as_mut_ptr(), acc[0]);
    out
}

/// `x` folded by `f` in [`LANES`] lanes, then the lanes pairwise (a vectorisable reduction; `f`
/// is `+` or `max`).
#[inline(always)]
fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] = f(acc[l], v);
    }
    for c in chunks {
        for l in 0..LANES {
            acc[l] = f(acc[l], c[l]);
        }
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] = f(acc[l], acc[l + w]);
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    /// candle's dense path, as the model ran it before this kernel.
    fn dense(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, g: usize) -> Tensor {
        let (b, kvh, gt, _) = q.dims4().unwrap();
        let (t, total) = (gt / g, k.dim(2).unwrap());
        let scores = q.matmul(&k.t().unwrap()).unwrap();
        let scores = match mask {
            None => scores,
            Some(m) => scores
                .reshape((b, kvh, g, t, total))
                .unwrap()
                .broadcast_add(m)
                .unwrap()
                .reshape((b, kvh, g * t, total))
                .unwrap(),
        };
        let hd = q.dim(3).unwrap();
        candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&v.contiguous().unwrap())
            .unwrap()
            .reshape((b, kvh * g, t, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, kvh * g * hd))
            .unwrap()
    }

    #[test]
    fn score_blocks_agree_bit_for_bit_with_a_16_lane_dot_product() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for hd in [64, 256, 20, 7] {
            let tp = 24;
            let q: Vec<f32> = (0..hd).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let kt: Vec<f32> = (0..hd * tp).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for jb in [0, 8, 16] {
                let portable = scores_block(&q, &kt, tp, jb);
                // The dot product's order: lane l sums d ≡ l (mod 16) upwards, then pairwise.
                for (j, &got) in portable.iter().enumerate() {
                    let mut acc = [0f32; LANES];
                    for d in 0..hd {
                        acc[d % LANES] += q[d] * kt[d * tp + jb + j];
                    }
                    let mut w = LANES;
                    while w > 1 {
                        w /= 2;
                        for l in 0..w {
                            acc[l] += acc[l + w];
                        }
                    }
                    assert_eq!(got.to_bits(), acc[0].to_bits(), "hd {hd} key {}", jb + j);
                }
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") {
                    let simd = scores_block_simd(&q, &kt, tp, jb);
                    assert_eq!(
                        simd.map(f32::to_bits),
                        portable.map(f32::to_bits),
                        "hd {hd}"
                    );
                }
            }
        }
    }

    #[test]
    fn heads_first_equals_candles_transpose_rope_and_scale() {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (b, t, heads, hd) = (2, 7, 3, 16);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect() };
        let x = Tensor::from_vec(r(b * t * heads * hd), (b, t, heads, hd), &dev).unwrap();
        let cos = Tensor::from_vec(r(b * t * hd / 2), (b, t, hd / 2), &dev).unwrap();
        let sin = Tensor::from_vec(r(b * t * hd / 2), (b, t, hd / 2), &dev).unwrap();
        let flat = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let xt = x.transpose(1, 2).unwrap().contiguous().unwrap();
        for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
            let want = match style {
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&xt, &cos, &sin),
                RopeStyle::Neox => candle_nn::rotary_emb::rope(&xt, &cos, &sin),
            }
            .unwrap();
            for scale in [1.0f32, 0.125] {
                let ours = heads_first(&x, Some((&cos, &sin, style)), scale)
                    .unwrap()
                    .unwrap();
                let want = (&want * f64::from(scale)).unwrap();
                assert_eq!(ours.dims(), want.dims());
                assert_eq!(flat(ours), flat(want), "{style:?}, scale {scale}");
            }
        }
        let plain = heads_first(&x, None, 1.0).unwrap().unwrap();
        assert_eq!(flat(plain), flat(xt));
    }

    #[test]
    fn matches_candle_with_causal_padded_and_no_mask() {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // (b, kvh, g, t, cached, hd): prefill, prefill after a cache, decode, odd head size.
        for (b, kvh, g, t, cached, hd) in [
            (2, 3, 3, 37, 0, 64),
            (1, 1, 4, 5, 9, 256),
            (3, 2, 2, 1, 20, 64),
            (2, 1, 1, 40, 3, 20),
        ] {
            let total = cached + t;
            let mut r =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
            let q = Tensor::from_vec(r(b * kvh * g * t * hd), (b, kvh, g * t, hd), &dev).unwrap();
            let k = Tensor::from_vec(r(b * kvh * total * hd), (b, kvh, total, hd), &dev).unwrap();
            let v = Tensor::from_vec(r(b * kvh * total * hd), (b, kvh, total, hd), &dev).unwrap();
            // Causal over the new keys; sequence 1 also pads its last 2 positions and cannot
            // see cached key 0.
            let mut m = vec![f32::NEG_INFINITY; b * t * total];
            for bi in 0..b {
                for i in 0..t {
                    for j in 0..total {
                        let causal = j < cached + i + 1;
                        let hidden = bi == 1 && (j == 0 || (j >= total - 2 && j != cached + i));
                        if causal && !hidden {
                            m[(bi * t + i) * total + j] = 0.0;
                        }
                    }
                }
            }
            let mask = Tensor::from_vec(m, (b, 1, 1, t, total), &dev).unwrap();
            for mask in [Some(&mask), None] {
                let ours = attend(&q, &k, &v, mask, g).unwrap().unwrap();
                let want = dense(&q, &k, &v, mask, g);
                let diff = (ours - &want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 2e-6, "b {b} g {g} t {t} hd {hd}: max |Δ| {diff}");
            }
        }
    }
}
