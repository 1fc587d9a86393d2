//! The gated MLP's elementwise step `act(g) ⊙ u`, fused into one parallel pass.
//!
//! ```text
//! SiLU:       silu(g) · u = g · u / (1 + e^(−g))
//! GELU tanh:  gelu(g) · u = ½ g (1 + tanh(y)) · u = g · u / (1 + e^(−2y)),
//!             y = √(2/π) (g + 0.044715 g³)       (½(1 + tanh y) = σ(2y): no cancellation)
//! ```
//! `e^x` is the Cephes single-precision polynomial (range reduction by ln 2 in two parts, a
//! degree-6 polynomial on |r| ≤ ln2/2, about 1 ulp), written branch-free so that the compiler
//! vectorises it; on x86-64 CPUs with AVX2 the loop is compiled for that instruction set and
//! chosen at run time. The arithmetic is the same on every path (no fused multiply-adds), so
//! results do not depend on the CPU. Against candle's separate `silu`/`gelu` and `mul` (libm
//! `expf`/`tanhf`, one thread) the values agree to a few ulp.

use std::mem::MaybeUninit;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::cpu_slice;
use crate::config::Activation;

/// Elements per parallel work item.
const CHUNK: usize = 16 * 1024;

/// `act(gate) ⊙ up` for same-shaped tensors.
pub(crate) fn gated(gate: &Tensor, up: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
    let fused = gate.dtype() == DType::F32
        && up.dtype() == DType::F32
        && gate.dims() == up.dims()
        && gate.device().is_cpu();
    if !fused {
        let g = match act {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
        };
        return g * up;
    }
    let (g, u) = (gate.contiguous()?, up.contiguous()?);
    let len = g.elem_count();
    let mut out: Vec<f32> = Vec::with_capacity(len);
    {
        let ((gst, gl), (ust, ul)) = (g.storage_and_layout(), u.storage_and_layout());
        let (gs, us) = (cpu_slice(&gst, gl, len)?, cpu_slice(&ust, ul, len)?);
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(CHUNK)
            .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| apply(act, g, u, o));
        // SAFETY: all `len` values were written by the chunks above (each `apply` writes its
        // whole output chunk).
        #[allow(unsafe_code)]
        unsafe {
            out.set_len(len)
        };
    }
    Tensor::from_vec(out, gate.dims(), gate.device())
}

fn apply(act: Activation, g: &[f32], u: &[f32], out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        #[allow(unsafe_code)]
        unsafe {
            return apply_avx2(act, g, u, out);
        }
    }
    apply_portable(act, g, u, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn apply_avx2(act: Activation, g: &[f32], u: &[f32], out: &mut [MaybeUninit<f32>]) {
    apply_portable(act, g, u, out);
}

#[inline(always)]
fn apply_portable(act: Activation, g: &[f32], u: &[f32], out: &mut [MaybeUninit<f32>]) {
    match act {
        Activation::Silu => {
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                o.write(g * u / (1.0 + exp(-g)));
            }
        }
        Activation::GeluTanh => {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                let y = SQRT_2_OVER_PI * g * (1.0 + 0.044_715 * g * g);
                o.write(g * u / (1.0 + exp(-2.0 * y)));
            }
        }
    }
}

/// `e^x` (Cephes `expf`): `x = n ln2 + r`, `e^x = 2ⁿ · p(r)`; inputs are clamped to
/// `[−87.3, 88.7]` (below: the smallest normal, above: +∞ through `2¹²⁸`).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.7);
    // Round x·log2(e) to the nearest integer n by adding 1.5·2²³: the sum's low mantissa bits
    // then hold n (|n| ≤ 128), so both n and 2ⁿ come out of integer lanes without a
    // float-to-int conversion (which does not vectorise with Rust's saturating `as`).
    const SHIFT: f32 = 12_582_912.0;
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2ⁿ from the exponent bits (n ∈ [−126, 128]; 128 gives +∞).
    let scale = f32::from_bits(t.to_bits().wrapping_sub(SHIFT.to_bits() - 127) << 23);
    e * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i32).abs_diff(b.to_bits() as i32)
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 1.234e-4;
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst <= 2, "worst {worst} ulp");
        assert_eq!(exp(-1000.0), exp(-87.3));
        assert!(exp(-87.3) >= f32::MIN_POSITIVE);
        assert!(exp(89.0).is_infinite());
    }

    #[test]
    fn fused_step_matches_f64_and_candle() {
        let dev = Device::Cpu;
        let n = 3 * CHUNK + 17;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 2001) as f32 * 0.01 - 10.0)
            .collect();
        let u: Vec<f32> = (0..n)
            .map(|i| ((i * 104_729) % 1001) as f32 * 0.002 - 1.0)
            .collect();
        let gt = Tensor::from_vec(g.clone(), (n,), &dev).unwrap();
        let ut = Tensor::from_vec(u.clone(), (n,), &dev).unwrap();
        for act in [Activation::Silu, Activation::GeluTanh] {
            let fused: Vec<f32> = gated(&gt, &ut, act).unwrap().to_vec1().unwrap();
            let candle = match act {
                Activation::Silu => gt.silu().unwrap(),
                Activation::GeluTanh => gt.gelu().unwrap(),
            };
            let candle: Vec<f32> = (candle * &ut).unwrap().to_vec1().unwrap();
            for i in 0..n {
                let (x, v) = (f64::from(g[i]), f64::from(u[i]));
                // The exact value, and the argument a of e^(−a) (its f32 rounding alone moves
                // the result by |a|·2⁻²⁴ relatively per rounding made in computing a).
                let (exact, arg) = match act {
                    Activation::Silu => (x * v / (1.0 + (-x).exp()), x),
                    Activation::GeluTanh => {
                        let y = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
                        (x * v / (1.0 + (-2.0 * y).exp()), 2.0 * y) // ½(1 + tanh y) = σ(2y)
                    }
                };
                let (f, c) = (f64::from(fused[i]), f64::from(candle[i]));
                // A few f32 roundings, plus the conditioning of e^(−a).
                let tol = (5e-7 + 3e-7 * arg.abs()) * exact.abs() + 1e-30;
                assert!(
                    (f - exact).abs() <= tol,
                    "{act:?} at {i}: fused {f}, exact {exact}"
                );
                // candle computes ½g(1 + tanh y) and loses digits where 1 + tanh y is small
                // (its error is relative to |g·u|, not to the result).
                assert!(
                    (c - exact).abs() <= 5e-5 * exact.abs() + 1e-7 * (x * v).abs(),
                    "{act:?} at {i}: candle {c}, exact {exact}"
                );
            }
        }
    }
}
