//! Matrix products `y = x · Wᵀ` on Intel AMX tiles in bfloat16 with f32 accumulation (Sapphire
//! Rapids and later Xeons), for prefills of many rows.
//!
//! The weights are dequantized once and rounded to bfloat16 (round to nearest, ties to even);
//! each product rounds the activations the same way and accumulates in f32:
//! ```text
//! y[i, j] = Σ_k bf16(x[i, k]) · bf16(w[j, k])       (products exact, sums in f32)
//! ```
//! bf16 keeps 8 significant bits, so each operand carries a relative error of at most 2⁻⁹ and
//! the product's error is about 2⁻⁹ · ‖x‖‖w‖ / √k for random signs — well below the 4-bit
//! quantization already in the weights, and below llama.cpp's rounding of activations to 8-bit
//! blocks.
//!
//! One `TDPBF16PS` instruction computes a 16 × 16 × 32 block (8192 multiply-adds); a micro-kernel
//! holds a 32 × 32 output block in four accumulator tiles (`tmm0..3`), loads two activation tiles
//! (`tmm4, tmm5`: 16 rows × 32 values each) and two weight tiles (`tmm6, tmm7`) per 32 values of
//! `k`, and stores the accumulators straight into the row-major output. The weight tiles are
//! packed at load in the layout the instruction reads: tile `(nb, kb)` holds rows `16·nb ..
//! 16·nb + 16` of `W` and columns `32·kb .. 32·kb + 32` as 16 rows of pairs,
//! `T[r][2c + e] = W[16·nb + c][32·kb + 2r + e]`; the activations are rounded into tiles of
//! 16 rows × 32 values as they are converted, so every tile load reads one contiguous KiB.
//!
//! The CPU is asked at run time (CPUID for AMX-TILE and AMX-BF16) and Linux is asked for the
//! tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); without both the matrix
//! is not built and the caller keeps another kernel. The instructions are written as inline
//! assembly because Rust's AMX intrinsics are not stable.

#![allow(unsafe_code)] // AMX instructions (inline assembly) behind a run-time CPU and OS check

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// Rows of a tile, and output columns of one weight tile.
const TILE: usize = 16;
/// bf16 values of `k` per tile row (64 bytes).
const KB: usize = 32;
/// Output block of the micro-kernel: 32 × 32 (2 × 2 tiles).
const BLOCK: usize = 2 * TILE;
/// Micro-kernel blocks per parallel task: rows and columns (a task's weight strip stays in L2
/// while its rows pass).
const TASK_ROW_BLOCKS: usize = 4;
const TASK_COL_BLOCKS: usize = 8;

/// Whether this CPU and OS run AMX-BF16 (checked once per process).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::asm;
    use std::arch::x86_64::__cpuid_count;
    // SAFETY: CPUID is present on every x86-64 CPU (the intrinsic is safe from Rust 1.87 on).
    #[allow(unused_unsafe)]
    let leaf0 = unsafe { __cpuid_count(0, 0) };
    if leaf0.eax < 7 {
        return false;
    }
    // SAFETY: leaf 7 exists (checked above).
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    let (amx_bf16, amx_tile) = (leaf7.edx >> 22 & 1 == 1, leaf7.edx >> 24 & 1 == 1);
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    // arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18): Linux 5.16+ enables
    // the tile data state for this process; older kernels and disabled AMX return an error.
    let ret: i64;
    // SAFETY: a plain system call; it reads no memory of ours and clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 158_i64 => ret,
            in("rdi") 0x1023_i64,
            in("rsi") 18_i64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `x` rounded to bfloat16, ties to even (NaN stays NaN).
pub(crate) fn bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7FC0;
    }
    let b = x.to_bits();
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of bfloat16 bits.
#[cfg(test)]
pub(crate) fn bf16_value(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// One tile's 16 rows of 32 bf16 values, aligned to a cache line: a tile load whose rows
/// straddle two lines runs at a fifth of the speed (measured on Sapphire Rapids).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Tile([u16; TILE * KB]);

/// Tiles as one flat run of values (the layout is identical: 1 KiB each, no padding).
fn flat(tiles: &[Tile]) -> &[u16] {
    // SAFETY: `Tile` is `repr(C)` around `[u16; 512]` with size 1024 and no padding.
    unsafe { std::slice::from_raw_parts(tiles.as_ptr().cast::<u16>(), tiles.len() * TILE * KB) }
}

/// A weight matrix `[n, k]` in bfloat16, packed in AMX weight tiles (see the module docs).
#[derive(Debug)]
pub(crate) struct AmxBf16 {
    n: usize,
    k: usize,
    /// `n/16 · k/32` tiles of 512 values, ordered by `(nb, kb)`.
    tiles: Vec<Tile>,
}

impl AmxBf16 {
    /// Packs `w` (`n · k` values, row after row). `None` when AMX is unavailable or the shape
    /// does not tile (`n` a multiple of 32, `k` of 32).
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !available() || n == 0 || k == 0 || n % BLOCK != 0 || k % KB != 0 || w.len() != n * k {
            return None;
        }
        let kbs = k / KB;
        let mut tiles = vec![Tile([0; TILE * KB]); n * k / (TILE * KB)];
        for (t, Tile(tile)) in tiles.iter_mut().enumerate() {
            let (nb, kb) = (t / kbs, t % kbs);
            for r in 0..TILE {
                for c in 0..TILE {
                    let row = &w[(nb * TILE + c) * k + kb * KB..];
                    tile[r * KB + 2 * c] = bf16_bits(row[2 * r]);
                    tile[r * KB + 2 * c + 1] = bf16_bits(row[2 * r + 1]);
                }
            }
        }
        Some(Self { n, k, tiles })
    }

    /// `x · Wᵀ` for `x` `[..., k]`, giving `[..., n]` in f32.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let k = x.dims().last().copied().unwrap_or(0);
        if k != self.k {
            candle_core::bail!("amx matmul: input has {k} columns, the weight {}", self.k);
        }
        let rows = x.elem_count() / k;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("k checked") = self.n;
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let a = {
            let (storage, layout) = x.storage_and_layout();
            to_bf16_tiles(super::cpu_slice(&storage, layout, rows * k)?, rows, k)
        };
        let mut out = self.product(flat(&a), rows.div_ceil(BLOCK) * BLOCK);
        out.truncate(rows * self.n);
        Tensor::from_vec(out, dims, x.device())
    }

    /// `A · Wᵀ` for the activation tiles `a` of [`to_bf16_tiles`] (`rows_pad · k` values,
    /// `rows_pad` a multiple of 32), row-major f32.
    fn product(&self, a: &[u16], rows_pad: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        // Every 32 × 32 block of the output is stored by exactly one task, so the buffer is
        // not zeroed first (its length is set once all blocks are written).
        let mut out: Vec<f32> = Vec::with_capacity(rows_pad * n);
        // Fault the output's pages in here, one write per 4 KiB page: a page fault taken while
        // a thread holds tile state costs far more (the capture-prefill of SmolLM2, which keeps
        // every layer's output and so keeps getting fresh pages, ran 1.8x slower without this).
        for v in out.spare_capacity_mut().iter_mut().step_by(1024) {
            v.write(0.0);
        }
        let row_chunks = rows_pad.div_ceil(BLOCK * TASK_ROW_BLOCKS);
        let col_chunks = n.div_ceil(BLOCK * TASK_COL_BLOCKS);
        let dst = OutPtr(out.as_mut_ptr());
        (0..row_chunks * col_chunks)
            .into_par_iter()
            .for_each(|task| {
                let (rc, cc) = (task / col_chunks, task % col_chunks);
                let rows = rc * BLOCK * TASK_ROW_BLOCKS
                    ..((rc + 1) * BLOCK * TASK_ROW_BLOCKS).min(rows_pad);
                let cols =
                    cc * BLOCK * TASK_COL_BLOCKS..((cc + 1) * BLOCK * TASK_COL_BLOCKS).min(n);
                let dst = &dst;
                // SAFETY: AMX is available (checked when `self` was built) and this thread's tile
                // state is configured before use and released after. Every tile load reads 16 rows
                // of 64 bytes inside `a` (rows < rows_pad, columns < k) or inside `self.tiles`;
                // every store writes a 16 × 16 block inside `out`'s capacity (rows < rows_pad,
                // columns < n), and tasks write disjoint blocks.
                unsafe {
                    configure_tiles();
                    for i0 in rows.step_by(BLOCK) {
                        for j0 in cols.clone().step_by(BLOCK) {
                            block_2x2(
                                a.as_ptr().add(i0 * k),
                                k,
                                flat(&self.tiles).as_ptr().add(j0 * k),
                                dst.0.add(i0 * n + j0),
                                n,
                            );
                        }
                    }
                    release_tiles();
                }
            });
        // SAFETY: the tasks above stored every block of the `rows_pad × n` output
        // (`rows_pad` and `n` are multiples of the block size), so all values are initialised.
        unsafe { out.set_len(rows_pad * n) };
        out
    }
}

/// The output buffer, written by several tasks at disjoint blocks.
struct OutPtr(*mut f32);
// SAFETY: the tasks of `AmxBf16::product` write disjoint blocks of the buffer, which outlives them.
unsafe impl Sync for OutPtr {}

/// `rows · k` f32 values as bf16 activation tiles, padded with zero rows to a multiple of 32
/// rows: the 16 rows of row block `mb` take `16 · k` consecutive values, tile after tile
/// (`T[r][c] = x[16·mb + r][32·kb + c]` at `16·k·mb + 512·kb + 32·r + c`), so that every tile
/// load reads one contiguous KiB.
fn to_bf16_tiles(x: &[f32], rows: usize, k: usize) -> Vec<Tile> {
    let count = rows.div_ceil(BLOCK) * BLOCK * k / (TILE * KB);
    let mut a: Vec<Tile> = Vec::with_capacity(count);
    let spare = &mut a.spare_capacity_mut()[..count];
    // SAFETY: `MaybeUninit<Tile>` has the layout of `[MaybeUninit<u16>; 512]` (see `flat`).
    let values: &mut [MaybeUninit<u16>] =
        unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast(), count * TILE * KB) };
    values
        .par_chunks_mut(TILE * k)
        .enumerate()
        .for_each(|(mb, dst)| {
            for (kb, tile) in dst.chunks_exact_mut(TILE * KB).enumerate() {
                for (r, out) in tile.chunks_exact_mut(KB).enumerate() {
                    let row = mb * TILE + r;
                    if row < rows {
                        let src = &x[row * k + kb * KB..row * k + (kb + 1) * KB];
                        for (d, &s) in out.iter_mut().zip(src) {
                            d.write(bf16_bits(s));
                        }
                    } else {
                        out.iter_mut().for_each(|d| {
                            d.write(0);
                        });
                    }
                }
            }
        });
    // SAFETY: every value of the `count` tiles was written above.
    unsafe { a.set_len(count) };
    a
}

/// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
        c[48 + t] = TILE as u8; // rows
        t += 1;
    }
    TileConfig(c)
};

/// Loads [`CONFIG`] into this thread's tile state.
///
/// # Safety
/// AMX must be available ([`available`]).
#[cfg(target_arch = "x86_64")]
unsafe fn configure_tiles() {
    std::arch::asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
}

/// Returns this thread's tile state to its initial (unused) state.
///
/// # Safety
/// AMX must be available ([`available`]).
#[cfg(target_arch = "x86_64")]
unsafe fn release_tiles() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// One 32 × 32 output block: `c[i][j] = Σ_k a[i][k] · W[j][k]` for the 32 activation rows whose
/// tiles start at `a` and the 32 weight rows whose tiles start at `w` (each two strips of `k/32`
/// tiles, `16 · k` values apart); `c` is f32 with row stride `n`.
///
/// # Safety
/// Tiles configured by [`configure_tiles`]; `a` and `w` hold two strips of `k / 32` tiles each,
/// `c` 32 rows of `n ≥ 32` values from the block's first column.
#[cfg(target_arch = "x86_64")]
unsafe fn block_2x2(a: *const u16, k: usize, w: *const u16, c: *mut f32, n: usize) {
    use std::arch::asm;
    let (tile_stride, c_stride) = (2 * KB, 4 * n);
    let a1 = a.add(TILE * k);
    let w1 = w.add(TILE * k);
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    for kb in 0..k / KB {
        let tile = kb * TILE * KB;
        // Ask for the tiles two steps ahead: a tile load waits for the products still reading
        // its register, so a load that misses L1 stalls the tile unit.
        let ahead = tile + 2 * TILE * KB;
        for p in [a, a1, w, w1] {
            let t = p.wrapping_add(ahead).cast::<i8>();
            for line in 0..TILE {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    t.wrapping_add(64 * line),
                );
            }
        }
        asm!(
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tileloadd tmm6, [{w0} + {s}*1]",
            "tileloadd tmm7, [{w1} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a.add(tile),
            a1 = in(reg) a1.add(tile),
            w0 = in(reg) w.add(tile),
            w1 = in(reg) w1.add(tile),
            s = in(reg) tile_stride,
            options(nostack, readonly),
        );
    }
    asm!(
        "tilestored [{c0} + {sc}*1], tmm0",
        "tilestored [{c1} + {sc}*1], tmm1",
        "tilestored [{c2} + {sc}*1], tmm2",
        "tilestored [{c3} + {sc}*1], tmm3",
        c0 = in(reg) c,
        c1 = in(reg) c.add(TILE),
        c2 = in(reg) c.add(TILE * n),
        c3 = in(reg) c.add(TILE * n + TILE),
        sc = in(reg) c_stride,
        options(nostack),
    );
}

// Elsewhere no `AmxBf16` is ever built (`available` is false), so these are never called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn configure_tiles() {
    unreachable!("AMX tiles exist on x86-64 only")
}
#[cfg(not(target_arch = "x86_64"))]
unsafe fn release_tiles() {}
#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_2x2(_: *const u16, _: usize, _: *const u16, _: *mut f32, _: usize) {
    unreachable!("AMX tiles exist on x86-64 only")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    /// `Σ_k bf16(x)·bf16(w)` in f64: the exact value the kernel approximates with f32 sums.
    fn reference(x: &[f32], w: &[f32], rows: usize, n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; rows * n];
        for i in 0..rows {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|l| {
                        f64::from(bf16_value(bf16_bits(x[i * k + l])))
                            * f64::from(bf16_value(bf16_bits(w[j * k + l])))
                    })
                    .sum();
            }
        }
        y
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to the even 1.0.
        assert_eq!(bf16_bits(1.0 + 2f32.powi(-8)), 0x3F80);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: up to the even one.
        assert_eq!(bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(bf16_bits(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3F81);
        assert_eq!(bf16_bits(-2.5), 0xC020);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_bits(f32::MAX), 0x7F80); // rounds to +inf, as IEEE does
    }

    #[test]
    fn amx_product_matches_the_bf16_reference() {
        if !available() {
            // Nothing to run: the constructor must refuse rather than build a matrix.
            assert!(AmxBf16::new(&[0.0; 32 * 32], 32, 32).is_none());
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Rows not a multiple of 32 (padding), several tasks in both directions.
        for (rows, n, k) in [(1, 32, 32), (37, 64, 96), (161, 320, 64), (40, 32, 576)] {
            let x: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let m = AmxBf16::new(&w, n, k).expect("tileable shape");
            let xt = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap();
            let y: Vec<f32> = m
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = reference(&x, &w, rows, n, k);
            assert_eq!(y.len(), want.len());
            for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
                // f32 sums of k exact products: error ≲ k · 2⁻²⁴ · Σ|terms|.
                let tol = 1e-6 * k as f64 * 2.0;
                assert!(
                    (f64::from(got) - want).abs() <= tol,
                    "rows {rows} n {n} k {k}: entry {i} is {got}, reference {want}"
                );
            }
        }
        assert!(
            AmxBf16::new(&[0.0; 16 * 32], 16, 32).is_none(),
            "n = 16 does not tile"
        );
        assert!(
            AmxBf16::new(&[0.0; 32 * 48], 32, 48).is_none(),
            "k = 48 does not tile"
        );
    }
}
