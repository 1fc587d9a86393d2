//! The Newton passes of [`super::fit`] for narrow inputs (`d ≤ MAX_D`), on a feature-major copy
//! of `X`.
//!
//! With few features a row is one or two SIMD vectors, so kernels that run along a row waste
//! lanes on the triangle's short rows and need a horizontal sum per row for `X̃δ`. Here every
//! pass runs *along the rows* instead: chunk c of [`CHUNK`] rows is stored as `dt` feature
//! columns (`dt` = d rounded up to a multiple of 4, the extra columns zero), each padded with
//! zero rows to a multiple of 8, so that
//!
//! * `X̃δ` is `δ_c + Σ_a δ_a x_{·a}`: one fused multiply-add per feature and SIMD vector of rows,
//!   four features per sweep;
//! * the Hessian `Σ_i s_i x̃_i x̃_iᵀ` is built from 4 × 4 register tiles of entries `(a, b)`,
//!   `a ≤ b`, each a dot product `Σ_i (s_i x_ia) x_ib` vectorised along i over the chunk's rows
//!   (columns start on 64-byte boundaries, so no load straddles two cache lines; blocking the
//!   rows for L1 measured no faster at d = 16). A diagonal tile computes its upper ten
//!   entries, and also the intercept column `Σ_i s_i x_ia` and the gradient `Σ_i r_i x_ia` of its
//!   four features (`Σ_i s_i` and `Σ_i r_i` are summed beforehand): per vector of rows,
//!   `dt(dt + 4)/2 + dt` multiply-adds and `dt²/4` products `s_i x_ia`, no lane wasted on a
//!   partial column vector.
//!
//! Sums run in SIMD lanes (row i of a chunk into lane i mod L, rows in order); each chunk's
//! entries are finished on the thread that ran the chunk (lanes added in a fixed pairwise tree),
//! and the chunks' sums are added in chunk order: the result depends on the input and the
//! instruction set's lane count L, never on the thread count. (Finishing per chunk lets a
//! [`Crew`] hand one thread's results to the other as 170 values at d = 16 instead of 170
//! vectors of lanes, which cost as much as the second thread saved.)

use std::cell::Cell;

use super::{lane_tree, Design, CHUNK};
use crate::aligned::Aligned;
use crate::crew::Crew;

/// Widest input that takes this path (`p = d + 1 ≤ 32`).
pub(super) const MAX_D: usize = 31;

/// Rows of a chunk are padded to a multiple of this (the widest SIMD vector of f64).
const ROW_PAD: usize = 8;

/// Extra values after each feature column of a chunk, so that columns are not a multiple of
/// 4 KiB apart: with `m̄ = 512` they would all map to the same L1 sets (and alias the rows
/// being read), and a pass over sixteen columns would miss the cache on every load.
const SKEW: usize = 8;

/// Distance between consecutive feature columns of a chunk of `mb` padded rows.
fn stride(mb: usize) -> usize {
    mb + SKEW
}

/// The design matrix in feature-major chunks.
#[derive(Debug)]
pub(super) struct FeatureMajor {
    /// Chunk c (rows `CHUNK·c ..`, `m_c` of them, padded to `m̄_c`) at offset
    /// `c · dt · stride(CHUNK)`: feature a's `m̄_c` values at `a · stride(m̄_c)` (rows: features,
    /// cols: the chunk's rows).
    xt: Vec<f64>,
    /// Index in `xt` of the first value, the first one on a 64-byte boundary: every SIMD load
    /// of a column then stays within one cache line.
    base: usize,
    d: usize,
    /// d rounded up to a multiple of 4 (the tile size).
    dt: usize,
    /// Rows padded: `n` rounded up to a multiple of [`ROW_PAD`].
    rows: usize,
    /// Row weights `s_i(1 − s_i)` and residuals `s_i − ℓ_i` of the current pass (0 on the
    /// padding).
    wt: Aligned,
    res: Aligned,
    /// Per chunk: its lane partials and its finished sums (upper Hessian, then gradient).
    parts: Vec<(Vec<f64>, Vec<f64>)>,
}

/// Values of all chunks of a design of `rows` padded rows and `dt` feature columns.
fn design_len(rows: usize, dt: usize) -> usize {
    chunks(rows, dt).map(|(_, _, mb)| dt * stride(mb)).sum()
}

/// `(offset in xt, first row, padded rows)` of each chunk.
fn chunks(rows: usize, dt: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..rows.div_ceil(CHUNK)).map(move |c| {
        let r0 = c * CHUNK;
        (c * dt * stride(CHUNK), r0, CHUNK.min(rows - r0))
    })
}

impl FeatureMajor {
    /// Copies `x` (`n × d`, row-major, `1 ≤ d ≤ MAX_D`) into feature-major chunks.
    pub(super) fn new(crew: &Crew, x: &[f64], d: usize) -> Self {
        let n = x.len() / d;
        let mut fm = Self::with_rows(n, d);
        let fill = |(x, xt): (&[f64], &mut [f64])| {
            let m = x.len() / d;
            zero_padding(xt, d, m);
            transpose(x, d, xt, stride(m.div_ceil(ROW_PAD) * ROW_PAD));
        };
        let mut jobs: Vec<(&[f64], &mut [f64])> = x
            .chunks(CHUNK * d)
            .zip(fm.chunks_mut().into_iter().map(|c| c.data))
            .collect();
        crew.for_each_mut(&mut jobs, |_, (x, xt)| fill((x, xt)));
        fm
    }

    /// Room for `n` rows of width `d`, to be written by [`FeatureMajor::columns_mut`] or
    /// [`FeatureMajor::new`]'s copy. The buffers of the previous fit on this thread are reused
    /// if there are any: a fresh 100 kB allocation costs more than the copy (the allocator
    /// returns freed memory to the system and takes page faults on the next use), and fresh row
    /// buffers start in this thread's cache even where a crew's helper works on them.
    pub(super) fn with_rows(n: usize, d: usize) -> Self {
        let Scratch {
            mut xt,
            mut wt,
            mut res,
            parts,
        } = SCRATCH.with(Cell::take);
        let dt = d.div_ceil(4) * 4;
        let rows = n.div_ceil(ROW_PAD) * ROW_PAD;
        wt.resize(rows);
        res.resize(rows);
        let len = design_len(rows, dt);
        xt.resize(len + 7, 0.0);
        let base = match xt.as_ptr().align_offset(64) {
            b @ 0..=7 => b,
            _ => 0,
        };
        Self {
            xt,
            base,
            d,
            dt,
            rows,
            wt,
            res,
            parts,
        }
    }

    /// Every chunk's `dt × m̄` block (feature a's values at `a · stride(m̄)`), in chunk order.
    fn chunks_mut(&mut self) -> Vec<ColumnChunk<'_>> {
        let (dt, rows) = (self.dt, self.rows);
        let len = design_len(rows, dt);
        self.xt[self.base..self.base + len]
            .chunks_mut(dt * stride(CHUNK))
            .zip(chunks(rows, dt))
            .map(|(data, (_, first_row, mb))| ColumnChunk {
                first_row,
                stride: stride(mb),
                data,
            })
            .collect()
    }

    /// Every chunk's columns for its producer to write the first `n` rows of features
    /// `0..d` (n as given to [`FeatureMajor::with_rows`]); the padding is zeroed here.
    pub(super) fn columns_mut(&mut self, n: usize) -> Vec<ColumnChunk<'_>> {
        let d = self.d;
        let mut chunks = self.chunks_mut();
        for c in &mut chunks {
            let m = n.saturating_sub(c.first_row).min(CHUNK);
            zero_padding(c.data, d, m);
        }
        chunks
    }
}

/// One chunk of a [`FeatureMajor`] design: feature a of its row `first_row + t` is
/// `data[a · stride + t]`.
#[derive(Debug)]
pub(crate) struct ColumnChunk<'a> {
    /// The design row of the chunk's first row.
    pub(crate) first_row: usize,
    /// Distance between the chunk's feature columns.
    pub(crate) stride: usize,
    /// The chunk's columns.
    pub(crate) data: &'a mut [f64],
}

/// What a [`FeatureMajor`] keeps for the next fit on the same thread.
#[derive(Debug, Default)]
struct Scratch {
    xt: Vec<f64>,
    wt: Aligned,
    res: Aligned,
    parts: Vec<(Vec<f64>, Vec<f64>)>,
}

thread_local! {
    /// The buffers of the last fit on this thread, kept for the next one.
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

/// Largest buffer kept for the next fit (values; 2 MiB): beyond it the copy costs far more than
/// the allocation.
const SCRATCH_MAX: usize = 1 << 18;

impl Drop for FeatureMajor {
    fn drop(&mut self) {
        let xt = std::mem::take(&mut self.xt);
        if xt.capacity() <= SCRATCH_MAX {
            SCRATCH.with(|c| {
                c.set(Scratch {
                    xt,
                    wt: std::mem::take(&mut self.wt),
                    res: std::mem::take(&mut self.res),
                    parts: std::mem::take(&mut self.parts),
                })
            });
        }
    }
}

impl FeatureMajor {
    /// The row width d.
    pub(super) fn d(&self) -> usize {
        self.d
    }

    /// The chunks (see `xt`), from `base`.
    fn data(&self) -> &[f64] {
        &self.xt[self.base..]
    }
}

/// Entries of a chunk's lane partials, in units of one lane vector: the Hessian `dt × dt`
/// (upper triangle of each tile written), then `Σ s x_a` (dt), `Σ r x_a` (dt), `Σ s`, `Σ r`.
fn partial_entries(dt: usize) -> usize {
    dt * dt + 2 * dt + 2
}

impl Design for FeatureMajor {
    fn padded_rows(&self) -> usize {
        self.rows
    }

    fn grad_hess(
        &mut self,
        crew: &Crew,
        y: &[f64],
        sig: &[f64],
        theta: &[f64],
        ridge: f64,
        grad: &mut [f64],
        upper: &mut [f64],
    ) {
        let (d, dt, p) = (self.d, self.dt, self.d + 1);
        let xt = &self.xt[self.base..];
        let n_chunks = self.rows.div_ceil(CHUNK);
        self.parts.resize_with(n_chunks, Default::default);
        // Per chunk: row weights and residuals, the tiles' lane partials, then the chunk's own
        // gradient and Hessian (each entry's lanes added in `lane_tree` order).
        let mut jobs: Vec<_> = self
            .parts
            .iter_mut()
            .zip(self.wt.chunks_mut(CHUNK).zip(self.res.chunks_mut(CHUNK)))
            .collect();
        crew.for_each_mut(&mut jobs, |c, ((lanes, sums), (wt, res))| {
            let (off, r0, mb) = (c * dt * stride(CHUNK), c * CHUNK, wt.len());
            let rows = r0..r0 + mb;
            pulp::Arch::new().dispatch(Weights {
                sig: &sig[rows.clone()],
                y: &y[rows],
                wt,
                res,
            });
            pulp::Arch::new().dispatch(GramChunk {
                xt: &xt[off..off + dt * stride(mb)],
                dt,
                wt,
                res,
                acc: lanes,
            });
            sums.clear();
            sums.resize(p * p + p, 0.0);
            pulp::Arch::new().dispatch(Finish {
                acc: lanes,
                d,
                dt,
                out: sums,
            });
        });
        // The chunks' sums in chunk order, then the ridge.
        for (c, (_, sums)) in self.parts[..n_chunks].iter().enumerate() {
            let (u, g) = sums.split_at(p * p);
            if c == 0 {
                upper.copy_from_slice(u);
                grad.copy_from_slice(g);
            } else {
                upper.iter_mut().zip(u).for_each(|(t, &s)| *t += s);
                grad.iter_mut().zip(g).for_each(|(t, &s)| *t += s);
            }
        }
        if n_chunks == 0 {
            upper.fill(0.0);
            grad.fill(0.0);
        }
        for a in 0..d {
            grad[a] += ridge * theta[a];
            upper[a * p + a] += ridge;
        }
    }

    fn margin_chunk(&self, c: usize, step: &[f64], dz: &mut [f64]) {
        let dt = self.dt;
        let off = c * dt * stride(CHUNK);
        let xt = &self.data()[off..off + dt * stride(dz.len())];
        pulp::Arch::new().dispatch(MarginChunk { xt, step, out: dz });
    }
}

/// One chunk's lane partials of the Hessian, intercept column and gradient (see
/// [`partial_entries`]) into `acc` (sized on first use): each tile runs over the chunk's rows
/// from zero.
struct GramChunk<'a> {
    /// `dt × m̄` feature-major.
    xt: &'a [f64],
    dt: usize,
    /// `m̄` row weights and residuals (0 on the padding).
    wt: &'a [f64],
    res: &'a [f64],
    acc: &'a mut Vec<f64>,
}

impl pulp::WithSimd for GramChunk<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Self::Output {
        let GramChunk {
            xt,
            dt,
            wt,
            res,
            acc,
        } = self;
        let lanes = S::F64_LANES;
        let mb = wt.len();
        let nv = mb / lanes;
        acc.resize(partial_entries(dt) * lanes, 0.0);
        let (acc, _) = S::as_mut_simd_f64s(acc);
        let zero = simd.splat_f64s(0.0);
        let (w, _) = S::as_simd_f64s(wt);
        let (r, _) = S::as_simd_f64s(res);
        let (w, r) = (&w[..nv], &r[..nv]);
        let (mut ss, mut rs) = (zero, zero);
        for (&wv, &rv) in w.iter().zip(r) {
            ss = simd.add_f64s(ss, wv);
            rs = simd.add_f64s(rs, rv);
        }
        let mut put = |e: usize, v: S::f64s| acc[e] = v;
        put(dt * dt + 2 * dt, ss);
        put(dt * dt + 2 * dt + 1, rs);
        let st = stride(mb);
        let col = |a: usize| &S::as_simd_f64s(&xt[a * st..a * st + mb]).0[..nv];
        for a0 in (0..dt).step_by(4) {
            let xa = [col(a0), col(a0 + 1), col(a0 + 2), col(a0 + 3)];
            let (h, cs, gs) = diag_tile(simd, xa, w, r);
            for q in 0..4 {
                for c in q..4 {
                    put((a0 + q) * dt + a0 + c, h[q][c]);
                }
                put(dt * dt + a0 + q, cs[q]);
                put(dt * dt + dt + a0 + q, gs[q]);
            }
            for b0 in (a0 + 4..dt).step_by(4) {
                let xb = [col(b0), col(b0 + 1), col(b0 + 2), col(b0 + 3)];
                let h = off_tile(simd, xa, xb, w);
                for q in 0..4 {
                    for c in 0..4 {
                        put((a0 + q) * dt + b0 + c, h[q][c]);
                    }
                }
            }
        }
    }
}

/// A 4 × 4 block of register accumulators.
type Block<V> = [[V; 4]; 4];

/// The diagonal tile of features `a0..a0 + 4` over one chunk's row vectors: the upper ten
/// entries of `Σ_i s_i x_ia x_ib`, and `Σ_i s_i x_ia`, `Σ_i r_i x_ia`.
#[inline(always)]
#[allow(clippy::type_complexity)]
fn diag_tile<S: pulp::Simd>(
    simd: S,
    xa: [&[S::f64s]; 4],
    w: &[S::f64s],
    r: &[S::f64s],
) -> (Block<S::f64s>, [S::f64s; 4], [S::f64s; 4]) {
    let zero = simd.splat_f64s(0.0);
    let mut h = [[zero; 4]; 4];
    let (mut cs, mut gs) = ([zero; 4], [zero; 4]);
    // Every operand cut to the same length, so that the loop's indexing needs no bounds checks
    // (a compare and branch per load competed with the multiply-adds for port 0).
    let n = w.len();
    let (r, xa) = (&r[..n], xa.map(|c| &c[..n]));
    for v in 0..n {
        let (s, rv) = (w[v], r[v]);
        let x = [xa[0][v], xa[1][v], xa[2][v], xa[3][v]];
        for q in 0..4 {
            let yq = simd.mul_f64s(s, x[q]);
            for c in q..4 {
                h[q][c] = simd.mul_add_f64s(yq, x[c], h[q][c]);
            }
            cs[q] = simd.add_f64s(cs[q], yq);
            gs[q] = simd.mul_add_f64s(rv, x[q], gs[q]);
        }
    }
    (h, cs, gs)
}

/// A tile right of the diagonal over one chunk's row vectors: `Σ_i (s_i x_ia) x_ib`.
#[inline(always)]
fn off_tile<S: pulp::Simd>(
    simd: S,
    xa: [&[S::f64s]; 4],
    xb: [&[S::f64s]; 4],
    w: &[S::f64s],
) -> Block<S::f64s> {
    let zero = simd.splat_f64s(0.0);
    let mut h = [[zero; 4]; 4];
    let n = w.len();
    let (xa, xb) = (xa.map(|c| &c[..n]), xb.map(|c| &c[..n]));
    for v in 0..n {
        let s = w[v];
        let y = [
            simd.mul_f64s(s, xa[0][v]),
            simd.mul_f64s(s, xa[1][v]),
            simd.mul_f64s(s, xa[2][v]),
            simd.mul_f64s(s, xa[3][v]),
        ];
        let x = [xb[0][v], xb[1][v], xb[2][v], xb[3][v]];
        for q in 0..4 {
            for c in 0..4 {
                h[q][c] = simd.mul_add_f64s(y[q], x[c], h[q][c]);
            }
        }
    }
    h
}

/// `wt_i = s_i(1 − s_i)`, `res_i = s_i − ℓ_i` from `sig` and the labels `y`.
struct Weights<'a> {
    sig: &'a [f64],
    y: &'a [f64],
    wt: &'a mut [f64],
    res: &'a mut [f64],
}

impl pulp::WithSimd for Weights<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Weights { sig, y, wt, res } = self;
        for (((w, r), &s), &l) in wt.iter_mut().zip(res.iter_mut()).zip(sig).zip(y) {
            *w = s * (1.0 - s);
            *r = s - l;
        }
    }
}

/// One chunk's upper Hessian (`p × p`) and gradient (p), in that order in `out`, from its lane
/// partials: each entry's lanes added in [`lane_tree`] order.
struct Finish<'a> {
    acc: &'a [f64],
    d: usize,
    dt: usize,
    out: &'a mut [f64],
}

impl pulp::WithSimd for Finish<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Finish { acc, d, dt, out } = self;
        let p = d + 1;
        // The lane count of the kernels that filled `acc` (the same dispatch): a constant here, so
        // that each entry's tree is unrolled.
        let lanes = S::F64_LANES;
        let entry = |e: usize| lane_tree(&acc[e * lanes..(e + 1) * lanes]);
        let (upper, grad) = out.split_at_mut(p * p);
        for a in 0..d {
            for b in a..d {
                upper[a * p + b] = entry(a * dt + b);
            }
            upper[a * p + d] = entry(dt * dt + a);
            grad[a] = entry(dt * dt + dt + a);
        }
        upper[d * p + d] = entry(dt * dt + 2 * dt);
        grad[d] = entry(dt * dt + 2 * dt + 1);
    }
}

/// Zeroes the padding of one feature-major chunk (`dt × m̄`, the first `m` rows of the first
/// `d` features are data).
fn zero_padding(xt: &mut [f64], d: usize, m: usize) {
    let st = stride(m.div_ceil(ROW_PAD) * ROW_PAD);
    for (a, col) in xt.chunks_exact_mut(st).enumerate() {
        let from = if a < d { m } else { 0 };
        col[from..].fill(0.0);
    }
}

/// The transpose of `src` (rows of width `w`) into rows of stride `ds`:
/// `dst[a·ds + i] = src[i·w + a]`.
pub(crate) fn transpose(src: &[f64], w: usize, dst: &mut [f64], ds: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v3) = pulp::x86::V3::try_new() {
        return pulp::Simd::vectorize(
            v3,
            TransposeAvx {
                v3,
                src,
                w,
                dst,
                ds,
            },
        );
    }
    pulp::Arch::new().dispatch(Transpose { src, w, dst, ds });
}

/// [`transpose`], eight rows at a time: each column's eight values are one contiguous store.
struct Transpose<'a> {
    src: &'a [f64],
    w: usize,
    dst: &'a mut [f64],
    ds: usize,
}

impl pulp::WithSimd for Transpose<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Transpose { src, w, dst, ds } = self;
        let mut blocks = src.chunks_exact(ROW_PAD * w);
        let mut i0 = 0;
        for xb in &mut blocks {
            for a in 0..w {
                let mut v = [0.0; ROW_PAD];
                for (l, vl) in v.iter_mut().enumerate() {
                    *vl = xb[l * w + a];
                }
                dst[a * ds + i0..a * ds + i0 + ROW_PAD].copy_from_slice(&v);
            }
            i0 += ROW_PAD;
        }
        for (l, xi) in blocks.remainder().chunks_exact(w).enumerate() {
            for (a, &v) in xi.iter().enumerate() {
                dst[a * ds + i0 + l] = v;
            }
        }
    }
}

/// `out_i = δ_c + Σ_a δ_a x_ia` (features in order) for the rows of one chunk.
struct MarginChunk<'a> {
    /// `dt × m̄` feature-major.
    xt: &'a [f64],
    /// `(δ_w, δ_c)`, length d + 1.
    step: &'a [f64],
    /// `m̄` margins.
    out: &'a mut [f64],
}

impl pulp::WithSimd for MarginChunk<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let MarginChunk { xt, step, out } = self;
        let lanes = S::F64_LANES;
        let mb = out.len();
        let nv = mb / lanes;
        let d = step.len() - 1;
        let (o, _) = S::as_mut_simd_f64s(out);
        let o = &mut o[..nv];
        let st = stride(mb);
        let c = simd.splat_f64s(step[d]);
        for v in o.iter_mut() {
            *v = c;
        }
        let col = |a: usize| &S::as_simd_f64s(&xt[a * st..a * st + mb]).0[..nv];
        // Four features per sweep over the rows (added in feature order).
        let d4 = d / 4 * 4;
        for a0 in (0..d4).step_by(4) {
            let xa = [col(a0), col(a0 + 1), col(a0 + 2), col(a0 + 3)];
            let dv = [
                simd.splat_f64s(step[a0]),
                simd.splat_f64s(step[a0 + 1]),
                simd.splat_f64s(step[a0 + 2]),
                simd.splat_f64s(step[a0 + 3]),
            ];
            let xa = xa.map(|c| &c[..nv]);
            for (v, ov) in o.iter_mut().enumerate() {
                let mut acc = *ov;
                for q in 0..4 {
                    acc = simd.mul_add_f64s(dv[q], xa[q][v], acc);
                }
                *ov = acc;
            }
        }
        for a in d4..d {
            let dv = simd.splat_f64s(step[a]);
            for (ov, &xv) in o.iter_mut().zip(col(a)) {
                *ov = simd.mul_add_f64s(dv, xv, *ov);
            }
        }
    }
}

/// [`transpose`] in 4 × 4 blocks, each by four unpacks and four lane permutes (AVX).
#[cfg(target_arch = "x86_64")]
struct TransposeAvx<'a> {
    v3: pulp::x86::V3,
    src: &'a [f64],
    w: usize,
    dst: &'a mut [f64],
    ds: usize,
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for TransposeAvx<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        use core::arch::x86_64::__m256d;
        let TransposeAvx {
            v3,
            src,
            w,
            dst,
            ds,
        } = self;
        let avx = v3.avx;
        let m = src.len() / w;
        let (m4, w4) = (m / 4 * 4, w / 4 * 4);
        let load = |o: usize| -> __m256d {
            let v: [f64; 4] = src[o..o + 4].try_into().expect("four values");
            pulp::cast(v)
        };
        for i0 in (0..m4).step_by(4) {
            for a0 in (0..w4).step_by(4) {
                let r: [__m256d; 4] = [
                    load(i0 * w + a0),
                    load((i0 + 1) * w + a0),
                    load((i0 + 2) * w + a0),
                    load((i0 + 3) * w + a0),
                ];
                let t0 = avx._mm256_unpacklo_pd(r[0], r[1]);
                let t1 = avx._mm256_unpackhi_pd(r[0], r[1]);
                let t2 = avx._mm256_unpacklo_pd(r[2], r[3]);
                let t3 = avx._mm256_unpackhi_pd(r[2], r[3]);
                let c = [
                    avx._mm256_permute2f128_pd::<0x20>(t0, t2),
                    avx._mm256_permute2f128_pd::<0x20>(t1, t3),
                    avx._mm256_permute2f128_pd::<0x31>(t0, t2),
                    avx._mm256_permute2f128_pd::<0x31>(t1, t3),
                ];
                for (q, cq) in c.into_iter().enumerate() {
                    let o = (a0 + q) * ds + i0;
                    let v: [f64; 4] = pulp::cast(cq);
                    dst[o..o + 4].copy_from_slice(&v);
                }
            }
            for a in w4..w {
                for l in 0..4 {
                    dst[a * ds + i0 + l] = src[(i0 + l) * w + a];
                }
            }
        }
        for i in m4..m {
            for a in 0..w {
                dst[a * ds + i] = src[i * w + a];
            }
        }
    }
}
