//! # rlaif-sim: the latent value model of RLAIF, in closed form and by Monte Carlo
//!
//! A response has latent features `z ~ N(μ₀, Σ_z)` and nuisance `ε ~ N(0, s² I)`; the model
//! represents it as `h = W z + ε` and its true value is `u* = ⟨θ*, z⟩`. A direction w scores
//! responses by `s_w = ⟨w, h⟩`, and its **alignment** is
//!
//! `a(w) = corr(s_w, u*) = ⟨c, w⟩ / (σ_u √(wᵀ Σ_h w))`, with `Σ_h = W Σ_z Wᵀ + s² I`,
//! `c = W Σ_z θ*`, `σ_u = √(θ*ᵀ Σ_z θ*)`.
//!
//! The **ceiling** is `q = √(cᵀ Σ_h⁻¹ c)/σ_u`. Policies are Gaussian tilts `π_b ∝ π_ref e^{⟨b,h⟩}`
//! with value gain `V(b) = ⟨c, b⟩`, KL `K(b) = bᵀΣ_h b/2` and the exact efficiency identity
//! `V = σ_u A √(2K)`. A constitution selects a **judgment direction** `j_C`; RLAIF moves the
//! policy along it, so the policy ends better aligned than the default generation direction g
//! iff `a(j_C) > a(g)` (T1).
//!
//! Modules follow the specification (THEORY.md): [`model`] (§2–3), [`agreement`] (§4, T5),
//! [`constitution`] (§5), [`mixing`] (Lemma M), [`theorems`] (T1–T4, T6, T7), [`logistic`] and
//! [`sim`] (§7, with the counter-based random streams of [`rng`] and the vectorisable kernels of
//! [`vmath`]), [`spec`] (model files) and [`demo`] (the §8 instance). No I/O happens here:
//! callers pass text in and get typed results out.
//!
//! ```
//! use rlaif_sim::demo::demo_instance;
//! let inst = demo_instance();
//! let q = inst.model.q();
//! assert!((q - 0.8273).abs() < 1e-4);
//! assert!(inst.model.alignment(&inst.j) <= q);
//! ```

pub mod agreement;
mod aligned;
pub mod checks;
pub mod constitution;
pub mod crew;
pub mod demo;
pub mod estimate;
pub mod eval;
pub mod linalg;
pub mod logistic;
pub mod mixing;
pub mod model;
pub mod predictions;
pub mod rng;
pub mod sim;
pub mod spec;
pub mod theorems;
pub mod vmath;
