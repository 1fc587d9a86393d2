//! Quantized matrix products `y = x · Wᵀ` for Q4_1 and Q8_0 weights on x86-64 CPUs with AVX2,
//! with the same arithmetic as candle's (and ggml's) reference kernels.
//!
//! The activations `x` are quantized per block of 32 exactly as candle does (candle's own
//! `from_float`): Q8_1 (`x ≈ d_x·q_x`, `s_x = d_x·Σq_x`) against Q4_1 weights, Q8_0 against Q8_0
//! weights. Per block the integer dot product `Σ q_w·q_x` is exact; the block contributes
//! ```text
//! Q4_1:  d_w·d_x·Σ q_w q_x + m_w·s_x        (w = d_w·q_w + m_w, q_w ∈ 0..16)
//! Q8_0:  d_w·d_x·Σ q_w q_x                  (w = d_w·q_w)
//! ```
//! so the result differs from candle's generic kernel only by the order of the f32 additions.
//! candle 0.9 compiles its SIMD kernels only when the crate itself is built with AVX enabled,
//! which a default build is not; here the CPU is asked at run time instead.
//!
//! Weights stay in the file's block layout (f16 scales beside the quants, converted with F16C as
//! the blocks are read), so a quantized model holds its matrices in exactly the bytes of the
//! file; the output rows are shared out over rayon's pool in chunks.

#![allow(unsafe_code)] // SIMD intrinsics behind a run-time CPU feature check

use candle_core::quantized::k_quants::{BlockQ8_0, BlockQ8_1, GgmlType};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use half::f16;
use rayon::prelude::*;

use super::amx::{self, AmxBf16};

/// Elements per quantization block (Q4_1, Q8_0, Q8_1).
const QK: usize = 32;
/// Output rows per parallel work item.
const ROWS_PER_TASK: usize = 64;

/// A weight matrix `[n, k]` used as `x · Wᵀ`: candle's `QMatMul`, or (Q4_1 / Q8_0 on an AVX2
/// CPU) the run-time-dispatched SIMD kernel of this module.
#[derive(Debug)]
pub(crate) enum Linear {
    Candle(QMatMul),
    Fast(FastQ),
    /// f32 weights for large inputs, and the same weights still quantized for inputs of at most
    /// [`DENSE_SMALL_ROWS`] rows, multiplied by the f32 activations (no activation rounding).
    Dense {
        w: Tensor,
        small: FastQ,
    },
    /// bf16 weights on AMX tiles ([`super::amx`]) for inputs of more than [`DENSE_SMALL_ROWS`]
    /// rows; smaller inputs use the stored quantized weights against the f32 activations where
    /// that kernel applies (as [`Linear::Dense`] does), the tiles otherwise.
    Amx {
        w: AmxBf16,
        small: Option<FastQ>,
    },
}

/// Inputs with at most this many rows use the quantized copy of f32-mode weights (decode and
/// small batches are bound by reading weights, 4 bytes each dense against 0.6–1.1 quantized).
const DENSE_SMALL_ROWS: usize = 8;

impl Linear {
    /// Keeps `q` quantized: the SIMD kernel when it applies, candle's `QMatMul` otherwise.
    pub(crate) fn quantized(q: QTensor) -> candle_core::Result<Self> {
        match FastQ::new(&q)? {
            Some(f) => Ok(Self::Fast(f)),
            None => Ok(Self::Candle(QMatMul::from_qtensor(q)?)),
        }
    }

    /// Dequantizes `q` to f32 (for the products of many rows) and keeps `q` as well when the
    /// f32-activation kernel applies. `dense` is `q` dequantized, if the caller has it already.
    pub(crate) fn dense(
        q: &QTensor,
        dense: Option<Tensor>,
        device: &candle_core::Device,
    ) -> candle_core::Result<Self> {
        let w = match dense {
            Some(w) => w,
            None => q.dequantize(device)?,
        };
        match FastQ::new(q)? {
            Some(small) => Ok(Self::Dense { w, small }),
            None => Ok(Self::Candle(QMatMul::Tensor(w))),
        }
    }

    /// Dequantizes `q` and rounds it to bf16 in AMX tiles, keeping `q` for small inputs as
    /// [`Linear::dense`] does; the f32 mode's [`Linear::dense`] where AMX is unavailable or the
    /// shape does not tile (`n`, `k` multiples of 32).
    pub(crate) fn bf16(q: &QTensor, device: &candle_core::Device) -> candle_core::Result<Self> {
        let w = q.dequantize(device)?;
        let amx = match w.dims() {
            &[n, k] if device.is_cpu() && amx::available() => {
                AmxBf16::new(&w.flatten_all()?.to_vec1::<f32>()?, n, k)
            }
            _ => None,
        };
        match amx {
            Some(w) => Ok(Self::Amx {
                w,
                small: FastQ::new(q)?,
            }),
            None => Self::dense(q, Some(w), device),
        }
    }

    /// Whether this matrix multiplies on AMX tiles.
    pub(crate) fn is_amx(&self) -> bool {
        matches!(self, Self::Amx { .. })
    }

    /// `x · Wᵀ` for `x` `[..., k]`, giving `[..., n]`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Candle(m) => m.forward(x),
            Self::Fast(f) => f.forward(x),
            Self::Dense { w, small } => {
                if rows(x) <= DENSE_SMALL_ROWS {
                    small.forward_f32(x)
                } else {
                    QMatMul::Tensor(w.clone()).forward(x)
                }
            }
            Self::Amx { w, small } => match small {
                Some(small) if rows(x) <= DENSE_SMALL_ROWS => small.forward_f32(x),
                _ => w.forward(x),
            },
        }
    }
}

/// Rows of `x` `[..., k]`: its element count over the last dimension.
fn rows(x: &Tensor) -> usize {
    x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1)
}

impl Linear {
    /// Whether every output row depends on its input row alone, computed the same way whatever
    /// the number of rows (the quantized kernels: activations are quantized row by row). The
    /// f32 mode is not: it switches kernels at [`DENSE_SMALL_ROWS`] rows.
    pub(crate) fn row_independent(&self) -> bool {
        match self {
            Self::Fast(_) => true,
            Self::Candle(QMatMul::QTensor(_)) => true,
            Self::Candle(_) | Self::Dense { .. } | Self::Amx { .. } => false,
        }
    }

    /// Whether [`Linear::rows`] can gather dequantized weight rows (the SIMD kernel's layout).
    pub(crate) fn has_rows(&self) -> bool {
        matches!(self, Self::Fast(_))
    }

    /// Weight rows `ids` dequantized to f32, row after row (`ids.len() · k` values), exactly as
    /// candle dequantizes them; `None` unless [`Linear::has_rows`]. Ids must be `< n`.
    pub(crate) fn rows(&self, ids: &[u32]) -> Option<Vec<f32>> {
        match self {
            Self::Fast(f) => Some(f.rows(ids)),
            _ => None,
        }
    }
}

impl From<QMatMul> for Linear {
    fn from(m: QMatMul) -> Self {
        Self::Candle(m)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4_1,
    Q8_0,
}

impl Kind {
    /// Bytes per block of 32 weights: Q4_1 `{d: f16, m: f16, qs: [u8; 16]}` (low nibbles are
    /// elements 0..16, high nibbles 16..32), Q8_0 `{d: f16, qs: [i8; 32]}`.
    const fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_1 => 20,
            Kind::Q8_0 => 34,
        }
    }
}

/// Q4_1 or Q8_0 weights `[n, k]` in the file's block layout.
#[derive(Debug)]
pub(crate) struct FastQ {
    kind: Kind,
    n: usize,
    k: usize,
    /// `n · k / 32` blocks of [`Kind::block_bytes`] bytes, row after row.
    blocks: Vec<u8>,
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl FastQ {
    /// `None` when the kernel does not apply (other dtype, not on the CPU, `k` not a multiple of
    /// 32, or no AVX2/FMA).
    fn new(q: &QTensor) -> candle_core::Result<Option<Self>> {
        let kind = match q.dtype() {
            GgmlDType::Q4_1 => Kind::Q4_1,
            GgmlDType::Q8_0 => Kind::Q8_0,
            _ => return Ok(None),
        };
        if !q.device().is_cpu() || !avx2() {
            return Ok(None);
        }
        let Ok((n, k)) = q.shape().dims2() else {
            return Ok(None);
        };
        if k % QK != 0 {
            return Ok(None);
        }
        let raw = q.data()?;
        if raw.len() != n * (k / QK) * kind.block_bytes() {
            return Ok(None);
        }
        Ok(Some(Self {
            kind,
            n,
            k,
            blocks: raw.into_owned(),
        }))
    }

    /// Rows `ids` as f32: `d_w·q_w + m_w` (Q4_1) or `q_w·d_w` (Q8_0) per element, the same
    /// expressions (and so the same roundings) as candle's `to_float`.
    fn rows(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * self.k);
        for &id in ids {
            for blk in self.row(id as usize).chunks_exact(self.kind.block_bytes()) {
                let d = f16_at(blk, 0);
                match self.kind {
                    Kind::Q4_1 => {
                        let (m, qs) = (f16_at(blk, 2), &blk[4..20]);
                        out.extend(qs.iter().map(|&q| f32::from(q & 0x0F) * d + m));
                        out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
                    }
                    Kind::Q8_0 => out.extend(blk[2..34].iter().map(|&q| f32::from(q as i8) * d)),
                }
            }
        }
        out
    }

    /// The blocks of weight row `j`.
    fn row(&self, j: usize) -> &[u8] {
        let len = self.k / QK * self.kind.block_bytes();
        &self.blocks[j * len..(j + 1) * len]
    }

    /// `x · Wᵀ` with `x` quantized per block as candle does (Q8_1 or Q8_0).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (xs, rows) = self.input(x)?;
        let acts = Activations::quantize(self.kind, &xs, rows, self.k);
        self.run(x, rows, |j, i| self.dot(j, &acts, i))
    }

    /// `x · Wᵀ` with f32 activations: the exact dequantized weights `d_w·q_w (+ m_w)` against
    /// `x`, up to f32 summation order (per block `d_w·Σ q_w x + m_w·Σ x`).
    fn forward_f32(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (xs, rows) = self.input(x)?;
        let sums: Vec<f32> = xs.chunks_exact(QK).map(|b| b.iter().sum()).collect();
        self.run(x, rows, |j, i| self.dot_f32(j, &xs, &sums, i))
    }

    /// `x` `[..., k]` as row-major f32 values, and its number of rows.
    fn input(&self, x: &Tensor) -> candle_core::Result<(Vec<f32>, usize)> {
        let k = x.dims().last().copied().unwrap_or(0);
        if k != self.k {
            candle_core::bail!("qmatmul: input has {k} columns, the weight {}", self.k);
        }
        let xs: Vec<f32> = x
            .to_dtype(DType::F32)?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        Ok((xs, x.elem_count() / k.max(1)))
    }

    /// `[..., n]` with entry `(i, j)` = `dot(j, i)` for input row `i`, weight row `j`.
    fn run(
        &self,
        x: &Tensor,
        rows: usize,
        dot: impl Fn(usize, usize) -> f32 + Sync,
    ) -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let n = self.n;
        *dims.last_mut().expect("k checked") = n;
        if rows == 0 {
            return Tensor::zeros(dims, DType::F32, x.device());
        }
        // Output transposed, [n, rows], so that each task owns whole weight rows.
        let mut out_t = vec![0f32; n * rows];
        out_t
            .par_chunks_mut(ROWS_PER_TASK * rows)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (jj, outs) in chunk.chunks_mut(rows).enumerate() {
                    let j = c * ROWS_PER_TASK + jj;
                    for (i, o) in outs.iter_mut().enumerate() {
                        *o = dot(j, i);
                    }
                }
            });
        let out = if rows == 1 {
            out_t
        } else {
            let mut out = vec![0f32; n * rows];
            for j in 0..n {
                for i in 0..rows {
                    out[i * n + j] = out_t[j * rows + i];
                }
            }
            out
        };
        Tensor::from_vec(out, dims, x.device())
    }

    /// Weight row `j` against activation row `i`.
    fn dot(&self, j: usize, a: &Activations, i: usize) -> f32 {
        let nb = self.k / QK;
        let x = i * nb..(i + 1) * nb;
        let xq = &a.q[i * self.k..(i + 1) * self.k];
        let w = self.row(j);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `FastQ::new` only builds this value after checking AVX2, FMA and F16C at run
        // time; `w` holds `nb` blocks (checked at load) and the activation slices `nb` scales
        // and `32·nb` quants (`Activations::quantize`), which is all the kernels read.
        unsafe {
            match self.kind {
                Kind::Q4_1 => x86::dot_q4_1(w, &a.d[x.clone()], &a.s[x], xq),
                Kind::Q8_0 => x86::dot_q8_0(w, &a.d[x], xq),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (w, x, xq);
            unreachable!("FastQ is only built on x86-64")
        }
    }

    /// Weight row `j` against f32 activation row `i` (`sums`: per-block sums of `xs`).
    fn dot_f32(&self, j: usize, xs: &[f32], sums: &[f32], i: usize) -> f32 {
        let nb = self.k / QK;
        let x = &xs[i * self.k..(i + 1) * self.k];
        let w = self.row(j);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot`; `x` has `32·nb` values and `sums` `nb` per row.
        unsafe {
            match self.kind {
                Kind::Q4_1 => x86::dot_q4_1_f32(w, x, &sums[i * nb..(i + 1) * nb]),
                Kind::Q8_0 => x86::dot_q8_0_f32(w, x),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (w, x, sums);
            unreachable!("FastQ is only built on x86-64")
        }
    }
}

/// Activations `[rows, k]` quantized per block the way candle does it.
struct Activations {
    /// Block scales `d_x`.
    d: Vec<f32>,
    /// Q8_1 only: `s_x = d_x · Σ q_x` (as candle rounds it, through f16).
    s: Vec<f32>,
    /// Quants, `[rows, k]`.
    q: Vec<i8>,
}

impl Activations {
    fn quantize(kind: Kind, xs: &[f32], rows: usize, k: usize) -> Self {
        let nb = k / QK;
        let mut d = Vec::with_capacity(rows * nb);
        let mut s = Vec::new();
        let mut q = Vec::with_capacity(rows * k);
        match kind {
            Kind::Q4_1 => {
                let mut blocks = vec![BlockQ8_1::zeros(); rows * nb];
                for (x, b) in xs.chunks_exact(k).zip(blocks.chunks_exact_mut(nb)) {
                    BlockQ8_1::from_float(x, b);
                }
                // SAFETY: `BlockQ8_1` is `repr(C)` { d: f16, s: f16, qs: [i8; 32] }, 36 bytes
                // without padding (asserted by candle), so its storage is plain bytes.
                let bytes = unsafe {
                    std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), blocks.len() * 36)
                };
                s.reserve(rows * nb);
                for blk in bytes.chunks_exact(36) {
                    d.push(f16_at(blk, 0));
                    s.push(f16_at(blk, 2));
                    q.extend(blk[4..36].iter().map(|&b| b as i8));
                }
            }
            Kind::Q8_0 => {
                let mut blocks = vec![BlockQ8_0::zeros(); rows * nb];
                for (x, b) in xs.chunks_exact(k).zip(blocks.chunks_exact_mut(nb)) {
                    BlockQ8_0::from_float(x, b);
                }
                // SAFETY: `BlockQ8_0` is `repr(C)` { d: f16, qs: [i8; 32] }, 34 bytes without
                // padding (asserted by candle).
                let bytes = unsafe {
                    std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), blocks.len() * 34)
                };
                for blk in bytes.chunks_exact(34) {
                    d.push(f16_at(blk, 0));
                    q.extend(blk[2..34].iter().map(|&b| b as i8));
                }
            }
        }
        Self { d, s, q }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Bytes ahead of the block being read that are requested into L1. A decode step streams
    /// every weight once from beyond L2; the hardware prefetcher alone left one core at about
    /// 2.2 GB/s on the development machine, and asking 2 KiB ahead (about six Q4_1 rows of
    /// 576) brought it to about 5.8 GB/s, close to the speed of L2-resident weights.
    const PREFETCH: usize = 2048;

    /// Requests the cache line `PREFETCH` bytes after `p` (a hint: never faults, even past
    /// the end of the weights).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH).cast());
    }

    /// The f16 at `p` (unaligned) as f32; exact.
    #[inline]
    #[target_feature(enable = "f16c")]
    unsafe fn f16(p: *const u8) -> f32 {
        let bits = p.cast::<u16>().read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// Per 32-bit lane, the sum of four products of unsigned bytes `u` and signed bytes `s`:
    /// `maddubs` to i16 pairs, then `madd` with ones. maddubs saturates at ±32,767, which the
    /// operands here never reach (Q4_1: 2·15·127 = 3,810 per pair; Q8_0 after the sign trick:
    /// 2·127·127 = 32,258), so the sums are exact.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn idot_avx2(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    /// `Σ_b d_w[b]·d_x[b]·Σ q_w q_x + m_w[b]·s_x[b]` over Q4_1 × Q8_1 blocks.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `w` holds `nb` Q4_1 blocks (20 bytes
    /// each) and `xq` `32·nb` bytes for `nb = xd.len()`, and `xs` has `nb` entries.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4_1(w: &[u8], xd: &[f32], xs: &[f32], xq: &[i8]) -> f32 {
        let nb = xd.len();
        debug_assert!(w.len() == 20 * nb && xq.len() == 32 * nb && xs.len() == nb);
        let low = _mm256_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = 0f32;
        for b in 0..nb {
            let blk = w.as_ptr().add(20 * b);
            prefetch(blk);
            // d_w and m_w, adjacent f16s, converted together.
            let bits = blk.cast::<i32>().read_unaligned();
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
            let (dw, mw) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
            let t = _mm_loadu_si128(blk.add(4).cast());
            let wv = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), low);
            let x = _mm256_loadu_si256(xq.as_ptr().add(32 * b).cast());
            let p = idot_avx2(wv, x);
            let scale = _mm256_set1_ps(dw * *xd.get_unchecked(b));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
            acc_m += mw * *xs.get_unchecked(b);
        }
        hsum(acc) + acc_m
    }

    /// `Σ_b d_w[b]·d_x[b]·Σ q_w q_x` over Q8_0 × Q8_0 blocks.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `w` holds `nb` Q8_0 blocks (34 bytes
    /// each) and `xq` `32·nb` bytes for `nb = xd.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q8_0(w: &[u8], xd: &[f32], xq: &[i8]) -> f32 {
        let nb = xd.len();
        debug_assert!(w.len() == 34 * nb && xq.len() == 32 * nb);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = w.as_ptr().add(34 * b);
            prefetch(blk);
            let wv = _mm256_loadu_si256(blk.add(2).cast());
            let x = _mm256_loadu_si256(xq.as_ptr().add(32 * b).cast());
            // |w| · (x · sign w): unsigned × signed bytes, products unchanged.
            let p = idot_avx2(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(x, wv));
            let scale = _mm256_set1_ps(f16(blk) * *xd.get_unchecked(b));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc);
        }
        hsum(acc)
    }

    /// `Σ_b d_w[b]·Σ q_w x + m_w[b]·sx[b]` over Q4_1 blocks against f32 `x`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `w` holds `nb` Q4_1 blocks and `x` `32·nb` values
    /// for `nb = sx.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4_1_f32(w: &[u8], x: &[f32], sx: &[f32]) -> f32 {
        let nb = sx.len();
        debug_assert!(w.len() == 20 * nb && x.len() == 32 * nb);
        let low = _mm256_set1_epi32(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = 0f32;
        for b in 0..nb {
            let blk = w.as_ptr().add(20 * b);
            prefetch(blk);
            let q = blk.add(4);
            let a = _mm256_cvtepu8_epi32(_mm_loadl_epi64(q.cast()));
            let c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(q.add(8).cast()));
            let xp = x.as_ptr().add(32 * b);
            let e0 = _mm256_cvtepi32_ps(_mm256_and_si256(a, low));
            let e1 = _mm256_cvtepi32_ps(_mm256_and_si256(c, low));
            let e2 = _mm256_cvtepi32_ps(_mm256_srli_epi32(a, 4));
            let e3 = _mm256_cvtepi32_ps(_mm256_srli_epi32(c, 4));
            let s01 = _mm256_fmadd_ps(
                e1,
                _mm256_loadu_ps(xp.add(8)),
                _mm256_mul_ps(e0, _mm256_loadu_ps(xp)),
            );
            let s23 = _mm256_fmadd_ps(
                e3,
                _mm256_loadu_ps(xp.add(24)),
                _mm256_mul_ps(e2, _mm256_loadu_ps(xp.add(16))),
            );
            acc = _mm256_fmadd_ps(_mm256_add_ps(s01, s23), _mm256_set1_ps(f16(blk)), acc);
            acc_m += f16(blk.add(2)) * *sx.get_unchecked(b);
        }
        hsum(acc) + acc_m
    }

    /// `Σ_b d_w[b]·Σ q_w x` over Q8_0 blocks against f32 `x`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `w` holds `nb` Q8_0 blocks and `x` `32·nb` values
    /// for `nb = x.len() / 32`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q8_0_f32(w: &[u8], x: &[f32]) -> f32 {
        let nb = x.len() / 32;
        debug_assert!(w.len() == 34 * nb && x.len() == 32 * nb);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = w.as_ptr().add(34 * b);
            prefetch(blk);
            let q = blk.add(2);
            let xp = x.as_ptr().add(32 * b);
            let e = |o: usize| {
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(q.add(o).cast())))
            };
            let s01 = _mm256_fmadd_ps(
                e(8),
                _mm256_loadu_ps(xp.add(8)),
                _mm256_mul_ps(e(0), _mm256_loadu_ps(xp)),
            );
            let s23 = _mm256_fmadd_ps(
                e(24),
                _mm256_loadu_ps(xp.add(24)),
                _mm256_mul_ps(e(16), _mm256_loadu_ps(xp.add(16))),
            );
            acc = _mm256_fmadd_ps(_mm256_add_ps(s01, s23), _mm256_set1_ps(f16(blk)), acc);
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The SIMD kernel gives candle's quantized product up to f32 summation order, for one row
    /// (decode) and several (prefill), for both weight types.
    #[test]
    fn fast_kernel_matches_candle() {
        if !avx2() {
            return;
        }
        let dev = Device::Cpu;
        let (n, k) = (200, 96 * 4);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1013) as f32 / 506.0 - 1.0) * (1.0 + (i % 7) as f32))
            .collect();
        let w = Tensor::from_vec(w, (n, k), &dev).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let fast = Linear::quantized(QTensor::quantize(&w, dtype).unwrap()).unwrap();
            assert!(matches!(fast, Linear::Fast(_)), "{dtype:?}");
            let reference = QMatMul::from_qtensor(q).unwrap();
            for rows in [1usize, 3] {
                let x: Vec<f32> = (0..rows * k)
                    .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0) * 3.0)
                    .collect();
                let x = Tensor::from_vec(x, (1, rows, k), &dev).unwrap();
                let a: Vec<f32> = flat(fast.forward(&x));
                let b: Vec<f32> = flat(reference.forward(&x));
                close(&a, &b, rows * n, &format!("{dtype:?} rows {rows}"));
            }
        }
    }

    fn flat(t: candle_core::Result<Tensor>) -> Vec<f32> {
        t.unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: &[f32], b: &[f32], len: usize, what: &str) {
        assert_eq!(a.len(), len, "{what}");
        assert_eq!(b.len(), len, "{what}");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}");
        for (i, (p, r)) in a.iter().zip(b).enumerate() {
            assert!((p - r).abs() <= 1e-5 * scale, "{what} at {i}: {p} vs {r}");
        }
    }

    /// f32-mode weights: few rows go through the quantized copy with f32 activations, many
    /// through the dequantized matrix, and both equal `x · dequant(W)ᵀ` up to rounding.
    #[test]
    fn dense_small_rows_equal_the_dequantized_product() {
        if !avx2() {
            return;
        }
        let dev = Device::Cpu;
        let (n, k) = (130, 64 * 3);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 6151 % 1009) as f32 / 504.0 - 1.0) * (1.0 + (i % 5) as f32))
            .collect();
        let w = Tensor::from_vec(w, (n, k), &dev).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let deq = q.dequantize(&dev).unwrap();
            let lin = Linear::dense(&q, None, &dev).unwrap();
            assert!(matches!(lin, Linear::Dense { .. }), "{dtype:?}");
            for rows in [1usize, 5, DENSE_SMALL_ROWS + 3] {
                let x: Vec<f32> = (0..rows * k)
                    .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0) * 3.0)
                    .collect();
                let x = Tensor::from_vec(x, (rows, k), &dev).unwrap();
                let a: Vec<f32> = flat(lin.forward(&x));
                let b: Vec<f32> = flat(x.matmul(&deq.t().unwrap()));
                close(&a, &b, rows * n, &format!("{dtype:?} f32 rows {rows}"));
            }
        }
    }
}
