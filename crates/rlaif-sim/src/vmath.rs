//! Branch-free `exp`, `ln`, `sin` and `cos` kernels that vectorise.
//!
//! Each function is a straight-line sequence of IEEE operations (`+ − × ÷`, fused
//! multiply-add and bit manipulation), with no branch and no table, so a loop that calls it
//! over a slice is compiled into SIMD code by the instruction set chosen at run time
//! ([`pulp`]), and the result is the same bit for bit on every instruction set (AVX-512,
//! AVX2+FMA, scalar): fused multiply-adds are written explicitly and never contracted by the
//! compiler.
//!
//! * [`ln`]: fdlibm's `__ieee754_log` (Sun Microsystems, 1993): `x = 2^k (1 + f)` with
//!   `√2/2 ≤ 1 + f < √2`, `s = f/(2 + f)`,
//!   `ln(1 + f) = f − f²/2 + s (f²/2 + R(s²))` with the degree-14 remez polynomial R
//!   (error < 2^-58), plus `k ln 2` in two parts. Positive normal arguments only.
//! * [`exp_nonpos`]: `x = k ln 2 + r`, `|r| ≤ ln 2 / 2`, `e^r` by its Taylor polynomial of degree
//!   13 (truncation error < 5·10⁻¹⁸ relative, evaluated by Estrin's scheme), times `2^k` by
//!   exponent arithmetic. Arguments below −708 give 0 (the true value is below 3.3·10⁻³⁰⁸).
//! * [`sin_cos_quarter`]: fdlibm's `__kernel_sin` / `__kernel_cos` on `|x| ≤ π/4` (degree-13 and
//!   degree-14 polynomials, error < 2^-58).
//!
//! Accuracy (tested against the platform's libm on dense grids): within 2 ulp.

// The polynomial constants are fdlibm's, quoted digit for digit.
#![allow(clippy::excessive_precision)]

/// `ln 2` split so that `k · LN2_HI` is exact for |k| < 2^11.
const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;

const LG1: f64 = 6.666_666_666_666_735_130e-1;
const LG2: f64 = 3.999_999_999_940_941_908e-1;
const LG3: f64 = 2.857_142_874_366_239_149e-1;
const LG4: f64 = 2.222_219_843_214_978_396e-1;
const LG5: f64 = 1.818_357_216_161_805_012e-1;
const LG6: f64 = 1.531_383_769_920_937_332e-1;
const LG7: f64 = 1.479_819_860_511_658_591e-1;

/// Natural logarithm of a positive normal `x` (fdlibm's algorithm, branch-free).
///
/// Zero, negative, subnormal, infinite or NaN arguments give meaningless results: callers pass
/// values they know to be in `[2^-1022, 2^1024)`.
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mant = bits & 0x000F_FFFF_FFFF_FFFF;
    // i = 2^52 when the mantissa exceeds √2's (0x6a09e…): then 1 + f is taken from [√2/2, 1).
    let i = (mant + 0x0009_5F64_0000_0000) & 0x0010_0000_0000_0000;
    let k = ((bits >> 52) as i64 - 1023 + (i >> 52) as i64) as f64;
    let m = f64::from_bits(mant | (0x3FF0_0000_0000_0000 ^ i));
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * LG6.mul_add(w, LG4).mul_add(w, LG2);
    let t2 = z * LG7.mul_add(w, LG5).mul_add(w, LG3).mul_add(w, LG1);
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - s.mul_add(hfsq + r, k * LN2_LO)) - f)
}

/// `1.5 · 2^52`: adding it rounds a float of magnitude < 2^51 to an integer (ties to even) and
/// leaves that integer in the low mantissa bits.
const ROUNDER: f64 = 6_755_399_441_055_744.0;

/// Taylor coefficients `1/m!`, m = 13 down to 2 (`EXP_COEFFS[13 − m]` is `1/m!`).
const EXP_COEFFS: [f64; 12] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// `e^x` for `x ≤ 0` (branch-free); 0 below −708, where `e^x` is subnormal or zero.
#[inline(always)]
pub fn exp_nonpos(x: f64) -> f64 {
    let xc = x.max(-708.0);
    let t = xc.mul_add(std::f64::consts::LOG2_E, ROUNDER);
    let k = t - ROUNDER;
    // The integer k (in −1022..=0) read back from the mantissa of t.
    let ki = t.to_bits().wrapping_sub(ROUNDER.to_bits()) as i64;
    let r = (-k).mul_add(LN2_HI, xc);
    let r = (-k).mul_add(LN2_LO, r);
    // Estrin's scheme: pairs `c_m + c_{m+1} r`, combined with r², r⁴ and r⁸, so that the
    // longest dependency chain is five multiply-adds instead of Horner's thirteen (the loss
    // pass of the fit waits on this chain).
    let c = |m: usize| EXP_COEFFS[13 - m];
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let q0 = r + 1.0;
    let q1 = c(3).mul_add(r, c(2));
    let q2 = c(5).mul_add(r, c(4));
    let q3 = c(7).mul_add(r, c(6));
    let q4 = c(9).mul_add(r, c(8));
    let q5 = c(11).mul_add(r, c(10));
    let q6 = c(13).mul_add(r, c(12));
    let s0 = q1.mul_add(r2, q0);
    let s1 = q3.mul_add(r2, q2);
    let s2 = q5.mul_add(r2, q4);
    let t0 = s1.mul_add(r4, s0);
    let t1 = q6.mul_add(r4, s2);
    let p = t1.mul_add(r8, t0);
    let scale = f64::from_bits(((ki + 1023) as u64) << 52);
    let y = p * scale;
    if x < -708.0 {
        0.0
    } else {
        y
    }
}

const S1: f64 = -1.666_666_666_666_663_243_48e-1;
const S2: f64 = 8.333_333_333_322_489_461_24e-3;
const S3: f64 = -1.984_126_982_985_794_931_34e-4;
const S4: f64 = 2.755_731_370_707_006_767_89e-6;
const S5: f64 = -2.505_076_025_340_686_341_95e-8;
const S6: f64 = 1.589_690_995_211_550_102_21e-10;

const C1: f64 = 4.166_666_666_666_660_190_37e-2;
const C2: f64 = -1.388_888_888_887_410_957_49e-3;
const C3: f64 = 2.480_158_728_947_672_941_78e-5;
const C4: f64 = -2.755_731_435_139_066_330_35e-7;
const C5: f64 = 2.087_572_321_298_174_827_90e-9;
const C6: f64 = -1.135_964_755_778_819_482_65e-11;

/// `(sin x, cos x)` for `|x| ≤ π/4` (fdlibm's kernels, branch-free).
#[inline(always)]
pub fn sin_cos_quarter(x: f64) -> (f64, f64) {
    let z = x * x;
    let rs = S6
        .mul_add(z, S5)
        .mul_add(z, S4)
        .mul_add(z, S3)
        .mul_add(z, S2);
    let v = z * x;
    let sin = x + v * rs.mul_add(z, S1);
    let rc = z * C6
        .mul_add(z, C5)
        .mul_add(z, C4)
        .mul_add(z, C3)
        .mul_add(z, C2)
        .mul_add(z, C1);
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    let cos = w + (((1.0 - w) - hz) + z * rc);
    (sin, cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place.
    fn ulps(a: f64, b: f64) -> f64 {
        if a == b {
            return 0.0;
        }
        let ulp = f64::from_bits(b.abs().to_bits() + 1) - b.abs();
        ((a - b) / ulp).abs()
    }

    #[test]
    fn ln_matches_libm_within_2_ulp() {
        let mut worst: f64 = 0.0;
        // Dense grids over the unit interval (where the sampler uses it), [1, 2] (the loss),
        // and scattered points over the whole normal range.
        let mut xs: Vec<f64> = (1..200_000).map(|i| i as f64 / 200_000.0).collect();
        xs.extend((0..=100_000).map(|i| 1.0 + i as f64 / 100_000.0));
        xs.extend((-1020..1020).map(|e| 1.2345 * 2f64.powi(e)));
        xs.extend([
            f64::MIN_POSITIVE,
            2f64.powi(-52),
            1.0 - f64::EPSILON,
            1.0,
            2.0,
        ]);
        for &x in &xs {
            let (got, want) = (ln(x), x.ln());
            let u = if want == 0.0 {
                got.abs()
            } else {
                ulps(got, want)
            };
            assert!(u <= 2.0, "ln({x:e}) = {got:e}, libm {want:e} ({u} ulp)");
            worst = worst.max(u);
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn exp_matches_libm_within_2_ulp() {
        for i in 0..=400_000 {
            let x = -(i as f64) * 708.0 / 400_000.0;
            let (got, want) = (exp_nonpos(x), x.exp());
            let u = ulps(got, want);
            assert!(u <= 2.0, "exp({x:e}) = {got:e}, libm {want:e} ({u} ulp)");
        }
        for x in [-1e-300, -1e-17, -0.0, 0.0] {
            assert_eq!(exp_nonpos(x), 1.0);
        }
        assert_eq!(exp_nonpos(-709.0), 0.0);
        assert_eq!(exp_nonpos(-1e308), 0.0);
        assert_eq!(exp_nonpos(f64::NEG_INFINITY), 0.0);
    }

    #[test]
    fn sin_cos_match_libm_within_2_ulp_on_the_quarter() {
        let q = std::f64::consts::FRAC_PI_4;
        for i in -200_000..=200_000 {
            let x = q * i as f64 / 200_000.0;
            let (s, c) = sin_cos_quarter(x);
            let us = if x == 0.0 { s.abs() } else { ulps(s, x.sin()) };
            assert!(us <= 2.0, "sin({x:e}) = {s:e}, libm {:e}", x.sin());
            assert!(
                ulps(c, x.cos()) <= 2.0,
                "cos({x:e}) = {c:e}, libm {:e}",
                x.cos()
            );
        }
    }
}
