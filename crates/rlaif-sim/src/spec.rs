//! Model files: one instance of the latent model with its dictionary, constitution, judge and
//! RLAIF settings, as JSON or TOML. Unknown keys are errors; every error names its field.
//!
//! ```json
//! { "W": [[..k..] × d], "s2": 0.6, "theta": [..k..], "Sigma_z": [[..]] (default I),
//!   "mu0": [..k..] (default 0), "dictionary": [[..d..] × m] (optional),
//!   "lambda": [..m..] | "r": [..d..], "g": [..d..],
//!   "constitution": {"principles": [0], "weights": [1.0]} | {"projection": [[..]]} | {"direction": [..]},
//!   "judge": {"beta": 1.72, "position_bias": 0.0},
//!   "rlaif": {"tau": 3.44, "pairs": 1500, "rounds": 10, "ridge": 0.001, "mode": "monte_carlo"},
//!   "seed": 7 }
//! ```

use serde::{Deserialize, Serialize};

use crate::constitution::{Constitution, ConstitutionError, Dictionary};
use crate::linalg::{dot, Mat};
use crate::model::{LatentModel, ModelError};
use crate::sim::{Mode, SimConfig};

/// The raw document, exactly as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    #[serde(rename = "W")]
    pub w: Vec<Vec<f64>>,
    pub s2: f64,
    pub theta: Vec<f64>,
    #[serde(rename = "Sigma_z", default, skip_serializing_if = "Option::is_none")]
    pub sigma_z: Option<Vec<Vec<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mu0: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dictionary: Option<Vec<Vec<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<Vec<f64>>,
    pub g: Vec<f64>,
    pub constitution: ConstitutionSpec,
    pub judge: JudgeSpec,
    pub rlaif: RlaifSpec,
    #[serde(default)]
    pub seed: u64,
}

/// `constitution`: exactly one of `principles` (+ optional `weights`), `projection`, `direction`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstitutionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principles: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<Vec<Vec<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Vec<f64>>,
}

/// `judge`: inverse temperature and position-bias logit.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    pub beta: f64,
    #[serde(default)]
    pub position_bias: f64,
}

/// `rlaif`: KL temperature, pairs per round, rounds, ridge and mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlaifSpec {
    pub tau: f64,
    pub pairs: usize,
    pub rounds: usize,
    #[serde(default = "default_ridge")]
    pub ridge: f64,
    #[serde(default = "default_mode")]
    pub mode: Mode,
}

fn default_ridge() -> f64 {
    1e-3
}

fn default_mode() -> Mode {
    Mode::Population
}

/// A model file that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Syntax error or wrong type (the message carries line and column, and the key).
    #[error("{0}")]
    Parse(String),
    /// A field is invalid.
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

fn field(field: &str, problem: impl Into<String>) -> SpecError {
    SpecError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

impl From<ModelError> for SpecError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Shape { field: f, problem } => field(f, problem),
            ModelError::NonFinite { field: f } => field(f, "contains a non-finite number"),
            ModelError::NonPositiveS2(v) => field("s2", format!("must be > 0, got {v}")),
            ModelError::SigmaZ(p) => {
                field("Sigma_z", format!("not symmetric positive definite ({p})"))
            }
            ModelError::ZeroValue => field("theta", "θ*ᵀ Σ_z θ* = 0: the true value is constant"),
        }
    }
}

impl From<ConstitutionError> for SpecError {
    fn from(e: ConstitutionError) -> Self {
        match e {
            ConstitutionError::DependentDictionary => {
                field("dictionary", "vectors are linearly dependent")
            }
            ConstitutionError::IndexOutOfRange { index, m } => field(
                "constitution.principles",
                format!("index {index} out of range (the dictionary has {m} vectors)"),
            ),
        }
    }
}

/// A validated instance: the model, the readouts and the RLAIF settings.
#[derive(Clone, Debug)]
pub struct Instance {
    /// The latent model.
    pub model: LatentModel,
    /// The value dictionary, if given.
    pub dictionary: Option<Dictionary>,
    /// Prevalences `λ = D⁺ r` (given, or computed from r).
    pub lambda: Option<Vec<f64>>,
    /// Raw evaluative readout r (given, or `Dλ`).
    pub r: Option<Vec<f64>>,
    /// Default generation direction g.
    pub g: Vec<f64>,
    /// The constitution.
    pub constitution: Constitution,
    /// The judgment direction `j_C`.
    pub j: Vec<f64>,
    /// Simulation settings (mode, β, τ, n, T, ridge, seed).
    pub sim: SimConfig,
    /// The document it came from.
    pub file: ModelFile,
}

impl ModelFile {
    /// Parses JSON. Errors carry line and column.
    ///
    /// # Errors
    /// [`SpecError::Parse`] on syntax errors, wrong types and unknown keys.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))
    }

    /// Parses TOML.
    ///
    /// # Errors
    /// [`SpecError::Parse`] on syntax errors, wrong types and unknown keys.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model file always serialises")
    }

    /// Validates every field and builds the [`Instance`].
    ///
    /// # Errors
    /// [`SpecError::Field`] naming the field and the problem.
    pub fn validate(self) -> Result<Instance, SpecError> {
        let d = self.w.len();
        if d == 0 {
            return Err(field("W", "must have at least one row"));
        }
        let k = self.w[0].len();
        if k == 0 {
            return Err(field("W", "rows must have at least one number"));
        }
        if let Some(i) = self.w.iter().position(|r| r.len() != k) {
            return Err(field(
                "W",
                format!("row {i} has {} numbers, expected {k}", self.w[i].len()),
            ));
        }
        let w = Mat::from_rows(&self.w).expect("checked rectangular");
        let sigma_z = match &self.sigma_z {
            Some(rows) => square("Sigma_z", rows, k)?,
            None => Mat::identity(k),
        };
        let mu0 = self.mu0.clone().unwrap_or_else(|| vec![0.0; k]);
        let model = LatentModel::new(w, self.s2, self.theta.clone(), sigma_z, mu0)?;

        let g = vector("g", &self.g, d)?;
        let dictionary = match &self.dictionary {
            Some(cols) => {
                if cols.is_empty() {
                    return Err(field("dictionary", "must hold at least one vector"));
                }
                for (i, c) in cols.iter().enumerate() {
                    vector(&format!("dictionary[{i}]"), c, d)?;
                }
                Some(Dictionary::new(cols.clone())?)
            }
            None => None,
        };
        let (lambda, r) = match (&self.lambda, &self.r, &dictionary) {
            (Some(_), Some(_), _) => {
                return Err(field("lambda", "give either lambda or r, not both"))
            }
            (Some(_), None, None) => return Err(field("lambda", "needs a dictionary")),
            (Some(l), None, Some(dict)) => {
                let l = vector("lambda", l, dict.len())?;
                let r = dict.combine(&l);
                (Some(l), Some(r))
            }
            (None, Some(r), dict) => {
                let r = vector("r", r, d)?;
                (dict.as_ref().map(|dd| dd.coefficients(&r)), Some(r))
            }
            (None, None, _) => (None, None),
        };
        let constitution =
            self.constitution_of(d, dictionary.as_ref(), lambda.as_deref(), r.as_deref())?;
        let j = constitution.judgment_direction(
            dictionary.as_ref(),
            lambda.as_deref(),
            r.as_deref(),
        )?;

        let judge = &self.judge;
        finite("judge.beta", judge.beta)?;
        if judge.beta < 0.0 {
            return Err(field(
                "judge.beta",
                format!("must be ≥ 0, got {}", judge.beta),
            ));
        }
        finite("judge.position_bias", judge.position_bias)?;
        let rl = &self.rlaif;
        finite("rlaif.tau", rl.tau)?;
        if rl.tau <= 0.0 {
            return Err(field("rlaif.tau", format!("must be > 0, got {}", rl.tau)));
        }
        finite("rlaif.ridge", rl.ridge)?;
        if rl.ridge < 0.0 {
            return Err(field(
                "rlaif.ridge",
                format!("must be ≥ 0, got {}", rl.ridge),
            ));
        }
        if rl.mode == Mode::MonteCarlo && rl.pairs == 0 {
            return Err(field("rlaif.pairs", "must be ≥ 1 in monte_carlo mode"));
        }
        const MAX_WORK: usize = 1 << 34;
        if rl.pairs.saturating_mul(d).saturating_mul(rl.rounds.max(1)) > MAX_WORK {
            return Err(field(
                "rlaif.pairs",
                format!("pairs × d × rounds exceeds {MAX_WORK}"),
            ));
        }
        let sim = SimConfig {
            beta: judge.beta,
            b_pos: judge.position_bias,
            tau: rl.tau,
            pairs: rl.pairs,
            rounds: rl.rounds,
            ridge: rl.ridge,
            mode: rl.mode,
            seed: self.seed,
            value_draws: 50_000,
        };
        Ok(Instance {
            model,
            dictionary,
            lambda,
            r,
            g,
            constitution,
            j,
            sim,
            file: self,
        })
    }

    fn constitution_of(
        &self,
        d: usize,
        dict: Option<&Dictionary>,
        lambda: Option<&[f64]>,
        r: Option<&[f64]>,
    ) -> Result<Constitution, SpecError> {
        let c = &self.constitution;
        let given = [
            c.principles.is_some(),
            c.projection.is_some(),
            c.direction.is_some(),
        ];
        if given.iter().filter(|x| **x).count() != 1 {
            return Err(field(
                "constitution",
                "give exactly one of principles, projection, direction",
            ));
        }
        if c.weights.is_some() && c.principles.is_none() {
            return Err(field(
                "constitution.weights",
                "only allowed with principles",
            ));
        }
        if let Some(idx) = &c.principles {
            let Some(dict) = dict else {
                return Err(field("constitution.principles", "needs a dictionary"));
            };
            if lambda.is_none() {
                return Err(field("constitution.principles", "needs lambda or r"));
            }
            if let Some(&i) = idx.iter().find(|&&i| i >= dict.len()) {
                return Err(field(
                    "constitution.principles",
                    format!(
                        "index {i} out of range (the dictionary has {} vectors)",
                        dict.len()
                    ),
                ));
            }
            let weights = match &c.weights {
                Some(w) => {
                    if w.len() != idx.len() {
                        return Err(field(
                            "constitution.weights",
                            format!(
                                "expected {} weights (one per principle), got {}",
                                idx.len(),
                                w.len()
                            ),
                        ));
                    }
                    if let Some(x) = w.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                        return Err(field(
                            "constitution.weights",
                            format!("weights must be finite and > 0, got {x}"),
                        ));
                    }
                    w.clone()
                }
                None => vec![1.0; idx.len()],
            };
            return Ok(Constitution::Principles {
                indices: idx.clone(),
                weights,
            });
        }
        if let Some(rows) = &c.projection {
            if r.is_none() {
                return Err(field(
                    "constitution.projection",
                    "needs r or lambda (j = P r)",
                ));
            }
            let p = square("constitution.projection", rows, d)?;
            let tol = 1e-8 * p.max_abs().max(1.0);
            if p.asymmetry() > tol || p.matmul(&p).add(&p.scale(-1.0)).max_abs() > tol {
                return Err(field(
                    "constitution.projection",
                    "not an orthogonal projection (P ≠ Pᵀ or P² ≠ P)",
                ));
            }
            return Ok(Constitution::Projection(p));
        }
        let j = vector(
            "constitution.direction",
            c.direction.as_ref().expect("checked"),
            d,
        )?;
        if dot(&j, &j) == 0.0 {
            return Err(field("constitution.direction", "must be non-zero"));
        }
        Ok(Constitution::Direction(j))
    }
}

fn finite(name: &str, v: f64) -> Result<(), SpecError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(field(name, format!("must be finite, got {v}")))
    }
}

fn vector(name: &str, v: &[f64], n: usize) -> Result<Vec<f64>, SpecError> {
    if v.len() != n {
        return Err(field(
            name,
            format!("expected {n} numbers, got {}", v.len()),
        ));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(field(name, "contains a non-finite number"));
    }
    Ok(v.to_vec())
}

fn square(name: &str, rows: &[Vec<f64>], n: usize) -> Result<Mat, SpecError> {
    if rows.len() != n {
        return Err(field(
            name,
            format!("expected {n}×{n}, got {} rows", rows.len()),
        ));
    }
    for (i, r) in rows.iter().enumerate() {
        if r.len() != n {
            return Err(field(
                name,
                format!("row {i} has {} numbers, expected {n}", r.len()),
            ));
        }
        if r.iter().any(|x| !x.is_finite()) {
            return Err(field(name, format!("row {i} contains a non-finite number")));
        }
    }
    Ok(Mat::from_rows(rows).expect("checked rectangular"))
}
