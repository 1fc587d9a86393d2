//! Low-rank value subspaces (THEORY T7c): contrast differences, their PCA spectrum, orthonormal
//! bases, projection/ablation and principal angles.

use faer::Mat;
use serde::{Deserialize, Serialize};

use crate::contrast::ContrastSet;
use crate::direction::Direction;
use crate::error::{Error, Result};
use crate::linalg::{self, dot, norm};

/// Which differences the PCA is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DifferenceSource {
    /// `h_pos − h_neg` for each explicit pair; falls back to class-conditional differences
    /// when the set has no pairs.
    #[default]
    PairedOrClass,
    /// `h_pos − h_neg` for each explicit pair (error when the set has none).
    Paired,
    /// Deterministic class-conditional differences: `h_i − mean(h|−)` for each positive `i`
    /// and `mean(h|+) − h_j` for each negative `j` (no random pairing, no seed).
    ClassConditional,
}

/// A matrix of difference vectors `Δ_i ∈ R^d` (rows: differences, cols: d), in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Differences {
    d: usize,
    /// `[m, d]` row-major.
    data: Vec<f64>,
}

impl Differences {
    /// From a row-major `[m, d]` buffer.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::LengthMismatch`] when `data.len()` is not a multiple of `d`,
    /// [`Error::NonFinite`] naming row and column.
    pub fn from_flat(data: Vec<f64>, d: usize) -> Result<Self> {
        if d == 0 || data.is_empty() {
            return Err(Error::Empty {
                what: "differences",
            });
        }
        if data.len() % d != 0 {
            return Err(Error::LengthMismatch {
                what: "differences buffer vs d",
                expected: (data.len() / d + 1) * d,
                got: data.len(),
            });
        }
        if let Some((k, &value)) = data.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "difference",
                row: k / d,
                col: k % d,
                value,
            });
        }
        Ok(Differences { d, data })
    }

    /// The differences of `set` chosen by `source`.
    ///
    /// # Errors
    /// [`Error::BadPair`] when [`DifferenceSource::Paired`] is asked of a set without pairs (or
    /// with an empty pair list); [`Error::TooFewPerClass`] when a class is empty.
    pub fn of_set(set: &ContrastSet, source: DifferenceSource) -> Result<Self> {
        let d = set.d();
        let paired = match (source, set.pairs()) {
            (DifferenceSource::ClassConditional, _) => None,
            (_, Some(p)) if !p.is_empty() => Some(p),
            (DifferenceSource::Paired, _) => {
                return Err(Error::BadPair {
                    pair: 0,
                    reason: "paired differences requested but the set has no pairs".into(),
                })
            }
            (DifferenceSource::PairedOrClass, _) => None,
        };
        let mut data = Vec::new();
        if let Some(pairs) = paired {
            data.reserve(pairs.len() * d);
            for &(i, j) in pairs {
                data.extend(
                    set.row(i)
                        .iter()
                        .zip(set.row(j))
                        .map(|(&a, &b)| f64::from(a) - f64::from(b)),
                );
            }
        } else {
            set.require_per_class(1)?;
            let (mp, mn) = set.class_means();
            data.reserve(set.n() * d);
            for i in 0..set.n() {
                let r = set.row(i);
                if set.labels()[i] {
                    data.extend(r.iter().zip(&mn).map(|(&a, b)| f64::from(a) - b));
                } else {
                    data.extend(mp.iter().zip(r).map(|(a, &b)| a - f64::from(b)));
                }
            }
        }
        Ok(Differences { d, data })
    }

    /// Number of differences `m`.
    pub fn m(&self) -> usize {
        self.data.len() / self.d
    }

    /// Width `d`.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i ≥ m`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}

/// The eigenvalues of the (uncentred or centred) second-moment matrix of the differences,
/// `S = (1/m) Σ_i Δ_i Δ_iᵀ`, descending, length `d` (zeros beyond rank when `m < d`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spectrum {
    /// Eigenvalues λ_1 ≥ … ≥ λ_d ≥ 0.
    pub eigenvalues: Vec<f64>,
    /// Number of differences `m`.
    pub n_differences: usize,
    /// Whether the differences were centred (covariance) or not (second moment).
    pub centred: bool,
}

impl Spectrum {
    /// Total variance `tr S = Σ_i λ_i`.
    pub fn total(&self) -> f64 {
        self.eigenvalues.iter().sum()
    }

    /// Explained variance of the top-p subspace, `Σ_{i≤p} λ_i / Σ_i λ_i` (1 for p ≥ d; 0 for
    /// p = 0 or a zero spectrum).
    pub fn explained_variance(&self, p: usize) -> f64 {
        let total = self.total();
        if total <= 0.0 {
            return 0.0;
        }
        let top: f64 = self.eigenvalues.iter().take(p).sum();
        (top / total).clamp(0.0, 1.0)
    }
}

/// Result of [`pca`]: the full spectrum and the top-k subspace.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaFit {
    /// All eigenvalues, descending.
    pub spectrum: Spectrum,
    /// Span of the top-k eigenvectors (rows in eigenvalue order; signs arbitrary).
    pub subspace: Subspace,
}

/// PCA of difference vectors: eigen-decomposition of `S = (1/m) Σ_i (Δ_i − μ)(Δ_i − μ)ᵀ` with
/// `μ = mean Δ` if `centre`, else `μ = 0` (uncentred: the mean difference is part of the
/// signal, which is what a value subspace is meant to contain).
///
/// Under THEORY T7c, `Cov(Δh) = C diag(a²) Cᵀ + 2s² I`: the top-p eigenvectors span
/// `V = span C` and the remaining eigenvalues are `2s²` (up to Marchenko–Pastur spread
/// `2s²(1 ± √(d/m))²` at finite m).
///
/// Cost: `O(m d²) + O(d³)` when `m ≥ d`; when `m < d` the `m × m` Gram matrix is decomposed
/// instead (`O(m² d) + O(m³)`) and `v = Δᵀu / √(m λ)`.
///
/// # Errors
/// [`Error::InvalidParameter`] for `k = 0` or `k > min(m, d)`; [`Error::Decomposition`] if the
/// eigen-solver fails; [`Error::RankDeficient`] if fewer than k eigenvalues are positive.
pub fn pca(diffs: &Differences, k: usize, centre: bool) -> Result<PcaFit> {
    let (m, d) = (diffs.m(), diffs.d());
    if k == 0 || k > m.min(d) {
        return Err(Error::InvalidParameter {
            name: "k",
            value: k.to_string(),
            reason: "need 1 ≤ k ≤ min(number of differences, d)",
        });
    }
    let mu = if centre {
        let mut mu = vec![0.0; d];
        for i in 0..m {
            for (a, x) in mu.iter_mut().zip(diffs.row(i)) {
                *a += x;
            }
        }
        mu.iter_mut().for_each(|a| *a /= m as f64);
        mu
    } else {
        vec![0.0; d]
    };
    // a: [m, d], rows Δ_i − μ, scaled by 1/√m so that aᵀa = S.
    let scale = 1.0 / (m as f64).sqrt();
    let a = Mat::from_fn(m, d, |i, j| (diffs.data[i * d + j] - mu[j]) * scale);
    let mut basis = Vec::with_capacity(k * d);
    let mut eigenvalues;
    if m >= d {
        let s = linalg::gram_t(a.as_ref());
        let (vals, vecs) = linalg::sym_eigen_desc(&s, "PCA eigen-decomposition")?;
        eigenvalues = vals;
        basis.extend_from_slice(&vecs[..k * d]);
    } else {
        let g = linalg::gram(a.as_ref());
        let (vals, vecs) = linalg::sym_eigen_desc(&g, "PCA Gram eigen-decomposition")?;
        for (r, &lambda) in vals.iter().take(k).enumerate() {
            if lambda <= 0.0 {
                return Err(Error::RankDeficient { index: r });
            }
            let u = &vecs[r * m..(r + 1) * m];
            // v = aᵀ u / √λ has unit norm since ‖aᵀu‖² = uᵀ(a aᵀ)u = λ.
            let inv = 1.0 / lambda.sqrt();
            for j in 0..d {
                let mut acc = 0.0;
                for (i, ui) in u.iter().enumerate() {
                    acc += a[(i, j)] * ui;
                }
                basis.push(acc * inv);
            }
        }
        eigenvalues = vals;
        eigenvalues.resize(d, 0.0);
    }
    // Round-off can make tiny eigenvalues slightly negative; the matrix is PSD.
    eigenvalues.iter_mut().for_each(|l| *l = l.max(0.0));
    if eigenvalues[k - 1] <= 0.0 {
        return Err(Error::RankDeficient { index: k - 1 });
    }
    Ok(PcaFit {
        spectrum: Spectrum {
            eigenvalues,
            n_differences: m,
            centred: centre,
        },
        subspace: Subspace::from_orthonormal_unchecked(basis, d),
    })
}

/// A k-dimensional subspace of `R^d` given by an orthonormal basis `B` (`[k, d]`, `B Bᵀ = I_k`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SubspaceRepr", into = "SubspaceRepr")]
pub struct Subspace {
    d: usize,
    basis: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubspaceRepr {
    d: usize,
    basis: Vec<Vec<f64>>,
}

impl TryFrom<SubspaceRepr> for Subspace {
    type Error = Error;
    fn try_from(r: SubspaceRepr) -> Result<Self> {
        if let Some((row, v)) = r.basis.iter().enumerate().find(|(_, v)| v.len() != r.d) {
            return Err(Error::RaggedRows {
                row,
                expected: r.d,
                got: v.len(),
            });
        }
        let k = r.basis.len();
        let flat: Vec<f64> = r.basis.into_iter().flatten().collect();
        let s = Subspace {
            d: r.d,
            basis: flat,
        };
        for i in 0..k {
            for j in 0..=i {
                let g = dot(s.basis_vector(i), s.basis_vector(j));
                let want = if i == j { 1.0 } else { 0.0 };
                if (g - want).abs() > 1e-9 || !g.is_finite() {
                    return Err(Error::InvalidParameter {
                        name: "basis",
                        value: format!("<b{i}, b{j}> = {g}"),
                        reason: "a stored subspace basis must be orthonormal",
                    });
                }
            }
        }
        Ok(s)
    }
}

impl From<Subspace> for SubspaceRepr {
    fn from(s: Subspace) -> Self {
        let basis = s.basis.chunks(s.d).map(<[f64]>::to_vec).collect();
        SubspaceRepr { d: s.d, basis }
    }
}

impl Subspace {
    fn from_orthonormal_unchecked(basis: Vec<f64>, d: usize) -> Self {
        Subspace { d, basis }
    }

    /// Orthonormalise `vectors` (modified Gram–Schmidt, applied twice for stability) in order.
    ///
    /// # Errors
    /// [`Error::Empty`] for no vectors or `d = 0`; [`Error::RaggedRows`];
    /// [`Error::NonFinite`]; [`Error::RankDeficient`] naming the first vector that lies
    /// (to relative tolerance 1e-10) in the span of the previous ones.
    pub fn from_vectors(vectors: &[Vec<f64>]) -> Result<Self> {
        let d = vectors.first().map(Vec::len).ok_or(Error::Empty {
            what: "subspace vectors",
        })?;
        if d == 0 {
            return Err(Error::Empty {
                what: "subspace vectors",
            });
        }
        let mut basis: Vec<f64> = Vec::with_capacity(vectors.len() * d);
        for (idx, v) in vectors.iter().enumerate() {
            if v.len() != d {
                return Err(Error::RaggedRows {
                    row: idx,
                    expected: d,
                    got: v.len(),
                });
            }
            if let Some((col, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(Error::NonFinite {
                    what: "subspace vector",
                    row: idx,
                    col,
                    value,
                });
            }
            let n0 = norm(v);
            let mut w = v.clone();
            for _ in 0..2 {
                for b in basis.chunks(d) {
                    let c = dot(&w, b);
                    w.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
                }
            }
            let n = norm(&w);
            if n0 == 0.0 || n <= 1e-10 * n0 {
                return Err(Error::RankDeficient { index: idx });
            }
            basis.extend(w.into_iter().map(|x| x / n));
        }
        Ok(Subspace { d, basis })
    }

    /// The span of some directions.
    ///
    /// # Errors
    /// As [`Subspace::from_vectors`].
    pub fn from_directions(directions: &[Direction]) -> Result<Self> {
        let v: Vec<Vec<f64>> = directions.iter().map(|d| d.as_slice().to_vec()).collect();
        Self::from_vectors(&v)
    }

    /// A subspace with the first `k` rows of this basis.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `k = 0` or `k > self.k()`.
    pub fn truncate(&self, k: usize) -> Result<Subspace> {
        if k == 0 || k > self.k() {
            return Err(Error::InvalidParameter {
                name: "k",
                value: k.to_string(),
                reason: "need 1 ≤ k ≤ dimension of the subspace",
            });
        }
        Ok(Subspace {
            d: self.d,
            basis: self.basis[..k * self.d].to_vec(),
        })
    }

    /// Dimension `k` of the subspace.
    pub fn k(&self) -> usize {
        self.basis.len() / self.d
    }

    /// Ambient dimension `d`.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Basis vector `i` (unit norm).
    ///
    /// # Panics
    /// If `i ≥ k`, like slice indexing.
    pub fn basis_vector(&self, i: usize) -> &[f64] {
        &self.basis[i * self.d..(i + 1) * self.d]
    }

    fn check(&self, x: &[f64]) -> Result<()> {
        if x.len() != self.d {
            return Err(Error::LengthMismatch {
                what: "subspace vs vector",
                expected: self.d,
                got: x.len(),
            });
        }
        Ok(())
    }

    /// Orthogonal projection `P x = Bᵀ B x`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `x.len() != d`.
    pub fn project(&self, x: &[f64]) -> Result<Vec<f64>> {
        self.check(x)?;
        let mut out = vec![0.0; self.d];
        for b in self.basis.chunks(self.d) {
            let c = dot(b, x);
            out.iter_mut().zip(b).for_each(|(o, y)| *o += c * y);
        }
        Ok(out)
    }

    /// Ablation `(I − P) x` (THEORY T7b/T7c).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `x.len() != d`.
    pub fn ablate(&self, x: &[f64]) -> Result<Vec<f64>> {
        let p = self.project(x)?;
        Ok(x.iter().zip(p).map(|(a, b)| a - b).collect())
    }

    /// Fraction of `‖x‖²` inside the subspace, `‖P x‖² / ‖x‖² ∈ [0, 1]`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::ZeroVector`] for `x = 0`.
    pub fn fraction_inside(&self, x: &[f64]) -> Result<f64> {
        self.check(x)?;
        let total = dot(x, x);
        if total == 0.0 {
            return Err(Error::ZeroVector {
                what: "vector measured against a subspace",
            });
        }
        let inside: f64 = self.basis.chunks(self.d).map(|b| dot(b, x).powi(2)).sum();
        Ok((inside / total).clamp(0.0, 1.0))
    }

    /// Principal angles `0 ≤ θ_1 ≤ … ≤ θ_r ≤ π/2` (radians, `r = min(k₁, k₂)`) between two
    /// subspaces: `cos θ_i = σ_i(B₁ B₂ᵀ)`, the singular values of the `k₁ × k₂` matrix of
    /// basis inner products.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for different ambient dimensions; [`Error::Decomposition`] if
    /// the SVD fails.
    pub fn principal_angles(&self, other: &Subspace) -> Result<Vec<f64>> {
        if self.d != other.d {
            return Err(Error::LengthMismatch {
                what: "principal angles: ambient dimensions",
                expected: self.d,
                got: other.d,
            });
        }
        let m = Mat::from_fn(self.k(), other.k(), |i, j| {
            dot(self.basis_vector(i), other.basis_vector(j))
        });
        let sv = linalg::singular_values(&m, "principal angles SVD")?;
        let r = self.k().min(other.k());
        Ok(sv
            .into_iter()
            .take(r)
            .map(|s| s.clamp(-1.0, 1.0).acos())
            .collect())
    }
}
