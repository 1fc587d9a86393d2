//! Value dictionaries and constitutions (THEORY §5).
//!
//! The model encodes value systems θ₁..θ_m as directions `D = [d₁..d_m]` (linearly independent
//! columns). Its raw evaluative readout is `r = Dλ + r_⊥` with `λ = D⁺ r`. A constitution
//! `C = (S, ω)` activates the listed systems at their encoded strength:
//!
//! `j_C = Σ_{i∈S} ω_i λ_i d_i`, which equals `P_C r` with `P_C = D E_S D⁺` when ω ≡ 1.
//!
//! An arbitrary orthogonal projection P gives `j = P r` (T3b); a judgment direction can also be
//! given outright.

use crate::linalg::{dot, Cholesky, Mat};

/// Errors building a dictionary or a judgment direction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstitutionError {
    /// The dictionary's columns are linearly dependent (DᵀD singular).
    #[error("dictionary: vectors are linearly dependent")]
    DependentDictionary,
    /// A principle index is out of range.
    #[error(
        "constitution.principles: index {index} out of range (the dictionary has {m} vectors)"
    )]
    IndexOutOfRange { index: usize, m: usize },
}

/// The value dictionary `D` (`d × m`, columns `d_i`).
#[derive(Clone, Debug)]
pub struct Dictionary {
    columns: Vec<Vec<f64>>,
    gram_chol: Cholesky,
}

impl Dictionary {
    /// Builds `D` from its m column vectors (each of length d).
    ///
    /// # Errors
    /// [`ConstitutionError::DependentDictionary`] when `DᵀD` is singular.
    pub fn new(columns: Vec<Vec<f64>>) -> Result<Self, ConstitutionError> {
        let m = columns.len();
        let gram = Mat::from_fn(m, m, |i, j| dot(&columns[i], &columns[j]));
        let scale = (0..m).map(|i| gram.get(i, i)).fold(0.0, f64::max);
        let gram_chol = Cholesky::new(&gram).map_err(|_| ConstitutionError::DependentDictionary)?;
        // Reject numerically dependent columns too: the smallest pivot relative to the largest.
        let min_pivot = (0..m)
            .map(|i| gram_chol.l().get(i, i).powi(2))
            .fold(f64::INFINITY, f64::min);
        if min_pivot < 1e-12 * scale {
            return Err(ConstitutionError::DependentDictionary);
        }
        Ok(Self { columns, gram_chol })
    }

    /// Number of value systems m.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when the dictionary holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Column `d_i`.
    pub fn column(&self, i: usize) -> &[f64] {
        &self.columns[i]
    }

    /// All columns.
    pub fn columns(&self) -> &[Vec<f64>] {
        &self.columns
    }

    /// `λ = D⁺ r = (DᵀD)⁻¹ Dᵀ r`.
    pub fn coefficients(&self, r: &[f64]) -> Vec<f64> {
        let dtr: Vec<f64> = self.columns.iter().map(|c| dot(c, r)).collect();
        self.gram_chol.solve(&dtr)
    }

    /// `D λ`.
    pub fn combine(&self, lambda: &[f64]) -> Vec<f64> {
        let d = self.columns.first().map_or(0, Vec::len);
        let mut out = vec![0.0; d];
        for (c, &l) in self.columns.iter().zip(lambda) {
            crate::linalg::axpy(l, c, &mut out);
        }
        out
    }

    /// The oblique projection `P_C = D E_S D⁺` onto `span{d_i : i ∈ S}`.
    pub fn projection(&self, s: &[usize]) -> Mat {
        let d = self.columns.first().map_or(0, Vec::len);
        let e_i =
            |i: usize| -> Vec<f64> { (0..d).map(|k| if k == i { 1.0 } else { 0.0 }).collect() };
        // Column k of P_C is D E_S D⁺ e_k.
        let cols: Vec<Vec<f64>> = (0..d)
            .map(|k| {
                let lam = self.coefficients(&e_i(k));
                let masked: Vec<f64> = lam
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| if s.contains(&i) { l } else { 0.0 })
                    .collect();
                self.combine(&masked)
            })
            .collect();
        Mat::from_fn(d, d, |i, k| cols[k][i])
    }
}

/// A constitution in the linear model.
#[derive(Clone, Debug, PartialEq)]
pub enum Constitution {
    /// Dictionary principles S with weights ω: `j = Σ_{i∈S} ω_i λ_i d_i`.
    Principles {
        indices: Vec<usize>,
        weights: Vec<f64>,
    },
    /// An orthogonal projection P: `j = P r`.
    Projection(Mat),
    /// An explicit judgment direction.
    Direction(Vec<f64>),
}

impl Constitution {
    /// Principles with unit weights.
    pub fn principles(indices: &[usize]) -> Self {
        Constitution::Principles {
            indices: indices.to_vec(),
            weights: vec![1.0; indices.len()],
        }
    }

    /// The judgment direction `j_C`. `dict` and `lambda` are needed for principles, `r` for a
    /// projection (callers validate presence; see [`crate::spec`]).
    ///
    /// # Errors
    /// [`ConstitutionError::IndexOutOfRange`] for a principle index ≥ m.
    pub fn judgment_direction(
        &self,
        dict: Option<&Dictionary>,
        lambda: Option<&[f64]>,
        r: Option<&[f64]>,
    ) -> Result<Vec<f64>, ConstitutionError> {
        match self {
            Constitution::Principles { indices, weights } => {
                let dict = dict.expect("principles need a dictionary");
                let lambda = lambda.expect("principles need λ");
                let mut coef = vec![0.0; dict.len()];
                for (&i, &w) in indices.iter().zip(weights) {
                    if i >= dict.len() {
                        return Err(ConstitutionError::IndexOutOfRange {
                            index: i,
                            m: dict.len(),
                        });
                    }
                    coef[i] += w * lambda[i];
                }
                Ok(dict.combine(&coef))
            }
            Constitution::Projection(p) => Ok(p.matvec(r.expect("a projection needs r"))),
            Constitution::Direction(j) => Ok(j.clone()),
        }
    }
}
