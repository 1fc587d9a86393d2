//! Lemma M: the alignment of a mixture of two directions (THEORY §6).
//!
//! With `a_w = a(w)`, `a_v = a(v)`, `ρ = ρ(w, v)` and `t = η sd(s_v)/sd(s_w)` for `w + ηv`:
//!
//! `a(w + ηv) = (a_w + t a_v) / √(1 + 2ρt + t²)`,
//! `sign d/dt = sign[(a_v − ρ a_w) + t (ρ a_v − a_w)]`.

use serde::Serialize;

/// The shape of `t ↦ a(w + ηv)` on `t ≥ 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MixShape {
    /// Interior maximum at `t*`, above both endpoints.
    InteriorPeak,
    /// Increases towards `a_v`.
    Increasing,
    /// Decreases, then increases; the supremum is `max(a_w, a_v)`.
    DipThenRise,
    /// Decreases from `a_w`.
    Decreasing,
}

/// Supremum of the mixed alignment over `t ≥ 0` (Lemma M).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MixSup {
    /// Which case of Lemma M applies.
    pub shape: MixShape,
    /// The supremum.
    pub sup: f64,
    /// Where it is attained (`None` when only approached as t → ∞).
    pub t_star: Option<f64>,
}

/// `a(w + ηv)` as a function of the standardised mixing weight `t` (Lemma M).
pub fn mixed_alignment(a_w: f64, a_v: f64, rho: f64, t: f64) -> f64 {
    (a_w + t * a_v) / (1.0 + 2.0 * rho * t + t * t).max(f64::MIN_POSITIVE).sqrt()
}

/// The numerator of `d a / d t`: `(a_v − ρ a_w) + t (ρ a_v − a_w)`; its sign is the slope's.
pub fn mixed_slope_numerator(a_w: f64, a_v: f64, rho: f64, t: f64) -> f64 {
    (a_v - rho * a_w) + t * (rho * a_v - a_w)
}

/// The supremum over `t ≥ 0` and the case of Lemma M.
///
/// Interior peak: `t* = (a_v − ρ a_w)/(a_w − ρ a_v)` with value
/// `R = √((a_w² + a_v² − 2ρ a_w a_v)/(1 − ρ²))`, the multiple correlation of u* on (s_w, s_v).
pub fn mixed_sup(a_w: f64, a_v: f64, rho: f64) -> MixSup {
    let up = a_v > rho * a_w;
    let falls_later = a_w > rho * a_v;
    if up && falls_later {
        let t_star = (a_v - rho * a_w) / (a_w - rho * a_v);
        let r2 = (a_w * a_w + a_v * a_v - 2.0 * rho * a_w * a_v) / (1.0 - rho * rho);
        MixSup {
            shape: MixShape::InteriorPeak,
            sup: r2.max(0.0).sqrt(),
            t_star: Some(t_star),
        }
    } else if up {
        MixSup {
            shape: MixShape::Increasing,
            sup: a_v,
            t_star: None,
        }
    } else if a_w < rho * a_v {
        let (sup, t_star) = if a_w >= a_v {
            (a_w, Some(0.0))
        } else {
            (a_v, None)
        };
        MixSup {
            shape: MixShape::DipThenRise,
            sup,
            t_star,
        }
    } else {
        MixSup {
            shape: MixShape::Decreasing,
            sup: a_w,
            t_star: Some(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theory_example_peak() {
        // THEORY T1(d): a(g) = 0.5, a(j) = 0.4, ρ = 0.2 gives slope numerator +0.3, peak 0.586.
        assert!((mixed_slope_numerator(0.5, 0.4, 0.2, 0.0) - 0.3).abs() < 1e-12);
        let s = mixed_sup(0.5, 0.4, 0.2);
        assert_eq!(s.shape, MixShape::InteriorPeak);
        assert!((s.sup - 0.586).abs() < 5e-4, "{}", s.sup);
        let t = s.t_star.unwrap();
        assert!((mixed_alignment(0.5, 0.4, 0.2, t) - s.sup).abs() < 1e-12);
    }

    #[test]
    fn sup_dominates_a_grid() {
        for &(aw, av, rho) in &[
            (0.3, 0.8, 0.1),
            (0.8, 0.3, 0.9),
            (0.2, -0.4, -0.5),
            (-0.2, 0.1, 0.7),
            (0.4, 0.35, 0.95),
        ] {
            let s = mixed_sup(aw, av, rho);
            let grid_max = (0..200_000)
                .map(|i| mixed_alignment(aw, av, rho, i as f64 * 0.001))
                .fold(f64::MIN, f64::max);
            assert!(
                s.sup >= grid_max - 1e-9,
                "{aw} {av} {rho}: {s:?} < {grid_max}"
            );
            assert!(
                s.sup - grid_max < 5e-3,
                "{aw} {av} {rho}: {s:?} vs {grid_max}"
            );
        }
    }
}
