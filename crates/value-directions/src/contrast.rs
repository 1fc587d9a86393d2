//! [`ContrastSet`]: labelled activations `h_i ∈ R^d` (rows: items, cols: d_model), optionally
//! with explicit (positive, negative) pairs.

use crate::direction::Site;
use crate::error::{Error, Result};

/// Labelled activations of one layer. Label `true` = positive (harmless, chosen, +1),
/// `false` = negative (harmful, rejected, −1).
///
/// Invariants checked once in the constructors: every row has the same length `d ≥ 1`, every
/// value is finite, there is one label per row, and every pair `(i, j)` has `labels[i]` true
/// and `labels[j]` false. Pairs are explicit index pairs, never implied by row order.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastSet {
    d: usize,
    /// `[n, d]` row-major.
    rows: Vec<f32>,
    labels: Vec<bool>,
    pairs: Option<Vec<(usize, usize)>>,
    site: Site,
}

/// Convert ±1 labels to booleans (`+1 → true`).
///
/// # Errors
/// [`Error::InvalidParameter`] naming the first entry that is neither +1 nor −1.
pub fn labels_from_signs(signs: &[i32]) -> Result<Vec<bool>> {
    signs
        .iter()
        .enumerate()
        .map(|(i, &s)| match s {
            1 => Ok(true),
            -1 => Ok(false),
            _ => Err(Error::InvalidParameter {
                name: "label",
                value: format!("{s} (item {i})"),
                reason: "labels must be +1 or -1",
            }),
        })
        .collect()
}

impl ContrastSet {
    /// Build from one `Vec<f32>` per item.
    ///
    /// # Errors
    /// [`Error::Empty`] with no rows or zero-length rows; [`Error::RaggedRows`] naming the first
    /// row whose length differs from row 0; [`Error::LengthMismatch`] if `labels.len()` differs
    /// from the number of rows; [`Error::NonFinite`] naming row and column of a NaN/∞.
    pub fn new(rows: Vec<Vec<f32>>, labels: Vec<bool>) -> Result<Self> {
        let d = rows.first().map(Vec::len).ok_or(Error::Empty {
            what: "contrast set",
        })?;
        if let Some((row, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != d) {
            return Err(Error::RaggedRows {
                row,
                expected: d,
                got: r.len(),
            });
        }
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        Self::from_flat(flat, d, labels)
    }

    /// Build from a row-major `[n, d]` buffer.
    ///
    /// # Errors
    /// [`Error::Empty`] if `d == 0` or the buffer is empty; [`Error::LengthMismatch`] if
    /// `data.len()` is not `labels.len() · d`; [`Error::NonFinite`] naming row and column.
    pub fn from_flat(data: Vec<f32>, d: usize, labels: Vec<bool>) -> Result<Self> {
        if d == 0 || data.is_empty() {
            return Err(Error::Empty {
                what: "contrast set",
            });
        }
        if data.len() != labels.len() * d {
            return Err(Error::LengthMismatch {
                what: "rows × d vs labels × d",
                expected: labels.len() * d,
                got: data.len(),
            });
        }
        if let Some((k, &value)) = data.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "activation",
                row: k / d,
                col: k % d,
                value: f64::from(value),
            });
        }
        Ok(ContrastSet {
            d,
            rows: data,
            labels,
            pairs: None,
            site: Site::default(),
        })
    }

    /// A paired set: item `2i` is `pos[i]` (label +), item `2i+1` is `neg[i]` (label −), and
    /// pair `i` is `(2i, 2i+1)`. Pairs are stored explicitly.
    ///
    /// # Errors
    /// As [`ContrastSet::new`], plus [`Error::LengthMismatch`] if `pos.len() != neg.len()`.
    pub fn from_pairs(pos: Vec<Vec<f32>>, neg: Vec<Vec<f32>>) -> Result<Self> {
        if pos.len() != neg.len() {
            return Err(Error::LengthMismatch {
                what: "positive vs negative rows of a paired set",
                expected: pos.len(),
                got: neg.len(),
            });
        }
        let m = pos.len();
        let mut rows = Vec::with_capacity(2 * m);
        let mut labels = Vec::with_capacity(2 * m);
        for (p, n) in pos.into_iter().zip(neg) {
            rows.push(p);
            labels.push(true);
            rows.push(n);
            labels.push(false);
        }
        let set = Self::new(rows, labels)?;
        set.with_pairs((0..m).map(|i| (2 * i, 2 * i + 1)).collect())
    }

    /// Attach explicit `(positive index, negative index)` pairs.
    ///
    /// # Errors
    /// [`Error::BadPair`] naming the first pair that is out of range or not (+, −).
    pub fn with_pairs(mut self, pairs: Vec<(usize, usize)>) -> Result<Self> {
        let n = self.n();
        for (k, &(i, j)) in pairs.iter().enumerate() {
            if i >= n || j >= n {
                return Err(Error::BadPair {
                    pair: k,
                    reason: format!("index ({i}, {j}) out of range for {n} items"),
                });
            }
            if !self.labels[i] || self.labels[j] {
                return Err(Error::BadPair {
                    pair: k,
                    reason: format!("({i}, {j}) must be (positive, negative)"),
                });
            }
        }
        self.pairs = Some(pairs);
        Ok(self)
    }

    /// Attach the layer/hook/pooling the rows were read at (copied into every estimated
    /// direction's provenance).
    pub fn with_site(mut self, site: Site) -> Self {
        self.site = site;
        self
    }

    /// Number of items `n`.
    pub fn n(&self) -> usize {
        self.labels.len()
    }

    /// Width `d`.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i ≥ n`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.d..(i + 1) * self.d]
    }

    /// The `[n, d]` row-major buffer.
    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// Labels (`true` = positive).
    pub fn labels(&self) -> &[bool] {
        &self.labels
    }

    /// Explicit pairs, if any.
    pub fn pairs(&self) -> Option<&[(usize, usize)]> {
        self.pairs.as_deref()
    }

    /// Site of the activations.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// Number of positives.
    pub fn n_pos(&self) -> usize {
        self.labels.iter().filter(|&&l| l).count()
    }

    /// Number of negatives.
    pub fn n_neg(&self) -> usize {
        self.n() - self.n_pos()
    }

    /// The items `idx` (in that order; repeats allowed). Pairs whose two members are both
    /// kept are kept, re-indexed to their first occurrence.
    ///
    /// # Errors
    /// [`Error::Empty`] for an empty selection; [`Error::InvalidParameter`] for an index ≥ n.
    pub fn subset(&self, idx: &[usize]) -> Result<ContrastSet> {
        if idx.is_empty() {
            return Err(Error::Empty { what: "subset" });
        }
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.n()) {
            return Err(Error::InvalidParameter {
                name: "index",
                value: bad.to_string(),
                reason: "subset index out of range",
            });
        }
        let mut rows = Vec::with_capacity(idx.len() * self.d);
        let mut labels = Vec::with_capacity(idx.len());
        let mut new_index = vec![usize::MAX; self.n()];
        for (k, &i) in idx.iter().enumerate() {
            rows.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
            if new_index[i] == usize::MAX {
                new_index[i] = k;
            }
        }
        let pairs = self.pairs.as_ref().map(|ps| {
            ps.iter()
                .filter(|&&(i, j)| new_index[i] != usize::MAX && new_index[j] != usize::MAX)
                .map(|&(i, j)| (new_index[i], new_index[j]))
                .collect()
        });
        Ok(ContrastSet {
            d: self.d,
            rows,
            labels,
            pairs,
            site: self.site.clone(),
        })
    }

    /// Require at least `needed` items in each class.
    ///
    /// # Errors
    /// [`Error::TooFewPerClass`].
    pub fn require_per_class(&self, needed: usize) -> Result<()> {
        let (n_pos, n_neg) = (self.n_pos(), self.n_neg());
        if n_pos < needed || n_neg < needed {
            return Err(Error::TooFewPerClass {
                needed,
                n_pos,
                n_neg,
            });
        }
        Ok(())
    }

    /// Mean of the rows `idx`, accumulated in f64.
    pub(crate) fn mean_of(&self, idx: impl IntoIterator<Item = usize>) -> Vec<f64> {
        let mut acc = vec![0.0f64; self.d];
        let mut count = 0usize;
        for i in idx {
            for (a, &x) in acc.iter_mut().zip(self.row(i)) {
                *a += f64::from(x);
            }
            count += 1;
        }
        if count > 0 {
            let c = count as f64;
            acc.iter_mut().for_each(|a| *a /= c);
        }
        acc
    }

    /// Indices of the positives / negatives.
    pub(crate) fn class_indices(&self) -> (Vec<usize>, Vec<usize>) {
        let pos = (0..self.n()).filter(|&i| self.labels[i]).collect();
        let neg = (0..self.n()).filter(|&i| !self.labels[i]).collect();
        (pos, neg)
    }

    /// `(mean(h|+), mean(h|−))` in f64.
    pub fn class_means(&self) -> (Vec<f64>, Vec<f64>) {
        let (pos, neg) = self.class_indices();
        (self.mean_of(pos), self.mean_of(neg))
    }

    /// Mean residual norm `mean_i ‖h_i‖₂` over all items (the unit of steering scales).
    pub fn mean_row_norm(&self) -> f64 {
        let total: f64 = (0..self.n())
            .map(|i| {
                self.row(i)
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    .sqrt()
            })
            .sum();
        total / self.n() as f64
    }
}
