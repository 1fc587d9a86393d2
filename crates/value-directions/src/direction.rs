//! [`Direction`]: a unit-norm, oriented vector in activation space with its provenance.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::linalg::{dot, norm};

/// Which estimator produced a direction. Parses from and prints as the CLI names
/// `diff-of-means`, `probe`, `lda`, `pca` (aliases: `dom`, `linear-probe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// Difference of class means, `mean(h | +) − mean(h | −)` (estimates `c`).
    #[serde(rename = "diff-of-means")]
    DiffOfMeans,
    /// L2-regularised logistic regression (estimates `w* = Σ_h⁻¹ c`).
    #[serde(rename = "probe")]
    LinearProbe,
    /// Linear discriminant with a shrunk pooled covariance (estimates `w*`).
    #[serde(rename = "lda")]
    Lda,
    /// Top principal component of contrast differences.
    #[serde(rename = "pca")]
    Pca,
}

impl Method {
    /// Every method, in a fixed order.
    pub const ALL: [Method; 4] = [
        Method::DiffOfMeans,
        Method::LinearProbe,
        Method::Lda,
        Method::Pca,
    ];

    /// The canonical name (what [`fmt::Display`] prints and [`FromStr`] accepts).
    pub fn name(self) -> &'static str {
        match self {
            Method::DiffOfMeans => "diff-of-means",
            Method::LinearProbe => "probe",
            Method::Lda => "lda",
            Method::Pca => "pca",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    /// # Errors
    /// [`Error::UnknownMethod`] for any other string (case-insensitive match).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "diff-of-means" | "dom" => Ok(Method::DiffOfMeans),
            "probe" | "linear-probe" => Ok(Method::LinearProbe),
            "lda" => Ok(Method::Lda),
            "pca" => Ok(Method::Pca),
            _ => Err(Error::UnknownMethod(s.to_owned())),
        }
    }
}

/// How the sign of a direction `v` was fixed. Every estimator orients so that positives
/// (harmless, label +1) project higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SignRule {
    /// `<v, mean(h|+) − mean(h|−)> ≥ 0`: the positive class mean projects higher.
    #[default]
    MeanDifference,
    /// On a paired set, at least half of the pairs have `<v, h_pos − h_neg> > 0` (the rule of
    /// repeng's PCA). Falls back to [`SignRule::MeanDifference`] when the set has no pairs.
    PairMajority,
    /// The caller built the vector by hand and vouches for its sign.
    AsGiven,
}

/// Where the activations came from. Plain strings: this crate knows nothing of the runtime's
/// typed hook points; the binary prints them (`blocks.6.hook_resid_post`, `mean`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// 0-based block index ℓ.
    pub layer: Option<usize>,
    /// TransformerLens hook name, e.g. `blocks.6.hook_resid_post`.
    pub hook: Option<String>,
    /// Pooling rule, e.g. `mean` or `last`.
    pub pooling: Option<String>,
}

/// What a [`Direction`] is and how it was obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Layer, hook and pooling of the activations.
    pub site: Site,
    /// The estimator; `None` for a hand-built vector.
    pub method: Option<Method>,
    /// How the sign was fixed.
    pub sign_rule: SignRule,
    /// Norm of the estimator's raw vector before normalisation (for diff of means,
    /// `‖mean(h|+) − mean(h|−)‖`, in activation units).
    pub raw_norm: f64,
    /// Mean residual norm of the layer, `mean_i ‖h_i‖` over the items used (0 if unknown).
    /// Steering scales are expressed in this unit.
    pub mean_resid_norm: f64,
    /// Positive items used.
    pub n_pos: usize,
    /// Negative items used.
    pub n_neg: usize,
}

impl Default for Provenance {
    fn default() -> Self {
        Provenance {
            site: Site::default(),
            method: None,
            sign_rule: SignRule::AsGiven,
            raw_norm: 0.0,
            mean_resid_norm: 0.0,
            n_pos: 0,
            n_neg: 0,
        }
    }
}

/// A unit vector `v ∈ R^d`, `‖v‖₂ = 1`, oriented so that positives project higher, with its
/// [`Provenance`].
///
/// Invariants hold from construction on: [`Direction::new`] normalises and refuses zero or
/// non-finite input, and deserialisation checks `|‖v‖ − 1| ≤ 1e-9` without renormalising (so a
/// save/load round trip is bit-exact).
///
/// ```
/// use value_directions::{Direction, Provenance};
/// let v = Direction::new(vec![3.0, 4.0], Provenance::default()).unwrap();
/// assert_eq!(v.as_slice(), &[0.6, 0.8]);
/// assert!((v.dot(&[1.0, 1.0]).unwrap() - 1.4).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DirectionRepr", into = "DirectionRepr")]
pub struct Direction {
    vector: Vec<f64>,
    provenance: Provenance,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectionRepr {
    vector: Vec<f64>,
    provenance: Provenance,
}

impl TryFrom<DirectionRepr> for Direction {
    type Error = Error;
    fn try_from(r: DirectionRepr) -> Result<Self> {
        check_finite(&r.vector)?;
        let n = norm(&r.vector);
        if n == 0.0 {
            return Err(Error::ZeroVector { what: "direction" });
        }
        if (n - 1.0).abs() > 1e-9 {
            return Err(Error::InvalidParameter {
                name: "vector",
                value: format!("norm {n}"),
                reason: "a stored direction must have unit norm",
            });
        }
        Ok(Direction {
            vector: r.vector,
            provenance: r.provenance,
        })
    }
}

impl From<Direction> for DirectionRepr {
    fn from(d: Direction) -> Self {
        DirectionRepr {
            vector: d.vector,
            provenance: d.provenance,
        }
    }
}

fn check_finite(v: &[f64]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::Empty { what: "direction" });
    }
    if let Some((col, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::NonFinite {
            what: "direction",
            row: 0,
            col,
            value,
        });
    }
    Ok(())
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

impl Direction {
    /// `v / ‖v‖₂`. The sign is kept as given; `provenance.raw_norm` is set to `‖v‖₂` if it
    /// was 0.
    ///
    /// # Errors
    /// [`Error::Empty`] for an empty vector, [`Error::NonFinite`] for NaN/∞ entries,
    /// [`Error::ZeroVector`] for a zero vector.
    pub fn new(vector: Vec<f64>, mut provenance: Provenance) -> Result<Self> {
        check_finite(&vector)?;
        let n = norm(&vector);
        if n == 0.0 || !n.is_finite() {
            return Err(Error::ZeroVector { what: "direction" });
        }
        if provenance.raw_norm == 0.0 {
            provenance.raw_norm = n;
        }
        Ok(Direction {
            vector: vector.into_iter().map(|x| x / n).collect(),
            provenance,
        })
    }

    /// Shorthand for [`Direction::new`] with [`Provenance::default`].
    ///
    /// # Errors
    /// As [`Direction::new`].
    pub fn from_vector(vector: Vec<f64>) -> Result<Self> {
        Self::new(vector, Provenance::default())
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.vector.len()
    }

    /// The unit vector.
    pub fn as_slice(&self) -> &[f64] {
        &self.vector
    }

    /// The unit vector in f32 (for export).
    pub fn to_f32(&self) -> Vec<f32> {
        self.vector.iter().map(|&x| x as f32).collect()
    }

    /// Where it came from.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Replace the site (layer, hook, pooling); the vector is unchanged.
    pub fn with_site(mut self, site: Site) -> Self {
        self.provenance.site = site;
        self
    }

    /// Score `<v, x>` accumulated in f64.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `x.len() != d`.
    pub fn dot(&self, x: &[f64]) -> Result<f64> {
        check_len("direction · vector", self.dim(), x.len())?;
        Ok(dot(&self.vector, x))
    }

    /// Score `<v, x>` of an f32 activation, accumulated in f64.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `x.len() != d`.
    pub fn dot_f32(&self, x: &[f32]) -> Result<f64> {
        check_len("direction · activation", self.dim(), x.len())?;
        Ok(self
            .vector
            .iter()
            .zip(x)
            .map(|(&a, &b)| a * f64::from(b))
            .sum())
    }

    /// Cosine `<u, v>` between two unit directions, in `[-1, 1]`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the dimensions differ.
    pub fn cosine(&self, other: &Direction) -> Result<f64> {
        check_len("cosine", self.dim(), other.dim())?;
        Ok(dot(&self.vector, &other.vector).clamp(-1.0, 1.0))
    }

    /// `α v`, no longer unit norm (a steering vector in activation units).
    pub fn scaled(&self, alpha: f64) -> Vec<f64> {
        self.vector.iter().map(|x| alpha * x).collect()
    }

    /// `m · mean_resid_norm · v`: a steering vector whose size is `m` times the layer's mean
    /// residual norm (MEASURE §5 step 4).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the provenance has no positive `mean_resid_norm`.
    pub fn steering_vector(&self, multiple: f64) -> Result<Vec<f64>> {
        let r = self.provenance.mean_resid_norm;
        if !(r > 0.0 && r.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "mean_resid_norm",
                value: r.to_string(),
                reason: "steering in residual-norm units needs a positive mean residual norm",
            });
        }
        Ok(self.scaled(multiple * r))
    }

    /// Directional ablation in place: `x ← (I − v vᵀ) x`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `x.len() != d`.
    pub fn project_out(&self, x: &mut [f64]) -> Result<()> {
        let s = self.dot(x)?;
        for (xi, vi) in x.iter_mut().zip(&self.vector) {
            *xi -= s * vi;
        }
        Ok(())
    }

    /// This direction made orthogonal to `other` and renormalised:
    /// `(v − <v,u>u) / ‖v − <v,u>u‖`. Provenance is kept.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for different dimensions; [`Error::ZeroVector`] when the two
    /// are parallel.
    pub fn orthogonalised_against(&self, other: &Direction) -> Result<Direction> {
        let mut v = self.vector.clone();
        other.project_out(&mut v)?;
        let n = norm(&v);
        if n <= 1e-12 {
            return Err(Error::ZeroVector {
                what: "orthogonalised direction",
            });
        }
        Ok(Direction {
            vector: v.into_iter().map(|x| x / n).collect(),
            provenance: self.provenance.clone(),
        })
    }
}
