//! Counter-based random streams with vectorised uniform and normal fills.
//!
//! A [`CounterStream`] is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014; the generator of Java's `SplittableRandom`): word `i` of the
//! stream is
//!
//! `u_i = mix64(start + (i + 1) γ)  (mod 2^64)`,
//!
//! with `mix64` the variant-13 finaliser and `(start, γ)` derived from a 64-bit seed and a
//! 64-bit stream id by the same finalisers (γ odd, with at least 24 bit transitions, as
//! `SplittableRandom` requires of its gammas). Because `u_i` is a pure function of `i`, any
//! range of a stream can be filled independently and eight words at a time: a fill is a
//! straight loop of integer multiply, shift and xor that the compiler turns into SIMD code.
//!
//! Normals come in groups of 16 by Box–Muller: group `g` reads words `16g + l` (the radius,
//! `ρ_l = √(−2 ln u_l)` with `u_l ∈ (0, 1]`) and `16g + 8 + l` (the angle) for lanes
//! `l = 0..8`, and gives normal `16g + l = ρ_l cos θ_l` and `16g + 8 + l = ρ_l sin θ_l`.
//! The angle word's top two bits pick the quadrant q and the next 52 bits a uniform
//! `φ ∈ [−π/4, π/4)`, so `θ = qπ/2 + φ` is uniform on a full turn and `cos θ`, `sin θ` are
//! `±cos φ`, `±sin φ` from the kernels of [`crate::vmath`]. Normal `i` of a stream is therefore
//! also a pure function of `i` ([`CounterStream::normal_at`] is the one-at-a-time reference)
//! and identical on every instruction set. The radius is bounded by `√(104 ln 2) ≈ 8.49`
//! (`u ≥ 2^-52`), a truncation of probability below 10⁻¹⁶.

use crate::vmath;

/// SplitMix64's output function (Stafford's "variant 13" 64-bit finaliser).
#[inline(always)]
pub fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `SplittableRandom.mixGamma`: an odd increment with enough bit transitions.
fn mix_gamma(z: u64) -> u64 {
    let z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    let z = (z ^ (z >> 33)).wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    let z = (z ^ (z >> 33)) | 1;
    if (z ^ (z >> 1)).count_ones() < 24 {
        z ^ 0xAAAA_AAAA_AAAA_AAAA
    } else {
        z
    }
}

/// The golden-ratio increment of SplitMix64.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Lanes of one vectorised step (eight f64 in an AVX-512 register, two AVX2 registers).
const LANES: usize = 8;
/// Normals per Box–Muller group: `LANES` radii times (cos, sin).
pub const NORMAL_GROUP: usize = 2 * LANES;

/// A counter-based random stream: word `i` is `mix64(start + (i + 1) γ)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterStream {
    start: u64,
    gamma: u64,
}

impl CounterStream {
    /// The stream numbered `id` of `seed`. Distinct `(seed, id)` give unrelated streams.
    pub fn new(seed: u64, id: u64) -> Self {
        let a = mix64(seed.wrapping_add(GOLDEN_GAMMA));
        let b = mix64(
            a ^ mix64(
                id.wrapping_mul(GOLDEN_GAMMA)
                    .wrapping_add(0x6A09_E667_F3BC_C909),
            ),
        );
        Self {
            start: b,
            gamma: mix_gamma(b.wrapping_add(GOLDEN_GAMMA)),
        }
    }

    /// Word `i` of the stream.
    #[inline(always)]
    pub fn u64_at(&self, i: u64) -> u64 {
        mix64(
            self.start
                .wrapping_add(self.gamma.wrapping_mul(i.wrapping_add(1))),
        )
    }

    /// Uniform `[0, 1)` from word `i` (its top 53 bits).
    #[inline(always)]
    pub fn uniform_at(&self, i: u64) -> f64 {
        (self.u64_at(i) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal number `i` of the stream (the one-at-a-time reference of
    /// [`CounterStream::fill_normal`]).
    pub fn normal_at(&self, i: u64) -> f64 {
        let (g, l) = (i / NORMAL_GROUP as u64, (i % NORMAL_GROUP as u64) as usize);
        let base = g * NORMAL_GROUP as u64;
        let lane = l % LANES;
        let (c, s) = box_muller(
            self.u64_at(base + lane as u64),
            self.u64_at(base + (LANES + lane) as u64),
        );
        if l < LANES {
            c
        } else {
            s
        }
    }

    /// `out[t] = uniform_at(first + t)`.
    pub fn fill_uniform(&self, first: u64, out: &mut [f64]) {
        pulp::Arch::new().dispatch(FillUniform {
            stream: *self,
            first,
            out,
        });
    }

    /// `out[t] = normal_at(first + t)`, vectorised (groups of [`NORMAL_GROUP`]).
    pub fn fill_normal(&self, first: u64, out: &mut [f64]) {
        pulp::Arch::new().dispatch(FillNormal {
            stream: *self,
            first,
            out,
        });
    }
}

/// `(ρ cos θ, ρ sin θ)` from a radius word and an angle word.
#[inline(always)]
fn box_muller(radius: u64, angle: u64) -> (f64, f64) {
    const ONE: u64 = 0x3FF0_0000_0000_0000;
    // u ∈ (0, 1]: 2 − [1, 2) on a 2^-52 grid.
    let u = 2.0 - f64::from_bits(ONE | (radius >> 12));
    // The IEEE square root (correctly rounded, so the same on every instruction set; it
    // replaced a Newton iteration that gave the same bits on 5·10⁷ radii and took longer).
    let rho = (-2.0 * vmath::ln(u)).abs().sqrt();
    let phi = (f64::from_bits(ONE | ((angle << 2) >> 12)) - 1.5) * std::f64::consts::FRAC_PI_2;
    let (sp, cp) = vmath::sin_cos_quarter(phi);
    // θ = qπ/2 + φ with q = (q₁q₀) the angle word's top two bits: odd quadrants swap sin and
    // cos; sin θ < 0 for q ∈ {2, 3} (q₁ = 1) and cos θ < 0 for q ∈ {1, 2}, where the top bit
    // of q + 1 (mod 4) is set. The signs are read off the word's top bits directly.
    const TOP: u64 = 1 << 63;
    let odd = angle & (TOP >> 1) != 0;
    let (a, b) = if odd { (sp, cp) } else { (cp, sp) };
    let cos_sign = angle.wrapping_add(TOP >> 1) & TOP;
    let sin_sign = angle & TOP;
    (
        f64::from_bits((rho * a).to_bits() ^ cos_sign),
        f64::from_bits((rho * b).to_bits() ^ sin_sign),
    )
}

/// Group `g` of normals (words `16g .. 16g + 16`) into `out`.
#[inline(always)]
fn normal_group(stream: &CounterStream, g: u64, out: &mut [f64; NORMAL_GROUP]) {
    let mut radius = [0u64; LANES];
    let mut angle = [0u64; LANES];
    // Word i is mix64(start + (i + 1)γ): the group's base plus lane multiples of γ.
    let base = stream
        .start
        .wrapping_add(stream.gamma.wrapping_mul(g * NORMAL_GROUP as u64 + 1));
    for l in 0..LANES {
        radius[l] = mix64(base.wrapping_add(stream.gamma.wrapping_mul(l as u64)));
        angle[l] = mix64(base.wrapping_add(stream.gamma.wrapping_mul((LANES + l) as u64)));
    }
    let (cos_half, sin_half) = out.split_at_mut(LANES);
    for l in 0..LANES {
        let (c, s) = box_muller(radius[l], angle[l]);
        cos_half[l] = c;
        sin_half[l] = s;
    }
}

/// Normal groups computed together by [`FillNormal`].
const STEP_GROUPS: usize = 2;

/// Words `0 .. STEP_GROUPS · NORMAL_GROUP` of a step's groups relative to its first word:
/// `steps[w] = w γ`.
type StepOffsets = [u64; STEP_GROUPS * NORMAL_GROUP];

/// Groups `g .. g + STEP_GROUPS` of normals into `out`, the same numbers as that many calls of
/// [`normal_group`], given `base = start + (16g + 1) γ` (the counter of the step's first word)
/// and the word offsets `steps`. (Counters by addition: computing them from g took two 64-bit
/// vector multiplies per step, which run on the port the rest of the kernel waits for.)
#[inline(always)]
fn normal_groups(base: u64, steps: &StepOffsets, out: &mut [f64; STEP_GROUPS * NORMAL_GROUP]) {
    let mut radius = [0u64; STEP_GROUPS * LANES];
    let mut angle = [0u64; STEP_GROUPS * LANES];
    for h in 0..STEP_GROUPS {
        for l in 0..LANES {
            radius[h * LANES + l] = mix64(base.wrapping_add(steps[h * NORMAL_GROUP + l]));
            angle[h * LANES + l] = mix64(base.wrapping_add(steps[h * NORMAL_GROUP + LANES + l]));
        }
    }
    let mut cs = [0.0f64; STEP_GROUPS * LANES];
    let mut sn = [0.0f64; STEP_GROUPS * LANES];
    for l in 0..STEP_GROUPS * LANES {
        let (c, s) = box_muller(radius[l], angle[l]);
        cs[l] = c;
        sn[l] = s;
    }
    for h in 0..STEP_GROUPS {
        let o = &mut out[h * NORMAL_GROUP..(h + 1) * NORMAL_GROUP];
        o[..LANES].copy_from_slice(&cs[h * LANES..(h + 1) * LANES]);
        o[LANES..].copy_from_slice(&sn[h * LANES..(h + 1) * LANES]);
    }
}

struct FillNormal<'a> {
    stream: CounterStream,
    first: u64,
    out: &'a mut [f64],
}

impl pulp::WithSimd for FillNormal<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let FillNormal { stream, first, out } = self;
        let group = NORMAL_GROUP as u64;
        let mut buf = [0.0; NORMAL_GROUP];
        // A partial first group.
        let head = ((group - first % group) % group) as usize;
        let head = head.min(out.len());
        if head > 0 {
            let g = first / group;
            normal_group(&stream, g, &mut buf);
            let off = (first % group) as usize;
            out[..head].copy_from_slice(&buf[off..off + head]);
        }
        let (_, rest) = out.split_at_mut(head);
        let mut g = (first + head as u64) / group;
        // Two groups per step: their instructions interleave, so that the long dependency
        // chain of one group (two 64-bit multiplies, a division, a square root) overlaps the
        // other's (80 → 62 µs for 40 960 normals on one core; three or four groups spill
        // registers).
        let mut pairs = rest.chunks_exact_mut(STEP_GROUPS * NORMAL_GROUP);
        let steps: StepOffsets = std::array::from_fn(|w| stream.gamma.wrapping_mul(w as u64));
        let step = stream
            .gamma
            .wrapping_mul((STEP_GROUPS * NORMAL_GROUP) as u64);
        let mut base = stream
            .start
            .wrapping_add(stream.gamma.wrapping_mul(g * NORMAL_GROUP as u64 + 1));
        for chunk in &mut pairs {
            let chunk: &mut [f64; STEP_GROUPS * NORMAL_GROUP] =
                chunk.try_into().expect("chunk of STEP_GROUPS groups");
            normal_groups(base, &steps, chunk);
            base = base.wrapping_add(step);
            g += STEP_GROUPS as u64;
        }
        let rest = pairs.into_remainder();
        let mut chunks = rest.chunks_exact_mut(NORMAL_GROUP);
        for chunk in &mut chunks {
            let chunk: &mut [f64; NORMAL_GROUP] = chunk.try_into().expect("group-sized chunk");
            normal_group(&stream, g, chunk);
            g += 1;
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            normal_group(&stream, g, &mut buf);
            let t = tail.len();
            tail.copy_from_slice(&buf[..t]);
        }
    }
}

struct FillUniform<'a> {
    stream: CounterStream,
    first: u64,
    out: &'a mut [f64],
}

impl pulp::WithSimd for FillUniform<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let FillUniform { stream, first, out } = self;
        for (t, o) in out.iter_mut().enumerate() {
            *o = stream.uniform_at(first + t as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // SplitMix64 from state 0 (start = 0, γ = golden gamma): the published first outputs.
        let s = CounterStream {
            start: 0,
            gamma: GOLDEN_GAMMA,
        };
        assert_eq!(s.u64_at(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(s.u64_at(1), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(s.u64_at(2), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn fills_match_the_one_at_a_time_reference_bit_for_bit() {
        let s = CounterStream::new(42, 7);
        for (first, len) in [
            (0u64, 0usize),
            (0, 1),
            (0, 16),
            (0, 101),
            (3, 13),
            (5, 40),
            (16, 33),
            (1000, 257),
        ] {
            let mut v = vec![0.0; len];
            s.fill_normal(first, &mut v);
            for (t, x) in v.iter().enumerate() {
                assert_eq!(
                    x.to_bits(),
                    s.normal_at(first + t as u64).to_bits(),
                    "normal {first}+{t}"
                );
            }
            s.fill_uniform(first, &mut v);
            for (t, x) in v.iter().enumerate() {
                assert_eq!(x.to_bits(), s.uniform_at(first + t as u64).to_bits());
                assert!((0.0..1.0).contains(x));
            }
        }
    }

    /// The widest instruction set (AVX-512 here), AVX2+FMA and pulp's scalar fallback give the
    /// same bits.
    #[test]
    fn fills_are_the_same_on_every_instruction_set() {
        use pulp::Simd;
        let s = CounterStream::new(3, 9);
        let (first, len) = (5u64, 1003usize);
        let mut widest = vec![0.0; len];
        s.fill_normal(first, &mut widest);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut scalar = vec![0.0; len];
        pulp::Scalar::new().vectorize(FillNormal {
            stream: s,
            first,
            out: &mut scalar,
        });
        assert_eq!(bits(&widest), bits(&scalar));
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            let mut avx2 = vec![0.0; len];
            Simd::vectorize(
                v3,
                FillNormal {
                    stream: s,
                    first,
                    out: &mut avx2,
                },
            );
            assert_eq!(bits(&widest), bits(&avx2));
        }
    }

    #[test]
    fn streams_differ_by_seed_and_id() {
        let a = CounterStream::new(1, 0);
        assert_ne!(a, CounterStream::new(2, 0));
        assert_ne!(a, CounterStream::new(1, 1));
        assert_eq!(a, CounterStream::new(1, 0));
        assert_eq!(a.gamma & 1, 1);
        assert_ne!(a.u64_at(0), CounterStream::new(1, 1).u64_at(0));
    }

    /// Moments, tail probabilities and independence of 2·10⁶ normals against N(0, 1), each
    /// within 5 standard errors.
    #[test]
    fn normals_have_the_standard_normal_distribution() {
        let n = 2_000_000usize;
        let mut v = vec![0.0; n];
        CounterStream::new(9, 3).fill_normal(0, &mut v);
        let nf = n as f64;
        let mean = v.iter().sum::<f64>() / nf;
        let m2 = v.iter().map(|x| x * x).sum::<f64>() / nf;
        let m3 = v.iter().map(|x| x * x * x).sum::<f64>() / nf;
        let m4 = v.iter().map(|x| x.powi(4)).sum::<f64>() / nf;
        // Standard errors: sd(x)=1, sd(x²)=√2, sd(x³)=√15, sd(x⁴)=√96.
        assert!(mean.abs() < 5.0 / nf.sqrt(), "mean {mean}");
        assert!(
            (m2 - 1.0).abs() < 5.0 * 2f64.sqrt() / nf.sqrt(),
            "E x² {m2}"
        );
        assert!(m3.abs() < 5.0 * 15f64.sqrt() / nf.sqrt(), "E x³ {m3}");
        assert!(
            (m4 - 3.0).abs() < 5.0 * 96f64.sqrt() / nf.sqrt(),
            "E x⁴ {m4}"
        );
        // Kolmogorov–Smirnov on the CDF at fixed points; P(|Z| > 3) and P(Z > 4).
        for (x, cdf) in [
            (-2.0, 0.022_750_131_948_179),
            (-1.0, 0.158_655_253_931_457),
            (0.0, 0.5),
            (0.5, 0.691_462_461_274_013),
            (1.5, 0.933_192_798_731_142),
        ] {
            let frac = v.iter().filter(|&&z| z <= x).count() as f64 / nf;
            let se = (cdf * (1.0 - cdf) / nf).sqrt();
            assert!(
                (frac - cdf).abs() < 5.0 * se,
                "P(Z ≤ {x}) = {frac}, want {cdf}"
            );
        }
        let p3 = 0.002_699_796_063_260_2;
        let frac3 = v.iter().filter(|z| z.abs() > 3.0).count() as f64 / nf;
        assert!(
            (frac3 - p3).abs() < 5.0 * (p3 / nf).sqrt(),
            "P(|Z| > 3) = {frac3}"
        );
        // Within a group the cos and sin normals share a radius: they must be uncorrelated and
        // E[x² y²] = 1; so must neighbours in the stream.
        let (mut cs, mut cs2, mut nb) = (0.0, 0.0, 0.0);
        for gr in v.chunks_exact(NORMAL_GROUP) {
            for l in 0..LANES {
                cs += gr[l] * gr[LANES + l];
                cs2 += gr[l] * gr[l] * gr[LANES + l] * gr[LANES + l];
            }
        }
        for w in v.windows(2) {
            nb += w[0] * w[1];
        }
        let pairs = nf / 2.0;
        assert!(
            (cs / pairs).abs() < 5.0 / pairs.sqrt(),
            "E[cos·sin] {}",
            cs / pairs
        );
        assert!(
            (cs2 / pairs - 1.0).abs() < 5.0 * 8f64.sqrt() / pairs.sqrt(),
            "E[x²y²] {}",
            cs2 / pairs
        );
        assert!((nb / nf).abs() < 5.0 / nf.sqrt(), "lag-1 {}", nb / nf);
    }

    #[test]
    fn uniforms_are_uniform() {
        let n = 1_000_000;
        let mut v = vec![0.0; n];
        CounterStream::new(5, 11).fill_uniform(0, &mut v);
        let nf = n as f64;
        let mean = v.iter().sum::<f64>() / nf;
        assert!((mean - 0.5).abs() < 5.0 * (1.0 / 12.0 / nf).sqrt());
        for bin in 0..10 {
            let lo = bin as f64 / 10.0;
            let frac = v.iter().filter(|&&u| u >= lo && u < lo + 0.1).count() as f64 / nf;
            assert!(
                (frac - 0.1).abs() < 5.0 * (0.09 / nf).sqrt(),
                "bin {bin}: {frac}"
            );
        }
    }
}
